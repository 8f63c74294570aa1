/* The libmicrohttpd daemon: one access handler routes every request through
 * the table of routes.c. Per-request state is created on the first call and freed
 * in the completed callback. JSON bodies are capped (413 before reading
 * further when Content-Length says so) and must say application/json (415);
 * uploaded files are streamed to disk under their own cap; a route may take
 * either, told apart by the Content-Type (BODY_FILE_OR_JSON). Before any of
 * it, auth.h's checks: the Host header (421) on every path, then the token
 * and the owner of the object the path names. Calls that may change state
 * are logged with their user when they end.
 *
 * Slow clients: libmicrohttpd closes a connection idle for --conn-timeout,
 * but any byte resets that clock, so a client trickling its head or its body
 * would hold a connection (and its memory) for ever. Every connection is
 * therefore tracked from accept to close with the phase its request is in,
 * and a reaper thread shuts down the socket of one whose head is not complete
 * within --header-timeout, or whose body averages less than --body-min-rate
 * once --body-timeout has passed; libmicrohttpd then sees the socket end and
 * closes it as it would any broken one. A reply being sent (an SSE stream
 * above all) is never judged by these rules. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "reply.h"
#include "routes.h"

static struct MHD_Daemon *g_daemon;
static const lsqd_config *g_cfg;

/* ------------------------------------------------- slow-client reaper */

typedef enum { CONN_HEAD, CONN_BODY, CONN_REPLY, CONN_IDLE } conn_phase;

const char *const CUT_REASON_NAMES[] = {"header_timeout", "body_rate", "idle_timeout"};
_Static_assert(sizeof CUT_REASON_NAMES / sizeof *CUT_REASON_NAMES == CUT_COUNT,
               "one name per cut reason");
static unsigned long g_cut[CUT_COUNT];

/* One open connection, from accept (NOTIFY_STARTED) to close
 * (NOTIFY_CLOSED, which libmicrohttpd calls before it closes the socket:
 * under g_conn_mu the fd is always still this connection's). */
typedef struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    conn_phase phase;
    double since;                  /* when the phase began (monotonic s) */
    unsigned long long body_bytes; /* of the request in CONN_BODY */
    int cut;                       /* shut down by the reaper already */
} conn_track;

static pthread_mutex_t g_conn_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_conn_cv = PTHREAD_COND_INITIALIZER;
static conn_track g_conns = {&g_conns, &g_conns, -1, CONN_IDLE, 0, 0, 0};
static pthread_t g_reaper;
static int g_reaper_on, g_reaper_stop;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_track *c = calloc(1, sizeof *c);
        if (!c || !ci) { free(c); return; } /* untracked: only the idle timeout applies */
        c->fd = ci->connect_fd;
        c->phase = CONN_HEAD;
        c->since = mono_s();
        pthread_mutex_lock(&g_conn_mu);
        c->next = g_conns.next;
        c->prev = &g_conns;
        g_conns.next->prev = c;
        g_conns.next = c;
        pthread_mutex_unlock(&g_conn_mu);
        *socket_ctx = c;
        return;
    }
    conn_track *c = *socket_ctx;
    if (!c) return;
    pthread_mutex_lock(&g_conn_mu);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    pthread_mutex_unlock(&g_conn_mu);
    free(c);
    *socket_ctx = NULL;
}

static conn_track *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Moves the connection's request to a phase; bytes of body are added. */
static void conn_phase_set(struct MHD_Connection *conn, conn_phase phase, size_t body_bytes)
{
    conn_track *c = conn_of(conn);
    if (!c) return;
    pthread_mutex_lock(&g_conn_mu);
    if (c->phase != phase) {
        c->phase = phase;
        c->since = mono_s();
        c->body_bytes = 0;
    }
    c->body_bytes += body_bytes;
    pthread_mutex_unlock(&g_conn_mu);
}

/* The rule a connection breaks now, or -1. A kept-alive connection between
 * requests (CONN_IDLE) cannot be told apart from one trickling its next head,
 * so it gets the idle timeout and then the head's deadline on top. */
static int conn_breaks(const conn_track *c, double now)
{
    double age = now - c->since;
    switch (c->phase) {
    case CONN_HEAD:
        return age > g_cfg->header_timeout_s ? CUT_HEADER_TIMEOUT : -1;
    case CONN_IDLE:
        return g_cfg->conn_timeout_s > 0 &&
                       age > g_cfg->conn_timeout_s + g_cfg->header_timeout_s
                   ? CUT_HEADER_TIMEOUT
                   : -1;
    case CONN_BODY:
        return age > g_cfg->body_timeout_s && (double)c->body_bytes < g_cfg->body_min_rate * age
                   ? CUT_BODY_RATE
                   : -1;
    case CONN_REPLY:
        return -1;
    }
    return -1;
}

