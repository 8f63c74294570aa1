/* libxsmm 1.17's convolution layers (libxsmm_dnn, Debian's libxsmm-dev) on
 * bench/conv_prims.c's dense shapes: forward (FWD), backward data (BWD) and
 * backward weights (UPD), each on data already in libxsmm's blocked layout
 * (the layer's own; NCHW would need reorders, as oneDNN's do). Median CPU
 * ms of the process over --reps runs, after 2 warm-up runs; one JSON line
 * per shape and pass. Built and run by bench/xsmm/run.sh (not by make: it
 * links libxsmm, which the engine does not use).
 *
 *   xsmm_conv [--batch 128] [--threads 1] [--reps 11] */
#include <libxsmm.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../clock.h"

typedef struct {
    const char *name;
    int ic, hw, oc, k, stride, pad;
} shape;

static const shape SHAPES[] = {
    {"r20.conv1 1-16 3x3 28", 1, 28, 16, 3, 1, 1},
    {"r20.s1 16-16 3x3 28", 16, 28, 16, 3, 1, 1},
    {"r20.s2down 16-32 3x3/2 28", 16, 28, 32, 3, 2, 1},
    {"r20.s2sc 16-32 1x1/2 28", 16, 28, 32, 1, 2, 0},
    {"r20.s2 32-32 3x3 14", 32, 14, 32, 3, 1, 1},
    {"r20.s3down 32-64 3x3/2 14", 32, 14, 64, 3, 2, 1},
    {"r20.s3 64-64 3x3 7", 64, 7, 64, 3, 1, 1},
    {"cnn.conv2 32-64 3x3 14", 32, 14, 64, 3, 1, 1},
    {"mb.ex 16-64 1x1 28", 16, 28, 64, 1, 1, 0},
    {"mb.pj 64-24 1x1 14", 64, 14, 24, 1, 1, 0},
    {"mb.ex 64-256 1x1 7", 64, 7, 256, 1, 1, 0},
};

/* A tensor of the layer's own layout, of type t, bound to it. */
static void *bind(libxsmm_dnn_layer *l, libxsmm_dnn_tensor_type t, libxsmm_dnn_tensor **out)
{
    libxsmm_dnn_err_t st;
    libxsmm_dnn_tensor_datalayout *dl = libxsmm_dnn_create_tensor_datalayout(l, t, &st);
    if (st != LIBXSMM_DNN_SUCCESS) return NULL;
    const size_t bytes = libxsmm_dnn_get_tensor_size(dl, &st);
    void *p = libxsmm_aligned_malloc(bytes, 2097152);
    memset(p, 0, bytes);
    for (size_t i = 0; i < bytes / 4; i++) ((float *)p)[i] = (float)(i % 17) * 0.01f;
    *out = libxsmm_dnn_link_tensor(dl, p, &st);
    libxsmm_dnn_destroy_tensor_datalayout(dl);
    if (st != LIBXSMM_DNN_SUCCESS || libxsmm_dnn_bind_tensor(l, *out, t) != LIBXSMM_DNN_SUCCESS)
        return NULL;
    return p;
}

