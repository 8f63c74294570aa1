/* conv2d on oneDNN (dnnl_conv.h).
 *
 * One cache entry per (shape, bias, layout, thread count) holds up to three
 * "ops": forward, backward data, backward weights. An op is a oneDNN
 * primitive plus, for each of its arguments, the user's NCHW descriptor and
 * the primitive's own; where they differ the op keeps a reorder primitive
 * each way. An output that must be added to (+=) goes through a reorder with
 * a sum post-op, so that accumulation costs no extra pass. The blocked
 * copies go to buffers shared by every entry (one per argument role), grown
 * to the largest shape seen. */
#include "nn/dnnl_conv.h"

#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const DNNL_CONV_LAYOUT_NAMES[] = {"blocked", "plain"};
_Static_assert(sizeof DNNL_CONV_LAYOUT_NAMES / sizeof *DNNL_CONV_LAYOUT_NAMES ==
                   DNNL_CONV_LAYOUT_COUNT,
               "a name per dnnl_conv_layout");

const char *const DNNL_CONV_ALG_NAMES[] = {"direct", "winograd"};
_Static_assert(sizeof DNNL_CONV_ALG_NAMES / sizeof *DNNL_CONV_ALG_NAMES == DNNL_CONV_ALG_COUNT,
               "a name per dnnl_conv_alg");

#ifndef LSQ_HAVE_DNNL

int dnnl_conv_available(void) { return 0; }

int dnnl_conv_forward(float *out, const float *in, const float *w, const float *b,
                      const conv2d_dims *d, dnnl_conv_layout layout)
{
    (void)out, (void)in, (void)w, (void)b, (void)d, (void)layout;
    return -1;
}

int dnnl_conv_backward(float *din, int din_set, float *dw, float *db, const float *dout,
                       const float *in, const float *w, const conv2d_dims *d,
                       dnnl_conv_layout layout)
{
    (void)din, (void)din_set, (void)dw, (void)db, (void)dout, (void)in, (void)w, (void)d;
    (void)layout;
    return -1;
}

double dnnl_conv_reorder_seconds(void) { return 0.0; }

int dnnl_conv_backward_hooked(float *din, int din_set, float *dw, float *db, const float *dout,
                              const float *in, const float *w, const conv2d_dims *d,
                              dnnl_conv_layout layout, const dnnl_conv_hooks *h)
{
    (void)din, (void)din_set, (void)dw, (void)db, (void)dout, (void)in, (void)w, (void)d;
    (void)layout, (void)h;
    return -1;
}

const char *dnnl_conv_impl(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout, int pass)
{
    (void)d, (void)has_bias, (void)layout, (void)pass;
    return "";
}

void dnnl_conv_cache_free(void) {}

int dnnl_conv_forward_alg(float *out, const float *in, const float *w, const float *b,
                          const conv2d_dims *d, dnnl_conv_layout layout, dnnl_conv_alg alg)
{
    (void)alg;
    return dnnl_conv_forward(out, in, w, b, d, layout);
}

int dnnl_conv_backward_alg(float *din, int din_set, float *dw, float *db, const float *dout,
                           const float *in, const float *w, const conv2d_dims *d,
                           dnnl_conv_layout layout, dnnl_conv_alg alg)
{
    (void)alg;
    return dnnl_conv_backward(din, din_set, dw, db, dout, in, w, d, layout);
}

const char *dnnl_conv_impl_alg(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout,
                               dnnl_conv_alg alg, int pass)
{
    (void)alg;
    return dnnl_conv_impl(d, has_bias, layout, pass);
}

int dnnl_conv_backward_bf16(float *din, int din_set, float *dw, const float *dout,
                            const uint16_t *xcodes, const int32_t *wcodes, float s_x,
                            const float *s_w, int w_channels, const conv2d_dims *d)
{
    (void)din, (void)din_set, (void)dw, (void)dout, (void)xcodes, (void)wcodes, (void)s_x;
    (void)s_w, (void)w_channels, (void)d;
    return -1;
}

int dnnl_conv_bf16_ready(const conv2d_dims *d)
{
    (void)d;
    return 0;
}

const char *dnnl_conv_impl_bf16(const conv2d_dims *d, int pass)
{
    (void)d, (void)pass;
    return "";
}

#else

#include <dnnl.h>

int dnnl_conv_available(void) { return 1; }

/* The shared buffers, one per argument role; S_B*: the bf16 backward's staging buffers (dnnl_conv_backward_bf16): the
 * output gradient scaled for the data pass and for the weight pass, the
 * weight codes. */
enum { S_SRC, S_DST, S_DST2, S_WEI, S_DSRC, S_DWEI, S_BIAS, S_BDOUT_D, S_BDOUT_W, S_BWEI, S_COUNT };

enum { OP_FWD, OP_BWD_DATA, OP_BWD_W, OP_COUNT };

