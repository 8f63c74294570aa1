/* Deployable-model measurements (bench/infer.sh runs this).
 *   infer_bench sizes
 *       .lsqm and .onnx bytes of cnn-small and resnet20 at FP32, 8, 4, 3 and
 *       2 bits (first/last layers at 8 bits, the paper's default). Sizes do
 *       not depend on the trained values, so the nets are freshly initialised.
 *   infer_bench speed RUN_DIR BATCH THREADS REPEATS IMAGES.u8
 *       images/s of the integer engine (RUN_DIR/model.lsqm) and of the float
 *       fake-quantized engine (RUN_DIR/model.lsqc) on BATCH images, median of
 *       REPEATS runs each, same process.
 *   infer_bench f32 IMAGES.u8 OUT.f32 N
 *       the same images as float32 pixels / 255, for onnxruntime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/spec.h"
#include "deploy/infer.h"
#include "deploy/lsqm.h"
#include "deploy/onnx_export.h"
#include "graph/net.h"
#include "train/ckpt.h"
#include "train/train.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int sizes(void)
{
    const char *archs[2] = {"cnn-small", "resnet20"};
    const int bits[5] = {0, 8, 4, 3, 2};
    printf("| model | weights | .lsqm bytes | .onnx bytes |\n|---|---|---|---|\n");
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 5; b++) {
            char text[256];
            if (bits[b])
                snprintf(text, sizeof text, "{\"model\":{\"arch\":\"%s\"},\"quant\":{\"weight_bits\":%d}}",
                         archs[a], bits[b]);
            else
                snprintf(text, sizeof text, "{\"model\":{\"arch\":\"%s\"}}", archs[a]);
            lsq_spec s;
            lsq_err err;
            if (spec_parse(&s, text, strlen(text), &err) != LSQ_OK) {
                fprintf(stderr, "spec: %s\n", err.message);
                return 1;
            }
            json_t *layers = net_spec_layers(&s, &err);
            lsq_net net;
            if (!layers || net_build(&net, layers, s.quant.enabled ? &s.quant : NULL, 10, 1, &err) != LSQ_OK) {
                fprintf(stderr, "build: %s\n", err.message);
                return 1;
            }
            net_init_params(&net, 1);
            if (net.quantized) net_quant_init_weights(&net, QINIT_PAPER);
            uint8_t *bytes;
            size_t len;
            if (lsqm_encode(&net, NULL, &bytes, &len, &err) != LSQ_OK ||
                onnx_export(&net, "/tmp/lsq-size.onnx", &err) != LSQ_OK) {
                fprintf(stderr, "export: %s\n", err.message);
                return 1;
            }
            FILE *f = fopen("/tmp/lsq-size.onnx", "rb");
            fseek(f, 0, SEEK_END);
            long on = ftell(f);
            fclose(f);
            remove("/tmp/lsq-size.onnx");
            char wb[16];
            snprintf(wb, sizeof wb, bits[b] ? "W%dA%d" : "FP32", bits[b], bits[b]);
            printf("| %s | %s | %zu | %ld |\n", archs[a], wb, len, on);
            free(bytes);
            net_free(&net);
            json_decref(layers);
            spec_free(&s);
        }
    return 0;
}

static int speed(const char *dir, int batch, int threads, int reps, const char *images)
{
    char p[4096];
    lsq_err err;
    uint8_t *px = malloc((size_t)batch * 784);
    FILE *f = fopen(images, "rb");
    if (!f || fread(px, 784, (size_t)batch, f) != (size_t)batch) {
        fprintf(stderr, "cannot read %d images from %s\n", batch, images);
        return 1;
    }
    fclose(f);
    snprintf(p, sizeof p, "%s/model.lsqm", dir);
    lsqm_model *m = lsqm_load(p, &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    snprintf(p, sizeof p, "%s/model.lsqc", dir);
    lsq_ckpt c;
    lsq_net net;
    if (ckpt_load(&c, p, &err) != LSQ_OK || ckpt_build_net(&net, &c, batch, &err) != LSQ_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    train_set_threads(threads);
    float *x = malloc((size_t)batch * 784 * sizeof *x);
    for (size_t i = 0; i < (size_t)batch * 784; i++) x[i] = (float)px[i] / 255.0f;
    float *z = malloc((size_t)batch * 10 * sizeof *z);
    double *ti = malloc((size_t)reps * sizeof *ti), *tf = malloc((size_t)reps * sizeof *tf);
    /* warm-up, then alternate the two engines so both see the same machine state */
    lsqm_predict(m, px, batch, z, NULL, threads, &err);
    net_forward(&net, x, batch, 0);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        if (lsqm_predict(m, px, batch, z, NULL, threads, &err) != LSQ_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        ti[r] = now() - t0;
        t0 = now();
        net_forward(&net, x, batch, 0);
        tf[r] = now() - t0;
    }
    printf("{\"integer_ms\":%.3f,\"float_ms\":%.3f,\"integer_ips\":%.1f,\"float_ips\":%.1f}\n",
           1e3 * median(ti, reps), 1e3 * median(tf, reps), batch / median(ti, reps),
           batch / median(tf, reps));
    net_free(&net);
    ckpt_free(&c);
    lsqm_free(m);
    free(px), free(x), free(z), free(ti), free(tf);
    return 0;
}

/* Converts n 8-bit images to float32 pixels / 255 (onnxruntime's input). */
static int to_f32(const char *in, const char *out, int n)
{
    FILE *f = fopen(in, "rb"), *g = fopen(out, "wb");
    if (!f || !g) return 1;
    for (long i = 0; i < (long)n * 784; i++) {
        int c = fgetc(f);
        if (c == EOF) return 1;
        float v = (float)c / 255.0f;
        fwrite(&v, sizeof v, 1, g);
    }
    fclose(f);
    return fclose(g) != 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "f32") == 0) return to_f32(argv[2], argv[3], atoi(argv[4]));
    if (argc == 2 && strcmp(argv[1], "sizes") == 0) return sizes();
    if (argc == 7 && strcmp(argv[1], "speed") == 0)
        return speed(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argv[6]);
    fprintf(stderr, "usage: infer_bench sizes | speed RUN_DIR BATCH THREADS REPEATS IMAGES.u8\n");
    return 2;
}
