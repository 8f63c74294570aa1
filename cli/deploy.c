/* Subcommands for deployable models: export, eval (float engine for a
 * checkpoint, integer engine for a packed model), predict on image files,
 * info. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "core/spec.h"
#include "data/data.h"
#include "data/cache.h"
#include "data/image.h"
#include "deploy/export.h"
#include "deploy/infer.h"
#include "deploy/lsqm.h"
#include "deploy/onnx_export.h"
#include "train/ckpt.h"
#include "train/train.h"
#include "util.h"

static const char *const FMNIST_NAMES[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                             "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                             "Bag",         "Ankle boot"};

/* ------------------------------------------------------------ export */

static const char *EXPORT_USAGE =
    "usage: lsq export CHECKPOINT --format lsqm|onnx [-o FILE]\n"
    "\n"
    "Writes the network of a checkpoint (.lsqc) as a packed integer model (.lsqm,\n"
    "docs/model-format.md) or as an ONNX graph computing the fake-quantized network.\n"
    "FILE defaults to CHECKPOINT with the format's extension.\n";

static int cmd_export(int argc, char **argv)
{
    if (cli_has_help(argc, argv)) {
        fputs(EXPORT_USAGE, stdout);
        return 0;
    }
    const char *ck = NULL, *fmt = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) fmt = argv[++i];
        else if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--out") == 0) && i + 1 < argc)
            out = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "lsq export: unknown option '%s'\n%s", argv[i], EXPORT_USAGE);
            return 2;
        } else if (!ck) ck = argv[i];
        else {
            fprintf(stderr, "lsq export: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!ck || !fmt || (strcmp(fmt, "lsqm") != 0 && strcmp(fmt, "onnx") != 0)) {
        if (fmt && strcmp(fmt, "lsqm") != 0 && strcmp(fmt, "onnx") != 0)
            fprintf(stderr, "lsq export: --format must be lsqm or onnx, got '%s'\n", fmt);
        fputs(EXPORT_USAGE, stderr);
        return 2;
    }
    char outbuf[4096];
    if (!out) {
        size_t n = strlen(ck);
        if (cli_ends_with(ck, ".lsqc")) n -= 5;
        snprintf(outbuf, sizeof outbuf, "%.*s.%s", (int)n, ck, fmt);
        out = outbuf;
    }
    lsq_err err;
    lsq_err_clear(&err);
    lsq_ckpt c;
    if (ckpt_load(&c, ck, &err) != LSQ_OK) {
        cli_print_err("export", &err);
        return 1;
    }
    lsq_net net;
    if (ckpt_build_net(&net, &c, 1, &err) != LSQ_OK) {
        cli_print_err("export", &err);
        ckpt_free(&c);
        return 1;
    }
    lsq_status st;
    if (strcmp(fmt, "lsqm") == 0) {
        json_t *meta = NULL;
        lsq_spec spec;
        memset(&spec, 0, sizeof spec);
        const json_t *sj = json_object_get(c.header, "spec");
        lsq_err e2;
        if (sj && spec_from_json(&spec, sj, &e2) == LSQ_OK) meta = export_meta(&spec);
        spec_free(&spec);
        st = lsqm_save(out, &net, meta, &err);
        json_decref(meta);
    } else {
        st = onnx_export(&net, out, &err);
    }
    net_free(&net);
    ckpt_free(&c);
    if (st != LSQ_OK) {
        cli_print_err("export", &err);
        return 1;
    }
    struct stat sb;
    printf("wrote %s (%lld bytes)\n", out, stat(out, &sb) == 0 ? (long long)sb.st_size : -1LL);
    return 0;
}

/* ------------------------------------------------------------ eval */

