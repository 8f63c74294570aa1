/* Allocation-failure sweep (`make test-faults`, docs/reliability.md): each
 * reader the fuzz targets drive (the .c files of fuzz/), on each seed input of
 * fuzz/corpus/, and the zoo networks' plan and build, are run again and
 * again with the Nth allocation made inside the operation failing, N = 1,
 * 2, 3 ... until a run makes fewer than N allocations. Every failing run
 * must return a status other than LSQ_OK with a message, and leave nothing
 * allocated: the hook's count of live allocations must come back to zero
 * and LeakSanitizer must find no leak.
 *
 * The engine is linked with -Wl,--wrap=malloc,calloc,realloc,free,strdup,
 * strndup,aligned_alloc (the Makefile), so every allocation made by the
 * engine's own code comes here; jansson is pointed at the same hook with
 * json_set_alloc_funcs. Allocations made inside the other shared libraries
 * (libarchive, libpng, libjpeg, zlib, protobuf-c, OpenBLAS) are not seen.
 *
 * jansson's allocations while it parses (json_loadb, json_loads, wrapped
 * too) are counted but not failed: jansson 2.14's lexer ignores a failed
 * growth of its token buffer and then copies the token past the end of a
 * buffer sized for it (a heap overflow inside jansson, not in lsqd). -j
 * fails them all the same, to show it.
 *
 *   faults CORPUS_DIR [-v|-vv] [-j] [-x WORD]   CORPUS_DIR is fuzz/corpus;
 *       exit 1 on any crash, leak or failure without an error; -x WORD
 *       leaves out the operations whose name contains WORD ("zoo") */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/spec.h"
#include "data/data.h"
#include "data/image.h"
#include "data/import.h"
#include "deploy/lsqm.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "train/ckpt.h"
#include "train/events.h"
#include "fuzz.h"

/* ---- the hook ---------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
json_t *__real_json_loadb(const char *b, size_t n, size_t flags, json_error_t *e);
json_t *__real_json_loads(const char *s, size_t flags, json_error_t *e);
json_t *__wrap_json_loadb(const char *b, size_t n, size_t flags, json_error_t *e);
json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *e);

static atomic_int g_armed;       /* counting: inside the swept operation */
static atomic_long g_seen;       /* allocations asked for while armed */
static atomic_long g_fail_at;    /* 1-based; 0: none fails */
static atomic_int g_fired;       /* the failure was injected */
static atomic_int g_fired_json;  /* ... at an allocation jansson asked for */
static atomic_long g_live;       /* allocations minus frees while armed */
static atomic_long g_spared;     /* jansson's, while it parses: counted, not failed */
static _Thread_local int t_in_load; /* inside json_loadb / json_loads */
static int g_fail_loads;         /* -j: fail those too */

/* Decides whether this allocation fails; counts it when armed. */
static int hook_fail(int from_json)
{
    if (!atomic_load(&g_armed)) return 0;
    long k = atomic_fetch_add(&g_seen, 1) + 1;
    if (k != atomic_load(&g_fail_at)) return 0;
    atomic_store(&g_fired, 1);
    if (from_json) atomic_store(&g_fired_json, 1);
    errno = ENOMEM;
    return 1;
}

static void *hook_got(void *p)
{
    if (p && atomic_load(&g_armed)) atomic_fetch_add(&g_live, 1);
    return p;
}

void *__wrap_malloc(size_t n)
{
    return hook_fail(0) ? NULL : hook_got(__real_malloc(n));
}

void *__wrap_calloc(size_t k, size_t n)
{
    return hook_fail(0) ? NULL : hook_got(__real_calloc(k, n));
}

void *__wrap_realloc(void *p, size_t n)
{
    if (hook_fail(0)) return NULL;
    void *q = __real_realloc(p, n);
    if (!p) return hook_got(q);
    if (!q && n == 0 && atomic_load(&g_armed)) atomic_fetch_sub(&g_live, 1);
    return q;
}

void __wrap_free(void *p)
{
    if (p && atomic_load(&g_armed)) atomic_fetch_sub(&g_live, 1);
    __real_free(p);
}

char *__wrap_strdup(const char *s)
{
    return __wrap_strndup(s, (size_t)-1);
}

char *__wrap_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = __wrap_malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    return hook_fail(0) ? NULL : hook_got(__real_aligned_alloc(a, n));
}

