#!/usr/bin/python3
"""Builds the results tables of docs/results.md from training runs.

    /usr/bin/python3 bench/results.py RUNS_DIR > tables.md
    /usr/bin/python3 bench/results.py RUNS_DIR --runs NAME ...

    /usr/bin/python3 bench/results.py RUNS_DIR --peer NAME ...

The second form prints one row per named run, with the training settings of
its spec (bench/specs/NAME.json), its accuracy against the FP model it
started from and its test and training accuracy after every epoch: the
sweeps of docs/results.md.

Each run folder (runs/NAME, written by bench/paper_tables.sh) holds the
events of `lsq train`; every figure here is read from them: the final test
accuracy of the `done` event, the epochs and seconds of the last phase's
`epoch` events, and the full-precision accuracy the LSQ phase started from.

The third form prints the PyTorch cross-check of bench/peer_accuracy.sh:
each RUNS_DIR/torch/NAME.json against the float model it started from (the
test accuracy in the header of RUNS_DIR/MODEL-fp/fp.lsqc).
"""
import json
import os
import struct
import sys

# The paper's figures (ResNet-18 on ImageNet, top-1 %), from LSQ.md.
PAPER_T1 = {"fp": 70.5, 8: 71.1, 4: 71.1, 3: 70.2, 2: 67.6}
PAPER_G = {"paper": "67.6", "sqrt_n": "67.3", "g1": "did not converge", "g1-lr1e-4": "64.2"}
PAPER_KD = {2: ("67.6", "67.9"), 3: ("70.2", "70.6")}


