/* lsq dataset import, info and samples: a dataset decoded once into the
 * cache that training reads (engine/data/cache.h), its summary, and a PNG
 * of a few images of every class. With
 * --json the command prints exactly one JSON object on stdout, the summary
 * or {"error": {"code", "message", "field"}} (exit status 1): lsqd runs the
 * import in a child process to register an upload and reads that line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "commands.h"
#include "data/cache.h"
#include "data/import.h"
#include "util.h"

static const char *DATASET_USAGE =
    "usage: lsq dataset import SRC --out DIR [--format F] [--size HxW] [--channels 1|3]\n"
    "                          [--test-fraction F] [--seed S] [--labels fine|coarse]\n"
    "                          [--max-bytes N] [--json] [--progress]\n"
    "       lsq dataset info DIR [--json]\n"
    "       lsq dataset samples DIR --out FILE.png [--per-class N] [--json]\n"
    "\n"
    "import decodes the dataset at SRC (a folder, or a .tar, .tar.gz or .zip; a .npz)\n"
    "once into DIR/" CACHE_FILE ", which a job spec names with \"dataset\": {\"cache\": DIR}.\n"
    "  --format F         idx, cifar10, cifar100, folder or npz (default: guessed)\n"
    "  --size HxW         resize every image to H x W (default: the source's size;\n"
    "                     images of different sizes need it)\n"
    "  --channels 1|3     convert to grey or colour (default: the source's; mixed\n"
    "                     grey and colour images need it)\n"
    "  --test-fraction F  folder: share of each class held out for test (default 0.2)\n"
    "  --seed S           folder: seed of the split and of the stored order (default 1)\n"
    "  --labels L         cifar100: fine (100 classes, default) or coarse (20)\n"
    "  --max-bytes N      refuse an archive that expands past N bytes in all (and\n"
    "                     no entry past min(N, 1 GiB)); default 8 GiB\n"
    "  --json             print the summary (or the error) as one JSON object\n"
    "  --progress         print progress on stderr, one JSON object a line, at most\n"
    "                     ten a second: {\"phase\": \"decoding\", \"done\": N, \"total\": M}\n"
    "                     (total null while not known), then phase \"writing\" (0 of\n"
    "                     1, 1 of 1); the last line of a phase has done == total\n"
    "info prints the summary of an existing cache after checking all of it.\n"
    "samples writes a PNG of N images of every class (default 8; at most the\n"
    "first 100 classes, images shrunk to 64 pixels a side): one row per class.\n"
    "Exit status: 0 done, 1 failed, 2 usage.\n";

/* Prints err: as {"error": ...} on stdout with --json, else on stderr. */
static int fail(const char *cmd, int json, const lsq_err *err, int rc)
{
    if (json) {
        json_t *j = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", LSQ_STATUS_NAMES[err->code],
                              "message", err->message, "field", err->field);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        printf("%s\n", s ? s : "{\"error\":{\"code\":\"internal\",\"message\":\"\",\"field\":\"\"}}");
        free(s);
        json_decref(j);
    } else {
        cli_print_err(cmd, err);
    }
    return rc;
}

static int usage_fail(const char *cmd, int json, const char *field, const char *msg)
{
    lsq_err err;
    lsq_err_set(&err, LSQ_ERR_INVALID, field, "%s", msg);
    if (!json) {
        fprintf(stderr, "lsq %s: %s\n%s", cmd, msg, DATASET_USAGE);
        return 2;
    }
    return fail(cmd, json, &err, 2);
}

static void print_summary(const lsq_cache *c, const char *dir, int json)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, CACHE_FILE);
    struct stat sb;
    long long bytes = stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
    if (json) {
        json_t *j = cache_summary_json(c);
        json_object_set_new(j, "cache", json_string(path));
        json_object_set_new(j, "bytes", json_integer(bytes));
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
        printf("%s\n", s);
        free(s);
        json_decref(j);
        return;
    }
    long *ht = calloc((size_t)c->classes, sizeof *ht), *hs = calloc((size_t)c->classes, sizeof *hs);
    printf("cache    %s (%lld bytes)\nformat   %s\nshape    %dx%dx%d (C x H x W)\n", path, bytes,
           c->format, c->c, c->h, c->w);
    printf("train    %d images\ntest     %d images\nclasses  %d\n", c->train.n, c->test.n,
           c->classes);
    if (ht && hs) {
        cache_histogram(c, &c->train, ht);
        cache_histogram(c, &c->test, hs);
        for (int k = 0; k < c->classes; k++)
            printf("  %4d  %-24s %8ld train %8ld test\n", k, c->names[k], ht[k], hs[k]);
    }
    printf("mean    ");
    for (int i = 0; i < c->c; i++) printf(" %.4f", c->mean[i]);
    printf("\nstd     ");
    for (int i = 0; i < c->c; i++) printf(" %.4f", c->std[i]);
    printf("\n");
    free(ht);
    free(hs);
}