int main(int argc, char **argv)
{
    int batch = 128, threads = 1, reps = 11;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "xsmm_conv: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (reps < 1 || reps > 64) return 2;
    libxsmm_init();
    omp_set_num_threads(threads);
    static const char *const PASS[] = {"fwd", "bwd_data", "bwd_weights"};
    const libxsmm_dnn_compute_kind KIND[] = {LIBXSMM_DNN_COMPUTE_KIND_FWD,
                                             LIBXSMM_DNN_COMPUTE_KIND_BWD,
                                             LIBXSMM_DNN_COMPUTE_KIND_UPD};
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        const shape *sh = &SHAPES[si];
        libxsmm_dnn_conv_desc cd;
        memset(&cd, 0, sizeof cd);
        cd.N = batch, cd.C = sh->ic, cd.H = sh->hw, cd.W = sh->hw, cd.K = sh->oc;
        cd.R = sh->k, cd.S = sh->k, cd.u = sh->stride, cd.v = sh->stride;
        cd.pad_h = cd.pad_w = sh->pad, cd.pad_h_in = cd.pad_w_in = sh->pad;
        cd.threads = threads, cd.algo = LIBXSMM_DNN_CONV_ALGO_DIRECT;
        cd.buffer_format = LIBXSMM_DNN_TENSOR_FORMAT_LIBXSMM;
        cd.filter_format = LIBXSMM_DNN_TENSOR_FORMAT_LIBXSMM;
        cd.fuse_ops = LIBXSMM_DNN_CONV_FUSE_NONE, cd.options = LIBXSMM_DNN_CONV_OPTION_OVERWRITE;
        cd.datatype_in = cd.datatype_out = LIBXSMM_DNN_DATATYPE_F32;
        libxsmm_dnn_err_t st;
        libxsmm_dnn_layer *l = libxsmm_dnn_create_conv_layer(cd, &st);
        if (!l || st != LIBXSMM_DNN_SUCCESS) {
            printf("{\"shape\":\"%s\",\"error\":\"%s\"}\n", sh->name, libxsmm_dnn_get_error(st));
            continue;
        }
        libxsmm_dnn_tensor *t[6];
        const libxsmm_dnn_tensor_type tt[6] = {
            LIBXSMM_DNN_REGULAR_INPUT,  LIBXSMM_DNN_GRADIENT_INPUT,  LIBXSMM_DNN_REGULAR_OUTPUT,
            LIBXSMM_DNN_GRADIENT_OUTPUT, LIBXSMM_DNN_REGULAR_FILTER, LIBXSMM_DNN_GRADIENT_FILTER};
        void *buf[6];
        int ok = 1;
        for (int i = 0; i < 6; i++) ok &= (buf[i] = bind(l, tt[i], &t[i])) != NULL;
        const size_t ss = libxsmm_dnn_get_scratch_size(l, LIBXSMM_DNN_COMPUTE_KIND_ALL, &st);
        void *scratch = libxsmm_aligned_scratch(ss, 2097152);
        ok &= libxsmm_dnn_bind_scratch(l, LIBXSMM_DNN_COMPUTE_KIND_ALL, scratch) ==
              LIBXSMM_DNN_SUCCESS;
        const int oh = (sh->hw + 2 * sh->pad - sh->k) / sh->stride + 1;
        const double gflop = 2.0 * batch * sh->oc * oh * oh * sh->ic * sh->k * sh->k / 1e9;
        for (int pass = 0; pass < 3 && ok; pass++) {
            double tm[64];
            int bad = 0;
            for (int r = 0; r < reps + 2; r++) {
                const double c0 = cpu_s();
#pragma omp parallel
                {
                    if (libxsmm_dnn_execute_st(l, KIND[pass], 0, omp_get_thread_num()) !=
                        LIBXSMM_DNN_SUCCESS)
                        bad = 1;
                }
                if (r >= 2) tm[r - 2] = (cpu_s() - c0) * 1e3;
            }
            qsort(tm, (size_t)reps, sizeof *tm, cmp_double);
            printf("{\"shape\":\"%s\",\"batch\":%d,\"threads\":%d,\"pass\":\"%s\",\"gflop\":%.4f,"
                   "\"xsmm_cpu_ms\":%.3f,\"ok\":%s,\"arch\":\"%s\"}\n",
                   sh->name, batch, threads, PASS[pass], gflop, tm[reps / 2], bad ? "false" : "true",
                   libxsmm_get_target_arch());
            fflush(stdout);
        }
        libxsmm_dnn_release_scratch(l, LIBXSMM_DNN_COMPUTE_KIND_ALL);
        libxsmm_free(scratch);
        for (int i = 0; i < 6; i++) {
            libxsmm_dnn_release_tensor(l, tt[i]);
            libxsmm_dnn_destroy_tensor(t[i]);
            libxsmm_free(buf[i]);
        }
        libxsmm_dnn_destroy_conv_layer(l);
    }
    libxsmm_finalize();
    return 0;
}
