#!/usr/bin/python3
"""Compares two `make bench` results files (bench/benchjson.py) figure by
figure.

    compare.py NEW.json [OLD.json] [--results-dir DIR] [--fail-on-regression]

OLD defaults to the newest results file committed to git under DIR (default:
bench/results next to this script) for the same CPU kind as NEW (the
machine.cpu_kind of the file), newest by the time of the commit that last
touched it, then by name; NEW itself is never its own OLD.

Prints each figure of both files side by side with new / old and the noise
it is judged against: the larger relative spread ((max - min) / median) of
the figure's rounds in the two files, and at least 5%. A figure that got
worse by more than that is a REGRESSION, better by more is "better"; the
rest is within noise. Peer figures (PyTorch, onnxruntime) are flagged the
same way and marked "peer": a peer that slowed down along with lsq says the
machine was busier, not that lsq got slower.

Exit status: 0, also with regressions; 1 with --fail-on-regression when an
lsq figure regressed; 2 for unusable input (a file that is not a results
file, no OLD given and none found is not an error: it says so, status 0).
"""
import argparse
import json
import os
import subprocess
import sys

MIN_NOISE = 0.05


def bits_name(b):
    return "FP32" if b == 32 else "W%dA%d" % (b, b)


def spread_of(f):
    return (f or {}).get("spread") or 0.0


def figures(doc):
    """{key: (value, rounds_spread, better, peer, unit)} of every figure of doc.
    better is +1 when higher is better, -1 when lower is."""
    out = {}

    def put(key, value, spread, better, peer, unit):
        if value is not None:
            out[key] = (value, spread, better, peer, unit)

    sg = doc.get("sgemm") or {}
    put("sgemm ceiling", sg.get("gflops"), 0.0, +1, False, "GFLOP/s")
    for e in doc.get("training", []):
        name = "train %s %s %s" % (e["model"], bits_name(e["bits"]), e["engine"])
        peer = e["engine"] == "pytorch"
        f = e.get("images_per_s")
        put(name, f and f["median"], spread_of(f), +1, peer, "img/s")
        f = e.get("peak_rss_mb")
        put(name + " peak RSS", f and f["median"], spread_of(f), -1, peer, "MB")
    for r in doc.get("training_ratios", []):
        f = r["ratio"]
        put("train %s %s %s/%s" % (r["model"], bits_name(r["bits"]), r["of"], r["to"]),
            f["median"], spread_of(f), +1, False, "x")
    ld = doc.get("loader") or {}
    put("loader", ld.get("images_per_s"), 0.0, +1, False, "img/s")
    for e in doc.get("inference", []):
        base = "infer %s %s b%d" % (e["model"], bits_name(e["bits"]), e["batch"])
        for eng, peer in (("integer", False), ("float", False), ("onnxruntime", True)):
            f = e.get(eng)
            if f:
                put("%s %s" % (base, eng), f["median"], spread_of(f), +1, peer, "img/s")
        if e.get("integer_to_onnxruntime"):
            put(base + " integer/onnxruntime", e["integer_to_onnxruntime"],
                max(spread_of(e["integer"]), spread_of(e.get("onnxruntime"))), +1, False, "x")
    for e in doc.get("latency", []):
        base = "latency %s %s b1 t%d" % (e["model"], bits_name(e["bits"]), e["threads"])
        for eng, peer in (("integer", False), ("float", False), ("onnxruntime", True)):
            f = e.get(eng)
            if not f:
                continue
            for p in ("p50_ms", "p99_ms"):
                put("%s %s %s" % (base, eng, p[:3]), f[p]["value"], f[p]["spread"], -1, peer,
                    "ms")
        if e.get("integer_to_onnxruntime_p50"):
            put(base + " integer/onnxruntime p50", e["integer_to_onnxruntime_p50"],
                max(e["integer"]["p50_ms"]["spread"], e["onnxruntime"]["p50_ms"]["spread"]),
                -1, False, "x")
    return out


