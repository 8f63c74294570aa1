/* The dataset cache file (cache.h): building one in memory, its statistics,
 * writing it atomically and reading it back with every check. */
#include "data/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/image.h"

#define CACHE_MAX_HEADER ((uint32_t)1 << 20)
#define CACHE_PREFIX 12 /* magic, version, header bytes */

lsq_status cache_init(lsq_cache *c, int ch, int h, int w, int classes, const char *format,
                      lsq_err *err)
{
    memset(c, 0, sizeof *c);
    if (ch != 1 && ch != 3)
        return lsq_err_set(err, LSQ_ERR_INVALID, "channels", "images must have 1 or 3 channels, not %d",
                           ch);
    if (h < 1 || w < 1 || h > CACHE_MAX_SIDE || w > CACHE_MAX_SIDE)
        return lsq_err_set(err, LSQ_ERR_INVALID, "size", "image size %dx%d is not within 1..%d a side",
                           h, w, CACHE_MAX_SIDE);
    if (classes < 1 || classes > CACHE_MAX_CLASSES)
        return lsq_err_set(err, LSQ_ERR_FORMAT, "classes", "%d classes; 1..%d are supported", classes,
                           CACHE_MAX_CLASSES);
    c->names = calloc((size_t)classes, sizeof *c->names);
    if (!c->names) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory for class names");
    for (int k = 0; k < classes; k++) snprintf(c->names[k], CACHE_NAME_MAX, "%d", k);
    c->c = ch, c->h = h, c->w = w, c->classes = classes;
    snprintf(c->format, sizeof c->format, "%s", format ? format : "");
    return LSQ_OK;
}

/* dataset_free's work, done here so that the cache does not depend on the
 * loader's file (data.c reads IDX files, whose importer uses the cache). */
static void split_free(lsq_dataset *d)
{
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

lsq_status cache_alloc_split(lsq_cache *c, lsq_dataset *d, int n, lsq_err *err)
{
    size_t img = (size_t)c->c * c->h * c->w;
    memset(d, 0, sizeof *d);
    if (n < 0 || (size_t)n > CACHE_MAX_BYTES / img)
        return lsq_err_set(err, LSQ_ERR_FORMAT, NULL,
                           "%d images of %dx%dx%d are over the cache's limit of %zu bytes", n,
                           c->c, c->h, c->w, CACHE_MAX_BYTES);
    d->pixels = malloc(n ? (size_t)n * img : 1);
    d->labels = malloc(n ? (size_t)n * sizeof *d->labels : 1);
    if (!d->pixels || !d->labels) {
        split_free(d);
        return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory for %d images", n);
    }
    d->n = n, d->c = c->c, d->h = c->h, d->w = c->w, d->classes = c->classes;
    return LSQ_OK;
}

/* Valid UTF-8 without control characters (class names go into JSON and
 * onto terminals). */
static int name_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        if (b < 0x20 || b == 0x7f) return 0;
        int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += (size_t)len;
    }
    return 1;
}

lsq_status cache_set_name(lsq_cache *c, int k, const char *name, size_t len, const char *where,
                          lsq_err *err)
{
    if (len == 0 || len >= CACHE_NAME_MAX || !name_ok((const unsigned char *)name, len))
        return lsq_err_set(err, LSQ_ERR_FORMAT, where,
                           "%s: class %d's name must be 1..%d bytes of UTF-8 without control "
                           "characters, got \"%.*s\"", where, k, CACHE_NAME_MAX - 1,
                           (int)(len > 64 ? 64 : len), name);
    memcpy(c->names[k], name, len);
    c->names[k][len] = '\0';
    return LSQ_OK;
}

