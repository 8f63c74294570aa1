#!/bin/sh
# Builds and runs bench/xsmm/xsmm_conv.c (libxsmm's conv layers on
# bench/conv_prims.c's dense shapes); needs libxsmm-dev (scripts/install-deps.sh
# bench). Usage: bench/xsmm/run.sh [BUILD] [xsmm_conv options]
set -eu
BUILD=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/../.."
mkdir -p "$BUILD/bench"
cc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -Wall -Wextra -Werror bench/xsmm/xsmm_conv.c \
   -o "$BUILD/bench/xsmm_conv" $(pkg-config --cflags --libs libxsmm) -lopenblas -lm -lpthread
exec "$BUILD/bench/xsmm_conv" "$@"
