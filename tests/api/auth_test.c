/* Users and tokens: a real lsqd with --auth on, tokens made by `lsqd token`
 * on its data folder while it runs. Every route that names an object is
 * tried on user A's object by user B (404: B cannot tell it exists), by an
 * admin (the owner's answer), with no token and with a revoked one (401),
 * one table cell at a time. Then the Host header check (421 on every
 * route), CORS (no Access-Control-* ever), 415 for a body that is not
 * JSON with nothing stored, the token commands (the store holds SHA-256
 * only), start-up refusals beyond loopback and the audit log. */
#include <criterion/criterion.h>

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpng16/png.h> /* not <png.h>: -Iserver has a png.h of its own */

#include "core/sha256.h"
#include "harness.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no %s (run from the repository root)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = '\0';  /* read as text too */
    *len = (size_t)n;
    return b;
}

/* An 8x8 grey PNG of class k, image i (caller frees). */
static void *png8(int k, int i, size_t *len)
{
    uint8_t px[8 * 8];
    for (int p = 0; p < 64; p++) px[p] = (uint8_t)(k * 120 + p + i);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = 8;
    im.height = 8;
    im.format = PNG_FORMAT_GRAY;
    png_alloc_size_t size = 0;
    cr_assert(png_image_write_to_memory(&im, NULL, &size, 0, px, 0, NULL));
    void *png = malloc(size);
    cr_assert(png_image_write_to_memory(&im, png, &size, 0, px, 0, NULL));
    *len = size;
    return png;
}

/* A .tar of two class folders of small grey PNGs: an uploadable dataset. */
static void *dataset_tar(size_t *len)
{
    size_t cap = 1 << 20, used = 0;
    char *buf = malloc(cap);
    cr_assert(buf);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    cr_assert_eq(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 6; i++) {
            size_t size;
            void *png = png8(k, i, &size);
            char name[64];
            snprintf(name, sizeof name, "%s/%d.png", k ? "b" : "a", i);
            struct archive_entry *e = archive_entry_new();
            archive_entry_set_pathname(e, name);
            archive_entry_set_size(e, (la_int64_t)size);
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK);
            cr_assert_eq(archive_write_data(a, png, size), (la_ssize_t)size);
            archive_entry_free(e);
            free(png);
        }
    }
    archive_write_close(a);
    archive_write_free(a);
    *len = used;
    return buf;
}

static char *bearer(const char *token)
{
    char *h = malloc(128);
    cr_assert(h);
    snprintf(h, 128, "Authorization: Bearer %s", token);
    return h;
}

static api_res *as(lsqd *d, const char *auth, const char *method, const char *path,
                   const char *body)
{
    return api_bin2(d, method, path, body, body ? strlen(body) : 0, NULL, auth, NULL);
}

/* Polls GET path as auth until field is one of the comma-separated values. */
static json_t *wait_state(lsqd *d, const char *auth, const char *path, const char *want,
                          double timeout_s)
{
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        api_res *r = as(d, auth, "GET", path, NULL);
        cr_assert_eq(r->status, 200, "%s: %ld %s", path, r->status, r->body);
        const char *s = json_string_value(json_object_get(r->json, "state"));
        if (s && strstr(want, s)) {
            json_t *j = json_incref(r->json);
            api_free(r);
            return j;
        }
        api_free(r);
        sleep_s(0.2);
    }
    cr_assert_fail("%s did not reach %s in %.0f s", path, want, timeout_s);
    return NULL;
}

static long long id_of(api_res *r)
{
    return json_integer_value(json_object_get(r->json, "id"));
}

enum { OBJ_JOB, OBJ_MODEL, OBJ_DATASET };

