"""Generate every bundle's configs from one set of templates, so twenty bundles never drift apart.

Each generated JSON file is explicit and self-contained (a bundle folder can be handed to a
collaborator on its own); what the bundles share lives here, once. ``s4mi bundles`` rewrites them and
a test checks that the committed files equal the generated ones.

A config reads top-down like the MONAI model-zoo bundles: imports, the bundle's identity, the knobs a
user overrides on the command line, data, network, loss and optimizer, transforms, then the
``train`` / ``validate`` / ``test`` sections and the run ids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4mi_monai import __version__
from s4mi_monai.data.profiles import PROFILES, DatasetProfile

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMPORTS = [
    "$import os",
    "$import torch",
    "$import monai",
    "$import s4mi_monai",
    "$import s4mi_monai.bundle",
    "$import s4mi_monai.losses",
    "$import s4mi_monai.transforms",
]
RUN_IDS = {"train.json": "training", "evaluate.json": "evaluating", "inference.json": "inferring"}


@dataclass(frozen=True)
class BundleSpec:
    """One bundle: a method applied to a dataset."""

    method: str  # e.g. "supervised_cls"
    task: str  # "classification" | "segmentation"
    profile: DatasetProfile
    description: str

    @property
    def name(self) -> str:
        return f"{self.method}_{self.profile.name}"

    @property
    def self_supervised(self) -> bool:
        return self.method in SELF_SUPERVISED_METHODS

    @property
    def semi_supervised(self) -> bool:
        return self.method in SEMI_SUPERVISED_METHODS


SELF_SUPERVISED_METHODS = ("dino", "cass")
SEMI_SUPERVISED_METHODS = ("crossteach_seg",)


def _spec_list() -> list[BundleSpec]:
    specs = []
    for profile in PROFILES.values():
        specs.append(
            BundleSpec(
                "supervised_cls", "classification", profile, "Supervised ImageNet-transfer classification baseline (ResNet-50 or ViT-B/16)"
            )
        )
        specs.append(
            BundleSpec(
                "supervised_seg",
                "segmentation",
                profile,
                "Supervised U-Net with a ResNet-34 encoder (the DEDL baseline) or the cross-teaching networks, 1/2 (Dice + CE)",
            )
        )
    for profile in PROFILES.values():
        specs.append(
            BundleSpec("dino", "classification", profile, "DINO self-supervised pretraining, then fine-tuning on a fraction of the labels")
        )
        specs.append(
            BundleSpec(
                "cass", "classification", profile, "CASS self-supervised pretraining (ResNet-50 + ViT-B/16), then fine-tuning of each"
            )
        )
    for profile in PROFILES.values():
        specs.append(
            BundleSpec(
                "crossteach_seg",
                "segmentation",
                profile,
                "Semi-supervised cross teaching between a CNN U-Net and a Swin-UNet, on a fraction of the masks",
            )
        )
    return specs


BUNDLES = {spec.name: spec for spec in _spec_list()}


# ----------------------------------------------------------------------------------------- shared parts


def _identity(spec: BundleSpec) -> dict[str, Any]:
    return {
        "imports": IMPORTS + (["$import s4mi_monai.networks"] if spec.task == "segmentation" else []),
        "bundle_name": spec.name,
        "bundle_root": "$s4mi_monai.bundle.locate_bundle(@bundle_name)",
    }


def _run_knobs(spec: BundleSpec) -> dict[str, Any]:
    """Knobs of training and evaluation; demo-sized when no datalist is given, the paper setting otherwise."""
    classification = spec.task == "classification"
    return {
        "datalist": None,
        "dataset_dir": None,
        "label_fraction": 1.0,
        "seed": 0,
        "demo": "$@datalist is None",
        "max_epochs": "$6 if @demo else 50" if classification else "$8 if @demo else 50",
        "max_iterations": None,  # optimiser steps instead of max_epochs: equal steps at every label fraction
        "image_size": "$64 if @demo else 224",
        "batch_size": 16,
        **(
            {"backbone": "$'resnet18' if @demo else 'resnet50'"}
            if classification
            else {"architecture": "resnet_unet", "encoder": "resnet34", "transformer_embed_dim": "$24 if @demo else 96"}
        ),
        "pretrained_weights": None,
        "learning_rate": 3.6e-4,
        "weight_decay": 1e-5,
        **(
            {"loss_kind": "auto", "class_weighting": None, "selection_metric": "f1_macro"}
            if classification
            else {"selection_metric": "iou_per_image_mean"}
        ),
        "red_normalization": spec.profile.red_normalization,
        "num_workers": "$0 if @demo else min(8, os.cpu_count() or 1)",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "amp": "$torch.cuda.is_available()",
        "output_dir": "$os.path.join(@bundle_root, 'models')",
        "val_interval": 1,
    }


def _derived(spec: BundleSpec) -> dict[str, Any]:
    return {
        "data": f"$s4mi_monai.bundle.open_datalist(@datalist, '{spec.profile.demo_datalist}', @dataset_dir)",
        "classes": "$@data['classes']",
        "multi_label": "$@data['multi_label']",
        "torch_device": "$torch.device(@device)",
        "use_amp": "$s4mi_monai.bundle.as_bool(@amp) and @torch_device.type == 'cuda'",
        "model_path": "$os.path.join(@output_dir, 'model.pt')",
        "checkpoint_path": "$os.path.join(@output_dir, 'checkpoint.pt')",
        "metrics_path": "$os.path.join(@output_dir, 'metrics.json')",
    }


def _network(spec: BundleSpec, image_size: str = "@image_size") -> dict[str, Any]:
    if spec.task == "classification":
        network_def = {
            "_target_": "s4mi_monai.networks.Classifier",
            "backbone": "@backbone",
            "num_classes": "$len(@classes)",
            "image_size": image_size,
            "pretrained_weights": "@pretrained_weights",
        }
    else:
        network_def = {
            "_target_": "s4mi_monai.networks.build_segmentation_network",
            "architecture": "@architecture",
            "in_channels": 3,
            "out_channels": 2,
            "encoder": "@encoder",
            "embed_dim": "@transformer_embed_dim",
            "pretrained_weights": "@pretrained_weights",
        }
    return {"network_def": network_def, "network": "$@network_def.to(@torch_device)"}


def _loading(spec: BundleSpec, with_label: bool) -> list[dict[str, Any]]:
    """Read images as RGB (and masks as 0/1), channel first, to [0, 1]."""
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "$s4mi_monai.transforms.rgb_reader()", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": -1},
    ]
    if with_label and spec.task == "segmentation":
        steps += [
            {"_target_": "LoadImaged", "keys": "label", "reader": "$s4mi_monai.transforms.mask_reader()", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "label", "channel_dim": "no_channel"},
        ]
    return steps


def _preprocessing(spec: BundleSpec, with_label: bool) -> list[dict[str, Any]]:
    """Deterministic steps (cached by CacheDataset): load, resize to the training size, scale to [0, 1]."""
    segmentation_label = with_label and spec.task == "segmentation"
    keys = ["image", "label"] if segmentation_label else "image"
    steps = _loading(spec, with_label) + [
        {
            "_target_": "Resized",
            "keys": keys,
            "spatial_size": ["@image_size", "@image_size"],
            "mode": ["area", "nearest"] if segmentation_label else "area",
        },
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
    ]
    if segmentation_label:
        steps.append({"_target_": "s4mi_monai.transforms.BinarizeMaskd", "keys": "label"})
    elif with_label:
        steps.append(
            {"_target_": "EnsureTyped", "keys": "label", "data_type": "tensor", "dtype": "$torch.float32 if @multi_label else torch.long"}
        )
    return steps


def _augmentation(spec: BundleSpec) -> list[dict[str, Any]]:
    """Rotation and flips drawn once for image and mask together; colour jitter on the image only."""
    keys = ["image", "label"] if spec.task == "segmentation" else "image"
    modes = ["bilinear", "nearest"] if spec.task == "segmentation" else "bilinear"
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
            "_target_": "s4mi_monai.transforms.RandColorJitterd",
            "keys": "image",
            "brightness": 0.2,
            "contrast": 0.2,
            "saturation": 0.2,
            "hue": 0.02,
            "prob": 0.8,
        },
    ]


def _normalization() -> list[dict[str, Any]]:
    """Applied after augmentation at training time and after preprocessing everywhere else."""
    return [
        {
            "_target_": "s4mi_monai.transforms.RedChannelNormalized",
            "keys": "image",
            "_disabled_": "$not s4mi_monai.bundle.as_bool(@red_normalization)",
        },
        {"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": IMAGENET_MEAN, "divisor": IMAGENET_STD, "channel_wise": True},
    ]


def _items(spec: BundleSpec, split: str, fraction: str = "None") -> str:
    return f"$s4mi_monai.bundle.{spec.task}_items(@data, '{split}', {fraction})"


def _postprocessing(spec: BundleSpec) -> dict[str, Any]:
    if spec.task == "classification":
        activation = {"_target_": "Activationsd", "keys": "pred", "softmax": "$not @multi_label", "sigmoid": "@multi_label"}
    else:
        activation = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
    return {"_target_": "Compose", "transforms": [activation]}


def _metric(spec: BundleSpec, metric: str, save_path: str | None = None) -> dict[str, Any]:
    common = {"metric": metric, "save_path": save_path, "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}
    if spec.task == "classification":
        challenge = f"'{spec.profile.challenge}'" if spec.profile.challenge else "None"
        return {
            "_target_": "s4mi_monai.metrics.ClassificationMetric",
            "class_names": "@classes",
            "multi_label": "@multi_label",
            "challenge": f"${challenge}",
            **common,
        }
    return {"_target_": "s4mi_monai.metrics.SegmentationMetric", "num_classes": 2, **common}


def _evaluation_section(spec: BundleSpec, split: str, handlers: list[dict[str, Any]], save_path: str | None) -> dict[str, Any]:
    section = f"{'validate' if split == 'validation' else 'test'}"
    return {
        "dataset": {
            "_target_": "CacheDataset",
            "data": _items(spec, split),
            "transform": "$monai.transforms.Compose(@preprocessing + @normalization)",
            "cache_rate": 1.0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": f"@{section}#dataset",
            "batch_size": "@batch_size",
            "shuffle": False,
            "num_workers": "@num_workers",
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": _postprocessing(spec),
        "key_metric": {f"{section}_metric": _metric(spec, "@selection_metric", save_path)},
        "handlers": handlers,
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@torch_device",
            "val_data_loader": f"@{section}#dataloader",
            "network": "@network",
            "inferer": f"@{section}#inferer",
            "postprocessing": f"@{section}#postprocessing",
            "key_val_metric": f"@{section}#key_metric",
            "val_handlers": f"@{section}#handlers",
            "amp": "@use_amp",
        },
    }


def _loss(spec: BundleSpec) -> Any:
    if spec.task == "classification":
        return (
            "$s4mi_monai.losses.classification_loss(@multi_label, @loss_kind, "
            "s4mi_monai.bundle.class_weights(@train#dataset.data, len(@classes), @multi_label, @class_weighting)).to(@torch_device)"
        )
    return {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True, "lambda_dice": 0.5, "lambda_ce": 0.5}


NETWORK_KNOBS = {"classification": ("backbone",), "segmentation": ("architecture", "encoder", "transformer_embed_dim")}
"""The knobs that decide the network: written to ``model_info.json``, read back by evaluation and inference."""


TRAINING_RUN_SETTINGS = ("n_labeled_training_items", "epochs", "iterations_per_epoch", "total_steps")
"""Settings that only a training run has (``None`` in an evaluation's ``metrics.json``)."""


def _settings(spec: BundleSpec) -> dict[str, Any]:
    settings = {
        "bundle": "@bundle_name",
        "datalist": "$@data['datalist_path']",
        "label_fraction": "@label_fraction",
        "selection_metric": "@selection_metric",
        "n_labeled_training_items": "$len(@train#dataset.data)",
        "seed": "@seed",
        "max_epochs": "@max_epochs",
        "max_iterations": "@max_iterations",
        "epochs": "@epochs",
        "iterations_per_epoch": "@iterations_per_epoch",
        "total_steps": "$@epochs * @iterations_per_epoch",
        "image_size": "@image_size",
        "batch_size": "@batch_size",
        "learning_rate": "@learning_rate",
        "weight_decay": "@weight_decay",
        "pretrained_weights": "@pretrained_weights",
        "red_normalization": "$s4mi_monai.bundle.as_bool(@red_normalization)",
        "device": "$str(@torch_device)",
        "amp": "@use_amp",
    }
    settings.update(
        {"backbone": "@backbone", "loss": "@loss_kind", "class_weighting": "@class_weighting"}
        if spec.task == "classification"
        else {knob: f"@{knob}" for knob in NETWORK_KNOBS["segmentation"]}
    )
    return settings


def _model_info(spec: BundleSpec) -> dict[str, Any]:
    info = {
        "task": spec.task,
        "classes": "@classes",
        "multi_label": "@multi_label",
        "image_size": "@image_size",
        "red_normalization": "$s4mi_monai.bundle.as_bool(@red_normalization)",
    }
    info.update({knob: f"@{knob}" for knob in NETWORK_KNOBS[spec.task]})
    return info


def logging_handlers(log_dir: str, tag_name: str, loss: str) -> list[dict[str, Any]]:
    """The training loss to TensorBoard (``loss`` picks it from the trainer's output) and a progress bar."""
    return [
        {"_target_": "TensorBoardStatsHandler", "log_dir": log_dir, "tag_name": tag_name, "output_transform": loss},
        {"_target_": "ignite.handlers.ProgressBar", "persist": False},
    ]


def run_handlers(history: str, checkpoint_path: str, resume_objects: str) -> list[Any]:
    """Attached just before a trainer runs: the epoch history, resume from ``checkpoint_path`` when it exists, and
    the per-epoch checkpoint of ``resume_objects`` (deleted when the run completes)."""
    return [
        history,
        {
            "_target_": "CheckpointLoader",
            "_disabled_": f"$not os.path.exists({checkpoint_path})",
            "load_path": checkpoint_path,
            "load_dict": f"${resume_objects}",
            "map_location": "cpu",
        },
        {"_target_": "s4mi_monai.handlers.TrainingCheckpoint", "save_path": checkpoint_path, "save_dict": f"${resume_objects}"},
    ]


# ----------------------------------------------------------------------------------------- configs


def train_config(spec: BundleSpec) -> dict[str, Any]:
    """``train.json``: train on the labeled fraction, select on validation, report on test."""
    training_fraction = "@label_fraction"
    config = {
        **_identity(spec),
        **_run_knobs(spec),
        **_derived(spec),
        **_network(spec),
        "loss": _loss(spec),
        "optimizer": {
            "_target_": "torch.optim.Adam",
            "params": "$@network.parameters()",
            "lr": "@learning_rate",
            "weight_decay": "@weight_decay",
        },
        "iterations_per_epoch": "$len(@train#dataloader)",
        "epochs": "$s4mi_monai.bundle.epochs_for_iterations(@max_iterations, @max_epochs, @iterations_per_epoch)",
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": "@optimizer",
            "T_max": "$@epochs * @iterations_per_epoch",
            "eta_min": 1e-6,
        },
        "preprocessing": _preprocessing(spec, with_label=True),
        "augmentation": _augmentation(spec),
        "normalization": _normalization(),
        "best_model": {"_target_": "s4mi_monai.handlers.BestModelSaver", "save_path": "@model_path", "network": "@network"},
        "random_state": {"_target_": "s4mi_monai.handlers.TorchRandomState"},
        "history": {
            "_target_": "s4mi_monai.handlers.EpochHistory",
            "output_dir": "@output_dir",
            "validator": "@validate#evaluator",
            "optimizer": "@optimizer",
            "best_saver": "@best_model",
        },
        "train": {
            "dataset": {
                "_target_": "CacheDataset",
                "data": _items(spec, "training", training_fraction),
                "transform": "$monai.transforms.Compose(@preprocessing + @augmentation + @normalization)",
                "cache_rate": 1.0,
                "progress": False,
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@train#dataset",
                "batch_size": "@batch_size",
                "shuffle": True,
                "num_workers": "@num_workers",
            },
            "inferer": {"_target_": "SimpleInferer"},
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": False, "epoch_level": False},
                {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "interval": "@val_interval", "epoch_level": True},
                *logging_handlers("$os.path.join(@output_dir, 'runs')", "train_loss", "$monai.handlers.from_engine(['loss'], first=True)"),
            ],
            "run_handlers": run_handlers("@history", "@checkpoint_path", "@resume_objects"),
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@torch_device",
                "max_epochs": "@epochs",
                "train_data_loader": "@train#dataloader",
                "network": "@network",
                "optimizer": "@optimizer",
                "loss_function": "@loss",
                "inferer": "@train#inferer",
                "amp": "@use_amp",
                "train_handlers": "@train#handlers",
            },
        },
        "resume_objects": {
            "trainer": "@train#trainer",
            "network": "@network",
            "optimizer": "@optimizer",
            "lr_scheduler": "@lr_scheduler",
            "best_model": "@best_model",
            "history": "@history",
            "random_state": "@random_state",
        },
        "validate": _evaluation_section(spec, "validation", ["@best_model"], None),
        "test": _evaluation_section(spec, "test", [], None),
        "settings": _settings(spec),
        "model_info": _model_info(spec),
        "initialize": [
            "$monai.utils.set_determinism(seed=@seed)",
            "$s4mi_monai.bundle.configure_logging()",
            *(["$s4mi_monai.networks.check_segmentation_architecture(@architecture, @image_size)"] if spec.task == "segmentation" else []),
        ],
        "run": [
            "$s4mi_monai.bundle.write_model_info(@output_dir, @model_info)",
            "$[handler.attach(@train#trainer) for handler in @train#run_handlers]",
            "$@train#trainer.run()",
            "$s4mi_monai.bundle.report_test_metrics(@test#evaluator, @network, @model_path, @metrics_path, @settings, @best_model)",
        ],
    }
    config["training"] = "%run"
    return config


def evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``evaluate.json``: score the trained model on the test split with the shared evaluator."""
    train = train_config(spec)
    keep = (
        "imports",
        "bundle_name",
        "bundle_root",
        *_run_knobs(spec),
        *_derived(spec),
        "network_def",
        "network",
        "preprocessing",
        "normalization",
    )
    knobs = NETWORK_KNOBS[spec.task]
    config = {}
    for key in keep:
        if key == "network_def":  # the network that training wrote beside the model (its knobs' defaults before training)
            defaults = {knob: train[knob] for knob in knobs}
            config["model_info"] = {"_target_": "s4mi_monai.bundle.read_model_info", "model_path": "@model_path", "defaults": defaults}
        config[key] = f"$@model_info['{key}']" if key in knobs else train[key]
    if spec.task == "classification":
        config["saliency_images"] = 0  # > 0: gradient saliency panels of that many test images
    if spec.method == "cass":
        config.update(
            {
                "branch": None,
                "model_path": "$os.path.join(@output_dir, *([@branch] if @branch else []), 'model.pt')",
                "metrics_path": "$os.path.join(os.path.dirname(@model_path), 'metrics.json')",
            }
        )
    config["test"] = _evaluation_section(spec, "test", [], None)
    config["settings"] = {**_settings(spec), **dict.fromkeys(TRAINING_RUN_SETTINGS)}
    config["initialize"] = train["initialize"]
    config["run"] = ["$s4mi_monai.bundle.report_test_metrics(@test#evaluator, @network, @model_path, @metrics_path, @settings)"]
    if spec.task == "classification":
        config["imports"] = [*config["imports"], "$import s4mi_monai.visualize"]
        config["run"].append(
            "$s4mi_monai.visualize.write_item_saliency(@network, s4mi_monai.bundle.classification_items(@data, 'test', None), "
            "monai.transforms.Compose(@preprocessing + @normalization), @classes, @multi_label, "
            "os.path.join(os.path.dirname(@metrics_path), 'saliency'), @saliency_images)"
        )
    config["evaluating"] = "%run"
    return config


def inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``inference.json``: predict on a folder of new images (MONAI Label reads this file)."""
    profile = spec.profile
    defaults = {
        "classes": _demo_classes(profile),
        "multi_label": profile.multi_label,
        "image_size": 64,
        "red_normalization": profile.red_normalization,
    }
    defaults.update(
        {"backbone": "resnet18"}
        if spec.task == "classification"
        else {"architecture": "resnet_unet", "encoder": "resnet34", "transformer_embed_dim": 24}
    )
    config: dict[str, Any] = {
        **_identity(spec),
        "input_dir": None,
        "dataset_dir": "@input_dir",
        "output_dir": "$os.path.join(@bundle_root, 'predictions')",
        "model_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "torch_device": "$torch.device(@device)",
        "model_info": {"_target_": "s4mi_monai.bundle.read_model_info", "model_path": "@model_path", "defaults": defaults},
        "classes": "$@model_info['classes']",
        "multi_label": "$@model_info['multi_label']",
        "image_size": "$@model_info['image_size']",
        "red_normalization": "$@model_info['red_normalization']",
        "pretrained_weights": None,
    }
    config.update({knob: f"$@model_info['{knob}']" for knob in NETWORK_KNOBS[spec.task]})
    config.update(_network(spec))
    resize = _inference_resize(spec)
    config["preprocessing"] = {
        "_target_": "Compose",
        "transforms": _loading(spec, with_label=False)
        + [
            resize,
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
        ]
        + _normalization(),
    }
    config["dataset"] = {"_target_": "Dataset", "data": "$s4mi_monai.bundle.image_files(@input_dir)", "transform": "@preprocessing"}
    config["dataloader"] = {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0}
    if spec.task == "classification":
        config["inferer"] = {"_target_": "SimpleInferer"}
        config["postprocessing"] = {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": "$not @multi_label", "sigmoid": "@multi_label"}],
        }
        writer = {
            "_target_": "s4mi_monai.handlers.ProbabilityCSVWriter",
            "output_path": "$os.path.join(@output_dir, 'predictions.csv')",
            "class_names": "@classes",
            "multi_label": "@multi_label",
        }
    else:
        config["inferer"] = {
            "_target_": "SlidingWindowInferer",
            "roi_size": ["@image_size", "@image_size"],
            "sw_batch_size": 4,
            "overlap": 0.25,
            "mode": "gaussian",
        }
        config["postprocessing"] = {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "s4mi_monai.transforms.SaveMaskAndOverlayd", "keys": "pred", "output_dir": "@output_dir"},
            ],
        }
        writer = None
    config["handlers"] = [
        {"_target_": "CheckpointLoader", "load_path": "@model_path", "load_dict": {"model": "@network"}, "map_location": "@torch_device"},
        *([writer] if writer else []),
    ]
    config["evaluator"] = {
        "_target_": "SupervisedEvaluator",
        "device": "@torch_device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
    }
    config["initialize"] = ["$s4mi_monai.bundle.configure_logging()", "$s4mi_monai.bundle.require_model(@model_path)"]
    config["run"] = ["$@evaluator.run()"]
    config["inferring"] = "%run"
    return config


