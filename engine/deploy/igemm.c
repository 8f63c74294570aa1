/* Integer GEMM kernels (see igemm.h for the packed weight layout).
 *
 * Three paths, chosen at run time:
 *  - portable C;
 *  - AVX2: codes widened to int16 and multiplied with vpmaddwd, whose pair
 *    sums (at most 2 * 255 * 128) cannot saturate -- vpmaddubsw could;
 *  - AVX-512 VNNI: vpdpbusd (u8 x s8 -> s32, four products per lane).
 *    Signed activations get 128 added (x ^ 0x80) to become unsigned, and
 *    128 * sum(w) is subtracted per column afterwards.
 * Each path computes exact integer sums, so all agree bit for bit.
 *
 * Weights of 2 or 3 bits stay packed (igemm.h); every path decodes a
 * group of 16 x 4 codes where it uses it, with shifts and masks (a few
 * vector instructions on the SIMD paths), never into a full int8 copy.
 *
 * A is read through `arows`: a plain matrix, or the padded images of a
 * direct convolution whose K groups sit at per-group offsets (taps).
 *
 * Work is split into tiles of TILE_M rows x TILE_P panels, spread over
 * OpenMP threads; a tile's A rows and W panels stay in cache while its
 * micro-kernels run. */
#include "deploy/igemm.h"
#include "quant/quant.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LSQ_X86 1
#include <immintrin.h>
#else
#define LSQ_X86 0
#endif

const char *const LSQ_KERNEL_NAMES[] = {"portable", "avx2", "vnni"};
_Static_assert(sizeof LSQ_KERNEL_NAMES / sizeof *LSQ_KERNEL_NAMES ==
                   LSQ_KERNEL_COUNT,
               "LSQ_KERNEL_NAMES must name every lsq_kernel");

#define TILE_M LSQ_IGEMM_ROWS
#define TILE_P 4

int lsq_kernel_supported(lsq_kernel k)
{
    switch (k) {
    case LSQ_KERNEL_PORTABLE:
        return 1;
#if LSQ_X86
    case LSQ_KERNEL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case LSQ_KERNEL_VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    default:
        return 0;
    }
}

/* The path LSQ_KERNEL names, or -1 (unset, empty or no path's name). */
static int kernel_named(const char *env)
{
    for (int k = 0; env && *env && k < LSQ_KERNEL_COUNT; k++)
        if (strcmp(env, LSQ_KERNEL_NAMES[k]) == 0) return k;
    return -1;
}

lsq_kernel lsq_kernel_select(void)
{
    const int named = kernel_named(getenv("LSQ_KERNEL"));
    if (named >= 0 && lsq_kernel_supported((lsq_kernel)named)) return (lsq_kernel)named;
    for (int k = LSQ_KERNEL_COUNT - 1; k > 0; k--)
        if (lsq_kernel_supported((lsq_kernel)k))
            return (lsq_kernel)k;
    return LSQ_KERNEL_PORTABLE;
}

lsq_status lsq_kernel_from_env(lsq_err *err)
{
    const char *env = getenv("LSQ_KERNEL");
    if (!env || !*env) return LSQ_OK;
    const int named = kernel_named(env);
    if (named >= 0 && lsq_kernel_supported((lsq_kernel)named)) return LSQ_OK;
    if (named >= 0)
        return lsq_err_set(err, LSQ_ERR_INVALID, "LSQ_KERNEL",
                           "LSQ_KERNEL=%s: this CPU cannot run it", env);
    _Static_assert(LSQ_KERNEL_COUNT == 3, "the message names every path");
    return lsq_err_set(err, LSQ_ERR_INVALID, "LSQ_KERNEL", "LSQ_KERNEL=%s: use %s, %s or %s",
                       env, LSQ_KERNEL_NAMES[0], LSQ_KERNEL_NAMES[1], LSQ_KERNEL_NAMES[2]);
}

/* ---- weight storage ----
 * Groups of K per block and bytes per block, by weight bits: 8 bits, one
 * group in 64 bytes; 2 bits, four groups in 64 bytes (byte b of the block
 * holds byte b of group s at bits 2s and 2s + 1, as code + 2); 3 bits,
 * eight groups in 192 bytes (the low two bits of code + 4 of groups 0-3,
 * then 4-7, as for 2 bits, then a 64-byte plane whose byte b holds bit 2
 * of group s at bit s). */
static int blk_groups(int bits) { return bits == 2 ? 4 : bits == 3 ? 8 : 1; }
static int blk_bytes(int bits) { return bits == 3 ? 192 : 64; }

/* Stores code v at byte b (channel b / 4, depth b % 4) of group g of the
 * panel at wp (zeroed before). */
static void put_code(uint8_t *wp, int bits, int g, int b, int v)
{
    if (bits == 2) {
        wp[(size_t)(g / 4) * 64 + b] |= (uint8_t)((v + 2) << 2 * (g % 4));
    } else if (bits == 3) {
        uint8_t *blk = wp + (size_t)(g / 8) * 192;
        const int s = g % 8, u = v + 4;
        blk[(s / 4) * 64 + b] |= (uint8_t)((u & 3) << 2 * (s % 4));
        blk[128 + b] |= (uint8_t)((u >> 2) << s);
    } else {
        wp[(size_t)g * 64 + b] = (uint8_t)v;
    }
}

/* The code at byte b of group g of the panel at wp. */
static inline int get_code(const int8_t *wp, int bits, int g, int b)
{
    const uint8_t *u = (const uint8_t *)wp;
    if (bits == 2)
        return ((u[(size_t)(g / 4) * 64 + b] >> 2 * (g % 4)) & 3) - 2;
    if (bits == 3) {
        const uint8_t *blk = u + (size_t)(g / 8) * 192;
        const int s = g % 8;
        return (((blk[(s / 4) * 64 + b] >> 2 * (s % 4)) & 3) | (((blk[128 + b] >> s) & 1) << 2)) -
               4;
    }
    return wp[(size_t)g * 64 + b];
}

