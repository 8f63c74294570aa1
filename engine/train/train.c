/* Training driver: phases, epochs, evaluation, events, checkpoints. */
#include "train/train.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/sha256.h"
#include "data/cache.h"
#include "core/isa.h"
#include "deploy/export.h"
#include "deploy/igemm.h"
#include "graph/onnx_import.h"
#include "nn/layers.h"
#include "train/ckpt.h"
#include "train/optim.h"

typedef enum { PH_PRETRAIN, PH_LSQ, PH_TRAIN, PH_DONE, PH_COUNT } train_phase;
static const char *const PHASE_NAMES[] = {"pretrain", "lsq", "train", "done"};
_Static_assert(sizeof PHASE_NAMES / sizeof *PHASE_NAMES == PH_COUNT, "PHASE_NAMES");

typedef struct {
    const lsq_spec *spec;
    const train_opts *opts;
    const char *dir;
    lsq_dataset train, test;
    net_data data;                    /* what the networks are built for */
    json_t *spec_json;
    double t0;
    double last_test_acc;
    /* the network the last epoch's evaluation scored, as it still is (its
     * test loss beside last_test_acc): the final model's figures when it is
     * that network, without a second pass over the test set */
    const lsq_net *scored;
    double last_test_loss;
    lsq_dist *dist;                   /* opts->dist, or solo: rank 0 of 1 */
    lsq_dist solo;
} run_ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void train_set_threads(int threads)
{
    if (threads < 1) threads = 1;
    /* the kernels split work across OpenMP threads and call single-threaded
     * SGEMM inside them (layers.h) */
    omp_set_num_threads(threads);
    openblas_set_num_threads(1);
}

lsq_status train_paths_from_env(lsq_err *err)
{
    lsq_status (*const checks[])(lsq_err *) = {
        lsq_isa_from_env, conv2d_backend_from_env, conv2d_wino_from_env, conv2d_bwd_from_env,
        lsq_kernel_from_env,
    };
    for (size_t i = 0; i < sizeof checks / sizeof *checks; i++) {
        const lsq_status st = checks[i](err);
        if (st != LSQ_OK) return st;
    }
    return LSQ_OK;
}

static void path_in(char *out, size_t n, const char *dir, const char *file)
{
    snprintf(out, n, "%s/%s", dir, file);
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static int is_root(const run_ctx *rc) { return rc->dist->rank == 0; }

/* Events come from rank 0 alone. */
static void emit(run_ctx *rc, ev_type t, json_t *o)
{
    if (is_root(rc)) ev_emit(rc->opts->events, t, o);
    else json_decref(o);
}

/* One outcome for every rank after a step that may fail on one of them (a
 * file that rank 0 alone writes): when any rank failed, those that did not
 * fail too, saying so, and none of them waits for the others again. */
static lsq_status agree(run_ctx *rc, lsq_status st, lsq_err *err)
{
    if (rc->dist->size < 2) return st;
    double bad = st != LSQ_OK;
    dist_sum_double(rc->dist, &bad, 1);
    if (bad > 0 && st == LSQ_OK)
        st = lsq_err_set(err, LSQ_ERR_INTERNAL, NULL,
                         "another rank of this run failed (its message is on its standard "
                         "error; rank 0's also in the events)");
    return st;
}

/* Batch-norm running statistics are kept per rank from per-rank batches;
 * before an evaluation or a checkpoint every rank takes their mean, so that
 * all hold the same network. */
static void sync_running(run_ctx *rc, lsq_net *net)
{
    if (rc->dist->size < 2) return;
    size_t n = 0;
    for (int v = 0; v < net->n_views; v++)
        if (net->views[v].kind == PV_RUNNING) n += net->views[v].count;
    if (n == 0) return;
    double *buf = malloc(n * sizeof(double));
    if (!buf) {
        /* no way to go on with ranks that disagree */
        fprintf(stderr, "lsq train: out of memory for the running statistics\n");
        dist_abort(rc->dist, 1);
        abort();
    }
    size_t k = 0;
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind != PV_RUNNING) continue;
        for (size_t i = 0; i < vw->count; i++) buf[k++] = net->state[vw->off + i];
    }
    dist_sum_double(rc->dist, buf, n);
    k = 0;
    for (int v = 0; v < net->n_views; v++) {
        const net_view *vw = &net->views[v];
        if (vw->kind != PV_RUNNING) continue;
        for (size_t i = 0; i < vw->count; i++)
            net->state[vw->off + i] = (float)(buf[k++] / rc->dist->size);
    }
    free(buf);
}

/* The first and one-past-last of `count` items that this rank takes: an
 * even split, the remainder going one each to the higher ranks. */
static void shard_of(const lsq_dist *d, int count, int *lo, int *hi)
{
    *lo = (int)((long long)count * d->rank / d->size);
    *hi = (int)((long long)count * (d->rank + 1) / d->size);
}

static void emit_artifact(run_ctx *rc, const char *name)
{
    if (!is_root(rc)) return;
    char path[4096], hex[65];
    path_in(path, sizeof path, rc->dir, name);
    long long bytes = 0;
    if (sha256_file_hex(path, hex, &bytes) != 0) return;
    emit(rc, EV_ARTIFACT, json_pack("{s:s, s:I, s:s}", "name", name, "bytes", (json_int_t)bytes,
                                     "sha256", hex));
}

