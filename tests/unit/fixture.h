/* Reader for the PyTorch reference fixtures in tests/fixtures/ (written by
 * tests/fixtures/make_fixtures.py) and a comparison helper for the tests that
 * check the engine against them.
 *
 * File format (little-endian): magic "LSQFIX1\0", u32 count, then per tensor
 * u32 name_len, name bytes (no NUL), u32 ndim, u32 dims[ndim], f32 data in C
 * order. Scalars are ndim 1, dims [1]; integer labels are stored as float32.
 */
#ifndef LSQ_TEST_FIXTURE_H
#define LSQ_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

/* Where the committed fixtures live, relative to the repository root (the
 * directory `make test-unit` runs the tests from). */
#define FIXTURE_DIR "tests/fixtures"
#define FIXTURE_MAX_DIMS 8

typedef struct {
    char *name;                       /* NUL-terminated, owned */
    uint32_t ndim;
    uint32_t dims[FIXTURE_MAX_DIMS];
    size_t numel;                     /* product of dims */
    float *data;                      /* numel floats, owned */
} fixture_tensor;

typedef struct {
    size_t count;
    fixture_tensor *tensors;          /* in file order, owned */
} fixture;

/* Loads a whole fixture file. Returns a fixture the caller frees with
 * fixture_free, or NULL if the file cannot be read or is malformed (bad
 * magic, a size that runs past the end, trailing bytes, a duplicate name);
 * the reason is printed to stderr, naming the file. */
fixture *fixture_load(const char *path);

/* The tensor called name, or NULL if there is none. Owned by fx. */
const fixture_tensor *fixture_get(const fixture *fx, const char *name);

/* 1 if the tensor called name exists with exactly these dims, else 0. */
int fixture_has_shape(const fixture *fx, const char *name, uint32_t ndim,
                      const uint32_t *dims);

void fixture_free(fixture *fx);

/* How far an engine result is from a fixture tensor. */
typedef struct {
    double max_abs;    /* max |got - ref|; +inf if got holds a NaN or Inf */
    double max_rel;    /* max |got - ref| / max(|ref|, FIXTURE_REL_FLOOR) */
    double ref_max;    /* max |ref|, for tolerances relative to the scale */
    size_t worst;      /* index of the largest absolute difference */
} fixture_diff;

/* Denominator floor of max_rel, so that elements whose reference is ~0 do not
 * dominate it (their error shows up in max_abs). */
#define FIXTURE_REL_FLOOR 1e-6

/* Compares got[0..n) with the tensor called name. Returns 0 and fills *d, or
 * -1 (with a message on stderr) if the tensor is missing or does not hold
 * exactly n values. */
int fixture_compare(const fixture *fx, const char *name, const float *got,
                    size_t n, fixture_diff *d);

#endif
