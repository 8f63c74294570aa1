/* The ONNX export of every layer kind a layer list has: small networks, one
 * per kind (grouped, depthwise and dilated conv, clip, leaky ReLU, scale,
 * padded max pooling, windowed average pooling, an N-input concat in a
 * DAG), at W4A4 and W2A2 with per-tensor and per-channel weights and in
 * full precision, their activation steps initialised from a batch as a
 * training run does, exported and run by onnxruntime with its graph
 * optimizations off, against net_forward in eval mode; the PyTorch-exported
 * MobileNetV2-style and Concat fixtures imported, quantized, exported and
 * run the same way; the graph's form (attributes, Clip's missing bounds);
 * and a normalised input: the exported graph redoes the loader's
 * normalisation bit for bit. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit/ort.h"
#include "data/data.h"
#include "deploy/onnx_export.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "onnx/onnx.pb-c.h"

#define NB 16 /* images per batch */

/* The quantization of one run: bits 0 is full precision. */
typedef struct {
    int bits, per_channel;
} variant;

static const variant VARIANTS[] = {{4, 0}, {4, 1}, {2, 0}, {2, 1}, {0, 0}};
#define N_VARIANTS (int)(sizeof VARIANTS / sizeof *VARIANTS)

static void variant_name(char *buf, size_t sz, const char *net, const variant *v)
{
    if (v->bits)
        snprintf(buf, sz, "%s W%dA%d per-%s", net, v->bits, v->bits,
                 v->per_channel ? "channel" : "tensor");
    else
        snprintf(buf, sz, "%s full precision", net);
}

static spec_quant quant_of(const variant *v)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = v->bits > 0;
    q.weight_bits = q.act_bits = v->bits;
    q.first_last_bits = 8;
    q.granularity = v->per_channel ? GRAN_CHANNEL : GRAN_TENSOR;
    return q;
}

/* n images of pixels / 255 (c, h, w), seeded. */
static float *pixels(int n, int c, int h, int w, unsigned seed)
{
    const size_t count = (size_t)n * c * h * w;
    float *x = malloc(count * sizeof *x);
    cr_assert_not_null(x);
    for (size_t i = 0; i < count; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 16) & 0xff) / 255.0f;
    }
    return x;
}

/* Batch-norm affine values away from 1 and 0, so that they matter. */
static void perturb_bn(lsq_net *net)
{
    unsigned s = 7;
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind != PV_BN_GAMMA && vw->kind != PV_BN_BETA) continue;
        for (size_t k = 0; k < vw->count; k++) {
            s = s * 1103515245u + 12345u;
            const float r = (float)((s >> 8) & 0xffff) / 65536.0f;
            net->params[vw->off + k] = vw->kind == PV_BN_GAMMA ? 0.5f + r : r - 0.5f;
        }
    }
}

/* As a training run starts: weight steps from the weights, then one
 * training forward on x, which initialises every activation step from the
 * batch (and moves the batch norms' running statistics). */
static void init_steps(lsq_net *net, const float *x, int n)
{
    if (net->quantized) net_quant_init_weights(net, QINIT_PAPER);
    net_forward(net, x, n, 1);
}

/* Exports net, runs it in onnxruntime on x and compares the logits with
 * net_forward in eval mode. onnxruntime runs the graph as written, with
 * its optimizations off; LSQ_ORT_OPT picks another level (as in
 * test_deploy.c). */
static ort_diff check_net(lsq_net *net, const float *x, int n, const char *what)
{
    const char *opt = getenv("LSQ_ORT_OPT");
    float *y = ort_run_net(net, x, n, opt ? opt : "disabled");
    const float *ref = net_forward(net, x, n, 0);
    ort_diff d = ort_expect_close(y, ref, n, net->classes, what);
    free(y);
    return d;
}

/* Every variant of the layer list text (an input of 3x12x12, 10 classes). */
static void check_layers(const char *name, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "%s: the layer list is not JSON", name);
    float *x = pixels(NB, 3, 12, 12, 11);
    double worst = 0;
    for (int k = 0; k < N_VARIANTS; k++) {
        const variant *v = &VARIANTS[k];
        char what[128];
        variant_name(what, sizeof what, name, v);
        spec_quant q = quant_of(v);
        lsq_net net;
        lsq_err err;
        cr_assert_eq(net_build(&net, j, v->bits ? &q : NULL, 10, NB, &err), LSQ_OK, "%s: [%s] %s",
                     what, err.field, err.message);
        net_init_params(&net, 3 + (uint64_t)k);
        perturb_bn(&net);
        init_steps(&net, x, NB);
        ort_diff d = check_net(&net, x, NB, what);
        if (d.max_abs > worst) worst = d.max_abs;
        net_free(&net);
    }
    cr_log_info("%s: largest |dlogit| over %d variants: %.3g", name, N_VARIANTS, worst);
    free(x);
    json_decref(j);
}

