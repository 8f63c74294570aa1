/* Worker pool: fork/exec of `lsq train`, its event pipe, exit handling.
 * Under --executor slurm the public calls go to slurm.c instead. */
#include "scheduler.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "hub.h"
#include "log.h"
#include "slurm.h"
#include "store.h"
#include "webhook.h"
#include "train/events.h"

#define MAX_SLOTS 64
#define MAX_LINE (1 << 20)
#define EVENTS_FD 3

typedef struct {
    int busy;
    pid_t pid;
    int64_t job_id;
    int fd;                /* read end of the event pipe, -1 at EOF */
    char *line;            /* partial line */
    size_t len, cap;
    int overlong;          /* discarding the rest of a too long line */
    int cancel;            /* cancel requested by the API */
    double term_at;        /* when SIGTERM was sent, 0: not yet */
    int killed;            /* SIGKILL sent */
    int exited;
    int wstatus;
    int done;              /* the worker's "done" event arrived */
    double images_per_s;
} slot;

static const lsqd_config *g_cfg;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static slot g_slots[MAX_SLOTS];
static int g_nslots;
static int g_stopping;
static int g_wake[2] = {-1, -1};
static pthread_t g_thread;
static int g_started;
static int g_slurm; /* --executor slurm: every call goes to slurm.c */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void wake(void)
{
    char c = 1;
    ssize_t w = write(g_wake[1], &c, 1);
    (void)w; /* a full pipe already means "wake up" */
}

void sched_job_dir(const lsqd_config *cfg, int64_t job_id, char *out, size_t cap)
{
    snprintf(out, cap, "%.4000s/jobs/%lld", cfg->data, (long long)job_id);
}

static int mkdir_p(const char *path)
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

static int write_file(const char *path, const char *text)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%.4090s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path)) return -1;
    return 0;
}

/* Records an event that lsqd itself writes (a worker that died). */
static void add_own_event(int64_t job_id, ev_type type, const char *code, const char *msg)
{
    json_t *ev = json_pack("{s:s,s:s,s:s,s:f}", "type", EV_TYPE_NAMES[type], "code", code,
                           "message", msg, "time", (double)time(NULL));
    int64_t seq;
    if (ev && store_event_add(job_id, type, ev, &seq) == STORE_OK) hub_notify(job_id);
    json_decref(ev);
}

static void fail_job(int64_t job_id, const char *code, const char *msg)
{
    add_own_event(job_id, EV_ERROR, code, msg);
    store_job_finish(job_id, JOB_FAILED, code, msg, -1000);
    hub_notify(job_id);
    webhook_kick();
    log_warn("job failed", "{s:I,s:s,s:s}", "job", (json_int_t)job_id, "code", code,
             "message", msg);
}

/* The ranks a (validated) spec asks for: resources.nodes * tasks_per_node. */
static int spec_ranks(const char *spec)
{
    json_t *j = json_loads(spec, 0, NULL);
    const json_t *r = json_object_get(j, "resources");
    json_int_t nodes = json_integer_value(json_object_get(r, "nodes"));
    json_int_t tasks = json_integer_value(json_object_get(r, "tasks_per_node"));
    json_decref(j);
    return (int)((nodes > 0 ? nodes : 1) * (tasks > 0 ? tasks : 1));
}

/* The event channel of a worker started under mpirun: a FIFO in the job
 * folder that rank 0 opens by name (mpirun closes the descriptors it does
 * not know before it starts the ranks). lsqd reads it as it reads a pipe;
 * mpirun holds the write end as descriptor 3, so that the end of the file
 * comes when mpirun exits, as with a pipe. */
static int open_event_fifo(const char *path, int p[2])
{
    unlink(path);
    if (mkfifo(path, 0600)) return -1;
    p[0] = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (p[0] < 0) return -1;
    p[1] = open(path, O_WRONLY | O_CLOEXEC);
    if (p[1] < 0) {
        close(p[0]);
        return -1;
    }
    /* read() blocks nowhere: the scheduler polls */
    return 0;
}

