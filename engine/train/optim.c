/* SGD with momentum over the flat parameter buffer, and the lr schedule. */
#include "train/optim.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

lsq_status sgd_init(lsq_sgd *o, const lsq_net *net, lsq_err *err)
{
    memset(o, 0, sizeof *o);
    o->n = net->n_params;
    o->momentum = calloc(o->n ? o->n : 1, sizeof(float));
    size_t steps = 0;
    for (int v = 0; v < net->n_views; v++)
        if (net->views[v].kind == PV_STEP) steps += net->views[v].count;
    o->n_steps = steps;
    o->prev_steps = calloc(steps ? steps : 1, sizeof(float));
    if (!o->momentum || !o->prev_steps) {
        sgd_free(o);
        return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory for the optimizer");
    }
    return LSQ_OK;
}

/* The update of n parameters, one `omp simd` loop per Nesterov setting: GCC
 * left the parallel loop with the choice inside scalar ("control flow in
 * loop"). Element by element, so the bits are those of the scalar loop. */
static void sgd_update(float *p, float *buf, const float *g, long n, float lr, float momentum,
                       float wd, int nesterov)
{
    if (nesterov) {
#pragma omp simd
        for (long i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            float b = momentum * buf[i] + gi;
            buf[i] = b;
            p[i] -= lr * (gi + momentum * b);
        }
    } else {
#pragma omp simd
        for (long i = 0; i < n; i++) {
            float b = momentum * buf[i] + (g[i] + wd * p[i]);
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

void sgd_step(lsq_sgd *o, lsq_net *net, float lr, float momentum, float wd, int nesterov)
{
    /* keep the steps before the update: the guard falls back towards them */
    size_t k = 0;
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind != PV_STEP) continue;
        memcpy(o->prev_steps + k, net->params + vw->off, vw->count * sizeof(float));
        k += vw->count;
    }
    const long n = (long)o->n;
#pragma omp parallel
    {
        /* schedule(static) by hand: each thread one contiguous slice */
        const long t = omp_get_thread_num(), nt = omp_get_num_threads();
        const long lo = n * t / nt, hi = n * (t + 1) / nt;
        sgd_update(net->params + lo, o->momentum + lo, net->grads + lo, hi - lo, lr, momentum,
                   wd, nesterov);
    }
    k = 0;
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind != PV_STEP) continue;
        o->guarded += quant_guard(net->params + vw->off, o->prev_steps + k, vw->count);
        k += vw->count;
    }
}

void sgd_free(lsq_sgd *o)
{
    free(o->momentum);
    free(o->prev_steps);
    memset(o, 0, sizeof *o);
}

float lr_cosine(float base, long t, long total, long warm)
{
    if (warm > 0 && t < warm) return base * (float)(t + 1) / (float)warm;
    if (total <= warm) return base;
    double f = (double)(t - warm) / (double)(total - warm);
    if (f > 1) f = 1;
    return (float)(base * 0.5 * (1.0 + cos(M_PI * f)));
}
