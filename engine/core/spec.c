/* The job spec (v1): the one validator. Every key is checked against a list
 * of known keys per object, every value for type and range, and every
 * default is filled in, so the trainer and lsqd read a complete struct.
 * Errors name the dotted path of the offending key. */
#include "core/spec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const SPEC_SCHEDULE_NAMES[] = {"cosine", "constant"};
_Static_assert(sizeof SPEC_SCHEDULE_NAMES / sizeof *SPEC_SCHEDULE_NAMES == SCHED_COUNT,
               "SPEC_SCHEDULE_NAMES must name every spec_schedule");
const char *const SPEC_GRANULARITY_NAMES[] = {"tensor", "channel"};
_Static_assert(sizeof SPEC_GRANULARITY_NAMES / sizeof *SPEC_GRANULARITY_NAMES == GRAN_COUNT,
               "SPEC_GRANULARITY_NAMES must name every spec_granularity");
const char *const SPEC_GSCALE_NAMES[] = {"paper", "none", "sqrt_n", "value"};
_Static_assert(sizeof SPEC_GSCALE_NAMES / sizeof *SPEC_GSCALE_NAMES == GSCALE_COUNT,
               "SPEC_GSCALE_NAMES must name every spec_gscale");
const char *const SPEC_QMETHOD_NAMES[] = {"lsq", "ptq"};
_Static_assert(sizeof SPEC_QMETHOD_NAMES / sizeof *SPEC_QMETHOD_NAMES == QMETHOD_COUNT,
               "SPEC_QMETHOD_NAMES must name every spec_qmethod");
const char *const SPEC_QINIT_NAMES[] = {"paper", "mse"};
_Static_assert(sizeof SPEC_QINIT_NAMES / sizeof *SPEC_QINIT_NAMES == QINIT_COUNT,
               "SPEC_QINIT_NAMES must name every spec_qinit");
const char *const SPEC_ACT_SIGN_NAMES[] = {"auto", "unsigned", "signed", "lsq+"};
_Static_assert(sizeof SPEC_ACT_SIGN_NAMES / sizeof *SPEC_ACT_SIGN_NAMES == ASIGN_COUNT,
               "SPEC_ACT_SIGN_NAMES must name every spec_act_sign");

static const char *const ARCH_NAMES[] = {"mlp", "cnn-small", "resnet20"};
#define ARCH_COUNT ((int)(sizeof ARCH_NAMES / sizeof *ARCH_NAMES))
static const char *const DATASET_NAMES[] = {"fashion-mnist", "mnist"};
#define DATASET_COUNT ((int)(sizeof DATASET_NAMES / sizeof *DATASET_NAMES))

/* Dotted paths are built in buffers this large; err->field truncates. */
#define PATH_LEN 256

/* ---- small helpers -------------------------------------------------------- */

static const char *jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

static void path_join(char *out, const char *parent, const char *key)
{
    if (parent && *parent) snprintf(out, PATH_LEN, "%s.%s", parent, key);
    else snprintf(out, PATH_LEN, "%s", key);
}

static lsq_status type_error(lsq_err *err, const char *path, const char *expected,
                             const json_t *got)
{
    return lsq_err_set(err, LSQ_ERR_INVALID, path, "%s must be %s, got %s",
                       *path ? path : "the spec", expected, jtype(got));
}

/* Every key of obj must be one of allowed (NULL-terminated). */
static lsq_status check_keys(const json_t *obj, const char *path,
                             const char *const *allowed, lsq_err *err)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0) { ok = 1; break; }
        if (!ok) {
            char p[PATH_LEN];
            path_join(p, path, key);
            return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s: unknown key", p);
        }
    }
    return LSQ_OK;
}

/* Names of jobs and layers: 1..SPEC_NAME_MAX-1 characters of [A-Za-z0-9._-]. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= SPEC_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* The getters below leave *out untouched when key is absent. */

static lsq_status get_int(const json_t *obj, const char *path, const char *key,
                          long long lo, long long hi, long long *out, lsq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return LSQ_OK;
    char p[PATH_LEN];
    path_join(p, path, key);
    if (!json_is_integer(v)) return type_error(err, p, "an integer", v);
    long long x = (long long)json_integer_value(v);
    if (x < lo || x > hi)
        return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must be %lld..%lld, got %lld",
                           p, lo, hi, x);
    *out = x;
    return LSQ_OK;
}

static lsq_status get_int32(const json_t *obj, const char *path, const char *key,
                            int lo, int hi, int *out, lsq_err *err)
{
    long long x = *out;
    lsq_status st = get_int(obj, path, key, lo, hi, &x, err);
    if (st == LSQ_OK) *out = (int)x;
    return st;
}

/* A number in an interval; lo_open/hi_open make that end exclusive. */
static lsq_status get_real(const json_t *obj, const char *path, const char *key,
                           double lo, int lo_open, double hi, int hi_open,
                           double *out, lsq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return LSQ_OK;
    char p[PATH_LEN];
    path_join(p, path, key);
    if (!json_is_number(v)) return type_error(err, p, "a number", v);
    double x = json_number_value(v);
    int bad = lo_open ? !(x > lo) : !(x >= lo);
    bad |= hi_open ? !(x < hi) : !(x <= hi);
    if (bad)
        return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must be in %c%g, %g%c, got %g",
                           p, lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']', x);
    *out = x;
    return LSQ_OK;
}

