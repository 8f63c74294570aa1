/* oneDNN's Winograd convs (dnnl_conv_alg, conv2d_set_wino):
 * - forced (CONV2D_WINO_ON), every gradient of a conv against central finite
 *   differences (as test_dnnl_conv.c: relative difference <= 1e-2), the
 *   Winograd primitives checked to have run; a whole network's gradients
 *   (float and W4A4) against those with oneDNN's direct convs;
 * - forward, din (set and added to) and dw (added to) against oneDNN's
 *   direct convs on resnet20's and cnn-small's 3x3 stride-1 shapes at batch
 *   8: F(4,3)'s transforms round differently, the largest difference
 *   relative to the largest magnitude of the direct result must stay below
 *   WINO_TOL (measured: about 1e-6 forward, a few 1e-6 backward);
 * - the forward of a quantized layer never takes Winograd (its sums must
 *   stay those of the integer codes): conv2d_forward does not, a float
 *   layer's conv2d_forward_float does, and so does a network by its layers;
 * - the settings: OFF (the default) never, AUTO follows the table, ON
 *   wherever allowed; LSQ_CONV=own, or dnnl without ON, keeps the direct
 *   convs; LSQ_WINO other than 0 or 1 is refused.
 * Skipped in a build without oneDNN. */
#include <criterion/criterion.h>

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "graph/net.h"
#include "conv_check.h"

#define WINO_TOL 1e-4

/* the Winograd primitive of this pass ran (is cached) */
static int wino_ran(const conv2d_dims *d, int bias, int pass)
{
    return strstr(dnnl_conv_impl_alg(d, bias, DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD, pass),
                  "wino") != NULL;
}

/* n, ic, ih, iw, oc, bias: 3x3, stride 1, pad 1 */
static const int CASES[][6] = {
    {2, 16, 6, 7, 16, 1},
    {1, 8, 5, 5, 12, 0}, /* channels oneDNN pads to 16 */
    {2, 32, 9, 4, 16, 1},
    {3, 16, 3, 3, 32, 0},
};
#define N_CASES (sizeof CASES / sizeof *CASES)

/* resnet20's and cnn-small's 3x3 stride-1 shapes at batch 8 */
static const int BIG_CASES[][6] = {
    {8, 16, 28, 28, 16, 0},
    {8, 32, 14, 14, 32, 1},
    {8, 64, 7, 7, 64, 0},
    {8, 32, 14, 14, 64, 1},
};
#define N_BIG_CASES (sizeof BIG_CASES / sizeof *BIG_CASES)

static void ctx_init(ctx *c, const int *k)
{
    cr_assert_eq(conv2d_dims_init(&c->d, k[0], k[1], k[2], k[3], k[4], 3, 3, 1, 1), 0);
    ctx_alloc(c, conv2d_forward_float, k[5]);
}

Test(dnnl_wino, gradcheck_forced)
{
    need_dnnl();
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_wino(CONV2D_WINO_ON);
    cc_seed(41);
    for (size_t i = 0; i < N_CASES; i++) {
        ctx c;
        ctx_init(&c, CASES[i]);
        for (int pass = 0; pass < 3; pass++) cr_assert(conv2d_uses_wino(&c.d, pass));
        float *din = calloc(c.nin, 4), *dw = calloc(c.nw, 4), *db = calloc((size_t)c.d.oc, 4);
        conv2d_backward(din, dw, c.b ? db : NULL, c.r, c.in, c.w, &c.d, c.scratch);
        loss(&c);
        for (int pass = 0; pass < 3; pass++)
            cr_expect(wino_ran(&c.d, c.b != NULL, pass), "case %zu pass %d on Winograd", i, pass);
        char name[64];
        snprintf(name, sizeof name, "wino case %zu din", i);
        cr_expect_leq(gradcheck(name, c.in, din, c.nin, &c), FD_TOL);
        snprintf(name, sizeof name, "wino case %zu dw", i);
        cr_expect_leq(gradcheck(name, c.w, dw, c.nw, &c), FD_TOL);
        if (c.b) {
            snprintf(name, sizeof name, "wino case %zu db", i);
            cr_expect_leq(gradcheck(name, c.b, db, (size_t)c.d.oc, &c), FD_TOL);
        }
        free(din), free(dw), free(db);
        ctx_free(&c);
    }
    conv2d_set_wino(CONV2D_WINO_OFF);
    dnnl_conv_cache_free();
}

/* Winograd (forced) against oneDNN's direct convs (LSQ_CONV=dnnl alone):
 * forward; din set over NaN and added to a random start; dw and db added
 * to random starts. */
