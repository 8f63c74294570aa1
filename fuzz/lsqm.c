/* The packed model (.lsqm) as uploaded for deployment or read by `lsq
 * predict`: lsqm_parse checks and indexes it, lsqm_load_file compiles it for
 * the integer engine. The trailing checksum is recomputed (fuzz_fix_crc32)
 * so that mutations reach the header and tensor table behind it. */
#include "fuzz.h"
#include "deploy/lsqm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return -1;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    fuzz_fix_crc32(buf, size);
    lsqm_file f;
    lsq_err err;
    if (lsqm_parse(&f, buf, size, "fuzz.lsqm", &err) == LSQ_OK) {
        lsqm_model *m = lsqm_load_file(&f, &err);
        if (m) lsqm_free(m);
    }
    lsqm_file_free(&f);
    return 0;
}
