/* lsqd's HTTP layer: the route table, the handlers and their JSON bodies,
 * behind lsqd's own libmicrohttpd daemon (http_start on 127.0.0.1, an
 * ephemeral port) and a real store (a SQLite file in a temporary folder made
 * once per process, under /dev/shm when there is one). Each input is one
 * request, written as text:
 *
 *     METHOD PATH
 *     Header: value        (Content-Type, Authorization, Host, Last-Event-ID)
 *
 *     BODY
 *
 * sent over a fresh loopback connection as HTTP/1.1 with Connection: close
 * and the body's Content-Length; "@admin" and "@user" in a header value
 * stand for the two tokens the setup stores (tokens are on). Bytes of the
 * path that cannot be in a request line are sent percent-encoded.
 *
 * Nothing starts a process: the scheduler runs with no worker slots, the
 * registrar and the webhook sender are not started, and fork is wrapped
 * (-Wl,--wrap=fork) to fail, as it would under a process limit.
 *
 * After each reply: a status line with 100..599; every application/json
 * body parses; every error (4xx/5xx) is {"error":{"code","message","field"}}
 * with code and message strings, field a string or null, and no message
 * naming the server's data folder. A connection closed with no reply, or no
 * reply within 8 s, is a failure too. */
#include "fuzz.h"

#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "auth.h"
#include "config.h"
#include "core/sha256.h"
#include "http.h"
#include "hub.h"
#include "scheduler.h"
#include "store.h"

#define REQ_MAX (64 * 1024)
#define REPLY_WAIT_MS 8000
#define TOKEN_ADMIN "lsqd_" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define TOKEN_USER  "lsqd_" "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

pid_t __wrap_fork(void);
pid_t __wrap_fork(void)
{
    errno = EAGAIN;
    return -1;
}

static lsqd_config g_cfg;
static int g_port;
static char g_dir[PATH_MAX];

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz/http: %s%s%.300s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void cleanup(void)
{
    if (g_dir[0]) nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void token_store(const char *user, int admin, const char *token)
{
    sha256_ctx c;
    unsigned char d[32];
    char hex[65];
    sha256_init(&c);
    sha256_update(&c, token, strlen(token));
    sha256_final(&c, d);
    sha256_hex(d, hex);
    int64_t id;
    int is_admin;
    if (store_token_insert(user, admin, hex, &id, &is_admin) != STORE_OK)
        fail("cannot store a token", user);
}

/* lsqd's start as main() does it, less the threads that reach out (the
 * registrar's fetches, the webhook sender) and with no worker slots. */
static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base) base = "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/lsqd-fuzz-http-XXXXXX", base);
    if (!mkdtemp(g_dir)) fail("mkdtemp", strerror(errno));
    atexit(cleanup);
    char *argv[] = {"lsqd", "--listen", "127.0.0.1:0", "--data", g_dir, "--auth", "on",
                    "--http-threads", "1", "--heartbeat", "1", "--max-upload", "65536",
                    "--lsq", "/nonexistent/lsq", NULL};
    if (config_load(&g_cfg, (int)(sizeof argv / sizeof *argv) - 1, argv)) fail("config", NULL);
    g_cfg.workers = 0; /* the scheduler claims nothing: queued jobs stay queued */
    char jobs[PATH_MAX + 8], db[PATH_MAX + 16];
    snprintf(jobs, sizeof jobs, "%s/jobs", g_dir);
    snprintf(db, sizeof db, "%s/lsqd.db", g_dir);
    if (mkdir(jobs, 0755) || store_open(db)) fail("cannot open the store", db);
    token_store("root", 1, TOKEN_ADMIN);
    token_store("alice", 0, TOKEN_USER);
    if (auth_init(&g_cfg) != 1) fail("auth_init", NULL);
    if (hub_init(g_cfg.heartbeat_s) || sched_start(&g_cfg)) fail("cannot start threads", NULL);
    g_port = http_start(&g_cfg);
    if (g_port <= 0) fail("http_start", NULL);
}

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = realloc(b->p, b->cap);
        if (!b->p) fail("out of memory", NULL);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* A header value with "@admin"/"@user" replaced; control bytes dropped. */
static void put_value(buf *b, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (n - i >= 6 && !memcmp(v + i, "@admin", 6)) {
            puts_(b, TOKEN_ADMIN);
            i += 5;
        } else if (n - i >= 5 && !memcmp(v + i, "@user", 5)) {
            puts_(b, TOKEN_USER);
            i += 4;
        } else if ((unsigned char)v[i] >= 0x20 && v[i] != 0x7f) {
            put(b, v + i, 1);
        }
    }
}

static const char *const HEADERS[] = {"Content-Type", "Authorization", "Host", "Last-Event-ID"};

