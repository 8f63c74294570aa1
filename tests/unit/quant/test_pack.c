/* Bit packing of quantization codes: exact round trips at every width and
 * odd counts, the documented stream layout, range checks. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "quant/pack.h"

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

Test(pack, round_trip_every_width_and_count)
{
    static const size_t counts[] = {0, 1, 2, 3, 5, 7, 8, 9, 13, 31, 64, 1001};
    uint32_t seed = 12345;
    lsq_err err;
    for (int bits = 2; bits <= 8; bits++) {
        for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++) {
            size_t n = counts[ci];
            int8_t *s = malloc(n + 1), *s2 = malloc(n + 1);
            uint8_t *u = malloc(n + 1), *u2 = malloc(n + 1);
            size_t nb = lsq_pack_size(n, bits);
            cr_assert_eq(nb, (n * (size_t)bits + 7) / 8);
            uint8_t *buf = malloc(nb + 1);
            int lo = -(1 << (bits - 1));
            for (size_t i = 0; i < n; i++) {
                s[i] = (int8_t)(lo + (int)(rng_next(&seed) % (1u << bits)));
                u[i] = (uint8_t)(rng_next(&seed) % (1u << bits));
            }
            /* extremes at both ends */
            if (n >= 2) {
                s[0] = (int8_t)lo;
                s[n - 1] = (int8_t)(-lo - 1);
                u[0] = 0;
                u[n - 1] = (uint8_t)((1u << bits) - 1);
            }
            memset(buf, 0xAA, nb + 1);
            cr_assert_eq(lsq_pack_signed(buf, s, n, bits, &err), LSQ_OK);
            cr_assert_eq(buf[nb], 0xAA, "pack wrote past its size");
            if (nb && (n * bits) % 8)
                cr_assert_eq(buf[nb - 1] >> ((n * bits) % 8), 0,
                             "padding bits must be zero");
            cr_assert_eq(lsq_unpack_signed(s2, buf, n, bits, &err), LSQ_OK);
            cr_assert(n == 0 || memcmp(s, s2, n) == 0,
                      "signed round trip differs at %d bits, n=%zu", bits, n);
            cr_assert_eq(lsq_pack_unsigned(buf, u, n, bits, &err), LSQ_OK);
            cr_assert_eq(lsq_unpack_unsigned(u2, buf, n, bits, &err), LSQ_OK);
            cr_assert(n == 0 || memcmp(u, u2, n) == 0,
                      "unsigned round trip differs at %d bits, n=%zu", bits, n);
            free(s); free(s2); free(u); free(u2); free(buf);
        }
    }
}

Test(pack, documented_layout)
{
    lsq_err err;
    uint8_t buf[8];
    /* 2-bit: four per byte, first code lowest. */
    const uint8_t u2[] = {1, 2, 3, 0, 3};
    cr_assert_eq(lsq_pack_unsigned(buf, u2, 5, 2, &err), LSQ_OK);
    cr_assert_eq(buf[0], 1 | 2 << 2 | 3 << 4 | 0 << 6);
    cr_assert_eq(buf[1], 3);
    /* 4-bit signed two's complement: -1 -> 0xF, 7 -> 0x7, -8 -> 0x8 */
    const int8_t s4[] = {-1, 7, -8};
    cr_assert_eq(lsq_pack_signed(buf, s4, 3, 4, &err), LSQ_OK);
    cr_assert_eq(buf[0], 0x7F);
    cr_assert_eq(buf[1], 0x08);
    /* 3-bit across byte boundaries: codes 5,6,7 -> bits 101 110 111 */
    const uint8_t u3[] = {5, 6, 7};
    cr_assert_eq(lsq_pack_unsigned(buf, u3, 3, 3, &err), LSQ_OK);
    unsigned stream = 5u | 6u << 3 | 7u << 6;
    cr_assert_eq(buf[0], stream & 0xFF);
    cr_assert_eq(buf[1], stream >> 8);
    /* 3-bit signed: -4 is 100, -1 is 111 */
    const int8_t s3[] = {-4, -1, 3};
    cr_assert_eq(lsq_pack_signed(buf, s3, 3, 3, &err), LSQ_OK);
    stream = 4u | 7u << 3 | 3u << 6;
    cr_assert_eq(buf[0], stream & 0xFF);
    cr_assert_eq(buf[1], stream >> 8);
    int8_t back[3];
    cr_assert_eq(lsq_unpack_signed(back, buf, 3, 3, &err), LSQ_OK);
    cr_assert(back[0] == -4 && back[1] == -1 && back[2] == 3);
}

Test(pack, rejects_out_of_range)
{
    lsq_err err;
    uint8_t buf[4];
    const int8_t s[] = {0, 2, -3};
    cr_assert_eq(lsq_pack_signed(buf, s, 3, 2, &err), LSQ_ERR_INVALID);
    cr_assert(strstr(err.message, "index 1") != NULL, "%s", err.message);
    const uint8_t u[] = {0, 1, 8};
    cr_assert_eq(lsq_pack_unsigned(buf, u, 3, 3, &err), LSQ_ERR_INVALID);
    cr_assert(strstr(err.message, "index 2") != NULL, "%s", err.message);
    cr_assert_eq(lsq_pack_unsigned(buf, u, 2, 1, &err), LSQ_ERR_INVALID);
    cr_assert_eq(lsq_pack_unsigned(buf, u, 2, 9, &err), LSQ_ERR_INVALID);
    cr_assert_eq(lsq_unpack_unsigned(buf, buf, 2, 9, &err), LSQ_ERR_INVALID);
    cr_assert_str_eq(err.field, "bits");
}
