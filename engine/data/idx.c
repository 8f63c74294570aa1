/* The IDX reader: unsigned-byte IDX files (the MNIST family's format), plain
 * or gzip-compressed. zlib's gz* layer reads both, telling them apart by the
 * first two bytes (0x1f 0x8b), so one code path serves both forms. The same
 * checks on a file in memory (idx_parse), and the IDX importer (import.h),
 * which reads the four files of a set from a folder or an archive.
 *
 * Inputs are untrusted: every count read from the file is checked before it
 * is used, the payload buffer grows with what is actually read (a header that
 * claims 2 GiB over a 100-byte file allocates kilobytes, not gigabytes), and
 * the payload must be exactly prod(dims) bytes. */
#include "data/data.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/cache.h"
#include "data/import.h"
#include "data/source.h"

/* Largest payload accepted: MNIST-like sets are a few tens of MB. */
#define IDX_MAX_BYTES ((size_t)1 << 31)
#define IDX_CHUNK ((size_t)1 << 20)

static lsq_status idx_gz_fail(int zerr, const char *msg, const char *path,
                              lsq_err *err)
{
    if (zerr == Z_ERRNO)
        return lsq_err_set(err, LSQ_ERR_IO, path, "%s: read failed: %s", path,
                           strerror(errno));
    return lsq_err_set(err, LSQ_ERR_FORMAT, path, "%s: corrupt gzip data: %s",
                       path, msg ? msg : "unknown zlib error");
}

/* Reads up to n bytes. Returns the count read (short only at end of data) or
 * -1 with err filled when zlib reports a corrupt stream or a read error. */
static long idx_gz_read(gzFile gz, void *buf, size_t n, const char *path,
                        lsq_status *st, lsq_err *err)
{
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > (size_t)INT_MAX / 2) want = (size_t)INT_MAX / 2;
        int r = gzread(gz, (char *)buf + got, (unsigned)want);
        if (r < 0) {
            int zerr = Z_OK;
            const char *msg = gzerror(gz, &zerr);
            *st = idx_gz_fail(zerr, msg, path, err);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    /* gzread may return a short count and leave the error for the next call
     * (a truncated gzip stream): surface it here rather than as "truncated". */
    if (got < n) {
        int zerr = Z_OK;
        const char *msg = gzerror(gz, &zerr);
        if (zerr != Z_OK && zerr != Z_STREAM_END) {
            *st = idx_gz_fail(zerr, msg, path, err);
            return -1;
        }
    }
    return (long)got;
}

