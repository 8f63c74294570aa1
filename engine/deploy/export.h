/* The deployable artifacts of a trained network: the packed integer model
 * (.lsqm, docs/model-format.md) and the ONNX graph (.onnx). */
#ifndef LSQ_EXPORT_H
#define LSQ_EXPORT_H

#include "core/spec.h"
#include "graph/net.h"

/* File names written by export_artifacts, NULL-terminated. */
extern const char *const export_artifact_names[];

/* Writes every deployable artifact of net into dir. A full-precision network
 * has no packed integer form; the artifacts that apply are written.
 * An artifact whose form cannot carry a layer of net (support.h) is not
 * written: with skipped (a JSON array, borrowed) not NULL, the export goes
 * on and {"artifact": name, "reason": message} is appended to skipped for
 * it (and a file of that name left in dir is removed); with skipped NULL,
 * that is an error (LSQ_ERR_INVALID). Other errors
 * (I/O, memory) stop the export either way. */
lsq_status export_artifacts(const lsq_net *net, const char *dir, const lsq_spec *spec,
                            json_t *skipped, lsq_err *err);

/* The header "meta" of an exported model: job name, dataset and the spec's
 * quant settings (a new object; spec NULL gives an empty one). */
json_t *export_meta(const lsq_spec *spec);

#endif
