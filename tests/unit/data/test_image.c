/* Tests for the image path that predict shares with the dataset importer
 * (data/image.h: image_decode_fit): PNG in every colour type and depth
 * (grey 4/8/16-bit, grey+alpha, RGB, RGBA, palette with and without
 * transparency, 16-bit colour, interlaced) and JPEG (grey, RGB), written here
 * with libpng and libjpeg at sizes other than the target, each compared
 * with image_fit of the pixels that were written; the refusals (empty,
 * text, truncated, over the size cap, an unsupported channel count); and
 * `lsq predict` on such files against the integer engine run on the same
 * fitted pixels. */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "data/image.h"
#include "deploy/infer.h"
#include "deploy/lsqm.h"
#include "graph/net.h"

/* ---- writers ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} membuf;

static void mem_write(png_structp p, png_bytep d, size_t len)
{
    membuf *m = png_get_io_ptr(p);
    if (m->n + len > m->cap) {
        m->cap = (m->n + len) * 2;
        m->b = realloc(m->b, m->cap);
        cr_assert_not_null(m->b);
    }
    memcpy(m->b + m->n, d, len);
    m->n += len;
}

static void mem_flush(png_structp p) { (void)p; }

/* A PNG of (h, w) from rows of already packed samples (depth bits each,
 * 16-bit big-endian as PNG stores them). */
static uint8_t *png_encode(const uint8_t *data, int h, int w, int type, int depth, int interlace,
                           const png_color *pal, int npal, const uint8_t *trns, int ntrns,
                           size_t *n)
{
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    cr_assert(p && info);
    membuf m = {NULL, 0, 0};
    png_set_write_fn(p, &m, mem_write, mem_flush);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, depth, type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(p, info, pal, npal);
    if (trns) png_set_tRNS(p, info, trns, ntrns, NULL);
    png_write_info(p, info);
    size_t rb = png_get_rowbytes(p, info);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(uintptr_t)(data + (size_t)y * rb);
    png_write_image(p, rows);
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(rows);
    *n = m.n;
    return m.b;
}

/* A JPEG of (h, w, c) interleaved 8-bit pixels, quality 95. */
static uint8_t *jpeg_encode(const uint8_t *px, int h, int w, int c, size_t *n)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    unsigned char *buf = NULL;
    unsigned long size = 0;
    jpeg_mem_dest(&ci, &buf, &size);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 95, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(uintptr_t)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    *n = size;
    return buf;
}

/* ---- the PNG colour types ---- */

enum { H = 9, W = 13 };

static uint8_t pat(int y, int x, int k) { return (uint8_t)((y * 29 + x * 17 + k * 83 + y * x) % 256); }

typedef enum {
    P_GREY, P_GREY4, P_GREY16, P_GREY_ALPHA, P_RGB, P_RGBA, P_RGB16, P_RGBA16, P_PALETTE,
    P_PALETTE_TRNS, P_RGB_INTERLACED, P_COUNT
} pkind;
static const char *const PKIND_NAMES[] = {
    "grey", "grey 4-bit", "grey 16-bit", "grey+alpha", "RGB", "RGBA", "RGB 16-bit",
    "RGBA 16-bit", "palette", "palette+tRNS", "RGB interlaced"};
_Static_assert(sizeof PKIND_NAMES / sizeof *PKIND_NAMES == P_COUNT, "name every pkind");

/* Writes a PNG of kind k; ref gets the pixels a decoder should see
 * ((H, W, *refc) interleaved, alpha dropped). */
