/* ONNX writer (deploy/onnx_export.c on protoc-c's structs): the model read
 * back with the generated unpack (header, opset, graph inputs and outputs,
 * initializer types, nodes in topological order), and small quantized
 * networks exported, run by onnxruntime (tests/onnx/run_model.mjs, default
 * graph optimizations) and compared with the same computation in C: the
 * QuantizeLinear codes exactly (round half to even, at an exact and at an
 * inexact step, clipped and saturated), per-channel weights (axis 1 for
 * MatMul) and the bias to rounding. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deploy/onnx_export.h"
#include "graph/net.h"
#include "onnx/onnx.pb-c.h"

#define NB 37 /* batch */
#define NI 4  /* features in */
#define NO 3  /* features out (per-channel case) */

static float *view_of(lsq_net *net, const char *name)
{
    int v = net_find_view(net, name);
    cr_assert_geq(v, 0, "no view %s", name);
    const net_view *vw = &net->views[v];
    return (vw->in_state ? net->state : net->params) + vw->off;
}

/* A quantized net of one linear layer (NI -> out) on a (1, 1, NI) input:
 * first and last, so 8 bits, the input unsigned (the image). */
static void build_linear(lsq_net *net, int out, int bias, int per_channel)
{
    char text[512];
    snprintf(text, sizeof text,
             "{\"input\":[1,1,%d],\"layers\":[{\"type\":\"flatten\",\"name\":\"flat\"},"
             "{\"type\":\"linear\",\"name\":\"fc\",\"out\":%d,\"bias\":%s}]}",
             NI, out, bias ? "true" : "false");
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j);
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1;
    q.weight_bits = q.act_bits = 4;
    q.first_last_bits = 8;
    q.granularity = per_channel ? GRAN_CHANNEL : GRAN_TENSOR;
    lsq_err err;
    cr_assert_eq(net_build(net, j, &q, out, NB, &err), LSQ_OK, "%s", err.message);
    json_decref(j);
    net_init_params(net, 3);
    cr_assert_eq(net_node_act_bits(&net->nodes[2]), 8);
    view_of(net, "fc.input.init")[0] = 1.0f; /* the step below is the initialised one */
}

static const Onnx__TensorProto *find_init(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; i++)
        if (g->initializer[i]->name && strcmp(g->initializer[i]->name, name) == 0)
            return g->initializer[i];
    return NULL;
}

static const Onnx__NodeProto *find_node(const Onnx__GraphProto *g, const char *op)
{
    for (size_t i = 0; i < g->n_node; i++)
        if (strcmp(g->node[i]->op_type, op) == 0) return g->node[i];
    return NULL;
}

