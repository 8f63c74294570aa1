/* A batch norm's input gradient written straight into a channel-blocked
 * layout (layers.h, batchnorm_backward_blocked): the output gradient of the
 * oneDNN conv before it, which would otherwise be written as NCHW planes
 * and reordered. Built for both vector widths (core/isa.h): 16 positions
 * of 16 channels through a 16x16 transpose where the CPU has AVX-512, 8 of
 * 8 elsewhere; both compute batchnorm_backward_plane's operations on each
 * element, so all paths give its bits. */
#include "nn/layers.h"

#include <assert.h>
#include <string.h>

#include "core/isa.h"
#include "core/vtrans.h"

/* Compiled twice, for the base and the avx512 path (core/isa.h). */
#define BNBLOCK_FUNCS(V, R)                                                                     \
    V(void, batchnorm_backward_blocked, (float *dst, int block, const float *dout,             \
      const float *in, const float *coef, int nc, size_t hw), (dst, block, dout, in, coef, nc, hw))
ISA_VARIANTS(BNBLOCK_FUNCS)

/* One element: batchnorm_backward_plane's set variants. */
static inline float bn_grad(float g, float x, const float *cf)
{
    const float xhat = (x - cf[BN_CF_MEAN]) * cf[BN_CF_RSTD];
    if (cf[BN_CF_RELU] != 0.0f) {
        const float v = x * cf[BN_CF_SCALE] + cf[BN_CF_SHIFT];
        g = v > 0.0f ? g : 0.0f;
    }
    return cf[BN_CF_K] * (g - cf[BN_CF_GMEAN] - xhat * cf[BN_CF_GXMEAN]);
}

#if defined(__AVX2__)
/* bn_grad on 8 positions of one channel. */
static inline __attribute__((always_inline)) __m256 bn_grad8(__m256 g, __m256 x, const float *cf)
{
    const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(x, _mm256_set1_ps(cf[BN_CF_MEAN])),
                                      _mm256_set1_ps(cf[BN_CF_RSTD]));
    if (cf[BN_CF_RELU] != 0.0f) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(cf[BN_CF_SCALE])),
                                       _mm256_set1_ps(cf[BN_CF_SHIFT]));
        g = _mm256_and_ps(g, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ));
    }
    const __m256 t = _mm256_sub_ps(_mm256_sub_ps(g, _mm256_set1_ps(cf[BN_CF_GMEAN])),
                                   _mm256_mul_ps(xhat, _mm256_set1_ps(cf[BN_CF_GXMEAN])));
    return _mm256_mul_ps(_mm256_set1_ps(cf[BN_CF_K]), t);
}
#endif

#if defined(__AVX512F__)
static inline __attribute__((always_inline)) __m512 bn_grad16(__m512 g, __m512 x, const float *cf)
{
    const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(x, _mm512_set1_ps(cf[BN_CF_MEAN])),
                                      _mm512_set1_ps(cf[BN_CF_RSTD]));
    if (cf[BN_CF_RELU] != 0.0f) {
        const __m512 v = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(cf[BN_CF_SCALE])),
                                       _mm512_set1_ps(cf[BN_CF_SHIFT]));
        g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), g);
    }
    const __m512 t = _mm512_sub_ps(_mm512_sub_ps(g, _mm512_set1_ps(cf[BN_CF_GMEAN])),
                                   _mm512_mul_ps(xhat, _mm512_set1_ps(cf[BN_CF_GXMEAN])));
    return _mm512_mul_ps(_mm512_set1_ps(cf[BN_CF_K]), t);
}
#endif

void batchnorm_backward_blocked(float *dst, int block, const float *dout, const float *in,
                                const float *coef, int nc, size_t hw)
{
    assert(dst && dout && in && coef && block >= 1 && nc >= 0 && nc <= block);
    size_t p = 0;
#if defined(__AVX512F__)
    if (block == 16)
        for (; p + 16 <= hw; p += 16) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++)
                v[c] = c < nc ? bn_grad16(_mm512_loadu_ps(dout + hw * c + p),
                                          _mm512_loadu_ps(in + hw * c + p),
                                          coef + (size_t)c * BN_COEFS)
                              : _mm512_setzero_ps();
            transpose16(v);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) _mm512_storeu_ps(dst + (p + j) * 16, v[j]);
        }
#endif
#if defined(__AVX2__)
    if (block % 8 == 0)
        for (; p + 8 <= hw; p += 8)
            for (int c8 = 0; c8 < block; c8 += 8) {
                __m256 v[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    const int c = c8 + i;
                    v[i] = c < nc ? bn_grad8(_mm256_loadu_ps(dout + hw * c + p),
                                             _mm256_loadu_ps(in + hw * c + p),
                                             coef + (size_t)c * BN_COEFS)
                                  : _mm256_setzero_ps();
                }
                transpose8(v);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    _mm256_storeu_ps(dst + (p + j) * (size_t)block + c8, v[j]);
            }
#endif
    for (; p < hw; p++)
        for (int c = 0; c < block; c++)
            dst[p * block + c] = c < nc ? bn_grad(dout[hw * c + p], in[hw * c + p],
                                                  coef + (size_t)c * BN_COEFS)
                                        : 0.0f;
}
