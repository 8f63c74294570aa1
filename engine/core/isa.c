/* The vector path of the hot loops (isa.h): chosen once, before main, from
 * LSQ_ISA and CPUID; the dispatchers read lsq_isa_wide. */
#include "core/isa.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

const char *const LSQ_ISA_NAMES[] = {
#if defined(__AVX2__) && defined(__FMA__)
    "avx2",
#else
    "x86-64",
#endif
    "avx512",
};
_Static_assert(sizeof LSQ_ISA_NAMES / sizeof *LSQ_ISA_NAMES == LSQ_ISA_COUNT,
               "one name per lsq_isa");

int lsq_isa_wide;

const char *lsq_isa_name(lsq_isa isa)
{
    assert(isa >= 0 && isa < LSQ_ISA_COUNT);
    return LSQ_ISA_NAMES[isa];
}

int lsq_isa_supported(lsq_isa isa)
{
    if (isa == LSQ_ISA_BASE) return 1;
#if LSQ_ISA_DISPATCH
    if (isa == LSQ_ISA_AVX512) {
        /* x86-64-v4, what the second build targets; libgcc also checks that
         * the OS saves the 512-bit state (XCR0). */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl");
    }
#endif
    return 0;
}

lsq_isa lsq_isa_active(void) { return lsq_isa_wide ? LSQ_ISA_AVX512 : LSQ_ISA_BASE; }

void lsq_isa_set(lsq_isa isa)
{
    assert(lsq_isa_supported(isa));
    lsq_isa_wide = isa == LSQ_ISA_AVX512;
}

lsq_status lsq_isa_from_env(lsq_err *err)
{
    lsq_isa best = lsq_isa_supported(LSQ_ISA_AVX512) ? LSQ_ISA_AVX512 : LSQ_ISA_BASE;
    const char *v = getenv("LSQ_ISA");
    lsq_isa_set(best);
    if (!v || !*v || !strcmp(v, "auto")) return LSQ_OK;
    for (int i = 0; i < LSQ_ISA_COUNT; i++) {
        if (strcmp(v, LSQ_ISA_NAMES[i])) continue;
        if (!lsq_isa_supported((lsq_isa)i))
            return lsq_err_set(err, LSQ_ERR_INVALID, "LSQ_ISA",
                               "LSQ_ISA=%s: %s", v,
                               LSQ_ISA_DISPATCH ? "this CPU cannot run it"
                                                : "this build has no such path");
        lsq_isa_set((lsq_isa)i);
        return LSQ_OK;
    }
    return lsq_err_set(err, LSQ_ERR_INVALID, "LSQ_ISA", "LSQ_ISA=%s: use auto, %s or %s", v,
                       LSQ_ISA_NAMES[LSQ_ISA_BASE], LSQ_ISA_NAMES[LSQ_ISA_AVX512]);
}

/* Before main (and before any kernel runs): a bad LSQ_ISA leaves the
 * automatic choice here; lsq reports it (lsq_isa_from_env again). */
__attribute__((constructor)) static void isa_start(void) { lsq_isa_from_env(NULL); }
