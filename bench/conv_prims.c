/* Conv primitives side by side, per layer shape of the zoo (resnet20,
 * cnn-small) and of a MobileNetV2-style net (bench/mobilenetv2.json), batch
 * 128 by default: forward, backward data and backward weights of
 *   own      the engine's own kernels (conv2d.c: direct, im2col + SGEMM,
 *            depthwise loops), as training runs them;
 *   dnnl     oneDNN with its own layouts, the reorders from and to NCHW
 *            included (what conv2d's oneDNN path costs); reorder_ms says
 *            how much of it they are;
 *   plain    oneDNN on NCHW as it is (no reorders);
 *   wino     oneDNN's Winograd F(4,3) in its blocked layouts, reorders
 *            included as for dnnl (-1, "refused", where oneDNN refuses the
 *            shape: it takes 3x3 stride-1 convs of 16k channels);
 * and, backward only, bf16: the backward on LSQ codes in bf16
 * (dnnl_conv_backward_bf16: the output gradient rounded, codes blocked,
 * f32 results, all of it timed), bf16_cpu_ms beside the others' columns;
 * and, forward only, oneDNN's primitive alone on data already in its
 * layouts: f32, int8 (u8 activations, s8 weights, s32 sums, f32 out) and
 * bf16 (f32 out). Medians (and minimums) of --reps timed runs after 2
 * warm-up runs, the four conv2d modes alternating, in wall ms and in CPU
 * ms of the whole process (*_cpu_ms: at --threads 1, the cost that other
 * work on a shared machine does not change); one JSON line per shape and
 * pass.
 *
 *   conv_prims [--batch 128] [--threads 2] [--reps 9] [--only NAME]
 */
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "core/par.h"
#include "nn/dnnl_conv.h"
#include "nn/layers.h"

#ifdef LSQ_HAVE_DNNL
#include <dnnl.h>
#endif

typedef struct {
    const char *name;
    int ic, hw, oc, k, stride, pad, groups;
} shape;

static const shape SHAPES[] = {
    {"r20.conv1 1-16 3x3 28", 1, 28, 16, 3, 1, 1, 1},
    {"r20.s1 16-16 3x3 28", 16, 28, 16, 3, 1, 1, 1},
    {"r20.s2down 16-32 3x3/2 28", 16, 28, 32, 3, 2, 1, 1},
    {"r20.s2sc 16-32 1x1/2 28", 16, 28, 32, 1, 2, 0, 1},
    {"r20.s2 32-32 3x3 14", 32, 14, 32, 3, 1, 1, 1},
    {"r20.s3down 32-64 3x3/2 14", 32, 14, 64, 3, 2, 1, 1},
    {"r20.s3 64-64 3x3 7", 64, 7, 64, 3, 1, 1, 1},
    {"cnn.conv1 1-32 3x3 28", 1, 28, 32, 3, 1, 1, 1},
    {"cnn.conv2 32-64 3x3 14", 32, 14, 64, 3, 1, 1, 1},
    {"mb.ex 16-64 1x1 28", 16, 28, 64, 1, 1, 0, 1},
    {"mb.pj 64-24 1x1 14", 64, 14, 24, 1, 1, 0, 1},
    {"mb.ex 64-256 1x1 7", 64, 7, 256, 1, 1, 0, 1},
    {"mb.dw 64 3x3/2 28", 64, 28, 64, 3, 2, 1, 64},
    {"mb.dw 96 3x3 14", 96, 14, 96, 3, 1, 1, 96},
    {"mb.dw 128 3x3 7", 128, 7, 128, 3, 1, 1, 128},
};

static void fill(float *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
}

typedef struct {
    const conv2d_dims *d;
    float *out, *in, *w, *dout, *din, *dw, *scratch;
    int pass; /* 0 forward, 1 backward data, 2 backward weights */
    int mode; /* 0 own, 1 dnnl blocked, 2 dnnl plain, 3 dnnl Winograd (blocked) */
} run_ctx;

