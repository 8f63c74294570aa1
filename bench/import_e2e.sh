#!/bin/sh
# The "bring your own model" path end to end, through a real lsqd: the
# MobileNetV2-style float model that bench/mobilenet_fmnist.py trained in
# PyTorch on Fashion-MNIST is uploaded as ONNX, checked, and quantized with
# LSQ at W4A4 and W2A2 (first and last layers at 8 bits); each job reports
# the float model, post-training quantization and every LSQ epoch.
#   bench/import_e2e.sh [BUILD] [MODEL.onnx] [EPOCHS]
# Env: WORKERS (default 1) jobs at once, THREADS (default 2) per job.
# (default model: runs/mobilenet/mobilenet-bn.onnx, batch norms kept;
#  runs/mobilenet/mobilenet.onnx has them folded; make both with
#  /usr/bin/python3 bench/mobilenet_fmnist.py --out runs/mobilenet)
set -eu
BUILD=${1:-build}
MODEL=${2:-runs/mobilenet/mobilenet-bn.onnx}
EPOCHS=${3:-3}
cd "$(dirname "$0")/.."
DATA=$(mktemp -d /tmp/lsqd-e2e-XXXXXX)
PORT=${PORT:-18231}
"$BUILD/lsqd" --listen 127.0.0.1:$PORT --data "$DATA" --workers "${WORKERS:-1}" > "$DATA/lsqd.log" 2>&1 &
LSQD=$!
trap 'kill $LSQD 2>/dev/null; wait $LSQD 2>/dev/null || true' EXIT
B=http://127.0.0.1:$PORT
for i in $(seq 1 50); do curl -fs "$B/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
id=$(curl -fs -H 'Content-Type: application/octet-stream' --data-binary @"$MODEL" \
       "$B/api/v1/models?name=$(basename "$MODEL")" | /usr/bin/python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["id"]); print(json.dumps(m["summary"])[:400], file=sys.stderr)')
echo "uploaded model $id" >&2
jobs=""
for bits in 4 2; do
  spec=$(printf '{"name":"mobilenet-w%da%d","model":{"onnx":%s},"quant":{"weight_bits":%d},"train":{"epochs":%d},"threads":%d}' \
         "$bits" "$bits" "$id" "$bits" "$EPOCHS" "${THREADS:-2}")
  j=$(curl -fs -H 'Content-Type: application/json' -d "$spec" "$B/api/v1/jobs" | \
      /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  jobs="$jobs $j"
done
for j in $jobs; do
  while :; do
    st=$(curl -fs "$B/api/v1/jobs/$j" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case $st in succeeded|failed|cancelled) break ;; esac
    sleep 10
  done
  curl -fs "$B/api/v1/jobs/$j/events?after=0" --max-time 5 > "$DATA/job$j.sse" || true
  /usr/bin/python3 - "$DATA/job$j.sse" "$j" "$st" <<'PY'
import json, sys
fp = ptq = None
epochs, done, name = [], None, ""
for line in open(sys.argv[1]):
    if not line.startswith("data:"):
        continue
    e = json.loads(line[5:])
    t = e.get("type")
    if t == "start":
        name = e.get("name", "")
    if t == "log" and e.get("message") == "full-precision model":
        fp = e["test_acc"]
    if t == "log" and e.get("message") == "post-training quantization":
        ptq = e["test_acc"]
    if t == "epoch":
        epochs.append(e["test_acc"])
    if t == "done":
        done = e["test_acc"]
print(json.dumps({"job": int(sys.argv[2]), "state": sys.argv[3], "name": name,
                  "float": fp, "ptq": ptq, "lsq_epochs": epochs, "final": done}))
PY
done
