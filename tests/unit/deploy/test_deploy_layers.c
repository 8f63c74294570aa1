/* The packed model and the integer engine on every layer kind beyond the
 * zoo's: grouped, depthwise and dilated convs, clip (ReLU6), leaky relu,
 * scale, padded max pooling, windowed average pooling, concat and DAGs,
 * then a MobileNetV2-style and an Inception-style net. Each net is built
 * from a JSON layer list at full precision, W4A4 and W2A2 with per-tensor
 * and per-channel weight steps: its batch norms' running statistics are
 * the statistics of a batch of test images, its weight steps come from the
 * weights and its activation steps from that batch (LSQ's
 * initialisation); it is exported to .lsqm, loaded and run by the integer
 * engine, and compared with net_forward in evaluation mode on 500 images
 * under the rules of test_deploy.c (the same top-1 on >= 99.9% of the
 * images, logits within 1e-3 * (1 + max |logit|) on >= 99%); every kernel
 * path gives the portable path's logits bit for bit. Also: the reader's
 * checks on the new layer settings, and `lsq eval` / `lsq predict` on such
 * a model. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/spec.h"
#include "data/data.h"
#include "deploy/igemm.h"
#include "deploy/infer.h"
#include "deploy/lsqm.h"
#include "graph/net.h"
#include "train/train.h"

#define N_IMG 500  /* images compared */
#define BATCH 100  /* images per float forward */

/* ------------------------------------------------------------ nets */

#define IN "{\"input\":[1,28,28],\"layers\":["
#define FC "{\"type\":\"avgpool\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}"

/* grouped 3x3 and 1x1 convs, strided, on unsigned and signed codes */
static const char *NET_GROUPED =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"g1\",\"out\":8,\"kernel\":3,\"pad\":1,\"groups\":2},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"g2\",\"out\":16,\"kernel\":1,\"groups\":4},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool\",\"kernel\":2},"
    "{\"type\":\"conv2d\",\"name\":\"g3\",\"out\":16,\"kernel\":3,\"stride\":2,\"pad\":1,\"groups\":4},"
    "{\"type\":\"batchnorm\"},"
    "{\"type\":\"conv2d\",\"name\":\"g4\",\"out\":16,\"kernel\":3,\"pad\":1,\"groups\":8},"
    "{\"type\":\"relu\"}," FC;

/* depthwise: stride 2, a channel multiplier of 2, signed input, 5x5 */
static const char *NET_DEPTHWISE =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"dw1\",\"out\":8,\"kernel\":3,\"stride\":2,\"pad\":1,\"groups\":8},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"dw2\",\"out\":16,\"kernel\":3,\"pad\":1,\"groups\":8},"
    "{\"type\":\"batchnorm\"},"
    "{\"type\":\"conv2d\",\"name\":\"dw3\",\"out\":16,\"kernel\":5,\"pad\":2,\"groups\":16},"
    "{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"pw\",\"out\":16,\"kernel\":1},{\"type\":\"relu\"}," FC;

/* dilated: "same" (the in-place tap path), strided, depthwise, grouped */
static const char *NET_DILATED =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"d1\",\"out\":8,\"kernel\":3,\"pad\":2,\"dilation\":2},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"d2\",\"out\":16,\"kernel\":3,\"pad\":1,\"dilation\":3,\"stride\":2},"
    "{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"d3\",\"out\":16,\"kernel\":3,\"pad\":2,\"dilation\":2,\"groups\":16},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"d4\",\"out\":16,\"kernel\":3,\"pad\":2,\"dilation\":2,\"groups\":4},"
    "{\"type\":\"relu\"}," FC;

/* clip: ReLU6 and two-sided clips folded into the next layer's codes, a
 * clip then a ReLU, a ReLU then a clip, and a clip read by two layers (the
 * float epilogue) or after an add (run on its own) */
static const char *NET_CLIP =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"clip\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"clip\",\"min\":-1,\"max\":1},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"relu\"},{\"type\":\"clip\",\"min\":0.25},"
    "{\"type\":\"conv2d\",\"name\":\"c4\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"clip\",\"max\":2},{\"type\":\"relu\",\"name\":\"r4\"},"
    "{\"type\":\"conv2d\",\"name\":\"c5\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\",\"name\":\"b5\"},"
    "{\"type\":\"add\",\"inputs\":[\"b5\",\"r4\"]},{\"type\":\"clip\",\"min\":-0.5,\"max\":3},"
    "{\"type\":\"conv2d\",\"name\":\"c6\",\"out\":8,\"kernel\":3,\"stride\":2},{\"type\":\"relu\"}," FC;

