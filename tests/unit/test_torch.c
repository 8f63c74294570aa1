/* The engine against PyTorch: one forward, backward and SGD step of cnn-small
 * (full precision, W2A2, W4A4 with the paper's quantizer), of a ResNet
 * basic block with a projection shortcut and of a MobileNetV2-style net of
 * the layers beyond the zoo's (float, W2A2, per-channel W4A4), compared
 * tensor by tensor with the fixtures that tests/fixtures/make_fixtures.py
 * wrote (Debian's python3-torch).
 *
 * Tolerance: every tensor must agree to TOL of its own largest magnitude
 * (max |got - ref| <= TOL * max |ref| + ABS_FLOOR). float32 sums in another
 * order (im2col + OpenBLAS vs. oneDNN) differ by ~1e-6 relative; a wrong
 * gradient is off by far more. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "graph/net.h"
#include "nn/layers.h"
#include "train/optim.h"
#include "train/train.h"

#define TOL 2e-4
#define ABS_FLOOR 1e-7

static int failures;

static void check(const fixture *fx, const char *name, const float *got, size_t n)
{
    fixture_diff d;
    cr_assert_eq(fixture_compare(fx, name, got, n, &d), 0, "fixture tensor %s missing or wrong size", name);
    double lim = TOL * d.ref_max + ABS_FLOOR;
    int ok = d.max_abs <= lim;
    printf("  %-28s max abs diff %.3g (scale %.3g, limit %.3g)%s\n", name, d.max_abs, d.ref_max, lim,
           ok ? "" : "  MISMATCH");
    if (!ok) failures++;
    cr_expect(ok, "%s: max abs diff %g exceeds %g", name, d.max_abs, lim);
}

static void load_params(lsq_net *net, const fixture *fx, int with_steps)
{
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind == PV_FLAG) continue;
        if ((vw->kind == PV_STEP || vw->kind == PV_OFFSET) && !with_steps) continue;
        const fixture_tensor *t = fixture_get(fx, vw->name);
        cr_assert(t, "fixture has no %s", vw->name);
        cr_assert_eq(t->numel, vw->count, "%s: %zu values, net has %zu", vw->name, t->numel, vw->count);
        memcpy((vw->in_state ? net->state : net->params) + vw->off, t->data, vw->count * sizeof(float));
    }
}

static lsq_net *build_zoo(const char *arch, const spec_quant *q, int batch)
{
    lsq_err err;
    json_t *l = net_zoo_layers(arch, 1, 28, 28, &err);
    lsq_net *net = calloc(1, sizeof *net);
    cr_assert_eq(net_build(net, l, q, 10, batch, &err), LSQ_OK, "%s", err.message);
    json_decref(l);
    return net;
}

/* forward + loss + backward + one SGD step, checking each stage */
static void step_and_check(lsq_net *net, const fixture *fx, int quantized)
{
    const fixture_tensor *x = fixture_get(fx, "input"), *yl = fixture_get(fx, "labels");
    cr_assert(x && yl);
    int n = (int)yl->numel;
    int32_t *y = malloc(n * sizeof *y);
    for (int i = 0; i < n; i++) y[i] = (int32_t)yl->data[i];
    const float *logits = net_forward(net, x->data, n, 1);
    check(fx, "logits", logits, (size_t)n * 10);
    float loss = xent_forward(net->probs, logits, y, n, 10);
    check(fx, "loss", &loss, 1);
    if (quantized) {
        /* activation steps initialised from this first batch */
        for (int v = 0; v < net->n_views; v++)
            if (net->views[v].kind == PV_STEP)
                check(fx, net->views[v].name, net->params + net->views[v].off, net->views[v].count);
    }
    float *dl = calloc((size_t)n * 10, sizeof(float));
    xent_backward(dl, net->probs, y, n, 10, 1.0f);
    net_zero_grads(net);
    net_backward(net, dl, n);
    char name[160];
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->in_state) continue;
        snprintf(name, sizeof name, "grad.%s", vw->name);
        check(fx, name, net->grads + vw->off, vw->count);
    }
    lsq_sgd opt;
    lsq_err err;
    cr_assert_eq(sgd_init(&opt, net, &err), LSQ_OK);
    sgd_step(&opt, net, 0.01f, 0.9f, 1e-4f, 0);
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind == PV_FLAG) continue;
        snprintf(name, sizeof name, "after.%s", vw->name);
        check(fx, name, (vw->in_state ? net->state : net->params) + vw->off, vw->count);
    }
    sgd_free(&opt);
    free(dl);
    free(y);
}