static int parse_size(const char *s, int *h, int *w)
{
    char *end;
    long a = strtol(s, &end, 10);
    if (end == s || (*end != 'x' && *end != 'X')) return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || a < 1 || b < 1 || a > CACHE_MAX_SIDE || b > CACHE_MAX_SIDE) return -1;
    *h = (int)a;
    *w = (int)b;
    return 0;
}

/* --progress: one line on stderr per call, throttled to ten a second
 * except for a phase's first and last lines (lsqd reads them, registrar.c). */
typedef struct {
    const char *phase;
    double last;
    long long done, total;  /* the last line printed */
} progress_out;

static void progress_line(progress_out *p, const char *phase, long long done, long long total)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = ts.tv_sec + ts.tv_nsec / 1e9;
    int first = p->phase != phase, last = done == total;
    if (!first && done == p->done && total == p->total) return;
    if (!first && !last && now - p->last < 0.1) return;
    p->phase = phase;
    p->last = now;
    p->done = done;
    p->total = total;
    if (total < 0) fprintf(stderr, "{\"phase\":\"%s\",\"done\":%lld,\"total\":null}\n", phase, done);
    else fprintf(stderr, "{\"phase\":\"%s\",\"done\":%lld,\"total\":%lld}\n", phase, done, total);
    fflush(stderr);
}

static void on_import_progress(void *ctx, long long done, long long total)
{
    progress_line(ctx, "decoding", done, total);
}

static int cmd_import(int argc, char **argv)
{
    const char *cmd = "dataset import", *src = NULL, *out = NULL;
    int json = 0;
    progress_out prog = {NULL, 0, 0, 0};
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--json")) json = 1;
    import_opts o;
    import_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char msg[256];
        if (!strcmp(a, "--json")) continue;
        if (!strcmp(a, "--progress")) {
            o.progress = on_import_progress;
            o.progress_ctx = &prog;
            continue;
        }
        static const char *const valued[] = {"--out", "--format", "--size", "--channels",
                                             "--test-fraction", "--seed", "--labels",
                                             "--max-bytes", NULL};
        int takes = 0;
        for (int k = 0; valued[k]; k++) takes |= !strcmp(a, valued[k]);
        if (takes && !v) {
            snprintf(msg, sizeof msg, "%s needs a value", a);
            return usage_fail(cmd, json, a + 2, msg);
        }
        if (!strcmp(a, "--out")) {
            out = argv[++i];
        } else if (!strcmp(a, "--format")) {
            int f = -1;
            for (int k = 1; k < DFMT_COUNT; k++)
                if (!strcmp(v, DATA_FORMAT_NAMES[k])) f = k;
            if (f < 0) {
                snprintf(msg, sizeof msg,
                         "--format must be idx, cifar10, cifar100, folder or npz, got '%.64s'", v);
                return usage_fail(cmd, json, "format", msg);
            }
            o.format = (data_format)f;
            i++;
        } else if (!strcmp(a, "--size")) {
            if (parse_size(v, &o.h, &o.w) != 0) {
                snprintf(msg, sizeof msg, "--size must be HxW with both in 1..%d, got '%.64s'",
                         CACHE_MAX_SIDE, v);
                return usage_fail(cmd, json, "size", msg);
            }
            i++;
        } else if (!strcmp(a, "--channels")) {
            if (strcmp(v, "1") && strcmp(v, "3")) {
                snprintf(msg, sizeof msg, "--channels must be 1 or 3, got '%.64s'", v);
                return usage_fail(cmd, json, "channels", msg);
            }
            o.channels = atoi(v);
            i++;
        } else if (!strcmp(a, "--test-fraction")) {
            char *end;
            double f = strtod(v, &end);
            if (end == v || *end || !(f > 0 && f < 1)) {
                snprintf(msg, sizeof msg, "--test-fraction must be a number in (0, 1), got '%.64s'",
                         v);
                return usage_fail(cmd, json, "test_fraction", msg);
            }
            o.test_fraction = f;
            i++;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            unsigned long long s = strtoull(v, &end, 10);
            if (end == v || *end || v[0] == '-') {
                snprintf(msg, sizeof msg, "--seed must be a non-negative integer, got '%.64s'", v);
                return usage_fail(cmd, json, "seed", msg);
            }
            o.seed = s;
            i++;
        } else if (!strcmp(a, "--max-bytes")) {
            char *end;
            unsigned long long m = strtoull(v, &end, 10);
            if (end == v || *end || v[0] == '-' || m < 1024) {
                snprintf(msg, sizeof msg, "--max-bytes must be an integer >= 1024, got '%.64s'", v);
                return usage_fail(cmd, json, "max_bytes", msg);
            }
            o.limits.max_total_bytes = (size_t)m;
            o.limits.max_entry_bytes = m < SRC_MAX_ENTRY_BYTES ? (size_t)m : SRC_MAX_ENTRY_BYTES;
            i++;
        } else if (!strcmp(a, "--labels")) {
            if (strcmp(v, "fine") && strcmp(v, "coarse")) {
                snprintf(msg, sizeof msg, "--labels must be fine or coarse, got '%.64s'", v);
                return usage_fail(cmd, json, "labels", msg);
            }
            o.coarse = !strcmp(v, "coarse");
            i++;
        } else if (a[0] == '-' && a[1]) {
            snprintf(msg, sizeof msg, "unknown option '%.64s'", a);
            return usage_fail(cmd, json, "", msg);
        } else if (!src) {
            src = a;
        } else {
            snprintf(msg, sizeof msg, "unexpected argument '%.64s'", a);
            return usage_fail(cmd, json, "", msg);
        }
    }
    if (!src || !out) return usage_fail(cmd, json, src ? "out" : "src", "give SRC and --out DIR");
    lsq_err err;
    lsq_err_clear(&err);
    lsq_cache c;
    lsq_status st = data_import(&c, src, &o, &err);
    if (st == LSQ_OK) {
        if (o.progress) progress_line(&prog, "writing", 0, 1);
        st = cache_write(&c, out, &err);
        if (st == LSQ_OK && o.progress) progress_line(&prog, "writing", 1, 1);
    }
    if (st != LSQ_OK) {
        cache_free(&c);
        return fail(cmd, json, &err, 1);
    }
    print_summary(&c, out, json);
    cache_free(&c);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown option '%.64s'", argv[i]);
            return usage_fail("dataset info", json, "", msg);
        } else if (!dir) dir = argv[i];
        else return usage_fail("dataset info", json, "", "give one DIR");
    }
    if (!dir) return usage_fail("dataset info", json, "dir", "give DIR");
    lsq_err err;
    lsq_err_clear(&err);
    lsq_cache c;
    if (cache_read(&c, dir, 0, &err) != LSQ_OK) return fail("dataset info", json, &err, 1);
    print_summary(&c, dir, json);
    cache_free(&c);
    return 0;
}

