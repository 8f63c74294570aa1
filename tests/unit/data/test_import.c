/* Tests for dataset import and the cache: one loader test per format on
 * small files written here at test time (CIFAR batches, IDX, .npz zips,
 * PNG/JPEG folders as tar, tar.gz and zip, written with libarchive, libpng
 * and libjpeg), the table of refused inputs run through the real `lsq
 * dataset import --json` (each must name its cause and leave no cache
 * behind), corrupt caches, and the loader's normalisation. */
#include <criterion/criterion.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>
#include <png.h>

#include "data/cache.h"
#include "data/data.h"
#include "data/image.h"
#include "data/import.h"

/* ---- helpers ---- */

static char tmp[256];

static void tmp_setup(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/lsq-import-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void tmp_teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_expect_eq(system(cmd), 0);
}

static const char *at(const char *fmt, ...)
{
    static char bufs[8][1024];
    static int k;
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char *b = bufs[k++ % 8];
    snprintf(b, 1024, "%s/%s", tmp, name);
    return b;
}

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    if (n) cr_assert_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
}

static void mkdirs(const char *path)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    cr_assert_eq(system(cmd), 0);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A deterministic byte pattern. */
static uint8_t pat(uint64_t i)
{
    i = (i + 1) * 0x9e3779b97f4a7c15ULL;
    return (uint8_t)(i >> 56);
}

/* Archive entries written with libarchive. */
enum { E_FILE, E_DIR, E_SYMLINK, E_HARDLINK };
typedef struct {
    const char *path;
    const void *data;
    size_t n;
    int type;
    const char *link;
} ent;

/* kind: "tar", "tar.gz", "zip" (deflate) or "zip-store". */
static void write_archive(const char *out, const char *kind, const ent *e, int n)
{
    struct archive *a = archive_write_new();
    if (!strncmp(kind, "tar", 3)) {
        cr_assert_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        if (!strcmp(kind, "tar.gz")) cr_assert_eq(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    } else {
        cr_assert_eq(archive_write_set_format_zip(a), ARCHIVE_OK);
        if (!strcmp(kind, "zip-store"))
            cr_assert_eq(archive_write_set_options(a, "zip:compression=store"), ARCHIVE_OK);
    }
    cr_assert_eq(archive_write_open_filename(a, out), ARCHIVE_OK, "%s", archive_error_string(a));
    for (int i = 0; i < n; i++) {
        struct archive_entry *en = archive_entry_new();
        archive_entry_set_pathname(en, e[i].path);
        archive_entry_set_mtime(en, 1700000000, 0);
        if (e[i].type == E_DIR) {
            archive_entry_set_filetype(en, AE_IFDIR);
            archive_entry_set_perm(en, 0755);
        } else if (e[i].type == E_SYMLINK) {
            archive_entry_set_filetype(en, AE_IFLNK);
            archive_entry_set_perm(en, 0777);
            archive_entry_set_symlink(en, e[i].link);
        } else {
            archive_entry_set_filetype(en, AE_IFREG);
            archive_entry_set_perm(en, 0644);
            if (e[i].type == E_HARDLINK) archive_entry_set_hardlink(en, e[i].link);
            archive_entry_set_size(en, e[i].type == E_HARDLINK ? 0 : (la_int64_t)e[i].n);
        }
        cr_assert_eq(archive_write_header(a, en), ARCHIVE_OK, "%s: %s", e[i].path,
                     archive_error_string(a));
        if (e[i].type == E_FILE && e[i].n)
            cr_assert_eq(archive_write_data(a, e[i].data, e[i].n), (la_ssize_t)e[i].n);
        archive_entry_free(en);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* PNG of (h, w, c) interleaved pixels, in memory (caller frees). */
static uint8_t *png_bytes(const uint8_t *px, int h, int w, int c, size_t *n)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    cr_assert(png_image_write_to_memory(&im, NULL, &size, 0, px, 0, NULL));
    uint8_t *buf = malloc(size);
    cr_assert(png_image_write_to_memory(&im, buf, &size, 0, px, 0, NULL));
    *n = size;
    return buf;
}

/* JPEG (quality 95) of (h, w, c) interleaved pixels (caller frees). */
static uint8_t *jpeg_bytes(const uint8_t *px, int h, int w, int c, size_t *n)
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
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    uint8_t *out = malloc(size);
    memcpy(out, buf, size);
    free(buf);
    *n = size;
    return out;
}

/* A uniform image of (h, w, c) with value v in every channel k: v + 40 k. */
static uint8_t *flat(int h, int w, int c, int v)
{
    uint8_t *px = malloc((size_t)h * w * c);
    for (int i = 0; i < h * w; i++)
        for (int k = 0; k < c; k++) px[i * c + k] = (uint8_t)(v + 40 * k);
    return px;
}

static void expect_stats(const lsq_cache *c)
{
    size_t hw = (size_t)c->h * c->w;
    for (int ch = 0; ch < c->c; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < c->train.n; i++)
            for (size_t p = 0; p < hw; p++) {
                double x = c->train.pixels[((size_t)i * c->c + ch) * hw + p] / 255.0;
                s += x;
                s2 += x * x;
            }
        double n = (double)c->train.n * hw, m = s / n, sd = sqrt(s2 / n - m * m);
        cr_expect(fabs(c->mean[ch] - m) < 1e-9, "mean[%d] %.12f, direct %.12f", ch, c->mean[ch], m);
        cr_expect(fabs(c->std[ch] - sd) < 1e-9, "std[%d] %.12f, direct %.12f", ch, c->std[ch], sd);
    }
}

static void import_ok(lsq_cache *c, const char *src, const import_opts *o)
{
    lsq_err err;
    lsq_err_clear(&err);
    lsq_status st = data_import(c, src, o, &err);
    cr_assert_eq(st, LSQ_OK, "%s: %s (%s)", src, err.message, err.field);
}

