/* Webhooks against a receiver of the test's own (a socket thread on
 * loopback): retries with their attempts stored on the job, the signature
 * checked with the test's own HMAC-SHA256 (over the engine's SHA-256,
 * itself checked against RFC 4231), refusals at submit, and a delivery
 * pending at shutdown finished after a restart. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sha256.h"
#include "harness.h"

#define RX_MAX 16

typedef struct {
    int fd, port;
    int answers[RX_MAX], n_answers;  /* the status of each request; the last repeats */
    pthread_mutex_t lock;
    int n;                           /* requests received */
    char body[RX_MAX][4096], sig[RX_MAX][128], ts[RX_MAX][32], path[RX_MAX][64];
    int stop;
    pthread_t th;
} receiver;

static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = head; p && *p; p = strstr(p, "\r\n")) {
        if (p[0] == '\r') p += 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ') p++;
            size_t n = strcspn(p, "\r\n");
            snprintf(out, cap, "%.*s", (int)n, p);
            return;
        }
    }
}

static void *rx_main(void *arg)
{
    receiver *rx = arg;
    while (!__atomic_load_n(&rx->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd pf = {rx->fd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0) continue;
        int c = accept(rx->fd, NULL, NULL);
        if (c < 0) continue;
        char buf[16384];
        size_t len = 0;
        char *end = NULL;
        long want = -1;
        for (;;) {
            ssize_t r = read(c, buf + len, sizeof buf - 1 - len);
            if (r <= 0) break;
            len += (size_t)r;
            buf[len] = '\0';
            if (!end && (end = strstr(buf, "\r\n\r\n"))) {
                char cl[32];
                header_value(buf, "Content-Length", cl, sizeof cl);
                want = atol(cl);
            }
            if (end && (long)(len - (size_t)(end + 4 - buf)) >= want) break;
        }
        pthread_mutex_lock(&rx->lock);
        int i = rx->n < RX_MAX ? rx->n : RX_MAX - 1;
        if (end) {
            *end = '\0';
            header_value(buf, "X-Lsqd-Signature", rx->sig[i], sizeof rx->sig[i]);
            header_value(buf, "X-Lsqd-Timestamp", rx->ts[i], sizeof rx->ts[i]);
            sscanf(buf, "POST %63s", rx->path[i]);
            snprintf(rx->body[i], sizeof rx->body[i], "%s", end + 4);
        }
        int status = rx->answers[rx->n < rx->n_answers ? rx->n : rx->n_answers - 1];
        rx->n++;
        pthread_mutex_unlock(&rx->lock);
        char reply[128];
        int rl = snprintf(reply, sizeof reply,
                          "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status);
        ssize_t w = write(c, reply, (size_t)rl);
        (void)w;
        close(c);
    }
    return NULL;
}

static void rx_start(receiver *rx, const int *answers, int n)
{
    memset(rx, 0, sizeof *rx);
    pthread_mutex_init(&rx->lock, NULL);
    memcpy(rx->answers, answers, (size_t)n * sizeof *answers);
    rx->n_answers = n;
    rx->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(rx->fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(rx->fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(rx->fd, 16), 0);
    socklen_t sl = sizeof a;
    getsockname(rx->fd, (struct sockaddr *)&a, &sl);
    rx->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&rx->th, NULL, rx_main, rx), 0);
}

static int rx_count(receiver *rx)
{
    pthread_mutex_lock(&rx->lock);
    int n = rx->n;
    pthread_mutex_unlock(&rx->lock);
    return n;
}

static void rx_stop(receiver *rx)
{
    __atomic_store_n(&rx->stop, 1, __ATOMIC_RELEASE);
    pthread_join(rx->th, NULL);
    close(rx->fd);
}

/* HMAC-SHA256 (RFC 2104) over the engine's SHA-256: the test's own. */
static void hmac_hex(const void *key, size_t kl, const void *msg, size_t ml, char hex[65])
{
    unsigned char k[64] = {0}, pad[64], inner[32], out[32];
    sha256_ctx c;
    if (kl > 64) {
        sha256_init(&c);
        sha256_update(&c, key, kl);
        sha256_final(&c, k);
    } else {
        memcpy(k, key, kl);
    }
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    sha256_init(&c);
    sha256_update(&c, pad, 64);
    sha256_update(&c, msg, ml);
    sha256_final(&c, inner);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    sha256_init(&c);
    sha256_update(&c, pad, 64);
    sha256_update(&c, inner, 32);
    sha256_final(&c, out);
    sha256_hex(out, hex);
}

Test(webhook, test_hmac_matches_rfc4231)
{
    char hex[65];
    unsigned char k1[20], k6[131];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    hmac_hex(k1, sizeof k1, "Hi There", 8, hex);
    cr_expect_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
    cr_expect_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac_hex(k6, sizeof k6, m6, strlen(m6), hex);
    cr_expect_str_eq(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* A job that fails within seconds (its loss diverges). */
static char *failing_spec(const char *url)
{
    static char spec[1024];
    snprintf(spec, sizeof spec, "{\"name\":\"hooked\",\"model\":{\"arch\":\"mlp\"},"
             "\"dataset\":{\"train_limit\":2000,\"test_limit\":200},"
             "\"train\":{\"epochs\":1,\"lr\":10,\"weight_decay\":1},\"notify_url\":\"%s\"}", url);
    return spec;
}

static json_t *wait_notify(lsqd *d, long long id, const char *state, int attempts, double t)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id);
    double t0 = now_s();
    while (now_s() - t0 < t) {
        api_res *r = api(d, "GET", path, NULL, NULL, NULL);
        json_t *n = json_object_get(r->json, "notify");
        const char *got = json_string_value(json_object_get(n, "state"));
        if (got && !strcmp(got, state) &&
            (int)json_array_size(json_object_get(n, "attempts")) >= attempts) {
            json_incref(n);
            api_free(r);
            return n;
        }
        api_free(r);
        sleep_s(0.05);
    }
    return NULL;
}

static char *secret_of(lsqd *d)
{
    api_res *r = api(d, "GET", "/api/v1/webhook-secret", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200, "%s", r->body ? r->body : "");
    const char *s = json_string_value(json_object_get(r->json, "secret"));
    cr_assert(s && strlen(s) == 64, "secret %s", s ? s : "(none)");
    char *out = strdup(s);
    api_free(r);
    return out;
}

Test(webhook, retried_until_delivered_signed_and_recorded, .timeout = 180)
{
    receiver rx;
    const int answers[] = {500, 500, 200};
    rx_start(&rx, answers, 3);
    lsqd d;
    const char *const flags[] = {"--allow-private-urls", "--webhook-delay", "0.05", NULL};
    lsqd_start(&d, flags);
    char *secret = secret_of(&d);
    char *again = secret_of(&d);
    cr_expect_str_eq(secret, again, "the secret is made once");
    free(again);

    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", rx.port);
    long long id = submit_job(&d, failing_spec(url));
    json_t *job = wait_job(&d, id, NULL, 120);
    cr_assert(job);
    cr_expect_str_eq(json_string_value(json_object_get(job, "state")), "failed");
    json_decref(job);
    json_t *n = wait_notify(&d, id, "delivered", 3, 30);
    cr_assert(n, "no delivery recorded; see %s", d.log);
    cr_expect_str_eq(json_string_value(json_object_get(n, "url")), url);
    cr_expect(json_is_true(json_object_get(n, "delivered")));
    json_t *at = json_object_get(n, "attempts");
    cr_assert_eq(json_array_size(at), 3, "three attempts");
    for (int i = 0; i < 3; i++) {
        json_t *a = json_array_get(at, (size_t)i);
        cr_expect_eq(json_integer_value(json_object_get(a, "status")), answers[i], "attempt %d", i);
        cr_expect(json_is_null(json_object_get(a, "error")), "attempt %d", i);
        cr_expect(json_is_number(json_object_get(a, "at")), "attempt %d", i);
    }
    /* the backoff: the second gap is about twice the first (0.05 s, 0.1 s) */
    double t1 = json_number_value(json_object_get(json_array_get(at, 0), "at"));
    double t2 = json_number_value(json_object_get(json_array_get(at, 1), "at"));
    double t3 = json_number_value(json_object_get(json_array_get(at, 2), "at"));
    cr_expect(t2 - t1 >= 0.05 && t3 - t2 >= 0.1, "gaps %.3f %.3f", t2 - t1, t3 - t2);
    json_decref(n);

    cr_expect_eq(rx_count(&rx), 3, "the receiver saw %d requests", rx_count(&rx));
    for (int i = 0; i < 3 && i < rx.n; i++) {
        char msg[8192], want[65];
        int ml = snprintf(msg, sizeof msg, "%s.%s", rx.ts[i], rx.body[i]);
        hmac_hex(secret, strlen(secret), msg, (size_t)ml, want);
        cr_expect(!strncmp(rx.sig[i], "sha256=", 7) && !strcmp(rx.sig[i] + 7, want),
                  "request %d: signature %s, want sha256=%s", i, rx.sig[i], want);
        cr_expect_str_eq(rx.path[i], "/hook");
        json_t *b = json_loads(rx.body[i], 0, NULL);
        cr_assert(b, "request %d: body %s", i, rx.body[i]);
        cr_expect_eq(json_integer_value(json_object_get(b, "id")), id);
        cr_expect_str_eq(json_string_value(json_object_get(b, "name")), "hooked");
        cr_expect_str_eq(json_string_value(json_object_get(b, "state")), "failed");
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(b, "error"), "code")),
                         "numeric_error");
        cr_expect(json_is_number(json_object_get(b, "finished_at")));
        cr_expect(json_object_get(b, "test_acc") != NULL);
        json_decref(b);
    }
    /* a tampered body does not verify */
    char msg[8192], want[65];
    int ml = snprintf(msg, sizeof msg, "%s.%s ", rx.ts[0], rx.body[0]);
    hmac_hex(secret, strlen(secret), msg, (size_t)ml, want);
    cr_expect(strcmp(rx.sig[0] + 7, want));
    free(secret);
    lsqd_cleanup(&d);
    rx_stop(&rx);
}

