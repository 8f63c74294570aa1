/* Deployable artifacts of a trained network: model.lsqm (packed integer
 * model, lsqm.h) and model.onnx (onnx_export.h).
 *
 * A full-precision network gets both files too: its .lsqm stores every layer
 * as float32 (the integer engine then runs it in float), so the predict
 * endpoint and `lsq predict` work for every job, and the .onnx is the plain
 * float graph. */
#include "deploy/export.h"

#include <stdio.h>
#include <unistd.h>

#include "deploy/lsqm.h"
#include "deploy/onnx_export.h"
#include "deploy/support.h"

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

/* Whether artifact i can carry net: LSQ_OK, or the reason (in err) why not. */
static lsq_status artifact_check(const lsq_net *net, int i, lsq_err *err)
{
    return deploy_check_layers(net, i == 0 ? DEPLOY_INTEGER : DEPLOY_ONNX, err);
}

lsq_status export_artifacts(const lsq_net *net, const char *dir, const lsq_spec *spec,
                            json_t *skipped, lsq_err *err)
{
    char path[4096];
    lsq_status st = LSQ_OK;
    json_t *meta = export_meta(spec);
    for (int i = 0; export_artifact_names[i] && st == LSQ_OK; i++) {
        lsq_err why;
        snprintf(path, sizeof path, "%s/%s", dir, export_artifact_names[i]);
        if (skipped && artifact_check(net, i, &why) != LSQ_OK) {
            json_array_append_new(skipped, json_pack("{s:s, s:s}", "artifact",
                                                     export_artifact_names[i], "reason",
                                                     why.message));
            /* dir's artifacts are this net's: not one an earlier run left */
            unlink(path);
            continue;
        }
        st = i == 0 ? lsqm_save(path, net, meta, err) : onnx_export(net, path, err);
    }
    json_decref(meta);
    return st;
}