/* Writes c to a folder and reads it back: both must be equal. */
static void expect_round_trip(const lsq_cache *c)
{
    lsq_err err;
    lsq_err_clear(&err);
    const char *dir = at("rt-cache");
    cr_assert_eq(cache_write(c, dir, &err), LSQ_OK, "%s", err.message);
    lsq_cache b;
    cr_assert_eq(cache_read(&b, dir, 0, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(b.c, c->c);
    cr_expect_eq(b.h, c->h);
    cr_expect_eq(b.w, c->w);
    cr_expect_eq(b.classes, c->classes);
    cr_expect_str_eq(b.format, c->format);
    cr_expect_eq(b.train.n, c->train.n);
    cr_expect_eq(b.test.n, c->test.n);
    size_t img = (size_t)c->c * c->h * c->w;
    cr_expect_arr_eq(b.train.pixels, c->train.pixels, (size_t)c->train.n * img);
    cr_expect_arr_eq(b.test.pixels, c->test.pixels, (size_t)c->test.n * img);
    cr_expect_arr_eq(b.train.labels, c->train.labels, (size_t)c->train.n * 4);
    cr_expect_arr_eq(b.test.labels, c->test.labels, (size_t)c->test.n * 4);
    for (int k = 0; k < c->classes; k++) cr_expect_str_eq(b.names[k], c->names[k]);
    for (int ch = 0; ch < c->c; ch++) {
        cr_expect_eq(b.mean[ch], c->mean[ch]);
        cr_expect_eq(b.std[ch], c->std[ch]);
    }
    cache_free(&b);
}

/* ---- CIFAR ---- */

static const char *const C10_NAMES[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                          "dog", "frog", "horse", "ship", "truck"};

/* n CIFAR records starting at global index first; c100: 2 label bytes. */
static uint8_t *cifar_batch(int n, int first, int c100, size_t *len)
{
    size_t rec = 3072 + 1 + (size_t)c100;
    uint8_t *b = malloc((size_t)n * rec);
    for (int i = 0; i < n; i++) {
        uint8_t *r = b + (size_t)i * rec;
        int g = first + i;
        if (c100) {
            r[0] = (uint8_t)(g % 20);
            r[1] = (uint8_t)((g * 7) % 100);
        } else {
            r[0] = (uint8_t)(g % 10);
        }
        for (int k = 0; k < 3072; k++) r[1 + c100 + k] = pat((uint64_t)g * 3072 + k);
    }
    *len = (size_t)n * rec;
    return b;
}

static void write_cifar10(const char *dir)
{
    mkdirs(dir);
    size_t n;
    char p[1024];
    uint8_t *b = cifar_batch(3, 0, 0, &n);
    snprintf(p, sizeof p, "%s/data_batch_1.bin", dir);
    write_file(p, b, n);
    free(b);
    b = cifar_batch(2, 3, 0, &n);
    snprintf(p, sizeof p, "%s/data_batch_2.bin", dir);
    write_file(p, b, n);
    free(b);
    b = cifar_batch(2, 100, 0, &n);
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    write_file(p, b, n);
    free(b);
    char names[256] = "";
    for (int k = 0; k < 10; k++) strcat(strcat(names, C10_NAMES[k]), "\n");
    strcat(names, "\n");  /* the real file ends with a blank line */
    snprintf(p, sizeof p, "%s/batches.meta.txt", dir);
    write_file(p, names, strlen(names));
}

TestSuite(import, .init = tmp_setup, .fini = tmp_teardown);

Test(import, cifar10_folder)
{
    write_cifar10(at("c10"));
    import_opts o;
    import_opts_default(&o);
    lsq_cache c;
    import_ok(&c, at("c10"), &o);  /* the format is guessed */
    cr_expect_str_eq(c.format, "cifar10");
    cr_expect_eq(c.c, 3);
    cr_expect_eq(c.h, 32);
    cr_expect_eq(c.w, 32);
    cr_expect_eq(c.classes, 10);
    cr_expect_eq(c.train.n, 5);
    cr_expect_eq(c.test.n, 2);
    for (int k = 0; k < 10; k++) cr_expect_str_eq(c.names[k], C10_NAMES[k]);
    /* batch 2's first record is global record 3: label 3; its green pixel
     * (row 5, column 7) is byte 1024 + 5 * 32 + 7 of the record's pixels */
    cr_expect_eq(c.train.labels[3], 3);
    cr_expect_eq(c.train.pixels[3 * 3072 + 1024 + 5 * 32 + 7], pat(3 * 3072 + 1024 + 5 * 32 + 7));
    cr_expect_eq(c.test.labels[1], 101 % 10);
    cr_expect_eq(c.test.pixels[3072 + 2047], pat(101 * 3072 + 2047));
    expect_stats(&c);
    expect_round_trip(&c);
    cache_free(&c);
}

Test(import, cifar10_tar_gz_matches_the_folder)
{
    write_cifar10(at("c10"));
    ent e[5];
    static uint8_t *bufs[5];
    const char *names[5] = {"data_batch_1.bin", "data_batch_2.bin", "test_batch.bin",
                            "batches.meta.txt", NULL};
    for (int i = 0; i < 4; i++) {
        FILE *f = fopen(at("c10/%s", names[i]), "rb");
        cr_assert_not_null(f);
        bufs[i] = malloc(1 << 16);
        size_t n = fread(bufs[i], 1, 1 << 16, f);
        fclose(f);
        static char paths[4][128];
        snprintf(paths[i], sizeof paths[i], "cifar-10-batches-bin/%s", names[i]);
        e[i] = (ent){paths[i], bufs[i], n, E_FILE, NULL};
    }
    write_archive(at("c10.tar.gz"), "tar.gz", e, 4);
    import_opts o;
    import_opts_default(&o);
    lsq_cache a, b;
    import_ok(&a, at("c10"), &o);
    import_ok(&b, at("c10.tar.gz"), &o);
    cr_expect_str_eq(b.format, "cifar10");
    cr_expect_eq(b.train.n, a.train.n);
    cr_expect_arr_eq(b.train.pixels, a.train.pixels, (size_t)a.train.n * 3072);
    cr_expect_arr_eq(b.test.labels, a.test.labels, (size_t)a.test.n * 4);
    cache_free(&a);
    cache_free(&b);
    for (int i = 0; i < 4; i++) free(bufs[i]);
}

Test(import, cifar100_fine_and_coarse)
{
    mkdirs(at("c100"));
    size_t n;
    uint8_t *b = cifar_batch(6, 0, 1, &n);
    write_file(at("c100/train.bin"), b, n);
    free(b);
    b = cifar_batch(3, 50, 1, &n);
    write_file(at("c100/test.bin"), b, n);
    free(b);
    char names[2048] = "";
    for (int k = 0; k < 100; k++) sprintf(names + strlen(names), "fine_%02d\r\n", k);
    write_file(at("c100/fine_label_names.txt"), names, strlen(names));
    import_opts o;
    import_opts_default(&o);
    lsq_cache c;
    import_ok(&c, at("c100"), &o);
    cr_expect_str_eq(c.format, "cifar100");
    cr_expect_eq(c.classes, 100);
    cr_expect_eq(c.train.n, 6);
    cr_expect_eq(c.test.n, 3);
    cr_expect_eq(c.train.labels[5], 35);  /* fine label of record 5: 5 * 7 */
    cr_expect_eq(c.test.labels[2], (52 * 7) % 100);
    cr_expect_str_eq(c.names[35], "fine_35");
    cr_expect_eq(c.train.pixels[5 * 3072 + 3071], pat(5 * 3072 + 3071));
    expect_stats(&c);
    cache_free(&c);
    o.format = DFMT_CIFAR100;
    o.coarse = 1;
    import_ok(&c, at("c100"), &o);
    cr_expect_eq(c.classes, 20);
    cr_expect_eq(c.train.labels[5], 5);
    cr_expect_eq(c.test.labels[2], 52 % 20);
    cr_expect_str_eq(c.names[7], "7");  /* no coarse_label_names.txt */
    cache_free(&c);
}

/* ---- IDX ---- */

static size_t idx_header(uint8_t *b, int type, int ndim, const uint32_t *d)
{
    b[0] = b[1] = 0;
    b[2] = (uint8_t)type;
    b[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (uint8_t)(d[i] >> 24);
        b[5 + 4 * i] = (uint8_t)(d[i] >> 16);
        b[6 + 4 * i] = (uint8_t)(d[i] >> 8);
        b[7 + 4 * i] = (uint8_t)d[i];
    }
    return 4 + 4 * (size_t)ndim;
}

/* Writes prefix-images (n, 3, h, w) and prefix-labels (labels from lab)
 * into dir, gzipped when gz. */
static void write_idx_split(const char *dir, const char *prefix, int n, int h, int w,
                            const uint8_t *lab, int nlab, int gz)
{
    size_t img = (size_t)3 * h * w;
    uint8_t *b = malloc(32 + (size_t)n * img);
    uint32_t d[4] = {(uint32_t)n, 3, (uint32_t)h, (uint32_t)w};
    size_t k = idx_header(b, 0x08, 4, d);
    for (size_t i = 0; i < (size_t)n * img; i++) b[k + i] = pat(i + (size_t)prefix[1]);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    if (gz) {
        gzFile g = gzopen(p, "wb");
        gzwrite(g, b, (unsigned)(k + (size_t)n * img));
        gzclose(g);
    } else {
        write_file(p, b, k + (size_t)n * img);
    }
    uint32_t dl[1] = {(uint32_t)nlab};
    k = idx_header(b, 0x08, 1, dl);
    memcpy(b + k, lab, (size_t)nlab);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, prefix);
    write_file(p, b, k + (size_t)nlab);
    free(b);
}

Test(import, idx_three_channels_hundred_classes)
{
    mkdirs(at("idx"));
    uint8_t lab[8] = {0, 99, 42, 7, 99, 3, 64, 1};
    write_idx_split(at("idx"), "train", 8, 5, 6, lab, 8, 1);
    write_idx_split(at("idx"), "t10k", 3, 5, 6, lab + 5, 3, 0);
    import_opts o;
    import_opts_default(&o);
    lsq_cache c;
    import_ok(&c, at("idx"), &o);
    cr_expect_str_eq(c.format, "idx");
    cr_expect_eq(c.c, 3);
    cr_expect_eq(c.h, 5);
    cr_expect_eq(c.w, 6);
    cr_expect_eq(c.classes, 100);  /* the largest label + 1 */
    cr_expect_eq(c.train.n, 8);
    cr_expect_eq(c.test.n, 3);
    cr_expect_eq(c.train.labels[1], 99);
    cr_expect_eq(c.test.labels[2], 1);
    /* image 4, channel 2, row 3, column 1 of the N x C x H x W file */
    size_t off = ((size_t)(4 * 3 + 2) * 5 + 3) * 6 + 1;
    cr_expect_eq(c.train.pixels[off], pat(off + 'r'));
    cr_expect_str_eq(c.names[99], "99");
    expect_stats(&c);
    cache_free(&c);

    /* with class names, and converted to grey at another size */
    char names[1024] = "";
    for (int k = 0; k < 100; k++) sprintf(names + strlen(names), "c%d\n", k);
    write_file(at("idx/classes.txt"), names, strlen(names));
    o.channels = 1;
    o.h = 10, o.w = 12;
    import_ok(&c, at("idx"), &o);
    cr_expect_eq(c.c, 1);
    cr_expect_eq(c.h, 10);
    cr_expect_eq(c.w, 12);
    cr_expect_str_eq(c.names[42], "c42");
    cache_free(&c);
}

/* ---- npz ---- */

/* A .npy array: header dict then data. */
static uint8_t *npy(const char *descr, const char *shape, const void *data, size_t n,
                    size_t *len)
{
    char h[256];
    int hl = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                      shape);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    uint8_t *b = malloc((size_t)total + pad + n);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (uint8_t)((hl + 1 + pad) & 0xff);
    b[9] = (uint8_t)((hl + 1 + pad) >> 8);
    memcpy(b + 10, h, (size_t)hl);
    memset(b + 10 + hl, ' ', (size_t)pad);
    b[10 + hl + pad] = '\n';
    memcpy(b + total + pad, data, n);
    *len = (size_t)total + pad + n;
    return b;
}

