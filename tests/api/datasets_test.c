/* Datasets as objects: an image folder packed as .tar.gz at test time
 * (PNGs written with libpng, the archive with libarchive) is uploaded,
 * registers off the HTTP threads, shows its counts, classes, per-class
 * counts, mean and std and a samples.png, trains a job by id, and cannot be
 * deleted while the job runs. The same archive registers from a URL served
 * by a small HTTP server this test runs on loopback, and a folder of
 * --datasets-root registers at start-up. Then every way a dataset can be
 * wrong or hostile, each a 4xx at the door or a 'failed' registration with
 * a message naming the cause, and never a file left behind nor a server
 * path in a message. */
#include <criterion/criterion.h>

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>

#include "core/sha256.h"
#include "harness.h"

/* ---------------------------------------------------------- the data */

#define SIDE 12
#define PER_CLASS 10
static const char *const CLASSES[] = {"cat", "dog", "fox"};
#define NCLASSES 3

/* Every image of class k is the same pattern, so the training split's mean
 * and std do not depend on which images the split holds out. */
static uint8_t pixel(int k, int y, int x)
{
    return (uint8_t)(k * 70 + y * 9 + x * 3);
}

static uint8_t *png_bytes(int k, size_t *n)
{
    uint8_t px[SIDE * SIDE];
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++) px[y * SIDE + x] = pixel(k, y, x);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = SIDE;
    im.height = SIDE;
    im.format = PNG_FORMAT_GRAY;
    png_alloc_size_t size = 0;
    cr_assert(png_image_write_to_memory(&im, NULL, &size, 0, px, 0, NULL));
    uint8_t *buf = malloc(size);
    cr_assert(png_image_write_to_memory(&im, buf, &size, 0, px, 0, NULL));
    *n = size;
    return buf;
}

/* The expected mean and std of the training pixels / 255 (every class has
 * the same number of training images). */
static void expected_stats(double *mean, double *std)
{
    double s = 0, s2 = 0, n = 0;
    for (int k = 0; k < NCLASSES; k++)
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                double v = pixel(k, y, x) / 255.0;
                s += v;
                s2 += v * v;
                n++;
            }
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
}

enum { E_FILE, E_SYMLINK };
typedef struct {
    const char *path;
    const void *data;
    size_t n;
    int type;
} ent;

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

