/* Data-parallel training over MPI ranks: the only file of the engine that
 * knows MPI. A process started by mpirun / srun (OMPI_COMM_WORLD_SIZE, PMIX_RANK
 * or PMI_RANK in its environment) joins MPI_COMM_WORLD; any other process is
 * rank 0 of 1 and never calls MPI, so `lsq train` alone behaves as before.
 *
 * Every rank runs the same job on its shard of each global batch; one
 * allreduce per step sums the gradient buffer (graph/net.h: the gradients
 * and a tail of per-step tallies) so that every rank applies the same
 * update. Rank 0 alone writes files and events. */
#ifndef LSQ_DIST_H
#define LSQ_DIST_H

#include <stddef.h>

#include "core/err.h"
#include "graph/net.h"

typedef struct {
    int rank, size;       /* 0 and 1 without MPI */
    int mpi;              /* 1: MPI_Init ran here (dist_finalize ends it) */
    /* the engine's own timer of the gradient allreduce, reset by the caller */
    double reduce_s;      /* seconds inside dist_sum_float */
    long reduces;         /* calls */
    size_t reduce_bytes;  /* bytes of the last call */
} lsq_dist;

/* 1 when a launcher (mpirun, srun --mpi=pmix) started this process. */
int dist_launched(void);
/* Joins MPI when launched (dist_launched), else fills a single rank. argc and
 * argv are MPI_Init's (may be NULL). Fails with LSQ_ERR_INTERNAL when MPI
 * cannot start. */
lsq_status dist_init(lsq_dist *d, int *argc, char ***argv, lsq_err *err);
/* Ends MPI if dist_init started it. */
void dist_finalize(lsq_dist *d);
/* Ends every rank at once (a rank's failure that the others cannot see);
 * returns only without MPI. */
void dist_abort(const lsq_dist *d, int code);

/* In-place sums over every rank (every rank calls them, in the same order,
 * with the same n); no-ops on one rank. dist_sum_float is the gradient's
 * allreduce and is timed into reduce_s. */
void dist_sum_float(lsq_dist *d, float *buf, size_t n);
void dist_sum_double(lsq_dist *d, double *buf, size_t n);
/* Every rank's `n` floats (n may differ between ranks) concatenated in rank
 * order into all (room for the sum of every n); *total receives that sum. */
void dist_gather_float(lsq_dist *d, float *all, size_t *total, const float *mine, size_t n);
/* The largest n that dist_gather_float may return: the sum over ranks. */
size_t dist_sum_size(lsq_dist *d, size_t n);
void dist_barrier(lsq_dist *d);

/* The collective hooks a network's forward uses to start its activation
 * steps from the global first batch (net_collective in graph/net.h). */
net_collective dist_net_collective(lsq_dist *d);

#endif
