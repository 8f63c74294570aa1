#!/usr/bin/python3
"""One results file per `make bench` run: every figure of the run, with the
machine, build and kernel paths it ran on, as one JSON document.

    benchjson.py write --train TRAIN.jsonl --loader LOADER.jsonl
                       --infer INFER.jsonl --out-dir bench/results
                       [--rounds N --steps N --infer-repeats N --note TEXT
                        --load-start "L1 L5 L15" --isa native|avx2]
        writes OUT_DIR/YYYY-MM-DD-<shortcommit>-<cpu-kind>.json (".2", ".3"
        before the CPU kind when that name is taken) and prints its path.
    benchjson.py latency-table INFER.jsonl
        the batch-1 latency table (markdown) of bench/infer.sh's lines.
    benchjson.py show RESULTS.json
        a results file's training, inference and latency tables (markdown).

The inputs are the JSON lines of bench/run.sh (train_bench, torch_train.py,
loader_bench) and bench/infer.sh (infer_bench speed and latency,
tests/onnx/run_model.mjs). Each figure keeps its rounds (the values the
median is taken over) so that bench/compare.py can judge noise:
  training  one value per round of bench/run.sh (ROUNDS);
  inference one value per timed run (REPEATS), as img/s;
  latency   every run is summarised by p50 and p99 (nearest rank) over all
            runs; its rounds are the p50 (and p99) of each of four
            consecutive blocks of the runs.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys

SCHEMA = 1
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
         "avx_vnni", "amx_int8")
LATENCY_BLOCKS = 4
# train_bench's engine names and the --conv path each ran: auto (direct
# kernels, quantized convs' forward on integer codes, where they apply),
# float (without the integer forward), gemm (im2col + SGEMM everywhere)
CONV_PATHS = {"lsq": "auto", "lsq-float": "float", "lsq-im2col": "gemm"}


def load_jsonl(path):
    """The JSON objects of a file of JSON lines (other lines skipped)."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


def percentile(values, q):
    """Nearest-rank percentile q (0..100] of values."""
    v = sorted(values)
    if not v:
        return None
    k = max(1, math.ceil(q / 100.0 * len(v)))
    return v[k - 1]


def spread(rounds):
    """Relative spread of the rounds: (max - min) / median; 0 for fewer than 2."""
    if not rounds or len(rounds) < 2:
        return 0.0
    m = statistics.median(rounds)
    return (max(rounds) - min(rounds)) / m if m else 0.0


def figure(rounds, digits=1):
    """{median, rounds, spread} of a list of per-round values."""
    rounds = [r for r in rounds if r is not None]
    if not rounds:
        return None
    return {"median": round(statistics.median(rounds), digits),
            "rounds": [round(r, digits) for r in rounds],
            "spread": round(spread(rounds), 4)}


# ------------------------------------------------------------------ machine

def cpu_info(path="/proc/cpuinfo"):
    model, flags = "unknown", set()
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and model == "unknown":
                    model = v.strip()
                elif k == "flags" and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    return model, flags


def cpu_kind(model, flags):
    """A file-name-safe name for 'figures comparable with each other': the CPU
    model without its clock and marketing words, and its widest integer ISA."""
    m = model.lower()
    m = re.sub(r"\((r|tm)\)", " ", m)
    m = re.sub(r"@.*", " ", m)
    m = re.sub(r"\b(\d+-core|processor|cpu|with|radeon.*graphics)\b", " ", m)
    slug = re.sub(r"[^a-z0-9]+", "-", m).strip("-") or "cpu"
    if "avx512_vnni" in flags:
        isa = "avx512vnni"
    elif "avx512f" in flags:
        isa = "avx512"
    elif "avx2" in flags:
        isa = "avx2"
    else:
        isa = os.uname().machine.replace("_", "-")
    return "%s-%s" % (slug, isa)


def machine(cpuinfo="/proc/cpuinfo"):
    model, flags = cpu_info(cpuinfo)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_model": model, "cpu_kind": cpu_kind(model, flags), "cores": cores,
            "flags": {f: f in flags for f in FLAGS}, "load_avg_at_write": load}