lsq_status cache_store(lsq_dataset *d, int i, const uint8_t *src, int c, int h, int w, int chw,
                       const char *name, lsq_err *err)
{
    size_t img = (size_t)d->c * d->h * d->w;
    uint8_t *dst = d->pixels + (size_t)i * img;
    if (c == d->c && h == d->h && w == d->w && (chw || c == 1)) {
        memcpy(dst, src, img);  /* the common case: already the cache's layout */
        return LSQ_OK;
    }
    if (image_fit(dst, d->c, d->h, d->w, src, c, h, w, chw) != 0)
        return lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory resizing an image", name);
    return LSQ_OK;
}

lsq_status cache_names_parse(lsq_cache *c, const uint8_t *text, size_t n, const char *where,
                             lsq_err *err)
{
    int k = 0;
    for (size_t p = 0; p < n;) {
        size_t e = p;
        while (e < n && text[e] != '\n') e++;
        size_t len = e - p;
        while (len > 0 && (text[p + len - 1] == '\r' || text[p + len - 1] == ' ' ||
                           text[p + len - 1] == '\t'))
            len--;
        if (len > 0) {
            if (k >= c->classes)
                return lsq_err_set(err, LSQ_ERR_FORMAT, where,
                                   "%s: more than the %d class names the labels allow", where,
                                   c->classes);
            lsq_status st = cache_set_name(c, k, (const char *)text + p, len, where, err);
            if (st != LSQ_OK) return st;
            k++;
        }
        p = e + 1;
    }
    if (k != c->classes)
        return lsq_err_set(err, LSQ_ERR_FORMAT, where, "%s: %d class names for %d classes", where,
                           k, c->classes);
    return LSQ_OK;
}

void cache_histogram(const lsq_cache *c, const lsq_dataset *d, long *hist)
{
    memset(hist, 0, (size_t)c->classes * sizeof *hist);
    for (int i = 0; i < d->n; i++)
        if (d->labels[i] >= 0 && d->labels[i] < c->classes) hist[d->labels[i]]++;
}

void cache_stats(const lsq_dataset *d, double *mean, double *std)
{
    size_t hw = (size_t)d->h * d->w;
    for (int ch = 0; ch < d->c; ch++) {
        uint64_t s1 = 0, s2 = 0;
        for (int i = 0; i < d->n; i++) {
            const uint8_t *p = d->pixels + ((size_t)i * d->c + ch) * hw;
            /* 32-bit partial sums of 4096 pixels cannot overflow (4096 *
             * 255^2 < 2^32) and keep the inner loop narrow */
            for (size_t k0 = 0; k0 < hw; k0 += 4096) {
                size_t k1 = hw - k0 < 4096 ? hw : k0 + 4096;
                uint32_t a = 0, b = 0;
                for (size_t k = k0; k < k1; k++) {
                    a += p[k];
                    b += (uint32_t)p[k] * p[k];
                }
                s1 += a;
                s2 += b;
            }
        }
        double n = (double)d->n * (double)hw;
        double m = n > 0 ? (double)s1 / n / 255.0 : 0.0;
        double var = n > 0 ? (double)s2 / n / (255.0 * 255.0) - m * m : 0.0;
        mean[ch] = m;
        std[ch] = var > 0 ? sqrt(var) : 0.0;
    }
}

lsq_status cache_finish(lsq_cache *c, lsq_err *err)
{
    if (c->train.n < 1)
        return lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "the dataset has no training images");
    const lsq_dataset *sp[2] = {&c->train, &c->test};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < sp[s]->n; i++)
            if (sp[s]->labels[i] < 0 || sp[s]->labels[i] >= c->classes)
                return lsq_err_set(err, LSQ_ERR_FORMAT, NULL,
                                   "%s label %d at index %d is not below the %d classes",
                                   s ? "test" : "train", sp[s]->labels[i], i, c->classes);
    cache_stats(&c->train, c->mean, c->std);
    return LSQ_OK;
}

void cache_free(lsq_cache *c)
{
    if (!c) return;
    free(c->names);
    split_free(&c->train);
    split_free(&c->test);
    memset(c, 0, sizeof *c);
}

