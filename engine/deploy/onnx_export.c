/* ONNX export of a (fake-)quantized network; see onnx_export.h.
 *
 * The model is a tree of protoc-c structs (onnx/onnx.pb-c.h). Every block
 * the tree points to (structs, names, dims, tensor bytes) comes from the
 * builder's arena and is freed in one go once the model is packed; a failed
 * allocation is remembered and reported when packing, so the graph-building
 * code below reads straight through. */
#include "deploy/onnx_export.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "core/file.h"
#include "deploy/support.h"
#include "onnx/onnx.pb-c.h"
#include "quant/quant.h"

#define EXPORT_BN_EPS 1e-5f /* net.c's BN_EPS */
#define MAX_ATTRS 5          /* attributes of one node (a dilated grouped Conv has five) */

/* ---- the builder: an arena and the growing lists of the graph ---- */

typedef struct {
    void **blocks;
    size_t n_blocks, cap_blocks;
    int oom;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    Onnx__ValueInfoProto **inputs, **outputs;
    size_t n_inputs, n_outputs, cap_inputs, cap_outputs;
} onnx_builder;

/* Zeroed memory owned by the arena; NULL (and b->oom) on failure. */
static void *ob_alloc(onnx_builder *b, size_t size)
{
    if (b->oom) return NULL;
    if (b->n_blocks == b->cap_blocks) {
        size_t cap = b->cap_blocks ? 2 * b->cap_blocks : 256;
        void **nb = realloc(b->blocks, cap * sizeof *nb);
        if (!nb) {
            b->oom = 1;
            return NULL;
        }
        b->blocks = nb, b->cap_blocks = cap;
    }
    void *p = calloc(1, size ? size : 1);
    if (!p) {
        b->oom = 1;
        return NULL;
    }
    b->blocks[b->n_blocks++] = p;
    return p;
}

