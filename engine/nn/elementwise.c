/* Elementwise layers: relu, the residual add, and the two fused; clip
 * (ReLU6), leaky relu, scaling by a constant, and concatenation along
 * channels.
 * Memory-bound loops, split over OpenMP threads once they are large enough
 * to pay for the fork, and written so the compiler vectorises them. */
#include "nn/layers.h"

#include <string.h>

#define EW_PAR_MIN 65536
/* Elements per work chunk: threads take chunks dynamically, so one that the
 * OS preempts does not hold up the loop. */
#define EW_CHUNK 16384

void relu_forward(float *out, const float *in, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void relu_backward(float *din, const float *dout, const float *out, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void relu_backward_overwrite(float *din, const float *dout, const float *out, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

void add_forward(float *out, const float *a, const float *b, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}

/* set: = instead of += */
static void add_into(float *d, const float *dout, size_t count, int set)
{
    if (set) {
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
        for (size_t i = 0; i < count; i++) d[i] = dout[i];
    } else {
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
        for (size_t i = 0; i < count; i++) d[i] += dout[i];
    }
}

void add_backward(float *da, float *db, const float *dout, size_t count)
{
    add_backward_overwrite(da, 0, db, 0, dout, count);
}

void add_backward_overwrite(float *da, int set_a, float *db, int set_b, const float *dout,
                            size_t count)
{
    if (da) add_into(da, dout, count, set_a);
    if (db) add_into(db, dout, count, set_b);
}

void add_relu_forward(float *out, const float *a, const float *b, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float v = a[i] + b[i];
        out[i] = v > 0.0f ? v : 0.0f;
    }
}

void add_relu_backward(float *da, int set_a, float *db, int set_b, const float *dout,
                       const float *out, size_t count)
{
    if (da && db && set_a && set_b) {
        /* the common case (a residual block's two branches): one pass */
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
        for (size_t i = 0; i < count; i++) {
            const float g = out[i] > 0.0f ? dout[i] : 0.0f;
            da[i] = g;
            db[i] = g;
        }
        return;
    }
    /* otherwise a ReLU backward per side, each of whose loops vectorises */
    if (da) (set_a ? relu_backward_overwrite : relu_backward)(da, dout, out, count);
    if (db) (set_b ? relu_backward_overwrite : relu_backward)(db, dout, out, count);
}

void clip_forward(float *out, const float *in, size_t count, float lo, float hi)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        /* NaN stays NaN, as torch.clamp */
        const float v = in[i] < lo ? lo : in[i];
        out[i] = v > hi ? hi : v;
    }
}

void clip_backward(float *din, const float *dout, const float *out, size_t count, float lo,
                   float hi)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] += out[i] > lo && out[i] < hi ? dout[i] : 0.0f;
}

void leakyrelu_forward(float *out, const float *in, size_t count, float alpha)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) out[i] = in[i] > 0.0f ? in[i] : alpha * in[i];
}

void leakyrelu_backward(float *din, const float *dout, const float *in, size_t count,
                        float alpha)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] += in[i] > 0.0f ? dout[i] : alpha * dout[i];
}

void scale_forward(float *out, const float *in, size_t count, float value)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) out[i] = value * in[i];
}

void scale_backward(float *din, const float *dout, size_t count, float value)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] += value * dout[i];
}

/* Channels before input j in the concatenated output, and in all. */
static size_t concat_offset(const int *c, int j)
{
    size_t off = 0;
    for (int t = 0; t < j; t++) off += (size_t)c[t];
    return off;
}

void concat_forward(float *out, const float *const *in, const int *c, int k, int n, int hw)
{
    const size_t oc = concat_offset(c, k);
#pragma omp parallel for schedule(static) if ((size_t)n * oc * hw >= EW_PAR_MIN)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            const size_t len = (size_t)c[j] * hw;
            memcpy(out + ((size_t)i * oc + concat_offset(c, j)) * hw, in[j] + (size_t)i * len,
                   len * sizeof *out);
        }
}

void concat_backward(float *const *din, const float *dout, const int *c, int k, int n, int hw)
{
    const size_t oc = concat_offset(c, k);
    /* input by input: one buffer given twice gets its two slices in turn */
    for (int j = 0; j < k; j++) {
        if (!din[j]) continue;
        const size_t len = (size_t)c[j] * hw, at = concat_offset(c, j) * hw;
        float *dx = din[j];
#pragma omp parallel for schedule(static) if ((size_t)n * len >= EW_PAR_MIN)
        for (int i = 0; i < n; i++) {
            const float *g = dout + (size_t)i * oc * hw + at;
            float *d = dx + (size_t)i * len;
#pragma omp simd
            for (size_t t = 0; t < len; t++) d[t] += g[t];
        }
    }
}
