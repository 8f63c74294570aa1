/* libmicrohttpd glue: one access handler routes every request through the
 * table of routes.c. Per-request state is created on the first call and freed
 * in the completed callback. JSON bodies are capped (413 before reading
 * further when Content-Length says so) and must say application/json (415). */
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "log.h"

const char *const HTTP_ERR_CODES[] = {
    "malformed_json", "bad_request", "not_found", "method_not_allowed", "conflict",
    "body_too_large", "unsupported_media_type", "invalid_spec", "invalid_value",
    "internal", "queue_full", "unavailable",
};
_Static_assert(sizeof HTTP_ERR_CODES / sizeof *HTTP_ERR_CODES == HERR_COUNT,
               "HTTP_ERR_CODES must name every http_err");
static const unsigned HTTP_ERR_STATUS[] = {
    400, 400, 404, 405, 409, 413, 415, 422, 422, 500, 503, 503,
};
_Static_assert(sizeof HTTP_ERR_STATUS / sizeof *HTTP_ERR_STATUS == HERR_COUNT,
               "HTTP_ERR_STATUS must give every http_err a status");

/* Counters for /metrics: requests by route and status, errors by code. */
#define MAX_ROUTES 48
static const unsigned STATUS_SLOTS[] = {
    200, 201, 202, 204, 304, 400, 404, 405, 409, 413, 415, 422, 500, 503, 0,
};
#define N_STATUS (sizeof STATUS_SLOTS / sizeof *STATUS_SLOTS)
static unsigned long g_requests[MAX_ROUTES + 1][N_STATUS];
static unsigned long g_errors[HERR_COUNT];

static struct MHD_Daemon *g_daemon;
static const lsqd_config *g_cfg;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static void count_request(int route, unsigned status)
{
    size_t slot = N_STATUS - 1;
    for (size_t i = 0; i < N_STATUS - 1; i++)
        if (STATUS_SLOTS[i] == status) slot = i;
    int r = route >= 0 && route < MAX_ROUTES ? route : MAX_ROUTES;
    __atomic_add_fetch(&g_requests[r][slot], 1, __ATOMIC_RELAXED);
}

enum MHD_Result http_reply_response(req *r, unsigned status, struct MHD_Response *resp)
{
    if (!resp) return MHD_NO;
    r->status = status;
    /* counted now, not on completion, so that the next request sees it */
    count_request(r->route, status);
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result http_reply_bytes(req *r, unsigned status, const char *ctype,
                                 const void *data, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return http_reply_response(r, status, resp);
}

enum MHD_Result http_reply_json(req *r, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(body);
    if (!text) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot encode the reply");
    size_t len = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(text); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return http_reply_response(r, status, resp);
}

static enum MHD_Result reply_error_allow(req *r, http_err e, const char *field,
                                         const char *allow, const char *message)
{
    __atomic_add_fetch(&g_errors[e], 1, __ATOMIC_RELAXED);
    json_t *err = json_pack("{s:s,s:s}", "code", HTTP_ERR_CODES[e], "message", message);
    json_object_set_new(err, "field", field && *field ? json_string(field) : json_null());
    json_t *body = json_pack("{s:o}", "error", err);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(text); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    return http_reply_response(r, HTTP_ERR_STATUS[e], resp);
}

enum MHD_Result http_reply_error(req *r, http_err e, const char *field, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply_error_allow(r, e, field, NULL, msg);
}

/* Matches path against pattern segment by segment, capturing {id}/{name}. */
static int match_pattern(const char *pattern, const char *path, req *r)
{
    const char *p = pattern, *u = path;
    while (*p && *u) {
        if (*p != '/' || *u != '/') return 0;
        p++;
        u++;
        const char *pe = strchr(p, '/'), *ue = strchr(u, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        size_t ul = ue ? (size_t)(ue - u) : strlen(u);
        if (pl > 2 && p[0] == '{') {
            if (ul == 0 || ul >= ROUTE_PARAM_MAX) return 0;
            char *dst = !strncmp(p, "{id}", 4) ? r->id_param : r->name_param;
            memcpy(dst, u, ul);
            dst[ul] = '\0';
        } else if (pl != ul || strncmp(p, u, pl)) {
            return 0;
        }
        p += pl;
        u += ul;
    }
    return *p == '\0' && *u == '\0';
}

/* Finds the route; -1 with *allow filled when only the method is wrong,
 * -2 when nothing matches the path. */
static int route_find(req *r, char *allow, size_t cap)
{
    int n;
    const route_def *t = routes_table(&n);
    const char *method = !strcmp(r->method, "HEAD") ? "GET" : r->method;
    allow[0] = '\0';
    int path_ok = 0;
    for (int i = 0; i < n; i++) {
        if (!match_pattern(t[i].pattern, r->url, r)) continue;
        if (!strcmp(t[i].method, method)) return i;
        path_ok = 1;
        size_t len = strlen(allow);
        snprintf(allow + len, cap - len, "%s%s", len ? ", " : "", t[i].method);
    }
    return path_ok ? -1 : -2;
}

static int is_json_type(const char *ct)
{
    if (!ct) return 0;
    while (*ct == ' ') ct++;
    size_t n = strlen("application/json");
    return !strncasecmp(ct, "application/json", n) && (ct[n] == '\0' || ct[n] == ';' ||
                                                       ct[n] == ' ');
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    req *r = *con_cls;
    int n;
    const route_def *table = routes_table(&n);
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->conn = conn;
        r->cfg = g_cfg;
        r->method = method;
        r->url = url;
        r->t0 = now_s();
        char allow[128];
        r->route = route_find(r, allow, sizeof allow);
        if (r->route == -1)
            return reply_error_allow(r, HERR_METHOD_NOT_ALLOWED, NULL, allow,
                                     "method not allowed on this path");
        if (r->route < 0)
            return http_reply_error(r, HERR_NOT_FOUND, NULL, "no route for %s", url);
        if (strstr(table[r->route].pattern, "{id}")) {
            char *end;
            long long id = strtoll(r->id_param, &end, 10);
            if (*end || end == r->id_param || id <= 0)
                return http_reply_error(r, HERR_NOT_FOUND, "id", "no job '%s'", r->id_param);
            r->job_id = id;
        }
        if (table[r->route].json_body) {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_TYPE);
            if (!is_json_type(ct))
                return http_reply_error(r, HERR_UNSUPPORTED_MEDIA, NULL,
                                        "the body must be application/json, not '%s'",
                                        ct ? ct : "(none)");
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > g_cfg->max_body)
                return http_reply_error(r, HERR_BODY_TOO_LARGE, NULL,
                                        "the body is larger than %zu bytes", g_cfg->max_body);
        }
        return MHD_YES;
    }
    if (r->status) return MHD_YES; /* replied early: ignore the rest of the upload */
    if (*upload_data_size) {
        size_t add = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || !table[r->route].json_body) return MHD_YES;
        if (r->len + add > g_cfg->max_body) {
            r->too_large = 1;
            return MHD_YES;
        }
        if (r->len + add + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + add + 1) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, add);
        r->len += add;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->too_large)
        return http_reply_error(r, HERR_BODY_TOO_LARGE, NULL,
                                "the body is larger than %zu bytes", g_cfg->max_body);
    return table[r->route].fn(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req *r = *con_cls;
    if (!r) return;
    if (r->status >= 400) {
        int n;
        const route_def *t = routes_table(&n);
        log_info("request", "{s:s,s:s,s:s,s:i,s:f}", "method", r->method, "path", r->url,
                 "route", r->route >= 0 ? t[r->route].name : "none", "status", (int)r->status,
                 "ms", (now_s() - r->t0) * 1e3);
    }
    free(r->body);
    free(r);
    *con_cls = NULL;
}

