/* A dataset source: a folder on disk or an archive (tar, tar.gz, tar.bz2,
 * tar.xz or zip; told by its bytes, not its name), visited entry by entry.
 *
 * Sources are untrusted (lsqd imports uploads), so every entry is checked
 * before anything is read from it: a path that is absolute or holds a ".."
 * component, a symlink or hardlink, a device or fifo, are refused; a regular
 * file's bytes are read under two caps, one per entry and one for the whole
 * source, counted on the bytes actually expanded (a small .tar.gz that
 * inflates past a cap is refused when it gets there, whatever its headers
 * claim). Files the visitor does not want are still read through and counted,
 * so that a bomb cannot hide in an entry that is skipped. Nothing is ever
 * written to disk. */
#ifndef LSQ_SOURCE_H
#define LSQ_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define SRC_MAX_ENTRY_BYTES ((size_t)1 << 30)   /* 1 GiB expanded per entry */
#define SRC_MAX_TOTAL_BYTES ((size_t)8 << 30)   /* 8 GiB expanded in all */
#define SRC_MAX_ENTRIES 4000000
#define SRC_MAX_PATH 1024
#define SRC_MAX_DEPTH 32

typedef struct {
    size_t max_entry_bytes;   /* 0: SRC_MAX_ENTRY_BYTES */
    size_t max_total_bytes;   /* 0: SRC_MAX_TOTAL_BYTES */
} src_limits;

/* One entry, borrowed for the duration of the visit. */
typedef struct {
    const char *path;         /* relative, '/'-separated, no "." or ".." parts,
                               * no trailing '/' */
    int is_dir;
    const uint8_t *data;      /* regular files the visitor wants: the content */
    size_t size;
} src_entry;

/* Whether the visitor needs the bytes of the file at path. */
typedef int (*src_want_fn)(const char *path, void *ctx);
/* Called for every directory and every wanted file; a status other than
 * LSQ_OK stops the walk and is returned (err filled by the visitor). */
typedef lsq_status (*src_visit_fn)(const src_entry *e, void *ctx, lsq_err *err);

/* Whether path is a folder (1), another existing thing (0) or missing (-1). */
int src_is_dir(const char *path);

/* Visits every entry of the folder or archive at path: a folder in sorted
 * order (names compared bytewise, depth first), an archive in its own order.
 * lim NULL: the default caps. Errors: LSQ_ERR_IO (cannot open or read),
 * LSQ_ERR_FORMAT (not an archive, truncated or corrupt, a refused entry,
 * a cap passed); the message names the source and the entry. */
lsq_status src_walk(const char *path, const src_limits *lim, src_want_fn want,
                    src_visit_fn visit, void *ctx, lsq_err *err);

/* The last component of a source path ("a/b/c.png" -> "c.png"). */
const char *src_basename(const char *path);

#endif
