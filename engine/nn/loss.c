/* Losses: softmax cross-entropy and Hinton's distillation loss, both a mean
 * over the batch. Losses are computed from log-softmax (max-subtracted) in
 * double, so neither overflows nor loses the small terms. Row sizes are tiny
 * (K classes), so these run on one thread. */
#include "nn/layers.h"

#include <assert.h>
#include <math.h>

/* p (K) = softmax(x * inv_t); returns log(sum(exp(x*inv_t - max))) + max,
 * i.e. the log-partition, so log p_j = x_j * inv_t - lse. */
static double softmax_row(float *p, const float *x, int k, double inv_t)
{
    double mx = x[0] * inv_t;
    for (int j = 1; j < k; j++)
        if (x[j] * inv_t > mx) mx = x[j] * inv_t;
    double s = 0.0;
    for (int j = 0; j < k; j++) s += exp(x[j] * inv_t - mx);
    for (int j = 0; j < k; j++) p[j] = (float)(exp(x[j] * inv_t - mx) / s);
    return mx + log(s);
}

float xent_forward(float *probs, const float *logits, const int32_t *labels,
                   int n, int k)
{
    double loss = 0.0;
    for (int i = 0; i < n; i++) {
        const float *x = logits + (size_t)i * k;
        assert(labels[i] >= 0 && labels[i] < k);
        double lse = softmax_row(probs + (size_t)i * k, x, k, 1.0);
        loss += lse - x[labels[i]];
    }
    return (float)(loss / n);
}

void xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                   int n, int k, float scale)
{
    const float f = scale / (float)n;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        float *g = dlogits + (size_t)i * k;
        for (int j = 0; j < k; j++) g[j] += f * (p[j] - (j == labels[i]));
    }
}

float distill_forward(float *probs_s, float *probs_t, const float *logits_s,
                      const float *logits_t, int n, int k, float temperature)
{
    const double inv_t = 1.0 / temperature;
    double loss = 0.0;
    for (int i = 0; i < n; i++) {
        const float *s = logits_s + (size_t)i * k, *t = logits_t + (size_t)i * k;
        double lse_s = softmax_row(probs_s + (size_t)i * k, s, k, inv_t);
        double lse_t = softmax_row(probs_t + (size_t)i * k, t, k, inv_t);
        for (int j = 0; j < k; j++) {
            double log_pt = t[j] * inv_t - lse_t;
            double log_ps = s[j] * inv_t - lse_s;
            loss += exp(log_pt) * (log_pt - log_ps);
        }
    }
    return (float)(loss * temperature * temperature / n);
}

void distill_backward(float *dlogits_s, const float *probs_s,
                      const float *probs_t, int n, int k, float temperature,
                      float scale)
{
    const float f = scale * temperature / (float)n;
    for (size_t i = 0; i < (size_t)n * k; i++)
        dlogits_s[i] += f * (probs_s[i] - probs_t[i]);
}
