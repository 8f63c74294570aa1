/* Datasets and the batch loader.
 *
 * dataset_load reads the four IDX files of an MNIST-layout set and checks
 * them against each other. The loader hands out batches in a seeded order
 * with optional augmentation; every random choice is a pure function of
 * (seed, epoch) for the order and (seed, epoch, position) for augmentation,
 * so no generator state is carried between calls: a run resumed at an epoch
 * boundary, or filled with any number of threads, sees the same batches. */
#include "data/data.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA_CLASSES 10
#define DATA_MNIST_DIR "/usr/share/datasets/mnist"

/* ---- dataset_load ---- */

/* Picks <dir>/<base>.gz, else <dir>/<base>; 0 when neither exists. */
static int data_find_file(char *out, size_t cap, const char *dir, const char *base)
{
    snprintf(out, cap, "%s/%s.gz", dir, base);
    if (access(out, F_OK) == 0) return 1;
    snprintf(out, cap, "%s/%s", dir, base);
    return access(out, F_OK) == 0;
}

/* Loads one split (images + labels) into d, keeping the first `limit`. */
static lsq_status data_load_split(lsq_dataset *d, const char *dir,
                                  const char *prefix, int limit, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    idx_array im = {0}, lb = {0};
    char ipath[4096], lpath[4096], base[64];
    memset(d, 0, sizeof *d);

    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    if (!data_find_file(ipath, sizeof ipath, dir, base))
        return lsq_err_set(err, LSQ_ERR_IO, "dataset.dir",
                           "cannot open %s/%s[.gz]: no such file", dir, base);
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    if (!data_find_file(lpath, sizeof lpath, dir, base))
        return lsq_err_set(err, LSQ_ERR_IO, "dataset.dir",
                           "cannot open %s/%s[.gz]: no such file", dir, base);

    if ((st = idx_read(&im, ipath, err)) != LSQ_OK) goto out;
    if (im.ndim != 3) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, ipath,
                         "%s: image file must have 3 dimensions (N, H, W), has %d",
                         ipath, im.ndim);
        goto out;
    }
    if ((st = idx_read(&lb, lpath, err)) != LSQ_OK) goto out;
    if (lb.ndim != 1) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, lpath,
                         "%s: label file must have 1 dimension, has %d", lpath,
                         lb.ndim);
        goto out;
    }
    if (im.dims[0] != lb.dims[0]) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, lpath,
                         "%s holds %d images but %s holds %d labels", ipath,
                         im.dims[0], lpath, lb.dims[0]);
        goto out;
    }
    int n = im.dims[0];
    if (limit > 0 && limit < n) n = limit;
    for (int i = 0; i < n; i++) {
        if (lb.data[i] >= DATA_CLASSES) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, lpath,
                             "%s: label %d at index %d is not below %d", lpath,
                             lb.data[i], i, DATA_CLASSES);
            goto out;
        }
    }

    size_t img = (size_t)im.dims[1] * (size_t)im.dims[2];
    d->labels = malloc((size_t)n * sizeof *d->labels);
    if (!d->labels) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, lpath, "out of memory for labels");
        goto out;
    }
    for (int i = 0; i < n; i++) d->labels[i] = lb.data[i];
    /* Take the image buffer over; shrink it when a limit dropped the tail. */
    d->pixels = im.data;
    im.data = NULL;
    if ((size_t)n * img < im.count) {
        uint8_t *p = realloc(d->pixels, (size_t)n * img);
        if (p) d->pixels = p;
    }
    d->n = n;
    d->c = 1;
    d->h = im.dims[1];
    d->w = im.dims[2];
    d->classes = DATA_CLASSES;
out:
    idx_free(&im);
    idx_free(&lb);
    if (st != LSQ_OK) dataset_free(d);
    return st;
}

lsq_status dataset_load(lsq_dataset *train, lsq_dataset *test, const char *name,
                        const char *dir, int train_limit, int test_limit,
                        lsq_err *err)
{
    lsq_status st = LSQ_OK;
    if (train) memset(train, 0, sizeof *train);
    if (test) memset(test, 0, sizeof *test);
    const char *def;
    if (name && strcmp(name, "fashion-mnist") == 0)
        def = LSQ_DEFAULT_DATA_DIR;
    else if (name && strcmp(name, "mnist") == 0)
        def = DATA_MNIST_DIR;
    else
        return lsq_err_set(err, LSQ_ERR_NOT_FOUND, "dataset.name",
                           "unknown dataset \"%s\" (known: fashion-mnist, mnist)",
                           name ? name : "(null)");
    if (train_limit < 0)
        return lsq_err_set(err, LSQ_ERR_INVALID, "dataset.train_limit",
                           "dataset.train_limit must be >= 0, got %d", train_limit);
    if (test_limit < 0)
        return lsq_err_set(err, LSQ_ERR_INVALID, "dataset.test_limit",
                           "dataset.test_limit must be >= 0, got %d", test_limit);
    if (!dir || !*dir) dir = def;

    if (train &&
        (st = data_load_split(train, dir, "train", train_limit, err)) != LSQ_OK)
        goto out;
    if (test &&
        (st = data_load_split(test, dir, "t10k", test_limit, err)) != LSQ_OK)
        goto out;
    if (train && test && (train->h != test->h || train->w != test->w)) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, "dataset.dir",
                         "%s: train images are %dx%d but test images are %dx%d",
                         dir, train->h, train->w, test->h, test->w);
        goto out;
    }
