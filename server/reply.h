/* Requests and replies of lsqd's HTTP layer: per-request state, the route
 * definition, the wire error codes with their one status table, the reply
 * helpers every handler uses, and the counters behind /metrics. The daemon
 * (http.c) and the handlers (routes.c, sse.c, static.c) all sit on this
 * unit; it knows neither of them. */
#ifndef LSQD_REPLY_H
#define LSQD_REPLY_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "core/sha256.h"
#include "store.h"

/* Wire error codes; the HTTP status of each is in one table (reply.c). 4xx
 * and 5xx never share a code. */
typedef enum {
    HERR_MALFORMED_JSON,     /* 400 */
    HERR_BAD_REQUEST,        /* 400 */
    HERR_NOT_FOUND,          /* 404 */
    HERR_METHOD_NOT_ALLOWED, /* 405 + Allow */
    HERR_CONFLICT,           /* 409 */
    HERR_BODY_TOO_LARGE,     /* 413 */
    HERR_UNSUPPORTED_MEDIA,  /* 415 */
    HERR_INVALID_SPEC,       /* 422: the job spec, with "field" */
    HERR_INVALID_VALUE,      /* 422: any other value, with "field" */
    HERR_INVALID_MODEL,      /* 422: an uploaded model the importer refuses */
    HERR_UNAUTHORIZED,       /* 401 + WWW-Authenticate: no token, or not a valid one */
    HERR_FORBIDDEN,          /* 403: the caller may not do this (admin only) */
    HERR_MISDIRECTED,        /* 421: a Host header that is not one of lsqd's names */
    HERR_LIMIT,              /* 429: a per-user limit of the operator */
    HERR_INTERNAL,           /* 500 */
    HERR_QUEUE_FULL,         /* 503 */
    HERR_UNAVAILABLE,        /* 503 */
    HERR_DATABASE_BUSY,      /* 503: the store stayed locked beyond its busy timeout */
    HERR_STORAGE_FULL,       /* 507: a write to the store failed with SQLITE_FULL */
    HERR_STORAGE_ERROR,      /* 503: the store failed with SQLITE_IOERR (or kin) */
    HERR_COUNT
} http_err;
extern const char *const HTTP_ERR_CODES[];

#define ROUTE_PARAM_MAX 256

typedef struct req req;
typedef enum MHD_Result (*route_fn)(req *r);

/* What a route's request body is. */
typedef enum {
    BODY_NONE,               /* ignored */
    BODY_JSON,               /* application/json, at most max_body bytes, in memory */
    BODY_FILE,               /* application/octet-stream, at most max_upload bytes,
                              * streamed to a file under DATA/uploads with its
                              * sha256 computed on the way */
    BODY_FILE_OR_JSON,       /* either of the two, told by the Content-Type:
                              * application/json is read as BODY_JSON,
                              * application/octet-stream as BODY_FILE, anything
                              * else is 415; req.body_kind says which came */
} route_body;

/* Who may call a route when lsqd checks tokens (auth.h). */
typedef enum {
    ACCESS_USER,             /* any valid token (the default) */
    ACCESS_PUBLIC,           /* no token: /healthz and the dashboard's files */
    ACCESS_ADMIN,            /* an admin's token; 403 for others */
} route_access;

typedef struct {
    const char *method;
    const char *pattern;     /* "/api/v1/jobs/{id}/artifacts/{name}" */
    const char *name;        /* label in /metrics and logs */
    route_fn fn;
    route_body body;
    route_access access;
} route_def;

struct req {
    struct MHD_Connection *conn;
    const lsqd_config *cfg;
    const char *method;
    const char *url;
    int route;               /* index in the table, -1: none */
    char id_param[ROUTE_PARAM_MAX];   /* {id} */
    char name_param[ROUTE_PARAM_MAX]; /* {name} */
    int64_t job_id;          /* {id} as a number, when the pattern has one */
    route_body body_kind;    /* the body as read: BODY_NONE, BODY_JSON or BODY_FILE */
    char *body;              /* NUL-terminated */
    size_t len, cap;
    int too_large;
    /* BODY_FILE: the upload, complete when the handler runs. A handler that
     * keeps the file renames it and clears upload_path; otherwise it is
     * removed when the request ends. */
    int upload_fd;
    char upload_path[PATH_MAX];
    unsigned long long upload_bytes;
    char upload_sha256[65];
    sha256_ctx upload_sha;
    int upload_failed;       /* a write failed (errno in upload_errno) */
    int upload_errno;
    store_user user;         /* the caller: a token's user, or the local user
                              * (an admin) when lsqd checks no tokens */
    int64_t object_id;       /* the object created (from Location), for the log */
    unsigned status;         /* the status replied, for /metrics */
    double t0;
};

/* Replies (each returns what the access handler returns). */
enum MHD_Result http_reply_json(req *r, unsigned status, json_t *body); /* steals body */
/* As http_reply_json, with a Location header (201 Created). */
enum MHD_Result http_reply_json_location(req *r, unsigned status, json_t *body,
                                         const char *location);
enum MHD_Result http_reply_error(req *r, http_err e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Copies the bytes. */
enum MHD_Result http_reply_bytes(req *r, unsigned status, const char *ctype,
                                 const void *data, size_t len);
/* Queues a prepared response, counting the status; destroys it. */
/* Closes and removes the request's upload file unless a route kept it
 * (cleared upload_path). Every reply calls it; so does the end of a request. */
void http_upload_drop(req *r);

enum MHD_Result http_reply_response(req *r, unsigned status, struct MHD_Response *resp);
/* As http_reply_error, with an Allow header (405). */
enum MHD_Result http_reply_error_allow(req *r, http_err e, const char *field, const char *allow,
                                       const char *message);
/* As http_reply_error, with one more header (hname NULL: none). */
enum MHD_Result http_reply_error_header(req *r, http_err e, const char *field,
                                        const char *hname, const char *hvalue,
                                        const char *message);

/* Writes the request counters of a route table (by route and status) and
 * the error counters (by code) as Prometheus text. */
void reply_metrics_write(FILE *f, const route_def *table, int n);
/* Lets the daemon (http.c) add its connection figures to /metrics without
 * the handlers depending on it. */
void reply_metrics_hook(void (*fn)(FILE *f));

#endif