/* A .tar.gz of the entries, in memory. */
static blob targz(const ent *e, int n)
{
    size_t cap = 8 << 20, used = 0;
    uint8_t *buf = malloc(cap);
    struct archive *a = archive_write_new();
    cr_assert_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    cr_assert_eq(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    cr_assert_eq(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
    cr_assert_eq(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
    for (int i = 0; i < n; i++) {
        struct archive_entry *en = archive_entry_new();
        archive_entry_set_pathname(en, e[i].path);
        archive_entry_set_mtime(en, 1700000000, 0);
        if (e[i].type == E_SYMLINK) {
            archive_entry_set_filetype(en, AE_IFLNK);
            archive_entry_set_perm(en, 0777);
            archive_entry_set_symlink(en, (const char *)e[i].data);
        } else {
            archive_entry_set_filetype(en, AE_IFREG);
            archive_entry_set_perm(en, 0644);
            archive_entry_set_size(en, (la_int64_t)e[i].n);
        }
        cr_assert_eq(archive_write_header(a, en), ARCHIVE_OK, "%s", archive_error_string(a));
        if (e[i].type == E_FILE && e[i].n)
            cr_assert_eq(archive_write_data(a, e[i].data, e[i].n), (la_ssize_t)e[i].n);
        archive_entry_free(en);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK, "%s", archive_error_string(a));
    archive_write_free(a);
    return (blob){buf, used};
}

/* The image folder pets/CLASS/i.png, plus extra entries. */
static blob pets_archive(const ent *extra, int n_extra)
{
    ent e[NCLASSES * PER_CLASS + 8];
    static char paths[NCLASSES * PER_CLASS][64];
    uint8_t *png[NCLASSES];
    size_t len[NCLASSES];
    int n = 0;
    for (int k = 0; k < NCLASSES; k++) png[k] = png_bytes(k, &len[k]);
    for (int k = 0; k < NCLASSES; k++)
        for (int i = 0; i < PER_CLASS; i++) {
            snprintf(paths[n], sizeof paths[n], "pets/%s/%02d.png", CLASSES[k], i);
            e[n] = (ent){paths[n], png[k], len[k], E_FILE};
            n++;
        }
    for (int i = 0; i < n_extra; i++) e[n++] = extra[i];
    blob b = targz(e, n);
    for (int k = 0; k < NCLASSES; k++) free(png[k]);
    return b;
}

static void blob_sha256(const blob *b, char hex[65])
{
    sha256_ctx c;
    unsigned char d[32];
    sha256_init(&c);
    sha256_update(&c, b->data, b->len);
    sha256_final(&c, d);
    sha256_hex(d, hex);
}

/* ------------------------------------------------- a loopback web server */

/* Serves a few paths on 127.0.0.1 for the URL registrations:
 *   /pets.tar.gz       the archive
 *   /again/pets.tar.gz 302 to /pets.tar.gz
 *   /missing.tar.gz    404
 *   /hang.tar.gz       reads the request, never answers
 *   /tofile.tar.gz     302 to file:///etc/passwd */
typedef struct {
    int fd, port;
    volatile int stop;
    pthread_t thread;
    blob body;
    int hung[16];
    int n_hung;
} web;

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        c += w;
        n -= (size_t)w;
    }
}

static void *web_run(void *arg)
{
    web *w = arg;
    while (!w->stop) {
        struct pollfd pf = {w->fd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0) continue;
        int c = accept(w->fd, NULL, NULL);
        if (c < 0) continue;
        char req[4096] = "";
        size_t len = 0;
        while (len < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
            struct pollfd cf = {c, POLLIN, 0};
            if (poll(&cf, 1, 2000) <= 0) break;
            ssize_t r = recv(c, req + len, sizeof req - 1 - len, 0);
            if (r <= 0) break;
            len += (size_t)r;
            req[len] = '\0';
        }
        req[len] = '\0';
        char head[512];
        if (!strncmp(req, "GET /pets.tar.gz ", 17)) {
            snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", w->body.len);
            send_all(c, head, strlen(head));
            send_all(c, w->body.data, w->body.len);
        } else if (!strncmp(req, "GET /again/pets.tar.gz ", 23)) {
            snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: /pets.tar.gz\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
            send_all(c, head, strlen(head));
        } else if (!strncmp(req, "GET /tofile.tar.gz ", 19)) {
            snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
            send_all(c, head, strlen(head));
        } else if (!strncmp(req, "GET /hang.tar.gz ", 17) && w->n_hung < 16) {
            w->hung[w->n_hung++] = c; /* kept open, never answered */
            continue;
        } else {
            snprintf(head, sizeof head, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
                     "Connection: close\r\n\r\nnot found");
            send_all(c, head, strlen(head));
        }
        close(c);
    }
    return NULL;
}

static void web_start(web *w, blob body)
{
    memset(w, 0, sizeof *w);
    w->body = body;
    w->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(w->fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(w->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(w->fd, 16), 0);
    socklen_t sl = sizeof sa;
    getsockname(w->fd, (struct sockaddr *)&sa, &sl);
    w->port = ntohs(sa.sin_port);
    cr_assert_eq(pthread_create(&w->thread, NULL, web_run, w), 0);
}

static void web_stop(web *w)
{
    w->stop = 1;
    pthread_join(w->thread, NULL);
    for (int i = 0; i < w->n_hung; i++) close(w->hung[i]);
    close(w->fd);
}

/* ------------------------------------------------------------ helpers */

static api_res *upload(lsqd *d, const char *query, const blob *b)
{
    char path[512];
    snprintf(path, sizeof path, "/api/v1/datasets?%s", query);
    return api_bin(d, "POST", path, b->data, b->len, "application/octet-stream", NULL);
}

/* Polls the dataset until it leaves 'registering'; returns it (caller frees). */
static json_t *wait_dataset(lsqd *d, long long id, double timeout_s)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/datasets/%lld", id);
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        api_res *r = api(d, "GET", path, NULL, NULL, NULL);
        cr_assert_eq(r->status, 200, "%s", r->body);
        const char *st = json_string_value(json_object_get(r->json, "state"));
        if (st && strcmp(st, "registering")) {
            json_t *j = json_incref(r->json);
            api_free(r);
            return j;
        }
        api_free(r);
        sleep_s(0.05);
    }
    cr_assert_fail("dataset %lld still registering after %.0f s", id, timeout_s);
    return NULL;
}

static int entries_in(const char *dir)
{
    DIR *dh = opendir(dir);
    if (!dh) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dh)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(dh);
    return n;
}

static int dataset_files(lsqd *d, long long id)
{
    char p[512];
    snprintf(p, sizeof p, "%s/datasets/%lld", d->data, id);
    return entries_in(p);
}