def git(*args):
    try:
        return subprocess.run(["git"] + list(args), check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ------------------------------------------------------------------ figures

def training(rows):
    """Per (model, bits, engine): images/s, GFLOP/s and peak RSS over rounds,
    plus lsq's ratio to PyTorch, round by round (run.sh alternates them)."""
    groups = {}
    for r in rows:
        if r.get("bench") != "train" and r.get("peer") != "pytorch":
            continue
        if "images_per_s" not in r:
            continue
        eng = r.get("engine") or r.get("peer")
        groups.setdefault((r["model"], r["bits"], eng), []).append(r)
    out, ratios = [], []
    for (model, bits, eng), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        e = {"model": model, "bits": bits, "engine": eng, "batch": rs[0].get("batch"),
             "threads": rs[0].get("threads"), "steps": rs[0].get("steps"),
             "images_per_s": figure([r["images_per_s"] for r in rs])}
        if any("gflops" in r for r in rs):
            e["gflops"] = figure([r.get("gflops") for r in rs], 2)
        if any("peak_rss_mb" in r for r in rs):
            e["peak_rss_mb"] = figure([r.get("peak_rss_mb") for r in rs])
        out.append(e)
    for (model, bits, eng), rs in groups.items():
        peer = groups.get((model, bits, "pytorch"))
        if eng != "lsq" or not peer:
            continue
        n = min(len(rs), len(peer))
        ratios.append({"model": model, "bits": bits, "of": "lsq", "to": "pytorch",
                       "ratio": figure([rs[i]["images_per_s"] / peer[i]["images_per_s"]
                                        for i in range(n)], 3)})
    ratios.sort(key=lambda r: (r["model"], r["bits"]))
    return out, ratios


def roofline(train, infer, ceiling):
    """Achieved GFLOP/s (training, float) and GOP/s (integer inference, two
    ops a multiply-accumulate) against the SGEMM ceiling of the same run."""
    out = []
    for e in train:
        if e["engine"] == "lsq" and e.get("gflops") and ceiling:
            g = e["gflops"]["median"]
            out.append({"what": "training", "model": e["model"], "bits": e["bits"],
                        "unit": "GFLOP/s", "achieved": g,
                        "of_ceiling": round(g / ceiling, 4)})
    for e in infer:
        macs = e.get("macs_per_image")
        ips = (e.get("integer") or {}).get("median")
        if macs and ips and ceiling:
            g = ips * macs * 2 / 1e9
            out.append({"what": "integer inference", "model": e["model"], "bits": e["bits"],
                        "unit": "GOP/s", "achieved": round(g, 2),
                        "of_ceiling": round(g / ceiling, 4)})
    return out


def inference(rows):
    out = []
    for r in rows:
        if r.get("bench") != "infer":
            continue
        lsq, ort = r["lsq"], r.get("onnxruntime")
        b = r["batch"]
        e = {"model": r["model"], "bits": r["bits"], "batch": b, "threads": r["threads"],
             "kernel": lsq.get("kernel"), "macs_per_image": lsq.get("macs_per_image"),
             "integer": figure([b / (ms / 1e3) for ms in lsq["integer_runs_ms"]]),
             "float": figure([b / (ms / 1e3) for ms in lsq["float_runs_ms"]])}
        if ort and ort.get("runs_ms"):
            e["onnxruntime"] = figure([b / (ms / 1e3) for ms in ort["runs_ms"]])
            e["onnxruntime"]["best"] = round(b / (ort["ms"] / 1e3), 1)
            e["integer_to_onnxruntime"] = round(e["integer"]["median"] /
                                                e["onnxruntime"]["median"], 3)
        e["integer_to_float"] = round(e["integer"]["median"] / e["float"]["median"], 3)
        out.append(e)
    return out


def latency_figure(runs_ms):
    n = len(runs_ms)
    size = n // LATENCY_BLOCKS
    blocks = [runs_ms[i * size:(i + 1) * size] for i in range(LATENCY_BLOCKS)] if size else []
    p50 = {"value": round(percentile(runs_ms, 50), 4),
           "rounds": [round(percentile(b, 50), 4) for b in blocks]}
    p99 = {"value": round(percentile(runs_ms, 99), 4),
           "rounds": [round(percentile(b, 99), 4) for b in blocks]}
    for p in (p50, p99):
        p["spread"] = round(spread(p["rounds"]), 4)
    return {"runs": n, "p50_ms": p50, "p99_ms": p99,
            "mean_ms": round(statistics.fmean(runs_ms), 4),
            "min_ms": round(min(runs_ms), 4), "max_ms": round(max(runs_ms), 4)}


def latency(rows):
    out = []
    for r in rows:
        if r.get("bench") != "latency":
            continue
        lsq, ort = r["lsq"], r.get("onnxruntime")
        e = {"model": r["model"], "bits": r["bits"], "batch": 1, "threads": r["threads"],
             "warmup": lsq.get("warmup"), "kernel": lsq.get("kernel"),
             "integer": latency_figure(lsq["integer_runs_ms"]),
             "float": latency_figure(lsq["float_runs_ms"])}
        if ort and ort.get("runs_ms"):
            e["onnxruntime"] = latency_figure(ort["runs_ms"])
            o = e["onnxruntime"]["p50_ms"]["value"]
            e["integer_to_onnxruntime_p50"] = round(e["integer"]["p50_ms"]["value"] / o, 3)
            e["float_to_onnxruntime_p50"] = round(e["float"]["p50_ms"]["value"] / o, 3)
        out.append(e)
    return out


def latency_markdown(lat):
    if not lat:
        return ""
    t = lat[0]
    lines = ["## Batch-1 latency (ms, p50 / p99 of %d single-image runs after %s warm-up, "
             "%d thread, W%dA%d)" % (t["integer"]["runs"], t.get("warmup"), t["threads"],
                                     t["bits"], t["bits"]),
             "| model | integer p50 | integer p99 | float p50 | float p99 | onnxruntime p50 "
             "| onnxruntime p99 | integer / onnxruntime p50 | float / onnxruntime p50 | kernel |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in lat:
        o = e.get("onnxruntime")
        cell = lambda f, p: "%.3f" % f[p]["value"] if f else "n/a"  # noqa: E731
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            e["model"], cell(e["integer"], "p50_ms"), cell(e["integer"], "p99_ms"),
            cell(e["float"], "p50_ms"), cell(e["float"], "p99_ms"),
            cell(o, "p50_ms"), cell(o, "p99_ms"),
            "%.2fx" % e["integer_to_onnxruntime_p50"] if o else "n/a",
            "%.2fx" % e["float_to_onnxruntime_p50"] if o else "n/a", e["kernel"]))
    return "\n".join(lines)