#define CONV(name, out, k, extra) \
    "{\"type\":\"conv2d\",\"name\":\"" name "\",\"out\":" #out ",\"kernel\":" #k extra "}"
#define HEAD "{\"type\":\"avgpool\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}"

Test(onnx_layers, grouped_depthwise_dilated_conv, .timeout = 240)
{
    check_layers("grouped conv",
                 "{\"input\":[3,12,12],\"layers\":["
                 CONV("stem", 8, 3, ",\"pad\":1,\"bias\":false") ","
                 "{\"type\":\"batchnorm\",\"name\":\"bn0\"},{\"type\":\"relu\"},"
                 CONV("dw", 8, 3, ",\"pad\":1,\"groups\":8,\"bias\":false") ","
                 "{\"type\":\"batchnorm\",\"name\":\"bn1\"},{\"type\":\"relu\"},"
                 CONV("gd", 12, 3, ",\"pad\":2,\"dilation\":2,\"groups\":4,\"stride\":2") ","
                 "{\"type\":\"relu\"},"
                 CONV("dil", 8, 3, ",\"pad\":1,\"dilation\":2") ",{\"type\":\"relu\"}," HEAD "]}");
}

Test(onnx_layers, clip, .timeout = 240)
{
    /* ReLU6 (the next input unsigned), symmetric (signed), and each bound
     * alone */
    check_layers("clip",
                 "{\"input\":[3,12,12],\"layers\":["
                 CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"batchnorm\",\"name\":\"bn0\"},"
                 "{\"type\":\"clip\",\"name\":\"r6\",\"min\":0,\"max\":6},"
                 CONV("c1", 8, 3, ",\"pad\":1") ",{\"type\":\"batchnorm\",\"name\":\"bn1\"},"
                 "{\"type\":\"clip\",\"name\":\"sym\",\"min\":-1,\"max\":1},"
                 CONV("c2", 8, 3, ",\"pad\":1") ",{\"type\":\"clip\",\"name\":\"hi\",\"max\":0.25},"
                 CONV("c3", 8, 1, "") ",{\"type\":\"clip\",\"name\":\"lo\",\"min\":-0.125}," HEAD
                 "]}");
}

Test(onnx_layers, leakyrelu, .timeout = 240)
{
    check_layers("leakyrelu",
                 "{\"input\":[3,12,12],\"layers\":["
                 CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"batchnorm\",\"name\":\"bn0\"},"
                 "{\"type\":\"leakyrelu\",\"alpha\":0.1},"
                 CONV("c1", 8, 3, ",\"pad\":1") ",{\"type\":\"leakyrelu\"},"
                 CONV("c2", 8, 3, ",\"pad\":1,\"stride\":2") ",{\"type\":\"batchnorm\"},"
                 "{\"type\":\"leakyrelu\",\"alpha\":0}," HEAD "]}");
}

Test(onnx_layers, scale, .timeout = 240)
{
    check_layers("scale",
                 "{\"input\":[3,12,12],\"layers\":["
                 CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"relu\"},"
                 "{\"type\":\"scale\",\"value\":0.5}," CONV("c1", 8, 3, ",\"pad\":1") ","
                 "{\"type\":\"scale\",\"value\":-1.5}," CONV("c2", 8, 3, ",\"pad\":1") ","
                 "{\"type\":\"relu\"},{\"type\":\"scale\",\"value\":3}," HEAD "]}");
}

Test(onnx_layers, padded_maxpool, .timeout = 240)
{
    /* one on a signed input (a batch norm's), where padding with 0 would
     * change the maximum */
    check_layers("padded maxpool",
                 "{\"input\":[3,12,12],\"layers\":["
                 CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"relu\"},"
                 "{\"type\":\"maxpool\",\"kernel\":3,\"stride\":2,\"pad\":1},"
                 CONV("c1", 8, 3, ",\"pad\":1") ",{\"type\":\"batchnorm\",\"name\":\"bn1\"},"
                 "{\"type\":\"maxpool\",\"kernel\":2,\"stride\":1,\"pad\":1},"
                 CONV("c2", 8, 3, "") ",{\"type\":\"relu\"},"
                 "{\"type\":\"maxpool\",\"kernel\":3,\"stride\":1,\"pad\":2}," HEAD "]}");
}

