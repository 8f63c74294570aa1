/* Layer kernels: forward against naive direct references (double), every
 * backward against central finite differences, plus the kernel conventions
 * (backward accumulates, NULL gradients are skipped, results repeat bit for
 * bit at a fixed thread count).
 *
 * Finite differences: the scalar checked is L = sum(out * r) for a fixed
 * random r (so dL/dout = r), summed in double. conv2d and linear are linear
 * in each argument, so a large step (1e-2) has no truncation error and little
 * rounding noise; batchnorm also uses 1e-2 (its float rounding noise, not the
 * O(h^2) truncation, dominates at smaller steps); the losses and pooling use
 * 1e-3. The quotient uses the step actually taken after rounding to float. A gradient entry passes when
 * |analytic - numeric| / max(|analytic|, |numeric|, 0.1) <= 1e-2; the largest
 * such difference is printed for every check. */
#include <criterion/criterion.h>

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/dconv.h"
#include "nn/layers.h"
#include "quant/quant.h"

#define FD_TOL 1e-2

/* ---- helpers ---- */

static unsigned long long rng_state;

static void rng_seed(unsigned long long s) { rng_state = s * 2654435761ULL + 1; }

static double rng_unit(void) /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Scratch for the batch-norm calls (their work argument): the largest any
 * test has asked for so far, kept for the process. */
static float *bn_work(int n, int c)
{
    static float *w;
    static size_t cap;
    size_t need = BN_WORK_FLOATS(n, c) > BN_BACKWARD_WORK_FLOATS(n, c)
                      ? BN_WORK_FLOATS(n, c)
                      : BN_BACKWARD_WORK_FLOATS(n, c);
    if (need > cap) {
        free(w);
        w = malloc(need * sizeof *w);
        cr_assert(w, "out of memory for batch-norm scratch");
        cap = need;
    }
    return w;
}

static float *rand_buf(size_t n, float lo, float hi)
{
    float *p = malloc(sizeof *p * (n ? n : 1));
    cr_assert(p);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)rng_unit();
    return p;
}

static float *zeros(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    cr_assert(p);
    return p;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void use_threads(int omp, int blas)
{
    omp_set_num_threads(omp);
    openblas_set_num_threads(blas);
}

/* A forward pass that returns the scalar being differentiated. */
typedef double (*loss_fn)(void *ctx);

/* Compares grad (analytic) against central differences of f over param, at
 * every index when count <= max_checks, else at max_checks random indices.
 * Returns the largest relative difference and prints it. */
static double gradcheck(const char *what, float *param, const float *grad,
                        size_t count, loss_fn f, void *ctx, float h,
                        int max_checks)
{
    double worst = 0.0;
    size_t checks = count <= (size_t)max_checks ? count : (size_t)max_checks;
    for (size_t c = 0; c < checks; c++) {
        size_t i = count <= (size_t)max_checks ? c
                                                : (size_t)(rng_unit() * count);
        float keep = param[i];
        param[i] = keep + h;
        double up = param[i], lp = f(ctx);
        param[i] = keep - h;
        double down = param[i], lm = f(ctx);
        param[i] = keep;
        /* the step actually taken, after rounding to float */
        double num = (lp - lm) / (up - down);
        double ana = grad[i];
        double den = fmax(fmax(fabs(num), fabs(ana)), 0.1);
        double rel = fabs(num - ana) / den;
        if (rel > worst) worst = rel;
        if (rel > FD_TOL)
            cr_log_error("%s[%zu]: analytic %.6g numeric %.6g", what, i, ana, num);
    }
    printf("gradcheck %-40s max rel diff %.3g (%zu entries)\n", what, worst, checks);
    return worst;
}

static double max_rel_diff(const float *a, const double *ref, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double rel = fabs(a[i] - ref[i]) / fmax(fabs(ref[i]), 1.0);
        if (rel > worst) worst = rel;
    }
    return worst;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= worst)) worst = e; /* NaN counts as worst */
    }
    return worst;
}

/* ---- conv2d ---- */

typedef struct {
    conv2d_dims d;
    float *in, *w, *b, *out, *r, *scratch;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    conv2d_forward(c->out, c->in, c->w, c->b, &c->d, c->scratch);
    return dot(c->out, c->r, (size_t)c->d.n * c->d.oc * c->d.oh * c->d.ow);
}

static size_t conv_in_n(const conv2d_dims *d) { return (size_t)d->n * d->ic * d->ih * d->iw; }
static size_t conv_w_n(const conv2d_dims *d) { return (size_t)d->oc * d->ic * d->kh * d->kw; }
static size_t conv_out_n(const conv2d_dims *d) { return (size_t)d->n * d->oc * d->oh * d->ow; }

static void conv_ctx_init(conv_ctx *c, int n, int ic, int ih, int iw, int oc,
                          int kh, int kw, int stride, int pad, int bias)
{
    cr_assert_eq(conv2d_dims_init(&c->d, n, ic, ih, iw, oc, kh, kw, stride, pad), 0);
    c->in = rand_buf(conv_in_n(&c->d), -1, 1);
    c->w = rand_buf(conv_w_n(&c->d), -1, 1);
    c->b = bias ? rand_buf((size_t)oc, -1, 1) : NULL;
    c->out = zeros(conv_out_n(&c->d));
    c->r = rand_buf(conv_out_n(&c->d), -1, 1);
    c->scratch = zeros(conv2d_scratch_floats(&c->d));
}

static void conv_ctx_free(conv_ctx *c)
{
    free(c->in); free(c->w); free(c->b); free(c->out); free(c->r); free(c->scratch);
}

/* Direct convolution in double. */
static void conv_ref(double *out, const conv_ctx *c)
{
    const conv2d_dims *d = &c->d;
    for (int n = 0; n < d->n; n++)
        for (int o = 0; o < d->oc; o++)
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    double s = c->b ? c->b[o] : 0.0;
                    for (int ci = 0; ci < d->ic; ci++)
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                int iy = oy * d->stride + ki - d->pad;
                                int ix = ox * d->stride + kj - d->pad;
                                if (iy < 0 || iy >= d->ih || ix < 0 || ix >= d->iw)
                                    continue;
                                s += (double)c->in[((size_t)(n * d->ic + ci) * d->ih + iy) * d->iw + ix] *
                                     c->w[((size_t)(o * d->ic + ci) * d->kh + ki) * d->kw + kj];
                            }
                    out[((size_t)(n * d->oc + o) * d->oh + oy) * d->ow + ox] = s;
                }
}

static const int CONV_CASES[][10] = {
    /* n, ic, ih, iw, oc, kh, kw, stride, pad, bias */
    {2, 3, 7, 5, 4, 3, 3, 1, 1, 1},
    {1, 2, 6, 6, 3, 3, 3, 2, 0, 0},
    {3, 4, 5, 6, 2, 1, 1, 1, 0, 1}, /* pointwise: no im2col */
    {2, 3, 9, 8, 5, 1, 1, 2, 0, 0}, /* strided 1x1 shortcut */
    {2, 2, 8, 7, 3, 3, 3, 2, 1, 1},
    {1, 2, 5, 6, 2, 3, 2, 1, 1, 0}, /* non-square kernel */
    {5, 3, 4, 9, 3, 3, 3, 1, 0, 1}, /* more images than threads */
    {1, 1, 3, 3, 2, 3, 3, 1, 2, 1}, /* padding wider than needed */
    {2, 2, 6, 7, 3, 5, 5, 1, 2, 1}, /* "same" 5x5: im2col in one run per row */
    {1, 2, 2, 2, 2, 5, 5, 1, 2, 0}, /* "same", kernel rows entirely outside */
};
#define N_CONV_CASES (sizeof CONV_CASES / sizeof *CONV_CASES)

static void conv_case(conv_ctx *c, size_t i)
{
    const int *k = CONV_CASES[i];
    conv_ctx_init(c, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9]);
}

Test(layers, conv2d_dims)
{
    conv2d_dims d;
    cr_assert_eq(conv2d_dims_init(&d, 2, 3, 28, 28, 8, 3, 3, 1, 1), 0);
    cr_assert(d.oh == 28 && d.ow == 28);
    cr_assert_eq(conv2d_dims_init(&d, 2, 3, 28, 27, 8, 3, 3, 2, 1), 0);
    cr_assert(d.oh == 14 && d.ow == 14);
    cr_assert_eq(conv2d_dims_init(&d, 1, 1, 2, 2, 1, 3, 3, 1, 0), -1);
    cr_assert_eq(conv2d_dims_init(&d, 0, 1, 8, 8, 1, 3, 3, 1, 0), -1);
}

Test(layers, conv2d_forward_matches_direct)
{
    use_threads(2, 1);
    rng_seed(1);
    for (size_t i = 0; i < N_CONV_CASES; i++) {
        conv_ctx c;
        conv_case(&c, i);
        double *ref = malloc(sizeof *ref * conv_out_n(&c.d));
        conv_ref(ref, &c);
        conv_loss(&c);
        double rel = max_rel_diff(c.out, ref, conv_out_n(&c.d));
        printf("conv2d forward case %zu: max rel diff %.3g\n", i, rel);
        cr_expect_leq(rel, 1e-5, "case %zu", i);
        free(ref);
        conv_ctx_free(&c);
    }
}

static void conv_gradcheck_all(int omp, int blas)
{
    use_threads(omp, blas);
    rng_seed(2);
    for (size_t i = 0; i < N_CONV_CASES; i++) {
        conv_ctx c;
        conv_case(&c, i);
        float *din = zeros(conv_in_n(&c.d)), *dw = zeros(conv_w_n(&c.d));
        float *db = zeros((size_t)c.d.oc);
        conv2d_backward(din, dw, c.b ? db : NULL, c.r, c.in, c.w, &c.d, c.scratch);
        char name[64];
        snprintf(name, sizeof name, "conv2d case %zu din", i);
        cr_expect_leq(gradcheck(name, c.in, din, conv_in_n(&c.d), conv_loss, &c, 1e-2f, 60), FD_TOL);
        snprintf(name, sizeof name, "conv2d case %zu dw", i);
        cr_expect_leq(gradcheck(name, c.w, dw, conv_w_n(&c.d), conv_loss, &c, 1e-2f, 60), FD_TOL);
        if (c.b) {
            snprintf(name, sizeof name, "conv2d case %zu db", i);
            cr_expect_leq(gradcheck(name, c.b, db, (size_t)c.d.oc, conv_loss, &c, 1e-2f, 60), FD_TOL);
        }
        free(din); free(dw); free(db);
        conv_ctx_free(&c);
    }
}

Test(layers, conv2d_gradcheck) { conv_gradcheck_all(2, 1); }

/* OpenBLAS left multi-threaded: the kernels take their one-thread path. */
Test(layers, conv2d_gradcheck_blas_threaded) { conv_gradcheck_all(2, 2); }

/* The direct path (stride-1 "same" convs) against im2col + SGEMM on the same
 * inputs: forward, din, dw and db, with channel counts that leave partial
 * register blocks and more images than accumulation groups. */
static const int DIRECT_CASES[][10] = {
    {3, 16, 28, 28, 16, 3, 3, 1, 1, 0}, /* resnet20 stage 1 */
    {2, 32, 14, 14, 32, 3, 3, 1, 1, 0}, /* stage 2 */
    {2, 64, 7, 7, 64, 3, 3, 1, 1, 1},   /* stage 3, with bias */
    {2, 1, 28, 28, 16, 3, 3, 1, 1, 1},  /* one input channel */
    {20, 5, 9, 7, 7, 3, 3, 1, 1, 1},    /* 7 rows: a 4-block and 3 left */
    {2, 3, 6, 7, 6, 5, 5, 1, 2, 1},     /* 5x5: taps not a multiple of 3 */
    {1, 2, 1, 3, 3, 3, 3, 1, 1, 0},     /* one-row image */
};

