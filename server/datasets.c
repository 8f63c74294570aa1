/* Datasets as objects of lsqd (datasets.h). The handlers check what a
 * client sends (name, options, URL) and answer at once; the work (fetch,
 * import, samples) is the registrar's. A dataset's files live in
 * DATA/datasets/ID/: the uploaded or fetched source while it registers,
 * then dataset.lsqd (the cache) and samples.png. */
#include "datasets.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>

#include "auth.h"
#include "data/data.h"
#include "data/import.h"
#include "fetch.h"
#include "registrar.h"
#include "store.h"

#define MNIST_DEFAULT_DIR "/usr/share/datasets/mnist"
#define SAMPLES_FILE "samples.png"

/* ------------------------------------------------------------- checks */

/* 1..128 printable characters without '/'. */
static int name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > DATASET_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '/') return 0;
    return 1;
}

/* Replies 422 on field name unless name is a valid dataset name with a
 * known extension. */
static int name_or_reply(req *r, const char *name, enum MHD_Result *res)
{
    if (!name_ok(name)) {
        *res = http_reply_error(r, HERR_INVALID_VALUE, "name",
                                "name must be 1 to %d printable characters without '/': the "
                                "file's name, e.g. pets.tar.gz", DATASET_NAME_MAX);
        return -1;
    }
    if (!registrar_extension(name)) {
        *res = http_reply_error(r, HERR_INVALID_VALUE, "name",
                                "name '%s' must end with .tar, .tar.gz, .tgz, .zip or .npz: the "
                                "extension tells how to read the file", name);
        return -1;
    }
    return 0;
}

static int parse_side(const char *s, long *out, const char **end)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || e == s || v < 1 || v > 4096) return -1;
    *out = v;
    *end = e;
    return 0;
}

/* The import options (format, size, channels, test_fraction) from a JSON
 * object of given values, checked and normalised into *out (new). The
 * query of an upload comes as strings; JSON may give numbers. -1 with the
 * field and the reason. */
static int options_parse(json_t *in, json_t **out, const char **field, char *why, size_t cap)
{
    *out = json_object();
    json_t *v;
    if ((v = json_object_get(in, "format"))) {
        const char *f = json_string_value(v);
        int ok = 0;
        for (int k = 1; f && k < DFMT_COUNT; k++) ok |= !strcmp(f, DATA_FORMAT_NAMES[k]);
        if (!ok) {
            *field = "format";
            snprintf(why, cap, "format must be idx, cifar10, cifar100, folder or npz");
            return -1;
        }
        json_object_set_new(*out, "format", json_string(f));
    }
    if ((v = json_object_get(in, "size"))) {
        const char *s = json_string_value(v), *e = NULL;
        long h = 0, w = 0;
        if (!s || parse_side(s, &h, &e) || (*e != 'x' && *e != 'X') || parse_side(e + 1, &w, &e) ||
            *e) {
            *field = "size";
            snprintf(why, cap, "size must be \"HxW\" with both sides in 1..4096");
            return -1;
        }
        char norm[32];
        snprintf(norm, sizeof norm, "%ldx%ld", h, w);
        json_object_set_new(*out, "size", json_string(norm));
    }
    if ((v = json_object_get(in, "channels"))) {
        long long c = json_is_integer(v) ? json_integer_value(v)
                      : json_is_string(v) && (!strcmp(json_string_value(v), "1") ||
                                              !strcmp(json_string_value(v), "3"))
                          ? atoi(json_string_value(v)) : 0;
        if (c != 1 && c != 3) {
            *field = "channels";
            snprintf(why, cap, "channels must be 1 or 3");
            return -1;
        }
        json_object_set_new(*out, "channels", json_integer(c));
    }
    if ((v = json_object_get(in, "test_fraction"))) {
        double f = NAN;
        if (json_is_number(v)) {
            f = json_number_value(v);
        } else if (json_is_string(v)) {
            char *e;
            const char *s = json_string_value(v);
            f = strtod(s, &e);
            if (e == s || *e) f = NAN;
        }
        if (!(f > 0 && f < 1)) {
            *field = "test_fraction";
            snprintf(why, cap, "test_fraction must be a number in (0, 1)");
            return -1;
        }
        json_object_set_new(*out, "test_fraction", json_real(f));
    }
    return 0;
}

