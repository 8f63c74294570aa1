/* The JSON-lines event protocol between the engine and lsqd. The engine writes
 * events through this module and lsqd reads them through it, so the two
 * cannot drift apart. One event per line, a JSON object with a "type":
 *   start, progress, epoch, checkpoint, artifact, done, error, log.
 */
#ifndef LSQ_EVENTS_H
#define LSQ_EVENTS_H

#include <jansson.h>
#include <stdio.h>

#include "core/err.h"

typedef enum {
    EV_START, EV_PROGRESS, EV_EPOCH, EV_CHECKPOINT, EV_ARTIFACT, EV_DONE,
    EV_ERROR, EV_LOG, EV_COUNT
} ev_type;

extern const char *const EV_TYPE_NAMES[];

/* A sink: an fd (pipe, file), or nothing. Writes are whole lines, flushed. */
typedef struct {
    int fd;          /* -1: events are dropped */
} ev_sink;

void ev_sink_init(ev_sink *s, int fd);
/* Steals obj: adds "type" and "time" (unix seconds, float) and writes one
 * line. Returns 0, or -1 if the write failed (the reader went away). */
int ev_emit(ev_sink *s, ev_type type, json_t *obj);

/* Parses one line into a new object (caller owns it) and its type. Errors:
 * LSQ_ERR_PARSE for bad JSON, LSQ_ERR_INVALID for an unknown or missing type. */
lsq_status ev_parse(const char *line, size_t len, json_t **out, ev_type *type,
                    lsq_err *err);

#endif
