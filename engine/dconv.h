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

#endif