static uint8_t *png_of_kind(pkind k, uint8_t *ref, int *refc, size_t *n)
{
    static uint8_t data[H * W * 8];
    png_color pal[16];
    uint8_t trns[16];
    for (int i = 0; i < 16; i++) {
        pal[i] = (png_color){(png_byte)(i * 16), (png_byte)(255 - i * 13), (png_byte)(i * i)};
        trns[i] = (uint8_t)(i * 15);
    }
    int grey = k == P_GREY || k == P_GREY4 || k == P_GREY16 || k == P_GREY_ALPHA;
    int alpha = k == P_GREY_ALPHA || k == P_RGBA || k == P_RGBA16;
    int deep = k == P_GREY16 || k == P_RGB16 || k == P_RGBA16;
    int ch = (grey ? 1 : 3) + alpha, bps = deep ? 2 : 1;
    *refc = grey ? 1 : 3;
    size_t o = 0;
    for (int y = 0; y < H; y++) {
        if (k == P_GREY4) {
            for (int x = 0; x < W; x += 2) {
                int a = pat(y, x, 0) % 16, b = x + 1 < W ? pat(y, x + 1, 0) % 16 : 0;
                data[o++] = (uint8_t)(a << 4 | b);
                ref[y * W + x] = (uint8_t)(a * 17);
                if (x + 1 < W) ref[y * W + x + 1] = (uint8_t)(b * 17);
            }
            continue;
        }
        for (int x = 0; x < W; x++) {
            if (k == P_PALETTE || k == P_PALETTE_TRNS) {
                int i = pat(y, x, 0) % 16;
                data[o++] = (uint8_t)i;
                ref[(y * W + x) * 3 + 0] = pal[i].red;
                ref[(y * W + x) * 3 + 1] = pal[i].green;
                ref[(y * W + x) * 3 + 2] = pal[i].blue;
                continue;
            }
            for (int c = 0; c < ch; c++) {
                uint8_t v = pat(y, x, c);
                if (c < *refc) ref[(y * W + x) * *refc + c] = v;
                data[o++] = v; /* 16-bit: v * 257, high byte then low byte */
                if (bps == 2) data[o++] = v;
            }
        }
    }
    int type = k == P_PALETTE || k == P_PALETTE_TRNS ? PNG_COLOR_TYPE_PALETTE
             : grey ? (alpha ? PNG_COLOR_TYPE_GRAY_ALPHA : PNG_COLOR_TYPE_GRAY)
             : alpha ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB;
    int depth = k == P_GREY4 ? 4 : deep ? 16 : 8;
    int pl = k == P_PALETTE || k == P_PALETTE_TRNS;
    return png_encode(data, H, W, type, depth, k == P_RGB_INTERLACED, pl ? pal : NULL, 16,
                      k == P_PALETTE_TRNS ? trns : NULL, 16, n);
}

/* Every PNG kind fitted to grey and to colour, smaller and larger than the
 * file: exactly image_fit of the pixels written. */
Test(image, png_every_colour_type_fits_like_the_importer)
{
    static const int sizes[][3] = {{1, 4, 6}, {3, 4, 6}, {1, 20, 31}, {3, 20, 31}, {3, H, W}};
    for (int k = 0; k < P_COUNT; k++) {
        uint8_t ref[H * W * 3];
        int refc;
        size_t n;
        uint8_t *b = png_of_kind((pkind)k, ref, &refc, &n);
        lsq_image im;
        lsq_err err;
        cr_assert_eq(image_decode(&im, b, n, "t.png", 0, 0, &err), LSQ_OK, "%s: %s",
                     PKIND_NAMES[k], err.message);
        cr_expect_eq(im.c, refc, "%s: %d channels", PKIND_NAMES[k], im.c);
        cr_expect(im.h == H && im.w == W, "%s: %dx%d", PKIND_NAMES[k], im.h, im.w);
        cr_expect_arr_eq(im.px, ref, (size_t)H * W * refc, "%s: decoded pixels", PKIND_NAMES[k]);
        image_free(&im);
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            int c = sizes[s][0], h = sizes[s][1], w = sizes[s][2];
            size_t plane = (size_t)c * h * w;
            uint8_t *got = malloc(plane), *want = malloc(plane);
            cr_assert_eq(image_fit(want, c, h, w, ref, refc, H, W, 0), 0);
            cr_assert_eq(image_decode_fit(got, c, h, w, b, n, "t.png", &err), LSQ_OK, "%s: %s",
                         PKIND_NAMES[k], err.message);
            cr_expect_arr_eq(got, want, plane, "%s fitted to %dx%dx%d", PKIND_NAMES[k], c, h, w);
            free(got);
            free(want);
        }
        free(b);
    }
}

/* JPEG is lossy: grey and colour files of other sizes (a large one decoded
 * at a reduced scale first) land within a few levels of image_fit of the
 * pixels that were compressed. */
