/* Integer GEMM: every kernel path this CPU has agrees bit for bit with a
 * naive triple loop, on odd shapes, both activation signednesses, extreme
 * codes at the largest K, with 1 and 2 threads, with weights stored in 8
 * bits and, where the codes fit, packed in 3 and 2 bits. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/igemm.h"

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* w (N, K): one row per output channel, as lsq_igemm_pack takes it. */
static void gemm_naive(int32_t *c, int ldc, const uint8_t *a, int lda,
                       int sign, const int8_t *w, int m, int n, int k)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            int64_t s = 0;
            for (int kk = 0; kk < k; kk++) {
                int av = sign ? (int8_t)a[(size_t)i * lda + kk]
                              : a[(size_t)i * lda + kk];
                s += (int64_t)av * w[(size_t)j * k + kk];
            }
            c[(size_t)i * ldc + j] = (int32_t)s;
        }
}

static int check_paths_bits(const uint8_t *a, int lda, const int8_t *w, int m, int n, int k,
                            int pad, int bits);

/* Runs every supported path on one problem; returns the number of paths
 * run. a is filled by the caller; pad makes lda/ldc larger than needed.
 * Unsigned A also runs through lsq_igemm_u8_max with A's largest code (the
 * low-bit kernel, where the sums fit 16 bits). */
static int check_all_paths(const uint8_t *a, int lda, const int8_t *w, int m,
                           int n, int k, int pad)
{
    int wlo = 0, whi = 0, ran = 0;
    for (size_t t = 0; t < (size_t)n * k; t++) {
        if (w[t] < wlo) wlo = w[t];
        if (w[t] > whi) whi = w[t];
    }
    static const int bitss[3] = {8, 3, 2};
    for (int b = 0; b < 3; b++) {
        const int bits = bitss[b];
        if (wlo < -(1 << (bits - 1)) || whi > (1 << (bits - 1)) - 1) continue;
        ran += check_paths_bits(a, lda, w, m, n, k, pad, bits);
    }
    return ran;
}

static int check_paths_bits(const uint8_t *a, int lda, const int8_t *w, int m, int n, int k,
                            int pad, int bits)
{
    int ldc = n + pad;
    size_t csz = (size_t)(m ? m : 1) * ldc;
    int32_t *ref = malloc(csz * sizeof *ref), *got = malloc(csz * sizeof *got);
    lsq_igemm_w pw;
    lsq_err err;
    cr_assert_eq(lsq_igemm_pack_bits(&pw, w, n, k, bits, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(pw.bits, bits);
    /* the codes come back as they went in */
    int8_t *back = malloc((size_t)n * k);
    lsq_igemm_codes(back, &pw);
    cr_assert(memcmp(back, w, (size_t)n * k) == 0, "%d-bit codes of %d x %d changed in packing",
              bits, n, k);
    free(back);
    int ran = 0, amax = 0;
    for (int i = 0; i < m; i++)
        for (int kk = 0; kk < k; kk++)
            if (a[(size_t)i * lda + kk] > amax) amax = a[(size_t)i * lda + kk];
    for (int sign = 0; sign < 3; sign++) { /* 2: unsigned, with amax */
        gemm_naive(ref, ldc, a, lda, sign == 1, w, m, n, k);
        for (int kern = 0; kern < LSQ_KERNEL_COUNT; kern++) {
            if (!lsq_kernel_supported((lsq_kernel)kern))
                continue;
            for (int threads = 1; threads <= 2; threads++) {
                /* a sentinel in the padding columns must survive */
                for (size_t t = 0; t < csz; t++)
                    got[t] = 0x5A5A5A5A;
                lsq_status st =
                    sign == 1 ? lsq_igemm_s8(got, ldc, (const int8_t *)a, lda, m,
                                             &pw, (lsq_kernel)kern, threads, &err)
                    : sign    ? lsq_igemm_u8_max(got, ldc, a, lda, m, amax, &pw,
                                                 (lsq_kernel)kern, threads, &err)
                              : lsq_igemm_u8(got, ldc, a, lda, m, &pw,
                                             (lsq_kernel)kern, threads, &err);
                cr_assert_eq(st, LSQ_OK, "%s", err.message);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < ldc; j++) {
                        size_t o = (size_t)i * ldc + j;
                        int32_t want = j < n ? ref[o] : 0x5A5A5A5A;
                        cr_assert_eq(got[o], want,
                                     "%s %s %d-bit weights threads=%d M=%d N=%d K=%d: "
                                     "C[%d][%d] = %d, want %d",
                                     LSQ_KERNEL_NAMES[kern],
                                     sign == 1 ? "s8" : sign ? "u8 max" : "u8", bits, threads,
                                     m, n, k, i,
                                     j, got[o], want);
                    }
                ran++;
            }
        }
    }
    lsq_igemm_w_free(&pw);
    free(ref);
    free(got);
    return ran;
}

Test(igemm, paths_match_naive_on_odd_shapes)
{
    static const int shapes[][3] = {
        /* M, N, K */
        {1, 1, 1},    {1, 1, 5},    {3, 7, 1},     {5, 17, 3},
        {8, 16, 4},   {9, 33, 5},   {13, 31, 7},   {64, 16, 288},
        {65, 64, 289}, {130, 70, 37}, {7, 129, 130}, {200, 10, 1000},
        {0, 5, 9},    {31, 48, 2},  {17, 1, 63},   {70, 100, 6},
    };
    uint32_t seed = 99;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        for (int pad = 0; pad <= 3; pad += 3) {
            int lda = k + pad;
            size_t asz = (size_t)(m ? m : 1) * lda;
            uint8_t *a = malloc(asz);
            int8_t *w = malloc((size_t)n * k);
            for (size_t t = 0; t < asz; t++)
                a[t] = (uint8_t)rng_next(&seed);
            for (size_t t = 0; t < (size_t)n * k; t++)
                w[t] = (int8_t)rng_next(&seed);
            int ran = check_all_paths(a, lda, w, m, n, k, pad);
            cr_assert_geq(ran, 4, "at least the portable path must run");
            free(a);
            free(w);
        }
    }
}