#define ARG_MAX 4

typedef struct {
    int arg;     /* DNNL_ARG_* */
    int out;     /* written by the primitive */
    int slot;    /* S_*: where the primitive's copy lives */
    int reorder; /* the primitive's layout is not the user's */
    dnnl_memory_desc_t umd, pmd;
    dnnl_memory_t umem, pmem;
    dnnl_primitive_t to_prim;     /* input: user -> primitive */
    dnnl_primitive_t to_user;     /* output: user = primitive's */
    dnnl_primitive_t to_user_add; /* output: user += primitive's */
} op_arg;

typedef struct {
    int state; /* 0 not tried, 1 ready, -1 refused */
    dnnl_primitive_t prim;
    int nargs;
    op_arg a[ARG_MAX];
    char impl[64];
} conv_op;

typedef struct {
    conv2d_dims d;
    int has_bias, threads;
    dnnl_conv_layout layout;
    dnnl_conv_alg alg;
    dnnl_primitive_desc_t fwd_pd; /* the backward's hint */
    conv_op op[OP_COUNT];
    int bf16; /* the backward on codes in bf16 (dnnl_conv_backward_bf16) */
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t eng;
static dnnl_stream_t stream;
static int eng_state; /* 0 not tried, 1 ready, -1 failed */
static entry *cache;
static int n_cache, cap_cache;
static void *slots[S_COUNT];
static size_t slot_cap[S_COUNT];
static double reorder_s;

static dnnl_alg_kind_t alg_kind(dnnl_conv_alg a)
{
    return a == DNNL_CONV_WINOGRAD ? dnnl_convolution_winograd : dnnl_convolution_direct;
}

static int eng_ready(void)
{
    if (eng_state == 0) {
        eng_state = -1;
        if (dnnl_engine_create(&eng, dnnl_cpu, 0) == dnnl_success) {
            if (dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) == dnnl_success)
                eng_state = 1;
            else
                dnnl_engine_destroy(eng);
        }
    }
    return eng_state == 1;
}

static void *slot_get(int s, size_t bytes)
{
    if (bytes > slot_cap[s]) {
        free(slots[s]);
        const size_t sz = (bytes + 63) / 64 * 64;
        slots[s] = aligned_alloc(64, sz);
        slot_cap[s] = slots[s] ? sz : 0;
    }
    return slots[s];
}

static void op_free(conv_op *op)
{
    for (int i = 0; i < op->nargs; i++) {
        op_arg *a = &op->a[i];
        if (a->umem) dnnl_memory_destroy(a->umem);
        if (a->pmem) dnnl_memory_destroy(a->pmem);
        if (a->to_prim) dnnl_primitive_destroy(a->to_prim);
        if (a->to_user) dnnl_primitive_destroy(a->to_user);
        if (a->to_user_add) dnnl_primitive_destroy(a->to_user_add);
    }
    if (op->prim) dnnl_primitive_destroy(op->prim);
    memset(op, 0, sizeof *op);
}

static int make_reorder(dnnl_primitive_t *r, const dnnl_memory_desc_t *from,
                        const dnnl_memory_desc_t *to, int add)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int rc = -1;
    if (add) {
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) goto out;
        if (dnnl_post_ops_create(&po) != dnnl_success) goto out;
        if (dnnl_post_ops_append_sum(po, 1.0f) != dnnl_success) goto out;
        if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) goto out;
    }
    if (dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, attr) != dnnl_success)
        goto out;
    if (dnnl_primitive_create(r, pd) != dnnl_success) goto out;
    rc = 0;
out:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Adds an argument to op: the user's descriptor umd, the primitive's as
 * the primitive descriptor reports it for query q, index qi. */
static int op_arg_init(conv_op *op, const_dnnl_primitive_desc_t pd, int arg, dnnl_query_t q,
                       int qi, const dnnl_memory_desc_t *umd, int out, int slot)
{
    op_arg *a = &op->a[op->nargs++];
    a->arg = arg, a->out = out, a->slot = slot, a->umd = *umd;
    a->pmd = *dnnl_primitive_desc_query_md(pd, q, qi);
    a->reorder = !dnnl_memory_desc_equal(&a->umd, &a->pmd);
    if (dnnl_memory_create(&a->umem, &a->umd, eng, DNNL_MEMORY_NONE) != dnnl_success) return -1;
    if (dnnl_memory_create(&a->pmem, &a->pmd, eng, DNNL_MEMORY_NONE) != dnnl_success) return -1;
    if (!out && a->reorder && make_reorder(&a->to_prim, &a->umd, &a->pmd, 0) != 0) return -1;
    if (out && (make_reorder(&a->to_user, &a->pmd, &a->umd, 0) != 0 ||
                make_reorder(&a->to_user_add, &a->pmd, &a->umd, 1) != 0))
        return -1;
    return 0;
}