def bits_name(b):
    return "FP32" if b == 32 else "W%dA%d" % (b, b)


def show_markdown(doc):
    """The tables of a results file, as markdown (for docs/results.md)."""
    m, sg = doc["machine"], doc.get("sgemm") or {}
    ceiling = sg.get("gflops")
    out = ["%s (%s, %s cores), commit %s%s, %s; OpenBLAS %s; integer kernel %s; load "
           "average %s at the start, %s at the end" % (
               m["cpu_model"], m["cpu_kind"], m["cores"], doc["commit_short"],
               " (dirty)" if doc.get("dirty") else "", doc["date"],
               doc["kernels"].get("openblas_core"), "/".join(doc["kernels"]["integer"]),
               doc["settings"].get("load_avg_at_start"), m.get("load_avg_at_write")), ""]
    train = {(e["model"], e["bits"], e["engine"]): e for e in doc["training"]}
    ratios = {(r["model"], r["bits"]): r["ratio"] for r in doc["training_ratios"]}
    out += ["| model | bits | lsq img/s (rounds) | PyTorch img/s (rounds) | lsq / PyTorch "
            "(paired rounds) | lsq GFLOP/s | of SGEMM ceiling | peak RSS MB lsq / PyTorch |",
            "|---|---|---|---|---|---|---|---|"]
    rnd = lambda f: ", ".join("%g" % x for x in f["rounds"])  # noqa: E731
    for model in ("cnn-small", "resnet20", "mobilenet"):
        for b in (32, 2):
            e, p = train.get((model, b, "lsq")), train.get((model, b, "pytorch"))
            if not e:
                continue
            r = ratios.get((model, b))
            g = e.get("gflops", {}).get("median")
            out.append("| %s | %s | %.0f (%s) | %s | %s | %s | %s | %s / %s |" % (
                model, bits_name(b), e["images_per_s"]["median"], rnd(e["images_per_s"]),
                "%.0f (%s)" % (p["images_per_s"]["median"], rnd(p["images_per_s"])) if p else "—",
                "%.2f (%s)" % (r["median"], rnd(r)) if r else "—",
                "%.1f" % g if g else "—",
                "%.0f%%" % (100 * g / ceiling) if g and ceiling else "—",
                "%.0f" % e["peak_rss_mb"]["median"] if e.get("peak_rss_mb") else "—",
                "%.0f" % p["peak_rss_mb"]["median"] if p and p.get("peak_rss_mb") else "—"))
    out += ["", "SGEMM ceiling: %s GFLOP/s (%s threads, same run)" % (ceiling, sg.get("threads")),
            ""]
    if doc["inference"]:
        out += ["| model | integer img/s | float img/s | onnxruntime img/s median (fastest) "
                "| integer / onnxruntime (medians) | integer GOP/s | of SGEMM ceiling | kernel |",
                "|---|---|---|---|---|---|---|---|"]
        roof = {r["model"]: r for r in doc["roofline"] if r["what"] == "integer inference"}
        for e in doc["inference"]:
            o = e.get("onnxruntime")
            rf = roof.get(e["model"])
            out.append("| %s | %.0f | %.0f | %s | %s | %s | %s | %s |" % (
                e["model"], e["integer"]["median"], e["float"]["median"],
                "%.0f (%.0f)" % (o["median"], o["best"]) if o else "n/a",
                "%.2fx" % e["integer_to_onnxruntime"] if o else "n/a",
                "%.1f" % rf["achieved"] if rf else "—",
                "%.0f%%" % (100 * rf["of_ceiling"]) if rf else "—", e["kernel"]))
        out.append("")
    out.append(latency_markdown(doc["latency"]))
    return "\n".join(out)


