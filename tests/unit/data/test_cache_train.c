/* Training on a dataset cache: Fashion-MNIST through a cache trains exactly
 * as through its IDX files when normalisation is off, runs (quantized, and
 * exported) with it on, and a colour 100-class cache builds its networks
 * from the cache's shape and classes. */
#include <criterion/criterion.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/spec.h"
#include "data/cache.h"
#include "data/import.h"
#include "deploy/infer.h"
#include "graph/net.h"
#include "train/ckpt.h"
#include "train/train.h"

static char tmp[256];

static void tmp_setup(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/lsq-ctrain-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void tmp_teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_expect_eq(system(cmd), 0);
}

static void fashion_cache(const char *dir)
{
    if (access(LSQ_DEFAULT_DATA_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0)
        cr_skip_test("Fashion-MNIST not installed in %s", LSQ_DEFAULT_DATA_DIR);
    import_opts o;
    import_opts_default(&o);
    lsq_cache c;
    lsq_err err;
    cr_assert_eq(data_import(&c, LSQ_DEFAULT_DATA_DIR, &o, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(cache_write(&c, dir, &err), LSQ_OK, "%s", err.message);
    cache_free(&c);
}

static lsq_status run(const char *text, const char *dir, double *acc, lsq_err *err)
{
    lsq_spec s;
    lsq_err_clear(err);
    cr_assert_eq(spec_parse(&s, text, strlen(text), err), LSQ_OK, "%s: %s", err->field,
                 err->message);
    ev_sink sink;
    ev_sink_init(&sink, -1);
    train_opts o = {&sink, NULL, NULL, 0, NULL};
    lsq_status st = net_check_spec(&s, err);
    if (st == LSQ_OK) st = train_run(&s, dir, &o, acc, err);
    spec_free(&s);
    return st;
}

TestSuite(cache_train, .init = tmp_setup, .fini = tmp_teardown);

Test(cache_train, fashion_mnist_cache_trains_bit_identically, .timeout = 240)
{
    char cache[512], a[512], b[512], spec[1024];
    snprintf(cache, sizeof cache, "%s/fm", tmp);
    snprintf(a, sizeof a, "%s/idx-run", tmp);
    snprintf(b, sizeof b, "%s/cache-run", tmp);
    fashion_cache(cache);
    const char *common = "\"model\":{\"arch\":\"cnn-small\"},\"train\":{\"epochs\":1,\"lr\":0.05,"
                         "\"batch_size\":64,\"seed\":3}";
    double acc_a = -1, acc_b = -2;
    lsq_err err;
    snprintf(spec, sizeof spec,
             "{%s,\"dataset\":{\"train_limit\":1000,\"test_limit\":500,\"augment\":{\"crop_pad\":2,"
             "\"flip\":true}}}", common);
    cr_assert_eq(run(spec, a, &acc_a, &err), LSQ_OK, "%s", err.message);
    snprintf(spec, sizeof spec,
             "{%s,\"dataset\":{\"cache\":\"%s\",\"normalize\":false,\"train_limit\":1000,"
             "\"test_limit\":500,\"augment\":{\"crop_pad\":2,\"flip\":true}}}", common, cache);
    cr_assert_eq(run(spec, b, &acc_b, &err), LSQ_OK, "%s", err.message);
    printf("cnn-small, 1,000 images, 1 epoch: IDX %.4f, cache %.4f\n", acc_a, acc_b);
    cr_expect_eq(acc_a, acc_b, "test accuracy %.6f (IDX) vs %.6f (cache)", acc_a, acc_b);
    lsq_ckpt ca, cb;
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/model.lsqc", a);
    snprintf(pb, sizeof pb, "%s/model.lsqc", b);
    cr_assert_eq(ckpt_load(&ca, pa, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ckpt_load(&cb, pb, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ca.n_params, cb.n_params);
    cr_expect_arr_eq(ca.params, cb.params, ca.n_params * sizeof(float), "the weights differ");
    cr_expect_arr_eq(ca.state, cb.state, ca.n_state * sizeof(float));
    cr_expect(json_equal(json_object_get(ca.header, "layers"), json_object_get(cb.header, "layers")));
    ckpt_free(&ca);
    ckpt_free(&cb);
}

Test(cache_train, normalised_quantized_run_exports, .timeout = 300)
{
    char cache[512], d[512], spec[1024];
    snprintf(cache, sizeof cache, "%s/fm", tmp);
    snprintf(d, sizeof d, "%s/run", tmp);
    fashion_cache(cache);
    snprintf(spec, sizeof spec,
             "{\"model\":{\"arch\":\"cnn-small\"},\"dataset\":{\"cache\":\"%s\",\"train_limit\":1500,"
             "\"test_limit\":500},\"pretrain\":{\"epochs\":1,\"lr\":0.05,\"batch_size\":64},"
             "\"quant\":{\"weight_bits\":4,\"report_ptq\":false},\"train\":{\"epochs\":1,"
             "\"batch_size\":64}}", cache);
    double acc = 0;
    lsq_err err;
    cr_assert_eq(run(spec, d, &acc, &err), LSQ_OK, "%s", err.message);
    printf("cnn-small W4A4 on the normalised cache, 1,500 images: test accuracy %.4f\n", acc);
    cr_expect_gt(acc, 0.6, "test accuracy %.4f", acc);
    char p[700];
    lsq_cache c;
    cr_assert_eq(cache_read(&c, cache, 1, &err), LSQ_OK, "%s", err.message);
    /* the model knows its normalisation */
    snprintf(p, sizeof p, "%s/model.lsqc", d);
    lsq_ckpt ck;
    cr_assert_eq(ckpt_load(&ck, p, &err), LSQ_OK, "%s", err.message);
    const json_t *norm = json_object_get(json_object_get(ck.header, "layers"), "normalize");
    cr_assert(json_is_object(norm), "the checkpoint's layers have no normalize");
    double m = json_number_value(json_array_get(json_object_get(norm, "mean"), 0));
    double s = json_number_value(json_array_get(json_object_get(norm, "std"), 0));
    cr_expect_eq(m, c.mean[0]);
    cr_expect_eq(s, c.std[0]);
    cr_expect(fabs(m - 0.2860) < 1e-3, "Fashion-MNIST's mean is 0.2860, got %f", m);
    cr_expect_eq(json_integer_value(json_object_get(ck.header, "classes")), 10);
    /* the first layer's input quantizer is signed 8-bit */
    lsq_net net;
    cr_assert_eq(ckpt_build_net(&net, &ck, 1, &err), LSQ_OK, "%s", err.message);
    cr_expect(net.norm_on);
    const net_node *conv1 = &net.nodes[1];
    cr_expect(conv1->aq.on && conv1->aq.r.is_signed && conv1->aq.r.bits == 8);
    net_free(&net);
    ckpt_free(&ck);
    /* its step started where every normalised pixel fits: in fp.lsqc's
     * successor the step has trained, so check the initial rule directly */
    lsq_spec sp;
    cr_assert_eq(spec_parse(&sp, spec, strlen(spec), &err), LSQ_OK);
    net_data nd;
    cr_assert_eq(net_spec_data(&sp, &nd, &err), LSQ_OK, "%s", err.message);
    json_t *layers = net_spec_layers_for(&sp, &nd, &err);
    cr_assert_not_null(layers);
    cr_assert_eq(net_build(&net, layers, &sp.quant, 10, 1, &err), LSQ_OK, "%s", err.message);
    net_init_params(&net, 1);
    net_quant_init_weights(&net, QINIT_PAPER);
    int v = net_find_view(&net, "conv1.input.step");
    cr_assert_geq(v, 0);
    float step = net.params[net.views[v].off];
    double want = fmax(m / s / 128.0, (1.0 - m) / s / 127.0);
    cr_expect(fabs(step - want) < 1e-6, "conv1.input.step %g, want %g", step, want);
    net_free(&net);
    json_decref(layers);
    spec_free(&sp);
    cache_free(&c);
    /* both deployed forms take raw pixels and normalise them themselves:
     * model.onnx in its graph, model.lsqm's integer engine in float before
     * its first layer quantizes them. On the test images the integer engine
     * classifies as the float engine does on the loader's normalised batch. */
    struct stat sb;
    snprintf(p, sizeof p, "%s/model.onnx", d);
    cr_expect_eq(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/model.lsqm", d);
    lsqm_model *lm = lsqm_load(p, &err);
    cr_assert_not_null(lm, "no model.lsqm of the normalised net: %s", err.message);
    cr_assert_eq(cache_read(&c, cache, 0, &err), LSQ_OK, "%s", err.message);
    const int n = c.test.n < 500 ? c.test.n : 500;
    snprintf(p, sizeof p, "%s/model.lsqc", d);
    cr_assert_eq(ckpt_load(&ck, p, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ckpt_build_net(&net, &ck, n, &err), LSQ_OK, "%s", err.message);
    float *xn = malloc((size_t)n * 784 * sizeof *xn), *z = malloc((size_t)n * 10 * sizeof *z);
    int32_t *y = malloc((size_t)n * sizeof *y);
    cr_assert(xn && z && y);
    lsq_loader l;
    cr_assert_eq(loader_init(&l, &c.test, n, 0, 1, 0, 0, &err), LSQ_OK, "%s", err.message);
    loader_set_normalize(&l, net.norm_mean, net.norm_std);
    cr_assert_eq(loader_fill(&l, 0, xn, y), n);
    const float *ref = net_forward(&net, xn, n, 0);
    cr_assert_eq(lsqm_predict(lm, c.test.pixels, n, z, NULL, 2, &err), LSQ_OK, "%s", err.message);
    int agree = 0;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        int a = 0, b = 0;
        for (int k = 1; k < 10; k++) {
            if (ref[i * 10 + k] > ref[i * 10 + a]) a = k;
            if (z[i * 10 + k] > z[i * 10 + b]) b = k;
            double df = fabs((double)ref[i * 10 + k] - z[i * 10 + k]);
            if (df > worst) worst = df;
        }
        agree += a == b;
    }
    printf("normalised cnn-small W4A4: integer and float engines agree on %d/%d images, max "
           "|dlogit| %.3g\n", agree, n, worst);
    cr_expect_geq(agree, (int)ceil(0.99 * n), "the integer engine agrees on %d/%d", agree, n);
    loader_free(&l);
    free(xn);
    free(z);
    free(y);
    net_free(&net);
    ckpt_free(&ck);
    cache_free(&c);
    lsqm_free(lm);
}

Test(cache_train, colour_hundred_classes_shape_from_the_cache, .timeout = 120)
{
    char cache[512], d[512], spec[2048];
    snprintf(cache, sizeof cache, "%s/c100", tmp);
    snprintf(d, sizeof d, "%s/run", tmp);
    lsq_cache c;
    lsq_err err;
    cr_assert_eq(cache_init(&c, 3, 8, 8, 100, "npz", &err), LSQ_OK);
    cr_assert_eq(cache_alloc_split(&c, &c.train, 400, &err), LSQ_OK);
    cr_assert_eq(cache_alloc_split(&c, &c.test, 100, &err), LSQ_OK);
    lsq_dataset *sp[2] = {&c.train, &c.test};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < sp[s]->n; i++) {
            int l = (i * 37 + s) % 100;
            sp[s]->labels[i] = l;
            for (int k = 0; k < 192; k++)
                sp[s]->pixels[(size_t)i * 192 + k] = (uint8_t)((l * 5 + k * (l % 7 + 1)) & 0xff);
        }
    cr_assert_eq(cache_finish(&c, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(cache_write(&c, cache, &err), LSQ_OK, "%s", err.message);
    cache_free(&c);
    for (int a = 0; a < 3; a++) {
        const char *arch[] = {"mlp", "cnn-small", "resnet20"};
        snprintf(spec, sizeof spec, "{\"model\":{\"arch\":\"%s\"},\"dataset\":{\"cache\":\"%s\"}}",
                 arch[a], cache);
        lsq_spec s;
        cr_assert_eq(spec_parse(&s, spec, strlen(spec), &err), LSQ_OK, "%s", err.message);
        cr_expect_eq(net_check_spec(&s, &err), LSQ_OK, "%s: %s", arch[a], err.message);
        spec_free(&s);
    }
    snprintf(spec, sizeof spec,
             "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"cache\":\"%s\",\"augment\":{\"crop_pad\":1,"
             "\"flip\":true}},\"quant\":{\"weight_bits\":2},\"train\":{\"epochs\":1,"
             "\"batch_size\":50}}", cache);
    double acc = 0;
    cr_assert_eq(run(spec, d, &acc, &err), LSQ_OK, "%s", err.message);
    char p[700];
    /* lsq eval of its model.lsqm (integer engine) reads the cache given with
     * --data; without it the built-in Fashion-MNIST (1x28x28) is not the
     * model's input and is refused, naming both shapes */
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin, "LSQ_BIN is not set");
    char cmd[2200], out[4096];
    snprintf(cmd, sizeof cmd, "'%s' eval '%s/model.lsqm' --data '%s' 2>&1", bin, d, cache);
    FILE *pf = popen(cmd, "r");
    cr_assert(pf);
    size_t got = fread(out, 1, sizeof out - 1, pf);
    out[got] = 0;
    cr_expect_eq(pclose(pf), 0, "%s", out);
    cr_expect(strstr(out, "engine integer") && strstr(out, "images 100"), "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s/model.lsqm' 2>&1", bin, d);
    pf = popen(cmd, "r");
    cr_assert(pf);
    got = fread(out, 1, sizeof out - 1, pf);
    out[got] = 0;
    cr_expect_neq(pclose(pf), 0, "%s", out);
    cr_expect(strstr(out, "3x8x8") && strstr(out, "1x28x28"), "%s", out);
    snprintf(p, sizeof p, "%s/model.lsqc", d);
    lsq_ckpt ck;
    cr_assert_eq(ckpt_load(&ck, p, &err), LSQ_OK, "%s", err.message);
    lsq_net net;
    cr_assert_eq(ckpt_build_net(&net, &ck, 1, &err), LSQ_OK, "%s", err.message);
    cr_expect_eq(net.classes, 100);
    cr_expect_eq(net.nodes[0].c, 3);
    cr_expect_eq(net.nodes[0].h, 8);
    net_free(&net);
    ckpt_free(&ck);
    /* a layer list whose input does not fit fails, naming both shapes */
    snprintf(spec, sizeof spec,
             "{\"model\":{\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"},{\"type\":"
             "\"linear\",\"out\":100}]},\"dataset\":{\"cache\":\"%s\"}}", cache);
    cr_expect_eq(run(spec, d, &acc, &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "model.input");
    cr_expect(strstr(err.message, "1x28x28") && strstr(err.message, "3x8x8"), "%s", err.message);
    /* without an input it takes the cache's; 10 outputs for 100 classes do not fit */
    snprintf(spec, sizeof spec,
             "{\"model\":{\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]},"
             "\"dataset\":{\"cache\":\"%s\"}}", cache);
    cr_expect_eq(run(spec, d, &acc, &err), LSQ_ERR_INVALID);
    cr_expect(strstr(err.message, "100 classes"), "%s", err.message);
    /* a missing cache is an error on dataset.cache when the spec is checked */
    snprintf(spec, sizeof spec, "{\"dataset\":{\"cache\":\"%s/none\"}}", tmp);
    cr_expect_eq(run(spec, d, &acc, &err), LSQ_ERR_IO);
    cr_expect_str_eq(err.field, "dataset.cache");
}