def _inference_resize(spec: BundleSpec) -> dict[str, Any]:
    """Whole images are resized like training; slides are rescaled like the tiles, then windowed."""
    if spec.task == "classification" or spec.profile.slide_scale is None:
        return {"_target_": "Resized", "keys": "image", "spatial_size": ["@image_size", "@image_size"], "mode": "area"}
    scale = f"$@image_size / 224 * {spec.profile.slide_scale:.6f}"
    return {"_target_": "Zoomd", "keys": "image", "zoom": scale, "mode": "area", "keep_size": False}


def _demo_classes(profile: DatasetProfile) -> list[str]:
    datalist = json.loads((Path(__file__).resolve().parents[2] / "datalists" / profile.demo_datalist).read_text())
    return datalist["classes"]


def metadata(spec: BundleSpec) -> dict[str, Any]:
    """``metadata.json``, valid against the MONAI bundle schema shipped in ``s4mi_monai/resources``."""
    classes = _demo_classes(spec.profile)
    inputs = {
        "image": {
            "type": "image",
            "format": "magnitude",
            "modality": "RGB photograph" if not spec.profile.slide_scale else "fluorescence microscopy",
            "num_channels": 3,
            "spatial_shape": ["32*n", "32*n"],
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": bool(spec.profile.slide_scale),
            "channel_def": {"0": "R", "1": "G", "2": "B"},
        }
    }
    if spec.task == "classification":
        outputs = {
            "pred": {
                "type": "probabilities",
                "format": "classes",
                "num_channels": len(classes),
                "spatial_shape": [1, len(classes)],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_onehot": not spec.profile.multi_label,
                "channel_def": {str(k): name for k, name in enumerate(classes)},
            }
        }
    else:
        outputs = {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": ["32*n", "32*n"],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_onehot": False,
                "channel_def": {"0": "background", "1": "lesion" if not spec.profile.slide_scale else "cells"},
            }
        }
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
        "version": __version__,
        "changelog": {__version__: "first release"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": {
            "s4mi_monai": __version__,
            "pytorch-ignite": "0.5.5",
            "pillow": "13.0.0",
            "einops": "0.8.2",
            "tensorboard": "2.21.0",
            "matplotlib": "3.11.2",
        },
        "name": f"{spec.profile.title}: {spec.description}",
        "task": f"{spec.profile.title} {spec.task}",
        "description": f"{spec.description}, on {spec.profile.title} ({spec.profile.image_kind}).",
        "authors": "s4mi-monai authors",
        "copyright": "Copyright (c) 2026 s4mi-monai authors",
        "data_source": "Generated demo data by default; prepare real data with `s4mi prepare`.",
        "data_type": "png/jpeg",
        "image_classes": "RGB, 3 channels, scaled to [0, 1] then ImageNet-normalised",
        "label_classes": ", ".join(classes) if spec.task == "classification" else "0 background, 1 foreground",
        "pred_classes": ", ".join(classes) if spec.task == "classification" else "0 background, 1 foreground",
        "intended_use": "Research use only; not for clinical diagnosis.",
        "references": [
            "Singh et al., Shifting to Machine Supervision: annotation-efficient semi and self-supervised learning for automatic medical image segmentation and classification, Scientific Reports 2024"
        ],
        "network_data_format": {"inputs": inputs, "outputs": outputs},
    }


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _train_json(spec: BundleSpec) -> dict[str, Any]:
    if spec.self_supervised:
        from s4mi_monai.bundle.ssl_configs import ssl_train_config

        return ssl_train_config(spec)
    if spec.semi_supervised:
        from s4mi_monai.bundle.semi_configs import crossteach_train_config

        return crossteach_train_config(spec)
    return train_config(spec)


