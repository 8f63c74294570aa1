/* Networks as data: a graph of layer nodes built from a JSON layer list (the
 * zoo models are JSON layer lists too), with shapes inferred layer to layer.
 * Parameters (weights, biases, batch-norm affine, LSQ step sizes and offsets)
 * live in ONE contiguous buffer owned by the net, carved into named views;
 * gradients in a second buffer with the same layout. Batch-norm running
 * statistics and quantizer bookkeeping live in a third, `state`, buffer:
 * saved in checkpoints, never trained.
 *
 * A quantized net wraps every conv/linear node's weight and input activation
 * with an LSQ quantizer (quant.h): v_hat = round(clip(v/s, -QN, QP)) * s. */
#ifndef LSQ_NET_H
#define LSQ_NET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/spec.h"
#include "quant/quant.h"

typedef enum {
    OP_INPUT, OP_CONV, OP_LINEAR, OP_BN, OP_RELU, OP_MAXPOOL, OP_AVGPOOL,
    OP_ADD, OP_FLATTEN, OP_CLIP, OP_LEAKYRELU, OP_SCALE, OP_CONCAT, OP_COUNT
} net_op;
extern const char *const NET_OP_NAMES[]; /* as written in layer lists */

/* The most inputs a node reads (a concat's). */
#define NET_MAX_INPUTS 16

typedef enum {
    PV_WEIGHT, PV_BIAS, PV_BN_GAMMA, PV_BN_BETA, PV_STEP, PV_OFFSET,
    PV_RUNNING, /* state: BN running mean / var */
    PV_FLAG,    /* state: quantizer bookkeeping (1 = step initialised) */
    PV_COUNT
} pv_kind;
extern const char *const PV_KIND_NAMES[];

/* A named view into the parameter (or state) buffer. */
typedef struct {
    char name[96];      /* "conv2.weight", "conv2.weight.step", "bn1.running_mean" */
    pv_kind kind;
    size_t off, count;
    int ndim, dims[4];
    int node;           /* owning node */
    int in_state;       /* 1: lives in net->state, else in params/grads */
} net_view;

/* The quantizer of one tensor (a weight or a layer's input). */
typedef struct {
    int on;             /* 0: this tensor stays float */
    quant_range r;
    int channels;       /* steps: 1 (per-tensor) or OC (per-channel weights) */
    size_t per;         /* elements per channel (weights) or per example (acts) */
    int step_view;      /* index into views */
    int offset_view;    /* LSQ+ beta (activations only); -1 when absent */
    int flag_view;      /* state view: 1.0 once the step is initialised */
    float *g;           /* (channels) gradient scale */
} net_quant;

typedef struct {
    net_op op;
    char name[64];
    int n_in;                  /* inputs read: 0 (the image), 1, 2 (add), 2..16 (concat) */
    int in[NET_MAX_INPUTS];    /* input node indices, in[0..n_in); -1 past them */
    int c, h, w;               /* output shape of one example */
    int nonneg;                /* output is >= 0 (after ReLU, or the image) */
    /* op settings */
    int out_ch, kernel, stride, pad, bias;
    int groups, dilation;      /* conv */
    int count_include_pad;     /* avgpool; kernel 0 there: global pooling */
    float lo, hi;              /* clip bounds (-INFINITY, INFINITY when absent) */
    float alpha;               /* leakyrelu */
    float value;               /* scale */
    /* parameter views (-1 when absent) */
    int wv, bv, gammav, betav;
    int rmeanv, rvarv;         /* state views (BN running statistics) */
    /* quantizers (conv/linear only) */
    net_quant wq, aq;
    /* the backward plan (net_build): the ReLU this batch norm or add runs
     * fused with, and the consumer that writes this node's gradient whole
     * (no zeroing before backward); -1 for none. Every other consumer adds
     * to the gradient, so a node read by several (a DAG) gets the sum. */
    int fused_relu, grad_setter;
    /* conv: the batch norm that alone reads its output, whose input
     * gradient the conv's backward makes itself on the direct path; -1 */
    int bn_after;
    /* per-batch buffers (sized for the net's max batch) */
    float *out, *dout;
    float *aux;                /* BN: save_mean, save_rstd (2*C), then the
                                * backward's coefficients (BN_COEFS*C) */
    int32_t *argmax;           /* maxpool */
    float *qw, *dqw;           /* quantized weight and its gradient */
    int32_t *wcodes;           /* conv: the weight codes (integer forward) */
    /* where out and dout lie in net->arena (floats), or -1: a buffer of
     * their own (net_build's lifetime plan) */
    long arena_out, arena_dout;
    int zero_turn;             /* dout in the arena that backward accumulates
                                * into: zeroed at this node's backward turn,
                                * where its lifetime begins; -1 otherwise */
    size_t bytes;              /* what its buffers and parameters take at max_batch
                                * (parameters x 3: values, gradients, momentum) */
} net_node;

