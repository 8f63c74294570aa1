/* The checkpoint (.lsqc) as `lsq export`, `lsq resume` and lsqd read it:
 * ckpt_load from a file (a memfd holding the bytes), then ckpt_build_net
 * rebuilds the network from its header. The trailing checksum is recomputed
 * so that mutations reach the parser behind it. */
#include "fuzz.h"
#include "train/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return -1;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    fuzz_fix_crc32(buf, size);
    char path[64];
    int fd = fuzz_file(path, sizeof path, "fuzz.lsqc", buf, size);
    free(buf);
    if (fd < 0) return 0;
    lsq_ckpt c;
    lsq_err err;
    if (ckpt_load(&c, path, &err) == LSQ_OK) {
        lsq_net net;
        if (ckpt_build_net(&net, &c, 1, &err) == LSQ_OK) net_free(&net);
        ckpt_free(&c);
    }
    close(fd);
    return 0;
}
