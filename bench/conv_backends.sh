#!/bin/sh
# Training images/s with the engine's own conv kernels against oneDNN's
# where conv2d's table picks them (train_bench --backend own|auto), and
# PyTorch (bench/torch_train.py) on the same model, alternating in each
# round: resnet20 and cnn-small, FP32 and W2A2, batch 128. One JSON line per
# run into $OUT (default build/bench/backends.jsonl); bench/summarize_backends.py
# prints the medians. Both wall images/s and images per CPU second are
# recorded: on a shared machine the second is what other work leaves alone.
#   bench/conv_backends.sh [BUILD] (ROUNDS=3 THREADS=1 STEPS=16)
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
STEPS=${STEPS:-16}
OUT=${OUT:-$BUILD/bench/backends.jsonl}
: > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for model in resnet20 cnn-small; do
    for bits in 0 2; do
      steps=$STEPS
      [ "$model" = resnet20 ] && steps=$(( STEPS / 2 ))
      for be in own auto; do
        echo "round $r: $model bits=$bits backend=$be" >&2
        "$BUILD/bench/train_bench" --model "$model" --bits "$bits" --batch 128 \
            --threads "$THREADS" --steps "$steps" --warmup 3 --backend "$be" >> "$OUT"
      done
      echo "round $r: $model bits=$bits pytorch" >&2
      /usr/bin/python3 bench/torch_train.py --model "$model" --bits "$bits" \
          --threads "$THREADS" --steps "$steps" 2>/dev/null >> "$OUT"
    done
  done
done
