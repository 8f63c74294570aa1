/* lsq import: an ONNX model as lsq sees it (graph/onnx_import.h): its layers
 * with their inputs, output shapes, parameters and MACs, the bits each
 * conv/linear layer would be quantized at, and whether this lsq can build
 * it; or, with --json, the layer list itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "core/spec.h"
#include "graph/net.h"
#include "graph/onnx_import.h"
#include "util.h"

static const char *IMPORT_USAGE =
    "usage: lsq import MODEL.onnx [--weight-bits N] [--act-bits N] [--first-last-bits N|float]\n"
    "                  [--json | --summary]\n"
    "\n"
    "Reads a float model exported to ONNX (docs/import.md) and prints it as lsq\n"
    "sees it: each layer with its type, inputs, output shape, parameters and\n"
    "multiply-accumulates, the bits its weights/inputs get when the job\n"
    "quantizes at --weight-bits/--act-bits (default 4/4, the first and last\n"
    "conv/linear layers at --first-last-bits, default 8), and the totals.\n"
    "  --json   print the JSON layer list instead (the form of model.layers)\n"
    "  --summary  print one JSON object: {\"summary\": input, classes, opset, layers,\n"
    "           parameters, MACs, the quantized layers; \"model\": the layer list}, or\n"
    "           {\"error\": {code, message, field}} and exit 1 (lsqd validates uploads so)\n"
    "A job spec trains the file with \"model\": {\"onnx\": \"MODEL.onnx\"}.\n"
    "Exit status: 0 imported, 1 refused (the message says why), 2 usage.\n";

/* The layers a layer reads, as text: "inputs", "input", else the one before. */
static void layer_from(const json_t *list, size_t i, char *out, size_t size)
{
    const json_t *l = json_array_get(list, i);
    const json_t *ins = json_object_get(l, "inputs");
    if (json_is_array(ins)) {
        size_t o = 0;
        out[0] = '\0';
        for (size_t k = 0; k < json_array_size(ins) && o < size; k++)
            o += (size_t)snprintf(out + o, size - o, "%s%s", k ? ", " : "",
                                  json_string_value(json_array_get(ins, k)));
        return;
    }
    const char *in = json_string_value(json_object_get(l, "input"));
    if (!in) in = i ? json_string_value(json_object_get(json_array_get(list, i - 1), "name"))
                    : "input";
    snprintf(out, size, "%s", in);
}

static int is_weighted(const json_t *l)
{
    const char *t = json_string_value(json_object_get(l, "type"));
    return strcmp(t, "conv2d") == 0 || strcmp(t, "linear") == 0;
}

/* --summary on failure: {"error":{"code","message","field"}} on stdout. */
static int print_error_json(const lsq_err *err)
{
    json_t *j = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", LSQ_STATUS_NAMES[err->code],
                          "message", err->message, "field", err->field);
    char *s = json_dumps(j, JSON_COMPACT);
    printf("%s\n", s ? s : "{}");
    free(s);
    json_decref(j);
    return 1;
}

/* --summary: {"summary": {...}, "model": the layer list}; a model this lsq
 * imports but cannot build is an error. */
static int print_summary_json(const onnx_import *im, int wbits, int abits, int flbits)
{
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1;
    q.weight_bits = wbits, q.act_bits = abits, q.first_last_bits = flbits;
    const json_t *list = json_object_get(im->layers, "layers");
    int first = -1, last = -1;
    for (int i = 0; i < im->n_layers; i++)
        if (is_weighted(json_array_get(list, (size_t)i))) {
            if (first < 0) first = i;
            last = i;
        }
    lsq_err err;
    lsq_err_clear(&err);
    lsq_net net;
    if (net_build(&net, im->layers, &q, im->classes, 1, &err) != LSQ_OK) {
        lsq_err_prefix(&err, "model.onnx");
        return print_error_json(&err);
    }
    double macs = net_forward_macs(&net);
    size_t params = 0;
    json_t *quantized = json_array();
    for (int i = 0; i < im->n_layers; i++) {
        const json_t *l = json_array_get(list, (size_t)i);
        params += im->info[i].params;
        if (!is_weighted(l)) continue;
        const char *name = json_string_value(json_object_get(l, "name"));
        spec_layer_quant r = spec_layer_resolve(&q, name, i == first || i == last);
        json_array_append_new(quantized,
                              r.quantized ? json_pack("{s:s, s:i, s:i}", "name", name,
                                                      "weight_bits", r.weight_bits,
                                                      "act_bits", r.act_bits)
                                          : json_pack("{s:s, s:n}", "name", name,
                                                      "weight_bits"));
    }
    net_free(&net);
    json_t *j = json_pack("{s:{s:[i,i,i], s:i, s:I, s:I, s:s, s:i, s:I, s:f, s:i, s:o},"
                          " s:O}",
                          "summary", "input", im->c, im->h, im->w, "classes", im->classes,
                          "opset", (json_int_t)im->opset, "ir_version",
                          (json_int_t)im->ir_version, "producer", im->producer, "layers",
                          im->n_layers, "parameters", (json_int_t)params, "macs", macs,
                          "bn_training", im->bn_training, "quantized", quantized,
                          "model", im->layers);
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!s) return 1;
    printf("%s\n", s);
    free(s);
    return 0;
}

