#!/usr/bin/python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/:
a few small valid inputs each (plus a few near-misses), made here with the
standard library, a 12-line libjpeg program for the JPEG seeds, and the gcc
build's `lsq` for the checkpoint and .lsqm seeds (a one-epoch MLP on 64
Fashion-MNIST images). The outputs are committed; rerun after a format
changes: /usr/bin/python3 fuzz/make-corpus.py [BUILD] (default build/);
`--http` writes fuzz/corpus/http/ only (no build needed)."""
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--http"
                        else os.path.join(ROOT, "build"))


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def png(w, h, color, pixels=None):
    """A PNG: color 0 grey, 2 RGB, 3 palette, 6 RGBA; 8 bits."""
    ch = {0: 1, 2: 3, 3: 1, 6: 4}[color]
    rows = b""
    for y in range(h):
        rows += b"\0" + bytes(((x * 37 + y * 11 + k * 5) % 256) if pixels is None else pixels
                               for x in range(w) for k in range(ch))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    if color == 3:
        out += chunk(b"PLTE", bytes(range(48)))
        rows = bytes(b % 16 for b in rows)
    return out + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


JPEG_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
int main(int argc, char **argv) {
    int w = atoi(argv[2]), h = atoi(argv[3]), c = atoi(argv[4]);
    FILE *f = fopen(argv[1], "wb");
    struct jpeg_compress_struct cinfo; struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr); jpeg_create_compress(&cinfo); jpeg_stdio_dest(&cinfo, f);
    cinfo.image_width = w; cinfo.image_height = h; cinfo.input_components = c;
    cinfo.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo); if (argc > 5) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    unsigned char row[3 * 64];
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w * c; x++) row[x] = (unsigned char)(x * 7 + y * 13);
        JSAMPROW r = row; jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo); jpeg_destroy_compress(&cinfo); fclose(f); return 0;
}
"""


def jpegs(tmp):
    src, exe = os.path.join(tmp, "j.c"), os.path.join(tmp, "j")
    with open(src, "w") as f:
        f.write(JPEG_C)
    subprocess.run(["cc", "-o", exe, src, "-ljpeg"], check=True)
    out = []
    for w, h, c, prog in ((12, 10, 1, 0), (16, 16, 3, 0), (9, 7, 3, 1)):
        p = os.path.join(tmp, "x.jpg")
        subprocess.run([exe, p, str(w), str(h), str(c)] + (["p"] if prog else []), check=True)
        out.append(open(p, "rb").read())
    return out


def idx(dims, data, type_=0x08):
    return struct.pack(">BBBB", 0, 0, type_, len(dims)) + b"".join(
        struct.pack(">I", d) for d in dims) + data


def npy(arr_bytes, descr, shape):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join("%d," % s for s in shape) if len(shape) == 1 else ", ".join(map(str, shape)))
    hdr = hdr.encode()
    pad = 64 - (10 + len(hdr) + 1) % 64
    hdr += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + arr_bytes


def tar_bytes(files, mode="w"):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode=mode) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
    return b.getvalue()


def zip_bytes(files, comp=zipfile.ZIP_DEFLATED):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", comp) as z:
        for name, data in files:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=comp)
    return b.getvalue()


