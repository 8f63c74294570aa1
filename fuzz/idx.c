/* IDX files (MNIST layout, plain or gzip) as a dataset import reads them:
 * idx_parse on the bytes, then every element read back. */
#include "fuzz.h"
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return -1;
    idx_array a;
    lsq_err err;
    if (idx_parse(&a, data, size, "fuzz-idx", &err) == LSQ_OK) {
        long sum = 0;
        for (size_t i = 0; i < a.count; i++) sum += idx_get(&a, i);
        (void)sum;
        idx_free(&a);
    }
    return 0;
}
