/* Kernels of the direct convolution path (dconv.h): an AVX2/FMA version
 * where the compiler targets it (the default build, -march=x86-64-v3) and a
 * portable one with the same loop structure and summation order per output.
 * The integer product on codes, dconv_igemm, is in dconv_codes.c. */
#include "nn/dconv.h"

#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DCONV_AVX2 1
#else
#define DCONV_AVX2 0
#endif

size_t dconv_packed_floats(int m, int k)
{
    size_t panels = (size_t)(m + DCONV_MR - 1) / DCONV_MR;
    return panels * (size_t)k * DCONV_MR;
}

void dconv_pack_a(float *ap, const float *a, int m, int k, size_t lda)
{
    for (int p = 0; p * DCONV_MR < m; p++) {
        float *dst = ap + (size_t)p * k * DCONV_MR;
        for (int kk = 0; kk < k; kk++)
            for (int r = 0; r < DCONV_MR; r++) {
                int i = p * DCONV_MR + r;
                dst[(size_t)kk * DCONV_MR + r] = i < m ? a[(size_t)i * lda + kk] : 0.0f;
            }
    }
}


size_t dconv_packed_codes(int m, int kpairs)
{
    size_t panels = (size_t)(m + DCONV_MR - 1) / DCONV_MR;
    return panels * (size_t)kpairs * DCONV_MR;
}

void dconv_pack_codes(int16_t *ap, const int32_t *codes, int m, int ic, int kh, int kw)
{
    const int taps = kh * kw, kpairs = (ic + 1) / 2 * taps;
    for (int p = 0; p * DCONV_MR < m; p++) {
        int16_t *dst = ap + (size_t)p * kpairs * DCONV_MR;
        for (int kp = 0; kp < kpairs; kp++) {
            const int c0 = kp / taps * 2, t = kp % taps;
            for (int r = 0; r < DCONV_MR; r++) {
                const int i = p * DCONV_MR + r;
                int lo = 0, hi = 0;
                if (i < m) {
                    lo = codes[((size_t)i * ic + c0) * taps + t];
                    if (c0 + 1 < ic) hi = codes[((size_t)i * ic + c0 + 1) * taps + t];
                }
                dst[(size_t)kp * DCONV_MR + r] =
                    (int16_t)(uint16_t)((uint8_t)(int8_t)lo | (uint16_t)((uint8_t)(int8_t)hi << 8));
            }
        }
    }
}

#if DCONV_AVX2