/* Extreme codes at the largest K: any int16 saturation or int32 overflow in
 * a path shows up as a mismatch. */
Test(igemm, extreme_codes_at_max_k)
{
    int m = 3, n = 5, k = LSQ_IGEMM_MAX_K;
    uint8_t *a = malloc((size_t)m * k);
    int8_t *w = malloc((size_t)n * k);
    for (int kk = 0; kk < k; kk++) {
        a[kk] = 255;                  /* u8: 255; s8: -1 */
        a[(size_t)k + kk] = 0x80;     /* u8: 128; s8: -128 */
        a[(size_t)2 * k + kk] = 0x7F; /* 127 either way */
        w[kk] = -128;
        w[(size_t)k + kk] = 127;
        w[(size_t)2 * k + kk] = -128;
        w[(size_t)3 * k + kk] = (int8_t)(kk % 2 ? 127 : -128);
        w[(size_t)4 * k + kk] = (int8_t)(kk % 3 - 1);
    }
    check_all_paths(a, k, w, m, n, k, 0);
    free(a);
    free(w);
}

/* Low-bit codes as the network uses them: 2-bit activations, 2-bit weights
 * at a resnet-sized K (576 = 64 * 3 * 3). */
Test(igemm, low_bit_codes)
{
    int m = 37, n = 64, k = 576;
    uint32_t seed = 7;
    uint8_t *a = malloc((size_t)m * k);
    int8_t *w = malloc((size_t)n * k);
    for (size_t t = 0; t < (size_t)m * k; t++)
        a[t] = (uint8_t)(rng_next(&seed) % 4);
    for (size_t t = 0; t < (size_t)n * k; t++)
        w[t] = (int8_t)((int)(rng_next(&seed) % 4) - 2);
    check_all_paths(a, k, w, m, n, k, 0);
    free(a);
    free(w);
}

/* The low-bit kernel's 16-bit sums at their bound: K = 4 * 2730 groups of
 * 3 x -2 products (each int16 lane ends at -32760), and odd shapes of 3-bit
 * codes under it; the next group up takes the int16 path. */
