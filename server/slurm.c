/* The Slurm executor (slurm.h): sbatch, squeue/sacct polling, scancel, and
 * the events file that the worker writes on the shared data folder. Every
 * Slurm command runs through child_run with --slurm-timeout, so a command
 * that hangs ends as an error instead of stopping the thread. */
#include "slurm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "core/sha256.h"
#include "hub.h"
#include "log.h"
#include "store.h"
#include "train/events.h"

#define MAX_JOBS 256
#define MAX_LINE (1 << 20)
#define CMD_OUT_MAX (4 << 20)
#define EXIT_CODE_CANCELLED_BY_TERM 3 /* `lsq train` checkpointed on SIGTERM */

typedef struct {
    int used;
    int64_t job_id;
    char slurm_id[32];
    int64_t offset;        /* bytes of events.jsonl stored */
    int64_t wseq;          /* the worker's events stored (its numbering: lines of the file) */
    int cancel;            /* cancel requested through the API */
    double term_at;        /* when scancel --signal=TERM was sent, 0: not yet */
    int killed;            /* the hard scancel was sent */
    char state[32];        /* the latest Slurm state seen ("" before one) */
    char reason[96];
    int missing;           /* polls in a row that squeue did not list it */
    int requeued;          /* Slurm requeued it (seen PENDING after it ran) */
    double retry_at;       /* a failed scancel is tried again from then */
    double images_per_s;
    int srun;              /* its ranks run as an srun step (more than one rank) */
} sjob;

static const lsqd_config *g_cfg;
static char g_lsq[PATH_MAX];
static char g_data[PATH_MAX]; /* the data folder, absolute: the Slurm jobs' comment */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static sjob g_jobs[MAX_JOBS];
static int g_stopping;
static int g_wake[2] = {-1, -1};
static pthread_t g_thread;
static int g_started;
static char g_callback[512]; /* --slurm-events http: lsqd's base URL as the nodes reach it */
static int g_callback_set;

static double mono_s(void)
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

static void job_dir(int64_t job_id, char *out, size_t cap)
{
    snprintf(out, cap, "%.4000s/jobs/%lld", g_cfg->data, (long long)job_id);
}

/* 1 when the job's batch script starts its ranks with srun (docs/cluster.md:
 * they are signalled as a step, not through the batch shell). */
static int uses_srun(int64_t job_id)
{
    char path[PATH_MAX + 32], buf[4096];
    job_dir(job_id, path, PATH_MAX);
    strcat(path, "/slurm.sh");
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "\nsrun --mpi=pmix ") != NULL;
}

int slurm_state_final(const char *state)
{
    static const char *const FINAL[] = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE",
                                        "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                                        "TIMEOUT", "SPECIAL_EXIT", "REVOKED", NULL};
    for (int i = 0; FINAL[i]; i++)
        if (!strcmp(state, FINAL[i])) return 1;
    return 0;
}

/* Runs a Slurm command (found on PATH, stderr merged into the output) for at
 * most --slurm-timeout. Returns its output (caller frees) with *status the
 * exit status (-1: timed out, killed or not run); NULL when it could not run,
 * with what happened in err. */
static char *slurm_cmd(const char *const *args, int *status, char *err, size_t errcap)
{
    const char *argv[24] = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"};
    int n = 3;
    for (int i = 0; args[i] && n < 23; i++) argv[n++] = args[i];
    argv[n] = NULL;
    child_result res;
    char *out = child_run((char *const *)argv, g_cfg->slurm_cmd_timeout_s, CMD_OUT_MAX, NULL,
                          NULL, NULL, &res);
    *status = res.status;
    if (!out) {
        snprintf(err, errcap, "%s could not be run", args[0]);
        return NULL;
    }
    if (res.timed_out)
        snprintf(err, errcap, "%s did not answer within %g s (--slurm-timeout)", args[0],
                 g_cfg->slurm_cmd_timeout_s);
    else if (res.status == 127)
        snprintf(err, errcap, "%s is not installed on the lsqd machine (not on PATH)", args[0]);
    else if (res.status != 0) {
        /* the command's own words, on one line */
        char line[300];
        snprintf(line, sizeof line, "%s", out);
        for (char *p = line; *p; p++)
            if (*p == '\n') *p = ' ';
        size_t l = strlen(line);
        while (l && line[l - 1] == ' ') line[--l] = '\0';
        snprintf(err, errcap, "%s failed (status %d): %s", args[0], res.status, line);
    } else {
        err[0] = '\0';
    }
    return out;
}

