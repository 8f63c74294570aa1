#!/usr/bin/python3
"""PyTorch peer for lsqd's training benchmarks: the same networks, data and
LSQ rules as the engine, trained by PyTorch on the CPU.

Speed (warm-up steps, then timed steps; prints one JSON line):
    /usr/bin/python3 bench/torch_train.py --model cnn-small --bits 2 --threads 2

Accuracy (a full training with cosine lr, test accuracy in the JSON):
    /usr/bin/python3 bench/torch_train.py --model cnn-small --epochs 6 \
        --save /tmp/fp.pt
    /usr/bin/python3 bench/torch_train.py --model cnn-small --bits 2 \
        --epochs 3 --load /tmp/fp.pt          (LSQ fine-tuning, as the paper)

The same fine-tuning from a float model that `lsq train` made, so that both
engines start from the very same weights (--flip as the specs' augment.flip,
--distill for the paper's distillation from that model):
    /usr/bin/python3 bench/torch_train.py --model cnn-small --bits 2 \
        --epochs 5 --flip --distill --load-lsqc runs/cnn-small-fp/fp.lsqc
(--epochs 0 --eval-only prints the loaded model's test accuracy, which must
equal the test_acc in the checkpoint's header.)

Models (input 1x28x28, 10 classes):
  cnn-small  conv3x3 1->32, BN, ReLU, maxpool2; conv3x3 32->64, BN, ReLU,
             maxpool2; fc 3136->256, ReLU; fc 256->10
  resnet20   conv3x3 1->16, BN, ReLU; 3 stages x 3 basic blocks at 16/32/64
             channels (stride 2 entering stages 2 and 3, 1x1 conv + BN
             projection where the shape changes); global average pool; fc 64->10

LSQ (--bits b > 0): every conv/linear layer quantizes its weight (signed,
QN = 2^(b-1), QP = 2^(b-1)-1) and its input (unsigned, QN = 0, QP = 2^b-1);
first and last layers at 8 bits. Step gradient scale g = 1/sqrt(N * QP), N =
weights of the layer or input features per example. Steps start at
2*mean|v|/sqrt(QP) (weights: initial values; inputs: the first training
batch), except the network input, which starts at 1/255.

Distillation (--distill): the loaded float model, in eval mode, is the
teacher; loss = (1 - w) * CE(student, label) + w * T^2 * KL(teacher || student)
at temperature T, both softmaxes at T (the paper: T = 1, equal weights,
w = 0.5), as lsq's `distill`.
"""
import argparse
import gzip
import json
import math
import os
import re
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
BATCH = 128


# ------------------------------------------------------------------ data

