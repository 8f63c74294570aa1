/* The job-spec validator: bad specs name the exact field, good specs get the
 * paper's defaults, and spec_to_json round-trips through spec_parse. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/spec.h"

static lsq_status parse(lsq_spec *s, const char *text, lsq_err *err)
{
    lsq_err_clear(err);
    return spec_parse(s, text, strlen(text), err);
}

/* ---- bad specs ------------------------------------------------------------ */

typedef struct {
    const char *text;
    lsq_status code;
    const char *field;
} bad_case;

static const bad_case BAD[] = {
    /* unknown keys, at every level */
    {"{\"nmae\":\"x\"}", LSQ_ERR_INVALID, "nmae"},
    {"{\"train\":{\"lrr\":0.1}}", LSQ_ERR_INVALID, "train.lrr"},
    {"{\"quant\":{\"bits\":4}}", LSQ_ERR_INVALID, "quant.bits"},
    {"{\"quant\":{\"layers\":{\"fc1\":{\"bits\":4}}}}", LSQ_ERR_INVALID, "quant.layers.fc1.bits"},
    {"{\"dataset\":{\"augment\":{\"rotate\":1}}}", LSQ_ERR_INVALID, "dataset.augment.rotate"},
    {"{\"model\":{\"kind\":\"x\"}}", LSQ_ERR_INVALID, "model.kind"},
    {"{\"quant\":{},\"distill\":{\"alpha\":1}}", LSQ_ERR_INVALID, "distill.alpha"},
    {"{\"quant\":{\"method\":\"qat\"}}", LSQ_ERR_INVALID, "quant.method"},
    {"{\"quant\":{\"method\":1}}", LSQ_ERR_INVALID, "quant.method"},
    {"{\"quant\":{\"calibration_images\":0}}", LSQ_ERR_INVALID, "quant.calibration_images"},
    {"{\"quant\":{\"calibration_images\":4097}}", LSQ_ERR_INVALID, "quant.calibration_images"},
    {"{\"quant\":{\"report_ptq\":\"yes\"}}", LSQ_ERR_INVALID, "quant.report_ptq"},
    {"{\"quant\":{\"method\":\"ptq\"},\"distill\":true}", LSQ_ERR_INVALID, "distill"},
    {"{\"init\":{\"from\":\"x\",\"to\":\"y\"}}", LSQ_ERR_INVALID, "init.to"},
    {"{\"quant\":{},\"pretrain\":{\"epoch\":2}}", LSQ_ERR_INVALID, "pretrain.epoch"},
    /* name */
    {"{\"name\":\"\"}", LSQ_ERR_INVALID, "name"},
    {"{\"name\":\"a b\"}", LSQ_ERR_INVALID, "name"},
    {"{\"name\":\"a/b\"}", LSQ_ERR_INVALID, "name"},
    {"{\"name\":5}", LSQ_ERR_INVALID, "name"},
    /* model */
    {"{\"model\":\"cnn-small\"}", LSQ_ERR_INVALID, "model"},
    {"{\"model\":{\"arch\":\"vgg\"}}", LSQ_ERR_INVALID, "model.arch"},
    {"{\"model\":{\"arch\":\"mlp\",\"layers\":[{}]}}", LSQ_ERR_INVALID, "model"},
    {"{\"model\":{\"layers\":[]}}", LSQ_ERR_INVALID, "model.layers"},
    {"{\"model\":{\"layers\":{}}}", LSQ_ERR_INVALID, "model.layers"},
    {"{\"model\":{\"layers\":[{},1]}}", LSQ_ERR_INVALID, "model.layers[1]"},
    {"{\"model\":{\"layers\":[{}],\"input\":[1,28]}}", LSQ_ERR_INVALID, "model.input"},
    {"{\"model\":{\"layers\":[{}],\"input\":[1,0,28]}}", LSQ_ERR_INVALID, "model.input[1]"},
    {"{\"model\":{\"layers\":[{}],\"input\":[1,28.5,28]}}", LSQ_ERR_INVALID, "model.input[1]"},
    {"{\"model\":{\"arch\":\"mlp\",\"input\":[1,28,28]}}", LSQ_ERR_INVALID, "model.input"},
    {"{\"model\":{\"onnx\":3}}", LSQ_ERR_INVALID, "model.onnx"},
    {"{\"model\":{\"onnx\":\"\"}}", LSQ_ERR_INVALID, "model.onnx"},
    {"{\"model\":{\"onnx\":\"m.onnx\",\"arch\":\"mlp\"}}", LSQ_ERR_INVALID, "model"},
    {"{\"model\":{\"onnx\":\"m.onnx\",\"layers\":[{}]}}", LSQ_ERR_INVALID, "model"},
    {"{\"model\":{\"onnx\":\"m.onnx\",\"input\":[1,28,28]}}", LSQ_ERR_INVALID, "model.input"},
    /* dataset */
    {"{\"dataset\":{\"name\":\"cifar10\"}}", LSQ_ERR_INVALID, "dataset.name"},
    {"{\"dataset\":{\"train_limit\":-5}}", LSQ_ERR_INVALID, "dataset.train_limit"},
    {"{\"dataset\":{\"test_limit\":1.5}}", LSQ_ERR_INVALID, "dataset.test_limit"},
    {"{\"dataset\":{\"path\":7}}", LSQ_ERR_INVALID, "dataset.path"},
    {"{\"dataset\":{\"augment\":{\"crop_pad\":9}}}", LSQ_ERR_INVALID, "dataset.augment.crop_pad"},
    {"{\"dataset\":{\"augment\":{\"flip\":\"yes\"}}}", LSQ_ERR_INVALID, "dataset.augment.flip"},
    {"{\"dataset\":[]}", LSQ_ERR_INVALID, "dataset"},
    {"{\"dataset\":{\"cache\":5}}", LSQ_ERR_INVALID, "dataset.cache"},
    {"{\"dataset\":{\"cache\":\"/d\",\"name\":\"mnist\"}}", LSQ_ERR_INVALID, "dataset.cache"},
    {"{\"dataset\":{\"cache\":\"/d\",\"path\":\"/p\"}}", LSQ_ERR_INVALID, "dataset.cache"},
    {"{\"dataset\":{\"normalize\":1}}", LSQ_ERR_INVALID, "dataset.normalize"},
    /* quant */
    {"{\"quant\":5}", LSQ_ERR_INVALID, "quant"},
    {"{\"quant\":{\"weight_bits\":9}}", LSQ_ERR_INVALID, "quant.weight_bits"},
    {"{\"quant\":{\"weight_bits\":1}}", LSQ_ERR_INVALID, "quant.weight_bits"},
    {"{\"quant\":{\"weight_bits\":2.5}}", LSQ_ERR_INVALID, "quant.weight_bits"},
    {"{\"quant\":{\"weight_bits\":\"4\"}}", LSQ_ERR_INVALID, "quant.weight_bits"},
    {"{\"quant\":{\"act_bits\":9}}", LSQ_ERR_INVALID, "quant.act_bits"},
    {"{\"quant\":{\"first_last_bits\":\"half\"}}", LSQ_ERR_INVALID, "quant.first_last_bits"},
    {"{\"quant\":{\"first_last_bits\":1}}", LSQ_ERR_INVALID, "quant.first_last_bits"},
    {"{\"quant\":{\"first_last_bits\":true}}", LSQ_ERR_INVALID, "quant.first_last_bits"},
    {"{\"quant\":{\"granularity\":\"row\"}}", LSQ_ERR_INVALID, "quant.granularity"},
    {"{\"quant\":{\"grad_scale\":0}}", LSQ_ERR_INVALID, "quant.grad_scale"},
    {"{\"quant\":{\"grad_scale\":-1.5}}", LSQ_ERR_INVALID, "quant.grad_scale"},
    {"{\"quant\":{\"grad_scale\":\"value\"}}", LSQ_ERR_INVALID, "quant.grad_scale"},
    {"{\"quant\":{\"grad_scale\":[]}}", LSQ_ERR_INVALID, "quant.grad_scale"},
    {"{\"quant\":{\"init\":\"kaiming\"}}", LSQ_ERR_INVALID, "quant.init"},
    {"{\"quant\":{\"act_sign\":\"both\"}}", LSQ_ERR_INVALID, "quant.act_sign"},
    {"{\"quant\":{\"layers\":[]}}", LSQ_ERR_INVALID, "quant.layers"},
    {"{\"quant\":{\"layers\":{\"fc1\":{\"weight_bits\":9}}}}", LSQ_ERR_INVALID,
     "quant.layers.fc1.weight_bits"},
    {"{\"quant\":{\"layers\":{\"fc1\":{\"act_bits\":3.0}}}}", LSQ_ERR_INVALID,
     "quant.layers.fc1.act_bits"},
    {"{\"quant\":{\"layers\":{\"fc1\":{\"act_sign\":\"x\"}}}}", LSQ_ERR_INVALID,
     "quant.layers.fc1.act_sign"},
    {"{\"quant\":{\"layers\":{\"fc1\":\"half\"}}}", LSQ_ERR_INVALID, "quant.layers.fc1"},
    {"{\"quant\":{\"layers\":{\"fc1\":4}}}", LSQ_ERR_INVALID, "quant.layers.fc1"},
    {"{\"quant\":{\"layers\":{\"fc 1\":\"float\"}}}", LSQ_ERR_INVALID, "quant.layers.fc 1"},
    {"{\"quant\":{\"layers\":{\"\":\"float\"}}}", LSQ_ERR_INVALID, "quant.layers."},
    /* train */
    {"{\"train\":[]}", LSQ_ERR_INVALID, "train"},
    {"{\"train\":{\"lr\":12}}", LSQ_ERR_INVALID, "train.lr"},
    {"{\"train\":{\"lr\":0}}", LSQ_ERR_INVALID, "train.lr"},
    {"{\"train\":{\"lr\":null}}", LSQ_ERR_INVALID, "train.lr"},
    {"{\"train\":{\"lr\":\"0.1\"}}", LSQ_ERR_INVALID, "train.lr"},
    {"{\"train\":{\"momentum\":1}}", LSQ_ERR_INVALID, "train.momentum"},
    {"{\"train\":{\"momentum\":-0.1}}", LSQ_ERR_INVALID, "train.momentum"},
    {"{\"train\":{\"epochs\":-1}}", LSQ_ERR_INVALID, "train.epochs"},
    {"{\"train\":{\"epochs\":1001}}", LSQ_ERR_INVALID, "train.epochs"},
    {"{\"train\":{\"batch_size\":0}}", LSQ_ERR_INVALID, "train.batch_size"},
    {"{\"train\":{\"batch_size\":4097}}", LSQ_ERR_INVALID, "train.batch_size"},
    {"{\"train\":{\"batch_size\":64.0}}", LSQ_ERR_INVALID, "train.batch_size"},
    {"{\"train\":{\"nesterov\":1}}", LSQ_ERR_INVALID, "train.nesterov"},
    {"{\"train\":{\"weight_decay\":\"none\"}}", LSQ_ERR_INVALID, "train.weight_decay"},
    {"{\"train\":{\"weight_decay\":2}}", LSQ_ERR_INVALID, "train.weight_decay"},
    {"{\"train\":{\"weight_decay\":-1e-4}}", LSQ_ERR_INVALID, "train.weight_decay"},
    {"{\"train\":{\"weight_decay\":true}}", LSQ_ERR_INVALID, "train.weight_decay"},
    {"{\"train\":{\"schedule\":\"step\"}}", LSQ_ERR_INVALID, "train.schedule"},
    {"{\"train\":{\"warmup_epochs\":5}}", LSQ_ERR_INVALID, "train.warmup_epochs"},
    {"{\"train\":{\"warmup_epochs\":-1}}", LSQ_ERR_INVALID, "train.warmup_epochs"},
    {"{\"train\":{\"seed\":-1}}", LSQ_ERR_INVALID, "train.seed"},
    {"{\"train\":{\"seed\":1.5}}", LSQ_ERR_INVALID, "train.seed"},
    /* pretrain */
    {"{\"quant\":{},\"pretrain\":{\"lr\":-1}}", LSQ_ERR_INVALID, "pretrain.lr"},
    {"{\"quant\":{},\"pretrain\":[]}", LSQ_ERR_INVALID, "pretrain"},
    {"{\"quant\":{},\"pretrain\":true}", LSQ_ERR_INVALID, "pretrain"},
    {"{\"pretrain\":{\"epochs\":2}}", LSQ_ERR_INVALID, "pretrain"},
    /* distill */
    {"{\"quant\":{},\"distill\":{\"temperature\":0}}", LSQ_ERR_INVALID, "distill.temperature"},
    {"{\"quant\":{},\"distill\":{\"temperature\":101}}", LSQ_ERR_INVALID, "distill.temperature"},
    {"{\"quant\":{},\"distill\":{\"weight\":1.5}}", LSQ_ERR_INVALID, "distill.weight"},
    {"{\"quant\":{},\"distill\":\"yes\"}", LSQ_ERR_INVALID, "distill"},
    {"{\"distill\":true}", LSQ_ERR_INVALID, "distill"},
    {"{\"quant\":{},\"pretrain\":null,\"distill\":true}", LSQ_ERR_INVALID, "distill"},
    /* init, threads, checkpoint_every */
    {"{\"init\":{\"from\":\"\"}}", LSQ_ERR_INVALID, "init.from"},
    {"{\"init\":{}}", LSQ_ERR_INVALID, "init.from"},
    {"{\"init\":{\"from\":3}}", LSQ_ERR_INVALID, "init.from"},
    {"{\"init\":\"job-1\"}", LSQ_ERR_INVALID, "init"},
    {"{\"threads\":0}", LSQ_ERR_INVALID, "threads"},
    /* resources: data-parallel ranks */
    {"{\"resources\":{\"nodes\":0}}", LSQ_ERR_INVALID, "resources.nodes"},
    {"{\"resources\":{\"nodes\":1025}}", LSQ_ERR_INVALID, "resources.nodes"},
    {"{\"resources\":{\"tasks_per_node\":0}}", LSQ_ERR_INVALID, "resources.tasks_per_node"},
    {"{\"resources\":{\"tasks_per_node\":2.0}}", LSQ_ERR_INVALID, "resources.tasks_per_node"},
    {"{\"resources\":{\"gpus\":1}}", LSQ_ERR_INVALID, "resources.gpus"},
    {"{\"resources\":2}", LSQ_ERR_INVALID, "resources"},
    {"{\"resources\":{\"nodes\":1024,\"tasks_per_node\":8}}", LSQ_ERR_INVALID,
     "resources.tasks_per_node"},
    {"{\"resources\":{\"nodes\":4,\"tasks_per_node\":4},\"train\":{\"batch_size\":8}}",
     LSQ_ERR_INVALID, "train.batch_size"},
    {"{\"resources\":{\"nodes\":4},\"quant\":{},\"pretrain\":{\"batch_size\":2}}",
     LSQ_ERR_INVALID, "pretrain.batch_size"},
    {"{\"threads\":257}", LSQ_ERR_INVALID, "threads"},
    {"{\"threads\":\"2\"}", LSQ_ERR_INVALID, "threads"},
    {"{\"checkpoint_every\":0}", LSQ_ERR_INVALID, "checkpoint_every"},
    {"{\"checkpoint_every\":1001}", LSQ_ERR_INVALID, "checkpoint_every"},
    {"{\"resources\":[]}", LSQ_ERR_INVALID, "resources"},
    {"{\"resources\":{\"cpus\":2}}", LSQ_ERR_INVALID, "resources.cpus"},
    {"{\"resources\":{\"partition\":\"a b\"}}", LSQ_ERR_INVALID, "resources.partition"},
    {"{\"resources\":{\"partition\":\"\"}}", LSQ_ERR_INVALID, "resources.partition"},
    {"{\"resources\":{\"mem_mb\":0}}", LSQ_ERR_INVALID, "resources.mem_mb"},
    {"{\"resources\":{\"time_min\":525601}}", LSQ_ERR_INVALID, "resources.time_min"},
    /* not an object; malformed text */
    {"[]", LSQ_ERR_INVALID, ""},
    {"null", LSQ_ERR_INVALID, ""},
    {"{\"name\": }", LSQ_ERR_PARSE, ""},
    {"{\"threads\":1,\"threads\":2}", LSQ_ERR_PARSE, ""},
    {"", LSQ_ERR_PARSE, ""},
    {"{} x", LSQ_ERR_PARSE, ""},
};