static const char *NET_LEAKY =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"leakyrelu\",\"alpha\":0.1},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":8,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"leakyrelu\",\"alpha\":0},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":8,\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"leakyrelu\"}," FC;

static const char *NET_SCALE =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"relu\"},"
    "{\"type\":\"scale\",\"value\":0.5},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"batchnorm\"},"
    "{\"type\":\"scale\",\"value\":-2},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":8,\"kernel\":3,\"stride\":2},{\"type\":\"relu\"},"
    "{\"type\":\"scale\",\"value\":3}," FC;

/* padded max pooling on unsigned codes, on signed codes, and in float */
static const char *NET_MAXPOOL =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool\",\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"batchnorm\"},"
    "{\"type\":\"maxpool\",\"kernel\":2,\"stride\":1,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\",\"name\":\"r3\"},"
    "{\"type\":\"conv2d\",\"name\":\"c4\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\",\"name\":\"b4\"},"
    "{\"type\":\"add\",\"inputs\":[\"r3\",\"b4\"]},"
    "{\"type\":\"maxpool\",\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"c5\",\"out\":16,\"kernel\":1},{\"type\":\"relu\"}," FC;

/* windowed average pooling: padded without and with count_include_pad,
 * unpadded, then flatten */
static const char *NET_AVGPOOL =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"relu\"},"
    "{\"type\":\"avgpool\",\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"batchnorm\"},"
    "{\"type\":\"avgpool\",\"kernel\":2,\"stride\":1,\"pad\":1,\"count_include_pad\":true},"
    "{\"type\":\"conv2d\",\"name\":\"c3\",\"out\":8,\"kernel\":3},{\"type\":\"relu\"},"
    "{\"type\":\"avgpool\",\"kernel\":2},{\"type\":\"flatten\"},"
    "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";

/* Inception-style: branches of different scales (1x1, 1x1 then 3x3, a max
 * pool then 1x1, a dilated 3x3 scaled by 4) and the stem itself
 * concatenated (the stem's output read by five layers), then a second
 * concat of a tensor with its own max pool */
static const char *NET_INCEPTION =
    IN "{\"type\":\"conv2d\",\"name\":\"stem\",\"out\":16,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\",\"name\":\"s\"},"
    "{\"type\":\"conv2d\",\"name\":\"b1\",\"input\":\"s\",\"out\":8,\"kernel\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\",\"name\":\"b1r\"},"
    "{\"type\":\"conv2d\",\"name\":\"b2a\",\"input\":\"s\",\"out\":8,\"kernel\":1},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"name\":\"b2\",\"out\":12,\"kernel\":3,\"pad\":1},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\",\"name\":\"b2r\"},"
    "{\"type\":\"maxpool\",\"name\":\"mp\",\"input\":\"s\",\"kernel\":3,\"stride\":1,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"b3\",\"out\":8,\"kernel\":1},{\"type\":\"relu\",\"name\":\"b3r\"},"
    "{\"type\":\"conv2d\",\"name\":\"b4\",\"input\":\"s\",\"out\":8,\"kernel\":3,\"pad\":2,\"dilation\":2},"
    "{\"type\":\"batchnorm\"},{\"type\":\"scale\",\"name\":\"b4s\",\"value\":4},"
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"b1r\",\"b2r\",\"b3r\",\"b4s\",\"s\"]},"
    "{\"type\":\"conv2d\",\"name\":\"mix\",\"out\":16,\"kernel\":1},{\"type\":\"batchnorm\"},"
    "{\"type\":\"relu\"},{\"type\":\"maxpool\",\"name\":\"down\",\"kernel\":2},"
    "{\"type\":\"maxpool\",\"name\":\"mp2\",\"kernel\":3,\"stride\":1,\"pad\":1},"
    "{\"type\":\"concat\",\"name\":\"cat2\",\"inputs\":[\"down\",\"mp2\"]},"
    "{\"type\":\"conv2d\",\"name\":\"mix2\",\"out\":16,\"kernel\":3,\"pad\":1},{\"type\":\"relu\"}," FC;

/* MobileNetV2-style: ReLU6 as clip, inverted residual blocks (expand 1x1,
 * depthwise 3x3, project 1x1, residual add where the shape allows), a
 * 1x1 head, global average pooling */
