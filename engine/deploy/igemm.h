/* Integer GEMM for inference: C (M, N) int32 = A (M, K) x W (K, N), where A
 * holds 8-bit activation codes (unsigned 0..255 or signed -128..127), one row
 * per output pixel (an im2col row, or one example of a linear layer), and W
 * holds int8 weight codes, one column per output channel.
 *
 * W is packed once (lsq_igemm_pack, at model load) into panels of
 * LSQ_IGEMM_NR = 16 output channels; inside a panel, K runs in groups of 4
 * and each group holds 16 x 4 codes, channel-major:
 *     group[p][g][j][t] = W[k = 4g + t][n = 16p + j]     (zero padded)
 * which is the operand layout of AVX-512 VNNI's vpdpbusd. 8-bit weights
 * store each group as its 64 bytes. 2- and 3-bit weights
 * (lsq_igemm_pack_bits) stay packed, 2 or 3 bits a code: four groups of
 * 2-bit codes share 64 bytes (group s of the four in bits 2s, 2s + 1 of
 * each byte, as code + 2); eight groups of 3-bit codes share 192 bytes (two
 * such 64-byte blocks of the low bits of code + 4, then one byte plane of
 * their third bits, group s at bit s). The kernels decode a group in
 * registers where they use it (a shift and a mask or two per 64 codes), so
 * a layer's weights take a quarter (3/8) of the int8 bytes in memory and
 * cache.
 *
 * Every kernel path gives bit-identical results: the products are exact and
 * accumulate in int32 without saturation (K <= LSQ_IGEMM_MAX_K keeps every
 * partial sum inside int32). */
#ifndef LSQ_IGEMM_H
#define LSQ_IGEMM_H

#include <stdint.h>

#include "core/err.h"

#define LSQ_IGEMM_NR 16
/* 255 * 128 * K must fit in int32 (the VNNI path adds 128 to signed codes). */
#define LSQ_IGEMM_MAX_K 65535

typedef enum {
    LSQ_KERNEL_PORTABLE,
    LSQ_KERNEL_AVX2,
    LSQ_KERNEL_VNNI, /* AVX-512 F/BW/VL + VNNI */
    LSQ_KERNEL_COUNT
} lsq_kernel;

/* "portable", "avx2", "vnni" (the values of LSQ_KERNEL). */
extern const char *const LSQ_KERNEL_NAMES[];

/* Whether this CPU (and OS) can run kernel path k. */
int lsq_kernel_supported(lsq_kernel k);

/* The path to use: the one named by the environment variable LSQ_KERNEL when
 * it is set to a supported path's name, otherwise the fastest supported. */
lsq_kernel lsq_kernel_select(void);

/* Checks LSQ_KERNEL: unset, empty or a supported path's name is LSQ_OK; a
 * name it does not know, or a path this CPU cannot run, is
 * LSQ_ERR_INVALID naming the variable (lsq and lsqd refuse to start rather
 * than run another path). */
lsq_status lsq_kernel_from_env(lsq_err *err);

typedef struct {
    int k, n;        /* logical shape of W: (K, N) */
    int kq;          /* ceil(K / 4): 4-deep groups of K */
    int panels;      /* ceil(N / 16) */
    int wmax;        /* largest |code| of W */
    int bits;        /* 8, 3 or 2: how the groups are stored */
    size_t pstride;  /* bytes of one panel */
    int8_t *w;       /* (panels, pstride) as above, 64-byte aligned */
    int32_t *colsum; /* (panels * 16) sum over K of each column, 0 on padding */
} lsq_igemm_w;

/* Packs weights given as w (N, K) row-major -- one row per output channel,
 * as conv (OC, IC*KH*KW) and linear (OUT, IN) weights are stored -- into pw.
 * The caller frees pw with lsq_igemm_w_free. LSQ_ERR_INVALID for n < 1,
 * k < 1 or k > LSQ_IGEMM_MAX_K; LSQ_ERR_NOMEM. */
lsq_status lsq_igemm_pack(lsq_igemm_w *pw, const int8_t *w, int n, int k,
                          lsq_err *err);
/* lsq_igemm_pack storing the codes in `bits` bits (8, 3 or 2); every code
 * must lie in [-2^(bits-1), 2^(bits-1) - 1]. LSQ_ERR_INVALID (field "bits"
 * or "weights") otherwise, as for lsq_igemm_pack. */
lsq_status lsq_igemm_pack_bits(lsq_igemm_w *pw, const int8_t *w, int n, int k, int bits,
                               lsq_err *err);
/* The codes of pw back as (N, K) row-major int8 into w (N * K bytes). */
void lsq_igemm_codes(int8_t *w, const lsq_igemm_w *pw);
/* Bytes of packed weights pw holds. */
size_t lsq_igemm_w_bytes(const lsq_igemm_w *pw);
void lsq_igemm_w_free(lsq_igemm_w *pw);

