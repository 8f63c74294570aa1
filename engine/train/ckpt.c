/* Checkpoint files: write atomically, read with every check, apply by name. */
#include "train/ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/file.h"
#include "core/spec.h"

typedef struct {
    FILE *f;
    uLong crc;
    int failed;
    int errnum;  /* errno of the first failed write */
} wr;

static void wr_bytes(wr *w, const void *p, size_t n)
{
    if (w->failed) return;
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->failed = 1;
        w->errnum = errno ? errno : EIO;
    }
    const unsigned char *b = p;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        w->crc = crc32(w->crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
}

static void wr_u32(wr *w, uint32_t x)
{
    unsigned char b[4] = {x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, x >> 24};
    wr_bytes(w, b, 4);
}

static void wr_u64(wr *w, uint64_t x)
{
    wr_u32(w, (uint32_t)x);
    wr_u32(w, (uint32_t)(x >> 32));
}

static json_t *views_json(const lsq_net *net)
{
    json_t *a = json_array();
    for (int i = 0; i < net->n_views; i++) {
        const net_view *v = &net->views[i];
        json_t *dims = json_array();
        for (int d = 0; d < v->ndim; d++) json_array_append_new(dims, json_integer(v->dims[d]));
        json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:I, s:b, s:o}", "name", v->name,
                                           "kind", PV_KIND_NAMES[v->kind], "off", (json_int_t)v->off,
                                           "count", (json_int_t)v->count, "state", v->in_state,
                                           "dims", dims));
    }
    return a;
}

lsq_status ckpt_save(const char *path, const lsq_net *net, const float *momentum,
                     const json_t *meta, lsq_err *err)
{
    lsq_status st = LSQ_OK;
    char tmp[4096];
    lsq_file_tmp_name(tmp, sizeof tmp, path);
    json_t *h = json_object();
    json_object_set_new(h, "format", json_string("lsqc"));
    json_object_set_new(h, "version", json_integer(CKPT_VERSION));
    if (meta) json_object_update(h, (json_t *)meta);
    json_object_set(h, "layers", net->layers);
    json_object_set_new(h, "views", views_json(net));
    char *text = json_dumps(h, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(h);
    FILE *f = NULL;
    if (!text) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory encoding the checkpoint header");
        goto out;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        st = lsq_err_errno(err, errno, path, "cannot write %s", tmp);
        goto out;
    }
    wr w = {f, crc32(0L, Z_NULL, 0), 0, 0};
    wr_bytes(&w, "LSQC", 4);
    wr_u32(&w, CKPT_VERSION);
    size_t hl = strlen(text);
    wr_u32(&w, (uint32_t)hl);
    wr_bytes(&w, text, hl);
    wr_u64(&w, net->n_params);
    wr_bytes(&w, net->params, net->n_params * sizeof(float));
    wr_u64(&w, net->n_state);
    wr_bytes(&w, net->state, net->n_state * sizeof(float));
    wr_u64(&w, momentum ? net->n_params : 0);
    if (momentum) wr_bytes(&w, momentum, net->n_params * sizeof(float));
    uint32_t crc = (uint32_t)w.crc;
    wr_u32(&w, crc);
    if (w.failed || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        st = lsq_err_errno(err, w.failed ? w.errnum : errno, path, "cannot write %s", tmp);
        goto out;
    }
    if (fclose(f) != 0) {
        f = NULL;
        st = lsq_err_errno(err, errno, path, "cannot write %s", tmp);
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        st = lsq_err_errno(err, errno, path, "cannot rename %s to %s", tmp, path);
        goto out;
    }
    lsq_file_sync_dir(path);
out:
    if (f) fclose(f);
    if (st != LSQ_OK) unlink(tmp);
    free(text);
    return st;
}

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const unsigned char *p) { return rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32; }

lsq_status ckpt_load(lsq_ckpt *c, const char *path, lsq_err *err)
{
    memset(c, 0, sizeof *c);
    lsq_status st = LSQ_OK;
    unsigned char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lsq_err_set(err, LSQ_ERR_IO, path, "cannot open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) goto ioerr;
    long size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) goto ioerr;
    if (size < 4 + 4 + 4 + 8 + 8 + 8 + 4) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path, "%s is not a checkpoint: %ld bytes is too short",
                         path, size);
        goto out;
    }
    buf = malloc((size_t)size);
    if (!buf) {
        st = lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory reading %s", path);
        goto out;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) goto ioerr;
    if (memcmp(buf, "LSQC", 4) != 0) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path, "%s is not a checkpoint (wrong magic)", path);
        goto out;
    }
    uint32_t version = rd_u32(buf + 4);
    if (version != CKPT_VERSION) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s has checkpoint version %u; this lsq reads version %d", path,
                         version, CKPT_VERSION);
        goto out;
    }
    size_t end = (size_t)size - 4;
    uint32_t want = rd_u32(buf + end);
    uint32_t got = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)end);
    if (want != got) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path,
                         "%s is corrupt: checksum %08x, expected %08x", path, got, want);
        goto out;
    }
    size_t pos = 8;
    uint32_t hl = rd_u32(buf + pos);
    pos += 4;
    if (hl > end - pos) goto trunc;
    json_error_t je;
    c->header = json_loadb((const char *)buf + pos, hl, 0, &je);
    if (!json_is_object(c->header)) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path, "%s has a bad header: %s", path, je.text);
        goto out;
    }
    pos += hl;
    float **dst[3] = {&c->params, &c->state, &c->mom};
    size_t *cnt[3] = {&c->n_params, &c->n_state, &c->n_mom};
    for (int k = 0; k < 3; k++) {
        if (end - pos < 8) goto trunc;
        uint64_t n = rd_u64(buf + pos);
        pos += 8;
        if (n > (end - pos) / sizeof(float)) goto trunc;
        *cnt[k] = (size_t)n;
        if (n) {
            *dst[k] = malloc((size_t)n * sizeof(float));
            if (!*dst[k]) {
                st = lsq_err_set(err, LSQ_ERR_NOMEM, path, "out of memory reading %s", path);
                goto out;
            }
            memcpy(*dst[k], buf + pos, (size_t)n * sizeof(float));
        }
        pos += (size_t)n * sizeof(float);
    }
    if (pos != end) {
        st = lsq_err_set(err, LSQ_ERR_FORMAT, path, "%s has %zu unexpected trailing bytes", path,
                         end - pos);
        goto out;
    }
    goto out;