void dconv_gemm(float *c, size_t ldc, const float *ap, int m, int k,
                const float *b, const int *off, int nb)
{
    for (int p = 0; p * DCONV_MR < m; p++) {
        const float *a = ap + (size_t)p * k * DCONV_MR;
        const int mr = m - p * DCONV_MR < DCONV_MR ? m - p * DCONV_MR : DCONV_MR;
        float *cp = c + (size_t)p * DCONV_MR * ldc;
        int j = 0;
        for (; j + DCONV_NB <= nb; j += DCONV_NB) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00;
            __m256 c10 = c00, c11 = c00, c12 = c00;
            __m256 c20 = c00, c21 = c00, c22 = c00;
            __m256 c30 = c00, c31 = c00, c32 = c00;
            for (int kk = 0; kk < k; kk++) {
                const float *bp = b + off[kk] + j;
                const float *av = a + (size_t)kk * DCONV_MR;
                __m256 b0 = _mm256_loadu_ps(bp);
                __m256 b1 = _mm256_loadu_ps(bp + 8);
                __m256 b2 = _mm256_loadu_ps(bp + 16);
                __m256 x = _mm256_broadcast_ss(av);
                c00 = _mm256_fmadd_ps(x, b0, c00);
                c01 = _mm256_fmadd_ps(x, b1, c01);
                c02 = _mm256_fmadd_ps(x, b2, c02);
                x = _mm256_broadcast_ss(av + 1);
                c10 = _mm256_fmadd_ps(x, b0, c10);
                c11 = _mm256_fmadd_ps(x, b1, c11);
                c12 = _mm256_fmadd_ps(x, b2, c12);
                x = _mm256_broadcast_ss(av + 2);
                c20 = _mm256_fmadd_ps(x, b0, c20);
                c21 = _mm256_fmadd_ps(x, b1, c21);
                c22 = _mm256_fmadd_ps(x, b2, c22);
                x = _mm256_broadcast_ss(av + 3);
                c30 = _mm256_fmadd_ps(x, b0, c30);
                c31 = _mm256_fmadd_ps(x, b1, c31);
                c32 = _mm256_fmadd_ps(x, b2, c32);
            }
            float *r0 = cp + j;
            _mm256_storeu_ps(r0, c00), _mm256_storeu_ps(r0 + 8, c01), _mm256_storeu_ps(r0 + 16, c02);
            if (mr > 1) {
                float *r1 = r0 + ldc;
                _mm256_storeu_ps(r1, c10), _mm256_storeu_ps(r1 + 8, c11), _mm256_storeu_ps(r1 + 16, c12);
            }
            if (mr > 2) {
                float *r2 = r0 + 2 * ldc;
                _mm256_storeu_ps(r2, c20), _mm256_storeu_ps(r2 + 8, c21), _mm256_storeu_ps(r2 + 16, c22);
            }
            if (mr > 3) {
                float *r3 = r0 + 3 * ldc;
                _mm256_storeu_ps(r3, c30), _mm256_storeu_ps(r3 + 8, c31), _mm256_storeu_ps(r3 + 16, c32);
            }
        }
        /* the last 16 or 8 columns */
        if (j + 16 <= nb) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00;
            __m256 c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            for (int kk = 0; kk < k; kk++) {
                const float *bp = b + off[kk] + j;
                const float *av = a + (size_t)kk * DCONV_MR;
                __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
                __m256 x = _mm256_broadcast_ss(av);
                c00 = _mm256_fmadd_ps(x, b0, c00);
                c01 = _mm256_fmadd_ps(x, b1, c01);
                x = _mm256_broadcast_ss(av + 1);
                c10 = _mm256_fmadd_ps(x, b0, c10);
                c11 = _mm256_fmadd_ps(x, b1, c11);
                x = _mm256_broadcast_ss(av + 2);
                c20 = _mm256_fmadd_ps(x, b0, c20);
                c21 = _mm256_fmadd_ps(x, b1, c21);
                x = _mm256_broadcast_ss(av + 3);
                c30 = _mm256_fmadd_ps(x, b0, c30);
                c31 = _mm256_fmadd_ps(x, b1, c31);
            }
            float *r0 = cp + j;
            _mm256_storeu_ps(r0, c00), _mm256_storeu_ps(r0 + 8, c01);
            if (mr > 1) _mm256_storeu_ps(r0 + ldc, c10), _mm256_storeu_ps(r0 + ldc + 8, c11);
            if (mr > 2)
                _mm256_storeu_ps(r0 + 2 * ldc, c20), _mm256_storeu_ps(r0 + 2 * ldc + 8, c21);
            if (mr > 3)
                _mm256_storeu_ps(r0 + 3 * ldc, c30), _mm256_storeu_ps(r0 + 3 * ldc + 8, c31);
        } else if (j < nb) {
            __m256 c00 = _mm256_setzero_ps(), c10 = c00, c20 = c00, c30 = c00;
            for (int kk = 0; kk < k; kk++) {
                const __m256 b0 = _mm256_loadu_ps(b + off[kk] + j);
                const float *av = a + (size_t)kk * DCONV_MR;
                c00 = _mm256_fmadd_ps(_mm256_broadcast_ss(av), b0, c00);
                c10 = _mm256_fmadd_ps(_mm256_broadcast_ss(av + 1), b0, c10);
                c20 = _mm256_fmadd_ps(_mm256_broadcast_ss(av + 2), b0, c20);
                c30 = _mm256_fmadd_ps(_mm256_broadcast_ss(av + 3), b0, c30);
            }
            float *r0 = cp + j;
            _mm256_storeu_ps(r0, c00);
            if (mr > 1) _mm256_storeu_ps(r0 + ldc, c10);
            if (mr > 2) _mm256_storeu_ps(r0 + 2 * ldc, c20);
            if (mr > 3) _mm256_storeu_ps(r0 + 3 * ldc, c30);
        }
    }
}

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One (row, tap) pair: the leftovers of the 4 x 3 blocks. */
static float dot_one(const float *d, const float *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(d + j), _mm256_loadu_ps(b + j), acc);
    float s = hsum(acc);
    for (; j < n; j++) s += d[j] * b[j];
    return s;
}

/* The sums of four accumulators, one per lane of the result. */
static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

