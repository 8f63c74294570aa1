/* Integer-only inference on packed .lsqm models (infer.h,
 * docs/model-format.md "Integer inference").
 *
 * A model is compiled at load into a plan over the network's nodes (any
 * directed acyclic graph the layer list describes). Tensors are NHWC inside
 * the plan (a conv's GEMM output, one row per output pixel, is already
 * NHWC), except that flatten reorders to the channel-major order the layer
 * list means, so linear weights keep their stored order.
 *
 * Every quantized conv/linear multiplies 8-bit activation codes by int8
 * weight codes with int32 accumulation: dense and grouped convs through
 * im2col on the codes (one GEMM per group, igemm.h), depthwise convs with a
 * kernel of their own (dwconv.h). Its epilogue folds the step sizes, the
 * bias and a following batch norm (and ReLU / clip) into one
 * per-output-channel (scale A, offset B):
 *
 *     v = acc * A[c] + B[c],  A = s_in * s_w[c] * g[c],  B = bias[c] * g[c] + h[c]
 *     (g = gamma / sqrt(var + eps), h = beta_bn - mean * g)
 *
 * When the value's only consumer (through maxpool / flatten) is another
 * quantized layer, the epilogue writes that layer's activation codes
 * directly:  code = clip(round(acc * A/s + (B - beta)/s), lo, hi), with
 * lo = -QN and hi = QP, narrowed by the ReLUs and clips in between: the
 * quantizer q(x) = round(clip((x - beta)/s, -QN, QP)) is non-decreasing, so
 * q(clip(x, a, b)) = clip(q(x), q(a), q(b)) (ReLU is clip(x, 0, inf), ReLU6
 * clip(x, 0, 6)). A max pool then runs on the codes: the code map commutes
 * with max too. Otherwise (a residual add, a concat, several consumers, a
 * float layer, the logits) the epilogue writes float values (after its
 * ReLU / clip) and each quantized consumer quantizes them exactly as the
 * float engine does: code = round(clip((x - beta) / s, -QN, QP)).
 *
 * Between quantized layers the float engine computes on unquantized
 * values: residual adds, concats (whose branches may come from layers of
 * any scale), leaky ReLU, scale, windowed and global average pooling and
 * batch norms that do not follow a conv. The plan does the same in float32
 * with the float engine's own operations, and the next quantized layers
 * requantize the result into their own input code spaces. Quantizing those
 * tensors themselves (to a common scale) would change the network the
 * float engine trained.
 *
 * Layers left in float (a "float" override, a full-precision model) run as
 * float im2col + SGEMM per group, or direct loops for depthwise ones.
 *
 * Memory: images go through the plan INFER_CHUNK at a time. Every buffer of
 * such a pass has its place in one arena, planned at load from the buffers'
 * lives (plan_memory); each predicting thread takes an arena and its work
 * buffers from the model and gives them back, so a warm call allocates and
 * faults in nothing. */
#include "deploy/infer.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "deploy/dwconv.h"
#include "deploy/epilogue.h"
#include "deploy/igemm.h"
#include "deploy/lsqm.h"
#include "deploy/support.h"
#include "graph/net.h"
#include "quant/quant.h"

#define INFER_BN_EPS 1e-5f /* net.c's BN_EPS */
#define INFER_CHUNK 16     /* images per pass through the plan */

typedef enum { VK_NONE, VK_F32, VK_U8, VK_S8 } vkind;
/* How a conv/linear obtains its input. */
/* IN_LUT: the image's pixels mapped to codes through a table (inode.lut),
 * instead of the float input then quantize. */
typedef enum { IN_UNSET, IN_CODES, IN_QUANT, IN_PIXELS, IN_FLOAT, IN_LUT } insrc;

typedef struct {
    net_op op;
    char name[64];
    int n_in;
    int in[NET_MAX_INPUTS]; /* input nodes; in[0] for single-input layers */
    int c, h, w;         /* output of one example */
    int ic, ih, iw;      /* input in[0] */
    vkind kind;          /* what the node's buffer holds */
    int skip;            /* batch norm / ReLU / clip folded into a conv epilogue */
    int alias;           /* flatten of a 1x1 tensor: shares in[0]'s buffer */
    int last_use;        /* last node reading this buffer */
    size_t at;           /* the buffer's offset in a pass's arena (own buffers) */
    /* conv / linear */
    int quant;
    int k, stride, pad, dil, groups;
    int icg, ocg;        /* input and output channels of one group */
    int kdim;            /* K of one group's product: KH * KW * ICG */
    int dw, mult;        /* depthwise (groups == IC > 1): OC = mult * IC */
    lsq_igemm_w *pw;     /* quantized, not depthwise: (groups) packed (OCG, KH, KW, ICG) codes */
    lsq_dw_w dww;        /* quantized depthwise: (OC, KH, KW) codes */
    float *wf;           /* float layer: (OC, KH*KW*ICG), group g's rows g*OCG.. */
    insrc src;
    float in_s, in_beta, in_lo, in_hi;
    int in_signed, in_bits, in_offset;
    float *wstep;        /* (OC) weight step per output channel */
    float *bias;         /* (OC) or NULL */
    int8_t *wcodes;      /* (OC, K) stored order, for LSQ+ sums; freed after load */
    int wbits;           /* the layer's weight bits */
    int *goff;           /* stride-1 "same" conv on unsigned codes: K's groups
                          * in a padded image (lsq_igemm_u8_taps), else NULL */
    int quads;           /* goff of a one-channel conv: each kernel row as 4-code
                          * groups, pw packed (OC, KH, KW rounded up to 4) */
    uint8_t *lut;        /* IN_LUT: (C, 256) the code of each pixel value */
    int out_node;        /* the node whose buffer the epilogue writes */
    int add_in;          /* a residual add folded into the epilogue: the node
                          * whose float buffer it adds, else -1 */
    int add_relu;        /* a ReLU after that add, folded too */
    int epi_codes;
    int relu, clipped;   /* folded ReLU / clip(s) */
    float flo, fhi;      /* their bounds on the value: -inf, inf without */
    float *ea, *eb;      /* (OC) folded scale and offset */
    float *corr;         /* LSQ+ conv: (OH*OW, OC), else NULL */
    float elo, ehi;
    /* batch norm: folded scale and shift (C) */
    float *bs, *bh;
    /* pooling: kernel (0: global average), stride, pad, count_include_pad */
    int pk, ps, ppad, pcip;
    /* clip bounds, leaky relu slope, scale factor */
    float lo, hi, alpha, value;
} inode;

struct lsqm_model {
    int c, h, w, classes;
    int n;
    inode *nodes;
    int output;
    lsq_kernel kern;
    int need_float_input;
    int norm_on;         /* the input is normalised (the layer list's "normalize") */
    float norm_scale[NET_NORM_MAX], norm_bias[NET_NORM_MAX]; /* loader_normalize_coefs */
    int has_float_gemm;
    size_t arena;        /* bytes of every buffer of one pass of INFER_CHUNK images */
    struct slots *slots; /* buffers kept between calls (take_slot) */
};

/* The free slots (a thread's arena and work buffers) of a model. */
struct slots {
    pthread_mutex_t lock;
    struct slot *free;
};

/* ---------------------------------------------------------------- load */

static const lsqm_tensor *need(const lsqm_file *f, const char *layer, const char *suffix,
                               size_t count, int type, lsq_err *err, lsq_status *st)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", layer, suffix);
    const lsqm_tensor *t = lsqm_find(f, nm);
    if (!t) {
        *st = lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "the model file has no tensor '%s'", nm);
        return NULL;
    }
    if (t->count != count || (type >= 0 && (int)t->type != type)) {
        *st = lsq_err_set(err, LSQ_ERR_FORMAT, NULL,
                          "tensor '%s' has %zu %s values; the layer needs %zu %s", nm, t->count,
                          LSQM_TTYPE_NAMES[t->type], count,
                          type >= 0 ? LSQM_TTYPE_NAMES[type] : "");
        return NULL;
    }
    return t;
}

static float *load_f32(const lsqm_file *f, const lsqm_tensor *t, lsq_status *st, lsq_err *err)
{
    float *p = malloc(t->count * sizeof *p);
    if (!p) {
        *st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading '%s'", t->name);
        return NULL;
    }
    lsqm_tensor_f32(f, t, p);
    for (size_t i = 0; i < t->count; i++)
        if (!isfinite(p[i])) {
            *st = lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "tensor '%s' holds a non-finite value",
                              t->name);
            free(p);
            return NULL;
        }
    return p;
}

static void slots_free(struct slots *sl);

void lsqm_free(lsqm_model *m)
{
    if (!m) return;
    slots_free(m->slots);
    for (int i = 0; i < m->n; i++) {
        inode *nd = &m->nodes[i];
        if (nd->pw)
            for (int g = 0; g < nd->groups; g++) lsq_igemm_w_free(&nd->pw[g]);
        free(nd->pw);
        lsq_dw_w_free(&nd->dww);
        free(nd->wf);
        free(nd->wstep);
        free(nd->bias);
        free(nd->wcodes);
        free(nd->goff);
        free(nd->lut);
        free(nd->ea);
        free(nd->eb);
        free(nd->corr);
        free(nd->bs);
        free(nd->bh);
    }
    free(m->nodes);
    free(m);
}

