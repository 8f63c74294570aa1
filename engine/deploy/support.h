/* What the deployed forms of a network can carry. Training takes every
 * layer of a layer list, and both deployed forms carry all of them: the
 * packed model (.lsqm) with its integer engine, and the ONNX export
 * (grouped, depthwise and dilated convs, clip, leaky relu, scale, concat,
 * padded max pooling and windowed average pooling included). A layer kind
 * added later is refused by a form until it carries it, up front, with this
 * check, so that none writes a file it cannot run or that would compute
 * something else. Both take raw pixels for a normalised input
 * (dataset.normalize) and normalise them themselves. */
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