#define MBV2_BLOCK(n, in, cin, exp, cout, stride)                                                 \
    "{\"type\":\"conv2d\",\"name\":\"ex" #n "\",\"input\":\"" in "\",\"out\":" #exp             \
    ",\"kernel\":1,\"bias\":false},{\"type\":\"batchnorm\"},{\"type\":\"clip\",\"min\":0,\"max\":6},"  \
    "{\"type\":\"conv2d\",\"name\":\"dw" #n "\",\"out\":" #exp ",\"kernel\":3,\"stride\":" #stride \
    ",\"pad\":1,\"groups\":" #exp ",\"bias\":false},{\"type\":\"batchnorm\"},"                   \
    "{\"type\":\"clip\",\"min\":0,\"max\":6},"                                                    \
    "{\"type\":\"conv2d\",\"name\":\"pj" #n "\",\"out\":" #cout ",\"kernel\":1,\"bias\":false},"   \
    "{\"type\":\"batchnorm\",\"name\":\"p" #n "\"},"
static const char *NET_MBV2 =
    IN "{\"type\":\"conv2d\",\"name\":\"stem\",\"out\":16,\"kernel\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\"},{\"type\":\"clip\",\"name\":\"s\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"dw1\",\"out\":16,\"kernel\":3,\"pad\":1,\"groups\":16,\"bias\":false},"
    "{\"type\":\"batchnorm\"},{\"type\":\"clip\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"pj1\",\"out\":16,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"p1\"},"
    "{\"type\":\"add\",\"name\":\"res1\",\"inputs\":[\"p1\",\"s\"]},"
    MBV2_BLOCK(2, "res1", 16, 48, 24, 2)
    MBV2_BLOCK(3, "p2", 24, 72, 24, 1)
    "{\"type\":\"add\",\"name\":\"res3\",\"inputs\":[\"p3\",\"p2\"]},"
    "{\"type\":\"conv2d\",\"name\":\"head\",\"out\":64,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\"},{\"type\":\"clip\",\"min\":0,\"max\":6},"
    "{\"type\":\"avgpool\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";

/* every new layer in one net (tests/unit/test_torch.c's MobileNetV2-style
 * net of the PyTorch fixtures) */
static const char *NET_ALL =
    IN "{\"type\":\"conv2d\",\"name\":\"stem\",\"out\":8,\"kernel\":3,\"pad\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn0\"},{\"type\":\"clip\",\"name\":\"r0\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"dw1\",\"out\":8,\"kernel\":3,\"stride\":2,\"pad\":1,\"groups\":8,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn1\"},{\"type\":\"clip\",\"name\":\"r1\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"pj1\",\"out\":8,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn2\"},"
    "{\"type\":\"conv2d\",\"name\":\"ex2\",\"out\":16,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn3\"},{\"type\":\"clip\",\"name\":\"r3\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"dw2\",\"out\":16,\"kernel\":3,\"pad\":1,\"groups\":16,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn4\"},{\"type\":\"clip\",\"name\":\"r4\",\"min\":0,\"max\":6},"
    "{\"type\":\"conv2d\",\"name\":\"pj2\",\"out\":8,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn5\"},"
    "{\"type\":\"add\",\"name\":\"res\",\"inputs\":[\"bn5\",\"bn2\"]},"
    "{\"type\":\"maxpool\",\"name\":\"mp\",\"kernel\":3,\"stride\":1,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"gd\",\"input\":\"res\",\"out\":8,\"kernel\":3,\"pad\":2,\"dilation\":2,\"groups\":2},"
    "{\"type\":\"leakyrelu\",\"name\":\"lr\",\"alpha\":0.1},"
    "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"mp\",\"lr\"]},"
    "{\"type\":\"scale\",\"name\":\"sc\",\"value\":0.5},"
    "{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":3,\"stride\":2,\"pad\":1},"
    "{\"type\":\"conv2d\",\"name\":\"head\",\"out\":32,\"kernel\":1,\"bias\":false},"
    "{\"type\":\"batchnorm\",\"name\":\"bn6\"},{\"type\":\"clip\",\"name\":\"r6\",\"min\":0,\"max\":6},"
    "{\"type\":\"avgpool\",\"name\":\"gap\"},{\"type\":\"flatten\",\"name\":\"flat\"},"
    "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}";

/* a one-channel 5x5 first conv (the direct kernel's 4-code groups), max
 * pools (2x2 and padded 3x3 stride 2) and a flatten of a 3x3 map into a
 * linear layer (its weight columns reordered at load instead) */
#define FIRST_BODY                                                                              \
    "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":12,\"kernel\":5,\"pad\":2},"             \
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"kernel\":2},"       \
    "{\"type\":\"conv2d\",\"name\":\"c2\",\"out\":20,\"kernel\":3,\"pad\":1},{\"type\":\"relu\"}," \
    "{\"type\":\"maxpool\",\"kernel\":3,\"stride\":2,\"pad\":1},{\"type\":\"maxpool\",\"kernel\":2}," \
    "{\"type\":\"flatten\"},{\"type\":\"linear\",\"name\":\"fc1\",\"out\":24},{\"type\":\"relu\"}," \
    "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]}"