static enum MHD_Result reply_dataset(req *r, unsigned status, int64_t id)
{
    json_t *ds = store_dataset_get(id, 1);
    if (!ds) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot read the dataset back");
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/datasets/%lld", (long long)id);
    return http_reply_json_location(r, status, ds, loc);
}

static int make_dir(const lsqd_config *cfg, int64_t id, char *dir, size_t cap)
{
    char top[PATH_MAX];
    snprintf(top, sizeof top, "%.*s/datasets", PATH_MAX - 16, cfg->data);
    if (mkdir(top, 0755) != 0 && errno != EEXIST) return -1;
    registrar_dir(cfg, id, dir, cap);
    return mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* ------------------------------------------------------------ handlers */

static const char *query(req *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

static enum MHD_Result post_upload(req *r)
{
    enum MHD_Result res = MHD_YES;
    const char *name = query(r, "name");
    if (!name)
        return http_reply_error(r, HERR_INVALID_VALUE, "name",
                                "give ?name=NAME, the file's name (e.g. pets.tar.gz): its "
                                "extension tells how to read it");
    if (name_or_reply(r, name, &res)) return res;
    json_t *given = json_object(), *opts = NULL;
    static const char *const KEYS[] = {"format", "size", "channels", "test_fraction"};
    for (size_t i = 0; i < sizeof KEYS / sizeof *KEYS; i++) {
        const char *v = query(r, KEYS[i]);
        if (v) json_object_set_new(given, KEYS[i], json_string(v));
    }
    const char *field = NULL;
    char why[200], dir[PATH_MAX], src[PATH_MAX + 32];
    char *opts_text = NULL;
    int64_t id = 0;
    if (options_parse(given, &opts, &field, why, sizeof why)) {
        res = http_reply_error(r, HERR_INVALID_VALUE, field, "%s", why);
        goto out;
    }
    if (r->upload_bytes == 0) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "body", "the body is empty: send the "
                               "archive as application/octet-stream");
        goto out;
    }
    if (auth_quota_or_reply(r, r->upload_bytes, &res)) goto out;
    opts_text = json_dumps(opts, JSON_COMPACT | JSON_SORT_KEYS);
    if (!opts_text || store_dataset_insert(name, DS_SRC_UPLOAD, NULL, opts_text,
                                           (long long)r->upload_bytes, r->upload_sha256,
                                           r->user.id, &id) != STORE_OK) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the dataset");
        goto out;
    }
    registrar_source_path(r->cfg, id, name, src, sizeof src);
    if (make_dir(r->cfg, id, dir, sizeof dir) || rename(r->upload_path, src) != 0) {
        int e = errno;
        int64_t unused;
        store_dataset_fail(id, "internal", "cannot keep the upload");
        store_dataset_delete(id, &unused);
        registrar_remove_dir(dir);
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot keep the upload: %s", strerror(e));
        goto out;
    }
    r->upload_path[0] = '\0'; /* the registrar's now */
    registrar_enqueue(id);
    res = reply_dataset(r, 202, id);
out:
    free(opts_text);
    json_decref(given);
    json_decref(opts);
    return res;
}

