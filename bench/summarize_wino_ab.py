#!/usr/bin/python3
"""Medians of bench/wino_ab.sh's runs: per model and bit width, images/s
and images per CPU second with oneDNN's Winograd off and with it (auto: where
the table picks it, or on: forced), the ratio of the medians, and the ratio
of each round (paired: the two runs of a round are adjacent in time).

    /usr/bin/python3 bench/summarize_wino_ab.py build/bench/wino_ab.jsonl
"""
import json
import statistics
import sys

runs, order = {}, []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("bench") != "train":
        continue
    key = (r["model"], r["bits"])
    if key not in runs:
        runs[key] = {}
        order.append(key)
    runs[key].setdefault(r["wino"], []).append(r)

med = statistics.median
print("| model | bits | rounds | off img/s (CPU s) | with img/s (CPU s) | with/off wall, CPU "
      "| paired with/off CPU (median; per round) |")
print("|---|---|---|---|---|---|---|")
for key in order:
    g = runs[key]
    other = [w for w in g if w != "off"]
    if "off" not in g or len(other) != 1:
        continue
    g["on"] = g[other[0]]
    def m(w, f):
        return med([x[f] for x in g[w]])
    pairs = [b["images_per_cpu_s"] / a["images_per_cpu_s"] for a, b in zip(g["off"], g["on"])]
    print("| %s | %s | %d | %.1f (%.1f) | %s: %.1f (%.1f) | %.3f, %.3f | %.3f; %s |" % (
        key[0], "FP32" if key[1] == 32 else "W%dA%d" % (key[1], key[1]), len(pairs),
        m("off", "images_per_s"), m("off", "images_per_cpu_s"),
        other[0], m("on", "images_per_s"), m("on", "images_per_cpu_s"),
        m("on", "images_per_s") / m("off", "images_per_s"),
        m("on", "images_per_cpu_s") / m("off", "images_per_cpu_s"),
        med(pairs), ", ".join("%.3f" % p for p in pairs)))
