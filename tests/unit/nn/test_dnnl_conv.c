/* conv2d on oneDNN (nn/dnnl_conv.h), forced with CONV2D_BACKEND_DNNL:
 * - every gradient against central finite differences (as test_layers.c:
 *   L = sum(out * r), step 1e-2, relative difference <= 1e-2), with the
 *   oneDNN primitives checked to have run (dnnl_conv_impl);
 * - forward, din (set and added to), dw and db (added to) against the
 *   engine's own kernels on the same inputs, dense, strided, pointwise,
 *   grouped, depthwise and dilated shapes up to resnet20's: the largest
 *   difference, relative to the largest magnitude of the own result, must
 *   stay below 1e-5 (float sums in another order: K = 576 products at most);
 * - results repeat bit for bit at a fixed thread count;
 * - a shape whose backward runs on oneDNN takes no backward fusions.
 * Skipped in a build without oneDNN. */
#include <criterion/criterion.h>

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_check.h"
#include "quant/quant.h"

#define MATCH_TOL 1e-5

/* oneDNN's primitive for this pass of the shape ran (is cached), in
 * either layout, direct or (under LSQ_WINO=1) Winograd */
static int dnnl_ran(const conv2d_dims *d, int bias, int pass)
{
    return dnnl_conv_impl(d, bias, DNNL_CONV_BLOCKED, pass)[0] ||
           dnnl_conv_impl(d, bias, DNNL_CONV_PLAIN, pass)[0] ||
           dnnl_conv_impl_alg(d, bias, DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD, pass)[0];
}

/* n, ic, ih, iw, oc, kernel, stride, pad, dilation, groups, bias */
static const int CASES[][11] = {
    {2, 3, 7, 5, 4, 3, 1, 1, 1, 1, 1},
    {1, 2, 6, 6, 3, 3, 2, 0, 1, 1, 0},
    {3, 4, 5, 6, 2, 1, 1, 0, 1, 1, 1},    /* pointwise */
    {2, 3, 9, 8, 5, 1, 2, 0, 1, 1, 0},    /* strided 1x1 shortcut: right padding -1 */
    {2, 2, 8, 7, 3, 3, 2, 1, 1, 1, 1},
    {5, 3, 4, 9, 3, 3, 1, 0, 1, 1, 1},
    {1, 1, 3, 3, 2, 3, 1, 2, 1, 1, 1},    /* padding wider than needed */
    {2, 2, 6, 7, 3, 5, 1, 2, 1, 1, 1},    /* "same" 5x5 */
    {2, 4, 7, 6, 4, 3, 1, 1, 1, 4, 1},    /* depthwise */
    {3, 5, 9, 8, 5, 3, 2, 1, 1, 5, 0},    /* depthwise, stride 2 */
    {2, 3, 6, 7, 6, 3, 1, 1, 1, 3, 1},    /* depthwise, multiplier 2 */
    {2, 6, 7, 7, 4, 3, 1, 1, 1, 2, 1},    /* two groups */
    {2, 3, 9, 8, 4, 3, 1, 2, 2, 1, 1},    /* dilation 2 */
    {2, 6, 10, 9, 6, 3, 2, 2, 2, 3, 1},   /* grouped, dilated, strided */
};
#define N_CASES (sizeof CASES / sizeof *CASES)

/* resnet20's and MobileNetV2's shapes at batch 8: against the own kernels */
static const int BIG_CASES[][11] = {
    {8, 16, 28, 28, 16, 3, 1, 1, 1, 1, 0},
    {8, 16, 28, 28, 32, 3, 2, 1, 1, 1, 0},
    {8, 16, 28, 28, 32, 1, 2, 0, 1, 1, 0},
    {8, 32, 14, 14, 32, 3, 1, 1, 1, 1, 1},
    {8, 64, 7, 7, 64, 3, 1, 1, 1, 1, 0},
    {8, 1, 28, 28, 16, 3, 1, 1, 1, 1, 1},
    {8, 16, 28, 28, 64, 1, 1, 0, 1, 1, 0},
    {8, 64, 28, 28, 64, 3, 2, 1, 1, 64, 0},
    {8, 96, 14, 14, 96, 3, 1, 1, 1, 96, 0},
};
#define N_BIG_CASES (sizeof BIG_CASES / sizeof *BIG_CASES)

