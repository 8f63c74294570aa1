/* The gradient allreduce alone (train/dist.h), without the training around
 * it: every rank enters together (a barrier first), so the time is the
 * transfer and the sum, not a wait for a slower rank.
 *   mpirun -np 2 build/bench/allreduce_bench [FLOATS] [ROUNDS]
 * FLOATS defaults to cnn-small's gradient buffer (824,554 + 4). Rank 0
 * prints the median and the best time of ROUNDS (default 50). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "train/dist.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    lsq_dist d;
    lsq_err err;
    if (dist_init(&d, &argc, &argv, &err) != LSQ_OK) {
        fprintf(stderr, "allreduce_bench: %s\n", err.message);
        return 1;
    }
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 824558;
    int rounds = argc > 2 ? atoi(argv[2]) : 50;
    float *buf = calloc(n ? n : 1, sizeof(float));
    double *t = calloc((size_t)(rounds > 0 ? rounds : 1), sizeof(double));
    if (!buf || !t || rounds < 1) return 1;
    for (int r = 0; r < rounds; r++) {
        dist_barrier(&d);
        double before = d.reduce_s;
        dist_sum_float(&d, buf, n);
        t[r] = d.reduce_s - before;
    }
    qsort(t, (size_t)rounds, sizeof *t, cmp_double);
    if (d.rank == 0)
        printf("%d ranks, %zu bytes: median %.3f ms, best %.3f ms (%d rounds)\n", d.size,
               n * sizeof(float), 1e3 * t[rounds / 2], 1e3 * t[0], rounds);
    free(buf);
    free(t);
    dist_finalize(&d);
    return 0;
}
