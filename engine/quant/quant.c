/* The LSQ quantizer: forward, backward, the gradient scale, the two step
 * initialisations and the step guard. The formulas are in quant.h and
 * docs/quantizer.md.
 *
 * Forward and backward run on every activation of every layer each training
 * step, so their inner loops are branch-free `omp simd` loops with no libm
 * calls (rounding is quant_round's add/subtract trick). Large tensors are cut
 * into fixed blocks of QUANT_BLOCK elements of one channel; OpenMP threads
 * take whole blocks. Backward sums each block in double, in one fixed order,
 * and adds the block sums of a channel in block order, so the result depends
 * on neither the thread count nor the schedule: the same inputs give the same
 * bits every time. */
#include "quant/quant.h"

#include "core/vtrans.h"
#include "core/isa.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* GCC's -O2 "very cheap" vectorizer cost model rejects some of these loops
 * even under `omp simd`; the dynamic model is allowed to vectorize them. The
 * backward loop stays scalar either way, hence its AVX2 version below. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=dynamic")
#endif

/* Compiled twice, for the base and the avx512 path (core/isa.h): every
 * function this file exports, (return, name, parameters, arguments). */
#define QUANT_FUNCS(V, R) \
    V(void, quant_range_init, (quant_range *r, int bits, int is_signed), (r, bits, is_signed)) \
    V(void, quant_forward, (float *out, int32_t *codes, const float *in, const float *step,    \
      const float *offset, int channels, size_t per, const quant_range *r),                    \
      (out, codes, in, step, offset, channels, per, r))                                        \
    V(void, quant_codes_bf16, (uint16_t *codes, const float *in, float step, size_t n,         \
      const quant_range *r), (codes, in, step, n, r))                                          \
    V(void, quant_codes_bytes, (void *codes, const float *in, size_t n, float s, float beta,   \
      float lo, float hi, int is_signed), (codes, in, n, s, beta, lo, hi, is_signed))          \
    V(void, quant_backward_span, (float *din, int set, const float *dout, const float *in,     \
      float s, const quant_range *r, size_t n, double sums[2]),                                \
      (din, set, dout, in, s, r, n, sums))                                                     \
    V(void, quant_forward_blocked, (float *out, int block, const float *in, int nc, size_t hw, \
      float s, const quant_range *r), (out, block, in, nc, hw, s, r))                          \
    V(void, quant_backward_blocked, (float *din, int set, const float *dout, int block,        \
      const float *in, int nc, size_t hw, float s, const quant_range *r, double *sum),         \
      (din, set, dout, block, in, nc, hw, s, r, sum))                                          \
    V(void, quant_backward, (float *din, float *dstep, float *doffset, const float *dout,      \
      const float *in, const float *step, const float *offset, const float *gscale,            \
      int channels, size_t per, const quant_range *r),                                         \
      (din, dstep, doffset, dout, in, step, offset, gscale, channels, per, r))                 \
    V(void, quant_backward_overwrite, (float *din, float *dstep, float *doffset,               \
      const float *dout, const float *in, const float *step, const float *offset,              \
      const float *gscale, int channels, size_t per, const quant_range *r),                    \
      (din, dstep, doffset, dout, in, step, offset, gscale, channels, per, r))                 \
    R(float, quant_grad_scale_paper, (size_t n, const quant_range *r), (n, r))                 \
    V(void, quant_init_paper, (float *step, const float *v, int channels, size_t per,          \
      const quant_range *r), (step, v, channels, per, r))                                      \
    R(float, quant_step_paper, (double mean_abs, const quant_range *r), (mean_abs, r))         \
    V(void, quant_init_mse, (float *step, float *offset, const float *v, int channels,         \
      size_t per, const quant_range *r), (step, offset, v, channels, per, r))                  \
    R(int, quant_guard, (float *step, const float *prev, size_t count), (step, prev, count))
ISA_VARIANTS(QUANT_FUNCS)

/* Elements per work block (one channel's slice). Fixed: block sums, and so
 * the step gradient's bits, must not depend on the machine. */
#define QUANT_BLOCK ((size_t)8192)
/* Below this many elements the threads cost more than they save. */
#define QUANT_PAR_MIN ((size_t)1 << 15)
/* Step used by both inits when a channel is all zeros (or its statistics are
 * not finite): any step represents zero exactly, so the choice only sets
 * where learning starts; 1e-3 is small next to typical weights (~1e-2) and
 * activations (~1). */
