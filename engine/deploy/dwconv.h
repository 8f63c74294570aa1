/* Integer depthwise convolution for inference: every output channel reads
 * one input channel (groups == input channels, MobileNet's 3x3 layers), so
 * it is no matrix product and the GEMM kernels (igemm.h) would waste almost
 * all of their work on it. Here each output pixel takes its taps' codes
 * channel by channel from an NHWC image, vectorised across channels:
 *
 *     C[b, oy, ox, c] = sum over taps (ky, kx) inside the image of
 *                       A[b, oy*stride - pad + ky*dil, ox*stride - pad + kx*dil, c] * W[c, ky, kx]
 *
 * A holds 8-bit activation codes (unsigned 0..255 or signed -128..127), W
 * int8 weight codes; taps outside the image are skipped (padding is code
 * 0). Sums are exact in int32 on every path, so all paths agree bit for
 * bit: portable C, and AVX2 (which the VNNI path also runs: a depthwise
 * conv has no 4-deep dot products for vpdpbusd). Products of a byte code
 * and an int8 weight fit int16 (|255 * -128| < 2^15); AVX2 multiplies 16
 * channels with one vpmullw and, where no sum can leave 16 bits (taps *
 * amax * wmax <= 32767: the low-bit layers), keeps the sums in 16 bits,
 * else widens each product to 32. */
#ifndef LSQ_DWCONV_H
#define LSQ_DWCONV_H

#include <stdint.h>

#include "core/err.h"
#include "deploy/igemm.h"

/* Channels per vector block: the packed weights are padded to a multiple. */
#define LSQ_DW_CB 16

typedef struct {
    int c;           /* channels */
    int k;           /* kernel side; k * k taps */
    int cp;          /* c rounded up to LSQ_DW_CB */
    int wmax;        /* largest |code| of W */
    int16_t *w;      /* (k * k, cp): tap-major, zero padded, 32-byte aligned */
} lsq_dw_w;

/* Packs weights given as w (C, K, K) -- the stored (OC, 1, KH, KW) order of
 * a depthwise conv -- into pw (the caller frees it with lsq_dw_w_free).
 * LSQ_ERR_INVALID for c < 1 or k outside 1..16; LSQ_ERR_NOMEM. */
lsq_status lsq_dw_pack(lsq_dw_w *pw, const int8_t *w, int c, int k, lsq_err *err);
void lsq_dw_w_free(lsq_dw_w *pw);

/* The geometry of one depthwise conv (the same for every image). */
typedef struct {
    int ih, iw;      /* input height and width */
    int oh, ow;      /* output height and width */
    int stride, pad, dilation;
} lsq_dw_geom;

/* C (nimg, OH, OW, c) = the depthwise conv of A (nimg, IH, IW, c), NHWC,
 * both dense (row stride c). Unsigned codes (lsq_dw_u8: amax, the largest
 * code A can hold, e.g. the input quantizer's QP; a larger code gives
 * undefined sums) or signed codes (lsq_dw_s8). Runs on `threads` OpenMP
 * threads (>= 1) with kernel path kern. LSQ_ERR_INVALID for an unsupported
 * path or a bad geometry (nothing written). */
lsq_status lsq_dw_u8(int32_t *c, const uint8_t *a, int nimg, const lsq_dw_geom *g, int amax,
                     const lsq_dw_w *w, lsq_kernel kern, int threads, lsq_err *err);
lsq_status lsq_dw_s8(int32_t *c, const int8_t *a, int nimg, const lsq_dw_geom *g,
                     const lsq_dw_w *w, lsq_kernel kern, int threads, lsq_err *err);

#endif
