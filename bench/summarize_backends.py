#!/usr/bin/python3
"""Medians of bench/conv_backends.sh's runs: per model and bit width, the
engine with its own conv kernels (own), with oneDNN where conv2d's table
picks it (auto), and PyTorch; wall images/s and images per CPU second, the
ratios of the medians, and the auto/own ratio of each round (paired).

    /usr/bin/python3 bench/summarize_backends.py build/bench/backends.jsonl
"""
import json
import statistics
import sys

runs = {}
order = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("bench") != "train" and "images_per_s" not in r:
        continue
    bits = r.get("bits", 32)
    bits = 32 if bits in (0, 32) else bits
    who = r.get("conv_backend", "pytorch") if r.get("engine", "").startswith("lsq") else "pytorch"
    key = (r["model"], bits)
    if key not in runs:
        runs[key] = {}
        order.append(key)
    runs[key].setdefault(who, []).append(r)

med = statistics.median
print("| model | bits | own img/s (CPU s) | oneDNN auto img/s (CPU s) | PyTorch img/s (CPU s) "
      "| auto/own wall, CPU | auto/PyTorch wall, CPU | paired auto/own CPU |")
print("|---|---|---|---|---|---|---|---|")
for key in order:
    g = runs[key]
    def m(who, f):
        v = [x[f] for x in g.get(who, []) if f in x]
        return med(v) if v else float("nan")
    own, auto, pt = (m(w, "images_per_s") for w in ("own", "auto", "pytorch"))
    ownc, autoc, ptc = (m(w, "images_per_cpu_s") for w in ("own", "auto", "pytorch"))
    pairs = [a["images_per_cpu_s"] / o["images_per_cpu_s"]
             for o, a in zip(g.get("own", []), g.get("auto", []))]
    print("| %s | %s | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %.2f, %.2f | %.2f, %.2f | %s |" % (
        key[0], "FP32" if key[1] == 32 else "W%dA%d" % (key[1], key[1]), own, ownc, auto, autoc,
        pt, ptc, auto / own, autoc / ownc, auto / pt, autoc / ptc,
        ", ".join("%.2f" % p for p in pairs)))
