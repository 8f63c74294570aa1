/* conv2d on oneDNN (Debian's libdnnl, C API): forward, backward data and
 * backward weights of the dense, grouped and dilated convs of conv2d_dims,
 * on lsq's NCHW float tensors. Built in only when the build found dnnl.h
 * (LSQ_HAVE_DNNL); without it every call returns -1 and conv2d keeps its
 * own kernels.
 *
 * Primitives are created once per shape (conv2d_dims, bias or not, layout)
 * and kept for the life of the process; executing one costs no allocation
 * after the first call of its shape. With DNNL_CONV_BLOCKED oneDNN picks its
 * own layouts (nChw16c and the like) and the NCHW tensors are reordered
 * into and out of them on every call (the reorders are part of the cost:
 * dnnl_conv_reorder_seconds); with DNNL_CONV_PLAIN the primitives run on
 * NCHW as it is. The blocked copies live in buffers shared by every shape:
 * calls must not overlap (a mutex serialises them).
 *
 * Threads: oneDNN in Debian is built on OpenMP (libgomp, the runtime lsq
 * uses): its parallel regions take omp_get_max_threads() at each call, as
 * lsq's own loops do. */
#ifndef LSQ_DNNL_CONV_H
#define LSQ_DNNL_CONV_H

#include "nn/layers.h"

typedef enum { DNNL_CONV_BLOCKED, DNNL_CONV_PLAIN, DNNL_CONV_LAYOUT_COUNT } dnnl_conv_layout;
extern const char *const DNNL_CONV_LAYOUT_NAMES[];

/* 1 when this build has oneDNN. */
int dnnl_conv_available(void);

/* out (N, OC, OH, OW) = conv(in, w) + b (b may be NULL), written over out.
 * Returns 0, or -1 without writing when oneDNN is absent or refuses the
 * shape. */
int dnnl_conv_forward(float *out, const float *in, const float *w, const float *b,
                      const conv2d_dims *d, dnnl_conv_layout layout);

/* din (may be NULL) = the input gradient when din_set, else +=; dw and db
 * (may be NULL) += theirs. Returns 0, or -1 without writing as above. */
int dnnl_conv_backward(float *din, int din_set, float *dw, float *db, const float *dout,
                       const float *in, const float *w, const conv2d_dims *d,
                       dnnl_conv_layout layout);

/* Seconds spent in reorders between NCHW and oneDNN's layouts since the
 * process started (all shapes, all passes). */
double dnnl_conv_reorder_seconds(void);

/* The implementation oneDNN chose for this shape's pass (0 forward, 1
 * backward data, 2 backward weights), e.g. "jit:avx512_core"; "" when none
 * was created yet or oneDNN is absent. has_bias: b given (forward), db
 * given (both backward passes). The string is the cache's. */
const char *dnnl_conv_impl(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout, int pass);

/* The algorithm of a oneDNN conv: DIRECT sums, or WINOGRAD (oneDNN 2.6's
 * F(4,3) on AVX-512: 3x3, stride 1, undilated, ungrouped, input and output
 * channels in multiples of 16, blocked layout; refused elsewhere, and then
 * the calls below return -1). Winograd's transforms round differently from
 * the direct sums (tests/unit/nn/test_dnnl_conv.c states by how much):
 * conv2d runs it only where results need not be exact (conv2d.c,
 * wino_table). */
typedef enum { DNNL_CONV_DIRECT, DNNL_CONV_WINOGRAD, DNNL_CONV_ALG_COUNT } dnnl_conv_alg;
extern const char *const DNNL_CONV_ALG_NAMES[];

/* dnnl_conv_forward, dnnl_conv_backward and dnnl_conv_impl with the
 * algorithm named (those three are DIRECT). A shape has a cache entry per
 * algorithm. */
int dnnl_conv_forward_alg(float *out, const float *in, const float *w, const float *b,
                          const conv2d_dims *d, dnnl_conv_layout layout, dnnl_conv_alg alg);
int dnnl_conv_backward_alg(float *din, int din_set, float *dw, float *db, const float *dout,
                           const float *in, const float *w, const conv2d_dims *d,
                           dnnl_conv_layout layout, dnnl_conv_alg alg);
const char *dnnl_conv_impl_alg(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout,
                               dnnl_conv_alg alg, int pass);

/* Destroys every cached primitive and buffer (tests, leak checks). */
void dnnl_conv_cache_free(void);

#endif
