/* The two vector paths of the quantizer (core/isa.h): the base build (AVX2,
 * or SSE2 under `make ARCH=`) and the AVX-512 build of the same C must give
 * the same bits. Its forward works element by element; its backward's sums
 * run one AVX2 loop in a fixed order on both (the portable loop only for a
 * tail of fewer than 8); and the build contracts no multiply-add
 * (-std=c11: -ffp-contract=off). So the tolerance is zero: any difference
 * fails, with the count and the largest difference printed. Whole training
 * steps of two quantized networks check the same through the dispatchers. Skipped on a CPU without AVX-512. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/isa.h"
#include "core/rng.h"
#include "deploy/epilogue.h"
#include "graph/net.h"
#include "nn/dconv.h"
#include "nn/layers.h"
#include "quant/quant.h"
#include "train/optim.h"

static void need_avx512(void)
{
    if (!lsq_isa_supported(LSQ_ISA_AVX512)) cr_skip_test("this CPU has no AVX-512");
}

static void use_path(int wide) { lsq_isa_set(wide ? LSQ_ISA_AVX512 : LSQ_ISA_BASE); }

/* Every float of a and b, bit for bit. */
static void expect_same_bits(const char *what, const float *a, const float *b, size_t n)
{
    size_t diff = 0;
    double most = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(a + i, b + i, sizeof *a) == 0) continue;
        diff++;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > most || isnan(d)) most = d;
    }
    printf("%-34s %zu of %zu floats differ between %s and avx512, largest %.3g\n", what, diff,
           n, lsq_isa_name(LSQ_ISA_BASE), most);
    cr_expect_eq(diff, 0, "%s: %zu of %zu floats differ, largest %.3g", what, diff, n, most);
}

static float *randoms(lsq_rng *r, size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    cr_assert(v);
    for (size_t i = 0; i < n; i++) v[i] = scale * (float)rng_normal(r);
    return v;
}

static float *copy_of(const float *v, size_t n)
{
    float *c = malloc(n * sizeof *c);
    cr_assert(c);
    memcpy(c, v, n * sizeof *c);
    return c;
}

Test(isa, names_and_the_active_path)
{
    cr_assert_str_eq(lsq_isa_name(LSQ_ISA_AVX512), "avx512");
    cr_assert(lsq_isa_supported(LSQ_ISA_BASE));
    const lsq_isa was = lsq_isa_active();
    lsq_isa_set(LSQ_ISA_BASE);
    cr_assert_eq(lsq_isa_active(), LSQ_ISA_BASE);
    if (lsq_isa_supported(LSQ_ISA_AVX512)) {
        lsq_isa_set(LSQ_ISA_AVX512);
        cr_assert_eq(lsq_isa_active(), LSQ_ISA_AVX512);
    }
    lsq_isa_set(was);
}

/* Per-channel weights (3 channels of 2 * 8192 + 13: whole blocks, a short
 * one and a tail that is no multiple of 8 or 16, over the threaded path)
 * with a NaN, values on the clip bounds and on rounding ties. */
