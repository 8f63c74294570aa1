/* conv2d, one image at a time. Dense undilated convs take one of two paths:
 *
 * - direct (stride 1, "same" padding, the 3x3 convs of the zoo): the image is
 *   copied once into a zero-padded plane and dconv.h's kernels multiply the
 *   weights with it in place (no im2col matrix, no packing of it); the
 *   backward data pass is the same kernel with the weights transposed and
 *   flipped, over the padded output gradient;
 * - im2col + SGEMM (every other shape):
 *
 * For image i, with K = IC*KH*KW and P = OH*OW:
 *   forward   out_i (OC, P) = w (OC, K) · col_i (K, P) + b
 *   backward  dw (OC, K)   += dout_i (OC, P) · col_i^T (P, K)
 *             dcol (K, P)   = w^T (K, OC) · dout_i (OC, P);  din_i += col2im(dcol)
 * Images are handed out to OpenMP threads dynamically, each thread with its
 * own im2col slot of scratch and single-threaded SGEMM (see par.h); dw and db
 * are summed per fixed group of images (below), so results do not depend on
 * the thread count. A 1x1, stride 1, unpadded conv
 * needs no im2col: the input image already is col_i.
 *
 * Grouped and dilated convs have their own paths, at the end of the file:
 * depthwise direct loops, or im2col + SGEMM per group. */
#include "core/par.h"
#include "core/vsum.h"
#include "nn/dconv.h"
#include "nn/dnnl_conv.h"
#include "nn/layers.h"
#include "quant/quant.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static conv2d_path path_choice = CONV2D_PATH_AUTO;

void conv2d_set_path(conv2d_path p) { path_choice = p; }

/* The index in vals[0..n) of environment variable var's value: -1 when it
 * is unset or empty, -2 for any other value, with err naming var and the
 * values it takes ("LSQ_CONV=x: use auto, own or dnnl"). */
static int env_choice(const char *var, const char *const *vals, int n, lsq_err *err)
{
    const char *e = getenv(var);
    if (!e || !*e) return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(e, vals[i])) return i;
    char use[96] = "";
    for (int i = 0; i < n; i++) {
        const size_t len = strlen(use);
        snprintf(use + len, sizeof use - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ",
                 vals[i]);
    }
    lsq_err_set(err, LSQ_ERR_INVALID, var, "%s=%s: use %s", var, e, use);
    return -2;
}

/* ---- whose kernels: the engine's own or oneDNN's (dnnl_conv.h) ---- */

const char *const CONV2D_BACKEND_NAMES[] = {"auto", "own", "dnnl"};
_Static_assert(sizeof CONV2D_BACKEND_NAMES / sizeof *CONV2D_BACKEND_NAMES ==
                   CONV2D_BACKEND_COUNT,
               "a name per conv2d_backend");

static int backend_set; /* 0: LSQ_CONV not read yet */
static conv2d_backend backend_choice = CONV2D_BACKEND_AUTO;

void conv2d_set_backend(conv2d_backend b)
{
    backend_choice = b;
    backend_set = 1;
}

lsq_status conv2d_backend_from_env(lsq_err *err)
{
    const int i = env_choice("LSQ_CONV", CONV2D_BACKEND_NAMES, CONV2D_BACKEND_COUNT, err);
    backend_choice = i >= 0 ? (conv2d_backend)i : CONV2D_BACKEND_AUTO;
    backend_set = 1;
    return i == -2 ? LSQ_ERR_INVALID : LSQ_OK;
}

conv2d_backend conv2d_get_backend(void)
{
    if (!backend_set) conv2d_backend_from_env(NULL);
    return backend_choice;
}

static int is_plain(const conv2d_dims *d);
static void bias_grad(float *db, const float *g, int oc, int p);

/* Where oneDNN beats the engine's own kernels, and in which layout: from
 * bench/conv_prims.c's CPU ms at one thread (the measure that other work
 * on the shared 2-core AVX-512 machine leaves alone; docs/results.md,
 * "Conv primitives"), reorders from and to NCHW included. pass: 0
 * forward, 1 backward data, 2 backward weights. Returns a
 * dnnl_conv_layout, or -1 for the own kernels. */
static int dnnl_table(const conv2d_dims *d, int pass)
{
    /* depthwise: jit_dw beats the plane loops 2-7x, reorders included */
    if (d->groups > 1 && d->groups == d->ic && d->dilation <= 1) return DNNL_CONV_BLOCKED;
    /* other grouped and dilated shapes: not measured */
    if (!is_plain(d)) return -1;
    /* a first layer's few input channels: the reorders cost what the
     * blocked kernel saves, and the own kernels keep the fusions */
    if (d->ic < 8) return -1;
    if (d->kh == 1 && d->kw == 1) {
        /* 1x1: reorders cost more than they save; on NCHW oneDNN's GEMM
         * wins, but not for the weight gradient of narrow outputs */
        if (pass == 2 && d->oc < 32) return -1;
        return DNNL_CONV_PLAIN;
    }
    /* 3x3, strides 1 and 2, 16 to 64 channels: 1.5-3x */
    return DNNL_CONV_BLOCKED;
}

/* The layout conv2d runs a pass in on oneDNN, or -1: the own kernels. */
static int dnnl_layout(const conv2d_dims *d, int pass)
{
    if (!dnnl_conv_available() || path_choice == CONV2D_PATH_GEMM) return -1;
    switch (conv2d_get_backend()) {
    case CONV2D_BACKEND_OWN: return -1;
    case CONV2D_BACKEND_DNNL: {
        const int l = dnnl_table(d, pass);
        return l < 0 ? DNNL_CONV_BLOCKED : l;
    }
    default: return dnnl_table(d, pass);
    }
}

int conv2d_uses_dnnl(const conv2d_dims *d, int pass) { return dnnl_layout(d, pass) >= 0; }

/* ---- oneDNN's Winograd where its rounding is allowed (dnnl_conv_alg) ---- */

const char *const CONV2D_WINO_NAMES[] = {"auto", "off", "on"};
_Static_assert(sizeof CONV2D_WINO_NAMES / sizeof *CONV2D_WINO_NAMES == CONV2D_WINO_COUNT,
               "a name per conv2d_wino");

static int wino_set; /* 0: LSQ_WINO not read yet */
/* off unless asked for: the table's rows save 0.2-0.3 of those convs' time,
 * well under 1% of a training step, which whole-step runs on this machine
 * could not tell from their noise (docs/results.md, "Winograd") */
static conv2d_wino wino_choice = CONV2D_WINO_OFF;

void conv2d_set_wino(conv2d_wino w)
{
    wino_choice = w;
    wino_set = 1;
}

lsq_status conv2d_wino_from_env(lsq_err *err)
{
    static const char *const vals[] = {"0", "1"};
    const int i = env_choice("LSQ_WINO", vals, 2, err);
    wino_choice = i == 1 ? CONV2D_WINO_ON : CONV2D_WINO_OFF;
    wino_set = 1;
    return i == -2 ? LSQ_ERR_INVALID : LSQ_OK;
}

conv2d_wino conv2d_get_wino(void)
{
    if (!wino_set) conv2d_wino_from_env(NULL);
    return wino_choice;
}

/* Where Winograd beats the choice of dnnl_table (oneDNN's direct blocked
 * conv): from bench/conv_prims.c's CPU ms at one thread, reorders included,
 * in two runs (docs/results.md, "Winograd"). pass as dnnl_table's. Only
 * where both runs agreed: the forward to 64 channels from 32 or more
 * (0.72-0.80 of the direct conv's time), the input gradient of 64 to 64
 * (0.71-0.79). 16 and 32 channels lose or tie (0.95-1.25), and so does the
 * weight gradient everywhere (0.93-1.09 at 64 channels). */
static int wino_table(const conv2d_dims *d, int pass)
{
    if (pass == 0) return d->ic >= 32 && d->oc >= 64;
    if (pass == 1) return d->ic >= 64 && d->oc >= 64;
    return 0;
}

int conv2d_uses_wino(const conv2d_dims *d, int pass)
{
    if (!is_plain(d) || d->kh != 3 || d->kw != 3 || d->stride != 1 ||
        dnnl_layout(d, pass) != DNNL_CONV_BLOCKED)
        return 0;
    switch (conv2d_get_wino()) {
    case CONV2D_WINO_OFF: return 0;
    case CONV2D_WINO_ON: return 1;
    default: return conv2d_get_backend() == CONV2D_BACKEND_AUTO && wino_table(d, pass);
    }
}

/* The passes of b that run Winograd, on it; the others as
 * conv2d_backward_ex runs them. Returns 0, or -1 without writing when no
 * pass runs Winograd (or oneDNN refuses it): the caller goes on. */
