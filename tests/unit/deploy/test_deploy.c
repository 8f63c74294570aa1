/* Deployable models on networks trained in the test: the integer engine
 * against the fake-quantized float engine, onnxruntime against lsq, kernel
 * paths bit for bit, the .lsqm round trip and its corruption checks.
 *
 * Trained models are shared between tests (and test processes) through a
 * fixture folder keyed by the test binary's build time: the first test that
 * needs one trains it under a lock, the rest reuse it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "core/spec.h"
#include "data/data.h"
#include "deploy/export.h"
#include "deploy/igemm.h"
#include "deploy/infer.h"
#include "deploy/lsqm.h"
#include "deploy/onnx_export.h"
#include "graph/net.h"
#include "train/ckpt.h"
#include "train/train.h"

/* ------------------------------------------------------------ fixtures */

typedef struct {
    const char *tag;
    const char *spec;
} fixture;

#define LIMITS "\"dataset\":{\"train_limit\":1000,\"test_limit\":200},"
static const fixture FX_W2 = {
    "cnn-w2", "{\"name\":\"w2\",\"model\":{\"arch\":\"cnn-small\"}," LIMITS
              "\"pretrain\":{\"epochs\":1},\"quant\":{\"weight_bits\":2},"
              "\"train\":{\"epochs\":1},\"threads\":2}"};
static const fixture FX_W4 = {
    "cnn-w4c", "{\"name\":\"w4\",\"model\":{\"arch\":\"cnn-small\"}," LIMITS
               "\"pretrain\":{\"epochs\":1},\"quant\":{\"weight_bits\":4,\"granularity\":\"channel\"},"
               "\"train\":{\"epochs\":1},\"threads\":2}"};
static const fixture FX_W8 = {
    "cnn-w8", "{\"name\":\"w8\",\"model\":{\"arch\":\"cnn-small\"}," LIMITS
              "\"pretrain\":{\"epochs\":1},\"quant\":{\"weight_bits\":8},"
              "\"train\":{\"epochs\":1},\"threads\":2}"};
static const fixture FX_FP = {
    "cnn-fp", "{\"name\":\"fp\",\"model\":{\"arch\":\"cnn-small\"}," LIMITS
              "\"train\":{\"epochs\":1},\"threads\":2}"};
static const fixture FX_R20 = {
    "r20-w2", "{\"name\":\"r20\",\"model\":{\"arch\":\"resnet20\"},"
              "\"dataset\":{\"train_limit\":128,\"test_limit\":100},"
              "\"pretrain\":{\"epochs\":1,\"batch_size\":64},\"quant\":{\"weight_bits\":2},"
              "\"train\":{\"epochs\":1,\"batch_size\":64},\"threads\":2}"};
/* signed and LSQ+ inputs (conv after batch norm, no ReLU), a float layer
 * and a 3-bit layer, padding everywhere */
static const fixture FX_SIGNED = {
    "custom-signed",
    "{\"name\":\"sg\",\"model\":{\"input\":[1,28,28],\"layers\":["
    "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\",\"name\":\"b1\"},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":8,\"kernel\":3,\"pad\":1,\"stride\":2},"
    "{\"type\":\"batchnorm\",\"name\":\"b2\"},"
    "{\"type\":\"relu\",\"name\":\"r2\"},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\",\"name\":\"b3\"},"
    "{\"type\":\"conv2d\",\"name\":\"c4\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"relu\",\"name\":\"r4\"},"
    "{\"type\":\"maxpool\",\"name\":\"p4\",\"kernel\":2},"
    "{\"type\":\"flatten\",\"name\":\"fl\"},"
    "{\"type\":\"linear\",\"name\":\"f1\",\"out\":32},"
    "{\"type\":\"relu\",\"name\":\"r5\"},"
    "{\"type\":\"linear\",\"name\":\"f2\",\"out\":10}]}," LIMITS
    "\"pretrain\":{\"epochs\":1},\"quant\":{\"weight_bits\":4,\"act_sign\":\"lsq+\","
    "\"layers\":{\"c4\":{\"act_sign\":\"signed\",\"weight_bits\":3,\"act_bits\":3},"
    "\"f1\":\"float\"}},\"train\":{\"epochs\":1},\"threads\":2}"};

static char *fixture_base(void)
{
    static char base[4096];
    const char *b = getenv("LSQ_BUILD");
    struct stat st;
    long stamp = 0;
    if (stat("/proc/self/exe", &st) == 0) stamp = (long)st.st_mtime;
    snprintf(base, sizeof base, "%s/deploy-fixtures-%ld", b && *b ? b : "/tmp", stamp);
    mkdir(base, 0755);
    return base;
}

