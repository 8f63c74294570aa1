#!/bin/sh
# Installs, with apt-get, every Debian 12 package that lsqd's build, tests and
# benchmarks need. A no-op when everything is present. Run as root (or with
# sudo available). Usage: scripts/install-deps.sh [build|test|fuzz|slurm|bench|container|all]
#   build      compilers and libraries (make, make run)
#   test       build + what the test tiers use (make test)
#   slurm      test + a one-node Slurm for make test-slurm (scripts/slurm-up.sh)
#   bench      test + the peers the benchmarks compare with (make bench)
#   fuzz       build + clang and its libFuzzer/sanitizer runtimes (make fuzz,
#              make test-fuzz; docs/reliability.md)
#   container  Docker, debootstrap and docker-compose (make test-container,
#              docs/deploy.md); the image builds its own toolchain
#   all        every tier
set -eu
tier=${1:-test}

BUILD_PKGS="build-essential pkg-config libmicrohttpd-dev libjansson-dev \
libsqlite3-dev libcurl4-openssl-dev libopenblas-dev zlib1g-dev libcriterion-dev \
protobuf-c-compiler libprotobuf-c-dev libonnx-dev \
libarchive-dev libpng-dev libjpeg62-turbo-dev libssl-dev libopenmpi-dev openmpi-bin \
dataset-fashion-mnist ca-certificates xxd libdnnl-dev"
TEST_PKGS="nodejs npm chromium sqlite3 curl python3"
BENCH_PKGS="python3-torch python3-numpy python3-onnx wrk libxsmm-dev"
SLURM_PKGS="slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge"
FUZZ_PKGS="clang libclang-rt-14-dev"
CONTAINER_PKGS="docker.io debootstrap docker-compose curl jq"

case "$tier" in
  build) want="$BUILD_PKGS" ;;
  test)  want="$BUILD_PKGS $TEST_PKGS $FUZZ_PKGS" ;;
  fuzz)  want="$BUILD_PKGS $FUZZ_PKGS" ;;
  slurm) want="$BUILD_PKGS $TEST_PKGS $FUZZ_PKGS $SLURM_PKGS" ;;
  bench) want="$BUILD_PKGS $TEST_PKGS $FUZZ_PKGS $BENCH_PKGS" ;;
  container) want="$CONTAINER_PKGS" ;;
  all)   want="$BUILD_PKGS $TEST_PKGS $FUZZ_PKGS $BENCH_PKGS $SLURM_PKGS $CONTAINER_PKGS" ;;
  *) echo "install-deps: unknown tier '$tier' (build, test, fuzz, slurm, bench, container, all)" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  # nodejs/npm may come from elsewhere on the machine: accept a working binary.
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
