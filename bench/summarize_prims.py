#!/usr/bin/python3
"""bench/conv_prims.c's JSON lines as a markdown table: per shape and pass,
ms and GFLOP/s of the engine's own kernels, oneDNN in its blocked layouts
with the reorders from and to NCHW (and the reorders' share), oneDNN on
NCHW, oneDNN's Winograd (blocked, reorders included; "refused" where oneDNN
refuses the shape); the fastest marked. A second table puts Winograd beside
oneDNN's direct blocked conv on the shapes it takes. FIELD picks the measure: cpu (median CPU ms of
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
      "[reorders ms] | oneDNN NCHW ms (GFLOP/s) | oneDNN Winograd ms (GFLOP/s) [reorders ms] "
      "| best / own |")
print("|---|---|---|---|---|---|---|---|")
winos = []
fwd_types = []
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    g = r["gflop"]
    v = {k: r.get(k + suffix, -1.0) for k in ("own", "dnnl", "plain", "wino")}
    best = min((x for x in v.values() if x > 0), default=float("nan"))
    cell = {k: ("**%.2f** (%.0f)" if v[k] == best else "%.2f (%.0f)") % (v[k], g / v[k] * 1e3)
            if v[k] > 0 else "refused" for k in v}
    wino = cell["wino"] + (" [%.2f]" % r["wino_reorder_ms"] if v["wino"] > 0 else "")
    print("| %s | %s | %.3f | %s | %s [%.2f] | %s | %s | %.2fx |" % (
        r["shape"], r["pass"].replace("_", " "), g, cell["own"], cell["dnnl"],
        r["dnnl_reorder_ms"], cell["plain"], wino, v["own"] / best))
    if v["wino"] > 0:
        winos.append((r, v))
    if "prim_f32_ms" in r:
        fwd_types.append(r)
if winos:
    print("\nWinograd F(4,3) against oneDNN's direct conv, both blocked, reorders included "
          "(%s ms; below 1: Winograd faster):\n" % field)
    print("| shape | pass | own | oneDNN direct | oneDNN Winograd | Winograd / direct |")
    print("|---|---|---|---|---|---|")
    for r, v in winos:
        print("| %s | %s | %.2f | %.2f | %.2f | %.2f |" % (
            r["shape"], r["pass"].replace("_", " "), v["own"], v["dnnl"], v["wino"],
            v["wino"] / v["dnnl"]))
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
