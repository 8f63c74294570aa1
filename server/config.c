/* Flags and environment variables of lsqd. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: lsqd [options]\n"
    "  --listen ADDR:PORT   LSQD_LISTEN        (127.0.0.1:8080; port 0 = any free port)\n"
    "  --data DIR           LSQD_DATA          (./var)\n"
    "  --workers N          LSQD_WORKERS       (1)\n"
    "  --max-queue N        LSQD_MAX_QUEUE     (100 queued jobs; 503 past it)\n"
    "  --max-body BYTES     LSQD_MAX_BODY      (1048576; 413 past it)\n"
    "  --max-upload BYTES   LSQD_MAX_UPLOAD    (268435456: an uploaded file; 413 past it)\n"
    "  --max-attempts N     LSQD_MAX_ATTEMPTS  (3 starts of a job across restarts)\n"
    "  --grace SECONDS      LSQD_GRACE         (10; SIGTERM to SIGKILL of a worker)\n"
    "  --heartbeat SECONDS  LSQD_HEARTBEAT     (15; SSE \": ping\" comments)\n"
    "  --http-threads N     LSQD_HTTP_THREADS  (4)\n"
    "  --lsq PATH           LSQ_BIN            (the lsq next to lsqd)\n"
    "  --web DIR            LSQD_WEB           (the dashboard; web/ next to the build)\n"
    "  --datasets-root DIR  LSQD_DATASETS_ROOT (none; every sub-folder is a dataset,\n"
    "                                           registered at start-up)\n"
    "  --allow-private-urls LSQD_ALLOW_PRIVATE_URLS (off; fetch dataset URLs from, and\n"
    "                                           notify webhooks at, loopback, private,\n"
    "                                           link-local addresses)\n"
    "  --fetch-timeout SECONDS  LSQD_FETCH_TIMEOUT   (900; a whole dataset URL fetch)\n"
    "  --fetch-low-speed SECONDS LSQD_FETCH_LOW_SPEED (60; below 1 KiB/s that long ends it)\n"
    "  --import-timeout SECONDS LSQD_IMPORT_TIMEOUT  (1800; lsq dataset import)\n"
    "  --max-expanded BYTES LSQD_MAX_EXPANDED  (8589934592: what a dataset archive may\n"
    "                                           expand to; a bomb is refused past it)\n"
    "  --max-threads N      LSQD_MAX_THREADS   (none; a spec's threads, 422 past it)\n"
    "  --max-epochs N       LSQD_MAX_EPOCHS    (none; pretrain.epochs and train.epochs)\n"
    "  --max-images N       LSQD_MAX_IMAGES    (none; a job's training images: images\n"
    "                                           per epoch x all its epochs)\n"
    "  --webhook-attempts N LSQD_WEBHOOK_ATTEMPTS (5 POSTs of a job's notify_url)\n"
    "  --webhook-delay SECONDS LSQD_WEBHOOK_DELAY (1; before the first retry, doubled\n"
    "                                           after each)\n"
    "  --webhook-timeout SECONDS LSQD_WEBHOOK_TIMEOUT (10; one POST)\n"
    "  --executor NAME      LSQD_EXECUTOR      (local: child processes here; slurm:\n"
    "                                           sbatch jobs, docs/cluster.md)\n"
    "  --slurm-partition P  LSQD_SLURM_PARTITION (the cluster's default partition)\n"
    "  --slurm-time MIN     LSQD_SLURM_TIME    (1440 minutes of wall time per job)\n"
    "  --slurm-mem MIB      LSQD_SLURM_MEM     (4096 MiB of memory per job)\n"
    "  --slurm-poll SECONDS LSQD_SLURM_POLL    (2; between squeue calls)\n"
    "  --slurm-timeout SECONDS LSQD_SLURM_TIMEOUT (30; one Slurm command)\n"
    "  --slurm-events file|http LSQD_SLURM_EVENTS (file: lsqd reads the events file on\n"
    "                                           the shared folder; http: the worker posts them)\n"
    "  --slurm-callback URL LSQD_SLURM_CALLBACK (http://LISTEN: lsqd as the nodes reach it)\n"
    "  --auth auto|on|off   LSQD_AUTH          (auto: bearer tokens when listening beyond\n"
    "                                           loopback; off is refused beyond loopback)\n"
    "  --host-allow NAME,...  LSQD_HOST_ALLOW  (names the Host header may carry besides the\n"
    "                                           listen address, localhost, 127.0.0.1, [::1])\n"
    "  --max-running-per-user N LSQD_MAX_RUNNING_PER_USER (0 = no limit; 429 past it)\n"
    "  --max-queued-per-user N  LSQD_MAX_QUEUED_PER_USER  (0 = no limit; 429 past it)\n"
    "  --quota-per-user BYTES   LSQD_QUOTA_PER_USER       (0 = no limit: a user's uploads\n"
    "                                           and artifacts; 413 / 429 past it)\n"
    "";
/* Split in two: C11 compilers need not take a literal over 4095 bytes. */
static const char USAGE_TAIL[] =
    "  --max-connections N  LSQD_MAX_CONNECTIONS (16384 open at once; past it new ones\n"
    "                                           wait in the listen backlog)\n"
    "  --max-connections-per-ip N LSQD_MAX_CONNECTIONS_PER_IP (0 = no limit; past it a new\n"
    "                                           connection is closed at once)\n"
    "  --conn-timeout SECONDS LSQD_CONN_TIMEOUT (60; a connection idle that long is closed,\n"
    "                                           0 = never; SSE streams send pings)\n"
    "  --conn-memory BYTES  LSQD_CONN_MEMORY   (32768 per connection; a request head\n"
    "                                           larger than that gets 431)\n"
    "  --listen-backlog N   LSQD_LISTEN_BACKLOG (1024 connections waiting to be accepted)\n"
    "  --header-timeout SECONDS LSQD_HEADER_TIMEOUT (10; a request head not complete by\n"
    "                                           then is cut)\n"
    "  --body-timeout SECONDS LSQD_BODY_TIMEOUT (10; from then on a request body slower\n"
    "                                           on average than --body-min-rate is cut)\n"
    "  --body-min-rate BYTES LSQD_BODY_MIN_RATE (1024 bytes/s)\n"
    "  --routes             print the route table as JSON and exit\n"
    "\n"
    "       lsqd token create --user NAME [--admin] [--data DIR]\n"
    "       lsqd token list [--data DIR]\n"
    "       lsqd token revoke ID [--data DIR]\n";

