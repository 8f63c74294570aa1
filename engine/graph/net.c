/* Networks as data: building a graph from a JSON layer list, shape inference,
 * the parameter buffer and its named views, forward and backward (with the LSQ
 * quantizers wrapped around every conv/linear layer of a quantized net). */
#include "graph/net.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/par.h"
#include "core/rng.h"
#include "data/cache.h"
#include "graph/onnx_import.h"
#include "nn/layers.h"

const char *const NET_OP_NAMES[] = {
    "input", "conv2d", "linear", "batchnorm", "relu", "maxpool", "avgpool",
    "add", "flatten", "clip", "leakyrelu", "scale", "concat",
};
_Static_assert(sizeof NET_OP_NAMES / sizeof *NET_OP_NAMES == OP_COUNT,
               "NET_OP_NAMES must name every net_op");

const char *const PV_KIND_NAMES[] = {
    "weight", "bias", "bn_gamma", "bn_beta", "step", "offset", "running", "flag",
};
_Static_assert(sizeof PV_KIND_NAMES / sizeof *PV_KIND_NAMES == PV_COUNT,
               "PV_KIND_NAMES must name every pv_kind");

#define BN_MOMENTUM 0.1f
#define BN_EPS 1e-5f
#define MAX_NODES 512

/* ---------------------------------------------------------- building */

typedef struct {
    const json_t *obj;
    int index;
    lsq_err *err;
} layer_ctx;

static lsq_status key_err(layer_ctx *lc, const char *key, const char *fmt, const char *detail)
{
    char field[128];
    snprintf(field, sizeof field, "model.layers[%d]%s%s", lc->index, key ? "." : "", key ? key : "");
    return lsq_err_set(lc->err, LSQ_ERR_INVALID, field, fmt, field, detail);
}

/* Reads an optional integer key within [lo, hi]. */
static lsq_status get_int(layer_ctx *lc, const char *key, int *out, int dflt,
                          int required, int lo, int hi)
{
    json_t *v = json_object_get(lc->obj, key);
    if (!v) {
        if (required) return key_err(lc, key, "%s is required%s", "");
        *out = dflt;
        return LSQ_OK;
    }
    if (!json_is_integer(v)) return key_err(lc, key, "%s must be an integer%s", "");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        char d[96];
        snprintf(d, sizeof d, " in %d..%d, got %lld", lo, hi, (long long)x);
        return key_err(lc, key, "%s must be an integer%s", d);
    }
    *out = (int)x;
    return LSQ_OK;
}

/* Reads an optional number key (an integer or a real) within [lo, hi]. */
static lsq_status get_num(layer_ctx *lc, const char *key, double *out, double dflt, int required,
                          double lo, double hi)
{
    json_t *v = json_object_get(lc->obj, key);
    if (!v) {
        if (required) return key_err(lc, key, "%s is required%s", ": a number");
        *out = dflt;
        return LSQ_OK;
    }
    char d[128];
    snprintf(d, sizeof d, " in [%g, %g]", lo, hi);
    if (!json_is_number(v)) return key_err(lc, key, "%s must be a number%s", d);
    const double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        snprintf(d, sizeof d, " in [%g, %g], got %g", lo, hi, x);
        return key_err(lc, key, "%s must be a number%s", d);
    }
    *out = x;
    return LSQ_OK;
}

/* Reads an optional boolean key. */
static lsq_status get_bool(layer_ctx *lc, const char *key, int *out, int dflt)
{
    json_t *v = json_object_get(lc->obj, key);
    if (v && !json_is_boolean(v)) return key_err(lc, key, "%s must be true or false%s", "");
    *out = v ? json_is_true(v) : dflt;
    return LSQ_OK;
}

static lsq_status check_keys(layer_ctx *lc, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)lc->obj, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, k) == 0) ok = 1;
        if (!ok) {
            char d[160];
            snprintf(d, sizeof d, " is not a key of a %s layer",
                     json_string_value(json_object_get(lc->obj, "type")));
            return key_err(lc, k, "%s: unknown key;%s", d);
        }
    }
    return LSQ_OK;
}

static int find_node(const lsq_net *net, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(net->nodes[i].name, name) == 0) return i;
    return -1;
}

static int add_view(lsq_net *net, int node, const char *suffix, pv_kind kind,
                    int in_state, int ndim, const int *dims, size_t *cursor)
{
    net_view *v = &net->views[net->n_views];
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s%s", net->nodes[node].name, suffix);
    v->kind = kind;
    v->node = node;
    v->in_state = in_state;
    v->ndim = ndim;
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        v->dims[i] = dims[i];
        count *= (size_t)dims[i];
    }
    v->count = count;
    v->off = *cursor;
    *cursor += count;
    return net->n_views++;
}

/* Follows flatten nodes back: does this node carry the raw image? */
static int reads_image(const lsq_net *net, int node)
{
    while (net->nodes[node].op == OP_FLATTEN) node = net->nodes[node].in[0];
    return net->nodes[node].op == OP_INPUT;
}

/* The buffer pass runs twice: dry (net_plan: only counting the bytes, per
 * node and in all) and for real (net_build), so that what the door checks
 * is what the worker allocates. */
typedef struct {
    int dry;
    int fail;
    size_t bytes;   /* in all */
    size_t *node;   /* the current node's bytes, or NULL */
} net_alloc;

static void *xcalloc(size_t n, size_t size, net_alloc *a)
{
    if (n == 0) n = 1;
    a->bytes += n * size;
    if (a->node) *a->node += n * size;
    if (a->dry) return NULL;
    void *p = calloc(n, size);
    if (!p) a->fail = 1;
    return p;
}

/* How many of nd's inputs are node j. */
static int uses_of(const net_node *nd, int j)
{
    int uses = 0;
    for (int t = 0; t < nd->n_in; t++) uses += nd->in[t] == j;
    return uses;
}

/* ---- the backward plan, fixed by the graph: computed once by net_build ---- */

/* The node that alone reads node j's output, and reads it once; else -1. */
static int sole_consumer(const lsq_net *net, int j)
{
    if (j == net->output) return -1;
    int only = -1;
    for (int k = j + 1; k < net->n_nodes; k++) {
        const net_node *nd = &net->nodes[k];
        int uses = uses_of(nd, j);
        if (!uses) continue;
        if (only >= 0 || uses > 1) return -1;
        only = k;
    }
    return only;
}

/* A batch norm or a residual add whose only consumer is a ReLU runs fused
 * with it (one pass over memory instead of two; the node gets no output or
 * gradient buffer of its own): returns that ReLU's index, else -1. */
static int plan_fused_relu(const lsq_net *net, int bn)
{
    const int op = net->nodes[bn].op;
    if (op != OP_BN && op != OP_ADD) return -1;
    const int k = sole_consumer(net, bn);
    return k >= 0 && net->nodes[k].op == OP_RELU ? k : -1;
}

/* A conv whose only consumer is a batch norm: that batch norm's index. */
static int plan_bn_after(const lsq_net *net, int conv)
{
    if (net->nodes[conv].op != OP_CONV) return -1;
    const int k = sole_consumer(net, conv);
    return k >= 0 && net->nodes[k].op == OP_BN ? k : -1;
}

/* Where node k's backward writes its inputs' gradients in the backward
 * order: a batch norm fused with its ReLU writes them at the ReLU's turn. */
static int backward_turn(const lsq_net *net, int k)
{
    int relu = net->nodes[k].fused_relu;
    return relu >= 0 ? relu : k;
}

/* How node j's output is used by the nodes that read it, looking through
 * flattens (which alias their input's buffers). */
typedef struct {
    int any;          /* read by some node */
    int last_fwd;     /* the last reader in the forward order */
    int first_turn;   /* the reader whose backward comes first (its backward
                       * turn: a fused batch norm's or add's is its ReLU's) */
    int read_back;    /* some reader's backward reads it (its input) */
    int to_output;    /* a flatten of it is the net's output */
} net_uses;

static void uses_through_flatten(const lsq_net *net, int j, net_uses *u)
{
    for (int k = j + 1; k < net->n_nodes; k++) {
        const net_node *nd = &net->nodes[k];
        if (!uses_of(nd, j)) continue;
        if (nd->op == OP_FLATTEN) {
            if (k == net->output) u->to_output = 1;
            uses_through_flatten(net, k, u);
            continue;
        }
        u->any = 1;
        if (k > u->last_fwd) u->last_fwd = k;
        const int t = backward_turn(net, k);
        if (t > u->first_turn) u->first_turn = t;
        /* the ops whose backward reads their input (net_backward) */
        if (nd->op == OP_CONV || nd->op == OP_LINEAR || nd->op == OP_BN || nd->op == OP_LEAKYRELU)
            u->read_back = 1;
    }
}

/* The backward turn of the first reader of j behind a flatten; -1 if none. */
static int first_turn_through_flatten(const lsq_net *net, int j)
{
    int turn = -1;
    for (int k = j + 1; k < net->n_nodes; k++) {
        if (net->nodes[k].op != OP_FLATTEN || !uses_of(&net->nodes[k], j)) continue;
        net_uses u = {0, -1, -1, 0, 0};
        uses_through_flatten(net, k, &u);
        if (u.first_turn > turn) turn = u.first_turn;
    }
    return turn;
}

/* Node j's gradient is written whole (=), not added to, by the consumer
 * whose backward reaches it first; backward need not zero it then; the
 * consumers after it add theirs (+=), so a node read by several gets the
 * sum of their gradients. Returns that first consumer's index, or -1 when
 * the gradient must start at zero: no consumer, one that uses j twice, or
 * one whose op only adds (a flatten, which shares j's buffers; a linear
 * layer on an unquantized input; windowed average pooling, clip, leaky
 * relu, scale and concat). Needs every node's fused_relu. */
static int plan_grad_setter(const lsq_net *net, int j)
{
    /* a flatten's consumers write through it into its source's buffer,
     * which its source's own rule covers */
    if (net->nodes[j].op == OP_FLATTEN) return -1;
    int first = -1, turn = -1;
    for (int k = j + 1; k < net->n_nodes; k++) {
        const net_node *nd = &net->nodes[k];
        if (!uses_of(nd, j)) continue;
        int t = backward_turn(net, k);
        if (t > turn) first = k, turn = t;
    }
    if (first < 0) return -1;
    /* a consumer behind a flatten of j that comes first adds to j's
     * gradient before `first` would set it */
    if (first_turn_through_flatten(net, j) > turn) return -1;
    const net_node *c = &net->nodes[first];
    if (uses_of(c, j) > 1) return -1;
    switch (c->op) {
    case OP_CONV:
    case OP_BN:
    case OP_RELU:
    case OP_MAXPOOL:
    case OP_ADD:
        return first;
    case OP_AVGPOOL:
        return c->kernel ? -1 : first; /* windowed: += only */
    case OP_LINEAR:
        return c->aq.on ? first : -1;
    default:
        return -1;
    }
}

