/* Server-Sent Events of a job. The stream reads events from the store after
 * the last sequence number it sent (Last-Event-ID or ?after= on reconnect),
 * so a reconnecting client gets exactly what it missed. With nothing to send
 * it parks in the hub with its connection suspended: no thread waits. When
 * the job has ended and every event is sent, a final "end" event closes it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub.h"
#include "sse.h"
#include "store.h"

#define SSE_BATCH 256

typedef struct {
    struct MHD_Connection *conn;
    int64_t job_id;
    int64_t last_seq;
    char *buf;
    size_t len, off, cap;
    double last_write;
    double heartbeat_s;
    int ended;
    hub_waiter w;
} sse_stream;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int buf_add(sse_stream *s, const char *a, const char *b, const char *c, const char *d)
{
    const char *parts[] = {a, b, c, d};
    size_t need = s->len + 1;
    for (int i = 0; i < 4; i++) need += parts[i] ? strlen(parts[i]) : 0;
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < need) cap *= 2;
        char *p = realloc(s->buf, cap);
        if (!p) return -1;
        s->buf = p;
        s->cap = cap;
    }
    for (int i = 0; i < 4; i++) {
        if (!parts[i]) continue;
        size_t n = strlen(parts[i]);
        memcpy(s->buf + s->len, parts[i], n);
        s->len += n;
    }
    s->buf[s->len] = '\0';
    return 0;
}

/* Appends the stored events after last_seq; returns how many, -1 on error. */
static int add_events(sse_stream *s)
{
    json_t *evs = store_events_after(s->job_id, s->last_seq, SSE_BATCH);
    if (!evs) return -1;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e) {
        char head[128];
        int64_t seq = json_integer_value(json_object_get(e, "seq"));
        snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", (long long)seq,
                 json_string_value(json_object_get(e, "type")));
        if (buf_add(s, head, json_string_value(json_object_get(e, "json")), "\n\n", NULL)) {
            json_decref(evs);
            return -1;
        }
        s->last_seq = seq;
    }
    int n = (int)json_array_size(evs);
    json_decref(evs);
    return n;
}

static void park_fn(void *ctx)
{
    sse_stream *s = ctx;
    MHD_suspend_connection(s->conn);
}

static void wake_fn(void *ctx)
{
    sse_stream *s = ctx;
    MHD_resume_connection(s->conn);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    sse_stream *s = cls;
    for (;;) {
        if (s->off < s->len) {
            size_t n = s->len - s->off < max ? s->len - s->off : max;
            memcpy(out, s->buf + s->off, n);
            s->off += n;
            s->last_write = mono_s();
            return (ssize_t)n;
        }
        s->off = s->len = 0;
        if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        uint64_t gen = hub_generation();
        int n = add_events(s);
        if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (n > 0) continue;
        job_state state = JOB_QUEUED;
        int fin = store_job_finished(s->job_id, &state);
        if (fin != 0) {
            /* events stored just before the job ended go out first */
            if (add_events(s) < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
            char data[160];
            snprintf(data, sizeof data, "{\"job_id\":%lld,\"state\":\"%s\",\"last_seq\":%lld}",
                     (long long)s->job_id, fin > 0 ? JOB_STATE_NAMES[state] : "deleted",
                     (long long)s->last_seq);
            if (buf_add(s, "event: end\ndata: ", data, "\n\n", NULL)) 
                return MHD_CONTENT_READER_END_WITH_ERROR;
            s->ended = 1;
            continue;
        }
        if (mono_s() - s->last_write >= s->heartbeat_s * 0.9) {
            if (buf_add(s, ": ping\n\n", NULL, NULL, NULL)) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        int rc = hub_park(&s->w, gen, park_fn);
        if (rc == 1) return 0;
        if (rc < 0) return MHD_CONTENT_READER_END_OF_STREAM; /* lsqd is stopping */
    }
}

static void sse_free(void *cls)
{
    sse_stream *s = cls;
    free(s->buf);
    free(s);
}

enum MHD_Result sse_reply(req *r, int64_t job_id, int64_t after)
{
    sse_stream *s = calloc(1, sizeof *s);
    if (!s) return MHD_NO;
    s->conn = r->conn;
    s->job_id = job_id;
    s->last_seq = after;
    s->heartbeat_s = r->cfg->heartbeat_s;
    s->last_write = mono_s();
    s->w.job_id = job_id;
    s->w.wake = wake_fn;
    s->w.ctx = s;
    /* a first comment makes the stream visible to the client at once */
    if (buf_add(s, ": lsqd events\nretry: 2000\n\n", NULL, NULL, NULL)) { sse_free(s); return MHD_NO; }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, s, sse_free);
    if (!resp) { sse_free(s); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return http_reply_response(r, 200, resp);
}
