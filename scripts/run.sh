#!/bin/sh
# Starts lsqd from a build folder (make run: scripts/run.sh BUILD_DIR).
# Defaults: 127.0.0.1:8080, data in ./var; LSQD_LISTEN, LSQD_DATA,
# LSQD_WORKERS and the other LSQD_* variables of `lsqd --help` override them.
set -eu
build=${1:?usage: scripts/run.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
: "${LSQD_LISTEN:=127.0.0.1:8080}"
: "${LSQD_DATA:=./var}"
export LSQD_LISTEN LSQD_DATA
[ -z "${LSQ_BIN:-}" ] && export LSQ_BIN="$build/lsq"
[ -z "${LSQD_WEB:-}" ] && [ -d "$root/web" ] && export LSQD_WEB="$root/web"
host=${LSQD_LISTEN%:*}
port=${LSQD_LISTEN##*:}
echo "lsqd: http://$host:$port/  (data: $LSQD_DATA, API: http://$host:$port/api/v1/openapi.json; Ctrl-C stops)"
exec "$build/lsqd"
