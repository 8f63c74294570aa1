/* The committed PyTorch fixtures load, hold every tensor the engine tests
 * look up with the right shape, and are internally consistent (one SGD step,
 * integer codes, labels); the reader rejects damaged files and the compare
 * helper reports what it should. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

typedef struct {
    const char *name;
    uint32_t ndim;
    uint32_t dims[4];
} shape;

#define S1(n, a) {n, 1, {a, 0, 0, 0}}
#define S2(n, a, b) {n, 2, {a, b, 0, 0}}
#define S4(n, a, b, c, d) {n, 4, {a, b, c, d}}

/* cnn-small parameters (every one gets grad.* and after.*) */
static const shape CNN_PARAMS[] = {
    S4("conv1.weight", 32, 1, 3, 3), S1("bn1.weight", 32), S1("bn1.bias", 32),
    S4("conv2.weight", 64, 32, 3, 3), S1("bn2.weight", 64), S1("bn2.bias", 64),
    S2("fc1.weight", 256, 3136), S1("fc1.bias", 256),
    S2("fc2.weight", 10, 256), S1("fc2.bias", 10),
};
static const shape CNN_BUFFERS[] = {
    S1("bn1.running_mean", 32), S1("bn1.running_var", 32),
    S1("bn2.running_mean", 64), S1("bn2.running_var", 64),
};
static const shape CNN_IO[] = {
    S4("input", 32, 1, 28, 28), S1("labels", 32), S2("logits", 32, 10),
    S1("loss", 1),
};
static const shape LSQ_STEPS[] = {
    S1("conv1.input.step", 1), S1("conv1.weight.step", 1),
    S1("conv2.input.step", 1), S1("conv2.weight.step", 1),
    S1("fc1.input.step", 1), S1("fc1.weight.step", 1),
    S1("fc2.input.step", 1), S1("fc2.weight.step", 1),
};
static const shape BLOCK_PARAMS[] = {
    S4("conv1.weight", 32, 16, 3, 3), S1("bn1.weight", 32), S1("bn1.bias", 32),
    S4("conv2.weight", 32, 32, 3, 3), S1("bn2.weight", 32), S1("bn2.bias", 32),
    S4("sc.conv.weight", 32, 16, 1, 1), S1("sc.bn.weight", 32),
    S1("sc.bn.bias", 32),
};
static const shape BLOCK_BUFFERS[] = {
    S1("bn1.running_mean", 32), S1("bn1.running_var", 32),
    S1("bn2.running_mean", 32), S1("bn2.running_var", 32),
    S1("sc.bn.running_mean", 32), S1("sc.bn.running_var", 32),
};
static const shape BLOCK_IO[] = {
    S4("input", 4, 16, 14, 14), S4("output", 4, 32, 7, 7),
    S4("dout", 4, 32, 7, 7), S4("grad.input", 4, 16, 14, 14),
};

#define COUNT(a) (sizeof(a) / sizeof *(a))

static fixture *load(const char *file)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", FIXTURE_DIR, file);
    fixture *fx = fixture_load(path);
    cr_assert_not_null(fx, "cannot load %s (run from the repository root)", path);
    return fx;
}

/* Checks each shape under prefix ("" or "grad." or "after."). */
static void expect_shapes(const fixture *fx, const char *prefix,
                          const shape *s, size_t n)
{
    char name[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, s[i].name);
        const fixture_tensor *t = fixture_get(fx, name);
        cr_expect_not_null(t, "missing tensor %s", name);
        cr_expect(fixture_has_shape(fx, name, s[i].ndim, s[i].dims),
                  "%s has the wrong shape", name);
    }
}

/* after.P must be one torch.optim.SGD step from P: the momentum buffer starts
 * as the decayed gradient, so after = p - lr * (grad + wd * p). */
static void expect_sgd_step(const fixture *fx, const shape *s, size_t n)
{
    const double lr = 0.01, wd = 1e-4;
    char gname[128], aname[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(gname, sizeof gname, "grad.%s", s[i].name);
        snprintf(aname, sizeof aname, "after.%s", s[i].name);
        const fixture_tensor *p = fixture_get(fx, s[i].name);
        const fixture_tensor *g = fixture_get(fx, gname);
        const fixture_tensor *a = fixture_get(fx, aname);
        cr_assert(p && g && a, "missing %s, %s or %s", s[i].name, gname, aname);
        double worst = 0.0;
        for (size_t j = 0; j < p->numel; j++) {
            double want = p->data[j] - lr * (g->data[j] + wd * p->data[j]);
            double err = fabs(want - a->data[j]) / fmax(fabs(want), 1e-3);
            worst = fmax(worst, err);
        }
        cr_expect_lt(worst, 1e-5, "%s is not one SGD step from %s (rel %g)",
                     aname, s[i].name, worst);
    }
}

