/* The libmicrohttpd daemon: one access handler routes every request through
 * the table of routes.c. Per-request state is created on the first call and freed
 * in the completed callback. JSON bodies are capped (413 before reading
 * further when Content-Length says so) and must say application/json (415);
 * uploaded files are streamed to disk under their own cap; a route may take
 * either, told apart by the Content-Type (BODY_FILE_OR_JSON). Before any of
 * it, auth.h's checks: the Host header (421) on every path, then the token
 * and the owner of the object the path names. Calls that may change state
 * are logged with their user when they end. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "reply.h"
#include "routes.h"

static struct MHD_Daemon *g_daemon;
static const lsqd_config *g_cfg;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
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


/* ------------------------------------------------------------- uploads */

static int is_type(const char *ct, const char *want)
{
    if (!ct) return 0;
    while (*ct == ' ') ct++;
    size_t n = strlen(want);
    return !strncasecmp(ct, want, n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The first call of a BODY_FILE request: checks the type and the announced
 * length, then opens the file the body streams into. */
static enum MHD_Result upload_begin(req *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!is_type(ct, "application/octet-stream"))
        return http_reply_error(r, HERR_UNSUPPORTED_MEDIA, NULL,
                                "the body must be the file, as application/octet-stream, "
                                "not '%s'", ct ? ct : "(none)");
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > g_cfg->max_upload)
        return http_reply_error(r, HERR_BODY_TOO_LARGE, NULL,
                                "the file is larger than %llu bytes (--max-upload)",
                                g_cfg->max_upload);
    enum MHD_Result res;
    if (cl && strtoull(cl, NULL, 10) > 0 &&
        auth_quota_or_reply(r, strtoull(cl, NULL, 10), &res))
        return res;  /* past the owner's quota: refused before it is read */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s/uploads", PATH_MAX - 16, g_cfg->data);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot create %s: %s", "uploads",
                                strerror(errno));
    snprintf(r->upload_path, sizeof r->upload_path, "%.*s/.part-XXXXXX", PATH_MAX - 32, dir);
    r->upload_fd = mkostemp(r->upload_path, O_CLOEXEC);
    if (r->upload_fd < 0) {
        r->upload_path[0] = '\0';
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the upload: %s",
                                strerror(errno));
    }
    sha256_init(&r->upload_sha);
    return MHD_YES;
}

static void upload_chunk(req *r, const char *data, size_t n)
{
    if (r->too_large || r->upload_failed) return;
    if (r->upload_bytes + n > g_cfg->max_upload) {
        r->too_large = 1;
        http_upload_drop(r);
        return;
    }
    sha256_update(&r->upload_sha, data, n);
    r->upload_bytes += n;
    while (n) {
        ssize_t w = write(r->upload_fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            r->upload_failed = 1;
            r->upload_errno = w < 0 ? errno : EIO;
            http_upload_drop(r);
            return;
        }
        data += w;
        n -= (size_t)w;
    }
}

/* The end of the body: 0 with the file complete (fd closed, sha256 set), or
 * -1 after replying. */
