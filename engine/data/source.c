/* Dataset sources (source.h): folders walked with opendir/lstat, archives
 * read with libarchive. Both paths end in the same checks and the same
 * capped reads, so a format reader never sees an unchecked entry. */
#include "data/source.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *src;          /* the source's path, for messages */
    size_t max_entry, max_total;
    size_t total;             /* bytes expanded so far */
    long entries;
    src_want_fn want;
    src_visit_fn visit;
    void *ctx;
    lsq_err *err;
} walk;

int src_is_dir(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    return S_ISDIR(sb.st_mode) ? 1 : 0;
}

const char *src_basename(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Cleans an entry's path into out: drops empty and "." components and a
 * trailing '/'. Returns 0, 1 when nothing is left (the root itself), or -1
 * with *why set for an absolute path or a ".." component. */
static int clean_path(const char *in, char *out, size_t cap, const char **why)
{
    if (in[0] == '/') {
        *why = "an absolute path";
        return -1;
    }
    size_t o = 0;
    const char *p = in;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            *why = "a '..' component";
            return -1;
        }
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (o + n + 2 > cap) {
                *why = "a path over 1024 bytes";
                return -1;
            }
            if (o) out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        if (*p == '/') p++;
    }
    out[o] = '\0';
    return o == 0 ? 1 : 0;
}

static lsq_status refuse(walk *w, const char *entry, const char *what)
{
    return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src, "%s: entry '%.300s' is %s; refused",
                       w->src, entry, what);
}

/* Counts n more expanded bytes of entry; fails past either cap. */
static lsq_status count_bytes(walk *w, const char *entry, size_t entry_bytes, size_t n)
{
    if (entry_bytes > w->max_entry)
        return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                           "%s: entry '%.300s' expands past %zu bytes, the cap per entry "
                           "(a decompression bomb?); refused", w->src, entry, w->max_entry);
    if (n > w->max_total - w->total)
        return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                           "%s: the archive expands past %zu bytes in all at entry '%.300s' "
                           "(a decompression bomb?); refused", w->src, w->max_total, entry);
    w->total += n;
    return LSQ_OK;
}

static lsq_status count_entry(walk *w, const char *entry)
{
    if (++w->entries > SRC_MAX_ENTRIES)
        return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                           "%s: more than %d entries (at '%.300s'); refused", w->src,
                           SRC_MAX_ENTRIES, entry);
    return LSQ_OK;
}

/* Grows *buf (capacity *cap) to hold at least need bytes, doubling, never
 * past limit + 1 (one byte more than allowed is how a cap is seen). */
static int grow(uint8_t **buf, size_t *cap, size_t need, size_t limit)
{
    if (need <= *cap) return 0;
    if (need > limit + 1) return -1;
    size_t n = *cap ? *cap : 1 << 16;
    while (n < need) n = n > (limit + 1) / 2 ? limit + 1 : n * 2;
    if (n < need) return -1;
    uint8_t *p = realloc(*buf, n);
    if (!p) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

/* ---- archives ---- */

static lsq_status archive_fail(walk *w, struct archive *a, const char *entry)
{
    const char *msg = archive_error_string(a);
    if (entry)
        return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                           "%s: truncated or corrupt archive at entry '%.300s': %s", w->src,
                           entry, msg ? msg : "read error");
    return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src, "%s: truncated or corrupt archive: %s",
                       w->src, msg ? msg : "read error");
}

/* Whether the file starts like a gzip, bzip2, xz or zip stream: then a
 * failure to read it is damage, not a file of another kind. */
static int looks_packed(const char *path)
{
    unsigned char b[6] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    return (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) || (n >= 3 && !memcmp(b, "BZh", 3)) ||
           (n >= 6 && !memcmp(b, "\xfd" "7zXZ\0", 6)) || (n >= 4 && !memcmp(b, "PK\3\4", 4));
}