lsq_status idx_read(idx_array *out, const char *path, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    gzFile gz = NULL;
    uint8_t *data = NULL;
    memset(out, 0, sizeof *out);
    if (!path || !*path)
        return lsq_err_set(err, LSQ_ERR_INVALID, "path", "IDX path is empty");

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot open %s: %s", path,
                           strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s: %s", path,
                           strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s: %s", path,
                           S_ISDIR(sb.st_mode) ? "is a directory"
                                               : "not a regular file");
    }
    gz = gzdopen(fd, "rb");
    if (!gz) {
        close(fd);
        return lsq_err_set(err, LSQ_ERR_NOMEM, path, "%s: cannot start zlib", path);
    }
    gzbuffer(gz, 1 << 17);

    uint8_t head[4];
    long r = idx_gz_read(gz, head, sizeof head, path, &st, err);
    if (r < 0) goto out;
    if (r < 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: truncated IDX header: %ld of 4 magic bytes", path, r);
        goto out;
    }
    if (head[0] != 0 || head[1] != 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: not an IDX file (magic %02x %02x %02x %02x)", path,
                         head[0], head[1], head[2], head[3]);
        goto out;
    }
    if (head[2] != 0x08) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: unsupported IDX data type 0x%02X (only 0x08, unsigned byte)",
                         path, head[2]);
        goto out;
    }
    int ndim = head[3];
    if (ndim < 1 || ndim > 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: IDX dimension count %d not in 1..4", path, ndim);
        goto out;
    }
    uint8_t dimb[16];
    r = idx_gz_read(gz, dimb, (size_t)ndim * 4, path, &st, err);
    if (r < 0) goto out;
    if (r < ndim * 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: truncated IDX header: %ld of %d dimension bytes",
                         path, r, ndim * 4);
        goto out;
    }
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *p = dimb + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                     (uint32_t)p[2] << 8 | (uint32_t)p[3];
        if (d == 0) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                             "%s: IDX dimension %d is zero", path, i);
            goto out;
        }
        /* Each factor is checked before the multiply, so count never wraps. */
        if (d > IDX_MAX_BYTES / count) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                             "%s: IDX dimensions too large (over %zu bytes)", path,
                             IDX_MAX_BYTES);
            goto out;
        }
        if (d > (uint32_t)INT_MAX) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                             "%s: IDX dimension %d too large (%u)", path, i, d);
            goto out;
        }
        count *= d;
        out->dims[i] = (int)d;
    }

    /* Grow with the data actually present, never trusting count up front. */
    size_t cap = 0, got = 0;
    while (got < count) {
        if (got == cap) {
            size_t ncap = cap ? cap * 2 : IDX_CHUNK;
            if (ncap > count) ncap = count;
            uint8_t *nd = realloc(data, ncap);
            if (!nd) {
                st = lsq_err_set(err, LSQ_ERR_NOMEM, path,
                                 "%s: out of memory for %zu bytes", path, ncap);
                goto out;
            }
            data = nd;
            cap = ncap;
        }
        r = idx_gz_read(gz, data + got, cap - got, path, &st, err);
        if (r < 0) goto out;
        got += (size_t)r;
        if (got < cap) break;  /* end of data */
    }
    if (got < count) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: truncated IDX payload: expected %zu bytes, got %zu",
                         path, count, got);
        goto out;
    }
    uint8_t extra[64];
    r = idx_gz_read(gz, extra, sizeof extra, path, &st, err);
    if (r < 0) goto out;
    if (r > 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s: trailing bytes after the %zu-byte IDX payload", path,
                         count);
        goto out;
    }

    out->ndim = ndim;
    out->count = count;
    out->data = data;
    out->type = 0x08;
    out->elem = 1;
    data = NULL;
out:
    if (gz) gzclose(gz);
    free(data);
    if (st != LSQ_OK) memset(out, 0, sizeof *out);
    return st;
}

void idx_free(idx_array *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- from memory ---- */

/* Inflates a gzip stream of n bytes into *out (at most cap bytes; past that
 * it is an error). */
static lsq_status idx_gunzip(uint8_t **out, size_t *len, const uint8_t *in, size_t n,
                             size_t cap, const char *name, lsq_err *err)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: cannot start zlib", name);
    lsq_status st = LSQ_OK;
    uint8_t *buf = NULL;
    size_t bcap = 0, got = 0;
    zs.next_in = (Bytef *)in;
    int r = Z_OK;
    size_t left = n;
    while (r != Z_STREAM_END) {
        if (got == bcap) {
            if (bcap > cap) {
                st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                                 "%s: inflates past %zu bytes; refused", name, cap);
                goto out;
            }
            size_t nc = bcap ? bcap * 2 : IDX_CHUNK;
            if (nc > cap + 1) nc = cap + 1;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                st = lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory", name);
                goto out;
            }
            buf = nb;
            bcap = nc;
        }
        if (zs.avail_in == 0 && left > 0) {
            uInt take = left > (1u << 30) ? (1u << 30) : (uInt)left;
            zs.avail_in = take;
            left -= take;
        }
        size_t room = bcap - got;
        zs.next_out = buf + got;
        zs.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
        uInt before = zs.avail_out;
        r = inflate(&zs, Z_NO_FLUSH);
        got += before - zs.avail_out;
        if (r == Z_BUF_ERROR && zs.avail_in == 0 && left == 0) r = Z_DATA_ERROR;
        if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: corrupt gzip data: %s", name,
                             r == Z_DATA_ERROR && zs.avail_in == 0 && left == 0
                                 ? "unexpected end of file"
                                 : (zs.msg ? zs.msg : "inflate failed"));
            goto out;
        }
    }
    if (got > cap) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: inflates past %zu bytes; refused", name,
                         cap);
        goto out;
    }
    if (zs.avail_in > 0 || left > 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: trailing bytes after the gzip stream",
                         name);
        goto out;
    }
    *out = buf;
    *len = got;
    buf = NULL;
