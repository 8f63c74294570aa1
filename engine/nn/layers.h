/* Layer kernels: one pair of free functions per layer kind, forward and
 * backward, in the llm.c style: outputs first, then inputs and weights, then
 * sizes. Every tensor is float32, contiguous, NCHW.
 *
 * Conventions (every kernel):
 * - backward ACCUMULATES (+=) into every gradient it writes: din, dw, db.
 *   The caller zeroes gradients once per step. A NULL gradient pointer means
 *   "not needed" (e.g. din of the first layer) and is skipped.
 * - Results are deterministic for a given thread count: no atomics, reductions
 *   in a fixed order.
 * - Threads: OpenMP in the engine's own loops (omp_set_num_threads by the
 *   caller); OpenBLAS for SGEMM (openblas_set_num_threads by the caller).
 *   conv2d and linear fan SGEMM calls out over OpenMP threads themselves, so
 *   the caller should set OpenBLAS to ONE thread; if it is left multi-
 *   threaded they fall back to one OpenMP thread (correct, slower). See par.h.
 * - Kernels never allocate on the hot path: scratch comes from the caller,
 *   sized by the *_scratch_floats() functions.
 */
#ifndef LSQ_LAYERS_H
#define LSQ_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "quant/quant.h"

/* ---- conv2d: direct (stride 1, "same") or im2col + SGEMM (cblas) ----
 * Grouped convs (groups > 1: input and output channels split into `groups`
 * independent convs, as PyTorch's and ONNX's `group`) and dilated ones
 * (taps `dilation` apart) take paths of their own: depthwise convs (groups
 * == IC, OC a multiple of IC) direct loops over (n, c) planes, every other
 * grouped or dilated shape im2col + SGEMM per group. */
typedef struct {
    int n, ic, ih, iw;      /* input (N, IC, IH, IW) */
    int oc, kh, kw;         /* weight (OC, IC / groups, KH, KW) */
    int stride, pad;        /* same in both spatial dims */
    int dilation;           /* tap spacing, same in both dims; 1: dense */
    int groups;             /* 1: every output reads every input channel */
    int oh, ow;             /* output (N, OC, OH, OW), set by conv2d_dims_init */
} conv2d_dims;

/* Fills d (dilation 1, groups 1) and computes oh/ow; returns 0, or -1 if the
 * output would be empty. */
int conv2d_dims_init(conv2d_dims *d, int n, int ic, int ih, int iw, int oc,
                     int kh, int kw, int stride, int pad);
/* As conv2d_dims_init with a dilation and groups: oh = (ih + 2 pad -
 * dilation (kh - 1) - 1) / stride + 1. Returns -1 as well when ic or oc is
 * not a multiple of groups, or dilation or groups is below 1. */
int conv2d_dims_init_ex(conv2d_dims *d, int n, int ic, int ih, int iw, int oc, int kh, int kw,
                        int stride, int pad, int dilation, int groups);
/* Which path conv2d takes: AUTO (direct kernels for stride-1 "same" convs,
 * the integer forward of conv2d_forward_codes where it applies, im2col +
 * SGEMM otherwise), FLOAT (as AUTO without the integer forward), or GEMM
 * (im2col + SGEMM for every shape). Tests and benchmarks compare them.
 * Process-wide; not thread-safe. */
typedef enum { CONV2D_PATH_AUTO, CONV2D_PATH_GEMM, CONV2D_PATH_FLOAT } conv2d_path;
void conv2d_set_path(conv2d_path p);
/* Whose kernels run a float conv's forward and its backward: AUTO (oneDNN
 * for the shapes and passes where it measured faster, see conv2d.c's
 * dnnl_table, the engine's own elsewhere), OWN (the engine's own everywhere:
 * the paths above) or DNNL (oneDNN wherever it takes the shape). A build
 * without oneDNN runs its own kernels whatever the setting. The integer
 * forward (conv2d_forward_codes) and the backward fusions
 * (conv2d_backward_ex) stay the engine's own. Until conv2d_set_backend is
 * called, the environment variable LSQ_CONV=auto|own|dnnl sets it (read at
 * the first conv, or by conv2d_backend_from_env; anything else is AUTO there,
 * and conv2d_backend_from_env says it is wrong). Process-wide; not
 * thread-safe. */