Test(onnx_layers, windowed_avgpool, .timeout = 240)
{
    check_layers("windowed avgpool",
                 "{\"input\":[3,12,12],\"layers\":["
                 CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"relu\"},"
                 "{\"type\":\"avgpool\",\"kernel\":3,\"stride\":2,\"pad\":1,"
                 "\"count_include_pad\":false},"
                 CONV("c1", 8, 3, ",\"pad\":1") ",{\"type\":\"batchnorm\",\"name\":\"bn1\"},"
                 "{\"type\":\"avgpool\",\"kernel\":3,\"stride\":1,\"pad\":1,"
                 "\"count_include_pad\":true},{\"type\":\"relu\"},"
                 "{\"type\":\"avgpool\",\"kernel\":2}," CONV("c2", 8, 1, "") ",{\"type\":\"relu\"},"
                 HEAD "]}");
}

/* r0 read by five layers; a four-input concat; an add back to r0; then a
 * concat of a 1x1 map and a flatten's output (ONNX ranks 4 and 2) and a
 * 1x1 conv on the result. */
#define DAG_LAYERS                                                                          \
    "{\"input\":[3,12,12],\"layers\":["                                                     \
    CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"relu\",\"name\":\"r0\"},"                \
    CONV("a", 4, 1, "") ",{\"type\":\"relu\",\"name\":\"ra\"},"                             \
    CONV("b", 4, 3, ",\"pad\":1,\"input\":\"r0\"") ",{\"type\":\"relu\",\"name\":\"rb\"},"  \
    "{\"type\":\"maxpool\",\"name\":\"mp\",\"input\":\"r0\",\"kernel\":3,\"stride\":1,"     \
    "\"pad\":1},"                                                                           \
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"ra\",\"rb\",\"mp\",\"r0\"]},"      \
    CONV("mix", 8, 1, "") ",{\"type\":\"batchnorm\",\"name\":\"bnm\"},"                     \
    "{\"type\":\"relu\",\"name\":\"rm\"},"                                                  \
    "{\"type\":\"add\",\"name\":\"res\",\"inputs\":[\"rm\",\"r0\"]},"                       \
    "{\"type\":\"avgpool\",\"name\":\"g\"},{\"type\":\"flatten\",\"name\":\"f\"},"          \
    "{\"type\":\"concat\",\"name\":\"cat2\",\"inputs\":[\"g\",\"f\"]},"                     \
    CONV("head", 10, 1, "") "]}"

Test(onnx_layers, concat_and_a_dag, .timeout = 240) { check_layers("concat dag", DAG_LAYERS); }

/* ---- the graph's form ---- */

static const Onnx__NodeProto *node_named(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_node; i++)
        if (strcmp(g->node[i]->name, name) == 0) return g->node[i];
    cr_assert_fail("no node %s", name);
    return NULL;
}

/* The attribute name of n: its int, or the first of its ints; -1 when n
 * has none. */
static long attr_of(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (strcmp(n->attribute[i]->name, name) == 0)
            return n->attribute[i]->n_ints ? (long)n->attribute[i]->ints[0]
                                           : (long)n->attribute[i]->i;
    return -1;
}

static Onnx__ModelProto *export_model(const char *text, const variant *v)
{
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j);
    spec_quant q = quant_of(v);
    lsq_net net;
    lsq_err err;
    cr_assert_eq(net_build(&net, j, v->bits ? &q : NULL, 10, 2, &err), LSQ_OK, "%s", err.message);
    json_decref(j);
    net_init_params(&net, 1);
    if (v->bits) net_quant_init_weights(&net, QINIT_PAPER);
    uint8_t *bytes;
    size_t len;
    cr_assert_eq(onnx_export_bytes(&net, &bytes, &len, &err), LSQ_OK, "%s", err.message);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, bytes);
    cr_assert_not_null(m);
    free(bytes);
    net_free(&net);
    return m;
}

