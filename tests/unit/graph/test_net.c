/* Networks: zoo shapes, layer-list errors naming the layer and key, the
 * parameter buffer's views, a whole-network gradient check, checkpoints. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "nn/layers.h"
#include "train/ckpt.h"
#include "train/optim.h"

static lsq_status build_text(lsq_net *net, const char *text, const spec_quant *q, lsq_err *err)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    cr_assert(j, "test JSON does not parse: %s", je.text);
    lsq_status st = net_build(net, j, q, 10, 4, err);
    json_decref(j);
    return st;
}

Test(net, zoo_shapes_and_params)
{
    struct { const char *arch; size_t params; int convs; } want[] = {
        /* cnn-small: 288 + 2*32 + 18432 + 2*64 + 3136*256+256 + 2560+10 */
        {"cnn-small", 288 + 64 + 18432 + 128 + 802816 + 256 + 2560 + 10, 2},
        {"mlp", 784 * 256 + 256 + 256 * 256 + 256 + 2560 + 10, 0},
        {"resnet20", 0, 21},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        lsq_err err;
        json_t *l = net_zoo_layers(want[i].arch, 1, 28, 28, &err);
        cr_assert(l);
        lsq_net net;
        cr_assert_eq(net_build(&net, l, NULL, 10, 2, &err), LSQ_OK, "%s: %s", want[i].arch, err.message);
        int convs = 0;
        for (int k = 0; k < net.n_nodes; k++) convs += net.nodes[k].op == OP_CONV;
        cr_expect_eq(convs, want[i].convs, "%s: %d convs", want[i].arch, convs);
        if (want[i].params) cr_expect_eq(net.n_params, want[i].params, "%s: %zu params", want[i].arch, net.n_params);
        const net_node *o = &net.nodes[net.output];
        cr_expect_eq(o->c, 10);
        net_free(&net);
        json_decref(l);
    }
}

Test(net, resnet20_structure)
{
    lsq_err err;
    json_t *l = net_zoo_layers("resnet20", 1, 28, 28, &err);
    lsq_net net;
    cr_assert_eq(net_build(&net, l, NULL, 10, 2, &err), LSQ_OK, "%s", err.message);
    /* 19 3x3 convs + 2 projection shortcuts; stages end at 28, 14, 7 */
    int proj = 0, last_h = 0;
    for (int k = 0; k < net.n_nodes; k++) {
        const net_node *nd = &net.nodes[k];
        if (nd->op == OP_CONV && nd->kernel == 1) proj++;
        if (nd->op == OP_ADD) last_h = nd->h;
    }
    cr_expect_eq(proj, 2);
    cr_expect_eq(last_h, 7);
    cr_expect_geq(net_find_view(&net, "s2b1.sc.conv.weight"), 0);
    cr_expect_geq(net_find_view(&net, "s3b3.bn2.running_var"), 0);
    /* 0.27M parameters as in He et al. (plus BN) */
    cr_expect(net.n_params > 260000 && net.n_params < 280000, "%zu", net.n_params);
    net_free(&net);
    json_decref(l);
}

Test(net, layer_list_errors_name_layer_and_key)
{
    struct { const char *text, *field, *needle; } cases[] = {
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"strid\":2}]}", "model.layers[0].strid", "unknown key"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"kernel\":3}]}", "model.layers[0].out", "required"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":40}]}", "model.layers[0].kernel", "1..15"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"linear\",\"out\":10}]}", "model.layers[1].input", "flat"},
        {"{\"layers\":[{\"type\":\"dense\",\"out\":10}]}", "model.layers[0].type", "dense"},
        {"{\"layers\":[{\"out\":10}]}", "model.layers[0].type", "required"},
        {"{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":12}]}", "model.layers[1]", "10 classes"},
        {"{\"layers\":[{\"type\":\"flatten\",\"name\":\"a\"},{\"type\":\"relu\",\"name\":\"a\"}]}", "model.layers[1].name", "earlier"},
        {"{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"add\",\"inputs\":[\"nope\",\"input\"]}]}", "model.layers[1].inputs", "nope"},
        {"{\"input\":[1,8,8],\"layers\":[{\"type\":\"maxpool\",\"kernel\":10}]}", "model.layers[0].kernel", "larger"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"bias\":1}]}", "model.layers[0].bias", "true or false"},
        {"{\"layers\":[]}", "model.layers", "non-empty"},
        {"{\"input\":[1,28],\"layers\":[{\"type\":\"flatten\"}]}", "model.input", "[C, H, W]"},
        {"{\"layers\":[{\"type\":\"relu\",\"input\":\"ghost\"}]}", "model.layers[0].input", "ghost"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"pad\":1,\"name\":\"c\"},{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"stride\":2},"
         "{\"type\":\"add\",\"inputs\":[\"c\",\"conv2d2\"]}]}", "model.layers[2].inputs", "different shapes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lsq_net net;
        lsq_err err;
        lsq_err_clear(&err);
        lsq_status st = build_text(&net, cases[i].text, NULL, &err);
        cr_expect_eq(st, LSQ_ERR_INVALID, "case %zu: status %d", i, st);
        cr_expect_str_eq(err.field, cases[i].field, "case %zu: field '%s' (%s)", i, err.field, err.message);
        cr_expect(strstr(err.message, cases[i].needle), "case %zu: message '%s' lacks '%s'", i,
                  err.message, cases[i].needle);
        if (st == LSQ_OK) net_free(&net);
    }
}

Test(net, quant_layer_names_are_checked)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 2, q.first_last_bits = 8;
    q.n_layers = 1;
    snprintf(q.layers[0].name, sizeof q.layers[0].name, "fc9");
    lsq_err err;
    json_t *l = net_zoo_layers("cnn-small", 1, 28, 28, &err);
    lsq_net net;
    cr_assert_eq(net_build(&net, l, &q, 10, 2, &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "quant.layers.fc9");
    json_decref(l);
}