static int run_once(const run_ctx *c)
{
    if (c->mode == 0) {
        if (c->pass == 0) conv2d_forward(c->out, c->in, c->w, NULL, c->d, c->scratch);
        else if (c->pass == 1)
            conv2d_backward_overwrite(c->din, NULL, NULL, c->dout, c->in, c->w, c->d, c->scratch);
        else
            conv2d_backward(NULL, c->dw, NULL, c->dout, c->in, c->w, c->d, c->scratch);
        return 0;
    }
    const dnnl_conv_layout l = c->mode == 2 ? DNNL_CONV_PLAIN : DNNL_CONV_BLOCKED;
    const dnnl_conv_alg a = c->mode == 3 ? DNNL_CONV_WINOGRAD : DNNL_CONV_DIRECT;
    if (c->pass == 0) return dnnl_conv_forward_alg(c->out, c->in, c->w, NULL, c->d, l, a);
    if (c->pass == 1)
        return dnnl_conv_backward_alg(c->din, 1, NULL, NULL, c->dout, c->in, c->w, c->d, l, a);
    return dnnl_conv_backward_alg(NULL, 0, c->dw, NULL, c->dout, c->in, c->w, c->d, l, a);
}

/* The bf16 backward on codes (pass 1 data, 2 weights): median CPU ms of
 * reps runs after 2 warm-ups, -1 when refused. */
static double time_bf16(const run_ctx *c, const uint16_t *xc, const int32_t *wc, int reps)
{
    const float sw = 0.05f;
    float *din = c->pass == 1 ? c->din : NULL, *dw = c->pass == 2 ? c->dw : NULL;
    double u[64];
    for (int i = 0; i < reps + 2; i++) {
        const double u0 = cpu_s();
        if (dnnl_conv_backward_bf16(din, 1, dw, c->dout, xc, wc, 0.5f, &sw, 1, c->d) != 0)
            return -1.0;
        if (i >= 2) u[i - 2] = (cpu_s() - u0) * 1e3;
    }
    return median(u, reps);
}

#define N_MODES 4

/* The four modes timed alternately (own, dnnl, plain, wino, own, ...: the
 * load of a shared machine falls on all of them alike), 2 warm-up runs
 * each: the median and the fastest ms of reps runs and the median reorder
 * ms, per mode; -1 for a mode that refuses the shape. */
static void time_modes(const run_ctx *c, int reps, double *ms, double *reorder_ms, double *min_ms,
                       double *cpu_ms)
{
    double t[N_MODES][64], r[N_MODES][64], u[N_MODES][64];
    int ok[N_MODES];
    for (int m = 0; m < N_MODES; m++) {
        ok[m] = run_once(&c[m]) == 0 && run_once(&c[m]) == 0;
        ms[m] = reorder_ms[m] = min_ms[m] = cpu_ms[m] = -1.0;
    }
    for (int i = 0; i < reps; i++)
        for (int m = 0; m < N_MODES; m++) {
            if (!ok[m]) continue;
            const double r0 = dnnl_conv_reorder_seconds(), t0 = now_s(), u0 = cpu_s();
            run_once(&c[m]);
            t[m][i] = (now_s() - t0) * 1e3;
            u[m][i] = (cpu_s() - u0) * 1e3;
            r[m][i] = (dnnl_conv_reorder_seconds() - r0) * 1e3;
        }
    for (int m = 0; m < N_MODES; m++) {
        if (!ok[m]) continue;
        reorder_ms[m] = median(r[m], reps);
        ms[m] = median(t[m], reps);
        cpu_ms[m] = median(u[m], reps);
        min_ms[m] = t[m][0]; /* sorted by median() */
    }
}

#ifdef LSQ_HAVE_DNNL
/* The forward primitive alone (inputs already in its layouts), source and
 * weights of type st / wt, f32 out: median CPU ms, -1 when refused. */
