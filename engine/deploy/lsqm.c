/* The .lsqm packed model file: encoder and checked reader (lsqm.h,
 * docs/model-format.md). */
#include "deploy/lsqm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/file.h"
#include "deploy/support.h"
#include "quant/pack.h"
#include "quant/quant.h"

const char *const LSQM_TTYPE_NAMES[] = {"codes", "f32"};
_Static_assert(sizeof LSQM_TTYPE_NAMES / sizeof *LSQM_TTYPE_NAMES == LSQM_T_COUNT,
               "LSQM_TTYPE_NAMES must name every lsqm_ttype");

/* Header and payload must stay far below these (a sanity bound for readers,
 * not a format limit of the fields). */
#define LSQM_MAX_HEADER (64u << 20)
#define LSQM_MAX_TENSORS 65536

/* ------------------------------------------------------------ encoding */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int oom;
} buf;

static void buf_put(buf *b, const void *src, size_t n)
{
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t x)
{
    uint8_t v[4] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
    buf_put(b, v, 4);
}

static void put_u64(buf *b, uint64_t x)
{
    put_u32(b, (uint32_t)x);
    put_u32(b, (uint32_t)(x >> 32));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static const float *view_data(const lsq_net *net, int v)
{
    const net_view *vw = &net->views[v];
    return (vw->in_state ? net->state : net->params) + vw->off;
}

static json_t *dims_json(const net_view *v)
{
    json_t *a = json_array();
    for (int i = 0; i < v->ndim; i++) json_array_append_new(a, json_integer(v->dims[i]));
    return a;
}

/* Appends a float32 tensor (little-endian; the host order on x86 and ARM). */
static void add_f32(buf *pay, json_t *table, const lsq_net *net, int v)
{
    const net_view *vw = &net->views[v];
    json_array_append_new(table, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", vw->name,
                                           "type", "f32", "dims", dims_json(vw), "offset",
                                           (json_int_t)pay->len, "bytes",
                                           (json_int_t)(vw->count * sizeof(float))));
    buf_put(pay, view_data(net, v), vw->count * sizeof(float));
}

/* Appends a conv/linear weight as packed signed codes. */
static lsq_status add_codes(buf *pay, json_t *table, const lsq_net *net, const net_node *nd,
                            lsq_err *err)
{
    const net_view *vw = &net->views[nd->wv];
    const float *w = view_data(net, nd->wv);
    const float *step = view_data(net, nd->wq.step_view);
    size_t n = vw->count, bytes = lsq_pack_size(n, nd->wq.r.bits);
    float *tmp = malloc(n * sizeof *tmp);
    int32_t *codes = malloc(n * sizeof *codes);
    int8_t *c8 = malloc(n);
    uint8_t *packed = malloc(bytes ? bytes : 1);
    lsq_status st = LSQ_OK;
    if (!tmp || !codes || !c8 || !packed) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory packing %s", vw->name);
        goto out;
    }
    quant_forward(tmp, codes, w, step, NULL, nd->wq.channels, nd->wq.per, &nd->wq.r);
    for (size_t i = 0; i < n; i++) c8[i] = (int8_t)codes[i];
    if ((st = lsq_pack_signed(packed, c8, n, nd->wq.r.bits, err)) != LSQ_OK) goto out;
    json_array_append_new(table, json_pack("{s:s, s:s, s:i, s:b, s:o, s:I, s:I}", "name",
                                           vw->name, "type", "codes", "bits", nd->wq.r.bits,
                                           "signed", 1, "dims", dims_json(vw), "offset",
                                           (json_int_t)pay->len, "bytes", (json_int_t)bytes));
    buf_put(pay, packed, bytes);
out:
    free(tmp);
    free(codes);
    free(c8);
    free(packed);
    return st;
}

