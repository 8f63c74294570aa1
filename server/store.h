/* The store: every SQL statement of lsqd. SQLite in WAL mode with a busy
 * timeout; one connection per thread (opened on first use), so readers never
 * wait for the scheduler's writes. Migrations (embedded from schema/) are
 * applied by store_open, tracked with PRAGMA user_version.
 *
 * Functions returning json_t* give the caller a new reference (json_decref).
 * Failures return STORE_ERR and log the SQLite message. */
#ifndef LSQD_STORE_H
#define LSQD_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "train/events.h"

typedef enum {
    STORE_OK = 0,
    STORE_NOT_FOUND,
    STORE_CONFLICT,    /* e.g. cancelling a finished job */
    STORE_FULL,        /* the queue is at its cap */
    STORE_LIMIT,       /* a per-user limit is reached */
    STORE_ERR,
} store_status;

/* Why this thread's last SQLite call failed (store_fault_since). */
typedef enum {
    STORE_FAULT_NONE,
    STORE_FAULT_BUSY,  /* SQLITE_BUSY/LOCKED: locked beyond the busy timeout */
    STORE_FAULT_FULL,  /* SQLITE_FULL: the disk (or the file's limit) is full */
    STORE_FAULT_IO,    /* SQLITE_IOERR and kin: the file cannot be read or written */
    STORE_FAULT_OTHER,
} store_fault;

/* The kind of the last SQLite failure on the calling thread, when it
 * happened at or after t0 (seconds since the epoch, gettimeofday); NONE
 * otherwise. The HTTP layer asks it with the request's start time. */
store_fault store_fault_since(double t0);
/* The busy timeout, in milliseconds, after which a locked database fails. */
#define STORE_BUSY_TIMEOUT_MS 10000
#define STORE_BUSY_TIMEOUT_TEXT "10 s"

typedef enum {
    JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED, JOB_STATE_COUNT
} job_state;
extern const char *const JOB_STATE_NAMES[];
/* -1 when name is not a state. */
int job_state_from_name(const char *name);

/* Opens (creating) path and migrates it. Returns 0 or -1 (logged). Once per
 * process; store_close closes every thread's connection. */
int store_open(const char *path);
void store_close(void);
/* The schema version after migration (PRAGMA user_version). */
int store_version(void);
/* 0 when the database answers a query (for /healthz). */
int store_ping(void);

/* Inserts a queued job unless max_queue jobs are already queued (STORE_FULL)
 * or max_per_user (> 0) of owner_id's are (STORE_LIMIT).
 * model_id > 0: the uploaded model it trains from, which must exist;
 * dataset_id > 0: the dataset it trains on, which must exist and be ready
 * (STORE_NOT_FOUND otherwise, both checked in the same transaction). */
store_status store_job_insert(const char *name, const char *spec_json, int64_t model_id,
                              int64_t dataset_id, int64_t owner_id, int max_queue,
                              int max_per_user, int64_t *id);
/* The job as the API shows it; NULL when it does not exist (or on error). */
json_t *store_job_get(int64_t id);
/* Newest first; state < 0: any; after > 0: only ids below it; owner_id > 0:
 * only that user's jobs. */
json_t *store_job_list(int state, int limit, int64_t after, int64_t owner_id);
/* Jobs per state (counts[JOB_STATE_COUNT]). */
store_status store_job_counts(int64_t *counts);
/* 1 if the job exists and is finished, 0 if not finished, -1 if unknown. */
int store_job_finished(int64_t id, job_state *state);

/* Moves the oldest queued job to running (attempts + 1) and returns it:
 * STORE_NOT_FOUND when the queue is empty. *spec is malloc'ed.
 * max_running_per_user > 0: a job whose owner has that many running waits. */
store_status store_job_claim(int max_running_per_user, int64_t *id, char **spec, int *attempts);
/* Ends a running job. error_code/message may be NULL (they keep any stored
 * from an error event); exit_status < -1000 leaves it NULL. */
store_status store_job_finish(int64_t id, job_state state, const char *error_code,
                              const char *message, int exit_status);
/* Puts a running job back in the queue (a graceful shutdown), refunding the
 * attempt so that it does not count against --max-attempts. */
store_status store_job_requeue(int64_t id);
/* Puts a failed job back in the queue (POST .../resume): its worker starts
 * again in the same job folder and resumes from the checkpoint there.
 * STORE_CONFLICT when the job is not failed, STORE_NOT_FOUND when unknown. */
store_status store_job_resume(int64_t id);
/* At start-up: running jobs left by a previous lsqd go back to queued, or
 * fail when they already had max_attempts starts. A running job whose
 * cancel was accepted before lsqd died ends cancelled instead: it never runs
 * again. keep_slurm: jobs with a Slurm id are left running (the Slurm
 * executor reconciles them, their cancel included); else they are treated
 * as above and lose their Slurm id. Returns how many were re-queued (and in
 * *cancelled how many were cancelled), -1 on error. */
