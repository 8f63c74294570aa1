/* ONNX encoder: wire-format bytes checked by hand, and a quantized graph
 * built with the encoder, run by onnxruntime (tests/onnx/run_model.mjs) and
 * compared with the same computation in C: the QuantizeLinear codes exactly
 * (round half to even), the float result to rounding. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deploy/onnx_pb.h"

Test(onnx_pb, varints_and_fields)
{
    pb_buf b = {0};
    pb_put_varint(&b, 0);
    pb_put_varint(&b, 1);
    pb_put_varint(&b, 300);
    const uint8_t want1[] = {0x00, 0x01, 0xAC, 0x02};
    cr_assert_eq(b.len, sizeof want1);
    cr_assert(memcmp(b.data, want1, b.len) == 0);
    pb_buf_free(&b);

    pb_put_int(&b, 1, -1); /* tag 0x08, then ten bytes of two's complement */
    cr_assert_eq(b.len, 11);
    cr_assert_eq(b.data[0], 0x08);
    for (int i = 1; i < 10; i++)
        cr_assert_eq(b.data[i], 0xFF);
    cr_assert_eq(b.data[10], 0x01);
    pb_buf_free(&b);

    pb_put_float(&b, 2, 1.0f); /* tag (2<<3)|5, 0x3F800000 little-endian */
    const uint8_t want2[] = {0x15, 0x00, 0x00, 0x80, 0x3F};
    cr_assert_eq(b.len, sizeof want2);
    cr_assert(memcmp(b.data, want2, b.len) == 0);
    pb_buf_free(&b);

    pb_put_str(&b, 20, "ab"); /* field 20: two-byte tag 0xA2 0x01 */
    const uint8_t want3[] = {0xA2, 0x01, 0x02, 'a', 'b'};
    cr_assert_eq(b.len, sizeof want3);
    cr_assert(memcmp(b.data, want3, b.len) == 0);
    pb_buf_free(&b);
}

Test(onnx_pb, model_header_and_errors)
{
    lsq_err err;
    uint8_t *bytes;
    size_t len;
    onnx_model *m = onnx_model_new("g");
    onnx_input_add(m, "x", ONNX_FLOAT, ONNX_DIMS(-1, 2));
    onnx_node_add(m, "Relu", "r", ONNX_NAMES("x"), ONNX_NAMES("y"));
    onnx_output_add(m, "y", ONNX_FLOAT, ONNX_DIMS(-1, 2));
    cr_assert_eq(onnx_model_encode(m, &bytes, &len, &err), LSQ_OK);
    /* ir_version = 8 first, then producer_name "lsqd" */
    const uint8_t head[] = {0x08, 0x08, 0x12, 0x04, 'l', 's', 'q', 'd'};
    cr_assert_geq(len, sizeof head);
    cr_assert(memcmp(bytes, head, sizeof head) == 0);
    /* the opset import {domain "", version 13} ends the message */
    const uint8_t tail[] = {0x42, 0x04, 0x0A, 0x00, 0x10, 0x0D};
    cr_assert(memcmp(bytes + len - sizeof tail, tail, sizeof tail) == 0);
    free(bytes);

    /* a bad argument is remembered and reported at encode time */
    onnx_initializer_add(m, "bad", (onnx_dtype)99, ONNX_DIMS(1), "x");
    cr_assert_eq(onnx_model_encode(m, &bytes, &len, &err), LSQ_ERR_INVALID);
    cr_assert(strstr(err.message, "bad") != NULL, "%s", err.message);
    cr_assert_null(bytes);
    cr_assert_eq(onnx_model_save(m, "/nonexistent/dir/m.onnx", &err),
                 LSQ_ERR_INVALID);
    onnx_model_free(m);

    m = onnx_model_new("g");
    cr_assert_eq(onnx_model_save(m, "/nonexistent/dir/m.onnx", &err),
                 LSQ_ERR_IO);
    onnx_model_free(m);
}

/* ---- end to end with onnxruntime ---- */

#define NB 37 /* batch */
#define NI 4  /* features in */
#define NO 3  /* features out */

static const float X_SCALE = 0.25f; /* x / 0.25 is exact: true ties */
static const float X2_SCALE = 0.1f; /* an inexact step, as training gives */
static const float CLIP_MAX = 3 * 0.25f; /* 2-bit activations: codes 0..3 */
static const float LEAK = 0.1f;

/* ONNX QuantizeLinear to uint8 with zero point 0: saturate(rint(x / s)). */
static float quantize_ref(float x, float s)
{
    float q = rintf(x / s); /* default rounding: half to even */
    return q < 0 ? 0 : q > 255 ? 255 : q;
}

static int have_node(void)
{
    return system("command -v node >/dev/null 2>&1") == 0;
}