lsq_status lsqm_encode(const lsq_net *net, const json_t *meta, uint8_t **out, size_t *len,
                       lsq_err *err)
{
    *out = NULL;
    *len = 0;
    /* a layer the integer engine cannot run: no file, rather than one that
     * fails to load or computes something else */
    lsq_status st = deploy_check_layers(net, DEPLOY_INTEGER, err);
    if (st != LSQ_OK) return st;
    buf pay = {0}, file = {0};
    char *htext = NULL;
    json_t *table = json_array();
    json_t *qlayers = json_object();
    json_t *header = json_pack("{s:s, s:i, s:s, s:O, s:i, s:o, s:o}", "format", "lsqm",
                               "version", LSQM_VERSION, "producer", "lsqd", "model",
                               net->layers, "classes", net->classes, "quant_layers", qlayers,
                               "tensors", table);
    if (!header) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory encoding the model");
        goto out;
    }
    if (meta) json_object_set_new(header, "meta", json_deep_copy(meta));
    for (int i = 1; i < net->n_nodes && st == LSQ_OK; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->op == OP_CONV || nd->op == OP_LINEAR) {
            if (nd->wq.on) {
                json_object_set_new(
                    qlayers, nd->name,
                    json_pack("{s:b, s:i, s:i, s:i, s:b, s:b}", "quantized", 1, "weight_bits",
                              nd->wq.r.bits, "weight_channels", nd->wq.channels, "act_bits",
                              nd->aq.r.bits, "act_signed", nd->aq.r.is_signed, "act_offset",
                              nd->aq.offset_view >= 0));
                st = add_codes(&pay, table, net, nd, err);
                add_f32(&pay, table, net, nd->wq.step_view);
                add_f32(&pay, table, net, nd->aq.step_view);
                if (nd->aq.offset_view >= 0) add_f32(&pay, table, net, nd->aq.offset_view);
            } else {
                json_object_set_new(qlayers, nd->name, json_pack("{s:b}", "quantized", 0));
                add_f32(&pay, table, net, nd->wv);
            }
            if (nd->bv >= 0) add_f32(&pay, table, net, nd->bv);
        } else if (nd->op == OP_BN) {
            add_f32(&pay, table, net, nd->gammav);
            add_f32(&pay, table, net, nd->betav);
            add_f32(&pay, table, net, nd->rmeanv);
            add_f32(&pay, table, net, nd->rvarv);
        }
    }
    if (st != LSQ_OK) goto out;
    htext = json_dumps(header, JSON_COMPACT);
    if (!htext || pay.oom) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory encoding the model");
        goto out;
    }
    size_t hl = strlen(htext);
    buf_put(&file, LSQM_MAGIC, 4);
    put_u32(&file, LSQM_VERSION);
    put_u32(&file, (uint32_t)hl);
    buf_put(&file, htext, hl);
    put_u64(&file, pay.len);
    buf_put(&file, pay.p, pay.len);
    if (file.oom) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory encoding the model");
        goto out;
    }
    put_u32(&file, (uint32_t)crc32(crc32(0L, Z_NULL, 0), file.p, (uInt)file.len));
    if (file.oom) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, NULL, "out of memory encoding the model");
        goto out;
    }
    *out = file.p;
    *len = file.len;
    file.p = NULL;
out:
    free(htext);
    free(pay.p);
    free(file.p);
    json_decref(header);
    return st;
}

lsq_status lsqm_save(const char *path, const lsq_net *net, const json_t *meta, lsq_err *err)
{
    uint8_t *data;
    size_t len;
    lsq_status st = lsqm_encode(net, meta, &data, &len, err);
    if (st != LSQ_OK) return st;
    st = lsq_file_write_atomic(path, data, len, path, err);
    free(data);
    return st;
}

/* ------------------------------------------------------------ reading */

static lsq_status fmt_err(lsq_err *err, const char *name, const char *fmt, const char *detail)
{
    return lsq_err_set(err, LSQ_ERR_FORMAT, name, fmt, name, detail);
}