/* x (n, 4, 5, 3) NHWC or (n, 3, 4, 5) NCHW, labels int64 or uint8 (n, 1). */
static void write_npz(const char *path, int nchw, const char *kind)
{
    int ntr = 4, nte = 2;
    uint8_t xtr[4 * 60], xte[2 * 60];
    for (int i = 0; i < 4 * 60; i++) xtr[i] = pat((uint64_t)i);
    for (int i = 0; i < 2 * 60; i++) xte[i] = pat((uint64_t)i + 1000);
    int64_t ytr64[4] = {2, 0, 5, 1}, yte64[2] = {5, 3};
    uint8_t ytr8[4] = {2, 0, 5, 1}, yte8[2] = {5, 3};
    size_t n[4];
    uint8_t *b[4];
    b[0] = npy("|u1", nchw ? "(4, 3, 4, 5)" : "(4, 4, 5, 3)", xtr, sizeof xtr, &n[0]);
    b[2] = npy("|u1", nchw ? "(2, 3, 4, 5)" : "(2, 4, 5, 3)", xte, sizeof xte, &n[2]);
    if (nchw) {
        b[1] = npy("|u1", "(4, 1)", ytr8, sizeof ytr8, &n[1]);
        b[3] = npy("|u1", "(2, 1)", yte8, sizeof yte8, &n[3]);
    } else {
        b[1] = npy("<i8", "(4,)", ytr64, sizeof ytr64, &n[1]);
        b[3] = npy("<i8", "(2,)", yte64, sizeof yte64, &n[3]);
    }
    (void)ntr, (void)nte;
    ent e[4] = {{"x_train.npy", b[0], n[0], E_FILE, NULL},
                {"y_train.npy", b[1], n[1], E_FILE, NULL},
                {"x_test.npy", b[2], n[2], E_FILE, NULL},
                {"y_test.npy", b[3], n[3], E_FILE, NULL}};
    write_archive(path, kind, e, 4);
    for (int i = 0; i < 4; i++) free(b[i]);
}

