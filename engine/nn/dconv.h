/* Kernels of the direct convolution path of conv2d (see conv2d.c).
 *
 * A stride-1 "same" convolution over a zero-padded image plane of width WP
 * is a matrix product whose right-hand matrix is never formed: with the
 * output flattened in padded coordinates (j = y * WP + x), the input that tap
 * k = (c, ki, kj) multiplies is the padded image at off[k] + j, with
 * off[k] = c * PLANE + ki * WP + kj. Columns x >= OW of that flat output are
 * garbage and are dropped by the caller. No im2col, no packing of the large
 * operand: one pass over the padded image per block of output channels. */
#ifndef LSQ_DCONV_H
#define LSQ_DCONV_H

#include <stddef.h>
#include <stdint.h>

/* Rows of A per register block, and the column block of dconv_gemm. */
#define DCONV_MR 4
#define DCONV_NB 24

/* Floats dconv_pack_a writes for an (m, k) matrix. */
size_t dconv_packed_floats(int m, int k);

/* ap = a (m, k, row-major, row stride lda) in panels of DCONV_MR rows,
 * k-major within a panel; rows past m are zero. */
void dconv_pack_a(float *ap, const float *a, int m, int k, size_t lda);

/* c[i * ldc + j] = sum_k A[i][k] * b[off[k] + j] for i < m and
 * j < nb (a multiple of 8: blocks of DCONV_NB columns, then one of 8 or 16);
 * ap from dconv_pack_a. Every b[off[k] + j] read must be inside the
 * caller's buffer. */
void dconv_gemm(float *c, size_t ldc, const float *ap, int m, int k,
                const float *b, const int *off, int nb);

/* dw[i * ldw + kk] (+)= sum_{j < n} d[i * ldd + j] * b[off[kk] + j] for
 * i < m, kk < k: added to dw when add, else written over it. Reads d at
 * j < n only; b up to 7 floats past n. */
void dconv_wgrad(float *dw, size_t ldw, int m, int k, const float *d,
                 size_t ldd, const float *b, const int *off, int n, int add);

/* ---- the integer forward of quantized convs (conv2d_forward_codes) ----
 *
 * The same product on LSQ codes: activation codes u8, weight codes s8, K
 * taken as pairs of input channels. The padded input holds each pair of
 * channels interleaved: byte 2 * (cp * PLANE + pos) + h is channel 2 cp + h
 * at padded position pos (channel IC, when IC is odd, is zero); off[kp] =
 * cp * PLANE + ki * WP + kj for kp = (cp, ki, kj). One vpmaddubsw multiplies
 * a pair of taps for 16 positions (32 at 512 bits: dconv_codes.c has both
 * widths, core/isa.h), sums kept in 16 bits: the caller
 * guarantees kpairs * 2 * max|a| * max|w| <= 32767 (quant_pairs_fit_int16). */

/* Positions per column block of dconv_igemm. */
#define DCONV_INB 32

/* int16s dconv_pack_codes writes for m rows and kpairs tap pairs. */
size_t dconv_packed_codes(int m, int kpairs);

/* ap = the weight codes (m, ic, kh, kw; int32 values in -128..127) in
 * panels of DCONV_MR rows: per tap pair, DCONV_MR int16s, each the pair's
 * two codes (channel 2 cp in the low byte). Rows past m and the channel
 * past an odd ic are zero. */
void dconv_pack_codes(int16_t *ap, const int32_t *codes, int m, int ic, int kh, int kw);

/* c[i * ldc + j] = scale[i] * sum over tap pairs of A[i] . b for i < m and
 * j < nb (a multiple of 8), exact integer sums. Reads b at
 * 2 * (off[kp] + j) for j below nb rounded up to DCONV_INB. */
void dconv_igemm(float *c, size_t ldc, const int16_t *ap, const float *scale, int m,
                 int kpairs, const uint8_t *b, const int *off, int nb);

#endif
