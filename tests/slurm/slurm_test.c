/* lsqd --executor slurm against a real Slurm (scripts/slurm-up.sh: one node
 * on this machine, SLURM_CONF set by tests/slurm/run.sh) and the real
 * `lsq train`: a job runs as a Slurm batch job with its events streamed
 * live, cancel checkpoints, a bad partition is a clear job error, an lsqd
 * killed with SIGKILL finds its running job again after a restart, a node
 * failure requeues the job, two ranks run under srun --mpi=pmix, a Slurm
 * job whose id lsqd did not store is adopted, and Slurm commands that
 * fail, hang or print garbage neither stall lsqd nor end running jobs. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
    char cmd[1000];
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
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":50},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ checkpoint within 120 s (see %s)", d.log);
    sse_log_free(&ev);

    lsqd_kill(&d);
    /* the Slurm job does not die with lsqd, and writes events meanwhile
     * (50 epochs of 0.2 s: it runs on well past the restart) */
    sleep_s(1.0);
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

/* ---- --slurm-events http: the worker posts its events to lsqd ---------- */

static long long posted_ok(lsqd *d)
{
    api_res *r = api(d, "GET", "/metrics", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    const char *k = "lsqd_http_requests_total{route=\"job_events_post\",status=\"200\"} ";
    const char *p = r->body ? strstr(r->body, k) : NULL;
    long long n = p ? atoll(p + strlen(k)) : 0;
    api_free(r);
    return n;
}

static void read_token(lsqd *d, long long id, char *out, size_t cap)
{
    char path[400];
    snprintf(path, sizeof path, "%s/jobs/%lld/events.token", d->data, id);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s", path);
    cr_assert_eq(sb.st_mode & 0777, 0600, "the token file is the owner's only");
    FILE *f = fopen(path, "r");
    cr_assert(f);
    cr_assert(fgets(out, (int)cap, f));
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

Test(slurm, http_events_live_with_a_per_job_token, .init = setup, .timeout = 300)
{
    const char *flags[] = {"--executor", "slurm", "--slurm-events", "http", "--slurm-poll", "0.3",
                           "--slurm-mem", "1000", "--workers", "2", NULL};
    lsqd d;
    lsqd_start(&d, flags);
    long long id = submit_job(&d, SHORT_SPEC);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);

    /* under --slurm-events http lsqd reads the events file only once the job
     * has ended: events seen while it runs came over HTTP */
    sse_log ev;
    sse_read(&d, id, 0, 3, 120, &ev);
    cr_assert_eq(ev.n, 3, "3 events while the job runs (see %s)", d.log);
    cr_assert(!ev.ended);
    json_t *j = get_job(&d, id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    sse_log_free(&ev);
    cr_assert_gt(posted_ok(&d), 0);

    /* the token: only this job's, only posting; lsqd keeps its sha256 */
    char token[128], auth[200], sql[800];
    read_token(&d, id, token, sizeof token);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/events", id);
    const char *fake = "{\"seq\":1,\"events\":[{\"type\":\"log\",\"message\":\"x\"}]}";
    api_res *r = api(&d, "POST", path, fake, NULL, "Authorization: Bearer not-the-token");
    cr_assert_eq(r->status, 401);
    cr_assert_str_eq(api_err_code(r), "unauthorized");
    api_free(r);
    r = api(&d, "POST", path, fake, NULL, NULL);
    cr_assert_eq(r->status, 401);
    api_free(r);
    long long other = submit_job(&d, "{\"model\":{\"arch\":\"mlp\"},\"train\":{\"epochs\":1},"
                                     "\"dataset\":{\"train_limit\":500,\"test_limit\":100}}");
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/events", other);
    r = api(&d, "POST", path, fake, NULL, auth);
    cr_assert_eq(r->status, 401, "a job's token does not post another job's events");
    api_free(r);
    snprintf(sql, sizeof sql, "sqlite3 %s/lsqd.db \"SELECT count(*) FROM job_tokens WHERE "
             "sha256 = '%s'\"", d.data, token);
    cr_assert_str_eq(sh("%s", sql), "0", "the token itself is not stored");
    snprintf(sql, sizeof sql, "printf %%s %s | sha256sum | cut -c1-64", token);
    char digest[80];
    snprintf(digest, sizeof digest, "%s", sh("%s", sql));
    snprintf(sql, sizeof sql, "sqlite3 %s/lsqd.db \"SELECT count(*) FROM job_tokens WHERE "
             "job_id = %lld AND sha256 = '%s'\"", d.data, id, digest);
    cr_assert_str_eq(sh("%s", sql), "1", "its sha256 is");

    j = wait_job(&d, id, NULL, 240);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    long long last_seq = json_integer_value(json_object_get(j, "last_seq"));
    json_decref(j);
    sse_read(&d, id, 0, 0, 30, &ev);
    cr_assert(ev.ended && sse_ids_consecutive(&ev, 1));
    cr_assert_eq(count_type(&ev, "start"), 1);
    cr_assert_eq(count_type(&ev, "done"), 1);
    char file[400];
    snprintf(file, sizeof file, "%s/jobs/%lld/events.jsonl", d.data, id);
    cr_assert_eq(count_lines(file), last_seq, "each event once, from HTTP or the file");
    sse_log_free(&ev);

    /* a finished job takes no more events */
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/events", id);
    r = api(&d, "POST", path, fake, NULL, auth);
    cr_assert_eq(r->status, 409);
    api_free(r);
    wait_job(&d, other, NULL, 120);
    lsqd_cleanup(&d);
}

Test(slurm, http_events_resent_after_lsqd_comes_back, .init = setup, .timeout = 400)
{
    const char *flags[] = {"--executor", "slurm", "--slurm-events", "http", "--slurm-poll", "0.3",
                           "--slurm-mem", "1000", NULL};
    lsqd d;
    lsqd_start(&d, flags);
    const char *spec = "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":80},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ checkpoint within 120 s (see %s)", d.log);
    long long before = ev.ids[ev.n - 1];
    sse_log_free(&ev);

    /* the HTTP path drops: the worker buffers and retries */
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", d.port);
    lsqd_kill(&d);
    sleep_s(2);
    double t0;
    const char *again[] = {"--executor", "slurm", "--slurm-events", "http", "--slurm-poll", "0.3",
                           "--slurm-mem", "1000", "--listen", listen, NULL};
    lsqd_restart(&d, again);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    cr_assert_str_eq(sh("squeue -h -t all -j %s -o %%T", sid), "RUNNING", "a job long enough");

    /* what the worker wrote meanwhile comes over HTTP while it still runs */
    sse_read(&d, id, before, 3, 60, &ev);
    cr_assert_eq(ev.n, 3, "events after the restart while the job runs (see %s)", d.log);
    cr_assert(!ev.ended);
    cr_assert_eq(ev.ids[0], before + 1, "resent from the first one lsqd did not have");
    sse_log_free(&ev);
    /* the worker's next try (its backoff is at most 5 s) reaches the new
     * lsqd while the job still runs */
    t0 = now_s();
    while (now_s() - t0 < 20 && posted_ok(&d) == 0) sleep_s(0.2);
    cr_assert_gt(posted_ok(&d), 0, "the new lsqd got events over HTTP (see %s)", d.log);
    json_t *jr = get_job(&d, id);
    cr_assert_str_eq(json_string_value(json_object_get(jr, "state")), "running");
    json_decref(jr);

    json_t *j = wait_job(&d, id, NULL, 300);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    long long last_seq = json_integer_value(json_object_get(j, "last_seq"));
    json_decref(j);
    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended && sse_ids_consecutive(&ev, 1), "no gap, no repeat");
    cr_assert_eq(count_type(&ev, "start"), 1);
    cr_assert_str_eq(ev.types[ev.n - 1], "done");
    char path[400];
    snprintf(path, sizeof path, "%s/jobs/%lld/events.jsonl", d.data, id);
    cr_assert_eq(count_lines(path), last_seq);
    sse_log_free(&ev);
    lsqd_cleanup(&d);
}