Test(layers, conv2d_direct_matches_gemm)
{
    use_threads(2, 1);
    rng_seed(5);
    for (size_t ci = 0; ci < sizeof DIRECT_CASES / sizeof *DIRECT_CASES; ci++) {
        const int *k = DIRECT_CASES[ci];
        conv_ctx c;
        conv_ctx_init(&c, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9]);
        size_t no = conv_out_n(&c.d), ni = conv_in_n(&c.d), nw = conv_w_n(&c.d);
        float *out[2], *din[2], *dw[2], *db[2];
        for (int path = 0; path < 2; path++) {
            conv2d_set_path(path ? CONV2D_PATH_GEMM : CONV2D_PATH_AUTO);
            out[path] = zeros(no), din[path] = zeros(ni), dw[path] = zeros(nw);
            db[path] = zeros((size_t)c.d.oc);
            /* din and dw start non-zero: both paths must accumulate */
            for (size_t j = 0; j < ni; j++) din[path][j] = 0.5f;
            for (size_t j = 0; j < nw; j++) dw[path][j] = -0.25f;
            conv2d_forward(out[path], c.in, c.w, c.b, &c.d, c.scratch);
            conv2d_backward(din[path], dw[path], c.b ? db[path] : NULL, c.r, c.in, c.w, &c.d,
                            c.scratch);
        }
        conv2d_set_path(CONV2D_PATH_AUTO);
        double *ref = malloc(sizeof *ref * no);
        conv_ref(ref, &c);
        double e_ref = max_rel_diff(out[0], ref, no);
        double e_out = max_abs_diff(out[0], out[1], no), e_din = max_abs_diff(din[0], din[1], ni);
        double e_dw = max_abs_diff(dw[0], dw[1], nw);
        double e_db = max_abs_diff(db[0], db[1], (size_t)c.d.oc);
        printf("conv2d direct vs gemm case %zu: out %.3g din %.3g dw %.3g db %.3g, vs double %.3g\n",
               ci, e_out, e_din, e_dw, e_db, e_ref);
        cr_expect_leq(e_ref, 1e-5, "case %zu forward vs double", ci);
        /* float sums of up to K = 576 (forward) or N * P terms (dw) in
         * different orders */
        cr_expect_leq(e_out, 1e-4, "case %zu out", ci);
        cr_expect_leq(e_din, 1e-4, "case %zu din", ci);
        cr_expect_leq(e_dw, 2e-3, "case %zu dw", ci);
        cr_expect_leq(e_db, 2e-3, "case %zu db", ci);
        for (int path = 0; path < 2; path++) {
            free(out[path]), free(din[path]), free(dw[path]), free(db[path]);
        }
        free(ref);
        conv_ctx_free(&c);
    }
}

/* The integer forward of quantized convs: against the exact value of the
 * codes' sums (double) and against the float direct path on the quantized
 * values, for 2, 3 and 4 bits, per-tensor and per-channel steps, odd channel
 * counts (a zero channel completes the last pair) and widths that leave every
 * tail of the kernel's column blocks. Inputs include negatives, values past
 * the clip edge and exact .5 ties. */
static const int CODES_CASES[][6] = {
    /* n, ic, h, w, oc, bits */
    {3, 16, 28, 28, 16, 2}, /* resnet20 stage 1 (nv 840: a tail of 8) */
    {2, 32, 14, 14, 32, 2}, /* stage 2 (nv 224) */
    {2, 64, 7, 7, 64, 2},   /* stage 3 (nv 63: 32 + 32) */
    {2, 3, 6, 7, 6, 3},     /* odd IC, rows left over in the last panel */
    {4, 5, 9, 3, 7, 4},     /* nv 45: a tail of 16 */
    {1, 1, 4, 4, 2, 2},     /* one channel */
};

Test(layers, conv2d_forward_codes_matches_float)
{
    use_threads(2, 1);
    rng_seed(9);
    for (size_t ci = 0; ci < sizeof CODES_CASES / sizeof *CODES_CASES; ci++) {
        const int *k = CODES_CASES[ci];
        for (int per_channel = 0; per_channel < 2; per_channel++) {
            conv_ctx c;
            conv_ctx_init(&c, k[0], k[1], k[2], k[3], k[4], 3, 3, 1, 1, per_channel);
            const size_t ni = conv_in_n(&c.d), nw = conv_w_n(&c.d), no = conv_out_n(&c.d);
            quant_range ra, rw;
            quant_range_init(&ra, k[5], 0);
            quant_range_init(&rw, k[5], 1);
            const float sa = 0.25f;
            float sw[64];
            const int wch = per_channel ? c.d.oc : 1;
            for (int o = 0; o < wch; o++) sw[o] = 0.05f + 0.01f * (float)o;
            /* activations from -1 to past qp * sa, every tenth on a tie */
            for (size_t j = 0; j < ni; j++) {
                c.in[j] = -1.0f + (float)rng_unit() * (ra.qp + 2) * sa;
                if (j % 10 == 0) c.in[j] = ((float)(j / 10 % (ra.qp + 1)) + 0.5f) * sa;
            }
            float *qin = zeros(ni), *qw = zeros(nw), *out_f = zeros(no), *out_c = zeros(no);
            int32_t *ca = calloc(ni, sizeof *ca), *cw = calloc(nw, sizeof *cw);
            quant_forward(qin, ca, c.in, &sa, NULL, 1, ni, &ra);
            quant_forward(qw, cw, c.w, sw, NULL, wch, nw / (size_t)wch, &rw);
            conv2d_set_path(CONV2D_PATH_FLOAT);
            cr_expect_eq(conv2d_forward_codes(out_c, NULL, c.in, sa, &ra, cw, sw, wch, &rw, c.b,
                                              &c.d, c.scratch),
                         -1, "the FLOAT path setting has no integer forward");
            conv2d_forward(out_f, qin, qw, c.b, &c.d, c.scratch);
            conv2d_set_path(CONV2D_PATH_AUTO);
            float *qc = zeros(ni);
            cr_assert_eq(conv2d_forward_codes(out_c, qc, c.in, sa, &ra, cw, sw, wch, &rw, c.b,
                                              &c.d, c.scratch),
                         0, "case %zu: no integer forward", ci);
            cr_expect(memcmp(qc, qin, sizeof *qc * ni) == 0,
                      "case %zu: the quantized input differs from quant_forward's", ci);
            free(qc);
            /* exact: the codes' sums in double, times the steps */
            double worst_c = 0, worst_f = 0;
            const conv2d_dims *d = &c.d;
            for (int n = 0; n < d->n; n++)
                for (int o = 0; o < d->oc; o++)
                    for (int y = 0; y < d->oh; y++)
                        for (int x = 0; x < d->ow; x++) {
                            long sum = 0;
                            for (int ic = 0; ic < d->ic; ic++)
                                for (int ki = 0; ki < 3; ki++)
                                    for (int kj = 0; kj < 3; kj++) {
                                        int iy = y + ki - 1, ix = x + kj - 1;
                                        if (iy < 0 || iy >= d->ih || ix < 0 || ix >= d->iw)
                                            continue;
                                        sum += (long)ca[((size_t)(n * d->ic + ic) * d->ih + iy) * d->iw + ix] *
                                               cw[((size_t)(o * d->ic + ic) * 3 + ki) * 3 + kj];
                                    }
                            double ref = (double)sum * sa * sw[per_channel ? o : 0] +
                                         (c.b ? c.b[o] : 0.0);
                            size_t at = ((size_t)(n * d->oc + o) * d->oh + y) * d->ow + x;
                            double scale = fmax(fabs(ref), 1.0);
                            worst_c = fmax(worst_c, fabs(out_c[at] - ref) / scale);
                            worst_f = fmax(worst_f, fabs(out_f[at] - ref) / scale);
                        }
            printf("conv2d codes case %zu%s: vs exact %.3g (float path %.3g)\n", ci,
                   per_channel ? " per-channel" : "", worst_c, worst_f);
            cr_expect_leq(worst_c, 1e-6, "case %zu codes vs exact", ci);
            cr_expect_leq(worst_f, 1e-5, "case %zu float vs exact", ci);
            free(qin), free(qw), free(out_f), free(out_c), free(ca), free(cw);
            conv_ctx_free(&c);
        }
    }
}

/* conv2d_backward_ex = the layers' own backwards one after the other: the
 * batch norm after the conv (with and without its ReLU) storing the conv's
 * output gradient, conv2d_backward_overwrite into dqin, the activation
 * quantizer's quant_backward(_overwrite) from dqin. The same input gradient
 * bit for bit (=, += and none), the same weight, bias, gamma and beta
 * gradients, the step gradient to double rounding; 2, 3 and 4 bits, odd
 * channel counts, 7x7 to 28x28 planes, batches that split unevenly over the
 * threads' groups; refused, writing nothing, off the direct path. */
