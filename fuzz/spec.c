/* The job spec: JSON text as a client POSTs it to /v1/jobs (spec_parse),
 * then written back out as lsqd stores it (spec_to_text) and read again. */
#include "fuzz.h"
#include "core/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) return -1;
    lsq_spec spec;
    lsq_err err;
    memset(&spec, 0, sizeof spec);
    if (spec_parse(&spec, (const char *)data, size, &err) == LSQ_OK) {
        char *text = spec_to_text(&spec, JSON_COMPACT);
        if (text) {
            lsq_spec again;
            memset(&again, 0, sizeof again);
            if (spec_parse(&again, text, strlen(text), &err) != LSQ_OK) {
                fprintf(stderr, "spec_to_text wrote a spec spec_parse refuses: %s\n%s\n",
                        err.message, text);
                abort();
            }
            spec_free(&again);
            free(text);
        }
    }
    spec_free(&spec);
    return 0;
}
