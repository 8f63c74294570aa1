/* Datasets (datasets.c): the handlers of /api/v1/datasets and what job
 * submission needs of them. A dataset comes as an upload, a URL lsqd
 * fetches, or a folder of --datasets-root; the registrar (registrar.h)
 * decodes it into a cache under DATA/datasets/ID/ off the HTTP threads.
 * Clients never name a server path: a job names a dataset by id. */
#ifndef LSQD_DATASETS_H
#define LSQD_DATASETS_H

#include <jansson.h>
#include <stdint.h>

#include "registrar.h"
#include "reply.h"

/* POST /api/v1/datasets: the archive as application/octet-stream with
 * ?name=NAME (and the import options in the query), or application/json
 * {"url": ..., "name": ..., options}. 202 with the dataset (registering). */
enum MHD_Result datasets_post(req *r);
/* GET /api/v1/datasets: the built-in sets, then the registered ones, newest
 * first. */
enum MHD_Result datasets_list(req *r);
/* GET /api/v1/datasets/{id} */
enum MHD_Result datasets_get(req *r);
/* GET /api/v1/datasets/{id}/samples.png */
enum MHD_Result datasets_samples(req *r);
/* DELETE /api/v1/datasets/{id}: 409 while registering or while a queued or
 * running job uses it; removes its folder. */
enum MHD_Result datasets_delete(req *r);

/* A submitted spec names a dataset by id ("dataset": {"id": N}): this
 * replaces the id with the ready dataset's cache folder for the engine and
 * sets *dataset_id (0 when the spec names none). A dataset.path or
 * dataset.cache from the client (a server path) is refused. -1 with the
 * field (dataset.id, dataset.path, ...) and the message when the spec
 * cannot be used (a dataset user may not use reads as no dataset); nothing
 * on the file system is touched. */
int datasets_resolve_spec(const lsqd_config *cfg, const store_user *user, json_t *spec,
                          int64_t *dataset_id, char *field, size_t field_cap, char *why,
                          size_t cap);

#endif
