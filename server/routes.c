/* The REST API of lsqd: the route table and its handlers. Handlers parse the
 * request, call the engine's validator, the store or the scheduler, and map
 * the outcome to a reply; they hold no SQL and no socket code. */
#include "routes.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "auth.h"
#include "child.h"
#include "core/spec.h"
#include "data/data.h"
#include "data/image.h"
#include "datasets.h"
#include "deploy/infer.h"
#include "graph/net.h"
#include "embedded.h"
#include "hub.h"
#include "models.h"
#include "reply.h"
#include "scheduler.h"
#include "sse.h"
#include "static.h"
#include "store.h"
#include "webhook.h"

#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX 1000
#define PREDICT_MAX_IMAGES 256

static const char *const FASHION_LABELS[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

/* ------------------------------------------------------------- helpers */

/* Parses the body as JSON or replies 400 (returns NULL after replying). */
static json_t *body_json_or_reply(req *r, enum MHD_Result *res)
{
    json_error_t jerr;
    json_t *obj = r->body ? json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!obj) {
        *res = http_reply_error(r, HERR_MALFORMED_JSON, NULL, "the body is not JSON: %s",
                                r->body ? jerr.text : "empty body");
        return NULL;
    }
    return obj;
}

static json_t *job_or_reply(req *r, enum MHD_Result *res)
{
    json_t *job = store_job_get(r->job_id);
    /* NULL is also a failed read: that is the database's fault, not a 404 */
    if (!job && store_fault_since(r->t0) != STORE_FAULT_NONE)
        *res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot read job %lld",
                                (long long)r->job_id);
    else if (!job)
        *res = http_reply_error(r, HERR_NOT_FOUND, "id", "no job %lld", (long long)r->job_id);
    return job;
}

