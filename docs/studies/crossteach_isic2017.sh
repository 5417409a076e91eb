#!/usr/bin/env bash
# The semi-supervised segmentation study of docs/semi_supervised.md on real ISIC-2017, sized for a CPU:
# the supervised U-Net and cross teaching at 10 %, 50 % and 100 % of the masks, same seed, same labeled
# subsets, about 350 training iterations per run (epochs chosen per fraction so that every run gets the
# same number of optimiser steps, as SSL4MIS fixes iterations rather than epochs) and about 10 validations.
# Usage (from the repo root): bash docs/studies/crossteach_isic2017.sh [ISIC_ROOT] [OUT] [all|supervised|crossteach]
# With OMP_NUM_THREADS=1, the supervised and the cross-teaching halves can run side by side on 2 cores
# (about 40 minutes each), then "all" (or a rerun) skips the finished runs and prints the table.
set -euo pipefail
ISIC=${1:-../shared/data/isic2017}
OUT=${2:-results/crossteach}
PART=${3:-all}
mkdir -p "$OUT"
DATALIST=$OUT/isic2017.json
[ -f "$DATALIST" ] || s4mi prepare isic2017 --root "$ISIC" --out "$DATALIST"

COMMON=(--datalist "$DATALIST" --seed 0 --image_size 64 --num_workers 1)
bundle() { python -m monai.bundle run training --config_file "bundles/$1/configs/train.json" "${@:2}"; }
done_in() { [ -f "$1/metrics.json" ] && echo "skip $1 (done)"; }

# supervised ResNet-34 U-Net, batch 16: 9, 44 and 88 iterations per epoch at 10, 50 and 100 %
[ "$PART" = crossteach ] || for run in "10 0.1 39 4" "50 0.5 8 1" "100 1.0 4 1"; do
  read -r tag fraction epochs interval <<< "$run"
  done_in "$OUT/supervised_$tag" || bundle supervised_seg_isic "${COMMON[@]}" --label_fraction "$fraction" \
    --max_epochs "$epochs" --val_interval "$interval" --batch_size 16 --output_dir "$OUT/supervised_$tag"
done
# cross teaching, SSL4MIS U-Net + Swin-UNet (embedding 48), 8 labeled + 8 unlabeled per batch
# (16 labeled at 100 %): 18, 88 and 88 iterations per epoch
[ "$PART" = supervised ] || for run in "10 0.1 20 2" "50 0.5 4 1" "100 1.0 4 1"; do
  read -r tag fraction epochs interval <<< "$run"
  done_in "$OUT/crossteach_$tag" || bundle crossteach_seg_isic "${COMMON[@]}" --label_fraction "$fraction" \
    --max_epochs "$epochs" --val_interval "$interval" --labeled_batch_size 8 --unlabeled_batch_size 8 --transformer_embed_dim 48 \
    --output_dir "$OUT/crossteach_$tag"
done

# ablation: the same two networks at 50 % without the cross-teaching term (each learns from the masks only)
[ "$PART" = supervised ] || done_in "$OUT/crossteach_50_no_ct" || bundle crossteach_seg_isic "${COMMON[@]}" \
  --label_fraction 0.5 --max_epochs 4 --labeled_batch_size 8 --unlabeled_batch_size 8 --transformer_embed_dim 48 \
  --consistency 0 --output_dir "$OUT/crossteach_50_no_ct"

[ "$PART" = all ] || exit 0
s4mi table --task segmentation --split test \
  "supervised U-Net, 10 %=$OUT/supervised_10" "supervised U-Net, 50 %=$OUT/supervised_50" \
  "supervised U-Net, 100 %=$OUT/supervised_100" \
  "cross teaching U-Net, 10 %=$OUT/crossteach_10#cnn" "cross teaching Swin-UNet, 10 %=$OUT/crossteach_10#transformer" \
  "cross teaching U-Net, 50 %=$OUT/crossteach_50#cnn" "cross teaching Swin-UNet, 50 %=$OUT/crossteach_50#transformer" \
  "cross teaching U-Net, 100 %=$OUT/crossteach_100#cnn" "cross teaching Swin-UNet, 100 %=$OUT/crossteach_100#transformer" \
  "no cross teaching (λ = 0) U-Net, 50 %=$OUT/crossteach_50_no_ct#cnn" \
  "no cross teaching (λ = 0) Swin-UNet, 50 %=$OUT/crossteach_50_no_ct#transformer" \
  | tee "$OUT/table.md"
