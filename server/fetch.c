/* URL fetches for dataset registration (fetch.h), on libcurl's easy
 * interface: one transfer at a time in the registrar's thread. */
#include "fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/sha256.h"

#define LOW_SPEED_BYTES 1024
#define CONNECT_TIMEOUT_S 30.0

static int v4_private(uint32_t a) /* host byte order */
{
    static const struct { uint32_t net, mask; } NETS[] = {
        {0x00000000, 0xff000000}, /* 0.0.0.0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 shared (carrier NAT) */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local (cloud metadata) */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 protocol assignments */
        {0xc0000200, 0xffffff00}, /* 192.0.2/24 documentation */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xc6336400, 0xffffff00}, /* 198.51.100/24 documentation */
        {0xcb007100, 0xffffff00}, /* 203.0.113/24 documentation */
        {0xe0000000, 0xf0000000}, /* 224/4 multicast */
        {0xf0000000, 0xf0000000}, /* 240/4 reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof NETS / sizeof *NETS; i++)
        if ((a & NETS[i].mask) == NETS[i].net) return 1;
    return 0;
}

static uint32_t v4_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int fetch_addr_private(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_private(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6) return 1;
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t ZERO[12] = {0};
    static const uint8_t MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t NAT64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!memcmp(b, MAPPED, 12) || !memcmp(b, NAT64, 12)) return v4_private(v4_at(b + 12));
    if (!memcmp(b, ZERO, 12)) return 1;                       /* ::, ::1, IPv4-compatible */
    if (b[0] == 0x20 && b[1] == 0x02) return v4_private(v4_at(b + 2)); /* 6to4 */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return 1; /* doc */
    if ((b[0] & 0xfe) == 0xfc) return 1;                      /* fc00::/7 unique local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return 1;      /* fe80::/10 link-local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return 1;      /* fec0::/10 site-local */
    if (b[0] == 0xff) return 1;                               /* multicast */
    return 0;
}

/* The host of a URL as a socket address when it is a literal one. */
static int literal_addr(const char *host, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    char h[256];
    size_t n = strlen(host);
    if (n >= sizeof h) return 0;
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
        char *pct = strchr(h, '%'); /* a zone id */
        if (pct) *pct = '\0';
    } else {
        memcpy(h, host, n + 1);
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        return 1;
    }
    return 0;
}

int fetch_check_url(const char *url, int allow_private, char *why, size_t cap)
{
    if (strlen(url) > FETCH_URL_MAX) {
        snprintf(why, cap, "the URL is longer than %d bytes", FETCH_URL_MAX);
        return -1;
    }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = -1;
    if (!u) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    /* CURLU_NON_SUPPORT_SCHEME: parse "file:..." too, to refuse it by name */
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        snprintf(why, cap, "url is not a URL (http:// or https://...)");
        goto out;
    }
    if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")) {
        snprintf(why, cap, "only http and https URLs are fetched, not %.32s", scheme);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
        snprintf(why, cap, "the URL has no host");
        goto out;
    }
    struct sockaddr_storage ss;
    if (!allow_private && literal_addr(host, &ss) && fetch_addr_private((struct sockaddr *)&ss)) {
        snprintf(why, cap, "the URL's address %.64s is a loopback, private or link-local "
                 "address; lsqd fetches only from public addresses (an operator allows others "
                 "with --allow-private-urls)", host);
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

void fetch_url_basename(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    CURLU *u = curl_url();
    char *path = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK) {
        const char *slash = strrchr(path, '/');
        snprintf(out, cap, "%s", slash ? slash + 1 : path);
    }
    curl_free(path);
    curl_url_cleanup(u);
}

typedef struct {
    int fd;
    sha256_ctx sha;
    unsigned long long bytes, max;
    int too_large;
    int write_errno;
    int allow_private;
    char refused[INET6_ADDRSTRLEN];
    const int *stop;
    void (*progress)(void *ctx, long long done, long long total);
    void *progress_ctx;
} fetch_ctx;

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    fetch_ctx *c = ud;
    size_t len = size * n;
    if (c->bytes + len > c->max) {
        c->too_large = 1;
        return 0; /* CURLE_WRITE_ERROR: the transfer stops here */
    }
    sha256_update(&c->sha, p, len);
    c->bytes += len;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(c->fd, p + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            c->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)ultotal;
    (void)ulnow;
    fetch_ctx *c = ud;
    if (c->progress && dlnow > 0)
        c->progress(c->progress_ctx, (long long)dlnow, dltotal > 0 ? (long long)dltotal : -1);
    return c->stop && __atomic_load_n(c->stop, __ATOMIC_ACQUIRE) ? 1 : 0;
}