/* w (OC, ICG, KH, KW), the stored order, -> out (OC, KH, KW, ICG), the order
 * of an NHWC im2col row of one group. */
#define PERMUTE_KHWC(out, w, oc, icg, taps)                                                \
    for (int o_ = 0; o_ < (oc); o_++)                                                      \
        for (int c_ = 0; c_ < (icg); c_++)                                                 \
            for (int r_ = 0; r_ < (taps); r_++)                                            \
                (out)[((size_t)o_ * (taps) + r_) * (icg) + c_] =                           \
                    (w)[((size_t)o_ * (icg) + c_) * (taps) + r_]

/* Reads one conv/linear layer's tensors into nd. */
static lsq_status load_gemm(inode *nd, const net_node *src_nd, const lsqm_file *f, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    const lsqm_qlayer *q = lsqm_find_qlayer(f, nd->name);
    if (!q)
        return lsq_err_set(err, LSQ_ERR_FORMAT, NULL,
                           "the model file has no quantization entry for layer '%s'", nd->name);
    int oc = nd->c;
    const int k = nd->k, icg = nd->icg, taps = k * k;
    size_t kdim = (size_t)nd->kdim, count = (size_t)oc * kdim;
    const lsqm_tensor *t;
    if (src_nd->bias) {
        if (!(t = need(f, nd->name, ".bias", (size_t)oc, LSQM_T_F32, err, &st))) return st;
        if (!(nd->bias = load_f32(f, t, &st, err))) return st;
    }
    nd->quant = q->quantized;
    if (!q->quantized) {
        if (!(t = need(f, nd->name, ".weight", count, LSQM_T_F32, err, &st))) return st;
        float *w = load_f32(f, t, &st, err);
        if (!w) return st;
        nd->wf = malloc(count * sizeof *nd->wf);
        if (!nd->wf) {
            free(w);
            return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", nd->name);
        }
        if (nd->dw) {
            /* (OC, 1, KH, KW) -> (KH * KW, OC): dw_float's rows of taps */
            for (int o = 0; o < oc; o++)
                for (int r = 0; r < taps; r++) nd->wf[(size_t)r * oc + o] = w[(size_t)o * taps + r];
        } else {
            PERMUTE_KHWC(nd->wf, w, oc, icg, taps);
        }
        free(w);
        return LSQ_OK;
    }
    if (q->weight_channels != 1 && q->weight_channels != oc)
        return lsq_err_set(err, LSQ_ERR_FORMAT, NULL,
                           "layer '%s': %d weight steps for %d output channels", nd->name,
                           q->weight_channels, oc);
    if (!(t = need(f, nd->name, ".weight", count, LSQM_T_CODES, err, &st))) return st;
    if (!t->is_signed || t->bits != q->weight_bits)
        return lsq_err_set(err, LSQ_ERR_FORMAT, NULL,
                           "tensor '%s.weight' is not %d-bit signed codes", nd->name,
                           q->weight_bits);
    nd->wcodes = malloc(count);
    if (!nd->wcodes) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", nd->name);
    if ((st = lsqm_tensor_codes(f, t, nd->wcodes, err)) != LSQ_OK) return st;
    if (nd->dw) {
        /* (OC, 1, KH, KW): each output channel's taps, as dwconv packs them */
        if ((st = lsq_dw_pack(&nd->dww, nd->wcodes, oc, k, err)) != LSQ_OK) return st;
    } else {
        int8_t *perm = malloc(count);
        nd->pw = calloc((size_t)nd->groups, sizeof *nd->pw);
        if (!perm || !nd->pw) {
            free(perm);
            return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", nd->name);
        }
        PERMUTE_KHWC(perm, nd->wcodes, oc, icg, taps);
        /* one packed matrix per group: its OCG output channels' rows, 2-
         * and 3-bit codes kept in 2 and 3 bits */
        nd->wbits = q->weight_bits;
        const int bits = nd->wbits == 2 || nd->wbits == 3 ? nd->wbits : 8;
        for (int g = 0; g < nd->groups && st == LSQ_OK; g++)
            st = lsq_igemm_pack_bits(&nd->pw[g], perm + (size_t)g * nd->ocg * kdim, nd->ocg,
                                     (int)kdim, bits, err);
        free(perm);
        if (st != LSQ_OK) return st;
    }
    if (!(t = need(f, nd->name, ".weight.step", (size_t)q->weight_channels, LSQM_T_F32, err, &st)))
        return st;
    float *ws = load_f32(f, t, &st, err);
    if (!ws) return st;
    nd->wstep = malloc((size_t)oc * sizeof *nd->wstep);
    if (!nd->wstep) {
        free(ws);
        return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", nd->name);
    }
    for (int o = 0; o < oc; o++) nd->wstep[o] = ws[q->weight_channels == 1 ? 0 : o];
    free(ws);
    if (!(t = need(f, nd->name, ".input.step", 1, LSQM_T_F32, err, &st))) return st;
    lsqm_tensor_f32(f, t, &nd->in_s);
    nd->in_beta = 0.0f;
    if (q->act_offset) {
        if (!(t = need(f, nd->name, ".input.offset", 1, LSQM_T_F32, err, &st))) return st;
        lsqm_tensor_f32(f, t, &nd->in_beta);
    }
    for (int o = 0; o < oc; o++)
        if (!(nd->wstep[o] > 0.0f) || !isfinite(nd->wstep[o]))
            return lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "layer '%s' has a weight step <= 0",
                               nd->name);
    if (!(nd->in_s > 0.0f) || !isfinite(nd->in_s) || !isfinite(nd->in_beta))
        return lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "layer '%s' has an input step <= 0",
                           nd->name);
    quant_range r;
    quant_range_init(&r, q->act_bits, q->act_signed);
    nd->in_bits = q->act_bits;
    nd->in_signed = q->act_signed;
    nd->in_offset = q->act_offset;
    nd->in_lo = (float)-r.qn;
    nd->in_hi = (float)r.qp;
    /* a dense stride-1 "same" conv on unsigned codes can run without im2col
     * (whether the kernel path allows it is asked per run) */
    if (nd->op == OP_CONV && nd->groups == 1 && nd->stride == 1 && k % 2 == 1 &&
        nd->pad == nd->dil * (k / 2) && nd->h == nd->ih && nd->w == nd->iw && nd->ic % 4 == 0 &&
        !nd->in_signed && !nd->in_offset) {
        const int wp = nd->iw + 2 * nd->pad;
        int *tp = malloc((size_t)taps * sizeof *tp);
        nd->goff = malloc((size_t)taps * nd->ic / 4 * sizeof *nd->goff);
        if (!tp || !nd->goff) {
            free(tp);
            return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", nd->name);
        }
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) tp[ky * k + kx] = (ky * wp + kx) * nd->dil;
        lsq_igemm_tap_groups(nd->goff, tp, taps, nd->ic);
        free(tp);
    } else if (nd->op == OP_CONV && nd->groups == 1 && nd->ic == 1 && nd->stride == 1 &&
               nd->dil == 1 && k % 2 == 1 && nd->pad == k / 2 && nd->h == nd->ih &&
               nd->w == nd->iw && !nd->in_signed && !nd->in_offset) {
        /* a one-channel image (a grayscale first layer): a kernel row's k
         * taps are k adjacent codes of the padded image, read as 4-code
         * groups against zero weights past k, so the direct kernel runs it
         * too instead of an im2col of k * k single bytes a pixel */
        const int kx4 = (k + 3) / 4 * 4, wp = nd->iw + 2 * nd->pad, kq = k * kx4 / 4;
        int8_t *wq = calloc((size_t)oc * k * kx4, 1);
        nd->goff = malloc((size_t)kq * sizeof *nd->goff);
        if (!wq || !nd->goff) {
            free(wq);
            return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", nd->name);
        }
        for (int o = 0; o < oc; o++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    wq[((size_t)o * k + ky) * kx4 + kx] = nd->wcodes[((size_t)o * k + ky) * k + kx];
        for (int g = 0; g < kq; g++) nd->goff[g] = g / (kx4 / 4) * wp + 4 * (g % (kx4 / 4));
        const int bits = nd->pw[0].bits;
        lsq_igemm_w_free(&nd->pw[0]);
        st = lsq_igemm_pack_bits(&nd->pw[0], wq, oc, k * kx4, bits, err);
        free(wq);
        if (st != LSQ_OK) return st;
        nd->quads = 1;
    }
    return LSQ_OK;
}
static lsq_status load_bn(inode *nd, const lsqm_file *f, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    size_t c = (size_t)nd->c;
    const char *sfx[4] = {".weight", ".bias", ".running_mean", ".running_var"};
    float *v[4] = {0};
    for (int i = 0; i < 4 && st == LSQ_OK; i++) {
        const lsqm_tensor *t = need(f, nd->name, sfx[i], c, LSQM_T_F32, err, &st);
        if (t) v[i] = load_f32(f, t, &st, err);
    }
    if (st == LSQ_OK) {
        nd->bs = malloc(c * sizeof(float));
        nd->bh = malloc(c * sizeof(float));
        if (!nd->bs || !nd->bh) st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory");
    }
    for (size_t i = 0; st == LSQ_OK && i < c; i++) {
        if (!(v[3][i] + INFER_BN_EPS > 0.0f)) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "batch norm '%s' has a negative variance",
                             nd->name);
            break;
        }
        /* as batchnorm_forward_eval computes them */
        float scale = v[0][i] / sqrtf(v[3][i] + INFER_BN_EPS);
        nd->bs[i] = scale;
        nd->bh[i] = v[1][i] - v[2][i] * scale;
    }
    for (int i = 0; i < 4; i++) free(v[i]);
    return st;
}