static int wino_backward(const conv2d_back *b, const conv2d_dims *d, float *scratch)
{
    const int wd = b->din && conv2d_uses_wino(d, 1);
    const int ww = (b->dw || b->db) && conv2d_uses_wino(d, 2);
    if (b->q_range || b->bn_coef || (!wd && !ww)) return -1;
    if (wd == (b->din != NULL) && ww == (b->dw || b->db))
        return dnnl_conv_backward_alg(b->din, b->din_set, b->dw, b->db, b->dout, b->in, b->w, d,
                                      DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD);
    conv2d_back rest = *b;
    if (wd) {
        if (dnnl_conv_backward_alg(b->din, b->din_set, NULL, NULL, b->dout, b->in, b->w, d,
                                   DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD) != 0)
            return -1;
        rest.din = NULL;
    } else {
        if (dnnl_conv_backward_alg(NULL, 0, b->dw, b->db, b->dout, b->in, b->w, d,
                                   DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD) != 0)
            return -1;
        rest.dw = rest.db = NULL;
    }
    return conv2d_backward_ex(&rest, d, scratch);
}

/* ---- the backward on codes: f32 or bf16 (LSQ_BWD) ---- */

const char *const CONV2D_BWD_NAMES[] = {"f32", "bf16"};
_Static_assert(sizeof CONV2D_BWD_NAMES / sizeof *CONV2D_BWD_NAMES == CONV2D_BWD_COUNT,
               "a name per conv2d_bwd");

static int bwd_set; /* 0: LSQ_BWD not read yet */
static conv2d_bwd bwd_choice = CONV2D_BWD_F32;

void conv2d_set_bwd(conv2d_bwd b)
{
    bwd_choice = b;
    bwd_set = 1;
}

lsq_status conv2d_bwd_from_env(lsq_err *err)
{
    const int i = env_choice("LSQ_BWD", CONV2D_BWD_NAMES, CONV2D_BWD_COUNT, err);
    bwd_choice = i >= 0 ? (conv2d_bwd)i : CONV2D_BWD_F32;
    bwd_set = 1;
    return i == -2 ? LSQ_ERR_INVALID : LSQ_OK;
}

conv2d_bwd conv2d_get_bwd(void)
{
    if (!bwd_set) conv2d_bwd_from_env(NULL);
    return bwd_choice;
}

/* bf16 replaces a float backward that runs on oneDNN in both passes: the
 * shapes the engine's own kernels keep (first layers, the fused direct
 * path) keep their fusions. */
int conv2d_backward_codes_ready(const conv2d_dims *d)
{
    return conv2d_get_bwd() == CONV2D_BWD_BF16 && conv2d_uses_dnnl(d, 1) &&
           conv2d_uses_dnnl(d, 2) && dnnl_conv_bf16_ready(d);
}

int conv2d_backward_codes(float *din, int din_set, float *dw, float *db, const float *dout,
                          const uint16_t *xcodes, const int32_t *wcodes, float s_x,
                          const float *s_w, int w_channels, const conv2d_dims *d)
{
    if (!conv2d_backward_codes_ready(d) ||
        dnnl_conv_backward_bf16(din, din_set, dw, dout, xcodes, wcodes, s_x, s_w, w_channels,
                                d) != 0)
        return -1;
    if (db) {
        /* the bias's gradient stays f32: plain sums of dout */
        const int p = d->oh * d->ow;
        for (int i = 0; i < d->n; i++) bias_grad(db, dout + (size_t)i * d->oc * p, d->oc, p);
    }
    return 0;
}

int conv2d_dims_init(conv2d_dims *d, int n, int ic, int ih, int iw, int oc,
                     int kh, int kw, int stride, int pad)
{
    return conv2d_dims_init_ex(d, n, ic, ih, iw, oc, kh, kw, stride, pad, 1, 1);
}

int conv2d_dims_init_ex(conv2d_dims *d, int n, int ic, int ih, int iw, int oc, int kh, int kw,
                        int stride, int pad, int dilation, int groups)
{
    memset(d, 0, sizeof *d);
    if (n < 1 || ic < 1 || ih < 1 || iw < 1 || oc < 1 || kh < 1 || kw < 1 ||
        stride < 1 || pad < 0 || dilation < 1 || groups < 1 || ic % groups || oc % groups)
        return -1;
    /* the extent of the dilated kernel */
    const long ekh = (long)dilation * (kh - 1) + 1, ekw = (long)dilation * (kw - 1) + 1;
    if (ih + 2L * pad < ekh || iw + 2L * pad < ekw) return -1;
    int oh = (int)((ih + 2L * pad - ekh) / stride + 1);
    int ow = (int)((iw + 2L * pad - ekw) / stride + 1);
    if (oh < 1 || ow < 1) return -1;
    *d = (conv2d_dims){.n = n, .ic = ic, .ih = ih, .iw = iw, .oc = oc,
                       .kh = kh, .kw = kw, .stride = stride, .pad = pad,
                       .dilation = dilation, .groups = groups, .oh = oh, .ow = ow};
    return 0;
}

/* Dense and undilated: the paths below (direct, integer, im2col + SGEMM).
 * Every other shape takes the grouped paths at the end of this file. A
 * dims struct filled without conv2d_dims_init (0 in both) counts as plain. */
static int is_plain(const conv2d_dims *d) { return d->groups <= 1 && d->dilation <= 1; }

/* Images are handed to threads dynamically (a thread that the OS
 * preempts does not hold up the others), so dw and db are summed per GROUP of
 * images, not per thread: group g always covers the same images, whatever
 * thread runs it, and the group partials are added in group order. Results
 * are therefore the same for every thread count. */
#define CONV_GROUPS 16

static int n_groups(int n) { return n < CONV_GROUPS ? n : CONV_GROUPS; }

static size_t align16(size_t s) { return (s + 15) & ~(size_t)15; }

/* Per-thread im2col slot: col (K, P), 64-byte aligned. */
static size_t col_floats(const conv2d_dims *d)
{
    return align16((size_t)d->ic * d->kh * d->kw * d->oh * d->ow);
}

/* Per-group partial sums: dw (OC, K), then db (OC). */
static size_t part_floats(const conv2d_dims *d)
{
    return align16((size_t)d->oc * d->ic * d->kh * d->kw + (size_t)d->oc);
}

/* Sums of one image's output gradient per channel into db. */
static void bias_grad(float *db, const float *g, int oc, int p)
{
    for (int o = 0; o < oc; o++) {
        db[o] += vsum_sum(g + (size_t)o * p, p);
    }
}

/* dw += the ng group partials, added in group order (deterministic). Called
 * by every thread of the backward pass's parallel region: the loop is shared
 * out among them. */
static void add_dw_parts(float *dw, const float *parts, size_t psz, int ng, size_t wsz)
{
#pragma omp for schedule(static)
    for (size_t j = 0; j < wsz; j++) {
        float acc = dw[j];
        for (int gi = 0; gi < ng; gi++) acc += parts[psz * (size_t)gi + j];
        dw[j] = acc;
    }
}

/* db += the ng group partials (stored after each group's dw), in group order. */
static void add_db_parts(float *db, const float *parts, size_t psz, int ng, size_t wsz, int oc)
{
    for (int o = 0; o < oc; o++) {
        float acc = db[o];
        for (int gi = 0; gi < ng; gi++) acc += parts[psz * (size_t)gi + wsz + o];
        db[o] = acc;
    }
}

/* ---- direct path geometry ---- */

typedef struct {
    int wp;        /* padded width */
    size_t plane;  /* floats of one padded plane, (IH + 2 pad) * WP */
    int nv;        /* outputs in padded coordinates, OH * WP */
    int nb;        /* nv rounded up to the kernel's column block */
    int n8;        /* nv rounded up to 8: the columns dconv_gemm computes */
    size_t pin;    /* floats of the padded input: IC planes + slack */
    size_t pout;   /* floats of the padded output gradient: OC planes + slack */
    size_t cbuf;   /* rows of padded-coordinate output: max(OC, IC) * nb */
} dgeom;

/* Padded-coordinate outputs below which the weight gradient takes SGEMM
 * (resnet20's 7x7 planes: 63; its 14x14 planes, 224, stay direct). */
#define DCONV_WGRAD_MIN 128

static int direct_shape(const conv2d_dims *d)
{
    if (!is_plain(d)) return 0;
    /* 1x1 convs stay on SGEMM: they need no im2col there either. Tap
     * offsets are ints: planes of channels must stay well inside INT_MAX. */
    const size_t planes = (size_t)(d->ic > d->oc ? d->ic : d->oc) *
                          (size_t)(d->ih + 2 * d->pad) * (size_t)(d->iw + 2 * d->pad);
    return d->stride == 1 && d->pad >= 1 && d->kh == 2 * d->pad + 1 && d->kw == 2 * d->pad + 1 &&
           d->oh == d->ih && d->ow == d->iw && planes < (size_t)INT_MAX / 2;
}

