/* What a restarted lsqd makes of the jobs its SIGKILLed predecessor left
 * running: an accepted cancel is honoured, an interrupted job resumes or
 * fails with a reason (store_jobs_recover, server/main.c). */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

/* The job's row as the SIGKILLed lsqd left it in the SQLite file. */
static void db_job_row(lsqd *d, long long id, char *state, size_t cap, int *cancel_requested,
                       int *attempts)
{
    char path[400];
    snprintf(path, sizeof path, "%s/lsqd.db", d->data);
    sqlite3 *db = NULL;
    cr_assert(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    cr_assert(sqlite3_prepare_v2(db, "SELECT state, cancel_requested, attempts FROM jobs "
                                     "WHERE id = ?", -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_int64(st, 1, id);
    cr_assert(sqlite3_step(st) == SQLITE_ROW);
    snprintf(state, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    *cancel_requested = sqlite3_column_int(st, 1);
    *attempts = sqlite3_column_int(st, 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static int count_type(const sse_log *log, const char *type)
{
    int n = 0;
    for (int i = 0; i < log->n; i++) n += !strcmp(log->types[i], type);
    return n;
}

/* Starts LONG_SPEC, waits for its first progress event, posts its cancel
 * and SIGKILLs lsqd as soon as the 202 is in: the worker dies with lsqd
 * before it could end, so the store holds the job running with its cancel
 * recorded. Returns the job id. */
static long long cancel_then_crash(lsqd *d)
{
    long long id = submit_job(d, LONG_SPEC);
    sse_log ev;
    sse_read_until(d, id, "progress", NULL, 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no progress event within 120 s (see %s)", d->log);
    sse_log_free(&ev);
    char path[64];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", id);
    api_res *r = api(d, "POST", path, NULL, NULL, NULL);
    long status = r->status;
    api_free(r);
    lsqd_kill(d);
    cr_assert_eq(status, 202, "cancel of a running job: 202");
    char state[32];
    int cancel_requested, attempts;
    db_job_row(d, id, state, sizeof state, &cancel_requested, &attempts);
    cr_assert_str_eq(state, "running", "the kill came after the job ended: nothing to test");
    cr_assert_eq(cancel_requested, 1);
    cr_assert_eq(attempts, 1);
    return id;
}

static void check_cancelled_once(lsqd *d, long long id)
{
    json_t *job = wait_job(d, id, NULL, 120);
    cr_assert(job, "job %lld did not end after the restart", id);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "cancelled",
                     "an accepted cancel outlives an lsqd crash (see %s)", d->log);
    cr_assert_eq(json_integer_value(json_object_get(job, "attempts")), 1,
                 "the cancelled job was not started again");
    cr_assert(json_is_null(json_object_get(job, "error")));
    json_decref(job);
    sse_log ev;
    sse_read(d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended);
    cr_assert_str_eq(ev.end_state, "cancelled");
    cr_assert(sse_ids_consecutive(&ev, 1));
    cr_assert_eq(count_type(&ev, "start"), 1, "one start: the job never ran again");
    sse_log_free(&ev);
}

Test(recovery, cancel_accepted_before_sigkill_ends_cancelled_without_rerun, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long id = cancel_then_crash(&d);
    lsqd_restart(&d, NULL);
    check_cancelled_once(&d, id);
    lsqd_cleanup(&d);
}

/* At its last attempt the job used to fail as too_many_attempts. */
Test(recovery, cancel_accepted_at_last_attempt_ends_cancelled_not_failed, .timeout = 300)
{
    lsqd d;
    const char *const flags[] = {"--max-attempts", "1", NULL};
    lsqd_start(&d, flags);
    long long id = cancel_then_crash(&d);
    lsqd_restart(&d, flags);
    check_cancelled_once(&d, id);
    lsqd_cleanup(&d);
}

/* A job interrupted at its last attempt fails, and its event stream says
 * why: it ends with lsqd's error event, numbered on after the worker's. */
Test(recovery, interrupted_at_last_attempt_fails_with_an_error_event, .timeout = 300)
{
    lsqd d;
    const char *const flags[] = {"--max-attempts", "1", NULL};
    lsqd_start(&d, flags);
    long long id = submit_job(&d, LONG_SPEC);
    sse_log ev;
    sse_read_until(&d, id, "progress", NULL, 120, &ev);
    cr_assert(ev.n > 0 && !ev.ended, "no progress event within 120 s (see %s)", d.log);
    sse_log_free(&ev);
    lsqd_kill(&d);
    lsqd_restart(&d, flags);
    json_t *job = wait_job(&d, id, NULL, 60);
    cr_assert(job);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "failed");
    json_t *err = json_object_get(job, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "too_many_attempts");
    cr_assert(strstr(json_string_value(json_object_get(err, "message")), "interrupted 1 times"));
    long long last_seq = json_integer_value(json_object_get(job, "last_seq"));
    json_decref(job);
    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended);
    cr_assert_str_eq(ev.end_state, "failed");
    cr_assert(sse_ids_consecutive(&ev, 1));
    cr_assert_eq(ev.ids[ev.n - 1], last_seq);
    cr_assert_str_eq(ev.types[ev.n - 1], "error", "the stream ends with the reason");
    cr_assert_str_eq(json_string_value(json_object_get(ev.data[ev.n - 1], "code")),
                     "too_many_attempts");
    cr_assert_eq(count_type(&ev, "start"), 1);
    sse_log_free(&ev);
    lsqd_cleanup(&d);
}
