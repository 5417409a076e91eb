"""Networks of s4mi_monai: classification backbones, the ResNet U-Net, and local pretrained-weight loading."""

from __future__ import annotations

from .classifiers import BACKBONES, Classifier, ResNetBackbone, ViTBackbone, build_backbone
from .heads import DINOHead, MultiCropWrapper, ProjectionHead
from .unet import ResNetUNet
from .weights import LoadReport, interpolate_pos_embed, load_pretrained

__all__ = [
    "ProjectionHead",
    "MultiCropWrapper",
    "DINOHead",
    "BACKBONES",
    "Classifier",
    "LoadReport",
    "ResNetBackbone",
    "ResNetUNet",
    "ViTBackbone",
    "build_backbone",
    "interpolate_pos_embed",
    "load_pretrained",
]
