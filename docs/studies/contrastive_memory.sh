#!/usr/bin/env bash
# Peak memory and speed of each contrastive-segmentation stage, one stage per process (so each peak is the
# stage's own), for both networks, at 224 px (batch 2 and 8) and 448 px (batch 2), on the demo images
# (the images are resized to the size asked; the demo's few cached images keep the dataset out of the peak).
# Usage (from the repo root): bash docs/studies/contrastive_memory.sh [OUT.jsonl]
# Then: python docs/studies/contrastive_memory_fit.py OUT.jsonl --budget_gb 24
set -euo pipefail
OUT=${1:-results/contrast_memory.jsonl}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for architecture in contrastive_unet ssl4mis_unet; do
  for size_batch in 224:2 224:8 448:2; do
    size=${size_batch%:*}; batch=${size_batch#*:}
    for stage in global local finetune; do
      case $stage in
        global) knob=--global_batch_size ;;
        local) knob=--local_batch_size ;;
        finetune) knob=--batch_size ;;
      esac
      line=$(python -m monai.bundle run "benchmark_$stage" --config_file bundles/contrast_seg_isic/configs/train.json \
        --architecture "$architecture" --image_size "$size" "$knob" "$batch" --label_fraction 1.0 \
        --benchmark_steps 2 --output_dir "$(mktemp -d)" 2>/dev/null | grep '^benchmark ' | sed 's/^benchmark //')
      echo "{\"architecture\": \"$architecture\", \"image_size\": $size, \"result\": $line}" | tee -a "$OUT"
    done
  done
done
