/* Who may ask lsqd what (auth.c): the Host header check against DNS
 * rebinding, bearer tokens (kept in the store as SHA-256 only), route
 * access (user, admin, public) and object ownership, plus the `lsqd token`
 * commands that manage tokens on the data folder. */
#ifndef LSQD_AUTH_H
#define LSQD_AUTH_H

#include "config.h"
#include "reply.h"

/* "lsqd_" and 64 hex digits (32 bytes from getrandom). */
#define AUTH_TOKEN_LEN 69

/* Decides whether lsqd checks tokens (cfg->auth, the listen address) and
 * notes the names the Host header may carry. Returns 1: tokens, 0: no
 * tokens, -1 after logging why lsqd must not start (--auth off beyond
 * loopback, or tokens needed and none in the store). After store_open. */
int auth_init(const lsqd_config *cfg);
/* The bound port, which a Host header with a port must name (http.c). */
void auth_set_port(int port);
/* 1 when lsqd checks tokens (after auth_init). */
int auth_enabled(void);

/* Each returns 0 to go on, or -1 after replying (*res set). */
/* 421 unless the Host header is one of lsqd's names. Every request. */
int auth_host_or_reply(req *r, enum MHD_Result *res);
/* Sets r->user: the token's user (401 without a valid one, 403 for a
 * non-admin on an admin route), or the local user when tokens are off. */
int auth_user_or_reply(req *r, const route_def *route, enum MHD_Result *res);
/* For a route naming a job, model or dataset by {id}: 404 unless it exists
 * and the caller owns it (an admin: any; the datasets root's: every user
 * may read them, only an admin may delete them, 403). */
int auth_owner_or_reply(req *r, const route_def *route, enum MHD_Result *res);
/* 1 when the caller may use object id (owns it, is an admin, or it is a
 * dataset of the datasets root); 0 when not or when it does not exist. */
int auth_may_use(const store_user *u, store_object kind, int64_t id);
/* --quota-per-user: adding > 0 (an upload's bytes) replies 413 when the
 * caller's bytes would pass the quota; adding == 0 (a job, a dataset URL)
 * replies 429 when they are at it already. */
int auth_quota_or_reply(req *r, unsigned long long adding, enum MHD_Result *res);
/* The owner filter of a list: 0 for an admin (all), else the caller. */
int64_t auth_list_owner(const req *r);

/* `lsqd token create|list|revoke ...` (argv[0] is "token"); exit status. */
int auth_token_main(int argc, char **argv);

#endif