static void plan_backward(lsq_net *net)
{
    for (int i = 0; i < net->n_nodes; i++) net->nodes[i].fused_relu = plan_fused_relu(net, i);
    for (int i = 0; i < net->n_nodes; i++) net->nodes[i].grad_setter = plan_grad_setter(net, i);
    for (int i = 0; i < net->n_nodes; i++) net->nodes[i].bn_after = plan_bn_after(net, i);
}

/* ---- buffer lifetimes: which activation and gradient buffers share memory ---- */

static int share_buffers = 1;

int net_set_buffer_sharing(int on)
{
    const int was = share_buffers;
    share_buffers = on != 0;
    return was;
}

/* One clock for a training step: node i's forward runs at i, its backward
 * at 2N - i (backward goes from the last node down). */
static int bwd_time(const lsq_net *net, int i) { return 2 * net->n_nodes - i; }

typedef struct {
    size_t n;       /* floats, rounded up to ARENA_ALIGN */
    int lo, hi;     /* alive from lo to hi on the clock, both included */
    int node, dout; /* whose buffer: its out (0) or dout (1) */
    size_t at;      /* the placement */
} net_life;

#define ARENA_ALIGN 16 /* floats: every buffer starts on a 64-byte line */

static int cmp_life(const void *a, const void *b)
{
    const net_life *x = *(net_life *const *)a, *y = *(net_life *const *)b;
    if (x->n != y->n) return x->n < y->n ? 1 : -1;
    if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
    return x->node != y->node ? (x->node < y->node ? -1 : 1) : x->dout - y->dout;
}