static void *reaper_main(void *arg)
{
    (void)arg;
    /* a tenth of the shortest deadline, so that a cut comes at most 10%
     * late, and no more often than every 50 ms */
    double step = g_cfg->header_timeout_s < g_cfg->body_timeout_s ? g_cfg->header_timeout_s
                                                                     : g_cfg->body_timeout_s;
    step = step / 10 < 0.05 ? 0.05 : step / 10 > 1 ? 1 : step / 10;
    pthread_mutex_lock(&g_conn_mu);
    while (!g_reaper_stop) {
        double now = mono_s();
        for (conn_track *c = g_conns.next; c != &g_conns; c = c->next) {
            if (c->cut) continue;
            int why = conn_breaks(c, now);
            if (why < 0) continue;
            /* the socket ends; libmicrohttpd sees it and closes the
             * connection on its own thread, freeing what it holds */
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
            __atomic_add_fetch(&g_cut[why], 1, __ATOMIC_RELAXED);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long long ns = until.tv_nsec + (long long)(step * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&g_conn_cv, &g_conn_mu, &until);
    }
    pthread_mutex_unlock(&g_conn_mu);
    return NULL;
}

void http_metrics_write(FILE *f)
{
    fputs("# HELP lsqd_connections_cut_total Connections closed by lsqd for a slow or idle "
          "client.\n# TYPE lsqd_connections_cut_total counter\n", f);
    for (int i = 0; i < CUT_COUNT; i++)
        fprintf(f, "lsqd_connections_cut_total{reason=\"%s\"} %lu\n", CUT_REASON_NAMES[i],
                __atomic_load_n(&g_cut[i], __ATOMIC_RELAXED));
    int open = 0;
    pthread_mutex_lock(&g_conn_mu);
    for (conn_track *c = g_conns.next; c != &g_conns; c = c->next) open++;
    pthread_mutex_unlock(&g_conn_mu);
    fprintf(f, "# HELP lsqd_connections_open HTTP connections open now.\n"
               "# TYPE lsqd_connections_open gauge\nlsqd_connections_open %d\n", open);
}

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
        conn_phase_set(conn, CONN_BODY, 0); /* the head is complete */
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
    conn_phase_set(conn, *upload_data_size ? CONN_BODY : CONN_REPLY, *upload_data_size);
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
    conn_phase_set(conn, CONN_IDLE, 0); /* until the next request's head */
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
        __atomic_add_fetch(&g_cut[CUT_IDLE_TIMEOUT], 1, __ATOMIC_RELAXED);
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

/* Raises the soft RLIMIT_NOFILE so that want connections fit next to the
 * files, the database and the workers' pipes (FD_RESERVE); returns the
 * connection limit that fits, want or less when the hard limit is lower. */
#define FD_RESERVE 256
static unsigned http_fd_budget(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return want;
    rlim_t need = (rlim_t)want + FD_RESERVE;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        struct rlimit up = {cur, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl.rlim_cur = cur;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        unsigned fit = rl.rlim_cur > 2 * FD_RESERVE ? (unsigned)(rl.rlim_cur - FD_RESERVE)
                                                     : (unsigned)(rl.rlim_cur / 2);
        log_info("connections", "{s:s,s:i,s:i}", "note",
                 "the open-file limit is below --max-connections: lowered to fit",
                 "max_connections", (int)fit, "nofile", (int)rl.rlim_cur);
        return fit;
    }
    return want;
}

int http_start(const lsqd_config *cfg)
{
    g_cfg = cfg;
    reply_metrics_hook(http_metrics_write);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        log_error("bad listen address (an IPv4 address is expected)", "{s:s}", "host", cfg->host);
        return -1;
    }
    unsigned max_conn = http_fd_budget((unsigned)cfg->max_connections);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    g_daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, NULL,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout_s,
                                MHD_OPTION_CONNECTION_LIMIT, max_conn,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                (unsigned)cfg->max_conn_per_ip,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, cfg->conn_memory,
                                MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)cfg->listen_backlog,
                                MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                                MHD_OPTION_END);
    if (!g_daemon) {
        log_error("cannot listen", "{s:s,s:i}", "host", cfg->host, "port", cfg->port);
        return -1;
    }
    g_reaper_stop = 0;
    if (pthread_create(&g_reaper, NULL, reaper_main, NULL) != 0) {
        log_error("cannot start the connection reaper", "{s:s}", "error", strerror(errno));
        MHD_stop_daemon(g_daemon);
        g_daemon = NULL;
        return -1;
    }
    g_reaper_on = 1;
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
    if (g_reaper_on) {
        pthread_mutex_lock(&g_conn_mu);
        g_reaper_stop = 1;
        pthread_cond_signal(&g_conn_cv);
        pthread_mutex_unlock(&g_conn_mu);
        pthread_join(g_reaper, NULL);
        g_reaper_on = 0;
    }
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
