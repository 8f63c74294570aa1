/* ONNX import (see onnx_import.h).
 *
 * The model is unpacked by protobuf-c, checked as a whole (opset, one 4-D
 * input, one output, every initializer's data against its dims, no external
 * data, every op supported, every tensor produced, no cycle), then the nodes
 * that the output depends on are interpreted in topological order over
 * three kinds of value:
 *   - activations: a layer's output (or the image), (C, H, W) per example;
 *   - constants: float tensors (initializers, Constant nodes) that become
 *     weights or a Clip/Mul scalar;
 *   - shape vectors: small integer vectors whose entries are known or "the
 *     batch size", enough to follow Shape -> Gather -> Unsqueeze -> Concat
 *     into the Reshape that x.view(x.size(0), -1) exports.
 * Each node on activations appends one layer (or aliases its input:
 * Identity, Dropout, a Flatten of a flat value, a MatMul's bias Add). This
 * file uses no symbol of net.c, which calls it for a spec's ONNX model. */
#include "graph/onnx_import.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx/onnx.pb-c.h"

#define SYM_MAX 8      /* entries of a shape vector */
#define NAME_MAX_LEN 47 /* a layer name, as net_build allows */
#define MAX_ELEMENTS ((int64_t)1 << 31)

static const char *const SUPPORTED_OPS[] = {
    "Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Add", "Mul", "Concat", "Flatten", "Reshape", "Shape", "Gather",
    "Unsqueeze", "Gemm", "MatMul", "Identity", "Dropout", "Constant", NULL,
};
#define SUPPORTED_LIST                                                                        \
    "Conv, BatchNormalization, Relu, Clip, LeakyRelu, MaxPool, AveragePool, "                 \
    "GlobalAveragePool, Add, Mul, Concat, Flatten, Reshape, Shape, Gather, Unsqueeze, Gemm, " \
    "MatMul, Identity, Dropout, Constant"

/* ------------------------------------------------------------ values */

typedef enum { V_NONE, V_ACT, V_CONST, V_SYM } vkind;

typedef struct {
    vkind kind;
    const char *name;             /* the tensor's name (borrowed from the model) */
    /* V_ACT */
    int layer;                    /* index in the layer list; -1: the image */
    int c, h, w, rank;            /* rank 4 (N, C, H, W) or 2 (N, C) */
    /* V_CONST: a float tensor, decoded on first use */
    const Onnx__TensorProto *t;   /* NULL when data was made here */
    float *f;                     /* (count), owned by the context */
    size_t count;
    int ndim;
    int64_t dims[8];
    /* V_SYM: integers, entries flagged as the batch size */
    int n, scalar;
    int64_t v[SYM_MAX];
    unsigned char batch[SYM_MAX];
} value;

/* Tensor name -> value, open addressing (FNV-1a). */
typedef struct {
    value *vals;
    int n, cap;
    int *slots;                   /* (nslots) index into vals, -1 empty */
    int nslots;
} vmap;

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int vmap_find(const vmap *m, const char *name)
{
    if (!m->nslots) return -1;
    for (uint32_t i = hash_str(name) & (uint32_t)(m->nslots - 1);; i = (i + 1) & (uint32_t)(m->nslots - 1)) {
        int k = m->slots[i];
        if (k < 0) return -1;
        if (strcmp(m->vals[k].name, name) == 0) return k;
    }
}

/* Adds (or replaces) name's value; returns its index, -1 when out of memory. */
static int vmap_put(vmap *m, const value *v)
{
    int k = vmap_find(m, v->name);
    if (k >= 0) {
        m->vals[k] = *v;
        return k;
    }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 64;
        value *nv = realloc(m->vals, (size_t)cap * sizeof *nv);
        if (!nv) return -1;
        m->vals = nv, m->cap = cap;
    }
    if (2 * (m->n + 1) > m->nslots) {
        int ns = m->nslots ? 2 * m->nslots : 128;
        while (2 * (m->n + 1) > ns) ns *= 2;
        int *s = malloc((size_t)ns * sizeof *s);
        if (!s) return -1;
        for (int i = 0; i < ns; i++) s[i] = -1;
        for (int j = 0; j < m->n; j++) {
            uint32_t i = hash_str(m->vals[j].name) & (uint32_t)(ns - 1);
            while (s[i] >= 0) i = (i + 1) & (uint32_t)(ns - 1);
            s[i] = j;
        }
        free(m->slots);
        m->slots = s, m->nslots = ns;
    }
    m->vals[m->n] = *v;
    uint32_t i = hash_str(v->name) & (uint32_t)(m->nslots - 1);
    while (m->slots[i] >= 0) i = (i + 1) & (uint32_t)(m->nslots - 1);
    m->slots[i] = m->n;
    return m->n++;
}

/* ------------------------------------------------------------ context */

typedef struct {
    const Onnx__ModelProto *model;
    const Onnx__GraphProto *g;
    onnx_import *im;
    lsq_err *err;
    vmap vals;
    float **owned;                /* decoded constants to free */
    int n_owned, cap_owned;
    int *uses;                    /* per node: 1 when the output depends on it */
    int *consumers;               /* per value index: readers among used nodes */
    int cap_params, cap_info;
    json_t *list;                 /* the "layers" array (borrowed from im->layers) */
    const Onnx__NodeProto *node;  /* the node being read, for messages */
} ictx;

static const char *node_label(const Onnx__NodeProto *n)
{
    return n->name && *n->name ? n->name : "(unnamed)";
}

/* An error about the current node: field model.onnx.graph.node[NAME],
 * message 'node "NAME" (Op, opset N): ...'. */
__attribute__((format(printf, 2, 3)))
static lsq_status node_err(ictx *x, const char *fmt, ...)
{
    char field[128], msg[400];
    const Onnx__NodeProto *n = x->node;
    snprintf(field, sizeof field, "model.onnx.graph.node[%.90s]", node_label(n));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lsq_err_set(x->err, LSQ_ERR_INVALID, field, "node \"%.100s\" (%.40s, opset %lld): %s",
                       node_label(n), n->op_type ? n->op_type : "?", (long long)x->im->opset, msg);
}

__attribute__((format(printf, 3, 4)))
static lsq_status init_err(ictx *x, const char *name, const char *fmt, ...)
{
    char field[128], msg[400];
    snprintf(field, sizeof field, "model.onnx.graph.initializer[%.80s]", name ? name : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lsq_err_set(x->err, LSQ_ERR_INVALID, field, "%s", msg);
}

static lsq_status nomem(ictx *x)
{
    return lsq_err_set(x->err, LSQ_ERR_NOMEM, "model.onnx", "out of memory importing the ONNX model");
}

static float *ctx_alloc_floats(ictx *x, size_t n)
{
    if (x->n_owned == x->cap_owned) {
        int cap = x->cap_owned ? 2 * x->cap_owned : 32;
        float **no = realloc(x->owned, (size_t)cap * sizeof *no);
        if (!no) return NULL;
        x->owned = no, x->cap_owned = cap;
    }
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p) x->owned[x->n_owned++] = p;
    return p;
}

/* ------------------------------------------------------------ tensors */

static const char *dtype_name(int dt)
{
    static const char *const names[] = {
        "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING",
        "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16",
    };
    return dt >= 0 && dt < (int)(sizeof names / sizeof *names) ? names[dt] : "an unknown type";
}

static int is_int_type(int dt)
{
    return dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 || dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ||
           dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT16 || dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT8 ||
           dt == ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 || dt == ONNX__TENSOR_PROTO__DATA_TYPE__UINT16;
}

/* Bytes per element in raw_data; 0 for types lsq never reads. */
static size_t raw_size(int dt)
{
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return 1;
    default: return 0;
    }
}

/* Elements the typed field of t holds for its data type (not raw_data). */
static size_t typed_count(const Onnx__TensorProto *t)
{
    switch (t->data_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return t->n_float_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return t->n_int64_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return t->n_double_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: return t->n_uint64_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__STRING: return t->n_string_data;
    default: return t->n_int32_data; /* int8..int32, uint8, uint16, bool, float16 */
    }
}

/* Checks a tensor before anything reads it: stored in this file, dims
 * non-negative and not absurd, and exactly as many elements in its data as
 * its dims say. what names it in messages (an initializer, or a Constant's
 * value). Sets *count. */
static lsq_status tensor_check(ictx *x, const Onnx__TensorProto *t, const char *what,
                               size_t *count)
{
    const char *name = t->name && *t->name ? t->name : what;
    if ((t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
        t->n_external_data > 0) {
        const char *loc = "another file";
        for (size_t i = 0; i < t->n_external_data; i++)
            if (t->external_data[i]->key && strcmp(t->external_data[i]->key, "location") == 0 &&
                t->external_data[i]->value)
                loc = t->external_data[i]->value;
        return init_err(x, name,
                        "tensor \"%.80s\" keeps its data in %.80s (ONNX external data); lsq reads "
                        "self-contained models: export again without external data "
                        "(torch.onnx.export of a model under 2 GB writes none), or convert with "
                        "onnx.save_model(model, path, save_as_external_data=False)",
                        name, loc);
    }
    if (t->segment)
        return init_err(x, name, "tensor \"%.80s\" is segmented; lsq reads whole tensors", name);
    if (t->n_dims > 8)
        return init_err(x, name, "tensor \"%.80s\" has %zu dimensions; at most 8 are read", name,
                        t->n_dims);
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || t->dims[i] > MAX_ELEMENTS)
            return init_err(x, name, "tensor \"%.80s\" has dimension %zu of %lld", name, i,
                            (long long)t->dims[i]);
        n *= t->dims[i];
        if (n > MAX_ELEMENTS)
            return init_err(x, name, "tensor \"%.80s\" has more than %lld elements", name,
                            (long long)MAX_ELEMENTS);
    }
    char shape[96] = "";
    size_t o = 0;
    for (size_t i = 0; i < t->n_dims && o < sizeof shape - 24; i++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", i ? ", " : "",
                              (long long)t->dims[i]);
    if (t->has_raw_data && t->raw_data.len > 0) {
        size_t es = raw_size(t->data_type);
        if (!es)
            return init_err(x, name, "tensor \"%.80s\" of type %s cannot be read", name,
                            dtype_name(t->data_type));
        if (t->raw_data.len != (size_t)n * es)
            return init_err(x, name,
                            "tensor \"%.80s\": its dims [%s] make %lld %s elements (%lld bytes) "
                            "but raw_data holds %zu bytes",
                            name, shape, (long long)n, dtype_name(t->data_type),
                            (long long)n * (long long)es, t->raw_data.len);
    } else if (typed_count(t) != (size_t)n) {
        return init_err(x, name,
                        "tensor \"%.80s\": its dims [%s] make %lld elements but its data holds %zu",
                        name, shape, (long long)n, typed_count(t));
    }
    *count = (size_t)n;
    return LSQ_OK;
}