#define QUANT_INIT_ZERO_STEP 1e-3f
/* quant_init_mse evaluates the MSE on at most this many elements per channel,
 * taken at a fixed stride (min and max always use every element). */
#define QUANT_MSE_SAMPLE ((size_t)1 << 16)
/* Grid points of the coarse scans and golden-section iterations after them. */
#define QUANT_MSE_GRID 128
#define QUANT_MSE_GOLDEN 40
/* Alternating (step, offset) rounds of the LSQ+ search. */
#define QUANT_MSE_ROUNDS 4

void quant_range_init(quant_range *r, int bits, int is_signed)
{
    assert(r && bits >= 2 && bits <= 8);
    r->bits = bits;
    r->is_signed = is_signed ? 1 : 0;
    if (r->is_signed) {
        r->qn = 1 << (bits - 1);
        r->qp = (1 << (bits - 1)) - 1;
    } else {
        r->qn = 0;
        r->qp = (1 << bits) - 1;
    }
}

/* ---- forward ------------------------------------------------------------ */

static void forward_block(float *out, int32_t *codes, const float *in,
                          float s, float beta,
                          float lo, float hi, size_t n)
{
    if (codes) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float x = (in[i] - beta) / s;
            x = x < lo ? lo : x;
            x = x > hi ? hi : x;
            float q = quant_round(x);
            out[i] = q * s + beta;
            /* NaN input: code 0 (the value stays NaN so training sees it) */
            codes[i] = (int32_t)(q == q ? q : 0.0f);
        }
    } else {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float x = (in[i] - beta) / s;
            x = x < lo ? lo : x;
            x = x > hi ? hi : x;
            out[i] = quant_round(x) * s + beta;
        }
    }
}

/* out may be in (quantizing in place): every loop is element-wise, so `omp
 * simd` stays valid without restrict. */
void quant_forward(float *out, int32_t *codes, const float *in,
                   const float *step, const float *offset, int channels,
                   size_t per, const quant_range *r)
{
    assert(out && in && step && r && channels >= 1);
    const float lo = (float)-r->qn, hi = (float)r->qp;
    const size_t nb = per ? (per + QUANT_BLOCK - 1) / QUANT_BLOCK : 0;
    const long items = (long)((size_t)channels * nb);
    const int par = (size_t)channels * per >= QUANT_PAR_MIN;

#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (long it = 0; it < items; it++) {
        size_t c = (size_t)it / nb, k = (size_t)it % nb;
        size_t i0 = c * per + k * QUANT_BLOCK;
        size_t n = per - k * QUANT_BLOCK;
        if (n > QUANT_BLOCK) n = QUANT_BLOCK;
        forward_block(out + i0, codes ? codes + i0 : NULL, in + i0, step[c],
                      offset ? offset[c] : 0.0f, lo, hi, n);
    }
}

void quant_codes_bf16(uint16_t *codes, const float *in, float step, size_t n,
                      const quant_range *r)
{
    assert(codes && in && r);
    const float lo = (float)-r->qn, hi = (float)r->qp;
    const size_t nb = (n + QUANT_BLOCK - 1) / QUANT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) if (n >= QUANT_PAR_MIN)
    for (size_t k = 0; k < nb; k++) {
        const size_t i0 = k * QUANT_BLOCK, m = n - i0 < QUANT_BLOCK ? n - i0 : QUANT_BLOCK;
#pragma omp simd
        for (size_t i = i0; i < i0 + m; i++) {
            /* forward_block's formulas */
            float x = in[i] / step;
            x = x < lo ? lo : x;
            x = x > hi ? hi : x;
            float q = quant_round(x);
            q = q == q ? q : 0.0f;
            /* an integer of magnitude <= 256: its float's upper half is its
             * bf16, exactly */
            uint32_t u;
            memcpy(&u, &q, sizeof u);
            codes[i] = (uint16_t)(u >> 16);
        }
    }
}

/* quant_codes_bytes' code of x, as an int32 (the byte is its low 8 bits) */
static inline int32_t code_of(float x, float s, float beta, float lo, float hi)
{
    float v = (x - beta) / s;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int32_t)quant_round(v);
}