static lsq_status get_bool(const json_t *obj, const char *path, const char *key,
                           int *out, lsq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return LSQ_OK;
    char p[PATH_LEN];
    path_join(p, path, key);
    if (!json_is_boolean(v)) return type_error(err, p, "a boolean", v);
    *out = json_is_true(v);
    return LSQ_OK;
}

static lsq_status enum_error(lsq_err *err, const char *p, const char *const *names,
                             int count, const char *got)
{
    char list[256] = "";
    size_t n = 0;
    for (int i = 0; i < count && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s\"%s\"", i ? ", " : "", names[i]);
    return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must be one of %s, got \"%.64s\"",
                       p, list, got);
}

/* A string that must be one of names[0..count). */
static lsq_status get_enum(const json_t *obj, const char *path, const char *key,
                           const char *const *names, int count, int *out, lsq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return LSQ_OK;
    char p[PATH_LEN];
    path_join(p, path, key);
    if (!json_is_string(v)) return type_error(err, p, "a string", v);
    const char *s = json_string_value(v);
    for (int i = 0; i < count; i++)
        if (strcmp(s, names[i]) == 0) { *out = i; return LSQ_OK; }
    return enum_error(err, p, names, count, s);
}

static lsq_status get_str(const json_t *obj, const char *path, const char *key,
                          char *out, size_t size, int nonempty, lsq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return LSQ_OK;
    char p[PATH_LEN];
    path_join(p, path, key);
    if (!json_is_string(v)) return type_error(err, p, "a string", v);
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (strlen(s) != n)
        return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must not contain NUL characters", p);
    if (nonempty && n == 0)
        return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must not be empty", p);
    if (n >= size)
        return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must be at most %zu characters, got %zu",
                           p, size - 1, n);
    memcpy(out, s, n + 1);
    return LSQ_OK;
}

/* Returns the object at key (NULL when absent or null if null_ok), or fails
 * with a type error. */
static lsq_status get_obj(const json_t *obj, const char *path, const char *key,
                          int null_ok, const json_t **out, lsq_err *err)
{
    *out = NULL;
    const json_t *v = json_object_get(obj, key);
    if (!v || (null_ok && json_is_null(v))) return LSQ_OK;
    if (!json_is_object(v)) {
        char p[PATH_LEN];
        path_join(p, path, key);
        return type_error(err, p, null_ok ? "an object or null" : "an object", v);
    }
    *out = v;
    return LSQ_OK;
}

#define TRY(expr) do { lsq_status st_ = (expr); if (st_ != LSQ_OK) return st_; } while (0)

/* ---- defaults ------------------------------------------------------------- */

static void train_defaults(spec_train *t, int is_pretrain)
{
    memset(t, 0, sizeof *t);
    t->enabled = 1;
    t->epochs = is_pretrain ? 6 : 3;
    t->batch_size = 128;
    t->lr = is_pretrain ? 0.05 : 0.01;
    t->momentum = 0.9;
    t->nesterov = 0;
    t->weight_decay_auto = 1;
    t->schedule = SCHED_COSINE;
    t->warmup_epochs = 0;
    t->seed = 1;
}

/* The canonical "no pretraining" value, so that every way of switching it
 * off (absent, null, epochs 0) yields the same struct. */
static void pretrain_disabled(spec_train *t)
{
    train_defaults(t, 1);
    t->enabled = 0;
    t->epochs = 0;
}

static void distill_defaults(spec_distill *d, int enabled)
{
    d->enabled = enabled;
    d->temperature = 1.0;
    d->weight = 0.5;
}

static void quant_defaults(spec_quant *q)
{
    memset(q, 0, sizeof *q);
    q->enabled = 1;
    q->weight_bits = 4;
    q->act_bits = 4;
    q->first_last_bits = 8;
    q->granularity = GRAN_TENSOR;
    q->grad_scale = GSCALE_PAPER;
    q->init = QINIT_PAPER;
    q->act_sign = ASIGN_AUTO;
    q->method = QMETHOD_LSQ;
    q->calibration_images = SPEC_CALIBRATION_DEFAULT;
    q->report_ptq = 1;
}

/* ---- sections ------------------------------------------------------------- */

