/* Unit tests of the LSQ quantizer (engine/quant/quant.c): forward codes and values
 * (ties, clip edges, every bit width, per-channel, LSQ+), backward against a
 * closed-form double reference, the gradient scale, both inits, the step
 * guard and bit-for-bit determinism. References use rintf (libm, round half
 * to even) rather than quant_round, so the two roundings check each other. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "quant/quant.h"

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s * 2862933555777941757ULL + 3037000493ULL;
}

static double rng_unif(void) /* [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static double rng_normal(void)
{
    double u1 = rng_unif(), u2 = rng_unif();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static float *fill_normal(size_t n, double mean, double sd)
{
    float *p = malloc(n * sizeof *p);
    cr_assert(p);
    for (size_t i = 0; i < n; i++) p[i] = (float)(mean + sd * rng_normal());
    return p;
}

/* The forward formula, written independently: float x, clip, rintf. */
static float ref_code(float v, float s, float beta, const quant_range *r)
{
    float x = (v - beta) / s;
    if (x < (float)-r->qn) x = (float)-r->qn;
    if (x > (float)r->qp) x = (float)r->qp;
    return rintf(x);
}

static double ref_mse(const float *v, size_t n, float s, float beta,
                      const quant_range *r)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)(ref_code(v[i], s, beta, r) * s + beta) - v[i];
        sum += d * d;
    }
    return sum / (double)n;
}

static void check_forward(const float *in, size_t channels, size_t per,
                          const float *step, const float *offset,
                          const quant_range *r)
{
    size_t n = channels * per;
    float *out = malloc(n * sizeof *out);
    int32_t *codes = malloc(n * sizeof *codes);
    float *out2 = malloc(n * sizeof *out2);
    cr_assert(out && codes && out2);
    quant_forward(out, codes, in, step, offset, (int)channels, per, r);
    quant_forward(out2, NULL, in, step, offset, (int)channels, per, r);
    for (size_t c = 0; c < channels; c++) {
        float beta = offset ? offset[c] : 0.0f;
        for (size_t i = 0; i < per; i++) {
            size_t k = c * per + i;
            float q = ref_code(in[k], step[c], beta, r);
            cr_assert_eq(
                codes[k], (int32_t)q,
                "bits %d signed %d ch %zu elem %zu: v %.9g code %d want %d",
                r->bits, r->is_signed, c, i, in[k], codes[k], (int)q);
            cr_assert(codes[k] >= -r->qn && codes[k] <= r->qp);
            float want = q * step[c] + beta;
            cr_assert_eq(out[k], want, "ch %zu elem %zu: %.9g want %.9g", c, i,
                         out[k], want);
            cr_assert_eq(out2[k], want, "codes=NULL path differs at %zu", k);
        }
    }
    free(out);
    free(codes);
    free(out2);
}

/* ---- range -------------------------------------------------------------- */

Test(quant, range_init_every_width)
{
    for (int b = 2; b <= 8; b++) {
        quant_range r;
        quant_range_init(&r, b, 1);
        cr_assert_eq(r.qn, 1 << (b - 1));
        cr_assert_eq(r.qp, (1 << (b - 1)) - 1);
        cr_assert_eq(r.bits, b);
        quant_range_init(&r, b, 0);
        cr_assert_eq(r.qn, 0);
        cr_assert_eq(r.qp, (1 << b) - 1);
    }
}

/* ---- forward ------------------------------------------------------------ */