#define NET_NORM_MAX 4  /* channels a normalised input may have */

/* The gradient buffer holds this many floats past n_params, which
 * net_zero_grads leaves alone: data-parallel training (train/dist.h) puts a
 * step's tallies there so that one allreduce carries them with the
 * gradients. */
#define NET_GRAD_TAIL 4

/* Collectives over the ranks of a data-parallel run (train/dist.h installs
 * them; ctx NULL: one process, every hook unused). The training forward
 * uses them to start activation steps from the global first batch: sum
 * sums n doubles over the ranks in place; gather concatenates every rank's
 * floats in rank order into all (room for sum_size(n) floats) and sets
 * *total to their count. */
typedef struct {
    void *ctx;
    void (*sum)(void *ctx, double *buf, size_t n);
    size_t (*sum_size)(void *ctx, size_t n);
    void (*gather)(void *ctx, float *all, size_t *total, const float *mine, size_t n);
} net_collective;

typedef struct {
    int n_nodes;
    net_node *nodes;
    int n_views;
    net_view *views;
    float *params;             /* (n_params), one allocation */
    float *grads;              /* (n_params + NET_GRAD_TAIL), one allocation */
    size_t n_params;
    float *state;              /* (n_state) */
    size_t n_state;
    int max_batch;
    float *scratch;            /* conv im2col and batch-norm forward scratch */
    double *qsums;             /* (max_batch, 2): conv2d_backward_ex's per-image sums */
    float *qbuf, *dqbuf;       /* a quantized layer's input and its gradient, shared by
                                * every quantized layer (each fills it before use) */
    size_t n_scratch;
    float *arena;              /* (n_arena): the activations that backward does
                                * not read and the activation gradients, placed
                                * by lifetime so that buffers never live at the
                                * same time share memory (net_build) */
    size_t n_arena;
    int classes;
    int quantized;
    int output;                /* index of the output node (logits) */
    spec_qinit qinit;          /* how activation steps initialise */
    int calibrating;           /* inside net_calibrate */
    spec_gscale gscale;        /* step-gradient scale mode */
    double gscale_value;
    json_t *layers;            /* the layer list it was built from (owned) */
    int norm_on;               /* the input is normalised: (x/255 - mean) / std per
                                * channel ("normalize" in the layer list) */
    float norm_mean[NET_NORM_MAX], norm_std[NET_NORM_MAX];
    float *probs;              /* (max_batch, classes) */
    float *dinput;             /* optional, caller-owned (max_batch, C, H, W):
                                * when set, backward writes the input gradient */
    net_collective coll;       /* set by the caller after net_build; zero: one process */
    int sync_bn;               /* with coll: batch norm's training statistics and
                                * backward sums over every rank's batch */
} lsq_net;

/* Quantization settings of one conv/linear layer, resolved from the spec. */
typedef struct {
    int on;
    int weight_bits, act_bits;
    spec_act_sign act_sign;
} net_layer_quant;

/* What a network is built for: the dataset's image shape (C, H, W), its
 * class count, and whether its inputs are normalised per channel with this
 * mean and std (of the pixels scaled to [0, 1]). */
