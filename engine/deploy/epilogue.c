/* The integer engine's folded epilogue (deploy/epilogue.h). Built for
 * both vector widths (core/isa.h): on a CPU with AVX-512 its rows run on
 * 512-bit vectors. */
#include "deploy/epilogue.h"

#include <stddef.h>

#include "core/isa.h"
#include "quant/quant.h"

/* Compiled twice, for the base and the avx512 path (core/isa.h). */
#define EPI_FUNCS(V, R)                                                                          \
    V(void, lsq_epi_rows, (const lsq_epi *e, const int32_t *acci, const float *accf, void *out,  \
      int m, size_t r0, const float *ad), (e, acci, accf, out, m, r0, ad))
ISA_VARIANTS(EPI_FUNCS)

/* One row of n outputs of the folded epilogue, in one pass: v = acc * A + B
 * (+ the LSQ+ term), then as `kind` says. The flags are constants where it
 * is inlined, so each variant is its own straight vector loop; so is `nc`
 * where nonzero: the row's width as a constant (16, 32, 64 channels), so
 * that a narrow row is a few whole vectors with no loop or remainder. */
__attribute__((always_inline)) static inline void
epi_row(void *out, const int32_t *restrict ai, const float *restrict af, const float *restrict cr,
        const float *restrict A, const float *restrict B, int n, const int nc, const int intacc,
        const int corr, const int kind, const int relu, float lo, float hi,
        const float *restrict ad, const int add)
{
    float *restrict of = out;
    uint8_t *restrict ou = out;
    int8_t *restrict os = out;
    if (nc) n = nc;
#pragma omp simd
    for (int c = 0; c < n; c++) {
        float t = (intacc ? (float)ai[c] : af[c]) * A[c] + B[c];
        if (corr) t += cr[c];
        if (kind == LSQ_EPI_VALUE || kind == LSQ_EPI_BOUNDED) {
            float x = t;
            if (kind == LSQ_EPI_BOUNDED) {
                /* the float engine's relu (x > 0 ? x : 0), then the bounds
                 * of the clips (the relu's 0 among them) as clip_forward */
                x = relu ? (t > 0.0f ? t : 0.0f) : t;
                x = x < lo ? lo : x;
                x = x > hi ? hi : x;
            }
            if (add) { /* a folded residual add, then its ReLU */
                x = x + ad[c];
                if (add == 2) x = x > 0.0f ? x : 0.0f;
            }
            of[c] = x;
        } else {
            float x = t < lo ? lo : t;
            x = x > hi ? hi : x;
            if (kind == LSQ_EPI_U8) ou[c] = (uint8_t)(int32_t)quant_round(x);
            else os[c] = (int8_t)(int32_t)quant_round(x);
        }
    }
}

#define EPI_ROWS_NC(nc_, intacc_, corr_, kind_, relu_, add_)                                   \
    for (int r = 0; r < m; r++)                                                                \
    epi_row((uint8_t *)out + (size_t)r * n * es, acci ? acci + (size_t)r * n : NULL,          \
            accf ? accf + (size_t)r * n : NULL,                                                \
            (corr_) ? e->corr + (size_t)(r0 + r) % (size_t)e->hw * n : NULL, e->a, e->b, n, nc_,     \
            intacc_, corr_, kind_, relu_, e->lo, e->hi, (add_) ? ad + (size_t)r * n : NULL, add_)
/* the integer-sum variants for 16, 32 and 64 channels as constants */
#define EPI_ROWS_ADD(intacc_, corr_, kind_, relu_, add_)                                       \
    do {                                                                                       \
        if ((intacc_) && n == 16) EPI_ROWS_NC(16, intacc_, corr_, kind_, relu_, add_);         \
        else if ((intacc_) && n == 32) EPI_ROWS_NC(32, intacc_, corr_, kind_, relu_, add_);    \
        else if ((intacc_) && n == 64) EPI_ROWS_NC(64, intacc_, corr_, kind_, relu_, add_);    \
        else EPI_ROWS_NC(0, intacc_, corr_, kind_, relu_, add_);                               \
    } while (0)
#define EPI_ROWS(intacc_, corr_, kind_, relu_) EPI_ROWS_ADD(intacc_, corr_, kind_, relu_, 0)


