/* Black-box harness for the API tests: starts a real lsqd (LSQD_BIN) on an
 * ephemeral loopback port with a temporary data folder, and drives it with
 * libcurl. The lsqd dies with the test process (PR_SET_PDEATHSIG). */
#ifndef LSQ_TESTS_API_HARNESS_H
#define LSQ_TESTS_API_HARNESS_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

/* The spec of a job small enough for tests (a few seconds). */
#define TINY_SPEC "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000," \
    "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":1}," \
    "\"quant\":{\"weight_bits\":4}}"
/* The same with more epochs: a job that runs long enough to be stopped. */
#define LONG_SPEC "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":20000," \
    "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":100}," \
    "\"quant\":{\"weight_bits\":4}}"

typedef struct {
    pid_t pid;
    int port;
    char root[256];   /* temp folder: data/ and lsqd.log inside */
    char data[300];
    char log[300];
    char base[64];    /* http://127.0.0.1:PORT */
} lsqd;

/* Starts lsqd with a new temporary data folder and extra flags (NULL ends). */
void lsqd_start(lsqd *d, const char *const *extra);
/* Starts lsqd again on d's data folder (after a stop or a kill). */
void lsqd_restart(lsqd *d, const char *const *extra);
/* SIGTERM and wait: returns the exit status (or 128+signal). */
int lsqd_stop(lsqd *d);
/* SIGKILL and reap. */
void lsqd_kill(lsqd *d);
/* Removes the temporary folder. */
void lsqd_cleanup(lsqd *d);

typedef struct {
    long status;
    char *body;
    size_t len;
    json_t *json;        /* the body parsed, NULL when not JSON */
    char allow[128], etag[128], ctype[128], location[128], www_auth[160];
    int cors;            /* some Access-Control-* header came back */
    long long content_length;  /* -1 when absent */
} api_res;

/* One request. body may be NULL; ctype NULL means application/json when a
 * body is given; extra_header may be NULL ("If-None-Match: ..."). */
api_res *api(lsqd *d, const char *method, const char *path, const char *body,
             const char *ctype, const char *extra_header);
/* The same with a body of len bytes (binary, e.g. an uploaded file). */
api_res *api_bin(lsqd *d, const char *method, const char *path, const void *body, size_t len,
                 const char *ctype, const char *extra_header);
void api_free(api_res *r);
/* The error code of an error reply ("" when there is none). */
const char *api_err_code(const api_res *r);
const char *api_err_field(const api_res *r);

/* The same with up to two extra headers (either may be NULL). */
api_res *api_bin2(lsqd *d, const char *method, const char *path, const void *body, size_t len,
                  const char *ctype, const char *h1, const char *h2);

/* Runs `lsqd token ARGS --data DATA` (args: NULL-terminated) and returns its
 * standard output (caller frees) with the exit status in *status. */
char *lsqd_token_cmd(lsqd *d, const char *const *args, int *status);
/* `lsqd token create --user USER [--admin]`: asserts success and returns
 * the token (caller frees). */
char *token_create(lsqd *d, const char *user, int admin);

/* Runs bin with args (NULL-terminated, at most 14) until it exits, its
 * environment changed by env (NULL-terminated, or NULL: "NAME=VALUE" sets,
 * "NAME" unsets); fails the test if it runs past timeout_s (0: no limit).
 * Returns its exit status (or 128+signal) and what it wrote to stdout and
 * stderr in *out (caller frees). */
int run_program(const char *bin, const char *const *args, const char *const *env,
                double timeout_s, char **out);
/* run_program on LSQD_BIN, which must exit (a refused start) within 10 s. */
int lsqd_refused(const char *const *args, const char *const *env, char **log);

/* Submits spec, asserts 201 and returns the job id. */
long long submit_job(lsqd *d, const char *spec);
/* Polls the job until its state is one of the finished ones (or `want` when
 * given); returns the job (caller frees) or NULL after timeout_s. */
json_t *wait_job(lsqd *d, long long id, const char *want, double timeout_s);
/* Jobs in the data folder's SQLite file, read-only: rows and max(id). */
void db_jobs(lsqd *d, long long *count, long long *max_id);

#define SSE_MAX 8192
typedef struct {
    int n;
    long long ids[SSE_MAX];
    char types[SSE_MAX][16];
    json_t *data[SSE_MAX];   /* owned: sse_log_free */
    int ended;            /* the final "end" event arrived */
    char end_state[32];
} sse_log;

/* Reads the job's SSE stream from last_id (0: from the start; < 0: no
 * Last-Event-ID header) until the end event, max_events events (0: no cap)
 * or timeout_s. Returns the curl result code. */
int sse_read(lsqd *d, long long job, long long last_id, int max_events, double timeout_s,
             sse_log *out);

/* The same, stopping right after the first event of type `type` whose
 * "phase" is `phase` (NULL: any phase). */
int sse_read_until(lsqd *d, long long job, const char *type, const char *phase,
                   double timeout_s, sse_log *out);
void sse_log_free(sse_log *log);
/* 1 when the ids are first, first+1, ... without a gap or a repeat. */
int sse_ids_consecutive(const sse_log *log, long long first);

/* The pid of the worker running job (from lsqd's log), 0 if none yet. */
pid_t worker_pid(lsqd *d, long long job);
/* sha256 of a file as hex (sha256sum). */
void file_sha256(const char *path, char out[65]);
double now_s(void);
void sleep_s(double s);

#endif