void quant_codes_bytes(void *codes, const float *in, size_t n, float s, float beta, float lo,
                       float hi, int is_signed)
{
    if (is_signed) {
        int8_t *restrict o = codes;
#pragma omp simd
        for (size_t i = 0; i < n; i++) o[i] = (int8_t)code_of(in[i], s, beta, lo, hi);
    } else {
        uint8_t *restrict o = codes;
#pragma omp simd
        for (size_t i = 0; i < n; i++) o[i] = (uint8_t)code_of(in[i], s, beta, lo, hi);
    }
}

/* ---- backward ----------------------------------------------------------- */

#if defined(__AVX2__) && defined(__FMA__)
/* backward_block's loop in AVX2 over the first n - n % 8 elements: GCC leaves
 * the portable loop scalar (its selects feed two double reductions). Same
 * formulas and NaN behaviour: max/min return their second operand for a NaN,
 * so a NaN x stays NaN, counts as outside (unordered compare) and reaches the
 * step gradient. Sums in double, 8 lanes in a fixed order, into sums[2];
 * returns the elements done. */
static size_t backward_avx2(float *din, int set, const float *dout, const float *in,
                            float s, float beta, float lo, float hi, size_t n,
                            double sums[2])
{
    const __m256 vs = _mm256_set1_ps(s), vb = _mm256_set1_ps(beta);
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, o0 = s0, o1 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(in + i), vb), vs);
        __m256 xc = _mm256_min_ps(vhi, _mm256_max_ps(vlo, x));
        __m256 out = _mm256_cmp_ps(xc, x, _CMP_NEQ_UQ);
        __m256 r = _mm256_sub_ps(_mm256_add_ps(x, magic), magic);
        __m256 t = _mm256_blendv_ps(_mm256_sub_ps(r, x), xc, out);
        __m256 g = _mm256_loadu_ps(dout + i);
        if (din && set)
            _mm256_storeu_ps(din + i, _mm256_andnot_ps(out, g));
        else if (din)
            _mm256_storeu_ps(din + i, _mm256_add_ps(_mm256_loadu_ps(din + i),
                                                    _mm256_andnot_ps(out, g)));
        __m256 go = _mm256_and_ps(out, g);
        s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(g)),
                             _mm256_cvtps_pd(_mm256_castps256_ps128(t)), s0);
        s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(g, 1)),
                             _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)), s1);
        o0 = _mm256_add_pd(o0, _mm256_cvtps_pd(_mm256_castps256_ps128(go)));
        o1 = _mm256_add_pd(o1, _mm256_cvtps_pd(_mm256_extractf128_ps(go, 1)));
    }
    double ls[4], lo4[4];
    _mm256_storeu_pd(ls, _mm256_add_pd(s0, s1));
    _mm256_storeu_pd(lo4, _mm256_add_pd(o0, o1));
    sums[0] = (ls[0] + ls[1]) + (ls[2] + ls[3]);
    sums[1] = (lo4[0] + lo4[1]) + (lo4[2] + lo4[3]);
    return i;
}
#endif

/* Sums of one block: [0] = sum dout * dv_hat/ds, [1] = sum dout outside.
 * The AVX2 loop, where built, takes whole vectors; the portable loop the
 * rest (all of it elsewhere). */
static void backward_block(float *din, int set, const float *dout, const float *in,
                           float s, float beta,
                           float lo, float hi, size_t n, double sums[2])
{
    size_t i0 = 0;
    double ss = 0.0, so = 0.0;
#if defined(__AVX2__) && defined(__FMA__)
    double vsum[2];
    i0 = backward_avx2(din, set, dout, in, s, beta, lo, hi, n, vsum);
    ss = vsum[0];
    so = vsum[1];
#endif
    /* xc != x exactly when x is outside [lo, hi] (or NaN, whose t = NaN then
     * reaches dstep and the guard): one select, no branches. */
#pragma omp simd reduction(+ : ss, so)
    for (size_t i = i0; i < n; i++) {
        float x = (in[i] - beta) / s;
        float xc = x < lo ? lo : x;
        xc = xc > hi ? hi : xc;
        float g = dout[i];
        int out = xc != x;
        float t = out ? xc : quant_round(x) - x;
        if (din) din[i] = (set ? 0.0f : din[i]) + (out ? 0.0f : g);
        ss += (double)g * (double)t;
        so += (double)(out ? g : 0.0f);
    }
    sums[0] = ss;
    sums[1] = so;
}

