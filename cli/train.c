/* lsq train and lsq check: a job spec validated, and trained into a run
 * folder (full precision and LSQ), with events and a resumable stop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "core/spec.h"
#include "graph/net.h"
#include "train/dist.h"
#include "train/events.h"
#include "train/train.h"
#include "util.h"

static volatile sig_atomic_t g_stop = 0;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const char *TRAIN_USAGE =
    "usage: lsq train SPEC.json [--out DIR] [--events-fd N | --events FILE] [--threads N] [--quiet]\n"
    "\n"
    "Trains the job that SPEC.json describes (docs/job-spec.md): pretraining in full\n"
    "precision, then LSQ fine-tuning, with a test evaluation after every epoch.\n"
    "  --out DIR        output folder (default runs/NAME); a checkpoint.lsqc there\n"
    "                   resumes the run exactly where it stopped\n"
    "  --events-fd N    write JSON-lines events to file descriptor N\n"
    "  --events FILE    write JSON-lines events to FILE (appended)\n"
    "  --threads N      override the spec's thread count\n"
    "  --quiet          no progress line on the terminal\n"
    "Under mpirun or srun (docs/cluster.md) every rank trains its share of each\n"
    "batch; rank 0 alone writes the folder, the events and the progress line.\n"
    "SIGTERM or Ctrl-C stops within one batch (training or evaluation), writes a\n"
    "checkpoint of the progress since the last one and exits with status 3.\n"
    "Exit status: 0 done, 1 failed, 2 usage, 3 stopped (resumable with the same command).\n";

static int load_spec_file(const char *cmd, const char *path, lsq_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    lsq_err err;
    lsq_err_clear(&err);
    lsq_status st = spec_load_file(spec, path, &err);
    if (st == LSQ_OK) st = net_check_spec(spec, &err);
    if (st != LSQ_OK) {
        cli_print_err(cmd, &err);
        spec_free(spec);
        return -1;
    }
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    if (cli_has_help(argc, argv) || argc != 2) {
        fputs("usage: lsq check SPEC.json\n\nValidates a job spec and prints it with every default.\n",
              argc != 2 && !cli_has_help(argc, argv) ? stderr : stdout);
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    lsq_spec spec;
    if (load_spec_file("check", argv[1], &spec) != 0) return 1;
    json_t *j = spec_to_json(&spec);
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(j);
    spec_free(&spec);
    return 0;
}

static int train_ranked(const char *spec_path, const char *out, const char *events_file,
                        int events_fd, int threads, int quiet, lsq_dist *dist);

static int cmd_train(int argc, char **argv)
{
    if (cli_has_help(argc, argv)) {
        fputs(TRAIN_USAGE, stdout);
        return 0;
    }
    const char *spec_path = NULL, *out = NULL, *events_file = NULL;
    int events_fd = -1, threads = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(a, "--events-fd") == 0 && i + 1 < argc) {
            if (cli_parse_int("train", "--events-fd", argv[++i], 0, 1 << 20, &events_fd)) return 2;
        } else if (strcmp(a, "--events") == 0 && i + 1 < argc) events_file = argv[++i];
        else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            if (cli_parse_int("train", "--threads", argv[++i], 1, 256, &threads)) return 2;
        } else if (strcmp(a, "--quiet") == 0) quiet = 1;
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lsq train: unknown option '%s'\n%s", a, TRAIN_USAGE);
            return 2;
        } else if (!spec_path) spec_path = a;
        else {
            fprintf(stderr, "lsq train: unexpected argument '%s'\n%s", a, TRAIN_USAGE);
            return 2;
        }
    }
    if (!spec_path) {
        fputs(TRAIN_USAGE, stderr);
        return 2;
    }
    if (events_fd >= 0 && events_file) {
        fprintf(stderr, "lsq train: give --events-fd or --events, not both\n");
        return 2;
    }
    /* under mpirun / srun every rank runs this; alone, one rank without MPI */
    lsq_dist dist;
    lsq_err err;
    lsq_err_clear(&err);
    if (dist_init(&dist, NULL, NULL, &err) != LSQ_OK) {
        cli_print_err("train", &err);
        return 1;
    }
    int rc = train_ranked(spec_path, out, events_file, events_fd, threads, quiet, &dist);
    dist_finalize(&dist);
    return rc;
}

/* cmd_train after MPI started: every rank trains, rank 0 alone writes the
 * events and the progress line. */
static int train_ranked(const char *spec_path, const char *out, const char *events_file,
                        int events_fd, int threads, int quiet, lsq_dist *dist)
{
    lsq_spec spec;
    if (load_spec_file("train", spec_path, &spec) != 0) return 1;
    if (dist->rank != 0) {
        events_file = NULL, events_fd = -1, quiet = 1;
    }
    char outbuf[1024];
    if (!out) {
        mkdir("runs", 0755);
        snprintf(outbuf, sizeof outbuf, "runs/%s", spec.name);
        out = outbuf;
    }
    if (events_file) {
        events_fd = open(events_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (events_fd < 0) {
            fprintf(stderr, "lsq train: cannot open %s: %s\n", events_file, strerror(errno));
            spec_free(&spec);
            return 1;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    ev_sink sink;
    ev_sink_init(&sink, events_fd);
    train_opts opts = {&sink, &g_stop, quiet ? NULL : stderr, threads, dist};
    lsq_err err;
    lsq_err_clear(&err);
    double acc = 0;
    lsq_status st = train_run(&spec, out, &opts, &acc, &err);
    spec_free(&spec);
    if (events_file) close(events_fd);
    if (st == LSQ_ERR_CANCELLED) {
        if (dist->rank == 0) fprintf(stderr, "\nlsq train: %s\n", err.message);
        return 3;
    }
    if (st != LSQ_OK) {
        if (dist->size > 1) fprintf(stderr, "\nlsq train: rank %d of %d:", dist->rank, dist->size);
        fputc('\n', stderr);
        cli_print_err("train", &err);
        return 1;
    }
    if (!quiet) fprintf(stderr, "done: test accuracy %.4f; model in %s/\n", acc, out);
    return 0;
}

int cli_train_dispatch(const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "train") == 0) return cmd_train(argc, argv);
    if (strcmp(cmd, "check") == 0) return cmd_check(argc, argv);
    return -1;
}