static int eval_lsqm(const char *model, const char *data_dir, int limit, int threads)
{
    lsq_err err;
    lsq_err_clear(&err);
    lsqm_file f;
    if (lsqm_read(&f, model, &err) != LSQ_OK) {
        cli_print_err("eval", &err);
        lsqm_file_free(&f);
        return 1;
    }
    const json_t *meta = json_object_get(f.header, "meta");
    char dsname[SPEC_NAME_MAX] = "fashion-mnist";
    const char *dsn = json_string_value(json_object_get(meta, "dataset"));
    if (dsn) snprintf(dsname, sizeof dsname, "%s", dsn);
    lsqm_model *m = lsqm_load_file(&f, &err);
    lsqm_file_free(&f);
    if (!m) {
        cli_print_err("eval", &err);
        return 1;
    }
    /* --data: a dataset cache (lsq dataset import; lsqd's datasets/N) or a
     * folder of IDX files of the model's built-in set */
    lsq_dataset test;
    char probe[1200];
    struct stat sb;
    snprintf(probe, sizeof probe, "%s/%s", data_dir ? data_dir : "", CACHE_FILE);
    if (data_dir && stat(probe, &sb) == 0) {
        lsq_cache cache;
        memset(&cache, 0, sizeof cache);
        if (cache_read(&cache, data_dir, 0, &err) != LSQ_OK) {
            cli_print_err("eval", &err);
            cache_free(&cache);
            lsqm_free(m);
            return 1;
        }
        test = cache.test;
        memset(&cache.test, 0, sizeof cache.test);
        cache_free(&cache);
        if (limit > 0 && limit < test.n) test.n = limit;
    } else if (dataset_load(NULL, &test, dsname, data_dir, 0, limit, &err) != LSQ_OK) {
        cli_print_err("eval", &err);
        lsqm_free(m);
        return 1;
    }
    int mc, mh, mw, classes;
    lsqm_input_shape(m, &mc, &mh, &mw, &classes);
    if (test.c != mc || test.h != mh || test.w != mw) {
        fprintf(stderr, "lsq eval: the model takes %dx%dx%d images, the test set has %dx%dx%d "
                        "(give the dataset it was trained on with --data DIR: a cache folder "
                        "or IDX files)\n", mc, mh, mw, test.c, test.h, test.w);
        dataset_free(&test);
        lsqm_free(m);
        return 1;
    }
    float *logits = malloc((size_t)test.n * classes * sizeof *logits);
    float *probs = malloc((size_t)test.n * classes * sizeof *probs);
    int rc = 0;
    if (!logits || !probs ||
        lsqm_predict(m, test.pixels, test.n, logits, probs, threads, &err) != LSQ_OK) {
        if (!logits || !probs) lsq_err_set(&err, LSQ_ERR_NOMEM, NULL, "out of memory");
        cli_print_err("eval", &err);
        rc = 1;
    } else {
        int correct = 0;
        double loss = 0;
        for (int i = 0; i < test.n; i++) {
            const float *z = logits + (size_t)i * classes;
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (z[k] > z[best]) best = k;
            correct += best == test.labels[i];
            double p = probs[(size_t)i * classes + test.labels[i]];
            loss -= log(p > 1e-30 ? p : 1e-30);
        }
        printf("model %s\nengine integer\nimages %d\naccuracy %.4f\nloss %.4f\n", model, test.n,
               test.n ? (double)correct / test.n : 0.0, test.n ? loss / test.n : 0.0);
    }
    free(logits);
    free(probs);
    dataset_free(&test);
    lsqm_free(m);
    return rc;
}

/* -------------------------------------------------------------- eval */