lsq_status lsq_igemm_pack_bits(lsq_igemm_w *pw, const int8_t *w, int n, int k, int bits,
                               lsq_err *err)
{
    memset(pw, 0, sizeof *pw);
    if (n < 1 || k < 1 || k > LSQ_IGEMM_MAX_K)
        return lsq_err_set(err, LSQ_ERR_INVALID, "weights",
                           "weight matrix must be N >= 1 by 1 <= K <= %d, "
                           "got %d x %d", LSQ_IGEMM_MAX_K, n, k);
    if (bits != 8 && bits != 3 && bits != 2)
        return lsq_err_set(err, LSQ_ERR_INVALID, "bits",
                           "packed weights have 8, 3 or 2 bits, got %d", bits);
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (size_t i = 0; i < (size_t)n * k; i++)
        if (w[i] < lo || w[i] > hi)
            return lsq_err_set(err, LSQ_ERR_INVALID, "weights",
                               "weight code %d (row %zu, column %zu) is outside %d bits' "
                               "[%d, %d]", w[i], i / (size_t)k, i % (size_t)k, bits, lo, hi);
    const int kq = (k + 3) / 4, panels = (n + LSQ_IGEMM_NR - 1) / LSQ_IGEMM_NR;
    const int gb = blk_groups(bits), groups = (kq + gb - 1) / gb * gb;
    const size_t pstride = (size_t)groups / gb * blk_bytes(bits); /* a multiple of 64 */
    const size_t bytes = (size_t)panels * pstride;
    pw->w = aligned_alloc(64, bytes);
    pw->colsum = calloc((size_t)panels * LSQ_IGEMM_NR, sizeof *pw->colsum);
    if (!pw->w || !pw->colsum) {
        lsq_igemm_w_free(pw);
        return lsq_err_set(err, LSQ_ERR_NOMEM, "weights",
                           "cannot allocate %zu bytes of packed weights",
                           bytes);
    }
    memset(pw->w, 0, bytes);
    pw->k = k;
    pw->n = n;
    pw->kq = kq;
    pw->panels = panels;
    pw->bits = bits;
    pw->pstride = pstride;
    pw->wmax = 0;
    /* every byte of every group, zero past N and K */
    for (int p = 0; p < panels; p++)
        for (int g = 0; g < groups; g++)
            for (int b = 0; b < 64; b++) {
                const int j = p * LSQ_IGEMM_NR + b / 4, kk = 4 * g + b % 4;
                const int v = j < n && kk < k ? w[(size_t)j * k + kk] : 0;
                put_code((uint8_t *)pw->w + (size_t)p * pstride, bits, g, b, v);
                if (abs(v) > pw->wmax) pw->wmax = abs(v);
                if (j < n) pw->colsum[j] += v;
            }
    return LSQ_OK;
}

lsq_status lsq_igemm_pack(lsq_igemm_w *pw, const int8_t *w, int n, int k,
                          lsq_err *err)
{
    return lsq_igemm_pack_bits(pw, w, n, k, 8, err);
}

void lsq_igemm_codes(int8_t *w, const lsq_igemm_w *pw)
{
    for (int j = 0; j < pw->n; j++)
        for (int kk = 0; kk < pw->k; kk++)
            w[(size_t)j * pw->k + kk] = (int8_t)get_code(
                pw->w + (size_t)(j / LSQ_IGEMM_NR) * pw->pstride, pw->bits, kk / 4,
                (j % LSQ_IGEMM_NR) * 4 + kk % 4);
}

size_t lsq_igemm_w_bytes(const lsq_igemm_w *pw)
{
    return (size_t)pw->panels * pw->pstride;
}

void lsq_igemm_w_free(lsq_igemm_w *pw)
{
    if (!pw)
        return;
    free(pw->w);
    free(pw->colsum);
    memset(pw, 0, sizeof *pw);
}

/* ---- where A's rows are ----
 * Row v of A, of image v / rows and row v % rows in it, starts at
 * a + ((v / rows) * img + v % rows) * lda, and K's group g at goff[g] bytes
 * into the row (the groups of a direct convolution's taps,
 * lsq_igemm_tap_groups), or at 4 g for a plain matrix (goff NULL, rows
 * INT_MAX). With ow > 0 the rows of an image are its outputs only, ow to
 * an output row whose pixels start wp apart: row q of an image sits at
 * pixel (q / ow) * wp + q % ow, and the padding columns between output rows
 * are not computed. The kernels take `taps` as a constant that says
 * which. */
typedef struct {
    const uint8_t *a;
    int lda, rows;
    size_t img;
    const int *goff;
    int ow, wp;
} arows;

static inline const uint8_t *arow(const arows *A, int v)
{
    size_t q = (size_t)(v % A->rows);
    if (A->ow) q = q / (size_t)A->ow * (size_t)A->wp + q % (size_t)A->ow;
    return A->a + ((size_t)(v / A->rows) * A->img + q) * (size_t)A->lda;
}

/* ar[r] = row i + r of A for r < mr, then row i + mr - 1 again up to n (the
 * rows past a block's end repeat its last row; their sums are dropped):
 * one division for the block rather than one for each row. */
static inline void arow_fill(const arows *A, int i, int mr, int n, const uint8_t **ar)
{
    if (!A->ow) {
        for (int r = 0; r < n; r++) ar[r] = arow(A, i + (r < mr ? r : mr - 1));
        return;
    }
    const int oh = A->rows / A->ow;
    int b = i / A->rows, q = i % A->rows, y = q / A->ow, x = q % A->ow;
    for (int r = 0; r < n; r++) {
        if (r < mr) {
            ar[r] = A->a + ((size_t)b * A->img + (size_t)y * A->wp + x) * (size_t)A->lda;
            if (++x == A->ow) {
                x = 0;
                if (++y == oh) y = 0, b++;
            }
        } else {
            ar[r] = ar[mr - 1];
        }
    }
}

