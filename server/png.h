/* A small PNG decoder for POST /predict: 8-bit grayscale, gray+alpha, RGB and
 * RGBA, non-interlaced; colour is turned into luma (ITU-R BT.601), alpha is
 * ignored. Also base64 decoding of the request's strings. */
#ifndef LSQD_PNG_H
#define LSQD_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Decodes base64 (standard alphabet, padding optional, no whitespace).
 * Returns a malloc'ed buffer and its length, NULL on bad input. */
uint8_t *base64_decode(const char *text, size_t len, size_t *out_len);

/* Decodes a PNG into a malloc'ed (h, w) gray image. Returns NULL and a reason
 * in why[cap] when the bytes are not a PNG this decoder supports. */
uint8_t *png_decode_gray(const uint8_t *data, size_t len, int *w, int *h, char *why,
                         size_t cap);

#endif
