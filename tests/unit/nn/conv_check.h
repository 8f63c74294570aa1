/* What the conv test suites share (test_dnnl_conv.c, test_dnnl_wino.c,
 * test_bf16_bwd.c): a seeded generator for their buffers, a case (shape,
 * buffers, the forward it checks) with its finite-difference gradient
 * check, and the relative difference of two results. */
#ifndef LSQ_TEST_CONV_CHECK_H
#define LSQ_TEST_CONV_CHECK_H

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/dnnl_conv.h"
#include "nn/layers.h"

/* finite differences against the analytic gradient (float sums, step 1e-2) */
#define FD_TOL 1e-2

static unsigned long long cc_state;

static inline void cc_seed(unsigned long long s) { cc_state = s * 2654435761ULL + 1; }

/* uniform in [0, 1) (xorshift64) */
static inline double cc_unit(void)
{
    cc_state ^= cc_state << 13;
    cc_state ^= cc_state >> 7;
    cc_state ^= cc_state << 17;
    return (double)(cc_state >> 11) / 9007199254740992.0;
}

/* n values uniform in [-1, 1) */
static inline float *rand_buf(size_t n)
{
    float *p = malloc(sizeof *p * (n ? n : 1));
    cr_assert(p);
    for (size_t i = 0; i < n; i++) p[i] = (float)(2.0 * cc_unit() - 1.0);
    return p;
}

static inline float *copy_buf(const float *src, size_t n)
{
    float *p = malloc(sizeof *p * (n ? n : 1));
    cr_assert(p);
    memcpy(p, src, sizeof *p * n);
    return p;
}

static inline void need_dnnl(void)
{
    if (!dnnl_conv_available()) cr_skip_test("built without oneDNN (make DNNL=0)");
    omp_set_num_threads(2);
    openblas_set_num_threads(1);
}

/* max |a - b| / max(max |b|, 1e-30): b is the reference */
static inline double rel_diff(const float *a, const float *b, size_t n)
{
    double e = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double x = fabs((double)a[i] - b[i]);
        if (!(x <= e)) e = x; /* NaN counts as worst */
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return e / fmax(m, 1e-30);
}

typedef void (*conv_forward_fn)(float *out, const float *in, const float *w, const float *b,
                                const conv2d_dims *d, float *scratch);

/* A conv of shape d with random input, weights, bias (or none) and the
 * loss's output weights r: loss = sum(forward(in, w, b) * r). */
typedef struct {
    conv2d_dims d;
    conv_forward_fn forward;
    float *in, *w, *b, *out, *r, *scratch;
    size_t nin, nw, nout;
} ctx;

/* c->d set: the buffers, from the generator. */
static inline void ctx_alloc(ctx *c, conv_forward_fn forward, int bias)
{
    c->forward = forward;
    c->nin = (size_t)c->d.n * c->d.ic * c->d.ih * c->d.iw;
    c->nw = (size_t)c->d.oc * (c->d.ic / c->d.groups) * c->d.kh * c->d.kw;
    c->nout = (size_t)c->d.n * c->d.oc * c->d.oh * c->d.ow;
    c->in = rand_buf(c->nin), c->w = rand_buf(c->nw), c->r = rand_buf(c->nout);
    c->b = bias ? rand_buf((size_t)c->d.oc) : NULL;
    c->out = calloc(c->nout, sizeof *c->out);
    c->scratch = calloc(conv2d_scratch_floats(&c->d) + 1, sizeof *c->scratch);
    cr_assert(c->out && c->scratch);
}

static inline void ctx_free(ctx *c)
{
    free(c->in), free(c->w), free(c->b), free(c->out), free(c->r), free(c->scratch);
}

static inline double loss(ctx *c)
{
    c->forward(c->out, c->in, c->w, c->b, &c->d, c->scratch);
    double s = 0.0;
    for (size_t i = 0; i < c->nout; i++) s += (double)c->out[i] * c->r[i];
    return s;
}

/* The largest relative difference between grad and central differences of
 * the loss in param, on up to 60 entries (all of them, or drawn at random). */
static inline double gradcheck(const char *what, float *param, const float *grad, size_t count,
                               ctx *c)
{
    const int max_checks = 60;
    double worst = 0.0;
    const size_t checks = count <= (size_t)max_checks ? count : (size_t)max_checks;
    for (size_t j = 0; j < checks; j++) {
        const size_t i = count <= (size_t)max_checks ? j : (size_t)(cc_unit() * count);
        const float keep = param[i];
        param[i] = keep + 1e-2f;
        const double up = param[i], lp = loss(c);
        param[i] = keep - 1e-2f;
        const double down = param[i], lm = loss(c);
        param[i] = keep;
        const double num = (lp - lm) / (up - down), ana = grad[i];
        const double rel = fabs(num - ana) / fmax(fmax(fabs(num), fabs(ana)), 0.1);
        if (rel > worst) worst = rel;
        if (rel > FD_TOL) cr_log_error("%s[%zu]: analytic %.6g numeric %.6g", what, i, ana, num);
    }
    printf("gradcheck %-36s max rel diff %.3g (%zu entries)\n", what, worst, checks);
    return worst;
}

#endif
