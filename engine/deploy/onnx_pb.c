/* Protobuf wire-format writer and ONNX model builder (see onnx_pb.h).
 *
 * Messages are built bottom-up: a sub-message is written into its own
 * pb_buf, then appended to its parent as a length-delimited field. Nodes
 * stay open (each keeps its own buffer) until the model is encoded, so that
 * attributes can be added after the node. Repeated scalar fields are written
 * unpacked, the proto2 default that onnx.proto uses. The numbers below are
 * the field numbers of onnx.proto. */
#include "deploy/onnx_pb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

/* ModelProto */
enum { MODEL_IR_VERSION = 1, MODEL_PRODUCER_NAME = 2, MODEL_GRAPH = 7,
       MODEL_OPSET_IMPORT = 8 };
/* OperatorSetIdProto */
enum { OPSET_DOMAIN = 1, OPSET_VERSION = 2 };
/* GraphProto */
enum { GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INITIALIZER = 5,
       GRAPH_INPUT = 11, GRAPH_OUTPUT = 12 };
/* NodeProto */
enum { NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP_TYPE = 4,
       NODE_ATTRIBUTE = 5 };
/* AttributeProto and its AttributeType values */
enum { ATTR_NAME = 1, ATTR_F = 2, ATTR_I = 3, ATTR_T = 5, ATTR_INTS = 8,
       ATTR_TYPE = 20 };
enum { ATTR_TYPE_FLOAT = 1, ATTR_TYPE_INT = 2, ATTR_TYPE_TENSOR = 4,
       ATTR_TYPE_INTS = 7 };
/* TensorProto */
enum { TENSOR_DIMS = 1, TENSOR_DATA_TYPE = 2, TENSOR_NAME = 8,
       TENSOR_RAW_DATA = 9 };
/* ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto(.Dimension) */
enum { VALUE_NAME = 1, VALUE_TYPE = 2 };
enum { TYPE_TENSOR = 1 };
enum { TTYPE_ELEM_TYPE = 1, TTYPE_SHAPE = 2 };
enum { SHAPE_DIM = 1 };
enum { DIM_VALUE = 1, DIM_PARAM = 2 };

/* ---- wire format ---- */

static int buf_reserve(pb_buf *b, size_t extra)
{
    if (b->oom)
        return 0;
    if (b->len + extra <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

static void buf_append(pb_buf *b, const void *p, size_t n)
{
    if (n && buf_reserve(b, n)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
}

void pb_buf_free(pb_buf *b)
{
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

void pb_put_varint(pb_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    buf_append(b, tmp, n);
}

static void put_tag(pb_buf *b, int field, int wire)
{
    pb_put_varint(b, (uint64_t)field << 3 | (uint64_t)wire);
}

void pb_put_int(pb_buf *b, int field, int64_t v)
{
    put_tag(b, field, WIRE_VARINT);
    /* negative values are their 64-bit two's complement (10 bytes) */
    pb_put_varint(b, (uint64_t)v);
}

void pb_put_float(pb_buf *b, int field, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16),
                     (uint8_t)(u >> 24)};
    put_tag(b, field, WIRE_I32);
    buf_append(b, le, 4);
}

void pb_put_bytes(pb_buf *b, int field, const void *p, size_t n)
{
    put_tag(b, field, WIRE_LEN);
    pb_put_varint(b, n);
    buf_append(b, p, n);
}

void pb_put_str(pb_buf *b, int field, const char *s)
{
    pb_put_bytes(b, field, s, strlen(s));
}

void pb_put_msg(pb_buf *b, int field, const pb_buf *msg)
{
    if (msg->oom)
        b->oom = 1;
    pb_put_bytes(b, field, msg->data, msg->len);
}

/* ---- ONNX builder ---- */

struct onnx_node {
    onnx_model *model;
    pb_buf buf; /* NodeProto body */
};

struct onnx_model {
    char *graph_name;
    onnx_node **nodes;
    int n_nodes, cap_nodes;
    pb_buf inits, inputs, outputs; /* encoded graph fields 5, 11, 12 */
    lsq_status status;             /* first failure while building */
    char message[256];
};

static void model_fail(onnx_model *m, lsq_status st, const char *fmt,
                       const char *what)
{
    if (m->status != LSQ_OK)
        return;
    m->status = st;
    snprintf(m->message, sizeof m->message, fmt, what ? what : "");
}

onnx_model *onnx_model_new(const char *graph_name)
{
    onnx_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->graph_name = strdup(graph_name ? graph_name : "");
    if (!m->graph_name) {
        free(m);
        return NULL;
    }
    return m;
}

void onnx_model_free(onnx_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_nodes; i++) {
        pb_buf_free(&m->nodes[i]->buf);
        free(m->nodes[i]);
    }
    free(m->nodes);
    pb_buf_free(&m->inits);
    pb_buf_free(&m->inputs);
    pb_buf_free(&m->outputs);
    free(m->graph_name);
    free(m);
}

onnx_node *onnx_node_add(onnx_model *m, const char *op_type, const char *name,
                         const char *const *inputs, int n_inputs,
                         const char *const *outputs, int n_outputs)
{
    if (!m)
        return NULL;
    if (!op_type || !*op_type || n_inputs < 0 || n_outputs < 1) {
        model_fail(m, LSQ_ERR_INVALID,
                   "node '%s' needs an op_type and at least one output",
                   name);
        return NULL;
    }
    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes ? 2 * m->cap_nodes : 16;
        onnx_node **nn = realloc(m->nodes, (size_t)cap * sizeof *nn);
        if (!nn) {
            model_fail(m, LSQ_ERR_NOMEM, "out of memory adding node '%s'", name);
            return NULL;
        }
        m->nodes = nn;
        m->cap_nodes = cap;
    }
    onnx_node *n = calloc(1, sizeof *n);
    if (!n) {
        model_fail(m, LSQ_ERR_NOMEM, "out of memory adding node '%s'", name);
        return NULL;
    }
    n->model = m;
    for (int i = 0; i < n_inputs; i++)
        pb_put_str(&n->buf, NODE_INPUT, inputs[i] ? inputs[i] : "");
    for (int i = 0; i < n_outputs; i++)
        pb_put_str(&n->buf, NODE_OUTPUT, outputs[i] ? outputs[i] : "");
    if (name && *name)
        pb_put_str(&n->buf, NODE_NAME, name);
    pb_put_str(&n->buf, NODE_OP_TYPE, op_type);
    m->nodes[m->n_nodes++] = n;
    return n;
}

