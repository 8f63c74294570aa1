/* MPI behind the data-parallel training of dist.h; nothing else includes mpi.h. */
#include "train/dist.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int dist_launched(void)
{
    /* Open MPI's mpirun, PMIx launchers (srun --mpi=pmix, prterun), and PMI-1/2 */
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

lsq_status dist_init(lsq_dist *d, int *argc, char ***argv, lsq_err *err)
{
    memset(d, 0, sizeof *d);
    d->size = 1;
    if (!dist_launched()) return LSQ_OK;
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return lsq_err_set(err, LSQ_ERR_INTERNAL, NULL, "MPI_Init failed");
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    return LSQ_OK;
}

void dist_finalize(lsq_dist *d)
{
    if (d->mpi) MPI_Finalize();
    d->mpi = 0;
}

void dist_abort(const lsq_dist *d, int code)
{
    if (d->mpi && d->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

/* MPI counts are int: large buffers go in chunks (a gradient of 2^31 floats
 * is far past any network here, but the loop costs nothing). */
#define DIST_CHUNK ((size_t)1 << 30)

void dist_sum_float(lsq_dist *d, float *buf, size_t n)
{
    if (d->size < 2) return;
    double t0 = now_s();
    for (size_t off = 0; off < n; off += DIST_CHUNK) {
        size_t c = n - off < DIST_CHUNK ? n - off : DIST_CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    d->reduce_s += now_s() - t0;
    d->reduces++;
    d->reduce_bytes = n * sizeof(float);
}

void dist_sum_double(lsq_dist *d, double *buf, size_t n)
{
    if (d->size < 2) return;
    for (size_t off = 0; off < n; off += DIST_CHUNK) {
        size_t c = n - off < DIST_CHUNK ? n - off : DIST_CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
}

size_t dist_sum_size(lsq_dist *d, size_t n)
{
    double v = (double)n;
    dist_sum_double(d, &v, 1);
    return (size_t)v;
}

void dist_gather_float(lsq_dist *d, float *all, size_t *total, const float *mine, size_t n)
{
    if (d->size < 2) {
        if (all != mine) memcpy(all, mine, n * sizeof(float));
        *total = n;
        return;
    }
    int *counts = malloc((size_t)d->size * 2 * sizeof(int));
    if (!counts) MPI_Abort(MPI_COMM_WORLD, 1);
    int *displs = counts + d->size;
    int mine_n = (int)n;
    MPI_Allgather(&mine_n, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD);
    size_t off = 0;
    for (int r = 0; r < d->size; r++) {
        displs[r] = (int)off;
        off += (size_t)counts[r];
    }
    MPI_Allgatherv(mine, mine_n, MPI_FLOAT, all, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
    *total = off;
    free(counts);
}

void dist_barrier(lsq_dist *d)
{
    if (d->size > 1) MPI_Barrier(MPI_COMM_WORLD);
}

static void coll_sum(void *ctx, double *buf, size_t n) { dist_sum_double(ctx, buf, n); }
static size_t coll_sum_size(void *ctx, size_t n) { return dist_sum_size(ctx, n); }
static void coll_gather(void *ctx, float *all, size_t *total, const float *mine, size_t n)
{
    dist_gather_float(ctx, all, total, mine, n);
}

net_collective dist_net_collective(lsq_dist *d)
{
    net_collective c = {NULL, NULL, NULL, NULL};
    if (d && d->size > 1) c = (net_collective){d, coll_sum, coll_sum_size, coll_gather};
    return c;
}
