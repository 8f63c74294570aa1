/* The HTTP layer on libmicrohttpd: the daemon, per-request state, the route
 * table, JSON replies and the one error table. Handlers (routes.c) parse the
 * request, call the store or the scheduler, and map the result to a reply. */
#ifndef LSQD_HTTP_H
#define LSQD_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

/* Wire error codes; the HTTP status of each is in one table (http.c). 4xx
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
    HERR_INTERNAL,           /* 500 */
    HERR_QUEUE_FULL,         /* 503 */
    HERR_UNAVAILABLE,        /* 503 */
    HERR_COUNT
} http_err;
extern const char *const HTTP_ERR_CODES[];

#define ROUTE_PARAM_MAX 256

typedef struct req req;
typedef enum MHD_Result (*route_fn)(req *r);

typedef struct {
    const char *method;
    const char *pattern;     /* "/api/v1/jobs/{id}/artifacts/{name}" */
    const char *name;        /* label in /metrics and logs */
    route_fn fn;
    int json_body;           /* 1: the request carries a JSON body */
} route_def;

/* The whole route table (routes.c). */
const route_def *routes_table(int *n);

struct req {
    struct MHD_Connection *conn;
    const lsqd_config *cfg;
    const char *method;
    const char *url;
    int route;               /* index in the table, -1: none */
    char id_param[ROUTE_PARAM_MAX];   /* {id} */
    char name_param[ROUTE_PARAM_MAX]; /* {name} */
    int64_t job_id;          /* {id} as a number, when the pattern has one */
    char *body;              /* NUL-terminated */
    size_t len, cap;
    int too_large;
    unsigned status;         /* the status replied, for /metrics */
    double t0;
};

/* Replies (each returns what the access handler returns). */
enum MHD_Result http_reply_json(req *r, unsigned status, json_t *body); /* steals body */
enum MHD_Result http_reply_error(req *r, http_err e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Copies the bytes. */
enum MHD_Result http_reply_bytes(req *r, unsigned status, const char *ctype,
                                 const void *data, size_t len);
/* Queues a prepared response, counting the status; destroys it. */
enum MHD_Result http_reply_response(req *r, unsigned status, struct MHD_Response *resp);

/* Starts the daemon; returns the bound port, or -1. */
int http_start(const lsqd_config *cfg);
/* Stops accepting new connections (the open ones continue). */
void http_quiesce(void);
void http_stop(void);
/* Writes the counters as Prometheus text. */
void http_metrics_write(FILE *f);
/* Prints the route table as JSON ({"routes":[{"method","path"}]}). */
void http_print_routes(FILE *f);

/* SSE stream of a job's events (sse.c). after: the last seq the client has. */
enum MHD_Result sse_reply(req *r, int64_t job_id, int64_t after);

#endif
