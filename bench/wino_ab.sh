#!/bin/sh
# Whole training steps with oneDNN's Winograd off and where conv2d's table
# picks it (train_bench --wino off|auto; MODES="off on" forces it wherever
# it is allowed instead), alternating in each round and swapping which goes
# first every other round: resnet20 (or MODELS) FP32 and W2A2, batch 128. One JSON line per run into $OUT (default
# build/bench/wino_ab.jsonl); bench/summarize_wino_ab.py prints medians and
# the paired on/off ratios. Images per CPU second are what other work on a
# shared machine leaves alone; wall images/s are recorded as well.
#   bench/wino_ab.sh [BUILD] (ROUNDS=4 THREADS=2 STEPS=8 MODELS=resnet20 MODES="off auto")
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-4}
THREADS=${THREADS:-2}
STEPS=${STEPS:-8}
MODES=${MODES:-off auto}
REVERSED=$(echo $MODES | awk '{print $2, $1}')
MODELS=${MODELS:-resnet20}
OUT=${OUT:-$BUILD/bench/wino_ab.jsonl}
: > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  order=$MODES
  [ $(( r % 2 )) -eq 0 ] && order=$REVERSED
  for model in $MODELS; do
    for bits in 0 2; do
      for w in $order; do
        echo "round $r: $model bits=$bits wino=$w" >&2
        "$BUILD/bench/train_bench" --model "$model" --bits "$bits" --batch 128 \
            --threads "$THREADS" --steps "$STEPS" --warmup 3 --wino "$w" >> "$OUT"
      done
    done
  done
done
