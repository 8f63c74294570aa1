/* Integer depthwise convolution (dwconv.h): portable C and AVX2, chosen per
 * call from the lsq_kernel path as igemm.c chooses; both compute the exact
 * int32 sums, so they agree bit for bit.
 *
 * Work is one output row (image, oy) at a time, rows spread over OpenMP
 * threads. A row first lists its taps whose input row lies inside the
 * image, with their offsets from the output pixel's window origin; a pixel
 * whose window lies inside the image horizontally uses that list as it is,
 * a border pixel the part of it whose columns are inside. */
#include "deploy/dwconv.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define DW_X86 1
#include <immintrin.h>
#else
#define DW_X86 0
#endif

#define DW_MAX_K 16
#define DW_MAX_TAPS (DW_MAX_K * DW_MAX_K)

lsq_status lsq_dw_pack(lsq_dw_w *pw, const int8_t *w, int c, int k, lsq_err *err)
{
    memset(pw, 0, sizeof *pw);
    if (c < 1 || k < 1 || k > DW_MAX_K)
        return lsq_err_set(err, LSQ_ERR_INVALID, "weights",
                           "depthwise weights must have c >= 1 channels and a kernel of "
                           "1..%d, got c=%d k=%d", DW_MAX_K, c, k);
    const int cp = (c + LSQ_DW_CB - 1) / LSQ_DW_CB * LSQ_DW_CB, taps = k * k;
    const size_t bytes = (size_t)taps * cp * sizeof *pw->w; /* a multiple of 32 */
    pw->w = aligned_alloc(32, bytes);
    if (!pw->w)
        return lsq_err_set(err, LSQ_ERR_NOMEM, "weights",
                           "cannot allocate %zu bytes of depthwise weights", bytes);
    memset(pw->w, 0, bytes);
    pw->c = c, pw->k = k, pw->cp = cp;
    for (int ch = 0; ch < c; ch++)
        for (int t = 0; t < taps; t++) {
            const int v = w[(size_t)ch * taps + t];
            pw->w[(size_t)t * cp + ch] = (int16_t)v;
            if (abs(v) > pw->wmax) pw->wmax = abs(v);
        }
    return LSQ_OK;
}

void lsq_dw_w_free(lsq_dw_w *pw)
{
    if (!pw) return;
    free(pw->w);
    memset(pw, 0, sizeof *pw);
}

/* The taps of one output pixel: tap index and the input pixel it reads
 * (an index into the image, in pixels). */
typedef struct {
    int n;
    int tap[DW_MAX_TAPS];
    long pix[DW_MAX_TAPS];
} taplist;

/* A row's taps whose input row is inside the image; pix relative to the
 * window origin (oy * stride - pad, ox * stride - pad), kx kept to filter
 * border pixels. */
typedef struct {
    int n;
    int tap[DW_MAX_TAPS], kx[DW_MAX_TAPS];
    long rel[DW_MAX_TAPS];
} rowtaps;

static void row_taps(rowtaps *r, const lsq_dw_geom *g, int k, int oy)
{
    const int y0 = oy * g->stride - g->pad;
    r->n = 0;
    for (int ky = 0; ky < k; ky++) {
        const int y = y0 + ky * g->dilation;
        if (y < 0 || y >= g->ih) continue;
        for (int kx = 0; kx < k; kx++) {
            r->tap[r->n] = ky * k + kx;
            r->kx[r->n] = kx;
            r->rel[r->n] = (long)ky * g->dilation * g->iw + (long)kx * g->dilation;
            r->n++;
        }
    }
}

/* The taps of output pixel (oy, ox) from its row's list. */
static void pixel_taps(taplist *t, const rowtaps *r, const lsq_dw_geom *g, int oy, int ox)
{
    const int x0 = ox * g->stride - g->pad;
    const long base = (long)(oy * g->stride - g->pad) * g->iw + x0;
    t->n = 0;
    for (int i = 0; i < r->n; i++) {
        const int x = x0 + r->kx[i] * g->dilation;
        if (x < 0 || x >= g->iw) continue;
        t->tap[t->n] = r->tap[i];
        t->pix[t->n] = base + r->rel[i];
        t->n++;
    }
}