static char *ob_str(onnx_builder *b, const char *s)
{
    size_t n = strlen(s);
    char *p = ob_alloc(b, n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

/* Appends p to the list (*list, *n, *cap); drops it when out of memory. */
static void ob_push(onnx_builder *b, void ***list, size_t *n, size_t *cap, void *p)
{
    if (!p || b->oom) return;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 32;
        void **nl = realloc(*list, c * sizeof *nl);
        if (!nl) {
            b->oom = 1;
            return;
        }
        *list = nl, *cap = c;
    }
    (*list)[(*n)++] = p;
}

static void ob_free(onnx_builder *b)
{
    for (size_t i = 0; i < b->n_blocks; i++) free(b->blocks[i]);
    free(b->blocks);
    free(b->nodes);
    free(b->inits);
    free(b->inputs);
    free(b->outputs);
    memset(b, 0, sizeof *b);
}

static char **ob_names(onnx_builder *b, const char *const *names, int n)
{
    char **v = ob_alloc(b, (size_t)n * sizeof *v);
    for (int i = 0; v && i < n; i++) v[i] = ob_str(b, names[i]);
    return v;
}

/* Appends a node (in topological order); NULL when out of memory. Its
 * attributes are added with ob_attr_*. */
static Onnx__NodeProto *ob_node(onnx_builder *b, const char *op_type, const char *name,
                                const char *const *inputs, int n_in, const char *const *outputs,
                                int n_out)
{
    Onnx__NodeProto *n = ob_alloc(b, sizeof *n);
    if (!n) return NULL;
    onnx__node_proto__init(n);
    n->op_type = ob_str(b, op_type);
    n->name = ob_str(b, name);
    n->n_input = (size_t)n_in;
    n->input = ob_names(b, inputs, n_in);
    n->n_output = (size_t)n_out;
    n->output = ob_names(b, outputs, n_out);
    n->attribute = ob_alloc(b, MAX_ATTRS * sizeof *n->attribute);
    ob_push(b, (void ***)&b->nodes, &b->n_nodes, &b->cap_nodes, n);
    return n;
}

static Onnx__AttributeProto *ob_attr(onnx_builder *b, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type)
{
    if (!n || !n->attribute) return NULL;
    assert(n->n_attribute < MAX_ATTRS); /* raise MAX_ATTRS for a node with more */
    Onnx__AttributeProto *a = ob_alloc(b, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = ob_str(b, name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void ob_attr_int(onnx_builder *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->has_i = 1, a->i = v;
}

static void ob_attr_float(onnx_builder *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->has_f = 1, a->f = v;
}

/* An INTS attribute of the same value twice (kernel, stride) or four times
 * (pads). */
static void ob_attr_ints(onnx_builder *b, Onnx__NodeProto *n, const char *name, int64_t v,
                         int count)
{
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (!a) return;
    a->ints = ob_alloc(b, (size_t)count * sizeof *a->ints);
    if (!a->ints) return;
    for (int i = 0; i < count; i++) a->ints[i] = v;
    a->n_ints = (size_t)count;
}

static size_t dtype_size(int dt)
{
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return 1;
    default: return 0;
    }
}

/* A named constant tensor of the graph: dims (ndim 0: a scalar) and
 * prod(dims) elements of dt, copied as little-endian raw_data (the host's
 * order on x86 and ARM). */
static void ob_init(onnx_builder *b, const char *name, int dt, const int64_t *dims, int ndim,
                    const void *data)
{
    Onnx__TensorProto *t = ob_alloc(b, sizeof *t);
    if (!t) return;
    onnx__tensor_proto__init(t);
    size_t count = 1;
    t->dims = ob_alloc(b, (size_t)(ndim ? ndim : 1) * sizeof *t->dims);
    if (!t->dims) return;
    for (int i = 0; i < ndim; i++) {
        t->dims[i] = dims[i];
        count *= (size_t)dims[i];
    }
    t->n_dims = (size_t)ndim;
    t->has_data_type = 1;
    t->data_type = dt;
    t->name = ob_str(b, name);
    size_t bytes = count * dtype_size(dt);
    t->raw_data.data = ob_alloc(b, bytes);
    if (!t->raw_data.data) return;
    memcpy(t->raw_data.data, data, bytes);
    t->raw_data.len = bytes;
    t->has_raw_data = 1;
    ob_push(b, (void ***)&b->inits, &b->n_inits, &b->cap_inits, t);
}

static void ob_scalar_f(onnx_builder *b, const char *name, float v)
{
    ob_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, NULL, 0, &v);
}

/* A float tensor graph input or output; a negative dimension is the
 * symbolic batch dimension "N". */
static Onnx__ValueInfoProto *ob_value_info(onnx_builder *b, const char *name, const int64_t *dims,
                                           int ndim)
{
    Onnx__ValueInfoProto *vi = ob_alloc(b, sizeof *vi);
    Onnx__TypeProto *tp = ob_alloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ob_alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *sh = ob_alloc(b, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dv = ob_alloc(b, (size_t)ndim * sizeof *dv);
    if (!vi || !tp || !tt || !sh || !dv) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = ob_alloc(b, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = ob_str(b, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        dv[i] = d;
    }
    sh->n_dim = (size_t)ndim;
    sh->dim = dv;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = ob_str(b, name);
    vi->type = tp;
    return vi;
}

/* ---- the network ---- */

static const float *view_data(const lsq_net *net, int v)
{
    const net_view *vw = &net->views[v];
    return (vw->in_state ? net->state : net->params) + vw->off;
}

static void add_view_init(onnx_builder *b, const lsq_net *net, int v, const char *name)
{
    const net_view *vw = &net->views[v];
    int64_t d[4];
    for (int i = 0; i < vw->ndim; i++) d[i] = vw->dims[i];
    ob_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, d, vw->ndim, view_data(net, v));
}

#define NAMES(...) (const char *const[]){__VA_ARGS__}, \
    (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* The input quantizer of a conv/linear: writes the dequantized value's name
 * into out (Clip -> QuantizeLinear -> DequantizeLinear, with Sub / Add for
 * an LSQ+ offset). */
static void quant_input(onnx_builder *b, const lsq_net *net, const net_node *nd, const char *x,
                        char *out, size_t out_sz)
{
    char n1[160], n2[160], n3[160], n4[160], sname[160], zname[160], lo[160], hi[160], beta[160];
    float s = view_data(net, nd->aq.step_view)[0];
    const quant_range *r = &nd->aq.r;
    snprintf(sname, sizeof sname, "%s.input.scale", nd->name);
    snprintf(zname, sizeof zname, "%s.input.zero", nd->name);
    snprintf(lo, sizeof lo, "%s.input.min", nd->name);
    snprintf(hi, sizeof hi, "%s.input.max", nd->name);
    ob_scalar_f(b, sname, s);
    ob_scalar_f(b, lo, (float)-r->qn * s);
    ob_scalar_f(b, hi, (float)r->qp * s);
    const uint8_t zero = 0;
    ob_init(b, zname,
            r->is_signed ? ONNX__TENSOR_PROTO__DATA_TYPE__INT8 : ONNX__TENSOR_PROTO__DATA_TYPE__UINT8,
            NULL, 0, &zero);
    const char *src = x;
    if (nd->aq.offset_view >= 0) {
        snprintf(beta, sizeof beta, "%s.input.offset", nd->name);
        ob_scalar_f(b, beta, view_data(net, nd->aq.offset_view)[0]);
        snprintf(n1, sizeof n1, "%s.input.centered", nd->name);
        ob_node(b, "Sub", n1, NAMES(x, beta), NAMES(n1));
        src = n1;
    }
    snprintf(n2, sizeof n2, "%s.input.clip", nd->name);
    snprintf(n3, sizeof n3, "%s.input.codes", nd->name);
    snprintf(n4, sizeof n4, "%s.input.dq", nd->name);
    ob_node(b, "Clip", n2, NAMES(src, lo, hi), NAMES(n2));
    ob_node(b, "QuantizeLinear", n3, NAMES(n2, sname, zname), NAMES(n3));
    ob_node(b, "DequantizeLinear", n4, NAMES(n3, sname, zname), NAMES(n4));
    if (nd->aq.offset_view >= 0) {
        snprintf(out, out_sz, "%s.input.value", nd->name);
        ob_node(b, "Add", out, NAMES(n4, beta), NAMES(out));
    } else {
        snprintf(out, out_sz, "%s", n4);
    }
}

/* The weight of a conv/linear as float: codes + DequantizeLinear, or the
 * float initializer. Writes its name into out. */
static lsq_status weight_input(onnx_builder *b, const lsq_net *net, const net_node *nd, char *out,
                               size_t out_sz, lsq_err *err)
{
    const net_view *vw = &net->views[nd->wv];
    int64_t d[4];
    for (int i = 0; i < vw->ndim; i++) d[i] = vw->dims[i];
    /* linear weights go in as (IN, OUT) for MatMul */
    const int tr = nd->op == OP_LINEAR;
    const size_t rows = (size_t)vw->dims[0], cols = vw->count / rows;
    if (tr) d[0] = (int64_t)cols, d[1] = (int64_t)rows;
    const size_t n = vw->count;
    if (!nd->wq.on) {
        snprintf(out, out_sz, "%s.weight", nd->name);
        const float *w = view_data(net, nd->wv);
        float *t = malloc(n * sizeof *t);
        if (!t) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory exporting %s", vw->name);
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++) t[tr ? c * rows + r : r * cols + c] = w[r * cols + c];
        ob_init(b, out, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, d, vw->ndim, t);
        free(t);
        return LSQ_OK;
    }
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
    ob_init(b, q, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, d, vw->ndim, c8);
    const int64_t ch = nd->wq.channels;
    const int per_channel = ch > 1;
    ob_init(b, s, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, &ch, per_channel, step);
    ob_init(b, z, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, &ch, per_channel, zeros);
    Onnx__NodeProto *dq = ob_node(b, "DequantizeLinear", out, NAMES(q, s, z), NAMES(out));
    if (per_channel) ob_attr_int(b, dq, "axis", tr ? 1 : 0);
    free(tmp), free(codes), free(c8), free(zeros);
    return LSQ_OK;
}

/* The image as the first layers read it, its name written into out: the
 * graph input "input" (pixels / 255), or, when the layer list has
 * "normalize", the loader's normalised input redone float for float as the
 * loader computes it (data.h): the pixel, input * 255 (exact for every
 * p / 255.0f), times scale[c], plus bias[c], with loader_normalize_coefs's
 * coefficients as (C, 1, 1) initializers. Sub(mean) / Div(std) would be the
 * same up to rounding but not bit for bit. */
static void image_input(onnx_builder *b, const lsq_net *net, char *out, size_t out_sz)
{
    if (!net->norm_on) {
        snprintf(out, out_sz, "input");
        return;
    }
    const int c = net->nodes[0].c;
    float scale[NET_NORM_MAX], bias[NET_NORM_MAX];
    loader_normalize_coefs(scale, bias, net->norm_mean, net->norm_std, c);
    const int64_t d[3] = {c, 1, 1};
    ob_scalar_f(b, "input.pixel_scale", 255.0f);
    ob_init(b, "input.norm_scale", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, d, 3, scale);
    ob_init(b, "input.norm_bias", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, d, 3, bias);
    ob_node(b, "Mul", "input.pixels", NAMES("input", "input.pixel_scale"), NAMES("input.pixels"));
    ob_node(b, "Mul", "input.scaled", NAMES("input.pixels", "input.norm_scale"),
            NAMES("input.scaled"));
    snprintf(out, out_sz, "input.normalized");
    ob_node(b, "Add", out, NAMES("input.scaled", "input.norm_bias"), NAMES(out));
}

/* Value x of rank xr (4: (N, C, H, W); 2: (N, C), after a flatten or a
 * linear layer) as the rank `want` that its reader needs: a rank-2 value
 * gets Unsqueeze to (N, C, 1, 1), and a rank-4 one, which beside a rank-2
 * value has height and width 1, gets Flatten. The engine sees both as
 * (C, 1, 1). Returns x, or buf holding the new value's name (tag, the
 * reader's name, keeps it unique). */
static const char *to_rank(onnx_builder *b, const char *x, int xr, int want, const char *tag,
                           char *buf, size_t buf_sz)
{
    if (xr == want) return x;
    snprintf(buf, buf_sz, "%s.%dd", tag, want);
    if (want == 4) {
        static const int64_t axes[2] = {2, 3};
        const int64_t n = 2;
        char ax[200];
        snprintf(ax, sizeof ax, "%s.axes", buf);
        ob_init(b, ax, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &n, 1, axes);
        ob_node(b, "Unsqueeze", buf, NAMES(x, ax), NAMES(buf));
    } else {
        ob_attr_int(b, ob_node(b, "Flatten", buf, NAMES(x), NAMES(buf)), "axis", 1);
    }
    return buf;
}

/* A pooling window's attributes: kernel_shape, strides, and pads when
 * there are any (ONNX's default is none). */
static void pool_attrs(onnx_builder *b, Onnx__NodeProto *p, const net_node *nd)
{
    ob_attr_ints(b, p, "kernel_shape", nd->kernel, 2);
    ob_attr_ints(b, p, "strides", nd->stride, 2);
    if (nd->pad) ob_attr_ints(b, p, "pads", nd->pad, 4);
}

/* The graph of net into b. Every node's output is one value, named after
 * the node, which any number of later nodes read (a DAG). */
static lsq_status build_graph(onnx_builder *b, const lsq_net *net, lsq_err *err)
{
    lsq_status st = deploy_check_layers(net, DEPLOY_ONNX, err);
    if (st != LSQ_OK) return st;
    int *rank = calloc((size_t)net->n_nodes, sizeof *rank);
    char (*val)[160] = calloc((size_t)net->n_nodes, sizeof *val);
    if (!rank || !val) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory exporting ONNX");
        goto out;
    }
    const net_node *in0 = &net->nodes[0];
    const int64_t in_dims[4] = {-1, in0->c, in0->h, in0->w};
    ob_push(b, (void ***)&b->inputs, &b->n_inputs, &b->cap_inputs,
            ob_value_info(b, "input", in_dims, 4));
    image_input(b, net, val[0], sizeof val[0]);
    rank[0] = 4;
    for (int i = 1; i < net->n_nodes && st == LSQ_OK; i++) {
        const net_node *nd = &net->nodes[i];
        const char *x = val[nd->in[0]];
        int xr = rank[nd->in[0]];
        char x4[176];
        if (nd->op == OP_CONV || nd->op == OP_MAXPOOL || nd->op == OP_AVGPOOL) {
            x = to_rank(b, x, xr, 4, nd->name, x4, sizeof x4);
            xr = 4;
        }
        snprintf(val[i], sizeof val[i], "%s", nd->name);
        rank[i] = xr;
        switch (nd->op) {
        case OP_CONV:
        case OP_LINEAR: {
            char xin[176], xf[176], w[160], bias[176] = "";
            if (nd->op == OP_LINEAR && xr != 2) {
                snprintf(xf, sizeof xf, "%s.flat", nd->name);
                ob_attr_int(b, ob_node(b, "Flatten", xf, NAMES(x), NAMES(xf)), "axis", 1);
                x = xf;
            }
            if (nd->aq.on) quant_input(b, net, nd, x, xin, sizeof xin);
            else snprintf(xin, sizeof xin, "%s", x);
            if ((st = weight_input(b, net, nd, w, sizeof w, err)) != LSQ_OK) break;
            /* a quantized conv's bias is an Add after it, (C, 1, 1): as
             * Conv's third input beside DequantizeLinear weights,
             * onnxruntime's default optimizations round it to an int32
             * multiple of s_in * s_w */
            const int bias_apart = nd->op == OP_CONV && nd->wq.on && nd->bv >= 0;
            if (nd->bv >= 0) {
                snprintf(bias, sizeof bias, "%s.bias", nd->name);
                if (bias_apart) {
                    const int64_t bd[3] = {nd->out_ch, 1, 1};
                    ob_init(b, bias, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, bd, 3,
                            view_data(net, nd->bv));
                } else {
                    add_view_init(b, net, nd->bv, bias);
                }
            }
            if (nd->op == OP_CONV) {
                char cv[180];
                snprintf(cv, sizeof cv, "%s.conv", nd->name);
                const char *co = bias_apart ? cv : val[i];
                const char *const ins[3] = {xin, w, bias};
                Onnx__NodeProto *c = ob_node(b, "Conv", co, ins,
                                             nd->bv >= 0 && !bias_apart ? 3 : 2, NAMES(co));
                ob_attr_ints(b, c, "kernel_shape", nd->kernel, 2);
                ob_attr_ints(b, c, "strides", nd->stride, 2);
                ob_attr_ints(b, c, "pads", nd->pad, 4);
                if (nd->dilation > 1) ob_attr_ints(b, c, "dilations", nd->dilation, 2);
                if (nd->groups > 1) ob_attr_int(b, c, "group", nd->groups);
                if (bias_apart) ob_node(b, "Add", val[i], NAMES(cv, bias), NAMES(val[i]));
                rank[i] = 4;
            } else {
                /* MatMul + Add: onnxruntime keeps the Q/DQ form of this
                 * pair exact */
                char mm[180];
                snprintf(mm, sizeof mm, "%s.matmul", nd->name);
                const char *o = nd->bv >= 0 ? mm : val[i];
                ob_node(b, "MatMul", o, NAMES(xin, w), NAMES(o));
                if (nd->bv >= 0) ob_node(b, "Add", val[i], NAMES(mm, bias), NAMES(val[i]));
                rank[i] = 2;
            }
            break;
        }
        case OP_BN: {
            char g[176], be[176], mu[176], var[176];
            snprintf(g, sizeof g, "%s.weight", nd->name);
            snprintf(be, sizeof be, "%s.bias", nd->name);
            snprintf(mu, sizeof mu, "%s.running_mean", nd->name);
            snprintf(var, sizeof var, "%s.running_var", nd->name);
            add_view_init(b, net, nd->gammav, g);
            add_view_init(b, net, nd->betav, be);
            add_view_init(b, net, nd->rmeanv, mu);
            add_view_init(b, net, nd->rvarv, var);
            ob_attr_float(b, ob_node(b, "BatchNormalization", val[i], NAMES(x, g, be, mu, var),
                                     NAMES(val[i])),
                          "epsilon", EXPORT_BN_EPS);
            break;
        }
        case OP_RELU:
            ob_node(b, "Relu", val[i], NAMES(x), NAMES(val[i]));
            break;
        case OP_MAXPOOL:
            /* padding never wins a max: as the engine, over the cells inside */
            pool_attrs(b, ob_node(b, "MaxPool", val[i], NAMES(x), NAMES(val[i])), nd);
            break;
        case OP_AVGPOOL:
            if (nd->kernel) {
                /* the sum over the window's cells inside the input, divided
                 * by their count, or by kernel^2 with count_include_pad */
                Onnx__NodeProto *p = ob_node(b, "AveragePool", val[i], NAMES(x), NAMES(val[i]));
                pool_attrs(b, p, nd);
                if (nd->count_include_pad) ob_attr_int(b, p, "count_include_pad", 1);
            } else {
                ob_node(b, "GlobalAveragePool", val[i], NAMES(x), NAMES(val[i]));
            }
            break;
        case OP_CLIP: {
            /* opset 13: the bounds are inputs; a missing one is "" (none) */
            char lo[176], hi[176];
            const char *ins[3] = {x, "", ""};
            int n_in = 1;
            if (isfinite(nd->lo)) {
                snprintf(lo, sizeof lo, "%s.min", nd->name);
                ob_scalar_f(b, lo, nd->lo);
                ins[1] = lo, n_in = 2;
            }
            if (isfinite(nd->hi)) {
                snprintf(hi, sizeof hi, "%s.max", nd->name);
                ob_scalar_f(b, hi, nd->hi);
                ins[2] = hi, n_in = 3;
            }
            ob_node(b, "Clip", val[i], ins, n_in, NAMES(val[i]));
            break;
        }
        case OP_LEAKYRELU:
            ob_attr_float(b, ob_node(b, "LeakyRelu", val[i], NAMES(x), NAMES(val[i])), "alpha",
                          nd->alpha);
            break;
        case OP_SCALE: {
            char v[176];
            snprintf(v, sizeof v, "%s.value", nd->name);
            ob_scalar_f(b, v, nd->value);
            ob_node(b, "Mul", val[i], NAMES(x, v), NAMES(val[i]));
            break;
        }
        case OP_ADD:
        case OP_CONCAT: {
            /* inputs of one rank: 2 when any is (a flatten's or a linear's
             * output beside 1x1 maps) */
            const char *ins[NET_MAX_INPUTS];
            char conv[NET_MAX_INPUTS][176];
            int r = 4;
            for (int t = 0; t < nd->n_in; t++)
                if (rank[nd->in[t]] == 2) r = 2;
            for (int t = 0; t < nd->n_in; t++) {
                char tag[96];
                snprintf(tag, sizeof tag, "%s.in%d", nd->name, t);
                ins[t] = to_rank(b, val[nd->in[t]], rank[nd->in[t]], r, tag, conv[t],
                                 sizeof conv[t]);
            }
            Onnx__NodeProto *o = ob_node(b, nd->op == OP_ADD ? "Add" : "Concat", val[i], ins,
                                         nd->n_in, NAMES(val[i]));
            if (nd->op == OP_CONCAT) ob_attr_int(b, o, "axis", 1);
            rank[i] = r;
            break;
        }
        case OP_FLATTEN:
            ob_attr_int(b, ob_node(b, "Flatten", val[i], NAMES(x), NAMES(val[i])), "axis", 1);
            rank[i] = 2;
            break;
        default:
            break;
        }
    }
    if (st != LSQ_OK) goto out;
    {
        const char *last = val[net->output];
        if (rank[net->output] != 2)
            ob_attr_int(b, ob_node(b, "Flatten", "logits", NAMES(last), NAMES("logits")), "axis", 1);
        else
            ob_node(b, "Identity", "logits", NAMES(last), NAMES("logits"));
        const int64_t out_dims[2] = {-1, net->classes};
        ob_push(b, (void ***)&b->outputs, &b->n_outputs, &b->cap_outputs,
                ob_value_info(b, "logits", out_dims, 2));
    }
out:
    free(rank);
    free(val);
    return st;
}

lsq_status onnx_export_bytes(const lsq_net *net, uint8_t **out, size_t *len, lsq_err *err)
{
    *out = NULL;
    *len = 0;
    onnx_builder b;
    memset(&b, 0, sizeof b);
    lsq_status st = build_graph(&b, net, err);
    if (st != LSQ_OK) goto done;
    if (b.oom) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory building the ONNX model");
        goto done;
    }
    Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
    graph.name = "lsqd";
    graph.n_node = b.n_nodes, graph.node = b.nodes;
    graph.n_initializer = b.n_inits, graph.initializer = b.inits;
    graph.n_input = b.n_inputs, graph.input = b.inputs;
    graph.n_output = b.n_outputs, graph.output = b.outputs;
    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    opset.domain = "";
    opset.has_version = 1;
    opset.version = ONNX_EXPORT_OPSET;
    Onnx__OperatorSetIdProto *opsets[1] = {&opset};
    Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
    model.has_ir_version = 1;
    model.ir_version = ONNX_EXPORT_IR_VERSION;
    model.producer_name = "lsqd";
    model.graph = &graph;
    model.n_opset_import = 1;
    model.opset_import = opsets;
    size_t n = onnx__model_proto__get_packed_size(&model);
    uint8_t *bytes = malloc(n ? n : 1);
    if (!bytes) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory encoding the ONNX model");
        goto done;
    }
    size_t packed = onnx__model_proto__pack(&model, bytes);
    if (packed != n) {
        free(bytes);
        st = lsq_err_set(err, LSQ_ERR_INTERNAL, NULL,
                         "protobuf-c packed %zu bytes of a %zu-byte ONNX model", packed, n);
        goto done;
    }
    *out = bytes;
    *len = n;
done:
    ob_free(&b);
    return st;
}

lsq_status onnx_export(const lsq_net *net, const char *path, lsq_err *err)
{
    uint8_t *bytes;
    size_t len;
    lsq_status st = onnx_export_bytes(net, &bytes, &len, err);
    if (st != LSQ_OK) return st;
    st = lsq_file_write_atomic(path, bytes, len, "output file", err);
    free(bytes);
    return st;
}