static void *json_hook_malloc(size_t n)
{
    if (t_in_load && !g_fail_loads) {
        if (atomic_load(&g_armed)) atomic_fetch_add(&g_spared, 1);
        return hook_got(__real_malloc(n));
    }
    return hook_fail(1) ? NULL : hook_got(__real_malloc(n));
}

json_t *__wrap_json_loadb(const char *b, size_t n, size_t flags, json_error_t *e)
{
    t_in_load++;
    json_t *j = __real_json_loadb(b, n, flags, e);
    t_in_load--;
    return j;
}

json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *e)
{
    t_in_load++;
    json_t *j = __real_json_loads(s, flags, e);
    t_in_load--;
    return j;
}

/* ---- the operations ---------------------------------------------------- */

/* One input to one operation: the bytes of a seed file, or a zoo name. */
typedef struct {
    const char *name;
    uint8_t *data;
    size_t size;
} input;

typedef lsq_status (*op_fn)(const input *in, lsq_err *err);

static lsq_spec g_quant_spec; /* QUANT_SPEC: quant settings for the zoo builds */
#define QUANT_SPEC "{\"quant\": {\"weight_bits\": 2, \"granularity\": \"channel\"}}"

static lsq_status op_spec(const input *in, lsq_err *err)
{
    lsq_spec spec;
    memset(&spec, 0, sizeof spec);
    lsq_status st = spec_parse(&spec, (const char *)in->data, in->size, err);
    if (st == LSQ_OK) {
        char *text = spec_to_text(&spec, JSON_COMPACT);
        if (!text) st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "spec_to_text returned NULL");
        free(text);
    }
    spec_free(&spec);
    return st;
}

static lsq_status op_onnx(const input *in, lsq_err *err)
{
    onnx_import im;
    lsq_status st = onnx_import_bytes(&im, in->data, in->size, err);
    if (st != LSQ_OK) return st;
    lsq_net net;
    st = net_build(&net, im.layers, NULL, im.classes, 1, err);
    if (st == LSQ_OK) {
        st = onnx_import_set_params(&im, &net, err);
        net_free(&net);
    }
    onnx_import_free(&im);
    return st;
}

/* lsqm_parse takes the buffer (malloc'd) and frees it: the copy is made
 * here with the hook's real malloc and counted as live, outside the sweep's
 * count of allocations. */
static lsq_status op_lsqm(const input *in, lsq_err *err)
{
    uint8_t *buf = __real_malloc(in->size ? in->size : 1);
    if (!buf) abort();
    atomic_fetch_add(&g_live, 1);
    memcpy(buf, in->data, in->size);
    fuzz_fix_crc32(buf, in->size);
    lsqm_file f;
    lsq_status st = lsqm_parse(&f, buf, in->size, in->name, err);
    if (st == LSQ_OK) {
        lsqm_model *m = lsqm_load_file(&f, err);
        if (!m) st = err->code != LSQ_OK ? err->code : LSQ_ERR_INTERNAL;
        else lsqm_free(m);
    }
    lsqm_file_free(&f);
    return st;
}

/* The readers that take a path get the bytes through a memfd, written
 * before the sweep (see run_op). */
static char g_path[64];

static lsq_status op_ckpt(const input *in, lsq_err *err)
{
    (void)in;
    lsq_ckpt c;
    lsq_status st = ckpt_load(&c, g_path, err);
    if (st != LSQ_OK) return st;
    lsq_net net;
    st = ckpt_build_net(&net, &c, 1, err);
    if (st == LSQ_OK) net_free(&net);
    ckpt_free(&c);
    return st;
}

static lsq_status op_idx(const input *in, lsq_err *err)
{
    idx_array a;
    lsq_status st = idx_parse(&a, in->data, in->size, in->name, err);
    if (st == LSQ_OK) idx_free(&a);
    return st;
}

static lsq_status op_npz(const input *in, lsq_err *err)
{
    (void)in;
    import_opts o;
    import_opts_default(&o);
    o.format = DFMT_NPZ;
    lsq_cache c;
    memset(&c, 0, sizeof c);
    lsq_status st = import_npz(&c, g_path, &o, err);
    if (st == LSQ_OK) cache_free(&c);
    return st;
}

