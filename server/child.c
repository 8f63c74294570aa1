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

char *child_run(char *const argv[], double timeout_s, size_t max_out, const int *stop,
                child_result *res)
{
    res->status = -1;
    res->timed_out = 0;
    res->stopped = 0;
    int p[2];
    if (pipe2(p, O_CLOEXEC)) return NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
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
        dup2(p[1], 1);
        close_range(3, ~0U, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap);
    double deadline = mono_s() + timeout_s;
    int killed = 0;
    while (buf) {
        if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
            res->stopped = 1;
            break;
        }
        double left = deadline - mono_s();
        if (left <= 0) {
            res->timed_out = 1;
            break;
        }
        struct pollfd pf = {p[0], POLLIN, 0};
        int wait_ms = left > 0.1 ? 100 : (int)(left * 1000) + 1;
        int pr = poll(&pf, 1, wait_ms);
        if (pr <= 0) continue; /* EINTR or nothing yet */
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
        if (n <= 0) break;
        len += (size_t)n;
    }
    if (!buf || killed || res->timed_out || res->stopped) {
        kill(pid, SIGKILL);
        killed = 1;
    }
    close(p[0]);
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