Test(quant, forward_ties_round_half_to_even)
{
    quant_range r;
    quant_range_init(&r, 4, 1); /* -8..7 */
    const float in[] = {0.5f, 1.5f,  2.5f,        -0.5f, -1.5f,
                        3.5f, -2.5f, 0.49999997f, 6.5f};
    const int32_t want[] = {0, 2, 2, 0, -2, 4, -2, 0, 6};
    size_t n = sizeof in / sizeof *in;
    float out[9];
    int32_t codes[9];
    float s = 1.0f;
    quant_forward(out, codes, in, &s, NULL, 1, n, &r);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(codes[i], want[i], "%g -> %d, want %d", in[i], codes[i],
                     want[i]);
        cr_assert_eq(out[i], (float)want[i]);
    }
    quant_forward(out, NULL, in, &s, NULL, 1, n, &r); /* the values-only path */
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(out[i], (float)want[i], "no codes: %g -> %g", in[i],
                     out[i]);
    /* the same ties with a step of 0.25 (exact in binary) and an offset */
    float in2[9], beta = -3.0f;
    s = 0.25f;
    for (size_t i = 0; i < n; i++) in2[i] = in[i] * s + beta;
    quant_forward(out, codes, in2, &s, &beta, 1, n, &r);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(codes[i], want[i], "offset: %g -> %d, want %d", in2[i],
                     codes[i], want[i]);
        cr_assert_eq(out[i], want[i] * s + beta);
    }
    quant_forward(out, NULL, in2, &s, &beta, 1, n, &r);
    for (size_t i = 0; i < n; i++) cr_assert_eq(out[i], want[i] * s + beta);
}

Test(quant, forward_clip_edges_every_width)
{
    for (int b = 2; b <= 8; b++) {
        for (int sg = 0; sg <= 1; sg++) {
            quant_range r;
            quant_range_init(&r, b, sg);
            float s = 0.25f;
            float lo = -r.qn * s, hi = r.qp * s;
            const float in[] = {-1e6f, lo - 10.0f * s, lo - 0.49f * s,
                                lo,    lo + 0.51f * s, hi - 0.51f * s,
                                hi,    hi + 0.49f * s, hi + 10.0f * s,
                                1e6f};
            const int32_t want[] = {-r.qn,    -r.qn, -r.qn, -r.qn, -r.qn + 1,
                                    r.qp - 1, r.qp,  r.qp,  r.qp,  r.qp};
            float out[10];
            int32_t codes[10];
            quant_forward(out, codes, in, &s, NULL, 1, 10, &r);
            for (int i = 0; i < 10; i++) {
                cr_assert_eq(codes[i], want[i], "b%d s%d in %g: %d want %d", b,
                             sg, in[i], codes[i], want[i]);
                cr_assert_eq(out[i], want[i] * s);
            }
        }
    }
}

Test(quant, forward_random_every_width_and_sign)
{
    rng_seed(1);
    for (int b = 2; b <= 8; b++) {
        for (int sg = 0; sg <= 1; sg++) {
            quant_range r;
            quant_range_init(&r, b, sg);
            float *in = fill_normal(1000, 0.0, 1.0);
            float s = 3.0f / r.qp; /* some values clip at every width */
            check_forward(in, 1, 1000, &s, NULL, &r);
            free(in);
        }
    }
}

Test(quant, forward_per_channel_with_offset)
{
    rng_seed(2);
    quant_range r;
    quant_range_init(&r, 3, 1);
    const float step[] = {0.1f, 0.5f, 2.0f, 0.013f};
    const float off[] = {0.0f, -0.7f, 1.5f, 0.02f};
    float *in = fill_normal(4 * 257, 0.0, 2.0);
    check_forward(in, 4, 257, step, NULL, &r);
    check_forward(in, 4, 257, step, off, &r);
    /* the channel's own step is used: channel 2 (s = 2) maps 2.0 to code 1,
     * channel 0 (s = 0.1) clips it to QP */
    float v[4 * 257];
    for (size_t i = 0; i < 4 * 257; i++) v[i] = 2.0f;
    float out[4 * 257];
    int32_t codes[4 * 257];
    quant_forward(out, codes, v, step, NULL, 4, 257, &r);
    cr_assert_eq(codes[0], r.qp);
    cr_assert_eq(codes[2 * 257 + 5], 1);
    cr_assert_eq(codes[257 + 3], 4 > r.qp ? r.qp : 4);
    quant_range u;
    quant_range_init(&u, 5, 0);
    check_forward(in, 4, 257, step, off, &u);
    free(in);
}