/* The run folder of a trained fixture (model.lsqc, model.lsqm, model.onnx). */
static const char *fixture_dir(const fixture *fx)
{
    static char dir[4200];
    char lock[4300], ok[4300];
    const char *base = fixture_base();
    snprintf(dir, sizeof dir, "%s/%s", base, fx->tag);
    snprintf(lock, sizeof lock, "%s/%s.lock", base, fx->tag);
    snprintf(ok, sizeof ok, "%s/ok", dir);
    int fd = open(lock, O_CREAT | O_RDWR, 0644);
    cr_assert(fd >= 0, "cannot open %s: %s", lock, strerror(errno));
    cr_assert_eq(flock(fd, LOCK_EX), 0);
    if (access(ok, F_OK) != 0) {
        lsq_spec s;
        lsq_err err;
        lsq_err_clear(&err);
        cr_assert_eq(spec_parse(&s, fx->spec, strlen(fx->spec), &err), LSQ_OK, "%s: %s",
                     err.field, err.message);
        ev_sink sink;
        ev_sink_init(&sink, -1);
        train_opts o = {&sink, NULL, NULL, 0, NULL};
        double acc;
        lsq_status st = train_run(&s, dir, &o, &acc, &err);
        spec_free(&s);
        cr_assert_eq(st, LSQ_OK, "training fixture %s: %s", fx->tag, err.message);
        FILE *f = fopen(ok, "w");
        cr_assert_not_null(f);
        fclose(f);
    }
    flock(fd, LOCK_UN);
    close(fd);
    return dir;
}

static void path_of(char *out, size_t n, const char *dir, const char *file)
{
    snprintf(out, n, "%s/%s", dir, file);
}

/* ------------------------------------------------------------ engines */

static void load_test(lsq_dataset *ds, int limit)
{
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(dataset_load(NULL, ds, "fashion-mnist", NULL, 0, limit, &err), LSQ_OK, "%s",
                 err.message);
}

static float *to_float(const lsq_dataset *ds)
{
    size_t n = (size_t)ds->n * ds->c * ds->h * ds->w;
    float *x = malloc(n * sizeof *x);
    cr_assert_not_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (float)ds->pixels[i] / 255.0f;
    return x;
}

/* Logits of the fake-quantized float engine (eval mode) on ds. */
static float *float_logits(const char *dir, const lsq_dataset *ds)
{
    char p[4300];
    path_of(p, sizeof p, dir, "model.lsqc");
    lsq_err err;
    lsq_err_clear(&err);
    lsq_ckpt c;
    cr_assert_eq(ckpt_load(&c, p, &err), LSQ_OK, "%s", err.message);
    lsq_net net;
    cr_assert_eq(ckpt_build_net(&net, &c, 250, &err), LSQ_OK, "%s", err.message);
    train_set_threads(2);
    float *x = to_float(ds);
    float *out = malloc((size_t)ds->n * 10 * sizeof *out);
    size_t plane = (size_t)ds->c * ds->h * ds->w;
    for (int b = 0; b < ds->n; b += 250) {
        int nb = ds->n - b < 250 ? ds->n - b : 250;
        const float *z = net_forward(&net, x + (size_t)b * plane, nb, 0);
        memcpy(out + (size_t)b * 10, z, (size_t)nb * 10 * sizeof *out);
    }
    free(x);
    net_free(&net);
    ckpt_free(&c);
    return out;
}

static lsqm_model *load_model(const char *dir)
{
    char p[4300];
    path_of(p, sizeof p, dir, "model.lsqm");
    lsq_err err;
    lsq_err_clear(&err);
    lsqm_model *m = lsqm_load(p, &err);
    cr_assert_not_null(m, "%s", err.message);
    return m;
}

static float *int_logits(lsqm_model *m, const lsq_dataset *ds, int threads)
{
    float *out = malloc((size_t)ds->n * 10 * sizeof *out);
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(lsqm_predict(m, ds->pixels, ds->n, out, NULL, threads, &err), LSQ_OK, "%s",
                 err.message);
    return out;
}

static int argmax10(const float *z)
{
    int best = 0;
    for (int k = 1; k < 10; k++)
        if (z[k] > z[best]) best = k;
    return best;
}

typedef struct {
    int agree, n, correct_a, correct_b;
    double max_diff;       /* largest |logit difference| over all images */
    double frac_close;     /* images whose logits all agree within the tolerance */
} cmp;

/* Tolerance on logits: float32 rounding of the same sums in another order
 * gives differences around 1e-5 relative; an activation code that lands on
 * the other side of a rounding tie moves the logits by much more (a step's
 * worth through the rest of the network), which the 99.9% top-1 rule allows
 * on rare images. So: |diff| <= 1e-3 * (1 + max |logit|) on >= 99% of the
 * images. */
