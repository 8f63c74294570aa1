/* ONNX export (opset 13) of a network, computing what the float engine
 * computes in eval mode (net_forward with training = 0), to the rounding of
 * float sums taken in another order (docs/model-format.md):
 *  - quantized weights: int8 initializers of the codes + DequantizeLinear
 *    (per-tensor, or per output channel with axis 0);
 *  - quantized layer inputs: Clip to the representable range
 *    [-QN*s + beta, QP*s + beta] -> QuantizeLinear -> DequantizeLinear
 *    (uint8 codes for unsigned, int8 for signed; LSQ+ offsets as Sub / Add
 *    around them), so round half to even happens on the same values. The
 *    clip comes before QuantizeLinear so that DequantizeLinear feeds
 *    Conv / MatMul directly: with a Clip in between, onnxruntime's default
 *    graph optimizations re-quantize the activation dynamically and the
 *    result is no longer exact;
 *  - one node per layer, for every layer a layer list has, in any DAG:
 *    Conv (grouped, depthwise, dilated; a quantized conv's bias as an Add
 *    after it, out of reach of onnxruntime's int32 bias rounding) /
 *    MatMul + Add, BatchNormalization
 *    (running statistics), Relu, Clip (a missing bound an empty input),
 *    LeakyRelu, Mul (scale), MaxPool and AveragePool with their pads,
 *    GlobalAveragePool, Add, Concat (axis 1), Flatten; layers left in float
 *    keep float initializers.
 * Input "input": float32 (N, C, H, W), pixels / 255; a net with
 * "normalize" normalises it in the graph exactly as the loader does
 * (input * 255 * scale[c] + bias[c], loader_normalize_coefs). Output
 * "logits": float32 (N, classes). The model is built with the C structs
 * protoc-c generates from onnx.proto (build/gen/onnx) and packed by protobuf-c:
 * IR version 8, producer "lsqd", default-domain opset 13, tensor data as
 * little-endian raw_data. */
#ifndef LSQ_ONNX_EXPORT_H
#define LSQ_ONNX_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "graph/net.h"

#define ONNX_EXPORT_IR_VERSION 8
#define ONNX_EXPORT_OPSET 13

/* The serialized ModelProto of net in *out (malloc'd, the caller frees it)
 * and its size in *len. LSQ_ERR_NOMEM on allocation failure (*out NULL). A
 * net with a layer the export does not carry (support.h; none today) is
 * LSQ_ERR_INVALID naming that layer. */
lsq_status onnx_export_bytes(const lsq_net *net, uint8_t **out, size_t *len, lsq_err *err);

/* Writes net to path (LSQ_ERR_IO, LSQ_ERR_NOMEM, or LSQ_ERR_INVALID as
 * onnx_export_bytes; then no file is written). */
lsq_status onnx_export(const lsq_net *net, const char *path, lsq_err *err);

#endif