Test(spec, bad_specs_name_the_field)
{
    size_t n = sizeof BAD / sizeof *BAD;
    cr_assert_geq(n, 30);
    for (size_t i = 0; i < n; i++) {
        lsq_spec s;
        lsq_err err;
        lsq_status st = parse(&s, BAD[i].text, &err);
        cr_expect_eq(st, BAD[i].code, "%s: status %d, want %d (%s)", BAD[i].text, st,
                     BAD[i].code, err.message);
        cr_expect_eq(err.code, st, "%s: err.code not set", BAD[i].text);
        cr_expect_str_eq(err.field, BAD[i].field, "%s: field \"%s\", want \"%s\"",
                         BAD[i].text, err.field, BAD[i].field);
        cr_expect_neq(err.message[0], '\0', "%s: empty message", BAD[i].text);
        cr_expect_null(s.model_layers, "%s: model left allocated after an error", BAD[i].text);
        spec_free(&s);
    }
}

Test(spec, error_messages)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"train\":{\"lr\":12}}", &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.message, "train.lr must be in (0, 10], got 12");
    cr_assert_eq(parse(&s, "{\"quant\":{\"weight_bits\":9}}", &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.message, "quant.weight_bits must be 2..8, got 9");
    cr_assert_eq(parse(&s, "{\"quant\":{\"weight_bits\":2.5}}", &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.message, "quant.weight_bits must be an integer, got number");
    cr_assert_eq(parse(&s, "{\"train\":{\"lrr\":1}}", &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.message, "train.lrr: unknown key");
    cr_assert_eq(parse(&s, "{\"quant\":{\"granularity\":\"row\"}}", &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.message,
                     "quant.granularity must be one of \"tensor\", \"channel\", got \"row\"");
    cr_assert_eq(parse(&s, "{\n  \"name\": \"x\",\n  \"threads\": ]\n}", &err), LSQ_ERR_PARSE);
    cr_expect(strstr(err.message, "line 3") != NULL, "no line in \"%s\"", err.message);
    cr_expect(strstr(err.message, "column") != NULL, "no column in \"%s\"", err.message);
    spec_free(&s);
}

Test(spec, too_many_layer_overrides)
{
    char text[8192];
    size_t n = (size_t)snprintf(text, sizeof text, "{\"quant\":{\"layers\":{");
    for (int i = 0; i <= SPEC_MAX_LAYER_OVERRIDES; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s\"l%d\":\"float\"", i ? "," : "", i);
    snprintf(text + n, sizeof text - n, "}}}");
    lsq_spec s;
    lsq_err err;
    cr_expect_eq(parse(&s, text, &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "quant.layers");
    spec_free(&s);
}

Test(spec, name_length_limit)
{
    char text[512], name[SPEC_NAME_MAX + 1];
    memset(name, 'a', SPEC_NAME_MAX);
    name[SPEC_NAME_MAX] = '\0'; /* 128 characters: one too many */
    snprintf(text, sizeof text, "{\"name\":\"%s\"}", name);
    lsq_spec s;
    lsq_err err;
    cr_expect_eq(parse(&s, text, &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "name");
    name[SPEC_NAME_MAX - 1] = '\0'; /* 127: fine */
    snprintf(text, sizeof text, "{\"name\":\"%s\"}", name);
    cr_expect_eq(parse(&s, text, &err), LSQ_OK, "%s", err.message);
    cr_expect_str_eq(s.name, name);
    spec_free(&s);
}

/* ---- defaults ------------------------------------------------------------- */

Test(spec, empty_spec_is_a_full_precision_job)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{}", &err), LSQ_OK, "%s", err.message);
    cr_expect_str_eq(s.name, "job");
    cr_expect_str_eq(s.arch, "cnn-small");
    cr_expect_null(s.model_layers);
    cr_expect_str_eq(s.dataset, "fashion-mnist");
    cr_expect_str_eq(s.dataset_path, "");
    cr_expect_eq(s.train_limit, 0);
    cr_expect_eq(s.augment_crop_pad, 0);
    cr_expect_eq(s.augment_flip, 0);
    cr_expect_eq(s.quant.enabled, 0);
    cr_expect_eq(s.pretrain.enabled, 0);
    cr_expect_eq(s.distill.enabled, 0);
    cr_expect_eq(s.train.epochs, 3);
    cr_expect_eq(s.train.batch_size, 128);
    cr_expect_float_eq(s.train.lr, 0.01, 1e-12);
    cr_expect_float_eq(s.train.momentum, 0.9, 1e-12);
    cr_expect_eq(s.train.weight_decay_auto, 1);
    cr_expect_float_eq(s.train.weight_decay, 5e-4, 1e-12);
    cr_expect_eq(s.train.schedule, SCHED_COSINE);
    cr_expect_eq(s.train.seed, 1u);
    cr_expect_str_eq(s.init_from, "");
    cr_expect_eq(s.threads, 2);
    cr_expect_eq(s.checkpoint_every, 1);
    cr_expect_eq(s.nodes, 1);
    cr_expect_eq(s.tasks_per_node, 1);
    spec_free(&s);
}

Test(spec, resources_give_the_rank_count)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"resources\":{\"nodes\":2,\"tasks_per_node\":4}}", &err), LSQ_OK,
                 "%s", err.message);
    cr_expect_eq(s.nodes, 2);
    cr_expect_eq(s.tasks_per_node, 4);
    json_t *j = spec_to_json(&s);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "resources"), "nodes")), 2);
    cr_expect_eq(
        json_integer_value(json_object_get(json_object_get(j, "resources"), "tasks_per_node")), 4);
    json_decref(j);
    spec_free(&s);
    cr_assert_eq(parse(&s, "{\"resources\":null}", &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(s.nodes * s.tasks_per_node, 1);
    spec_free(&s);
}

Test(spec, dataset_cache_and_normalize)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{}", &err), LSQ_OK);
    cr_expect_str_eq(s.dataset_cache, "");
    cr_expect_eq(s.normalize, 0, "the built-in sets keep x/255 by default");
    spec_free(&s);
    cr_assert_eq(parse(&s, "{\"dataset\":{\"cache\":\"/data/c10\"}}", &err), LSQ_OK, "%s",
                 err.message);
    cr_expect_str_eq(s.dataset_cache, "/data/c10");
    cr_expect_eq(s.normalize, 1, "a cache normalises by default");
    spec_free(&s);
    /* the default name with a cache is fine: it is what the normalised spec says */
    cr_assert_eq(parse(&s, "{\"dataset\":{\"cache\":\"/c\",\"name\":\"fashion-mnist\","
                           "\"path\":\"\",\"normalize\":false}}", &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(s.normalize, 0);
    spec_free(&s);
    cr_assert_eq(parse(&s, "{\"dataset\":{\"normalize\":true}}", &err), LSQ_OK);
    cr_expect_eq(s.normalize, 1);
    spec_free(&s);
    cr_assert_eq(parse(&s, "{\"dataset\":{\"cache\":\"/c\",\"name\":\"mnist\"}}", &err),
                 LSQ_ERR_INVALID);
    cr_expect(strstr(err.message, "mnist"), "%s", err.message);
    /* a layer list on a cache gets no 28x28 default: the cache gives the shape */
    cr_assert_eq(parse(&s, "{\"model\":{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\","
                           "\"out\":10}]},\"dataset\":{\"cache\":\"/c\"}}", &err), LSQ_OK);
    cr_expect_null(json_object_get(s.model_layers, "input"));
    spec_free(&s);
    /* both round-trip through the normalised JSON */
    const char *texts[] = {"{\"dataset\":{\"cache\":\"/c\"}}",
                           "{\"dataset\":{\"cache\":\"/c\",\"normalize\":false}}",
                           "{\"dataset\":{\"normalize\":true}}"};
    for (int i = 0; i < 3; i++) {
        lsq_spec a, b;
        cr_assert_eq(parse(&a, texts[i], &err), LSQ_OK);
        char *t = spec_to_text(&a, JSON_COMPACT);
        cr_assert_eq(parse(&b, t, &err), LSQ_OK, "%s: %s", t, err.message);
        cr_expect_str_eq(a.dataset_cache, b.dataset_cache);
        cr_expect_eq(a.normalize, b.normalize, "%s", t);
        free(t);
        spec_free(&a);
        spec_free(&b);
    }
}

Test(spec, quant_defaults)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"quant\":{}}", &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(s.quant.enabled, 1);
    cr_expect_eq(s.quant.weight_bits, 4);
    cr_expect_eq(s.quant.act_bits, 4);
    cr_expect_eq(s.quant.first_last_bits, 8);
    cr_expect_eq(s.quant.granularity, GRAN_TENSOR);
    cr_expect_eq(s.quant.grad_scale, GSCALE_PAPER);
    cr_expect_eq(s.quant.init, QINIT_PAPER);
    cr_expect_eq(s.quant.act_sign, ASIGN_AUTO);
    cr_expect_eq(s.quant.n_layers, 0);
    cr_expect_eq(s.quant.method, QMETHOD_LSQ);
    cr_expect_eq(s.quant.calibration_images, 256);
    cr_expect_eq(s.quant.report_ptq, 1);
    /* no init.from: pretrain a full-precision model first */
    cr_expect_eq(s.pretrain.enabled, 1);
    cr_expect_eq(s.pretrain.epochs, 6);
    cr_expect_float_eq(s.pretrain.lr, 0.05, 1e-12);
    cr_expect_float_eq(s.pretrain.weight_decay, 5e-4, 1e-12);
    cr_expect_float_eq(s.train.lr, 0.01, 1e-12);
    cr_expect_float_eq(s.train.weight_decay, 1e-4, 1e-12);
    cr_expect_eq(s.distill.enabled, 1);
    cr_expect_float_eq(s.distill.temperature, 1.0, 1e-12);
    cr_expect_float_eq(s.distill.weight, 0.5, 1e-12);
    spec_free(&s);
}

Test(spec, eight_bit_lr_and_auto_weight_decay)
{
    static const struct { const char *text; double lr, wd; } cases[] = {
        {"{\"quant\":{\"weight_bits\":8}}", 0.001, 1e-4},
        {"{\"quant\":{\"weight_bits\":8},\"train\":{\"lr\":0.02}}", 0.02, 1e-4},
        {"{\"quant\":{\"weight_bits\":4}}", 0.01, 1e-4},
        {"{\"quant\":{\"weight_bits\":3}}", 0.01, 0.5e-4},
        {"{\"quant\":{\"weight_bits\":2}}", 0.01, 0.25e-4},
        {"{\"quant\":{\"weight_bits\":2},\"train\":{\"weight_decay\":0}}", 0.01, 0},
        {"{\"quant\":{\"weight_bits\":3},\"train\":{\"weight_decay\":\"auto\"}}", 0.01, 0.5e-4},
        {"{\"train\":{\"weight_decay\":\"auto\"}}", 0.01, 5e-4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lsq_spec s;
        lsq_err err;
        cr_assert_eq(parse(&s, cases[i].text, &err), LSQ_OK, "%s: %s", cases[i].text, err.message);
        cr_expect_float_eq(s.train.lr, cases[i].lr, 1e-15, "%s: lr %g", cases[i].text, s.train.lr);
        cr_expect_float_eq(s.train.weight_decay, cases[i].wd, 1e-15, "%s: wd %g", cases[i].text,
                           s.train.weight_decay);
        cr_expect_float_eq(spec_train_weight_decay(&s, &s.train, s.quant.enabled),
                           cases[i].wd, 1e-15, "%s", cases[i].text);
        spec_free(&s);
    }
}

Test(spec, act_bits_follow_weight_bits)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"quant\":{\"weight_bits\":3}}", &err), LSQ_OK);
    cr_expect_eq(s.quant.act_bits, 3);
    cr_assert_eq(parse(&s, "{\"quant\":{\"weight_bits\":2,\"act_bits\":4,"
                           "\"first_last_bits\":\"float\",\"grad_scale\":0.5,"
                           "\"granularity\":\"channel\",\"init\":\"mse\",\"act_sign\":\"lsq+\"}}",
                       &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(s.quant.weight_bits, 2);
    cr_expect_eq(s.quant.act_bits, 4);
    cr_expect_eq(s.quant.first_last_bits, -1);
    cr_expect_eq(s.quant.grad_scale, GSCALE_VALUE);
    cr_expect_float_eq(s.quant.grad_scale_value, 0.5, 1e-15);
    cr_expect_eq(s.quant.granularity, GRAN_CHANNEL);
    cr_expect_eq(s.quant.init, QINIT_MSE);
    cr_expect_eq(s.quant.act_sign, ASIGN_OFFSET);
    cr_assert_eq(parse(&s, "{\"quant\":{\"grad_scale\":\"none\"}}", &err), LSQ_OK);
    cr_expect_eq(s.quant.grad_scale, GSCALE_NONE);
    spec_free(&s);
}

Test(spec, pretrain_rules)
{
    static const struct { const char *text; int enabled, epochs; } cases[] = {
        {"{\"quant\":{}}", 1, 6},
        {"{\"quant\":{},\"init\":{\"from\":\"job-12\"}}", 0, 0},
        {"{\"quant\":{},\"init\":{\"from\":\"x.ckpt\"},\"pretrain\":{\"epochs\":2}}", 1, 2},
        {"{\"quant\":{},\"pretrain\":null}", 0, 0},
        {"{\"quant\":{},\"pretrain\":{\"epochs\":0}}", 0, 0},
        {"{\"quant\":{},\"pretrain\":{\"epochs\":0,\"lr\":0.2}}", 0, 0},
        {"{\"quant\":{},\"pretrain\":{\"lr\":0.1}}", 1, 6},
        {"{}", 0, 0},
        {"{\"pretrain\":null}", 0, 0},
        {"{\"pretrain\":{\"epochs\":0}}", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lsq_spec s;
        lsq_err err;
        cr_assert_eq(parse(&s, cases[i].text, &err), LSQ_OK, "%s: %s", cases[i].text, err.message);
        cr_expect_eq(s.pretrain.enabled, cases[i].enabled, "%s", cases[i].text);
        cr_expect_eq(s.pretrain.epochs, cases[i].epochs, "%s", cases[i].text);
        spec_free(&s);
    }
}

Test(spec, distill_rules)
{
    static const struct { const char *text; int enabled; double t, w; } cases[] = {
        {"{\"quant\":{}}", 1, 1, 0.5},
        {"{\"quant\":{},\"distill\":true}", 1, 1, 0.5},
        {"{\"quant\":{},\"distill\":false}", 0, 1, 0.5},
        {"{\"quant\":{},\"distill\":null}", 0, 1, 0.5},
        {"{\"quant\":{},\"distill\":{\"temperature\":4}}", 1, 4, 0.5},
        {"{\"quant\":{},\"distill\":{\"weight\":0}}", 1, 1, 0},
        {"{\"quant\":{},\"distill\":{\"temperature\":100,\"weight\":1}}", 1, 100, 1},
        {"{}", 0, 1, 0.5},
        {"{\"distill\":false}", 0, 1, 0.5},
        /* no teacher (no pretraining, no init.from): off unless asked */
        {"{\"quant\":{},\"pretrain\":null}", 0, 1, 0.5},
        {"{\"quant\":{},\"init\":{\"from\":\"7\"}}", 1, 1, 0.5},
        /* at 2 bits (weights or activations) off unless asked */
        {"{\"quant\":{\"weight_bits\":2}}", 0, 1, 0.5},
        {"{\"quant\":{\"weight_bits\":4,\"act_bits\":2}}", 0, 1, 0.5},
        {"{\"quant\":{\"weight_bits\":2},\"init\":{\"from\":\"7\"}}", 0, 1, 0.5},
        {"{\"quant\":{\"weight_bits\":2},\"distill\":true}", 1, 1, 0.5},
        {"{\"quant\":{\"weight_bits\":3}}", 1, 1, 0.5},
        /* post-training quantization does not train: no distillation */
        {"{\"quant\":{\"method\":\"ptq\"}}", 0, 1, 0.5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lsq_spec s;
        lsq_err err;
        cr_assert_eq(parse(&s, cases[i].text, &err), LSQ_OK, "%s: %s", cases[i].text, err.message);
        cr_expect_eq(s.distill.enabled, cases[i].enabled, "%s", cases[i].text);
        cr_expect_float_eq(s.distill.temperature, cases[i].t, 1e-15, "%s", cases[i].text);
        cr_expect_float_eq(s.distill.weight, cases[i].w, 1e-15, "%s", cases[i].text);
        spec_free(&s);
    }
}

Test(spec, layer_overrides_and_resolve)
{
    const char *text =
        "{\"quant\":{\"weight_bits\":2,\"first_last_bits\":8,\"layers\":{"
        "\"fc1\":\"float\",\"conv2\":{\"weight_bits\":3,\"act_sign\":\"signed\"},"
        "\"conv1\":{\"act_bits\":4},\"fc2\":{}}}}";
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, text, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(s.quant.n_layers, 4);
    cr_expect_str_eq(s.quant.layers[0].name, "fc1");
    cr_expect_eq(s.quant.layers[0].is_float, 1);
    cr_expect_str_eq(s.quant.layers[1].name, "conv2");
    cr_expect_eq(s.quant.layers[1].weight_bits, 3);
    cr_expect_eq(s.quant.layers[1].act_bits, 0);
    cr_expect_eq(s.quant.layers[1].act_sign, ASIGN_SIGNED);
    cr_expect_null(spec_find_override(&s.quant, "conv9"));

    spec_layer_quant r = spec_layer_resolve(&s.quant, "fc1", 0);
    cr_expect_eq(r.quantized, 0);
    r = spec_layer_resolve(&s.quant, "conv2", 0);
    cr_expect(r.quantized && r.weight_bits == 3 && r.act_bits == 2 && r.act_sign == ASIGN_SIGNED);
    r = spec_layer_resolve(&s.quant, "conv1", 1); /* first layer: 8 bits, act override 4 */
    cr_expect(r.quantized && r.weight_bits == 8 && r.act_bits == 4);
    r = spec_layer_resolve(&s.quant, "conv3", 0);
    cr_expect(r.quantized && r.weight_bits == 2 && r.act_bits == 2 && r.act_sign == ASIGN_AUTO);

    const char *names[] = {"conv1", "conv2", "fc1", "fc2"};
    cr_expect_eq(spec_check_layer_names(&s.quant, names, 4, &err), LSQ_OK);
    cr_expect_eq(spec_check_layer_names(&s.quant, names, 3, &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "quant.layers.fc2");

    cr_assert_eq(parse(&s, "{\"quant\":{\"first_last_bits\":\"float\","
                           "\"layers\":{\"fc2\":{\"weight_bits\":6}}}}", &err), LSQ_OK);
    r = spec_layer_resolve(&s.quant, "conv1", 1);
    cr_expect_eq(r.quantized, 0);
    r = spec_layer_resolve(&s.quant, "fc2", 1);
    cr_expect(r.quantized && r.weight_bits == 6 && r.act_bits == 4);
    cr_assert_eq(parse(&s, "{}", &err), LSQ_OK);
    cr_expect_eq(spec_layer_resolve(&s.quant, "conv2", 0).quantized, 0);
    spec_free(&s);
}

Test(spec, layer_list_model)
{
    const char *text =
        "{\"model\":{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]}}";
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, text, &err), LSQ_OK, "%s", err.message);
    cr_expect_str_eq(s.arch, "");
    cr_assert_not_null(s.model_layers);
    cr_expect_eq(json_array_size(json_object_get(s.model_layers, "layers")), 2);
    json_t *want = json_pack("[iii]", 1, 28, 28);
    cr_expect(json_equal(json_object_get(s.model_layers, "input"), want));
    json_decref(want);
    spec_free(&s);
    cr_expect_null(s.model_layers);

    cr_assert_eq(parse(&s, "{\"model\":{\"layers\":[{}],\"input\":[3,32,32]}}", &err), LSQ_OK);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(s.model_layers, "input"), 0)), 3);
    spec_free(&s);
}