#define LOGIT_TOL 1e-3
static cmp compare(const float *a, const float *b, const lsq_dataset *ds)
{
    cmp c = {0};
    int close = 0;
    c.n = ds->n;
    for (int i = 0; i < ds->n; i++) {
        const float *x = a + (size_t)i * 10, *y = b + (size_t)i * 10;
        int ta = argmax10(x), tb = argmax10(y);
        c.agree += ta == tb;
        c.correct_a += ta == ds->labels[i];
        c.correct_b += tb == ds->labels[i];
        double mx = 0, scale = 0;
        for (int k = 0; k < 10; k++) {
            double d = fabs((double)x[k] - y[k]);
            if (d > mx) mx = d;
            if (fabs(x[k]) > scale) scale = fabs(x[k]);
        }
        if (mx > c.max_diff) c.max_diff = mx;
        close += mx <= LOGIT_TOL * (1.0 + scale);
    }
    c.frac_close = (double)close / ds->n;
    return c;
}

static void check_int_vs_float(const fixture *fx, int images)
{
    const char *dir = fixture_dir(fx);
    lsq_dataset ds;
    load_test(&ds, images);
    float *f = float_logits(dir, &ds);
    lsqm_model *m = load_model(dir);
    float *q = int_logits(m, &ds, 2);
    cmp c = compare(f, q, &ds);
    cr_log_info("%s: top-1 agreement %d/%d, accuracy float %.4f integer %.4f, max |dlogit| %.3g, "
                "%.2f%% within tolerance",
                fx->tag, c.agree, c.n, (double)c.correct_a / c.n, (double)c.correct_b / c.n,
                c.max_diff, 100.0 * c.frac_close);
    cr_expect_geq(c.agree, (int)ceil(0.999 * c.n), "%s: integer and float engines agree on %d/%d",
                  fx->tag, c.agree, c.n);
    cr_expect_geq(c.frac_close, 0.99, "%s: only %.2f%% of the images have logits within tolerance",
                  fx->tag, 100.0 * c.frac_close);
    free(f);
    free(q);
    lsqm_free(m);
    dataset_free(&ds);
}

Test(deploy, int_matches_float_w2a2, .timeout = 300) { check_int_vs_float(&FX_W2, 2000); }
Test(deploy, int_matches_float_w4a4_per_channel, .timeout = 300) { check_int_vs_float(&FX_W4, 2000); }
Test(deploy, int_matches_float_w8a8, .timeout = 300) { check_int_vs_float(&FX_W8, 2000); }
Test(deploy, int_matches_float_full_precision, .timeout = 300) { check_int_vs_float(&FX_FP, 2000); }
Test(deploy, int_matches_float_resnet20_w2a2, .timeout = 300) { check_int_vs_float(&FX_R20, 1000); }
Test(deploy, int_matches_float_signed_lsqplus_float_layer, .timeout = 300)
{
    check_int_vs_float(&FX_SIGNED, 2000);
}

/* ------------------------------------------------------------ kernels */

Test(deploy, kernel_paths_identical_on_whole_models, .timeout = 300)
{
    const fixture *fxs[2] = {&FX_W2, &FX_SIGNED};
    lsq_dataset ds;
    load_test(&ds, 300);
    int paths = 0;
    for (int f = 0; f < 2; f++) {
        lsqm_model *m = load_model(fixture_dir(fxs[f]));
        lsq_err err;
        cr_assert_eq(lsqm_set_kernel(m, LSQ_KERNEL_PORTABLE, &err), LSQ_OK);
        float *ref = int_logits(m, &ds, 1);
        for (int k = 1; k < LSQ_KERNEL_COUNT; k++) {
            if (!lsq_kernel_supported((lsq_kernel)k)) continue;
            paths++;
            cr_assert_eq(lsqm_set_kernel(m, k, &err), LSQ_OK);
            float *z = int_logits(m, &ds, 2);
            cr_expect_eq(memcmp(z, ref, (size_t)ds.n * 10 * sizeof *z), 0,
                         "%s: kernel %s differs from portable", fxs[f]->tag, LSQ_KERNEL_NAMES[k]);
            free(z);
        }
        free(ref);
        lsqm_free(m);
    }
    cr_log_info("compared %d kernel paths against portable", paths / 2);
    dataset_free(&ds);
}

/* 2- and 3-bit weights kept packed (as loaded) against the same model with
 * int8 weight codes: the same logits bit for bit, on every kernel path, at
 * a quarter (or less) of the weight bytes. FX_SIGNED has a 3-bit layer. */
