/* Tests for the IDX reader, dataset_load and the batch loader. Files are
 * written under a fresh mkdtemp directory per test and removed afterwards. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data.h"

/* ---- helpers ---- */

static char tmpdir[256];
static char made[32][512];
static int nmade;

static void tmp_setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lsq-data-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    nmade = 0;
}

static void tmp_teardown(void)
{
    for (int i = 0; i < nmade; i++) unlink(made[i]);
    rmdir(tmpdir);
}

static const char *tmp_path(const char *name)
{
    cr_assert_lt(nmade, 32);
    snprintf(made[nmade], sizeof made[nmade], "%s/%s", tmpdir, name);
    return made[nmade++];
}

static void write_plain(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    if (n) cr_assert_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
}

static void write_gz(const char *path, const void *buf, size_t n)
{
    gzFile g = gzopen(path, "wb");
    cr_assert_not_null(g);
    if (n) cr_assert_eq(gzwrite(g, buf, (unsigned)n), (int)n);
    cr_assert_eq(gzclose(g), Z_OK);
}

/* Builds an IDX image in buf: header for dims then payload bytes.
 * Returns the total size. */
static size_t make_idx(uint8_t *buf, int ndim, const uint32_t *dims,
                       const uint8_t *payload, size_t payload_n)
{
    size_t k = 0;
    buf[k++] = 0;
    buf[k++] = 0;
    buf[k++] = 0x08;
    buf[k++] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[k++] = (uint8_t)(dims[i] >> 24);
        buf[k++] = (uint8_t)(dims[i] >> 16);
        buf[k++] = (uint8_t)(dims[i] >> 8);
        buf[k++] = (uint8_t)dims[i];
    }
    if (payload_n) memcpy(buf + k, payload, payload_n);
    return k + payload_n;
}

/* Expects idx_read(path) to fail with code and a message containing each
 * of the NULL-terminated needles; the output must come back zeroed. */
static void expect_fail(const char *path, lsq_status code, const char *needle1,
                        const char *needle2)
{
    idx_array a;
    memset(&a, 0xab, sizeof a);
    lsq_err err = {0};
    lsq_status st = idx_read(&a, path, &err);
    cr_assert_eq(st, code, "status %d, want %d: %s", st, code, err.message);
    cr_assert_eq(err.code, code);
    cr_assert_null(a.data);
    cr_assert_eq(a.count, 0);
    cr_assert_eq(a.ndim, 0);
    cr_assert_str_eq(err.field, path);
    cr_assert(strstr(err.message, path), "message does not name the file: %s",
              err.message);
    if (needle1)
        cr_assert(strstr(err.message, needle1), "'%s' not in: %s", needle1,
                  err.message);
    if (needle2)
        cr_assert(strstr(err.message, needle2), "'%s' not in: %s", needle2,
                  err.message);
}

static const uint32_t DIMS3[3] = {2, 3, 4};
static uint8_t PAY24[24];

static void fill_pay(void)
{
    for (int i = 0; i < 24; i++) PAY24[i] = (uint8_t)(i * 11 + 3);
}

/* ---- idx_read ---- */

TestSuite(idx, .init = tmp_setup, .fini = tmp_teardown);

static void check_roundtrip(const char *path)
{
    idx_array a;
    lsq_err err = {0};
    cr_assert_eq(idx_read(&a, path, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(a.ndim, 3);
    cr_assert_eq(a.dims[0], 2);
    cr_assert_eq(a.dims[1], 3);
    cr_assert_eq(a.dims[2], 4);
    cr_assert_eq(a.count, 24);
    cr_assert_arr_eq(a.data, PAY24, 24);
    idx_free(&a);
    cr_assert_null(a.data);
}

Test(idx, plain_roundtrip)
{
    fill_pay();
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, DIMS3, PAY24, 24);
    const char *p = tmp_path("a-idx3-ubyte");
    write_plain(p, buf, n);
    check_roundtrip(p);
}

Test(idx, gzip_roundtrip)
{
    fill_pay();
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, DIMS3, PAY24, 24);
    const char *p = tmp_path("a-idx3-ubyte.gz");
    write_gz(p, buf, n);
    FILE *f = fopen(p, "rb");
    cr_assert_eq(fgetc(f), 0x1f);  /* really compressed */
    fclose(f);
    check_roundtrip(p);
}

