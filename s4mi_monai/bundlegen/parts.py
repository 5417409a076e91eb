"""Config sections that several bundle families share, each built by a function with explicit parameters.

Objects that one training owns (its network, optimizer, ``train`` / ``validate`` / ``test`` sections, ...) are
named through a :class:`Scope`: at the config root for a single training (``@network``), inside a section for
each of CASS's two fine-tunings (``@finetune_cnn#network``). That is the only way builders name such objects.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4mi_monai.bundlegen.registry import BundleSpec
from s4mi_monai.data.profiles import DatasetProfile

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMPORTS = ["$import os", "$import re", "$import sys", "$import torch", "$import monai", "$from importlib import import_module as load_module", "$from importlib.util import find_spec"]
"""Registry imports only: our code loads through the ``s4mi_monai`` item (:func:`identity`), after the path is known."""
NETWORK_KNOBS = {"classification": ("backbone",), "segmentation": ("architecture", "encoder", "transformer_embed_dim")}
"""The knobs that decide the network: written to ``model_info.json``, read back by evaluation and inference."""

TRAINING_RUN_SETTINGS = ("n_labeled_training_items", "epochs", "iterations_per_epoch", "total_steps")
"""Settings that only a training run has (``None`` in an evaluation's ``metrics.json``)."""


@dataclass(frozen=True)
class Scope:
    """Where one training's own objects live: the config root (``section=""``) or a section such as ``finetune_cnn``."""

    section: str = ""

    def ref(self, key: str) -> str:
        """A reference to ``key`` in this scope: ``@key`` at the root, ``@section#key`` inside a section."""
        return f"@{self.section}#{key}" if self.section else f"@{key}"


ROOT = Scope()


CODE_MISSING = (
    "this bundle needs the s4mi_monai code: its folder has no scripts/s4mi_monai and the package is not installed. "
    "Bundles are shared with `s4mi pack BUNDLE --out FILE.zip`, which puts the code in scripts/; or install s4mi-monai"
)


def identity(spec: BundleSpec, imports: list[str] | None = None) -> dict[str, Any]:
    """Imports, the bundle's name, where it lives, and our code, loaded from the bundle's own ``scripts/`` folder first.

    Nothing here needs our package, so a bundle folder shared without it (``s4mi pack``) finds itself and its code:

    * ``bundle_root``: the folder above the ``configs/`` of a ``--config_file`` on the command line, else the working
      directory or ``bundles/<name>`` below it (MONAI Label sets it itself);
    * ``s4mi_monai``: the package from ``<bundle_root>/scripts`` when the bundle carries it, else the installed one.
      Configs reach our code only through ``@s4mi_monai``, never through ``$import``: MONAI runs imports before any
      other item, so they could not use the bundle's folder.
    """
    config_files = (
        "$[arg.split('=', 1)[-1] for i, arg in enumerate(sys.argv) "
        "if arg.startswith('--config_file=') or (i > 0 and sys.argv[i - 1] == '--config_file')]"
    )
    candidates = (
        "$[os.path.dirname(os.path.dirname(os.path.abspath(path))) "
        "for path in re.findall(r'[^\\[\\]\\'\", ]+\\.(?:json|yaml|yml)', ' '.join(@config_file_arguments))] "
        "+ [os.getcwd(), os.path.join(os.getcwd(), 'bundles', @bundle_name)]"
    )
    on_path = "(os.path.isdir(os.path.join(@scripts_dir, 's4mi_monai')) and @scripts_dir not in sys.path and sys.path.insert(0, @scripts_dir))"
    return {
        "imports": IMPORTS + (imports or []),
        "bundle_name": spec.name,
        "config_file_arguments": config_files,
        "bundle_root": f"$next((root for root in {candidates[1:]} if os.path.isfile(os.path.join(root, 'configs', 'metadata.json'))), os.getcwd())",
        "scripts_dir": "$os.path.join(@bundle_root, 'scripts')",
        "s4mi_monai": f"$load_module('s4mi_monai') if {on_path} or find_spec('s4mi_monai') else exec({f'raise ModuleNotFoundError({CODE_MISSING!r})'!r})",
    }


def network_knobs(spec: BundleSpec) -> dict[str, Any]:
    """The knobs of the supervised network of ``spec``'s task, and its ImageNet weights."""
    if spec.task == "classification":
        knobs: dict[str, Any] = {"backbone": "$'resnet18' if @demo else 'resnet50'"}
    else:
        knobs = {"architecture": "resnet_unet", "encoder": "resnet34", "transformer_embed_dim": "$24 if @demo else 96"}
    return {**knobs, "pretrained_weights": None}


def run_knobs(
    spec: BundleSpec, *, label_fraction: float = 1.0, max_epochs: str | None = None, network: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Knobs of training and evaluation; demo-sized when no datalist is given, the paper setting otherwise.

    ``network`` replaces the supervised network's knobs (:func:`network_knobs`) for methods with their own networks.
    """
    classification = spec.task == "classification"
    default_epochs = "$6 if @demo else 50" if classification else "$8 if @demo else 50"
    return {
        "datalist": None,
        "demo_datalist": spec.profile.demo_datalist,  # what runs without --datalist
        "dataset_dir": None,
        "label_fraction": label_fraction,
        "seed": 0,
        "demo": "$@datalist is None",
        "max_epochs": max_epochs or default_epochs,
        "max_iterations": None,  # optimiser steps instead of max_epochs: equal steps at every label fraction
        "image_size": "$64 if @demo else 224",
        "batch_size": 16,
        **(network_knobs(spec) if network is None else network),
        "learning_rate": 3.6e-4,
        "weight_decay": 1e-5,
        **(
            {"loss_kind": "auto", "class_weighting": None, "selection_metric": "f1_macro"}
            if classification
            else {"selection_metric": "iou_per_image_mean"}
        ),
        "red_normalization": "$@data['red_normalization']",  # a dataset fact that the datalist carries
        "num_workers": "$0 if @demo else min(8, os.cpu_count() or 1)",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "amp": "$torch.cuda.is_available()",
        "output_dir": "$os.path.join(@bundle_root, 'models')",
        "val_interval": 1,
        "checkpoint_interval_s": 60,  # resume state written at most once a minute: tiny epochs are not slowed by saves
    }


def data_and_device() -> dict[str, Any]:
    """The datalist (the demo one without ``--datalist``), its classes, and the device."""
    return {
        "data": "$@s4mi_monai.bundle.open_datalist(@datalist, @demo_datalist, @dataset_dir)",
        "classes": "$@data['classes']",
        "multi_label": "$@data['multi_label']",
        "torch_device": "$torch.device(@device)",
        "use_amp": "$@s4mi_monai.bundle.as_bool(@amp) and @torch_device.type == 'cuda'",
    }


def output_paths(scope: Scope = ROOT) -> dict[str, str]:
    """The selected model, the resume checkpoint and the test metrics, in the scope's ``output_dir``."""
    output_dir = scope.ref("output_dir")
    return {
        "model_path": f"$os.path.join({output_dir}, 'model.pt')",
        "checkpoint_path": f"$os.path.join({output_dir}, 'checkpoint.pt')",
        "metrics_path": f"$os.path.join({output_dir}, 'metrics.json')",
    }


def network(spec: BundleSpec, scope: Scope = ROOT, pretrained_weights: str | None = "@pretrained_weights") -> dict[str, Any]:
    """``network_def`` and ``network``: the classifier or the supervised segmentation network."""
    if spec.task == "classification":
        network_def = {
            "_target_": "$@s4mi_monai.networks.Classifier",
            "backbone": scope.ref("backbone"),
            "num_classes": "$len(@classes)",
            "image_size": "@image_size",
            "pretrained_weights": pretrained_weights,
        }
    else:
        network_def = {
            "_target_": "$@s4mi_monai.networks.build_segmentation_network",
            "architecture": "@architecture",
            "in_channels": 3,
            "out_channels": 2,
            "encoder": "@encoder",
            "embed_dim": "@transformer_embed_dim",
            "pretrained_weights": pretrained_weights,
        }
    return {"network_def": network_def, "network": f"${scope.ref('network_def')}.to(@torch_device)"}


def loading(spec: BundleSpec, with_label: bool) -> list[dict[str, Any]]:
    """Read images as RGB (and masks as 0/1), channel first, to [0, 1]."""
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "$@s4mi_monai.transforms.rgb_reader()", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": -1},
    ]
    if with_label and spec.task == "segmentation":
        steps += [
            {"_target_": "LoadImaged", "keys": "label", "reader": "$@s4mi_monai.transforms.mask_reader()", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "label", "channel_dim": "no_channel"},
        ]
    return steps


def uint8_images(size: str) -> list[dict[str, Any]]:
    """Decode each image once as RGB, channel first, resized to ``size`` x ``size`` and cached as uint8: label-free
    training augments whole batches on the training device (DINO, CASS and PiCIE views)."""
    return [
        {"_target_": "LoadImaged", "keys": "image", "reader": "$@s4mi_monai.transforms.rgb_reader()", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": -1},
        {"_target_": "Resized", "keys": "image", "spatial_size": [size, size], "mode": "area"},
        {"_target_": "EnsureTyped", "keys": "image", "data_type": "tensor", "dtype": "$torch.uint8", "track_meta": False},
    ]


SCALE_TO_UNIT = {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0, "clip": True}


def preprocessing(spec: BundleSpec, with_label: bool) -> list[dict[str, Any]]:
    """Deterministic steps (cached by CacheDataset): load, resize to the training size, scale to [0, 1]."""
    segmentation_label = with_label and spec.task == "segmentation"
    keys = ["image", "label"] if segmentation_label else "image"
    steps = loading(spec, with_label) + [
        {
            "_target_": "Resized",
            "keys": keys,
            "spatial_size": ["@image_size", "@image_size"],
            "mode": ["area", "nearest"] if segmentation_label else "area",
        },
        dict(SCALE_TO_UNIT),
    ]
    if segmentation_label:
        steps.append({"_target_": "$@s4mi_monai.transforms.BinarizeMaskd", "keys": "label"})
    elif with_label:
        steps.append(
            {"_target_": "EnsureTyped", "keys": "label", "data_type": "tensor", "dtype": "$torch.float32 if @multi_label else torch.long"}
        )
    return steps


def augmentation(with_mask: bool) -> list[dict[str, Any]]:
    """Rotation and flips (drawn once for image and mask together when ``with_mask``); colour jitter on the image only."""
    keys = ["image", "label"] if with_mask else "image"
    modes = ["bilinear", "nearest"] if with_mask else "bilinear"
    return [
        {
            "_target_": "RandRotated",
            "keys": keys,
            "range_x": round(math.radians(15), 6),
            "prob": 0.5,
            "mode": modes,
            "padding_mode": "zeros",
        },
        {"_target_": "RandFlipd", "keys": keys, "spatial_axis": 0, "prob": 0.5},
        {"_target_": "RandFlipd", "keys": keys, "spatial_axis": 1, "prob": 0.5},
        {
            "_target_": "$@s4mi_monai.transforms.RandColorJitterd",
            "keys": "image",
            "brightness": 0.2,
            "contrast": 0.2,
            "saturation": 0.2,
            "hue": 0.02,
            "prob": 0.8,
        },
    ]


def normalization() -> list[dict[str, Any]]:
    """Applied after augmentation at training time and after preprocessing everywhere else."""
    return [
        {
            "_target_": "$@s4mi_monai.transforms.RedChannelNormalized",
            "keys": "image",
            "_disabled_": "$not @s4mi_monai.bundle.as_bool(@red_normalization)",
        },
        {"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": IMAGENET_MEAN, "divisor": IMAGENET_STD, "channel_wise": True},
    ]


def items(spec: BundleSpec, split: str, fraction: str = "None") -> str:
    """The labeled items of a split (``fraction``: a reference to the labeled fraction, for training)."""
    return f"$@s4mi_monai.bundle.{spec.task}_items(@data, '{split}', {fraction})"


def postprocessing(spec: BundleSpec) -> dict[str, Any]:
    """Probabilities (classification) or the argmax mask (segmentation)."""
    if spec.task == "classification":
        activation = {"_target_": "Activationsd", "keys": "pred", "softmax": "$not @multi_label", "sigmoid": "@multi_label"}
    else:
        activation = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
    return {"_target_": "Compose", "transforms": [activation]}


def metric(spec: BundleSpec, selected: str) -> dict[str, Any]:
    """The shared evaluator's metric; ``selected`` is the value the evaluator reports as its key metric."""
    common = {"metric": selected, "save_path": None, "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}
    if spec.task == "classification":
        return {
            "_target_": "$@s4mi_monai.metrics.ClassificationMetric",
            "class_names": "@classes",
            "multi_label": "@multi_label",
            "challenge": "$@data['challenge']",
            **common,
        }
    return {"_target_": "$@s4mi_monai.metrics.SegmentationMetric", "num_classes": 2, **common}


def evaluation_definitions(spec: BundleSpec) -> dict[str, Any]:
    """``postprocessing`` shared by every evaluator, and the ``metric`` that each evaluator copies (``%metric``).

    The postprocessing is stateless, so one object serves all; each evaluator needs its own metric object, so the
    metric is a definition copied with MONAI's ``%`` macro.
    """
    return {"postprocessing": postprocessing(spec), "metric": metric(spec, "@selection_metric")}


def evaluation_data(
    spec: BundleSpec, split: str, section: str, transform: str = "$monai.transforms.Compose(@preprocessing + @normalization)"
) -> dict[str, Any]:
    """The dataset and loader of a split scored at evaluation (``section``: the reference of where they live)."""
    return {
        "dataset": {
            "_target_": "CacheDataset",
            "data": items(spec, split),
            "transform": transform,
            "cache_rate": 1.0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": f"{section}#dataset",
            "batch_size": "@batch_size",
            "shuffle": False,
            "num_workers": "@num_workers",
        },
    }


def evaluation_section(
    spec: BundleSpec, split: str, section: str, network: str, handlers: list[Any], data: str | None = None
) -> dict[str, Any]:
    """A validation or test section (``section``: its reference, e.g. ``@validate``) scoring ``network`` on ``split``.

    ``data``: the reference of a section that already holds the split's loader (two networks scored on one split);
    by default the section holds its own. Needs :func:`evaluation_definitions` at the config root.
    """
    metric_name = f"{'validate' if split == 'validation' else 'test'}_metric"
    own_data = data is None
    loader = f"{section if own_data else data}#dataloader"
    return {
        **(evaluation_data(spec, split, section) if own_data else {}),
        "postprocessing": "@postprocessing",  # MONAI's workflow properties look for it here
        "key_metric": {metric_name: "%metric"},
        "handlers": handlers,
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@torch_device",
            "val_data_loader": loader,
            "network": network,
            "postprocessing": f"{section}#postprocessing",
            "key_val_metric": f"{section}#key_metric",
            "val_handlers": f"{section}#handlers",
            "amp": "@use_amp",
        },
    }


def loss(spec: BundleSpec, scope: Scope = ROOT) -> Any:
    """Cross-entropy family (optionally class-weighted from the labeled training items) or 1/2 (Dice + CE)."""
    if spec.task == "classification":
        return (
            "$@s4mi_monai.losses.classification_loss(@multi_label, @loss_kind, "
            f"@s4mi_monai.bundle.class_weights({scope.ref('train#dataset')}.data, len(@classes), @multi_label, @class_weighting))"
            ".to(@torch_device)"
        )
    return {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True, "lambda_dice": 0.5, "lambda_ce": 0.5}


def settings(spec: BundleSpec, scope: Scope = ROOT) -> dict[str, Any]:
    """Every knob of a run, written to ``metrics.json``."""
    values = {
        "bundle": "@bundle_name",
        "datalist": "$@data['datalist_path']",
        "label_fraction": "@label_fraction",
        "selection_metric": "@selection_metric",
        "n_labeled_training_items": f"$len({scope.ref('train#dataset')}.data)",
        "seed": "@seed",
        "max_epochs": "@max_epochs",
        "max_iterations": "@max_iterations",
        "epochs": scope.ref("epochs"),
        "iterations_per_epoch": scope.ref("iterations_per_epoch"),
        "total_steps": f"${scope.ref('epochs')} * {scope.ref('iterations_per_epoch')}",
        "image_size": "@image_size",
        "batch_size": "@batch_size",
        "learning_rate": "@learning_rate",
        "weight_decay": "@weight_decay",
        "pretrained_weights": "@pretrained_weights",
        "red_normalization": "$@s4mi_monai.bundle.as_bool(@red_normalization)",
        "device": "$str(@torch_device)",
        "amp": "@use_amp",
    }
    values.update(
        {"backbone": scope.ref("backbone"), "loss": "@loss_kind", "class_weighting": "@class_weighting"}
        if spec.task == "classification"
        else {knob: f"@{knob}" for knob in NETWORK_KNOBS["segmentation"]}
    )
    return values


def model_info(spec: BundleSpec, scope: Scope = ROOT) -> dict[str, Any]:
    """What inference needs to rebuild the network, written beside the weights."""
    info = {
        "task": spec.task,
        "classes": "@classes",
        "multi_label": "@multi_label",
        "image_size": "@image_size",
        "red_normalization": "$@s4mi_monai.bundle.as_bool(@red_normalization)",
    }
    if spec.task == "classification":
        info["backbone"] = scope.ref("backbone")
    else:
        info.update({knob: f"@{knob}" for knob in NETWORK_KNOBS["segmentation"]})
    return info


def logging_handlers(log_dir: str, tag_name: str, loss_output: str) -> list[dict[str, Any]]:
    """The training loss to TensorBoard (``loss_output`` picks it from the trainer's output) and a progress bar."""
    return [
        {"_target_": "TensorBoardStatsHandler", "log_dir": log_dir, "tag_name": tag_name, "output_transform": loss_output},
        {"_target_": "ignite.handlers.ProgressBar", "persist": False},
    ]


def random_state(*augmentations: str) -> dict[str, Any]:
    """The checkpointed random state of a training whose random transforms run in ``augmentations`` (config refs to datasets)."""
    return {"_target_": "$@s4mi_monai.engines.TrainingRandomState", "augmentations": list(augmentations)}


def run_handlers(history: str, checkpoint_path: str, resume_objects: str) -> list[Any]:
    """Attached just before a trainer runs: the epoch history, resume from ``checkpoint_path`` when it exists, and
    the end-of-epoch checkpoint of ``resume_objects`` (deleted when the run completes)."""
    return [
        history,
        {
            "_target_": "CheckpointLoader",
            "_disabled_": f"$not os.path.exists({checkpoint_path})",
            "load_path": checkpoint_path,
            "load_dict": f"${resume_objects}",
            "map_location": "cpu",
        },
        {
            "_target_": "$@s4mi_monai.handlers.TrainingCheckpoint",
            "save_path": checkpoint_path,
            "save_dict": f"${resume_objects}",
            "min_interval_s": "@checkpoint_interval_s",
        },
    ]


def read_model_info(defaults: dict[str, Any]) -> dict[str, Any]:
    """The ``model_info`` item of evaluation and inference: what training wrote, else ``defaults``."""
    return {"_target_": "$@s4mi_monai.bundle.read_model_info", "model_path": "@model_path", "defaults": defaults}


def demo_classes(profile: DatasetProfile) -> list[str]:
    """The class names of the dataset's committed demo datalist."""
    datalist = json.loads((REPO_ROOT / "datalists" / profile.demo_datalist).read_text())
    return datalist["classes"]


def slide_run(spec: BundleSpec) -> dict[str, Any]:
    """``run slides``: whole slides and large images at native resolution, read by regions (:mod:`s4mi_monai.wsi`).

    Windows cover ``slide_window`` pixels of the chosen level: the tile size the training images were cut at
    for slide datasets, else the network's input size. Segmentation blends overlapping windows into masks;
    classification scores each window with tissue and the slide by ``slide_rule``.
    """
    window = round(224 / spec.profile.slide_scale) if spec.profile.slide_scale else "@image_size"
    common = {"slide_level": None, "slide_mpp": None, "slide_window": window}
    load = "$@s4mi_monai.bundle.load_checkpoints(@handlers)"
    where = "window=@slide_window, level=@slide_level, mpp=@slide_mpp"
    if spec.task == "classification":
        return {
            **common,
            "slide_batch_size": 16,
            "min_tissue": 0.25,
            "slide_rule": "mean",
            "slides": [
                load,
                "$@s4mi_monai.wsi.classify_slides(@input_dir, @network, @preprocessing, @output_dir, @classes, @image_size, @torch_device, "
                f"multi_label=@multi_label, {where}, batch_size=@slide_batch_size, min_tissue=@min_tissue, rule=@slide_rule)",
            ],
        }
    foreground = "cells" if spec.profile.slide_scale else "lesion"
    return {
        "segment_classes": ["background", foreground],
        **common,
        "slide_overlap": 0.25,
        "slide_batch_size": 4,
        "skip_blank": True,
        "slides": [
            load,
            "$@s4mi_monai.wsi.segment_slides(@input_dir, @network, @preprocessing, @output_dir, @segment_classes, @image_size, @torch_device, "
            f"{where}, overlap=@slide_overlap, batch_size=@slide_batch_size, skip_blank=@s4mi_monai.bundle.as_bool(@skip_blank))",
        ],
    }
