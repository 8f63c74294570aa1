#!/bin/sh
# lsqd under load: one lsqd with a training job running; wrk GETs the job
# routes (the list, the job, its artifacts, in turn; not its metrics series,
# which grows as the job runs and would make later rounds slower) for
# SECONDS, first alone, then while N Server-Sent Events clients
# (bench/lsqd/sse_clients.py) follow that job. At the end the job is
# cancelled; every SSE client must then have received every event id from 1
# to the end's last_seq in order (the script fails otherwise). Prints each
# round's requests/s and p99 latency and the medians over ROUNDS rounds.
#   bench/lsqd/load.sh [BUILD] [ROUNDS] [SECONDS] [N]
set -eu
BUILD=${1:-build}
ROUNDS=${2:-1}
SECS=${3:-30}
N=${4:-500}
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "load: needs wrk (scripts/install-deps.sh bench)" >&2; exit 1; }
W=$(mktemp -d /tmp/lsqd-load-XXXXXX)
P=${PORT:-18251}
B=http://127.0.0.1:$P
"$BUILD/lsqd" --listen 127.0.0.1:$P --data "$W/data" > "$W/lsqd.log" 2>&1 &
D=$!
SSE=
trap 'kill $D $SSE 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
for i in $(seq 1 50); do curl -fs "$B/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
# a job that runs for the whole measurement, emitting progress events
spec='{"model":{"arch":"mlp"},"dataset":{"train_limit":20000,"test_limit":500},"pretrain":{"epochs":1},"train":{"epochs":200},"quant":{"weight_bits":4},"threads":1}'
JOB=$(curl -fs -H 'Content-Type: application/json' -d "$spec" "$B/api/v1/jobs" |
      /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
while :; do
  st=$(curl -fs "$B/api/v1/jobs/$JOB" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [ "$st" = running ] && break
  sleep 0.5
done
cat > "$W/routes.lua" <<LUA
local paths = {"/api/v1/jobs", "/api/v1/jobs/$JOB", "/api/v1/jobs/$JOB/artifacts"}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
run_wrk() {
  wrk -t2 -c32 -d"${SECS}s" --latency -s "$W/routes.lua" "$B" 2>&1 | /usr/bin/python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", t).group(1))
m = re.search(r"\s99%\s+([0-9.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errs = re.search(r"Socket errors: (.*)", t)
errs = errs.group(1).replace(" ", "") if errs else "-"
print(f"{rps:.0f} {p99:.2f} {non2xx.group(1) if non2xx else 0} {errs}")'
}
: > "$W/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
  echo "alone $r $(run_wrk)" | tee -a "$W/rounds.txt"
done
/usr/bin/python3 bench/lsqd/sse_clients.py $P "$JOB" "$N" "$W/ready" $((SECS * ROUNDS + 600)) > "$W/sse.txt" 2>&1 &
SSE=$!
for i in $(seq 1 600); do [ -f "$W/ready" ] && break; sleep 0.1; done
[ -f "$W/ready" ] || { echo "load: the $N SSE clients did not all connect" >&2; cat "$W/sse.txt" >&2; exit 1; }
for r in $(seq 1 "$ROUNDS"); do
  echo "sse$N $r $(run_wrk)" | tee -a "$W/rounds.txt"
done
curl -fs "$B/metrics" | grep -E '^lsqd_(connections_open|sse_streams_waiting|connections_cut_total)' || true
curl -fs -X POST "$B/api/v1/jobs/$JOB/cancel" > /dev/null
rc=0
wait $SSE || rc=$?
SSE=
cat "$W/sse.txt"
/usr/bin/python3 - "$W/rounds.txt" "$N" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for case in ("alone", "sse" + sys.argv[2]):
    r = [x for x in rows if x[0] == case]
    print(f"{case}: median of {len(r)}: {statistics.median(float(x[2]) for x in r):.0f} req/s, "
          f"p99 {statistics.median(float(x[3]) for x in r):.2f} ms, non-2xx {sum(int(x[4]) for x in r)}, "
          f"socket errors {' '.join(x[5] for x in r)}")
PY
exit $rc