/* Turns the input into an HTTP/1.1 request; *is_head for HEAD. */
static void request_build(buf *out, const char *in, size_t size, int *is_head)
{
    const char *end = in + size, *nl = memchr(in, '\n', size);
    const char *line_end = nl ? nl : end;
    const char *sp = memchr(in, ' ', (size_t)(line_end - in));
    const char *m_end = sp ? sp : line_end;
    size_t mlen = 0;
    for (const char *p = in; p < m_end && mlen < 16; p++, mlen++)
        if (!(*p >= 'A' && *p <= 'Z')) break;
    if (mlen == 0) puts_(out, "GET");
    else put(out, in, mlen);
    *is_head = mlen == 4 && !memcmp(in, "HEAD", 4);
    puts_(out, " ");
    const char *path = sp ? sp + 1 : line_end;
    if (path >= line_end || *path != '/') puts_(out, "/");
    static const char HEX[] = "0123456789ABCDEF";
    for (const char *p = path; p < line_end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f) {
            char e[3] = {'%', HEX[c >> 4], HEX[c & 15]};
            put(out, e, 3);
        } else {
            put(out, p, 1);
        }
    }
    puts_(out, " HTTP/1.1\r\nConnection: close\r\n");
    int host = 0;
    const char *p = nl ? nl + 1 : end;
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *le = e ? e : end;
        if (le == p || (le == p + 1 && *p == '\r')) {
            p = e ? e + 1 : end;
            break;
        }
        const char *colon = memchr(p, ':', (size_t)(le - p));
        for (size_t k = 0; colon && k < sizeof HEADERS / sizeof *HEADERS; k++) {
            size_t hl = strlen(HEADERS[k]);
            if ((size_t)(colon - p) != hl || strncasecmp(p, HEADERS[k], hl)) continue;
            host |= k == 2;
            puts_(out, HEADERS[k]);
            puts_(out, ": ");
            const char *v = colon + 1;
            while (v < le && *v == ' ') v++;
            put_value(out, v, (size_t)(le - v));
            puts_(out, "\r\n");
        }
        p = e ? e + 1 : end;
    }
    char line[64];
    if (!host) {
        snprintf(line, sizeof line, "Host: 127.0.0.1:%d\r\n", g_port);
        puts_(out, line);
    }
    snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", (size_t)(end - p));
    puts_(out, line);
    put(out, p, (size_t)(end - p));
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *header_find(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
        if (!strncasecmp(p + 2, name, n) && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ') v++;
            return v;
        }
    return NULL;
}

/* Sends the request and reads the reply into *in: the whole reply, or the
 * head only for an event stream (which does not end by itself). */
static void exchange(const buf *reqb, buf *in, size_t *head_len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        /* libFuzzer's -timeout alarm can interrupt it: the connection then
         * completes on its own */
        if (errno != EINTR) fail("connect", strerror(errno));
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        while (poll(&pfd, 1, REPLY_WAIT_MS) < 0 && errno == EINTR) {}
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err)
            fail("connect", strerror(err ? err : errno));
    }
    /* the server may reply (413, 415, 404) and close before it reads it all */
    for (size_t off = 0; off < reqb->len;) {
        ssize_t w = send(fd, reqb->p + off, reqb->len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    double deadline = mono_ms() + REPLY_WAIT_MS;
    long want = -1; /* the whole reply's length once the head says it */
    *head_len = 0;
    for (;;) {
        if (*head_len == 0) {
            char *he = in->p ? strstr(in->p, "\r\n\r\n") : NULL;
            if (he) {
                *head_len = (size_t)(he + 4 - in->p);
                const char *ct = header_find(in->p, "Content-Type");
                const char *cl = header_find(in->p, "Content-Length");
                if (ct && !strncasecmp(ct, "text/event-stream", 17)) break;
                if (cl) want = (long)*head_len + strtol(cl, NULL, 10);
            }
        }
        if (want >= 0 && (long)in->len >= want) break;
        int left = (int)(deadline - mono_ms());
        if (left <= 0) fail("no complete reply within 8 s", in->p);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0) continue;
        char chunk[16384];
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        put(in, chunk, (size_t)r);
    }
    close(fd);
}

/* req: the request sent, which may itself name the folder (then quoting it
 * back is no leak) */
static void check_error_body(const char *body, size_t len, const buf *reqb)
{
    json_error_t je;
    json_t *doc = json_loadb(body, len, 0, &je);
    if (!doc) fail("an error body that is not JSON", body);
    json_t *e = json_object_get(doc, "error");
    json_t *code = json_object_get(e, "code"), *msg = json_object_get(e, "message");
    json_t *field = json_object_get(e, "field");
    if (!json_is_string(code) || !json_is_string(msg))
        fail("an error without error.code and error.message strings", body);
    if (field && !json_is_string(field) && !json_is_null(field))
        fail("an error whose field is neither a string nor null", body);
    const char *base = strrchr(g_dir, '/') + 1;
    if (strstr(json_string_value(msg), g_dir) && !memmem(reqb->p, reqb->len, base, strlen(base)))
        fail("an error message that names the data folder", json_string_value(msg));
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > REQ_MAX) return -1;
    if (!g_port) setup();
    buf reqb = {0}, in = {0};
    int is_head;
    request_build(&reqb, (const char *)data, size, &is_head);
    size_t head_len;
    exchange(&reqb, &in, &head_len);
    if (in.len < 12 || strncmp(in.p, "HTTP/1.", 7))
        fail("the connection closed with no reply", reqb.p);
    int status = atoi(in.p + 9);
    if (status < 100 || status > 599) fail("a status outside 100..599", in.p);
    if (head_len == 0) fail("a reply with no end of its head", in.p);
    const char *ct = header_find(in.p, "Content-Type");
    const char *body = in.p + head_len;
    size_t blen = in.len - head_len;
    int json = ct && !strncasecmp(ct, "application/json", 16);
    if (!is_head && json && status < 400) {
        json_error_t je;
        json_t *doc = json_loadb(body, blen, 0, &je);
        if (!doc) fail("a JSON body that does not parse", je.text);
        json_decref(doc);
    }
    /* errors are lsqd's JSON; libmicrohttpd's own (a request it cannot
     * parse) are HTML and not lsqd's to shape */
    if (!is_head && status >= 400 && !(blen && body[0] == '<')) check_error_body(body, blen, &reqb);
    free(reqb.p);
    free(in.p);
    return 0;
}