/* ---- what Slurm does to a job behind lsqd's back ------------------------ */

Test(slurm, an_operators_scancel_ends_the_job_cancelled, .init = setup, .timeout = 300)
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
    /* scancel outside lsqd: Slurm sends SIGTERM, the worker checkpoints and
     * exits 3, as a SIGTERM from outside does under the local executor */
    sh("scancel %s", sid);
    json_t *j = wait_job(&d, id, NULL, 60);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "cancelled", "see %s", d.log);
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_status")), 3);
    cr_assert(!json_is_true(json_object_get(j, "cancel_requested")));
    json_decref(j);
    cr_assert_str_eq(sh("squeue -h -t all -j %s -o %%T", sid), "CANCELLED");
    lsqd_cleanup(&d);
}

Test(slurm, a_job_slurm_forgot_fails_as_vanished_after_a_restart, .init = setup, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, LONG_SPEC);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    lsqd_kill(&d);
    sh("scancel %s", sid);
    /* the cluster lost the job (a controller whose state was wiped): lsqd
     * finds an id that neither squeue nor sacct knows */
    char sql[600];
    snprintf(sql, sizeof sql, "sqlite3 %s/lsqd.db \"UPDATE jobs SET slurm_id = '987654' WHERE "
             "id = %lld\" && echo ok", d.data, id);
    cr_assert_str_eq(sh("%s", sql), "ok");
    char path[400];
    snprintf(path, sizeof path, "rm -f %s/jobs/%lld/exit_status", d.data, id);
    sh("%s", path);
    lsqd_restart(&d, SLURM_FLAGS);
    json_t *j = wait_job(&d, id, NULL, 60);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "failed", "see %s", d.log);
    json_t *err = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "slurm_vanished");
    const char *msg = json_string_value(json_object_get(err, "message"));
    cr_assert(strstr(msg, "987654") && strstr(msg, "squeue"), "message: %s", msg);
    json_decref(j);
    lsqd_cleanup(&d);
}