int store_jobs_recover(int max_attempts, int keep_slurm, int *cancelled);
/* Records the Slurm job id of a running job (NULL clears it). */
store_status store_job_set_slurm(int64_t id, const char *slurm_id);
/* A Slurm job that a previous lsqd submitted but died before storing its
 * id: the job (queued again by store_jobs_recover, or running) becomes
 * running with that Slurm id. STORE_NOT_FOUND when the job is not waiting
 * for one (it ended, or has another Slurm id). */
store_status store_job_adopt_slurm(int64_t id, const char *slurm_id);
/* Running jobs that have a Slurm id, by id: [{"id","slurm_id",
 * "events_offset","cancel"}] (caller owns it), NULL on error. */
json_t *store_jobs_slurm_running(void);
/* How many bytes of the job's events file are stored (-1 if unknown), and
 * how many of the worker's events (*worker_seq). */
int64_t store_job_events_offset(int64_t id, int64_t *worker_seq);
/* The per-job token of the worker's HTTP events: only its sha256 (hex) is
 * stored. check: 1 when sha256_hex is the job's, 0 when not (or the job has
 * none), -1 on error. */
store_status store_job_token_set(int64_t id, const char *sha256_hex);
int store_job_token_check(int64_t id, const char *sha256_hex);
/* 1 when a cancel was asked for the job, 0 when not, -1 if unknown. */
int store_job_cancel_requested(int64_t id);
/* Cancel: a queued job becomes cancelled (*was_running = 0); a running one
 * gets cancel_requested (*was_running = 1); a finished one: STORE_CONFLICT. */
store_status store_job_cancel(int64_t id, int *was_running);

/* Stores one event with the next sequence number of the job (*seq), and what
 * it implies: latest progress/epoch, metric points, artifact rows, error and
 * test accuracy. ev is borrowed. */
store_status store_event_add(int64_t job_id, ev_type type, json_t *ev, int64_t *seq);
/* An event of the worker, numbered by the worker (wseq 1, 2, 3 ...: the
 * line of the job's events file), from the events file or over HTTP: stored
 * when wseq is the next one, skipped (STORE_OK, *seq 0) when it is stored
 * already, STORE_CONFLICT when events before it are missing. end_offset
 * (>= 0) records in the same transaction how far the events file is read,
 * so that a restart neither skips nor repeats an event. wseq 0: an event
 * of lsqd's own (store_event_add). */
store_status store_worker_event_add(int64_t job_id, int64_t wseq, ev_type type, json_t *ev,
                                    int64_t end_offset, int64_t *seq);
/* Events with seq > after, oldest first, at most limit: an array of
 * {"seq","type","json"} where json is the event text. */
json_t *store_events_after(int64_t job_id, int64_t after, int limit);
/* {"job_id":..,"series":{name:[{seq,phase,epoch,step,value}]}} or NULL. */
json_t *store_metrics_get(int64_t job_id);
/* [{"name","bytes","sha256","created_at"}] (empty when none). */
json_t *store_artifacts_list(int64_t job_id);
/* STORE_NOT_FOUND when the job has no artifact of that name. sha256[65]. */
store_status store_artifact_get(int64_t job_id, const char *name, int64_t *bytes,
                                char *sha256);

/* Datasets that lsqd registered (datasets.c, registrar.c): the cache is
 * DATA/datasets/ID/. A dataset as the API shows it: {"id","name","source",
 * "origin","options":{...},"state","bytes","sha256","summary":{...}|null,
 * "error":{code,message}|null,"created_at","finished_at","jobs_active",
 * "progress":{"phase","done","total"}|null}. */
typedef enum { DS_REGISTERING, DS_READY, DS_FAILED, DS_STATE_COUNT } ds_state;
extern const char *const DS_STATE_NAMES[];
typedef enum { DS_SRC_UPLOAD, DS_SRC_URL, DS_SRC_ROOT, DS_SRC_COUNT } ds_source;
extern const char *const DS_SOURCE_NAMES[];

/* A new dataset in state registering. origin may be NULL (uploads);
 * bytes < 0 and sha256 NULL: not known yet. */
store_status store_dataset_insert(const char *name, ds_source source, const char *origin,
                                  const char *options_json, long long bytes,
                                  const char *sha256, int64_t owner_id, int64_t *id);
/* NULL when it does not exist (or on error). with_classes 0 drops the
 * summary's per-class list (the list of datasets). */
json_t *store_dataset_get(int64_t id, int with_classes);
/* Newest first, without the per-class lists; owner_id > 0: that user's and
 * the datasets root's. */
json_t *store_dataset_list(int64_t owner_id);
/* The size and digest of a fetched file. */
store_status store_dataset_set_file(int64_t id, long long bytes, const char *sha256);
/* How far a registering dataset has come: phase, done of total (total < 0:
 * not known, shown as null). STORE_NOT_FOUND if it is not registering. */
store_status store_dataset_progress(int64_t id, const char *phase, long long done,
                                    long long total);
/* A registering dataset becomes ready with its summary (JSON text), or
 * failed with an error; STORE_NOT_FOUND if it is not registering. */