Test(torch, cnn_small_fp_step)
{
    train_set_threads(2);
    fixture *fx = fixture_load(FIXTURE_DIR "/cnn_small_fp.bin");
    cr_assert(fx);
    lsq_net *net = build_zoo("cnn-small", NULL, 32);
    load_params(net, fx, 0);
    printf("cnn-small FP vs PyTorch:\n");
    step_and_check(net, fx, 0);
    net_free(net);
    free(net);
    fixture_free(fx);
}

static void quant_case(const char *file, int bits)
{
    train_set_threads(2);
    fixture *fx = fixture_load(file);
    cr_assert(fx);
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = q.act_bits = bits, q.first_last_bits = 8;
    q.granularity = GRAN_TENSOR, q.grad_scale = GSCALE_PAPER, q.init = QINIT_PAPER;
    lsq_net *net = build_zoo("cnn-small", &q, 32);
    load_params(net, fx, 0);
    net_quant_init_weights(net, QINIT_PAPER);
    printf("cnn-small W%dA%d vs PyTorch (paper's quantizer):\n", bits, bits);
    /* pass 1: the steps as initialised (weights: the paper's formula now;
     * activations: from the first training batch, in forward order) */
    const fixture_tensor *x0 = fixture_get(fx, "input");
    cr_assert(x0);
    net_forward(net, x0->data, 32, 1);
    char name[160];
    for (int v = 0; v < net->n_views; v++) {
        if (net->views[v].kind != PV_STEP) continue;
        snprintf(name, sizeof name, "init.%s", net->views[v].name);
        check(fx, name, net->params + net->views[v].off, net->views[v].count);
    }
    /* pass 2 runs with the fixture's steps (each rounded to a power of two,
     * see make_fixtures.py) from the initial batch-norm state */
    load_params(net, fx, 1);
    /* conv2's integer weight codes */
    int wv = net_find_view(net, "conv2.weight");
    int sv = net_find_view(net, "conv2.weight.step");
    size_t nw = net->views[wv].count;
    float *tmp = malloc(nw * sizeof(float));
    int32_t *codes = malloc(nw * sizeof(int32_t));
    quant_range r;
    quant_range_init(&r, bits, 1);
    quant_forward(tmp, codes, net->params + net->views[wv].off, net->params + net->views[sv].off, NULL,
                  1, nw, &r);
    for (size_t i = 0; i < nw; i++) tmp[i] = (float)codes[i];
    const fixture_tensor *ref = fixture_get(fx, "codes.conv2.weight");
    cr_assert(ref && ref->numel == nw);
    size_t differ = 0;
    for (size_t i = 0; i < nw; i++) differ += tmp[i] != ref->data[i];
    printf("  conv2 weight codes: %zu of %zu differ\n", differ, nw);
    cr_expect_eq(differ, 0, "%zu conv2 weight codes differ from PyTorch", differ);
    free(tmp);
    free(codes);
    step_and_check(net, fx, 1);
    net_free(net);
    free(net);
    fixture_free(fx);
}

Test(torch, cnn_small_w2a2_step) { quant_case(FIXTURE_DIR "/cnn_small_w2a2.bin", 2); }
Test(torch, cnn_small_w4a4_step) { quant_case(FIXTURE_DIR "/cnn_small_w4a4.bin", 4); }