static int upload_end(req *r)
{
    if (r->too_large) {
        http_reply_error(r, HERR_BODY_TOO_LARGE, NULL,
                         "the file is larger than %llu bytes (--max-upload)", g_cfg->max_upload);
        return -1;
    }
    if (r->upload_failed || r->upload_fd < 0) {
        http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the upload: %s",
                         strerror(r->upload_failed ? r->upload_errno : EBADF));
        return -1;
    }
    int rc = fsync(r->upload_fd) != 0 ? errno : 0;
    if (close(r->upload_fd) != 0 && !rc) rc = errno;
    r->upload_fd = -1;
    if (rc) {
        http_upload_drop(r);
        http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the upload: %s", strerror(rc));
        return -1;
    }
    unsigned char d[32];
    sha256_final(&r->upload_sha, d);
    sha256_hex(d, r->upload_sha256);
    return 0;
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
        r->upload_fd = -1;
        r->method = method;
        r->url = url;
        r->t0 = now_s();
        r->route = -1;
        enum MHD_Result res;
        /* before anything else, on every path: a browser led here by a
         * name that is not lsqd's (DNS rebinding) gets nothing */
        if (auth_host_or_reply(r, &res)) return res;
        char allow[128];
        r->route = route_find(r, allow, sizeof allow);
        if (!strcmp(method, "OPTIONS") && r->route != -2) {
            /* a CORS preflight gets the methods and no Access-Control-*
             * header: browsers then refuse other origins' requests */
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (!resp) return MHD_NO;
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
            return http_reply_response(r, 204, resp);
        }
        if (r->route == -1)
            return http_reply_error_allow(r, HERR_METHOD_NOT_ALLOWED, NULL, allow,
                                          "method not allowed on this path");
        if (r->route < 0)
            return http_reply_error(r, HERR_NOT_FOUND, NULL, "no route for %s", url);
        if (strstr(table[r->route].pattern, "{id}")) {
            char *end;
            long long id = strtoll(r->id_param, &end, 10);
            if (*end || end == r->id_param || id <= 0) {
                /* "/api/v1/models/{id}..." -> "model" */
                const char *p = strstr(table[r->route].pattern, "/{id}"), *q = p;
                while (q > table[r->route].pattern && q[-1] != '/') q--;
                int len = (int)(p - q) - (p > q && p[-1] == 's');
                return http_reply_error(r, HERR_NOT_FOUND, "id", "no %.*s '%s'", len, q,
                                        r->id_param);
            }
            r->job_id = id;
        }
        if (auth_user_or_reply(r, &table[r->route], &res) ||
            auth_owner_or_reply(r, &table[r->route], &res))
            return res;
        route_body body = table[r->route].body;
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_TYPE);
        if (body == BODY_FILE_OR_JSON) {
            if (!is_type(ct, "application/json") && !is_type(ct, "application/octet-stream"))
                return http_reply_error(r, HERR_UNSUPPORTED_MEDIA, NULL,
                                        "the body must be a file (application/octet-stream) "
                                        "or JSON (application/json), not '%s'",
                                        ct ? ct : "(none)");
            body = is_type(ct, "application/json") ? BODY_JSON : BODY_FILE;
        }
        r->body_kind = body;
        if (body == BODY_JSON) {
            if (!is_type(ct, "application/json"))
                return http_reply_error(r, HERR_UNSUPPORTED_MEDIA, NULL,
                                        "the body must be application/json, not '%s'",
                                        ct ? ct : "(none)");
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > g_cfg->max_body)
                return http_reply_error(r, HERR_BODY_TOO_LARGE, NULL,
                                        "the body is larger than %zu bytes", g_cfg->max_body);
        } else if (body == BODY_FILE) {
            return upload_begin(r);
        }
        return MHD_YES;
    }
    if (r->status) return MHD_YES; /* replied early: ignore the rest of the upload */
    if (r->body_kind == BODY_FILE) {
        if (*upload_data_size) {
            upload_chunk(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (upload_end(r)) return r->status ? MHD_YES : MHD_NO;
        return table[r->route].fn(r);
    }
    if (*upload_data_size) {
        size_t add = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || r->body_kind != BODY_JSON) return MHD_YES;
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
    int n;
    const route_def *t = routes_table(&n);
    if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD") && strcmp(r->method, "OPTIONS")) {
        /* every call that may change state, whoever made it and however
         * it ended: the audit trail */
        int64_t id = r->job_id ? r->job_id : r->object_id;
        log_info("audit", "{s:s,s:s,s:s,s:s,s:i,s:o}", "user",
                 r->user.name[0] ? r->user.name : "-", "method", r->method, "path", r->url,
                 "route", r->route >= 0 ? t[r->route].name : "none", "status", (int)r->status,
                 "id", id > 0 ? json_integer(id) : json_null());
    } else if (r->status >= 400) {
        log_info("request", "{s:s,s:s,s:s,s:i,s:f}", "method", r->method, "path", r->url,
                 "route", r->route >= 0 ? t[r->route].name : "none", "status", (int)r->status,
                 "ms", (now_s() - r->t0) * 1e3);
    }
    http_upload_drop(r);
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
    int port = info ? (int)info->port : cfg->port;
    auth_set_port(port);
    return port;
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