/* Records an event that lsqd itself writes (what Slurm did to the job). */
static void add_own_event(int64_t job_id, ev_type type, const char *code, const char *msg)
{
    json_t *ev = json_pack("{s:s,s:s,s:s,s:f}", "type", EV_TYPE_NAMES[type], "code", code,
                           "message", msg, "time", (double)time(NULL));
    int64_t seq;
    if (ev && store_event_add(job_id, type, ev, &seq) == STORE_OK) hub_notify(job_id);
    json_decref(ev);
}

static void fail_job(int64_t job_id, const char *code, const char *msg, int exit_status)
{
    add_own_event(job_id, EV_ERROR, code, msg);
    store_job_finish(job_id, JOB_FAILED, code, msg, exit_status);
    hub_notify(job_id);
    log_warn("job failed", "{s:I,s:s,s:s}", "job", (json_int_t)job_id, "code", code,
             "message", msg);
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

static int write_file(const char *path, const char *text, mode_t mode)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%.4090s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); return -1; }
    int ok = fputs(text, f) >= 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path)) return -1;
    return 0;
}

/* s in single quotes for sh, into out[cap]; -1 when it does not fit. */
static int sh_quote(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    if (cap < 3) return -1;
    out[o++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t pl = piece ? 4 : 1;
        if (o + pl + 2 > cap) return -1;
        if (piece) { memcpy(out + o, piece, pl); o += pl; }
        else out[o++] = *s;
    }
    out[o++] = '\'';
    out[o] = '\0';
    return 0;
}

/* The batch script of a job: Slurm's request from the spec's threads and
 * resources (or the operator's defaults), then `lsq train` as the local
 * executor runs it (a job of several ranks under `srun --mpi=pmix`, where
 * the local executor uses mpirun), with a SIGTERM passed on to it (the
 * worker checkpoints and exits 3) and its exit status left in the job
 * folder, where lsqd reads it even when Slurm has forgotten the job.
 * Returns malloc'ed text. */
static char *batch_script(int64_t job_id, const char *dir, const char *spec_text)
{
    /* --slurm-events http: the worker also posts its events to lsqd */
    char http[1200] = "";
    if (g_cfg->slurm_events_http) {
        char url[700], qurl[1000];
        snprintf(url, sizeof url, "%.512s/api/v1/jobs/%lld/events", g_callback, (long long)job_id);
        if (sh_quote(qurl, sizeof qurl, url)) return NULL;
        snprintf(http, sizeof http, " --events-url %s --events-token-file events.token", qurl);
    }
    json_t *spec = json_loads(spec_text, 0, NULL);
    json_t *res = json_object_get(spec, "resources");
    json_t *v = json_object_get(spec, "threads");
    int threads = json_is_integer(v) ? (int)json_integer_value(v) : 2;
    v = json_object_get(res, "mem_mb");
    int mem = json_is_integer(v) ? (int)json_integer_value(v) : g_cfg->slurm_mem_mb;
    v = json_object_get(res, "time_min");
    int minutes = json_is_integer(v) ? (int)json_integer_value(v) : g_cfg->slurm_time_min;
    /* more than one rank: srun starts them all, PMIx wires up MPI */
    v = json_object_get(res, "nodes");
    int nodes = json_is_integer(v) && json_integer_value(v) > 0 ? (int)json_integer_value(v) : 1;
    v = json_object_get(res, "tasks_per_node");
    int tasks = json_is_integer(v) && json_integer_value(v) > 0 ? (int)json_integer_value(v) : 1;
    char srun[200] = "";
    if (nodes * tasks > 1)
        snprintf(srun, sizeof srun, "srun --mpi=pmix --nodes=%d --ntasks-per-node=%d "
                 "--cpus-per-task=%d --kill-on-bad-exit=1 ", nodes, tasks, threads);
    v = json_object_get(res, "partition");
    char partition[160] = "";
    const char *p = json_is_string(v) ? json_string_value(v) : g_cfg->slurm_partition;
    /* the spec and the flag only allow A-Z a-z 0-9 . _ - in a partition */
    if (p[0]) snprintf(partition, sizeof partition, "#SBATCH --partition=%.128s\n", p);
    char qdir[2 * PATH_MAX], qlsq[2 * PATH_MAX];
    char *text = NULL;
    if (sh_quote(qdir, sizeof qdir, dir) || sh_quote(qlsq, sizeof qlsq, g_lsq)) goto out;
    const char *fmt =
        "#!/bin/sh\n"
        "#SBATCH --job-name=lsqd-%lld\n"
        "#SBATCH --comment=lsqd:%s\n"
        "#SBATCH --nodes=%d\n"
        "#SBATCH --ntasks-per-node=%d\n"
        "#SBATCH --cpus-per-task=%d\n"
        "#SBATCH --mem=%d\n"
        "#SBATCH --time=%d\n"
        "%s"
        "#SBATCH --output=%s/worker.log\n"
        "#SBATCH --open-mode=append\n"
        "# Written by lsqd for job %lld (docs/cluster.md). The job folder is on\n"
        "# the data folder that lsqd and the nodes share.\n"
        "cd %s || exit 1\n"
        "rm -f exit_status\n"
        "export OMP_WAIT_POLICY=\"${OMP_WAIT_POLICY:-passive}\"\n"
        "%s%s train spec.json --out %s --events %s/events.jsonl%s &\n"
        "pid=$!\n"
        "trap 'kill -TERM $pid 2>/dev/null' TERM INT\n"
        "wait $pid\n"
        "rc=$?\n"
        "# a trapped signal ends the wait early: wait for the worker itself\n"
        "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done\n"
        "echo $rc > exit_status.tmp && mv exit_status.tmp exit_status\n"
        "exit $rc\n";
    /* the folder is an absolute path that lsqd made: no newline in it, but
     * #SBATCH lines are not shell, so the unquoted one is refused below */
    if (strchr(dir, '\n') || strchr(dir, ' ') || strchr(g_data, ' ') || strchr(g_data, '\n'))
        goto out;
    size_t cap = strlen(fmt) + 4 * sizeof qdir + sizeof qlsq + sizeof http + sizeof srun + 512;
    text = malloc(cap);
    if (text)
        snprintf(text, cap, fmt, (long long)job_id, g_data, nodes, tasks, threads, mem, minutes,
                 partition, dir, (long long)job_id, qdir, srun, qlsq, qdir, qdir, http);
out:
    json_decref(spec);
    return text;
}

