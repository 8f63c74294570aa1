#!/usr/bin/python3
"""bench/conv_prims.c's JSON lines as a markdown table: per shape and pass,
ms and GFLOP/s of the engine's own kernels, oneDNN in its blocked layouts
with the reorders from and to NCHW (and the reorders' share), oneDNN on
NCHW; the fastest marked. FIELD picks the measure: cpu (median CPU ms of
the process, the default), wall (median wall ms) or min (fastest wall ms).

    /usr/bin/python3 bench/summarize_prims.py prims.jsonl [cpu|wall|min] [xsmm.jsonl]

With bench/xsmm/run.sh's output as a third argument, a second table puts
libxsmm's layers (in their own layout, no reorders; CPU ms) beside the
own kernels and oneDNN.
"""
import json
import sys

field = sys.argv[2] if len(sys.argv) > 2 else "cpu"
suffix = {"cpu": "_cpu_ms", "wall": "_ms", "min": "_min_ms"}[field]
print("| shape (batch 128) | pass | GFLOP | own ms (GFLOP/s) | oneDNN blocked ms (GFLOP/s) "
      "[reorders ms] | oneDNN NCHW ms (GFLOP/s) | best / own |")
print("|---|---|---|---|---|---|---|")
fwd_types = []
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    g = r["gflop"]
    v = {k: r[k + suffix] for k in ("own", "dnnl", "plain")}
    best = min((x for x in v.values() if x > 0), default=float("nan"))
    cell = {k: ("**%.2f** (%.0f)" if v[k] == best else "%.2f (%.0f)") % (v[k], g / v[k] * 1e3)
            for k in v}
    print("| %s | %s | %.3f | %s | %s [%.2f] | %s | %.2fx |" % (
        r["shape"], r["pass"].replace("_", " "), g, cell["own"], cell["dnnl"],
        r["dnnl_reorder_ms"], cell["plain"], v["own"] / best))
    if "prim_f32_ms" in r:
        fwd_types.append(r)
if fwd_types:
    print("\nForward primitive alone, data already in oneDNN's layouts (median CPU ms):\n")
    print("| shape | f32 | int8 (u8 x s8, s32 sums) | bf16 |")
    print("|---|---|---|---|")
    for r in fwd_types:
        print("| %s | %.2f | %.2f | %.2f |" % (r["shape"], r["prim_f32_ms"], r["prim_int8_ms"],
                                              r["prim_bf16_ms"]))

if len(sys.argv) > 3:
    prims = {}
    for line in open(sys.argv[1]):
        if line.startswith("{"):
            r = json.loads(line)
            prims[(r["shape"], r["pass"])] = r
    print("\nlibxsmm 1.17 (libxsmm_dnn, its own blocked layout, no reorders) beside them "
          "(median CPU ms, 1 thread):\n")
    print("| shape | pass | own | oneDNN blocked, reorders included [without] | "
          "oneDNN NCHW | libxsmm |")
    print("|---|---|---|---|---|---|")
    for line in open(sys.argv[3]):
        if not line.startswith("{"):
            continue
        x = json.loads(line)
        if "xsmm_cpu_ms" not in x:
            continue
        r = prims.get((x["shape"], x["pass"]))
        if not r:
            continue
        print("| %s | %s | %.2f | %.2f [%.2f] | %.2f | %.2f%s |" % (
            x["shape"], x["pass"].replace("_", " "), r["own_cpu_ms"], r["dnnl_cpu_ms"],
            r["dnnl_cpu_ms"] - r["dnnl_reorder_ms"], r["plain_cpu_ms"], x["xsmm_cpu_ms"],
            "" if x.get("ok", True) else " (failed)"))
