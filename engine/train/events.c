/* JSON-lines events: the one definition of the engine <-> lsqd protocol. */
#include "train/events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

const char *const EV_TYPE_NAMES[] = {
    "start", "progress", "epoch", "checkpoint", "artifact", "done", "error", "log",
};
_Static_assert(sizeof EV_TYPE_NAMES / sizeof *EV_TYPE_NAMES == EV_COUNT,
               "EV_TYPE_NAMES must name every ev_type");

void ev_sink_init(ev_sink *s, int fd) { s->fd = fd; }

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int ev_emit(ev_sink *s, ev_type type, json_t *obj)
{
    if (!obj) obj = json_object();
    int rc = 0;
    if (s->fd < 0) goto out;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_object_set_new(obj, "type", json_string(EV_TYPE_NAMES[type]));
    json_object_set_new(obj, "time", json_real((double)tv.tv_sec + tv.tv_usec / 1e6));
    char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (!text) { rc = -1; goto out; }
    size_t n = strlen(text);
    text[n] = '\0';
    /* one write per line keeps lines whole on a pipe (<= PIPE_BUF when small) */
    char *line = malloc(n + 2);
    if (!line) { free(text); rc = -1; goto out; }
    memcpy(line, text, n);
    line[n] = '\n';
    rc = write_all(s->fd, line, n + 1);
    free(line);
    free(text);
out:
    json_decref(obj);
    return rc;
}

lsq_status ev_parse(const char *line, size_t len, json_t **out, ev_type *type,
                    lsq_err *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, 0, &jerr);
    if (!obj)
        return lsq_err_set(err, LSQ_ERR_PARSE, "event", "event is not JSON: %s", jerr.text);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return lsq_err_set(err, LSQ_ERR_INVALID, "event", "event is not a JSON object");
    }
    const char *t = json_string_value(json_object_get(obj, "type"));
    if (!t) {
        json_decref(obj);
        return lsq_err_set(err, LSQ_ERR_INVALID, "event.type", "event has no type");
    }
    for (int i = 0; i < EV_COUNT; i++) {
        if (strcmp(t, EV_TYPE_NAMES[i]) == 0) {
            *type = (ev_type)i;
            *out = obj;
            return LSQ_OK;
        }
    }
    /* t lives in obj: the message is written before obj is released */
    lsq_status st = lsq_err_set(err, LSQ_ERR_INVALID, "event.type", "unknown event type '%s'", t);
    json_decref(obj);
    return st;
}