static void dgeom_init(dgeom *g, const conv2d_dims *d)
{
    /* dconv_gemm reads up to kw + DCONV_NB floats past the last plane */
    const size_t slack = align16((size_t)d->kw + DCONV_NB + 8);
    g->wp = d->iw + 2 * d->pad;
    g->plane = (size_t)(d->ih + 2 * d->pad) * g->wp;
    g->nv = d->oh * g->wp;
    g->nb = (g->nv + DCONV_NB - 1) / DCONV_NB * DCONV_NB;
    g->n8 = (g->nv + 7) / 8 * 8;
    g->pin = align16((size_t)d->ic * g->plane + slack);
    g->pout = align16((size_t)d->oc * g->plane + slack);
    g->cbuf = align16((size_t)(d->oc > d->ic ? d->oc : d->ic) * g->nb);
}

/* Bytes of the integer forward's padded input: (IC + 1) / 2 interleaved
 * channel pairs of PLANE positions, then what dconv_igemm reads past them
 * (kw + a column block of positions, and the rounding of nv to 8). */
static size_t codes_bytes(const conv2d_dims *d, const dgeom *g)
{
    return 2 * ((size_t)(d->ic + 1) / 2 * g->plane + (size_t)d->kw + DCONV_INB + 8) + 64;
}

static int use_direct(const conv2d_dims *d)
{
    if (path_choice == CONV2D_PATH_GEMM || !direct_shape(d)) return 0;
    return 1;
}

/* Where the backward's cb starts in a slot: past the padded buffers and
 * past the im2col matrix of the small planes' weight gradient, because cb
 * may hold the output gradient (made from a batch norm's) while they are
 * written. */
static size_t back_cb_offset(const conv2d_dims *d, const dgeom *g)
{
    const size_t a = g->pin + g->pout, c = col_floats(d);
    return align16(a > c ? a : c);
}

/* Per-thread slot: the im2col matrix, or the direct path's buffers. */
static size_t slot_floats(const conv2d_dims *d)
{
    size_t s = col_floats(d);
    if (direct_shape(d)) {
        dgeom g;
        dgeom_init(&g, d);
        size_t t = back_cb_offset(d, &g) + g.cbuf;
        if (t > s) s = t;
        /* the integer forward: the code planes, then cbuf */
        t = align16((codes_bytes(d, &g) + 3) / 4) + g.cbuf;
        if (t > s) s = t;
    }
    return s;
}

/* The direct path's shared buffers, after the slots and the partial sums:
 * the packed weights (forward), or the transposed weights and their packed
 * form (backward), then the tap offsets of both passes. */
static size_t pack_floats(const conv2d_dims *d)
{
    if (!direct_shape(d)) return 0;
    const int k = d->ic * d->kh * d->kw, kt = d->oc * d->kh * d->kw;
    size_t fw = dconv_packed_floats(d->oc, k);
    size_t bw = (size_t)d->ic * kt + dconv_packed_floats(d->ic, kt);
    return align16(fw > bw ? fw : bw) + align16((size_t)k + kt);
}

static size_t grouped_scratch_floats(const conv2d_dims *d);

size_t conv2d_scratch_floats(const conv2d_dims *d)
{
    if (!is_plain(d)) return grouped_scratch_floats(d);
    return slot_floats(d) * PAR_MAX_THREADS + part_floats(d) * CONV_GROUPS + pack_floats(d);
}

static float *pack_area(const conv2d_dims *d, float *scratch)
{
    return scratch + slot_floats(d) * PAR_MAX_THREADS + part_floats(d) * CONV_GROUPS;
}

/* The tap offsets, ints in the float scratch (allocated storage: its type
 * is what was last stored). */
static int *offsets_area(const conv2d_dims *d, float *scratch)
{
    return (int *)(pack_area(d, scratch) + pack_floats(d) -
                   align16((size_t)(d->ic + d->oc) * d->kh * d->kw));
}

/* dst (C planes of the padded geometry, + slack) = src (C, H, W) with zeros
 * around it and in the slack. */
static void pad_planes(float *dst, size_t total, const float *src, int c, int h, int w,
                       int pad, const dgeom *g)
{
    /* only the border is zeroed: the buffer is shared with other layers.
     * Rows are short (7 to 28 floats): plain loops, not library calls. */
    const size_t wp = (size_t)g->wp, edge = (size_t)pad * wp + pad;
    for (int ch = 0; ch < c; ch++) {
        float *pl = dst + ch * g->plane;
        const float *sp = src + (size_t)ch * h * w;
        /* top rows and row 0's left pad; then between rows, one run covers
         * a row's right pad and the next row's left pad */
        for (size_t j = 0; j < edge; j++) pl[j] = 0.0f;
        for (int y = 0; y < h; y++) {
            float *row = pl + (size_t)(y + pad) * wp + pad;
            const float *sr = sp + (size_t)y * w;
#pragma omp simd
            for (int x = 0; x < w; x++) row[x] = sr[x];
            const size_t z = y + 1 < h ? 2 * (size_t)pad : edge;
            for (size_t j = 0; j < z; j++) row[w + j] = 0.0f;
        }
    }
    memset(dst + (size_t)c * g->plane, 0, sizeof *dst * (total - (size_t)c * g->plane));
}

/* Tap offsets into a padded buffer of `c` planes: k = (ch, ki, kj). */
static void tap_offsets(int *off, int c, const conv2d_dims *d, const dgeom *g)
{
    for (int ch = 0; ch < c; ch++)
        for (int ki = 0; ki < d->kh; ki++)
            for (int kj = 0; kj < d->kw; kj++)
                *off++ = (int)(ch * g->plane + (size_t)ki * g->wp + kj);
}

/* y (OC, OH, OW) = the rows of padded-coordinate output cb (row stride
 * nb) without their padding columns, + b (may be NULL). */
static void unpad_output(float *y, const float *cb, const float *b, const conv2d_dims *d,
                         const dgeom *g)
{
    const size_t p = (size_t)d->oh * d->ow;
    for (int o = 0; o < d->oc; o++) {
        const float bo = b ? b[o] : 0.0f;
        for (int r = 0; r < d->oh; r++) {
            const float *src = cb + (size_t)o * g->nb + (size_t)r * g->wp;
            float *dst = y + (size_t)o * p + (size_t)r * d->ow;
#pragma omp simd
            for (int x = 0; x < d->ow; x++) dst[x] = src[x] + bo;
        }
    }
}

static void direct_forward(float *out, const float *in, const float *w, const float *b,
                           const conv2d_dims *d, float *scratch)
{
    const int k = d->ic * d->kh * d->kw, oc = d->oc, p = d->oh * d->ow;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = slot_floats(d);
    dgeom g;
    dgeom_init(&g, d);
    /* the weights packed once for every image */
    float *ap = pack_area(d, scratch);
    int *off = offsets_area(d, scratch);
    dconv_pack_a(ap, w, oc, k, (size_t)k);
    tap_offsets(off, d->ic, d, &g);

#pragma omp parallel num_threads(par_gemm_threads())
    {
        float *pin = scratch + slot * (size_t)omp_get_thread_num();
        float *cb = pin + g.pin + g.pout;
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < d->n; i++) {
            pad_planes(pin, g.pin, in + in_sz * i, d->ic, d->ih, d->iw, d->pad, &g);
            dconv_gemm(cb, (size_t)g.nb, ap, oc, k, pin, off, g.n8);
            unpad_output(out + out_sz * i, cb, b, d, &g);
        }
    }
}

/* ---- the integer forward (conv2d_forward_codes) ---- */

/* One row of the code planes: dst[2 x + h] = the code of channel h's row at
 * x (x0, x1: two channels' rows; x1 NULL for the zero channel past an odd
 * IC), and q0, q1 (when not NULL) = the quantized values, code * s. Codes
 * and values are quant_forward's, float for float: in / s clipped to
 * [0, qp], rounded half to even. Returns nonzero when the rows hold a NaN
 * (then q0 and q1 are not those of quant_forward: see pad_codes). */
static int code_row(uint8_t *dst, float *q0, float *q1, const float *x0, const float *x1,
                    int w, float s, float qp)
{
    int x = 0, nan = 0;
#if defined(__AVX2__)
    const __m256 vs = _mm256_set1_ps(s), vhi = _mm256_set1_ps(qp), zero = _mm256_setzero_ps();
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    __m256 bad = zero;
    for (; x + 8 <= w; x += 8) {
        __m256 a = _mm256_loadu_ps(x0 + x);
        __m256 b = x1 ? _mm256_loadu_ps(x1 + x) : zero;
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
        /* x < 0 ? 0 : x, then x > qp ? qp : x, as forward_block (NaN aside) */
        a = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(a, vs), zero), vhi);
        b = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(b, vs), zero), vhi);
        a = _mm256_sub_ps(_mm256_add_ps(a, magic), magic);
        b = _mm256_sub_ps(_mm256_add_ps(b, magic), magic);
        if (q0) {
            /* q >= +0 and s > 0: forward_block's "+ beta" (beta = 0) is exact */
            _mm256_storeu_ps(q0 + x, _mm256_mul_ps(a, vs));
            if (q1) _mm256_storeu_ps(q1 + x, _mm256_mul_ps(b, vs));
        }
        __m256i v = _mm256_or_si256(_mm256_cvtps_epi32(a),
                                    _mm256_slli_epi32(_mm256_cvtps_epi32(b), 8));
        v = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0xd8);
        _mm_storeu_si128((__m128i *)(dst + 2 * x), _mm256_castsi256_si128(v));
    }
    nan = _mm256_movemask_ps(bad);
