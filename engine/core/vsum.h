/* Float sums in eight lanes, for the reductions of the memory-bound layers.
 *
 * GCC 12 compiles `#pragma omp simd reduction(+ : s)` with the lanes of s in
 * a stack array: every vector add stores to memory and the next loads it
 * back, and the eight lanes are summed by a scalar loop each time. That ran
 * batch norm backward at 7 ns per element on 7x7 planes. These keep the
 * lanes in a register (GCC vector extensions: AVX where the build targets
 * it, SSE or scalar code elsewhere, same order of additions), then add the
 * lanes pairwise and the scalar tail last. Macros, not functions: a 32-byte
 * vector argument or return value has no fixed ABI without AVX. */
#ifndef LSQ_VSUM_H
#define LSQ_VSUM_H

#include <string.h>

typedef float vsum_f8 __attribute__((vector_size(32)));
typedef int vsum_i8 __attribute__((vector_size(32)));

/* dst (a vsum_f8) = the 8 floats at p, unaligned */
#define VSUM_LOAD(dst, p) memcpy(&(dst), (p), sizeof(vsum_f8))
#define VSUM_SPLAT(x) ((vsum_f8){(x), (x), (x), (x), (x), (x), (x), (x)})
/* v where mask (a vsum_i8 of all ones or zero per lane) is set, else +0 */
#define VSUM_SELECT(mask, v) ((vsum_f8)((mask) & (vsum_i8)(v)))
#define VSUM_LANES(v) \
    ((((v)[0] + (v)[4]) + ((v)[1] + (v)[5])) + (((v)[2] + (v)[6]) + ((v)[3] + (v)[7])))

/* sum of x[0..n) */
static inline float vsum_sum(const float *x, int n)
{
    vsum_f8 acc = VSUM_SPLAT(0.0f), v;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        VSUM_LOAD(v, x + j);
        acc += v;
    }
    float s = VSUM_LANES(acc);
    for (; j < n; j++) s += x[j];
    return s;
}

#endif
