/* The LSQ quantizer (Esser et al., ICLR 2020), exactly as DESIGN.md states it.
 *
 *   x     = (v - beta) / s
 *   v_bar = round(clip(x, -QN, QP))        round half to even
 *   v_hat = v_bar * s + beta               (beta = 0 unless LSQ+)
 *
 * Backward (the boundary counts as inside, as PyTorch's clamp does):
 *   dv_hat/dv    = 1 if -QN <= x <= QP, else 0
 *   dv_hat/ds    = round(x) - x inside, -QN below, QP above   (times g)
 *   dv_hat/dbeta = 0 inside, 1 outside                         (LSQ+)
 *
 * weights: signed, QN = 2^(b-1), QP = 2^(b-1) - 1
 * activations after ReLU: unsigned, QN = 0, QP = 2^b - 1
 * activations that can be negative: signed (as weights), or LSQ+ with beta.
 *
 * Per-channel: the tensor is (C, per) contiguous (weights (OC, IC, KH, KW)),
 * each channel with its own step s[c] (and its own g). Per-tensor: C = 1.
 */
#ifndef LSQ_QUANT_H
#define LSQ_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int bits;       /* 2..8 */
    int is_signed;  /* 1: weights and signed activations */
    int qn, qp;     /* set by quant_range_init */
} quant_range;

void quant_range_init(quant_range *r, int bits, int is_signed);

/* Round half to even, exactly as torch.round and ONNX QuantizeLinear, for
 * |x| < 2^22 (codes are clipped far below that first). */
static inline float quant_round(float x)
{
    /* volatile-free trick: adding and subtracting 1.5 * 2^23 rounds to the
     * nearest integer in the current (to-nearest-even) rounding mode. */
    const float magic = 12582912.0f;
    return (x + magic) - magic;
}

/* out[c*per + i] = v_hat; codes (may be NULL) receives v_bar as int8/uint8
 * range values stored in int32. offset may be NULL (beta = 0). */
void quant_forward(float *out, int32_t *codes, const float *in,
                   const float *step, const float *offset, int channels,
                   size_t per, const quant_range *r);

/* codes[i] = quant_forward's code of in[i] (step `step`, no offset), as
 * the bits of a bf16 (exact: |code| <= 256); a NaN input gets code 0. For
 * kernels that take bf16 operands (conv2d_backward_codes). */
void quant_codes_bf16(uint16_t *codes, const float *in, float step, size_t n,
                      const quant_range *r);
/* codes[i] = (in[i] - beta) / s clipped to [lo, hi] and rounded half to
 * even (quant_round): quant_forward's codes, as bytes, uint8 or int8 by
 * is_signed. The integer engine's step from float values to a quantized
 * layer's input codes. */
void quant_codes_bytes(void *codes, const float *in, size_t n, float s, float beta, float lo,
                       float hi, int is_signed);
/* Accumulates din += dout inside the range; dstep[c] += g[c] * sum of
 * dout * dv_hat/ds over channel c; doffset[c] += sum of dout outside the
 * range (when doffset is not NULL). din may be NULL. gscale has one entry per
 * channel. Reductions are in a fixed order for a given thread count. */
void quant_backward(float *din, float *dstep, float *doffset,
                    const float *dout, const float *in, const float *step,
                    const float *offset, const float *gscale, int channels,
                    size_t per, const quant_range *r);
/* As quant_backward, but din (when not NULL) is overwritten (=): zero
 * outside the range. */
void quant_backward_overwrite(float *din, float *dstep, float *doffset,
                              const float *dout, const float *in, const float *step,
                              const float *offset, const float *gscale, int channels,
                              size_t per, const quant_range *r);

/* quant_backward's work on n contiguous elements of one channel without an
 * offset, for a caller that adds the sums up itself: din (may be NULL; = when
 * set, else +=) = dout inside the range, else 0; sums[0] = sum of dout *
 * dv_hat/ds (before the gradient scale), sums[1] = sum of dout outside. The
 * same float operations as quant_backward, so din gets the same bits. */
