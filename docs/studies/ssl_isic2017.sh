#!/usr/bin/env bash
# The self-supervised classification study of docs/self_supervised.md on real ISIC-2017, sized for a
# 2-core CPU: supervised, DINO and CASS at 10 % and 100 % labels, same seed, same labeled subsets.
# Usage (from the repo root): bash docs/studies/ssl_isic2017.sh [ISIC_ROOT] [OUT]
# Takes about 75 minutes on 2 otherwise idle CPU cores. A rerun skips finished runs (a killed run resumes).
set -euo pipefail
ISIC=${1:-../shared/data/isic2017}
OUT=${2:-results/ssl}
mkdir -p "$OUT"
DATALIST=$OUT/isic2017.json
[ -f "$DATALIST" ] || s4mi prepare isic2017 --root "$ISIC" --out "$DATALIST"

# Shared by every run: ResNet-18 from random init, 64 px, seed 0, fine-tuning 15 epochs at batch 32.
COMMON=(--datalist "$DATALIST" --seed 0 --image_size 64 --max_epochs 15 --batch_size 32 --num_workers 2)
DINO=(--backbone resnet18 --pretrain_epochs 20 --pretrain_batch_size 64 --n_local_crops 4
      --head_out_dim 4096 --head_hidden_dim 1024)
# CASS from random initialisation collapses to a constant output (docs/self_supervised.md); the table was made with
# the run continuing, so keep it going with a warning rather than the default stop.
CASS=(--cnn_backbone resnet18 --transformer_backbone vit_ti16 --pretrain_epochs 20 --pretrain_batch_size 32 --on_constant_collapse warn)
bundle() { python -m monai.bundle run "$1" --config_file "bundles/$2/configs/train.json" "${@:3}"; }
done_in() { [ -f "$1/metrics.json" ] && echo "skip $1 (done)"; }

for fraction in 0.1 1.0; do
  tag=$(python -c "print(round($fraction * 100))")
  done_in "$OUT/supervised_$tag" || bundle training supervised_cls_isic "${COMMON[@]}" --backbone resnet18 \
    --label_fraction "$fraction" --output_dir "$OUT/supervised_$tag"
done

# Pretraining once per method (inside the 10 % run), then fine-tuning the same backbones on 100 %.
done_in "$OUT/dino_10" || bundle training dino_isic "${COMMON[@]}" "${DINO[@]}" --label_fraction 0.1 --output_dir "$OUT/dino_10"
done_in "$OUT/dino_100" || bundle finetune dino_isic "${COMMON[@]}" "${DINO[@]}" --label_fraction 1.0 \
  --pretrained_backbone "$OUT/dino_10/pretrained_backbone.pt" --output_dir "$OUT/dino_100"
done_in "$OUT/cass_10" || bundle training cass_isic "${COMMON[@]}" "${CASS[@]}" --label_fraction 0.1 --output_dir "$OUT/cass_10"
done_in "$OUT/cass_100" || bundle finetune cass_isic "${COMMON[@]}" "${CASS[@]}" --label_fraction 1.0 \
  --pretrained_cnn_backbone "$OUT/cass_10/pretrained_cnn_backbone.pt" --pretrained_transformer_backbone "$OUT/cass_10/pretrained_transformer_backbone.pt" --output_dir "$OUT/cass_100"

s4mi table --split test \
  --columns f1_macro,balanced_accuracy,auc_macro,isic2017_challenge_score,recall_per_class.melanoma,reference_micro_recall_as_f1 \
  "supervised R18, 10 %=$OUT/supervised_10" "supervised R18, 100 %=$OUT/supervised_100" \
  "DINO R18, 10 %=$OUT/dino_10" "DINO R18, 100 %=$OUT/dino_100" \
  "CASS R18, 10 %=$OUT/cass_10#cnn" "CASS ViT-Ti/16, 10 %=$OUT/cass_10#vit" \
  "CASS R18, 100 %=$OUT/cass_100#cnn" "CASS ViT-Ti/16, 100 %=$OUT/cass_100#vit" | tee "$OUT/table.md"
