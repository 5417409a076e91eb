"""U-Net with a full torchvision-style ResNet encoder, the supervised segmentation baseline (DEDL).

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

__all__ = ["ResNetUNet"]


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
        pad_height, pad_width = (-height) % self.output_stride, (-width) % self.output_stride
        top, left = pad_height // 2, pad_width // 2
        x = F.pad(x, [left, pad_width - left, top, pad_height - top])

        stem, stage1, stage2, stage3, stage4 = self.encoder.feature_maps(x)
        skips = [stage3, stage2, stage1, stem]
        decoded = stage4
        for level, block in enumerate(self.decoder):
            decoded = block(decoded, skips[level])
        logits = self.segmentation_head(self.full_resolution_block(decoded))
        return logits[..., top : top + height, left : left + width]