def build_doc(train_rows, loader_rows, infer_rows, settings, cpuinfo="/proc/cpuinfo"):
    sg = next((r for r in train_rows if r.get("bench") == "sgemm"), {})
    ceiling = sg.get("gflops")
    train, ratios = training(train_rows)
    infer = inference(infer_rows)
    lat = latency(infer_rows)
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    now = datetime.datetime.now(datetime.timezone.utc)
    kernels = {"integer": sorted({e["kernel"] for e in infer + lat if e.get("kernel")}),
               "train_conv_paths": sorted({CONV_PATHS.get(e["engine"], e["engine"])
                                           for e in train if e["engine"].startswith("lsq")}),
               "openblas_core": sg.get("openblas_core")}
    doc = {"schema": SCHEMA,
           "commit": commit, "commit_short": commit[:7] if commit else None,
           "dirty": bool(dirty) if dirty is not None else None,
           "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "settings": settings,
           "machine": machine(cpuinfo),
           "build": {"cc": sg.get("cc"), "compiled_isa": sg.get("compiled_isa"),
                     "openblas_config": sg.get("openblas_config")},
           "kernels": kernels,
           "sgemm": {"threads": sg.get("threads"), "gflops": ceiling,
                     "shapes": sg.get("shapes")} if sg else None,
           "training": train, "training_ratios": ratios,
           "loader": loader_rows[0] if loader_rows else None,
           "inference": infer, "latency": lat,
           "roofline": roofline(train, infer, ceiling)}
    return doc


def write_doc(doc, out_dir):
    """Writes doc under out_dir with a name not yet taken; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    stem = "%s-%s" % (doc["date"][:10], doc["commit_short"] or "nocommit")
    kind = doc["machine"]["cpu_kind"]
    path, n = os.path.join(out_dir, "%s-%s.json" % (stem, kind)), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(out_dir, "%s.%d-%s.json" % (stem, n, kind))
    text = json.dumps(doc, indent=1)
    # lists of numbers on one line: a file a reviewer can read in a diff
    text = re.sub(r"\[\s*(-?[0-9.eE+-]+(?:,\s*-?[0-9.eE+-]+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text)
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--train", required=True)
    w.add_argument("--loader")
    w.add_argument("--infer")
    w.add_argument("--out-dir", required=True)
    w.add_argument("--rounds", type=int)
    w.add_argument("--steps", type=int)
    w.add_argument("--infer-repeats", type=int)
    w.add_argument("--note", default="")
    w.add_argument("--isa", default="native", choices=("native", "avx2"),
                   help="avx2: the run forced every side onto its AVX2 paths "
                        "(bench/run.sh BENCH_ISA=avx2)")
    w.add_argument("--load-start", default="",
                   help="the 1, 5 and 15 minute load averages when the run began")
    w.add_argument("--cpuinfo", default="/proc/cpuinfo")
    t = sub.add_parser("latency-table")
    t.add_argument("infer")
    sh = sub.add_parser("show")
    sh.add_argument("results")
    a = ap.parse_args(argv)
    if a.cmd == "show":
        with open(a.results) as f:
            print(show_markdown(json.load(f)))
        return 0
    if a.cmd == "latency-table":
        print(latency_markdown(latency(load_jsonl(a.infer))))
        return 0
    settings = {"rounds": a.rounds, "steps": a.steps, "infer_repeats": a.infer_repeats}
    if a.note:
        settings["note"] = a.note
    if a.load_start:
        settings["load_avg_at_start"] = [float(x) for x in a.load_start.split()]
    settings["isa"] = a.isa
    doc = build_doc(load_jsonl(a.train), load_jsonl(a.loader), load_jsonl(a.infer),
                    settings, a.cpuinfo)
    if a.isa != "native":
        doc["machine"]["cpu_kind"] += "-as-" + a.isa
    print(write_doc(doc, a.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