Test(import, npz_nhwc_and_nchw)
{
    write_npz(at("hwc.npz"), 0, "zip");
    write_npz(at("chw.npz"), 1, "zip-store");
    import_opts o;
    import_opts_default(&o);
    lsq_cache a, b;
    import_ok(&a, at("hwc.npz"), &o);
    import_ok(&b, at("chw.npz"), &o);
    cr_expect_str_eq(a.format, "npz");
    cr_expect_eq(a.c, 3);
    cr_expect_eq(a.h, 4);
    cr_expect_eq(a.w, 5);
    cr_expect_eq(b.c, 3);
    cr_expect_eq(b.h, 4);
    cr_expect_eq(b.w, 5);
    cr_expect_eq(a.classes, 6);
    cr_expect_eq(a.train.n, 4);
    cr_expect_eq(a.test.n, 2);
    cr_expect_eq(a.train.labels[2], 5);
    cr_expect_eq(b.test.labels[1], 3);
    /* NHWC: image 1, row 2, column 3, channel 1 lands in plane 1 */
    cr_expect_eq(a.train.pixels[60 + 1 * 20 + 2 * 5 + 3], pat(60 + (2 * 5 + 3) * 3 + 1));
    /* NCHW is stored as it is */
    cr_expect(b.train.pixels[0] == pat(0) && b.train.pixels[1] == pat(1) && b.train.pixels[2] == pat(2));
    cr_expect_eq(b.test.pixels[119], pat(1119));
    expect_stats(&a);
    expect_stats(&b);
    cache_free(&a);
    cache_free(&b);
}

/* ---- image folders ---- */

/* An image folder archive: cat (3 PNG, colour), dog (2 JPEG, colour) and
 * bird (3 PNG, grey), of mixed sizes; pixels uniform per image. */
static void write_folder_archive(const char *path, const char *kind, const char *root)
{
    static uint8_t *bufs[16];
    static char paths[16][128];
    ent e[16];
    int n = 0;
    struct {
        const char *cls, *file;
        int h, w, c, v, jpeg;
    } im[] = {
        {"cat", "a.png", 8, 8, 3, 10, 0},   {"cat", "b.png", 16, 12, 3, 20, 0},
        {"cat", "c.PNG", 4, 4, 3, 30, 0},   {"dog", "x.jpg", 24, 24, 3, 100, 1},
        {"dog", "y.jpeg", 9, 7, 3, 120, 1}, {"bird", "1.png", 8, 8, 1, 200, 0},
        {"bird", "2.png", 5, 5, 1, 210, 0}, {"bird", "3.png", 6, 10, 1, 220, 0},
    };
    snprintf(paths[n], sizeof paths[n], "%s%sdog/", root, *root ? "/" : "");
    e[n] = (ent){paths[n], NULL, 0, E_DIR, NULL};
    n++;
    for (size_t i = 0; i < sizeof im / sizeof *im; i++) {
        uint8_t *px = flat(im[i].h, im[i].w, im[i].c, im[i].v);
        size_t len;
        bufs[n] = im[i].jpeg ? jpeg_bytes(px, im[i].h, im[i].w, im[i].c, &len)
                             : png_bytes(px, im[i].h, im[i].w, im[i].c, &len);
        free(px);
        snprintf(paths[n], sizeof paths[n], "%s%s%s/%s", root, *root ? "/" : "", im[i].cls,
                 im[i].file);
        e[n] = (ent){paths[n], bufs[n], len, E_FILE, NULL};
        n++;
    }
    static const char readme[] = "not an image";
    snprintf(paths[n], sizeof paths[n], "%s%sREADME.txt", root, *root ? "/" : "");
    e[n] = (ent){paths[n], readme, sizeof readme, E_FILE, NULL};
    n++;
    e[n] = (ent){"__MACOSX/cat/._a.png", readme, sizeof readme, E_FILE, NULL};
    n++;
    write_archive(path, kind, e, n);
    for (int i = 0; i < n; i++) {
        if (e[i].type == E_FILE && e[i].data != readme) free(bufs[i]);
        bufs[i] = NULL;
    }
}

static void check_folder(const lsq_cache *c)
{
    cr_expect_str_eq(c->format, "folder");
    cr_expect_eq(c->classes, 3);
    cr_expect_str_eq(c->names[0], "bird");
    cr_expect_str_eq(c->names[1], "cat");
    cr_expect_str_eq(c->names[2], "dog");
    cr_expect_eq(c->c, 3);
    cr_expect_eq(c->h, 8);
    cr_expect_eq(c->w, 6);
    /* test fraction 0.5: round(1.5) = 2 of bird and cat, 1 of dog */
    cr_expect_eq(c->test.n, 5);
    cr_expect_eq(c->train.n, 3);
    long ht[3], hs[3];
    cache_histogram(c, &c->train, ht);
    cache_histogram(c, &c->test, hs);
    cr_expect(ht[0] == 1 && ht[1] == 1 && ht[2] == 1, "train %ld %ld %ld", ht[0], ht[1], ht[2]);
    cr_expect(hs[0] == 2 && hs[1] == 2 && hs[2] == 1, "test %ld %ld %ld", hs[0], hs[1], hs[2]);
    /* every image was uniform, so it stays uniform after resizing: grey
     * replicated to 3 channels, PNG exact, JPEG within a few levels */
    const lsq_dataset *sp[2] = {&c->train, &c->test};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < sp[s]->n; i++) {
            const uint8_t *p = sp[s]->pixels + (size_t)i * 3 * 48;
            int l = sp[s]->labels[i];
            for (int k = 0; k < 3; k++) {
                int v0 = p[k * 48];
                for (int q = 1; q < 48; q++)
                    cr_expect(abs(p[k * 48 + q] - v0) <= (l == 2 ? 3 : 0),
                              "class %d image %d channel %d not uniform", l, i, k);
                if (l == 0) cr_expect(v0 == 200 || v0 == 210 || v0 == 220, "bird %d", v0);
                if (l == 0 && k > 0) cr_expect_eq(p[k * 48], p[0]);
                if (l == 1) cr_expect_eq(p[k * 48] % 10, 0);
                if (l == 1) cr_expect_eq((p[k * 48] - p[0]) / 40, k);
                if (l == 2) cr_expect(abs(v0 - (p[0] + 40 * k)) <= 3 || k == 0);
            }
        }
}