/* Starts the claimed job in slot s. On failure the job is failed. A job
 * whose resources ask for more than one rank runs under `mpirun -np N`
 * (docs/cluster.md). */
static void spawn(slot *s, int64_t job_id, const char *spec)
{
    char dir[PATH_MAX], spec_path[PATH_MAX + 16], log_path[PATH_MAX + 16];
    char fifo[PATH_MAX + 16], np[16];
    sched_job_dir(g_cfg, job_id, dir, sizeof dir);
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", dir);
    snprintf(log_path, sizeof log_path, "%s/worker.log", dir);
    snprintf(fifo, sizeof fifo, "%s/events.fifo", dir);
    if (strchr(g_cfg->lsq_bin, '/') && access(g_cfg->lsq_bin, X_OK) != 0) {
        /* told here, with the reason, rather than as exec's exit status 127 */
        char msg[PATH_MAX + 160];
        snprintf(msg, sizeof msg, "the worker could not start: lsqd cannot execute its lsq "
                 "binary %s (--lsq, LSQ_BIN): %s", g_cfg->lsq_bin,
                 errno == ENOENT ? "it does not exist"
                 : errno == EACCES ? "it is not executable (EACCES)" : strerror(errno));
        fail_job(job_id, "worker_not_started", msg);
        return;
    }
    if (mkdir_p(dir) || write_file(spec_path, spec)) {
        char msg[160];
        int e = errno;
        snprintf(msg, sizeof msg, "cannot write the job folder: %s%s", strerror(e),
                 e == ENOSPC ? " (ENOSPC: the disk is full)" : "");
        fail_job(job_id, e == ENOSPC ? "disk_full" : "io_error", msg);
        return;
    }
    int ranks = spec_ranks(spec);
    snprintf(np, sizeof np, "%d", ranks);
    int p[2];
    if (ranks > 1 ? open_event_fifo(fifo, p) : pipe2(p, O_CLOEXEC)) {
        fail_job(job_id, "internal", "cannot create the event pipe");
        return;
    }
    char *argv[24], **a = argv;
    if (ranks > 1) {
        /* one machine: every rank here, threads not pinned to one core */
        *a++ = "mpirun";
        if (geteuid() == 0) *a++ = "--allow-run-as-root";
        *a++ = "--oversubscribe", *a++ = "--bind-to", *a++ = "none", *a++ = "-np", *a++ = np;
    }
    *a++ = (char *)g_cfg->lsq_bin, *a++ = "train", *a++ = spec_path, *a++ = "--out", *a++ = dir;
    if (ranks > 1) *a++ = "--events", *a++ = fifo;
    else *a++ = "--events-fd", *a++ = "3";
    *a = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        fail_job(job_id, "internal", "fork failed");
        return;
    }
    if (pid == 0) {
        /* child: only async-signal-safe calls until exec */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* a worker never outlives lsqd: a new lsqd resumes the job instead */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(125);
        int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int devnull = open("/dev/null", O_RDONLY);
        if (p[1] == EVENTS_FD) {
            fcntl(EVENTS_FD, F_SETFD, 0);
        } else if (dup2(p[1], EVENTS_FD) < 0) {
            _exit(126);
        }
        if (devnull >= 0) dup2(devnull, 0);
        if (logfd >= 0) { dup2(logfd, 1); dup2(logfd, 2); }
        close_range(EVENTS_FD + 1, ~0U, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    pthread_mutex_lock(&g_lock);
    memset(s, 0, sizeof *s);
    s->busy = 1;
    s->pid = pid;
    s->job_id = job_id;
    s->fd = p[0];
    pthread_mutex_unlock(&g_lock);
    /* a cancel that came between the claim and now found no slot to signal */
    if (store_job_cancel_requested(job_id) == 1) sched_cancel(job_id);
    log_info("job started", "{s:I,s:i,s:s}", "job", (json_int_t)job_id, "pid", (int)pid,
             "dir", dir);
}

/* A worker's error speaks of the files lsqd gave it (DATA/datasets/3/...):
 * clients see "DATA" for the data folder, and the key they wrote: in lsqd
 * a dataset is named by dataset.id, never by its cache folder. */
static void scrub_error(json_t *ev)
{
    const char *msg = json_string_value(json_object_get(ev, "message"));
    if (msg) {
        char out[1024];
        child_scrub(out, sizeof out, msg, g_cfg->data, "DATA");
        json_object_set_new(ev, "message", json_string(out));
    }
    const char *field = json_string_value(json_object_get(ev, "field"));
    if (field && !strcmp(field, "dataset.cache"))
        json_object_set_new(ev, "field", json_string("dataset.id"));
    else if (field && field[0] == '/')
        json_object_set_new(ev, "field", json_string(""));
}

static void handle_line(slot *s, const char *line, size_t len)
{
    if (len == 0) return;
    json_t *ev = NULL;
    ev_type type;
    lsq_err err;
    if (ev_parse(line, len, &ev, &type, &err) != LSQ_OK) {
        log_warn("bad worker event", "{s:I,s:s}", "job", (json_int_t)s->job_id,
                 "error", err.message);
        return;
    }
    if (type == EV_ERROR) scrub_error(ev);
    if (type == EV_DONE) s->done = 1;
    int64_t seq;
    if (store_event_add(s->job_id, type, ev, &seq) != STORE_OK)
        log_error("cannot store event", "{s:I}", "job", (json_int_t)s->job_id);
    if (type == EV_PROGRESS) {
        json_t *ips = json_object_get(ev, "images_per_s");
        pthread_mutex_lock(&g_lock);
        s->images_per_s = json_is_number(ips) ? json_number_value(ips) : 0;
        pthread_mutex_unlock(&g_lock);
    }
    json_decref(ev);
    hub_notify(s->job_id);
}

/* Reads what the pipe holds; sets fd to -1 at EOF. */
static void read_pipe(slot *s)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            n = 0;
        }
        if (n == 0) {
            if (s->len && !s->overlong) handle_line(s, s->line, s->len);
            close(s->fd);
            s->fd = -1;
            s->len = 0;
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                if (!s->overlong) handle_line(s, s->line, s->len);
                s->len = 0;
                s->overlong = 0;
                continue;
            }
            if (s->overlong) continue;
            if (s->len + 1 >= s->cap) {
                if (s->cap >= MAX_LINE) {
                    s->overlong = 1;
                    s->len = 0;
                    continue;
                }
                size_t cap = s->cap ? s->cap * 2 : 4096;
                char *p = realloc(s->line, cap);
                if (!p) { s->overlong = 1; s->len = 0; continue; }
                s->line = p;
                s->cap = cap;
            }
            s->line[s->len++] = buf[i];
        }
    }
}