typedef enum {
    CONV2D_BACKEND_AUTO,
    CONV2D_BACKEND_OWN,
    CONV2D_BACKEND_DNNL,
    CONV2D_BACKEND_COUNT
} conv2d_backend;
extern const char *const CONV2D_BACKEND_NAMES[];
void conv2d_set_backend(conv2d_backend b);
conv2d_backend conv2d_get_backend(void);
/* Reads LSQ_CONV now: unset or empty is AUTO; a name not in
 * CONV2D_BACKEND_NAMES is LSQ_ERR_INVALID naming it (the setting is AUTO). */
lsq_status conv2d_backend_from_env(lsq_err *err);
/* 1 when this shape's forward (pass 0), backward data (1) or backward
 * weights (2) runs on oneDNN under the current setting. */
int conv2d_uses_dnnl(const conv2d_dims *d, int pass);

/* Whether conv2d runs oneDNN's Winograd (dnnl_conv_alg) where its rounding
 * is allowed: the forward of float convs (conv2d_forward_float) and the
 * backward of any conv (conv2d_backward_ex without fusions), 3x3 stride 1,
 * on a pass that runs oneDNN in its blocked layout. AUTO: where it measured
 * faster (conv2d.c, wino_table), under CONV2D_BACKEND_AUTO only; OFF:
 * never, the default (the table's gain is under 1% of a training step);
 * ON: wherever it is allowed and oneDNN takes it, under AUTO and DNNL
 * (tests and A/B runs). LSQ_CONV=dnnl alone keeps oneDNN's direct convs.
 * Until conv2d_set_wino is called, LSQ_WINO=0|1 sets it (OFF, ON; unset or
 * empty: OFF), read at the first conv or by conv2d_wino_from_env. A shape
 * oneDNN refuses Winograd for runs its direct conv. Process-wide; not
 * thread-safe. */
typedef enum { CONV2D_WINO_AUTO, CONV2D_WINO_OFF, CONV2D_WINO_ON, CONV2D_WINO_COUNT } conv2d_wino;
extern const char *const CONV2D_WINO_NAMES[];
void conv2d_set_wino(conv2d_wino w);
conv2d_wino conv2d_get_wino(void);
/* Reads LSQ_WINO now: unset, empty or 0 is OFF, 1 ON; anything else is
 * LSQ_ERR_INVALID naming it (the setting is OFF). */
lsq_status conv2d_wino_from_env(lsq_err *err);
/* 1 when this pass (as conv2d_uses_dnnl) of the shape would run Winograd
 * under the current settings (the forward: of a float conv), before oneDNN
 * is asked whether it takes it. */
int conv2d_uses_wino(const conv2d_dims *d, int pass);
/* Which arithmetic the backward of a conv on LSQ codes takes (a conv whose
 * input and weights are both quantized, conv2d_backward_codes): F32 (the
 * float backward on the quantized values) or BF16 (oneDNN's bf16 kernels on
 * the codes, the output gradient rounded to bf16: dnnl_conv.h). BF16 runs
 * where the float backward's both passes run on oneDNN (conv2d_uses_dnnl)
 * and oneDNN has bf16 kernels for the shape; elsewhere F32. Until
 * conv2d_set_bwd is called, the environment variable LSQ_BWD=f32|bf16 sets
 * it (read at the first use, or by conv2d_bwd_from_env; anything else is
 * F32 there, and conv2d_bwd_from_env says it is wrong). Process-wide; not
 * thread-safe. */