int train_evaluate(lsq_net *net, const lsq_dataset *ds, int batch, volatile sig_atomic_t *stop,
                   double *acc, double *loss)
{
    lsq_loader l;
    lsq_err err;
    if (batch > net->max_batch) batch = net->max_batch;
    *acc = 0, *loss = 0;
    if (loader_init(&l, ds, batch, 0, 0, 0, 0, &err) != LSQ_OK) return 0;
    if (net->norm_on) loader_set_normalize(&l, net->norm_mean, net->norm_std);
    size_t img = (size_t)ds->c * ds->h * ds->w;
    float *x = malloc((size_t)batch * img * sizeof(float));
    int32_t *y = malloc((size_t)batch * sizeof(int32_t));
    long correct = 0;
    double total_loss = 0;
    int nb = loader_batches(&l), stopped = 0;
    for (int b = 0; b < nb && x && y; b++) {
        if (stop && *stop) {
            stopped = 1;
            break;
        }
        int n = loader_fill(&l, b, x, y);
        const float *logits = net_forward(net, x, n, 0);
        float lo = xent_forward(net->probs, logits, y, n, net->classes);
        total_loss += (double)lo * n;
        for (int i = 0; i < n; i++) {
            const float *p = logits + (size_t)i * net->classes;
            int best = 0;
            for (int k = 1; k < net->classes; k++)
                if (p[k] > p[best]) best = k;
            correct += best == y[i];
        }
    }
    if (ds->n > 0) {
        *acc = (double)correct / ds->n;
        *loss = total_loss / ds->n;
    }
    free(x);
    free(y);
    loader_free(&l);
    return stopped;
}

/* train_evaluate over every rank: each scores its slice of the test set
 * (after the running statistics are made equal) and the sums are added.
 * Returns 1 when a stop came on any rank. */
static int eval_global(run_ctx *rc, lsq_net *net, int batch, double *acc, double *loss)
{
    lsq_dist *d = rc->dist;
    if (d->size < 2) return train_evaluate(net, &rc->test, batch, rc->opts->stop, acc, loss);
    sync_running(rc, net);
    int lo, hi;
    shard_of(d, rc->test.n, &lo, &hi);
    lsq_dataset part = rc->test; /* a view, not owned */
    size_t img = (size_t)part.c * part.h * part.w;
    part.n = hi - lo;
    part.pixels += (size_t)lo * img;
    part.labels += lo;
    double a = 0, l = 0;
    int stopped = part.n > 0 ? train_evaluate(net, &part, batch, rc->opts->stop, &a, &l) : 0;
    double t[3] = {round(a * part.n), l * part.n, stopped};
    dist_sum_double(d, t, 3);
    *acc = rc->test.n ? t[0] / rc->test.n : 0;
    *loss = rc->test.n ? t[1] / rc->test.n : 0;
    return t[2] > 0;
}

static json_t *ckpt_meta(run_ctx *rc, train_phase ph, int epoch, int step, int quantized)
{
    return json_pack("{s:s, s:i, s:i, s:O, s:b, s:i, s:f}", "phase", PHASE_NAMES[ph], "epoch",
                     epoch, "step", step, "spec", rc->spec_json, "quantized", quantized,
                     "classes", rc->data.classes, "test_acc", rc->last_test_acc);
}

static void progress_line(run_ctx *rc, const char *phase, int epoch, int epochs, int step,
                          int steps, double loss, double ips, double eta)
{
    FILE *f = rc->opts->progress;
    if (!f || !is_root(rc)) return;
    int m = (int)(eta / 60), s = (int)eta % 60;
    fprintf(f, "\r%-8s epoch %d/%d  step %4d/%d  loss %.4f  %6.0f img/s  ETA %d:%02d   ", phase,
            epoch + 1, epochs, step, steps, loss, ips, m, s);
    fflush(f);
}

/* The running sums of an epoch's steps. A checkpoint taken inside an epoch
 * keeps them ("tally" in its header), so that the resumed epoch reports the
 * training loss, accuracy and seconds of the whole epoch. */
typedef struct {
    double loss_sum, seconds;
    long seen, correct;
} epoch_tally;

static void tally_from_json(epoch_tally *e, const json_t *j)
{
    e->loss_sum = json_number_value(json_object_get(j, "loss_sum"));
    e->seconds = json_number_value(json_object_get(j, "seconds"));
    e->seen = (long)json_integer_value(json_object_get(j, "seen"));
    e->correct = (long)json_integer_value(json_object_get(j, "correct"));
}

/* Writes the checkpoint to resume the phase at (epoch, step), with the
 * epoch's running sums when e is not NULL, and emits its event. */
static lsq_status save_resume_point(run_ctx *rc, train_phase ph, lsq_net *net, const lsq_sgd *opt,
                                    int epoch, int step, const epoch_tally *e, lsq_err *err)
{
    char path[4096];
    path_in(path, sizeof path, rc->dir, TRAIN_CKPT_FILE);
    sync_running(rc, net);
    if (!is_root(rc)) return agree(rc, LSQ_OK, err);
    json_t *meta = ckpt_meta(rc, ph, epoch, step, net->quantized);
    if (e)
        json_object_set_new(meta, "tally",
                            json_pack("{s:f, s:f, s:I, s:I}", "loss_sum", e->loss_sum, "seconds",
                                      e->seconds, "seen", (json_int_t)e->seen, "correct",
                                      (json_int_t)e->correct));
    lsq_status st = agree(rc, ckpt_save(path, net, opt->momentum, meta, err), err);
    json_decref(meta);
    if (st != LSQ_OK) return st;
    emit(rc, EV_CHECKPOINT, json_pack("{s:s, s:s, s:i, s:i}", "path", TRAIN_CKPT_FILE, "phase",
                                      PHASE_NAMES[ph], "epoch", epoch, "step", step));
    return LSQ_OK;
}