Test(webhook, refused_urls_at_submit_store_nothing, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, NULL);
    const char *bad[] = {"file:///etc/passwd", "http://127.0.0.1:9/hook", "http://localhost:9/",
                         "http://10.1.2.3/", "http://[::1]:9/", "http://169.254.169.254/latest",
                         "gopher://example.com/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        api_res *r = api(&d, "POST", "/api/v1/jobs", failing_spec(bad[i]), NULL, NULL);
        cr_expect_eq(r->status, 422, "%s: %ld %s", bad[i], r->status, r->body ? r->body : "");
        cr_expect_str_eq(api_err_field(r), "notify_url", "%s", bad[i]);
        api_free(r);
    }
    long long count, max;
    db_jobs(&d, &count, &max);
    cr_expect_eq(count, 0);
    api_res *r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
    cr_expect_eq(json_array_size(json_object_get(r->json, "jobs")), 0);
    api_free(r);
    lsqd_cleanup(&d);
}

Test(webhook, pending_at_shutdown_is_delivered_after_restart, .timeout = 180)
{
    receiver rx;
    const int answers[] = {503, 200};
    rx_start(&rx, answers, 2);
    lsqd d;
    const char *const flags[] = {"--allow-private-urls", "--webhook-delay", "3", NULL};
    lsqd_start(&d, flags);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx.port);
    long long id = submit_job(&d, failing_spec(url));
    json_t *n = wait_notify(&d, id, "pending", 1, 120);
    cr_assert(n, "no first attempt; see %s", d.log);
    json_decref(n);
    cr_assert_eq(lsqd_stop(&d), 0);
    cr_expect_eq(rx_count(&rx), 1, "one attempt before the stop");
    lsqd_restart(&d, flags);
    n = wait_notify(&d, id, "delivered", 2, 30);
    cr_assert(n, "not delivered after the restart; see %s", d.log);
    cr_expect_eq(json_array_size(json_object_get(n, "attempts")), 2);
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(json_object_get(n, "attempts"), 0),
                                                    "status")), 503);
    json_decref(n);
    cr_expect_eq(rx_count(&rx), 2);
    lsqd_cleanup(&d);
    rx_stop(&rx);
}
