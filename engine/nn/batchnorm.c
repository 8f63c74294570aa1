/* batchnorm2d over (N, C, HW) with PyTorch semantics.
 *
 * Work is split by channel over OpenMP threads: each channel's statistics
 * are computed by one thread in a fixed order, so results do not depend on
 * the thread count. Sums run in float within one (n, c) plane (vectorised)
 * and in double across planes. Training forward reads the input twice: once
 * for the sums of x - k and (x - k)^2, k being the mean of the channel's
 * first plane (so the variance does not cancel away when the mean is large
 * relative to the spread), once to normalise. */
#include "nn/layers.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "core/vsum.h"

/* Only fork when there is enough work to pay for it. */
#define BN_PAR_MIN 32768

/* s1 = sum of x - k, s2 = sum of (x - k)^2 over x[0..n) */
static void shifted_sums(const float *x, int n, float k, float *s1, float *s2)
{
    vsum_f8 a = VSUM_SPLAT(0.0f), b = a, d;
    const vsum_f8 vk = VSUM_SPLAT(k);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        VSUM_LOAD(d, x + j);
        d -= vk;
        a += d;
        b += d * d;
    }
    float sa = VSUM_LANES(a), sb = VSUM_LANES(b);
    for (; j < n; j++) {
        float e = x[j] - k;
        sa += e;
        sb += e * e;
    }
    *s1 = sa;
    *s2 = sb;
}

/* a = sum of g', b = sum of g' * (x - mean) over [0..n), where g' = g, or
 * with relu, g where x * scale + shift > 0 (the fused ReLU's mask) else 0 */
static void grad_sums(const float *x, const float *g, int n, float mean, int relu, float scale,
                      float shift, float *a, float *b)
{
    vsum_f8 va = VSUM_SPLAT(0.0f), vb = va, xv, gv;
    const vsum_f8 vm = VSUM_SPLAT(mean), vs = VSUM_SPLAT(scale), vh = VSUM_SPLAT(shift);
    const vsum_f8 zero = VSUM_SPLAT(0.0f);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        VSUM_LOAD(xv, x + j);
        VSUM_LOAD(gv, g + j);
        if (relu) gv = VSUM_SELECT(xv * vs + vh > zero, gv);
        va += gv;
        vb += gv * (xv - vm);
    }
    float sa = VSUM_LANES(va), sb = VSUM_LANES(vb);
    for (; j < n; j++) {
        float gj = g[j];
        if (relu) {
            float v = x[j] * scale + shift;
            gj = v > 0.0f ? gj : 0.0f;
        }
        sa += gj;
        sb += gj * (x[j] - mean);
    }
    *a = sa;
    *b = sb;
}

/* Channel ch's statistics from the sums of x - k per plane (part: 2 floats
 * per plane, planes in (N, C) order), added in image order: save_mean,
 * save_rstd, the running statistics; *scale, *shift normalise. */
/* A channel's sums of (x - k) and (x - k)^2 over its n planes. */
static void channel_sums(double *sum, double *sum2, const float *part, int n, int c, int ch)
{
    double s1 = 0.0, s2 = 0.0;
    for (int i = 0; i < n; i++) {
        s1 += part[2 * ((size_t)i * c + ch)];
        s2 += part[2 * ((size_t)i * c + ch) + 1];
    }
    *sum = s1, *sum2 = s2;
}

/* A channel's statistics from its sums over m values, shifted by k. */
static void stats_from_sums(float *scale, float *shift, float *save_mean, float *save_rstd,
                            float *running_mean, float *running_var, double sum, double sum2,
                            double m, const float *gamma, const float *beta, float k, int ch,
                            float momentum, float eps)
{
    const double dmean = sum / m; /* mean - k */
    const double mean = (double)k + dmean;
    const float meanf = (float)mean;
    double ss = sum2 - dmean * sum; /* sum of (x - mean)^2 */
    if (ss < 0.0) ss = 0.0;
    const double var = ss / m; /* biased: used to normalise */
    const float rstd = (float)(1.0 / sqrt(var + eps));
    *scale = gamma[ch] * rstd;
    *shift = beta[ch] - meanf * *scale;
    save_mean[ch] = meanf;
    save_rstd[ch] = rstd;
    if (running_mean)
        running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * meanf;
    if (running_var) {
        double unbiased = m > 1.0 ? ss / (m - 1.0) : var;
        running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (float)unbiased;
    }
}