/* ---- the summary ---- */

json_t *cache_summary_json(const lsq_cache *c)
{
    long *ht = calloc((size_t)c->classes, sizeof *ht), *hs = calloc((size_t)c->classes, sizeof *hs);
    json_t *classes = json_array(), *mean = json_array(), *std = json_array();
    if (ht && hs) {
        cache_histogram(c, &c->train, ht);
        cache_histogram(c, &c->test, hs);
    }
    for (int k = 0; k < c->classes; k++)
        json_array_append_new(classes, json_pack("{s:i, s:s, s:I, s:I}", "index", k, "name",
                                                 c->names[k], "train",
                                                 (json_int_t)(ht ? ht[k] : 0), "test",
                                                 (json_int_t)(hs ? hs[k] : 0)));
    for (int ch = 0; ch < c->c; ch++) {
        json_array_append_new(mean, json_real(c->mean[ch]));
        json_array_append_new(std, json_real(c->std[ch]));
    }
    free(ht);
    free(hs);
    return json_pack("{s:s, s:[i,i,i], s:{s:i, s:i}, s:i, s:o, s:o, s:o}", "format", c->format,
                     "shape", c->c, c->h, c->w, "counts", "train", c->train.n, "test",
                     c->test.n, "num_classes", c->classes, "classes", classes, "mean", mean,
                     "std", std);
}

/* ---- writing ---- */

typedef struct {
    FILE *f;
    uLong crc;
    int failed;
} wr;

static void wr_bytes(wr *w, const void *p, size_t n)
{
    if (w->failed || n == 0) return;
    if (fwrite(p, 1, n, w->f) != n) w->failed = 1;
    const unsigned char *b = p;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        w->crc = crc32(w->crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
}

static void wr_u32(wr *w, uint32_t x)
{
    unsigned char b[4] = {x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, x >> 24};
    wr_bytes(w, b, 4);
}

static void wr_labels(wr *w, const lsq_dataset *d)
{
    unsigned char buf[8192];
    size_t k = 0;
    for (int i = 0; i < d->n; i++) {
        buf[k++] = (unsigned char)(d->labels[i] & 0xff);
        buf[k++] = (unsigned char)(d->labels[i] >> 8);
        if (k == sizeof buf) wr_bytes(w, buf, k), k = 0;
    }
    wr_bytes(w, buf, k);
}

static json_t *header_json(const lsq_cache *c)
{
    json_t *names = json_array(), *mean = json_array(), *std = json_array();
    json_t *htr = json_array(), *hte = json_array();
    long *h = calloc((size_t)c->classes * 2, sizeof *h);
    if (h) {
        cache_histogram(c, &c->train, h);
        cache_histogram(c, &c->test, h + c->classes);
    }
    for (int k = 0; k < c->classes; k++) {
        json_array_append_new(names, json_string(c->names[k]));
        json_array_append_new(htr, json_integer(h ? h[k] : 0));
        json_array_append_new(hte, json_integer(h ? h[c->classes + k] : 0));
    }
    free(h);
    for (int ch = 0; ch < c->c; ch++) {
        json_array_append_new(mean, json_real(c->mean[ch]));
        json_array_append_new(std, json_real(c->std[ch]));
    }
    return json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:i, s:o, s:{s:i, s:o}, s:{s:i, s:o}, "
                     "s:o, s:o, s:s}",
                     "magic", "lsqd", "version", CACHE_VERSION, "format", c->format,
                     "channels", c->c, "height", c->h, "width", c->w, "classes", c->classes,
                     "names", names, "train", "count", c->train.n, "histogram", htr, "test",
                     "count", c->test.n, "histogram", hte, "mean", mean, "std", std, "labels",
                     "u16le");
}