Test(torch, resnet_block_with_projection)
{
    train_set_threads(2);
    fixture *fx = fixture_load(FIXTURE_DIR "/resnet_block.bin");
    cr_assert(fx);
    const char *text =
        "{\"input\":[16,14,14],\"layers\":["
        "{\"type\":\"conv2d\",\"name\":\"conv1\",\"out\":32,\"kernel\":3,\"stride\":2,\"pad\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\",\"name\":\"bn1\"},{\"type\":\"relu\",\"name\":\"relu1\"},"
        "{\"type\":\"conv2d\",\"name\":\"conv2\",\"out\":32,\"kernel\":3,\"pad\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\",\"name\":\"bn2\"},"
        "{\"type\":\"conv2d\",\"name\":\"sc.conv\",\"input\":\"input\",\"out\":32,\"kernel\":1,\"stride\":2,\"bias\":false},"
        "{\"type\":\"batchnorm\",\"name\":\"sc.bn\"},"
        "{\"type\":\"add\",\"name\":\"add\",\"inputs\":[\"bn2\",\"sc.bn\"]},{\"type\":\"relu\",\"name\":\"relu2\"}]}";
    json_t *j = json_loads(text, 0, NULL);
    lsq_net net;
    lsq_err err;
    cr_assert_eq(net_build(&net, j, NULL, 32 * 7 * 7, 4, &err), LSQ_OK, "%s", err.message);
    json_decref(j);
    load_params(&net, fx, 0);
    const fixture_tensor *x = fixture_get(fx, "input"), *dout = fixture_get(fx, "dout");
    cr_assert(x && dout);
    float *dx = calloc(x->numel, sizeof(float));
    net.dinput = dx;
    printf("ResNet basic block with projection vs PyTorch:\n");
    const float *out = net_forward(&net, x->data, 4, 1);
    check(fx, "output", out, dout->numel);
    net_zero_grads(&net);
    net_backward(&net, dout->data, 4);
    check(fx, "grad.input", dx, x->numel);
    char name[160];
    for (int v = 0; v < net.n_views; v++) {
        if (net.views[v].in_state) continue;
        snprintf(name, sizeof name, "grad.%s", net.views[v].name);
        check(fx, name, net.grads + net.views[v].off, net.views[v].count);
    }
    lsq_sgd opt;
    cr_assert_eq(sgd_init(&opt, &net, &err), LSQ_OK);
    sgd_step(&opt, &net, 0.01f, 0.9f, 1e-4f, 0);
    for (int v = 0; v < net.n_views; v++) {
        snprintf(name, sizeof name, "after.%s", net.views[v].name);
        check(fx, name, (net.views[v].in_state ? net.state : net.params) + net.views[v].off,
              net.views[v].count);
    }
    sgd_free(&opt);
    net.dinput = NULL;
    free(dx);
    net_free(&net);
    fixture_free(fx);
}

/* ---- a MobileNetV2-style net of the layers beyond the zoo's ----
 * make_fixtures.py's Mbv2, as a layer list: depthwise convs (stride 1 and
 * 2), a grouped dilated conv, ReLU6 as clip, an inverted residual add, max
 * pooling with padding, leaky relu, a concat, scale, windowed average
 * pooling, global average pooling, flatten, linear. Float, W2A2 with
 * per-tensor steps, W4A4 with per-channel weight steps; the same tolerance
 * as cnn-small. */
static const char *MBV2_NET =
    "{\"input\":[1,28,28],\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"stem\",\"out\":8,\"kernel\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn0\"},{\"type\":\"clip\",\"name\":\"r0\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"dw1\",\"out\":8,\"kernel\":3,\"stride\":2,\"pad\":1,\"groups\":8,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn1\"},{\"type\":\"clip\",\"name\":\"r1\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"pj1\",\"out\":8,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn2\"},"
    "{\"type\":\"conv2d\",\"name\":\"ex2\",\"out\":16,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn3\"},{\"type\":\"clip\",\"name\":\"r3\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"dw2\",\"out\":16,\"kernel\":3,\"pad\":1,\"groups\":16,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn4\"},{\"type\":\"clip\",\"name\":\"r4\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"pj2\",\"out\":8,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn5\"},"
    "{\"type\":\"add\",\"name\":\"res\",\"inputs\":[\"bn5\",\"bn2\"]},"
    "{\"type\":\"maxpool\",\"name\":\"mp\",\"kernel\":3,\"stride\":1,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"gd\",\"input\":\"res\",\"out\":8,\"kernel\":3,\"pad\":2,\"dilation\":2,\"groups\":2},"
    "{\"type\":\"leakyrelu\",\"name\":\"lr\",\"alpha\":0.1},"
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"mp\",\"lr\"]},"
    "{\"type\":\"scale\",\"name\":\"sc\",\"value\":0.5},"
    "{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"head\",\"out\":32,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn6\"},{\"type\":\"clip\",\"name\":\"r6\",\"min\":0,\"max\":6},"
    "{\"type\":\"avgpool\",\"name\":\"gap\"},{\"type\":\"flatten\",\"name\":\"flat\"},"
    "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";