static void channel_stats(float *scale, float *shift, float *save_mean, float *save_rstd,
                          float *running_mean, float *running_var, const float *part,
                          const float *gamma, const float *beta, int n, int c, int hw, float k,
                          int ch, float momentum, float eps)
{
    double sum, sum2;
    channel_sums(&sum, &sum2, part, n, c, ch);
    stats_from_sums(scale, shift, save_mean, save_rstd, running_mean, running_var, sum, sum2,
                    (double)n * hw, gamma, beta, k, ch, momentum, eps);
}

static void normalise_plane(float *y, const float *x, int hw, float scale, float shift,
                            int relu)
{
    if (relu) {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float v = x[j] * scale + shift;
            y[j] = v > 0.0f ? v : 0.0f;
        }
    } else {
#pragma omp simd
        for (int j = 0; j < hw; j++) y[j] = x[j] * scale + shift;
    }
}

/* The sums of x - k per channel, k being the mean of the channel's first
 * plane (with k near the batch mean, the shifted sum of squares loses no
 * more than the two-pass form would), then the normalisation: both passes
 * plane by plane in memory order (images apart by C planes: reading channel
 * by channel would jump between short planes). work: BN_WORK_FLOATS(n, c),
 * per channel k, scale and shift, then the sums of every plane. */
static void forward_train(float *out, float *save_mean, float *save_rstd,
                          float *running_mean, float *running_var,
                          const float *in, const float *gamma, const float *beta,
                          int n, int c, int hw, float momentum, float eps,
                          int relu, float *work)
{
    const size_t plane = (size_t)hw, cstride = (size_t)c * hw;
    const long planes = (long)n * c;
    const int par = (size_t)n * cstride >= BN_PAR_MIN;
    float *k = work, *scale = work + c, *shift = work + 2 * c, *part = work + 3 * c;
    for (int ch = 0; ch < c; ch++) k[ch] = vsum_sum(in + ch * plane, hw) / (float)hw;
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (long q = 0; q < planes; q++)
            shifted_sums(in + (size_t)q * hw, hw, k[q % c], &part[2 * q], &part[2 * q + 1]);
#pragma omp for schedule(static)
        for (int ch = 0; ch < c; ch++)
            channel_stats(&scale[ch], &shift[ch], save_mean, save_rstd, running_mean,
                          running_var, part, gamma, beta, n, c, hw, k[ch], ch, momentum, eps);
#pragma omp for schedule(static)
        for (long q = 0; q < planes; q++)
            normalise_plane(out + (size_t)q * hw, in + (size_t)q * hw, hw, scale[q % c],
                            shift[q % c], relu);
    }
}

void batchnorm_forward_train(float *out, float *save_mean, float *save_rstd,
                             float *running_mean, float *running_var,
                             const float *in, const float *gamma,
                             const float *beta, int n, int c, int hw,
                             float momentum, float eps, float *work)
{
    forward_train(out, save_mean, save_rstd, running_mean, running_var, in, gamma,
                  beta, n, c, hw, momentum, eps, 0, work);
}

void batchnorm_relu_forward_train(float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var,
                                  const float *in, const float *gamma,
                                  const float *beta, int n, int c, int hw,
                                  float momentum, float eps, float *work)
{
    forward_train(out, save_mean, save_rstd, running_mean, running_var, in, gamma,
                  beta, n, c, hw, momentum, eps, 1, work);
}