typedef enum { CONV2D_BWD_F32, CONV2D_BWD_BF16, CONV2D_BWD_COUNT } conv2d_bwd;
extern const char *const CONV2D_BWD_NAMES[];
void conv2d_set_bwd(conv2d_bwd b);
conv2d_bwd conv2d_get_bwd(void);
/* Reads LSQ_BWD now: unset or empty is F32; a name not in CONV2D_BWD_NAMES
 * is LSQ_ERR_INVALID naming it (the setting is F32). */
lsq_status conv2d_bwd_from_env(lsq_err *err);
/* 1 when conv2d_backward_codes runs this shape under the current settings
 * (creating its oneDNN primitives when new). */
int conv2d_backward_codes_ready(const conv2d_dims *d);
/* The backward of a conv on LSQ codes in bf16: din (N, IC, IH, IW) (may be
 * NULL; = when din_set, else +=) and dw (may be NULL) += the gradients of
 * the quantized input and weights (s_x * Qx, s_w * Qw), db (may be NULL) +=
 * the bias's, from dout. xcodes: the input's codes as bf16 bits
 * (quant_codes_bf16); wcodes, s_w, w_channels: the weights' codes and steps
 * as quant_forward made them. Returns 0, or -1 without writing when the
 * setting is F32 or the shape has no bf16 backward (see
 * conv2d_backward_codes_ready): the caller runs conv2d_backward_ex on the
 * quantized values. */
int conv2d_backward_codes(float *din, int din_set, float *dw, float *db, const float *dout,
                          const uint16_t *xcodes, const int32_t *wcodes, float s_x,
                          const float *s_w, int w_channels, const conv2d_dims *d);

/* Floats of scratch that forward and backward need for this shape. */
size_t conv2d_scratch_floats(const conv2d_dims *d);
/* out (N, OC, OH, OW) = conv(in (N, IC, IH, IW), w (OC, IC / groups, KH, KW))
 * + b (OC) ; b may be NULL. */
void conv2d_forward(float *out, const float *in, const float *w, const float *b,
                    const conv2d_dims *d, float *scratch);
/* conv2d_forward of a conv whose input and weights are not quantized (a
 * float layer's): it may run Winograd (conv2d_uses_wino), whose sums round
 * differently from the direct ones. */
void conv2d_forward_float(float *out, const float *in, const float *w, const float *b,
                          const conv2d_dims *d, float *scratch);
/* The forward of a conv whose input and weights are LSQ-quantized, on their
 * integer codes (the direct path's shapes): out = s_a * s_w[o] * sum(code_w *
 * code_a) + b, exact integer sums. The input codes are taken from `in` as
 * quant_forward takes them with step s_a and range ra (unsigned); wcodes
 * are quant_forward's codes of the weights, range rw, steps s_w
 * (w_channels: 1 or OC). qin (may be NULL) receives the input quantized, as
 * quant_forward writes it (for the backward). An image holding a NaN gets a
 * NaN output. Returns 0, or -1 without writing when this shape, these
 * ranges (the sums must fit 16 bits: quant_pairs_fit_int16) or the path
 * setting have no integer forward: the caller then runs conv2d_forward on
 * the quantized values. */
int conv2d_forward_codes(float *out, float *qin, const float *in, float s_a,
                         const quant_range *ra, const int32_t *wcodes, const float *s_w,
                         int w_channels, const quant_range *rw, const float *b,
                         const conv2d_dims *d, float *scratch);
/* din += the input gradient (din may be NULL); dw and db (may be NULL) +=
 * theirs. */
void conv2d_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, const conv2d_dims *d,
                     float *scratch);