static lsq_status parse_model(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"arch", "layers", "input", "onnx", NULL};
    const json_t *m;
    TRY(get_obj(root, "", "model", 0, &m, err));
    if (!m) return LSQ_OK;
    TRY(check_keys(m, "model", keys, err));
    const json_t *layers = json_object_get(m, "layers");
    const json_t *input = json_object_get(m, "input");
    const json_t *onnx = json_object_get(m, "onnx");
    if ((json_object_get(m, "arch") != NULL) + (layers != NULL) + (onnx != NULL) > 1)
        return lsq_err_set(err, LSQ_ERR_INVALID, "model",
                           "model takes one of \"arch\", \"layers\" and \"onnx\", not several");
    if (onnx) {
        /* only the type here: the file is read when the job trains */
        if (input)
            return lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                               "model.input is only used with model.layers (an ONNX model "
                               "declares its input)");
        TRY(get_str(m, "model", "onnx", spec->model_onnx, sizeof spec->model_onnx, 1, err));
        spec->arch[0] = '\0';
        return LSQ_OK;
    }
    if (!layers) {
        if (input)
            return lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                               "model.input is only used with model.layers");
        int a = 1;
        TRY(get_enum(m, "model", "arch", ARCH_NAMES, ARCH_COUNT, &a, err));
        snprintf(spec->arch, sizeof spec->arch, "%s", ARCH_NAMES[a]);
        return LSQ_OK;
    }
    if (!json_is_array(layers)) return type_error(err, "model.layers", "an array", layers);
    if (json_array_size(layers) == 0)
        return lsq_err_set(err, LSQ_ERR_INVALID, "model.layers",
                           "model.layers must be a non-empty array of layer objects");
    size_t i;
    const json_t *l;
    json_array_foreach(layers, i, l) {
        if (!json_is_object(l)) {
            char p[PATH_LEN];
            snprintf(p, sizeof p, "model.layers[%zu]", i);
            return type_error(err, p, "an object", l);
        }
    }
    if (input) {
        if (!json_is_array(input) || json_array_size(input) != 3)
            return lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                               "model.input must be an array [C, H, W] of 3 integers, got %s",
                               json_is_array(input) ? "another length" : jtype(input));
        const json_t *d;
        json_array_foreach(input, i, d) {
            char p[PATH_LEN];
            snprintf(p, sizeof p, "model.input[%zu]", i);
            if (!json_is_integer(d)) return type_error(err, p, "an integer", d);
            long long x = (long long)json_integer_value(d);
            if (x < 1 || x > 4096)
                return lsq_err_set(err, LSQ_ERR_INVALID, p, "%s must be 1..4096, got %lld", p, x);
        }
    }
    spec->arch[0] = '\0';
    json_t *copy = json_deep_copy(m);
    if (!copy) return lsq_err_set(err, LSQ_ERR_NOMEM, "model", "out of memory copying model");
    spec->model_layers = copy;
    return LSQ_OK;
}

static lsq_status parse_dataset(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"name", "path", "cache", "normalize", "train_limit",
                                       "test_limit", "augment", NULL};
    static const char *const akeys[] = {"crop_pad", "flip", NULL};
    const json_t *d, *a;
    TRY(get_obj(root, "", "dataset", 0, &d, err));
    if (!d) return LSQ_OK;
    TRY(check_keys(d, "dataset", keys, err));
    int which = 0;
    TRY(get_enum(d, "dataset", "name", DATASET_NAMES, DATASET_COUNT, &which, err));
    snprintf(spec->dataset, sizeof spec->dataset, "%s", DATASET_NAMES[which]);
    TRY(get_str(d, "dataset", "path", spec->dataset_path, sizeof spec->dataset_path, 0, err));
    TRY(get_str(d, "dataset", "cache", spec->dataset_cache, sizeof spec->dataset_cache, 0, err));
    if (spec->dataset_cache[0] && (which != 0 || spec->dataset_path[0]))
        return lsq_err_set(err, LSQ_ERR_INVALID, "dataset.cache",
                           "dataset.cache names the whole dataset; it cannot be combined with "
                           "dataset.name \"%s\" or a dataset.path", spec->dataset);
    /* normalisation is on for caches; the built-in sets keep the plain
     * x/255 inputs that their results were obtained with */
    spec->normalize = spec->dataset_cache[0] != 0;
    TRY(get_bool(d, "dataset", "normalize", &spec->normalize, err));
    TRY(get_int32(d, "dataset", "train_limit", 0, INT_MAX, &spec->train_limit, err));
    TRY(get_int32(d, "dataset", "test_limit", 0, INT_MAX, &spec->test_limit, err));
    TRY(get_obj(d, "dataset", "augment", 0, &a, err));
    if (a) {
        TRY(check_keys(a, "dataset.augment", akeys, err));
        TRY(get_int32(a, "dataset.augment", "crop_pad", 0, 8, &spec->augment_crop_pad, err));
        TRY(get_bool(a, "dataset.augment", "flip", &spec->augment_flip, err));
    }
    return LSQ_OK;
}

/* Bits that may also be the string "float" (stored as -1). */
static lsq_status get_bits_or_float(const json_t *obj, const char *path, const char *key,
                                    int *out, lsq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return LSQ_OK;
    char p[PATH_LEN];
    path_join(p, path, key);
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), "float") != 0)
            return lsq_err_set(err, LSQ_ERR_INVALID, p,
                               "%s must be 2..8 or \"float\", got \"%.64s\"", p,
                               json_string_value(v));
        *out = -1;
        return LSQ_OK;
    }
    if (!json_is_integer(v)) return type_error(err, p, "an integer 2..8 or \"float\"", v);
    return get_int32(obj, path, key, 2, 8, out, err);
}

