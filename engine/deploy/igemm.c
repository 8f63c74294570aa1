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

#define TILE_M 64
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

lsq_kernel lsq_kernel_select(void)
{
    const char *env = getenv("LSQ_KERNEL");
    if (env)
        for (int k = 0; k < LSQ_KERNEL_COUNT; k++)
            if (strcmp(env, LSQ_KERNEL_NAMES[k]) == 0 &&
                lsq_kernel_supported((lsq_kernel)k))
                return (lsq_kernel)k;
    for (int k = LSQ_KERNEL_COUNT - 1; k > 0; k--)
        if (lsq_kernel_supported((lsq_kernel)k))
            return (lsq_kernel)k;
    return LSQ_KERNEL_PORTABLE;
}

lsq_status lsq_igemm_pack(lsq_igemm_w *pw, const int8_t *w, int n, int k,
                          lsq_err *err)
{
    memset(pw, 0, sizeof *pw);
    if (n < 1 || k < 1 || k > LSQ_IGEMM_MAX_K)
        return lsq_err_set(err, LSQ_ERR_INVALID, "weights",
                           "weight matrix must be N >= 1 by 1 <= K <= %d, "
                           "got %d x %d", LSQ_IGEMM_MAX_K, n, k);
    int kq = (k + 3) / 4, panels = (n + LSQ_IGEMM_NR - 1) / LSQ_IGEMM_NR;
    size_t bytes = (size_t)panels * kq * LSQ_IGEMM_NR * 4; /* multiple of 64 */
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
    pw->wmax = 0;
    for (int j = 0; j < n; j++) {
        int p = j / LSQ_IGEMM_NR, jj = j % LSQ_IGEMM_NR;
        int8_t *dst = pw->w + (size_t)p * kq * 64 + jj * 4;
        int32_t sum = 0;
        for (int kk = 0; kk < k; kk++) {
            int8_t v = w[(size_t)j * k + kk];
            dst[(size_t)(kk / 4) * 64 + kk % 4] = v;
            sum += v;
            if (abs(v) > pw->wmax) pw->wmax = abs(v);
        }
        pw->colsum[j] = sum;
    }
    return LSQ_OK;
}

void lsq_igemm_w_free(lsq_igemm_w *pw)
{
    if (!pw)
        return;
    free(pw->w);
    free(pw->colsum);
    memset(pw, 0, sizeof *pw);
}

/* One tile: rows [i0, i1), panels [p0, p1). `sign` says A holds int8
 * (the low-bit kernel takes unsigned A only). */
typedef void tile_fn(int32_t *c, int ldc, const uint8_t *a, int lda, int sign,
                     const lsq_igemm_w *w, int i0, int i1, int p0, int p1);

/* always_inline with a constant `sign` gives one copy per signedness, with
 * no test inside the loops (here and in the SIMD paths below). */
__attribute__((always_inline)) static inline void
tile_portable_impl(int32_t *c, int ldc, const uint8_t *a, int lda,
                   const int sign, const lsq_igemm_w *w, int i0, int i1,
                   int p0, int p1)
{
    int k = w->k, kfull = k / 4;
    for (int i = i0; i < i1; i++) {
        const uint8_t *ar = a + (size_t)i * lda;
        for (int p = p0; p < p1; p++) {
            const int8_t *wp = w->w + (size_t)p * w->kq * 64;
            int32_t acc[LSQ_IGEMM_NR] = {0};
            for (int g = 0; g < w->kq; g++) {
                int32_t av[4] = {0};
                int nt = g < kfull ? 4 : k - 4 * g;
                for (int t = 0; t < nt; t++)
                    av[t] = sign ? (int32_t)(int8_t)ar[4 * g + t]
                                 : (int32_t)ar[4 * g + t];
                const int8_t *wg = wp + (size_t)g * 64;
                for (int j = 0; j < LSQ_IGEMM_NR; j++)
                    acc[j] += av[0] * wg[4 * j] + av[1] * wg[4 * j + 1] +
                              av[2] * wg[4 * j + 2] + av[3] * wg[4 * j + 3];
            }
            int col0 = p * LSQ_IGEMM_NR;
            int nc = w->n - col0 < LSQ_IGEMM_NR ? w->n - col0 : LSQ_IGEMM_NR;
            memcpy(c + (size_t)i * ldc + col0, acc, (size_t)nc * sizeof *acc);
        }
    }
}