/* conv2d's backward with what a network fuses into it, on the direct path
 * (stride 1, "same"), so that gradients go from one layer to the next in
 * cache instead of through memory:
 * - bn_coef not NULL: this conv's output is read by one batch norm alone
 *   (its input bn_x is this conv's output); dout is the gradient reaching
 *   that batch norm (or its fused ReLU), and the conv makes its own output
 *   gradient from it image by image (batchnorm_backward_plane) instead of
 *   the batch norm storing it;
 * - q_range not NULL: in = Q(q_x), the activation quantizer's output (step
 *   q_s, per tensor, no offset); din receives the gradient reaching q_x
 *   and *q_dstep += q_gscale * the step's sum (quant_backward's, summed per
 *   image, in image order, in q_sums: 2 doubles per image).
 * din (may be NULL) = when din_set, else +=; dw and db (may be NULL) +=.
 * Returns 0, or -1 without writing when a fusion is asked for off the
 * direct path (and off conv2d_backward_fuses_on_dnnl's): the caller then
 * runs the layers' own backwards. */
typedef struct {
    const float *in, *w, *dout;
    const float *bn_x, *bn_coef;
    float *din;
    int din_set;
    float *dw, *db;
    const float *q_x;
    float q_s;
    const quant_range *q_range;
    float *q_dstep;
    float q_gscale;
    double *q_sums; /* work space: 2 per image */
} conv2d_back;
int conv2d_backward_ex(const conv2d_back *b, const conv2d_dims *d, float *scratch);
/* 1 when this shape's backward runs on oneDNN, both passes in one layout:
 * then conv2d_backward_ex takes the fusions there too, through oneDNN's
 * layouts (no NCHW copy, no reorder): bn_coef as above; q_range only with
 * in NULL (the conv makes Q(q_x) itself, in the layout oneDNN reads, and
 * runs the quantizer's backward on the input gradient in the layout oneDNN
 * writes; dw required); both together. It may still return -1 without
 * writing (oneDNN refuses the shape, or a layout): the caller then runs the
 * layers' steps apart. */
int conv2d_backward_fuses_on_dnnl(const conv2d_dims *d);
/* 0 turns those fusions off (every shape then answers 0 above: the layers'
 * steps apart, as before them); 1, the default, on. For measuring them
 * (train_bench --dnnl-fuse); not to be called while a backward runs. */
void conv2d_set_dnnl_fusions(int on);
/* 1 when conv2d_backward_ex takes fusions for this shape (and path setting). */
int conv2d_backward_fuses(const conv2d_dims *d);
/* As conv2d_backward, but din is overwritten (=): it needs no zeroing first. */
void conv2d_backward_overwrite(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *w, const conv2d_dims *d,
                               float *scratch);

/* ---- linear: out (N, OUT) = in (N, IN) · w (OUT, IN)^T + b (OUT) ---- */
void linear_forward(float *out, const float *in, const float *w, const float *b,
                    int n, int in_f, int out_f);
void linear_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, int n, int in_f, int out_f);

/* ---- batchnorm2d over (N, C, HW): PyTorch semantics ----
 * Training: normalises with the batch mean and biased variance, saves mean and
 * 1/sqrt(var + eps) per channel for backward, and updates the running
 * statistics with momentum (running = (1-m)*running + m*batch, the running
 * variance from the UNBIASED batch variance); work is the caller's scratch of
 * BN_WORK_FLOATS(n, c) floats. Eval: running statistics. */
#define BN_WORK_FLOATS(n, c) (3 * (size_t)(c) + 2 * (size_t)(n) * (size_t)(c))
void batchnorm_forward_train(float *out, float *save_mean, float *save_rstd,
                             float *running_mean, float *running_var,
                             const float *in, const float *gamma,
                             const float *beta, int n, int c, int hw,
                             float momentum, float eps, float *work);
void batchnorm_forward_eval(float *out, const float *in, const float *gamma,
                            const float *beta, const float *running_mean,
                            const float *running_var, int n, int c, int hw,
                            float eps);
/* work: the caller's scratch of BN_BACKWARD_WORK_FLOATS(n, c) floats. */
#define BN_BACKWARD_WORK_FLOATS(n, c) (BN_COEFS * (size_t)(c) + 2 * (size_t)(n) * (size_t)(c))
void batchnorm_backward(float *din, float *dgamma, float *dbeta,
                        const float *dout, const float *in,
                        const float *save_mean, const float *save_rstd,
                        const float *gamma, int n, int c, int hw, float *work);
