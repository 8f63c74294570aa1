#!/bin/sh
# A colour dataset end to end, through a real lsqd: the archive of
# bench/fmnist_colour.py (Fashion-MNIST as 32x32 RGB PNG folders) is uploaded
# (POST /api/v1/datasets), registered, and resnet20 is trained on it in full
# precision and then at W4A4 (first and last layers at 8 bits) from that
# full-precision model; each job's accuracy per epoch is printed as JSON.
#   [THREADS=N] bench/colour_e2e.sh [BUILD] [ARCHIVE] [FP_EPOCHS] [Q_EPOCHS]
# (default archive: runs/fmnist-colour.tar.gz; make it with
#  /usr/bin/python3 bench/fmnist_colour.py --out runs/fmnist-colour.tar.gz)
set -eu
BUILD=${1:-build}
ARCHIVE=${2:-runs/fmnist-colour.tar.gz}
FP_EPOCHS=${3:-4}
Q_EPOCHS=${4:-2}
THREADS=${THREADS:-2}
cd "$(dirname "$0")/.."
DATA=$(mktemp -d /tmp/lsqd-colour-XXXXXX)
PORT=${PORT:-18232}
"$BUILD/lsqd" --listen 127.0.0.1:$PORT --data "$DATA" --workers 1 > "$DATA/lsqd.log" 2>&1 &
LSQD=$!
trap 'kill $LSQD 2>/dev/null; wait $LSQD 2>/dev/null || true' EXIT
B=http://127.0.0.1:$PORT
for i in $(seq 1 50); do curl -fs "$B/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
py=/usr/bin/python3
field() { $py -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# 10,000 of the 70,000 images test, as many as Fashion-MNIST's own test file.
t0=$(date +%s)
ds=$(curl -fs -H 'Content-Type: application/octet-stream' --data-binary @"$ARCHIVE" \
       "$B/api/v1/datasets?name=$(basename "$ARCHIVE")&size=32x32&channels=3&test_fraction=0.142857" | field '["id"]')
while :; do
  st=$(curl -fs "$B/api/v1/datasets/$ds" | field '["state"]')
  [ "$st" = registering ] || break
  sleep 2
done
t1=$(date +%s)
curl -fs "$B/api/v1/datasets/$ds" | $py -c '
import json, sys
d = json.load(sys.stdin)
s = d.get("summary") or {}
print(json.dumps({"dataset": d["id"], "state": d["state"], "error": d.get("error"),
                  "register_s": int(sys.argv[1]), "bytes": d.get("bytes"),
                  "shape": s.get("shape"), "counts": s.get("counts"), "classes": s.get("num_classes"),
                  "mean": s.get("mean"), "std": s.get("std")}))' "$((t1 - t0))"
[ "$st" = ready ] || exit 1
curl -fs "$B/api/v1/datasets/$ds/samples.png" -o "$DATA/samples.png"

submit() {
  curl -fs -H 'Content-Type: application/json' -d "$1" "$B/api/v1/jobs" | field '["id"]'
}
wait_job() {
  while :; do
    st=$(curl -fs "$B/api/v1/jobs/$1" | field '["state"]')
    case $st in succeeded|failed|cancelled) break ;; esac
    sleep 10
  done
  curl -fs "$B/api/v1/jobs/$1/events?after=0" --max-time 5 > "$DATA/job$1.sse" || true
  $py - "$DATA/job$1.sse" "$1" "$st" <<'PY'
import json, sys
epochs, done, name, secs = [], None, "", None
for line in open(sys.argv[1]):
    if not line.startswith("data:"):
        continue
    e = json.loads(line[5:])
    t = e.get("type")
    if t == "start":
        name = e.get("name", "")
    if t == "epoch":
        epochs.append(e["test_acc"])
    if t == "done":
        done = e["test_acc"]
        secs = e.get("seconds")
print(json.dumps({"job": int(sys.argv[2]), "state": sys.argv[3], "name": name,
                  "epochs": epochs, "final": done, "seconds": secs}))
PY
  [ "$st" = succeeded ]
}

aug='"augment":{"flip":true,"crop_pad":2}'
fp=$(submit "{\"name\":\"colour-resnet20-fp\",\"model\":{\"arch\":\"resnet20\"},\"dataset\":{\"id\":$ds,$aug},\"train\":{\"epochs\":$FP_EPOCHS,\"lr\":0.05},\"threads\":$THREADS}")
wait_job "$fp"
q=$(submit "{\"name\":\"colour-resnet20-w4a4\",\"model\":{\"arch\":\"resnet20\"},\"dataset\":{\"id\":$ds,$aug},\"init\":{\"from\":\"$fp\"},\"quant\":{\"weight_bits\":4},\"train\":{\"epochs\":$Q_EPOCHS},\"threads\":$THREADS}")
wait_job "$q"
echo "lsqd data folder: $DATA (samples.png, job events)" >&2
trap - EXIT
kill $LSQD; wait $LSQD 2>/dev/null || true
