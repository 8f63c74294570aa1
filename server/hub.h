/* The event hub: wakes the SSE streams waiting for a job's next event. A
 * stream that found nothing new parks itself with hub_park (its HTTP
 * connection suspended); hub_notify wakes the streams of a job when an event
 * is stored or its state changes; a heartbeat thread wakes every stream each
 * heartbeat period so that it can send a ping (and notice a gone client). */
#ifndef LSQD_HUB_H
#define LSQD_HUB_H

#include <stdint.h>

typedef struct hub_waiter {
    int64_t job_id;
    void (*wake)(void *ctx);   /* called with the hub lock held */
    void *ctx;
    int parked;
    struct hub_waiter *next;
} hub_waiter;

int hub_init(double heartbeat_s);
/* Wakes every stream and refuses new ones (they end). Joins the thread. */
void hub_shutdown(void);
/* A counter that moves on every notify: read it before looking in the store. */
uint64_t hub_generation(void);
/* Parks w unless the generation moved since gen (returns 0: look again) or
 * the hub is shutting down (-1). On 1, park_fn(ctx) has been called with the
 * lock held (it suspends the connection) and w->wake will be called once. */
int hub_park(hub_waiter *w, uint64_t gen, void (*park_fn)(void *ctx));
void hub_notify(int64_t job_id);
/* Number of parked streams (for /metrics). */
int hub_parked_count(void);

#endif