/* An ONNX model is only a path here (read when the job trains); it is a
 * trained float model, so LSQ starts from it: no pretraining by default,
 * distillation from it. */
Test(spec, onnx_model)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"model\":{\"onnx\":\"models/r.onnx\"},\"quant\":{}}", &err), LSQ_OK,
                 "%s", err.message);
    cr_expect_str_eq(s.model_onnx, "models/r.onnx");
    cr_expect_str_eq(s.arch, "");
    cr_expect_null(s.model_layers);
    cr_expect_eq(s.pretrain.enabled, 0);
    cr_expect_eq(s.pretrain.epochs, 0);
    cr_expect_eq(s.distill.enabled, 1);
    json_t *j = spec_to_json(&s);
    json_t *want = json_pack("{s:s}", "onnx", "models/r.onnx");
    cr_expect(json_equal(json_object_get(j, "model"), want));
    cr_expect(json_is_null(json_object_get(j, "pretrain")));
    json_decref(want);
    json_decref(j);
    spec_free(&s);
    /* an explicit pretrain fine-tunes the float model first */
    cr_assert_eq(parse(&s, "{\"model\":{\"onnx\":\"m.onnx\"},\"quant\":{},\"pretrain\":{\"epochs\":2}}",
                       &err), LSQ_OK, "%s", err.message);
    cr_expect(s.pretrain.enabled && s.pretrain.epochs == 2);
    spec_free(&s);
    /* full precision: trains the float model itself */
    cr_assert_eq(parse(&s, "{\"model\":{\"onnx\":\"m.onnx\"}}", &err), LSQ_OK, "%s", err.message);
    cr_expect(!s.pretrain.enabled && !s.distill.enabled && !s.quant.enabled);
    spec_free(&s);
}

