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
#include "evpost.h"
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
    "                 [--events-url URL --events-token-file FILE]\n"
    "\n"
    "Trains the job that SPEC.json describes (docs/job-spec.md): pretraining in full\n"
    "precision, then LSQ fine-tuning, with a test evaluation after every epoch.\n"
    "  --out DIR        output folder (default runs/NAME); a checkpoint.lsqc there\n"
    "                   resumes the run exactly where it stopped\n"
    "  --events-fd N    write JSON-lines events to file descriptor N\n"
    "  --events FILE    write JSON-lines events to FILE (appended)\n"
    "  --events-url URL also POST them to lsqd (with --events; the Slurm executor's\n"
    "                   --slurm-events http), resending what lsqd has not acknowledged\n"
    "  --events-token-file FILE  the job's token for --events-url\n"
    "  --threads N      override the spec's thread count\n"
    "  --quiet          no progress line on the terminal\n"
    "Under mpirun or srun (docs/cluster.md) every rank trains its share of each\n"
    "batch; rank 0 alone writes the folder, the events and the progress line.\n"
    "SIGTERM or Ctrl-C stops within one batch (training or evaluation), writes a\n"
    "checkpoint of the progress since the last one and exits with status 3.\n"
    "Exit status: 0 done, 1 failed, 2 usage, 3 stopped (resumable with the same command).\n";

/* The spec checked as lsqd checks a submitted one (net_check_spec_plan):
 * shapes, when not NULL, receives the network's plan. */
static int load_spec_file(const char *cmd, const char *path, lsq_spec *spec, json_t **shapes)
{
    memset(spec, 0, sizeof *spec);
    lsq_err err;
    lsq_err_clear(&err);
    lsq_status st = spec_load_file(spec, path, &err);
    if (st == LSQ_OK) st = net_check_spec_plan(spec, shapes, &err);
    if (st != LSQ_OK) {
        cli_print_err(cmd, &err);
        spec_free(spec);
        return -1;
    }
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    int plan = argc == 3 && !strcmp(argv[2], "--plan");
    if (cli_has_help(argc, argv) || (argc != 2 && !plan)) {
        fputs("usage: lsq check SPEC.json [--plan]\n\nValidates a job spec as lsqd does (the "
              "network's shapes, sizes and limits\nincluded, nothing allocated) and prints it "
              "with every default.\n  --plan   print the network instead: every layer's shape, "
              "parameters and\n           bytes at the job's batch size, and the limits\n",
              !cli_has_help(argc, argv) ? stderr : stdout);
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    lsq_spec spec;
    json_t *shapes = NULL;
    if (load_spec_file("check", argv[1], &spec, plan ? &shapes : NULL) != 0) return 1;
    json_t *j = plan ? shapes : spec_to_json(&spec);
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(j);
    spec_free(&spec);
    return 0;
}

typedef struct {
    const char *spec_path, *out, *events_file, *events_url, *token_file;
    int events_fd, threads, quiet;
} train_args;

static int train_ranked(train_args a, lsq_dist *dist);

static int cmd_train(int argc, char **argv)
{
    if (cli_has_help(argc, argv)) {
        fputs(TRAIN_USAGE, stdout);
        return 0;
    }
    const char *spec_path = NULL, *out = NULL, *events_file = NULL, *events_url = NULL,
               *token_file = NULL;
    int events_fd = -1, threads = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(a, "--events-fd") == 0 && i + 1 < argc) {
            if (cli_parse_int("train", "--events-fd", argv[++i], 0, 1 << 20, &events_fd)) return 2;
        } else if (strcmp(a, "--events") == 0 && i + 1 < argc) events_file = argv[++i];
        else if (strcmp(a, "--events-url") == 0 && i + 1 < argc) events_url = argv[++i];
        else if (strcmp(a, "--events-token-file") == 0 && i + 1 < argc) token_file = argv[++i];
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
    if ((events_url || token_file) && !(events_url && token_file && events_file)) {
        fprintf(stderr, "lsq train: --events-url needs --events-token-file and --events\n");
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
    train_args a = {spec_path, out, events_file, events_url, token_file, events_fd, threads,
                    quiet};
    int rc = train_ranked(a, &dist);
    dist_finalize(&dist);
    return rc;
}

/* cmd_train after MPI started: every rank trains, rank 0 alone writes the
 * events (to a file, a descriptor, or lsqd over HTTP) and the progress line. */
static int train_ranked(train_args a, lsq_dist *dist)
{
    const char *out = a.out, *events_file = a.events_file;
    int events_fd = a.events_fd, quiet = a.quiet;
    if (dist->rank != 0) {
        events_file = NULL, events_fd = -1, quiet = 1;
        a.events_url = NULL;
    }
    evpost *post = NULL;
    if (a.events_url) {
        post = evpost_start(events_file, a.events_url, a.token_file, &events_fd);
        if (!post) return 1;
    } else if (events_file) {
        events_fd = open(events_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (events_fd < 0) {
            fprintf(stderr, "lsq train: cannot open %s: %s\n", events_file, strerror(errno));
            return 1;
        }
    }
    ev_sink sink;
    ev_sink_init(&sink, events_fd);
    lsq_spec spec;
    lsq_err err;
    lsq_err_clear(&err);
    memset(&spec, 0, sizeof spec);
    lsq_status st = spec_load_file(&spec, a.spec_path, &err);
    if (st == LSQ_OK) st = net_check_spec_plan(&spec, NULL, &err);
    if (st != LSQ_OK) {
        /* the spec passed lsqd's door, so what fails now changed since (a
         * dataset's file, an init.from model): the reader of the events
         * (lsqd) learns why, as from a failure while training */
        ev_emit(&sink, EV_ERROR, json_pack("{s:s,s:s,s:s}", "code", LSQ_STATUS_NAMES[st],
                                           "message", err.message, "field", err.field));
        cli_print_err("train", &err);
        spec_free(&spec);
        if (post) evpost_finish(post, 30);
        else if (events_file) close(events_fd);
        return 1;
    }
    char outbuf[1024];
    if (!out) {
        mkdir("runs", 0755);
        snprintf(outbuf, sizeof outbuf, "runs/%s", spec.name);
        out = outbuf;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    train_opts opts = {&sink, &g_stop, quiet ? NULL : stderr, a.threads, dist};
    double acc = 0;
    st = train_run(&spec, out, &opts, &acc, &err);
    spec_free(&spec);
    if (post) {
        long left = evpost_finish(post, 30);
        if (left) fprintf(stderr, "lsq train: %ld events not acknowledged by lsqd (in the "
                                  "events file)\n", left);
    } else if (events_file) {
        close(events_fd);
    }
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
