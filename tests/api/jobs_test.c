/* Jobs end to end against a live lsqd and the real `lsq train`: a tiny job
 * from submit to predict, cancel, restarts, a killed worker, SSE resume. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <zlib.h>

#include "harness.h"

static int has_type(const sse_log *log, const char *type)
{
    for (int i = 0; i < log->n; i++)
        if (!strcmp(log->types[i], type)) return 1;
    return 0;
}

/* A grayscale 8-bit PNG of (h, w) pixels, base64-encoded (malloc'ed). */
static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static size_t chunk(unsigned char *out, const char *type, const unsigned char *data, uint32_t n)
{
    put32(out, n);
    memcpy(out + 4, type, 4);
    if (n) memcpy(out + 8, data, n);
    uint32_t crc = (uint32_t)crc32(0, out + 4, n + 4);
    put32(out + 8 + n, crc);
    return 12 + n;
}

static char *png_base64(const unsigned char *px, int h, int w)
{
    unsigned char raw[64 * 65], z[8192], png[10000], ihdr[13];
    size_t rl = 0;
    for (int y = 0; y < h; y++) {
        raw[rl++] = y % 2 ? 2 : 1;  /* "up" and "sub" filters, encoded below */
        for (int x = 0; x < w; x++) {
            int v = px[y * w + x];
            int pred = y % 2 ? (y ? px[(y - 1) * w + x] : 0) : (x ? px[y * w + x - 1] : 0);
            raw[rl++] = (unsigned char)(v - pred);
        }
    }
    uLongf zl = sizeof z;
    cr_assert(compress(z, &zl, raw, rl) == Z_OK);
    size_t n = 0;
    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; ihdr[9] = 0; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    n += chunk(png + n, "IHDR", ihdr, 13);
    n += chunk(png + n, "IDAT", z, (uint32_t)zl);
    n += chunk(png + n, "IEND", NULL, 0);
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n / 3 * 4 + 8);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)png[i] << 16 | (i + 1 < n ? (uint32_t)png[i + 1] << 8 : 0) |
                     (i + 2 < n ? png[i + 2] : 0);
        out[o++] = A[v >> 18 & 63];
        out[o++] = A[v >> 12 & 63];
        out[o++] = i + 1 < n ? A[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? A[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

Test(jobs, tiny_job_submit_events_artifacts_predict, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long id = submit_job(&d, TINY_SPEC);

    sse_log ev;
    sse_read(&d, id, 0, 0, 240, &ev);
    cr_assert(ev.ended, "the SSE stream must end with the job (got %d events)", ev.n);
    cr_assert_str_eq(ev.end_state, "succeeded", "see %s", d.log);
    cr_assert(sse_ids_consecutive(&ev, 1), "event ids must be 1, 2, 3 ...");
    cr_assert(has_type(&ev, "start") && has_type(&ev, "progress") && has_type(&ev, "epoch") &&
              has_type(&ev, "artifact") && has_type(&ev, "done"));

    char path[256];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id);
    api_res *job = api(&d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(job->status, 200);
    cr_assert_str_eq(json_string_value(json_object_get(job->json, "state")), "succeeded");
    cr_assert(json_is_number(json_object_get(job->json, "test_acc")));
    cr_assert_eq(json_integer_value(json_object_get(job->json, "last_seq")), ev.ids[ev.n - 1]);
    cr_assert(json_is_object(json_object_get(job->json, "last_epoch")));
    api_free(job);

    snprintf(path, sizeof path, "/api/v1/jobs/%lld/metrics", id);
    api_res *m = api(&d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(m->status, 200);
    cr_assert(json_array_size(json_object_get(json_object_get(m->json, "series"), "progress.loss")) > 0);
    api_free(m);

    snprintf(path, sizeof path, "/api/v1/jobs/%lld/artifacts", id);
    api_res *arts = api(&d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(arts->status, 200);
    json_t *list = json_object_get(arts->json, "artifacts");
    int seen_lsqm = 0, seen_onnx = 0;
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        const char *name = json_string_value(json_object_get(a, "name"));
        const char *sha = json_string_value(json_object_get(a, "sha256"));
        long long bytes = json_integer_value(json_object_get(a, "bytes"));
        seen_lsqm |= !strcmp(name, "model.lsqm");
        seen_onnx |= !strcmp(name, "model.onnx");
        char apath[300], file[400], got[65], etag[80], inm[120];
        snprintf(apath, sizeof apath, "/api/v1/jobs/%lld/artifacts/%s", id, name);
        api_res *dl = api(&d, "GET", apath, NULL, NULL, NULL);
        cr_assert_eq(dl->status, 200, "%s: %ld", name, dl->status);
        cr_assert_eq(dl->content_length, bytes, "%s: Content-Length", name);
        cr_assert_eq((long long)dl->len, bytes);
        snprintf(file, sizeof file, "%s/download-%s", d.root, name);
        FILE *f = fopen(file, "wb");
        cr_assert(f);
        cr_assert_eq(fwrite(dl->body, 1, dl->len, f), dl->len);
        fclose(f);
        file_sha256(file, got);
        cr_assert_str_eq(got, sha, "%s: sha256 of the download", name);
        snprintf(etag, sizeof etag, "\"%s\"", sha);
        cr_assert_str_eq(dl->etag, etag);
        api_free(dl);
        snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
        api_res *nm = api(&d, "GET", apath, NULL, NULL, inm);
        cr_assert_eq(nm->status, 304);
        api_free(nm);
    }
    cr_assert(seen_lsqm && seen_onnx, "model.lsqm and model.onnx must be artifacts");
    api_free(arts);

    /* predict: the same image as rows of pixels and as a PNG */
    unsigned char px[28 * 28];
    for (int k = 0; k < 28 * 28; k++) px[k] = (unsigned char)((k * 37 + (k / 28) * 11) % 256);
    json_t *rows = json_array();
    for (int y = 0; y < 28; y++) {
        json_t *row = json_array();
        for (int x = 0; x < 28; x++) json_array_append_new(row, json_integer(px[y * 28 + x]));
        json_array_append_new(rows, row);
    }
    char *b64 = png_base64(px, 28, 28);
    json_t *body = json_pack("{s:[o,s]}", "images", rows, b64);
    char *text = json_dumps(body, JSON_COMPACT);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/predict", id);
    api_res *p = api(&d, "POST", path, text, NULL, NULL);
    cr_assert_eq(p->status, 200, "predict: %ld %s", p->status, p->body ? p->body : "");
    json_t *preds = json_object_get(p->json, "predictions");
    cr_assert_eq(json_array_size(preds), 2);
    json_t *p0 = json_array_get(preds, 0), *p1 = json_array_get(preds, 1);
    cr_assert_eq(json_integer_value(json_object_get(p0, "class")),
                 json_integer_value(json_object_get(p1, "class")),
                 "the PNG and the pixel rows are the same image");
    double sum = 0;
    json_t *prob;
    json_array_foreach(json_object_get(p0, "probabilities"), i, prob) sum += json_number_value(prob);
    cr_assert(sum > 0.99 && sum < 1.01, "probabilities sum to %f", sum);
    api_free(p);
    /* a wrong image size is a 422 naming the image */
    api_res *bad = api(&d, "POST", path, "{\"images\":[[[1,2,3]]]}", NULL, NULL);
    cr_assert_eq(bad->status, 422);
    cr_assert_str_eq(api_err_field(bad), "images[0]");
    api_free(bad);
    free(text);
    free(b64);
    json_decref(body);
    sse_log_free(&ev);
    lsqd_cleanup(&d);
}

Test(jobs, cancel_running_and_queued_then_409, .timeout = 300)
{
    lsqd d;
    const char *const flags[] = {"--workers", "1", NULL};
    lsqd_start(&d, flags);
    long long a = submit_job(&d, LONG_SPEC);
    long long b = submit_job(&d, LONG_SPEC);
    json_t *ja = wait_job(&d, a, "running", 60);
    cr_assert(ja, "job %lld never ran", a);
    json_decref(ja);

    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", b);
    api_res *r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 202);
    cr_assert_str_eq(json_string_value(json_object_get(r->json, "state")), "cancelled");
    api_free(r);

    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", a);
    r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 202);
    api_free(r);
    ja = wait_job(&d, a, NULL, 60);
    cr_assert(ja);
    cr_assert_str_eq(json_string_value(json_object_get(ja, "state")), "cancelled");
    json_decref(ja);

    r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 409);
    cr_assert_str_eq(api_err_code(r), "conflict");
    api_free(r);
    r = api(&d, "POST", "/api/v1/jobs/99999/cancel", NULL, NULL, NULL);
    cr_assert_eq(r->status, 404);
    api_free(r);

    /* the slot is free again: the next job runs */
    long long c = submit_job(&d, TINY_SPEC);
    json_t *jc = wait_job(&d, c, NULL, 240);
    cr_assert(jc);
    cr_assert_str_eq(json_string_value(json_object_get(jc, "state")), "succeeded");
    json_decref(jc);
    lsqd_cleanup(&d);
}

