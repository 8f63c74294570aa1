#!/bin/sh
# The accuracy cross-check against PyTorch: the paper's LSQ fine-tuning
# (bench/torch_train.py: round_pass / grad_scale quantizer, the paper's
# init, lr 0.01, cosine, batch 128, first and last layers at 8 bits) run by
# PyTorch from the very float models `lsq train` made (runs/MODEL-fp/fp.lsqc,
# from bench/paper_tables.sh), with the specs' flip augmentation, with and
# without the paper's distillation. Results go to runs/torch/NAME.json (one
# JSON line: test accuracy after every epoch); a run is skipped when its
# file exists. Tens of minutes of CPU each; not part of `make test`.
#   bench/peer_accuracy.sh [NAME ...]   default: all of them, in this order
# THREADS=n sets PyTorch's threads (default 2; 1 to run two at once).
# Table: /usr/bin/python3 bench/results.py runs --peer NAME ...
set -eu
cd "$(dirname "$0")/.."
all="cnn-small-w2a2-kd-s1 cnn-small-w2a2-nokd-s1 resnet20-w2a2-nokd-s1
     cnn-small-w2a2-kd-s2 cnn-small-w2a2-nokd-s2 cnn-small-w2a2-kd-s3
     cnn-small-w2a2-nokd-s3 resnet20-w2a2-kd-s1 resnet20-w2a2-nokd-s2
     resnet20-w2a2-kd-s2"
[ $# -eq 0 ] && set -- $all
mkdir -p runs/torch
for name in "$@"; do
  out=runs/torch/$name.json
  if [ -s "$out" ]; then
    echo "skip $name (done)"
    continue
  fi
  model=${name%%-w2a2*}
  rest=${name#"$model"-w2a2-}
  kd=${rest%-s*}
  seed=${rest##*-s}
  case $kd in
    kd) distill=--distill ;;
    nokd) distill= ;;
    *) echo "peer_accuracy.sh: $name: expected MODEL-w2a2-(kd|nokd)-sSEED" >&2; exit 2 ;;
  esac
  fp=runs/$model-fp/fp.lsqc
  [ -f "$fp" ] || { echo "peer_accuracy.sh: $fp missing: bench/paper_tables.sh $model-fp" >&2; exit 2; }
  echo "train $name"
  start=$(date +%s)
  /usr/bin/python3 bench/torch_train.py --model "$model" --bits 2 --epochs 5 --flip \
    --threads "${THREADS:-2}" \
    $distill --seed "$seed" --load-lsqc "$fp" > "$out.tmp" 2> "runs/torch/$name.log"
  mv "$out.tmp" "$out"
  echo "$name: $(( $(date +%s) - start )) s"
done
