/* The HTTP daemon on libmicrohttpd: it parses each request, finds its route
 * in the table of routes.c and calls the handler (reply.h has the request
 * state and the replies the handlers use). */
#ifndef LSQD_HTTP_H
#define LSQD_HTTP_H

#include <stdio.h>

#include "config.h"

/* Starts the daemon; returns the bound port, or -1. */
int http_start(const lsqd_config *cfg);
/* Stops accepting new connections (the open ones continue). */
void http_quiesce(void);
void http_stop(void);
/* Why lsqd closed a connection itself, for /metrics. */
typedef enum { CUT_HEADER_TIMEOUT, CUT_BODY_RATE, CUT_IDLE_TIMEOUT, CUT_COUNT } http_cut_reason;
extern const char *const CUT_REASON_NAMES[];
/* Writes lsqd_connections_cut_total{reason} and lsqd_connections_open. */
void http_metrics_write(FILE *f);
/* Prints the route table as JSON ({"routes":[{"method","path"}]}). */
void http_print_routes(FILE *f);

#endif