Test(quant, forward_large_tensor_parallel_path)
{
    rng_seed(3);
    quant_range r;
    quant_range_init(&r, 4, 0);
    size_t per = 50000; /* several blocks, odd tail */
    float *in = fill_normal(3 * per, 0.5, 1.0);
    const float step[] = {0.2f, 0.05f, 0.31f};
    const float off[] = {-0.5f, 0.0f, 0.25f};
    check_forward(in, 3, per, step, off, &r);
    /* in place gives the same values */
    float *cp = malloc(3 * per * sizeof *cp),
          *out = malloc(3 * per * sizeof *out);
    cr_assert(cp && out);
    memcpy(cp, in, 3 * per * sizeof *cp);
    quant_forward(out, NULL, in, step, off, 3, per, &r);
    quant_forward(cp, NULL, cp, step, off, 3, per, &r);
    cr_assert(memcmp(cp, out, 3 * per * sizeof *cp) == 0);
    free(cp);
    free(out);
    free(in);
}

/* ---- backward ----------------------------------------------------------- */

/* Closed-form reference in double (x itself in float, as the forward computes
 * it, so inside/outside decisions agree). */
static void ref_backward(double *din, double *dstep, double *doff,
                         const float *dout, const float *in, const float *step,
                         const float *offset, int channels, size_t per,
                         const quant_range *r)
{
    for (int c = 0; c < channels; c++) {
        double ds = 0.0, db = 0.0;
        float beta = offset ? offset[c] : 0.0f;
        double g = 1.0 / sqrt((double)per * r->qp);
        for (size_t i = 0; i < per; i++) {
            size_t k = (size_t)c * per + i;
            float x = (in[k] - beta) / step[c];
            double t;
            if (x < -r->qn) {
                t = -r->qn;
                db += dout[k];
                din[k] = 0.0;
            } else if (x > r->qp) {
                t = r->qp;
                db += dout[k];
                din[k] = 0.0;
            } else {
                t = (double)rintf(x) - (double)x;
                din[k] = dout[k];
            }
            ds += (double)dout[k] * t;
        }
        dstep[c] = g * ds;
        doff[c] = db;
    }
}

