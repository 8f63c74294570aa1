/* The HTTP events forwarder of `lsq train` (evpost.h): one thread, a pipe
 * read with poll, libcurl posts with a backoff from 0.5 to 5 s. */
#include "evpost.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 256          /* events per POST (lsqd takes up to 1024) */
#define PENDING_MAX 100000     /* past this the HTTP path is given up: the file has them */
#define LINE_MAX_BYTES (1 << 20)

struct evpost {
    int rfd, wfd, file_fd;
    char url[2048];
    char auth[400];
    pthread_t thread;
    pthread_mutex_t lock;
    int closing;               /* the writer closed its end */
    double give_up_at;         /* after closing: stop trying then */
    /* lines not yet acknowledged; pending[0] has number first_seq */
    char **pending;
    size_t n, cap;
    long long first_seq;
    int disabled;              /* lsqd refused for good (401, 409): the file has them */
    char *part;                /* a partial line read from the pipe */
    size_t part_len;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t on_reply(char *p, size_t size, size_t n, void *ud)
{
    char **buf = ud;
    size_t have = *buf ? strlen(*buf) : 0, add = size * n;
    if (have + add > 65536) return 0;
    char *b = realloc(*buf, have + add + 1);
    if (!b) return 0;
    memcpy(b + have, p, add);
    b[have + add] = '\0';
    *buf = b;
    return add;
}

/* Appends a complete line to the file and to the pending list. */
static void add_line(evpost *p, const char *line, size_t len)
{
    if (len == 0) return; /* not an event, not numbered (lsqd skips them too) */
    char *copy = malloc(len + 2);
    if (!copy) { p->disabled = 1; return; }
    memcpy(copy, line, len);
    copy[len] = '\n';
    copy[len + 1] = '\0';
    /* the file first: it is the record lsqd falls back on */
    size_t off = 0;
    while (off < len + 1) {
        ssize_t w = write(p->file_fd, copy + off, len + 1 - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    copy[len] = '\0';
    if (p->disabled || p->n >= PENDING_MAX) {
        if (!p->disabled) fprintf(stderr, "lsq train: %d events not acknowledged by lsqd; "
                                          "they are in the events file only\n", PENDING_MAX);
        p->disabled = 1;
        free(copy);
        p->first_seq += 1 + (long long)p->n;
        for (size_t i = 0; i < p->n; i++) free(p->pending[i]);
        p->n = 0;
        return;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **np = realloc(p->pending, cap * sizeof *np);
        if (!np) { free(copy); p->disabled = 1; return; }
        p->pending = np;
        p->cap = cap;
    }
    p->pending[p->n++] = copy;
}

static void read_pipe(evpost *p, int *eof)
{
    char buf[65536];
    ssize_t n = read(p->rfd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) { *eof = 1; return; }
    size_t start = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        if (buf[i] != '\n') continue;
        if (p->part_len) {
            size_t add = i - start;
            char *np = p->part_len + add <= LINE_MAX_BYTES ? realloc(p->part, p->part_len + add) : NULL;
            if (np) {
                memcpy(np + p->part_len, buf + start, add);
                p->part = np;
                add_line(p, np, p->part_len + add);
            }
            free(np ? NULL : p->part);
            free(np);
            p->part = NULL;
            p->part_len = 0;
        } else {
            add_line(p, buf + start, i - start);
        }
        start = i + 1;
    }
    if (start < (size_t)n) {
        size_t add = (size_t)n - start;
        char *np = realloc(p->part, p->part_len + add);
        if (np) {
            memcpy(np + p->part_len, buf + start, add);
            p->part = np;
            p->part_len += add;
        }
    }
}

/* One POST of up to BATCH_MAX pending events. 1: lsqd answered and the
 * acknowledged ones are dropped; 0: try again later; -1: refused for good. */
static int post_batch(evpost *p, CURL *c)
{
    size_t k = p->n < BATCH_MAX ? p->n : BATCH_MAX;
    size_t len = 64;
    for (size_t i = 0; i < k; i++) len += strlen(p->pending[i]) + 1;
    char *body = malloc(len);
    if (!body) return 0;
    size_t o = (size_t)snprintf(body, len, "{\"seq\":%lld,\"events\":[", p->first_seq);
    for (size_t i = 0; i < k; i++) {
        size_t l = strlen(p->pending[i]);
        if (i) body[o++] = ',';
        memcpy(body + o, p->pending[i], l);
        o += l;
    }
    body[o++] = ']';
    body[o++] = '}';
    body[o] = '\0';
    char *reply = NULL;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, p->auth);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)o);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    free(body);
    int r = 0;
    if (rc == CURLE_OK && status == 200) {
        json_t *j = reply ? json_loads(reply, 0, NULL) : NULL;
        long long acked = json_integer_value(json_object_get(j, "acked"));
        json_decref(j);
        /* drop what lsqd has; it may have more (read from the file) */
        size_t drop = acked >= p->first_seq ? (size_t)(acked - p->first_seq + 1) : 0;
        if (drop > p->n) drop = p->n;
        for (size_t i = 0; i < drop; i++) free(p->pending[i]);
        memmove(p->pending, p->pending + drop, (p->n - drop) * sizeof *p->pending);
        p->n -= drop;
        p->first_seq += (long long)drop;
        r = 1;
    } else if (rc == CURLE_OK && (status == 401 || status == 404 || status == 409 ||
                                  status == 422)) {
        fprintf(stderr, "lsq train: lsqd refused the events (HTTP %ld: %.300s); they are in "
                        "the events file only\n", status, reply ? reply : "");
        r = -1;
    }
    free(reply);
    return r;
}

