#!/usr/bin/python3
"""bench/benchjson.py (the results file of `make bench`) and bench/compare.py
on small synthetic inputs, run as `make bench` runs them (subprocesses).

    /usr/bin/python3 tests/bench/test_results_files.py     (from anywhere)

The writer: medians, rounds and spreads of every table, paired ratios,
nearest-rank p50/p99 and their per-block rounds, roofline fractions, the
CPU kind and file name. The compare step: a drop beyond the rounds' spread
is a regression, one within it (or under 5%) is not, lower-is-better for
latency and memory, peers never fail the run, --fail-on-regression is the
only way to a nonzero status, and the default OLD is the newest file git
holds for the same CPU kind.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WRITER = os.path.join(ROOT, "bench", "benchjson.py")
COMPARE = os.path.join(ROOT, "bench", "compare.py")
PY = sys.executable

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16
"""

# Three rounds of lsq and PyTorch on one model, as bench/run.sh writes them.
TRAIN = [
    {"bench": "sgemm", "threads": 2, "shapes": [{"m": 64, "n": 64, "k": 64, "gflops": 100.0}],
     "gflops": 100.0, "openblas_core": "Cooperlake", "openblas_config": "OpenBLAS 0.3.21",
     "cc": "12.2.0", "compiled_isa": "avx2+fma"},
]
for lsq, torch, rss in ((1000.0, 400.0, 50.0), (1100.0, 500.0, 52.0), (900.0, 450.0, 51.0)):
    TRAIN.append({"bench": "train", "engine": "lsq", "model": "cnn-small", "bits": 2,
                  "batch": 128, "threads": 2, "steps": 4, "images_per_s": lsq,
                  "gflops": lsq / 20, "peak_rss_mb": rss})
    TRAIN.append({"peer": "pytorch", "model": "cnn-small", "bits": 2, "batch": 128,
                  "threads": 2, "steps": 4, "images_per_s": torch, "peak_rss_mb": 300.0})
LOADER = {"bench": "loader", "images_per_s": 50000.0, "batch": 128, "crop_pad": 4,
          "cpu": "AMD EPYC"}
# batch 256: runs of 100, 200, 400 ms -> 2560, 1280, 640 img/s
INFER = {"bench": "infer", "model": "cnn-small", "bits": 2, "batch": 256, "threads": 2,
         "lsq": {"integer_runs_ms": [100.0, 200.0, 400.0], "float_runs_ms": [200.0, 200.0, 200.0],
                 "macs_per_image": 5e6, "kernel": "vnni"},
         "onnxruntime": {"ms": 256.0, "runs_ms": [256.0, 512.0, 300.0]}}
# 200 runs: 1..200 ms for the integer engine (p50 = 100, p99 = 198 by nearest
# rank; blocks of 50: p50s 25, 75, 125, 175); 2 ms flat for the others.
LATENCY = {"bench": "latency", "model": "cnn-small", "bits": 2, "batch": 1, "threads": 1,
           "lsq": {"integer_runs_ms": [float(i) for i in range(1, 201)],
                   "float_runs_ms": [2.0] * 200, "threads": 1, "warmup": 20, "kernel": "vnni"},
           "onnxruntime": {"ms": 2.0, "runs_ms": [2.0] * 200}}


def run(*args, cwd=None, env=None):
    return subprocess.run([PY] + list(args), capture_output=True, text=True, cwd=cwd, env=env)