/* As batchnorm_backward, but din is overwritten (=). */
void batchnorm_backward_overwrite(float *din, float *dgamma, float *dbeta,
                                  const float *dout, const float *in,
                                  const float *save_mean, const float *save_rstd,
                                  const float *gamma, int n, int c, int hw, float *work);

/* The backward in its two passes, for a conv that makes its output gradient
 * itself (conv2d_backward_ex): batchnorm_backward_coef takes the sums
 * (dgamma, dbeta += as batchnorm_backward; beta not NULL: with the fused
 * ReLU, as batchnorm_relu_backward; work: 2 * n * c floats of scratch) and
 * writes BN_COEFS floats a channel;
 * batchnorm_backward_plane then makes din (= when set, else +=) of one
 * plane of hw values from dout, in and that channel's coefficients, with
 * batchnorm_backward's float operations: the same bits. */
#define BN_COEFS 8
/* Their order: the saved mean and 1 / sqrt(var + eps); the fused ReLU's
 * scale and shift (x * scale + shift > 0 passes the gradient); k = gamma *
 * rstd; the means of dout and of dout * xhat; 1 with a fused ReLU, else 0.
 * din = k * ((dout' - gmean) - xhat * gxmean), xhat = (x - mean) * rstd. */
enum { BN_CF_MEAN, BN_CF_RSTD, BN_CF_SCALE, BN_CF_SHIFT, BN_CF_K, BN_CF_GMEAN, BN_CF_GXMEAN,
       BN_CF_RELU };
void batchnorm_backward_coef(float *coef, float *dgamma, float *dbeta, const float *dout,
                             const float *beta, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, int n, int c, int hw,
                             float *work);
void batchnorm_backward_plane(float *din, int set, const float *dout, const float *in,
                              const float *coef, int hw);
/* batchnorm_backward_plane over every plane of a (n, c, hw) batch, in
 * memory order: the second pass of batchnorm_backward. */
void batchnorm_backward_planes(float *din, int set, const float *dout, const float *in,
                               const float *coef, int n, int c, int hw);
/* batchnorm_backward_plane (din set) of nc <= block channels of one image
 * (planes of hw, hw apart, at dout and in; coef: the first one's
 * coefficients), written as one channel block of a blocked layout (position
 * p's `block` channels at [p * block, (p + 1) * block), the padding
 * channels zero): the input gradient of a batch norm going straight into
 * the layout of the oneDNN conv before it (nn/bnblock.c; AVX2 8x8 and
 * AVX-512 16x16 register transposes). The same bits as the plane. */
void batchnorm_backward_blocked(float *dst, int block, const float *dout, const float *in,
                                const float *coef, int nc, size_t hw);

/* ---- synchronised batch norm (data-parallel training) ----
 * The batch statistics, and the backward's sums of dout and dout * xhat, of
 * every rank's batch together: sync->sum adds n doubles over the ranks in
 * place; every rank calls these functions at the same points (a rank with
 * n = 0 images too). dgamma, dbeta receive this rank's own sums, to be
 * summed with the gradients; the running statistics use the global batch.
 * relu: the fused ReLU of batchnorm_relu_forward_train; work as there. */
typedef struct {
    void (*sum)(void *ctx, double *buf, size_t n);
    void *ctx;
} bn_sync;
void batchnorm_forward_train_sync(float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var, const float *in,
                                  const float *gamma, const float *beta, int n, int c, int hw,
                                  float momentum, float eps, int relu, float *work,
                                  const bn_sync *sync);
/* batchnorm_backward_coef over every rank's batch. */
void batchnorm_backward_coef_sync(float *coef, float *dgamma, float *dbeta, const float *dout,
                                  const float *beta, const float *in, const float *save_mean,
                                  const float *save_rstd, const float *gamma, int n, int c,
                                  int hw, float *work, const bn_sync *sync);