static void ctx_init(ctx *c, const int *k)
{
    cr_assert_eq(conv2d_dims_init_ex(&c->d, k[0], k[1], k[2], k[3], k[4], k[5], k[5], k[6], k[7],
                                     k[8], k[9]),
                 0);
    ctx_alloc(c, conv2d_forward, k[10]);
}

Test(dnnl_conv, gradcheck)
{
    need_dnnl();
    conv2d_set_backend(CONV2D_BACKEND_DNNL);
    cc_seed(31);
    for (size_t i = 0; i < N_CASES; i++) {
        ctx c;
        ctx_init(&c, CASES[i]);
        cr_assert(conv2d_uses_dnnl(&c.d, 0) && conv2d_uses_dnnl(&c.d, 1) &&
                  conv2d_uses_dnnl(&c.d, 2));
        float *din = calloc(c.nin, 4), *dw = calloc(c.nw, 4), *db = calloc((size_t)c.d.oc, 4);
        conv2d_backward(din, dw, c.b ? db : NULL, c.r, c.in, c.w, &c.d, c.scratch);
        loss(&c);
        /* oneDNN ran all three passes: their primitives are cached */
        cr_expect(dnnl_ran(&c.d, c.b != NULL, 0), "case %zu fwd", i);
        cr_expect(dnnl_ran(&c.d, c.b != NULL, 1), "case %zu bwd data", i);
        cr_expect(dnnl_ran(&c.d, c.b != NULL, 2), "case %zu bwd weights", i);
        printf("case %zu: %s / %s / %s\n", i,
               dnnl_conv_impl(&c.d, c.b != NULL, DNNL_CONV_BLOCKED, 0),
               dnnl_conv_impl(&c.d, c.b != NULL, DNNL_CONV_BLOCKED, 1),
               dnnl_conv_impl(&c.d, c.b != NULL, DNNL_CONV_BLOCKED, 2));
        char name[64];
        snprintf(name, sizeof name, "dnnl case %zu din", i);
        cr_expect_leq(gradcheck(name, c.in, din, c.nin, &c), FD_TOL);
        snprintf(name, sizeof name, "dnnl case %zu dw", i);
        cr_expect_leq(gradcheck(name, c.w, dw, c.nw, &c), FD_TOL);
        if (c.b) {
            snprintf(name, sizeof name, "dnnl case %zu db", i);
            cr_expect_leq(gradcheck(name, c.b, db, (size_t)c.d.oc, &c), FD_TOL);
        }
        free(din), free(dw), free(db);
        ctx_free(&c);
    }
    dnnl_conv_cache_free();
}

/* One case, both backends: forward; din set over NaN and added to a
 * random start; dw and db added to random starts. */