def judge(new, old):
    """(ratio new/old, noise, verdict) of two figures of figures()."""
    nv, ns, better, _, _ = new
    ov, os_, _, _, _ = old
    ratio = nv / ov if ov else float("inf")
    noise = max(ns, os_, MIN_NOISE)
    worse = (1 - ratio) if better > 0 else (ratio - 1)
    if worse > noise:
        return ratio, noise, "REGRESSION"
    if -worse > noise:
        return ratio, noise, "better"
    return ratio, noise, ""


def load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit("compare: %s: %s" % (path, e))
    if not isinstance(doc, dict) or "machine" not in doc or "schema" not in doc:
        raise SystemExit("compare: %s: not a bench results file (no schema/machine)" % path)
    return doc


def git(cwd, *args):
    r = subprocess.run(["git", "-C", cwd] + list(args), capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def newest_committed(results_dir, kind, exclude):
    """The newest file committed under results_dir whose cpu_kind is kind."""
    if not os.path.isdir(results_dir):
        return None
    listed = git(results_dir, "ls-files", "-z", "--", ".")
    if not listed:
        return None
    best = None
    for rel in filter(None, listed.split("\0")):
        path = os.path.join(results_dir, rel)
        if not rel.endswith(".json") or not os.path.exists(path):
            continue
        if os.path.realpath(path) == os.path.realpath(exclude):
            continue
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if (doc.get("machine") or {}).get("cpu_kind") != kind:
            continue
        t = (git(results_dir, "log", "-1", "--format=%ct", "--", rel) or "0").strip() or "0"
        key = (int(t), os.path.basename(rel))
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None


def num(v):
    return "%.0f" % v if abs(v) >= 1000 else "%.4g" % v


def describe(tag, path, doc):
    m = doc.get("machine", {})
    s = doc.get("settings", {})
    return ("%s %s: commit %s%s, %s, %s (%s cores), rounds %s, load %s -> %s" % (
        tag, path, doc.get("commit_short"), " (dirty)" if doc.get("dirty") else "",
        doc.get("date"), m.get("cpu_model"), m.get("cores"), s.get("rounds"),
        s.get("load_avg_at_start"), m.get("load_avg_at_write")))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("new")
    ap.add_argument("old", nargs="?")
    ap.add_argument("--results-dir",
                    default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--fail-on-regression", action="store_true")
    a = ap.parse_args(argv)
    new = load(a.new)
    kind = new["machine"].get("cpu_kind")
    old_path = a.old or newest_committed(a.results_dir, kind, a.new)
    if not old_path:
        print("compare: no committed results file for CPU kind %s under %s: nothing to "
              "compare with" % (kind, a.results_dir))
        return 0
    old = load(old_path)
    print(describe("old", old_path, old))
    print(describe("new", a.new, new))
    if old["machine"].get("cpu_kind") != kind:
        print("compare: warning: CPU kinds differ (%s vs %s): the figures are not comparable"
              % (old["machine"].get("cpu_kind"), kind))
    fn, fo = figures(new), figures(old)
    print("\n| figure | unit | old | new | new / old | noise | verdict |")
    print("|---|---|---|---|---|---|---|")
    lsq_reg, peer_reg = [], []
    for key in fn:
        if key not in fo:
            continue
        ratio, noise, verdict = judge(fn[key], fo[key])
        peer = fn[key][3]
        if verdict == "REGRESSION":
            (peer_reg if peer else lsq_reg).append(key)
        print("| %s | %s | %s | %s | %.3f | %.0f%% | %s%s |" % (
            key, fn[key][4], num(fo[key][0]), num(fn[key][0]), ratio, 100 * noise, verdict,
            " (peer)" if peer and verdict else ""))
    only_new = [k for k in fn if k not in fo]
    only_old = [k for k in fo if k not in fn]
    if only_new:
        print("\nonly in new: " + ", ".join(only_new))
    if only_old:
        print("only in old: " + ", ".join(only_old))
    print("\ncompare: %d lsq figure(s) regressed beyond noise%s; %d peer figure(s)%s" % (
        len(lsq_reg), (": " + ", ".join(lsq_reg)) if lsq_reg else "", len(peer_reg),
        (": " + ", ".join(peer_reg)) if peer_reg else ""))
    if lsq_reg and peer_reg:
        print("compare: peers slowed down too: the machine was likely busier")
    return 1 if a.fail_on_regression and lsq_reg else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
