#!/bin/bash
# The container tier (make test-container): builds the lsqd image from the
# Dockerfile, runs it with a named volume, trains a tiny job through the API,
# downloads an artifact, then restarts the container (docker restart, then
# docker rm + docker run on the same volume) and finds the job and its
# artifacts unchanged. Prints the cold-build time, the image size, the time
# to healthy and the job's wall time; closes with "container: N passed, N
# failed". Needs root (it installs docker.io and starts dockerd when missing).
# LSQD_IMAGE names the image (lsqd:test). lsqd in the container listens
# beyond loopback, so it requires bearer tokens: make_token creates the first
# admin token on the volume before the first start, and every request sends it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
image=${LSQD_IMAGE:-lsqd:test}
name=lsqd-test-$$
vol=lsqd-test-$$
work=$(mktemp -d /tmp/lsqd-container.XXXXXX)
passed=0
tier_start=$SECONDS

note() { printf 'container: %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
pass() { passed=$((passed + 1)); note "ok   $*"; }
fail() {
  note "FAIL $*"
  if docker inspect "$name" >/dev/null 2>&1; then
    note "last lines of docker logs $name:"; docker logs --tail 30 "$name" 2>&1 | sed 's/^/  /'
  fi
  echo "container: $passed passed, 1 failed"
  exit 1
}
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$vol" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT   # through the EXIT trap: no container or volume left

# ---------------------------------------------------------------- daemon, image
scripts/install-deps.sh container
scripts/dockerd.sh
t=$SECONDS
scripts/docker-base.sh debian:12
base_s=$((SECONDS - t))
t=$SECONDS
if ! docker build -t "$image" . >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log"; fail "docker build"
fi
build_s=$((SECONDS - t))
pass "image $image built (${build_s}s; base image ${base_s}s)"
size=$(docker image inspect -f '{{.Size}}' "$image")

# The runtime stage has no toolchain and no -dev package, and runs as lsqd.
if docker run --rm "$image" sh -c 'command -v cc || command -v gcc || command -v make' >/dev/null; then
  fail "the runtime image has a compiler or make"
fi
devs=$(docker run --rm "$image" dpkg-query -W -f '${Package}\n' | grep -c -- '-dev$' || true)
[ "$devs" = 0 ] || fail "the runtime image has $devs -dev packages"
uid=$(docker run --rm "$image" id -u)
[ "$uid" = 10001 ] || fail "the image runs as uid $uid, not 10001"
pass "runtime image: no compiler, no -dev package, uid 10001"

# ---------------------------------------------------------------- helpers
# Bearer tokens: lsqd beyond loopback requires one, created on the data
# volume before the first start with `lsqd token create` (docs/deploy.md).
# Prints the token.
make_token() {
  docker run --rm -v "$vol:/var/lib/lsqd" "$image" \
    token create --user ci --admin --data /var/lib/lsqd 2>/dev/null
}

auth=()
api() {  # api METHOD PATH [curl args...]: the body on stdout, fails on >= 400
  local method=$1 path=$2; shift 2
  curl -sS -f --max-time 30 -X "$method" "${auth[@]}" "$@" "http://127.0.0.1:$port$path"
}

# A free loopback port of the host, published to the container's 8080. It is
# chosen before the start so that lsqd can be told the Host name clients
# use (LSQD_HOST_ALLOW: a Host header check beyond loopback names only the
# listening port; a variable lsqd does not know is ignored).
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

start_container() {
  local try
  for try in 1 2 3 4 5; do
    [ -n "${port:-}" ] || port=$(free_port) || fail "no free port"
    if docker run -d --name "$name" -v "$vol:/var/lib/lsqd" -p "127.0.0.1:$port:8080" \
         -e "LSQD_HOST_ALLOW=127.0.0.1:$port" "$image" >/dev/null 2>"$work/run.err"; then
      return
    fi
    docker rm -f "$name" >/dev/null 2>&1 || true
    port=
  done
  cat "$work/run.err" >&2
  fail "docker run"
}

# Waits for /healthz (200 from the host) and then for Docker's own health
# status (the image's HEALTHCHECK); sets healthz_s and healthy_s.
wait_healthy() {
  local t0 i
  t0=$(now)
  for i in $(seq 1 300); do
    curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" && break
    [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
    sleep 0.2
  done
  curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" || fail "/healthz: no 200 in 60 s"
  healthz_s=$(since "$t0")
  for i in $(seq 1 90); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && break
    sleep 1
  done
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] ||
    fail "docker health status $(docker inspect -f '{{.State.Health.Status}}' "$name") after 90 s"
  healthy_s=$(since "$t0")
}

# The job is still there, succeeded, with the same artifacts, and model.lsqm
# downloads with the same bytes as before.
check_job_kept() {
  local when=$1 state
  state=$(api GET "/api/v1/jobs/$job" | jq -r .state) || fail "$when: GET job $job"
  [ "$state" = succeeded ] || fail "$when: job $job is '$state'"
  api GET "/api/v1/jobs/$job/artifacts" | jq -c '[.artifacts[] | {name, sha256, bytes}]' >"$work/arts.$when.json"
  cmp -s "$work/arts.json" "$work/arts.$when.json" || fail "$when: the artifact list changed"
  api GET "/api/v1/jobs/$job/artifacts/model.lsqm" -o "$work/model.$when.lsqm" || fail "$when: download"
  cmp -s "$work/model.lsqm" "$work/model.$when.lsqm" || fail "$when: model.lsqm changed"
  pass "$when: job $job succeeded, $(jq length "$work/arts.json") artifacts, model.lsqm the same bytes"
}

# ---------------------------------------------------------------- first start
docker volume create "$vol" >/dev/null
TOKEN=$(make_token) || fail "make_token"
[ -n "$TOKEN" ] || fail "make_token printed no token"
auth=(-H "Authorization: Bearer $TOKEN")
start_container
wait_healthy
first_healthz_s=$healthz_s first_healthy_s=$healthy_s
pass "healthy: /healthz after ${healthz_s}s, docker health after ${healthy_s}s"

spec='{"name":"container-smoke","model":{"arch":"mlp"},
       "dataset":{"train_limit":1000,"test_limit":200},
       "pretrain":{"epochs":1},"train":{"epochs":1},"quant":{"weight_bits":4}}'