static size_t dtype_size(onnx_dtype dt)
{
    switch (dt) {
    case ONNX_FLOAT: case ONNX_INT32: return 4;
    case ONNX_UINT8: case ONNX_INT8: return 1;
    case ONNX_INT64: return 8;
    }
    return 0;
}

/* A TensorProto with raw_data into t; 0 (and m failed) on a bad argument. */
static int encode_tensor(pb_buf *t, onnx_model *m, const char *name,
                         onnx_dtype dt, const int64_t *dims, int ndims,
                         const void *data)
{
    size_t esz = dtype_size(dt), count = 1;
    if (!esz || ndims < 0 || (ndims > 0 && !dims)) {
        model_fail(m, LSQ_ERR_INVALID, "tensor '%s': bad data type or rank",
                   name);
        return 0;
    }
    for (int i = 0; i < ndims; i++) {
        if (dims[i] < 0) {
            model_fail(m, LSQ_ERR_INVALID,
                       "tensor '%s': negative dimension", name);
            return 0;
        }
        count *= (size_t)dims[i];
    }
    if (count && !data) {
        model_fail(m, LSQ_ERR_INVALID, "tensor '%s': no data", name);
        return 0;
    }
    for (int i = 0; i < ndims; i++)
        pb_put_int(t, TENSOR_DIMS, dims[i]);
    pb_put_int(t, TENSOR_DATA_TYPE, dt);
    if (name && *name)
        pb_put_str(t, TENSOR_NAME, name);
    pb_put_bytes(t, TENSOR_RAW_DATA, data, count * esz);
    return 1;
}

/* Appends an AttributeProto whose value fields are already in val. */
static void node_put_attr(onnx_node *n, const char *name, int type,
                          pb_buf *val)
{
    pb_buf a = {0};
    pb_put_str(&a, ATTR_NAME, name);
    pb_put_int(&a, ATTR_TYPE, type);
    if (val->oom)
        a.oom = 1;
    buf_append(&a, val->data, val->len);
    pb_put_msg(&n->buf, NODE_ATTRIBUTE, &a);
    pb_buf_free(&a);
    pb_buf_free(val);
}

void onnx_attr_int(onnx_node *n, const char *name, int64_t v)
{
    if (!n)
        return;
    pb_buf val = {0};
    pb_put_int(&val, ATTR_I, v);
    node_put_attr(n, name, ATTR_TYPE_INT, &val);
}

void onnx_attr_ints(onnx_node *n, const char *name, const int64_t *v,
                    int count)
{
    if (!n)
        return;
    pb_buf val = {0};
    for (int i = 0; i < count; i++)
        pb_put_int(&val, ATTR_INTS, v[i]);
    node_put_attr(n, name, ATTR_TYPE_INTS, &val);
}

void onnx_attr_float(onnx_node *n, const char *name, float v)
{
    if (!n)
        return;
    pb_buf val = {0};
    pb_put_float(&val, ATTR_F, v);
    node_put_attr(n, name, ATTR_TYPE_FLOAT, &val);
}

void onnx_attr_tensor(onnx_node *n, const char *name, onnx_dtype dt,
                      const int64_t *dims, int ndims, const void *data)
{
    if (!n)
        return;
    pb_buf t = {0}, val = {0};
    if (encode_tensor(&t, n->model, name, dt, dims, ndims, data)) {
        pb_put_msg(&val, ATTR_T, &t);
        node_put_attr(n, name, ATTR_TYPE_TENSOR, &val);
    }
    pb_buf_free(&t);
    pb_buf_free(&val);
}