/* Takes a free slot for job_id, Slurm job slurm_id, its events file read on
 * from offset (wseq lines before it: store_job_events_offset, asked before
 * the lock is taken). NULL when every slot is taken. Under g_lock or before
 * the thread runs. */
static sjob *follow_new(int64_t job_id, const char *slurm_id, int64_t offset, int64_t wseq)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        sjob *j = &g_jobs[i];
        if (j->used) continue;
        memset(j, 0, sizeof *j);
        j->used = 1;
        j->job_id = job_id;
        snprintf(j->slurm_id, sizeof j->slurm_id, "%s", slurm_id);
        j->offset = offset > 0 ? offset : 0;
        j->wseq = wseq;
        j->srun = uses_srun(job_id);
        /* over HTTP, the file is read from its start at the end, skipping
         * what came over HTTP */
        if (g_cfg->slurm_events_http) j->offset = j->wseq = 0;
        return j;
    }
    return NULL;
}

/* Submits a claimed job. On failure the job is failed with sbatch's words. */
static void submit(int64_t job_id, const char *spec)
{
    char dir[PATH_MAX], path[PATH_MAX + 32], msg[400];
    job_dir(job_id, dir, sizeof dir);
    if (mkdir_p(dir)) {
        fail_job(job_id, "io_error", "cannot create the job folder", -1000);
        return;
    }
    snprintf(path, sizeof path, "%s/spec.json", dir);
    char *script = batch_script(job_id, dir, spec);
    if (!script) {
        fail_job(job_id, "internal", "cannot write the batch script (a space or newline in "
                 "the data folder's path?)", -1000);
        return;
    }
    int wrote = write_file(path, spec, 0644) == 0;
    snprintf(path, sizeof path, "%s/slurm.sh", dir);
    wrote = wrote && write_file(path, script, 0755) == 0;
    free(script);
    snprintf(path, sizeof path, "%s/exit_status", dir);
    unlink(path); /* from an earlier start of the job */
    if (wrote && g_cfg->slurm_events_http) {
        /* a new token per start; the node reads it from the job folder
         * (mode 0600), lsqd keeps only its sha256 */
        unsigned char raw[32], digest[32];
        char token[65], hex[65];
        if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
            fail_job(job_id, "internal", "cannot make the job's events token", -1000);
            return;
        }
        sha256_hex(raw, token);
        sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, token, 64);
        sha256_final(&c, digest);
        sha256_hex(digest, hex);
        snprintf(path, sizeof path, "%s/events.token", dir);
        unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        wrote = fd >= 0 && write(fd, token, 64) == 64;
        if (fd >= 0 && close(fd)) wrote = 0;
        wrote = wrote && store_job_token_set(job_id, hex) == STORE_OK;
    }
    if (!wrote) {
        fail_job(job_id, "io_error", "cannot write the job folder", -1000);
        return;
    }
    snprintf(path, sizeof path, "%s/slurm.sh", dir);
    const char *args[] = {"sbatch", "--parsable", path, NULL};
    int status;
    char err[360];
    char *out = slurm_cmd(args, &status, err, sizeof err);
    /* --parsable prints "ID" or "ID;CLUSTER" as its last line */
    char id[32] = "";
    if (out && status == 0) {
        char *line = out, *nl;
        while ((nl = strchr(line, '\n')) && nl[1]) line = nl + 1;
        size_t k = strspn(line, "0123456789");
        if (k > 0 && k < sizeof id) memcpy(id, line, k), id[k] = '\0';
        if (!id[0]) snprintf(err, sizeof err, "sbatch printed no job id: %.200s", out);
    }
    free(out);
    /* tests only: lsqd dies between sbatch and storing the id */
    if (id[0] && getenv("LSQD_SLURM_TEST_EXIT_AFTER_SBATCH")) _exit(9);
    if (!id[0]) {
        snprintf(msg, sizeof msg, "cannot submit to Slurm: %s", err);
        fail_job(job_id, "slurm_submit_failed", msg, -1000);
        return;
    }
    if (store_job_set_slurm(job_id, id) != STORE_OK)
        log_error("cannot store the Slurm id", "{s:I,s:s}", "job", (json_int_t)job_id,
                  "slurm_id", id);
    int64_t wseq = 0;
    int64_t offset = store_job_events_offset(job_id, &wseq);
    pthread_mutex_lock(&g_lock);
    sjob *j = follow_new(job_id, id, offset, wseq);
    pthread_mutex_unlock(&g_lock);
    if (!j)
        log_error("no free slot to follow the Slurm job", "{s:I,s:s}", "job",
                  (json_int_t)job_id, "slurm_id", id);
    /* a cancel that came between the claim and now found nothing to signal */
    if (store_job_cancel_requested(job_id) == 1) slurm_cancel(job_id);
    log_info("job submitted to Slurm", "{s:I,s:s,s:s}", "job", (json_int_t)job_id,
             "slurm_id", id, "dir", dir);
}

