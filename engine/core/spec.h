/* The job spec (v1): parsed and validated here, the ONE validator, used by
 * `lsq train` and by lsqd. Every field has a default; an unknown key, a wrong
 * type or a value out of range is an error whose `field` is the dotted path
 * of the offending key ("train.lr", "quant.layers.fc1.weight_bits").
 * schema/job-spec.schema.json and docs/job-spec.md describe the same fields. */
#ifndef LSQ_SPEC_H
#define LSQ_SPEC_H

#include <jansson.h>
#include <stdint.h>

#include "core/err.h"

#define SPEC_NAME_MAX 128
#define SPEC_PATH_MAX 1024
#define SPEC_URL_MAX 2049   /* notify_url: at most 2048 characters */
#define SPEC_MAX_LAYER_OVERRIDES 64

typedef enum { SCHED_COSINE, SCHED_CONSTANT, SCHED_COUNT } spec_schedule;
extern const char *const SPEC_SCHEDULE_NAMES[];

typedef enum { GRAN_TENSOR, GRAN_CHANNEL, GRAN_COUNT } spec_granularity;
extern const char *const SPEC_GRANULARITY_NAMES[];

/* paper: 1/sqrt(N*QP); none: 1; sqrt_n: 1/sqrt(N) (the paper's ablation); value: a constant */
typedef enum { GSCALE_PAPER, GSCALE_NONE, GSCALE_SQRT_N, GSCALE_VALUE, GSCALE_COUNT } spec_gscale;
extern const char *const SPEC_GSCALE_NAMES[]; /* "paper", "none", "sqrt_n", "value" */

typedef enum { QINIT_PAPER, QINIT_MSE, QINIT_COUNT } spec_qinit;
extern const char *const SPEC_QINIT_NAMES[];

/* lsq: fine-tune with learned steps (the default); ptq: post-training
 * quantization, the steps calibrated (MSE) on a few training images, no
 * training. */
typedef enum { QMETHOD_LSQ, QMETHOD_PTQ, QMETHOD_COUNT } spec_qmethod;
extern const char *const SPEC_QMETHOD_NAMES[]; /* "lsq", "ptq" */
#define SPEC_CALIBRATION_DEFAULT 256

/* How a layer's input activations are quantized. AUTO: unsigned when the
 * input comes from a ReLU (or is the image), else signed. */
typedef enum { ASIGN_AUTO, ASIGN_UNSIGNED, ASIGN_SIGNED, ASIGN_OFFSET, ASIGN_COUNT } spec_act_sign;
extern const char *const SPEC_ACT_SIGN_NAMES[]; /* "auto","unsigned","signed","lsq+" */

/* "resources": what lsqd's Slurm executor asks the cluster for (docs/cluster.md).
 * 0 or "": the operator's default. */
typedef struct {
    int given;                     /* the spec had a "resources" object */
    char partition[SPEC_NAME_MAX]; /* a Slurm partition */
    int mem_mb;                    /* 1..16777216 MiB of memory */
    int time_min;                  /* 1..525600 minutes of wall time */
} spec_resources;

typedef struct {
    char name[SPEC_NAME_MAX];  /* a conv/linear layer name of the model */
    int is_float;              /* "float": this layer is not quantized */
    int weight_bits;           /* 0: inherit */
    int act_bits;              /* 0: inherit */
    spec_act_sign act_sign;    /* ASIGN_AUTO: inherit */
} spec_layer_override;

typedef struct {
    int enabled;               /* 0: full-precision job ("quant" absent/null) */
    int weight_bits;           /* 2..8, default 4 */
    int act_bits;              /* 2..8, default = weight_bits */
    int first_last_bits;       /* 2..8, default 8; -1: JSON "float" (unquantized) */
    spec_granularity granularity;  /* weights: "tensor" (default) | "channel" */
    spec_gscale grad_scale;    /* "paper" (default) | "none" | a number */
    double grad_scale_value;   /* when GSCALE_VALUE */
    spec_qinit init;           /* "paper" (default) | "mse" */
    spec_qmethod method;       /* "lsq" (default) | "ptq" */
    int calibration_images;    /* 1..4096, default 256: PTQ's calibration batch */
    int report_ptq;            /* lsq: score the PTQ model before fine-tuning
                                  (default true) */
    spec_act_sign act_sign;    /* default for signed-input layers: "auto" */
    int n_layers;
    spec_layer_override layers[SPEC_MAX_LAYER_OVERRIDES];
} spec_quant;

typedef struct {
    int enabled;               /* pretrain: absent -> on for quant jobs without init.from
                                  or model.onnx; 0 when null or epochs 0. train: always 1 */
    int epochs;                /* train: 0..1000, default 3; pretrain: default 6 */
    int batch_size;            /* 1..4096, default 128 */
    double lr;                 /* (0, 10], default 0.01 (train), 0.05 (pretrain); train at 8 bits: 0.001 */
    double momentum;           /* [0, 1), default 0.9 */
    int nesterov;              /* default false */
    int sync_bn;               /* default false: batch-norm batch statistics over every
                                  data-parallel rank's batch (train/dist.h) */
    double weight_decay;       /* [0, 1]; see weight_decay_auto */
    int weight_decay_auto;     /* "auto": 1e-4 at 4/8 bits, 0.5e-4 at 3, 0.25e-4 at 2; 5e-4 FP */
    spec_schedule schedule;    /* default cosine */
    double warmup_epochs;      /* linear warm-up, [0, epochs], default 0 */
    uint64_t seed;             /* default 1 */
} spec_train;