/* The example of DESIGN.md "Job spec (v1)", verbatim. */
static const char DESIGN_EXAMPLE[] =
    "{\n"
    "  \"name\": \"fmnist-cnn-w2a2\",\n"
    "  \"model\": {\"arch\": \"cnn-small\"},\n"
    "  \"dataset\": {\"name\": \"fashion-mnist\", \"train_limit\": 0, \"test_limit\": 0},\n"
    "  \"quant\": {\"weight_bits\": 2, \"act_bits\": 2, \"first_last_bits\": 8,\n"
    "            \"granularity\": \"tensor\", \"layers\": {\"fc1\": {\"weight_bits\": 4}}},\n"
    "  \"pretrain\": {\"epochs\": 6, \"lr\": 0.05},\n"
    "  \"train\": {\"epochs\": 3, \"batch_size\": 128, \"lr\": 0.01, \"momentum\": 0.9,\n"
    "            \"weight_decay\": \"auto\", \"schedule\": \"cosine\", \"seed\": 1},\n"
    "  \"distill\": {\"temperature\": 1.0, \"weight\": 0.5},\n"
    "  \"threads\": 2\n"
    "}\n";

Test(spec, design_example_parses)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, DESIGN_EXAMPLE, &err), LSQ_OK, "%s: %s", err.field, err.message);
    cr_expect_str_eq(s.name, "fmnist-cnn-w2a2");
    cr_expect_eq(s.quant.weight_bits, 2);
    cr_expect_eq(s.quant.n_layers, 1);
    cr_expect_eq(s.quant.layers[0].weight_bits, 4);
    cr_expect_eq(s.pretrain.enabled, 1);
    cr_expect_float_eq(s.train.weight_decay, 0.25e-4, 1e-15);
    cr_expect_eq(s.distill.enabled, 1);
    spec_free(&s);
}