/* 1 when rows i .. i + n - 1 of A are evenly spaced, lda apart: all in one
 * image, or with ow, all in one output row. */
static inline int arows_even(const arows *A, int i, int n)
{
    const int span = A->ow ? A->ow : A->rows;
    return i / span == (i + n - 1) / span;
}

/* One tile: rows [i0, i1), panels [p0, p1), C's row i (of A's row i) at
 * c + (i - i0) * ldc: c is the tile's first row, so that a caller can take
 * a tile's sums in a small buffer of its own. `sign` says A holds int8
 * (never with taps). */
typedef void tile_fn(int32_t *c, int ldc, const arows *A, int sign, const lsq_igemm_w *w, int i0,
                     int i1, int p0, int p1);

/* The last group that every row holds in full (taps: all of them). */
static inline int full_groups(const lsq_igemm_w *w, int taps)
{
    return taps ? w->kq : w->k / 4;
}

static void tile_portable(int32_t *c, int ldc, const arows *A, int sign, const lsq_igemm_w *w,
                          int i0, int i1, int p0, int p1)
{
    const int k = w->k, taps = A->goff != NULL, kfull = full_groups(w, taps);
    for (int i = i0; i < i1; i++) {
        const uint8_t *ar = arow(A, i);
        for (int p = p0; p < p1; p++) {
            const int8_t *wp = w->w + (size_t)p * w->pstride;
            int32_t acc[LSQ_IGEMM_NR] = {0};
            for (int g = 0; g < w->kq; g++) {
                int32_t av[4] = {0};
                const int nt = g < kfull ? 4 : k - 4 * g;
                const uint8_t *ag = ar + (taps ? A->goff[g] : 4 * g);
                for (int t = 0; t < nt; t++)
                    av[t] = sign ? (int32_t)(int8_t)ag[t] : (int32_t)ag[t];
                for (int j = 0; j < LSQ_IGEMM_NR; j++)
                    for (int t = 0; t < 4; t++)
                        acc[j] += av[t] * get_code(wp, w->bits, g, 4 * j + t);
            }
            int col0 = p * LSQ_IGEMM_NR;
            int nc = w->n - col0 < LSQ_IGEMM_NR ? w->n - col0 : LSQ_IGEMM_NR;
            memcpy(c + (size_t)(i - i0) * ldc + col0, acc, (size_t)nc * sizeof *acc);
        }
    }
}

#if LSQ_X86
/* The 4 activation bytes of group g of a row; bytes past K read as zero
 * (their weights are zero padding, and this never reads past the row). */
static inline uint32_t load_group(const uint8_t *row, int g, int k)
{
    uint32_t v = 0;
    int rem = k - 4 * g;
    memcpy(&v, row + 4 * g, rem >= 4 ? 4 : (size_t)rem);
    return v;
}

/* ---- AVX2: 4 rows x 8 columns per micro-kernel ---- */
#define AVX2_MR 4

/* Bytes [32 h, 32 h + 32) of group g of the panel at wp: channels
 * 8h .. 8h + 7, 4 codes each, decoded from 2 or 3 bits. */
__attribute__((target("avx2"), always_inline)) static inline __m256i
avx2_wgroup(const int8_t *wp, int g, int h, const int bits)
{
    if (bits == 8)
        return _mm256_load_si256((const __m256i *)(wp + (size_t)g * 64 + 32 * h));
    const __m256i m3 = _mm256_set1_epi8(3);
    if (bits == 2) {
        const __m256i p = _mm256_load_si256((const __m256i *)(wp + (size_t)(g / 4) * 64 + 32 * h));
        const __m256i v = _mm256_and_si256(_mm256_srl_epi16(p, _mm_cvtsi32_si128(2 * (g % 4))), m3);
        return _mm256_sub_epi8(v, _mm256_set1_epi8(2));
    }
    const int8_t *blk = wp + (size_t)(g / 8) * 192;
    const int s = g % 8;
    const __m256i l = _mm256_load_si256((const __m256i *)(blk + (s / 4) * 64 + 32 * h));
    const __m256i hb = _mm256_load_si256((const __m256i *)(blk + 128 + 32 * h));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(l, _mm_cvtsi32_si128(2 * (s % 4))), m3);
    const __m256i hi = _mm256_slli_epi16(
        _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(s)), _mm256_set1_epi8(1)), 2);
    return _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(4));
}

/* always_inline with constant `sign`, `taps` and `bits` gives one copy per
 * combination, with no test inside the loops (here and below). */