/* One output pixel's sums over channels [c0, c), portable: out[ch] for
 * every channel ch from c0 on. `sign`: A holds int8. */
__attribute__((always_inline)) static inline void
pixel_portable(int32_t *out, const uint8_t *img, const int sign, const taplist *t,
               const lsq_dw_w *w, int c0)
{
    const int c = w->c, cp = w->cp;
    for (int ch = c0; ch < c; ch++) out[ch] = 0;
    for (int i = 0; i < t->n; i++) {
        const uint8_t *x = img + (size_t)t->pix[i] * c;
        const int16_t *wt = w->w + (size_t)t->tap[i] * cp;
        if (sign)
            for (int ch = c0; ch < c; ch++) out[ch] += (int32_t)(int8_t)x[ch] * wt[ch];
        else
            for (int ch = c0; ch < c; ch++) out[ch] += (int32_t)x[ch] * wt[ch];
    }
}

static void pixel_port(int32_t *out, const uint8_t *img, int sign, int acc16, const taplist *t,
                       const lsq_dw_w *w)
{
    (void)acc16;
    if (sign) pixel_portable(out, img, 1, t, w, 0);
    else pixel_portable(out, img, 0, t, w, 0);
}

#if DW_X86
/* 16 channels of every tap from channel c0: codes widened to int16, times
 * the weights (vpmullw: exact, |255 * -128| < 2^15), summed in 16 bits
 * (acc16: the caller checked that no sum can leave them) or widened to 32. */
__attribute__((target("avx2"), always_inline)) static inline void
pixel_avx2_impl(int32_t *out, const uint8_t *img, const int sign, const int acc16,
                const taplist *t, const lsq_dw_w *w)
{
    const int c = w->c, cp = w->cp;
    int c0 = 0;
    for (; c0 + 16 <= c; c0 += 16) {
        __m256i s16 = _mm256_setzero_si256(), lo = s16, hi = s16;
        for (int i = 0; i < t->n; i++) {
            const __m128i raw = _mm_loadu_si128((const __m128i *)(img + (size_t)t->pix[i] * c + c0));
            const __m256i x = sign ? _mm256_cvtepi8_epi16(raw) : _mm256_cvtepu8_epi16(raw);
            const __m256i p = _mm256_mullo_epi16(
                x, _mm256_load_si256((const __m256i *)(w->w + (size_t)t->tap[i] * cp + c0)));
            if (acc16) {
                s16 = _mm256_add_epi16(s16, p);
            } else {
                lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
                hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p, 1)));
            }
        }
        if (acc16) {
            lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s16));
            hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s16, 1));
        }
        _mm256_storeu_si256((__m256i *)(out + c0), lo);
        _mm256_storeu_si256((__m256i *)(out + c0 + 8), hi);
    }
    if (c0 + 8 <= c) {
        __m128i s16 = _mm_setzero_si128(), lo = s16, hi = s16;
        for (int i = 0; i < t->n; i++) {
            const __m128i raw =
                _mm_loadl_epi64((const __m128i *)(img + (size_t)t->pix[i] * c + c0));
            const __m128i x = sign ? _mm_cvtepi8_epi16(raw) : _mm_cvtepu8_epi16(raw);
            const __m128i p = _mm_mullo_epi16(
                x, _mm_load_si128((const __m128i *)(w->w + (size_t)t->tap[i] * cp + c0)));
            if (acc16) {
                s16 = _mm_add_epi16(s16, p);
            } else {
                lo = _mm_add_epi32(lo, _mm_cvtepi16_epi32(p));
                hi = _mm_add_epi32(hi, _mm_cvtepi16_epi32(_mm_srli_si128(p, 8)));
            }
        }
        if (acc16) {
            lo = _mm_cvtepi16_epi32(s16);
            hi = _mm_cvtepi16_epi32(_mm_srli_si128(s16, 8));
        }
        _mm_storeu_si128((__m128i *)(out + c0), lo);
        _mm_storeu_si128((__m128i *)(out + c0 + 4), hi);
        c0 += 8;
    }
    if (c0 < c) pixel_portable(out, img, sign, t, w, c0);
}