Test(onnx_layers, graph_form)
{
    const variant w4c = {4, 1};
    Onnx__ModelProto *m = export_model(
        "{\"input\":[3,12,12],\"layers\":["
        CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"clip\",\"name\":\"hi\",\"max\":6},"
        CONV("dw", 8, 3, ",\"pad\":2,\"dilation\":2,\"groups\":8") ","
        "{\"type\":\"clip\",\"name\":\"lo\",\"min\":0},{\"type\":\"leakyrelu\",\"name\":\"lr\","
        "\"alpha\":0.25},{\"type\":\"scale\",\"name\":\"s\",\"value\":-2},"
        "{\"type\":\"maxpool\",\"name\":\"mp\",\"kernel\":3,\"stride\":2,\"pad\":1},"
        "{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":3,\"stride\":1,\"pad\":1,"
        "\"count_include_pad\":true},"
        "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"ap\",\"mp\",\"ap\"]}," HEAD "]}",
        &w4c);
    const Onnx__GraphProto *g = m->graph;
    /* the depthwise dilated conv: group, dilations, per-channel weights on
     * axis 0 with one step per output channel; its bias an Add after it */
    const Onnx__NodeProto *dw = node_named(g, "dw.conv");
    cr_expect_str_eq(dw->op_type, "Conv");
    cr_expect_eq(dw->n_input, 2);
    cr_expect_eq(attr_of(dw, "group"), 8);
    cr_expect_eq(attr_of(dw, "dilations"), 2);
    cr_expect_eq(attr_of(dw, "pads"), 2);
    cr_expect_eq(attr_of(node_named(g, "stem.conv"), "group"), -1, "a dense conv has no group");
    cr_expect_eq(attr_of(node_named(g, "dw.weight.dq"), "axis"), 0);
    const Onnx__NodeProto *dwb = node_named(g, "dw");
    cr_expect_str_eq(dwb->op_type, "Add");
    cr_assert_eq(dwb->n_input, 2);
    cr_expect(strcmp(dwb->input[0], "dw.conv") == 0 && strcmp(dwb->input[1], "dw.bias") == 0);
    for (size_t i = 0; i < g->n_initializer; i++)
        if (strcmp(g->initializer[i]->name, "dw.bias") == 0)
            cr_expect(g->initializer[i]->n_dims == 3 && g->initializer[i]->dims[0] == 8 &&
                      g->initializer[i]->dims[1] == 1 && g->initializer[i]->dims[2] == 1);
    /* Clip: a missing bound is an empty input, none after the last given */
    const Onnx__NodeProto *hi = node_named(g, "hi"), *lo = node_named(g, "lo");
    cr_expect_str_eq(hi->op_type, "Clip");
    cr_assert_eq(hi->n_input, 3);
    cr_expect_str_eq(hi->input[1], "");
    cr_expect_str_eq(hi->input[2], "hi.max");
    cr_assert_eq(lo->n_input, 2);
    cr_expect_str_eq(lo->input[1], "lo.min");
    const Onnx__NodeProto *lr = node_named(g, "lr");
    cr_expect_str_eq(lr->op_type, "LeakyRelu");
    cr_assert_eq(lr->n_attribute, 1);
    cr_expect_eq(lr->attribute[0]->f, 0.25f);
    const Onnx__NodeProto *s = node_named(g, "s");
    cr_expect_str_eq(s->op_type, "Mul");
    cr_expect_str_eq(s->input[1], "s.value");
    const Onnx__NodeProto *mp = node_named(g, "mp"), *ap = node_named(g, "ap");
    cr_expect_str_eq(mp->op_type, "MaxPool");
    cr_expect_eq(attr_of(mp, "pads"), 1);
    cr_expect_str_eq(ap->op_type, "AveragePool");
    cr_expect_eq(attr_of(ap, "count_include_pad"), 1);
    cr_expect_eq(attr_of(ap, "kernel_shape"), 3);
    const Onnx__NodeProto *cat = node_named(g, "cat");
    cr_expect_str_eq(cat->op_type, "Concat");
    cr_expect_eq(attr_of(cat, "axis"), 1);
    cr_assert_eq(cat->n_input, 3);
    cr_expect(strcmp(cat->input[0], "ap") == 0 && strcmp(cat->input[1], "mp") == 0 &&
              strcmp(cat->input[2], "ap") == 0);
    onnx__model_proto__free_unpacked(m, NULL);
}

/* ---- imported PyTorch models, quantized and exported again ---- */

