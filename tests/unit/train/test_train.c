/* Training end to end on the real dataset: a smoke test that must learn, the
 * LSQ fine-tuning margin, checkpoint resume exactness through the real
 * `lsq train` process (SIGTERM mid-run, then run again), and a job on an
 * ONNX model. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit/ort.h"
#include "core/spec.h"
#include "data/cache.h"
#include "deploy/infer.h"
#include "graph/onnx_import.h"
#include "train/ckpt.h"
#include "train/train.h"

static char *make_dir(void)
{
    char *d = strdup("/tmp/lsq-train-XXXXXX");
    cr_assert(mkdtemp(d));
    return d;
}

static void rm_rf(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_expect_eq(system(cmd), 0);
}

static void parse_spec(lsq_spec *s, const char *text)
{
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(spec_parse(s, text, strlen(text), &err), LSQ_OK, "%s: %s", err.field, err.message);
}

static double run(const char *text, const char *dir)
{
    lsq_spec s;
    parse_spec(&s, text);
    ev_sink sink;
    ev_sink_init(&sink, -1);
    train_opts o = {&sink, NULL, NULL, 0, NULL};
    lsq_err err;
    lsq_err_clear(&err);
    double acc = 0;
    lsq_status st = train_run(&s, dir, &o, &acc, &err);
    cr_assert_eq(st, LSQ_OK, "%s", err.message);
    spec_free(&s);
    return acc;
}

/* Full precision on a 2,000-image subset must learn: 2 epochs of cnn-small
 * reach 75% on 1,000 test images (a constant guess is 10%). */
Test(train, smoke_cnn_small_learns, .timeout = 240)
{
    char *d = make_dir();
    double acc = run("{\"name\":\"smoke\",\"model\":{\"arch\":\"cnn-small\"},"
                     "\"dataset\":{\"train_limit\":2000,\"test_limit\":1000},"
                     "\"train\":{\"epochs\":2,\"lr\":0.05,\"batch_size\":64}}", d);
    printf("smoke: cnn-small FP, 2,000 images, 2 epochs: test accuracy %.4f\n", acc);
    cr_expect_geq(acc, 0.75, "test accuracy %.4f below 0.75", acc);
    rm_rf(d);
    free(d);
}

/* LSQ at W4A4 fine-tuned from the model above must stay within 2 points of
 * the full-precision model it started from (same subset). */
Test(train, smoke_w4a4_keeps_accuracy, .timeout = 300)
{
    char *d = make_dir();
    char spec[1024];
    snprintf(spec, sizeof spec,
             "{\"name\":\"smoke-q\",\"model\":{\"arch\":\"cnn-small\"},"
             "\"dataset\":{\"train_limit\":2000,\"test_limit\":1000},"
             "\"pretrain\":{\"epochs\":3,\"lr\":0.05,\"batch_size\":64},"
             "\"quant\":{\"weight_bits\":4},\"train\":{\"epochs\":2,\"batch_size\":64}}");
    double q = run(spec, d);
    lsq_ckpt c;
    lsq_err err;
    char fp[512];
    snprintf(fp, sizeof fp, "%s/fp.lsqc", d);
    cr_assert_eq(ckpt_load(&c, fp, &err), LSQ_OK, "%s", err.message);
    double fpacc = json_real_value(json_object_get(c.header, "test_acc"));
    ckpt_free(&c);
    printf("smoke: W4A4 %.4f vs FP %.4f\n", q, fpacc);
    cr_expect_gt(fpacc, 0.7);
    cr_expect_geq(q, fpacc - 0.02, "W4A4 %.4f lost more than 2 points against FP %.4f", q, fpacc);
    rm_rf(d);
    free(d);
}

/* Runs `lsq train`, SIGTERMs it once `needle` appears `count` times in its
 * event file, and returns the exit status. */
static int run_and_stop(const char *spec_path, const char *out, const char *events,
                        const char *needle, int count, int sig)
{
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin, "LSQ_BIN is not set (run through make test)");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        execl(bin, bin, "train", spec_path, "--out", out, "--events", events, "--quiet",
              (char *)NULL);
        _exit(127);
    }
    int signalled = 0;
    for (int i = 0; i < 6000 && !signalled; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(events, "r");
        if (!f) continue;
        char line[8192];
        int seen = 0;
        while (fgets(line, sizeof line, f))
            if (strstr(line, needle)) seen++;
        fclose(f);
        if (seen >= count) {
            kill(pid, sig);
            signalled = 1;
        }
        int status;
        if (!signalled && waitpid(pid, &status, WNOHANG) == pid) return WEXITSTATUS(status);
    }
    int status;
    waitpid(pid, &status, 0);
    if (sig == SIGKILL) return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    cr_assert(WIFEXITED(status), "lsq train did not exit normally");
    return WEXITSTATUS(status);
}