/* The user descriptors of a shape: src/diff_src (N, IC, IH, IW) nchw,
 * weights (OC, IC, KH, KW) oihw or (G, OC/G, IC/G, KH, KW) goihw, dst
 * (N, OC, OH, OW) nchw, bias (OC). */
typedef struct {
    dnnl_memory_desc_t src, wei, dst, bias;
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} shape_mds;

static int shape_init(shape_mds *m, const conv2d_dims *d)
{
    const int g = d->groups > 1 ? d->groups : 1, dl = d->dilation > 1 ? d->dilation : 1;
    const dnnl_dims_t src = {d->n, d->ic, d->ih, d->iw}, dst = {d->n, d->oc, d->oh, d->ow};
    const dnnl_dims_t bias = {d->oc};
    if (dnnl_memory_desc_init_by_tag(&m->src, 4, src, dnnl_f32, dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&m->dst, 4, dst, dnnl_f32, dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&m->bias, 1, bias, dnnl_f32, dnnl_x) != dnnl_success)
        return -1;
    if (g == 1) {
        const dnnl_dims_t w = {d->oc, d->ic, d->kh, d->kw};
        if (dnnl_memory_desc_init_by_tag(&m->wei, 4, w, dnnl_f32, dnnl_oihw) != dnnl_success)
            return -1;
    } else {
        const dnnl_dims_t w = {g, d->oc / g, d->ic / g, d->kh, d->kw};
        if (dnnl_memory_desc_init_by_tag(&m->wei, 5, w, dnnl_f32, dnnl_goihw) != dnnl_success)
            return -1;
    }
    m->strides[0] = m->strides[1] = d->stride;
    m->dilates[0] = m->dilates[1] = dl - 1;
    m->pad_l[0] = m->pad_l[1] = d->pad;
    /* lsq's output size rounds down: the right padding is what that leaves */
    m->pad_r[0] = (dnnl_dim_t)(d->oh - 1) * d->stride + (dnnl_dim_t)(d->kh - 1) * dl + 1 - d->ih -
                  d->pad;
    m->pad_r[1] = (dnnl_dim_t)(d->ow - 1) * d->stride + (dnnl_dim_t)(d->kw - 1) * dl + 1 - d->iw -
                  d->pad;
    return 0;
}

/* md with format "any" (BLOCKED) or the user's own (PLAIN). */
static dnnl_memory_desc_t pick(const dnnl_memory_desc_t *user, dnnl_conv_layout layout)
{
    if (layout == DNNL_CONV_PLAIN) return *user;
    dnnl_memory_desc_t m;
    dnnl_memory_desc_init_by_tag(&m, user->ndims, user->dims, dnnl_f32, dnnl_format_tag_any);
    return m;
}

static int fwd_pd_ready(entry *e, const shape_mds *m)
{
    if (e->fwd_pd) return 0;
    dnnl_convolution_desc_t cd;
    const dnnl_memory_desc_t s = pick(&m->src, e->layout), w = pick(&m->wei, e->layout),
                             o = pick(&m->dst, e->layout);
    if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training,
                                                   alg_kind(e->alg), &s, &w,
                                                   e->has_bias ? &m->bias : NULL, &o, m->strides,
                                                   m->dilates, m->pad_l, m->pad_r) != dnnl_success)
        return -1;
    if (dnnl_primitive_desc_create(&e->fwd_pd, &cd, NULL, eng, NULL) != dnnl_success) {
        e->fwd_pd = NULL;
        return -1;
    }
    return 0;
}

