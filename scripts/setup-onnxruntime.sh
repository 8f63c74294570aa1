#!/bin/sh
# Installs onnxruntime-node (npm) into build/node_modules when it is missing,
# for the tests and benchmarks that run exported ONNX models
# (tests/onnx/run_model.mjs). --ignore-scripts: the package ships its native
# library, so no install script (and no download) is needed. Without node or
# npm this only says so: those tests then skip.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/build"
version=${ORT_NODE_VERSION:-1.30.0}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-onnxruntime: node/npm not found; ONNX runtime tests will skip" >&2
  exit 0
fi
if (cd "$dir" 2>/dev/null && node -e "require('./node_modules/onnxruntime-node')") \
    >/dev/null 2>&1; then
  exit 0
fi
echo "setup-onnxruntime: installing onnxruntime-node@$version into $dir/node_modules" >&2
mkdir -p "$dir"
cd "$dir"
npm install --no-save --no-audit --no-fund --ignore-scripts \
  "onnxruntime-node@$version" >&2
node -e "require('./node_modules/onnxruntime-node')"
