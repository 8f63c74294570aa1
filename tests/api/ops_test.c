/* Operations: health, Prometheus metrics, the OpenAPI document against the
 * route table, the embedded migrations against schema/, datasets, the job
 * list with its cursor, and a graceful stop that re-queues a running job. */
#include <criterion/criterion.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* The file the build generates (scripts/embed.sh), compiled into this test
 * to compare it with schema/. */
#include "embedded.c"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

Test(ops, embedded_files_match_schema)
{
    glob_t g;
    cr_assert_eq(glob("schema/[0-9][0-9][0-9]_*.sql", 0, NULL, &g), 0,
                 "run the tests from the repository root");
    cr_assert_eq((int)g.gl_pathc, EMBED_MIGRATION_COUNT,
                 "the generated embedded.c is stale (scripts/embed.sh)");
    for (size_t i = 0; i < g.gl_pathc; i++) {
        size_t len;
        char *text = read_file(g.gl_pathv[i], &len);
        cr_assert(text);
        cr_assert(strstr(g.gl_pathv[i], EMBED_MIGRATIONS[i].name), "%s", g.gl_pathv[i]);
        cr_assert(len == EMBED_MIGRATIONS[i].len && !memcmp(text, EMBED_MIGRATIONS[i].text, len),
                  "%s differs from the generated embedded.c (scripts/embed.sh)",
                  g.gl_pathv[i]);
        free(text);
    }
    globfree(&g);
    size_t len;
    char *doc = read_file("schema/openapi.json", &len);
    cr_assert(doc);
    cr_assert(len == EMBED_OPENAPI.len && !memcmp(doc, EMBED_OPENAPI.text, len),
              "schema/openapi.json differs from the generated embedded.c (scripts/embed.sh)");
    free(doc);
}

Test(ops, openapi_document_matches_route_table)
{
    lsqd d;
    lsqd_start(&d, NULL);
    size_t len;
    char *file = read_file("schema/openapi.json", &len);
    cr_assert(file);
    api_res *r = api(&d, "GET", "/api/v1/openapi.json", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_assert(r->len == len && !memcmp(r->body, file, len), "the served document is the file");
    json_t *doc = json_loads(file, 0, NULL);
    cr_assert(doc, "schema/openapi.json is JSON");
    cr_assert(!strncmp(json_string_value(json_object_get(doc, "openapi")), "3.", 2));
    json_t *paths = json_object_get(doc, "paths");

    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s' --routes", getenv("LSQD_BIN"));
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    json_t *routes = json_loadf(p, 0, NULL);
    pclose(p);
    cr_assert(routes, "lsqd --routes prints JSON");
    size_t i, n_routes = 0;
    json_t *rt;
    json_array_foreach(json_object_get(routes, "routes"), i, rt) {
        const char *path = json_string_value(json_object_get(rt, "path"));
        char method[16];
        snprintf(method, sizeof method, "%s", json_string_value(json_object_get(rt, "method")));
        for (char *c = method; *c; c++) *c = (char)(*c - 'A' + 'a');
        cr_expect(json_object_get(json_object_get(paths, path), method),
                  "route %s %s is missing from schema/openapi.json", method, path);
        n_routes++;
    }
    /* and every operation of the document is a route */
    size_t n_ops = 0;
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item) {
        const char *m;
        json_t *op;
        json_object_foreach(item, m, op) {
            if (strcmp(m, "get") && strcmp(m, "post") && strcmp(m, "put") && strcmp(m, "delete") &&
                strcmp(m, "patch"))
                continue;
            int found = 0;
            json_array_foreach(json_object_get(routes, "routes"), i, rt) {
                char lm[16];
                snprintf(lm, sizeof lm, "%s", json_string_value(json_object_get(rt, "method")));
                for (char *c = lm; *c; c++) *c = (char)(*c - 'A' + 'a');
                found |= !strcmp(lm, m) &&
                         !strcmp(json_string_value(json_object_get(rt, "path")), path);
            }
            cr_expect(found, "%s %s is documented but is not a route", m, path);
            n_ops++;
        }
    }
    cr_assert_eq(n_ops, n_routes);
    json_decref(routes);
    json_decref(doc);
    free(file);
    api_free(r);
    lsqd_cleanup(&d);
}

Test(ops, healthz_metrics_datasets_index)
{
    lsqd d;
    lsqd_start(&d, NULL);
    api_res *r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "ok");
    cr_assert_str_eq(json_string_value(json_object_get(r->json, "database")), "ok");
    api_free(r);
    r = api(&d, "GET", "/nope", NULL, NULL, NULL);
    api_free(r);
    r = api(&d, "GET", "/metrics", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_assert(!strncmp(r->ctype, "text/plain", 10));
    cr_assert(strstr(r->body, "lsqd_jobs{state=\"queued\"} 0\n"));
    cr_assert(strstr(r->body, "lsqd_queue_depth 0\n"));
    cr_assert(strstr(r->body, "lsqd_workers_busy 0\n"));
    cr_assert(strstr(r->body, "lsqd_http_requests_total{route=\"healthz\",status=\"200\"} 1\n"));
    cr_assert(strstr(r->body, "lsqd_http_requests_total{route=\"none\",status=\"404\"} 1\n"));
    cr_assert(strstr(r->body, "lsqd_errors_total{code=\"not_found\"} 1\n"));
    cr_assert(strstr(r->body, "lsqd_training_images_per_second"));
    api_free(r);
    r = api(&d, "GET", "/api/v1/datasets", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    json_t *ds = json_object_get(r->json, "datasets");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(ds, 0), "name")),
                     "fashion-mnist");
    cr_assert(json_is_true(json_object_get(json_array_get(ds, 0), "available")),
              "Fashion-MNIST is installed under /usr/share/datasets");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(ds, 1), "name")), "mnist");
    /* the built-in sets are listed without a server path */
    cr_assert(json_is_true(json_object_get(json_array_get(ds, 0), "builtin")));
    cr_assert_null(json_object_get(json_array_get(ds, 0), "path"));
    api_free(r);
    /* registering a folder of the server by its path is gone: lsqd opens no
     * path a client names (datasets are uploaded or fetched from a URL) */
    r = api(&d, "POST", "/api/v1/datasets",
            "{\"name\":\"mnist\",\"path\":\"/usr/share/datasets/fashion-mnist\"}", NULL, NULL);
    cr_assert_eq(r->status, 422);
    cr_assert_str_eq(api_err_field(r), "path");
    api_free(r);
    r = api(&d, "GET", "/api/v1/datasets", NULL, NULL, NULL);
    cr_assert_eq(json_array_size(json_object_get(r->json, "datasets")), 2, "%s", r->body);
    api_free(r);
    r = api(&d, "GET", "/", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_assert(!strncmp(r->ctype, "text/html", 9));
    api_free(r);
    lsqd_cleanup(&d);
}

