"""Each bundle's ``docs/README.md``: generated from the same spec as its configs, results kept by hand.

The part between ``RESULTS_START`` and ``RESULTS_END`` holds measured results and the commands that
produced them; regeneration keeps it.
"""

from __future__ import annotations

from s4mi_monai.bundle.generate import BundleSpec

RESULTS_START = "<!-- results: kept when the README is regenerated -->"
RESULTS_END = "<!-- /results -->"
NO_RESULTS = "No measured results on real data yet for this bundle."


def _kept_results(existing: str) -> str:
    if RESULTS_START in existing and RESULTS_END in existing:
        return existing.split(RESULTS_START, 1)[1].split(RESULTS_END, 1)[0].strip()
    return NO_RESULTS


def _method(spec: BundleSpec) -> str:
    if spec.task == "classification":
        return (
            "- Network: `s4mi_monai.networks.Classifier`, a MONAI ResNet with the standard 7x7/2 stem "
            "(`--backbone resnet50`, default on real data; `resnet18` for the demo) or a MONAI ViT "
            "(`--backbone vit_b16`, also `vit_s16`, `vit_ti16`) plus a linear head.\n"
            "- Initialisation: random, or ImageNet weights from a local file (`--pretrained_weights PATH`: a torchvision "
            "ResNet or timm ViT state dict, or one of our checkpoints); the keys loaded and missing are logged. Nothing is downloaded.\n"
            "- Loss: cross-entropy (multi-class) or BCE (multi-label); `--loss_kind focal` for sigmoid focal loss; "
            "`--class_weighting inverse_frequency` weights classes by N / (C n_c) from the labeled training items.\n"
            "- Optimiser: Adam, lr 3.6e-4, weight decay 1e-5, cosine schedule over all iterations (paper section 3.3).\n"
            "- Augmentation: rotation (+-15 degrees), horizontal and vertical flips, colour jitter; images resized to `--image_size`.\n"
            "- Model selection: the epoch with the best validation `--selection_metric` (default `f1_macro`); the test split is used only for the final report."
        )
    return (
        "- Network: `s4mi_monai.networks.ResNetUNet`, a U-Net whose encoder is the full MONAI ResNet-34 "
        "(standard stem, all four stages; the reference cut it to depth 3) with an smp-style decoder; any input size.\n"
        "- Initialisation: random, or a local torchvision ResNet-34 state dict for the encoder (`--pretrained_weights PATH`).\n"
        "- Loss: 1/2 (Dice + cross-entropy) (`monai.losses.DiceCELoss`).\n"
        "- Optimiser: Adam, lr 3.6e-4, weight decay 1e-5, cosine schedule over all iterations.\n"
        "- Augmentation: rotation and flips drawn once for image and mask together (the reference drew them "
        "independently, misaligning masks), colour jitter on the image.\n"
        "- Model selection: best validation `--selection_metric` (default `iou_per_image_mean`)."
    )


def _metrics(spec: BundleSpec) -> str:
    if spec.task == "classification":
        extra = " and the ISIC-2017 challenge score (mean of the melanoma and seborrheic-keratosis AUCs)" if spec.profile.challenge else ""
        return (
            "`metrics.json` holds the test-split metrics of the shared evaluator (`s4mi_monai.metrics.classification_metrics`): "
            "accuracy, balanced accuracy, macro and micro F1, per-class and macro recall and precision, one-vs-rest AUC per class "
            f"and macro{extra}; for multi-label data per-label F1 and AUC at a 0.5 threshold. The paper's number as the reference "
            "code computed it (micro recall, logged there as F1) is reported as `reference_micro_recall_as_f1`. Undefined values "
            "(an AUC for a class absent from the split) are `null` and named in `*_undefined`."
        )
    return (
        "`metrics.json` holds the test-split metrics of the shared evaluator (`s4mi_monai.metrics.segmentation_metrics`): "
        "foreground IoU and Dice pooled over the split (`iou_pooled`, `dice_pooled`) and averaged per image "
        "(`iou_per_image_mean`, `dice_per_image_mean`). Images whose ground truth is empty are counted (`n_empty_gt`) and scored "
        "separately (`empty_gt_correct_rate`), not silently scored 0."
    )


