/* Shared helpers of the libFuzzer targets (fuzz/README in docs/reliability.md).
 * Each target is one .c with LLVMFuzzerTestOneInput, built by `make fuzz`
 * with clang -fsanitize=fuzzer,address,undefined against the engine sources
 * compiled again with clang into build-fuzz/. */
#ifndef LSQ_FUZZ_H
#define LSQ_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes the bytes to a memory-backed file and returns its /proc path in
 * path (for readers that only take a path); fd is closed by fuzz_file_close.
 * name is the basename the readers see (some go by the extension). */
static inline int fuzz_file(char *path, size_t cap, const char *name, const uint8_t *data,
                            size_t size)
{
    int fd = memfd_create(name, 0);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* Containers with a trailing crc32 of every byte before it (.lsqm, .lsqc):
 * the target stores the right checksum so that mutated inputs reach the
 * parser behind it instead of all stopping at the checksum. */
static inline void fuzz_fix_crc32(uint8_t *buf, size_t size)
{
    if (size < 8) return;
    uint32_t c = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4));
    buf[size - 4] = (uint8_t)c;
    buf[size - 3] = (uint8_t)(c >> 8);
    buf[size - 2] = (uint8_t)(c >> 16);
    buf[size - 1] = (uint8_t)(c >> 24);
}
#endif
