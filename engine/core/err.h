/* Error reporting for the engine: library code never prints and never exits;
 * it returns a status and fills an lsq_err that the caller turns into a CLI
 * message or an HTTP error. The `field` names the offending input
 * ("train.lr", "layers[3].kernel", "images file") where there is one. */
#ifndef LSQ_ERR_H
#define LSQ_ERR_H

#include <stddef.h>

typedef enum {
    LSQ_OK = 0,
    LSQ_ERR_INVALID,   /* a value out of range or of the wrong type (422) */
    LSQ_ERR_PARSE,     /* malformed text: JSON that does not parse (400) */
    LSQ_ERR_NOT_FOUND, /* a named thing that does not exist (404 / 422) */
    LSQ_ERR_IO,        /* a file could not be read or written */
    LSQ_ERR_FORMAT,    /* a file whose bytes are wrong: magic, size, checksum */
    LSQ_ERR_NOMEM,     /* an allocation failed */
    LSQ_ERR_CANCELLED, /* stopped on request (SIGTERM) */
    LSQ_ERR_NUMERIC,   /* the loss or a parameter became NaN/Inf */
    LSQ_ERR_INTERNAL,  /* a bug: should not happen */
    LSQ_ERR_DISK_FULL, /* a write failed with ENOSPC or EDQUOT: free space, then resume */
    LSQ_ERR_COUNT
} lsq_status;

/* Stable snake_case names, used as the "code" of wire errors and events. */
extern const char *const LSQ_STATUS_NAMES[];

typedef struct {
    lsq_status code;
    char field[128];
    char message[512];
} lsq_err;

/* Fills err (if not NULL) and returns code. field may be NULL. */
lsq_status lsq_err_set(lsq_err *err, lsq_status code, const char *field,
                       const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes err->message with "prefix: " (for context as errors travel up). */
void lsq_err_prefix(lsq_err *err, const char *prefix);

void lsq_err_clear(lsq_err *err);

#endif