static int count_datasets(lsqd *d)
{
    api_res *r = api(d, "GET", "/api/v1/datasets", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    int n = (int)json_array_size(json_object_get(r->json, "datasets"));
    api_free(r);
    return n;
}

static const char *err_message(json_t *j)
{
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    return m ? m : "";
}

/* ------------------------------------------------------------- tests */

Test(datasets, upload_register_train_and_delete, .timeout = 240)
{
    lsqd d;
    const char *const flags[] = {"--workers", "1", NULL};
    lsqd_start(&d, flags);
    blob b = pets_archive(NULL, 0);
    char sha[65];
    blob_sha256(&b, sha);
    api_res *r = upload(&d, "name=pets.tar.gz&test_fraction=0.2", &b);
    cr_assert_eq(r->status, 202, "%s", r->body);
    long long id = json_integer_value(json_object_get(r->json, "id"));
    cr_assert_gt(id, 0);
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "state")), "registering");
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "source")), "upload");
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "sha256")), sha);
    cr_expect_eq(json_integer_value(json_object_get(r->json, "bytes")), (json_int_t)b.len);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/datasets/%lld", id);
    cr_expect_str_eq(r->location, loc);
    api_free(r);

    json_t *ds = wait_dataset(&d, id, 60);
    cr_assert_str_eq(json_string_value(json_object_get(ds, "state")), "ready", "%s",
                     err_message(ds));
    json_t *sum = json_object_get(ds, "summary");
    cr_expect_str_eq(json_string_value(json_object_get(sum, "format")), "folder");
    json_t *shape = json_object_get(sum, "shape");
    cr_expect(json_integer_value(json_array_get(shape, 0)) == 1 &&
              json_integer_value(json_array_get(shape, 1)) == SIDE &&
              json_integer_value(json_array_get(shape, 2)) == SIDE, "shape");
    json_t *counts = json_object_get(sum, "counts");
    cr_expect_eq(json_integer_value(json_object_get(counts, "train")), NCLASSES * 8);
    cr_expect_eq(json_integer_value(json_object_get(counts, "test")), NCLASSES * 2);
    cr_expect_eq(json_integer_value(json_object_get(sum, "num_classes")), NCLASSES);
    json_t *classes = json_object_get(sum, "classes");
    cr_assert_eq(json_array_size(classes), NCLASSES);
    for (int k = 0; k < NCLASSES; k++) {
        json_t *c = json_array_get(classes, (size_t)k);
        cr_expect_str_eq(json_string_value(json_object_get(c, "name")), CLASSES[k]);
        cr_expect_eq(json_integer_value(json_object_get(c, "train")), 8, "class %d", k);
        cr_expect_eq(json_integer_value(json_object_get(c, "test")), 2, "class %d", k);
    }
    double mean, std;
    expected_stats(&mean, &std);
    double got_m = json_number_value(json_array_get(json_object_get(sum, "mean"), 0));
    double got_s = json_number_value(json_array_get(json_object_get(sum, "std"), 0));
    cr_expect(fabs(got_m - mean) < 1e-9, "mean %.12f, want %.12f", got_m, mean);
    cr_expect(fabs(got_s - std) < 1e-9, "std %.12f, want %.12f", got_s, std);
    cr_expect_null(json_object_get(sum, "cache"), "the summary shows a server path");
    cr_expect_gt(json_integer_value(json_object_get(sum, "cache_bytes")), 0);
    json_decref(ds);
    /* the list shows it after the built-ins, without the per-class list */
    r = api(&d, "GET", "/api/v1/datasets", NULL, NULL, NULL);
    json_t *third = json_array_get(json_object_get(r->json, "datasets"), 2);
    cr_expect_eq(json_integer_value(json_object_get(third, "id")), id);
    cr_expect_null(json_object_get(json_object_get(third, "summary"), "classes"));
    api_free(r);

    /* samples.png: a PNG of 8 images a class, one row per class */
    char path[128];
    snprintf(path, sizeof path, "/api/v1/datasets/%lld/samples.png", id);
    r = api(&d, "GET", path, NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_expect_str_eq(r->ctype, "image/png");
    cr_assert_gt(r->len, 24);
    cr_expect(!memcmp(r->body, "\x89PNG\r\n\x1a\n", 8), "not a PNG");
    const uint8_t *ihdr = (const uint8_t *)r->body + 16;
    uint32_t w = (uint32_t)ihdr[0] << 24 | ihdr[1] << 16 | ihdr[2] << 8 | ihdr[3];
    uint32_t h = (uint32_t)ihdr[4] << 24 | ihdr[5] << 16 | ihdr[6] << 8 | ihdr[7];
    cr_expect_eq(w, 2 + 8 * (SIDE + 2), "width %u", w);
    cr_expect_eq(h, 2 + NCLASSES * (SIDE + 2), "height %u", h);
    api_free(r);
    /* on disk: the cache and the picture; the upload itself is gone */
    char upl[400];
    snprintf(upl, sizeof upl, "%s/uploads", d.data);
    cr_expect_eq(dataset_files(&d, id), 2);
    cr_expect_leq(entries_in(upl), 0, "a partial upload was left");

    /* a model that does not fit the dataset's images is refused at the door */
    char spec[512];
    snprintf(spec, sizeof spec, "{\"model\":{\"layers\":[{\"type\":\"flatten\"},"
             "{\"type\":\"linear\",\"out\":3}],\"input\":[1,28,28]},\"dataset\":{\"id\":%lld}}",
             id);
    r = api(&d, "POST", "/api/v1/jobs", spec, NULL, NULL);
    cr_expect_eq(r->status, 422, "%s", r->body);
    cr_expect_str_eq(api_err_field(r), "model.input");
    api_free(r);

    /* a job trains on it by id; while it is queued or running the dataset
     * stays. Unnormalised inputs here; a normalised job's model.lsqm takes
     * raw pixels too (predict_test.c). */
    snprintf(spec, sizeof spec,
             "{\"name\":\"pets\",\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"id\":%lld,"
             "\"normalize\":false},"
             "\"pretrain\":{\"epochs\":40},\"train\":{\"epochs\":40},\"quant\":{\"weight_bits\":4}}",
             id);
    long long job = submit_job(&d, spec);
    r = api(&d, "DELETE", loc, NULL, NULL, NULL);
    cr_expect_eq(r->status, 409, "delete while job %lld is queued: %ld %s", job, r->status,
                 r->body);
    api_free(r);
    json_t *running = wait_job(&d, job, "running", 60);
    cr_assert(running, "job %lld never ran", job);
    json_decref(running);
    r = api(&d, "DELETE", loc, NULL, NULL, NULL);
    cr_expect_eq(r->status, 409, "delete while job %lld runs: %ld %s", job, r->status, r->body);
    cr_expect_str_eq(api_err_code(r), "conflict");
    char jobtext[32];
    snprintf(jobtext, sizeof jobtext, "job %lld", job);
    cr_expect(strstr(err_message(r->json), jobtext), "%s", r->body);
    api_free(r);
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", job);
    r = api(&d, "GET", path, NULL, NULL, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "state")), "running",
                     "the job ended before the delete was tried: make it longer");
    api_free(r);
    cr_expect_eq(dataset_files(&d, id), 2, "the refused delete removed files");
    json_t *j = wait_job(&d, job, NULL, 180);
    cr_assert(j, "job %lld did not finish", job);
    cr_expect_str_eq(json_string_value(json_object_get(j, "state")), "succeeded", "%s",
                     json_dumps(j, 0));
    cr_expect_eq(json_integer_value(json_object_get(j, "dataset_id")), id);
    json_t *last = json_object_get(j, "last_epoch");
    cr_expect(json_is_object(last), "no epoch event");
    json_decref(j);
    /* the model predicts with the dataset's class names */
    char pbody[4096], jpath[128];
    size_t o = (size_t)snprintf(pbody, sizeof pbody, "{\"images\":[[");
    for (int i = 0; i < SIDE * SIDE; i++)
        o += (size_t)snprintf(pbody + o, sizeof pbody - o, "%s%d", i ? "," : "",
                              pixel(1, i / SIDE, i % SIDE));
    snprintf(pbody + o, sizeof pbody - o, "]]}");
    snprintf(jpath, sizeof jpath, "/api/v1/jobs/%lld/predict", job);
    r = api(&d, "POST", jpath, pbody, NULL, NULL);
    cr_expect_eq(r->status, 200, "%s", r->body);
    const char *label = json_string_value(
        json_object_get(json_array_get(json_object_get(r->json, "predictions"), 0), "label"));
    cr_expect(label && (!strcmp(label, "cat") || !strcmp(label, "dog") || !strcmp(label, "fox")),
              "label %s", label ? label : "(none)");
    api_free(r);
    r = api(&d, "DELETE", loc, NULL, NULL, NULL);
    cr_expect_eq(r->status, 204, "%s", r->body);
    api_free(r);
    cr_expect_eq(dataset_files(&d, id), -1, "the dataset's folder outlived it");
    r = api(&d, "GET", loc, NULL, NULL, NULL);
    cr_expect_eq(r->status, 404);
    api_free(r);
    r = api(&d, "POST", "/api/v1/jobs", spec, NULL, NULL);
    cr_expect_eq(r->status, 422);
    cr_expect_str_eq(api_err_field(r), "dataset.id");
    api_free(r);
    free(b.data);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

