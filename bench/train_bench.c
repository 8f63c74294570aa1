/* Training throughput of the engine: timed SGD steps (forward, backward,
 * update) of a zoo model, or of a model imported from ONNX (--onnx FILE,
 * reported under --model NAME), on real Fashion-MNIST batches, full
 * precision or LSQ; or the SGEMM ceiling of this machine (--sgemm). One JSON
 * line out.
 *
 *   train_bench --model cnn-small|resnet20|mlp [--bits 0|2..8] [--batch 128]
 *               [--threads 2] [--steps 40] [--warmup 5] [--conv auto|float|gemm]
 *               [--backend auto|own|dnnl]   (whose conv kernels: conv2d_set_backend)
 *               [--wino auto|off|on]   (oneDNN's Winograd: conv2d_set_wino; else
 *                                      LSQ_WINO=0|1, refused when neither)
 *               [--bwd f32|bf16]   (a quantized conv's backward: conv2d_set_bwd)
 *               [--dnnl-fuse on|off]   (the batch norm's and the quantizer's
 *                                      backwards on oneDNN's layouts:
 *                                      conv2d_set_dnnl_fusions)
 *   train_bench --model NAME --onnx FILE.onnx [the same options]
 *   train_bench --sgemm [--threads 2]
 *       also names what the figures ran on: OpenBLAS's core and build
 *       config, the compiler and the instruction sets it compiled for.
 *
 * LSQ_ISA=avx2|avx512 forces the vector path of the engine's own loops
 * (core/isa.h); the line's "isa" says which ran.
 *
 * --no-share: every activation and gradient in a buffer of its own
 * (net_set_buffer_sharing(0)), the layout before the shared arena.
 * --memory: after the steps, every buffer of the net to stderr, one line
 * each, with its size and the part of it that is resident (mincore), largest
 * first: where the peak RSS goes.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <time.h>

#include "clock.h"
#include "core/isa.h"
#include "data/data.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "nn/layers.h"
#include "train/optim.h"
#include "train/train.h"

/* The widest instruction sets this file was compiled for (the Makefile's
 * ARCH), as the compiler's predefined macros say: the engine shares them. */
#if defined(__AVX512F__)
#define COMPILED_ISA "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define COMPILED_ISA "avx2+fma"
#elif defined(__AVX2__)
#define COMPILED_ISA "avx2"
#elif defined(__x86_64__)
#define COMPILED_ISA "x86-64"
#else
#define COMPILED_ISA "other"
#endif

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Resident bytes of [p, p + bytes): whole pages, so a small heap buffer
 * counts the page it sits on. */
static size_t resident_bytes(const void *p, size_t bytes)
{
    if (!p || !bytes) return 0;
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(pg - 1);
    uintptr_t hi = ((uintptr_t)p + bytes + pg - 1) & ~(uintptr_t)(pg - 1);
    size_t pages = (hi - lo) / pg, res = 0;
    unsigned char *v = malloc(pages);
    if (!v) return 0;
    if (mincore((void *)lo, hi - lo, v) == 0)
        for (size_t i = 0; i < pages; i++) res += v[i] & 1;
    free(v);
    return res * pg;
}

typedef struct {
    char name[112];
    const void *p;
    size_t bytes, resident;
} mem_row;

static int cmp_row(const void *a, const void *b)
{
    const mem_row *x = a, *y = b;
    return x->resident < y->resident ? 1 : x->resident > y->resident ? -1 : 0;
}

/* One row per distinct buffer (buffers shared by several nodes once). */
static const lsq_net *mem_net;

static void add_row(mem_row *rows, int *n, const char *node, const char *what, const void *p,
                    size_t bytes)
{
    if (!p || !bytes) return;
    /* the arena's buffers are its row */
    const float *f = p;
    if (mem_net->arena && f >= mem_net->arena && f < mem_net->arena + mem_net->n_arena) return;
    for (int i = 0; i < *n; i++)
        if (rows[i].p == p) {
            if (bytes > rows[i].bytes) rows[i].bytes = bytes;
            return;
        }
    mem_row *r = &rows[(*n)++];
    snprintf(r->name, sizeof r->name, "%s%s%s", node, *node ? "." : "", what);
    r->p = p;
    r->bytes = bytes;
}