Test(auth, isolation_table, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", NULL});
    /* made while lsqd runs, on its data folder */
    char *ta = token_create(&d, "alice", 0);
    char *tr = token_create(&d, "alice", 0);
    char *tb = token_create(&d, "bob", 0);
    char *tadm = token_create(&d, "boss", 1);
    int st;
    char *out = lsqd_token_cmd(&d, (const char *const[]){"revoke", "2", NULL}, &st);
    cr_assert_eq(st, 0, "revoke: %s", out);
    free(out);
    char *A = bearer(ta), *R = bearer(tr), *B = bearer(tb), *ADM = bearer(tadm);

    /* alice's job, model and dataset */
    api_res *r = as(&d, A, "POST", "/api/v1/jobs", TINY_SPEC);
    cr_assert_eq(r->status, 201, "%s", r->body);
    cr_assert_str_eq(json_string_value(json_object_get(r->json, "owner")), "alice");
    long long ids[3];
    ids[OBJ_JOB] = id_of(r);
    api_free(r);
    size_t len;
    char *onnx = slurp("tests/fixtures/onnx/resnet_op13_eval.onnx", &len);
    r = api_bin2(&d, "POST", "/api/v1/models?name=r.onnx", onnx, len,
                 "application/octet-stream", A, NULL);
    cr_assert_eq(r->status, 201, "%s", r->body);
    ids[OBJ_MODEL] = id_of(r);
    api_free(r);
    free(onnx);
    void *tar = dataset_tar(&len);
    r = api_bin2(&d, "POST", "/api/v1/datasets?name=ab.tar", tar, len,
                 "application/octet-stream", A, NULL);
    cr_assert_eq(r->status, 202, "%s", r->body);
    ids[OBJ_DATASET] = id_of(r);
    api_free(r);
    free(tar);
    char path[160];
    snprintf(path, sizeof path, "/api/v1/datasets/%lld", ids[OBJ_DATASET]);
    json_decref(wait_state(&d, A, path, "ready", 60));
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", ids[OBJ_JOB]);
    json_t *job = wait_state(&d, A, path, "succeeded,failed,cancelled", 240);
    cr_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded");
    json_decref(job);

    /* an all-zero 28x28 image for predict */
    char pred[4096] = "{\"images\":[[";
    for (int i = 0; i < 784; i++) strcat(pred, i ? ",0" : "0");
    strcat(pred, "]]}");

    static const struct {
        int kind;
        const char *method, *fmt;
        int with_body;
        long owner;  /* what the owner and an admin get; 0: only the admin tries */
    } ROWS[] = {
        {OBJ_JOB, "GET", "/api/v1/jobs/%lld", 0, 200},
        {OBJ_JOB, "GET", "/api/v1/jobs/%lld/events", 0, 200},
        {OBJ_JOB, "GET", "/api/v1/jobs/%lld/metrics", 0, 200},
        {OBJ_JOB, "GET", "/api/v1/jobs/%lld/artifacts", 0, 200},
        {OBJ_JOB, "GET", "/api/v1/jobs/%lld/artifacts/model.lsqm", 0, 200},
        {OBJ_JOB, "POST", "/api/v1/jobs/%lld/predict", 1, 200},
        {OBJ_JOB, "POST", "/api/v1/jobs/%lld/cancel", 0, 409},  /* finished already */
        {OBJ_MODEL, "GET", "/api/v1/models/%lld", 0, 200},
        {OBJ_DATASET, "GET", "/api/v1/datasets/%lld", 0, 200},
        {OBJ_DATASET, "GET", "/api/v1/datasets/%lld/samples.png", 0, 200},
        {OBJ_MODEL, "DELETE", "/api/v1/models/%lld", 0, 204},
        {OBJ_DATASET, "DELETE", "/api/v1/datasets/%lld", 0, 204},
    };
    for (size_t i = 0; i < sizeof ROWS / sizeof *ROWS; i++) {
        snprintf(path, sizeof path, ROWS[i].fmt, ids[ROWS[i].kind]);
        const char *body = ROWS[i].with_body ? pred : NULL;
        const char *m = ROWS[i].method;
        /* B: as if it did not exist */
        r = as(&d, B, m, path, body);
        cr_expect_eq(r->status, 404, "bob %s %s: %ld %s", m, path, r->status, r->body);
        cr_expect_str_eq(api_err_code(r), "not_found", "bob %s %s", m, path);
        api_free(r);
        /* no token */
        r = as(&d, NULL, m, path, body);
        cr_expect_eq(r->status, 401, "none %s %s: %ld", m, path, r->status);
        cr_expect_str_eq(r->www_auth, "Bearer realm=\"lsqd\"", "none %s %s", m, path);
        api_free(r);
        /* revoked */
        r = as(&d, R, m, path, body);
        cr_expect_eq(r->status, 401, "revoked %s %s: %ld", m, path, r->status);
        cr_expect(strstr(r->www_auth, "error=\"invalid_token\""), "revoked %s %s: '%s'", m, path,
                  r->www_auth);
        api_free(r);
        /* the owner, when the call leaves the object there */
        if (strcmp(m, "DELETE")) {
            r = as(&d, A, m, path, body);
            cr_expect_eq(r->status, ROWS[i].owner, "alice %s %s: %ld %s", m, path, r->status,
                         r->body);
            api_free(r);
        }
        /* an admin */
        r = as(&d, ADM, m, path, body);
        cr_expect_eq(r->status, ROWS[i].owner, "admin %s %s: %ld %s", m, path, r->status,
                     r->body);
        api_free(r);
    }

    /* lists: bob sees none of alice's; the admin sees them with their owner */
    r = as(&d, B, "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(json_array_size(json_object_get(r->json, "jobs")), 0);
    api_free(r);
    r = as(&d, ADM, "GET", "/api/v1/jobs", NULL);
    json_t *j0 = json_array_get(json_object_get(r->json, "jobs"), 0);
    cr_assert_eq(json_integer_value(json_object_get(j0, "id")), ids[OBJ_JOB]);
    cr_assert_str_eq(json_string_value(json_object_get(j0, "owner")), "alice");
    api_free(r);
    r = as(&d, A, "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(json_array_size(json_object_get(r->json, "jobs")), 1);
    api_free(r);

    /* bob cannot train from alice's job either */
    char spec[512];
    snprintf(spec, sizeof spec, "{\"model\":{\"arch\":\"mlp\"},\"init\":{\"from\":%lld},"
             "\"quant\":{\"weight_bits\":4}}", ids[OBJ_JOB]);
    r = as(&d, B, "POST", "/api/v1/jobs", spec);
    cr_assert_eq(r->status, 422, "%s", r->body);
    cr_assert_str_eq(api_err_field(r), "init.from");
    api_free(r);

    /* /metrics is for admins */
    r = as(&d, A, "GET", "/metrics", NULL);
    cr_assert_eq(r->status, 403);
    cr_assert_str_eq(api_err_code(r), "forbidden");
    api_free(r);
    r = as(&d, ADM, "GET", "/metrics", NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    /* /healthz and the dashboard need no token */
    r = as(&d, NULL, "GET", "/healthz", NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    r = as(&d, NULL, "GET", "/static/app.js", NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    /* the events stream alone takes the token in the query */
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/events?access_token=%s", ids[OBJ_JOB], ta);
    r = as(&d, NULL, "GET", path, NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld?access_token=%s", ids[OBJ_JOB], ta);
    r = as(&d, NULL, "GET", path, NULL);
    cr_assert_eq(r->status, 401);
    api_free(r);

    /* the audit log names the user, the call and the object */
    size_t loglen;
    char *log = slurp(d.log, &loglen);
    char want[200];
    snprintf(want, sizeof want, "\"user\":\"alice\",\"method\":\"POST\",\"path\":\"/api/v1/jobs\","
             "\"route\":\"jobs_submit\",\"status\":201,\"id\":%lld", ids[OBJ_JOB]);
    cr_assert(strstr(log, want), "no audit line %s", want);
    snprintf(want, sizeof want, "\"user\":\"boss\",\"method\":\"DELETE\",\"path\":"
             "\"/api/v1/models/%lld\",\"route\":\"model_delete\",\"status\":204", ids[OBJ_MODEL]);
    cr_assert(strstr(log, want), "no audit line %s", want);
    free(log);
    free(ta); free(tr); free(tb); free(tadm);
    free(A); free(R); free(B); free(ADM);
    lsqd_cleanup(&d);
}

Test(auth, foreign_host_is_421_everywhere_and_no_cors, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--host-allow", "lab.example, other.example:9", NULL});
    static const struct { const char *method, *path; } ROUTES[] = {
        {"GET", "/healthz"}, {"GET", "/"}, {"GET", "/static/app.js"},
        {"GET", "/api/v1/openapi.json"}, {"GET", "/metrics"}, {"GET", "/api/v1/jobs"},
        {"POST", "/api/v1/jobs"}, {"GET", "/api/v1/jobs/1"}, {"GET", "/api/v1/jobs/1/events"},
        {"POST", "/api/v1/jobs/1/cancel"}, {"GET", "/api/v1/models"},
        {"DELETE", "/api/v1/models/1"}, {"GET", "/api/v1/datasets/1/samples.png"},
        {"OPTIONS", "/api/v1/jobs"}, {"GET", "/no/such/path"},
    };
    char foreign[3][96];
    snprintf(foreign[0], sizeof foreign[0], "Host: evil.example:%d", d.port);
    snprintf(foreign[1], sizeof foreign[1], "Host: 127.0.0.1:%d", d.port + 1);
    snprintf(foreign[2], sizeof foreign[2], "Host: lab.example.evil:%d", d.port);
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++) {
        for (int h = 0; h < 3; h++) {
            api_res *r = api_bin2(&d, ROUTES[i].method, ROUTES[i].path,
                                  strcmp(ROUTES[i].method, "POST") ? NULL : TINY_SPEC,
                                  strcmp(ROUTES[i].method, "POST") ? 0 : strlen(TINY_SPEC),
                                  NULL, foreign[h], NULL);
            cr_expect_eq(r->status, 421, "%s %s with %s: %ld", ROUTES[i].method,
                         ROUTES[i].path, foreign[h], r->status);
            cr_expect_str_eq(api_err_code(r), "misdirected_request");
            cr_expect_eq(r->cors, 0);
            api_free(r);
        }
    }
    long long count, max_id;
    db_jobs(&d, &count, &max_id);
    cr_assert_eq(count, 0, "a refused POST stored a job");
    /* lsqd's own names, and those of --host-allow */
    char ok[4][96];
    snprintf(ok[0], sizeof ok[0], "Host: localhost:%d", d.port);
    snprintf(ok[1], sizeof ok[1], "Host: LAB.example:%d", d.port);
    snprintf(ok[2], sizeof ok[2], "Host: lab.example");
    snprintf(ok[3], sizeof ok[3], "Host: other.example:9");
    for (int h = 0; h < 4; h++) {
        api_res *r = api_bin2(&d, "GET", "/healthz", NULL, 0, NULL, ok[h], NULL);
        cr_expect_eq(r->status, 200, "%s: %ld", ok[h], r->status);
        api_free(r);
    }
    /* a preflight from another origin gets no Access-Control-* header */
    api_res *r = api_bin2(&d, "OPTIONS", "/api/v1/jobs", NULL, 0, NULL,
                          "Origin: http://evil.example",
                          "Access-Control-Request-Method: POST");
    cr_assert_eq(r->status, 204);
    cr_assert_eq(r->cors, 0);
    cr_assert(strstr(r->allow, "POST"));
    api_free(r);
    r = api_bin2(&d, "GET", "/api/v1/jobs", NULL, 0, NULL, "Origin: http://evil.example", NULL);
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->cors, 0);
    api_free(r);
    lsqd_cleanup(&d);
}

Test(auth, wrong_content_type_is_415_and_stores_nothing, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", NULL});
    char *t = token_create(&d, "alice", 0), *A = bearer(t);
    static const struct { const char *path, *ctype; } CASES[] = {
        {"/api/v1/jobs", "text/plain"},
        {"/api/v1/jobs", "application/x-www-form-urlencoded"},
        {"/api/v1/datasets", "text/plain"},
        {"/api/v1/datasets", "multipart/form-data; boundary=x"},
        {"/api/v1/models?name=m.onnx", "application/x-www-form-urlencoded"},
        {"/api/v1/models?name=m.onnx", "application/json"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        api_res *r = api_bin2(&d, "POST", CASES[i].path, TINY_SPEC, strlen(TINY_SPEC),
                              CASES[i].ctype, A, NULL);
        cr_expect_eq(r->status, 415, "%s as %s: %ld", CASES[i].path, CASES[i].ctype, r->status);
        cr_expect_str_eq(api_err_code(r), "unsupported_media_type");
        api_free(r);
    }
    long long count, max_id;
    db_jobs(&d, &count, &max_id);
    cr_assert_eq(count, 0);
    static const char *const LISTS[] = {"/api/v1/models", "/api/v1/datasets"};
    for (int i = 0; i < 2; i++) {
        api_res *r = as(&d, A, "GET", LISTS[i], NULL);
        json_t *arr = json_object_get(r->json, i ? "datasets" : "models");
        size_t n = 0, k;
        json_t *v;
        json_array_foreach(arr, k, v) n += !json_is_true(json_object_get(v, "builtin"));
        cr_assert_eq(n, 0, "%s: %s", LISTS[i], r->body);
        api_free(r);
    }
    free(t);
    free(A);
    lsqd_cleanup(&d);
}

Test(auth, token_commands_and_start_up_refusals, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", NULL});
    char *t1 = token_create(&d, "alice", 0);
    char *t2 = token_create(&d, "root", 1);
    cr_assert_str_neq(t1, t2);
    /* the store holds the SHA-256 of each token and never its text */
    char h1[65], h2[65];
    unsigned char dg[32];
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, t1, strlen(t1));
    sha256_final(&c, dg);
    sha256_hex(dg, h1);
    sha256_init(&c);
    sha256_update(&c, t2, strlen(t2));
    sha256_final(&c, dg);
    sha256_hex(dg, h2);
    char db[400];
    snprintf(db, sizeof db, "%s/lsqd.db", d.data);
    sqlite3 *s;
    cr_assert_eq(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(s, "SELECT t.sha256, u.name, u.admin FROM tokens t JOIN "
                                       "users u ON u.id = t.user_id ORDER BY t.id", -1, &q, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), h1);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 1), "alice");
    cr_assert_eq(sqlite3_column_int(q, 2), 0);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), h2);
    cr_assert_eq(sqlite3_column_int(q, 2), 1);
    cr_assert_eq(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(s);
    /* no file of the data folder holds a token's text */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "grep -rqaF '%s' '%s'", t1 + 5, d.data);
    cr_assert_neq(system(cmd), 0, "the token's text is in the data folder");

    /* list shows users and dates, never a token or its hash */
    int st;
    char *list = lsqd_token_cmd(&d, (const char *const[]){"list", NULL}, &st);
    cr_assert_eq(st, 0);
    cr_assert(strstr(list, "alice") && strstr(list, "root"), "%s", list);
    cr_assert(!strstr(list, t1 + 5) && !strstr(list, t2 + 5) && !strstr(list, h1) &&
              !strstr(list, h2), "list shows a secret: %s", list);
    free(list);

    /* the token works, then is revoked and does not */
    char *A = bearer(t1);
    api_res *r = as(&d, A, "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    char *out = lsqd_token_cmd(&d, (const char *const[]){"revoke", "1", NULL}, &st);
    cr_assert_eq(st, 0, "%s", out);
    free(out);
    r = as(&d, A, "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(r->status, 401);
    cr_assert_str_eq(api_err_code(r), "unauthorized");
    api_free(r);
    list = lsqd_token_cmd(&d, (const char *const[]){"list", NULL}, &st);
    cr_assert(strstr(list, "\n1 "), "%s", list);
    free(list);
    out = lsqd_token_cmd(&d, (const char *const[]){"revoke", "99", NULL}, &st);
    cr_assert_eq(st, 1);
    free(out);
    out = lsqd_token_cmd(&d, (const char *const[]){"create", "--user", "local", NULL}, &st);
    cr_assert_eq(st, 2);
    cr_assert_str_eq(out, "");
    free(out);
    out = lsqd_token_cmd(&d, (const char *const[]){"create", "--user", "a b", NULL}, &st);
    cr_assert_eq(st, 2);
    free(out);
    /* a bad Authorization scheme */
    r = as(&d, "Authorization: Basic YTpi", "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(r->status, 401);
    api_free(r);
    lsqd_stop(&d);

    /* beyond loopback: --auth off is refused; with a token, lsqd starts */
    char *log;
    cr_assert_eq(lsqd_refused((const char *const[]){"--listen", "0.0.0.0:0", "--auth", "off",
                                                    "--data", d.data, NULL},
                              NULL, &log), 1);
    cr_assert(strstr(log, "--auth off is refused"), "%s", log);
    free(log);
    lsqd_restart(&d, (const char *const[]){"--listen", "0.0.0.0:0", NULL});
    r = as(&d, NULL, "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(r->status, 401, "auto is on beyond loopback");
    api_free(r);
    char *R = bearer(t2);
    r = as(&d, R, "GET", "/api/v1/jobs", NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    free(R);
    lsqd_stop(&d);
    /* ... and with no valid token in the store it says how to make one */
    out = lsqd_token_cmd(&d, (const char *const[]){"revoke", "2", NULL}, &st);
    free(out);
    cr_assert_eq(lsqd_refused((const char *const[]){"--listen", "0.0.0.0:0", "--data", d.data,
                                                    NULL},
                              NULL, &log), 1);
    cr_assert(strstr(log, "lsqd token create --user admin --admin --data"), "%s", log);
    free(log);
    free(A);
    free(t1);
    free(t2);
    lsqd_cleanup(&d);
}

Test(auth, per_user_limits, .timeout = 180)
{
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", "--workers", "2",
                                         "--max-queued-per-user", "1",
                                         "--max-running-per-user", "1", NULL});
    char *ta = token_create(&d, "alice", 0), *tb = token_create(&d, "bob", 0);
    char *A = bearer(ta), *B = bearer(tb);
    api_res *r = as(&d, A, "POST", "/api/v1/jobs", LONG_SPEC);
    cr_assert_eq(r->status, 201, "%s", r->body);
    long long a1 = id_of(r);
    api_free(r);
    char path[96];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", a1);
    json_decref(wait_state(&d, A, path, "running", 30));
    /* alice's second job waits: she has one running */
    r = as(&d, A, "POST", "/api/v1/jobs", LONG_SPEC);
    cr_assert_eq(r->status, 201, "%s", r->body);
    long long a2 = id_of(r);
    api_free(r);
    /* a third is past her queued limit: 429 naming it, nothing stored */
    r = as(&d, A, "POST", "/api/v1/jobs", LONG_SPEC);
    cr_assert_eq(r->status, 429, "%s", r->body);
    cr_assert_str_eq(api_err_code(r), "limit_reached");
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r->json, "error"),
                                                       "message")), "--max-queued-per-user"));
    api_free(r);
    long long count, max_id;
    db_jobs(&d, &count, &max_id);
    cr_assert_eq(count, 2);
    /* bob's job takes the free worker ahead of alice's queued one */
    r = as(&d, B, "POST", "/api/v1/jobs", LONG_SPEC);
    cr_assert_eq(r->status, 201, "%s", r->body);
    long long b1 = id_of(r);
    api_free(r);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", b1);
    json_decref(wait_state(&d, B, path, "running", 30));
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", a2);
    r = as(&d, A, "GET", path, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(r->json, "state")), "queued");
    api_free(r);
    long long ids[3] = {a1, a2, b1};
    const char *who[3] = {A, A, B};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", ids[i]);
        r = as(&d, who[i], "POST", path, NULL);
        cr_expect_eq(r->status, 202, "%s", r->body);
        api_free(r);
    }
    free(ta); free(tb); free(A); free(B);
    lsqd_cleanup(&d);
}

