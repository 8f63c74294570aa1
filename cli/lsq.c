/* lsq: one command for local work (train, eval, export, predict, info) and
 * for talking to lsqd (see `lsq --help`). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ckpt.h"
#include "data.h"
#include "events.h"
#include "net.h"
#include "spec.h"
#include "train.h"

static volatile sig_atomic_t g_stop = 0;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const char *USAGE =
    "usage: lsq COMMAND [ARGS]\n"
    "\n"
    "Local work:\n"
    "  train SPEC.json [--out DIR] [--events-fd N | --events FILE] [--threads N] [--quiet]\n"
    "                     train a job (full precision or LSQ) into DIR\n"
    "  eval MODEL         test accuracy and loss of a checkpoint (.lsqc) or packed model (.lsqm)\n"
    "  export CHECKPOINT --format lsqm|onnx [-o FILE]\n"
    "  predict MODEL.lsqm IMAGES...   classify IDX / PGM / PNG images\n"
    "  info MODEL         layers, bits, step sizes and size of a model\n"
    "  check SPEC.json    validate a job spec and print it with every default\n"
    "\n"
    "Talking to lsqd (LSQD_URL, default http://127.0.0.1:8080):\n"
    "  submit SPEC.json | jobs | status ID | watch ID | cancel ID | download ID NAME [-o FILE]\n"
    "\n"
    "Run `lsq COMMAND --help` for the options of one command.\n";

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
    "SIGTERM or Ctrl-C stops within one batch (training or evaluation), writes a\n"
    "checkpoint of the progress since the last one and exits with status 3.\n"
    "Exit status: 0 done, 1 failed, 2 usage, 3 stopped (resumable with the same command).\n";

static const char *EVAL_USAGE =
    "usage: lsq eval MODEL [--data DIR] [--limit N] [--threads N]\n"
    "\n"
    "Prints the test accuracy and mean loss of MODEL on the test set of the\n"
    "dataset it was trained on. MODEL is a checkpoint (.lsqc, float engine) or a\n"
    "packed model (.lsqm, integer engine).\n";

int cli_read_file(const char *path, char **out, size_t *len)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f) || !buf;
    fclose(f);
    if (bad) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

void cli_print_err(const char *cmd, const lsq_err *err)
{
    if (err->field[0] && !strstr(err->message, err->field))
        fprintf(stderr, "lsq %s: %s: %s\n", cmd, err->field, err->message);
    else
        fprintf(stderr, "lsq %s: %s\n", cmd, err->message);
}

int cli_has_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    return 0;
}

static int parse_int_arg(const char *cmd, const char *opt, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "lsq %s: %s must be an integer in %d..%d, got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

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
            if (parse_int_arg("train", "--events-fd", argv[++i], 0, 1 << 20, &events_fd)) return 2;
        } else if (strcmp(a, "--events") == 0 && i + 1 < argc) events_file = argv[++i];
        else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            if (parse_int_arg("train", "--threads", argv[++i], 1, 256, &threads)) return 2;
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
    lsq_spec spec;
    if (load_spec_file("train", spec_path, &spec) != 0) return 1;
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
    train_opts opts = {&sink, &g_stop, quiet ? NULL : stderr, threads};
    lsq_err err;
    lsq_err_clear(&err);
    double acc = 0;
    lsq_status st = train_run(&spec, out, &opts, &acc, &err);
    spec_free(&spec);
    if (events_file) close(events_fd);
    if (st == LSQ_ERR_CANCELLED) {
        fprintf(stderr, "\nlsq train: %s\n", err.message);
        return 3;
    }
    if (st != LSQ_OK) {
        fputc('\n', stderr);
        cli_print_err("train", &err);
        return 1;
    }
    if (!quiet) fprintf(stderr, "done: test accuracy %.4f; model in %s/\n", acc, out);
    return 0;
}

static int cmd_eval(int argc, char **argv)
{
    if (cli_has_help(argc, argv)) {
        fputs(EVAL_USAGE, stdout);
        return 0;
    }
    const char *model = NULL, *data = NULL;
    int limit = 0, threads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) data = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (parse_int_arg("eval", "--limit", argv[++i], 0, 1 << 30, &limit)) return 2;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            if (parse_int_arg("eval", "--threads", argv[++i], 1, 256, &threads)) return 2;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "lsq eval: unknown option '%s'\n%s", argv[i], EVAL_USAGE);
            return 2;
        } else if (!model) model = argv[i];
        else {
            fprintf(stderr, "lsq eval: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fputs(EVAL_USAGE, stderr);
        return 2;
    }
    size_t ml = strlen(model);
    if (ml > 5 && strcmp(model + ml - 5, ".lsqm") == 0) return cli_eval_lsqm(model, data, limit, threads);
    train_set_threads(threads);
    lsq_err err;
    lsq_err_clear(&err);
    lsq_ckpt c;
    if (ckpt_load(&c, model, &err) != LSQ_OK) {
        cli_print_err("eval", &err);
        return 1;
    }
    lsq_net net;
    if (ckpt_build_net(&net, &c, 256, &err) != LSQ_OK) {
        cli_print_err("eval", &err);
        ckpt_free(&c);
        return 1;
    }
    const char *dsname = "fashion-mnist";
    const json_t *sj = json_object_get(c.header, "spec");
    const char *dsn = json_string_value(json_object_get(json_object_get(sj, "dataset"), "name"));
    if (dsn) dsname = dsn;
    if (!data) data = json_string_value(json_object_get(json_object_get(sj, "dataset"), "path"));
    lsq_dataset test;
    int rc = 0;
    if (dataset_load(NULL, &test, dsname, data, 0, limit, &err) != LSQ_OK) {
        cli_print_err("eval", &err);
        rc = 1;
    } else {
        double acc, loss;
        train_evaluate(&net, &test, 256, NULL, &acc, &loss);
        printf("model %s\nengine float%s\nimages %d\naccuracy %.4f\nloss %.4f\n", model,
               net.quantized ? " (fake-quantized)" : "", test.n, acc, loss);
        dataset_free(&test);
    }
    net_free(&net);
    ckpt_free(&c);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    argc--, argv++;
    if (strcmp(cmd, "train") == 0) return cmd_train(argc, argv);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc, argv);
    if (strcmp(cmd, "check") == 0) return cmd_check(argc, argv);
    int rc = cli_client_dispatch(cmd, argc, argv);
    if (rc >= 0) return rc;
    rc = cli_dispatch_more(cmd, argc, argv);
    if (rc >= 0) return rc;
    fprintf(stderr, "lsq: unknown command '%s'\n\n%s", cmd, USAGE);
    return 2;
}
