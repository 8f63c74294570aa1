/* lsq_err helpers and the status name table. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const LSQ_STATUS_NAMES[] = {
    "ok", "invalid_value", "parse_error", "not_found", "io_error",
    "bad_format", "out_of_memory", "cancelled", "numeric_error", "internal",
    "disk_full",
};
_Static_assert(sizeof LSQ_STATUS_NAMES / sizeof *LSQ_STATUS_NAMES == LSQ_ERR_COUNT,
               "LSQ_STATUS_NAMES must name every lsq_status");

lsq_status lsq_err_set(lsq_err *err, lsq_status code, const char *field,
                       const char *fmt, ...)
{
    if (!err) return code;
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

void lsq_err_prefix(lsq_err *err, const char *prefix)
{
    if (!err || !prefix || !*prefix) return;
    char tmp[sizeof err->message];
    /* Truncation is acceptable (the start of the message matters most);
     * testing the result also tells GCC so under -Wformat-truncation. */
    if (snprintf(tmp, sizeof tmp, "%s: %s", prefix, err->message) < 0) return;
    memcpy(err->message, tmp, sizeof tmp);
}

void lsq_err_clear(lsq_err *err)
{
    if (!err) return;
    err->code = LSQ_OK;
    err->field[0] = err->message[0] = '\0';
}