static char g_node[64];

/* Waits up to limit_s for the slurmstepd processes of Slurm job sid (the
 * titles "slurmstepd: [SID.batch]", "[SID.0]", ...) to be gone: 1 when they
 * are, checked twice a little apart so that one between two steps is not
 * missed. */
static int no_step_of(const char *sid, double limit_s)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "pgrep -f 'slurmstepd: \\[%s\\.' >/dev/null && echo yes || echo no",
             sid);
    double t0 = now_s();
    int gone = 0;
    while (now_s() - t0 < limit_s) {
        if (!strcmp(sh("%s", cmd), "no")) {
            if (++gone == 2) return 1;
        } else {
            gone = 0;
        }
        sleep_s(0.5);
    }
    return 0;
}

static void node_back(void)
{
    if (g_node[0]) sh("scontrol update NodeName=%s State=RESUME 2>/dev/null", g_node);
}

Test(slurm, node_failure_requeues_and_the_job_resumes_from_its_checkpoint, .init = setup,
     .fini = node_back, .timeout = 400)
{
    /* Whether Slurm requeues the job or fails it with its killed run's late
     * exit depends on timing inside slurmctld; lsqd handles both. */
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    const char *spec = "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":50},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ checkpoint within 120 s (see %s)", d.log);
    sse_log_free(&ev);
    /* the node goes down under the job; Slurm requeues it (JobRequeue=1) */
    snprintf(g_node, sizeof g_node, "%s", sh("squeue -h -j %s -o %%N", sid));
    cr_assert(g_node[0]);
    sh("scontrol update NodeName=%s State=DOWN Reason=lsqd-test", g_node);
    double t0 = now_s();
    const char *st = "";
    while (now_s() - t0 < 30) {
        st = sh("squeue -h -t all -j %s -o %%T", sid);
        if (!strcmp(st, "PENDING")) break;
        sleep_s(0.2);
    }
    cr_assert_str_eq(st, "PENDING", "requeued by Slurm");
    json_t *j = get_job(&d, id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "running",
                     "lsqd keeps following a requeued job");
    json_decref(j);
    /* The killed run's slurmstepd lives on until its processes are gone
     * (KillWait after the SIGTERM). A node resumed before that starts the
     * requeued run beside it: slurmd refuses it as "already running",
     * drains the node and Slurm holds the job. So the node comes back only
     * once no step of this job is left on it. */
    cr_assert(no_step_of(sid, 90), "a slurmstepd of job %s still runs after 90 s", sid);
    node_back();
    t0 = now_s();
    while (now_s() - t0 < 30 && strcmp(sh("sinfo -h -N -n %s -o %%t", g_node), "idle"))
        sleep_s(0.2);
    cr_assert_str_eq(sh("sinfo -h -N -n %s -o %%t", g_node), "idle", "the node is back");
    /* Slurm holds a requeued job about two minutes before it may start */
    sh("scontrol update JobId=%s StartTime=now", sid);
    j = wait_job(&d, id, NULL, 300);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    json_decref(j);
    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended && sse_ids_consecutive(&ev, 1));
    cr_assert_eq(count_type(&ev, "start"), 2, "the run Slurm killed, then the resumed one");
    for (int i = 0, starts = 0; i < ev.n; i++) {
        if (strcmp(ev.types[i], "start")) continue;
        if (++starts == 2)
            cr_assert(json_is_true(json_object_get(ev.data[i], "resumed")),
                      "the second run resumes from the checkpoint");
    }
    sse_log_free(&ev);
    lsqd_cleanup(&d);
}