Test(layers, conv2d_backward_ex_matches_the_layers_one_by_one)
{
    /* the fusions are the engine's own kernels: compared with the same */
    conv2d_set_backend(CONV2D_BACKEND_OWN);
    use_threads(2, 1);
    rng_seed(12);
    const int cases[][6] = {/* n, ic, h, oc, bits, bias */
                            {3, 16, 28, 8, 2, 0}, {17, 5, 14, 6, 3, 1}, {5, 64, 7, 16, 2, 0},
                            {2, 3, 9, 4, 4, 1},  {33, 8, 7, 8, 2, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int *k = cases[ci];
        conv_ctx c;
        conv_ctx_init(&c, k[0], k[1], k[2], k[2], k[3], 3, 3, 1, 1, k[5]);
        const size_t ni = conv_in_n(&c.d), nw = conv_w_n(&c.d), no = conv_out_n(&c.d);
        const int oc = c.d.oc, p = c.d.oh * c.d.ow;
        quant_range r;
        quant_range_init(&r, k[4], 0);
        /* x after a ReLU, with values past the range's top; ties at .5 */
        const float s = 0.25f;
        for (size_t j = 0; j < ni; j++)
            c.in[j] = j % 7 == 0 ? 0.0f : 1.2f * (float)r.qp * s * (float)rng_unit();
        for (size_t j = 0; j < ni; j += 11) c.in[j] = 0.5f * s;
        float *q = zeros(ni);
        quant_forward(q, NULL, c.in, &s, NULL, 1, ni, &r);
        /* the batch norm after the conv: its input, statistics, parameters */
        float *y = zeros(no), *yn = zeros(no), *gamma = rand_buf((size_t)oc, 0.5f, 1.5f);
        float *beta = rand_buf((size_t)oc, -0.5f, 0.5f), *mean = zeros((size_t)oc);
        float *rstd = zeros((size_t)oc), *coef = zeros((size_t)oc * BN_COEFS);
        conv2d_forward(y, q, c.w, c.b, &c.d, c.scratch);
        batchnorm_forward_train(yn, mean, rstd, NULL, NULL, y, gamma, beta, c.d.n, oc, p, 0.1f,
                                1e-5f, bn_work(c.d.n, oc));
        float *gz = rand_buf(no, -1, 1);
        const float g = quant_grad_scale_paper(ni, &r);
        double *qsums = calloc(2 * (size_t)c.d.n, sizeof *qsums);
        for (int mode = 0; mode < 3 * 2 * 3; mode++) {
            const int dxm = mode % 3;       /* dx =, dx +=, no dx */
            const int quant = mode / 3 % 2; /* through the quantizer */
            const int bn = mode / 6;        /* none, batch norm, batch norm + ReLU */
            const float *bt = bn == 2 ? beta : NULL;
            float *dq = zeros(ni), *dy = zeros(no), *dx[2], *dw[2], *db[2], *dgb[2];
            float dstep[2] = {0.5f, 0.5f};
            for (int v = 0; v < 2; v++) {
                dx[v] = rand_buf(ni, -1, 1);
                dw[v] = zeros(nw);
                db[v] = zeros((size_t)oc);
                dgb[v] = zeros(2 * (size_t)oc);
            }
            memcpy(dx[1], dx[0], sizeof(float) * ni);
            float *x0 = dxm == 2 ? NULL : dx[0], *x1 = dxm == 2 ? NULL : dx[1];
            /* one after the other */
            const float *dout = gz;
            if (bn == 2)
                batchnorm_relu_backward_overwrite(dy, dgb[0], dgb[0] + oc, gz, y, mean, rstd,
                                                  gamma, beta, c.d.n, oc, p,
                                                  bn_work(c.d.n, oc));
            else if (bn)
                batchnorm_backward_overwrite(dy, dgb[0], dgb[0] + oc, gz, y, mean, rstd, gamma,
                                             c.d.n, oc, p, bn_work(c.d.n, oc));
            if (bn) dout = dy;
            if (quant) {
                conv2d_backward_overwrite(dq, dw[0], k[5] ? db[0] : NULL, dout, q, c.w, &c.d,
                                          c.scratch);
                (dxm == 0 ? quant_backward_overwrite : quant_backward)(
                    x0, &dstep[0], NULL, dq, c.in, &s, NULL, &g, 1, ni, &r);
            } else {
                (dxm == 0 ? conv2d_backward_overwrite : conv2d_backward)(
                    x0, dw[0], k[5] ? db[0] : NULL, dout, q, c.w, &c.d, c.scratch);
            }
            /* in one */
            conv2d_back bk = {.in = q, .w = c.w, .dout = gz, .din = x1, .din_set = dxm == 0,
                              .dw = dw[1], .db = k[5] ? db[1] : NULL};
            if (bn) {
                batchnorm_backward_coef(coef, dgb[1], dgb[1] + oc, gz, bt, y, mean, rstd, gamma,
                                        c.d.n, oc, p, bn_work(c.d.n, oc));
                bk.bn_x = y, bk.bn_coef = coef;
            }
            if (quant) {
                bk.q_x = c.in, bk.q_s = s, bk.q_range = &r;
                bk.q_dstep = &dstep[1], bk.q_gscale = g, bk.q_sums = qsums;
            }
            cr_assert_eq(conv2d_backward_ex(&bk, &c.d, c.scratch), 0, "case %zu mode %d", ci,
                         mode);
            if (x0)
                cr_expect_eq(memcmp(dx[0], dx[1], sizeof(float) * ni), 0, "case %zu mode %d dx",
                             ci, mode);
            cr_expect_eq(memcmp(dw[0], dw[1], sizeof(float) * nw), 0, "case %zu mode %d dw", ci,
                         mode);
            cr_expect_eq(memcmp(db[0], db[1], sizeof(float) * (size_t)oc), 0,
                         "case %zu mode %d db", ci, mode);
            cr_expect_eq(memcmp(dgb[0], dgb[1], sizeof(float) * 2 * (size_t)oc), 0,
                         "case %zu mode %d dgamma, dbeta", ci, mode);
            cr_expect_float_eq(dstep[1], dstep[0], 1e-6f * fabsf(dstep[0] - 0.5f) + 1e-7f,
                               "case %zu mode %d dstep %.9g vs %.9g", ci, mode, dstep[1],
                               dstep[0]);
            cr_expect(quant ? dstep[0] != 0.5f : dstep[0] == 0.5f && dstep[1] == 0.5f,
                      "case %zu mode %d: a step gradient exactly when quantized", ci, mode);
            for (int v = 0; v < 2; v++) free(dx[v]), free(dw[v]), free(db[v]), free(dgb[v]);
            free(dq), free(dy);
        }
        free(q), free(gz), free(y), free(yn), free(gamma), free(beta), free(mean), free(rstd);
        free(coef), free(qsums);
        conv_ctx_free(&c);
    }
    /* stride 2: not the direct path; nothing written */
    conv_ctx c;
    conv_ctx_init(&c, 2, 4, 8, 8, 4, 3, 3, 2, 1, 0);
    quant_range r;
    quant_range_init(&r, 2, 0);
    const size_t ni = conv_in_n(&c.d), nw = conv_w_n(&c.d);
    float *dx = zeros(ni), *dw = zeros(nw), dstep = 0.0f, coef[4 * BN_COEFS] = {0};
    double qsums[4];
    cr_expect_eq(conv2d_backward_fuses(&c.d), 0);
    conv2d_back bk = {.in = c.in, .w = c.w, .dout = c.r, .din = dx, .din_set = 1, .dw = dw,
                      .q_x = c.in, .q_s = 0.5f, .q_range = &r, .q_dstep = &dstep,
                      .q_gscale = 1.0f, .q_sums = qsums};
    cr_expect_eq(conv2d_backward_ex(&bk, &c.d, c.scratch), -1);
    bk.q_range = NULL, bk.bn_x = c.out, bk.bn_coef = coef;
    cr_expect_eq(conv2d_backward_ex(&bk, &c.d, c.scratch), -1);
    for (size_t j = 0; j < ni; j++) cr_assert_eq(dx[j], 0.0f);
    for (size_t j = 0; j < nw; j++) cr_assert_eq(dw[j], 0.0f);
    cr_expect_eq(dstep, 0.0f);
    free(dx), free(dw);
    conv_ctx_free(&c);
}

/* Where the integer forward does not apply it says so and writes nothing;
 * a NaN in one image makes that image's output NaN and leaves the others,
 * and the quantized input is still quant_forward's (NaN where it was). */
Test(layers, conv2d_forward_codes_limits)
{
    use_threads(2, 1);
    rng_seed(10);
    conv_ctx c;
    conv_ctx_init(&c, 3, 64, 7, 7, 8, 3, 3, 1, 1, 0);
    const size_t ni = conv_in_n(&c.d), nw = conv_w_n(&c.d), no = conv_out_n(&c.d);
    int32_t *cw = calloc(nw, sizeof *cw);
    for (size_t j = 0; j < nw; j++) cw[j] = (int32_t)(j % 4) - 2;
    for (size_t j = 0; j < ni; j++) c.in[j] = (float)rng_unit();
    const float sa = 0.1f, sw = 0.2f;
    float *out = zeros(no);
    for (size_t j = 0; j < no; j++) out[j] = 7.0f;
    quant_range ra, rw, ra4, rw4, ra_signed;
    quant_range_init(&ra, 2, 0);
    quant_range_init(&rw, 2, 1);
    quant_range_init(&ra4, 4, 0);
    quant_range_init(&rw4, 4, 1);
    quant_range_init(&ra_signed, 2, 1);
    /* K = 576 taps: 4-bit sums (288 pairs x 2 x 15 x 8) could leave int16 */
    cr_expect_eq(conv2d_forward_codes(out, NULL, c.in, sa, &ra4, cw, &sw, 1, &rw4, NULL, &c.d,
                                      c.scratch),
                 -1);
    cr_expect_eq(conv2d_forward_codes(out, NULL, c.in, 0.0f, &ra, cw, &sw, 1, &rw, NULL, &c.d,
                                      c.scratch),
                 -1);
    cr_expect_eq(conv2d_forward_codes(out, NULL, c.in, sa, &ra_signed, cw, &sw, 1, &rw, NULL,
                                      &c.d, c.scratch),
                 -1, "signed input codes have no integer forward");
    cr_expect_eq(conv2d_forward_codes(out, NULL, c.in, sa, &ra, cw, &sw, 2, &rw, NULL, &c.d,
                                      c.scratch),
                 -1, "steps neither per tensor nor per output channel");
    conv2d_dims s2;
    conv2d_dims_init(&s2, 3, 64, 7, 7, 8, 3, 3, 2, 1);
    cr_expect_eq(conv2d_forward_codes(out, NULL, c.in, sa, &ra, cw, &sw, 1, &rw, NULL, &s2,
                                      c.scratch),
                 -1, "stride 2 has no integer forward");
    for (size_t j = 0; j < no; j++) cr_assert_eq(out[j], 7.0f, "written although refused");
    c.in[ni / 3 + 5] = NAN; /* in image 1 */
    float *q = zeros(ni), *qref = zeros(ni);
    quant_forward(qref, NULL, c.in, &sa, NULL, 1, ni, &ra);
    cr_assert_eq(conv2d_forward_codes(out, q, c.in, sa, &ra, cw, &sw, 1, &rw, NULL, &c.d,
                                      c.scratch),
                 0);
    cr_expect(isnan(q[ni / 3 + 5]));
    for (size_t j = 0; j < ni; j++)
        if (j != ni / 3 + 5) cr_assert_eq(q[j], qref[j], "quantized input at %zu", j);
    free(q), free(qref);
    const size_t per = no / 3;
    for (size_t j = 0; j < no; j++) {
        if (j >= per && j < 2 * per)
            cr_assert(isnan(out[j]), "image 1 holds a NaN: its output is NaN");
        else
            cr_assert(isfinite(out[j]), "images 0 and 2 are finite");
    }
    free(out), free(cw);
    conv_ctx_free(&c);
}

/* conv2d_backward_overwrite writes din whole, on both paths and the strided and
 * 1x1 shapes of the im2col path: it equals conv2d_backward into zeros,
 * whatever din held before (here NaN). */
Test(layers, conv2d_backward_overwrite_overwrites)
{
    use_threads(2, 1);
    rng_seed(7);
    static const int cases[][10] = {
        {3, 16, 28, 28, 16, 3, 3, 1, 1, 0}, {2, 64, 7, 7, 64, 3, 3, 1, 1, 1},
        {20, 5, 9, 7, 7, 3, 3, 1, 1, 1},    {3, 16, 28, 28, 32, 3, 3, 2, 1, 0},
        {3, 16, 14, 14, 32, 1, 1, 2, 0, 0}, {2, 8, 5, 5, 4, 1, 1, 1, 0, 1},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int *k = cases[ci];
        conv_ctx c;
        conv_ctx_init(&c, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9]);
        size_t ni = conv_in_n(&c.d), nw = conv_w_n(&c.d);
        for (int path = 0; path < 2; path++) {
            conv2d_set_path(path ? CONV2D_PATH_GEMM : CONV2D_PATH_AUTO);
            float *acc = zeros(ni), *set = malloc(sizeof *set * ni);
            float *dw0 = zeros(nw), *dw1 = zeros(nw);
            for (size_t j = 0; j < ni; j++) set[j] = NAN;
            conv2d_backward(acc, dw0, NULL, c.r, c.in, c.w, &c.d, c.scratch);
            conv2d_backward_overwrite(set, dw1, NULL, c.r, c.in, c.w, &c.d, c.scratch);
            double e = max_abs_diff(acc, set, ni), ew = max_abs_diff(dw0, dw1, nw);
            cr_expect(e == 0.0, "case %zu path %d: din differs by %g", ci, path, e);
            cr_expect(ew == 0.0, "case %zu path %d: dw differs by %g", ci, path, ew);
            free(acc), free(set), free(dw0), free(dw1);
        }
        conv2d_set_path(CONV2D_PATH_AUTO);
        conv_ctx_free(&c);
    }
}

/* Each *_overwrite backward equals its accumulating twin run into zeros,
 * whatever din held before (NaN here). */
