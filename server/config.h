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
    /* datasets (docs/api.md, "Datasets") */
    char datasets_root[PATH_MAX]; /* --datasets-root / LSQD_DATASETS_ROOT: every sub-folder
                                   * is a dataset the operator provides ("" = none) */
    int allow_private_urls; /* --allow-private-urls / LSQD_ALLOW_PRIVATE_URLS: fetch from
                             * loopback, private and link-local addresses too (0) */
    double fetch_timeout_s; /* --fetch-timeout / LSQD_FETCH_TIMEOUT, 900 s for a whole fetch */
    double fetch_low_speed_s; /* --fetch-low-speed / LSQD_FETCH_LOW_SPEED, 60 s below
                               * 1 KiB/s ends a fetch */
    double import_timeout_s; /* --import-timeout / LSQD_IMPORT_TIMEOUT, 1800 s for
                              * `lsq dataset import` */
    unsigned long long max_expanded; /* --max-expanded / LSQD_MAX_EXPANDED, 8 GiB: what a
                                      * dataset archive may expand to */
    /* where jobs run (docs/cluster.md) */
    int executor;           /* --executor / LSQD_EXECUTOR: EXECUTOR_LOCAL (default) or
                             * EXECUTOR_SLURM */
    char slurm_partition[128]; /* --slurm-partition / LSQD_SLURM_PARTITION ("" = the
                                * cluster's default partition) */
    int slurm_time_min;     /* --slurm-time / LSQD_SLURM_TIME, 1440 minutes */
    int slurm_mem_mb;       /* --slurm-mem / LSQD_SLURM_MEM, 4096 MiB */
    double slurm_poll_s;    /* --slurm-poll / LSQD_SLURM_POLL, 2 s between squeue calls */
    double slurm_cmd_timeout_s; /* --slurm-timeout / LSQD_SLURM_TIMEOUT, 30 s for one
                                 * sbatch/squeue/sacct/scancel */
    int slurm_events_http;  /* --slurm-events / LSQD_SLURM_EVENTS: file (0, default) or
                             * http (1): the worker also posts its events to lsqd */
    char slurm_callback[512]; /* --slurm-callback / LSQD_SLURM_CALLBACK: lsqd's base URL as
                               * the nodes reach it ("" = http://LISTEN_HOST:PORT) */
    int auth;               /* --auth / LSQD_AUTH: AUTH_AUTO (tokens beyond loopback),
                             * AUTH_ON, AUTH_OFF (loopback only) */
    char host_allow[1024];  /* --host-allow / LSQD_HOST_ALLOW: more names the Host header
                             * may carry, comma-separated (the listen address,
                             * localhost, 127.0.0.1 and [::1] always may) */
    int max_running_per_user; /* --max-running-per-user, 0 = no limit */
    int max_queued_per_user;  /* --max-queued-per-user, 0 = no limit */
    unsigned long long quota_per_user; /* --quota-per-user: bytes of a user's uploads and
                                        * artifacts, 0 = no limit */
    /* operator caps on a job spec (0: none); a spec beyond one is a 422 */
    int max_threads;        /* --max-threads / LSQD_MAX_THREADS: the spec's threads */
    int max_epochs;         /* --max-epochs / LSQD_MAX_EPOCHS: pretrain.epochs and
                             * train.epochs, each */
    long long max_images;   /* --max-images / LSQD_MAX_IMAGES: training images of a
                             * whole job, images per epoch x (pretrain + train epochs) */
    /* webhooks (docs/api.md, "Webhooks") */
    int webhook_attempts;   /* --webhook-attempts / LSQD_WEBHOOK_ATTEMPTS, 5 */
    double webhook_delay_s; /* --webhook-delay / LSQD_WEBHOOK_DELAY, 1 s before the first
                             * retry, doubled before each next one */
    double webhook_timeout_s; /* --webhook-timeout / LSQD_WEBHOOK_TIMEOUT, 10 s a POST */
    /* connection limits (docs/reliability.md, "Connection limits") */
    int max_connections;    /* --max-connections / LSQD_MAX_CONNECTIONS, 16384 open at once */
    int max_conn_per_ip;    /* --max-connections-per-ip / LSQD_MAX_CONNECTIONS_PER_IP, 0 = none */
    int conn_timeout_s;     /* --conn-timeout / LSQD_CONN_TIMEOUT, 60 s without a byte either
                             * way closes a connection (0 = never) */
    size_t conn_memory;     /* --conn-memory / LSQD_CONN_MEMORY, 32 KiB per connection: the
                             * request head must fit (431 past it) */
    int listen_backlog;     /* --listen-backlog / LSQD_LISTEN_BACKLOG, 1024 */
    double header_timeout_s; /* --header-timeout / LSQD_HEADER_TIMEOUT, 10 s for a whole
                              * request head */
    double body_timeout_s;  /* --body-timeout / LSQD_BODY_TIMEOUT, 10 s: from then on a body
                             * must average --body-min-rate since its head */
    double body_min_rate;   /* --body-min-rate / LSQD_BODY_MIN_RATE, 1024 bytes/s */
} lsqd_config;

enum { AUTH_AUTO, AUTH_ON, AUTH_OFF };

typedef enum { EXECUTOR_LOCAL, EXECUTOR_SLURM, EXECUTOR_COUNT } lsqd_executor;
extern const char *const EXECUTOR_NAMES[];

/* Fills cfg. Returns 0, or -1 after printing a usage message to stderr
 * (unknown flag, bad value); 1 when --help was asked for. */
int config_load(lsqd_config *cfg, int argc, char **argv);

#endif
