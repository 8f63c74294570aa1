/* The backward of a conv on LSQ codes in bf16 (LSQ_BWD=bf16,
 * conv2d_backward_codes, dnnl_conv_backward_bf16):
 * - on codes with power-of-two steps and an output gradient that bf16
 *   holds, it equals the f32 backward on the quantized values up to the
 *   order of the float sums;
 * - with any steps (per-channel weight steps) and any output gradient,
 *   within bf16's rounding of the output gradient;
 * - it runs a bf16 jit kernel, never a reference one;
 * - LSQ_BWD refuses a name it does not know, naming it;
 * - a W2A2 resnet20 training step on it moves the loss as the f32 one does.
 * The numerical tests skip on a CPU (or build) without oneDNN's bf16
 * kernels. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/rng.h"
#include "graph/net.h"
#include "conv_check.h"

typedef struct {
    conv2d_dims d;
    size_t nin, nout, nw;
    uint16_t *xc;
    int32_t *wc;
    float *qx, *qw, *dout, *sw;
    float sx;
} codes_case;

static void case_init(codes_case *c, int pow2, unsigned seed)
{
    lsq_rng r;
    rng_seed(&r, seed, 0);
    cr_assert_eq(conv2d_dims_init(&c->d, 4, 16, 10, 10, 32, 3, 3, 1, 1), 0);
    c->nin = (size_t)4 * 16 * 10 * 10, c->nout = (size_t)4 * 32 * 10 * 10;
    c->nw = (size_t)32 * 16 * 9;
    c->xc = malloc(c->nin * 2), c->wc = malloc(c->nw * 4), c->sw = malloc(32 * 4);
    c->qx = malloc(c->nin * 4), c->qw = malloc(c->nw * 4), c->dout = malloc(c->nout * 4);
    cr_assert(c->xc && c->wc && c->sw && c->qx && c->qw && c->dout);
    c->sx = pow2 ? 0.25f : 0.0731f;
    for (int o = 0; o < 32; o++) c->sw[o] = pow2 ? 0.125f : 0.01f + 0.003f * (float)o;
    for (size_t i = 0; i < c->nin; i++) {
        const int code = (int)(rng_uniform(&r) * 4.0) % 4; /* 2-bit unsigned */
        c->xc[i] = dnnl_conv_bf16_round((float)code);
        c->qx[i] = (float)code * c->sx;
    }
    for (size_t i = 0; i < c->nw; i++) {
        c->wc[i] = (int)(rng_uniform(&r) * 4.0) % 4 - 2; /* 2-bit signed */
        c->qw[i] = (float)c->wc[i] * c->sw[pow2 ? 0 : i / (16 * 9)];
    }
    for (size_t i = 0; i < c->nout; i++) {
        const float g = (float)(rng_uniform(&r) * 2.0 - 1.0);
        c->dout[i] = pow2 ? dnnl_conv_bf16_float(dnnl_conv_bf16_round(g)) : g;
    }
}

static void case_free(codes_case *c)
{
    free(c->xc), free(c->wc), free(c->sw), free(c->qx), free(c->qw), free(c->dout);
}

/* The f32 backward on the quantized values (oneDNN f32 or own kernels)
 * against the bf16 backward on the codes: the largest differences of din
 * and dw relative to the f32 results' largest magnitudes. */