Test(net, quantized_cnn_small_bits_and_signs)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 3, q.first_last_bits = 8;
    q.n_layers = 1;
    snprintf(q.layers[0].name, sizeof q.layers[0].name, "fc1");
    q.layers[0].weight_bits = 4;
    lsq_err err;
    json_t *l = net_zoo_layers("cnn-small", 1, 28, 28, &err);
    lsq_net net;
    cr_assert_eq(net_build(&net, l, &q, 10, 2, &err), LSQ_OK, "%s", err.message);
    struct { const char *name; int wb, ab; } want[] = {
        {"conv1", 8, 8}, {"conv2", 2, 3}, {"fc1", 4, 3}, {"fc2", 8, 8}};
    for (int i = 0; i < 4; i++) {
        const net_node *nd = NULL;
        for (int k = 0; k < net.n_nodes; k++)
            if (strcmp(net.nodes[k].name, want[i].name) == 0) nd = &net.nodes[k];
        cr_assert(nd);
        cr_expect_eq(net_node_weight_bits(nd), want[i].wb, "%s", want[i].name);
        cr_expect_eq(net_node_act_bits(nd), want[i].ab, "%s", want[i].name);
        cr_expect_eq(nd->wq.r.is_signed, 1);
        cr_expect_eq(nd->aq.r.is_signed, 0, "%s input follows ReLU/pool or the image", want[i].name);
    }
    /* steps are parameters in the one buffer; g for an activation uses the
     * per-example feature count: conv2 input is 32x14x14 */
    int v = net_find_view(&net, "conv2.input.step");
    cr_assert_geq(v, 0);
    cr_expect_eq(net.views[v].kind, PV_STEP);
    cr_expect_eq(net.views[v].in_state, 0);
    const net_node *c2 = &net.nodes[net.views[v].node];
    cr_expect_float_eq(c2->aq.g[0], (float)(1.0 / sqrt(32.0 * 14 * 14 * 7)), 1e-9);
    cr_expect_float_eq(c2->wq.g[0], (float)(1.0 / sqrt(32.0 * 64 * 9 * 1)), 1e-9);
    /* the input quantizer of conv1 starts at 1/255 */
    net_init_params(&net, 1);
    net_quant_init_weights(&net, QINIT_PAPER);
    cr_expect_eq(net.params[net.views[net_find_view(&net, "conv1.input.step")].off], 1.0f / 255.0f);
    net_free(&net);
    json_decref(l);
}

/* A W2A2 resnet20 training step with the quantized convs' forward on
 * integer codes (the default) and on float values (CONV2D_PATH_FLOAT): the
 * two differ only by float rounding in the forward sums. (At batch norm's
 * initial beta = 0 the ReLU edge sits at xhat = 0, where a rounding flips
 * masks and bias gradients: there the two float paths, direct and im2col,
 * differ by ~1% of the gradient norm too. So the batch norms are moved off
 * their initial values first.) */
Test(net, integer_forward_matches_float_forward)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 2, q.first_last_bits = 8;
    lsq_err err;
    json_t *l = net_zoo_layers("resnet20", 1, 28, 28, &err);
    lsq_net net;
    const int n = 4;
    cr_assert_eq(net_build(&net, l, &q, 10, n, &err), LSQ_OK, "%s", err.message);
    net_init_params(&net, 5);
    lsq_rng r;
    rng_seed(&r, 9, 0);
    /* batch norm away from its initial beta = 0, where every ReLU edge sits
     * on xhat = 0 */
    for (int v = 0; v < net.n_views; v++)
        if (strstr(net.views[v].name, "bn") && !net.views[v].in_state)
            for (size_t i = 0; i < net.views[v].count; i++)
                net.params[net.views[v].off + i] += 0.2f * (float)rng_normal(&r);
    net_quant_init_weights(&net, QINIT_PAPER);
    float *x = malloc(sizeof *x * n * 28 * 28);
    for (int i = 0; i < n * 28 * 28; i++) x[i] = (float)rng_uniform(&r);
    int32_t y[4] = {0, 3, 5, 9};
    float *logits[2], *grads[2], dl[40];
    for (int path = 0; path < 2; path++) {
        /* the float run goes first: it initialises the activation steps */
        conv2d_set_path(path ? CONV2D_PATH_AUTO : CONV2D_PATH_FLOAT);
        net_zero_grads(&net);
        const float *lg = net_forward(&net, x, n, 1);
        logits[path] = malloc(sizeof(float) * n * 10);
        memcpy(logits[path], lg, sizeof(float) * n * 10);
        xent_forward(net.probs, lg, y, n, 10);
        memset(dl, 0, sizeof dl);
        xent_backward(dl, net.probs, y, n, 10, 1.0f);
        net_backward(&net, dl, n);
        grads[path] = malloc(sizeof(float) * net.n_params);
        memcpy(grads[path], net.grads, sizeof(float) * net.n_params);
    }
    conv2d_set_path(CONV2D_PATH_AUTO);
    double el = 0, d2 = 0, g2 = 0;
    for (int i = 0; i < n * 10; i++) el = fmax(el, fabs(logits[0][i] - logits[1][i]));
    for (size_t i = 0; i < net.n_params; i++) {
        double e = (double)grads[0][i] - grads[1][i];
        d2 += e * e;
        g2 += (double)grads[0][i] * grads[0][i];
    }
    printf("integer vs float forward, W2A2 resnet20: logits max diff %.3g, gradient rel norm "
           "diff %.3g\n", el, sqrt(d2 / g2));
    cr_expect_leq(el, 1e-4, "logits");
    cr_expect_leq(sqrt(d2 / g2), 1e-4, "gradients");
    cr_expect(g2 > 0);
    for (int p = 0; p < 2; p++) free(logits[p]), free(grads[p]);
    free(x);
    net_free(&net);
    json_decref(l);
}

