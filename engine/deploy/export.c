/* Deployable artifacts of a trained network: model.lsqm (packed integer
 * model, lsqm.h) and model.onnx (onnx_export.h).
 *
 * A full-precision network gets both files too: its .lsqm stores every layer
 * as float32 (the integer engine then runs it in float), so the predict
 * endpoint and `lsq predict` work for every job, and the .onnx is the plain
 * float graph. */
#include "deploy/export.h"

#include <stdio.h>

#include "deploy/lsqm.h"
#include "deploy/onnx_export.h"

const char *const export_artifact_names[] = {"model.lsqm", "model.onnx", NULL};

json_t *export_meta(const lsq_spec *spec)
{
    if (!spec) return json_object();
    json_t *sj = spec_to_json(spec);
    json_t *meta = json_pack("{s:s, s:s}", "name", spec->name, "dataset", spec->dataset);
    json_t *q = json_object_get(sj, "quant");
    if (q) json_object_set(meta, "quant", q);
    json_decref(sj);
    return meta;
}

lsq_status export_artifacts(const lsq_net *net, const char *dir, const lsq_spec *spec,
                            lsq_err *err)
{
    char path[4096];
    json_t *meta = export_meta(spec);
    snprintf(path, sizeof path, "%s/%s", dir, export_artifact_names[0]);
    lsq_status st = lsqm_save(path, net, meta, err);
    json_decref(meta);
    if (st != LSQ_OK) return st;
    snprintf(path, sizeof path, "%s/%s", dir, export_artifact_names[1]);
    return onnx_export(net, path, err);
}