Test(jobs, queue_cap_is_503_and_stores_nothing, .timeout = 120)
{
    lsqd d;
    const char *const flags[] = {"--workers", "1", "--max-queue", "1", NULL};
    lsqd_start(&d, flags);
    long long a = submit_job(&d, LONG_SPEC);
    json_t *ja = wait_job(&d, a, "running", 60);
    cr_assert(ja);
    json_decref(ja);
    submit_job(&d, LONG_SPEC);
    long long n0, max0, n1, max1;
    db_jobs(&d, &n0, &max0);
    api_res *r = api(&d, "POST", "/api/v1/jobs", LONG_SPEC, NULL, NULL);
    cr_assert_eq(r->status, 503);
    cr_assert_str_eq(api_err_code(r), "queue_full");
    api_free(r);
    db_jobs(&d, &n1, &max1);
    cr_assert_eq(n1, n0);
    cr_assert_eq(max1, max0);
    cr_assert_eq(lsqd_stop(&d), 0, "SIGTERM: lsqd exits 0");
    lsqd_cleanup(&d);
}

Test(jobs, sigkill_lsqd_then_restart_resumes_without_gap, .timeout = 400)
{
    lsqd d;
    lsqd_start(&d, NULL);
    const char *spec = "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                       "\"test_limit\":500},\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":20},"
                       "\"quant\":{\"weight_bits\":4}}";
    long long id = submit_job(&d, spec);
    /* at the first checkpoint of the LSQ phase, kill lsqd (its worker dies
     * with it): the resumed job must not start over */
    sse_log ev;
    sse_read_until(&d, id, "checkpoint", "lsq", 120, &ev);
    cr_assert(ev.n > 0 && !strcmp(ev.types[ev.n - 1], "checkpoint") && !ev.ended,
              "no LSQ checkpoint event within 120 s (%d events)", ev.n);
    sse_log_free(&ev);
    lsqd_kill(&d);
    sleep_s(0.2);
    lsqd_restart(&d, NULL);
    json_t *job = wait_job(&d, id, NULL, 300);
    cr_assert(job);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded", "see %s", d.log);
    cr_assert_eq(json_integer_value(json_object_get(job, "attempts")), 2);
    json_decref(job);

    sse_read(&d, id, 0, 0, 60, &ev);
    cr_assert(ev.ended);
    cr_assert(sse_ids_consecutive(&ev, 1), "no gap, no repeat across the restart");
    int starts = 0, first_progress = -1, resumed_progress = -1;
    for (int i = 0; i < ev.n; i++) {
        if (!strcmp(ev.types[i], "start")) starts++;
        if (!strcmp(ev.types[i], "progress")) {
            if (first_progress < 0) first_progress = i;
            if (starts == 2 && resumed_progress < 0) resumed_progress = i;
        }
    }
    cr_assert_eq(starts, 2, "one start per attempt");
    cr_assert(first_progress >= 0 && resumed_progress > 0);
    /* the second attempt starts from the checkpoint, not from scratch */
    json_t *f = ev.data[first_progress], *s = ev.data[resumed_progress];
    int rank_f = strcmp(json_string_value(json_object_get(f, "phase")), "pretrain") ? 1 : 0;
    int rank_s = strcmp(json_string_value(json_object_get(s, "phase")), "pretrain") ? 1 : 0;
    long long ef = json_integer_value(json_object_get(f, "epoch"));
    long long es = json_integer_value(json_object_get(s, "epoch"));
    cr_assert(rank_s > rank_f || (rank_s == rank_f && es > ef),
              "resumed at %s epoch %lld, the job began at %s epoch %lld",
              json_string_value(json_object_get(s, "phase")), es,
              json_string_value(json_object_get(f, "phase")), ef);
    sse_log_free(&ev);
    lsqd_cleanup(&d);
}