__attribute__((target("avx2"), always_inline)) static inline void
tile_avx2_impl(int32_t *c, int ldc, const arows *A, const int taps, const int sign, const int bits,
               const lsq_igemm_w *w, int i0, int i1, int p0, int p1)
{
    const int k = w->k, kfull = full_groups(w, taps);
    for (int i = i0; i < i1; i += AVX2_MR) {
        int mr = i1 - i < AVX2_MR ? i1 - i : AVX2_MR;
        const uint8_t *ar[AVX2_MR];
        arow_fill(A, i, mr, AVX2_MR, ar);
        for (int h = 2 * p0; h < 2 * p1; h++) { /* half panels of 8 columns */
            const int8_t *wp = w->w + (size_t)(h / 2) * w->pstride;
            __m256i lo[AVX2_MR], hi[AVX2_MR];
#pragma GCC unroll 4
            for (int r = 0; r < AVX2_MR; r++)
                lo[r] = hi[r] = _mm256_setzero_si256();
            for (int g = 0; g < w->kq; g++) {
                /* columns 0-3 and 4-7 of the half panel, 4 k each, as int16 */
                const __m256i wh = avx2_wgroup(wp, g, h % 2, bits);
                __m256i w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(wh));
                __m256i w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(wh, 1));
                const int full = g < kfull, o = taps ? A->goff[g] : 4 * g;
#pragma GCC unroll 4
                for (int r = 0; r < AVX2_MR; r++) {
                    uint32_t av;
                    if (full)
                        memcpy(&av, ar[r] + o, 4);
                    else
                        av = load_group(ar[r], g, k);
                    __m128i a4 = _mm_set1_epi32((int)av);
                    /* a0 a1 a2 a3 repeated, as int16 */
                    __m256i va = sign ? _mm256_cvtepi8_epi16(a4)
                                      : _mm256_cvtepu8_epi16(a4);
                    lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(w0, va));
                    hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(w1, va));
                }
            }
            int col0 = h * 8;
            int nc = w->n - col0 < 8 ? w->n - col0 : 8;
            if (nc <= 0)
                continue;
            for (int r = 0; r < mr; r++) {
                /* lanes hold (column, k-pair) partial sums: add the pairs,
                 * then restore column order across the 128-bit halves */
                __m256i s = _mm256_hadd_epi32(lo[r], hi[r]);
                s = _mm256_permute4x64_epi64(s, 0xD8);
                int32_t *cr = c + (size_t)(i - i0 + r) * ldc + col0;
                if (nc == 8) {
                    _mm256_storeu_si256((__m256i *)cr, s);
                } else {
                    int32_t tmp[8];
                    _mm256_storeu_si256((__m256i *)tmp, s);
                    memcpy(cr, tmp, (size_t)nc * sizeof *tmp);
                }
            }
        }
    }
}

/* ---- AVX2, low-bit codes: 4 rows x 16 columns per micro-kernel ----
 * The 4 codes of a group, broadcast, times a half panel (8 columns x 4 k)
 * with vpmaddubsw: 16 int16 lanes, (column, k-pair) each, summed in 16 bits
 * over all of K (the caller checked the bound); one vpmaddwd by ones at the
 * end adds the pairs into column order. Unsigned A only. */
__attribute__((target("avx2"), always_inline)) static inline void
lowbit_impl(int32_t *c, int ldc, const arows *A, const int taps, const int bits,
            const lsq_igemm_w *w, int i0, int i1, int p0, int p1, const int8_t *dec)
{
    const int k = w->k, kfull = full_groups(w, taps);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i = i0; i < i1; i += AVX2_MR) {
        int mr = i1 - i < AVX2_MR ? i1 - i : AVX2_MR;
        const uint8_t *ar[AVX2_MR];
        arow_fill(A, i, mr, AVX2_MR, ar);
        for (int p = p0; p < p1; p++) {
            const int8_t *wp = dec ? dec : w->w + (size_t)p * w->pstride;
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
            __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int g = 0; g < w->kq; g++) {
                const __m256i w0 = avx2_wgroup(wp, g, 0, bits);
                const __m256i w1 = avx2_wgroup(wp, g, 1, bits);
                /* each row's 4 codes, read straight into the broadcast
                 * (a branch or array here kept them on the stack) */
                uint32_t av[AVX2_MR];
                if (taps) {
                    const int o = A->goff[g];
                    memcpy(&av[0], ar[0] + o, 4), memcpy(&av[1], ar[1] + o, 4);
                    memcpy(&av[2], ar[2] + o, 4), memcpy(&av[3], ar[3] + o, 4);
                } else if (g < kfull) {
                    memcpy(&av[0], ar[0] + 4 * g, 4), memcpy(&av[1], ar[1] + 4 * g, 4);
                    memcpy(&av[2], ar[2] + 4 * g, 4), memcpy(&av[3], ar[3] + 4 * g, 4);
                } else {
                    for (int r = 0; r < AVX2_MR; r++) av[r] = load_group(ar[r], g, k);
                }
                __m256i va = _mm256_set1_epi32((int)av[0]);
                a00 = _mm256_add_epi16(a00, _mm256_maddubs_epi16(va, w0));
                a01 = _mm256_add_epi16(a01, _mm256_maddubs_epi16(va, w1));
                va = _mm256_set1_epi32((int)av[1]);
                a10 = _mm256_add_epi16(a10, _mm256_maddubs_epi16(va, w0));
                a11 = _mm256_add_epi16(a11, _mm256_maddubs_epi16(va, w1));
                va = _mm256_set1_epi32((int)av[2]);
                a20 = _mm256_add_epi16(a20, _mm256_maddubs_epi16(va, w0));
                a21 = _mm256_add_epi16(a21, _mm256_maddubs_epi16(va, w1));
                va = _mm256_set1_epi32((int)av[3]);
                a30 = _mm256_add_epi16(a30, _mm256_maddubs_epi16(va, w0));
                a31 = _mm256_add_epi16(a31, _mm256_maddubs_epi16(va, w1));
            }
            const __m256i acc[AVX2_MR][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            const int col0 = p * LSQ_IGEMM_NR;
            const int nc = w->n - col0 < LSQ_IGEMM_NR ? w->n - col0 : LSQ_IGEMM_NR;
            for (int r = 0; r < mr; r++) {
                int32_t *cr = c + (size_t)(i - i0 + r) * ldc + col0;
                __m256i s0 = _mm256_madd_epi16(acc[r][0], ones);
                __m256i s1 = _mm256_madd_epi16(acc[r][1], ones);
                if (nc == LSQ_IGEMM_NR) {
                    _mm256_storeu_si256((__m256i *)cr, s0);
                    _mm256_storeu_si256((__m256i *)(cr + 8), s1);
                } else {
                    int32_t tmp[LSQ_IGEMM_NR];
                    _mm256_storeu_si256((__m256i *)tmp, s0);
                    _mm256_storeu_si256((__m256i *)(tmp + 8), s1);
                    memcpy(cr, tmp, (size_t)nc * sizeof *tmp);
                }
            }
        }
    }
}

