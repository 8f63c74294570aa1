/* Replies of lsqd's HTTP layer (reply.h): JSON, bytes and the one error
 * shape, each counted by route and status for /metrics. */
#include "reply.h"

#include <stdarg.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

const char *const HTTP_ERR_CODES[] = {
    "malformed_json", "bad_request", "not_found", "method_not_allowed", "conflict",
    "body_too_large", "unsupported_media_type", "invalid_spec", "invalid_value",
    "invalid_model", "unauthorized", "forbidden", "misdirected_request", "limit_reached",
    "internal", "queue_full", "unavailable", "database_busy", "storage_full", "storage_error",
};
_Static_assert(sizeof HTTP_ERR_CODES / sizeof *HTTP_ERR_CODES == HERR_COUNT,
               "HTTP_ERR_CODES must name every http_err");
static const unsigned HTTP_ERR_STATUS[] = {
    400, 400, 404, 405, 409, 413, 415, 422, 422, 422, 401, 403, 421, 429, 500, 503, 503,
    503, 507, 503,
};
_Static_assert(sizeof HTTP_ERR_STATUS / sizeof *HTTP_ERR_STATUS == HERR_COUNT,
               "HTTP_ERR_STATUS must give every http_err a status");

/* Counters for /metrics: requests by route and status, errors by code. */
#define MAX_ROUTES 48
static const unsigned STATUS_SLOTS[] = {
    200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 421, 422, 429, 500, 503, 507, 0,
};
#define N_STATUS (sizeof STATUS_SLOTS / sizeof *STATUS_SLOTS)
static unsigned long g_requests[MAX_ROUTES + 1][N_STATUS];
static unsigned long g_errors[HERR_COUNT];

static void count_request(int route, unsigned status)
{
    size_t slot = N_STATUS - 1;
    for (size_t i = 0; i < N_STATUS - 1; i++)
        if (STATUS_SLOTS[i] == status) slot = i;
    int r = route >= 0 && route < MAX_ROUTES ? route : MAX_ROUTES;
    __atomic_add_fetch(&g_requests[r][slot], 1, __ATOMIC_RELAXED);
}

void http_upload_drop(req *r)
{
    if (r->upload_fd >= 0) close(r->upload_fd);
    r->upload_fd = -1;
    if (r->upload_path[0]) unlink(r->upload_path);
    r->upload_path[0] = '\0';
}

enum MHD_Result http_reply_response(req *r, unsigned status, struct MHD_Response *resp)
{
    if (!resp) return MHD_NO;
    r->status = status;
    /* an upload the route did not keep goes before the client hears back,
     * so that a refused file is gone by the time the refusal arrives */
    http_upload_drop(r);
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

enum MHD_Result http_reply_json_location(req *r, unsigned status, json_t *body,
                                         const char *location)
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
    if (location) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
        const char *slash = strrchr(location, '/');
        if (slash) r->object_id = strtoll(slash + 1, NULL, 10);
    }
    return http_reply_response(r, status, resp);
}

enum MHD_Result http_reply_json(req *r, unsigned status, json_t *body)
{
    return http_reply_json_location(r, status, body, NULL);
}

enum MHD_Result http_reply_error_allow(req *r, http_err e, const char *field, const char *allow,
                                       const char *message)
{
    return http_reply_error_header(r, e, field, allow ? MHD_HTTP_HEADER_ALLOW : NULL, allow,
                                   message);
}

/* A server fault whose cause is the store (this request's SQLite call
 * failed busy, full or with an I/O error) is replied with the store's own
 * code, so that a client can tell "retry later" from "lsqd is broken". */
static http_err store_cause(const req *r, http_err e, const char **why)
{
    if (e != HERR_INTERNAL && e != HERR_UNAVAILABLE) return e;
    switch (store_fault_since(r->t0)) {
    case STORE_FAULT_BUSY:
        *why = "the database stayed locked by another connection beyond its busy timeout "
               "(" STORE_BUSY_TIMEOUT_TEXT "); retry later";
        return HERR_DATABASE_BUSY;
    case STORE_FAULT_FULL:
        *why = "the database's disk is full (SQLITE_FULL); nothing was stored";
        return HERR_STORAGE_FULL;
    case STORE_FAULT_IO:
        *why = "the database file cannot be opened, read or written (moved, deleted, "
               "SQLITE_IOERR); nothing was stored";
        return HERR_STORAGE_ERROR;
    default:
        return e;
    }
}

/* The length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms,
 * no surrogates, nothing past U+10FFFF), 0 when there is none. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

enum MHD_Result http_reply_error_header(req *r, http_err e, const char *field,
                                        const char *hname, const char *hvalue,
                                        const char *message)
{
    const char *why = NULL;
    char full[800];
    e = store_cause(r, e, &why);
    if (why) {
        snprintf(full, sizeof full, "%s: %s", message, why);
        message = full;
    }
    __atomic_add_fetch(&g_errors[e], 1, __ATOMIC_RELAXED);
    /* messages quote what the client sent (a path, a name) and may be cut
     * inside a character: a JSON string must be UTF-8, so each byte that is
     * not part of a valid sequence becomes '?' (else the reply could not be
     * encoded and the client got no answer at all) */
    char *text_msg = strdup(message);
    if (!text_msg) return MHD_NO;
    for (unsigned char *p = (unsigned char *)text_msg; *p;) {
        size_t n = utf8_seq(p);
        if (n) p += n;
        else *p++ = '?';
    }
    json_t *err = json_pack("{s:s,s:s}", "code", HTTP_ERR_CODES[e], "message", text_msg);
    free(text_msg);
    json_object_set_new(err, "field", field && *field ? json_string(field) : json_null());
    json_t *body = json_pack("{s:o}", "error", err);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(text); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (hname) MHD_add_response_header(resp, hname, hvalue);
    return http_reply_response(r, HTTP_ERR_STATUS[e], resp);
}

enum MHD_Result http_reply_error(req *r, http_err e, const char *field, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return http_reply_error_allow(r, e, field, NULL, msg);
}

static void (*g_metrics_hook)(FILE *f);

void reply_metrics_hook(void (*fn)(FILE *f)) { g_metrics_hook = fn; }

void reply_metrics_write(FILE *f, const route_def *t, int n)
{
    if (g_metrics_hook) g_metrics_hook(f);
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