trunc:
    st = lsq_err_set(err, LSQ_ERR_FORMAT, path, "%s is truncated", path);
    goto out;
ioerr:
    st = lsq_err_set(err, LSQ_ERR_IO, path, "cannot read %s: %s", path, strerror(errno));
out:
    if (f) fclose(f);
    free(buf);
    if (st != LSQ_OK) ckpt_free(c);
    return st;
}

lsq_status ckpt_apply(const lsq_ckpt *c, lsq_net *net, float *momentum, int strict, lsq_err *err)
{
    const json_t *views = json_object_get(c->header, "views");
    if (!json_is_array(views))
        return lsq_err_set(err, LSQ_ERR_FORMAT, "checkpoint", "checkpoint header has no views");
    for (int v = 0; v < net->n_views; v++) {
        net_view *nv = &net->views[v];
        size_t i;
        json_t *fv;
        int found = 0;
        json_array_foreach(views, i, fv) {
            const char *name = json_string_value(json_object_get(fv, "name"));
            if (!name || strcmp(name, nv->name) != 0) continue;
            json_int_t off = json_integer_value(json_object_get(fv, "off"));
            json_int_t count = json_integer_value(json_object_get(fv, "count"));
            int st_ = json_is_true(json_object_get(fv, "state"));
            size_t limit = st_ ? c->n_state : c->n_params;
            if (off < 0 || count < 0 || (size_t)off + (size_t)count > limit)
                return lsq_err_set(err, LSQ_ERR_FORMAT, "checkpoint",
                                   "checkpoint view %s lies outside its buffer", name);
            if ((size_t)count != nv->count || st_ != nv->in_state) {
                if (strict)
                    return lsq_err_set(err, LSQ_ERR_INVALID, "checkpoint",
                                       "checkpoint holds %s with %lld values; the network needs %zu",
                                       name, (long long)count, nv->count);
                break;
            }
            const float *src = (st_ ? c->state : c->params) + off;
            float *dstp = (nv->in_state ? net->state : net->params) + nv->off;
            memcpy(dstp, src, nv->count * sizeof(float));
            if (momentum && !nv->in_state && c->mom && c->n_mom == c->n_params)
                memcpy(momentum + nv->off, c->mom + off, nv->count * sizeof(float));
            found = 1;
            break;
        }
        if (!found && strict)
            return lsq_err_set(err, LSQ_ERR_INVALID, "checkpoint",
                               "checkpoint has no values for %s", nv->name);
    }
    return LSQ_OK;
}

lsq_status ckpt_build_net(lsq_net *net, const lsq_ckpt *c, int max_batch, lsq_err *err)
{
    const json_t *layers = json_object_get(c->header, "layers");
    const json_t *specj = json_object_get(c->header, "spec");
    lsq_spec spec;
    memset(&spec, 0, sizeof spec);
    lsq_status st = LSQ_OK;
    int quant = json_is_true(json_object_get(c->header, "quantized"));
    if (quant) {
        if (!specj) return lsq_err_set(err, LSQ_ERR_FORMAT, "checkpoint", "checkpoint has no spec");
        st = spec_from_json(&spec, specj, err);
        if (st != LSQ_OK) {
            lsq_err_prefix(err, "checkpoint spec");
            spec_free(&spec);
            return st;
        }
    }
    /* checkpoints from before datasets other than the 10-class built-in ones
     * carry no class count */
    const json_t *cj = json_object_get(c->header, "classes");
    json_int_t classes = json_is_integer(cj) ? json_integer_value(cj) : 10;
    if (classes < 1 || classes > 1 << 16) {
        spec_free(&spec);
        return lsq_err_set(err, LSQ_ERR_FORMAT, "checkpoint", "checkpoint has %lld classes",
                           (long long)classes);
    }
    st = net_build(net, layers, quant ? &spec.quant : NULL, (int)classes, max_batch, err);
    spec_free(&spec);
    if (st != LSQ_OK) return st;
    st = ckpt_apply(c, net, NULL, 1, err);
    if (st != LSQ_OK) net_free(net);
    return st;
}

void ckpt_free(lsq_ckpt *c)
{
    json_decref(c->header);
    free(c->params);
    free(c->state);
    free(c->mom);
    memset(c, 0, sizeof *c);
}
