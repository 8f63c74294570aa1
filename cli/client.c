/* lsq as a client of lsqd (libcurl): submit, jobs, status, watch, cancel,
 * download. The server is LSQD_URL (default http://127.0.0.1:8080). */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "util.h"

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    size_t add = size * n;
    char *nd = realloc(b->data, b->len + add + 1);
    if (!nd) return 0;
    b->data = nd;
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

static const char *base_url(void)
{
    const char *u = getenv("LSQD_URL");
    return u && *u ? u : "http://127.0.0.1:8080";
}

/* Adds "Authorization: Bearer $LSQD_TOKEN" when the variable is set. */
static struct curl_slist *add_token(struct curl_slist *h)
{
    const char *t = getenv("LSQD_TOKEN");
    if (!t || !*t) return h;
    char line[512];
    snprintf(line, sizeof line, "Authorization: Bearer %s", t);
    return curl_slist_append(h, line);
}

/* One request; returns the HTTP status (0 when lsqd cannot be reached) and
 * the body in *out (caller frees). */
static long request(const char *method, const char *path, const char *body, buf_t *out)
{
    CURL *c = curl_easy_init();
    if (!c) return 0;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base_url(), path);
    struct curl_slist *h = NULL;
    out->data = NULL, out->len = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    h = add_token(h);
    if (h) curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else fprintf(stderr, "lsq: cannot reach lsqd at %s: %s\n", base_url(), curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* Prints an error reply ("lsq CMD: field: message") and returns 1. */
static int print_error(const char *cmd, long status, const buf_t *b)
{
    json_t *j = b->data ? json_loads(b->data, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *field = json_string_value(json_object_get(e, "field"));
    if (msg && field && *field && !strstr(msg, field))
        fprintf(stderr, "lsq %s: %s: %s (HTTP %ld)\n", cmd, field, msg, status);
    else if (msg)
        fprintf(stderr, "lsq %s: %s (HTTP %ld)\n", cmd, msg, status);
    else if (status)
        fprintf(stderr, "lsq %s: HTTP %ld\n", cmd, status);
    json_decref(j);
    return 1;
}

static void print_job_line(const json_t *job)
{
    const json_t *spec = json_object_get(job, "spec");
    const json_t *q = json_object_get(spec, "quant");
    char bits[32] = "FP32";
    if (json_is_object(q))
        snprintf(bits, sizeof bits, "W%lldA%lld",
                 (long long)json_integer_value(json_object_get(q, "weight_bits")),
                 (long long)json_integer_value(json_object_get(q, "act_bits")));
    const json_t *acc = json_object_get(job, "test_acc");
    char accs[16] = "-";
    if (json_is_number(acc)) snprintf(accs, sizeof accs, "%.4f", json_number_value(acc));
    printf("%6lld  %-10s %-24s %-10s %-6s %s\n", (long long)json_integer_value(json_object_get(job, "id")),
           json_string_value(json_object_get(job, "state")),
           json_string_value(json_object_get(job, "name")),
           json_string_value(json_object_get(json_object_get(spec, "model"), "arch"))
               ? json_string_value(json_object_get(json_object_get(spec, "model"), "arch"))
               : "layers",
           bits, accs);
}

static int cmd_submit(int argc, char **argv)
{
    if (argc != 2 || cli_has_help(argc, argv)) {
        fputs("usage: lsq submit SPEC.json\n\nSubmits a job to lsqd and prints its id.\n",
              cli_has_help(argc, argv) ? stdout : stderr);
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    char *text;
    size_t len;
    if (cli_read_file(argv[1], &text, &len) != 0) {
        fprintf(stderr, "lsq submit: cannot read %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    buf_t b;
    long st = request("POST", "/api/v1/jobs", text, &b);
    free(text);
    int rc = 0;
    if (st != 201) rc = st ? print_error("submit", st, &b) : 1;
    else {
        json_t *j = json_loads(b.data, 0, NULL);
        printf("%lld\n", (long long)json_integer_value(json_object_get(j, "id")));
        json_decref(j);
    }
    free(b.data);
    return rc;
}

static int cmd_jobs(int argc, char **argv)
{
    const char *state = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_has_help(argc, argv)) {
            puts("usage: lsq jobs [--state STATE]\n\nLists lsqd's jobs, newest first.");
            return 0;
        }
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) state = argv[++i];
        else {
            fprintf(stderr, "lsq jobs: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    char path[256];
    snprintf(path, sizeof path, "/api/v1/jobs?limit=100%s%s", state ? "&state=" : "", state ? state : "");
    buf_t b;
    long st = request("GET", path, NULL, &b);
    int rc = 0;
    if (st != 200) rc = st ? print_error("jobs", st, &b) : 1;
    else {
        json_t *j = json_loads(b.data, 0, NULL);
        printf("%6s  %-10s %-24s %-10s %-6s %s\n", "id", "state", "name", "model", "bits", "test acc");
        size_t i;
        json_t *job;
        json_array_foreach(json_object_get(j, "jobs"), i, job) print_job_line(job);
        json_decref(j);
    }
    free(b.data);
    return rc;
}

static int simple_id_cmd(const char *cmd, int argc, char **argv, const char *method, const char *suffix,
                         long ok)
{
    if (argc != 2 || cli_has_help(argc, argv)) {
        fprintf(cli_has_help(argc, argv) ? stdout : stderr, "usage: lsq %s ID\n", cmd);
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    char path[256];
    snprintf(path, sizeof path, "/api/v1/jobs/%s%s", argv[1], suffix);
    buf_t b;
    long st = request(method, path, NULL, &b);
    int rc = 0;
    if (st != ok) rc = st ? print_error(cmd, st, &b) : 1;
    else {
        json_t *j = json_loads(b.data, 0, NULL);
        char *s = json_dumps(j, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(j);
    }
    free(b.data);
    return rc;
}

/* watch: the SSE stream, one line per event */
typedef struct {
    buf_t line;
    int done;
} sse_state;

static void show_event(const char *data)
{
    json_t *e = json_loads(data, 0, NULL);
    const char *t = json_string_value(json_object_get(e, "type"));
    if (!t) goto out;
    if (!strcmp(t, "progress"))
        printf("%-8s epoch %lld/%lld step %lld/%lld loss %.4f lr %.5f %.0f img/s\n",
               json_string_value(json_object_get(e, "phase")),
               (long long)json_integer_value(json_object_get(e, "epoch")),
               (long long)json_integer_value(json_object_get(e, "epochs")),
               (long long)json_integer_value(json_object_get(e, "step")),
               (long long)json_integer_value(json_object_get(e, "steps")),
               json_number_value(json_object_get(e, "loss")), json_number_value(json_object_get(e, "lr")),
               json_number_value(json_object_get(e, "images_per_s")));
    else if (!strcmp(t, "epoch"))
        printf("%-8s epoch %lld: train acc %.4f  test acc %.4f\n", json_string_value(json_object_get(e, "phase")),
               (long long)json_integer_value(json_object_get(e, "epoch")),
               json_number_value(json_object_get(e, "train_acc")),
               json_number_value(json_object_get(e, "test_acc")));
    else if (!strcmp(t, "done"))
        printf("done: test accuracy %.4f\n", json_number_value(json_object_get(e, "test_acc")));
    else if (!strcmp(t, "error"))
        printf("error: %s: %s\n", json_string_value(json_object_get(e, "code")),
               json_string_value(json_object_get(e, "message")));
    else if (!strcmp(t, "artifact"))
        printf("artifact %s (%lld bytes)\n", json_string_value(json_object_get(e, "name")),
               (long long)json_integer_value(json_object_get(e, "bytes")));
    fflush(stdout);
out:
    json_decref(e);
}

static size_t on_sse(char *p, size_t size, size_t n, void *ud)
{
    sse_state *s = ud;
    size_t total = size * n;
    for (size_t i = 0; i < total; i++) {
        if (p[i] == '\n') {
            if (s->line.len > 5 && strncmp(s->line.data, "data:", 5) == 0) {
                const char *d = s->line.data + 5;
                while (*d == ' ') d++;
                show_event(d);
            }
            s->line.len = 0;
            if (s->line.data) s->line.data[0] = '\0';
        } else {
            char c = p[i];
            if (!on_body(&c, 1, 1, &s->line)) return 0;
        }
    }
    return total;
}

static int cmd_watch(int argc, char **argv)
{
    if (argc != 2 || cli_has_help(argc, argv)) {
        fprintf(cli_has_help(argc, argv) ? stdout : stderr,
                "usage: lsq watch ID\n\nFollows a job's events until it ends.\n");
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    char url[2048];
    snprintf(url, sizeof url, "%s/api/v1/jobs/%s/events", base_url(), argv[1]);
    CURL *c = curl_easy_init();
    sse_state s = {{NULL, 0}, 0};
    struct curl_slist *h = add_token(NULL);
    if (h) curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    free(s.line.data);
    if (rc != CURLE_OK) {
        fprintf(stderr, "lsq watch: %s\n", curl_easy_strerror(rc));
        return 1;
    }
    if (status != 200) {
        fprintf(stderr, "lsq watch: HTTP %ld\n", status);
        return 1;
    }
    return 0;
}

static int cmd_download(int argc, char **argv)
{
    const char *id = NULL, *name = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) out = argv[++i];
        else if (!id) id = argv[i];
        else if (!name) name = argv[i];
    }
    if (!id || !name || cli_has_help(argc, argv)) {
        fprintf(cli_has_help(argc, argv) ? stdout : stderr, "usage: lsq download ID NAME [-o FILE]\n");
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    char path[512];
    snprintf(path, sizeof path, "/api/v1/jobs/%s/artifacts/%s", id, name);
    buf_t b;
    long st = request("GET", path, NULL, &b);
    int rc = 0;
    if (st != 200) rc = st ? print_error("download", st, &b) : 1;
    else {
        const char *dst = out ? out : name;
        FILE *f = fopen(dst, "wb");
        if (!f || fwrite(b.data, 1, b.len, f) != b.len) {
            fprintf(stderr, "lsq download: cannot write %s: %s\n", dst, strerror(errno));
            rc = 1;
        } else {
            printf("%s: %zu bytes\n", dst, b.len);
        }
        if (f) fclose(f);
    }
    free(b.data);
    return rc;
}

int cli_client_dispatch(const char *cmd, int argc, char **argv)
{
    int rc = -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!strcmp(cmd, "submit")) rc = cmd_submit(argc, argv);
    else if (!strcmp(cmd, "jobs")) rc = cmd_jobs(argc, argv);
    else if (!strcmp(cmd, "status")) rc = simple_id_cmd("status", argc, argv, "GET", "", 200);
    else if (!strcmp(cmd, "cancel")) rc = simple_id_cmd("cancel", argc, argv, "POST", "/cancel", 202);
    else if (!strcmp(cmd, "watch")) rc = cmd_watch(argc, argv);
    else if (!strcmp(cmd, "download")) rc = cmd_download(argc, argv);
    curl_global_cleanup();
    return rc;
}