Test(image, jpeg_grey_and_rgb_fit_within_compression_error)
{
    static const int shapes[][2] = {{30, 40}, {200, 160}, {5, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int h = shapes[s][0], w = shapes[s][1];
        for (int c = 1; c <= 3; c += 2) {
            uint8_t *px = malloc((size_t)h * w * c);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int k = 0; k < c; k++)
                        px[((size_t)y * w + x) * c + k] =
                            (uint8_t)(40 + 150 * (y + x) / (h + w) + 30 * k);
            size_t n;
            uint8_t *b = jpeg_encode(px, h, w, c, &n);
            for (int dc = 1; dc <= 3; dc += 2) {
                const int dh = 8, dw = 12;
                uint8_t got[3 * 8 * 12], want[3 * 8 * 12];
                lsq_err err;
                cr_assert_eq(image_fit(want, dc, dh, dw, px, c, h, w, 0), 0);
                cr_assert_eq(image_decode_fit(got, dc, dh, dw, b, n, "t.jpg", &err), LSQ_OK,
                             "%s", err.message);
                int worst = 0;
                for (int i = 0; i < dc * dh * dw; i++) {
                    int d = abs(got[i] - want[i]);
                    if (d > worst) worst = d;
                }
                cr_expect_leq(worst, 6, "JPEG %dx%dx%d fitted to %dx%dx%d: off by %d", c, h, w, dc,
                              dh, dw, worst);
            }
            free(b);
            free(px);
        }
    }
}

/* What predict refuses, each naming the image and the cause. */
Test(image, refusals_name_the_image_and_the_cause)
{
    uint8_t px[4 * 5 * 3] = {0}, dst[3 * 8 * 8];
    lsq_err err;
    cr_expect_eq(image_decode_fit(dst, 1, 8, 8, px, 0, "empty.png", &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "empty.png: empty image"), "%s", err.message);
    const char *text = "hello, world\n";
    cr_expect_eq(image_decode_fit(dst, 1, 8, 8, (const uint8_t *)text, strlen(text), "x.jpg",
                                  &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "x.jpg: not a PNG or JPEG image") &&
              strstr(err.message, "\"hello, w\""), "%s", err.message);
    size_t n;
    uint8_t rgb[4 * 5 * 3];
    for (int i = 0; i < 60; i++) rgb[i] = (uint8_t)(i * 4);
    uint8_t *b = png_encode(rgb, 4, 5, PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, &n);
    cr_expect_eq(image_decode_fit(dst, 1, 8, 8, b, n - 20, "cut.png", &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "cut.png: corrupt PNG"), "%s", err.message);
    /* a flipped byte in the pixel data fails its CRC */
    b[n - 20] ^= 0x55;
    cr_expect_eq(image_decode_fit(dst, 1, 8, 8, b, n, "flip.png", &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "flip.png: corrupt PNG"), "%s", err.message);
    b[n - 20] ^= 0x55;
    /* the model's channels: 1 or 3 */
    cr_expect_eq(image_decode_fit(dst, 2, 8, 8, b, n, "ok.png", &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "channels");
    free(b);
    uint8_t *j = jpeg_encode(rgb, 4, 5, 3, &n);
    cr_expect_eq(image_decode_fit(dst, 3, 8, 8, j, n / 2, "half.jpg", &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "half.jpg: corrupt JPEG"), "%s", err.message);
    free(j);
    /* 20000 pixels a side: refused from the header, before any pixel */
    uint8_t row[1] = {0};
    b = png_encode(row, 1, 1, PNG_COLOR_TYPE_GRAY, 8, 0, NULL, 0, NULL, 0, &n);
    b[16] = 0, b[17] = 0, b[18] = 0x4e, b[19] = 0x20; /* IHDR width 20000 */
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), b + 12, 17);
    for (int k = 0; k < 4; k++) b[29 + k] = (uint8_t)(crc >> (24 - 8 * k));
    cr_expect_eq(image_decode_fit(dst, 1, 8, 8, b, n, "huge.png", &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "huge.png: image of 20000x1 pixels is over the limit"), "%s",
              err.message);
    free(b);
}

/* ---- lsq predict ---- */