#define SAMPLES_PER_CLASS 8
#define SAMPLES_MAX_ROWS 100
#define SAMPLES_CELL 64

static int cmd_samples(int argc, char **argv)
{
    const char *cmd = "dataset samples", *dir = NULL, *out = NULL;
    int json = 0, per_class = SAMPLES_PER_CLASS;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--json")) json = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char msg[128];
        if (!strcmp(a, "--json")) continue;
        if ((!strcmp(a, "--out") || !strcmp(a, "--per-class")) && !v) {
            snprintf(msg, sizeof msg, "%s needs a value", a);
            return usage_fail(cmd, json, a + 2, msg);
        }
        if (!strcmp(a, "--out")) {
            out = argv[++i];
        } else if (!strcmp(a, "--per-class")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (end == v || *end || n < 1 || n > 64) {
                snprintf(msg, sizeof msg, "--per-class must be 1..64, got '%.32s'", v);
                return usage_fail(cmd, json, "per_class", msg);
            }
            per_class = (int)n;
            i++;
        } else if (a[0] == '-' && a[1]) {
            snprintf(msg, sizeof msg, "unknown option '%.64s'", a);
            return usage_fail(cmd, json, "", msg);
        } else if (!dir) {
            dir = a;
        } else {
            return usage_fail(cmd, json, "", "give one DIR");
        }
    }
    if (!dir || !out) return usage_fail(cmd, json, dir ? "out" : "dir", "give DIR and --out FILE");
    lsq_err err;
    lsq_err_clear(&err);
    lsq_cache c;
    lsq_image grid;
    memset(&grid, 0, sizeof grid);
    lsq_status st = cache_read(&c, dir, 0, &err);
    if (st == LSQ_OK)
        st = cache_sample_grid(&c, per_class, SAMPLES_MAX_ROWS, SAMPLES_CELL, &grid, &err);
    if (st == LSQ_OK) st = image_write_png(&grid, out, &err);
    int rows = c.classes < SAMPLES_MAX_ROWS ? c.classes : SAMPLES_MAX_ROWS;
    cache_free(&c);
    if (st != LSQ_OK) {
        image_free(&grid);
        return fail(cmd, json, &err, 1);
    }
    if (json) {
        json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i}", "samples", out, "width", grid.w,
                              "height", grid.h, "classes", rows, "per_class", per_class);
        char *text = json_dumps(j, JSON_COMPACT);
        printf("%s\n", text ? text : "{}");
        free(text);
        json_decref(j);
    } else {
        printf("%s: %dx%d pixels, %d classes x %d images\n", out, grid.w, grid.h, rows,
               per_class);
    }
    image_free(&grid);
    return 0;
}

int cli_dataset_dispatch(const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "dataset") != 0) return -1;
    if (argc < 2 || cli_has_help(argc, argv)) {
        fputs(DATASET_USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "import")) return cmd_import(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "samples")) return cmd_samples(argc - 1, argv + 1);
    fprintf(stderr, "lsq dataset: unknown subcommand '%s'\n%s", argv[1], DATASET_USAGE);
    return 2;
}