static void match_case(const int *k, size_t i)
{
    ctx c;
    ctx_init(&c, k);
    const size_t oc = (size_t)c.d.oc;
    float *din0 = rand_buf(c.nin), *dw0 = rand_buf(c.nw), *db0 = rand_buf(oc);
    float *res[2][5]; /* per backend: out, din set, din added, dw, db */
    for (int be = 0; be < 2; be++) {
        conv2d_set_backend(be ? CONV2D_BACKEND_DNNL : CONV2D_BACKEND_OWN);
        cr_assert_eq(conv2d_uses_dnnl(&c.d, 1), be);
        cr_assert_eq(conv2d_uses_dnnl(&c.d, 2), be);
        float *out = calloc(c.nout, 4), *dset = malloc(c.nin * 4);
        float *dadd = copy_buf(din0, c.nin), *dw = copy_buf(dw0, c.nw), *db = copy_buf(db0, oc);
        for (size_t j = 0; j < c.nin; j++) dset[j] = NAN;
        conv2d_forward(out, c.in, c.w, c.b, &c.d, c.scratch);
        conv2d_backward_overwrite(dset, NULL, NULL, c.r, c.in, c.w, &c.d, c.scratch);
        conv2d_backward(dadd, dw, c.b ? db : NULL, c.r, c.in, c.w, &c.d, c.scratch);
        res[be][0] = out, res[be][1] = dset, res[be][2] = dadd, res[be][3] = dw, res[be][4] = db;
    }
    static const char *const what[] = {"out", "din (set)", "din (+=)", "dw (+=)", "db (+=)"};
    const size_t n[] = {c.nout, c.nin, c.nin, c.nw, oc};
    for (int t = 0; t < 5; t++) {
        if (t == 4 && !c.b) continue;
        const double e = rel_diff(res[1][t], res[0][t], n[t]);
        printf("dnnl vs own case %zu (%d,%d,%dx%d,%d,k%d/s%d,g%d,dil%d) %-9s max rel diff %.3g\n",
               i, c.d.n, c.d.ic, c.d.ih, c.d.iw, c.d.oc, c.d.kh, c.d.stride, c.d.groups,
               c.d.dilation, what[t], e);
        cr_expect_leq(e, MATCH_TOL, "case %zu %s", i, what[t]);
    }
    for (int be = 0; be < 2; be++)
        for (int t = 0; t < 5; t++) free(res[be][t]);
    free(din0), free(dw0), free(db0);
    ctx_free(&c);
}

Test(dnnl_conv, matches_own_kernels)
{
    need_dnnl();
    cc_seed(32);
    for (size_t i = 0; i < N_CASES; i++) match_case(CASES[i], i);
    for (size_t i = 0; i < N_BIG_CASES; i++) match_case(BIG_CASES[i], N_CASES + i);
    dnnl_conv_cache_free();
}

Test(dnnl_conv, repeats_bit_for_bit)
{
    need_dnnl();
    conv2d_set_backend(CONV2D_BACKEND_DNNL);
    cc_seed(33);
    for (size_t i = 0; i < N_BIG_CASES; i++) {
        ctx c;
        ctx_init(&c, BIG_CASES[i]);
        float *o[2], *dx[2], *dw[2];
        for (int r = 0; r < 2; r++) {
            o[r] = calloc(c.nout, 4), dx[r] = calloc(c.nin, 4), dw[r] = calloc(c.nw, 4);
            conv2d_forward(o[r], c.in, c.w, c.b, &c.d, c.scratch);
            conv2d_backward(dx[r], dw[r], NULL, c.r, c.in, c.w, &c.d, c.scratch);
        }
        cr_expect(!memcmp(o[0], o[1], c.nout * 4), "case %zu out", i);
        cr_expect(!memcmp(dx[0], dx[1], c.nin * 4), "case %zu din", i);
        cr_expect(!memcmp(dw[0], dw[1], c.nw * 4), "case %zu dw", i);
        for (int r = 0; r < 2; r++) free(o[r]), free(dx[r]), free(dw[r]);
        ctx_free(&c);
    }
    dnnl_conv_cache_free();
}

/* The network asks for fusions only where conv2d_backward_fuses: a shape
 * whose backward runs on oneDNN says no, and the direct shape says yes with
 * the own kernels. */
Test(dnnl_conv, no_fusions_on_dnnl)
{
    need_dnnl();
    conv2d_dims d;
    cr_assert_eq(conv2d_dims_init(&d, 8, 16, 28, 28, 16, 3, 3, 1, 1), 0);
    conv2d_set_backend(CONV2D_BACKEND_OWN);
    cr_expect_eq(conv2d_backward_fuses(&d), 1);
    cr_expect_eq(conv2d_uses_dnnl(&d, 0), 0);
    conv2d_set_backend(CONV2D_BACKEND_DNNL);
    cr_expect_eq(conv2d_backward_fuses(&d), 0);
    cr_expect_eq(conv2d_uses_dnnl(&d, 1), 1);
}

