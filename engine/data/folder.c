/* Image folders into a cache: one sub-folder of PNG and JPEG images per
 * class, its name the class name, in a folder or a .tar / .tar.gz / .zip.
 *
 *   ROOT/cat/0001.png  ROOT/cat/0002.jpg  ROOT/dog/a.jpeg ...
 *
 * ROOT may be the source itself or folders inside it (an archive that wraps
 * everything in "pets/"); every image must sit exactly one level below the
 * same ROOT. Files are images by their extension (.png, .jpg, .jpeg, any
 * case) and decoded by their bytes; other files are ignored, and so is
 * anything hidden (a name starting with '.') or under __MACOSX. Classes are
 * numbered in the bytewise order of their names.
 *
 * Images are decoded as they arrive and fitted at once to the declared size
 * and channels (--size, --channels); without them all images must agree
 * with the first. The format has no split: each class is split by a seeded
 * shuffle into test (round(fraction * n), at most n - 1) and train, and
 * each split is stored in a seeded random order, so that a train_limit
 * takes a sample of every class rather than the first classes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/rng.h"
#include "data/cache.h"
#include "data/image.h"
#include "data/import.h"
#include "data/source.h"

typedef struct {
    char *path;
    size_t off;        /* into the pool */
    int cls;
} fimage;

typedef struct {
    const char *src;
    int is_dir;
    const import_opts *o;
    int c, h, w;                   /* the stored shape, fixed by the options or the first image */
    char first[4096];              /* the first image, for messages */
    int first_c;                   /* its channels (without --channels) */
    fimage *im;
    size_t n, cap;
    uint8_t *pool;
    size_t pool_n, pool_cap;
    char **dirs;                   /* every folder seen (entries and parents of files) */
    size_t ndirs, dcap;
    long long total;               /* images to decode (a folder source), else -1 */
} folder_ctx;

static int hidden(const char *path)
{
    if (strstr(path, "__MACOSX")) return 1;
    for (const char *p = path; *p; p++)
        if (*p == '.' && (p == path || p[-1] == '/')) return 1;
    return 0;
}