Test(idx, one_dim_and_four_dims)
{
    uint8_t buf[64], pay[16];
    for (int i = 0; i < 16; i++) pay[i] = (uint8_t)(255 - i);
    const uint32_t d1[1] = {16}, d4[4] = {2, 2, 2, 2};
    const char *p = tmp_path("one");
    write_plain(p, buf, make_idx(buf, 1, d1, pay, 16));
    idx_array a;
    cr_assert_eq(idx_read(&a, p, NULL), LSQ_OK);
    cr_assert_eq(a.ndim, 1);
    cr_assert_eq(a.dims[0], 16);
    cr_assert_arr_eq(a.data, pay, 16);
    idx_free(&a);
    const char *q = tmp_path("four");
    write_plain(q, buf, make_idx(buf, 4, d4, pay, 16));
    cr_assert_eq(idx_read(&a, q, NULL), LSQ_OK);
    cr_assert_eq(a.ndim, 4);
    cr_assert_eq(a.count, 16);
    idx_free(&a);
}

Test(idx, missing_file)
{
    const char *p = tmp_path("nope-idx1-ubyte");
    expect_fail(p, LSQ_ERR_IO, "No such file", NULL);
}

Test(idx, directory_is_io_error)
{
    idx_array a;
    lsq_err err = {0};
    cr_assert_eq(idx_read(&a, tmpdir, &err), LSQ_ERR_IO);
    cr_assert(strstr(err.message, tmpdir));
}

Test(idx, empty_file)
{
    const char *p = tmp_path("empty");
    write_plain(p, "", 0);
    expect_fail(p, LSQ_ERR_FORMAT, "truncated IDX header", NULL);
}

Test(idx, truncated_header)
{
    fill_pay();
    uint8_t buf[64];
    make_idx(buf, 3, DIMS3, PAY24, 24);
    const char *p = tmp_path("short-head");
    write_plain(p, buf, 9);  /* magic + 5 of 12 dimension bytes */
    expect_fail(p, LSQ_ERR_FORMAT, "truncated IDX header", "5 of 12");
    const char *q = tmp_path("short-magic");
    write_plain(q, buf, 3);
    expect_fail(q, LSQ_ERR_FORMAT, "truncated IDX header", NULL);
}

Test(idx, truncated_payload)
{
    fill_pay();
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, DIMS3, PAY24, 24);
    const char *p = tmp_path("short-pay");
    write_plain(p, buf, n - 5);
    expect_fail(p, LSQ_ERR_FORMAT, "expected 24 bytes", "got 19");
    const char *q = tmp_path("short-pay.gz");
    write_gz(q, buf, n - 5);
    expect_fail(q, LSQ_ERR_FORMAT, "expected 24 bytes", "got 19");
}

Test(idx, huge_claim_over_tiny_file)
{
    /* Claims 2^31 bytes but holds 10: must fail fast, not allocate 2 GiB. */
    uint8_t buf[64], pay[10] = {0};
    const uint32_t d[2] = {1u << 16, 1u << 15};
    const char *p = tmp_path("huge-claim");
    write_plain(p, buf, make_idx(buf, 2, d, pay, 10));
    expect_fail(p, LSQ_ERR_FORMAT, "expected 2147483648 bytes", "got 10");
}

Test(idx, wrong_magic)
{
    fill_pay();
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, DIMS3, PAY24, 24);
    buf[0] = 0x01;
    const char *p = tmp_path("magic");
    write_plain(p, buf, n);
    expect_fail(p, LSQ_ERR_FORMAT, "not an IDX file", NULL);
}

Test(idx, unsupported_type)
{
    fill_pay();
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, DIMS3, PAY24, 24);
    buf[2] = 0x0D;  /* float */
    const char *p = tmp_path("float");
    write_plain(p, buf, n);
    expect_fail(p, LSQ_ERR_FORMAT, "unsupported IDX data type 0x0D", NULL);
}

Test(idx, bad_ndim)
{
    uint8_t buf[64] = {0, 0, 8, 0};
    const char *p = tmp_path("ndim0");
    write_plain(p, buf, 4);
    expect_fail(p, LSQ_ERR_FORMAT, "dimension count 0", NULL);
    buf[3] = 5;
    const char *q = tmp_path("ndim5");
    write_plain(q, buf, 24);
    expect_fail(q, LSQ_ERR_FORMAT, "dimension count 5", NULL);
}

Test(idx, zero_dim)
{
    uint8_t buf[64];
    const uint32_t d[3] = {2, 0, 4};
    const char *p = tmp_path("zero");
    write_plain(p, buf, make_idx(buf, 3, d, NULL, 0));
    expect_fail(p, LSQ_ERR_FORMAT, "dimension 1 is zero", NULL);
}

