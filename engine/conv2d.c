/* conv2d as im2col + SGEMM, one image at a time.
 *
 * For image i, with K = IC*KH*KW and P = OH*OW:
 *   forward   out_i (OC, P) = w (OC, K) · col_i (K, P) + b
 *   backward  dw (OC, K)   += dout_i (OC, P) · col_i^T (P, K)
 *             dcol (K, P)   = w^T (K, OC) · dout_i (OC, P);  din_i += col2im(dcol)
 * Images are handed out to OpenMP threads dynamically, each thread with its
 * own im2col slot of scratch and single-threaded SGEMM (see par.h); dw and db
 * are summed per fixed group of images (below), so results do not depend on
 * the thread count. A 1x1, stride 1, unpadded conv
 * needs no im2col: the input image already is col_i. */
#include "layers.h"
#include "par.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

int conv2d_dims_init(conv2d_dims *d, int n, int ic, int ih, int iw, int oc,
                     int kh, int kw, int stride, int pad)
{
    memset(d, 0, sizeof *d);
    if (n < 1 || ic < 1 || ih < 1 || iw < 1 || oc < 1 || kh < 1 || kw < 1 ||
        stride < 1 || pad < 0)
        return -1;
    int oh = (ih + 2 * pad - kh) / stride + 1;
    int ow = (iw + 2 * pad - kw) / stride + 1;
    if (ih + 2 * pad < kh || iw + 2 * pad < kw || oh < 1 || ow < 1) return -1;
    *d = (conv2d_dims){.n = n, .ic = ic, .ih = ih, .iw = iw, .oc = oc,
                       .kh = kh, .kw = kw, .stride = stride, .pad = pad,
                       .oh = oh, .ow = ow};
    return 0;
}

/* Images are handed to threads dynamically (a thread that the OS
 * preempts does not hold up the others), so dw and db are summed per GROUP of
 * images, not per thread: group g always covers the same images, whatever
 * thread runs it, and the group partials are added in group order. Results
 * are therefore the same for every thread count. */
#define CONV_GROUPS 16

static int n_groups(int n) { return n < CONV_GROUPS ? n : CONV_GROUPS; }

static size_t align16(size_t s) { return (s + 15) & ~(size_t)15; }

/* Per-thread im2col slot: col (K, P), 64-byte aligned. */
static size_t col_floats(const conv2d_dims *d)
{
    return align16((size_t)d->ic * d->kh * d->kw * d->oh * d->ow);
}

/* Per-group partial sums: dw (OC, K), then db (OC). */
static size_t part_floats(const conv2d_dims *d)
{
    return align16((size_t)d->oc * d->ic * d->kh * d->kw + (size_t)d->oc);
}

size_t conv2d_scratch_floats(const conv2d_dims *d)
{
    return col_floats(d) * PAR_MAX_THREADS + part_floats(d) * CONV_GROUPS;
}

static int is_pointwise(const conv2d_dims *d)
{
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

/* Output columns ox whose input column ox*s + kj - pad lies in [0, iw):
 * returns the first one in *lo and one past the last in *hi. */
static void valid_range(int o, int s, int off, int in, int *lo, int *hi)
{
    /* smallest ox with ox*s + off >= 0 */
    int a = off >= 0 ? 0 : (-off + s - 1) / s;
    /* smallest ox with ox*s + off >= in */
    int b = in - off <= 0 ? 0 : (in - off + s - 1) / s;
    if (a > o) a = o;
    if (b > o) b = o;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Stride 1 and an output as wide as the input ("same" padding): then the
 * valid part of every col row is ONE contiguous run of the input plane,
 * shifted; the columns that wrap around a row edge are fixed up after. */
static int is_same_s1(const conv2d_dims *d)
{
    return d->stride == 1 && d->ow == d->iw;
}

static void im2col_same_s1(float *col, const float *in, const conv2d_dims *d)
{
    const int oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    const size_t p = (size_t)oh * ow;
    for (int c = 0; c < d->ic; c++) {
        const float *plane = in + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi, yoff = ki - d->pad;
            valid_range(oh, 1, yoff, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, 1, xoff, iw, &xlo, &xhi);
                float *row = col + ((size_t)(c * d->kh + ki) * d->kw + kj) * p;
                if (yhi <= ylo || xhi <= xlo) {
                    memset(row, 0, sizeof *row * p);
                    continue;
                }
                memset(row, 0, sizeof *row * ((size_t)ylo * ow + xlo));
                /* from (ylo, xlo) to (yhi-1, xhi-1), both valid, inclusive */
                size_t first = (size_t)ylo * ow + xlo;
                size_t last = (size_t)(yhi - 1) * ow + (xhi - 1);
                memcpy(row + first, plane + (ptrdiff_t)(ylo + yoff) * iw + xlo + xoff,
                       sizeof *row * (last - first + 1));
                memset(row + last + 1, 0, sizeof *row * (p - last - 1));
                for (int oy = ylo; oy < yhi; oy++) {
                    float *r = row + (size_t)oy * ow;
                    for (int ox = 0; ox < xlo; ox++) r[ox] = 0.0f;
                    for (int ox = xhi; ox < ow; ox++) r[ox] = 0.0f;
                }
            }
        }
    }
}

