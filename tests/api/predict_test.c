/* POST /api/v1/jobs/{id}/predict with image files: PNG and JPEG of other
 * sizes and channel counts (RGB, RGBA, palette, 16-bit grey; grey and colour
 * JPEG), written here with libpng and libjpeg and sent as base64, each
 * answered with exactly the probabilities that the integer engine gives on
 * the same file decoded and fitted by data/image.h (the job's model.lsqm is
 * downloaded and run here); and every bad image (text named .jpg, an empty
 * string, a truncated PNG or JPEG, not base64, an image over the pixel cap, a
 * body over --max-body) answered with its status and a message naming the
 * image and the cause, with nothing stored. A job trained on normalised
 * inputs gets a model.lsqm, and predict gives it raw pixels. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <jpeglib.h>
#include <png.h>

#include "data/image.h"
#include "deploy/infer.h"
#include "harness.h"

static char *base64(const uint8_t *b, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n / 3 * 4 + 8);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                     (i + 2 < n ? b[i + 2] : 0);
        out[o++] = A[v >> 18 & 63];
        out[o++] = A[v >> 12 & 63];
        out[o++] = i + 1 < n ? A[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? A[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* A PNG through libpng's simplified writer (format: PNG_FORMAT_*, flags
 * such as PNG_FORMAT_FLAG_COLORMAP need a colormap; not used here). */
static uint8_t *png_of(const void *px, int h, int w, png_uint_32 format, size_t *n)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = format;
    png_alloc_size_t size = 0;
    cr_assert(png_image_write_to_memory(&im, NULL, &size, 0, px, 0, NULL), "%s", im.message);
    uint8_t *buf = malloc(size);
    cr_assert(png_image_write_to_memory(&im, buf, &size, 0, px, 0, NULL), "%s", im.message);
    *n = size;
    return buf;
}

/* An 8-bit palette PNG of 4 colours through libpng's low-level writer. */
typedef struct {
    uint8_t *b;
    size_t n, cap;
} membuf;

static void mem_write(png_structp p, png_bytep d, size_t len)
{
    membuf *m = png_get_io_ptr(p);
    if (m->n + len > m->cap) m->b = realloc(m->b, m->cap = (m->n + len) * 2);
    memcpy(m->b + m->n, d, len);
    m->n += len;
}

static void mem_flush(png_structp p) { (void)p; }

static uint8_t *palette_png(int h, int w, size_t *n)
{
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    membuf m = {NULL, 0, 0};
    png_set_write_fn(p, &m, mem_write, mem_flush);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_PALETTE,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color pal[4] = {{0, 0, 0}, {255, 255, 255}, {200, 30, 40}, {20, 220, 90}};
    png_set_PLTE(p, info, pal, 4);
    png_write_info(p, info);
    uint8_t *row = malloc((size_t)w);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) row[x] = (uint8_t)((x / 3 + y / 5) % 4);
        png_write_row(p, row);
    }
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(row);
    *n = m.n;
    return m.b;
}

static uint8_t *jpeg_of(const uint8_t *px, int h, int w, int c, size_t *n)
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
    jpeg_set_quality(&ci, 90, TRUE);
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

/* A garment-like pattern of (h, w, c): a bright blob on dark. */
static uint8_t *pattern(int h, int w, int c)
{
    uint8_t *px = malloc((size_t)h * w * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double dy = (y + 0.5) / h - 0.5, dx = (x + 0.5) / w - 0.5;
            double v = 255 * exp(-(dx * dx * 6 + dy * dy * 3) * 8);
            for (int k = 0; k < c; k++)
                px[((size_t)y * w + x) * c + k] = (uint8_t)(k == 3 ? 255 : v * (1 - 0.2 * k));
        }
    return px;
}

/* The job's events and artifacts, to check that predicting stored nothing. */
static void job_footprint(lsqd *d, long long job, long long *seq, size_t *artifacts)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", job);
    api_res *r = api(d, "GET", path, NULL, NULL, NULL);
    *seq = json_integer_value(json_object_get(r->json, "last_seq"));
    api_free(r);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/artifacts", job);
    r = api(d, "GET", path, NULL, NULL, NULL);
    *artifacts = json_array_size(json_object_get(r->json, "artifacts"));
    api_free(r);
}

/* Runs spec to success and loads its model.lsqm as downloaded (the caller
 * frees it); *job gets the job's id. */
static lsqm_model *trained_model(lsqd *d, const char *spec, long long *job)
{
    *job = submit_job(d, spec);
    json_t *j = wait_job(d, *job, NULL, 240);
    cr_assert(j, "job %lld did not finish", *job);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
    json_decref(j);
    char path[128], file[400];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/artifacts/model.lsqm", *job);
    api_res *r = api(d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 200, "no model.lsqm: %ld %s", r->status, r->body);
    snprintf(file, sizeof file, "%s/model-%lld.lsqm", d->root, *job);
    FILE *f = fopen(file, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(r->body, 1, r->len, f), r->len);
    fclose(f);
    api_free(r);
    lsq_err err;
    lsqm_model *m = lsqm_load(file, &err);
    cr_assert_not_null(m, "%s", err.message);
    return m;
}