static const char *query(req *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

static int parse_int64(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---------------------------------------------------------------- jobs */

/* In lsqd, init.from names a job: it becomes that job's full-precision model.
 * Replies 422 (and returns -1) when it names no job or one without a model. */
static int resolve_init_from(req *r, json_t *spec, enum MHD_Result *res)
{
    json_t *init = json_object_get(spec, "init");
    json_t *from = json_is_object(init) ? json_object_get(init, "from") : NULL;
    if (!from || json_is_null(from)) return 0;
    long long id = 0;
    if (json_is_integer(from)) {
        id = json_integer_value(from);
    } else if (!json_is_string(from) || parse_int64(json_string_value(from), 1, LLONG_MAX, &id)) {
        *res = http_reply_error(r, HERR_INVALID_SPEC, "init.from",
                                "init.from must be the id of a job of this lsqd");
        return -1;
    }
    json_t *job = auth_may_use(&r->user, STORE_OBJ_JOB, id) ? store_job_get(id) : NULL;
    if (!job) {
        *res = http_reply_error(r, HERR_INVALID_SPEC, "init.from", "init.from: no job %lld", id);
        return -1;
    }
    json_decref(job);
    char dir[PATH_MAX], path[PATH_MAX + 16];
    sched_job_dir(r->cfg, id, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/fp.lsqc", dir);
    if (!file_exists(path)) {
        *res = http_reply_error(r, HERR_INVALID_SPEC, "init.from",
                                "init.from: job %lld has no full-precision model (yet)", id);
        return -1;
    }
    json_object_set_new(init, "from", json_string(path));
    return 0;
}

/* A message of the checks below may name a path that lsqd put into the
 * spec (a dataset's cache folder, an uploaded model's file): it says
 * "dataset N" and "DATA" instead, words the client knows. */
static void scrub_paths(char *msg, size_t cap, const lsqd_config *cfg, int64_t dataset_id)
{
    char tmp[1024], dir[PATH_MAX], label[64];
    if (dataset_id > 0) {
        registrar_dir(cfg, dataset_id, dir, sizeof dir);
        snprintf(label, sizeof label, "dataset %lld", (long long)dataset_id);
        child_scrub(tmp, sizeof tmp, msg, dir, label);
        snprintf(msg, cap, "%s", tmp);
    }
    child_scrub(tmp, sizeof tmp, msg, cfg->data, "DATA");
    snprintf(msg, cap, "%s", tmp);
}

/* The operator's caps (--max-threads, --max-epochs, --max-images): a spec
 * beyond one is a 422 naming the field and the limit. Returns -1 after
 * replying. */
static int caps_check_or_reply(req *r, const lsq_spec *spec, enum MHD_Result *res)
{
    const lsqd_config *cfg = r->cfg;
    if (cfg->max_threads > 0 && spec->threads > cfg->max_threads) {
        *res = http_reply_error(r, HERR_INVALID_SPEC, "threads",
                                "threads is %d; this lsqd allows at most %d (--max-threads)",
                                spec->threads, cfg->max_threads);
        return -1;
    }
    int pre = spec->pretrain.enabled ? spec->pretrain.epochs : 0;
    if (cfg->max_epochs > 0 && (pre > cfg->max_epochs || spec->train.epochs > cfg->max_epochs)) {
        const char *f = pre > cfg->max_epochs ? "pretrain.epochs" : "train.epochs";
        *res = http_reply_error(r, HERR_INVALID_SPEC, f,
                                "%s is %d; this lsqd allows at most %d epochs a phase "
                                "(--max-epochs)", f, pre > cfg->max_epochs ? pre
                                                                            : spec->train.epochs,
                                cfg->max_epochs);
        return -1;
    }
    if (cfg->max_images > 0) {
        net_data d;
        lsq_err err;
        if (net_spec_data(spec, &d, &err) != LSQ_OK) return 0; /* checked before: cannot fail */
        long long per = d.train_images;
        if (spec->train_limit > 0 && spec->train_limit < per) per = spec->train_limit;
        long long total = per * (pre + spec->train.epochs);
        if (total > cfg->max_images) {
            *res = http_reply_error(r, HERR_INVALID_SPEC, "dataset.train_limit",
                                    "the job would train on %lld images (%lld an epoch x %d "
                                    "epochs: pretrain %d, train %d); this lsqd allows at most "
                                    "%lld a job (--max-images): lower dataset.train_limit or "
                                    "the epochs", total, per, pre + spec->train.epochs, pre,
                                    spec->train.epochs, cfg->max_images);
            return -1;
        }
    }
    return 0;
}

static enum MHD_Result h_jobs_submit(req *r)
{
    enum MHD_Result res = MHD_YES;
    lsq_spec spec;
    int spec_ready = 0;
    char *norm_text = NULL;
    if (auth_quota_or_reply(r, 0, &res)) return res;
    json_t *obj = body_json_or_reply(r, &res);
    if (!obj) return res;
    int64_t model_id = 0, dataset_id = 0;
    if (json_is_object(obj)) {
        char why[512], field[64];
        /* before anything else: a server path from the client is refused
         * without being looked at */
        if (datasets_resolve_spec(r->cfg, &r->user, obj, &dataset_id, field, sizeof field, why,
                                  sizeof why)) {
            res = http_reply_error(r, HERR_INVALID_SPEC, field, "%s", why);
            goto out;
        }
        if (resolve_init_from(r, obj, &res)) goto out;
        if (models_resolve_spec(r->cfg, &r->user, obj, &model_id, why, sizeof why)) {
            res = http_reply_error(r, HERR_INVALID_SPEC, "model.onnx", "%s", why);
            goto out;
        }
    }
    lsq_err err;
    lsq_err_clear(&err);
    memset(&spec, 0, sizeof spec);
    lsq_status st = spec_from_json(&spec, obj, &err);
    spec_ready = 1;
    if (st == LSQ_ERR_PARSE) {
        res = http_reply_error(r, HERR_MALFORMED_JSON, err.field, "%s", err.message);
        goto out;
    }
    /* the network built on the dataset's shape and classes: a model that
     * does not fit the data is a 422 now, not a failed job later */
    if (st == LSQ_OK) st = net_check_spec(&spec, &err);
    if (st != LSQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", err.message);
        scrub_paths(msg, sizeof msg, r->cfg, dataset_id);
        const char *field = err.field;
        if (dataset_id > 0 && !strcmp(field, "dataset.cache")) field = "dataset.id";
        else if (field[0] == '/') field = "";  /* a file's path */
        res = http_reply_error(r, st == LSQ_ERR_NOMEM || st == LSQ_ERR_INTERNAL
                                      ? HERR_INTERNAL : HERR_INVALID_SPEC,
                               field, "%s", msg);
        goto out;
    }
    if (caps_check_or_reply(r, &spec, &res)) goto out;
    if (spec.notify_url[0]) {
        char why[600];
        if (webhook_check_url(spec.notify_url, r->cfg->allow_private_urls, why, sizeof why)) {
            res = http_reply_error(r, HERR_INVALID_SPEC, "notify_url", "notify_url: %s", why);
            goto out;
        }
    }
    json_t *norm = spec_to_json(&spec);
    norm_text = norm ? json_dumps(norm, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(norm);
    if (!norm_text) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot encode the spec");
        goto out;
    }
    int64_t id;
    store_status ss = store_job_insert(spec.name[0] ? spec.name : "job", norm_text, model_id,
                                       dataset_id, r->user.id, r->cfg->max_queue,
                                       r->cfg->max_queued_per_user, &id);
    if (ss == STORE_NOT_FOUND) {
        /* deleted between the checks above and the insert */
        json_t *m = model_id > 0 ? store_model_get(model_id) : NULL;
        if (model_id > 0 && !m)
            res = http_reply_error(r, HERR_INVALID_SPEC, "model.onnx",
                                   "model.onnx: model %lld was deleted", (long long)model_id);
        else
            res = http_reply_error(r, HERR_INVALID_SPEC, "dataset.id",
                                   "dataset.id: dataset %lld was deleted",
                                   (long long)dataset_id);
        json_decref(m);
        goto out;
    }
    if (ss == STORE_LIMIT) {
        res = http_reply_error(r, HERR_LIMIT, NULL,
                               "%s has %d queued jobs, the most a user may have "
                               "(--max-queued-per-user); retry when one has started",
                               r->user.name, r->cfg->max_queued_per_user);
        goto out;
    }
    if (ss == STORE_FULL) {
        res = http_reply_error(r, HERR_QUEUE_FULL, NULL,
                               "the queue holds %d jobs already; retry later", r->cfg->max_queue);
        goto out;
    }
    if (ss != STORE_OK) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the job");
        goto out;
    }
    sched_kick();
    json_t *job = store_job_get(id);
    if (!job) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot read the job back");
        goto out;
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/jobs/%lld", (long long)id);
    res = http_reply_json_location(r, 201, job, loc);
out:
    if (spec_ready) spec_free(&spec);
    free(norm_text);
    json_decref(obj);
    return res;
}

static enum MHD_Result h_jobs_list(req *r)
{
    int state = -1;
    long long limit = LIST_LIMIT_DEFAULT, after = 0;
    const char *v;
    if ((v = query(r, "state")) && *v && (state = job_state_from_name(v)) < 0)
        return http_reply_error(r, HERR_INVALID_VALUE, "state",
                                "state must be queued, running, succeeded, failed or cancelled");
    if ((v = query(r, "limit")) && parse_int64(v, 1, LIST_LIMIT_MAX, &limit))
        return http_reply_error(r, HERR_INVALID_VALUE, "limit", "limit must be 1..%d",
                                LIST_LIMIT_MAX);
    if ((v = query(r, "after")) && parse_int64(v, 1, LLONG_MAX, &after))
        return http_reply_error(r, HERR_INVALID_VALUE, "after", "after must be a job id");
    json_t *jobs = store_job_list(state, (int)limit, after, auth_list_owner(r));
    if (!jobs) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot list jobs");
    size_t n = json_array_size(jobs);
    json_t *next = n == (size_t)limit
        ? json_copy(json_object_get(json_array_get(jobs, n - 1), "id")) : json_null();
    return http_reply_json(r, 200, json_pack("{s:o,s:o}", "jobs", jobs, "next", next));
}

static enum MHD_Result h_job_get(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_t *job = job_or_reply(r, &res);
    if (!job) return res;
    const char *url = json_string_value(json_object_get(json_object_get(job, "spec"),
                                                        "notify_url"));
    json_t *notify = store_job_notify(r->job_id, url);
    json_object_set_new(job, "notify", notify ? notify : json_null());
    return http_reply_json(r, 200, job);
}

/* The signing secret of the caller's webhooks. Without authentication
 * every caller is owner 0, the local user. */
static enum MHD_Result h_webhook_secret(req *r)
{
    char secret[65];
    const int64_t owner = r->user.id;
    if (webhook_secret(owner, secret))
        return http_reply_error(r, HERR_INTERNAL, NULL, "cannot read or make the secret");
    return http_reply_json(r, 200, json_pack("{s:s,s:s,s:s,s:s,s:s}", "user",
                                             r->user.name, "secret", secret, "algorithm",
                                             "hmac-sha256", "signature_header",
                                             "X-Lsqd-Signature", "timestamp_header",
                                             "X-Lsqd-Timestamp"));
}

/* POST /api/v1/jobs/{id}/events: a worker under --executor slurm with
 * --slurm-events http posts its events, numbered by itself from seq, with
 * the job's token (Authorization: Bearer). Each is stored once, whichever
 * of this path and the events file brings it first; the reply says how many
 * are stored ("acked"), from which the worker resends after a failure. */
#define EVENTS_POST_MAX 1024
static enum MHD_Result h_job_events_post(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_t *obj = NULL;
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
    char hex[65] = "";
    if (auth && !strncmp(auth, "Bearer ", 7) && strlen(auth + 7) <= 256) {
        sha256_ctx c;
        unsigned char d[32];
        sha256_init(&c);
        sha256_update(&c, auth + 7, strlen(auth + 7));
        sha256_final(&c, d);
        sha256_hex(d, hex);
    }
    if (!hex[0] || store_job_token_check(r->job_id, hex) != 1)
        return http_reply_error(r, HERR_UNAUTHORIZED, NULL,
                                "posting events of job %lld needs its token "
                                "(Authorization: Bearer ...)", (long long)r->job_id);
    job_state state;
    if (store_job_finished(r->job_id, &state) != 0)
        return http_reply_error(r, HERR_CONFLICT, NULL, "job %lld is not running",
                                (long long)r->job_id);
    obj = body_json_or_reply(r, &res);
    if (!obj) return res;
    json_t *first = json_object_get(obj, "seq"), *events = json_object_get(obj, "events");
    if (!json_is_integer(first) || json_integer_value(first) < 1) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "seq", "seq must be an integer >= 1");
        goto out;
    }
    if (!json_is_array(events) || json_array_size(events) > EVENTS_POST_MAX) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "events",
                               "events must be an array of at most %d events", EVENTS_POST_MAX);
        goto out;
    }
    size_t i;
    json_t *ev;
    int64_t stored = 0;
    json_array_foreach(events, i, ev) {
        char *text = json_dumps(ev, JSON_COMPACT);
        json_t *parsed = NULL;
        ev_type type;
        lsq_err err;
        lsq_status ps = text ? ev_parse(text, strlen(text), &parsed, &type, &err) : LSQ_ERR_NOMEM;
        free(text);
        if (ps != LSQ_OK) {
            res = http_reply_error(r, HERR_INVALID_VALUE, "events", "events[%zu]: %s", i,
                                   ps == LSQ_ERR_NOMEM ? "out of memory" : err.message);
            goto out;
        }
        int64_t seq;
        store_status st = store_worker_event_add(r->job_id, json_integer_value(first) + (int64_t)i,
                                                 type, parsed, -1, &seq);
        json_decref(parsed);
        if (st == STORE_CONFLICT) {
            int64_t have;
            store_job_events_offset(r->job_id, &have);
            res = http_reply_error(r, HERR_CONFLICT, "seq",
                                   "event %lld comes after %lld: send from %lld",
                                   (long long)(json_integer_value(first) + (int64_t)i),
                                   (long long)have, (long long)have + 1);
            goto out;
        }
        if (st != STORE_OK) {
            res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the events");
            goto out;
        }
        stored += seq > 0;
    }
    if (stored) hub_notify(r->job_id);
    int64_t acked;
    store_job_events_offset(r->job_id, &acked);
    res = http_reply_json(r, 200, json_pack("{s:I,s:I}", "acked", (json_int_t)acked,
                                            "stored", (json_int_t)stored));