/* The floats of a checked FLOAT tensor into out (count elements). */
static void tensor_read_floats(const Onnx__TensorProto *t, float *out, size_t count)
{
    if (t->has_raw_data && t->raw_data.len > 0) {
        /* raw_data is little-endian, the host's order on every target lsq builds for */
        memcpy(out, t->raw_data.data, count * sizeof *out);
    } else {
        memcpy(out, t->float_data, count * sizeof *out);
    }
}

/* The integers of a checked integer tensor (count <= SYM_MAX). */
static void tensor_read_ints(const Onnx__TensorProto *t, int64_t *out, size_t count)
{
    const int dt = t->data_type;
    const int raw = t->has_raw_data && t->raw_data.len > 0;
    for (size_t i = 0; i < count; i++) {
        if (!raw) {
            out[i] = dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ? t->int64_data[i] : t->int32_data[i];
            continue;
        }
        const uint8_t *p = t->raw_data.data + i * raw_size(dt);
        switch (dt) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: { int64_t v; memcpy(&v, p, 8); out[i] = v; break; }
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: { int32_t v; memcpy(&v, p, 4); out[i] = v; break; }
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: { int16_t v; memcpy(&v, p, 2); out[i] = v; break; }
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: { uint16_t v; memcpy(&v, p, 2); out[i] = v; break; }
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: out[i] = (int8_t)p[0]; break;
        default: out[i] = p[0]; break; /* uint8 */
        }
    }
}

/* The value of a checked tensor: a shape vector for small integer tensors,
 * a constant otherwise (its floats read on first use). */
static lsq_status tensor_value(ictx *x, const Onnx__TensorProto *t, const char *what, value *v)
{
    size_t count = 0;
    lsq_status st = tensor_check(x, t, what, &count);
    if (st) return st;
    if (is_int_type(t->data_type) && count <= SYM_MAX && t->n_dims <= 1) {
        v->kind = V_SYM;
        v->n = (int)count;
        v->scalar = t->n_dims == 0;
        tensor_read_ints(t, v->v, count);
        memset(v->batch, 0, sizeof v->batch);
        return LSQ_OK;
    }
    v->kind = V_CONST;
    v->t = t;
    v->count = count;
    v->ndim = (int)t->n_dims;
    for (size_t i = 0; i < t->n_dims; i++) v->dims[i] = t->dims[i];
    return LSQ_OK;
}

/* The floats of a constant (decoded once); NULL with err for other types. */
static const float *const_floats(ictx *x, value *v)
{
    if (v->f || v->count == 0) return v->f ? v->f : (const float *)"";
    if (v->t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        node_err(x, "\"%.80s\" is %s; lsq imports float32 weights and constants", v->name,
                 dtype_name(v->t->data_type));
        return NULL;
    }
    v->f = ctx_alloc_floats(x, v->count);
    if (!v->f) {
        nomem(x);
        return NULL;
    }
    tensor_read_floats(v->t, v->f, v->count);
    return v->f;
}

/* ------------------------------------------------------------ attributes */

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0)
            return n->attribute[i];
    return NULL;
}

/* Every attribute of the node must be one of allowed (NULL-terminated). */
static lsq_status check_attrs(ictx *x, const char *const *allowed)
{
    for (size_t i = 0; i < x->node->n_attribute; i++) {
        const char *a = x->node->attribute[i]->name ? x->node->attribute[i]->name : "";
        int ok = 0;
        for (const char *const *k = allowed; *k && !ok; k++) ok = strcmp(*k, a) == 0;
        if (!ok) return node_err(x, "attribute \"%.40s\" is not supported", a);
    }
    return LSQ_OK;
}

static lsq_status attr_int(ictx *x, const char *name, int64_t dflt, int64_t *out)
{
    const Onnx__AttributeProto *a = attr(x->node, name);
    *out = dflt;
    if (!a) return LSQ_OK;
    if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT && !(a->has_i && !a->has_type))
        return node_err(x, "attribute %s must be an integer", name);
    *out = a->i;
    return LSQ_OK;
}

static lsq_status attr_float(ictx *x, const char *name, double dflt, double *out)
{
    const Onnx__AttributeProto *a = attr(x->node, name);
    *out = dflt;
    if (!a) return LSQ_OK;
    if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT && !(a->has_f && !a->has_type))
        return node_err(x, "attribute %s must be a float", name);
    *out = a->f;
    return LSQ_OK;
}

/* An INTS attribute of n values (n 2: one per spatial axis; 4: pads) that
 * must all be equal; *out = that value, or dflt when absent. */
static lsq_status attr_square(ictx *x, const char *name, size_t n, int64_t dflt, int64_t *out)
{
    const Onnx__AttributeProto *a = attr(x->node, name);
    *out = dflt;
    if (!a) return LSQ_OK;
    if (a->n_ints != n)
        return node_err(x, "attribute %s must hold %zu values for a 2-D %s, got %zu", name, n,
                        x->node->op_type, a->n_ints);
    for (size_t i = 1; i < n; i++)
        if (a->ints[i] != a->ints[0]) {
            if (strcmp(name, "pads") == 0)
                return node_err(x, "pads [%lld, %lld, %lld, %lld] are not symmetric; lsq pads "
                                   "every side alike",
                                (long long)a->ints[0], (long long)a->ints[1],
                                (long long)a->ints[2], (long long)a->ints[3]);
            return node_err(x, "%s [%lld, %lld] differ across height and width; lsq takes square "
                               "%s only",
                            name, (long long)a->ints[0], (long long)a->ints[1], name);
        }
    *out = a->ints[0];
    return LSQ_OK;
}

/* auto_pad: NOTSET or VALID (no padding) only. */
static lsq_status check_auto_pad(ictx *x, int64_t pad)
{
    const Onnx__AttributeProto *a = attr(x->node, "auto_pad");
    if (!a || !a->has_s) return LSQ_OK;
    char s[32];
    snprintf(s, sizeof s, "%.*s", (int)(a->s.len < 31 ? a->s.len : 31), (const char *)a->s.data);
    if (strcmp(s, "NOTSET") == 0 || (strcmp(s, "VALID") == 0 && pad == 0)) return LSQ_OK;
    return node_err(x, "auto_pad %s is not supported: export with explicit pads", s);
}

/* ------------------------------------------------------------ inputs */

static value *input_value(ictx *x, size_t i)
{
    if (i >= x->node->n_input || !x->node->input[i] || !*x->node->input[i]) return NULL;
    int k = vmap_find(&x->vals, x->node->input[i]);
    return k >= 0 ? &x->vals.vals[k] : NULL;
}

static lsq_status need_inputs(ictx *x, size_t lo, size_t hi)
{
    size_t n = x->node->n_input;
    while (n > 0 && !*x->node->input[n - 1]) n--; /* trailing optional inputs */
    if (n < lo || n > hi) {
        if (lo == hi) return node_err(x, "takes %zu inputs, got %zu", lo, n);
        return node_err(x, "takes %zu to %zu inputs, got %zu", lo, hi, n);
    }
    for (size_t i = 0; i < lo; i++)
        if (!input_value(x, i)) return node_err(x, "input %zu is missing", i);
    return LSQ_OK;
}

static lsq_status act_input(ictx *x, size_t i, value **out)
{
    value *v = input_value(x, i);
    if (!v || v->kind != V_ACT)
        return node_err(x, "input %zu (\"%.80s\") must be an activation, not a constant", i,
                        i < x->node->n_input ? x->node->input[i] : "");
    *out = v;
    return LSQ_OK;
}

static lsq_status const_input(ictx *x, size_t i, value **out)
{
    value *v = input_value(x, i);
    if (!v || v->kind != V_CONST)
        return node_err(x, "input %zu (\"%.80s\") must be a float initializer or Constant", i,
                        i < x->node->n_input ? x->node->input[i] : "");
    *out = v;
    return LSQ_OK;
}

/* A constant with one element (any rank), as a float. */
static lsq_status scalar_input(ictx *x, size_t i, float *out)
{
    value *v = input_value(x, i);
    if (v && v->kind == V_SYM && v->n == 1) {
        *out = (float)v->v[0];
        return v->batch[0] ? node_err(x, "input %zu must be a constant", i) : LSQ_OK;
    }
    if (!v || v->kind != V_CONST || v->count != 1)
        return node_err(x, "input %zu (\"%.80s\") must be a constant scalar", i,
                        i < x->node->n_input ? x->node->input[i] : "");
    const float *f = const_floats(x, v);
    if (!f) return x->err ? x->err->code : LSQ_ERR_INVALID;
    *out = f[0];
    return LSQ_OK;
}

static lsq_status sym_input(ictx *x, size_t i, value **out)
{
    value *v = input_value(x, i);
    if (!v || v->kind != V_SYM)
        return node_err(x, "input %zu (\"%.80s\") must be a small integer tensor (a shape)", i,
                        i < x->node->n_input ? x->node->input[i] : "");
    *out = v;
    return LSQ_OK;
}

/* Defines the node's output `i` as v. */
static lsq_status set_output(ictx *x, size_t i, const value *v)
{
    value o = *v;
    o.name = x->node->output[i];
    return vmap_put(&x->vals, &o) < 0 ? nomem(x) : LSQ_OK;
}

/* Only output 0 of the node may be read (BatchNormalization's training
 * statistics, Dropout's mask, MaxPool's indices). */
static lsq_status only_output0(ictx *x)
{
    for (size_t i = 1; i < x->node->n_output; i++) {
        const char *o = x->node->output[i];
        if (!o || !*o) continue;
        int k = vmap_find(&x->vals, o);
        if (k >= 0 && x->consumers[k] > 0)
            return node_err(x, "output %zu (\"%.80s\") is used; lsq imports only output 0", i, o);
    }
    return LSQ_OK;
}

