/* lsqd: the LSQ training service. Opens the store (migrating it), re-queues
 * jobs a previous lsqd left running, starts the scheduler, the event hub and
 * the HTTP daemon, then waits for SIGTERM/SIGINT: it stops accepting, lets
 * the workers checkpoint (SIGTERM), re-queues their jobs, and exits 0. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "auth.h"
#include "config.h"
#include "http.h"
#include "hub.h"
#include "log.h"
#include "registrar.h"
#include "webhook.h"
#include "scheduler.h"
#include "slurm.h"
#include "store.h"
#include "train/train.h"

static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

int main(int argc, char **argv)
{
    static lsqd_config cfg;
    /* Workers share the cores with each other and with lsqd's own threads:
     * OpenMP threads that sleep at a barrier instead of spinning keep one
     * busy process from starving the next (about 3x the training speed of a
     * worker beside another job on 2 cores). The workers inherit it; a value
     * set by the operator wins. */
    setenv("OMP_WAIT_POLICY", "passive", 0);
    if (argc > 1 && !strcmp(argv[1], "token")) return auth_token_main(argc - 1, argv + 1);
    int rc = config_load(&cfg, argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    /* the workers' lsq reads the same variables: a bad one would fail every
     * job, so lsqd refuses to start instead */
    lsq_err perr;
    if (train_paths_from_env(&perr) != LSQ_OK) {
        log_error("bad engine setting in the environment", "{s:s,s:s}", "field", perr.field,
                  "error", perr.message);
        return 2;
    }
    if (cfg.print_routes) {
        http_print_routes(stdout);
        return 0;
    }

    /* Every thread inherits this mask; the main thread takes the signals
     * with sigwait. Workers get a clean mask before exec. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    char jobs_dir[PATH_MAX + 8], real[PATH_MAX], db_path[PATH_MAX + 16];
    if (mkdirs(cfg.data) || !realpath(cfg.data, real)) {
        log_error("cannot create the data folder", "{s:s,s:s}", "data", cfg.data,
                  "error", strerror(errno));
        return 1;
    }
    snprintf(cfg.data, sizeof cfg.data, "%s", real);
    snprintf(jobs_dir, sizeof jobs_dir, "%s/jobs", cfg.data);
    snprintf(db_path, sizeof db_path, "%s/lsqd.db", cfg.data);
    if (mkdirs(jobs_dir) || store_open(db_path)) {
        log_error("cannot open the store", "{s:s}", "path", db_path);
        return 1;
    }
    int auth = auth_init(&cfg);
    if (auth < 0) {
        store_close();
        return 1;
    }
    int cancelled = 0;
    int requeued = store_jobs_recover(cfg.max_attempts, cfg.executor == EXECUTOR_SLURM,
                                      &cancelled);
    if (requeued < 0) return 1;
    if (cancelled > 0)
        log_info("cancelled jobs whose cancel the previous lsqd had accepted", "{s:i}", "jobs",
                 cancelled);
    if (requeued > 0)
        log_info("re-queued jobs left running by the previous lsqd", "{s:i}", "jobs", requeued);

    /* before any thread: libcurl's global state (the registrar's fetches) */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("cannot initialise libcurl", NULL);
        return 1;
    }
    if (hub_init(cfg.heartbeat_s) || sched_start(&cfg) || registrar_start(&cfg) ||
        webhook_start(&cfg)) {
        log_error("cannot start threads", NULL);
        return 1;
    }
    int port = http_start(&cfg);
    if (port < 0) {
        webhook_stop();
        registrar_stop();
        sched_stop();
        hub_shutdown();
        store_close();
        return 1;
    }
    char url[128];
    snprintf(url, sizeof url, "http://%s:%d", cfg.host, port);
    if (cfg.executor == EXECUTOR_SLURM) slurm_set_callback(url);
    snprintf(url, sizeof url, "http://%s:%d/", cfg.host, port);
    log_info("listening", "{s:s,s:i,s:s,s:s,s:i,s:s,s:s}", "addr", cfg.host, "port", port, "url",
             url, "data", cfg.data, "workers", cfg.workers, "lsq", cfg.lsq_bin, "auth",
             auth ? "tokens" : "off (loopback)");

    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {}
    log_info("stopping", "{s:s}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    http_quiesce();
    registrar_stop();  /* a registration under way resumes at the next start */
    sched_stop();      /* workers checkpoint and their jobs go back to the queue */
    webhook_stop();    /* pending deliveries resume at the next start */
    hub_shutdown();    /* SSE streams end (their connections resume) */
    http_stop();
    store_close();
    curl_global_cleanup();
    log_info("stopped", NULL);
    return 0;
}
