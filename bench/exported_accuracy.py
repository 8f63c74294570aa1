#!/usr/bin/python3
"""Test accuracy of a trained run's deployable models beside its own figure.

    /usr/bin/python3 bench/exported_accuracy.py BUILD_DIR RUN_DIR [RUN_DIR ...]

For each run folder (from `lsq train`): exports model.lsqc to .lsqm and .onnx
(`lsq export`), then measures the Fashion-MNIST test accuracy (10,000 images)
of the float fake-quantized engine (`lsq eval model.lsqc`), the integer
engine (`lsq eval model.lsqm`) and onnxruntime running the .onnx
(tests/onnx/run_model.mjs, graph optimizations off and at their default).
Prints a markdown table. (Per-image agreement is checked by
tests/unit/deploy/test_deploy.c.)
"""
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def idx(path):
    with gzip.open(path) as f:
        b = f.read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def lsq_eval(lsq, model):
    out = subprocess.run([lsq, "eval", model], capture_output=True, text=True, check=True).stdout
    return float([l for l in out.splitlines() if l.startswith("accuracy")][0].split()[1])


def ort(model, x, opt, tmp):
    inp, out = os.path.join(tmp, "x.f32"), os.path.join(tmp, "y.f32")
    x.astype("<f4").tofile(inp)
    subprocess.run(["node", os.path.join(ROOT, "tests/onnx/run_model.mjs"), model, inp,
                    "%d,1,28,28" % len(x), out, "--threads", "2", "--opt", opt],
                   capture_output=True, check=True)
    return np.fromfile(out, dtype="<f4").reshape(len(x), -1)


def main():
    build, runs = sys.argv[1], sys.argv[2:]
    lsq = os.path.join(build, "lsq")
    images = idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")).astype(np.float32) / np.float32(255)
    labels = idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    print("| run | training run (float, eval) | `lsq eval model.lsqm` (integer) | onnxruntime, optimizations off | onnxruntime, default | .lsqm bytes |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            ck = os.path.join(run, "model.lsqc")
            lsqm, onnx = os.path.join(tmp, "m.lsqm"), os.path.join(tmp, "m.onnx")
            subprocess.run([lsq, "export", ck, "--format", "lsqm", "-o", lsqm], check=True, capture_output=True)
            subprocess.run([lsq, "export", ck, "--format", "onnx", "-o", onnx], check=True, capture_output=True)
            f = lsq_eval(lsq, ck)
            i = lsq_eval(lsq, lsqm)
            accs = []
            for opt in ("disabled", "all"):
                logits = ort(onnx, images.reshape(-1, 1, 28, 28), opt, tmp)
                accs.append((logits.argmax(1) == labels).mean())
            print("| %s | %.2f | %.2f | %.2f | %.2f | %d |" % (
                os.path.basename(run.rstrip("/")), 100 * f, 100 * i, 100 * accs[0], 100 * accs[1],
                os.path.getsize(lsqm)))


if __name__ == "__main__":
    main()
