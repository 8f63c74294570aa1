/* Pooling: max pooling with a saved argmax, and global average pooling.
 * Work is split by (n, c) plane over OpenMP threads; every plane is written
 * by one thread, so results do not depend on the thread count. */
#include "core/vsum.h"
#include "nn/layers.h"

#include <string.h>

#define POOL_PAR_MIN 32768

void maxpool_forward(float *out, int32_t *argmax, const float *in, int n,
                     int c, int ih, int iw, int k, int stride, int oh, int ow)
{
    const int planes = n * c;
    const size_t isz = (size_t)ih * iw, osz = (size_t)oh * ow;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        const float *x = in + p * isz;
        float *y = out + p * osz;
        int32_t *am = argmax + p * osz;
        if (k == 2 && stride == 2) {
            /* the common 2x2 window, unrolled; same tie and NaN rules */
            for (int oy = 0; oy < oh; oy++) {
                const float *r0 = x + (size_t)(2 * oy) * iw, *r1 = r0 + iw;
                const int base = 2 * oy * iw;
#pragma omp simd
                for (int ox = 0; ox < ow; ox++) {
                    float bv = r0[2 * ox];
                    int best = base + 2 * ox;
                    float v = r0[2 * ox + 1];
                    best = v > bv ? base + 2 * ox + 1 : best;
                    bv = v > bv ? v : bv;
                    v = r1[2 * ox];
                    best = v > bv ? base + iw + 2 * ox : best;
                    bv = v > bv ? v : bv;
                    v = r1[2 * ox + 1];
                    best = v > bv ? base + iw + 2 * ox + 1 : best;
                    bv = v > bv ? v : bv;
                    y[oy * ow + ox] = bv;
                    am[oy * ow + ox] = best;
                }
            }
            continue;
        }
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                int y0 = oy * stride, x0 = ox * stride;
                int best = y0 * iw + x0;
                float bv = x[best];
                for (int ki = 0; ki < k; ki++) {
                    const float *row = x + (size_t)(y0 + ki) * iw + x0;
                    for (int kj = 0; kj < k; kj++) {
                        /* strict >: the first maximum wins ties; a NaN never
                         * wins, so it propagates only from the first slot. */
                        if (row[kj] > bv) {
                            bv = row[kj];
                            best = (y0 + ki) * iw + x0 + kj;
                        }
                    }
                }
                y[oy * ow + ox] = bv;
                am[oy * ow + ox] = best;
            }
        }
    }
}

static void pool_backward(float *din, const float *dout, const int32_t *argmax,
                          int n, int c, int ih, int iw, int oh, int ow, int overwrite)
{
    const int planes = n * c;
    const size_t isz = (size_t)ih * iw, osz = (size_t)oh * ow;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        float *dx = din + p * isz;
        const float *g = dout + p * osz;
        const int32_t *am = argmax + p * osz;
        if (overwrite) memset(dx, 0, isz * sizeof *dx);
        for (size_t j = 0; j < osz; j++) dx[am[j]] += g[j];
    }
}

void maxpool_backward(float *din, const float *dout, const int32_t *argmax,
                      int n, int c, int ih, int iw, int oh, int ow)
{
    pool_backward(din, dout, argmax, n, c, ih, iw, oh, ow, 0);
}

void maxpool_backward_overwrite(float *din, const float *dout,
                                const int32_t *argmax, int n, int c, int ih,
                                int iw, int oh, int ow)
{
    pool_backward(din, dout, argmax, n, c, ih, iw, oh, ow, 1);
}

void avgpool_forward(float *out, const float *in, int n, int c, int hw)
{
    const int planes = n * c;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if ((size_t)planes * hw >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        out[p] = vsum_sum(in + (size_t)p * hw, hw) * inv;
    }
}

static void avg_backward(float *din, const float *dout, int n, int c, int hw, int set)
{
    const int planes = n * c;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if ((size_t)planes * hw >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        float *dx = din + (size_t)p * hw;
        const float g = dout[p] * inv;
        if (set) {
#pragma omp simd
            for (int j = 0; j < hw; j++) dx[j] = g;
        } else {
#pragma omp simd
            for (int j = 0; j < hw; j++) dx[j] += g;
        }
    }
}

void avgpool_backward(float *din, const float *dout, int n, int c, int hw)
{
    avg_backward(din, dout, n, c, hw, 0);
}

void avgpool_backward_overwrite(float *din, const float *dout, int n, int c, int hw)
{
    avg_backward(din, dout, n, c, hw, 1);
}
