/* Pooling: max pooling with a saved argmax, and global average pooling.
 * Work is split by (n, c) plane over OpenMP threads; every plane is written
 * by one thread, so results do not depend on the thread count. */
#include "layers.h"

#define POOL_PAR_MIN 32768

void maxpool_forward(float *out, int32_t *argmax, const float *in, int n,
                     int c, int ih, int iw, int k, int stride, int oh, int ow)
{
    const int planes = n * c;
    const size_t isz = (size_t)ih * iw, osz = (size_t)oh * ow;
#pragma omp parallel for schedule(static) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        const float *x = in + p * isz;
        float *y = out + p * osz;
        int32_t *am = argmax + p * osz;
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

void maxpool_backward(float *din, const float *dout, const int32_t *argmax,
                      int n, int c, int ih, int iw, int oh, int ow)
{
    const int planes = n * c;
    const size_t isz = (size_t)ih * iw, osz = (size_t)oh * ow;
#pragma omp parallel for schedule(static) if ((size_t)planes * isz >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        float *dx = din + p * isz;
        const float *g = dout + p * osz;
        const int32_t *am = argmax + p * osz;
        for (size_t j = 0; j < osz; j++) dx[am[j]] += g[j];
    }
}

void avgpool_forward(float *out, const float *in, int n, int c, int hw)
{
    const int planes = n * c;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if ((size_t)planes * hw >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        const float *x = in + (size_t)p * hw;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < hw; j++) s += x[j];
        out[p] = s * inv;
    }
}

void avgpool_backward(float *din, const float *dout, int n, int c, int hw)
{
    const int planes = n * c;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) if ((size_t)planes * hw >= POOL_PAR_MIN)
    for (int p = 0; p < planes; p++) {
        float *dx = din + (size_t)p * hw;
        const float g = dout[p] * inv;
#pragma omp simd
        for (int j = 0; j < hw; j++) dx[j] += g;
    }
}
