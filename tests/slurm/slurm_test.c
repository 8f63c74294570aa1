/* lsqd --executor slurm against a real Slurm (scripts/slurm-up.sh: one node
 * on this machine, SLURM_CONF set by tests/slurm/run.sh) and the real
 * `lsq train`: a job runs as a Slurm batch job with its events streamed
 * live, cancel checkpoints, a bad partition is a clear job error, and an
 * lsqd killed with SIGKILL finds its running job again after a restart. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/harness.h"

static const char *const SLURM_FLAGS[] = {"--executor", "slurm", "--slurm-poll", "0.3",
                                          "--slurm-mem", "1000", "--slurm-time", "20",
                                          "--grace", "20", "--workers", "2", NULL};

/* A job of a few seconds with enough events to read some while it runs. */
#define SHORT_SPEC "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000," \
    "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":4}," \
    "\"quant\":{\"weight_bits\":4},\"resources\":{\"time_min\":15}}"

static void setup(void)
{
    cr_assert(getenv("SLURM_CONF"), "run through tests/slurm/run.sh (it starts Slurm)");
}

/* Runs a shell command and returns its first output line (static buffer). */
static const char *sh(const char *fmt, const char *arg)
{
    static char out[512];
    char cmd[600];
    snprintf(cmd, sizeof cmd, fmt, arg);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    cr_assert(p, "%s", cmd);
    if (!fgets(out, sizeof out, p)) out[0] = '\0';
    pclose(p);
    out[strcspn(out, "\n")] = '\0';
    return out;
}

static json_t *get_job(lsqd *d, long long id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id);
    api_res *r = api(d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    json_t *j = json_incref(r->json);
    api_free(r);
    return j;
}

static long long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

static int has_type(const sse_log *ev, const char *type)
{
    for (int i = 0; i < ev->n; i++)
        if (!strcmp(ev->types[i], type)) return 1;
    return 0;
}

static int count_type(const sse_log *ev, const char *type)
{
    int n = 0;
    for (int i = 0; i < ev->n; i++) n += !strcmp(ev->types[i], type);
    return n;
}

/* The job's Slurm id once it has one. */
static void slurm_id_of(lsqd *d, long long id, char *out, size_t cap)
{
    double t0 = now_s();
    out[0] = '\0';
    while (!out[0] && now_s() - t0 < 30) {
        json_t *j = get_job(d, id);
        const char *s = json_string_value(json_object_get(j, "slurm_id"));
        if (s) snprintf(out, cap, "%s", s);
        json_decref(j);
        if (!out[0]) sleep_s(0.1);
    }
    cr_assert(out[0], "job %lld got no Slurm id (see %s)", id, d->log);
}