const char *const EXECUTOR_NAMES[] = {"local", "slurm"};
_Static_assert(sizeof EXECUTOR_NAMES / sizeof *EXECUTOR_NAMES == EXECUTOR_COUNT,
               "one name per executor");

static int parse_listen(lsqd_config *cfg, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v || (size_t)(colon - v) >= sizeof cfg->host) return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535) return -1;
    memcpy(cfg->host, v, (size_t)(colon - v));
    cfg->host[colon - v] = '\0';
    cfg->port = (int)port;
    return 0;
}

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi)) return -1;
    *out = x;
    return 0;
}

/* One option by its long name: shared by flags and environment variables. */
static int set_option(lsqd_config *cfg, const char *name, const char *v)
{
    long n;
    double d;
    if (!strcmp(name, "listen")) return parse_listen(cfg, v);
    if (!strcmp(name, "data")) {
        if (!*v || strlen(v) >= sizeof cfg->data) return -1;
        snprintf(cfg->data, sizeof cfg->data, "%s", v);
        return 0;
    }
    if (!strcmp(name, "workers")) {
        if (parse_long(v, 1, 64, &n)) return -1;
        cfg->workers = (int)n;
        return 0;
    }
    if (!strcmp(name, "max-queue")) {
        if (parse_long(v, 1, 1000000, &n)) return -1;
        cfg->max_queue = (int)n;
        return 0;
    }
    if (!strcmp(name, "max-body")) {
        if (parse_long(v, 1024, 1L << 30, &n)) return -1;
        cfg->max_body = (size_t)n;
        return 0;
    }
    if (!strcmp(name, "max-upload")) {
        if (parse_long(v, 1024, 1L << 40, &n)) return -1;
        cfg->max_upload = (unsigned long long)n;
        return 0;
    }
    if (!strcmp(name, "max-attempts")) {
        if (parse_long(v, 1, 1000, &n)) return -1;
        cfg->max_attempts = (int)n;
        return 0;
    }
    if (!strcmp(name, "grace")) {
        if (parse_double(v, 0, 3600, &d)) return -1;
        cfg->grace_s = d;
        return 0;
    }
    if (!strcmp(name, "heartbeat")) {
        if (parse_double(v, 0.05, 3600, &d)) return -1;
        cfg->heartbeat_s = d;
        return 0;
    }
    if (!strcmp(name, "http-threads")) {
        if (parse_long(v, 1, 256, &n)) return -1;
        cfg->http_threads = (int)n;
        return 0;
    }
    if (!strcmp(name, "lsq")) {
        if (!*v || strlen(v) >= sizeof cfg->lsq_bin) return -1;
        snprintf(cfg->lsq_bin, sizeof cfg->lsq_bin, "%s", v);
        return 0;
    }
    if (!strcmp(name, "datasets-root")) {
        if (strlen(v) >= sizeof cfg->datasets_root) return -1;
        snprintf(cfg->datasets_root, sizeof cfg->datasets_root, "%s", v);
        return 0;
    }
    if (!strcmp(name, "allow-private-urls")) {
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) cfg->allow_private_urls = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
            cfg->allow_private_urls = 0;
        else return -1;
        return 0;
    }
    if (!strcmp(name, "fetch-timeout")) {
        if (parse_double(v, 0.1, 86400, &d)) return -1;
        cfg->fetch_timeout_s = d;
        return 0;
    }
    if (!strcmp(name, "fetch-low-speed")) {
        if (parse_double(v, 1, 86400, &d)) return -1;
        cfg->fetch_low_speed_s = d;
        return 0;
    }
    if (!strcmp(name, "import-timeout")) {
        if (parse_double(v, 1, 86400, &d)) return -1;
        cfg->import_timeout_s = d;
        return 0;
    }
    if (!strcmp(name, "max-expanded")) {
        if (parse_long(v, 1024, 1L << 50, &n)) return -1;
        cfg->max_expanded = (unsigned long long)n;
        return 0;
    }
    if (!strcmp(name, "executor")) {
        for (int e = 0; e < EXECUTOR_COUNT; e++)
            if (!strcmp(v, EXECUTOR_NAMES[e])) {
                cfg->executor = e;
                return 0;
            }
        return -1;
    }
    if (!strcmp(name, "slurm-partition")) {
        /* it goes on sbatch's command line: a name, nothing else */
        if (strlen(v) >= sizeof cfg->slurm_partition || strspn(v,
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(v))
            return -1;
        snprintf(cfg->slurm_partition, sizeof cfg->slurm_partition, "%s", v);
        return 0;
    }
    if (!strcmp(name, "slurm-time")) {
        if (parse_long(v, 1, 525600, &n)) return -1;
        cfg->slurm_time_min = (int)n;
        return 0;
    }
    if (!strcmp(name, "slurm-mem")) {
        if (parse_long(v, 1, 16777216, &n)) return -1;
        cfg->slurm_mem_mb = (int)n;
        return 0;
    }
    if (!strcmp(name, "slurm-poll")) {
        if (parse_double(v, 0.1, 600, &d)) return -1;
        cfg->slurm_poll_s = d;
        return 0;
    }
    if (!strcmp(name, "slurm-timeout")) {
        if (parse_double(v, 1, 3600, &d)) return -1;
        cfg->slurm_cmd_timeout_s = d;
        return 0;
    }
    if (!strcmp(name, "slurm-events")) {
        if (!strcmp(v, "file")) cfg->slurm_events_http = 0;
        else if (!strcmp(v, "http")) cfg->slurm_events_http = 1;
        else return -1;
        return 0;
    }
    if (!strcmp(name, "slurm-callback")) {
        size_t len = strlen(v);
        while (len && v[len - 1] == '/') len--;
        if (len >= sizeof cfg->slurm_callback ||
            (strncmp(v, "http://", 7) && strncmp(v, "https://", 8)))
            return -1;
        snprintf(cfg->slurm_callback, sizeof cfg->slurm_callback, "%.*s", (int)len, v);
        return 0;
    }
    if (!strcmp(name, "auth")) {
        if (!strcmp(v, "auto")) cfg->auth = AUTH_AUTO;
        else if (!strcmp(v, "on")) cfg->auth = AUTH_ON;
        else if (!strcmp(v, "off")) cfg->auth = AUTH_OFF;
        else return -1;
        return 0;
    }
    if (!strcmp(name, "host-allow")) {
        if (strlen(v) >= sizeof cfg->host_allow) return -1;
        snprintf(cfg->host_allow, sizeof cfg->host_allow, "%s", v);
        return 0;
    }
    if (!strcmp(name, "max-running-per-user")) {
        if (parse_long(v, 0, 1000000, &n)) return -1;
        cfg->max_running_per_user = (int)n;
        return 0;
    }
    if (!strcmp(name, "quota-per-user")) {
        if (parse_long(v, 0, 1L << 50, &n)) return -1;
        cfg->quota_per_user = (unsigned long long)n;
        return 0;
    }
    if (!strcmp(name, "max-queued-per-user")) {
        if (parse_long(v, 0, 1000000, &n)) return -1;
        cfg->max_queued_per_user = (int)n;
        return 0;
    }
    if (!strcmp(name, "max-threads")) {
        if (parse_long(v, 1, 256, &n)) return -1;
        cfg->max_threads = (int)n;
        return 0;
    }
    if (!strcmp(name, "max-epochs")) {
        if (parse_long(v, 1, 1000, &n)) return -1;
        cfg->max_epochs = (int)n;
        return 0;
    }
    if (!strcmp(name, "max-images")) {
        if (parse_long(v, 1, 1L << 50, &n)) return -1;
        cfg->max_images = n;
        return 0;
    }
    if (!strcmp(name, "webhook-attempts")) {
        if (parse_long(v, 1, 20, &n)) return -1;
        cfg->webhook_attempts = (int)n;
        return 0;
    }
    if (!strcmp(name, "webhook-delay")) {
        if (parse_double(v, 0.01, 3600, &d)) return -1;
        cfg->webhook_delay_s = d;
        return 0;
    }
    if (!strcmp(name, "webhook-timeout")) {
        if (parse_double(v, 0.1, 600, &d)) return -1;
        cfg->webhook_timeout_s = d;
        return 0;
    }
    if (!strcmp(name, "max-connections")) {
        if (parse_long(v, 16, 1000000, &n)) return -1;
        cfg->max_connections = (int)n;
        return 0;
    }
    if (!strcmp(name, "max-connections-per-ip")) {
        if (parse_long(v, 0, 1000000, &n)) return -1;
        cfg->max_conn_per_ip = (int)n;
        return 0;
    }
    if (!strcmp(name, "conn-timeout")) {
        if (parse_long(v, 0, 86400, &n)) return -1;
        cfg->conn_timeout_s = (int)n;
        return 0;
    }
    if (!strcmp(name, "conn-memory")) {
        /* below 8 KiB ordinary requests (a token, a few headers) would not fit */
        if (parse_long(v, 8192, 16L << 20, &n)) return -1;
        cfg->conn_memory = (size_t)n;
        return 0;
    }
    if (!strcmp(name, "listen-backlog")) {
        if (parse_long(v, 1, 65535, &n)) return -1;
        cfg->listen_backlog = (int)n;
        return 0;
    }
    if (!strcmp(name, "header-timeout")) {
        if (parse_double(v, 0.1, 3600, &d)) return -1;
        cfg->header_timeout_s = d;
        return 0;
    }
    if (!strcmp(name, "body-timeout")) {
        if (parse_double(v, 0.1, 3600, &d)) return -1;
        cfg->body_timeout_s = d;
        return 0;
    }
    if (!strcmp(name, "body-min-rate")) {
        if (parse_double(v, 0, 1e9, &d)) return -1;
        cfg->body_min_rate = d;
        return 0;
    }
    if (!strcmp(name, "web")) {
        if (strlen(v) >= sizeof cfg->web_dir) return -1;
        snprintf(cfg->web_dir, sizeof cfg->web_dir, "%s", v);
        return 0;
    }
    return -2;
}

