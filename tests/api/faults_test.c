/* Injected faults against a real lsqd (docs/reliability.md, "Faults"): a disk
 * that fills up under a running job and under the database, a database held
 * locked by another process, a worker binary that cannot start, and a
 * worker that exits 0 without finishing. The disk is a tmpfs of a few MiB
 * mounted in a private mount namespace of the test process (lsqd and its
 * workers are its children and see it); where mounting is not permitted
 * the disk tests are skipped with the reason. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* Moves this (test) process to a new private mount namespace, before it
 * starts lsqd, so that lsqd and its workers see the tmpfs mounted next;
 * skips the test where that is not permitted. */
static void private_ns_or_skip(void)
{
    /* MS_PRIVATE: our mounts never propagate back to the host's namespace */
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
        cr_skip_test("cannot make a private mount namespace (%s): the disk-full tests need "
                     "root with CAP_SYS_ADMIN", strerror(errno));
}

/* Mounts a tmpfs of `size` ("16m") on dir (created if missing). */
static void tmpfs_or_skip(const char *dir, const char *size)
{
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
    if ((mkdir(dir, 0755) && errno != EEXIST) || mount("lsqd-faults", dir, "tmpfs", 0, opts))
        cr_skip_test("cannot mount a tmpfs on %s (%s): the disk-full tests need root with "
                     "CAP_SYS_ADMIN", dir, strerror(errno));
}

/* Writes a file in dir until the disk is full; returns the bytes written. */
static long long fill_disk(const char *dir, char *path, size_t cap)
{
    snprintf(path, cap, "%s/filler", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "cannot create %s: %s", path, strerror(errno));
    static char block[64 * 1024];
    long long n = 0;
    for (;;) {
        ssize_t w = write(fd, block, sizeof block);
        if (w > 0) { n += w; continue; }
        cr_assert(w < 0 && errno == ENOSPC, "filling %s stopped with %s", path,
                  strerror(errno));
        break;
    }
    close(fd);
    return n;
}

static int has_tmp_file(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q '\\.tmp'", dir);
    return system(cmd) == 0;
}

/* The checkpoint write of a running job hits a full disk: the job fails with
 * disk_full naming ENOSPC, the previous checkpoint stays whole, lsqd keeps
 * serving, and once space is freed POST .../resume finishes the job from
 * that checkpoint. */
Test(faults, disk_full_at_checkpoint_fails_then_resume_finishes, .timeout = 300)
{
    lsqd d;
    private_ns_or_skip();
    lsqd_start(&d, NULL);
    char jobs[400];
    snprintf(jobs, sizeof jobs, "%s/jobs", d.data);
    tmpfs_or_skip(jobs, "16m");
    const char *spec = "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":50},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !strcmp(ev.types[ev.n - 1], "checkpoint") && !ev.ended,
              "no LSQ checkpoint event within 120 s (%d events)", ev.n);
    sse_log_free(&ev);
    char filler[500];
    long long filled = fill_disk(jobs, filler, sizeof filler);
    cr_assert(filled > 0);

    json_t *job = wait_job(&d, id, NULL, 120);
    cr_assert(job, "the job did not end on a full disk (see %s)", d.log);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "failed");
    json_t *err = json_object_get(job, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "disk_full");
    const char *m = json_string_value(json_object_get(err, "message"));
    cr_assert(m && strstr(m, "disk full") && strstr(m, "ENOSPC"), "%s", m ? m : "(none)");
    cr_log_info("disk_full: %s", m);
    json_decref(job);

    /* the checkpoint the failed write meant to replace is whole; no partial
     * file is left beside it */
    char jdir[500], ck[600];
    snprintf(jdir, sizeof jdir, "%s/%lld", jobs, id);
    snprintf(ck, sizeof ck, "%s/checkpoint.lsqc", jdir);
    struct stat sb;
    cr_assert(stat(ck, &sb) == 0 && sb.st_size > 0, "no checkpoint left in %s", jdir);
    cr_assert(!has_tmp_file(jdir), "a partial .tmp file was left in %s", jdir);
    api_res *r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200, "lsqd keeps serving on a full disk");
    api_free(r);

    /* resume before space is freed is allowed; here: free it first */
    cr_assert(unlink(filler) == 0);
    char path[64];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/resume", id);
    r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 202, "resume: %ld %s", r->status, r->body);
    const char *st = json_string_value(json_object_get(r->json, "state"));
    /* the scheduler may claim it before the reply is made */
    cr_assert(st && (!strcmp(st, "queued") || !strcmp(st, "running")), "state %s", st);
    cr_assert(!json_is_object(json_object_get(r->json, "error")));
    api_free(r);
    job = wait_job(&d, id, "succeeded", 240);
    cr_assert(job, "the resumed job did not succeed (see %s)", d.log);
    cr_assert(!json_is_object(json_object_get(job, "error")), "a resumed job carries no old "
              "error");
    json_decref(job);
    /* the second start loaded the checkpoint: resumed, past the start */
    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended);
    int starts = 0, disk_full_events = 0;
    json_t *second = NULL;
    for (int i = 0; i < ev.n; i++) {
        if (!strcmp(ev.types[i], "start") && ++starts == 2) second = ev.data[i];
        if (!strcmp(ev.types[i], "error") && starts == 1)
            disk_full_events += !strcmp(json_string_value(json_object_get(ev.data[i], "code")),
                                        "disk_full");
    }
    cr_assert_eq(disk_full_events, 1, "the first run's error event says disk_full");
    cr_assert_eq(starts, 2);
    cr_assert(json_is_true(json_object_get(second, "resumed")), "the second start did not "
              "resume from the checkpoint");
    cr_assert_str_eq(json_string_value(json_object_get(second, "phase")), "lsq");
    cr_assert_gt(json_integer_value(json_object_get(second, "epoch")), 0);
    sse_log_free(&ev);
    /* resuming a job that has not failed is a conflict */
    r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 409);
    api_free(r);
    umount2(jobs, MNT_DETACH);
    lsqd_cleanup(&d);
}