/* ------------------------------------------------------------ layers */

/* A node's scope and op segment as torch writes its names: "/layer1/
 * shortcut/shortcut.0/Conv" is scope "layer1.shortcut.0" (a Sequential
 * child "seq/seq.0" keeps only its last segment) and op "conv"; a name
 * whose last segment is not its op ("myconv") is all scope. */
static void node_scope(const Onnx__NodeProto *n, char *scope, size_t ssize, char *op, size_t osize)
{
    char segs[16][64];
    int ns = 0;
    const char *p = n->name ? n->name : "";
    while (*p && ns < 16) {
        while (*p == '/') p++;
        size_t len = strcspn(p, "/");
        if (len) snprintf(segs[ns++], sizeof segs[0], "%.*s", (int)(len < 63 ? len : 63), p);
        p += len;
    }
    int keep[16], nk = 0;
    for (int i = 0; i < ns; i++) {
        size_t l = strlen(segs[i]);
        if (i + 1 < ns && strncmp(segs[i + 1], segs[i], l) == 0 && segs[i + 1][l] == '.') continue;
        keep[nk++] = i;
    }
    op[0] = '\0';
    if (nk > 0 && n->op_type && *n->op_type) {
        const char *last = segs[keep[nk - 1]];
        size_t ol = strlen(n->op_type);
        if (strncmp(last, n->op_type, ol) == 0 && (last[ol] == '\0' || last[ol] == '_')) {
            snprintf(op, osize, "%s", last);
            for (char *c = op; *c; c++)
                if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
            nk--;
        }
    }
    size_t o = 0;
    scope[0] = '\0';
    for (int i = 0; i < nk && o < ssize - 1; i++)
        o += (size_t)snprintf(scope + o, ssize - o, "%s%s", i ? "." : "", segs[keep[i]]);
}

/* Ops that make layers (the rest make constants, shapes or aliases). */
static int makes_layer(const char *op)
{
    static const char *const none[] = {"Constant", "Shape", "Gather", "Unsqueeze", "Identity",
                                       "Dropout", NULL};
    for (const char *const *s = none; *s; s++)
        if (strcmp(op, *s) == 0) return 0;
    return 1;
}

/* The layer name for the current node, from its ONNX name: the module's
 * scope when it holds this one op ("/layer1/conv1/Conv" -> "layer1.conv1",
 * "/features/features.1/Relu" -> "features.1"), else the scope and the op
 * ("/layer1/Relu_1" -> "layer1.relu_1", "/Flatten" -> "flatten");
 * characters outside A-Z a-z 0-9 . _ - as '_', the last 47 characters,
 * unique and never "input". */
static void layer_name(ictx *x, char *out, size_t size)
{
    const Onnx__NodeProto *n = x->node;
    char scope[256], op[64];
    node_scope(n, scope, sizeof scope, op, sizeof op);
    int alone = scope[0] && op[0];
    if (alone) {
        /* the other layer-making nodes in the same scope */
        for (size_t i = 0; i < x->g->n_node && alone; i++) {
            const Onnx__NodeProto *m = x->g->node[i];
            if (m == n || !m->op_type || !makes_layer(m->op_type)) continue;
            char s2[256], o2[64];
            node_scope(m, s2, sizeof s2, o2, sizeof o2);
            alone = strcmp(s2, scope) != 0;
        }
    }
    char base[330];
    if (alone || !op[0]) snprintf(base, sizeof base, "%s", scope);
    else snprintf(base, sizeof base, "%s%s%s", scope, scope[0] ? "." : "", op);
    for (char *c = base; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            *c = '_';
    /* the tail names the layer best when the path is long */
    size_t bl = strlen(base);
    char *b = bl > NAME_MAX_LEN ? base + bl - NAME_MAX_LEN : base;
    while (*b == '.' || *b == '_' || *b == '-') b++;
    memmove(base, b, strlen(b) + 1);
    bl = strlen(base);
    while (bl && (base[bl - 1] == '.' || base[bl - 1] == '_' || base[bl - 1] == '-')) base[--bl] = 0;
    if (!base[0]) {
        /* an unnamed node: its op in lower case and its layer number */
        snprintf(base, sizeof base, "%.20s%d", n->op_type ? n->op_type : "layer", x->im->n_layers + 1);
        for (char *c = base; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    }
    const char *bn = base;
    for (int k = 1;; k++) {
        char cand[64];
        if (k == 1) {
            snprintf(cand, sizeof cand, "%s", bn);
        } else {
            char suf[16];
            int sl = snprintf(suf, sizeof suf, "_%d", k);
            snprintf(cand, sizeof cand, "%.*s%s", NAME_MAX_LEN - sl, bn, suf);
        }
        int taken = strcmp(cand, "input") == 0;
        for (size_t i = 0; i < json_array_size(x->list) && !taken; i++)
            taken = strcmp(json_string_value(json_object_get(json_array_get(x->list, i), "name")),
                           cand) == 0;
        if (!taken) {
            snprintf(out, size, "%s", cand);
            return;
        }
    }
}

/* A float as JSON, written with the fewest digits that read back as the
 * same float (0.1f as 0.1, not 0.10000000149011612). */
static json_t *json_float(float f)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static const char *layer_name_of(ictx *x, int layer)
{
    if (layer < 0) return "input";
    return json_string_value(json_object_get(json_array_get(x->list, (size_t)layer), "name"));
}

/* Appends a layer of `type` reading the activation src (its "input" key
 * only when that is not the previous layer); returns the new layer's JSON
 * object (owned by the list) or NULL when out of memory. *index is its
 * position. The output shape is set by the caller in the info entry. */
static json_t *emit(ictx *x, const char *type, const value *src, int *index)
{
    onnx_import *im = x->im;
    if (im->n_layers == x->cap_info) {
        int cap = x->cap_info ? 2 * x->cap_info : 32;
        onnx_layer_info *ni = realloc(im->info, (size_t)cap * sizeof *ni);
        if (!ni) return NULL;
        im->info = ni, x->cap_info = cap;
    }
    char name[64];
    layer_name(x, name, sizeof name);
    json_t *l = json_pack("{s:s, s:s}", "type", type, "name", name);
    if (!l) return NULL;
    if (src && src->layer != im->n_layers - 1)
        json_object_set_new(l, "input", json_string(layer_name_of(x, src->layer)));
    if (json_array_append_new(x->list, l) != 0) return NULL;
    onnx_layer_info *li = &im->info[im->n_layers];
    memset(li, 0, sizeof *li);
    snprintf(li->node, sizeof li->node, "%s", x->node->name ? x->node->name : "");
    snprintf(li->op, sizeof li->op, "%s", x->node->op_type);
    if (src) li->c = src->c, li->h = src->h, li->w = src->w;
    *index = im->n_layers++;
    return l;
}

/* The activation a layer makes: shape and rank. */
static value act_value(int layer, int c, int h, int w, int rank)
{
    value v;
    memset(&v, 0, sizeof v);
    v.kind = V_ACT;
    v.layer = layer;
    v.c = c, v.h = h, v.w = w, v.rank = rank;
    return v;
}

static lsq_status finish_layer(ictx *x, int layer, int c, int h, int w, int rank)
{
    onnx_layer_info *li = &x->im->info[layer];
    li->c = c, li->h = h, li->w = w;
    value v = act_value(layer, c, h, w, rank);
    return set_output(x, 0, &v);
}

/* Records the initial value of view LAYER.suffix: data (count floats, or
 * the transpose of a (rows, cols) matrix when transpose_rows > 0). */
static lsq_status add_param(ictx *x, int layer, const char *suffix, const value *src,
                            const float *data, size_t count, int ndim, const int *dims,
                            int transpose_rows)
{
    onnx_import *im = x->im;
    if (im->n_params == x->cap_params) {
        int cap = x->cap_params ? 2 * x->cap_params : 32;
        onnx_param *np = realloc(im->params, (size_t)cap * sizeof *np);
        if (!np) return nomem(x);
        im->params = np, x->cap_params = cap;
    }
    onnx_param *p = &im->params[im->n_params];
    memset(p, 0, sizeof *p);
    p->data = malloc((count ? count : 1) * sizeof *p->data);
    if (!p->data) return nomem(x);
    im->n_params++;
    snprintf(p->name, sizeof p->name, "%s%s", layer_name_of(x, layer), suffix);
    snprintf(p->src, sizeof p->src, "%s", src && src->name ? src->name : "");
    p->count = count;
    p->ndim = ndim;
    for (int i = 0; i < ndim; i++) p->dims[i] = dims[i];
    if (transpose_rows > 0) {
        size_t rows = (size_t)transpose_rows, cols = count / rows;
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++) p->data[c * rows + r] = data[r * cols + c];
        p->transposed = 1;
    } else {
        memcpy(p->data, data, count * sizeof *p->data);
    }
    im->info[layer].params += count;
    return LSQ_OK;
}

/* A float constant with count elements, its data in *out. */
static lsq_status const_data(ictx *x, value *v, size_t count, const char *what, const float **out)
{
    if (v->count != count)
        return node_err(x, "%s \"%.80s\" holds %zu values, %zu expected", what, v->name, v->count,
                        count);
    *out = const_floats(x, v);
    return *out ? LSQ_OK : x->err->code;
}

/* ------------------------------------------------------------ operators */

static lsq_status op_conv(ictx *x)
{
    static const char *const attrs[] = {"kernel_shape", "strides", "pads", "dilations", "group",
                                        "auto_pad", NULL};
    value *in, *w, *b = NULL;
    lsq_status st;
    if ((st = need_inputs(x, 2, 3)) || (st = check_attrs(x, attrs))) return st;
    if ((st = act_input(x, 0, &in)) || (st = const_input(x, 1, &w))) return st;
    if (input_value(x, 2) && (st = const_input(x, 2, &b))) return st;
    if (in->rank != 4) return node_err(x, "its input is flat; Conv needs (N, C, H, W)");
    if (w->ndim != 4)
        return node_err(x, "the weight \"%.80s\" has rank %d; a 2-D Conv weight is "
                           "(out, in / group, kH, kW)", w->name, w->ndim);
    int64_t stride, pad, dil, group;
    if ((st = attr_square(x, "strides", 2, 1, &stride)) || (st = attr_square(x, "pads", 4, 0, &pad)) ||
        (st = attr_square(x, "dilations", 2, 1, &dil)) || (st = attr_int(x, "group", 1, &group)) ||
        (st = check_auto_pad(x, pad)))
        return st;
    const int64_t oc = w->dims[0], icg = w->dims[1], kh = w->dims[2], kw = w->dims[3];
    if (kh != kw) return node_err(x, "the kernel is %lldx%lld; lsq takes square kernels",
                                  (long long)kh, (long long)kw);
    const Onnx__AttributeProto *ks = attr(x->node, "kernel_shape");
    if (ks && (ks->n_ints != 2 || ks->ints[0] != kh || ks->ints[1] != kw))
        return node_err(x, "kernel_shape disagrees with the weight's %lldx%lld", (long long)kh,
                        (long long)kw);
    if (stride < 1 || stride > 64 || pad < 0 || pad > 64 || dil < 1 || dil > 64 || kh < 1 ||
        kh > 64 || oc < 1)
        return node_err(x, "kernel %lld, stride %lld, pad %lld, dilation %lld out of range",
                        (long long)kh, (long long)stride, (long long)pad, (long long)dil);
    if (group < 1 || in->c % group || oc % group || icg * group != in->c)
        return node_err(x, "the weight (%lld, %lld, ...) with group %lld does not fit %d input "
                           "channels", (long long)oc, (long long)icg, (long long)group, in->c);
    const int64_t ext = dil * (kh - 1) + 1;
    const int64_t oh = (in->h + 2 * pad - ext) / stride + 1, ow = (in->w + 2 * pad - ext) / stride + 1;
    if (in->h + 2 * pad < ext || in->w + 2 * pad < ext)
        return node_err(x, "the %lldx%lld kernel (dilation %lld) is larger than the padded %dx%d "
                           "input", (long long)kh, (long long)kh, (long long)dil, in->h, in->w);
    const float *wd, *bd = NULL;
    if ((st = const_data(x, w, w->count, "weight", &wd))) return st;
    if (b && (st = const_data(x, b, (size_t)oc, "bias", &bd))) return st;
    int li;
    json_t *l = emit(x, "conv2d", in, &li);
    if (!l) return nomem(x);
    json_object_set_new(l, "out", json_integer(oc));
    json_object_set_new(l, "kernel", json_integer(kh));
    json_object_set_new(l, "stride", json_integer(stride));
    json_object_set_new(l, "pad", json_integer(pad));
    json_object_set_new(l, "bias", json_boolean(b != NULL));
    if (group != 1) json_object_set_new(l, "groups", json_integer(group));
    if (dil != 1) json_object_set_new(l, "dilation", json_integer(dil));
    const int wd4[4] = {(int)oc, (int)icg, (int)kh, (int)kw}, bd1[1] = {(int)oc};
    if ((st = add_param(x, li, ".weight", w, wd, w->count, 4, wd4, 0))) return st;
    if (b && (st = add_param(x, li, ".bias", b, bd, (size_t)oc, 1, bd1, 0))) return st;
    x->im->info[li].macs = (double)w->count * (double)(oh * ow);
    return finish_layer(x, li, (int)oc, (int)oh, (int)ow, 4);
}

static lsq_status op_batchnorm(ictx *x)
{
    static const char *const attrs[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    value *in, *c[4];
    lsq_status st;
    if ((st = need_inputs(x, 5, 5)) || (st = check_attrs(x, attrs)) || (st = only_output0(x)))
        return st;
    if ((st = act_input(x, 0, &in))) return st;
    for (int i = 0; i < 4; i++)
        if ((st = const_input(x, (size_t)i + 1, &c[i]))) return st;
    double eps;
    int64_t spatial, training;
    if ((st = attr_float(x, "epsilon", 1e-5, &eps)) || (st = attr_int(x, "spatial", 1, &spatial)) ||
        (st = attr_int(x, "training_mode", 0, &training)))
        return st;
    if (spatial != 1) return node_err(x, "spatial = %lld is not supported", (long long)spatial);
    if (!(eps > 0) || eps > 1)
        return node_err(x, "epsilon %g is out of range", eps);
    if (training || x->node->n_output > 1) x->im->bn_training++;
    const float *d[4];
    static const char *const what[4] = {"scale", "bias", "mean", "variance"};
    for (int i = 0; i < 4; i++)
        if ((st = const_data(x, c[i], (size_t)in->c, what[i], &d[i]))) return st;
    int li;
    json_t *l = emit(x, "batchnorm", in, &li);
    if (!l) return nomem(x);
    const int cd[1] = {in->c};
    static const char *const suffix[4] = {".weight", ".bias", ".running_mean", ".running_var"};
    for (int i = 0; i < 3; i++)
        if ((st = add_param(x, li, suffix[i], c[i], d[i], (size_t)in->c, 1, cd, 0))) return st;
    /* lsq's batch norm adds 1e-5 to the variance: another epsilon moves
     * into the running variance, which gives the same inference output */
    float *var = malloc((size_t)in->c * sizeof *var);
    if (!var) return nomem(x);
    const float delta = (float)eps - 1e-5f;
    for (int i = 0; i < in->c; i++) {
        var[i] = d[3][i] + delta;
        if (var[i] < 0) var[i] = 0;
    }
    st = add_param(x, li, suffix[3], c[3], var, (size_t)in->c, 1, cd, 0);
    free(var);
    if (st) return st;
    x->im->info[li].params -= (size_t)in->c; /* running statistics are not parameters */
    x->im->info[li].params -= (size_t)in->c;
    return finish_layer(x, li, in->c, in->h, in->w, in->rank);
}

/* A layer of `type` with no keys and the input's shape. */
static lsq_status plain_layer(ictx *x, const char *type, value *in)
{
    int li;
    if (!emit(x, type, in, &li)) return nomem(x);
    return finish_layer(x, li, in->c, in->h, in->w, in->rank);
}

static lsq_status op_relu(ictx *x)
{
    static const char *const attrs[] = {NULL};
    value *in;
    lsq_status st;
    if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs)) || (st = act_input(x, 0, &in)))
        return st;
    return plain_layer(x, "relu", in);
}