static const char *EVAL_USAGE =
    "usage: lsq eval MODEL [--data DIR] [--limit N] [--threads N]\n"
    "\n"
    "Prints the test accuracy and mean loss of MODEL on the test set of the\n"
    "dataset it was trained on. MODEL is a checkpoint (.lsqc, float engine) or a\n"
    "packed model (.lsqm, integer engine). --data DIR names that dataset: a cache\n"
    "folder (lsq dataset import) or a folder of IDX files; a .lsqm knows only its\n"
    "built-in set's name, so one trained on a cache needs --data, and a test set\n"
    "whose images are not the model's input shape is refused.\n";

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
            if (cli_parse_int("eval", "--limit", argv[++i], 0, 1 << 30, &limit)) return 2;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            if (cli_parse_int("eval", "--threads", argv[++i], 1, 256, &threads)) return 2;
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
    if (ml > 5 && strcmp(model + ml - 5, ".lsqm") == 0) return eval_lsqm(model, data, limit, threads);
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
    /* the test set of the dataset the model was trained on: its job spec's
     * (a cache, or a built-in set), --data replacing the folder */
    lsq_spec spec;
    lsq_dataset test;
    net_data nd;
    int rc = 0;
    lsq_status st = spec_from_json(&spec, json_object_get(c.header, "spec"), &err);
    if (st == LSQ_OK) {
        spec.train_limit = 0;
        spec.test_limit = limit;
        st = train_load_dataset(&spec, data, NULL, &test, &nd, &err);
    } else {
        st = dataset_load(NULL, &test, "fashion-mnist", data, 0, limit, &err);
    }
    spec_free(&spec);
    if (st != LSQ_OK) {
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

/* ------------------------------------------------------------ images */

/* Images fitted to the model's input: (n, c, h, w) planes. */
typedef struct {
    int n;
    uint8_t *px;
} images;

/* PGM: binary P5 with maxval <= 255, or plain P2; into a grey (h, w) plane. */
static int decode_pgm(const uint8_t *b, size_t len, uint8_t **out, int *oh, int *ow, char *why,
                      size_t wn)
{
    size_t p = 2;
    int vals[3], plain = b[1] == '2';
    for (int k = 0; k < 3; k++) {
        for (;;) {
            while (p < len && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r')) p++;
            if (p < len && b[p] == '#') {
                while (p < len && b[p] != '\n') p++;
                continue;
            }
            break;
        }
        long v = 0;
        size_t s = p;
        while (p < len && b[p] >= '0' && b[p] <= '9' && v < 100000) v = v * 10 + (b[p++] - '0');
        if (p == s) {
            snprintf(why, wn, "malformed PGM header");
            return -1;
        }
        vals[k] = (int)v;
    }
    int w = vals[0], h = vals[1], maxv = vals[2];
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || maxv < 1 || maxv > 255) {
        snprintf(why, wn, "unsupported PGM (%dx%d, maxval %d; 8-bit only)", w, h, maxv);
        return -1;
    }
    uint8_t *px = malloc((size_t)w * h);
    if (!px) {
        snprintf(why, wn, "out of memory");
        return -1;
    }
    if (!plain) {
        p++; /* one whitespace byte after maxval */
        if (len < p || len - p < (size_t)w * h) {
            snprintf(why, wn, "truncated PGM");
            free(px);
            return -1;
        }
        for (size_t i = 0; i < (size_t)w * h; i++) px[i] = (uint8_t)(b[p + i] * 255 / maxv);
    } else {
        for (size_t i = 0; i < (size_t)w * h; i++) {
            while (p < len && (b[p] < '0' || b[p] > '9')) p++;
            int v = 0;
            if (p >= len) {
                snprintf(why, wn, "truncated PGM");
                free(px);
                return -1;
            }
            while (p < len && b[p] >= '0' && b[p] <= '9' && v < 1000) v = v * 10 + (b[p++] - '0');
            px[i] = (uint8_t)((v > maxv ? maxv : v) * 255 / maxv);
        }
    }
    *out = px;
    *oh = h, *ow = w;
    return 0;
}

/* n grey (h, w) images fitted to (c, mh, mw) each. */
static int fit_grey(images *im, const uint8_t *grey, int n, int h, int w, int c, int mh, int mw,
                    char *why, size_t wn)
{
    size_t plane = (size_t)c * mh * mw;
    im->px = malloc((size_t)n * plane);
    if (!im->px) {
        snprintf(why, wn, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (image_fit(im->px + (size_t)i * plane, c, mh, mw, grey + (size_t)i * h * w, 1, h, w,
                      1) != 0) {
            snprintf(why, wn, "out of memory resizing");
            return -1;
        }
    im->n = n;
    return 0;
}

/* Reads the images of one file, fitted to the model's (c, h, w): a PNG or
 * JPEG (any size, grey, grey+alpha, RGB, RGBA, palette or 16-bit: decoded
 * by libpng / libjpeg-turbo and converted as the dataset importer does,
 * image.h), a PGM, or an IDX file of grey images. */
static int load_images(const char *path, int c, int h, int w, images *im, char *why, size_t wn)
{
    memset(im, 0, sizeof *im);
    char *t;
    size_t len;
    if (cli_read_file(path, &t, &len) != 0) {
        snprintf(why, wn, "cannot read: %s", strerror(errno));
        return -1;
    }
    const uint8_t *b = (const uint8_t *)t;
    int rc = -1;
    if (len == 0) {
        snprintf(why, wn, "empty file (0 bytes)");
    } else if (image_sniff(b, len) != IMAGE_NONE) {
        lsq_err err;
        lsq_err_clear(&err);
        im->px = malloc((size_t)c * h * w);
        if (!im->px) {
            snprintf(why, wn, "out of memory");
        } else if (image_decode_fit(im->px, c, h, w, b, len, path, &err) != LSQ_OK) {
            /* the message starts with the path, which the caller prints */
            size_t pl = strlen(path);
            const char *m = err.message;
            if (!strncmp(m, path, pl) && !strncmp(m + pl, ": ", 2)) m += pl + 2;
            snprintf(why, wn, "%s", m);
        } else {
            im->n = 1;
            rc = 0;
        }
    } else if (len >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '2')) {
        uint8_t *g = NULL;
        int gh, gw;
        if (decode_pgm(b, len, &g, &gh, &gw, why, wn) == 0)
            rc = fit_grey(im, g, 1, gh, gw, c, h, w, why, wn);
        free(g);
    } else {
        idx_array a;
        lsq_err err;
        if (idx_read(&a, path, &err) != LSQ_OK) {
            snprintf(why, wn, "not a PNG, JPEG, PGM or IDX file (%.200s)", err.message);
        } else {
            if (a.ndim != 3 && a.ndim != 2)
                snprintf(why, wn, "an IDX image file has 2 or 3 dimensions, this has %d", a.ndim);
            else
                rc = fit_grey(im, a.data, a.ndim == 3 ? a.dims[0] : 1, a.dims[a.ndim - 2],
                              a.dims[a.ndim - 1], c, h, w, why, wn);
            idx_free(&a);
        }
    }
    if (rc != 0) {
        free(im->px);
        im->px = NULL;
    }
    free(t);
    return rc;
}

static const char *PREDICT_USAGE =
    "usage: lsq predict MODEL.lsqm IMAGES... [--threads N]\n"
    "\n"
    "Classifies images with the integer engine: PNG or JPEG of any size and\n"
    "channel count (grey, grey+alpha, RGB, RGBA, palette, 16-bit), binary/plain\n"
    "PGM, or IDX image files (all images in them). Each image is converted to the\n"
    "model's input as the dataset importer does: to grey or RGB, resized to the\n"
    "model's HxW (area when shrinking, bilinear when enlarging). Prints each\n"
    "image's class and its top-3 probabilities.\n";

static int cmd_predict(int argc, char **argv)
{
    if (cli_has_help(argc, argv)) {
        fputs(PREDICT_USAGE, stdout);
        return 0;
    }
    const char *model = NULL;
    int threads = 2, nfiles = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "lsq predict: unknown option '%s'\n%s", argv[i], PREDICT_USAGE);
            free(files);
            return 2;
        } else if (!model) model = argv[i];
        else files[nfiles++] = argv[i];
    }
    if (!model || !nfiles || threads < 1) {
        fputs(PREDICT_USAGE, stderr);
        free(files);
        return 2;
    }
    lsq_err err;
    lsq_err_clear(&err);
    lsqm_file f;
    if (lsqm_read(&f, model, &err) != LSQ_OK) {
        cli_print_err("predict", &err);
        lsqm_file_free(&f);
        free(files);
        return 1;
    }
    const char *ds = json_string_value(json_object_get(json_object_get(f.header, "meta"), "dataset"));
    int named = !ds || strcmp(ds, "fashion-mnist") == 0;
    lsqm_model *m = lsqm_load_file(&f, &err);
    lsqm_file_free(&f);
    if (!m) {
        cli_print_err("predict", &err);
        free(files);
        return 1;
    }
    int c, h, w, classes, rc = 0;
    lsqm_input_shape(m, &c, &h, &w, &classes);
    named = named && classes == 10;
    if (c != 1 && c != 3) {
        fprintf(stderr, "lsq predict: %s takes %d channels; images convert to 1 (grey) or 3 "
                "(RGB)\n", model, c);
        lsqm_free(m);
        free(files);
        return 1;
    }
    for (int fi = 0; fi < nfiles; fi++) {
        images im;
        char why[512];
        if (load_images(files[fi], c, h, w, &im, why, sizeof why) != 0) {
            fprintf(stderr, "lsq predict: %s: %s\n", files[fi], why);
            rc = 1;
            continue;
        }
        float *z = malloc((size_t)im.n * classes * sizeof *z);
        float *pr = malloc((size_t)im.n * classes * sizeof *pr);
        if (!z || !pr || lsqm_predict(m, im.px, im.n, z, pr, threads, &err) != LSQ_OK) {
            if (!z || !pr) lsq_err_set(&err, LSQ_ERR_NOMEM, NULL, "out of memory");
            cli_print_err("predict", &err);
            rc = 1;
        } else {
            for (int i = 0; i < im.n; i++) {
                const float *p = pr + (size_t)i * classes;
                int top[3] = {-1, -1, -1};
                for (int t = 0; t < 3 && t < classes; t++)
                    for (int k = 0; k < classes; k++) {
                        if (k == top[0] || k == top[1]) continue;
                        if (top[t] < 0 || p[k] > p[top[t]]) top[t] = k;
                    }
                if (im.n > 1) printf("%s[%d]: ", files[fi], i);
                else printf("%s: ", files[fi]);
                printf("class %d%s%s%s  top-3:", top[0], named ? " (" : "",
                       named ? FMNIST_NAMES[top[0]] : "", named ? ")" : "");
                for (int t = 0; t < 3 && t < classes; t++) printf(" %d %.4f", top[t], p[top[t]]);
                printf("\n");
            }
        }
        free(z);
        free(pr);
        free(im.px);
    }
    lsqm_free(m);
    free(files);
    return rc;
}

