/* The integer forward's product on LSQ codes (dconv.h, dconv_igemm). Built
 * for both vector widths (core/isa.h): 512-bit vectors where the CPU has
 * AVX-512 BW, else AVX2, else portable C. Every path sums the same exact
 * int16 products, so all give the same bits. */
#include "nn/dconv.h"

#include "core/isa.h"

/* Compiled twice, for the base and the avx512 path (core/isa.h). */
#define DCONV_CODES_FUNCS(V, R)                                                              \
    V(void, dconv_igemm, (float *c, size_t ldc, const int16_t *ap, const float *scale, int m, \
      int kpairs, const uint8_t *b, const int *off, int nb),                                 \
      (c, ldc, ap, scale, m, kpairs, b, off, nb))
ISA_VARIANTS(DCONV_CODES_FUNCS)

#if defined(__AVX512BW__) && defined(__AVX512F__)
#include <immintrin.h>

/* dst[0..n) = scale * 16 int16 sums (n <= 16, a multiple of 8 or more) */
static inline void zstore(float *dst, __m256i sums, __m512 scale, int n)
{
    if (n <= 0) return;
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(sums)), scale);
    if (n >= 16)
        _mm512_storeu_ps(dst, v);
    else
        _mm512_mask_storeu_ps(dst, (__mmask16)((1u << n) - 1), v);
}

/* Row r's 32 sums of acc (positions j0 .. j0 + 31) scaled into dst, of
 * which the first cols are kept. */
static inline void zrow(float *dst, __m512i acc, __m512 scale, int cols)
{
    zstore(dst, _mm512_castsi512_si256(acc), scale, cols < 16 ? cols : 16);
    zstore(dst + 16, _mm512_extracti64x4_epi64(acc, 1), scale, cols - 16);
}

/* Rows r of two panels (a0: rows 0-3, a1: rows 4-7), NZ zmm of 32
 * positions each; the accumulators written out (an indexed array stays in
 * memory at -O2). */
#define ZSTEP(i, a, wr)                                                  \
    do {                                                                 \
        const __m512i w_ = _mm512_set1_epi16((a)[wr]);                   \
        c##i##0 = _mm512_add_epi16(c##i##0, _mm512_maddubs_epi16(b0, w_)); \
        if (NZ > 1) c##i##1 = _mm512_add_epi16(c##i##1, _mm512_maddubs_epi16(b1, w_)); \
    } while (0)

#define ZKERNEL(NAME, NZ_)                                                                  \
    static void NAME(float *c, size_t ldc, const int16_t *a0, const int16_t *a1,           \
                     const float *scale, int rows, int kpairs, const uint8_t *b,           \
                     const int *off, int j, int cols)                                      \
    {                                                                                      \
        enum { NZ = NZ_ };                                                                 \
        __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00;             \
        __m512i c20 = c00, c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00;          \
        __m512i c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;          \
        for (int kp = 0; kp < kpairs; kp++) {                                              \
            const uint8_t *bp = b + 2 * ((size_t)off[kp] + j);                             \
            const __m512i b0 = _mm512_loadu_si512(bp);                                     \
            const __m512i b1 = NZ > 1 ? _mm512_loadu_si512(bp + 64) : b0;                  \
            const int16_t *p0 = a0 + (size_t)kp * DCONV_MR, *p1 = a1 + (size_t)kp * DCONV_MR; \
            ZSTEP(0, p0, 0);                                                               \
            ZSTEP(1, p0, 1);                                                               \
            ZSTEP(2, p0, 2);                                                               \
            ZSTEP(3, p0, 3);                                                               \
            ZSTEP(4, p1, 0);                                                               \
            ZSTEP(5, p1, 1);                                                               \
            ZSTEP(6, p1, 2);                                                               \
            ZSTEP(7, p1, 3);                                                               \
        }                                                                                  \
        const __m512i acc[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},         \
                                   {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};        \
        for (int r = 0; r < rows; r++) {                                                   \
            const __m512 sc = _mm512_set1_ps(scale[r]);                                    \
            float *dst = c + (size_t)r * ldc + j;                                          \
            zrow(dst, acc[r][0], sc, cols);                                                \
            if (NZ > 1) zrow(dst + 32, acc[r][1], sc, cols - 32);                          \
        }                                                                                  \
    }

ZKERNEL(zkernel64, 2)
ZKERNEL(zkernel32, 1)

/* Two panels (8 rows) at a time, 64 positions per block, and a last block
 * of 32 where at most 32 remain: reads stay below nb rounded up to
 * DCONV_INB (32), as dconv.h promises. A lone last panel runs as the first
 * of a pair whose second repeats it, its rows not stored. */
