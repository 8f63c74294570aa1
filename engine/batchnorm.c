/* batchnorm2d over (N, C, HW) with PyTorch semantics.
 *
 * Work is split by channel over OpenMP threads: each channel's statistics
 * are computed by one thread in a fixed order, so results do not depend on
 * the thread count. Sums run in float within one (n, c) plane (vectorised)
 * and in double across planes. Training forward reads the input twice: once
 * for the sums of x - k and (x - k)^2, k being the mean of the channel's
 * first plane (so the variance does not cancel away when the mean is large
 * relative to the spread), once to normalise. */
#include "layers.h"

#include <math.h>

#include "vsum.h"

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

static void forward_train(float *out, float *save_mean, float *save_rstd,
                          float *running_mean, float *running_var,
                          const float *in, const float *gamma, const float *beta,
                          int n, int c, int hw, float momentum, float eps,
                          int relu)
{
    const size_t plane = (size_t)hw, cstride = (size_t)c * hw;
    const double m = (double)n * hw;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)n * cstride >= BN_PAR_MIN)
    for (int ch = 0; ch < c; ch++) {
        /* one pass over the channel for both moments, of x - k where k is
         * the first plane's mean: with k near the batch mean, the shifted
         * sum of squares loses no more than the two-pass form would */
        const float k = vsum_sum(in + ch * plane, hw) / (float)hw;
        double sum = 0.0, sum2 = 0.0;
        for (int i = 0; i < n; i++) {
            float s1, s2;
            shifted_sums(in + i * cstride + ch * plane, hw, k, &s1, &s2);
            sum += s1;
            sum2 += s2;
        }
        const double dmean = sum / m; /* mean - k */
        const double mean = (double)k + dmean;
        const float meanf = (float)mean;
        double ss = sum2 - dmean * sum; /* sum of (x - mean)^2 */
        if (ss < 0.0) ss = 0.0;
        const double var = ss / m; /* biased: used to normalise */
        const float rstd = (float)(1.0 / sqrt(var + eps));
        const float scale = gamma[ch] * rstd;
        const float shift = beta[ch] - meanf * scale;
        for (int i = 0; i < n; i++) {
            const float *x = in + i * cstride + ch * plane;
            float *y = out + i * cstride + ch * plane;
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
        save_mean[ch] = meanf;
        save_rstd[ch] = rstd;
        if (running_mean)
            running_mean[ch] = (1.0f - momentum) * running_mean[ch] +
                               momentum * meanf;
        if (running_var) {
            double unbiased = m > 1.0 ? ss / (m - 1.0) : var;
            running_var[ch] = (1.0f - momentum) * running_var[ch] +
                              momentum * (float)unbiased;
        }
    }
}

void batchnorm_forward_train(float *out, float *save_mean, float *save_rstd,
                             float *running_mean, float *running_var,
                             const float *in, const float *gamma,
                             const float *beta, int n, int c, int hw,
                             float momentum, float eps)
{
    forward_train(out, save_mean, save_rstd, running_mean, running_var, in, gamma,
                  beta, n, c, hw, momentum, eps, 0);
}

void batchnorm_relu_forward_train(float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var,
                                  const float *in, const float *gamma,
                                  const float *beta, int n, int c, int hw,
                                  float momentum, float eps)
{
    forward_train(out, save_mean, save_rstd, running_mean, running_var, in, gamma,
                  beta, n, c, hw, momentum, eps, 1);
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
        const float *x = in + p * plane;
        float *y = out + p * plane;
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
 * ReLU's output back. */
/* overwrite: din = instead of +=. */
static void backward(float *din, float *dgamma, float *dbeta,
                     const float *dout, const float *beta, const float *in,
                     const float *save_mean, const float *save_rstd,
                     const float *gamma, int n, int c, int hw, int overwrite)
{
    const size_t plane = (size_t)hw, cstride = (size_t)c * hw;
    const double m = (double)n * hw;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)n * cstride >= BN_PAR_MIN)
    for (int ch = 0; ch < c; ch++) {
        const float mean = save_mean[ch], rstd = save_rstd[ch];
        const int relu = beta != NULL;
        const float scale = gamma[ch] * rstd, shift = relu ? beta[ch] - mean * scale : 0.0f;
        double sg = 0.0, sgx = 0.0; /* sum dout, sum dout * xhat */
        for (int i = 0; i < n; i++) {
            float a, b;
            grad_sums(in + i * cstride + ch * plane, dout + i * cstride + ch * plane, hw, mean,
                      relu, scale, shift, &a, &b);
            sg += a;
            sgx += b;
        }
        sgx *= rstd;
        if (dbeta) dbeta[ch] += (float)sg;
        if (dgamma) dgamma[ch] += (float)sgx;
        if (!din) continue;
        /* din = gamma*rstd * (dout - mean(dout) - xhat * mean(dout*xhat)) */
        const float k = gamma[ch] * rstd;
        const float gmean = (float)(sg / m), gxmean = (float)(sgx / m);
        for (int i = 0; i < n; i++) {
            const float *x = in + i * cstride + ch * plane;
            const float *g = dout + i * cstride + ch * plane;
            float *dx = din + i * cstride + ch * plane;
            if (relu && overwrite) {
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
            } else if (overwrite) {
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
    }
}

void batchnorm_backward(float *din, float *dgamma, float *dbeta,
                        const float *dout, const float *in,
                        const float *save_mean, const float *save_rstd,
                        const float *gamma, int n, int c, int hw)
{
    backward(din, dgamma, dbeta, dout, NULL, in, save_mean, save_rstd, gamma, n, c, hw, 0);
}

void batchnorm_backward_overwrite(float *din, float *dgamma, float *dbeta,
                                  const float *dout, const float *in,
                                  const float *save_mean, const float *save_rstd,
                                  const float *gamma, int n, int c, int hw)
{
    backward(din, dgamma, dbeta, dout, NULL, in, save_mean, save_rstd, gamma, n, c, hw, 1);
}

void batchnorm_relu_backward(float *din, float *dgamma, float *dbeta,
                             const float *dout, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta,
                             int n, int c, int hw)
{
    backward(din, dgamma, dbeta, dout, beta, in, save_mean, save_rstd, gamma, n, c, hw, 0);
}

void batchnorm_relu_backward_overwrite(float *din, float *dgamma, float *dbeta,
                                       const float *dout, const float *in,
                                       const float *save_mean, const float *save_rstd,
                                       const float *gamma, const float *beta, int n, int c,
                                       int hw)
{
    backward(din, dgamma, dbeta, dout, beta, in, save_mean, save_rstd, gamma, n, c, hw, 1);
}