/* Another process holds the database in an exclusive transaction beyond
 * lsqd's busy timeout: a write is 503 database_busy, reads go on, nothing
 * is stored, and the same write succeeds once the lock is gone. */
Test(faults, database_locked_is_503_database_busy, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, NULL);
    char dbp[400];
    snprintf(dbp, sizeof dbp, "%s/lsqd.db", d.data);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(dbp, &db), SQLITE_OK);
    /* lsqd's scheduler may be writing this instant: wait for the lock */
    sqlite3_busy_timeout(db, 30000);
    cr_assert_eq(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    double t0 = now_s();
    api_res *r = api(&d, "POST", "/api/v1/jobs", TINY_SPEC, NULL, NULL);
    double waited = now_s() - t0;
    cr_assert_eq(r->status, 503, "%ld %s", r->status, r->body);
    cr_assert_str_eq(api_err_code(r), "database_busy");
    const char *m = json_string_value(json_object_get(json_object_get(r->json, "error"),
                                                      "message"));
    cr_assert(m && strstr(m, "busy timeout"), "%s", m ? m : "(none)");
    cr_assert(waited >= 9.0, "replied after %.1f s, before the 10 s busy timeout", waited);
    api_free(r);
    /* WAL: readers are not blocked by the writer's lock */
    r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    cr_assert_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    long long n, max_id;
    db_jobs(&d, &n, &max_id);
    cr_assert_eq(n, 0, "the refused job was stored");
    r = api(&d, "POST", "/api/v1/jobs", TINY_SPEC, NULL, NULL);
    cr_assert_eq(r->status, 201, "%ld %s", r->status, r->body);
    api_free(r);
    lsqd_cleanup(&d);
}

/* lsqd's data folder (its SQLite file) on a disk that is full: a write is
 * 507 storage_full, nothing half-written is left, lsqd keeps answering, and
 * the write succeeds once space is freed. */
Test(faults, database_disk_full_is_507_storage_full, .timeout = 120)
{
    lsqd d;
    memset(&d, 0, sizeof d);
    snprintf(d.root, sizeof d.root, "/tmp/lsqd-api-XXXXXX");
    cr_assert(mkdtemp(d.root));
    snprintf(d.data, sizeof d.data, "%s/data", d.root);
    snprintf(d.log, sizeof d.log, "%s/lsqd.log", d.root);
    FILE *f = fopen(d.log, "w");
    cr_assert(f);
    fclose(f);
    private_ns_or_skip();
    tmpfs_or_skip(d.data, "8m");
    lsqd_restart(&d, NULL); /* starts lsqd on d.data */
    char filler[500];
    fill_disk(d.data, filler, sizeof filler);
    api_res *r = api(&d, "POST", "/api/v1/jobs", TINY_SPEC, NULL, NULL);
    cr_assert_eq(r->status, 507, "%ld %s (see %s)", r->status, r->body, d.log);
    cr_assert_str_eq(api_err_code(r), "storage_full");
    const char *m = json_string_value(json_object_get(json_object_get(r->json, "error"),
                                                      "message"));
    cr_assert(m && strstr(m, "SQLITE_FULL"), "%s", m ? m : "(none)");
    api_free(r);
    r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200, "lsqd answers on a full disk");
    api_free(r);
    cr_assert(unlink(filler) == 0);
    long long n, max_id;
    db_jobs(&d, &n, &max_id);
    cr_assert_eq(n, 0, "the refused job was stored");
    r = api(&d, "POST", "/api/v1/jobs", TINY_SPEC, NULL, NULL);
    cr_assert_eq(r->status, 201, "%ld %s", r->status, r->body);
    api_free(r);
    db_jobs(&d, &n, &max_id);
    cr_assert_eq(n, 1);
    lsqd_stop(&d);
    umount2(d.data, MNT_DETACH);
    lsqd_cleanup(&d);
}