void batchnorm_forward_train_sync(float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var, const float *in,
                                  const float *gamma, const float *beta, int n, int c, int hw,
                                  float momentum, float eps, int relu, float *work,
                                  const bn_sync *sync)
{
    const long planes = (long)n * c;
    const int par = (size_t)planes * hw >= BN_PAR_MIN;
    float *k = work, *scale = work + c, *shift = work + 2 * c, *part = work + 3 * c;
    double *red = malloc((2 * (size_t)c + 1) * sizeof(double));
    assert(red && "out of memory for the synchronised batch statistics");
    /* one shift for every rank: the mean of the ranks' first-plane means */
    for (int ch = 0; ch < c; ch++)
        red[ch] = n > 0 ? vsum_sum(in + (size_t)ch * hw, hw) / (float)hw : 0.0f;
    red[c] = n > 0;
    sync->sum(sync->ctx, red, (size_t)c + 1);
    for (int ch = 0; ch < c; ch++) k[ch] = red[c] > 0 ? (float)(red[ch] / red[c]) : 0.0f;
#pragma omp parallel for schedule(static) if (par)
    for (long q = 0; q < planes; q++)
        shifted_sums(in + (size_t)q * hw, hw, k[q % c], &part[2 * q], &part[2 * q + 1]);
    for (int ch = 0; ch < c; ch++) channel_sums(&red[2 * ch], &red[2 * ch + 1], part, n, c, ch);
    red[2 * c] = (double)n * hw;
    sync->sum(sync->ctx, red, 2 * (size_t)c + 1);
    for (int ch = 0; ch < c; ch++)
        stats_from_sums(&scale[ch], &shift[ch], save_mean, save_rstd, running_mean, running_var,
                        red[2 * ch], red[2 * ch + 1], red[2 * c], gamma, beta, k[ch], ch,
                        momentum, eps);
    free(red);
#pragma omp parallel for schedule(static) if (par)
    for (long q = 0; q < planes; q++)
        normalise_plane(out + (size_t)q * hw, in + (size_t)q * hw, hw, scale[q % c],
                        shift[q % c], relu);
}

static void forward_eval(float *out, const float *in, const float *gamma,
                         const float *beta, const float *running_mean,
                         const float *running_var, int n, int c, int hw,
                         float eps, int relu)
{
    const size_t plane = (size_t)hw;
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= BN_PAR_MIN)
    for (int p = 0; p < n * c; p++) {
        int ch = p % c;
        float scale = gamma[ch] / sqrtf(running_var[ch] + eps);
        float shift = beta[ch] - running_mean[ch] * scale;
        normalise_plane(out + p * plane, in + p * plane, hw, scale, shift, relu);
    }
}

void batchnorm_forward_eval(float *out, const float *in, const float *gamma,
                            const float *beta, const float *running_mean,
                            const float *running_var, int n, int c, int hw,
                            float eps)
{
    forward_eval(out, in, gamma, beta, running_mean, running_var, n, c, hw, eps, 0);
}

void batchnorm_relu_forward_eval(float *out, const float *in, const float *gamma,
                                 const float *beta, const float *running_mean,
                                 const float *running_var, int n, int c, int hw,
                                 float eps)
{
    forward_eval(out, in, gamma, beta, running_mean, running_var, n, c, hw, eps, 1);
}

/* relu: a ReLU is fused after the batch norm (beta then not NULL); the
 * gradient reaching the batch norm is dout where the ReLU's input
 * x * scale + shift was > 0, else 0. That is recomputed from x with the
 * forward's own float operations (the same scale and shift, no contraction
 * under -std=c11), so it is the forward's mask exactly, without reading the
 * ReLU's output back.
 *
 * The backward is two passes: the sums per channel (batchnorm_backward_coef,
 * which keeps what the second pass needs in BN_COEFS floats a channel), then
 * din plane by plane (batchnorm_backward_plane), which a conv's backward may
 * run itself on each image (conv2d_backward_ex). */

/* Channel ch's scale and shift (the fused ReLU's: shift 0 without one). */
static void relu_affine(float *scale, float *shift, const float *beta, const float *gamma,
                        const float *save_mean, const float *save_rstd, int ch)
{
    *scale = gamma[ch] * save_rstd[ch];
    *shift = beta ? beta[ch] - save_mean[ch] * *scale : 0.0f;
}

/* The coefficients of a channel from the sums of dout and dout * xhat over
 * m values (every rank's when synchronised); dgamma, dbeta get this
 * process's own sums, local (the gradient allreduce adds the ranks'). */