/* A stop request inside an epoch, before step b (b == steps: after the last
 * step, during the epoch's evaluation): writes the checkpoint to resume from
 * there and returns LSQ_ERR_CANCELLED, or the save's failure. */
static lsq_status stop_in_epoch(run_ctx *rc, train_phase ph, lsq_net *net, const lsq_sgd *opt,
                                int epoch, int b, const epoch_tally *e, lsq_err *err)
{
    lsq_status st = save_resume_point(rc, ph, net, opt, epoch, b, e, err);
    if (st != LSQ_OK) return st;
    return lsq_err_set(err, LSQ_ERR_CANCELLED, NULL,
                       "stopped on request at %s epoch %d step %d; checkpoint written",
                       PHASE_NAMES[ph], epoch + 1, b);
}

/* One training phase over `net` (teacher: distillation source or NULL),
 * starting at (start_epoch, start_step) with momentum already restored;
 * `tally` (NULL: none) is the resumed epoch's sums from its checkpoint. */
static lsq_status run_phase(run_ctx *rc, train_phase ph, lsq_net *net, lsq_net *teacher,
                            const spec_train *t, lsq_sgd *opt, int start_epoch, int start_step,
                            const json_t *tally, lsq_err *err)
{
    const lsq_spec *spec = rc->spec;
    lsq_dist *d = rc->dist;
    lsq_status st = LSQ_OK;
    lsq_loader l;
    if (d->size > 1 && (t->batch_size < d->size || rc->train.n < d->size))
        /* the first batch starts the activation steps on every rank at once */
        return lsq_err_set(err, LSQ_ERR_INVALID, ph == PH_PRETRAIN ? "pretrain.batch_size"
                                                                   : "train.batch_size",
                           "a batch of %d images (of %d training images) cannot give each of "
                           "%d ranks at least one",
                           t->batch_size, rc->train.n, d->size);
    st = loader_init(&l, &rc->train, t->batch_size, 1, t->seed, spec->augment_crop_pad,
                     spec->augment_flip, err);
    if (st != LSQ_OK) return st;
    if (net->norm_on) loader_set_normalize(&l, net->norm_mean, net->norm_std);
    net->sync_bn = t->sync_bn && d->size > 1;
    int k = net->classes;
    size_t img = (size_t)rc->train.c * rc->train.h * rc->train.w;
    /* this rank's share of a global batch, at most */
    size_t per = (size_t)(t->batch_size + d->size - 1) / d->size;
    float *x = malloc(per * img * sizeof(float));
    int32_t *y = malloc(per * sizeof(int32_t));
    float *dlogits = malloc(per * k * sizeof(float));
    float *ps = malloc(per * k * sizeof(float));
    float *pt = malloc(per * k * sizeof(float));
    float *tail = net->grads + net->n_params; /* NET_GRAD_TAIL: the step's tallies */
    if (!x || !y || !dlogits || !ps || !pt) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory for a training batch");
        goto out;
    }
    int steps = loader_batches(&l);
    long total = (long)t->epochs * steps;
    long warm = (long)(t->warmup_epochs * steps);
    int quantized = net->quantized;
    float wd = (float)spec_train_weight_decay(spec, t, quantized);
    double dw = spec->distill.weight, temp = spec->distill.temperature;
    for (int epoch = start_epoch; epoch < t->epochs; epoch++) {
        loader_set_epoch(&l, epoch);
        epoch_tally e = {0, 0, 0, 0};
        if (epoch == start_epoch && tally) tally_from_json(&e, tally);
        double t_epoch = now_s() - e.seconds, t_mark = now_s();
        long mark_seen = e.seen;
        /* the engine's own timers of this epoch's steps and their allreduce */
        double train_s = 0, reduce_s0 = d->reduce_s;
        /* a stop seen by any rank, agreed through the step's allreduce */
        int stop_all = 0;
        for (int b = (epoch == start_epoch ? start_step : 0); b < steps; b++) {
            if (d->size > 1 ? stop_all : rc->opts->stop && *rc->opts->stop) {
                e.seconds = now_s() - t_epoch;
                st = stop_in_epoch(rc, ph, net, opt, epoch, b, &e, err);
                goto out;
            }
            double t_step = now_s();
            /* this rank's images [lo, hi) of the global batch; its loss is
             * the mean over them weighted by its share, so that the sum over
             * the ranks is the global batch's mean */
            int count = loader_batch_count(&l, b), lo, hi;
            if (net->sync_bn && count < d->size) continue; /* a rank would have no image */
            shard_of(d, count, &lo, &hi);
            int n = loader_fill_range(&l, b, lo, hi, x, y);
            double share = count > 0 ? (double)n / count : 0;
            long gstep = (long)epoch * steps + b;
            float lr = t->schedule == SCHED_COSINE ? lr_cosine((float)t->lr, gstep, total, warm)
                                                   : (float)t->lr;
            float loss = 0;
            long correct = 0;
            net_zero_grads(net);
            if (n > 0) {
                const float *logits = net_forward(net, x, n, 1);
                memset(dlogits, 0, (size_t)n * k * sizeof(float));
                if (teacher) {
                    memcpy(ps, logits, (size_t)n * k * sizeof(float));
                    const float *tl = net_forward(teacher, x, n, 0);
                    float ce = xent_forward(net->probs, ps, y, n, k);
                    xent_backward(dlogits, net->probs, y, n, k, (float)((1.0 - dw) * share));
                    float kd = distill_forward(ps, pt, net->nodes[net->output].out, tl, n, k,
                                               (float)temp);
                    distill_backward(dlogits, ps, pt, n, k, (float)temp, (float)(dw * share));
                    loss = (float)((1.0 - dw) * ce + dw * kd);
                    logits = net->nodes[net->output].out;
                } else {
                    loss = xent_forward(net->probs, logits, y, n, k);
                    xent_backward(dlogits, net->probs, y, n, k, (float)share);
                }
                net_backward(net, dlogits, n);
                for (int i = 0; i < n; i++) {
                    const float *p = logits + (size_t)i * k;
                    int best = 0;
                    for (int c = 1; c < k; c++)
                        if (p[c] > p[best]) best = c;
                    correct += best == y[i];
                }
            }
            double loss_sum = (double)loss * n;
            if (d->size > 1) {
                /* one allreduce: every gradient and the step's tallies */
                tail[0] = (float)loss_sum;
                tail[1] = (float)correct;
                tail[2] = rc->opts->stop && *rc->opts->stop;
                tail[3] = 0;
                dist_sum_float(d, net->grads, net->n_params + NET_GRAD_TAIL);
                loss_sum = tail[0];
                correct = lrintf(tail[1]);
                stop_all = tail[2] > 0;
            }
            float gloss = count > 0 ? (float)(loss_sum / count) : 0;
            if (!isfinite(gloss)) {
                st = lsq_err_set(err, LSQ_ERR_NUMERIC, NULL,
                                 "the loss became %f at %s epoch %d step %d (lr %g); lower train.lr",
                                 gloss, PHASE_NAMES[ph], epoch + 1, b, lr);
                goto out;
            }
            sgd_step(opt, net, lr, (float)t->momentum, wd, t->nesterov);
            e.loss_sum += loss_sum;
            e.seen += count;
            e.correct += correct;
            loss = gloss;
            double tnow = now_s();
            train_s += tnow - t_step;
            if (tnow - t_mark >= 0.5 || b == steps - 1) {
                double ips = (e.seen - mark_seen) / (tnow - t_mark > 1e-9 ? tnow - t_mark : 1e-9);
                double ips_epoch = e.seen / (tnow - t_epoch);
                double eta = ips_epoch > 0 ? (double)(total - gstep - 1) * t->batch_size / ips_epoch : 0;
                emit(rc, EV_PROGRESS,
                     json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f}", "phase",
                               PHASE_NAMES[ph], "epoch", epoch + 1, "epochs", t->epochs, "step",
                               b + 1, "steps", steps, "loss", (double)loss, "lr", (double)lr,
                               "images_per_s", ips, "eta_s", eta));
                progress_line(rc, PHASE_NAMES[ph], epoch, t->epochs, b + 1, steps, e.loss_sum / e.seen,
                              ips, eta);
                t_mark = tnow;
                mark_seen = e.seen;
            }
        }
        double test_acc, test_loss;
        if (eval_global(rc, net, t->batch_size, &test_acc, &test_loss)) {
            e.seconds = now_s() - t_epoch;
            st = stop_in_epoch(rc, ph, net, opt, epoch, steps, &e, err);
            goto out;
        }
        rc->last_test_acc = test_acc;
        rc->last_test_loss = test_loss;
        rc->scored = net;
        double secs = now_s() - t_epoch;
        json_t *ev = json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "phase",
                               PHASE_NAMES[ph], "epoch", epoch + 1, "epochs", t->epochs,
                               "train_loss", e.seen ? e.loss_sum / e.seen : 0.0, "train_acc",
                               e.seen ? (double)e.correct / e.seen : 0.0, "test_acc", test_acc,
                               "test_loss", test_loss, "seconds", secs, "images_per_s",
                               e.seen / (secs > 0 ? secs : 1));
        if (quantized) {
            json_object_set_new(ev, "step_sizes", net_step_sizes_json(net));
            json_object_set_new(ev, "bits", net_bits_json(net));
        }
        double reduce_s = d->reduce_s - reduce_s0;
        /* the steps' time (training only) and, over ranks, the allreduce's part */
        json_object_set_new(ev, "ranks", json_integer(d->size));
        json_object_set_new(ev, "train_s", json_real(train_s));
        if (d->size > 1) {
            json_object_set_new(ev, "allreduce_s", json_real(reduce_s));
            json_object_set_new(ev, "allreduce_bytes", json_integer((json_int_t)d->reduce_bytes));
        }
        emit(rc, EV_EPOCH, ev);
        if (rc->opts->progress && is_root(rc)) {
            fprintf(rc->opts->progress,
                    "\r%-8s epoch %d/%d  train loss %.4f acc %.4f  test loss %.4f acc %.4f  %.1fs\n",
                    PHASE_NAMES[ph], epoch + 1, t->epochs, e.seen ? e.loss_sum / e.seen : 0.0,
                    e.seen ? (double)e.correct / e.seen : 0.0, test_loss, test_acc, secs);
            if (d->size > 1)
                fprintf(rc->opts->progress,
                        "         %d ranks: steps %.2fs, allreduce %.3fs (%.1f%%) of %zu bytes each\n",
                        d->size, train_s, reduce_s, train_s > 0 ? 100 * reduce_s / train_s : 0.0,
                        d->reduce_bytes);
            fflush(rc->opts->progress);
        }
        int last = epoch == t->epochs - 1;
        if (!last && (epoch + 1) % spec->checkpoint_every == 0) {
            st = save_resume_point(rc, ph, net, opt, epoch + 1, 0, NULL, err);
            if (st != LSQ_OK) goto out;
        }
    }