/* din (IC, IH, IW) += col2im(dcol (K, P)) for the same_s1 shape. dcol is
 * scratch: its wrapped columns are zeroed so that each row adds in one run
 * (adding +0 leaves a value as it is). */
static void col2im_add_same_s1(float *din, float *dcol, const conv2d_dims *d)
{
    const int oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    const size_t p = (size_t)oh * ow;
    for (int c = 0; c < d->ic; c++) {
        float *plane = din + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi, yoff = ki - d->pad;
            valid_range(oh, 1, yoff, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, 1, xoff, iw, &xlo, &xhi);
                if (yhi <= ylo || xhi <= xlo) continue;
                float *row = dcol + ((size_t)(c * d->kh + ki) * d->kw + kj) * p;
                for (int oy = ylo; oy < yhi; oy++) {
                    float *r = row + (size_t)oy * ow;
                    for (int ox = 0; ox < xlo; ox++) r[ox] = 0.0f;
                    for (int ox = xhi; ox < ow; ox++) r[ox] = 0.0f;
                }
                size_t first = (size_t)ylo * ow + xlo;
                size_t len = (size_t)(yhi - 1) * ow + (xhi - 1) - first + 1;
                const float *src = row + first;
                float *dst = plane + (ptrdiff_t)(ylo + yoff) * iw + xlo + xoff;
#pragma omp simd
                for (size_t j = 0; j < len; j++) dst[j] += src[j];
            }
        }
    }
}

/* col (K, P) from one image in (IC, IH, IW). */
static void im2col(float *col, const float *in, const conv2d_dims *d)
{
    if (is_same_s1(d)) {
        im2col_same_s1(col, in, d);
        return;
    }
    const int s = d->stride, oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    for (int c = 0; c < d->ic; c++) {
        const float *plane = in + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi;
            valid_range(oh, s, ki - d->pad, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, s, xoff, iw, &xlo, &xhi);
                float *row = col + ((size_t)(c * d->kh + ki) * d->kw + kj) *
                                       (size_t)oh * ow;
                memset(row, 0, sizeof *row * (size_t)ylo * ow);
                for (int oy = ylo; oy < yhi; oy++) {
                    float *dst = row + (size_t)oy * ow;
                    const float *src = plane + (size_t)(oy * s + ki - d->pad) * iw;
                    for (int ox = 0; ox < xlo; ox++) dst[ox] = 0.0f;
                    if (s == 1) {
                        /* rows are short (OW floats): an inline loop beats
                         * a memcpy call */
                        const float *sp = src + xoff;
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++) dst[ox] = sp[ox];
                    } else {
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++)
                            dst[ox] = src[ox * s + xoff];
                    }
                    for (int ox = xhi; ox < ow; ox++) dst[ox] = 0.0f;
                }
                memset(row + (size_t)yhi * ow, 0,
                       sizeof *row * (size_t)(oh - yhi) * ow);
            }
        }
    }
}