typedef struct {
    int c, h, w, classes;
    int normalize;
    double mean[NET_NORM_MAX], std[NET_NORM_MAX];
    int train_images;          /* the training split's size (net_spec_data), before
                                * dataset.train_limit */
} net_data;

/* The built-in datasets: 1x28x28, 10 classes, inputs x/255, 60000 training
 * images. */
#define NET_DATA_MNIST ((net_data){1, 28, 28, 10, 0, {0}, {0}, 60000})

/* Builds the layer list of a zoo model ("mlp", "cnn-small", "resnet20") for
 * input (c, h, w) and 10 classes. Returns a new JSON object {"input": [...],
 * "layers": [...]}, or NULL with err (LSQ_ERR_NOT_FOUND, field model.arch;
 * LSQ_ERR_NOMEM when an allocation failed). */
json_t *net_zoo_layers(const char *arch, int c, int h, int w, lsq_err *err);
/* The same for `classes` outputs. */
json_t *net_zoo_layers_for(const char *arch, int c, int h, int w, int classes, lsq_err *err);
extern const char *const NET_ZOO_NAMES[];
#define NET_ZOO_COUNT 3

/* What a layer list may ask for. A list beyond them is refused with the
 * limit in the message (LSQ_ERR_INVALID naming the layer), not attempted:
 * an allocation of that size would fail, or worse succeed lazily and have
 * the worker killed half-way. */
#define NET_MAX_PARAMS ((size_t)1 << 27) /* parameters: 134217728 (512 MiB of floats) */
#define NET_MAX_VALUES ((size_t)1 << 26) /* values of one layer's output for one image */
#define NET_MAX_BYTES ((size_t)64 << 30) /* buffers at the batch size: 64 GiB */

/* What a planned network takes. */
typedef struct {
    size_t params, state;      /* floats */
    size_t bytes;              /* every buffer net_build allocates at max_batch, with
                                * the optimizer's momentum */
    int max_batch;
} net_cost;

/* net_build's checks without its buffers: the nodes, their shapes and the
 * parameter views are made (net->params and every per-batch buffer stay
 * NULL; only net_free, net_find_view, net_shapes_json and net_forward_macs
 * may be used on it), the buffers at max_batch are counted into each
 * node's `bytes` and into cost (may be NULL), and the limits above are
 * enforced. Call net_free on success. Errors as net_build. */
lsq_status net_plan(lsq_net *net, const json_t *layers, const spec_quant *quant,
                    int classes, int max_batch, net_cost *cost, lsq_err *err);
/* A planned (or built) net layer by layer: {"layers": [{"name", "type",
 * "shape": [C, H, W], "params", "bytes"}], "params", "bytes", "batch_size",
 * "limits": {"params", "values_per_image", "bytes"}}; caller owns. */
json_t *net_shapes_json(const lsq_net *net, const net_cost *cost);

/* Builds a net from a layer list (borrowed) for images (c, h, w) and `classes`
 * outputs. quant NULL: full precision. Errors name the layer and the key
 * ("model.layers[3].kernel"). Call net_free on success. The list's optional
 * "normalize": {"mean": [C numbers], "std": [C numbers > 0]} says that the
 * input is normalised, so it is signed: the first layer's input quantizer is
 * then signed under quant.act_sign "auto". */
lsq_status net_build(lsq_net *net, const json_t *layers, const spec_quant *quant,
                     int classes, int max_batch, lsq_err *err);
/* The layer list for a spec's model (zoo arch, custom layers, or the layers
 * of its ONNX file: onnx_import.h, which also has the file's weights) on the
 * built-in datasets' 1x28x28 images and 10 classes; caller owns. NULL with
 * err when the ONNX file cannot be imported. */
json_t *net_spec_layers(const lsq_spec *spec, lsq_err *err);
/* The same for a dataset: a zoo model is built for its shape and classes; a
 * layer list without "input" takes its shape, one whose "input" differs is
 * LSQ_ERR_INVALID naming both shapes (field model.input). With
 * data->normalize, "normalize" is added (a std below 1e-6, a constant
 * channel, counts as 1). Caller owns. */