out:
    json_decref(obj);
    return res;
}

/* A failed job runs again from its last checkpoint: after a full disk was
 * freed (error disk_full), or any other failure whose cause is gone. */
static enum MHD_Result h_job_resume(req *r)
{
    store_status st = store_job_resume(r->job_id);
    if (st == STORE_NOT_FOUND)
        return http_reply_error(r, HERR_NOT_FOUND, "id", "no job %lld", (long long)r->job_id);
    if (st == STORE_CONFLICT)
        return http_reply_error(r, HERR_CONFLICT, NULL, "job %lld has not failed; only a "
                                "failed job can be resumed", (long long)r->job_id);
    if (st != STORE_OK) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot resume");
    json_t *job = store_job_get(r->job_id);
    hub_notify(r->job_id);
    sched_kick();
    return job ? http_reply_json(r, 202, job)
               : http_reply_error(r, HERR_INTERNAL, NULL, "cannot read the job back");
}

static enum MHD_Result h_job_cancel(req *r)
{
    int was_running = 0;
    store_status st = store_job_cancel(r->job_id, &was_running);
    if (st == STORE_NOT_FOUND)
        return http_reply_error(r, HERR_NOT_FOUND, "id", "no job %lld", (long long)r->job_id);
    if (st == STORE_CONFLICT)
        return http_reply_error(r, HERR_CONFLICT, NULL, "job %lld has already finished",
                                (long long)r->job_id);
    if (st != STORE_OK) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot cancel");
    if (was_running) sched_cancel(r->job_id);
    else webhook_kick(); /* a queued job ended here */
    hub_notify(r->job_id);
    json_t *job = store_job_get(r->job_id);
    return job ? http_reply_json(r, 202, job)
               : http_reply_error(r, HERR_INTERNAL, NULL, "cannot read the job back");
}