#endif
    for (; x < w; x++) {
        float a = x0[x] / s, b = x1 ? x1[x] / s : 0.0f;
        nan |= a != a || b != b;
        a = a < 0.0f ? 0.0f : a;
        a = a > qp ? qp : a;
        b = b < 0.0f ? 0.0f : b;
        b = b > qp ? qp : b;
        a = quant_round(a);
        b = quant_round(b);
        if (q0) {
            q0[x] = a * s;
            if (q1) q1[x] = b * s;
        }
        dst[2 * x] = (uint8_t)(a == a ? a : 0.0f);
        dst[2 * x + 1] = (uint8_t)(b == b ? b : 0.0f);
    }
    return nan;
}

/* The code planes of one image (see dconv.h): pairs of channels
 * interleaved, zero padding around each plane, zeros after them up to
 * `bytes`; and q (when not NULL) = the image quantized, as quant_forward
 * writes it, unless the image holds a NaN: then it returns nonzero. */
static int pad_codes(uint8_t *dst, size_t bytes, float *q, const float *src, int c, int h,
                     int w, int pad, const dgeom *g, float s, float qp)
{
    const size_t wp = (size_t)g->wp, edge = 2 * ((size_t)pad * wp + pad);
    const size_t psz = (size_t)h * w;
    int nan = 0;
    for (int cp = 0; cp * 2 < c; cp++) {
        uint8_t *pl = dst + 2 * cp * g->plane;
        const float *s0 = src + 2 * cp * psz, *s1 = 2 * cp + 1 < c ? s0 + psz : NULL;
        float *q0 = q ? q + 2 * cp * psz : NULL, *q1 = q && s1 ? q0 + psz : NULL;
        memset(pl, 0, edge);
        for (int y = 0; y < h; y++) {
            const size_t r = (size_t)y * w;
            uint8_t *row = pl + 2 * ((size_t)(y + pad) * wp + pad);
            nan |= code_row(row, q0 ? q0 + r : NULL, q1 ? q1 + r : NULL, s0 + r,
                            s1 ? s1 + r : NULL, w, s, qp);
            memset(row + 2 * (size_t)w, 0, y + 1 < h ? 4 * (size_t)pad : edge);
        }
    }
    const size_t used = 2 * (size_t)((c + 1) / 2) * g->plane;
    memset(dst + used, 0, bytes - used);
    return nan;
}

int conv2d_forward_codes(float *out, float *qin, const float *in, float s_a,
                         const quant_range *ra, const int32_t *wcodes, const float *s_w,
                         int w_channels, const quant_range *rw, const float *b,
                         const conv2d_dims *d, float *scratch)
{
    const int taps = d->kh * d->kw, pairs = (d->ic + 1) / 2, kpairs = pairs * taps;
    if (path_choice != CONV2D_PATH_AUTO || !use_direct(d) || ra->is_signed ||
        !quant_pairs_fit_int16(kpairs, ra->qp, rw->qn > rw->qp ? rw->qn : rw->qp) ||
        !(s_a > 0.0f) || !isfinite(s_a) || (w_channels != 1 && w_channels != d->oc))
        return -1;
    const int oc = d->oc, p = d->oh * d->ow;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = slot_floats(d);
    dgeom g;
    dgeom_init(&g, d);
    const size_t bytes = codes_bytes(d, &g), cb_at = align16((bytes + 3) / 4);
    /* the packed codes, each row's scale, and the tap-pair offsets (in
     * positions: a pair of channels is one plane of the code planes) */
    int16_t *ap = (int16_t *)pack_area(d, scratch);
    float *scale = pack_area(d, scratch) + align16((dconv_packed_codes(oc, kpairs) + 1) / 2);
    int *off = offsets_area(d, scratch);
    assert((float *)(scale + oc) <= (float *)off);
    dconv_pack_codes(ap, wcodes, oc, d->ic, d->kh, d->kw);
    for (int o = 0; o < oc; o++) scale[o] = s_a * s_w[w_channels == 1 ? 0 : o];
    tap_offsets(off, pairs, d, &g);
    const float qp = (float)ra->qp;

#pragma omp parallel num_threads(par_gemm_threads())
    {
        float *slotp = scratch + slot * (size_t)omp_get_thread_num();
        uint8_t *codes = (uint8_t *)slotp;
        float *cb = slotp + cb_at;
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < d->n; i++) {
            float *y = out + out_sz * i;
            float *q = qin ? qin + in_sz * i : NULL;
            if (pad_codes(codes, bytes, q, in + in_sz * i, d->ic, d->ih, d->iw, d->pad, &g, s_a,
                          qp)) {
                /* NaN: quant_forward's own values (NaN stays NaN), and NaN out */
                if (q) quant_forward(q, NULL, in + in_sz * i, &s_a, NULL, 1, in_sz, ra);
                for (size_t j = 0; j < out_sz; j++) y[j] = NAN;
                continue;
            }
            dconv_igemm(cb, (size_t)g.nb, ap, scale, oc, kpairs, codes, off, g.n8);
            unpad_output(y, cb, b, d, &g);
        }
    }
    return 0;
}

static int is_pointwise(const conv2d_dims *d)
{
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

/* Output columns ox whose input column ox*s + kj - pad lies in [0, iw):
 * returns the first one in *lo and one past the last in *hi. */
static void valid_range(int o, int s, int off, int in, int *lo, int *hi)
{
    /* smallest ox with ox*s + off >= 0 */
    int a = off >= 0 ? 0 : (-off + s - 1) / s;
    /* smallest ox with ox*s + off >= in */
    int b = in - off <= 0 ? 0 : (in - off + s - 1) / s;
    if (a > o) a = o;
    if (b > o) b = o;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Stride 1 and an output as wide as the input ("same" padding): then the
 * valid part of every col row is ONE contiguous run of the input plane,
 * shifted; the columns that wrap around a row edge are fixed up after. */
static int is_same_s1(const conv2d_dims *d)
{
    return d->stride == 1 && d->ow == d->iw;
}

static void im2col_same_s1(float *col, const float *in, const conv2d_dims *d)
{
    const int oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    const size_t p = (size_t)oh * ow;
    for (int c = 0; c < d->ic; c++) {
        const float *plane = in + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi, yoff = ki - d->pad;
            valid_range(oh, 1, yoff, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, 1, xoff, iw, &xlo, &xhi);
                float *row = col + ((size_t)(c * d->kh + ki) * d->kw + kj) * p;
                if (yhi <= ylo || xhi <= xlo) {
                    memset(row, 0, sizeof *row * p);
                    continue;
                }
                memset(row, 0, sizeof *row * ((size_t)ylo * ow + xlo));
                /* from (ylo, xlo) to (yhi-1, xhi-1), both valid, inclusive */
                size_t first = (size_t)ylo * ow + xlo;
                size_t last = (size_t)(yhi - 1) * ow + (xhi - 1);
                memcpy(row + first, plane + (ptrdiff_t)(ylo + yoff) * iw + xlo + xoff,
                       sizeof *row * (last - first + 1));
                memset(row + last + 1, 0, sizeof *row * (p - last - 1));
                for (int oy = ylo; oy < yhi; oy++) {
                    float *r = row + (size_t)oy * ow;
                    for (int ox = 0; ox < xlo; ox++) r[ox] = 0.0f;
                    for (int ox = xhi; ox < ow; ox++) r[ox] = 0.0f;
                }
            }
        }
    }
}

/* din (IC, IH, IW) += col2im(dcol (K, P)) for the same_s1 shape. dcol is
 * scratch: its wrapped columns are zeroed so that each row adds in one run
 * (adding +0 leaves a value as it is). */