static const char *NET_FIRST = IN FIRST_BODY;

/* ------------------------------------------------------------ helpers */

static lsq_dataset DS;
static float *X; /* DS's pixels / 255 */

static void load_images(void)
{
    if (X) return;
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(dataset_load(NULL, &DS, "fashion-mnist", NULL, 0, N_IMG, &err), LSQ_OK, "%s",
                 err.message);
    cr_assert_eq(DS.n, N_IMG);
    size_t n = (size_t)DS.n * DS.c * DS.h * DS.w;
    X = malloc(n * sizeof *X);
    cr_assert_not_null(X);
    for (size_t i = 0; i < n; i++) X[i] = (float)DS.pixels[i] / 255.0f;
    train_set_threads(2);
}

typedef struct {
    const char *tag;
    int bits;                 /* 0: full precision */
    spec_granularity gran;
    spec_act_sign sign;
} qcfg;

static const qcfg CONFIGS[] = {
    {"FP32", 0, GRAN_TENSOR, ASIGN_AUTO},
    {"W4A4", 4, GRAN_TENSOR, ASIGN_AUTO},
    {"W4A4 per-channel", 4, GRAN_CHANNEL, ASIGN_AUTO},
    {"W2A2", 2, GRAN_TENSOR, ASIGN_AUTO},
    {"W2A2 per-channel", 2, GRAN_CHANNEL, ASIGN_AUTO},
};
#define N_CONFIGS (int)(sizeof CONFIGS / sizeof *CONFIGS)

static void make_quant(spec_quant *q, const qcfg *cfg)
{
    memset(q, 0, sizeof *q);
    q->enabled = 1;
    q->weight_bits = q->act_bits = cfg->bits;
    q->first_last_bits = 8;
    q->granularity = cfg->gran;
    q->grad_scale = GSCALE_PAPER;
    q->init = QINIT_PAPER;
    q->act_sign = cfg->sign;
}

static void build(lsq_net *net, const char *layers, const spec_quant *q)
{
    json_t *j = json_loads(layers, 0, NULL);
    cr_assert_not_null(j, "the test's layer list is not JSON");
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(net_build(net, j, q, 10, BATCH, &err), LSQ_OK, "%s: %s", err.field, err.message);
    json_decref(j);
}

/* The net of `layers` in configuration cfg, ready to export: float weights
 * of seed 1; each batch norm's running statistics set to what it saw in a
 * training-mode pass over the first BATCH images (so that evaluation mode
 * normalises as training did, as in a trained net); then (quantized) the
 * weight steps and, from one more pass, the activation steps. */
static void make_net(lsq_net *net, const char *layers, const qcfg *cfg)
{
    load_images();
    lsq_net fp;
    build(&fp, layers, NULL);
    net_init_params(&fp, 1);
    net_forward(&fp, X, BATCH, 1);
    for (int i = 1; i < fp.n_nodes; i++) {
        const net_node *nd = &fp.nodes[i];
        if (nd->op != OP_BN) continue;
        float *rm = fp.state + fp.views[nd->rmeanv].off, *rv = fp.state + fp.views[nd->rvarv].off;
        for (int c = 0; c < nd->c; c++) {
            const float rstd = nd->aux[nd->c + c]; /* the batch's 1 / sqrt(var + eps) */
            rm[c] = nd->aux[c];
            rv[c] = 1.0f / (rstd * rstd) - 1e-5f;
        }
    }
    if (!cfg->bits) {
        *net = fp;
        return;
    }
    spec_quant q;
    make_quant(&q, cfg);
    build(net, layers, &q);
    cr_assert_gt(net_copy_matching(net, &fp), 0);
    net_free(&fp);
    net_quant_init_weights(net, QINIT_PAPER);
    net_forward(net, X, BATCH, 1);
}

static float *float_logits(lsq_net *net)
{
    float *z = malloc((size_t)N_IMG * 10 * sizeof *z);
    const size_t plane = (size_t)DS.c * DS.h * DS.w;
    for (int b = 0; b < N_IMG; b += BATCH) {
        const float *o = net_forward(net, X + (size_t)b * plane, BATCH, 0);
        memcpy(z + (size_t)b * 10, o, (size_t)BATCH * 10 * sizeof *z);
    }
    return z;
}