static enum MHD_Result h_job_events(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_t *job = job_or_reply(r, &res);
    if (!job) return res;
    json_decref(job);
    long long after = 0;
    const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (!v || !*v) v = query(r, "after");
    if (v && *v && parse_int64(v, 0, LLONG_MAX, &after))
        return http_reply_error(r, HERR_INVALID_VALUE, "Last-Event-ID",
                                "Last-Event-ID must be an event sequence number");
    return sse_reply(r, r->job_id, after);
}

static enum MHD_Result h_job_metrics(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_t *job = job_or_reply(r, &res);
    if (!job) return res;
    json_decref(job);
    json_t *m = store_metrics_get(r->job_id);
    return m ? http_reply_json(r, 200, m)
             : http_reply_error(r, HERR_INTERNAL, NULL, "cannot read metrics");
}

static enum MHD_Result h_job_artifacts(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_t *job = job_or_reply(r, &res);
    if (!job) return res;
    json_decref(job);
    json_t *arts = store_artifacts_list(r->job_id);
    if (!arts) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot list artifacts");
    return http_reply_json(r, 200, json_pack("{s:I,s:o}", "job_id", (json_int_t)r->job_id,
                                             "artifacts", arts));
}

/* A plain file name: letters, digits, '.', '_', '-', not starting with '.'. */
static int artifact_name_ok(const char *name)
{
    if (!*name || name[0] == '.' || strlen(name) > 128) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return strstr(name, "..") == NULL;
}