static void col2im_add_same_s1(float *din, float *dcol, const conv2d_dims *d)
{
    const int oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    const size_t p = (size_t)oh * ow;
    for (int c = 0; c < d->ic; c++) {
        float *plane = din + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi, yoff = ki - d->pad;
            valid_range(oh, 1, yoff, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, 1, xoff, iw, &xlo, &xhi);
                if (yhi <= ylo || xhi <= xlo) continue;
                float *row = dcol + ((size_t)(c * d->kh + ki) * d->kw + kj) * p;
                for (int oy = ylo; oy < yhi; oy++) {
                    float *r = row + (size_t)oy * ow;
                    for (int ox = 0; ox < xlo; ox++) r[ox] = 0.0f;
                    for (int ox = xhi; ox < ow; ox++) r[ox] = 0.0f;
                }
                size_t first = (size_t)ylo * ow + xlo;
                size_t len = (size_t)(yhi - 1) * ow + (xhi - 1) - first + 1;
                const float *src = row + first;
                float *dst = plane + (ptrdiff_t)(ylo + yoff) * iw + xlo + xoff;
#pragma omp simd
                for (size_t j = 0; j < len; j++) dst[j] += src[j];
            }
        }
    }
}

/* col (K, P) from one image in (IC, IH, IW). */
static void im2col(float *col, const float *in, const conv2d_dims *d)
{
    if (is_same_s1(d)) {
        im2col_same_s1(col, in, d);
        return;
    }
    const int s = d->stride, oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    for (int c = 0; c < d->ic; c++) {
        const float *plane = in + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi;
            valid_range(oh, s, ki - d->pad, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, s, xoff, iw, &xlo, &xhi);
                float *row = col + ((size_t)(c * d->kh + ki) * d->kw + kj) *
                                       (size_t)oh * ow;
                memset(row, 0, sizeof *row * (size_t)ylo * ow);
                for (int oy = ylo; oy < yhi; oy++) {
                    float *dst = row + (size_t)oy * ow;
                    const float *src = plane + (size_t)(oy * s + ki - d->pad) * iw;
                    for (int ox = 0; ox < xlo; ox++) dst[ox] = 0.0f;
                    if (s == 1) {
                        /* rows are short (OW floats): an inline loop beats
                         * a memcpy call */
                        const float *sp = src + xoff;
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++) dst[ox] = sp[ox];
                    } else {
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++)
                            dst[ox] = src[ox * s + xoff];
                    }
                    for (int ox = xhi; ox < ow; ox++) dst[ox] = 0.0f;
                }
                memset(row + (size_t)yhi * ow, 0,
                       sizeof *row * (size_t)(oh - yhi) * ow);
            }
        }
    }
}

/* din (IC, IH, IW) += col2im(dcol (K, P)) for one image. */
static void col2im_add(float *din, float *dcol, const conv2d_dims *d)
{
    if (is_same_s1(d)) {
        col2im_add_same_s1(din, dcol, d);
        return;
    }
    const int s = d->stride, oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    for (int c = 0; c < d->ic; c++) {
        float *plane = din + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi;
            valid_range(oh, s, ki - d->pad, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, s, xoff, iw, &xlo, &xhi);
                const float *row = dcol + ((size_t)(c * d->kh + ki) * d->kw + kj) *
                                              (size_t)oh * ow;
                for (int oy = ylo; oy < yhi; oy++) {
                    const float *src = row + (size_t)oy * ow;
                    float *dst = plane + (size_t)(oy * s + ki - d->pad) * iw + xoff;
                    if (s == 1) {
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++) dst[ox] += src[ox];
                    } else {
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++) dst[ox * s] += src[ox];
                    }
                }
            }
        }
    }
}

/* conv2d_backward_ex on the direct path (the quantizer's sums per image in
 * b->q_sums when b->q_range). */
static void direct_backward(const conv2d_back *b, const conv2d_dims *d, float *scratch)
{
    const int k = d->ic * d->kh * d->kw, oc = d->oc, ic = d->ic, p = d->oh * d->ow;
    const int kt = oc * d->kh * d->kw; /* taps of the backward data pass */
    const size_t in_sz = (size_t)ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = slot_floats(d), wsz = (size_t)oc * k, psz = part_floats(d);
    float *parts = scratch + slot * PAR_MAX_THREADS;
    const int ng = n_groups(d->n);
    float *const dw = b->dw, *const db = b->db;
    const int quant = b->q_range != NULL;
    /* the input gradient: the conv's own, or (quant) through the quantizer */
    const int want_dx = b->din || quant;
    dgeom g;
    dgeom_init(&g, d);

    int *off = offsets_area(d, scratch);
    float *wt = pack_area(d, scratch), *ap = wt + (size_t)ic * kt;
    int *off_t = off + k;
    tap_offsets(off, ic, d, &g);
    tap_offsets(off_t, oc, d, &g);
    if (want_dx) {
        /* wt (IC, OC, KH, KW): w transposed and flipped, so that din is the
         * "same" convolution of the padded output gradient with it */
        const float *w = b->w;
        for (int o = 0; o < oc; o++)
            for (int c = 0; c < ic; c++)
                for (int ki = 0; ki < d->kh; ki++)
                    for (int kj = 0; kj < d->kw; kj++)
                        wt[(((size_t)c * oc + o) * d->kh + ki) * d->kw + kj] =
                            w[(((size_t)o * ic + c) * d->kh + (d->kh - 1 - ki)) * d->kw +
                              (d->kw - 1 - kj)];
        dconv_pack_a(ap, wt, ic, kt, (size_t)kt);
    }
    const size_t dshift = (size_t)d->pad * g.wp + d->pad; /* dout at padded (0, 0) */
    /* the weight gradient's dot products run along a plane; on planes of a
     * few rows their horizontal sums cost more than SGEMM's packing */
    const int wgrad_direct = g.nv >= DCONV_WGRAD_MIN;

#pragma omp parallel num_threads(par_gemm_threads())
    {
        float *pin = scratch + slot * (size_t)omp_get_thread_num();
        float *pg = pin + g.pin, *cb = pin + back_cb_offset(d, &g);
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ng; gi++) {
            float *dwp = parts + psz * (size_t)gi, *dbp = dwp + wsz;
            if (db) memset(dbp, 0, sizeof *dbp * (size_t)oc);
            /* the group's first image sets dwp (groups have one at least) */
            const int lo = (int)((long)d->n * gi / ng);
            const int hi = (int)((long)d->n * (gi + 1) / ng);
            for (int i = lo; i < hi; i++) {
                const float *gout = b->dout + out_sz * i;
                if (b->bn_coef) {
                    /* the batch norm's input gradient, this conv's output
                     * gradient, made here into cb (free until the input
                     * gradient's kernel below) */
                    for (int o = 0; o < oc; o++)
                        batchnorm_backward_plane(cb + (size_t)o * p, 1, gout + (size_t)o * p,
                                                 b->bn_x + out_sz * i + (size_t)o * p,
                                                 b->bn_coef + (size_t)o * BN_COEFS, p);
                    gout = cb;
                }
                if (db) bias_grad(dbp, gout, oc, p);
                if (!dw && !want_dx) continue;
                if (dw && !wgrad_direct) {
                    /* small planes: one SGEMM over the im2col matrix, which
                     * uses the slot before the padded buffers below do */
                    im2col(pin, b->in + in_sz * i, d);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, k, p, 1.0f, gout, p,
                                pin, p, i > lo ? 1.0f : 0.0f, dwp, k);
                }
                if (want_dx || (dw && wgrad_direct))
                    pad_planes(pg, g.pout, gout, oc, d->oh, d->ow, d->pad, &g);
                if (dw && wgrad_direct) {
                    pad_planes(pin, g.pin, b->in + in_sz * i, ic, d->ih, d->iw, d->pad, &g);
                    dconv_wgrad(dwp, (size_t)k, oc, k, pg + dshift, g.plane, pin, off, g.nv,
                                i > lo);
                }
                if (want_dx) {
                    dconv_gemm(cb, (size_t)g.nb, ap, ic, kt, pg, off_t, g.n8);
                    /* the quantizer's backward reads the image's gradient
                     * compact from pin (free: the weight gradient is done) */
                    float *dx = quant ? pin : b->din + in_sz * i;
                    const int add = !quant && !b->din_set;
                    for (int c = 0; c < ic; c++)
                        for (int r = 0; r < d->ih; r++) {
                            const float *src = cb + (size_t)c * g.nb + (size_t)r * g.wp;
                            float *dst = dx + ((size_t)c * d->ih + r) * d->iw;
                            if (add) {
#pragma omp simd
                                for (int x = 0; x < d->iw; x++) dst[x] += src[x];
                            } else {
                                memcpy(dst, src, sizeof *dst * (size_t)d->iw);
                            }
                        }
                    if (quant)
                        quant_backward_span(b->din ? b->din + in_sz * i : NULL, b->din_set, dx,
                                            b->q_x + in_sz * i, b->q_s, b->q_range, in_sz,
                                            b->q_sums + 2 * (size_t)i);
                }
            }
        }
        if (dw) add_dw_parts(dw, parts, psz, ng, wsz);
    }
    if (db) add_db_parts(db, parts, psz, ng, wsz, oc);
}