static lsq_status op_clip(ictx *x)
{
    static const char *const attrs_old[] = {"min", "max", NULL};
    static const char *const attrs_new[] = {NULL};
    value *in;
    lsq_status st;
    float lo = -INFINITY, hi = INFINITY;
    if (x->im->opset < 11) {
        double a, b;
        if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs_old)) ||
            (st = attr_float(x, "min", -INFINITY, &a)) || (st = attr_float(x, "max", INFINITY, &b)))
            return st;
        lo = (float)a, hi = (float)b;
    } else {
        if ((st = need_inputs(x, 1, 3)) || (st = check_attrs(x, attrs_new))) return st;
        if (input_value(x, 1) && (st = scalar_input(x, 1, &lo))) return st;
        if (input_value(x, 2) && (st = scalar_input(x, 2, &hi))) return st;
    }
    if ((st = act_input(x, 0, &in))) return st;
    if (!(lo <= hi)) return node_err(x, "min %g is above max %g", (double)lo, (double)hi);
    if (isinf(lo) && isinf(hi)) return set_output(x, 0, in); /* no bound: identity */
    if (lo == 0 && isinf(hi)) return plain_layer(x, "relu", in);
    int li;
    json_t *l = emit(x, "clip", in, &li);
    if (!l) return nomem(x);
    if (!isinf(lo)) json_object_set_new(l, "min", json_float(lo));
    if (!isinf(hi)) json_object_set_new(l, "max", json_float(hi));
    return finish_layer(x, li, in->c, in->h, in->w, in->rank);
}

static lsq_status op_leakyrelu(ictx *x)
{
    static const char *const attrs[] = {"alpha", NULL};
    value *in;
    double alpha;
    lsq_status st;
    if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs)) ||
        (st = act_input(x, 0, &in)) || (st = attr_float(x, "alpha", 0.01, &alpha)))
        return st;
    if (!isfinite(alpha)) return node_err(x, "alpha %g is not a number", alpha);
    int li;
    json_t *l = emit(x, "leakyrelu", in, &li);
    if (!l) return nomem(x);
    json_object_set_new(l, "alpha", json_float((float)alpha));
    return finish_layer(x, li, in->c, in->h, in->w, in->rank);
}

static lsq_status op_pool(ictx *x, int is_max)
{
    static const char *const attrs_max[] = {"kernel_shape", "strides", "pads", "dilations",
                                            "ceil_mode", "storage_order", "auto_pad", NULL};
    static const char *const attrs_avg[] = {"kernel_shape", "strides", "pads", "ceil_mode",
                                            "count_include_pad", "auto_pad", NULL};
    value *in;
    lsq_status st;
    if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, is_max ? attrs_max : attrs_avg)) ||
        (st = only_output0(x)) || (st = act_input(x, 0, &in)))
        return st;
    if (in->rank != 4) return node_err(x, "its input is flat; pooling needs (N, C, H, W)");
    int64_t k, stride, pad, dil, ceil_mode, cip;
    if ((st = attr_square(x, "kernel_shape", 2, 0, &k)) || (st = attr_square(x, "strides", 2, 1, &stride)) ||
        (st = attr_square(x, "pads", 4, 0, &pad)) || (st = attr_square(x, "dilations", 2, 1, &dil)) ||
        (st = attr_int(x, "ceil_mode", 0, &ceil_mode)) ||
        (st = attr_int(x, "count_include_pad", 0, &cip)) || (st = check_auto_pad(x, pad)))
        return st;
    if (!attr(x->node, "kernel_shape")) return node_err(x, "kernel_shape is required");
    if (k < 1 || k > 64 || stride < 1 || stride > 64 || pad < 0 || pad >= k || dil != 1)
        return node_err(x, "kernel %lld, stride %lld, pad %lld, dilation %lld not supported",
                        (long long)k, (long long)stride, (long long)pad, (long long)dil);
    if (in->h + 2 * pad < k || in->w + 2 * pad < k)
        return node_err(x, "the %lldx%lld window is larger than the padded %dx%d input",
                        (long long)k, (long long)k, in->h, in->w);
    const int64_t oh = (in->h + 2 * pad - k) / stride + 1, ow = (in->w + 2 * pad - k) / stride + 1;
    if (ceil_mode) {
        /* ceil_mode changes nothing when every window fits exactly */
        if ((in->h + 2 * pad - k) % stride || (in->w + 2 * pad - k) % stride)
            return node_err(x, "ceil_mode = 1 is not supported (export with ceil_mode=False)");
    }
    int li;
    if (!is_max && pad == 0 && k == in->h && k == in->w) {
        /* one window over the whole input: the global average */
        if (!emit(x, "avgpool", in, &li)) return nomem(x);
        return finish_layer(x, li, in->c, 1, 1, 4);
    }
    json_t *l = emit(x, is_max ? "maxpool" : "avgpool", in, &li);
    if (!l) return nomem(x);
    json_object_set_new(l, "kernel", json_integer(k));
    json_object_set_new(l, "stride", json_integer(stride));
    if (pad) {
        json_object_set_new(l, "pad", json_integer(pad));
        if (!is_max) json_object_set_new(l, "count_include_pad", json_boolean(cip != 0));
    }
    return finish_layer(x, li, in->c, (int)oh, (int)ow, 4);
}