/* C (M, N) = A (M, K) x W with A unsigned codes (lsq_igemm_u8) or signed
 * codes (lsq_igemm_s8); row i of A starts at a + i*lda, row i of C at
 * c + i*ldc. Runs on `threads` OpenMP threads (>= 1) with kernel path kern
 * (usually lsq_kernel_select()). LSQ_ERR_INVALID for an unsupported path,
 * m < 0, lda < K or ldc < N. */
lsq_status lsq_igemm_u8(int32_t *c, int ldc, const uint8_t *a, int lda, int m,
                        const lsq_igemm_w *w, lsq_kernel kern, int threads,
                        lsq_err *err);
lsq_status lsq_igemm_s8(int32_t *c, int ldc, const int8_t *a, int lda, int m,
                        const lsq_igemm_w *w, lsq_kernel kern, int threads,
                        lsq_err *err);
/* lsq_igemm_u8 for codes A known to be at most amax (the input quantizer's
 * QP). Where no sum can leave 16 bits (kq * 2 * amax * wmax <= 32767, the
 * low-bit layers) the AVX2 path multiplies bytes with vpmaddubsw and keeps
 * 16-bit sums, twice the work per instruction of its int16 path; results
 * are the same exact sums. A code above amax gives undefined sums. */
lsq_status lsq_igemm_u8_max(int32_t *c, int ldc, const uint8_t *a, int lda, int m,
                            int amax, const lsq_igemm_w *w, lsq_kernel kern, int threads,
                            lsq_err *err);

/* ---- direct convolution on padded NHWC codes, without an im2col matrix ----
 * For a stride-1 conv over an image zero-padded to WP columns, output j of
 * an image (in padded coordinates, j = y * WP + x; columns x >= OW are not
 * outputs) reads input pixel j + taps[t] at tap t = (ky, kx), taps[t] =
 * ky * WP + kx. W is packed from (OC, KH, KW, IC) weights, K = ntaps * IC.
 * Every path runs it on unsigned codes (AVX2 with its low-bit kernel
 * where amax allows, as lsq_igemm_u8_max): lsq_igemm_taps_ok says whether
 * it applies (a supported path, IC a multiple of 4 dividing K); otherwise
 * the caller forms im2col and calls lsq_igemm_u8. A one-channel image (IC
 * = 1) applies too when K is a multiple of 4: the caller then gives goff
 * itself, each 4-deep group of K being 4 adjacent codes of the image (a
 * kernel row's taps, padded with zero weights to a multiple of 4). */
int lsq_igemm_taps_ok(const lsq_igemm_w *w, int ic, int amax, lsq_kernel kern);
/* goff (ntaps * ic / 4) = the byte offset of each 4-deep group of K from
 * an output's own input pixel. */
void lsq_igemm_tap_groups(int *goff, const int *taps, int ntaps, int ic);
/* C (nimg * rows, N): row i of image b (row b * rows + i) = the sums of
 * output i of image b, image b's padded codes starting at pixel b * img of
 * a (IC bytes a pixel). Reads a up to pixel (nimg - 1) * img + rows - 1 +
 * the largest tap, IC bytes each. LSQ_ERR_INVALID where lsq_igemm_taps_ok
 * does not hold or for a bad geometry. */
lsq_status lsq_igemm_u8_taps(int32_t *c, int ldc, const uint8_t *a, int ic, int nimg, int rows,
                             size_t img, const int *goff, int amax, const lsq_igemm_w *w,
                             lsq_kernel kern, int threads, lsq_err *err);

/* Rows [i0, i1) of C, done, at c (row i0 first, ldc apart). */
typedef void lsq_igemm_rows_fn(void *ctx, const int32_t *c, int ldc, int i0, int i1);
/* The rows lsq_igemm_u8_taps_rows hands over at a time. */
#define LSQ_IGEMM_ROWS 64
/* lsq_igemm_u8_taps on the calling thread for the outputs only: OH rows of
 * OW outputs an image, output (y, x) at padded pixel y * WP + x (OW <= WP;
 * the WP - OW padding columns between are skipped), so that C has nimg *
 * OH * OW rows, output (b, y, x) at row (b * OH + y) * OW + x. They go
 * LSQ_IGEMM_ROWS at a time into c (LSQ_IGEMM_ROWS x ldc, the caller's),
 * each block handed to fn as soon as it is done, in row order: the caller
 * reads the sums while they are in the L1 cache instead of from the whole
 * matrix, written out and read back. The checks and errors of
 * lsq_igemm_u8_taps, and LSQ_ERR_INVALID for outputs that do not fit the
 * image. */
lsq_status lsq_igemm_u8_taps_rows(int32_t *c, int ldc, const uint8_t *a, int ic, int nimg,
                                  int oh, int ow, int wp, size_t img, const int *goff, int amax,
                                  const lsq_igemm_w *w, lsq_kernel kern, lsq_igemm_rows_fn *fn,
                                  void *ctx, lsq_err *err);

#endif