/* ---- grouped and dilated convs ----
 *
 * Depthwise (groups == IC, each output channel o reading input channel
 * o / (OC / IC) alone): direct loops, one (n, c) plane per OpenMP work item,
 * each output row built tap by tap along the width (the loops vectorise; no
 * im2col of a single channel, whose SGEMM would be a dot product). The
 * weight and bias gradients go one output channel per work item, images and
 * rows in order. Every other grouped or dilated shape: per image and per
 * group, im2col of the group's IC / G channels (taps `dilation` apart) and
 * one SGEMM with the group's OC / G rows of weights; the weight gradient in
 * per-group-of-images partial sums as gemm_backward's. Results do not depend
 * on the thread count on either path. */

static int is_depthwise(const conv2d_dims *d) { return d->groups > 1 && d->groups == d->ic; }

/* Below this many output values the depthwise loops stay on one thread. */
#define DW_PAR_MIN 16384

static size_t gcol_floats(const conv2d_dims *d)
{
    return align16((size_t)(d->ic / d->groups) * d->kh * d->kw * d->oh * d->ow);
}

static size_t gpart_floats(const conv2d_dims *d)
{
    return align16((size_t)d->oc * (d->ic / d->groups) * d->kh * d->kw + (size_t)d->oc);
}

static size_t grouped_scratch_floats(const conv2d_dims *d)
{
    if (is_depthwise(d)) return 0;
    return gcol_floats(d) * PAR_MAX_THREADS + gpart_floats(d) * CONV_GROUPS;
}

/* col (NC*KH*KW, P) from the NC channels at `in` (one image), the taps
 * `dilation` apart. */
static void im2col_dil(float *col, const float *in, int nc, const conv2d_dims *d)
{
    const int s = d->stride, dl = d->dilation, oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    const size_t p = (size_t)oh * ow;
    for (int c = 0; c < nc; c++) {
        const float *plane = in + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi;
            const int yoff = ki * dl - d->pad;
            valid_range(oh, s, yoff, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi;
                const int xoff = kj * dl - d->pad;
                valid_range(ow, s, xoff, iw, &xlo, &xhi);
                float *row = col + ((size_t)(c * d->kh + ki) * d->kw + kj) * p;
                memset(row, 0, sizeof *row * (size_t)ylo * ow);
                for (int oy = ylo; oy < yhi; oy++) {
                    float *dst = row + (size_t)oy * ow;
                    const float *src = plane + (size_t)(oy * s + yoff) * iw + xoff;
                    for (int ox = 0; ox < xlo; ox++) dst[ox] = 0.0f;
#pragma omp simd
                    for (int ox = xlo; ox < xhi; ox++) dst[ox] = src[ox * s];
                    for (int ox = xhi; ox < ow; ox++) dst[ox] = 0.0f;
                }
                memset(row + (size_t)yhi * ow, 0, sizeof *row * (size_t)(oh - yhi) * ow);
            }
        }
    }
}

/* din (NC, IH, IW) += col2im(dcol (NC*KH*KW, P)), im2col_dil's inverse. */
static void col2im_dil_add(float *din, const float *dcol, int nc, const conv2d_dims *d)
{
    const int s = d->stride, dl = d->dilation, oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    const size_t p = (size_t)oh * ow;
    for (int c = 0; c < nc; c++) {
        float *plane = din + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi;
            const int yoff = ki * dl - d->pad;
            valid_range(oh, s, yoff, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi;
                const int xoff = kj * dl - d->pad;
                valid_range(ow, s, xoff, iw, &xlo, &xhi);
                const float *row = dcol + ((size_t)(c * d->kh + ki) * d->kw + kj) * p;
                for (int oy = ylo; oy < yhi; oy++) {
                    const float *src = row + (size_t)oy * ow;
                    float *dst = plane + (size_t)(oy * s + yoff) * iw + xoff;
                    for (int ox = xlo; ox < xhi; ox++) dst[ox * s] += src[ox];
                }
            }
        }
    }
}

static void dw_forward(float *out, const float *in, const float *w, const float *b,
                       const conv2d_dims *d)
{
    const int m = d->oc / d->ic, planes = d->n * d->oc, s = d->stride, dl = d->dilation;
    const int ih = d->ih, iw = d->iw, oh = d->oh, ow = d->ow, kh = d->kh, kw = d->kw;
    const size_t isz = (size_t)ih * iw, osz = (size_t)oh * ow;
#pragma omp parallel for schedule(dynamic, 4) if ((size_t)planes * osz * kh * kw >= DW_PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const int i = pl / d->oc, o = pl % d->oc;
        const float *x = in + ((size_t)i * d->ic + o / m) * isz;
        const float *wk = w + (size_t)o * kh * kw;
        float *y = out + (size_t)pl * osz;
        const float bo = b ? b[o] : 0.0f;
        for (int oy = 0; oy < oh; oy++) {
            float *yr = y + (size_t)oy * ow;
            for (int ox = 0; ox < ow; ox++) yr[ox] = bo;
            for (int ki = 0; ki < kh; ki++) {
                const int iy = oy * s + ki * dl - d->pad;
                if (iy < 0 || iy >= ih) continue;
                const float *xr = x + (size_t)iy * iw;
                for (int kj = 0; kj < kw; kj++) {
                    int lo, hi;
                    const int xoff = kj * dl - d->pad;
                    valid_range(ow, s, xoff, iw, &lo, &hi);
                    const float wv = wk[ki * kw + kj];
                    const float *xs = xr + xoff;
                    if (s == 1) {
#pragma omp simd
                        for (int ox = lo; ox < hi; ox++) yr[ox] += wv * xs[ox];
                    } else {
#pragma omp simd
                        for (int ox = lo; ox < hi; ox++) yr[ox] += wv * xs[ox * s];
                    }
                }
            }
        }
    }
}

/* din (= when set, else +=), then dw and db (+=); any may be NULL. */
static void dw_backward(float *din, int set, float *dw, float *db, const float *dout,
                        const float *in, const float *w, const conv2d_dims *d)
{
    const int m = d->oc / d->ic, s = d->stride, dl = d->dilation;
    const int ih = d->ih, iw = d->iw, oh = d->oh, ow = d->ow, kh = d->kh, kw = d->kw;
    const size_t isz = (size_t)ih * iw, osz = (size_t)oh * ow;
    const int par = (size_t)d->n * d->oc * osz * kh * kw >= DW_PAR_MIN;
    if (din) {
        /* one input plane per item: the gradient of its m output planes,
         * scattered tap by tap along the rows */
        const int planes = d->n * d->ic;
#pragma omp parallel for schedule(dynamic, 4) if (par)
        for (int pl = 0; pl < planes; pl++) {
            const int i = pl / d->ic, c = pl % d->ic;
            float *dx = din + (size_t)pl * isz;
            if (set) memset(dx, 0, sizeof *dx * isz);
            for (int j = 0; j < m; j++) {
                const int o = c * m + j;
                const float *g = dout + ((size_t)i * d->oc + o) * osz;
                const float *wk = w + (size_t)o * kh * kw;
                for (int oy = 0; oy < oh; oy++) {
                    const float *gr = g + (size_t)oy * ow;
                    for (int ki = 0; ki < kh; ki++) {
                        const int iy = oy * s + ki * dl - d->pad;
                        if (iy < 0 || iy >= ih) continue;
                        float *xr = dx + (size_t)iy * iw;
                        for (int kj = 0; kj < kw; kj++) {
                            int lo, hi;
                            const int xoff = kj * dl - d->pad;
                            valid_range(ow, s, xoff, iw, &lo, &hi);
                            const float wv = wk[ki * kw + kj];
                            float *xs = xr + xoff;
                            if (s == 1) {
#pragma omp simd
                                for (int ox = lo; ox < hi; ox++) xs[ox] += wv * gr[ox];
                            } else {
                                for (int ox = lo; ox < hi; ox++) xs[ox * s] += wv * gr[ox];
                            }
                        }
                    }
                }
            }
        }
    }
    if (!dw && !db) return;
    /* one output channel per item: its taps' sums over images and rows, in
     * order */
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int o = 0; o < d->oc; o++) {
        const int c = o / m;
        if (db) {
            float acc = 0.0f;
            for (int i = 0; i < d->n; i++)
                acc += vsum_sum(dout + ((size_t)i * d->oc + o) * osz, (int)osz);
            db[o] += acc;
        }
        if (!dw) continue;
        for (int ki = 0; ki < kh; ki++)
            for (int kj = 0; kj < kw; kj++) {
                int lo, hi;
                const int xoff = kj * dl - d->pad;
                valid_range(ow, s, xoff, iw, &lo, &hi);
                float acc = 0.0f;
                for (int i = 0; i < d->n; i++) {
                    const float *g = dout + ((size_t)i * d->oc + o) * osz;
                    const float *x = in + ((size_t)i * d->ic + c) * isz;
                    for (int oy = 0; oy < oh; oy++) {
                        const int iy = oy * s + ki * dl - d->pad;
                        if (iy < 0 || iy >= ih) continue;
                        const float *gr = g + (size_t)oy * ow, *xs = x + (size_t)iy * iw + xoff;
                        float r = 0.0f;
                        if (s == 1) {
#pragma omp simd reduction(+ : r)
                            for (int ox = lo; ox < hi; ox++) r += gr[ox] * xs[ox];
                        } else {
#pragma omp simd reduction(+ : r)
                            for (int ox = lo; ox < hi; ox++) r += gr[ox] * xs[ox * s];
                        }
                        acc += r;
                    }
                }
                dw[(size_t)o * kh * kw + ki * kw + kj] += acc;
            }
    }
}