Test(layers, overwrite_variants_match_accumulate)
{
    use_threads(2, 1);
    rng_seed(8);
    const int n = 3, c = 5, hw = 37;
    const size_t cnt = (size_t)n * c * hw;
    float *in = rand_buf(cnt, -1, 1), *dout = rand_buf(cnt, -1, 1), *out = zeros(cnt);
    float *gamma = rand_buf((size_t)c, 0.5f, 1.5f), *beta = rand_buf((size_t)c, -0.5f, 0.5f);
    float *mean = zeros((size_t)c), *rstd = zeros((size_t)c);
    float *acc = zeros(cnt), *set = malloc(sizeof *set * cnt), *acc2 = zeros(cnt);
    float *set2 = malloc(sizeof *set2 * cnt);
    float *dg0 = zeros((size_t)c), *db0 = zeros((size_t)c), *dg1 = zeros((size_t)c),
          *db1 = zeros((size_t)c);
    cr_assert(set && set2);
#define NANFILL(p) for (size_t j = 0; j < cnt; j++) (p)[j] = NAN
    /* relu */
    relu_forward(out, in, cnt);
    NANFILL(set);
    relu_backward(acc, dout, out, cnt);
    relu_backward_overwrite(set, dout, out, cnt);
    cr_expect(max_abs_diff(acc, set, cnt) == 0.0, "relu");
    /* add: each side on its own */
    memset(acc, 0, sizeof *acc * cnt), memset(acc2, 0, sizeof *acc2 * cnt);
    NANFILL(set);
    for (size_t j = 0; j < cnt; j++) set2[j] = 1.0f;
    add_backward(acc, acc2, dout, cnt);
    add_backward_overwrite(set, 1, set2, 0, dout, cnt);
    cr_expect(max_abs_diff(acc, set, cnt) == 0.0, "add, a set");
    for (size_t j = 0; j < cnt; j++) acc2[j] += 1.0f;
    cr_expect(max_abs_diff(acc2, set2, cnt) == 0.0, "add, b added to");
    /* avgpool: dout is (N, C) */
    memset(acc, 0, sizeof *acc * cnt);
    NANFILL(set);
    avgpool_backward(acc, dout, n, c, hw);
    avgpool_backward_overwrite(set, dout, n, c, hw);
    cr_expect(max_abs_diff(acc, set, cnt) == 0.0, "avgpool");
    /* batch norm, plain and fused with a ReLU */
    batchnorm_forward_train(out, mean, rstd, NULL, NULL, in, gamma, beta, n, c, hw, 0.1f,
                            1e-5f, bn_work(n, c));
    memset(acc, 0, sizeof *acc * cnt);
    NANFILL(set);
    batchnorm_backward(acc, dg0, db0, dout, in, mean, rstd, gamma, n, c, hw, bn_work(n, c));
    batchnorm_backward_overwrite(set, dg1, db1, dout, in, mean, rstd, gamma, n, c, hw,
                                 bn_work(n, c));
    cr_expect(max_abs_diff(acc, set, cnt) == 0.0, "batchnorm din");
    cr_expect(max_abs_diff(dg0, dg1, (size_t)c) == 0.0, "batchnorm dgamma");
    cr_expect(max_abs_diff(db0, db1, (size_t)c) == 0.0, "batchnorm dbeta");
    /* batch norm + ReLU fused: its backward (mask recomputed from the input)
     * equals ReLU backward on the fused forward's output, then batch norm
     * backward */
    float *gr = zeros(cnt);
    memset(dg0, 0, sizeof *dg0 * c), memset(db0, 0, sizeof *db0 * c);
    memset(dg1, 0, sizeof *dg1 * c), memset(db1, 0, sizeof *db1 * c);
    batchnorm_relu_forward_train(out, mean, rstd, NULL, NULL, in, gamma, beta, n, c, hw, 0.1f,
                                 1e-5f, bn_work(n, c));
    relu_backward(gr, dout, out, cnt);
    memset(acc, 0, sizeof *acc * cnt);
    batchnorm_backward(acc, dg0, db0, gr, in, mean, rstd, gamma, n, c, hw, bn_work(n, c));
    NANFILL(set);
    batchnorm_relu_backward_overwrite(set, dg1, db1, dout, in, mean, rstd, gamma, beta, n, c,
                                      hw, bn_work(n, c));
    cr_expect(max_abs_diff(acc, set, cnt) <= 1e-6, "batchnorm+relu din");
    cr_expect(max_abs_diff(dg0, dg1, (size_t)c) <= 1e-6, "batchnorm+relu dgamma");
    cr_expect(max_abs_diff(db0, db1, (size_t)c) <= 1e-6, "batchnorm+relu dbeta");
    for (size_t j = 0; j < cnt; j++) set[j] = acc[j] = 0.5f;
    batchnorm_backward(acc, NULL, NULL, gr, in, mean, rstd, gamma, n, c, hw, bn_work(n, c));
    batchnorm_relu_backward(set, NULL, NULL, dout, in, mean, rstd, gamma, beta, n, c, hw,
                            bn_work(n, c));
    cr_expect(max_abs_diff(acc, set, cnt) <= 1e-6, "batchnorm+relu din, added to");
    free(gr);
    /* add + ReLU fused: the composition, exactly; a set, b added to */
    float *bb = rand_buf(cnt, -1, 1), *fused = zeros(cnt), *sum = zeros(cnt);
    add_forward(sum, in, bb, cnt);
    relu_forward(out, sum, cnt);
    add_relu_forward(fused, in, bb, cnt);
    cr_expect(max_abs_diff(out, fused, cnt) == 0.0, "add+relu forward");
    memset(acc, 0, sizeof *acc * cnt), memset(sum, 0, sizeof *sum * cnt);
    relu_backward(sum, dout, out, cnt);
    for (size_t j = 0; j < cnt; j++) acc[j] = sum[j], acc2[j] = 1.0f + sum[j];
    NANFILL(set);
    for (size_t j = 0; j < cnt; j++) set2[j] = 1.0f;
    add_relu_backward(set, 1, set2, 0, dout, fused, cnt);
    cr_expect(max_abs_diff(acc, set, cnt) == 0.0, "add+relu backward, a set");
    cr_expect(max_abs_diff(acc2, set2, cnt) == 0.0, "add+relu backward, b added to");
    /* both set (a residual block's two branches): the one-pass loop */
    NANFILL(set);
    NANFILL(set2);
    add_relu_backward(set, 1, set2, 1, dout, fused, cnt);
    cr_expect(max_abs_diff(acc, set, cnt) == 0.0, "add+relu backward, both set: a");
    cr_expect(max_abs_diff(acc, set2, cnt) == 0.0, "add+relu backward, both set: b");
    free(bb), free(fused), free(sum);
#undef NANFILL
    free(in), free(dout), free(out), free(gamma), free(beta), free(mean), free(rstd);
    free(acc), free(set), free(acc2), free(set2), free(dg0), free(db0), free(dg1), free(db1);
}

/* The direct path's kernels on their own, against plain loops in double,
 * at sizes that leave every partial block: rows not a multiple of 4, taps
 * not a multiple of 3, lengths not a multiple of 8. */
Test(layers, dconv_kernels_match_loops)
{
    rng_seed(6);
    const int sizes[][3] = {{1, 1, 1},   {4, 3, 8},     {7, 10, 13},
                            {9, 5, 30},  {16, 27, 100}, {5, 4, 40}};
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++) {
        const int m = sizes[t][0], k = sizes[t][1], n = sizes[t][2];
        /* columns in blocks of DCONV_NB, then a tail of 8 or 16 */
        const int nb = (n + 7) / 8 * 8;
        int *off = malloc(sizeof *off * (size_t)k);
        int span = 0;
        for (int kk = 0; kk < k; kk++) {
            off[kk] = (kk * 7) % 23 + kk; /* uneven, overlapping offsets */
            if (off[kk] > span) span = off[kk];
        }
        size_t nbuf = (size_t)span + nb + 8;
        float *b = rand_buf(nbuf, -1, 1), *a = rand_buf((size_t)m * k, -1, 1);
        float *dd = rand_buf((size_t)m * n, -1, 1);
        float *ap = zeros(dconv_packed_floats(m, k)), *c = zeros((size_t)m * nb);
        float *dw = rand_buf((size_t)m * k, -1, 1), *dw0 = malloc(sizeof *dw0 * (size_t)m * k);
        memcpy(dw0, dw, sizeof *dw0 * (size_t)m * k);
        dconv_pack_a(ap, a, m, k, (size_t)k);
        dconv_gemm(c, (size_t)nb, ap, m, k, b, off, nb);
        /* add = 0 writes over dw (NaN here); then add = 1 adds to dw0's copy */
        float *dws = malloc(sizeof *dws * (size_t)m * k);
        for (int j = 0; j < m * k; j++) dws[j] = NAN;
        dconv_wgrad(dws, (size_t)k, m, k, dd, (size_t)n, b, off, n, 0);
        dconv_wgrad(dw, (size_t)k, m, k, dd, (size_t)n, b, off, n, 1);
        double eset = 0;
        for (int j = 0; j < m * k; j++) {
            double e = fabs((double)dws[j] + dw0[j] - dw[j]);
            if (!(e <= eset)) eset = e;
        }
        cr_expect_leq(eset, 1e-5, "size %zu: add = 0 and add = 1 disagree by %g", t, eset);
        free(dws);
        double eg = 0, ew = 0;
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int kk = 0; kk < k; kk++) s += (double)a[i * k + kk] * b[off[kk] + j];
                eg = fmax(eg, fabs(c[(size_t)i * nb + j] - s));
            }
            for (int kk = 0; kk < k; kk++) {
                double s = dw0[i * k + kk];
                for (int j = 0; j < n; j++) s += (double)dd[i * n + j] * b[off[kk] + j];
                ew = fmax(ew, fabs(dw[i * k + kk] - s));
            }
        }
        printf("dconv m %d k %d n %d: gemm max diff %.3g, wgrad %.3g\n", m, k, n, eg, ew);
        cr_expect_leq(eg, 1e-5, "gemm m %d k %d n %d", m, k, n);
        cr_expect_leq(ew, 1e-5, "wgrad m %d k %d n %d", m, k, n);
        free(off), free(b), free(a), free(dd), free(ap), free(c), free(dw), free(dw0);
    }
}

Test(layers, conv2d_backward_accumulates_and_repeats)
{
    use_threads(2, 1);
    rng_seed(3);
    conv_ctx c;
    conv_ctx_init(&c, 4, 3, 9, 9, 5, 3, 3, 1, 1, 1);
    size_t ni = conv_in_n(&c.d), nw = conv_w_n(&c.d);
    float *din1 = zeros(ni), *dw1 = zeros(nw), *db1 = zeros(5);
    float *din2 = zeros(ni), *dw2 = zeros(nw), *db2 = zeros(5);
    conv2d_backward(din1, dw1, db1, c.r, c.in, c.w, &c.d, c.scratch);
    /* same call again into fresh buffers: bit-identical */
    conv2d_backward(din2, dw2, db2, c.r, c.in, c.w, &c.d, c.scratch);
    cr_expect_arr_eq(din1, din2, sizeof *din1 * ni);
    cr_expect_arr_eq(dw1, dw2, sizeof *dw1 * nw);
    cr_expect_arr_eq(db1, db2, sizeof *db1 * 5);
    /* and again on top: the gradient doubles */
    conv2d_backward(din2, dw2, db2, c.r, c.in, c.w, &c.d, c.scratch);
    for (size_t i = 0; i < ni; i++) cr_expect_float_eq(din2[i], 2 * din1[i], 1e-5f * (1 + fabsf(din1[i])));
    for (size_t i = 0; i < nw; i++) cr_expect_float_eq(dw2[i], 2 * dw1[i], 1e-5f * (1 + fabsf(dw1[i])));
    for (size_t i = 0; i < 5; i++) cr_expect_float_eq(db2[i], 2 * db1[i], 1e-5f * (1 + fabsf(db1[i])));
    /* NULL gradients are skipped, the others unchanged by their absence */
    float *dw3 = zeros(nw);
    conv2d_backward(NULL, dw3, NULL, c.r, c.in, c.w, &c.d, c.scratch);
    cr_expect_arr_eq(dw1, dw3, sizeof *dw1 * nw);
    /* forward repeats bit for bit */
    float *o1 = zeros(conv_out_n(&c.d));
    conv2d_forward(o1, c.in, c.w, c.b, &c.d, c.scratch);
    conv2d_forward(c.out, c.in, c.w, c.b, &c.d, c.scratch);
    cr_expect_arr_eq(o1, c.out, sizeof *o1 * conv_out_n(&c.d));
    free(din1); free(dw1); free(db1); free(din2); free(dw2); free(db2);
    free(dw3); free(o1);
    conv_ctx_free(&c);
}

/* ---- grouped and dilated conv2d ---- */

static size_t gconv_w_n(const conv2d_dims *d)
{
    return (size_t)d->oc * (d->ic / d->groups) * d->kh * d->kw;
}

static void gconv_ctx_init(conv_ctx *c, const int *k)
{
    /* n, ic, ih, iw, oc, kernel, stride, pad, dilation, groups, bias */
    cr_assert_eq(conv2d_dims_init_ex(&c->d, k[0], k[1], k[2], k[3], k[4], k[5], k[5], k[6], k[7],
                                     k[8], k[9]),
                 0);
    c->in = rand_buf(conv_in_n(&c->d), -1, 1);
    c->w = rand_buf(gconv_w_n(&c->d), -1, 1);
    c->b = k[10] ? rand_buf((size_t)c->d.oc, -1, 1) : NULL;
    c->out = zeros(conv_out_n(&c->d));
    c->r = rand_buf(conv_out_n(&c->d), -1, 1);
    c->scratch = zeros(conv2d_scratch_floats(&c->d));
}

/* Grouped, dilated convolution in double, as PyTorch's F.conv2d. */
static void gconv_ref(double *out, const conv_ctx *c)
{
    const conv2d_dims *d = &c->d;
    const int icg = d->ic / d->groups, ocg = d->oc / d->groups;
    for (int n = 0; n < d->n; n++)
        for (int o = 0; o < d->oc; o++)
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    double s = c->b ? c->b[o] : 0.0;
                    for (int j = 0; j < icg; j++) {
                        const int ci = o / ocg * icg + j;
                        for (int ki = 0; ki < d->kh; ki++)
                            for (int kj = 0; kj < d->kw; kj++) {
                                int iy = oy * d->stride + ki * d->dilation - d->pad;
                                int ix = ox * d->stride + kj * d->dilation - d->pad;
                                if (iy < 0 || iy >= d->ih || ix < 0 || ix >= d->iw) continue;
                                s += (double)c->in[((size_t)(n * d->ic + ci) * d->ih + iy) * d->iw + ix] *
                                     c->w[((size_t)(o * icg + j) * d->kh + ki) * d->kw + kj];
                            }
                    }
                    out[((size_t)(n * d->oc + o) * d->oh + oy) * d->ow + ox] = s;
                }
}