static void check_backward(int channels, size_t per, const quant_range *r,
                           int with_offset, uint64_t seed)
{
    rng_seed(seed);
    size_t n = (size_t)channels * per;
    float *in = fill_normal(n, 0.1, 1.0);
    float *dout = fill_normal(n, 0.0, 1.0);
    float *din = fill_normal(n, 0.0, 1.0); /* nonzero: checks += */
    float *din0 = malloc(n * sizeof *din0);
    double *rdin = malloc(n * sizeof *rdin);
    float *step = malloc(channels * sizeof *step),
          *off = malloc(channels * sizeof *off);
    float *g = malloc(channels * sizeof *g),
          *dstep = malloc(channels * sizeof *dstep);
    float *doff = malloc(channels * sizeof *doff);
    double *rds = malloc(channels * sizeof *rds),
           *rdo = malloc(channels * sizeof *rdo);
    cr_assert(din0 && rdin && step && off && g && dstep && doff && rds && rdo);
    memcpy(din0, din, n * sizeof *din);
    for (int c = 0; c < channels; c++) {
        step[c] = (float)(0.05 + 0.6 * rng_unif()) * 4.0f / r->qp;
        off[c] = with_offset ? (float)(rng_unif() - 0.5) : 0.0f;
        g[c] = quant_grad_scale_paper(per, r);
        dstep[c] = 0.25f; /* accumulates too */
        doff[c] = -0.5f;
    }
    quant_backward(din, dstep, doff, dout, in, step, with_offset ? off : NULL,
                   g, channels, per, r);
    ref_backward(rdin, rds, rdo, dout, in, step, with_offset ? off : NULL,
                 channels, per, r);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(din[k], (float)(din0[k] + rdin[k]),
                     "din[%zu] %.9g want %.9g", k, din[k], din0[k] + rdin[k]);
    for (int c = 0; c < channels; c++) {
        double want = 0.25 + rds[c];
        double tol = 1e-5 * (fabs(want) + 1e-3 * sqrt((double)per) * g[c]);
        cr_assert(fabs(dstep[c] - want) <= tol,
                  "dstep[%d] %.9g want %.9g (bits %d signed %d per %zu)", c,
                  dstep[c], want, r->bits, r->is_signed, per);
        double wo = -0.5 + rdo[c];
        cr_assert(fabs(doff[c] - wo) <= 1e-5 * (fabs(wo) + 1.0),
                  "doffset[%d] %.9g want %.9g", c, doff[c], wo);
    }
    /* the overwriting variant: din = the gradient whatever it held (NaN
     * here); the step and offset sums are the same bits */
    float *ds2 = malloc(channels * sizeof *ds2), *do2 = malloc(channels * sizeof *do2);
    cr_assert(ds2 && do2);
    for (size_t k = 0; k < n; k++) din[k] = NAN;
    for (int c = 0; c < channels; c++) ds2[c] = 0.25f, do2[c] = -0.5f;
    quant_backward_overwrite(din, ds2, do2, dout, in, step, with_offset ? off : NULL, g,
                             channels, per, r);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(din[k], (float)rdin[k], "overwrite: din[%zu] %.9g want %.9g", k, din[k],
                     rdin[k]);
    cr_assert_eq(memcmp(ds2, dstep, channels * sizeof *ds2), 0, "overwrite: dstep differs");
    cr_assert_eq(memcmp(do2, doff, channels * sizeof *do2), 0, "overwrite: doffset differs");
    free(ds2);
    free(do2);
    free(in);
    free(dout);
    free(din);
    free(din0);
    free(rdin);
    free(step);
    free(off);
    free(g);
    free(dstep);
    free(doff);
    free(rds);
    free(rdo);
}

Test(quant, backward_closed_form_per_tensor)
{
    for (int b = 2; b <= 8; b++)
        for (int sg = 0; sg <= 1; sg++) {
            quant_range r;
            quant_range_init(&r, b, sg);
            check_backward(1, 3000, &r, 0, 10 + b);
        }
}

Test(quant, backward_closed_form_per_channel_and_offset)
{
    quant_range r;
    quant_range_init(&r, 3, 1);
    check_backward(5, 777, &r, 0, 20);
    check_backward(5, 777, &r, 1, 21);
    quant_range_init(&r, 4, 0);
    check_backward(3, 1001, &r, 1, 22);
}

Test(quant, backward_closed_form_large_parallel_path)
{
    quant_range r;
    quant_range_init(&r, 2, 1);
    check_backward(1, 100003, &r, 1, 30);
    quant_range_init(&r, 8, 0);
    check_backward(4, 20000, &r, 0, 31);
}

/* dout = 1: the step gradient is the plain sum of the piecewise dv_hat/ds,
 * worked by hand here (2-bit signed, s = 1: QN = 2, QP = 1). */
Test(quant, backward_piecewise_identity_by_hand)
{
    quant_range r;
    quant_range_init(&r, 2, 1);
    const float in[] = {-3.0f, -2.0f, -0.75f, 0.25f, 0.625f, 1.0f, 5.0f, -2.5f};
    /* dv_hat/ds: below -2; boundary -2 inside: 0; -1-(-0.75); 0-0.25;
     * 1-0.625; boundary 1 inside: 0; above 1; below -2 */
    const double want_ds = -2.0 + 0.0 - 0.25 - 0.25 + 0.375 + 0.0 + 1.0 - 2.0;
    const float want_din[] = {0, 1, 1, 1, 1, 1, 0, 0};
    float dout[8], din[8] = {0}, s = 1.0f, beta = 0.0f, g = 1.0f;
    for (int i = 0; i < 8; i++) dout[i] = 1.0f;
    float ds = 0.0f, db = 0.0f;
    quant_backward(din, &ds, &db, dout, in, &s, &beta, &g, 1, 8, &r);
    cr_assert_float_eq(ds, want_ds, 1e-6, "dstep %g want %g", ds, want_ds);
    cr_assert_eq(db, 3.0f, "doffset %g want 3 (three values outside)", db);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(din[i], want_din[i], "din[%d] = %g", i, din[i]);
    /* g multiplies the step gradient only */
    float ds2 = 0.0f;
    g = 0.5f;
    quant_backward(NULL, &ds2, NULL, dout, in, &s, NULL, &g, 1, 8, &r);
    cr_assert_float_eq(ds2, 0.5 * want_ds, 1e-6);
}