static void match_case(const int *k, size_t i)
{
    ctx c;
    ctx_init(&c, k);
    const size_t oc = (size_t)c.d.oc;
    float *din0 = rand_buf(c.nin), *dw0 = rand_buf(c.nw), *db0 = rand_buf(oc);
    float *res[2][5]; /* direct, Winograd: out, din set, din added, dw, db */
    conv2d_set_backend(CONV2D_BACKEND_DNNL);
    for (int wi = 0; wi < 2; wi++) {
        conv2d_set_wino(wi ? CONV2D_WINO_ON : CONV2D_WINO_AUTO);
        cr_assert_eq(conv2d_uses_wino(&c.d, 0), wi);
        float *out = calloc(c.nout, 4), *dset = malloc(c.nin * 4);
        float *dadd = copy_buf(din0, c.nin), *dw = copy_buf(dw0, c.nw), *db = copy_buf(db0, oc);
        for (size_t j = 0; j < c.nin; j++) dset[j] = NAN;
        conv2d_forward_float(out, c.in, c.w, c.b, &c.d, c.scratch);
        conv2d_backward_overwrite(dset, NULL, NULL, c.r, c.in, c.w, &c.d, c.scratch);
        conv2d_backward(dadd, dw, c.b ? db : NULL, c.r, c.in, c.w, &c.d, c.scratch);
        res[wi][0] = out, res[wi][1] = dset, res[wi][2] = dadd, res[wi][3] = dw, res[wi][4] = db;
    }
    for (int pass = 0; pass < 3; pass++)
        cr_expect(wino_ran(&c.d, c.b != NULL, pass), "case %zu pass %d on Winograd", i, pass);
    static const char *const what[] = {"out", "din (set)", "din (+=)", "dw (+=)", "db (+=)"};
    const size_t n[] = {c.nout, c.nin, c.nin, c.nw, oc};
    for (int t = 0; t < 5; t++) {
        if (t == 4 && !c.b) continue;
        const double e = rel_diff(res[1][t], res[0][t], n[t]);
        printf("wino vs direct case %zu (%d,%d,%dx%d,%d) %-9s max rel diff %.3g\n", i, c.d.n,
               c.d.ic, c.d.ih, c.d.iw, c.d.oc, what[t], e);
        cr_expect_leq(e, WINO_TOL, "case %zu %s", i, what[t]);
    }
    for (int wi = 0; wi < 2; wi++)
        for (int t = 0; t < 5; t++) free(res[wi][t]);
    free(din0), free(dw0), free(db0);
    ctx_free(&c);
    conv2d_set_wino(CONV2D_WINO_OFF);
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
}

Test(dnnl_wino, matches_direct_on_zoo_shapes)
{
    need_dnnl();
    cc_seed(42);
    for (size_t i = 0; i < N_BIG_CASES; i++) match_case(BIG_CASES[i], i);
    dnnl_conv_cache_free();
}

/* conv2d_forward (a quantized layer's float path) never takes Winograd,
 * conv2d_forward_float does, and the backward does */
Test(dnnl_wino, quantized_forward_stays_direct)
{
    need_dnnl();
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_wino(CONV2D_WINO_ON);
    cc_seed(43);
    ctx c;
    ctx_init(&c, BIG_CASES[1]);
    conv2d_forward(c.out, c.in, c.w, c.b, &c.d, c.scratch);
    cr_expect(!wino_ran(&c.d, 1, 0), "conv2d_forward on Winograd");
    cr_expect(dnnl_conv_impl(&c.d, 1, DNNL_CONV_BLOCKED, 0)[0], "conv2d_forward on oneDNN");
    conv2d_forward_float(c.out, c.in, c.w, c.b, &c.d, c.scratch);
    cr_expect(wino_ran(&c.d, 1, 0), "conv2d_forward_float on Winograd");
    ctx_free(&c);
    conv2d_set_wino(CONV2D_WINO_OFF);
    dnnl_conv_cache_free();
}

/* 16 channels throughout: the 3x3 convs are Winograd's when forced */
static const char *NET16 =
    "{\"input\":[16,8,8],\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":16,\"kernel\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"b1\"},{\"type\":\"relu\",\"name\":\"r1\"},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"add\",\"name\":\"add\",\"inputs\":[\"c2\",\"r1\"]},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"avgpool\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";

/* A network's forward of its 3x3 conv c2 (16 -> 16, 8x8, bias): Winograd
 * when the layer is float, the direct conv when it is quantized (W4A4,
 * first and last layers 8 bits); its backward Winograd either way. */
