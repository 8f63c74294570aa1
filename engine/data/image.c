/* PNG and JPEG decoding from memory, and fitting images to the cache's
 * shape (image.h).
 *
 * Both libraries report fatal errors through a callback that must not
 * return: ours copy the message and longjmp back into the decoder, which
 * frees what it holds and returns a status. Every pointer assigned between
 * setjmp and a possible longjmp is volatile, so it is still valid after the
 * jump. libjpeg's default handlers print and call exit(); neither is ever
 * installed here. */
#include "data/image.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <jpeglib.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

image_kind image_sniff(const uint8_t *data, size_t n)
{
    if (n >= 8 && memcmp(data, PNG_SIG, 8) == 0) return IMAGE_PNG;
    if (n >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return IMAGE_JPEG;
    return IMAGE_NONE;
}

void image_free(lsq_image *im)
{
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

static lsq_status too_large(const char *name, long w, long h, lsq_err *err)
{
    return lsq_err_set(err, LSQ_ERR_FORMAT, name,
                       "%s: image of %ldx%ld pixels is over the limit (%d per side, %zu "
                       "pixels); refused", name, w, h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
}

/* ---- PNG ---- */

typedef struct {
    jmp_buf jb;
    char msg[200];
    const uint8_t *data;
    size_t n, pos;
} png_ctx;

static void png_on_error(png_structp p, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(p);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "error");
    longjmp(c->jb, 1);
}

/* libpng warns about damaged ancillary chunks (colour profiles, text) and
 * drops them; the pixels are intact, so a warning is not an error. */
static void png_on_warning(png_structp p, png_const_charp msg)
{
    (void)p;
    (void)msg;
}

static void png_on_read(png_structp p, png_bytep out, size_t len)
{
    png_ctx *c = png_get_io_ptr(p);
    if (len > c->n - c->pos) png_error(p, "truncated PNG data");
    memcpy(out, c->data + c->pos, len);
    c->pos += len;
}

static lsq_status decode_png(lsq_image *out, const uint8_t *data, size_t n, const char *name,
                             lsq_err *err)
{
    png_ctx c;
    memset(&c, 0, sizeof c);
    c.data = data;
    c.n = n;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_on_error,
                                             png_on_warning);
    if (!png) return lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory for libpng", name);
    png_infop info = png_create_info_struct(png);
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    volatile lsq_status st = LSQ_OK;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory for libpng", name);
    }
    if (setjmp(c.jb)) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: corrupt PNG: %s", name, c.msg);
        goto out;
    }
    png_set_read_fn(png, &c, png_on_read);
    /* libpng's own limits would call a large image corrupt; ours say why */
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (size_t)w * h > IMAGE_MAX_PIXELS) {
        st = too_large(name, (long)w, (long)h, err);
        goto out;
    }
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rb = png_get_rowbytes(png, info);
    if ((ch != 1 && ch != 3) || rb != (size_t)w * ch) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                         "%s: unsupported PNG layout (%d channels, %zu bytes a row)", name, ch,
                         rb);
        goto out;
    }
    px = malloc((size_t)w * h * ch);
    rows = malloc((size_t)h * sizeof *rows);
    if (!px || !rows) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory for %ux%u pixels", name,
                         w, h);
        goto out;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = px + (size_t)y * rb;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    out->h = (int)h;
    out->w = (int)w;
    out->c = ch;
    out->px = px;
    px = NULL;
out:
    png_destroy_read_struct(&png, &info, NULL);
    free(px);
    free(rows);
    return st;
}

/* ---- JPEG ---- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_ctx;

static void jpeg_on_exit(j_common_ptr ci)
{
    jpeg_ctx *c = (jpeg_ctx *)ci->err;
    ci->err->format_message(ci, c->msg);
    longjmp(c->jb, 1);
}

/* level -1 is a corrupt-data warning: fatal here (libjpeg would fill the
 * rest of the image with grey); trace levels are ignored. */
static void jpeg_on_emit(j_common_ptr ci, int level)
{
    if (level < 0) jpeg_on_exit(ci);
}

static void jpeg_on_output(j_common_ptr ci) { (void)ci; }