/* The code the consumer's quantizer gives the value x, as quantize() (and
 * the float engine's quant_forward) computes it; x may be infinite. */
static float code_of(const inode *cons, float x)
{
    float t = (x - cons->in_beta) / cons->in_s;
    t = t < cons->in_lo ? cons->in_lo : t;
    t = t > cons->in_hi ? cons->in_hi : t;
    return quant_round(t);
}

/* Folds a conv/linear layer's steps, bias, batch norm and the consumer's
 * quantizer into (ea, eb, elo, ehi); see the file comment. */
static lsq_status fold_epilogue(lsqm_model *m, inode *nd, int bn, const inode *cons, lsq_err *err)
{
    int oc = nd->c;
    nd->ea = malloc((size_t)oc * sizeof(float));
    nd->eb = malloc((size_t)oc * sizeof(float));
    if (!nd->ea || !nd->eb) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory");
    const inode *b = bn >= 0 ? &m->nodes[bn] : NULL;
    double s_next = cons ? cons->in_s : 1.0, beta_next = cons ? cons->in_beta : 0.0;
    for (int o = 0; o < oc; o++) {
        double base = nd->quant ? (double)nd->in_s * nd->wstep[o] : 1.0;
        double g = b ? b->bs[o] : 1.0, h = b ? b->bh[o] : 0.0;
        double bias = nd->bias ? nd->bias[o] : 0.0;
        double a = base * g, c = bias * g + h;
        if (cons) {
            a /= s_next;
            c = (c - beta_next) / s_next;
        }
        nd->ea[o] = (float)a;
        nd->eb[o] = (float)c;
    }
    if (cons) {
        /* relu / clip then quantize: the codes of the bounds (see the file
         * comment); an unbounded side keeps the quantizer's range */
        nd->elo = cons->in_lo;
        nd->ehi = cons->in_hi;
        if (nd->flo > -INFINITY) {
            float r = code_of(cons, nd->flo);
            if (r > nd->elo) nd->elo = r;
        }
        if (nd->fhi < INFINITY) {
            float r = code_of(cons, nd->fhi);
            if (r < nd->ehi) nd->ehi = r;
        }
    }
    if (nd->quant && nd->in_offset) {
        /* LSQ+: the input is code * s + beta where the image is, 0 in the
         * padding, so each output pixel gets beta * s_w * (sum of the weight
         * codes its window covers inside the image). */
        int hw = nd->h * nd->w, k = nd->k, icg = nd->icg;
        nd->corr = calloc((size_t)hw * oc, sizeof(float));
        if (!nd->corr) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory");
        for (int p = 0; p < hw; p++) {
            int oy = p / nd->w, ox = p % nd->w;
            for (int o = 0; o < oc; o++) {
                long sum = 0;
                for (int c = 0; c < icg; c++)
                    for (int ky = 0; ky < k; ky++) {
                        int y = oy * nd->stride - nd->pad + ky * nd->dil;
                        if (y < 0 || y >= nd->ih) continue;
                        for (int kx = 0; kx < k; kx++) {
                            int x = ox * nd->stride - nd->pad + kx * nd->dil;
                            if (x < 0 || x >= nd->iw) continue;
                            sum += nd->wcodes[(size_t)o * nd->kdim + ((size_t)c * k + ky) * k + kx];
                        }
                    }
                double g = b ? b->bs[o] : 1.0;
                double v = (double)nd->in_beta * nd->wstep[o] * g * (double)sum;
                if (cons) v /= s_next;
                nd->corr[(size_t)p * oc + o] = (float)v;
            }
        }
    }
    return LSQ_OK;
}

static size_t esize(vkind k) { return k == VK_F32 ? 4 : 1; }

/* Places every buffer of a pass in one arena, so that a pass allocates
 * nothing: buffer j lives from the step that writes it (a conv's epilogue
 * writes the buffer of the last layer it folds) to its last reader, and two
 * buffers share bytes only when their lives do not meet. First fit, in the
 * order they are written. 0, or -1 when out of memory. */
static int plan_memory(lsqm_model *m)
{
    int *def = malloc((size_t)m->n * sizeof *def), *order = malloc((size_t)m->n * sizeof *order);
    size_t *size = calloc((size_t)m->n, sizeof *size);
    if (!def || !order || !size) {
        free(def), free(order), free(size);
        return -1;
    }
    for (int j = 0; j < m->n; j++) def[j] = -1;
    if (m->need_float_input) def[0] = 0;
    for (int i = 1; i < m->n; i++) {
        const inode *nd = &m->nodes[i];
        if (nd->skip || nd->alias) continue;
        def[(nd->op == OP_CONV || nd->op == OP_LINEAR) ? nd->out_node : i] = i;
    }
    int n = 0;
    for (int i = 0; i < m->n; i++) /* in order of writing: a conv's buffer at the conv */
        for (int j = 0; j < m->n; j++)
            if (def[j] == i) {
                const inode *b = &m->nodes[j];
                size[j] = ((size_t)INFER_CHUNK * b->c * b->h * b->w * esize(b->kind) + 63) & ~(size_t)63;
                order[n++] = j;
            }
    m->arena = 0;
    for (int a = 0; a < n; a++) {
        const int j = order[a];
        const int last = m->nodes[j].last_use < def[j] ? def[j] : m->nodes[j].last_use;
        size_t at = 0;
        for (int moved = 1; moved;) { /* the lowest offset clear of every live neighbour */
            moved = 0;
            for (int b = 0; b < a; b++) {
                const int k = order[b];
                const int klast = m->nodes[k].last_use < def[k] ? def[k] : m->nodes[k].last_use;
                const int meet = def[j] <= klast && def[k] <= last;
                const size_t kat = m->nodes[k].at;
                if (meet && at < kat + size[k] && kat < at + size[j]) {
                    at = kat + size[k];
                    moved = 1;
                }
            }
        }
        m->nodes[j].at = at;
        if (at + size[j] > m->arena) m->arena = at + size[j];
    }
    free(def), free(order), free(size);
    return 0;
}

/* The float engine's input value of pixel value px in channel c, as the
 * data loader computes it (run_chunk's float input and the pixel tables). */
static inline float input_value(const lsqm_model *m, int c, uint8_t px)
{
    return m->norm_on ? (float)px * m->norm_scale[c] + m->norm_bias[c] : (float)px / 255.0f;
}

static void quantize(void *out, const float *restrict in, size_t count, const inode *nd);

/* The node whose buffer node p's value lives in (through flatten aliases). */
static int resolve(const lsqm_model *m, int p)
{
    while (m->nodes[p].alias) p = m->nodes[p].in[0];
    return p;
}

/* A flatten whose only consumer is a quantized linear layer: that layer's
 * weight columns are repacked from the channel-major order of the layer
 * list into the NHWC order of the flatten's input, and the flatten becomes
 * an alias of its input instead of a reordering pass. Integer sums do not
 * depend on the order of their terms, so the outputs stay bit for bit; a
 * float linear layer (SGEMM sums in order) keeps the flatten. */
static lsq_status flatten_into_weights(lsqm_model *m, int i, const int *ncons, const int *cons,
                                       lsq_err *err)
{
    inode *nd = &m->nodes[i];
    if (ncons[i] != 1 || i == m->output || resolve(m, nd->in[0]) == 0) return LSQ_OK;
    inode *ln = &m->nodes[cons[i]];
    if (ln->op != OP_LINEAR || !ln->quant || !ln->pw || ln->in[0] != i || !ln->wcodes)
        return LSQ_OK;
    const int c = nd->ic, hw = nd->ih * nd->iw, n = ln->c, k = ln->kdim, bits = ln->pw[0].bits;
    int8_t *w = malloc((size_t)n * k);
    if (!w) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading %s", ln->name);
    for (int o = 0; o < n; o++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++)
                w[(size_t)o * k + (size_t)p * c + ch] = ln->wcodes[(size_t)o * k + (size_t)ch * hw + p];
    lsq_igemm_w fresh;
    lsq_status st = lsq_igemm_pack_bits(&fresh, w, n, k, bits, err);
    free(w);
    if (st != LSQ_OK) return st;
    lsq_igemm_w_free(&ln->pw[0]);
    ln->pw[0] = fresh;
    nd->alias = 1;
    return LSQ_OK;
}