void quant_backward_span(float *din, int set, const float *dout, const float *in, float s,
                         const quant_range *r, size_t n, double sums[2])
{
    backward_block(din, set, dout, in, s, 0.0f, (float)-r->qn, (float)r->qp, n, sums);
}

/* ---- on a channel block of nChw8c / nChw16c -------------------------------
 * One image's block of `block` channels, position p's at [p * block, (p + 1)
 * * block): its channels' NCHW planes (hw apart) go through registers in
 * 8x8 (AVX2) or 16x16 (AVX-512) transposes, the quantizer's formulas on the
 * way. */

#if defined(__AVX2__) && defined(__FMA__)
/* forward_block's value (beta 0) of 8 elements: the same operations, so the
 * same bits, NaN included (x < lo ? lo : x keeps a NaN). */
static inline __attribute__((always_inline)) __m256 qval8(__m256 x, __m256 s, __m256 lo,
                                                         __m256 hi)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    x = _mm256_div_ps(x, s);
    x = _mm256_blendv_ps(x, lo, _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    x = _mm256_blendv_ps(x, hi, _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    x = _mm256_sub_ps(_mm256_add_ps(x, magic), magic);
    return _mm256_add_ps(_mm256_mul_ps(x, s), _mm256_setzero_ps());
}
#endif

#if defined(__AVX512F__)
static inline __attribute__((always_inline)) __m512 qval16(__m512 x, __m512 s, __m512 lo,
                                                          __m512 hi)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    x = _mm512_div_ps(x, s);
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), x, lo);
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), x, hi);
    x = _mm512_sub_ps(_mm512_add_ps(x, magic), magic);
    return _mm512_add_ps(_mm512_mul_ps(x, s), _mm512_setzero_ps());
}
#endif

void quant_forward_blocked(float *out, int block, const float *in, int nc, size_t hw, float s,
                           const quant_range *r)
{
    assert(out && in && r && block >= 1 && nc >= 0 && nc <= block);
    const float lo = (float)-r->qn, hi = (float)r->qp;
    if (block == 1) { /* NCHW: the plane as it is */
        if (nc) forward_block(out, NULL, in, s, 0.0f, lo, hi, hw);
        else memset(out, 0, hw * sizeof *out);
        return;
    }
    size_t p = 0;
#if defined(__AVX512F__)
    if (block == 16) {
        const __m512 vs = _mm512_set1_ps(s), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
        for (; p + 16 <= hw; p += 16) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                v[i] = i < nc ? qval16(_mm512_loadu_ps(in + hw * i + p), vs, vlo, vhi)
                              : _mm512_setzero_ps();
            transpose16(v);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) _mm512_storeu_ps(out + (p + j) * 16, v[j]);
        }
    }
#endif
#if defined(__AVX2__) && defined(__FMA__)
    if (block % 8 == 0) {
        const __m256 vs = _mm256_set1_ps(s), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
        for (; p + 8 <= hw; p += 8)
            for (int c8 = 0; c8 < block; c8 += 8) {
                __m256 v[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    v[i] = c8 + i < nc
                               ? qval8(_mm256_loadu_ps(in + hw * (c8 + i) + p), vs, vlo, vhi)
                               : _mm256_setzero_ps();
                transpose8(v);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    _mm256_storeu_ps(out + (p + j) * (size_t)block + c8, v[j]);
            }
    }
#endif
    for (; p < hw; p++)
        for (int c = 0; c < block; c++) {
            float v = 0.0f;
            if (c < nc) { /* forward_block's formulas */
                float x = in[hw * c + p] / s;
                x = x < lo ? lo : x;
                x = x > hi ? hi : x;
                v = quant_round(x) * s + 0.0f;
            }
            out[p * block + c] = v;
        }
}

/* One channel's 8 positions of the backward (backward_avx2's operations):
 * din's 8 values stored, and the 8 terms g * t added to the lanes of
 * (a0, a1), position p + j's to lane j. */
