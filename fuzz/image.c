/* PNG and JPEG decoding for predict (POST /v1/models/{id}/predict, `lsq
 * predict`): image_decode_fit to a model's input. The first byte picks the
 * model input (channels 1 or 3, side 8..39); the rest is the image. */
#include "fuzz.h"
#include "data/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 128 * 1024) return -1;
    int c = (data[0] & 1) ? 3 : 1;
    int side = 8 + (data[0] >> 1) % 32;
    uint8_t px[3 * 39 * 39];
    lsq_err err;
    (void)image_decode_fit(px, c, side, side, data + 1, size - 1, "fuzz-image", &err);
    return 0;
}