/* Creates op `which` of entry e; its state says whether it worked. */
static void op_create(entry *e, int which)
{
    conv_op *op = &e->op[which];
    shape_mds m;
    dnnl_primitive_desc_t pd = NULL;
    op->state = -1;
    if (shape_init(&m, &e->d) != 0 || fwd_pd_ready(e, &m) != 0) return;
    const dnnl_memory_desc_t s = pick(&m.src, e->layout), w = pick(&m.wei, e->layout),
                             o = pick(&m.dst, e->layout);
    int ok = 0;
    if (which == OP_FWD) {
        if (dnnl_primitive_desc_clone(&pd, e->fwd_pd) != dnnl_success) return;
        ok = op_arg_init(op, pd, DNNL_ARG_SRC, dnnl_query_src_md, 0, &m.src, 0, S_SRC) == 0 &&
             op_arg_init(op, pd, DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &m.wei, 0, S_WEI) ==
                 0 &&
             (!e->has_bias || op_arg_init(op, pd, DNNL_ARG_BIAS, dnnl_query_weights_md, 1, &m.bias,
                                          0, S_BIAS) == 0) &&
             op_arg_init(op, pd, DNNL_ARG_DST, dnnl_query_dst_md, 0, &m.dst, 1, S_DST) == 0;
    } else if (which == OP_BWD_DATA) {
        dnnl_convolution_desc_t cd;
        if (dnnl_dilated_convolution_backward_data_desc_init(
                &cd, alg_kind(e->alg), &s, &w, &o, m.strides, m.dilates, m.pad_l,
                m.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, NULL, eng, e->fwd_pd) != dnnl_success) {
            pd = NULL;
            goto out;
        }
        ok = op_arg_init(op, pd, DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &m.dst, 0, S_DST) ==
                 0 &&
             op_arg_init(op, pd, DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &m.wei, 0, S_WEI) ==
                 0 &&
             op_arg_init(op, pd, DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &m.src, 1, S_DSRC) ==
                 0;
    } else {
        dnnl_convolution_desc_t cd;
        if (dnnl_dilated_convolution_backward_weights_desc_init(
                &cd, alg_kind(e->alg), &s, &w, e->has_bias ? &m.bias : NULL, &o,
                m.strides, m.dilates, m.pad_l, m.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, NULL, eng, e->fwd_pd) != dnnl_success) {
            pd = NULL;
            goto out;
        }
        /* diff_dst in S_DST when the backward data pass wants it in the same
         * layout (then its copy is shared), else in S_DST2 */
        const conv_op *bd = &e->op[OP_BWD_DATA];
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
        const int share = bd->state == 1 && dnnl_memory_desc_equal(&bd->a[0].pmd, want);
        ok = op_arg_init(op, pd, DNNL_ARG_SRC, dnnl_query_src_md, 0, &m.src, 0, S_SRC) == 0 &&
             op_arg_init(op, pd, DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &m.dst, 0,
                         share ? S_DST : S_DST2) == 0 &&
             op_arg_init(op, pd, DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &m.wei, 1,
                         S_DWEI) == 0 &&
             (!e->has_bias || op_arg_init(op, pd, DNNL_ARG_DIFF_BIAS, dnnl_query_diff_weights_md,
                                          1, &m.bias, 1, S_BIAS) == 0);
    }
    if (!ok) goto out;
    if (dnnl_primitive_create(&op->prim, pd) != dnnl_success) goto out;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(op->impl, sizeof op->impl, "%s", impl);
    op->state = 1;
out:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (op->state != 1) {
        op_free(op);
        op->state = -1;
    }
}

static void reorder_run(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to)
{
    const double t0 = omp_get_wtime();
    const dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    dnnl_primitive_execute(r, stream, 2, args);
    dnnl_stream_wait(stream);
    reorder_s += omp_get_wtime() - t0;
}

/* Grows the shared buffers op stages its arguments in: after this, op_run
 * cannot fail for want of memory. */
static int op_reserve(const conv_op *op)
{
    for (int i = 0; i < op->nargs; i++)
        if ((op->a[i].reorder || op->a[i].out) &&
            !slot_get(op->a[i].slot, dnnl_memory_desc_get_size(&op->a[i].pmd)))
            return -1;
    return 0;
}

/* Runs op on the user's buffers ptr[i] (in the order of op->a); an output
 * with add[i] is added to. Inputs whose bit is set in `filled` are already
 * in their slot (shared with the op before). Returns 0 or -1. */
static int op_run(conv_op *op, void *const ptr[ARG_MAX], const int add[ARG_MAX], unsigned filled,
                  unsigned taken)
{
    dnnl_exec_arg_t args[ARG_MAX];
    for (int i = 0; i < op->nargs; i++) {
        op_arg *a = &op->a[i];
        dnnl_memory_set_data_handle(a->umem, ptr[i]);
        const unsigned bit = 1u << i;
        const int staged = a->reorder || (a->out && add[i]) || (filled & bit) || (taken & bit);
        args[i].arg = a->arg;
        args[i].memory = staged ? a->pmem : a->umem;
        if (!staged) continue;
        void *buf = slot_get(a->slot, dnnl_memory_desc_get_size(&a->pmd));
        if (!buf) return -1;
        dnnl_memory_set_data_handle(a->pmem, buf);
        if (!a->out && !(filled & (1u << i))) reorder_run(a->to_prim, a->umem, a->pmem);
    }
    if (dnnl_primitive_execute(op->prim, stream, op->nargs, args) != dnnl_success) return -1;
    dnnl_stream_wait(stream);
    for (int i = 0; i < op->nargs; i++) {
        op_arg *a = &op->a[i];
        if (a->out && !(taken & (1u << i)) && (a->reorder || add[i]))
            reorder_run(add[i] ? a->to_user_add : a->to_user, a->pmem, a->umem);
    }
    return 0;
}

/* The layout of md as dnnl_conv_blocking, or -1 when it is not a 4-D
 * tensor with at most one inner block, on its channels. */
