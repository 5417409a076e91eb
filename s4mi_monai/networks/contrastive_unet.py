"""Networks of semi-supervised contrastive segmentation (Hu et al., MICCAI 2021; xhu248/semi_cotrast_seg).

One backbone serves the three stages, each through its own method:

1. ``encode_global(x)``: the contracting path and the centre block, the features the global (SimCLR) loss sees;
2. ``pixel_features(x)``: the whole U-Net, a full-resolution feature map for the local (pixel-wise) loss;
3. ``forward(x)``: those features through the segmentation head, class logits for fine-tuning.

The projection heads of stages 1 and 2 (:class:`GlobalProjectionHead`, :class:`LocalProjectionHead`) are
separate modules owned by the trainers, so a backbone's ``state_dict`` never holds them and weights move from
stage to stage by name: ``encoder_state_dict()`` (what ``encode_global`` uses) from stage 1 into stage 2,
``feature_state_dict()`` (all but the segmentation head) from stage 2 into stage 3, each loaded with
``load_state_dict(..., strict=False)``; saved to a file, either loads with
:func:`~s4mi_monai.networks.weights.load_pretrained` as well.

Backbones (:func:`build_contrastive_network`):

- ``"contrastive_unet"``, :class:`ContrastiveUNet`: the reference ``networks/unet_con.py`` U-Net;
- ``"ssl4mis_unet"``, :class:`SSL4MISContrastiveUNet`: the cross-teaching CNN with the three methods; its
  ``state_dict`` is that of :class:`~s4mi_monai.networks.unet.SSL4MISUNet`, which stage 3 may train instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from .unet import SSL4MISUNet, pad_to_multiple

__all__ = [
    "CONTRASTIVE_BACKBONES",
    "ContrastiveUNet",
    "GlobalProjectionHead",
    "LocalProjectionHead",
    "SSL4MISContrastiveUNet",
    "build_contrastive_network",
]

CONTRASTIVE_BACKBONES = ("contrastive_unet", "ssl4mis_unet")
LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.01})


def _state_dict_without(module: nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in module.state_dict().items() if not name.startswith(prefixes)}


def _state_dict_with(module: nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in module.state_dict().items() if name.startswith(prefixes)}


class ContrastiveUNetUpBlock(nn.Module):
    """Expanding level: concatenate [upsampled, skip], two 3x3 conv-LeakyReLU (no norm, as the reference), then
    ``upsample`` (a stride-2 transposed convolution, or identity at full resolution)."""

    def __init__(self, in_channels: int, out_channels: int, upsample_channels: int | None) -> None:
        super().__init__()
        conv_options = {"spatial_dims": 2, "kernel_size": 3, "act": LEAKY_RELU, "norm": None}
        self.fuse = Convolution(in_channels=in_channels, out_channels=out_channels, **conv_options)
        self.refine = Convolution(in_channels=out_channels, out_channels=out_channels, **conv_options)
        self.upsample = (
            nn.Identity() if upsample_channels is None else nn.ConvTranspose2d(out_channels, upsample_channels, kernel_size=2, stride=2)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.refine(self.fuse(torch.cat((x, skip), dim=1))))


class ContrastiveUNet(nn.Module):
    """The reference U-Net (``UNet`` of ``networks/unet_con.py``) with its segmentation head; ``f = features`` (64 there).

    - ``encoder``: 4 levels of (3x3 conv - InstanceNorm - LeakyReLU) x2 with widths f, 2f, 4f, 8f, a 2x2
      max-pool after each;
    - ``centre`` (at 1/16): 3x3 conv 8f → 16f - ReLU - 3x3 conv 16f → 16f - ReLU - 2x2 transposed conv
      16f → 8f (stride 2) - ReLU, so ``encode_global`` gives 8f channels at 1/8 of the input;
    - ``decoder``: per level, concatenate [upsampled, skip], two 3x3 conv-LeakyReLU, transposed-conv upsampling,
      ending with ``pixel_channels = f`` channels at full resolution;
    - ``segmentation_head``: 1x1 convolution to ``out_channels`` logits.

    The reference centre-crops its skips; here sides must be multiples of 16 (the output then has the input's
    size and nothing is cropped), anything else is refused with a ``ValueError``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 2, features: int = 64) -> None:
        super().__init__()
        widths = [features * 2**level for level in range(4)]
        conv_options = {"spatial_dims": 2, "kernel_size": 3, "act": LEAKY_RELU, "norm": "instance"}
        self.encoder = nn.ModuleList(
            nn.Sequential(
                Convolution(in_channels=width_in, out_channels=width, **conv_options),
                Convolution(in_channels=width, out_channels=width, **conv_options),
            )
            for width_in, width in zip([in_channels, *widths[:-1]], widths)
        )
        bottleneck = 2 * widths[-1]
        self.centre = nn.Sequential(
            Convolution(2, widths[-1], bottleneck, kernel_size=3, act="relu", norm=None),
            Convolution(2, bottleneck, bottleneck, kernel_size=3, act="relu", norm=None),
            nn.ConvTranspose2d(bottleneck, widths[-1], kernel_size=2, stride=2),
            nn.ReLU(),
        )
        self.decoder = nn.ModuleList(
            ContrastiveUNetUpBlock(2 * widths[level], widths[level], widths[level - 1] if level > 0 else None) for level in range(3, -1, -1)
        )
        self.segmentation_head = nn.Conv2d(features, out_channels, kernel_size=1)
        self.output_stride = 16
        self.global_channels = widths[-1]
        self.pixel_channels = features

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        height, width = x.shape[-2], x.shape[-1]
        if height % self.output_stride != 0 or width % self.output_stride != 0:
            raise ValueError(f"ContrastiveUNet needs sides that are multiples of 16, got {height}x{width}")
        skips: list[torch.Tensor] = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, self.centre(x)

    def encode_global(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 8f, H/8, W/8) features of the contracting path and the centre block (stage 1)."""
        return self._encode(x)[1]

    def pixel_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, f, H, W) features of the whole U-Net, before the segmentation head (stage 2)."""
        skips, decoded = self._encode(x)
        for index, block in enumerate(self.decoder):
            decoded = block(decoded, skips[len(skips) - 1 - index])
        return decoded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out_channels, H, W) segmentation logits (stage 3)."""
        return self.segmentation_head(self.pixel_features(x))

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors ``encode_global`` uses (``encoder.*``, ``centre.*``): stage 1's contribution to stage 2."""
        return _state_dict_with(self, ("encoder.", "centre."))

    def feature_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor but the segmentation head's: stage 2's contribution to stage 3."""
        return _state_dict_without(self, ("segmentation_head.",))


class SSL4MISContrastiveUNet(SSL4MISUNet):
    """:class:`~s4mi_monai.networks.unet.SSL4MISUNet` with the three methods of the contrastive stages.

    ``encode_global`` is the output of the encoder's last level (``channels[4]`` at 1/16), ``pixel_features`` the
    decoder's full-resolution map (``channels[0]``); ``forward`` is unchanged. Sides are zero-padded to a multiple
    of 16 and cropped back, as in ``SSL4MISUNet``. The parameter names are ``SSL4MISUNet``'s, so the weights load
    into either class.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__(in_channels, out_channels, channels, dropout)
        self.global_channels = int(channels[4])
        self.pixel_channels = int(channels[0])

    def _encoder_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        for level in self.encoder:
            x = level(x)
            levels.append(x)
        return levels

    def encode_global(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels[4], ⌈H/16⌉, ⌈W/16⌉) features of the encoder's last level (stage 1)."""
        return self._encoder_levels(pad_to_multiple(x, self.output_stride)[0])[-1]

    def pixel_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels[0], H, W) decoder features before ``out_conv`` (stage 2)."""
        height, width = x.shape[-2], x.shape[-1]
        x, top, left = pad_to_multiple(x, self.output_stride)
        levels = self._encoder_levels(x)
        decoded = levels[4]
        for index, block in enumerate(self.decoder):
            decoded = block(decoded, levels[3 - index])
        return decoded[..., top : top + height, left : left + width]

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors ``encode_global`` uses (``encoder.*``): stage 1's contribution to stage 2."""
        return _state_dict_with(self, ("encoder.",))

    def feature_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor but the segmentation head's (``out_conv.*``): stage 2's contribution to stage 3."""
        return _state_dict_without(self, ("out_conv.",))


class GlobalProjectionHead(nn.Module):
    """Stage 1's head: global average pooling, Linear(in, hidden), Linear(hidden, out), L2 normalisation.

    As the reference ``MLP`` (512 → 512 → 256 at f = 64) there is no non-linearity between the two linear layers,
    so together they are one linear map of rank ≤ hidden; it is kept so that the recipe stays the paper's.
    """

    def __init__(self, in_channels: int, hidden_channels: int | None = None, out_channels: int = 256) -> None:
        super().__init__()
        hidden_channels = in_channels if hidden_channels is None else hidden_channels
        self.first = nn.Linear(in_channels, hidden_channels)
        self.second = nn.Linear(hidden_channels, out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, out_channels) unit vectors of (B, in_channels, h, w) feature maps."""
        pooled = features.mean(dim=(-2, -1))
        return F.normalize(self.second(self.first(pooled)), dim=1)


