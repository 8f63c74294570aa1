/* JSON-lines logging: one write(2) per line so lines from threads never mix. */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

void log_json(const char *level, const char *msg, const char *fmt, ...)
{
    json_t *obj = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        json_error_t jerr;
        obj = json_vpack_ex(&jerr, 0, fmt, ap);
        va_end(ap);
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        obj = json_object();
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_object_set_new(obj, "time", json_real((double)tv.tv_sec + tv.tv_usec / 1e6));
    json_object_set_new(obj, "level", json_string(level));
    json_object_set_new(obj, "msg", json_string(msg));
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!text) return;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) { free(text); return; }
    line[n] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n + 1);
    (void)w;
    free(line);
}
