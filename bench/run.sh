#!/bin/sh
# `make bench`: speed side by side with the peers, in the same run, with
# medians and ratios (the machines are shared and noisy).
#   1. training images/s: the engine vs PyTorch (Debian's python3-torch)
#      training the same model, full precision and W2A2, batch 128, 2 threads
#      (cnn-small, resnet20, and a MobileNetV2-style net imported from ONNX)
#      (resnet20 also on the im2col + SGEMM conv path alone; W2A2 also
#      without the integer forward of quantized convs, --conv float);
#      achieved GFLOP/s against the SGEMM ceiling measured in the same run;
#   2. the loader: cached colour 32x32 images per second on one core, batch
#      fill with crop + flip + normalisation, against resnet20's training
#      images/s (median of the rounds): the loader must never be what
#      training waits on;
#   3. integer inference vs the float engine vs onnxruntime (bench/infer.sh),
#      throughput at batch 256 and batch-1 latency;
#   4. every figure, with the machine, build and kernel paths, into one file
#      bench/results/YYYY-MM-DD-<commit>-<cpu-kind>.json (bench/benchjson.py;
#      BENCH_RESULTS names another folder, BENCH_NOTE adds a note), then
#      bench/compare.py against the newest committed file for the same CPU
#      kind: regressions beyond noise are reported, never fatal here.
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for both sides alike: a
# user's machine has neither (tests and CI leave them as they are).
# ROUNDS (default 3) and STEPS (default 30) size the run.
# BENCH_ISA=avx2 runs every side on its AVX2 paths on an AVX-512 machine, to
# stand in for an AVX2-only CPU: lsq's own loops (LSQ_ISA) and integer
# kernels (LSQ_KERNEL), oneDNN in both lsq and PyTorch (ONEDNN_MAX_CPU_ISA:
# Debian's torch links the same libdnnl), PyTorch's ATen (ATEN_CPU_CAPABILITY)
# and OpenBLAS on both sides (OPENBLAS_CORETYPE=Haswell, so the SGEMM ceiling
# is the AVX2 one too). onnxruntime has no such switch: its kernels keep
# their AVX-512 paths, which favours it. The results file's CPU kind ends in
# "-as-avx2", so compare.py never sets it against a native run.
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
case "${BENCH_ISA:=native}" in
  native) ;;
  avx2)
    export LSQ_ISA=avx2 LSQ_KERNEL=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \
           OPENBLAS_CORETYPE=Haswell
    echo "bench: BENCH_ISA=avx2: lsq, oneDNN, PyTorch and OpenBLAS on their AVX2 paths" >&2 ;;
  *) echo "bench: BENCH_ISA=$BENCH_ISA: use native or avx2" >&2; exit 2 ;;
esac
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-30}
OUT=$BUILD/bench
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)
mkdir -p "$OUT"
LOG=$OUT/train.jsonl
: > "$LOG"
# The PyTorch peer on one configuration. A run that fails (torch_train.py
# exits on a loss that is not finite) is reported and leaves that row
# without a peer figure, rather than ending the whole benchmark.
torch_peer() {
  if ! /usr/bin/python3 bench/torch_train.py "$@" 2>"$OUT/torch.err" >> "$LOG"; then
    echo "bench: PyTorch failed on $*: $(tail -n 1 "$OUT/torch.err")" >&2
  fi
}
echo "bench: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for both sides" >&2
"$BUILD/bench/train_bench" --sgemm --threads 2 >> "$LOG"
for r in $(seq 1 "$ROUNDS"); do
  for model in cnn-small resnet20; do
    for bits in 0 2; do
      steps=$STEPS
      [ "$model" = resnet20 ] && steps=$(( STEPS / 2 ))
      echo "round $r: $model bits=$bits" >&2
      "$BUILD/bench/train_bench" --model "$model" --bits "$bits" --batch 128 --threads 2 \
          --steps "$steps" >> "$LOG"
      torch_peer --model "$model" --bits "$bits" --threads 2 --steps "$steps"
      if [ "$model" = resnet20 ]; then
        # the same steps on im2col + SGEMM alone: what the direct conv path gains
        "$BUILD/bench/train_bench" --model "$model" --bits "$bits" --batch 128 --threads 2 \
            --steps "$steps" --conv gemm >> "$LOG"
      fi
      if [ "$bits" != 0 ]; then
        # the same steps without the integer forward of quantized convs
        "$BUILD/bench/train_bench" --model "$model" --bits "$bits" --batch 128 --threads 2 \
            --steps "$steps" --conv float >> "$LOG"
      fi
    done
  done
done
# A MobileNetV2-style net (depthwise convs, ReLU6, inverted residuals) as
# PyTorch exports it, imported by lsq, against the same net in PyTorch.
/usr/bin/python3 bench/mobilenet_fmnist.py --out "$OUT" \
    --export-untrained "$OUT/mobilenet.onnx" 2>/dev/null
for r in $(seq 1 "$ROUNDS"); do
  for bits in 0 2; do
    echo "round $r: mobilenet bits=$bits" >&2
    "$BUILD/bench/train_bench" --model mobilenet --onnx "$OUT/mobilenet.onnx" --bits "$bits" \
        --batch 128 --threads 2 --steps $(( STEPS / 2 )) >> "$LOG"
    torch_peer --model mobilenet --bits "$bits" --threads 2 --steps $(( STEPS / 2 ))
  done
done
/usr/bin/python3 bench/summarize.py "$LOG" | tee "$OUT/train.md"
"$BUILD/bench/loader_bench" > "$OUT/loader.jsonl"
/usr/bin/python3 - "$LOG" "$OUT/loader.jsonl" <<'PY' | tee "$OUT/loader.md"
import json, statistics, sys
train = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
loader = json.loads(open(sys.argv[2]).read())
ips = loader["images_per_s"]
print("\nloader: %.0f colour 32x32 images/s on one core (batch %d, crop pad %d + flip + "
      "normalise; %s)" % (ips, loader["batch"], loader["crop_pad"], loader["cpu"]))
for bits in (32, 2):
    runs = [r for r in train if r.get("bench") == "train" and r.get("engine") == "lsq" and
            r.get("model") == "resnet20" and r.get("bits") == bits]
    if runs:
        t = statistics.median(r["images_per_s"] for r in runs)
        print("  resnet20 %s trains %.0f images/s on %d threads: the loader is %.0fx that "
              "on one core" % ("FP" if bits == 32 else "W%dA%d" % (bits, bits), t,
                               runs[0].get("threads", 2), ips / t))
PY
if [ -x bench/infer.sh ]; then
  bench/infer.sh "$BUILD"
fi
NEW=$(/usr/bin/python3 bench/benchjson.py write --train "$LOG" --loader "$OUT/loader.jsonl" \
      --infer "$BUILD/bench-infer/infer.jsonl" --out-dir "${BENCH_RESULTS:-bench/results}" \
      --rounds "$ROUNDS" --steps "$STEPS" --infer-repeats "${REPEATS:-20}" \
      --load-start "$LOAD_START" --note "${BENCH_NOTE:-}" --isa "$BENCH_ISA")
echo
echo "bench: every figure of this run is in $NEW"
/usr/bin/python3 bench/compare.py "$NEW" || echo "bench: compare.py failed" >&2