static const int GCONV_CASES[][11] = {
    /* n, ic, ih, iw, oc, kernel, stride, pad, dilation, groups, bias */
    {2, 4, 7, 6, 4, 3, 1, 1, 1, 4, 1},     /* depthwise 3x3 */
    {3, 5, 9, 8, 5, 3, 2, 1, 1, 5, 0},     /* depthwise, stride 2 (MobileNetV2) */
    {2, 3, 6, 7, 6, 3, 1, 1, 1, 3, 1},     /* depthwise, channel multiplier 2 */
    {2, 4, 9, 9, 4, 3, 1, 2, 2, 4, 1},     /* depthwise, dilation 2 */
    {1, 3, 8, 7, 3, 5, 2, 2, 1, 3, 1},     /* depthwise 5x5, stride 2 */
    {4, 32, 14, 14, 32, 3, 1, 1, 1, 32, 1}, /* depthwise, large enough to fork */
    {2, 6, 7, 7, 4, 3, 1, 1, 1, 2, 1},     /* two groups */
    {2, 8, 5, 6, 12, 1, 1, 0, 1, 4, 0},    /* grouped pointwise (ShuffleNet) */
    {2, 3, 9, 8, 4, 3, 1, 2, 2, 1, 1},     /* dense, dilation 2 */
    {2, 6, 10, 9, 6, 3, 2, 2, 2, 3, 1},    /* grouped, dilated, strided */
    {1, 4, 3, 3, 4, 3, 1, 0, 1, 2, 0},     /* one output position */
};
#define N_GCONV_CASES (sizeof GCONV_CASES / sizeof *GCONV_CASES)

Test(layers, conv2d_grouped_dims)
{
    conv2d_dims d;
    cr_assert_eq(conv2d_dims_init_ex(&d, 2, 32, 28, 28, 32, 3, 3, 2, 1, 1, 32), 0);
    cr_expect(d.oh == 14 && d.ow == 14 && d.groups == 32 && d.dilation == 1);
    /* the dilated 3x3 spans 5: 9 + 4 - 5 + 1 = 9 */
    cr_assert_eq(conv2d_dims_init_ex(&d, 1, 4, 9, 9, 4, 3, 3, 1, 2, 2, 1), 0);
    cr_expect(d.oh == 9 && d.ow == 9);
    cr_expect_eq(conv2d_dims_init_ex(&d, 1, 6, 9, 9, 4, 3, 3, 1, 1, 1, 4), -1, "IC % groups");
    cr_expect_eq(conv2d_dims_init_ex(&d, 1, 4, 9, 9, 6, 3, 3, 1, 1, 1, 4), -1, "OC % groups");
    cr_expect_eq(conv2d_dims_init_ex(&d, 1, 4, 4, 4, 4, 3, 3, 1, 0, 2, 1), -1, "span 5 > 4");
    cr_expect_eq(conv2d_dims_init_ex(&d, 1, 4, 8, 8, 4, 3, 3, 1, 0, 0, 1), -1, "dilation 0");
    cr_assert_eq(conv2d_dims_init(&d, 1, 4, 8, 8, 4, 3, 3, 1, 1), 0);
    cr_expect(d.groups == 1 && d.dilation == 1);
}

Test(layers, conv2d_grouped_forward_matches_direct)
{
    use_threads(2, 1);
    rng_seed(21);
    for (size_t i = 0; i < N_GCONV_CASES; i++) {
        conv_ctx c;
        gconv_ctx_init(&c, GCONV_CASES[i]);
        double *ref = malloc(sizeof *ref * conv_out_n(&c.d));
        gconv_ref(ref, &c);
        conv_loss(&c);
        double rel = max_rel_diff(c.out, ref, conv_out_n(&c.d));
        printf("conv2d grouped forward case %zu: max rel diff %.3g\n", i, rel);
        cr_expect_leq(rel, 1e-5, "case %zu", i);
        free(ref);
        conv_ctx_free(&c);
    }
}

Test(layers, conv2d_grouped_gradcheck)
{
    use_threads(2, 1);
    rng_seed(22);
    for (size_t i = 0; i < N_GCONV_CASES; i++) {
        conv_ctx c;
        gconv_ctx_init(&c, GCONV_CASES[i]);
        const size_t ni = conv_in_n(&c.d), nw = gconv_w_n(&c.d);
        float *din = zeros(ni), *dw = zeros(nw), *db = zeros((size_t)c.d.oc);
        conv2d_backward(din, dw, c.b ? db : NULL, c.r, c.in, c.w, &c.d, c.scratch);
        char name[64];
        snprintf(name, sizeof name, "conv2d grouped case %zu din", i);
        cr_expect_leq(gradcheck(name, c.in, din, ni, conv_loss, &c, 1e-2f, 60), FD_TOL);
        snprintf(name, sizeof name, "conv2d grouped case %zu dw", i);
        cr_expect_leq(gradcheck(name, c.w, dw, nw, conv_loss, &c, 1e-2f, 60), FD_TOL);
        if (c.b) {
            snprintf(name, sizeof name, "conv2d grouped case %zu db", i);
            cr_expect_leq(gradcheck(name, c.b, db, (size_t)c.d.oc, conv_loss, &c, 1e-2f, 60),
                          FD_TOL);
        }
        free(din), free(dw), free(db);
        conv_ctx_free(&c);
    }
}

/* The grouped paths keep the kernel conventions: backward accumulates and
 * conv2d_backward_overwrite overwrites (din held NaN), and every result is
 * the same bits for one thread and for two. The integer forward and the
 * backward's fusions are refused, writing nothing: the caller runs the
 * float path. */
Test(layers, conv2d_grouped_accumulates_repeats_and_refuses_fusions)
{
    /* the same bits for any thread count: a property of the engine's own
     * kernels, not of oneDNN's (test_dnnl_conv.c checks its conventions) */
    conv2d_set_backend(CONV2D_BACKEND_OWN);
    rng_seed(23);
    for (size_t i = 0; i < N_GCONV_CASES; i++) {
        conv_ctx c;
        gconv_ctx_init(&c, GCONV_CASES[i]);
        const size_t ni = conv_in_n(&c.d), nw = gconv_w_n(&c.d), no = conv_out_n(&c.d);
        const size_t oc = (size_t)c.d.oc;
        float *out[2], *din[2], *dw[2], *db[2];
        for (int t = 0; t < 2; t++) {
            use_threads(t + 1, 1);
            out[t] = zeros(no), din[t] = zeros(ni), dw[t] = zeros(nw), db[t] = zeros(oc);
            conv2d_forward(out[t], c.in, c.w, c.b, &c.d, c.scratch);
            conv2d_backward(din[t], dw[t], db[t], c.r, c.in, c.w, &c.d, c.scratch);
        }
        use_threads(2, 1);
        cr_expect_arr_eq(out[0], out[1], sizeof(float) * no, "case %zu: forward", i);
        cr_expect_arr_eq(din[0], din[1], sizeof(float) * ni, "case %zu: din", i);
        cr_expect_arr_eq(dw[0], dw[1], sizeof(float) * nw, "case %zu: dw", i);
        cr_expect_arr_eq(db[0], db[1], sizeof(float) * oc, "case %zu: db", i);
        /* on top: twice the gradient */
        conv2d_backward(din[1], dw[1], db[1], c.r, c.in, c.w, &c.d, c.scratch);
        double e = 0;
        for (size_t j = 0; j < ni; j++) e = fmax(e, fabs(din[1][j] - 2.0 * din[0][j]));
        for (size_t j = 0; j < nw; j++) e = fmax(e, fabs(dw[1][j] - 2.0 * dw[0][j]) / 8);
        for (size_t j = 0; j < oc; j++) e = fmax(e, fabs(db[1][j] - 2.0 * db[0][j]) / 8);
        cr_expect_leq(e, 1e-5, "case %zu: backward does not accumulate (%g)", i, e);
        /* overwrite: = what accumulating into zeros gives */
        for (size_t j = 0; j < ni; j++) din[1][j] = NAN;
        conv2d_backward_overwrite(din[1], NULL, NULL, c.r, c.in, c.w, &c.d, c.scratch);
        cr_expect_arr_eq(din[0], din[1], sizeof(float) * ni, "case %zu: overwrite", i);
        /* refusals */
        quant_range ra, rw;
        quant_range_init(&ra, 2, 0);
        quant_range_init(&rw, 2, 1);
        int32_t *cw = calloc(nw, sizeof *cw);
        const float sw = 0.1f;
        for (size_t j = 0; j < no; j++) out[1][j] = 7.0f;
        cr_expect_eq(conv2d_forward_codes(out[1], NULL, c.in, 0.25f, &ra, cw, &sw, 1, &rw, NULL,
                                          &c.d, c.scratch),
                     -1, "case %zu: grouped shapes have no integer forward", i);
        cr_expect_eq(conv2d_backward_fuses(&c.d), 0);
        float dstep = 0.0f;
        double sums[64];
        const conv2d_back bk = {.in = c.in, .w = c.w, .dout = c.r, .din = din[1], .q_x = c.in,
                                .q_s = 0.25f, .q_range = &ra, .q_dstep = &dstep, .q_gscale = 1.0f,
                                .q_sums = sums};
        cr_expect_eq(conv2d_backward_ex(&bk, &c.d, c.scratch), -1);
        for (size_t j = 0; j < no; j++) cr_assert_eq(out[1][j], 7.0f, "written although refused");
        cr_expect_arr_eq(din[0], din[1], sizeof(float) * ni, "case %zu: written although refused",
                         i);
        free(cw);
        for (int t = 0; t < 2; t++) free(out[t]), free(din[t]), free(dw[t]), free(db[t]);
        conv_ctx_free(&c);
    }
}

/* ---- linear ---- */

typedef struct {
    int n, in_f, out_f;
    float *in, *w, *b, *out, *r;
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    linear_forward(c->out, c->in, c->w, c->b, c->n, c->in_f, c->out_f);
    return dot(c->out, c->r, (size_t)c->n * c->out_f);
}

static void lin_check(int n, int in_f, int out_f, int bias)
{
    lin_ctx c = {n, in_f, out_f, rand_buf((size_t)n * in_f, -1, 1),
                 rand_buf((size_t)out_f * in_f, -1, 1),
                 bias ? rand_buf((size_t)out_f, -1, 1) : NULL,
                 zeros((size_t)n * out_f), rand_buf((size_t)n * out_f, -1, 1)};
    /* forward against a naive product */
    lin_loss(&c);
    double *ref = malloc(sizeof *ref * (size_t)n * out_f);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out_f; o++) {
            double s = c.b ? c.b[o] : 0.0;
            for (int j = 0; j < in_f; j++)
                s += (double)c.in[(size_t)i * in_f + j] * c.w[(size_t)o * in_f + j];
            ref[(size_t)i * out_f + o] = s;
        }
    double rel = max_rel_diff(c.out, ref, (size_t)n * out_f);
    printf("linear %dx%d->%d forward: max rel diff %.3g\n", n, in_f, out_f, rel);
    cr_expect_leq(rel, 1e-5);
    float *din = zeros((size_t)n * in_f), *dw = zeros((size_t)out_f * in_f);
    float *db = zeros((size_t)out_f);
    linear_backward(din, dw, c.b ? db : NULL, c.r, c.in, c.w, n, in_f, out_f);
    char name[64];
    snprintf(name, sizeof name, "linear %dx%d->%d din", n, in_f, out_f);
    cr_expect_leq(gradcheck(name, c.in, din, (size_t)n * in_f, lin_loss, &c, 1e-2f, 60), FD_TOL);
    snprintf(name, sizeof name, "linear %dx%d->%d dw", n, in_f, out_f);
    cr_expect_leq(gradcheck(name, c.w, dw, (size_t)out_f * in_f, lin_loss, &c, 1e-2f, 60), FD_TOL);
    if (c.b) {
        snprintf(name, sizeof name, "linear %dx%d->%d db", n, in_f, out_f);
        cr_expect_leq(gradcheck(name, c.b, db, (size_t)out_f, lin_loss, &c, 1e-2f, 60), FD_TOL);
    }
    /* accumulation: a second call doubles every gradient */
    float *dw2 = malloc(sizeof *dw2 * (size_t)out_f * in_f);
    memcpy(dw2, dw, sizeof *dw2 * (size_t)out_f * in_f);
    linear_backward(NULL, dw2, NULL, c.r, c.in, c.w, n, in_f, out_f);
    for (size_t i = 0; i < (size_t)out_f * in_f; i++)
        cr_expect_float_eq(dw2[i], 2 * dw[i], 1e-5f * (1 + fabsf(dw[i])));
    free(ref); free(din); free(dw); free(db); free(dw2);
    free(c.in); free(c.w); free(c.b); free(c.out); free(c.r);
}

Test(layers, linear_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(4);
    lin_check(3, 7, 5, 1);
    lin_check(1, 4, 3, 0);
    lin_check(64, 96, 80, 1); /* large enough to split over threads */
}