/* Progress while a dataset registers: an archive of 3000 images, polled
 * from the upload on. Every progress seen names a known phase, counts up
 * within its phase, and phases come in order (decoding, writing, samples);
 * the decoding count is seen before the end, and its total, once known, is
 * the image count. Once ready, the last progress has done == total. */
Test(datasets, registration_reports_progress, .timeout = 120)
{
    enum { PER = 1000, N = NCLASSES * PER };
    static ent e[N];
    static char paths[N][32];
    uint8_t *png[NCLASSES];
    size_t len[NCLASSES];
    for (int k = 0; k < NCLASSES; k++) png[k] = png_bytes(k, &len[k]);
    for (int i = 0; i < N; i++) {
        int k = i % NCLASSES;
        snprintf(paths[i], sizeof paths[i], "many/%s/%d.png", CLASSES[k], i);
        e[i] = (ent){paths[i], png[k], len[k], E_FILE};
    }
    blob b = targz(e, N);
    lsqd d;
    lsqd_start(&d, NULL);
    api_res *r = upload(&d, "name=many.tar.gz", &b);
    cr_assert_eq(r->status, 202, "%s", r->body);
    long long id = json_integer_value(json_object_get(r->json, "id"));
    api_free(r);
    static const char *const PHASES[] = {"decoding", "writing", "samples"};
    char path[64];
    snprintf(path, sizeof path, "/api/v1/datasets/%lld", id);
    int seen = 0, seen_decoding = 0, phase = -1;
    long long done = -1;
    json_t *last = NULL;
    double t0 = now_s();
    for (;;) {
        cr_assert_lt(now_s() - t0, 90, "still registering");
        r = api(&d, "GET", path, NULL, NULL, NULL);
        cr_assert_eq(r->status, 200, "%s", r->body);
        json_t *p = json_object_get(r->json, "progress");
        const char *state = json_string_value(json_object_get(r->json, "state"));
        if (strcmp(state, "registering")) {
            cr_assert_str_eq(state, "ready", "%s", r->body);
            last = json_incref(p);
            api_free(r);
            break;
        }
        if (json_is_object(p)) {
            const char *ph = json_string_value(json_object_get(p, "phase"));
            json_t *jt = json_object_get(p, "total");
            long long dn = json_integer_value(json_object_get(p, "done"));
            int k = -1;
            for (int q = 0; q < 3; q++)
                if (ph && !strcmp(ph, PHASES[q])) k = q;
            cr_assert_geq(k, 0, "unknown phase in %s", r->body);
            cr_assert_geq(k, phase, "phases out of order: %s", r->body);
            if (k > phase) done = -1;
            cr_assert_geq(dn, done, "done went down: %s", r->body);
            cr_assert(json_is_null(jt) || json_integer_value(jt) >= dn, "%s", r->body);
            if (k == 0) {
                seen_decoding++;
                if (json_is_integer(jt)) cr_expect_eq(json_integer_value(jt), N, "%s", r->body);
            }
            phase = k;
            done = dn;
            seen++;
        }
        api_free(r);
        sleep_s(0.002);
    }
    cr_log_info("progress seen %d times while registering, %d of them decoding", seen,
                seen_decoding);
    cr_expect_gt(seen_decoding, 0, "no decoding progress seen while registering (%d seen)", seen);
    cr_assert(json_is_object(last), "no progress once ready");
    cr_expect_str_eq(json_string_value(json_object_get(last, "phase")), "samples");
    cr_expect(json_is_integer(json_object_get(last, "total")) &&
              json_integer_value(json_object_get(last, "done")) ==
                  json_integer_value(json_object_get(last, "total")),
              "the last progress is not complete: %s", json_dumps(last, 0));
    json_decref(last);
    /* the list shows progress too */
    r = api(&d, "GET", "/api/v1/datasets", NULL, NULL, NULL);
    json_t *ds;
    size_t i;
    int found = 0;
    json_array_foreach(json_object_get(r->json, "datasets"), i, ds)
        if (json_integer_value(json_object_get(ds, "id")) == id)
            found = json_is_object(json_object_get(ds, "progress"));
    cr_expect(found, "the list lacks the dataset's progress: %s", r->body);
    api_free(r);
    for (int k = 0; k < NCLASSES; k++) free(png[k]);
    free(b.data);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
}

