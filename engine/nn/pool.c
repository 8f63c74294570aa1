/* Pooling: max pooling with a saved argmax (with or without padding),
 * windowed average pooling and global average pooling.
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

int pool2d_dims_init(pool2d_dims *d, int n, int c, int ih, int iw, int k, int stride, int pad)
{
    memset(d, 0, sizeof *d);
    if (n < 1 || c < 1 || ih < 1 || iw < 1 || k < 1 || stride < 1 || pad < 0 || pad > k - 1 ||
        ih + 2 * pad < k || iw + 2 * pad < k)
        return -1;
    *d = (pool2d_dims){.n = n, .c = c, .ih = ih, .iw = iw, .k = k, .stride = stride, .pad = pad,
                       .oh = (ih + 2 * pad - k) / stride + 1, .ow = (iw + 2 * pad - k) / stride + 1};
    return 0;
}

/* The window of output (oy, ox) clipped to the input: rows [*y0, *y1),
 * columns [*x0, *x1). Not empty, since pad <= k - 1. */
static void pool_window(const pool2d_dims *d, int oy, int ox, int *y0, int *y1, int *x0,
                        int *x1)
{
    const int ys = oy * d->stride - d->pad, xs = ox * d->stride - d->pad;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ys + d->k > d->ih ? d->ih : ys + d->k;
    *x1 = xs + d->k > d->iw ? d->iw : xs + d->k;
}

void maxpool2d_forward(float *out, int32_t *argmax, const float *in, const pool2d_dims *d)
{
    if (d->pad == 0) {
        maxpool_forward(out, argmax, in, d->n, d->c, d->ih, d->iw, d->k, d->stride, d->oh, d->ow);
        return;
    }
    const int planes = d->n * d->c, iw = d->iw;
    const size_t isz = (size_t)d->ih * iw, osz = (size_t)d->oh * d->ow;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        const float *x = in + p * isz;
        float *y = out + p * osz;
        int32_t *am = argmax + p * osz;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int y0, y1, x0, x1;
                pool_window(d, oy, ox, &y0, &y1, &x0, &x1);
                /* the window's first input cell, then strict >: as
                 * maxpool_forward, over the cells inside the input */
                int best = y0 * iw + x0;
                float bv = x[best];
                for (int yy = y0; yy < y1; yy++)
                    for (int xx = x0; xx < x1; xx++)
                        if (x[yy * iw + xx] > bv) {
                            bv = x[yy * iw + xx];
                            best = yy * iw + xx;
                        }
                y[oy * d->ow + ox] = bv;
                am[oy * d->ow + ox] = best;
            }
    }
}

static float avg_count(const pool2d_dims *d, int y0, int y1, int x0, int x1, int include_pad)
{
    return include_pad ? (float)(d->k * d->k) : (float)((y1 - y0) * (x1 - x0));
}

void avgpool2d_forward(float *out, const float *in, const pool2d_dims *d, int count_include_pad)
{
    const int planes = d->n * d->c, iw = d->iw;
    const size_t isz = (size_t)d->ih * iw, osz = (size_t)d->oh * d->ow;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        const float *x = in + p * isz;
        float *y = out + p * osz;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int y0, y1, x0, x1;
                pool_window(d, oy, ox, &y0, &y1, &x0, &x1);
                float s = 0.0f;
                for (int yy = y0; yy < y1; yy++)
                    for (int xx = x0; xx < x1; xx++) s += x[yy * iw + xx];
                y[oy * d->ow + ox] = s / avg_count(d, y0, y1, x0, x1, count_include_pad);
            }
    }
}

void avgpool2d_backward(float *din, const float *dout, const pool2d_dims *d,
                        int count_include_pad)
{
    const int planes = d->n * d->c, iw = d->iw;
    const size_t isz = (size_t)d->ih * iw, osz = (size_t)d->oh * d->ow;
#pragma omp parallel for schedule(dynamic, 16) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        float *dx = din + p * isz;
        const float *g = dout + p * osz;
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                int y0, y1, x0, x1;
                pool_window(d, oy, ox, &y0, &y1, &x0, &x1);
                const float v = g[oy * d->ow + ox] /
                                avg_count(d, y0, y1, x0, x1, count_include_pad);
                for (int yy = y0; yy < y1; yy++)
                    for (int xx = x0; xx < x1; xx++) dx[yy * iw + xx] += v;
            }
    }
}
