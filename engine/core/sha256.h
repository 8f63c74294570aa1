/* SHA-256 (FIPS 180-4), for artifact digests and ETags. */
#ifndef LSQ_SHA256_H
#define LSQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t fill;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, unsigned char out[32]);
/* Lower-case hex of 32 bytes into hex[65]. */
void sha256_hex(const unsigned char d[32], char hex[65]);
/* Digest of a whole file; returns 0, or -1 if it cannot be read. bytes may be NULL. */
int sha256_file_hex(const char *path, char hex[65], long long *bytes);

#endif
