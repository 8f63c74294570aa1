/* Fully connected layer: out (N, OUT) = in (N, IN) · w (OUT, IN)^T + b.
 *
 * Each product is split into row blocks over OpenMP threads, each block one
 * single-threaded SGEMM (see par.h). The blocks write disjoint rows, so no
 * reduction is needed and results do not depend on the thread count. Small
 * products stay on one thread: a fork costs more than they do. */
#include "core/par.h"
#include "nn/layers.h"

/* Below this many multiply-adds a product runs on one thread. */
#define LINEAR_SPLIT_MACS (1L << 18)

static int split_threads(long macs, int rows)
{
    int nt = par_gemm_threads();
    if (macs < LINEAR_SPLIT_MACS) nt = 1;
    return nt < rows ? nt : (rows < 1 ? 1 : rows);
}

/* Rows [lo, hi) of `rows` for block t of nt. */
static void block(int rows, int t, int nt, int *lo, int *hi)
{
    *lo = (int)((long)rows * t / nt);
    *hi = (int)((long)rows * (t + 1) / nt);
}

void linear_forward(float *out, const float *in, const float *w, const float *b,
                    int n, int in_f, int out_f)
{
    int nt = split_threads((long)n * in_f * out_f, n);
#pragma omp parallel num_threads(nt)
    {
        int lo, hi, t = omp_get_thread_num(), team = omp_get_num_threads();
        block(n, t, team, &lo, &hi);
        float beta = 0.0f;
        if (b) {
            for (int i = lo; i < hi; i++)
                for (int o = 0; o < out_f; o++) out[(size_t)i * out_f + o] = b[o];
            beta = 1.0f;
        }
        if (hi > lo)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, out_f,
                        in_f, 1.0f, in + (size_t)lo * in_f, in_f, w, in_f, beta,
                        out + (size_t)lo * out_f, out_f);
    }
}

void linear_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, int n, int in_f, int out_f)
{
    long macs = (long)n * in_f * out_f;
    if (din) {
        /* din (N, IN) += dout (N, OUT) · w (OUT, IN), split over N. */
        int nt = split_threads(macs, n);
#pragma omp parallel num_threads(nt)
        {
            int lo, hi, t = omp_get_thread_num(), team = omp_get_num_threads();
            block(n, t, team, &lo, &hi);
            if (hi > lo)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo,
                            in_f, out_f, 1.0f, dout + (size_t)lo * out_f, out_f,
                            w, in_f, 1.0f, din + (size_t)lo * in_f, in_f);
        }
    }
    if (dw) {
        /* dw (OUT, IN) += dout^T (OUT, N) · in (N, IN), split over OUT. */
        int nt = split_threads(macs, out_f);
#pragma omp parallel num_threads(nt)
        {
            int lo, hi, t = omp_get_thread_num(), team = omp_get_num_threads();
            block(out_f, t, team, &lo, &hi);
            if (hi > lo)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo,
                            in_f, n, 1.0f, dout + lo, out_f, in, in_f, 1.0f,
                            dw + (size_t)lo * in_f, in_f);
        }
    }
    if (db) {
        for (int i = 0; i < n; i++) {
            const float *g = dout + (size_t)i * out_f;
            for (int o = 0; o < out_f; o++) db[o] += g[o];
        }
    }
}