/* Stores the complete lines that the events file holds past j->offset
 * (j->wseq lines come before it). Returns how many bytes it read on. */
static int64_t follow_events(sjob *j)
{
    char path[PATH_MAX + 32];
    job_dir(j->job_id, path, PATH_MAX);
    strcat(path, "/events.jsonl");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0; /* not started yet */
    struct stat sb;
    if (fstat(fd, &sb) || sb.st_size <= j->offset) {
        close(fd);
        return 0;
    }
    size_t want = (size_t)(sb.st_size - j->offset);
    if (want > 4 * (size_t)MAX_LINE) want = 4 * (size_t)MAX_LINE;
    char *buf = malloc(want);
    ssize_t n = buf ? pread(fd, buf, want, j->offset) : -1;
    close(fd);
    if (n <= 0) { free(buf); return 0; }
    size_t start = 0;
    int stored = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        if (buf[i] != '\n') continue;
        if (i == start) { /* an empty line is not an event (nor numbered) */
            start = i + 1;
            continue;
        }
        int64_t end = j->offset + (int64_t)i + 1;
        json_t *ev = NULL;
        ev_type type = EV_LOG;
        lsq_err err;
        if (ev_parse(buf + start, i - start, &ev, &type, &err) != LSQ_OK) {
            /* it keeps its number: a log event saying so takes its place */
            log_warn("bad worker event", "{s:I,s:s}", "job", (json_int_t)j->job_id,
                     "error", err.message);
            type = EV_LOG;
            ev = json_pack("{s:s,s:s,s:s,s:f}", "type", "log", "code", "bad_worker_event",
                           "message", err.message, "time", (double)time(NULL));
        }
        int64_t seq;
        store_status st = store_worker_event_add(j->job_id, j->wseq + 1, type, ev, end, &seq);
        if (st != STORE_OK) {
            log_error("cannot store event", "{s:I,s:I,s:i}", "job", (json_int_t)j->job_id,
                      "worker_seq", (json_int_t)(j->wseq + 1), "status", (int)st);
            json_decref(ev);
            break;
        }
        j->wseq++;
        if (type == EV_PROGRESS) {
            json_t *ips = json_object_get(ev, "images_per_s");
            pthread_mutex_lock(&g_lock);
            j->images_per_s = json_is_number(ips) ? json_number_value(ips) : 0;
            pthread_mutex_unlock(&g_lock);
        }
        json_decref(ev);
        stored |= seq > 0;
        start = i + 1;
    }
    /* a line longer than anything the engine writes: skip it */
    if (start == 0 && (size_t)n >= 4 * (size_t)MAX_LINE) start = (size_t)n;
    j->offset += (int64_t)start;
    free(buf);
    if (stored) hub_notify(j->job_id);
    return (int64_t)start;
}

/* The exit status that the batch script left in the job folder, -1000 when
 * there is none (the script did not get that far). */