/* As fuzz/archive.c: the first byte of the seed picks the format. */
static lsq_status op_archive(const input *in, lsq_err *err)
{
    static const data_format formats[] = {DFMT_AUTO, DFMT_IDX, DFMT_CIFAR10, DFMT_CIFAR100,
                                          DFMT_FOLDER};
    import_opts o;
    import_opts_default(&o);
    o.format = formats[in->data[0] % 5];
    o.coarse = (in->data[0] >> 3) & 1;
    lsq_cache c;
    memset(&c, 0, sizeof c);
    lsq_status st = data_import(&c, g_path, &o, err);
    if (st == LSQ_OK) cache_free(&c);
    return st;
}

/* As fuzz/image.c: the first byte picks the model input. */
static lsq_status op_image(const input *in, lsq_err *err)
{
    int c = (in->data[0] & 1) ? 3 : 1;
    int side = 8 + (in->data[0] >> 1) % 32;
    uint8_t px[3 * 39 * 39];
    return image_decode_fit(px, c, side, side, in->data + 1, in->size - 1, in->name, err);
}

static lsq_status op_events(const input *in, lsq_err *err)
{
    json_t *ev = NULL;
    ev_type type;
    lsq_status st = ev_parse((const char *)in->data, in->size, &ev, &type, err);
    if (st == LSQ_OK) json_decref(ev);
    return st;
}

/* A zoo model for CIFAR-shaped input: its layer list, net_plan at batch 64
 * with the shapes report, then net_build at batch 8, full precision and
 * quantized (2-bit weights per channel: QUANT_SPEC). */
static lsq_status op_zoo(const input *in, lsq_err *err)
{
    json_t *layers = net_zoo_layers_for(in->name, 3, 32, 32, 10, err);
    if (!layers) return err->code != LSQ_OK ? err->code : LSQ_ERR_INTERNAL;
    lsq_net net;
    net_cost cost;
    lsq_status st = net_plan(&net, layers, &g_quant_spec.quant, 10, 64, &cost, err);
    if (st == LSQ_OK) {
        json_t *shapes = net_shapes_json(&net, &cost);
        if (!shapes) st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "net_shapes_json returned NULL");
        json_decref(shapes);
        net_free(&net);
    }
    if (st == LSQ_OK && (st = net_build(&net, layers, NULL, 10, 8, err)) == LSQ_OK)
        net_free(&net);
    if (st == LSQ_OK && (st = net_build(&net, layers, &g_quant_spec.quant, 10, 8, err)) == LSQ_OK)
        net_free(&net);
    json_decref(layers);
    return st;
}

typedef struct {
    const char *name;   /* the row of the table */
    const char *corpus; /* fuzz/corpus/<corpus>/; NULL: the zoo */
    op_fn fn;
    int needs_file;     /* reads a path (g_path), not bytes */
} op_def;

static const op_def OPS[] = {
    {"spec_parse+spec_to_text", "spec", op_spec, 0},
    {"onnx_import_bytes+net_build", "onnx", op_onnx, 0},
    {"lsqm_parse+lsqm_load_file", "lsqm", op_lsqm, 0},
    {"ckpt_load+ckpt_build_net", "ckpt", op_ckpt, 1},
    {"idx_parse", "idx", op_idx, 0},
    {"import_npz", "npz", op_npz, 1},
    {"data_import (tar/zip)", "archive", op_archive, 1},
    {"image_decode_fit", "image", op_image, 0},
    {"ev_parse", "events", op_events, 0},
    {"zoo plan+build", NULL, op_zoo, 0},
};
#define OP_COUNT ((int)(sizeof OPS / sizeof *OPS))

/* ---- the sweep --------------------------------------------------------- */

typedef struct {
    int inputs;
    long allocs;      /* allocations of the runs without a failure, all inputs */
    long runs;        /* runs with a failure injected */
    long clean;       /* ... that returned an error with a message */
    long nomem;       /* ... whose code was LSQ_ERR_NOMEM */
    long json;        /* ... where the failed allocation was jansson's */
    long absorbed;    /* ... that returned LSQ_OK all the same */
    long unclean;     /* ... that returned an error without a message */
    long leaks;       /* runs (any) that left allocations behind */
    long spared;      /* jansson's allocations while parsing, not failed (per input) */
    double seconds;
} op_stats;

static int g_verbose;
static const char *g_skip;   /* -x WORD: leave out the operations whose name has WORD */
static int g_lsan_clean = 1; /* LeakSanitizer has found nothing so far */
static const char *g_cur_op = "", *g_cur_input = "";
static long g_cur_n;