static void coef_from_sums(float *cf, float *dgamma, float *dbeta, double sg, double sgx,
                           double m, double sg_own, double sgx_own, const float *beta,
                           const float *save_mean, const float *save_rstd, const float *gamma,
                           int ch)
{
    const float mean = save_mean[ch], rstd = save_rstd[ch];
    float scale, shift;
    relu_affine(&scale, &shift, beta, gamma, save_mean, save_rstd, ch);
    sgx *= rstd;
    sgx_own *= rstd;
    if (dbeta) dbeta[ch] += (float)sg_own;
    if (dgamma) dgamma[ch] += (float)sgx_own;
    /* din = gamma*rstd * (dout - mean(dout) - xhat * mean(dout*xhat)) */
    cf[BN_CF_MEAN] = mean, cf[BN_CF_RSTD] = rstd, cf[BN_CF_SCALE] = scale, cf[BN_CF_SHIFT] = shift;
    cf[BN_CF_K] = gamma[ch] * rstd;
    cf[BN_CF_GMEAN] = (float)(sg / m), cf[BN_CF_GXMEAN] = (float)(sgx / m);
    cf[BN_CF_RELU] = (float)(beta != NULL);
}

/* Channel ch's sums (dgamma, dbeta +=) and its BN_COEFS coefficients from
 * the plane sums in part (2 floats per plane, planes in (N, C) order), added
 * in image order. */
static void channel_coef(float *cf, float *dgamma, float *dbeta, const float *part,
                         const float *beta, const float *save_mean, const float *save_rstd,
                         const float *gamma, int n, int c, int hw, int ch)
{
    double sg, sgx; /* sum dout, sum dout * (x - mean) */
    channel_sums(&sg, &sgx, part, n, c, ch);
    coef_from_sums(cf, dgamma, dbeta, sg, sgx, (double)n * hw, sg, sgx, beta, save_mean,
                   save_rstd, gamma, ch);
}

void batchnorm_backward_coef(float *coef, float *dgamma, float *dbeta, const float *dout,
                             const float *beta, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, int n, int c, int hw,
                             float *work)
{
    /* the plane sums in memory order (images apart by C planes: reading
     * channel by channel would jump between short planes), then per channel */
    const long planes = (long)n * c;
    float *part = work;
#pragma omp parallel for schedule(static) if ((size_t)planes * hw >= BN_PAR_MIN)
    for (long q = 0; q < planes; q++) {
        const int ch = (int)(q % c);
        float scale, shift;
        relu_affine(&scale, &shift, beta, gamma, save_mean, save_rstd, ch);
        grad_sums(in + (size_t)q * hw, dout + (size_t)q * hw, hw, save_mean[ch], beta != NULL,
                  scale, shift, &part[2 * q], &part[2 * q + 1]);
    }
    for (int ch = 0; ch < c; ch++)
        channel_coef(coef + (size_t)ch * BN_COEFS, dgamma, dbeta, part, beta, save_mean,
                     save_rstd, gamma, n, c, hw, ch);
}

void batchnorm_backward_coef_sync(float *coef, float *dgamma, float *dbeta, const float *dout,
                                  const float *beta, const float *in, const float *save_mean,
                                  const float *save_rstd, const float *gamma, int n, int c,
                                  int hw, float *work, const bn_sync *sync)
{
    const long planes = (long)n * c;
    float *part = work;
    double *red = malloc((4 * (size_t)c + 1) * sizeof(double));
    assert(red && "out of memory for the synchronised batch-norm backward");
    double *own = red + 2 * c + 1;
#pragma omp parallel for schedule(static) if ((size_t)planes * hw >= BN_PAR_MIN)
    for (long q = 0; q < planes; q++) {
        const int ch = (int)(q % c);
        float scale, shift;
        relu_affine(&scale, &shift, beta, gamma, save_mean, save_rstd, ch);
        grad_sums(in + (size_t)q * hw, dout + (size_t)q * hw, hw, save_mean[ch], beta != NULL,
                  scale, shift, &part[2 * q], &part[2 * q + 1]);
    }
    for (int ch = 0; ch < c; ch++) {
        channel_sums(&red[2 * ch], &red[2 * ch + 1], part, n, c, ch);
        own[2 * ch] = red[2 * ch], own[2 * ch + 1] = red[2 * ch + 1];
    }
    red[2 * c] = (double)n * hw;
    sync->sum(sync->ctx, red, 2 * (size_t)c + 1);
    for (int ch = 0; ch < c; ch++)
        coef_from_sums(coef + (size_t)ch * BN_COEFS, dgamma, dbeta, red[2 * ch], red[2 * ch + 1],
                       red[2 * c], own[2 * ch], own[2 * ch + 1], beta, save_mean, save_rstd,
                       gamma, ch);
    free(red);
}