static lsqm_model *export_and_load(const lsq_net *net, uint8_t **bytes, size_t *len)
{
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(lsqm_encode(net, NULL, bytes, len, &err), LSQ_OK, "%s", err.message);
    uint8_t *copy = malloc(*len);
    memcpy(copy, *bytes, *len);
    lsqm_file f;
    cr_assert_eq(lsqm_parse(&f, copy, *len, "mem.lsqm", &err), LSQ_OK, "%s", err.message);
    lsqm_model *m = lsqm_load_file(&f, &err);
    cr_assert_not_null(m, "%s", err.message);
    lsqm_file_free(&f);
    return m;
}

static float *int_logits(const lsqm_model *m, int threads)
{
    float *z = malloc((size_t)N_IMG * 10 * sizeof *z);
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(lsqm_predict(m, DS.pixels, N_IMG, z, NULL, threads, &err), LSQ_OK, "%s",
                 err.message);
    return z;
}

static int argmax10(const float *z)
{
    int best = 0;
    for (int k = 1; k < 10; k++)
        if (z[k] > z[best]) best = k;
    return best;
}

/* test_deploy.c's rules: top-1 on >= 99.9% of the images, logits within
 * LOGIT_TOL * (1 + max |logit|) on >= 99% of them */
#define LOGIT_TOL 1e-3
typedef struct {
    int agree, close;
    double max_diff, max_rel;
} cmp;

static cmp compare(const float *a, const float *b)
{
    cmp c = {0};
    for (int i = 0; i < N_IMG; i++) {
        const float *x = a + (size_t)i * 10, *y = b + (size_t)i * 10;
        c.agree += argmax10(x) == argmax10(y);
        double mx = 0, scale = 0;
        for (int k = 0; k < 10; k++) {
            double d = fabs((double)x[k] - y[k]);
            if (d > mx) mx = d;
            if (fabs(x[k]) > scale) scale = fabs(x[k]);
        }
        if (mx > c.max_diff) c.max_diff = mx;
        if (mx / (1.0 + scale) > c.max_rel) c.max_rel = mx / (1.0 + scale);
        c.close += mx <= LOGIT_TOL * (1.0 + scale);
    }
    return c;
}

/* One net in one configuration: integer engine against the float engine,
 * every kernel path against the portable one. */
static void check_config(const char *what, const char *layers, const qcfg *cfg)
{
    lsq_net net;
    make_net(&net, layers, cfg);
    float *f = float_logits(&net);
    uint8_t *bytes;
    size_t len;
    lsqm_model *m = export_and_load(&net, &bytes, &len);
    float *q = int_logits(m, 2);
    cmp c = compare(f, q);
    printf("%-12s %-17s %6zu-byte .lsqm: top-1 %d/%d, within tolerance %d/%d, max |dlogit| %.3g "
           "(%.3g of 1 + max |logit|)\n",
           what, cfg->tag, len, c.agree, N_IMG, c.close, N_IMG, c.max_diff, c.max_rel);
    cr_expect_geq(c.agree, (int)ceil(0.999 * N_IMG), "%s %s: integer and float engines agree on %d/%d",
                  what, cfg->tag, c.agree, N_IMG);
    cr_expect_geq(c.close, (int)ceil(0.99 * N_IMG),
                  "%s %s: only %d/%d images have logits within tolerance", what, cfg->tag,
                  c.close, N_IMG);
    /* every kernel path: the portable path's logits, bit for bit */
    lsq_err err;
    cr_assert_eq(lsqm_set_kernel(m, LSQ_KERNEL_PORTABLE, &err), LSQ_OK);
    float *ref = int_logits(m, 2);
    for (int k = 1; k < LSQ_KERNEL_COUNT; k++) {
        if (!lsq_kernel_supported((lsq_kernel)k)) continue;
        cr_assert_eq(lsqm_set_kernel(m, k, &err), LSQ_OK);
        float *z = int_logits(m, 2);
        cr_expect_eq(memcmp(z, ref, (size_t)N_IMG * 10 * sizeof *z), 0,
                     "%s %s: kernel %s differs from portable", what, cfg->tag, LSQ_KERNEL_NAMES[k]);
        free(z);
    }
    free(ref);
    free(f);
    free(q);
    free(bytes);
    lsqm_free(m);
    net_free(&net);
}

static void check_net(const char *what, const char *layers)
{
    for (int i = 0; i < N_CONFIGS; i++) check_config(what, layers, &CONFIGS[i]);
}

/* ------------------------------------------------ integer vs float engine */

