/* Integer-only inference on packed .lsqm models (docs/model-format.md).
 * Activation codes x weight codes in integer arithmetic with int32
 * accumulation; step sizes and batch norm folded into one per-output-channel
 * requantization; the last layer's logits are float. */
#ifndef LSQ_INFER_H
#define LSQ_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct lsqm_model lsqm_model;

/* Loads and checks a .lsqm file. Returns NULL and fills err on any problem
 * (LSQ_ERR_IO, LSQ_ERR_FORMAT: truncated, bad checksum, future version). The
 * caller owns the model: lsqm_free. Safe to share between threads for
 * lsqm_predict. The model keeps the work buffers of its predicting threads
 * between calls (one set for each thread that ran at the same time; each
 * holds every buffer of a pass of 16 images), so a call allocates nothing
 * once warm; lsqm_free releases them. */
lsqm_model *lsqm_load(const char *path, lsq_err *err);
void lsqm_free(lsqm_model *m);

/* Input geometry and class count of the model. */
void lsqm_input_shape(const lsqm_model *m, int *c, int *h, int *w, int *classes);

/* Forces the integer kernel path (an lsq_kernel value, igemm.h) instead of
 * the one chosen at load (lsq_kernel_select: the fastest this CPU has, or
 * the LSQ_KERNEL environment variable). LSQ_ERR_INVALID when this CPU lacks
 * it. Every path gives bit-identical outputs. */
lsq_status lsqm_set_kernel(lsqm_model *m, int kernel, lsq_err *err);

/* Whether the 2- and 3-bit weights of dense and grouped convs and linear
 * layers stay packed in 2 and 3 bits (1, as loaded) or are stored as int8
 * codes (0), repacking them. Outputs are bit-identical either way; packed
 * weights take 1/4 (3/8) of the bytes. Not safe during lsqm_predict.
 * LSQ_ERR_NOMEM, and the model keeps the layers already repacked. */
lsq_status lsqm_set_packed(lsqm_model *m, int packed, lsq_err *err);

/* Bytes of conv/linear weights the model holds (depthwise ones aside). */
size_t lsqm_weight_bytes(const lsqm_model *m);

/* Runs n images given as 8-bit pixels (n, C, H, W); writes logits (n, classes)
 * and, when probs is not NULL, softmax probabilities. threads >= 1. */
lsq_status lsqm_predict(const lsqm_model *m, const uint8_t *pixels, int n,
                        float *logits, float *probs, int threads, lsq_err *err);

#endif