static lsq_status parse_override(spec_layer_override *o, const char *name,
                                 const json_t *v, lsq_err *err)
{
    static const char *const keys[] = {"weight_bits", "act_bits", "act_sign", NULL};
    char p[PATH_LEN];
    path_join(p, "quant.layers", name);
    if (!name_ok(name))
        return lsq_err_set(err, LSQ_ERR_INVALID, p,
                           "quant.layers: a layer name must be 1..%d characters of "
                           "A-Z a-z 0-9 . _ -, got \"%.64s\"", SPEC_NAME_MAX - 1, name);
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", name);
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), "float") != 0)
            return lsq_err_set(err, LSQ_ERR_INVALID, p,
                               "%s must be \"float\" or an object, got \"%.64s\"", p,
                               json_string_value(v));
        o->is_float = 1;
        return LSQ_OK;
    }
    if (!json_is_object(v)) return type_error(err, p, "\"float\" or an object", v);
    TRY(check_keys(v, p, keys, err));
    TRY(get_int32(v, p, "weight_bits", 2, 8, &o->weight_bits, err));
    TRY(get_int32(v, p, "act_bits", 2, 8, &o->act_bits, err));
    int s = ASIGN_AUTO;
    TRY(get_enum(v, p, "act_sign", SPEC_ACT_SIGN_NAMES, ASIGN_COUNT, &s, err));
    o->act_sign = (spec_act_sign)s;
    return LSQ_OK;
}

static lsq_status parse_quant(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"weight_bits", "act_bits", "first_last_bits",
                                       "granularity", "grad_scale", "init", "act_sign",
                                       "layers", "method", "calibration_images", "report_ptq",
                                       NULL};
    spec_quant *q = &spec->quant;
    const json_t *o;
    memset(q, 0, sizeof *q);
    TRY(get_obj(root, "", "quant", 1, &o, err));
    if (!o) return LSQ_OK; /* full precision */
    quant_defaults(q);
    TRY(check_keys(o, "quant", keys, err));
    TRY(get_int32(o, "quant", "weight_bits", 2, 8, &q->weight_bits, err));
    q->act_bits = q->weight_bits;
    TRY(get_int32(o, "quant", "act_bits", 2, 8, &q->act_bits, err));
    TRY(get_bits_or_float(o, "quant", "first_last_bits", &q->first_last_bits, err));
    int e = GRAN_TENSOR;
    TRY(get_enum(o, "quant", "granularity", SPEC_GRANULARITY_NAMES, GRAN_COUNT, &e, err));
    q->granularity = (spec_granularity)e;
    const json_t *gs = json_object_get(o, "grad_scale");
    if (gs && json_is_number(gs)) {
        q->grad_scale = GSCALE_VALUE;
        TRY(get_real(o, "quant", "grad_scale", 0, 1, 1e6, 0, &q->grad_scale_value, err));
    } else if (gs) {
        if (!json_is_string(gs))
            return type_error(err, "quant.grad_scale", "\"paper\", \"none\", \"sqrt_n\" or a number", gs);
        /* "value" is not a name a user may write: a number says it */
        e = GSCALE_PAPER;
        TRY(get_enum(o, "quant", "grad_scale", SPEC_GSCALE_NAMES, GSCALE_VALUE, &e, err));
        q->grad_scale = (spec_gscale)e;
    }
    e = QINIT_PAPER;
    TRY(get_enum(o, "quant", "init", SPEC_QINIT_NAMES, QINIT_COUNT, &e, err));
    q->init = (spec_qinit)e;
    e = ASIGN_AUTO;
    TRY(get_enum(o, "quant", "act_sign", SPEC_ACT_SIGN_NAMES, ASIGN_COUNT, &e, err));
    q->act_sign = (spec_act_sign)e;
    e = QMETHOD_LSQ;
    TRY(get_enum(o, "quant", "method", SPEC_QMETHOD_NAMES, QMETHOD_COUNT, &e, err));
    q->method = (spec_qmethod)e;
    TRY(get_int32(o, "quant", "calibration_images", 1, 4096, &q->calibration_images, err));
    TRY(get_bool(o, "quant", "report_ptq", &q->report_ptq, err));
    const json_t *layers;
    TRY(get_obj(o, "quant", "layers", 0, &layers, err));
    if (layers) {
        if (json_object_size(layers) > SPEC_MAX_LAYER_OVERRIDES)
            return lsq_err_set(err, LSQ_ERR_INVALID, "quant.layers",
                               "quant.layers takes at most %d layer overrides, got %zu",
                               SPEC_MAX_LAYER_OVERRIDES, json_object_size(layers));
        const char *name;
        const json_t *v;
        json_object_foreach((json_t *)layers, name, v) {
            TRY(parse_override(&q->layers[q->n_layers], name, v, err));
            q->n_layers++;
        }
    }
    return LSQ_OK;
}