store_status store_dataset_ready(int64_t id, const char *summary_json);
store_status store_dataset_fail(int64_t id, const char *code, const char *message);
/* Deletes the row unless it is registering (STORE_CONFLICT, *active_job 0)
 * or a queued or running job uses it (STORE_CONFLICT, *active_job = the
 * oldest such job). STORE_NOT_FOUND if there is no such dataset. */
store_status store_dataset_delete(int64_t id, int64_t *active_job);
/* Ids of the datasets in state registering, oldest first (left by an lsqd
 * that stopped: registered again at start-up). */
json_t *store_datasets_registering(void);
/* The dataset registered from folder `origin` of the datasets root:
 * STORE_OK with *id, or STORE_NOT_FOUND. */
store_status store_dataset_root_find(const char *origin, int64_t *id);

/* Uploaded models (the file is DATA/models/ID.onnx, models.c). A model as
 * the API shows it: {"id","name","bytes","sha256","summary":{...},
 * "created_at","jobs_active"} (jobs_active: queued or running jobs using it). */
store_status store_model_insert(const char *name, long long bytes, const char *sha256,
                                const char *summary_json, int64_t owner_id, int64_t *id);
/* NULL when it does not exist (or on error). */
json_t *store_model_get(int64_t id);
/* Newest first; owner_id > 0: only that user's. */
json_t *store_model_list(int64_t owner_id);
/* Deletes the row unless a queued or running job uses the model
 * (STORE_CONFLICT, *active_job = the oldest such job). STORE_NOT_FOUND if
 * there is no such model. */
store_status store_model_delete(int64_t id, int64_t *active_job);

/* Users and API tokens (auth.c). Every job, model and dataset has an owner
 * (its "owner" field is the user's name); user STORE_LOCAL_USER owns what
 * lsqd made with authentication off. */
#define STORE_LOCAL_USER 1
typedef struct {
    int64_t id;
    char name[72];
    int admin;
} store_user;
typedef enum { STORE_OBJ_JOB, STORE_OBJ_MODEL, STORE_OBJ_DATASET, STORE_OBJECT_COUNT } store_object;

/* A token of user `user` (made on first use; admin != 0 makes it an admin)
 * kept as its hex sha256: *token_id, and whether the user is an admin. */
store_status store_token_insert(const char *user, int admin, const char *sha256,
                                int64_t *token_id, int *user_admin);
/* [{"id","user","admin","created_at","last_used","revoked_at"}], oldest
 * first; never the hashes. */
json_t *store_token_list(void);
/* STORE_NOT_FOUND: no such token; STORE_CONFLICT: revoked already. */
store_status store_token_revoke(int64_t id);
/* Tokens not revoked; -1 on error. */
int store_tokens_active(void);
/* The user of the valid (not revoked) token whose hash is sha256, and the
 * stored hash (stored[65]) for the caller's constant-time compare; notes
 * its last use. STORE_NOT_FOUND when no valid token has that hash. */
store_status store_token_lookup(const char *sha256, store_user *u, char stored[65]);
/* Bytes that user owner_id keeps: uploaded models, registered datasets
 * (not those of the datasets root) and the artifacts of their jobs; -1 on
 * error. */
long long store_owner_bytes(int64_t owner_id);
/* The owner of a job, model or dataset; *shared = 1 for the datasets of the
 * datasets root (every user sees them). STORE_NOT_FOUND if it does not exist. */
store_status store_owner_get(store_object kind, int64_t id, int64_t *owner_id, int *shared);
/* Webhooks (schema/004_webhooks.sql). A job whose spec has a notify_url gets
 * its delivery row from a trigger when it reaches a final state. */
/* The owner's secret into out[cap]; STORE_NOT_FOUND when it has none yet. */
store_status store_webhook_secret_get(int64_t owner_id, char *out, size_t cap);
/* Stores a secret for the owner unless it has one (then nothing changes). */
store_status store_webhook_secret_add(int64_t owner_id, const char *secret);
/* The pending delivery due first: its job, owner, URL (*url malloc'ed),
 * attempts so far and when the next is due. STORE_NOT_FOUND when none. */
store_status store_webhook_next(int64_t *job_id, int64_t *owner_id, char **url, int *attempts,
                                double *next_at);
/* Records attempt n (status 0: no HTTP status; error NULL: none) and moves
 * the delivery to state ("pending", "delivered", "failed") and next_at, in
 * one transaction. */
store_status store_webhook_attempt(int64_t job_id, int n, double at, int status,
                                   const char *error, const char *state, double next_at);
/* The job's "notify" object: {"url", "state" (waiting, pending, delivered,
 * failed), "delivered" (null until decided), "next_at", "attempts": [{"at",
 * "status", "error"}]}. url: the spec's notify_url, shown as "waiting"
 * before the job ends; NULL when the job has none (and no delivery). New
 * reference, or NULL. */
json_t *store_job_notify(int64_t job_id, const char *url);

#endif