static void on_death(void)
{
    fprintf(stderr, "faults: died in %s on %s with allocation %ld failing\n", g_cur_op,
            g_cur_input, g_cur_n);
}

/* One run with allocation n failing (0: none). Returns the status; *fired
 * says whether the failure happened; *leaked whether anything was left. */
static lsq_status run_once(const op_def *op, const input *in, long n, lsq_err *err, int *fired,
                           int *fired_json, long *seen, int *leaked, int check_lsan)
{
    lsq_err_clear(err);
    atomic_store(&g_seen, 0);
    atomic_store(&g_fail_at, n);
    atomic_store(&g_fired, 0);
    atomic_store(&g_fired_json, 0);
    atomic_store(&g_live, 0);
    atomic_store(&g_spared, 0);
    g_cur_n = n;
    atomic_store(&g_armed, 1);
    lsq_status st = op->fn(in, err);
    atomic_store(&g_armed, 0);
    *fired = atomic_load(&g_fired);
    *fired_json = atomic_load(&g_fired_json);
    *seen = atomic_load(&g_seen);
    long live = atomic_load(&g_live);
    *leaked = live != 0;
    if (live)
        fprintf(stderr, "LEAK %s %s N=%ld: %ld allocation(s) not freed\n", op->name, in->name, n,
                live);
    if (check_lsan && g_lsan_clean && __lsan_do_recoverable_leak_check()) {
        fprintf(stderr, "LEAK %s %s N=%ld: LeakSanitizer report above\n", op->name, in->name, n);
        g_lsan_clean = 0;
        *leaked = 1;
    }
    return st;
}