/* AUTO's table (conv2d.c dnnl_table): oneDNN for resnet20's 3x3 convs and
 * depthwise convs, the own kernels for a first layer's single input
 * channel, and for the weight gradient of a 1x1 conv to 24 channels. */
Test(dnnl_conv, auto_picks_per_shape_and_pass)
{
    need_dnnl();
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_dims d;
    cr_assert_eq(conv2d_dims_init(&d, 128, 16, 28, 28, 16, 3, 3, 1, 1), 0);
    cr_expect(conv2d_uses_dnnl(&d, 0) && conv2d_uses_dnnl(&d, 1) && conv2d_uses_dnnl(&d, 2));
    cr_expect_eq(conv2d_backward_fuses(&d), 0);
    cr_assert_eq(conv2d_dims_init(&d, 128, 1, 28, 28, 16, 3, 3, 1, 1), 0);
    cr_expect(!conv2d_uses_dnnl(&d, 0) && !conv2d_uses_dnnl(&d, 2));
    cr_expect_eq(conv2d_backward_fuses(&d), 1);
    cr_assert_eq(conv2d_dims_init_ex(&d, 128, 96, 14, 14, 96, 3, 3, 1, 1, 1, 96), 0);
    cr_expect(conv2d_uses_dnnl(&d, 0) && conv2d_uses_dnnl(&d, 1) && conv2d_uses_dnnl(&d, 2));
    cr_assert_eq(conv2d_dims_init(&d, 128, 64, 14, 14, 24, 1, 1, 1, 0), 0);
    cr_expect(conv2d_uses_dnnl(&d, 0) && conv2d_uses_dnnl(&d, 1) && !conv2d_uses_dnnl(&d, 2));
    /* the im2col + SGEMM path setting keeps every shape on it */
    conv2d_set_path(CONV2D_PATH_GEMM);
    cr_expect(!conv2d_uses_dnnl(&d, 0));
    conv2d_set_path(CONV2D_PATH_AUTO);
}

/* A backward split between the two sides (AUTO on a 1x1 conv to 24
 * channels: input gradient on oneDNN, weight gradient own) gives what the
 * own kernels give. */
Test(dnnl_conv, split_backward_matches_own)
{
    need_dnnl();
    cc_seed(34);
    const int k[11] = {8, 64, 14, 14, 24, 1, 1, 0, 1, 1, 1};
    ctx c;
    ctx_init(&c, k);
    float *din[2], *dw[2], *db[2];
    for (int be = 0; be < 2; be++) {
        conv2d_set_backend(be ? CONV2D_BACKEND_AUTO : CONV2D_BACKEND_OWN);
        din[be] = calloc(c.nin, 4), dw[be] = calloc(c.nw, 4), db[be] = calloc((size_t)c.d.oc, 4);
        conv2d_backward(din[be], dw[be], db[be], c.r, c.in, c.w, &c.d, c.scratch);
    }
    cr_expect(dnnl_ran(&c.d, 0, 1), "input gradient on oneDNN");
    cr_expect(!dnnl_ran(&c.d, 1, 2), "weight gradient on the own kernels");
    cr_expect_leq(rel_diff(din[1], din[0], c.nin), MATCH_TOL);
    cr_expect(!memcmp(dw[0], dw[1], c.nw * 4), "the own weight gradient, bit for bit");
    cr_expect(!memcmp(db[0], db[1], (size_t)c.d.oc * 4));
    for (int be = 0; be < 2; be++) free(din[be]), free(dw[be]), free(db[be]);
    ctx_free(&c);
    dnnl_conv_cache_free();
}