Test(import, folder_tar_targz_zip_and_dir)
{
    import_opts o;
    import_opts_default(&o);
    o.h = 8, o.w = 6, o.channels = 3, o.test_fraction = 0.5, o.seed = 7;
    const char *kinds[] = {"tar", "tar.gz", "zip"};
    lsq_cache first;
    memset(&first, 0, sizeof first);
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "pets.%s", kinds[k]);
        write_folder_archive(at("%s", name), kinds[k], k == 1 ? "pets" : "");
        lsq_cache c;
        import_ok(&c, at("%s", name), &o);
        check_folder(&c);
        if (k == 0) {
            expect_stats(&c);
            first = c;
        } else {
            /* the same split and order, whatever the archive and its root */
            cr_expect_arr_eq(c.train.labels, first.train.labels, 3 * 4);
            cr_expect_arr_eq(c.test.labels, first.test.labels, 5 * 4);
            cache_free(&c);
        }
    }
    /* a folder on disk */
    mkdirs(at("dir/cat"));
    mkdirs(at("dir/dog"));
    size_t n;
    uint8_t *px = flat(4, 4, 3, 50), *b = png_bytes(px, 4, 4, 3, &n);
    write_file(at("dir/cat/1.png"), b, n);
    write_file(at("dir/cat/2.png"), b, n);
    write_file(at("dir/dog/1.png"), b, n);
    write_file(at("dir/dog/2.png"), b, n);
    free(b);
    free(px);
    import_opts_default(&o);
    o.test_fraction = 0.5;
    lsq_cache c;
    import_ok(&c, at("dir"), &o);
    cr_expect_eq(c.classes, 2);
    cr_expect_eq(c.h, 4);
    cr_expect_eq(c.train.n, 2);
    cr_expect_eq(c.test.n, 2);
    cr_expect_eq(c.train.pixels[47], 130);  /* blue of a uniform (50, 90, 130) image */
    cache_free(&c);
    cache_free(&first);
}

Test(import, resize_area_bilinear_and_grey_exact)
{
    /* a 4x4 grey image shrunk to 2x2 is the mean of each 2x2 block */
    uint8_t src[16] = {0, 10, 200, 210, 20, 30, 220, 230, 1, 3, 5, 7, 9, 11, 13, 15};
    uint8_t dst[12];
    cr_assert_eq(image_fit(dst, 1, 2, 2, src, 1, 4, 4, 1), 0);
    cr_expect_arr_eq(dst, ((uint8_t[]){15, 215, 6, 10}), 4);
    /* 1x2 grown to 1x4: bilinear between half-pixel centres, edges clamped */
    uint8_t two[2] = {0, 100};
    cr_assert_eq(image_fit(dst, 1, 1, 4, two, 1, 1, 2, 1), 0);
    cr_expect_arr_eq(dst, ((uint8_t[]){0, 25, 75, 100}), 4);
    /* colour to grey with BT.601 weights; grey to colour replicates */
    uint8_t rgb[3] = {100, 150, 200}, g = 0;
    cr_assert_eq(image_fit(&g, 1, 1, 1, rgb, 3, 1, 1, 0), 0);
    cr_expect_eq(g, 141);  /* (29900 + 88050 + 22800 + 500) / 1000 */
    cr_assert_eq(image_fit(dst, 3, 1, 1, &g, 1, 1, 1, 0), 0);
    cr_expect_arr_eq(dst, ((uint8_t[]){141, 141, 141}), 3);
    /* interleaved (H, W, C) to planes */
    uint8_t hwc[6] = {1, 2, 3, 4, 5, 6};
    cr_assert_eq(image_fit(dst, 3, 1, 2, hwc, 3, 1, 2, 0), 0);
    cr_expect_arr_eq(dst, ((uint8_t[]){1, 4, 2, 5, 3, 6}), 6);
}

