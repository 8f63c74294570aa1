/* Dataset import: a source in one of the supported formats decoded into an
 * lsq_cache (cache.h) in memory, ready for cache_write. One reader per
 * format, each in its own file:
 *
 *   idx       idx.c     MNIST-layout IDX files (plain or .gz), 1 or 3 channels
 *   cifar10   cifar.c   CIFAR-10 binary batches
 *   cifar100  cifar.c   CIFAR-100 binary (fine or coarse labels)
 *   npz       npz.c     NumPy .npz with x_train, y_train, x_test, y_test
 *   folder    folder.c  one sub-folder of PNG/JPEG images per class
 *
 * A source is a folder or an archive (source.h) for every format but npz
 * (a .npz is itself a zip). Every reader checks every count it reads before
 * using it and names the file or entry in its errors. docs/data.md has the
 * details of each format and of every refusal. */
#ifndef LSQ_IMPORT_H
#define LSQ_IMPORT_H

#include <stdint.h>

#include "data/cache.h"
#include "data/source.h"

typedef enum {
    DFMT_AUTO, DFMT_IDX, DFMT_CIFAR10, DFMT_CIFAR100, DFMT_FOLDER, DFMT_NPZ, DFMT_COUNT
} data_format;
extern const char *const DATA_FORMAT_NAMES[]; /* "auto", "idx", "cifar10", ... */

#define IMPORT_TEST_FRACTION 0.2

typedef struct {
    data_format format;       /* DFMT_AUTO: guessed from the source */
    int h, w;                 /* 0: the source's own size (images must agree) */
    int channels;             /* 0: the source's own (images must agree); 1 or 3: convert */
    double test_fraction;     /* folder: share of each class held out, (0, 1) */
    uint64_t seed;            /* folder: the split and the stored order */
    int coarse;               /* cifar100: the 20 coarse labels, not the 100 fine */
    src_limits limits;        /* caps on what archives expand to; 0s: defaults */
    /* Called as the import goes (may be NULL): `done` images decoded of
     * `total` (-1 while not known: an archive is read once, so its image
     * count is known only at its end). The last call has done == total. */
    void (*progress)(void *ctx, long long done, long long total);
    void *progress_ctx;
} import_opts;

/* Defaults: auto format, source size and channels, test fraction 0.2,
 * seed 1, fine labels, default caps, no progress callback. */
void import_opts_default(import_opts *o);

/* Decodes the source at src into out (statistics filled: cache_finish).
 * Errors: LSQ_ERR_INVALID (a bad option, field "format", "size",
 * "channels", "test_fraction"), LSQ_ERR_NOT_FOUND (a file the format needs
 * is missing), LSQ_ERR_IO, LSQ_ERR_FORMAT (anything wrong in the source),
 * LSQ_ERR_NOMEM. out is released on failure. */
lsq_status data_import(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err);

/* The format the source looks like (by its name and its entries), or
 * DFMT_AUTO with err filled when it cannot be told. */
data_format import_guess_format(const char *src, const import_opts *o, lsq_err *err);

/* The readers behind data_import (the same contract; o->format is set). */
lsq_status import_idx(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err);
lsq_status import_cifar(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err);
lsq_status import_npz(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err);
lsq_status import_folder(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err);

/* The cache shape for a source whose images are (c, h, w): the options'
 * size and channels where given. */
static inline void import_target(const import_opts *o, int c, int h, int w, int *tc, int *th,
                                 int *tw)
{
    *tc = o->channels ? o->channels : c;
    *th = o->h ? o->h : h;
    *tw = o->w ? o->w : w;
}

#endif