Test(idx, overflowing_dims)
{
    uint8_t buf[64];
    /* 2^32 * ... would wrap a 32-bit product; also over the 2 GiB cap. */
    const uint32_t d[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    const char *p = tmp_path("overflow");
    write_plain(p, buf, make_idx(buf, 4, d, NULL, 0));
    expect_fail(p, LSQ_ERR_FORMAT, "too large", NULL);
    /* Each dim small enough, the product 2^32 (wraps to 0 in 32 bits). */
    const uint32_t e[2] = {1u << 16, 1u << 16};
    const char *q = tmp_path("overflow2");
    write_plain(q, buf, make_idx(buf, 2, e, NULL, 0));
    expect_fail(q, LSQ_ERR_FORMAT, "too large", NULL);
}

Test(idx, trailing_bytes)
{
    fill_pay();
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, DIMS3, PAY24, 24);
    buf[n++] = 0x42;
    const char *p = tmp_path("trail");
    write_plain(p, buf, n);
    expect_fail(p, LSQ_ERR_FORMAT, "trailing bytes", NULL);
    const char *q = tmp_path("trail.gz");
    write_gz(q, buf, n);
    expect_fail(q, LSQ_ERR_FORMAT, "trailing bytes", NULL);
}

Test(idx, corrupt_gzip)
{
    /* A payload large enough that the deflate stream has a body to damage. */
    static uint8_t buf[4096 + 32];
    uint8_t pay[4096];
    for (int i = 0; i < 4096; i++) pay[i] = (uint8_t)((i * 7919u) >> 3);
    const uint32_t d[2] = {64, 64};
    size_t n = make_idx(buf, 2, d, pay, 4096);
    const char *p = tmp_path("bad.gz");
    write_gz(p, buf, n);
    FILE *f = fopen(p, "rb");
    static uint8_t gz[16384];
    size_t gn = fread(gz, 1, sizeof gz, f);
    fclose(f);
    cr_assert_gt(gn, 40);
    for (size_t i = gn / 3; i < gn / 3 + 16; i++) gz[i] ^= 0x5a;
    write_plain(p, gz, gn);
    expect_fail(p, LSQ_ERR_FORMAT, "corrupt gzip", NULL);

    /* A gzip stream cut short (no trailer) is corrupt too. */
    write_gz(p, buf, n);
    f = fopen(p, "rb");
    gn = fread(gz, 1, sizeof gz, f);
    fclose(f);
    write_plain(p, gz, gn - 12);
    idx_array a;
    lsq_err err = {0};
    cr_assert_eq(idx_read(&a, p, &err), LSQ_ERR_FORMAT, "%s", err.message);
    cr_assert_null(a.data);

    /* Only the gzip magic, nothing else. */
    const uint8_t magic[2] = {0x1f, 0x8b};
    write_plain(p, magic, 2);
    cr_assert_eq(idx_read(&a, p, &err), LSQ_ERR_FORMAT, "%s", err.message);
}

/* Mutated files (bit flips, truncations, random header bytes) must never
 * crash or leak: every result is either a consistent array or an error
 * with the output zeroed. Run under ASan/UBSan by `make SANITIZE=...`. */
Test(idx, fuzzed_bytes_never_crash)
{
    fill_pay();
    uint8_t base[64], buf[80];
    size_t n = make_idx(base, 3, DIMS3, PAY24, 24);
    const char *p = tmp_path("fuzz");
    const char *q = tmp_path("fuzz.gz");
    uint64_t s = 12345;
    int ok = 0, bad = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, base, n);
        size_t len = n;
        for (int k = 0; k < 3; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(s >> 33);
            switch (r % 4) {
            case 0: buf[(r >> 2) % len] ^= (uint8_t)(1u << ((r >> 10) % 8)); break;
            case 1: buf[(r >> 2) % 16] = (uint8_t)(r >> 12); break;
            case 2: len = (r >> 2) % (len + 1); if (len == 0) len = 1; break;
            case 3: if (len < sizeof buf) buf[len++] = (uint8_t)(r >> 8); break;
            }
        }
        const char *path = (it & 1) ? q : p;
        if (it & 1) write_gz(path, buf, len);
        else write_plain(path, buf, len);
        idx_array a;
        lsq_err err = {0};
        lsq_status st = idx_read(&a, path, &err);
        if (st == LSQ_OK) {
            ok++;
            cr_assert(a.ndim >= 1 && a.ndim <= 4);
            size_t prod = 1;
            for (int i = 0; i < a.ndim; i++) prod *= (size_t)a.dims[i];
            cr_assert_eq(prod, a.count);
            cr_assert_eq(a.count + 4 + 4 * (size_t)a.ndim, len);
            idx_free(&a);
        } else {
            bad++;
            cr_assert_eq(st, LSQ_ERR_FORMAT, "%s", err.message);
            cr_assert_null(a.data);
        }
    }
    cr_assert_gt(bad, 0);
    cr_assert_gt(ok, 0);
}