static lsqm_model *build(const lsqm_file *f, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    lsq_net net;
    if (net_build(&net, f->model, NULL, f->classes, 1, err) != LSQ_OK) {
        lsq_err_prefix(err, "the model's layer list");
        err->code = LSQ_ERR_FORMAT;
        return NULL;
    }
    /* lsqm_encode writes no such file; one made elsewhere is refused here */
    if (deploy_check_layers(&net, DEPLOY_INTEGER, err) != LSQ_OK) {
        lsq_err_prefix(err, "the model's layer list");
        net_free(&net);
        return NULL;
    }
    lsqm_model *m = calloc(1, sizeof *m);
    int *ncons = calloc((size_t)net.n_nodes, sizeof *ncons);
    int *cons = calloc((size_t)net.n_nodes, sizeof *cons);
    if (!m || !ncons || !cons || !(m->nodes = calloc((size_t)net.n_nodes, sizeof *m->nodes))) {
        lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading the model");
        goto fail;
    }
    m->n = net.n_nodes;
    m->output = net.output;
    m->classes = net.classes;
    m->c = net.nodes[0].c, m->h = net.nodes[0].h, m->w = net.nodes[0].w;
    m->kern = lsq_kernel_select();
    /* a normalised input: the float input is pixel * scale[c] + bias[c] with
     * the data loader's own coefficients, so it is the value that training
     * saw, bit for bit, and each first layer quantizes it with its own step */
    m->norm_on = net.norm_on;
    if (net.norm_on)
        loader_normalize_coefs(m->norm_scale, m->norm_bias, net.norm_mean, net.norm_std, m->c);
    for (int i = 0; i < m->n; i++) {
        const net_node *s = &net.nodes[i];
        inode *nd = &m->nodes[i];
        nd->op = s->op;
        snprintf(nd->name, sizeof nd->name, "%s", s->name);
        nd->n_in = i > 0 ? s->n_in : 0;
        for (int t = 0; t < NET_MAX_INPUTS; t++) nd->in[t] = t < nd->n_in ? s->in[t] : -1;
        nd->c = s->c, nd->h = s->h, nd->w = s->w;
        nd->out_node = i;
        nd->add_in = -1;
        nd->groups = 1;
        nd->flo = -INFINITY, nd->fhi = INFINITY;
        if (i > 0) {
            const net_node *src = &net.nodes[s->in[0]];
            nd->ic = src->c, nd->ih = src->h, nd->iw = src->w;
            /* every reference counts: a layer that reads one input twice is
             * not its sole consumer */
            for (int t = 0; t < nd->n_in; t++) ncons[s->in[t]]++, cons[s->in[t]] = i;
        }
        if (s->op == OP_CONV) {
            nd->k = s->kernel, nd->stride = s->stride, nd->pad = s->pad;
            nd->dil = s->dilation > 1 ? s->dilation : 1;
            nd->groups = s->groups > 1 ? s->groups : 1;
            nd->icg = nd->ic / nd->groups, nd->ocg = nd->c / nd->groups;
            nd->kdim = nd->icg * nd->k * nd->k;
            nd->dw = nd->groups > 1 && nd->icg == 1;
            nd->mult = nd->dw ? nd->c / nd->ic : 1;
        } else if (s->op == OP_LINEAR) {
            nd->ic = nd->ic * nd->ih * nd->iw, nd->ih = nd->iw = 1;
            nd->k = 1, nd->stride = 1, nd->pad = 0, nd->dil = 1;
            nd->icg = nd->ic, nd->ocg = nd->c;
            nd->kdim = nd->ic;
        } else if (s->op == OP_MAXPOOL || s->op == OP_AVGPOOL) {
            nd->pk = s->kernel, nd->ps = s->stride, nd->ppad = s->pad;
            nd->pcip = s->count_include_pad;
        } else if (s->op == OP_CLIP) {
            nd->lo = s->lo, nd->hi = s->hi;
        } else if (s->op == OP_LEAKYRELU) {
            nd->alpha = s->alpha;
        } else if (s->op == OP_SCALE) {
            nd->value = s->value;
        }
        if (s->op == OP_CONV || s->op == OP_LINEAR) {
            if (nd->kdim > LSQ_IGEMM_MAX_K) {
                lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "layer '%s': K = %d is too large",
                            nd->name, nd->kdim);
                goto fail;
            }
            if ((st = load_gemm(nd, s, f, err)) != LSQ_OK) goto fail;
            if (!nd->quant) m->has_float_gemm = 1;
        } else if (s->op == OP_BN) {
            if ((st = load_bn(nd, f, err)) != LSQ_OK) goto fail;
        }
    }
    ncons[m->output]++; /* the caller reads the logits */
    /* epilogue chains and value kinds, in node order */
    m->nodes[0].kind = VK_F32;
    for (int i = 0; i < m->n; i++) {
        inode *nd = &m->nodes[i];
        if (nd->skip) continue;
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            /* fold what follows while it is the value's only consumer: a
             * batch norm first, then ReLUs and clips (bounds composed:
             * clip(clip(x, a, b), c, d) = clip(x, clip(a, c, d), clip(b, c, d))) */
            int e = i, bn = -1;
            while (ncons[e] == 1 && e != m->output) {
                int j = cons[e];
                const inode *nj = &m->nodes[j];
                if (nj->op == OP_BN && bn < 0 && !nd->relu && !nd->clipped) {
                    bn = j;
                } else if (nj->op == OP_RELU) {
                    nd->relu = 1;
                    nd->flo = nd->flo > 0.0f ? nd->flo : 0.0f;
                    nd->fhi = nd->fhi > 0.0f ? nd->fhi : 0.0f;
                } else if (nj->op == OP_CLIP) {
                    nd->clipped = 1;
                    nd->flo = nd->flo < nj->lo ? nj->lo : nd->flo > nj->hi ? nj->hi : nd->flo;
                    nd->fhi = nd->fhi < nj->lo ? nj->lo : nd->fhi > nj->hi ? nj->hi : nd->fhi;
                } else {
                    break;
                }
                m->nodes[j].skip = 1;
                e = j;
            }
            /* a residual add of a float value computed earlier (and a ReLU
             * after it): added in the epilogue, as the add's own a + b */
            const int ad = ncons[e] == 1 && e != m->output ? cons[e] : -1;
            if (ad >= 0 && m->nodes[ad].op == OP_ADD && m->nodes[ad].n_in == 2) {
                const int o = m->nodes[ad].in[0] == e ? m->nodes[ad].in[1] : m->nodes[ad].in[0];
                const int ro = o > 0 && o < i ? resolve(m, o) : 0;
                if (o != e && ro > 0 && m->nodes[ro].kind == VK_F32) {
                    nd->add_in = ro;
                    m->nodes[ad].skip = 1;
                    e = ad;
                    if (ncons[e] == 1 && e != m->output && m->nodes[cons[e]].op == OP_RELU) {
                        nd->add_relu = 1;
                        e = cons[e];
                        m->nodes[e].skip = 1;
                    }
                }
            }
            nd->out_node = e;
            /* through max pools and flattens to a single quantized consumer? */
            int p = e;
            while (ncons[p] == 1 && p != m->output &&
                   (m->nodes[cons[p]].op == OP_MAXPOOL || m->nodes[cons[p]].op == OP_FLATTEN))
                p = cons[p];
            const inode *cn = NULL;
            if (ncons[p] == 1 && p != m->output && nd->add_in < 0) {
                const inode *c = &m->nodes[cons[p]];
                if ((c->op == OP_CONV || c->op == OP_LINEAR) && c->quant && c->in[0] == p) cn = c;
            }
            nd->epi_codes = cn != NULL;
            if ((st = fold_epilogue(m, nd, bn, cn, err)) != LSQ_OK) goto fail;
            vkind k = cn ? (cn->in_signed ? VK_S8 : VK_U8) : VK_F32;
            m->nodes[e].kind = k;
            for (int q = e; q != p;) {
                q = cons[q];
                m->nodes[q].kind = k;
            }
            if (cn) m->nodes[cons[p]].src = IN_CODES;
        } else if (nd->op == OP_MAXPOOL || nd->op == OP_FLATTEN) {
            if (nd->kind == VK_NONE) nd->kind = m->nodes[nd->in[0]].kind;
            if (nd->op == OP_FLATTEN && nd->ih * nd->iw == 1) nd->alias = 1;
            else if (nd->op == OP_FLATTEN && (st = flatten_into_weights(m, i, ncons, cons, err)) != LSQ_OK)
                goto fail;
        } else if (i > 0) {
            /* every other layer computes in float on float inputs (codes
             * reach only the quantized layer at the end of their chain) */
            nd->kind = VK_F32;
        }
    }
    /* inputs of conv/linear layers that did not get codes from an epilogue */
    for (int i = 1; i < m->n; i++) {
        inode *nd = &m->nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_LINEAR) continue;
        if (!nd->quant) {
            nd->src = IN_FLOAT;
            continue;
        }
        if (nd->src == IN_CODES) continue;
        int p = nd->in[0];
        while (p > 0 && m->nodes[p].op == OP_FLATTEN) p = m->nodes[p].in[0];
        int exact = nd->in_s == 1.0f / 255.0f && !nd->in_offset && !nd->in_signed &&
                    nd->in_bits == 8 && !m->norm_on;
        /* the image as 8-bit codes: codes = pixels when s = 1/255 at 8 bits */
        /* NCHW pixels are the order a conv on a one-channel image or a
         * flattened / linear input reads */
        if (p == 0 && exact && (nd->in[0] != 0 || m->c == 1 || nd->op == OP_LINEAR))
            nd->src = IN_PIXELS;
        else if (p == 0 && ((nd->op == OP_CONV && nd->in[0] == 0) || m->c == 1))
            nd->src = IN_LUT;
        else nd->src = IN_QUANT;
        if (nd->src == IN_LUT) {
            /* a pixel's code is a function of its value (and channel):
             * the float input as run_chunk computes it, quantized as
             * quantize() does, once for each of the 256 values */
            float x[256];
            if (!(nd->lut = malloc((size_t)m->c * 256))) {
                lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading the model");
                goto fail;
            }
            for (int c = 0; c < m->c; c++) {
                for (int v = 0; v < 256; v++) x[v] = input_value(m, c, (uint8_t)v);
                quantize(nd->lut + (size_t)c * 256, x, 256, nd);
            }
        }
    }
    m->nodes[0].kind = VK_F32;
    for (int i = 1; i < m->n; i++) {
        const inode *nd = &m->nodes[i];
        if (nd->skip) continue;
        if ((nd->op == OP_CONV || nd->op == OP_LINEAR) &&
            (nd->src == IN_PIXELS || nd->src == IN_LUT))
            continue;
        for (int t = 0; t < nd->n_in; t++)
            if (resolve(m, nd->in[t]) == 0) m->need_float_input = 1;
    }
    /* buffer lifetimes: the last reader of each buffer-owning node */
    for (int i = 0; i < m->n; i++) m->nodes[i].last_use = -1;
    for (int i = 1; i < m->n; i++) {
        const inode *nd = &m->nodes[i];
        if (nd->skip) continue;
        for (int t = 0; t < nd->n_in; t++) {
            int p = resolve(m, nd->in[t]);
            if (m->nodes[p].last_use < i) m->nodes[p].last_use = i;
        }
        if (nd->add_in >= 0 && m->nodes[nd->add_in].last_use < i) m->nodes[nd->add_in].last_use = i;
    }
    {
        int p = resolve(m, m->output);
        m->nodes[p].last_use = m->n; /* kept until the logits are copied */
        if (m->nodes[m->output].kind != VK_F32) {
            lsq_err_set(err, LSQ_ERR_FORMAT, NULL, "the network's output is not float");
            goto fail;
        }
    }
    if (plan_memory(m) != 0 || !(m->slots = calloc(1, sizeof *m->slots)) ||
        pthread_mutex_init(&m->slots->lock, NULL) != 0) {
        free(m->slots);
        m->slots = NULL;
        lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory loading the model");
        goto fail;
    }
    /* the packed weights are all a layer needs from here on */
    for (int i = 0; i < m->n; i++) {
        free(m->nodes[i].wcodes);
        m->nodes[i].wcodes = NULL;
    }
    free(ncons);
    free(cons);
    net_free(&net);
    return m;