out:
    inflateEnd(&zs);
    free(buf);
    return st;
}

long idx_get(const idx_array *a, size_t i)
{
    const uint8_t *p = a->data + i * (size_t)a->elem;
    if (a->elem == 1) return p[0];
    if (a->elem == 2) return (int16_t)(uint16_t)(p[0] << 8 | p[1]);
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
}

lsq_status idx_parse(idx_array *out, const uint8_t *bytes, size_t n, const char *name,
                     lsq_err *err)
{
    memset(out, 0, sizeof *out);
    uint8_t *plain = NULL;
    size_t len = n;
    const uint8_t *b = bytes;
    lsq_status st = LSQ_OK;
    if (n >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) {
        st = idx_gunzip(&plain, &len, bytes, n, IDX_MAX_BYTES + 4 + 16, name, err);
        if (st != LSQ_OK) return st;
        b = plain;
    }
    if (len < 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: truncated IDX header: %zu of 4 magic bytes",
                         name, len);
        goto out;
    }
    if (b[0] != 0 || b[1] != 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: not an IDX file (magic %02x %02x %02x %02x)",
                         name, b[0], b[1], b[2], b[3]);
        goto out;
    }
    int type = b[2], elem = type == 0x08 ? 1 : type == 0x0B ? 2 : type == 0x0C ? 4 : 0;
    if (!elem) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                         "%s: unsupported IDX data type 0x%02X (0x08, 0x0B, 0x0C: unsigned "
                         "byte, int16, int32)", name, type);
        goto out;
    }
    int ndim = b[3];
    if (ndim < 1 || ndim > 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: IDX dimension count %d not in 1..4", name,
                         ndim);
        goto out;
    }
    if (len < 4 + (size_t)ndim * 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                         "%s: truncated IDX header: %zu of %d dimension bytes", name, len - 4,
                         ndim * 4);
        goto out;
    }
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *p = b + 4 + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (d == 0) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: IDX dimension %d is zero", name, i);
            goto out;
        }
        if (d > IDX_MAX_BYTES / elem / count || d > (uint32_t)INT_MAX) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                             "%s: IDX dimensions too large (over %zu bytes)", name, IDX_MAX_BYTES);
            goto out;
        }
        count *= d;
        out->dims[i] = (int)d;
    }
    size_t head = 4 + (size_t)ndim * 4, bytes_n = count * (size_t)elem;
    if (len - head < bytes_n) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                         "%s: truncated IDX payload: expected %zu bytes, got %zu", name, bytes_n,
                         len - head);
        goto out;
    }
    if (len - head > bytes_n) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                         "%s: trailing bytes after the %zu-byte IDX payload", name, bytes_n);
        goto out;
    }
    out->data = malloc(bytes_n);
    if (!out->data) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory for %zu bytes", name, bytes_n);
        goto out;
    }
    memcpy(out->data, b + head, bytes_n);
    out->ndim = ndim;
    out->count = count;
    out->type = type;
    out->elem = elem;
out:
    free(plain);
    if (st != LSQ_OK) {
        free(out->data);
        memset(out, 0, sizeof *out);
    }
    return st;
}

/* ---- import: an IDX dataset folder or archive into a cache ---- */

enum { IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS, IDX_NAMES, IDX_ROLES };
static const char *const IDX_ROLE_NAMES[] = {"train-images-idx3-ubyte[.gz]",
                                             "train-labels-idx1-ubyte[.gz]",
                                             "t10k-images-idx3-ubyte[.gz]",
                                             "t10k-labels-idx1-ubyte[.gz]", "classes.txt"};
