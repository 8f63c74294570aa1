#!/bin/sh
# `make bench`: speed side by side with the peers, in the same run, with
# medians and ratios (the machines are shared and noisy).
#   1. training images/s: the engine vs PyTorch (Debian's python3-torch)
#      training the same model, full precision and W2A2, batch 128, 2 threads
#      (resnet20 also on the im2col + SGEMM conv path alone; W2A2 also
#      without the integer forward of quantized convs, --conv float);
#      achieved GFLOP/s against the SGEMM ceiling measured in the same run;
#   2. integer inference vs the float engine vs onnxruntime (bench/infer.sh).
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for both sides alike: a
# user's machine has neither (tests and CI leave them as they are).
# ROUNDS (default 3) and STEPS (default 30) size the run.
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-30}
OUT=$BUILD/bench
mkdir -p "$OUT"
LOG=$OUT/train.jsonl
: > "$LOG"
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
      /usr/bin/python3 bench/torch_train.py --model "$model" --bits "$bits" --threads 2 \
          --steps "$steps" 2>/dev/null >> "$LOG"
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
/usr/bin/python3 bench/summarize.py "$LOG" | tee "$OUT/train.md"
if [ -x bench/infer.sh ]; then
  bench/infer.sh "$BUILD"
fi