static enum MHD_Result h_job_artifact_get(req *r)
{
    const char *name = r->name_param;
    if (!artifact_name_ok(name))
        return http_reply_error(r, HERR_BAD_REQUEST, "name",
                                "artifact names are plain file names (no '/', no '..')");
    enum MHD_Result res = MHD_YES;
    json_t *job = job_or_reply(r, &res);
    if (!job) return res;
    json_decref(job);
    int64_t bytes;
    char sha[65];
    store_status st = store_artifact_get(r->job_id, name, &bytes, sha);
    if (st == STORE_NOT_FOUND)
        return http_reply_error(r, HERR_NOT_FOUND, "name", "job %lld has no artifact '%s'",
                                (long long)r->job_id, name);
    if (st != STORE_OK) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot read artifacts");
    char etag[72];
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && (strstr(inm, etag) || !strcmp(inm, "*"))) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
        return http_reply_response(r, 304, resp);
    }
    char dir[PATH_MAX], path[PATH_MAX + 160];
    sched_job_dir(r->cfg, r->job_id, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return http_reply_error(r, HERR_NOT_FOUND, "name", "the file of artifact '%s' is gone",
                                name);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (!resp) { close(fd); return MHD_NO; }
    char disp[200];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", name);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    return http_reply_response(r, 200, resp);
}

/* --------------------------------------------------------------- predict */

/* Loaded models, one per job, kept for the life of lsqd (a job's model
 * never changes once it has succeeded). */
#define MODEL_CACHE 32
static pthread_mutex_t g_models_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int64_t job_id; lsqm_model *m; } g_models[MODEL_CACHE];