static int cmp_at(const void *a, const void *b)
{
    const net_life *x = *(net_life *const *)a, *y = *(net_life *const *)b;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* The lifetime of node j's out and dout on the clock of bwd_time, or 0 when
 * they keep buffers of their own (the output, which the caller reads after
 * the forward and the loss writes before the backward). Every node that
 * reads or writes them in net_forward and net_backward is inside:
 *   out: from the forward of the node that writes it (a batch norm or an
 *     add fused with this ReLU writes it) to its last reader's forward; to
 *     the writer's backward when a backward reads it (the readers' own
 *     backward turns come before it; a ReLU and a clip read their own out,
 *     a conv whose batch norm it makes the gradient of reads its out);
 *   dout: from the backward of its first reader, which sets it or adds to
 *     it after it is zeroed, to its own backward; to the backward of the
 *     conv that reads it for its batch norm (conv2d_backward_ex's fusion).
 * Sets *zero_turn to where backward zeroes the dout: where its lifetime
 * begins, or -1 when the first reader sets it whole. */
static int node_lives(const lsq_net *net, int j, net_life *out, net_life *dout, int *zero_turn)
{
    const net_node *nd = &net->nodes[j];
    if (j == 0 || nd->op == OP_FLATTEN || nd->fused_relu >= 0 || j == net->output) return 0;
    net_uses u = {0, -1, -1, 0, 0};
    uses_through_flatten(net, j, &u);
    if (u.to_output) return 0;
    int w = j; /* the writer of out */
    if (nd->op == OP_RELU && nd->in[0] > 0 && net->nodes[nd->in[0]].fused_relu == j) w = nd->in[0];
    const int back = u.read_back || nd->op == OP_RELU || nd->op == OP_CLIP ||
                     (nd->op == OP_CONV && nd->bn_after >= 0);
    out->lo = w;
    out->hi = back ? bwd_time(net, w) : (u.last_fwd > w ? u.last_fwd : w);
    const int first = u.any ? u.first_turn : j;
    dout->lo = bwd_time(net, first);
    dout->hi = bwd_time(net, j);
    for (int c = 1; c < j; c++) {
        const int b = net->nodes[c].bn_after;
        if (b >= 0 && (net->nodes[b].fused_relu >= 0 ? net->nodes[b].fused_relu : b) == j &&
            bwd_time(net, c) > dout->hi)
            dout->hi = bwd_time(net, c);
    }
    *zero_turn = nd->grad_setter >= 0 ? -1 : first;
    return 1;
}

/* Places the out and dout buffers of every node that node_lives plans in
 * one arena (greedy by size: the largest first, each at the lowest offset
 * free of the buffers alive at the same time that are placed already) and
 * sets arena_out, arena_dout and zero_turn. Returns the arena's size in
 * floats (0: nothing shared), or (size_t)-1 when out of memory. */
static size_t plan_arena(lsq_net *net, int max_batch)
{
    for (int i = 0; i < net->n_nodes; i++) {
        net->nodes[i].arena_out = net->nodes[i].arena_dout = -1;
        net->nodes[i].zero_turn = -1;
    }
    if (!share_buffers) return 0;
    const size_t cap = 2 * (size_t)net->n_nodes;
    net_life *lives = calloc(cap, sizeof *lives);
    net_life **order = calloc(cap, sizeof *order), **near = calloc(cap, sizeof *near);
    size_t total = (size_t)-1;
    if (!lives || !order || !near) goto out;
    size_t n = 0;
    for (int j = 1; j < net->n_nodes; j++) {
        net_life o, d;
        int zt;
        if (!node_lives(net, j, &o, &d, &zt)) continue;
        const net_node *nd = &net->nodes[j];
        const size_t len = (size_t)max_batch * nd->c * nd->h * nd->w;
        const size_t al = (len + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
        o.n = d.n = al;
        o.node = d.node = j;
        o.dout = 0, d.dout = 1;
        lives[n++] = o;
        lives[n++] = d;
        net->nodes[j].zero_turn = zt;
    }
    for (size_t i = 0; i < n; i++) order[i] = &lives[i];
    qsort(order, n, sizeof *order, cmp_life);
    total = 0;
    for (size_t i = 0; i < n; i++) {
        net_life *b = order[i];
        size_t m = 0;
        for (size_t k = 0; k < i; k++)
            if (order[k]->lo <= b->hi && b->lo <= order[k]->hi) near[m++] = order[k];
        qsort(near, m, sizeof *near, cmp_at);
        size_t at = 0;
        for (size_t k = 0; k < m; k++) {
            if (at + b->n <= near[k]->at) break;
            if (near[k]->at + near[k]->n > at) at = near[k]->at + near[k]->n;
        }
        b->at = at;
        if (at + b->n > total) total = at + b->n;
        net_node *nd = &net->nodes[b->node];
        if (b->dout) nd->arena_dout = (long)at;
        else nd->arena_out = (long)at;
    }
out:
    free(lives);
    free(order);
    free(near);
    return total;
}

/* Allocates (or with a->dry, counts) every buffer of a planned net. */
static void alloc_buffers(lsq_net *net, int max_batch, net_alloc *a)
{
    a->node = NULL;
    net->params = xcalloc(net->n_params, sizeof(float), a);
    net->grads = xcalloc(net->n_params + NET_GRAD_TAIL, sizeof(float), a);
    net->state = xcalloc(net->n_state, sizeof(float), a);
    net->probs = xcalloc((size_t)max_batch * net->classes, sizeof(float), a);
    /* the activations and gradients that share memory: one arena */
    const size_t n_arena = plan_arena(net, max_batch);
    if (n_arena == (size_t)-1) {
        a->fail = 1;
        return;
    }
    if (n_arena) {
        net->n_arena = n_arena;
        net->arena = xcalloc(n_arena, sizeof(float), a);
    }
    size_t scratch = 0, qn = 0;
    for (int i = 1; i < net->n_nodes && !a->fail; i++) {
        net_node *nd = &net->nodes[i];
        const net_node *src = &net->nodes[nd->in[0]];
        size_t out_n = (size_t)max_batch * nd->c * nd->h * nd->w;
        size_t in_n = (size_t)max_batch * src->c * src->h * src->w;
        nd->bytes = 0;
        a->node = &nd->bytes;
        if (nd->op == OP_FLATTEN) continue; /* aliases its input, below */
        if (nd->fused_relu < 0) { /* a fused node writes its ReLU's buffers */
            /* in the arena: counted with the node, allocated once above */
            if (nd->arena_out >= 0) {
                nd->bytes += out_n * sizeof(float);
                if (net->arena) nd->out = net->arena + nd->arena_out;
            } else {
                nd->out = xcalloc(out_n, sizeof(float), a);
            }
            if (nd->arena_dout >= 0) {
                nd->bytes += out_n * sizeof(float);
                if (net->arena) nd->dout = net->arena + nd->arena_dout;
            } else {
                nd->dout = xcalloc(out_n, sizeof(float), a);
            }
        }
        if (nd->op == OP_BN) {
            nd->aux = xcalloc((2 + BN_COEFS) * (size_t)nd->c, sizeof(float), a);
            if (BN_WORK_FLOATS(max_batch, nd->c) > scratch) scratch = BN_WORK_FLOATS(max_batch, nd->c);
        }
        if (nd->op == OP_MAXPOOL) nd->argmax = xcalloc(out_n, sizeof(int32_t), a);
        if (nd->op == OP_CONV) {
            conv2d_dims d;
            conv2d_dims_init_ex(&d, max_batch, src->c, src->h, src->w, nd->out_ch, nd->kernel,
                                nd->kernel, nd->stride, nd->pad, nd->dilation, nd->groups);
            size_t s = conv2d_scratch_floats(&d);
            if (s > scratch) scratch = s;
        }
        if (nd->aq.on && in_n > qn) qn = in_n; /* the shared pair below */
        if (nd->wq.on) {
            size_t wn = net->views[nd->wv].count;
            nd->qw = xcalloc(wn, sizeof(float), a);
            nd->dqw = xcalloc(wn, sizeof(float), a);
            if (nd->op == OP_CONV) nd->wcodes = xcalloc(wn, sizeof(int32_t), a);
            nd->wq.g = xcalloc((size_t)nd->wq.channels, sizeof(float), a);
            nd->aq.g = xcalloc(1, sizeof(float), a);
        }
        /* the node's parameters, their gradients and the optimizer's
         * momentum: counted with the node, allocated in one buffer above */
        if (nd->wv >= 0 || nd->gammav >= 0) {
            size_t p = 0;
            for (int v = 0; v < net->n_views; v++)
                if (net->views[v].node == i && !net->views[v].in_state) p += net->views[v].count;
            nd->bytes += 3 * p * sizeof(float);
        }
    }
    a->node = NULL;
    if (!a->fail) {
        net->n_scratch = scratch;
        net->scratch = xcalloc(scratch, sizeof(float), a);
        net->qsums = xcalloc(2 * (size_t)max_batch, sizeof(double), a);
        /* one quantized input and its gradient for every quantized layer:
         * each layer fills it just before it uses it, in the forward and
         * again in the backward */
        if (qn) {
            net->qbuf = xcalloc(qn, sizeof(float), a);
            net->dqbuf = xcalloc(qn, sizeof(float), a);
        }
    }
    /* the optimizer's momentum buffer (train/optim.c), one per parameter */
    a->bytes += net->n_params * sizeof(float);
}

static const char *human_bytes(double b, char *buf, size_t cap)
{
    static const char *const UNITS[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) b /= 1024, u++;
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", b, UNITS[u]);
    return buf;
}

/* The field that names a node's size: its "out" for conv/linear. */
static void node_field(const lsq_net *net, int i, char *field, size_t cap)
{
    const net_node *nd = &net->nodes[i];
    snprintf(field, cap, "model.layers[%d]%s", i - 1,
             nd->op == OP_CONV || nd->op == OP_LINEAR ? ".out" : "");
}

lsq_status net_plan(lsq_net *net, const json_t *spec_layers, const spec_quant *quant,
                    int classes, int max_batch, net_cost *cost, lsq_err *err)
{
    memset(net, 0, sizeof *net);
    lsq_status st = LSQ_OK;
    const json_t *input = json_object_get(spec_layers, "input");
    const json_t *layers = json_object_get(spec_layers, "layers");
    if (!json_is_array(layers) || json_array_size(layers) == 0)
        return lsq_err_set(err, LSQ_ERR_INVALID, "model.layers",
                           "model.layers must be a non-empty array of layer objects");
    if (json_array_size(layers) >= MAX_NODES)
        return lsq_err_set(err, LSQ_ERR_INVALID, "model.layers",
                           "model.layers has %zu layers, at most %d are allowed",
                           json_array_size(layers), MAX_NODES - 1);
    int ic = 1, ih = 28, iw = 28;
    if (input) {
        if (!json_is_array(input) || json_array_size(input) != 3)
            return lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                               "model.input must be [C, H, W]");
        int d[3];
        for (int i = 0; i < 3; i++) {
            json_t *x = json_array_get(input, i);
            if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 4096)
                return lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                                   "model.input must hold three integers in 1..4096");
            d[i] = (int)json_integer_value(x);
        }
        ic = d[0], ih = d[1], iw = d[2];
    }
    const json_t *norm = json_object_get(spec_layers, "normalize");
    if (norm) {
        const json_t *m = json_object_get(norm, "mean"), *sd = json_object_get(norm, "std");
        int ok = json_is_object(norm) && json_object_size(norm) == 2 && ic <= NET_NORM_MAX &&
                 json_is_array(m) && json_is_array(sd) && json_array_size(m) == (size_t)ic &&
                 json_array_size(sd) == (size_t)ic;
        for (int i = 0; ok && i < ic; i++) {
            const json_t *a = json_array_get(m, (size_t)i), *b = json_array_get(sd, (size_t)i);
            double x = json_number_value(a), y = json_number_value(b);
            ok = json_is_number(a) && json_is_number(b) && isfinite(x) && isfinite(y) && y > 0;
            net->norm_mean[i] = (float)x;
            net->norm_std[i] = (float)y;
        }
        if (!ok) {
            memset(net, 0, sizeof *net);
            return lsq_err_set(err, LSQ_ERR_INVALID, "model.normalize",
                               "model.normalize must be {\"mean\": [%d numbers], \"std\": [%d "
                               "numbers > 0]} for %d input channels (at most %d)",
                               ic, ic, ic, NET_NORM_MAX);
        }
        net->norm_on = 1;
    }
    net->layers = json_deep_copy(spec_layers);
    net->max_batch = max_batch;
    net->classes = classes;
    net->quantized = quant && quant->enabled;
    net->qinit = quant ? quant->init : QINIT_PAPER;
    net->gscale = quant ? quant->grad_scale : GSCALE_PAPER;
    net->gscale_value = quant ? quant->grad_scale_value : 1.0;
    size_t n_layers = json_array_size(layers);
    net->nodes = calloc(n_layers + 1, sizeof *net->nodes);
    net->views = calloc(8 * (n_layers + 1), sizeof *net->views);
    if (!net->nodes || !net->views) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory building the network");
        goto fail;
    }
    net_node *in0 = &net->nodes[0];
    in0->op = OP_INPUT;
    snprintf(in0->name, sizeof in0->name, "input");
    for (int t = 0; t < NET_MAX_INPUTS; t++) in0->in[t] = -1;
    in0->c = ic, in0->h = ih, in0->w = iw;
    if ((size_t)ic * ih * iw > NET_MAX_VALUES) {
        st = lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                         "model.input: %dx%dx%d images are larger than the limit of %zu values",
                         ic, ih, iw, (size_t)NET_MAX_VALUES);
        goto fail;
    }
    in0->nonneg = !net->norm_on;  /* pixels / 255 are >= 0; normalised ones are not */
    in0->wv = in0->bv = in0->gammav = in0->betav = -1;
    net->n_nodes = 1;

    /* pass 1: nodes and shapes */
    for (size_t li = 0; li < n_layers; li++) {
        layer_ctx lc = {json_array_get(layers, li), (int)li, err};
        if (!json_is_object(lc.obj)) {
            st = key_err(&lc, NULL, "%s must be an object%s", "");
            goto fail;
        }
        const char *type = json_string_value(json_object_get(lc.obj, "type"));
        if (!type) {
            st = key_err(&lc, "type", "%s is required: a string%s", "");
            goto fail;
        }
        int op = -1;
        for (int o = 1; o < OP_COUNT; o++)
            if (strcmp(type, NET_OP_NAMES[o]) == 0) op = o;
        if (op < 0) {
            char d[320];
            size_t at = (size_t)snprintf(d, sizeof d, " (");
            for (int o = 1; o < OP_COUNT; o++)
                at += (size_t)snprintf(d + at, sizeof d - at, "%s%s", NET_OP_NAMES[o],
                                       o + 1 < OP_COUNT ? ", " : "");
            snprintf(d + at, sizeof d - at, "), got '%.80s'", type);
            st = key_err(&lc, "type", "%s must be a layer type%s", d);
            goto fail;
        }
        int idx = net->n_nodes;
        net_node *nd = &net->nodes[idx];
        nd->op = (net_op)op;
        nd->wv = nd->bv = nd->gammav = nd->betav = nd->rmeanv = nd->rvarv = -1;
        nd->wq.step_view = nd->wq.offset_view = nd->wq.flag_view = -1;
        nd->aq.step_view = nd->aq.offset_view = nd->aq.flag_view = -1;
        const json_t *jn = json_object_get(lc.obj, "name");
        if (jn) {
            const char *s = json_string_value(jn);
            if (!s || !*s || strlen(s) >= 48) {
                st = key_err(&lc, "name", "%s must be a string of 1 to 47 characters%s", "");
                goto fail;
            }
            snprintf(nd->name, sizeof nd->name, "%s", s);
        } else {
            snprintf(nd->name, sizeof nd->name, "%s%zu", type, li + 1);
        }
        if (find_node(net, idx, nd->name) >= 0) {
            st = key_err(&lc, "name", "%s: the name '%s' is used by an earlier layer", nd->name);
            goto fail;
        }
        /* inputs */
        for (int t = 0; t < NET_MAX_INPUTS; t++) nd->in[t] = -1;
        nd->in[0] = idx - 1;
        nd->n_in = 1;
        if (op == OP_ADD || op == OP_CONCAT) {
            const json_t *ins = json_object_get(lc.obj, "inputs");
            const size_t most = op == OP_ADD ? 2 : NET_MAX_INPUTS;
            if (!json_is_array(ins) || json_array_size(ins) < 2 || json_array_size(ins) > most) {
                if (op == OP_ADD)
                    st = key_err(&lc, "inputs", "%s must name the two layers to add%s", "");
                else
                    st = key_err(&lc, "inputs", "%s must name 2 to 16 layers to concatenate%s", "");
                goto fail;
            }
            nd->n_in = (int)json_array_size(ins);
            for (int k = 0; k < nd->n_in; k++) {
                const char *s = json_string_value(json_array_get(ins, (size_t)k));
                int f = s ? find_node(net, idx, s) : -1;
                if (f < 0) {
                    st = key_err(&lc, "inputs", "%s: no earlier layer is named '%s'", s ? s : "(not a string)");
                    goto fail;
                }
                nd->in[k] = f;
            }
        } else {
            const json_t *ji = json_object_get(lc.obj, "input");
            if (ji) {
                const char *s = json_string_value(ji);
                int f = s ? find_node(net, idx, s) : -1;
                if (f < 0) {
                    st = key_err(&lc, "input", "%s: no earlier layer is named '%s'", s ? s : "(not a string)");
                    goto fail;
                }
                nd->in[0] = f;
            }
        }
        const net_node *src = &net->nodes[nd->in[0]];
        static const char *const k_conv[] = {"type", "name", "input", "out", "kernel", "stride",
                                             "pad", "dilation", "groups", "bias", NULL};
        static const char *const k_linear[] = {"type", "name", "input", "out", "bias", NULL};
        static const char *const k_plain[] = {"type", "name", "input", NULL};
        static const char *const k_pool[] = {"type", "name", "input", "kernel", "stride", "pad", NULL};
        static const char *const k_avg[] = {"type", "name", "input", "kernel", "stride", "pad",
                                            "count_include_pad", NULL};
        static const char *const k_add[] = {"type", "name", "inputs", NULL};
        static const char *const k_clip[] = {"type", "name", "input", "min", "max", NULL};
        static const char *const k_leaky[] = {"type", "name", "input", "alpha", NULL};
        static const char *const k_scale[] = {"type", "name", "input", "value", NULL};
        switch (nd->op) {
        case OP_CONV: {
            if ((st = check_keys(&lc, k_conv))) goto fail;
            if ((st = get_int(&lc, "out", &nd->out_ch, 0, 1, 1, 4096))) goto fail;
            if ((st = get_int(&lc, "kernel", &nd->kernel, 0, 1, 1, 15))) goto fail;
            if ((st = get_int(&lc, "stride", &nd->stride, 1, 0, 1, 8))) goto fail;
            if ((st = get_int(&lc, "dilation", &nd->dilation, 1, 0, 1, 16))) goto fail;
            /* the dilated kernel spans dilation * (kernel - 1) + 1 */
            const int most_pad = nd->dilation * (nd->kernel - 1);
            if ((st = get_int(&lc, "pad", &nd->pad, 0, 0, 0, most_pad))) goto fail;
            if ((st = get_int(&lc, "groups", &nd->groups, 1, 0, 1, 4096))) goto fail;
            if (src->c % nd->groups || nd->out_ch % nd->groups) {
                char dd[128];
                snprintf(dd, sizeof dd, "%d input and %d output channels", src->c, nd->out_ch);
                st = key_err(&lc, "groups", "%s must divide the %s", dd);
                goto fail;
            }
            const json_t *b = json_object_get(lc.obj, "bias");
            if (b && !json_is_boolean(b)) {
                st = key_err(&lc, "bias", "%s must be true or false%s", "");
                goto fail;
            }
            nd->bias = b ? json_is_true(b) : 1;
            conv2d_dims d;
            if (conv2d_dims_init_ex(&d, 1, src->c, src->h, src->w, nd->out_ch, nd->kernel,
                                    nd->kernel, nd->stride, nd->pad, nd->dilation,
                                    nd->groups) != 0) {
                char dd[128];
                snprintf(dd, sizeof dd, "%dx%d", src->h, src->w);
                st = key_err(&lc, "kernel", "%s: the kernel does not fit the %s input", dd);
                goto fail;
            }
            nd->c = nd->out_ch, nd->h = d.oh, nd->w = d.ow;
            break;
        }
        case OP_LINEAR: {
            if ((st = check_keys(&lc, k_linear))) goto fail;
            if ((st = get_int(&lc, "out", &nd->out_ch, 0, 1, 1, 1 << 16))) goto fail;
            const json_t *b = json_object_get(lc.obj, "bias");
            if (b && !json_is_boolean(b)) {
                st = key_err(&lc, "bias", "%s must be true or false%s", "");
                goto fail;
            }
            nd->bias = b ? json_is_true(b) : 1;
            if (src->h != 1 || src->w != 1) {
                char dd[128];
                snprintf(dd, sizeof dd, " (%dx%dx%d); add a flatten or avgpool layer before it",
                         src->c, src->h, src->w);
                st = key_err(&lc, "input", "%s: a linear layer needs a flat input%s", dd);
                goto fail;
            }
            nd->c = nd->out_ch, nd->h = nd->w = 1;
            break;
        }
        case OP_BN:
        case OP_RELU:
            if ((st = check_keys(&lc, k_plain))) goto fail;
            nd->c = src->c, nd->h = src->h, nd->w = src->w;
            nd->nonneg = nd->op == OP_RELU;
            break;
        case OP_FLATTEN:
            if ((st = check_keys(&lc, k_plain))) goto fail;
            nd->c = src->c * src->h * src->w, nd->h = nd->w = 1;
            nd->nonneg = src->nonneg;
            break;
        case OP_AVGPOOL:
            if ((st = check_keys(&lc, k_avg))) goto fail;
            nd->c = src->c, nd->h = nd->w = 1;
            nd->nonneg = src->nonneg;
            if (!json_object_get(lc.obj, "kernel")) {
                /* global average pooling: the window's keys have no meaning */
                static const char *const k_win[] = {"stride", "pad", "count_include_pad"};
                for (int t = 0; t < 3; t++)
                    if (json_object_get(lc.obj, k_win[t])) {
                        st = key_err(&lc, k_win[t], "%s is a key of windowed average pooling%s",
                                     ": give \"kernel\" too (without it the pooling is global)");
                        goto fail;
                    }
                break;
            }
            if ((st = get_bool(&lc, "count_include_pad", &nd->count_include_pad, 0))) goto fail;
            /* the window's keys and shape as max pooling's */
            /* fall through */
        case OP_MAXPOOL: {
            if (nd->op == OP_MAXPOOL && (st = check_keys(&lc, k_pool))) goto fail;
            if ((st = get_int(&lc, "kernel", &nd->kernel, 0, 1, 1, 16))) goto fail;
            if ((st = get_int(&lc, "stride", &nd->stride, nd->kernel, 0, 1, 16))) goto fail;
            if ((st = get_int(&lc, "pad", &nd->pad, 0, 0, 0, nd->kernel - 1))) goto fail;
            if (src->h + 2 * nd->pad < nd->kernel || src->w + 2 * nd->pad < nd->kernel) {
                char dd[64];
                snprintf(dd, sizeof dd, "%dx%d", src->h, src->w);
                st = key_err(&lc, "kernel", nd->pad ? "%s: the pooling window is larger than the "
                                                      "padded %s input"
                                                    : "%s: the pooling window is larger than the "
                                                      "%s input",
                             dd);
                goto fail;
            }
            nd->c = src->c;
            nd->h = (src->h + 2 * nd->pad - nd->kernel) / nd->stride + 1;
            nd->w = (src->w + 2 * nd->pad - nd->kernel) / nd->stride + 1;
            nd->nonneg = src->nonneg;
            break;
        }
        case OP_CLIP: {
            if ((st = check_keys(&lc, k_clip))) goto fail;
            double lo, hi;
            if ((st = get_num(&lc, "min", &lo, -INFINITY, 0, -FLT_MAX, FLT_MAX))) goto fail;
            if ((st = get_num(&lc, "max", &hi, INFINITY, 0, -FLT_MAX, FLT_MAX))) goto fail;
            nd->lo = (float)lo, nd->hi = (float)hi;
            if (!(nd->lo < nd->hi)) {
                char dd[96];
                snprintf(dd, sizeof dd, " (min %g, max %g)", (double)nd->lo, (double)nd->hi);
                st = key_err(&lc, "max", "%s must be above min%s", dd);
                goto fail;
            }
            nd->c = src->c, nd->h = src->h, nd->w = src->w;
            /* ReLU6 (min 0): the next layer's input quantizer is unsigned */
            nd->nonneg = nd->lo >= 0.0f || (src->nonneg && nd->hi >= 0.0f);
            break;
        }
        case OP_LEAKYRELU: {
            if ((st = check_keys(&lc, k_leaky))) goto fail;
            double a;
            if ((st = get_num(&lc, "alpha", &a, 0.01, 0, 0.0, 1.0))) goto fail;
            nd->alpha = (float)a;
            nd->c = src->c, nd->h = src->h, nd->w = src->w;
            nd->nonneg = src->nonneg || nd->alpha == 0.0f;
            break;
        }
        case OP_SCALE: {
            if ((st = check_keys(&lc, k_scale))) goto fail;
            double v;
            if ((st = get_num(&lc, "value", &v, 0.0, 1, -FLT_MAX, FLT_MAX))) goto fail;
            nd->value = (float)v;
            nd->c = src->c, nd->h = src->h, nd->w = src->w;
            nd->nonneg = nd->value == 0.0f || (nd->value > 0.0f && src->nonneg);
            break;
        }
        case OP_CONCAT: {
            if ((st = check_keys(&lc, k_add))) goto fail;
            const net_node *a = &net->nodes[nd->in[0]];
            nd->c = 0, nd->h = a->h, nd->w = a->w;
            nd->nonneg = 1;
            for (int t = 0; t < nd->n_in; t++) {
                const net_node *b = &net->nodes[nd->in[t]];
                if (b->h != a->h || b->w != a->w) {
                    char dd[256];
                    snprintf(dd, sizeof dd, "'%s' is %dx%dx%d, '%s' is %dx%dx%d", a->name, a->c,
                             a->h, a->w, b->name, b->c, b->h, b->w);
                    st = key_err(&lc, "inputs", "%s: the inputs differ in height or width (%s)",
                                 dd);
                    goto fail;
                }
                nd->c += b->c;
                nd->nonneg = nd->nonneg && b->nonneg;
            }
            if (nd->c > 1 << 20) {
                st = key_err(&lc, "inputs", "%s: more than %s channels", "1048576");
                goto fail;
            }
            break;
        }
        case OP_ADD: {
            if ((st = check_keys(&lc, k_add))) goto fail;
            const net_node *a = &net->nodes[nd->in[0]], *b = &net->nodes[nd->in[1]];
            if (a->c != b->c || a->h != b->h || a->w != b->w) {
                char dd[160];
                snprintf(dd, sizeof dd, "%dx%dx%d vs %dx%dx%d", a->c, a->h, a->w, b->c, b->h, b->w);
                st = key_err(&lc, "inputs", "%s: the two inputs have different shapes (%s)", dd);
                goto fail;
            }
            nd->c = a->c, nd->h = a->h, nd->w = a->w;
            nd->nonneg = a->nonneg && b->nonneg;
            break;
        }
        default:
            break;
        }
        /* every later size is computed from these in int */
        if ((size_t)nd->c * nd->h * nd->w > NET_MAX_VALUES) {
            char dd[160];
            snprintf(dd, sizeof dd, " (%dx%dx%d = %zu values per image; the limit is %zu)",
                     nd->c, nd->h, nd->w, (size_t)nd->c * nd->h * nd->w, (size_t)NET_MAX_VALUES);
            st = key_err(&lc, nd->op == OP_CONV ? "out" : NULL, "%s: the output is too large%s",
                         dd);
            goto fail;
        }
        net->n_nodes++;
    }
    net->output = net->n_nodes - 1;
    {
        const net_node *o = &net->nodes[net->output];
        if (o->c * o->h * o->w != classes) {
            char field[64];
            snprintf(field, sizeof field, "model.layers[%d]", net->output - 1);
            st = lsq_err_set(err, LSQ_ERR_INVALID, field,
                             "%s: the network ends with %dx%dx%d outputs; the dataset has %d classes",
                             field, o->c, o->h, o->w, classes);
            goto fail;
        }
    }

    /* quantization per conv/linear */
    int first_q = -1, last_q = -1;
    for (int i = 1; i < net->n_nodes; i++) {
        if (net->nodes[i].op == OP_CONV || net->nodes[i].op == OP_LINEAR) {
            if (first_q < 0) first_q = i;
            last_q = i;
        }
    }
    if (net->quantized) {
        /* quant.layers may name only the model's conv/linear layers */
        const char *names[MAX_NODES];
        int n_names = 0;
        for (int i = 1; i < net->n_nodes; i++)
            if (net->nodes[i].op == OP_CONV || net->nodes[i].op == OP_LINEAR)
                names[n_names++] = net->nodes[i].name;
        if ((st = spec_check_layer_names(quant, names, n_names, err)) != LSQ_OK) goto fail;
    }

    /* pass 2: views */
    size_t pcur = 0, scur = 0;
    for (int i = 1; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        const net_node *src = &net->nodes[nd->in[0]];
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            int wd[4] = {nd->out_ch, src->c / (nd->groups > 1 ? nd->groups : 1), nd->kernel,
                          nd->kernel};
            int ndim = 4;
            if (nd->op == OP_LINEAR) wd[1] = src->c * src->h * src->w, ndim = 2;
            nd->wv = add_view(net, i, ".weight", PV_WEIGHT, 0, ndim, wd, &pcur);
            if (nd->bias) nd->bv = add_view(net, i, ".bias", PV_BIAS, 0, 1, wd, &pcur);
            if (pcur > NET_MAX_PARAMS) {
                char field[64];
                node_field(net, i, field, sizeof field);
                st = lsq_err_set(err, LSQ_ERR_INVALID, field,
                                 "%s: layer '%s' has %zu weights (%d outputs x %zu inputs), "
                                 "which takes the network to %zu parameters; the limit is %zu",
                                 field, nd->name, net->views[nd->wv].count, nd->out_ch,
                                 net->views[nd->wv].count / (size_t)nd->out_ch, pcur,
                                 (size_t)NET_MAX_PARAMS);
                goto fail;
            }
            if (!net->quantized) continue;
            /* bits: the spec's rule (job, then first/last, then override) */
            spec_layer_quant lq = spec_layer_resolve(quant, nd->name, i == first_q || i == last_q);
            if (!lq.quantized) continue;
            int wbits = lq.weight_bits, abits = lq.act_bits;
            /* quant.act_sign is the rule for inputs that can be negative;
             * an input after ReLU (or the image) is unsigned unless a
             * per-layer override says otherwise */
            const spec_layer_override *ov = spec_find_override(quant, nd->name);
            spec_act_sign asign = (ov && ov->act_sign != ASIGN_AUTO) || !src->nonneg
                                      ? lq.act_sign : ASIGN_UNSIGNED;
            /* weights: signed; per-tensor or per-output-channel */
            nd->wq.on = 1;
            quant_range_init(&nd->wq.r, wbits, 1);
            nd->wq.channels = quant->granularity == GRAN_CHANNEL ? nd->out_ch : 1;
            nd->wq.per = net->views[nd->wv].count / (size_t)nd->wq.channels;
            int sd[1] = {nd->wq.channels};
            nd->wq.step_view = add_view(net, i, ".weight.step", PV_STEP, 0, 1, sd, &pcur);
            /* input activations: unsigned after ReLU, else by act_sign */
            nd->aq.on = 1;
            int is_signed, offset = 0;
            if (asign == ASIGN_AUTO) is_signed = !src->nonneg;
            else if (asign == ASIGN_UNSIGNED) is_signed = 0;
            else if (asign == ASIGN_SIGNED) is_signed = 1;
            else is_signed = 0, offset = 1;
            quant_range_init(&nd->aq.r, abits, is_signed);
            nd->aq.channels = 1;
            nd->aq.per = (size_t)src->c * src->h * src->w;
            int one[1] = {1};
            nd->aq.step_view = add_view(net, i, ".input.step", PV_STEP, 0, 1, one, &pcur);
            if (offset) nd->aq.offset_view = add_view(net, i, ".input.offset", PV_OFFSET, 0, 1, one, &pcur);
            nd->aq.flag_view = add_view(net, i, ".input.init", PV_FLAG, 1, 1, one, &scur);
        } else if (nd->op == OP_BN) {
            int cd[1] = {nd->c};
            nd->gammav = add_view(net, i, ".weight", PV_BN_GAMMA, 0, 1, cd, &pcur);
            nd->betav = add_view(net, i, ".bias", PV_BN_BETA, 0, 1, cd, &pcur);
            nd->rmeanv = add_view(net, i, ".running_mean", PV_RUNNING, 1, 1, cd, &scur);
            nd->rvarv = add_view(net, i, ".running_var", PV_RUNNING, 1, 1, cd, &scur);
        }
    }
    net->n_params = pcur;
    net->n_state = scur;

    plan_backward(net);

    /* the buffers at max_batch, counted, not allocated */
    net_alloc a = {.dry = 1};
    alloc_buffers(net, max_batch, &a);
    if (a.bytes > NET_MAX_BYTES) {
        int big = 1;
        for (int i = 2; i < net->n_nodes; i++)
            if (net->nodes[i].bytes > net->nodes[big].bytes) big = i;
        char field[64], tot[32], lim[32], one[32];
        node_field(net, big, field, sizeof field);
        /* a net that would fit at a batch of 64 is refused for its batch */
        net_alloc small = {.dry = 1};
        if (max_batch > 64) {
            size_t keep = net->nodes[big].bytes;
            alloc_buffers(net, 64, &small);
            net->nodes[big].bytes = keep;
            if (small.bytes <= NET_MAX_BYTES) snprintf(field, sizeof field, "train.batch_size");
        }
        st = lsq_err_set(err, LSQ_ERR_INVALID, field,
                         "%s: at batch size %d the network's buffers take %s (layer '%s' "
                         "alone %s), more than the limit of %s; use a smaller layer or batch "
                         "size", field, max_batch, human_bytes((double)a.bytes, tot, sizeof tot),
                         net->nodes[big].name,
                         human_bytes((double)net->nodes[big].bytes, one, sizeof one),
                         human_bytes((double)NET_MAX_BYTES, lim, sizeof lim));
        goto fail;
    }
    if (cost) {
        cost->params = net->n_params;
        cost->state = net->n_state;
        cost->bytes = a.bytes;
        cost->max_batch = max_batch;
    }
    return LSQ_OK;
