/* The dataset cache: a dataset decoded once by `lsq dataset import` into one
 * file, DIR/dataset.lsqd, that training reads back in one pass. Layout
 * (little-endian; docs/data.md):
 *
 *   "LSQD" | u32 version (1) | u32 header bytes | header JSON
 *   | u8  train pixels (N_train, C, H, W) | u8 test pixels (N_test, C, H, W)
 *   | u16 train labels (N_train)          | u16 test labels (N_test)
 *   | u32 crc32 of every byte before it (zlib's crc32)
 *
 * The header holds the shape, the class names, the counts and per-class
 * histograms of both splits, the per-channel mean and standard deviation of
 * the training pixels scaled to [0, 1], and the source's format. Writes go
 * to a temporary name, synced and renamed; reads check every field, the
 * exact file size, the checksum, every label and the histograms, so a
 * corrupt cache is an error, never a crash. */
#ifndef LSQ_CACHE_H
#define LSQ_CACHE_H

#include <jansson.h>

#include "data/data.h"
#include "data/image.h"

#define CACHE_FILE "dataset.lsqd"
#define CACHE_VERSION 1
#define CACHE_MAX_CLASSES 1000
#define CACHE_NAME_MAX 64           /* class name bytes, with the NUL */
#define CACHE_MAX_SIDE 4096
#define CACHE_MAX_BYTES ((size_t)16 << 30)  /* pixels of both splits */
#define CACHE_FORMAT_MAX 16

typedef struct {
    int c, h, w;                    /* every image (C, H, W); C is 1 or 3 */
    int classes;
    char (*names)[CACHE_NAME_MAX];  /* (classes), owned */
    lsq_dataset train, test;        /* pixels and labels, owned */
    double mean[3], std[3];         /* per channel, of train pixels / 255 */
    char format[CACHE_FORMAT_MAX];  /* the source: "idx", "cifar10", ... */
} lsq_cache;

/* Zeroes c and sets its shape, class count and format; names default to
 * "0", "1", ... Errors: LSQ_ERR_INVALID (a value out of range),
 * LSQ_ERR_NOMEM. Release with cache_free either way. */
lsq_status cache_init(lsq_cache *c, int ch, int h, int w, int classes, const char *format,
                      lsq_err *err);
/* Allocates a split of n images (pixels and labels, uninitialised). */
lsq_status cache_alloc_split(lsq_cache *c, lsq_dataset *d, int n, lsq_err *err);
/* Sets class k's name: 1..63 bytes of UTF-8 without control characters.
 * LSQ_ERR_FORMAT otherwise (field = where, the file it came from). */
lsq_status cache_set_name(lsq_cache *c, int k, const char *name, size_t len, const char *where,
                          lsq_err *err);
/* Stores image i of split d from src (c, h, w; planes when chw, else
 * interleaved), converted and resized to the cache's shape (image_fit).
 * LSQ_ERR_NOMEM only; name is for the message. */
lsq_status cache_store(lsq_dataset *d, int i, const uint8_t *src, int c, int h, int w, int chw,
                       const char *name, lsq_err *err);
/* Reads class names, one a line (blank lines skipped; a trailing CR and
 * spaces trimmed), into c->names. LSQ_ERR_FORMAT (field = where) when the
 * count is not c->classes or a name is not valid. */
lsq_status cache_names_parse(lsq_cache *c, const uint8_t *text, size_t n, const char *where,
                             lsq_err *err);
/* Per-channel mean and population std of d's pixels scaled to [0, 1]
 * (exact integer sums: the result does not depend on the order). */
void cache_stats(const lsq_dataset *d, double *mean, double *std);
/* Checks every label of both splits against the class count and fills
 * mean and std from the training pixels. LSQ_ERR_FORMAT for an empty
 * training split or a label out of range. */
lsq_status cache_finish(lsq_cache *c, lsq_err *err);
void cache_free(lsq_cache *c);

/* Writes dir/dataset.lsqd atomically (dir is created when missing).
 * Errors: LSQ_ERR_IO; nothing is left behind on failure. */
lsq_status cache_write(const lsq_cache *c, const char *dir, lsq_err *err);
/* Reads dir/dataset.lsqd with every check. header_only: the header and the
 * file size only (no pixels: c->train.pixels stays NULL; counts are set).
 * Errors: LSQ_ERR_IO (missing, unreadable), LSQ_ERR_FORMAT (anything
 * wrong in it), LSQ_ERR_NOMEM; the field is the file's path. */
lsq_status cache_read(lsq_cache *c, const char *dir, int header_only, lsq_err *err);

/* Per-class counts of a split: hist (classes), zeroed first. */
void cache_histogram(const lsq_cache *c, const lsq_dataset *d, long *hist);
/* The summary `lsq dataset import/info --json` prints: format, shape,
 * counts, classes (index, name, train and test counts), mean, std. */
json_t *cache_summary_json(const lsq_cache *c);

/* A picture of the dataset: one row per class (the first max_rows classes)
 * of per_class images each, the first of the class in the training split's
 * stored order (a seeded shuffle, so a sample), then from the test split when
 * training holds too few. Each image is fitted into a cell whose longer side
 * is at most cell pixels (never enlarged), with 2-pixel white gaps; grey or
 * RGB as the cache. c must hold its pixels (cache_read with header_only 0).
 * out is (H, W, C) interleaved; release with image_free. Errors:
 * LSQ_ERR_INVALID (per_class 1..64, max_rows 1..1000, cell 4..256),
 * LSQ_ERR_NOMEM. */
lsq_status cache_sample_grid(const lsq_cache *c, int per_class, int max_rows, int cell,
                             lsq_image *out, lsq_err *err);

#endif
