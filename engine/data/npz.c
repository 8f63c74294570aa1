/* NumPy .npz (a zip of .npy arrays, as numpy.savez and Keras write them)
 * into a cache: x_train, y_train, x_test, y_test.
 *
 * Images are uint8 arrays of shape (N, H, W), (N, H, W, C) or (N, C, H, W)
 * with C 1 or 3; the channel axis is the last one when it is 1 or 3,
 * otherwise the second. Labels are integers of any width (signed or not,
 * either byte order), shape (N) or (N, 1). The zip is read through
 * libarchive (source.h), which inflates stored and deflated members alike;
 * the .npy header is parsed here: magic, version 1 to 3, and a Python dict
 * literal with exactly 'descr', 'fortran_order' and 'shape'. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/cache.h"
#include "data/import.h"
#include "data/source.h"

enum { NPZ_XTR, NPZ_YTR, NPZ_XTE, NPZ_YTE, NPZ_ROLES };
static const char *const NPZ_NAMES[] = {"x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"};
_Static_assert(sizeof NPZ_NAMES / sizeof *NPZ_NAMES == NPZ_ROLES, "NPZ_NAMES");

typedef struct {
    int ndim;
    long dims[4];
    size_t count;
    int size;            /* bytes per item */
    int is_signed, big;  /* integer kind and byte order */
    const uint8_t *data; /* borrowed from the entry's bytes */
} npy_array;

typedef struct {
    const char *src;
    uint8_t *data[NPZ_ROLES];
    size_t n[NPZ_ROLES];
    char where[NPZ_ROLES][4096];
} npz_files;

static int npz_role(const char *path)
{
    if (strstr(path, "__MACOSX")) return -1;
    for (int r = 0; r < NPZ_ROLES; r++)
        if (!strcmp(src_basename(path), NPZ_NAMES[r])) return r;
    return -1;
}

static int npz_want(const char *path, void *ctx)
{
    (void)ctx;
    return npz_role(path) >= 0;
}

static lsq_status npz_visit(const src_entry *e, void *ctx, lsq_err *err)
{
    npz_files *f = ctx;
    if (e->is_dir) return LSQ_OK;
    int r = npz_role(e->path);
    char where[4096];
    snprintf(where, sizeof where, "%s:%s", f->src, e->path);
    if (f->data[r])
        return lsq_err_set(err, LSQ_ERR_FORMAT, f->src, "%s: two entries named %s", f->src,
                           NPZ_NAMES[r]);
    f->data[r] = malloc(e->size ? e->size : 1);
    if (!f->data[r]) return lsq_err_set(err, LSQ_ERR_NOMEM, f->src, "out of memory reading %s", where);
    memcpy(f->data[r], e->data, e->size);
    f->n[r] = e->size;
    snprintf(f->where[r], sizeof f->where[r], "%s", where);
    return LSQ_OK;
}

/* ---- the .npy header: a tiny parser of the one dict literal numpy writes ---- */

typedef struct {
    const char *p, *end;
} cur;

static void skip_ws(cur *c)
{
    while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static int eat(cur *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "...") into out. */
static int read_str(cur *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= cap) return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return -1;
    c->p++;
    out[n] = '\0';
    return 0;
}