#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
/* The two variants every residual block runs, on whole 16-channel vectors
 * (n a multiple of 16): GCC vectorises epi_row's byte stores in 128-bit
 * pieces. The same operations in the same order as epi_row (a multiply,
 * then an add: the build does not contract them), so the same bits. */
static void rows16_codes(const lsq_epi *e, const int32_t *acc, void *out, int m)
{
    const int n = e->n;
    const __m512 lo = _mm512_set1_ps(e->lo), hi = _mm512_set1_ps(e->hi);
    const __m512 magic = _mm512_set1_ps(12582912.0f); /* quant_round */
    for (int r = 0; r < m; r++)
        for (int c = 0; c < n; c += 16) {
            const __m512 v = _mm512_cvtepi32_ps(_mm512_loadu_si512(acc + (size_t)r * n + c));
            const __m512 t = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(e->a + c)),
                                           _mm512_loadu_ps(e->b + c));
            __m512 x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, lo, _CMP_LT_OQ), t, lo);
            x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), x, hi);
            x = _mm512_sub_ps(_mm512_add_ps(x, magic), magic);
            /* the low bytes: uint8 or int8 codes alike */
            const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(x));
            _mm_storeu_si128((__m128i *)((uint8_t *)out + (size_t)r * n + c), b);
        }
}

static void rows16_add_relu(const lsq_epi *e, const int32_t *acc, float *out, int m,
                            const float *ad)
{
    const int n = e->n;
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < m; r++)
        for (int c = 0; c < n; c += 16) {
            const size_t at = (size_t)r * n + c;
            const __m512 v = _mm512_cvtepi32_ps(_mm512_loadu_si512(acc + at));
            const __m512 t = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(e->a + c)),
                                           _mm512_loadu_ps(e->b + c));
            const __m512 x = _mm512_add_ps(t, _mm512_loadu_ps(ad + at));
            _mm512_storeu_ps(out + at,
                             _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), x));
        }
}
#define EPI_WIDE 1
#else
#define EPI_WIDE 0
#endif

void lsq_epi_rows(const lsq_epi *e, const int32_t *acci, const float *accf, void *out, int m,
                  size_t r0, const float *ad)
{
#if EPI_WIDE
    if (acci && !e->corr && e->n % 16 == 0) {
        if (!ad && (e->kind == LSQ_EPI_U8 || e->kind == LSQ_EPI_S8)) {
            rows16_codes(e, acci, out, m);
            return;
        }
        if (ad && e->kind == LSQ_EPI_VALUE && e->add == 2) {
            rows16_add_relu(e, acci, out, m, ad);
            return;
        }
    }
#endif
    const int n = e->n, kind = e->kind, relu = e->relu;
    const size_t es = kind == LSQ_EPI_U8 || kind == LSQ_EPI_S8 ? 1 : sizeof(float);
    /* the common variants by name; LSQ+ and float layers share one each */
    if (ad) {
        const int add = e->add;
        if (acci && !e->corr && kind == LSQ_EPI_VALUE && add == 2)
            EPI_ROWS_ADD(1, 0, LSQ_EPI_VALUE, 0, 2);
        else if (acci && !e->corr && kind == LSQ_EPI_VALUE)
            EPI_ROWS_ADD(1, 0, LSQ_EPI_VALUE, 0, 1);
        else
            EPI_ROWS_ADD(acci != NULL, e->corr != NULL, kind, relu, add);
    } else if (acci && !e->corr) {
        if (kind == LSQ_EPI_U8) EPI_ROWS(1, 0, LSQ_EPI_U8, 0);
        else if (kind == LSQ_EPI_S8) EPI_ROWS(1, 0, LSQ_EPI_S8, 0);
        else if (kind == LSQ_EPI_VALUE) EPI_ROWS(1, 0, LSQ_EPI_VALUE, 0);
        else if (relu) EPI_ROWS(1, 0, LSQ_EPI_BOUNDED, 1);
        else EPI_ROWS(1, 0, LSQ_EPI_BOUNDED, 0);
    } else if (acci) {
        EPI_ROWS(1, 1, kind, relu);
    } else {
        EPI_ROWS(0, 0, kind, relu);
    }
}