job=$(api POST /api/v1/jobs -H 'Content-Type: application/json' -d "$spec" | jq -r .id) ||
  fail "POST /api/v1/jobs"
t=$(now)
state=queued
for i in $(seq 1 600); do
  state=$(api GET "/api/v1/jobs/$job" | jq -r .state)
  case "$state" in succeeded|failed|cancelled) break ;; esac
  sleep 0.5
done
job_s=$(since "$t")
[ "$state" = succeeded ] || { api GET "/api/v1/jobs/$job" >&2 || true; fail "job $job ended '$state'"; }
job_run_s=$(api GET "/api/v1/jobs/$job" | jq '(.finished_at - .started_at) * 10 | round / 10')
pass "job $job succeeded in ${job_s}s (started to finished: ${job_run_s}s)"

api GET "/api/v1/jobs/$job/artifacts" | jq -c '[.artifacts[] | {name, sha256, bytes}]' >"$work/arts.json"
jq -e 'map(.name) | index("model.lsqm") != null' "$work/arts.json" >/dev/null ||
  fail "no model.lsqm among $(cat "$work/arts.json")"
api GET "/api/v1/jobs/$job/artifacts/model.lsqm" -o "$work/model.lsqm" || fail "download model.lsqm"
want=$(jq -r '.[] | select(.name == "model.lsqm") | .sha256' "$work/arts.json")
got=$(sha256sum "$work/model.lsqm" | cut -d' ' -f1)
[ "$want" = "$got" ] || fail "model.lsqm sha256 $got, the API said $want"
pass "downloaded model.lsqm ($(stat -c %s "$work/model.lsqm") bytes, sha256 as listed)"

# ---------------------------------------------------------------- restarts
docker restart -t 30 "$name" >/dev/null
wait_healthy
check_job_kept restart

# docker stop sends SIGTERM to lsqd (PID 1): it exits 0.
docker stop -t 30 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "lsqd exited $code on docker stop"
pass "docker stop: lsqd exited 0"
docker rm "$name" >/dev/null
start_container
wait_healthy
check_job_kept recreate

owner=$(docker exec "$name" stat -c %u /var/lib/lsqd/lsqd.db)
[ "$owner" = 10001 ] || fail "lsqd.db on the volume belongs to uid $owner"
pass "the volume's lsqd.db belongs to uid 10001"

# ---------------------------------------------------------------- figures
note "figures: image $image $((size / 1000000)) MB ($size bytes)"
note "figures: docker build ${build_s}s, base image ${base_s}s (0 when it existed)"
note "figures: healthy after start: /healthz ${first_healthz_s}s, docker health ${first_healthy_s}s"
note "figures: tiny job (mlp, 1000 images, W4) ${job_s}s submit to succeeded"
note "figures: the whole tier $((SECONDS - tier_start))s"
echo "container: $passed passed, 0 failed"