lsq_status cache_write(const lsq_cache *c, const char *dir, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    char path[4096], tmp[4096];
    int made_dir = 0;
    FILE *f = NULL;
    char *text = NULL;
    if (snprintf(path, sizeof path, "%s/%s", dir, CACHE_FILE) >= (int)sizeof path - 32)
        return lsq_err_set(err, LSQ_ERR_INVALID, "out", "output folder name is too long");
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld", dir, CACHE_FILE, (long)getpid());
    if (mkdir(dir, 0755) == 0) made_dir = 1;
    else if (errno != EEXIST)
        return lsq_err_set(err, LSQ_ERR_IO, "out", "cannot create %s: %s", dir, strerror(errno));
    json_t *h = header_json(c);
    text = h ? json_dumps(h, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(h);
    if (!text) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, "out", "out of memory encoding the cache header");
        goto out;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        st = lsq_err_set(err, LSQ_ERR_IO, "out", "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    wr w = {f, crc32(0L, Z_NULL, 0), 0};
    wr_bytes(&w, "LSQD", 4);
    wr_u32(&w, CACHE_VERSION);
    wr_u32(&w, (uint32_t)strlen(text));
    wr_bytes(&w, text, strlen(text));
    size_t img = (size_t)c->c * c->h * c->w;
    wr_bytes(&w, c->train.pixels, (size_t)c->train.n * img);
    wr_bytes(&w, c->test.pixels, (size_t)c->test.n * img);
    wr_labels(&w, &c->train);
    wr_labels(&w, &c->test);
    wr_u32(&w, (uint32_t)w.crc);
    if (w.failed || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        st = lsq_err_set(err, LSQ_ERR_IO, "out", "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0) {
        st = lsq_err_set(err, LSQ_ERR_IO, "out", "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = lsq_err_set(err, LSQ_ERR_IO, "out", "cannot rename %s to %s: %s", tmp, path,
                         strerror(errno));
        goto out;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);  /* the rename itself survives a crash */
        close(dfd);
    }
out:
    if (f) fclose(f);
    free(text);
    if (st != LSQ_OK) {
        unlink(tmp);
        if (made_dir) rmdir(dir);
    }
    return st;
}

/* ---- reading ---- */

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    const char *path;
    lsq_err *err;
} rd_ctx;

static lsq_status bad(const rd_ctx *r, const char *what)
{
    return lsq_err_set(r->err, LSQ_ERR_FORMAT, r->path, "%s: corrupt cache: %s", r->path, what);
}

static lsq_status hdr_int(const rd_ctx *r, const json_t *o, const char *key, long long lo,
                          long long hi, long long *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char m[160];
        snprintf(m, sizeof m, "header field '%s' must be an integer in %lld..%lld", key, lo, hi);
        return bad(r, m);
    }
    *out = json_integer_value(v);
    return LSQ_OK;
}

/* An array of exactly n numbers, each finite and in [lo, hi]. */
static lsq_status hdr_reals(const rd_ctx *r, const json_t *o, const char *key, int n, double lo,
                            double hi, double *out)
{
    const json_t *a = json_object_get(o, key);
    char m[160];
    snprintf(m, sizeof m, "header field '%s' must hold %d numbers in [%g, %g]", key, n, lo, hi);
    if (!json_is_array(a) || json_array_size(a) != (size_t)n) return bad(r, m);
    for (int i = 0; i < n; i++) {
        const json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_number(v)) return bad(r, m);
        double x = json_number_value(v);
        if (!isfinite(x) || x < lo || x > hi) return bad(r, m);
        out[i] = x;
    }
    return LSQ_OK;
}

/* A split's header {count, histogram}: the histogram is (classes) counts
 * summing to count. */