static int blocking_of(const dnnl_memory_desc_t *md, dnnl_conv_blocking *b)
{
    if (md->ndims != 4 || md->format_kind != dnnl_blocked) return -1;
    const dnnl_blocking_desc_t *k = &md->format_desc.blocking;
    if (k->inner_nblks > 1) return -1;
    if (k->inner_nblks == 1 && (k->inner_idxs[0] != 1 || k->inner_blks[0] > 16)) return -1;
    if (md->offset0 != 0) return -1;
    b->block = k->inner_nblks ? (int)k->inner_blks[0] : 1;
    b->sn = (size_t)k->strides[0], b->sc = (size_t)k->strides[1];
    b->sh = (size_t)k->strides[2], b->sw = (size_t)k->strides[3];
    b->channels = (int)md->padded_dims[1];
    /* a block's positions one after another (nchw, nChw8c, nChw16c) */
    if (b->sw != (size_t)b->block || b->sh != (size_t)md->dims[3] * b->block) return -1;
    return 0;
}

static int same_dims(const conv2d_dims *a, const conv2d_dims *b)
{
    return a->n == b->n && a->ic == b->ic && a->ih == b->ih && a->iw == b->iw && a->oc == b->oc &&
           a->kh == b->kh && a->kw == b->kw && a->stride == b->stride && a->pad == b->pad &&
           (a->dilation > 1 ? a->dilation : 1) == (b->dilation > 1 ? b->dilation : 1) &&
           (a->groups > 1 ? a->groups : 1) == (b->groups > 1 ? b->groups : 1) && a->oh == b->oh &&
           a->ow == b->ow;
}

/* The entry of a shape, created when new; NULL when out of memory. */
/* A new zeroed entry for shape d at the end of the cache; NULL when out of
 * memory. */
static entry *cache_add(const conv2d_dims *d, dnnl_conv_layout layout, int threads)
{
    if (n_cache == cap_cache) {
        const int nc = cap_cache ? 2 * cap_cache : 16;
        entry *c = realloc(cache, sizeof *c * (size_t)nc);
        if (!c) return NULL;
        cache = c, cap_cache = nc;
    }
    entry *e = &cache[n_cache++];
    memset(e, 0, sizeof *e);
    e->d = *d, e->layout = layout, e->threads = threads;
    return e;
}

static entry *entry_get(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout,
                        dnnl_conv_alg alg, int create)
{
    const int threads = omp_get_max_threads();
    for (int i = 0; i < n_cache; i++) {
        entry *e = &cache[i];
        if (e->bf16) continue;
        if (e->has_bias == has_bias && e->layout == layout && e->threads == threads &&
            same_dims(&e->d, d) && e->alg == alg)
            return e;
    }
    if (!create) return NULL;
    entry *e = cache_add(d, layout, threads);
    if (e) e->has_bias = has_bias, e->alg = alg;
    return e;
}

static conv_op *op_get(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout,
                       dnnl_conv_alg alg, int which)
{
    if (!eng_ready()) return NULL;
    entry *e = entry_get(d, has_bias, layout, alg, 1);
    if (!e) return NULL;
    if (e->op[which].state == 0) op_create(e, which);
    return e->op[which].state == 1 ? &e->op[which] : NULL;
}