static int read_exit_status(int64_t job_id)
{
    char path[PATH_MAX + 32];
    job_dir(job_id, path, PATH_MAX);
    strcat(path, "/exit_status");
    FILE *f = fopen(path, "r");
    int rc = -1000;
    if (f) {
        if (fscanf(f, "%d", &rc) != 1) rc = -1000;
        fclose(f);
    }
    return rc;
}

static void lower(char *out, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++) out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[i] = '\0';
}

/* Slurm is done with the job (state final, or "" when Slurm forgot it):
 * its events are drained; decide the job's end, as the local executor does
 * from a wait status, and stop following it. */
static void finish(sjob *j)
{
    while (follow_events(j) > 0) {}
    int64_t id = j->job_id;
    int rc = read_exit_status(id);
    pthread_mutex_lock(&g_lock);
    int cancelled = j->cancel;
    pthread_mutex_unlock(&g_lock);
    if (!cancelled) cancelled = store_job_cancel_requested(id) == 1;
    const char *st = j->state;
    char msg[400], code[64];
    if (!cancelled && j->requeued && (rc == -1000 || rc == EXIT_CODE_CANCELLED_BY_TERM) &&
        !strcmp(st, "FAILED")) {
        /* the run that a failed node ended reported its exit to slurmctld
         * only after Slurm had requeued the job, and Slurm took that late
         * exit as the job's: the work is not done and its checkpoint is in
         * the folder, so lsqd queues the job again and a new Slurm job
         * resumes it */
        log_warn("Slurm failed a requeued job with the exit of its killed run; queued again "
                 "to resume from the checkpoint", "{s:I,s:s}", "job", (json_int_t)id,
                 "slurm_id", j->slurm_id);
        store_job_requeue(id);
        hub_notify(id);
        pthread_mutex_lock(&g_lock);
        memset(j, 0, sizeof *j);
        pthread_mutex_unlock(&g_lock);
        return;
    }
    if (cancelled) {
        store_job_finish(id, JOB_CANCELLED, NULL, NULL, rc);
        log_info("job cancelled", "{s:I,s:s}", "job", (json_int_t)id, "slurm_id", j->slurm_id);
    } else if (rc == 0) {
        store_job_finish(id, JOB_SUCCEEDED, NULL, NULL, 0);
        log_info("job succeeded", "{s:I,s:s}", "job", (json_int_t)id, "slurm_id", j->slurm_id);
    } else if (!strcmp(st, "NODE_FAIL") || !strcmp(st, "TIMEOUT") ||
               !strcmp(st, "OUT_OF_MEMORY") || !strcmp(st, "BOOT_FAIL") ||
               !strcmp(st, "PREEMPTED") || !strcmp(st, "DEADLINE")) {
        char low[32];
        lower(low, sizeof low, st);
        snprintf(code, sizeof code, "slurm_%s", low);
        snprintf(msg, sizeof msg, "Slurm ended job %s with %s%s%s%s; the job folder keeps its "
                 "last checkpoint", j->slurm_id, st, j->reason[0] ? " (" : "", j->reason,
                 j->reason[0] ? ")" : "");
        fail_job(id, code, msg, rc);
    } else if (rc == EXIT_CODE_CANCELLED_BY_TERM) {
        store_job_finish(id, JOB_CANCELLED, NULL, NULL, rc);
        log_info("job cancelled by a SIGTERM from outside lsqd", "{s:I,s:s}", "job",
                 (json_int_t)id, "slurm_id", j->slurm_id);
    } else if (rc == 1) {
        /* the worker wrote an error event, whose code and message are kept */
        store_job_finish(id, JOB_FAILED, NULL, NULL, 1);
        log_warn("job failed", "{s:I}", "job", (json_int_t)id);
    } else if (rc > -1000) {
        snprintf(msg, sizeof msg, "worker exited with status %d (Slurm job %s)", rc,
                 j->slurm_id);
        fail_job(id, "worker_failed", msg, rc);
    } else if (!st[0]) {
        snprintf(msg, sizeof msg, "Slurm no longer knows job %s (neither squeue nor sacct "
                 "lists it) and the worker left no exit status", j->slurm_id);
        fail_job(id, "slurm_vanished", msg, -1000);
    } else {
        char low[32];
        lower(low, sizeof low, st);
        snprintf(code, sizeof code, "slurm_%s", low);
        snprintf(msg, sizeof msg, "Slurm job %s ended %s%s%s%s before the worker finished",
                 j->slurm_id, st, j->reason[0] ? " (" : "", j->reason, j->reason[0] ? ")" : "");
        fail_job(id, code, msg, -1000);
    }
    hub_notify(id);
    pthread_mutex_lock(&g_lock);
    memset(j, 0, sizeof *j);
    pthread_mutex_unlock(&g_lock);
}

/* Sets *state from `sacct` for a job that squeue no longer lists: 1 found,
 * 0 not known to sacct (or accounting is off), -1 sacct failed. */