/* ---- round trip ----------------------------------------------------------- */

static void expect_same(const lsq_spec *a, const lsq_spec *b, const char *what)
{
    lsq_spec x = *a, y = *b;
    cr_expect((x.model_layers == NULL) == (y.model_layers == NULL), "%s: model kind", what);
    if (x.model_layers && y.model_layers)
        cr_expect(json_equal(x.model_layers, y.model_layers), "%s: model layers differ", what);
    x.model_layers = y.model_layers = NULL;
    cr_expect(memcmp(&x, &y, sizeof x) == 0, "%s: structs differ after the round trip", what);
}

Test(spec, round_trip)
{
    static const char *const texts[] = {
        "{}",
        "{\"resources\":{\"nodes\":2,\"tasks_per_node\":3}}",
        "{\"quant\":{}}",
        "{\"quant\":{\"weight_bits\":8},\"distill\":false,\"pretrain\":null}",
        "{\"name\":\"rt.1\",\"model\":{\"arch\":\"resnet20\"},\"dataset\":{\"name\":\"mnist\","
        "\"path\":\"/tmp/d\",\"train_limit\":100,\"test_limit\":50,\"augment\":{\"crop_pad\":4,"
        "\"flip\":true}},\"quant\":{\"weight_bits\":3,\"act_bits\":4,\"first_last_bits\":\"float\","
        "\"granularity\":\"channel\",\"grad_scale\":0.37,\"init\":\"mse\",\"act_sign\":\"signed\","
        "\"layers\":{\"b\":\"float\",\"a\":{\"weight_bits\":5,\"act_bits\":6,\"act_sign\":\"lsq+\"},"
        "\"c\":{}}},\"pretrain\":{\"epochs\":7,\"batch_size\":64,\"lr\":0.1,\"momentum\":0.5,"
        "\"nesterov\":true,\"weight_decay\":0.0003,\"schedule\":\"constant\",\"warmup_epochs\":1.5,"
        "\"seed\":9007199254740993},\"train\":{\"epochs\":0,\"weight_decay\":\"auto\"},"
        "\"distill\":{\"temperature\":2.5,\"weight\":0.1},\"init\":{\"from\":\"ckpt/a.bin\"},"
        "\"threads\":16,\"checkpoint_every\":5}",
        "{\"model\":{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]},"
        "\"quant\":{\"weight_bits\":2},\"init\":{\"from\":\"job-3\"}}",
        "{\"model\":{\"onnx\":\"models/resnet.onnx\"},\"quant\":{\"weight_bits\":3}}",
        DESIGN_EXAMPLE,
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        lsq_spec a, b;
        lsq_err err;
        cr_assert_eq(parse(&a, texts[i], &err), LSQ_OK, "case %zu: %s: %s", i, err.field,
                     err.message);
        json_t *j = spec_to_json(&a);
        cr_assert_not_null(j, "case %zu: spec_to_json failed", i);
        char *out = json_dumps(j, JSON_COMPACT);
        cr_assert_eq(parse(&b, out, &err), LSQ_OK, "case %zu: %s: %s in %s", i, err.field,
                     err.message, out);
        char what[32];
        snprintf(what, sizeof what, "case %zu", i);
        expect_same(&a, &b, what);
        json_t *j2 = spec_to_json(&b);
        cr_expect(json_equal(j, j2), "case %zu: normalised JSON is not stable", i);
        json_decref(j2);
        json_decref(j);
        free(out);
        spec_free(&a);
        spec_free(&b);
    }
}

