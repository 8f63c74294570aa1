/* Float sums in eight lanes, for the reductions of the memory-bound layers.
 *
 * GCC 12 compiles `#pragma omp simd reduction(+ : s)` with the lanes of s in
 * a stack array: every vector add stores to memory and the next loads it
 * back, and the eight lanes are summed by a scalar loop each time. That ran
 * batch norm backward at 7 ns per element on 7x7 planes. These helpers keep
 * the lanes in a register (GCC vector extensions: AVX where the build
 * targets it, SSE or scalar code elsewhere, same order of additions), then
 * add the lanes pairwise and the scalar tail last. */
#ifndef LSQ_VSUM_H
#define LSQ_VSUM_H

#include <string.h>

typedef float vsum_f8 __attribute__((vector_size(32)));
typedef int vsum_i8 __attribute__((vector_size(32)));

static inline vsum_f8 vsum_load(const float *p)
{
    vsum_f8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vsum_f8 vsum_splat(float x) { return (vsum_f8){x, x, x, x, x, x, x, x}; }

/* v where mask (all ones or zero per lane) is set, else +0. */
static inline vsum_f8 vsum_select(vsum_i8 mask, vsum_f8 v)
{
    return (vsum_f8)(mask & (vsum_i8)v);
}

static inline float vsum_lanes(vsum_f8 v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* sum of x[0..n) */
static inline float vsum_sum(const float *x, int n)
{
    vsum_f8 acc = vsum_splat(0.0f);
    int j = 0;
    for (; j + 8 <= n; j += 8) acc += vsum_load(x + j);
    float s = vsum_lanes(acc);
    for (; j < n; j++) s += x[j];
    return s;
}

#endif
