#!/usr/bin/python3
"""Fashion-MNIST as a colour image-folder dataset: a .tar.gz of 32x32 RGB PNGs,
one sub-folder per class, the kind of archive a lab uploads to lsqd.

Each 28x28 grey image is padded to 32x32 and coloured: the garment (the
image's intensity) is drawn in one colour over a background of another, both
drawn at random for every image from a seeded generator. The colours are
independent of the class, so a network cannot classify by colour: it still
has to read the shape, and the three channels carry the same information as
the grey original in a different mix per image.

    /usr/bin/python3 bench/fmnist_colour.py --out runs/fmnist-colour.tar.gz
        [--limit N] [--seed S]

All 70,000 images (training and test files together: an image folder has no
split of its own; lsqd splits each class by a seeded fraction) unless
--limit keeps the first N of each file. Writes with the standard library only
(zlib for PNG, tarfile for the archive).
"""
import argparse
import gzip
import io
import os
import random
import struct
import tarfile
import zlib

DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def png_rgb(width, height, rows):
    """A PNG (colour type 2, 8 bits) from a list of rows of RGB bytes."""
    def chunk(kind, body):
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def colour(rng):
    return [rng.randrange(256) for _ in range(3)]


def coloured_rows(pixels, rng):
    """28x28 grey bytes -> 32 rows of 32 RGB pixels, garment colour over a
    background colour, mixed by the grey level."""
    fg, bg = colour(rng), colour(rng)
    # Keep the two colours apart so that the garment stays visible.
    while sum(abs(a - b) for a, b in zip(fg, bg)) < 150:
        fg, bg = colour(rng), colour(rng)
    lut = [bytes(round(bg[c] + (fg[c] - bg[c]) * v / 255) for c in range(3))
           for v in range(256)]
    pad = lut[0] * 2
    blank = lut[0] * 32
    rows = [blank, blank]
    for y in range(28):
        line = pixels[y * 28:(y + 1) * 28]
        rows.append(pad + b"".join(lut[v] for v in line) + pad)
    rows += [blank, blank]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    counts = [0] * len(CLASSES)
    with tarfile.open(args.out, "w:gz", compresslevel=6) as tar:
        for part in ("train", "t10k"):
            (n, h, w), images = read_idx(f"{DATA_DIR}/{part}-images-idx3-ubyte.gz")
            _, labels = read_idx(f"{DATA_DIR}/{part}-labels-idx1-ubyte.gz")
            if args.limit:
                n = min(n, args.limit)
            for i in range(n):
                label = labels[i]
                png = png_rgb(32, 32, coloured_rows(images[i * h * w:(i + 1) * h * w], rng))
                info = tarfile.TarInfo(f"fmnist-colour/{CLASSES[label]}/{part}-{i:05d}.png")
                info.size = len(png)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(png))
                counts[label] += 1
    print(f"{args.out}: {sum(counts)} images, per class {counts}, "
          f"{os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
