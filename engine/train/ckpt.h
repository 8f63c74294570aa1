/* Checkpoints (.lsqc): everything needed to resume a run exactly or to rebuild
 * the trained network. Layout (little-endian):
 *   "LSQC" | u32 version (1) | u32 header bytes | header JSON
 *   | u64 n_params | f32 params[n_params]
 *   | u64 n_state  | f32 state[n_state]
 *   | u64 n_mom    | f32 momentum[n_mom]      (0 when not saved)
 *   | u32 crc32 of every byte before it (zlib's crc32)
 * The header holds the layer list (with the input's normalisation, "layers"
 * -> "normalize": {"mean", "std"}, when the dataset's inputs are normalised),
 * the class count, the normalised job spec, the named views of the buffers
 * and where the run stands (phase, epoch, step). Files are
 * written to a temporary name, synced and renamed: a crash never leaves half
 * a checkpoint under the real name. */
#ifndef LSQ_CKPT_H
#define LSQ_CKPT_H

#include <jansson.h>

#include "graph/net.h"

#define CKPT_VERSION 1

typedef struct {
    json_t *header;       /* owned */
    float *params;        /* owned */
    size_t n_params;
    float *state;
    size_t n_state;
    float *mom;           /* NULL when not saved */
    size_t n_mom;
} lsq_ckpt;

/* meta (borrowed) is merged into the header: phase, epoch, step, spec... */
lsq_status ckpt_save(const char *path, const lsq_net *net, const float *momentum,
                     const json_t *meta, lsq_err *err);
/* Reads and checks a file: magic, version, sizes, checksum. */
lsq_status ckpt_load(lsq_ckpt *c, const char *path, lsq_err *err);
/* Copies the saved values into net by view name (and momentum when both are
 * given). strict: every view of net must be in the file with the same size. */
lsq_status ckpt_apply(const lsq_ckpt *c, lsq_net *net, float *momentum, int strict,
                      lsq_err *err);
/* Rebuilds the network the checkpoint was saved from (its layer list and
 * quantization) and loads its values. */
lsq_status ckpt_build_net(lsq_net *net, const lsq_ckpt *c, int max_batch, lsq_err *err);
void ckpt_free(lsq_ckpt *c);

#endif