/* ---- batchnorm2d followed by relu, fused: one pass instead of two, and no
 * buffer for the batch norm's own output. out = relu(bn(in)); the results
 * equal batchnorm_* then relu_* exactly. Backward takes dout of the ReLU
 * and accumulates din, dgamma, dbeta of the batch norm. */
void batchnorm_relu_forward_train(float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var,
                                  const float *in, const float *gamma,
                                  const float *beta, int n, int c, int hw,
                                  float momentum, float eps, float *work);
void batchnorm_relu_forward_eval(float *out, const float *in, const float *gamma,
                                 const float *beta, const float *running_mean,
                                 const float *running_var, int n, int c, int hw,
                                 float eps);
/* dout is the ReLU's; its mask is recomputed from in (the same operations as
 * the forward, so exactly the forward's), with gamma and beta as they were
 * in that forward. */
void batchnorm_relu_backward(float *din, float *dgamma, float *dbeta,
                             const float *dout, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta,
                             int n, int c, int hw, float *work);
/* As batchnorm_relu_backward, but din is OVERWRITTEN (=) rather than
 * accumulated: for a caller that would otherwise zero din first. */
void batchnorm_relu_backward_overwrite(float *din, float *dgamma, float *dbeta,
                                       const float *dout, const float *in,
                                       const float *save_mean, const float *save_rstd,
                                       const float *gamma, const float *beta, int n, int c,
                                       int hw, float *work);

/* ---- relu: backward masks by the forward OUTPUT (out > 0) ---- */
void relu_forward(float *out, const float *in, size_t count);
void relu_backward(float *din, const float *dout, const float *out, size_t count);
/* As relu_backward, but din is overwritten (=). */
void relu_backward_overwrite(float *din, const float *dout, const float *out, size_t count);

/* ---- 2-d pooling windows: kernel k (square), stride, padding pad on every
 * side; oh = (ih + 2 pad - k) / stride + 1 (floor, as ONNX's default and
 * PyTorch's). pad <= k - 1, so every window holds an input cell. */
typedef struct {
    int n, c, ih, iw;       /* input (N, C, IH, IW) */
    int k, stride, pad;
    int oh, ow;             /* output (N, C, OH, OW), set by pool2d_dims_init */
} pool2d_dims;
/* Fills d; returns 0, or -1 for an empty output or a pad above k - 1. */
int pool2d_dims_init(pool2d_dims *d, int n, int c, int ih, int iw, int k, int stride, int pad);

/* ---- maxpool2d (kernel k, stride s, no padding); argmax saved (N,C,OH,OW)
 * as the flat index within the input plane. Ties: the first maximum. */
void maxpool_forward(float *out, int32_t *argmax, const float *in, int n,
                     int c, int ih, int iw, int k, int stride, int oh, int ow);
void maxpool_backward(float *din, const float *dout, const int32_t *argmax,
                      int n, int c, int ih, int iw, int oh, int ow);
/* As maxpool_backward, but din is overwritten (zero except at the argmax). */
void maxpool_backward_overwrite(float *din, const float *dout,
                                const int32_t *argmax, int n, int c, int ih,
                                int iw, int oh, int ow);

/* ---- maxpool2d with padding: the padded cells never win (ONNX MaxPool's
 * pads, PyTorch's padding); otherwise as maxpool_forward, whose backward
 * (maxpool_backward) it shares: argmax holds input cells only. */
void maxpool2d_forward(float *out, int32_t *argmax, const float *in, const pool2d_dims *d);

/* ---- windowed average pool (ONNX AveragePool, PyTorch avg_pool2d): the
 * mean of each window's cells; count_include_pad 1: every window divides by
 * k * k, padded cells counting as zeros; 0 (ONNX's default): by the cells
 * inside the input. Backward: din += dout / that count over the window. */
