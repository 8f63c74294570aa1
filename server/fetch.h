/* Fetching a dataset from a URL (libcurl), for the registrar. Only http and
 * https, the redirects' targets too (at most FETCH_MAX_REDIRECTS); the size
 * is capped as the bytes arrive (and before, when the server announces it);
 * a whole fetch has a time limit and one that stalls below 1 KiB/s ends. And
 * lsqd connects to no loopback, private, link-local or otherwise non-public
 * address unless the operator allows it (--allow-private-urls): every
 * address curl is about to connect to, those of redirects included, is
 * checked as the socket is opened, so a name that resolves to 127.0.0.1 is
 * refused as surely as the literal address. Proxies named by the
 * environment are not used, so the address checked is the one connected
 * to. Messages name the URL, never a path of the server. */
#ifndef LSQD_FETCH_H
#define LSQD_FETCH_H

#include <stddef.h>
#include <sys/socket.h>

#define FETCH_MAX_REDIRECTS 5
#define FETCH_URL_MAX 2048

typedef struct {
    double timeout_s;             /* the whole fetch */
    double low_speed_s;           /* below 1 KiB/s for this long: ended */
    unsigned long long max_bytes; /* the file's cap */
    int allow_private;            /* connect to non-public addresses too */
    const int *stop;              /* non-zero: give up now (lsqd is stopping) */
    /* may be NULL: called as bytes arrive, done of total (-1 while the
     * server has not announced a size), on the fetching thread */
    void (*progress)(void *ctx, long long done, long long total);
    void *progress_ctx;
} fetch_opts;

typedef struct {
    /* "fetch_failed" (the network or the server), "fetch_refused" (a
     * private address, a redirect to another scheme), "too_large",
     * "timeout", "stopped" (opts.stop), "internal" (the local file) */
    char code[32];
    char message[600];
} fetch_err;

/* Checks a URL before anything is fetched: at most FETCH_URL_MAX bytes,
 * http or https, with a host; a literal IP address must be public unless
 * allow_private. 0, or -1 with the reason in why. */
int fetch_check_url(const char *url, int allow_private, char *why, size_t cap);
/* The last segment of the URL's path ("" when there is none). */
void fetch_url_basename(const char *url, char *out, size_t cap);
/* 1 when sa is not a public unicast address (loopback, private, link-local,
 * shared, multicast, reserved, documentation, unspecified; IPv4 inside IPv6
 * judged as IPv4). */
int fetch_addr_private(const struct sockaddr *sa);
/* Downloads url into a new file at path with its size and sha256 (hex[65]).
 * 0, or -1 with err filled and no file left. */
int fetch_to_file(const char *url, const char *path, const fetch_opts *o, long long *bytes,
                  char *sha256, fetch_err *err);

#endif