/* One copy per (A form, weight bits). */
#define BY_BITS(call_, bits_)                                                                      \
    do {                                                                                           \
        if ((bits_) == 2) call_(2);                                                                \
        else if ((bits_) == 3) call_(3);                                                           \
        else call_(8);                                                                             \
    } while (0)

__attribute__((target("avx2"))) static void
tile_avx2(int32_t *c, int ldc, const arows *A, int sign, const lsq_igemm_w *w, int i0, int i1,
          int p0, int p1)
{
#define AVX2_TAPS(b_) tile_avx2_impl(c, ldc, A, 1, 0, b_, w, i0, i1, p0, p1)
#define AVX2_S8(b_) tile_avx2_impl(c, ldc, A, 0, 1, b_, w, i0, i1, p0, p1)
#define AVX2_U8(b_) tile_avx2_impl(c, ldc, A, 0, 0, b_, w, i0, i1, p0, p1)
    if (A->goff) BY_BITS(AVX2_TAPS, w->bits);
    else if (sign) BY_BITS(AVX2_S8, w->bits);
    else BY_BITS(AVX2_U8, w->bits);
}

/* Panel p of 2- or 3-bit weights as 8-bit codes in the 8-bit layout
 * (group g at dec + 64 g), for lowbit_impl with bits 8. */
__attribute__((target("avx2"))) static void
lowbit_decode(int8_t *dec, const lsq_igemm_w *w, int p)
{
    const int8_t *wp = w->w + (size_t)p * w->pstride;
    for (int g = 0; g < w->kq; g++) {
        const __m256i w0 = w->bits == 2 ? avx2_wgroup(wp, g, 0, 2) : avx2_wgroup(wp, g, 0, 3);
        const __m256i w1 = w->bits == 2 ? avx2_wgroup(wp, g, 1, 2) : avx2_wgroup(wp, g, 1, 3);
        _mm256_store_si256((__m256i *)(dec + (size_t)g * 64), w0);
        _mm256_store_si256((__m256i *)(dec + (size_t)g * 64 + 32), w1);
    }
}

/* Bytes of a decoded panel lowbit's tiles keep on the stack: K up to 1024. */
#define LOWBIT_DEC_BYTES (256 * 64)

__attribute__((target("avx2"))) static void
tile_avx2_lowbit(int32_t *c, int ldc, const arows *A, int sign, const lsq_igemm_w *w, int i0,
                 int i1, int p0, int p1)
{
    (void)sign;
    if (w->bits != 8 && (size_t)w->kq * 64 <= LOWBIT_DEC_BYTES) {
        /* 2 and 3 bits: each panel decoded once for the tile's rows, not
         * once for every 4 of them */
        _Alignas(64) int8_t dec[LOWBIT_DEC_BYTES];
        for (int p = p0; p < p1; p++) {
            lowbit_decode(dec, w, p);
            if (A->goff) lowbit_impl(c, ldc, A, 1, 8, w, i0, i1, p, p + 1, dec);
            else lowbit_impl(c, ldc, A, 0, 8, w, i0, i1, p, p + 1, dec);
        }
        return;
    }
#define LOWBIT_TAPS(b_) lowbit_impl(c, ldc, A, 1, b_, w, i0, i1, p0, p1, NULL)
#define LOWBIT_MAT(b_) lowbit_impl(c, ldc, A, 0, b_, w, i0, i1, p0, p1, NULL)
    if (A->goff) BY_BITS(LOWBIT_TAPS, w->bits);
    else BY_BITS(LOWBIT_MAT, w->bits);
}

/* ---- AVX-512 VNNI: 8 rows x 32 columns (2 panels), 16 rows x 16
 * columns (a lone panel) or 1 row x 64 columns per micro-kernel ---- */
#define VNNI_TARGET "avx512f,avx512bw,avx512vnni,avx512vl"

/* Group g of the panel at wp: 16 channels x 4 codes, decoded from 2 or 3
 * bits with one or two shifts and masks. */
__attribute__((target(VNNI_TARGET), always_inline)) static inline __m512i
vnni_wgroup(const int8_t *wp, int g, const int bits)
{
    if (bits == 8)
        return _mm512_load_si512(wp + (size_t)g * 64);
    const __m512i m3 = _mm512_set1_epi8(3);
    if (bits == 2) {
        const __m512i p = _mm512_load_si512(wp + (size_t)(g / 4) * 64);
        const __m512i v = _mm512_and_si512(_mm512_srl_epi16(p, _mm_cvtsi32_si128(2 * (g % 4))), m3);
        return _mm512_sub_epi8(v, _mm512_set1_epi8(2));
    }
    const int8_t *blk = wp + (size_t)(g / 8) * 192;
    const int s = g % 8;
    const __m512i l = _mm512_load_si512(blk + (s / 4) * 64);
    const __m512i hb = _mm512_load_si512(blk + 128);
    const __m512i lo = _mm512_and_si512(_mm512_srl_epi16(l, _mm_cvtsi32_si128(2 * (s % 4))), m3);
    const __m512i hi = _mm512_slli_epi16(
        _mm512_and_si512(_mm512_srl_epi16(hb, _mm_cvtsi32_si128(s)), _mm512_set1_epi8(1)), 2);
    return _mm512_sub_epi8(_mm512_or_si512(lo, hi), _mm512_set1_epi8(4));
}

/* acc += a (unsigned bytes) . b (signed bytes), four at a time per 32-bit
 * lane, with the accumulator tied to its register. Through the intrinsic,
 * GCC 12 copies each of a 16-accumulator block's sums to another register
 * and back on every pass of the K loop and spills some of them to the
 * stack, which puts a store and a reload in their dependency chains. */