/* The database file is moved away under lsqd (SQLite refuses to write to a
 * file whose name no longer leads to it, SQLITE_READONLY_DBMOVED): a write
 * is 503 storage_error and stores nothing; once the file is back, it
 * succeeds. */
Test(faults, database_file_moved_is_503_storage_error, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, NULL);
    char dbp[400], moved[420];
    snprintf(dbp, sizeof dbp, "%s/lsqd.db", d.data);
    snprintf(moved, sizeof moved, "%s.moved", dbp);
    cr_assert_eq(rename(dbp, moved), 0);
    api_res *r = api(&d, "POST", "/api/v1/jobs", TINY_SPEC, NULL, NULL);
    cr_assert_eq(r->status, 503, "%ld %s (see %s)", r->status, r->body, d.log);
    cr_assert_str_eq(api_err_code(r), "storage_error");
    api_free(r);
    cr_assert_eq(rename(moved, dbp), 0);
    long long n, max_id;
    db_jobs(&d, &n, &max_id);
    cr_assert_eq(n, 0, "the refused job was stored");
    r = api(&d, "POST", "/api/v1/jobs", TINY_SPEC, NULL, NULL);
    cr_assert_eq(r->status, 201, "%ld %s", r->status, r->body);
    api_free(r);
    lsqd_cleanup(&d);
}

/* A worker binary that is there but not executable: the job fails with
 * worker_not_started naming the binary and why; lsqd keeps serving and
 * runs the next job once the binary is fixed. */
Test(faults, worker_binary_not_executable_fails_job_lsqd_serves, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, NULL);
    lsqd_stop(&d);
    char bin[400];
    snprintf(bin, sizeof bin, "%s/lsq", d.root);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && chmod 0644 '%s'", getenv("LSQ_BIN"), bin, bin);
    cr_assert_eq(system(cmd), 0);
    const char *const flags[] = {"--lsq", bin, NULL};
    lsqd_restart(&d, flags);
    long long id = submit_job(&d, TINY_SPEC);
    json_t *job = wait_job(&d, id, NULL, 60);
    cr_assert(job);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "failed");
    json_t *err = json_object_get(job, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "worker_not_started");
    const char *m = json_string_value(json_object_get(err, "message"));
    cr_assert(m && strstr(m, bin) && strstr(m, "not executable"), "%s", m ? m : "(none)");
    json_decref(job);
    api_res *r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    /* fixed: the next job runs with the same lsqd */
    cr_assert_eq(chmod(bin, 0755), 0);
    id = submit_job(&d, TINY_SPEC);
    job = wait_job(&d, id, NULL, 120);
    cr_assert(job);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded", "see %s",
                     d.log);
    json_decref(job);
    lsqd_cleanup(&d);
}

/* A worker that exits 0 without its "done" event has not finished a model:
 * the job fails with worker_failed, never succeeds. */
Test(faults, worker_exit_0_without_done_is_worker_failed, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, NULL);
    lsqd_stop(&d);
    char bin[400];
    snprintf(bin, sizeof bin, "%s/lsq-exits-0", d.root);
    FILE *f = fopen(bin, "w");
    cr_assert(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    cr_assert_eq(chmod(bin, 0755), 0);
    const char *const flags[] = {"--lsq", bin, NULL};
    lsqd_restart(&d, flags);
    long long id = submit_job(&d, TINY_SPEC);
    json_t *job = wait_job(&d, id, NULL, 30);
    cr_assert(job);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "failed");
    json_t *err = json_object_get(job, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "worker_failed");
    const char *m = json_string_value(json_object_get(err, "message"));
    cr_assert(m && strstr(m, "status 0") && strstr(m, "\"done\""), "%s", m ? m : "(none)");
    cr_assert_eq(json_integer_value(json_object_get(job, "exit_status")), 0);
    json_decref(job);
    lsqd_cleanup(&d);
}