void batchnorm_backward_plane(float *dx, int set, const float *g, const float *x,
                              const float *cf, int hw)
{
    const float mean = cf[BN_CF_MEAN], rstd = cf[BN_CF_RSTD], scale = cf[BN_CF_SCALE];
    const float shift = cf[BN_CF_SHIFT], k = cf[BN_CF_K], gmean = cf[BN_CF_GMEAN];
    const float gxmean = cf[BN_CF_GXMEAN];
    const int relu = cf[BN_CF_RELU] != 0.0f;
    if (relu && set) {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float xhat = (x[j] - mean) * rstd;
            float v = x[j] * scale + shift;
            float gj = v > 0.0f ? g[j] : 0.0f;
            dx[j] = k * (gj - gmean - xhat * gxmean);
        }
    } else if (relu) {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float xhat = (x[j] - mean) * rstd;
            float v = x[j] * scale + shift;
            float gj = v > 0.0f ? g[j] : 0.0f;
            dx[j] += k * (gj - gmean - xhat * gxmean);
        }
    } else if (set) {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float xhat = (x[j] - mean) * rstd;
            dx[j] = k * (g[j] - gmean - xhat * gxmean);
        }
    } else {
#pragma omp simd
        for (int j = 0; j < hw; j++) {
            float xhat = (x[j] - mean) * rstd;
            dx[j] += k * (g[j] - gmean - xhat * gxmean);
        }
    }
}

/* overwrite: din = instead of +=. work: BN_BACKWARD_WORK_FLOATS(n, c), the
 * coefficients then the plane sums. */
static void backward(float *din, float *dgamma, float *dbeta,
                     const float *dout, const float *beta, const float *in,
                     const float *save_mean, const float *save_rstd,
                     const float *gamma, int n, int c, int hw, int overwrite, float *work)
{
    float *coef = work;
    batchnorm_backward_coef(coef, dgamma, dbeta, dout, beta, in, save_mean, save_rstd, gamma, n,
                            c, hw, work + BN_COEFS * (size_t)c);
    if (din) batchnorm_backward_planes(din, overwrite, dout, in, coef, n, c, hw);
}

void batchnorm_backward_planes(float *din, int set, const float *dout, const float *in,
                               const float *coef, int n, int c, int hw)
{
#pragma omp parallel for schedule(static) if ((size_t)n * c * hw >= BN_PAR_MIN)
    for (long q = 0; q < (long)n * c; q++)
        batchnorm_backward_plane(din + (size_t)q * hw, set, dout + (size_t)q * hw,
                                 in + (size_t)q * hw, coef + (size_t)(q % c) * BN_COEFS, hw);
}

void batchnorm_backward(float *din, float *dgamma, float *dbeta,
                        const float *dout, const float *in,
                        const float *save_mean, const float *save_rstd,
                        const float *gamma, int n, int c, int hw, float *work)
{
    backward(din, dgamma, dbeta, dout, NULL, in, save_mean, save_rstd, gamma, n, c, hw, 0,
             work);
}

void batchnorm_backward_overwrite(float *din, float *dgamma, float *dbeta,
                                  const float *dout, const float *in,
                                  const float *save_mean, const float *save_rstd,
                                  const float *gamma, int n, int c, int hw, float *work)
{
    backward(din, dgamma, dbeta, dout, NULL, in, save_mean, save_rstd, gamma, n, c, hw, 1,
             work);
}

void batchnorm_relu_backward(float *din, float *dgamma, float *dbeta,
                             const float *dout, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta,
                             int n, int c, int hw, float *work)
{
    backward(din, dgamma, dbeta, dout, beta, in, save_mean, save_rstd, gamma, n, c, hw, 0,
             work);
}

void batchnorm_relu_backward_overwrite(float *din, float *dgamma, float *dbeta,
                                       const float *dout, const float *in,
                                       const float *save_mean, const float *save_rstd,
                                       const float *gamma, const float *beta, int n, int c,
                                       int hw, float *work)
{
    backward(din, dgamma, dbeta, dout, beta, in, save_mean, save_rstd, gamma, n, c, hw, 1,
             work);
}