out:
    free(x);
    free(y);
    free(dlogits);
    free(ps);
    free(pt);
    loader_free(&l);
    return st;
}

/* Saves a finished phase's model under `file` and the resume point. */
static lsq_status finish_phase(run_ctx *rc, lsq_net *net, const char *file, train_phase next,
                               lsq_err *err)
{
    char path[4096];
    sync_running(rc, net);
    if (!is_root(rc)) return agree(rc, LSQ_OK, err);
    path_in(path, sizeof path, rc->dir, file);
    json_t *meta = ckpt_meta(rc, PH_DONE, 0, 0, net->quantized);
    lsq_status st = ckpt_save(path, net, NULL, meta, err);
    json_decref(meta);
    if (st == LSQ_OK) {
        emit_artifact(rc, file);
        path_in(path, sizeof path, rc->dir, TRAIN_CKPT_FILE);
        meta = ckpt_meta(rc, next, 0, 0, net->quantized);
        st = ckpt_save(path, net, NULL, meta, err);
        json_decref(meta);
    }
    return agree(rc, st, err);
}

/* Post-training quantization of fp into *pq (built here; the caller frees
 * it on LSQ_OK): the job's quantized network with fp's weights, MSE steps
 * for the weights, activation steps calibrated on the first
 * quant.calibration_images training images (no augmentation, nothing
 * trained), then scored on the test set and reported as a log event.
 * LSQ_ERR_CANCELLED when a stop arrives during the scoring. */