/* ---- dataset_load ---- */

TestSuite(dataset, .init = tmp_setup, .fini = tmp_teardown);

/* Writes a tiny MNIST-layout split: n images of h x w, labels given. */
static void write_split(const char *prefix, int n, int h, int w,
                        const uint8_t *labels, int nlabels, int gz)
{
    size_t img = (size_t)n * h * w;
    uint8_t *buf = malloc(16 + img);
    uint8_t *pix = malloc(img);
    for (size_t i = 0; i < img; i++) pix[i] = (uint8_t)(i * 31 + (size_t)prefix[0]);
    const uint32_t di[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w};
    size_t k = make_idx(buf, 3, di, pix, img);
    char name[128];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
    if (gz) write_gz(tmp_path(name), buf, k);
    else write_plain(tmp_path(name), buf, k);
    uint8_t lbuf[256];
    const uint32_t dl[1] = {(uint32_t)nlabels};
    k = make_idx(lbuf, 1, dl, labels, (size_t)nlabels);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
    if (gz) write_gz(tmp_path(name), lbuf, k);
    else write_plain(tmp_path(name), lbuf, k);
    free(pix);
    free(buf);
}

static const uint8_t LAB8[8] = {3, 1, 4, 1, 5, 9, 2, 6};

Test(dataset, small_plain_and_gz)
{
    write_split("train", 8, 5, 6, LAB8, 8, 0);  /* plain names */
    write_split("t10k", 4, 5, 6, LAB8, 4, 1);   /* .gz names */
    lsq_dataset tr, te;
    lsq_err err = {0};
    cr_assert_eq(dataset_load(&tr, &te, "mnist", tmpdir, 0, 0, &err), LSQ_OK, "%s",
                 err.message);
    cr_assert_eq(tr.n, 8);
    cr_assert_eq(tr.c, 1);
    cr_assert_eq(tr.h, 5);
    cr_assert_eq(tr.w, 6);
    cr_assert_eq(tr.classes, 10);
    cr_assert_eq(te.n, 4);
    for (int i = 0; i < 8; i++) cr_assert_eq(tr.labels[i], LAB8[i]);
    cr_assert_eq(tr.pixels[7], (uint8_t)(7 * 31 + 't'));
    dataset_free(&tr);
    dataset_free(&te);
    cr_assert_null(tr.pixels);
}