fail:
    free(ncons);
    free(cons);
    net_free(&net);
    lsqm_free(m);
    return NULL;
}

lsqm_model *lsqm_load_file(const lsqm_file *f, lsq_err *err)
{
    return build(f, err);
}

lsqm_model *lsqm_load(const char *path, lsq_err *err)
{
    lsqm_file f;
    if (lsqm_read(&f, path, err) != LSQ_OK) {
        lsqm_file_free(&f);
        return NULL;
    }
    lsqm_model *m = build(&f, err);
    if (!m) {
        char pre[600];
        snprintf(pre, sizeof pre, "%s", path);
        if (!strstr(err->message, path)) lsq_err_prefix(err, pre);
    }
    lsqm_file_free(&f);
    return m;
}

void lsqm_input_shape(const lsqm_model *m, int *c, int *h, int *w, int *classes)
{
    if (c) *c = m->c;
    if (h) *h = m->h;
    if (w) *w = m->w;
    if (classes) *classes = m->classes;
}

lsq_status lsqm_set_kernel(lsqm_model *m, int kernel, lsq_err *err)
{
    if (kernel < 0 || kernel >= LSQ_KERNEL_COUNT || !lsq_kernel_supported((lsq_kernel)kernel))
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "kernel path %d is not supported on this CPU", kernel);
    m->kern = (lsq_kernel)kernel;
    return LSQ_OK;
}

lsq_status lsqm_set_packed(lsqm_model *m, int packed, lsq_err *err)
{
    for (int i = 0; i < m->n; i++) {
        inode *nd = &m->nodes[i];
        if (!nd->pw) continue;
        const int bits = packed && (nd->wbits == 2 || nd->wbits == 3) ? nd->wbits : 8;
        for (int g = 0; g < nd->groups; g++) {
            lsq_igemm_w *pw = &nd->pw[g], fresh;
            if (pw->bits == bits) continue;
            int8_t *codes = malloc((size_t)pw->n * pw->k);
            if (!codes) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory repacking");
            lsq_igemm_codes(codes, pw);
            lsq_status st = lsq_igemm_pack_bits(&fresh, codes, pw->n, pw->k, bits, err);
            free(codes);
            if (st != LSQ_OK) return st;
            lsq_igemm_w_free(pw);
            *pw = fresh;
        }
    }
    return LSQ_OK;
}

size_t lsqm_weight_bytes(const lsqm_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->n; i++)
        for (int g = 0; m->nodes[i].pw && g < m->nodes[i].groups; g++)
            n += lsq_igemm_w_bytes(&m->nodes[i].pw[g]);
    return n;
}

/* ------------------------------------------------------------ kernels */

/* im2col over NHWC: row (img, oy, ox) holds the window of channels
 * [c0, c0 + cn) of an IC-channel image in (ky, kx, c) order, taps `dil`
 * apart; padding is code / value 0. esz: element bytes (1 or 4). */
static void im2col_nhwc(uint8_t *col, const uint8_t *in, int nb, int ih, int iw, int ic, int c0,
                        int cn, int k, int stride, int pad, int dil, int oh, int ow, size_t esz)
{
    const size_t kd = (size_t)k * k * cn * esz, run = (size_t)cn * esz, pix = (size_t)ic * esz;
    const size_t at = (size_t)c0 * esz;
    for (int b = 0; b < nb; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                uint8_t *row = col + (((size_t)b * oh + oy) * ow + ox) * kd;
                for (int ky = 0; ky < k; ky++) {
                    int y = oy * stride - pad + ky * dil;
                    for (int kx = 0; kx < k; kx++) {
                        int x = ox * stride - pad + kx * dil;
                        uint8_t *dst = row + ((size_t)ky * k + kx) * run;
                        if (y < 0 || y >= ih || x < 0 || x >= iw) {
                            memset(dst, 0, run);
                            continue;
                        }
                        const uint8_t *src = in + (((size_t)b * ih + y) * iw + x) * pix + at;
                        if (run == 1) *dst = *src;
                        else memcpy(dst, src, run);
                    }
                }
            }
}

/* The folded epilogue of a conv/linear over m rows of acc (int32 or float),
 * output pixels r0 .. r0 + m - 1 of the pass; ad: the rows of the folded
 * residual add's other input (nd->add_in), else NULL. */
static void epilogue(const inode *nd, vkind ok, const int32_t *acci, const float *accf, void *out,
                     int m, size_t r0, const float *ad)
{
    lsq_epi e = {nd->c, nd->h * nd->w, LSQ_EPI_VALUE, nd->relu, nd->elo, nd->ehi, nd->ea,
                 nd->eb, nd->corr, nd->add_relu ? 2 : 1};
    if (nd->epi_codes) {
        e.kind = ok == VK_U8 ? LSQ_EPI_U8 : LSQ_EPI_S8;
    } else if (nd->relu || nd->clipped) {
        e.kind = LSQ_EPI_BOUNDED;
        e.lo = nd->flo, e.hi = nd->fhi;
    }
    lsq_epi_rows(&e, acci, accf, out, m, r0, ad);
}

/* Quantizes float values exactly as the float engine's quant_forward (on
 * the widest vectors the CPU has: quant.c is built for both paths). */