Test(auth, quota_per_user, .timeout = 120)
{
    size_t len;
    char *onnx = slurp("tests/fixtures/onnx/resnet_op13_eval.onnx", &len);
    char quota[32];
    snprintf(quota, sizeof quota, "%zu", len);  /* room for the model, exactly */
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", "--quota-per-user", quota, NULL});
    char *ta = token_create(&d, "alice", 0), *tb = token_create(&d, "bob", 0);
    char *A = bearer(ta), *B = bearer(tb);
    api_res *r = api_bin2(&d, "POST", "/api/v1/models?name=r.onnx", onnx, len,
                          "application/octet-stream", A, NULL);
    cr_assert_eq(r->status, 201, "%s", r->body);
    api_free(r);
    /* a second copy passes the quota: 413 naming it, nothing stored */
    r = api_bin2(&d, "POST", "/api/v1/models?name=r2.onnx", onnx, len,
                 "application/octet-stream", A, NULL);
    cr_assert_eq(r->status, 413, "%s", r->body);
    cr_assert(strstr(r->body, "--quota-per-user"), "%s", r->body);
    api_free(r);
    r = as(&d, A, "GET", "/api/v1/models", NULL);
    cr_assert_eq(json_array_size(json_object_get(r->json, "models")), 1);
    api_free(r);
    char up[400];
    snprintf(up, sizeof up, "%s/uploads", d.data);
    char cmd[500];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", up);
    cr_assert_eq(system(cmd), 0, "a refused upload left a file in uploads/");
    /* at the quota, a job (whose artifacts would add to it) is 429 */
    r = as(&d, A, "POST", "/api/v1/jobs", TINY_SPEC);
    cr_assert_eq(r->status, 429, "%s", r->body);
    cr_assert_str_eq(api_err_code(r), "limit_reached");
    cr_assert(strstr(r->body, "--quota-per-user"), "%s", r->body);
    api_free(r);
    long long count, max_id;
    db_jobs(&d, &count, &max_id);
    cr_assert_eq(count, 0);
    /* bob's bytes are his own */
    r = api_bin2(&d, "POST", "/api/v1/models?name=r.onnx", onnx, len,
                 "application/octet-stream", B, NULL);
    cr_assert_eq(r->status, 201, "%s", r->body);
    api_free(r);
    free(onnx);
    free(ta); free(tb); free(A); free(B);
    lsqd_cleanup(&d);
}