Test(datasets, url_registration_from_loopback, .timeout = 120)
{
    blob b = pets_archive(NULL, 0);
    char sha[65];
    blob_sha256(&b, sha);
    web w;
    web_start(&w, b);
    lsqd d;
    const char *const flags[] = {"--allow-private-urls", "--fetch-timeout", "3", NULL};
    lsqd_start(&d, flags);
    char body[512];
    snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/pets.tar.gz\"}", w.port);
    api_res *r = api(&d, "POST", "/api/v1/datasets", body, NULL, NULL);
    cr_assert_eq(r->status, 202, "%s", r->body);
    long long id = json_integer_value(json_object_get(r->json, "id"));
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "source")), "url");
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "name")), "pets.tar.gz",
                     "the name defaults to the URL's file name");
    api_free(r);
    /* through a redirect, with a name and options of its own */
    snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/again/pets.tar.gz\","
             "\"name\":\"pets-grey.tgz\",\"size\":\"8x8\",\"channels\":3}", w.port);
    r = api(&d, "POST", "/api/v1/datasets", body, NULL, NULL);
    cr_assert_eq(r->status, 202, "%s", r->body);
    long long id2 = json_integer_value(json_object_get(r->json, "id"));
    api_free(r);
    /* a URL that never answers keeps its dataset registering for a while:
     * neither a job nor a delete can use it meanwhile */
    snprintf(body, sizeof body, "{\"url\":\"http://127.0.0.1:%d/hang.tar.gz\"}", w.port);
    r = api(&d, "POST", "/api/v1/datasets", body, NULL, NULL);
    cr_assert_eq(r->status, 202, "%s", r->body);
    long long hang = json_integer_value(json_object_get(r->json, "id"));
    api_free(r);

    json_t *ds = wait_dataset(&d, id, 60);
    cr_assert_str_eq(json_string_value(json_object_get(ds, "state")), "ready", "%s",
                     err_message(ds));
    cr_expect_str_eq(json_string_value(json_object_get(ds, "sha256")), sha);
    cr_expect_eq(json_integer_value(json_object_get(ds, "bytes")), (json_int_t)b.len);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(json_object_get(ds, "summary"),
                                                                    "counts"), "train")),
                 NCLASSES * 8);
    json_decref(ds);
    ds = wait_dataset(&d, id2, 60);
    cr_assert_str_eq(json_string_value(json_object_get(ds, "state")), "ready", "%s",
                     err_message(ds));
    json_t *shape = json_object_get(json_object_get(ds, "summary"), "shape");
    cr_expect(json_integer_value(json_array_get(shape, 0)) == 3 &&
              json_integer_value(json_array_get(shape, 1)) == 8, "the options were not used");
    json_decref(ds);

    /* the pets and the redirect are ready: the hanging fetch is under way
     * for --fetch-timeout (3 s) */
    char spec[256], path[64];
    snprintf(spec, sizeof spec, "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"id\":%lld}}", hang);
    snprintf(path, sizeof path, "/api/v1/datasets/%lld", hang);
    r = api(&d, "GET", path, NULL, NULL, NULL);
    cr_expect_str_eq(json_string_value(json_object_get(r->json, "state")), "registering");
    api_free(r);
    /* its progress, once the registrar has started on it: fetching, no
     * byte received and no size announced */
    json_t *prog = NULL;
    for (double t0 = now_s(); !prog && now_s() - t0 < 2; sleep_s(0.01)) {
        r = api(&d, "GET", path, NULL, NULL, NULL);
        json_t *p = json_object_get(r->json, "progress");
        if (json_is_object(p)) prog = json_incref(p);
        api_free(r);
    }
    cr_assert(prog, "no progress while the fetch hangs");
    cr_expect_str_eq(json_string_value(json_object_get(prog, "phase")), "fetching");
    cr_expect_eq(json_integer_value(json_object_get(prog, "done")), 0);
    cr_expect(json_is_null(json_object_get(prog, "total")), "total is not null");
    json_decref(prog);
    r = api(&d, "POST", "/api/v1/jobs", spec, NULL, NULL);
    cr_expect_eq(r->status, 422, "%s", r->body);
    cr_expect_str_eq(api_err_field(r), "dataset.id");
    cr_expect(strstr(err_message(r->json), "registering"), "%s", r->body);
    api_free(r);
    r = api(&d, "DELETE", path, NULL, NULL, NULL);
    cr_expect_eq(r->status, 409, "%s", r->body);
    cr_expect(strstr(err_message(r->json), "registering"), "%s", r->body);
    api_free(r);
    ds = wait_dataset(&d, hang, 30);
    cr_expect_str_eq(json_string_value(json_object_get(ds, "state")), "failed");
    json_decref(ds);
    lsqd_stop(&d);
    lsqd_cleanup(&d);
    web_stop(&w);
    free(b.data);
}