Test(dataset, gz_preferred_over_plain)
{
    const uint8_t other[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    write_split("train", 8, 2, 2, other, 8, 0);
    write_split("train", 8, 2, 2, LAB8, 8, 1);
    write_split("t10k", 2, 2, 2, LAB8, 2, 0);
    lsq_dataset tr;
    cr_assert_eq(dataset_load(&tr, NULL, "fashion-mnist", tmpdir, 0, 0, NULL), LSQ_OK);
    cr_assert_eq(tr.labels[0], 3);
    dataset_free(&tr);
}

Test(dataset, mismatched_counts)
{
    write_split("train", 8, 2, 2, LAB8, 7, 0);
    write_split("t10k", 2, 2, 2, LAB8, 2, 0);
    lsq_dataset tr, te;
    memset(&tr, 0x5c, sizeof tr);
    lsq_err err = {0};
    cr_assert_eq(dataset_load(&tr, &te, "mnist", tmpdir, 0, 0, &err), LSQ_ERR_FORMAT);
    cr_assert(strstr(err.message, "train-images-idx3-ubyte"), "%s", err.message);
    cr_assert(strstr(err.message, "train-labels-idx1-ubyte"), "%s", err.message);
    cr_assert(strstr(err.message, "8 images"), "%s", err.message);
    cr_assert(strstr(err.message, "7 labels"), "%s", err.message);
    cr_assert_null(tr.pixels);
    cr_assert_null(te.pixels);
    cr_assert_eq(tr.n, 0);
}

Test(dataset, label_out_of_range)
{
    uint8_t lab[8];
    memcpy(lab, LAB8, 8);
    lab[5] = 10;
    write_split("train", 8, 2, 2, LAB8, 8, 0);
    write_split("t10k", 8, 2, 2, lab, 8, 1);
    lsq_dataset tr, te;
    lsq_err err = {0};
    cr_assert_eq(dataset_load(&tr, &te, "mnist", tmpdir, 0, 0, &err), LSQ_ERR_FORMAT);
    cr_assert(strstr(err.message, "index 5"), "%s", err.message);
    cr_assert(strstr(err.message, "t10k-labels"), "%s", err.message);
    cr_assert_null(tr.pixels);  /* the loaded train split was freed */
    cr_assert_null(tr.labels);
    /* A limit that stops before the bad label loads fine. */
    cr_assert_eq(dataset_load(&tr, &te, "mnist", tmpdir, 0, 5, &err), LSQ_OK, "%s",
                 err.message);
    cr_assert_eq(te.n, 5);
    dataset_free(&tr);
    dataset_free(&te);
}

Test(dataset, image_file_must_be_3d)
{
    uint8_t buf[64], pay[8] = {0};
    const uint32_t d[2] = {2, 4};
    write_plain(tmp_path("train-images-idx3-ubyte"), buf, make_idx(buf, 2, d, pay, 8));
    const uint32_t dl[1] = {2};
    write_plain(tmp_path("train-labels-idx1-ubyte"), buf, make_idx(buf, 1, dl, pay, 2));
    lsq_dataset tr;
    lsq_err err = {0};
    cr_assert_eq(dataset_load(&tr, NULL, "mnist", tmpdir, 0, 0, &err), LSQ_ERR_FORMAT);
    cr_assert(strstr(err.message, "3 dimensions"), "%s", err.message);
}

Test(dataset, unknown_name_and_missing_dir)
{
    lsq_dataset tr, te;
    lsq_err err = {0};
    cr_assert_eq(dataset_load(&tr, &te, "cifar10", NULL, 0, 0, &err), LSQ_ERR_NOT_FOUND);
    cr_assert_str_eq(err.field, "dataset.name");
    cr_assert(strstr(err.message, "cifar10"));
    cr_assert_eq(dataset_load(&tr, &te, "mnist", tmpdir, 0, 0, &err), LSQ_ERR_IO);
    cr_assert(strstr(err.message, "train-images-idx3-ubyte"), "%s", err.message);
    cr_assert_eq(dataset_load(&tr, &te, "mnist", tmpdir, -1, 0, &err), LSQ_ERR_INVALID);
    cr_assert_str_eq(err.field, "dataset.train_limit");
}

/* Reads the raw bytes [off, off + n) of a gzip file, independently of idx.c. */
static void raw_gz_bytes(const char *path, size_t off, uint8_t *out, size_t n)
{
    gzFile g = gzopen(path, "rb");
    cr_assert_not_null(g, "cannot open %s", path);
    cr_assert_eq(gzseek(g, (z_off_t)off, SEEK_SET), (z_off_t)off);
    cr_assert_eq(gzread(g, out, (unsigned)n), (int)n);
    gzclose(g);
}

Test(dataset, fashion_mnist_real)
{
    const char *dir = LSQ_DEFAULT_DATA_DIR;
    if (access(LSQ_DEFAULT_DATA_DIR "/train-labels-idx1-ubyte.gz", R_OK) != 0)
        cr_skip_test("Fashion-MNIST not installed in %s", dir);
    lsq_dataset tr, te;
    lsq_err err = {0};
    cr_assert_eq(dataset_load(&tr, &te, "fashion-mnist", NULL, 0, 0, &err), LSQ_OK,
                 "%s", err.message);
    cr_assert_eq(tr.n, 60000);
    cr_assert_eq(te.n, 10000);
    cr_assert_eq(tr.c, 1);
    cr_assert_eq(tr.h, 28);
    cr_assert_eq(tr.w, 28);
    cr_assert_eq(te.h, 28);
    uint8_t raw[16];
    raw_gz_bytes(LSQ_DEFAULT_DATA_DIR "/train-labels-idx1-ubyte.gz", 8, raw, 4);
    for (int i = 0; i < 4; i++) cr_assert_eq(tr.labels[i], raw[i]);
    raw_gz_bytes(LSQ_DEFAULT_DATA_DIR "/t10k-labels-idx1-ubyte.gz", 8 + 9999, raw, 1);
    cr_assert_eq(te.labels[9999], raw[0]);
    uint8_t row[28];  /* row 14 of the last training image */
    raw_gz_bytes(LSQ_DEFAULT_DATA_DIR "/train-images-idx3-ubyte.gz",
                 16 + (size_t)59999 * 784 + 14 * 28, row, 28);
    cr_assert_arr_eq(tr.pixels + (size_t)59999 * 784 + 14 * 28, row, 28);
    int hist[10] = {0};
    for (int i = 0; i < tr.n; i++) hist[tr.labels[i]]++;
    for (int k = 0; k < 10; k++) cr_assert_eq(hist[k], 6000);  /* balanced set */
    dataset_free(&tr);
    dataset_free(&te);

    /* Limits: the first N; a limit past the end keeps everything. */
    cr_assert_eq(dataset_load(&tr, &te, "fashion-mnist", "", 1000, 20000, &err),
                 LSQ_OK, "%s", err.message);
    cr_assert_eq(tr.n, 1000);
    cr_assert_eq(te.n, 10000);
    raw_gz_bytes(LSQ_DEFAULT_DATA_DIR "/train-labels-idx1-ubyte.gz", 8 + 999, raw, 1);
    cr_assert_eq(tr.labels[999], raw[0]);
    dataset_free(&tr);
    dataset_free(&te);
}

/* ---- the loader ---- */

/* A synthetic set whose image i carries i in its first two pixels, so the
 * source of every filled image can be told from its contents. */
static void make_indexed(lsq_dataset *d, int n, int h, int w)
{
    d->n = n;
    d->c = 1;
    d->h = h;
    d->w = w;
    d->classes = 10;
    d->pixels = malloc((size_t)n * h * w);
    d->labels = malloc((size_t)n * sizeof *d->labels);
    uint64_t s = 99;
    for (size_t i = 0; i < (size_t)n * h * w; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        d->pixels[i] = (uint8_t)(s >> 56);
    }
    for (int i = 0; i < n; i++) {
        d->pixels[(size_t)i * h * w] = (uint8_t)(i & 255);
        d->pixels[(size_t)i * h * w + 1] = (uint8_t)(i >> 8);
        d->labels[i] = i % 10;
    }
}

static int decode_index(const float *x)
{
    return (int)(x[0] * 255.0f + 0.5f) | (int)(x[1] * 255.0f + 0.5f) << 8;
}

/* Fills a whole epoch into xs (n, C, H, W) and ys (n). */
static void fill_epoch(const lsq_loader *l, float *xs, int32_t *ys)
{
    size_t img = (size_t)l->ds->c * l->ds->h * l->ds->w;
    int pos = 0;
    for (int b = 0; b < loader_batches(l); b++)
        pos += loader_fill(l, b, xs + (size_t)pos * img, ys + pos);
    cr_assert_eq(pos, l->ds->n);
}

TestSuite(loader);

Test(loader, order_is_a_permutation_and_deterministic)
{
    lsq_dataset d;
    make_indexed(&d, 1000, 6, 6);
    lsq_loader a, b;
    lsq_err err = {0};
    cr_assert_eq(loader_init(&a, &d, 128, 1, 42, 0, 0, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(loader_init(&b, &d, 128, 1, 42, 0, 0, &err), LSQ_OK);
    cr_assert_eq(loader_batches(&a), 8);
    float *x = malloc(sizeof(float) * 128 * 36);
    int32_t y[128];
    cr_assert_eq(loader_fill(&a, 7, x, y), 1000 - 7 * 128);  /* short last batch */
    cr_assert_eq(loader_fill(&a, 8, x, y), 0);
    free(x);

    float *xa = malloc(sizeof(float) * 1000 * 36), *xb = malloc(sizeof(float) * 1000 * 36);
    int32_t ya[1000], yb[1000];
    int seen[1000];
    for (int e = 0; e < 3; e++) {
        loader_set_epoch(&a, e);
        loader_set_epoch(&b, e);
        fill_epoch(&a, xa, ya);
        fill_epoch(&b, xb, yb);
        cr_assert_arr_eq(xa, xb, sizeof(float) * 1000 * 36);
        cr_assert_arr_eq(ya, yb, sizeof ya);
        memset(seen, 0, sizeof seen);
        int in_order = 0;
        for (int i = 0; i < 1000; i++) {
            int k = decode_index(xa + (size_t)i * 36);
            cr_assert(k >= 0 && k < 1000);
            seen[k]++;
            cr_assert_eq(ya[i], k % 10);
            in_order += k == i;
        }
        for (int k = 0; k < 1000; k++) cr_assert_eq(seen[k], 1, "index %d seen %d times", k, seen[k]);
        cr_assert_lt(in_order, 50, "epoch %d is barely shuffled", e);
    }
    /* Epochs differ from each other. */
    loader_set_epoch(&a, 0);
    fill_epoch(&a, xa, ya);
    loader_set_epoch(&a, 1);
    fill_epoch(&a, xb, yb);
    int same = 0;
    for (int i = 0; i < 1000; i++)
        same += decode_index(xa + (size_t)i * 36) == decode_index(xb + (size_t)i * 36);
    cr_assert_lt(same, 50);
    /* A different seed gives a different order. */
    lsq_loader c;
    cr_assert_eq(loader_init(&c, &d, 128, 1, 43, 0, 0, &err), LSQ_OK);
    fill_epoch(&c, xb, yb);
    same = 0;
    for (int i = 0; i < 1000; i++)
        same += decode_index(xa + (size_t)i * 36) == decode_index(xb + (size_t)i * 36);
    cr_assert_lt(same, 50);
    loader_free(&a);
    loader_free(&b);
    loader_free(&c);
    free(xa);
    free(xb);
    dataset_free(&d);
}

Test(loader, resume_at_epoch_matches)
{
    lsq_dataset d;
    make_indexed(&d, 300, 8, 8);
    lsq_loader a, b;
    cr_assert_eq(loader_init(&a, &d, 64, 1, 7, 2, 1, NULL), LSQ_OK);
    cr_assert_eq(loader_init(&b, &d, 64, 1, 7, 2, 1, NULL), LSQ_OK);
    float *xa = malloc(sizeof(float) * 300 * 64), *xb = malloc(sizeof(float) * 300 * 64);
    int32_t ya[300], yb[300];
    for (int e = 0; e < 3; e++) {
        loader_set_epoch(&a, e);
        fill_epoch(&a, xa, ya);
    }
    loader_set_epoch(&b, 2);  /* jump straight to epoch 2 */
    fill_epoch(&b, xb, yb);
    cr_assert_arr_eq(xa, xb, sizeof(float) * 300 * 64);
    cr_assert_arr_eq(ya, yb, sizeof ya);
    loader_free(&a);
    loader_free(&b);
    free(xa);
    free(xb);
    dataset_free(&d);
}

Test(loader, no_shuffle_is_dataset_order)
{
    lsq_dataset d;
    make_indexed(&d, 50, 4, 4);
    lsq_loader l;
    cr_assert_eq(loader_init(&l, &d, 16, 0, 1, 0, 0, NULL), LSQ_OK);
    loader_set_epoch(&l, 5);
    float x[50 * 16];
    int32_t y[50];
    fill_epoch(&l, x, y);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(decode_index(x + i * 16), i);
        for (int p = 0; p < 16; p++)
            cr_assert_float_eq(x[i * 16 + p], d.pixels[i * 16 + p] / 255.0f, 0.0f);
    }
    loader_free(&l);
    dataset_free(&d);
}

/* True when aug equals src (H, W bytes) shifted by (dy, dx), optionally
 * mirrored, with zeros where the shift leaves the image. */
static int is_transform(const float *aug, const uint8_t *src, int h, int w,
                        int dy, int dx, int flip)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sy = y + dy, sx = (flip ? w - 1 - x : x) + dx;
            float want = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                             ? src[sy * w + sx] / 255.0f : 0.0f;
            if (aug[y * w + x] != want) return 0;
        }
    return 1;
}

