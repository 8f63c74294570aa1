/* The scheduler: --workers slots, each running one job as a child process
 * (`lsq train SPEC --out JOBDIR --events-fd 3`). One thread claims queued
 * jobs, reads the workers' event pipes (poll), stores each event with its
 * sequence number and wakes the hub, and ends jobs when their process exits.
 * Cancel is SIGTERM then SIGKILL after the grace period.
 * These calls are the executor interface: with --executor slurm they go to
 * the Slurm executor (slurm.h), which runs the same worker under sbatch. */
#ifndef LSQD_SCHEDULER_H
#define LSQD_SCHEDULER_H

#include <stdint.h>

#include "config.h"

int sched_start(const lsqd_config *cfg);
/* Something was queued: look at the queue now. */
void sched_kick(void);
/* The job (running) was asked to stop: SIGTERM it now. */
void sched_cancel(int64_t job_id);
/* Graceful stop: SIGTERM every worker (they checkpoint), SIGKILL after the
 * grace period, put their jobs back in the queue, join the thread. */
void sched_stop(void);

typedef struct {
    int64_t job_id;
    double images_per_s;   /* from the latest progress event, 0 before one */
} sched_busy;

/* Copies up to cap busy slots into out; returns how many are busy. */
int sched_snapshot(sched_busy *out, int cap);

/* The folder of a job: <data>/jobs/<id> (no trailing slash). */
void sched_job_dir(const lsqd_config *cfg, int64_t job_id, char *out, size_t cap);

#endif