static lsq_status parse_train(spec_train *t, const json_t *o, const char *path, lsq_err *err)
{
    static const char *const keys[] = {"epochs", "batch_size", "lr", "momentum", "nesterov",
                                       "weight_decay", "schedule", "warmup_epochs", "seed",
                                       "sync_bn", NULL};
    TRY(check_keys(o, path, keys, err));
    TRY(get_int32(o, path, "epochs", 0, 1000, &t->epochs, err));
    TRY(get_int32(o, path, "batch_size", 1, 4096, &t->batch_size, err));
    TRY(get_real(o, path, "lr", 0, 1, 10, 0, &t->lr, err));
    TRY(get_real(o, path, "momentum", 0, 0, 1, 1, &t->momentum, err));
    TRY(get_bool(o, path, "nesterov", &t->nesterov, err));
    TRY(get_bool(o, path, "sync_bn", &t->sync_bn, err));
    const json_t *wd = json_object_get(o, "weight_decay");
    char p[PATH_LEN];
    path_join(p, path, "weight_decay");
    if (wd && json_is_string(wd)) {
        if (strcmp(json_string_value(wd), "auto") != 0)
            return lsq_err_set(err, LSQ_ERR_INVALID, p,
                               "%s must be a number in [0, 1] or \"auto\", got \"%.64s\"",
                               p, json_string_value(wd));
        t->weight_decay_auto = 1;
    } else if (wd) {
        if (!json_is_number(wd)) return type_error(err, p, "a number or \"auto\"", wd);
        TRY(get_real(o, path, "weight_decay", 0, 0, 1, 0, &t->weight_decay, err));
        t->weight_decay_auto = 0;
    }
    int s = SCHED_COSINE;
    TRY(get_enum(o, path, "schedule", SPEC_SCHEDULE_NAMES, SCHED_COUNT, &s, err));
    t->schedule = (spec_schedule)s;
    TRY(get_real(o, path, "warmup_epochs", 0, 0, 1000, 0, &t->warmup_epochs, err));
    if (t->warmup_epochs > t->epochs) {
        path_join(p, path, "warmup_epochs");
        return lsq_err_set(err, LSQ_ERR_INVALID, p,
                           "%s must be in [0, %d] (at most %s.epochs), got %g",
                           p, t->epochs, path, t->warmup_epochs);
    }
    long long seed = (long long)t->seed;
    TRY(get_int(o, path, "seed", 0, LLONG_MAX, &seed, err));
    t->seed = (uint64_t)seed;
    return LSQ_OK;
}

static lsq_status parse_pretrain(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    spec_train *t = &spec->pretrain;
    const json_t *v = json_object_get(root, "pretrain");
    if (!v) {
        /* A quantized job needs a full-precision model to start from; an
         * ONNX model or init.from is one. */
        if (spec->quant.enabled && !spec->init_from[0] && !spec->model_onnx[0])
            train_defaults(t, 1);
        else
            pretrain_disabled(t);
        return LSQ_OK;
    }
    if (json_is_null(v)) { pretrain_disabled(t); return LSQ_OK; }
    if (!json_is_object(v)) return type_error(err, "pretrain", "an object or null", v);
    train_defaults(t, 1);
    TRY(parse_train(t, v, "pretrain", err));
    if (t->epochs == 0) { pretrain_disabled(t); return LSQ_OK; }
    if (!spec->quant.enabled)
        return lsq_err_set(err, LSQ_ERR_INVALID, "pretrain",
                           "pretrain applies only to quantized jobs: a full-precision job "
                           "(quant null) trains with \"train\"");
    return LSQ_OK;
}

static lsq_status parse_distill(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"temperature", "weight", NULL};
    spec_distill *d = &spec->distill;
    const json_t *v = json_object_get(root, "distill");
    /* the teacher is the full-precision model: pretrained or loaded */
    int teacher = spec->quant.enabled &&
                  (spec->pretrain.enabled || spec->init_from[0] || spec->model_onnx[0]);
    /* By default only at 3 bits and above: at 2 bits distillation ended below
     * LSQ alone in every pairing measured (docs/results.md, "W2A2 with and
     * without distillation"), as it did in the PyTorch reference on the same
     * float models. */
    int two_bit = spec->quant.weight_bits < 3 || spec->quant.act_bits < 3;
    int ptq = spec->quant.method == QMETHOD_PTQ;
    if (!v) { distill_defaults(d, teacher && !two_bit && !ptq); return LSQ_OK; }
    distill_defaults(d, 0);
    if (json_is_null(v) || json_is_false(v)) return LSQ_OK;
    if (!json_is_true(v) && !json_is_object(v))
        return type_error(err, "distill", "a boolean, an object or null", v);
    if (json_is_object(v)) {
        TRY(check_keys(v, "distill", keys, err));
        TRY(get_real(v, "distill", "temperature", 0, 1, 100, 0, &d->temperature, err));
        TRY(get_real(v, "distill", "weight", 0, 0, 1, 0, &d->weight, err));
    }
    if (!spec->quant.enabled)
        return lsq_err_set(err, LSQ_ERR_INVALID, "distill",
                           "distill applies only to quantized jobs (the teacher is the "
                           "full-precision model); quant is null");
    if (!teacher)
        return lsq_err_set(err, LSQ_ERR_INVALID, "distill",
                           "distill needs a full-precision teacher: enable pretrain, set "
                           "init.from or train an ONNX model");
    if (ptq)
        return lsq_err_set(err, LSQ_ERR_INVALID, "distill",
                           "distill applies to LSQ fine-tuning; quant.method \"ptq\" does "
                           "not train");
    d->enabled = 1;
    return LSQ_OK;
}

static lsq_status parse_init(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"from", NULL};
    const json_t *o;
    TRY(get_obj(root, "", "init", 1, &o, err));
    if (!o) return LSQ_OK;
    TRY(check_keys(o, "init", keys, err));
    if (!json_object_get(o, "from"))
        return lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                           "init.from is required in \"init\" (a job id or checkpoint path)");
    return get_str(o, "init", "from", spec->init_from, sizeof spec->init_from, 1, err);
}

/* "resources": what the job asks of the machines that run it
 * (docs/cluster.md): the ranks of a data-parallel run (train/dist.h),
 * nodes * tasks_per_node of them, and what lsqd's Slurm executor asks the
 * cluster for (the partition goes on sbatch's command line, hence the
 * name's character set). */
