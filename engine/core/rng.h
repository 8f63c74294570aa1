/* A small deterministic random generator (splitmix64-seeded xoshiro256**):
 * the same seed gives the same numbers on every machine. */
#ifndef LSQ_RNG_H
#define LSQ_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
    int has_spare;
    double spare;
} lsq_rng;

/* Seeds from (seed, stream): different streams are independent sequences. */
void rng_seed(lsq_rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(lsq_rng *r);
/* Uniform in [0, 1). */
double rng_uniform(lsq_rng *r);
/* Standard normal (Box-Muller). */
double rng_normal(lsq_rng *r);

#endif