static void tile_portable(int32_t *c, int ldc, const uint8_t *a, int lda,
                          int sign, const lsq_igemm_w *w, int i0, int i1,
                          int p0, int p1)
{
    if (sign)
        tile_portable_impl(c, ldc, a, lda, 1, w, i0, i1, p0, p1);
    else
        tile_portable_impl(c, ldc, a, lda, 0, w, i0, i1, p0, p1);
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

__attribute__((target("avx2"), always_inline)) static inline void
tile_avx2_impl(int32_t *c, int ldc, const uint8_t *a, int lda, const int sign,
               const lsq_igemm_w *w, int i0, int i1, int p0, int p1)
{
    int k = w->k, kfull = k / 4;
    for (int i = i0; i < i1; i += AVX2_MR) {
        int mr = i1 - i < AVX2_MR ? i1 - i : AVX2_MR;
        const uint8_t *ar[AVX2_MR];
        /* Rows past the end repeat the last row; their results are dropped. */
        for (int r = 0; r < AVX2_MR; r++)
            ar[r] = a + (size_t)(i + (r < mr ? r : mr - 1)) * lda;
        for (int h = 2 * p0; h < 2 * p1; h++) { /* half panels of 8 columns */
            const int8_t *wp = w->w + (size_t)(h / 2) * w->kq * 64 + (h % 2) * 32;
            __m256i lo[AVX2_MR], hi[AVX2_MR];
#pragma GCC unroll 4
            for (int r = 0; r < AVX2_MR; r++)
                lo[r] = hi[r] = _mm256_setzero_si256();
            for (int g = 0; g < w->kq; g++) {
                const int8_t *wg = wp + (size_t)g * 64;
                /* columns 0-3 and 4-7 of the half panel, 4 k each, as int16 */
                __m256i w0 = _mm256_cvtepi8_epi16(
                    _mm_loadu_si128((const __m128i *)wg));
                __m256i w1 = _mm256_cvtepi8_epi16(
                    _mm_loadu_si128((const __m128i *)(wg + 16)));
                int full = g < kfull;
#pragma GCC unroll 4
                for (int r = 0; r < AVX2_MR; r++) {
                    uint32_t av;
                    if (full)
                        memcpy(&av, ar[r] + 4 * g, 4);
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
                int32_t *cr = c + (size_t)(i + r) * ldc + col0;
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

__attribute__((target("avx2"))) static void
tile_avx2(int32_t *c, int ldc, const uint8_t *a, int lda, int sign,
          const lsq_igemm_w *w, int i0, int i1, int p0, int p1)
{
    if (sign)
        tile_avx2_impl(c, ldc, a, lda, 1, w, i0, i1, p0, p1);
    else
        tile_avx2_impl(c, ldc, a, lda, 0, w, i0, i1, p0, p1);
}

/* ---- AVX2, low-bit codes: 4 rows x 16 columns per micro-kernel ----
 * The 4 codes of a group, broadcast, times a half panel (8 columns x 4 k)
 * with vpmaddubsw: 16 int16 lanes, (column, k-pair) each, summed in 16 bits
 * over all of K (the caller checked the bound); one vpmaddwd by ones at the
 * end adds the pairs into column order. */

/* Where the low-bit kernel reads A: row v, of image v / rows and row
 * v % rows in it, starts at a + ((v / rows) * img + v % rows) * lda, and
 * K's group g at goff[g] bytes into the row (the groups of a direct
 * convolution's taps, lsq_igemm_tap_groups), or at 4 g for a plain matrix
 * (goff NULL; lowbit_impl's `taps` says which, as a constant). */
typedef struct {
    const uint8_t *a;
    int lda, rows;
    size_t img;
    const int *goff;
} arows;

static inline const uint8_t *arow(const arows *A, int v)
{
    return A->a + ((size_t)(v / A->rows) * A->img + (size_t)(v % A->rows)) * (size_t)A->lda;
}

__attribute__((target("avx2"), always_inline)) static inline void
lowbit_impl(int32_t *c, int ldc, const arows *A, const int taps, const lsq_igemm_w *w, int i0,
            int i1, int p0, int p1)
{
    const int k = w->k, kfull = k / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i = i0; i < i1; i += AVX2_MR) {
        int mr = i1 - i < AVX2_MR ? i1 - i : AVX2_MR;
        const uint8_t *ar[AVX2_MR];
        for (int r = 0; r < AVX2_MR; r++)
            ar[r] = arow(A, i + (r < mr ? r : mr - 1));
        for (int p = p0; p < p1; p++) {
            const int8_t *wp = w->w + (size_t)p * w->kq * 64;
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
            __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int g = 0; g < w->kq; g++) {
                const __m256i w0 = _mm256_load_si256((const __m256i *)(wp + (size_t)g * 64));
                const __m256i w1 = _mm256_load_si256((const __m256i *)(wp + (size_t)g * 64 + 32));
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
                int32_t *cr = c + (size_t)(i + r) * ldc + col0;
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

__attribute__((target("avx2"))) static void
tile_avx2_lowbit(int32_t *c, int ldc, const uint8_t *a, int lda, int sign,
                 const lsq_igemm_w *w, int i0, int i1, int p0, int p1)
{
    (void)sign;
    const arows A = {a, lda, INT_MAX, 0, NULL};
    lowbit_impl(c, ldc, &A, 0, w, i0, i1, p0, p1);
}

__attribute__((target("avx2"))) static void
tile_avx2_taps(int32_t *c, int ldc, const arows *A, const lsq_igemm_w *w, int i0, int i1,
               int p0, int p1)
{
    lowbit_impl(c, ldc, A, 1, w, i0, i1, p0, p1);
}

/* ---- AVX-512 VNNI: 8 rows x 32 columns (2 panels) per micro-kernel ---- */
#define VNNI_MR 8

#define VNNI_TARGET "avx512f,avx512bw,avx512vnni,avx512vl"

__attribute__((target(VNNI_TARGET), always_inline)) static inline void
tile_vnni_impl(int32_t *c, int ldc, const uint8_t *a, int lda, const int sign,
               const lsq_igemm_w *w, int i0, int i1, int p0, int p1)
{
    int k = w->k, kfull = k / 4, kq = w->kq;
    const __m512i flip = _mm512_set1_epi32(sign ? (int)0x80808080u : 0);
    for (int i = i0; i < i1; i += VNNI_MR) {
        int mr = i1 - i < VNNI_MR ? i1 - i : VNNI_MR;
        const uint8_t *ar[VNNI_MR];
        for (int r = 0; r < VNNI_MR; r++)
            ar[r] = a + (size_t)(i + (r < mr ? r : mr - 1)) * lda;
        for (int p = p0; p < p1; p += 2) {
            /* A lone last panel is computed twice and stored once. */
            int pb = p + 1 < p1 ? p + 1 : p;
            const int8_t *w0 = w->w + (size_t)p * kq * 64;
            const int8_t *w1 = w->w + (size_t)pb * kq * 64;
            __m512i acc0[VNNI_MR], acc1[VNNI_MR];
#pragma GCC unroll 8
            for (int r = 0; r < VNNI_MR; r++)
                acc0[r] = acc1[r] = _mm512_setzero_si512();
            for (int g = 0; g < kfull; g++) {
                __m512i b0 = _mm512_load_si512(w0 + (size_t)g * 64);
                __m512i b1 = _mm512_load_si512(w1 + (size_t)g * 64);
#pragma GCC unroll 8
                for (int r = 0; r < VNNI_MR; r++) {
                    uint32_t av;
                    memcpy(&av, ar[r] + 4 * g, 4);
                    __m512i va = _mm512_xor_si512(_mm512_set1_epi32((int)av), flip);
                    acc0[r] = _mm512_dpbusd_epi32(acc0[r], va, b0);
                    acc1[r] = _mm512_dpbusd_epi32(acc1[r], va, b1);
                }
            }
            if (kfull < kq) {
                int g = kfull;
                __m512i b0 = _mm512_load_si512(w0 + (size_t)g * 64);
                __m512i b1 = _mm512_load_si512(w1 + (size_t)g * 64);
                for (int r = 0; r < VNNI_MR; r++) {
                    /* padded bytes become 0x80 when signed; weights there
                     * are zero, so they add nothing */
                    __m512i va = _mm512_xor_si512(
                        _mm512_set1_epi32((int)load_group(ar[r], g, k)), flip);
                    acc0[r] = _mm512_dpbusd_epi32(acc0[r], va, b0);
                    acc1[r] = _mm512_dpbusd_epi32(acc1[r], va, b1);
                }
            }
            for (int q = 0; q < (pb != p ? 2 : 1); q++) {
                int col0 = (p + q) * LSQ_IGEMM_NR;
                int nc = w->n - col0 < 16 ? w->n - col0 : 16;
                __mmask16 mask = (__mmask16)((1u << nc) - 1);
                __m512i corr = _mm512_setzero_si512();
                if (sign)
                    corr = _mm512_slli_epi32(
                        _mm512_loadu_si512(w->colsum + col0), 7);
                for (int r = 0; r < mr; r++) {
                    __m512i v = _mm512_sub_epi32(q ? acc1[r] : acc0[r], corr);
                    _mm512_mask_storeu_epi32(c + (size_t)(i + r) * ldc + col0,
                                             mask, v);
                }
            }
        }
    }
}

__attribute__((target(VNNI_TARGET))) static void
tile_vnni(int32_t *c, int ldc, const uint8_t *a, int lda, int sign,
          const lsq_igemm_w *w, int i0, int i1, int p0, int p1)
{
    if (sign)
        tile_vnni_impl(c, ldc, a, lda, 1, w, i0, i1, p0, p1);
    else
        tile_vnni_impl(c, ldc, a, lda, 0, w, i0, i1, p0, p1);
}
#endif

/* Runs fn over m rows x `panels` panels in tiles of TILE_M rows x TILE_P
 * panels. Dynamic: a thread slowed by another process does not hold up the
 * rest; tiles are independent, so results do not depend on the order. */
typedef void tiles_fn(void *job, int i0, int i1, int p0, int p1);

static void run_tiles(int m, int panels, int threads, tiles_fn *fn, void *job)
{
    long tm = (m + TILE_M - 1) / TILE_M;
    long tp = (panels + TILE_P - 1) / TILE_P;
    long tiles = tm * tp;
#pragma omp parallel for num_threads(threads) schedule(dynamic) if (threads > 1 && tiles > 1)
    for (long t = 0; t < tiles; t++) {
        int i0 = (int)(t / tp) * TILE_M, p0 = (int)(t % tp) * TILE_P;
        int i1 = i0 + TILE_M < m ? i0 + TILE_M : m;
        int p1 = p0 + TILE_P < panels ? p0 + TILE_P : panels;
        fn(job, i0, i1, p0, p1);
    }
}

struct gemm_job {
    tile_fn *tile;
    int32_t *c;
    int ldc;
    const uint8_t *a;
    int lda, sign;
    const lsq_igemm_w *w;
};

static void gemm_tile(void *job, int i0, int i1, int p0, int p1)
{
    const struct gemm_job *j = job;
    j->tile(j->c, j->ldc, j->a, j->lda, j->sign, j->w, i0, i1, p0, p1);
}

#if LSQ_X86
struct taps_job {
    int32_t *c;
    int ldc;
    arows A;
    const lsq_igemm_w *w;
};

static void taps_tile(void *job, int i0, int i1, int p0, int p1)
{
    const struct taps_job *j = job;
    tile_avx2_taps(j->c, j->ldc, &j->A, j->w, i0, i1, p0, p1);
}
#endif

/* 1 when the low-bit kernel's sums fit 16 bits for codes up to amax. */
static int lowbit_fits(const lsq_igemm_w *w, int amax)
{
    return quant_pairs_fit_int16(w->kq, amax, w->wmax);
}

/* amax: the largest code of A when known (unsigned A), else -1. */
static lsq_status igemm(int32_t *c, int ldc, const uint8_t *a, int lda,
                        int sign, int m, int amax, const lsq_igemm_w *w,
                        lsq_kernel kern, int threads, lsq_err *err)
{
    if (!w || !w->w)
        return lsq_err_set(err, LSQ_ERR_INVALID, "weights",
                           "weights are not packed");
    if ((unsigned)kern >= LSQ_KERNEL_COUNT || !lsq_kernel_supported(kern))
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "kernel path %d is not supported on this CPU",
                           (int)kern);
    if (m < 0 || lda < w->k || ldc < w->n || threads < 1)
        return lsq_err_set(err, LSQ_ERR_INVALID, "gemm",
                           "bad GEMM geometry: m=%d lda=%d (K=%d) ldc=%d "
                           "(N=%d) threads=%d", m, lda, w->k, ldc, w->n,
                           threads);
    tile_fn *tile = tile_portable;
#if LSQ_X86
    if (kern == LSQ_KERNEL_AVX2)
        tile = !sign && lowbit_fits(w, amax) ? tile_avx2_lowbit : tile_avx2;
    else if (kern == LSQ_KERNEL_VNNI)
        tile = tile_vnni;
#endif
    struct gemm_job job = {tile, c, ldc, a, lda, sign, w};
    run_tiles(m, w->panels, threads, gemm_tile, &job);
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
#if LSQ_X86
    return kern == LSQ_KERNEL_AVX2 && lsq_kernel_supported(kern) && w && w->w && ic > 0 &&
           ic % 4 == 0 && w->k % ic == 0 && lowbit_fits(w, amax);
#else
    (void)w, (void)ic, (void)amax, (void)kern;
    return 0;
#endif
}

void lsq_igemm_tap_groups(int *goff, const int *taps, int ntaps, int ic)
{
    for (int g = 0; g < ntaps * ic / 4; g++)
        goff[g] = taps[4 * g / ic] * ic + 4 * g % ic;
}

lsq_status lsq_igemm_u8_taps(int32_t *c, int ldc, const uint8_t *a, int ic, int nimg, int rows,
                             size_t img, const int *goff, int amax, const lsq_igemm_w *w,
                             lsq_kernel kern, int threads, lsq_err *err)
{
    if (!lsq_igemm_taps_ok(w, ic, amax, kern) || !goff)
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "no direct integer convolution for these weights, codes and path");
    if (nimg < 0 || rows < 1 || ldc < w->n || threads < 1 || (long)nimg * rows > INT_MAX)
        return lsq_err_set(err, LSQ_ERR_INVALID, "gemm",
                           "bad direct convolution geometry: %d images of %d rows, ldc=%d "
                           "(N=%d) threads=%d", nimg, rows, ldc, w->n, threads);
#if LSQ_X86
    struct taps_job job = {c, ldc, {a, ic, rows, img, goff}, w};
    run_tiles(nimg * rows, w->panels, threads, taps_tile, &job);
#else
    (void)c, (void)a, (void)img;
#endif
    return LSQ_OK;
}