/* ------------------------------------------------------------ info */

static int info_lsqm(const char *path)
{
    lsq_err err;
    lsq_err_clear(&err);
    lsqm_file f;
    if (lsqm_read(&f, path, &err) != LSQ_OK) {
        cli_print_err("info", &err);
        lsqm_file_free(&f);
        return 1;
    }
    const json_t *meta = json_object_get(f.header, "meta");
    printf("%s: packed model (.lsqm version %d), %zu bytes (header %zu, payload %zu)\n", path,
           LSQM_VERSION, f.size, f.size - f.payload_bytes - LSQM_MIN_BYTES, f.payload_bytes);
    const char *nm = json_string_value(json_object_get(meta, "name"));
    if (nm) printf("job %s, dataset %s\n", nm,
                   json_string_value(json_object_get(meta, "dataset")));
    const json_t *in = json_object_get(f.model, "input");
    printf("input %lldx%lldx%lld, %d classes\n", (long long)json_integer_value(json_array_get(in, 0)),
           (long long)json_integer_value(json_array_get(in, 1)),
           (long long)json_integer_value(json_array_get(in, 2)), f.classes);
    printf("%-16s %-9s %6s %6s %12s %12s %10s %10s\n", "layer", "type", "w.bits", "a.bits",
           "w.step", "in.step", "weights", "bytes");
    size_t n = json_array_size(json_object_get(f.model, "layers"));
    for (size_t i = 0; i < n; i++) {
        const json_t *l = json_array_get(json_object_get(f.model, "layers"), i);
        const char *type = json_string_value(json_object_get(l, "type"));
        const char *name = json_string_value(json_object_get(l, "name"));
        if (!type || !name) continue;
        char tn[128];
        snprintf(tn, sizeof tn, "%s.weight", name);
        const lsqm_tensor *t = lsqm_find(&f, tn);
        const lsqm_qlayer *q = lsqm_find_qlayer(&f, name);
        if (!t || !q) {
            printf("%-16s %-9s\n", name, type);
            continue;
        }
        char ws[32] = "-", as[32] = "-";
        if (q->quantized) {
            snprintf(tn, sizeof tn, "%s.weight.step", name);
            const lsqm_tensor *s = lsqm_find(&f, tn);
            snprintf(tn, sizeof tn, "%s.input.step", name);
            const lsqm_tensor *a = lsqm_find(&f, tn);
            if (s && s->count >= 1 && s->count <= 65536) {
                float *v = malloc(s->count * sizeof *v);
                double mean = 0;
                lsqm_tensor_f32(&f, s, v);
                for (size_t k = 0; k < s->count; k++) mean += v[k];
                snprintf(ws, sizeof ws, "%.4g%s", mean / s->count, s->count > 1 ? "*" : "");
                free(v);
            }
            if (a) {
                float v;
                lsqm_tensor_f32(&f, a, &v);
                snprintf(as, sizeof as, "%.4g", v);
            }
        }
        char wb[8] = "f32", ab[16] = "f32";
        if (q->quantized) {
            snprintf(wb, sizeof wb, "%d", q->weight_bits);
            snprintf(ab, sizeof ab, "%d%s", q->act_bits,
                     q->act_offset ? "+" : q->act_signed ? "s" : "u");
        }
        printf("%-16s %-9s %6s %6s %12s %12s %10zu %10zu\n", name, type, wb, ab, ws, as, t->count,
               t->bytes);
    }
    printf("(w.step: * = mean of per-channel steps; a.bits: u unsigned, s signed, + LSQ+ offset)\n");
    lsqm_file_free(&f);
    return 0;
}

