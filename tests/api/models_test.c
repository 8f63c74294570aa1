/* Uploaded models: an ONNX file through POST /api/v1/models, listed, used by
 * a job, refused for deletion while the job runs, deleted after; and every
 * way an upload can be wrong, each a 4xx with a message naming what is wrong,
 * nothing stored (no row, no file under models/ or uploads/), lsqd alive. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define FIX "tests/fixtures/onnx/"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no %s (run from the repository root)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Files in DATA/sub (0 when the folder does not exist). */
static int files_in(lsqd *d, const char *sub)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", d->data, sub);
    DIR *dir = opendir(p);
    if (!dir) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(dir);
    return n;
}

static int model_count(lsqd *d)
{
    api_res *r = api(d, "GET", "/api/v1/models", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    int n = (int)json_array_size(json_object_get(r->json, "models"));
    api_free(r);
    return n;
}

static api_res *upload(lsqd *d, const char *name, const void *data, size_t len,
                       const char *ctype)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/models?name=%s", name);
    return api_bin(d, "POST", path, data, len, ctype ? ctype : "application/octet-stream", NULL);
}

Test(models, upload_list_use_and_delete, .timeout = 240)
{
    lsqd d;
    lsqd_start(&d, NULL);
    size_t len;
    char *onnx = slurp(FIX "resnet_op13_eval.onnx", &len);
    api_res *r = upload(&d, "resnet.onnx", onnx, len, NULL);
    cr_assert_eq(r->status, 201, "%s", r->body);
    long long id = json_integer_value(json_object_get(r->json, "id"));
    cr_assert_gt(id, 0);
    char want_loc[64];
    snprintf(want_loc, sizeof want_loc, "/api/v1/models/%lld", id);
    cr_expect_str_eq(r->location, want_loc);
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "name")), "resnet.onnx");
    cr_expect_eq(json_integer_value(json_object_get(r->json, "bytes")), (json_int_t)len);
    json_t *sum = json_object_get(r->json, "summary");
    json_t *in = json_object_get(sum, "input");
    cr_expect_eq(json_integer_value(json_array_get(in, 0)), 1);
    cr_expect_eq(json_integer_value(json_array_get(in, 1)), 28);
    cr_expect_eq(json_integer_value(json_array_get(in, 2)), 28);
    cr_expect_eq(json_integer_value(json_object_get(sum, "classes")), 10);
    cr_expect_eq(json_integer_value(json_object_get(sum, "opset")), 13);
    cr_expect_gt(json_integer_value(json_object_get(sum, "parameters")), 0);
    cr_expect_gt(json_number_value(json_object_get(sum, "macs")), 0);
    cr_expect_gt(json_array_size(json_object_get(sum, "quantized")), 2);
    /* the stored file is the upload, with the digest the API reports */
    char stored[512], digest[65];
    snprintf(stored, sizeof stored, "%s/models/%lld.onnx", d.data, id);
    file_sha256(stored, digest);
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "sha256")), digest);
    char want[65];
    file_sha256(FIX "resnet_op13_eval.onnx", want);
    cr_expect_str_eq(digest, want);
    cr_expect_eq(files_in(&d, "uploads"), 0, "a partial upload was left behind");
    api_free(r);

    r = api(&d, "GET", "/api/v1/models", NULL, NULL, NULL);
    cr_expect_eq(json_array_size(json_object_get(r->json, "models")), 1);
    api_free(r);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/models/%lld", id);
    r = api(&d, "GET", path, NULL, NULL, NULL);
    cr_expect_eq(r->status, 200);
    cr_expect_eq(json_integer_value(json_object_get(r->json, "jobs_active")), 0);
    api_free(r);

    /* a job quantizes it: while it is queued or running the model stays */
    char spec[512];
    snprintf(spec, sizeof spec,
             "{\"name\":\"onnx-job\",\"model\":{\"onnx\":%lld},\"dataset\":{\"train_limit\":500,"
             "\"test_limit\":200},\"quant\":{\"weight_bits\":4},\"train\":{\"epochs\":2}}", id);
    long long job = submit_job(&d, spec);
    r = api(&d, "DELETE", path, NULL, NULL, NULL);
    cr_expect_eq(r->status, 409, "delete while job %lld is active: %ld", job, r->status);
    cr_expect_str_eq(api_err_code(r), "conflict");
    api_free(r);
    cr_expect_eq(access(stored, R_OK), 0, "the refused delete removed the file");
    json_t *j = wait_job(&d, job, NULL, 180);
    cr_assert(j, "job %lld did not finish", job);
    cr_expect_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "%s",
                     json_dumps(j, 0));
    /* the engine was given the stored file: the job's spec holds no id any more */
    const char *onnx_path = json_string_value(
        json_object_get(json_object_get(json_object_get(j, "spec"), "model"), "onnx"));
    cr_expect(onnx_path && strstr(onnx_path, "/models/"), "model.onnx %s",
              onnx_path ? onnx_path : "(none)");
    json_decref(j);
    r = api(&d, "DELETE", path, NULL, NULL, NULL);
    cr_expect_eq(r->status, 204);
    api_free(r);
    cr_expect_neq(access(stored, F_OK), 0, "the file outlived its model");
    r = api(&d, "GET", path, NULL, NULL, NULL);
    cr_expect_eq(r->status, 404);
    api_free(r);

    /* a spec naming a model that is not there, or a path */
    const char *bad[] = {"{\"model\":{\"onnx\":999}}", "{\"model\":{\"onnx\":\"/etc/passwd\"}}",
                         "{\"model\":{\"onnx\":0}}"};
    for (size_t i = 0; i < 3; i++) {
        r = api(&d, "POST", "/api/v1/jobs", bad[i], NULL, NULL);
        cr_expect_eq(r->status, 422, "%s: %ld", bad[i], r->status);
        cr_expect_str_eq(api_err_field(r), "model.onnx", "%s", bad[i]);
        api_free(r);
    }
    free(onnx);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

