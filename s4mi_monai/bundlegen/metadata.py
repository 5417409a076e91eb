"""``metadata.json`` and ``logging.conf`` of every bundle."""

from __future__ import annotations

from typing import Any

from s4mi_monai import __version__
from s4mi_monai.bundlegen.parts import demo_classes
from s4mi_monai.bundlegen.registry import BundleSpec


def metadata(spec: BundleSpec) -> dict[str, Any]:
    """``metadata.json``, valid against the MONAI bundle schema shipped in ``s4mi_monai/resources``."""
    classes = demo_classes(spec.profile)
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
        clusters = spec.unsupervised  # PiCIE's network outputs cluster scores; inference maps them to classes
        channels = {"0": "background", "1": "lesion" if not spec.profile.slide_scale else "cells"}
        outputs = {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": ["32*n", "32*n"],
                "dtype": "float32",
                "value_range": [-1, 1] if clusters else [0, 1],
                "is_onehot": False,
                "channel_def": {"0": "cluster 0", "1": "cluster 1"} if clusters else channels,
            }
        }
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
        "version": __version__,
        "changelog": {__version__: "first release"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": {  # registry packages only: our own code travels in the bundle (s4mi pack)
            "scipy": "1.17.1",
            "pytorch-ignite": "0.5.5",
            "pillow": "13.0.0",
            "einops": "0.8.2",
            "tensorboard": "2.21.0",
            "matplotlib": "3.11.2",
            "tiffslide": "3.0.1",  # run slides (MONAI 1.6 folds optional_packages_version into this list)
        },
        "name": f"{spec.profile.title}: {spec.description}",
        "task": f"{spec.profile.title} {spec.task}",
        "description": f"{spec.description}, on {spec.profile.title} ({spec.profile.image_kind}).",
        "authors": "s4mi-monai authors",
        "copyright": "Copyright (c) 2026 s4mi-monai authors",
        "data_source": "Generated demo data by default; prepare real data with `s4mi prepare`.",
        "data_type": "png/jpeg",
        "image_classes": "RGB, 3 channels, scaled to [0, 1]" + ("" if spec.unsupervised or spec.contrastive else " then ImageNet-normalised"),
        "label_classes": ", ".join(classes) if spec.task == "classification" else "0 background, 1 foreground",
        "pred_classes": _predicted_classes(spec, classes),
        "intended_use": "Research use only; not for clinical diagnosis.",
        "references": [
            "Singh et al., Shifting to Machine Supervision: annotation-efficient semi and self-supervised learning for automatic medical image segmentation and classification, Scientific Reports 2024"
        ],
        "network_data_format": {"inputs": inputs, "outputs": outputs},
    }


def _predicted_classes(spec: BundleSpec, classes: list[str]) -> str:
    if spec.task == "classification":
        return ", ".join(classes)
    if spec.unsupervised:
        return "cluster scores; inference maps clusters to 0 background, 1 foreground with the matching saved with the model"
    return "0 background, 1 foreground"


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