Test(spec, to_json_makes_defaults_explicit)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"quant\":{\"weight_bits\":8}}", &err), LSQ_OK);
    json_t *j = spec_to_json(&s);
    cr_expect_float_eq(json_real_value(json_object_get(json_object_get(j, "train"), "lr")),
                       0.001, 1e-15);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "train"),
                                                       "weight_decay")), "auto");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "quant"), "act_bits")), 8);
    cr_expect(json_is_object(json_object_get(j, "pretrain")));
    cr_expect(json_is_object(json_object_get(j, "distill")));
    cr_expect(json_is_null(json_object_get(j, "init")));
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "model"), "arch")),
                     "cnn-small");
    json_decref(j);
    spec_free(&s);
}

Test(spec, to_text_is_short_and_exact)
{
    lsq_spec a, b;
    lsq_err err;
    cr_assert_eq(parse(&a, "{\"quant\":{\"grad_scale\":0.1},"
                           "\"train\":{\"lr\":0.30000000000000004}}", &err), LSQ_OK);
    char *text = spec_to_text(&a, JSON_COMPACT);
    cr_assert_not_null(text);
    cr_assert_eq(parse(&b, text, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(b.train.lr, a.train.lr, "lr %.17g != %.17g", b.train.lr, a.train.lr);
    cr_expect_eq(b.quant.grad_scale_value, 0.1);
    free(text);
    cr_assert_eq(parse(&a, "{}", &err), LSQ_OK);
    text = spec_to_text(&a, JSON_COMPACT);
    cr_expect(strstr(text, "\"momentum\":0.9,") != NULL, "%s", text);
    free(text);
    spec_free(&a);
    spec_free(&b);
}

/* The schema in schema/ must name exactly the keys the validator writes. */
static void expect_same_keys(const json_t *schema_obj, const json_t *value, const char *what)
{
    const json_t *props = json_object_get(schema_obj, "properties");
    cr_assert(json_is_object(props), "%s: schema has no properties", what);
    cr_expect_eq(json_object_size(props), json_object_size(value), "%s: key count", what);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)value, key, v)
        cr_expect_not_null(json_object_get(props, key), "%s: schema lacks %s", what, key);
}