Test(igemm, low_bit_sums_at_the_int16_bound)
{
    int m = 5, n = 19, k = 4 * 2730;
    uint8_t *a = malloc((size_t)m * k);
    int8_t *w = malloc((size_t)n * k);
    for (size_t t = 0; t < (size_t)m * k; t++) a[t] = 3;
    for (size_t t = 0; t < (size_t)n * k; t++) w[t] = -2;
    check_all_paths(a, k, w, m, n, k, 0);
    check_all_paths(a, k, w, m, n, k - 3, 1); /* a partial last group */
    free(a);
    free(w);
    uint32_t seed = 11;
    static const int shapes[][3] = {{1, 1, 1}, {5, 17, 3}, {9, 33, 5}, {65, 64, 289}, {7, 129, 130}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int sm = shapes[s][0], sn = shapes[s][1], sk = shapes[s][2];
        a = malloc((size_t)sm * sk);
        w = malloc((size_t)sn * sk);
        for (size_t t = 0; t < (size_t)sm * sk; t++) a[t] = (uint8_t)(rng_next(&seed) % 8);
        for (size_t t = 0; t < (size_t)sn * sk; t++) w[t] = (int8_t)((int)(rng_next(&seed) % 8) - 4);
        check_all_paths(a, sk, w, sm, sn, sk, 0);
        free(a);
        free(w);
    }
}

/* Collects lsq_igemm_u8_taps_rows' blocks into a whole C (n columns),
 * checking that they come in row order. */
typedef struct {
    int32_t *c;
    int n, next;
} rows_sink;

static void take_rows(void *ctx, const int32_t *c, int ldc, int i0, int i1)
{
    rows_sink *k = ctx;
    cr_assert_eq(i0, k->next, "blocks in row order");
    cr_assert(i1 > i0 && i1 - i0 <= LSQ_IGEMM_ROWS);
    for (int i = i0; i < i1; i++)
        memcpy(k->c + (size_t)i * k->n, c + (size_t)(i - i0) * ldc, sizeof *c * (size_t)k->n);
    k->next = i1;
}

/* The direct convolution on padded NHWC codes against a naive
 * convolution with zero padding, every output of every image, on shapes
 * with several images, odd widths and 1, 3 and 5 wide kernels, on every
 * path this CPU has, weights in 8, 3 and 2 bits, and codes up to 3 (the
 * AVX2 low-bit kernel) and up to 255 (its int16 kernel). */