/* The folder of the running executable, for the default lsq and web paths. */
static void exe_dir(char *out, size_t cap)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) { snprintf(out, cap, "."); return; }
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
    snprintf(out, cap, "%s", buf);
}

int config_load(lsqd_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
    cfg->port = 8080;
    snprintf(cfg->data, sizeof cfg->data, "./var");
    cfg->workers = 1;
    cfg->max_queue = 100;
    cfg->max_body = 1 << 20;
    cfg->max_upload = 256ULL << 20;
    cfg->max_attempts = 3;
    cfg->grace_s = 10;
    cfg->heartbeat_s = 15;
    cfg->http_threads = 4;
    cfg->fetch_timeout_s = 900;
    cfg->fetch_low_speed_s = 60;
    cfg->import_timeout_s = 1800;
    cfg->max_expanded = 8ULL << 30;
    cfg->webhook_attempts = 5;
    cfg->webhook_delay_s = 1;
    cfg->webhook_timeout_s = 10;
    cfg->max_connections = 16384;
    cfg->conn_timeout_s = 60;
    cfg->conn_memory = 32 << 10;
    cfg->listen_backlog = 1024;
    cfg->header_timeout_s = 10;
    cfg->body_timeout_s = 10;
    cfg->body_min_rate = 1024;
    cfg->executor = EXECUTOR_LOCAL;
    cfg->slurm_time_min = 1440;
    cfg->slurm_mem_mb = 4096;
    cfg->slurm_poll_s = 2;
    cfg->slurm_cmd_timeout_s = 30;
    char dir[PATH_MAX];
    exe_dir(dir, sizeof dir);
    snprintf(cfg->lsq_bin, sizeof cfg->lsq_bin, "%.*s/lsq", PATH_MAX - 8, dir);
    /* build/lsqd -> web/ in the source tree; /usr/local/bin/lsqd -> share */
    snprintf(cfg->web_dir, sizeof cfg->web_dir, "%.*s/../web", PATH_MAX - 8, dir);

    static const struct { const char *env, *name; } ENVS[] = {
        {"LSQD_LISTEN", "listen"}, {"LSQD_DATA", "data"}, {"LSQD_WORKERS", "workers"},
        {"LSQD_MAX_QUEUE", "max-queue"}, {"LSQD_MAX_BODY", "max-body"},
        {"LSQD_MAX_UPLOAD", "max-upload"},
        {"LSQD_MAX_ATTEMPTS", "max-attempts"}, {"LSQD_GRACE", "grace"},
        {"LSQD_HEARTBEAT", "heartbeat"}, {"LSQD_HTTP_THREADS", "http-threads"},
        {"LSQ_BIN", "lsq"}, {"LSQD_WEB", "web"}, {"LSQD_DATASETS_ROOT", "datasets-root"},
        {"LSQD_ALLOW_PRIVATE_URLS", "allow-private-urls"}, {"LSQD_FETCH_TIMEOUT", "fetch-timeout"},
        {"LSQD_FETCH_LOW_SPEED", "fetch-low-speed"}, {"LSQD_IMPORT_TIMEOUT", "import-timeout"},
        {"LSQD_MAX_EXPANDED", "max-expanded"}, {"LSQD_EXECUTOR", "executor"},
        {"LSQD_SLURM_PARTITION", "slurm-partition"}, {"LSQD_SLURM_TIME", "slurm-time"},
        {"LSQD_SLURM_MEM", "slurm-mem"}, {"LSQD_SLURM_POLL", "slurm-poll"},
        {"LSQD_SLURM_TIMEOUT", "slurm-timeout"}, {"LSQD_SLURM_EVENTS", "slurm-events"},
        {"LSQD_SLURM_CALLBACK", "slurm-callback"},
        {"LSQD_MAX_EXPANDED", "max-expanded"}, {"LSQD_AUTH", "auth"},
        {"LSQD_HOST_ALLOW", "host-allow"}, {"LSQD_MAX_RUNNING_PER_USER", "max-running-per-user"},
        {"LSQD_MAX_QUEUED_PER_USER", "max-queued-per-user"},
        {"LSQD_QUOTA_PER_USER", "quota-per-user"},
        {"LSQD_MAX_EXPANDED", "max-expanded"}, {"LSQD_MAX_THREADS", "max-threads"},
        {"LSQD_MAX_EPOCHS", "max-epochs"}, {"LSQD_MAX_IMAGES", "max-images"},
        {"LSQD_WEBHOOK_ATTEMPTS", "webhook-attempts"}, {"LSQD_WEBHOOK_DELAY", "webhook-delay"},
        {"LSQD_WEBHOOK_TIMEOUT", "webhook-timeout"},
        {"LSQD_MAX_CONNECTIONS", "max-connections"},
        {"LSQD_MAX_CONNECTIONS_PER_IP", "max-connections-per-ip"},
        {"LSQD_CONN_TIMEOUT", "conn-timeout"}, {"LSQD_CONN_MEMORY", "conn-memory"},
        {"LSQD_LISTEN_BACKLOG", "listen-backlog"}, {"LSQD_HEADER_TIMEOUT", "header-timeout"},
        {"LSQD_BODY_TIMEOUT", "body-timeout"}, {"LSQD_BODY_MIN_RATE", "body-min-rate"},
    };
    for (size_t i = 0; i < sizeof ENVS / sizeof *ENVS; i++) {
        const char *v = getenv(ENVS[i].env);
        if (v && *v && set_option(cfg, ENVS[i].name, v)) {
            fprintf(stderr, "lsqd: bad value '%s' for %s\n%s%s", v, ENVS[i].env, USAGE,
                    USAGE_TAIL);
            return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            fputs(USAGE_TAIL, stdout);
            return 1;
        }
        if (!strcmp(a, "--routes")) {
            cfg->print_routes = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "lsqd: unexpected argument '%s'\n%s%s", a, USAGE, USAGE_TAIL);
            return -1;
        }
        const char *name = a + 2, *v = NULL;
        char key[64];
        const char *eq = strchr(name, '=');
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - name), name);
            v = eq + 1;
        } else if (!strcmp(name, "allow-private-urls")) {
            snprintf(key, sizeof key, "%s", name);
            v = "1"; /* a switch: no value follows */
        } else {
            snprintf(key, sizeof key, "%s", name);
            if (i + 1 >= argc) {
                fprintf(stderr, "lsqd: %s needs a value\n%s%s", a, USAGE, USAGE_TAIL);
                return -1;
            }
            v = argv[++i];
        }
        int rc = set_option(cfg, key, v);
        if (rc == -2) {
            fprintf(stderr, "lsqd: unknown option '--%s'\n%s%s", key, USAGE, USAGE_TAIL);
            return -1;
        }
        if (rc) {
            fprintf(stderr, "lsqd: bad value '%s' for --%s\n%s%s", v, key, USAGE, USAGE_TAIL);
            return -1;
        }
    }
    return 0;
}
