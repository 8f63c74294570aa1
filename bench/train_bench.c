/* Training throughput of the engine: timed SGD steps (forward, backward,
 * update) of a zoo model, or of a model imported from ONNX (--onnx FILE,
 * reported under --model NAME), on real Fashion-MNIST batches, full
 * precision or LSQ; or the SGEMM ceiling of this machine (--sgemm). One JSON
 * line out.
 *
 *   train_bench --model cnn-small|resnet20|mlp [--bits 0|2..8] [--batch 128]
 *               [--threads 2] [--steps 40] [--warmup 5] [--conv auto|float|gemm]
 *               [--backend auto|own|dnnl]   (whose conv kernels: conv2d_set_backend)
 *   train_bench --model NAME --onnx FILE.onnx [the same options]
 *   train_bench --sgemm [--threads 2]
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "data/data.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "nn/layers.h"
#include "train/optim.h"
#include "train/train.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds of every thread of the process (see conv_prims.c). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Best GFLOP/s of single-precision GEMM at a few training-like shapes, with
 * OpenBLAS on `threads` threads: the ceiling the conv/linear layers run on. */
static int run_sgemm(int threads)
{
    openblas_set_num_threads(threads);
    int shapes[][3] = {{64, 25088, 288}, {256, 128, 3136}, {1024, 1024, 1024}};
    double best = 0, best_cpu = 0;
    printf("{\"bench\":\"sgemm\",\"threads\":%d,\"shapes\":[", threads);
    for (int s = 0; s < 3; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = calloc((size_t)m * k, 4), *b = calloc((size_t)k * n, 4), *c = calloc((size_t)m * n, 4);
        for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)(i % 5) * 0.1f;
        double sbest = 0, cbest = 0;
        for (int r = 0; r < 6; r++) {
            double t0 = now_s(), c0 = cpu_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
            double g = 2.0 * m * n * k / (now_s() - t0) / 1e9;
            /* per CPU second of all threads: divided by the threads, the
             * rate of the machine's cores when nothing else runs */
            double gc = 2.0 * m * n * k / ((cpu_s() - c0) / threads) / 1e9;
            if (r > 0 && g > sbest) sbest = g;
            if (r > 0 && gc > cbest) cbest = gc;
        }
        printf("%s{\"m\":%d,\"n\":%d,\"k\":%d,\"gflops\":%.1f,\"gflops_cpu\":%.1f}",
               s ? "," : "", m, n, k, sbest, cbest);
        if (sbest > best) best = sbest;
        if (cbest > best_cpu) best_cpu = cbest;
        free(a), free(b), free(c);
    }
    printf("],\"gflops\":%.1f,\"gflops_cpu\":%.1f}\n", best, best_cpu);
    return 0;
}

