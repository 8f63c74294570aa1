/* Datasets: the IDX reader (gzip through zlib, or plain) and the batch loader.
 * Fashion-MNIST is read from /usr/share/datasets/fashion-mnist by default.
 * Other datasets are imported once into a cache (import.h, cache.h). */
#ifndef LSQ_DATA_H
#define LSQ_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define LSQ_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* One IDX file, 1 to 4 dimensions. idx_read reads unsigned bytes (type
 * 0x08) only; idx_parse also the integer types 0x0B (int16) and 0x0C (int32)
 * that label files with more than 256 classes use. */
typedef struct {
    int ndim;
    int dims[4];
    size_t count;   /* product of dims */
    uint8_t *data;  /* owned; free with idx_free. count * elem bytes, as in
                       the file (big-endian for elem > 1) */
    int type;       /* 0x08, 0x0B or 0x0C */
    int elem;       /* bytes per element: 1, 2 or 4 */
} idx_array;

/* Reads path (gzip-compressed or plain, told by its first bytes). Errors:
 * LSQ_ERR_IO (cannot open/read), LSQ_ERR_FORMAT (wrong magic, unsupported
 * type, truncated, trailing bytes), each naming the file in the message. */
lsq_status idx_read(idx_array *out, const char *path, lsq_err *err);
void idx_free(idx_array *a);
/* The same checks on a file already in memory (gzip-compressed or plain),
 * inflating at most 2^31 bytes; name is for messages and the error field.
 * Element i of an integer array: idx_get(a, i). */
lsq_status idx_parse(idx_array *out, const uint8_t *bytes, size_t n, const char *name,
                     lsq_err *err);
long idx_get(const idx_array *a, size_t i);

typedef struct {
    int n, c, h, w;      /* images (N, C, H, W) */
    int classes;
    uint8_t *pixels;     /* (N, C, H, W), owned */
    int32_t *labels;     /* (N), owned */
} lsq_dataset;

/* Loads <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (either name
 * form). limit > 0 keeps the first `limit` examples. Image and label counts
 * must agree; labels must be < 10. name is "fashion-mnist" or "mnist" (same
 * layout); dir NULL or "" means LSQ_DEFAULT_DATA_DIR for fashion-mnist. */
lsq_status dataset_load(lsq_dataset *train, lsq_dataset *test, const char *name,
                        const char *dir, int train_limit, int test_limit,
                        lsq_err *err);
void dataset_free(lsq_dataset *d);
/* Keeps the first n examples of d (n <= 0 or n >= d->n: all of them). */
void dataset_keep_first(lsq_dataset *d, int n);

/* Batches in a seeded order. The order of epoch e depends only on (seed, e)
 * and the augmentation of an image only on (seed, e, position), so a run
 * resumed at an epoch boundary sees exactly the batches it would have seen. */
typedef struct {
    const lsq_dataset *ds;
    int batch;
    int shuffle;         /* 0: dataset order */
    uint64_t seed;
    int crop_pad;        /* random crop with this zero padding; 0: off */
    int flip;            /* random horizontal flip */
    int epoch;
    int32_t *perm;       /* (N), owned */
    int normalize;       /* loader_set_normalize: x = pixel * scale[c] + bias[c] */
    float scale[4], bias[4];
} lsq_loader;

lsq_status loader_init(lsq_loader *l, const lsq_dataset *ds, int batch,
                       int shuffle, uint64_t seed, int crop_pad, int flip,
                       lsq_err *err);
/* Sets the epoch (reshuffles deterministically). */
void loader_set_epoch(lsq_loader *l, int epoch);
/* Number of batches per epoch (the last may be short). */
int loader_batches(const lsq_loader *l);
/* Per-channel normalisation of what loader_fill writes: (pixel / 255 -
 * mean[c]) / std[c], computed as pixel * scale + bias with scale = 1 / (255
 * std) and bias = -mean / std; the zero padding of a random crop becomes a
 * black pixel's value, -mean / std (as padding before normalising does).
 * mean and std have C entries (C <= 4, std > 0); NULL turns it off. */
void loader_set_normalize(lsq_loader *l, const float *mean, const float *std);
/* Those per-channel coefficients for c channels: scale[k] = 1 / (255 std[k])
 * and bias[k] = -mean[k] / std[k], each worked out in double and rounded
 * once to float. The ONNX export uses them to redo the loader's arithmetic
 * float for float. */
void loader_normalize_coefs(float *scale, float *bias, const float *mean, const float *std, int c);
/* Fills batch b: x (count, C, H, W) pixels / 255 (or normalised), y
 * (count). Returns count. */
int loader_fill(const lsq_loader *l, int b, float *x, int32_t *y);
/* Images of batch b (the last may be short). */
int loader_batch_count(const lsq_loader *l, int b);
/* Fills images [lo, hi) of batch b (clipped to the batch) exactly as
 * loader_fill writes them there: a data-parallel rank's shard. Returns the
 * count written. */
int loader_fill_range(const lsq_loader *l, int b, int lo, int hi, float *x, int32_t *y);
void loader_free(lsq_loader *l);

#endif