/* A variable that picks an engine path (the workers' lsq reads them too)
 * with a bad value: lsqd refuses to start, names it, and creates nothing
 * in its data folder; a good value starts it. */
Test(ops, start_up_refuses_a_bad_engine_path, .timeout = 60)
{
    static const char *const BAD[][2] = {
        {"LSQ_ISA=sse2", "LSQ_ISA=sse2"},     {"LSQ_CONV=onednn", "auto, own or dnnl"},
        {"LSQ_WINO=on", "0 or 1"},            {"LSQ_BWD=fp16", "f32 or bf16"},
        {"LSQ_KERNEL=neon", "portable, avx2 or vnni"},
    };
    char root[] = "/tmp/lsqd-envpath-XXXXXX"; /* mkdtemp's template */
    cr_assert(mkdtemp(root));
    char data[300];
    snprintf(data, sizeof data, "%s/data", root);
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        char *log;
        const int st = lsqd_refused((const char *const[]){"--data", data, NULL},
                                    (const char *const[]){BAD[i][0], NULL}, &log);
        cr_expect_eq(st, 2, "%s: exit %d: %s", BAD[i][0], st, log);
        char var[32];
        snprintf(var, sizeof var, "%.*s", (int)strcspn(BAD[i][0], "="), BAD[i][0]);
        cr_expect(strstr(log, BAD[i][0]) && strstr(log, BAD[i][1]) && strstr(log, var),
                  "%s: %s", BAD[i][0], log);
        free(log);
        cr_expect(access(data, F_OK) != 0, "%s: lsqd created %s", BAD[i][0], data);
    }
    rmdir(root);
    /* the same variables with good values: it starts */
    setenv("LSQ_WINO", "0", 1);
    setenv("LSQ_KERNEL", "portable", 1);
    lsqd d;
    lsqd_start(&d, NULL);
    api_res *r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_expect_eq(r->status, 200);
    api_free(r);
    cr_expect_eq(lsqd_stop(&d), 0);
    lsqd_cleanup(&d);
    unsetenv("LSQ_WINO");
    unsetenv("LSQ_KERNEL");
}

Test(ops, list_pages_newest_first_and_sigterm_requeues, .timeout = 300)
{
    lsqd d;
    const char *const flags[] = {"--workers", "1", NULL};
    lsqd_start(&d, flags);
    long long ids[4];
    for (int i = 0; i < 4; i++) ids[i] = submit_job(&d, LONG_SPEC);
    json_t *j = wait_job(&d, ids[0], "running", 60);
    cr_assert(j);
    json_decref(j);

    api_res *r = api(&d, "GET", "/api/v1/jobs?limit=2", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    json_t *jobs = json_object_get(r->json, "jobs");
    cr_assert_eq(json_array_size(jobs), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(jobs, 0), "id")), ids[3]);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(jobs, 1), "id")), ids[2]);
    long long next = json_integer_value(json_object_get(r->json, "next"));
    cr_assert_eq(next, ids[2]);
    api_free(r);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs?limit=2&after=%lld", next);
    r = api(&d, "GET", path, NULL, NULL, NULL);
    jobs = json_object_get(r->json, "jobs");
    cr_assert_eq(json_array_size(jobs), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(jobs, 0), "id")), ids[1]);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(jobs, 1), "id")), ids[0]);
    api_free(r);
    r = api(&d, "GET", "/api/v1/jobs?state=queued", NULL, NULL, NULL);
    cr_assert_eq(json_array_size(json_object_get(r->json, "jobs")), 3);
    api_free(r);
    r = api(&d, "GET", "/api/v1/jobs?state=running", NULL, NULL, NULL);
    jobs = json_object_get(r->json, "jobs");
    cr_assert_eq(json_array_size(jobs), 1);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(jobs, 0), "id")), ids[0]);
    api_free(r);

    /* SIGTERM: lsqd exits 0 and the running job goes back to the queue */
    cr_assert_eq(lsqd_stop(&d), 0);
    lsqd_restart(&d, flags);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", ids[0]);
    r = api(&d, "GET", path, NULL, NULL, NULL);
    const char *st = json_string_value(json_object_get(r->json, "state"));
    cr_assert(!strcmp(st, "queued") || !strcmp(st, "running"), "state %s", st);
    cr_assert_eq(json_integer_value(json_object_get(r->json, "attempts")) <= 1, 1,
                 "a graceful stop does not use up an attempt");
    api_free(r);
    lsqd_cleanup(&d);
}
