/* The API test harness: a live lsqd, libcurl requests, an SSE reader. */
#include "harness.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static void spawn(lsqd *d, const char *const *extra)
{
    const char *bin = getenv("LSQD_BIN");
    cr_assert(bin && *bin, "LSQD_BIN must name the lsqd binary");
    const char *argv[32] = {bin, "--listen", "127.0.0.1:0", "--data", d->data};
    int argc = 5;
    for (int i = 0; extra && extra[i] && argc < 30; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;
    /* the log is appended to, so a restart can be told apart by offset */
    FILE *f = fopen(d->log, "a");
    cr_assert(f);
    long offset = ftell(f);
    fclose(f);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(126);
        int fd = open(d->log, O_WRONLY | O_APPEND);
        if (fd >= 0) { dup2(fd, 2); dup2(fd, 1); }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    d->port = 0;
    double t0 = now_s();
    while (now_s() - t0 < 10 && !d->port) {
        f = fopen(d->log, "r");
        if (f) {
            fseek(f, offset, SEEK_SET);
            char line[4096];
            while (fgets(line, sizeof line, f)) {
                if (!strstr(line, "\"msg\":\"listening\"")) continue;
                json_t *j = json_loads(line, 0, NULL);
                d->port = (int)json_integer_value(json_object_get(j, "port"));
                json_decref(j);
            }
            fclose(f);
        }
        int st;
        cr_assert(waitpid(pid, &st, WNOHANG) == 0, "lsqd exited at start-up (see %s)", d->log);
        if (!d->port) sleep_s(0.01);
    }
    cr_assert(d->port > 0, "lsqd did not log a listening port (see %s)", d->log);
    snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", d->port);
}

void lsqd_start(lsqd *d, const char *const *extra)
{
    memset(d, 0, sizeof *d);
    snprintf(d->root, sizeof d->root, "/tmp/lsqd-api-XXXXXX");
    cr_assert(mkdtemp(d->root));
    snprintf(d->data, sizeof d->data, "%s/data", d->root);
    snprintf(d->log, sizeof d->log, "%s/lsqd.log", d->root);
    FILE *f = fopen(d->log, "w");
    cr_assert(f);
    fclose(f);
    spawn(d, extra);
}

void lsqd_restart(lsqd *d, const char *const *extra) { spawn(d, extra); }

int lsqd_stop(lsqd *d)
{
    if (d->pid <= 0) return -1;
    kill(d->pid, SIGTERM);
    int st = 0;
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void lsqd_kill(lsqd *d)
{
    if (d->pid <= 0) return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
}

void lsqd_cleanup(lsqd *d)
{
    if (d->pid > 0) lsqd_stop(d);
    if (getenv("LSQD_TEST_KEEP")) return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->root);
    int rc = system(cmd);
    (void)rc;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    api_res *r = ud;
    size_t add = size * n;
    char *b = realloc(r->body, r->len + add + 1);
    if (!b) return 0;
    r->body = b;
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (len <= n + 1 || strncasecmp(line, name, n) || line[n] != ':') return;
    const char *v = line + n + 1;
    while (*v == ' ') v++;
    size_t vl = len - (size_t)(v - line);
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n')) vl--;
    if (vl >= cap) vl = cap - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    api_res *r = ud;
    size_t len = size * n;
    char cl[32] = "";
    header_value(p, len, "Allow", r->allow, sizeof r->allow);
    header_value(p, len, "ETag", r->etag, sizeof r->etag);
    header_value(p, len, "Content-Type", r->ctype, sizeof r->ctype);
    header_value(p, len, "Location", r->location, sizeof r->location);
    header_value(p, len, "Content-Length", cl, sizeof cl);
    header_value(p, len, "WWW-Authenticate", r->www_auth, sizeof r->www_auth);
    if (len > 15 && !strncasecmp(p, "Access-Control-", 15)) r->cors = 1;
    if (*cl) r->content_length = atoll(cl);
    return len;
}

api_res *api(lsqd *d, const char *method, const char *path, const char *body,
             const char *ctype, const char *extra_header)
{
    return api_bin(d, method, path, body, body ? strlen(body) : 0, ctype, extra_header);
}

api_res *api_bin(lsqd *d, const char *method, const char *path, const void *body, size_t len,
                 const char *ctype, const char *extra_header)
{
    return api_bin2(d, method, path, body, len, ctype, extra_header, NULL);
}

api_res *api_bin2(lsqd *d, const char *method, const char *path, const void *body, size_t len,
                  const char *ctype, const char *extra_header, const char *h2)
{
    api_res *r = calloc(1, sizeof *r);
    cr_assert(r);
    r->content_length = -1;
    CURL *c = curl_easy_init();
    cr_assert(c);
    char url[1024], cth[160];
    snprintf(url, sizeof url, "%s%s", d->base, path);
    struct curl_slist *h = NULL;
    if (body) {
        snprintf(cth, sizeof cth, "Content-Type: %s", ctype ? ctype : "application/json");
        h = curl_slist_append(h, cth);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    h = curl_slist_append(h, "Expect:");
    if (extra_header) h = curl_slist_append(h, extra_header);
    if (h2) h = curl_slist_append(h, h2);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(c);
    cr_assert(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (r->body) r->json = json_loadb(r->body, r->len, 0, NULL);
    return r;
}

void api_free(api_res *r)
{
    if (!r) return;
    json_decref(r->json);
    free(r->body);
    free(r);
}

const char *api_err_code(const api_res *r)
{
    const char *s = json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
    return s ? s : "";
}

const char *api_err_field(const api_res *r)
{
    const char *s = json_string_value(json_object_get(json_object_get(r->json, "error"), "field"));
    return s ? s : "";
}

char *lsqd_token_cmd(lsqd *d, const char *const *args, int *status)
{
    const char *bin = getenv("LSQD_BIN");
    cr_assert(bin && *bin, "LSQD_BIN must name the lsqd binary");
    int out[2];
    cr_assert(pipe(out) == 0);
    const char *argv[16] = {bin, "token"};
    int argc = 2;
    for (int i = 0; args[i] && argc < 12; i++) argv[argc++] = args[i];
    argv[argc++] = "--data";
    argv[argc++] = d->data;
    argv[argc] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 2);
        close(out[0]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    char *text = NULL;
    size_t n = 0;
    char buf[4096];
    ssize_t k;
    while ((k = read(out[0], buf, sizeof buf)) > 0) {
        text = realloc(text, n + (size_t)k + 1);
        cr_assert(text);
        memcpy(text + n, buf, (size_t)k);
        n += (size_t)k;
    }
    close(out[0]);
    if (!text) text = calloc(1, 1);
    text[n] = '\0';
    int st = 0;
    waitpid(pid, &st, 0);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return text;
}

int run_program(const char *bin, const char *const *args, const char *const *env,
                double timeout_s, char **out)
{
    cr_assert(bin && *bin, "run_program: no binary");
    char path[] = "/tmp/lsq-test-out-XXXXXX"; /* mkstemp's template */
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    const char *argv[16] = {bin};
    int argc = 1;
    for (int i = 0; args[i]; i++) {
        cr_assert(argc < 15, "run_program: too many arguments");
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        for (int i = 0; env && env[i]; i++) {
            if (strchr(env[i], '=')) putenv((char *)env[i]);
            else unsetenv(env[i]);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(fd);
    int st = 0;
    double t0 = now_s();
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (timeout_s > 0 && now_s() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_assert_fail("%s %s kept running", bin, args[0] ? args[0] : "");
        }
        sleep_s(0.02);
    }
    FILE *f = fopen(path, "r");
    cr_assert(f);
    char *text = NULL;
    size_t n = 0;
    char buf[4096];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
        text = realloc(text, n + k + 1);
        cr_assert(text);
        memcpy(text + n, buf, k);
        n += k;
    }
    fclose(f);
    unlink(path);
    if (!text) text = calloc(1, 1);
    text[n] = '\0';
    *out = text;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int lsqd_refused(const char *const *args, const char *const *env, char **log)
{
    return run_program(getenv("LSQD_BIN"), args, env, 10, log);
}

char *token_create(lsqd *d, const char *user, int admin)
{
    const char *args[] = {"create", "--user", user, admin ? "--admin" : NULL, NULL};
    int st;
    char *out = lsqd_token_cmd(d, args, &st);
    cr_assert_eq(st, 0, "lsqd token create --user %s: exit %d", user, st);
    size_t n = strlen(out);
    while (n && out[n - 1] == '\n') out[--n] = '\0';
    cr_assert(!strncmp(out, "lsqd_", 5) && n == 69, "not a token: '%s'", out);
    return out;
}

long long submit_job(lsqd *d, const char *spec)
{
    api_res *r = api(d, "POST", "/api/v1/jobs", spec, NULL, NULL);
    cr_assert_eq(r->status, 201, "submit: %ld %s", r->status, r->body ? r->body : "");
    long long id = json_integer_value(json_object_get(r->json, "id"));
    cr_assert(id > 0);
    api_free(r);
    return id;
}

json_t *wait_job(lsqd *d, long long id, const char *want, double timeout_s)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id);
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        api_res *r = api(d, "GET", path, NULL, NULL, NULL);
        cr_assert_eq(r->status, 200, "GET %s: %ld %s", path, r->status, r->body ? r->body : "");
        const char *st = json_string_value(json_object_get(r->json, "state"));
        int done = want ? !strcmp(st, want)
                        : strcmp(st, "queued") && strcmp(st, "running");
        if (done) {
            json_t *j = json_incref(r->json);
            api_free(r);
            return j;
        }
        api_free(r);
        sleep_s(0.05);
    }
    return NULL;
}

void db_jobs(lsqd *d, long long *count, long long *max_id)
{
    char path[400];
    snprintf(path, sizeof path, "%s/lsqd.db", d->data);
    sqlite3 *db = NULL;
    cr_assert(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    cr_assert(sqlite3_prepare_v2(db, "SELECT count(*), coalesce(max(id), 0) FROM jobs", -1, &st,
                                 NULL) == SQLITE_OK);
    cr_assert(sqlite3_step(st) == SQLITE_ROW);
    *count = sqlite3_column_int64(st, 0);
    *max_id = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

typedef struct {
    sse_log *log;
    int max_events;
    char *buf;
    size_t len;
    long long cur_id;
    char cur_type[16];
    int stop;
    const char *stop_type, *stop_phase;
} sse_state;

static void sse_line(sse_state *s, const char *line)
{
    if (!*line) {  /* blank line: dispatch */
        if (!strcmp(s->cur_type, "end")) {
            s->log->ended = 1;
            s->stop = 1;
        } else if (s->cur_id > 0 && s->log->n < SSE_MAX) {
            s->log->ids[s->log->n] = s->cur_id;
            snprintf(s->log->types[s->log->n], sizeof s->log->types[0], "%s", s->cur_type);
            s->log->n++;
            if (s->max_events && s->log->n >= s->max_events) s->stop = 1;
            const char *ph = json_string_value(json_object_get(s->log->data[s->log->n - 1], "phase"));
            if (s->stop_type && !strcmp(s->cur_type, s->stop_type) &&
                (!s->stop_phase || (ph && !strcmp(ph, s->stop_phase))))
                s->stop = 1;
        }
        s->cur_id = 0;
        s->cur_type[0] = '\0';
        return;
    }
    if (!strncmp(line, "id: ", 4)) s->cur_id = atoll(line + 4);
    else if (!strncmp(line, "event: ", 7)) snprintf(s->cur_type, sizeof s->cur_type, "%s", line + 7);
    else if (!strncmp(line, "data: ", 6) && strcmp(s->cur_type, "end") && s->log->n < SSE_MAX) {
        json_decref(s->log->data[s->log->n]);
        s->log->data[s->log->n] = json_loads(line + 6, 0, NULL);
    } else if (!strncmp(line, "data: ", 6) && !strcmp(s->cur_type, "end")) {
        json_t *j = json_loads(line + 6, 0, NULL);
        const char *st = json_string_value(json_object_get(j, "state"));
        snprintf(s->log->end_state, sizeof s->log->end_state, "%s", st ? st : "");
        json_decref(j);
    }
}

static size_t on_sse(char *p, size_t size, size_t n, void *ud)
{
    sse_state *s = ud;
    size_t add = size * n;
    char *b = realloc(s->buf, s->len + add + 1);
    if (!b) return 0;
    s->buf = b;
    memcpy(s->buf + s->len, p, add);
    s->len += add;
    s->buf[s->len] = '\0';
    char *start = s->buf, *nl;
    while (!s->stop && (nl = strchr(start, '\n'))) {
        *nl = '\0';
        sse_line(s, start);
        start = nl + 1;
    }
    size_t rest = s->len - (size_t)(start - s->buf);
    memmove(s->buf, start, rest);
    s->len = rest;
    return s->stop ? 0 : add;
}

static int sse_run(lsqd *d, long long job, long long last_id, double timeout_s, sse_state *st);

int sse_read(lsqd *d, long long job, long long last_id, int max_events, double timeout_s,
             sse_log *out)
{
    memset(out, 0, sizeof *out);
    sse_state s = {.log = out, .max_events = max_events};
    return sse_run(d, job, last_id, timeout_s, &s);
}

int sse_read_until(lsqd *d, long long job, const char *type, const char *phase,
                   double timeout_s, sse_log *out)
{
    memset(out, 0, sizeof *out);
    sse_state s = {.log = out, .stop_type = type, .stop_phase = phase};
    return sse_run(d, job, 0, timeout_s, &s);
}

static int sse_run(lsqd *d, long long job, long long last_id, double timeout_s, sse_state *st)
{
    sse_state s = *st;
    CURL *c = curl_easy_init();
    char url[256], hdr[64];
    snprintf(url, sizeof url, "%s/api/v1/jobs/%lld/events", d->base, job);
    struct curl_slist *h = NULL;
    if (last_id >= 0) {
        snprintf(hdr, sizeof hdr, "Last-Event-ID: %lld", last_id);
        h = curl_slist_append(h, hdr);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000));
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(s.buf);
    return (int)rc;
}

void sse_log_free(sse_log *log)
{
    for (int i = 0; i < SSE_MAX; i++) {
        json_decref(log->data[i]);
        log->data[i] = NULL;
    }
}

int sse_ids_consecutive(const sse_log *log, long long first)
{
    for (int i = 0; i < log->n; i++)
        if (log->ids[i] != first + i) return 0;
    return 1;
}

pid_t worker_pid(lsqd *d, long long job)
{
    FILE *f = fopen(d->log, "r");
    if (!f) return 0;
    char line[4096];
    pid_t pid = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"msg\":\"job started\"")) continue;
        json_t *j = json_loads(line, 0, NULL);
        if (json_integer_value(json_object_get(j, "job")) == job)
            pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
        json_decref(j);
    }
    fclose(f);
    return pid;
}

void file_sha256(const char *path, char out[65])
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    out[0] = '\0';
    cr_assert(fscanf(p, "%64s", out) == 1);
    pclose(p);
}