static int info_lsqc(const char *path)
{
    lsq_err err;
    lsq_err_clear(&err);
    lsq_ckpt c;
    if (ckpt_load(&c, path, &err) != LSQ_OK) {
        cli_print_err("info", &err);
        return 1;
    }
    lsq_net net;
    if (ckpt_build_net(&net, &c, 1, &err) != LSQ_OK) {
        cli_print_err("info", &err);
        ckpt_free(&c);
        return 1;
    }
    struct stat sb;
    printf("%s: checkpoint (.lsqc), %lld bytes, %s, %zu parameters\n", path,
           stat(path, &sb) == 0 ? (long long)sb.st_size : -1LL,
           net.quantized ? "quantized (LSQ)" : "full precision", net.n_params);
    printf("%-16s %-9s %6s %6s %12s %12s %10s %10s\n", "layer", "type", "w.bits", "a.bits",
           "w.step", "in.step", "weights", "packed");
    size_t total = 0;
    for (int i = 1; i < net.n_nodes; i++) {
        const net_node *nd = &net.nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_LINEAR) continue;
        const net_view *w = &net.views[nd->wv];
        char wb[8] = "f32", ab[16] = "f32", ws[32] = "-", as[32] = "-";
        size_t packed = w->count * 4;
        if (nd->wq.on) {
            const net_view *s = &net.views[nd->wq.step_view];
            double mean = 0;
            for (size_t k = 0; k < s->count; k++) mean += net.params[s->off + k];
            snprintf(wb, sizeof wb, "%d", nd->wq.r.bits);
            snprintf(ab, sizeof ab, "%d%s", nd->aq.r.bits,
                     nd->aq.offset_view >= 0 ? "+" : nd->aq.r.is_signed ? "s" : "u");
            snprintf(ws, sizeof ws, "%.4g%s", mean / s->count, s->count > 1 ? "*" : "");
            snprintf(as, sizeof as, "%.4g", net.params[net.views[nd->aq.step_view].off]);
            packed = (w->count * (size_t)nd->wq.r.bits + 7) / 8;
        }
        total += packed;
        printf("%-16s %-9s %6s %6s %12s %12s %10zu %10zu\n", nd->name, NET_OP_NAMES[nd->op], wb,
               ab, ws, as, w->count, packed);
    }
    printf("packed weights: %zu bytes (lsq export --format lsqm writes them)\n", total);
    net_free(&net);
    ckpt_free(&c);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    if (cli_has_help(argc, argv) || argc != 2) {
        fputs("usage: lsq info MODEL\n\nLayers, bits, step sizes and size of a checkpoint (.lsqc)"
              " or packed model (.lsqm).\n",
              cli_has_help(argc, argv) ? stdout : stderr);
        return cli_has_help(argc, argv) ? 0 : 2;
    }
    FILE *fp = fopen(argv[1], "rb");
    char magic[4] = {0};
    if (!fp) {
        fprintf(stderr, "lsq info: cannot open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    size_t got = fread(magic, 1, 4, fp);
    fclose(fp);
    if (got == 4 && memcmp(magic, "LSQM", 4) == 0) return info_lsqm(argv[1]);
    return info_lsqc(argv[1]);
}

int cli_deploy_dispatch(const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "export") == 0) return cmd_export(argc, argv);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc, argv);
    if (strcmp(cmd, "predict") == 0) return cmd_predict(argc, argv);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc, argv);
    return -1;
}