static void *evpost_main(void *arg)
{
    evpost *p = arg;
    /* the training thread takes SIGTERM */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    CURL *c = curl_easy_init();
    int eof = 0;
    double next_try = 0, backoff = 0.5;
    for (;;) {
        if (!eof) {
            struct pollfd pf = {p->rfd, POLLIN, 0};
            if (poll(&pf, 1, 200) > 0) read_pipe(p, &eof);
        }
        double t = mono_s();
        if (p->n && !p->disabled && c && t >= next_try) {
            int r = post_batch(p, c);
            if (r < 0) {
                p->disabled = 1;
            } else if (r == 0) {
                next_try = t + backoff;
                backoff = backoff * 2 > 5 ? 5 : backoff * 2;
            } else {
                backoff = 0.5;
                next_try = 0;
            }
        }
        if (eof) {
            pthread_mutex_lock(&p->lock);
            int closing = p->closing;
            double give_up = p->give_up_at;
            pthread_mutex_unlock(&p->lock);
            if (!p->n || p->disabled || !c) break;
            if (closing && mono_s() >= give_up) break;
            if (p->n && next_try > mono_s()) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
    }
    if (c) curl_easy_cleanup(c);
    return NULL;
}

evpost *evpost_start(const char *file, const char *url, const char *token_file, int *write_fd)
{
    evpost *p = calloc(1, sizeof *p);
    char token[300] = "";
    int fds[2] = {-1, -1};
    if (!p) return NULL;
    p->file_fd = -1;
    FILE *tf = fopen(token_file, "r");
    if (!tf || !fgets(token, sizeof token, tf)) {
        fprintf(stderr, "lsq train: cannot read the events token from %s: %s\n", token_file,
                strerror(errno));
        if (tf) fclose(tf);
        goto fail;
    }
    fclose(tf);
    token[strcspn(token, "\r\n")] = '\0';
    snprintf(p->auth, sizeof p->auth, "Authorization: Bearer %s", token);
    if (strlen(url) >= sizeof p->url) {
        fprintf(stderr, "lsq train: --events-url is too long\n");
        goto fail;
    }
    snprintf(p->url, sizeof p->url, "%s", url);
    /* number on from the lines the file has (a resumed job appends) */
    long long lines = 0;
    FILE *ef = fopen(file, "r");
    if (ef) {
        int ch, prev = '\n';
        while ((ch = getc(ef)) != EOF) {
            if (ch == '\n' && prev != '\n') lines++;
            prev = ch;
        }
        fclose(ef);
    }
    p->first_seq = lines + 1;
    p->file_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (p->file_fd < 0) {
        fprintf(stderr, "lsq train: cannot open %s: %s\n", file, strerror(errno));
        goto fail;
    }
    if (pipe2(fds, O_CLOEXEC)) goto fail;
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before the thread that uses it */
    p->rfd = fds[0];
    p->wfd = fds[1];
    pthread_mutex_init(&p->lock, NULL);
    if (pthread_create(&p->thread, NULL, evpost_main, p)) {
        pthread_mutex_destroy(&p->lock);
        goto fail;
    }
    *write_fd = p->wfd;
    return p;
fail:
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    if (p->file_fd >= 0) close(p->file_fd);
    free(p);
    return NULL;
}

long evpost_finish(evpost *p, double give_up_s)
{
    if (!p) return 0;
    pthread_mutex_lock(&p->lock);
    p->closing = 1;
    p->give_up_at = mono_s() + give_up_s;
    pthread_mutex_unlock(&p->lock);
    close(p->wfd); /* the thread reads to EOF */
    pthread_join(p->thread, NULL);
    long left = p->disabled ? 0 : (long)p->n;
    for (size_t i = 0; i < p->n; i++) free(p->pending[i]);
    free(p->pending);
    free(p->part);
    close(p->rfd);
    close(p->file_fd);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return left;
}