static lsq_status ptq_build(run_ctx *rc, const lsq_net *fp, const json_t *layers, lsq_net *pq,
                           lsq_err *err)
{
    const lsq_spec *spec = rc->spec;
    double t0 = now_s();
    int n = spec->quant.calibration_images < rc->train.n ? spec->quant.calibration_images
                                                         : rc->train.n;
    int max_batch = n > spec->train.batch_size ? n : spec->train.batch_size;
    size_t img = (size_t)rc->train.c * rc->train.h * rc->train.w;
    float *x = malloc((size_t)n * img * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    lsq_loader l;
    int have_l = 0, built = 0;
    lsq_status st = LSQ_OK;
    if (!x || !y) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory for the calibration images");
        goto out;
    }
    if ((st = loader_init(&l, &rc->train, n, 1, spec->train.seed, 0, 0, err)) != LSQ_OK) goto out;
    have_l = 1;
    if (fp->norm_on) loader_set_normalize(&l, fp->norm_mean, fp->norm_std);
    loader_set_epoch(&l, 0);
    n = loader_fill(&l, 0, x, y);
    if ((st = net_build(pq, layers, &spec->quant, rc->data.classes, max_batch, err)) != LSQ_OK)
        goto out;
    built = 1;
    net_init_params(pq, spec->train.seed);
    if (net_copy_matching(pq, fp) == 0) {
        st = lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                         "the full-precision model does not match the job's network");
        goto out;
    }
    net_quant_init_weights(pq, QINIT_MSE);
    net_calibrate(pq, x, n);
    double acc, loss;
    if (eval_global(rc, pq, spec->train.batch_size, &acc, &loss)) {
        st = lsq_err_set(err, LSQ_ERR_CANCELLED, NULL,
                         "stopped on request during post-training quantization");
        goto out;
    }
    rc->last_test_acc = acc;
    rc->last_test_loss = loss;
    emit(rc, EV_LOG, json_pack("{s:s, s:f, s:f, s:i, s:f}", "message",
                               "post-training quantization", "test_acc", acc, "test_loss", loss,
                               "calibration_images", n, "seconds", now_s() - t0));
    if (rc->opts->progress) {
        fprintf(rc->opts->progress, "ptq      %d calibration images  test loss %.4f acc %.4f  %.1fs\n",
                n, loss, acc, now_s() - t0);
        fflush(rc->opts->progress);
    }
out:
    if (st != LSQ_OK && built) net_free(pq);
    if (have_l) loader_free(&l);
    free(x);
    free(y);
    return st;
}

/* A model read from disk (init.from, fp.lsqc) must take the dataset's
 * images, with the same normalisation, and give its classes. */
static lsq_status check_fits(const lsq_net *net, const net_data *d, const char *path,
                             lsq_err *err)
{
    const net_node *in = &net->nodes[0];
    if (in->c != d->c || in->h != d->h || in->w != d->w || net->classes != d->classes)
        return lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                           "%s takes %dx%dx%d images and gives %d classes, but the dataset's "
                           "images are %dx%dx%d with %d classes", path, in->c, in->h, in->w,
                           net->classes, d->c, d->h, d->w, d->classes);
    if (net->norm_on != d->normalize)
        return lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                           "%s was trained on %s inputs, but this job's inputs are %s "
                           "(dataset.normalize)", path, net->norm_on ? "normalised" : "x/255",
                           d->normalize ? "normalised" : "x/255");
    return LSQ_OK;
}