/* The process has exited and its pipe is drained: decide the job's end. */
static void finish(slot *s, int stopping)
{
    int64_t id = s->job_id;
    int st = s->wstatus;
    char msg[256];
    pthread_mutex_lock(&g_lock);
    int cancelled = s->cancel;
    pthread_mutex_unlock(&g_lock);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && s->done) {
        store_job_finish(id, JOB_SUCCEEDED, NULL, NULL, 0);
        log_info("job succeeded", "{s:I}", "job", (json_int_t)id);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && !cancelled && !stopping) {
        /* exit 0 is not proof of a trained model: only the done event is */
        snprintf(msg, sizeof msg, "the worker exited with status 0 without its \"done\" "
                                  "event: no finished model; its log is "
                                  "DATA/jobs/%lld/worker.log", (long long)id);
        add_own_event(id, EV_ERROR, "worker_failed", msg);
        store_job_finish(id, JOB_FAILED, "worker_failed", msg, 0);
        log_warn("job failed", "{s:I,s:s}", "job", (json_int_t)id, "message", msg);
    } else if (cancelled) {
        store_job_finish(id, JOB_CANCELLED, NULL, NULL,
                         WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
        log_info("job cancelled", "{s:I}", "job", (json_int_t)id);
    } else if (stopping) {
        store_job_requeue(id);
        log_info("job re-queued for the next start", "{s:I}", "job", (json_int_t)id);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 3) {
        store_job_finish(id, JOB_CANCELLED, NULL, NULL, 3);
        log_info("job cancelled by a SIGTERM from outside lsqd", "{s:I}", "job", (json_int_t)id);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 1) {
        /* the worker wrote an error event, whose code and message are kept;
         * one that could not (its event pipe broke) still leaves a reason */
        json_t *job = store_job_get(id);
        int said = json_is_object(json_object_get(job, "error"));
        json_decref(job);
        if (!said) {
            snprintf(msg, sizeof msg, "the worker failed (exit status 1) without an error "
                                      "event; its log is DATA/jobs/%lld/worker.log",
                     (long long)id);
            add_own_event(id, EV_ERROR, "worker_failed", msg);
        }
        store_job_finish(id, JOB_FAILED, said ? NULL : "worker_failed", said ? NULL : msg, 1);
        log_warn("job failed", "{s:I}", "job", (json_int_t)id);
    } else if (WIFEXITED(st) && (WEXITSTATUS(st) == 126 || WEXITSTATUS(st) == 127)) {
        /* spawn's child: 127 exec failed, 126 the event pipe could not be set */
        snprintf(msg, sizeof msg, "the worker could not start (%s, exit status %d)",
                 WEXITSTATUS(st) == 127 ? "lsqd cannot execute its lsq binary (--lsq)"
                                        : "its event pipe could not be set up",
                 WEXITSTATUS(st));
        add_own_event(id, EV_ERROR, "worker_not_started", msg);
        store_job_finish(id, JOB_FAILED, "worker_not_started", msg, WEXITSTATUS(st));
        log_warn("job failed", "{s:I,s:s}", "job", (json_int_t)id, "message", msg);
    } else if (WIFEXITED(st)) {
        snprintf(msg, sizeof msg, "worker exited with status %d", WEXITSTATUS(st));
        add_own_event(id, EV_ERROR, "worker_failed", msg);
        store_job_finish(id, JOB_FAILED, "worker_failed", msg, WEXITSTATUS(st));
        log_warn("job failed", "{s:I,s:s}", "job", (json_int_t)id, "message", msg);
    } else {
        snprintf(msg, sizeof msg, "worker killed by signal %d (%s)%s", WTERMSIG(st),
                 strsignal(WTERMSIG(st)),
                 WTERMSIG(st) == SIGKILL ? ": from outside lsqd, or the kernel's out-of-memory "
                                           "killer" : "");
        add_own_event(id, EV_ERROR, "worker_killed", msg);
        store_job_finish(id, JOB_FAILED, "worker_killed", msg, -WTERMSIG(st));
        log_warn("job failed", "{s:I,s:s}", "job", (json_int_t)id, "message", msg);
    }
    hub_notify(id);
    webhook_kick(); /* a job with a notify_url has a delivery now */
    pthread_mutex_lock(&g_lock);
    free(s->line);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    pthread_mutex_unlock(&g_lock);
}