#if defined(__AVX2__) && defined(__FMA__)
static inline __attribute__((always_inline)) void
back8(float *din, int set, __m256 g, const float *in, __m256 vs, __m256 vlo, __m256 vhi,
      __m256d *a0, __m256d *a1)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 x = _mm256_div_ps(_mm256_loadu_ps(in), vs);
    const __m256 xc = _mm256_min_ps(vhi, _mm256_max_ps(vlo, x));
    const __m256 out = _mm256_cmp_ps(xc, x, _CMP_NEQ_UQ);
    const __m256 rr = _mm256_sub_ps(_mm256_add_ps(x, magic), magic);
    const __m256 t = _mm256_blendv_ps(_mm256_sub_ps(rr, x), xc, out);
    const __m256 in_g = _mm256_andnot_ps(out, g);
    if (din) _mm256_storeu_ps(din, set ? in_g : _mm256_add_ps(_mm256_loadu_ps(din), in_g));
    *a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(g)),
                          _mm256_cvtps_pd(_mm256_castps256_ps128(t)), *a0);
    *a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(g, 1)),
                          _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)), *a1);
}
#endif

/* The step's sum is taken in one order on every path: 8 double lanes,
 * position p's term to lane p % 8, each lane's terms added group of 8
 * positions by group and, in a group, channel by channel; then the lanes
 * as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)); then the last
 * positions (fewer than 8), position by position, channel by channel. The
 * AVX-512 loop takes 16 positions at once, its two groups of 8 in turn. */
void quant_backward_blocked(float *din, int set, const float *dout, int block, const float *in,
                            int nc, size_t hw, float s, const quant_range *r, double *sum)
{
    assert(dout && in && r && sum && block >= 1 && nc >= 0 && nc <= block);
    const float lo = (float)-r->qn, hi = (float)r->qp;
    if (block == 1) { /* NCHW: the plane as it is */
        double sums[2] = {0.0, 0.0};
        if (nc) backward_block(din, set, dout, in, s, 0.0f, lo, hi, hw, sums);
        *sum = sums[0];
        return;
    }
    double ss = 0.0;
    size_t p = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (block % 8 == 0) {
        const __m256 vs = _mm256_set1_ps(s), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
        __m256d a0 = _mm256_setzero_pd(), a1 = a0;
#if defined(__AVX512F__)
        if (block == 16) {
            const __m512 zs = _mm512_set1_ps(s), zlo = _mm512_set1_ps(lo), zhi = _mm512_set1_ps(hi);
            const __m512 magic = _mm512_set1_ps(12582912.0f);
            __m512d acc = _mm512_setzero_pd();
            for (; p + 16 <= hw; p += 16) {
                __m512 g[16], t[16];
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) g[j] = _mm512_loadu_ps(dout + (p + j) * 16);
                transpose16(g);
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++) {
                    t[c] = _mm512_setzero_ps();
                    if (c >= nc) continue;
                    /* back8's operations, 16 wide */
                    const size_t at = hw * c + p;
                    const __m512 x = _mm512_div_ps(_mm512_loadu_ps(in + at), zs);
                    const __m512 xc = _mm512_min_ps(zhi, _mm512_max_ps(zlo, x));
                    const __mmask16 out = _mm512_cmp_ps_mask(xc, x, _CMP_NEQ_UQ);
                    const __m512 rr = _mm512_sub_ps(_mm512_add_ps(x, magic), magic);
                    t[c] = _mm512_mask_blend_ps(out, _mm512_sub_ps(rr, x), xc);
                    const __m512 in_g = _mm512_maskz_mov_ps((__mmask16)~out, g[c]);
                    if (din)
                        _mm512_storeu_ps(din + at, set ? in_g
                                                       : _mm512_add_ps(_mm512_loadu_ps(din + at),
                                                                       in_g));
                }
                /* positions p .. p + 7 for every channel, then p + 8 .. p + 15 */
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++) {
                    if (c >= nc) break;
                    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(g[c])),
                                          _mm512_cvtps_pd(_mm512_castps512_ps256(t[c])), acc);
                }
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++) {
                    if (c >= nc) break;
                    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(high8(g[c])),
                                          _mm512_cvtps_pd(high8(t[c])), acc);
                }
            }
            a0 = _mm512_castpd512_pd256(acc);
            a1 = _mm512_extractf64x4_pd(acc, 1);
        }
#endif
        for (; p + 8 <= hw; p += 8)
            for (int c8 = 0; c8 < nc; c8 += 8) {
                __m256 g[8];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    g[j] = _mm256_loadu_ps(dout + (p + j) * (size_t)block + c8);
                transpose8(g);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    if (c8 + i >= nc) break;
                    const size_t at = hw * (size_t)(c8 + i) + p;
                    back8(din ? din + at : NULL, set, g[i], in + at, vs, vlo, vhi, &a0, &a1);
                }
            }
        double l[4];
        _mm256_storeu_pd(l, _mm256_add_pd(a0, a1));
        ss = (l[0] + l[1]) + (l[2] + l[3]);
    }