static char *repo_path(const char *rel)
{
    static char buf[4096];
    const char *b = getenv("LSQ_BUILD");
    if (b && *b) {
        /* LSQ_BUILD is <repo>/build or <repo>/build-san */
        const char *slash = strrchr(b, '/');
        int n = slash ? (int)(slash - b) : 0;
        snprintf(buf, sizeof buf, "%.*s/%s", n, b, rel);
    } else {
        snprintf(buf, sizeof buf, "%s", rel);
    }
    return buf;
}

static float *read_f32(const char *path, size_t want)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "onnxruntime wrote no %s", path);
    float *v = malloc((want + 1) * sizeof *v);
    size_t got = fread(v, sizeof *v, want + 1, f);
    fclose(f);
    cr_assert_eq(got, want, "%s holds %zu floats, want %zu", path, got, want);
    return v;
}

Test(onnx_pb, onnxruntime_matches_reference)
{
    if (!have_node())
        cr_skip("node is not installed: the ONNX runtime check is skipped");

    /* inputs: ties (0.125 -> 0, 0.375 -> 2, 0.625 -> 2), negatives,
     * saturation (100 -> 255), then pseudo-random values */
    float x[NB * NI];
    const float fixed[] = {0.125f, 0.375f, 0.625f, 0.875f, -0.3f, 100.0f,
                           63.625f, 63.875f, 0.0f, 1.125f, -0.125f, 2.5f};
    unsigned s = 2024;
    for (int i = 0; i < NB * NI; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = i < (int)(sizeof fixed / sizeof *fixed)
                   ? fixed[i]
                   : ((float)(s >> 8) / (float)(1u << 24)) * 30.0f - 2.0f;
    }
    /* wq (NI, NO): column o holds output channel o, scaled per column */
    const int8_t wq[NI * NO] = {-2, 1, 127, -1, -2, -128, 0, 1, 5, 1, 0, -7};
    const float w_scale[NO] = {0.5f, 0.03125f, 0.0078125f};
    const int8_t w_zp[NO] = {0, 0, 0};
    const float bias[NO] = {0.25f, -1.5f, 3.0f};
    const float x_scale = X_SCALE, x2_scale = X2_SCALE, cmin = 0.0f,
                cmax = CLIP_MAX;
    const uint8_t x_zp = 0;

    /* The fake-quantized layer in the form an exporter should emit: the
     * clip that the bit width needs comes before QuantizeLinear, so that
     * DequantizeLinear feeds MatMul directly. (A Clip between
     * DequantizeLinear and MatMul lets onnxruntime's default optimizations
     * re-quantize the activation dynamically, which is not exact.) */
    onnx_model *m = onnx_model_new("lsq_test");
    onnx_input_add(m, "x", ONNX_FLOAT, ONNX_DIMS(-1, NI));
    onnx_initializer_add(m, "x_scale", ONNX_FLOAT, ONNX_SCALAR, &x_scale);
    onnx_initializer_add(m, "x2_scale", ONNX_FLOAT, ONNX_SCALAR, &x2_scale);
    onnx_initializer_add(m, "x_zp", ONNX_UINT8, ONNX_SCALAR, &x_zp);
    onnx_initializer_add(m, "clip_min", ONNX_FLOAT, ONNX_SCALAR, &cmin);
    onnx_initializer_add(m, "clip_max", ONNX_FLOAT, ONNX_SCALAR, &cmax);
    onnx_initializer_add(m, "wq", ONNX_INT8, ONNX_DIMS(NI, NO), wq);
    onnx_initializer_add(m, "w_scale", ONNX_FLOAT, ONNX_DIMS(NO), w_scale);
    onnx_initializer_add(m, "w_zp", ONNX_INT8, ONNX_DIMS(NO), w_zp);
    onnx_node_add(m, "Clip", "clip", ONNX_NAMES("x", "clip_min", "clip_max"),
                  ONNX_NAMES("xc"));
    onnx_node_add(m, "QuantizeLinear", "q",
                  ONNX_NAMES("xc", "x_scale", "x_zp"), ONNX_NAMES("xcq"));
    onnx_node_add(m, "DequantizeLinear", "dq",
                  ONNX_NAMES("xcq", "x_scale", "x_zp"), ONNX_NAMES("xd"));
    onnx_node *n = onnx_node_add(m, "DequantizeLinear", "dq_w",
                                 ONNX_NAMES("wq", "w_scale", "w_zp"),
                                 ONNX_NAMES("wd"));
    onnx_attr_int(n, "axis", 1); /* per output channel */
    onnx_node_add(m, "MatMul", "mm", ONNX_NAMES("xd", "wd"), ONNX_NAMES("mm"));
    n = onnx_node_add(m, "Constant", "bias", ONNX_NONE, ONNX_NAMES("b"));
    onnx_attr_tensor(n, "value", ONNX_FLOAT, ONNX_DIMS(NO), bias);
    onnx_node_add(m, "Add", "add", ONNX_NAMES("mm", "b"), ONNX_NAMES("z"));
    n = onnx_node_add(m, "LeakyRelu", "act", ONNX_NAMES("z"), ONNX_NAMES("a"));
    onnx_attr_float(n, "alpha", LEAK);
    n = onnx_node_add(m, "Transpose", "tr", ONNX_NAMES("a"), ONNX_NAMES("y"));
    onnx_attr_ints(n, "perm", ONNX_DIMS(1, 0));
    /* the codes themselves, unclipped (ties and saturation), at an exact
     * and at an inexact step */
    onnx_node_add(m, "QuantizeLinear", "q1", ONNX_NAMES("x", "x_scale", "x_zp"),
                  ONNX_NAMES("xq"));
    n = onnx_node_add(m, "Cast", "cast", ONNX_NAMES("xq"), ONNX_NAMES("xq_f"));
    onnx_attr_int(n, "to", ONNX_FLOAT);
    onnx_node_add(m, "QuantizeLinear", "q2",
                  ONNX_NAMES("x", "x2_scale", "x_zp"), ONNX_NAMES("xq2"));
    n = onnx_node_add(m, "Cast", "cast2", ONNX_NAMES("xq2"),
                      ONNX_NAMES("xq2_f"));
    onnx_attr_int(n, "to", ONNX_FLOAT);
    onnx_output_add(m, "y", ONNX_FLOAT, ONNX_DIMS(NO, -1));
    onnx_output_add(m, "xq_f", ONNX_FLOAT, ONNX_DIMS(-1, NI));
    onnx_output_add(m, "xq2_f", ONNX_FLOAT, ONNX_DIMS(-1, NI));

    char dir[] = "/tmp/lsq-onnx-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char model[128], in[128], out[128], cmd[8192];
    snprintf(model, sizeof model, "%s/m.onnx", dir);
    snprintf(in, sizeof in, "%s/x.f32", dir);
    snprintf(out, sizeof out, "%s/y.f32", dir);
    lsq_err err;
    cr_assert_eq(onnx_model_save(m, model, &err), LSQ_OK, "%s", err.message);
    onnx_model_free(m);
    FILE *f = fopen(in, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(x, sizeof x, 1, f), 1);
    fclose(f);

    snprintf(cmd, sizeof cmd, "node '%s' %s %s %d,%d %s >%s/log 2>&1",
             repo_path("tests/onnx/run_model.mjs"), model, in, NB, NI, out,
             dir);
    int rc = system(cmd);
    if (rc != 0) {
        char log[2048] = "";
        snprintf(cmd, sizeof cmd, "%s/log", dir);
        f = fopen(cmd, "r");
        if (f) {
            size_t r = fread(log, 1, sizeof log - 1, f);
            log[r] = '\0';
            fclose(f);
        }
        cr_assert_fail("onnxruntime failed (exit %d): %s", rc, log);
    }

    float *y = read_f32(out, NB * NO);
    snprintf(cmd, sizeof cmd, "%s.1", out);
    float *xq = read_f32(cmd, NB * NI);
    snprintf(cmd, sizeof cmd, "%s.2", out);
    float *xq2 = read_f32(cmd, NB * NI);

    double maxdiff = 0;
    for (int b = 0; b < NB; b++) {
        float xc[NI];
        for (int i = 0; i < NI; i++) {
            float q = quantize_ref(x[b * NI + i], X_SCALE);
            cr_assert_eq(xq[b * NI + i], q,
                         "QuantizeLinear(%.9g / %g): onnxruntime %g, C %g",
                         x[b * NI + i], X_SCALE, xq[b * NI + i], q);
            float q2 = quantize_ref(x[b * NI + i], X2_SCALE);
            cr_assert_eq(xq2[b * NI + i], q2,
                         "QuantizeLinear(%.9g / %g): onnxruntime %g, C %g",
                         x[b * NI + i], X2_SCALE, xq2[b * NI + i], q2);
            float c = x[b * NI + i] < 0          ? 0
                      : x[b * NI + i] > CLIP_MAX ? CLIP_MAX
                                                 : x[b * NI + i];
            xc[i] = quantize_ref(c, X_SCALE) * X_SCALE;
        }
        for (int o = 0; o < NO; o++) {
            double z = bias[o];
            for (int i = 0; i < NI; i++)
                z += (double)xc[i] * (wq[i * NO + o] * w_scale[o]);
            double want = z < 0 ? z * LEAK : z;
            float got = y[o * NB + b]; /* y is (NO, N) */
            double diff = fabs(got - want);
            if (diff > maxdiff)
                maxdiff = diff;
            cr_assert_leq(diff, 1e-5 * (1 + fabs(want)),
                          "y[%d][%d]: onnxruntime %.9g, C %.9g", o, b, got,
                          want);
        }
    }
    cr_log_info("onnxruntime vs C: quantized codes equal, max |dy| = %.3g",
                maxdiff);
    free(y);
    free(xq);
    free(xq2);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}