void dconv_igemm(float *c, size_t ldc, const int16_t *ap, const float *scale, int m,
                 int kpairs, const uint8_t *b, const int *off, int nb)
{
    _Static_assert(DCONV_MR == 4 && DCONV_INB == 32, "two panels of 4 rows, blocks of 32");
    for (int p = 0; p * DCONV_MR < m; p += 2) {
        const int16_t *a0 = ap + (size_t)p * kpairs * DCONV_MR;
        const int left = m - p * DCONV_MR, rows = left < 2 * DCONV_MR ? left : 2 * DCONV_MR;
        const int16_t *a1 = rows > DCONV_MR ? a0 + (size_t)kpairs * DCONV_MR : a0;
        float *cp = c + (size_t)p * DCONV_MR * ldc;
        const float *sp = scale + p * DCONV_MR;
        for (int j = 0; j < nb; j += 64) {
            if (nb - j > 32)
                zkernel64(cp, ldc, a0, a1, sp, rows, kpairs, b, off, j, nb - j);
            else
                zkernel32(cp, ldc, a0, a1, sp, rows, kpairs, b, off, j, nb - j);
        }
    }
}

#elif defined(__AVX2__)
#include <immintrin.h>

/* dst[0..cols) = scale * the 16 int16 sums of acc (cols 8 or 16) */
static inline void istore(float *dst, __m256i acc, __m256 scale, int cols)
{
    __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc));
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), scale));
    if (cols > 8) {
        __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc, 1));
        _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), scale));
    }
}

void dconv_igemm(float *c, size_t ldc, const int16_t *ap, const float *scale, int m,
                 int kpairs, const uint8_t *b, const int *off, int nb)
{
    for (int p = 0; p * DCONV_MR < m; p++) {
        const int16_t *a = ap + (size_t)p * kpairs * DCONV_MR;
        const int mr = m - p * DCONV_MR < DCONV_MR ? m - p * DCONV_MR : DCONV_MR;
        for (int j = 0; j < nb; j += DCONV_INB) {
            /* rows written out: GCC kept an indexed accumulator array in
             * memory */
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
            __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int kp = 0; kp < kpairs; kp++) {
                const uint8_t *bp = b + 2 * ((size_t)off[kp] + j);
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)bp);
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bp + 32));
                const int16_t *av = a + (size_t)kp * DCONV_MR;
                __m256i w = _mm256_set1_epi16(av[0]);
                a00 = _mm256_add_epi16(a00, _mm256_maddubs_epi16(b0, w));
                a01 = _mm256_add_epi16(a01, _mm256_maddubs_epi16(b1, w));
                w = _mm256_set1_epi16(av[1]);
                a10 = _mm256_add_epi16(a10, _mm256_maddubs_epi16(b0, w));
                a11 = _mm256_add_epi16(a11, _mm256_maddubs_epi16(b1, w));
                w = _mm256_set1_epi16(av[2]);
                a20 = _mm256_add_epi16(a20, _mm256_maddubs_epi16(b0, w));
                a21 = _mm256_add_epi16(a21, _mm256_maddubs_epi16(b1, w));
                w = _mm256_set1_epi16(av[3]);
                a30 = _mm256_add_epi16(a30, _mm256_maddubs_epi16(b0, w));
                a31 = _mm256_add_epi16(a31, _mm256_maddubs_epi16(b1, w));
            }
            const __m256i acc[DCONV_MR][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            const int cols = nb - j < DCONV_INB ? nb - j : DCONV_INB;
            for (int r = 0; r < mr; r++) {
                const __m256 sc = _mm256_set1_ps(scale[p * DCONV_MR + r]);
                float *dst = c + (size_t)(p * DCONV_MR + r) * ldc + j;
                istore(dst, acc[r][0], sc, cols < 16 ? cols : 16);
                if (cols > 16) istore(dst + 16, acc[r][1], sc, cols - 16);
            }
        }
    }
}

#else /* portable */

void dconv_igemm(float *c, size_t ldc, const int16_t *ap, const float *scale, int m,
                 int kpairs, const uint8_t *b, const int *off, int nb)
{
    for (int p = 0; p * DCONV_MR < m; p++) {
        const int16_t *a = ap + (size_t)p * kpairs * DCONV_MR;
        const int mr = m - p * DCONV_MR < DCONV_MR ? m - p * DCONV_MR : DCONV_MR;
        for (int r = 0; r < mr; r++)
            for (int j = 0; j < nb; j++) {
                int32_t sum = 0;
                for (int kp = 0; kp < kpairs; kp++) {
                    const uint16_t w = (uint16_t)a[(size_t)kp * DCONV_MR + r];
                    const uint8_t *bp = b + 2 * ((size_t)off[kp] + j);
                    sum += (int8_t)(uint8_t)(w & 0xff) * bp[0] + (int8_t)(uint8_t)(w >> 8) * bp[1];
                }
                c[(size_t)(p * DCONV_MR + r) * ldc + j] = (float)sum * scale[p * DCONV_MR + r];
            }
    }
}

#endif
