/* ONNX import: the PyTorch-exported fixtures of tests/fixtures/onnx
 * (make_onnx_fixtures.py) imported, built and run, their logits against
 * onnxruntime's and one training step's gradients against PyTorch
 * autograd; the layer lists of every export variant; and models built here
 * with protoc-c's structs, good and bad, each bad one refused with its own
 * message (also under the sanitizers). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit/fixture.h"
#include "deploy/onnx_export.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "nn/layers.h"
#include "onnx/onnx.pb-c.h"

#define ONNX_FIXTURES FIXTURE_DIR "/onnx/"
#define TOL 1e-4 /* relative to the largest reference value */

static void import_fixture(onnx_import *im, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, ONNX_FIXTURES "%s.onnx", name);
    lsq_err err;
    cr_assert_eq(onnx_import_file(im, path, ONNX_IMPORT_MAX_BYTES, &err), LSQ_OK, "%s: [%s] %s",
                 name, err.field, err.message);
}

static fixture *load_fixture(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, ONNX_FIXTURES "%s.bin", name);
    fixture *fx = fixture_load(path);
    cr_assert_not_null(fx, "cannot read %s", path);
    return fx;
}

/* Builds the imported network (float) for a batch of n and loads its values;
 * the net_build error of a layer type this engine lacks fails here. */
static void build_imported(lsq_net *net, const onnx_import *im, int n, const char *name)
{
    lsq_err err;
    cr_assert_eq(net_build(net, im->layers, NULL, im->classes, n, &err), LSQ_OK,
                 "%s: net_build: [%s] %s", name, err.field, err.message);
    cr_assert_eq(onnx_import_set_params(im, net, &err), LSQ_OK, "%s: %s", name, err.message);
}

static void expect_close(const fixture *fx, const char *tensor, const float *got, size_t n,
                         const char *name, const char *what)
{
    fixture_diff d;
    cr_assert_eq(fixture_compare(fx, tensor, got, n, &d), 0, "%s: no %s", name, tensor);
    double rel = d.max_abs / (d.ref_max > 1e-30 ? d.ref_max : 1e-30);
    cr_log_info("%-20s %-22s max |diff| %.3g (%.2g of max |ref| %.3g)", name, what, d.max_abs, rel,
                d.ref_max);
    cr_expect_leq(rel, TOL, "%s: %s differ by %.3g (%.3g relative; element %zu)", name, what,
                  d.max_abs, rel, d.worst);
}

/* Logits of the imported network against onnxruntime's on the stored batch.
 * A graph with BatchNormalization in training mode normalises with the
 * batch's statistics, as lsq's training forward does; its running
 * statistics give lsq's eval forward, stored as logits_eval. */
static void check_forward(const char *name)
{
    onnx_import im;
    import_fixture(&im, name);
    fixture *fx = load_fixture(name);
    const fixture_tensor *x = fixture_get(fx, "input");
    cr_assert_not_null(x);
    const int n = (int)x->dims[0];
    cr_assert(x->ndim == 4 && (int)x->dims[1] == im.c && (int)x->dims[2] == im.h &&
              (int)x->dims[3] == im.w, "%s: the stored input does not fit %dx%dx%d", name, im.c,
              im.h, im.w);
    lsq_net net;
    build_imported(&net, &im, n, name);
    const size_t nk = (size_t)n * im.classes;
    if (im.bn_training) {
        expect_close(fx, "logits", net_forward(&net, x->data, n, 1), nk, name, "train forward");
        lsq_err err;
        cr_assert_eq(onnx_import_set_params(&im, &net, &err), LSQ_OK); /* the running stats again */
        expect_close(fx, "logits_eval", net_forward(&net, x->data, n, 0), nk, name, "eval forward");
    } else {
        cr_assert_null(fixture_get(fx, "logits_eval"));
        expect_close(fx, "logits", net_forward(&net, x->data, n, 0), nk, name, "eval forward");
    }
    net_free(&net);
    fixture_free(fx);
    onnx_import_free(&im);
}

