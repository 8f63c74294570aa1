/* CIFAR-10 and CIFAR-100 binary batches (the "binary version" of both sets)
 * into a cache.
 *
 *   CIFAR-10:  data_batch_1.bin .. data_batch_K.bin (train), test_batch.bin;
 *              records of 1 label byte + 3072 pixel bytes; names in
 *              batches.meta.txt
 *   CIFAR-100: train.bin, test.bin; records of 1 coarse label byte, 1 fine
 *              label byte + 3072 pixel bytes; names in fine_label_names.txt
 *              or coarse_label_names.txt
 *
 * The pixels of a record are 32x32 red, then green, then blue: already the
 * cache's (C, H, W). Files are found by name anywhere in the folder or
 * archive (cifar-10-binary.tar.gz holds them under cifar-10-batches-bin/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/cache.h"
#include "data/import.h"
#include "data/source.h"

#define CIFAR_PIXELS 3072
#define CIFAR_MAX_BATCHES 64

typedef struct {
    uint8_t *data;
    size_t n;
    char where[4096];
} cifar_file;

typedef struct {
    const char *src;
    int is_dir, c100;
    cifar_file batch[CIFAR_MAX_BATCHES + 1];  /* 1..K: data_batch_K.bin; c100: [1] is train.bin */
    cifar_file test, names;
} cifar_files;

/* 1..CIFAR_MAX_BATCHES for data_batch_N.bin (N without leading zeros), 0
 * for anything else. */
static int batch_number(const char *b)
{
    if (strncmp(b, "data_batch_", 11) != 0) return 0;
    const char *p = b + 11;
    int k = 0;
    if (*p == '0') return 0;
    while (*p >= '0' && *p <= '9' && k <= CIFAR_MAX_BATCHES) k = k * 10 + (*p++ - '0');
    return strcmp(p, ".bin") == 0 && k >= 1 && k <= CIFAR_MAX_BATCHES ? k : 0;
}

/* The slot an entry goes to, or NULL. */
static cifar_file *cifar_slot(cifar_files *f, const char *path)
{
    const char *b = src_basename(path);
    if (b[0] == '.' || strstr(path, "__MACOSX")) return NULL;
    if (!f->c100) {
        int k = batch_number(b);
        if (k) return &f->batch[k];
        if (!strcmp(b, "test_batch.bin")) return &f->test;
        if (!strcmp(b, "batches.meta.txt")) return &f->names;
        return NULL;
    }
    if (!strcmp(b, "train.bin")) return &f->batch[1];
    if (!strcmp(b, "test.bin")) return &f->test;
    return NULL;
}

typedef struct {
    cifar_files *f;
    const char *names_file;  /* c100: the names file of the chosen labels */
} cifar_ctx;

static cifar_file *ctx_slot(cifar_ctx *x, const char *path)
{
    if (x->f->c100 && !strcmp(src_basename(path), x->names_file) && !strstr(path, "__MACOSX"))
        return &x->f->names;
    return cifar_slot(x->f, path);
}

static int cifar_want(const char *path, void *ctx) { return ctx_slot(ctx, path) != NULL; }

static lsq_status cifar_visit(const src_entry *e, void *ctx, lsq_err *err)
{
    cifar_ctx *x = ctx;
    if (e->is_dir) return LSQ_OK;
    cifar_file *s = ctx_slot(x, e->path);
    char where[4096];
    snprintf(where, sizeof where, "%s%s%s", x->f->src, x->f->is_dir ? "/" : ":", e->path);
    if (s->data)
        return lsq_err_set(err, LSQ_ERR_FORMAT, x->f->src, "%s: two files named %s: %s and %s",
                           x->f->src, src_basename(e->path), s->where, where);
    s->data = malloc(e->size ? e->size : 1);
    if (!s->data) return lsq_err_set(err, LSQ_ERR_NOMEM, x->f->src, "out of memory reading %s", where);
    memcpy(s->data, e->data, e->size);
    s->n = e->size;
    snprintf(s->where, sizeof s->where, "%s", where);
    return LSQ_OK;
}

/* Records in a batch file, or -1 with err when its size is not whole. */
static long cifar_records(const cifar_file *b, size_t rec, lsq_err *err)
{
    if (b->n == 0 || b->n % rec != 0) {
        lsq_err_set(err, LSQ_ERR_FORMAT, b->where,
                    "%s: %zu bytes is not a whole number of %zu-byte CIFAR records "
                    "(truncated?)", b->where, b->n, rec);
        return -1;
    }
    return (long)(b->n / rec);
}