static lsq_status hdr_split(const rd_ctx *r, const json_t *o, const char *key, int classes,
                            int *count, long *hist)
{
    const json_t *s = json_object_get(o, key);
    char m[160];
    snprintf(m, sizeof m, "header field '%s' must be {count, histogram of %d classes}", key,
             classes);
    if (!json_is_object(s)) return bad(r, m);
    long long n;
    if (hdr_int(r, s, "count", 0, INT_MAX, &n) != LSQ_OK) return bad(r, m);
    const json_t *h = json_object_get(s, "histogram");
    if (!json_is_array(h) || json_array_size(h) != (size_t)classes) return bad(r, m);
    long long sum = 0;
    for (int k = 0; k < classes; k++) {
        const json_t *v = json_array_get(h, (size_t)k);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > n)
            return bad(r, m);
        hist[k] = (long)json_integer_value(v);
        sum += hist[k];
    }
    if (sum != n) {
        snprintf(m, sizeof m, "the %s histogram sums to %lld, not the count %lld", key, sum, n);
        return bad(r, m);
    }
    *count = (int)n;
    return LSQ_OK;
}

/* Reads n bytes into p, folding them into *crc. */
static int rd_bytes(FILE *f, void *p, size_t n, uLong *crc)
{
    if (n && fread(p, 1, n, f) != n) return -1;
    const unsigned char *b = p;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        *crc = crc32(*crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return 0;
}

static int rd_labels(FILE *f, lsq_dataset *d, uLong *crc)
{
    unsigned char buf[8192];
    for (int i = 0; i < d->n;) {
        int k = d->n - i < (int)(sizeof buf / 2) ? d->n - i : (int)(sizeof buf / 2);
        if (rd_bytes(f, buf, (size_t)k * 2, crc) != 0) return -1;
        for (int j = 0; j < k; j++) d->labels[i + j] = buf[2 * j] | buf[2 * j + 1] << 8;
        i += k;
    }
    return 0;
}

lsq_status cache_read(lsq_cache *c, const char *dir, int header_only, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    char path[4096];
    memset(c, 0, sizeof *c);
    snprintf(path, sizeof path, "%s/%s", dir, CACHE_FILE);
    rd_ctx r = {path, err};
    json_t *h = NULL;
    char *text = NULL;
    long *hist = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot open %s: %s%s", path, strerror(errno),
                           errno == ENOENT ? " (not a folder written by lsq dataset import?)"
                                           : "");
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s: not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char pre[CACHE_PREFIX];
    uLong crc = crc32(0L, Z_NULL, 0);
    if (size < CACHE_PREFIX + 4 || rd_bytes(f, pre, CACHE_PREFIX, &crc) != 0) {
        st = bad(&r, "the file is too short to be a cache");
        goto out;
    }
    if (memcmp(pre, "LSQD", 4) != 0) {
        st = bad(&r, "wrong magic (not a dataset cache)");
        goto out;
    }
    if (rd_u32(pre + 4) != CACHE_VERSION) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: cache version %u; this lsq reads version %d (import it again)",
                         path, rd_u32(pre + 4), CACHE_VERSION);
        goto out;
    }
    uint32_t hl = rd_u32(pre + 8);
    if (hl == 0 || hl > CACHE_MAX_HEADER || hl > size - CACHE_PREFIX - 4) {
        st = bad(&r, "header length out of range (truncated?)");
        goto out;
    }
    text = malloc(hl);
    if (!text) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory reading %s", path);
        goto out;
    }
    if (rd_bytes(f, text, hl, &crc) != 0) {
        st = bad(&r, "truncated header");
        goto out;
    }
    json_error_t je;
    h = json_loadb(text, hl, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(h)) {
        st = bad(&r, "the header is not a JSON object");
        goto out;
    }
    long long ch, hh, ww, k;
    if ((st = hdr_int(&r, h, "channels", 1, 3, &ch)) || (st = hdr_int(&r, h, "height", 1, CACHE_MAX_SIDE, &hh)) ||
        (st = hdr_int(&r, h, "width", 1, CACHE_MAX_SIDE, &ww)) ||
        (st = hdr_int(&r, h, "classes", 1, CACHE_MAX_CLASSES, &k)))
        goto out;
    if (ch == 2) {
        st = bad(&r, "header field 'channels' must be 1 or 3");
        goto out;
    }
    const char *fmt = json_string_value(json_object_get(h, "format"));
    const char *lab = json_string_value(json_object_get(h, "labels"));
    if (!fmt || strlen(fmt) >= CACHE_FORMAT_MAX || !lab || strcmp(lab, "u16le") != 0) {
        st = bad(&r, "header fields 'format' and 'labels' (\"u16le\") are required");
        goto out;
    }
    lsq_err ierr;
    if (cache_init(c, (int)ch, (int)hh, (int)ww, (int)k, fmt, &ierr) != LSQ_OK) {
        st = bad(&r, ierr.message);
        goto out;
    }
    const json_t *names = json_object_get(h, "names");
    if (!json_is_array(names) || json_array_size(names) != (size_t)k) {
        st = bad(&r, "header field 'names' must hold one name per class");
        goto out;
    }
    for (int i = 0; i < (int)k; i++) {
        const json_t *v = json_array_get(names, (size_t)i);
        if (!json_is_string(v) ||
            cache_set_name(c, i, json_string_value(v), json_string_length(v), path, err) != LSQ_OK) {
            st = bad(&r, "a class name is not a valid name");
            goto out;
        }
    }
    hist = calloc((size_t)k * 2, sizeof *hist);
    if (!hist) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory reading %s", path);
        goto out;
    }
    int ntr, nte;
    if ((st = hdr_split(&r, h, "train", (int)k, &ntr, hist)) ||
        (st = hdr_split(&r, h, "test", (int)k, &nte, hist + k)))
        goto out;
    if (ntr < 1) {
        st = bad(&r, "no training images");
        goto out;
    }
    if ((st = hdr_reals(&r, h, "mean", (int)ch, 0.0, 1.0, c->mean)) ||
        (st = hdr_reals(&r, h, "std", (int)ch, 0.0, 1.0, c->std)))
        goto out;
    /* the exact size: every count is bounded above, so this cannot wrap */
    uint64_t img = (uint64_t)ch * hh * ww, n = (uint64_t)ntr + (uint64_t)nte;
    if (n * img > CACHE_MAX_BYTES) {
        st = bad(&r, "more pixels than a cache may hold");
        goto out;
    }
    uint64_t want = CACHE_PREFIX + (uint64_t)hl + n * img + n * 2 + 4;
    if (size != want) {
        char m[160];
        snprintf(m, sizeof m, "the file has %llu bytes, the header says %llu (%s)",
                 (unsigned long long)size, (unsigned long long)want,
                 size < want ? "truncated" : "trailing bytes");
        st = bad(&r, m);
        goto out;
    }
    c->train.n = ntr, c->test.n = nte;
    if (header_only) goto out;
    if ((st = cache_alloc_split(c, &c->train, ntr, err)) ||
        (st = cache_alloc_split(c, &c->test, nte, err)))
        goto out;
    if (rd_bytes(f, c->train.pixels, (size_t)ntr * img, &crc) ||
        rd_bytes(f, c->test.pixels, (size_t)nte * img, &crc) || rd_labels(f, &c->train, &crc) ||
        rd_labels(f, &c->test, &crc)) {
        st = lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s: %s", path,
                         ferror(f) ? strerror(errno) : "short read");
        goto out;
    }
    unsigned char tail[4];
    if (fread(tail, 1, 4, f) != 4) {
        st = bad(&r, "truncated checksum");
        goto out;
    }
    if (rd_u32(tail) != (uint32_t)crc) {
        char m[96];
        snprintf(m, sizeof m, "checksum %08x, expected %08x", (unsigned)crc, rd_u32(tail));
        st = bad(&r, m);
        goto out;
    }
    /* the labels against the classes and the header's histograms */
    long *got = hist;  /* reuse: compare in place */
    const lsq_dataset *sp[2] = {&c->train, &c->test};
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < sp[s]->n; i++) {
            int32_t l = sp[s]->labels[i];
            if (l >= k) {
                char m[128];
                snprintf(m, sizeof m, "%s label %d at index %d is not below %lld classes",
                         s ? "test" : "train", l, i, k);
                st = bad(&r, m);
                goto out;
            }
            got[s * k + l]--;
        }
    }
    for (long long i = 0; i < 2 * k; i++)
        if (got[i] != 0) {
            st = bad(&r, "the labels do not match the header's histograms");
            goto out;
        }
