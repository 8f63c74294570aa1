#!/bin/sh
# Data-parallel training with MPI on one machine (docs/results.md, "Data
# parallel with MPI"):
#   bench/mpi_dp.sh accuracy [BUILD] [SEEDS]   cnn-small (batch norm), 2 epochs on
#       5,000 training images: test accuracy of 1 process (2 threads), of
#       2 ranks (1 thread each) and of 2 ranks with train.sync_bn, seeds
#       1..SEEDS (default 3)
#   bench/mpi_dp.sh scaling [BUILD] [ROUNDS]   images/s of the training steps
#       (epoch event: images / train_s) of 1 process x 2 threads against
#       2 ranks x 1 thread, alternating, ROUNDS rounds (default 3), and the
#       allreduce's share of the steps and its bytes; then the bytes of one
#       allreduce for resnet20
# Runs mpirun with --allow-run-as-root --oversubscribe --bind-to none.
set -eu
MODE=${1:?usage: bench/mpi_dp.sh accuracy|scaling [BUILD] [N]}
BUILD=${2:-build}
N=${3:-3}
cd "$(dirname "$0")/.."
OUT=$BUILD/bench/mpi
mkdir -p "$OUT"
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
epoch_field() { # EVENTS FIELD: the last epoch event's field
  /usr/bin/python3 -c '
import json, sys
ev = [e for e in map(json.loads, open(sys.argv[1])) if e.get("type") == "epoch"]
print(ev[-1].get(sys.argv[2], ""))' "$1" "$2"
}
ips_share() { # EVENTS: images/s of the steps, allreduce share, bytes (over every epoch)
  /usr/bin/python3 -c '
import json, sys
ev = [e for e in map(json.loads, open(sys.argv[1])) if e.get("type") == "epoch"]
t = sum(e["train_s"] for e in ev); r = sum(e.get("allreduce_s", 0) for e in ev)
print("%.1f %.1f%% %s" % (float(sys.argv[2]) / t, 100 * r / t, ev[-1].get("allreduce_bytes", 0)))' "$1" "$2"
}
run() { # NAME RANKS THREADS SPEC
  rm -rf "$OUT/$1" "$OUT/$1.ev"
  if [ "$2" = 1 ]; then
    "$BUILD/lsq" train "$4" --out "$OUT/$1" --events "$OUT/$1.ev" --threads "$3" --quiet
  else
    $MPIRUN -np "$2" "$BUILD/lsq" train "$4" --out "$OUT/$1" --events "$OUT/$1.ev" \
      --threads "$3" --quiet
  fi
}
case "$MODE" in
accuracy)
  for seed in $(seq 1 "$N"); do
    printf '{"name":"bn","model":{"arch":"cnn-small"},"dataset":{"train_limit":5000,"test_limit":2000},"train":{"epochs":2,"lr":0.05,"batch_size":128,"seed":%d}}\n' \
      "$seed" > "$OUT/acc-$seed.json"
    sed 's/"seed":/"sync_bn":true,"seed":/' "$OUT/acc-$seed.json" > "$OUT/accs-$seed.json"
    run "acc1-$seed" 1 2 "$OUT/acc-$seed.json"
    run "acc2-$seed" 2 1 "$OUT/acc-$seed.json"
    run "accs-$seed" 2 1 "$OUT/accs-$seed.json"
    echo "seed $seed: 1 rank $(epoch_field "$OUT/acc1-$seed.ev" test_acc)  2 ranks $(epoch_field "$OUT/acc2-$seed.ev" test_acc)  2 ranks sync_bn $(epoch_field "$OUT/accs-$seed.ev" test_acc)"
  done ;;
scaling)
  printf '{"name":"sc","model":{"arch":"cnn-small"},"dataset":{"train_limit":3840,"test_limit":100},"train":{"epochs":1,"batch_size":128}}\n' \
    > "$OUT/sc.json"
  for r in $(seq 1 "$N"); do
    run sc1 1 2 "$OUT/sc.json"
    run sc2 2 1 "$OUT/sc.json"
    echo "round $r: 1x2 threads $(ips_share "$OUT/sc1.ev" 3840 | cut -d' ' -f1) img/s;" \
      "2 ranks x 1 $(ips_share "$OUT/sc2.ev" 3840)"
  done
  printf '{"name":"rn","model":{"arch":"resnet20"},"dataset":{"train_limit":256,"test_limit":10},"train":{"epochs":1,"batch_size":128}}\n' \
    > "$OUT/rn.json"
  run rn2 2 1 "$OUT/rn.json"
  echo "resnet20: allreduce of $(epoch_field "$OUT/rn2.ev" allreduce_bytes) bytes" ;;
*) echo "bench/mpi_dp.sh: unknown mode $MODE" >&2; exit 2 ;;
esac