Test(jobs, sigkill_worker_fails_job_and_lsqd_stays_up, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long a = submit_job(&d, LONG_SPEC);
    pid_t pid = 0;
    double t0 = now_s();
    while (now_s() - t0 < 60) {
        pid = worker_pid(&d, a);
        json_t *j = wait_job(&d, a, "running", 1);
        int progressing = j && json_is_object(json_object_get(j, "progress"));
        json_decref(j);
        if (pid > 0 && progressing) break;
        sleep_s(0.05);
    }
    cr_assert(pid > 0, "no worker pid in %s", d.log);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    json_t *ja = wait_job(&d, a, NULL, 60);
    cr_assert(ja);
    cr_assert_str_eq(json_string_value(json_object_get(ja, "state")), "failed");
    json_t *err = json_object_get(ja, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "worker_killed");
    cr_assert(strstr(json_string_value(json_object_get(err, "message")), "signal 9"));
    json_decref(ja);

    sse_log ev;
    sse_read(&d, a, 0, 0, 30, &ev);
    cr_assert(ev.ended);
    cr_assert_str_eq(ev.end_state, "failed");
    cr_assert(ev.n >= 2 && has_type(&ev, "progress"), "the job's events are kept");
    cr_assert_str_eq(ev.types[ev.n - 1], "error");
    sse_log_free(&ev);

    api_res *h = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_assert_eq(h->status, 200);
    api_free(h);
    long long b = submit_job(&d, TINY_SPEC);
    json_t *jb = wait_job(&d, b, NULL, 240);
    cr_assert(jb);
    cr_assert_str_eq(json_string_value(json_object_get(jb, "state")), "succeeded");
    json_decref(jb);
    lsqd_cleanup(&d);
}

