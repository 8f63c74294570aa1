/* The training driver behind `lsq train`: pretrain (full precision), then LSQ
 * fine-tuning with distillation from the full-precision model; per-epoch test
 * evaluation, events, checkpoints that resume exactly, and the artifacts. */
#ifndef LSQ_TRAIN_H
#define LSQ_TRAIN_H

#include <signal.h>
#include <stdio.h>

#include "core/spec.h"
#include "data/data.h"
#include "graph/net.h"
#include "train/dist.h"
#include "train/events.h"

/* File names inside a run's output folder. */
#define TRAIN_CKPT_FILE "checkpoint.lsqc" /* latest state, for resume */
#define TRAIN_FP_FILE "fp.lsqc"           /* the full-precision model */
#define TRAIN_MODEL_FILE "model.lsqc"     /* the final model */

typedef struct {
    ev_sink *events;                  /* may be a sink with fd -1 */
    volatile sig_atomic_t *stop;      /* set by SIGTERM: checkpoint and return */
    FILE *progress;                   /* a terminal line; NULL for none */
    int threads_override;             /* > 0: replaces spec->threads */
    lsq_dist *dist;                   /* data-parallel ranks (dist.h); NULL: one
                                       * process. Every rank calls train_run with
                                       * the same spec and folder; rank 0 alone
                                       * writes files and events. */
} train_opts;

/* Runs the job described by spec into out_dir (created if missing). Under
 * opts->dist each rank trains on its share of every global batch
 * (train.batch_size images, split as evenly as they go), one allreduce per
 * step sums the gradients, and batch-norm running statistics are averaged
 * over the ranks before every evaluation and checkpoint; a checkpoint holds
 * nothing of the rank count, so a run may resume on another. Resumes
 * from out_dir/checkpoint.lsqc when it exists. Returns LSQ_OK when done,
 * LSQ_ERR_CANCELLED after a stop request (a checkpoint was written), or
 * another status with err filled (an "error" event was also emitted).
 * *test_acc receives the final test accuracy when not NULL. */
lsq_status train_run(const lsq_spec *spec, const char *out_dir, const train_opts *opts,
                     double *test_acc, lsq_err *err);

/* Test accuracy and mean loss of a float network on a dataset (eval mode).
 * Returns 0, or 1 when *stop (may be NULL) was set before the last batch:
 * then *acc and *loss are meaningless. */
int train_evaluate(lsq_net *net, const lsq_dataset *ds, int batch, volatile sig_atomic_t *stop,
                   double *acc, double *loss);

/* Loads the spec's dataset with its limits: the built-in IDX sets
 * (dataset.name, dataset.path) or a cache (dataset.cache); train or test may
 * be NULL. *data receives what the network is built for: the image shape,
 * the classes and the normalisation (the cache's mean and std; for a
 * built-in set with dataset.normalize, those of the training images loaded,
 * or of the test images when train is NULL). path_override (NULL: none)
 * replaces dataset.path, or dataset.cache for a cache job. */
lsq_status train_load_dataset(const lsq_spec *spec, const char *path_override,
                              lsq_dataset *train, lsq_dataset *test, net_data *data,
                              lsq_err *err);

/* Sets the engine's and OpenBLAS's thread counts. */
void train_set_threads(int threads);

/* Reads the variables that choose the engine's paths: LSQ_ISA, LSQ_CONV,
 * LSQ_WINO, LSQ_BWD and LSQ_KERNEL. The first bad one is LSQ_ERR_INVALID
 * with err naming it; lsq and lsqd call this before anything else and refuse
 * to start rather than run some other path than the one asked for. */
lsq_status train_paths_from_env(lsq_err *err);

#endif
