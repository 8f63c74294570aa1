/* Connection limits (docs/reliability.md, "Connection limits"): a client
 * trickling its body or its head is cut while others are served, a header
 * flood gets 431 and lsqd keeps serving, thousands of idle connections do not
 * delay a request, and the per-address limit refuses the connection past it.
 * Raw sockets for the misbehaving clients, libcurl for the well-behaved. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

/* A request head without its final blank line, and a whole request. */
#define GET_HEAD "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
#define GET_REQ GET_HEAD "\r\n"

static int raw_connect(const lsqd *d)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect: %s",
              strerror(errno));
    return fd;
}

static void raw_send(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        cr_assert(w > 0, "send: %s", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}

/* 1 when the peer has closed (end of file, reset or a refused send) within
 * wait_s, 0 when the connection is still open; data read is discarded. */
static int raw_closed(int fd, double wait_s)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double t0 = now_s();
    for (;;) {
        double left = wait_s - (now_s() - t0);
        int rc = poll(&p, 1, left > 0 ? (int)(left * 1000) : 0);
        if (rc <= 0) return 0;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return 1;
        if (left <= 0) return 0;
    }
}

/* Reads the status code of the reply on fd (0 when the connection ends
 * first or nothing comes within wait_s). */
static int raw_status(int fd, double wait_s)
{
    char buf[256];
    size_t len = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double t0 = now_s();
    while (len < 12 && now_s() - t0 < wait_s) {
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    int status = 0;
    if (len >= 12 && sscanf(buf, "HTTP/1.%*d %d", &status) == 1) return status;
    return 0;
}

/* The value of a /metrics line starting with `prefix` (-1 when absent). */
static long long metric(lsqd *d, const char *prefix)
{
    api_res *r = api(d, "GET", "/metrics", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    long long v = -1;
    for (char *line = r->body; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!strncmp(line, prefix, strlen(prefix)))
            v = strtoll(line + strlen(prefix), NULL, 10);
        line = nl ? nl + 1 : NULL;
    }
    api_free(r);
    return v;
}

#define CUT_BODY "lsqd_connections_cut_total{reason=\"body_rate\"} "
#define CUT_HEAD "lsqd_connections_cut_total{reason=\"header_timeout\"} "

Test(limits, slow_body_is_cut_while_another_client_is_served, .timeout = 60)
{
    lsqd d;
    const char *flags[] = {"--body-timeout", "2", "--body-min-rate", "100", NULL};
    lsqd_start(&d, flags);
    int fd = raw_connect(&d);
    const char head[] = "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n";
    raw_send(fd, head, sizeof head - 1);
    /* one byte a second: never idle for libmicrohttpd, far below 100 B/s */
    double t0 = now_s(), cut_at = 0;
    int served = 0;
    while (now_s() - t0 < 20) {
        if (send(fd, "{", 1, MSG_NOSIGNAL) != 1 || raw_closed(fd, 1.0)) {
            cut_at = now_s() - t0;
            break;
        }
        /* meanwhile another client is answered, and at once */
        double q0 = now_s();
        api_res *r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
        cr_assert_eq(r->status, 200);
        cr_assert_lt(now_s() - q0, 3.0, "a request took %.2f s beside the slow body",
                     now_s() - q0);
        api_free(r);
        served++;
    }
    close(fd);
    cr_assert_gt(cut_at, 0, "a body at 1 B/s was not cut within 20 s");
    /* not before the body timeout (2 s), and soon after it */
    cr_assert_geq(cut_at, 1.9, "cut after %.2f s, before --body-timeout", cut_at);
    cr_assert_gt(served, 0);
    cr_assert_eq(metric(&d, CUT_BODY), 1);
    long long jobs, max_id;
    db_jobs(&d, &jobs, &max_id);
    cr_assert_eq(jobs, 0, "the cut request stored a job");
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

Test(limits, slow_head_is_cut_after_the_header_timeout, .timeout = 60)
{
    lsqd d;
    const char *flags[] = {"--header-timeout", "2", NULL};
    lsqd_start(&d, flags);
    int fd = raw_connect(&d);
    raw_send(fd, GET_HEAD, strlen(GET_HEAD));
    double t0 = now_s(), cut_at = 0;
    while (now_s() - t0 < 20) {
        if (send(fd, "X-Slow: a\r\n", 11, MSG_NOSIGNAL) != 11 || raw_closed(fd, 0.5)) {
            cut_at = now_s() - t0;
            break;
        }
    }
    close(fd);
    cr_assert_gt(cut_at, 0, "a head trickled for 20 s was not cut");
    cr_assert_geq(cut_at, 1.9, "cut after %.2f s, before --header-timeout", cut_at);
    cr_assert_eq(metric(&d, CUT_HEAD), 1);
    /* an ordinary request on a fresh connection is unaffected */
    api_res *r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

Test(limits, header_flood_gets_431_and_lsqd_keeps_serving, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, NULL);
    /* one header of 64 KiB, twice the default --conn-memory */
    size_t big = 64 << 10;
    char *req = malloc(big + 256);
    cr_assert(req);
    int n = snprintf(req, 256, "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    int fd = raw_connect(&d);
    raw_send(fd, req, (size_t)n + big + 4);
    int st = raw_status(fd, 10);
    cr_assert(st == 431 || st == 413, "a 64 KiB header got %d", st);
    close(fd);
    /* 5000 small headers */
    size_t len = 0;
    len += (size_t)snprintf(req, 256, "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < 5000 && len + 16 < big; i++)
        len += (size_t)sprintf(req + len, "X-A%d: b\r\n", i % 10);
    memcpy(req + len, "\r\n", 2);
    len += 2;
    fd = raw_connect(&d);
    raw_send(fd, req, len);
    st = raw_status(fd, 10);
    cr_assert(st == 431 || st == 413, "5000 headers got %d", st);
    close(fd);
    free(req);
    api_res *r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200, "lsqd does not serve after a header flood");
    api_free(r);
    cr_assert_eq(lsqd_stop(&d), 0);
    lsqd_cleanup(&d);
}

#define IDLE_CONNS 2000

Test(limits, thousands_of_idle_connections_do_not_delay_a_request, .timeout = 60)
{
    struct rlimit rl;
    cr_assert(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < IDLE_CONNS + 256) {
        rl.rlim_cur = rl.rlim_max < IDLE_CONNS + 256 ? rl.rlim_max : IDLE_CONNS + 256;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    cr_assert_geq(rl.rlim_cur, IDLE_CONNS + 64, "the open-file limit (%llu) is too low",
                  (unsigned long long)rl.rlim_cur);
    lsqd d;
    /* a head deadline longer than the test: the connections must stay */
    const char *flags[] = {"--header-timeout", "120", NULL};
    lsqd_start(&d, flags);
    static int fds[IDLE_CONNS];
    for (int i = 0; i < IDLE_CONNS; i++) {
        fds[i] = raw_connect(&d);
        /* half of them start a request and stop there */
        if (i % 2) raw_send(fds[i], "GET /api/v1/jobs HTTP/1.1\r\n", 27);
    }
    /* until lsqd has accepted them all */
    double t0 = now_s();
    long long open = 0;
    while (now_s() - t0 < 30 && (open = metric(&d, "lsqd_connections_open ")) < IDLE_CONNS)
        sleep_s(0.2);
    cr_assert_geq(open, IDLE_CONNS, "lsqd holds %lld of the %d connections", open,
                  IDLE_CONNS);
    double worst = 0;
    for (int k = 0; k < 5; k++) {
        double q0 = now_s();
        api_res *r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
        cr_assert_eq(r->status, 200);
        api_free(r);
        if (now_s() - q0 > worst) worst = now_s() - q0;
    }
    cr_assert_lt(worst, 2.0, "a request beside %d idle connections took %.3f s",
                 IDLE_CONNS, worst);
    for (int i = 0; i < IDLE_CONNS; i++) close(fds[i]);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

Test(limits, per_ip_limit_refuses_past_n, .timeout = 60)
{
    lsqd d;
    const char *flags[] = {"--max-connections-per-ip", "3", NULL};
    lsqd_start(&d, flags);
    int fds[3];
    for (int i = 0; i < 3; i++) fds[i] = raw_connect(&d);
    /* (no /metrics here: its request would be the 4th) */
    sleep_s(0.5);
    int extra = raw_connect(&d);
    raw_send(extra, GET_REQ, strlen(GET_REQ));
    cr_assert_eq(raw_status(extra, 5), 0, "a 4th connection from one address was served");
    close(extra);
    /* one of the three served: its requests are answered */
    raw_send(fds[0], GET_REQ, strlen(GET_REQ));
    cr_assert_eq(raw_status(fds[0], 10), 200);
    /* a slot freed is usable again */
    close(fds[1]);
    close(fds[2]);
    sleep_s(0.5);
    api_res *r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    api_free(r);
    close(fds[0]);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

Test(limits, sse_stream_outlives_the_head_and_body_deadlines, .timeout = 120)
{
    lsqd d;
    /* deadlines far shorter than the job: a stream judged by them would be
     * cut long before its end event */
    const char *flags[] = {"--header-timeout", "0.2", "--body-timeout", "0.2", NULL};
    lsqd_start(&d, flags);
    long long id = submit_job(&d, TINY_SPEC);
    sse_log log;
    double t0 = now_s();
    sse_read(&d, id, 0, 0, 90, &log);
    double took = now_s() - t0;
    cr_assert(log.ended, "the stream ended without its end event after %.1f s", took);
    cr_assert_gt(took, 0.6, "the job ended too soon (%.2f s) to show anything", took);
    cr_assert(sse_ids_consecutive(&log, 1));
    sse_log_free(&log);
    cr_assert_eq(metric(&d, CUT_HEAD), 0);
    cr_assert_eq(metric(&d, CUT_BODY), 0);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}
