/* ONNX import: a serialized ModelProto as uploaded to /v1/models or given to
 * `lsq model import` (onnx_import_bytes; onnx_import_file reads the file and
 * calls it). An accepted model is also built into a network and its values
 * set, as a job that starts from it does. */
#include "fuzz.h"
#include "graph/onnx_import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return -1;
    onnx_import im;
    lsq_err err;
    if (onnx_import_bytes(&im, data, size, &err) == LSQ_OK) {
        lsq_net net;
        if (net_build(&net, im.layers, NULL, im.classes, 1, &err) == LSQ_OK) {
            (void)onnx_import_set_params(&im, &net, &err);
            net_free(&net);
        }
        onnx_import_free(&im);
    }
    return 0;
}
