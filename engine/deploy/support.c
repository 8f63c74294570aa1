/* What the deployed forms of a network can carry (support.h). */
#include "deploy/support.h"

#include <stdio.h>

const char *const DEPLOY_FORM_NAMES[] = {"integer engine", "ONNX export"};
_Static_assert(sizeof DEPLOY_FORM_NAMES / sizeof *DEPLOY_FORM_NAMES == DEPLOY_COUNT,
               "DEPLOY_FORM_NAMES must name every deploy_form");

/* What of node nd a deployed form does not carry, or NULL: the packed
 * model with its integer engine (infer.c) and the ONNX export
 * (onnx_export.c) carry every layer a layer list can hold today. A layer
 * kind added to net.h is refused by name until both run it. */
_Static_assert(OP_COUNT == 13, "a new layer kind: say whether the integer engine and the "
                               "ONNX export run it");
static const char *unsupported(const net_node *nd, deploy_form form)
{
    (void)form;
    switch (nd->op) {
    case OP_CONV:
    case OP_LINEAR:
    case OP_BN:
    case OP_RELU:
    case OP_MAXPOOL:
    case OP_AVGPOOL:
    case OP_ADD:
    case OP_FLATTEN:
    case OP_CLIP:
    case OP_LEAKYRELU:
    case OP_SCALE:
    case OP_CONCAT:
        return NULL;
    default:
        return NET_OP_NAMES[nd->op];
    }
}

lsq_status deploy_check_layers(const lsq_net *net, deploy_form form, lsq_err *err)
{
    /* input normalisation: the ONNX graph normalises its input itself, and
     * the integer engine normalises raw pixels in float before its first
     * layers quantize them (infer.c), so both take raw pixels */
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        const char *what = unsupported(nd, form);
        if (!what) continue;
        char field[64];
        snprintf(field, sizeof field, "model.layers[%d]", i - 1);
        return lsq_err_set(err, LSQ_ERR_INVALID, field, "layer '%s': %s has no %s yet", nd->name,
                           what, DEPLOY_FORM_NAMES[form]);
    }
    return LSQ_OK;
}
