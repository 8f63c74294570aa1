/* Event hub: a list of parked SSE streams behind one mutex. */
#include "hub.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "log.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond;
static hub_waiter *g_parked;
static uint64_t g_gen = 1;
static int g_stopping;
static int g_count;
static double g_heartbeat_s = 15;
static pthread_t g_thread;
static int g_thread_started;

static void wake_all_locked(void)
{
    for (hub_waiter *w = g_parked, *next; w; w = next) {
        next = w->next;
        w->parked = 0;
        w->next = NULL;
        w->wake(w->ctx);
    }
    g_parked = NULL;
    g_count = 0;
}

static void *heartbeat_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_lock);
    while (!g_stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = ts.tv_sec + ts.tv_nsec / 1e9 + g_heartbeat_s;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        int rc = pthread_cond_timedwait(&g_cond, &g_lock, &ts);
        if (rc == ETIMEDOUT) wake_all_locked();
    }
    pthread_mutex_unlock(&g_lock);
    return NULL;
}

int hub_init(double heartbeat_s)
{
    g_heartbeat_s = heartbeat_s;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&g_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&g_thread, NULL, heartbeat_main, NULL)) return -1;
    g_thread_started = 1;
    return 0;
}

void hub_shutdown(void)
{
    pthread_mutex_lock(&g_lock);
    g_stopping = 1;
    g_gen++;
    wake_all_locked();
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    if (g_thread_started) pthread_join(g_thread, NULL);
    g_thread_started = 0;
}

uint64_t hub_generation(void)
{
    pthread_mutex_lock(&g_lock);
    uint64_t g = g_gen;
    pthread_mutex_unlock(&g_lock);
    return g;
}

int hub_park(hub_waiter *w, uint64_t gen, void (*park_fn)(void *ctx))
{
    int rc;
    pthread_mutex_lock(&g_lock);
    if (g_stopping) {
        rc = -1;
    } else if (gen != g_gen) {
        rc = 0;
    } else {
        park_fn(w->ctx);
        w->parked = 1;
        w->next = g_parked;
        g_parked = w;
        g_count++;
        rc = 1;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void hub_notify(int64_t job_id)
{
    pthread_mutex_lock(&g_lock);
    g_gen++;
    hub_waiter **pp = &g_parked;
    while (*pp) {
        hub_waiter *w = *pp;
        if (w->job_id == job_id) {
            *pp = w->next;
            w->parked = 0;
            w->next = NULL;
            g_count--;
            w->wake(w->ctx);
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

int hub_parked_count(void)
{
    pthread_mutex_lock(&g_lock);
    int n = g_count;
    pthread_mutex_unlock(&g_lock);
    return n;
}
