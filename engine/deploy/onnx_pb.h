/* A small encoder for the protobuf wire format and, on top of it, a builder
 * for ONNX models: ModelProto (IR version 8, default-domain opset 13,
 * producer "lsqd") holding one GraphProto with nodes, initializers, and graph
 * inputs and outputs. Only what lsqd's export needs is covered.
 *
 * Usage:
 *     onnx_model *m = onnx_model_new("lsq");
 *     onnx_input_add(m, "x", ONNX_FLOAT, ONNX_DIMS(-1, 784));  -1: batch "N"
 *     onnx_initializer_add(m, "w", ONNX_INT8, ONNX_DIMS(10, 784), codes);
 *     onnx_node *n = onnx_node_add(m, "DequantizeLinear", "dq_w",
 *                                  ONNX_NAMES("w", "w_scale"),
 *                                  ONNX_NAMES("w_f"));
 *     onnx_attr_int(n, "axis", 0);
 *     ...
 *     onnx_model_save(m, "model.onnx", &err);
 *     onnx_model_free(m);
 * Builder calls never fail on their own: an allocation failure or a bad
 * argument is remembered and reported by onnx_model_encode/save, and calls
 * with a NULL model or node do nothing. Tensor data is little-endian, as
 * ONNX raw_data requires (the host's order on x86 and ARM).
 *
 * For an exact fake-quantized graph, put an activation's range clip before
 * its QuantizeLinear, so that DequantizeLinear feeds MatMul/Conv directly:
 * with a Clip in between, onnxruntime's default graph optimizations
 * re-quantize the activation dynamically and the result is no longer
 * exact (tests/unit/deploy/test_onnx_pb.c builds the exact form). */
#ifndef LSQ_ONNX_PB_H
#define LSQ_ONNX_PB_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define ONNX_IR_VERSION 8
#define ONNX_OPSET 13

/* ONNX TensorProto.DataType values. */
typedef enum {
    ONNX_FLOAT = 1,
    ONNX_UINT8 = 2,
    ONNX_INT8 = 3,
    ONNX_INT32 = 6,
    ONNX_INT64 = 7,
} onnx_dtype;

/* ---- protobuf wire format ---- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int oom; /* an allocation failed; later writes are dropped */
} pb_buf;

void pb_buf_free(pb_buf *b);
void pb_put_varint(pb_buf *b, uint64_t v);
/* Field writers; `field` is the protobuf field number. */
void pb_put_int(pb_buf *b, int field, int64_t v);   /* varint (int32/int64/enum) */
void pb_put_float(pb_buf *b, int field, float v);   /* fixed32 */
void pb_put_bytes(pb_buf *b, int field, const void *p, size_t n);
void pb_put_str(pb_buf *b, int field, const char *s);
void pb_put_msg(pb_buf *b, int field, const pb_buf *msg);

/* ---- ONNX model builder ---- */

typedef struct onnx_model onnx_model;
typedef struct onnx_node onnx_node;

/* Compound-literal helpers for name and dimension lists. */
#define ONNX_NAMES(...)                                                     \
    (const char *const[]){__VA_ARGS__},                                     \
        (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(char *))
#define ONNX_DIMS(...)                                                      \
    (const int64_t[]){__VA_ARGS__},                                         \
        (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define ONNX_SCALAR NULL, 0 /* dims of a scalar */
#define ONNX_NONE NULL, 0   /* no names (a node without inputs) */

/* A model with an empty graph named graph_name; NULL when out of memory.
 * Free with onnx_model_free. */
onnx_model *onnx_model_new(const char *graph_name);
void onnx_model_free(onnx_model *m);

/* Appends a node (nodes must be added in topological order). An empty input
 * name "" marks an omitted optional input. The node belongs to the model;
 * the handle is valid until onnx_model_free and only serves to add
 * attributes. NULL when out of memory. */
onnx_node *onnx_node_add(onnx_model *m, const char *op_type, const char *name,
                         const char *const *inputs, int n_inputs,
                         const char *const *outputs, int n_outputs);

void onnx_attr_int(onnx_node *n, const char *name, int64_t v);
void onnx_attr_ints(onnx_node *n, const char *name, const int64_t *v,
                    int count);
void onnx_attr_float(onnx_node *n, const char *name, float v);
/* A tensor attribute (e.g. Constant's "value"); data holds prod(dims)
 * elements of dt, copied. ndims = 0 is a scalar. */
void onnx_attr_tensor(onnx_node *n, const char *name, onnx_dtype dt,
                      const int64_t *dims, int ndims, const void *data);

/* A named constant tensor of the graph (raw_data), copied. */
void onnx_initializer_add(onnx_model *m, const char *name, onnx_dtype dt,
                          const int64_t *dims, int ndims, const void *data);

/* Graph inputs and outputs; a negative dimension is the symbolic batch
 * dimension "N". */
void onnx_input_add(onnx_model *m, const char *name, onnx_dtype dt,
                    const int64_t *dims, int ndims);
void onnx_output_add(onnx_model *m, const char *name, onnx_dtype dt,
                     const int64_t *dims, int ndims);

/* The serialized ModelProto in *out (malloc'd, the caller frees it), its
 * size in *len. Reports the first problem met while building:
 * LSQ_ERR_NOMEM, or LSQ_ERR_INVALID for a bad argument (named in the
 * message). */
lsq_status onnx_model_encode(const onnx_model *m, uint8_t **out, size_t *len,
                             lsq_err *err);
/* Encodes and writes the model to path (LSQ_ERR_IO on write failure). */
lsq_status onnx_model_save(const onnx_model *m, const char *path,
                           lsq_err *err);

#endif