fail:
    net_free(net);
    return st;
}

lsq_status net_build(lsq_net *net, const json_t *spec_layers, const spec_quant *quant,
                     int classes, int max_batch, lsq_err *err)
{
    lsq_status st = net_plan(net, spec_layers, quant, classes, max_batch, NULL, err);
    if (st != LSQ_OK) return st;
    net_alloc a = {0};
    alloc_buffers(net, max_batch, &a);
    if (a.fail) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory allocating the network");
        goto fail;
    }
    /* gradient scales */
    for (int i = 1; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        if (nd->op == OP_FLATTEN) {
            /* flatten is a view of its input (set again in every forward) */
            nd->out = net->nodes[nd->in[0]].out;
            nd->dout = net->nodes[nd->in[0]].dout;
        }
        if (!nd->wq.on) continue;
        net_quant *qs[2] = {&nd->wq, &nd->aq};
        for (int k = 0; k < 2; k++) {
            net_quant *q = qs[k];
            for (int c = 0; c < q->channels; c++) {
                double g;
                if (net->gscale == GSCALE_PAPER) g = quant_grad_scale_paper(q->per, &q->r);
                else if (net->gscale == GSCALE_NONE) g = 1.0;
                else if (net->gscale == GSCALE_SQRT_N) g = 1.0 / sqrt((double)q->per);
                else g = net->gscale_value;
                q->g[c] = (float)g;
            }
        }
    }
    return LSQ_OK;
