/* The deployable artifacts of a trained network: the packed integer model
 * (.lsqm, docs/model-format.md) and the ONNX graph (.onnx). */
#ifndef LSQ_EXPORT_H
#define LSQ_EXPORT_H

#include "core/spec.h"
#include "graph/net.h"

/* File names written by export_artifacts, NULL-terminated. */
extern const char *const export_artifact_names[];

/* Writes every deployable artifact of net into dir. A full-precision network
 * has no packed integer form; the artifacts that apply are written. */
lsq_status export_artifacts(const lsq_net *net, const char *dir, const lsq_spec *spec,
                            lsq_err *err);

/* The header "meta" of an exported model: job name, dataset and the spec's
 * quant settings (a new object; spec NULL gives an empty one). */
json_t *export_meta(const lsq_spec *spec);

#endif