Test(net, a_teacher_forward_leaves_the_student_gradients_alone)
{
    /* distillation runs the teacher between the student's forward and its
     * backward: nothing the student's backward reads may change */
    spec_quant q, fq;
    memset(&q, 0, sizeof q);
    memset(&fq, 0, sizeof fq);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 2, q.first_last_bits = 8;
    lsq_err err;
    json_t *l = net_zoo_layers("resnet20", 1, 28, 28, &err);
    lsq_net st, te;
    const int n = 4;
    cr_assert_eq(net_build(&st, l, &q, 10, n, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(net_build(&te, l, &fq, 10, n, &err), LSQ_OK, "%s", err.message);
    net_init_params(&st, 5);
    net_init_params(&te, 6);
    net_quant_init_weights(&st, QINIT_PAPER);
    lsq_rng r;
    rng_seed(&r, 9, 0);
    float *x = malloc(sizeof *x * n * 28 * 28), *xt = malloc(sizeof *xt * n * 28 * 28);
    for (int i = 0; i < n * 28 * 28; i++) x[i] = (float)rng_uniform(&r);
    for (int i = 0; i < n * 28 * 28; i++) xt[i] = (float)rng_uniform(&r);
    int32_t y[4] = {0, 3, 5, 9};
    float *grads[2], dl[40];
    net_forward(&st, x, n, 1); /* initialises the activation steps */
    for (int run = 0; run < 2; run++) {
        net_zero_grads(&st);
        const float *lg = net_forward(&st, x, n, 1);
        xent_forward(st.probs, lg, y, n, 10);
        memset(dl, 0, sizeof dl);
        xent_backward(dl, st.probs, y, n, 10, 1.0f);
        /* the second run: the teacher's forward, in training mode too, on
         * other images */
        if (run) net_forward(&te, xt, n, 1);
        net_backward(&st, dl, n);
        grads[run] = malloc(sizeof(float) * st.n_params);
        memcpy(grads[run], st.grads, sizeof(float) * st.n_params);
    }
    cr_expect_eq(memcmp(grads[0], grads[1], sizeof(float) * st.n_params), 0,
                 "the student's gradients changed");
    for (int p = 0; p < 2; p++) free(grads[p]);
    free(x), free(xt);
    net_free(&st), net_free(&te);
    json_decref(l);
}

Test(net, signed_input_for_layers_after_batchnorm)
{
    /* conv -> bn -> conv: the second conv sees negative values */
    const char *text = "{\"layers\":[{\"type\":\"conv2d\",\"name\":\"a\",\"out\":4,\"kernel\":3,\"pad\":1},"
                       "{\"type\":\"batchnorm\",\"name\":\"bn\"},"
                       "{\"type\":\"conv2d\",\"name\":\"b\",\"out\":4,\"kernel\":3,\"pad\":1},"
                       "{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 4, q.act_bits = 4, q.first_last_bits = 8;
    lsq_net net;
    lsq_err err;
    cr_assert_eq(build_text(&net, text, &q, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(net.nodes[3].aq.r.is_signed, 1);
    cr_expect_eq(net.nodes[3].aq.r.qn, 8);
    net_free(&net);
    /* LSQ+ for such layers: an offset parameter appears */
    q.act_sign = ASIGN_OFFSET;
    cr_assert_eq(build_text(&net, text, &q, &err), LSQ_OK, "%s", err.message);
    cr_expect_geq(net_find_view(&net, "b.input.offset"), 0);
    cr_expect_lt(net_find_view(&net, "a.input.offset"), 0, "the image input stays unsigned");
    net_free(&net);
}

/* Loss of a float net on a fixed batch (training-mode BN), in double. */
static double net_loss(lsq_net *net, const float *x, const int32_t *y, int n)
{
    const float *logits = net_forward(net, x, n, 1);
    return xent_forward(net->probs, logits, y, n, net->classes);
}

Test(net, whole_network_gradient_check)
{
    /* a small residual network exercising every layer kind */
    const char *text =
        "{\"input\":[2,8,8],\"layers\":["
        "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":4,\"kernel\":3,\"pad\":1,\"bias\":false},"
        "{\"type\":\"batchnorm\",\"name\":\"b1\"},{\"type\":\"relu\",\"name\":\"r1\"},"
        "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":4,\"kernel\":3,\"pad\":1},"
        "{\"type\":\"add\",\"name\":\"add\",\"inputs\":[\"c2\",\"r1\"]},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool\",\"kernel\":2},"
        "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":6,\"kernel\":3,\"stride\":2,\"pad\":1},"
        "{\"type\":\"avgpool\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";
    json_t *j = json_loads(text, 0, NULL);
    lsq_net net;
    lsq_err err;
    int n = 3;
    cr_assert_eq(net_build(&net, j, NULL, 10, n, &err), LSQ_OK, "%s", err.message);
    net_init_params(&net, 7);
    lsq_rng r;
    rng_seed(&r, 3, 0);
    float x[3 * 2 * 8 * 8];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)rng_normal(&r);
    int32_t y[3] = {1, 4, 9};
    /* backward */
    net_zero_grads(&net);
    const float *logits = net_forward(&net, x, n, 1);
    xent_forward(net.probs, logits, y, n, 10);
    float dl[30] = {0};
    xent_backward(dl, net.probs, y, n, 10, 1.0f);
    net_backward(&net, dl, n);
    /* central differences on a sample of parameters; BN running stats are
     * state and do not affect training-mode outputs */
    double worst = 0;
    int checked = 0, kinks = 0;
    double l0 = net_loss(&net, x, y, n);
    for (size_t i = 0; i < net.n_params; i += 7) {
        float keep = net.params[i];
        float h = 1e-3f * fmaxf(1.0f, fabsf(keep));
        net.params[i] = keep + h;
        double lp = net_loss(&net, x, y, n);
        net.params[i] = keep - h;
        double lm = net_loss(&net, x, y, n);
        net.params[i] = keep;
        /* a ReLU or max-pool switch inside [-h, h] makes the two one-sided
         * slopes disagree: such points have no derivative to compare */
        double fwd = (lp - l0) / h, bwd = (l0 - lm) / h;
        if (fabs(fwd - bwd) > 0.05 * fmax(fabs(fwd), fabs(bwd)) + 2e-3) {
            kinks++;
            continue;
        }
        double num = (lp - lm) / (2.0 * h);
        double ana = net.grads[i];
        double rel = fabs(num - ana) / fmax(1e-2, fabs(num) + fabs(ana));
        if (rel > worst) worst = rel;
        if (rel > 2e-2) printf("  %zu: numeric %g analytic %g\n", i, num, ana);
        checked++;
    }
    printf("whole-network gradcheck: %d parameters, %d at kinks skipped, max rel diff %.3g\n",
           checked, kinks, worst);
    cr_expect_lt(kinks, checked / 5, "too many kinks skipped: %d of %d", kinks, checked);
    cr_expect_lt(worst, 2e-2, "max relative difference %g", worst);
    net_free(&net);
    json_decref(j);
}

Test(net, new_layer_errors_name_layer_and_key)
{
    struct { const char *text, *field, *needle; } cases[] = {
        {"{\"input\":[6,8,8],\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"groups\":4}]}",
         "model.layers[0].groups", "6 input and 4 output channels"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"groups\":0}]}", "model.layers[0].groups", "1..4096"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"dilation\":17}]}", "model.layers[0].dilation", "1..16"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"pad\":3}]}", "model.layers[0].pad", "0..2"},
        {"{\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"dilation\":2,\"pad\":5}]}", "model.layers[0].pad", "0..4"},
        {"{\"input\":[1,4,4],\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"dilation\":3}]}", "model.layers[0].kernel", "does not fit"},
        {"{\"layers\":[{\"type\":\"clip\",\"min\":6,\"max\":0}]}", "model.layers[0].max", "above min"},
        {"{\"layers\":[{\"type\":\"clip\",\"min\":\"0\"}]}", "model.layers[0].min", "number"},
        {"{\"layers\":[{\"type\":\"clip\",\"lo\":0}]}", "model.layers[0].lo", "unknown key"},
        {"{\"layers\":[{\"type\":\"leakyrelu\",\"alpha\":2}]}", "model.layers[0].alpha", "[0, 1]"},
        {"{\"layers\":[{\"type\":\"scale\"}]}", "model.layers[0].value", "required"},
        {"{\"layers\":[{\"type\":\"scale\",\"value\":true}]}", "model.layers[0].value", "number"},
        {"{\"layers\":[{\"type\":\"avgpool\",\"stride\":2}]}", "model.layers[0].stride", "kernel"},
        {"{\"layers\":[{\"type\":\"avgpool\",\"kernel\":3,\"count_include_pad\":1}]}", "model.layers[0].count_include_pad", "true or false"},
        {"{\"layers\":[{\"type\":\"avgpool\",\"kernel\":3,\"pad\":3}]}", "model.layers[0].pad", "0..2"},
        {"{\"layers\":[{\"type\":\"avgpool\",\"kernel\":3,\"dilation\":1}]}", "model.layers[0].dilation", "unknown key"},
        {"{\"layers\":[{\"type\":\"maxpool\",\"kernel\":2,\"pad\":2}]}", "model.layers[0].pad", "0..1"},
        {"{\"input\":[1,2,2],\"layers\":[{\"type\":\"maxpool\",\"kernel\":5,\"pad\":1}]}", "model.layers[0].kernel", "padded 2x2"},
        {"{\"layers\":[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"inputs\":[\"a\"]}]}", "model.layers[1].inputs", "2 to 16"},
        {"{\"layers\":[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"inputs\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}]}",
         "model.layers[1].inputs", "2 to 16"},
        {"{\"layers\":[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"inputs\":[\"a\",\"ghost\"]}]}", "model.layers[1].inputs", "ghost"},
        {"{\"input\":[4,8,8],\"layers\":[{\"type\":\"maxpool\",\"name\":\"p\",\"kernel\":2},{\"type\":\"concat\",\"inputs\":[\"input\",\"p\"]}]}",
         "model.layers[1].inputs", "'input' is 4x8x8, 'p' is 4x4x4"},
        {"{\"layers\":[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"input\":\"a\",\"inputs\":[\"a\",\"a\"]}]}", "model.layers[1].input", "unknown key"},
        {"{\"layers\":[{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"add\",\"inputs\":[\"a\",\"a\",\"a\"]}]}", "model.layers[1].inputs", "two layers"},
        {"{\"layers\":[{\"type\":\"dense\",\"out\":10}]}", "model.layers[0].type", "clip, leakyrelu, scale, concat"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lsq_net net;
        lsq_err err;
        lsq_err_clear(&err);
        lsq_status st = build_text(&net, cases[i].text, NULL, &err);
        cr_expect_eq(st, LSQ_ERR_INVALID, "case %zu: status %d", i, st);
        cr_expect_str_eq(err.field, cases[i].field, "case %zu: field '%s' (%s)", i, err.field, err.message);
        cr_expect(strstr(err.message, cases[i].needle), "case %zu: message '%s' lacks '%s'", i,
                  err.message, cases[i].needle);
        if (st == LSQ_OK) net_free(&net);
    }
}

static const net_node *node_named(const lsq_net *net, const char *name)
{
    for (int k = 0; k < net->n_nodes; k++)
        if (strcmp(net->nodes[k].name, name) == 0) return &net->nodes[k];
    cr_assert_fail("no node %s", name);
    return NULL;
}

/* Shapes, weight views and the activation quantizers' signs through the new
 * layers: clip with min >= 0 (ReLU6) keeps the next input unsigned, leaky
 * relu and scale by a negative value make it signed, concat is unsigned
 * when every input is. */
Test(net, new_layers_shapes_views_and_signs)
{
    const char *text =
        "{\"input\":[3,16,16],\"layers\":["
        "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1,\"bias\":false},"
        "{\"type\":\"clip\",\"name\":\"r6\",\"min\":0,\"max\":6},"
        "{\"type\":\"conv2d\",\"name\":\"dw\",\"out\":16,\"kernel\":3,\"stride\":2,\"pad\":1,\"groups\":8},"
        "{\"type\":\"leakyrelu\",\"name\":\"lr\"},"
        "{\"type\":\"conv2d\",\"name\":\"g2\",\"out\":8,\"kernel\":3,\"pad\":2,\"dilation\":2,\"groups\":2},"
        "{\"type\":\"maxpool\",\"name\":\"mp\",\"input\":\"r6\",\"kernel\":3,\"stride\":2,\"pad\":1},"
        "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"g2\",\"mp\"]},"
        "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":8,\"kernel\":1},"
        "{\"type\":\"relu\",\"name\":\"r3\"},"
        "{\"type\":\"concat\",\"name\":\"cat2\",\"inputs\":[\"r3\",\"mp\"]},"
        "{\"type\":\"conv2d\",\"name\":\"c4\",\"out\":8,\"kernel\":1},"
        "{\"type\":\"scale\",\"name\":\"neg\",\"value\":-0.5},"
        "{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":3,\"stride\":2,\"pad\":1},"
        "{\"type\":\"conv2d\",\"name\":\"c5\",\"out\":8,\"kernel\":1},"
        "{\"type\":\"avgpool\",\"name\":\"gap\"},"
        "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 4, q.act_bits = 4, q.first_last_bits = 8;
    q.granularity = GRAN_CHANNEL;
    lsq_net net;
    lsq_err err;
    cr_assert_eq(build_text(&net, text, &q, &err), LSQ_OK, "%s", err.message);
    const net_node *dw = node_named(&net, "dw"), *g2 = node_named(&net, "g2");
    cr_expect(dw->c == 16 && dw->h == 8 && dw->w == 8 && dw->groups == 8);
    cr_expect(g2->c == 8 && g2->h == 8 && g2->w == 8);
    const net_view *w = &net.views[dw->wv];
    cr_expect(w->ndim == 4 && w->dims[0] == 16 && w->dims[1] == 1 && w->dims[2] == 3, "dw weight (16, 1, 3, 3)");
    cr_expect_eq(net.views[g2->wv].dims[1], 8, "g2 weight (8, 16 / 2, 3, 3)");
    cr_expect_eq(net.views[dw->wq.step_view].count, 16, "a step per output channel");
    cr_expect_eq(dw->wq.per, 9);
    const net_node *cat = node_named(&net, "cat"), *mp = node_named(&net, "mp");
    cr_expect(mp->h == 8 && mp->w == 8 && mp->c == 8);
    cr_expect(cat->c == 16 && cat->h == 8 && cat->n_in == 2);
    cr_expect_eq(node_named(&net, "ap")->h, 4);
    cr_expect_eq(node_named(&net, "dw")->aq.r.is_signed, 0, "after clip(0, 6): unsigned");
    cr_expect_eq(node_named(&net, "g2")->aq.r.is_signed, 1, "after leakyrelu: signed");
    cr_expect_eq(node_named(&net, "c3")->aq.r.is_signed, 1, "concat with a signed input: signed");
    cr_expect_eq(node_named(&net, "c4")->aq.r.is_signed, 0, "concat of relu and maxpool(relu6)");
    cr_expect_eq(node_named(&net, "c5")->aq.r.is_signed, 1, "after a negative scale: signed");
    /* MACs count a grouped conv's own taps: dw has 16 * 9 per position */
    double macs = net_forward_macs(&net);
    cr_expect_gt(macs, 16.0 * 9 * 64);
    net_free(&net);
}

/* A float DAG of every new layer: a node read by three consumers (conv,
 * max pool, concat), concat splitting its gradient, the inverted residual
 * add; the whole gradient (parameters and input) against central
 * differences, and the same bits on one thread and on two. */
static const char *DAG_NET =
    "{\"input\":[2,8,8],\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":4,\"kernel\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"b1\"},{\"type\":\"clip\",\"name\":\"r1\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"dw\",\"out\":4,\"kernel\":3,\"pad\":1,\"groups\":4},"
    "{\"type\":\"batchnorm\",\"name\":\"b2\"},{\"type\":\"clip\",\"name\":\"r2\",\"min\":-1,\"max\":1.5},"
    "{\"type\":\"conv2d\",\"name\":\"pw\",\"out\":4,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"add\",\"name\":\"res\",\"inputs\":[\"pw\",\"r1\"]},"
    "{\"type\":\"maxpool\",\"name\":\"mp\",\"input\":\"r1\",\"kernel\":3,\"stride\":1,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"dl\",\"input\":\"r1\",\"out\":4,\"kernel\":3,\"pad\":2,\"dilation\":2,\"groups\":2},"
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"res\",\"mp\",\"r1\",\"dl\",\"input\"]},"
    "{\"type\":\"leakyrelu\",\"name\":\"lr\",\"alpha\":0.1},"
    "{\"type\":\"scale\",\"name\":\"sc\",\"value\":0.5},"
    "{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":6,\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"avgpool\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";

Test(net, dag_of_new_layers_gradient_check)
{
    json_t *j = json_loads(DAG_NET, 0, NULL);
    lsq_net net;
    lsq_err err;
    const int n = 3;
    cr_assert_eq(net_build(&net, j, NULL, 10, n, &err), LSQ_OK, "%s", err.message);
    net_init_params(&net, 7);
    lsq_rng r;
    rng_seed(&r, 4, 0);
    float x[3 * 2 * 8 * 8], dx[3 * 2 * 8 * 8];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)rng_normal(&r);
    int32_t y[3] = {2, 5, 7};
    net.dinput = dx;
    net_zero_grads(&net);
    const float *logits = net_forward(&net, x, n, 1);
    xent_forward(net.probs, logits, y, n, 10);
    float dl[30] = {0};
    xent_backward(dl, net.probs, y, n, 10, 1.0f);
    net_backward(&net, dl, n);
    net.dinput = NULL;
    double worst = 0;
    int checked = 0, kinks = 0;
    const size_t np = net.n_params, nx = sizeof x / sizeof *x;
    for (size_t i = 0; i < np + nx; i += 5) {
        float *p = i < np ? &net.params[i] : &x[i - np];
        const double ana = i < np ? net.grads[i] : dx[i - np];
        float keep = *p;
        float h = 1e-3f * fmaxf(1.0f, fabsf(keep));
        double l0 = net_loss(&net, x, y, n);
        *p = keep + h;
        double lp = net_loss(&net, x, y, n);
        *p = keep - h;
        double lm = net_loss(&net, x, y, n);
        *p = keep;
        double fwd = (lp - l0) / h, bwd = (l0 - lm) / h;
        if (fabs(fwd - bwd) > 0.05 * fmax(fabs(fwd), fabs(bwd)) + 2e-3) {
            kinks++;
            continue;
        }
        double num = (lp - lm) / (2.0 * h);
        double rel = fabs(num - ana) / fmax(1e-2, fabs(num) + fabs(ana));
        if (rel > worst) worst = rel;
        if (rel > 2e-2) printf("  %s %zu: numeric %g analytic %g\n", i < np ? "param" : "input",
                               i < np ? i : i - np, num, ana);
        checked++;
    }
    printf("DAG of new layers gradcheck: %d parameters and inputs, %d at kinks skipped, max rel "
           "diff %.3g\n", checked, kinks, worst);
    cr_expect_lt(kinks, checked / 5, "too many kinks skipped: %d of %d", kinks, checked);
    cr_expect_lt(worst, 2e-2, "max relative difference %g", worst);
    net_free(&net);
    json_decref(j);
}

