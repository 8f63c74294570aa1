/* lsqd configuration: defaults, then environment variables, then flags. */
#ifndef LSQD_CONFIG_H
#define LSQD_CONFIG_H

#include <limits.h>
#include <stddef.h>

typedef struct {
    char host[64];          /* --listen / LSQD_LISTEN host part, 127.0.0.1 */
    int port;               /* 8080; 0 = ephemeral (the bound port is logged) */
    char data[PATH_MAX];    /* --data / LSQD_DATA, ./var */
    int workers;            /* --workers / LSQD_WORKERS, 1 */
    int max_queue;          /* --max-queue / LSQD_MAX_QUEUE, 100 queued jobs */
    size_t max_body;        /* --max-body / LSQD_MAX_BODY, 1 MiB (JSON bodies) */
    unsigned long long max_upload; /* --max-upload / LSQD_MAX_UPLOAD, 256 MiB (files) */
    int max_attempts;       /* --max-attempts / LSQD_MAX_ATTEMPTS, 3 */
    double grace_s;         /* --grace / LSQD_GRACE, 10 s from SIGTERM to SIGKILL */
    double heartbeat_s;     /* --heartbeat / LSQD_HEARTBEAT, 15 s between SSE pings */
    int http_threads;       /* --http-threads / LSQD_HTTP_THREADS, 4 */
    char lsq_bin[PATH_MAX]; /* --lsq / LSQ_BIN, the lsq next to lsqd */
    char web_dir[PATH_MAX]; /* --web / LSQD_WEB, the dashboard folder ("" = none) */
    int print_routes;       /* --routes: print the route table as JSON and exit */
} lsqd_config;

/* Fills cfg. Returns 0, or -1 after printing a usage message to stderr
 * (unknown flag, bad value); 1 when --help was asked for. */
int config_load(lsqd_config *cfg, int argc, char **argv);

#endif