Test(onnx_export, model_read_back)
{
    lsq_net net;
    build_linear(&net, NO, 1, 1);
    uint8_t *bytes;
    size_t len;
    lsq_err err;
    cr_assert_eq(onnx_export_bytes(&net, &bytes, &len, &err), LSQ_OK, "%s", err.message);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, bytes);
    cr_assert_not_null(m, "the exported bytes do not unpack");
    cr_expect(m->has_ir_version && m->ir_version == 8);
    cr_expect_str_eq(m->producer_name, "lsqd");
    cr_assert_eq(m->n_opset_import, 1);
    cr_expect_str_eq(m->opset_import[0]->domain, "");
    cr_expect_eq(m->opset_import[0]->version, 13);
    const Onnx__GraphProto *g = m->graph;
    cr_assert_not_null(g);

    /* input (N, 1, 1, NI) with a symbolic batch; output logits (N, NO) */
    cr_assert_eq(g->n_input, 1);
    cr_expect_str_eq(g->input[0]->name, "input");
    const Onnx__TensorShapeProto *sh = g->input[0]->type->tensor_type->shape;
    cr_assert_eq(sh->n_dim, 4);
    cr_expect_eq(sh->dim[0]->value_case, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM);
    cr_expect_str_eq(sh->dim[0]->dim_param, "N");
    cr_expect_eq(sh->dim[3]->dim_value, NI);
    cr_assert_eq(g->n_output, 1);
    cr_expect_str_eq(g->output[0]->name, "logits");
    cr_expect_eq(g->output[0]->type->tensor_type->shape->dim[1]->dim_value, NO);

    /* int8 weight codes (IN, OUT) for MatMul, per-channel steps on axis 1,
     * uint8 zero point of the unsigned input, float bias */
    const Onnx__TensorProto *codes = find_init(g, "fc.weight.codes");
    cr_assert_not_null(codes);
    cr_expect_eq(codes->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__INT8);
    cr_assert_eq(codes->n_dims, 2);
    cr_expect(codes->dims[0] == NI && codes->dims[1] == NO);
    cr_expect_eq(codes->raw_data.len, NI * NO);
    const Onnx__TensorProto *scale = find_init(g, "fc.weight.scale");
    cr_assert_not_null(scale);
    cr_expect(scale->n_dims == 1 && scale->dims[0] == NO);
    const Onnx__TensorProto *zero = find_init(g, "fc.input.zero");
    cr_assert_not_null(zero);
    cr_expect_eq(zero->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8);
    cr_expect_eq(zero->n_dims, 0);
    const Onnx__TensorProto *bias = find_init(g, "fc.bias");
    cr_assert_not_null(bias);
    cr_expect_eq(bias->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    cr_expect_eq(bias->raw_data.len, NO * sizeof(float));
    float b0;
    memcpy(&b0, bias->raw_data.data, sizeof b0);
    cr_expect_eq(b0, view_of(&net, "fc.bias")[0]);
    const Onnx__NodeProto *dq = NULL;
    for (size_t i = 0; i < g->n_node; i++)
        if (strcmp(g->node[i]->name, "fc.weight.dq") == 0) dq = g->node[i];
    cr_assert_not_null(dq);
    cr_assert_eq(dq->n_attribute, 1);
    cr_expect_str_eq(dq->attribute[0]->name, "axis");
    cr_expect_eq(dq->attribute[0]->type, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    cr_expect_eq(dq->attribute[0]->i, 1);
    /* the clip comes before QuantizeLinear (the exact form) */
    const Onnx__NodeProto *clip = find_node(g, "Clip"), *ql = find_node(g, "QuantizeLinear");
    cr_assert(clip && ql);
    cr_expect_str_eq(ql->input[0], clip->output[0]);

    /* topological: every input is the graph input, an initializer or the
     * output of an earlier node */
    for (size_t i = 0; i < g->n_node; i++) {
        for (size_t k = 0; k < g->node[i]->n_input; k++) {
            const char *in = g->node[i]->input[k];
            int ok = strcmp(in, "input") == 0 || find_init(g, in) != NULL;
            for (size_t j = 0; j < i && !ok; j++)
                ok = strcmp(g->node[j]->output[0], in) == 0;
            cr_expect(ok, "node %s reads %s before it is made", g->node[i]->name, in);
        }
    }
    onnx__model_proto__free_unpacked(m, NULL);
    free(bytes);

    /* an unwritable path is an I/O error */
    cr_expect_eq(onnx_export(&net, "/nonexistent/dir/m.onnx", &err), LSQ_ERR_IO);
    cr_expect_str_eq(err.field, "output file");
    net_free(&net);
}

/* ---- end to end with onnxruntime ---- */

static const char *repo_path(const char *rel)
{
    static char buf[4096];
    const char *b = getenv("LSQ_BUILD");
    if (b && *b) {
        /* LSQ_BUILD is <repo>/build or <repo>/build-san */
        const char *slash = strrchr(b, '/');
        int n = slash ? (int)(slash - b) : 0;
        snprintf(buf, sizeof buf, "%.*s/%s", n, b, rel);
    } else {
        snprintf(buf, sizeof buf, "%s", rel);
    }
    return buf;
}

/* Exports net, runs it on x (NB, 1, 1, NI) with onnxruntime and returns its
 * logits (NB, classes), malloc'd. Skips the test without node or
 * onnxruntime-node. */
static float *run_ort(const lsq_net *net, const float *x)
{
    if (system("command -v node >/dev/null 2>&1") != 0)
        cr_skip("node is not installed: the onnxruntime check is skipped");
    char dir[] = "/tmp/lsq-onnx-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char model[128], in[128], out[128], log[128], cmd[8192];
    snprintf(model, sizeof model, "%s/m.onnx", dir);
    snprintf(in, sizeof in, "%s/x.f32", dir);
    snprintf(out, sizeof out, "%s/y.f32", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    lsq_err err;
    cr_assert_eq(onnx_export(net, model, &err), LSQ_OK, "%s", err.message);
    FILE *f = fopen(in, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(x, sizeof *x, NB * NI, f), NB * NI);
    fclose(f);
    snprintf(cmd, sizeof cmd, "node '%s' %s %s %d,1,1,%d %s >%s 2>&1",
             repo_path("tests/onnx/run_model.mjs"), model, in, NB, NI, out, log);
    int rc = system(cmd);
    if (WEXITSTATUS(rc) == 3) cr_skip("onnxruntime-node is not installed");
    if (rc != 0) {
        char text[2048] = "";
        f = fopen(log, "r");
        if (f) {
            text[fread(text, 1, sizeof text - 1, f)] = '\0';
            fclose(f);
        }
        cr_assert_fail("onnxruntime failed (exit %d): %s", rc, text);
    }
    size_t want = (size_t)NB * net->classes;
    float *y = malloc((want + 1) * sizeof *y);
    f = fopen(out, "rb");
    cr_assert_not_null(f, "onnxruntime wrote no %s", out);
    size_t got = fread(y, sizeof *y, want + 1, f);
    fclose(f);
    cr_assert_eq(got, want, "%s holds %zu floats, want %zu", out, got, want);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    return y;
}

/* Inputs: ties at step 0.25 (0.125 -> 0, 0.375 -> 2, 0.625 -> 2, 0.875 -> 4),
 * negatives (clipped to 0), saturation (100 -> 255), then pseudo-random. */
static void make_inputs(float *x)
{
    const float fixed[] = {0.125f, 0.375f, 0.625f, 0.875f, -0.3f, 100.0f, 63.625f, 63.875f,
                           0.0f,   1.125f, -0.125f, 2.5f,  0.05f, 0.15f,  0.25f,   0.35f};
    unsigned s = 2024;
    for (int i = 0; i < NB * NI; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = i < (int)(sizeof fixed / sizeof *fixed)
                   ? fixed[i]
                   : ((float)(s >> 8) / (float)(1u << 24)) * 30.0f - 2.0f;
    }
}

/* The input quantizer's code in C: saturate(rint(clip(x) / s)), half to even. */
static float code_ref(float x, float s)
{
    float c = x < 0 ? 0 : x > 255 * s ? 255 * s : x;
    return rintf(c / s);
}

/* An identity layer shows the input codes: logit = code * s * 1. */
static void check_codes(float step)
{
    lsq_net net;
    build_linear(&net, NI, 0, 0);
    float *w = view_of(&net, "fc.weight");
    for (int o = 0; o < NI; o++)
        for (int i = 0; i < NI; i++) w[o * NI + i] = o == i ? 1.0f : 0.0f;
    view_of(&net, "fc.weight.step")[0] = 1.0f;
    view_of(&net, "fc.input.step")[0] = step;
    float x[NB * NI];
    make_inputs(x);
    float *y = run_ort(&net, x);
    const float *c = net_forward(&net, x, NB, 0);
    int ties = 0;
    for (int k = 0; k < NB * NI; k++) {
        float want = code_ref(x[k], step);
        cr_assert_eq(y[k], want * step, "x = %.9g at step %g: onnxruntime %.9g (code %g), C code %g",
                     x[k], step, y[k], y[k] / step, want);
        cr_assert_eq(c[k], y[k], "x = %.9g: lsq %.9g, onnxruntime %.9g", x[k], c[k], y[k]);
        float r = x[k] / step;
        ties += r == floorf(r) + 0.5f && x[k] > 0 && x[k] < 255 * step;
    }
    cr_log_info("step %g: %d codes equal in onnxruntime, C and lsq (%d ties)", step, NB * NI, ties);
    if (step == 0.25f) cr_expect_geq(ties, 4, "the inputs must hold rounding ties");
    free(y);
    net_free(&net);
}

Test(onnx_export, onnxruntime_codes_exact_step, .timeout = 120) { check_codes(0.25f); }
Test(onnx_export, onnxruntime_codes_inexact_step, .timeout = 120) { check_codes(0.1f); }

/* Per-channel weights (DequantizeLinear axis 1 on the transposed MatMul
 * weight) and a bias, against a reference computed from the codes. */
Test(onnx_export, onnxruntime_per_channel_linear, .timeout = 120)
{
    lsq_net net;
    build_linear(&net, NO, 1, 1);
    const int8_t wq[NO * NI] = {-2, -1, 0, 1, 1, -2, 1, 0, 127, -128, 5, -7};
    const float w_scale[NO] = {0.5f, 0.03125f, 0.0078125f};
    const float bias[NO] = {0.25f, -1.5f, 3.0f};
    float *w = view_of(&net, "fc.weight"), *ws = view_of(&net, "fc.weight.step");
    for (int o = 0; o < NO; o++) {
        ws[o] = w_scale[o];
        view_of(&net, "fc.bias")[o] = bias[o];
        for (int i = 0; i < NI; i++) w[o * NI + i] = wq[o * NI + i] * w_scale[o];
    }
    view_of(&net, "fc.input.step")[0] = 0.25f;
    float x[NB * NI];
    make_inputs(x);
    float *y = run_ort(&net, x);
    const float *c = net_forward(&net, x, NB, 0);
    double maxdiff = 0;
    for (int b = 0; b < NB; b++) {
        for (int o = 0; o < NO; o++) {
            double z = bias[o];
            for (int i = 0; i < NI; i++)
                z += (double)code_ref(x[b * NI + i], 0.25f) * 0.25 * (wq[o * NI + i] * w_scale[o]);
            float got = y[b * NO + o];
            double diff = fabs(got - z);
            if (diff > maxdiff) maxdiff = diff;
            cr_assert_leq(diff, 1e-5 * (1 + fabs(z)), "y[%d][%d]: onnxruntime %.9g, C %.9g", b, o,
                          got, z);
            cr_assert_leq(fabs(c[b * NO + o] - got), 1e-5 * (1 + fabs(z)),
                          "y[%d][%d]: lsq %.9g, onnxruntime %.9g", b, o, c[b * NO + o], got);
        }
    }
    cr_log_info("per-channel linear: onnxruntime vs C: max |dy| = %.3g", maxdiff);
    free(y);
    net_free(&net);
}