def write_lines(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


class ResultsFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # one writer run for every test (each variant is a copy of its file)
        cls.tmp = tempfile.mkdtemp(prefix="lsq-benchjson-")
        t = lambda n: os.path.join(cls.tmp, n)  # noqa: E731
        with open(t("cpuinfo"), "w") as f:
            f.write(CPUINFO)
        write_lines(t("train.jsonl"), TRAIN)
        write_lines(t("loader.jsonl"), [LOADER])
        write_lines(t("infer.jsonl"), [INFER, LATENCY])
        r = run(WRITER, "write", "--train", t("train.jsonl"), "--loader", t("loader.jsonl"),
                "--infer", t("infer.jsonl"), "--out-dir", t("out"), "--rounds", "3",
                "--steps", "4", "--cpuinfo", t("cpuinfo"), "--load-start", "1.5 2.0 2.5",
                cwd=ROOT)
        if r.returncode != 0:
            shutil.rmtree(cls.tmp)
            raise AssertionError("benchjson.py write: " + r.stderr)
        cls.path = r.stdout.strip()
        with open(cls.path) as f:
            cls.doc = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    # -------------------------------------------------------------- writer

    def test_file_name_and_machine(self):
        self.assertRegex(os.path.basename(self.path),
                         r"^\d{4}-\d\d-\d\d-[0-9a-f]{7}-amd-epyc-7b13-avx512vnni\.json$")
        m = self.doc["machine"]
        self.assertEqual(m["cpu_kind"], "amd-epyc-7b13-avx512vnni")
        self.assertTrue(m["flags"]["avx512_vnni"] and m["flags"]["avx512_bf16"])
        self.assertFalse(m["flags"]["amx_int8"])
        self.assertEqual(self.doc["settings"]["load_avg_at_start"], [1.5, 2.0, 2.5])
        self.assertEqual(self.doc["kernels"]["openblas_core"], "Cooperlake")
        self.assertEqual(self.doc["kernels"]["integer"], ["vnni"])
        self.assertEqual(self.doc["kernels"]["train_conv_paths"], ["auto"])
        self.assertEqual(self.doc["build"]["compiled_isa"], "avx2+fma")
        self.assertRegex(self.doc["commit"], r"^[0-9a-f]{40}$")

    def test_a_second_file_does_not_overwrite_the_first(self):
        r = run(WRITER, "write", "--train", os.path.join(self.tmp, "train.jsonl"),
                "--out-dir", os.path.join(self.tmp, "out"),
                "--cpuinfo", os.path.join(self.tmp, "cpuinfo"), cwd=ROOT)
        self.assertEqual(r.returncode, 0, r.stderr)
        second = r.stdout.strip()
        self.assertNotEqual(second, self.path)
        self.assertRegex(second, r"\.2-amd-epyc-7b13-avx512vnni\.json$")
        self.assertTrue(os.path.exists(self.path))

    def test_a_forced_avx2_run_has_a_cpu_kind_of_its_own(self):
        # bench/run.sh BENCH_ISA=avx2: never compared with the native files
        r = run(WRITER, "write", "--train", os.path.join(self.tmp, "train.jsonl"),
                "--out-dir", os.path.join(self.tmp, "out-avx2"), "--isa", "avx2",
                "--cpuinfo", os.path.join(self.tmp, "cpuinfo"), cwd=ROOT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"-amd-epyc-7b13-avx512vnni-as-avx2\.json$")
        with open(r.stdout.strip()) as f:
            doc = json.load(f)
        self.assertEqual(doc["machine"]["cpu_kind"], "amd-epyc-7b13-avx512vnni-as-avx2")
        self.assertEqual(doc["settings"]["isa"], "avx2")
        self.assertEqual(self.doc["settings"]["isa"], "native")
        bad = run(WRITER, "write", "--train", os.path.join(self.tmp, "train.jsonl"),
                  "--out-dir", os.path.join(self.tmp, "out-bad"), "--isa", "sse2",
                  "--cpuinfo", os.path.join(self.tmp, "cpuinfo"), cwd=ROOT)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("--isa", bad.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "out-bad")))

    def test_training_medians_rounds_and_ratio(self):
        lsq = next(e for e in self.doc["training"] if e["engine"] == "lsq")
        self.assertEqual(lsq["images_per_s"]["rounds"], [1000.0, 1100.0, 900.0])
        self.assertEqual(lsq["images_per_s"]["median"], 1000.0)
        self.assertAlmostEqual(lsq["images_per_s"]["spread"], 0.2)
        self.assertEqual(lsq["peak_rss_mb"]["median"], 51.0)
        torch = next(e for e in self.doc["training"] if e["engine"] == "pytorch")
        self.assertEqual(torch["images_per_s"]["median"], 450.0)
        ratio = self.doc["training_ratios"][0]["ratio"]
        self.assertEqual(ratio["rounds"], [2.5, 2.2, 2.0])   # paired round by round
        self.assertEqual(ratio["median"], 2.2)
        roof = {(r["what"]): r for r in self.doc["roofline"]}
        self.assertAlmostEqual(roof["training"]["of_ceiling"], 0.5)    # 50 of 100 GFLOP/s
        # median 1280 img/s x 5e6 MACs x 2 = 12.8 GOP/s of a 100 GFLOP/s ceiling
        self.assertAlmostEqual(roof["integer inference"]["achieved"], 12.8)
        self.assertAlmostEqual(roof["integer inference"]["of_ceiling"], 0.128)

    def test_inference_and_latency(self):
        inf = self.doc["inference"][0]
        self.assertEqual(inf["integer"]["rounds"], [2560.0, 1280.0, 640.0])
        self.assertEqual(inf["integer"]["median"], 1280.0)
        self.assertEqual(inf["onnxruntime"]["best"], 1000.0)
        self.assertEqual(inf["onnxruntime"]["median"], 853.3)
        lat = self.doc["latency"][0]
        self.assertEqual(lat["integer"]["runs"], 200)
        self.assertEqual(lat["integer"]["p50_ms"]["value"], 100.0)
        self.assertEqual(lat["integer"]["p99_ms"]["value"], 198.0)
        self.assertEqual(lat["integer"]["p50_ms"]["rounds"], [25.0, 75.0, 125.0, 175.0])
        self.assertEqual(lat["integer_to_onnxruntime_p50"], 50.0)
        r = run(WRITER, "latency-table", os.path.join(self.tmp, "infer.jsonl"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("| cnn-small | 100.000 | 198.000 | 2.000 | 2.000 | 2.000 | 2.000 | "
                      "50.00x | 1.00x | vnni |", r.stdout)

    def test_show_prints_the_tables_of_a_file(self):
        r = run(WRITER, "show", self.path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("| cnn-small | W2A2 | 1000 (1000, 1100, 900) | 450 (400, 500, 450) | "
                      "2.20 (2.5, 2.2, 2) | 50.0 | 50% | 51 / 300 |", r.stdout)
        self.assertIn("| cnn-small | 1280 | 1280 | 853 (1000) | 1.50x | 12.8 | 13% | vnni |",
                      r.stdout)

    # -------------------------------------------------------------- compare

    def variant(self, name, edit):
        doc = copy.deepcopy(self.doc)
        edit(doc)
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def compare(self, new, old, *extra):
        r = run(COMPARE, new, old, *extra)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        verdicts = {}
        for line in r.stdout.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) == 9 and cells[1] not in ("figure", "---"):
                verdicts[cells[1]] = cells[7]
        return r.returncode, verdicts, r.stdout

    @staticmethod
    def set_lsq_train(doc, rounds):
        e = next(e for e in doc["training"] if e["engine"] == "lsq")
        e["images_per_s"] = {"median": sorted(rounds)[1], "rounds": rounds,
                             "spread": (max(rounds) - min(rounds)) / sorted(rounds)[1]}

    def test_drop_beyond_noise_is_a_regression(self):
        old = self.variant("old.json", lambda d: self.set_lsq_train(d, [990.0, 1000.0, 1010.0]))
        new = self.variant("new.json", lambda d: self.set_lsq_train(d, [790.0, 800.0, 810.0]))
        rc, v, out = self.compare(new, old)
        self.assertEqual(rc, 0, out)   # reported, not fatal, without the option
        self.assertEqual(v["train cnn-small W2A2 lsq"], "REGRESSION", out)
        self.assertEqual(v["train cnn-small W2A2 pytorch"], "", out)
        rc, _, out = self.compare(new, old, "--fail-on-regression")
        self.assertEqual(rc, 1, out)
        # and the other way round it is an improvement, not a failure
        rc, v, out = self.compare(old, new, "--fail-on-regression")
        self.assertEqual((rc, v["train cnn-small W2A2 lsq"]), (0, "better"), out)

    def test_drop_within_noise_is_not(self):
        # 10% lower, but the old rounds spread over 30%
        old = self.variant("old.json", lambda d: self.set_lsq_train(d, [800.0, 1000.0, 1100.0]))
        new = self.variant("new.json", lambda d: self.set_lsq_train(d, [890.0, 900.0, 910.0]))
        rc, v, out = self.compare(new, old, "--fail-on-regression")
        self.assertEqual((rc, v["train cnn-small W2A2 lsq"]), (0, ""), out)
        # 4% lower with tight rounds: under the 5% floor
        old = self.variant("old.json", lambda d: self.set_lsq_train(d, [999.0, 1000.0, 1001.0]))
        new = self.variant("new.json", lambda d: self.set_lsq_train(d, [959.0, 960.0, 961.0]))
        rc, v, out = self.compare(new, old, "--fail-on-regression")
        self.assertEqual((rc, v["train cnn-small W2A2 lsq"]), (0, ""), out)

    def test_latency_and_memory_regress_upwards(self):
        def slower(d):
            p = d["latency"][0]["float"]["p50_ms"]
            p["value"], p["rounds"], p["spread"] = 3.0, [3.0] * 4, 0.0
            e = next(e for e in d["training"] if e["engine"] == "lsq")
            e["peak_rss_mb"]["median"] = 40.0
        new = self.variant("new.json", slower)
        rc, v, out = self.compare(new, self.path, "--fail-on-regression")
        self.assertEqual(rc, 1, out)
        self.assertEqual(v["latency cnn-small W2A2 b1 t1 float p50"], "REGRESSION", out)
        self.assertEqual(v["train cnn-small W2A2 lsq peak RSS"], "better", out)
        self.assertEqual(v["latency cnn-small W2A2 b1 t1 float p99"], "", out)

    def test_a_peer_alone_never_fails_the_run(self):
        old = self.variant("old.json",
                           lambda d: d["inference"][0]["onnxruntime"].update(spread=0.01))
        new = self.variant("new.json", lambda d: d["inference"][0]["onnxruntime"].update(
            median=400.0, spread=0.01))
        rc, v, out = self.compare(new, old, "--fail-on-regression")
        self.assertEqual(rc, 0, out)
        self.assertEqual(v["infer cnn-small W2A2 b256 onnxruntime"], "REGRESSION (peer)", out)

    def test_not_a_results_file(self):
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"x": 1}')
        r = run(COMPARE, bad, self.path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a bench results file", r.stderr)

    def test_default_old_is_newest_committed_of_same_kind(self):
        repo = os.path.join(self.tmp, "repo")
        res = os.path.join(repo, "results")
        os.makedirs(res)
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
        git = lambda *a, **kw: subprocess.run(["git", "-C", repo] + list(a), check=True,  # noqa
                                              capture_output=True, env=dict(env, **kw))
        git("init", "-q")

        def commit(name, when, edit):
            path = self.variant(name, edit)
            shutil.move(path, os.path.join(res, name))
            git("add", "results/" + name)
            git("commit", "-q", "-m", name, GIT_COMMITTER_DATE=when, GIT_AUTHOR_DATE=when)

        def other_kind(d):
            d["machine"]["cpu_kind"] = "other-avx2"
            self.set_lsq_train(d, [1.0, 2.0, 3.0])
        # by name the oldest sorts last: the commit time must decide
        commit("3-old.json", "2026-01-01T00:00:00Z",
               lambda d: self.set_lsq_train(d, [499.0, 500.0, 501.0]))
        commit("2-newest.json", "2026-03-01T00:00:00Z",
               lambda d: self.set_lsq_train(d, [999.0, 1000.0, 1001.0]))
        commit("1-other.json", "2026-04-01T00:00:00Z", other_kind)
        # an uncommitted file of the same kind is not a baseline
        shutil.copy(self.path, os.path.join(res, "9-uncommitted.json"))
        new = self.variant("new.json", lambda d: self.set_lsq_train(d, [999.0, 1000.0, 1001.0]))
        r = run(COMPARE, new, "--results-dir", res)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("old %s" % os.path.join(res, "2-newest.json"), r.stdout)
        self.assertRegex(r.stdout, r"\| train cnn-small W2A2 lsq \| img/s \| 1000 \| 1000 \| 1\.000")
        # no committed file of the new one's kind: said, status 0
        lone = self.variant("lone.json", lambda d: d["machine"].update(cpu_kind="lone-avx2"))
        r = run(COMPARE, lone, "--results-dir", res, "--fail-on-regression")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no committed results file for CPU kind lone-avx2", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=1)
