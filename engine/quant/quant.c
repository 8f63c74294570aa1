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