Test(import, decoders_read_back_what_was_written)
{
    uint8_t px[5 * 7 * 3];
    for (int i = 0; i < 5 * 7 * 3; i++) px[i] = pat((uint64_t)i);
    size_t n;
    uint8_t *b = png_bytes(px, 5, 7, 3, &n);
    lsq_image im;
    lsq_err err;
    cr_assert_eq(image_decode(&im, b, n, "t.png", 0, 0, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(im.h, 5);
    cr_expect_eq(im.w, 7);
    cr_expect_eq(im.c, 3);
    cr_expect_arr_eq(im.px, px, sizeof px);
    image_free(&im);
    free(b);
    uint8_t *big = flat(64, 64, 3, 77);
    b = jpeg_bytes(big, 64, 64, 3, &n);
    /* a hint of 8x8 decodes at 1/8 scale */
    cr_assert_eq(image_decode(&im, b, n, "t.jpg", 8, 8, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(im.h, 8);
    cr_expect_eq(im.w, 8);
    cr_expect(abs(im.px[0] - 77) <= 2 && abs(im.px[2] - 157) <= 2, "%d %d", im.px[0], im.px[2]);
    image_free(&im);
    free(b);
    free(big);
}

/* ---- refusals, through `lsq dataset import --json` ---- */

/* Runs lsq with args; stdout into out. Returns the exit status. */
static int run_lsq(char *out, size_t cap, const char *args)
{
    const char *bin = getenv("LSQ_BIN");
    if (!bin) bin = "build/lsq";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", bin, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Imports src into a fresh folder and expects a refusal whose message holds
 * needle, the error as one JSON object, and no cache (nor folder) left. */
static void expect_refused(const char *src, const char *extra, const char *needle)
{
    static int k;
    const char *out = at("out%d", k++);
    char args[3000], buf[8192];
    snprintf(args, sizeof args, "dataset import '%s' --out '%s' --json %s", src, out,
             extra ? extra : "");
    int rc = run_lsq(buf, sizeof buf, args);
    cr_expect_eq(rc, 1, "%s: exit %d: %s", src, rc, buf);
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    cr_assert_not_null(j, "%s: not one JSON object: %s", src, buf);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    cr_assert_not_null(msg, "%s: no error.message in %s", src, buf);
    cr_expect_not_null(code);
    cr_expect(strstr(msg, needle), "%s: '%s' not in: %s", src, needle, msg);
    cr_expect(!exists(out), "%s: the output folder %s was left behind", src, out);
    json_decref(j);
}

static void png_entry(ent *e, const char *path, int h, int w, int c, int v)
{
    uint8_t *px = flat(h, w, c, v);
    size_t n;
    e->data = png_bytes(px, h, w, c, &n);
    e->n = n;
    e->path = path;
    e->type = E_FILE;
    e->link = NULL;
    free(px);
}

Test(import, refusals_name_the_cause_and_leave_nothing)
{
    ent good[2];
    png_entry(&good[0], "cat/a.png", 4, 4, 3, 10);
    png_entry(&good[1], "dog/b.png", 4, 4, 3, 20);
    ent e[4];

    /* a truncated .tar.gz */
    e[0] = good[0], e[1] = good[1];
    write_archive(at("t.tar.gz"), "tar.gz", e, 2);
    struct stat sb;
    stat(at("t.tar.gz"), &sb);
    cr_assert_eq(truncate(at("t.tar.gz"), sb.st_size / 2), 0);
    expect_refused(at("t.tar.gz"), "--format folder", "truncated or corrupt archive");

    /* an entry with '..', and an absolute one */
    e[2] = good[0];
    e[2].path = "cat/../../evil.png";
    write_archive(at("dots.tar"), "tar", e, 3);
    expect_refused(at("dots.tar"), "--format folder", "'..' component");
    e[2].path = "/etc/evil.png";
    write_archive(at("abs.tar"), "tar", e, 3);
    expect_refused(at("abs.tar"), "--format folder", "an absolute path");

    /* a symlink and a hardlink */
    e[2] = (ent){"cat/link.png", NULL, 0, E_SYMLINK, "/etc/passwd"};
    write_archive(at("sym.tar"), "tar", e, 3);
    expect_refused(at("sym.tar"), "--format folder", "a symlink");
    e[2] = (ent){"cat/hard.png", NULL, 0, E_HARDLINK, "cat/a.png"};
    write_archive(at("hard.tar"), "tar", e, 3);
    expect_refused(at("hard.tar"), "--format folder", "a hardlink");

    /* a bomb: 4 MB of zeros is a few KB of .tar.gz, over a 1 MB cap */
    uint8_t *zeros = calloc(4 << 20, 1);
    e[2] = (ent){"cat/zeros.png", zeros, 4 << 20, E_FILE, NULL};
    write_archive(at("bomb.tar.gz"), "tar.gz", e, 3);
    stat(at("bomb.tar.gz"), &sb);
    cr_expect_lt(sb.st_size, 64 << 10);
    expect_refused(at("bomb.tar.gz"), "--format folder --max-bytes 1000000",
                   "decompression bomb");
    /* entries each under the cap that expand past it together: not even
     * images, so the importer skips them, and counts them all the same */
    ent many[5] = {good[0], good[1], {"cat/z1.bin", zeros, 600000, E_FILE, NULL},
                   {"cat/z2.bin", zeros, 600000, E_FILE, NULL},
                   {"dog/z3.bin", zeros, 600000, E_FILE, NULL}};
    write_archive(at("bomb2.tar.gz"), "tar.gz", many, 5);
    expect_refused(at("bomb2.tar.gz"), "--format folder --max-bytes 1000000",
                   "expands past 1000000 bytes in all");
    write_archive(at("bomb3.zip"), "zip", many, 5);
    expect_refused(at("bomb3.zip"), "--format folder --max-bytes 1000000",
                   "decompression bomb");
    free(zeros);
    /* and a header that declares more than the default per-entry cap (1 GiB)
     * is refused before anything is read */
    uint8_t hdr[1024];
    memset(hdr, 0, sizeof hdr);
    strcpy((char *)hdr, "cat/huge.png");
    memcpy(hdr + 100, "0000644", 8);
    memcpy(hdr + 108, "0000000", 8);
    memcpy(hdr + 116, "0000000", 8);
    memcpy(hdr + 124, "77777777777", 12);  /* 8 GiB - 1 */
    memcpy(hdr + 136, "14516415400", 12);
    hdr[156] = '0';
    memcpy(hdr + 257, "ustar", 6);
    memcpy(hdr + 263, "00", 2);
    memset(hdr + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += hdr[i];
    snprintf((char *)hdr + 148, 8, "%06o", sum);
    hdr[155] = ' ';
    write_file(at("huge.tar"), hdr, sizeof hdr);
    expect_refused(at("huge.tar"), "--format folder", "declares");

    /* a corrupt PNG: flip a byte of its image data (the chunk CRC fails) */
    ent bad = good[0];
    uint8_t *copy = malloc(bad.n);
    memcpy(copy, bad.data, bad.n);
    copy[bad.n - 20] ^= 0x5a;
    bad.data = copy;
    bad.path = "cat/broken.png";
    e[2] = bad;
    write_archive(at("png.zip"), "zip", e, 3);
    expect_refused(at("png.zip"), "", "corrupt PNG");
    free(copy);

    /* a "JPEG" that is really text */
    static const char text[] = "hello, I am not a picture\n";
    e[2] = (ent){"dog/c.jpg", text, sizeof text, E_FILE, NULL};
    write_archive(at("text.zip"), "zip", e, 3);
    expect_refused(at("text.zip"), "", "not a PNG or JPEG image");

    /* grey and colour images without --channels; fine with it */
    ent grey;
    png_entry(&grey, "dog/g.png", 4, 4, 1, 99);
    e[2] = grey;
    write_archive(at("mixed.tar"), "tar", e, 3);
    expect_refused(at("mixed.tar"), "", "mixed channel counts");
    char buf[8192], args[2048];
    snprintf(args, sizeof args, "dataset import '%s' --out '%s' --json --channels 1 "
             "--test-fraction 0.5", at("mixed.tar"), at("mixed-ok"));
    cr_expect_eq(run_lsq(buf, sizeof buf, args), 0, "%s", buf);
    cr_expect(exists(at("mixed-ok/" CACHE_FILE)));
    free((void *)grey.data);

    /* images of different sizes without --size */
    ent other;
    png_entry(&other, "dog/o.png", 5, 4, 3, 1);
    e[2] = other;
    write_archive(at("sizes.tar"), "tar", e, 3);
    expect_refused(at("sizes.tar"), "", "different sizes");
    free((void *)other.data);

    /* a class folder with no images: an empty folder entry, or only text */
    e[2] = (ent){"bird/", NULL, 0, E_DIR, NULL};
    write_archive(at("empty.tar"), "tar", e, 3);
    expect_refused(at("empty.tar"), "", "class folder 'bird' has no images");
    e[2] = (ent){"fish/notes.txt", text, sizeof text, E_FILE, NULL};
    write_archive(at("empty.zip"), "zip", e, 3);
    expect_refused(at("empty.zip"), "", "class folder 'fish' has no images");

    /* an image outside any class folder, and folders at different depths */
    e[2] = (ent){"loose.png", good[0].data, good[0].n, E_FILE, NULL};
    write_archive(at("loose.tar"), "tar", e, 3);
    expect_refused(at("loose.tar"), "", "not inside a class folder");

    /* CIFAR: a label out of range; a truncated batch */
    write_cifar10(at("c10bad"));
    size_t n;
    uint8_t *b = cifar_batch(2, 0, 0, &n);
    b[3073] = 12;  /* the second record's label */
    write_file(at("c10bad/test_batch.bin"), b, n);
    expect_refused(at("c10bad"), "", "record 1 has label 12, not below 10");
    write_file(at("c10bad/test_batch.bin"), b, n - 100);
    expect_refused(at("c10bad"), "", "not a whole number of 3073-byte CIFAR records");
    free(b);

    /* IDX: image and label counts differ; a label past the class names */
    mkdirs(at("idxbad"));
    uint8_t lab[4] = {0, 1, 2, 3};
    write_idx_split(at("idxbad"), "train", 4, 2, 2, lab, 3, 0);
    write_idx_split(at("idxbad"), "t10k", 2, 2, 2, lab, 2, 0);
    expect_refused(at("idxbad"), "", "holds 4 images but");
    write_idx_split(at("idxbad"), "train", 4, 2, 2, lab, 4, 0);
    write_file(at("idxbad/classes.txt"), "a\nb\n", 4);
    expect_refused(at("idxbad"), "", "2 class names, but the labels go up to 3");

    /* npz: a float array, and counts that differ */
    float f[4] = {0};
    size_t ln;
    uint8_t *y = npy("<f4", "(4,)", f, sizeof f, &ln);
    write_npz(at("z.npz"), 0, "zip");
    ent ze[4];
    uint8_t *xb = npy("|u1", "(4, 2, 2)", f, 16, &n);
    ze[0] = (ent){"x_train.npy", xb, n, E_FILE, NULL};
    ze[1] = (ent){"y_train.npy", y, ln, E_FILE, NULL};
    ze[2] = (ent){"x_test.npy", xb, n, E_FILE, NULL};
    ze[3] = (ent){"y_test.npy", y, ln, E_FILE, NULL};
    write_archive(at("float.npz"), "zip", ze, 4);
    expect_refused(at("float.npz"), "", "is not an integer type");
    free(y);
    uint8_t ys[4] = {0, 1, 2, 1};
    size_t l3;
    y = npy("|u1", "(4,)", ys, 4, &ln);
    uint8_t *y3 = npy("|u1", "(3,)", ys, 3, &l3);
    ze[1] = (ent){"y_train.npy", y3, l3, E_FILE, NULL};
    ze[3] = (ent){"y_test.npy", y, ln, E_FILE, NULL};
    write_archive(at("count.npz"), "zip", ze, 4);
    expect_refused(at("count.npz"), "", "holds 4 images but");
    free(y);
    free(y3);
    free(xb);

    /* not an archive at all, and nothing to guess a format from */
    write_file(at("plain.tar"), text, sizeof text);
    expect_refused(at("plain.tar"), "--format folder", "not a tar or zip archive");
    mkdirs(at("nothing"));
    expect_refused(at("nothing"), "", "cannot tell its format");
    expect_refused(at("missing"), "", "no such file");

    free((void *)good[0].data);
    free((void *)good[1].data);
}

Test(import, cli_json_summary)
{
    write_cifar10(at("c10"));
    char buf[16384], args[2048];
    snprintf(args, sizeof args, "dataset import '%s' --out '%s' --json", at("c10"), at("cache"));
    cr_assert_eq(run_lsq(buf, sizeof buf, args), 0, "%s", buf);
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    cr_assert_not_null(j, "not JSON: %s", buf);
    cr_expect_str_eq(json_string_value(json_object_get(j, "format")), "cifar10");
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(j, "shape"), 0)), 3);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "counts"), "train")), 5);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "counts"), "test")), 2);
    json_t *cls = json_object_get(j, "classes");
    cr_assert_eq(json_array_size(cls), 10);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(cls, 4), "name")), "deer");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(cls, 4), "train")), 1);
    cr_expect_eq(json_array_size(json_object_get(j, "mean")), 3);
    cr_expect_eq(json_array_size(json_object_get(j, "std")), 3);
    json_decref(j);
    /* info reads the same summary back */
    snprintf(args, sizeof args, "dataset info '%s' --json", at("cache"));
    char buf2[16384];
    cr_assert_eq(run_lsq(buf2, sizeof buf2, args), 0, "%s", buf2);
    json_t *a = json_loads(buf, 0, &je), *b = json_loads(buf2, 0, &je);
    cr_expect(json_equal(a, b), "import and info summaries differ:\n%s\n%s", buf, buf2);
    json_decref(a);
    json_decref(b);
}