static void check_round_trip(const char *fixture)
{
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/onnx/%s.onnx", fixture);
    onnx_import im;
    lsq_err err;
    cr_assert_eq(onnx_import_file(&im, path, ONNX_IMPORT_MAX_BYTES, &err), LSQ_OK, "%s: %s", path,
                 err.message);
    float *x = pixels(NB, im.c, im.h, im.w, 5);
    double worst = 0;
    for (int k = 0; k < N_VARIANTS; k++) {
        const variant *v = &VARIANTS[k];
        char what[128];
        variant_name(what, sizeof what, fixture, v);
        spec_quant q = quant_of(v);
        lsq_net net;
        cr_assert_eq(net_build(&net, im.layers, v->bits ? &q : NULL, im.classes, NB, &err), LSQ_OK,
                     "%s: [%s] %s", what, err.field, err.message);
        cr_assert_eq(onnx_import_set_params(&im, &net, &err), LSQ_OK, "%s: %s", what, err.message);
        init_steps(&net, x, NB);
        ort_diff d = check_net(&net, x, NB, what);
        if (d.max_abs > worst) worst = d.max_abs;
        net_free(&net);
    }
    cr_log_info("%s round trip: largest |dlogit| over %d variants: %.3g", fixture, N_VARIANTS,
                worst);
    free(x);
    onnx_import_free(&im);
}

Test(onnx_layers, mobilenet_import_quantize_export, .timeout = 240)
{
    check_round_trip("mobilenet_op13_eval");
}

Test(onnx_layers, concat_import_quantize_export, .timeout = 240)
{
    check_round_trip("concat_op13_eval");
}

/* ---- a normalised input ---- */

#define NORM_C 3
#define NORM_HW 4
#define NORM_N 16 /* NORM_N * NORM_HW^2 = 256: every pixel value on every channel */
#define NORM_K (NORM_C * NORM_HW * NORM_HW)

/* The dataset of NORM_N images whose pixels on each channel are 0..255. */
static void all_pixels(lsq_dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    ds->n = NORM_N, ds->c = NORM_C, ds->h = ds->w = NORM_HW, ds->classes = NORM_K;
    ds->pixels = malloc((size_t)NORM_N * NORM_K);
    ds->labels = calloc(NORM_N, sizeof *ds->labels);
    cr_assert(ds->pixels && ds->labels);
    for (int i = 0; i < NORM_N; i++)
        for (int c = 0; c < NORM_C; c++)
            for (int p = 0; p < NORM_HW * NORM_HW; p++)
                ds->pixels[((size_t)i * NORM_C + c) * NORM_HW * NORM_HW + p] =
                    (uint8_t)((i * NORM_HW * NORM_HW + p + 97 * c) & 0xff);
}

/* A linear layer that passes its NORM_K inputs through: logits = its input,
 * exactly (one product by 1, the rest by 0), or with quantize the input's
 * 8-bit signed codes times its step, exactly (weight step 1). */
static void build_passthrough(lsq_net *net, int quantize)
{
    char text[512];
    snprintf(text, sizeof text,
             "{\"input\":[%d,%d,%d],\"normalize\":{\"mean\":[0.4914,0.4822,0.4465],"
             "\"std\":[0.247,0.2435,0.2616]},\"layers\":[{\"type\":\"flatten\"},"
             "{\"type\":\"linear\",\"name\":\"id\",\"out\":%d,\"bias\":false}]}",
             NORM_C, NORM_HW, NORM_HW, NORM_K);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j);
    const variant v8 = {8, 0};
    spec_quant q = quant_of(&v8);
    lsq_err err;
    cr_assert_eq(net_build(net, j, quantize ? &q : NULL, NORM_K, NORM_N, &err), LSQ_OK, "%s",
                 err.message);
    json_decref(j);
    cr_assert(net->norm_on);
    float *w = net->params + net->views[net_find_view(net, "id.weight")].off;
    for (int o = 0; o < NORM_K; o++)
        for (int i = 0; i < NORM_K; i++) w[o * NORM_K + i] = o == i ? 1.0f : 0.0f;
    if (quantize) {
        net_quant_init_weights(net, QINIT_PAPER); /* the input's step: every pixel fits */
        net->params[net->views[net_find_view(net, "id.weight.step")].off] = 1.0f;
        cr_assert(net->nodes[2].aq.on && net->nodes[2].aq.r.is_signed);
    }
}

/* onnxruntime on pixels / 255 gives exactly what the loader feeds the
 * engine: the normalised values themselves (full precision) and the signed
 * 8-bit codes of the first layer's input (quantized). */
