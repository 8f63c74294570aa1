#!/usr/bin/python3
"""Writes web/samples.png and web/samples.json: the first two images of each
class in the Fashion-MNIST test set (t10k), side by side in one 8-bit gray
PNG (28 x 28 each), for the dashboard's "Try it" page. Only the standard
library. Usage: scripts/make_samples.py [DATASET_DIR] [WEB_DIR]"""
import gzip
import json
import os
import struct
import sys
import zlib

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "web")
PER_CLASS = 2
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return [data[16 + i * rows * cols:16 + (i + 1) * rows * cols] for i in range(n)]
    return list(data[8:8 + n])


images = idx(os.path.join(src, "t10k-images-idx3-ubyte.gz"))
labels = idx(os.path.join(src, "t10k-labels-idx1-ubyte.gz"))
picked = []
for k in range(10):
    picked += [i for i, lab in enumerate(labels) if lab == k][:PER_CLASS]
w, h = 28 * len(picked), 28
raw = bytearray()
for y in range(h):
    raw.append(0)  # PNG filter: none
    for i in picked:
        raw += images[i][y * 28:(y + 1) * 28]


def chunk(kind, body):
    c = kind + body
    return struct.pack(">I", len(body)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)


png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
open(os.path.join(out, "samples.png"), "wb").write(png)
meta = {"source": "Fashion-MNIST test set (t10k), first %d images of each class" % PER_CLASS,
        "size": 28,
        "images": [{"index": i, "label": labels[i], "class": CLASSES[labels[i]]} for i in picked]}
open(os.path.join(out, "samples.json"), "w").write(json.dumps(meta, indent=1) + "\n")