/* A job trained on normalised inputs (dataset.normalize) gets a model.lsqm
 * whose integer engine normalises raw pixels itself: predict takes a JPEG
 * and answers what the engine gives on its fitted raw pixels. */
Test(predict, a_normalised_model_takes_raw_pixels, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long job;
    lsqm_model *m = trained_model(&d, "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{"
                                  "\"normalize\":true,\"train_limit\":2000,\"test_limit\":500},"
                                  "\"pretrain\":{\"epochs\":1},\"train\":{\"epochs\":1},"
                                  "\"quant\":{\"weight_bits\":4}}", &job);
    uint8_t *px = pattern(40, 30, 3);
    size_t n;
    uint8_t *jpg = jpeg_of(px, 40, 30, 3, &n);
    char *b64 = base64(jpg, n);
    json_t *body = json_pack("{s:[s]}", "images", b64);
    char *text = json_dumps(body, JSON_COMPACT), path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/predict", job);
    api_res *r = api(&d, "POST", path, text, NULL, NULL);
    cr_assert_eq(r->status, 200, "%ld %s", r->status, r->body);
    uint8_t in[28 * 28];
    float z[10], p[10];
    lsq_err err;
    cr_assert_eq(image_decode_fit(in, 1, 28, 28, jpg, n, "t.jpg", &err), LSQ_OK, "%s",
                 err.message);
    cr_assert_eq(lsqm_predict(m, in, 1, z, p, 1, &err), LSQ_OK, "%s", err.message);
    json_t *probs = json_object_get(json_array_get(json_object_get(r->json, "predictions"), 0),
                                    "probabilities");
    for (int k = 0; k < 10; k++)
        cr_expect(fabs(json_number_value(json_array_get(probs, (size_t)k)) - p[k]) < 1e-6,
                  "class %d", k);
    api_free(r);
    free(text);
    json_decref(body);
    free(b64);
    free(jpg);
    free(px);
    lsqm_free(m);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

Test(predict, png_and_jpeg_of_any_shape_and_bad_images, .timeout = 300)
{
    lsqd d;
    lsqd_start(&d, NULL);
    long long job;
    lsqm_model *m = trained_model(&d, TINY_SPEC, &job);
    char path[128];
    lsq_err err;
    api_res *r;
    json_t *body;
    char *text;
    int c, h, w, classes;
    lsqm_input_shape(m, &c, &h, &w, &classes);
    cr_assert(c == 1 && h == 28 && w == 28 && classes == 10);

    /* the good files: none of them 28x28 grey 8-bit */
    enum { NGOOD = 6 };
    uint8_t *bytes[NGOOD];
    size_t len[NGOOD];
    const char *what[NGOOD] = {"RGB PNG 56x40", "RGBA PNG 28x28", "16-bit grey PNG 14x20",
                               "palette PNG 33x31", "grey JPEG 90x64", "RGB JPEG 21x35"};
    uint8_t *p3 = pattern(56, 40, 3), *p4 = pattern(28, 28, 4), *p1 = pattern(90, 64, 1);
    uint8_t *pj = pattern(21, 35, 3);
    uint16_t g16[14 * 20];
    for (int i = 0; i < 14 * 20; i++) g16[i] = (uint16_t)(i * 233 % 65536);
    bytes[0] = png_of(p3, 56, 40, PNG_FORMAT_RGB, &len[0]);
    bytes[1] = png_of(p4, 28, 28, PNG_FORMAT_RGBA, &len[1]);
    bytes[2] = png_of(g16, 14, 20, PNG_FORMAT_LINEAR_Y, &len[2]);
    bytes[3] = palette_png(33, 31, &len[3]);
    bytes[4] = jpeg_of(p1, 90, 64, 1, &len[4]);
    bytes[5] = jpeg_of(pj, 21, 35, 3, &len[5]);
    json_t *images = json_array();
    for (int i = 0; i < NGOOD; i++) {
        char *b64 = base64(bytes[i], len[i]);
        if (i == 5) {
            /* a data: URL as a browser's FileReader gives it */
            char *url = malloc(strlen(b64) + 32);
            sprintf(url, "data:image/jpeg;base64,%s", b64);
            json_array_append_new(images, json_string(url));
            free(url);
        } else if (i == 2) {
            /* wrapped at 76 characters a line, as `base64` writes it */
            size_t bl = strlen(b64), o = 0;
            char *wrapped = malloc(bl + bl / 76 + 2);
            for (size_t k = 0; k < bl; k++) {
                wrapped[o++] = b64[k];
                if (k % 76 == 75) wrapped[o++] = '\n';
            }
            wrapped[o] = '\0';
            json_array_append_new(images, json_string(wrapped));
            free(wrapped);
        } else {
            json_array_append_new(images, json_string(b64));
        }
        free(b64);
    }
    body = json_pack("{s:o}", "images", images);
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/predict", job);
    long long seq0;
    size_t arts0;
    job_footprint(&d, job, &seq0, &arts0);
    r = api(&d, "POST", path, text, NULL, NULL);
    free(text);
    cr_assert_eq(r->status, 200, "%ld %s", r->status, r->body);
    json_t *preds = json_object_get(r->json, "predictions");
    cr_assert_eq(json_array_size(preds), NGOOD);
    for (int i = 0; i < NGOOD; i++) {
        uint8_t px[28 * 28];
        float z[10], p[10];
        cr_assert_eq(image_decode_fit(px, 1, 28, 28, bytes[i], len[i], what[i], &err), LSQ_OK,
                     "%s", err.message);
        cr_assert_eq(lsqm_predict(m, px, 1, z, p, 1, &err), LSQ_OK, "%s", err.message);
        json_t *pi = json_array_get(preds, (size_t)i);
        int best = 0;
        for (int k = 1; k < 10; k++)
            if (p[k] > p[best]) best = k;
        cr_expect_eq(json_integer_value(json_object_get(pi, "class")), best, "%s", what[i]);
        json_t *probs = json_object_get(pi, "probabilities");
        for (int k = 0; k < 10; k++) {
            double got = json_number_value(json_array_get(probs, (size_t)k));
            cr_expect(fabs(got - p[k]) < 1e-6, "%s: class %d probability %g, engine %g", what[i],
                      k, got, (double)p[k]);
        }
    }
    api_free(r);

    /* bad images: 422 naming images[i] and the cause */
    uint8_t *huge = malloc(len[2]);
    memcpy(huge, bytes[2], len[2]);
    huge[16] = 0, huge[17] = 0, huge[18] = 0x4e, huge[19] = 0x20; /* IHDR width 20000 */
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), huge + 12, 17);
    for (int k = 0; k < 4; k++) huge[29 + k] = (uint8_t)(crc >> (24 - 8 * k));
    char *text_jpg = base64((const uint8_t *)"just some text, named shoe.jpg\n", 31);
    char *cut_png = base64(bytes[0], len[0] / 2);
    char *cut_jpg = base64(bytes[4], len[4] / 2);
    char *huge_png = base64(huge, len[2]);
    struct {
        const char *image;
        const char *want;
    } bad[] = {
        {text_jpg, "images[1]: not a PNG or JPEG image (31 bytes starting \"just som\")"},
        {"", "images[1]: empty image (0 bytes)"},
        {cut_png, "images[1]: corrupt PNG"},
        {cut_jpg, "images[1]: corrupt JPEG"},
        {"not*base64!", "images[1]: not base64"},
        {huge_png, "images[1]: image of 20000x14 pixels is over the limit"},
    };
    char *good = base64(bytes[1], len[1]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        body = json_pack("{s:[s,s]}", "images", good, bad[i].image);
        text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        r = api(&d, "POST", path, text, NULL, NULL);
        free(text);
        cr_expect_eq(r->status, 422, "%s: %ld %s", bad[i].want, r->status, r->body);
        cr_expect_str_eq(api_err_code(r), "invalid_value", "%s", r->body);
        cr_expect_str_eq(api_err_field(r), "images[1]", "%s", r->body);
        const char *msg = json_string_value(
            json_object_get(json_object_get(r->json, "error"), "message"));
        cr_expect(msg && strstr(msg, bad[i].want), "want '%s' in %s", bad[i].want, r->body);
        api_free(r);
    }
    /* a body over --max-body (1 MiB) is 413 before it is read */
    size_t big = (1u << 20) + 4096;
    char *large = malloc(big + 64);
    int o = sprintf(large, "{\"images\":[\"");
    memset(large + o, 'A', big);
    strcpy(large + o + big, "\"]}");
    r = api(&d, "POST", path, large, NULL, NULL);
    cr_expect_eq(r->status, 413, "%ld %s", r->status, r->body);
    cr_expect_str_eq(api_err_code(r), "body_too_large", "%s", r->body);
    api_free(r);
    free(large);
    /* an empty body */
    r = api(&d, "POST", path, "", NULL, NULL);
    cr_expect_eq(r->status, 400, "%ld %s", r->status, r->body);
    api_free(r);
    /* nothing stored: no event, no artifact */
    long long seq1;
    size_t arts1;
    job_footprint(&d, job, &seq1, &arts1);
    cr_expect_eq(seq1, seq0, "predict added job events");
    cr_expect_eq(arts1, arts0, "predict added artifacts");

    free(good);
    free(text_jpg);
    free(cut_png);
    free(cut_jpg);
    free(huge_png);
    free(huge);
    for (int i = 0; i < NGOOD; i++) free(bytes[i]);
    free(p3);
    free(p4);
    free(p1);
    free(pj);
    lsqm_free(m);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}
