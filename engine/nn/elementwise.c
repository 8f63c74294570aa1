/* Elementwise layers: relu, the residual add, and the two fused.
 * Memory-bound loops, split over OpenMP threads once they are large enough
 * to pay for the fork, and written so the compiler vectorises them. */
#include "nn/layers.h"

#define EW_PAR_MIN 65536
/* Elements per work chunk: threads take chunks dynamically, so one that the
 * OS preempts does not hold up the loop. */
#define EW_CHUNK 16384

void relu_forward(float *out, const float *in, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void relu_backward(float *din, const float *dout, const float *out, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void relu_backward_overwrite(float *din, const float *dout, const float *out, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) din[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

void add_forward(float *out, const float *a, const float *b, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}

/* set: = instead of += */
static void add_into(float *d, const float *dout, size_t count, int set)
{
    if (set) {
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
        for (size_t i = 0; i < count; i++) d[i] = dout[i];
    } else {
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
        for (size_t i = 0; i < count; i++) d[i] += dout[i];
    }
}

void add_backward(float *da, float *db, const float *dout, size_t count)
{
    add_backward_overwrite(da, 0, db, 0, dout, count);
}

void add_backward_overwrite(float *da, int set_a, float *db, int set_b, const float *dout,
                            size_t count)
{
    if (da) add_into(da, dout, count, set_a);
    if (db) add_into(db, dout, count, set_b);
}

void add_relu_forward(float *out, const float *a, const float *b, size_t count)
{
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float v = a[i] + b[i];
        out[i] = v > 0.0f ? v : 0.0f;
    }
}

void add_relu_backward(float *da, int set_a, float *db, int set_b, const float *dout,
                       const float *out, size_t count)
{
    if (da && db && set_a && set_b) {
        /* the common case (a residual block's two branches): one pass */
#pragma omp parallel for simd schedule(dynamic, EW_CHUNK) if (count >= EW_PAR_MIN)
        for (size_t i = 0; i < count; i++) {
            const float g = out[i] > 0.0f ? dout[i] : 0.0f;
            da[i] = g;
            db[i] = g;
        }
        return;
    }
    /* otherwise a ReLU backward per side, each of whose loops vectorises */
    if (da) (set_a ? relu_backward_overwrite : relu_backward)(da, dout, out, count);
    if (db) (set_b ? relu_backward_overwrite : relu_backward)(db, dout, out, count);
}