#endif
    for (; p < hw; p++)
        for (int c = 0; c < nc; c++) { /* backward_block's formulas */
            const size_t at = hw * c + p;
            float x = in[at] / s;
            float xc = x < lo ? lo : x;
            xc = xc > hi ? hi : xc;
            const float g = dout[p * block + c];
            const int out = xc != x;
            const float t = out ? xc : quant_round(x) - x;
            if (din) din[at] = (set ? 0.0f : din[at]) + (out ? 0.0f : g);
            ss += (double)g * (double)t;
        }
    *sum = ss;
}

static void backward_item(double sums[2], float *din, int set, const float *dout,
                          const float *in, const float *step,
                          const float *offset, size_t per, size_t c, size_t k,
                          float lo, float hi)
{
    size_t i0 = c * per + k * QUANT_BLOCK;
    size_t n = per - k * QUANT_BLOCK;
    if (n > QUANT_BLOCK) n = QUANT_BLOCK;
    backward_block(din ? din + i0 : NULL, set, dout + i0, in + i0, step[c],
                   offset ? offset[c] : 0.0f, lo, hi, n, sums);
}

/* set: din = instead of += */
static void backward(float *din, int set, float *dstep, float *doffset, const float *dout,
                     const float *in, const float *step, const float *offset,
                     const float *gscale, int channels, size_t per, const quant_range *r)
{
    assert(dstep && dout && in && step && gscale && r && channels >= 1);
    const float lo = (float)-r->qn, hi = (float)r->qp;
    const size_t nb = per ? (per + QUANT_BLOCK - 1) / QUANT_BLOCK : 0;
    const size_t items = (size_t)channels * nb;
    double *part = NULL;

    /* Threads store block sums and the channel totals are added afterwards in
     * block order; the serial path adds the same block sums in the same
     * order, so both give identical bits (and so does a failed malloc). */
    if ((size_t)channels * per >= QUANT_PAR_MIN && omp_get_max_threads() > 1)
        part = malloc(items * 2 * sizeof *part);

    if (part) {
#pragma omp parallel for schedule(dynamic, 1)
        for (long it = 0; it < (long)items; it++)
            backward_item(part + 2 * it, din, set, dout, in, step, offset, per,
                          (size_t)it / nb, (size_t)it % nb, lo, hi);
    }
    for (size_t c = 0; c < (size_t)channels; c++) {
        double ts = 0.0, to = 0.0;
        for (size_t k = 0; k < nb; k++) {
            double sums[2];
            if (part) {
                sums[0] = part[2 * (c * nb + k)];
                sums[1] = part[2 * (c * nb + k) + 1];
            } else {
                backward_item(sums, din, set, dout, in, step, offset, per, c, k,
                              lo, hi);
            }
            ts += sums[0];
            to += sums[1];
        }
        dstep[c] += (float)((double)gscale[c] * ts);
        if (doffset) doffset[c] += (float)to;
    }
    free(part);
}

void quant_backward(float *din, float *dstep, float *doffset, const float *dout,
                    const float *in, const float *step, const float *offset,
                    const float *gscale, int channels, size_t per, const quant_range *r)
{
    backward(din, 0, dstep, doffset, dout, in, step, offset, gscale, channels, per, r);
}

void quant_backward_overwrite(float *din, float *dstep, float *doffset, const float *dout,
                              const float *in, const float *step, const float *offset,
                              const float *gscale, int channels, size_t per,
                              const quant_range *r)
{
    backward(din, 1, dstep, doffset, dout, in, step, offset, gscale, channels, per, r);
}

/* ---- gradient scale and inits ------------------------------------------- */

float quant_grad_scale_paper(size_t n, const quant_range *r)
{
    assert(r && n > 0 && r->qp > 0);
    return (float)(1.0 / sqrt((double)n * (double)r->qp));
}

void quant_init_paper(float *step, const float *v, int channels, size_t per,
                      const quant_range *r)
{
    assert(step && v && r && channels >= 1);
    for (int c = 0; c < channels; c++) {
        const float *p = v + (size_t)c * per;
        double sum = 0.0;
        for (size_t i = 0; i < per; i++) sum += fabs((double)p[i]);
        step[c] = quant_step_paper(per ? sum / (double)per : 0.0, r);
    }
}