Test(isa, quantizer_same_bits)
{
    need_avx512();
    lsq_rng r;
    rng_seed(&r, 11, 0);
    const int ch = 3;
    const size_t per = 2 * 8192 + 13, n = ch * per;
    float *v = randoms(&r, n, 0.05f), *dout = randoms(&r, n, 1.0f);
    const float step[3] = {0.01f, 0.02f, 0.015f}, offset[3] = {0.001f, -0.002f, 0.0f};
    const float gscale[3] = {0.3f, 0.5f, 0.7f};
    v[5] = NAN;
    v[per + 1] = 2.0f * step[1], v[per + 2] = -2.0f * step[1]; /* 2-bit signed: the bounds */
    v[2 * per + 3] = 0.5f * step[2], v[2 * per + 4] = 1.5f * step[2]; /* ties */
    quant_range q;
    quant_range_init(&q, 2, 1);
    float *out[2], *din[2], *dstep[2], *doff[2], *mse[2], *span[2];
    int32_t *codes[2];
    int8_t *bytes[2];
    for (int w = 0; w < 2; w++) {
        use_path(w);
        /* the integer engine's codes of channel 1 (offset, bounds, ties) */
        bytes[w] = malloc(per);
        quant_codes_bytes(bytes[w], v + per, per, step[1], offset[1], (float)-q.qn, (float)q.qp, 1);
        out[w] = malloc(n * sizeof(float));
        codes[w] = malloc(n * sizeof(int32_t));
        quant_forward(out[w], codes[w], v, step, offset, ch, per, &q);
        din[w] = copy_of(dout, n); /* += onto something */
        dstep[w] = calloc(ch, sizeof(float)), doff[w] = calloc(ch, sizeof(float));
        quant_backward(din[w], dstep[w], doff[w], dout, v, step, offset, gscale, ch, per, &q);
        mse[w] = calloc(2 * ch, sizeof(float));
        quant_init_mse(mse[w], mse[w] + ch, v + per, ch - 1, per, &q); /* no NaN */
        span[w] = calloc(per + 2, sizeof(float));
        double sums[2];
        quant_backward_span(span[w], 1, dout + per, v + per, step[1], &q, per, sums);
        span[w][per] = (float)sums[0], span[w][per + 1] = (float)sums[1];
    }
    expect_same_bits("quant_forward", out[0], out[1], n);
    cr_expect_eq(memcmp(codes[0], codes[1], n * sizeof(int32_t)), 0, "quant_forward codes");
    expect_same_bits("quant_backward din", din[0], din[1], n);
    expect_same_bits("quant_backward dstep", dstep[0], dstep[1], ch);
    expect_same_bits("quant_backward doffset", doff[0], doff[1], ch);
    expect_same_bits("quant_init_mse step, offset", mse[0], mse[1], 2 * ch);
    expect_same_bits("quant_backward_span", span[0], span[1], per + 2);
    cr_expect_eq(memcmp(bytes[0], bytes[1], per), 0, "quant_codes_bytes");
    for (size_t i = 0; i < per; i++)
        cr_assert_eq(bytes[0][i], codes[0][per + i], "quant_codes_bytes against quant_forward at %zu",
                     i);
    cr_expect(isnan(dstep[0][0]), "the NaN reaches channel 0's step gradient");
    for (int w = 0; w < 2; w++)
        free(out[w]), free(codes[w]), free(din[w]), free(dstep[w]), free(doff[w]), free(mse[w]),
            free(span[w]), free(bytes[w]);
    free(v), free(dout);
}

/* The quantizer on channel blocks of 8 and 16 (quant_forward_blocked,
 * quant_backward_blocked: the path of a quantized conv whose backward runs
 * on oneDNN): the AVX-512 build's 16x16 transposes and the base build's
 * 8x8 ones give the same values and din, and the step's sum in the same
 * order. Plane sizes that leave a 16-position part, an 8-position group and
 * a tail; padding channels; a NaN. */
Test(isa, quant_blocked_same_bits)
{
    need_avx512();
    lsq_rng r;
    rng_seed(&r, 17, 0);
    quant_range q;
    quant_range_init(&q, 2, 0);
    static const int blocks[] = {8, 16}, hws[] = {49, 196, 27};
    for (int bi = 0; bi < 2; bi++)
        for (int hi = 0; hi < 3; hi++)
            for (int pad = 0; pad < 2; pad++) {
                const int B = blocks[bi], nc = pad ? B - 3 : B;
                const size_t hw = (size_t)hws[hi], n = (size_t)B * hw;
                float *x = randoms(&r, n, 1.0f), *dout = randoms(&r, n, 1.0f);
                x[hw + 2] = NAN;
                float *out[2], *din[2];
                double sum[2];
                for (int w = 0; w < 2; w++) {
                    use_path(w);
                    out[w] = malloc(n * sizeof(float));
                    cr_assert(out[w]);
                    quant_forward_blocked(out[w], B, x, nc, hw, 0.3f, &q);
                    din[w] = copy_of(dout, n); /* += onto something */
                    quant_backward_blocked(din[w], 0, dout, B, x, nc, hw, 0.3f, &q, &sum[w]);
                }
                char what[64];
                snprintf(what, sizeof what, "quant_forward_blocked %d/%d, %zu", nc, B, hw);
                expect_same_bits(what, out[0], out[1], n);
                snprintf(what, sizeof what, "quant_backward_blocked %d/%d, %zu", nc, B, hw);
                expect_same_bits(what, din[0], din[1], n);
                cr_expect(isnan(sum[0]) && isnan(sum[1]), "the NaN reaches both sums");
                /* the sum's order, without the NaN */
                x[hw + 2] = 0.25f;
                for (int w = 0; w < 2; w++) {
                    use_path(w);
                    quant_backward_blocked(NULL, 1, dout, B, x, nc, hw, 0.3f, &q, &sum[w]);
                }
                cr_expect_eq(memcmp(&sum[0], &sum[1], sizeof sum[0]), 0,
                             "step sum %.17g (base) %.17g (avx512), block %d, hw %zu", sum[0],
                             sum[1], B, hw);
                for (int w = 0; w < 2; w++) free(out[w]), free(din[w]);
                free(x), free(dout);
            }
}

