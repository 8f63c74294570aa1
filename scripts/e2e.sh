#!/bin/sh
# End-to-end tests of the dashboard in a real browser (make test-e2e):
# Debian's chromium driven by playwright-core (version locked in
# tests/e2e/package-lock.json) against a real lsqd on an ephemeral port.
# Screenshots land in BUILD_DIR/e2e/.  Usage: scripts/e2e.sh LSQD_BIN BUILD_DIR
set -eu
lsqd=${1:?usage: scripts/e2e.sh LSQD_BIN BUILD_DIR}
build=${2:?usage: scripts/e2e.sh LSQD_BIN BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x /usr/bin/chromium ] || ! command -v node >/dev/null 2>&1; then
  "$root/scripts/install-deps.sh" test
fi
cd "$root/tests/e2e"
# npm ci only when the lock file changed since the last install
stamp=node_modules/.lsqd-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
mkdir -p "$build/e2e"
LSQD_BIN="$lsqd" LSQ_BIN="${LSQ_BIN:-$(dirname "$lsqd")/lsq}" E2E_OUT="$build/e2e" \
  exec node --test --test-reporter=spec "$root"/tests/e2e/*.test.mjs
