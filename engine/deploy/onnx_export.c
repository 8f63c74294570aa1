/* ONNX export of a (fake-)quantized network; see onnx_export.h. */
#include "deploy/onnx_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/onnx_pb.h"
#include "deploy/support.h"
#include "quant/quant.h"

#define EXPORT_BN_EPS 1e-5f /* net.c's BN_EPS */

static const float *view_data(const lsq_net *net, int v)
{
    const net_view *vw = &net->views[v];
    return (vw->in_state ? net->state : net->params) + vw->off;
}

static void add_view_init(onnx_model *m, const lsq_net *net, int v, const char *name)
{
    const net_view *vw = &net->views[v];
    int64_t d[4];
    for (int i = 0; i < vw->ndim; i++) d[i] = vw->dims[i];
    onnx_initializer_add(m, name, ONNX_FLOAT, d, vw->ndim, view_data(net, v));
}

static void scalar_f(onnx_model *m, const char *name, float v)
{
    onnx_initializer_add(m, name, ONNX_FLOAT, ONNX_SCALAR, &v);
}

/* The input quantizer of a conv/linear: writes the dequantized value's name
 * into out (Clip -> QuantizeLinear -> DequantizeLinear, with Sub / Add for
 * an LSQ+ offset). */
static void quant_input(onnx_model *m, const lsq_net *net, const net_node *nd, const char *x,
                        char *out, size_t out_sz)
{
    char n1[160], n2[160], n3[160], n4[160], sname[160], zname[160], lo[160], hi[160], b[160];
    float s = view_data(net, nd->aq.step_view)[0];
    float beta = nd->aq.offset_view >= 0 ? view_data(net, nd->aq.offset_view)[0] : 0.0f;
    const quant_range *r = &nd->aq.r;
    snprintf(sname, sizeof sname, "%s.input.scale", nd->name);
    snprintf(zname, sizeof zname, "%s.input.zero", nd->name);
    snprintf(lo, sizeof lo, "%s.input.min", nd->name);
    snprintf(hi, sizeof hi, "%s.input.max", nd->name);
    scalar_f(m, sname, s);
    scalar_f(m, lo, (float)-r->qn * s);
    scalar_f(m, hi, (float)r->qp * s);
    if (r->is_signed) {
        int8_t z = 0;
        onnx_initializer_add(m, zname, ONNX_INT8, ONNX_SCALAR, &z);
    } else {
        uint8_t z = 0;
        onnx_initializer_add(m, zname, ONNX_UINT8, ONNX_SCALAR, &z);
    }
    const char *src = x;
    if (nd->aq.offset_view >= 0) {
        snprintf(b, sizeof b, "%s.input.offset", nd->name);
        scalar_f(m, b, beta);
        snprintf(n1, sizeof n1, "%s.input.centered", nd->name);
        onnx_node_add(m, "Sub", n1, (const char *const[]){x, b}, 2, (const char *const[]){n1}, 1);
        src = n1;
    }
    snprintf(n2, sizeof n2, "%s.input.clip", nd->name);
    snprintf(n3, sizeof n3, "%s.input.codes", nd->name);
    snprintf(n4, sizeof n4, "%s.input.dq", nd->name);
    onnx_node_add(m, "Clip", n2, (const char *const[]){src, lo, hi}, 3, (const char *const[]){n2}, 1);
    onnx_node_add(m, "QuantizeLinear", n3, (const char *const[]){n2, sname, zname}, 3,
                  (const char *const[]){n3}, 1);
    onnx_node_add(m, "DequantizeLinear", n4, (const char *const[]){n3, sname, zname}, 3,
                  (const char *const[]){n4}, 1);
    if (nd->aq.offset_view >= 0) {
        snprintf(out, out_sz, "%s.input.value", nd->name);
        onnx_node_add(m, "Add", out, (const char *const[]){n4, b}, 2, (const char *const[]){out}, 1);
    } else {
        snprintf(out, out_sz, "%s", n4);
    }
}

/* The weight of a conv/linear as float: codes + DequantizeLinear, or the
 * float initializer. Writes its name into out. */