/* Returns the model and whether the caller must free it (cache full). */
static lsqm_model *model_get(const lsqd_config *cfg, int64_t job_id, int *owned, lsq_err *err)
{
    *owned = 0;
    pthread_mutex_lock(&g_models_lock);
    for (int i = 0; i < MODEL_CACHE; i++) {
        if (g_models[i].m && g_models[i].job_id == job_id) {
            lsqm_model *m = g_models[i].m;
            pthread_mutex_unlock(&g_models_lock);
            return m;
        }
    }
    char dir[PATH_MAX], path[PATH_MAX + 16];
    sched_job_dir(cfg, job_id, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.lsqm", dir);
    lsqm_model *m = lsqm_load(path, err);
    if (m) {
        int slot = -1;
        for (int i = 0; i < MODEL_CACHE && slot < 0; i++)
            if (!g_models[i].m) slot = i;
        if (slot >= 0) {
            g_models[slot].job_id = job_id;
            g_models[slot].m = m;
        } else {
            *owned = 1;
        }
    }
    pthread_mutex_unlock(&g_models_lock);
    return m;
}

/* Decodes standard base64 (padding optional; whitespace and line breaks,
 * as `base64` wraps its output, skipped). Returns a malloc'ed buffer (the
 * caller frees) and its length, or NULL on bad input or out of memory. */
static uint8_t *base64_decode(const char *text, size_t len, size_t *out_len)
{
    static const char ALPHABET[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t *out = malloc(len / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0, digits = 0;
    uint32_t acc = 0;
    int bits = 0, padded = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
        const char *at = ch && ch != '=' && !padded ? strchr(ALPHABET, ch) : NULL;
        if (ch == '=') {
            padded = 1;
            continue;
        }
        if (!at) {
            free(out);
            return NULL;
        }
        digits++;
        acc = (acc << 6) | (uint32_t)(at - ALPHABET);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (digits % 4 == 1) {
        free(out);
        return NULL;
    }
    *out_len = o;
    return out;
}

/* Fills px, the model's (c, h, w) planes, from one request image: a base64
 * PNG or JPEG string (a data: URL too) of any size and channel count,
 * decoded and converted as the dataset importer does (data/image.h); or
 * grey pixels as h rows of w numbers or a flat array of h*w (replicated
 * for a colour model), or a flat array of c*h*w (planes). name is
 * "images[i]". Returns 0, or -1 with why (which starts with name). */
static int image_from_json(json_t *img, int c, int h, int w, uint8_t *px, const char *name,
                           char *why, size_t cap)
{
    if (json_is_string(img)) {
        const char *s = json_string_value(img);
        const char *comma = !strncmp(s, "data:", 5) ? strchr(s, ',') : NULL;
        if (comma) s = comma + 1;
        size_t n = 0;
        uint8_t *bytes = base64_decode(s, strlen(s), &n);
        if (!bytes) {
            snprintf(why, cap, "%s: not base64 (a PNG or JPEG file encoded as standard base64)",
                     name);
            return -1;
        }
        lsq_err err;
        lsq_err_clear(&err);
        lsq_status st = image_decode_fit(px, c, h, w, bytes, n, name, &err);
        free(bytes);
        if (st != LSQ_OK) {
            snprintf(why, cap, "%s", err.message);
            return -1;
        }
        return 0;
    }
    if (!json_is_array(img)) {
        snprintf(why, cap, "%s: an image is a base64 PNG or JPEG, or an array of %d rows of %d "
                 "pixels", name, h, w);
        return -1;
    }
    size_t rows = json_array_size(img), hw = (size_t)h * (size_t)w;
    int nested = json_is_array(json_array_get(img, 0));
    int planes = !nested && c > 1 && rows == (size_t)c * hw;
    int flat = !nested && rows == hw;
    if (!planes && !flat && (!nested || rows != (size_t)h)) {
        snprintf(why, cap, "%s: expected %d rows of %d pixels", name, h, w);
        return -1;
    }
    size_t count = planes ? (size_t)c * hw : hw;
    for (size_t i = 0; i < count; i++) {
        size_t y = i / (size_t)w % (size_t)h, x = i % (size_t)w;
        json_t *row = nested ? json_array_get(img, y) : NULL;
        if (nested && (!json_is_array(row) || json_array_size(row) != (size_t)w)) {
            snprintf(why, cap, "%s: row %zu must hold %d pixels", name, y, w);
            return -1;
        }
        json_t *v = nested ? json_array_get(row, x) : json_array_get(img, i);
        double d = json_is_number(v) ? json_number_value(v) : -1;
        if (!(d >= 0 && d <= 255)) {
            snprintf(why, cap, "%s: pixel (%zu, %zu) must be a number 0..255", name, y, x);
            return -1;
        }
        px[i] = (uint8_t)(d + 0.5);
    }
    /* grey pixels for a colour model: the same value in every plane */
    if (!planes)
        for (int k = 1; k < c; k++) memcpy(px + (size_t)k * hw, px, hw);
    return 0;
}

static enum MHD_Result h_job_predict(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_t *obj = NULL, *job = NULL;
    uint8_t *pixels = NULL;
    float *logits = NULL, *probs = NULL;
    lsqm_model *m = NULL;
    int owned = 0;
    job = job_or_reply(r, &res);
    if (!job) goto out;
    obj = body_json_or_reply(r, &res);
    if (!obj) goto out;
    if (strcmp(json_string_value(json_object_get(job, "state")), "succeeded")) {
        res = http_reply_error(r, HERR_CONFLICT, NULL, "job %lld has not succeeded; it has no model",
                               (long long)r->job_id);
        goto out;
    }
    json_t *images = json_object_get(obj, "images");
    size_t n = json_array_size(images);
    if (!json_is_array(images) || n == 0 || n > PREDICT_MAX_IMAGES) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "images",
                               "images must be an array of 1..%d images", PREDICT_MAX_IMAGES);
        goto out;
    }
    lsq_err err;
    lsq_err_clear(&err);
    m = model_get(r->cfg, r->job_id, &owned, &err);
    if (!m && err.code == LSQ_ERR_IO) {
        /* a finished job whose network the integer engine does not carry
         * (its training log says why) has no packed model to predict with */
        res = http_reply_error(r, HERR_CONFLICT, NULL,
                               "job %lld has no packed model (model.lsqm) to predict with: "
                               "its events say why (model.onnx may still be there)",
                               (long long)r->job_id);
        goto out;
    }
    if (!m) {
        res = http_reply_error(r, err.code == LSQ_ERR_INTERNAL ? HERR_UNAVAILABLE : HERR_INTERNAL,
                               NULL, "cannot load the model: %s", err.message);
        goto out;
    }
    int c, h, w, classes;
    lsqm_input_shape(m, &c, &h, &w, &classes);
    if (c != 1 && c != 3) {
        res = http_reply_error(r, HERR_CONFLICT, NULL,
                               "the model takes %d channels; images convert to 1 (grey) or 3 "
                               "(RGB)", c);
        goto out;
    }
    size_t plane = (size_t)c * h * w;
    pixels = malloc(n * plane);
    logits = malloc(n * (size_t)classes * sizeof *logits);
    probs = malloc(n * (size_t)classes * sizeof *probs);
    if (!pixels || !logits || !probs) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char why[600], field[32];
        snprintf(field, sizeof field, "images[%zu]", i);
        if (image_from_json(json_array_get(images, i), c, h, w, pixels + i * plane, field, why,
                            sizeof why)) {
            res = http_reply_error(r, HERR_INVALID_VALUE, field, "%s", why);
            goto out;
        }
    }
    if (lsqm_predict(m, pixels, (int)n, logits, probs, 1, &err) != LSQ_OK) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "inference failed: %s", err.message);
        goto out;
    }
    json_t *jds = json_object_get(json_object_get(job, "spec"), "dataset");
    const char *ds = json_string_value(json_object_get(jds, "name"));
    const char *cache = json_string_value(json_object_get(jds, "cache"));
    int fashion = (!ds || !strcmp(ds, "fashion-mnist")) && (!cache || !*cache);
    /* a registered dataset's own class names, while it exists */
    json_t *dsrow = json_is_integer(json_object_get(job, "dataset_id"))
        ? store_dataset_get(json_integer_value(json_object_get(job, "dataset_id")), 1) : NULL;
    json_t *names = json_object_get(json_object_get(dsrow, "summary"), "classes");
    json_t *preds = json_array();
    for (size_t i = 0; i < n; i++) {
        int best = 0;
        json_t *p = json_array();
        for (int k = 0; k < classes; k++) {
            float v = probs[i * (size_t)classes + (size_t)k];
            json_array_append_new(p, json_real(v));
            if (v > probs[i * (size_t)classes + (size_t)best]) best = k;
        }
        char label[80];
        const char *own = json_string_value(
            json_object_get(json_array_get(names, (size_t)best), "name"));
        if (own) snprintf(label, sizeof label, "%s", own);
        else if (fashion && classes == 10)
            snprintf(label, sizeof label, "%s", FASHION_LABELS[best]);
        else snprintf(label, sizeof label, "%d", best);
        json_array_append_new(preds, json_pack("{s:i,s:s,s:o}", "class", best, "label", label,
                                               "probabilities", p));
    }
    json_decref(dsrow);
    res = http_reply_json(r, 200, json_pack("{s:I,s:o}", "job_id", (json_int_t)r->job_id,
                                            "predictions", preds));
