/* Deployable-model measurements (bench/infer.sh runs this).
 *   infer_bench sizes [NAME=LAYERS.json ...]
 *       .lsqm and .onnx bytes of cnn-small and resnet20 (and of each layer
 *       list given, e.g. mobilenetv2=bench/mobilenetv2.json) at FP32, 8, 4, 3
 *       and 2 bits (first/last layers at 8 bits, the paper's default); "-"
 *       where the ONNX export does not carry the net's layers yet. Sizes do
 *       not depend on the trained values, so the nets are freshly initialised.
 *   infer_bench speed RUN_DIR BATCH THREADS REPEATS IMAGES.u8
 *       images/s of the integer engine (RUN_DIR/model.lsqm) and of the float
 *       fake-quantized engine (RUN_DIR/model.lsqc) on BATCH images, median of
 *       REPEATS runs each, same process; and the integer kernel path that
 *       ran (LSQ_KERNEL or the fastest this CPU has); with each run's
 *       milliseconds (integer_runs_ms, float_runs_ms) for the spread, and
 *       the multiply-accumulates of one image's forward pass.
 *   infer_bench latency RUN_DIR RUNS WARMUP THREADS IMAGES.u8
 *       batch-1 latency: WARMUP untimed, then RUNS timed single-image
 *       predictions of each engine, alternating, on THREADS threads; each
 *       run's milliseconds (integer_runs_ms, float_runs_ms) and the kernel.
 *   infer_bench int RUN_DIR BATCH THREADS REPEATS IMAGES.u8
 *       the integer engine alone, as speed measures it (for profiling), with
 *       the median CPU time of a call (steadier than wall time on a busy
 *       machine).
 *   infer_bench packed RUN_DIR REPEATS IMAGES.u8
 *       batch-1 latency on one thread, 2- and 3-bit weights packed against
 *       the same model with int8 weight codes (lsqm_set_packed), medians of
 *       REPEATS rounds of 64 single-image calls, alternating, in wall and
 *       in CPU time; checks that
 *       both give the same logits. LSQ_KERNEL picks the kernel path.
 *   infer_bench f32 IMAGES.u8 OUT.f32 N
 *       the same images as float32 pixels / 255, for onnxruntime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "core/spec.h"
#include "deploy/igemm.h"
#include "deploy/infer.h"
#include "deploy/lsqm.h"
#include "deploy/onnx_export.h"
#include "deploy/support.h"
#include "graph/net.h"
#include "train/ckpt.h"
#include "train/train.h"

/* Prints SEP"NAME":[ms, ...] for n run times t (seconds). */
static void print_runs_ms(const char *sep, const char *name, const double *t, int n)
{
    printf("%s\"%s\":[", sep, name);
    for (int i = 0; i < n; i++) printf("%s%.4f", i ? "," : "", 1e3 * t[i]);
    printf("]");
}