_Static_assert(sizeof IDX_ROLE_NAMES / sizeof *IDX_ROLE_NAMES == IDX_ROLES, "IDX_ROLE_NAMES");

typedef struct {
    const char *src;
    int is_dir;
    uint8_t *data[IDX_ROLES];
    size_t n[IDX_ROLES];
    char where[IDX_ROLES][4096];
} idx_files;

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The role of an entry by its name: {train,t10k,test}-{images,labels}
 * ...-ubyte[.gz], or classes.txt; -1 for anything else. Hidden files and
 * macOS resource forks never count. */
static int idx_role(const char *path)
{
    const char *b = src_basename(path);
    if (b[0] == '.' || strstr(path, "__MACOSX")) return -1;
    if (!strcmp(b, "classes.txt")) return IDX_NAMES;
    if (!ends_with(b, "-ubyte") && !ends_with(b, "-ubyte.gz")) return -1;
    int test = starts_with(b, "t10k-") || starts_with(b, "test-");
    if (!test && !starts_with(b, "train-")) return -1;
    const char *rest = strchr(b, '-') + 1;
    if (starts_with(rest, "images")) return test ? IDX_TEST_IMAGES : IDX_TRAIN_IMAGES;
    if (starts_with(rest, "labels")) return test ? IDX_TEST_LABELS : IDX_TRAIN_LABELS;
    return -1;
}

static int idx_want(const char *path, void *ctx)
{
    (void)ctx;
    return idx_role(path) >= 0;
}

static lsq_status idx_visit(const src_entry *e, void *ctx, lsq_err *err)
{
    idx_files *f = ctx;
    if (e->is_dir) return LSQ_OK;
    int r = idx_role(e->path);
    char where[4096];
    snprintf(where, sizeof where, "%s%s%s", f->src, f->is_dir ? "/" : ":", e->path);
    if (f->data[r])
        return lsq_err_set(err, LSQ_ERR_FORMAT, f->src, "%s: two files for %s: %s and %s", f->src,
                           IDX_ROLE_NAMES[r], f->where[r], where);
    f->data[r] = malloc(e->size ? e->size : 1);
    if (!f->data[r]) return lsq_err_set(err, LSQ_ERR_NOMEM, f->src, "out of memory reading %s", where);
    memcpy(f->data[r], e->data, e->size);
    f->n[r] = e->size;
    snprintf(f->where[r], sizeof f->where[r], "%s", where);
    return LSQ_OK;
}

/* Non-blank lines of a names file. */
static int idx_count_names(const uint8_t *t, size_t n)
{
    int k = 0, blank = 1;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\n') {
            k += !blank;
            blank = 1;
        } else if (t[i] != '\r' && t[i] != ' ' && t[i] != '\t') {
            blank = 0;
        }
    }
    return k + !blank;
}