void dconv_wgrad(float *dw, size_t ldw, int m, int k, const float *d,
                 size_t ldd, const float *b, const int *off, int n, int add)
{
    const int m4 = m - m % 4, k3 = k - k % 3, n8 = n - n % 8;
    /* the last partial vector of d is loaded under a mask (zeros past n), so
     * b's lanes there meet zeros; b is read a vector past n at most */
    const int tail = n - n8;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int i = 0; i < m4; i += 4) {
        const float *d0 = d + (size_t)i * ldd, *d1 = d0 + ldd, *d2 = d1 + ldd, *d3 = d2 + ldd;
        for (int kk = 0; kk < k3; kk += 3) {
            const float *b0 = b + off[kk], *b1 = b + off[kk + 1], *b2 = b + off[kk + 2];
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00;
            __m256 a10 = a00, a11 = a00, a12 = a00;
            __m256 a20 = a00, a21 = a00, a22 = a00;
            __m256 a30 = a00, a31 = a00, a32 = a00;
#define WGRAD_STEP(LOAD_D)                                \
    do {                                                  \
        __m256 x0 = _mm256_loadu_ps(b0 + j);              \
        __m256 x1 = _mm256_loadu_ps(b1 + j);              \
        __m256 x2 = _mm256_loadu_ps(b2 + j);              \
        __m256 g = LOAD_D(d0);                            \
        a00 = _mm256_fmadd_ps(g, x0, a00);                \
        a01 = _mm256_fmadd_ps(g, x1, a01);                \
        a02 = _mm256_fmadd_ps(g, x2, a02);                \
        g = LOAD_D(d1);                                   \
        a10 = _mm256_fmadd_ps(g, x0, a10);                \
        a11 = _mm256_fmadd_ps(g, x1, a11);                \
        a12 = _mm256_fmadd_ps(g, x2, a12);                \
        g = LOAD_D(d2);                                   \
        a20 = _mm256_fmadd_ps(g, x0, a20);                \
        a21 = _mm256_fmadd_ps(g, x1, a21);                \
        a22 = _mm256_fmadd_ps(g, x2, a22);                \
        g = LOAD_D(d3);                                   \
        a30 = _mm256_fmadd_ps(g, x0, a30);                \
        a31 = _mm256_fmadd_ps(g, x1, a31);                \
        a32 = _mm256_fmadd_ps(g, x2, a32);                \
    } while (0)
#define LOAD_FULL(p) _mm256_loadu_ps((p) + j)
#define LOAD_TAIL(p) _mm256_maskload_ps((p) + j, mask)
            int j = 0;
            for (; j < n8; j += 8) WGRAD_STEP(LOAD_FULL);
            if (tail) WGRAD_STEP(LOAD_TAIL);
#undef WGRAD_STEP
#undef LOAD_FULL
#undef LOAD_TAIL
            __m128 s0 = hsum4(a00, a10, a20, a30);
            __m128 s1 = hsum4(a01, a11, a21, a31);
            __m128 s2 = hsum4(a02, a12, a22, a32);
            float t[3][4];
            _mm_storeu_ps(t[0], s0), _mm_storeu_ps(t[1], s1), _mm_storeu_ps(t[2], s2);
            for (int r = 0; r < 4; r++) {
                float *w = dw + (size_t)(i + r) * ldw + kk;
                if (add)
                    w[0] += t[0][r], w[1] += t[1][r], w[2] += t[2][r];
                else
                    w[0] = t[0][r], w[1] = t[1][r], w[2] = t[2][r];
            }
        }
        for (int kk = k3; kk < k; kk++)
            for (int r = 0; r < 4; r++) {
                float *w = dw + (size_t)(i + r) * ldw + kk;
                *w = (add ? *w : 0.0f) + dot_one(d + (size_t)(i + r) * ldd, b + off[kk], n);
            }
    }
    for (int i = m4; i < m; i++)
        for (int kk = 0; kk < k; kk++) {
            float *w = dw + (size_t)i * ldw + kk;
            *w = (add ? *w : 0.0f) + dot_one(d + (size_t)i * ldd, b + off[kk], n);
        }
}

#else /* portable */

void dconv_gemm(float *c, size_t ldc, const float *ap, int m, int k,
                const float *b, const int *off, int nb)
{
    for (int p = 0; p * DCONV_MR < m; p++) {
        const float *a = ap + (size_t)p * k * DCONV_MR;
        const int mr = m - p * DCONV_MR < DCONV_MR ? m - p * DCONV_MR : DCONV_MR;
        for (int j = 0; j < nb; j += DCONV_NB) {
            const int w = nb - j < DCONV_NB ? nb - j : DCONV_NB;
            float acc[DCONV_MR][DCONV_NB];
            memset(acc, 0, sizeof acc);
            for (int kk = 0; kk < k; kk++) {
                const float *bp = b + off[kk] + j;
                for (int r = 0; r < DCONV_MR; r++) {
                    const float x = a[(size_t)kk * DCONV_MR + r];
                    for (int q = 0; q < w; q++) acc[r][q] += x * bp[q];
                }
            }
            for (int r = 0; r < mr; r++)
                memcpy(c + (size_t)(p * DCONV_MR + r) * ldc + j, acc[r], sizeof *acc[r] * w);
        }
    }
}

void dconv_wgrad(float *dw, size_t ldw, int m, int k, const float *d,
                 size_t ldd, const float *b, const int *off, int n, int add)
{
    for (int i = 0; i < m; i++) {
        const float *di = d + (size_t)i * ldd;
        for (int kk = 0; kk < k; kk++) {
            const float *bk = b + off[kk];
            float lanes[8] = {0};
            int j = 0;
            for (; j + 8 <= n; j += 8)
                for (int q = 0; q < 8; q++) lanes[q] += di[j + q] * bk[j + q];
            float s = 0.0f;
            for (int q = 0; q < 8; q++) s += lanes[q];
            for (; j < n; j++) s += di[j] * bk[j];
            float *w = dw + (size_t)i * ldw + kk;
            *w = (add ? *w : 0.0f) + s;
        }
    }
}

#endif

