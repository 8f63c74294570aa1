/* Child processes that lsqd runs on untrusted files (the importers of `lsq`):
 * a parser fed by strangers never runs inside the daemon. The child's
 * standard output is captured; its run time and output are capped, and a
 * caller may stop it early (lsqd shutting down). */
#ifndef LSQD_CHILD_H
#define LSQD_CHILD_H

#include <stddef.h>

typedef struct {
    int status;      /* the exit status; -1 when killed or not started */
    int timed_out;   /* killed at the time limit */
    int stopped;     /* killed because *stop became non-zero */
} child_result;

/* Called with each line the child writes on its standard error (without
 * the newline; a line over 1 KiB is cut there), on the calling thread. */
typedef void (*child_line_fn)(const char *line, void *ctx);

/* Runs argv (argv[0] a path; stdin on /dev/null, stderr too unless
 * on_stderr is given, a clean signal mask, killed if lsqd dies) for at most
 * timeout_s seconds and max_out bytes of output; stop, when not NULL, is
 * polled about every 100 ms and kills the child when it reads non-zero.
 * on_stderr (may be NULL) gets the child's standard error line by line.
 * Returns what the child printed (NUL-terminated; the caller frees) with res
 * filled, or NULL when it could not be run at all (res->status -1). */
char *child_run(char *const argv[], double timeout_s, size_t max_out, const int *stop,
                child_line_fn on_stderr, void *ctx, child_result *res);

/* Copies msg (a child's error message) to out[cap] with every occurrence of
 * path replaced by name: clients see the name they gave, never a server
 * path. An empty path copies msg as it is. */
void child_scrub(char *out, size_t cap, const char *msg, const char *path, const char *name);

#endif