Test(igemm, direct_taps_match_naive_conv)
{
    static const int shapes[][6] = {
        /* n, h, w, ic, oc, k */
        {3, 5, 6, 8, 19, 3}, {2, 7, 7, 64, 64, 3}, {1, 4, 9, 4, 5, 5}, {4, 3, 3, 12, 16, 1},
        {2, 28, 28, 16, 16, 3}, {1, 7, 7, 64, 64, 3},
    };
    uint32_t seed = 21;
    int ran = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int amax = 3; amax <= 255; amax += 252) {
            const int n = shapes[s][0], h = shapes[s][1], wd = shapes[s][2], ic = shapes[s][3];
            const int oc = shapes[s][4], k = shapes[s][5], pad = k / 2;
            const int wp = wd + 2 * pad, hp = h + 2 * pad, K = k * k * ic;
            uint8_t *x = malloc((size_t)n * h * wd * ic);
            int8_t *w = malloc((size_t)oc * K);
            for (size_t t = 0; t < (size_t)n * h * wd * ic; t++)
                x[t] = (uint8_t)(rng_next(&seed) % (unsigned)(amax + 1));
            for (size_t t = 0; t < (size_t)oc * K; t++) w[t] = (int8_t)((int)(rng_next(&seed) % 4) - 2);
            /* padded images, slack after the last for the largest tap */
            const size_t img = (size_t)hp * wp;
            uint8_t *a = calloc(((size_t)n * img + (size_t)k) * ic, 1);
            for (int b = 0; b < n; b++)
                for (int y = 0; y < h; y++)
                    memcpy(a + ((size_t)b * img + (size_t)(y + pad) * wp + pad) * ic,
                           x + (((size_t)b * h + y) * wd) * ic, (size_t)wd * ic);
            int taps[25], goff[25 * 64 / 4];
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) taps[ky * k + kx] = ky * wp + kx;
            lsq_igemm_tap_groups(goff, taps, k * k, ic);
            const int rows = h * wp;
            int32_t *want = malloc(sizeof *want * (size_t)n * rows * oc);
            int32_t *c = malloc(sizeof *c * (size_t)n * rows * oc);
            for (int b = 0; b < n; b++)
                for (int y = 0; y < h; y++)
                    for (int xx = 0; xx < wd; xx++)
                        for (int o = 0; o < oc; o++) {
                            long v = 0;
                            for (int ky = 0; ky < k; ky++)
                                for (int kx = 0; kx < k; kx++) {
                                    int iy = y + ky - pad, ix = xx + kx - pad;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                                    for (int ci = 0; ci < ic; ci++)
                                        v += (long)x[(((size_t)b * h + iy) * wd + ix) * ic + ci] *
                                             w[(size_t)o * K + (ky * k + kx) * ic + ci];
                                }
                            want[((size_t)b * rows + (size_t)y * wp + xx) * oc + o] = (int32_t)v;
                        }
            static const int bitss[3] = {8, 3, 2};
            for (int bi = 0; bi < 3; bi++) {
                lsq_igemm_w pw;
                lsq_err err;
                cr_assert_eq(lsq_igemm_pack_bits(&pw, w, oc, K, bitss[bi], &err), LSQ_OK, "%s",
                             err.message);
                for (int kern = 0; kern < LSQ_KERNEL_COUNT; kern++) {
                    if (!lsq_kernel_supported((lsq_kernel)kern)) {
                        cr_assert(!lsq_igemm_taps_ok(&pw, ic, amax, (lsq_kernel)kern));
                        continue;
                    }
                    cr_assert(lsq_igemm_taps_ok(&pw, ic, amax, (lsq_kernel)kern));
                    for (int threads = 1; threads <= 2; threads++) {
                        cr_assert_eq(lsq_igemm_u8_taps(c, oc, a, ic, n, rows, img, goff, amax, &pw,
                                                       (lsq_kernel)kern, threads, &err),
                                     LSQ_OK, "%s", err.message);
                        for (int b = 0; b < n; b++)
                            for (int y = 0; y < h; y++)
                                for (int xx = 0; xx < wd; xx++)
                                    for (int o = 0; o < oc; o++) {
                                        size_t at = ((size_t)b * rows + (size_t)y * wp + xx) * oc + o;
                                        cr_assert_eq(c[at], want[at],
                                                     "%s %d-bit shape %zu amax %d image %d (%d, %d) "
                                                     "channel %d",
                                                     LSQ_KERNEL_NAMES[kern], bitss[bi], s, amax, b,
                                                     y, xx, o);
                                    }
                        ran++;
                    }
                    /* the outputs only, in blocks handed over as they are done */
                    rows_sink sink = {c, oc, 0};
                    int32_t *blk = malloc(sizeof *blk * LSQ_IGEMM_ROWS * (size_t)oc);
                    cr_assert_eq(lsq_igemm_u8_taps_rows(blk, oc, a, ic, n, h, wd, wp, img, goff,
                                                        amax, &pw, (lsq_kernel)kern, take_rows,
                                                        &sink, &err),
                                 LSQ_OK, "%s", err.message);
                    cr_assert_eq(sink.next, n * h * wd, "every output row handed over once");
                    for (int b = 0; b < n; b++)
                        for (int y = 0; y < h; y++)
                            for (int xx = 0; xx < wd; xx++)
                                for (int o = 0; o < oc; o++)
                                    cr_assert_eq(c[(((size_t)b * h + y) * wd + xx) * oc + o],
                                                 want[((size_t)b * rows + (size_t)y * wp + xx) * oc + o],
                                                 "%s %d-bit rows: shape %zu amax %d image %d (%d, %d) "
                                                 "channel %d",
                                                 LSQ_KERNEL_NAMES[kern], bitss[bi], s, amax, b, y,
                                                 xx, o);
                    free(blk);
                }
                lsq_igemm_w_free(&pw);
            }
            free(x), free(w), free(a), free(c), free(want);
        }
    cr_assert_geq(ran, 6 * 2 * 3 * 2, "the portable path at least, on every case");
    /* IC not a multiple of 4: no direct path */
    lsq_igemm_w pw;
    lsq_err err;
    int8_t w9[2 * 27] = {0};
    cr_assert_eq(lsq_igemm_pack(&pw, w9, 2, 27, &err), LSQ_OK);
    cr_assert(!lsq_igemm_taps_ok(&pw, 3, 3, LSQ_KERNEL_PORTABLE));
    int goff[27];
    cr_assert_eq(lsq_igemm_u8_taps(NULL, 2, NULL, 3, 1, 9, 25, goff, 3, &pw, LSQ_KERNEL_PORTABLE, 1,
                                   &err),
                 LSQ_ERR_INVALID);
    cr_assert_str_eq(err.field, "kernel");
    lsq_igemm_w_free(&pw);
    /* outputs that do not fit the padded image, and no function for them */
    int8_t w8[2 * 36] = {0};
    cr_assert_eq(lsq_igemm_pack(&pw, w8, 2, 36, &err), LSQ_OK);
    int32_t blk[LSQ_IGEMM_ROWS * 2];
    uint8_t a8[64 * 4] = {0};
    rows_sink sink = {blk, 2, 0};
    cr_assert_eq(lsq_igemm_u8_taps_rows(blk, 2, a8, 4, 1, 3, 4, 3, 25, goff, 3, &pw,
                                        LSQ_KERNEL_PORTABLE, take_rows, &sink, &err),
                 LSQ_ERR_INVALID, "OW > WP");
    cr_assert_str_eq(err.field, "gemm");
    cr_assert_eq(lsq_igemm_u8_taps_rows(blk, 2, a8, 4, 1, 6, 4, 5, 25, goff, 3, &pw,
                                        LSQ_KERNEL_PORTABLE, take_rows, &sink, &err),
                 LSQ_ERR_INVALID, "6 rows 5 apart past a 25-pixel image");
    cr_assert_eq(lsq_igemm_u8_taps_rows(blk, 2, a8, 4, 1, 3, 3, 5, 25, goff, 3, &pw,
                                        LSQ_KERNEL_PORTABLE, NULL, &sink, &err),
                 LSQ_ERR_INVALID);
    cr_assert_eq(sink.next, 0, "nothing handed over on an error");
    lsq_igemm_w_free(&pw);
}