json_t *net_spec_layers_for(const lsq_spec *spec, const net_data *data, lsq_err *err);
/* What a spec's dataset gives a network: NET_DATA_MNIST for the built-in
 * sets, or the shape, classes and statistics in the header of its cache
 * (errors as cache_read). */
lsq_status net_spec_data(const lsq_spec *spec, net_data *data, lsq_err *err);
/* Checks a spec's model and quant.layers names against the built network,
 * on the spec's dataset (a cache's header is read for its shape). */
lsq_status net_check_spec(const lsq_spec *spec, lsq_err *err);
/* The same with net_plan at the spec's largest batch (net_spec_max_batch):
 * nothing is allocated, and a network beyond NET_MAX_* is refused naming
 * the layer (model.layers[3].out). shapes (may be NULL) receives
 * net_shapes_json on success (caller owns). This is the check of
 * `lsq check` and of lsqd's POST /api/v1/jobs. */
lsq_status net_check_spec_plan(const lsq_spec *spec, json_t **shapes, lsq_err *err);
/* The largest batch a spec's job puts through one net: the larger phase's
 * batch_size, or PTQ's calibration images when more; *field (may be NULL)
 * receives the key it comes from ("train.batch_size"). */
int net_spec_max_batch(const lsq_spec *spec, const char **field);
void net_free(lsq_net *net);

/* Whether net_build shares activation and gradient buffers by lifetime
 * (on by default; off: one buffer each, as a reference that tests compare
 * the sharing with). Process-wide, read by net_build and net_plan; returns
 * the previous setting. Results are the same bit for bit either way. */
int net_set_buffer_sharing(int on);

/* Finds a view by name; -1 if none. */
int net_find_view(const lsq_net *net, const char *name);

/* Initialises weights (He/Kaiming-uniform as PyTorch's default), biases, BN. */
void net_init_params(lsq_net *net, uint64_t seed);
/* Copies every parameter and state entry with the same name and size from
 * src (e.g. a full-precision net into a quantized one). Returns the count. */
int net_copy_matching(lsq_net *dst, const lsq_net *src);
/* Initialises the weight quantizers' steps from the current weights
 * (init: paper or mse); activation steps initialise on the first training
 * forward. The network input's 8-bit quantizer starts at the data's own
 * scale: 1/255 for pixels / 255 (unsigned), and for a normalised input
 * (signed) the smallest step whose codes -128..127 hold every normalised
 * pixel value, max over channels of max(mean/std / 128, (1-mean)/std / 127). */
void net_quant_init_weights(lsq_net *net, spec_qinit init);
/* Post-training calibration: runs the batch x (n <= max_batch) forward in
 * evaluation mode (batch norm on its running statistics, nothing learned)
 * and sets every activation step not yet initialised from what reaches it,
 * by minimising the quantization MSE (quant_init_mse). Layers are set in
 * order, each from the already quantized layers before it. */
void net_calibrate(lsq_net *net, const float *x, int n);

/* Forward of n images x (n, C, H, W); training selects batch statistics for
 * BN (and updates running stats) and lazily initialises activation steps.
 * Returns the logits (n, classes), valid until the next call. */
const float *net_forward(lsq_net *net, const float *x, int n, int training);
/* Backward from dlogits (n, classes): accumulates into net->grads. */
void net_backward(lsq_net *net, const float *dlogits, int n);
void net_zero_grads(lsq_net *net);

/* Bits of a node's weight / input quantizer (0 = float). */
int net_node_weight_bits(const net_node *nd);
int net_node_act_bits(const net_node *nd);

/* {"conv2.weight": s, "conv2.input": s, ...} (per-channel: the mean step). */
json_t *net_step_sizes_json(const lsq_net *net);
/* {"conv2": {"weight": 2, "act": 2}, ...} */
json_t *net_bits_json(const lsq_net *net);

/* Multiply-accumulates of one example's forward pass. */
double net_forward_macs(const lsq_net *net);

#endif