def http_seeds():
    """fuzz/http.c's requests: "METHOD PATH", header lines, a blank line, the
    body; @admin and @user are the two tokens the target stores."""
    spec = {"name": "seed", "model": {"arch": "cnn-small"},
            "dataset": {"train_limit": 64, "test_limit": 32}, "quant": {"weight_bits": 4},
            "train": {"epochs": 1}, "threads": 1, "notify_url": "http://127.0.0.1:1/hook"}
    js = "Content-Type: application/json\n"
    seeds = {
        "submit": ("POST /api/v1/jobs", js + "Authorization: Bearer @user\n", json.dumps(spec)),
        "submit-admin": ("POST /api/v1/jobs", js + "Authorization: Bearer @admin\n",
                         json.dumps(spec)),
        "submit-bad-json": ("POST /api/v1/jobs", js + "Authorization: Bearer @user\n",
                            '{"name": "x", "model": {"layers": [}'),
        "submit-bad-field": ("POST /api/v1/jobs", js + "Authorization: Bearer @user\n",
                             '{"name": 7, "train": {"epochs": -1}, "threads": 1e300}'),
        "submit-not-object": ("POST /api/v1/jobs", js + "Authorization: Bearer @user\n",
                              '["a", null, 1.5, "\\ud800"]'),
        "submit-no-type": ("POST /api/v1/jobs", "Authorization: Bearer @user\n", "{}"),
        "list": ("GET /api/v1/jobs?limit=5&state=queued", "Authorization: Bearer @user\n", ""),
        "list-after": ("GET /api/v1/jobs?after=1&owner=alice", "Authorization: Bearer @admin\n", ""),
        "get": ("GET /api/v1/jobs/1", "Authorization: Bearer @user\n", ""),
        "get-bad-id": ("GET /api/v1/jobs/%ff%00x", "Authorization: Bearer @user\n", ""),
        "cancel": ("POST /api/v1/jobs/1/cancel", "Authorization: Bearer @admin\n", ""),
        "events": ("GET /api/v1/jobs/1/events", "Authorization: Bearer @user\nLast-Event-ID: 3\n",
                   ""),
        "events-post": ("POST /api/v1/jobs/1/events", js + "Authorization: Bearer lsqd_x\n",
                        '{"seq": 1, "events": [{"type": "epoch", "epoch": 1}]}'),
        "metrics-job": ("GET /api/v1/jobs/1/metrics", "Authorization: Bearer @user\n", ""),
        "artifacts": ("GET /api/v1/jobs/1/artifacts", "Authorization: Bearer @user\n", ""),
        "artifact": ("GET /api/v1/jobs/1/artifacts/..%2fmodel.onnx",
                     "Authorization: Bearer @user\n", ""),
        "predict": ("POST /api/v1/jobs/1/predict", js + "Authorization: Bearer @user\n",
                    '{"images": [[0, 1, 2, 255]]}'),
        "webhook-secret": ("GET /api/v1/webhook-secret", "Authorization: Bearer @user\n", ""),
        "datasets-url": ("POST /api/v1/datasets", js + "Authorization: Bearer @user\n",
                         '{"url": "http://127.0.0.1:1/d.tar.gz", "name": "d"}'),
        "datasets-file": ("POST /api/v1/datasets?name=d.zip",
                          "Content-Type: application/octet-stream\nAuthorization: Bearer @user\n",
                          "PK\x03\x04"),
        "datasets-list": ("GET /api/v1/datasets", "Authorization: Bearer @user\n", ""),
        "dataset-get": ("GET /api/v1/datasets/1", "Authorization: Bearer @user\n", ""),
        "dataset-samples": ("GET /api/v1/datasets/1/samples.png", "Authorization: Bearer @user\n",
                            ""),
        "dataset-delete": ("DELETE /api/v1/datasets/1", "Authorization: Bearer @admin\n", ""),
        "models-upload": ("POST /api/v1/models?name=m.onnx",
                          "Content-Type: application/octet-stream\nAuthorization: Bearer @user\n",
                          "\x08\x07\x12\x04lsqd"),
        "models-list": ("GET /api/v1/models", "Authorization: Bearer @user\n", ""),
        "model-get": ("GET /api/v1/models/1", "Authorization: Bearer @user\n", ""),
        "model-delete": ("DELETE /api/v1/models/1", "Authorization: Bearer @user\n", ""),
        "openapi": ("HEAD /api/v1/openapi.json", "Authorization: Bearer @user\n", ""),
        "healthz": ("GET /healthz", "", ""),
        "metrics": ("GET /metrics", "Authorization: Bearer @admin\n", ""),
        "metrics-user": ("GET /metrics", "Authorization: Bearer @user\n", ""),
        "no-token": ("GET /api/v1/jobs", "Authorization: Basic Zm9vOmJhcg==\n", ""),
        "bad-host": ("GET /api/v1/jobs", "Host: evil.example:80\nAuthorization: Bearer @user\n", ""),
        "options": ("OPTIONS /api/v1/jobs/1", "", ""),
        "wrong-method": ("PUT /api/v1/models", "Authorization: Bearer @user\n", ""),
        "static": ("GET /static/app.js", "", ""),
        "unknown": ("GET /api/v2/%e2%82%ac", "", ""),
    }
    for name, (line, headers, body) in seeds.items():
        put("http", name, (line + "\n" + headers + "\n" + body).encode("latin-1"))


