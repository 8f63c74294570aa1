/* Webhook deliveries (webhook.h): the thread, the signed POST with libcurl,
 * the address checks and the per-owner secrets. */
#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <arpa/inet.h>

#include "fetch.h"
#include "log.h"
#include "store.h"

#define WEBHOOK_IDLE_S 2.0       /* the longest wait between looks at the store */
#define WEBHOOK_MAX_REPLY 65536  /* what is read of a receiver's answer */

static const lsqd_config *g_cfg;
static pthread_t g_thread;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_started, g_stopping, g_kicked;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void webhook_hmac_hex(const char *key, size_t key_len, const void *msg, size_t len,
                      char hex[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    HMAC(EVP_sha256(), key, (int)key_len, msg, len, mac, &n);
    for (unsigned int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    hex[64] = '\0';
}

int webhook_secret(int64_t owner_id, char hex[65])
{
    if (store_webhook_secret_get(owner_id, hex, 65) == STORE_OK) return 0;
    unsigned char b[32];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            log_error("getrandom failed", "{s:s}", "error", strerror(errno));
            return -1;
        }
        got += (size_t)n;
    }
    char fresh[65];
    for (size_t i = 0; i < sizeof b; i++) snprintf(fresh + 2 * i, 3, "%02x", b[i]);
    /* two first uses at once: one insert wins, both read it back */
    if (store_webhook_secret_add(owner_id, fresh) != STORE_OK) return -1;
    return store_webhook_secret_get(owner_id, hex, 65) == STORE_OK ? 0 : -1;
}

/* The URL's host (without IPv6 brackets) and port, the addresses it
 * resolves to (checked: public unless allow_private) as a CURLOPT_RESOLVE
 * entry "HOST:PORT:A,B" in pin[cap]. 0, or -1 with why. */
static int resolve_checked(const char *url, int allow_private, char *pin, size_t pin_cap,
                           char *why, size_t cap)
{
    if (fetch_check_url(url, allow_private, why, cap)) return -1;
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;
    struct addrinfo *res = NULL;
    int rc = -1;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        snprintf(why, cap, "notify_url is not a URL that lsqd can POST to");
        goto out;
    }
    char name[256];
    size_t hl = strlen(host);
    if (hl >= sizeof name) {
        snprintf(why, cap, "the URL's host name is too long");
        goto out;
    }
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']')
        snprintf(name, sizeof name, "%.*s", (int)(hl - 2), host + 1);
    else
        snprintf(name, sizeof name, "%s", host);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(name, port, &hints, &res);
    if (g) {
        snprintf(why, cap, "cannot resolve the host %.200s: %s", name, gai_strerror(g));
        goto out;
    }
    /* a literal address needs no pin (nothing resolves it again), and
     * CURLOPT_RESOLVE takes no bracketed IPv6 host: pin[0] = '\0' then */
    unsigned char lit[sizeof(struct in6_addr)];
    int literal = inet_pton(AF_INET, name, lit) == 1 || inet_pton(AF_INET6, name, lit) == 1;
    size_t o = (size_t)snprintf(pin, pin_cap, "%s:%s:", host, port);
    int n = 0;
    for (struct addrinfo *a = res; a && n < WEBHOOK_MAX_ADDRS; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *p = a->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            !inet_ntop(a->ai_family, p, ip, sizeof ip))
            continue;
        if (!allow_private && fetch_addr_private(a->ai_addr)) {
            snprintf(why, cap, "the host %.200s resolves to %s, a loopback, private or "
                     "link-local address; lsqd notifies only public addresses (an operator "
                     "allows others with --allow-private-urls)", name, ip);
            goto out;
        }
        if (o < pin_cap)
            o += (size_t)snprintf(pin + o, pin_cap - o, a->ai_family == AF_INET6 ? "%s[%s]"
                                                                                  : "%s%s",
                                  n ? "," : "", ip);
        n++;
    }
    if (n == 0 || o >= pin_cap) {
        snprintf(why, cap, "the host %.200s has no usable address", name);
        goto out;
    }
    if (literal) pin[0] = '\0';
    rc = 0;
out:
    if (res) freeaddrinfo(res);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

int webhook_check_url(const char *url, int allow_private, char *why, size_t cap)
{
    char pin[WEBHOOK_MAX_ADDRS * 48 + 320];
    return resolve_checked(url, allow_private, pin, sizeof pin, why, cap);
}

static size_t on_reply(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    size_t *got = ud;
    *got += size * n;
    return *got > WEBHOOK_MAX_REPLY ? 0 : size * n; /* 0 ends the transfer */
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)ud, (void)a, (void)b, (void)c, (void)d;
    pthread_mutex_lock(&g_lock);
    int stop = g_stopping;
    pthread_mutex_unlock(&g_lock);
    return stop;
}

/* One POST. Returns the HTTP status (> 0), 0 with why when none came, or -1
 * when lsqd is stopping (the attempt does not count). */