Test(onnx_layers, normalised_input_is_the_loaders_bit_for_bit, .timeout = 120)
{
    lsq_dataset ds;
    all_pixels(&ds);
    lsq_loader l;
    lsq_err err;
    cr_assert_eq(loader_init(&l, &ds, NORM_N, 0, 1, 0, 0, &err), LSQ_OK, "%s", err.message);
    float *raw = malloc(sizeof(float) * NORM_N * NORM_K);
    float *xn = malloc(sizeof(float) * NORM_N * NORM_K);
    int32_t y[NORM_N];
    cr_assert(raw && xn);
    cr_assert_eq(loader_fill(&l, 0, raw, y), NORM_N); /* pixels / 255: the export's input */
    for (int quantize = 0; quantize < 2; quantize++) {
        lsq_net net;
        build_passthrough(&net, quantize);
        loader_set_normalize(&l, net.norm_mean, net.norm_std);
        cr_assert_eq(loader_fill(&l, 0, xn, y), NORM_N);
        float *got = ort_run_net(&net, raw, NORM_N, "disabled");
        const float *ref = net_forward(&net, xn, NORM_N, 0);
        int same_as_loader = 0, same = 0;
        for (int i = 0; i < NORM_N * NORM_K; i++) {
            same += got[i] == ref[i];
            same_as_loader += got[i] == xn[i];
        }
        cr_log_info("normalised input (%s): %d/%d values identical in onnxruntime and lsq",
                    quantize ? "8-bit codes" : "float", same, NORM_N * NORM_K);
        cr_expect_eq(same, NORM_N * NORM_K, "onnxruntime and lsq differ on %d values",
                     NORM_N * NORM_K - same);
        if (!quantize)
            cr_expect_eq(same_as_loader, NORM_N * NORM_K,
                         "the exported normalisation differs from the loader's on %d values",
                         NORM_N * NORM_K - same_as_loader);
        free(got);
        loader_set_normalize(&l, NULL, NULL);
        net_free(&net);
    }
    free(raw);
    free(xn);
    loader_free(&l);
    dataset_free(&ds);
}

/* A quantized conv net on a normalised input (the first layer's input
 * quantizer signed 8-bit), against net_forward on the loader's batch. */
Test(onnx_layers, normalised_input_quantized_net, .timeout = 240)
{
    const char *text =
        "{\"input\":[3,12,12],\"normalize\":{\"mean\":[0.5071,0.4865,0.4409],"
        "\"std\":[0.2673,0.2564,0.2762]},\"layers\":["
        CONV("stem", 8, 3, ",\"pad\":1") ",{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        CONV("dw", 8, 3, ",\"pad\":1,\"groups\":8") ",{\"type\":\"relu\"}," HEAD "]}";
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j);
    lsq_dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.n = NB, ds.c = 3, ds.h = ds.w = 12, ds.classes = 10;
    ds.pixels = malloc((size_t)NB * 432);
    ds.labels = calloc(NB, sizeof *ds.labels);
    cr_assert(ds.pixels && ds.labels);
    unsigned s = 3;
    for (int i = 0; i < NB * 432; i++) {
        s = s * 1103515245u + 12345u;
        ds.pixels[i] = (uint8_t)(s >> 16);
    }
    lsq_loader l;
    lsq_err err;
    cr_assert_eq(loader_init(&l, &ds, NB, 0, 1, 0, 0, &err), LSQ_OK, "%s", err.message);
    float *raw = malloc(sizeof(float) * NB * 432), *xn = malloc(sizeof(float) * NB * 432);
    int32_t y[NB];
    cr_assert(raw && xn);
    cr_assert_eq(loader_fill(&l, 0, raw, y), NB);
    for (int k = 0; k < 4; k++) {
        const variant *v = &VARIANTS[k];
        char what[128];
        variant_name(what, sizeof what, "normalised input", v);
        spec_quant q = quant_of(v);
        lsq_net net;
        cr_assert_eq(net_build(&net, j, &q, 10, NB, &err), LSQ_OK, "%s", err.message);
        cr_assert(net.nodes[1].aq.r.is_signed && net.nodes[1].aq.r.bits == 8);
        net_init_params(&net, 9);
        loader_set_normalize(&l, net.norm_mean, net.norm_std);
        cr_assert_eq(loader_fill(&l, 0, xn, y), NB);
        init_steps(&net, xn, NB);
        float *got = ort_run_net(&net, raw, NB, "disabled");
        ort_expect_close(got, net_forward(&net, xn, NB, 0), NB, 10, what);
        free(got);
        loader_set_normalize(&l, NULL, NULL);
        net_free(&net);
    }
    free(raw);
    free(xn);
    loader_free(&l);
    dataset_free(&ds);
    json_decref(j);
}