static void expect_cnn_batch(const fixture *fx)
{
    const fixture_tensor *x = fixture_get(fx, "input");
    const fixture_tensor *y = fixture_get(fx, "labels");
    const fixture_tensor *loss = fixture_get(fx, "loss");
    cr_assert(x && y && loss);
    for (size_t i = 0; i < x->numel; i++)
        cr_assert(x->data[i] >= 0.0f && x->data[i] <= 1.0f, "pixel %zu", i);
    for (size_t i = 0; i < y->numel; i++)
        cr_assert(y->data[i] >= 0.0f && y->data[i] <= 9.0f &&
                  y->data[i] == floorf(y->data[i]), "label %zu", i);
    cr_expect(isfinite(loss->data[0]) && loss->data[0] > 0.0f);
}

static void expect_cnn_common(const fixture *fx)
{
    expect_shapes(fx, "", CNN_PARAMS, COUNT(CNN_PARAMS));
    expect_shapes(fx, "", CNN_BUFFERS, COUNT(CNN_BUFFERS));
    expect_shapes(fx, "", CNN_IO, COUNT(CNN_IO));
    expect_shapes(fx, "grad.", CNN_PARAMS, COUNT(CNN_PARAMS));
    expect_shapes(fx, "after.", CNN_PARAMS, COUNT(CNN_PARAMS));
    expect_shapes(fx, "after.", CNN_BUFFERS, COUNT(CNN_BUFFERS));
    expect_sgd_step(fx, CNN_PARAMS, COUNT(CNN_PARAMS));
    expect_cnn_batch(fx);
}

Test(fixture_io, cnn_small_fp)
{
    fixture *fx = load("cnn_small_fp.bin");
    expect_cnn_common(fx);
    fixture_free(fx);
}

static void check_lsq(const char *file, int bits)
{
    fixture *fx = load(file);
    expect_cnn_common(fx);
    expect_shapes(fx, "", LSQ_STEPS, COUNT(LSQ_STEPS));
    expect_shapes(fx, "grad.", LSQ_STEPS, COUNT(LSQ_STEPS));
    expect_shapes(fx, "after.", LSQ_STEPS, COUNT(LSQ_STEPS));
    expect_sgd_step(fx, LSQ_STEPS, COUNT(LSQ_STEPS));
    expect_shapes(fx, "", &(shape)S4("codes.conv2.weight", 64, 32, 3, 3), 1);

    for (size_t i = 0; i < COUNT(LSQ_STEPS); i++) {
        const fixture_tensor *s = fixture_get(fx, LSQ_STEPS[i].name);
        cr_assert_not_null(s);
        cr_expect_gt(s->data[0], 0.0f, "%s must start positive", s->name);
    }
    /* the network input is quantized exactly: its step starts at
     * float32(1/255); the step itself then runs at the nearest power of two */
    cr_expect_eq(fixture_get(fx, "init.conv1.input.step")->data[0], 1.0f / 255.0f);
    cr_expect_eq(fixture_get(fx, "conv1.input.step")->data[0], 1.0f / 256.0f);
    for (size_t i = 0; i < COUNT(LSQ_STEPS); i++) {
        float v = fixture_get(fx, LSQ_STEPS[i].name)->data[0];
        int e;
        cr_expect_eq(frexpf(v, &e), 0.5f, "%s = %g is not a power of two", LSQ_STEPS[i].name, v);
    }

    /* codes are integers in [-QN, QP]. PyTorch's init is uniform on [-a, a],
     * so mean|w| = a/2, s = a / sqrt(QP) and |w / s| <= sqrt(QP): at init the
     * codes span -1..1 at 2 bits and -3..3 at 4 bits, never all levels. */
    const fixture_tensor *c = fixture_get(fx, "codes.conv2.weight");
    const fixture_tensor *w = fixture_get(fx, "conv2.weight");
    const float s = fixture_get(fx, "conv2.weight.step")->data[0];
    const int qn = 1 << (bits - 1), qp = (1 << (bits - 1)) - 1;
    int used[256] = {0};
    for (size_t i = 0; i < c->numel; i++) {
        float v = c->data[i];
        cr_assert(v == floorf(v) && v >= (float)-qn && v <= (float)qp,
                  "code %zu = %g outside [-%d, %d]", i, v, qn, qp);
        used[(int)v + qn] = 1;
        /* each code is the nearest level to w / s (within rounding) */
        float x = fminf(fmaxf(w->data[i] / s, (float)-qn), (float)qp);
        cr_assert_leq(fabsf(x - v), 0.5f + 1e-5f, "code %zu", i);
    }
    int levels = 0;
    for (int k = 0; k <= qn + qp; k++)
        levels += used[k];
    cr_expect_geq(levels, 3, "only %d distinct codes", levels);
    fixture_free(fx);
}