/* The text of a file (malloc'd), or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (t && fread(t, 1, (size_t)n, f) != (size_t)n) {
        free(t);
        t = NULL;
    }
    if (t) t[n] = 0;
    fclose(f);
    return t;
}

/* lists: NAME=LAYERS.json arguments, n of them, after the zoo's two. */
static int sizes(char **lists, int n)
{
    const char *archs[2] = {"cnn-small", "resnet20"};
    const int bits[5] = {0, 8, 4, 3, 2};
    printf("| model | weights | .lsqm bytes | .onnx bytes |\n|---|---|---|---|\n");
    for (int a = 0; a < 2 + n; a++)
        for (int b = 0; b < 5; b++) {
            char name[128], model[64];
            char *text, *ltext = NULL;
            if (a < 2) {
                snprintf(name, sizeof name, "%s", archs[a]);
                snprintf(model, sizeof model, "{\"arch\":\"%s\"}", archs[a]);
            } else {
                const char *eq = strchr(lists[a - 2], '=');
                if (!eq || !(ltext = slurp(eq + 1))) {
                    fprintf(stderr, "sizes: want NAME=LAYERS.json, got '%s'\n", lists[a - 2]);
                    return 1;
                }
                snprintf(name, sizeof name, "%.*s", (int)(eq - lists[a - 2]), lists[a - 2]);
            }
            const char *m = ltext ? ltext : model;
            size_t tl = strlen(m) + 128;
            text = malloc(tl);
            if (bits[b])
                snprintf(text, tl, "{\"model\":%s,\"quant\":{\"weight_bits\":%d}}", m, bits[b]);
            else
                snprintf(text, tl, "{\"model\":%s}", m);
            free(ltext);
            lsq_spec s;
            lsq_err err;
            lsq_status pst = spec_parse(&s, text, strlen(text), &err);
            free(text);
            if (pst != LSQ_OK) {
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
            if (lsqm_encode(&net, NULL, &bytes, &len, &err) != LSQ_OK) {
                fprintf(stderr, "export: %s\n", err.message);
                return 1;
            }
            char on[32] = "-";
            if (deploy_check_layers(&net, DEPLOY_ONNX, &err) == LSQ_OK) {
                if (onnx_export(&net, "/tmp/lsq-size.onnx", &err) != LSQ_OK) {
                    fprintf(stderr, "export: %s\n", err.message);
                    return 1;
                }
                FILE *f = fopen("/tmp/lsq-size.onnx", "rb");
                fseek(f, 0, SEEK_END);
                snprintf(on, sizeof on, "%ld", ftell(f));
                fclose(f);
                remove("/tmp/lsq-size.onnx");
            }
            char wb[16];
            snprintf(wb, sizeof wb, bits[b] ? "W%dA%d" : "FP32", bits[b], bits[b]);
            printf("| %s | %s | %zu | %s |\n", name, wb, len, on);
            free(bytes);
            net_free(&net);
            json_decref(layers);
            spec_free(&s);
        }
    return 0;
}

/* n 28x28 images from a raw u8 file, or NULL (said on stderr). */
static uint8_t *read_images(const char *path, int n)
{
    uint8_t *px = malloc((size_t)n * 784);
    FILE *f = fopen(path, "rb");
    if (!px || !f || fread(px, 784, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %d images from %s\n", n, path);
        if (f) fclose(f);
        free(px);
        return NULL;
    }
    fclose(f);
    return px;
}

/* RUN_DIR/model.lsqm, or NULL (said on stderr). */
static lsqm_model *load_lsqm(const char *dir)
{
    char p[4096];
    lsq_err err;
    snprintf(p, sizeof p, "%s/model.lsqm", dir);
    lsqm_model *m = lsqm_load(p, &err);
    if (!m) fprintf(stderr, "%s\n", err.message);
    return m;
}

/* RUN_DIR/model.lsqc as a float net for `batch` images; 0 or 1 (said). */
static int load_float(const char *dir, int batch, lsq_ckpt *c, lsq_net *net)
{
    char p[4096];
    lsq_err err;
    snprintf(p, sizeof p, "%s/model.lsqc", dir);
    if (ckpt_load(c, p, &err) != LSQ_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    if (ckpt_build_net(net, c, batch, &err) != LSQ_OK) {
        fprintf(stderr, "%s\n", err.message);
        ckpt_free(c);
        return 1;
    }
    return 0;
}

static int speed(const char *dir, int batch, int threads, int reps, const char *images)
{
    lsq_err err;
    uint8_t *px = read_images(images, batch);
    lsqm_model *m = px ? load_lsqm(dir) : NULL;
    lsq_ckpt c;
    lsq_net net;
    if (!m || load_float(dir, batch, &c, &net)) {
        lsqm_free(m);
        free(px);
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
        double t0 = now_s();
        if (lsqm_predict(m, px, batch, z, NULL, threads, &err) != LSQ_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        ti[r] = now_s() - t0;
        t0 = now_s();
        net_forward(&net, x, batch, 0);
        tf[r] = now_s() - t0;
    }
    /* the runs in time order, before median() sorts them */
    print_runs_ms("{", "integer_runs_ms", ti, reps);
    print_runs_ms(",", "float_runs_ms", tf, reps);
    printf(",\"integer_ms\":%.3f,\"float_ms\":%.3f,\"integer_ips\":%.1f,\"float_ips\":%.1f,"
           "\"macs_per_image\":%.0f,\"kernel\":\"%s\"}\n",
           1e3 * median(ti, reps), 1e3 * median(tf, reps), batch / median(ti, reps),
           batch / median(tf, reps), net_forward_macs(&net), LSQ_KERNEL_NAMES[lsq_kernel_select()]);
    net_free(&net);
    ckpt_free(&c);
    lsqm_free(m);
    free(px), free(x), free(z), free(ti), free(tf);
    return 0;
}

/* Batch-1 latency of both engines on the first image of `images`. The two
 * alternate image by image, so both see the same machine state. */
static int latency(const char *dir, int runs, int warmup, int threads, const char *images)
{
    lsq_err err;
    if (runs < 1 || warmup < 0 || threads < 1) {
        fprintf(stderr, "latency: RUNS >= 1, WARMUP >= 0, THREADS >= 1\n");
        return 2;
    }
    uint8_t *px = read_images(images, 1);
    lsqm_model *m = px ? load_lsqm(dir) : NULL;
    lsq_ckpt c;
    lsq_net net;
    if (!m || load_float(dir, 1, &c, &net)) {
        lsqm_free(m);
        free(px);
        return 1;
    }
    train_set_threads(threads);
    float x[784], z[10];
    for (int i = 0; i < 784; i++) x[i] = (float)px[i] / 255.0f;
    double *ti = malloc((size_t)runs * sizeof *ti), *tf = malloc((size_t)runs * sizeof *tf);
    int rc = 0;
    for (int r = -warmup; r < runs && rc == 0; r++) {
        double t0 = now_s();
        if (lsqm_predict(m, px, 1, z, NULL, threads, &err) != LSQ_OK) {
            fprintf(stderr, "%s\n", err.message);
            rc = 1;
        }
        double t1 = now_s();
        net_forward(&net, x, 1, 0);
        double t2 = now_s();
        if (r >= 0) ti[r] = t1 - t0, tf[r] = t2 - t1;
    }
    if (rc == 0) {
        print_runs_ms("{", "integer_runs_ms", ti, runs);
        print_runs_ms(",", "float_runs_ms", tf, runs);
        printf(",\"threads\":%d,\"warmup\":%d,\"kernel\":\"%s\"}\n", threads, warmup,
               LSQ_KERNEL_NAMES[lsq_kernel_select()]);
    }
    free(ti), free(tf);
    net_free(&net);
    ckpt_free(&c);
    lsqm_free(m);
    free(px);
    return rc;
}

/* Integer engine alone (for profiling it: perf record infer_bench int ...):
 * median ms of REPEATS calls of lsqm_predict on BATCH images. */
static int int_only(const char *dir, int batch, int threads, int reps, const char *images)
{
    lsq_err err;
    uint8_t *px = read_images(images, batch);
    lsqm_model *m = px ? load_lsqm(dir) : NULL;
    if (!m) {
        free(px);
        return 1;
    }
    /* the thread setup of speed mode (OpenMP threads, single-threaded
     * OpenBLAS), so that the two measure the same engine */
    train_set_threads(threads);
    float *z = malloc((size_t)batch * 10 * sizeof *z);
    double *ti = malloc((size_t)reps * sizeof *ti), *tc = malloc((size_t)reps * sizeof *tc);
    lsqm_predict(m, px, batch, z, NULL, threads, &err);
    for (int r = 0; r < reps; r++) {
        double t0 = now_s(), c0 = cpu_s();
        if (lsqm_predict(m, px, batch, z, NULL, threads, &err) != LSQ_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        ti[r] = now_s() - t0;
        tc[r] = cpu_s() - c0;
    }
    printf("{\"integer_ms\":%.3f,\"integer_ips\":%.1f,\"cpu_ms\":%.3f,\"kernel\":\"%s\"}\n",
           1e3 * median(ti, reps), batch / median(ti, reps), 1e3 * median(tc, reps),
           LSQ_KERNEL_NAMES[lsq_kernel_select()]);
    free(tc);
    lsqm_free(m);
    free(px), free(z), free(ti);
    return 0;
}

/* Batch-1 latency of the integer engine, one thread, with 2- and 3-bit
 * weights packed (as loaded) and stored as int8 codes (lsqm_set_packed),
 * the two alternating in rounds of `count` single-image calls; median
 * microseconds per image of REPEATS rounds each. */
static int packed_latency(const char *dir, int reps, const char *images)
{
    enum { COUNT = 64 };
    lsq_err err;
    uint8_t *px = read_images(images, COUNT);
    lsqm_model *m = px ? load_lsqm(dir) : NULL;
    if (!m) {
        free(px);
        return 1;
    }
    train_set_threads(1);
    float z[2][COUNT * 10];
    double *t[2], *tc[2];
    for (int i = 0; i < 2; i++) {
        t[i] = malloc((size_t)reps * sizeof(double));
        tc[i] = malloc((size_t)reps * sizeof(double));
    }
    size_t bytes[2];
    for (int r = -1; r < reps; r++) /* round -1 warms both up */
        for (int packed = 0; packed < 2; packed++) {
            if (lsqm_set_packed(m, packed, &err) != LSQ_OK) {
                fprintf(stderr, "%s\n", err.message);
                return 1;
            }
            bytes[packed] = lsqm_weight_bytes(m);
            double t0 = now_s(), c0 = cpu_s();
            for (int i = 0; i < COUNT; i++)
                if (lsqm_predict(m, px + (size_t)i * 784, 1, z[packed] + i * 10, NULL, 1, &err) !=
                    LSQ_OK) {
                    fprintf(stderr, "%s\n", err.message);
                    return 1;
                }
            if (r >= 0) {
                t[packed][r] = (now_s() - t0) / COUNT;
                tc[packed][r] = (cpu_s() - c0) / COUNT;
            }
        }
    if (memcmp(z[0], z[1], sizeof z[0]) != 0) {
        fprintf(stderr, "packed and int8 weights gave different logits\n");
        return 1;
    }
    const double us0 = 1e6 * median(t[0], reps), us1 = 1e6 * median(t[1], reps);
    const double cu0 = 1e6 * median(tc[0], reps), cu1 = 1e6 * median(tc[1], reps);
    printf("{\"int8_us\":%.1f,\"packed_us\":%.1f,\"int8_over_packed\":%.3f,"
           "\"int8_cpu_us\":%.1f,\"packed_cpu_us\":%.1f,\"cpu_int8_over_packed\":%.3f,"
           "\"int8_weight_bytes\":%zu,\"packed_weight_bytes\":%zu,\"kernel\":\"%s\"}\n",
           us0, us1, us0 / us1, cu0, cu1, cu0 / cu1, bytes[0], bytes[1],
           LSQ_KERNEL_NAMES[lsq_kernel_select()]);
    lsqm_free(m);
    free(px);
    for (int i = 0; i < 2; i++) free(t[i]), free(tc[i]);
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
    if (argc >= 2 && strcmp(argv[1], "sizes") == 0) return sizes(argv + 2, argc - 2);
    if (argc == 7 && strcmp(argv[1], "speed") == 0)
        return speed(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argv[6]);
    if (argc == 7 && strcmp(argv[1], "latency") == 0)
        return latency(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argv[6]);
    if (argc == 5 && strcmp(argv[1], "packed") == 0)
        return packed_latency(argv[2], atoi(argv[3]), argv[4]);
    if (argc == 7 && strcmp(argv[1], "int") == 0)
        return int_only(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argv[6]);
    fprintf(stderr, "usage: infer_bench sizes [NAME=LAYERS.json ...] | speed|int RUN_DIR BATCH THREADS "
                    "REPEATS IMAGES.u8 | latency RUN_DIR RUNS WARMUP THREADS IMAGES.u8 | "
                    "packed RUN_DIR REPEATS IMAGES.u8 | f32 IMAGES.u8 OUT.f32 N\n");
    return 2;
}
