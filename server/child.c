/* Child processes with captured output (child.h): fork/exec, a pipe read
 * with poll until EOF, the deadline, the output cap or a stop request. */
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Passes every complete line of buf[*len] to fn and keeps the rest; a
 * line that fills the buffer is passed as it is. */
static void take_lines(char *buf, size_t *len, size_t cap, child_line_fn fn, void *ctx)
{
    size_t start = 0;
    for (size_t i = 0; i < *len; i++) {
        if (buf[i] != '\n') continue;
        buf[i] = '\0';
        fn(buf + start, ctx);
        start = i + 1;
    }
    if (start == 0 && *len + 1 >= cap) {
        buf[*len] = '\0';
        fn(buf, ctx);
        start = *len;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
}

char *child_run(char *const argv[], double timeout_s, size_t max_out, const int *stop,
                child_line_fn on_stderr, void *ctx, child_result *res)
{
    res->status = -1;
    res->timed_out = 0;
    res->stopped = 0;
    int p[2], e[2] = {-1, -1};
    if (pipe2(p, O_CLOEXEC)) return NULL;
    if (on_stderr && pipe2(e, O_CLOEXEC)) {
        close(p[0]);
        close(p[1]);
        return NULL;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        if (on_stderr) close(e[0]), close(e[1]);
        return NULL;
    }
    if (pid == 0) {
        /* child: only async-signal-safe calls until exec */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(125);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 2);
        }
        if (on_stderr) dup2(e[1], 2);
        dup2(p[1], 1);
        close_range(3, ~0U, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    if (on_stderr) close(e[1]);
    size_t len = 0, cap = 65536, elen = 0;
    char *buf = malloc(cap), ebuf[1024];
    double deadline = mono_s() + timeout_s;
    int killed = 0, out_open = 1, err_open = on_stderr != NULL;
    while (buf && (out_open || err_open)) {
        if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
            res->stopped = 1;
            break;
        }
        double left = deadline - mono_s();
        if (left <= 0) {
            res->timed_out = 1;
            break;
        }
        struct pollfd pf[2] = {{out_open ? p[0] : -1, POLLIN, 0},
                               {err_open ? e[0] : -1, POLLIN, 0}};
        int wait_ms = left > 0.1 ? 100 : (int)(left * 1000) + 1;
        int pr = poll(pf, 2, wait_ms);
        if (pr <= 0) continue; /* EINTR or nothing yet */
        if (pf[1].revents) {
            ssize_t n = read(e[0], ebuf + elen, sizeof ebuf - 1 - elen);
            if (n > 0) {
                elen += (size_t)n;
                take_lines(ebuf, &elen, sizeof ebuf, on_stderr, ctx);
            } else if (!(n < 0 && errno == EINTR)) {
                err_open = 0;
            }
        }
        if (!pf[0].revents) continue;
        if (len + 4096 + 1 > cap) {
            if (cap >= max_out) {
                killed = 1;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(p[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) out_open = 0;
        else len += (size_t)n;
    }
    if (!buf || killed || res->timed_out || res->stopped) {
        kill(pid, SIGKILL);
        killed = 1;
    }
    close(p[0]);
    if (on_stderr) close(e[0]);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (!buf) return NULL;
    buf[len] = '\0';
    res->status = !killed && WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    return buf;
}

void child_scrub(char *out, size_t cap, const char *msg, const char *path, const char *name)
{
    if (!cap) return;
    size_t pl = strlen(path), o = 0;
    for (const char *p = msg; *p && o + 1 < cap;) {
        if (pl && !strncmp(p, path, pl)) {
            o += (size_t)snprintf(out + o, cap - o, "%s", name);
            if (o >= cap) o = cap - 1;
            p += pl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}
