#!/usr/bin/env bash
# PiCIE on real ISIC-2017 against two label-free floors (docs/unsupervised.md), sized for a 2-core CPU:
# 64 px, ResNet-18, 12 epochs, batch 32, seeds 0-2; the floors at the same size and seeds.
# Usage (from the repo root): bash docs/studies/picie_isic2017.sh [ISIC_ROOT] [OUT]
# Takes about 20 minutes on 2 otherwise idle CPU cores. A rerun skips finished runs (a killed run resumes).
set -euo pipefail
ISIC=${1:-../shared/data/isic2017}
OUT=${2:-results/picie}
mkdir -p "$OUT"
DATALIST=$OUT/isic2017.json
[ -f "$DATALIST" ] || s4mi prepare isic2017 --root "$ISIC" --out "$DATALIST"

for seed in 0 1 2; do
  [ -f "$OUT/picie/s$seed/metrics.json" ] && { echo "skip picie s$seed (done)"; continue; }
  python -m monai.bundle run training --config_file bundles/picie_seg_isic/configs/train.json --datalist "$DATALIST" \
    --seed "$seed" --image_size 64 --encoder resnet18 --pretrain_epochs 12 --pretrain_batch_size 32 \
    --kmeans_init_batches 10 --num_workers 2 --output_dir "$OUT/picie/s$seed"
done
s4mi floors "$DATALIST" --out "$OUT/floors" --image_size 64 --seeds 0,1,2
s4mi report "$OUT"/picie/s* "$OUT"/floors/*/s* --metrics iou_per_image_mean,miou_all_classes,pixel_accuracy \
  --baseline floor_otsu --out "$OUT/report"
