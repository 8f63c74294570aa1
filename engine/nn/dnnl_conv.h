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

#include <stdint.h>
#include <string.h>

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

/* Where a oneDNN op keeps a (N, C, H, W) float tensor: element (n, c, h, w)
 * at n * sn + (c / block) * sc + h * sh + w * sw + c % block, channels
 * padded to `channels` (a multiple of block; the padding's elements must
 * be zero). The hooks get only layouts whose positions follow each other
 * in a block (sw = block, sh = W * block): NCHW (block 1), nChw8c,
 * nChw16c. */
typedef struct {
    int block, channels;
    size_t sn, sc, sh, sw;
} dnnl_conv_blocking;

/* Tensors of a backward handed over in the ops' own layouts instead of
 * NCHW, each hook optional: fill_src writes the conv's input in layout b
 * to dst, fill_ddst its output gradient (both before either pass runs);
 * take_dsrc reads the input gradient in layout b from dsrc (after the data
 * pass, before the weight pass). For a layer on either side whose own
 * backward writes or reads those layouts (the activation quantizer, the
 * batch norm after the conv), in place of a reorder and an NCHW copy each. */
typedef struct {
    void (*fill_src)(void *ctx, float *dst, const dnnl_conv_blocking *b);
    void (*take_dsrc)(void *ctx, const float *dsrc, const dnnl_conv_blocking *b);
    void (*fill_ddst)(void *ctx, float *dst, const dnnl_conv_blocking *b);
    void *ctx;
} dnnl_conv_hooks;

/* dnnl_conv_backward with h's hooks in place of tensors: fill_src for in
 * (unused then; dw required), take_dsrc for din (din and din_set unused;
 * the data pass runs), fill_ddst for dout (unused; both passes must want
 * one layout of it). Returns 0, or -1 without writing or calling a hook
 * when oneDNN is absent or refuses the shape, or a layout is not of the
 * kind dnnl_conv_blocking describes (block at most 16). */
int dnnl_conv_backward_hooked(float *din, int din_set, float *dw, float *db, const float *dout,
                              const float *in, const float *w, const conv2d_dims *d,
                              dnnl_conv_layout layout, const dnnl_conv_hooks *h);

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
 * the direct sums (tests/unit/nn/test_dnnl_wino.c states by how much):
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
/* ---- backward on LSQ codes in bf16 ----
 * A conv whose input and weights are both LSQ-quantized has integer codes
 * (|code| <= 256) that bf16 holds exactly, so its backward can run on
 * oneDNN's bf16 kernels (AVX512_BF16) and round only the output gradient:
 *   din = (or +=) conv_bwd_data(bf16(dout * s_w[o]), Qw)
 *   dw += conv_bwd_weights(Qx, bf16(dout * s_x))
 * the step folded into the output gradient before it is rounded (so a
 * per-channel weight step needs no pass over din), sums and results in f32.
 * xcodes: the input's codes (N, IC, IH, IW) as bf16 bits; wcodes:
 * quant_forward's weight codes; s_w: w_channels steps (1 or OC). Primitives
 * are created once per shape, in oneDNN's own layouts, kept only when
 * oneDNN picks a bf16 jit kernel for both passes (never a reference one).
 * Returns 0, or -1 without writing when oneDNN is absent, the CPU lacks
 * bf16 kernels or oneDNN refuses the shape: the caller runs the f32
 * backward. */
int dnnl_conv_backward_bf16(float *din, int din_set, float *dw, const float *dout,
                            const uint16_t *xcodes, const int32_t *wcodes, float s_x,
                            const float *s_w, int w_channels, const conv2d_dims *d);

/* 1 when dnnl_conv_backward_bf16 runs this shape (its primitives are
 * created by this call when new). */
int dnnl_conv_bf16_ready(const conv2d_dims *d);

/* The implementation of the bf16 backward's pass (1 data, 2 weights) for
 * this shape, e.g. "jit_bf16:avx512_core_bf16"; "" when none. */
const char *dnnl_conv_impl_bf16(const conv2d_dims *d, int pass);

/* bf16 bits of f, rounded to nearest even (NaN stays a quiet NaN). */
static inline uint16_t dnnl_conv_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* The float of bf16 bits h. */
static inline float dnnl_conv_bf16_float(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Destroys every cached primitive and buffer (tests, leak checks). */
void dnnl_conv_cache_free(void);

#endif