/* ---- batchnorm ---- */

typedef struct {
    int n, c, hw;
    float *in, *gamma, *beta, *out, *r, *mean, *rstd, *rm, *rv;
} bn_ctx;

static double bn_loss(void *p)
{
    bn_ctx *b = p;
    batchnorm_forward_train(b->out, b->mean, b->rstd, b->rm, b->rv, b->in,
                            b->gamma, b->beta, b->n, b->c, b->hw, 0.1f, 1e-5f,
                            bn_work(b->n, b->c));
    return dot(b->out, b->r, (size_t)b->n * b->c * b->hw);
}

static void bn_init(bn_ctx *b, int n, int c, int hw)
{
    size_t cnt = (size_t)n * c * hw;
    *b = (bn_ctx){n, c, hw, rand_buf(cnt, -2, 3), rand_buf((size_t)c, 0.5f, 1.5f),
                  rand_buf((size_t)c, -1, 1), zeros(cnt), rand_buf(cnt, -1, 1),
                  zeros((size_t)c), zeros((size_t)c), zeros((size_t)c), zeros((size_t)c)};
}

static void bn_free(bn_ctx *b)
{
    free(b->in); free(b->gamma); free(b->beta); free(b->out); free(b->r);
    free(b->mean); free(b->rstd); free(b->rm); free(b->rv);
}

/* A channel whose mean is far from zero relative to its spread (and whose
 * first plane is not typical of the rest) keeps its variance: the one-pass
 * moments are of x - k, k the first plane's mean. Double reference. */
Test(layers, batchnorm_variance_with_large_mean)
{
    use_threads(2, 1);
    rng_seed(9);
    const int n = 64, c = 2, hw = 49;
    const size_t cnt = (size_t)n * c * hw;
    float *in = rand_buf(cnt, -1, 1), *out = zeros(cnt);
    float gamma[2] = {1, 1}, beta[2] = {0, 0}, mean[2], rstd[2];
    for (size_t k = 0; k < cnt; k++) {
        int ch = (int)(k / hw % c), img = (int)(k / ((size_t)c * hw));
        /* channel 0: 1000 + U(-1, 1) * 0.01; channel 1: a first plane 5
         * spreads away from the rest */
        in[k] = ch == 0 ? 1000.0f + 0.01f * in[k] : in[k] + (img == 0 ? 10.0f : 0.0f);
    }
    batchnorm_forward_train(out, mean, rstd, NULL, NULL, in, gamma, beta, n, c, hw, 0.1f,
                            1e-8f, bn_work(n, c));
    for (int ch = 0; ch < c; ch++) {
        double s = 0, ss = 0, m = (double)n * hw;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) s += in[((size_t)i * c + ch) * hw + j];
        double mu = s / m;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                double dx = in[((size_t)i * c + ch) * hw + j] - mu;
                ss += dx * dx;
            }
        double want = 1.0 / sqrt(ss / m + 1e-8);
        printf("batchnorm large mean, channel %d: rstd %.7g want %.7g\n", ch, rstd[ch], want);
        cr_expect(fabs(rstd[ch] - want) <= 1e-4 * want, "channel %d: rstd %.7g want %.7g", ch,
                  rstd[ch], want);
    }
    free(in), free(out);
}

Test(layers, batchnorm_train_forward_and_running_stats)
{
    use_threads(2, 1);
    rng_seed(5);
    bn_ctx b;
    bn_init(&b, 4, 3, 10);
    for (int ch = 0; ch < 3; ch++) { b.rm[ch] = 0.5f; b.rv[ch] = 2.0f; }
    bn_loss(&b);
    double worst = 0.0;
    for (int ch = 0; ch < 3; ch++) {
        double s = 0, ss = 0, m = 4 * 10;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 10; j++) s += b.in[(i * 3 + ch) * 10 + j];
        double mean = s / m;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 10; j++) {
                double dx = b.in[(i * 3 + ch) * 10 + j] - mean;
                ss += dx * dx;
            }
        double rstd = 1.0 / sqrt(ss / m + 1e-5);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 10; j++) {
                size_t k = (size_t)(i * 3 + ch) * 10 + j;
                double ref = (b.in[k] - mean) * rstd * b.gamma[ch] + b.beta[ch];
                worst = fmax(worst, fabs(b.out[k] - ref));
            }
        cr_expect_float_eq(b.mean[ch], (float)mean, 1e-5f);
        cr_expect_float_eq(b.rstd[ch], (float)rstd, 1e-5f * (float)rstd);
        cr_expect_float_eq(b.rm[ch], (float)(0.9 * 0.5 + 0.1 * mean), 1e-5f);
        /* running variance from the UNBIASED batch variance */
        cr_expect_float_eq(b.rv[ch], (float)(0.9 * 2.0 + 0.1 * ss / (m - 1)), 1e-5f);
    }
    printf("batchnorm train forward: max abs diff %.3g\n", worst);
    cr_expect_leq(worst, 1e-5);

    /* eval uses the running statistics */
    batchnorm_forward_eval(b.out, b.in, b.gamma, b.beta, b.rm, b.rv, 4, 3, 10, 1e-5f);
    worst = 0.0;
    for (size_t k = 0; k < 120; k++) {
        int ch = (int)(k / 10 % 3);
        double ref = (b.in[k] - b.rm[ch]) / sqrt((double)b.rv[ch] + 1e-5) * b.gamma[ch] + b.beta[ch];
        worst = fmax(worst, fabs(b.out[k] - ref));
    }
    printf("batchnorm eval forward: max abs diff %.3g\n", worst);
    cr_expect_leq(worst, 1e-5);
    bn_free(&b);
}

Test(layers, batchnorm_gradcheck)
{
    use_threads(2, 1);
    rng_seed(6);
    static const int cases[][3] = {{4, 3, 10}, {1, 2, 9}, {8, 5, 49}}; /* last: parallel */
    for (size_t t = 0; t < 3; t++) {
        bn_ctx b;
        bn_init(&b, cases[t][0], cases[t][1], cases[t][2]);
        size_t cnt = (size_t)b.n * b.c * b.hw;
        float *din = zeros(cnt), *dg = zeros((size_t)b.c), *dbt = zeros((size_t)b.c);
        bn_loss(&b);
        batchnorm_backward(din, dg, dbt, b.r, b.in, b.mean, b.rstd, b.gamma, b.n, b.c, b.hw,
                           bn_work(b.n, b.c));
        char name[64];
        snprintf(name, sizeof name, "batchnorm %dx%dx%d din", b.n, b.c, b.hw);
        cr_expect_leq(gradcheck(name, b.in, din, cnt, bn_loss, &b, 1e-2f, 60), FD_TOL);
        snprintf(name, sizeof name, "batchnorm %dx%dx%d dgamma", b.n, b.c, b.hw);
        cr_expect_leq(gradcheck(name, b.gamma, dg, (size_t)b.c, bn_loss, &b, 1e-2f, 60), FD_TOL);
        snprintf(name, sizeof name, "batchnorm %dx%dx%d dbeta", b.n, b.c, b.hw);
        cr_expect_leq(gradcheck(name, b.beta, dbt, (size_t)b.c, bn_loss, &b, 1e-2f, 60), FD_TOL);
        /* accumulation */
        float *dg2 = malloc(sizeof *dg2 * (size_t)b.c);
        memcpy(dg2, dg, sizeof *dg2 * (size_t)b.c);
        batchnorm_backward(NULL, dg2, NULL, b.r, b.in, b.mean, b.rstd, b.gamma, b.n, b.c, b.hw,
                           bn_work(b.n, b.c));
        for (int ch = 0; ch < b.c; ch++)
            cr_expect_float_eq(dg2[ch], 2 * dg[ch], 1e-5f * (1 + fabsf(dg[ch])));
        free(din); free(dg); free(dbt); free(dg2);
        bn_free(&b);
    }
}

/* ---- relu, add ---- */

typedef struct {
    size_t n;
    float *in, *in2, *out, *r;
} ew_ctx;

static double relu_loss(void *p)
{
    ew_ctx *e = p;
    relu_forward(e->out, e->in, e->n);
    return dot(e->out, e->r, e->n);
}

static double add_loss(void *p)
{
    ew_ctx *e = p;
    add_forward(e->out, e->in, e->in2, e->n);
    return dot(e->out, e->r, e->n);
}

Test(layers, relu_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(7);
    size_t sizes[] = {37, 100000}; /* small, and large enough to fork */
    for (size_t t = 0; t < 2; t++) {
        size_t n = sizes[t];
        ew_ctx e = {n, rand_buf(n, -1, 1), NULL, zeros(n), rand_buf(n, -1, 1)};
        for (size_t i = 0; i < n; i++) /* keep away from the kink */
            if (fabsf(e.in[i]) < 0.05f) e.in[i] = 0.5f;
        relu_loss(&e);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(e.out[i], e.in[i] > 0 ? e.in[i] : 0.0f);
        float *din = zeros(n);
        relu_backward(din, e.r, e.out, n);
        cr_expect_leq(gradcheck("relu din", e.in, din, n, relu_loss, &e, 1e-2f, 200), FD_TOL);
        relu_backward(din, e.r, e.out, n);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(din[i], e.out[i] > 0 ? 2 * e.r[i] : 0.0f);
        free(din); free(e.in); free(e.out); free(e.r);
    }
}

Test(layers, add_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(8);
    size_t n = 70000;
    ew_ctx e = {n, rand_buf(n, -1, 1), rand_buf(n, -1, 1), zeros(n), rand_buf(n, -1, 1)};
    add_loss(&e);
    for (size_t i = 0; i < n; i++) cr_assert_eq(e.out[i], e.in[i] + e.in2[i]);
    float *da = zeros(n), *db = zeros(n);
    add_backward(da, db, e.r, n);
    cr_expect_leq(gradcheck("add da", e.in, da, n, add_loss, &e, 1e-2f, 100), FD_TOL);
    cr_expect_leq(gradcheck("add db", e.in2, db, n, add_loss, &e, 1e-2f, 100), FD_TOL);
    add_backward(NULL, db, e.r, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(da[i], e.r[i]);
        cr_assert_eq(db[i], 2 * e.r[i]);
    }
    free(da); free(db); free(e.in); free(e.in2); free(e.out); free(e.r);
}

/* ---- pooling ---- */

typedef struct {
    int n, c, ih, iw, k, s, oh, ow;
    float *in, *out, *r;
    int32_t *am;
} pool_ctx;

static double maxpool_loss(void *p)
{
    pool_ctx *m = p;
    maxpool_forward(m->out, m->am, m->in, m->n, m->c, m->ih, m->iw, m->k, m->s,
                    m->oh, m->ow);
    return dot(m->out, m->r, (size_t)m->n * m->c * m->oh * m->ow);
}

static void maxpool_check(int n, int c, int ih, int iw, int k, int s)
{
    pool_ctx m = {n, c, ih, iw, k, s, (ih - k) / s + 1, (iw - k) / s + 1, NULL, NULL, NULL, NULL};
    size_t ni = (size_t)n * c * ih * iw, no = (size_t)n * c * m.oh * m.ow;
    /* distinct values 0.01 apart (a random permutation): no ties within 2h */
    m.in = zeros(ni);
    for (size_t i = 0; i < ni; i++) m.in[i] = 0.01f * (float)i;
    for (size_t i = ni - 1; i > 0; i--) {
        size_t j = (size_t)(rng_unit() * (i + 1));
        float t = m.in[i]; m.in[i] = m.in[j]; m.in[j] = t;
    }
    m.out = zeros(no);
    m.r = rand_buf(no, -1, 1);
    m.am = malloc(sizeof *m.am * no);
    maxpool_loss(&m);
    for (int p = 0; p < n * c; p++)
        for (int oy = 0; oy < m.oh; oy++)
            for (int ox = 0; ox < m.ow; ox++) {
                float best = -INFINITY;
                int32_t arg = -1;
                for (int ki = 0; ki < k; ki++)
                    for (int kj = 0; kj < k; kj++) {
                        int idx = (oy * s + ki) * iw + ox * s + kj;
                        float v = m.in[(size_t)p * ih * iw + idx];
                        if (v > best) { best = v; arg = idx; }
                    }
                size_t o = ((size_t)p * m.oh + oy) * m.ow + ox;
                cr_assert_eq(m.out[o], best);
                cr_assert_eq(m.am[o], arg);
            }
    float *din = zeros(ni);
    maxpool_backward(din, m.r, m.am, n, c, ih, iw, m.oh, m.ow);
    char name[64];
    snprintf(name, sizeof name, "maxpool k%d s%d %dx%d din", k, s, ih, iw);
    cr_expect_leq(gradcheck(name, m.in, din, ni, maxpool_loss, &m, 1e-3f, 120), FD_TOL);
    free(din); free(m.in); free(m.out); free(m.r); free(m.am);
}