static void quantize(void *out, const float *in, size_t count, const inode *nd)
{
    quant_codes_bytes(out, in, count, nd->in_s, nd->in_beta, nd->in_lo, nd->in_hi,
                      nd->in_signed);
}

/* The window of pooling output (oy, ox) clipped to the input: rows
 * [*y0, *y1), columns [*x0, *x1); never empty (pad <= kernel - 1). */
static void pool_window(const inode *nd, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    const int ys = oy * nd->ps - nd->ppad, xs = ox * nd->ps - nd->ppad;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ys + nd->pk > nd->ih ? nd->ih : ys + nd->pk;
    *x1 = xs + nd->pk > nd->iw ? nd->iw : xs + nd->pk;
}

/* Max pooling over NHWC, padded cells never winning (as maxpool2d_forward:
 * the window's first cell inside the input, then strict >). The channel
 * loops are vectorised explicitly (omp simd): -O2's cheap cost model left
 * them one byte at a time, which made pooling the codes a fifth of
 * cnn-small's run. The 2x2 stride-2 window without padding (cnn-small's)
 * takes its four cells in one pass. */
#define MAXPOOL_NHWC(T)                                                                    \
    static void maxpool_##T(T *restrict out, const T *restrict in, int nb, const inode *nd) \
    {                                                                                      \
        const int c = nd->c, ih = nd->ih, iw = nd->iw;                                     \
        if (nd->pk == 2 && nd->ps == 2 && nd->ppad == 0 && 2 * nd->h <= ih &&              \
            2 * nd->w <= iw) {                                                             \
            for (int b = 0; b < nb; b++)                                                   \
                for (int oy = 0; oy < nd->h; oy++)                                         \
                    for (int ox = 0; ox < nd->w; ox++) {                                   \
                        T *restrict o = out + (((size_t)b * nd->h + oy) * nd->w + ox) * c; \
                        const T *restrict p0 = in + (((size_t)b * ih + 2 * oy) * iw + 2 * ox) * c; \
                        const T *restrict p1 = p0 + (size_t)iw * c;                        \
                        _Pragma("omp simd") for (int j = 0; j < c; j++) {                  \
                            T v = p0[j];                                                   \
                            v = p0[c + j] > v ? p0[c + j] : v;                             \
                            v = p1[j] > v ? p1[j] : v;                                     \
                            o[j] = p1[c + j] > v ? p1[c + j] : v;                          \
                        }                                                                  \
                    }                                                                      \
            return;                                                                        \
        }                                                                                  \
        for (int b = 0; b < nb; b++)                                                       \
            for (int oy = 0; oy < nd->h; oy++)                                             \
                for (int ox = 0; ox < nd->w; ox++) {                                       \
                    int y0, y1, x0, x1;                                                    \
                    pool_window(nd, oy, ox, &y0, &y1, &x0, &x1);                           \
                    T *restrict o = out + (((size_t)b * nd->h + oy) * nd->w + ox) * c;     \
                    memcpy(o, in + (((size_t)b * ih + y0) * iw + x0) * c, (size_t)c * sizeof(T)); \
                    for (int y = y0; y < y1; y++)                                          \
                        for (int x = x0; x < x1; x++) {                                    \
                            const T *restrict p = in + (((size_t)b * ih + y) * iw + x) * c; \
                            _Pragma("omp simd") for (int j = 0; j < c; j++)                \
                                o[j] = p[j] > o[j] ? p[j] : o[j];                          \
                        }                                                                  \
                }                                                                          \
    }
MAXPOOL_NHWC(float)
MAXPOOL_NHWC(uint8_t)
MAXPOOL_NHWC(int8_t)

/* Windowed average pooling over NHWC floats with avgpool2d_forward's
 * operations: each window's cells summed from 0 in row-major order, then
 * divided by k * k (count_include_pad) or by the cells inside the input. */
static void avgpool_window(float *out, const float *in, int nb, const inode *nd)
{
    const int c = nd->c, ih = nd->ih, iw = nd->iw;
    for (int b = 0; b < nb; b++)
        for (int oy = 0; oy < nd->h; oy++)
            for (int ox = 0; ox < nd->w; ox++) {
                int y0, y1, x0, x1;
                pool_window(nd, oy, ox, &y0, &y1, &x0, &x1);
                float *o = out + (((size_t)b * nd->h + oy) * nd->w + ox) * c;
                for (int j = 0; j < c; j++) o[j] = 0.0f;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        const float *p = in + (((size_t)b * ih + y) * iw + x) * c;
                        for (int j = 0; j < c; j++) o[j] += p[j];
                    }
                const float cnt = nd->pcip ? (float)(nd->pk * nd->pk) : (float)((y1 - y0) * (x1 - x0));
                for (int j = 0; j < c; j++) o[j] = o[j] / cnt;
            }
}

/* A float depthwise conv of NHWC x (nb, IH, IW, IC) into acc (nb * OH * OW,
 * OC), bias left to the epilogue; nd->wf is (KH * KW, OC) here. */
static void dw_float(float *acc, const float *x, int nb, const inode *nd)
{
    const int oc = nd->c, ic = nd->ic, k = nd->k, mult = nd->mult;
    for (int b = 0; b < nb; b++)
        for (int oy = 0; oy < nd->h; oy++)
            for (int ox = 0; ox < nd->w; ox++) {
                float *restrict o = acc + (((size_t)b * nd->h + oy) * nd->w + ox) * oc;
                for (int j = 0; j < oc; j++) o[j] = 0.0f;
                for (int ky = 0; ky < k; ky++) {
                    const int y = oy * nd->stride - nd->pad + ky * nd->dil;
                    if (y < 0 || y >= nd->ih) continue;
                    for (int kx = 0; kx < k; kx++) {
                        const int xx = ox * nd->stride - nd->pad + kx * nd->dil;
                        if (xx < 0 || xx >= nd->iw) continue;
                        const float *restrict xp = x + (((size_t)b * nd->ih + y) * nd->iw + xx) * ic;
                        const float *restrict wt = nd->wf + (size_t)(ky * k + kx) * oc;
                        if (mult == 1) {
#pragma omp simd
                            for (int j = 0; j < oc; j++) o[j] += wt[j] * xp[j];
                        } else {
                            for (int j = 0; j < oc; j++) o[j] += wt[j] * xp[j / mult];
                        }
                    }
                }
            }
}

/* Work buffers of one thread's passes: kept from layer to layer and pass
 * to pass, grown when a layer needs more. */
typedef struct {
    uint8_t *codes, *col, *wide, *pad;
    int32_t *acc;
    float *accf;
    size_t codes_n, col_n, wide_n, pad_n, acc_n, accf_n; /* bytes held */
} work;

static void work_free(work *ws)
{
    free(ws->codes);
    free(ws->col);
    free(ws->wide);
    free(ws->pad);
    free(ws->acc);
    free(ws->accf);
}

/* A thread's arena and work buffers, kept by the model between calls so
 * that a call faults in no fresh memory: lsqm_predict's threads take one
 * each and give it back; there are as many as threads ever ran at once. */
typedef struct slot {
    uint8_t *arena;
    work ws;
    struct slot *next;
} slot;

static void slots_free(struct slots *sl)
{
    if (!sl) return;
    for (slot *s = sl->free, *nx; s; s = nx) {
        nx = s->next;
        free(s->arena);
        work_free(&s->ws);
        free(s);
    }
    pthread_mutex_destroy(&sl->lock);
    free(sl);
}

/* A free slot of m, or a new one; NULL when out of memory. */
static slot *take_slot(const lsqm_model *m)
{
    pthread_mutex_lock(&m->slots->lock);
    slot *s = m->slots->free;
    if (s) m->slots->free = s->next;
    pthread_mutex_unlock(&m->slots->lock);
    if (s) return s;
    s = calloc(1, sizeof *s);
    if (s && !(s->arena = aligned_alloc(64, m->arena ? m->arena : 64))) {
        free(s);
        s = NULL;
    }
    return s;
}

static void give_slot(const lsqm_model *m, slot *s)
{
    if (!s) return;
    pthread_mutex_lock(&m->slots->lock);
    s->next = m->slots->free;
    m->slots->free = s;
    pthread_mutex_unlock(&m->slots->lock);
}

/* *p (holding *have bytes) made at least n bytes, its contents dropped;
 * NULL when out of memory. */
static void *grow(void *p, size_t *have, size_t n)
{
    void **pp = p;
    if (n <= *have && *pp) return *pp;
    free(*pp);
    *pp = malloc(n ? n : 1);
    *have = *pp ? n : 0;
    return *pp;
}

/* The codes of nb images of NCHW pixels through the table lut (C, 256),
 * NHWC: pixel p of image b at out + (b * ostride + p / w * orow + p % w) * c
 * (orow = w, ostride = h * w: dense; a padded image's interior otherwise). */