Test(loader, augmentation_deterministic_and_real)
{
    enum { N = 200, H = 10, W = 10, P = 3 };
    lsq_dataset d;
    make_indexed(&d, N, H, W);
    lsq_loader a, b, plain;
    cr_assert_eq(loader_init(&a, &d, 32, 1, 5, P, 1, NULL), LSQ_OK);
    cr_assert_eq(loader_init(&b, &d, 32, 1, 5, P, 1, NULL), LSQ_OK);
    cr_assert_eq(loader_init(&plain, &d, 32, 1, 5, 0, 0, NULL), LSQ_OK);
    static float xa[N * H * W], xb[N * H * W], xp[N * H * W];
    int32_t ya[N], yb[N], yp[N];
    fill_epoch(&a, xa, ya);
    fill_epoch(&b, xb, yb);
    fill_epoch(&plain, xp, yp);
    cr_assert_arr_eq(xa, xb, sizeof xa);
    cr_assert_arr_eq(ya, yp, sizeof ya);  /* augmentation keeps the order */

    int changed = 0, flipped = 0, shifted = 0;
    for (int i = 0; i < N; i++) {
        const float *img = xa + (size_t)i * H * W;
        for (int p = 0; p < H * W; p++) cr_assert(img[p] >= 0.0f && img[p] <= 1.0f);
        int k = decode_index(xp + (size_t)i * H * W);
        const uint8_t *src = d.pixels + (size_t)k * H * W;
        changed += memcmp(img, xp + (size_t)i * H * W, sizeof(float) * H * W) != 0;
        int found = 0;
        for (int dy = -P; dy <= P && !found; dy++)
            for (int dx = -P; dx <= P && !found; dx++)
                for (int f = 0; f < 2 && !found; f++)
                    if (is_transform(img, src, H, W, dy, dx, f)) {
                        found = 1;
                        flipped += f;
                        shifted += dy != 0 || dx != 0;
                    }
        cr_assert(found, "image %d is not a crop/flip of source %d", i, k);
    }
    cr_assert_gt(changed, N / 2);
    cr_assert(flipped > N / 4 && flipped < 3 * N / 4, "flipped %d of %d", flipped, N);
    cr_assert_gt(shifted, N / 2);

    /* Another epoch augments differently. */
    loader_set_epoch(&b, 1);
    fill_epoch(&b, xb, yb);
    cr_assert_neq(memcmp(xa, xb, sizeof xa), 0);
    loader_free(&a);
    loader_free(&b);
    loader_free(&plain);
    dataset_free(&d);
}