out:
    if (st != LSQ_OK) {
        dataset_free(train);
        dataset_free(test);
    }
    return st;
}

void dataset_free(lsq_dataset *d)
{
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void dataset_keep_first(lsq_dataset *d, int n)
{
    if (n <= 0 || n >= d->n) return;
    size_t img = (size_t)d->c * d->h * d->w;
    uint8_t *p = realloc(d->pixels, (size_t)n * img);
    if (p) d->pixels = p;  /* a failed shrink keeps the larger buffer */
    int32_t *l = realloc(d->labels, (size_t)n * sizeof *l);
    if (l) d->labels = l;
    d->n = n;
}

/* ---- the loader ---- */

/* splitmix64's output function: a bijective 64-bit mixer. */
static uint64_t data_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* splitmix64 step: state advances by the golden-ratio increment. */
static uint64_t data_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return data_mix64(*s);
}

/* Uniform in [0, n) without modulo bias (n >= 1). */
static uint64_t data_below(uint64_t *s, uint64_t n)
{
    uint64_t limit = -n % n;  /* 2^64 mod n: reject the short last bucket */
    for (;;) {
        uint64_t r = data_next(s);
        if (r >= limit) return r % n;
    }
}

/* Independent streams keyed by (seed, domain, a, b): each key word goes
 * through the mixer before the next is folded in, so nearby keys diverge. */
static uint64_t data_key(uint64_t seed, uint64_t domain, uint64_t a, uint64_t b)
{
    uint64_t h = data_mix64(seed ^ 0x6a09e667f3bcc909ULL);
    h = data_mix64(h ^ domain);
    h = data_mix64(h + a * 0x9e3779b97f4a7c15ULL);
    return data_mix64(h + b * 0xd1b54a32d192ed03ULL);
}

lsq_status loader_init(lsq_loader *l, const lsq_dataset *ds, int batch,
                       int shuffle, uint64_t seed, int crop_pad, int flip,
                       lsq_err *err)
{
    memset(l, 0, sizeof *l);
    if (!ds || ds->n <= 0 || !ds->pixels || !ds->labels)
        return lsq_err_set(err, LSQ_ERR_INVALID, "dataset", "the dataset is empty");
    if (batch < 1)
        return lsq_err_set(err, LSQ_ERR_INVALID, "train.batch_size",
                           "batch size must be >= 1, got %d", batch);
    if (crop_pad < 0 || crop_pad > ds->h || crop_pad > ds->w)
        return lsq_err_set(err, LSQ_ERR_INVALID, "crop_pad",
                           "crop padding must be in 0..%d, got %d",
                           ds->h < ds->w ? ds->h : ds->w, crop_pad);
    l->perm = malloc((size_t)ds->n * sizeof *l->perm);
    if (!l->perm)
        return lsq_err_set(err, LSQ_ERR_NOMEM, "dataset",
                           "out of memory for a %d-entry permutation", ds->n);
    l->ds = ds;
    l->batch = batch;
    l->shuffle = shuffle;
    l->seed = seed;
    l->crop_pad = crop_pad;
    l->flip = flip;
    loader_set_normalize(l, NULL, NULL);
    loader_set_epoch(l, 0);
    return LSQ_OK;
}