lsq_status train_load_dataset(const lsq_spec *spec, const char *path_override,
                              lsq_dataset *train, lsq_dataset *test, net_data *data,
                              lsq_err *err)
{
    lsq_status st = net_spec_data(spec, data, err);
    if (st != LSQ_OK) return st;
    if (!spec->dataset_cache[0]) {
        st = dataset_load(train, test, spec->dataset,
                          path_override ? path_override : spec->dataset_path, spec->train_limit,
                          spec->test_limit, err);
        if (st != LSQ_OK) return st;
        const lsq_dataset *src = train ? train : test;
        if (spec->normalize) cache_stats(src, data->mean, data->std);
        return LSQ_OK;
    }
    lsq_cache c;
    st = cache_read(&c, path_override ? path_override : spec->dataset_cache, 0, err);
    if (st != LSQ_OK) {
        snprintf(err->field, sizeof err->field, "dataset.cache");
        return st;
    }
    data->c = c.c, data->h = c.h, data->w = c.w, data->classes = c.classes;
    for (int i = 0; i < c.c; i++) data->mean[i] = c.mean[i], data->std[i] = c.std[i];
    if (test && c.test.n < 1) {
        cache_free(&c);
        return lsq_err_set(err, LSQ_ERR_INVALID, "dataset.cache",
                           "%s has no test images to evaluate on", spec->dataset_cache);
    }
    dataset_keep_first(&c.train, spec->train_limit);
    dataset_keep_first(&c.test, spec->test_limit);
    if (train) {
        *train = c.train;
        memset(&c.train, 0, sizeof c.train);
    }
    if (test) {
        *test = c.test;
        memset(&c.test, 0, sizeof c.test);
    }
    cache_free(&c);
    return LSQ_OK;
}

static lsq_status load_fp_model(lsq_net *net, const char *path, int max_batch, lsq_err *err)
{
    lsq_ckpt c;
    lsq_status st = ckpt_load(&c, path, err);
    if (st != LSQ_OK) return st;
    st = ckpt_build_net(net, &c, max_batch, err);
    ckpt_free(&c);
    return st;
}