fail:
    net_free(net);
    return st;
}

void net_free(lsq_net *net)
{
    if (!net) return;
    for (int i = 1; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        if (nd->op != OP_FLATTEN) {
            if (nd->arena_out < 0) free(nd->out);
            if (nd->arena_dout < 0) free(nd->dout);
        }
        free(nd->aux);
        free(nd->argmax);
        free(nd->qw);
        free(nd->dqw);
        free(nd->wcodes);
        free(nd->wq.g);
        free(nd->aq.g);
    }
    /* nodes that failed mid-build may own buffers beyond n_nodes: none, since
     * buffers are allocated only after every node is built */
    free(net->nodes);
    free(net->views);
    free(net->params);
    free(net->grads);
    free(net->state);
    free(net->scratch);
    free(net->arena);
    free(net->qsums);
    free(net->qbuf);
    free(net->dqbuf);
    free(net->probs);
    json_decref(net->layers);
    memset(net, 0, sizeof *net);
}

json_t *net_spec_layers(const lsq_spec *spec, lsq_err *err)
{
    net_data d = NET_DATA_MNIST;
    return net_spec_layers_for(spec, &d, err);
}

json_t *net_spec_layers_for(const lsq_spec *spec, const net_data *data, lsq_err *err)
{
    json_t *layers;
    if (spec->model_onnx[0]) {
        /* the ONNX file's layer list (its input shape is checked against
         * the dataset by the caller, naming model.onnx) */
        onnx_import im;
        if (onnx_import_file(&im, spec->model_onnx, ONNX_IMPORT_MAX_BYTES, err) != LSQ_OK)
            return NULL;
        layers = json_deep_copy(im.layers);
        onnx_import_free(&im);
        if (!layers) {
            lsq_err_set(err, LSQ_ERR_NOMEM, "model.onnx", "out of memory copying the layers");
            return NULL;
        }
    } else if (spec->model_layers) {
        layers = json_deep_copy(spec->model_layers);
        if (!layers) {
            lsq_err_set(err, LSQ_ERR_NOMEM, "model", "out of memory copying model.layers");
            return NULL;
        }
        const json_t *in = json_object_get(layers, "input");
        if (!in) {
            json_object_set_new(layers, "input", json_pack("[i,i,i]", data->c, data->h, data->w));
        } else {
            int d[3] = {0, 0, 0};
            for (int i = 0; i < 3; i++) d[i] = (int)json_integer_value(json_array_get(in, (size_t)i));
            if (d[0] != data->c || d[1] != data->h || d[2] != data->w) {
                lsq_err_set(err, LSQ_ERR_INVALID, "model.input",
                            "model.input is %dx%dx%d but the dataset's images are %dx%dx%d "
                            "(C x H x W)", d[0], d[1], d[2], data->c, data->h, data->w);
                json_decref(layers);
                return NULL;
            }
        }
    } else {
        layers = net_zoo_layers_for(spec->arch[0] ? spec->arch : "cnn-small", data->c, data->h,
                                    data->w, data->classes, err);
        if (!layers) return NULL;
    }
    if (data->normalize) {
        json_t *m = json_array(), *sd = json_array();
        for (int i = 0; i < data->c && i < NET_NORM_MAX; i++) {
            json_array_append_new(m, json_real(data->mean[i]));
            json_array_append_new(sd, json_real(data->std[i] >= 1e-6 ? data->std[i] : 1.0));
        }
        json_object_set_new(layers, "normalize", json_pack("{s:o, s:o}", "mean", m, "std", sd));
    }
    return layers;
}

lsq_status net_spec_data(const lsq_spec *spec, net_data *data, lsq_err *err)
{
    *data = NET_DATA_MNIST;
    data->normalize = spec->normalize;
    for (int i = 0; i < NET_NORM_MAX; i++) data->std[i] = 1.0;
    if (!spec->dataset_cache[0]) return LSQ_OK;
    lsq_cache c;
    lsq_status st = cache_read(&c, spec->dataset_cache, 1, err);
    if (st != LSQ_OK) {
        if (err) snprintf(err->field, sizeof err->field, "dataset.cache");
        return st;
    }
    data->c = c.c, data->h = c.h, data->w = c.w, data->classes = c.classes;
    data->train_images = c.train.n;
    for (int i = 0; i < c.c; i++) data->mean[i] = c.mean[i], data->std[i] = c.std[i];
    cache_free(&c);
    return LSQ_OK;
}

int net_spec_max_batch(const lsq_spec *spec, const char **field)
{
    /* as train.c sizes its nets: the larger phase, and PTQ's calibration
     * batch, which runs through the net in one forward */
    int b = spec->train.batch_size;
    const char *f = "train.batch_size";
    if (spec->pretrain.enabled && spec->pretrain.batch_size > b)
        b = spec->pretrain.batch_size, f = "pretrain.batch_size";
    if (spec->quant.enabled && spec->quant.calibration_images > b &&
        (spec->quant.method == QMETHOD_PTQ || spec->quant.report_ptq))
        b = spec->quant.calibration_images, f = "quant.calibration_images";
    if (field) *field = f;
    return b;
}

lsq_status net_check_spec_plan(const lsq_spec *spec, json_t **shapes, lsq_err *err)
{
    if (shapes) *shapes = NULL;
    net_data d;
    lsq_status st = net_spec_data(spec, &d, err);
    if (st != LSQ_OK) return st;
    json_t *layers = net_spec_layers_for(spec, &d, err);
    if (!layers) return err ? err->code : LSQ_ERR_INVALID;
    lsq_net net;
    net_cost cost;
    const char *bf;
    int batch = net_spec_max_batch(spec, &bf);
    st = net_plan(&net, layers, spec->quant.enabled ? &spec->quant : NULL, d.classes, batch,
                  &cost, err);
    const char *tb = "train.batch_size";
    if (st != LSQ_OK && err && !strcmp(err->field, tb) && strcmp(bf, tb)) {
        /* net_plan blames train.batch_size; the batch came from another key */
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message + (strncmp(err->message, tb, strlen(tb))
                                                            ? 0 : strlen(tb)));
        lsq_err_set(err, st, bf, "%s%s", bf, msg);
    }
    if (st == LSQ_OK) {
        if (shapes) *shapes = net_shapes_json(&net, &cost);
        net_free(&net);
    }
    json_decref(layers);
    return st;
}