out:
    if (owned) lsqm_free(m);
    free(pixels);
    free(logits);
    free(probs);
    json_decref(obj);
    json_decref(job);
    return res;
}

/* ------------------------------------------------------------ operations */

static enum MHD_Result h_openapi(req *r)
{
    return http_reply_bytes(r, 200, "application/json", EMBED_OPENAPI.text, EMBED_OPENAPI.len);
}

static enum MHD_Result h_healthz(req *r)
{
    if (store_ping())
        return http_reply_error(r, HERR_UNAVAILABLE, NULL, "the database does not answer");
    sched_busy busy[64];
    int nbusy = sched_snapshot(busy, 64);
    return http_reply_json(r, 200, json_pack("{s:s,s:s,s:i,s:i,s:i}", "status", "ok",
                                             "database", "ok", "schema_version", store_version(),
                                             "workers", r->cfg->workers, "busy", nbusy));
}

static enum MHD_Result h_metrics(req *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return http_reply_error(r, HERR_INTERNAL, NULL, "out of memory");
    int64_t counts[JOB_STATE_COUNT];
    int db_ok = store_job_counts(counts) == STORE_OK;
    fputs("# HELP lsqd_jobs Jobs by state.\n# TYPE lsqd_jobs gauge\n", f);
    for (int s = 0; s < JOB_STATE_COUNT; s++)
        fprintf(f, "lsqd_jobs{state=\"%s\"} %lld\n", JOB_STATE_NAMES[s],
                db_ok ? (long long)counts[s] : 0LL);
    fprintf(f, "# HELP lsqd_queue_depth Jobs waiting for a worker.\n"
               "# TYPE lsqd_queue_depth gauge\nlsqd_queue_depth %lld\n",
            db_ok ? (long long)counts[JOB_QUEUED] : 0LL);
    sched_busy busy[64];
    int nbusy = sched_snapshot(busy, 64);
    fprintf(f, "# HELP lsqd_workers Worker slots.\n# TYPE lsqd_workers gauge\nlsqd_workers %d\n",
            r->cfg->workers);
    fprintf(f, "# HELP lsqd_workers_busy Worker slots running a job.\n"
               "# TYPE lsqd_workers_busy gauge\nlsqd_workers_busy %d\n", nbusy);
    fputs("# HELP lsqd_training_images_per_second Training throughput of running jobs.\n"
          "# TYPE lsqd_training_images_per_second gauge\n", f);
    for (int i = 0; i < nbusy && i < 64; i++)
        fprintf(f, "lsqd_training_images_per_second{job=\"%lld\"} %.3f\n",
                (long long)busy[i].job_id, busy[i].images_per_s);
    fprintf(f, "# HELP lsqd_sse_streams_waiting SSE streams waiting for events.\n"
               "# TYPE lsqd_sse_streams_waiting gauge\nlsqd_sse_streams_waiting %d\n",
            hub_parked_count());
    int nroutes;
    const route_def *table = routes_table(&nroutes);
    reply_metrics_write(f, table, nroutes);
    fclose(f);
    enum MHD_Result res = http_reply_bytes(r, 200, "text/plain; version=0.0.4", text, len);
    free(text);
    return res;
}