Test(net, dag_of_new_layers_repeats_across_thread_counts)
{
    /* the engine's own conv kernels repeat across thread counts; oneDNN's
     * differ in the last bits between them (docs/training.md) */
    conv2d_set_backend(CONV2D_BACKEND_OWN);
    json_t *j = json_loads(DAG_NET, 0, NULL);
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 2, q.first_last_bits = 8;
    q.granularity = GRAN_CHANNEL;
    const int n = 8;
    float x[8 * 2 * 8 * 8];
    lsq_rng r;
    rng_seed(&r, 5, 0);
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)rng_normal(&r);
    int32_t y[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float *grads[2];
    size_t np = 0;
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        lsq_net net;
        lsq_err err;
        cr_assert_eq(net_build(&net, j, &q, 10, n, &err), LSQ_OK, "%s", err.message);
        net_init_params(&net, 3);
        net_quant_init_weights(&net, QINIT_PAPER);
        net_zero_grads(&net);
        const float *logits = net_forward(&net, x, n, 1);
        xent_forward(net.probs, logits, y, n, 10);
        float dl[80] = {0};
        xent_backward(dl, net.probs, y, n, 10, 1.0f);
        net_backward(&net, dl, n);
        np = net.n_params;
        grads[run] = malloc(sizeof(float) * np);
        memcpy(grads[run], net.grads, sizeof(float) * np);
        double g2 = 0;
        for (size_t i = 0; i < np; i++) g2 += (double)net.grads[i] * net.grads[i];
        cr_expect(isfinite(g2) && g2 > 0, "W2A2 DAG: gradient norm %g", g2);
        /* every quantizer of the quantized DAG gets a step gradient (a
         * channel may get none: 2-bit weight codes can zero a whole input
         * channel's path) */
        for (int v = 0; v < net.n_views; v++) {
            const net_view *vw = &net.views[v];
            if (vw->kind != PV_STEP) continue;
            int any = 0;
            for (size_t k = 0; k < vw->count; k++) any |= net.grads[vw->off + k] != 0.0f;
            cr_expect(any, "%s has no gradient", vw->name);
        }
        net_free(&net);
    }
    omp_set_num_threads(2);
    cr_expect_eq(memcmp(grads[0], grads[1], sizeof(float) * np), 0,
                 "one thread and two give different gradients");
    free(grads[0]), free(grads[1]);
    json_decref(j);
}

