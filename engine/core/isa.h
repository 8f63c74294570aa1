/* Which vector width the engine's hot loops run at, chosen once per process.
 *
 * The files of the Makefile's ISA_SRC (the quantizer and the training
 * forward's product on codes, nn/dconv_codes.c: the training loops where
 * 512-bit vectors paid on the AVX-512 machine, docs/results.md; and the
 * integer engine's epilogue) are
 * compiled twice on x86-64: once with the build's ARCH (x86-64-v3, AVX2, by default:
 * the "base" path) and once with -march=x86-64-v4 -mprefer-vector-width=512
 * -DLSQ_ISA_VARIANT=1 (the "avx512" path). Each such file lists the
 * functions it exports once, in an X-macro of (return type, name,
 * parameters, arguments), and ends its includes with ISA_VARIANTS(list),
 * which
 *   - renames this build's definition of each: `relu_forward` becomes the
 *     symbol relu_forward_base or relu_forward_avx512 (a GNU asm label, so
 *     the code keeps its names and calls its own build's functions);
 *   - in the base build, defines the public symbol `relu_forward`: a
 *     dispatcher that calls one or the other by lsq_isa_wide.
 * Callers see the functions of their headers and nothing else. An exported
 * function missing from the list is defined twice, and a list entry with no
 * function is undefined: either fails the link.
 *
 * Elsewhere (another architecture, or the clang fuzz build) the Makefile
 * leaves LSQ_ISA_DISPATCH at 0: ISA_VARIANTS expands to nothing and each
 * file builds once, as plain C.
 *
 * The path: LSQ_ISA=avx2|avx512 (the base path's name: lsq_isa_name) forces
 * one; unset or "auto": avx512 where the CPU and OS have AVX-512
 * F/BW/CD/DQ/VL (x86-64-v4), else the base path. Read before main. */
#ifndef LSQ_ISA_H
#define LSQ_ISA_H

#include "core/err.h"

typedef enum {
    LSQ_ISA_BASE,   /* the build's ARCH: AVX2 + FMA by default */
    LSQ_ISA_AVX512, /* x86-64-v4 with 512-bit vectors */
    LSQ_ISA_COUNT
} lsq_isa;

/* "avx2" (or "x86-64" in a build without AVX2: make ARCH=), "avx512". */
extern const char *const LSQ_ISA_NAMES[];

/* 1 when this build has the second path: the Makefile sets it on x86-64
 * (and builds ISA_SRC twice); the fuzz build leaves it out. */
#ifndef LSQ_ISA_DISPATCH
#define LSQ_ISA_DISPATCH 0
#endif

/* The path that runs now. Never fails. */
lsq_isa lsq_isa_active(void);
const char *lsq_isa_name(lsq_isa isa);
/* 1 when this build has the path and this CPU can run it. */
int lsq_isa_supported(lsq_isa isa);
/* Applies LSQ_ISA from the environment (what process start did). Returns
 * LSQ_ERR_INVALID, field "LSQ_ISA", for a value that names no path or a path
 * this CPU cannot run; the active path is then the automatic choice. */
lsq_status lsq_isa_from_env(lsq_err *err);
/* Switches the path (tests compare the two in one process). isa must be
 * supported; not to be called while kernels run on other threads. */
void lsq_isa_set(lsq_isa isa);

/* The flag the dispatchers read: 1 for the avx512 path. */
extern int lsq_isa_wide;

#define ISA_CAT_(a, b) a##b
#define ISA_CAT(a, b) ISA_CAT_(a, b)

#if LSQ_ISA_DISPATCH
#if defined(LSQ_ISA_VARIANT) && LSQ_ISA_VARIANT
#define ISA_SUFFIX "_avx512"
#else
#define ISA_SUFFIX "_base"
#endif

/* This build's definition of name gets the suffixed symbol. */
#define ISA_RENAME_(name, params, args) __typeof__(name) name __asm__(#name ISA_SUFFIX);
#define ISA_RENAME(ret, name, params, args) ISA_RENAME_(name, params, args)

/* Base build only: the avx512 definition under a C name of its own, and the
 * public symbol. */
#define ISA_DISPATCH_VOID(ret, name, params, args)                                      \
    __typeof__(name) ISA_CAT(name, _avx512) __asm__(#name "_avx512");                    \
    ret ISA_CAT(name, _dispatch) params __asm__(#name);                                   \
    ret ISA_CAT(name, _dispatch) params                                                   \
    {                                                                                     \
        if (lsq_isa_wide)                                                                 \
            ISA_CAT(name, _avx512) args;                                                  \
        else                                                                              \
            name args;                                                                    \
    }
#define ISA_DISPATCH_VALUE(ret, name, params, args)                                     \
    __typeof__(name) ISA_CAT(name, _avx512) __asm__(#name "_avx512");                    \
    ret ISA_CAT(name, _dispatch) params __asm__(#name);                                   \
    ret ISA_CAT(name, _dispatch) params                                                   \
    {                                                                                     \
        return lsq_isa_wide ? ISA_CAT(name, _avx512) args : name args;                    \
    }

/* list(V, R): V(ret, name, params, args) for each function returning void,
 * R(...) for each returning a value. */
#if defined(LSQ_ISA_VARIANT) && LSQ_ISA_VARIANT
#define ISA_VARIANTS(list) list(ISA_RENAME, ISA_RENAME)
#else
#define ISA_VARIANTS(list) list(ISA_RENAME, ISA_RENAME) list(ISA_DISPATCH_VOID, ISA_DISPATCH_VALUE)
#endif

#else /* !LSQ_ISA_DISPATCH */
#define ISA_VARIANTS(list)
#endif

#endif