Test(quant, grad_scale_paper_value)
{
    quant_range r;
    quant_range_init(&r, 3, 1);
    cr_assert_eq(quant_grad_scale_paper(4608, &r),
                 (float)(1.0 / sqrt(4608.0 * 3.0)));
    quant_range_init(&r, 2, 0);
    cr_assert_eq(quant_grad_scale_paper(100, &r), (float)(1.0 / sqrt(300.0)));
}

Test(quant, backward_deterministic_bits)
{
    rng_seed(40);
    quant_range r;
    quant_range_init(&r, 4, 1);
    size_t n = 300001;
    float *in = fill_normal(n, 0.0, 1.0), *dout = fill_normal(n, 0.0, 1.0);
    float s = 0.3f, beta = 0.01f, g = quant_grad_scale_paper(n, &r);
    float ds[3] = {0}, db[3] = {0};
    int threads = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t == 2 ? 1 : threads);
        quant_backward(NULL, &ds[t], &db[t], dout, in, &s, &beta, &g, 1, n, &r);
    }
    omp_set_num_threads(threads);
    cr_assert(memcmp(&ds[0], &ds[1], sizeof(float)) == 0,
              "dstep differs between runs");
    cr_assert(memcmp(&db[0], &db[1], sizeof(float)) == 0);
    cr_assert(memcmp(&ds[0], &ds[2], sizeof(float)) == 0,
              "dstep depends on threads");
    cr_assert(ds[0] != 0.0f);
    free(in);
    free(dout);
}

/* ---- inits -------------------------------------------------------------- */

Test(quant, init_paper_exact)
{
    quant_range r;
    quant_range_init(&r, 4, 1); /* QP = 7 */
    const float v[] = {1, -2, 3, -4, 0.5f, 0.5f, -0.5f, 0.5f, 0, 0, 0, 0};
    float s[3];
    quant_init_paper(s, v, 3, 4, &r);
    cr_assert_float_eq(s[0], 2.0 * 2.5 / sqrt(7.0), 1e-6);
    cr_assert_float_eq(s[1], 2.0 * 0.5 / sqrt(7.0), 1e-6);
    cr_assert_eq(s[2], 1e-3f, "all-zero channel gets the documented 1e-3");
    quant_range_init(&r, 2, 0); /* QP = 3 */
    quant_init_paper(s, v, 1, 12, &r);
    /* mean |v| = (10 + 2 + 0) / 12 = 1 */
    cr_assert_float_eq(s[0], 2.0 / sqrt(3.0), 1e-6);
}

/* Best MSE over a fine grid of steps in (0, hi]. */
static double brute_best(const float *v, size_t n, const quant_range *r,
                         double hi, int points)
{
    double best = INFINITY;
    for (int k = 1; k <= points; k++) {
        double f = ref_mse(v, n, (float)(hi * k / points), 0.0f, r);
        if (f < best) best = f;
    }
    return best;
}