void quant_backward_span(float *din, int set, const float *dout, const float *in, float s,
                         const quant_range *r, size_t n, double sums[2]);

/* The quantizer on one image's channel block of a blocked layout
 * (oneDNN's nChw8c, nChw16c: position p's `block` channels at [p * block,
 * (p + 1) * block)), from and to NCHW planes of hw floats, nc <= block of
 * them (the rest of the block: padding). Step s, no offset, in the calling
 * thread.
 * quant_forward_blocked: out's block = quant_forward's values of the nc
 * planes at in (the padding zero): the same bits.
 * quant_backward_blocked: quant_backward_span's work with dout in the
 * block (din and in planes): din gets its bits, *sum the terms of its
 * sums[0] (the step's), added in another order; no sum of the outside
 * (no offset here). */
void quant_forward_blocked(float *out, int block, const float *in, int nc, size_t hw, float s,
                           const quant_range *r);
void quant_backward_blocked(float *din, int set, const float *dout, int block, const float *in,
                            int nc, size_t hw, float s, const quant_range *r, double *sum);

/* g = 1/sqrt(N * QP) (the paper's step-size gradient scale). */
float quant_grad_scale_paper(size_t n, const quant_range *r);

/* Paper init: s = 2 * mean(|v|) / sqrt(QP), per channel. A channel whose
 * formula gives no usable step (all zeros, so s = 0; or non-finite values)
 * gets s = 1e-3 (QUANT_INIT_ZERO_STEP in quant.c). */
void quant_init_paper(float *step, const float *v, int channels, size_t per,
                      const quant_range *r);
/* The paper's step for a tensor whose mean |v| is mean_abs (the same rule
 * and fallback): for a mean summed elsewhere, e.g. over data-parallel ranks. */
float quant_step_paper(double mean_abs, const quant_range *r);

/* MSE init: the s (and beta, for LSQ+; offset may be NULL) minimising
 * mean((v_hat - v)^2) per channel, by the search documented in quant.c
 * (init_mse_channel): a grid over s in (0, s_max] refined by golden section;
 * for LSQ+, alternating s / beta searches from the min..max range.
 * Deterministic. All-zero or non-finite channels get s = 1e-3 (beta = min). */
void quant_init_mse(float *step, float *offset, const float *v, int channels,
                    size_t per, const quant_range *r);

/* 1 when integer kernels that multiply code pairs with vpmaddubsw (u8 x s8,
 * one pair summed per 16-bit lane, saturating) and add `pairs` such pair
 * sums in 16 bits stay exact: activation codes 0..amax (amax <= 255),
 * weight codes |w| <= wmax (<= 128), pairs * 2 * amax * wmax <= 32767. */
static inline int quant_pairs_fit_int16(long pairs, int amax, int wmax)
{
    return pairs >= 1 && amax >= 0 && amax <= 255 && wmax >= 0 && wmax <= 128 &&
           pairs * 2 * amax * wmax <= 32767;
}

/* Smallest step the guard allows (see quant_guard). */
#define QUANT_STEP_MIN 1e-8f

/* The documented guard, run after each optimizer update. The exact rule, for
 * each i < count:
 *   if step[i] >= QUANT_STEP_MIN and finite: untouched;
 *   else (zero, negative, below QUANT_STEP_MIN, NaN or +-Inf):
 *     step[i] = prev[i] / 2   when prev is not NULL and prev[i] / 2 is finite
 *                             and >= QUANT_STEP_MIN,
 *     step[i] = QUANT_STEP_MIN otherwise (prev NULL, or prev[i] itself bad).
 * So an update that would push a step to or past zero halves it instead: the
 * step may shrink but never reaches zero or goes negative. prev holds the
 * steps before the update (same count). Returns how many steps were reset. */
int quant_guard(float *step, const float *prev, size_t count);

#endif