/* Every connection curl makes goes through here: the address policy. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    fetch_ctx *c = ud;
    if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
    if (!c->allow_private && fetch_addr_private(&a->addr)) {
        const void *raw = a->family == AF_INET
            ? (const void *)&((const struct sockaddr_in *)&a->addr)->sin_addr
            : (const void *)&((const struct sockaddr_in6 *)&a->addr)->sin6_addr;
        if (!inet_ntop(a->family, raw, c->refused, sizeof c->refused))
            snprintf(c->refused, sizeof c->refused, "a non-public address");
        return CURL_SOCKET_BAD;
    }
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

static void set_err(fetch_err *e, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(fetch_err *e, const char *code, const char *fmt, ...)
{
    snprintf(e->code, sizeof e->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

int fetch_to_file(const char *url, const char *path, const fetch_opts *o, long long *bytes,
                  char *sha256, fetch_err *err)
{
    fetch_ctx c;
    memset(&c, 0, sizeof c);
    c.max = o->max_bytes;
    c.allow_private = o->allow_private;
    c.stop = o->stop;
    c.progress = o->progress;
    c.progress_ctx = o->progress_ctx;
    sha256_init(&c.sha);
    c.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (c.fd < 0) {
        set_err(err, "internal", "cannot store the file: %s", strerror(errno));
        return -1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        close(c.fd);
        unlink(path);
        set_err(err, "internal", "cannot start a transfer");
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    long timeout_ms = (long)(o->timeout_s * 1000);
    double connect_s = o->timeout_s < CONNECT_TIMEOUT_S ? o->timeout_s : CONNECT_TIMEOUT_S;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)FETCH_MAX_REDIRECTS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_s * 1000));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)LOW_SPEED_BYTES);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)(o->low_speed_s + 0.5));
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_bytes);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* no proxy from the environment */
    curl_easy_setopt(h, CURLOPT_USERAGENT, "lsqd");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &c);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    int fail = 1;
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        set_err(err, "stopped", "lsqd stopped during the fetch");
    } else if (c.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        set_err(err, "too_large", "the file at the URL is larger than %llu bytes (--max-upload)",
                o->max_bytes);
    } else if (c.write_errno) {
        set_err(err, "internal", "cannot store the file: %s", strerror(c.write_errno));
    } else if (c.refused[0]) {
        set_err(err, "fetch_refused",
                "the URL's host is at %s, a loopback, private or link-local address; lsqd "
                "fetches only from public addresses (an operator allows others with "
                "--allow-private-urls)", c.refused);
    } else if (rc == CURLE_UNSUPPORTED_PROTOCOL) {
        set_err(err, "fetch_refused",
                "the URL redirects to one that is not http or https; refused (%s)", detail);
    } else if (rc == CURLE_TOO_MANY_REDIRECTS) {
        set_err(err, "fetch_failed", "the URL redirects more than %d times",
                FETCH_MAX_REDIRECTS);
    } else if (rc == CURLE_HTTP_RETURNED_ERROR) {
        set_err(err, "fetch_failed", "the server answered HTTP %ld", status);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        set_err(err, "timeout",
                "fetching the URL timed out (%s; --fetch-timeout %g s, --fetch-low-speed %g s)",
                detail, o->timeout_s, o->low_speed_s);
    } else if (rc != CURLE_OK) {
        set_err(err, "fetch_failed", "cannot fetch the URL: %s", detail);
    } else if (c.bytes == 0) {
        set_err(err, "fetch_failed", "the URL gave an empty body");
    } else {
        fail = 0;
    }
    int e = 0;
    if (!fail && fsync(c.fd) != 0) e = errno;
    if (close(c.fd) != 0 && !e) e = errno;
    if (!fail && e) {
        set_err(err, "internal", "cannot store the file: %s", strerror(e));
        fail = 1;
    }
    if (fail) {
        unlink(path);
        return -1;
    }
    unsigned char d[32];
    sha256_final(&c.sha, d);
    sha256_hex(d, sha256);
    *bytes = (long long)c.bytes;
    return 0;
}