Test(quant, init_mse_beats_fine_grid)
{
    rng_seed(50);
    for (int b = 2; b <= 8; b += 2) {
        for (int sg = 0; sg <= 1; sg++) {
            quant_range r;
            quant_range_init(&r, b, sg);
            size_t per = 2000;
            float *v = fill_normal(2 * per, sg ? 0.0 : 0.5, 1.0);
            for (size_t i = per; i < 2 * per; i++)
                v[i] *= 0.05f; /* channel 1 */
            float s[2];
            quant_init_mse(s, NULL, v, 2, per, &r);
            for (int c = 0; c < 2; c++) {
                const float *p = v + c * per;
                float amax = 0.0f;
                for (size_t i = 0; i < per; i++)
                    amax = fmaxf(amax, fabsf(p[i]));
                double found = ref_mse(p, per, s[c], 0.0f, &r);
                double grid =
                    brute_best(p, per, &r, 1.5 * amax / r.qp * 2.0, 3000);
                cr_assert(found <= grid * 1.001,
                          "b%d s%d ch%d: mse %.6g at s %.6g, grid %.6g", b, sg,
                          c, found, s[c], grid);
                /* and clearly better than the paper init at low bits */
                float sp;
                quant_init_paper(&sp, p, 1, per, &r);
                cr_assert(found <= ref_mse(p, per, sp, 0.0f, &r) * (1 + 1e-9));
            }
            free(v);
        }
    }
}

Test(quant, init_mse_lsq_plus_offset_helps_shifted_data)
{
    rng_seed(60);
    /* activations shifted below zero (Swish-like): unsigned 4-bit without an
     * offset clips every negative value */
    quant_range r;
    quant_range_init(&r, 4, 0);
    size_t n = 4000;
    float *v = fill_normal(n, -0.6, 0.5);
    float s_plain, s_plus, beta;
    quant_init_mse(&s_plain, NULL, v, 1, n, &r);
    quant_init_mse(&s_plus, &beta, v, 1, n, &r);
    double e_plain = ref_mse(v, n, s_plain, 0.0f, &r);
    double e_plus = ref_mse(v, n, s_plus, beta, &r);
    cr_assert(beta < 0.0f, "offset %g should be negative", beta);
    cr_assert(e_plus < 0.1 * e_plain, "LSQ+ mse %.6g vs %.6g without offset",
              e_plus, e_plain);
    cr_assert(s_plus > 0.0f);

    /* signed 3-bit on data far from zero: compare with a 2-D brute force */
    quant_range_init(&r, 3, 1);
    for (size_t i = 0; i < 1000; i++) v[i] = (float)(-2.0 + 0.3 * rng_normal());
    quant_init_mse(&s_plus, &beta, v, 1, 1000, &r);
    e_plus = ref_mse(v, 1000, s_plus, beta, &r);
    double best = INFINITY;
    for (int i = 1; i <= 150; i++)
        for (int j = 0; j <= 150; j++) {
            float s = (float)(0.4 * i / 150), b = (float)(-3.0 + 2.0 * j / 150);
            double f = ref_mse(v, 1000, s, b, &r);
            if (f < best) best = f;
        }
    cr_assert(e_plus <= best * 1.01, "LSQ+ mse %.6g, 2-D grid %.6g", e_plus,
              best);
    quant_init_mse(&s_plain, NULL, v, 1, 1000, &r);
    cr_assert(e_plus < ref_mse(v, 1000, s_plain, 0.0f, &r));
    free(v);
}

Test(quant, init_mse_deterministic_and_zero_channel)
{
    rng_seed(70);
    quant_range r;
    quant_range_init(&r, 3, 0);
    float *v = fill_normal(3000, 1.0, 1.0);
    for (size_t i = 1000; i < 2000; i++) v[i] = 0.0f;
    float s1[3], s2[3], b1[3], b2[3];
    quant_init_mse(s1, b1, v, 3, 1000, &r);
    quant_init_mse(s2, b2, v, 3, 1000, &r);
    cr_assert(memcmp(s1, s2, sizeof s1) == 0 && memcmp(b1, b2, sizeof b1) == 0);
    cr_assert_eq(s1[1], 1e-3f);
    cr_assert_eq(b1[1], 0.0f);
    quant_init_mse(s1, NULL, v, 3, 1000, &r);
    cr_assert_eq(s1[1], 1e-3f);
    cr_assert(s1[0] > 0.0f && s1[2] > 0.0f);
    free(v);
}