Test(fixture_io, cnn_small_w2a2) { check_lsq("cnn_small_w2a2.bin", 2); }
Test(fixture_io, cnn_small_w4a4) { check_lsq("cnn_small_w4a4.bin", 4); }

Test(fixture_io, resnet_block)
{
    fixture *fx = load("resnet_block.bin");
    expect_shapes(fx, "", BLOCK_PARAMS, COUNT(BLOCK_PARAMS));
    expect_shapes(fx, "", BLOCK_BUFFERS, COUNT(BLOCK_BUFFERS));
    expect_shapes(fx, "", BLOCK_IO, COUNT(BLOCK_IO));
    expect_shapes(fx, "grad.", BLOCK_PARAMS, COUNT(BLOCK_PARAMS));
    expect_shapes(fx, "after.", BLOCK_PARAMS, COUNT(BLOCK_PARAMS));
    expect_sgd_step(fx, BLOCK_PARAMS, COUNT(BLOCK_PARAMS));
    /* the block ends in a ReLU */
    const fixture_tensor *out = fixture_get(fx, "output");
    for (size_t i = 0; i < out->numel; i++)
        cr_assert_geq(out->data[i], 0.0f, "output %zu", i);
    fixture_free(fx);
}

Test(fixture_io, missing_name_is_null)
{
    fixture *fx = load("resnet_block.bin");
    cr_expect_null(fixture_get(fx, "conv3.weight"));
    cr_expect_null(fixture_get(fx, "conv1.weigh"));
    cr_expect_not_null(fixture_get(fx, "conv1.weight"));
    uint32_t wrong[4] = {32, 16, 3, 1};
    cr_expect_not(fixture_has_shape(fx, "conv1.weight", 4, wrong));
    fixture_free(fx);
}

Test(fixture_io, compare_reports_differences)
{
    fixture *fx = load("resnet_block.bin");
    const fixture_tensor *t = fixture_get(fx, "output");
    float *got = malloc(t->numel * sizeof *got);
    cr_assert_not_null(got);
    memcpy(got, t->data, t->numel * sizeof *got);
    fixture_diff d;
    cr_assert_eq(fixture_compare(fx, "output", got, t->numel, &d), 0);
    cr_expect_eq(d.max_abs, 0.0);
    cr_expect_eq(d.max_rel, 0.0);
    cr_expect_gt(d.ref_max, 0.0);

    /* find a clearly non-zero element and move it by 1% */
    size_t k = 0;
    while (fabsf(t->data[k]) < 0.5f)
        k++;
    got[k] = t->data[k] * 1.01f;
    cr_assert_eq(fixture_compare(fx, "output", got, t->numel, &d), 0);
    cr_expect_eq(d.worst, k);
    cr_expect_float_eq(d.max_abs, fabs(t->data[k] * 0.01), 1e-6);
    cr_expect_float_eq(d.max_rel, 0.01, 1e-5);

    got[k] = NAN;
    cr_assert_eq(fixture_compare(fx, "output", got, t->numel, &d), 0);
    cr_expect(isinf(d.max_abs), "a NaN must count as an infinite difference");

    cr_expect_eq(fixture_compare(fx, "output", got, t->numel - 1, &d), -1);
    cr_expect_eq(fixture_compare(fx, "no.such", got, t->numel, &d), -1);
    free(got);
    fixture_free(fx);
}

/* Writes len bytes of src to a temporary file and tries to load it. */
static fixture *load_bytes(const unsigned char *src, size_t len)
{
    char path[] = "/tmp/lsq-fixture-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(src, 1, len, f), len);
    fclose(f);
    fixture *fx = fixture_load(path);
    remove(path);
    return fx;
}

Test(fixture_io, damaged_files_are_rejected)
{
    FILE *f = fopen(FIXTURE_DIR "/resnet_block.bin", "rb");
    cr_assert_not_null(f);
    static unsigned char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert_lt(len, sizeof buf);

    fixture *fx = load_bytes(buf, len);
    cr_assert_not_null(fx, "the intact copy must load");
    fixture_free(fx);

    cr_expect_null(load_bytes(buf, len - 1), "truncated");
    cr_expect_null(load_bytes(buf, 40), "cut in a tensor header");
    buf[len] = 0;
    cr_expect_null(load_bytes(buf, len + 1), "trailing byte");
    buf[0] = 'X';
    cr_expect_null(load_bytes(buf, len), "bad magic");
    buf[0] = 'L';
    buf[8] = 0xff; /* count far beyond what the file holds */
    cr_expect_null(load_bytes(buf, len), "bad count");
    cr_expect_null(fixture_load(FIXTURE_DIR "/no-such-file.bin"));
}