/* ---- several ranks: srun --mpi=pmix inside the batch job ---------------- */

#define TWO_RANK_SPEC(epochs) "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000," \
    "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":" #epochs "}," \
    "\"quant\":{\"weight_bits\":4},\"threads\":1,\"resources\":{\"nodes\":1," \
    "\"tasks_per_node\":2,\"time_min\":15}}"

Test(slurm, two_ranks_run_under_srun_with_pmix, .init = setup, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, TWO_RANK_SPEC(4));
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read(&d, id, 0, 3, 120, &ev);
    cr_assert_eq(ev.n, 3, "3 events while the job runs (see %s)", d.log);
    cr_assert(!ev.ended);
    sse_log_free(&ev);
    /* Slurm gave the job two tasks on the node */
    cr_assert_str_eq(sh("squeue -h -t all -j %s -o %%D/%%C", sid), "1/2");

    json_t *j = wait_job(&d, id, NULL, 240);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_status")), 0);
    long long last_seq = json_integer_value(json_object_get(j, "last_seq"));
    json_decref(j);

    /* rank 0 alone wrote the events, each once; they count two ranks */
    sse_read(&d, id, 0, 0, 30, &ev);
    cr_assert(ev.ended && sse_ids_consecutive(&ev, 1));
    cr_assert_eq(count_type(&ev, "start"), 1, "one start event: rank 0's");
    cr_assert_eq(count_type(&ev, "done"), 1);
    int epochs = 0;
    for (int i = 0; i < ev.n; i++) {
        if (strcmp(ev.types[i], "epoch")) continue;
        epochs++;
        cr_assert_eq(json_integer_value(json_object_get(ev.data[i], "ranks")), 2,
                     "epoch event %d: the world size", i);
        cr_assert(json_is_number(json_object_get(ev.data[i], "allreduce_s")));
    }
    cr_assert_eq(epochs, 5, "1 pretrain + 4 LSQ epochs");
    char path[400];
    snprintf(path, sizeof path, "%s/jobs/%lld/events.jsonl", d.data, id);
    cr_assert_eq(count_lines(path), last_seq);
    sse_log_free(&ev);
    /* the batch script ran them through srun with PMIx */
    snprintf(path, sizeof path, "grep -c 'srun --mpi=pmix --nodes=1 --ntasks-per-node=2' "
             "%s/jobs/%lld/slurm.sh", d.data, id);
    cr_assert_str_eq(sh("%s", path), "1");
    lsqd_cleanup(&d);
}

