#!/usr/bin/python3
"""Medians of bench/train_ab.sh's runs: per model and bit width, images/s
and images per CPU second under the two settings (A, the first one seen, and
B), the ratio of the medians, and the B/A ratio of each round (paired: the
two runs of a round are adjacent in time).

    /usr/bin/python3 bench/summarize_ab.py build/bench/train_ab.jsonl
"""
import json
import statistics
import sys

runs, order, settings = {}, [], []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("bench") != "train" or "ab" not in r:
        continue
    if r["ab"] not in settings:
        settings.append(r["ab"])
    key = (r["model"], r["bits"])
    if key not in runs:
        runs[key] = {}
        order.append(key)
    runs[key].setdefault(r["ab"], []).append(r)
if len(settings) != 2:
    sys.exit("summarize_ab: want runs under two settings, found %s" % settings)
a, b = settings

med = statistics.median
print("| model | bits | rounds | %s img/s (CPU s) | %s img/s (CPU s) | %s/%s wall, CPU "
      "| paired %s/%s CPU (median; per round) |" % (a, b, b, a, b, a))
print("|---|---|---|---|---|---|---|")
for key in order:
    g = runs[key]
    if a not in g or b not in g:
        continue
    def m(w, f):
        return med([x[f] for x in g[w]])
    pairs = [y["images_per_cpu_s"] / x["images_per_cpu_s"] for x, y in zip(g[a], g[b])]
    print("| %s | %s | %d | %.1f (%.1f) | %.1f (%.1f) | %.3f, %.3f | %.3f; %s |" % (
        key[0], "FP32" if key[1] == 32 else "W%dA%d" % (key[1], key[1]), len(pairs),
        m(a, "images_per_s"), m(a, "images_per_cpu_s"),
        m(b, "images_per_s"), m(b, "images_per_cpu_s"),
        m(b, "images_per_s") / m(a, "images_per_s"),
        m(b, "images_per_cpu_s") / m(a, "images_per_cpu_s"),
        med(pairs), ", ".join("%.3f" % p for p in pairs)))
