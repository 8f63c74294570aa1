/* SGD with momentum (PyTorch semantics) over the net's one parameter buffer:
 *   g   = grad + wd * p            (L2 weight decay, coupled into the gradient)
 *   buf = momentum * buf + g       (buf starts at zero: the first step is g)
 *   p  -= lr * (nesterov ? g + momentum * buf : buf)
 * Weight decay applies to every parameter, as torch.optim.SGD does with one
 * parameter group. After the update the LSQ step sizes pass through the guard
 * of quant.h, which keeps them positive. */
#ifndef LSQ_OPTIM_H
#define LSQ_OPTIM_H

#include "graph/net.h"

typedef struct {
    float *momentum;      /* (n_params), one allocation, owned */
    size_t n;
    float *prev_steps;    /* scratch for the guard */
    size_t n_steps;
    int guarded;          /* steps the guard reset, in total */
} lsq_sgd;

lsq_status sgd_init(lsq_sgd *o, const lsq_net *net, lsq_err *err);
void sgd_step(lsq_sgd *o, lsq_net *net, float lr, float momentum, float wd, int nesterov);
void sgd_free(lsq_sgd *o);

/* Cosine decay without restarts, with optional linear warm-up:
 * lr(t) = base * t / warm for t < warm, else
 *         base * 0.5 * (1 + cos(pi * (t - warm) / (total - warm))). */
float lr_cosine(float base, long t, long total, long warm);

#endif