/* A refusal: at the door (status >= 400: code and field), or a dataset
 * that fails to register (status 202: the error code and the message). */
typedef struct {
    const char *what;
    const char *query;      /* upload: the query; NULL: JSON body */
    blob body;
    const char *json;       /* JSON body; "%d" is the web server's port */
    const char *ctype;      /* NULL: the default of the kind */
    long status;
    const char *code, *field, *says;
} bad_case;

static void check_case(lsqd *d, const bad_case *c, int port)
{
    int before = count_datasets(d);
    api_res *r;
    if (c->query) {
        char path[512];
        snprintf(path, sizeof path, "/api/v1/datasets?%s", c->query);
        r = api_bin(d, "POST", path, c->body.data, c->body.len,
                    c->ctype ? c->ctype : "application/octet-stream", NULL);
    } else {
        char body[1024];
        if (strstr(c->json, "%d")) snprintf(body, sizeof body, c->json, port);
        else snprintf(body, sizeof body, "%s", c->json);
        r = api(d, "POST", "/api/v1/datasets", body, c->ctype, NULL);
    }
    cr_expect_eq(r->status, c->status, "%s: status %ld (%s)", c->what, r->status,
                 r->body ? r->body : "");
    if (c->status != 202 || r->status != 202) {
        cr_expect_str_eq(api_err_code(r), c->code, "%s: code", c->what);
        if (c->field) cr_expect_str_eq(api_err_field(r), c->field, "%s: field", c->what);
        const char *m = err_message(r->json);
        cr_expect(strstr(m, c->says), "%s: '%s' lacks '%s'", c->what, m, c->says);
        cr_expect_eq(count_datasets(d), before, "%s: a dataset was stored", c->what);
        api_free(r);
        return;
    }
    long long id = json_integer_value(json_object_get(r->json, "id"));
    api_free(r);
    json_t *ds = wait_dataset(d, id, 60);
    cr_expect_str_eq(json_string_value(json_object_get(ds, "state")), "failed", "%s", c->what);
    const char *code = json_string_value(json_object_get(json_object_get(ds, "error"), "code"));
    const char *m = err_message(ds);
    cr_expect_str_eq(code ? code : "", c->code, "%s: code (%s)", c->what, m);
    cr_expect(strstr(m, c->says), "%s: '%s' lacks '%s'", c->what, m, c->says);
    cr_expect(!strstr(m, d->data) && !strstr(m, "/tmp/") && !strstr(m, "source."),
              "%s: the message shows a server path: %s", c->what, m);
    cr_expect_eq(dataset_files(d, id), -1, "%s: files were left behind", c->what);
    json_decref(ds);
    /* a failed dataset can be deleted; it cannot be used */
    char path[64];
    snprintf(path, sizeof path, "/api/v1/datasets/%lld", id);
    r = api(d, "DELETE", path, NULL, NULL, NULL);
    cr_expect_eq(r->status, 204, "%s: delete of the failed dataset: %ld", c->what, r->status);
    api_free(r);
}