Test(net, checkpoint_round_trip_and_corruption)
{
    lsq_err err;
    json_t *l = net_zoo_layers("cnn-small", 1, 28, 28, &err);
    lsq_net a, b;
    cr_assert_eq(net_build(&a, l, NULL, 10, 2, &err), LSQ_OK);
    cr_assert_eq(net_build(&b, l, NULL, 10, 2, &err), LSQ_OK);
    net_init_params(&a, 1);
    net_init_params(&b, 2);
    char dir[] = "/tmp/lsq-ckpt-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/a.lsqc", dir);
    json_t *meta = json_pack("{s:s, s:i, s:b}", "phase", "train", "epoch", 3, "quantized", 0);
    float *mom = calloc(a.n_params, sizeof(float));
    for (size_t i = 0; i < a.n_params; i++) mom[i] = (float)i * 1e-6f;
    cr_assert_eq(ckpt_save(path, &a, mom, meta, &err), LSQ_OK, "%s", err.message);
    lsq_ckpt c;
    cr_assert_eq(ckpt_load(&c, path, &err), LSQ_OK, "%s", err.message);
    float *mom2 = calloc(b.n_params, sizeof(float));
    cr_assert_eq(ckpt_apply(&c, &b, mom2, 1, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(memcmp(a.params, b.params, a.n_params * sizeof(float)), 0);
    cr_expect_eq(memcmp(a.state, b.state, a.n_state * sizeof(float)), 0);
    cr_expect_eq(memcmp(mom, mom2, a.n_params * sizeof(float)), 0);
    cr_expect_eq(json_integer_value(json_object_get(c.header, "epoch")), 3);
    ckpt_free(&c);

    /* corruptions: every one an error, none a crash */
    char *buf;
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)size);
    cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    struct { long at; int mode; const char *needle; } bad[] = {
        {0, 0, "magic"}, {4, 0, "version"}, {size / 2, 0, "checksum"}, {size - 1, 0, "checksum"},
        {size / 3, 1, "truncated"}, {10, 1, "short"},
    };
    char bpath[256];
    snprintf(bpath, sizeof bpath, "%s/bad.lsqc", dir);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *g = fopen(bpath, "wb");
        if (bad[i].mode == 0) {
            char keep = buf[bad[i].at];
            buf[bad[i].at] ^= 0x5a;
            fwrite(buf, 1, (size_t)size, g);
            buf[bad[i].at] = keep;
        } else {
            fwrite(buf, 1, (size_t)bad[i].at, g);
        }
        fclose(g);
        lsq_status st = ckpt_load(&c, bpath, &err);
        cr_expect_eq(st, LSQ_ERR_FORMAT, "case %zu: status %d (%s)", i, st, err.message);
        /* truncation is caught by the checksum first when the tail is gone */
        if (bad[i].mode == 0)
            cr_expect(strstr(err.message, bad[i].needle), "case %zu: '%s'", i, err.message);
    }
    cr_expect_eq(ckpt_load(&c, "/nonexistent/x.lsqc", &err), LSQ_ERR_IO);
    free(buf);
    free(mom);
    free(mom2);
    unlink(bpath);
    unlink(path);
    rmdir(dir);
    json_decref(meta);
    net_free(&a);
    net_free(&b);
    json_decref(l);
}