Test(deploy, packed_weights_identical_to_int8_codes, .timeout = 300)
{
    const fixture *fxs[3] = {&FX_W2, &FX_R20, &FX_SIGNED};
    lsq_dataset ds;
    load_test(&ds, 200);
    for (int f = 0; f < 3; f++) {
        lsqm_model *m = load_model(fixture_dir(fxs[f]));
        lsq_err err;
        const size_t packed = lsqm_weight_bytes(m);
        for (int k = 0; k < LSQ_KERNEL_COUNT; k++) {
            if (!lsq_kernel_supported((lsq_kernel)k)) continue;
            cr_assert_eq(lsqm_set_kernel(m, k, &err), LSQ_OK);
            cr_assert_eq(lsqm_set_packed(m, 1, &err), LSQ_OK, "%s", err.message);
            float *zp = int_logits(m, &ds, 1);
            cr_assert_eq(lsqm_set_packed(m, 0, &err), LSQ_OK, "%s", err.message);
            const size_t unpacked = lsqm_weight_bytes(m);
            float *z8 = int_logits(m, &ds, 2);
            cr_expect_eq(memcmp(zp, z8, (size_t)ds.n * 10 * sizeof *zp), 0,
                         "%s, kernel %s: packed and int8 weights differ", fxs[f]->tag,
                         LSQ_KERNEL_NAMES[k]);
            if (fxs[f] != &FX_SIGNED)
                cr_expect_lt(packed * 3, unpacked, "%s: %zu packed bytes vs %zu int8", fxs[f]->tag,
                             packed, unpacked);
            else
                cr_expect_lt(packed, unpacked, "%s: %zu packed bytes vs %zu int8", fxs[f]->tag,
                             packed, unpacked);
            free(zp), free(z8);
        }
        lsqm_free(m);
    }
    dataset_free(&ds);
}

/* ------------------------------------------------------------ onnxruntime */

static const char *repo_path(const char *rel)
{
    static char buf[4096];
    const char *b = getenv("LSQ_BUILD");
    if (b && *b) {
        const char *slash = strrchr(b, '/');
        int n = slash ? (int)(slash - b) : 0;
        snprintf(buf, sizeof buf, "%.*s/%s", n, b, rel);
    } else {
        snprintf(buf, sizeof buf, "%s", rel);
    }
    return buf;
}

static void check_onnx(const fixture *fx, int images)
{
    if (system("command -v node >/dev/null 2>&1") != 0)
        cr_skip("node is not installed: the onnxruntime check is skipped");
    const char *dir = fixture_dir(fx);
    lsq_dataset ds;
    load_test(&ds, images);
    char tmp[] = "/tmp/lsq-deploy-XXXXXX";
    cr_assert_not_null(mkdtemp(tmp));
    char in[64], out[64], log[64], cmd[9000], model[4300];
    snprintf(in, sizeof in, "%s/x.f32", tmp);
    snprintf(out, sizeof out, "%s/y.f32", tmp);
    snprintf(log, sizeof log, "%s/log", tmp);
    path_of(model, sizeof model, dir, "model.onnx");
    float *x = to_float(&ds);
    FILE *f = fopen(in, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(x, sizeof *x, (size_t)ds.n * 784, f), (size_t)ds.n * 784);
    fclose(f);
    free(x);
    /* onnxruntime with its graph rewrites off runs the exported graph as
     * written, which is bit-exact; LSQ_ORT_OPT picks another level */
    const char *opt = getenv("LSQ_ORT_OPT");
    snprintf(cmd, sizeof cmd, "node '%s' '%s' %s %d,1,28,28 %s --threads 2 --opt %s >%s 2>&1",
             repo_path("tests/onnx/run_model.mjs"), model, in, ds.n, out, opt ? opt : "disabled", log);
    int rc = system(cmd);
    if (WEXITSTATUS(rc) == 3) cr_skip("onnxruntime-node is not installed");
    if (rc != 0) {
        char text[2048] = "";
        f = fopen(log, "r");
        if (f) {
            text[fread(text, 1, sizeof text - 1, f)] = 0;
            fclose(f);
        }
        cr_assert_fail("onnxruntime failed on %s (exit %d): %s", model, rc, text);
    }
    float *o = malloc((size_t)ds.n * 10 * sizeof *o);
    f = fopen(out, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(o, sizeof *o, (size_t)ds.n * 10, f), (size_t)ds.n * 10);
    fclose(f);
    float *fl = float_logits(dir, &ds);
    lsqm_model *m = load_model(dir);
    float *q = int_logits(m, &ds, 2);
    cmp cf = compare(fl, o, &ds), ci = compare(q, o, &ds);
    cr_log_info("%s: onnxruntime vs float engine: top-1 %d/%d, max |dlogit| %.3g; vs integer "
                "engine: top-1 %d/%d; accuracy ort %.4f float %.4f integer %.4f",
                fx->tag, cf.agree, cf.n, cf.max_diff, ci.agree, ci.n,
                (double)cf.correct_b / cf.n, (double)cf.correct_a / cf.n,
                (double)ci.correct_a / ci.n);
    int need = (int)ceil(0.999 * ds.n);
    cr_expect_geq(cf.agree, need, "%s: onnxruntime and the float engine agree on %d/%d", fx->tag,
                  cf.agree, cf.n);
    cr_expect_geq(ci.agree, need, "%s: onnxruntime and the integer engine agree on %d/%d", fx->tag,
                  ci.agree, ci.n);
    /* accuracy within 0.05 points */
    cr_expect_leq(fabs((double)(cf.correct_b - cf.correct_a)) / ds.n, 0.0005 + 1e-12,
                  "%s: accuracy ort %d vs float %d of %d", fx->tag, cf.correct_b, cf.correct_a, ds.n);
    cr_expect_leq(fabs((double)(ci.correct_b - ci.correct_a)) / ds.n, 0.0005 + 1e-12,
                  "%s: accuracy ort %d vs integer %d of %d", fx->tag, ci.correct_b, ci.correct_a,
                  ds.n);
    free(o);
    free(fl);
    free(q);
    lsqm_free(m);
    dataset_free(&ds);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_expect_eq(system(cmd), 0);
}