typedef struct {
    int enabled;               /* default true when quant is on and a FP model exists
                                  (pretrain on, init.from or model.onnx set) */
    double temperature;        /* (0, 100], default 1 */
    double weight;             /* [0, 1], default 0.5: loss = (1-w) CE + w KD */
} spec_distill;

typedef struct {
    char name[SPEC_NAME_MAX];  /* default "job" */
    /* model: exactly one of arch (zoo name), layers (a JSON layer list) and
     * onnx (a float model's ONNX file, read when training starts) */
    char arch[SPEC_NAME_MAX];  /* "mlp" | "cnn-small" | "resnet20"; default cnn-small */
    json_t *model_layers;      /* owned: the "model" object when it has "layers" */
    char model_onnx[SPEC_PATH_MAX]; /* "model": {"onnx": PATH}; "" = none */
    /* dataset */
    char dataset[SPEC_NAME_MAX];   /* "fashion-mnist" (default) | "mnist" */
    char dataset_path[SPEC_PATH_MAX]; /* "" = default location */
    char dataset_cache[SPEC_PATH_MAX]; /* a folder from `lsq dataset import`; "" = none.
                                          Exclusive with a non-default name or path */
    int normalize;             /* dataset.normalize: inputs (x/255 - mean) / std per
                                  channel; default true with a cache, else false */
    int train_limit, test_limit;   /* 0 = all */
    int augment_crop_pad;      /* dataset.augment.crop_pad, 0..8, default 0 */
    int augment_flip;          /* dataset.augment.flip, default false */
    spec_quant quant;
    spec_train pretrain;
    spec_train train;
    spec_distill distill;
    char init_from[SPEC_PATH_MAX]; /* "init": {"from": ...}; "" = none */
    int threads;               /* 1..256, default 2 */
    int checkpoint_every;      /* epochs between checkpoints, default 1 */
    char notify_url[SPEC_URL_MAX]; /* lsqd POSTs the job's end here (http/https); "" = none.
                                      lsq train ignores it */
    spec_resources resources;  /* what a cluster executor asks for; the engine ignores it */
    /* resources: the ranks of a data-parallel run (docs/cluster.md) */
    int nodes;                 /* 1..SPEC_MAX_NODES, default 1 */
    int tasks_per_node;        /* 1..SPEC_MAX_TASKS_PER_NODE, default 1 */
} lsq_spec;

#define SPEC_MAX_NODES 1024
#define SPEC_MAX_TASKS_PER_NODE 256
#define SPEC_MAX_RANKS 4096

/* Parses and validates JSON text into spec (defaults filled in). On error,
 * err->field names the key. spec must be released with spec_free either way. */
lsq_status spec_parse(lsq_spec *spec, const char *text, size_t len, lsq_err *err);
/* The same from a parsed object (borrowed). */
lsq_status spec_from_json(lsq_spec *spec, const json_t *obj, lsq_err *err);
/* The normalised spec with every default made explicit (caller owns it). */
json_t *spec_to_json(const lsq_spec *spec);
/* The same as text (caller frees; NULL when out of memory): numbers in their
 * shortest form that still reads back exactly ("0.9", not
 * "0.90000000000000002"). flags: jansson dump flags (JSON_INDENT, JSON_COMPACT). */
char *spec_to_text(const lsq_spec *spec, size_t flags);
void spec_free(lsq_spec *spec);

/* The effective weight decay of a phase: t->weight_decay, or under "auto"
 * 1e-4 at 4..8 bits, 0.5e-4 at 3, 0.25e-4 at 2, and 5e-4 when is_quant is 0
 * (pretraining, full-precision jobs). spec_parse already stores the result
 * in t->weight_decay; the learning rate's 8-bit rule is applied there too. */
double spec_train_weight_decay(const lsq_spec *spec, const spec_train *t, int is_quant);

/* Reads and parses a spec file. Errors: LSQ_ERR_IO (field = path), else as
 * spec_parse with the path prefixed to the message. Release with spec_free. */
lsq_status spec_load_file(lsq_spec *spec, const char *path, lsq_err *err);

/* The override for a layer name, or NULL (borrowed from spec). */
const spec_layer_override *spec_find_override(const spec_quant *q, const char *layer);

/* The effective quantization of one conv/linear layer. */
typedef struct {
    int quantized;             /* 0: the layer stays float (bits are 0) */
    int weight_bits, act_bits;
    spec_act_sign act_sign;    /* ASIGN_AUTO: decide from the layer's input */
} spec_layer_quant;

/* Resolves job bits, then first/last bits (first_or_last != 0), then the
 * layer's override (whose bits apply even to a "float" first/last layer).
 * A full-precision job gives quantized 0 everywhere. */
spec_layer_quant spec_layer_resolve(const spec_quant *q, const char *layer, int first_or_last);

/* Checks that every quant.layers key names one of the model's n conv/linear
 * layers; LSQ_ERR_INVALID with field "quant.layers.NAME" otherwise. */
lsq_status spec_check_layer_names(const spec_quant *q, const char *const *names, int n,
                                  lsq_err *err);

#endif