static lsq_status weight_input(onnx_model *m, const lsq_net *net, const net_node *nd, char *out,
                               size_t out_sz, lsq_err *err)
{
    const net_view *vw = &net->views[nd->wv];
    int64_t d[4];
    for (int i = 0; i < vw->ndim; i++) d[i] = vw->dims[i];
    /* linear weights go in as (IN, OUT) for MatMul */
    const int tr = nd->op == OP_LINEAR;
    const size_t rows = (size_t)vw->dims[0], cols = vw->count / rows;
    if (tr) d[0] = (int64_t)cols, d[1] = (int64_t)rows;
    if (!nd->wq.on) {
        snprintf(out, out_sz, "%s.weight", nd->name);
        const float *w = view_data(net, nd->wv);
        float *t = malloc(vw->count * sizeof *t);
        if (!t) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory exporting %s", vw->name);
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++)
                t[tr ? c * rows + r : r * cols + c] = w[r * cols + c];
        onnx_initializer_add(m, out, ONNX_FLOAT, d, vw->ndim, t);
        free(t);
        return LSQ_OK;
    }
    size_t n = vw->count;
    float *tmp = malloc(n * sizeof *tmp);
    int32_t *codes = malloc(n * sizeof *codes);
    int8_t *c8 = malloc(n);
    int8_t *zeros = calloc((size_t)nd->wq.channels, 1);
    if (!tmp || !codes || !c8 || !zeros) {
        free(tmp), free(codes), free(c8), free(zeros);
        return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory exporting %s", vw->name);
    }
    const float *step = view_data(net, nd->wq.step_view);
    quant_forward(tmp, codes, view_data(net, nd->wv), step, NULL, nd->wq.channels, nd->wq.per,
                  &nd->wq.r);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            c8[tr ? c * rows + r : r * cols + c] = (int8_t)codes[r * cols + c];
    char q[160], s[160], z[160];
    snprintf(q, sizeof q, "%s.weight.codes", nd->name);
    snprintf(s, sizeof s, "%s.weight.scale", nd->name);
    snprintf(z, sizeof z, "%s.weight.zero", nd->name);
    snprintf(out, out_sz, "%s.weight.dq", nd->name);
    onnx_initializer_add(m, q, ONNX_INT8, d, vw->ndim, c8);
    if (nd->wq.channels == 1) {
        onnx_initializer_add(m, s, ONNX_FLOAT, ONNX_SCALAR, step);
        onnx_initializer_add(m, z, ONNX_INT8, ONNX_SCALAR, zeros);
    } else {
        int64_t c = nd->wq.channels;
        onnx_initializer_add(m, s, ONNX_FLOAT, &c, 1, step);
        onnx_initializer_add(m, z, ONNX_INT8, &c, 1, zeros);
    }
    onnx_node *dq = onnx_node_add(m, "DequantizeLinear", out, (const char *const[]){q, s, z}, 3,
                                  (const char *const[]){out}, 1);
    if (nd->wq.channels > 1) onnx_attr_int(dq, "axis", tr ? 1 : 0);
    free(tmp), free(codes), free(c8), free(zeros);
    return LSQ_OK;
}