static int sacct_state(const sjob *j, char *state, size_t cap)
{
    const char *args[] = {"sacct", "-n", "-P", "-X", "-j", j->slurm_id, "-o", "State", NULL};
    int status;
    char err[360];
    char *out = slurm_cmd(args, &status, err, sizeof err);
    int r = -1;
    if (out && status == 0) {
        char word[32] = "";
        sscanf(out, "%31[A-Z_]", word); /* "CANCELLED by 0" -> CANCELLED */
        snprintf(state, cap, "%s", word);
        r = word[0] != 0;
    } else if (out && strstr(out, "accounting storage is disabled")) {
        r = 0;
    } else {
        log_warn("sacct failed", "{s:s,s:s}", "slurm_id", j->slurm_id, "error", err);
    }
    free(out);
    return r;
}

/* 1 when every line of squeue's output is "ID|STATE|REASON" (no line: no
 * job), as -o "%i|%T|%r" prints them. */
static int squeue_list_ok(const char *out)
{
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len) {
            size_t id = strspn(p, "0123456789_[]-+");
            size_t st = id < len && p[id] == '|' ? strspn(p + id + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") : 0;
            if (!id || !st || id + 1 + st >= len || p[id + 1 + st] != '|') return 0;
        }
        p += len + (nl ? 1 : 0);
    }
    return 1;
}

/* One squeue call for every followed job; a job missing from it twice in a
 * row is looked up with sacct, then taken as forgotten by Slurm. */
static void poll_states(void)
{
    const char *args[] = {"squeue", "--me", "-h", "-t", "all", "-o", "%i|%T|%r", NULL};
    int status;
    char err[360];
    char *out = slurm_cmd(args, &status, err, sizeof err);
    if (out && status == 0 && !squeue_list_ok(out)) {
        /* a job missing from a garbled list would be taken as ended */
        snprintf(err, sizeof err, "squeue printed something other than its job list: %.200s",
                 out);
        status = -1;
    }
    if (!out || status != 0) {
        log_warn("squeue failed; job states are not updated", "{s:s}", "error", err);
        free(out);
        return;
    }
    for (int i = 0; i < MAX_JOBS; i++) {
        sjob *j = &g_jobs[i];
        if (!j->used) continue;
        char key[40];
        snprintf(key, sizeof key, "%s|", j->slurm_id);
        const char *line = NULL;
        for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
            if (!strncmp(p, key, strlen(key))) { line = p; break; }
        if (line) {
            char st[32] = "", reason[96] = "";
            sscanf(line + strlen(key), "%31[^|\n]|%95[^\n]", st, reason);
            if (strcmp(st, j->state))
                log_info("Slurm job state", "{s:I,s:s,s:s,s:s}", "job", (json_int_t)j->job_id,
                         "slurm_id", j->slurm_id, "state", st, "reason", reason);
            if (!strcmp(st, "PENDING") && j->state[0] && strcmp(j->state, "PENDING")) {
                /* requeued by Slurm (a node failed): the exit status of the run
                 * it ended is not the job's */
                char path[PATH_MAX + 32];
                job_dir(j->job_id, path, PATH_MAX);
                strcat(path, "/exit_status");
                unlink(path);
                j->requeued = 1;
                log_warn("Slurm requeued the job; its next run resumes from the checkpoint",
                         "{s:I,s:s}", "job", (json_int_t)j->job_id, "slurm_id", j->slurm_id);
            }
            snprintf(j->state, sizeof j->state, "%s", st);
            snprintf(j->reason, sizeof j->reason, "%s", strcmp(reason, "None") ? reason : "");
            j->missing = 0;
            continue;
        }
        if (++j->missing < 2) continue;
        char st[32] = "";
        int r = sacct_state(j, st, sizeof st);
        if (r < 0) continue; /* ask again at the next poll */
        if (r == 1 && !slurm_state_final(st)) continue;
        snprintf(j->state, sizeof j->state, "%s", r == 1 ? st : "");
        j->reason[0] = '\0';
        j->missing = -1; /* final */
    }
    free(out);
}

/* Cancel: scancel --signal=TERM (--full: the batch shell passes it to the
 * worker; ranks under srun get it from their step), which checkpoints; a
 * hard scancel after the grace period. A job that
 * Slurm has not started yet is removed at once. */