static lsq_status op_global_avgpool(ictx *x)
{
    static const char *const attrs[] = {NULL};
    value *in;
    lsq_status st;
    if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs)) || (st = act_input(x, 0, &in)))
        return st;
    if (in->rank != 4) return node_err(x, "its input is flat; pooling needs (N, C, H, W)");
    int li;
    if (!emit(x, "avgpool", in, &li)) return nomem(x);
    return finish_layer(x, li, in->c, 1, 1, 4);
}

static int same_shape(const value *a, const value *b)
{
    return a->c == b->c && a->h == b->h && a->w == b->w;
}

static lsq_status op_add(ictx *x)
{
    static const char *const attrs[] = {NULL};
    lsq_status st;
    if ((st = need_inputs(x, 2, 2)) || (st = check_attrs(x, attrs))) return st;
    value *a = input_value(x, 0), *b = input_value(x, 1);
    if (a->kind == V_ACT && b->kind == V_ACT) {
        if (!same_shape(a, b))
            return node_err(x, "adds %dx%dx%d and %dx%dx%d; lsq adds equal shapes only", a->c,
                            a->h, a->w, b->c, b->h, b->w);
        int li;
        json_t *l = emit(x, "add", NULL, &li);
        if (!l) return nomem(x);
        json_object_set_new(l, "inputs", json_pack("[s, s]", layer_name_of(x, a->layer),
                                                   layer_name_of(x, b->layer)));
        return finish_layer(x, li, a->c, a->h, a->w, a->rank);
    }
    value *act = a->kind == V_ACT ? a : b, *k = a->kind == V_ACT ? b : a;
    if (act->kind != V_ACT || k->kind != V_CONST)
        return node_err(x, "adds two constants or shapes; lsq adds activations");
    /* the bias of the MatMul just before: its linear layer gets it */
    if (act->layer < 0 || act->layer != x->im->n_layers - 1 ||
        strcmp(x->im->info[act->layer].op, "MatMul") != 0 ||
        json_is_true(json_object_get(json_array_get(x->list, (size_t)act->layer), "bias")) ||
        x->consumers[vmap_find(&x->vals, x->node->input[act == a ? 0 : 1])] != 1)
        return node_err(x, "adds the constant \"%.80s\"; lsq takes a constant Add only as the "
                           "bias of the MatMul before it", k->name);
    const float *bd;
    if ((st = const_data(x, k, (size_t)act->c, "bias", &bd))) return st;
    json_object_set_new(json_array_get(x->list, (size_t)act->layer), "bias", json_true());
    const int bd1[1] = {act->c};
    if ((st = add_param(x, act->layer, ".bias", k, bd, (size_t)act->c, 1, bd1, 0))) return st;
    return set_output(x, 0, act);
}

static lsq_status op_mul(ictx *x)
{
    static const char *const attrs[] = {NULL};
    lsq_status st;
    if ((st = need_inputs(x, 2, 2)) || (st = check_attrs(x, attrs))) return st;
    value *a = input_value(x, 0), *b = input_value(x, 1);
    value *act = a->kind == V_ACT ? a : b;
    size_t ki = a->kind == V_ACT ? 1 : 0;
    value *k = input_value(x, ki);
    if (act->kind != V_ACT || !((k->kind == V_CONST && k->count == 1) || (k->kind == V_SYM && k->n == 1)))
        return node_err(x, "lsq takes Mul only of an activation by a constant scalar");
    float s;
    if ((st = scalar_input(x, ki, &s))) return st;
    if (!isfinite(s)) return node_err(x, "multiplies by %g", (double)s);
    int li;
    json_t *l = emit(x, "scale", act, &li);
    if (!l) return nomem(x);
    json_object_set_new(l, "value", json_float(s));
    return finish_layer(x, li, act->c, act->h, act->w, act->rank);
}

static lsq_status op_concat(ictx *x)
{
    static const char *const attrs[] = {"axis", NULL};
    lsq_status st;
    int64_t axis;
    if ((st = check_attrs(x, attrs)) || (st = attr_int(x, "axis", 1, &axis))) return st;
    if (x->node->n_input < 1) return node_err(x, "has no inputs");
    for (size_t i = 0; i < x->node->n_input; i++)
        if (!input_value(x, i)) return node_err(x, "input %zu is missing", i);
    value *first = input_value(x, 0);
    if (first->kind == V_SYM) {
        /* a shape being assembled: [batch] + [-1] */
        value o;
        memset(&o, 0, sizeof o);
        o.kind = V_SYM;
        if (axis != 0 && axis != -1) return node_err(x, "concatenates shapes on axis %lld", (long long)axis);
        for (size_t i = 0; i < x->node->n_input; i++) {
            value *s;
            if ((st = sym_input(x, i, &s))) return st;
            if (o.n + s->n > SYM_MAX) return node_err(x, "makes a shape of more than %d values", SYM_MAX);
            for (int j = 0; j < s->n; j++) o.v[o.n] = s->v[j], o.batch[o.n++] = s->batch[j];
        }
        return set_output(x, 0, &o);
    }
    value *in0;
    if ((st = act_input(x, 0, &in0))) return st;
    if (x->node->n_input == 1) return set_output(x, 0, in0); /* nothing to join */
    if (!(axis == 1 || axis == -(int64_t)in0->rank + 1))
        return node_err(x, "concatenates on axis %lld; lsq concatenates channels (axis 1)",
                        (long long)axis);
    int c = 0;
    json_t *names = json_array();
    for (size_t i = 0; i < x->node->n_input; i++) {
        value *v;
        if ((st = act_input(x, i, &v))) {
            json_decref(names);
            return st;
        }
        if (v->h != in0->h || v->w != in0->w || v->rank != in0->rank) {
            json_decref(names);
            return node_err(x, "input %zu is %dx%d, input 0 %dx%d; channels concatenate at the "
                               "same height and width", i, v->h, v->w, in0->h, in0->w);
        }
        c += v->c;
        json_array_append_new(names, json_string(layer_name_of(x, v->layer)));
    }
    int li;
    json_t *l = emit(x, "concat", NULL, &li);
    if (!l) {
        json_decref(names);
        return nomem(x);
    }
    json_object_set_new(l, "inputs", names);
    return finish_layer(x, li, c, in0->h, in0->w, in0->rank);
}

/* (N, C, H, W) -> (N, C*H*W): a flatten layer, or nothing for a flat value. */
static lsq_status flatten_to(ictx *x, value *in)
{
    if (in->rank == 2) return set_output(x, 0, in);
    int li;
    if (!emit(x, "flatten", in, &li)) return nomem(x);
    return finish_layer(x, li, in->c * in->h * in->w, 1, 1, 2);
}

static lsq_status op_flatten(ictx *x)
{
    static const char *const attrs[] = {"axis", NULL};
    value *in;
    int64_t axis;
    lsq_status st;
    if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs)) ||
        (st = act_input(x, 0, &in)) || (st = attr_int(x, "axis", 1, &axis)))
        return st;
    if (axis != 1 && axis != 1 - (int64_t)in->rank)
        return node_err(x, "flattens from axis %lld; lsq keeps the batch axis (axis 1)", (long long)axis);
    return flatten_to(x, in);
}

static lsq_status op_reshape(ictx *x)
{
    static const char *const attrs[] = {"allowzero", NULL};
    value *in, *shape;
    int64_t allowzero;
    lsq_status st;
    if ((st = need_inputs(x, 2, 2)) || (st = check_attrs(x, attrs)) ||
        (st = act_input(x, 0, &in)) || (st = attr_int(x, "allowzero", 0, &allowzero)))
        return st;
    if ((st = sym_input(x, 1, &shape))) return st;
    const int64_t f = (int64_t)in->c * in->h * in->w;
    char txt[128] = "";
    size_t o = 0;
    for (int i = 0; i < shape->n && o < sizeof txt - 24; i++)
        o += shape->batch[i] ? (size_t)snprintf(txt + o, sizeof txt - o, "%sN", i ? ", " : "")
                             : (size_t)snprintf(txt + o, sizeof txt - o, "%s%lld", i ? ", " : "",
                                                (long long)shape->v[i]);
    /* (N, -1) / (N, F) with N the batch (symbolic, 0 = copy, or the export's
     * fixed batch size), or (-1, F) */
    int ok = shape->n == 2;
    if (ok) {
        const int first_batch = shape->batch[0] || (shape->v[0] == 0 && !allowzero) || shape->v[0] > 0;
        const int second = !shape->batch[1] && (shape->v[1] == -1 || shape->v[1] == f);
        const int minus_first = !shape->batch[0] && shape->v[0] == -1 && !shape->batch[1] &&
                                shape->v[1] == f;
        ok = (first_batch && second) || minus_first;
    }
    if (!ok)
        return node_err(x, "reshapes %dx%dx%d to [%s]; lsq takes only the (N, -1) reshape that "
                           "flattens", in->c, in->h, in->w, txt);
    return flatten_to(x, in);
}