static lsq_status parse_resources(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"nodes", "tasks_per_node", "partition", "mem_mb",
                                       "time_min", NULL};
    spec_resources *r = &spec->resources;
    const json_t *o;
    TRY(get_obj(root, "", "resources", 1, &o, err));
    if (!o) return LSQ_OK;
    TRY(check_keys(o, "resources", keys, err));
    r->given = 1;
    TRY(get_int32(o, "resources", "nodes", 1, SPEC_MAX_NODES, &spec->nodes, err));
    TRY(get_int32(o, "resources", "tasks_per_node", 1, SPEC_MAX_TASKS_PER_NODE,
                  &spec->tasks_per_node, err));
    int ranks = spec->nodes * spec->tasks_per_node;
    if (ranks > SPEC_MAX_RANKS)
        return lsq_err_set(err, LSQ_ERR_INVALID, "resources.tasks_per_node",
                           "resources: %d nodes x %d tasks per node is %d ranks; at most %d",
                           spec->nodes, spec->tasks_per_node, ranks, SPEC_MAX_RANKS);
    TRY(get_str(o, "resources", "partition", r->partition, sizeof r->partition, 1, err));
    if (r->partition[0] && !name_ok(r->partition))
        return lsq_err_set(err, LSQ_ERR_INVALID, "resources.partition",
                           "resources.partition must be characters of A-Z a-z 0-9 . _ -, "
                           "got \"%.64s\"", r->partition);
    TRY(get_int32(o, "resources", "mem_mb", 1, 16777216, &r->mem_mb, err));
    TRY(get_int32(o, "resources", "time_min", 1, 525600, &r->time_min, err));
    return LSQ_OK;
}

static void spec_defaults(lsq_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    snprintf(spec->name, sizeof spec->name, "job");
    snprintf(spec->arch, sizeof spec->arch, "cnn-small");
    snprintf(spec->dataset, sizeof spec->dataset, "fashion-mnist");
    train_defaults(&spec->train, 0);
    pretrain_disabled(&spec->pretrain);
    distill_defaults(&spec->distill, 0);
    spec->threads = 2;
    spec->checkpoint_every = 1;
    spec->nodes = spec->tasks_per_node = 1;
}

static lsq_status spec_from_json_inner(lsq_spec *spec, const json_t *root, lsq_err *err)
{
    static const char *const keys[] = {"name", "model", "dataset", "quant", "pretrain",
                                       "train", "distill", "init", "threads",
                                       "checkpoint_every", "notify_url", "resources", NULL};
    if (!json_is_object(root)) return type_error(err, "", "a JSON object", root);
    TRY(check_keys(root, "", keys, err));

    const json_t *v = json_object_get(root, "name");
    if (v) {
        if (!json_is_string(v)) return type_error(err, "name", "a string", v);
        if (!name_ok(json_string_value(v)) || strlen(json_string_value(v)) != json_string_length(v))
            return lsq_err_set(err, LSQ_ERR_INVALID, "name",
                               "name must be 1..%d characters of A-Z a-z 0-9 . _ -, got \"%.64s\"",
                               SPEC_NAME_MAX - 1, json_string_value(v));
        snprintf(spec->name, sizeof spec->name, "%s", json_string_value(v));
    }
    TRY(parse_model(spec, root, err));
    TRY(parse_dataset(spec, root, err));
    /* The built-in datasets are 28x28 grayscale: a layer list without an
     * input shape gets that one, made explicit so that the network builder
     * always finds it. With a cache the shape is the cache's, known when
     * the network is built (net_spec_layers). */
    if (spec->model_layers && !json_object_get(spec->model_layers, "input") &&
        !spec->dataset_cache[0])
        json_object_set_new(spec->model_layers, "input", json_pack("[iii]", 1, 28, 28));
    TRY(parse_quant(spec, root, err));
    TRY(parse_init(spec, root, err));
    TRY(parse_pretrain(spec, root, err));

    /* The paper's recipe: lr 0.01, but 0.001 for 8-bit fine-tuning. */
    if (spec->quant.enabled && spec->quant.weight_bits == 8) spec->train.lr = 0.001;
    const json_t *t;
    TRY(get_obj(root, "", "train", 0, &t, err));
    if (t) TRY(parse_train(&spec->train, t, "train", err));

    TRY(parse_distill(spec, root, err));
    TRY(get_int32(root, "", "threads", 1, 256, &spec->threads, err));
    TRY(get_int32(root, "", "checkpoint_every", 1, 1000, &spec->checkpoint_every, err));
    if (!json_is_null(json_object_get(root, "notify_url"))) {
        TRY(get_str(root, "", "notify_url", spec->notify_url, sizeof spec->notify_url, 1, err));
        /* the scheme here; lsqd checks the host it resolves to (docs/api.md) */
        if (spec->notify_url[0] && strncasecmp(spec->notify_url, "http://", 7) &&
            strncasecmp(spec->notify_url, "https://", 8))
            return lsq_err_set(err, LSQ_ERR_INVALID, "notify_url",
                               "notify_url must be an http:// or https:// URL, got \"%.64s\"",
                               spec->notify_url);
    }
    TRY(parse_resources(spec, root, err));
    {
        /* every rank needs an image of the first batch of each phase */
        int ranks = spec->nodes * spec->tasks_per_node;
        const spec_train *ph[2] = {&spec->train, &spec->pretrain};
        for (int i = 0; i < 2; i++)
            if ((i == 0 || ph[i]->enabled) && ph[i]->batch_size < ranks)
                return lsq_err_set(err, LSQ_ERR_INVALID,
                                   i == 0 ? "train.batch_size" : "pretrain.batch_size",
                                   "%s.batch_size %d is smaller than the %d ranks of "
                                   "resources: each rank trains on its share of a batch",
                                   i == 0 ? "train" : "pretrain", ph[i]->batch_size, ranks);
    }

    spec->pretrain.weight_decay = spec_train_weight_decay(spec, &spec->pretrain, 0);
    spec->train.weight_decay = spec_train_weight_decay(spec, &spec->train, spec->quant.enabled);
    return LSQ_OK;
}