Test(datasets, bad_datasets_are_refused_or_fail_and_leave_nothing, .timeout = 240)
{
    blob good = pets_archive(NULL, 0);
    web w;
    web_start(&w, good);
    lsqd d;
    const char *const flags[] = {"--allow-private-urls", "--fetch-timeout", "2",
                                 "--max-expanded", "4194304", "--max-upload", "1048576", NULL};
    lsqd_start(&d, flags);
    /* a truncated archive: the first half of a good one */
    blob cut = {good.data, good.len / 2};
    /* an entry with '..' and a symlink entry beside good images */
    size_t pn;
    uint8_t *png = png_bytes(0, &pn);
    ent dots = {"pets/cat/../../evil.png", png, pn, E_FILE};
    blob b_dots = pets_archive(&dots, 1);
    ent link = {"pets/cat/link.png", "/etc/passwd", 0, E_SYMLINK};
    blob b_link = pets_archive(&link, 1);
    /* a bomb: 8 MiB of zeros in a few KB, over --max-expanded 4 MiB */
    uint8_t *zeros = calloc(8 << 20, 1);
    ent bomb = {"pets/cat/zeros.png", zeros, 8 << 20, E_FILE};
    blob b_bomb = pets_archive(&bomb, 1);
    cr_assert_lt(b_bomb.len, 64 << 10);
    /* a corrupt PNG: a byte of its image data flipped (the CRC fails) */
    uint8_t *bad_png = malloc(pn);
    memcpy(bad_png, png, pn);
    bad_png[pn - 20] ^= 0x5a;
    ent corrupt = {"pets/cat/broken.png", bad_png, pn, E_FILE};
    blob b_png = pets_archive(&corrupt, 1);
    static char big[1100000];
    memset(big, 'x', sizeof big);
    blob b_big = {(uint8_t *)big, sizeof big};
    blob empty = {(uint8_t *)"", 0};

    const bad_case cases[] = {
        /* uploads that fail to register */
        {"truncated archive", "name=cut.tar.gz", cut, NULL, NULL, 202, "bad_format", NULL,
         "truncated or corrupt archive"},
        {"an entry with '..'", "name=dots.tar.gz", b_dots, NULL, NULL, 202, "bad_format", NULL,
         "'..' component"},
        {"a symlink entry", "name=link.tar.gz", b_link, NULL, NULL, 202, "bad_format", NULL,
         "a symlink"},
        {"a decompression bomb", "name=bomb.tar.gz", b_bomb, NULL, NULL, 202, "bad_format", NULL,
         "decompression bomb"},
        {"a corrupt PNG", "name=png.tar.gz", b_png, NULL, NULL, 202, "bad_format", NULL,
         "corrupt PNG"},
        /* URLs that fail to register */
        {"a URL that 404s", NULL, {0}, "{\"url\":\"http://127.0.0.1:%d/missing.tar.gz\"}", NULL,
         202, "fetch_failed", NULL, "HTTP 404"},
        {"a URL that never answers", NULL, {0}, "{\"url\":\"http://127.0.0.1:%d/hang.tar.gz\"}",
         NULL, 202, "timeout", NULL, "timed out"},
        {"a redirect to file://", NULL, {0}, "{\"url\":\"http://127.0.0.1:%d/tofile.tar.gz\"}",
         NULL, 202, "fetch_refused", NULL, "not http or https"},
        /* refused at the door */
        {"a non-http scheme", NULL, {0}, "{\"url\":\"ftp://127.0.0.1:%d/pets.tar.gz\"}", NULL,
         422, "invalid_value", "url", "only http and https"},
        {"a file URL", NULL, {0}, "{\"url\":\"file:///etc/passwd\",\"name\":\"x.tar\"}", NULL,
         422, "invalid_value", "url", "only http and https"},
        {"a server path", NULL, {0}, "{\"path\":\"/etc\",\"name\":\"x.tar\"}", NULL, 422,
         "invalid_value", "path", "upload"},
        {"no url", NULL, {0}, "{\"name\":\"x.tar\"}", NULL, 422, "invalid_value", "url",
         "url is required"},
        {"an unknown field", NULL, {0}, "{\"url\":\"http://127.0.0.1:%d/a.tar\",\"bogus\":1}",
         NULL, 422, "invalid_value", "bogus", "unknown field"},
        {"no name", "format=folder", good, NULL, NULL, 422, "invalid_value", "name", "?name="},
        {"a name without a known extension", "name=pets.rar", good, NULL, NULL, 422,
         "invalid_value", "name", ".tar.gz"},
        {"a name with a slash", "name=a%2Fb.tar", good, NULL, NULL, 422, "invalid_value", "name",
         "'/'"},
        {"a bad size", "name=p.tar.gz&size=0x5", good, NULL, NULL, 422, "invalid_value", "size",
         "HxW"},
        {"bad channels", "name=p.tar.gz&channels=2", good, NULL, NULL, 422, "invalid_value",
         "channels", "1 or 3"},
        {"a bad format", "name=p.tar.gz&format=rar", good, NULL, NULL, 422, "invalid_value",
         "format", "cifar10"},
        {"a bad test fraction", "name=p.tar.gz&test_fraction=1", good, NULL, NULL, 422,
         "invalid_value", "test_fraction", "(0, 1)"},
        {"an empty body", "name=p.tar.gz", empty, NULL, NULL, 422, "invalid_value", "body",
         "empty"},
        {"over --max-upload", "name=p.tar.gz", b_big, NULL, NULL, 413, "body_too_large", NULL,
         "1048576"},
        {"neither a file nor JSON", "name=p.tar.gz", good, NULL, "text/plain", 415,
         "unsupported_media_type", NULL, "application/json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&d, &cases[i], w.port);
    char upl[400], dsd[400];
    snprintf(upl, sizeof upl, "%s/uploads", d.data);
    snprintf(dsd, sizeof dsd, "%s/datasets", d.data);
    cr_expect_leq(entries_in(upl), 0, "partial uploads were left");
    cr_expect_eq(entries_in(dsd), 0, "dataset folders were left");
    api_res *r = api(&d, "GET", "/healthz", NULL, NULL, NULL);
    cr_expect_eq(r->status, 200, "lsqd is not healthy after the bad datasets");
    api_free(r);
    lsqd_stop(&d);
    lsqd_cleanup(&d);

    /* without --allow-private-urls: a literal private address is refused at
     * the door, a name that resolves to one when lsqd connects */
    lsqd_start(&d, NULL);
    const bad_case private_cases[] = {
        {"a loopback address", NULL, {0}, "{\"url\":\"http://127.0.0.1:%d/pets.tar.gz\"}", NULL,
         422, "invalid_value", "url", "--allow-private-urls"},
        {"the metadata address", NULL, {0}, "{\"url\":\"http://169.254.169.254/x.tar\"}", NULL,
         422, "invalid_value", "url", "link-local"},
        {"an IPv6 loopback", NULL, {0}, "{\"url\":\"http://[::1]:%d/pets.tar.gz\"}", NULL, 422,
         "invalid_value", "url", "private"},
        {"a name of a loopback address", NULL, {0},
         "{\"url\":\"http://localhost:%d/pets.tar.gz\"}", NULL, 202, "fetch_refused", NULL,
         "--allow-private-urls"},
    };
    for (size_t i = 0; i < sizeof private_cases / sizeof *private_cases; i++)
        check_case(&d, &private_cases[i], w.port);
    snprintf(dsd, sizeof dsd, "%s/datasets", d.data);
    cr_expect_eq(entries_in(dsd), 0, "dataset folders were left");
    lsqd_stop(&d);
    lsqd_cleanup(&d);
    web_stop(&w);
    free(good.data);
    free(b_dots.data);
    free(b_link.data);
    free(b_bomb.data);
    free(b_png.data);
    free(zeros);
    free(png);
    free(bad_png);
}

/* Every sub-folder of --datasets-root is a dataset, registered once. */
Test(datasets, datasets_root_registers_its_folders_once, .timeout = 120)
{
    char root[] = "/tmp/lsqd-root-XXXXXX";
    cr_assert(mkdtemp(root));
    char p[600];
    for (int k = 0; k < NCLASSES; k++) {
        snprintf(p, sizeof p, "%s/shapes", root);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/shapes/%s", root, CLASSES[k]);
        mkdir(p, 0755);
        size_t n;
        uint8_t *png = png_bytes(k, &n);
        for (int i = 0; i < 5; i++) {
            snprintf(p, sizeof p, "%s/shapes/%s/%d.png", root, CLASSES[k], i);
            FILE *f = fopen(p, "wb");
            cr_assert(f);
            fwrite(png, 1, n, f);
            fclose(f);
        }
        free(png);
    }
    /* a folder that is not a dataset: no images at all */
    snprintf(p, sizeof p, "%s/broken", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/broken/readme.txt", root);
    FILE *f = fopen(p, "w");
    fputs("nothing here\n", f);
    fclose(f);
    const char *const flags[] = {"--datasets-root", root, NULL};
    lsqd d;
    lsqd_start(&d, flags);
    api_res *r = api(&d, "GET", "/api/v1/datasets", NULL, NULL, NULL);
    json_t *list = json_object_get(r->json, "datasets");
    cr_assert_eq(json_array_size(list), 4, "%s", r->body);
    /* newest first: shapes (id 2) then broken (id 1) */
    long long shapes = json_integer_value(json_object_get(json_array_get(list, 2), "id"));
    long long broken = json_integer_value(json_object_get(json_array_get(list, 3), "id"));
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(list, 2), "name")),
                     "shapes");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(list, 2), "source")),
                     "root");
    api_free(r);
    json_t *ds = wait_dataset(&d, shapes, 60);
    cr_expect_str_eq(json_string_value(json_object_get(ds, "state")), "ready", "%s",
                     err_message(ds));
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(json_object_get(ds, "summary"),
                                                                    "counts"), "train")),
                 NCLASSES * 4);
    json_decref(ds);
    ds = wait_dataset(&d, broken, 60);
    cr_expect_str_eq(json_string_value(json_object_get(ds, "state")), "failed");
    cr_expect(!strstr(err_message(ds), root), "a server path: %s", err_message(ds));
    json_decref(ds);
    /* a restart registers nothing again */
    lsqd_stop(&d);
    lsqd_restart(&d, flags);
    cr_expect_eq(count_datasets(&d), 4);
    /* the root's folder is untouched by a delete: only lsqd's cache goes */
    snprintf(p, sizeof p, "/api/v1/datasets/%lld", shapes);
    r = api(&d, "DELETE", p, NULL, NULL, NULL);
    cr_expect_eq(r->status, 204);
    api_free(r);
    snprintf(p, sizeof p, "%s/shapes/cat/0.png", root);
    cr_expect_eq(access(p, R_OK), 0, "the operator's files were removed");
    lsqd_stop(&d);
    lsqd_cleanup(&d);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    cr_expect_eq(system(cmd), 0);
}