static int post(const char *url, const char *body, const char *secret, int attempt,
                int64_t job_id, char *why, size_t cap)
{
    char pin[WEBHOOK_MAX_ADDRS * 48 + 320];
    if (resolve_checked(url, g_cfg->allow_private_urls, pin, sizeof pin, why, cap)) return 0;
    long ts = (long)time(NULL);
    size_t blen = strlen(body);
    char *signed_text = malloc(blen + 32);
    if (!signed_text) {
        snprintf(why, cap, "out of memory");
        return 0;
    }
    int pl = snprintf(signed_text, blen + 32, "%ld.%s", ts, body);
    char sig[65], h_sig[96], h_ts[64], h_try[64], h_job[64];
    webhook_hmac_hex(secret, strlen(secret), signed_text, (size_t)pl, sig);
    free(signed_text);
    snprintf(h_sig, sizeof h_sig, "X-Lsqd-Signature: sha256=%s", sig);
    snprintf(h_ts, sizeof h_ts, "X-Lsqd-Timestamp: %ld", ts);
    snprintf(h_try, sizeof h_try, "X-Lsqd-Attempt: %d", attempt);
    snprintf(h_job, sizeof h_job, "X-Lsqd-Job: %lld", (long long)job_id);
    struct curl_slist *hdr = NULL, *res = NULL;
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "User-Agent: lsqd-webhook");
    hdr = curl_slist_append(hdr, "Expect:");
    hdr = curl_slist_append(hdr, "X-Lsqd-Event: job.finished");
    hdr = curl_slist_append(hdr, h_sig);
    hdr = curl_slist_append(hdr, h_ts);
    hdr = curl_slist_append(hdr, h_try);
    hdr = curl_slist_append(hdr, h_job);
    if (pin[0]) res = curl_slist_append(res, pin);
    CURL *c = curl_easy_init();
    int status = 0;
    size_t got = 0;
    char cerr[CURL_ERROR_SIZE] = "";
    if (!c || !hdr || (pin[0] && !res)) {
        snprintf(why, cap, "out of memory");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (res) curl_easy_setopt(c, CURLOPT_RESOLVE, res);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(g_cfg->webhook_timeout_s * 1000));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        status = -1;
    } else if (code > 0) {
        status = (int)code; /* a status came, even if the rest of the reply did not */
    } else {
        snprintf(why, cap, "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
    }
out:
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    curl_slist_free_all(res);
    return status;
}

/* The body of a job's end: what a receiver needs without asking lsqd. */
static char *job_body(const json_t *job)
{
    static const char *const KEYS[] = {"id", "name", "state", "error", "test_acc",
                                       "exit_status", "created_at", "started_at",
                                       "finished_at"};
    json_t *b = json_object();
    for (size_t i = 0; i < sizeof KEYS / sizeof *KEYS; i++) {
        json_t *v = json_object_get(job, KEYS[i]);
        json_object_set(b, KEYS[i], v ? v : json_null());
    }
    json_object_set_new(b, "event", json_string("job.finished"));
    char *text = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(b);
    return text;
}

static void wait_for(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double until = ts.tv_sec + ts.tv_nsec / 1e9 + seconds;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&g_lock);
    while (!g_stopping && !g_kicked)
        if (pthread_cond_timedwait(&g_cond, &g_lock, &ts) == ETIMEDOUT) break;
    g_kicked = 0;
    pthread_mutex_unlock(&g_lock);
}

static void deliver(int64_t job_id, int64_t owner_id, const char *url, int done)
{
    int n = done + 1;
    char why[600] = "";
    int status = 0;
    json_t *job = store_job_get(job_id);
    char *body = job ? job_body(job) : NULL;
    json_decref(job);
    char secret[65];
    if (!body) snprintf(why, sizeof why, "cannot read the job");
    else if (webhook_secret(owner_id, secret)) snprintf(why, sizeof why, "no signing secret");
    else status = post(url, body, secret, n, job_id, why, sizeof why);
    free(body);
    if (status < 0) return; /* stopping: still pending, tried again at the next start */
    double t = now_s();
    int ok = status >= 200 && status < 300;
    const char *state = ok ? "delivered" : n >= g_cfg->webhook_attempts ? "failed" : "pending";
    double next = t + g_cfg->webhook_delay_s * pow(2.0, n - 1);
    if (store_webhook_attempt(job_id, n, t, status, status > 0 ? NULL : why, state, next) !=
        STORE_OK) {
        /* unrecorded, the delivery stays due: do not hammer the receiver */
        wait_for(WEBHOOK_IDLE_S);
        return;
    }
    if (ok)
        log_info("webhook delivered", "{s:I,s:i,s:i}", "job", (json_int_t)job_id, "attempt", n,
                 "status", status);
    else
        log_warn("webhook attempt failed", "{s:I,s:i,s:i,s:s,s:s}", "job", (json_int_t)job_id,
                 "attempt", n, "status", status, "error", status > 0 ? "" : why, "state", state);
}

static void *webhook_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        int stop = g_stopping;
        pthread_mutex_unlock(&g_lock);
        if (stop) break;
        int64_t job, owner;
        char *url = NULL;
        int done;
        double next;
        store_status st = store_webhook_next(&job, &owner, &url, &done, &next);
        if (st != STORE_OK) {
            wait_for(WEBHOOK_IDLE_S);
            continue;
        }
        double left = next - now_s();
        if (left > 0) {
            free(url);
            wait_for(left < WEBHOOK_IDLE_S ? left : WEBHOOK_IDLE_S);
            continue;
        }
        deliver(job, owner, url, done);
        free(url);
    }
    return NULL;
}

int webhook_start(const lsqd_config *cfg)
{
    g_cfg = cfg;
    g_stopping = 0;
    if (pthread_create(&g_thread, NULL, webhook_main, NULL)) return -1;
    g_started = 1;
    return 0;
}

void webhook_kick(void)
{
    pthread_mutex_lock(&g_lock);
    g_kicked = 1;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

void webhook_stop(void)
{
    if (!g_started) return;
    pthread_mutex_lock(&g_lock);
    g_stopping = 1;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
    pthread_join(g_thread, NULL);
    g_started = 0;
}