static enum MHD_Result post_url(req *r)
{
    enum MHD_Result res = MHD_YES;
    json_error_t jerr;
    json_t *obj = r->body ? json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    json_t *opts = NULL;
    char *opts_text = NULL;
    if (!obj)
        return http_reply_error(r, HERR_MALFORMED_JSON, NULL, "the body is not JSON: %s",
                                r->body ? jerr.text : "empty body");
    if (!json_is_object(obj)) {
        res = http_reply_error(r, HERR_INVALID_VALUE, NULL, "the body must be a JSON object "
                               "{\"url\": ..., \"name\": ...}");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!strcmp(key, "path")) {
            res = http_reply_error(r, HERR_INVALID_VALUE, "path",
                                   "lsqd opens no server path for a client: upload the dataset "
                                   "(application/octet-stream) or give its \"url\"");
            goto out;
        }
        if (strcmp(key, "url") && strcmp(key, "name") && strcmp(key, "format") &&
            strcmp(key, "size") && strcmp(key, "channels") && strcmp(key, "test_fraction")) {
            res = http_reply_error(r, HERR_INVALID_VALUE, key, "unknown field '%s'", key);
            goto out;
        }
    }
    const char *url = json_string_value(json_object_get(obj, "url"));
    char why[600];
    if (!url) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "url",
                               "url is required: the http or https address of the archive (or "
                               "upload the file as application/octet-stream)");
        goto out;
    }
    if (fetch_check_url(url, r->cfg->allow_private_urls, why, sizeof why)) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "url", "%s", why);
        goto out;
    }
    if (auth_quota_or_reply(r, 0, &res)) goto out;
    json_t *jn = json_object_get(obj, "name");
    char name[DATASET_NAME_MAX + 64];
    if (jn && !json_is_string(jn)) {
        res = http_reply_error(r, HERR_INVALID_VALUE, "name", "name must be a string");
        goto out;
    }
    if (jn) snprintf(name, sizeof name, "%s", json_string_value(jn));
    else fetch_url_basename(url, name, sizeof name);
    if (name_or_reply(r, name, &res)) goto out;
    const char *field = NULL;
    if (options_parse(obj, &opts, &field, why, sizeof why)) {
        res = http_reply_error(r, HERR_INVALID_VALUE, field, "%s", why);
        goto out;
    }
    opts_text = json_dumps(opts, JSON_COMPACT | JSON_SORT_KEYS);
    int64_t id;
    char dir[PATH_MAX];
    if (!opts_text ||
        store_dataset_insert(name, DS_SRC_URL, url, opts_text, -1, NULL, r->user.id, &id) !=
            STORE_OK) {
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot store the dataset");
        goto out;
    }
    if (make_dir(r->cfg, id, dir, sizeof dir)) {
        int e = errno;
        int64_t unused;
        store_dataset_fail(id, "internal", "cannot create its folder");
        store_dataset_delete(id, &unused);
        res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot create the dataset's folder: %s",
                               strerror(e));
        goto out;
    }
    registrar_enqueue(id);
    res = reply_dataset(r, 202, id);
out:
    free(opts_text);
    json_decref(opts);
    json_decref(obj);
    return res;
}

enum MHD_Result datasets_post(req *r)
{
    return r->body_kind == BODY_FILE ? post_upload(r) : post_url(r);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The four IDX files of a built-in set's folder, with or without .gz. */
static int builtin_available(const char *dir)
{
    static const char *const FILES[] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    };
    for (int i = 0; i < 4; i++) {
        char a[PATH_MAX + 64], b[PATH_MAX + 64];
        snprintf(a, sizeof a, "%s/%s", dir, FILES[i]);
        snprintf(b, sizeof b, "%s/%s.gz", dir, FILES[i]);
        if (!file_exists(a) && !file_exists(b)) return 0;
    }
    return 1;
}

enum MHD_Result datasets_list(req *r)
{
    json_t *reg = store_dataset_list(auth_list_owner(r));
    if (!reg) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot list datasets");
    json_t *out = json_array();
    static const struct { const char *name, *dir; } BUILTIN[] = {
        {"fashion-mnist", LSQ_DEFAULT_DATA_DIR}, {"mnist", MNIST_DEFAULT_DIR},
    };
    for (size_t b = 0; b < sizeof BUILTIN / sizeof *BUILTIN; b++)
        json_array_append_new(out, json_pack("{s:n,s:s,s:b,s:b,s:{s:[iii],s:i}}", "id", "name",
                                             BUILTIN[b].name, "builtin", 1, "available",
                                             builtin_available(BUILTIN[b].dir), "summary",
                                             "shape", 1, 28, 28, "num_classes", 10));
    json_array_extend(out, reg);
    json_decref(reg);
    return http_reply_json(r, 200, json_pack("{s:o}", "datasets", out));
}

enum MHD_Result datasets_get(req *r)
{
    json_t *ds = store_dataset_get(r->job_id, 1);
    if (!ds) return http_reply_error(r, HERR_NOT_FOUND, "id", "no dataset %lld",
                                     (long long)r->job_id);
    return http_reply_json(r, 200, ds);
}

enum MHD_Result datasets_samples(req *r)
{
    json_t *ds = store_dataset_get(r->job_id, 0);
    if (!ds) return http_reply_error(r, HERR_NOT_FOUND, "id", "no dataset %lld",
                                     (long long)r->job_id);
    int ready = !strcmp(json_string_value(json_object_get(ds, "state")),
                        DS_STATE_NAMES[DS_READY]);
    json_decref(ds);
    if (!ready)
        return http_reply_error(r, HERR_NOT_FOUND, "id", "dataset %lld is not ready; it has no "
                                "samples", (long long)r->job_id);
    char dir[PATH_MAX], path[PATH_MAX + 32];
    registrar_dir(r->cfg, r->job_id, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/" SAMPLES_FILE, dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return http_reply_error(r, HERR_NOT_FOUND, "id", "the samples of dataset %lld are gone",
                                (long long)r->job_id);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "image/png");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "max-age=3600");
    return http_reply_response(r, 200, resp);
}