def _evaluate_json(spec: BundleSpec) -> dict[str, Any]:
    if spec.semi_supervised:
        from s4mi_monai.bundle.semi_configs import crossteach_evaluate_config

        return crossteach_evaluate_config(spec)
    return evaluate_config(spec)


def _inference_json(spec: BundleSpec) -> dict[str, Any]:
    if spec.semi_supervised:
        from s4mi_monai.bundle.semi_configs import crossteach_inference_config

        return crossteach_inference_config(spec)
    return inference_config(spec)


CONFIG_BUILDERS: dict[str, Callable[[BundleSpec], dict[str, Any]]] = {
    "train.json": _train_json,
    "evaluate.json": _evaluate_json,
    "inference.json": _inference_json,
    "metadata.json": metadata,
}


def bundle_files(spec: BundleSpec) -> dict[str, str]:
    """Relative path -> content of every generated file of one bundle (README results are kept)."""
    files = {f"configs/{name}": json.dumps(build(spec), indent=2) + "\n" for name, build in CONFIG_BUILDERS.items()}
    files["configs/logging.conf"] = LOGGING_CONF
    if spec.method == "dino":
        from s4mi_monai.bundle.ssl_configs import LUCIDRAINS_PRESET

        files["configs/lucidrains.json"] = json.dumps(LUCIDRAINS_PRESET, indent=2) + "\n"
    if spec.semi_supervised:
        from s4mi_monai.bundle.semi_configs import SSL4MIS_PRESET

        files["configs/ssl4mis.json"] = json.dumps(SSL4MIS_PRESET, indent=2) + "\n"
    return files


def write_bundles(root: str | Path = "bundles", names: list[str] | None = None) -> list[Path]:
    """Write the generated files of the named bundles (default: all) under ``root``."""
    from s4mi_monai.bundle.readme import readme

    written = []
    for name in names or list(BUNDLES):
        spec = BUNDLES[name]
        folder = Path(root) / name
        contents = bundle_files(spec)
        readme_path = folder / "docs" / "README.md"
        contents["docs/README.md"] = readme(spec, readme_path.read_text() if readme_path.is_file() else "")
        contents["LICENSE"] = (Path(__file__).resolve().parents[2] / "LICENSE").read_text()
        for relative, text in contents.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written