/* 2-bit weights on odd shapes, both activation signednesses: the packed
 * layout's partial blocks (K groups not a multiple of 4) and padding
 * channels. */
Test(igemm, two_bit_weights_on_odd_shapes)
{
    static const int shapes[][3] = {
        {1, 1, 1}, {3, 7, 5}, {9, 33, 13}, {17, 16, 20}, {65, 64, 289}, {5, 70, 144}, {49, 64, 576},
    };
    uint32_t seed = 5;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        uint8_t *a = malloc((size_t)m * k);
        int8_t *w = malloc((size_t)n * k);
        for (size_t t = 0; t < (size_t)m * k; t++) a[t] = (uint8_t)rng_next(&seed);
        for (size_t t = 0; t < (size_t)n * k; t++) w[t] = (int8_t)((int)(rng_next(&seed) % 4) - 2);
        /* 8, 3 and 2 bits, each on every path */
        cr_assert_geq(check_all_paths(a, k, w, m, n, k, 0), 3 * 6);
        free(a), free(w);
    }
}

Test(igemm, pack_bits_rejects_codes_that_do_not_fit)
{
    lsq_igemm_w pw;
    lsq_err err;
    int8_t w[6] = {1, -2, 0, 1, 2, -1}; /* 2 does not fit 2 bits */
    cr_assert_eq(lsq_igemm_pack_bits(&pw, w, 2, 3, 2, &err), LSQ_ERR_INVALID);
    cr_assert_str_eq(err.field, "weights");
    cr_assert_null(pw.w);
    cr_assert_eq(lsq_igemm_pack_bits(&pw, w, 2, 3, 3, &err), LSQ_OK);
    lsq_igemm_w_free(&pw);
    w[0] = -5; /* nor 3 */
    cr_assert_eq(lsq_igemm_pack_bits(&pw, w, 2, 3, 3, &err), LSQ_ERR_INVALID);
    cr_assert_eq(lsq_igemm_pack_bits(&pw, w, 2, 3, 4, &err), LSQ_ERR_INVALID);
    cr_assert_str_eq(err.field, "bits");
    /* a quarter and 3/8 of the int8 bytes */
    int8_t big[64 * 576] = {0};
    size_t b8, b3, b2;
    cr_assert_eq(lsq_igemm_pack_bits(&pw, big, 64, 576, 8, &err), LSQ_OK);
    b8 = lsq_igemm_w_bytes(&pw);
    lsq_igemm_w_free(&pw);
    cr_assert_eq(lsq_igemm_pack_bits(&pw, big, 64, 576, 3, &err), LSQ_OK);
    b3 = lsq_igemm_w_bytes(&pw);
    lsq_igemm_w_free(&pw);
    cr_assert_eq(lsq_igemm_pack_bits(&pw, big, 64, 576, 2, &err), LSQ_OK);
    b2 = lsq_igemm_w_bytes(&pw);
    lsq_igemm_w_free(&pw);
    cr_assert_eq(b8, (size_t)64 * 576);
    cr_assert_eq(b3, (size_t)64 * 576 * 3 / 8);
    cr_assert_eq(b2, (size_t)64 * 576 / 4);
}