Test(deploy, onnxruntime_matches_w2a2, .timeout = 300) { check_onnx(&FX_W2, 2000); }
Test(deploy, onnxruntime_matches_w4a4_per_channel, .timeout = 300) { check_onnx(&FX_W4, 2000); }
Test(deploy, onnxruntime_matches_w8a8, .timeout = 300) { check_onnx(&FX_W8, 2000); }
Test(deploy, onnxruntime_matches_full_precision, .timeout = 300) { check_onnx(&FX_FP, 2000); }
Test(deploy, onnxruntime_matches_resnet20_w2a2, .timeout = 300) { check_onnx(&FX_R20, 1000); }
Test(deploy, onnxruntime_matches_signed_lsqplus, .timeout = 300) { check_onnx(&FX_SIGNED, 2000); }

/* ------------------------------------------------------------ format */

static lsq_net *build_from_ckpt(const char *dir, lsq_ckpt *c)
{
    char p[4300];
    path_of(p, sizeof p, dir, "model.lsqc");
    lsq_err err;
    cr_assert_eq(ckpt_load(c, p, &err), LSQ_OK, "%s", err.message);
    lsq_net *net = malloc(sizeof *net);
    cr_assert_eq(ckpt_build_net(net, c, 1, &err), LSQ_OK, "%s", err.message);
    return net;
}

/* The file holds exactly the codes and steps of the trained network, packed
 * at the layer's bit width; re-encoding gives the same bytes. */
Test(deploy, lsqm_round_trip, .timeout = 300)
{
    const char *dir = fixture_dir(&FX_W2);
    lsq_ckpt c;
    lsq_net *net = build_from_ckpt(dir, &c);
    uint8_t *bytes;
    size_t len;
    lsq_err err;
    cr_assert_eq(lsqm_encode(net, NULL, &bytes, &len, &err), LSQ_OK, "%s", err.message);
    uint8_t *copy = malloc(len);
    memcpy(copy, bytes, len);
    lsqm_file f;
    cr_assert_eq(lsqm_parse(&f, copy, len, "mem", &err), LSQ_OK, "%s", err.message);
    int checked = 0;
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_LINEAR) continue;
        char name[128];
        snprintf(name, sizeof name, "%s.weight", nd->name);
        const lsqm_tensor *t = lsqm_find(&f, name);
        cr_assert_not_null(t, "%s missing", name);
        cr_assert_eq(t->type, LSQM_T_CODES);
        cr_assert_eq(t->bits, nd->wq.r.bits);
        const net_view *wv = &net->views[nd->wv];
        cr_assert_eq(t->bytes, (wv->count * (size_t)nd->wq.r.bits + 7) / 8,
                     "%s: %zu bytes for %zu %d-bit codes", name, t->bytes, wv->count,
                     nd->wq.r.bits);
        int8_t *codes = malloc(wv->count);
        cr_assert_eq(lsqm_tensor_codes(&f, t, codes, &err), LSQ_OK);
        const float *w = net->params + wv->off;
        float s = net->params[net->views[nd->wq.step_view].off];
        for (size_t k = 0; k < wv->count; k++) {
            float x = w[k] / s;
            x = x < -nd->wq.r.qn ? (float)-nd->wq.r.qn : x > nd->wq.r.qp ? (float)nd->wq.r.qp : x;
            cr_assert_eq(codes[k], (int8_t)rintf(x), "%s[%zu]", name, k);
        }
        free(codes);
        snprintf(name, sizeof name, "%s.input.step", nd->name);
        t = lsqm_find(&f, name);
        cr_assert_not_null(t);
        float got;
        lsqm_tensor_f32(&f, t, &got);
        cr_assert_eq(got, net->params[net->views[nd->aq.step_view].off]);
        checked++;
    }
    cr_assert_eq(checked, 4);
    /* the same file from disk and from memory predicts the same */
    lsqm_model *m1 = lsqm_load_file(&f, &err), *m2 = load_model(dir);
    cr_assert_not_null(m1, "%s", err.message);
    lsq_dataset ds;
    load_test(&ds, 64);
    float *z1 = int_logits(m1, &ds, 1), *z2 = int_logits(m2, &ds, 1);
    cr_expect_eq(memcmp(z1, z2, 64 * 10 * sizeof *z1), 0);
    uint8_t *again;
    size_t len2;
    cr_assert_eq(lsqm_encode(net, NULL, &again, &len2, &err), LSQ_OK);
    cr_expect(len2 == len && memcmp(again, bytes, len) == 0, "encoding is not deterministic");
    free(z1), free(z2), free(again), free(bytes);
    lsqm_free(m1), lsqm_free(m2);
    lsqm_file_free(&f);
    dataset_free(&ds);
    net_free(net);
    free(net);
    ckpt_free(&c);
}