static double time_dnnl_fwd_type(const conv2d_dims *d, dnnl_data_type_t st, dnnl_data_type_t wt,
                                 int reps)
{
    dnnl_engine_t eng = NULL;
    dnnl_stream_t s = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t m[3] = {NULL, NULL, NULL};
    double res = -1.0;
    const int g = d->groups;
    dnnl_memory_desc_t smd, wmd, dmd;
    const dnnl_dims_t sd = {d->n, d->ic, d->ih, d->iw}, dd = {d->n, d->oc, d->oh, d->ow};
    const dnnl_dims_t wd4 = {d->oc, d->ic, d->kh, d->kw};
    const dnnl_dims_t wd5 = {g, d->oc / g, d->ic / g, d->kh, d->kw};
    const dnnl_dims_t strides = {d->stride, d->stride}, dil = {0, 0}, pl = {d->pad, d->pad};
    const dnnl_dims_t pr = {(d->oh - 1) * d->stride + d->kh - d->ih - d->pad,
                            (d->ow - 1) * d->stride + d->kw - d->iw - d->pad};
    dnnl_convolution_desc_t cd;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) goto out;
    if (dnnl_stream_create(&s, eng, dnnl_stream_default_flags) != dnnl_success) goto out;
    dnnl_memory_desc_init_by_tag(&smd, 4, sd, st, dnnl_format_tag_any);
    if (g > 1) dnnl_memory_desc_init_by_tag(&wmd, 5, wd5, wt, dnnl_format_tag_any);
    else dnnl_memory_desc_init_by_tag(&wmd, 4, wd4, wt, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_format_tag_any);
    if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                   dnnl_convolution_direct, &smd, &wmd, NULL, &dmd,
                                                   strides, dil, pl, pr) != dnnl_success)
        goto out;
    if (dnnl_primitive_desc_create(&pd, &cd, NULL, eng, NULL) != dnnl_success) {
        pd = NULL;
        goto out;
    }
    if (dnnl_primitive_create(&prim, pd) != dnnl_success) goto out;
    const dnnl_query_t q[3] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md};
    const int args_id[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    dnnl_exec_arg_t args[3];
    for (int i = 0; i < 3; i++) {
        if (dnnl_memory_create(&m[i], dnnl_primitive_desc_query_md(pd, q[i], 0), eng,
                               DNNL_MEMORY_ALLOCATE) != dnnl_success)
            goto out;
        void *h = NULL;
        dnnl_memory_get_data_handle(m[i], &h);
        memset(h, 0, dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, q[i], 0)));
        args[i].arg = args_id[i], args[i].memory = m[i];
    }
    double t[64];
    for (int i = 0; i < reps + 2; i++) {
        const double t0 = cpu_s();
        dnnl_primitive_execute(prim, s, 3, args);
        dnnl_stream_wait(s);
        if (i >= 2) t[i - 2] = (cpu_s() - t0) * 1e3;
    }
    res = median(t, reps);
out:
    for (int i = 0; i < 3; i++)
        if (m[i]) dnnl_memory_destroy(m[i]);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (s) dnnl_stream_destroy(s);
    if (eng) dnnl_engine_destroy(eng);
    return res;
}
#endif