def readme(spec: BundleSpec, existing: str = "") -> str:
    """The README text for ``spec``, keeping the measured results of ``existing``."""
    name = spec.name
    root = f"bundles/{name}"
    prepare = {
        "isic": "s4mi prepare isic2017 --root /data/ISIC-2017 --out datalists/isic2017.json",
        "dermofit": "s4mi prepare dermofit --root /data/Dermofit --out datalists/dermofit.json",
        "dermatomyositis": "s4mi prepare csv --csv /data/dm/labels.csv --multi_label --label_column phenotypes --patient_column patient --tile_size 480 --out datalists/dermatomyositis.json",
    }[spec.profile.name]
    datalist = prepare.split("--out ")[1]
    paper = "--backbone resnet50 --image_size 224 --max_epochs 50" if spec.task == "classification" else "--image_size 224 --max_epochs 50"
    inference_output = "one `predictions.csv` with the class probabilities and the predicted class per image" if spec.task == "classification" else (
        "`<image>_mask.png` (0/255) and `<image>_overlay.png` per image, at the image's own size"
        + (" (whole slides are rescaled like the training tiles and predicted with a sliding window)" if spec.profile.slide_scale else " (sliding-window inference over the resized image)")
    )
    return f"""# {name}

{spec.description}, on {spec.profile.title}. Part of [s4mi-monai](../../../README.md).

## Quick start (demo data, about 2 minutes on 2 CPU cores)

From the repository root (or from inside this folder, with `configs/...` paths):

```bash
python -m monai.bundle run training --config_file {root}/configs/train.json
```

With no `--datalist`, the bundle trains on the generated demo data (made on first use) at a demo size
(64 px{', ResNet-18' if spec.task == 'classification' else ''}, a few epochs). The run ids `initialize`, `run` and `finalize` work as well
(`python -m monai.bundle run --config_file ...`).

## Data

Prepare a dataset once; every bundle and method then reads the same splits and labeled subsets:

```bash
{prepare}
```

`s4mi prepare` checks every file before anything trains (missing, corrupt or truncated images, mask sizes
and levels, unknown labels) and lists all problems at once.

## Method

{_method(spec)}

## Commands

```bash
# train at the paper setting on your data (10 % of the labels; any fraction works)
python -m monai.bundle run training --config_file {root}/configs/train.json \\
    --datalist {datalist} --label_fraction 0.1 {paper}

# a killed run resumes from its last epoch when the same command is run again
# evaluate the trained model on the test split (writes metrics.json)
python -m monai.bundle run evaluating --config_file {root}/configs/evaluate.json --datalist {datalist}

# predict on a folder of new images (PNG, JPEG, TIFF, any size); unreadable files are reported and skipped
python -m monai.bundle run --config_file {root}/configs/inference.json --input_dir new_images --output_dir predictions

# TorchScript export and checks
python -m monai.bundle ckpt_export network_def --filepath {root}/models/model.ts --ckpt_file {root}/models/model.pt \\
    --meta_file {root}/configs/metadata.json --config_file {root}/configs/inference.json --bundle_root {root}
python -m monai.bundle verify_metadata --meta_file {root}/configs/metadata.json --filepath s4mi_monai/resources/meta_schema.json
python -m monai.bundle verify_net_in_out network_def --meta_file {root}/configs/metadata.json --config_file {root}/configs/inference.json --bundle_root {root}
```

Overrides: `--datalist FILE`, `--dataset_dir DIR`, `--label_fraction F`, `--seed N`, `--max_epochs N`,
`--image_size N`, `--batch_size N`, `--device cpu|cuda`, `--amp true|false`, `--output_dir DIR`,
`--pretrained_weights PATH`{', `--backbone NAME`, `--loss_kind ce|bce|focal`, `--class_weighting inverse_frequency`' if spec.task == 'classification' else ', `--encoder resnet18|resnet34|resnet50`'}.

## Outputs

In `--output_dir` (default `{root}/models/`): `model.pt` (the selected weights, a plain state dict for
`torch.load(..., weights_only=True)`), `model_info.json` (what inference needs to rebuild the network),
`metrics.json` (test metrics, the validation metric used for selection and the run's settings),
`history.json` and `curves.png` (training loss and validation metrics per epoch), `runs/` (TensorBoard),
and `checkpoint.pt` while a run is unfinished (deleted when it completes).

Inference writes {inference_output}.

## Metrics

{_metrics(spec)}

## Results

{RESULTS_START}
{_kept_results(existing)}
{RESULTS_END}

## MONAI Label

`configs/inference.json` defines `network_def`, `preprocessing`, `postprocessing`, `inferer` and
`device`, reads no `_meta_` and returns plain tensors, as MONAI Label's `BundleInferTask` expects.

## Limitations

Research use only; not a medical device. The demo data are synthetic and say nothing about clinical
performance.

## References

- Singh et al., "Shifting to Machine Supervision: annotation-efficient semi and self-supervised learning for
  automatic medical image segmentation and classification", Scientific Reports 2024.
"""
