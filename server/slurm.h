/* The Slurm executor (lsqd --executor slurm, docs/cluster.md): each job is a
 * batch job (`sbatch` of a script written into the job folder, which runs the
 * same `lsq train` as the local executor, with its events appended to
 * DATA/jobs/ID/events.jsonl on the shared data folder). One thread submits
 * queued jobs (at most --workers in Slurm at once), follows their events
 * files, polls `squeue` (then `sacct`) for their state, cancels with
 * `scancel --signal=TERM` and a hard `scancel` after the grace period, and
 * ends them from the Slurm state and the exit status the script leaves in the
 * job folder. Jobs keep running in Slurm when lsqd stops or dies; the next
 * lsqd finds them by the Slurm id stored with the job and follows them on.
 * The scheduler (scheduler.h) forwards its calls here. */
#ifndef LSQD_SLURM_H
#define LSQD_SLURM_H

#include <stdint.h>

#include "config.h"

/* Reconciles the jobs the store holds as running under Slurm, then starts
 * the thread. Returns 0, or -1 when the thread cannot start. */
int slurm_start(const lsqd_config *cfg);
void slurm_kick(void);
/* --slurm-events http: lsqd's URL once it listens (http://HOST:PORT, used
 * unless --slurm-callback gave one); no job is submitted before. */
void slurm_set_callback(const char *base_url);
/* The job (running) was asked to stop: SIGTERM through scancel now. */
void slurm_cancel(int64_t job_id);
/* Joins the thread; the Slurm jobs run on (the next lsqd follows them). */
void slurm_stop(void);
/* Copies up to cap (job id, images/s) pairs of followed jobs; returns how
 * many jobs are followed. */
int slurm_snapshot(int64_t *ids, double *images_per_s, int cap);

/* The Slurm states after which a job will not run again (COMPLETED, FAILED,
 * CANCELLED, NODE_FAIL, TIMEOUT, ...): 1, else 0 (PENDING, RUNNING,
 * COMPLETING, REQUEUED, ...). Exposed for the unit tests. */
int slurm_state_final(const char *state);

#endif