void loader_set_epoch(lsq_loader *l, int epoch)
{
    int n = l->ds->n;
    l->epoch = epoch;
    for (int i = 0; i < n; i++) l->perm[i] = i;
    if (!l->shuffle) return;
    uint64_t s = data_key(l->seed, 1, (uint64_t)(int64_t)epoch, 0);
    for (int i = n - 1; i > 0; i--) {  /* Fisher-Yates */
        int j = (int)data_below(&s, (uint64_t)i + 1);
        int32_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
}

int loader_batches(const lsq_loader *l)
{
    return (l->ds->n - 1) / l->batch + 1;  /* n >= 1; no overflow for big batches */
}

void loader_set_normalize(lsq_loader *l, const float *mean, const float *std)
{
    l->normalize = mean && std;
    for (int c = 0; c < 4; c++) {
        l->scale[c] = 1.0f / 255.0f;
        l->bias[c] = 0.0f;
    }
    if (!l->normalize) return;
    loader_normalize_coefs(l->scale, l->bias, mean, std, l->ds->c < 4 ? l->ds->c : 4);
}

void loader_normalize_coefs(float *scale, float *bias, const float *mean, const float *std, int c)
{
    for (int k = 0; k < c; k++) {
        scale[k] = (float)(1.0 / (255.0 * std[k]));
        bias[k] = (float)(-(double)mean[k] / std[k]);
    }
}

/* n pixels of a row into floats: src[k * step] for k < n (step 1 or -1),
 * pixel / 255 exactly (as always without normalisation) or pixel * a + b.
 * Branch-free inner loops, so they vectorize. */
static inline void data_row(float *dst, const uint8_t *src, int n, int step, int norm, float a,
                            float b)
{
    if (!norm) {
        if (step > 0) {
#pragma omp simd
            for (int x = 0; x < n; x++) dst[x] = (float)src[x] / 255.0f;
        } else {
#pragma omp simd
            for (int x = 0; x < n; x++) dst[x] = (float)src[-x] / 255.0f;
        }
    } else if (step > 0) {
#pragma omp simd
        for (int x = 0; x < n; x++) dst[x] = (float)src[x] * a + b;
    } else {
#pragma omp simd
        for (int x = 0; x < n; x++) dst[x] = (float)src[-x] * a + b;
    }
}

/* One image: shift by (dy, dx) with zero fill (a crop of the zero-padded
 * image), then mirror when flip. src (C, H, W) bytes, dst (C, H, W) floats,
 * each pixel / 255.0f, or pixel * scale[c] + bias[c] when norm (the padding
 * then is bias[c], a black pixel's value). */
static void data_fill_one(float *dst, const uint8_t *src, int c, int h, int w, int dy, int dx,
                          int flip, int norm, const float *scale, const float *bias)
{
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *sp = src + (size_t)ch * h * w;
        float *dp = dst + (size_t)ch * h * w;
        float a = scale[ch], b = bias[ch], pad = norm ? b : 0.0f;
        if (dy == 0 && dx == 0 && !flip) {
            data_row(dp, sp, h * w, 1, norm, a, b);
            continue;
        }
        for (int y = 0; y < h; y++) {
            int sy = y + dy;
            float *row = dp + (size_t)y * w;
            if (sy < 0 || sy >= h) {
                for (int x = 0; x < w; x++) row[x] = pad;
                continue;
            }
            const uint8_t *srow = sp + (size_t)sy * w;
            /* Columns x whose source column is inside the image:
             * plain sx = x + dx, flipped sx = w - 1 - x + dx. */
            int x0 = flip ? dx : -dx, x1 = flip ? w + dx : w - dx;
            if (x0 < 0) x0 = 0;
            if (x1 > w) x1 = w;
            if (x1 < x0) x1 = x0;
            for (int x = 0; x < x0; x++) row[x] = pad;
            if (flip) /* rs[-x] = srow[sx] */
                data_row(row + x0, srow + w - 1 + dx - x0, x1 - x0, -1, norm, a, b);
            else
                data_row(row + x0, srow + dx + x0, x1 - x0, 1, norm, a, b);
            for (int x = x1; x < w; x++) row[x] = pad;
        }
    }
}

int loader_fill(const lsq_loader *l, int b, float *x, int32_t *y)
{
    return loader_fill_range(l, b, 0, l->batch, x, y);
}

int loader_batch_count(const lsq_loader *l, int b)
{
    if (b < 0 || b >= loader_batches(l)) return 0;
    int start = b * l->batch;
    return l->ds->n - start < l->batch ? l->ds->n - start : l->batch;
}

int loader_fill_range(const lsq_loader *l, int b, int lo, int hi, float *x, int32_t *y)
{
    const lsq_dataset *ds = l->ds;
    int full = loader_batch_count(l, b);
    if (hi > full) hi = full;
    if (lo < 0) lo = 0;
    if (lo >= hi) return 0;
    int start = b * l->batch + lo;
    int count = hi - lo;
    int c = ds->c, h = ds->h, w = ds->w;
    size_t img = (size_t)c * h * w;
    int pad = l->crop_pad, augment = pad > 0 || l->flip;
    /* Measured on 2 cores: a 128x28x28 batch takes ~50-100 us on one thread
     * and a parallel region made it slower (thread wake-up, and the cores are
     * busy with the model), so only very large batches go parallel. Each
     * image is independent, so the result never depends on the threads. */
#pragma omp parallel for schedule(static) if ((size_t)count * img >= ((size_t)1 << 20))
    for (int i = 0; i < count; i++) {
        int pos = start + i;
        int32_t src = l->perm[pos];
        int dy = 0, dx = 0, fl = 0;
        if (augment) {
            uint64_t s = data_key(l->seed, 2, (uint64_t)(int64_t)l->epoch,
                                  (uint64_t)pos);
            uint64_t r = data_next(&s);
            if (pad > 0) {
                uint64_t span = 2 * (uint64_t)pad + 1;
                dy = (int)data_below(&s, span) - pad;
                dx = (int)data_below(&s, span) - pad;
            }
            if (l->flip) fl = (int)(r >> 63);
        }
        data_fill_one(x + (size_t)i * img, ds->pixels + (size_t)src * img, c, h, w, dy, dx,
                      fl, l->normalize, l->scale, l->bias);
        y[i] = ds->labels[src];
    }
    return count;
}

void loader_free(lsq_loader *l)
{
    if (!l) return;
    free(l->perm);
    memset(l, 0, sizeof *l);
}