static lsq_status plan_text(const char *text, int batch, net_cost *cost, json_t **shapes,
                            lsq_err *err)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    cr_assert(j, "test JSON does not parse: %s", je.text);
    lsq_net net;
    lsq_status st = net_plan(&net, j, NULL, 10, batch, cost, err);
    if (st == LSQ_OK) {
        cr_expect_null(net.params, "a plan allocates no parameters");
        if (shapes) *shapes = net_shapes_json(&net, cost);
        net_free(&net);
    }
    json_decref(j);
    return st;
}

Test(net, plan_counts_what_build_allocates_and_refuses_absurd_sizes)
{
    lsq_err err;
    net_cost c;
    json_t *shapes = NULL;
    /* flatten + linear(10), batch 2: params, grads and momentum 3 x 7850
     * floats (grads with NET_GRAD_TAIL more: a step's tallies), probs 2x10, the linear's out and dout 2x10 each, an empty
     * state and scratch (one float each), qsums 2x2 doubles */
    cr_assert_eq(plan_text("{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]}",
                           2, &c, &shapes, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(c.params, 7850);
    cr_expect_eq(c.bytes, 3 * 7850 * 4 + NET_GRAD_TAIL * 4 + 4 + 80 + 160 + 4 + 32, "bytes %zu",
                 c.bytes);
    json_t *l1 = json_array_get(json_object_get(shapes, "layers"), 1);
    cr_expect_eq(json_integer_value(json_object_get(l1, "params")), 7850);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(l1, "shape"), 0)), 10);
    cr_expect_eq(json_integer_value(json_object_get(l1, "bytes")), 3 * 7850 * 4 + 160);
    json_decref(shapes);

    /* the plan's parameter count is the built net's, for every zoo model */
    for (int a = 0; a < NET_ZOO_COUNT; a++) {
        json_t *l = net_zoo_layers(NET_ZOO_NAMES[a], 1, 28, 28, &err);
        cr_assert(l);
        lsq_net built, planned;
        cr_assert_eq(net_build(&built, l, NULL, 10, 4, &err), LSQ_OK, "%s", err.message);
        cr_assert_eq(net_plan(&planned, l, NULL, 10, 4, &c, &err), LSQ_OK, "%s", err.message);
        cr_expect_eq(c.params, built.n_params, "%s", NET_ZOO_NAMES[a]);
        cr_expect_eq(planned.n_views, built.n_views, "%s", NET_ZOO_NAMES[a]);
        net_free(&built);
        net_free(&planned);
        json_decref(l);
    }

    /* absurd sizes: refused with the limit in the message, nothing allocated
     * (4.3e9 weights would be 17 GB: the test would not finish if tried) */
    struct { const char *layers; int batch; const char *field, *says; } bad[] = {
        {"[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":65536},"
         "{\"type\":\"linear\",\"out\":65536},{\"type\":\"linear\",\"out\":10}]", 1,
         "model.layers[2].out", "134217728"},
        {"[{\"type\":\"conv2d\",\"out\":4096,\"kernel\":3,\"pad\":1},{\"type\":\"flatten\"},"
         "{\"type\":\"linear\",\"out\":10}]", 4096, "train.batch_size", "64.0 GiB"},
        {"[{\"type\":\"conv2d\",\"out\":4096,\"kernel\":15,\"pad\":14,\"dilation\":2},"
         "{\"type\":\"conv2d\",\"out\":4096,\"kernel\":15,\"pad\":14,\"dilation\":2},"
         "{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]", 1, "model.layers[1].out",
         "134217728"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[1024];
        snprintf(text, sizeof text, "{\"layers\":%s}", bad[i].layers);
        cr_expect_eq(plan_text(text, bad[i].batch, &c, NULL, &err), LSQ_ERR_INVALID, "case %zu", i);
        cr_expect_str_eq(err.field, bad[i].field, "case %zu: %s", i, err.message);
        cr_expect(strstr(err.message, bad[i].says), "case %zu: %s", i, err.message);
    }
}