static void print_memory(const lsq_net *net, int batch)
{
    mem_row *rows = calloc((size_t)net->n_nodes * 8 + 16, sizeof *rows);
    if (!rows) return;
    int n = 0;
    const size_t f = sizeof(float);
    mem_net = net;
    add_row(rows, &n, "", "arena", net->arena ? (const void *)1 : NULL, 0);
    if (net->arena) {
        mem_row *r = &rows[n++];
        snprintf(r->name, sizeof r->name, "arena (activations, gradients)");
        r->p = net->arena;
        r->bytes = net->n_arena * f;
    }
    add_row(rows, &n, "", "params", net->params, net->n_params * f);
    add_row(rows, &n, "", "grads", net->grads, (net->n_params + NET_GRAD_TAIL) * f);
    add_row(rows, &n, "", "state", net->state, net->n_state * f);
    add_row(rows, &n, "", "scratch", net->scratch, net->n_scratch * f);
    add_row(rows, &n, "", "probs", net->probs, (size_t)batch * net->classes * f);
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        const size_t act = (size_t)batch * nd->c * nd->h * nd->w * f;
        if (nd->op == OP_FLATTEN) continue;
        add_row(rows, &n, nd->name, "out", nd->out, act);
        add_row(rows, &n, nd->name, "dout", nd->dout, act);
        if (nd->op == OP_MAXPOOL) add_row(rows, &n, nd->name, "argmax", nd->argmax, act);
        if (nd->wq.on) {
            const size_t wn = net->views[nd->wv].count;
            add_row(rows, &n, nd->name, "qw", nd->qw, wn * f);
            add_row(rows, &n, nd->name, "dqw", nd->dqw, wn * f);
            add_row(rows, &n, nd->name, "wcodes", nd->wcodes, wn * f);
        }
    }
    size_t qn = 0;
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i], *src = &net->nodes[nd->in[0]];
        size_t in_n = (size_t)batch * src->c * src->h * src->w;
        if (nd->aq.on && in_n > qn) qn = in_n;
    }
    add_row(rows, &n, "", "qbuf", net->qbuf, qn * f);
    add_row(rows, &n, "", "dqbuf", net->dqbuf, qn * f);
    size_t tb = 0, tr = 0;
    for (int i = 0; i < n; i++) {
        rows[i].resident = resident_bytes(rows[i].p, rows[i].bytes);
        tb += rows[i].bytes, tr += rows[i].resident;
    }
    qsort(rows, (size_t)n, sizeof *rows, cmp_row);
    fprintf(stderr, "%-32s %10s %10s\n", "buffer", "MiB", "resident");
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%-32s %10.2f %10.2f\n", rows[i].name, rows[i].bytes / 1048576.0,
                rows[i].resident / 1048576.0);
    fprintf(stderr, "%-32s %10.2f %10.2f (%d buffers)\n", "total", tb / 1048576.0,
            tr / 1048576.0, n);
    free(rows);
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
    printf("],\"gflops\":%.1f,\"gflops_cpu\":%.1f,\"openblas_core\":\"%s\",\"openblas_config\":\"%s\","
           "\"cc\":\"%s\",\"compiled_isa\":\"%s\"}\n",
           best, best_cpu, openblas_get_corename(), openblas_get_config(), __VERSION__, COMPILED_ISA);
    return 0;
}

int main(int argc, char **argv)
{
    const char *arch = "cnn-small", *onnx = NULL;
    int bits = 0, batch = 128, threads = 2, steps = 40, warmup = 5, sgemm = 0, conv_mode = 0;
    int memory = 0, wino_flag = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) arch = argv[++i];
        else if (!strcmp(argv[i], "--onnx") && i + 1 < argc) onnx = argv[++i];
        else if (!strcmp(argv[i], "--bits") && i + 1 < argc) bits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sgemm")) sgemm = 1;
        else if (!strcmp(argv[i], "--memory")) memory = 1;
        else if (!strcmp(argv[i], "--no-share")) net_set_buffer_sharing(0);
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
        else if (!strcmp(argv[i], "--wino") && i + 1 < argc) {
            const char *c = argv[++i];
            int found = 0;
            for (int k = 0; k < CONV2D_WINO_COUNT; k++)
                if (!strcmp(c, CONV2D_WINO_NAMES[k])) {
                    conv2d_set_wino((conv2d_wino)k);
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "train_bench: --wino takes auto, off or on\n");
                return 2;
            }
            wino_flag = 1;
        }
        else if (!strcmp(argv[i], "--bwd") && i + 1 < argc) {
            const char *c = argv[++i];
            int found = 0;
            for (int k = 0; k < CONV2D_BWD_COUNT; k++)
                if (!strcmp(c, CONV2D_BWD_NAMES[k])) {
                    conv2d_set_bwd((conv2d_bwd)k);
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "train_bench: --bwd takes f32 or bf16\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--dnnl-fuse") && i + 1 < argc) {
            const char *c = argv[++i];
            if (strcmp(c, "on") && strcmp(c, "off")) {
                fprintf(stderr, "train_bench: --dnnl-fuse takes on or off\n");
                return 2;
            }
            conv2d_set_dnnl_fusions(!strcmp(c, "on"));
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
    lsq_err err;
    if (lsq_isa_from_env(&err) != LSQ_OK) {
        fprintf(stderr, "train_bench: %s\n", err.message);
        return 2;
    }
    if (!wino_flag && conv2d_wino_from_env(&err) != LSQ_OK) {
        fprintf(stderr, "train_bench: %s\n", err.message);
        return 2;
    }
    train_set_threads(threads);
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
    printf("{\"bench\":\"train\",\"engine\":\"%s\",\"conv_backend\":\"%s\",\"wino\":\"%s\",\"bwd\":\"%s\","
           "\"model\":\"%s\",\"bits\":%d,\"batch\":%d,"
           "\"threads\":%d,\"isa\":\"%s\",\"steps\":%d,\"images_per_s\":%.1f,"
           "\"images_per_cpu_s\":%.1f,\"gflops\":%.2f,\"gflops_cpu\":%.2f,"
           "\"peak_rss_mb\":%.1f}\n",
           conv_mode == 2 ? "lsq-im2col" : conv_mode ? "lsq-float" : "lsq",
           CONV2D_BACKEND_NAMES[conv2d_get_backend()], CONV2D_WINO_NAMES[conv2d_get_wino()],
           CONV2D_BWD_NAMES[conv2d_get_bwd()], arch,
           bits ? bits : 32, batch, threads, lsq_isa_name(lsq_isa_active()), steps, ips,
           (double)steps * batch / cpu, gflops, gflops_cpu, peak_rss_kb() / 1024.0);
    if (memory) print_memory(&net, batch);
    free(x), free(y), free(dl);
    loader_free(&l);
    sgd_free(&opt);
    net_free(&net);
    json_decref(layers);
    dataset_free(&train);
    return 0;
}