static int get_int_key(const json_t *o, const char *key, long long lo, long long hi,
                       long long *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return -1;
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static lsq_status parse_tensor(lsqm_file *f, const json_t *t, int i, const char *name,
                               lsq_err *err)
{
    lsqm_tensor *d = &f->tensors[i];
    char what[160];
    snprintf(what, sizeof what, "tensors[%d]", i);
    if (!json_is_object(t)) return fmt_err(err, name, "%s: header %s is not an object", what);
    const char *tn = json_string_value(json_object_get(t, "name"));
    if (!tn || !*tn || strlen(tn) >= sizeof d->name)
        return fmt_err(err, name, "%s: header %s has no valid name", what);
    snprintf(d->name, sizeof d->name, "%s", tn);
    snprintf(what, sizeof what, "tensor '%s'", tn);
    for (int k = 0; k < i; k++)
        if (strcmp(f->tensors[k].name, tn) == 0)
            return fmt_err(err, name, "%s: %s appears twice", what);
    const char *ty = json_string_value(json_object_get(t, "type"));
    int type = -1;
    for (int k = 0; ty && k < LSQM_T_COUNT; k++)
        if (strcmp(ty, LSQM_TTYPE_NAMES[k]) == 0) type = k;
    if (type < 0) return fmt_err(err, name, "%s: %s has an unknown type (codes or f32)", what);
    d->type = (lsqm_ttype)type;
    const json_t *dims = json_object_get(t, "dims");
    if (!json_is_array(dims) || json_array_size(dims) < 1 || json_array_size(dims) > 4)
        return fmt_err(err, name, "%s: %s needs dims: 1 to 4 sizes", what);
    d->ndim = (int)json_array_size(dims);
    d->count = 1;
    for (int k = 0; k < d->ndim; k++) {
        const json_t *x = json_array_get(dims, (size_t)k);
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > (1 << 24))
            return fmt_err(err, name, "%s: %s has a dimension out of range", what);
        d->dims[k] = (int)json_integer_value(x);
        d->count *= (size_t)d->dims[k];
        if (d->count > ((size_t)1 << 31))
            return fmt_err(err, name, "%s: %s is implausibly large", what);
    }
    long long off, bytes, bits = 32;
    if (get_int_key(t, "offset", 0, (long long)f->payload_bytes, &off) ||
        get_int_key(t, "bytes", 0, (long long)f->payload_bytes, &bytes))
        return fmt_err(err, name, "%s: %s needs offset and bytes inside the payload", what);
    if ((unsigned long long)off + (unsigned long long)bytes > f->payload_bytes)
        return fmt_err(err, name, "%s: %s runs past the end of the payload", what);
    size_t want;
    if (d->type == LSQM_T_CODES) {
        if (get_int_key(t, "bits", 2, 8, &bits))
            return fmt_err(err, name, "%s: %s needs bits in 2..8", what);
        const json_t *sg = json_object_get(t, "signed");
        if (!json_is_boolean(sg)) return fmt_err(err, name, "%s: %s needs signed: true|false", what);
        d->is_signed = json_is_true(sg);
        d->bits = (int)bits;
        want = lsq_pack_size(d->count, d->bits);
    } else {
        d->bits = 32;
        want = d->count * sizeof(float);
    }
    if ((size_t)bytes != want)
        return fmt_err(err, name, "%s: %s has the wrong byte count for its shape and type", what);
    d->off = (size_t)off;
    d->bytes = (size_t)bytes;
    return LSQ_OK;
}

static lsq_status parse_qlayers(lsqm_file *f, const json_t *q, const char *name, lsq_err *err)
{
    if (!json_is_object(q)) return fmt_err(err, name, "%s: header has no quant_layers object%s", "");
    size_t n = json_object_size(q);
    f->qlayers = calloc(n ? n : 1, sizeof *f->qlayers);
    if (!f->qlayers) return lsq_err_set(err, LSQ_ERR_NOMEM, name, "out of memory reading %s", name);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)q, k, v) {
        lsqm_qlayer *l = &f->qlayers[f->n_qlayers];
        if (strlen(k) >= sizeof l->name || !json_is_object(v) ||
            !json_is_boolean(json_object_get(v, "quantized")))
            return fmt_err(err, name, "%s: quant_layers entry '%s' is malformed", k);
        snprintf(l->name, sizeof l->name, "%s", k);
        l->quantized = json_is_true(json_object_get(v, "quantized"));
        if (l->quantized) {
            long long wb, wc, ab;
            const json_t *as = json_object_get(v, "act_signed"), *ao = json_object_get(v, "act_offset");
            if (get_int_key(v, "weight_bits", 2, 8, &wb) || get_int_key(v, "act_bits", 2, 8, &ab) ||
                get_int_key(v, "weight_channels", 1, 1 << 16, &wc) || !json_is_boolean(as) ||
                !json_is_boolean(ao))
                return fmt_err(err, name, "%s: quant_layers entry '%s' is malformed", k);
            l->weight_bits = (int)wb;
            l->act_bits = (int)ab;
            l->weight_channels = (int)wc;
            l->act_signed = json_is_true(as);
            l->act_offset = json_is_true(ao);
        }
        f->n_qlayers++;
    }
    return LSQ_OK;
}

