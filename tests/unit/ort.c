/* onnxruntime from the unit tests (ort.h). */
#include "unit/ort.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deploy/onnx_export.h"

/* rel under the repository root: LSQ_BUILD is <repo>/build (or build-san) */
static void repo_path(char *buf, size_t sz, const char *rel)
{
    const char *b = getenv("LSQ_BUILD");
    const char *slash = b && *b ? strrchr(b, '/') : NULL;
    if (slash)
        snprintf(buf, sz, "%.*s/%s", (int)(slash - b), b, rel);
    else
        snprintf(buf, sz, "%s", rel);
}

static void rm_dir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* Runs model on x in the temporary folder dir (which it removes). */
static float *run_in(const char *dir, const char *model, const float *x, int n, int c, int h,
                     int w, int classes, const char *opt)
{
    char in[600], out[600], log[600], script[4096], cmd[8192];
    snprintf(in, sizeof in, "%s/x.f32", dir);
    snprintf(out, sizeof out, "%s/y.f32", dir);
    snprintf(log, sizeof log, "%s/log", dir);
    const size_t count = (size_t)n * c * h * w;
    FILE *f = fopen(in, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(x, sizeof *x, count, f), count);
    fclose(f);
    repo_path(script, sizeof script, "tests/onnx/run_model.mjs");
    snprintf(cmd, sizeof cmd, "node '%s' '%s' %s %d,%d,%d,%d %s --threads 2 --opt %s >%s 2>&1",
             script, model, in, n, c, h, w, out, opt, log);
    int rc = system(cmd);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 3) {
        rm_dir(dir);
        cr_skip_test("onnxruntime-node is not installed");
    }
    if (rc != 0) {
        char text[2048] = "";
        f = fopen(log, "r");
        if (f) {
            text[fread(text, 1, sizeof text - 1, f)] = '\0';
            fclose(f);
        }
        cr_assert_fail("onnxruntime failed on %s (status %d): %s", model, rc, text);
    }
    const size_t want = (size_t)n * classes;
    float *y = malloc((want + 1) * sizeof *y);
    cr_assert_not_null(y);
    f = fopen(out, "rb");
    cr_assert_not_null(f, "onnxruntime wrote no %s", out);
    size_t got = fread(y, sizeof *y, want + 1, f);
    fclose(f);
    cr_assert_eq(got, want, "%s holds %zu floats, want %zu", out, got, want);
    rm_dir(dir);
    return y;
}

static void need_node(void)
{
    if (system("command -v node >/dev/null 2>&1") != 0)
        cr_skip_test("node is not installed: the onnxruntime check is skipped");
}

float *ort_run_file(const char *model, const float *x, int n, int c, int h, int w, int classes,
                    const char *opt)
{
    need_node();
    char dir[] = "/tmp/lsq-ort-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    return run_in(dir, model, x, n, c, h, w, classes, opt);
}

float *ort_run_net(const lsq_net *net, const float *x, int n, const char *opt)
{
    need_node();
    char dir[] = "/tmp/lsq-ort-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char model[64];
    snprintf(model, sizeof model, "%s/m.onnx", dir);
    lsq_err err;
    cr_assert_eq(onnx_export(net, model, &err), LSQ_OK, "onnx_export: [%s] %s", err.field,
                 err.message);
    const net_node *in0 = &net->nodes[0];
    return run_in(dir, model, x, n, in0->c, in0->h, in0->w, net->classes, opt);
}

ort_diff ort_expect_close(const float *ort, const float *ref, int n, int k, const char *what)
{
    ort_diff d = {0, 0, 0, (size_t)n * k, 0};
    size_t worst = 0;
    for (int r = 0; r < n; r++) {
        int ao = 0, ar = 0;
        for (int j = 0; j < k; j++) {
            const size_t i = (size_t)r * k + j;
            const double diff = fabs((double)ort[i] - ref[i]);
            const double rel = diff / (1.0 + fabs(ref[i]));
            if (!(rel <= d.max_rel)) d.max_rel = rel, worst = i;
            if (diff > d.max_abs) d.max_abs = diff;
            d.same += ort[i] == ref[i];
            if (ort[r * k + j] > ort[r * k + ao]) ao = j;
            if (ref[r * k + j] > ref[r * k + ar]) ar = j;
        }
        d.top1_agree += ao == ar;
    }
    cr_log_info("%s: onnxruntime vs lsq: max |dlogit| %.3g, %zu/%zu logits identical, top-1 "
                "%d/%d", what, d.max_abs, d.same, d.count, d.top1_agree, n);
    cr_expect_leq(d.max_rel, ORT_TOL,
                  "%s: logit %zu: onnxruntime %.9g, lsq %.9g (%.3g relative, tolerance %g)", what,
                  worst, (double)ort[worst], (double)ref[worst], d.max_rel, ORT_TOL);
    return d;
}
