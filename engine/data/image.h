/* Images for dataset import: PNG (libpng) and JPEG (libjpeg-turbo) decoded
 * from memory, and one function that fits any decoded or raw image to the
 * cache's (C, H, W): resize (area when shrinking, bilinear when enlarging)
 * and grey/colour conversion.
 *
 * Decoders never exit and never print: libpng and libjpeg report errors
 * through handlers that longjmp back to the decoder, which returns
 * LSQ_ERR_FORMAT naming the image. Their warnings (a bad CRC in an ancillary
 * and corrupt JPEG data warnings are errors too: a dataset is not the place to
 * guess at damaged pixels. (libpng's warnings, about damaged ancillary chunks
 * such as colour profiles, leave the pixels intact and are ignored.) */
#ifndef LSQ_IMAGE_H
#define LSQ_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS ((size_t)64 << 20)   /* 64 Mpixel decoded */

typedef struct {
    int h, w, c;        /* c: 1 (grey) or 3 (RGB); alpha is dropped */
    uint8_t *px;        /* (H, W, C) interleaved, owned; free with image_free */
} lsq_image;

typedef enum { IMAGE_NONE, IMAGE_PNG, IMAGE_JPEG } image_kind;

/* What the first bytes say: a PNG signature, a JPEG SOI marker, or neither. */
image_kind image_sniff(const uint8_t *data, size_t n);

/* Decodes a PNG or JPEG image. name is for messages. hint_h/hint_w (0: none)
 * is the size the image will be fitted to: a JPEG much larger than that is
 * decoded at 1/2, 1/4 or 1/8 scale (never below the hint). Grey images give
 * c = 1, colour c = 3 (palette, 16-bit and alpha are reduced to that).
 * Errors: LSQ_ERR_FORMAT (not a PNG/JPEG, corrupt, over the size caps),
 * LSQ_ERR_NOMEM. */
lsq_status image_decode(lsq_image *out, const uint8_t *data, size_t n, const char *name,
                        int hint_h, int hint_w, lsq_err *err);
void image_free(lsq_image *im);

/* Writes src (C, H, W planes when src_chw, else (H, W, C) interleaved) to
 * dst as (dc, dh, dw) planes: converted to grey (ITU-R BT.601 weights:
 * (299 R + 587 G + 114 B) / 1000, rounded) or to colour (grey replicated)
 * and resized: per axis, area averaging when the axis shrinks, bilinear
 * (half-pixel centres, edges clamped) when it grows, a copy when it keeps
 * its size. Channels are 1 or 3. Returns 0, or -1 when out of memory. */
int image_fit(uint8_t *dst, int dc, int dh, int dw, const uint8_t *src, int c, int h, int w,
              int src_chw);

/* Decodes a PNG or JPEG (image_decode) and fits it (image_fit) to dst as
 * (c, h, w) planes of 8-bit pixels: the one conversion that predict shares
 * with the dataset importer. c is 1 or 3 (else LSQ_ERR_INVALID, field
 * "channels"); h, w are 1..IMAGE_MAX_SIDE. Errors as image_decode's, and
 * LSQ_ERR_FORMAT for an empty image. */
lsq_status image_decode_fit(uint8_t *dst, int c, int h, int w, const uint8_t *data, size_t n,
                            const char *name, lsq_err *err);

/* Writes im (grey or RGB, 8 bits) to path as a PNG (libpng), through a
 * temporary name renamed into place. Errors: LSQ_ERR_IO naming the path;
 * nothing is left behind on failure. */
lsq_status image_write_png(const lsq_image *im, const char *path, lsq_err *err);

#endif
