/* Integer depthwise convolution: every kernel path this CPU has agrees bit
 * for bit with a naive loop, over channel counts around the vector widths,
 * kernels, strides, padding and dilation, both activation signednesses,
 * the 16-bit sums of low-bit codes and extreme codes at the largest
 * kernel, with 1 and 2 threads. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/dwconv.h"

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* w (C, K, K) as lsq_dw_pack takes it. */
static void dw_naive(int32_t *c, const uint8_t *a, int sign, const int8_t *w, int nimg, int ch,
                     int k, const lsq_dw_geom *g)
{
    for (int b = 0; b < nimg; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++)
                for (int j = 0; j < ch; j++) {
                    int64_t s = 0;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int y = oy * g->stride - g->pad + ky * g->dilation;
                            int x = ox * g->stride - g->pad + kx * g->dilation;
                            if (y < 0 || y >= g->ih || x < 0 || x >= g->iw) continue;
                            uint8_t v = a[(((size_t)b * g->ih + y) * g->iw + x) * ch + j];
                            int av = sign ? (int8_t)v : v;
                            s += (int64_t)av * w[((size_t)j * k + ky) * k + kx];
                        }
                    c[(((size_t)b * g->oh + oy) * g->ow + ox) * ch + j] = (int32_t)s;
                }
}

/* Runs every supported path on one problem (a and w filled by the caller,
 * a's unsigned codes at most amax); returns the number of runs. */
static int check_all_paths(const uint8_t *a, const int8_t *w, int nimg, int ch, int k,
                           const lsq_dw_geom *g, int amax)
{
    const size_t n = (size_t)nimg * g->oh * g->ow * ch;
    int32_t *ref = malloc((n ? n : 1) * sizeof *ref), *got = malloc((n + 1) * sizeof *got);
    lsq_dw_w pw;
    lsq_err err;
    cr_assert_eq(lsq_dw_pack(&pw, w, ch, k, &err), LSQ_OK, "%s", err.message);
    int ran = 0;
    for (int sign = 0; sign < 2; sign++) {
        dw_naive(ref, a, sign, w, nimg, ch, k, g);
        for (int kern = 0; kern < LSQ_KERNEL_COUNT; kern++) {
            if (!lsq_kernel_supported((lsq_kernel)kern)) continue;
            for (int threads = 1; threads <= 2; threads++) {
                /* a sentinel just past the output must survive */
                for (size_t t = 0; t <= n; t++) got[t] = 0x5A5A5A5A;
                lsq_status st = sign ? lsq_dw_s8(got, (const int8_t *)a, nimg, g, &pw,
                                                 (lsq_kernel)kern, threads, &err)
                                     : lsq_dw_u8(got, a, nimg, g, amax, &pw, (lsq_kernel)kern,
                                                 threads, &err);
                cr_assert_eq(st, LSQ_OK, "%s", err.message);
                for (size_t t = 0; t < n; t++)
                    cr_assert_eq(got[t], ref[t],
                                 "%s %s threads=%d C=%d k=%d stride=%d pad=%d dil=%d %dx%d: "
                                 "C[%zu] = %d, want %d",
                                 LSQ_KERNEL_NAMES[kern], sign ? "s8" : "u8", threads, ch, k,
                                 g->stride, g->pad, g->dilation, g->ih, g->iw, t, got[t], ref[t]);
                cr_assert_eq(got[n], 0x5A5A5A5A, "%s wrote past the output",
                             LSQ_KERNEL_NAMES[kern]);
                ran++;
            }
        }
    }
    lsq_dw_w_free(&pw);
    free(ref);
    free(got);
    return ran;
}