Test(jobs, sse_reconnect_with_last_event_id_gets_exactly_the_missed, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long id = submit_job(&d, TINY_SPEC);
    sse_log first, rest, all, tail;
    sse_read(&d, id, 0, 3, 120, &first);
    cr_assert_eq(first.n, 3);
    cr_assert(sse_ids_consecutive(&first, 1));
    sse_read(&d, id, first.ids[2], 0, 240, &rest);
    cr_assert(rest.ended);
    cr_assert(rest.n > 0);
    cr_assert(sse_ids_consecutive(&rest, first.ids[2] + 1), "resumes right after id %lld",
              first.ids[2]);
    sse_read(&d, id, 0, 0, 60, &all);
    cr_assert(all.ended);
    cr_assert_eq(all.n, first.n + rest.n, "the two parts are the whole stream");
    /* after the end: the last two events, then the end event */
    sse_read(&d, id, all.ids[all.n - 3], 0, 30, &tail);
    cr_assert_eq(tail.n, 2);
    cr_assert_eq(tail.ids[0], all.ids[all.n - 2]);
    cr_assert(tail.ended);
    sse_log_free(&first);
    sse_log_free(&rest);
    sse_log_free(&all);
    sse_log_free(&tail);
    lsqd_cleanup(&d);
}

/* A job that fails for any reason carries the code and message of why:
 * the engine's (a loss that diverged: passes the door, fails at run time),
 * lsqd's own for a worker that cannot start, and `lsq train` reports a spec
 * it refuses at start as an error event too. */
Test(jobs, failed_jobs_carry_the_error_code_and_message, .timeout = 180)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long a = submit_job(&d, "{\"name\":\"diverges\",\"model\":{\"arch\":\"mlp\"},"
                                 "\"dataset\":{\"train_limit\":2000,\"test_limit\":200},"
                                 "\"train\":{\"epochs\":1,\"lr\":10,\"weight_decay\":1}}");
    json_t *ja = wait_job(&d, a, NULL, 120);
    cr_assert(ja);
    cr_assert_str_eq(json_string_value(json_object_get(ja, "state")), "failed");
    json_t *err = json_object_get(ja, "error");
    cr_expect_str_eq(json_string_value(json_object_get(err, "code")), "numeric_error");
    const char *m = json_string_value(json_object_get(err, "message"));
    cr_expect(m && strstr(m, "the loss became") && strstr(m, "train.lr"), "%s", m ? m : "(none)");
    cr_expect_eq(json_integer_value(json_object_get(ja, "exit_status")), 1);
    cr_expect_null(json_object_get(err, "field"), "a diverged loss names no key");
    json_decref(ja);
    /* the list shows it too */
    api_res *r = api(&d, "GET", "/api/v1/jobs?state=failed", NULL, NULL, NULL);
    json_t *first = json_array_get(json_object_get(r->json, "jobs"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(first, "error"), "code")),
                     "numeric_error");
    api_free(r);
    lsqd_cleanup(&d);

    /* a worker binary that cannot be executed */
    const char *const flags[] = {"--lsq", "/nonexistent/lsq", NULL};
    lsqd_start(&d, flags);
    long long b = submit_job(&d, TINY_SPEC);
    json_t *jb = wait_job(&d, b, NULL, 60);
    cr_assert(jb);
    cr_expect_str_eq(json_string_value(json_object_get(jb, "state")), "failed");
    err = json_object_get(jb, "error");
    cr_expect_str_eq(json_string_value(json_object_get(err, "code")), "worker_not_started");
    m = json_string_value(json_object_get(err, "message"));
    cr_expect(m && strstr(m, "cannot execute"), "%s", m ? m : "(none)");
    json_decref(jb);

    /* lsq train on a spec it refuses writes the reason as an error event */
    char spec[400], events[400], cmd[1400];
    snprintf(spec, sizeof spec, "%s/bad.json", d.root);
    snprintf(events, sizeof events, "%s/bad.events", d.root);
    FILE *f = fopen(spec, "w");
    cr_assert(f);
    fputs("{\"model\":{\"input\":[3,32,32],\"layers\":[{\"type\":\"flatten\"},"
          "{\"type\":\"linear\",\"out\":10}]}}", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' train '%s' --out '%s/bad' --events '%s' --quiet 2>/dev/null",
             getenv("LSQ_BIN"), spec, d.root, events);
    int rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "lsq train: status %d", rc);
    f = fopen(events, "r");
    cr_assert(f, "no events file");
    char line[2048] = "";
    cr_assert(fgets(line, sizeof line, f));
    fclose(f);
    json_t *ev = json_loads(line, 0, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(ev, "type")), "error", "%s", line);
    cr_expect_str_eq(json_string_value(json_object_get(ev, "code")), "invalid_value", "%s", line);
    cr_expect_str_eq(json_string_value(json_object_get(ev, "field")), "model.input", "%s", line);
    json_decref(ev);
    lsqd_cleanup(&d);
}

