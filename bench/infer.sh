#!/bin/sh
# Deployable-model benchmark: integer inference (.lsqm) against the float
# fake-quantized engine and against onnxruntime running the exported ONNX
# model, same run, batch 256, 2 threads, on cnn-small, resnet20 and a
# MobileNetV2-style net (bench/mobilenetv2.json: depthwise convs, ReLU6,
# inverted residuals) at W2A2; plus the file sizes at FP32/8/4/3/2 bits.
#   bench/infer.sh BUILD_DIR        (BUILD_DIR holds lsq and bench/infer_bench)
# Env: REPEATS (default 20), BITS (default 2).
# The models are trained briefly (speed and size do not depend on accuracy).
# Integer and float figures are medians of REPEATS timed runs after one
# warm-up run; onnxruntime's is the fastest of REPEATS after three (its first
# runs are slow) (tests/onnx/run_model.mjs --repeat), which favours
# onnxruntime; the JSON lines keep every run, so the median is there too.
# Then batch-1 latency (p50, p99 in ms) of the three on one thread each:
# LAT_WARMUP (default 20) untimed, then LAT_RUNS (default 200) timed
# single-image runs; the integer and float engines alternate image by image.
# Every run's figures also go, one JSON line per model and table, to
# BUILD_DIR/bench-infer/infer.jsonl (bench/benchjson.py reads them).
set -eu
B=$(cd "${1:?usage: bench/infer.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
reps=${REPEATS:-20}
bits=${BITS:-2}
lat_runs=${LAT_RUNS:-200}
lat_warmup=${LAT_WARMUP:-20}
work="$B/bench-infer"
mkdir -p "$work"
jsonl="$work/infer.jsonl"
: >"$jsonl"
# infer_bench as the Makefile builds it (make bench): the engine's flags and libraries
ib="$B/bench/infer_bench"
[ -x "$ib" ] || { echo "infer.sh: $ib missing (make bench builds it)" >&2; exit 1; }
"$root/scripts/setup-onnxruntime.sh" >&2 || true

echo "## File sizes (bytes; first/last layers at 8 bits)"
"$ib" sizes mobilenetv2="$root/bench/mobilenetv2.json"
echo

data=${LSQ_DATA_DIR:-/usr/share/datasets/fashion-mnist}
zcat "$data/t10k-images-idx3-ubyte.gz" | tail -c +17 | head -c $((256 * 784)) >"$work/images.u8"
"$ib" f32 "$work/images.u8" "$work/images.f32" 256

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
  js=$("$ib" speed "$dir" 256 2 "$reps" "$work/images.u8")
  ii=$(echo "$js" | sed 's/.*"integer_ips":\([0-9.]*\).*/\1/')
  fi=$(echo "$js" | sed 's/.*"float_ips":\([0-9.]*\).*/\1/')
  kern=$(echo "$js" | sed 's/.*"kernel":"\([a-z0-9]*\)".*/\1/')
  oi=n/a
  ojs=null
  if command -v node >/dev/null 2>&1 && [ -f "$dir/model.onnx" ]; then
    ojs=$(node "$root/tests/onnx/run_model.mjs" "$dir/model.onnx" "$work/images.f32" 256,1,28,28 \
         "$work/out.f32" --threads 2 --warmup 3 --repeat "$reps" --times yes)
    ms=$(echo "$ojs" | sed 's/.*"ms":\([0-9.e+-]*\).*/\1/')
    oi=$(awk -v ms="$ms" 'BEGIN { printf "%.1f", 256 / (ms / 1000) }')
  fi
  echo "{\"bench\":\"infer\",\"model\":\"$arch\",\"bits\":$bits,\"batch\":256,\"threads\":2,\"lsq\":$js,\"onnxruntime\":$ojs}" >>"$jsonl"
  rf=$(awk -v a="$ii" -v b="$fi" 'BEGIN { printf "%.2fx", a / b }')
  ro=$(awk -v a="$ii" -v b="$oi" 'BEGIN { if (b == "n/a") print "n/a"; else printf "%.2fx", a / b }')
  echo "| $arch | $ii | $fi | $oi | $rf | $ro | $kern |"
done

# Batch-1 latency: one image, one thread for all three engines.
head -c $((784 * 4)) "$work/images.f32" >"$work/image1.f32"
for arch in cnn-small resnet20 mobilenetv2; do
  dir="$work/$arch-w$bits"
  js=$("$ib" latency "$dir" "$lat_runs" "$lat_warmup" 1 "$work/images.u8")
  ojs=null
  if command -v node >/dev/null 2>&1 && [ -f "$dir/model.onnx" ]; then
    ojs=$(node "$root/tests/onnx/run_model.mjs" "$dir/model.onnx" "$work/image1.f32" 1,1,28,28 \
         "$work/out1.f32" --threads 1 --warmup "$lat_warmup" --repeat "$lat_runs" --times yes)
  fi
  echo "{\"bench\":\"latency\",\"model\":\"$arch\",\"bits\":$bits,\"batch\":1,\"threads\":1,\"lsq\":$js,\"onnxruntime\":$ojs}" >>"$jsonl"
done
echo
/usr/bin/python3 "$root/bench/benchjson.py" latency-table "$jsonl"
