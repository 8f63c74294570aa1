/* Bad input: every request gets its status and error code, and the jobs
 * table (read from the SQLite file, read-only) does not change. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct {
    const char *what, *method, *path, *body, *ctype;
    long status;
    const char *code, *field;   /* field NULL: not checked */
} bad_case;

static void run_cases(lsqd *d, const bad_case *cases, size_t n)
{
    long long count0, max0;
    db_jobs(d, &count0, &max0);
    for (size_t i = 0; i < n; i++) {
        const bad_case *c = &cases[i];
        api_res *r = api(d, c->method, c->path, c->body, c->ctype, NULL);
        cr_expect_eq(r->status, c->status, "%s: status %ld, want %ld (%s)", c->what, r->status,
                     c->status, r->body ? r->body : "");
        cr_expect_str_eq(api_err_code(r), c->code, "%s: code", c->what);
        if (c->field) cr_expect_str_eq(api_err_field(r), c->field, "%s: field", c->what);
        cr_expect(json_is_string(json_object_get(json_object_get(r->json, "error"), "message")),
                  "%s: a message", c->what);
        if (c->status == 405) cr_expect(strlen(r->allow) > 0, "%s: Allow header", c->what);
        api_free(r);
        long long count, max;
        db_jobs(d, &count, &max);
        cr_expect_eq(count, count0, "%s: the jobs table changed", c->what);
        cr_expect_eq(max, max0, "%s: a job id was used", c->what);
    }
}