static const json_t *schema_def(const json_t *schema, const char *name)
{
    return json_object_get(json_object_get(schema, "$defs"), name);
}

Test(spec, schema_matches_validator)
{
    json_error_t je;
    json_t *schema = json_load_file("schema/job-spec.schema.json", 0, &je);
    cr_assert_not_null(schema, "schema/job-spec.schema.json: %s (line %d)", je.text, je.line);
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"quant\":{}}", &err), LSQ_OK);
    json_t *j = spec_to_json(&s);
    expect_same_keys(schema, j, "top level");
    expect_same_keys(schema_def(schema, "dataset"), json_object_get(j, "dataset"), "dataset");
    expect_same_keys(schema_def(schema, "augment"),
                     json_object_get(json_object_get(j, "dataset"), "augment"), "augment");
    expect_same_keys(schema_def(schema, "quant"), json_object_get(j, "quant"), "quant");
    expect_same_keys(schema_def(schema, "train"), json_object_get(j, "train"), "train");
    expect_same_keys(schema_def(schema, "distill"), json_object_get(j, "distill"), "distill");
    json_decref(j);
    json_decref(schema);
    spec_free(&s);
}

Test(spec, resources_keep_what_was_given)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"resources\":{\"partition\":\"gpu-a.1\",\"time_min\":30}}",
                       &err), LSQ_OK, "%s", err.message);
    cr_expect(s.resources.given);
    cr_expect_str_eq(s.resources.partition, "gpu-a.1");
    cr_expect_eq(s.resources.time_min, 30);
    cr_expect_eq(s.resources.mem_mb, 0, "left to the operator's default");
    char *t = spec_to_text(&s, JSON_COMPACT);
    cr_assert(strstr(t, "\"resources\":{\"nodes\":1,\"tasks_per_node\":1,\"partition\":"
                        "\"gpu-a.1\",\"time_min\":30}"), "%s", t);
    free(t);
    spec_free(&s);
    cr_assert_eq(parse(&s, "{\"resources\":null}", &err), LSQ_OK);
    cr_expect(!s.resources.given);
    t = spec_to_text(&s, JSON_COMPACT);
    cr_assert(strstr(t, "\"resources\":null"), "%s", t);
    free(t);
    spec_free(&s);
}