enum MHD_Result datasets_delete(req *r)
{
    int64_t job = 0;
    store_status st = store_dataset_delete(r->job_id, &job);
    if (st == STORE_NOT_FOUND)
        return http_reply_error(r, HERR_NOT_FOUND, "id", "no dataset %lld", (long long)r->job_id);
    if (st == STORE_CONFLICT && job > 0)
        return http_reply_error(r, HERR_CONFLICT, "id",
                                "dataset %lld is used by job %lld, which has not finished; "
                                "cancel it or wait", (long long)r->job_id, (long long)job);
    if (st == STORE_CONFLICT)
        return http_reply_error(r, HERR_CONFLICT, "id",
                                "dataset %lld is still registering; wait until it is ready or "
                                "failed", (long long)r->job_id);
    if (st != STORE_OK) return http_reply_error(r, HERR_INTERNAL, NULL, "cannot delete");
    char dir[PATH_MAX];
    registrar_dir(r->cfg, r->job_id, dir, sizeof dir);
    registrar_remove_dir(dir);
    return http_reply_bytes(r, 204, "application/json", "", 0);
}

/* ---------------------------------------------------------------- jobs */

int datasets_resolve_spec(const lsqd_config *cfg, const store_user *user, json_t *spec,
                          int64_t *dataset_id, char *field, size_t field_cap, char *why,
                          size_t cap)
{
    *dataset_id = 0;
    json_t *ds = json_object_get(spec, "dataset");
    if (!json_is_object(ds)) return 0;
    static const char *const PATHS[] = {"path", "cache"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(ds, PATHS[i]);
        /* "" is what a normalised spec says for "none": harmless */
        if (!v || (json_is_string(v) && !*json_string_value(v))) continue;
        snprintf(field, field_cap, "dataset.%s", PATHS[i]);
        snprintf(why, cap, "dataset.%s names a folder on the server, which lsqd does not open "
                 "for clients: upload the dataset or register it from a URL (POST "
                 "/api/v1/datasets) and give \"dataset\": {\"id\": N}", PATHS[i]);
        return -1;
    }
    json_t *idv = json_object_get(ds, "id");
    if (!idv || json_is_null(idv)) {
        json_object_del(ds, "id");
        return 0;
    }
    snprintf(field, field_cap, "dataset.id");
    long long id = 0;
    if (json_is_integer(idv)) {
        id = json_integer_value(idv);
    } else if (json_is_string(idv)) {
        char *end;
        errno = 0;
        id = strtoll(json_string_value(idv), &end, 10);
        if (errno || *end || end == json_string_value(idv)) id = 0;
    }
    if (id <= 0) {
        snprintf(why, cap, "dataset.id must be the id of a dataset of this lsqd "
                 "(GET /api/v1/datasets)");
        return -1;
    }
    json_t *name = json_object_get(ds, "name");
    if (name && json_is_null(name)) json_object_del(ds, "name");
    else if (name) {
        snprintf(field, field_cap, "dataset.name");
        snprintf(why, cap, "dataset.name and dataset.id name two datasets; give one");
        return -1;
    }
    json_t *row = auth_may_use(user, STORE_OBJ_DATASET, id) ? store_dataset_get(id, 0) : NULL;
    if (!row) {
        snprintf(why, cap, "dataset.id: no dataset %lld", id);
        return -1;
    }
    const char *state = json_string_value(json_object_get(row, "state"));
    if (strcmp(state, DS_STATE_NAMES[DS_READY])) {
        if (!strcmp(state, DS_STATE_NAMES[DS_REGISTERING]))
            snprintf(why, cap, "dataset.id: dataset %lld is still registering; submit when it "
                     "is ready", id);
        else
            snprintf(why, cap, "dataset.id: dataset %lld failed to register; it cannot be "
                     "used", id);
        json_decref(row);
        return -1;
    }
    json_decref(row);
    char dir[PATH_MAX];
    registrar_dir(cfg, id, dir, sizeof dir);
    json_object_del(ds, "id");
    json_object_set_new(ds, "cache", json_string(dir));
    *dataset_id = id;
    return 0;
}