static lsq_status op_shape(ictx *x)
{
    static const char *const attrs[] = {"start", "end", NULL};
    value *in;
    lsq_status st;
    int64_t start, end;
    if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs)) || (st = act_input(x, 0, &in)))
        return st;
    value full;
    memset(&full, 0, sizeof full);
    full.kind = V_SYM;
    full.batch[0] = 1;
    full.v[0] = -1;
    if (in->rank == 4) full.n = 4, full.v[1] = in->c, full.v[2] = in->h, full.v[3] = in->w;
    else full.n = 2, full.v[1] = in->c;
    if ((st = attr_int(x, "start", 0, &start)) || (st = attr_int(x, "end", full.n, &end))) return st;
    if (start < 0) start += full.n;
    if (end < 0) end += full.n;
    if (start < 0) start = 0;
    if (end > full.n) end = full.n;
    value o;
    memset(&o, 0, sizeof o);
    o.kind = V_SYM;
    for (int64_t i = start; i < end; i++) o.v[o.n] = full.v[i], o.batch[o.n++] = full.batch[i];
    return set_output(x, 0, &o);
}

static lsq_status op_gather(ictx *x)
{
    static const char *const attrs[] = {"axis", NULL};
    value *data, *idx;
    int64_t axis;
    lsq_status st;
    if ((st = need_inputs(x, 2, 2)) || (st = check_attrs(x, attrs)) ||
        (st = attr_int(x, "axis", 0, &axis)))
        return st;
    if ((st = sym_input(x, 0, &data)) || (st = sym_input(x, 1, &idx))) return st;
    if (axis != 0 || data->scalar) return node_err(x, "gathers on axis %lld of a shape", (long long)axis);
    value o;
    memset(&o, 0, sizeof o);
    o.kind = V_SYM;
    o.scalar = idx->scalar;
    for (int i = 0; i < idx->n; i++) {
        int64_t k = idx->v[i];
        if (idx->batch[i]) return node_err(x, "gathers at a computed index");
        if (k < 0) k += data->n;
        if (k < 0 || k >= data->n)
            return node_err(x, "index %lld is outside a shape of %d values", (long long)idx->v[i],
                            data->n);
        o.v[o.n] = data->v[k], o.batch[o.n++] = data->batch[k];
    }
    return set_output(x, 0, &o);
}

static lsq_status op_unsqueeze(ictx *x)
{
    static const char *const attrs_old[] = {"axes", NULL};
    static const char *const attrs_new[] = {NULL};
    value *in;
    lsq_status st;
    int64_t axes[SYM_MAX];
    size_t n_axes = 0;
    if (x->im->opset < 13) {
        if ((st = need_inputs(x, 1, 1)) || (st = check_attrs(x, attrs_old))) return st;
        const Onnx__AttributeProto *a = attr(x->node, "axes");
        if (!a || a->n_ints < 1 || a->n_ints > SYM_MAX) return node_err(x, "axes are required");
        n_axes = a->n_ints;
        for (size_t i = 0; i < n_axes; i++) axes[i] = a->ints[i];
    } else {
        value *ax;
        if ((st = need_inputs(x, 2, 2)) || (st = check_attrs(x, attrs_new)) ||
            (st = sym_input(x, 1, &ax)))
            return st;
        n_axes = (size_t)ax->n;
        for (size_t i = 0; i < n_axes; i++) axes[i] = ax->v[i];
    }
    if ((st = sym_input(x, 0, &in))) return st;
    /* a scalar (the batch size) into a one-value vector */
    if (!in->scalar || n_axes != 1 || (axes[0] != 0 && axes[0] != -1))
        return node_err(x, "lsq follows Unsqueeze only of a scalar on axis 0 (the batch size of "
                           "x.view(x.size(0), -1))");
    value o = *in;
    o.scalar = 0;
    return set_output(x, 0, &o);
}

/* Gemm (A, B[, C]) and MatMul (A, B): a linear layer. */
static lsq_status op_linear(ictx *x, int is_gemm)
{
    static const char *const attrs_gemm[] = {"alpha", "beta", "transA", "transB", NULL};
    static const char *const attrs_mm[] = {NULL};
    value *in, *w, *b = NULL;
    lsq_status st;
    int64_t trans_a = 0, trans_b = 0;
    double alpha = 1, beta = 1;
    if ((st = need_inputs(x, 2, is_gemm ? 3 : 2)) ||
        (st = check_attrs(x, is_gemm ? attrs_gemm : attrs_mm)))
        return st;
    if ((st = act_input(x, 0, &in)) || (st = const_input(x, 1, &w))) return st;
    if (is_gemm) {
        if ((st = attr_int(x, "transA", 0, &trans_a)) || (st = attr_int(x, "transB", 0, &trans_b)) ||
            (st = attr_float(x, "alpha", 1, &alpha)) || (st = attr_float(x, "beta", 1, &beta)))
            return st;
        if (input_value(x, 2) && (st = const_input(x, 2, &b))) return st;
        if (trans_a) return node_err(x, "transA = 1 is not supported: the input must be (N, in)");
        if (alpha != 1 || (b && beta != 1))
            return node_err(x, "alpha %g and beta %g: lsq imports Gemm with alpha = beta = 1 "
                               "(a linear layer)", alpha, beta);
    }
    if (in->h != 1 || in->w != 1)
        return node_err(x, "its input is %dx%dx%d; a linear layer needs a flat input", in->c,
                        in->h, in->w);
    if (w->ndim != 2) return node_err(x, "the weight \"%.80s\" has rank %d, 2 expected", w->name, w->ndim);
    /* the engine's weight is (out, in) */
    const int64_t rows = w->dims[0], cols = w->dims[1];
    const int64_t out = trans_b ? rows : cols, inf = trans_b ? cols : rows;
    if (inf != in->c)
        return node_err(x, "the weight \"%.80s\" is %lldx%lld; it does not fit %d inputs", w->name,
                        (long long)rows, (long long)cols, in->c);
    const float *wd, *bd = NULL;
    float *bexp = NULL;
    if ((st = const_data(x, w, w->count, "weight", &wd))) return st;
    if (b) {
        if (b->count == 1 && out > 1) {
            /* a broadcast scalar bias */
            const float *one = const_floats(x, b);
            if (!one) return x->err->code;
            bexp = ctx_alloc_floats(x, (size_t)out);
            if (!bexp) return nomem(x);
            for (int64_t i = 0; i < out; i++) bexp[i] = one[0];
            bd = bexp;
        } else if ((st = const_data(x, b, (size_t)out, "bias", &bd))) {
            return st;
        }
    }
    int li;
    json_t *l = emit(x, "linear", in, &li);
    if (!l) return nomem(x);
    json_object_set_new(l, "out", json_integer(out));
    json_object_set_new(l, "bias", json_boolean(b != NULL));
    const int wd2[2] = {(int)out, (int)inf}, bd1[1] = {(int)out};
    if ((st = add_param(x, li, ".weight", w, wd, w->count, 2, wd2, trans_b ? 0 : (int)rows)))
        return st;
    if (b && (st = add_param(x, li, ".bias", b, bd, (size_t)out, 1, bd1, 0))) return st;
    x->im->info[li].macs = (double)w->count;
    return finish_layer(x, li, (int)out, 1, 1, 2);
}

static lsq_status op_identity(ictx *x, int is_dropout)
{
    static const char *const attrs_d[] = {"ratio", "seed", "is_test", NULL};
    static const char *const attrs_i[] = {NULL};
    lsq_status st;
    if ((st = need_inputs(x, 1, is_dropout ? 3 : 1)) ||
        (st = check_attrs(x, is_dropout ? attrs_d : attrs_i)) || (st = only_output0(x)))
        return st;
    return set_output(x, 0, input_value(x, 0)); /* inference: the input itself */
}

static lsq_status op_constant(ictx *x)
{
    static const char *const attrs[] = {"value", "value_float", "value_floats", "value_int",
                                        "value_ints", NULL};
    lsq_status st;
    if ((st = check_attrs(x, attrs))) return st;
    if (x->node->n_attribute != 1) return node_err(x, "needs exactly one value attribute");
    const Onnx__AttributeProto *a = x->node->attribute[0];
    value v;
    memset(&v, 0, sizeof v);
    const char *n = a->name;
    if (strcmp(n, "value") == 0) {
        if (!a->t) return node_err(x, "its value is not a tensor");
        char what[160];
        snprintf(what, sizeof what, "the value of Constant %s", node_label(x->node));
        if ((st = tensor_value(x, a->t, what, &v))) return st;
    } else if (strcmp(n, "value_int") == 0 || strcmp(n, "value_ints") == 0) {
        v.kind = V_SYM;
        v.scalar = n[9] == '\0';
        v.n = v.scalar ? 1 : (int)a->n_ints;
        if (v.n > SYM_MAX) return node_err(x, "holds more than %d integers", SYM_MAX);
        if (v.scalar) v.v[0] = a->i;
        else
            for (int i = 0; i < v.n; i++) v.v[i] = a->ints[i];
    } else {
        const int scalar = strcmp(n, "value_float") == 0;
        v.kind = V_CONST;
        v.count = scalar ? 1 : a->n_floats;
        v.ndim = scalar ? 0 : 1;
        v.dims[0] = (int64_t)v.count;
        v.f = ctx_alloc_floats(x, v.count);
        if (!v.f) return nomem(x);
        if (scalar) v.f[0] = a->f;
        else if (v.count) memcpy(v.f, a->floats, v.count * sizeof *v.f);
    }
    return set_output(x, 0, &v);
}