static lsq_status walk_archive(walk *w)
{
    lsq_status st = LSQ_OK;
    uint8_t *buf = NULL, scratch[1 << 16];
    size_t cap = 0;
    struct archive *a = archive_read_new();
    if (!a) return lsq_err_set(w->err, LSQ_ERR_NOMEM, w->src, "out of memory opening %s", w->src);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_zip(a);
    if (archive_read_open_filename(a, w->src, 1 << 16) != ARCHIVE_OK) {
        const char *msg = archive_error_string(a);
        int e = archive_errno(a);
        if (e == ENOENT || e == EACCES || e == EISDIR)
            st = lsq_err_set(w->err, LSQ_ERR_IO, w->src, "cannot open %s: %s", w->src,
                             strerror(e));
        else if (looks_packed(w->src))
            st = archive_fail(w, a, NULL);
        else
            st = lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                             "%s: not a tar or zip archive (%s)", w->src,
                             msg ? msg : "unrecognized");
        goto out;
    }
    for (int first = 1;; first = 0) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
            /* nothing recognised at all is "not an archive"; a compressed
             * stream or a known format that fails is a damaged one */
            if (first && !looks_packed(w->src))
                st = lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                                 "%s: not a tar or zip archive (%s)", w->src,
                                 archive_error_string(a) ? archive_error_string(a)
                                                         : "unrecognized");
            else st = archive_fail(w, a, NULL);
            goto out;
        }
        const char *raw = archive_entry_pathname(e);
        if (!raw) raw = archive_entry_pathname_utf8(e);
        if (!raw) {
            st = lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                             "%s: an entry has no readable path; refused", w->src);
            goto out;
        }
        if ((st = count_entry(w, raw)) != LSQ_OK) goto out;
        char path[SRC_MAX_PATH + 2];
        const char *why = NULL;
        int c = clean_path(raw, path, sizeof path, &why);
        if (c < 0) {
            st = refuse(w, raw, why);
            goto out;
        }
        if (archive_entry_hardlink(e)) {
            st = refuse(w, raw, "a hardlink");
            goto out;
        }
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFLNK) {
            st = refuse(w, raw, "a symlink");
            goto out;
        }
        if (type == AE_IFDIR) {
            if (c == 0) {
                src_entry se = {path, 1, NULL, 0};
                if ((st = w->visit(&se, w->ctx, w->err)) != LSQ_OK) goto out;
            }
            continue;
        }
        if (type != AE_IFREG) {
            st = refuse(w, raw, "not a regular file");
            goto out;
        }
        if (c == 1) {
            st = refuse(w, raw, "a file without a name");
            goto out;
        }
        if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
            (uint64_t)archive_entry_size(e) > w->max_entry) {
            st = lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                             "%s: entry '%.300s' declares %lld bytes, over the cap of %zu "
                             "bytes per entry (a decompression bomb?); refused", w->src, path,
                             (long long)archive_entry_size(e), w->max_entry);
            goto out;
        }
        int wanted = w->want(path, w->ctx);
        size_t got = 0;
        for (;;) {
            la_ssize_t n;
            if (wanted) {
                if (grow(&buf, &cap, got + 1, w->max_entry) != 0) {
                    st = lsq_err_set(w->err, LSQ_ERR_NOMEM, w->src,
                                     "%s: out of memory reading entry '%.300s'", w->src, path);
                    goto out;
                }
                n = archive_read_data(a, buf + got, cap - got);
            } else {
                n = archive_read_data(a, scratch, sizeof scratch);
            }
            if (n < 0) {
                st = archive_fail(w, a, path);
                goto out;
            }
            if (n == 0) break;
            got += (size_t)n;
            if ((st = count_bytes(w, path, got, (size_t)n)) != LSQ_OK) goto out;
        }
        if (wanted) {
            src_entry se = {path, 0, buf, got};
            if ((st = w->visit(&se, w->ctx, w->err)) != LSQ_OK) goto out;
        }
    }
out:
    archive_read_free(a);
    free(buf);
    return st;
}

/* ---- folders ---- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a regular file (already lstat-ed) under the caps. */
static lsq_status read_file(walk *w, const char *full, const char *rel, uint8_t **buf,
                            size_t *cap, size_t *len)
{
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return lsq_err_set(w->err, LSQ_ERR_IO, w->src, "cannot open %s: %s", full,
                           strerror(errno));
    lsq_status st = LSQ_OK;
    size_t got = 0;
    for (;;) {
        if (grow(buf, cap, got + 1, w->max_entry) != 0) {
            st = lsq_err_set(w->err, LSQ_ERR_NOMEM, w->src, "out of memory reading %s", full);
            break;
        }
        ssize_t n = read(fd, *buf + got, *cap - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            st = lsq_err_set(w->err, LSQ_ERR_IO, w->src, "cannot read %s: %s", full,
                             strerror(errno));
            break;
        }
        if (n == 0) break;
        got += (size_t)n;
        if ((st = count_bytes(w, rel, got, (size_t)n)) != LSQ_OK) break;
    }
    close(fd);
    *len = got;
    return st;
}

