/* Minimal PNG reader: chunks, zlib inflate of the IDAT stream, the five
 * scanline filters; written for 28x28 test images, limited to 4096x4096. */
#include "png.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

uint8_t *base64_decode(const char *text, size_t len, size_t *out_len)
{
    static int8_t map[256];
    static int ready;
    if (!ready) {
        memset(map, -1, sizeof map);
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; i++) map[(unsigned char)a[i]] = (int8_t)i;
        ready = 1; /* idempotent: a race writes the same values */
    }
    while (len && text[len - 1] == '=') len--;
    if (len % 4 == 1) return NULL;
    uint8_t *out = malloc(len / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = map[(unsigned char)text[i]];
        if (v < 0) { free(out); return NULL; }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc) return a;
    return pb <= pc ? b : c;
}

uint8_t *png_decode_gray(const uint8_t *data, size_t len, int *w, int *h, char *why,
                         size_t cap)
{
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t *idat = NULL, *raw = NULL, *img = NULL;
    size_t idat_len = 0;
    int width = 0, height = 0, ctype = -1, have_ihdr = 0, have_iend = 0;
    if (len < 8 || memcmp(data, SIG, 8)) { snprintf(why, cap, "not a PNG"); goto out; }
    size_t p = 8;
    while (p + 12 <= len) {
        uint32_t n = be32(data + p);
        const uint8_t *type = data + p + 4, *body = data + p + 8;
        if (n > len - p - 12) { snprintf(why, cap, "truncated PNG chunk"); goto out; }
        if (!memcmp(type, "IHDR", 4)) {
            if (n != 13) { snprintf(why, cap, "bad IHDR"); goto out; }
            width = (int)be32(body);
            height = (int)be32(body + 4);
            int depth = body[8];
            ctype = body[9];
            if (width <= 0 || height <= 0 || width > 4096 || height > 4096) {
                snprintf(why, cap, "PNG size %dx%d not supported", width, height);
                goto out;
            }
            if (depth != 8 || body[12] != 0 || !(ctype == 0 || ctype == 2 || ctype == 4 ||
                                                  ctype == 6)) {
                snprintf(why, cap, "only 8-bit gray, gray+alpha, RGB and RGBA "
                                   "non-interlaced PNGs are supported");
                goto out;
            }
            have_ihdr = 1;
        } else if (!memcmp(type, "IDAT", 4)) {
            uint8_t *q = realloc(idat, idat_len + n + 1);
            if (!q) { snprintf(why, cap, "out of memory"); goto out; }
            idat = q;
            memcpy(idat + idat_len, body, n);
            idat_len += n;
        } else if (!memcmp(type, "IEND", 4)) {
            have_iend = 1;
            break;
        }
        p += 12 + n;
    }
    if (!have_ihdr || !idat || !have_iend) { snprintf(why, cap, "incomplete PNG"); goto out; }
    int channels = ctype == 0 ? 1 : ctype == 4 ? 2 : ctype == 2 ? 3 : 4;
    size_t stride = (size_t)width * (size_t)channels;
    size_t raw_len = (stride + 1) * (size_t)height;
    raw = malloc(raw_len);
    img = malloc((size_t)width * (size_t)height);
    if (!raw || !img) { snprintf(why, cap, "out of memory"); goto fail; }
    uLongf got = (uLongf)raw_len;
    if (uncompress(raw, &got, idat, (uLong)idat_len) != Z_OK || got != raw_len) {
        snprintf(why, cap, "corrupt PNG image data");
        goto fail;
    }
    for (int y = 0; y < height; y++) {
        uint8_t *line = raw + (size_t)y * (stride + 1);
        uint8_t *cur = line + 1, *prev = y ? raw + (size_t)(y - 1) * (stride + 1) + 1 : NULL;
        int f = line[0];
        for (size_t x = 0; x < stride; x++) {
            int a = x >= (size_t)channels ? cur[x - channels] : 0;
            int b = prev ? prev[x] : 0;
            int c = prev && x >= (size_t)channels ? prev[x - channels] : 0;
            int v = cur[x];
            switch (f) {
            case 0: break;
            case 1: v += a; break;
            case 2: v += b; break;
            case 3: v += (a + b) / 2; break;
            case 4: v += paeth(a, b, c); break;
            default: snprintf(why, cap, "bad PNG filter %d", f); goto fail;
            }
            cur[x] = (uint8_t)v;
        }
        for (int x = 0; x < width; x++) {
            const uint8_t *px = cur + (size_t)x * (size_t)channels;
            int g = channels <= 2 ? px[0] : (299 * px[0] + 587 * px[1] + 114 * px[2] + 500) / 1000;
            img[(size_t)y * (size_t)width + (size_t)x] = (uint8_t)g;
        }
    }
    *w = width;
    *h = height;
    goto out;
fail:
    free(img);
    img = NULL;
out:
    free(idat);
    free(raw);
    return img;
}