static void *sched_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        int stopping = g_stopping;
        pthread_mutex_unlock(&g_lock);

        /* claim queued jobs for free slots */
        for (int i = 0; i < g_nslots && !stopping; i++) {
            if (g_slots[i].busy) continue;
            int64_t id;
            char *spec = NULL;
            int attempts;
            if (store_job_claim(g_cfg->max_running_per_user, &id, &spec, &attempts) != STORE_OK)
                break;
            hub_notify(id);
            spawn(&g_slots[i], id, spec);
            free(spec);
        }

        struct pollfd pfd[MAX_SLOTS + 1];
        int who[MAX_SLOTS + 1];
        int n = 0, busy = 0;
        pfd[n].fd = g_wake[0];
        pfd[n].events = POLLIN;
        who[n++] = -1;
        for (int i = 0; i < g_nslots; i++) {
            if (!g_slots[i].busy) continue;
            busy++;
            if (g_slots[i].fd < 0) continue;
            pfd[n].fd = g_slots[i].fd;
            pfd[n].events = POLLIN;
            who[n++] = i;
        }
        if (stopping && busy == 0) break;
        int rc = poll(pfd, (nfds_t)n, 100);
        if (rc < 0 && errno != EINTR) log_error("poll failed", "{s:s}", "error", strerror(errno));
        if (rc > 0 && (pfd[0].revents & POLLIN)) {
            char buf[256];
            while (read(g_wake[0], buf, sizeof buf) > 0) {}
        }
        for (int k = 1; rc > 0 && k < n; k++)
            if (pfd[k].revents) read_pipe(&g_slots[who[k]]);

        double t = now_s();
        int cancel[MAX_SLOTS];
        pthread_mutex_lock(&g_lock);
        stopping = g_stopping;
        for (int i = 0; i < g_nslots; i++) cancel[i] = g_slots[i].cancel;
        pthread_mutex_unlock(&g_lock);
        for (int i = 0; i < g_nslots; i++) {
            slot *s = &g_slots[i];
            if (!s->busy) continue;
            if (!s->exited) {
                if ((cancel[i] || stopping) && s->term_at == 0) {
                    kill(s->pid, SIGTERM);
                    s->term_at = t;
                } else if (s->term_at > 0 && !s->killed && t - s->term_at >= g_cfg->grace_s) {
                    kill(s->pid, SIGKILL);
                    s->killed = 1;
                    log_warn("worker killed after the grace period", "{s:I}", "job",
                             (json_int_t)s->job_id);
                }
                pid_t w = waitpid(s->pid, &s->wstatus, WNOHANG);
                if (w == s->pid) s->exited = 1;
            }
            if (s->exited && s->fd >= 0) read_pipe(s); /* drain: the writer is gone */
            if (s->exited && s->fd < 0) finish(s, stopping);
        }
    }
    return NULL;
}