/* The check of lsq check and lsqd plans at the job's largest batch and
 * blames the key that batch comes from. */
Test(net, check_spec_plan_names_the_batch_key)
{
    const char *layers = "{\"layers\":[{\"type\":\"conv2d\",\"out\":4096,\"kernel\":3,\"pad\":1},"
                         "{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]}";
    struct { const char *rest, *field; } cases[] = {
        {"\"train\":{\"batch_size\":4096}", "train.batch_size"},
        {"\"train\":{\"batch_size\":64},\"quant\":{},\"pretrain\":{\"batch_size\":4096}",
         "pretrain.batch_size"},
        {"\"train\":{\"batch_size\":64},\"quant\":{\"method\":\"ptq\",\"calibration_images\":4096}",
         "quant.calibration_images"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[1024];
        snprintf(text, sizeof text, "{\"model\":%s,%s}", layers, cases[i].rest);
        lsq_spec s;
        lsq_err err;
        cr_assert_eq(spec_parse(&s, text, strlen(text), &err), LSQ_OK, "%s", err.message);
        json_t *shapes = (json_t *)1;
        cr_expect_eq(net_check_spec_plan(&s, &shapes, &err), LSQ_ERR_INVALID, "case %zu", i);
        cr_expect_null(shapes);
        cr_expect_str_eq(err.field, cases[i].field, "case %zu: %s", i, err.message);
        cr_expect(!strncmp(err.message, cases[i].field, strlen(cases[i].field)), "%s", err.message);
        cr_expect(strstr(err.message, "at batch size 4096"), "%s", err.message);
        spec_free(&s);
    }
    /* within the limits: the plan at the largest batch */
    const char *ok = "{\"model\":{\"arch\":\"mlp\"},\"train\":{\"batch_size\":32},\"quant\":{},"
                     "\"pretrain\":{\"batch_size\":200}}";
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(spec_parse(&s, ok, strlen(ok), &err), LSQ_OK, "%s", err.message);
    json_t *shapes = NULL;
    cr_assert_eq(net_check_spec_plan(&s, &shapes, &err), LSQ_OK, "%s", err.message);
    /* report_ptq scores PTQ on 256 calibration images first: the largest */
    cr_expect_eq(json_integer_value(json_object_get(shapes, "batch_size")), 256);
    cr_expect_eq(json_integer_value(json_object_get(shapes, "params")),
                 784 * 256 + 256 + 256 * 256 + 256 + 2560 + 10 + 3 * 2 /* steps */);
    json_decref(shapes);
    spec_free(&s);
}

/* Trains two copies of a net three SGD steps on the same batches: one built
 * with its activation and gradient buffers shared by lifetime (the default),
 * one with a buffer each. Logits, gradients, parameters and state must be
 * the same bit for bit after every step, the last on a smaller batch than
 * the nets were built for; and the shared net must take less memory. */
static void expect_sharing_exact(const char *what, const json_t *layers, const spec_quant *q,
                                 int c, int h, int w, int classes, int batch)
{
    lsq_net nets[2];
    lsq_sgd opt[2];
    lsq_err err;
    for (int k = 0; k < 2; k++) {
        net_set_buffer_sharing(k); /* nets[0]: a buffer each; nets[1]: shared */
        cr_assert_eq(net_build(&nets[k], layers, q, classes, batch, &err), LSQ_OK, "%s: %s",
                     what, err.message);
        net_init_params(&nets[k], 11);
        if (q) net_quant_init_weights(&nets[k], QINIT_PAPER);
        cr_assert_eq(sgd_init(&opt[k], &nets[k], &err), LSQ_OK);
    }
    net_set_buffer_sharing(1);
    lsq_net *a = &nets[0], *b = &nets[1];
    cr_assert_null(a->arena, "%s: the reference shares buffers", what);
    cr_assert_not_null(b->arena, "%s: nothing shared", what);
    size_t own = 0;
    for (int i = 1; i < b->n_nodes; i++) {
        const net_node *nd = &b->nodes[i];
        const size_t len = (size_t)batch * nd->c * nd->h * nd->w;
        own += (size_t)(nd->arena_out >= 0) * len + (size_t)(nd->arena_dout >= 0) * len;
    }
    printf("%s: %zu activation and gradient floats in buffers of their own, %zu in the "
           "shared arena\n", what, own, b->n_arena);
    cr_expect_lt(b->n_arena, own, "%s: the arena saves nothing", what);

    const size_t xn = (size_t)batch * c * h * w;
    float *x = malloc(xn * sizeof *x), *dl = malloc((size_t)batch * classes * sizeof *dl);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    cr_assert(x && dl && y);
    lsq_rng r;
    rng_seed(&r, 21, 0);
    for (int step = 0; step < 3; step++) {
        const int n = step < 2 ? batch : batch - 2;
        /* 8-bit pixels, as the input quantizer's step of 1/255 expects */
        for (size_t i = 0; i < (size_t)n * c * h * w; i++)
            x[i] = (float)(rng_next(&r) % 256) / 255.0f;
        for (int i = 0; i < n; i++) y[i] = (int32_t)(rng_next(&r) % (uint64_t)classes);
        float *logits[2];
        for (int k = 0; k < 2; k++) {
            lsq_net *net = &nets[k];
            const float *lg = net_forward(net, x, n, 1);
            logits[k] = malloc((size_t)n * classes * sizeof(float));
            memcpy(logits[k], lg, (size_t)n * classes * sizeof(float));
            xent_forward(net->probs, lg, y, n, classes);
            memset(dl, 0, (size_t)n * classes * sizeof *dl);
            xent_backward(dl, net->probs, y, n, classes, 1.0f);
            net_zero_grads(net);
            net_backward(net, dl, n);
        }
        cr_expect_eq(memcmp(logits[0], logits[1], (size_t)n * classes * sizeof(float)), 0,
                     "%s: step %d: the logits differ", what, step + 1);
        size_t diff = 0;
        for (size_t i = 0; i < a->n_params; i++) diff += a->grads[i] != b->grads[i];
        double g2 = 0;
        for (size_t i = 0; i < a->n_params; i++) g2 += (double)a->grads[i] * a->grads[i];
        cr_expect_eq(diff, 0, "%s: step %d: %zu of %zu gradients differ", what, step + 1, diff,
                     a->n_params);
        cr_expect(isfinite(g2) && g2 > 0, "%s: step %d: gradient norm %g", what, step + 1, g2);
        for (int k = 0; k < 2; k++) {
            sgd_step(&opt[k], &nets[k], 0.05f, 0.9f, 1e-4f, 0);
            free(logits[k]);
        }
        cr_expect_eq(memcmp(a->params, b->params, a->n_params * sizeof(float)), 0,
                     "%s: step %d: the parameters differ", what, step + 1);
        cr_expect_eq(memcmp(a->state, b->state, a->n_state * sizeof(float)), 0,
                     "%s: step %d: the batch-norm statistics differ", what, step + 1);
    }
    free(x), free(dl), free(y);
    for (int k = 0; k < 2; k++) {
        sgd_free(&opt[k]);
        net_free(&nets[k]);
    }
}

static spec_quant w2a2(void)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 2, q.act_bits = 2, q.first_last_bits = 8;
    return q;
}

