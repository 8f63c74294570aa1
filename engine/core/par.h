/* Threading policy shared by the GEMM-based kernels (conv2d, linear).
 *
 * The engine parallelises GEMM work itself: it splits a layer into
 * independent pieces (images of a batch, row blocks of a matrix) across
 * OpenMP threads, and each piece calls a single-threaded OpenBLAS SGEMM.
 * Measured on the target machine, this beats one large multi-threaded SGEMM
 * for the small shapes of the zoo networks (the pieces stay in L2 and no
 * thread ever waits on OpenBLAS's pool). So the caller should run OpenBLAS
 * with one thread (openblas_set_num_threads(1)) and set the OpenMP thread
 * count. If OpenBLAS was left multi-threaded, the kernels notice and fall
 * back to one OpenMP thread around multi-threaded SGEMM calls: correct, and
 * never two thread pools fighting for the same cores. */
#ifndef LSQ_PAR_H
#define LSQ_PAR_H

#include <cblas.h>
#include <omp.h>

/* Upper bound on the OpenMP threads a GEMM kernel uses; per-thread scratch
 * is sized for this many, so the caller may change the thread count after
 * sizing scratch. */
#define PAR_MAX_THREADS 8

/* Threads a GEMM kernel should fan out to right now. */
static inline int par_gemm_threads(void)
{
    if (openblas_get_num_threads() > 1) return 1;
    int t = omp_get_max_threads();
    return t < 1 ? 1 : (t > PAR_MAX_THREADS ? PAR_MAX_THREADS : t);
}

#endif
