/* Integer GEMM throughput per kernel path against OpenBLAS sgemm, on the
 * conv2 layer of cnn-small as im2col at batch 128 (64 output channels,
 * K = 32 * 3 * 3 = 288, 128 * 14 * 14 output pixels).
 *   make build/libengine.a
 *   cc -O2 -fopenmp -Iengine $(pkg-config --cflags openblas) \
 *      bench/igemm_bench.c build/libengine.a $(pkg-config --libs openblas) \
 *      -o build/igemm_bench && build/igemm_bench [threads]
 * GOPS counts a multiply and an add as two operations. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "deploy/igemm.h"

#define REPS 20

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int oc = 64, k = 288, pix = 128 * 14 * 14;
    double ops = 2.0 * oc * k * pix;
    uint8_t *a = malloc((size_t)pix * k);
    int8_t *w = malloc((size_t)oc * k);
    int32_t *c = malloc((size_t)pix * oc * sizeof *c);
    float *af = malloc((size_t)pix * k * sizeof *af);
    float *wf = malloc((size_t)oc * k * sizeof *wf);
    float *cf = malloc((size_t)pix * oc * sizeof *cf);
    unsigned s = 1;
    for (size_t i = 0; i < (size_t)pix * k; i++) {
        s = s * 1103515245u + 12345u;
        a[i] = (uint8_t)((s >> 16) % 16); /* 4-bit activation codes */
        af[i] = a[i];
    }
    for (size_t i = 0; i < (size_t)oc * k; i++) {
        s = s * 1103515245u + 12345u;
        w[i] = (int8_t)((int)((s >> 16) % 16) - 8);
        wf[i] = w[i];
    }
    lsq_igemm_w pw;
    lsq_err err;
    if (lsq_igemm_pack(&pw, w, oc, k, &err) != LSQ_OK) {
        fprintf(stderr, "pack: %s\n", err.message);
        return 1;
    }
    printf("shape: %d output channels x K=%d x %d pixels, %d threads\n", oc,
           k, pix, threads);
    for (int kern = 0; kern < LSQ_KERNEL_COUNT; kern++) {
        if (!lsq_kernel_supported((lsq_kernel)kern)) {
            printf("%-28s not supported on this CPU\n", LSQ_KERNEL_NAMES[kern]);
            continue;
        }
        for (int sign = 0; sign < 2; sign++) {
            double best = 1e30;
            for (int r = 0; r < REPS; r++) {
                double t0 = now_s();
                if (sign)
                    lsq_igemm_s8(c, oc, (const int8_t *)a, k, pix, &pw,
                                 (lsq_kernel)kern, threads, &err);
                else
                    lsq_igemm_u8(c, oc, a, k, pix, &pw, (lsq_kernel)kern,
                                 threads, &err);
                double t = now_s() - t0;
                if (t < best) best = t;
            }
            printf("igemm %-8s %s act       %8.1f GOPS  (%.2f ms)\n",
                   LSQ_KERNEL_NAMES[kern], sign ? "s8" : "u8",
                   ops / best * 1e-9, best * 1e3);
        }
    }
    openblas_set_num_threads(threads);
    for (int orient = 0; orient < 2; orient++) {
        double best = 1e30;
        for (int r = 0; r < REPS; r++) {
            double t0 = now_s();
            if (orient == 0) /* NCHW: W (OC, K) x cols (K, pixels) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc,
                            pix, k, 1.0f, wf, k, af, pix, 0.0f, cf, pix);
            else /* same as igemm: rows (pixels, K) x W^T (K, OC) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pix, oc,
                            k, 1.0f, af, k, wf, k, 0.0f, cf, oc);
            double t = now_s() - t0;
            if (t < best) best = t;
        }
        printf("cblas_sgemm %s %8.1f GFLOPS (%.2f ms)\n",
               orient == 0 ? "M=64,N=25088,K=288 " : "M=25088,N=64,K=288 ",
               ops / best * 1e-9, best * 1e3);
    }
    lsq_igemm_w_free(&pw);
    free(a); free(w); free(c); free(af); free(wf); free(cf);
    return 0;
}
