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


def bits_name(b):
    return "FP32" if b == 32 else "W%dA%d" % (b, b)


def med(key, field="images_per_s"):
    v = [x[field] for x in groups.get(key, []) if x.get(field) is not None]
    return statistics.median(v) if v else None


print("Training images/s, batch 128, 2 threads (median of %d rounds; same run)\n"
      % max((len(v) for v in groups.values()), default=0))
print("| model | bits | lsq | PyTorch | lsq / PyTorch | lsq GFLOP/s | of SGEMM ceiling | peak RSS MB |")
print("|---|---|---|---|---|---|---|---|")
for model in ("cnn-small", "resnet20", "mobilenet", "mlp"):
    for bits in (32, 2):
        a, b = med((model, bits, "lsq")), med((model, bits, "pytorch"))
        if a is None:
            continue
        g = med((model, bits, "lsq"), "gflops")
        rss = med((model, bits, "lsq"), "peak_rss_mb")
        ratio = "%.2f" % (a / b) if b else "—"
        frac = "%.0f%%" % (100 * g / sgemm) if sgemm and g else "—"
        print("| %s | %s | %.0f | %s | %s | %.1f | %s | %.0f |" % (
            model, bits_name(bits), a,
            "%.0f" % b if b else "—", ratio, g or 0, frac, rss or 0))
def compare(engine, bits, title, head, ratio):
    """A same-run table of lsq against another train_bench --conv mode."""
    pairs = [(m, b) for m in ("cnn-small", "resnet20") for b in bits
             if med((m, b, engine)) and med((m, b, "lsq"))]
    if not pairs:
        return
    print("\n%s, same run\n" % title)
    print("| model | bits | lsq img/s | %s img/s | %s |" % (head, ratio))
    print("|---|---|---|---|---|")
    for m, b in pairs:
        a, c = med((m, b, "lsq")), med((m, b, engine))
        print("| %s | %s | %.0f | %.0f | %.2f |" % (m, bits_name(b), a, c, a / c))


compare("lsq-im2col", (32, 2), "conv2d paths: direct kernels where they apply (lsq) vs "
        "im2col + SGEMM everywhere (train_bench --conv gemm)", "im2col + SGEMM",
        "direct / im2col")
compare("lsq-float", (2, 3, 4), "Quantized convs' forward on integer codes (lsq) vs on "
        "float values (train_bench --conv float)", "float forward", "integer / float")
for model in ("cnn-small", "resnet20"):
    fp, q = med((model, 32, "lsq")), med((model, 2, "lsq"))
    if fp and q:
        print("\n%s: W2A2 runs at %.0f%% of full-precision images/s" % (model, 100 * q / fp))
if sgemm:
    print("\nSGEMM ceiling (OpenBLAS, 2 threads, best shape): %.1f GFLOP/s" % sgemm)