Test(input, bad_submissions_are_rejected_and_store_nothing, .timeout = 120)
{
    lsqd d;
    const char *const flags[] = {"--max-body", "4096", NULL};
    lsqd_start(&d, flags);
    /* one real job so that "unchanged" is checked against a non-empty table */
    long long id = submit_job(&d, TINY_SPEC);
    char big[8192];
    memset(big, ' ', sizeof big - 1);
    memcpy(big, "{\"name\":\"x\"", 11);
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    const bad_case cases[] = {
        {"malformed JSON", "POST", "/api/v1/jobs", "{\"model\":", NULL, 400, "malformed_json", NULL},
        {"empty body", "POST", "/api/v1/jobs", "", NULL, 400, "malformed_json", NULL},
        {"wrong content type", "POST", "/api/v1/jobs", TINY_SPEC, "text/plain", 415,
         "unsupported_media_type", NULL},
        {"form content type", "POST", "/api/v1/jobs", "a=b", "application/x-www-form-urlencoded",
         415, "unsupported_media_type", NULL},
        {"body over the cap", "POST", "/api/v1/jobs", big, NULL, 413, "body_too_large", NULL},
        {"unknown top-level field", "POST", "/api/v1/jobs", "{\"bogus\":1}", NULL, 422,
         "invalid_spec", "bogus"},
        {"wrong type: epochs", "POST", "/api/v1/jobs", "{\"train\":{\"epochs\":\"three\"}}", NULL,
         422, "invalid_spec", "train.epochs"},
        {"wrong type: spec", "POST", "/api/v1/jobs", "[1,2]", NULL, 422, "invalid_spec", NULL},
        {"bits out of range", "POST", "/api/v1/jobs", "{\"quant\":{\"weight_bits\":9}}", NULL,
         422, "invalid_spec", "quant.weight_bits"},
        {"bits too low", "POST", "/api/v1/jobs", "{\"quant\":{\"weight_bits\":1}}", NULL, 422,
         "invalid_spec", "quant.weight_bits"},
        {"epochs out of range", "POST", "/api/v1/jobs", "{\"train\":{\"epochs\":-1}}", NULL, 422,
         "invalid_spec", "train.epochs"},
        {"lr out of range", "POST", "/api/v1/jobs", "{\"train\":{\"lr\":0}}", NULL, 422,
         "invalid_spec", "train.lr"},
        {"unknown arch", "POST", "/api/v1/jobs", "{\"model\":{\"arch\":\"vgg99\"}}", NULL, 422,
         "invalid_spec", "model.arch"},
        {"unknown dataset", "POST", "/api/v1/jobs", "{\"dataset\":{\"name\":\"cifar-1000\"}}",
         NULL, 422, "invalid_spec", "dataset.name"},
        {"init.from unknown job", "POST", "/api/v1/jobs", "{\"init\":{\"from\":\"424242\"}}",
         NULL, 422, "invalid_spec", "init.from"},
        {"init.from a path", "POST", "/api/v1/jobs", "{\"init\":{\"from\":\"/etc/passwd\"}}",
         NULL, 422, "invalid_spec", "init.from"},
        {"unknown job id", "GET", "/api/v1/jobs/424242", NULL, NULL, 404, "not_found", NULL},
        {"non-numeric job id", "GET", "/api/v1/jobs/abc", NULL, NULL, 404, "not_found", NULL},
        {"events of unknown job", "GET", "/api/v1/jobs/424242/events", NULL, NULL, 404,
         "not_found", NULL},
        {"artifact name ..", "GET", "/api/v1/jobs/1/artifacts/..", NULL, NULL, 400,
         "bad_request", "name"},
        {"artifact name ..spec", "GET", "/api/v1/jobs/1/artifacts/..spec.json", NULL, NULL, 400,
         "bad_request", "name"},
        {"artifact name with ../", "GET", "/api/v1/jobs/1/artifacts/../spec.json", NULL, NULL, 404,
         "not_found", NULL},
        {"artifact name with %2F", "GET", "/api/v1/jobs/1/artifacts/..%2Fspec.json", NULL, NULL,
         404, "not_found", NULL},
        {"artifact not produced", "GET", "/api/v1/jobs/1/artifacts/spec.json", NULL, NULL, 404,
         "not_found", "name"},
        {"unknown route", "GET", "/api/v1/nothing", NULL, NULL, 404, "not_found", NULL},
        {"unknown route 2", "POST", "/api/v2/jobs", "{}", NULL, 404, "not_found", NULL},
        {"wrong method on jobs", "DELETE", "/api/v1/jobs", NULL, NULL, 405,
         "method_not_allowed", NULL},
        {"wrong method on a job", "PUT", "/api/v1/jobs/1", "{}", NULL, 405,
         "method_not_allowed", NULL},
        {"GET on cancel", "GET", "/api/v1/jobs/1/cancel", NULL, NULL, 405,
         "method_not_allowed", NULL},
        {"bad state filter", "GET", "/api/v1/jobs?state=sleeping", NULL, NULL, 422,
         "invalid_value", "state"},
        {"bad limit", "GET", "/api/v1/jobs?limit=0", NULL, NULL, 422, "invalid_value", "limit"},
        {"predict malformed", "POST", "/api/v1/jobs/1/predict", "{", NULL, 400, "malformed_json",
         NULL},
        {"predict wrong type", "POST", "/api/v1/jobs/1/predict", "{}", "text/csv", 415,
         "unsupported_media_type", NULL},
        /* a server path is never a way to name a dataset: neither to register
         * one nor in a job (which used to answer "cannot open
         * /etc/train-images...": lsqd had opened the folder) */
        {"dataset by a server path", "POST", "/api/v1/datasets", "{\"name\":\"x\",\"path\":\"/tmp\"}",
         NULL, 422, "invalid_value", "path"},
        {"dataset by a server path 2", "POST", "/api/v1/datasets",
         "{\"name\":\"mnist\",\"path\":\"/nonexistent\"}", NULL, 422, "invalid_value", "path"},
        {"job probing /etc by dataset.path", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"path\":\"/etc\"}}", NULL, 422,
         "invalid_spec", "dataset.path"},
        {"job naming a cache folder", "POST", "/api/v1/jobs",
         "{\"dataset\":{\"cache\":\"/var/lib\"}}", NULL, 422, "invalid_spec", "dataset.cache"},
        {"job naming an unknown dataset id", "POST", "/api/v1/jobs",
         "{\"dataset\":{\"id\":424242}}", NULL, 422, "invalid_spec", "dataset.id"},
    };
    run_cases(&d, cases, sizeof cases / sizeof *cases);

    /* the /etc probe is refused for what it names, before anything is
     * opened: the reply says how to bring a dataset, not what is in /etc */
    api_res *probe = api(&d, "POST", "/api/v1/jobs",
                         "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"path\":\"/etc\"}}", NULL,
                         NULL);
    const char *pm = json_string_value(
        json_object_get(json_object_get(probe->json, "error"), "message"));
    cr_expect(pm && strstr(pm, "upload") && !strstr(pm, "cannot open") &&
              !strstr(pm, "train-images"), "the /etc probe: %s", pm ? pm : "(none)");
    api_free(probe);

    /* 405 names the allowed methods */
    api_res *r = api(&d, "DELETE", "/api/v1/jobs", NULL, NULL, NULL);
    cr_expect(strstr(r->allow, "GET") && strstr(r->allow, "POST"), "Allow: %s", r->allow);
    api_free(r);
    /* errors are counted per code */
    r = api(&d, "GET", "/metrics", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_expect(strstr(r->body, "lsqd_errors_total{code=\"invalid_spec\"} 15\n"),
              "invalid_spec errors counted");
    cr_expect(strstr(r->body, "lsqd_errors_total{code=\"method_not_allowed\"} 4\n"));
    api_free(r);
    (void)id;
    lsqd_cleanup(&d);
}

/* The network is planned at the door (net_check_spec_plan): a layer list
 * that names what is not there, does not chain, does not fit the data or
 * asks for absurd sizes is a 422 naming the key, and no job is stored (the
 * SQLite file and GET /api/v1/jobs both say so). */
Test(input, bad_networks_are_refused_at_the_door, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, NULL);
#define FLAT "{\"type\":\"flatten\"}"
    const bad_case cases[] = {
        {"unknown layer in quant.layers", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"quant\":{\"layers\":{\"fc9\":{\"weight_bits\":2}}}}",
         NULL, 422, "invalid_spec", "quant.layers.fc9"},
        {"linear with 1e8 outputs", "POST", "/api/v1/jobs",
         "{\"model\":{\"layers\":[" FLAT ",{\"type\":\"linear\",\"out\":100000000}]}}", NULL, 422,
         "invalid_spec", "model.layers[1].out"},
        {"4.3e9 weights", "POST", "/api/v1/jobs",
         "{\"model\":{\"layers\":[" FLAT ",{\"type\":\"linear\",\"out\":65536},"
         "{\"type\":\"linear\",\"out\":65536},{\"type\":\"linear\",\"out\":10}]}}", NULL, 422,
         "invalid_spec", "model.layers[2].out"},
        {"98 GiB at batch 4096", "POST", "/api/v1/jobs",
         "{\"model\":{\"layers\":[{\"type\":\"conv2d\",\"out\":4096,\"kernel\":3,\"pad\":1},"
         FLAT ",{\"type\":\"linear\",\"out\":10}]},\"train\":{\"batch_size\":4096}}", NULL, 422,
         "invalid_spec", "train.batch_size"},
        {"conv into linear without flatten", "POST", "/api/v1/jobs",
         "{\"model\":{\"layers\":[{\"type\":\"conv2d\",\"out\":8,\"kernel\":3},"
         "{\"type\":\"linear\",\"out\":10}]}}", NULL, 422, "invalid_spec", "model.layers[1].input"},
        {"add of different shapes", "POST", "/api/v1/jobs",
         "{\"model\":{\"layers\":[{\"type\":\"conv2d\",\"name\":\"a\",\"out\":8,\"kernel\":3},"
         "{\"type\":\"conv2d\",\"name\":\"b\",\"out\":4,\"kernel\":1},"
         "{\"type\":\"add\",\"inputs\":[\"a\",\"b\"]}," FLAT ",{\"type\":\"linear\",\"out\":10}]}}",
         NULL, 422, "invalid_spec", "model.layers[2].inputs"},
        {"ends with the wrong class count", "POST", "/api/v1/jobs",
         "{\"model\":{\"layers\":[" FLAT ",{\"type\":\"linear\",\"out\":7}]}}", NULL, 422,
         "invalid_spec", "model.layers[1]"},
        {"input shape not the dataset's", "POST", "/api/v1/jobs",
         "{\"model\":{\"input\":[3,32,32],\"layers\":[" FLAT ",{\"type\":\"linear\",\"out\":10}]}}",
         NULL, 422, "invalid_spec", "model.input"},
    };
#undef FLAT
    run_cases(&d, cases, sizeof cases / sizeof *cases);
    /* the messages state the limits */
    api_res *r = api(&d, "POST", "/api/v1/jobs", cases[2].body, NULL, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
    cr_expect(m && strstr(m, "the limit is 134217728"), "%s", m ? m : "(none)");
    api_free(r);
    r = api(&d, "POST", "/api/v1/jobs", cases[3].body, NULL, NULL);
    m = json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
    cr_expect(m && strstr(m, "limit of 64.0 GiB"), "%s", m ? m : "(none)");
    api_free(r);
    r = api(&d, "GET", "/api/v1/jobs", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_expect_eq(json_array_size(json_object_get(r->json, "jobs")), 0, "%s", r->body);
    api_free(r);
    lsqd_cleanup(&d);
}

/* The operator's caps: beyond one, a 422 naming the field and the limit. */
Test(input, operator_caps_refuse_big_jobs, .timeout = 120)
{
    lsqd d;
    const char *const flags[] = {"--max-threads", "4", "--max-epochs", "10", "--max-images",
                                 "100000", NULL};
    lsqd_start(&d, flags);
    long long id = submit_job(&d, TINY_SPEC); /* 2000 images x 2 epochs: within every cap */
    const bad_case cases[] = {
        {"threads past --max-threads", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"threads\":8}", NULL, 422, "invalid_spec", "threads"},
        {"train.epochs past --max-epochs", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":100},\"train\":{\"epochs\":11}}",
         NULL, 422, "invalid_spec", "train.epochs"},
        {"pretrain.epochs past --max-epochs", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":100},\"quant\":{},"
         "\"pretrain\":{\"epochs\":12}}", NULL, 422, "invalid_spec", "pretrain.epochs"},
        {"20000 images x 6 epochs past --max-images", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":20000},\"quant\":{},"
         "\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":5}}", NULL, 422, "invalid_spec",
         "dataset.train_limit"},
        {"the whole set x 2 epochs past --max-images", "POST", "/api/v1/jobs",
         "{\"model\":{\"arch\":\"mlp\"},\"train\":{\"epochs\":2}}", NULL, 422, "invalid_spec",
         "dataset.train_limit"},
    };
    run_cases(&d, cases, sizeof cases / sizeof *cases);
    const char *want[] = {"at most 4 (--max-threads)", "at most 10 epochs", NULL,
                          "120000 images", "at most 100000"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        if (!want[i]) continue;
        api_res *r = api(&d, "POST", "/api/v1/jobs", cases[i].body, NULL, NULL);
        const char *m =
            json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
        cr_expect(m && strstr(m, want[i]), "case %zu: %s", i, m ? m : "(none)");
        api_free(r);
    }
    /* at the cap exactly: accepted */
    api_res *r = api(&d, "POST", "/api/v1/jobs",
                     "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":10000},"
                     "\"threads\":4,\"pretrain\":null,\"train\":{\"epochs\":10}}", NULL, NULL);
    cr_expect_eq(r->status, 201, "%s", r->body);
    api_free(r);
    (void)id;
    lsqd_cleanup(&d);
}

/* A path that is not UTF-8 (found by fuzz/http): the error quoting it was
 * not encodable and the connection closed with no reply. Now a 404 whose
 * message is valid UTF-8, with '?' for the bytes that were not. */
Test(input, a_path_that_is_not_utf8_gets_its_error, .timeout = 60)
{
    lsqd d;
    lsqd_start(&d, NULL);
    const char *paths[] = {"/api/v1/jobs/%ff", "/api/v1/nothing/%c3%28%e2%82", "/%ed%a0%80"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        api_res *r = api(&d, "GET", paths[i], NULL, NULL, NULL);
        cr_expect_eq(r->status, 404, "%s: status %ld (%s)", paths[i], r->status,
                     r->body ? r->body : "");
        cr_expect_str_eq(api_err_code(r), "not_found", "%s: code", paths[i]);
        const char *msg = json_string_value(json_object_get(json_object_get(r->json, "error"),
                                                            "message"));
        cr_expect(msg && strchr(msg, '?'), "%s: message %s", paths[i], msg ? msg : "(none)");
        api_free(r);
    }
    lsqd_cleanup(&d);
}
