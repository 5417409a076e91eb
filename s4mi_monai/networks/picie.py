"""The PiCIE network (Cho et al., CVPR 2021): a ResNet encoder and a Panoptic-FPN decoder giving per-pixel embeddings.

The reference ``PanopticFPN`` runs a torchvision ResNet (res2..res5, strides 4 to 32) and an ``FPNDecoder``:
1x1 lateral convolutions to 128 channels, then top-down ``upsample(bilinear) + add`` from res5 to res2, with
no 3x3 smoothing. Here the encoder is the package's MONAI ResNet with torchvision's structure
(:class:`~s4mi_monai.networks.classifiers.ResNetBackbone`), the very encoder of
:class:`~s4mi_monai.networks.unet.ResNetUNet`, so that torchvision ImageNet weights load by name and a
PiCIE-pretrained encoder initialises a supervised U-Net (:meth:`PiCIENet.encoder_state_dict`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .classifiers import ResNetBackbone
from .weights import LoadReport, load_pretrained

__all__ = ["PICIE_ENCODERS", "FPNDecoder", "PiCIENet"]

PICIE_ENCODERS = ("resnet18", "resnet34")


class FPNDecoder(nn.Module):
    """Panoptic-FPN top-down path without smoothing: ``p5 = L5(c5)``, ``p_l = up(p_{l+1}) + L_l(c_l)`` down to p2.

    ``L_l`` are 1x1 convolutions (with bias, as the reference) to ``out_channels``; ``up`` is bilinear
    resizing (``align_corners=False``) to the size of the next finer level, so odd sizes work too.
    """

    def __init__(self, in_channels: tuple[int, int, int, int], out_channels: int = 128) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(channels, out_channels, kernel_size=1) for channels in in_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        decoded = self.laterals[-1](features[-1])
        for lateral, skip in zip(self.laterals[-2::-1], features[-2::-1]):
            decoded = F.interpolate(decoded, size=skip.shape[-2:], mode="bilinear", align_corners=False) + lateral(skip)
        return decoded


class PiCIENet(nn.Module):
    """ResNet-18/34 + FPN decoder; ``forward`` maps (B, C, H, W) images to (B, 128, ⌈H/4⌉, ⌈W/4⌉) unit-norm embeddings.

    Each pixel's embedding is L2-normalised (the reference's ``metric='cosine'``), so the squared distance to
    a centroid is ``1 − 2⟨z, μ⟩ + ‖μ‖²``. ``pretrained_weights`` is a local file (torchvision ImageNet ResNet
    or an own checkpoint) loaded into the encoder by :func:`~s4mi_monai.networks.weights.load_pretrained`
    (its report is kept in :attr:`weights_report`). Channels-last inputs are handled like any CNN input; the
    output follows the input's memory format.
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        in_channels: int = 3,
        embed_dim: int = 128,
        pretrained_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if encoder not in PICIE_ENCODERS:
            raise ValueError(f"PiCIE encoder must be one of {PICIE_ENCODERS}, got {encoder!r}")
        self.encoder = ResNetBackbone(encoder, in_channels)
        self.weights_report: LoadReport | None = load_pretrained(self.encoder, pretrained_weights) if pretrained_weights else None
        self.decoder = FPNDecoder(self.encoder.stage_channels[1:], embed_dim)
        self.embed_dim = embed_dim
        self.output_stride = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, *stages = self.encoder.feature_maps(x)
        return F.normalize(self.decoder(stages), dim=1)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors under ``encoder.*``, the names of :class:`~s4mi_monai.networks.unet.ResNetUNet`'s encoder,
        so ``unet.load_state_dict(picie.encoder_state_dict(), strict=False)`` (or ``load_pretrained`` on a saved copy)
        starts a supervised U-Net from the PiCIE encoder."""
        return {f"encoder.{name}": tensor for name, tensor in self.encoder.state_dict().items()}