static const char FALLBACK_INDEX[] =
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>lsqd</title></head>"
    "<body><h1>lsqd</h1><p>Learned Step Size Quantization as a service. "
    "The API is described at <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a>; "
    "jobs are at <a href=\"/api/v1/jobs\">/api/v1/jobs</a>.</p></body></html>\n";

static enum MHD_Result h_index(req *r)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/index.html", r->cfg->web_dir);
    int fd = r->cfg->web_dir[0] ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
        if (!resp) { close(fd); return MHD_NO; }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        return http_reply_response(r, 200, resp);
    }
    if (fd >= 0) close(fd);
    return http_reply_bytes(r, 200, "text/html; charset=utf-8", FALLBACK_INDEX,
                            sizeof FALLBACK_INDEX - 1);
}

/* ----------------------------------------------------------- route table */

const route_def *routes_table(int *n)
{
    static const route_def ROUTES[] = {
        {"POST", "/api/v1/jobs", "jobs_submit", h_jobs_submit, BODY_JSON, ACCESS_USER},
        {"GET", "/api/v1/jobs", "jobs_list", h_jobs_list, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/jobs/{id}", "job_get", h_job_get, BODY_NONE, ACCESS_USER},
        {"POST", "/api/v1/jobs/{id}/cancel", "job_cancel", h_job_cancel, BODY_NONE, ACCESS_USER},
        {"POST", "/api/v1/jobs/{id}/resume", "job_resume", h_job_resume, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/jobs/{id}/events", "job_events", h_job_events, BODY_NONE, ACCESS_USER},
        {"POST", "/api/v1/jobs/{id}/events", "job_events_post", h_job_events_post, BODY_JSON,
         ACCESS_PUBLIC}, /* the job's own token, checked by the handler */
        {"GET", "/api/v1/jobs/{id}/metrics", "job_metrics", h_job_metrics, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/jobs/{id}/artifacts", "job_artifacts", h_job_artifacts, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/jobs/{id}/artifacts/{name}", "job_artifact_get", h_job_artifact_get, BODY_NONE, ACCESS_USER},
        {"POST", "/api/v1/jobs/{id}/predict", "job_predict", h_job_predict, BODY_JSON, ACCESS_USER},
        {"GET", "/api/v1/webhook-secret", "webhook_secret", h_webhook_secret, BODY_NONE, ACCESS_USER},
        {"POST", "/api/v1/datasets", "datasets_register", datasets_post, BODY_FILE_OR_JSON, ACCESS_USER},
        {"GET", "/api/v1/datasets", "datasets_list", datasets_list, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/datasets/{id}", "dataset_get", datasets_get, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/datasets/{id}/samples.png", "dataset_samples", datasets_samples,
         BODY_NONE, ACCESS_USER},
        {"DELETE", "/api/v1/datasets/{id}", "dataset_delete", datasets_delete, BODY_NONE, ACCESS_USER},
        {"POST", "/api/v1/models", "models_upload", models_post, BODY_FILE, ACCESS_USER},
        {"GET", "/api/v1/models", "models_list", models_list, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/models/{id}", "model_get", models_get, BODY_NONE, ACCESS_USER},
        {"DELETE", "/api/v1/models/{id}", "model_delete", models_delete, BODY_NONE, ACCESS_USER},
        {"GET", "/api/v1/openapi.json", "openapi", h_openapi, BODY_NONE, ACCESS_USER},
        {"GET", "/healthz", "healthz", h_healthz, BODY_NONE, ACCESS_PUBLIC},
        {"GET", "/metrics", "metrics", h_metrics, BODY_NONE, ACCESS_ADMIN},
        {"GET", "/", "index", h_index, BODY_NONE, ACCESS_PUBLIC},
        {"GET", "/static/{name}", "static", static_reply, BODY_NONE, ACCESS_PUBLIC},
    };
    *n = (int)(sizeof ROUTES / sizeof *ROUTES);
    return ROUTES;
}
