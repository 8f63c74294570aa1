/* What the deployed forms of a network can carry. Training takes every
 * layer of a layer list; the packed model (.lsqm) with its integer engine
 * carries all of them too (grouped, depthwise and dilated convs, clip,
 * leaky relu, scale, concat, padded max pooling, windowed average pooling
 * included). The ONNX export carries the layers of the zoo's nets: dense
 * undilated conv2d, linear, batchnorm, relu, unpadded maxpool, global
 * avgpool, add and flatten. Each form refuses any other layer up front with
 * this check, so that none writes a file it cannot run or that would
 * compute something else. */
#ifndef LSQ_SUPPORT_H
#define LSQ_SUPPORT_H

#include "core/err.h"
#include "graph/net.h"

/* The deployed forms. */
typedef enum { DEPLOY_INTEGER, DEPLOY_ONNX, DEPLOY_COUNT } deploy_form;
extern const char *const DEPLOY_FORM_NAMES[]; /* "integer engine", "ONNX export" */

/* LSQ_OK when `form` carries every layer of net; else LSQ_ERR_INVALID naming
 * the first layer that it does not, with field "model.layers[i]":
 * "layer 'dw1': groups > 1 has no ONNX export yet". */
lsq_status deploy_check_layers(const lsq_net *net, deploy_form form, lsq_err *err);

#endif
