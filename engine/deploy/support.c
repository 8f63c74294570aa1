/* What the deployed forms of a network can carry (support.h). */
#include "deploy/support.h"

#include <stdio.h>

const char *const DEPLOY_FORM_NAMES[] = {"integer engine", "ONNX export"};
_Static_assert(sizeof DEPLOY_FORM_NAMES / sizeof *DEPLOY_FORM_NAMES == DEPLOY_COUNT,
               "DEPLOY_FORM_NAMES must name every deploy_form");

/* What of node nd the ONNX export does not carry yet, or NULL. */
static const char *onnx_lacks(const net_node *nd)
{
    switch (nd->op) {
    case OP_CONV:
        if (nd->groups > 1) return "groups > 1";
        if (nd->dilation > 1) return "dilation > 1";
        return NULL;
    case OP_MAXPOOL:
        return nd->pad ? "max pooling with pad > 0" : NULL;
    case OP_AVGPOOL:
        return nd->kernel ? "windowed average pooling (avgpool with a kernel)" : NULL;
    case OP_CLIP:
    case OP_LEAKYRELU:
    case OP_SCALE:
    case OP_CONCAT:
        return NET_OP_NAMES[nd->op];
    default:
        return NULL;
    }
}

/* What of node nd the packed model and its integer engine (infer.c) do not
 * carry, or NULL: they carry every layer a layer list can hold today. A
 * layer kind added to net.h is refused by name until infer.c runs it. */
_Static_assert(OP_COUNT == 13, "a new layer kind: say whether the integer engine runs it");
static const char *integer_lacks(const net_node *nd)
{
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

/* What of node nd `form` does not carry, or NULL. */
static const char *unsupported(const net_node *nd, deploy_form form)
{
    switch (form) {
    case DEPLOY_INTEGER:
        return integer_lacks(nd);
    case DEPLOY_ONNX:
        return onnx_lacks(nd);
    default:
        return NULL;
    }
}

lsq_status deploy_check_layers(const lsq_net *net, deploy_form form, lsq_err *err)
{
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