void avgpool2d_forward(float *out, const float *in, const pool2d_dims *d, int count_include_pad);
void avgpool2d_backward(float *din, const float *dout, const pool2d_dims *d,
                        int count_include_pad);

/* ---- global average pool: (N, C, H, W) -> (N, C) ---- */
void avgpool_forward(float *out, const float *in, int n, int c, int hw);
void avgpool_backward(float *din, const float *dout, int n, int c, int hw);
/* As avgpool_backward, but din is overwritten (=). */
void avgpool_backward_overwrite(float *din, const float *dout, int n, int c, int hw);

/* ---- clip: out = min(max(in, lo), hi) (ONNX Clip; ReLU6 is lo 0, hi 6).
 * The gradient passes strictly inside, lo < in < hi, and is 0 at either
 * bound and beyond: PyTorch's hardtanh and relu6 (torch.clamp would pass it
 * at the bounds too). Backward masks by the forward OUTPUT, strictly inside
 * exactly when the input is. lo may be -INFINITY, hi INFINITY. */
void clip_forward(float *out, const float *in, size_t count, float lo, float hi);
void clip_backward(float *din, const float *dout, const float *out, size_t count, float lo,
                   float hi);

/* ---- leaky relu: out = in > 0 ? in : alpha * in; backward by the INPUT:
 * din += in > 0 ? dout : alpha * dout (alpha at 0, as PyTorch). */
void leakyrelu_forward(float *out, const float *in, size_t count, float alpha);
void leakyrelu_backward(float *din, const float *dout, const float *in, size_t count,
                        float alpha);

/* ---- scale by a constant: out = value * in; din += value * dout ---- */
void scale_forward(float *out, const float *in, size_t count, float value);
void scale_backward(float *din, const float *dout, size_t count, float value);

/* ---- concat along channels: k inputs in[j] (N, c[j], HW) into out (N,
 * sum c[j], HW), in order. Backward: din[j] += its channels of dout; a NULL
 * din[j] is skipped; the same buffer may appear twice (it gets both). */
void concat_forward(float *out, const float *const *in, const int *c, int k, int n, int hw);
void concat_backward(float *const *din, const float *dout, const int *c, int k, int n, int hw);

/* ---- residual add: out = a + b; backward da += dout, db += dout ---- */
void add_forward(float *out, const float *a, const float *b, size_t count);
void add_backward(float *da, float *db, const float *dout, size_t count);
/* The same, with da (set_a) and db (set_b) each overwritten (=) or added to. */
void add_backward_overwrite(float *da, int set_a, float *db, int set_b, const float *dout,
                            size_t count);

/* ---- residual add followed by relu, fused: out = relu(a + b), equal to
 * add_forward then relu_forward exactly. Backward takes the ReLU's dout and
 * out; da and db (either may be NULL) are each set (=) or added to. */
void add_relu_forward(float *out, const float *a, const float *b, size_t count);
void add_relu_backward(float *da, int set_a, float *db, int set_b, const float *dout,
                       const float *out, size_t count);

/* ---- softmax cross-entropy, mean over the batch ----
 * probs (N, K) receives softmax(logits); returns the mean loss.
 * backward: dlogits += scale * (probs - onehot(labels)) / N. */
float xent_forward(float *probs, const float *logits, const int32_t *labels,
                   int n, int k);
void xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                   int n, int k, float scale);

/* ---- distillation loss: T^2 * KL(softmax(t/T) || softmax(s/T)), mean over
 * the batch (Hinton et al.). probs_s receives softmax(s/T), probs_t
 * softmax(t/T). backward: ds += scale * T * (probs_s - probs_t) / N. */
float distill_forward(float *probs_s, float *probs_t, const float *logits_s,
                      const float *logits_t, int n, int k, float temperature);
void distill_backward(float *dlogits_s, const float *probs_s,
                      const float *probs_t, int n, int k, float temperature,
                      float scale);

#endif