static int cmd_import(int argc, char **argv)
{
    if (cli_has_help(argc, argv)) {
        fputs(IMPORT_USAGE, stdout);
        return 0;
    }
    const char *path = NULL;
    int wbits = 4, abits = -1, flbits = 8, as_json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--weight-bits") == 0 && i + 1 < argc) {
            if (cli_parse_int("import", a, argv[++i], 2, 8, &wbits)) return 2;
        } else if (strcmp(a, "--act-bits") == 0 && i + 1 < argc) {
            if (cli_parse_int("import", a, argv[++i], 2, 8, &abits)) return 2;
        } else if (strcmp(a, "--first-last-bits") == 0 && i + 1 < argc) {
            if (strcmp(argv[i + 1], "float") == 0) flbits = -1, i++;
            else if (cli_parse_int("import", a, argv[++i], 2, 8, &flbits)) return 2;
        } else if (strcmp(a, "--json") == 0) {
            as_json = 1;
        } else if (strcmp(a, "--summary") == 0) {
            as_json = 2;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lsq import: unknown option '%s'\n%s", a, IMPORT_USAGE);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "lsq import: unexpected argument '%s'\n%s", a, IMPORT_USAGE);
            return 2;
        }
    }
    if (!path) {
        fputs(IMPORT_USAGE, stderr);
        return 2;
    }
    if (abits < 0) abits = wbits; /* as in a job spec */
    lsq_err err;
    lsq_err_clear(&err);
    onnx_import im;
    if (onnx_import_file(&im, path, ONNX_IMPORT_MAX_BYTES, &err) != LSQ_OK) {
        if (as_json == 2) return print_error_json(&err);
        cli_print_err("import", &err);
        return 1;
    }
    const json_t *list = json_object_get(im.layers, "layers");
    if (as_json == 2) {
        int rc = print_summary_json(&im, wbits, abits, flbits);
        onnx_import_free(&im);
        return rc;
    }
    if (as_json) {
        char *s = json_dumps(im.layers, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
        printf("%s\n", s ? s : "");
        free(s);
        onnx_import_free(&im);
        return 0;
    }
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1;
    q.weight_bits = wbits, q.act_bits = abits, q.first_last_bits = flbits;
    int first = -1, last = -1;
    for (int i = 0; i < im.n_layers; i++)
        if (is_weighted(json_array_get(list, (size_t)i))) {
            if (first < 0) first = i;
            last = i;
        }

    printf("%s: %s, IR %lld, opset %lld; input %dx%dx%d, %d classes\n", path,
           im.producer[0] ? im.producer : "(no producer)", (long long)im.ir_version,
           (long long)im.opset, im.c, im.h, im.w, im.classes);
    if (im.bn_training)
        printf("%d BatchNormalization node%s exported in training mode: lsq trains with the "
               "batch's statistics and evaluates with the running ones\n",
               im.bn_training, im.bn_training > 1 ? "s" : "");
    printf("\n%3s  %-24s %-10s %-32s %-10s %9s %11s %5s  %s\n", "#", "layer", "type", "from",
           "output", "params", "MACs", "W/A", "ONNX node");
    size_t params = 0, stats = 0;
    double macs = 0;
    int nq = 0, n8 = 0, nw = 0;
    for (int i = 0; i < im.n_layers; i++) {
        const json_t *l = json_array_get(list, (size_t)i);
        const onnx_layer_info *li = &im.info[i];
        const char *name = json_string_value(json_object_get(l, "name"));
        char from[128], shape[40], bits[16] = "", mac[24] = "-";
        layer_from(list, (size_t)i, from, sizeof from);
        snprintf(shape, sizeof shape, "%dx%dx%d", li->c, li->h, li->w);
        if (is_weighted(l)) {
            nw++;
            spec_layer_quant r = spec_layer_resolve(&q, name, i == first || i == last);
            if (r.quantized) {
                snprintf(bits, sizeof bits, "%d/%d", r.weight_bits, r.act_bits);
                nq++;
                n8 += r.weight_bits == 8;
            } else {
                snprintf(bits, sizeof bits, "f32");
            }
            snprintf(mac, sizeof mac, "%.0f", li->macs);
        }
        if (strcmp(json_string_value(json_object_get(l, "type")), "batchnorm") == 0)
            stats += 2 * (size_t)li->c;
        params += li->params;
        macs += li->macs;
        printf("%3d  %-24s %-10s %-32.32s %-10s %9zu %11s %5s  %s\n", i, name,
               json_string_value(json_object_get(l, "type")), from, shape, li->params, mac, bits,
               li->node[0] ? li->node : li->op);
    }
    printf("\n%d layers, %zu parameters", im.n_layers, params);
    if (stats) printf(" (and %zu batch-norm running statistics)", stats);
    printf(", %.4g MACs per image\n", macs);
    if (flbits < 0)
        printf("quantized at W%d/A%d with the first and last conv/linear layers in float: %d of "
               "%d conv/linear layers\n", wbits, abits, nq, nw);
    else
        printf("quantized at W%d/A%d with the first and last conv/linear layers at %d bits: %d "
               "conv/linear layers, %d of them at 8 bits\n", wbits, abits, flbits, nq, n8);
    lsq_net net;
    if (net_build(&net, im.layers, &q, im.classes, 1, &err) == LSQ_OK) {
        printf("this lsq builds it: \"model\": {\"onnx\": \"%s\"} in a job spec trains it\n", path);
        net_free(&net);
    } else {
        printf("this lsq cannot build it yet: %s\n", err.message);
    }
    onnx_import_free(&im);
    return 0;
}

int cli_model_dispatch(const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "import") == 0) return cmd_import(argc, argv);
    return -1;
}