__attribute__((target(VNNI_TARGET), always_inline)) static inline __m512i
dpbusd(__m512i acc, __m512i a, __m512i b)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* MR rows (mr of them real) x NP panels from panel p (MR * NP <= 16
 * accumulators) into c (row i's sums), all constants but mr and p where it
 * is inlined. `affine`:
 * the MR rows are evenly spaced (all in one image), so that one pointer
 * and the stride address them instead of MR pointers, which would not fit
 * in the general registers. */
__attribute__((target(VNNI_TARGET), always_inline)) static inline void
vnni_block(int32_t *c, int ldc, const arows *A, const int taps, const int sign, const int bits,
           const int MR, const int NP, const int affine, const lsq_igemm_w *w, int i, int mr,
           int p, const int8_t *dec)
{
    const int k = w->k, kfull = full_groups(w, taps), kq = w->kq;
    const __m512i flip = _mm512_set1_epi32(sign ? (int)0x80808080u : 0);
    const int8_t *wp[4];
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++)
        wp[q] = dec ? dec + (size_t)q * w->kq * 64 : w->w + (size_t)(p + q) * w->pstride;
    const uint8_t *ar[16];
    const uint8_t *const a0 = affine ? arow(A, i) : NULL;
    const size_t lda = (size_t)A->lda;
    if (!affine) arow_fill(A, i, mr, MR, ar);
#define ROW(r_) (affine ? a0 + (size_t)(r_) * lda : ar[r_])
    /* one flat array of at most 16 (GCC keeps an array that small, fully
     * unrolled, in registers; [4][16] went to the stack) */
    __m512i acc[16];
#define ACC(q_, r_) acc[(q_) * MR + (r_)]
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++)
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
            ACC(q, r) = _mm512_setzero_si512();
    /* the groups every row holds in full, then the partial last one */
    for (int g = 0; g < kfull; g++) {
        __m512i b[4];
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            b[q] = vnni_wgroup(wp[q], g, bits);
        const int o = taps ? A->goff[g] : 4 * g;
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            uint32_t av;
            memcpy(&av, ROW(r) + o, 4);
            const __m512i va = _mm512_xor_si512(_mm512_set1_epi32((int)av), flip);
#pragma GCC unroll 4
            for (int q = 0; q < NP; q++)
                ACC(q, r) = dpbusd(ACC(q, r), va, b[q]);
        }
    }
    if (kfull < kq) {
        const int g = kfull;
        __m512i b[4];
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++)
            b[q] = vnni_wgroup(wp[q], g, bits);
        /* bytes past K read as zero (0x80 with int8 A), against zero
         * padding weights: they add nothing */
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            const __m512i va =
                _mm512_xor_si512(_mm512_set1_epi32((int)load_group(ROW(r), g, k)), flip);
#pragma GCC unroll 4
            for (int q = 0; q < NP; q++)
                ACC(q, r) = dpbusd(ACC(q, r), va, b[q]);
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++) {
        const int col0 = (p + q) * LSQ_IGEMM_NR;
        const int nc = w->n - col0 < 16 ? w->n - col0 : 16;
        const __mmask16 mask = (__mmask16)((1u << nc) - 1);
        __m512i corr = _mm512_setzero_si512();
        if (sign)
            corr = _mm512_slli_epi32(_mm512_loadu_si512(w->colsum + col0), 7);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
            if (r < mr)
                _mm512_mask_storeu_epi32(c + (size_t)r * ldc + col0, mask,
                                         _mm512_sub_epi32(ACC(q, r), corr));
    }
#undef ACC
#undef ROW
}

/* Panels in pairs (8 rows at a time) and a lone last panel 16 rows at a
 * time, so that no panel is computed twice, then rows in fours; the last
 * rows (fewer than 4: a batch-1 linear layer's one row) one at a time
 * across up to 4 panels, so that no row's work is thrown away and a
 * matrix-vector product still has 4 independent sums in flight. */
__attribute__((target(VNNI_TARGET), always_inline)) static inline void
tile_vnni_impl(int32_t *c, int ldc, const arows *A, const int taps, const int sign, const int bits,
               const lsq_igemm_w *w, int i0, int i1, int p0, int p1, const int8_t *dec)
{
    /* panel p of the decoded panels, which start at panel p0 */
#define DEC_AT(p_) (dec ? dec + (size_t)((p_) - p0) * w->kq * 64 : NULL)
    const int itail = i0 + (i1 - i0) / 4 * 4;
    for (int p = p0; p < p1; p += 2) {
        int i = i0;
        if (p + 1 < p1) {
            for (; i + 8 <= itail; i += 8) {
                if (arows_even(A, i, 8)) vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 8, 2, 1, w, i, 8, p, DEC_AT(p));
                else vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 8, 2, 0, w, i, 8, p, DEC_AT(p));
            }
            for (; i < itail; i += 4) vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 4, 2, 0, w, i, 4, p, DEC_AT(p));
        } else {
            for (; i + 16 <= itail; i += 16) {
                if (arows_even(A, i, 16)) vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 16, 1, 1, w, i, 16, p, DEC_AT(p));
                else vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 16, 1, 0, w, i, 16, p, DEC_AT(p));
            }
            for (; i < itail; i += 4) vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 4, 1, 0, w, i, 4, p, DEC_AT(p));
        }
    }
    for (int i = itail; i < i1; i++)
        for (int p = p0; p < p1;) {
            if (p + 4 <= p1) {
                vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 1, 4, 0, w, i, 1, p, DEC_AT(p));
                p += 4;
            } else if (p + 2 <= p1) {
                vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 1, 2, 0, w, i, 1, p, DEC_AT(p));
                p += 2;
            } else {
                vnni_block(c + (size_t)(i - i0) * ldc, ldc, A, taps, sign, bits, 1, 1, 0, w, i, 1, p, DEC_AT(p));
                p++;
            }
        }
#undef DEC_AT
}

/* Panels p and p + 1 (np of them) of 2- or 3-bit weights as 8-bit codes in
 * the 8-bit layout, kq groups of 64 bytes each. */