Test(slurm, cancel_of_two_ranks_checkpoints, .init = setup, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, TWO_RANK_SPEC(200));
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ checkpoint within 120 s (see %s)", d.log);
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
    /* every rank got SIGTERM and stopped at the same step; rank 0 wrote the
     * checkpoint and srun passed on their exit 3, before the hard scancel */
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_status")), 3, "see %s/jobs/%lld",
                 d.data, id);
    cr_assert(now_s() - t0 < 20);
    json_decref(j);
    struct stat sb;
    snprintf(path, sizeof path, "%s/jobs/%lld/checkpoint.lsqc", d.data, id);
    cr_assert_eq(stat(path, &sb), 0, "a checkpoint at %s", path);
    const char *st = sh("squeue -h -t all -j %s -o %%T", sid);
    cr_assert(strcmp(st, "RUNNING") && strcmp(st, "PENDING"), "Slurm job still %s", st);
    lsqd_cleanup(&d);
}

/* ---- lsqd dies between sbatch and storing the Slurm id ------------------ */

/* Starts lsqd with LSQD_SLURM_TEST_EXIT_AFTER_SBATCH set, submits spec and
 * waits for lsqd to die right after its sbatch; returns the job id and the
 * Slurm id that squeue lists under the job's name and data folder. */
static long long die_after_sbatch(lsqd *d, const char *spec, char *sid, size_t cap)
{
    setenv("LSQD_SLURM_TEST_EXIT_AFTER_SBATCH", "1", 1);
    lsqd_start(d, SLURM_FLAGS);
    unsetenv("LSQD_SLURM_TEST_EXIT_AFTER_SBATCH");
    long long id = submit_job(d, spec);
    int st = 0;
    double t0 = now_s();
    pid_t w = 0;
    while (now_s() - t0 < 30 && (w = waitpid(d->pid, &st, WNOHANG)) == 0) sleep_s(0.1);
    cr_assert_eq(w, d->pid, "lsqd did not exit after sbatch (see %s)", d->log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 9);
    d->pid = 0;
    char cmd[PATH_MAX + 600], real[PATH_MAX];
    cr_assert(realpath(d->data, real));
    snprintf(cmd, sizeof cmd, "squeue --me -h -o '%%i|%%j|%%k' | grep '|lsqd-%lld|lsqd:%s$' "
             "| cut -d'|' -f1", id, real);
    snprintf(sid, cap, "%s", sh("%s", cmd));
    cr_assert(sid[0], "a Slurm job named lsqd-%lld with the data folder's comment", id);
    snprintf(cmd, sizeof cmd, "sqlite3 %s/lsqd.db \"SELECT ifnull(slurm_id, 'none') FROM jobs "
             "WHERE id = %lld\"", d->data, id);
    cr_assert_str_eq(sh("%s", cmd), "none", "the Slurm id was not stored");
    return id;
}

Test(slurm, a_slurm_job_whose_id_was_not_stored_is_adopted, .init = setup, .timeout = 300)
{
    lsqd d;
    char sid[32];
    long long id = die_after_sbatch(&d, SHORT_SPEC, sid, sizeof sid);
    lsqd_restart(&d, SLURM_FLAGS);
    json_t *j = wait_job(&d, id, NULL, 240);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    cr_assert_str_eq(json_string_value(json_object_get(j, "slurm_id")), sid, "that Slurm job's");
    cr_assert_eq(json_integer_value(json_object_get(j, "attempts")), 1, "adopted, not resubmitted");
    long long last_seq = json_integer_value(json_object_get(j, "last_seq"));
    json_decref(j);
    sse_log ev;
    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended && sse_ids_consecutive(&ev, 1));
    cr_assert_eq(count_type(&ev, "start"), 1, "one run of the worker");
    cr_assert_eq(count_type(&ev, "done"), 1);
    sse_log_free(&ev);
    char path[400];
    snprintf(path, sizeof path, "%s/jobs/%lld/events.jsonl", d.data, id);
    /* the worker's lines plus lsqd's own "slurm_adopted" event */
    cr_assert_eq(count_lines(path) + 1, last_seq);
    lsqd_cleanup(&d);
}