static lsq_status run_node(ictx *x)
{
    const char *op = x->node->op_type;
    if (strcmp(op, "Conv") == 0) return op_conv(x);
    if (strcmp(op, "BatchNormalization") == 0) return op_batchnorm(x);
    if (strcmp(op, "Relu") == 0) return op_relu(x);
    if (strcmp(op, "Clip") == 0) return op_clip(x);
    if (strcmp(op, "LeakyRelu") == 0) return op_leakyrelu(x);
    if (strcmp(op, "MaxPool") == 0) return op_pool(x, 1);
    if (strcmp(op, "AveragePool") == 0) return op_pool(x, 0);
    if (strcmp(op, "GlobalAveragePool") == 0) return op_global_avgpool(x);
    if (strcmp(op, "Add") == 0) return op_add(x);
    if (strcmp(op, "Mul") == 0) return op_mul(x);
    if (strcmp(op, "Concat") == 0) return op_concat(x);
    if (strcmp(op, "Flatten") == 0) return op_flatten(x);
    if (strcmp(op, "Reshape") == 0) return op_reshape(x);
    if (strcmp(op, "Shape") == 0) return op_shape(x);
    if (strcmp(op, "Gather") == 0) return op_gather(x);
    if (strcmp(op, "Unsqueeze") == 0) return op_unsqueeze(x);
    if (strcmp(op, "Gemm") == 0) return op_linear(x, 1);
    if (strcmp(op, "MatMul") == 0) return op_linear(x, 0);
    if (strcmp(op, "Identity") == 0) return op_identity(x, 0);
    if (strcmp(op, "Dropout") == 0) return op_identity(x, 1);
    if (strcmp(op, "Constant") == 0) return op_constant(x);
    return node_err(x, "lsq cannot import %s; supported: " SUPPORTED_LIST, op);
}

/* ------------------------------------------------------------ the graph */

static int is_initializer(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; i++)
        if (g->initializer[i]->name && strcmp(g->initializer[i]->name, name) == 0) return 1;
    return 0;
}

static lsq_status graph_input(ictx *x, const Onnx__ValueInfoProto **out)
{
    const Onnx__GraphProto *g = x->g;
    const Onnx__ValueInfoProto *in = NULL;
    int n = 0;
    char names[200] = "";
    size_t o = 0;
    for (size_t i = 0; i < g->n_input; i++) {
        const char *name = g->input[i]->name ? g->input[i]->name : "";
        if (is_initializer(g, name)) continue; /* a weight listed as an input */
        if (o < sizeof names - 1)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s\"%.60s\"", n ? ", " : "", name);
        in = g->input[i];
        n++;
    }
    if (n != 1)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.input",
                           "the graph has %d inputs besides its initializers (%s); lsq imports "
                           "models with one image input", n, names);
    if (!in->name || !*in->name)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.input",
                           "the graph's image input has no name");
    *out = in;
    return LSQ_OK;
}

/* The image input: float (N, C, H, W) with C, H, W known and N anything. */
static lsq_status image_shape(ictx *x, const Onnx__ValueInfoProto *in)
{
    char field[128];
    const char *name = in->name ? in->name : "";
    snprintf(field, sizeof field, "model.onnx.graph.input[%.90s]", name);
    const Onnx__TypeProto *tp = in->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, field, "input \"%.80s\" is not a tensor", name);
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    if (tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, field,
                           "input \"%.80s\" is %s; lsq feeds float32 images", name,
                           dtype_name(tt->elem_type));
    if (!tt->shape)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, field,
                           "input \"%.80s\" has no shape; export with a fixed (C, H, W)", name);
    const Onnx__TensorShapeProto *sh = tt->shape;
    char dims[96] = "";
    size_t o = 0;
    for (size_t i = 0; i < sh->n_dim && o < sizeof dims - 24; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[i];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
            o += (size_t)snprintf(dims + o, sizeof dims - o, "%s%lld", i ? ", " : "",
                                  (long long)d->dim_value);
        else
            o += (size_t)snprintf(dims + o, sizeof dims - o, "%s%.16s", i ? ", " : "",
                                  d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && d->dim_param
                                      ? d->dim_param : "?");
    }
    if (sh->n_dim != 4)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, field,
                           "input \"%.80s\" has shape [%s]; lsq imports image models with a 4-D "
                           "input (N, C, H, W)", name, dims);
    int v[3];
    for (int i = 0; i < 3; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[i + 1];
        if (d->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
            d->dim_value < 1 || d->dim_value > 4096)
            return lsq_err_set(x->err, LSQ_ERR_INVALID, field,
                               "input \"%.80s\" has shape [%s]; C, H and W must be fixed, "
                               "1..4096", name, dims);
        v[i] = (int)d->dim_value;
    }
    x->im->c = v[0], x->im->h = v[1], x->im->w = v[2];
    return LSQ_OK;
}

static int op_supported(const Onnx__NodeProto *n)
{
    if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx") != 0) return 0;
    for (const char *const *s = SUPPORTED_OPS; *s; s++)
        if (n->op_type && strcmp(n->op_type, *s) == 0) return 1;
    return 0;
}

/* Kahn's order of the nodes into order[]; checks that every input is made
 * by a node, an initializer or the graph input (x->vals holds those two),
 * that nothing is made twice and that there is no cycle. */
static lsq_status topo_order(ictx *x, int *order)
{
    const Onnx__GraphProto *g = x->g;
    const int nn = (int)g->n_node;
    lsq_status st = LSQ_OK;
    size_t n_edges = 0;
    for (int i = 0; i < nn; i++) n_edges += g->node[i]->n_input;
    int *indeg = calloc((size_t)nn + 1, sizeof *indeg);
    int *queue = calloc((size_t)nn + 1, sizeof *queue);
    int *first = calloc((size_t)nn + 2, sizeof *first); /* CSR: the readers of node p */
    int *reader = calloc(n_edges + 1, sizeof *reader);
    int *src = calloc(n_edges + 1, sizeof *src);        /* per (node, input): its maker or -1 */
    vmap made;
    memset(&made, 0, sizeof made);
    if (!indeg || !queue || !first || !reader || !src) {
        st = nomem(x);
        goto out;
    }
    /* which node makes each tensor */
    for (int i = 0; i < nn && st == LSQ_OK; i++) {
        const Onnx__NodeProto *n = g->node[i];
        x->node = n;
        for (size_t k = 0; k < n->n_output && st == LSQ_OK; k++) {
            if (!n->output[k] || !*n->output[k]) continue;
            if (vmap_find(&made, n->output[k]) >= 0 || vmap_find(&x->vals, n->output[k]) >= 0) {
                st = node_err(x, "makes \"%.80s\", which another node, an initializer or the "
                                 "graph input already makes", n->output[k]);
                break;
            }
            value v;
            memset(&v, 0, sizeof v);
            v.name = n->output[k];
            v.layer = i; /* here: the node that makes it */
            if (vmap_put(&made, &v) < 0) st = nomem(x);
        }
    }
    if (st) goto out;
    size_t e = 0;
    for (int i = 0; i < nn; i++) {
        const Onnx__NodeProto *n = g->node[i];
        x->node = n;
        for (size_t k = 0; k < n->n_input; k++, e++) {
            const char *in = n->input[k];
            src[e] = -1;
            if (!in || !*in) continue;
            int m = vmap_find(&made, in);
            if (m >= 0) {
                src[e] = made.vals[m].layer;
                indeg[i]++;
                first[src[e] + 1]++;
            } else if (vmap_find(&x->vals, in) < 0) {
                st = node_err(x, "reads \"%.80s\", which no node makes and which is neither an "
                                 "initializer nor a graph input", in);
                goto out;
            }
        }
    }
    for (int i = 0; i < nn; i++) first[i + 1] += first[i];
    {
        int *fill = calloc((size_t)nn + 1, sizeof *fill);
        if (!fill) {
            st = nomem(x);
            goto out;
        }
        e = 0;
        for (int i = 0; i < nn; i++)
            for (size_t k = 0; k < g->node[i]->n_input; k++, e++)
                if (src[e] >= 0) reader[first[src[e]] + fill[src[e]]++] = i;
        free(fill);
    }
    int head = 0, tail = 0, done = 0;
    for (int i = 0; i < nn; i++)
        if (!indeg[i]) queue[tail++] = i;
    while (head < tail) {
        int p = queue[head++];
        order[done++] = p;
        for (int r = first[p]; r < first[p + 1]; r++)
            if (--indeg[reader[r]] == 0) queue[tail++] = reader[r];
    }
    if (done < nn) {
        for (int i = 0; i < nn; i++)
            if (indeg[i]) {
                x->node = g->node[i];
                st = node_err(x, "the graph has a cycle through this node");
                break;
            }
    }
out:
    free(indeg);
    free(queue);
    free(first);
    free(reader);
    free(src);
    free(made.vals);
    free(made.slots);
    return st;
}

/* Marks the nodes the graph output depends on (x->uses). */
static lsq_status mark_uses(ictx *x, const int *order, const char *output)
{
    lsq_status st = LSQ_OK;
    const Onnx__GraphProto *g = x->g;
    vmap need;
    memset(&need, 0, sizeof need);
    value v;
    memset(&v, 0, sizeof v);
    v.name = output;
    if (vmap_put(&need, &v) < 0) st = nomem(x);
    for (int oi = (int)g->n_node - 1; oi >= 0 && st == LSQ_OK; oi--) {
        const Onnx__NodeProto *n = g->node[order[oi]];
        int used = 0;
        for (size_t k = 0; k < n->n_output && !used; k++)
            used = n->output[k] && *n->output[k] && vmap_find(&need, n->output[k]) >= 0;
        if (!used) continue;
        x->uses[order[oi]] = 1;
        for (size_t k = 0; k < n->n_input; k++)
            if (n->input[k] && *n->input[k]) {
                v.name = n->input[k];
                if (vmap_put(&need, &v) < 0) st = nomem(x);
            }
    }
    free(need.vals);
    free(need.slots);
    return st;
}