/* The batch norm's input gradient into channel blocks of 8 and 16
 * (batchnorm_backward_blocked) on each path: the same bits, with and
 * without the fused ReLU, padding channels and every kind of tail. */
Test(isa, bn_blocked_same_bits)
{
    need_avx512();
    lsq_rng r;
    rng_seed(&r, 19, 0);
    static const int blocks[] = {8, 16}, hws[] = {49, 196, 27};
    for (int bi = 0; bi < 2; bi++)
        for (int hi = 0; hi < 3; hi++)
            for (int pad = 0; pad < 2; pad++) {
                const int B = blocks[bi], nc = pad ? B - 3 : B;
                const size_t hw = (size_t)hws[hi], n = (size_t)B * hw;
                float *x = randoms(&r, n, 1.0f), *g = randoms(&r, n, 1.0f);
                float *cf = randoms(&r, (size_t)B * BN_COEFS, 0.5f);
                for (int c = 0; c < B; c++) cf[c * BN_COEFS + BN_CF_RELU] = (float)(c % 2);
                x[5] = NAN;
                float *out[2];
                for (int w = 0; w < 2; w++) {
                    use_path(w);
                    out[w] = malloc(n * sizeof(float));
                    cr_assert(out[w]);
                    batchnorm_backward_blocked(out[w], B, g, x, cf, nc, hw);
                }
                char what[64];
                snprintf(what, sizeof what, "batchnorm_backward_blocked %d/%d, %zu", nc, B, hw);
                expect_same_bits(what, out[0], out[1], n);
                free(out[0]), free(out[1]), free(x), free(g), free(cf);
            }
}

/* The training forward's product on codes (nn/dconv.h) on each path,
 * against its exact value: row counts that leave a lone panel or a part of
 * one, widths that end in every kind of column block (64, 32, 8), the
 * largest codes of 3 bits, nothing written past column nb and nothing read
 * past what dconv.h allows. */
Test(isa, dconv_igemm_same_bits)
{
    need_avx512();
    lsq_rng r;
    rng_seed(&r, 14, 0);
    static const int MS[] = {1, 3, 4, 5, 8, 12, 16};
    static const int NBS[] = {8, 16, 24, 32, 40, 64, 72, 96, 104, 128, 200};
    const int ic = 16, kh = 3, kw = 3, taps = kh * kw, kpairs = ic / 2 * taps, maxoff = 150;
    int off[16 / 2 * 9];
    for (int kp = 0; kp < kpairs; kp++) off[kp] = (int)(rng_uniform(&r) * maxoff);
    int maxo = 0;
    for (int kp = 0; kp < kpairs; kp++) maxo = off[kp] > maxo ? off[kp] : maxo;
    /* the codes end where a page without access starts: a read past what
     * dconv.h allows (nb rounded up to DCONV_INB) faults */
    const size_t npos = (size_t)maxoff + 200 + DCONV_INB, page = 4096;
    const size_t span = (2 * npos + page - 1) / page * page;
    uint8_t *map = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    cr_assert(map != MAP_FAILED);
    cr_assert(mprotect(map + span, page, PROT_NONE) == 0);
    uint8_t *src = malloc(2 * npos);
    cr_assert(src);
    /* activation codes 0..7, mostly the largest, weights -4..3 */
    for (size_t i = 0; i < 2 * npos; i++) src[i] = (uint8_t)(i % 3 ? 7 : rng_uniform(&r) * 8);
    for (size_t mi = 0; mi < sizeof MS / sizeof *MS; mi++) {
        const int m = MS[mi];
        int32_t *codes = malloc(sizeof *codes * (size_t)m * ic * taps);
        int16_t *ap = malloc(sizeof *ap * dconv_packed_codes(m, kpairs));
        float *scale = malloc(sizeof *scale * (size_t)m);
        cr_assert(codes && ap && scale);
        for (int i = 0; i < m * ic * taps; i++)
            codes[i] = i % 5 ? -4 + (int)(rng_uniform(&r) * 8) : (i % 2 ? -4 : 3);
        for (int i = 0; i < m; i++) scale[i] = 0.01f + 0.003f * (float)i;
        dconv_pack_codes(ap, codes, m, ic, kh, kw);
        for (size_t ni = 0; ni < sizeof NBS / sizeof *NBS; ni++) {
            const int nb = NBS[ni];
            const size_t need = 2 * ((size_t)maxo + (size_t)(nb + DCONV_INB - 1) / DCONV_INB * DCONV_INB);
            uint8_t *b = map + span - need;
            memcpy(b, src, need);
            const size_t ldc = (size_t)nb + 16;
            float *want = malloc(sizeof *want * (size_t)m * ldc), *got[2];
            cr_assert(want);
            for (int i = 0; i < m; i++)
                for (size_t j = 0; j < ldc; j++) {
                    float v = -1.0f;
                    if (j < (size_t)nb) {
                        int32_t sum = 0;
                        for (int kp = 0; kp < kpairs; kp++) {
                            const int c0 = kp / taps * 2, t = kp % taps;
                            const uint8_t *bp = b + 2 * ((size_t)off[kp] + j);
                            sum += codes[((size_t)i * ic + c0) * taps + t] * bp[0] +
                                   codes[((size_t)i * ic + c0 + 1) * taps + t] * bp[1];
                        }
                        v = (float)sum * scale[i];
                    }
                    want[(size_t)i * ldc + j] = v;
                }
            for (int w = 0; w < 2; w++) {
                got[w] = malloc(sizeof *got[w] * (size_t)m * ldc);
                cr_assert(got[w]);
                for (size_t q = 0; q < (size_t)m * ldc; q++) got[w][q] = -1.0f;
                use_path(w);
                dconv_igemm(got[w], ldc, ap, scale, m, kpairs, b, off, nb);
            }
            use_path(1);
            char what[64];
            snprintf(what, sizeof what, "dconv_igemm m %d nb %d", m, nb);
            expect_same_bits(what, got[0], got[1], (size_t)m * ldc);
            size_t bad = 0;
            for (size_t q = 0; q < (size_t)m * ldc; q++)
                bad += memcmp(got[1] + q, want + q, sizeof *want) != 0;
            cr_expect_eq(bad, 0, "%s: %zu floats differ from the exact sums", what, bad);
            free(want), free(got[0]), free(got[1]);
        }
        free(codes), free(ap), free(scale);
    }
    free(src);
    munmap(map, span + page);
}