void onnx_initializer_add(onnx_model *m, const char *name, onnx_dtype dt,
                          const int64_t *dims, int ndims, const void *data)
{
    if (!m)
        return;
    pb_buf t = {0};
    if (encode_tensor(&t, m, name, dt, dims, ndims, data))
        pb_put_msg(&m->inits, GRAPH_INITIALIZER, &t);
    pb_buf_free(&t);
}

static void value_info_add(onnx_model *m, pb_buf *dst, int field,
                           const char *name, onnx_dtype dt,
                           const int64_t *dims, int ndims)
{
    if (!m)
        return;
    if (!dtype_size(dt) || ndims < 0 || (ndims > 0 && !dims) || !name) {
        model_fail(m, LSQ_ERR_INVALID,
                   "graph input/output '%s': bad data type or rank", name);
        return;
    }
    pb_buf shape = {0}, ttype = {0}, type = {0}, vi = {0};
    for (int i = 0; i < ndims; i++) {
        pb_buf dim = {0};
        if (dims[i] < 0)
            pb_put_str(&dim, DIM_PARAM, "N");
        else
            pb_put_int(&dim, DIM_VALUE, dims[i]);
        pb_put_msg(&shape, SHAPE_DIM, &dim);
        pb_buf_free(&dim);
    }
    pb_put_int(&ttype, TTYPE_ELEM_TYPE, dt);
    pb_put_msg(&ttype, TTYPE_SHAPE, &shape);
    pb_put_msg(&type, TYPE_TENSOR, &ttype);
    pb_put_str(&vi, VALUE_NAME, name);
    pb_put_msg(&vi, VALUE_TYPE, &type);
    pb_put_msg(dst, field, &vi);
    pb_buf_free(&shape);
    pb_buf_free(&ttype);
    pb_buf_free(&type);
    pb_buf_free(&vi);
}

void onnx_input_add(onnx_model *m, const char *name, onnx_dtype dt,
                    const int64_t *dims, int ndims)
{
    if (m)
        value_info_add(m, &m->inputs, GRAPH_INPUT, name, dt, dims, ndims);
}

void onnx_output_add(onnx_model *m, const char *name, onnx_dtype dt,
                     const int64_t *dims, int ndims)
{
    if (m)
        value_info_add(m, &m->outputs, GRAPH_OUTPUT, name, dt, dims, ndims);
}

lsq_status onnx_model_encode(const onnx_model *m, uint8_t **out, size_t *len,
                             lsq_err *err)
{
    *out = NULL;
    *len = 0;
    if (!m)
        return lsq_err_set(err, LSQ_ERR_NOMEM, "onnx",
                           "out of memory creating the ONNX model");
    if (m->status != LSQ_OK)
        return lsq_err_set(err, m->status, "onnx", "%s", m->message);
    pb_buf graph = {0}, opset = {0}, model = {0};
    for (int i = 0; i < m->n_nodes; i++)
        pb_put_msg(&graph, GRAPH_NODE, &m->nodes[i]->buf);
    pb_put_str(&graph, GRAPH_NAME, m->graph_name);
    if (m->inits.oom || m->inputs.oom || m->outputs.oom)
        graph.oom = 1;
    buf_append(&graph, m->inits.data, m->inits.len);
    buf_append(&graph, m->inputs.data, m->inputs.len);
    buf_append(&graph, m->outputs.data, m->outputs.len);

    pb_put_int(&model, MODEL_IR_VERSION, ONNX_IR_VERSION);
    pb_put_str(&model, MODEL_PRODUCER_NAME, "lsqd");
    pb_put_msg(&model, MODEL_GRAPH, &graph);
    pb_put_str(&opset, OPSET_DOMAIN, "");
    pb_put_int(&opset, OPSET_VERSION, ONNX_OPSET);
    pb_put_msg(&model, MODEL_OPSET_IMPORT, &opset);
    pb_buf_free(&graph);
    pb_buf_free(&opset);
    if (model.oom) {
        pb_buf_free(&model);
        return lsq_err_set(err, LSQ_ERR_NOMEM, "onnx",
                           "out of memory encoding the ONNX model");
    }
    *out = model.data;
    *len = model.len;
    return LSQ_OK;
}

lsq_status onnx_model_save(const onnx_model *m, const char *path,
                           lsq_err *err)
{
    uint8_t *bytes;
    size_t len;
    lsq_status st = onnx_model_encode(m, &bytes, &len, err);
    if (st != LSQ_OK)
        return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        st = lsq_err_set(err, LSQ_ERR_IO, "output file",
                         "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    size_t wrote = fwrite(bytes, 1, len, f);
    if (fclose(f) != 0 || wrote != len)
        st = lsq_err_set(err, LSQ_ERR_IO, "output file",
                         "cannot write %s: %s", path, strerror(errno));
out:
    free(bytes);
    return st;
}
