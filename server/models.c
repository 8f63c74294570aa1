/* Uploaded models: POST /api/v1/models takes an ONNX file (streamed to disk
 * by the HTTP layer, size-capped, sha256 on the way), validates it by running
 * `lsq import --summary` on it in a child process (a parser fed by strangers
 * never runs inside the daemon), and keeps it as DATA/models/ID.onnx with
 * the summary the importer printed. A file that does not import is refused
 * with the importer's message and nothing is stored. */
#include "models.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "child.h"
#include "store.h"

#define IMPORT_TIMEOUT_S 120
#define IMPORT_OUTPUT_MAX (64u << 20)
#define MODEL_NAME_MAX 128

void models_file_path(const lsqd_config *cfg, int64_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s/models/%lld.onnx", (int)(cap > 64 ? cap - 64 : 0), cfg->data,
             (long long)id);
}

/* Runs `lsq import --summary FILE` (child.h) and returns what it printed
 * (caller frees) with its exit status in *status (-1: killed, timed out or
 * not started), or NULL when it could not be run at all. */
static char *run_import(const lsqd_config *cfg, const char *file, int *status)
{
    char *argv[] = {(char *)cfg->lsq_bin, "import", "--summary", (char *)file, NULL};
    child_result res;
    char *out = child_run(argv, IMPORT_TIMEOUT_S, IMPORT_OUTPUT_MAX, NULL, &res);
    *status = res.status;
    return out;
}

/* ?name= of the upload: 1..128 printable characters without '/'. */
static int model_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > MODEL_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '/') return 0;
    return 1;
}

enum MHD_Result models_post(req *r)
{
    const char *name = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "name");
    if (!name) name = "model.onnx";
    if (!model_name_ok(name))
        return http_reply_error(r, HERR_INVALID_VALUE, "name",
                                "name must be 1 to %d printable characters without '/'",
                                MODEL_NAME_MAX);
    if (r->upload_bytes == 0)
        return http_reply_error(r, HERR_INVALID_VALUE, "body", "the body is empty: send the "
                                "ONNX file as application/octet-stream");
    enum MHD_Result quota_res;
    if (auth_quota_or_reply(r, r->upload_bytes, &quota_res)) return quota_res;
    int status;
    char *out = run_import(r->cfg, r->upload_path, &status);
    if (!out)
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot run the model importer");
    json_t *doc = json_loads(out, 0, NULL);
    free(out);
    enum MHD_Result res;
    if (status != 0) {
        /* the importer's own error, or a crash / timeout of it */
        json_t *e = json_object_get(doc, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *field = json_string_value(json_object_get(e, "field"));
        if (msg) {
            /* the message names the file: say the upload's name, not the
             * server's temporary path */
            char text[1024];
            child_scrub(text, sizeof text, msg, r->upload_path, name);
            res = http_reply_error(r, HERR_INVALID_MODEL, field && *field ? field : "body",
                                   "%s", text);
        } else {
            res = http_reply_error(r, HERR_INVALID_MODEL, "body",
                                   "the file could not be read as an ONNX model (the importer "
                                   "%s)", status < 0 ? "was stopped" : "failed");
        }
        json_decref(doc);
        return res;
    }
    json_t *summary = json_object_get(doc, "summary");
    char *summary_text = json_is_object(summary) ? json_dumps(summary, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!summary_text) return http_reply_error(r, HERR_INTERNAL, NULL, "the importer printed "
                                               "no summary");
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s/models", PATH_MAX - 16, r->cfg->data);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        free(summary_text);
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot create the models folder: %s",
                                strerror(errno));
    }
    int64_t id;
    if (store_model_insert(name, (long long)r->upload_bytes, r->upload_sha256, summary_text,
                           r->user.id, &id) != STORE_OK) {
        free(summary_text);
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the model");
    }
    free(summary_text);
    models_file_path(r->cfg, id, path, sizeof path);
    if (rename(r->upload_path, path) != 0) {
        int e = errno;
        int64_t unused;
        store_model_delete(id, &unused);
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot keep the model file: %s",
                                strerror(e));
    }
    r->upload_path[0] = '\0'; /* kept: not removed when the request ends */
    json_t *m = store_model_get(id);
    if (!m) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot read the model back");
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/models/%lld", (long long)id);
    return http_reply_json_location(r, 201, m, loc);
}

enum MHD_Result models_list(req *r)
{
    json_t *arr = store_model_list(auth_list_owner(r));
    if (!arr) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot list models");
    return http_reply_json(r, 200, json_pack("{s:o}", "models", arr));
}

enum MHD_Result models_get(req *r)
{
    json_t *m = store_model_get(r->job_id);
    if (!m) return http_reply_error(r, HERR_NOT_FOUND, "id", "no model %lld",
                                    (long long)r->job_id);
    return http_reply_json(r, 200, m);
}

enum MHD_Result models_delete(req *r)
{
    int64_t job = 0;
    store_status st = store_model_delete(r->job_id, &job);
    if (st == STORE_NOT_FOUND)
        return http_reply_error(r, HERR_NOT_FOUND, "id", "no model %lld", (long long)r->job_id);
    if (st == STORE_CONFLICT)
        return http_reply_error(r, HERR_CONFLICT, "id",
                                "model %lld is used by job %lld, which has not finished; "
                                "cancel it or wait", (long long)r->job_id, (long long)job);
    if (st != STORE_OK) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot delete");
    char path[PATH_MAX];
    models_file_path(r->cfg, r->job_id, path, sizeof path);
    unlink(path);
    return http_reply_bytes(r, 204, "application/json", "", 0);
}

int models_resolve_spec(const lsqd_config *cfg, const store_user *user, json_t *spec,
                        int64_t *model_id, char *why, size_t cap)
{
    *model_id = 0;
    json_t *model = json_object_get(spec, "model");
    json_t *onnx = json_is_object(model) ? json_object_get(model, "onnx") : NULL;
    if (!onnx) return 0;
    long long id = 0;
    if (json_is_integer(onnx)) {
        id = json_integer_value(onnx);
    } else if (json_is_string(onnx)) {
        const char *s = json_string_value(onnx);
        char *end;
        errno = 0;
        id = strtoll(s, &end, 10);
        if (errno || *end || end == s) id = 0;
    }
    if (id <= 0) {
        snprintf(why, cap, "model.onnx must be the id of a model uploaded to this lsqd "
                           "(POST /api/v1/models)");
        return -1;
    }
    json_t *m = auth_may_use(user, STORE_OBJ_MODEL, id) ? store_model_get(id) : NULL;
    if (!m) {
        snprintf(why, cap, "model.onnx: no model %lld", id);
        return -1;
    }
    json_decref(m);
    char path[PATH_MAX];
    models_file_path(cfg, id, path, sizeof path);
    json_object_set_new(model, "onnx", json_string(path));
    *model_id = id;
    return 0;
}
