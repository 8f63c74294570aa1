/* ONNX import: a float CNN exported to ONNX (torch.onnx.export, opsets
 * 9..17) read into what the engine trains from: the JSON layer list that
 * net_build takes ({"input": [C, H, W], "layers": [...]}), the initial
 * values of every weight, bias and batch-norm tensor by view name, and the
 * class count.
 *
 * Operators: Conv, BatchNormalization (inference form; its training-mode
 * outputs unused), Relu, Clip, LeakyRelu, MaxPool, AveragePool,
 * GlobalAveragePool, Add (two activations, or a constant bias after
 * MatMul), Mul by a scalar constant, Concat (channels), Flatten, Reshape to
 * (N, -1) (with the Shape -> Gather -> Unsqueeze -> Concat chain of
 * x.view(x.size(0), -1), or constant-folded), Gemm, MatMul, Identity,
 * Dropout (identity), Constant. Layer names come from the ONNX node names
 * ("/layer1/conv1/Conv" -> "layer1.conv1"), made unique, 1..47 characters
 * of A-Z a-z 0-9 . _ -. docs/import.md lists what is refused and why.
 *
 * The protobuf structs stay inside onnx_import.c: callers see only this. */
#ifndef LSQ_ONNX_IMPORT_H
#define LSQ_ONNX_IMPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "graph/net.h"

/* A sensible file-size cap for callers without one of their own. */
#define ONNX_IMPORT_MAX_BYTES ((size_t)512 << 20)
#define ONNX_IMPORT_OPSET_MIN 9
#define ONNX_IMPORT_OPSET_MAX 17

/* The initial value of one view of the net: a weight, bias, batch-norm
 * gamma/beta or running statistic. */
typedef struct {
    char name[112];       /* the view: "layer1.conv1.weight", "bn1.running_var" */
    char src[128];        /* the ONNX initializer (or Constant output) it came from */
    int transposed;       /* 1: stored (in, out) in the file (MatMul, Gemm with
                           * transB 0), transposed here to the engine's (out, in) */
    int ndim, dims[4];
    size_t count;
    float *data;          /* (count), owned */
} onnx_param;

/* One layer of the list, for people: where it came from and its size. */
typedef struct {
    char node[128];       /* the ONNX node ("" when unnamed) */
    char op[32];          /* its op_type */
    int c, h, w;          /* output shape of one example */
    size_t params;        /* weights, biases and batch-norm values */
    double macs;          /* multiply-accumulates per example (conv, linear) */
} onnx_layer_info;

typedef struct {
    json_t *layers;        /* {"input": [C, H, W], "layers": [...]}, owned */
    int c, h, w;           /* input of one example */
    int classes;           /* outputs of the last layer */
    int n_params;
    onnx_param *params;    /* in layer order, owned */
    int n_layers;
    onnx_layer_info *info; /* (n_layers), parallel to layers["layers"] */
    int64_t ir_version, opset;
    char producer[64];     /* "pytorch 1.13.0" */
    int bn_training;       /* BatchNormalization nodes exported in training
                            * mode (their graph normalises with the batch's
                            * statistics; lsq's eval uses the running ones) */
} onnx_import;

/* Reads a serialized ModelProto (len bytes, borrowed). On success fills im
 * (release with onnx_import_free); on failure im is empty and err says what
 * is wrong: LSQ_ERR_FORMAT for bytes that are not an ONNX model (not
 * protobuf, truncated), LSQ_ERR_INVALID for a model lsq does not import
 * (an unsupported op, an input that is not one 4-D image, a cycle, an
 * initializer whose data disagrees with its dims, external data...), with
 * err->field naming it: "model.onnx", "model.onnx.graph.node[NAME]",
 * "model.onnx.graph.initializer[NAME]", "model.onnx.graph.input[NAME]". */
lsq_status onnx_import_bytes(onnx_import *im, const void *data, size_t len, lsq_err *err);

/* The same from a file of at most max_bytes (LSQ_ERR_IO when it cannot be
 * read, LSQ_ERR_INVALID when it is larger); messages start with the path. */
lsq_status onnx_import_file(onnx_import *im, const char *path, size_t max_bytes, lsq_err *err);

void onnx_import_free(onnx_import *im);

/* Copies every imported value into the view of net with its name (net built
 * from im->layers, float or quantized). Every value must find a view of the
 * same shape, and every weight, bias and batch-norm view of net must get a
 * value (LSQ_ERR_INVALID naming the view otherwise). */
lsq_status onnx_import_set_params(const onnx_import *im, lsq_net *net, lsq_err *err);

#endif