static lsq_status import_model(ictx *x)
{
    const Onnx__ModelProto *m = x->model;
    onnx_import *im = x->im;
    lsq_status st;
    if (!m->graph)
        return lsq_err_set(x->err, LSQ_ERR_FORMAT, "model.onnx",
                           "not an ONNX model: the file has no graph");
    x->g = m->graph;
    const Onnx__GraphProto *g = m->graph;
    im->ir_version = m->has_ir_version ? m->ir_version : 0;
    snprintf(im->producer, sizeof im->producer, "%s%s%s", m->producer_name ? m->producer_name : "",
             m->producer_version && *m->producer_version ? " " : "",
             m->producer_version ? m->producer_version : "");
    im->opset = -1;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        if (!o->domain || !*o->domain || strcmp(o->domain, "ai.onnx") == 0)
            im->opset = o->has_version ? o->version : 0;
    }
    if (im->opset < 0)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx",
                           "the model imports no opset of the default ONNX domain");
    if (im->opset < ONNX_IMPORT_OPSET_MIN || im->opset > ONNX_IMPORT_OPSET_MAX)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx",
                           "opset %lld: lsq imports opsets %d..%d (torch.onnx.export(..., "
                           "opset_version=%d))", (long long)im->opset, ONNX_IMPORT_OPSET_MIN,
                           ONNX_IMPORT_OPSET_MAX, ONNX_IMPORT_OPSET_MAX);
    if (g->n_output != 1)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.output",
                           "the graph has %zu outputs; lsq imports one (the logits)", g->n_output);
    const Onnx__ValueInfoProto *input = NULL;
    if ((st = graph_input(x, &input)) || (st = image_shape(x, input))) return st;
    /* every initializer, checked whether used or not */
    for (size_t i = 0; i < g->n_initializer; i++) {
        value v;
        memset(&v, 0, sizeof v);
        v.name = g->initializer[i]->name ? g->initializer[i]->name : "";
        if (!*v.name) return init_err(x, "", "an initializer has no name");
        if ((st = tensor_value(x, g->initializer[i], v.name, &v))) return st;
        if (vmap_put(&x->vals, &v) < 0) return nomem(x);
    }
    {
        value img = act_value(-1, im->c, im->h, im->w, 4);
        img.name = input->name;
        if (vmap_put(&x->vals, &img) < 0) return nomem(x);
    }
    for (size_t i = 0; i < g->n_node; i++) {
        x->node = g->node[i];
        if (!op_supported(x->node))
            return node_err(x, "lsq cannot import %s%s%s; supported: " SUPPORTED_LIST,
                            x->node->domain && *x->node->domain ? x->node->domain : "",
                            x->node->domain && *x->node->domain ? "." : "",
                            x->node->op_type ? x->node->op_type : "(no op_type)");
    }
    int *order = malloc((g->n_node + 1) * sizeof *order);
    x->uses = calloc(g->n_node + 1, sizeof *x->uses);
    if (!order || !x->uses) {
        free(order);
        return nomem(x);
    }
    st = topo_order(x, order);
    const char *output = g->output[0]->name ? g->output[0]->name : "";
    if (st == LSQ_OK) st = mark_uses(x, order, output);
    if (st == LSQ_OK) {
        /* readers of each tensor among the used nodes (for aliases and the
         * bias fold); values not yet in the map are added as placeholders */
        for (size_t i = 0; i < g->n_node && st == LSQ_OK; i++) {
            const Onnx__NodeProto *n = g->node[i];
            for (size_t k = 0; k < n->n_output; k++) {
                if (!n->output[k] || !*n->output[k]) continue;
                value v;
                memset(&v, 0, sizeof v);
                v.name = n->output[k];
                if (vmap_put(&x->vals, &v) < 0) st = nomem(x);
            }
        }
        if (st == LSQ_OK) {
            x->consumers = calloc((size_t)x->vals.n + 1, sizeof *x->consumers);
            if (!x->consumers) st = nomem(x);
        }
        for (size_t i = 0; i < g->n_node && st == LSQ_OK; i++) {
            if (!x->uses[i]) continue;
            const Onnx__NodeProto *n = g->node[i];
            for (size_t k = 0; k < n->n_input; k++)
                if (n->input[k] && *n->input[k]) {
                    int vi = vmap_find(&x->vals, n->input[k]);
                    if (vi >= 0) x->consumers[vi]++;
                }
        }
        if (st == LSQ_OK) {
            int vo = vmap_find(&x->vals, output);
            if (vo < 0) {
                st = lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.output",
                                 "no node makes the graph output \"%.80s\"", output);
            } else {
                x->consumers[vo]++;
            }
        }
    }
    for (size_t oi = 0; oi < g->n_node && st == LSQ_OK; oi++) {
        if (!x->uses[order[oi]]) continue;
        x->node = g->node[order[oi]];
        st = run_node(x);
    }
    free(order);
    if (st) return st;
    /* the logits */
    const value *out = &x->vals.vals[vmap_find(&x->vals, output)];
    if (out->kind != V_ACT || out->layer < 0)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.output",
                           "the graph output \"%.80s\" is %s; lsq imports a network whose output "
                           "is its last layer", output,
                           out->kind == V_ACT ? "the input itself" : "a constant");
    if (out->layer != im->n_layers - 1 || out->h != 1 || out->w != 1)
        return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.output",
                           "the graph output \"%.80s\" (%dx%dx%d) is not the flat output of the "
                           "last layer; lsq imports classifiers ending in (N, classes)", output,
                           out->c, out->h, out->w);
    im->classes = out->c;
    const Onnx__TypeProto *tp = g->output[0]->type;
    if (tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && tp->tensor_type &&
        tp->tensor_type->shape && tp->tensor_type->shape->n_dim == 2) {
        const Onnx__TensorShapeProto__Dimension *d = tp->tensor_type->shape->dim[1];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
            d->dim_value != im->classes)
            return lsq_err_set(x->err, LSQ_ERR_INVALID, "model.onnx.graph.output",
                               "the graph output declares %lld classes but the last layer makes %d",
                               (long long)d->dim_value, im->classes);
    }
    return LSQ_OK;
}

/* ------------------------------------------------------------ public */

void onnx_import_free(onnx_import *im)
{
    if (!im) return;
    json_decref(im->layers);
    for (int i = 0; i < im->n_params; i++) free(im->params[i].data);
    free(im->params);
    free(im->info);
    memset(im, 0, sizeof *im);
}

lsq_status onnx_import_bytes(onnx_import *im, const void *data, size_t len, lsq_err *err)
{
    memset(im, 0, sizeof *im);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, data);
    if (!m)
        return lsq_err_set(err, LSQ_ERR_FORMAT, "model.onnx",
                           "not an ONNX model: the %zu bytes do not decode as an ONNX ModelProto "
                           "(protobuf), or the file is truncated", len);
    ictx x;
    memset(&x, 0, sizeof x);
    x.model = m;
    x.im = im;
    lsq_err local;
    x.err = err ? err : &local;
    im->layers = json_object();
    x.list = json_array();
    lsq_status st = LSQ_OK;
    if (!im->layers || !x.list) st = nomem(&x);
    else st = import_model(&x);
    if (st == LSQ_OK && json_object_set_new(im->layers, "input",
                                            json_pack("[i, i, i]", im->c, im->h, im->w)) != 0)
        st = nomem(&x);
    if (st == LSQ_OK && json_object_set(im->layers, "layers", x.list) != 0) st = nomem(&x);
    json_decref(x.list);
    for (int i = 0; i < x.n_owned; i++) free(x.owned[i]);
    free(x.owned);
    free(x.vals.vals);
    free(x.vals.slots);
    free(x.uses);
    free(x.consumers);
    onnx__model_proto__free_unpacked(m, NULL);
    if (st != LSQ_OK) onnx_import_free(im);
    return st;
}

lsq_status onnx_import_file(onnx_import *im, const char *path, size_t max_bytes, lsq_err *err)
{
    memset(im, 0, sizeof *im);
    FILE *f = fopen(path, "rb");
    if (!f)
        return lsq_err_set(err, LSQ_ERR_IO, "model.onnx", "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    lsq_status st = LSQ_OK;
    uint8_t *buf = NULL;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = lsq_err_set(err, LSQ_ERR_IO, "model.onnx", "%s is not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        st = lsq_err_set(err, LSQ_ERR_INVALID, "model.onnx",
                         "%s is %lld bytes, over the limit of %zu bytes for an ONNX model", path,
                         (long long)sb.st_size, max_bytes);
        goto out;
    }
    size_t len = (size_t)sb.st_size;
    buf = malloc(len ? len : 1);
    if (!buf) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, "model.onnx", "out of memory reading %s", path);
        goto out;
    }
    if (fread(buf, 1, len, f) != len) {
        st = lsq_err_set(err, LSQ_ERR_IO, "model.onnx", "cannot read %s", path);
        goto out;
    }
    st = onnx_import_bytes(im, buf, len, err);
    if (st != LSQ_OK) lsq_err_prefix(err, path);
out:
    free(buf);
    fclose(f);
    return st;
}

lsq_status onnx_import_set_params(const onnx_import *im, lsq_net *net, lsq_err *err)
{
    char *got = calloc((size_t)net->n_views + 1, 1);
    if (!got) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory");
    lsq_status st = LSQ_OK;
    for (int i = 0; i < im->n_params && st == LSQ_OK; i++) {
        const onnx_param *p = &im->params[i];
        int v = -1;
        for (int k = 0; k < net->n_views && v < 0; k++)
            if (strcmp(net->views[k].name, p->name) == 0) v = k;
        const net_view *vw = v >= 0 ? &net->views[v] : NULL;
        int same = vw && vw->ndim == p->ndim && vw->count == p->count;
        for (int d = 0; same && d < p->ndim; d++) same = vw->dims[d] == p->dims[d];
        if (!same) {
            char have[64] = "none";
            if (vw) {
                size_t o = 0;
                for (int d = 0; d < vw->ndim; d++)
                    o += (size_t)snprintf(have + o, sizeof have - o, "%s%d", d ? "x" : "", vw->dims[d]);
            }
            char want[64] = "";
            size_t o = 0;
            for (int d = 0; d < p->ndim; d++)
                o += (size_t)snprintf(want + o, sizeof want - o, "%s%d", d ? "x" : "", p->dims[d]);
            st = lsq_err_set(err, LSQ_ERR_INVALID, "model.onnx",
                             "the network has %s for %s where the ONNX model has a %s tensor (%s)",
                             vw ? have : "no view", p->name, want, p->src);
            break;
        }
        float *dst = (vw->in_state ? net->state : net->params) + vw->off;
        memcpy(dst, p->data, p->count * sizeof *dst);
        got[v] = 1;
    }
    for (int k = 0; k < net->n_views && st == LSQ_OK; k++) {
        pv_kind kind = net->views[k].kind;
        if (!got[k] && (kind == PV_WEIGHT || kind == PV_BIAS || kind == PV_BN_GAMMA ||
                        kind == PV_BN_BETA || kind == PV_RUNNING))
            st = lsq_err_set(err, LSQ_ERR_INVALID, "model.onnx",
                             "the ONNX model has no value for %s", net->views[k].name);
    }
    free(got);
    return st;
}