float quant_step_paper(double mean_abs, const quant_range *r)
{
    double s = 2.0 * mean_abs / sqrt((double)r->qp);
    return (isfinite(s) && s >= QUANT_STEP_MIN) ? (float)s : QUANT_INIT_ZERO_STEP;
}

/* Mean squared quantization error of one channel's (sampled) values. */
static double mse_eval(const float *v, size_t per, size_t stride, float s,
                       float beta, float lo, float hi)
{
    double sum = 0.0;
    size_t n = 0;
    if (stride == 1) {
#pragma omp simd reduction(+ : sum)
        for (size_t i = 0; i < per; i++) {
            float x = (v[i] - beta) / s;
            x = x < lo ? lo : x;
            x = x > hi ? hi : x;
            double d = (double)(quant_round(x) * s + beta) - (double)v[i];
            sum += d * d;
        }
        n = per;
    } else {
        for (size_t i = 0; i < per; i += stride, n++) {
            float x = (v[i] - beta) / s;
            x = x < lo ? lo : x;
            x = x > hi ? hi : x;
            double d = (double)(quant_round(x) * s + beta) - (double)v[i];
            sum += d * d;
        }
    }
    return n ? sum / (double)n : 0.0;
}

typedef struct {
    const float *v;
    size_t per, stride;
    float lo, hi;
    int vary_offset; /* 0: search s with beta fixed; 1: beta with s fixed */
    float s, beta;   /* the fixed coordinate (and the current point) */
} mse_line;

static double mse_at(const mse_line *l, double t)
{
    return l->vary_offset
               ? mse_eval(l->v, l->per, l->stride, l->s, (float)t, l->lo, l->hi)
               : mse_eval(l->v, l->per, l->stride, (float)t, l->beta, l->lo,
                          l->hi);
}

/* Minimises the MSE along one coordinate over [a, b]: QUANT_MSE_GRID evenly
 * spaced points (a excluded when searching s, since s = a may be 0), then a
 * golden-section search between the best point's neighbours. The start value
 * `cur` (with error *best) is kept unless something strictly better is found,
 * so a round never makes the error worse. The MSE of a rounding quantizer is
 * not unimodal in s or beta (it wiggles with the rounding), which is why the
 * grid comes first and the golden section only polishes. */
static double mse_line_search(const mse_line *l, double a, double b,
                              double cur, double *best)
{
    double bt = cur, bf = *best;
    double h = (b - a) / QUANT_MSE_GRID;
    int bk = -1;
    for (int k = l->vary_offset ? 0 : 1; k <= QUANT_MSE_GRID; k++) {
        double t = a + h * k;
        double f = mse_at(l, t);
        if (f < bf) {
            bf = f;
            bt = t;
            bk = k;
        }
    }
    if (bk >= 0) {
        const double phi = 0.6180339887498949;
        double lo = a + h * (bk - 1), hi = a + h * (bk + 1);
        if (!l->vary_offset && lo <= 0.0) lo = h * 0.5;
        double x1 = hi - phi * (hi - lo), x2 = lo + phi * (hi - lo);
        double f1 = mse_at(l, x1), f2 = mse_at(l, x2);
        for (int it = 0; it < QUANT_MSE_GOLDEN; it++) {
            if (f1 <= f2) {
                hi = x2;
                x2 = x1;
                f2 = f1;
                x1 = hi - phi * (hi - lo);
                f1 = mse_at(l, x1);
            } else {
                lo = x1;
                x1 = x2;
                f1 = f2;
                x2 = lo + phi * (hi - lo);
                f2 = mse_at(l, x2);
            }
        }
        if (f1 < bf) {
            bf = f1;
            bt = x1;
        }
        if (f2 < bf) {
            bf = f2;
            bt = x2;
        }
    }
    *best = bf;
    return bt;
}