Test(slurm, job_runs_as_batch_job_with_live_events, .init = setup, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, SHORT_SPEC);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);

    /* live: the first events arrive over SSE while the job still runs */
    sse_log ev;
    sse_read(&d, id, 0, 3, 120, &ev);
    cr_assert_eq(ev.n, 3, "3 events while the job runs (see %s)", d.log);
    cr_assert(!ev.ended);
    cr_assert_str_eq(ev.types[0], "start");
    json_t *j = get_job(&d, id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    const char *st = sh("squeue -h -t all -j %s -o %%T", sid);
    cr_assert(!strcmp(st, "RUNNING") || !strcmp(st, "COMPLETING") || !strcmp(st, "COMPLETED"),
              "squeue says %s", st);
    sse_log_free(&ev);

    j = wait_job(&d, id, NULL, 240);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_status")), 0);
    cr_assert(json_is_number(json_object_get(j, "test_acc")));
    long long last_seq = json_integer_value(json_object_get(j, "last_seq"));
    json_decref(j);

    /* Slurm ran it: its records say so */
    cr_assert_str_eq(sh("squeue -h -t all -j %s -o %%T", sid), "COMPLETED");
    char want[64];
    snprintf(want, sizeof want, "%s|COMPLETED", sid);
    cr_assert_str_eq(sh("sacct -c -n -P -j %s -o JobID,State", sid), want);

    /* every event the worker wrote, once, in order */
    sse_read(&d, id, 0, 0, 30, &ev);
    cr_assert(ev.ended);
    cr_assert_str_eq(ev.end_state, "succeeded");
    cr_assert(sse_ids_consecutive(&ev, 1));
    cr_assert(has_type(&ev, "progress") && has_type(&ev, "epoch") && has_type(&ev, "done"));
    char path[400];
    snprintf(path, sizeof path, "%s/jobs/%lld/events.jsonl", d.data, id);
    cr_assert_eq(count_lines(path), last_seq, "one stored event per line of %s", path);
    sse_log_free(&ev);

    /* the artifacts are the job's, as under the local executor */
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/artifacts/model.lsqm", id);
    api_res *r = api(&d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    lsqd_cleanup(&d);
}

Test(slurm, cancel_checkpoints_through_scancel, .init = setup, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, LONG_SPEC);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "progress", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ progress within 120 s (see %s)", d.log);
    sse_log_free(&ev);

    char path[400];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", id);
    api_res *r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 202, "cancel: %ld %s", r->status, r->body);
    api_free(r);
    double t0 = now_s();
    json_t *j = wait_job(&d, id, NULL, 60);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "cancelled", "see %s", d.log);
    /* SIGTERM reached the worker: it checkpointed and exited 3, well
     * before the hard scancel of the grace period */
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_status")), 3);
    cr_assert(now_s() - t0 < 20);
    json_decref(j);
    struct stat sb;
    snprintf(path, sizeof path, "%s/jobs/%lld/checkpoint.lsqc", d.data, id);
    cr_assert_eq(stat(path, &sb), 0, "a checkpoint at %s", path);
    cr_assert(sb.st_size > 0);
    const char *st = sh("squeue -h -t all -j %s -o %%T", sid);
    cr_assert(strcmp(st, "RUNNING") && strcmp(st, "PENDING"), "Slurm job still %s", st);
    lsqd_cleanup(&d);
}

Test(slurm, bad_partition_is_a_clear_job_error, .init = setup, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, "{\"model\":{\"arch\":\"mlp\"},\"train\":{\"epochs\":1},"
                                  "\"resources\":{\"partition\":\"no-such-partition\"}}");
    json_t *j = wait_job(&d, id, NULL, 60);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "failed");
    json_t *err = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "slurm_submit_failed");
    const char *msg = json_string_value(json_object_get(err, "message"));
    cr_assert(strstr(msg, "sbatch") && strstr(msg, "partition"), "message: %s", msg);
    cr_assert(json_is_null(json_object_get(j, "slurm_id")));
    json_decref(j);
    lsqd_cleanup(&d);
}

Test(slurm, sigkill_lsqd_then_restart_follows_the_running_job, .init = setup, .timeout = 400)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    const char *spec = "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":12},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ checkpoint within 120 s (see %s)", d.log);
    sse_log_free(&ev);

    lsqd_kill(&d);
    /* the Slurm job does not die with lsqd, and writes events meanwhile */
    sleep_s(1.5);
    cr_assert_str_eq(sh("squeue -h -t all -j %s -o %%T", sid), "RUNNING");
    lsqd_restart(&d, SLURM_FLAGS);

    json_t *j = wait_job(&d, id, NULL, 300);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    cr_assert_eq(json_integer_value(json_object_get(j, "attempts")), 1, "followed, not resubmitted");
    cr_assert_str_eq(json_string_value(json_object_get(j, "slurm_id")), sid);
    long long last_seq = json_integer_value(json_object_get(j, "last_seq"));
    json_decref(j);

    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended);
    cr_assert(sse_ids_consecutive(&ev, 1), "no gap, no repeat across the restart");
    cr_assert_eq(count_type(&ev, "start"), 1, "one run of the worker");
    cr_assert_eq(count_type(&ev, "done"), 1);
    cr_assert_str_eq(ev.types[ev.n - 1], "done");
    char path[400];
    snprintf(path, sizeof path, "%s/jobs/%lld/events.jsonl", d.data, id);
    cr_assert_eq(count_lines(path), last_seq, "every line of %s stored once", path);
    sse_log_free(&ev);
    lsqd_cleanup(&d);
}
