/* Reader for the PyTorch reference fixtures (format in fixture.h). The whole
 * file is read into memory once and parsed with every length checked against
 * the bytes that remain, so a truncated or corrupt file is reported, never
 * read past. */
#include "fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char FIXTURE_MAGIC[8] = {'L', 'S', 'Q', 'F', 'I', 'X', '1', '\0'};

typedef struct {
    const unsigned char *p;
    size_t left;
} cursor;

static int take(cursor *c, void *dst, size_t n)
{
    if (n > c->left)
        return -1;
    memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return 0;
}

static int take_u32(cursor *c, uint32_t *v)
{
    unsigned char b[4];
    if (take(c, b, 4) != 0)
        return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
    return 0;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long size;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf)
        goto out;
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
        goto out;
    }
    *len = (size_t)size;
out:
    fclose(f);
    return buf;
}

static int parse_tensor(cursor *c, fixture_tensor *t, const char **why)
{
    uint32_t name_len;
    if (take_u32(c, &name_len) != 0 || name_len == 0 || name_len > c->left) {
        *why = "bad name length";
        return -1;
    }
    t->name = malloc((size_t)name_len + 1);
    if (!t->name) {
        *why = "out of memory";
        return -1;
    }
    take(c, t->name, name_len);
    t->name[name_len] = '\0';
    if (strlen(t->name) != name_len) {
        *why = "NUL inside a name";
        return -1;
    }
    if (take_u32(c, &t->ndim) != 0 || t->ndim == 0 ||
        t->ndim > FIXTURE_MAX_DIMS) {
        *why = "bad ndim";
        return -1;
    }
    t->numel = 1;
    for (uint32_t i = 0; i < t->ndim; i++) {
        if (take_u32(c, &t->dims[i]) != 0) {
            *why = "truncated dims";
            return -1;
        }
        /* numel * 4 must fit in what is left, which also rules out overflow */
        if (t->dims[i] == 0 || t->dims[i] > c->left / 4 / t->numel) {
            *why = "dims run past the end of the file";
            return -1;
        }
        t->numel *= t->dims[i];
    }
    t->data = malloc(t->numel * sizeof(float));
    if (!t->data) {
        *why = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < t->numel; i++) {
        uint32_t bits;
        take_u32(c, &bits); /* cannot fail: checked against c->left above */
        memcpy(&t->data[i], &bits, sizeof bits);
    }
    return 0;
}

fixture *fixture_load(const char *path)
{
    size_t len = 0;
    unsigned char *buf = read_all(path, &len);
    fixture *fx = NULL;
    const char *why = NULL;
    cursor c;
    uint32_t count;
    char magic[8];

    if (!buf) {
        fprintf(stderr, "fixture %s: cannot read the file\n", path);
        return NULL;
    }
    c.p = buf;
    c.left = len;
    if (take(&c, magic, sizeof magic) != 0 ||
        memcmp(magic, FIXTURE_MAGIC, sizeof magic) != 0) {
        why = "bad magic (not an LSQFIX1 file)";
        goto out;
    }
    /* every tensor takes at least 16 bytes, which bounds the count */
    if (take_u32(&c, &count) != 0 || count > c.left / 16) {
        why = "bad tensor count";
        goto out;
    }
    fx = calloc(1, sizeof *fx);
    if (!fx || !(fx->tensors = calloc(count ? count : 1, sizeof *fx->tensors))) {
        why = "out of memory";
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        fx->count = i + 1; /* so fixture_free releases a half-parsed tensor */
        if (parse_tensor(&c, &fx->tensors[i], &why) != 0)
            goto out;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(fx->tensors[j].name, fx->tensors[i].name) == 0) {
                why = "duplicate tensor name";
                goto out;
            }
    }
    if (c.left != 0)
        why = "trailing bytes after the last tensor";
out:
    free(buf);
    if (why) {
        const char *at = fx && fx->count ? fx->tensors[fx->count - 1].name
                                         : NULL;
        fprintf(stderr, "fixture %s: %s%s%s\n", path, why,
                at ? " at tensor " : "", at ? at : "");
        fixture_free(fx);
        return NULL;
    }
    return fx;
}

const fixture_tensor *fixture_get(const fixture *fx, const char *name)
{
    if (!fx || !name)
        return NULL;
    for (size_t i = 0; i < fx->count; i++)
        if (strcmp(fx->tensors[i].name, name) == 0)
            return &fx->tensors[i];
    return NULL;
}

int fixture_has_shape(const fixture *fx, const char *name, uint32_t ndim,
                      const uint32_t *dims)
{
    const fixture_tensor *t = fixture_get(fx, name);
    if (!t || t->ndim != ndim)
        return 0;
    for (uint32_t i = 0; i < ndim; i++)
        if (t->dims[i] != dims[i])
            return 0;
    return 1;
}

void fixture_free(fixture *fx)
{
    if (!fx)
        return;
    for (size_t i = 0; i < fx->count; i++) {
        free(fx->tensors[i].name);
        free(fx->tensors[i].data);
    }
    free(fx->tensors);
    free(fx);
}

int fixture_compare(const fixture *fx, const char *name, const float *got,
                    size_t n, fixture_diff *d)
{
    const fixture_tensor *t = fixture_get(fx, name);
    if (!t) {
        fprintf(stderr, "fixture: no tensor %s\n", name);
        return -1;
    }
    if (t->numel != n) {
        fprintf(stderr, "fixture: %s holds %zu values, compared with %zu\n",
                name, t->numel, n);
        return -1;
    }
    d->max_abs = 0.0;
    d->max_rel = 0.0;
    d->ref_max = 0.0;
    d->worst = 0;
    for (size_t i = 0; i < n; i++) {
        double ref = t->data[i];
        double diff = isfinite(got[i]) ? fabs((double)got[i] - ref) : INFINITY;
        double rel = diff / fmax(fabs(ref), FIXTURE_REL_FLOOR);
        if (diff > d->max_abs) {
            d->max_abs = diff;
            d->worst = i;
        }
        if (rel > d->max_rel)
            d->max_rel = rel;
        if (fabs(ref) > d->ref_max)
            d->ref_max = fabs(ref);
    }
    return 0;
}