static int run_to_end(const char *spec_path, const char *out, const char *events)
{
    const char *bin = getenv("LSQ_BIN");
    pid_t pid = fork();
    if (pid == 0) {
        execl(bin, bin, "train", spec_path, "--out", out, "--events", events, "--quiet",
              (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_same_model(const char *a_dir, const char *b_dir)
{
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/model.lsqc", a_dir);
    snprintf(b, sizeof b, "%s/model.lsqc", b_dir);
    lsq_ckpt ca, cb;
    lsq_err err;
    cr_assert_eq(ckpt_load(&ca, a, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ckpt_load(&cb, b, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ca.n_params, cb.n_params);
    size_t diff = 0;
    for (size_t i = 0; i < ca.n_params; i++) diff += memcmp(&ca.params[i], &cb.params[i], 4) != 0;
    cr_expect_eq(diff, 0, "%zu of %zu parameters differ after resume", diff, ca.n_params);
    cr_assert_eq(ca.n_state, cb.n_state);
    if (ca.n_state) /* an mlp has no batch-norm state at all */
        cr_expect_eq(memcmp(ca.state, cb.state, ca.n_state * sizeof(float)), 0,
                     "batch-norm statistics differ after resume");
    ckpt_free(&ca);
    ckpt_free(&cb);
}

static int event_is(const json_t *e, const char *type)
{
    const char *t = json_string_value(json_object_get(e, "type"));
    return t && strcmp(t, type) == 0;
}

/* The last "epoch" event of each (phase, epoch) in an events file, as an
 * object keyed "phase/epoch" (owned by the caller). */
static json_t *last_epoch_events(const char *events)
{
    FILE *f = fopen(events, "r");
    cr_assert(f, "no events file %s", events);
    json_t *by = json_object();
    char line[65536];
    while (fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        if (!e) continue;
        if (event_is(e, "epoch")) {
            char key[64];
            snprintf(key, sizeof key, "%s/%lld", json_string_value(json_object_get(e, "phase")),
                     (long long)json_integer_value(json_object_get(e, "epoch")));
            json_object_set(by, key, e);
        }
        json_decref(e);
    }
    fclose(f);
    return by;
}

/* A resumed run reports the epochs of the uninterrupted one: the same
 * training loss and accuracy (the stopped epoch's running sums travel in the
 * checkpoint) and the same test figures; only the timings differ. */
static void expect_same_epochs(const char *a_events, const char *b_events)
{
    json_t *a = last_epoch_events(a_events), *b = last_epoch_events(b_events);
    cr_assert_gt(json_object_size(a), 0, "no epoch events in %s", a_events);
    cr_expect_eq(json_object_size(a), json_object_size(b), "%zu epochs reported, resumed %zu",
                 json_object_size(a), json_object_size(b));
    const char *key;
    json_t *ea;
    json_object_foreach(a, key, ea) {
        json_t *eb = json_object_get(b, key);
        cr_expect(eb, "the resumed run has no epoch event %s", key);
        if (!eb) continue;
        static const char *const fields[] = {"train_loss", "train_acc", "test_acc", "test_loss"};
        for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
            double va = json_number_value(json_object_get(ea, fields[i]));
            double vb = json_number_value(json_object_get(eb, fields[i]));
            cr_expect_eq(va, vb, "epoch %s: %s %.17g uninterrupted, %.17g resumed", key, fields[i],
                         va, vb);
        }
    }
    json_decref(a);
    json_decref(b);
}

/* The "checkpoint" events of an events file whose step is `step`. */
static int checkpoints_at_step(const char *events, int step)
{
    FILE *f = fopen(events, "r");
    cr_assert(f);
    char line[65536];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        if (!e) continue;
        n += event_is(e, "checkpoint") &&
             json_integer_value(json_object_get(e, "step")) == step;
        json_decref(e);
    }
    fclose(f);
    return n;
}

/* Runs the spec to the end in one folder; in another, stops it with `sig`
 * once `needle` has appeared `count` times in its events, runs it again to
 * the end, and expects the same model and epochs. ckpt_step >= 0: the stop
 * must also have written a checkpoint at that step. */
static void resume_case(const char *spec_text, const char *needle, int count, int sig,
                        int ckpt_step)
{
    char *d = make_dir();
    char spec_path[512], a[512], b[512], ea[512], eb[512];
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", d);
    snprintf(a, sizeof a, "%s/a", d);
    snprintf(b, sizeof b, "%s/b", d);
    snprintf(ea, sizeof ea, "%s/a.jsonl", d);
    snprintf(eb, sizeof eb, "%s/b.jsonl", d);
    FILE *f = fopen(spec_path, "w");
    fputs(spec_text, f);
    fclose(f);
    cr_assert_eq(run_to_end(spec_path, a, ea), 0, "uninterrupted run failed");
    int rc = run_and_stop(spec_path, b, eb, needle, count, sig);
    if (sig == SIGTERM)
        cr_assert_eq(rc, 3, "a stopped run exits 3 after writing its checkpoint, got %d", rc);
    else
        cr_assert(rc == 128 + SIGKILL || rc == 0, "killed run: status %d", rc);
    if (ckpt_step >= 0)
        cr_assert_eq(checkpoints_at_step(eb, ckpt_step), 1,
                     "the stop did not write a checkpoint at step %d", ckpt_step);
    cr_assert_eq(run_to_end(spec_path, b, eb), 0, "resumed run failed");
    expect_same_model(a, b);
    expect_same_epochs(ea, eb);
    rm_rf(d);
    free(d);
}

Test(train, resume_is_exact_full_precision, .timeout = 240)
{
    /* stopped after its first epoch event (mid-run, wherever the signal lands) */
    resume_case("{\"name\":\"r\",\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":3000,"
                "\"test_limit\":200,\"augment\":{\"crop_pad\":2,\"flip\":true}},"
                "\"train\":{\"epochs\":3,\"batch_size\":50,\"lr\":0.05},\"threads\":2}",
                "\"type\":\"epoch\"", 1, SIGTERM, -1);
}

Test(train, resume_from_a_stop_during_evaluation, .timeout = 300)
{
    /* SIGTERM as the first epoch's last step is reported: the signal lands in
     * that epoch's evaluation of 10,000 test images (seconds, against a
     * 20 ms poll). The run stops there instead of finishing the pass, and
     * its checkpoint resumes at the evaluation (step 10 of 10) with the
     * epoch's training sums. */
    resume_case("{\"name\":\"re\",\"model\":{\"arch\":\"cnn-small\"},\"dataset\":"
                "{\"train_limit\":500,\"test_limit\":10000},"
                "\"train\":{\"epochs\":2,\"batch_size\":50,\"lr\":0.05},\"threads\":2}",
                "\"epoch\":1,\"epochs\":2,\"step\":10,\"steps\":10", 1, SIGTERM, 10);
}

Test(train, resume_after_pretraining_ends, .timeout = 300)
{
    /* killed (SIGKILL: no checkpoint of its own) as the full-precision model
     * is written: the LSQ phase starts from it whether or not its first
     * checkpoint was reached */
    resume_case("{\"name\":\"rp\",\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":1000,"
                "\"test_limit\":200},\"pretrain\":{\"epochs\":1,\"batch_size\":50},"
                "\"quant\":{\"weight_bits\":2},\"train\":{\"epochs\":1,\"batch_size\":50},\"threads\":2}",
                "\"name\":\"fp.lsqc\"", 1, SIGKILL, -1);
}

/* The test figures of the last "done" event of an events file and of its
 * last "epoch" event; returns 0 when it has no done event. */
static int done_figures(const char *events, double *acc, double *loss, double *epoch_acc,
                        double *epoch_loss)
{
    FILE *f = fopen(events, "r");
    cr_assert(f, "no events file %s", events);
    char line[65536];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        if (!e) continue;
        double *a = NULL, *l = NULL;
        if (event_is(e, "done")) a = acc, l = loss, found = 1;
        else if (event_is(e, "epoch")) a = epoch_acc, l = epoch_loss;
        if (a) {
            *a = json_number_value(json_object_get(e, "test_acc"));
            *l = json_number_value(json_object_get(e, "test_loss"));
        }
        json_decref(e);
    }
    fclose(f);
    return found;
}

Test(train, a_finished_run_reports_its_last_evaluation_and_rescores_from_disk, .timeout = 240)
{
    /* The done event carries the last epoch's test figures (the network
     * that evaluation scored is the final model). Run again, the finished
     * run reads model.lsqc back, scores it and exports it again: the same
     * figures, from a pass over the test set of its own. */
    char *d = make_dir();
    char spec_path[512], out[512], e1[512], e2[512];
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", d);
    snprintf(out, sizeof out, "%s/run", d);
    snprintf(e1, sizeof e1, "%s/1.jsonl", d);
    snprintf(e2, sizeof e2, "%s/2.jsonl", d);
    FILE *f = fopen(spec_path, "w");
    fputs("{\"name\":\"fin\",\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":1000,"
          "\"test_limit\":300},\"pretrain\":{\"epochs\":1,\"batch_size\":50},"
          "\"quant\":{\"weight_bits\":2},\"train\":{\"epochs\":1,\"batch_size\":50},"
          "\"threads\":2}",
          f);
    fclose(f);
    cr_assert_eq(run_to_end(spec_path, out, e1), 0, "the run failed");
    double acc1 = -1, loss1 = -1, eacc = -2, eloss = -2;
    cr_assert(done_figures(e1, &acc1, &loss1, &eacc, &eloss), "no done event");
    cr_expect_eq(acc1, eacc, "done test_acc %.17g, last epoch's %.17g", acc1, eacc);
    cr_expect_eq(loss1, eloss, "done test_loss %.17g, last epoch's %.17g", loss1, eloss);
    cr_expect_gt(acc1, 0.3, "test accuracy %.4f", acc1);
    cr_assert_eq(run_to_end(spec_path, out, e2), 0, "running the finished run again failed");
    double acc2 = -1, loss2 = -1, unused_a = -3, unused_l = -3;
    cr_assert(done_figures(e2, &acc2, &loss2, &unused_a, &unused_l),
              "the second run has no done event");
    cr_expect_eq(unused_a, -3, "the second run trained an epoch again");
    cr_expect_eq(acc2, acc1, "rescored test_acc %.17g, first %.17g", acc2, acc1);
    cr_expect_eq(loss2, loss1, "rescored test_loss %.17g, first %.17g", loss2, loss1);
    rm_rf(d);
    free(d);
}

Test(train, resume_is_exact_lsq_phase, .timeout = 300)
{
    /* stopped during LSQ fine-tuning: the steps, momentum and BN state resume */
    resume_case("{\"name\":\"rq\",\"model\":{\"arch\":\"cnn-small\"},\"dataset\":{\"train_limit\":1000,"
                "\"test_limit\":200},\"pretrain\":{\"epochs\":1,\"batch_size\":50},"
                "\"quant\":{\"weight_bits\":2},\"train\":{\"epochs\":2,\"batch_size\":50},\"threads\":2}",
                "\"phase\":\"lsq\",\"epoch\":1,", 3, SIGTERM, -1);
}

/* The log event "post-training quantization": its test figures (-1 when
 * absent) and the number of "epoch" events of the lsq phase before it. */
static int ptq_figures(const char *events, double *acc, double *loss, int *lsq_epochs_before,
                       int *lsq_epochs)
{
    FILE *f = fopen(events, "r");
    cr_assert(f, "no events file %s", events);
    char line[65536];
    int found = 0;
    *lsq_epochs = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        if (!e) continue;
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *ph = json_string_value(json_object_get(e, "phase"));
        if (event_is(e, "log") && msg && !strcmp(msg, "post-training quantization")) {
            *acc = json_number_value(json_object_get(e, "test_acc"));
            *loss = json_number_value(json_object_get(e, "test_loss"));
            *lsq_epochs_before = *lsq_epochs;
            found++;
        } else if (event_is(e, "epoch") && ph && !strcmp(ph, "lsq")) {
            (*lsq_epochs)++;
        }
        json_decref(e);
    }
    fclose(f);
    return found;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

/* quant.method "ptq": no training; the calibrated network is the model.
 * At 8 bits (first/last too) calibration alone must stay within 2 points of
 * the float model; at 2 bits it must still be far above chance. */
Test(train, ptq_calibrates_without_training, .timeout = 300)
{
    char *d = make_dir();
    char fp_spec[512], fp_out[512], fp_ev[512], path[1024];
    snprintf(fp_spec, sizeof fp_spec, "%s/fp.json", d);
    snprintf(fp_out, sizeof fp_out, "%s/fp", d);
    snprintf(fp_ev, sizeof fp_ev, "%s/fp.jsonl", d);
    write_text(fp_spec, "{\"name\":\"fp\",\"model\":{\"arch\":\"cnn-small\"},\"dataset\":"
                        "{\"train_limit\":2000,\"test_limit\":1000},\"quant\":null,"
                        "\"train\":{\"epochs\":2,\"lr\":0.05,\"batch_size\":64},\"threads\":2}");
    cr_assert_eq(run_to_end(fp_spec, fp_out, fp_ev), 0, "the float run failed");
    double fpacc = -1, fploss, ea, el;
    cr_assert(done_figures(fp_ev, &fpacc, &fploss, &ea, &el));
    static const int bits[] = {8, 2};
    for (int i = 0; i < 2; i++) {
        char spec[1024], sp[512], out[512], ev[512];
        snprintf(sp, sizeof sp, "%s/p%d.json", d, bits[i]);
        snprintf(out, sizeof out, "%s/p%d", d, bits[i]);
        snprintf(ev, sizeof ev, "%s/p%d.jsonl", d, bits[i]);
        snprintf(spec, sizeof spec,
                 "{\"name\":\"p\",\"model\":{\"arch\":\"cnn-small\"},\"dataset\":"
                 "{\"train_limit\":2000,\"test_limit\":1000},\"init\":{\"from\":\"%s/model.lsqc\"},"
                 "\"quant\":{\"weight_bits\":%d,\"first_last_bits\":%d,\"method\":\"ptq\","
                 "\"calibration_images\":200},\"threads\":2}",
                 fp_out, bits[i], 8);
        write_text(sp, spec);
        cr_assert_eq(run_to_end(sp, out, ev), 0, "the PTQ run at %d bits failed", bits[i]);
        double pacc = -1, ploss = -1, acc = -2, loss = -2, eacc = -3, eloss = -3;
        int before = -1, epochs = -1;
        cr_assert_eq(ptq_figures(ev, &pacc, &ploss, &before, &epochs), 1, "no PTQ figure");
        cr_assert(done_figures(ev, &acc, &loss, &eacc, &eloss), "no done event");
        cr_expect_eq(epochs, 0, "a PTQ job trained %d LSQ epochs", epochs);
        cr_expect_eq(eacc, -3, "a PTQ job reported an epoch");
        cr_expect_eq(acc, pacc, "done test_acc %.17g, PTQ's %.17g", acc, pacc);
        cr_expect_eq(loss, ploss, "done test_loss %.17g, PTQ's %.17g", loss, ploss);
        printf("ptq: cnn-small W%dA%d %.4f (float %.4f)\n", bits[i], bits[i], pacc, fpacc);
        if (bits[i] == 8)
            cr_expect_geq(pacc, fpacc - 0.02, "W8A8 PTQ %.4f vs float %.4f", pacc, fpacc);
        else
            cr_expect_geq(pacc, 0.3, "W2A2 PTQ %.4f", pacc);
        static const char *const files[] = {"model.lsqc", "model.lsqm", "model.onnx"};
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/%s", out, files[k]);
            cr_expect_eq(access(path, R_OK), 0, "%s is missing", path);
        }
    }
    rm_rf(d);
    free(d);
}

/* An LSQ job scores the PTQ model first (quant.report_ptq, on by default)
 * before its first epoch, and LSQ's result is bit for bit the same as
 * without that report. */
Test(train, ptq_report_leaves_lsq_unchanged, .timeout = 300)
{
    char *d = make_dir();
    double acc[2], loss[2];
    for (int r = 0; r < 2; r++) {
        char spec[1024], sp[512], out[512], ev[512];
        snprintf(sp, sizeof sp, "%s/s%d.json", d, r);
        snprintf(out, sizeof out, "%s/r%d", d, r);
        snprintf(ev, sizeof ev, "%s/r%d.jsonl", d, r);
        snprintf(spec, sizeof spec,
                 "{\"name\":\"rp\",\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":1000,"
                 "\"test_limit\":300},\"pretrain\":{\"epochs\":1,\"batch_size\":50},"
                 "\"quant\":{\"weight_bits\":2,\"report_ptq\":%s},"
                 "\"train\":{\"epochs\":1,\"batch_size\":50},\"threads\":2}",
                 r ? "false" : "true");
        write_text(sp, spec);
        cr_assert_eq(run_to_end(sp, out, ev), 0, "run %d failed", r);
        double ea, el, pacc = -1, ploss = -1;
        int before = -1, epochs = -1;
        cr_assert(done_figures(ev, &acc[r], &loss[r], &ea, &el));
        int n = ptq_figures(ev, &pacc, &ploss, &before, &epochs);
        cr_expect_eq(n, r ? 0 : 1, "run %d: %d PTQ reports", r, n);
        if (!r) {
            cr_expect_eq(before, 0, "the PTQ figure came after %d LSQ epochs", before);
            cr_expect_eq(epochs, 1);
            cr_expect(pacc > 0 && pacc <= 1, "PTQ test_acc %g", pacc);
            printf("ptq report: mlp W2A2 PTQ %.4f, LSQ %.4f\n", pacc, acc[r]);
        }
    }
    cr_expect_eq(acc[0], acc[1], "LSQ test_acc %.17g with the report, %.17g without", acc[0],
                 acc[1]);
    cr_expect_eq(loss[0], loss[1], "LSQ test_loss %.17g with the report, %.17g without",
                 loss[0], loss[1]);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/r0", d);
    snprintf(b, sizeof b, "%s/r1", d);
    expect_same_model(a, b);
    rm_rf(d);
    free(d);
}

/* A W4A4 run of a MobileNetV2-style layer list (grouped convs, ReLU6 as
 * clip, windowed and padded pooling, concat) through the real `lsq train`:
 * it trains and finishes ("done"); model.lsqc holds the model, model.lsqm
 * the packed model, which the integer engine loads, and model.onnx the ONNX
 * graph: both deployed forms carry every layer kind, so nothing is skipped. */
Test(train, a_net_of_every_layer_kind_deploys_both_forms, .timeout = 240)
{
    char *d = make_dir();
    char spec_path[512], events[512], out[512], p[600];
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", d);
    snprintf(events, sizeof events, "%s/events.jsonl", d);
    snprintf(out, sizeof out, "%s/run", d);
    FILE *f = fopen(spec_path, "w");
    cr_assert_not_null(f);
    fputs("{\"name\":\"mbv2\",\"model\":{\"input\":[1,28,28],\"layers\":["
          "{\"type\":\"conv2d\",\"name\":\"stem\",\"out\":8,\"kernel\":3,\"stride\":2,\"pad\":1,\"bias\":false},"
          "{\"type\":\"batchnorm\",\"name\":\"bn0\"},{\"type\":\"clip\",\"name\":\"r0\",\"min\":0,\"max\":6},"
          "{\"type\":\"conv2d\",\"name\":\"dw\",\"out\":8,\"kernel\":3,\"pad\":1,\"groups\":8,\"bias\":false},"
          "{\"type\":\"batchnorm\",\"name\":\"bn1\"},{\"type\":\"clip\",\"name\":\"r1\",\"min\":0,\"max\":6},"
          "{\"type\":\"conv2d\",\"name\":\"pw\",\"out\":8,\"kernel\":1,\"bias\":false},"
          "{\"type\":\"batchnorm\",\"name\":\"bn2\"},"
          "{\"type\":\"add\",\"name\":\"res\",\"inputs\":[\"bn2\",\"r0\"]},"
          "{\"type\":\"maxpool\",\"name\":\"mp\",\"input\":\"r0\",\"kernel\":3,\"stride\":1,\"pad\":1},"
          "{\"type\":\"concat\",\"name\":\"cat\",\"inputs\":[\"res\",\"mp\"]},"
          "{\"type\":\"avgpool\",\"name\":\"ap\",\"kernel\":2},"
          "{\"type\":\"conv2d\",\"name\":\"head\",\"out\":16,\"kernel\":1},"
          "{\"type\":\"leakyrelu\"},{\"type\":\"avgpool\"},"
          "{\"type\":\"linear\",\"name\":\"fc\",\"out\":10}]},"
          "\"dataset\":{\"train_limit\":256,\"test_limit\":128},"
          "\"pretrain\":{\"epochs\":1,\"batch_size\":64},\"quant\":{\"weight_bits\":4},"
          "\"train\":{\"epochs\":1,\"batch_size\":64},\"threads\":2}",
          f);
    fclose(f);
    cr_assert_eq(run_to_end(spec_path, out, events), 0, "lsq train failed");
    snprintf(p, sizeof p, "%s/model.lsqc", out);
    cr_expect_eq(access(p, F_OK), 0, "no model.lsqc");
    snprintf(p, sizeof p, "%s/model.lsqm", out);
    lsq_err err;
    lsqm_model *m = lsqm_load(p, &err);
    cr_expect_not_null(m, "model.lsqm: %s", err.message);
    lsqm_free(m);
    snprintf(p, sizeof p, "%s/model.onnx", out);
    cr_expect_eq(access(p, F_OK), 0, "no model.onnx");
    FILE *ev = fopen(events, "r");
    cr_assert_not_null(ev);
    char line[65536];
    int done = 0, errors = 0, skipped = 0, artifacts = 0, onnx = 0, lsqm = 0;
    while (fgets(line, sizeof line, ev)) {
        json_t *e = json_loads(line, 0, NULL);
        if (!e) continue;
        done += event_is(e, "done");
        errors += event_is(e, "error");
        const char *art = json_string_value(json_object_get(e, "artifact"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        if (event_is(e, "log") && art && msg) {
            cr_expect(0, "an artifact was skipped: %s", msg);
            skipped++;
        }
        if (event_is(e, "artifact")) {
            const char *name = json_string_value(json_object_get(e, "name"));
            onnx += strcmp(name, "model.onnx") == 0;
            lsqm += strcmp(name, "model.lsqm") == 0;
            artifacts++;
        }
        json_decref(e);
    }
    fclose(ev);
    cr_expect_eq(done, 1);
    cr_expect_eq(errors, 0);
    cr_expect_eq(skipped, 0, "no artifact is skipped");
    cr_expect_eq(onnx, 1, "an artifact event for model.onnx");
    cr_expect_eq(lsqm, 1, "an artifact event for model.lsqm");
    cr_expect_gt(artifacts, 1, "the checkpoints are still artifacts");
    rm_rf(d);
    free(d);
}

/* ---- a job on an ONNX model ---- */

/* A dataset cache of 3x16x16 images in 10 classes (the MobileNetV2-style
 * fixture's input): a bright square whose place is the class, on noise. */
static void write_cache_3x16(const char *dir)
{
    lsq_cache c;
    lsq_err err;
    cr_assert_eq(cache_init(&c, 3, 16, 16, 10, "npz", &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(cache_alloc_split(&c, &c.train, 256, &err), LSQ_OK);
    cr_assert_eq(cache_alloc_split(&c, &c.test, 64, &err), LSQ_OK);
    lsq_dataset *sp[2] = {&c.train, &c.test};
    unsigned r = 17;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < sp[s]->n; i++) {
            const int l = (i * 7 + s) % 10, y0 = (l / 5) * 8, x0 = (l % 5) * 3;
            sp[s]->labels[i] = l;
            for (int k = 0; k < 3 * 256; k++) {
                const int y = (k % 256) / 16, x = k % 16;
                r = r * 1103515245u + 12345u;
                const int on = y >= y0 && y < y0 + 8 && x >= x0 && x < x0 + 3;
                sp[s]->pixels[(size_t)i * 768 + k] = (uint8_t)(on ? 200 + (r >> 28) : (r >> 26));
            }
        }
    cr_assert_eq(cache_finish(&c, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(cache_write(&c, dir, &err), LSQ_OK, "%s", err.message);
    cache_free(&c);
}

/* The PyTorch-exported MobileNetV2-style model (depthwise convs, ReLU6 as
 * clip, inverted residuals) fine-tuned at W4A4 by the real `lsq train` on a
 * normalised cache: model.onnx and model.lsqm are written and announced;
 * onnxruntime runs model.onnx on the test images (pixels / 255), and the
 * integer engine model.lsqm on the raw pixels, as lsq's float engine runs
 * model.lsqc on them normalised. */
Test(train, imported_mobilenet_writes_model_onnx, .timeout = 240)
{
    char *d = make_dir();
    char cache[512], spec_path[512], events[512], out[512], p[600];
    snprintf(cache, sizeof cache, "%s/cache", d);
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", d);
    snprintf(events, sizeof events, "%s/events.jsonl", d);
    snprintf(out, sizeof out, "%s/run", d);
    write_cache_3x16(cache);
    FILE *f = fopen(spec_path, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "{\"name\":\"mbv2-onnx\",\"model\":{\"onnx\":"
            "\"tests/fixtures/onnx/mobilenet_op13_eval.onnx\"},\"dataset\":{\"cache\":\"%s\"},"
            "\"quant\":{\"weight_bits\":4,\"granularity\":\"channel\",\"report_ptq\":false},"
            "\"train\":{\"epochs\":1,\"batch_size\":64},\"threads\":2}",
            cache);
    fclose(f);
    cr_assert_eq(run_to_end(spec_path, out, events), 0, "lsq train failed");
    snprintf(p, sizeof p, "%s/model.lsqm", out);
    cr_expect_eq(access(p, F_OK), 0, "no model.lsqm of the normalised net");
    FILE *ev = fopen(events, "r");
    cr_assert_not_null(ev);
    char line[65536];
    int done = 0, skipped = 0, onnx = 0, lsqm = 0;
    while (fgets(line, sizeof line, ev)) {
        json_t *e = json_loads(line, 0, NULL);
        if (!e) continue;
        done += event_is(e, "done");
        const char *art = json_string_value(json_object_get(e, "artifact"));
        if (event_is(e, "log") && art) skipped++;
        if (event_is(e, "artifact")) {
            onnx += strcmp(json_string_value(json_object_get(e, "name")), "model.onnx") == 0;
            lsqm += strcmp(json_string_value(json_object_get(e, "name")), "model.lsqm") == 0;
        }
        json_decref(e);
    }
    fclose(ev);
    cr_expect_eq(done, 1);
    cr_expect_eq(skipped, 0, "an artifact was skipped");
    cr_assert_eq(onnx, 1, "no artifact event for model.onnx");
    cr_assert_eq(lsqm, 1, "no artifact event for model.lsqm");

    /* model.onnx against the trained model.lsqc */
    lsq_cache c;
    lsq_err err;
    cr_assert_eq(cache_read(&c, cache, 0, &err), LSQ_OK, "%s", err.message);
    snprintf(p, sizeof p, "%s/model.lsqc", out);
    lsq_ckpt ck;
    cr_assert_eq(ckpt_load(&ck, p, &err), LSQ_OK, "%s", err.message);
    lsq_net net;
    cr_assert_eq(ckpt_build_net(&net, &ck, c.test.n, &err), LSQ_OK, "%s", err.message);
    cr_assert(net.quantized && net.norm_on);
    const size_t count = (size_t)c.test.n * 768;
    float *raw = malloc(count * sizeof *raw), *xn = malloc(count * sizeof *xn);
    int32_t *y = malloc((size_t)c.test.n * sizeof *y);
    cr_assert(raw && xn && y);
    lsq_loader l;
    cr_assert_eq(loader_init(&l, &c.test, c.test.n, 0, 1, 0, 0, &err), LSQ_OK, "%s", err.message);
    loader_fill(&l, 0, raw, y);
    loader_set_normalize(&l, net.norm_mean, net.norm_std);
    loader_fill(&l, 0, xn, y);
    snprintf(p, sizeof p, "%s/model.onnx", out);
    float *got = ort_run_file(p, raw, c.test.n, 3, 16, 16, 10, "disabled");
    ort_diff df = ort_expect_close(got, net_forward(&net, xn, c.test.n, 0), c.test.n, 10,
                                   "trained imported MobileNetV2 W4A4");
    cr_expect_eq(df.top1_agree, c.test.n);
    free(got);
    /* the integer engine on the raw pixels */
    snprintf(p, sizeof p, "%s/model.lsqm", out);
    lsqm_model *m = lsqm_load(p, &err);
    cr_assert_not_null(m, "%s", err.message);
    got = malloc((size_t)c.test.n * 10 * sizeof *got);
    cr_assert_eq(lsqm_predict(m, c.test.pixels, c.test.n, got, NULL, 2, &err), LSQ_OK, "%s",
                 err.message);
    /* integer sums, not float ones: an activation code on the other side
     * of a rounding tie may move an image's logits, so top-1 agreement on
     * 99% of the images, as the deploy tests ask */
    const float *ref = net_forward(&net, xn, c.test.n, 0);
    int agree = 0;
    for (int i = 0; i < c.test.n; i++) {
        int a = 0, b = 0;
        for (int k = 1; k < 10; k++) {
            if (ref[i * 10 + k] > ref[i * 10 + a]) a = k;
            if (got[i * 10 + k] > got[i * 10 + b]) b = k;
        }
        agree += a == b;
    }
    cr_log_info("imported MobileNetV2 W4A4, normalised input: the integer engine on raw pixels "
                "agrees with the float engine on %d/%d images", agree, c.test.n);
    cr_expect_geq(agree * 100, 99 * c.test.n, "the integer engine agrees on %d/%d", agree,
                  c.test.n);
    free(got);
    lsqm_free(m);
    loader_free(&l);
    free(raw);
    free(xn);
    free(y);
    net_free(&net);
    ckpt_free(&ck);
    cache_free(&c);
    rm_rf(d);
    free(d);
}

/* Every value the import gives has the same bytes in the checkpoint's net. */
static void expect_ckpt_holds_import(const char *ckpt, const onnx_import *im)
{
    lsq_ckpt c;
    lsq_err err;
    cr_assert_eq(ckpt_load(&c, ckpt, &err), LSQ_OK, "%s", err.message);
    lsq_net net;
    cr_assert_eq(ckpt_build_net(&net, &c, 1, &err), LSQ_OK, "%s", err.message);
    for (int i = 0; i < im->n_params; i++) {
        const onnx_param *p = &im->params[i];
        int v = net_find_view(&net, p->name);
        cr_assert_geq(v, 0, "%s: no view %s", ckpt, p->name);
        const net_view *vw = &net.views[v];
        const float *got = (vw->in_state ? net.state : net.params) + vw->off;
        cr_expect_eq(memcmp(got, p->data, p->count * sizeof *got), 0, "%s: %s is not the import's",
                     ckpt, p->name);
    }
    net_free(&net);
    ckpt_free(&c);
}

static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    char line[16384];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* LSQ starts from the ONNX model's weights: no pretraining, the imported
 * net kept as fp.lsqc and used as the teacher, the layers named after the
 * ONNX nodes with the first/last 8-bit rule; a full-precision job of 0
 * epochs leaves the imported weights as they are. */
Test(train, lsq_from_an_onnx_model, .timeout = 240)
{
    const char *model = "tests/fixtures/onnx/resnet_op13_bn.onnx";
    onnx_import im;
    lsq_err err;
    cr_assert_eq(onnx_import_file(&im, model, ONNX_IMPORT_MAX_BYTES, &err), LSQ_OK, "%s",
                 err.message);
    char *d = make_dir();
    char spec[1024], out[512], events[512], path[600];
    snprintf(out, sizeof out, "%s/q", d);
    snprintf(events, sizeof events, "%s/q.jsonl", d);
    snprintf(spec, sizeof spec,
             "{\"name\":\"onnx-q\",\"model\":{\"onnx\":\"%s\"},\"dataset\":{\"train_limit\":256,"
             "\"test_limit\":128},\"quant\":{\"weight_bits\":4},\"train\":{\"epochs\":1,"
             "\"batch_size\":64}}", model);
    lsq_spec s;
    parse_spec(&s, spec);
    FILE *ef = fopen(events, "w");
    cr_assert_not_null(ef);
    ev_sink sink;
    ev_sink_init(&sink, fileno(ef));
    train_opts o = {&sink, NULL, NULL, 0, NULL};
    double acc;
    cr_assert_eq(train_run(&s, out, &o, &acc, &err), LSQ_OK, "%s", err.message);
    fclose(ef);
    spec_free(&s);
    cr_expect_eq(count_in_file(events, "\"phase\":\"pretrain\""), 0, "it pretrained");
    cr_expect_eq(count_in_file(events, "\"full-precision model\""), 1);
    snprintf(path, sizeof path, "%s/fp.lsqc", out);
    expect_ckpt_holds_import(path, &im);
    snprintf(path, sizeof path, "%s/model.lsqc", out);
    lsq_ckpt c;
    cr_assert_eq(ckpt_load(&c, path, &err), LSQ_OK, "%s", err.message);
    lsq_net net;
    cr_assert_eq(ckpt_build_net(&net, &c, 1, &err), LSQ_OK, "%s", err.message);
    cr_expect(net.quantized);
    json_t *bits = net_bits_json(&net);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(bits, "conv1"), "weight")), 8);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(bits, "layer1.conv1"), "weight")), 4);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(bits, "fc"), "act")), 8);
    json_decref(bits);
    net_free(&net);
    ckpt_free(&c);

    /* full precision, 0 epochs: the final model is the import */
    snprintf(out, sizeof out, "%s/fp", d);
    snprintf(spec, sizeof spec,
             "{\"name\":\"onnx-fp\",\"model\":{\"onnx\":\"%s\"},\"dataset\":{\"train_limit\":64,"
             "\"test_limit\":64},\"train\":{\"epochs\":0}}", model);
    run(spec, out);
    snprintf(path, sizeof path, "%s/model.lsqc", out);
    expect_ckpt_holds_import(path, &im);
    onnx_import_free(&im);

    /* a model for other images than the dataset's is refused before training */
    snprintf(spec, sizeof spec,
             "{\"model\":{\"onnx\":\"tests/fixtures/onnx/mobilenet_op13_eval.onnx\"},"
             "\"dataset\":{\"train_limit\":64,\"test_limit\":64},\"train\":{\"epochs\":0}}");
    parse_spec(&s, spec);
    ev_sink_init(&sink, -1);
    snprintf(out, sizeof out, "%s/bad", d);
    cr_expect_eq(train_run(&s, out, &o, &acc, &err), LSQ_ERR_INVALID);
    cr_expect_str_eq(err.field, "model.onnx");
    cr_expect(strstr(err.message, "3x16x16") && strstr(err.message, "1x28x28"), "%s", err.message);
    spec_free(&s);
    rm_rf(d);
    free(d);
}