/* ---- public --------------------------------------------------------------- */

lsq_status spec_from_json(lsq_spec *spec, const json_t *obj, lsq_err *err)
{
    spec_defaults(spec);
    lsq_status st = spec_from_json_inner(spec, obj, err);
    if (st != LSQ_OK) {
        /* leave nothing half-built behind */
        spec_free(spec);
        spec_defaults(spec);
    }
    return st;
}

lsq_status spec_parse(lsq_spec *spec, const char *text, size_t len, lsq_err *err)
{
    spec_defaults(spec);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return lsq_err_set(err, LSQ_ERR_PARSE, NULL, "spec is not valid JSON: line %d, column %d: %s",
                           je.line, je.column, je.text);
    lsq_status st = spec_from_json(spec, root, err);
    json_decref(root);
    return st;
}

lsq_status spec_load_file(lsq_spec *spec, const char *path, lsq_err *err)
{
    spec_defaults(spec);
    FILE *f = fopen(path, "rb");
    if (!f)
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot open spec %s: %s", path, strerror(errno));
    lsq_status st = LSQ_OK;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= (size_t)16 << 20) {
                st = lsq_err_set(err, LSQ_ERR_INVALID, path, "spec %s is larger than 16 MiB", path);
                goto out;
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) { st = lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory reading %s", path); goto out; }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) {
        st = lsq_err_set(err, LSQ_ERR_IO, path, "cannot read spec %s", path);
        goto out;
    }
    st = spec_parse(spec, buf ? buf : "", len, err);
    if (st != LSQ_OK && err) lsq_err_prefix(err, path);
out:
    free(buf);
    fclose(f);
    return st;
}

static json_t *train_to_json(const spec_train *t)
{
    return json_pack("{s:i, s:i, s:f, s:f, s:b, s:o, s:s, s:f, s:I, s:b}",
                     "epochs", t->epochs, "batch_size", t->batch_size, "lr", t->lr,
                     "momentum", t->momentum, "nesterov", t->nesterov,
                     "weight_decay", t->weight_decay_auto ? json_string("auto")
                                                          : json_real(t->weight_decay),
                     "schedule", SPEC_SCHEDULE_NAMES[t->schedule],
                     "warmup_epochs", t->warmup_epochs, "seed", (json_int_t)t->seed, "sync_bn",
                     t->sync_bn);
}

static json_t *quant_to_json(const spec_quant *q)
{
    json_t *layers = json_object();
    for (int i = 0; i < q->n_layers; i++) {
        const spec_layer_override *o = &q->layers[i];
        json_t *v;
        if (o->is_float) {
            v = json_string("float");
        } else {
            v = json_object();
            if (o->weight_bits) json_object_set_new(v, "weight_bits", json_integer(o->weight_bits));
            if (o->act_bits) json_object_set_new(v, "act_bits", json_integer(o->act_bits));
            if (o->act_sign != ASIGN_AUTO)
                json_object_set_new(v, "act_sign", json_string(SPEC_ACT_SIGN_NAMES[o->act_sign]));
        }
        json_object_set_new(layers, o->name, v);
    }
    return json_pack("{s:i, s:i, s:o, s:s, s:o, s:s, s:s, s:o, s:s, s:i, s:b}",
                     "weight_bits", q->weight_bits, "act_bits", q->act_bits,
                     "first_last_bits", q->first_last_bits < 0 ? json_string("float")
                                                               : json_integer(q->first_last_bits),
                     "granularity", SPEC_GRANULARITY_NAMES[q->granularity],
                     "grad_scale", q->grad_scale == GSCALE_VALUE
                                       ? json_real(q->grad_scale_value)
                                       : json_string(SPEC_GSCALE_NAMES[q->grad_scale]),
                     "init", SPEC_QINIT_NAMES[q->init],
                     "act_sign", SPEC_ACT_SIGN_NAMES[q->act_sign], "layers", layers,
                     "method", SPEC_QMETHOD_NAMES[q->method], "calibration_images",
                     q->calibration_images, "report_ptq", q->report_ptq);
}

