"""One segmentation network by name, so the supervised baseline can train exactly the networks of cross teaching.

A comparison of methods is only fair when the networks match: ``supervised_seg`` bundles train
``resnet_unet`` (the DEDL ResNet U-Net, their default) or, by ``--architecture``, the cross-teaching CNN
(``ssl4mis_unet``) or its transformer (``swin_unet``, ``swin_unetr``), or the U-Net of contrastive segmentation
(``contrastive_unet``). Those are built by the very constructors the semi-supervised bundles call
(:class:`~s4mi_monai.networks.unet.SSL4MISUNet`, :func:`~s4mi_monai.networks.swin_unet.build_segmentation_transformer`,
:class:`~s4mi_monai.networks.contrastive_unet.ContrastiveUNet`), with the same arguments.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .contrastive_unet import ContrastiveUNet
from .swin_unet import SEGMENTATION_TRANSFORMERS, build_segmentation_transformer, check_transformer_image_size
from .unet import ResNetUNet, SSL4MISUNet

__all__ = ["SEGMENTATION_ARCHITECTURES", "build_segmentation_network", "check_segmentation_architecture"]

SEGMENTATION_ARCHITECTURES = ("resnet_unet", "ssl4mis_unet", "contrastive_unet", *SEGMENTATION_TRANSFORMERS)


def _require_known(architecture: str) -> None:
    if architecture not in SEGMENTATION_ARCHITECTURES:
        raise ValueError(f"unknown --architecture {architecture!r}; choose from {SEGMENTATION_ARCHITECTURES}")


def check_segmentation_architecture(architecture: str, image_size: int) -> str:
    """Fail before any data is read on an unknown ``--architecture`` or a training size a transformer cannot take."""
    _require_known(architecture)
    if architecture in SEGMENTATION_TRANSFORMERS:
        check_transformer_image_size(image_size, architecture)
    if architecture == "contrastive_unet" and int(image_size) % 16:
        raise ValueError(f"contrastive_unet needs --image_size a multiple of 16 (four poolings), got {image_size}")
    return architecture


def build_segmentation_network(
    architecture: str = "resnet_unet",
    in_channels: int = 3,
    out_channels: int = 2,
    encoder: str = "resnet34",
    embed_dim: int = 96,
    pretrained_weights: str | Path | None = None,
) -> nn.Module:
    """A 2D segmentation network returning logits ``(B, out_channels, H, W)``; each knob is read only where it applies.

    ``encoder`` (resnet18/34/50) and ``pretrained_weights`` (a local torchvision ResNet) belong to ``resnet_unet``;
    ``embed_dim`` (cross teaching's ``--transformer_embed_dim``) and ``pretrained_weights`` (as cross teaching's
    ``--pretrained_transformer_weights``) to ``swin_unet`` / ``swin_unetr``; ``ssl4mis_unet`` always starts from random weights,
    as in cross teaching.
    """
    _require_known(architecture)
    if architecture == "resnet_unet":
        return ResNetUNet(in_channels=in_channels, out_channels=out_channels, encoder=encoder, pretrained_weights=pretrained_weights)
    if architecture == "ssl4mis_unet":
        if pretrained_weights:
            raise ValueError("ssl4mis_unet trains from random initialisation (as in cross teaching): drop --pretrained_weights")
        return SSL4MISUNet(in_channels=in_channels, out_channels=out_channels)
    if architecture == "contrastive_unet":
        if pretrained_weights:
            raise ValueError("contrastive_unet starts from random initialisation or from its own pretraining stages: drop --pretrained_weights")
        return ContrastiveUNet(in_channels=in_channels, out_channels=out_channels)
    return build_segmentation_transformer(
        name=architecture, in_channels=in_channels, out_channels=out_channels, embed_dim=embed_dim, pretrained_weights=pretrained_weights
    )