static int sweep_input(const op_def *op, const input *in, op_stats *s)
{
    lsq_err err;
    int fired, fired_json, leaked;
    long seen;
    g_cur_input = in->name;
    /* A first run without a failure: the reference status, and whatever
     * the engine sets up once (OpenMP, OpenBLAS) is set up outside the sweep. */
    lsq_status want = run_once(op, in, 0, &err, &fired, &fired_json, &seen, &leaked, 0);
    want = run_once(op, in, 0, &err, &fired, &fired_json, &seen, &leaked, 0);
    s->leaks += leaked;
    s->allocs += seen;
    s->spared += atomic_load(&g_spared);
    if (g_verbose)
        printf("  %-28s %-26s %5ld allocations, %s\n", op->name, in->name, seen,
               want == LSQ_OK ? "ok" : LSQ_STATUS_NAMES[want]);
    for (long n = 1;; n++) {
        lsq_status st = run_once(op, in, n, &err, &fired, &fired_json, &seen, &leaked, 0);
        if (!fired && g_lsan_clean && __lsan_do_recoverable_leak_check()) {
            /* once per input: whatever a run of this input left unreachable,
             * the hooked allocators' and the libraries' own */
            fprintf(stderr, "LEAK %s %s: LeakSanitizer report above\n", op->name, in->name);
            g_lsan_clean = 0;
            leaked = 1;
        }
        s->leaks += leaked;
        if (!fired) {
            if (st != want) {
                fprintf(stderr, "FAIL %s %s: %ld allocations, no failure injected, status %s "
                        "(alone: %s): %s\n", op->name, in->name, seen, LSQ_STATUS_NAMES[st],
                        LSQ_STATUS_NAMES[want], err.message);
                s->unclean++;
            }
            break;
        }
        s->runs++;
        if (st == LSQ_OK) {
            s->absorbed++;
            if (g_verbose)
                printf("    N=%ld absorbed%s\n", n, fired_json ? " (jansson)" : "");
        } else if (!err.message[0]) {
            s->unclean++;
            fprintf(stderr, "UNCLEAN %s %s N=%ld: status %s without a message%s\n", op->name,
                    in->name, n, LSQ_STATUS_NAMES[st], fired_json ? " (jansson allocation)" : "");
        } else {
            s->clean++;
            s->nomem += st == LSQ_ERR_NOMEM;
            s->json += fired_json;
            if (g_verbose > 1)
                printf("    N=%ld %s%s: %s\n", n, LSQ_STATUS_NAMES[st], fired_json ? " (jansson)" : "",
                       err.message);
        }
    }
    return 0;
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    uint8_t *b = __real_malloc(cap);
    size_t got;
    while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            uint8_t *nb = __real_realloc(b, cap *= 2);
            if (!nb) __real_free(b);
            b = nb;
        }
    }
    fclose(f);
    *n = len;
    return b;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int sweep_op(const op_def *op, const char *corpus, op_stats *s)
{
    g_cur_op = op->name;
    if (!op->corpus) {
        for (int i = 0; i < NET_ZOO_COUNT; i++) {
            input in = {NET_ZOO_NAMES[i], NULL, 0};
            sweep_input(op, &in, s);
            s->inputs++;
        }
        return 0;
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", corpus, op->corpus);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "faults: cannot open %s\n", dir);
        return -1;
    }
    char *names[256];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < 256) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(e->d_name);
        names[count] = __real_malloc(len + 1);
        memcpy(names[count++], e->d_name, len + 1);
    }
    closedir(d);
    qsort(names, (size_t)count, sizeof *names, name_cmp);
    int rc = 0;
    for (int i = 0; i < count; i++) {
        char path[800];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        input in = {names[i], NULL, 0};
        in.data = read_all(path, &in.size);
        if (!in.data || in.size < 1) {
            fprintf(stderr, "faults: cannot read %s\n", path);
            rc = -1;
        } else {
            int fd = -1;
            if (op->needs_file) {
                /* archive: the first byte is the format, the rest the file */
                size_t skip = op->fn == op_archive;
                fd = fuzz_file(g_path, sizeof g_path, names[i], in.data + skip, in.size - skip);
                if (fd < 0) {
                    fprintf(stderr, "faults: memfd for %s failed\n", path);
                    rc = -1;
                }
            }
            if (!op->needs_file || fd >= 0) {
                sweep_input(op, &in, s);
                s->inputs++;
            }
            if (fd >= 0) close(fd);
        }
        __real_free(in.data);
        __real_free(names[i]);
    }
    return rc;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR [-v|-vv]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-j") == 0) g_fail_loads = 1;
        else if (strcmp(argv[i], "-x") == 0 && i + 1 < argc) g_skip = argv[++i];
        else g_verbose = strcmp(argv[i], "-vv") == 0 ? 2 : 1;
    }
    json_set_alloc_funcs(json_hook_malloc, __wrap_free);
    __sanitizer_set_death_callback(on_death);

    lsq_err err;
    if (spec_parse(&g_quant_spec, QUANT_SPEC, strlen(QUANT_SPEC), &err) != LSQ_OK) {
        fprintf(stderr, "faults: %s\n", err.message);
        return 2;
    }

    op_stats stats[OP_COUNT];
    memset(stats, 0, sizeof stats);
    int bad = 0;
    double t0 = now_s();
    for (int i = 0; i < OP_COUNT; i++) {
        double t = now_s();
        if (g_skip && strstr(OPS[i].name, g_skip)) continue;
        if (sweep_op(&OPS[i], argv[1], &stats[i]) != 0) bad = 1;
        stats[i].seconds = now_s() - t;
    }
    spec_free(&g_quant_spec);

    printf("| operation | inputs | allocations | failures injected | clean errors | of which "
           "nomem | of which jansson | returned ok | unclean | leaks | jansson parsing, "
           "not failed | s |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
           "|\n");
    op_stats tot;
    memset(&tot, 0, sizeof tot);
    for (int i = 0; i < OP_COUNT; i++) {
        const op_stats *s = &stats[i];
        printf("| %s | %d | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %.1f |\n",
               OPS[i].name, s->inputs, s->allocs, s->runs, s->clean, s->nomem, s->json,
               s->absorbed, s->unclean, s->leaks, s->spared, s->seconds);
        tot.inputs += s->inputs;
        tot.allocs += s->allocs;
        tot.runs += s->runs;
        tot.clean += s->clean;
        tot.nomem += s->nomem;
        tot.json += s->json;
        tot.absorbed += s->absorbed;
        tot.unclean += s->unclean;
        tot.leaks += s->leaks;
        tot.spared += s->spared;
    }
    printf("| total | %d | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %.1f |\n",
           tot.inputs, tot.allocs, tot.runs, tot.clean, tot.nomem, tot.json, tot.absorbed,
           tot.unclean, tot.leaks, tot.spared, now_s() - t0);
    if (tot.unclean || tot.leaks) bad = 1;
    printf("%s\n", bad ? "FAIL" : "ok");
    return bad;
}