/* din (IC, IH, IW) += col2im(dcol (K, P)) for one image. */
static void col2im_add(float *din, float *dcol, const conv2d_dims *d)
{
    if (is_same_s1(d)) {
        col2im_add_same_s1(din, dcol, d);
        return;
    }
    const int s = d->stride, oh = d->oh, ow = d->ow, ih = d->ih, iw = d->iw;
    for (int c = 0; c < d->ic; c++) {
        float *plane = din + (size_t)c * ih * iw;
        for (int ki = 0; ki < d->kh; ki++) {
            int ylo, yhi;
            valid_range(oh, s, ki - d->pad, ih, &ylo, &yhi);
            for (int kj = 0; kj < d->kw; kj++) {
                int xlo, xhi, xoff = kj - d->pad;
                valid_range(ow, s, xoff, iw, &xlo, &xhi);
                const float *row = dcol + ((size_t)(c * d->kh + ki) * d->kw + kj) *
                                              (size_t)oh * ow;
                for (int oy = ylo; oy < yhi; oy++) {
                    const float *src = row + (size_t)oy * ow;
                    float *dst = plane + (size_t)(oy * s + ki - d->pad) * iw + xoff;
                    if (s == 1) {
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++) dst[ox] += src[ox];
                    } else {
#pragma omp simd
                        for (int ox = xlo; ox < xhi; ox++) dst[ox * s] += src[ox];
                    }
                }
            }
        }
    }
}

void conv2d_forward(float *out, const float *in, const float *w, const float *b,
                    const conv2d_dims *d, float *scratch)
{
    const int k = d->ic * d->kh * d->kw, p = d->oh * d->ow, oc = d->oc;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = col_floats(d);
    const int pw = is_pointwise(d);
    const int nt = par_gemm_threads();

#pragma omp parallel num_threads(nt)
    {
        float *col = scratch + slot * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < d->n; i++) {
            const float *x = in + in_sz * i;
            float *y = out + out_sz * i;
            if (!pw) im2col(col, x, d);
            float beta = 0.0f;
            if (b) {
                for (int o = 0; o < oc; o++) {
                    float bo = b[o];
                    float *yo = y + (size_t)o * p;
                    for (int j = 0; j < p; j++) yo[j] = bo;
                }
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc, p, k,
                        1.0f, w, k, pw ? x : col, p, beta, y, p);
        }
    }
}

void conv2d_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, const conv2d_dims *d,
                     float *scratch)
{
    const int k = d->ic * d->kh * d->kw, p = d->oh * d->ow, oc = d->oc;
    const size_t in_sz = (size_t)d->ic * d->ih * d->iw, out_sz = (size_t)oc * p;
    const size_t slot = col_floats(d), wsz = (size_t)oc * k, psz = part_floats(d);
    float *parts = scratch + slot * PAR_MAX_THREADS;
    const int pw = is_pointwise(d);
    const int nt = par_gemm_threads();
    const int ng = n_groups(d->n);

#pragma omp parallel num_threads(nt)
    {
        float *col = scratch + slot * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int gi = 0; gi < ng; gi++) {
            float *dwp = parts + psz * (size_t)gi, *dbp = dwp + wsz;
            if (db) memset(dbp, 0, sizeof *dbp * (size_t)oc);
            const int lo = (int)((long)d->n * gi / ng);
            const int hi = (int)((long)d->n * (gi + 1) / ng);
            for (int i = lo; i < hi; i++) {
                const float *x = in + in_sz * i;
                const float *g = dout + out_sz * i;
                if (db) {
                    for (int o = 0; o < oc; o++) {
                        const float *go = g + (size_t)o * p;
                        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                        for (int j = 0; j < p; j++) acc += go[j];
                        dbp[o] += acc;
                    }
                }
                if (dw) {
                    if (!pw) im2col(col, x, d);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, k, p,
                                1.0f, g, p, pw ? x : col, p, i > lo ? 1.0f : 0.0f,
                                dwp, k);
                }
                if (din) {
                    float *dx = din + in_sz * i;
                    if (pw) {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, oc,
                                    1.0f, w, k, g, p, 1.0f, dx, p);
                    } else {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, oc,
                                    1.0f, w, k, g, p, 0.0f, col, p);
                        col2im_add(dx, col, d);
                    }
                }
            }
        }

        /* Add the group partials in group order (deterministic). */
        if (dw) {
#pragma omp for schedule(static)
            for (size_t j = 0; j < wsz; j++) {
                float acc = dw[j];
                for (int gi = 0; gi < ng; gi++) acc += parts[psz * (size_t)gi + j];
                dw[j] = acc;
            }
        }
    }
    if (db) {
        for (int o = 0; o < oc; o++) {
            float acc = db[o];
            for (int gi = 0; gi < ng; gi++) acc += parts[psz * (size_t)gi + wsz + o];
            db[o] = acc;
        }
    }
}
