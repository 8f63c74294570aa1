/* The engine against PyTorch: one forward, backward and SGD step of cnn-small
 * (full precision, W2A2, W4A4 with the paper's quantizer) and of a ResNet
 * basic block with a projection shortcut, compared tensor by tensor with the
 * fixtures that tests/fixtures/make_fixtures.py wrote (Debian's python3-torch).
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