/* lsq dataset samples: one row per class, the first training images of
 * the class, then test images, each at its own place in the grid; classes
 * without images stay white. */
Test(import, cli_samples_grid_png)
{
    write_cifar10(at("c10"));
    char buf[4096], args[2048];
    snprintf(args, sizeof args, "dataset import '%s' --out '%s' --json", at("c10"), at("cache"));
    cr_assert_eq(run_lsq(buf, sizeof buf, args), 0, "%s", buf);
    snprintf(args, sizeof args, "dataset samples '%s' --out '%s' --per-class 2 --json",
             at("cache"), at("s.png"));
    cr_assert_eq(run_lsq(buf, sizeof buf, args), 0, "%s", buf);
    json_t *j = json_loads(buf, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", buf);
    cr_expect_eq(json_integer_value(json_object_get(j, "width")), 2 + 2 * 34);
    cr_expect_eq(json_integer_value(json_object_get(j, "height")), 2 + 10 * 34);
    json_decref(j);
    FILE *f = fopen(at("s.png"), "rb");
    cr_assert_not_null(f);
    static uint8_t png[1 << 20];
    size_t n = fread(png, 1, sizeof png, f);
    fclose(f);
    lsq_image im;
    lsq_err err;
    cr_assert_eq(image_decode(&im, png, n, "s.png", 0, 0, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(im.c, 3);
    cr_assert_eq(im.w, 70);
    cr_assert_eq(im.h, 342);
    /* (y, x) of the grid -> the pixel of image g (CIFAR planes: R, G, B) */
    struct { int y, x, g; } at_[] = {{2, 2, 0}, {2, 36, 100}, {36, 2, 1}, {36, 36, 101},
                                     {2 + 4 * 34 + 5, 2 + 7, 4}};
    for (size_t i = 0; i < sizeof at_ / sizeof *at_; i++) {
        int dy = (at_[i].y - 2) % 34, dx = (at_[i].x - 2) % 34;
        const uint8_t *px = im.px + ((size_t)at_[i].y * 70 + (size_t)at_[i].x) * 3;
        for (int c = 0; c < 3; c++)
            cr_expect_eq(px[c], pat((uint64_t)at_[i].g * 3072 + (uint64_t)c * 1024 + dy * 32 + dx),
                         "cell of image %d, channel %d", at_[i].g, c);
    }
    /* class 5 has no image: white; so is the gap */
    const uint8_t *w5 = im.px + ((size_t)(2 + 5 * 34 + 3) * 70 + 5) * 3;
    cr_expect(w5[0] == 255 && w5[1] == 255 && w5[2] == 255);
    const uint8_t *gap = im.px + ((size_t)35 * 70 + 5) * 3;
    cr_expect(gap[0] == 255 && gap[1] == 255 && gap[2] == 255);
    image_free(&im);
    /* a folder without a cache is an error naming it, as JSON */
    snprintf(args, sizeof args, "dataset samples '%s' --out '%s' --json", at("c10"), at("t.png"));
    cr_expect_eq(run_lsq(buf, sizeof buf, args), 1, "%s", buf);
    cr_expect(strstr(buf, "\"error\""), "%s", buf);
    cr_expect(!exists(at("t.png")));
}

/* ---- corrupt caches ---- */

static void corrupt_at(const char *path, long off, int delta)
{
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, off, off < 0 ? SEEK_END : SEEK_SET), 0);
    int c = fgetc(f);
    cr_assert_eq(fseek(f, off, off < 0 ? SEEK_END : SEEK_SET), 0);
    fputc((c + delta) & 0xff, f);
    fclose(f);
}

Test(import, corrupt_caches_are_errors)
{
    write_cifar10(at("c10"));
    import_opts o;
    import_opts_default(&o);
    lsq_cache c;
    import_ok(&c, at("c10"), &o);
    lsq_err err;
    cr_assert_eq(cache_write(&c, at("cache"), &err), LSQ_OK, "%s", err.message);
    cache_free(&c);
    char file[1024], good[1024], cmd[4096];
    snprintf(file, sizeof file, "%s", at("cache/" CACHE_FILE));
    snprintf(good, sizeof good, "%s", at("good.lsqd"));
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", file, good);
    cr_assert_eq(system(cmd), 0);
    struct {
        long off;
        int truncate_to;  /* > 0: truncate instead */
        const char *needle;
    } cases[] = {
        {0, 0, "wrong magic"},
        {4, 0, "cache version"},
        {8, 0, "header"},        /* header length */
        {20, 0, "header"},       /* inside the JSON */
        {-500, 0, "checksum"},   /* a pixel */
        {-6, 0, "checksum"},     /* a label */
        {0, 100, "truncated"},
        {0, 1000, "truncated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", good, file);
        cr_assert_eq(system(cmd), 0);
        if (cases[i].truncate_to) {
            struct stat sb;
            stat(file, &sb);
            cr_assert_eq(truncate(file, sb.st_size - cases[i].truncate_to), 0);
        } else {
            corrupt_at(file, cases[i].off, 1);
        }
        lsq_cache r;
        memset(&r, 0x5c, sizeof r);
        lsq_err e2;
        lsq_status st = cache_read(&r, at("cache"), 0, &e2);
        cr_expect(st == LSQ_ERR_FORMAT, "case %zu: status %d: %s", i, st, e2.message);
        cr_expect(strstr(e2.message, cases[i].needle), "case %zu: '%s' not in: %s", i,
                  cases[i].needle, e2.message);
        cr_expect_null(r.train.pixels);
        cr_expect_null(r.names);
    }
    /* a label rewritten to 11 with a checksum that matches is still caught */
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", good, file);
    cr_assert_eq(system(cmd), 0);
    FILE *f = fopen(file, "r+b");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    uint8_t *all = malloc((size_t)size);
    fseek(f, 0, SEEK_SET);
    cr_assert_eq(fread(all, 1, (size_t)size, f), (size_t)size);
    all[size - 4 - 2] = 11;  /* the last test label */
    uLong crc = crc32(crc32(0L, Z_NULL, 0), all, (uInt)(size - 4));
    for (int k = 0; k < 4; k++) all[size - 4 + k] = (uint8_t)(crc >> (8 * k));
    fseek(f, 0, SEEK_SET);
    fwrite(all, 1, (size_t)size, f);
    fclose(f);
    free(all);
    lsq_cache r;
    cr_expect_eq(cache_read(&r, at("cache"), 0, &err), LSQ_ERR_FORMAT);
    cr_expect(strstr(err.message, "label 11"), "%s", err.message);
    /* and the CLI says so too */
    char buf[4096], args[1024];
    snprintf(args, sizeof args, "dataset info '%s' --json", at("cache"));
    cr_expect_eq(run_lsq(buf, sizeof buf, args), 1);
    cr_expect(strstr(buf, "\"bad_format\""), "%s", buf);
    cr_expect_eq(cache_read(&r, at("no-such"), 0, &err), LSQ_ERR_IO);
}

/* ---- the loader's normalisation ---- */

Test(loader_norm, normalises_and_pads_with_black)
{
    enum { N = 16, C = 3, H = 6, W = 5 };
    lsq_dataset d = {N, C, H, W, 4, malloc(N * C * H * W), malloc(N * sizeof(int32_t))};
    for (int i = 0; i < N * C * H * W; i++) d.pixels[i] = pat((uint64_t)i);
    for (int i = 0; i < N; i++) d.labels[i] = i % 4;
    double mean[3], std[3];
    cache_stats(&d, mean, std);
    float m[3], s[3];
    for (int k = 0; k < 3; k++) m[k] = (float)mean[k], s[k] = (float)std[k];
    lsq_loader plain, norm, aug;
    cr_assert_eq(loader_init(&plain, &d, 8, 0, 1, 0, 0, NULL), LSQ_OK);
    cr_assert_eq(loader_init(&norm, &d, 8, 0, 1, 0, 0, NULL), LSQ_OK);
    cr_assert_eq(loader_init(&aug, &d, 8, 1, 3, 2, 1, NULL), LSQ_OK);
    loader_set_normalize(&norm, m, s);
    loader_set_normalize(&aug, m, s);
    static float xp[8 * C * H * W], xn[8 * C * H * W], xa[N * C * H * W];
    int32_t y[N];
    loader_fill(&plain, 0, xp, y);
    loader_fill(&norm, 0, xn, y);
    double sum[3] = {0};
    for (int i = 0; i < 8 * C * H * W; i++) {
        int k = (i / (H * W)) % C;
        float want = (xp[i] - m[k]) / s[k];
        cr_expect(fabsf(xn[i] - want) < 1e-5f, "pixel %d: %f, want %f", i, xn[i], want);
        cr_expect_eq(xp[i], d.pixels[i] / 255.0f);
        sum[k] += xn[i];
    }
    /* over the whole set the normalised channels have mean 0 */
    int pos = 0;
    for (int b = 0; b < loader_batches(&aug); b++) pos += loader_fill(&aug, b, xa + pos * C * H * W, y + pos);
    cr_assert_eq(pos, N);
    int padded = 0;
    for (int i = 0; i < N * C * H * W; i++) {
        int k = (i / (H * W)) % C;
        float black = -m[k] / s[k];
        padded += xa[i] == black;
        /* every value is a normalised pixel or the normalised black padding */
        cr_expect(xa[i] >= black - 1e-5f && xa[i] <= (1.0f - m[k]) / s[k] + 1e-5f);
    }
    cr_expect_gt(padded, 0, "a padded crop shows black, -mean/std");
    loader_set_normalize(&norm, NULL, NULL);
    loader_fill(&norm, 0, xn, y);
    cr_expect_arr_eq(xn, xp, sizeof xp, "normalisation off is pixel / 255 again");
    loader_free(&plain);
    loader_free(&norm);
    loader_free(&aug);
    dataset_free(&d);
}
