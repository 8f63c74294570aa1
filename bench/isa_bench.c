/* The training loops on each vector path (core/isa.h), one kernel at a time,
 * in one process: for each kernel, rounds that time the base path (AVX2)
 * and the avx512 path in turn (the first in each round alternates), at the
 * activation size of a resnet20 block at batch 128 (128 x 16 x 28 x 28
 * floats; the optimizer over as many parameters). One JSON line per kernel:
 * the median and the fastest milliseconds per call of each path, and the
 * ratio of the medians. A kernel whose file has one path (not in the
 * Makefile's ISA_SRC) runs the same code on both: its ratio is the noise.
 * dconv_igemm, the integer forward's product, runs a 3x3 conv of 16
 * channels to 16 on a 28 x 28 plane of 2-bit codes once per image.
 * One thread by default: on a loaded machine a parallel region's time is
 * that of its last thread to get a core, which hides the kernels.
 *
 * --offset: where the float buffers start relative to a 64-byte line: 16,
 * the default, is what glibc's calloc returns for buffers this large (an
 * mmap'd chunk after its 16-byte header), so what the engine's buffers get
 * (graph/net.c); 0 puts them on a cache line, where a 64-byte vector load
 * never straddles two.
 *
 *   isa_bench [--rounds 51] [--threads 1] [--batch 128] [--offset 16]
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "core/isa.h"
#include "nn/dconv.h"
#include "nn/layers.h"
#include "quant/quant.h"
#include "train/optim.h"

enum {
    K_QFWD, K_QBWD, K_BN_FWD, K_BN_BWD, K_RELU_ADD_FWD, K_RELU_ADD_BWD, K_SGD, K_DCONV_CODES,
    K_COUNT
};
static const char *const KERNEL_NAMES[] = {
    "quant_forward",   "quant_backward",     "batchnorm_relu_forward_train",
    "batchnorm_relu_backward", "add_relu_forward", "add_relu_backward", "sgd_step",
    "dconv_igemm",
};
_Static_assert(sizeof KERNEL_NAMES / sizeof *KERNEL_NAMES == K_COUNT, "one name per kernel");

typedef struct {
    int n, c, hw;
    size_t cnt;
    float *x, *y, *g, *out, *d1, *d2, *gamma, *beta, *mean, *rstd, *rm, *rv, *work;
    int32_t *codes;
    quant_range q;
    lsq_net net; /* parameters and gradients only, for sgd_step */
    lsq_sgd opt;
    /* dconv_igemm: a 3x3 conv of 16 channels to 16 on one padded 28 x 28
     * plane of codes (resnet20's first stage), once per image of the batch */
    int16_t *ap;
    float *scale;
    uint8_t *plane;
    int off[8 * 9];
} bench_data;

enum { DC_C = 16, DC_WP = 30, DC_NB = 28 * DC_WP, DC_KPAIRS = DC_C / 2 * 9 };

static void run_kernel(int k, bench_data *b)
{
    const float step = 0.05f, gs = 0.01f;
    float dstep = 0.0f;
    switch (k) {
    case K_QFWD:
        quant_forward(b->out, b->codes, b->x, &step, NULL, 1, b->cnt, &b->q);
        break;
    case K_QBWD:
        quant_backward_overwrite(b->d1, &dstep, NULL, b->g, b->x, &step, NULL, &gs, 1, b->cnt,
                                 &b->q);
        break;
    case K_BN_FWD:
        batchnorm_relu_forward_train(b->out, b->mean, b->rstd, b->rm, b->rv, b->x, b->gamma,
                                     b->beta, b->n, b->c, b->hw, 0.1f, 1e-5f, b->work);
        break;
    case K_BN_BWD:
        batchnorm_relu_backward_overwrite(b->d1, b->d2, b->d2 + b->c, b->g, b->x, b->mean,
                                          b->rstd, b->gamma, b->beta, b->n, b->c, b->hw,
                                          b->work);
        break;
    case K_RELU_ADD_FWD:
        add_relu_forward(b->out, b->x, b->y, b->cnt);
        break;
    case K_RELU_ADD_BWD:
        add_relu_backward(b->d1, 1, b->d2, 1, b->g, b->x, b->cnt);
        break;
    case K_SGD:
        sgd_step(&b->opt, &b->net, 1e-6f, 0.9f, 1e-4f, 0);
        break;
    case K_DCONV_CODES:
        for (int i = 0; i < b->n; i++)
            dconv_igemm(b->out, DC_NB, b->ap, b->scale, DC_C, DC_KPAIRS, b->plane, b->off, DC_NB);
        break;
    }
}