int main(int argc, char **argv)
{
    const char *arch = "cnn-small", *onnx = NULL;
    int bits = 0, batch = 128, threads = 2, steps = 40, warmup = 5, sgemm = 0, conv_mode = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) arch = argv[++i];
        else if (!strcmp(argv[i], "--onnx") && i + 1 < argc) onnx = argv[++i];
        else if (!strcmp(argv[i], "--bits") && i + 1 < argc) bits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sgemm")) sgemm = 1;
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *c = argv[++i];
            int found = 0;
            for (int k = 0; k < CONV2D_BACKEND_COUNT; k++)
                if (!strcmp(c, CONV2D_BACKEND_NAMES[k])) {
                    conv2d_set_backend((conv2d_backend)k);
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "train_bench: --backend takes auto, own or dnnl\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--conv") && i + 1 < argc) {
            /* auto: direct kernels and the integer forward where they
             * apply; float: without the integer forward; gemm: im2col +
             * SGEMM everywhere */
            const char *c = argv[++i];
            if (strcmp(c, "auto") && strcmp(c, "float") && strcmp(c, "gemm")) {
                fprintf(stderr, "train_bench: --conv takes auto, float or gemm\n");
                return 2;
            }
            conv_mode = !strcmp(c, "gemm") ? 2 : !strcmp(c, "float"); /* 0 auto */
            conv2d_set_path(conv_mode == 2 ? CONV2D_PATH_GEMM
                            : conv_mode    ? CONV2D_PATH_FLOAT
                                             : CONV2D_PATH_AUTO);
        }
        else {
            fprintf(stderr, "train_bench: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (sgemm) return run_sgemm(threads);
    train_set_threads(threads);
    lsq_err err;
    lsq_dataset train;
    if (dataset_load(&train, NULL, "fashion-mnist", NULL, 0, 0, &err) != LSQ_OK) {
        fprintf(stderr, "train_bench: %s\n", err.message);
        return 1;
    }
    json_t *layers = NULL;
    if (onnx) {
        /* a model as PyTorch exports it: lsq trains its imported layer list */
        onnx_import im;
        if (onnx_import_file(&im, onnx, ONNX_IMPORT_MAX_BYTES, &err) == LSQ_OK) {
            layers = json_incref(im.layers);
            onnx_import_free(&im);
        }
    } else {
        layers = net_zoo_layers(arch, 1, 28, 28, &err);
    }
    if (!layers) {
        fprintf(stderr, "train_bench: %s\n", err.message);
        return 1;
    }
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = bits > 0, q.weight_bits = q.act_bits = bits, q.first_last_bits = 8;
    lsq_net net;
    if (net_build(&net, layers, bits ? &q : NULL, 10, batch, &err) != LSQ_OK) {
        fprintf(stderr, "train_bench: %s\n", err.message);
        return 1;
    }
    net_init_params(&net, 1);
    if (bits) net_quant_init_weights(&net, QINIT_PAPER);
    lsq_sgd opt;
    sgd_init(&opt, &net, &err);
    lsq_loader l;
    loader_init(&l, &train, batch, 1, 1, 0, 0, &err);
    float *x = malloc((size_t)batch * 784 * sizeof(float));
    int32_t *y = malloc((size_t)batch * sizeof(int32_t));
    float *dl = malloc((size_t)batch * 10 * sizeof(float));
    double t0 = 0, c0 = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) t0 = now_s(), c0 = cpu_s();
        int n = loader_fill(&l, s % loader_batches(&l), x, y);
        const float *logits = net_forward(&net, x, n, 1);
        memset(dl, 0, (size_t)n * 10 * sizeof(float));
        xent_forward(net.probs, logits, y, n, 10);
        xent_backward(dl, net.probs, y, n, 10, 1.0f);
        net_zero_grads(&net);
        net_backward(&net, dl, n);
        sgd_step(&opt, &net, 0.01f, 0.9f, 1e-4f, 0);
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    double ips = (double)steps * batch / secs;
    /* a training step costs about 3x the forward multiply-accumulates */
    double gflops = ips * net_forward_macs(&net) * 2.0 * 3.0 / 1e9;
    /* the same per CPU second, divided by the threads (compare with
     * --sgemm's gflops_cpu): what a quiet machine would give */
    double gflops_cpu = (double)steps * batch / (cpu / threads) * net_forward_macs(&net) * 6.0 / 1e9;
    printf("{\"bench\":\"train\",\"engine\":\"%s\",\"conv_backend\":\"%s\","
           "\"model\":\"%s\",\"bits\":%d,\"batch\":%d,"
           "\"threads\":%d,\"steps\":%d,\"images_per_s\":%.1f,\"images_per_cpu_s\":%.1f,"
           "\"gflops\":%.2f,\"gflops_cpu\":%.2f,"
           "\"peak_rss_mb\":%.1f}\n",
           conv_mode == 2 ? "lsq-im2col" : conv_mode ? "lsq-float" : "lsq",
           CONV2D_BACKEND_NAMES[conv2d_get_backend()], arch,
           bits ? bits : 32, batch, threads, steps, ips, (double)steps * batch / cpu,
           gflops, gflops_cpu, peak_rss_kb() / 1024.0);
    free(x), free(y), free(dl);
    loader_free(&l);
    sgd_free(&opt);
    net_free(&net);
    json_decref(layers);
    dataset_free(&train);
    return 0;
}
