/* Bit packing of quantization codes: see pack.h for the stream layout. The
 * general path runs a 64-bit shift register over the stream; 8-bit codes are
 * a plain copy. */
#include "quant/pack.h"

#include <string.h>

size_t lsq_pack_size(size_t n, int bits)
{
    return (n * (size_t)bits + 7) / 8;
}

static lsq_status check_bits(int bits, lsq_err *err)
{
    if (bits < 2 || bits > 8)
        return lsq_err_set(err, LSQ_ERR_INVALID, "bits",
                           "bit width must be 2..8, got %d", bits);
    return LSQ_OK;
}

/* Writes the low `bits` bits of each of vals[0..n) to the stream. */
static void pack_bits(uint8_t *dst, const uint8_t *vals, size_t n, int bits)
{
    if (bits == 8) {
        memcpy(dst, vals, n);
        return;
    }
    uint32_t mask = (1u << bits) - 1;
    uint64_t acc = 0;
    int have = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= (uint64_t)(vals[i] & mask) << have;
        have += bits;
        while (have >= 8) {
            dst[o++] = (uint8_t)acc;
            acc >>= 8;
            have -= 8;
        }
    }
    if (have > 0)
        dst[o] = (uint8_t)acc;
}

/* Reads n fields of `bits` bits; sign-extends them when sign is set. */
static void unpack_bits(uint8_t *vals, const uint8_t *src, size_t n, int bits,
                        int sign)
{
    if (bits == 8) {
        memcpy(vals, src, n);
        return;
    }
    uint32_t mask = (1u << bits) - 1;
    uint32_t top = 1u << (bits - 1);
    uint64_t acc = 0;
    int have = 0;
    size_t in = 0;
    for (size_t i = 0; i < n; i++) {
        while (have < bits) {
            acc |= (uint64_t)src[in++] << have;
            have += 8;
        }
        uint32_t v = (uint32_t)acc & mask;
        acc >>= bits;
        have -= bits;
        if (sign && (v & top))
            v |= ~mask; /* two's complement sign extension to 8 bits */
        vals[i] = (uint8_t)v;
    }
}

lsq_status lsq_pack_signed(uint8_t *dst, const int8_t *codes, size_t n,
                           int bits, lsq_err *err)
{
    if (check_bits(bits, err) != LSQ_OK)
        return LSQ_ERR_INVALID;
    int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (size_t i = 0; i < n; i++)
        if (codes[i] < lo || codes[i] > hi)
            return lsq_err_set(err, LSQ_ERR_INVALID, "codes",
                               "code %d at index %zu is outside %d..%d "
                               "for %d-bit signed codes",
                               codes[i], i, lo, hi, bits);
    /* The int8 -> uint8 view keeps the two's complement bit pattern. */
    pack_bits(dst, (const uint8_t *)codes, n, bits);
    return LSQ_OK;
}

lsq_status lsq_pack_unsigned(uint8_t *dst, const uint8_t *codes, size_t n,
                             int bits, lsq_err *err)
{
    if (check_bits(bits, err) != LSQ_OK)
        return LSQ_ERR_INVALID;
    unsigned hi = (1u << bits) - 1;
    for (size_t i = 0; i < n; i++)
        if (codes[i] > hi)
            return lsq_err_set(err, LSQ_ERR_INVALID, "codes",
                               "code %u at index %zu is outside 0..%u "
                               "for %d-bit unsigned codes",
                               (unsigned)codes[i], i, hi, bits);
    pack_bits(dst, codes, n, bits);
    return LSQ_OK;
}

lsq_status lsq_unpack_signed(int8_t *codes, const uint8_t *src, size_t n,
                             int bits, lsq_err *err)
{
    if (check_bits(bits, err) != LSQ_OK)
        return LSQ_ERR_INVALID;
    unpack_bits((uint8_t *)codes, src, n, bits, 1);
    return LSQ_OK;
}

lsq_status lsq_unpack_unsigned(uint8_t *codes, const uint8_t *src, size_t n,
                               int bits, lsq_err *err)
{
    if (check_bits(bits, err) != LSQ_OK)
        return LSQ_ERR_INVALID;
    unpack_bits(codes, src, n, bits, 0);
    return LSQ_OK;
}