Test(spec, load_file)
{
    char path[] = "/tmp/lsq-spec-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *text = "{\"name\":\"from-file\",\"quant\":{\"weight_bits\":3}}";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    lsq_spec s;
    lsq_err err;
    cr_expect_eq(spec_load_file(&s, path, &err), LSQ_OK, "%s", err.message);
    cr_expect_str_eq(s.name, "from-file");
    cr_expect_eq(s.quant.weight_bits, 3);
    spec_free(&s);
    unlink(path);
    cr_expect_eq(spec_load_file(&s, path, &err), LSQ_ERR_IO);
    cr_expect_str_eq(err.field, path);
    spec_free(&s);
}

/* Every example spec in docs/job-spec.md must be valid. */
Test(spec, doc_examples_parse)
{
    FILE *f = fopen("docs/job-spec.md", "rb");
    cr_assert_not_null(f, "docs/job-spec.md not found (run from the repository root)");
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    int examples = 0;
    for (char *p = strstr(doc, "```json\n"); p; p = strstr(p, "```json\n")) {
        p += strlen("```json\n");
        char *end = strstr(p, "```");
        cr_assert_not_null(end, "unterminated json block");
        if (strncmp(p, "{\"error\"", 8) != 0) {
            lsq_spec s;
            lsq_err err;
            lsq_status st = spec_parse(&s, p, (size_t)(end - p), &err);
            cr_expect_eq(st, LSQ_OK, "example %d: %s: %s", examples + 1, err.field, err.message);
            spec_free(&s);
            examples++;
        }
        p = end + 3;
    }
    cr_expect_geq(examples, 5);
}

Test(spec, notify_url_is_an_http_url_or_null)
{
    lsq_spec s;
    lsq_err err;
    cr_assert_eq(parse(&s, "{\"notify_url\":\"https://hooks.example.com/lsq?x=1\"}", &err), LSQ_OK,
                 "%s", err.message);
    cr_expect_str_eq(s.notify_url, "https://hooks.example.com/lsq?x=1");
    json_t *j = spec_to_json(&s);
    cr_expect_str_eq(json_string_value(json_object_get(j, "notify_url")),
                     "https://hooks.example.com/lsq?x=1");
    json_decref(j);
    spec_free(&s);
    cr_assert_eq(parse(&s, "{\"notify_url\":null}", &err), LSQ_OK, "%s", err.message);
    cr_expect_str_eq(s.notify_url, "");
    j = spec_to_json(&s);
    cr_expect(json_is_null(json_object_get(j, "notify_url")));
    json_decref(j);
    spec_free(&s);
    const char *bad[] = {"{\"notify_url\":\"file:///etc/passwd\"}", "{\"notify_url\":\"\"}",
                         "{\"notify_url\":42}", "{\"notify_url\":\"gopher://x/\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(parse(&s, bad[i], &err), LSQ_ERR_INVALID, "%s", bad[i]);
        cr_expect_str_eq(err.field, "notify_url", "%s", bad[i]);
        spec_free(&s);
    }
}