/* A data-parallel rank's slice of a batch is exactly that part of the whole
 * batch, augmentation included; slices of 3 uneven ranks make the batch,
 * the short last one too. */
Test(loader, fill_range_is_a_slice_of_the_batch)
{
    enum { N = 100, H = 10, W = 10, P = 3, B = 32 };
    lsq_dataset d;
    make_indexed(&d, N, H, W);
    lsq_loader l;
    cr_assert_eq(loader_init(&l, &d, B, 1, 9, P, 1, NULL), LSQ_OK);
    loader_set_epoch(&l, 2);
    static float whole[B * H * W], parts[B * H * W];
    int32_t yw[B], yp[B];
    for (int b = 0; b < loader_batches(&l); b++) {
        int count = loader_fill(&l, b, whole, yw);
        cr_assert_eq(loader_batch_count(&l, b), count);
        memset(parts, 0, sizeof parts);
        int got = 0;
        for (int r = 0; r < 3; r++) {
            int lo = count * r / 3, hi = count * (r + 1) / 3;
            int n = loader_fill_range(&l, b, lo, hi, parts + (size_t)lo * H * W, yp + lo);
            cr_assert_eq(n, hi - lo);
            got += n;
        }
        cr_assert_eq(got, count);
        cr_assert_arr_eq(parts, whole, (size_t)count * H * W * sizeof(float), "batch %d", b);
        cr_assert_arr_eq(yp, yw, (size_t)count * sizeof(int32_t), "batch %d", b);
    }
    cr_assert_eq(loader_batch_count(&l, loader_batches(&l) - 1), N % B);
    cr_assert_eq(loader_fill_range(&l, 0, 5, 5, parts, yp), 0);
    cr_assert_eq(loader_fill_range(&l, loader_batches(&l), 0, B, parts, yp), 0);
    loader_free(&l);
    dataset_free(&d);
}