static int grouped_pointwise(const conv2d_dims *d)
{
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

static void grouped_forward(float *out, const float *in, const float *w, const float *b,
                            const conv2d_dims *d, float *scratch)
{
    if (is_depthwise(d)) {
        dw_forward(out, in, w, b, d);
        return;
    }
    const int ng = d->groups, icg = d->ic / ng, ocg = d->oc / ng;
    const int k = icg * d->kh * d->kw, p = d->oh * d->ow;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)d->oc * p;
    const size_t gin = (size_t)icg * d->ih * d->iw, slot = gcol_floats(d);
    const int pw = grouped_pointwise(d);
#pragma omp parallel num_threads(par_gemm_threads())
    {
        float *col = scratch + slot * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < d->n; i++) {
            for (int gi = 0; gi < ng; gi++) {
                const float *x = in + in_sz * i + gin * gi;
                float *y = out + out_sz * i + (size_t)gi * ocg * p;
                if (!pw) im2col_dil(col, x, icg, d);
                float beta = 0.0f;
                if (b) {
                    for (int o = 0; o < ocg; o++) {
                        const float bo = b[gi * ocg + o];
                        float *yo = y + (size_t)o * p;
                        for (int j = 0; j < p; j++) yo[j] = bo;
                    }
                    beta = 1.0f;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ocg, p, k, 1.0f,
                            w + (size_t)gi * ocg * k, k, pw ? x : col, p, beta, y, p);
            }
        }
    }
}

/* acc: din += the input gradient; else din = it. */
static void grouped_backward(float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, const conv2d_dims *d,
                             float *scratch, int acc)
{
    if (is_depthwise(d)) {
        dw_backward(din, !acc, dw, db, dout, in, w, d);
        return;
    }
    const int ng = d->groups, icg = d->ic / ng, ocg = d->oc / ng, oc = d->oc;
    const int k = icg * d->kh * d->kw, p = d->oh * d->ow;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t gin = (size_t)icg * d->ih * d->iw, slot = gcol_floats(d);
    const size_t wsz = (size_t)oc * k, psz = gpart_floats(d);
    float *parts = scratch + slot * PAR_MAX_THREADS;
    const int pw = grouped_pointwise(d);
    const int nig = n_groups(d->n);

#pragma omp parallel num_threads(par_gemm_threads())
    {
        float *col = scratch + slot * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int ig = 0; ig < nig; ig++) {
            float *dwp = parts + psz * (size_t)ig, *dbp = dwp + wsz;
            if (db) memset(dbp, 0, sizeof *dbp * (size_t)oc);
            const int lo = (int)((long)d->n * ig / nig);
            const int hi = (int)((long)d->n * (ig + 1) / nig);
            for (int i = lo; i < hi; i++) {
                if (db) bias_grad(dbp, dout + out_sz * i, oc, p);
                for (int gi = 0; gi < ng; gi++) {
                    const float *x = in + in_sz * i + gin * gi;
                    const float *g = dout + out_sz * i + (size_t)gi * ocg * p;
                    const float *wg = w + (size_t)gi * ocg * k;
                    if (dw) {
                        if (!pw) im2col_dil(col, x, icg, d);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ocg, k, p, 1.0f, g,
                                    p, pw ? x : col, p, i > lo ? 1.0f : 0.0f,
                                    dwp + (size_t)gi * ocg * k, k);
                    }
                    if (!din) continue;
                    float *dx = din + in_sz * i + gin * gi;
                    if (pw) {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, ocg, 1.0f, wg,
                                    k, g, p, acc ? 1.0f : 0.0f, dx, p);
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, ocg, 1.0f, wg,
                                    k, g, p, 0.0f, col, p);
                        if (!acc) memset(dx, 0, sizeof *dx * gin);
                        col2im_dil_add(dx, col, icg, d);
                    }
                }
            }
        }
        if (dw) add_dw_parts(dw, parts, psz, nig, wsz);
    }
    if (db) add_db_parts(db, parts, psz, nig, wsz, oc);
}

void conv2d_forward(float *out, const float *in, const float *w, const float *b,
                    const conv2d_dims *d, float *scratch)
{
    const int k = d->ic * d->kh * d->kw, p = d->oh * d->ow, oc = d->oc;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = slot_floats(d);
    const int pw = is_pointwise(d);
    const int nt = par_gemm_threads();

    const int dl = dnnl_layout(d, 0);
    if (dl >= 0 && dnnl_conv_forward(out, in, w, b, d, (dnnl_conv_layout)dl) == 0) return;
    if (!is_plain(d)) {
        grouped_forward(out, in, w, b, d, scratch);
        return;
    }
    if (use_direct(d)) {
        direct_forward(out, in, w, b, d, scratch);
        return;
    }

#pragma omp parallel num_threads(nt)
    {
        float *col = scratch + slot * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < d->n; i++) {
            const float *x = in + in_sz * i;
            float *y = out + out_sz * i;
            if (!pw) im2col(col, x, d);
            float beta = 0.0f;
            if (b) {
                for (int o = 0; o < oc; o++) {
                    float bo = b[o];
                    float *yo = y + (size_t)o * p;
                    for (int j = 0; j < p; j++) yo[j] = bo;
                }
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc, p, k,
                        1.0f, w, k, pw ? x : col, p, beta, y, p);
        }
    }
}

void conv2d_forward_float(float *out, const float *in, const float *w, const float *b,
                          const conv2d_dims *d, float *scratch)
{
    if (conv2d_uses_wino(d, 0) &&
        dnnl_conv_forward_alg(out, in, w, b, d, DNNL_CONV_BLOCKED, DNNL_CONV_WINOGRAD) == 0)
        return;
    conv2d_forward(out, in, w, b, d, scratch);
}

/* The im2col + SGEMM backward. acc: din += the input gradient; else din = it. */
static void gemm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, const conv2d_dims *d, float *scratch, int acc)
{
    const int k = d->ic * d->kh * d->kw, p = d->oh * d->ow, oc = d->oc;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = slot_floats(d), wsz = (size_t)oc * k, psz = part_floats(d);
    float *parts = scratch + slot * PAR_MAX_THREADS;
    const int pw = is_pointwise(d);
    const int nt = par_gemm_threads();
    const int ng = n_groups(d->n);

#pragma omp parallel num_threads(nt)
    {
        float *col = scratch + slot * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ng; gi++) {
            float *dwp = parts + psz * (size_t)gi, *dbp = dwp + wsz;
            if (db) memset(dbp, 0, sizeof *dbp * (size_t)oc);
            const int lo = (int)((long)d->n * gi / ng);
            const int hi = (int)((long)d->n * (gi + 1) / ng);
            for (int i = lo; i < hi; i++) {
                const float *x = in + in_sz * i;
                const float *g = dout + out_sz * i;
                if (db) bias_grad(dbp, g, oc, p);
                if (dw) {
                    if (!pw) im2col(col, x, d);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, k, p,
                                1.0f, g, p, pw ? x : col, p, i > lo ? 1.0f : 0.0f,
                                dwp, k);
                }
                if (din) {
                    float *dx = din + in_sz * i;
                    if (pw) {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, oc,
                                    1.0f, w, k, g, p, acc ? 1.0f : 0.0f, dx, p);
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, oc,
                                    1.0f, w, k, g, p, 0.0f, col, p);
                        if (!acc) memset(dx, 0, sizeof *dx * in_sz);
                        col2im_add(dx, col, d);
                    }
                }
            }
        }

        if (dw) add_dw_parts(dw, parts, psz, ng, wsz);
    }
    if (db) add_db_parts(db, parts, psz, ng, wsz, oc);
}

/* The own direct path's fusions (in cache, image by image). A shape whose
 * backward runs on oneDNN takes them through oneDNN's layouts instead, where
 * both passes run there in one layout (conv2d_backward_fuses_on_dnnl);
 * elsewhere the network runs the batch norm's and the quantizer's
 * backwards. */
int conv2d_backward_fuses(const conv2d_dims *d)
{
    return use_direct(d) && !conv2d_uses_dnnl(d, 1) && !conv2d_uses_dnnl(d, 2);
}