static void lut_codes(uint8_t *restrict out, const uint8_t *restrict pixels, int nb, int c, int h,
                      int w, size_t orow, size_t ostride, const uint8_t *restrict lut)
{
    const size_t hw = (size_t)h * w;
    for (int b = 0; b < nb; b++)
        for (int ch = 0; ch < c; ch++) {
            const uint8_t *src = pixels + ((size_t)b * c + ch) * hw;
            const uint8_t *t = lut + (size_t)ch * 256;
            for (int y = 0; y < h; y++) {
                uint8_t *o = out + ((size_t)b * ostride + (size_t)y * orow) * c + ch;
                for (int x = 0; x < w; x++) o[(size_t)x * c] = t[src[(size_t)y * w + x]];
            }
        }
}

/* conv_taps' epilogue over outputs [i0, i1) (sums at c, ldc apart). */
struct taps_epi {
    const inode *nd;
    vkind ok;
    void *out;
    const float *ad;
    size_t es;
};

static void taps_rows(void *ctx, const int32_t *c, int ldc, int i0, int i1)
{
    const struct taps_epi *e = ctx;
    const int n = e->nd->c;
    (void)ldc; /* n: the epilogue's row stride */
    epilogue(e->nd, e->ok, c, NULL, (uint8_t *)e->out + (size_t)i0 * n * e->es, i1 - i0,
             (size_t)i0, e->ad ? e->ad + (size_t)i0 * n : NULL);
}

/* A stride-1 "same" dense conv on unsigned codes (nd->goff): the nb images
 * zero-padded (code 0 is the value 0), the sums taken in place
 * (lsq_igemm_u8_taps_rows: the outputs only, not the padding columns) and
 * the epilogue run on each block of sums as it is done. The codes come
 * from `codes` (NHWC), or for IN_LUT from the pixels through the layer's
 * table. */
static lsq_status conv_taps(const inode *nd, vkind ok, const uint8_t *codes, const uint8_t *pixels,
                            int nb, void *out, const float *ad, lsq_kernel kern, work *ws,
                            lsq_err *err)
{
    const int ic = nd->ic, pad = nd->pad, wp = nd->iw + 2 * pad, hp = nd->ih + 2 * pad;
    const int n = nd->c;
    const size_t img = (size_t)hp * wp, es = esize(ok);
    /* the largest tap reads dil * (k - 1) pixels past an image's last output
     * row; a one-channel conv's 4-code groups up to 3 codes further (64) */
    const size_t abytes = ((size_t)nb * img + (size_t)nd->dil * (nd->k - 1) + 1) * ic + 64;
    uint8_t *a = grow(&ws->pad, &ws->pad_n, abytes);
    int32_t *acc = grow(&ws->acc, &ws->acc_n, (size_t)LSQ_IGEMM_ROWS * n * sizeof *acc);
    if (!a || !acc) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory running the model");
    memset(a, 0, abytes);
    if (nd->src == IN_LUT)
        lut_codes(a + ((size_t)pad * wp + pad) * ic, pixels, nb, ic, nd->ih, nd->iw, (size_t)wp,
                  img, nd->lut);
    else
        for (int b = 0; b < nb; b++)
            for (int y = 0; y < nd->ih; y++)
                memcpy(a + ((size_t)b * img + (size_t)(y + pad) * wp + pad) * ic,
                       codes + ((size_t)b * nd->ih + y) * nd->iw * ic, (size_t)nd->iw * ic);
    struct taps_epi e = {nd, ok, out, ad, es};
    return lsq_igemm_u8_taps_rows(acc, n, a, ic, nb, nd->h, nd->w, wp, img, nd->goff,
                                  (int)nd->in_hi, &nd->pw[0], kern, taps_rows, &e, err);
}

/* One conv/linear layer over nb images: the products (on codes, or in float
 * for a float layer), then the epilogue into the buffer of nd->out_node. */
static lsq_status run_gemm(const lsqm_model *m, const inode *nd, void **buf,
                           const uint8_t *pixels, int nb, work *ws, lsq_err *err)
{
    const int M = nb * nd->h * nd->w, N = nd->c, K = nd->kdim;
    const size_t in_elems = (size_t)nb * nd->ic * nd->ih * nd->iw;
    const int direct = nd->k == 1 && nd->stride == 1 && nd->pad == 0;
    const inode *en = &m->nodes[nd->out_node];
    void *out = buf[nd->out_node];
    const float *ad = nd->add_in >= 0 ? buf[nd->add_in] : NULL;
    if (!nd->quant) {
        const float *x = buf[nd->in[0]];
        if (!grow(&ws->accf, &ws->accf_n, (size_t)M * N * sizeof(float))) goto oom;
        if (nd->dw) {
            dw_float(ws->accf, x, nb, nd);
        } else {
            if (!direct && !grow(&ws->col, &ws->col_n, (size_t)M * K * sizeof(float))) goto oom;
            for (int g = 0; g < nd->groups; g++) {
                const float *a = x + (size_t)g * nd->icg;
                int lda = nd->ic;
                if (!direct) {
                    im2col_nhwc(ws->col, (const uint8_t *)x, nb, nd->ih, nd->iw, nd->ic,
                                g * nd->icg, nd->icg, nd->k, nd->stride, nd->pad, nd->dil, nd->h,
                                nd->w, 4);
                    a = (const float *)ws->col;
                    lda = K;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nd->ocg, K, 1.0f, a, lda,
                            nd->wf + (size_t)g * nd->ocg * K, K, 0.0f, ws->accf + (size_t)g * nd->ocg,
                            N);
            }
        }
        epilogue(nd, en->kind, NULL, ws->accf, out, M, 0, ad);
        return LSQ_OK;
    }
    const uint8_t *codes;
    if (nd->src == IN_CODES) {
        codes = buf[nd->in[0]];
    } else if (nd->src == IN_PIXELS) {
        codes = pixels; /* one channel, or a flat linear input: the stored order */
    } else if (nd->src == IN_LUT) {
        codes = NULL;
        if (!nd->goff) {
            if (!grow(&ws->codes, &ws->codes_n, in_elems)) goto oom;
            lut_codes(ws->codes, pixels, nb, m->c, m->h, m->w, (size_t)m->w, (size_t)m->h * m->w,
                      nd->lut);
            codes = ws->codes;
        }
    } else {
        if (!grow(&ws->codes, &ws->codes_n, in_elems)) goto oom;
        quantize(ws->codes, buf[nd->in[0]], in_elems, nd);
        codes = ws->codes;
    }
    lsq_status st;
    if (nd->goff && lsq_igemm_taps_ok(&nd->pw[0], nd->ic, (int)nd->in_hi, m->kern))
        return conv_taps(nd, en->kind, codes, pixels, nb, out, ad, m->kern, ws, err);
    if (nd->goff && (nd->quads || !codes))
        return lsq_err_set(err, LSQ_ERR_INVALID, "kernel",
                           "layer '%s' needs the direct convolution, which kernel path %s "
                           "cannot run", nd->name, LSQ_KERNEL_NAMES[m->kern]);
    if (!grow(&ws->acc, &ws->acc_n, (size_t)M * N * sizeof(int32_t))) goto oom;
    if (nd->dw) {
        const uint8_t *a = codes;
        if (nd->mult > 1) {
            /* each input channel repeated for its mult output channels */
            const size_t pix = (size_t)nb * nd->ih * nd->iw;
            if (!grow(&ws->wide, &ws->wide_n, pix * N)) goto oom;
            for (size_t p = 0; p < pix; p++)
                for (int o = 0; o < N; o++)
                    ws->wide[p * N + o] = codes[p * nd->ic + o / nd->mult];
            a = ws->wide;
        }
        const lsq_dw_geom g = {nd->ih, nd->iw, nd->h, nd->w, nd->stride, nd->pad, nd->dil};
        st = nd->in_signed ? lsq_dw_s8(ws->acc, (const int8_t *)a, nb, &g, &nd->dww, m->kern, 1, err)
                           : lsq_dw_u8(ws->acc, a, nb, &g, (int)nd->in_hi, &nd->dww, m->kern, 1,
                                       err);
        if (st != LSQ_OK) return st;
    } else {
        if (!direct && !grow(&ws->col, &ws->col_n, (size_t)M * K)) goto oom;
        for (int g = 0; g < nd->groups; g++) {
            const uint8_t *a = codes + (size_t)g * nd->icg;
            int lda = nd->ic;
            if (!direct) {
                im2col_nhwc(ws->col, codes, nb, nd->ih, nd->iw, nd->ic, g * nd->icg, nd->icg,
                            nd->k, nd->stride, nd->pad, nd->dil, nd->h, nd->w, 1);
                a = ws->col;
                lda = K;
            }
            int32_t *c = ws->acc + (size_t)g * nd->ocg;
            st = nd->in_signed
                     ? lsq_igemm_s8(c, N, (const int8_t *)a, lda, M, &nd->pw[g], m->kern, 1, err)
                     : lsq_igemm_u8_max(c, N, a, lda, M, (int)nd->in_hi, &nd->pw[g], m->kern, 1,
                                        err);
            if (st != LSQ_OK) return st;
        }
    }
    epilogue(nd, en->kind, ws->acc, NULL, out, M, 0, ad);
    return LSQ_OK;
oom:
    return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory running the model");
}

