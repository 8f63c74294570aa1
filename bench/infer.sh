#!/bin/sh
# Deployable-model benchmark: integer inference (.lsqm) against the float
# fake-quantized engine and against onnxruntime running the exported ONNX
# model, same run, batch 256, 2 threads, on cnn-small, resnet20 and a
# MobileNetV2-style net (bench/mobilenetv2.json: depthwise convs, ReLU6,
# inverted residuals; the ONNX export does not carry its layers yet, so
# onnxruntime has no figure for it) at W2A2; plus the file sizes at
# FP32/8/4/3/2 bits.
#   bench/infer.sh BUILD_DIR        (BUILD_DIR holds libengine.a and lsq)
# Env: REPEATS (default 20), BITS (default 2).
# The models are trained briefly (speed and size do not depend on accuracy).
# Integer and float figures are medians of REPEATS timed runs;
# onnxruntime's is the fastest of REPEATS (tests/onnx/run_model.mjs --repeat),
# which favours onnxruntime.
set -eu
B=$(cd "${1:?usage: bench/infer.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
reps=${REPEATS:-20}
bits=${BITS:-2}
work="$B/bench-infer"
mkdir -p "$work"
# the engine's own libraries (the Makefile's ENGINE_PKGS)
pkgs="jansson zlib openblas libprotobuf-c libarchive libpng ompi-c"
pkg-config --exists libjpeg && pkgs="$pkgs libjpeg" || jpeg=-ljpeg
cc -O2 -std=c11 -D_GNU_SOURCE -fopenmp -I"$root/engine" \
  $(pkg-config --cflags $pkgs) "$root/bench/infer_bench.c" "$B/libengine.a" \
  $(pkg-config --libs $pkgs) ${jpeg:-} -lm -o "$work/infer_bench"
"$root/scripts/setup-onnxruntime.sh" >&2 || true

echo "## File sizes (bytes; first/last layers at 8 bits)"
"$work/infer_bench" sizes mobilenetv2="$root/bench/mobilenetv2.json"
echo

data=${LSQ_DATA_DIR:-/usr/share/datasets/fashion-mnist}
zcat "$data/t10k-images-idx3-ubyte.gz" | tail -c +17 | head -c $((256 * 784)) >"$work/images.u8"
"$work/infer_bench" f32 "$work/images.u8" "$work/images.f32" 256

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "## Inference speed (batch 256, 2 threads, W${bits}A${bits}; ${cpu:-CPU unknown})"
echo "| model | integer img/s | float fake-quant img/s | onnxruntime img/s | integer / float | integer / onnxruntime | kernel |"
echo "|---|---|---|---|---|---|---|"
for arch in cnn-small resnet20 mobilenetv2; do
  dir="$work/$arch-w$bits"
  if [ ! -f "$dir/model.lsqm" ]; then
    model="{\"arch\":\"$arch\"}"
    [ "$arch" = mobilenetv2 ] && model=$(cat "$root/bench/mobilenetv2.json")
    cat >"$work/$arch.json" <<JSON
{"name":"bench-$arch","model":$model,"dataset":{"train_limit":256,"test_limit":256},
 "pretrain":{"epochs":1,"batch_size":64},"quant":{"weight_bits":$bits},
 "train":{"epochs":1,"batch_size":64},"threads":2}
JSON
    "$B/lsq" train "$work/$arch.json" --out "$dir" --quiet
  fi
  js=$("$work/infer_bench" speed "$dir" 256 2 "$reps" "$work/images.u8")
  ii=$(echo "$js" | sed 's/.*"integer_ips":\([0-9.]*\).*/\1/')
  fi=$(echo "$js" | sed 's/.*"float_ips":\([0-9.]*\).*/\1/')
  kern=$(echo "$js" | sed 's/.*"kernel":"\([a-z0-9]*\)".*/\1/')
  oi=n/a
  if command -v node >/dev/null 2>&1 && [ -f "$dir/model.onnx" ]; then
    ms=$(node "$root/tests/onnx/run_model.mjs" "$dir/model.onnx" "$work/images.f32" 256,1,28,28 \
         "$work/out.f32" --threads 2 --repeat "$reps" | sed 's/.*"ms":\([0-9.e+-]*\).*/\1/')
    oi=$(awk -v ms="$ms" 'BEGIN { printf "%.1f", 256 / (ms / 1000) }')
  fi
  rf=$(awk -v a="$ii" -v b="$fi" 'BEGIN { printf "%.2fx", a / b }')
  ro=$(awk -v a="$ii" -v b="$oi" 'BEGIN { if (b == "n/a") print "n/a"; else printf "%.2fx", a / b }')
  echo "| $arch | $ii | $fi | $oi | $rf | $ro | $kern |"
done