static int own_backward(const conv2d_back *b, const conv2d_dims *d, float *scratch);

/* ---- fusions around a oneDNN backward ----
 * A conv whose two backward passes run on oneDNN in one layout takes the
 * network's fusions through oneDNN's layouts (dnnl_conv_hooks), an image's
 * channel block at a time through register transposes, with no NCHW copy
 * and no reorder: the activation quantizer (q_range, in NULL) writes the
 * quantized input straight into the layout the weight pass reads, and runs
 * its backward on the input gradient straight from the layout the data
 * pass writes; the batch norm after the conv (bn_coef) writes the conv's
 * output gradient straight into the layout both passes read. */

struct fhook {
    const conv2d_back *b;
    const conv2d_dims *d;
};

/* The real channels of block cb of a tensor of c channels (the rest of the
 * block is padding). */
static int block_part(const dnnl_conv_blocking *k, int c, int cb)
{
    return c - cb * k->block < k->block ? c - cb * k->block : k->block;
}

static void q_fill(void *ctx, float *dst, const dnnl_conv_blocking *k)
{
    const struct fhook *q = ctx;
    const conv2d_back *b = q->b;
    const conv2d_dims *d = q->d;
    const int B = k->block, ncb = k->channels / B;
    const size_t hw = (size_t)d->ih * d->iw, in_sz = (size_t)d->ic * hw;
    const long items = (long)d->n * ncb;
#pragma omp parallel for schedule(static)
    for (long it = 0; it < items; it++) {
        const int n = (int)(it / ncb), cb = (int)(it % ncb);
        quant_forward_blocked(dst + k->sn * n + k->sc * cb, B,
                              b->q_x + in_sz * n + hw * (size_t)cb * B, block_part(k, d->ic, cb),
                              hw, b->q_s, b->q_range);
    }
}

/* The quantizer's backward from the input gradient in layout k, an image
 * per work item: its sums in b->q_sums, in the same order for any thread
 * count. */
static void q_take(void *ctx, const float *ds, const dnnl_conv_blocking *k)
{
    const struct fhook *q = ctx;
    const conv2d_back *b = q->b;
    const conv2d_dims *d = q->d;
    const int B = k->block, ncb = k->channels / B;
    const size_t hw = (size_t)d->ih * d->iw, in_sz = (size_t)d->ic * hw;
#pragma omp parallel for schedule(dynamic, 1)
    for (int n = 0; n < d->n; n++) {
        double sum = 0.0;
        for (int cb = 0; cb < ncb; cb++) {
            const size_t at = in_sz * n + hw * (size_t)cb * B;
            double s1;
            quant_backward_blocked(b->din ? b->din + at : NULL, b->din_set,
                                   ds + k->sn * n + k->sc * cb, B, b->q_x + at,
                                   block_part(k, d->ic, cb), hw, b->q_s, b->q_range, &s1);
            sum += s1;
        }
        b->q_sums[2 * (size_t)n] = sum;
        b->q_sums[2 * (size_t)n + 1] = 0.0; /* no offset: its sum is not needed */
    }
}

/* The batch norm's input gradient, the conv's output gradient, in layout k. */
static void bn_fill(void *ctx, float *dst, const dnnl_conv_blocking *k)
{
    const struct fhook *q = ctx;
    const conv2d_back *b = q->b;
    const conv2d_dims *d = q->d;
    const int B = k->block, ncb = k->channels / B;
    const size_t hw = (size_t)d->oh * d->ow, out_sz = (size_t)d->oc * hw;
    const long items = (long)d->n * ncb;
#pragma omp parallel for schedule(static)
    for (long it = 0; it < items; it++) {
        const int n = (int)(it / ncb), cb = (int)(it % ncb);
        const size_t at = out_sz * n + hw * (size_t)cb * B;
        batchnorm_backward_blocked(dst + k->sn * n + k->sc * cb, B, b->dout + at, b->bn_x + at,
                                   b->bn_coef + (size_t)cb * B * BN_COEFS,
                                   block_part(k, d->oc, cb), hw);
    }
}

static int dnnl_fusions = 1;

void conv2d_set_dnnl_fusions(int on) { dnnl_fusions = on != 0; }

int conv2d_backward_fuses_on_dnnl(const conv2d_dims *d)
{
    if (!dnnl_fusions) return 0;
    const int lw = dnnl_layout(d, 2);
    return lw >= 0 && dnnl_layout(d, 1) == lw && !conv2d_uses_wino(d, 1) &&
           !conv2d_uses_wino(d, 2);
}

/* conv2d_backward_ex's fusions on oneDNN (layers.h). */
static int dnnl_fused_backward(const conv2d_back *b, const conv2d_dims *d)
{
    if (!conv2d_backward_fuses_on_dnnl(d)) return -1;
    /* the quantizer's fusion makes the input itself, and needs dw */
    if ((b->in == NULL) != (b->q_range != NULL) || (b->q_range && !b->dw)) return -1;
    const struct fhook q = {b, d};
    const dnnl_conv_hooks h = {b->q_range ? q_fill : NULL, b->q_range ? q_take : NULL,
                               b->bn_coef ? bn_fill : NULL, (void *)&q};
    if (dnnl_conv_backward_hooked(b->q_range ? NULL : b->din, b->din_set, b->dw, b->db,
                                  b->bn_coef ? NULL : b->dout, b->in, b->w, d,
                                  (dnnl_conv_layout)dnnl_layout(d, 2), &h) != 0)
        return -1;
    if (b->q_range) {
        double t = 0.0; /* in image order, as own_backward */
        for (int i = 0; i < d->n; i++) t += b->q_sums[2 * i];
        *b->q_dstep += (float)((double)b->q_gscale * t);
    }
    return 0;
}

int conv2d_backward_ex(const conv2d_back *b, const conv2d_dims *d, float *scratch)
{
    if (!b->in || (b->bn_coef && !b->q_range && conv2d_backward_fuses_on_dnnl(d)))
        return dnnl_fused_backward(b, d);
    const int ld = b->din ? dnnl_layout(d, 1) : -1;
    const int lw = b->dw || b->db ? dnnl_layout(d, 2) : -1;
    if (wino_backward(b, d, scratch) == 0) return 0;
    if (b->q_range || b->bn_coef || (ld < 0 && lw < 0)) return own_backward(b, d, scratch);
    if (ld == lw) {
        /* one call: the output gradient's copy is shared by both passes */
        if (dnnl_conv_backward(b->din, b->din_set, b->dw, b->db, b->dout, b->in, b->w, d,
                               (dnnl_conv_layout)ld) == 0)
            return 0;
        return own_backward(b, d, scratch);
    }
    /* the passes apart, each on its own side */
    conv2d_back bd = *b, bw = *b;
    bd.dw = bd.db = NULL;
    bw.din = NULL;
    if (b->din && (ld < 0 || dnnl_conv_backward(b->din, b->din_set, NULL, NULL, b->dout, b->in,
                                                b->w, d, (dnnl_conv_layout)ld) != 0))
        own_backward(&bd, d, scratch);
    if ((b->dw || b->db) && (lw < 0 || dnnl_conv_backward(NULL, 0, b->dw, b->db, b->dout, b->in,
                                                         b->w, d, (dnnl_conv_layout)lw) != 0))
        own_backward(&bw, d, scratch);
    return 0;
}

/* conv2d_backward_ex on the engine's own kernels. */
static int own_backward(const conv2d_back *b, const conv2d_dims *d, float *scratch)
{
    if (!is_plain(d)) {
        if (b->q_range || b->bn_coef) return -1;
        grouped_backward(b->din, b->dw, b->db, b->dout, b->in, b->w, d, scratch, !b->din_set);
        return 0;
    }
    if (!use_direct(d)) {
        if (b->q_range || b->bn_coef) return -1;
        gemm_backward(b->din, b->dw, b->db, b->dout, b->in, b->w, d, scratch, !b->din_set);
        return 0;
    }
    direct_backward(b, d, scratch);
    if (b->q_range) {
        double t = 0.0; /* in image order: the same bits for any thread count */
        for (int i = 0; i < d->n; i++) t += b->q_sums[2 * i];
        *b->q_dstep += (float)((double)b->q_gscale * t);
    }
    return 0;
}

void conv2d_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, const conv2d_dims *d,
                     float *scratch)
{
    const conv2d_back b = {.in = in, .w = w, .dout = dout, .din = din, .dw = dw, .db = db};
    conv2d_backward_ex(&b, d, scratch);
}

void conv2d_backward_overwrite(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *w, const conv2d_dims *d,
                               float *scratch)
{
    const conv2d_back b = {.in = in, .w = w, .dout = dout, .din = din, .din_set = 1, .dw = dw,
                           .db = db};
    conv2d_backward_ex(&b, d, scratch);
}