/* Appends the records of b to d from index *at. */
static lsq_status cifar_copy(lsq_dataset *d, int *at, const cifar_file *b, int c100, int coarse,
                             int classes, lsq_err *err)
{
    size_t rec = (size_t)CIFAR_PIXELS + 1 + (size_t)c100;
    long n = (long)(b->n / rec);
    for (long i = 0; i < n; i++) {
        const uint8_t *r = b->data + (size_t)i * rec;
        int label = c100 ? (coarse ? r[0] : r[1]) : r[0];
        if (label >= classes)
            return lsq_err_set(err, LSQ_ERR_FORMAT, b->where,
                               "%s: record %ld has %slabel %d, not below %d", b->where, i,
                               c100 ? (coarse ? "coarse " : "fine ") : "", label, classes);
        lsq_status st = cache_store(d, *at, r + 1 + c100, 3, 32, 32, 1, b->where, err);
        if (st != LSQ_OK) return st;
        d->labels[*at] = label;
        (*at)++;
    }
    return LSQ_OK;
}

lsq_status import_cifar(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    cifar_files *f = calloc(1, sizeof *f);
    memset(out, 0, sizeof *out);
    if (!f) return lsq_err_set(err, LSQ_ERR_NOMEM, src, "out of memory");
    f->src = src;
    f->is_dir = src_is_dir(src) == 1;
    f->c100 = o->format == DFMT_CIFAR100;
    cifar_ctx x = {f, o->coarse ? "coarse_label_names.txt" : "fine_label_names.txt"};
    int classes = f->c100 ? (o->coarse ? 20 : 100) : 10;
    size_t rec = (size_t)CIFAR_PIXELS + 1 + (size_t)f->c100;
    if ((st = src_walk(src, &o->limits, cifar_want, cifar_visit, &x, err)) != LSQ_OK) goto out;
    int nb = 0;
    while (nb < CIFAR_MAX_BATCHES && f->batch[nb + 1].data) nb++;
    for (int k = nb + 1; k <= CIFAR_MAX_BATCHES; k++)
        if (f->batch[k].data) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, src,
                             "%s: %s without data_batch_%d.bin (batches must be numbered from 1 "
                             "without gaps)", src, f->batch[k].where, nb + 1);
            goto out;
        }
    if (nb == 0 || !f->test.data) {
        st = lsq_err_set(err, LSQ_ERR_NOT_FOUND, src, "%s: no %s in it (a %s set)", src,
                         nb == 0 ? (f->c100 ? "train.bin" : "data_batch_1.bin")
                                 : (f->c100 ? "test.bin" : "test_batch.bin"),
                         f->c100 ? "CIFAR-100" : "CIFAR-10");
        goto out;
    }
    long ntr = 0, nte;
    for (int k = 1; k <= nb; k++) {
        long r = cifar_records(&f->batch[k], rec, err);
        if (r < 0 || ntr + r > (long)INT32_MAX) {
            st = r < 0 ? LSQ_ERR_FORMAT
                       : lsq_err_set(err, LSQ_ERR_FORMAT, src, "%s: too many records", src);
            goto out;
        }
        ntr += r;
    }
    if ((nte = cifar_records(&f->test, rec, err)) < 0) {
        st = LSQ_ERR_FORMAT;
        goto out;
    }
    int tc, th, tw;
    import_target(o, 3, 32, 32, &tc, &th, &tw);
    if ((st = cache_init(out, tc, th, tw, classes, f->c100 ? "cifar100" : "cifar10", err)) != LSQ_OK)
        goto out;
    if (f->names.data &&
        (st = cache_names_parse(out, f->names.data, f->names.n, f->names.where, err)) != LSQ_OK)
        goto out;
    if ((st = cache_alloc_split(out, &out->train, (int)ntr, err)) != LSQ_OK ||
        (st = cache_alloc_split(out, &out->test, (int)nte, err)) != LSQ_OK)
        goto out;
    int at = 0;
    for (int k = 1; k <= nb; k++) {
        st = cifar_copy(&out->train, &at, &f->batch[k], f->c100, o->coarse, classes, err);
        if (st != LSQ_OK) goto out;
        free(f->batch[k].data);  /* what is copied need not be held twice */
        f->batch[k].data = NULL;
    }
    at = 0;
    if ((st = cifar_copy(&out->test, &at, &f->test, f->c100, o->coarse, classes, err)) != LSQ_OK)
        goto out;
    st = cache_finish(out, err);
out:
    for (int k = 0; k <= CIFAR_MAX_BATCHES; k++) free(f->batch[k].data);
    free(f->test.data);
    free(f->names.data);
    free(f);
    if (st != LSQ_OK) cache_free(out);
    return st;
}