/* Sizes: a 2-bit model is much smaller than the 8-bit one, and both than
 * float. */
Test(deploy, lsqm_sizes_follow_bits, .timeout = 300)
{
    struct stat s2, s8, sf;
    char p[4300];
    path_of(p, sizeof p, fixture_dir(&FX_W2), "model.lsqm");
    cr_assert_eq(stat(p, &s2), 0);
    path_of(p, sizeof p, fixture_dir(&FX_W8), "model.lsqm");
    cr_assert_eq(stat(p, &s8), 0);
    path_of(p, sizeof p, fixture_dir(&FX_FP), "model.lsqm");
    cr_assert_eq(stat(p, &sf), 0);
    cr_log_info("cnn-small .lsqm: fp32 %ld, w8 %ld, w2 %ld bytes", (long)sf.st_size,
                (long)s8.st_size, (long)s2.st_size);
    /* cnn-small: 824k weights; fc1 (803k) dominates: 2-bit ~ 1/4 of 8-bit */
    cr_expect_lt(s2.st_size * 3, s8.st_size);
    cr_expect_lt(s8.st_size * 3, sf.st_size);
}

static lsq_status parse_copy(const uint8_t *bytes, size_t len, lsq_err *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, bytes, len);
    lsqm_file f;
    lsq_status st = lsqm_parse(&f, copy, len, "model.lsqm", err);
    if (st == LSQ_OK) {
        lsqm_model *m = lsqm_load_file(&f, err);
        if (!m) st = err->code;
        lsqm_free(m);
    }
    lsqm_file_free(&f);
    return st;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

Test(deploy, lsqm_rejects_corruption, .timeout = 300)
{
    const char *dir = fixture_dir(&FX_SIGNED);
    char p[4300];
    path_of(p, sizeof p, dir, "model.lsqm");
    char *text;
    size_t len;
    FILE *fp = fopen(p, "rb");
    cr_assert_not_null(fp);
    fseek(fp, 0, SEEK_END);
    len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    text = malloc(len);
    cr_assert_eq(fread(text, 1, len, fp), len);
    fclose(fp);
    uint8_t *b = (uint8_t *)text;
    lsq_err err;
    cr_assert_eq(parse_copy(b, len, &err), LSQ_OK, "%s", err.message);
    uint32_t hl = b[8] | b[9] << 8 | b[10] << 16 | (uint32_t)b[11] << 24;
    /* truncation: every length up to past the header, then a spread */
    int truncs = 0;
    for (size_t n = 0; n < len; n += (n < 12 + hl + 16 ? 1 : 97)) {
        lsq_err_clear(&err);
        cr_assert_eq(parse_copy(b, n, &err), LSQ_ERR_FORMAT, "truncated at %zu accepted", n);
        cr_assert(err.message[0]);
        truncs++;
    }
    for (size_t n = len - 8; n < len; n++)
        cr_assert_eq(parse_copy(b, n, &err), LSQ_ERR_FORMAT, "truncated at %zu accepted", n);
    /* a byte flipped anywhere */
    uint8_t *c = malloc(len);
    int flips = 0;
    for (size_t i = 0; i < len; i += (i < 64 ? 1 : 61)) {
        memcpy(c, b, len);
        c[i] ^= 0x5a;
        lsq_err_clear(&err);
        cr_assert_neq(parse_copy(c, len, &err), LSQ_OK, "flip at %zu accepted", i);
        cr_assert(err.message[0]);
        flips++;
    }
    /* trailing bytes */
    uint8_t *longer = malloc(len + 3);
    memcpy(longer, b, len);
    memset(longer + len, 0, 3);
    cr_assert_eq(parse_copy(longer, len + 3, &err), LSQ_ERR_FORMAT);
    free(longer);
    /* bad magic */
    memcpy(c, b, len);
    c[0] = 'X';
    cr_assert_eq(parse_copy(c, len, &err), LSQ_ERR_FORMAT);
    cr_assert(strstr(err.message, "magic"), "%s", err.message);
    /* a future version (with a valid checksum) */
    memcpy(c, b, len);
    put32(c + 4, LSQM_VERSION + 1);
    put32(c + len - 4, (uint32_t)crc32(crc32(0L, Z_NULL, 0), c, (uInt)(len - 4)));
    cr_assert_eq(parse_copy(c, len, &err), LSQ_ERR_FORMAT);
    cr_assert(strstr(err.message, "newer"), "%s", err.message);
    /* a consistent checksum over a header that lies about a shape */
    memcpy(c, b, len);
    char *hdr = (char *)c + 12;
    char *dims = memmem(hdr, hl, "\"dims\":[8,1,3,3]", 16);
    cr_assert_not_null(dims, "c1.weight dims not found in the header");
    dims[8] = '2'; /* [8,2,3,3]: twice the codes the payload holds */
    put32(c + len - 4, (uint32_t)crc32(crc32(0L, Z_NULL, 0), c, (uInt)(len - 4)));
    cr_assert_eq(parse_copy(c, len, &err), LSQ_ERR_FORMAT);
    cr_log_info("%d truncations and %d byte flips rejected", truncs, flips);
    free(c);
    free(text);
}