int main(int argc, char **argv)
{
    int rounds = 51, threads = 1, batch = 128, offset = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--offset") && i + 1 < argc) offset = atoi(argv[++i]);
        else {
            fprintf(stderr, "isa_bench: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (rounds < 1 || threads < 1 || batch < 1) {
        fprintf(stderr, "isa_bench: --rounds, --threads and --batch take positive numbers\n");
        return 2;
    }
    if (offset < 0 || offset >= 64 || offset % 4) {
        fprintf(stderr, "isa_bench: --offset takes 0, 4, ... 60 (bytes)\n");
        return 2;
    }
    if (!lsq_isa_supported(LSQ_ISA_AVX512)) {
        fprintf(stderr, "isa_bench: this build or CPU has no avx512 path\n");
        return 1;
    }
    omp_set_num_threads(threads);
    bench_data b;
    memset(&b, 0, sizeof b);
    b.n = batch, b.c = 16, b.hw = 28 * 28;
    b.cnt = (size_t)b.n * b.c * b.hw;
    const size_t work = BN_WORK_FLOATS(b.n, b.c) > BN_BACKWARD_WORK_FLOATS(b.n, b.c)
                            ? BN_WORK_FLOATS(b.n, b.c)
                            : BN_BACKWARD_WORK_FLOATS(b.n, b.c);
    float **bufs[] = {&b.x, &b.y, &b.g, &b.out, &b.d1, &b.d2};
    char *blocks[sizeof bufs / sizeof *bufs];
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        blocks[i] = aligned_alloc(64, (b.cnt * sizeof(float) + 127) / 64 * 64);
        if (!blocks[i]) return 1;
        *bufs[i] = (float *)(blocks[i] + offset);
        for (size_t j = 0; j < b.cnt; j++)
            (*bufs[i])[j] = (float)((j * 2654435761u + i * 40503u) % 2001) / 1000.0f - 1.0f;
    }
    b.gamma = calloc(6 * (size_t)b.c, sizeof(float));
    b.work = malloc(work * sizeof(float));
    b.codes = malloc(b.cnt * sizeof(int32_t));
    if (!b.gamma || !b.work || !b.codes) return 1;
    b.beta = b.gamma + b.c, b.mean = b.beta + b.c, b.rstd = b.mean + b.c;
    b.rm = b.rstd + b.c, b.rv = b.rm + b.c;
    for (int i = 0; i < b.c; i++) b.gamma[i] = 1.0f, b.rv[i] = 1.0f;
    quant_range_init(&b.q, 2, 0);
    /* sgd_step over cnt parameters (x) with gradients g: a net with no views */
    b.net.params = b.x, b.net.grads = b.g, b.net.n_params = b.cnt;
    lsq_err err;
    if (sgd_init(&b.opt, &b.net, &err) != LSQ_OK) return 1;
    /* dconv_igemm: 2-bit codes, weights -2..1 and activations 0..3 */
    {
        const size_t plane = (size_t)DC_WP * DC_WP;
        int32_t *w = malloc(sizeof *w * DC_C * DC_C * 9);
        b.ap = malloc(sizeof *b.ap * dconv_packed_codes(DC_C, DC_KPAIRS));
        b.scale = malloc(sizeof *b.scale * DC_C);
        b.plane = calloc(2 * (DC_C / 2 * plane + DC_NB + 64), 1);
        if (!w || !b.ap || !b.scale || !b.plane) return 1;
        for (int i = 0; i < DC_C * DC_C * 9; i++) w[i] = (int)((i * 2654435761u) % 4) - 2;
        dconv_pack_codes(b.ap, w, DC_C, DC_C, 3, 3);
        free(w);
        for (int i = 0; i < DC_C; i++) b.scale[i] = 0.01f;
        for (size_t i = 0; i < 2 * DC_C / 2 * plane; i++) b.plane[i] = (uint8_t)(i * 40503u % 4);
        for (int kp = 0; kp < DC_KPAIRS; kp++)
            b.off[kp] = (int)((size_t)(kp / 9) * plane) + kp % 9 / 3 * DC_WP + kp % 3;
    }
    /* batchnorm backward reads the saved statistics */
    batchnorm_relu_forward_train(b.out, b.mean, b.rstd, b.rm, b.rv, b.x, b.gamma, b.beta, b.n,
                                 b.c, b.hw, 0.1f, 1e-5f, b.work);

    double *ms = malloc(sizeof(double) * 2 * (size_t)rounds);
    if (!ms) return 1;
    for (int k = 0; k < K_COUNT; k++) {
        for (int p = 0; p < 2; p++) { /* warm-up: touch every page on both paths */
            lsq_isa_set((lsq_isa)p);
            run_kernel(k, &b);
        }
        for (int r = 0; r < rounds; r++)
            for (int j = 0; j < 2; j++) {
                const int p = (r + j) % 2; /* who goes first alternates */
                lsq_isa_set((lsq_isa)p);
                double t0 = now_s();
                run_kernel(k, &b);
                ms[p * rounds + r] = (now_s() - t0) * 1e3;
            }
        qsort(ms, (size_t)rounds, sizeof *ms, cmp_double);
        qsort(ms + rounds, (size_t)rounds, sizeof *ms, cmp_double);
        double base = ms[rounds / 2], wide = ms[rounds + rounds / 2];
        printf("{\"bench\":\"isa\",\"kernel\":\"%s\",\"floats\":%zu,\"offset\":%d,\"threads\":%d,"
               "\"rounds\":%d,"
               "\"%s_ms\":%.3f,\"avx512_ms\":%.3f,\"%s_min_ms\":%.3f,\"avx512_min_ms\":%.3f,"
               "\"speedup\":%.2f}\n",
               KERNEL_NAMES[k], b.cnt, offset, threads, rounds, lsq_isa_name(LSQ_ISA_BASE), base, wide,
               lsq_isa_name(LSQ_ISA_BASE), ms[0], ms[rounds], base / wide);
        fflush(stdout);
    }
    free(ms);
    sgd_free(&b.opt);
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(blocks[i]);
    free(b.gamma), free(b.work), free(b.codes);
    free(b.ap), free(b.scale), free(b.plane);
    return 0;
}
