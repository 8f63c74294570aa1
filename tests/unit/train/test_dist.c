/* Data-parallel training through the real `lsq train` under the real mpirun
 * (Open MPI): 2 ranks with 64 images each of every 128-image batch must train
 * the same network as 1 process with the whole batch, tensor by tensor, at
 * full precision and at W2A2, and the folder must hold what one process
 * writes. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "train/ckpt.h"

/* Largest difference allowed, relative to the tensor's largest magnitude. */
#define DIST_TOL 1e-5
#define RESUME_TOL 1e-3

static char *make_dir(void)
{
    char *d = strdup("/tmp/lsq-dist-XXXXXX");
    cr_assert(mkdtemp(d));
    return d;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* In a sanitizer build (make SANITIZE=...), the ranks run without leak
 * detection: Open MPI keeps allocations past MPI_Finalize in components it
 * has unloaded by then, which LeakSanitizer can neither attribute nor
 * suppress. AddressSanitizer and UBSan stay on; one process still checks
 * leaks everywhere else. Called in the child, before exec. */
static void mpi_child_env(void)
{
    const char *old = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", old ? old : "", old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
}

/* `lsq train SPEC --out OUT` on `ranks` ranks (1: no mpirun), with events
 * appended to `events` (NULL: none); the exit status. */
static int train_ev(int ranks, const char *spec, const char *out, const char *events)
{
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin, "LSQ_BIN is not set (run through make test)");
    char np[16];
    snprintf(np, sizeof np, "%d", ranks);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        const char *ev = events ? "--events" : "--quiet", *evf = events ? events : "--quiet";
        if (ranks == 1) {
            execl(bin, bin, "train", spec, "--out", out, "--quiet", ev, evf, (char *)NULL);
            _exit(127);
        }
        mpi_child_env();
        execlp("mpirun", "mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
               "-np", np, bin, "train", spec, "--out", out, "--quiet", ev, evf, (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int train(int ranks, const char *spec, const char *out)
{
    return train_ev(ranks, spec, out, NULL);
}

/* Every parameter view of a/model.lsqc against b's: the largest difference
 * over the tensor's largest magnitude, at most tol. Returns the worst ratio. */
static double compare_models(const char *a_dir, const char *b_dir, double tol)
{
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/model.lsqc", a_dir);
    snprintf(b, sizeof b, "%s/model.lsqc", b_dir);
    lsq_ckpt ca, cb;
    lsq_err err;
    cr_assert_eq(ckpt_load(&ca, a, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ckpt_load(&cb, b, &err), LSQ_OK, "%s", err.message);
    cr_assert_eq(ca.n_params, cb.n_params);
    const json_t *views = json_object_get(ca.header, "views"), *v;
    size_t i;
    double worst = 0;
    int tensors = 0;
    json_array_foreach(views, i, v) {
        if (json_is_true(json_object_get(v, "state"))) continue;
        size_t off = (size_t)json_integer_value(json_object_get(v, "off"));
        size_t count = (size_t)json_integer_value(json_object_get(v, "count"));
        double maxabs = 0, maxdiff = 0;
        for (size_t k = off; k < off + count; k++) {
            maxabs = fmax(maxabs, fabs(ca.params[k]));
            maxdiff = fmax(maxdiff, fabs((double)ca.params[k] - cb.params[k]));
        }
        double rel = maxdiff / (maxabs > 0 ? maxabs : 1);
        const char *name = json_string_value(json_object_get(v, "name"));
        cr_expect_leq(rel, tol, "%s: largest difference %.3g, %.3g of its largest value", name,
                      maxdiff, rel);
        if (rel > worst) worst = rel;
        tensors++;
    }
    cr_assert_gt(tensors, 0);
    ckpt_free(&ca);
    ckpt_free(&cb);
    return worst;
}

/* 20 steps of batch 128 (2,560 images), on one process and on 2 ranks. */
#define DIST_FP_SPEC                                                                       \
    "{\"name\":\"dist-fp\",\"model\":{\"arch\":\"mlp\"},"                                  \
    "\"dataset\":{\"train_limit\":2560,\"test_limit\":500},"                               \
    "\"train\":{\"epochs\":1,\"lr\":0.05,\"batch_size\":128},\"threads\":1}"

Test(dist, two_ranks_match_one_process, .timeout = 120)
{
    char *d = make_dir();
    char spec[512], one[512], two[512], qspec[512], qone[512], qtwo[512], text[1024];
    snprintf(spec, sizeof spec, "%s/fp.json", d);
    snprintf(one, sizeof one, "%s/fp1", d);
    snprintf(two, sizeof two, "%s/fp2", d);
    write_text(spec, DIST_FP_SPEC);
    cr_assert_eq(train(1, spec, one), 0, "lsq train on one process failed");
    cr_assert_eq(train(2, spec, two), 0, "lsq train on 2 ranks failed");
    double fp = compare_models(one, two, DIST_TOL);

    /* W2A2 from the full-precision model, with distillation: the activation
     * steps start from the global first batch, by the paper's rule (a mean
     * summed over the ranks; 20 steps) and by the MSE search (the batch
     * gathered; 1 step). The rounding of 2-bit activations is not continuous:
     * the last-bit differences of the two summation orders flip the code of
     * an activation now and then, after which the runs differ by more than
     * rounding (docs/results.md measures it), so the MSE start is checked on
     * the step that it decides alone. */
    const char *inits[] = {"paper", "mse"};
    const int images[] = {2560, 128};
    double q[2];
    for (int k = 0; k < 2; k++) {
        snprintf(qspec, sizeof qspec, "%s/w2a2-%s.json", d, inits[k]);
        snprintf(qone, sizeof qone, "%s/q1-%s", d, inits[k]);
        snprintf(qtwo, sizeof qtwo, "%s/q2-%s", d, inits[k]);
        snprintf(text, sizeof text,
                 "{\"name\":\"dist-w2a2\",\"model\":{\"arch\":\"mlp\"},"
                 "\"dataset\":{\"train_limit\":%d,\"test_limit\":500},"
                 "\"quant\":{\"weight_bits\":2,\"act_bits\":2,\"report_ptq\":false,"
                 "\"init\":\"%s\"},\"init\":{\"from\":\"%s/model.lsqc\"},\"distill\":true,"
                 "\"train\":{\"epochs\":1,\"lr\":0.01,\"batch_size\":128},\"threads\":1}",
                 images[k], inits[k], one);
        write_text(qspec, text);
        cr_assert_eq(train(1, qspec, qone), 0, "lsq train W2A2 on one process failed");
        cr_assert_eq(train(2, qspec, qtwo), 0, "lsq train W2A2 on 2 ranks failed");
        q[k] = compare_models(qone, qtwo, DIST_TOL);
    }
    printf("dist: 2 ranks x 64 vs 1 x 128, 20 steps of mlp: worst relative difference "
           "FP %.2g, W2A2 %.2g (paper init); 1 step W2A2 %.2g (mse init)\n", fp, q[0], q[1]);

    /* rank 0 alone wrote the folder, and the same files */
    const char *files[] = {"model.lsqc", "model.lsqm", "model.onnx", "checkpoint.lsqc",
                           "fp.lsqc", NULL};
    for (int k = 0; files[k]; k++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", qtwo, files[k]);
        cr_expect_eq(access(p, R_OK), 0, "2 ranks did not write %s", files[k]);
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", qtwo);
    FILE *ls = popen(cmd, "r");
    int tmp = -1;
    cr_assert(ls && fscanf(ls, "%d", &tmp) == 1);
    pclose(ls);
    cr_expect_eq(tmp, 0, "temporary files left behind");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_expect_eq(system(cmd), 0);
    free(d);
}

/* A batch that cannot give every rank an image is refused by name. */
Test(dist, batch_smaller_than_ranks_is_refused, .timeout = 60)
{
    char *d = make_dir();
    char spec[512], out[512], text[512];
    snprintf(spec, sizeof spec, "%s/s.json", d);
    snprintf(out, sizeof out, "%s/o", d);
    snprintf(text, sizeof text,
             "{\"model\":{\"arch\":\"mlp\"},\"dataset\":{\"train_limit\":64,\"test_limit\":10},"
             "\"train\":{\"epochs\":1,\"batch_size\":1}}");
    write_text(spec, text);
    cr_expect_eq(train(2, spec, out), 1);
    char p[1024];
    snprintf(p, sizeof p, "%s/model.lsqc", out);
    cr_expect_neq(access(p, F_OK), 0, "a refused job wrote a model");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_expect_eq(system(cmd), 0);
    free(d);
}

/* Starts `lsq train` on `ranks` ranks with events to `events` and sends
 * SIGTERM (to mpirun, which passes it on) once a checkpoint event is there;
 * returns the exit status (under mpirun, mpirun's: 1 after the signal). */
static int train_and_stop(int ranks, const char *spec, const char *out, const char *events)
{
    const char *bin = getenv("LSQ_BIN");
    cr_assert(bin, "LSQ_BIN is not set (run through make test)");
    char np[16];
    snprintf(np, sizeof np, "%d", ranks);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        mpi_child_env();
        execlp("mpirun", "mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
               "-np", np, bin, "train", spec, "--out", out, "--events", events, "--quiet",
               (char *)NULL);
        _exit(127);
    }
    int status, signalled = 0;
    for (int i = 0; i < 6000 && !signalled; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(events, "r");
        if (!f) continue;
        char line[8192];
        while (!signalled && fgets(line, sizeof line, f))
            if (strstr(line, "\"type\":\"checkpoint\"")) {
                kill(pid, SIGTERM);
                signalled = 1;
            }
        fclose(f);
        if (!signalled && waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A run stopped on 2 ranks resumes on one process (a checkpoint holds
 * nothing of the rank count) and ends where a single process's run ends. */
Test(dist, stopped_on_two_ranks_resumes_on_one, .timeout = 180)
{
    char *d = make_dir();
    char spec[512], ref[512], run[512], events[512];
    snprintf(spec, sizeof spec, "%s/s.json", d);
    snprintf(ref, sizeof ref, "%s/ref", d);
    snprintf(run, sizeof run, "%s/run", d);
    snprintf(events, sizeof events, "%s/run.ev", d);
    write_text(spec, "{\"name\":\"dist-resume\",\"model\":{\"arch\":\"mlp\"},"
                     "\"dataset\":{\"train_limit\":2560,\"test_limit\":200},"
                     "\"train\":{\"epochs\":12,\"lr\":0.02,\"batch_size\":128},\"threads\":1}");
    int st = train_and_stop(2, spec, run, events);
    cr_assert_neq(st, 0, "the 2-rank run ended before the stop reached it");
    char ck[600];
    snprintf(ck, sizeof ck, "%s/checkpoint.lsqc", run);
    cr_assert_eq(access(ck, R_OK), 0, "no checkpoint after the stop");
    char resumed[600];
    snprintf(resumed, sizeof resumed, "%s/resumed.ev", d);
    cr_assert_eq(train_ev(1, spec, run, resumed), 0, "the resume on one process failed");
    FILE *f = fopen(resumed, "r");
    cr_assert(f);
    char line[8192];
    cr_assert(fgets(line, sizeof line, f));
    fclose(f);
    cr_expect(strstr(line, "\"type\":\"start\"") && strstr(line, "\"resumed\":true"),
              "the single process did not resume the 2-rank checkpoint: %s", line);
    cr_assert_eq(train(1, spec, ref), 0, "the single-process run failed");
    /* The 2-rank steps before the stop differ from one process's by rounding
     * (about 1e-7, the equivalence test above); the ~200 steps after it
     * amplify that, more the later the SIGTERM lands (on a loaded machine,
     * epochs after the first checkpoint: 5.3e-5 measured), so this bound is
     * rounding's growth, not the state check: that a resume keeps every
     * piece of state exactly is test_train.c's resume_is_exact_* on one
     * process; here the checkpoint of 2 ranks must load on one and end near
     * the single-process run. */
    double worst = compare_models(ref, run, RESUME_TOL);
    printf("dist: stopped on 2 ranks, resumed on 1: worst relative difference %.2g\n", worst);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_expect_eq(system(cmd), 0);
    free(d);
}

/* train.sync_bn: batch norm over every rank's batch. On cnn-small (batch
 * norm after each convolution) 2 ranks x 64 then take the steps 1 x 128
 * takes (3 steps: docs/results.md says why not 20), and without it they do
 * not (each rank normalises its 64 images by their own statistics). */
Test(dist, sync_bn_matches_one_process, .timeout = 120)
{
    /* the engine's own conv kernels: oneDNN's weight gradient sums a batch
     * of 64 in another order than one of 128, which is not what this
     * compares (docs/training.md) */
    setenv("LSQ_CONV", "own", 1);
    char *d = make_dir();
    char spec[512], nospec[512], one[512], two[512], own[512];
    snprintf(spec, sizeof spec, "%s/sync.json", d);
    snprintf(nospec, sizeof nospec, "%s/own.json", d);
    snprintf(one, sizeof one, "%s/one", d);
    snprintf(two, sizeof two, "%s/two", d);
    snprintf(own, sizeof own, "%s/own", d);
    const char *fmt = "{\"name\":\"dist-bn\",\"model\":{\"arch\":\"cnn-small\"},"
                      "\"dataset\":{\"train_limit\":384,\"test_limit\":100},"
                      "\"train\":{\"epochs\":1,\"lr\":0.05,\"batch_size\":128,\"sync_bn\":%s},"
                      "\"threads\":1}";
    char text[512];
    snprintf(text, sizeof text, fmt, "true");
    write_text(spec, text);
    snprintf(text, sizeof text, fmt, "false");
    write_text(nospec, text);
    cr_assert_eq(train(1, spec, one), 0, "lsq train on one process failed");
    cr_assert_eq(train(2, spec, two), 0, "lsq train with sync_bn on 2 ranks failed");
    cr_assert_eq(train(2, nospec, own), 0, "lsq train on 2 ranks failed");
    double sync = compare_models(one, two, DIST_TOL);
    /* the largest absolute difference of the run without sync_bn */
    double worst = 0;
    {
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/model.lsqc", one);
        snprintf(b, sizeof b, "%s/model.lsqc", own);
        lsq_ckpt ca, cb;
        lsq_err err;
        cr_assert_eq(ckpt_load(&ca, a, &err), LSQ_OK, "%s", err.message);
        cr_assert_eq(ckpt_load(&cb, b, &err), LSQ_OK, "%s", err.message);
        for (size_t i = 0; i < ca.n_params; i++)
            worst = fmax(worst, fabs((double)ca.params[i] - cb.params[i]));
        ckpt_free(&ca);
        ckpt_free(&cb);
    }
    printf("dist: cnn-small, 3 steps, 2 ranks x 64 vs 1 x 128: sync_bn worst relative %.2g; "
           "per-rank statistics: largest parameter difference %.3g\n", sync, worst);
    cr_expect_gt(worst, 1e-3, "per-rank batch statistics should change the training");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_expect_eq(system(cmd), 0);
    free(d);
}
