#!/bin/sh
# What bearer tokens cost lsqd's API: two lsqd on loopback, one with
# --auth off and one with --auth on (a token made with `lsqd token create`),
# each holding one finished tiny job; wrk GETs that job from each in turn,
# ROUNDS alternating rounds, first idle, then while a 2-thread training run
# (`lsq train`, the load of a running job) keeps the cores busy. Prints each
# round and the medians with the on/off ratios.
#   bench/lsqd/auth_overhead.sh [BUILD] [ROUNDS] [SECONDS]
set -eu
BUILD=${1:-build}
ROUNDS=${2:-3}
SECS=${3:-10}
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "auth_overhead: needs wrk (scripts/install-deps.sh bench)" >&2; exit 1; }
W=$(mktemp -d /tmp/lsqd-authbench-XXXXXX)
POFF=${PORT_OFF:-18241}
PON=${PORT_ON:-18242}
TOKEN=$("$BUILD/lsqd" token create --user bench --data "$W/on" 2>/dev/null)
"$BUILD/lsqd" --listen 127.0.0.1:$POFF --data "$W/off" --auth off > "$W/off.log" 2>&1 &
A=$!
"$BUILD/lsqd" --listen 127.0.0.1:$PON --data "$W/on" --auth on > "$W/on.log" 2>&1 &
B=$!
TRAIN=
trap 'kill $A $B $TRAIN 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
for p in $POFF $PON; do
  for i in $(seq 1 50); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
done
spec='{"model":{"arch":"mlp"},"dataset":{"train_limit":2000,"test_limit":500},"pretrain":{"epochs":1},"train":{"epochs":1},"quant":{"weight_bits":4}}'
curl -fs -H 'Content-Type: application/json' -d "$spec" http://127.0.0.1:$POFF/api/v1/jobs >/dev/null
curl -fs -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" -d "$spec" \
  http://127.0.0.1:$PON/api/v1/jobs >/dev/null
for p in $POFF $PON; do
  while :; do
    st=$(curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/api/v1/jobs/1" |
         /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    [ "$st" = succeeded ] && break
    sleep 1
  done
done
# wrk's summary: requests/s and the 99% latency (ms)
run_wrk() {
  wrk -t2 -c32 -d"${SECS}s" --latency "$@" 2>&1 | /usr/bin/python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", t).group(1))
m = re.search(r"\s99%\s+([0-9.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {non2xx.group(1) if non2xx else 0}")'
}
measure() {  # label
  for r in $(seq 1 "$ROUNDS"); do
    off=$(run_wrk "http://127.0.0.1:$POFF/api/v1/jobs/1")
    on=$(run_wrk -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PON/api/v1/jobs/1")
    echo "$1 $r off $off on $on"
  done
}
{
  measure idle
  printf '{"model":{"arch":"cnn-small"},"dataset":{"train_limit":20000,"test_limit":1000},"pretrain":{"epochs":20},"train":{"epochs":3},"quant":{"weight_bits":4},"threads":2}' > "$W/busy.json"
  "$BUILD/lsq" train "$W/busy.json" --out "$W/busy" --quiet > /dev/null 2>&1 &
  TRAIN=$!
  sleep 3
  measure training
} | tee "$W/rounds.txt"
/usr/bin/python3 - "$W/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for case in ("idle", "training"):
    r = [x for x in rows if x[0] == case]
    off_rps = statistics.median(float(x[3]) for x in r); off_p99 = statistics.median(float(x[4]) for x in r)
    on_rps = statistics.median(float(x[7]) for x in r); on_p99 = statistics.median(float(x[8]) for x in r)
    bad = sum(int(x[5]) + int(x[9]) for x in r)
    print(f"{case}: auth off {off_rps:.0f} req/s p99 {off_p99:.2f} ms; auth on {on_rps:.0f} req/s "
          f"p99 {on_p99:.2f} ms; on/off rate {on_rps / off_rps:.3f}, p99 {on_p99 / off_p99:.3f}; "
          f"non-2xx {bad}")
PY