def main():
    http_seeds()
    shutil.rmtree(OUT, ignore_errors=True)
    tmp = tempfile.mkdtemp()
    try:
        # job specs
        put("spec", "empty.json", "{}")
        put("spec", "quant.json", json.dumps({
            "name": "w2", "model": {"arch": "cnn-small"}, "dataset": {"augment": {"flip": True}},
            "quant": {"weight_bits": 2, "granularity": "channel", "grad_scale": 0.5,
                      "layers": {"fc1": {"weight_bits": 4, "act_sign": "lsq+"}, "conv1": "float"}},
            "distill": {"temperature": 2}, "train": {"epochs": 1, "lr": 0.01,
                                                      "schedule": "constant"}, "threads": 2}))
        put("spec", "layers.json", json.dumps({
            "model": {"layers": [{"type": "conv", "out": 4, "k": 3}, {"type": "relu"},
                                 {"type": "flatten"}, {"type": "linear", "out": 10}]},
            "quant": None, "pretrain": {"epochs": 1}, "resources": {"mem_mb": 100},
            "nodes": 2, "tasks_per_node": 2, "notify_url": "http://127.0.0.1:1/x"}))
        put("spec", "ptq.json", json.dumps({"quant": {"method": "ptq", "calibration_images": 8},
                                            "dataset": {"name": "mnist", "train_limit": 10}}))
        # events
        put("events", "epoch.json", '{"type":"epoch","epoch":1,"test_acc":0.5,"time":1.5}')
        put("events", "progress.json", '{"type":"progress","step":3,"loss":2.3}')
        put("events", "error.json", '{"type":"error","code":"invalid","message":"x","field":"a.b"}')
        put("events", "artifact.json", '{"type":"artifact","path":"model.lsqm","bytes":100}')
        # ONNX: the smallest models of the import tests, good and refused
        fx = os.path.join(ROOT, "tests", "fixtures", "onnx")
        for n in ("mobilenet_op10_eval.onnx", "concat_op13_eval.onnx"):
            put("onnx", n, open(os.path.join(fx, n), "rb").read())
        for n in sorted(os.listdir(os.path.join(fx, "bad"))):
            put("onnx", "bad-" + n, open(os.path.join(fx, "bad", n), "rb").read())
        # IDX
        imgs = idx([3, 4, 4], bytes(range(48)))
        labs = idx([3], bytes([1, 2, 9]))
        put("idx", "images.idx3", imgs)
        put("idx", "labels.idx1", labs)
        put("idx", "images.idx3.gz", gzip.compress(imgs, mtime=0))
        put("idx", "labels-i16.idx1", idx([3], struct.pack(">3h", 1, 300, 7), 0x0B))
        put("idx", "labels-i32.idx1", idx([2], struct.pack(">2i", 5, 70000), 0x0C))
        put("idx", "rgb.idx4", idx([2, 3, 2, 2], bytes(range(24))))
        # npz
        x = npy(bytes(range(48)), "|u1", (3, 4, 4))
        y = npy(struct.pack("<3q", 0, 1, 2), "<i8", (3,))
        yt = npy(struct.pack("<3i", 2, 1, 0), "<i4", (3,))
        npz = [("x_train.npy", x), ("y_train.npy", y), ("x_test.npy", x), ("y_test.npy", yt)]
        put("npz", "mnist-like.npz", zip_bytes(npz))
        put("npz", "stored.npz", zip_bytes(npz, zipfile.ZIP_STORED))
        xc = npy(bytes(range(2 * 4 * 4 * 3)), "|u1", (2, 4, 4, 3))
        yc = npy(struct.pack("<2B", 0, 1), "|u1", (2,))
        put("npz", "rgb.npz", zip_bytes([("x_train.npy", xc), ("y_train.npy", yc),
                                         ("x_test.npy", xc), ("y_test.npy", yc)]))
        # archives: first byte = format (0 guess, 1 idx, 2 cifar10, 3 cifar100, 4 folder)
        idx_files = [("train-images-idx3-ubyte", imgs), ("train-labels-idx1-ubyte", labs),
                     ("t10k-images-idx3-ubyte", imgs), ("t10k-labels-idx1-ubyte", labs)]
        put("archive", "idx.tar", b"\x00" + tar_bytes(idx_files))
        put("archive", "idx.tar.gz", b"\x01" + tar_bytes(idx_files, "w:gz"))
        rec10 = b"".join(bytes([k]) + bytes((k * 7 + i) % 256 for i in range(3072)) for k in range(2))
        put("archive", "cifar10.tar.gz", b"\x02" + tar_bytes(
            [("cifar-10-batches-bin/data_batch_1.bin", rec10),
             ("cifar-10-batches-bin/test_batch.bin", rec10)], "w:gz"))
        rec100 = b"".join(bytes([k, k * 3]) + bytes((k + i) % 256 for i in range(3072))
                          for k in range(2))
        put("archive", "cifar100.zip", b"\x03" + zip_bytes(
            [("cifar-100-binary/train.bin", rec100), ("cifar-100-binary/test.bin", rec100)]))
        jp = jpegs(tmp)
        put("archive", "folder.zip", b"\x04" + zip_bytes(
            [("cats/a.png", png(6, 5, 0)), ("cats/b.png", png(6, 5, 2)),
             ("dogs/c.png", png(6, 5, 3)), ("dogs/d.jpg", jp[0]), ("birds/e.png", png(7, 4, 6))]))
        put("archive", "folder.tar", b"\x00" + tar_bytes(
            [("a/1.png", png(4, 4, 0)), ("a/2.png", png(4, 4, 0)), ("b/3.jpg", jp[1]),
             ("b/4.jpg", jp[2])]))
        # images for predict: first byte = input (bit 0: colour; side 8 + (b >> 1) % 32)
        put("image", "grey.png", b"\x28" + png(20, 20, 0))
        put("image", "rgb.png", b"\x29" + png(9, 13, 2))
        put("image", "palette.png", b"\x00" + png(5, 5, 3))
        put("image", "rgba.png", b"\x07" + png(3, 30, 6))
        for k, j in enumerate(jp):
            put("image", "img%d.jpg" % k, bytes([k * 9]) + j)
        # checkpoint and .lsqm: a tiny run of the gcc build's lsq
        lsq = os.path.join(BUILD, "lsq")
        for quant, tag in ((None, "fp"), ({"weight_bits": 2, "first_last_bits": 4,
                                           "granularity": "channel"}, "w2")):
            spec = {"name": "seed-" + tag, "model": {"layers": [
                        {"type": "conv2d", "name": "conv1", "out": 4, "kernel": 3, "stride": 2},
                        {"type": "batchnorm", "name": "bn1"}, {"type": "relu", "name": "r1"},
                        {"type": "maxpool", "name": "pool1", "kernel": 2},
                        {"type": "conv2d", "name": "conv2", "out": 6, "kernel": 3},
                        {"type": "relu", "name": "r2"}, {"type": "avgpool", "name": "gap"},
                        {"type": "linear", "name": "fc", "out": 10}]},
                    "dataset": {"train_limit": 64, "test_limit": 32},
                    "quant": quant, "train": {"epochs": 1, "batch_size": 32},
                    "threads": 1}
            if quant:
                spec["pretrain"] = {"epochs": 1, "batch_size": 32}
            sp = os.path.join(tmp, tag + ".json")
            with open(sp, "w") as f:
                json.dump(spec, f)
            run = os.path.join(tmp, "run-" + tag)
            subprocess.run([lsq, "train", sp, "--out", run, "--quiet"], check=True)
            ck = os.path.join(run, "checkpoint.lsqc")
            put("ckpt", tag + ".lsqc", open(ck, "rb").read())
            m = os.path.join(tmp, tag + ".lsqm")
            subprocess.run([lsq, "export", ck, "--format", "lsqm", "-o", m], check=True,
                           stdout=subprocess.DEVNULL)
            put("lsqm", tag + ".lsqm", open(m, "rb").read())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--http"]:
        http_seeds()  # the HTTP target's seeds only: no build needed
    else:
        main()
