/* Atomic file writes and errno-to-status mapping (file.h). */
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

lsq_status lsq_err_errno(lsq_err *err, int errnum, const char *field, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (errnum == ENOSPC || errnum == EDQUOT)
        return lsq_err_set(err, LSQ_ERR_DISK_FULL, field, "disk full (%s): %s: %s; free space "
                           "and resume", errnum == ENOSPC ? "ENOSPC" : "EDQUOT", what,
                           strerror(errnum));
    return lsq_err_set(err, LSQ_ERR_IO, field, "%s: %s", what, strerror(errnum));
}

void lsq_file_tmp_name(char *out, size_t cap, const char *path)
{
    snprintf(out, cap, "%s.tmp.%ld", path, (long)getpid());
}

int lsq_file_sync_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

lsq_status lsq_file_write_atomic(const char *path, const void *data, size_t len,
                                 const char *field, lsq_err *err)
{
    char tmp[4200];
    lsq_file_tmp_name(tmp, sizeof tmp, path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return lsq_err_errno(err, errno, field, "cannot create %s", tmp);
    const char *p = data;
    size_t left = len;
    int e = 0;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { e = n < 0 ? errno : EIO; break; }
        p += n;
        left -= (size_t)n;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (e) {
        unlink(tmp);
        return lsq_err_errno(err, e, field, "cannot write %s", tmp);
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return lsq_err_errno(err, e, field, "cannot rename %s to %s", tmp, path);
    }
    lsq_file_sync_dir(path); /* the data is safe; only the name could be lost */
    return LSQ_OK;
}