lsq_status net_check_spec(const lsq_spec *spec, lsq_err *err)
{
    return net_check_spec_plan(spec, NULL, err);
}

json_t *net_shapes_json(const lsq_net *net, const net_cost *cost)
{
    json_t *list = json_array();
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        size_t p = 0;
        for (int v = 0; v < net->n_views; v++)
            if (net->views[v].node == i && !net->views[v].in_state) p += net->views[v].count;
        json_array_append_new(list, json_pack("{s:s,s:s,s:[i,i,i],s:I,s:I}", "name", nd->name,
                                              "type", NET_OP_NAMES[nd->op], "shape", nd->c, nd->h,
                                              nd->w, "params", (json_int_t)p, "bytes",
                                              (json_int_t)nd->bytes));
    }
    return json_pack("{s:o,s:I,s:I,s:i,s:{s:I,s:I,s:I}}", "layers", list, "params",
                     (json_int_t)net->n_params, "bytes",
                     (json_int_t)(cost ? cost->bytes : 0), "batch_size",
                     cost ? cost->max_batch : net->max_batch, "limits", "params",
                     (json_int_t)NET_MAX_PARAMS, "values_per_image", (json_int_t)NET_MAX_VALUES,
                     "bytes", (json_int_t)NET_MAX_BYTES);
}

int net_find_view(const lsq_net *net, const char *name)
{
    for (int i = 0; i < net->n_views; i++)
        if (strcmp(net->views[i].name, name) == 0) return i;
    return -1;
}

static float *view_ptr(lsq_net *net, int v)
{
    const net_view *vw = &net->views[v];
    return (vw->in_state ? net->state : net->params) + vw->off;
}

