/* Bit packing of b-bit quantization codes (b = 2..8) for the .lsqm format.
 *
 * The packed form is a little-endian bit stream: code i occupies stream bits
 * [i*b, i*b + b), and stream bit j is bit (j % 8) of byte j / 8. So 2-bit
 * codes go four to a byte and 4-bit codes two to a byte, the first code in
 * the lowest bits; 3-, 5-, 6- and 7-bit codes run across byte boundaries.
 * Unused high bits of the last byte are zero.
 *
 * Signed codes (-2^(b-1) .. 2^(b-1)-1) are stored as b-bit two's complement
 * (the low b bits of the int8 value) and sign-extended on unpacking.
 * Unsigned codes (0 .. 2^b-1) are stored as they are. */
#ifndef LSQ_PACK_H
#define LSQ_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Bytes that n b-bit codes occupy: ceil(n * b / 8). */
size_t lsq_pack_size(size_t n, int bits);

/* Packs n signed codes into dst (lsq_pack_size(n, bits) bytes, all of them
 * written). LSQ_ERR_INVALID for bits outside 2..8 or a code outside
 * -2^(bits-1) .. 2^(bits-1)-1 (the message names its index). */
lsq_status lsq_pack_signed(uint8_t *dst, const int8_t *codes, size_t n,
                           int bits, lsq_err *err);

/* Same for unsigned codes 0 .. 2^bits-1. */
lsq_status lsq_pack_unsigned(uint8_t *dst, const uint8_t *codes, size_t n,
                             int bits, lsq_err *err);

/* Unpacks n codes from src (lsq_pack_size(n, bits) bytes). Every bit
 * pattern is a valid code, so the only failure is bits outside 2..8
 * (LSQ_ERR_INVALID). */
lsq_status lsq_unpack_signed(int8_t *codes, const uint8_t *src, size_t n,
                             int bits, lsq_err *err);
lsq_status lsq_unpack_unsigned(uint8_t *codes, const uint8_t *src, size_t n,
                               int bits, lsq_err *err);

#endif