/* A dataset of --datasets-root belongs to no user: every user reads it and
 * trains on it; only an admin deletes it (403 for a user: it is visible,
 * so refusing reveals nothing). */
Test(auth, datasets_root_is_shared_and_deleted_by_admins_only, .timeout = 180)
{
    char root[] = "/tmp/lsqd-root-XXXXXX";
    cr_assert(mkdtemp(root));
    char p[600];
    snprintf(p, sizeof p, "%s/shapes", root);
    cr_assert_eq(mkdir(p, 0755), 0);
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/shapes/%c", root, 'a' + k);
        cr_assert_eq(mkdir(p, 0755), 0);
        for (int i = 0; i < 6; i++) {
            size_t n;
            void *png = png8(k, i, &n);
            snprintf(p, sizeof p, "%s/shapes/%c/%d.png", root, 'a' + k, i);
            FILE *f = fopen(p, "wb");
            cr_assert(f);
            fwrite(png, 1, n, f);
            fclose(f);
            free(png);
        }
    }
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", "--datasets-root", root, NULL});
    char *ta = token_create(&d, "alice", 0), *tadm = token_create(&d, "boss", 1);
    char *A = bearer(ta), *ADM = bearer(tadm);
    json_decref(wait_state(&d, A, "/api/v1/datasets/1", "ready", 60));
    api_res *r = as(&d, A, "GET", "/api/v1/datasets", NULL);
    json_t *list = json_object_get(r->json, "datasets");
    int seen = 0;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) seen |= json_integer_value(json_object_get(v, "id")) == 1;
    cr_assert(seen, "alice's list lacks the root's dataset: %s", r->body);
    api_free(r);
    r = as(&d, A, "GET", "/api/v1/datasets/1/samples.png", NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    /* alice trains on it */
    r = as(&d, A, "POST", "/api/v1/jobs",
           "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"id\":1},\"train\":{\"epochs\":1}}");
    cr_assert_eq(r->status, 201, "%s", r->body);
    char path[64];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id_of(r));
    api_free(r);
    json_decref(wait_state(&d, A, path, "succeeded,failed,cancelled", 120));
    /* but does not delete it; the admin does */
    r = as(&d, A, "DELETE", "/api/v1/datasets/1", NULL);
    cr_assert_eq(r->status, 403, "%s", r->body);
    cr_assert_str_eq(api_err_code(r), "forbidden");
    api_free(r);
    r = as(&d, ADM, "DELETE", "/api/v1/datasets/1", NULL);
    cr_assert_eq(r->status, 204, "%s", r->body);
    api_free(r);
    free(ta); free(tadm); free(A); free(ADM);
    lsqd_cleanup(&d);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