static int is_image_name(const char *path)
{
    const char *dot = strrchr(src_basename(path), '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* Remembers a folder (parent of a file, or a folder entry). */
static int add_dir(folder_ctx *x, const char *path, size_t len)
{
    if (len == 0) return 0;
    if (x->ndirs && strlen(x->dirs[x->ndirs - 1]) == len &&
        !strncmp(x->dirs[x->ndirs - 1], path, len))
        return 0;  /* the common repeat: files of one folder in a row */
    if (x->ndirs == x->dcap) {
        size_t nc = x->dcap ? x->dcap * 2 : 64;
        char **nd = realloc(x->dirs, nc * sizeof *nd);
        if (!nd) return -1;
        x->dirs = nd;
        x->dcap = nc;
    }
    if (!(x->dirs[x->ndirs] = strndup(path, len))) return -1;
    x->ndirs++;
    return 0;
}

static int folder_want(const char *path, void *ctx)
{
    folder_ctx *x = ctx;
    if (hidden(path)) return 0;
    const char *slash = strrchr(path, '/');
    add_dir(x, path, slash ? (size_t)(slash - path) : 0);  /* out of memory: caught below */
    return is_image_name(path);
}

static lsq_status folder_visit(const src_entry *e, void *ctx, lsq_err *err)
{
    folder_ctx *x = ctx;
    if (e->is_dir) {
        if (!hidden(e->path) && add_dir(x, e->path, strlen(e->path)) != 0)
            return lsq_err_set(err, LSQ_ERR_NOMEM, x->src, "out of memory");
        return LSQ_OK;
    }
    char where[4096];
    snprintf(where, sizeof where, "%s%s%s", x->src, x->is_dir ? "/" : ":", e->path);
    if (!strchr(e->path, '/'))
        return lsq_err_set(err, LSQ_ERR_FORMAT, where,
                           "%s: image is not inside a class folder (CLASS/IMAGE)", where);
    lsq_image im;
    lsq_status st = image_decode(&im, e->data, e->size, where, x->o->h, x->o->w, err);
    if (st != LSQ_OK) return st;
    if (x->n == 0) {
        snprintf(x->first, sizeof x->first, "%s", where);
        x->first_c = im.c;
        x->c = x->o->channels ? x->o->channels : im.c;
        x->h = x->o->h ? x->o->h : im.h;
        x->w = x->o->w ? x->o->w : im.w;
        if (x->h > CACHE_MAX_SIDE || x->w > CACHE_MAX_SIDE) {
            image_free(&im);
            return lsq_err_set(err, LSQ_ERR_FORMAT, where,
                               "%s: %dx%d images are over the cache's %d a side; give --size", where,
                               im.h, im.w, CACHE_MAX_SIDE);
        }
    } else if (!x->o->channels && im.c != x->first_c) {
        image_free(&im);
        return lsq_err_set(err, LSQ_ERR_FORMAT, where,
                           "%s: mixed channel counts: this image is %s but %s is %s; give "
                           "--channels 1 or 3 to convert", where, im.c == 1 ? "grey" : "colour",
                           x->first, x->first_c == 1 ? "grey" : "colour");
    } else if (!x->o->h && (im.h != x->h || im.w != x->w)) {
        image_free(&im);
        return lsq_err_set(err, LSQ_ERR_FORMAT, where,
                           "%s: images of different sizes: this one is %dx%d but %s is %dx%d; "
                           "give --size HxW to resize", where, im.h, im.w, x->first, x->h, x->w);
    }
    size_t img = (size_t)x->c * x->h * x->w;
    if (x->pool_n + img > CACHE_MAX_BYTES) {
        image_free(&im);
        return lsq_err_set(err, LSQ_ERR_FORMAT, x->src, "%s: the images are over the cache's "
                           "limit of %zu bytes", x->src, CACHE_MAX_BYTES);
    }
    if (x->pool_n + img > x->pool_cap) {
        size_t nc = x->pool_cap ? x->pool_cap * 2 : img * 256;
        while (nc < x->pool_n + img) nc *= 2;
        uint8_t *np = realloc(x->pool, nc);
        if (!np) {
            image_free(&im);
            return lsq_err_set(err, LSQ_ERR_NOMEM, x->src, "out of memory for the images");
        }
        x->pool = np;
        x->pool_cap = nc;
    }
    if (x->n == x->cap) {
        size_t nc = x->cap ? x->cap * 2 : 256;
        fimage *ni = realloc(x->im, nc * sizeof *ni);
        if (!ni) {
            image_free(&im);
            return lsq_err_set(err, LSQ_ERR_NOMEM, x->src, "out of memory for the images");
        }
        x->im = ni;
        x->cap = nc;
    }
    lsq_dataset one = {1, x->c, x->h, x->w, 0, x->pool + x->pool_n, NULL};
    st = cache_store(&one, 0, im.px, im.c, im.h, im.w, 0, where, err);
    image_free(&im);
    if (st != LSQ_OK) return st;
    x->im[x->n].path = strdup(e->path);
    if (!x->im[x->n].path) return lsq_err_set(err, LSQ_ERR_NOMEM, x->src, "out of memory");
    x->im[x->n].off = x->pool_n;
    x->im[x->n].cls = -1;
    x->n++;
    x->pool_n += img;
    if (x->o->progress) x->o->progress(x->o->progress_ctx, (long long)x->n, x->total);
    return LSQ_OK;
}

/* Counts the images of a folder source without reading them (progress). */
static int count_want(const char *path, void *ctx)
{
    if (!hidden(path) && strchr(path, '/') && is_image_name(path)) (*(long long *)ctx)++;
    return 0;
}

static lsq_status count_visit(const src_entry *e, void *ctx, lsq_err *err)
{
    (void)e;
    (void)ctx;
    (void)err;
    return LSQ_OK;
}

/* The length of path's folder part ("a/b/c" -> 3, "c" -> 0). */
static size_t dir_len(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? (size_t)(s - path) : 0;
}

/* By folder first (bytewise, so classes come in the order of their names),
 * then by path. */
static int cmp_image(const void *pa, const void *pb)
{
    const char *a = ((const fimage *)pa)->path, *b = ((const fimage *)pb)->path;
    size_t la = dir_len(a), lb = dir_len(b);
    int c = memcmp(a, b, la < lb ? la : lb);
    if (c) return c;
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}

/* Where the folder part of the first len bytes of p ends: the index of its
 * last '/', 0 when there is none. */
static size_t parent_len(const char *p, size_t len)
{
    for (size_t k = len; k > 0; k--)
        if (p[k - 1] == '/') return k - 1;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void shuffle(int *a, int n, lsq_rng *r)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_uniform(r) * (i + 1));
        if (j > i) j = i;
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

lsq_status import_folder(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    folder_ctx x;
    memset(&x, 0, sizeof x);
    memset(out, 0, sizeof *out);
    x.src = src;
    x.is_dir = src_is_dir(src) == 1;
    x.o = o;
    int *cls_n = NULL, *order = NULL, *is_test = NULL;
    char (*names)[CACHE_NAME_MAX] = NULL;
    x.total = -1;
    /* a folder is cheap to list first, which gives progress its total; an
     * archive would have to be read twice */
    if (x.is_dir && o->progress) {
        long long n = 0;
        if (src_walk(src, &o->limits, count_want, count_visit, &n, err) == LSQ_OK) x.total = n;
    }
    if ((st = src_walk(src, &o->limits, folder_want, folder_visit, &x, err)) != LSQ_OK) goto out;
    if (x.n == 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, src,
                         "%s: no images (PNG or JPEG files in class folders)", src);
        goto out;
    }
    qsort(x.im, x.n, sizeof *x.im, cmp_image);
    /* the root: the folder above the class folders, the same for all */
    const char *p0 = x.im[0].path;
    size_t cl0 = dir_len(p0), root = parent_len(p0, cl0);
    int classes = 0;
    names = calloc(x.n < CACHE_MAX_CLASSES + 1 ? x.n : CACHE_MAX_CLASSES + 1, sizeof *names);
    if (!names) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, src, "out of memory");
        goto out;
    }
    /* class folders in sorted order: images are sorted, so a class's images
     * are contiguous and classes come in bytewise order of their folder */
    const char *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < x.n; i++) {
        const char *p = x.im[i].path;
        size_t dl = dir_len(p), r = parent_len(p, dl);
        if (r != root || strncmp(p, p0, root) != 0) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, src,
                             "%s: class folders at different places: '%.*s' and '%.*s' (every "
                             "image must be ROOT/CLASS/IMAGE)", src, (int)cl0, p0, (int)dl, p);
            goto out;
        }
        if (!prev || dl != prev_len || strncmp(p, prev, dl) != 0) {
            if (classes == CACHE_MAX_CLASSES) {
                st = lsq_err_set(err, LSQ_ERR_FORMAT, src, "%s: more than %d class folders",
                                 src, CACHE_MAX_CLASSES);
                goto out;
            }
            const char *nm = root ? p + root + 1 : p;
            size_t nl = dl - (size_t)(nm - p);
            char where[4096];
            snprintf(where, sizeof where, "%s%s%.*s", src, x.is_dir ? "/" : ":", (int)dl, p);
            if (nl == 0 || nl >= CACHE_NAME_MAX) {
                st = lsq_err_set(err, LSQ_ERR_FORMAT, where,
                                 "%s: a class folder name must be 1..%d bytes", where,
                                 CACHE_NAME_MAX - 1);
                goto out;
            }
            memcpy(names[classes], nm, nl);
            names[classes][nl] = '\0';
            classes++;
            prev = p;
            prev_len = dl;
        }
        x.im[i].cls = classes - 1;
    }
    /* a folder beside the classes without images is a class with none */
    if (x.ndirs) qsort(x.dirs, x.ndirs, sizeof *x.dirs, cmp_str);
    for (size_t i = 0, k = 0; i < x.ndirs; i++) {
        const char *d = x.dirs[i];
        if (dir_len(d) != root || strncmp(d, p0, root) != 0) continue;
        const char *nm = root ? d + root + 1 : d;
        while (k < (size_t)classes && strcmp(names[k], nm) < 0) k++;
        if (k == (size_t)classes || strcmp(names[k], nm) != 0) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, src,
                             "%s: class folder '%s' has no images (PNG or JPEG)", src, d);
            goto out;
        }
    }
    if ((st = cache_init(out, x.c, x.h, x.w, classes, "folder", err)) != LSQ_OK) goto out;
    for (int k = 0; k < classes; k++) {
        char where[4096];
        snprintf(where, sizeof where, "%s (class folder '%s')", src, names[k]);
        if ((st = cache_set_name(out, k, names[k], strlen(names[k]), where, err)) != LSQ_OK) goto out;
    }
    /* the split: per class, a seeded shuffle; the first round(f * n) are test */
    cls_n = calloc((size_t)classes + 1, sizeof *cls_n);
    order = malloc(x.n * sizeof *order);
    is_test = calloc(x.n, sizeof *is_test);
    if (!cls_n || !order || !is_test) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, src, "out of memory");
        goto out;
    }
    int ntest = 0;
    for (size_t i = 0, start = 0; i <= x.n; i++) {
        if (i < x.n && x.im[i].cls == x.im[start].cls) continue;
        int n = (int)(i - start), k = x.im[start].cls;
        for (int j = 0; j < n; j++) order[j] = (int)start + j;
        lsq_rng r;
        rng_seed(&r, o->seed, 0xf01d0000ULL + (uint64_t)k);
        shuffle(order, n, &r);
        int t = (int)(o->test_fraction * n + 0.5);
        if (t > n - 1) t = n - 1;
        for (int j = 0; j < t; j++) is_test[order[j]] = 1;
        ntest += t;
        start = i;
    }
    if (ntest == 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, src,
                         "%s: a test fraction of %g leaves no test images (%zu images); raise "
                         "--test-fraction", src, o->test_fraction, x.n);
        goto out;
    }
    if ((st = cache_alloc_split(out, &out->train, (int)x.n - ntest, err)) != LSQ_OK ||
        (st = cache_alloc_split(out, &out->test, ntest, err)) != LSQ_OK)
        goto out;
    size_t img = (size_t)x.c * x.h * x.w;
    for (int s = 0; s < 2; s++) {
        lsq_dataset *d = s ? &out->test : &out->train;
        int m = 0;
        for (size_t i = 0; i < x.n; i++)
            if (is_test[i] == s) order[m++] = (int)i;
        lsq_rng r;
        rng_seed(&r, o->seed, 0x0de70000ULL + (uint64_t)s);
        shuffle(order, m, &r);
        for (int j = 0; j < m; j++) {
            memcpy(d->pixels + (size_t)j * img, x.pool + x.im[order[j]].off, img);
            d->labels[j] = x.im[order[j]].cls;
        }
    }
    st = cache_finish(out, err);
out:
    for (size_t i = 0; i < x.n; i++) free(x.im[i].path);
    for (size_t i = 0; i < x.ndirs; i++) free(x.dirs[i]);
    free(x.im);
    free(x.dirs);
    free(x.pool);
    free(names);
    free(cls_n);
    free(order);
    free(is_test);
    if (st != LSQ_OK) cache_free(out);
    return st;
}