lsq_status import_idx(lsq_cache *out, const char *src, const import_opts *o, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    idx_files f;
    idx_array a[4];
    memset(&f, 0, sizeof f);
    memset(a, 0, sizeof a);
    memset(out, 0, sizeof *out);
    f.src = src;
    f.is_dir = src_is_dir(src) == 1;
    if ((st = src_walk(src, &o->limits, idx_want, idx_visit, &f, err)) != LSQ_OK) goto out;
    for (int r = 0; r < IDX_NAMES; r++)
        if (!f.data[r]) {
            st = lsq_err_set(err, LSQ_ERR_NOT_FOUND, src, "%s: no %s (an IDX dataset has train-"
                             "and t10k- images and labels)", src, IDX_ROLE_NAMES[r]);
            goto out;
        }
    for (int r = 0; r < 4; r++) {
        if ((st = idx_parse(&a[r], f.data[r], f.n[r], f.where[r], err)) != LSQ_OK) goto out;
        free(f.data[r]);
        f.data[r] = NULL;
    }
    int shape[2][3], n[2], max_label = -1;
    for (int s = 0; s < 2; s++) {
        const idx_array *im = &a[2 * s], *lb = &a[2 * s + 1];
        const char *iw = f.where[2 * s], *lw = f.where[2 * s + 1];
        if (im->type != 0x08 || (im->ndim != 3 && im->ndim != 4)) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, iw,
                             "%s: image file must be unsigned bytes of 3 dimensions (N, H, W) "
                             "or 4 (N, C, H, W), has type 0x%02X and %d", iw, im->type, im->ndim);
            goto out;
        }
        int c = im->ndim == 4 ? im->dims[1] : 1;
        if (c != 1 && c != 3) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, iw,
                             "%s: rank-4 images are N x C x H x W with C 1 or 3; got %d x %d x "
                             "%d x %d", iw, im->dims[0], im->dims[1], im->dims[2], im->dims[3]);
            goto out;
        }
        shape[s][0] = c;
        shape[s][1] = im->dims[im->ndim - 2];
        shape[s][2] = im->dims[im->ndim - 1];
        if (lb->ndim != 1) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, lw, "%s: label file must have 1 dimension, has %d",
                             lw, lb->ndim);
            goto out;
        }
        if (im->dims[0] != lb->dims[0]) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, lw, "%s holds %d images but %s holds %d labels",
                             iw, im->dims[0], lw, lb->dims[0]);
            goto out;
        }
        n[s] = im->dims[0];
        for (size_t i = 0; i < lb->count; i++) {
            long l = idx_get(lb, i);
            if (l < 0 || l >= CACHE_MAX_CLASSES) {
                st = lsq_err_set(err, LSQ_ERR_FORMAT, lw,
                                 "%s: label %ld at index %zu is not in 0..%d", lw, l, i,
                                 CACHE_MAX_CLASSES - 1);
                goto out;
            }
            if (l > max_label) max_label = (int)l;
        }
    }
    if (memcmp(shape[0], shape[1], sizeof shape[0]) != 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, src, "%s: train images are %dx%dx%d but test images "
                         "are %dx%dx%d", src, shape[0][0], shape[0][1], shape[0][2], shape[1][0],
                         shape[1][1], shape[1][2]);
        goto out;
    }
    int classes = max_label + 1;
    if (f.data[IDX_NAMES]) {
        int k = idx_count_names(f.data[IDX_NAMES], f.n[IDX_NAMES]);
        if (k < classes) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, f.where[IDX_NAMES],
                             "%s: %d class names, but the labels go up to %d", f.where[IDX_NAMES],
                             k, max_label);
            goto out;
        }
        if (k <= CACHE_MAX_CLASSES) classes = k;
    }
    int tc, th, tw;
    import_target(o, shape[0][0], shape[0][1], shape[0][2], &tc, &th, &tw);
    if ((st = cache_init(out, tc, th, tw, classes, "idx", err)) != LSQ_OK) goto out;
    if (f.data[IDX_NAMES] &&
        (st = cache_names_parse(out, f.data[IDX_NAMES], f.n[IDX_NAMES], f.where[IDX_NAMES], err)) !=
            LSQ_OK)
        goto out;
    for (int s = 0; s < 2; s++) {
        lsq_dataset *d = s ? &out->test : &out->train;
        const idx_array *im = &a[2 * s], *lb = &a[2 * s + 1];
        if ((st = cache_alloc_split(out, d, n[s], err)) != LSQ_OK) goto out;
        size_t img = (size_t)shape[0][0] * shape[0][1] * shape[0][2];
        for (int i = 0; i < n[s]; i++) {
            if ((st = cache_store(d, i, im->data + (size_t)i * img, shape[0][0], shape[0][1],
                                  shape[0][2], 1, f.where[2 * s], err)) != LSQ_OK)
                goto out;
            d->labels[i] = (int32_t)idx_get(lb, (size_t)i);
        }
    }
    st = cache_finish(out, err);
out:
    for (int r = 0; r < IDX_ROLES; r++) free(f.data[r]);
    for (int r = 0; r < 4; r++) idx_free(&a[r]);
    if (st != LSQ_OK) cache_free(out);
    return st;
}