Test(deploy, lsqm_load_missing_file_is_io_error)
{
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_null(lsqm_load("/nonexistent/model.lsqm", &err));
    cr_assert_eq(err.code, LSQ_ERR_IO);
}

/* ------------------------------------ the layers beyond the zoo's */

/* Each layer list holds one of the layer kinds beyond the zoo's. Both
 * deployed forms carry them: lsqm_encode writes a model that loads and
 * runs, onnx_export writes the graph, and export_artifacts writes both and
 * skips nothing. (A layer kind a later build adds without a deployed form
 * is refused by name: support.c.) */
static const struct {
    const char *layers, *field, *what;
} UNSUPPORTED[] = {
    {"{\"type\":\"conv2d\",\"name\":\"c\",\"out\":4,\"kernel\":3,\"pad\":1},"
     "{\"type\":\"conv2d\",\"name\":\"dw\",\"out\":4,\"kernel\":3,\"pad\":1,\"groups\":4}",
     "model.layers[1]", "layer 'dw': groups > 1 has no "},
    {"{\"type\":\"conv2d\",\"name\":\"d\",\"out\":4,\"kernel\":3,\"pad\":2,\"dilation\":2}",
     "model.layers[0]", "layer 'd': dilation > 1 has no "},
    {"{\"type\":\"maxpool\",\"name\":\"mp\",\"kernel\":3,\"stride\":2,\"pad\":1}",
     "model.layers[0]", "layer 'mp': max pooling with pad > 0 has no "},
    {"{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":2}", "model.layers[0]",
     "layer 'ap': windowed average pooling (avgpool with a kernel) has no "},
    {"{\"type\":\"conv2d\",\"name\":\"c\",\"out\":4,\"kernel\":3,\"pad\":1},"
     "{\"type\":\"clip\",\"name\":\"r6\",\"min\":0,\"max\":6}",
     "model.layers[1]", "layer 'r6': clip has no "},
    {"{\"type\":\"leakyrelu\",\"name\":\"lr\"}", "model.layers[0]", "layer 'lr': leakyrelu has no "},
    {"{\"type\":\"scale\",\"name\":\"s\",\"value\":2}", "model.layers[0]", "layer 's': scale has no "},
    {"{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"a\",\"input\"]}",
     "model.layers[1]", "layer 'cat': concat has no "},
};

static void build_unsupported(lsq_net *net, size_t i, int quantized)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"input\":[1,8,8],\"layers\":[%s,{\"type\":\"conv2d\",\"name\":\"last\",\"out\":4,"
             "\"kernel\":1},{\"type\":\"avgpool\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}",
             UNSUPPORTED[i].layers);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "case %zu", i);
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = 1, q.weight_bits = 4, q.act_bits = 4, q.first_last_bits = 8;
    lsq_err err;
    cr_assert_eq(net_build(net, j, quantized ? &q : NULL, 10, 2, &err), LSQ_OK, "case %zu: %s", i,
                 err.message);
    json_decref(j);
    net_init_params(net, 1);
    if (quantized) net_quant_init_weights(net, QINIT_PAPER);
}