/* Random batch-norm coefficients for c channels (layers.h, BN_CF_*), the
 * fused ReLU on every other channel. */
static float *bn_coefs(int c)
{
    float *cf = calloc((size_t)c * BN_COEFS, sizeof(float));
    cr_assert(cf);
    for (int k = 0; k < c; k++) {
        float *f = cf + (size_t)k * BN_COEFS;
        f[BN_CF_MEAN] = 0.3f * (float)(cc_unit() - 0.5), f[BN_CF_RSTD] = 0.5f + (float)cc_unit();
        f[BN_CF_SCALE] = 0.5f + (float)cc_unit(), f[BN_CF_SHIFT] = 0.2f * (float)(cc_unit() - 0.5);
        f[BN_CF_K] = 0.5f + (float)cc_unit(), f[BN_CF_GMEAN] = 0.1f * (float)(cc_unit() - 0.5);
        f[BN_CF_GXMEAN] = 0.1f * (float)(cc_unit() - 0.5), f[BN_CF_RELU] = (float)(k % 2);
    }
    return cf;
}

/* A conv's backward with the network's fusions on oneDNN
 * (conv2d_backward_fuses_on_dnnl), through oneDNN's layouts: the
 * activation quantizer around it (in NULL: the conv quantizes q_x itself
 * and runs the quantizer's backward from oneDNN's input gradient), the
 * batch norm after it (bn_coef: the conv makes its output gradient), and
 * both, against the same steps apart: quant_forward, batchnorm_backward_
 * planes, the conv's backward, quant_backward. The weight gradient and din
 * must be the same bits (the same primitives on the same values), the
 * step's gradient the same sum in another order. resnet20's shapes (3x3 on
 * nChw16c, a strided one, a 1x1 shortcut on NCHW) and one whose channels
 * leave a part block; din set and added to. Under the own kernels the
 * shapes are off oneDNN: a call with in NULL refuses (-1), writing
 * nothing. */
