"""Networks of s4mi_monai: classification backbones, the ResNet U-Net, the cross-teaching SSL4MISUNet and SwinUNet,
any of those segmentation networks by name, the U-Nets of contrastive segmentation with their projection heads, and local
weight loading."""

from __future__ import annotations

from .classifiers import BACKBONES, Classifier, ResNetBackbone, ViTBackbone, build_backbone
from .contrastive_unet import (
    CONTRASTIVE_BACKBONES,
    ContrastiveUNet,
    GlobalProjectionHead,
    LocalProjectionHead,
    SSL4MISContrastiveUNet,
    build_contrastive_network,
)
from .ensemble import PREDICTION_CHOICES, SoftmaxEnsemble, select_prediction_network
from .heads import DINOHead, MultiCropWrapper, PredictionHead, ProjectionHead
from .picie import PICIE_ENCODERS, FPNDecoder, PiCIENet, PiCIESegmenter
from .segmentation import SEGMENTATION_ARCHITECTURES, build_segmentation_network, check_segmentation_architecture
from .swin_unet import SwinUNet, build_segmentation_transformer, check_transformer_image_size, swin_official_to_swin_unet
from .unet import ResNetUNet, SSL4MISUNet
from .weights import LoadReport, interpolate_pos_embed, load_pretrained

__all__ = [
    "ProjectionHead",
    "PredictionHead",
    "MultiCropWrapper",
    "DINOHead",
    "FPNDecoder",
    "PICIE_ENCODERS",
    "PiCIENet",
    "PiCIESegmenter",
    "BACKBONES",
    "CONTRASTIVE_BACKBONES",
    "ContrastiveUNet",
    "GlobalProjectionHead",
    "LocalProjectionHead",
    "SSL4MISContrastiveUNet",
    "build_contrastive_network",
    "Classifier",
    "LoadReport",
    "ResNetBackbone",
    "ResNetUNet",
    "SSL4MISUNet",
    "SwinUNet",
    "SoftmaxEnsemble",
    "PREDICTION_CHOICES",
    "select_prediction_network",
    "ViTBackbone",
    "build_backbone",
    "build_segmentation_network",
    "check_segmentation_architecture",
    "SEGMENTATION_ARCHITECTURES",
    "build_segmentation_transformer",
    "check_transformer_image_size",
    "interpolate_pos_embed",
    "load_pretrained",
    "swin_official_to_swin_unet",
]