int http_start(const lsqd_config *cfg)
{
    g_cfg = cfg;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        log_error("bad listen address (an IPv4 address is expected)", "{s:s}", "host", cfg->host);
        return -1;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    g_daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, NULL,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                                MHD_OPTION_END);
    if (!g_daemon) {
        log_error("cannot listen", "{s:s,s:i}", "host", cfg->host, "port", cfg->port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? (int)info->port : cfg->port;
}

void http_quiesce(void)
{
    if (g_daemon) MHD_quiesce_daemon(g_daemon);
}

void http_stop(void)
{
    if (g_daemon) MHD_stop_daemon(g_daemon);
    g_daemon = NULL;
}

void http_metrics_write(FILE *f)
{
    int n;
    const route_def *t = routes_table(&n);
    fputs("# HELP lsqd_http_requests_total HTTP requests by route and status.\n"
          "# TYPE lsqd_http_requests_total counter\n", f);
    for (int i = 0; i <= MAX_ROUTES; i++) {
        if (i < MAX_ROUTES && i >= n) continue;
        for (size_t s = 0; s < N_STATUS; s++) {
            unsigned long c = __atomic_load_n(&g_requests[i][s], __ATOMIC_RELAXED);
            if (!c) continue;
            char status[16];
            if (STATUS_SLOTS[s]) snprintf(status, sizeof status, "%u", STATUS_SLOTS[s]);
            else snprintf(status, sizeof status, "other");
            fprintf(f, "lsqd_http_requests_total{route=\"%s\",status=\"%s\"} %lu\n",
                    i < MAX_ROUTES ? t[i].name : "none", status, c);
        }
    }
    fputs("# HELP lsqd_errors_total Error replies by error code.\n"
          "# TYPE lsqd_errors_total counter\n", f);
    for (int e = 0; e < HERR_COUNT; e++)
        fprintf(f, "lsqd_errors_total{code=\"%s\"} %lu\n", HTTP_ERR_CODES[e],
                __atomic_load_n(&g_errors[e], __ATOMIC_RELAXED));
}

void http_print_routes(FILE *f)
{
    int n;
    const route_def *t = routes_table(&n);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "method", t[i].method,
                                             "path", t[i].pattern, "name", t[i].name));
    json_t *doc = json_pack("{s:o}", "routes", arr);
    json_dumpf(doc, f, JSON_INDENT(2));
    json_decref(doc);
    fputc('\n', f);
}
