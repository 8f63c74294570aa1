/* Datasets: the IDX reader (gzip through zlib, or plain) and the batch loader.
 * Fashion-MNIST is read from /usr/share/datasets/fashion-mnist by default. */
#ifndef LSQ_DATA_H
#define LSQ_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define LSQ_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* One IDX file: unsigned-byte data only (type 0x08), 1 to 4 dimensions. */
typedef struct {
    int ndim;
    int dims[4];
    size_t count;   /* product of dims */
    uint8_t *data;  /* owned; free with idx_free */
} idx_array;

/* Reads path (gzip-compressed or plain, told by its first bytes). Errors:
 * LSQ_ERR_IO (cannot open/read), LSQ_ERR_FORMAT (wrong magic, unsupported
 * type, truncated, trailing bytes), each naming the file in the message. */
lsq_status idx_read(idx_array *out, const char *path, lsq_err *err);
void idx_free(idx_array *a);

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
} lsq_loader;

lsq_status loader_init(lsq_loader *l, const lsq_dataset *ds, int batch,
                       int shuffle, uint64_t seed, int crop_pad, int flip,
                       lsq_err *err);
/* Sets the epoch (reshuffles deterministically). */
void loader_set_epoch(lsq_loader *l, int epoch);
/* Number of batches per epoch (the last may be short). */
int loader_batches(const lsq_loader *l);
/* Fills batch b: x (count, C, H, W) pixels / 255, y (count). Returns count. */
int loader_fill(const lsq_loader *l, int b, float *x, int32_t *y);
void loader_free(lsq_loader *l);

#endif