static lsq_status npy_parse(npy_array *a, const uint8_t *b, size_t n, const char *where,
                            lsq_err *err)
{
    memset(a, 0, sizeof *a);
#define NPY_BAD(...) return lsq_err_set(err, LSQ_ERR_FORMAT, where, __VA_ARGS__)
    if (n < 10 || memcmp(b, "\x93NUMPY", 6) != 0) NPY_BAD("%s: not a .npy array (bad magic)", where);
    int major = b[6];
    size_t hl, off;
    if (major == 1) {
        hl = (size_t)b[8] | (size_t)b[9] << 8;
        off = 10;
    } else if (major == 2 || major == 3) {
        if (n < 12) NPY_BAD("%s: truncated .npy header", where);
        hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        off = 12;
    } else {
        NPY_BAD("%s: .npy version %d.%d is not supported (1 to 3)", where, major, b[7]);
    }
    if (hl > n - off || hl > 65536) NPY_BAD("%s: truncated .npy header", where);
    cur c = {(const char *)b + off, (const char *)b + off + hl};
    char descr[16] = "", key[32];
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    if (!eat(&c, '{')) NPY_BAD("%s: .npy header is not a dict", where);
    while (!eat(&c, '}')) {
        if (read_str(&c, key, sizeof key) != 0 || !eat(&c, ':'))
            NPY_BAD("%s: malformed .npy header", where);
        if (!strcmp(key, "descr")) {
            if (read_str(&c, descr, sizeof descr) != 0) NPY_BAD("%s: malformed 'descr'", where);
            have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            skip_ws(&c);
            if (c.end - c.p >= 4 && !strncmp(c.p, "True", 4)) fortran = 1, c.p += 4;
            else if (c.end - c.p >= 5 && !strncmp(c.p, "False", 5)) fortran = 0, c.p += 5;
            else NPY_BAD("%s: malformed 'fortran_order'", where);
            have_fortran = 1;
        } else if (!strcmp(key, "shape")) {
            if (!eat(&c, '(')) NPY_BAD("%s: malformed 'shape'", where);
            a->ndim = 0;
            while (!eat(&c, ')')) {
                skip_ws(&c);
                long v = 0;
                int digits = 0;
                while (c.p < c.end && isdigit((unsigned char)*c.p) && digits < 12)
                    v = v * 10 + (*c.p++ - '0'), digits++;
                if (!digits || a->ndim == 4)
                    NPY_BAD("%s: 'shape' must hold 1 to 4 sizes", where);
                a->dims[a->ndim++] = v;
                eat(&c, ',');
            }
            have_shape = 1;
        } else {
            NPY_BAD("%s: unknown .npy header key '%s'", where, key);
        }
        eat(&c, ',');
    }
    if (!have_descr || !have_fortran || !have_shape)
        NPY_BAD("%s: .npy header lacks descr, fortran_order or shape", where);
    if (fortran) NPY_BAD("%s: Fortran-ordered arrays are not supported; save it C-ordered", where);
    if (a->ndim == 0) NPY_BAD("%s: a scalar, not an array", where);
    /* descr: byte order (<, >, |, =) then kind (u, i) then size */
    const char *d = descr;
    if (*d == '<' || *d == '|' || *d == '=') d++;
    else if (*d == '>') a->big = 1, d++;
    if ((*d != 'u' && *d != 'i') || !d[1] || d[2] ||
        (d[1] != '1' && d[1] != '2' && d[1] != '4' && d[1] != '8'))
        NPY_BAD("%s: dtype '%s' is not an integer type (uint8 images, integer labels)", where,
                descr);
    a->is_signed = *d == 'i';
    a->size = d[1] - '0';
    size_t count = 1;
    for (int i = 0; i < a->ndim; i++) {
        if (a->dims[i] < 0 || a->dims[i] > INT_MAX) NPY_BAD("%s: a size in 'shape' is too large", where);
        if (a->dims[i] && (size_t)a->dims[i] > (SIZE_MAX / 16) / count)
            NPY_BAD("%s: 'shape' is too large", where);
        count *= (size_t)a->dims[i];
    }
    size_t have = n - off - hl;
    if (have != count * (size_t)a->size)
        NPY_BAD("%s: %s data: %zu bytes for %zu items of %d bytes", where,
                have < count * (size_t)a->size ? "truncated" : "trailing", have, count, a->size);
    a->count = count;
    a->data = b + off + hl;
    return LSQ_OK;
#undef NPY_BAD
}

/* Item i as a signed integer (values past the long range saturate). */
static long long npy_int(const npy_array *a, size_t i)
{
    const uint8_t *p = a->data + i * (size_t)a->size;
    unsigned long long u = 0;
    for (int k = 0; k < a->size; k++)
        u |= (unsigned long long)p[a->big ? a->size - 1 - k : k] << (8 * k);
    if (a->is_signed && a->size < 8 && (u >> (8 * a->size - 1)) & 1)
        u |= ~0ULL << (8 * a->size);  /* sign-extend */
    if (!a->is_signed && u > (unsigned long long)LLONG_MAX) return LLONG_MAX;
    return (long long)u;
}