static int out_size(int in, int k, int stride, int pad, int dil)
{
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

Test(dwconv, paths_match_naive_on_odd_shapes)
{
    static const int chans[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 40};
    static const int geo[][4] = {
        /* k, stride, pad, dilation */
        {3, 1, 1, 1}, {3, 2, 1, 1}, {1, 1, 0, 1}, {5, 1, 2, 1}, {3, 1, 2, 2},
        {3, 2, 0, 1}, {5, 3, 4, 1}, {3, 1, 0, 3}, {2, 2, 1, 1}, {7, 1, 3, 1},
    };
    uint32_t seed = 7;
    int runs = 0;
    for (size_t ci = 0; ci < sizeof chans / sizeof *chans; ci++)
        for (size_t gi = 0; gi < sizeof geo / sizeof *geo; gi++) {
            const int ch = chans[ci], k = geo[gi][0];
            const int ih = 5 + (int)(rng_next(&seed) % 7), iw = 4 + (int)(rng_next(&seed) % 9);
            lsq_dw_geom g = {ih, iw, 0, 0, geo[gi][1], geo[gi][2], geo[gi][3]};
            g.oh = out_size(ih, k, g.stride, g.pad, g.dilation);
            g.ow = out_size(iw, k, g.stride, g.pad, g.dilation);
            if (g.oh < 1 || g.ow < 1) continue;
            const int nimg = 1 + (int)(rng_next(&seed) % 3);
            /* low-bit codes (the 16-bit sums) on even shapes, any byte on odd */
            const int amax = gi % 2 ? 255 : 3;
            const size_t na = (size_t)nimg * ih * iw * ch;
            uint8_t *a = malloc(na);
            int8_t *w = malloc((size_t)ch * k * k);
            for (size_t t = 0; t < na; t++)
                a[t] = (uint8_t)(rng_next(&seed) % (unsigned)(amax + 1));
            for (int t = 0; t < ch * k * k; t++)
                w[t] = (int8_t)(amax == 3 ? (int)(rng_next(&seed) % 4) - 2 : (int8_t)rng_next(&seed));
            runs += check_all_paths(a, w, nimg, ch, k, &g, amax);
            free(a);
            free(w);
        }
    cr_log_info("%d depthwise runs compared with the naive loop", runs);
    cr_assert_gt(runs, 200);
}

/* Extreme codes at the largest kernel: 225 taps of 255 x -128 and of
 * -128 x -128 leave 16 bits by far; any saturation shows as a mismatch.
 * And the 16-bit bound exactly: taps * amax * wmax = 32767 or just past. */
Test(dwconv, extreme_codes_and_the_16_bit_bound)
{
    const int k = 15, ch = 19;
    lsq_dw_geom g = {15, 15, 15, 15, 1, 7, 1};
    const size_t na = (size_t)15 * 15 * ch;
    uint8_t *a = malloc(na);
    int8_t *w = malloc((size_t)ch * k * k);
    for (int pass = 0; pass < 2; pass++) {
        memset(a, pass ? 0x80 : 0xff, na); /* 255 unsigned; -128 signed */
        memset(w, 0x80, (size_t)ch * k * k); /* -128 */
        check_all_paths(a, w, 1, ch, k, &g, 255);
    }
    free(a);
    free(w);
    /* 9 taps of weight 127 (or -128): the 16-bit sums hold up to amax 28 */
    const int k3 = 3, c3 = 21;
    lsq_dw_geom g3 = {6, 6, 6, 6, 1, 1, 1};
    uint8_t a3[6 * 6 * 21];
    int8_t w3[21 * 9];
    static const int amaxes[] = {28, 29, 255};
    for (int t = 0; t < 3; t++) {
        const int amax = amaxes[t]; /* 9 * 28 * 128 = 32256 fits, 9 * 29 * 127 does not */
        memset(a3, amax, sizeof a3);
        memset(w3, 127, sizeof w3);
        check_all_paths(a3, w3, 1, c3, k3, &g3, amax);
        memset(w3, 0x80, sizeof w3);
        check_all_paths(a3, w3, 1, c3, k3, &g3, amax);
    }
}

Test(dwconv, bad_arguments_are_refused)
{
    lsq_dw_w pw;
    lsq_err err;
    int8_t w[9] = {0};
    cr_expect_eq(lsq_dw_pack(&pw, w, 0, 3, &err), LSQ_ERR_INVALID);
    cr_expect_eq(lsq_dw_pack(&pw, w, 1, 17, &err), LSQ_ERR_INVALID);
    cr_assert_eq(lsq_dw_pack(&pw, w, 1, 3, &err), LSQ_OK);
    int32_t c[16];
    uint8_t a[16] = {0};
    lsq_dw_geom g = {4, 4, 4, 4, 1, 1, 1};
    cr_expect_eq(lsq_dw_u8(c, a, 1, &g, 255, &pw, LSQ_KERNEL_COUNT, 1, &err), LSQ_ERR_INVALID);
    cr_expect_eq(lsq_dw_u8(c, a, 1, &g, 256, &pw, LSQ_KERNEL_PORTABLE, 1, &err), LSQ_ERR_INVALID);
    cr_expect_eq(lsq_dw_u8(c, a, 1, &g, 255, &pw, LSQ_KERNEL_PORTABLE, 0, &err), LSQ_ERR_INVALID);
    g.stride = 0;
    cr_expect_eq(lsq_dw_u8(c, a, 1, &g, 255, &pw, LSQ_KERNEL_PORTABLE, 1, &err), LSQ_ERR_INVALID);
    g.stride = 1, g.dilation = 0;
    cr_expect_eq(lsq_dw_s8(c, (const int8_t *)a, 1, &g, &pw, LSQ_KERNEL_PORTABLE, 1, &err),
                 LSQ_ERR_INVALID);
    lsq_dw_w_free(&pw);
    cr_expect_eq(lsq_dw_u8(c, a, 1, &g, 255, &pw, LSQ_KERNEL_PORTABLE, 1, &err), LSQ_ERR_INVALID);
}
