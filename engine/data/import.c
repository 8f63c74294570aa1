/* Dataset import (import.h): the options, the format guess and the
 * dispatch to one reader per format. */
#include "data/import.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *const DATA_FORMAT_NAMES[] = {"auto", "idx", "cifar10", "cifar100", "folder", "npz"};
_Static_assert(sizeof DATA_FORMAT_NAMES / sizeof *DATA_FORMAT_NAMES == DFMT_COUNT,
               "DATA_FORMAT_NAMES must name every data_format");

void import_opts_default(import_opts *o)
{
    memset(o, 0, sizeof *o);
    o->format = DFMT_AUTO;
    o->test_fraction = IMPORT_TEST_FRACTION;
    o->seed = 1;
}

/* ---- the guess ---- */

typedef struct {
    int idx, cifar10, cifar100_train, cifar100_test, npz, image;
} guess_ctx;

static int guess_want(const char *path, void *ctx)
{
    guess_ctx *g = ctx;
    const char *b = src_basename(path);
    if (b[0] == '.' || strstr(path, "__MACOSX")) return 0;
    size_t n = strlen(b);
    if ((!strncmp(b, "train-images", 12) || !strncmp(b, "t10k-images", 11)) &&
        (strstr(b, "-ubyte")))
        g->idx = 1;
    if (!strcmp(b, "data_batch_1.bin")) g->cifar10 = 1;
    if (!strcmp(b, "train.bin")) g->cifar100_train = 1;
    if (!strcmp(b, "test.bin")) g->cifar100_test = 1;
    if (!strcmp(b, "x_train.npy")) g->npz = 1;
    const char *dot = strrchr(b, '.');
    if (dot && n > 4 &&
        (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")))
        g->image = 1;
    return 0;
}

static lsq_status guess_visit(const src_entry *e, void *ctx, lsq_err *err)
{
    (void)e;
    (void)ctx;
    (void)err;
    return LSQ_OK;
}

data_format import_guess_format(const char *src, const import_opts *o, lsq_err *err)
{
    size_t n = strlen(src);
    if (n > 4 && !strcasecmp(src + n - 4, ".npz")) return DFMT_NPZ;
    guess_ctx g = {0, 0, 0, 0, 0, 0};
    if (src_walk(src, &o->limits, guess_want, guess_visit, &g, err) != LSQ_OK) return DFMT_AUTO;
    if (g.idx) return DFMT_IDX;
    if (g.cifar10) return DFMT_CIFAR10;
    if (g.cifar100_train && g.cifar100_test) return DFMT_CIFAR100;
    if (g.npz) return DFMT_NPZ;
    if (g.image) return DFMT_FOLDER;
    lsq_err_set(err, LSQ_ERR_INVALID, "format",
                "%s: cannot tell its format (no IDX files, CIFAR batches, .npy arrays or "
                "images); give --format", src);
    return DFMT_AUTO;
}

/* ---- the dispatch ---- */

lsq_status data_import(lsq_cache *out, const char *src, const import_opts *opts, lsq_err *err)
{
    memset(out, 0, sizeof *out);
    import_opts o = *opts;
    if ((int)o.format < 0 || o.format >= DFMT_COUNT)
        return lsq_err_set(err, LSQ_ERR_INVALID, "format", "unknown format %d", (int)o.format);
    if ((o.h == 0) != (o.w == 0) || o.h < 0 || o.w < 0 || o.h > CACHE_MAX_SIDE ||
        o.w > CACHE_MAX_SIDE)
        return lsq_err_set(err, LSQ_ERR_INVALID, "size",
                           "the size must be HxW with both in 1..%d, got %dx%d", CACHE_MAX_SIDE,
                           o.h, o.w);
    if (o.channels != 0 && o.channels != 1 && o.channels != 3)
        return lsq_err_set(err, LSQ_ERR_INVALID, "channels", "channels must be 1 or 3, got %d",
                           o.channels);
    if (!(o.test_fraction > 0 && o.test_fraction < 1) || !isfinite(o.test_fraction))
        return lsq_err_set(err, LSQ_ERR_INVALID, "test_fraction",
                           "the test fraction must be in (0, 1), got %g", o.test_fraction);
    if (src_is_dir(src) < 0)
        return lsq_err_set(err, LSQ_ERR_IO, src, "cannot open %s: no such file or folder", src);
    if (o.format == DFMT_AUTO) {
        o.format = import_guess_format(src, &o, err);
        if (o.format == DFMT_AUTO) return err ? err->code : LSQ_ERR_INVALID;
    }
    if (o.progress) o.progress(o.progress_ctx, 0, -1);
    lsq_status st;
    switch (o.format) {
    case DFMT_IDX: st = import_idx(out, src, &o, err); break;
    case DFMT_CIFAR10:
    case DFMT_CIFAR100: st = import_cifar(out, src, &o, err); break;
    case DFMT_NPZ: st = import_npz(out, src, &o, err); break;
    case DFMT_FOLDER: st = import_folder(out, src, &o, err); break;
    default:
        return lsq_err_set(err, LSQ_ERR_INTERNAL, "format", "no reader for format %d",
                           (int)o.format);
    }
    if (st == LSQ_OK && o.progress) {
        long long n = (long long)out->train.n + out->test.n;
        o.progress(o.progress_ctx, n, n);
    }
    return st;
}
