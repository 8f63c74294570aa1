/* ONNX export (opset 13) of a network, computing exactly what the float
 * engine computes in eval mode (net_forward with training = 0):
 *  - quantized weights: int8 initializers of the codes + DequantizeLinear
 *    (per-tensor, or per output channel with axis 0);
 *  - quantized layer inputs: Clip to the representable range
 *    [-QN*s + beta, QP*s + beta] -> QuantizeLinear -> DequantizeLinear
 *    (uint8 codes for unsigned, int8 for signed; LSQ+ offsets as Sub / Add
 *    around them), so round half to even happens on the same values;
 *  - Conv / Gemm, BatchNormalization (running statistics), Relu, MaxPool,
 *    GlobalAveragePool, Add, Flatten; layers left in float keep float
 *    initializers.
 * Input "input": float32 (N, C, H, W), pixels / 255. Output "logits":
 * float32 (N, classes). */
#ifndef LSQ_ONNX_EXPORT_H
#define LSQ_ONNX_EXPORT_H

#include "core/err.h"
#include "graph/net.h"

/* Writes net to path (LSQ_ERR_IO, LSQ_ERR_NOMEM). A net with a layer the
 * export does not carry yet (support.h: grouped or dilated conv, clip, ...)
 * is LSQ_ERR_INVALID naming that layer, and no file is written. */
lsq_status onnx_export(const lsq_net *net, const char *path, lsq_err *err);

#endif