def read_idx(path, magic_want):
    with gzip.open(path) as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != magic_want:
        sys.exit("%s: bad idx magic %#x" % (path, magic))
    ndim = magic & 0xff
    dims = struct.unpack(">%dI" % ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split, limit=0):
    """(N,1,28,28) float32 pixels/255 and int64 labels."""
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(DATA_DIR, prefix + "-images-idx3-ubyte.gz"), 2051)
    y = read_idx(os.path.join(DATA_DIR, prefix + "-labels-idx1-ubyte.gz"), 2049)
    if limit:
        x, y = x[:limit], y[:limit]
    x = x.astype(np.float32).reshape(-1, 1, 28, 28) / np.float32(255.0)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def lsqc_views(path):
    """{view name: float32 array} of an lsq checkpoint (.lsqc, engine/train/ckpt.h):
    the parameters and the batch-norm running statistics."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != b"LSQC":
        sys.exit("%s: not an lsq checkpoint" % path)
    hlen = struct.unpack("<I", raw[8:12])[0]
    header = json.loads(raw[12:12 + hlen])
    off = 12 + hlen
    bufs = []
    for _ in range(2):  # params, state
        n = struct.unpack("<Q", raw[off:off + 8])[0]
        bufs.append(np.frombuffer(raw, dtype="<f4", count=n, offset=off + 8))
        off += 8 + 4 * n
    views = {}
    for v in header["views"]:
        buf = bufs[1] if v["state"] else bufs[0]
        views[v["name"]] = buf[v["off"]:v["off"] + v["count"]].reshape(v["dims"])
    return header, views


def torch_name(name):
    """lsq's view names to this file's module names (resnet20's blocks are a
    Sequential here: s<stage>b<block> -> blocks.<index>; sc.conv/sc.bn ->
    sc.0/sc.1)."""
    m = re.match(r"s(\d)b(\d)\.(.*)$", name)
    if not m:
        return name
    rest = m.group(3).replace("sc.conv.", "sc.0.").replace("sc.bn.", "sc.1.")
    return "blocks.%d.%s" % ((int(m.group(1)) - 1) * 3 + int(m.group(2)) - 1, rest)


def load_lsqc(path):
    header, views = lsqc_views(path)
    if header.get("quantized"):
        sys.exit("%s: a quantized checkpoint; --load-lsqc takes a float model" % path)
    state = {torch_name(k): torch.from_numpy(v.copy()) for k, v in views.items()}
    return state, header.get("test_acc")


# ------------------------------------------------------------------- LSQ

def grad_scale(s, g):
    """Value s (to the bit), gradient g * ds."""
    sg = s * g
    return s.detach() + (sg - sg.detach())


def round_pass(x):
    return (x.round() - x).detach() + x


class LsqQuantizer(nn.Module):
    """Per-tensor LSQ. The step is initialised on the first forward pass."""

    def __init__(self, bits, signed, fixed_init=None):
        super().__init__()
        self.bits, self.signed, self.fixed_init = bits, signed, fixed_init
        if signed:
            self.qn, self.qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        else:
            self.qn, self.qp = 0, 2 ** bits - 1
        self.step = nn.Parameter(torch.ones(1))
        self.register_buffer("initialised", torch.zeros(1))

    def forward(self, v, per_example):
        if self.initialised.item() == 0:
            with torch.no_grad():
                if self.fixed_init is not None:
                    self.step.fill_(self.fixed_init)
                else:
                    self.step.fill_(2 * v.abs().mean().item() / math.sqrt(self.qp))
                self.initialised.fill_(1)
        n = v[0].numel() if per_example else v.numel()
        g = 1.0 / math.sqrt(n * self.qp)
        sg = grad_scale(self.step, g)
        return round_pass(torch.clamp(v / sg, -self.qn, self.qp)) * sg


class QConv2d(nn.Conv2d):
    def __init__(self, cin, cout, k, stride=1, padding=0, bits=0, input_step=None, groups=1):
        super().__init__(cin, cout, k, stride=stride, padding=padding, bias=False,
                         groups=groups)
        self.bits = bits
        if bits:
            self.wq = LsqQuantizer(bits, True)
            self.aq = LsqQuantizer(bits, False, input_step)

    def forward(self, x):
        if not self.bits:
            return super().forward(x)
        return self._conv_forward(self.aq(x, True), self.wq(self.weight, False), None)


class QLinear(nn.Linear):
    def __init__(self, fin, fout, bits=0):
        super().__init__(fin, fout)
        self.bits = bits
        if bits:
            self.wq = LsqQuantizer(bits, True)
            self.aq = LsqQuantizer(bits, False)

    def forward(self, x):
        if not self.bits:
            return super().forward(x)
        return F.linear(self.aq(x, True), self.wq(self.weight, False), self.bias)


# ---------------------------------------------------------------- models

def edge_bits(bits):
    return 8 if bits else 0


class CnnSmall(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.conv1 = QConv2d(1, 32, 3, padding=1, bits=edge_bits(bits),
                             input_step=1.0 / 255.0)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = QConv2d(32, 64, 3, padding=1, bits=bits)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = QLinear(3136, 256, bits)
        self.fc2 = QLinear(256, 10, edge_bits(bits))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, bits):
        super().__init__()
        self.conv1 = QConv2d(cin, cout, 3, stride, 1, bits)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = QConv2d(cout, cout, 3, 1, 1, bits)
        self.bn2 = nn.BatchNorm2d(cout)
        self.sc = None
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(QConv2d(cin, cout, 1, stride, 0, bits),
                                    nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (self.sc(x) if self.sc is not None else x))


class ResNet20(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.conv1 = QConv2d(1, 16, 3, 1, 1, edge_bits(bits), input_step=1.0 / 255.0)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, bits))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = QLinear(64, 10, edge_bits(bits))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


class InvertedResidual(nn.Module):
    """MobileNetV2's block (bench/mobilenet_fmnist.py), its convs quantized."""

    def __init__(self, cin, cout, stride, expand, bits):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [QConv2d(cin, hidden, 1, bits=bits), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [QConv2d(hidden, hidden, 3, stride, 1, bits, groups=hidden),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   QConv2d(hidden, cout, 1, bits=bits), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """bench/mobilenet_fmnist.py's MobileNetV2-style net (1x28x28, 10 classes)
    with LSQ on every conv/linear, first and last at 8 bits."""

    def __init__(self, bits):
        super().__init__()
        layers = [QConv2d(1, 16, 3, 1, 1, edge_bits(bits), input_step=1.0 / 255.0),
                  nn.BatchNorm2d(16), nn.ReLU6()]
        cin = 16
        for t, c, n, s in ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1)):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t, bits))
                cin = c
        layers += [QConv2d(cin, 128, 1, bits=bits), nn.BatchNorm2d(128), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = QLinear(128, 10, edge_bits(bits))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(x.view(x.size(0), -1))


MODELS = {"cnn-small": CnnSmall, "resnet20": ResNet20, "mobilenet": MobileNet}


# ----------------------------------------------------------------- train

def default_wd(bits):
    """The paper's weight decay by precision (full precision as 4 bits)."""
    return {2: 0.25e-4, 3: 0.5e-4}.get(bits, 1e-4)


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += (model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
    model.train()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="cnn-small")
    ap.add_argument("--bits", type=int, default=0,
                    help="LSQ bits for the inner layers (0: full precision)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--epochs", type=int, default=0,
                    help="train this many epochs (cosine lr) and report test accuracy")
    ap.add_argument("--lr", type=float, default=None,
                    help="default 0.05 full precision, 0.01 LSQ (0.001 at 8 bits)")
    ap.add_argument("--wd", type=float, default=None,
                    help="default the paper's: 1e-4, 0.5e-4 at 3 bits, 0.25e-4 at 2")
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--load", help="start from this state_dict (e.g. a float model)")
    ap.add_argument("--load-lsqc", metavar="PATH",
                    help="start from this float model of `lsq train` (fp.lsqc)")
    ap.add_argument("--eval-only", action="store_true",
                    help="print the loaded model's test accuracy and stop")
    ap.add_argument("--flip", action="store_true",
                    help="mirror each training image with probability 1/2")
    ap.add_argument("--distill", action="store_true",
                    help="distil from the loaded float model (needs --load or --load-lsqc)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--distill-weight", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--save", help="write the trained state_dict here")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.bits and not 2 <= args.bits <= 8:
        sys.exit("--bits must be 0 (float) or 2..8")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    x_train, y_train = load_split("train", args.train_limit)

    model = MODELS[args.model](args.bits)
    if args.load and args.load_lsqc:
        sys.exit("--load and --load-lsqc: give one")
    if args.distill and not (args.load or args.load_lsqc):
        sys.exit("--distill needs the float teacher: --load or --load-lsqc")
    state = None
    if args.load:
        state = torch.load(args.load)
    elif args.load_lsqc:
        state, header_acc = load_lsqc(args.load_lsqc)
    if state is not None:
        # a float checkpoint has no quantizer entries: load what matches
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not (".wq." in k or ".aq." in k
                                          or k.endswith("num_batches_tracked"))]
        if bad or unexpected:
            sys.exit("--load %s: does not fit %s (missing %s, unexpected %s)"
                     % (args.load, args.model, bad, unexpected))
    teacher = None
    if args.distill or args.eval_only:
        teacher = MODELS[args.model](0)
        teacher.load_state_dict(state, strict=False)
        teacher.eval()
    if args.eval_only:
        x_test, y_test = load_split("test")
        out = {"model": args.model, "test_acc": round(evaluate(teacher, x_test, y_test), 4)}
        if args.load_lsqc:
            out["checkpoint_test_acc"] = header_acc
        print(json.dumps(out))
        return
    model.train()

    if args.lr is None:
        args.lr = 0.05 if not args.bits else (0.001 if args.bits == 8 else 0.01)
    if args.wd is None:
        args.wd = default_wd(args.bits)

    # Initialise the quantizer steps on the first batch before the optimizer
    # sees the parameters (the steps are ordinary parameters from then on).
    # The BN running statistics are put back so this pass leaves no trace.
    if args.bits:
        bn_state = {k: v.clone() for k, v in model.state_dict().items()
                    if "running_" in k or "num_batches" in k}
        with torch.no_grad():
            model(x_train[:args.batch])
        model.load_state_dict(bn_state, strict=False)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                          weight_decay=args.wd)

    n = len(x_train)
    batch = args.batch
    steps_per_epoch = n // batch
    result = {"peer": "pytorch", "torch": torch.__version__, "model": args.model,
              "bits": args.bits if args.bits else 32, "batch": batch,
              "threads": args.threads, "seed": args.seed, "flip": args.flip,
              "distill": args.distill}
    dw, temp = args.distill_weight, args.temperature

    def train_step(idx):
        xb, yb = x_train[idx], y_train[idx]
        if args.flip:
            mirror = torch.rand(len(idx)) < 0.5
            xb = torch.where(mirror[:, None, None, None], xb.flip(3), xb)
        opt.zero_grad(set_to_none=False)
        logits = model(xb)
        if teacher is not None:
            with torch.no_grad():
                soft = F.softmax(teacher(xb) / temp, 1)
            kd = F.kl_div(F.log_softmax(logits / temp, 1), soft, reduction="batchmean")
            loss = (1 - dw) * F.cross_entropy(logits, yb) + dw * temp * temp * kd
        else:
            loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        return loss

    if args.epochs == 0:
        perm = torch.randperm(n)

        def batch_at(i):
            j = (i % steps_per_epoch) * batch
            return perm[j:j + batch]

        for i in range(args.warmup):
            train_step(batch_at(i))
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(args.steps):
            loss = train_step(batch_at(args.warmup + i))
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0  # every thread's CPU time, as train_bench's
        if not math.isfinite(loss.item()):
            sys.exit("loss is not finite")
        # peak resident set of this process (Linux reports KiB), as
        # train_bench reports its own
        result.update(images_per_s=round(args.steps * batch / dt, 1),
                      images_per_cpu_s=round(args.steps * batch / cpu, 1),
                      steps=args.steps,
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                        / 1024.0, 1))
    else:
        total = args.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        x_test, y_test = load_split("test")
        t0 = time.perf_counter()
        eval_s = 0.0  # kept out of images_per_s
        step = 0
        per_epoch = []
        for epoch in range(args.epochs):
            perm = torch.randperm(n)
            run_loss = 0.0
            for b in range(steps_per_epoch):
                loss = train_step(perm[b * batch:(b + 1) * batch])
                sched.step()
                run_loss += loss.item()
                step += 1
            te = time.perf_counter()
            acc = evaluate(model, x_test, y_test)
            eval_s += time.perf_counter() - te
            per_epoch.append(round(acc, 4))
            print(json.dumps({"epoch": epoch + 1,
                              "train_loss": round(run_loss / steps_per_epoch, 4),
                              "test_acc": round(acc, 4)}), file=sys.stderr)
        dt = time.perf_counter() - t0 - eval_s
        result.update(images_per_s=round(step * batch / dt, 1), steps=step,
                      epochs=args.epochs, lr=args.lr, weight_decay=args.wd,
                      train_loss=round(run_loss / steps_per_epoch, 4),
                      test_acc=round(acc, 4), per_epoch=per_epoch)
        if args.save:
            torch.save(model.state_dict(), args.save)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
