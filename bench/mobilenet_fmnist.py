#!/usr/bin/python3
"""A MobileNetV2-style float classifier trained in PyTorch on Fashion-MNIST
and exported to ONNX: the "bring your own model" starting point that lsqd
imports and quantizes (docs/results.md, "An imported MobileNetV2").

    /usr/bin/python3 bench/mobilenet_fmnist.py --out runs/mobilenet \
        [--epochs 8] [--threads 2] [--opset 13] [--seed 1]
    /usr/bin/python3 bench/mobilenet_fmnist.py --out DIR --export-untrained FILE.onnx

writes runs/mobilenet/mobilenet.onnx (eval mode: PyTorch folds each batch
norm into its conv on export), runs/mobilenet/mobilenet-bn.onnx (the same
weights with each batch norm kept as a node, its running statistics the
trained ones), runs/mobilenet/mobilenet.pt (the state dict)
and prints one JSON line with the float model's test accuracy, measured in
PyTorch on the 10,000 test images.

The network (input 1x28x28, 10 classes): conv3x3 1->16 stride 1, BN, ReLU6;
inverted residual blocks (expand 1x1 + BN + ReLU6, depthwise 3x3 + BN +
ReLU6, project 1x1 + BN, residual add when the shape allows) with
(expansion, out channels, repeats, stride) = (1,16,1,1), (4,24,2,2),
(4,32,2,2), (4,64,2,1); conv1x1 -> 128, BN, ReLU6; global average pool;
x.view(x.size(0), -1); dropout 0.1; linear 128 -> 10. SGD momentum 0.9,
lr 0.05 with cosine decay, weight decay 4e-5, batch 128, random horizontal
flip; pixels / 255 as lsq's loader gives them.
"""
import argparse
import gzip
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    _, kind, ndim = struct.unpack(">HBB", data[:4])
    assert kind == 0x08, path
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(DATA_DIR, name)
        if os.path.exists(p):
            return p
    raise SystemExit("missing %s under %s" % (stem, DATA_DIR))


def load(split):
    x = read_idx(find("%s-images-idx3-ubyte" % split)).astype(np.float32) / 255.0
    y = read_idx(find("%s-labels-idx1-ubyte" % split)).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Small(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1)]

    def __init__(self, classes=10):
        super().__init__()
        layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        cin = 16
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)
        return self.fc(self.dropout(x))


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            correct += (model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--export-untrained", metavar="FILE",
                    help="only export the network with random weights and its batch norms "
                         "kept (a train() module, TrainingMode.PRESERVE): what lsq trains in "
                         "the speed benchmark")
    a = ap.parse_args()
    if a.export_untrained:
        torch.manual_seed(a.seed)
        torch.onnx.export(MobileNetV2Small().train(), torch.zeros(2, 1, 28, 28),
                          a.export_untrained, opset_version=a.opset,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False, input_names=["image"],
                          output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    model = MobileNetV2Small()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    steps = a.epochs * math.ceil(len(xtr) / 128)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 128):
            idx = perm[i:i + 128]
            xb = xtr[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte)
        print(json.dumps({"epoch": epoch + 1, "test_acc": acc,
                          "seconds": round(time.time() - t0, 1)}), flush=True)
    model.eval()
    torch.save(model.state_dict(), os.path.join(a.out, "mobilenet.pt"))
    onnx_path = os.path.join(a.out, "mobilenet.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), onnx_path, opset_version=a.opset,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    # the same trained weights with each batch norm kept as its own node
    # (train() module, TrainingMode.PRESERVE): LSQ fine-tunes the convs with
    # batch norm after them, as the float model was trained
    bn_path = os.path.join(a.out, "mobilenet-bn.onnx")
    model.train()
    torch.onnx.export(model, torch.zeros(2, 1, 28, 28), bn_path, opset_version=a.opset,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    model.eval()
    print(json.dumps({"model": "mobilenet", "opset": a.opset, "epochs": a.epochs,
                      "test_acc": evaluate(model, xte, yte), "onnx": onnx_path,
                      "onnx_bn": bn_path,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