/* Runs `lsq ARGS` with LSQD_URL set to d and LSQD_TOKEN to token (NULL:
 * unset); returns the exit status and standard output + error in *out. */
static int run_lsq(lsqd *d, const char *token, const char *const *args, char **out)
{
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin && *bin, "LSQ_BIN must name the lsq binary");
    char url[96], tok[256];
    snprintf(url, sizeof url, "LSQD_URL=%s", d->base);
    snprintf(tok, sizeof tok, "LSQD_TOKEN=%s", token ? token : "");
    return run_program(bin, args, (const char *const[]){url, token ? tok : "LSQD_TOKEN", NULL},
                       0, out);
}

Test(auth, lsq_client_sends_lsqd_token, .timeout = 180)
{
    lsqd d;
    lsqd_start(&d, (const char *const[]){"--auth", "on", NULL});
    char *ta = token_create(&d, "alice", 0), *tb = token_create(&d, "bob", 0);
    char spec[] = "/tmp/lsq-spec-XXXXXX";
    int fd = mkstemp(spec);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, TINY_SPEC, strlen(TINY_SPEC)), (ssize_t)strlen(TINY_SPEC));
    close(fd);
    char *out;
    /* without a token: lsqd's message, a failure */
    cr_assert_neq(run_lsq(&d, NULL, (const char *const[]){"submit", spec, NULL}, &out), 0);
    cr_assert(strstr(out, "needs a token") && strstr(out, "401"), "%s", out);
    free(out);
    cr_assert_eq(run_lsq(&d, ta, (const char *const[]){"submit", spec, NULL}, &out), 0, "%s",
                 out);
    long long id = atoll(out);
    cr_assert_gt(id, 0, "%s", out);
    free(out);
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", id);
    /* watch follows the stream to its end with the header */
    cr_assert_eq(run_lsq(&d, ta, (const char *const[]){"watch", ids, NULL}, &out), 0, "%s", out);
    free(out);
    cr_assert_eq(run_lsq(&d, ta, (const char *const[]){"jobs", NULL}, &out), 0, "%s", out);
    char want[32];
    snprintf(want, sizeof want, "%6lld  ", id);
    cr_assert(strstr(out, want), "alice's jobs lack %lld: %s", id, out);
    free(out);
    /* bob's client sees neither the job nor its status */
    cr_assert_eq(run_lsq(&d, tb, (const char *const[]){"jobs", NULL}, &out), 0, "%s", out);
    cr_assert(!strstr(out, want), "bob sees alice's job: %s", out);
    free(out);
    cr_assert_neq(run_lsq(&d, tb, (const char *const[]){"status", ids, NULL}, &out), 0);
    cr_assert(strstr(out, "404"), "%s", out);
    free(out);
    unlink(spec);
    free(ta);
    free(tb);
    lsqd_cleanup(&d);
}