Test(deploy, every_layer_kind_deploys_in_both_forms)
{
    char dir[] = "/tmp/lsq-unsup-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char lsqm[4200], onnx[4200];
    snprintf(lsqm, sizeof lsqm, "%s/model.lsqm", dir);
    snprintf(onnx, sizeof onnx, "%s/model.onnx", dir);
    uint8_t px[2 * 64];
    for (int k = 0; k < 2 * 64; k++) px[k] = (uint8_t)(37 * k);
    for (size_t i = 0; i < sizeof UNSUPPORTED / sizeof *UNSUPPORTED; i++)
        for (int quantized = 0; quantized < 2; quantized++) {
            lsq_net net;
            build_unsupported(&net, i, quantized);
            lsq_err err;
            uint8_t *bytes = NULL;
            size_t len = 0;
            lsq_err_clear(&err);
            cr_expect_eq(lsqm_encode(&net, NULL, &bytes, &len, &err), LSQ_OK, "case %zu: %s", i,
                         err.message);
            cr_assert_not_null(bytes);
            lsqm_file f;
            cr_assert_eq(lsqm_parse(&f, bytes, len, "mem.lsqm", &err), LSQ_OK, "%s", err.message);
            lsqm_model *m = lsqm_load_file(&f, &err);
            cr_assert_not_null(m, "case %zu: %s", i, err.message);
            float z[2 * 10];
            cr_expect_eq(lsqm_predict(m, px, 2, z, NULL, 1, &err), LSQ_OK, "case %zu: %s", i,
                         err.message);
            lsqm_free(m);
            lsqm_file_free(&f);
            lsq_err_clear(&err);
            cr_expect_eq(onnx_export(&net, onnx, &err), LSQ_OK, "case %zu: %s", i, err.message);
            cr_expect_eq(access(onnx, F_OK), 0, "case %zu: no ONNX file was written", i);
            unlink(onnx);
            /* the training run's export: both files, nothing skipped */
            json_t *skipped = json_array();
            cr_expect_eq(export_artifacts(&net, dir, NULL, skipped, &err), LSQ_OK, "case %zu: %s", i,
                         err.message);
            cr_expect_eq(json_array_size(skipped), 0, "case %zu: an artifact was skipped", i);
            json_decref(skipped);
            cr_expect_eq(access(lsqm, F_OK), 0, "case %zu: no model.lsqm", i);
            cr_expect_eq(access(onnx, F_OK), 0, "case %zu: no model.onnx", i);
            unlink(onnx);
            unlink(lsqm);
            cr_expect_eq(export_artifacts(&net, dir, NULL, NULL, &err), LSQ_OK, "case %zu: %s", i,
                         err.message);
            unlink(onnx);
            unlink(lsqm);
            net_free(&net);
        }
    rmdir(dir);
}

/* A .lsqm made elsewhere whose layer list holds a layer type this build
 * does not know (conv, relu -> gelu in the header, the same length, the
 * checksum made consistent) does not load: the layer list is refused by
 * the network builder, as a format error. */
Test(deploy, lsqm_with_an_unknown_layer_does_not_load)
{
    const char *text = "{\"input\":[1,8,8],\"layers\":[{\"type\":\"conv2d\",\"name\":\"c\",\"out\":4,"
                       "\"kernel\":3,\"pad\":1},{\"type\":\"relu\",\"name\":\"r\"},{\"type\":\"avgpool\"},"
                       "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";
    json_t *j = json_loads(text, 0, NULL);
    lsq_net net;
    lsq_err err;
    cr_assert_eq(net_build(&net, j, NULL, 10, 2, &err), LSQ_OK, "%s", err.message);
    json_decref(j);
    net_init_params(&net, 1);
    uint8_t *b = NULL;
    size_t len = 0;
    cr_assert_eq(lsqm_encode(&net, NULL, &b, &len, &err), LSQ_OK, "%s", err.message);
    net_free(&net);
    char *relu = memmem(b, len, "\"type\":\"relu\"", 13);
    cr_assert_not_null(relu);
    memcpy(relu + 8, "gelu", 4);
    const uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), b, (uInt)(len - 4));
    for (int k = 0; k < 4; k++) b[len - 4 + k] = (uint8_t)(crc >> (8 * k));
    lsqm_file f;
    cr_assert_eq(lsqm_parse(&f, b, len, "test.lsqm", &err), LSQ_OK, "%s", err.message);
    lsq_err_clear(&err);
    lsqm_model *m = lsqm_load_file(&f, &err);
    cr_expect_null(m);
    cr_expect_eq(err.code, LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "the model's layer list") && strstr(err.message, "'gelu'"), "%s",
              err.message);
    if (m) lsqm_free(m);
    lsqm_file_free(&f);
}