/* The MSE search of one channel (see quant.h for the contract).
 *
 * Without offset: s only. Every s above s_max = max(max(v)/QP, -min(v)/QN)
 * clips nothing and only coarsens the grid, so s is searched in (0, s_max]:
 * a grid of QUANT_MSE_GRID steps s_max*k/GRID, k = 1..GRID, then golden
 * section between the best point's neighbours.
 *
 * With offset (LSQ+): start from the range that just covers the data,
 * s0 = (max - min) / (QN + QP), beta0 = min + QN*s0 (code -QN lands on min),
 * then QUANT_MSE_ROUNDS rounds of coordinate descent: s with beta fixed over
 * (0, s_hi], s_hi the no-clip step for that beta (2*s if none exists), then
 * beta with s fixed over [min - QP*s, max + QN*s] (every beta for which some
 * value is inside the range), each by mse_line_search. Each move keeps the
 * old point unless the error strictly drops.
 *
 * Deterministic: fixed grids, fixed iteration counts, no randomness. */
static void init_mse_channel(float *step, float *offset, const float *v,
                             size_t per, const quant_range *r)
{
    const float lo = (float)-r->qn, hi = (float)r->qp;
    float vmin = 0.0f, vmax = 0.0f;
    int finite = 1;
    for (size_t i = 0; i < per; i++) {
        if (!isfinite(v[i])) finite = 0;
        if (i == 0 || v[i] < vmin) vmin = v[i];
        if (i == 0 || v[i] > vmax) vmax = v[i];
    }
    size_t stride = per > QUANT_MSE_SAMPLE
                        ? (per + QUANT_MSE_SAMPLE - 1) / QUANT_MSE_SAMPLE
                        : 1;
    mse_line l = {v, per, stride, lo, hi, 0, QUANT_INIT_ZERO_STEP, 0.0f};

    if (!offset) {
        double smax = (double)vmax / r->qp;
        if (r->qn > 0 && -(double)vmin / r->qn > smax)
            smax = -(double)vmin / r->qn;
        if (!finite || per == 0 || !(smax >= QUANT_STEP_MIN)) {
            *step = QUANT_INIT_ZERO_STEP;
            return;
        }
        double best = mse_at(&l, smax);
        double s = mse_line_search(&l, 0.0, smax, smax, &best);
        *step = s >= QUANT_STEP_MIN ? (float)s : QUANT_STEP_MIN;
        return;
    }

    double s = ((double)vmax - (double)vmin) / (r->qn + r->qp);
    if (!finite || per == 0 || !(s >= QUANT_STEP_MIN)) {
        /* constant (or empty) channel: beta alone represents it exactly */
        *step = QUANT_INIT_ZERO_STEP;
        *offset = finite && per ? vmin : 0.0f;
        return;
    }
    double beta = (double)vmin + r->qn * s;
    l.s = (float)s;
    l.beta = (float)beta;
    double best = mse_eval(v, per, stride, l.s, l.beta, lo, hi);
    for (int round = 0; round < QUANT_MSE_ROUNDS; round++) {
        double shi = ((double)vmax - beta) / r->qp;
        if (r->qn > 0 && (beta - (double)vmin) / r->qn > shi)
            shi = (beta - (double)vmin) / r->qn;
        if (!(shi >= s)) shi = 2.0 * s;
        l.vary_offset = 0;
        l.beta = (float)beta;
        s = mse_line_search(&l, 0.0, shi, s, &best);
        l.vary_offset = 1;
        l.s = (float)s;
        beta = mse_line_search(&l, (double)vmin - r->qp * s,
                               (double)vmax + r->qn * s, beta, &best);
        l.beta = (float)beta;
    }
    *step = s >= QUANT_STEP_MIN ? (float)s : QUANT_STEP_MIN;
    *offset = (float)beta;
}

void quant_init_mse(float *step, float *offset, const float *v, int channels,
                    size_t per, const quant_range *r)
{
    assert(step && v && r && channels >= 1);
#pragma omp parallel for schedule(static) if (channels > 1)
    for (int c = 0; c < channels; c++)
        init_mse_channel(step + c, offset ? offset + c : NULL,
                         v + (size_t)c * per, per, r);
}

/* ---- guard -------------------------------------------------------------- */

int quant_guard(float *step, const float *prev, size_t count)
{
    assert(step || count == 0);
    int reset = 0;
    for (size_t i = 0; i < count; i++) {
        float s = step[i];
        if (s >= QUANT_STEP_MIN && isfinite(s)) continue;
        float half = prev ? prev[i] * 0.5f : 0.0f;
        step[i] = (half >= QUANT_STEP_MIN && isfinite(half)) ? half
                                                             : QUANT_STEP_MIN;
        reset++;
    }
    return reset;
}
