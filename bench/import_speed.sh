#!/bin/sh
# Training speed of an imported ONNX resnet20 against the zoo's resnet20:
# the same layers (bench/resnet20_onnx.py exports them with batch norm kept),
# the same data, bits and threads, alternating runs; prints each run's median
# of the progress events' images/s and the median ratio imported / zoo.
#   bench/import_speed.sh [BUILD] [ROUNDS]        (OPENBLAS_CORETYPE unset for both)
set -eu
BUILD=${1:-build}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
OUT=$BUILD/bench/import
rm -rf "$OUT"
mkdir -p "$OUT"
/usr/bin/python3 bench/resnet20_onnx.py "$OUT/resnet20.onnx" 2>/dev/null
common='"dataset":{"train_limit":3840,"test_limit":128},"train":{"epochs":1,"batch_size":128},"threads":2'
printf '{"name":"zoo","model":{"arch":"resnet20"},"quant":null,%s}\n' "$common" > "$OUT/zoo-fp.json"
printf '{"name":"imp","model":{"onnx":"%s"},"quant":null,%s}\n' "$OUT/resnet20.onnx" "$common" \
  > "$OUT/imp-fp.json"
printf '{"name":"zoo","model":{"arch":"resnet20"},"init":{"from":"%s"},"quant":{"weight_bits":2,"report_ptq":false},"distill":false,%s}\n' \
  "$OUT/zoo-fp/model.lsqc" "$common" > "$OUT/zoo-w2.json"
printf '{"name":"imp","model":{"onnx":"%s"},"quant":{"weight_bits":2,"report_ptq":false},"distill":false,%s}\n' \
  "$OUT/resnet20.onnx" "$common" > "$OUT/imp-w2.json"
"$BUILD/lsq" train "$OUT/zoo-fp.json" --out "$OUT/zoo-fp" --quiet
median_ips() {
  /usr/bin/python3 -c '
import json, statistics, sys
v = [e["images_per_s"] for e in map(json.loads, open(sys.argv[1]))
     if e.get("type") == "progress" and e.get("step", 0) > 2]
print("%.1f" % statistics.median(v))' "$1"
}
for r in $(seq 1 "$ROUNDS"); do
  for kind in fp w2; do
    for who in zoo imp; do
      d="$OUT/$who-$kind-r$r"
      "$BUILD/lsq" train "$OUT/$who-$kind.json" --out "$d" --events "$d.jsonl" --quiet
      echo "$r $kind $who $(median_ips "$d.jsonl")"
    done
  done
done | tee "$OUT/runs.txt"
/usr/bin/python3 - "$OUT/runs.txt" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, kind, who, ips = line.split()
    runs[(kind, r)][who] = float(ips)
for kind in ("fp", "w2"):
    ratios = [v["imp"] / v["zoo"] for (k, _), v in runs.items() if k == kind]
    zoo = statistics.median(v["zoo"] for (k, _), v in runs.items() if k == kind)
    imp = statistics.median(v["imp"] for (k, _), v in runs.items() if k == kind)
    print("resnet20 %s: zoo %.0f img/s, imported %.0f img/s, imported/zoo median %.3f "
          "(pairs %s)" % ("FP32" if kind == "fp" else "W2A2", zoo, imp,
                          statistics.median(ratios), " ".join("%.3f" % x for x in ratios)))
PY