static void compare(int pow2, double *ddin, double *ddw)
{
    codes_case c;
    case_init(&c, pow2, pow2 ? 3 : 4);
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_set_bwd(CONV2D_BWD_BF16);
    if (!conv2d_backward_codes_ready(&c.d)) {
        case_free(&c);
        conv2d_set_bwd(CONV2D_BWD_F32);
        cr_skip_test("no bf16 backward on this CPU or build");
    }
    cr_expect(strstr(dnnl_conv_impl_bf16(&c.d, 1), "bf16") &&
                  strncmp(dnnl_conv_impl_bf16(&c.d, 1), "ref", 3),
              "%s", dnnl_conv_impl_bf16(&c.d, 1));
    cr_expect(strstr(dnnl_conv_impl_bf16(&c.d, 2), "bf16") &&
                  strncmp(dnnl_conv_impl_bf16(&c.d, 2), "ref", 3),
              "%s", dnnl_conv_impl_bf16(&c.d, 2));
    float *din[2], *dw[2], *db[2];
    for (int k = 0; k < 2; k++) {
        din[k] = malloc(c.nin * 4), dw[k] = calloc(c.nw, 4), db[k] = calloc(32, 4);
        cr_assert(din[k] && dw[k] && db[k]);
    }
    float *scratch = malloc(conv2d_scratch_floats(&c.d) * 4 + 64);
    cr_assert(scratch);
    conv2d_backward_overwrite(din[0], dw[0], db[0], c.dout, c.qx, c.qw, &c.d, scratch);
    cr_assert_eq(conv2d_backward_codes(din[1], 1, dw[1], db[1], c.dout, c.xc, c.wc, c.sx, c.sw,
                                       pow2 ? 1 : 32, &c.d),
                 0);
    *ddin = rel_diff(din[1], din[0], c.nin);
    *ddw = rel_diff(dw[1], dw[0], c.nw);
    cr_expect_leq(rel_diff(db[1], db[0], 32), 1e-5, "the bias gradient stays f32");
    /* under f32 it refuses, writing nothing */
    conv2d_set_bwd(CONV2D_BWD_F32);
    cr_expect_eq(conv2d_backward_codes(din[1], 1, dw[1], NULL, c.dout, c.xc, c.wc, c.sx, c.sw,
                                       1, &c.d),
                 -1);
    for (int k = 0; k < 2; k++) free(din[k]), free(dw[k]), free(db[k]);
    free(scratch);
    case_free(&c);
    dnnl_conv_cache_free();
}

Test(bf16_bwd, equals_f32_on_codes_when_dout_is_bf16)
{
    double a, b;
    compare(1, &a, &b);
    printf("bf16 backward, bf16 dout, power-of-two steps: din %.3g dw %.3g\n", a, b);
    /* sums of K = 288 (data) or 400 (weights) products in another order */
    cr_expect_leq(a, 1e-5, "din");
    cr_expect_leq(b, 1e-5, "dw");
}

Test(bf16_bwd, within_bf16_rounding_otherwise)
{
    double a, b;
    compare(0, &a, &b);
    printf("bf16 backward, any dout, per-channel steps: din %.3g dw %.3g\n", a, b);
    /* each product's output gradient off by at most 2^-9 relative */
    cr_expect_leq(a, 4e-3, "din");
    cr_expect_leq(b, 4e-3, "dw");
    cr_expect_gt(a + b, 0.0, "the output gradient was rounded");
}

/* LSQ_BWD: a name it does not know is an error naming it (lsq exits 2 on
 * it), and leaves f32. */
