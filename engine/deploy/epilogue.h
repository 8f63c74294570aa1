/* The folded epilogue of the integer engine's conv and linear layers
 * (deploy/infer.c): from a layer's sums (int32 on codes, or float for a
 * float layer) to what its consumer reads, in one pass over each row of n
 * channels:
 *
 *     v = acc * a[c] + b[c]  (+ corr[pixel, c], the LSQ+ offset's term)
 *
 * then the value (LSQ_EPI_VALUE), the value through a ReLU and clip bounds
 * (LSQ_EPI_BOUNDED), or the next quantized layer's codes, clipped to
 * [lo, hi] and rounded half to even (LSQ_EPI_U8, LSQ_EPI_S8); a folded
 * residual add (and its ReLU) after a value. The batch norm, the step
 * sizes and the bias are folded into a and b when the model loads. Built
 * for both vector widths (core/isa.h). */
#ifndef LSQ_EPILOGUE_H
#define LSQ_EPILOGUE_H

#include <stddef.h>
#include <stdint.h>

/* What an epilogue writes. */
enum { LSQ_EPI_VALUE, LSQ_EPI_BOUNDED, LSQ_EPI_U8, LSQ_EPI_S8 };

typedef struct {
    int n;              /* channels: a row's width and stride */
    int hw;             /* output pixels of an image: corr's period */
    int kind;           /* LSQ_EPI_* */
    int relu;           /* LSQ_EPI_BOUNDED: a ReLU before the bounds */
    float lo, hi;       /* the clip bounds (BOUNDED) or the code range (U8, S8) */
    const float *a, *b; /* per channel */
    const float *corr;  /* (hw, n), or NULL */
    int add;            /* with ad: 1 adds it, 2 adds it then ReLU */
} lsq_epi;

/* m rows of sums, acci (int32) or else accf (float), n apart, of output
 * pixels r0 .. r0 + m - 1 (corr's rows: modulo hw) into out, n values or
 * codes a row (float or byte); ad: the rows of the residual add's other
 * input, else NULL. */
void lsq_epi_rows(const lsq_epi *e, const int32_t *acci, const float *accf, void *out, int m,
                  size_t r0, const float *ad);

#endif