static lsq_status walk_dir(walk *w, const char *full, const char *rel, int depth, uint8_t **buf,
                           size_t *cap)
{
    if (depth > SRC_MAX_DEPTH)
        return lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                           "%s: folders nested deeper than %d at '%.300s'; refused", w->src,
                           SRC_MAX_DEPTH, rel);
    DIR *d = opendir(full);
    if (!d)
        return lsq_err_set(w->err, LSQ_ERR_IO, w->src, "cannot open %s: %s", full,
                           strerror(errno));
    lsq_status st = LSQ_OK;
    char **names = NULL;
    size_t n = 0, ncap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == ncap) {
            size_t nc = ncap ? ncap * 2 : 64;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) {
                st = lsq_err_set(w->err, LSQ_ERR_NOMEM, w->src, "out of memory listing %s", full);
                goto out;
            }
            names = nn;
            ncap = nc;
        }
        if (!(names[n] = strdup(de->d_name))) {
            st = lsq_err_set(w->err, LSQ_ERR_NOMEM, w->src, "out of memory listing %s", full);
            goto out;
        }
        n++;
    }
    if (n) qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n && st == LSQ_OK; i++) {
        char cfull[4096], crel[SRC_MAX_PATH + 2];
        int lf = snprintf(cfull, sizeof cfull, "%s/%s", full, names[i]);
        int lr = *rel ? snprintf(crel, sizeof crel, "%s/%s", rel, names[i])
                      : snprintf(crel, sizeof crel, "%s", names[i]);
        if (lf >= (int)sizeof cfull || lr > SRC_MAX_PATH) {
            st = refuse(w, names[i], "a path over 1024 bytes");
            break;
        }
        if ((st = count_entry(w, crel)) != LSQ_OK) break;
        struct stat sb;
        if (lstat(cfull, &sb) != 0) {
            st = lsq_err_set(w->err, LSQ_ERR_IO, w->src, "cannot read %s: %s", cfull,
                             strerror(errno));
            break;
        }
        if (S_ISLNK(sb.st_mode)) {
            st = refuse(w, crel, "a symlink");
        } else if (S_ISDIR(sb.st_mode)) {
            src_entry se = {crel, 1, NULL, 0};
            if ((st = w->visit(&se, w->ctx, w->err)) == LSQ_OK)
                st = walk_dir(w, cfull, crel, depth + 1, buf, cap);
        } else if (!S_ISREG(sb.st_mode)) {
            st = refuse(w, crel, "not a regular file");
        } else if (w->want(crel, w->ctx)) {
            if ((uint64_t)sb.st_size > w->max_entry) {
                st = lsq_err_set(w->err, LSQ_ERR_FORMAT, w->src,
                                 "%s: '%.300s' has %lld bytes, over the cap of %zu bytes per "
                                 "file; refused", w->src, crel, (long long)sb.st_size,
                                 w->max_entry);
                break;
            }
            size_t len = 0;
            if ((st = read_file(w, cfull, crel, buf, cap, &len)) == LSQ_OK) {
                src_entry se = {crel, 0, *buf, len};
                st = w->visit(&se, w->ctx, w->err);
            }
        }
    }
out:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    closedir(d);
    return st;
}

lsq_status src_walk(const char *path, const src_limits *lim, src_want_fn want,
                    src_visit_fn visit, void *ctx, lsq_err *err)
{
    walk w = {path, SRC_MAX_ENTRY_BYTES, SRC_MAX_TOTAL_BYTES, 0, 0, want, visit, ctx, err};
    if (lim && lim->max_entry_bytes) w.max_entry = lim->max_entry_bytes;
    if (lim && lim->max_total_bytes) w.max_total = lim->max_total_bytes;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot open %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        uint8_t *buf = NULL;
        size_t cap = 0;
        lsq_status st = walk_dir(&w, path, "", 0, &buf, &cap);
        free(buf);
        return st;
    }
    if (!S_ISREG(sb.st_mode))
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s: not a file or folder", path);
    return walk_archive(&w);
}