Test(deploy_layers, grouped_conv, .timeout = 300) { check_net("grouped", NET_GROUPED); }
Test(deploy_layers, depthwise_conv, .timeout = 300) { check_net("depthwise", NET_DEPTHWISE); }
Test(deploy_layers, dilated_conv, .timeout = 300) { check_net("dilated", NET_DILATED); }
Test(deploy_layers, clip_and_relu6, .timeout = 300) { check_net("clip", NET_CLIP); }
Test(deploy_layers, leakyrelu, .timeout = 300) { check_net("leakyrelu", NET_LEAKY); }
Test(deploy_layers, scale, .timeout = 300) { check_net("scale", NET_SCALE); }
Test(deploy_layers, padded_maxpool, .timeout = 300) { check_net("maxpool-pad", NET_MAXPOOL); }
Test(deploy_layers, windowed_avgpool, .timeout = 300) { check_net("avgpool-win", NET_AVGPOOL); }
Test(deploy_layers, inception_concat, .timeout = 300) { check_net("inception", NET_INCEPTION); }
Test(deploy_layers, mobilenetv2, .timeout = 300) { check_net("mobilenetv2", NET_MBV2); }
Test(deploy_layers, every_new_layer_in_one_net, .timeout = 300) { check_net("all-layers", NET_ALL); }
Test(deploy_layers, one_channel_first_conv_and_flatten, .timeout = 300) { check_net("first-conv", NET_FIRST); }

/* LSQ+ inputs (code * s + beta, padding 0) into dilated, depthwise and
 * grouped convs after batch norms: the offset's per-pixel sums over the
 * taps inside the image */
static const char *NET_LSQPLUS =
    IN "{\"type\":\"conv2d\",\"name\":\"c1\",\"out\":8,\"kernel\":3,\"pad\":1},{\"type\":\"batchnorm\"},"
    "{\"type\":\"conv2d\",\"name\":\"d1\",\"out\":8,\"kernel\":3,\"pad\":2,\"dilation\":2},"
    "{\"type\":\"batchnorm\"},"
    "{\"type\":\"conv2d\",\"name\":\"dw\",\"out\":8,\"kernel\":3,\"stride\":2,\"pad\":2,\"dilation\":2,"
    "\"groups\":8},{\"type\":\"batchnorm\"},"
    "{\"type\":\"conv2d\",\"name\":\"g\",\"out\":16,\"kernel\":3,\"pad\":1,\"groups\":2},"
    "{\"type\":\"relu\"}," FC;

Test(deploy_layers, lsqplus_into_grouped_and_dilated, .timeout = 300)
{
    static const qcfg lsqp[] = {{"W4A4 LSQ+", 4, GRAN_CHANNEL, ASIGN_OFFSET},
                                {"W2A2 LSQ+", 2, GRAN_TENSOR, ASIGN_OFFSET}};
    for (int i = 0; i < 2; i++) check_config("lsq+", NET_LSQPLUS, &lsqp[i]);
}

/* ------------------------------------------------------------ the reader */

/* The bytes of a .lsqm whose header's model.layers[layer][key] is set to
 * value (stolen; NULL removes the key), with the header length and the
 * checksum made consistent: what a careless writer or a forger could make. */
static uint8_t *forge(const uint8_t *b, size_t len, int layer, const char *key, json_t *value,
                      size_t *out_len)
{
    const uint32_t hl = b[8] | b[9] << 8 | b[10] << 16 | (uint32_t)b[11] << 24;
    json_t *h = json_loadb((const char *)b + 12, hl, 0, NULL);
    cr_assert_not_null(h);
    json_t *l = json_array_get(json_object_get(json_object_get(h, "model"), "layers"), (size_t)layer);
    cr_assert_not_null(l, "no layer %d", layer);
    if (value) json_object_set_new(l, key, value);
    else json_object_del(l, key);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    const size_t nh = strlen(text), pl = len - 24 - hl;
    *out_len = 24 + nh + pl;
    uint8_t *o = malloc(*out_len);
    memcpy(o, b, 8);
    for (int k = 0; k < 4; k++) o[8 + k] = (uint8_t)(nh >> (8 * k));
    memcpy(o + 12, text, nh);
    memcpy(o + 12 + nh, b + 12 + hl, 8 + pl); /* payload length, payload */
    const uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), o, (uInt)(*out_len - 4));
    for (int k = 0; k < 4; k++) o[*out_len - 4 + k] = (uint8_t)(crc >> (8 * k));
    free(text);
    return o;
}

/* Parses and loads a copy of the bytes; the status, err filled. */
static lsq_status load_bytes(const uint8_t *b, size_t len, lsq_err *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, b, len);
    lsqm_file f;
    lsq_err_clear(err);
    lsq_status st = lsqm_parse(&f, copy, len, "forged.lsqm", err);
    if (st == LSQ_OK) {
        lsqm_model *m = lsqm_load_file(&f, err);
        st = m ? LSQ_OK : err->code;
        lsqm_free(m);
    }
    lsqm_file_free(&f);
    return st;
}