Test(igemm, kernel_selection)
{
    cr_assert(lsq_kernel_supported(LSQ_KERNEL_PORTABLE));
    setenv("LSQ_KERNEL", "portable", 1);
    cr_assert_eq(lsq_kernel_select(), LSQ_KERNEL_PORTABLE);
    setenv("LSQ_KERNEL", "avx2", 1);
    if (lsq_kernel_supported(LSQ_KERNEL_AVX2))
        cr_assert_eq(lsq_kernel_select(), LSQ_KERNEL_AVX2);
    setenv("LSQ_KERNEL", "nonsense", 1);
    lsq_kernel best = lsq_kernel_select();
    unsetenv("LSQ_KERNEL");
    cr_assert_eq(lsq_kernel_select(), best);
    cr_assert(lsq_kernel_supported(best));
    for (int k = best + 1; k < LSQ_KERNEL_COUNT; k++)
        cr_assert(!lsq_kernel_supported((lsq_kernel)k),
                  "the default must be the fastest supported path");
    cr_log_info("igemm kernel path on this CPU: %s", LSQ_KERNEL_NAMES[best]);
}

/* LSQ_KERNEL as lsq and lsqd check it at start: a supported path's name or
 * nothing is fine; an unknown name, or a path this CPU cannot run, is an
 * error naming the variable and the value. */
