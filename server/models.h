/* Uploaded models (models.c): the handlers of /api/v1/models and what job
 * submission needs of them. */
#ifndef LSQD_MODELS_H
#define LSQD_MODELS_H

#include <jansson.h>
#include <stdint.h>

#include "reply.h"

/* POST /api/v1/models?name=NAME (the ONNX file as the body, BODY_FILE). */
enum MHD_Result models_post(req *r);
/* GET /api/v1/models */
enum MHD_Result models_list(req *r);
/* GET /api/v1/models/{id} */
enum MHD_Result models_get(req *r);
/* DELETE /api/v1/models/{id}: 409 while a queued or running job uses it. */
enum MHD_Result models_delete(req *r);

/* The stored file of model id: DATA/models/ID.onnx. */
void models_file_path(const lsqd_config *cfg, int64_t id, char *out, size_t cap);
/* A submitted spec names an uploaded model by id ("model": {"onnx": ID});
 * this replaces the id with the stored file's path for the engine and sets
 * *model_id (0 when the spec names none). -1 with a message in why when the
 * value is not the id of a stored model that user may use. */
int models_resolve_spec(const lsqd_config *cfg, const store_user *user, json_t *spec,
                        int64_t *model_id, char *why, size_t cap);

#endif