/* A setting of a new layer forged out of range, of the wrong type, or into
 * a graph that does not fit, in a file that is otherwise sound: a clean
 * LSQ_ERR_FORMAT naming the layer and key (or the tensor that no longer
 * fits), never a crash or a model that runs something else. NET_ALL's
 * layers: 2 clip r0, 3 depthwise dw1, 16 add res, 17 padded maxpool mp,
 * 18 grouped dilated gd, 19 leakyrelu lr, 20 concat cat, 21 scale sc,
 * 22 windowed avgpool ap. */
Test(deploy_layers, reader_refuses_bad_layer_settings, .timeout = 300)
{
    static const struct {
        int layer;
        const char *key, *value, *want; /* value: JSON text, NULL: key removed */
    } cases[] = {
        {3, "groups", "3", "model.layers[3].groups"},
        {3, "groups", "0", "model.layers[3].groups"},
        {3, "groups", "8.5", "model.layers[3].groups"},
        {3, "groups", "4", "'dw1.weight'"}, /* a valid conv whose weights no longer fit */
        {3, "groupz", "8", "model.layers[3]"},
        {18, "dilation", "0", "model.layers[18].dilation"},
        {18, "dilation", "17", "model.layers[18].dilation"},
        {18, "dilation", "\"2\"", "model.layers[18].dilation"},
        {18, "pad", "5", "model.layers[18].pad"},
        {18, "input", "\"fc\"", "model.layers[18].input"}, /* a later layer: a cycle */
        {2, "min", "6", "model.layers[2].max"},
        {2, "max", "\"six\"", "model.layers[2].max"},
        {2, "max", "1e39", "model.layers[2].max"},
        {19, "alpha", "7", "model.layers[19].alpha"},
        {19, "alpha", "-0.5", "model.layers[19].alpha"},
        {21, "value", "1e39", "model.layers[21].value"},
        {21, "value", "null", "model.layers[21].value"},
        {21, "value", NULL, "model.layers[21].value"},
        {21, "type", "\"scal\"", "model.layers[21].type"},
        {17, "pad", "3", "model.layers[17].pad"},
        {17, "pad", "-1", "model.layers[17].pad"},
        {22, "count_include_pad", "3", "model.layers[22].count_include_pad"},
        {22, "kernel", "0", "model.layers[22].kernel"},
        {22, "kernel", "17", "model.layers[22].kernel"},
        {20, "inputs", "[\"mp\",\"nope\"]", "model.layers[20].inputs"},
        {20, "inputs", "[\"mp\",\"head\"]", "model.layers[20].inputs"},
        {20, "inputs", "[\"mp\"]", "model.layers[20].inputs"},
        {20, "inputs", "[\"mp\",\"lr\",\"mp\",\"lr\",\"mp\",\"lr\",\"mp\",\"lr\",\"mp\",\"lr\",\"mp\","
                       "\"lr\",\"mp\",\"lr\",\"mp\",\"lr\",\"mp\"]",
         "model.layers[20].inputs"},
        {20, "inputs", "[\"mp\",\"input\"]", "model.layers[20].inputs"},
        {20, "inputs", "[\"mp\",7]", "model.layers[20].inputs"},
        {16, "inputs", "[\"bn5\",\"stem\"]", "model.layers[16].inputs"},
    };
    static const qcfg w4 = {"W4A4", 4, GRAN_TENSOR, ASIGN_AUTO};
    lsq_net net;
    make_net(&net, NET_ALL, &w4);
    uint8_t *b;
    size_t len;
    lsq_err err;
    cr_assert_eq(lsqm_encode(&net, NULL, &b, &len, &err), LSQ_OK, "%s", err.message);
    net_free(&net);
    cr_assert_eq(load_bytes(b, len, &err), LSQ_OK, "%s", err.message);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *v = NULL;
        if (cases[i].value) {
            v = json_loads(cases[i].value, JSON_DECODE_ANY, NULL);
            cr_assert_not_null(v, "case %zu: bad JSON in the test", i);
        }
        size_t fl;
        uint8_t *fb = forge(b, len, cases[i].layer, cases[i].key, v, &fl);
        lsq_status st = load_bytes(fb, fl, &err);
        cr_expect_eq(st, LSQ_ERR_FORMAT, "case %zu (%s = %s): status %d", i, cases[i].key,
                     cases[i].value ? cases[i].value : "removed", st);
        cr_expect(strstr(err.field, cases[i].want) || strstr(err.message, cases[i].want),
                  "case %zu: '%s' / '%s' does not name %s", i, err.field, err.message,
                  cases[i].want);
        cr_expect(strstr(err.message, "the model's layer list") || strstr(err.message, "tensor"),
                  "case %zu: %s", i, err.message);
        free(fb);
    }
    /* truncations and flipped bytes anywhere in such a file */
    int truncs = 0, flips = 0;
    const uint32_t hl = b[8] | b[9] << 8 | b[10] << 16 | (uint32_t)b[11] << 24;
    for (size_t n = 0; n < len; n += n < 12 + hl + 16 ? 7 : 89, truncs++)
        cr_assert_eq(load_bytes(b, n, &err), LSQ_ERR_FORMAT, "truncated at %zu accepted", n);
    uint8_t *c = malloc(len);
    for (size_t i = 0; i < len; i += 37, flips++) {
        memcpy(c, b, len);
        c[i] ^= 0x24;
        cr_assert_neq(load_bytes(c, len, &err), LSQ_OK, "flip at %zu accepted", i);
        cr_assert(err.message[0]);
    }
    cr_log_info("%zu forged settings, %d truncations and %d byte flips rejected",
                sizeof cases / sizeof *cases, truncs, flips);
    free(c);
    free(b);
}

