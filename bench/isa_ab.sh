#!/bin/sh
# The training loops' two vector paths (engine/core/isa.h) against each
# other on this machine: train_bench forced to LSQ_ISA=avx2 and to
# LSQ_ISA=avx512, in alternating order round after round (a shared machine's
# load drifts; both paths see the same drift), for cnn-small and resnet20,
# full precision and W2A2, batch 128, 2 threads. Every run's JSON line goes
# to BUILD/bench/isa_ab.jsonl; the medians per configuration and path, and
# their ratio, to stdout. Then isa_bench (one kernel at a time, in-process).
#   bench/isa_ab.sh [BUILD]     ROUNDS (default 5) and STEPS (default 10)
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
# passive: a busy machine's load makes spinning threads the cost otherwise
# (see "Training speed against PyTorch")
export OMP_WAIT_POLICY=passive
STEPS=${STEPS:-10}
OUT=$BUILD/bench
mkdir -p "$OUT"
LOG=$OUT/isa_ab.jsonl
: > "$LOG"
for r in $(seq 1 "$ROUNDS"); do
    # odd rounds avx2 first, even rounds avx512 first
    if [ $((r % 2)) -eq 1 ]; then order="avx2 avx512"; else order="avx512 avx2"; fi
    for model in cnn-small resnet20; do
        steps=$STEPS
        [ "$model" = cnn-small ] && steps=$((STEPS * 3))
        for bits in 0 2; do
            for isa in $order; do
                LSQ_ISA=$isa "$BUILD/bench/train_bench" --model "$model" --bits "$bits" \
                    --batch 128 --threads 2 --steps "$steps" --warmup 3 >> "$LOG"
            done
        done
    done
done
/usr/bin/python3 - "$LOG" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["model"], r["bits"]) for r in runs})
print("| model | bits | avx2 images/s | avx512 images/s | avx512 / avx2 | rounds |")
print("|---|---|---|---|---|---|")
for model, bits in keys:
    med = {}
    for isa in ("avx2", "avx512"):
        v = [r["images_per_s"] for r in runs if (r["model"], r["bits"], r["isa"]) == (model, bits, isa)]
        med[isa] = (statistics.median(v), len(v))
    print("| %s | %s | %.1f | %.1f | %.3f | %d |" % (model, "W%dA%d" % (bits, bits) if bits < 32 else "fp32",
          med["avx2"][0], med["avx512"][0], med["avx512"][0] / med["avx2"][0], med["avx2"][1]))
PY
"$BUILD/bench/isa_bench" --rounds 51 --threads 1