Test(dnnl_conv, fusions_on_dnnl_match_the_steps_apart)
{
    need_dnnl();
    cc_seed(41);
    static const int shapes[][11] = {
        {8, 16, 28, 28, 16, 3, 1, 1, 1, 1, 0},
        {8, 32, 14, 14, 64, 3, 2, 1, 1, 1, 0},
        {8, 16, 28, 28, 32, 1, 2, 0, 1, 1, 0},
        {4, 20, 9, 9, 24, 3, 1, 1, 1, 1, 0}, /* channels that leave a part block */
    };
    quant_range qr;
    quant_range_init(&qr, 2, 0);
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int mode = 1; mode < 4; mode++) /* 1 quantizer, 2 batch norm, 3 both */
            for (int set = 0; set < 2; set++) {
                const int fq = mode & 1, fbn = mode & 2;
                ctx c;
                ctx_init(&c, shapes[si]);
                conv2d_set_backend(CONV2D_BACKEND_AUTO);
                cr_assert(conv2d_backward_fuses_on_dnnl(&c.d), "shape %zu: both passes on oneDNN",
                          si);
                const float s = 0.21f, gs = 0.03f;
                float *x = rand_buf(c.nin), *q = malloc(c.nin * 4), *dq = malloc(c.nin * 4);
                float *g = rand_buf(c.nout), *y = rand_buf(c.nout), *dy = malloc(c.nout * 4);
                float *cf = bn_coefs(c.d.oc);
                float *din[2] = {rand_buf(c.nin), NULL}, *dw[2] = {calloc(c.nw, 4), calloc(c.nw, 4)};
                double *sums = calloc(2 * (size_t)c.d.n, sizeof(double));
                cr_assert(q && dq && dy && dw[0] && dw[1] && sums);
                x[17] = 3.0f, x[18] = -1.0f; /* past both clip bounds */
                din[1] = copy_buf(din[0], c.nin);
                float dstep[2] = {0.5f, 0.5f};
                /* apart */
                if (fq) quant_forward(q, NULL, x, &s, NULL, 1, c.nin, &qr);
                if (fbn)
                    batchnorm_backward_planes(dy, 1, g, y, cf, c.d.n, c.d.oc, c.d.oh * c.d.ow);
                const conv2d_back apart = {.in = fq ? q : x, .w = c.w, .dout = fbn ? dy : g,
                                           .din = fq ? dq : din[0], .din_set = fq || set,
                                           .dw = dw[0]};
                cr_assert_eq(conv2d_backward_ex(&apart, &c.d, c.scratch), 0);
                if (fq)
                    (set ? quant_backward_overwrite : quant_backward)(din[0], &dstep[0], NULL, dq,
                                                                       x, &s, NULL, &gs, 1, c.nin,
                                                                       &qr);
                /* fused */
                conv2d_back fused = {.in = fq ? NULL : x, .w = c.w, .dout = g, .din = din[1],
                                     .din_set = set, .dw = dw[1]};
                if (fq)
                    fused.q_x = x, fused.q_s = s, fused.q_range = &qr, fused.q_dstep = &dstep[1],
                    fused.q_gscale = gs, fused.q_sums = sums;
                if (fbn) fused.bn_x = y, fused.bn_coef = cf;
                else fused.dout = g;
                cr_assert_eq(conv2d_backward_ex(&fused, &c.d, c.scratch), 0, "shape %zu mode %d set %d", si, mode, set);
                cr_expect(!memcmp(dw[0], dw[1], c.nw * 4), "shape %zu, mode %d: dw bit for bit",
                          si, mode);
                cr_expect(!memcmp(din[0], din[1], c.nin * 4),
                          "shape %zu, mode %d, set %d: din bit for bit", si, mode, set);
                cr_expect(fabsf(dstep[1] - dstep[0]) <= 1e-6f * fabsf(dstep[0] - 0.5f) + 1e-9f,
                          "shape %zu: step gradient %.9g want %.9g", si, dstep[1], dstep[0]);
                if (fq) {
                    /* off oneDNN, in NULL is refused and nothing written */
                    conv2d_set_backend(CONV2D_BACKEND_OWN);
                    cr_expect(!conv2d_backward_fuses_on_dnnl(&c.d));
                    float *keep = copy_buf(din[1], c.nin);
                    const float ds = dstep[1];
                    cr_expect_eq(conv2d_backward_ex(&fused, &c.d, c.scratch), -1);
                    cr_expect(!memcmp(keep, din[1], c.nin * 4) && dstep[1] == ds,
                              "nothing written");
                    conv2d_set_backend(CONV2D_BACKEND_AUTO);
                    free(keep);
                }
                free(x), free(q), free(dq), free(g), free(y), free(dy), free(cf);
                free(din[0]), free(din[1]), free(dw[0]), free(dw[1]), free(sums);
                ctx_free(&c);
            }
    dnnl_conv_cache_free();
}

/* LSQ_CONV: a name it does not know is an error naming it (lsq refuses to
 * start on it), and leaves the automatic choice. */
Test(dnnl_conv, lsq_conv_from_the_environment)
{
    lsq_err err;
    setenv("LSQ_CONV", "own", 1);
    cr_assert_eq(conv2d_backend_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_backend(), CONV2D_BACKEND_OWN);
    setenv("LSQ_CONV", "onednn", 1);
    cr_assert_eq(conv2d_backend_from_env(&err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "LSQ_CONV");
    cr_expect(strstr(err.message, "LSQ_CONV=onednn") && strstr(err.message, "auto, own or dnnl"),
              "%s", err.message);
    cr_expect_eq(conv2d_get_backend(), CONV2D_BACKEND_AUTO);
    unsetenv("LSQ_CONV");
    cr_assert_eq(conv2d_backend_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_backend(), CONV2D_BACKEND_AUTO);
}