__attribute__((target("avx2"))) static void
pixel_avx2(int32_t *out, const uint8_t *img, int sign, int acc16, const taplist *t,
           const lsq_dw_w *w)
{
    if (sign) {
        if (acc16) pixel_avx2_impl(out, img, 1, 1, t, w);
        else pixel_avx2_impl(out, img, 1, 0, t, w);
    } else {
        if (acc16) pixel_avx2_impl(out, img, 0, 1, t, w);
        else pixel_avx2_impl(out, img, 0, 0, t, w);
    }
}
#endif

typedef void pixel_fn(int32_t *out, const uint8_t *img, int sign, int acc16, const taplist *t,
                      const lsq_dw_w *w);

/* Output row r of the depthwise conv: image r / oh, output row r % oh, all
 * its pixels and channels. */
static void dw_row(int32_t *c, const uint8_t *a, long r, const lsq_dw_geom *g, int sign, int acc16,
                   const lsq_dw_w *w, pixel_fn *px)
{
    rowtaps rt;
    taplist tl;
    const int b = (int)(r / g->oh), oy = (int)(r % g->oh);
    const uint8_t *img = a + (size_t)b * g->ih * g->iw * w->c;
    int32_t *out = c + (size_t)r * g->ow * w->c;
    row_taps(&rt, g, w->k, oy);
    for (int ox = 0; ox < g->ow; ox++) {
        pixel_taps(&tl, &rt, g, oy, ox);
        px(out + (size_t)ox * w->c, img, sign, acc16, &tl, w);
    }
}

static lsq_status dw(int32_t *c, const uint8_t *a, int sign, int nimg, const lsq_dw_geom *g,
                     int amax, const lsq_dw_w *w, lsq_kernel kern, int threads, lsq_err *err)
{
    if (!w || !w->w)
        return lsq_err_set(err, LSQ_ERR_INVALID, "weights", "depthwise weights are not packed");
    if ((unsigned)kern >= LSQ_KERNEL_COUNT || !lsq_kernel_supported(kern))
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "kernel path %d is not supported on this CPU", (int)kern);
    if (!g || nimg < 0 || threads < 1 || g->ih < 1 || g->iw < 1 || g->oh < 1 || g->ow < 1 ||
        g->stride < 1 || g->pad < 0 || g->dilation < 1 || amax < 0 || amax > 255 ||
        (long)nimg * g->oh > (1L << 30))
        return lsq_err_set(err, LSQ_ERR_INVALID, "geometry",
                           "bad depthwise convolution geometry or code range");
    pixel_fn *px = pixel_port;
#if DW_X86
    if (kern != LSQ_KERNEL_PORTABLE) px = pixel_avx2;
#endif
    const int k = w->k, taps = k * k;
    const int acc16 = (long)taps * (sign ? 128 : amax) * w->wmax <= 32767;
    const long rows = (long)nimg * g->oh;
    if (threads <= 1 || rows <= 1) {
        /* no OpenMP region: a nested one of one thread (inside
         * lsqm_predict's parallel passes) still starts a team and waits at
         * its barrier on every layer */
        for (long r = 0; r < rows; r++) dw_row(c, a, r, g, sign, acc16, w, px);
        return LSQ_OK;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (long r = 0; r < rows; r++) dw_row(c, a, r, g, sign, acc16, w, px);
    return LSQ_OK;
}

lsq_status lsq_dw_u8(int32_t *c, const uint8_t *a, int nimg, const lsq_dw_geom *g, int amax,
                     const lsq_dw_w *w, lsq_kernel kern, int threads, lsq_err *err)
{
    return dw(c, a, 0, nimg, g, amax, w, kern, threads, err);
}

lsq_status lsq_dw_s8(int32_t *c, const int8_t *a, int nimg, const lsq_dw_geom *g,
                     const lsq_dw_w *w, lsq_kernel kern, int threads, lsq_err *err)
{
    return dw(c, (const uint8_t *)a, 1, nimg, g, 128, w, kern, threads, err);
}