int sched_start(const lsqd_config *cfg)
{
    if (cfg->executor == EXECUTOR_SLURM) {
        g_slurm = 1;
        return slurm_start(cfg);
    }
    g_cfg = cfg;
    g_nslots = cfg->workers < MAX_SLOTS ? cfg->workers : MAX_SLOTS;
    for (int i = 0; i < MAX_SLOTS; i++) g_slots[i].fd = -1;
    if (pipe2(g_wake, O_CLOEXEC | O_NONBLOCK)) return -1;
    if (access(cfg->lsq_bin, X_OK))
        log_warn("the worker binary is not executable; jobs will fail", "{s:s}", "lsq",
                 cfg->lsq_bin);
    if (pthread_create(&g_thread, NULL, sched_main, NULL)) return -1;
    g_started = 1;
    return 0;
}

void sched_kick(void)
{
    if (g_slurm) { slurm_kick(); return; }
    if (g_started) wake();
}

void sched_cancel(int64_t job_id)
{
    if (g_slurm) { slurm_cancel(job_id); return; }
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nslots; i++)
        if (g_slots[i].busy && g_slots[i].job_id == job_id) g_slots[i].cancel = 1;
    pthread_mutex_unlock(&g_lock);
    if (g_started) wake();
}

void sched_stop(void)
{
    if (g_slurm) { slurm_stop(); return; }
    if (!g_started) return;
    pthread_mutex_lock(&g_lock);
    g_stopping = 1;
    pthread_mutex_unlock(&g_lock);
    wake();
    pthread_join(g_thread, NULL);
    g_started = 0;
    close(g_wake[0]);
    close(g_wake[1]);
}

int sched_snapshot(sched_busy *out, int cap)
{
    if (g_slurm) {
        int64_t ids[MAX_SLOTS];
        double ips[MAX_SLOTS];
        int n = slurm_snapshot(ids, ips, cap < MAX_SLOTS ? cap : MAX_SLOTS);
        for (int i = 0; i < n && i < cap && i < MAX_SLOTS; i++) {
            out[i].job_id = ids[i];
            out[i].images_per_s = ips[i];
        }
        return n;
    }
    int n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nslots; i++) {
        if (!g_slots[i].busy) continue;
        if (n < cap) {
            out[n].job_id = g_slots[i].job_id;
            out[n].images_per_s = g_slots[i].images_per_s;
        }
        n++;
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}