/* ---- guard -------------------------------------------------------------- */

Test(quant, guard_keeps_steps_positive)
{
    float prev[] = {0.1f, 0.2f, 0.4f, 0.05f, 0.3f, 1e-8f, 0.7f};
    float step[] = {0.0f, -0.3f, NAN, 0.06f, 1e-12f, -1.0f, INFINITY};
    int n = quant_guard(step, prev, 7);
    cr_assert_eq(n, 6, "reset %d, want 6", n);
    cr_assert_eq(step[0], 0.05f);
    cr_assert_eq(step[1], 0.1f);
    cr_assert_eq(step[2], 0.2f);
    cr_assert_eq(step[3], 0.06f, "a normal step is untouched");
    cr_assert_eq(step[4], 0.15f);
    cr_assert_eq(step[5], QUANT_STEP_MIN, "never below the minimum");
    cr_assert_eq(step[6], 0.35f);
    for (int i = 0; i < 7; i++)
        cr_assert(step[i] >= QUANT_STEP_MIN && isfinite(step[i]));

    float s2[] = {0.0f, NAN, -2.0f, 0.5f};
    cr_assert_eq(quant_guard(s2, NULL, 4), 3);
    cr_assert_eq(s2[0], QUANT_STEP_MIN);
    cr_assert_eq(s2[1], QUANT_STEP_MIN);
    cr_assert_eq(s2[2], QUANT_STEP_MIN);
    cr_assert_eq(s2[3], 0.5f);
    cr_assert_eq(quant_guard(s2, NULL, 4), 0, "a guarded step needs no reset");
}

/* Structured data (periodic inputs and gradients) makes per-term float
 * rounding errors add up instead of cancelling: a float product or a float
 * running sum is off by ~1e-4 relative here; double accumulation is not. */
Test(quant, backward_accumulates_in_double)
{
    quant_range r;
    quant_range_init(&r, 4, 0);
    size_t n = (size_t)1 << 20;
    float *in = malloc(n * sizeof *in), *dout = malloc(n * sizeof *dout);
    cr_assert(in && dout);
    for (size_t i = 0; i < n; i++) {
        in[i] = (float)((i * 2654435761u) % 10007) / 3000.0f - 1.0f;
        dout[i] = (float)((i * 40503u) % 101) / 50.0f - 1.0f;
    }
    float s = 0.1f, beta = -0.2f, g = 1.0f, ds = 0.0f, db = 0.0f;
    quant_backward(NULL, &ds, &db, dout, in, &s, &beta, &g, 1, n, &r);
    double ref = 0.0, refo = 0.0;
    for (size_t i = 0; i < n; i++) {
        float x = (in[i] - beta) / s;
        double t = x < 0.0f    ? 0.0
                   : x > 15.0f ? 15.0
                               : (double)rintf(x) - (double)x;
        ref += (double)dout[i] * t;
        if (x < 0.0f || x > 15.0f) refo += dout[i];
    }
    cr_assert(fabs(ds - ref) <= 1e-6 * fabs(ref), "dstep %.9g want %.9g", ds,
              ref);
    cr_assert(fabs(db - refo) <= 1e-6 * fabs(refo) + 1e-6,
              "doffset %.9g want %.9g", db, refo);
    free(in);
    free(dout);
}

/* The quantizer on a channel block (quant_forward_blocked,
 * quant_backward_blocked) against the planes as they are (quant_forward,
 * quant_backward_span): blocks of 1, 8 and 16 channels, full and with
 * padding channels, plane sizes that leave every kind of tail (49: 3 x 16
 * + 1; 196: 12 x 16 + 4; 27: 16 + 8 + 3), a NaN, values past both clip
 * bounds and on rounding ties. The values and din must be the same bits;
 * the step's sum the same terms within double rounding. */
