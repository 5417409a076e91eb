#!/usr/bin/env bash
# PiCIE on real ISIC-2017 against two label-free floors (docs/unsupervised.md), sized for a 2-core CPU:
# 64 px, ResNet-18, 12 epochs, batch 32, seeds 0-2, with the reference's frequency weighting of the
# cross-entropy and with inverse-frequency weighting; the floors at the same size and seeds.
# Usage (from the repo root): bash docs/studies/picie_isic2017.sh [ISIC_ROOT] [OUT]
# Takes about 50 minutes on 2 otherwise idle CPU cores. A rerun skips finished runs (a killed run resumes).
set -euo pipefail
ISIC=${1:-../shared/data/isic2017}
OUT=${2:-results/picie}
mkdir -p "$OUT"
DATALIST=$OUT/isic2017.json
[ -f "$DATALIST" ] || s4mi prepare isic2017 --root "$ISIC" --out "$DATALIST"

for weighting in frequency inverse_frequency; do
  folder=$OUT/picie; [ "$weighting" = frequency ] || folder=$OUT/picie_$weighting
  for seed in 0 1 2; do
    [ -f "$folder/s$seed/metrics.json" ] && { echo "skip $folder/s$seed (done)"; continue; }
    python -m monai.bundle run training --config_file bundles/picie_seg_isic/configs/train.json --datalist "$DATALIST" \
      --seed "$seed" --image_size 64 --encoder resnet18 --pretrain_epochs 12 --pretrain_batch_size 32 \
      --kmeans_init_batches 10 --num_workers 2 --cluster_weighting "$weighting" \
      --output_dir "$folder/s$seed"
  done
done
s4mi floors "$DATALIST" --out "$OUT/floors" --image_size 64 --seeds 0,1,2
s4mi report "$OUT"/picie/s* "$OUT"/floors/*/s* --metrics iou_per_image_mean,miou_all_classes,pixel_accuracy \
  --baseline floor_otsu --out "$OUT/report"
s4mi report "$OUT"/picie_inverse_frequency/s* "$OUT"/floors/*/s* --metrics iou_per_image_mean,miou_all_classes,pixel_accuracy \
  --baseline floor_otsu --out "$OUT/report_inverse_frequency"