int dnnl_conv_forward_alg(float *out, const float *in, const float *w, const float *b,
                          const conv2d_dims *d, dnnl_conv_layout layout, dnnl_conv_alg alg)
{
    pthread_mutex_lock(&lock);
    int rc = -1;
    conv_op *op = op_get(d, b != NULL, layout, alg, OP_FWD);
    if (op && op_reserve(op) == 0) {
        void *ptr[ARG_MAX] = {(void *)in, (void *)w};
        int add[ARG_MAX] = {0};
        int k = 2;
        if (b) ptr[k++] = (void *)b;
        ptr[k] = out;
        rc = op_run(op, ptr, add, 0, 0);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* The backward of dnnl_conv_backward_alg and dnnl_conv_backward_hooked:
 * h (may be NULL) hands tensors over in the ops' own layouts. */
static int backward(float *din, int din_set, float *dw, float *db, const float *dout,
                    const float *in, const float *w, const conv2d_dims *d,
                    dnnl_conv_layout layout, dnnl_conv_alg alg, const dnnl_conv_hooks *h)
{
    pthread_mutex_lock(&lock);
    int rc = -1;
    conv_op *bd = NULL, *bw = NULL;
    const int fill = h && h->fill_src, take = h && h->take_dsrc, gfill = h && h->fill_ddst;
    dnnl_conv_blocking bs, bds, bdd;
    float *src_buf = NULL, *dsrc_buf = NULL, *ddst_buf = NULL;
    /* both ops first: a shape takes oneDNN for its whole backward or not */
    /* both in the entry of the weight pass's bias (the data pass has none):
     * then they share the output gradient's copy */
    if ((din || take) && !(bd = op_get(d, db != NULL, layout, alg, OP_BWD_DATA))) goto out;
    if (dw && !(bw = op_get(d, db != NULL, layout, alg, OP_BWD_W))) goto out;
    /* nothing is written unless both passes can run */
    if ((bd && op_reserve(bd) != 0) || (bw && op_reserve(bw) != 0)) goto out;
    if (fill && bw) {
        if (blocking_of(&bw->a[0].pmd, &bs) != 0) goto out;
        if (!(src_buf = slot_get(bw->a[0].slot, dnnl_memory_desc_get_size(&bw->a[0].pmd))))
            goto out;
    }
    if (take && bd) {
        if (blocking_of(&bd->a[2].pmd, &bds) != 0) goto out;
        if (!(dsrc_buf = slot_get(bd->a[2].slot, dnnl_memory_desc_get_size(&bd->a[2].pmd))))
            goto out;
    }
    if (gfill && (bd || bw)) {
        /* one copy for both passes: they must want the same layout */
        const op_arg *g = bd ? &bd->a[0] : &bw->a[1];
        if (bd && bw && !dnnl_memory_desc_equal(&g->pmd, &bw->a[1].pmd)) goto out;
        if (blocking_of(&g->pmd, &bdd) != 0) goto out;
        if (!(ddst_buf = slot_get(g->slot, dnnl_memory_desc_get_size(&g->pmd)))) goto out;
    }
    if (src_buf) h->fill_src(h->ctx, src_buf, &bs);
    if (ddst_buf) h->fill_ddst(h->ctx, ddst_buf, &bdd);
    if (bd) {
        void *ptr[ARG_MAX] = {(void *)dout, (void *)w, din};
        const int add[ARG_MAX] = {0, 0, !din_set && !take};
        if (op_run(bd, ptr, add, ddst_buf ? 1u : 0u, take ? 4u : 0u) != 0) goto out;
        if (take) h->take_dsrc(h->ctx, dsrc_buf, &bds);
    }
    if (bw) {
        void *ptr[ARG_MAX] = {(void *)in, (void *)dout, dw, db};
        const int add[ARG_MAX] = {0, 0, 1, 1};
        /* the output gradient's copy made for the data pass, when shared */
        unsigned filled = bd && bd->a[0].reorder && bw->a[1].slot == S_DST &&
                                  dnnl_memory_desc_equal(&bd->a[0].pmd, &bw->a[1].pmd)
                              ? 2u
                              : 0u;
        if (src_buf) filled |= 1u;
        if (ddst_buf) filled |= 2u;
        if (op_run(bw, ptr, add, filled, 0) != 0) goto out;
    } else if (db) {
        /* a bias gradient without the weights': plain sums */
        const size_t p = (size_t)d->oh * d->ow;
        for (int o = 0; o < d->oc; o++) {
            float acc = 0.0f;
            for (int i = 0; i < d->n; i++) {
                const float *g = dout + ((size_t)i * d->oc + o) * p;
                for (size_t j = 0; j < p; j++) acc += g[j];
            }
            db[o] += acc;
        }
    }
    rc = 0;
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

int dnnl_conv_backward_alg(float *din, int din_set, float *dw, float *db, const float *dout,
                           const float *in, const float *w, const conv2d_dims *d,
                           dnnl_conv_layout layout, dnnl_conv_alg alg)
{
    return backward(din, din_set, dw, db, dout, in, w, d, layout, alg, NULL);
}

int dnnl_conv_backward_hooked(float *din, int din_set, float *dw, float *db, const float *dout,
                              const float *in, const float *w, const conv2d_dims *d,
                              dnnl_conv_layout layout, const dnnl_conv_hooks *h)
{
    if (!h || (h->fill_src && !dw)) return -1;
    return backward(din, din_set, dw, db, dout, in, w, d, layout, DNNL_CONV_DIRECT, h);
}

/* ---- the backward on LSQ codes in bf16 ----
 * An entry of its own per shape (bf16 set, no bias, oneDNN's layouts): its
 * forward hint and both backward ops take bf16 sources and f32 results. The
 * engine rounds the output gradient (two copies: scaled by the weight steps
 * for the data pass, by the input step for the weight pass) and the weight
 * codes into bf16 NCHW/OIHW staging buffers; the ops' reorders then only
 * block them. */

/* m: user md u as bf16 in the same plain layout, or "any" for the
 * primitive. */
static void md_bf16(dnnl_memory_desc_t *m, const dnnl_memory_desc_t *u, int any)
{
    dnnl_memory_desc_init_by_tag(m, u->ndims, u->dims, dnnl_bf16,
                                 any ? dnnl_format_tag_any
                                     : u->ndims == 4 ? dnnl_abcd : dnnl_abcde);
}

static void md_f32_any(dnnl_memory_desc_t *m, const dnnl_memory_desc_t *u)
{
    dnnl_memory_desc_init_by_tag(m, u->ndims, u->dims, dnnl_f32, dnnl_format_tag_any);
}

/* A bf16 kernel, not a reference one (a CPU without AVX512_BF16 gets
 * oneDNN's reference or emulated paths: those are slower than f32). */
static int impl_is_bf16_jit(const char *impl)
{
    return strncmp(impl, "ref", 3) != 0 && strstr(impl, "jit") && strstr(impl, "bf16");
}

/* Creates op `which` (OP_BWD_DATA or OP_BWD_W) of bf16 entry e. */
static void op_create_bf16(entry *e, int which)
{
    conv_op *op = &e->op[which];
    shape_mds m;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_convolution_desc_t cd;
    op->state = -1;
    if (shape_init(&m, &e->d) != 0) return;
    dnnl_memory_desc_t us, uw, ud, ps, pw, pd_, fs, fw;
    md_bf16(&us, &m.src, 0), md_bf16(&uw, &m.wei, 0), md_bf16(&ud, &m.dst, 0);
    md_bf16(&ps, &m.src, 1), md_bf16(&pw, &m.wei, 1), md_bf16(&pd_, &m.dst, 1);
    md_f32_any(&fs, &m.src), md_f32_any(&fw, &m.wei);
    if (!e->fwd_pd) {
        if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training,
                                                       dnnl_convolution_direct, &ps, &pw, NULL,
                                                       &pd_, m.strides, m.dilates, m.pad_l,
                                                       m.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&e->fwd_pd, &cd, NULL, eng, NULL) != dnnl_success) {
            e->fwd_pd = NULL;
            return;
        }
    }
    int ok = 0;
    if (which == OP_BWD_DATA) {
        if (dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &fs,
                                                             &pw, &pd_, m.strides, m.dilates,
                                                             m.pad_l, m.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, NULL, eng, e->fwd_pd) != dnnl_success) {
            pd = NULL;
            goto out;
        }
        ok = op_arg_init(op, pd, DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &ud, 0, S_DST) ==
                 0 &&
             op_arg_init(op, pd, DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &uw, 0, S_WEI) == 0 &&
             op_arg_init(op, pd, DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &m.src, 1,
                         S_DSRC) == 0;
    } else {
        if (dnnl_dilated_convolution_backward_weights_desc_init(
                &cd, dnnl_convolution_direct, &ps, &fw, NULL, &pd_, m.strides, m.dilates,
                m.pad_l, m.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, NULL, eng, e->fwd_pd) != dnnl_success) {
            pd = NULL;
            goto out;
        }
        ok = op_arg_init(op, pd, DNNL_ARG_SRC, dnnl_query_src_md, 0, &us, 0, S_SRC) == 0 &&
             op_arg_init(op, pd, DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &ud, 0, S_DST2) ==
                 0 &&
             op_arg_init(op, pd, DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &m.wei, 1,
                         S_DWEI) == 0;
    }
    if (!ok) goto out;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success ||
        !impl || !impl_is_bf16_jit(impl))
        goto out;
    snprintf(op->impl, sizeof op->impl, "%s", impl);
    if (dnnl_primitive_create(&op->prim, pd) != dnnl_success) goto out;
    op->state = 1;
out:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (op->state != 1) {
        op_free(op);
        op->state = -1;
    }
}

/* The bf16 entry of a shape with both backward ops tried; NULL when out of
 * memory or without an engine. */
static entry *bf16_entry(const conv2d_dims *d, int create)
{
    if (!eng_ready()) return NULL;
    const int threads = omp_get_max_threads();
    entry *e = NULL;
    for (int i = 0; i < n_cache && !e; i++)
        if (cache[i].bf16 && cache[i].threads == threads && same_dims(&cache[i].d, d))
            e = &cache[i];
    if (!e) {
        if (!create || !(e = cache_add(d, DNNL_CONV_BLOCKED, threads))) return NULL;
        e->bf16 = 1;
    }
    if (create && e->op[OP_BWD_DATA].state == 0) op_create_bf16(e, OP_BWD_DATA);
    if (create && e->op[OP_BWD_W].state == 0) op_create_bf16(e, OP_BWD_W);
    return e;
}

static int bf16_ops_ready(const entry *e)
{
    return e && e->op[OP_BWD_DATA].state == 1 && e->op[OP_BWD_W].state == 1;
}

int dnnl_conv_bf16_ready(const conv2d_dims *d)
{
    pthread_mutex_lock(&lock);
    const int ok = bf16_ops_ready(bf16_entry(d, 1));
    pthread_mutex_unlock(&lock);
    return ok;
}

/* dst (n planes of p) = bf16(src * scale[plane % nc]). */
static void round_planes(uint16_t *dst, const float *src, size_t planes, size_t p,
                         const float *scale, int nc)
{
#pragma omp parallel for schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        const float sc = scale[nc > 1 ? pl % (size_t)nc : 0];
        const float *s = src + pl * p;
        uint16_t *o = dst + pl * p;
        for (size_t j = 0; j < p; j++) o[j] = dnnl_conv_bf16_round(s[j] * sc);
    }
}