__attribute__((target(VNNI_TARGET))) static void
vnni_decode(int8_t *dec, const lsq_igemm_w *w, int p, int np)
{
    for (int q = 0; q < np; q++) {
        const int8_t *wp = w->w + (size_t)(p + q) * w->pstride;
        int8_t *d = dec + (size_t)q * w->kq * 64;
        for (int g = 0; g < w->kq; g++)
            _mm512_store_si512(d + (size_t)g * 64, w->bits == 2 ? vnni_wgroup(wp, g, 2)
                                                                : vnni_wgroup(wp, g, 3));
    }
}

/* Bytes of the decoded panel pair a tile keeps on the stack: K up to 1024. */
#define VNNI_DEC_BYTES (2 * 256 * 64)

__attribute__((target(VNNI_TARGET))) static void
tile_vnni(int32_t *c, int ldc, const arows *A, int sign, const lsq_igemm_w *w, int i0, int i1,
          int p0, int p1)
{
    if (w->bits != 8 && (size_t)w->kq * 64 * 2 <= VNNI_DEC_BYTES && i1 - i0 >= 8) {
        /* 2 and 3 bits over 8 rows or more: each pair of panels decoded
         * once for the tile's rows, not once for every 8 or 16 of them */
        _Alignas(64) int8_t dec[VNNI_DEC_BYTES];
        for (int p = p0; p < p1; p += 2) {
            const int np = p + 1 < p1 ? 2 : 1;
            vnni_decode(dec, w, p, np);
            if (A->goff) tile_vnni_impl(c, ldc, A, 1, 0, 8, w, i0, i1, p, p + np, dec);
            else if (sign) tile_vnni_impl(c, ldc, A, 0, 1, 8, w, i0, i1, p, p + np, dec);
            else tile_vnni_impl(c, ldc, A, 0, 0, 8, w, i0, i1, p, p + np, dec);
        }
        return;
    }
#define VNNI_TAPS(b_) tile_vnni_impl(c, ldc, A, 1, 0, b_, w, i0, i1, p0, p1, NULL)
#define VNNI_S8(b_) tile_vnni_impl(c, ldc, A, 0, 1, b_, w, i0, i1, p0, p1, NULL)
#define VNNI_U8(b_) tile_vnni_impl(c, ldc, A, 0, 0, b_, w, i0, i1, p0, p1, NULL)
    if (A->goff) BY_BITS(VNNI_TAPS, w->bits);
    else if (sign) BY_BITS(VNNI_S8, w->bits);
    else BY_BITS(VNNI_U8, w->bits);
}
#endif

/* Runs fn over m rows x `panels` panels in tiles of TILE_M rows x TILE_P
 * panels. Dynamic: a thread slowed by another process does not hold up the
 * rest; tiles are independent, so results do not depend on the order. */
struct gemm_job {
    tile_fn *tile;
    int32_t *c;
    int ldc;
    arows A;
    int sign;
    const lsq_igemm_w *w;
};

/* Tile t of m rows in tiles of TILE_M rows x TILE_P panels (tp of them
 * across). */
static void run_tile(const struct gemm_job *j, int m, long tp, long t)
{
    const int panels = j->w->panels;
    const int i0 = (int)(t / tp) * TILE_M, p0 = (int)(t % tp) * TILE_P;
    const int i1 = i0 + TILE_M < m ? i0 + TILE_M : m;
    const int p1 = p0 + TILE_P < panels ? p0 + TILE_P : panels;
    j->tile(j->c + (size_t)i0 * j->ldc, j->ldc, &j->A, j->sign, j->w, i0, i1, p0, p1);
}

static void run_tiles(int m, const struct gemm_job *j, int threads)
{
    const int panels = j->w->panels;
    long tm = (m + TILE_M - 1) / TILE_M;
    long tp = (panels + TILE_P - 1) / TILE_P;
    long tiles = tm * tp;
    if (threads <= 1 || tiles <= 1) {
        /* no OpenMP region at all: inside lsqm_predict's parallel passes, a
         * nested region of one thread still starts a team and waits at its
         * barrier (futex calls) on every GEMM */
        for (long t = 0; t < tiles; t++) run_tile(j, m, tp, t);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic)
    for (long t = 0; t < tiles; t++) run_tile(j, m, tp, t);
}

/* 1 when the low-bit kernel's sums fit 16 bits for codes up to amax. */
static int lowbit_fits(const lsq_igemm_w *w, int amax)
{
    return quant_pairs_fit_int16(w->kq, amax, w->wmax);
}

/* The tile function of path kern for this problem (amax: the largest code
 * of unsigned A when known, else -1). */
static tile_fn *pick_tile(const lsq_igemm_w *w, int sign, int amax, lsq_kernel kern)
{
#if LSQ_X86
    if (kern == LSQ_KERNEL_AVX2)
        return !sign && lowbit_fits(w, amax) ? tile_avx2_lowbit : tile_avx2;
    if (kern == LSQ_KERNEL_VNNI)
        return tile_vnni;
#else
    (void)w, (void)sign, (void)amax, (void)kern;
#endif
    return tile_portable;
}

static lsq_status check_w_kern(const lsq_igemm_w *w, lsq_kernel kern, lsq_err *err)
{
    if (!w || !w->w)
        return lsq_err_set(err, LSQ_ERR_INVALID, "weights",
                           "weights are not packed");
    if ((unsigned)kern >= LSQ_KERNEL_COUNT || !lsq_kernel_supported(kern))
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "kernel path %d is not supported on this CPU",
                           (int)kern);
    return LSQ_OK;
}