#define FORWARD(name) \
    Test(onnx_import, name) { check_forward(#name); }

/* The layer types the engine has on this branch. */
FORWARD(resnet_op11_eval)
FORWARD(resnet_op13_eval)
FORWARD(resnet_op17_eval)
FORWARD(resnet_op11_bn)
FORWARD(resnet_op13_bn)
FORWARD(resnet_op17_bn)
FORWARD(resnet_op11_bneval)
FORWARD(resnet_op13_bneval)
FORWARD(resnet_op17_bneval)
FORWARD(resnet_op13_static)
FORWARD(resnet_op13_nocf)
FORWARD(resnet_op13_kiai)
FORWARD(vgg_op11_eval)
FORWARD(vgg_op13_eval)
FORWARD(vgg_op17_eval)
/* These need conv2d groups and clip (mobilenet), leakyrelu, conv2d
 * dilation, concat, scale, padded maxpool and windowed avgpool (concat):
 * until net_build has them they fail with its error. */
FORWARD(mobilenet_op10_eval)
FORWARD(mobilenet_op11_eval)
FORWARD(mobilenet_op13_eval)
FORWARD(mobilenet_op17_eval)
FORWARD(concat_op11_eval)
FORWARD(concat_op13_eval)
FORWARD(concat_op17_eval)

/* One training step's gradients (mean cross-entropy of the stored labels)
 * against PyTorch autograd, per ONNX initializer. */
static void check_gradients(const char *name)
{
    onnx_import im;
    import_fixture(&im, name);
    fixture *fx = load_fixture(name);
    const fixture_tensor *x = fixture_get(fx, "input"), *lab = fixture_get(fx, "labels");
    cr_assert(x && lab);
    const int n = (int)x->dims[0], k = im.classes;
    lsq_net net;
    build_imported(&net, &im, n, name);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    float *dlogits = calloc((size_t)n * k, sizeof *dlogits);
    for (int i = 0; i < n; i++) labels[i] = (int32_t)lab->data[i];
    const float *logits = net_forward(&net, x->data, n, 1);
    xent_forward(net.probs, logits, labels, n, k);
    xent_backward(dlogits, net.probs, labels, n, k, 1.0f);
    net_zero_grads(&net);
    net_backward(&net, dlogits, n);
    int compared = 0;
    double worst = 0;
    for (int i = 0; i < im.n_params; i++) {
        const onnx_param *p = &im.params[i];
        const int v = net_find_view(&net, p->name);
        cr_assert_geq(v, 0);
        if (net.views[v].in_state) continue; /* running statistics: no gradient */
        const float *g = net.grads + net.views[v].off;
        float *inonnx = malloc(p->count * sizeof *inonnx);
        if (p->transposed) {
            /* the engine's (out, in) back to the file's (in, out) */
            const size_t rows = (size_t)p->dims[0], cols = p->count / rows;
            for (size_t r = 0; r < rows; r++)
                for (size_t c = 0; c < cols; c++) inonnx[c * rows + r] = g[r * cols + c];
        } else {
            memcpy(inonnx, g, p->count * sizeof *inonnx);
        }
        char tname[160];
        snprintf(tname, sizeof tname, "grad.%s", p->src);
        fixture_diff d;
        cr_assert_eq(fixture_compare(fx, tname, inonnx, p->count, &d), 0, "%s: no %s", name, tname);
        const double rel = d.max_abs / (d.ref_max > 1e-30 ? d.ref_max : 1e-30);
        if (rel > worst) worst = rel;
        cr_expect_leq(rel, TOL, "%s: d %s (%s) differs by %.3g (%.3g relative)", name, p->name,
                      p->src, d.max_abs, rel);
        compared++;
        free(inonnx);
    }
    int in_file = 0;
    for (size_t t = 0; t < fx->count; t++) in_file += strncmp(fx->tensors[t].name, "grad.", 5) == 0;
    cr_expect_eq(compared, in_file, "%s: %d gradients compared, the fixture has %d", name,
                 compared, in_file);
    cr_log_info("%-20s %d gradients, largest relative difference %.2g", name, compared, worst);
    free(labels);
    free(dlogits);
    net_free(&net);
    fixture_free(fx);
    onnx_import_free(&im);
}

Test(onnx_import, gradients_resnet_folded_bn) { check_gradients("resnet_op13_eval"); }
Test(onnx_import, gradients_resnet_with_bn) { check_gradients("resnet_op13_bn"); }
Test(onnx_import, gradients_vgg) { check_gradients("vgg_op13_eval"); }

/* ---- the layer lists ---- */

static const json_t *layer(const onnx_import *im, const char *name)
{
    const json_t *ls = json_object_get(im->layers, "layers");
    for (size_t i = 0; i < json_array_size(ls); i++) {
        const json_t *l = json_array_get(ls, i);
        if (strcmp(json_string_value(json_object_get(l, "name")), name) == 0) return l;
    }
    cr_assert_fail("no layer %s", name);
    return NULL;
}

static void expect_layer(const onnx_import *im, const char *name, const char *json)
{
    json_t *want = json_loads(json, 0, NULL);
    cr_assert_not_null(want, "bad test JSON %s", json);
    const json_t *got = layer(im, name);
    char *g = json_dumps(got, JSON_COMPACT);
    cr_expect(json_equal(got, want), "layer %s is %s, want %s", name, g, json);
    free(g);
    json_decref(want);
}

static const onnx_param *param(const onnx_import *im, const char *view)
{
    for (int i = 0; i < im->n_params; i++)
        if (strcmp(im->params[i].name, view) == 0) return &im->params[i];
    return NULL;
}

/* Every opset and export variant of a model gives the same layer list. */
static void expect_same_layers(const char *a, const char *b)
{
    onnx_import ia, ib;
    import_fixture(&ia, a);
    import_fixture(&ib, b);
    char *sa = json_dumps(ia.layers, JSON_COMPACT), *sb = json_dumps(ib.layers, JSON_COMPACT);
    cr_expect(json_equal(ia.layers, ib.layers), "%s: %s\n%s: %s", a, sa, b, sb);
    free(sa);
    free(sb);
    onnx_import_free(&ia);
    onnx_import_free(&ib);
}

Test(onnx_import, export_variants_give_one_layer_list)
{
    const char *same[][2] = {
        {"resnet_op13_eval", "resnet_op11_eval"},   {"resnet_op13_eval", "resnet_op17_eval"},
        {"resnet_op13_eval", "resnet_op13_static"}, {"resnet_op13_eval", "resnet_op13_nocf"},
        {"resnet_op13_eval", "resnet_op13_kiai"},   {"resnet_op13_bn", "resnet_op11_bn"},
        {"resnet_op13_bn", "resnet_op17_bn"},       {"resnet_op13_bn", "resnet_op13_bneval"},
        {"resnet_op13_bn", "resnet_op11_bneval"},   {"resnet_op13_bn", "resnet_op17_bneval"},
        {"vgg_op13_eval", "vgg_op11_eval"},         {"vgg_op13_eval", "vgg_op17_eval"},
        {"mobilenet_op13_eval", "mobilenet_op10_eval"},
        {"mobilenet_op13_eval", "mobilenet_op11_eval"},
        {"mobilenet_op13_eval", "mobilenet_op17_eval"},
        {"concat_op13_eval", "concat_op11_eval"},   {"concat_op13_eval", "concat_op17_eval"},
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) expect_same_layers(same[i][0], same[i][1]);
}

Test(onnx_import, resnet_layers_names_and_values)
{
    onnx_import im;
    import_fixture(&im, "resnet_op13_bn");
    cr_expect_eq(im.c, 1);
    cr_expect_eq(im.h, 28);
    cr_expect_eq(im.classes, 10);
    cr_expect_eq(im.opset, 13);
    cr_expect_eq(im.bn_training, 6);
    cr_expect_str_eq(im.producer, "pytorch 1.13.0");
    cr_expect_eq(json_array_size(json_object_get(im.layers, "layers")), 22);
    expect_layer(&im, "conv1", "{\"type\":\"conv2d\",\"name\":\"conv1\",\"out\":8,\"kernel\":3,"
                               "\"stride\":1,\"pad\":1,\"bias\":false}");
    expect_layer(&im, "layer1.shortcut.0",
                 "{\"type\":\"conv2d\",\"name\":\"layer1.shortcut.0\",\"input\":\"relu\",\"out\":16,"
                 "\"kernel\":1,\"stride\":2,\"pad\":0,\"bias\":false}");
    expect_layer(&im, "layer1.add", "{\"type\":\"add\",\"name\":\"layer1.add\","
                                    "\"inputs\":[\"layer1.bn2\",\"layer1.shortcut.1\"]}");
    expect_layer(&im, "pool", "{\"type\":\"avgpool\",\"name\":\"pool\"}");
    expect_layer(&im, "reshape", "{\"type\":\"flatten\",\"name\":\"reshape\"}");
    expect_layer(&im, "fc", "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10,\"bias\":true}");
    /* the batch norm's four tensors under the engine's view names */
    const onnx_param *p = param(&im, "layer1.bn1.running_var");
    cr_assert_not_null(p);
    cr_expect_str_eq(p->src, "layer1.bn1.running_var");
    cr_expect(p->count == 16 && p->ndim == 1 && p->dims[0] == 16);
    cr_expect_not_null(param(&im, "layer1.bn1.weight"));
    cr_expect_not_null(param(&im, "layer1.bn1.bias"));
    cr_expect_not_null(param(&im, "layer1.bn1.running_mean"));
    cr_expect_null(param(&im, "conv1.bias"));
    p = param(&im, "fc.weight");
    cr_assert_not_null(p);
    cr_expect(!p->transposed && p->dims[0] == 10 && p->dims[1] == 16);
    /* info: shapes, parameters, MACs */
    cr_expect_eq(im.info[0].c, 8);
    cr_expect_eq(im.info[0].h, 28);
    cr_expect_eq(im.info[0].params, 72);
    cr_expect_eq(im.info[0].macs, 72.0 * 28 * 28);
    cr_expect_str_eq(im.info[0].node, "/conv1/Conv");
    cr_expect_str_eq(im.info[0].op, "Conv");
    cr_expect_eq(im.info[1].params, 16); /* gamma and beta only */
    onnx_import_free(&im);

    /* BN folded: conv layers with a bias from torch's onnx::Conv_NN */
    import_fixture(&im, "resnet_op13_eval");
    cr_expect_eq(im.bn_training, 0);
    cr_expect_eq(json_array_size(json_object_get(im.layers, "layers")), 16);
    expect_layer(&im, "conv1", "{\"type\":\"conv2d\",\"name\":\"conv1\",\"out\":8,\"kernel\":3,"
                               "\"stride\":1,\"pad\":1,\"bias\":true}");
    p = param(&im, "conv1.bias");
    cr_assert_not_null(p);
    cr_expect(strncmp(p->src, "onnx::Conv_", 11) == 0, "%s", p->src);
    onnx_import_free(&im);
}

/* The layers this branch's net_build lacks come out as their JSON types. */
Test(onnx_import, new_layer_types)
{
    onnx_import im;
    import_fixture(&im, "mobilenet_op13_eval");
    expect_layer(&im, "block1.conv.3",
                 "{\"type\":\"conv2d\",\"name\":\"block1.conv.3\",\"out\":16,\"kernel\":3,"
                 "\"stride\":1,\"pad\":1,\"bias\":true,\"groups\":16}");
    expect_layer(&im, "stem.2", "{\"type\":\"clip\",\"name\":\"stem.2\",\"min\":0.0,\"max\":6.0}");
    expect_layer(&im, "block1", "{\"type\":\"add\",\"name\":\"block1\","
                                "\"inputs\":[\"stem.2\",\"block1.conv.6\"]}");
    const onnx_param *p = param(&im, "block1.conv.3.weight");
    cr_assert_not_null(p);
    cr_expect(p->dims[0] == 16 && p->dims[1] == 1 && p->dims[2] == 3, "depthwise weight");
    cr_expect_eq(im.info[4].macs, 16.0 * 9 * 16 * 16);
    onnx_import_free(&im);

    import_fixture(&im, "concat_op13_eval");
    expect_layer(&im, "act", "{\"type\":\"leakyrelu\",\"name\":\"act\",\"alpha\":0.1}");
    expect_layer(&im, "b", "{\"type\":\"conv2d\",\"name\":\"b\",\"input\":\"act\",\"out\":8,"
                           "\"kernel\":3,\"stride\":1,\"pad\":2,\"bias\":true,\"dilation\":2}");
    expect_layer(&im, "concat", "{\"type\":\"concat\",\"name\":\"concat\","
                                "\"inputs\":[\"relu\",\"relu_1\"]}");
    expect_layer(&im, "mul", "{\"type\":\"scale\",\"name\":\"mul\",\"value\":0.5}");
    expect_layer(&im, "maxpool", "{\"type\":\"maxpool\",\"name\":\"maxpool\",\"kernel\":3,"
                                 "\"stride\":2,\"pad\":1}");
    expect_layer(&im, "avgpool", "{\"type\":\"avgpool\",\"name\":\"avgpool\",\"kernel\":3,"
                                 "\"stride\":2,\"pad\":1,\"count_include_pad\":false}");
    expect_layer(&im, "clip", "{\"type\":\"clip\",\"name\":\"clip\",\"min\":-1.0,\"max\":1.0}");
    /* x @ W + b: MatMul and its bias Add make one linear layer */
    expect_layer(&im, "matmul", "{\"type\":\"linear\",\"name\":\"matmul\",\"out\":10,\"bias\":true}");
    p = param(&im, "matmul.weight");
    cr_assert_not_null(p);
    cr_expect(p->transposed && p->dims[0] == 10 && p->dims[1] == 256);
    cr_expect_str_eq(p->src, "w");
    p = param(&im, "matmul.bias");
    cr_assert_not_null(p);
    cr_expect_str_eq(p->src, "bias");
    cr_expect_eq(im.info[8].h, 8); /* 16x16 -> maxpool 3/2 pad 1 -> 8x8 */
    cr_expect_eq(im.info[9].h, 4);
    onnx_import_free(&im);
}

/* ---- models built here ---- */

/* An arena for the structs of one test model. */
typedef struct {
    void *blocks[512];
    int n;
} arena;

static void *ar_new(arena *a, size_t size)
{
    cr_assert_lt(a->n, 512);
    void *p = calloc(1, size ? size : 1);
    cr_assert_not_null(p);
    return a->blocks[a->n++] = p;
}

static char *ar_str(arena *a, const char *s)
{
    char *p = ar_new(a, strlen(s) + 1);
    strcpy(p, s);
    return p;
}

static void ar_free(arena *a)
{
    for (int i = 0; i < a->n; i++) free(a->blocks[i]);
    a->n = 0;
}

typedef struct {
    arena a;
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto op;
    Onnx__OperatorSetIdProto *ops[1];
    Onnx__NodeProto *nodes[16];
    Onnx__TensorProto *inits[16];
    Onnx__ValueInfoProto *ins[4], *outs[2];
} tmodel;

static Onnx__NodeProto *t_node(tmodel *t, const char *op, const char *name, const char *in0,
                               const char *in1, const char *in2, const char *out)
{
    Onnx__NodeProto *n = ar_new(&t->a, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = ar_str(&t->a, op);
    n->name = ar_str(&t->a, name);
    n->input = ar_new(&t->a, 6 * sizeof *n->input);
    const char *ins[3] = {in0, in1, in2};
    for (int i = 0; i < 3 && ins[i]; i++) n->input[n->n_input++] = ar_str(&t->a, ins[i]);
    n->output = ar_new(&t->a, sizeof *n->output);
    n->output[0] = ar_str(&t->a, out);
    n->n_output = 1;
    n->attribute = ar_new(&t->a, 6 * sizeof *n->attribute);
    t->nodes[t->g.n_node++] = n;
    return n;
}

static Onnx__AttributeProto *t_attr(tmodel *t, Onnx__NodeProto *n, const char *name,
                                    Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = ar_new(&t->a, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = ar_str(&t->a, name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void t_ints(tmodel *t, Onnx__NodeProto *n, const char *name, int64_t v0, int64_t v1,
                   int64_t v2, int64_t v3, int count)
{
    Onnx__AttributeProto *a = t_attr(t, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->ints = ar_new(&t->a, 4 * sizeof *a->ints);
    const int64_t v[4] = {v0, v1, v2, v3};
    for (int i = 0; i < count; i++) a->ints[i] = v[i];
    a->n_ints = (size_t)count;
}

static void t_int(tmodel *t, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = t_attr(t, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1, a->i = v;
}

static void t_float(tmodel *t, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = t_attr(t, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1, a->f = v;
}

/* A float initializer of prod(dims) values i * 0.01 - 0.05, as raw_data. */
static Onnx__TensorProto *t_init(tmodel *t, const char *name, int64_t d0, int64_t d1, int64_t d2,
                                 int64_t d3, int ndim)
{
    Onnx__TensorProto *x = ar_new(&t->a, sizeof *x);
    onnx__tensor_proto__init(x);
    x->name = ar_str(&t->a, name);
    x->dims = ar_new(&t->a, 4 * sizeof *x->dims);
    const int64_t d[4] = {d0, d1, d2, d3};
    size_t count = 1;
    for (int i = 0; i < ndim; i++) x->dims[i] = d[i], count *= (size_t)d[i];
    x->n_dims = (size_t)ndim;
    x->has_data_type = 1;
    x->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    float *f = ar_new(&t->a, count * sizeof *f);
    for (size_t i = 0; i < count; i++) f[i] = (float)i * 0.01f - 0.05f;
    x->has_raw_data = 1;
    x->raw_data.data = (uint8_t *)f;
    x->raw_data.len = count * sizeof *f;
    t->inits[t->g.n_initializer++] = x;
    return x;
}

/* A float tensor value: dims < 0 are the symbolic batch "batch". */
static Onnx__ValueInfoProto *t_value(tmodel *t, const char *name, const int64_t *dims, int ndim)
{
    Onnx__ValueInfoProto *vi = ar_new(&t->a, sizeof *vi);
    Onnx__TypeProto *tp = ar_new(&t->a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ar_new(&t->a, sizeof *tt);
    Onnx__TensorShapeProto *sh = ar_new(&t->a, sizeof *sh);
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    sh->dim = ar_new(&t->a, 4 * sizeof *sh->dim);
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = ar_new(&t->a, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = ar_str(&t->a, "batch");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        sh->dim[i] = d;
    }
    sh->n_dim = (size_t)ndim;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = ar_str(&t->a, name);
    vi->type = tp;
    return vi;
}

/* The base model: x (N, 1, 4, 4) -> Conv 1->2 3x3 pad 1 -> Relu ->
 * GlobalAveragePool -> Flatten -> Gemm (transB) -> y (N, 3), opset 13. */
static void t_base(tmodel *t)
{
    memset(t, 0, sizeof *t);
    onnx__model_proto__init(&t->m);
    onnx__graph_proto__init(&t->g);
    onnx__operator_set_id_proto__init(&t->op);
    t->op.domain = "";
    t->op.has_version = 1;
    t->op.version = 13;
    t->ops[0] = &t->op;
    t->m.has_ir_version = 1;
    t->m.ir_version = 7;
    t->m.producer_name = "test";
    t->m.n_opset_import = 1;
    t->m.opset_import = t->ops;
    t->m.graph = &t->g;
    t->g.name = "g";
    t->g.node = t->nodes;
    t->g.initializer = t->inits;
    t->g.input = t->ins;
    t->g.output = t->outs;
    const int64_t xd[4] = {-1, 1, 4, 4}, yd[2] = {-1, 3};
    t->ins[t->g.n_input++] = t_value(t, "x", xd, 4);
    t->outs[t->g.n_output++] = t_value(t, "y", yd, 2);
    t_init(t, "w", 2, 1, 3, 3, 4);
    t_init(t, "fw", 3, 2, 0, 0, 2);
    t_init(t, "fb", 3, 0, 0, 0, 1);
    Onnx__NodeProto *c = t_node(t, "Conv", "/conv/Conv", "x", "w", NULL, "c");
    t_ints(t, c, "kernel_shape", 3, 3, 0, 0, 2);
    t_ints(t, c, "pads", 1, 1, 1, 1, 4);
    t_ints(t, c, "strides", 1, 1, 0, 0, 2);
    t_node(t, "Relu", "/relu/Relu", "c", NULL, NULL, "r");
    t_node(t, "GlobalAveragePool", "/pool/GlobalAveragePool", "r", NULL, NULL, "p");
    t_int(t, t_node(t, "Flatten", "/flatten/Flatten", "p", NULL, NULL, "f"), "axis", 1);
    t_int(t, t_node(t, "Gemm", "/fc/Gemm", "f", "fw", "fb", "y"), "transB", 1);
}

static Onnx__NodeProto *t_find(tmodel *t, const char *name)
{
    for (size_t i = 0; i < t->g.n_node; i++)
        if (strcmp(t->nodes[i]->name, name) == 0) return t->nodes[i];
    cr_assert_fail("no node %s", name);
    return NULL;
}

static uint8_t *t_pack(tmodel *t, size_t *len)
{
    *len = onnx__model_proto__get_packed_size(&t->m);
    uint8_t *b = malloc(*len + 1);
    cr_assert_eq(onnx__model_proto__pack(&t->m, b), *len);
    ar_free(&t->a);
    return b;
}

static lsq_status t_import(tmodel *t, onnx_import *im, lsq_err *err)
{
    size_t len;
    uint8_t *b = t_pack(t, &len);
    lsq_status st = onnx_import_bytes(im, b, len, err);
    free(b);
    return st;
}

Test(onnx_import, base_model_builds_and_runs)
{
    tmodel t;
    t_base(&t);
    onnx_import im;
    lsq_err err;
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "[%s] %s", err.field, err.message);
    cr_expect_eq(im.classes, 3);
    cr_expect_eq(im.c * im.h * im.w, 16);
    expect_layer(&im, "conv", "{\"type\":\"conv2d\",\"name\":\"conv\",\"out\":2,\"kernel\":3,"
                              "\"stride\":1,\"pad\":1,\"bias\":false}");
    expect_layer(&im, "fc", "{\"type\":\"linear\",\"name\":\"fc\",\"out\":3,\"bias\":true}");
    lsq_net net;
    cr_assert_eq(net_build(&net, im.layers, NULL, im.classes, 2, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(onnx_import_set_params(&im, &net, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(net.params[net.views[net_find_view(&net, "fc.bias")].off + 2], (float)2 * 0.01f - 0.05f);
    net_free(&net);
    /* a net whose views differ is refused by name */
    json_t *other = json_loads("{\"input\":[1,4,4],\"layers\":[{\"type\":\"conv2d\",\"name\":"
                               "\"conv\",\"out\":4,\"kernel\":3,\"pad\":1,\"bias\":false},"
                               "{\"type\":\"avgpool\"},{\"type\":\"flatten\"},{\"type\":\"linear\","
                               "\"name\":\"fc\",\"out\":3}]}", 0, NULL);
    cr_assert_eq(net_build(&net, other, NULL, 3, 2, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(onnx_import_set_params(&im, &net, &err), LSQ_ERR_INVALID);
    cr_expect(strstr(err.message, "conv.weight") != NULL, "%s", err.message);
    net_free(&net);
    json_decref(other);
    onnx_import_free(&im);
}

/* Forms an exporter may write that mean the same layers. */
Test(onnx_import, equivalent_forms)
{
    onnx_import im;
    lsq_err err;
    tmodel t;

    /* opset 10: Clip's range as attributes; min 0 without max is a ReLU */
    t_base(&t);
    t.op.version = 10;
    Onnx__NodeProto *r = t_find(&t, "/relu/Relu");
    r->op_type = "Clip";
    r->name = "/relu/Clip";
    t_float(&t, r, "min", 0.0f);
    t_float(&t, r, "max", 6.0f);
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "%s", err.message);
    expect_layer(&im, "relu", "{\"type\":\"clip\",\"name\":\"relu\",\"min\":0.0,\"max\":6.0}");
    onnx_import_free(&im);
    t_base(&t);
    t.op.version = 10;
    r = t_find(&t, "/relu/Relu");
    r->op_type = "Clip";
    r->name = "/relu/Clip";
    t_float(&t, r, "min", 0.0f);
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "%s", err.message);
    expect_layer(&im, "relu", "{\"type\":\"relu\",\"name\":\"relu\"}");
    onnx_import_free(&im);

    /* an AveragePool over the whole input is the global average; Gemm with
     * transB 0 stores (in, out) */
    t_base(&t);
    Onnx__NodeProto *p = t_find(&t, "/pool/GlobalAveragePool");
    p->op_type = "AveragePool";
    p->name = "/pool/AveragePool";
    t_ints(&t, p, "kernel_shape", 4, 4, 0, 0, 2);
    t.inits[1]->dims[0] = 2, t.inits[1]->dims[1] = 3;
    t_find(&t, "/fc/Gemm")->n_attribute = 0;
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "%s", err.message);
    expect_layer(&im, "pool", "{\"type\":\"avgpool\",\"name\":\"pool\"}");
    const onnx_param *w = param(&im, "fc.weight");
    cr_assert_not_null(w);
    cr_expect(w->transposed && w->dims[0] == 3 && w->dims[1] == 2);
    /* (in, out) = [[-.05, -.04, -.03], [-.02, -.01, 0]] -> row 0 = {-.05, -.02} */
    cr_expect(w->data[0] == -0.05f && w->data[1] == (float)3 * 0.01f - 0.05f, "%g %g", w->data[0],
              w->data[1]);
    onnx_import_free(&im);

    /* weights also listed as graph inputs, a fixed batch, unnamed nodes */
    t_base(&t);
    const int64_t wd[4] = {2, 1, 3, 3};
    t.ins[t.g.n_input++] = t_value(&t, "w", wd, 4);
    t.ins[0]->type->tensor_type->shape->dim[0]->value_case =
        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    t.ins[0]->type->tensor_type->shape->dim[0]->dim_value = 8;
    for (size_t i = 0; i < t.g.n_node; i++) t.nodes[i]->name = "";
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "%s", err.message);
    const json_t *ls = json_object_get(im.layers, "layers");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(ls, 0), "name")), "conv1");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(ls, 4), "name")), "gemm5");
    onnx_import_free(&im);

    /* names: "input" is the image's; duplicates get a number; long
     * paths keep their last 47 characters; odd characters become '_' */
    t_base(&t);
    t_find(&t, "/conv/Conv")->name = "input";
    t_find(&t, "/relu/Relu")->name = "/a very/long:name/that.goes/on.and.on/and.on.for/more.than/forty.seven/Relu";
    t_find(&t, "/pool/GlobalAveragePool")->name = "/x/GlobalAveragePool";
    t_find(&t, "/flatten/Flatten")->name = "/x/Flatten";
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "%s", err.message);
    ls = json_object_get(im.layers, "layers");
    const char *names[5];
    for (int i = 0; i < 5; i++)
        names[i] = json_string_value(json_object_get(json_array_get(ls, (size_t)i), "name"));
    cr_expect_str_eq(names[0], "input_2");
    cr_expect_leq(strlen(names[1]), 47);
    cr_expect_str_eq(names[1], "goes.on.and.on.and.on.for.more.than.forty.seven");
    cr_expect_str_eq(names[2], "x.globalaveragepool");
    cr_expect_str_eq(names[3], "x.flatten");
    onnx_import_free(&im);

    /* BatchNormalization with another epsilon: folded into the variance */
    t_base(&t);
    Onnx__NodeProto *bn = t_find(&t, "/relu/Relu");
    bn->op_type = "BatchNormalization";
    bn->name = "/bn/BatchNormalization";
    bn->input[1] = "g", bn->input[2] = "b", bn->input[3] = "m", bn->input[4] = "v";
    bn->n_input = 5;
    t_float(&t, bn, "epsilon", 1e-3f);
    t_init(&t, "g", 2, 0, 0, 0, 1);
    t_init(&t, "b", 2, 0, 0, 0, 1);
    t_init(&t, "m", 2, 0, 0, 0, 1);
    Onnx__TensorProto *v = t_init(&t, "v", 2, 0, 0, 0, 1);
    ((float *)v->raw_data.data)[0] = 1.0f;
    cr_assert_eq(t_import(&t, &im, &err), LSQ_OK, "%s", err.message);
    const onnx_param *var = param(&im, "bn.running_var");
    cr_assert_not_null(var);
    cr_expect_eq(var->data[0], 1.0f + (1e-3f - 1e-5f));
    cr_expect_eq(var->data[1], 0.0f); /* -0.04 + 0.00099 < 0: 0 */
    onnx_import_free(&im);
}

/* Input the importer must refuse, each with a message that says what. */
typedef enum {
    BAD_UNSUPPORTED_OP, BAD_TWO_INPUTS, BAD_INPUT_2D, BAD_CYCLE, BAD_INIT_SIZE, BAD_TYPED_SIZE,
    BAD_CONV_RANK, BAD_NOT_PRODUCED, BAD_EXTERNAL, BAD_OPSET, BAD_PADS, BAD_GEMM_ALPHA,
    BAD_TWO_OUTPUTS, BAD_RESHAPE, BAD_MUL, BAD_INT_WEIGHT, BAD_NO_OPSET, BAD_MADE_TWICE,
    BAD_INPUT_TYPE, BAD_OUTPUT_NOT_LAST, BAD_COUNT
} bad_case;

static void t_bad(tmodel *t, bad_case c)
{
    t_base(t);
    switch (c) {
    case BAD_UNSUPPORTED_OP: t_find(t, "/relu/Relu")->op_type = "Sigmoid"; break;
    case BAD_TWO_INPUTS: {
        const int64_t d[4] = {-1, 1, 4, 4};
        t->ins[t->g.n_input++] = t_value(t, "x2", d, 4);
        break;
    }
    case BAD_INPUT_2D: {
        Onnx__TensorShapeProto *sh = t->ins[0]->type->tensor_type->shape;
        sh->n_dim = 2;
        sh->dim[1]->dim_value = 16;
        break;
    }
    case BAD_CYCLE: t_find(t, "/relu/Relu")->input[0] = "p"; break;
    case BAD_INIT_SIZE: t->inits[0]->raw_data.len -= 4; break;
    case BAD_TYPED_SIZE: {
        Onnx__TensorProto *b = t->inits[2];
        b->has_raw_data = 0;
        b->float_data = (float *)b->raw_data.data;
        b->n_float_data = 2;
        break;
    }
    case BAD_CONV_RANK:
        t->inits[0]->n_dims = 2;
        t->inits[0]->dims[1] = 9;
        break;
    case BAD_NOT_PRODUCED: t_find(t, "/flatten/Flatten")->input[0] = "nope"; break;
    case BAD_EXTERNAL: {
        Onnx__TensorProto *w = t->inits[0];
        w->has_raw_data = 0;
        w->has_data_location = 1;
        w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        Onnx__StringStringEntryProto *e = ar_new(&t->a, sizeof *e);
        onnx__string_string_entry_proto__init(e);
        e->key = "location";
        e->value = "weights.bin";
        w->external_data = ar_new(&t->a, sizeof *w->external_data);
        w->external_data[0] = e;
        w->n_external_data = 1;
        break;
    }
    case BAD_OPSET: t->op.version = 18; break;
    case BAD_PADS: t_find(t, "/conv/Conv")->attribute[1]->ints[2] = 0; break;
    case BAD_GEMM_ALPHA: t_float(t, t_find(t, "/fc/Gemm"), "alpha", 0.5f); break;
    case BAD_TWO_OUTPUTS: {
        const int64_t d[2] = {-1, 2};
        t->outs[t->g.n_output++] = t_value(t, "f", d, 2);
        break;
    }
    case BAD_RESHAPE: {
        Onnx__NodeProto *f = t_find(t, "/flatten/Flatten");
        f->op_type = "Reshape";
        f->n_attribute = 0;
        f->input[f->n_input++] = "shape";
        Onnx__NodeProto *k = t_node(t, "Constant", "/shape", NULL, NULL, NULL, "shape");
        Onnx__AttributeProto *a = t_attr(t, k, "value_ints", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
        a->ints = ar_new(&t->a, 3 * sizeof *a->ints);
        a->ints[0] = -1, a->ints[1] = 1, a->ints[2] = 2;
        a->n_ints = 3;
        break;
    }
    case BAD_MUL: {
        Onnx__NodeProto *r = t_find(t, "/relu/Relu");
        r->op_type = "Mul";
        r->input[r->n_input++] = "c"; /* an activation squared */
        break;
    }
    case BAD_INT_WEIGHT: {
        Onnx__TensorProto *w = t->inits[0];
        w->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT8;
        w->raw_data.len = 18;
        break;
    }
    case BAD_NO_OPSET: t->m.n_opset_import = 0; break;
    case BAD_MADE_TWICE: t_find(t, "/pool/GlobalAveragePool")->output[0] = "r"; break;
    case BAD_INPUT_TYPE: t->ins[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8; break;
    case BAD_OUTPUT_NOT_LAST: t->outs[0]->name = "c"; break;
    default: break;
    }
}

Test(onnx_import, bad_models_fail_cleanly)
{
    static const struct {
        bad_case c;
        lsq_status code;
        const char *field, *needle1, *needle2;
    } want[] = {
        {BAD_UNSUPPORTED_OP, LSQ_ERR_INVALID, "model.onnx.graph.node[/relu/Relu]",
         "(Sigmoid, opset 13): lsq cannot import Sigmoid", "supported: Conv, BatchNormalization"},
        {BAD_TWO_INPUTS, LSQ_ERR_INVALID, "model.onnx.graph.input", "2 inputs", "\"x2\""},
        {BAD_INPUT_2D, LSQ_ERR_INVALID, "model.onnx.graph.input[x]", "[batch, 16]", "4-D input"},
        {BAD_CYCLE, LSQ_ERR_INVALID, "model.onnx.graph.node[", "cycle", "opset 13"},
        {BAD_INIT_SIZE, LSQ_ERR_INVALID, "model.onnx.graph.initializer[w]", "dims [2, 1, 3, 3]",
         "raw_data holds 68 bytes"},
        {BAD_TYPED_SIZE, LSQ_ERR_INVALID, "model.onnx.graph.initializer[fb]", "make 3 elements",
         "holds 2"},
        {BAD_CONV_RANK, LSQ_ERR_INVALID, "model.onnx.graph.node[/conv/Conv]", "rank 2",
         "(out, in / group, kH, kW)"},
        {BAD_NOT_PRODUCED, LSQ_ERR_INVALID, "model.onnx.graph.node[/flatten/Flatten]", "\"nope\"",
         "no node makes"},
        {BAD_EXTERNAL, LSQ_ERR_INVALID, "model.onnx.graph.initializer[w]", "weights.bin",
         "save_as_external_data=False"},
        {BAD_OPSET, LSQ_ERR_INVALID, "model.onnx", "opset 18", "opset_version=17"},
        {BAD_PADS, LSQ_ERR_INVALID, "model.onnx.graph.node[/conv/Conv]", "pads [1, 1, 0, 1]",
         "symmetric"},
        {BAD_GEMM_ALPHA, LSQ_ERR_INVALID, "model.onnx.graph.node[/fc/Gemm]", "alpha 0.5",
         "alpha = beta = 1"},
        {BAD_TWO_OUTPUTS, LSQ_ERR_INVALID, "model.onnx.graph.output", "2 outputs", "logits"},
        {BAD_RESHAPE, LSQ_ERR_INVALID, "model.onnx.graph.node[/flatten/Flatten]", "[-1, 1, 2]",
         "(N, -1)"},
        {BAD_MUL, LSQ_ERR_INVALID, "model.onnx.graph.node[/relu/Relu]", "constant scalar", "Mul"},
        {BAD_INT_WEIGHT, LSQ_ERR_INVALID, "model.onnx.graph.node[/conv/Conv]", "INT8", "float32"},
        {BAD_NO_OPSET, LSQ_ERR_INVALID, "model.onnx", "no opset", "default"},
        {BAD_MADE_TWICE, LSQ_ERR_INVALID, "model.onnx.graph.node[/pool/GlobalAveragePool]",
         "\"r\"", "already makes"},
        {BAD_INPUT_TYPE, LSQ_ERR_INVALID, "model.onnx.graph.input[x]", "UINT8", "float32"},
        {BAD_OUTPUT_NOT_LAST, LSQ_ERR_INVALID, "model.onnx.graph.output", "\"c\"", "last layer"},
    };
    _Static_assert(sizeof want / sizeof *want == BAD_COUNT, "a row per bad case");
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        tmodel t;
        t_bad(&t, want[i].c);
        onnx_import im;
        lsq_err err;
        lsq_err_clear(&err);
        lsq_status st = t_import(&t, &im, &err);
        cr_expect_eq(st, want[i].code, "case %zu: status %d, message %s", i, st, err.message);
        cr_expect(strncmp(err.field, want[i].field, strlen(want[i].field)) == 0,
                  "case %zu: field %s, want %s", i, err.field, want[i].field);
        cr_expect(strstr(err.message, want[i].needle1) && strstr(err.message, want[i].needle2),
                  "case %zu: message \"%s\" lacks \"%s\" or \"%s\"", i, err.message,
                  want[i].needle1, want[i].needle2);
        cr_expect_null(im.layers, "case %zu: a failed import leaves nothing", i);
        if (st == LSQ_OK) onnx_import_free(&im);
    }
}

Test(onnx_import, bytes_that_are_not_a_model)
{
    tmodel t;
    t_base(&t);
    size_t len;
    uint8_t *good = t_pack(&t, &len);
    onnx_import im;
    lsq_err err;
    /* not protobuf */
    const char *text = "{\"this\": \"is JSON, not an ONNX model\"}";
    cr_expect_eq(onnx_import_bytes(&im, text, strlen(text), &err), LSQ_ERR_FORMAT, "%s", err.message);
    cr_expect(strstr(err.message, "not an ONNX model"), "%s", err.message);
    cr_expect_str_eq(err.field, "model.onnx");
    static const uint8_t zeros[64];
    cr_expect_eq(onnx_import_bytes(&im, zeros, sizeof zeros, &err), LSQ_ERR_FORMAT);
    /* truncated */
    cr_expect_eq(onnx_import_bytes(&im, good, len / 2, &err), LSQ_ERR_FORMAT, "%s", err.message);
    cr_expect(strstr(err.message, "truncated"), "%s", err.message);
    /* empty: a message with no graph */
    cr_expect_eq(onnx_import_bytes(&im, good, 0, &err), LSQ_ERR_FORMAT, "%s", err.message);
    cr_expect(strstr(err.message, "no graph"), "%s", err.message);

    /* a file over the cap, and one that is not there */
    char path[] = "/tmp/lsq-onnx-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, good, len), (ssize_t)len);
    close(fd);
    cr_expect_eq(onnx_import_file(&im, path, len - 1, &err), LSQ_ERR_INVALID);
    cr_expect(strstr(err.message, "over the limit"), "%s", err.message);
    cr_expect(strstr(err.message, path), "%s", err.message);
    cr_assert_eq(onnx_import_file(&im, path, len, &err), LSQ_OK, "%s", err.message);
    onnx_import_free(&im);
    unlink(path);
    cr_expect_eq(onnx_import_file(&im, path, len, &err), LSQ_ERR_IO);

    /* corrupted bytes: any answer, but a clean one (the sanitizer build
     * checks the "clean") */
    uint8_t *b = malloc(len);
    unsigned s = 7;
    int ok = 0;
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(b, good, len);
        for (int k = 0; k < 1 + trial % 4; k++) {
            s = s * 1103515245u + 12345u;
            b[(s >> 8) % len] = (uint8_t)(s >> 20);
        }
        s = s * 1103515245u + 12345u;
        size_t cut = trial % 3 == 0 ? (s >> 8) % (len + 1) : len;
        lsq_status st = onnx_import_bytes(&im, b, cut, &err);
        if (st == LSQ_OK) {
            ok++;
            cr_assert_not_null(im.layers);
            onnx_import_free(&im);
        } else {
            cr_assert_null(im.layers);
            cr_assert(err.message[0] != '\0');
        }
    }
    cr_log_info("2000 corrupted models: %d still imported, the rest refused", ok);
    free(b);
    free(good);
}

/* lsq's own ONNX export of a full-precision network imports back to the same
 * network: the same logits. */
Test(onnx_import, round_trip_of_the_export)
{
    lsq_err err;
    json_t *layers = net_zoo_layers("cnn-small", 1, 28, 28, &err);
    cr_assert_not_null(layers);
    lsq_net a, b;
    cr_assert_eq(net_build(&a, layers, NULL, 10, 4, &err), LSQ_OK, "%s", err.message);
    json_decref(layers);
    net_init_params(&a, 5);
    for (size_t i = 0; i < a.n_state; i++) a.state[i] = 0.5f + 0.01f * (float)(i % 17);
    uint8_t *bytes;
    size_t len;
    cr_assert_eq(onnx_export_bytes(&a, &bytes, &len, &err), LSQ_OK, "%s", err.message);
    onnx_import im;
    cr_assert_eq(onnx_import_bytes(&im, bytes, len, &err), LSQ_OK, "[%s] %s", err.field,
                 err.message);
    free(bytes);
    cr_expect_str_eq(im.producer, "lsqd");
    cr_assert_eq(net_build(&b, im.layers, NULL, im.classes, 4, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(onnx_import_set_params(&im, &b, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(b.n_params, a.n_params);
    float x[4 * 784];
    for (int i = 0; i < 4 * 784; i++) x[i] = (float)((i * 37) % 256) / 255.0f;
    float ya[40];
    memcpy(ya, net_forward(&a, x, 4, 0), sizeof ya);
    const float *yb = net_forward(&b, x, 4, 0);
    double worst = 0;
    for (int i = 0; i < 40; i++) worst = fmax(worst, fabs(ya[i] - yb[i]));
    cr_log_info("export -> import round trip: max |dlogit| %.3g", worst);
    cr_expect_eq(worst, 0.0, "the round trip changed the logits by %.3g", worst);
    net_free(&b);
    onnx_import_free(&im);
    net_free(&a);
}

/* lsq import: the table, the JSON layer list, a refusal's exit status. */
Test(onnx_import, lsq_import_command)
{
    const char *bin = getenv("LSQ_BIN");
    if (!bin) cr_skip("LSQ_BIN is not set (run through make test)");
    char cmd[1024], out[] = "/tmp/lsq-import-XXXXXX";
    int fd = mkstemp(out);
    cr_assert_geq(fd, 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "'%s' import " ONNX_FIXTURES "resnet_op13_bn.onnx --weight-bits 3 >%s 2>&1",
             bin, out);
    cr_assert_eq(system(cmd), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    cr_assert_gt(getdelim(&text, &len, '\0', f), 0);
    fclose(f);
    cr_expect(strstr(text, "opset 13; input 1x28x28, 10 classes"), "%s", text);
    cr_expect(strstr(text, "layer1.shortcut.0"), "%s", text);
    cr_expect(strstr(text, "3/3  /layer1/conv1/Conv"), "%s", text);
    cr_expect(strstr(text, "8/8  /fc/Gemm"), "%s", text);
    cr_expect(strstr(text, "this lsq builds it"), "%s", text);
    free(text);
    text = NULL;

    snprintf(cmd, sizeof cmd, "'%s' import " ONNX_FIXTURES "resnet_op13_bn.onnx --json >%s", bin, out);
    cr_assert_eq(system(cmd), 0);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    cr_assert_not_null(j, "--json: %s", je.text);
    onnx_import im;
    import_fixture(&im, "resnet_op13_bn");
    cr_expect(json_equal(j, im.layers), "--json differs from the import");
    onnx_import_free(&im);
    json_decref(j);

    snprintf(cmd, sizeof cmd, "'%s' import " ONNX_FIXTURES "resnet_op13_bn.bin >%s 2>&1", bin, out);
    int rc = system(cmd);
    cr_expect_eq(WEXITSTATUS(rc), 1);
    f = fopen(out, "r");
    cr_assert_not_null(f);
    cr_assert_gt(getdelim(&text, &len, '\0', f), 0);
    fclose(f);
    cr_expect(strstr(text, "not an ONNX model"), "%s", text);
    free(text);
    unlink(out);
}