static lsq_net *build_mbv2(const spec_quant *q, int batch)
{
    lsq_err err;
    json_t *l = json_loads(MBV2_NET, 0, NULL);
    cr_assert(l);
    lsq_net *net = calloc(1, sizeof *net);
    cr_assert_eq(net_build(net, l, q, 10, batch, &err), LSQ_OK, "%s", err.message);
    json_decref(l);
    return net;
}

Test(torch, mbv2_fp_step)
{
    train_set_threads(2);
    fixture *fx = fixture_load(FIXTURE_DIR "/mbv2_fp.bin");
    cr_assert(fx);
    lsq_net *net = build_mbv2(NULL, 32);
    load_params(net, fx, 0);
    printf("MobileNetV2-style net FP vs PyTorch:\n");
    step_and_check(net, fx, 0);
    net_free(net);
    free(net);
    fixture_free(fx);
}

static void mbv2_quant_case(const char *file, int bits, spec_granularity gran)
{
    train_set_threads(2);
    fixture *fx = fixture_load(file);
    cr_assert(fx);
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = q.act_bits = bits, q.first_last_bits = 8;
    q.granularity = gran, q.grad_scale = GSCALE_PAPER, q.init = QINIT_PAPER;
    lsq_net *net = build_mbv2(&q, 32);
    /* the input signs the fixture assumes: signed after a bare batch norm,
     * an add, a leaky relu or a concat with one; unsigned after ReLU6 */
    static const char *const signed_in[] = {"ex2", "gd", "head"};
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (!nd->aq.on) continue;
        int want = 0;
        for (int k = 0; k < 3; k++) want |= strcmp(nd->name, signed_in[k]) == 0;
        cr_expect_eq(nd->aq.r.is_signed, want, "%s: input signed %d", nd->name, nd->aq.r.is_signed);
    }
    load_params(net, fx, 0);
    net_quant_init_weights(net, QINIT_PAPER);
    printf("MobileNetV2-style net W%dA%d%s vs PyTorch (paper's quantizer):\n", bits, bits,
           gran == GRAN_CHANNEL ? " per-channel" : "");
    const fixture_tensor *x0 = fixture_get(fx, "input");
    cr_assert(x0);
    net_forward(net, x0->data, 32, 1);
    char name[160];
    for (int v = 0; v < net->n_views; v++) {
        if (net->views[v].kind != PV_STEP) continue;
        snprintf(name, sizeof name, "init.%s", net->views[v].name);
        check(fx, name, net->params + net->views[v].off, net->views[v].count);
    }
    load_params(net, fx, 1);
    /* the depthwise conv's integer weight codes */
    int wv = net_find_view(net, "dw2.weight"), sv = net_find_view(net, "dw2.weight.step");
    size_t nw = net->views[wv].count;
    int ch = (int)net->views[sv].count;
    float *tmp = malloc(nw * sizeof(float));
    int32_t *codes = malloc(nw * sizeof(int32_t));
    quant_range r;
    quant_range_init(&r, bits, 1);
    quant_forward(tmp, codes, net->params + net->views[wv].off, net->params + net->views[sv].off,
                  NULL, ch, nw / (size_t)ch, &r);
    const fixture_tensor *ref = fixture_get(fx, "codes.dw2.weight");
    cr_assert(ref && ref->numel == nw);
    size_t differ = 0;
    for (size_t i = 0; i < nw; i++) differ += (float)codes[i] != ref->data[i];
    printf("  dw2 weight codes: %zu of %zu differ\n", differ, nw);
    cr_expect_eq(differ, 0, "%zu dw2 weight codes differ from PyTorch", differ);
    free(tmp);
    free(codes);
    step_and_check(net, fx, 1);
    net_free(net);
    free(net);
    fixture_free(fx);
}

Test(torch, mbv2_w2a2_step) { mbv2_quant_case(FIXTURE_DIR "/mbv2_w2a2.bin", 2, GRAN_TENSOR); }
Test(torch, mbv2_w4a4_per_channel_step)
{
    mbv2_quant_case(FIXTURE_DIR "/mbv2_w4a4c.bin", 4, GRAN_CHANNEL);
}