lsq_status train_run(const lsq_spec *spec, const char *out_dir, const train_opts *opts,
                     double *test_acc, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    run_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.spec = spec;
    rc.opts = opts;
    rc.dir = out_dir;
    rc.t0 = now_s();
    rc.solo.size = 1;
    rc.dist = opts->dist ? opts->dist : &rc.solo;
    lsq_net fp, q;
    int have_fp = 0, have_q = 0;
    lsq_sgd opt;
    memset(&opt, 0, sizeof opt);
    lsq_ckpt resume;
    memset(&resume, 0, sizeof resume);
    json_t *layers = NULL;
    onnx_import imp; /* model.onnx: its layers and its weights, the starting point */
    memset(&imp, 0, sizeof imp);
    train_set_threads(opts->threads_override > 0 ? opts->threads_override : spec->threads);

    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        st = lsq_err_set(err, LSQ_ERR_IO, "out", "cannot create %s: %s", out_dir, strerror(errno));
        goto out;
    }
    rc.spec_json = spec_to_json(spec);
    st = train_load_dataset(spec, NULL, &rc.train, &rc.test, &rc.data, err);
    if (st != LSQ_OK) goto out;
    if (spec->model_onnx[0]) {
        /* its weights are the starting point (the layer list comes below) */
        st = onnx_import_file(&imp, spec->model_onnx, ONNX_IMPORT_MAX_BYTES, err);
        if (st != LSQ_OK) goto out;
    }
    /* the networks take the dataset's shape, classes and normalisation */
    layers = net_spec_layers_for(spec, &rc.data, err);
    if (!layers) {
        st = err->code;
        goto out;
    }
    {
        /* the network must take the dataset's images */
        const json_t *in = json_object_get(layers, "input");
        const int c = (int)json_integer_value(json_array_get(in, 0));
        const int h = (int)json_integer_value(json_array_get(in, 1));
        const int w = (int)json_integer_value(json_array_get(in, 2));
        const char *dsname = spec->dataset_cache[0] ? spec->dataset_cache : spec->dataset;
        if (c != rc.data.c || h != rc.data.h || w != rc.data.w) {
            st = lsq_err_set(err, LSQ_ERR_INVALID, spec->model_onnx[0] ? "model.onnx" : "model.input",
                             "the model takes %dx%dx%d images; %s has %dx%dx%d", c, h, w,
                             dsname, rc.data.c, rc.data.h, rc.data.w);
            goto out;
        }
        if (spec->model_onnx[0] && imp.classes != rc.data.classes) {
            st = lsq_err_set(err, LSQ_ERR_INVALID, "model.onnx",
                             "the ONNX model has %d outputs; %s has %d classes", imp.classes,
                             dsname, rc.data.classes);
            goto out;
        }
    }

    /* where to start: a checkpoint in the folder resumes the run */
    train_phase phase;
    int start_epoch = 0, start_step = 0, resuming = 0;
    char ck[4096];
    path_in(ck, sizeof ck, out_dir, TRAIN_CKPT_FILE);
    if (file_exists(ck)) {
        st = ckpt_load(&resume, ck, err);
        if (st != LSQ_OK) goto out;
        const char *ph = json_string_value(json_object_get(resume.header, "phase"));
        phase = PH_COUNT;
        for (int i = 0; i < PH_COUNT; i++)
            if (ph && strcmp(ph, PHASE_NAMES[i]) == 0) phase = (train_phase)i;
        if (phase == PH_COUNT) {
            st = lsq_err_set(err, LSQ_ERR_FORMAT, ck, "%s: unknown phase in the checkpoint", ck);
            goto out;
        }
        start_epoch = (int)json_integer_value(json_object_get(resume.header, "epoch"));
        start_step = (int)json_integer_value(json_object_get(resume.header, "step"));
        resuming = 1;
        /* stopped between pretraining and the first LSQ checkpoint: the
         * checkpoint holds the full-precision net; LSQ starts afresh from
         * fp.lsqc */
        if (phase == PH_LSQ && !json_is_true(json_object_get(resume.header, "quantized")))
            resuming = 0, start_epoch = start_step = 0;
    } else if (!spec->quant.enabled) {
        phase = PH_TRAIN;
    } else {
        phase = spec->pretrain.enabled && !spec->init_from[0] ? PH_PRETRAIN : PH_LSQ;
    }
    /* every rank has seen the folder as it was before rank 0 writes to it */
    dist_barrier(rc.dist);
    emit(&rc, EV_START, json_pack("{s:s, s:s, s:b, s:i, s:i, s:s, s:i}", "name", spec->name, "phase",
                                  PHASE_NAMES[phase], "resumed", resuming, "epoch", start_epoch,
                                  "step", start_step, "dataset",
                                  spec->dataset_cache[0] ? spec->dataset_cache : spec->dataset,
                                  "train_images", rc.train.n));

    int max_batch = spec->train.batch_size > spec->pretrain.batch_size ? spec->train.batch_size
                                                                         : spec->pretrain.batch_size;
    /* full-precision phases */
    if (phase == PH_PRETRAIN || phase == PH_TRAIN) {
        const spec_train *t = phase == PH_PRETRAIN ? &spec->pretrain : &spec->train;
        st = net_build(&fp, layers, NULL, rc.data.classes, max_batch, err);
        if (st != LSQ_OK) goto out;
        have_fp = 1;
        fp.coll = dist_net_collective(rc.dist);
        net_init_params(&fp, t->seed);
        if ((st = sgd_init(&opt, &fp, err)) != LSQ_OK) goto out;
        if (resuming) {
            st = ckpt_apply(&resume, &fp, opt.momentum, 1, err);
            if (st != LSQ_OK) goto out;
        } else if (spec->init_from[0]) {
            lsq_ckpt c;
            if ((st = ckpt_load(&c, spec->init_from, err)) != LSQ_OK) goto out;
            st = ckpt_apply(&c, &fp, NULL, 1, err);
            ckpt_free(&c);
            if (st != LSQ_OK) {
                lsq_err_prefix(err, "init.from");
                goto out;
            }
        } else if (spec->model_onnx[0]) {
            /* the ONNX model's weights are the starting point */
            if ((st = onnx_import_set_params(&imp, &fp, err)) != LSQ_OK) goto out;
        }
        st = run_phase(&rc, phase, &fp, NULL, t, &opt, start_epoch, start_step,
                       resuming ? json_object_get(resume.header, "tally") : NULL, err);
        if (st != LSQ_OK) goto out;
        sgd_free(&opt);
        if (phase == PH_TRAIN) {
            st = finish_phase(&rc, &fp, TRAIN_MODEL_FILE, PH_DONE, err);
            if (st != LSQ_OK) goto out;
            st = finish_phase(&rc, &fp, TRAIN_FP_FILE, PH_DONE, err);
            if (st != LSQ_OK) goto out;
            phase = PH_DONE;
        } else {
            st = finish_phase(&rc, &fp, TRAIN_FP_FILE, PH_LSQ, err);
            if (st != LSQ_OK) goto out;
            phase = PH_LSQ;
        }
        start_epoch = start_step = 0;
        resuming = 0;
    }
    if (phase == PH_LSQ) {
        if (!have_fp) {
            /* the teacher / starting point: this run's pretrained model, or init.from */
            char fpp[4096];
            path_in(fpp, sizeof fpp, out_dir, TRAIN_FP_FILE);
            int had_fpp = file_exists(fpp);
            /* rank 0 may write fp.lsqc below: every rank has looked first */
            dist_barrier(rc.dist);
            const char *src = had_fpp ? fpp : spec->init_from;
            if (!src[0] && spec->model_onnx[0]) {
                /* the ONNX model is the full-precision model: kept beside
                 * the run as fp.lsqc, for resume and export */
                st = net_build(&fp, layers, NULL, rc.data.classes, max_batch, err);
                if (st != LSQ_OK) goto out;
                have_fp = 1;
                net_init_params(&fp, spec->train.seed);
                if ((st = onnx_import_set_params(&imp, &fp, err)) != LSQ_OK) goto out;
            } else if (!src[0]) {
                st = lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                                 "a quantized job needs a full-precision model: pretrain or init.from");
                goto out;
            } else {
                st = load_fp_model(&fp, src, max_batch, err);
                if (st != LSQ_OK) {
                    if (src == spec->init_from) lsq_err_prefix(err, "init.from");
                    goto out;
                }
                have_fp = 1;
                if ((st = check_fits(&fp, &rc.data, src, err)) != LSQ_OK) {
                    if (src == spec->init_from) lsq_err_prefix(err, "init.from");
                    goto out;
                }
                if (fp.quantized) {
                    st = lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                                     "init.from must be a full-precision model; %s is quantized",
                                     src);
                    goto out;
                }
            }
            if (!had_fpp) {
                /* keep the starting model beside the run, for resume and export */
                if (is_root(&rc)) {
                    json_t *meta = ckpt_meta(&rc, PH_DONE, 0, 0, 0);
                    st = ckpt_save(fpp, &fp, NULL, meta, err);
                    json_decref(meta);
                }
                if ((st = agree(&rc, st, err)) != LSQ_OK) goto out;
                emit_artifact(&rc, TRAIN_FP_FILE);
            }
        }
        if (!resuming) {
            double fa, fl;
            if (eval_global(&rc, &fp, spec->train.batch_size, &fa, &fl)) {
                /* nothing of the LSQ phase to keep: it starts afresh from fp.lsqc */
                st = lsq_err_set(err, LSQ_ERR_CANCELLED, NULL,
                                 "stopped on request before LSQ fine-tuning began");
                goto out;
            }
            emit(&rc, EV_LOG, json_pack("{s:s, s:f}", "message", "full-precision model",
                                        "test_acc", fa));
        }
        int ptq = spec->quant.method == QMETHOD_PTQ;
        if (ptq) {
            /* the calibrated network is the final model */
            if ((st = ptq_build(&rc, &fp, layers, &q, err)) != LSQ_OK) goto out;
            have_q = 1;
            rc.scored = &q;
        } else {
            if (!resuming && spec->quant.report_ptq) {
                /* what calibration alone gives, for comparison; LSQ then
                 * starts from the job's own initialisation */
                lsq_net pq;
                if ((st = ptq_build(&rc, &fp, layers, &pq, err)) != LSQ_OK) goto out;
                net_free(&pq);
            }
            st = net_build(&q, layers, &spec->quant, rc.data.classes, max_batch, err);
            if (st != LSQ_OK) goto out;
            have_q = 1;
            q.coll = dist_net_collective(rc.dist);
            net_init_params(&q, spec->train.seed);
            if (net_copy_matching(&q, &fp) == 0) {
                st = lsq_err_set(err, LSQ_ERR_INVALID, "init.from",
                                 "the full-precision model does not match the job's network");
                goto out;
            }
            net_quant_init_weights(&q, spec->quant.init);
            if ((st = sgd_init(&opt, &q, err)) != LSQ_OK) goto out;
            if (resuming) {
                st = ckpt_apply(&resume, &q, opt.momentum, 1, err);
                if (st != LSQ_OK) goto out;
            }
            st = run_phase(&rc, PH_LSQ, &q, spec->distill.enabled ? &fp : NULL, &spec->train,
                           &opt, start_epoch, start_step,
                           resuming ? json_object_get(resume.header, "tally") : NULL, err);
            if (st != LSQ_OK) goto out;
            sgd_free(&opt);
        }
        st = finish_phase(&rc, &q, TRAIN_MODEL_FILE, PH_DONE, err);
        if (st != LSQ_OK) goto out;
        phase = PH_DONE;
    }
    /* the deployable artifacts of the final model */
    {
        char mp[4096];
        path_in(mp, sizeof mp, out_dir, TRAIN_MODEL_FILE);
        lsq_net *final = have_q ? &q : (have_fp ? &fp : NULL);
        lsq_net loaded;
        int own = 0;
        if (!final) {
            st = load_fp_model(&loaded, mp, max_batch, err);
            if (st != LSQ_OK) goto out;
            final = &loaded;
            own = 1;
        }
        double acc = rc.last_test_acc, loss = rc.last_test_loss;
        if (final != rc.scored && eval_global(&rc, final, spec->train.batch_size, &acc, &loss)) {
            if (own) net_free(&loaded);
            st = lsq_err_set(err, LSQ_ERR_CANCELLED, NULL,
                             "stopped on request before the export; %s is written",
                             TRAIN_MODEL_FILE);
            goto out;
        }
        rc.last_test_acc = acc;
        /* a network with layers that a deployed form cannot carry yet
         * (deploy/support.h) still finishes: that artifact is skipped, and
         * a log event says which and why */
        json_t *skipped = json_array();
        if (is_root(&rc)) st = export_artifacts(final, out_dir, spec, skipped, err);
        st = agree(&rc, st, err);
        for (size_t k = 0; k < json_array_size(skipped); k++) {
            const json_t *s = json_array_get(skipped, k);
            const char *name = json_string_value(json_object_get(s, "artifact"));
            const char *why = json_string_value(json_object_get(s, "reason"));
            char msg[700];
            snprintf(msg, sizeof msg, "%s is not written: %s", name, why);
            emit(&rc, EV_LOG, json_pack("{s:s, s:s, s:s}", "message", msg, "artifact", name,
                                        "reason", why));
            if (rc.opts->progress) {
                fprintf(rc.opts->progress, "\n%s\n", msg);
                fflush(rc.opts->progress);
            }
        }
        json_decref(skipped);
        if (st == LSQ_OK) {
            for (int i = 0; export_artifact_names[i]; i++) {
                char ap[4096];
                path_in(ap, sizeof ap, out_dir, export_artifact_names[i]);
                if (file_exists(ap)) emit_artifact(&rc, export_artifact_names[i]);
            }
        }
        if (own) net_free(&loaded);
        if (st != LSQ_OK) goto out;
        if (test_acc) *test_acc = acc;
        emit(&rc, EV_DONE, json_pack("{s:f, s:f, s:f}", "test_acc", acc, "test_loss", loss, "seconds",
                                     now_s() - rc.t0));
    }
out:
    if (st != LSQ_OK && st != LSQ_ERR_CANCELLED)
        emit(&rc, EV_ERROR, json_pack("{s:s, s:s, s:s}", "code", LSQ_STATUS_NAMES[st], "message",
                                      err->message, "field", err->field));
    else if (st == LSQ_ERR_CANCELLED)
        emit(&rc, EV_ERROR, json_pack("{s:s, s:s}", "code", "cancelled", "message", err->message));
    if (have_fp) net_free(&fp);
    if (have_q) net_free(&q);
    sgd_free(&opt);
    ckpt_free(&resume);
    dataset_free(&rc.train);
    dataset_free(&rc.test);
    json_decref(layers);
    onnx_import_free(&imp);
    json_decref(rc.spec_json);
    return st;
}
