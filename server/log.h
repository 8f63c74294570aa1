/* JSON-lines logs on stderr: one object per line with "time", "level", "msg"
 * and the fields given as a jansson pack format (json_pack) and its values. */
#ifndef LSQD_LOG_H
#define LSQD_LOG_H

/* fmt may be NULL (no fields) or a json_pack object format, e.g. "{s:s,s:i}". */
void log_json(const char *level, const char *msg, const char *fmt, ...);

#define log_info(msg, ...) log_json("info", msg, __VA_ARGS__)
#define log_warn(msg, ...) log_json("warn", msg, __VA_ARGS__)
#define log_error(msg, ...) log_json("error", msg, __VA_ARGS__)

#endif
