/* The IDX reader: unsigned-byte IDX files (the MNIST family's format), plain
 * or gzip-compressed. zlib's gz* layer reads both, telling them apart by the
 * first two bytes (0x1f 0x8b), so one code path serves both forms.
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