/* One pass of nb images through the plan; logits (nb, classes). */
static lsq_status run_chunk(const lsqm_model *m, const uint8_t *pixels, int nb, float *logits,
                            uint8_t *arena, work *ws, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    void **buf = calloc((size_t)m->n, sizeof *buf);
    if (!buf) return lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory running the model");
    /* every buffer's place in the arena (plan_memory) */
    for (int j = 0; j < m->n; j++)
        if (!m->nodes[j].alias) buf[j] = arena + m->nodes[j].at;
    const size_t in_plane = (size_t)m->c * m->h * m->w;
    if (m->need_float_input) {
        float *x = buf[0];
        /* NCHW pixels / 255, or pixel * scale[c] + bias[c] when normalised,
         * -> NHWC (as the data loader computes them) */
        size_t hw = (size_t)m->h * m->w;
        for (int b = 0; b < nb; b++)
            for (int c = 0; c < m->c; c++) {
                const uint8_t *src = pixels + (size_t)b * in_plane + (size_t)c * hw;
                float *dst = x + (size_t)b * hw * m->c + c;
                for (size_t p = 0; p < hw; p++) dst[p * m->c] = input_value(m, c, src[p]);
            }
    }
    for (int i = 1; i < m->n; i++) {
        const inode *nd = &m->nodes[i];
        if (nd->skip) continue;
        const size_t out_elems = (size_t)nb * nd->c * nd->h * nd->w;
        const float *x = buf[nd->in[0]];
        switch (nd->op) {
        case OP_CONV:
        case OP_LINEAR:
            if ((st = run_gemm(m, nd, buf, pixels, nb, ws, err)) != LSQ_OK) goto out;
            break;
        case OP_BN: {
            float *restrict y = buf[i];
            const float *restrict xs = x, *restrict bs = nd->bs, *restrict bh = nd->bh;
            for (size_t p = 0; p < out_elems; p += (size_t)nd->c)
#pragma omp simd
                for (int c = 0; c < nd->c; c++) y[p + c] = xs[p + c] * bs[c] + bh[c];
            break;
        }
        /* the elementwise layers with the float engine's operations */
        case OP_RELU:
        case OP_CLIP:
        case OP_LEAKYRELU:
        case OP_SCALE: {
            float *restrict y = buf[i];
            const float *restrict xs = x;
            const float lo = nd->lo, hi = nd->hi, alpha = nd->alpha, value = nd->value;
            if (nd->op == OP_RELU) {
#pragma omp simd
                for (size_t p = 0; p < out_elems; p++) y[p] = xs[p] > 0.0f ? xs[p] : 0.0f;
            } else if (nd->op == OP_CLIP) {
#pragma omp simd
                for (size_t p = 0; p < out_elems; p++) {
                    const float v = xs[p] < lo ? lo : xs[p];
                    y[p] = v > hi ? hi : v;
                }
            } else if (nd->op == OP_LEAKYRELU) {
#pragma omp simd
                for (size_t p = 0; p < out_elems; p++) y[p] = xs[p] > 0.0f ? xs[p] : alpha * xs[p];
            } else {
#pragma omp simd
                for (size_t p = 0; p < out_elems; p++) y[p] = value * xs[p];
            }
            break;
        }
        case OP_ADD: {
            const float *restrict a = x, *restrict b = buf[nd->in[1]];
            float *restrict y = buf[i];
#pragma omp simd
            for (size_t p = 0; p < out_elems; p++) y[p] = a[p] + b[p];
            break;
        }
        case OP_CONCAT: {
            /* NHWC: each pixel's channels, input after input */
            float *y = buf[i];
            const size_t pix = (size_t)nb * nd->h * nd->w;
            int at = 0;
            for (int t = 0; t < nd->n_in; t++) {
                const float *s = buf[nd->in[t]];
                const int ct = m->nodes[nd->in[t]].c;
                for (size_t p = 0; p < pix; p++)
                    memcpy(y + p * nd->c + at, s + p * ct, (size_t)ct * sizeof *y);
                at += ct;
            }
            break;
        }
        case OP_AVGPOOL: {
            float *y = buf[i];
            if (nd->pk) {
                avgpool_window(y, x, nb, nd);
                break;
            }
            const int hw = nd->ih * nd->iw, c = nd->c;
            const float inv = 1.0f / (float)hw;
            for (int b = 0; b < nb; b++) {
                float *o = y + (size_t)b * c;
                for (int j = 0; j < c; j++) o[j] = 0.0f;
                for (int p = 0; p < hw; p++) {
                    const float *xp = x + ((size_t)b * hw + p) * c;
                    for (int j = 0; j < c; j++) o[j] += xp[j];
                }
                for (int j = 0; j < c; j++) o[j] *= inv;
            }
            break;
        }
        case OP_MAXPOOL: {
            void *y = buf[i];
            if (nd->kind == VK_F32) maxpool_float(y, buf[nd->in[0]], nb, nd);
            else if (nd->kind == VK_U8) maxpool_uint8_t(y, buf[nd->in[0]], nb, nd);
            else maxpool_int8_t(y, buf[nd->in[0]], nb, nd);
            break;
        }
        case OP_FLATTEN: {
            if (nd->alias) {
                buf[i] = buf[nd->in[0]];
                break;
            }
            /* NHWC -> the channel-major order of the layer list */
            const size_t es = esize(nd->kind), hw = (size_t)nd->ih * nd->iw, c = (size_t)nd->ic;
            uint8_t *y = buf[i];
            const uint8_t *xb = buf[nd->in[0]];
            for (int b = 0; b < nb; b++)
                for (size_t p = 0; p < hw; p++)
                    for (size_t j = 0; j < c; j++)
                        memcpy(y + (((size_t)b * c + j) * hw + p) * es,
                               xb + (((size_t)b * hw + p) * c + j) * es, es);
            break;
        }
        default:
            break;
        }
    }
    {
        int p = m->output;
        memcpy(logits, buf[p], (size_t)nb * m->classes * sizeof *logits);
    }
out:
    free(buf);
    return st;
}

lsq_status lsqm_predict(const lsqm_model *m, const uint8_t *pixels, int n, float *logits,
                        float *probs, int threads, lsq_err *err)
{
    if (n < 0 || threads < 1 || (n > 0 && (!pixels || !logits)))
        return lsq_err_set(err, LSQ_ERR_INVALID, NULL,
                           "lsqm_predict needs n >= 0, threads >= 1 and buffers");
    if (m->has_float_gemm && openblas_get_num_threads() > 1) threads = 1;
    const int chunks = (n + INFER_CHUNK - 1) / INFER_CHUNK;
    if (threads > chunks) threads = chunks > 0 ? chunks : 1;
    const size_t plane = (size_t)m->c * m->h * m->w;
    lsq_status sts[256];
    lsq_err errs[4];
    if (threads > 256) threads = 256;
    for (int t = 0; t < threads; t++) sts[t] = LSQ_OK;
    /* passes of INFER_CHUNK images handed out one at a time, so that a
     * thread slowed by other work on the machine takes fewer of them */
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        lsq_err mine;
        lsq_err_clear(&mine);
        /* this thread's buffers, for all of its passes */
        slot *sl = take_slot(m);
        if (!sl)
            sts[t] = lsq_err_set(&mine, LSQ_ERR_NOMEM, NULL, "out of memory running the model");
#pragma omp for schedule(dynamic, 1) nowait
        for (int ch = 0; ch < chunks; ch++) {
            if (sts[t] != LSQ_OK) continue;
            const int b = ch * INFER_CHUNK, nb = n - b < INFER_CHUNK ? n - b : INFER_CHUNK;
            sts[t] = run_chunk(m, pixels + (size_t)b * plane, nb,
                               logits + (size_t)b * m->classes, sl->arena, &sl->ws, &mine);
        }
        give_slot(m, sl);
        if (sts[t] != LSQ_OK && t < 4) errs[t] = mine;
    }
    for (int t = 0; t < threads; t++)
        if (sts[t] != LSQ_OK) {
            if (err && t < 4) *err = errs[t];
            else lsq_err_set(err, sts[t], NULL, "inference failed");
            return sts[t];
        }
    if (probs)
        for (int b = 0; b < n; b++) {
            const float *z = logits + (size_t)b * m->classes;
            float *p = probs + (size_t)b * m->classes;
            float mx = z[0];
            for (int k = 1; k < m->classes; k++) mx = z[k] > mx ? z[k] : mx;
            double sum = 0;
            for (int k = 0; k < m->classes; k++) sum += p[k] = expf(z[k] - mx);
            for (int k = 0; k < m->classes; k++) p[k] = (float)(p[k] / sum);
        }
    return LSQ_OK;
}