/* The integer engine's epilogue on each path: every kind, with and
 * without the residual add, the LSQ+ term and integer sums, on widths that
 * are and are not multiples of 16 (the avx512 path's own loops), codes
 * clipped at both ends. */
Test(isa, epilogue_same_bits)
{
    need_avx512();
    lsq_rng r;
    rng_seed(&r, 12, 0);
    static const int widths[] = {16, 32, 64, 48, 20, 7};
    const int m = 37, hw = 5;
    int cases = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        const int n = widths[wi];
        float *accf = randoms(&r, (size_t)m * n, 40.0f), *a = randoms(&r, n, 0.02f);
        float *b = randoms(&r, n, 0.5f), *corr = randoms(&r, (size_t)hw * n, 0.3f);
        float *ad = randoms(&r, (size_t)m * n, 1.0f);
        int32_t *acc = malloc(sizeof *acc * (size_t)m * n);
        for (size_t i = 0; i < (size_t)m * n; i++) acc[i] = (int32_t)lrintf(accf[i] * 8.0f);
        void *out[2] = {malloc(sizeof(float) * (size_t)m * n), malloc(sizeof(float) * (size_t)m * n)};
        for (int kind = LSQ_EPI_VALUE; kind <= LSQ_EPI_S8; kind++)
            for (int add = 0; add <= 2; add++)
                for (int withcorr = 0; withcorr <= 1; withcorr++)
                    for (int intacc = 0; intacc <= 1; intacc++) {
                        if (add && (kind == LSQ_EPI_U8 || kind == LSQ_EPI_S8)) continue;
                        const float lo = kind == LSQ_EPI_S8 ? -2.0f : 0.0f;
                        const float hi = kind == LSQ_EPI_BOUNDED ? 6.0f : kind == LSQ_EPI_S8 ? 1.0f : 3.0f;
                        const lsq_epi e = {n, hw, kind, kind == LSQ_EPI_BOUNDED, lo, hi, a, b,
                                           withcorr ? corr : NULL, add};
                        for (int w = 0; w < 2; w++) {
                            use_path(w);
                            memset(out[w], 0x5a, sizeof(float) * (size_t)m * n);
                            lsq_epi_rows(&e, intacc ? acc : NULL, intacc ? NULL : accf, out[w], m,
                                         3, add ? ad : NULL);
                        }
                        cr_expect_eq(memcmp(out[0], out[1], sizeof(float) * (size_t)m * n), 0,
                                     "lsq_epi_rows: %d channels, kind %d, add %d, corr %d, int %d",
                                     n, kind, add, withcorr, intacc);
                        /* the two variants with vector loops of their own on
                         * each path, against the formula */
                        const int codes = kind == LSQ_EPI_U8 || kind == LSQ_EPI_S8;
                        if (intacc && !withcorr && ((codes && !add) || (kind == LSQ_EPI_VALUE && add == 2)))
                            for (int i = 0; i < m; i++)
                                for (int c = 0; c < n; c++) {
                                    const size_t at = (size_t)i * n + c;
                                    const float t = (float)acc[at] * a[c] + b[c];
                                    if (codes) {
                                        float x = t < lo ? lo : t;
                                        x = x > hi ? hi : x;
                                        const int8_t want = (int8_t)(int32_t)quant_round(x);
                                        for (int w = 0; w < 2; w++)
                                            cr_assert_eq(((int8_t *)out[w])[at], want,
                                                         "path %d, %d channels, kind %d at %zu", w,
                                                         n, kind, at);
                                    } else {
                                        float x = t + ad[at];
                                        x = x > 0.0f ? x : 0.0f;
                                        for (int w = 0; w < 2; w++)
                                            cr_assert_eq(((float *)out[w])[at], x,
                                                         "path %d, %d channels, add at %zu", w, n,
                                                         at);
                                    }
                                }
                        cases++;
                    }
        free(accf), free(a), free(b), free(corr), free(ad), free(acc), free(out[0]), free(out[1]);
    }
    cr_assert_eq(cases, 6 * (2 * 3 * 2 * 2 + 2 * 2 * 2));
}