int dnnl_conv_backward_bf16(float *din, int din_set, float *dw, const float *dout,
                            const uint16_t *xcodes, const int32_t *wcodes, float s_x,
                            const float *s_w, int w_channels, const conv2d_dims *d)
{
    pthread_mutex_lock(&lock);
    int rc = -1;
    entry *e = bf16_entry(d, 1);
    if (!bf16_ops_ready(e)) goto out;
    conv_op *bd = din ? &e->op[OP_BWD_DATA] : NULL, *bw = dw ? &e->op[OP_BWD_W] : NULL;
    const size_t p = (size_t)d->oh * d->ow, planes = (size_t)d->n * d->oc;
    const size_t wn = (size_t)d->oc * (d->ic / (d->groups > 1 ? d->groups : 1)) * d->kh * d->kw;
    uint16_t *gd = bd ? slot_get(S_BDOUT_D, planes * p * 2) : NULL;
    uint16_t *gw = bw ? slot_get(S_BDOUT_W, planes * p * 2) : NULL;
    uint16_t *wb = bd ? slot_get(S_BWEI, wn * 2) : NULL;
    /* nothing is written unless both passes can run */
    if ((bd && (!gd || !wb || op_reserve(bd) != 0)) || (bw && (!gw || op_reserve(bw) != 0)))
        goto out;
    if (bd) {
        for (size_t j = 0; j < wn; j++) wb[j] = dnnl_conv_bf16_round((float)wcodes[j]);
        round_planes(gd, dout, planes, p, s_w, w_channels);
        void *ptr[ARG_MAX] = {gd, wb, din};
        const int add[ARG_MAX] = {0, 0, !din_set};
        if (op_run(bd, ptr, add, 0, 0) != 0) goto out;
    }
    if (bw) {
        round_planes(gw, dout, planes, p, &s_x, 1);
        void *ptr[ARG_MAX] = {(void *)xcodes, gw, dw};
        const int add[ARG_MAX] = {0, 0, 1};
        if (op_run(bw, ptr, add, 0, 0) != 0) goto out;
    }
    rc = 0;
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

const char *dnnl_conv_impl_bf16(const conv2d_dims *d, int pass)
{
    pthread_mutex_lock(&lock);
    const char *s = "";
    const entry *e = pass == OP_BWD_DATA || pass == OP_BWD_W ? bf16_entry(d, 0) : NULL;
    if (e && e->op[pass].state == 1) s = e->op[pass].impl;
    pthread_mutex_unlock(&lock);
    return s;
}

double dnnl_conv_reorder_seconds(void)
{
    pthread_mutex_lock(&lock);
    const double s = reorder_s;
    pthread_mutex_unlock(&lock);
    return s;
}

const char *dnnl_conv_impl_alg(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout,
                               dnnl_conv_alg alg, int pass)
{
    pthread_mutex_lock(&lock);
    const char *s = "";
    const entry *e =
        pass >= 0 && pass < OP_COUNT ? entry_get(d, has_bias, layout, alg, 0) : NULL;
    if (e && e->op[pass].state == 1) s = e->op[pass].impl;
    pthread_mutex_unlock(&lock);
    return s;
}

int dnnl_conv_forward(float *out, const float *in, const float *w, const float *b,
                      const conv2d_dims *d, dnnl_conv_layout layout)
{
    return dnnl_conv_forward_alg(out, in, w, b, d, layout, DNNL_CONV_DIRECT);
}

int dnnl_conv_backward(float *din, int din_set, float *dw, float *db, const float *dout,
                       const float *in, const float *w, const conv2d_dims *d,
                       dnnl_conv_layout layout)
{
    return dnnl_conv_backward_alg(din, din_set, dw, db, dout, in, w, d, layout,
                                  DNNL_CONV_DIRECT);
}

const char *dnnl_conv_impl(const conv2d_dims *d, int has_bias, dnnl_conv_layout layout, int pass)
{
    return dnnl_conv_impl_alg(d, has_bias, layout, DNNL_CONV_DIRECT, pass);
}

void dnnl_conv_cache_free(void)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_cache; i++) {
        for (int k = 0; k < OP_COUNT; k++) op_free(&cache[i].op[k]);
        if (cache[i].fwd_pd) dnnl_primitive_desc_destroy(cache[i].fwd_pd);
    }
    free(cache);
    cache = NULL, n_cache = cap_cache = 0;
    for (int s = 0; s < S_COUNT; s++) {
        free(slots[s]);
        slots[s] = NULL, slot_cap[s] = 0;
    }
    if (eng_state == 1) {
        dnnl_stream_destroy(stream);
        dnnl_engine_destroy(eng);
    }
    eng_state = 0;
    pthread_mutex_unlock(&lock);
}

#endif
