/* Webhooks: a job's notify_url gets a signed POST when the job ends
 * (succeeded, failed, cancelled), from one thread of its own, never an HTTP
 * thread. Deliveries and every attempt live in the store, so an lsqd that
 * stops with deliveries pending resumes them at its next start.
 *
 * The body is the job's end as JSON; the headers X-Lsqd-Timestamp (unix
 * seconds) and X-Lsqd-Signature: sha256=HEX, HEX being HMAC-SHA256 keyed
 * with the owner's secret (its 64 hex characters as bytes) of
 * "TIMESTAMP.BODY". A 2xx answer delivers it; anything else is retried
 * after --webhook-delay seconds, doubled after each attempt, up to
 * --webhook-attempts attempts. lsqd connects only to the addresses it
 * resolved and checked (CURLOPT_RESOLVE pins them): public ones, unless
 * --allow-private-urls. Redirects are not followed. */
#ifndef LSQD_WEBHOOK_H
#define LSQD_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The most addresses of one host that are checked and pinned. */
#define WEBHOOK_MAX_ADDRS 16

/* Checks a notify_url for a submit: http or https, a host that resolves,
 * and (unless allow_private) only to public addresses. 0, or -1 with the
 * reason in why. Resolves the host (blocking). */
int webhook_check_url(const char *url, int allow_private, char *why, size_t cap);

/* The owner's secret (64 hex digits) into hex[65], made on first use from
 * getrandom(2). 0, or -1 (logged). */
int webhook_secret(int64_t owner_id, char hex[65]);

/* HMAC-SHA256 of msg keyed with key, as lower-case hex into hex[65]. */
void webhook_hmac_hex(const char *key, size_t key_len, const void *msg, size_t len,
                      char hex[65]);

/* Starts the delivery thread (it resumes pending deliveries). 0 or -1. */
int webhook_start(const lsqd_config *cfg);
/* A job may have ended: look for due deliveries now. */
void webhook_kick(void);
/* Stops the thread after the attempt under way; pending deliveries stay
 * pending in the store. */
void webhook_stop(void);

#endif