json_t *spec_to_json(const lsq_spec *spec)
{
    json_t *model = spec->model_layers ? json_deep_copy(spec->model_layers)
                    : spec->model_onnx[0] ? json_pack("{s:s}", "onnx", spec->model_onnx)
                                          : json_pack("{s:s}", "arch", spec->arch);
    json_t *j = json_pack(
        "{s:s, s:o, s:{s:s, s:s, s:s, s:b, s:i, s:i, s:{s:i, s:b}}, s:o, s:o, s:o, s:o, s:o, s:i, "
        "s:i}",
        "name", spec->name, "model", model,
        "dataset", "name", spec->dataset, "path", spec->dataset_path, "cache",
        spec->dataset_cache, "normalize", spec->normalize,
        "train_limit", spec->train_limit, "test_limit", spec->test_limit,
        "augment", "crop_pad", spec->augment_crop_pad, "flip", spec->augment_flip,
        "quant", spec->quant.enabled ? quant_to_json(&spec->quant) : json_null(),
        "pretrain", spec->pretrain.enabled ? train_to_json(&spec->pretrain) : json_null(),
        "train", train_to_json(&spec->train),
        "distill", spec->distill.enabled
                       ? json_pack("{s:f, s:f}", "temperature", spec->distill.temperature,
                                   "weight", spec->distill.weight)
                       : json_false(),
        "init", spec->init_from[0] ? json_pack("{s:s}", "from", spec->init_from) : json_null(),
        "threads", spec->threads, "checkpoint_every", spec->checkpoint_every);
    if (j)
        json_object_set_new(j, "notify_url",
                            spec->notify_url[0] ? json_string(spec->notify_url) : json_null());
    /* null when the spec gave none; else the ranks and the Slurm fields given
     * (the rest are the operator's defaults, in lsqd) */
    const spec_resources *r = &spec->resources;
    json_t *o = r->given || spec->nodes * spec->tasks_per_node > 1
                    ? json_pack("{s:i,s:i}", "nodes", spec->nodes, "tasks_per_node",
                                spec->tasks_per_node)
                    : json_null();
    if (r->partition[0]) json_object_set_new(o, "partition", json_string(r->partition));
    if (r->mem_mb) json_object_set_new(o, "mem_mb", json_integer(r->mem_mb));
    if (r->time_min) json_object_set_new(o, "time_min", json_integer(r->time_min));
    if (j) json_object_set_new(j, "resources", o);
    else json_decref(o);
    return j;
}

char *spec_to_text(const lsq_spec *spec, size_t flags)
{
    json_t *j = spec_to_json(spec);
    if (!j) return NULL;
    /* 15 digits prints what people wrote; 17 is exact for any double. */
    char *text = json_dumps(j, flags | JSON_REAL_PRECISION(15));
    json_t *back = text ? json_loads(text, 0, NULL) : NULL;
    if (text && !json_equal(j, back)) {
        free(text);
        text = json_dumps(j, flags | JSON_REAL_PRECISION(17));
    }
    json_decref(back);
    json_decref(j);
    return text;
}

void spec_free(lsq_spec *spec)
{
    if (!spec) return;
    json_decref(spec->model_layers);
    spec->model_layers = NULL;
}

double spec_train_weight_decay(const lsq_spec *spec, const spec_train *t, int is_quant)
{
    if (!t->weight_decay_auto) return t->weight_decay;
    if (!is_quant || !spec->quant.enabled) return 5e-4;
    /* The paper's values: less regularisation at lower precision. */
    switch (spec->quant.weight_bits) {
    case 2: return 0.25e-4;
    case 3: return 0.5e-4;
    default: return 1e-4;
    }
}

const spec_layer_override *spec_find_override(const spec_quant *q, const char *layer)
{
    for (int i = 0; i < q->n_layers; i++)
        if (strcmp(q->layers[i].name, layer) == 0) return &q->layers[i];
    return NULL;
}

spec_layer_quant spec_layer_resolve(const spec_quant *q, const char *layer, int first_or_last)
{
    spec_layer_quant r = {0, 0, 0, ASIGN_AUTO};
    if (!q->enabled) return r;
    const spec_layer_override *o = layer ? spec_find_override(q, layer) : NULL;
    if (o && o->is_float) return r;
    r.quantized = 1;
    r.weight_bits = q->weight_bits;
    r.act_bits = q->act_bits;
    r.act_sign = q->act_sign;
    if (first_or_last) {
        if (q->first_last_bits < 0) r.quantized = 0;
        else r.weight_bits = r.act_bits = q->first_last_bits;
    }
    if (o) {
        /* an override with bits quantizes even a "float" first/last layer */
        if (o->weight_bits || o->act_bits) r.quantized = 1;
        if (o->weight_bits) r.weight_bits = o->weight_bits;
        if (o->act_bits) r.act_bits = o->act_bits;
        if (o->act_sign != ASIGN_AUTO) r.act_sign = o->act_sign;
    }
    if (!r.quantized) r.weight_bits = r.act_bits = 0;
    return r;
}

lsq_status spec_check_layer_names(const spec_quant *q, const char *const *names, int n,
                                  lsq_err *err)
{
    for (int i = 0; i < q->n_layers; i++) {
        const char *want = q->layers[i].name;
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = strcmp(names[j], want) == 0;
        if (!found) {
            char p[PATH_LEN];
            path_join(p, "quant.layers", want);
            return lsq_err_set(err, LSQ_ERR_INVALID, p,
                               "%s: the model has no conv/linear layer named \"%s\"", p, want);
        }
    }
    return LSQ_OK;
}
