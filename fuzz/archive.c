/* Dataset registration from an uploaded archive (tar, tar.gz, zip...):
 * data_import on the bytes (in a memfd) with small caps on what they may
 * expand to. The first byte picks the format: the guess, or idx, cifar10,
 * cifar100, folder (PNG/JPEG per class); the rest is the archive. */
#include "fuzz.h"
#include "data/import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const data_format formats[] = {DFMT_AUTO, DFMT_IDX, DFMT_CIFAR10, DFMT_CIFAR100,
                                          DFMT_FOLDER};
    if (size < 1 || size > 256 * 1024) return -1;
    import_opts o;
    import_opts_default(&o);
    o.format = formats[data[0] % 5];
    o.coarse = (data[0] >> 3) & 1;
    o.limits.max_entry_bytes = 1 << 20;
    o.limits.max_total_bytes = 4 << 20;
    char path[64];
    int fd = fuzz_file(path, sizeof path, "fuzz-archive", data + 1, size - 1);
    if (fd < 0) return 0;
    lsq_cache c;
    lsq_err err;
    memset(&c, 0, sizeof c);
    if (data_import(&c, path, &o, &err) == LSQ_OK) cache_free(&c);
    close(fd);
    return 0;
}
