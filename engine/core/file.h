/* Writing files safely: a file the engine writes for others to read (a
 * checkpoint, a .lsqm, an ONNX model) appears whole or not at all: it is
 * written to a temporary file in the same folder, flushed to the disk and
 * renamed over the target. A failed write leaves the previous file as it
 * was; a full disk is told apart from other I/O errors. */
#ifndef LSQ_FILE_H
#define LSQ_FILE_H

#include <stddef.h>

#include "core/err.h"

/* Fills err from a failed system call's errnum: LSQ_ERR_DISK_FULL for ENOSPC
 * and EDQUOT, with a message that starts "disk full (ENOSPC)", else
 * LSQ_ERR_IO. The message is "<what>: <strerror>". Returns the code. */
lsq_status lsq_err_errno(lsq_err *err, int errnum, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The temporary name lsq_file_* write before the rename: PATH.tmp.PID. */
void lsq_file_tmp_name(char *out, size_t cap, const char *path);

/* Writes len bytes as path, atomically (above). field names path in errors. */
lsq_status lsq_file_write_atomic(const char *path, const void *data, size_t len,
                                 const char *field, lsq_err *err);

/* After a rename into path's folder: fsync the folder, so that the new
 * name survives a power loss. Returns 0 or -1 (errno set). */
int lsq_file_sync_dir(const char *path);

#endif
