/* The packed model file (.lsqm): writing it from a trained network and
 * reading it back with every check (docs/model-format.md is the byte-level
 * reference). Layout (little-endian):
 *
 *   "LSQM" | u32 version (1) | u32 H | header JSON (H bytes)
 *   | u64 P | payload (P bytes) | u32 crc32 of every byte before it
 *
 * The header holds the architecture (the layer list), each conv/linear
 * layer's quantization and a table of tensors: name, type ("codes": b-bit
 * codes packed as pack.h describes; "f32": little-endian float32), shape,
 * and where its bytes lie in the payload. The integer engine (infer.h) runs
 * the file; this module only reads and writes it. */
#ifndef LSQ_LSQM_H
#define LSQ_LSQM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "deploy/infer.h"
#include "graph/net.h"

#define LSQM_VERSION 1
#define LSQM_MAGIC "LSQM"
/* magic + version + header length + payload length + crc */
#define LSQM_MIN_BYTES 24

typedef enum { LSQM_T_CODES, LSQM_T_F32, LSQM_T_COUNT } lsqm_ttype;
extern const char *const LSQM_TTYPE_NAMES[]; /* "codes", "f32" */

typedef struct {
    char name[96];     /* the network's view name: "conv2.weight", "bn1.running_var" */
    lsqm_ttype type;
    int bits;          /* codes: 2..8 */
    int is_signed;     /* codes: two's complement */
    int ndim, dims[4];
    size_t count;      /* product of dims */
    size_t off, bytes; /* within the payload */
} lsqm_tensor;

/* Quantization of one conv/linear layer as stored. */
typedef struct {
    char name[64];
    int quantized;          /* 0: float weights, float input */
    int weight_bits;
    int weight_channels;    /* weight steps: 1 or OC */
    int act_bits;
    int act_signed;
    int act_offset;         /* LSQ+: the input has an offset beta */
} lsqm_qlayer;

typedef struct {
    json_t *header;         /* owned */
    const json_t *model;    /* in header: {"input": [C, H, W], "layers": [...]} */
    int classes;
    int n_tensors;
    lsqm_tensor *tensors;   /* owned */
    int n_qlayers;
    lsqm_qlayer *qlayers;   /* owned */
    uint8_t *data;          /* owned: the whole file */
    size_t size;            /* file bytes */
    const uint8_t *payload; /* into data */
    size_t payload_bytes;
} lsqm_file;

/* Writes net as a .lsqm file (to a temporary name, synced, renamed). meta
 * (borrowed, may be NULL) is copied into the header under "meta" (job name,
 * dataset, spec quant settings, test accuracy). Quantized layers store their
 * weight codes packed at their bit width; float layers store float32. */
lsq_status lsqm_save(const char *path, const lsq_net *net, const json_t *meta, lsq_err *err);
/* (Both refuse a net with a layer the integer engine cannot run yet,
 * support.h: LSQ_ERR_INVALID naming that layer, and no file.) */

/* The same into memory: *out (malloc'd, the caller frees), *len. */
lsq_status lsqm_encode(const lsq_net *net, const json_t *meta, uint8_t **out, size_t *len,
                       lsq_err *err);

/* Checks and indexes the bytes of a file: size, magic, version, checksum,
 * header JSON, tensor table (types, bits, sizes, bounds). LSQ_ERR_FORMAT for
 * any problem, with a message that says what is wrong; name appears in the
 * messages. Takes ownership of data (malloc'd) in every case. */
lsq_status lsqm_parse(lsqm_file *f, uint8_t *data, size_t len, const char *name,
                      lsq_err *err);
/* Reads path and parses it (LSQ_ERR_IO when it cannot be read). */
lsq_status lsqm_read(lsqm_file *f, const char *path, lsq_err *err);
void lsqm_file_free(lsqm_file *f);

/* A tensor by name; NULL if absent. */
const lsqm_tensor *lsqm_find(const lsqm_file *f, const char *name);
/* A layer's quantization by name; NULL if absent. */
const lsqm_qlayer *lsqm_find_qlayer(const lsqm_file *f, const char *name);
/* Copies an f32 tensor into out (t->count floats). */
void lsqm_tensor_f32(const lsqm_file *f, const lsqm_tensor *t, float *out);
/* Unpacks a codes tensor into out (t->count int8 values; unsigned codes of
 * up to 7 bits fit, 8-bit unsigned codes are not used for weights). */
lsq_status lsqm_tensor_codes(const lsqm_file *f, const lsqm_tensor *t, int8_t *out,
                             lsq_err *err);

/* Compiles a parsed file into an integer-inference model (infer.c); the
 * file may be freed afterwards. NULL with err (LSQ_ERR_FORMAT for a file
 * whose tensors do not fit its layer list). */
lsqm_model *lsqm_load_file(const lsqm_file *f, lsq_err *err);

#endif
