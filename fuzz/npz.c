/* A NumPy .npz dataset (a zip of .npy arrays) as `lsq dataset import` and
 * lsqd's registration read it: import_npz on the bytes (in a memfd), with
 * small caps on what the zip may expand to. */
#include "fuzz.h"
#include "data/import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return -1;
    import_opts o;
    import_opts_default(&o);
    o.format = DFMT_NPZ;
    o.limits.max_entry_bytes = 1 << 20;
    o.limits.max_total_bytes = 4 << 20;
    char path[64];
    int fd = fuzz_file(path, sizeof path, "fuzz.npz", data, size);
    if (fd < 0) return 0;
    lsq_cache c;
    lsq_err err;
    memset(&c, 0, sizeof c);
    if (import_npz(&c, path, &o, &err) == LSQ_OK) cache_free(&c);
    close(fd);
    return 0;
}
