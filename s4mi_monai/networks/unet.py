"""U-Nets of s4mi_monai: ``ResNetUNet``, the supervised segmentation baseline (DEDL), and ``SSL4MISUNet``.

``SSL4MISUNet`` is the small CNN of cross teaching (Luo et al. MIDL 2022; SSL4MIS/PyMIC ``UNet``), see its
docstring. The rest of this docstring is about ``ResNetUNet``, a U-Net with a full torchvision-style ResNet encoder.

DEDL trains ``segmentation_models_pytorch.Unet(encoder_name="resnet34")``. MONAI's
``FlexibleUNet(backbone="resnet34")`` uses MedicalNet's parameter-free shortcuts, which torchvision
ResNet-34 weights do not fit, so the encoder here is MONAI's ResNet with projection shortcuts
(:class:`~s4mi_monai.networks.classifiers.ResNetBackbone`) and the decoder follows smp's: at each
level upsample x2 (nearest), concatenate the encoder skip, two 3x3 conv-BN-ReLU; a last block at full
resolution without skip, then a 3x3 convolution to the class logits. All five encoder stages are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from .classifiers import RESNET_LAYOUTS, ResNetBackbone
from .weights import load_pretrained

__all__ = ["ResNetUNet", "SSL4MISUNet"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad the last two sides (centred) up to a multiple; return the padded tensor and the top/left offsets
    that crop the network's output back to the input size (``out[..., top : top + H, left : left + W]``)."""
    height, width = x.shape[-2], x.shape[-1]
    pad_height, pad_width = (-height) % multiple, (-width) % multiple
    top, left = pad_height // 2, pad_width // 2
    return F.pad(x, [left, pad_width - left, top, pad_height - top]), top, left


class UNetDecoderBlock(nn.Module):
    """Nearest x2 upsampling, optional skip concatenation, then two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        conv_options = {"spatial_dims": 2, "kernel_size": 3, "act": "relu", "norm": "batch", "bias": False}
        self.fuse = Convolution(in_channels=in_channels + skip_channels, out_channels=out_channels, **conv_options)
        self.refine = Convolution(in_channels=out_channels, out_channels=out_channels, **conv_options)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045 (TorchScript)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat((x, skip), dim=1)
        return self.refine(self.fuse(x))


class ResNetUNet(nn.Module):
    """smp-style U-Net on a ResNet-18/34/50 encoder; ``forward`` returns logits ``(B, out_channels, H, W)``.

    Any input size works: sides are zero-padded (centred) up to a multiple of 32 inside ``forward`` and the
    logits are cropped back. ``pretrained_weights`` (a local torchvision ResNet or own checkpoint) initialises
    the encoder. TorchScript: scriptable with ``torch.jit.script`` (works for every input size);
    ``torch.jit.trace`` also works but freezes the padding of the traced size.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        encoder: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        pretrained_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if encoder not in RESNET_LAYOUTS:
            raise ValueError(f"unknown encoder {encoder!r}; choose from {tuple(RESNET_LAYOUTS)}")
        if len(decoder_channels) != 5:
            raise ValueError(f"decoder_channels needs one width per level (5), got {tuple(decoder_channels)}")
        self.encoder = ResNetBackbone(encoder, in_channels)
        self.output_stride = 32
        if pretrained_weights:
            load_pretrained(self.encoder, pretrained_weights)

        stem_channels, *stage_channels = self.encoder.stage_channels
        skip_channels = (stage_channels[2], stage_channels[1], stage_channels[0], stem_channels)
        input_channels = (stage_channels[3], *decoder_channels[:3])
        self.decoder = nn.ModuleList(
            UNetDecoderBlock(in_ch, skip_ch, out_ch)
            for in_ch, skip_ch, out_ch in zip(input_channels, skip_channels, decoder_channels[:4], strict=True)
        )
        self.full_resolution_block = UNetDecoderBlock(decoder_channels[3], 0, decoder_channels[4])
        self.segmentation_head = nn.Conv2d(decoder_channels[4], out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x, top, left = pad_to_multiple(x, self.output_stride)

        stem, stage1, stage2, stage3, stage4 = self.encoder.feature_maps(x)
        skips = [stage3, stage2, stage1, stem]
        decoded = stage4
        for level, block in enumerate(self.decoder):
            decoded = block(decoded, skips[level])
        logits = self.segmentation_head(self.full_resolution_block(decoded))
        return logits[..., top : top + height, left : left + width]


class SSL4MISConvBlock(nn.Sequential):
    """SSL4MIS ``ConvBlock``: 3x3 conv-BN-LeakyReLU, Dropout(p), 3x3 conv-BN-LeakyReLU (convolutions with bias)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        conv_options = {"spatial_dims": 2, "kernel_size": 3, "act": ("leakyrelu", {"negative_slope": 0.01}), "norm": "batch"}
        super().__init__(
            Convolution(in_channels=in_channels, out_channels=out_channels, adn_ordering="NAD", dropout=dropout, **conv_options),
            Convolution(in_channels=out_channels, out_channels=out_channels, adn_ordering="NA", **conv_options),
        )


class SSL4MISUpBlock(nn.Module):
    """SSL4MIS ``UpBlock`` (bilinear): 1x1 conv to the skip width, bilinear x2 (align_corners), concat [skip, up], ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.conv = SSL4MISConvBlock(2 * skip_channels, out_channels, dropout=0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.conv1x1(x), scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv(torch.cat((skip, x), dim=1))


class SSL4MISUNet(nn.Module):
    """The CNN of cross teaching (SSL4MIS/PyMIC ``UNet``, bilinear decoder); ``forward`` returns logits ``(B, out, H, W)``.

    Encoder: a ConvBlock at full resolution, then four levels of max-pool 2 + ConvBlock, with the dropout
    ``dropout[k]`` inside level k's block; decoder: four UpBlocks (no dropout) back to full resolution and a
    3x3 convolution to the class logits. About 1.8 M parameters at the defaults. Unlike the reference, any
    input size works: sides are zero-padded (centred) up to a multiple of 16 inside ``forward`` and the
    logits are cropped back. Scriptable with ``torch.jit.script`` (MONAI bundles export it that way).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__()
        channels, dropout = tuple(channels), tuple(float(p) for p in dropout)
        if len(channels) != 5 or len(dropout) != 5:
            raise ValueError(f"channels and dropout need one entry per level (5), got {channels} and {dropout}")
        self.output_stride = 16
        levels: list[nn.Module] = [SSL4MISConvBlock(in_channels, channels[0], dropout[0])]
        for level in range(1, 5):
            levels.append(nn.Sequential(nn.MaxPool2d(2), SSL4MISConvBlock(channels[level - 1], channels[level], dropout[level])))
        self.encoder = nn.ModuleList(levels)
        self.decoder = nn.ModuleList(SSL4MISUpBlock(channels[level], channels[level - 1], channels[level - 1]) for level in range(4, 0, -1))
        self.out_conv = nn.Conv2d(channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x, top, left = pad_to_multiple(x, self.output_stride)

        features = []
        for level in self.encoder:
            x = level(x)
            features.append(x)
        decoded = features[4]
        for index, block in enumerate(self.decoder):
            decoded = block(decoded, features[3 - index])
        logits = self.out_conv(decoded)
        return logits[..., top : top + height, left : left + width]