static char *run_cmd(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, n = 0, r;
    char *out = malloc(cap);
    while ((r = fread(out + n, 1, cap - 1 - n, p)) > 0) n += r;
    out[n] = 0;
    *status = pclose(p);
    return out;
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static int argmax(const float *z, int n)
{
    int k = 0;
    for (int i = 1; i < n; i++)
        if (z[i] > z[k]) k = i;
    return k;
}

/* A colour model of 3x8x8 classifies an RGBA PNG, a grey 16-bit PNG, a
 * palette PNG and grey and colour JPEGs of other sizes as the engine does on
 * the same fitted pixels; text named .jpg, an empty file and a truncated PNG
 * are each refused with the file and the cause, and the run exits 1. */
Test(image, lsq_predict_takes_png_and_jpeg_of_any_shape, .timeout = 60)
{
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin, "LSQ_BIN is not set (run through make test)");
    const char *text = "{\"input\":[3,8,8],\"layers\":[{\"type\":\"conv2d\",\"name\":\"c\",\"out\":6,"
                       "\"kernel\":3,\"pad\":1},{\"type\":\"relu\",\"name\":\"r\"},{\"type\":"
                       "\"flatten\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";
    json_t *j = json_loads(text, 0, NULL);
    lsq_net net;
    lsq_err err;
    cr_assert_eq(net_build(&net, j, NULL, 10, 2, &err), LSQ_OK, "%s", err.message);
    json_decref(j);
    net_init_params(&net, 7);
    char dir[] = "/tmp/lsq-predict-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char model[96], path[8][96], cmd[2048];
    snprintf(model, sizeof model, "%s/m.lsqm", dir);
    cr_assert_eq(lsqm_save(model, &net, NULL, &err), LSQ_OK, "%s", err.message);
    net_free(&net);
    lsqm_model *m = lsqm_load(model, &err);
    cr_assert_not_null(m, "%s", err.message);

    static const pkind kinds[] = {P_RGBA, P_GREY16, P_PALETTE};
    uint8_t *files[5];
    size_t sizes[5];
    uint8_t ref[H * W * 3];
    int refc;
    for (int i = 0; i < 3; i++) files[i] = png_of_kind(kinds[i], ref, &refc, &sizes[i]);
    uint8_t big[60 * 45 * 3];
    for (int i = 0; i < 60 * 45 * 3; i++) big[i] = (uint8_t)(i * 7 % 251);
    files[3] = jpeg_encode(big, 60, 45, 1, &sizes[3]);
    files[4] = jpeg_encode(big, 45, 60, 3, &sizes[4]);
    static const char *const names[] = {"rgba.png", "grey16.png", "pal.png", "grey.jpg",
                                        "rgb.jpeg", "text.jpg", "empty.png", "cut.png"};
    size_t o = (size_t)snprintf(cmd, sizeof cmd, "'%s' predict '%s'", bin, model);
    for (int i = 0; i < 8; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);
        if (i < 5) write_bytes(path[i], files[i], sizes[i]);
        o += (size_t)snprintf(cmd + o, sizeof cmd - o, " '%s'", path[i]);
    }
    write_bytes(path[5], "just text\n", 10);
    write_bytes(path[6], "", 0);
    write_bytes(path[7], files[0], sizes[0] / 2);
    snprintf(cmd + o, sizeof cmd - o, " 2>&1");
    int status;
    char *out = run_cmd(cmd, &status);
    cr_expect_neq(status, 0, "bad files must fail the run:\n%s", out);
    for (int i = 0; i < 5; i++) {
        uint8_t px[3 * 8 * 8];
        float z[10];
        cr_assert_eq(image_decode_fit(px, 3, 8, 8, files[i], sizes[i], names[i], &err), LSQ_OK,
                     "%s", err.message);
        cr_assert_eq(lsqm_predict(m, px, 1, z, NULL, 1, &err), LSQ_OK, "%s", err.message);
        char line[1024];
        snprintf(line, sizeof line, "%s: class %d ", path[i], argmax(z, 10));
        cr_expect(strstr(out, line), "want '%s' in:\n%s", line, out);
        free(files[i]);
    }
    char want[3][1024];
    snprintf(want[0], sizeof want[0], "lsq predict: %s: not a PNG, JPEG, PGM or IDX file", path[5]);
    snprintf(want[1], sizeof want[1], "lsq predict: %s: empty file (0 bytes)", path[6]);
    snprintf(want[2], sizeof want[2], "lsq predict: %s: corrupt PNG", path[7]);
    for (int i = 0; i < 3; i++) cr_expect(strstr(out, want[i]), "want '%s' in:\n%s", want[i], out);
    free(out);
    lsqm_free(m);
    for (int i = 0; i < 8; i++) unlink(path[i]);
    unlink(model);
    rmdir(dir);
}
