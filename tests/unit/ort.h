/* Running exported ONNX models in onnxruntime from the unit tests: the model
 * and a float input batch go to tests/onnx/run_model.mjs under node (with
 * onnxruntime-node from scripts/setup-onnxruntime.sh in build/node_modules),
 * and the logits come back; then they are compared with lsq's own. */
#ifndef LSQ_TEST_ORT_H
#define LSQ_TEST_ORT_H

#include <stddef.h>

#include "graph/net.h"

/* The logits (n, classes) of the ONNX model at path on x (n, c, h, w), run
 * by onnxruntime with graph optimization level opt ("disabled": the graph
 * as written; "all": onnxruntime's default). malloc'd, the caller frees
 * them. Skips the test when node or onnxruntime-node is missing; fails it
 * when onnxruntime fails or writes the wrong number of values. */
float *ort_run_file(const char *model, const float *x, int n, int c, int h, int w, int classes,
                    const char *opt);

/* The same for net, exported with onnx_export to a temporary file. */
float *ort_run_net(const lsq_net *net, const float *x, int n, const char *opt);

/* How onnxruntime's logits compare with lsq's. */
typedef struct {
    double max_abs;  /* max |ort - lsq| */
    double max_rel;  /* max |ort - lsq| / (1 + |lsq|) */
    size_t same;     /* logits equal bit for bit (as floats: == ) */
    size_t count;
    int top1_agree;  /* rows whose argmax agrees */
} ort_diff;

/* Compares ort with ref (n rows of k logits), logs the result under what,
 * and fails the test when a logit differs by more than ORT_TOL (1 + |lsq|),
 * the tolerance of the ONNX tests (float sums in another order). */
#define ORT_TOL 1e-5
ort_diff ort_expect_close(const float *ort, const float *ref, int n, int k, const char *what);

#endif
