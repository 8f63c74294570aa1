#!/bin/sh
# Trains the runs behind docs/results.md (the paper's tables on
# Fashion-MNIST) and rewrites the tables from their events. Hours of CPU; not
# part of `make test`. Each run is skipped when runs/NAME/model.lsqc exists,
# so the script resumes where it stopped (an interrupted run resumes from its
# own checkpoint).
#   bench/paper_tables.sh [NAME ...]     default: every spec in bench/specs/
# LSQ=path/to/lsq overrides build/lsq.
set -eu
cd "$(dirname "$0")/.."
LSQ=${LSQ:-build/lsq}
if [ $# -eq 0 ]; then
  set -- $(ls bench/specs | sed 's/\.json$//' | sort)
fi
mkdir -p runs
for name in "$@"; do
  spec=bench/specs/$name.json
  out=runs/$name
  if [ -f "$out/model.lsqc" ]; then
    echo "skip $name (done)"
    continue
  fi
  mkdir -p "$out"
  echo "train $name: $LSQ train $spec --out $out"
  start=$(date +%s)
  "$LSQ" train "$spec" --out "$out" --events "$out/events.jsonl" --quiet
  echo "$name: $(( $(date +%s) - start )) s"
done
/usr/bin/python3 bench/results.py runs > runs/tables.md
echo "tables: runs/tables.md"