lsq_status onnx_export(const lsq_net *net, const char *path, lsq_err *err)
{
    lsq_status st = deploy_check_layers(net, DEPLOY_ONNX, err);
    if (st != LSQ_OK) return st;
    onnx_model *m = onnx_model_new("lsqd");
    int *rank = calloc((size_t)net->n_nodes, sizeof *rank);
    char (*val)[160] = calloc((size_t)net->n_nodes, sizeof *val);
    if (!m || !rank || !val) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory exporting ONNX");
        goto out;
    }
    const net_node *in0 = &net->nodes[0];
    onnx_input_add(m, "input", ONNX_FLOAT, ONNX_DIMS(-1, in0->c, in0->h, in0->w));
    snprintf(val[0], sizeof val[0], "input");
    rank[0] = 4;
    for (int i = 1; i < net->n_nodes && st == LSQ_OK; i++) {
        const net_node *nd = &net->nodes[i];
        const char *x = val[nd->in[0]];
        int xr = rank[nd->in[0]];
        snprintf(val[i], sizeof val[i], "%s", nd->name);
        rank[i] = xr;
        switch (nd->op) {
        case OP_CONV:
        case OP_LINEAR: {
            char xin[160], xf[160], w[160], b[160] = "";
            if (nd->op == OP_LINEAR && xr != 2) {
                snprintf(xf, sizeof xf, "%s.flat", nd->name);
                onnx_node *f = onnx_node_add(m, "Flatten", xf, (const char *const[]){x}, 1,
                                             (const char *const[]){xf}, 1);
                onnx_attr_int(f, "axis", 1);
                x = xf;
            }
            if (nd->aq.on) quant_input(m, net, nd, x, xin, sizeof xin);
            else snprintf(xin, sizeof xin, "%s", x);
            if ((st = weight_input(m, net, nd, w, sizeof w, err)) != LSQ_OK) break;
            if (nd->bv >= 0) {
                snprintf(b, sizeof b, "%s.bias", nd->name);
                add_view_init(m, net, nd->bv, b);
            }
            int nin = nd->bv >= 0 ? 3 : 2;
            if (nd->op == OP_CONV) {
                onnx_node *c = onnx_node_add(m, "Conv", val[i], (const char *const[]){xin, w, b},
                                             nin, (const char *const[]){val[i]}, 1);
                onnx_attr_ints(c, "kernel_shape", ONNX_DIMS(nd->kernel, nd->kernel));
                onnx_attr_ints(c, "strides", ONNX_DIMS(nd->stride, nd->stride));
                onnx_attr_ints(c, "pads", ONNX_DIMS(nd->pad, nd->pad, nd->pad, nd->pad));
                rank[i] = 4;
            } else {
                /* MatMul + Add (onnxruntime keeps the Q/DQ form of
                 * this pair exact; see onnx_pb.h) */
                char mm[180];
                snprintf(mm, sizeof mm, "%s.matmul", nd->name);
                const char *o = nd->bv >= 0 ? mm : val[i];
                onnx_node_add(m, "MatMul", o, (const char *const[]){xin, w}, 2,
                              (const char *const[]){o}, 1);
                if (nd->bv >= 0)
                    onnx_node_add(m, "Add", val[i], (const char *const[]){mm, b}, 2,
                                  (const char *const[]){val[i]}, 1);
                rank[i] = 2;
            }
            break;
        }
        case OP_BN: {
            char g[160], be[160], mu[160], var[160];
            snprintf(g, sizeof g, "%s.weight", nd->name);
            snprintf(be, sizeof be, "%s.bias", nd->name);
            snprintf(mu, sizeof mu, "%s.running_mean", nd->name);
            snprintf(var, sizeof var, "%s.running_var", nd->name);
            add_view_init(m, net, nd->gammav, g);
            add_view_init(m, net, nd->betav, be);
            add_view_init(m, net, nd->rmeanv, mu);
            add_view_init(m, net, nd->rvarv, var);
            onnx_node *b = onnx_node_add(m, "BatchNormalization", val[i],
                                         (const char *const[]){x, g, be, mu, var}, 5,
                                         (const char *const[]){val[i]}, 1);
            onnx_attr_float(b, "epsilon", EXPORT_BN_EPS);
            break;
        }
        case OP_RELU:
            onnx_node_add(m, "Relu", val[i], (const char *const[]){x}, 1,
                          (const char *const[]){val[i]}, 1);
            break;
        case OP_MAXPOOL: {
            onnx_node *p = onnx_node_add(m, "MaxPool", val[i], (const char *const[]){x}, 1,
                                         (const char *const[]){val[i]}, 1);
            onnx_attr_ints(p, "kernel_shape", ONNX_DIMS(nd->kernel, nd->kernel));
            onnx_attr_ints(p, "strides", ONNX_DIMS(nd->stride, nd->stride));
            break;
        }
        case OP_AVGPOOL:
            onnx_node_add(m, "GlobalAveragePool", val[i], (const char *const[]){x}, 1,
                          (const char *const[]){val[i]}, 1);
            rank[i] = 4;
            break;
        case OP_ADD: {
            const char *y = val[nd->in[1]];
            onnx_node_add(m, "Add", val[i], (const char *const[]){x, y}, 2,
                          (const char *const[]){val[i]}, 1);
            break;
        }
        case OP_FLATTEN: {
            onnx_node *f = onnx_node_add(m, "Flatten", val[i], (const char *const[]){x}, 1,
                                         (const char *const[]){val[i]}, 1);
            onnx_attr_int(f, "axis", 1);
            rank[i] = 2;
            break;
        }
        default:
            break;
        }
    }
    if (st != LSQ_OK) goto out;
    {
        const char *last = val[net->output];
        if (rank[net->output] != 2) {
            onnx_node *f = onnx_node_add(m, "Flatten", "logits", (const char *const[]){last}, 1,
                                         (const char *const[]){"logits"}, 1);
            onnx_attr_int(f, "axis", 1);
        } else {
            onnx_node_add(m, "Identity", "logits", (const char *const[]){last}, 1,
                          (const char *const[]){"logits"}, 1);
        }
        onnx_output_add(m, "logits", ONNX_FLOAT, ONNX_DIMS(-1, net->classes));
    }
    st = onnx_model_save(m, path, err);
out:
    onnx_model_free(m);
    free(rank);
    free(val);
    return st;
}