static lsq_status decode_jpeg(lsq_image *out, const uint8_t *data, size_t n, const char *name,
                              int hint_h, int hint_w, lsq_err *err)
{
    struct jpeg_decompress_struct ci;
    jpeg_ctx c;
    uint8_t *volatile px = NULL;
    volatile lsq_status st = LSQ_OK;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&c.pub);
    c.pub.error_exit = jpeg_on_exit;
    c.pub.emit_message = jpeg_on_emit;
    c.pub.output_message = jpeg_on_output;
    c.msg[0] = '\0';
    if (setjmp(c.jb)) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: corrupt JPEG: %s", name, c.msg);
        goto out;
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, data, (unsigned long)n);
    jpeg_read_header(&ci, TRUE);
    if (ci.image_width > IMAGE_MAX_SIDE || ci.image_height > IMAGE_MAX_SIDE ||
        (size_t)ci.image_width * ci.image_height > IMAGE_MAX_PIXELS) {
        st = too_large(name, (long)ci.image_width, (long)ci.image_height, err);
        goto out;
    }
    if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name,
                         "%s: CMYK JPEG images are not supported; convert it to RGB", name);
        goto out;
    }
    ci.out_color_space = ci.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    /* decode a much larger image at 1/2..1/8 scale, never below the hint */
    if (hint_h > 0 && hint_w > 0) {
        for (unsigned d = 8; d >= 2; d /= 2) {
            if ((ci.image_width + d - 1) / d >= (unsigned)hint_w &&
                (ci.image_height + d - 1) / d >= (unsigned)hint_h) {
                ci.scale_num = 1;
                ci.scale_denom = d;
                break;
            }
        }
    }
    jpeg_start_decompress(&ci);
    int w = (int)ci.output_width, h = (int)ci.output_height, ch = ci.output_components;
    if (ch != 1 && ch != 3) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: JPEG with %d components", name, ch);
        goto out;
    }
    px = malloc((size_t)w * h * ch);
    if (!px) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory for %dx%d pixels", name, w,
                         h);
        goto out;
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = px + (size_t)ci.output_scanline * w * ch;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    out->h = h;
    out->w = w;
    out->c = ch;
    out->px = px;
    px = NULL;
out:
    jpeg_destroy_decompress(&ci);
    free(px);
    return st;
}

lsq_status image_decode(lsq_image *out, const uint8_t *data, size_t n, const char *name,
                        int hint_h, int hint_w, lsq_err *err)
{
    memset(out, 0, sizeof *out);
    switch (image_sniff(data, n)) {
    case IMAGE_PNG: return decode_png(out, data, n, name, err);
    case IMAGE_JPEG: return decode_jpeg(out, data, n, name, hint_h, hint_w, err);
    default: break;
    }
    char head[9] = {0};
    for (size_t i = 0; i < 8 && i < n; i++)
        head[i] = data[i] >= 0x20 && data[i] < 0x7f ? (char)data[i] : '.';
    return lsq_err_set(err, LSQ_ERR_FORMAT, name,
                       "%s: not a PNG or JPEG image (%zu bytes starting \"%s\")", name, n, head);
}

/* ---- fitting ---- */

/* Per-axis resampling taps: output o reads src[idx[o*taps + k]] with weight
 * wt[o*taps + k]. Area when shrinking, bilinear when growing. */
static int axis_taps(int src, int dst, int **idx, float **wt, int *taps)
{
    int t = dst < src ? (src + dst - 1) / dst + 1 : 2;
    *taps = t;
    *idx = malloc((size_t)dst * t * sizeof **idx);
    *wt = malloc((size_t)dst * t * sizeof **wt);
    if (!*idx || !*wt) return -1;
    for (int o = 0; o < dst; o++) {
        int *ix = *idx + (size_t)o * t;
        float *ww = *wt + (size_t)o * t;
        for (int k = 0; k < t; k++) ix[k] = 0, ww[k] = 0.0f;
        if (dst < src) {
            double scale = (double)src / dst, a = o * scale, b = (o + 1) * scale;
            int i0 = (int)a, k = 0;
            for (int i = i0; i < src && i < b && k < t; i++, k++) {
                double lo = i > a ? i : a, hi = i + 1 < b ? i + 1 : b;
                ix[k] = i;
                ww[k] = (float)((hi - lo) / scale);
            }
        } else {
            double x = (o + 0.5) * src / dst - 0.5;
            if (x < 0) x = 0;
            if (x > src - 1) x = src - 1;
            int i0 = (int)x, i1 = i0 + 1 < src ? i0 + 1 : i0;
            float f = (float)(x - i0);
            ix[0] = i0, ww[0] = 1.0f - f;
            ix[1] = i1, ww[1] = f;
        }
    }
    return 0;
}