/* ------------------------------------------------------------ the CLI */

/* Runs cmd, returns its standard output (malloc'd) and exit status. */
static char *run_cmd(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t cap = 1 << 16, n = 0, r;
    char *out = malloc(cap);
    while ((r = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += r;
        if (n + 1 == cap) out = realloc(out, cap *= 2);
    }
    out[n] = 0;
    *status = pclose(p);
    return out;
}

/* `lsq eval` and `lsq predict` on a W4A4 MobileNetV2-style .lsqm: the
 * accuracy and the classes of the integer engine as the library gives
 * them. */
Test(deploy_layers, lsq_eval_and_predict_run_a_mobilenetv2, .timeout = 300)
{
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin, "LSQ_BIN is not set (run through make test)");
    static const qcfg w4 = {"W4A4", 4, GRAN_CHANNEL, ASIGN_AUTO};
    lsq_net net;
    make_net(&net, NET_MBV2, &w4);
    char dir[] = "/tmp/lsq-mbv2-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char model[64], idx[64], cmd[512];
    snprintf(model, sizeof model, "%s/model.lsqm", dir);
    snprintf(idx, sizeof idx, "%s/images.idx", dir);
    json_t *meta = json_pack("{s:s, s:s}", "name", "mbv2", "dataset", "fashion-mnist");
    lsq_err err;
    cr_assert_eq(lsqm_save(model, &net, meta, &err), LSQ_OK, "%s", err.message);
    json_decref(meta);
    net_free(&net);
    lsqm_model *m = lsqm_load(model, &err);
    cr_assert_not_null(m, "%s", err.message);
    float *z = int_logits(m, 2);
    int correct = 0;
    for (int i = 0; i < N_IMG; i++) correct += argmax10(z + (size_t)i * 10) == DS.labels[i];
    /* eval: the same images (the test set's first N_IMG) */
    int status;
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --limit %d --threads 2", bin, model, N_IMG);
    char *out = run_cmd(cmd, &status);
    char want[64];
    snprintf(want, sizeof want, "accuracy %.4f\n", (double)correct / N_IMG);
    cr_expect_eq(status, 0, "%s: %s", cmd, out);
    cr_expect(strstr(out, "engine integer") && strstr(out, want), "want '%s' in:\n%s", want, out);
    cr_log_info("lsq eval: %s", out);
    free(out);
    /* predict: 7 images as an IDX file */
    const int n = 7;
    FILE *f = fopen(idx, "wb");
    cr_assert_not_null(f);
    const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, (uint8_t)n, 0, 0, 0, 28, 0, 0, 0, 28};
    cr_assert_eq(fwrite(hdr, 1, 16, f), 16);
    cr_assert_eq(fwrite(DS.pixels, 784, (size_t)n, f), (size_t)n);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' predict '%s' '%s'", bin, model, idx);
    out = run_cmd(cmd, &status);
    cr_expect_eq(status, 0, "%s: %s", cmd, out);
    for (int i = 0; i < n; i++) {
        char line[128];
        snprintf(line, sizeof line, "%s[%d]: class %d ", idx, i, argmax10(z + (size_t)i * 10));
        cr_expect(strstr(out, line), "want '%s' in:\n%s", line, out);
    }
    free(out);
    free(z);
    lsqm_free(m);
    unlink(model);
    unlink(idx);
    rmdir(dir);
}