Test(loader, invalid_arguments)
{
    lsq_dataset d;
    make_indexed(&d, 10, 4, 4);
    lsq_loader l;
    lsq_err err = {0};
    cr_assert_eq(loader_init(&l, &d, 0, 1, 1, 0, 0, &err), LSQ_ERR_INVALID);
    cr_assert_null(l.perm);
    cr_assert_eq(loader_init(&l, &d, 4, 1, 1, -1, 0, &err), LSQ_ERR_INVALID);
    cr_assert_eq(loader_init(&l, &d, 4, 1, 1, 5, 0, &err), LSQ_ERR_INVALID);
    lsq_dataset empty = {0};
    cr_assert_eq(loader_init(&l, &empty, 4, 1, 1, 0, 0, &err), LSQ_ERR_INVALID);
    dataset_free(&d);
}

Test(loader, fill_is_fast)
{
    lsq_dataset d;
    make_indexed(&d, 2048, 28, 28);
    lsq_loader l;
    cr_assert_eq(loader_init(&l, &d, 128, 1, 3, 2, 1, NULL), LSQ_OK);
    float *x = malloc(sizeof(float) * 128 * 784);
    int32_t y[128];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int reps = 200;
    for (int r = 0; r < reps; r++) loader_fill(&l, r % loader_batches(&l), x, y);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 +
                 (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) / reps;
    /* Typically well under 100 us; the bound leaves room for sanitizers. */
    cr_assert_lt(us, 5000.0, "one 128x28x28 batch took %.0f us", us);
    cr_log_info("loader_fill: %.1f us per 128x28x28 augmented batch", us);
    free(x);
    loader_free(&l);
    dataset_free(&d);
}