typedef struct {
    const char *what, *file; /* file under FIX, or NULL: data below */
    const char *data;
    long len;                /* -1: strlen(data); -2: the first half of file */
    const char *ctype, *name;
    long status;
    const char *code, *field, *says;
} bad_upload;

Test(models, bad_uploads_are_refused_and_store_nothing, .timeout = 120)
{
    lsqd d;
    const char *const flags[] = {"--max-upload", "65536", NULL};
    lsqd_start(&d, flags);
    /* one stored model, so that "unchanged" is checked against a non-empty list */
    size_t mlen;
    char *small = slurp(FIX "mobilenet_op13_eval.onnx", &mlen);
    cr_assert_lt(mlen, 65536);
    api_res *r = upload(&d, "ok.onnx", small, mlen, NULL);
    cr_assert_eq(r->status, 201, "%s", r->body);
    api_free(r);
    static char big[70000];
    memset(big, 'x', sizeof big);
    const bad_upload cases[] = {
        {"not protobuf", NULL, "this is not an ONNX file\n", -1, NULL, "m.onnx", 422,
         "invalid_model", "model.onnx", "not an ONNX model"},
        {"truncated", "vgg_op13_eval.onnx", NULL, -2, NULL, "m.onnx", 422, "invalid_model",
         "model.onnx", "truncated"},
        {"unsupported op", "bad/unsupported_op.onnx", NULL, 0, NULL, "m.onnx", 422,
         "invalid_model", "model.onnx.graph.node[lstm]", "LSTM"},
        {"two inputs", "bad/two_inputs.onnx", NULL, 0, NULL, "m.onnx", 422, "invalid_model",
         "model.onnx.graph.input", "2 inputs"},
        {"a 3-D input", "bad/input_3d.onnx", NULL, 0, NULL, "m.onnx", 422, "invalid_model",
         "model.onnx.graph.input[input]", "4-D"},
        {"a cycle", "bad/cycle.onnx", NULL, 0, NULL, "m.onnx", 422, "invalid_model",
         "model.onnx.graph.node[add]", "cycle"},
        {"initializer size", "bad/bad_initializer.onnx", NULL, 0, NULL, "m.onnx", 422,
         "invalid_model", "model.onnx.graph.initializer[w]", "raw_data holds"},
        {"conv weight rank", "bad/conv_weight_rank.onnx", NULL, 0, NULL, "m.onnx", 422,
         "invalid_model", "model.onnx.graph.node[conv]", "rank 2"},
        {"over the cap", NULL, big, (long)sizeof big, NULL, "m.onnx", 413, "body_too_large",
         NULL, "65536"},
        {"JSON instead of the file", NULL, "{\"onnx\":1}", -1, "application/json", "m.onnx",
         415, "unsupported_media_type", NULL, "octet-stream"},
        {"empty body", NULL, "", 0, NULL, "m.onnx", 422, "invalid_value", "body", "empty"},
        {"a name with a slash", NULL, "x", -1, NULL, "a%2Fb", 422, "invalid_value", "name",
         "'/'"},
    };
    int models0 = model_count(&d), files0 = files_in(&d, "models");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_upload *c = &cases[i];
        char *data = NULL;
        size_t len = 0;
        if (c->file) {
            char p[256];
            snprintf(p, sizeof p, FIX "%s", c->file);
            data = slurp(p, &len);
            if (c->len == -2) len /= 2;
        } else {
            len = c->len == -1 ? strlen(c->data) : (size_t)c->len;
        }
        r = upload(&d, c->name, data ? data : c->data, len, c->ctype);
        cr_expect_eq(r->status, c->status, "%s: status %ld (%s)", c->what, r->status,
                     r->body ? r->body : "");
        cr_expect_str_eq(api_err_code(r), c->code, "%s: code", c->what);
        if (c->field) cr_expect_str_eq(api_err_field(r), c->field, "%s: field", c->what);
        const char *msg =
            json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
        cr_expect(msg && strstr(msg, c->says), "%s: message '%s' lacks '%s'", c->what,
                  msg ? msg : "(none)", c->says);
        cr_expect(!msg || !strstr(msg, d.data), "%s: the message shows a server path: %s",
                  c->what, msg);
        api_free(r);
        free(data);
        cr_expect_eq(model_count(&d), models0, "%s: a model was stored", c->what);
        cr_expect_eq(files_in(&d, "models"), files0, "%s: a file under models/", c->what);
        cr_expect_eq(files_in(&d, "uploads"), 0, "%s: a partial upload was left", c->what);
    }
    r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_expect_eq(r->status, 200, "lsqd is not healthy after the bad uploads");
    api_free(r);
    free(small);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}