Test(layers, maxpool_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(9);
    maxpool_check(2, 3, 6, 8, 2, 2);
    maxpool_check(1, 2, 7, 5, 3, 2); /* overlapping windows */
    maxpool_check(8, 16, 28, 28, 2, 2); /* parallel */
}

Test(layers, maxpool_ties_take_the_first)
{
    float in[4] = {1, 3, 3, 3}, out[1], dx[4] = {0};
    int32_t am[1];
    maxpool_forward(out, am, in, 1, 1, 2, 2, 2, 2, 1, 1);
    cr_assert_eq(out[0], 3.0f);
    cr_assert_eq(am[0], 1);
    float g[1] = {2};
    maxpool_backward(dx, g, am, 1, 1, 2, 2, 1, 1);
    maxpool_backward(dx, g, am, 1, 1, 2, 2, 1, 1);
    cr_assert(dx[0] == 0 && dx[1] == 4 && dx[2] == 0 && dx[3] == 0);
}

typedef struct {
    int n, c, hw;
    float *in, *out, *r;
} avg_ctx;

static double avgpool_loss(void *p)
{
    avg_ctx *a = p;
    avgpool_forward(a->out, a->in, a->n, a->c, a->hw);
    return dot(a->out, a->r, (size_t)a->n * a->c);
}

Test(layers, avgpool_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(10);
    int n = 3, c = 4, hw = 49;
    avg_ctx a = {n, c, hw, rand_buf((size_t)n * c * hw, -1, 1), zeros((size_t)n * c),
                 rand_buf((size_t)n * c, -1, 1)};
    avgpool_loss(&a);
    for (int p = 0; p < n * c; p++) {
        double s = 0;
        for (int j = 0; j < hw; j++) s += a.in[p * hw + j];
        cr_expect_float_eq(a.out[p], (float)(s / hw), 1e-6f);
    }
    float *din = zeros((size_t)n * c * hw);
    avgpool_backward(din, a.r, n, c, hw);
    cr_expect_leq(gradcheck("avgpool din", a.in, din, (size_t)n * c * hw, avgpool_loss, &a, 1e-2f, 100), FD_TOL);
    float keep = din[5];
    avgpool_backward(din, a.r, n, c, hw);
    cr_expect_float_eq(din[5], 2 * keep, 1e-6f);
    free(din); free(a.in); free(a.out); free(a.r);
}

/* ---- clip, leaky relu, scale, concat ---- */

typedef struct {
    size_t n;
    float *in, *out, *r;
    float a, b; /* clip: lo, hi; leaky relu: alpha; scale: value */
} ew2_ctx;

static double clip_loss(void *p)
{
    ew2_ctx *e = p;
    clip_forward(e->out, e->in, e->n, e->a, e->b);
    return dot(e->out, e->r, e->n);
}

static double leaky_loss(void *p)
{
    ew2_ctx *e = p;
    leakyrelu_forward(e->out, e->in, e->n, e->a);
    return dot(e->out, e->r, e->n);
}

static double scale_loss(void *p)
{
    ew2_ctx *e = p;
    scale_forward(e->out, e->in, e->n, e->a);
    return dot(e->out, e->r, e->n);
}

/* clip is ReLU6 at (0, 6) and a signed window at (-1, 2); its gradient is
 * that of PyTorch's hardtanh: 1 strictly inside, 0 at either bound. */
Test(layers, clip_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(31);
    const float bounds[][2] = {{0.0f, 6.0f}, {-1.0f, 2.0f}};
    size_t sizes[] = {41, 100000};
    for (int bi = 0; bi < 2; bi++)
        for (int t = 0; t < 2; t++) {
            const float lo = bounds[bi][0], hi = bounds[bi][1];
            size_t n = sizes[t];
            ew2_ctx e = {n, rand_buf(n, lo - 3, hi + 3), zeros(n), rand_buf(n, -1, 1), lo, hi};
            for (size_t i = 0; i < n; i++) /* away from the kinks */
                if (fabsf(e.in[i] - lo) < 0.05f || fabsf(e.in[i] - hi) < 0.05f) e.in[i] = 0.5f * (lo + hi);
            clip_loss(&e);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(e.out[i], e.in[i] < lo ? lo : e.in[i] > hi ? hi : e.in[i]);
            float *din = zeros(n);
            clip_backward(din, e.r, e.out, n, lo, hi);
            char name[64];
            snprintf(name, sizeof name, "clip [%g, %g] n %zu din", lo, hi, n);
            cr_expect_leq(gradcheck(name, e.in, din, n, clip_loss, &e, 1e-2f, 200), FD_TOL);
            clip_backward(din, e.r, e.out, n, lo, hi); /* accumulates */
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(din[i], e.in[i] > lo && e.in[i] < hi ? 2 * e.r[i] : 0.0f);
            free(din), free(e.in), free(e.out), free(e.r);
        }
    /* at the bounds: out is the bound, the gradient 0 (relu6's hardtanh) */
    float in[5] = {0.0f, 6.0f, 3.0f, -0.0f, NAN}, out[5], g[5] = {1, 1, 1, 1, 1}, d[5] = {0};
    clip_forward(out, in, 5, 0.0f, 6.0f);
    clip_backward(d, g, out, 5, 0.0f, 6.0f);
    cr_expect(out[0] == 0.0f && out[1] == 6.0f && out[2] == 3.0f && isnan(out[4]));
    cr_expect(d[0] == 0.0f && d[1] == 0.0f && d[2] == 1.0f && d[3] == 0.0f && d[4] == 0.0f);
}

Test(layers, leakyrelu_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(32);
    const float alphas[] = {0.01f, 0.2f};
    for (int ai = 0; ai < 2; ai++) {
        size_t n = 70000;
        ew2_ctx e = {n, rand_buf(n, -1, 1), zeros(n), rand_buf(n, -1, 1), alphas[ai], 0};
        for (size_t i = 0; i < n; i++)
            if (fabsf(e.in[i]) < 0.05f) e.in[i] = -0.5f;
        leaky_loss(&e);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(e.out[i], e.in[i] > 0 ? e.in[i] : e.a * e.in[i]);
        float *din = zeros(n);
        leakyrelu_backward(din, e.r, e.in, n, e.a);
        char name[64];
        snprintf(name, sizeof name, "leakyrelu alpha %g din", e.a);
        cr_expect_leq(gradcheck(name, e.in, din, n, leaky_loss, &e, 1e-2f, 200), FD_TOL);
        free(din), free(e.in), free(e.out), free(e.r);
    }
    /* at 0 the gradient is alpha, as PyTorch's */
    float in[2] = {0.0f, 1.0f}, g[2] = {1, 1}, d[2] = {0};
    leakyrelu_backward(d, g, in, 2, 0.1f);
    cr_expect(d[0] == 0.1f && d[1] == 1.0f);
}

Test(layers, scale_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(33);
    size_t n = 70000;
    ew2_ctx e = {n, rand_buf(n, -1, 1), zeros(n), rand_buf(n, -1, 1), -0.75f, 0};
    scale_loss(&e);
    for (size_t i = 0; i < n; i++) cr_assert_eq(e.out[i], -0.75f * e.in[i]);
    float *din = zeros(n);
    scale_backward(din, e.r, n, e.a);
    cr_expect_leq(gradcheck("scale -0.75 din", e.in, din, n, scale_loss, &e, 1e-2f, 100), FD_TOL);
    scale_backward(din, e.r, n, e.a);
    for (size_t i = 0; i < n; i++) cr_assert_eq(din[i], 2 * (-0.75f * e.r[i]));
    free(din), free(e.in), free(e.out), free(e.r);
}

typedef struct {
    int k, n, hw, c[3];
    float *in[3], *out, *r;
} cat_ctx;

static double concat_loss(void *p)
{
    cat_ctx *x = p;
    concat_forward(x->out, (const float *const *)x->in, x->c, x->k, x->n, x->hw);
    return dot(x->out, x->r, (size_t)x->n * (x->c[0] + x->c[1] + x->c[2]) * x->hw);
}

Test(layers, concat_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(34);
    /* small, and large enough to fork */
    const int shapes[][5] = {{2, 3, 1, 4, 5}, {8, 16, 24, 8, 196}};
    for (int si = 0; si < 2; si++) {
        const int *s = shapes[si];
        cat_ctx x = {3, s[0], s[4], {s[1], s[2], s[3]}, {NULL}, NULL, NULL};
        const int oc = s[1] + s[2] + s[3];
        const size_t no = (size_t)x.n * oc * x.hw;
        for (int j = 0; j < 3; j++) x.in[j] = rand_buf((size_t)x.n * x.c[j] * x.hw, -1, 1);
        x.out = zeros(no);
        x.r = rand_buf(no, -1, 1);
        concat_loss(&x);
        for (int i = 0; i < x.n; i++)
            for (int ch = 0, j = 0, base = 0; ch < oc; ch++) {
                if (ch - base >= x.c[j]) base += x.c[j++];
                for (int q = 0; q < x.hw; q++)
                    cr_assert_eq(x.out[((size_t)i * oc + ch) * x.hw + q],
                                 x.in[j][((size_t)i * x.c[j] + ch - base) * x.hw + q]);
            }
        float *din[3];
        for (int j = 0; j < 3; j++) din[j] = zeros((size_t)x.n * x.c[j] * x.hw);
        float *skip[3] = {din[0], NULL, din[2]};
        concat_backward(skip, x.r, x.c, 3, x.n, x.hw);
        concat_backward((float *const[]){NULL, din[1], NULL}, x.r, x.c, 3, x.n, x.hw);
        for (int j = 0; j < 3; j++) {
            char name[64];
            snprintf(name, sizeof name, "concat %d input %d din", si, j);
            cr_expect_leq(gradcheck(name, x.in[j], din[j], (size_t)x.n * x.c[j] * x.hw,
                                    concat_loss, &x, 1e-2f, 60),
                          FD_TOL);
        }
        for (int j = 0; j < 3; j++) free(din[j]), free(x.in[j]);
        free(x.out), free(x.r);
    }
    /* one buffer given twice: it gets both slices */
    float a[2] = {1, 2}, out[4], g[4] = {1, 2, 3, 4}, da[2] = {0};
    concat_forward(out, (const float *const[]){a, a}, (const int[]){1, 1}, 2, 1, 2);
    cr_expect(out[0] == 1 && out[1] == 2 && out[2] == 1 && out[3] == 2);
    concat_backward((float *const[]){da, da}, g, (const int[]){1, 1}, 2, 1, 2);
    cr_expect(da[0] == 4 && da[1] == 6);
}

/* ---- padded max pooling, windowed average pooling ---- */

typedef struct {
    pool2d_dims d;
    int include_pad;
    float *in, *out, *r;
    int32_t *am;
} pool2_ctx;

static double maxpool2d_loss(void *p)
{
    pool2_ctx *m = p;
    maxpool2d_forward(m->out, m->am, m->in, &m->d);
    return dot(m->out, m->r, (size_t)m->d.n * m->d.c * m->d.oh * m->d.ow);
}

static double avgpool2d_loss(void *p)
{
    pool2_ctx *m = p;
    avgpool2d_forward(m->out, m->in, &m->d, m->include_pad);
    return dot(m->out, m->r, (size_t)m->d.n * m->d.c * m->d.oh * m->d.ow);
}

static const int POOL2_CASES[][7] = {
    /* n, c, ih, iw, k, stride, pad */
    {2, 3, 6, 7, 3, 2, 1}, /* ResNet's stem pool */
    {1, 2, 5, 5, 3, 1, 1}, /* "same" */
    {2, 2, 7, 6, 2, 2, 1}, /* pad k - 1: edge windows of one cell */
    {1, 3, 8, 8, 5, 3, 2},
    {2, 2, 6, 6, 2, 2, 0}, /* no padding */
    {8, 16, 28, 28, 3, 2, 1}, /* parallel */
};

Test(layers, pool2d_dims)
{
    pool2d_dims d;
    cr_assert_eq(pool2d_dims_init(&d, 2, 3, 28, 27, 3, 2, 1), 0);
    cr_expect(d.oh == 14 && d.ow == 14);
    cr_expect_eq(pool2d_dims_init(&d, 1, 1, 8, 8, 3, 1, 3), -1, "pad > k - 1");
    cr_expect_eq(pool2d_dims_init(&d, 1, 1, 2, 2, 5, 1, 1), -1, "window larger than the padded input");
}