/* Resizes one plane (h, w) to (dh, dw). */
static int resize_plane(uint8_t *dst, int dh, int dw, const uint8_t *src, int h, int w)
{
    if (h == dh && w == dw) {
        memcpy(dst, src, (size_t)h * w);
        return 0;
    }
    int *xi = NULL, *yi = NULL, xt = 0, yt = 0, rc = -1;
    float *xw = NULL, *yw = NULL, *tmp = malloc((size_t)h * dw * sizeof *tmp);
    if (!tmp || axis_taps(w, dw, &xi, &xw, &xt) || axis_taps(h, dh, &yi, &yw, &yt)) goto out;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = src + (size_t)y * w;
        float *trow = tmp + (size_t)y * dw;
        for (int o = 0; o < dw; o++) {
            float s = 0.0f;
            for (int k = 0; k < xt; k++) s += xw[o * xt + k] * row[xi[o * xt + k]];
            trow[o] = s;
        }
    }
    for (int o = 0; o < dh; o++) {
        uint8_t *drow = dst + (size_t)o * dw;
        for (int x = 0; x < dw; x++) {
            float s = 0.0f;
            for (int k = 0; k < yt; k++) s += yw[o * yt + k] * tmp[(size_t)yi[o * yt + k] * dw + x];
            int v = (int)(s + 0.5f);
            drow[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    rc = 0;
out:
    free(tmp);
    free(xi);
    free(xw);
    free(yi);
    free(yw);
    return rc;
}

int image_fit(uint8_t *dst, int dc, int dh, int dw, const uint8_t *src, int c, int h, int w,
              int src_chw)
{
    size_t hw = (size_t)h * w;
    /* planes at the source size with the target's channels */
    uint8_t *planes = malloc((size_t)dc * hw);
    if (!planes) return -1;
    for (size_t p = 0; p < hw; p++) {
        uint8_t v[3];
        for (int k = 0; k < c; k++) v[k] = src_chw ? src[(size_t)k * hw + p] : src[p * c + k];
        if (dc == c) {
            for (int k = 0; k < c; k++) planes[(size_t)k * hw + p] = v[k];
        } else if (dc == 1) {
            planes[p] = (uint8_t)((299u * v[0] + 587u * v[1] + 114u * v[2] + 500u) / 1000u);
        } else {
            for (int k = 0; k < dc; k++) planes[(size_t)k * hw + p] = v[0];
        }
    }
    int rc = 0;
    for (int k = 0; k < dc && rc == 0; k++)
        rc = resize_plane(dst + (size_t)k * dh * dw, dh, dw, planes + (size_t)k * hw, h, w);
    free(planes);
    return rc;
}

lsq_status image_decode_fit(uint8_t *dst, int c, int h, int w, const uint8_t *data, size_t n,
                            const char *name, lsq_err *err)
{
    if (c != 1 && c != 3)
        return lsq_err_set(err, LSQ_ERR_INVALID, "channels",
                           "%s: images convert to 1 (grey) or 3 (RGB) channels, not %d", name, c);
    if (h < 1 || w < 1 || h > IMAGE_MAX_SIDE || w > IMAGE_MAX_SIDE)
        return lsq_err_set(err, LSQ_ERR_INVALID, "size", "%s: cannot fit an image to %dx%d",
                           name, h, w);
    if (n == 0) return lsq_err_set(err, LSQ_ERR_FORMAT, name, "%s: empty image (0 bytes)", name);
    lsq_image im;
    lsq_status st = image_decode(&im, data, n, name, h, w, err);
    if (st != LSQ_OK) return st;
    if (image_fit(dst, c, h, w, im.px, im.c, im.h, im.w, 0) != 0)
        st = lsq_err_set(err, LSQ_ERR_NOMEM, name, "%s: out of memory resizing a %dx%d image",
                         name, im.h, im.w);
    image_free(&im);
    return st;
}

/* ---- PNG writing ---- */

lsq_status image_write_png(const lsq_image *im, const char *path, lsq_err *err)
{
    if (im->c != 1 && im->c != 3)
        return lsq_err_set(err, LSQ_ERR_INVALID, path, "a PNG is written from 1 or 3 channels, "
                           "not %d", im->c);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%.4090s.tmp", path);
    FILE *volatile f = fopen(tmp, "wb");
    if (!f)
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot write %s: %s", path, strerror(errno));
    png_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error,
                                            png_on_warning);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info || setjmp(ctx.jb)) {
        png_destroy_write_struct(&p, &info);
        fclose(f);
        unlink(tmp);
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot write %s: %s", path,
                           ctx.msg[0] ? ctx.msg : "out of memory");
    }
    png_init_io(p, f);
    png_set_IHDR(p, info, (png_uint_32)im->w, (png_uint_32)im->h, 8,
                 im->c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < im->h; y++)
        png_write_row(p, im->px + (size_t)y * (size_t)im->w * (size_t)im->c);
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot write %s: %s", path, strerror(e));
    }
    return LSQ_OK;
}