static lsq_status igemm(int32_t *c, int ldc, const uint8_t *a, int lda,
                        int sign, int m, int amax, const lsq_igemm_w *w,
                        lsq_kernel kern, int threads, lsq_err *err)
{
    lsq_status st = check_w_kern(w, kern, err);
    if (st != LSQ_OK)
        return st;
    if (m < 0 || lda < w->k || ldc < w->n || threads < 1)
        return lsq_err_set(err, LSQ_ERR_INVALID, "gemm",
                           "bad GEMM geometry: m=%d lda=%d (K=%d) ldc=%d "
                           "(N=%d) threads=%d", m, lda, w->k, ldc, w->n,
                           threads);
    const struct gemm_job job = {pick_tile(w, sign, amax, kern), c, ldc,
                                 {a, lda, INT_MAX, 0, NULL, 0, 0}, sign, w};
    run_tiles(m, &job, threads);
    return LSQ_OK;
}

lsq_status lsq_igemm_u8(int32_t *c, int ldc, const uint8_t *a, int lda, int m,
                        const lsq_igemm_w *w, lsq_kernel kern, int threads,
                        lsq_err *err)
{
    return igemm(c, ldc, a, lda, 0, m, -1, w, kern, threads, err);
}

lsq_status lsq_igemm_u8_max(int32_t *c, int ldc, const uint8_t *a, int lda, int m,
                            int amax, const lsq_igemm_w *w, lsq_kernel kern, int threads,
                            lsq_err *err)
{
    return igemm(c, ldc, a, lda, 0, m, amax, w, kern, threads, err);
}

lsq_status lsq_igemm_s8(int32_t *c, int ldc, const int8_t *a, int lda, int m,
                        const lsq_igemm_w *w, lsq_kernel kern, int threads,
                        lsq_err *err)
{
    /* Same bits, read as int8 by the kernels. */
    return igemm(c, ldc, (const uint8_t *)a, lda, 1, m, -1, w, kern, threads, err);
}

int lsq_igemm_taps_ok(const lsq_igemm_w *w, int ic, int amax, lsq_kernel kern)
{
    (void)amax;
    /* IC = 1: the caller lays K out as runs of 4 adjacent codes */
    return lsq_kernel_supported(kern) && w && w->w && ic > 0 &&
           ((ic % 4 == 0 && w->k % ic == 0) || (ic == 1 && w->k % 4 == 0));
}

void lsq_igemm_tap_groups(int *goff, const int *taps, int ntaps, int ic)
{
    for (int g = 0; g < ntaps * ic / 4; g++)
        goff[g] = taps[4 * g / ic] * ic + 4 * g % ic;
}

/* The checks of lsq_igemm_u8_taps and its job. */
static lsq_status taps_job(struct gemm_job *job, int32_t *c, int ldc, const uint8_t *a, int ic,
                           int nimg, int rows, int ow, int wp, size_t img, const int *goff,
                           int amax, const lsq_igemm_w *w, lsq_kernel kern, int threads,
                           lsq_err *err)
{
    lsq_status st = check_w_kern(w, kern, err);
    if (st != LSQ_OK)
        return st;
    if (!lsq_igemm_taps_ok(w, ic, amax, kern) || !goff)
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "a direct integer convolution needs IC a multiple of 4 dividing K, "
                           "or IC = 1 and K a multiple of 4 (IC=%d, K=%d), and tap offsets",
                           ic, w->k);
    if (nimg < 0 || rows < 1 || ldc < w->n || threads < 1 || (long)nimg * rows > INT_MAX)
        return lsq_err_set(err, LSQ_ERR_INVALID, "gemm",
                           "bad direct convolution geometry: %d images of %d rows, ldc=%d "
                           "(N=%d) threads=%d", nimg, rows, ldc, w->n, threads);
    *job = (struct gemm_job){pick_tile(w, 0, amax, kern), c, ldc,
                             {a, ic, rows, img, goff, ow, wp}, 0, w};
    return LSQ_OK;
}

lsq_status lsq_igemm_u8_taps(int32_t *c, int ldc, const uint8_t *a, int ic, int nimg, int rows,
                             size_t img, const int *goff, int amax, const lsq_igemm_w *w,
                             lsq_kernel kern, int threads, lsq_err *err)
{
    struct gemm_job job;
    lsq_status st = taps_job(&job, c, ldc, a, ic, nimg, rows, 0, 0, img, goff, amax, w, kern,
                             threads, err);
    if (st == LSQ_OK)
        run_tiles(nimg * rows, &job, threads);
    return st;
}

lsq_status lsq_igemm_u8_taps_rows(int32_t *c, int ldc, const uint8_t *a, int ic, int nimg,
                                  int oh, int ow, int wp, size_t img, const int *goff, int amax,
                                  const lsq_igemm_w *w, lsq_kernel kern, lsq_igemm_rows_fn *fn,
                                  void *ctx, lsq_err *err)
{
    if (oh < 1 || ow < 1 || wp < ow || (long)oh * ow > INT_MAX || (size_t)(oh - 1) * wp + ow > img)
        return lsq_err_set(err, LSQ_ERR_INVALID, "gemm",
                           "bad direct convolution outputs: %d rows of %d, %d pixels apart, in "
                           "images of %zu pixels", oh, ow, wp, img);
    const int rows = oh * ow;
    struct gemm_job job;
    lsq_status st = taps_job(&job, c, ldc, a, ic, nimg, rows, ow, wp, img, goff, amax, w, kern, 1,
                             err);
    if (st != LSQ_OK)
        return st;
    if (!fn)
        return lsq_err_set(err, LSQ_ERR_INVALID, "gemm", "no function takes the rows");
    const int m = nimg * rows, panels = w->panels;
    for (int i0 = 0; i0 < m; i0 += TILE_M) {
        const int i1 = i0 + TILE_M < m ? i0 + TILE_M : m;
        for (int p0 = 0; p0 < panels; p0 += TILE_P)
            job.tile(c, ldc, &job.A, 0, w, i0, i1, p0, p0 + TILE_P < panels ? p0 + TILE_P : panels);
        fn(ctx, c, ldc, i0, i1);
    }
    return LSQ_OK;
}
