/* Loader throughput: how many cached colour 32x32 images one core turns into
 * a training batch (random crop with padding, horizontal flip, per-channel
 * normalisation) per second, against the images per second training
 * consumes. The images are an in-memory cache of random bytes, as
 * `lsq dataset import` leaves them for training. One JSON line out.
 *
 *   loader_bench [--images 20000] [--batch 128] [--pad 4] [--seconds 2]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "data/data.h"

static const char *cpu_name(char *buf, size_t n)
{
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return buf;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n\"\\")] = '\0';
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    int images = 20000, batch = 128, pad = 4;
    double seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images") && i + 1 < argc) images = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pad") && i + 1 < argc) pad = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "loader_bench: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (images < batch || batch < 1 || pad < 0 || pad > 8 || seconds <= 0) {
        fprintf(stderr, "loader_bench: bad arguments\n");
        return 2;
    }
    omp_set_num_threads(1);  /* per core */
    enum { C = 3, H = 32, W = 32 };
    lsq_dataset ds = {images, C, H, W, 10, malloc((size_t)images * C * H * W),
                      malloc((size_t)images * sizeof(int32_t))};
    float *x = malloc((size_t)batch * C * H * W * sizeof *x);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    if (!ds.pixels || !ds.labels || !x || !y) {
        fprintf(stderr, "loader_bench: out of memory\n");
        return 1;
    }
    uint64_t s = 1;
    for (size_t i = 0; i < (size_t)images * C * H * W; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ds.pixels[i] = (uint8_t)(s >> 56);
    }
    for (int i = 0; i < images; i++) ds.labels[i] = i % 10;
    lsq_loader l;
    lsq_err err;
    if (loader_init(&l, &ds, batch, 1, 1, pad, 1, &err) != LSQ_OK) {
        fprintf(stderr, "loader_bench: %s\n", err.message);
        return 1;
    }
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    loader_set_normalize(&l, mean, std);
    int nb = loader_batches(&l);
    long filled = 0;
    for (int b = 0; b < 10; b++) loader_fill(&l, b % nb, x, y);  /* warm up */
    double t0 = now_s(), t;
    int epoch = 0, b = 0;
    do {
        for (int k = 0; k < 20; k++) {
            filled += loader_fill(&l, b, x, y);
            if (++b == nb) loader_set_epoch(&l, ++epoch), b = 0;
        }
        t = now_s() - t0;
    } while (t < seconds);
    double ips = filled / t;
    char cpu[256];
    printf("{\"bench\":\"loader\",\"shape\":[%d,%d,%d],\"batch\":%d,\"crop_pad\":%d,\"flip\":true,"
           "\"normalize\":true,\"threads\":1,\"images_per_s\":%.0f,\"us_per_batch\":%.1f,"
           "\"cpu\":\"%s\"}\n",
           C, H, W, batch, pad, ips, 1e6 * t / ((double)filled / batch), cpu_name(cpu, sizeof cpu));
    loader_free(&l);
    dataset_free(&ds);
    free(x);
    free(y);
    return 0;
}