Test(dnnl_wino, network_forward_only_for_float_layers)
{
    need_dnnl();
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_wino(CONV2D_WINO_ON);
    const int n = 4;
    conv2d_dims d;
    cr_assert_eq(conv2d_dims_init(&d, n, 16, 8, 8, 16, 3, 3, 1, 1), 0);
    float x[4 * 16 * 8 * 8];
    lsq_rng r;
    rng_seed(&r, 9, 0);
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)rng_normal(&r);
    const int32_t y[4] = {1, 4, 9, 2};
    for (int quant = 0; quant < 2; quant++) {
        dnnl_conv_cache_free();
        json_t *j = json_loads(NET16, 0, NULL);
        spec_quant q;
        memset(&q, 0, sizeof q);
        q.enabled = 1, q.weight_bits = q.act_bits = 4, q.first_last_bits = 8;
        lsq_net net;
        lsq_err err;
        cr_assert_eq(net_build(&net, j, quant ? &q : NULL, 10, n, &err), LSQ_OK, "%s",
                     err.message);
        net_init_params(&net, 3);
        if (quant) net_quant_init_weights(&net, QINIT_PAPER);
        net_zero_grads(&net);
        const float *logits = net_forward(&net, x, n, 1);
        xent_forward(net.probs, logits, y, n, 10);
        float dl[40] = {0};
        xent_backward(dl, net.probs, y, n, 10, 1.0f);
        net_backward(&net, dl, n);
        cr_expect_eq(wino_ran(&d, 1, 0), !quant, "%s c2's forward on Winograd: %d",
                     quant ? "W4A4" : "float", wino_ran(&d, 1, 0));
        cr_expect(wino_ran(&d, 1, 1) && wino_ran(&d, 1, 2), "%s c2's backward on Winograd",
                  quant ? "W4A4" : "float");
        net_free(&net);
        json_decref(j);
    }
    conv2d_set_wino(CONV2D_WINO_OFF);
    dnnl_conv_cache_free();
}

/* NET16's parameter gradients after one forward and backward under
 * setting w; the caller frees them. */
static float *net16_grads(const spec_quant *q, conv2d_wino w, size_t *np)
{
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_wino(w);
    json_t *j = json_loads(NET16, 0, NULL);
    lsq_net net;
    lsq_err err;
    const int n = 4;
    cr_assert_eq(net_build(&net, j, q, 10, n, &err), LSQ_OK, "%s", err.message);
    net_init_params(&net, 7);
    if (q) net_quant_init_weights(&net, QINIT_PAPER);
    lsq_rng r;
    rng_seed(&r, 3, 0);
    float x[4 * 16 * 8 * 8];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)rng_normal(&r);
    const int32_t y[4] = {1, 4, 9, 2};
    net_zero_grads(&net);
    const float *logits = net_forward(&net, x, n, 1);
    xent_forward(net.probs, logits, y, n, 10);
    float dl[40] = {0};
    xent_backward(dl, net.probs, y, n, 10, 1.0f);
    net_backward(&net, dl, n);
    *np = net.n_params;
    float *g = copy_buf(net.grads, net.n_params);
    net_free(&net);
    json_decref(j);
    conv2d_set_wino(CONV2D_WINO_OFF);
    return g;
}

/* A whole network's gradients (float and W4A4, every parameter and step)
 * with Winograd forced, against those of oneDNN's direct convs: within
 * WINO_TOL of the largest. (A finite-difference check of this 16-channel
 * network cannot tell: the float loss's own rounding, 2.4e-7 at 2.3, moves
 * its differences by more than Winograd does, direct convs alike; the
 * conv's own check is gradcheck_forced.) */
Test(dnnl_wino, whole_network_gradients_match_direct)
{
    need_dnnl();
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = q.act_bits = 4, q.first_last_bits = 8;
    for (int quant = 0; quant < 2; quant++) {
        size_t np[2];
        float *g[2];
        for (int wi = 0; wi < 2; wi++) {
            dnnl_conv_cache_free();
            g[wi] = net16_grads(quant ? &q : NULL, wi ? CONV2D_WINO_ON : CONV2D_WINO_OFF,
                                &np[wi]);
        }
        conv2d_dims d;
        cr_assert_eq(conv2d_dims_init(&d, 4, 16, 8, 8, 16, 3, 3, 1, 1), 0);
        cr_expect(wino_ran(&d, 1, 2), "the Winograd run took Winograd");
        cr_assert_eq(np[0], np[1]);
        const double e = rel_diff(g[1], g[0], np[0]);
        printf("whole network %s: %zu gradients, Winograd vs direct max rel diff %.3g\n",
               quant ? "W4A4" : "float", np[0], e);
        cr_expect_leq(e, WINO_TOL, "%s", quant ? "W4A4" : "float");
        free(g[0]), free(g[1]);
    }
    dnnl_conv_cache_free();
}