Test(igemm, kernel_from_the_environment)
{
    lsq_err err;
    unsetenv("LSQ_KERNEL");
    cr_assert_eq(lsq_kernel_from_env(&err), LSQ_OK);
    setenv("LSQ_KERNEL", "", 1);
    cr_assert_eq(lsq_kernel_from_env(&err), LSQ_OK);
    for (int k = 0; k < LSQ_KERNEL_COUNT; k++) {
        setenv("LSQ_KERNEL", LSQ_KERNEL_NAMES[k], 1);
        memset(&err, 0, sizeof err);
        const lsq_status st = lsq_kernel_from_env(&err);
        if (lsq_kernel_supported((lsq_kernel)k)) {
            cr_expect_eq(st, LSQ_OK, "%s: %s", LSQ_KERNEL_NAMES[k], err.message);
            continue;
        }
        cr_expect_eq(st, LSQ_ERR_INVALID, "%s", LSQ_KERNEL_NAMES[k]);
        cr_expect_str_eq(err.field, "LSQ_KERNEL");
        cr_expect(strstr(err.message, "cannot run"), "%s", err.message);
    }
    setenv("LSQ_KERNEL", "neon", 1);
    cr_assert_eq(lsq_kernel_from_env(&err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "LSQ_KERNEL");
    cr_expect(strstr(err.message, "LSQ_KERNEL=neon") &&
                  strstr(err.message, "portable, avx2 or vnni"),
              "%s", err.message);
    unsetenv("LSQ_KERNEL");
}

Test(igemm, rejects_bad_arguments)
{
    lsq_igemm_w pw;
    lsq_err err;
    int8_t w[6] = {1, 2, 3, 4, 5, 6};
    cr_assert_eq(lsq_igemm_pack(&pw, w, 0, 6, &err), LSQ_ERR_INVALID);
    cr_assert_eq(lsq_igemm_pack(&pw, w, 1, LSQ_IGEMM_MAX_K + 1, &err),
                 LSQ_ERR_INVALID);
    cr_assert_eq(lsq_igemm_pack(&pw, w, 2, 3, &err), LSQ_OK);
    uint8_t a[6] = {0};
    int32_t c[4];
    cr_assert_eq(lsq_igemm_u8(c, 2, a, 2, 2, &pw, LSQ_KERNEL_PORTABLE, 1, &err),
                 LSQ_ERR_INVALID, "lda < K must be rejected");
    cr_assert_eq(lsq_igemm_u8(c, 1, a, 3, 2, &pw, LSQ_KERNEL_PORTABLE, 1, &err),
                 LSQ_ERR_INVALID, "ldc < N must be rejected");
    cr_assert_eq(lsq_igemm_u8(c, 2, a, 3, 2, &pw, LSQ_KERNEL_COUNT, 1, &err),
                 LSQ_ERR_INVALID);
    cr_assert_eq(lsq_igemm_u8(c, 2, a, 3, 2, &pw, LSQ_KERNEL_PORTABLE, 1, &err),
                 LSQ_OK);
    lsq_igemm_w_free(&pw);
}

/* A one-channel image (IC = 1): each kernel row's k taps read as 4-code
 * groups of adjacent codes, zero weights past k (K = k * roundup(k, 4)),
 * as the integer engine runs a grayscale first layer; every path gives the
 * naive convolution's sums. */
Test(igemm, one_channel_taps_in_groups_of_four)
{
    static const int shapes[][5] = {/* n, h, w, oc, k */ {2, 28, 28, 32, 3}, {3, 5, 7, 19, 5},
                                    {1, 9, 4, 16, 7}, {2, 6, 6, 5, 1}};
    uint32_t seed = 5;
    int ran = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int n = shapes[s][0], h = shapes[s][1], wd = shapes[s][2], oc = shapes[s][3];
        const int k = shapes[s][4], pad = k / 2, kx4 = (k + 3) / 4 * 4, K = k * kx4;
        const int wp = wd + 2 * pad, hp = h + 2 * pad, rows = h * wp;
        const size_t img = (size_t)hp * wp;
        uint8_t *a = calloc((size_t)n * img + 64, 1);
        int8_t *w = calloc((size_t)oc * K, 1);
        for (int b = 0; b < n; b++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < wd; x++)
                    a[(size_t)b * img + (size_t)(y + pad) * wp + x + pad] = (uint8_t)(rng_next(&seed) % 256);
        for (int o = 0; o < oc; o++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    w[((size_t)o * k + ky) * kx4 + kx] = (int8_t)((int)(rng_next(&seed) % 256) - 128);
        int goff[7 * 2];
        for (int g = 0; g < K / 4; g++) goff[g] = g / (kx4 / 4) * wp + 4 * (g % (kx4 / 4));
        int32_t *c = malloc(sizeof *c * (size_t)n * rows * oc);
        lsq_igemm_w pw;
        lsq_err err;
        cr_assert_eq(lsq_igemm_pack(&pw, w, oc, K, &err), LSQ_OK, "%s", err.message);
        for (int kern = 0; kern < LSQ_KERNEL_COUNT; kern++) {
            if (!lsq_kernel_supported((lsq_kernel)kern)) continue;
            cr_assert(lsq_igemm_taps_ok(&pw, 1, 255, (lsq_kernel)kern));
            cr_assert_eq(lsq_igemm_u8_taps(c, oc, a, 1, n, rows, img, goff, 255, &pw,
                                           (lsq_kernel)kern, 2, &err),
                         LSQ_OK, "%s", err.message);
            for (int b = 0; b < n; b++)
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < wd; x++)
                        for (int o = 0; o < oc; o++) {
                            long v = 0;
                            for (int ky = 0; ky < k; ky++)
                                for (int kx = 0; kx < k; kx++)
                                    v += (long)a[(size_t)b * img + (size_t)(y + ky) * wp + x + kx] *
                                         w[((size_t)o * k + ky) * kx4 + kx];
                            cr_assert_eq(c[((size_t)b * rows + (size_t)y * wp + x) * oc + o], v,
                                         "%s shape %zu image %d (%d, %d) channel %d",
                                         LSQ_KERNEL_NAMES[kern], s, b, y, x, o);
                        }
            ran++;
        }
        lsq_igemm_w_free(&pw);
        free(a), free(w), free(c);
    }
    cr_assert_geq(ran, 4, "the portable path at least, on every shape");
    /* K not a multiple of 4 with IC = 1: no direct path */
    lsq_igemm_w pw;
    lsq_err err;
    int8_t w9[2 * 9] = {0};
    cr_assert_eq(lsq_igemm_pack(&pw, w9, 2, 9, &err), LSQ_OK);
    cr_assert(!lsq_igemm_taps_ok(&pw, 1, 255, LSQ_KERNEL_PORTABLE));
    lsq_igemm_w_free(&pw);
}