Test(slurm, a_slurm_job_whose_job_ended_is_cancelled_at_start, .init = setup, .timeout = 300)
{
    lsqd d;
    char sid[32];
    long long id = die_after_sbatch(&d, LONG_SPEC, sid, sizeof sid);
    /* the job ended while lsqd was down (an admin cancelled it in the
     * store): its Slurm job must not run on unknown */
    char sql[600];
    snprintf(sql, sizeof sql, "sqlite3 %s/lsqd.db \"UPDATE jobs SET state = 'cancelled', "
             "finished_at = 1 WHERE id = %lld\" && echo ok", d.data, id);
    cr_assert_str_eq(sh("%s", sql), "ok");
    lsqd_restart(&d, SLURM_FLAGS);
    double t0 = now_s();
    const char *st = "";
    while (now_s() - t0 < 60) {
        st = sh("squeue -h -t all -j %s -o %%T", sid);
        if (!strcmp(st, "CANCELLED")) break;
        sleep_s(0.3);
    }
    cr_assert_str_eq(st, "CANCELLED", "Slurm job %s (see %s)", sid, d.log);
    json_t *j = get_job(&d, id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "cancelled");
    cr_assert(json_is_null(json_object_get(j, "slurm_id")));
    json_decref(j);
    lsqd_cleanup(&d);
}

/* ---- Slurm commands that fail, print garbage or hang -------------------- */

/* A folder put first on lsqd's PATH, holding `name`: a script that does what
 * the file DIR/mode says (hang, fail, garbage) or else runs the real one. */
static void wrap_cmd(char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "/tmp/lsqd-slurm-wrap-XXXXXX");
    cr_assert(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fprintf(f, "#!/bin/sh\n"
               "case \"$(cat %s/mode 2>/dev/null)\" in\n"
               "hang) exec sleep 120 ;;\n"
               "fail) echo \"%s: error: Socket timed out on send/recv operation\" >&2; exit 1 ;;\n"
               "garbage) echo '<html>502 Bad Gateway</html>'; exit 0 ;;\n"
               "esac\n"
               "exec /usr/bin/%s \"$@\"\n", dir, name, name);
    fclose(f);
    chmod(path, 0755);
    static char env_path[4096];
    snprintf(env_path, sizeof env_path, "%s:%s", dir, getenv("PATH"));
    setenv("PATH", env_path, 1);
}

