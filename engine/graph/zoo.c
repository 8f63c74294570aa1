/* The built-in zoo: mlp, cnn-small and resnet20 as JSON layer lists, the
 * same form as a user's custom layer list (net.h builds either). */
#include "graph/net.h"

#include <stdio.h>
#include <string.h>

const char *const NET_ZOO_NAMES[] = {"mlp", "cnn-small", "resnet20"};

static json_t *layer_conv(const char *name, const char *input, int out, int k,
                          int stride, int pad)
{
    json_t *l = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:b}", "type", "conv2d",
                          "name", name, "out", out, "kernel", k, "stride", stride,
                          "pad", pad, "bias", 0);
    if (l && input && json_object_set_new(l, "input", json_string(input)) != 0) {
        json_decref(l);
        return NULL;
    }
    return l;
}

static json_t *layer_simple(const char *type, const char *name, const char *input)
{
    json_t *l = json_pack("{s:s, s:s}", "type", type, "name", name);
    if (l && input && json_object_set_new(l, "input", json_string(input)) != 0) {
        json_decref(l);
        return NULL;
    }
    return l;
}

/* Appends a layer (stolen; NULL when building it failed); a failure clears
 * *ok, so that a list missing a layer is never returned as the model. */
static void zoo_add(int *ok, json_t *ls, json_t *layer)
{
    if (!layer || json_array_append_new(ls, layer) != 0) *ok = 0;
}

static void resnet_block(json_t *ls, const char *in, int s, int b, int out,
                         int stride, int project, char *last, size_t last_sz, int *ok)
{
    char p[32], n1[48], n2[48], n3[48], n4[48], n5[48], n6[48], n7[48], n8[48];
    snprintf(p, sizeof p, "s%db%d", s, b);
    snprintf(n1, sizeof n1, "%s.conv1", p);
    snprintf(n2, sizeof n2, "%s.bn1", p);
    snprintf(n3, sizeof n3, "%s.relu1", p);
    snprintf(n4, sizeof n4, "%s.conv2", p);
    snprintf(n5, sizeof n5, "%s.bn2", p);
    zoo_add(ok, ls, layer_conv(n1, in, out, 3, stride, 1));
    zoo_add(ok, ls, layer_simple("batchnorm", n2, NULL));
    zoo_add(ok, ls, layer_simple("relu", n3, NULL));
    zoo_add(ok, ls, layer_conv(n4, NULL, out, 3, 1, 1));
    zoo_add(ok, ls, layer_simple("batchnorm", n5, NULL));
    const char *shortcut = in;
    if (project) {
        snprintf(n6, sizeof n6, "%s.sc.conv", p);
        snprintf(n7, sizeof n7, "%s.sc.bn", p);
        zoo_add(ok, ls, layer_conv(n6, in, out, 1, stride, 0));
        zoo_add(ok, ls, layer_simple("batchnorm", n7, NULL));
        shortcut = n7;
    }
    snprintf(n8, sizeof n8, "%s.add", p);
    json_t *add = json_pack("{s:s, s:s, s:[s,s]}", "type", "add", "name", n8,
                            "inputs", n5, shortcut);
    zoo_add(ok, ls, add);
    snprintf(last, last_sz, "%s.relu2", p);
    zoo_add(ok, ls, layer_simple("relu", last, NULL));
}

json_t *net_zoo_layers(const char *arch, int c, int h, int w, lsq_err *err)
{
    return net_zoo_layers_for(arch, c, h, w, 10, err);
}

json_t *net_zoo_layers_for(const char *arch, int c, int h, int w, int classes, lsq_err *err)
{
    json_t *ls = json_array();
    int ok = ls != NULL;
    if (strcmp(arch, "mlp") == 0) {
        zoo_add(&ok, ls, layer_simple("flatten", "flatten", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "linear", "name", "fc1", "out", 256));
        zoo_add(&ok, ls, layer_simple("relu", "relu1", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "linear", "name", "fc2", "out", 256));
        zoo_add(&ok, ls, layer_simple("relu", "relu2", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "linear", "name", "fc3", "out", classes));
    } else if (strcmp(arch, "cnn-small") == 0) {
        zoo_add(&ok, ls, layer_conv("conv1", NULL, 32, 3, 1, 1));
        zoo_add(&ok, ls, layer_simple("batchnorm", "bn1", NULL));
        zoo_add(&ok, ls, layer_simple("relu", "relu1", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "maxpool", "name", "pool1", "kernel", 2));
        zoo_add(&ok, ls, layer_conv("conv2", NULL, 64, 3, 1, 1));
        zoo_add(&ok, ls, layer_simple("batchnorm", "bn2", NULL));
        zoo_add(&ok, ls, layer_simple("relu", "relu2", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "maxpool", "name", "pool2", "kernel", 2));
        zoo_add(&ok, ls, layer_simple("flatten", "flatten", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "linear", "name", "fc1", "out", 256));
        zoo_add(&ok, ls, layer_simple("relu", "relu3", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "linear", "name", "fc2", "out", classes));
    } else if (strcmp(arch, "resnet20") == 0) {
        zoo_add(&ok, ls, layer_conv("conv1", NULL, 16, 3, 1, 1));
        zoo_add(&ok, ls, layer_simple("batchnorm", "bn1", NULL));
        zoo_add(&ok, ls, layer_simple("relu", "relu1", NULL));
        char last[48] = "relu1";
        int widths[3] = {16, 32, 64};
        int in_ch = 16;
        for (int s = 0; s < 3; s++) {
            for (int b = 0; b < 3; b++) {
                int stride = (s > 0 && b == 0) ? 2 : 1;
                int project = stride != 1 || in_ch != widths[s];
                char in[48];
                snprintf(in, sizeof in, "%s", last);
                resnet_block(ls, in, s + 1, b + 1, widths[s], stride, project, last, sizeof last,
                             &ok);
                in_ch = widths[s];
            }
        }
        zoo_add(&ok, ls, layer_simple("avgpool", "pool", NULL));
        zoo_add(&ok, ls, json_pack("{s:s,s:s,s:i}", "type", "linear", "name", "fc", "out", classes));
    } else {
        json_decref(ls);
        lsq_err_set(err, LSQ_ERR_INVALID, "model.arch",
                    "model.arch must be one of mlp, cnn-small, resnet20, got '%s'", arch);
        return NULL;
    }
    if (!ok) {
        json_decref(ls);
        lsq_err_set(err, LSQ_ERR_NOMEM, "model.arch", "out of memory building the %s layer list",
                    arch);
        return NULL;
    }
    json_t *model = json_pack("{s:[i,i,i], s:o}", "input", c, h, w, "layers", ls);
    if (!model)
        lsq_err_set(err, LSQ_ERR_NOMEM, "model.arch", "out of memory building the %s layer list",
                    arch);
    return model;
}