/* A dataset whose file is damaged after it was registered: the door reads
 * only its header, so the job is accepted, and the worker finds the damage.
 * The failed job says why, in words and a key the client knows (no server
 * path). */
Test(datasets, a_damaged_dataset_fails_its_job_with_the_reason, .timeout = 120)
{
    lsqd d;
    lsqd_start(&d, NULL);
    blob b = pets_archive(NULL, 0);
    api_res *r = upload(&d, "name=pets.tar.gz&test_fraction=0.2", &b);
    cr_assert_eq(r->status, 202, "%s", r->body);
    long long id = json_integer_value(json_object_get(r->json, "id"));
    api_free(r);
    json_t *ds = wait_dataset(&d, id, 60);
    cr_assert_str_eq(json_string_value(json_object_get(ds, "state")), "ready", "%s",
                     err_message(ds));
    json_decref(ds);
    /* one pixel byte flipped: same size, same header, a wrong checksum */
    char path[512];
    snprintf(path, sizeof path, "%s/datasets/%lld/dataset.lsqd", d.data, id);
    FILE *f = fopen(path, "r+b");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size - 64, SEEK_SET);
    int c = fgetc(f);
    fseek(f, size - 64, SEEK_SET);
    fputc(c ^ 0xff, f);
    fclose(f);
    char spec[256];
    snprintf(spec, sizeof spec, "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"id\":%lld},"
             "\"train\":{\"epochs\":1}}", id);
    long long job = submit_job(&d, spec);
    json_t *j = wait_job(&d, job, NULL, 60);
    cr_assert(j);
    cr_expect_str_eq(json_string_value(json_object_get(j, "state")), "failed");
    json_t *err = json_object_get(j, "error");
    cr_expect_str_eq(json_string_value(json_object_get(err, "code")), "bad_format", "%s",
                     json_dumps(err, 0));
    cr_expect_str_eq(json_string_value(json_object_get(err, "field")), "dataset.id");
    const char *m = json_string_value(json_object_get(err, "message"));
    cr_expect(m && *m && !strstr(m, d.data), "the message shows a server path: %s",
              m ? m : "(none)");
    json_decref(j);
    free(b.data);
    lsqd_cleanup(&d);
}