Test(layers, maxpool2d_padded_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(35);
    for (size_t ci = 0; ci < sizeof POOL2_CASES / sizeof *POOL2_CASES; ci++) {
        const int *k = POOL2_CASES[ci];
        pool2_ctx m;
        memset(&m, 0, sizeof m);
        cr_assert_eq(pool2d_dims_init(&m.d, k[0], k[1], k[2], k[3], k[4], k[5], k[6]), 0);
        const size_t ni = (size_t)k[0] * k[1] * k[2] * k[3];
        const size_t no = (size_t)k[0] * k[1] * m.d.oh * m.d.ow;
        /* distinct NEGATIVE values 0.01 apart: a padded zero would win */
        m.in = zeros(ni);
        for (size_t i = 0; i < ni; i++) m.in[i] = -0.01f * (float)(i + 1);
        for (size_t i = ni - 1; i > 0; i--) {
            size_t j = (size_t)(rng_unit() * (i + 1));
            float t = m.in[i]; m.in[i] = m.in[j]; m.in[j] = t;
        }
        m.out = zeros(no);
        m.r = rand_buf(no, -1, 1);
        m.am = malloc(sizeof *m.am * no);
        maxpool2d_loss(&m);
        const int ih = k[2], iw = k[3];
        for (int p = 0; p < k[0] * k[1]; p++)
            for (int oy = 0; oy < m.d.oh; oy++)
                for (int ox = 0; ox < m.d.ow; ox++) {
                    float best = -INFINITY;
                    int32_t arg = -1;
                    for (int ki = 0; ki < k[4]; ki++)
                        for (int kj = 0; kj < k[4]; kj++) {
                            int y = oy * k[5] + ki - k[6], x = ox * k[5] + kj - k[6];
                            if (y < 0 || y >= ih || x < 0 || x >= iw) continue;
                            float v = m.in[(size_t)p * ih * iw + y * iw + x];
                            if (v > best) best = v, arg = y * iw + x;
                        }
                    size_t o = ((size_t)p * m.d.oh + oy) * m.d.ow + ox;
                    cr_assert_eq(m.out[o], best, "case %zu", ci);
                    cr_assert_eq(m.am[o], arg, "case %zu", ci);
                }
        float *din = zeros(ni);
        maxpool_backward(din, m.r, m.am, k[0], k[1], ih, iw, m.d.oh, m.d.ow);
        char name[64];
        snprintf(name, sizeof name, "maxpool2d k%d s%d p%d %dx%d din", k[4], k[5], k[6], ih, iw);
        cr_expect_leq(gradcheck(name, m.in, din, ni, maxpool2d_loss, &m, 1e-3f, 120), FD_TOL);
        free(din), free(m.in), free(m.out), free(m.r), free(m.am);
    }
}

Test(layers, avgpool2d_forward_and_gradcheck)
{
    use_threads(2, 1);
    rng_seed(36);
    for (size_t ci = 0; ci < sizeof POOL2_CASES / sizeof *POOL2_CASES; ci++)
        for (int inc = 0; inc < 2; inc++) {
            const int *k = POOL2_CASES[ci];
            pool2_ctx m;
            memset(&m, 0, sizeof m);
            cr_assert_eq(pool2d_dims_init(&m.d, k[0], k[1], k[2], k[3], k[4], k[5], k[6]), 0);
            m.include_pad = inc;
            const int ih = k[2], iw = k[3];
            const size_t ni = (size_t)k[0] * k[1] * ih * iw;
            const size_t no = (size_t)k[0] * k[1] * m.d.oh * m.d.ow;
            m.in = rand_buf(ni, -1, 1);
            m.out = zeros(no);
            m.r = rand_buf(no, -1, 1);
            avgpool2d_loss(&m);
            double worst = 0;
            for (int p = 0; p < k[0] * k[1]; p++)
                for (int oy = 0; oy < m.d.oh; oy++)
                    for (int ox = 0; ox < m.d.ow; ox++) {
                        double s = 0;
                        int cells = 0;
                        for (int ki = 0; ki < k[4]; ki++)
                            for (int kj = 0; kj < k[4]; kj++) {
                                int y = oy * k[5] + ki - k[6], x = ox * k[5] + kj - k[6];
                                if (y < 0 || y >= ih || x < 0 || x >= iw) continue;
                                s += m.in[(size_t)p * ih * iw + y * iw + x];
                                cells++;
                            }
                        s /= inc ? k[4] * k[4] : cells;
                        size_t o = ((size_t)p * m.d.oh + oy) * m.d.ow + ox;
                        worst = fmax(worst, fabs(m.out[o] - s));
                    }
            cr_expect_leq(worst, 1e-6, "case %zu include_pad %d: forward off by %g", ci, inc,
                          worst);
            float *din = zeros(ni);
            avgpool2d_backward(din, m.r, &m.d, inc);
            char name[80];
            snprintf(name, sizeof name, "avgpool2d k%d s%d p%d %s din", k[4], k[5], k[6],
                     inc ? "incl" : "excl");
            cr_expect_leq(gradcheck(name, m.in, din, ni, avgpool2d_loss, &m, 1e-2f, 120), FD_TOL);
            float keep = din[ni / 2];
            avgpool2d_backward(din, m.r, &m.d, inc);
            cr_expect_float_eq(din[ni / 2], 2 * keep, 1e-6f);
            free(din), free(m.in), free(m.out), free(m.r);
        }
}

/* ---- losses ---- */

typedef struct {
    int n, k;
    float t, scale;
    float *s, *tl, *ps, *pt;
    int32_t *labels;
} loss_ctx;

static double xent_loss(void *p)
{
    loss_ctx *l = p;
    return (double)l->scale * xent_forward(l->ps, l->s, l->labels, l->n, l->k);
}

static double distill_loss(void *p)
{
    loss_ctx *l = p;
    return (double)l->scale * distill_forward(l->ps, l->pt, l->s, l->tl, l->n, l->k, l->t);
}

static loss_ctx loss_init(int n, int k, float t, float scale)
{
    loss_ctx l = {n, k, t, scale, rand_buf((size_t)n * k, -4, 4),
                  rand_buf((size_t)n * k, -4, 4), zeros((size_t)n * k),
                  zeros((size_t)n * k), malloc(sizeof(int32_t) * (size_t)n)};
    for (int i = 0; i < n; i++) l.labels[i] = (int32_t)(rng_unit() * k);
    return l;
}

static void loss_free(loss_ctx *l)
{
    free(l->s); free(l->tl); free(l->ps); free(l->pt); free(l->labels);
}

Test(layers, xent_forward_and_gradcheck)
{
    rng_seed(11);
    loss_ctx l = loss_init(5, 10, 1, 0.7f);
    double loss = xent_loss(&l) / l.scale, ref = 0;
    for (int i = 0; i < l.n; i++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < l.k; j++) mx = fmax(mx, l.s[i * l.k + j]);
        for (int j = 0; j < l.k; j++) s += exp(l.s[i * l.k + j] - mx);
        ref += -(l.s[i * l.k + l.labels[i]] - mx - log(s));
        double psum = 0;
        for (int j = 0; j < l.k; j++) {
            cr_expect_float_eq(l.ps[i * l.k + j], (float)(exp(l.s[i * l.k + j] - mx) / s), 1e-6f);
            psum += l.ps[i * l.k + j];
        }
        cr_expect_float_eq(psum, 1.0, 1e-5);
    }
    ref /= l.n;
    printf("xent forward: %.7f vs reference %.7f\n", loss, ref);
    cr_expect_float_eq(loss, ref, 1e-5 * fabs(ref));
    /* huge logits must not overflow */
    float big[2] = {1000.0f, -1000.0f}, pb[2];
    int32_t lb[1] = {1};
    cr_expect_float_eq(xent_forward(pb, big, lb, 1, 2), 2000.0f, 1e-2f);
    float *dl = zeros((size_t)l.n * l.k);
    xent_backward(dl, l.ps, l.labels, l.n, l.k, l.scale);
    cr_expect_leq(gradcheck("xent dlogits", l.s, dl, (size_t)l.n * l.k, xent_loss, &l, 1e-3f, 100), FD_TOL);
    free(dl);
    loss_free(&l);
}

Test(layers, distill_forward_and_gradcheck)
{
    rng_seed(12);
    loss_ctx l = loss_init(4, 10, 3.0f, 0.5f);
    double loss = distill_loss(&l) / l.scale, ref = 0;
    for (int i = 0; i < l.n; i++) {
        double ms = -INFINITY, mt = -INFINITY, ss = 0, st = 0;
        for (int j = 0; j < l.k; j++) {
            ms = fmax(ms, l.s[i * l.k + j] / 3.0);
            mt = fmax(mt, l.tl[i * l.k + j] / 3.0);
        }
        for (int j = 0; j < l.k; j++) {
            ss += exp(l.s[i * l.k + j] / 3.0 - ms);
            st += exp(l.tl[i * l.k + j] / 3.0 - mt);
        }
        for (int j = 0; j < l.k; j++) {
            double pt = exp(l.tl[i * l.k + j] / 3.0 - mt) / st;
            double ps = exp(l.s[i * l.k + j] / 3.0 - ms) / ss;
            ref += pt * log(pt / ps);
        }
    }
    ref = ref * 9.0 / l.n;
    printf("distill forward: %.7f vs reference %.7f\n", loss, ref);
    cr_expect_float_eq(loss, ref, 1e-5 * fabs(ref));
    cr_expect_gt(loss, 0.0);
    /* identical logits: zero loss */
    float *pt = zeros((size_t)l.n * l.k), *ps = zeros((size_t)l.n * l.k);
    cr_expect_float_eq(distill_forward(ps, pt, l.tl, l.tl, l.n, l.k, 3.0f), 0.0f, 1e-6f);
    float *dl = zeros((size_t)l.n * l.k);
    distill_loss(&l);
    distill_backward(dl, l.ps, l.pt, l.n, l.k, l.t, l.scale);
    cr_expect_leq(gradcheck("distill dlogits_s", l.s, dl, (size_t)l.n * l.k, distill_loss, &l, 1e-3f, 100), FD_TOL);
    free(pt); free(ps); free(dl);
    loss_free(&l);
}

/* The batch norm's input gradient into a channel block
 * (batchnorm_backward_blocked) against batchnorm_backward_plane on each
 * plane (set), transposed: the same bits, padding channels zero. Blocks of
 * 1, 8 and 16, with and without padding channels, plane sizes that leave
 * every kind of tail, the fused ReLU on every other channel, a NaN. */
Test(layers, batchnorm_backward_blocked_matches_the_planes)
{
    static const int blocks[] = {1, 8, 16}, hws[] = {49, 196, 27};
    unsigned seed = 5;
    for (int bi = 0; bi < 3; bi++)
        for (int hi = 0; hi < 3; hi++)
            for (int pad = 0; pad < 2; pad++) {
                const int B = blocks[bi], nc = pad && B > 1 ? B - 3 : B;
                const size_t hw = (size_t)hws[hi], n = (size_t)B * hw;
                float *x = malloc(n * 4), *g = malloc(n * 4), *cf = malloc((size_t)B * BN_COEFS * 4);
                float *want = calloc(n, 4), *got = malloc(n * 4), *plane = malloc(hw * 4);
                cr_assert(x && g && cf && want && got && plane);
                for (size_t i = 0; i < n; i++) {
                    seed = seed * 1103515245u + 12345u;
                    x[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
                    seed = seed * 1103515245u + 12345u;
                    g[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
                }
                for (int c = 0; c < B; c++)
                    for (int k = 0; k < BN_COEFS; k++) {
                        seed = seed * 1103515245u + 12345u;
                        cf[c * BN_COEFS + k] =
                            k == BN_CF_RELU ? (float)(c % 2) : (float)(seed >> 8) / 16777216.0f;
                    }
                x[2] = NAN;
                for (int c = 0; c < nc; c++) {
                    batchnorm_backward_plane(plane, 1, g + hw * c, x + hw * c, cf + c * BN_COEFS,
                                             (int)hw);
                    for (size_t p = 0; p < hw; p++) want[p * B + c] = plane[p];
                }
                memset(got, 0xff, n * 4);
                batchnorm_backward_blocked(got, B, g, x, cf, nc, hw);
                cr_assert_eq(memcmp(got, want, n * 4), 0, "block %d of %d channels, hw %zu", B, nc,
                             hw);
                free(x), free(g), free(cf), free(want), free(got), free(plane);
            }
}
