#!/bin/sh
# Whole training steps under two settings of one switch, A against B,
# alternating in each round and swapping which goes first every other round
# (a shared machine's load drifts; both settings see the same drift):
# MODELS (default resnet20) at FP32 and W2A2, batch 128. The switch is a
# train_bench option (--wino, --bwd, --backend, --conv) or an environment
# variable (an upper-case name: LSQ_ISA, LSQ_WINO, LSQ_BWD, ...):
#   bench/train_ab.sh BUILD --wino off auto       (Winograd where the table picks it)
#   bench/train_ab.sh BUILD --wino off on         (forced wherever allowed)
#   bench/train_ab.sh BUILD --bwd f32 bf16        (the backward on codes in bf16)
#   bench/train_ab.sh BUILD --dnnl-fuse off on    (fusions on oneDNN's layouts)
#   bench/train_ab.sh BUILD LSQ_ISA avx2 avx512
# ROUNDS (default 4), THREADS (2), STEPS (8), MODELS. One JSON line per run
# into $OUT (default BUILD/bench/train_ab.jsonl), train_bench's own with
# "ab" (the setting) added; bench/summarize_ab.py prints medians and the
# paired B/A ratios. Images per CPU second are what other work on a shared
# machine leaves alone; wall images/s are recorded as well.
set -eu
[ $# -eq 4 ] || { echo "usage: bench/train_ab.sh BUILD OPTION|VARIABLE A B" >&2; exit 2; }
BUILD=$1 SWITCH=$2 A=$3 B=$4
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-4}
THREADS=${THREADS:-2}
STEPS=${STEPS:-8}
MODELS=${MODELS:-resnet20}
OUT=${OUT:-$BUILD/bench/train_ab.jsonl}
: > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  order="$A $B"
  [ $(( r % 2 )) -eq 0 ] && order="$B $A"
  for model in $MODELS; do
    for bits in 0 2; do
      for v in $order; do
        echo "round $r: $model bits=$bits $SWITCH=$v" >&2
        case "$SWITCH" in
          -*) line=$("$BUILD/bench/train_bench" --model "$model" --bits "$bits" --batch 128 \
                  --threads "$THREADS" --steps "$STEPS" --warmup 3 "$SWITCH" "$v") ;;
          *) line=$(env "$SWITCH=$v" "$BUILD/bench/train_bench" --model "$model" --bits "$bits" \
                  --batch 128 --threads "$THREADS" --steps "$STEPS" --warmup 3) ;;
        esac
        printf '{"ab":"%s",%s\n' "$v" "${line#\{}" >> "$OUT"
      done
    done
  done
done