lsq_status import_npz(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    npz_files f;
    npy_array a[NPZ_ROLES];
    memset(&f, 0, sizeof f);
    memset(out, 0, sizeof *out);
    f.src = src;
    if ((st = src_walk(src, &o->limits, npz_want, npz_visit, &f, err)) != LSQ_OK) goto out;
    for (int r = 0; r < NPZ_ROLES; r++) {
        if (!f.data[r]) {
            st = lsq_err_set(err, LSQ_ERR_NOT_FOUND, src,
                             "%s: no %s in it (an .npz needs x_train, y_train, x_test, y_test)",
                             src, NPZ_NAMES[r]);
            goto out;
        }
        if ((st = npy_parse(&a[r], f.data[r], f.n[r], f.where[r], err)) != LSQ_OK) goto out;
    }
    int shape[2][3], chw[2], n[2], max_label = -1;
    for (int s = 0; s < 2; s++) {
        const npy_array *x = &a[2 * s], *y = &a[2 * s + 1];
        const char *xw = f.where[2 * s], *yw = f.where[2 * s + 1];
        if (x->size != 1 || x->is_signed || (x->ndim != 3 && x->ndim != 4)) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, xw,
                             "%s: images must be uint8 of shape (N, H, W), (N, H, W, C) or "
                             "(N, C, H, W)", xw);
            goto out;
        }
        if (x->ndim == 3) {
            shape[s][0] = 1, shape[s][1] = (int)x->dims[1], shape[s][2] = (int)x->dims[2];
            chw[s] = 1;
        } else if (x->dims[3] == 1 || x->dims[3] == 3) {
            shape[s][0] = (int)x->dims[3], shape[s][1] = (int)x->dims[1];
            shape[s][2] = (int)x->dims[2];
            chw[s] = 0;
        } else if (x->dims[1] == 1 || x->dims[1] == 3) {
            shape[s][0] = (int)x->dims[1], shape[s][1] = (int)x->dims[2];
            shape[s][2] = (int)x->dims[3];
            chw[s] = 1;
        } else {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, xw,
                             "%s: shape (%ld, %ld, %ld, %ld) has no channel axis of 1 or 3 "
                             "(NHWC or NCHW)", xw, x->dims[0], x->dims[1], x->dims[2], x->dims[3]);
            goto out;
        }
        if (shape[s][1] < 1 || shape[s][2] < 1) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, xw, "%s: images of size 0", xw);
            goto out;
        }
        if (!(y->ndim == 1 || (y->ndim == 2 && y->dims[1] == 1))) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, yw, "%s: labels must have shape (N) or (N, 1)", yw);
            goto out;
        }
        if (x->dims[0] != y->dims[0]) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, yw, "%s holds %ld images but %s holds %ld labels",
                             xw, x->dims[0], yw, y->dims[0]);
            goto out;
        }
        n[s] = (int)x->dims[0];
        for (size_t i = 0; i < y->count; i++) {
            long long l = npy_int(y, i);
            if (l < 0 || l >= CACHE_MAX_CLASSES) {
                st = lsq_err_set(err, LSQ_ERR_FORMAT, yw, "%s: label %lld at index %zu is not in "
                                 "0..%d", yw, l, i, CACHE_MAX_CLASSES - 1);
                goto out;
            }
            if (l > max_label) max_label = (int)l;
        }
    }
    if (memcmp(shape[0], shape[1], sizeof shape[0]) != 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, src, "%s: x_train images are %dx%dx%d but x_test "
                         "images are %dx%dx%d", src, shape[0][0], shape[0][1], shape[0][2],
                         shape[1][0], shape[1][1], shape[1][2]);
        goto out;
    }
    int tc, th, tw;
    import_target(o, shape[0][0], shape[0][1], shape[0][2], &tc, &th, &tw);
    if ((st = cache_init(out, tc, th, tw, max_label + 1, "npz", err)) != LSQ_OK) goto out;
    for (int s = 0; s < 2; s++) {
        lsq_dataset *d = s ? &out->test : &out->train;
        if ((st = cache_alloc_split(out, d, n[s], err)) != LSQ_OK) goto out;
        size_t img = (size_t)shape[s][0] * shape[s][1] * shape[s][2];
        for (int i = 0; i < n[s]; i++) {
            st = cache_store(d, i, a[2 * s].data + (size_t)i * img, shape[s][0], shape[s][1],
                             shape[s][2], chw[s], f.where[2 * s], err);
            if (st != LSQ_OK) goto out;
            d->labels[i] = (int32_t)npy_int(&a[2 * s + 1], (size_t)i);
        }
    }
    st = cache_finish(out, err);
out:
    for (int r = 0; r < NPZ_ROLES; r++) free(f.data[r]);
    if (st != LSQ_OK) cache_free(out);
    return st;
}