def load(runs, name):
    path = os.path.join(runs, name, "events.jsonl")
    if not os.path.exists(path):
        return None
    ev = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    ev.append(json.loads(line))
                except ValueError:
                    pass
    done = [e for e in ev if e.get("type") == "done"]
    errors = [e for e in ev if e.get("type") == "error" and e.get("code") != "cancelled"]
    epochs = [e for e in ev if e.get("type") == "epoch"]
    last_phase = epochs[-1]["phase"] if epochs else None
    ph = [e for e in epochs if e["phase"] == last_phase]
    # a resumed run repeats an epoch number: keep the last record of each
    by_epoch = {}
    for e in ph:
        by_epoch[e["epoch"]] = e
    fp = [e for e in ev if e.get("type") == "log" and e.get("message") == "full-precision model"]
    return {
        "name": name,
        "acc": done[-1]["test_acc"] if done else None,
        "failed": errors[-1]["message"] if errors and not done else None,
        "epochs": len(by_epoch),
        "seconds": sum(e.get("seconds", 0) for e in by_epoch.values()),
        "fp_acc": fp[-1]["test_acc"] if fp else None,
        "last_epoch_acc": ph[-1]["test_acc"] if ph else None,
        "per_epoch": [by_epoch[k].get("test_acc") for k in sorted(by_epoch)],
        "train_acc": by_epoch[max(by_epoch)].get("train_acc") if by_epoch else None,
        "images_per_s": (sorted(e.get("images_per_s", 0) for e in by_epoch.values())
                         [len(by_epoch) // 2] if by_epoch else None),
    }


def pct(x):
    return "—" if x is None else "%.2f" % (100 * x)


def cmd(name):
    return "`lsq train bench/specs/%s.json --out runs/%s`" % (name, name)


def row(r, paper, extra=""):
    if r is None:
        return None
    acc = pct(r["acc"]) if r["acc"] is not None else ("failed: " + r["failed"] if r["failed"] else "not finished")
    return "| %s | %s | %s | %d | %.0f | %s |%s" % (
        r["name"], acc, paper, r["epochs"], r["seconds"], cmd(r["name"]), extra)


def sweep(runs, names):
    """One row per run: its spec's settings, accuracy, per-epoch accuracy."""
    out = ["| run | distillation | batch | lr | warm-up (epochs) | test acc. (%) | vs FP | train acc. (%) "
           "| per epoch (%) | seconds | command |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        r = load(runs, name)
        if r is None:
            sys.exit("results.py: no events in %s" % os.path.join(runs, name))
        spec = {}
        path = os.path.join("bench", "specs", name + ".json")
        if os.path.exists(path):
            with open(path) as f:
                spec = json.load(f)
        train = spec.get("train", {})
        distill = spec.get("distill")
        kd = "no" if distill is False else ("yes" if "init" in spec else "—")
        acc = pct(r["acc"]) if r["acc"] is not None else "not finished"
        delta = ("%+.2f" % (100 * (r["acc"] - r["fp_acc"]))
                 if r["acc"] is not None and r["fp_acc"] is not None else "")
        out.append("| %s | %s | %d | %g | %g | %s | %s | %s | %s | %.0f | %s |" % (
            name, kd, train.get("batch_size", 128), train.get("lr", 0.01),
            train.get("warmup_epochs", 0), acc, delta, pct(r["train_acc"]),
            ", ".join(pct(a) for a in r["per_epoch"]), r["seconds"], cmd(name)))
    print("\n".join(out))


def lsqc_test_acc(path):
    """The test accuracy in an lsq checkpoint's header."""
    with open(path, "rb") as f:
        head = f.read(12)
        hlen = struct.unpack("<I", head[8:12])[0]
        return json.loads(f.read(hlen)).get("test_acc")


def peer(runs, names):
    """One row per PyTorch run of bench/peer_accuracy.sh."""
    out = ["| PyTorch run | distillation | seed | test acc. (%) | vs FP | per epoch (%) | command |",
           "|---|---|---|---|---|---|---|"]
    for name in names:
        path = os.path.join(runs, "torch", name + ".json")
        if not os.path.exists(path):
            sys.exit("results.py: no %s (bench/peer_accuracy.sh %s)" % (path, name))
        with open(path) as f:
            r = json.loads(f.read().strip().splitlines()[-1])
        fp = lsqc_test_acc(os.path.join(runs, r["model"] + "-fp", "fp.lsqc"))
        out.append("| %s | %s | %d | %s | %+.2f | %s | `bench/peer_accuracy.sh %s` |" % (
            name, "yes" if r.get("distill") else "no", r.get("seed", 1), pct(r["test_acc"]),
            100 * (r["test_acc"] - fp), ", ".join(pct(a) for a in r.get("per_epoch", [])),
            name))
    print("\n".join(out))


def main():
    runs = sys.argv[1] if len(sys.argv) > 1 else "runs"
    if len(sys.argv) > 2 and sys.argv[2] == "--runs":
        sweep(runs, sys.argv[3:])
        return
    if len(sys.argv) > 2 and sys.argv[2] == "--peer":
        peer(runs, sys.argv[3:])
        return
    out = []
    for model in ("cnn-small", "resnet20"):
        fp = load(runs, model + "-fp")
        rows = []
        if fp:
            rows.append(row(fp, "%.1f" % PAPER_T1["fp"]))
        for b, suffix in ((8, ""), (4, ""), (3, ""), (2, ""), (2, "-5ep")):
            r = load(runs, "%s-w%da%d%s" % (model, b, b, suffix))
            if r:
                delta = ""
                if r["acc"] is not None and fp and fp["acc"] is not None:
                    delta = " %+.2f vs FP |" % (100 * (r["acc"] - fp["acc"]))
                rows.append(row(r, "%.1f" % PAPER_T1[b], delta or " |"))
        rows = [x for x in rows if x]
        if not rows:
            continue
        out.append("### %s: accuracy by bit width (the shape of the paper's Table 1)\n" % model)
        out.append("| run | Fashion-MNIST test acc. (%) | paper, ResNet-18 ImageNet top-1 (%) | epochs | seconds | command | vs FP |")
        out.append("|---|---|---|---|---|---|---|")
        out += [x if x.count("|") >= 8 else x + " |" for x in rows]
        out.append("")
    g = [("cnn-small-w2a2-g-paper", "1/sqrt(N·Q_P) (paper)", "paper"),
         ("cnn-small-w2a2-g-sqrtn", "1/sqrt(N)", "sqrt_n"),
         ("cnn-small-w2a2-g1", "1, lr 0.01", "g1"),
         ("cnn-small-w2a2-g1-lr1e-4", "1, lr 0.0001", "g1-lr1e-4")]
    grows = []
    for name, label, key in g:
        r = load(runs, name)
        if r:
            acc = pct(r["acc"]) if r["acc"] is not None else ("diverged: " + r["failed"] if r["failed"] else "not finished")
            grows.append("| %s | %s | %s | %d | %.0f | %s |" % (label, acc, PAPER_G[key], r["epochs"], r["seconds"], cmd(name)))
    if grows:
        out.append("### Step-size gradient scale ablation (cnn-small, W2A2, no distillation)\n")
        out.append("| g | Fashion-MNIST test acc. (%) | paper, ResNet-18 2-bit (%) | epochs | seconds | command |")
        out.append("|---|---|---|---|---|---|")
        out += grows
        out.append("")
    krows = []
    for b, suffix in ((2, ""), (3, ""), (2, "-5ep")):
        a = load(runs, "cnn-small-w%da%d-nokd%s" % (b, b, suffix))
        k = load(runs, "cnn-small-w%da%d%s" % (b, b, suffix))
        if a and k:
            krows.append("| %d | %d | %s | %s | %s / %s | %s, %s |" % (
                b, k["epochs"], pct(a["acc"]), pct(k["acc"]), PAPER_KD[b][0], PAPER_KD[b][1],
                cmd(a["name"]), cmd(k["name"])))
    if krows:
        out.append("### LSQ vs LSQ + distillation (cnn-small; teacher: the FP model, T = 1, equal weights)\n")
        out.append("| bits | epochs | LSQ (%) | LSQ + KD (%) | paper ResNet-18, LSQ / LSQ+KD (%) | commands |")
        out.append("|---|---|---|---|---|---|")
        out += krows
        out.append("")
    # The same W2A2 5-epoch comparison over training seeds (shuffle and
    # augmentation order): the seed-to-seed spread is the size of the effect.
    seeds = []
    for suffix in ("", "-seed2", "-seed3"):
        a = load(runs, "cnn-small-w2a2-nokd-5ep" + suffix)
        k = load(runs, "cnn-small-w2a2-5ep" + suffix)
        if a and k and a["acc"] is not None and k["acc"] is not None:
            seeds.append((suffix or "-seed1", a, k))
    if len(seeds) > 1:
        out.append("### W2A2, 5 epochs, over training seeds (cnn-small)\n")
        out.append("| seed | LSQ (%) | LSQ + KD (%) | KD − LSQ (points) | commands |")
        out.append("|---|---|---|---|---|")
        for tag, a, k in seeds:
            out.append("| %s | %s | %s | %+.2f | %s, %s |" % (
                tag[len("-seed"):], pct(a["acc"]), pct(k["acc"]), 100 * (k["acc"] - a["acc"]),
                cmd(a["name"]), cmd(k["name"])))
        ma = sum(a["acc"] for _, a, _ in seeds) / len(seeds)
        mk = sum(k["acc"] for _, _, k in seeds) / len(seeds)
        out.append("| mean of %d | %s | %s | %+.2f | |" % (len(seeds), pct(ma), pct(mk), 100 * (mk - ma)))
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