static void do_cancels(double t)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        sjob *j = &g_jobs[i];
        pthread_mutex_lock(&g_lock);
        int cancel = j->used && j->cancel;
        pthread_mutex_unlock(&g_lock);
        if (!cancel || j->killed || t < j->retry_at) continue;
        int pending = !strcmp(j->state, "PENDING");
        int hard = pending || (j->term_at > 0 && t - j->term_at >= g_cfg->grace_s);
        if (j->term_at > 0 && !hard) continue;
        /* one rank: the batch shell passes SIGTERM to the worker (--full
         * signals it). Ranks under srun: their step alone is signalled;
         * srun itself would end the step on a SIGTERM, killing the ranks
         * before they checkpoint */
        const char *soft[] = {"scancel", "--signal=TERM", j->srun ? j->slurm_id : "--full",
                              j->srun ? NULL : j->slurm_id, NULL};
        const char *kill9[] = {"scancel", j->slurm_id, NULL};
        int status;
        char err[360];
        char *out = slurm_cmd(hard ? kill9 : soft, &status, err, sizeof err);
        free(out);
        if (status != 0) {
            log_warn("scancel failed; trying again", "{s:I,s:s,s:s}", "job",
                     (json_int_t)j->job_id, "slurm_id", j->slurm_id, "error", err);
            add_own_event(j->job_id, EV_LOG, "slurm_cancel_failed", err);
            j->retry_at = t + g_cfg->slurm_poll_s;
            continue;
        }
        if (hard) {
            j->killed = 1;
            if (!pending)
                log_warn("worker killed after the grace period", "{s:I,s:s}", "job",
                         (json_int_t)j->job_id, "slurm_id", j->slurm_id);
        } else {
            j->term_at = t;
        }
    }
}

static int followed(void)
{
    int n = 0;
    for (int i = 0; i < MAX_JOBS; i++) n += g_jobs[i].used;
    return n;
}

static void *slurm_main(void *arg)
{
    (void)arg;
    double next_poll = 0;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        int stopping = g_stopping;
        pthread_mutex_unlock(&g_lock);
        if (stopping) break;

        while (followed() < g_cfg->workers && (!g_cfg->slurm_events_http || g_callback_set)) {
            int64_t id;
            char *spec = NULL;
            int attempts;
            if (store_job_claim(g_cfg->max_running_per_user, &id, &spec, &attempts) != STORE_OK)
                break;
            hub_notify(id);
            submit(id, spec);
            free(spec);
        }

        /* with HTTP events the file is read once, at the end: whatever did
         * not come over HTTP (lsqd was down, the path dropped) */
        for (int i = 0; i < MAX_JOBS && !g_cfg->slurm_events_http; i++)
            if (g_jobs[i].used) follow_events(&g_jobs[i]);

        double t = mono_s();
        if (t >= next_poll) {
            if (followed()) poll_states();
            next_poll = t + g_cfg->slurm_poll_s;
            for (int i = 0; i < MAX_JOBS; i++) {
                sjob *j = &g_jobs[i];
                if (j->used && (j->missing < 0 || slurm_state_final(j->state))) finish(j);
            }
        }
        do_cancels(t);

        struct pollfd pf = {g_wake[0], POLLIN, 0};
        if (poll(&pf, 1, 200) > 0) {
            char buf[256];
            while (read(g_wake[0], buf, sizeof buf) > 0) {}
        }
    }
    return NULL;
}

/* At start: the Slurm jobs of this data folder (named lsqd-ID, commented
 * lsqd:DATA) that lsqd does not follow were submitted by an lsqd that died
 * before it stored their id. One whose job still waits for it is adopted
 * (its id stored, followed as if lsqd had never stopped); one whose job
 * ended or has another Slurm job is cancelled, so that nothing runs unknown. */
static void adopt_orphans(void)
{
    const char *args[] = {"squeue", "--me", "-h", "-o", "%i|%j|%k", NULL};
    int status;
    char err[360], comment[PATH_MAX + 8];
    char *out = slurm_cmd(args, &status, err, sizeof err);
    if (!out || status != 0) {
        log_warn("squeue failed; Slurm jobs without a stored id are not looked for", "{s:s}",
                 "error", err);
        free(out);
        return;
    }
    snprintf(comment, sizeof comment, "lsqd:%s", g_data);
    for (char *line = out, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char sid[32] = "", name[64] = "";
        long long job_id = 0;
        int at = 0;
        if (sscanf(line, "%31[0-9]|%63[^|]|%n", sid, name, &at) != 2 || !at) continue;
        if (strcmp(line + at, comment) || sscanf(name, "lsqd-%lld", &job_id) != 1) continue;
        int known = 0;
        for (int i = 0; i < MAX_JOBS; i++)
            known |= g_jobs[i].used && !strcmp(g_jobs[i].slurm_id, sid);
        if (known) continue;
        store_status st = store_job_adopt_slurm(job_id, sid);
        int64_t wseq = 0, offset = st == STORE_OK ? store_job_events_offset(job_id, &wseq) : 0;
        if (st == STORE_OK && follow_new(job_id, sid, offset, wseq)) {
            log_warn("adopted a Slurm job whose id the previous lsqd did not store",
                     "{s:I,s:s}", "job", (json_int_t)job_id, "slurm_id", sid);
            add_own_event(job_id, EV_LOG, "slurm_adopted",
                          "lsqd found this job's Slurm job after a restart and follows it");
            continue;
        }
        if (st == STORE_ERR) continue;
        const char *kill_args[] = {"scancel", sid, NULL};
        char *o = slurm_cmd(kill_args, &status, err, sizeof err);
        free(o);
        if (status == 0)
            log_warn("cancelled a Slurm job of this data folder that no job waits for",
                     "{s:I,s:s}", "job", (json_int_t)job_id, "slurm_id", sid);
        else
            log_warn("cannot cancel an orphaned Slurm job", "{s:I,s:s,s:s}", "job",
                     (json_int_t)job_id, "slurm_id", sid, "error", err);
    }
    free(out);
}