static void wrap_mode(const char *dir, const char *mode)
{
    char path[300];
    snprintf(path, sizeof path, "%s/mode", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(mode, f);
    fclose(f);
}

static void wrap_done(const char *dir)
{
    const char *p = getenv("PATH");
    size_t n = strlen(dir);
    if (!strncmp(p, dir, n) && p[n] == ':') setenv("PATH", p + n + 1, 1);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    sh("%s", cmd);
}

Test(slurm, a_hung_failing_or_garbled_sbatch_fails_the_job_clearly, .init = setup,
     .timeout = 200)
{
    char dir[64];
    wrap_cmd(dir, sizeof dir, "sbatch");
    const char *flags[] = {"--executor", "slurm", "--slurm-poll", "0.3", "--slurm-mem", "1000",
                           "--slurm-timeout", "2", NULL};
    lsqd d;
    lsqd_start(&d, flags);
    static const struct { const char *mode, *want1, *want2; } CASES[] = {
        {"hang", "sbatch did not answer within 2 s", "--slurm-timeout"},
        {"fail", "sbatch failed (status 1)", "Socket timed out"},
        {"garbage", "sbatch printed no job id", "502 Bad Gateway"},
    };
    for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
        wrap_mode(dir, CASES[c].mode);
        double t0 = now_s();
        long long id = submit_job(&d, SHORT_SPEC);
        json_t *j = wait_job(&d, id, NULL, 60);
        cr_assert(j);
        cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "failed", "%s",
                         CASES[c].mode);
        /* a hung sbatch is given up after --slurm-timeout, not lsqd's 30 s */
        cr_assert(now_s() - t0 < 15, "%s: %.1f s", CASES[c].mode, now_s() - t0);
        json_t *err = json_object_get(j, "error");
        cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "slurm_submit_failed");
        const char *msg = json_string_value(json_object_get(err, "message"));
        cr_assert(strstr(msg, CASES[c].want1) && strstr(msg, CASES[c].want2), "%s: %s",
                  CASES[c].mode, msg);
        cr_assert(json_is_null(json_object_get(j, "slurm_id")));
        json_decref(j);
        sse_log ev;
        sse_read(&d, id, 0, 0, 30, &ev);
        cr_assert(ev.ended && ev.n >= 1);
        cr_assert_str_eq(ev.types[ev.n - 1], "error", "an error event names the command");
        cr_assert(strstr(json_string_value(json_object_get(ev.data[ev.n - 1], "message")),
                         "sbatch"));
        sse_log_free(&ev);
    }
    /* the hung sbatch was killed, not left behind */
    char cmd[200];
    snprintf(cmd, sizeof cmd, "pgrep -f '^sleep 120$' >/dev/null && echo left || echo gone");
    cr_assert_str_eq(sh("%s", cmd), "gone");
    /* and Slurm works again as soon as sbatch does */
    wrap_mode(dir, "");
    long long id = submit_job(&d, SHORT_SPEC);
    json_t *j = wait_job(&d, id, NULL, 240);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    json_decref(j);
    lsqd_cleanup(&d);
    wrap_done(dir);
}

Test(slurm, a_failing_or_hung_squeue_leaves_running_jobs_running, .init = setup, .timeout = 300)
{
    char dir[64];
    wrap_cmd(dir, sizeof dir, "squeue");
    const char *flags[] = {"--executor", "slurm", "--slurm-poll", "0.3", "--slurm-mem", "1000",
                           "--slurm-timeout", "2", NULL};
    lsqd d;
    lsqd_start(&d, flags);
    const char *spec = "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":40},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "progress", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ progress within 120 s (see %s)", d.log);
    sse_log_free(&ev);
    /* several polls of each: squeue fails, prints garbage, hangs */
    static const char *const MODES[] = {"fail", "garbage", "hang"};
    for (int m = 0; m < 3; m++) {
        wrap_mode(dir, MODES[m]);
        sleep_s(m == 2 ? 5 : 2);
        json_t *j = get_job(&d, id);
        cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "running",
                         "squeue %s: the job runs on (see %s)", MODES[m], d.log);
        json_decref(j);
    }
    wrap_mode(dir, "");
    json_t *j = wait_job(&d, id, NULL, 240);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "see %s", d.log);
    cr_assert_str_eq(json_string_value(json_object_get(j, "slurm_id")), sid);
    json_decref(j);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "grep -c 'squeue failed' %s", d.log);
    cr_assert_gt(atoi(sh("%s", cmd)), 0, "the failures are logged");
    snprintf(cmd, sizeof cmd, "grep -c 'squeue did not answer within 2 s' %s", d.log);
    cr_assert_gt(atoi(sh("%s", cmd)), 0, "the hang is logged");
    lsqd_cleanup(&d);
    wrap_done(dir);
}

Test(slurm, an_operators_scancel_of_two_ranks_ends_the_job_cancelled, .init = setup,
     .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, SLURM_FLAGS);
    long long id = submit_job(&d, TWO_RANK_SPEC(200));
    char sid[32];
    slurm_id_of(&d, id, sid, sizeof sid);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no LSQ checkpoint within 120 s (see %s)", d.log);
    sse_log_free(&ev);
    sh("scancel %s", sid);
    json_t *j = wait_job(&d, id, NULL, 60);
    cr_assert(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "cancelled", "see %s/jobs/%lld",
                     d.data, id);
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_status")), 3);
    json_decref(j);
    lsqd_cleanup(&d);
}