Test(bf16_bwd, lsq_bwd_from_the_environment)
{
    lsq_err err;
    setenv("LSQ_BWD", "bf16", 1);
    cr_assert_eq(conv2d_bwd_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_bwd(), CONV2D_BWD_BF16);
    setenv("LSQ_BWD", "fp16", 1);
    cr_assert_eq(conv2d_bwd_from_env(&err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "LSQ_BWD");
    cr_expect(strstr(err.message, "LSQ_BWD=fp16") && strstr(err.message, "f32 or bf16"), "%s",
              err.message);
    cr_expect_eq(conv2d_get_bwd(), CONV2D_BWD_F32);
    unsetenv("LSQ_BWD");
    cr_assert_eq(conv2d_bwd_from_env(&err), LSQ_OK);
    cr_expect_eq(conv2d_get_bwd(), CONV2D_BWD_F32);
}

/* lsq itself refuses it: exit 2, the message naming the value. */
Test(bf16_bwd, lsq_exits_2_on_an_unknown_lsq_bwd)
{
    const char *bin = getenv("LSQ_BIN");
    if (!bin) cr_skip_test("LSQ_BIN not set");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LSQ_BWD=half %s --version 2>&1", bin);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char out[512] = {0};
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    const int st = pclose(p);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
    cr_expect(strstr(out, "LSQ_BWD=half"), "%s", out);
}

/* A W2A2 resnet20 step: the loss after one gradient step from the same
 * parameters, with the f32 and with the bf16 backward; both lower it, by
 * the same amount within 5% (measured: 2%; a step moves a few STE and ReLU
 * edges), and the gradients agree within 1% of their norm. */
Test(bf16_bwd, a_training_step_moves_the_loss_like_f32)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 2, q.first_last_bits = 8;
    lsq_err err;
    json_t *l = net_zoo_layers("resnet20", 1, 28, 28, &err);
    lsq_net net;
    const int n = 8;
    cr_assert_eq(net_build(&net, l, &q, 10, n, &err), LSQ_OK, "%s", err.message);
    conv2d_set_backend(CONV2D_BACKEND_AUTO);
    conv2d_dims d;
    cr_assert_eq(conv2d_dims_init(&d, n, 16, 28, 28, 16, 3, 3, 1, 1), 0);
    conv2d_set_bwd(CONV2D_BWD_BF16);
    if (!conv2d_backward_codes_ready(&d)) {
        conv2d_set_bwd(CONV2D_BWD_F32);
        net_free(&net);
        json_decref(l);
        cr_skip_test("no bf16 backward on this CPU or build");
    }
    net_init_params(&net, 5);
    net_quant_init_weights(&net, QINIT_PAPER);
    lsq_rng r;
    rng_seed(&r, 11, 0);
    float *x = malloc(sizeof *x * n * 28 * 28);
    for (int i = 0; i < n * 28 * 28; i++) x[i] = (float)rng_uniform(&r);
    int32_t y[8] = {0, 3, 5, 9, 1, 2, 7, 4};
    float dl[80];
    float *p0 = malloc(sizeof(float) * net.n_params), *g[2];
    cr_assert(x && p0);
    double loss0 = 0, loss1[2];
    const float lr = 0.05f;
    for (int m = 0; m < 2; m++) {
        conv2d_set_bwd(m ? CONV2D_BWD_BF16 : CONV2D_BWD_F32);
        if (m) memcpy(net.params, p0, sizeof(float) * net.n_params);
        net_zero_grads(&net);
        const float *lg = net_forward(&net, x, n, 1);
        /* the parameters with the activation steps the first batch set */
        if (!m) memcpy(p0, net.params, sizeof(float) * net.n_params);
        loss0 = xent_forward(net.probs, lg, y, n, 10);
        memset(dl, 0, sizeof dl);
        xent_backward(dl, net.probs, y, n, 10, 1.0f);
        net_backward(&net, dl, n);
        g[m] = malloc(sizeof(float) * net.n_params);
        memcpy(g[m], net.grads, sizeof(float) * net.n_params);
        for (int v = 0; v < net.n_views; v++)
            if (!net.views[v].in_state)
                for (size_t i = 0; i < net.views[v].count; i++)
                    net.params[net.views[v].off + i] -= lr * g[m][net.views[v].off + i];
        loss1[m] = xent_forward(net.probs, net_forward(&net, x, n, 1), y, n, 10);
    }
    conv2d_set_bwd(CONV2D_BWD_F32);
    double d2 = 0, g2 = 0;
    for (size_t i = 0; i < net.n_params; i++) {
        const double e = (double)g[0][i] - g[1][i];
        d2 += e * e, g2 += (double)g[0][i] * g[0][i];
    }
    printf("bf16 vs f32 backward, W2A2 resnet20: loss %.5f -> %.5f (f32), %.5f (bf16); "
           "gradient rel norm diff %.3g\n", loss0, loss1[0], loss1[1], sqrt(d2 / g2));
    cr_expect_lt(loss1[0], loss0);
    cr_expect_lt(loss1[1], loss0);
    cr_expect_leq(fabs((loss0 - loss1[1]) - (loss0 - loss1[0])), 0.05 * (loss0 - loss1[0]));
    cr_expect_leq(sqrt(d2 / g2), 1e-2);
    cr_expect(g2 > 0);
    free(g[0]), free(g[1]), free(p0), free(x);
    net_free(&net);
    json_decref(l);
    dnnl_conv_cache_free();
}