void net_init_params(lsq_net *net, uint64_t seed)
{
    lsq_rng rng;
    rng_seed(&rng, seed, 0x9e11);
    for (int v = 0; v < net->n_views; v++) {
        net_view *vw = &net->views[v];
        float *p = view_ptr(net, v);
        const net_node *nd = &net->nodes[vw->node];
        switch (vw->kind) {
        case PV_WEIGHT:
            if (nd->op == OP_CONV) {
                /* He (Kaiming) normal, fan_out, for ReLU networks */
                double fan_out = (double)nd->out_ch * nd->kernel * nd->kernel;
                double std = sqrt(2.0 / fan_out);
                for (size_t i = 0; i < vw->count; i++) p[i] = (float)(std * rng_normal(&rng));
            } else {
                /* PyTorch's default for linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
                double bound = 1.0 / sqrt((double)vw->dims[1]);
                for (size_t i = 0; i < vw->count; i++)
                    p[i] = (float)(bound * (2.0 * rng_uniform(&rng) - 1.0));
            }
            break;
        case PV_BIAS: {
            const net_view *w = &net->views[nd->wv];
            double bound = 1.0 / sqrt((double)(w->count / (size_t)nd->out_ch));
            for (size_t i = 0; i < vw->count; i++)
                p[i] = (float)(bound * (2.0 * rng_uniform(&rng) - 1.0));
            break;
        }
        case PV_BN_GAMMA:
            for (size_t i = 0; i < vw->count; i++) p[i] = 1.0f;
            break;
        case PV_RUNNING: {
            float x = strstr(vw->name, ".running_var") ? 1.0f : 0.0f;
            for (size_t i = 0; i < vw->count; i++) p[i] = x;
            break;
        }
        case PV_STEP:
            for (size_t i = 0; i < vw->count; i++) p[i] = 1.0f;
            break;
        default:
            memset(p, 0, vw->count * sizeof *p);
            break;
        }
    }
}

int net_copy_matching(lsq_net *dst, const lsq_net *src)
{
    int copied = 0;
    for (int v = 0; v < dst->n_views; v++) {
        const net_view *dv = &dst->views[v];
        int s = net_find_view(src, dv->name);
        if (s < 0) continue;
        const net_view *sv = &src->views[s];
        if (sv->count != dv->count || sv->kind != dv->kind) continue;
        memcpy(view_ptr(dst, v), view_ptr((lsq_net *)src, s), dv->count * sizeof(float));
        copied++;
    }
    return copied;
}

void net_quant_init_weights(lsq_net *net, spec_qinit init)
{
    for (int i = 1; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        if (!nd->wq.on) continue;
        float *w = view_ptr(net, nd->wv);
        float *s = view_ptr(net, nd->wq.step_view);
        if (init == QINIT_MSE) quant_init_mse(s, NULL, w, nd->wq.channels, nd->wq.per, &nd->wq.r);
        else quant_init_paper(s, w, nd->wq.channels, nd->wq.per, &nd->wq.r);
        /* The network's input: 8-bit pixels are represented exactly by
         * s = 1/255 (codes 0..255); the paper's init would waste most levels. */
        if (nd->aq.on && reads_image(net, nd->in[0]) && !nd->aq.r.is_signed && !net->norm_on &&
            nd->aq.r.bits == 8 && nd->aq.offset_view < 0) {
            view_ptr(net, nd->aq.step_view)[0] = 1.0f / 255.0f;
            view_ptr(net, nd->aq.flag_view)[0] = 1.0f;
        }
        /* A normalised input covers [-mean/std, (1-mean)/std] per channel:
         * the smallest step that holds all of it without clipping. */
        if (nd->aq.on && reads_image(net, nd->in[0]) && nd->aq.r.is_signed && net->norm_on &&
            nd->aq.r.bits == 8 && nd->aq.offset_view < 0) {
            int ch = net->nodes[0].c;
            double step = 0;
            for (int c = 0; c < ch; c++) {
                double lo = net->norm_mean[c] / net->norm_std[c];
                double hi = (1.0 - net->norm_mean[c]) / net->norm_std[c];
                if (lo / nd->aq.r.qn > step) step = lo / nd->aq.r.qn;
                if (hi / nd->aq.r.qp > step) step = hi / nd->aq.r.qp;
            }
            if (step > 0) {
                view_ptr(net, nd->aq.step_view)[0] = (float)step;
                view_ptr(net, nd->aq.flag_view)[0] = 1.0f;
            }
        }
    }
}

void net_calibrate(lsq_net *net, const float *x, int n)
{
    net->calibrating = 1;
    net_forward(net, x, n, 0);
    net->calibrating = 0;
}

/* ------------------------------------------------------- forward/backward */

/* A conv node's dimensions for a batch of n. */
static void conv_dims_of(const lsq_net *net, const net_node *nd, int n, conv2d_dims *d)
{
    const net_node *src = &net->nodes[nd->in[0]];
    conv2d_dims_init_ex(d, n, src->c, src->h, src->w, nd->out_ch, nd->kernel, nd->kernel,
                        nd->stride, nd->pad, nd->dilation, nd->groups);
}

/* A pooling node's window for a batch of n. */
static void pool_dims_of(const lsq_net *net, const net_node *nd, int n, pool2d_dims *d)
{
    const net_node *src = &net->nodes[nd->in[0]];
    pool2d_dims_init(d, n, src->c, src->h, src->w, nd->kernel, nd->stride, nd->pad);
}

/* Node i writes the gradient of its input j whole. */
static int sets_grad(const lsq_net *net, int i, int j) { return net->nodes[j].grad_setter == i; }

/* The ReLU at index i is the second half of a fused batch norm + ReLU. */
static int relu_is_fused(const lsq_net *net, int i)
{
    const net_node *nd = &net->nodes[i];
    return nd->op == OP_RELU && nd->in[0] > 0 && net->nodes[nd->in[0]].fused_relu == i;
}

/* net->qbuf = the layer's input quantized (v_hat); returns it. The buffer
 * is shared by every quantized layer: the backward quantizes the input again
 * (the same values: the step does not change between the two passes)
 * rather than keep one copy per layer. */
static const float *quantize_input(lsq_net *net, const net_node *nd, const float *in,
                                   size_t count)
{
    quant_forward(net->qbuf, NULL, in, view_ptr(net, nd->aq.step_view),
                  nd->aq.offset_view >= 0 ? view_ptr(net, nd->aq.offset_view) : NULL, 1, count,
                  &nd->aq.r);
    return net->qbuf;
}

/* A conv whose input (unsigned, no LSQ+ offset) and weights are both
 * quantized runs its forward on the integer codes (conv2d_forward_codes);
 * nonfinite quantized weights keep the float path, which carries them.
 * Returns 0 when it ran, -1 when the caller runs the float path. */
static int conv_codes_forward(lsq_net *net, const net_node *nd, const float *in,
                              const float *b, const conv2d_dims *d)
{
    if (!nd->aq.on || !nd->wq.on || nd->aq.offset_view >= 0) return -1;
    const size_t wn = net->views[nd->wv].count;
    for (size_t j = 0; j < wn; j++)
        if (!isfinite(nd->qw[j])) return -1;
    return conv2d_forward_codes(nd->out, NULL, in,
                                view_ptr(net, nd->aq.step_view)[0], &nd->aq.r, nd->wcodes,
                                view_ptr(net, nd->wq.step_view), nd->wq.channels, &nd->wq.r, b,
                                d, net->scratch);
}

/* A data-parallel run's activation step from the global first batch: the
 * paper's rule from the mean |x| summed over the ranks; the MSE search on
 * every rank's values gathered in rank order, which is the global batch in
 * its own order, so the step is the one a single process finds. */
static void init_act_step_global(lsq_net *net, const net_node *nd, float *s, float *off,
                                 const float *in, size_t count, int mse)
{
    const net_collective *c = &net->coll;
    if (!mse) {
        double t[2] = {0.0, (double)count};
        for (size_t i = 0; i < count; i++) t[0] += fabs((double)in[i]);
        c->sum(c->ctx, t, 2);
        s[0] = quant_step_paper(t[1] > 0 ? t[0] / t[1] : 0.0, &nd->aq.r);
        return;
    }
    size_t room = c->sum_size(c->ctx, count), total = 0;
    float *all = malloc((room ? room : 1) * sizeof(float));
    assert(all && "out of memory for the first batch's activations");
    c->gather(c->ctx, all, &total, in, count);
    quant_init_mse(s, off, all, 1, total, &nd->aq.r);
    free(all);
}

const float *net_forward(lsq_net *net, const float *x, int n, int training)
{
    /* the input node's output is the caller's batch (borrowed until the
     * matching backward) */
    net->nodes[0].out = (float *)x;
    net->nodes[0].dout = net->dinput;
    for (int i = 1; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        const net_node *src = &net->nodes[nd->in[0]];
        const float *in = src->out;
        size_t in_count = (size_t)n * src->c * src->h * src->w;
        size_t out_count = (size_t)n * nd->c * nd->h * nd->w;
        switch (nd->op) {
        case OP_CONV:
        case OP_LINEAR: {
            const float *w = view_ptr(net, nd->wv);
            const float *b = nd->bv >= 0 ? view_ptr(net, nd->bv) : NULL;
            if (nd->aq.on) {
                float *s = view_ptr(net, nd->aq.step_view);
                float *off = nd->aq.offset_view >= 0 ? view_ptr(net, nd->aq.offset_view) : NULL;
                float *flag = view_ptr(net, nd->aq.flag_view);
                if ((training || net->calibrating) && flag[0] == 0.0f) {
                    /* activation steps start from the first training batch
                     * (or the calibration batch) */
                    int mse = net->qinit == QINIT_MSE || off || net->calibrating;
                    if (training && net->coll.ctx) init_act_step_global(net, nd, s, off, in, in_count, mse);
                    else if (mse)
                        quant_init_mse(s, off, in, 1, in_count, &nd->aq.r);
                    else
                        quant_init_paper(s, in, 1, in_count, &nd->aq.r);
                    flag[0] = 1.0f;
                }
            }
            if (nd->wq.on) {
                quant_forward(nd->qw, nd->wcodes, w, view_ptr(net, nd->wq.step_view), NULL,
                              nd->wq.channels, nd->wq.per, &nd->wq.r);
                w = nd->qw;
            }
            if (nd->op == OP_CONV) {
                conv2d_dims d;
                conv_dims_of(net, nd, n, &d);
                /* on the codes where the layer allows it; a float layer's
                 * may take Winograd */
                if (!nd->aq.on && !nd->wq.on)
                    conv2d_forward_float(nd->out, in, w, b, &d, net->scratch);
                else if (conv_codes_forward(net, nd, in, b, &d) != 0)
                    conv2d_forward(nd->out,
                                   nd->aq.on ? quantize_input(net, nd, in, in_count) : in, w,
                                   b, &d, net->scratch);
            } else {
                if (nd->aq.on) in = quantize_input(net, nd, in, in_count);
                linear_forward(nd->out, in, w, b, n, src->c * src->h * src->w, nd->out_ch);
            }
            break;
        }
        case OP_BN: {
            float *g = view_ptr(net, nd->gammav), *be = view_ptr(net, nd->betav);
            float *rm = view_ptr(net, nd->rmeanv), *rv = view_ptr(net, nd->rvarv);
            int r = nd->fused_relu;
            if (training && net->sync_bn && net->coll.ctx) {
                const bn_sync sy = {net->coll.sum, net->coll.ctx};
                batchnorm_forward_train_sync(r >= 0 ? net->nodes[r].out : nd->out, nd->aux,
                                             nd->aux + nd->c, rm, rv, in, g, be, n, nd->c,
                                             nd->h * nd->w, BN_MOMENTUM, BN_EPS, r >= 0,
                                             net->scratch, &sy);
            } else if (r >= 0) {
                float *y = net->nodes[r].out;
                if (training)
                    batchnorm_relu_forward_train(y, nd->aux, nd->aux + nd->c, rm, rv, in, g,
                                                 be, n, nd->c, nd->h * nd->w, BN_MOMENTUM,
                                                 BN_EPS, net->scratch);
                else
                    batchnorm_relu_forward_eval(y, in, g, be, rm, rv, n, nd->c, nd->h * nd->w,
                                                BN_EPS);
            } else if (training)
                batchnorm_forward_train(nd->out, nd->aux, nd->aux + nd->c, rm, rv, in, g, be,
                                        n, nd->c, nd->h * nd->w, BN_MOMENTUM, BN_EPS,
                                        net->scratch);
            else
                batchnorm_forward_eval(nd->out, in, g, be, rm, rv, n, nd->c, nd->h * nd->w, BN_EPS);
            break;
        }
        case OP_RELU:
            if (!relu_is_fused(net, i)) relu_forward(nd->out, in, out_count);
            break;
        case OP_MAXPOOL:
            if (nd->pad) {
                pool2d_dims d;
                pool_dims_of(net, nd, n, &d);
                maxpool2d_forward(nd->out, nd->argmax, in, &d);
            } else {
                maxpool_forward(nd->out, nd->argmax, in, n, src->c, src->h, src->w, nd->kernel,
                                nd->stride, nd->h, nd->w);
            }
            break;
        case OP_AVGPOOL:
            if (nd->kernel) {
                pool2d_dims d;
                pool_dims_of(net, nd, n, &d);
                avgpool2d_forward(nd->out, in, &d, nd->count_include_pad);
            } else {
                avgpool_forward(nd->out, in, n, src->c, src->h * src->w);
            }
            break;
        case OP_CLIP:
            clip_forward(nd->out, in, out_count, nd->lo, nd->hi);
            break;
        case OP_LEAKYRELU:
            leakyrelu_forward(nd->out, in, out_count, nd->alpha);
            break;
        case OP_SCALE:
            scale_forward(nd->out, in, out_count, nd->value);
            break;
        case OP_CONCAT: {
            const float *ins[NET_MAX_INPUTS];
            int ch[NET_MAX_INPUTS];
            for (int t = 0; t < nd->n_in; t++) {
                ins[t] = net->nodes[nd->in[t]].out;
                ch[t] = net->nodes[nd->in[t]].c;
            }
            concat_forward(nd->out, ins, ch, nd->n_in, n, nd->h * nd->w);
            break;
        }
        case OP_ADD: {
            int r = nd->fused_relu;
            if (r >= 0)
                add_relu_forward(net->nodes[r].out, in, net->nodes[nd->in[1]].out, out_count);
            else
                add_forward(nd->out, in, net->nodes[nd->in[1]].out, out_count);
            break;
        }
        case OP_FLATTEN:
            /* a view of its input, which for the raw image changes per call */
            nd->out = src->out;
            nd->dout = src->dout;
            break;
        default:
            break;
        }
    }
    return net->nodes[net->output].out;
}

/* batchnorm_backward_coef, over every rank's batch with net->sync_bn. */
static void bn_coef(const lsq_net *net, float *coef, float *dgamma, float *dbeta,
                    const float *dout, const float *beta, const float *in,
                    const float *save_mean, const float *save_rstd, const float *gamma, int n,
                    int c, int hw, float *work)
{
    if (net->sync_bn && net->coll.ctx) {
        const bn_sync sy = {net->coll.sum, net->coll.ctx};
        batchnorm_backward_coef_sync(coef, dgamma, dbeta, dout, beta, in, save_mean, save_rstd,
                                     gamma, n, c, hw, work, &sy);
    } else {
        batchnorm_backward_coef(coef, dgamma, dbeta, dout, beta, in, save_mean, save_rstd,
                                gamma, n, c, hw, work);
    }
}

void net_zero_grads(lsq_net *net)
{
    memset(net->grads, 0, net->n_params * sizeof(float));
}

/* Zeroes the gradient buffers that backward accumulates into, split across
 * the threads (a lone thread's memset of every activation gradient left the
 * others waiting). */
static void zero_douts(lsq_net *net, int n)
{
#pragma omp parallel num_threads(par_gemm_threads())
    {
        const size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        for (int i = 0; i < net->n_nodes; i++) {
            const net_node *nd = &net->nodes[i];
            float *buf = i ? nd->dout : net->dinput;
            if (!buf || (i && (nd->op == OP_FLATTEN || nd->fused_relu >= 0)) ||
                nd->grad_setter >= 0 || (i && nd->arena_dout >= 0))
                continue;
            const size_t len = (size_t)n * nd->c * nd->h * nd->w;
            const size_t lo = len * t / nt, hi = len * (t + 1) / nt;
            memset(buf + lo, 0, (hi - lo) * sizeof(float));
        }
    }
}

/* Zeroes node j's gradient in the arena, where its lifetime begins (before
 * that, its memory may hold another buffer), split across the threads. */
static void zero_dout_at_turn(lsq_net *net, int j, int n)
{
    const net_node *nd = &net->nodes[j];
    float *buf = nd->dout;
    const size_t len = (size_t)n * nd->c * nd->h * nd->w;
#pragma omp parallel num_threads(par_gemm_threads())
    {
        const size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        const size_t lo = len * t / nt, hi = len * (t + 1) / nt;
        memset(buf + lo, 0, (hi - lo) * sizeof(float));
    }
}

/* A conv whose input (no LSQ+ offset) and weights are both quantized runs
 * its backward on the codes in bf16 where LSQ_BWD=bf16 and the shape allows
 * (conv2d_backward_codes), without fusions; nonfinite quantized weights
 * keep the float path, which carries them. */
static int conv_codes_backward_ok(const lsq_net *net, const net_node *nd, const conv2d_dims *d)
{
    if (nd->op != OP_CONV || !nd->aq.on || !nd->wq.on || nd->aq.offset_view >= 0 ||
        conv2d_get_bwd() != CONV2D_BWD_BF16 || !conv2d_backward_codes_ready(d))
        return 0;
    const size_t wn = net->views[nd->wv].count;
    for (size_t j = 0; j < wn; j++)
        if (!isfinite(nd->qw[j])) return 0;
    return 1;
}

/* 1 when batch norm bn's input gradient is made by its input conv's
 * backward (conv2d_backward_ex): bn leaves it to the conv, which asks the
 * same. */
static int bn_grad_by_conv(const lsq_net *net, int bn, int n)
{
    const net_node *c = &net->nodes[net->nodes[bn].in[0]];
    if (c->op != OP_CONV || c->bn_after != bn) return 0;
    conv2d_dims d;
    conv_dims_of(net, c, n, &d);
    return (conv2d_backward_fuses(&d) || conv2d_backward_fuses_on_dnnl(&d)) &&
           !conv_codes_backward_ok(net, c, &d);
}

void net_backward(lsq_net *net, const float *dlogits, int n)
{
    zero_douts(net, n);
    net_node *o = &net->nodes[net->output];
    memcpy(o->dout, dlogits, (size_t)n * net->classes * sizeof(float));
    for (int i = net->n_nodes - 1; i >= 1; i--) {
        net_node *nd = &net->nodes[i];
        int si = nd->in[0];
        const net_node *src = &net->nodes[si];
        const float *in = src->out;
        float *din = src->dout; /* NULL for the raw image: no gradient needed */
        size_t in_count = (size_t)n * src->c * src->h * src->w;
        size_t out_count = (size_t)n * nd->c * nd->h * nd->w;
        /* the gradients in the arena that this turn is the first to add to */
        for (int j = 1; j <= i; j++)
            if (net->nodes[j].zero_turn == i) zero_dout_at_turn(net, j, n);
        switch (nd->op) {
        case OP_CONV:
        case OP_LINEAR: {
            const float *x = in;
            const float *w = view_ptr(net, nd->wv);
            float *dw = net->grads + net->views[nd->wv].off;
            float *db = nd->bv >= 0 ? net->grads + net->views[nd->bv].off : NULL;
            const float *qx = x, *qw = w;
            float *dqx = din, *dqw = dw;
            conv2d_dims cd = {0};
            if (nd->op == OP_CONV) conv_dims_of(net, nd, n, &cd);
            /* on the codes in bf16 (qbuf holds the input's codes) */
            int on_codes = nd->op == OP_CONV && conv_codes_backward_ok(net, nd, &cd);
            /* on oneDNN, the conv quantizes its input itself and runs the
             * quantizer's backward (conv2d_backward_fuses_on_dnnl) */
            int q_dnnl = !on_codes && nd->op == OP_CONV && nd->aq.on &&
                         nd->aq.offset_view < 0 && conv2d_backward_fuses_on_dnnl(&cd);
            if (nd->aq.on) {
                /* a conv sets dqx whole; linear_backward adds to it */
                if (!on_codes && !q_dnnl) qx = quantize_input(net, nd, x, in_count);
                dqx = net->dqbuf;
                if (nd->op != OP_CONV) memset(dqx, 0, in_count * sizeof(float));
            }
            if (nd->wq.on) {
                qw = nd->qw;
                dqw = nd->dqw;
                memset(dqw, 0, net->views[nd->wv].count * sizeof(float));
            }
            if (on_codes) {
                uint16_t *xc = (uint16_t *)net->qbuf;
                const float s_x = view_ptr(net, nd->aq.step_view)[0];
                quant_codes_bf16(xc, x, s_x, in_count, &nd->aq.r);
                if (conv2d_backward_codes(dqx, 1, dqw, db, nd->dout, xc, nd->wcodes, s_x,
                                          view_ptr(net, nd->wq.step_view), nd->wq.channels,
                                          &cd) != 0) {
                    /* out of memory for its buffers: the float backward */
                    on_codes = 0;
                    qx = quantize_input(net, nd, x, in_count);
                }
            }
            int fused = 0; /* the activation quantizer's backward done by the conv's */
            if (on_codes) {
                /* done above */
            } else if (nd->op == OP_CONV) {
                const conv2d_dims d = cd;
                conv2d_back bk = {.in = qx, .w = qw, .dout = nd->dout, .din = dqx,
                                  .din_set = nd->aq.on || sets_grad(net, i, si), .dw = dqw,
                                  .db = db};
                if (nd->bn_after >= 0 && bn_grad_by_conv(net, nd->bn_after, n)) {
                    /* the gradient reaching the batch norm, or its ReLU */
                    const net_node *bn = &net->nodes[nd->bn_after];
                    bk.dout = net->nodes[bn->fused_relu >= 0 ? bn->fused_relu : nd->bn_after].dout;
                    bk.bn_x = nd->out;
                    bk.bn_coef = bn->aux + 2 * (size_t)bn->c;
                }
                if (nd->aq.on && nd->aq.offset_view < 0 &&
                    (q_dnnl || conv2d_backward_fuses(&d))) {
                    const size_t so = net->views[nd->aq.step_view].off;
                    bk.din = din, bk.din_set = sets_grad(net, i, si);
                    bk.q_x = x, bk.q_s = net->params[so], bk.q_range = &nd->aq.r;
                    bk.q_dstep = net->grads + so, bk.q_gscale = nd->aq.g[0];
                    bk.q_sums = net->qsums;
                    fused = 1;
                }
                if (q_dnnl) bk.in = NULL;
                if (conv2d_backward_ex(&bk, &d, net->scratch) != 0) {
                    /* a fusion on oneDNN refused, nothing written: the
                     * layers' steps apart (the own path cannot refuse) */
                    if (bk.bn_coef) {
                        const net_node *bn = &net->nodes[nd->bn_after];
                        batchnorm_backward_planes(nd->dout, sets_grad(net, nd->bn_after, i),
                                                  bk.dout, nd->out, bk.bn_coef, n, bn->c,
                                                  bn->h * bn->w);
                        bk.dout = nd->dout, bk.bn_x = NULL, bk.bn_coef = NULL;
                    }
                    if (fused) {
                        bk.in = quantize_input(net, nd, x, in_count);
                        bk.din = dqx, bk.din_set = 1;
                        bk.q_x = NULL, bk.q_range = NULL, bk.q_dstep = NULL, bk.q_sums = NULL;
                        fused = 0;
                    }
                    conv2d_backward_ex(&bk, &d, net->scratch);
                }
            } else {
                linear_backward(dqx, dqw, db, nd->dout, qx, qw, n, src->c * src->h * src->w,
                                nd->out_ch);
            }
            if (nd->wq.on) {
                const net_view *sv = &net->views[nd->wq.step_view];
                quant_backward(dw, net->grads + sv->off, NULL, dqw, w, net->params + sv->off,
                               NULL, nd->wq.g, nd->wq.channels, nd->wq.per, &nd->wq.r);
            }
            if (nd->aq.on && !fused) {
                const net_view *sv = &net->views[nd->aq.step_view];
                float *doff = NULL;
                const float *off = NULL;
                if (nd->aq.offset_view >= 0) {
                    const net_view *ov = &net->views[nd->aq.offset_view];
                    doff = net->grads + ov->off;
                    off = net->params + ov->off;
                }
                (sets_grad(net, i, si) ? quant_backward_overwrite : quant_backward)(
                    din, net->grads + sv->off, doff, net->dqbuf, x, net->params + sv->off, off,
                    nd->aq.g, 1, in_count, &nd->aq.r);
            }
            break;
        }
        case OP_BN:
            if (nd->fused_relu >= 0) break; /* done by its ReLU */
            /* the sums and coefficients into the node's own space; the
             * input gradient here, or by the conv it feeds */
            bn_coef(net, nd->aux + 2 * (size_t)nd->c, net->grads + net->views[nd->gammav].off,
                    net->grads + net->views[nd->betav].off, nd->dout, NULL, in, nd->aux,
                    nd->aux + nd->c, view_ptr(net, nd->gammav), n, nd->c, nd->h * nd->w,
                    net->scratch);
            if (din && !bn_grad_by_conv(net, i, n))
                batchnorm_backward_planes(din, sets_grad(net, i, si), nd->dout, in,
                                          nd->aux + 2 * (size_t)nd->c, n, nd->c, nd->h * nd->w);
            break;
        case OP_RELU:
            if (relu_is_fused(net, i) && src->op == OP_ADD) {
                /* the add's two input gradients, from this ReLU's gradient */
                const int a = src->in[0], b = src->in[1];
                float *da = net->nodes[a].dout;
                float *db = b == 0 ? NULL : net->nodes[b].dout;
                add_relu_backward(da, sets_grad(net, si, a), db, db && sets_grad(net, si, b),
                                  nd->dout, nd->out, out_count);
            } else if (relu_is_fused(net, i)) {
                /* the batch norm's sums and coefficients (with the ReLU's
                 * mask) into its own space; its input gradient here, or by
                 * the conv it feeds */
                const net_node *bn = src;
                const net_node *bsrc = &net->nodes[bn->in[0]];
                float *coef = bn->aux + 2 * (size_t)bn->c;
                bn_coef(net, coef, net->grads + net->views[bn->gammav].off,
                        net->grads + net->views[bn->betav].off, nd->dout,
                        view_ptr(net, bn->betav), bsrc->out, bn->aux, bn->aux + bn->c,
                        view_ptr(net, bn->gammav), n, bn->c, bn->h * bn->w, net->scratch);
                if (!bn_grad_by_conv(net, si, n))
                    batchnorm_backward_planes(bsrc->dout, sets_grad(net, nd->in[0], bn->in[0]),
                                              nd->dout, bsrc->out, coef, n, bn->c,
                                              bn->h * bn->w);
            } else if (din) {
                (sets_grad(net, i, si) ? relu_backward_overwrite : relu_backward)(
                    din, nd->dout, nd->out, out_count);
            }
            break;
        case OP_MAXPOOL:
            if (din && sets_grad(net, i, si))
                maxpool_backward_overwrite(din, nd->dout, nd->argmax, n, src->c, src->h,
                                           src->w, nd->h, nd->w);
            else if (din)
                maxpool_backward(din, nd->dout, nd->argmax, n, src->c, src->h, src->w, nd->h,
                                 nd->w);
            break;
        case OP_AVGPOOL:
            if (din && nd->kernel) {
                pool2d_dims d; /* never the setter: += */
                pool_dims_of(net, nd, n, &d);
                avgpool2d_backward(din, nd->dout, &d, nd->count_include_pad);
            } else if (din) {
                (sets_grad(net, i, si) ? avgpool_backward_overwrite : avgpool_backward)(
                    din, nd->dout, n, src->c, src->h * src->w);
            }
            break;
        /* the ops below only add (+=) to their inputs' gradients: never
         * setters (plan_grad_setter) */
        case OP_CLIP:
            if (din) clip_backward(din, nd->dout, nd->out, out_count, nd->lo, nd->hi);
            break;
        case OP_LEAKYRELU:
            if (din) leakyrelu_backward(din, nd->dout, in, out_count, nd->alpha);
            break;
        case OP_SCALE:
            if (din) scale_backward(din, nd->dout, out_count, nd->value);
            break;
        case OP_CONCAT: {
            float *dins[NET_MAX_INPUTS];
            int ch[NET_MAX_INPUTS];
            for (int t = 0; t < nd->n_in; t++) {
                dins[t] = net->nodes[nd->in[t]].dout;
                ch[t] = net->nodes[nd->in[t]].c;
            }
            concat_backward(dins, nd->dout, ch, nd->n_in, n, nd->h * nd->w);
            break;
        }
        case OP_ADD: {
            if (nd->fused_relu >= 0) break; /* done by its ReLU */
            float *db = nd->in[1] == 0 ? NULL : net->nodes[nd->in[1]].dout;
            add_backward_overwrite(din, sets_grad(net, i, si), db,
                                   db && sets_grad(net, i, nd->in[1]), nd->dout, out_count);
            break;
        }
        default:
            break;
        }
    }
}

int net_node_weight_bits(const net_node *nd) { return nd->wq.on ? nd->wq.r.bits : 0; }
int net_node_act_bits(const net_node *nd) { return nd->aq.on ? nd->aq.r.bits : 0; }

json_t *net_step_sizes_json(const lsq_net *net)
{
    json_t *o = json_object();
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        char key[96];
        if (nd->wq.on) {
            const net_view *v = &net->views[nd->wq.step_view];
            double m = 0;
            for (size_t k = 0; k < v->count; k++) m += net->params[v->off + k];
            snprintf(key, sizeof key, "%s.weight", nd->name);
            json_object_set_new(o, key, json_real(m / (double)v->count));
        }
        if (nd->aq.on) {
            snprintf(key, sizeof key, "%s.input", nd->name);
            json_object_set_new(o, key, json_real(net->params[net->views[nd->aq.step_view].off]));
        }
    }
    return o;
}

json_t *net_bits_json(const lsq_net *net)
{
    json_t *o = json_object();
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_LINEAR) continue;
        json_object_set_new(o, nd->name, json_pack("{s:i, s:i}", "weight", net_node_weight_bits(nd),
                                                   "act", net_node_act_bits(nd)));
    }
    return o;
}

double net_forward_macs(const lsq_net *net)
{
    double macs = 0;
    for (int i = 1; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->op == OP_CONV || nd->op == OP_LINEAR)
            macs += (double)net->views[nd->wv].count * nd->h * nd->w;
    }
    return macs;
}