/* A job with resources for 2 ranks runs under mpirun: its events come from
 * rank 0 through the job folder's FIFO (epochs say 2 ranks and the
 * allreduce's size), it succeeds with its artifacts, and a second one
 * cancels as a single process does. */
Test(jobs, two_rank_job_runs_under_mpirun_and_cancels, .timeout = 300)
{
    /* a sanitizer build: no leak detection for this lsqd and its ranks (Open
     * MPI's allocations past MPI_Finalize; tests/unit/train/test_dist.c) */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    lsqd d;
    lsqd_start(&d, NULL);
    long long id = submit_job(&d, "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":2000,"
                                  "\"test_limit\":500},\"train\":{\"epochs\":1},\"threads\":1,"
                                  "\"resources\":{\"nodes\":1,\"tasks_per_node\":2}}");
    sse_log ev;
    sse_read(&d, id, 0, 0, 240, &ev);
    cr_assert(ev.ended, "the SSE stream must end with the job (got %d events)", ev.n);
    cr_assert_str_eq(ev.end_state, "succeeded", "see %s", d.log);
    cr_assert(sse_ids_consecutive(&ev, 1), "event ids must be 1, 2, 3 ...");
    int epochs = 0, starts = 0, artifacts = 0;
    for (int i = 0; i < ev.n; i++) {
        if (!strcmp(ev.types[i], "start")) starts++;
        if (!strcmp(ev.types[i], "artifact")) artifacts++;
        if (strcmp(ev.types[i], "epoch")) continue;
        epochs++;
        cr_expect_eq(json_integer_value(json_object_get(ev.data[i], "ranks")), 2);
        cr_expect_gt(json_integer_value(json_object_get(ev.data[i], "allreduce_bytes")), 0);
        cr_expect(json_is_number(json_object_get(ev.data[i], "allreduce_s")));
    }
    cr_expect_eq(starts, 1, "rank 0 alone writes events");
    cr_expect_eq(epochs, 1, "rank 0 alone writes events");
    cr_expect_geq(artifacts, 3);
    sse_log_free(&ev);

    long long b = submit_job(&d, "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":20000,"
                                 "\"test_limit\":500},\"train\":{\"epochs\":100},\"threads\":1,"
                                 "\"resources\":{\"tasks_per_node\":2}}");
    json_t *jb = wait_job(&d, b, "running", 60);
    cr_assert(jb, "job %lld never ran", b);
    json_decref(jb);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", b);
    api_res *r = api(&d, "POST", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 202);
    api_free(r);
    jb = wait_job(&d, b, NULL, 60);
    cr_assert(jb);
    cr_assert_str_eq(json_string_value(json_object_get(jb, "state")), "cancelled", "see %s", d.log);
    json_decref(jb);
    lsqd_cleanup(&d);
}