out:
    if (f) fclose(f);
    free(text);
    free(hist);
    json_decref(h);
    if (st != LSQ_OK) cache_free(c);
    return st;
}

/* ---- the sample grid ---- */

#define GRID_GAP 2

lsq_status cache_sample_grid(const lsq_cache *c, int per_class, int max_rows, int cell,
                             lsq_image *out, lsq_err *err)
{
    memset(out, 0, sizeof *out);
    if (per_class < 1 || per_class > 64 || max_rows < 1 || max_rows > 1000 || cell < 4 ||
        cell > 256)
        return lsq_err_set(err, LSQ_ERR_INVALID, "samples",
                           "samples: per class 1..64, rows 1..1000, cell 4..256; got %d, %d, %d",
                           per_class, max_rows, cell);
    int rows = c->classes < max_rows ? c->classes : max_rows;
    int side = c->h > c->w ? c->h : c->w;
    int ch = c->h, cw = c->w;
    if (side > cell) {
        ch = (int)lround((double)c->h * cell / side);
        cw = (int)lround((double)c->w * cell / side);
        if (ch < 1) ch = 1;
        if (cw < 1) cw = 1;
    }
    int gw = GRID_GAP + per_class * (cw + GRID_GAP), gh = GRID_GAP + rows * (ch + GRID_GAP);
    size_t plane = (size_t)gw * (size_t)gh, img = (size_t)c->c * c->h * c->w;
    uint8_t *planes = malloc((size_t)c->c * plane);
    uint8_t *cellbuf = malloc((size_t)c->c * ch * cw);
    int *filled = calloc((size_t)rows, sizeof *filled);
    uint8_t *px = malloc((size_t)c->c * plane);
    lsq_status st = LSQ_OK;
    if (!planes || !cellbuf || !filled || !px) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, "samples", "out of memory for the sample grid");
        goto out;
    }
    memset(planes, 255, (size_t)c->c * plane);
    const lsq_dataset *splits[2] = {&c->train, &c->test};
    for (int s = 0; s < 2; s++) {
        const lsq_dataset *d = splits[s];
        for (int i = 0; i < d->n && d->pixels; i++) {
            int k = d->labels[i];
            if (k < 0 || k >= rows || filled[k] >= per_class) continue;
            if (image_fit(cellbuf, c->c, ch, cw, d->pixels + (size_t)i * img, c->c, c->h, c->w,
                          1)) {
                st = lsq_err_set(err, LSQ_ERR_NOMEM, "samples", "out of memory resizing");
                goto out;
            }
            int y0 = GRID_GAP + k * (ch + GRID_GAP), x0 = GRID_GAP + filled[k] * (cw + GRID_GAP);
            for (int p = 0; p < c->c; p++)
                for (int y = 0; y < ch; y++)
                    memcpy(planes + (size_t)p * plane + (size_t)(y0 + y) * gw + x0,
                           cellbuf + ((size_t)p * ch + y) * cw, (size_t)cw);
            filled[k]++;
        }
    }
    for (size_t i = 0; i < plane; i++)
        for (int p = 0; p < c->c; p++) px[i * (size_t)c->c + (size_t)p] = planes[(size_t)p * plane + i];
    out->h = gh;
    out->w = gw;
    out->c = c->c;
    out->px = px;
    px = NULL;
out:
    free(planes);
    free(cellbuf);
    free(filled);
    free(px);
    return st;
}
