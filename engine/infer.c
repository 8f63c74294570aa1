/* TEMPORARY stand-in for the integer engine (engine/infer.h) so that lsqd
 * builds before the real engine/infer.c exists; replaced by it. Every load
 * fails with LSQ_ERR_INTERNAL, which POST /predict answers with 503. */
#include "infer.h"

#include <stddef.h>

struct lsqm_model {
    int unused;
};

lsqm_model *lsqm_load(const char *path, lsq_err *err)
{
    lsq_err_set(err, LSQ_ERR_INTERNAL, NULL, "integer engine not available (reading %s)", path);
    return NULL;
}

void lsqm_free(lsqm_model *m) { (void)m; }

void lsqm_input_shape(const lsqm_model *m, int *c, int *h, int *w, int *classes)
{
    (void)m;
    *c = 1;
    *h = 28;
    *w = 28;
    *classes = 10;
}

lsq_status lsqm_predict(const lsqm_model *m, const uint8_t *pixels, int n, float *logits,
                        float *probs, int threads, lsq_err *err)
{
    (void)m; (void)pixels; (void)n; (void)logits; (void)probs; (void)threads;
    return lsq_err_set(err, LSQ_ERR_INTERNAL, NULL, "integer engine not available");
}