Test(quant, blocked_matches_the_planes)
{
    static const int blocks[] = {1, 8, 16}, hws[] = {49, 196, 27};
    quant_range ranges[2];
    quant_range_init(&ranges[0], 2, 0);
    quant_range_init(&ranges[1], 3, 1);
    rng_seed(21);
    for (int ri = 0; ri < 2; ri++)
        for (int bi = 0; bi < 3; bi++)
            for (int hi = 0; hi < 3; hi++)
                for (int pad = 0; pad < 2; pad++) {
                    const quant_range *r = &ranges[ri];
                    const int B = blocks[bi], nc = pad && B > 1 ? B - 5 : B;
                    const size_t hw = (size_t)hws[hi], n = (size_t)B * hw;
                    const float s = 0.37f;
                    float *x = fill_normal(n, 0.2, 1.0);
                    x[3] = NAN, x[n - 1] = 0.5f * s, x[n / 2] = 1.5f * s;
                    x[n / 3] = 40.0f, x[n / 4] = -40.0f;
                    /* forward: each plane quantized, in the block's layout */
                    float *want = calloc(n, sizeof(float)), *plane = malloc(hw * sizeof(float));
                    float *got = malloc(n * sizeof(float));
                    cr_assert(want && plane && got);
                    for (int c = 0; c < nc; c++) {
                        quant_forward(plane, NULL, x + hw * c, &s, NULL, 1, hw, r);
                        for (size_t p = 0; p < hw; p++) want[p * B + c] = plane[p];
                    }
                    memset(got, 0xff, n * sizeof(float));
                    quant_forward_blocked(got, B, x, nc, hw, s, r);
                    cr_assert_eq(memcmp(got, want, n * sizeof(float)), 0,
                                 "forward, block %d of %d channels, hw %zu, range %d", B, nc, hw,
                                 ri);
                    /* backward: dout in the block, din in planes, set and += */
                    float *dout = fill_normal(n, 0.0, 1.0);
                    for (int set = 0; set < 2; set++) {
                        float *din_want = fill_normal(n, 0.0, 1.0);
                        float *din_got = malloc(n * sizeof(float)), *g = malloc(hw * sizeof(float));
                        cr_assert(din_got && g);
                        memcpy(din_got, din_want, n * sizeof(float));
                        double want_sum = 0.0, got_sum = -1.0;
                        for (int c = 0; c < nc; c++) {
                            for (size_t p = 0; p < hw; p++) g[p] = dout[p * B + c];
                            double sums[2];
                            quant_backward_span(din_want + hw * c, set, g, x + hw * c, s, r, hw,
                                                sums);
                            want_sum += sums[0];
                        }
                        quant_backward_blocked(din_got, set, dout, B, x, nc, hw, s, r, &got_sum);
                        cr_assert_eq(memcmp(din_got, din_want, n * sizeof(float)), 0,
                                     "din, block %d of %d channels, hw %zu, set %d", B, nc, hw,
                                     set);
                        /* the NaN in plane 0 makes both sums NaN */
                        cr_assert(isnan(want_sum) && isnan(got_sum), "the NaN reaches the sum");
                        free(din_want), free(din_got), free(g);
                    }
                    /* without the NaN, the sums agree */
                    x[3] = 0.1f;
                    double want_sum = 0.0, got_sum;
                    float *g = malloc(hw * sizeof(float));
                    cr_assert(g);
                    for (int c = 0; c < nc; c++) {
                        for (size_t p = 0; p < hw; p++) g[p] = dout[p * B + c];
                        double sums[2];
                        quant_backward_span(NULL, 1, g, x + hw * c, s, r, hw, sums);
                        want_sum += sums[0];
                    }
                    quant_backward_blocked(NULL, 1, dout, B, x, nc, hw, s, r, &got_sum);
                    cr_assert(fabs(got_sum - want_sum) <= 1e-12 * (fabs(want_sum) + 1.0),
                              "step sum %.17g want %.17g (block %d, hw %zu)", got_sum, want_sum, B,
                              hw);
                    free(x), free(want), free(plane), free(got), free(dout), free(g);
                }
}