lsq_status lsqm_parse(lsqm_file *f, uint8_t *data, size_t len, const char *name, lsq_err *err)
{
    memset(f, 0, sizeof *f);
    f->data = data;
    f->size = len;
    char d[160];
    if (len < LSQM_MIN_BYTES) {
        snprintf(d, sizeof d, "%zu bytes, a .lsqm file has at least %d", len, LSQM_MIN_BYTES);
        return fmt_err(err, name, "%s: truncated: %s", d);
    }
    if (memcmp(data, LSQM_MAGIC, 4) != 0)
        return fmt_err(err, name, "%s: not a .lsqm model (bad magic; expected \"LSQM\")%s", "");
    uint32_t version = get_u32(data + 4);
    if (version != LSQM_VERSION) {
        snprintf(d, sizeof d, "%u; this build reads version %d", version, LSQM_VERSION);
        return fmt_err(err, name,
                       version > LSQM_VERSION ? "%s: format version %s (written by a newer lsqd)"
                                              : "%s: bad format version %s",
                       d);
    }
    uint32_t hl = get_u32(data + 8);
    if (hl > LSQM_MAX_HEADER || (size_t)hl > len - LSQM_MIN_BYTES) {
        snprintf(d, sizeof d, "header of %u bytes in a %zu-byte file", hl, len);
        return fmt_err(err, name, "%s: truncated or corrupt: %s", d);
    }
    uint64_t pl = get_u64(data + 12 + hl);
    if (pl != (uint64_t)(len - LSQM_MIN_BYTES - hl)) {
        snprintf(d, sizeof d, "payload of %llu bytes, the file holds %zu",
                 (unsigned long long)pl, len - LSQM_MIN_BYTES - hl);
        return fmt_err(err, name, "%s: truncated or corrupt: %s", d);
    }
    uint32_t want = get_u32(data + len - 4);
    uint32_t got = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)(len - 4));
    if (want != got) {
        snprintf(d, sizeof d, "stored %08x, computed %08x", want, got);
        return fmt_err(err, name, "%s: checksum mismatch (corrupt file): %s", d);
    }
    f->payload = data + 20 + hl;
    f->payload_bytes = (size_t)pl;
    json_error_t je;
    f->header = json_loadb((const char *)data + 12, hl, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(f->header))
        return fmt_err(err, name, "%s: the header is not a JSON object: %s", je.text);
    f->model = json_object_get(f->header, "model");
    if (!json_is_object(f->model) || !json_is_array(json_object_get(f->model, "layers")))
        return fmt_err(err, name, "%s: the header has no model layer list%s", "");
    long long classes;
    if (get_int_key(f->header, "classes", 1, 1 << 16, &classes))
        return fmt_err(err, name, "%s: the header has no valid class count%s", "");
    f->classes = (int)classes;
    lsq_status st = parse_qlayers(f, json_object_get(f->header, "quant_layers"), name, err);
    if (st != LSQ_OK) return st;
    const json_t *table = json_object_get(f->header, "tensors");
    if (!json_is_array(table) || json_array_size(table) > LSQM_MAX_TENSORS)
        return fmt_err(err, name, "%s: the header has no tensor table%s", "");
    size_t nt = json_array_size(table);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    if (!f->tensors) return lsq_err_set(err, LSQ_ERR_NOMEM, name, "out of memory reading %s", name);
    for (size_t i = 0; i < nt; i++) {
        if ((st = parse_tensor(f, json_array_get(table, i), (int)i, name, err)) != LSQ_OK)
            return st;
        f->n_tensors++;
    }
    return LSQ_OK;
}

lsq_status lsqm_read(lsqm_file *f, const char *path, lsq_err *err)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return lsq_err_set(err, LSQ_ERR_IO, path, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, r;
    uint8_t *data = malloc(cap);
    while (data && (r = fread(data + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            uint8_t *nd = cap > ((size_t)1 << 34) ? NULL : realloc(data, cap * 2);
            if (!nd) {
                free(data);
                data = NULL;
                break;
            }
            data = nd;
            cap *= 2;
        }
    }
    int bad = ferror(fp);
    fclose(fp);
    if (!data) return lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory reading %s", path);
    if (bad) {
        free(data);
        return lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s", path);
    }
    return lsqm_parse(f, data, n, path, err);
}

void lsqm_file_free(lsqm_file *f)
{
    if (!f) return;
    json_decref(f->header);
    free(f->tensors);
    free(f->qlayers);
    free(f->data);
    memset(f, 0, sizeof *f);
}

const lsqm_tensor *lsqm_find(const lsqm_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const lsqm_qlayer *lsqm_find_qlayer(const lsqm_file *f, const char *name)
{
    for (int i = 0; i < f->n_qlayers; i++)
        if (strcmp(f->qlayers[i].name, name) == 0) return &f->qlayers[i];
    return NULL;
}

void lsqm_tensor_f32(const lsqm_file *f, const lsqm_tensor *t, float *out)
{
    memcpy(out, f->payload + t->off, t->count * sizeof(float));
}

lsq_status lsqm_tensor_codes(const lsqm_file *f, const lsqm_tensor *t, int8_t *out, lsq_err *err)
{
    if (t->type != LSQM_T_CODES)
        return lsq_err_set(err, LSQ_ERR_FORMAT, t->name, "tensor '%s' holds floats, not codes",
                           t->name);
    if (t->is_signed) return lsq_unpack_signed(out, f->payload + t->off, t->count, t->bits, err);
    if (t->bits > 7)
        return lsq_err_set(err, LSQ_ERR_FORMAT, t->name,
                           "tensor '%s': 8-bit unsigned codes do not fit int8", t->name);
    return lsq_unpack_unsigned((uint8_t *)out, f->payload + t->off, t->count, t->bits, err);
}
