#!/usr/bin/python3
"""Summarises bench/run.sh's JSON lines: medians per (engine, model, bits),
ratios against PyTorch from the same run, GFLOP/s against the SGEMM ceiling."""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
sgemm = next((r["gflops"] for r in rows if r.get("bench") == "sgemm"), None)
groups = {}
for r in rows:
    if "images_per_s" not in r:
        continue
    eng = r.get("engine") or r.get("peer")
    groups.setdefault((r["model"], r["bits"], eng), []).append(r)


def med(key, field="images_per_s"):
    v = [x[field] for x in groups.get(key, []) if x.get(field) is not None]
    return statistics.median(v) if v else None


print("Training images/s, batch 128, 2 threads (median of %d rounds; same run)\n"
      % max((len(v) for v in groups.values()), default=0))
print("| model | bits | lsq | PyTorch | lsq / PyTorch | lsq GFLOP/s | of SGEMM ceiling | peak RSS MB |")
print("|---|---|---|---|---|---|---|---|")
for model in ("cnn-small", "resnet20", "mlp"):
    for bits in (32, 2):
        a, b = med((model, bits, "lsq")), med((model, bits, "pytorch"))
        if a is None:
            continue
        g = med((model, bits, "lsq"), "gflops")
        rss = med((model, bits, "lsq"), "peak_rss_mb")
        ratio = "%.2f" % (a / b) if b else "—"
        frac = "%.0f%%" % (100 * g / sgemm) if sgemm and g else "—"
        print("| %s | %s | %.0f | %s | %s | %.1f | %s | %.0f |" % (
            model, "FP32" if bits == 32 else "W%dA%d" % (bits, bits), a,
            "%.0f" % b if b else "—", ratio, g or 0, frac, rss or 0))
im2col = [(m, b) for m in ("cnn-small", "resnet20") for b in (32, 2)
          if med((m, b, "lsq-im2col")) and med((m, b, "lsq"))]
if im2col:
    print("\nconv2d paths, same run: direct kernels where they apply (lsq) vs "
          "im2col + SGEMM everywhere (train_bench --conv gemm)\n")
    print("| model | bits | lsq img/s | im2col + SGEMM img/s | direct / im2col |")
    print("|---|---|---|---|---|")
    for m, b in im2col:
        a, c = med((m, b, "lsq")), med((m, b, "lsq-im2col"))
        print("| %s | %s | %.0f | %.0f | %.2f |" % (
            m, "FP32" if b == 32 else "W%dA%d" % (b, b), a, c, a / c))
flt = [(m, b) for m in ("cnn-small", "resnet20") for b in (2, 3, 4)
       if med((m, b, "lsq-float")) and med((m, b, "lsq"))]
if flt:
    print("\nQuantized convs' forward on integer codes (lsq) vs on float values "
          "(train_bench --conv float), same run\n")
    print("| model | bits | lsq img/s | float forward img/s | integer / float |")
    print("|---|---|---|---|---|")
    for m, b in flt:
        a, c = med((m, b, "lsq")), med((m, b, "lsq-float"))
        print("| %s | W%dA%d | %.0f | %.0f | %.2f |" % (m, b, b, a, c, a / c))
for model in ("cnn-small", "resnet20"):
    fp, q = med((model, 32, "lsq")), med((model, 2, "lsq"))
    if fp and q:
        print("\n%s: W2A2 runs at %.0f%% of full-precision images/s" % (model, 100 * q / fp))
if sgemm:
    print("\nSGEMM ceiling (OpenBLAS, 2 threads, best shape): %.1f GFLOP/s" % sgemm)