int main(int argc, char **argv)
{
    int batch = 128, threads = 2, reps = 9;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "conv_prims: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (batch < 1 || threads < 1 || reps < 1 || reps > 64) {
        fprintf(stderr, "conv_prims: --batch, --threads >= 1, --reps in 1..64\n");
        return 2;
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(1);
    conv2d_set_backend(CONV2D_BACKEND_OWN);
    static const char *const PASS[] = {"fwd", "bwd_data", "bwd_weights"};
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        const shape *sh = &SHAPES[si];
        if (only && !strstr(sh->name, only)) continue;
        conv2d_dims d;
        if (conv2d_dims_init_ex(&d, batch, sh->ic, sh->hw, sh->hw, sh->oc, sh->k, sh->k,
                                sh->stride, sh->pad, 1, sh->groups) != 0)
            return 1;
        const size_t nin = (size_t)batch * d.ic * d.ih * d.iw;
        const size_t nout = (size_t)batch * d.oc * d.oh * d.ow;
        const size_t nw = (size_t)d.oc * (d.ic / d.groups) * d.kh * d.kw;
        float *in = malloc(nin * 4), *din = malloc(nin * 4), *out = malloc(nout * 4);
        float *dout = malloc(nout * 4), *w = malloc(nw * 4), *dw = calloc(nw, 4);
        float *scratch = malloc(conv2d_scratch_floats(&d) * 4 + 64);
        if (!in || !din || !out || !dout || !w || !dw || !scratch) return 1;
        fill(in, nin, 1), fill(dout, nout, 2), fill(w, nw, 3);
        uint16_t *xc = malloc(nin * 2);
        int32_t *wc = malloc(nw * 4);
        if (!xc || !wc) return 1;
        for (size_t j = 0; j < nin; j++) xc[j] = dnnl_conv_bf16_round((float)(j % 4));
        for (size_t j = 0; j < nw; j++) wc[j] = (int32_t)(j % 4) - 2;
        const double flop = 2.0 * (double)nout * (double)(d.ic / d.groups) * d.kh * d.kw;
        for (int pass = 0; pass < 3; pass++) {
            double ms[N_MODES], ro[N_MODES], mn[N_MODES], cpu[N_MODES];
            run_ctx c[N_MODES];
            for (int mode = 0; mode < N_MODES; mode++)
                c[mode] = (run_ctx){&d, out, in, w, dout, din, dw, scratch, pass, mode};
            time_modes(c, reps, ms, ro, mn, cpu);
            printf("{\"shape\":\"%s\",\"batch\":%d,\"threads\":%d,\"pass\":\"%s\","
                   "\"gflop\":%.4f,\"own_ms\":%.3f,\"dnnl_ms\":%.3f,\"dnnl_reorder_ms\":%.3f,"
                   "\"plain_ms\":%.3f,\"own_min_ms\":%.3f,\"dnnl_min_ms\":%.3f,\"plain_min_ms\":%.3f,"
                   "\"own_cpu_ms\":%.3f,\"dnnl_cpu_ms\":%.3f,\"plain_cpu_ms\":%.3f,"
                   "\"dnnl_impl\":\"%s\",\"plain_impl\":\"%s\"",
                   sh->name, batch, threads, PASS[pass], flop / 1e9, ms[0], ms[1], ro[1], ms[2],
                   mn[0], mn[1], mn[2], cpu[0], cpu[1], cpu[2],
                   dnnl_conv_impl(&d, 0, DNNL_CONV_BLOCKED, pass),
                   dnnl_conv_impl(&d, 0, DNNL_CONV_PLAIN, pass));
            printf(",\"wino_ms\":%.3f,\"wino_reorder_ms\":%.3f,\"wino_min_ms\":%.3f,"
                   "\"wino_cpu_ms\":%.3f,\"wino_impl\":\"%s\"",
                   ms[3], ro[3], mn[3], cpu[3],
                   dnnl_conv_impl_alg(&d, 0, DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD, pass));
            if (pass > 0 && d.groups == 1) {
                printf(",\"bf16_cpu_ms\":%.3f", time_bf16(&c[1], xc, wc, reps));
                printf(",\"bf16_impl\":\"%s\"", dnnl_conv_impl_bf16(&d, pass));
            }
#ifdef LSQ_HAVE_DNNL
            if (pass == 0) {
                printf(",\"prim_f32_ms\":%.3f,\"prim_int8_ms\":%.3f,\"prim_bf16_ms\":%.3f",
                       time_dnnl_fwd_type(&d, dnnl_f32, dnnl_f32, reps),
                       time_dnnl_fwd_type(&d, dnnl_u8, dnnl_s8, reps),
                       time_dnnl_fwd_type(&d, dnnl_bf16, dnnl_bf16, reps));
            }
#endif
            printf("}\n");
            fflush(stdout);
        }
        free(in), free(din), free(out), free(dout), free(w), free(dw), free(scratch);
        free(xc), free(wc);
    }
    dnnl_conv_cache_free();
    return 0;
}