int slurm_start(const lsqd_config *cfg)
{
    g_cfg = cfg;
    /* the batch script runs in the job folder: the worker's path must not
     * depend on lsqd's working directory */
    if (!realpath(cfg->lsq_bin, g_lsq)) snprintf(g_lsq, sizeof g_lsq, "%s", cfg->lsq_bin);
    if (!realpath(cfg->data, g_data)) snprintf(g_data, sizeof g_data, "%s", cfg->data);
    if (pipe2(g_wake, O_CLOEXEC | O_NONBLOCK)) return -1;
    if (cfg->slurm_callback[0]) {
        snprintf(g_callback, sizeof g_callback, "%s", cfg->slurm_callback);
        g_callback_set = 1;
    }
    json_t *running = store_jobs_slurm_running();
    size_t i;
    json_t *row;
    int n = 0;
    json_array_foreach(running, i, row) {
        if (n >= MAX_JOBS) break;
        sjob *j = &g_jobs[n++];
        memset(j, 0, sizeof *j);
        j->used = 1;
        j->job_id = (int64_t)json_integer_value(json_object_get(row, "id"));
        snprintf(j->slurm_id, sizeof j->slurm_id, "%s",
                 json_string_value(json_object_get(row, "slurm_id")));
        j->offset = (int64_t)json_integer_value(json_object_get(row, "events_offset"));
        j->cancel = json_is_true(json_object_get(row, "cancel"));
        j->wseq = (int64_t)json_integer_value(json_object_get(row, "worker_seq"));
        j->srun = uses_srun(j->job_id);
        if (cfg->slurm_events_http) j->offset = j->wseq = 0;
        log_info("following a Slurm job left running by the previous lsqd",
                 "{s:I,s:s,s:I}", "job", (json_int_t)j->job_id, "slurm_id", j->slurm_id,
                 "events_offset", (json_int_t)j->offset);
    }
    json_decref(running);
    adopt_orphans();
    n = followed();
    if (pthread_create(&g_thread, NULL, slurm_main, NULL)) return -1;
    g_started = 1;
    log_info("Slurm executor", "{s:i,s:s,s:i,s:i}", "jobs_followed", n, "partition",
             cfg->slurm_partition[0] ? cfg->slurm_partition : "(cluster default)",
             "time_min", cfg->slurm_time_min, "mem_mb", cfg->slurm_mem_mb);
    return 0;
}

void slurm_set_callback(const char *base_url)
{
    pthread_mutex_lock(&g_lock);
    if (!g_cfg->slurm_callback[0]) snprintf(g_callback, sizeof g_callback, "%s", base_url);
    __atomic_store_n(&g_callback_set, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_lock);
    wake();
}

void slurm_kick(void)
{
    if (g_started) wake();
}

void slurm_cancel(int64_t job_id)
{
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_JOBS; i++)
        if (g_jobs[i].used && g_jobs[i].job_id == job_id) g_jobs[i].cancel = 1;
    pthread_mutex_unlock(&g_lock);
    if (g_started) wake();
}

void slurm_stop(void)
{
    if (!g_started) return;
    pthread_mutex_lock(&g_lock);
    g_stopping = 1;
    pthread_mutex_unlock(&g_lock);
    wake();
    pthread_join(g_thread, NULL);
    g_started = 0;
    close(g_wake[0]);
    close(g_wake[1]);
    int n = followed();
    if (n) log_info("Slurm jobs left running; the next lsqd follows them", "{s:i}", "jobs", n);
}

int slurm_snapshot(int64_t *ids, double *images_per_s, int cap)
{
    int n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_JOBS; i++) {
        if (!g_jobs[i].used) continue;
        if (n < cap) {
            ids[n] = g_jobs[i].job_id;
            images_per_s[n] = g_jobs[i].images_per_s;
        }
        n++;
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}