class LocalProjectionHead(nn.Module):
    """Stage 2's head: 1x1 conv (in → hidden), 1x1 conv (hidden → out), per-pixel L2 normalisation.

    As the reference ``SupConUnet(mode="mlp")`` (64 → 256 → 128) there is no non-linearity between the convolutions.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 256, out_channels: int = 128) -> None:
        super().__init__()
        self.first = nn.Conv2d(in_channels, hidden_channels, kernel_size=1)
        self.second = nn.Conv2d(hidden_channels, out_channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, out_channels, H, W) unit vectors, one per pixel."""
        return F.normalize(self.second(self.first(features)), dim=1)


def build_contrastive_network(
    name: str = "contrastive_unet", in_channels: int = 3, out_channels: int = 2, features: int | None = None
) -> ContrastiveUNet | SSL4MISContrastiveUNet:
    """The backbone ``name`` (``"contrastive_unet"`` or ``"ssl4mis_unet"``) with ``features`` channels at its first level
    (default: 64 for ``"contrastive_unet"``, as the reference; 16 for ``"ssl4mis_unet"``, as cross teaching)."""
    if name == "contrastive_unet":
        return ContrastiveUNet(in_channels, out_channels, 64 if features is None else features)
    if name == "ssl4mis_unet":
        first = 16 if features is None else features
        return SSL4MISContrastiveUNet(in_channels, out_channels, channels=tuple(first * 2**level for level in range(5)))
    raise ValueError(f"unknown contrastive backbone {name!r}; choose from {CONTRASTIVE_BACKBONES}")