/* Who decides: OFF never, ON wherever oneDNN's blocked path runs a 3x3
 * stride-1 pass, AUTO the table (conv2d.c wino_table) under LSQ_CONV=auto
 * only; the own kernels,
 * other shapes and a first layer's few channels never. */
Test(dnnl_wino, settings)
{
    need_dnnl();
    conv2d_dims d, s2, c1, pw;
    cr_assert_eq(conv2d_dims_init(&d, 128, 64, 7, 7, 64, 3, 3, 1, 1), 0);
    cr_assert_eq(conv2d_dims_init(&s2, 128, 32, 14, 14, 64, 3, 3, 2, 1), 0);
    cr_assert_eq(conv2d_dims_init(&c1, 128, 1, 28, 28, 16, 3, 3, 1, 1), 0);
    cr_assert_eq(conv2d_dims_init(&pw, 128, 64, 14, 14, 64, 1, 1, 1, 0), 0);
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_wino(CONV2D_WINO_ON);
    for (int p = 0; p < 3; p++) {
        cr_expect(conv2d_uses_wino(&d, p));
        cr_expect(!conv2d_uses_wino(&s2, p) && !conv2d_uses_wino(&c1, p) &&
                  !conv2d_uses_wino(&pw, p));
    }
    cr_expect_eq(conv2d_backward_fuses(&d), 0);
    /* AUTO: the table, on resnet20's 64-channel stage and cnn-small's
     * 32 -> 64 conv, not on 16 or 32 channels, never the weight gradient */
    conv2d_dims c2, s1;
    cr_assert_eq(conv2d_dims_init(&c2, 128, 32, 14, 14, 64, 3, 3, 1, 1), 0);
    cr_assert_eq(conv2d_dims_init(&s1, 128, 32, 14, 14, 32, 3, 3, 1, 1), 0);
    conv2d_set_wino(CONV2D_WINO_AUTO);
    cr_expect(conv2d_uses_wino(&d, 0) && conv2d_uses_wino(&d, 1) && !conv2d_uses_wino(&d, 2));
    cr_expect(conv2d_uses_wino(&c2, 0) && !conv2d_uses_wino(&c2, 1) && !conv2d_uses_wino(&c2, 2));
    for (int p = 0; p < 3; p++) cr_expect(!conv2d_uses_wino(&s1, p));
    conv2d_set_wino(CONV2D_WINO_OFF);
    for (int p = 0; p < 3; p++) cr_expect(!conv2d_uses_wino(&d, p));
    conv2d_set_backend(CONV2D_BACKEND_OWN);
    conv2d_set_wino(CONV2D_WINO_ON);
    for (int p = 0; p < 3; p++) cr_expect(!conv2d_uses_wino(&d, p));
    conv2d_set_backend(CONV2D_BACKEND_DNNL);
    conv2d_set_wino(CONV2D_WINO_AUTO);
    for (int p = 0; p < 3; p++) cr_expect(!conv2d_uses_wino(&d, p), "LSQ_CONV=dnnl alone");
    conv2d_set_wino(CONV2D_WINO_ON);
    for (int p = 0; p < 3; p++) cr_expect(conv2d_uses_wino(&d, p));
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_wino(CONV2D_WINO_OFF);
}

/* LSQ_WINO: 0 or 1, unset is 0; anything else is an error naming it (lsq
 * refuses to start on it) and leaves it off. */
Test(dnnl_wino, lsq_wino_from_the_environment)
{
    lsq_err err;
    setenv("LSQ_WINO", "0", 1);
    cr_assert_eq(conv2d_wino_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_wino(), CONV2D_WINO_OFF);
    setenv("LSQ_WINO", "1", 1);
    cr_assert_eq(conv2d_wino_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_wino(), CONV2D_WINO_ON);
    setenv("LSQ_WINO", "on", 1);
    cr_assert_eq(conv2d_wino_from_env(&err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "LSQ_WINO");
    cr_expect(strstr(err.message, "LSQ_WINO=on") && strstr(err.message, "0 or 1"), "%s",
              err.message);
    cr_expect_eq(conv2d_get_wino(), CONV2D_WINO_OFF);
    unsetenv("LSQ_WINO");
    cr_assert_eq(conv2d_wino_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_wino(), CONV2D_WINO_OFF);
}