/* A few SGD steps of a whole network from the same start on each path:
 * every parameter, step size and momentum after them. */
static void train_both(const char *arch, int bits, int nesterov)
{
    need_avx512();
    spec_quant q;
    memset(&q, 0, sizeof q);
    q.enabled = bits > 0, q.weight_bits = q.act_bits = bits, q.first_last_bits = 8;
    lsq_err err;
    json_t *l = net_zoo_layers(arch, 1, 28, 28, &err);
    cr_assert(l, "%s", err.message);
    const int n = 8, steps = 3;
    lsq_rng r;
    rng_seed(&r, 13, 0);
    float *x = malloc(sizeof *x * n * 28 * 28);
    for (int i = 0; i < n * 28 * 28; i++) x[i] = (float)rng_uniform(&r);
    int32_t y[8] = {0, 3, 5, 9, 1, 2, 7, 7};
    float dl[80];
    float *params[2], *mom[2];
    size_t np = 0;
    for (int w = 0; w < 2; w++) {
        use_path(w);
        lsq_net net;
        cr_assert_eq(net_build(&net, l, bits ? &q : NULL, 10, n, &err), LSQ_OK, "%s", err.message);
        net_init_params(&net, 5);
        if (bits) net_quant_init_weights(&net, QINIT_PAPER);
        lsq_sgd opt;
        cr_assert_eq(sgd_init(&opt, &net, &err), LSQ_OK);
        for (int s = 0; s < steps; s++) {
            const float *lg = net_forward(&net, x, n, 1);
            xent_forward(net.probs, lg, y, n, 10);
            memset(dl, 0, sizeof dl);
            xent_backward(dl, net.probs, y, n, 10, 1.0f);
            net_zero_grads(&net);
            net_backward(&net, dl, n);
            sgd_step(&opt, &net, 0.05f, 0.9f, 1e-4f, nesterov);
        }
        np = net.n_params;
        params[w] = copy_of(net.params, np);
        mom[w] = copy_of(opt.momentum, np);
        sgd_free(&opt);
        net_free(&net);
    }
    char what[64];
    snprintf(what, sizeof what, "%s W%d, %d steps: parameters", arch, bits ? bits : 32, steps);
    expect_same_bits(what, params[0], params[1], np);
    snprintf(what, sizeof what, "%s W%d, %d steps: momentum", arch, bits ? bits : 32, steps);
    expect_same_bits(what, mom[0], mom[1], np);
    for (int w = 0; w < 2; w++) free(params[w]), free(mom[w]);
    free(x);
    json_decref(l);
}

Test(isa, resnet20_w2a2_steps_same_bits, .timeout = 120) { train_both("resnet20", 2, 0); }
Test(isa, cnn_small_w4a4_nesterov_steps_same_bits, .timeout = 120)
{
    train_both("cnn-small", 4, 1);
}