Test(net, shared_buffers_train_bit_for_bit_zoo, .timeout = 120)
{
    lsq_err err;
    json_t *l = net_zoo_layers("resnet20", 1, 12, 12, &err);
    cr_assert(l, "%s", err.message);
    spec_quant q = w2a2();
    expect_sharing_exact("resnet20 W2A2", l, &q, 1, 12, 12, 10, 6);
    expect_sharing_exact("resnet20 FP", l, NULL, 1, 12, 12, 10, 6);
    /* im2col + SGEMM convs: every batch norm makes its input gradient
     * itself instead of the conv before it */
    conv2d_set_path(CONV2D_PATH_GEMM);
    expect_sharing_exact("resnet20 W2A2 on im2col + SGEMM", l, &q, 1, 12, 12, 10, 6);
    conv2d_set_path(CONV2D_PATH_AUTO);
    json_decref(l);
    /* max pooling and a flatten before the linear layers */
    l = net_zoo_layers("cnn-small", 1, 12, 12, &err);
    cr_assert(l, "%s", err.message);
    expect_sharing_exact("cnn-small W2A2", l, &q, 1, 12, 12, 10, 6);
    json_decref(l);
}

Test(net, shared_buffers_train_bit_for_bit_imported_dags, .timeout = 120)
{
    /* a concat of two branches (1x1 and dilated 3x3 convs) with leaky
     * ReLU, scale, padded pooling; and inverted residuals with depthwise
     * convs and ReLU6 (clip), both as PyTorch exports them */
    const char *files[] = {"tests/fixtures/onnx/concat_op13_eval.onnx",
                           "tests/fixtures/onnx/mobilenet_op13_eval.onnx"};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        onnx_import im;
        lsq_err err;
        cr_assert_eq(onnx_import_file(&im, files[f], ONNX_IMPORT_MAX_BYTES, &err), LSQ_OK,
                     "%s: %s", files[f], err.message);
        spec_quant q = w2a2();
        expect_sharing_exact(files[f], im.layers, &q, im.c, im.h, im.w, im.classes, 5);
        onnx_import_free(&im);
    }
    /* the hand-written DAG: a node read by three consumers, a concat of
     * five (the image among them), grouped and dilated convs */
    json_t *j = json_loads(DAG_NET, 0, NULL);
    cr_assert(j);
    spec_quant q = w2a2();
    q.granularity = GRAN_CHANNEL;
    expect_sharing_exact("DAG_NET W2A2", j, &q, 2, 8, 8, 10, 5);
    json_decref(j);
}
