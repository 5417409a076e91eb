"""Swin-UNet, the pure-transformer 2D segmentation network of cross teaching, built from MONAI's Swin blocks.

Cross teaching between CNN and Transformer (Luo et al., MIDL 2022, SSL4MIS code) pairs a CNN U-Net with
Swin-UNet (Cao et al., "Swin-Unet: Unet-like Pure Transformer for Medical Image Segmentation", 2021;
SSL4MIS ``SwinTransformerSys``). :class:`SwinUNet` follows that network layer for layer:

* patch embedding: ``patch_size`` x ``patch_size`` convolution to ``embed_dim`` (C) channels and a LayerNorm,
  no absolute position embedding;
* encoder: four stages of Swin blocks (C, 2C, 4C, 8C channels; windows shifted in every other block), the
  first three ending in patch merging; the skip of a stage is its *input* (C at H/4, 2C at H/8, 4C at H/16,
  8C at H/32); a LayerNorm after the last stage (the 8C bottleneck at H/32);
* decoder: stage 0 is a PatchExpand (8C at H/32 -> 4C at H/16); stages 1-3 concatenate the encoder skip of
  the same resolution, project 2D -> D channels with a Linear, run Swin blocks mirroring encoder stage 3-i
  (same depth, heads and stochastic-depth rates) and, except the last, a PatchExpand;
* head: LayerNorm, FinalPatchExpand_X4 (each token becomes a 4x4 block of C channels) and a 1x1 convolution
  without bias to ``out_channels``. ``forward`` returns logits ``(B, out_channels, H, W)``.

Sizes that work: height and width both multiples of ``patch_size * 2 ** (len(depths) - 1)``, i.e. 32 with
the defaults (64, 96, 128, 224, 256 ...); other sizes raise a ``ValueError`` saying so. The reference is
built for 224 x 224, where every feature map (56, 28, 14, 7) is a multiple of the 7 x 7 window.

Differences from the reference:

* MONAI's Swin blocks pad a feature map that is not a multiple of the window (zero tokens after ``norm1``,
  as the official Swin backbone does for detection) and shrink the window (and drop the shift) when the
  map is no larger than the window; the reference fixes the resolution at build time and only supports
  its build size. At 224 x 224 the two compute the same thing. When the window is shrunk below 7, MONAI
  reads the first ``n x n`` entries of the 7 x 7 relative-position index, as its SwinUNETR does.
* MONAI's ``BasicLayer`` names its optional resampling module ``downsample``; in the decoder stages that
  module is a :class:`PatchExpand` (the reference calls it ``upsample``). MONAI's MLP names its linear
  layers ``linear1``/``linear2`` (official Swin: ``fc1``/``fc2``).
* Pretrained weights are read only from a local file (nothing is downloaded); see
  :func:`swin_official_to_swin_unet` for the key mapping, which copies encoder stage i's blocks into the
  mirrored decoder stage as the reference's ``load_from`` does.

:func:`build_segmentation_transformer` builds this network or MONAI's 2D SwinUNETR by name.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.networks.blocks import PatchEmbed
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import BasicLayer, PatchMergingV2
from torch import nn

__all__ = [
    "SEGMENTATION_TRANSFORMERS",
    "check_transformer_image_size",
    "FinalPatchExpandX4",
    "PatchExpand",
    "SwinUNETR2D",
    "SwinUNet",
    "build_segmentation_transformer",
    "swin_official_to_swin_unet",
]

logger = logging.getLogger("s4mi_monai")

SEGMENTATION_TRANSFORMERS = ("swin_unet", "swin_unetr")

# Buffers that the networks rebuild from the window size; never copied from a checkpoint.
_BUFFER_SUFFIXES = ("relative_position_index", "attn_mask")
_OFFICIAL_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_OFFICIAL_DOWNSAMPLE_KEY = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_MLP_RENAMES = (("mlp.fc1.", "mlp.linear1."), ("mlp.fc2.", "mlp.linear2."))
_NESTING_KEYS = ("model", "state_dict", "module")


def _example_sizes(multiple: int) -> str:
    return ", ".join(str(multiple * factor) for factor in (2, 3, 4, 7, 8))


def _check_image_size(network: str, x: torch.Tensor, in_channels: int, multiple: int) -> None:
    """Raise a ValueError naming the received shape and the sizes that work (channels, then sides)."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{network} expects images (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[2], x.shape[3]
    if height % multiple != 0 or width % multiple != 0:
        raise ValueError(
            f"{network} takes height and width that are multiples of {multiple} (e.g. {_example_sizes(multiple)}), got {height}x{width}"
        )


def check_transformer_image_size(image_size: int, name: str = "swin_unet") -> int:
    """Fail before any data is read when the training size cannot go through the transformer (sides multiple of 32)."""
    if name not in SEGMENTATION_TRANSFORMERS:
        raise ValueError(f"unknown segmentation transformer {name!r}; choose from {SEGMENTATION_TRANSFORMERS}")
    if int(image_size) % 32 != 0:
        raise ValueError(f"--image_size {image_size}: {name} takes sides that are multiples of 32 (e.g. {_example_sizes(32)})")
    return int(image_size)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


class _TokenExpand(nn.Module):
    """Linear(dim -> scale^2 * out_dim, no bias), each token -> a scale x scale block of out_dim, LayerNorm.

    Works on channels-last maps ``(B, H, W, dim)``. The expanded channels are read as ``(p1, p2, c)`` with
    ``c`` fastest, the reference's ``rearrange('b h w (p1 p2 c) -> b (h p1) (w p2) c')``, written with
    view/permute so that ``torch.jit.trace`` records it.
    """

    def __init__(self, dim: int, scale: int, out_dim: int, norm_layer: type[nn.LayerNorm] = nn.LayerNorm) -> None:
        super().__init__()
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = norm_layer(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        x = self.expand(x)
        x = x.view(batch, height, width, self.scale, self.scale, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height * self.scale, width * self.scale, self.out_dim)
        return self.norm(x)


class PatchExpand(_TokenExpand):
    """Swin-UNet's x2 upsampling: ``(B, H, W, dim) -> (B, 2H, 2W, dim / 2)``.

    The signature matches what MONAI's ``BasicLayer`` calls its ``downsample`` class with, so a decoder
    stage is a ``BasicLayer`` whose resampling module is this one.
    """

    def __init__(self, dim: int, norm_layer: type[nn.LayerNorm] = nn.LayerNorm, spatial_dims: int = 2) -> None:
        if spatial_dims != 2:
            raise ValueError(f"PatchExpand is 2D only, got spatial_dims={spatial_dims}")
        if dim % 2 != 0:
            raise ValueError(f"PatchExpand halves the channels, so dim must be even, got {dim}")
        super().__init__(dim, scale=2, out_dim=dim // 2, norm_layer=norm_layer)


class FinalPatchExpandX4(_TokenExpand):
    """Swin-UNet's last x4 upsampling (reference ``FinalPatchExpand_X4``): ``(B, H, W, C) -> (B, 4H, 4W, C)``."""

    def __init__(self, dim: int, norm_layer: type[nn.LayerNorm] = nn.LayerNorm) -> None:
        super().__init__(dim, scale=4, out_dim=dim, norm_layer=norm_layer)


class SwinUNet(nn.Module):
    """Swin-UNet (Cao et al. 2021) from MONAI Swin blocks; ``forward`` returns logits ``(B, out_channels, H, W)``.

    Height and width must be multiples of ``patch_size * 2 ** (len(depths) - 1)`` (32 by default). The
    defaults are the Swin-T configuration of the reference (27 M parameters at 2 classes).
    ``pretrained_weights`` is a local ImageNet Swin checkpoint in the official microsoft/Swin-Transformer
    layout (or a SwinUNet state dict of this class); see :meth:`load_official_swin`. ``torch.jit.trace``
    works and freezes the traced input size (window padding and masks become constants); ``torch.jit.script``
    does not (MONAI's PatchEmbed and Swin blocks are not scriptable), so export bundles with ``use_trace=True``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        patch_size: int = 4,
        window_size: int = 7,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        pretrained_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != len(num_heads) or len(depths) < 2:
            raise ValueError(f"depths and num_heads need one entry per stage (at least 2), got {depths} and {num_heads}")
        num_stages = len(depths)
        stage_dims = [embed_dim * 2**stage for stage in range(num_stages)]
        for dim, heads in zip(stage_dims, num_heads, strict=True):
            if dim % heads != 0:
                raise ValueError(f"stage width {dim} is not divisible by its {heads} attention heads (embed_dim={embed_dim})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.embed_dim = embed_dim
        self.num_stages = num_stages
        self.size_multiple = patch_size * 2 ** (num_stages - 1)
        windows = (window_size, window_size)

        self.patch_embed = PatchEmbed(
            patch_size=patch_size, in_chans=in_channels, embed_dim=embed_dim, norm_layer=nn.LayerNorm, spatial_dims=2
        )
        self.pos_drop = nn.Dropout(p=drop_rate)
        # Stochastic depth grows linearly over the encoder blocks; each decoder stage reuses the rates of
        # the encoder stage it mirrors (reference ``dpr[sum(depths[:k]):sum(depths[:k + 1])]``).
        rates = [float(rate) for rate in torch.linspace(0, drop_path_rate, sum(depths))]
        stage_rates = [rates[sum(depths[:stage]) : sum(depths[: stage + 1])] for stage in range(num_stages)]

        def swin_stage(stage: int, resample: type[nn.Module] | None) -> BasicLayer:
            return BasicLayer(
                dim=stage_dims[stage],
                depth=depths[stage],
                num_heads=num_heads[stage],
                window_size=windows,
                drop_path=list(stage_rates[stage]),
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                norm_layer=nn.LayerNorm,
                downsample=resample,
            )

        # PatchMergingV2 (2D) concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] over
        # (H, W) -- its ``product(range(2), range(2))`` loop indexes ``x[:, j::2, i::2]`` -- which is the
        # official Swin order x0, x1, x2, x3; both apply the LayerNorm(4C) before the Linear(4C -> 2C), so
        # official ``downsample.reduction``/``downsample.norm`` weights transfer unchanged (checked in the tests).
        self.layers = nn.ModuleList(swin_stage(stage, PatchMergingV2 if stage < num_stages - 1 else None) for stage in range(num_stages))
        self.norm = nn.LayerNorm(stage_dims[-1])

        up_layers: list[nn.Module] = [PatchExpand(stage_dims[-1])]
        concat_back: list[nn.Module] = [nn.Identity()]
        for stage in range(1, num_stages):
            mirrored = num_stages - 1 - stage
            concat_back.append(nn.Linear(2 * stage_dims[mirrored], stage_dims[mirrored]))
            up_layers.append(swin_stage(mirrored, PatchExpand if stage < num_stages - 1 else None))
        self.layers_up = nn.ModuleList(up_layers)
        self.concat_back_dim = nn.ModuleList(concat_back)
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = FinalPatchExpandX4(embed_dim)
        self.output = nn.Conv2d(embed_dim, out_channels, kernel_size=1, bias=False)

        self.apply(_init_reference_weights)
        if pretrained_weights:
            self.load_official_swin(pretrained_weights)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Bottleneck ``(B, 8C, H/32, W/32)`` (after the LayerNorm) and the stage inputs (skips), channels first."""
        x = self.pos_drop(self.patch_embed(x))
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x.contiguous())
        return _channels_first(self.norm(_channels_last(x))), skips

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decoder stages and head: features ``(B, 8C, H/32, W/32)`` and skips -> logits ``(B, out, H, W)``."""
        for stage, (layer_up, concat_back) in enumerate(zip(self.layers_up, self.concat_back_dim, strict=True)):
            if stage == 0:
                x = _channels_first(layer_up(_channels_last(x)))
                continue
            x = torch.cat((x, skips[self.num_stages - 1 - stage]), dim=1)
            x = _channels_first(concat_back(_channels_last(x)))
            x = layer_up(x)
        x = self.up(self.norm_up(_channels_last(x)))
        return self.output(_channels_first(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_size(type(self).__name__, x, self.in_channels, self.size_multiple)
        bottleneck, skips = self.encode(x)
        return self.decode(bottleneck, skips)

    def load_official_swin(self, path: str | Path) -> dict[str, list[str]]:
        """Load a local official-layout Swin checkpoint (encoder + mirrored decoder blocks); returns what happened.

        Keys go through :func:`swin_official_to_swin_unet`; tensors whose shape differs from the model's
        (another window size, another input channel count ...) are skipped. Everything is reported with
        the ``s4mi_monai`` logger. Raises FileNotFoundError for a missing file and ValueError for a file
        that shares no tensor with this network.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Swin pretrained weights file not found: {path}")
        state = _read_state_dict(path)
        mapped = swin_official_to_swin_unet(state)
        target = self.state_dict()
        loaded = {key: value for key, value in mapped.items() if key in target and target[key].shape == value.shape}
        shape_mismatch = sorted(key for key in mapped if key in target and target[key].shape != mapped[key].shape)
        unknown = sorted(key for key in mapped if key not in target)
        unmapped = sorted(key for key in state if not _is_rebuilt_buffer(key) and not _maps_to_any(key, mapped))
        if not loaded:
            raise ValueError(
                f"{path} shares no tensor with SwinUNet (official Swin layout expected, e.g. patch_embed.proj.weight, "
                f"layers.0.blocks.0.attn.qkv.weight); its keys start {list(state)[:6]}"
                + (f"; {len(shape_mismatch)} names match with other shapes, e.g. {shape_mismatch[0]}" if shape_mismatch else "")
            )
        with torch.no_grad():
            for key, value in loaded.items():
                target[key].copy_(value)
        not_loaded = sorted(key for key in target if key not in loaded and not _is_rebuilt_buffer(key))
        report = {
            "loaded": sorted(loaded),
            "shape_mismatch": shape_mismatch,
            "unused": sorted(set(unmapped) | set(unknown)),
            "not_loaded": not_loaded,
        }
        logger.info(
            "Swin weights from %s into SwinUNet: loaded %d tensors; skipped %d shape mismatches %s, %d unused checkpoint keys %s; "
            "%d model tensors keep their initialisation %s",
            path,
            len(loaded),
            len(shape_mismatch),
            shape_mismatch[:6],
            len(report["unused"]),
            report["unused"][:6],
            len(not_loaded),
            not_loaded[:6],
        )
        return report


def _init_reference_weights(module: nn.Module) -> None:
    """The reference's ``_init_weights``: truncated normal (std 0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _is_rebuilt_buffer(key: str) -> bool:
    return key.endswith(_BUFFER_SUFFIXES)


def _rename_block_entry(name: str) -> str:
    for old, new in _MLP_RENAMES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def _map_official_key(key: str, num_stages: int) -> list[str]:
    """SwinUNet names for one official-layout key (none, one, or the encoder name plus the mirrored decoder name)."""
    if _is_rebuilt_buffer(key):
        return []
    if key.startswith(("patch_embed.", "norm.")):
        return [key]
    block = _OFFICIAL_BLOCK_KEY.match(key)
    if block:
        stage, index, rest = int(block.group(1)), block.group(2), _rename_block_entry(block.group(3))
        names = [f"layers.{stage}.blocks.{index}.{rest}"]
        mirrored = num_stages - 1 - stage
        if mirrored > 0:  # decoder stage 0 is a PatchExpand without blocks
            names.append(f"layers_up.{mirrored}.blocks.{index}.{rest}")
        return names
    downsample = _OFFICIAL_DOWNSAMPLE_KEY.match(key)
    if downsample and int(downsample.group(1)) < num_stages - 1:
        return [key]
    return []


def swin_official_to_swin_unet(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official microsoft/Swin-Transformer state dict to :class:`SwinUNet` keys.

    Patch embedding, encoder blocks, patch mergings and the final ``norm`` keep their names (MONAI's MLP
    layers are ``linear1``/``linear2`` instead of ``fc1``/``fc2``); every encoder block of stage i is also
    copied to the same block of decoder stage ``L-1-i`` (``layers_up``), as the reference's ``load_from``
    does, so the decoder starts from ImageNet weights too. ``relative_position_index``/``attn_mask``
    buffers, the classifier ``head`` and any other key are dropped. A state dict that already has
    SwinUNet's own names (it has ``layers_up.`` keys) is returned as it is, minus those buffers.
    """
    if any(key.startswith("layers_up.") for key in state):
        return {key: value for key, value in state.items() if not _is_rebuilt_buffer(key)}
    stage_indices = {int(match.group(1)) for key in state if (match := re.match(r"^layers\.(\d+)\.", key))}
    num_stages = max(stage_indices) + 1 if stage_indices else 4
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for name in _map_official_key(key, num_stages):
            converted[name] = value
    return converted


def _maps_to_any(key: str, mapped: Mapping[str, torch.Tensor]) -> bool:
    if key in mapped:
        return True
    block = _OFFICIAL_BLOCK_KEY.match(key)
    return bool(block) and f"layers.{block.group(1)}.blocks.{block.group(2)}.{_rename_block_entry(block.group(3))}" in mapped


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from ``model``/``state_dict`` and ``module.`` prefixes."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path} cannot be read as plain tensors (torch.load with weights_only=True)") from error
    while isinstance(checkpoint, Mapping) and not any(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        nested = next((checkpoint[key] for key in _NESTING_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
        if nested is None:
            break
        checkpoint = nested
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    state = {}
    for key, value in checkpoint.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            state[key.removeprefix("module.")] = value
    if not state:
        raise ValueError(f"{path} holds no tensors at its top level or under {_NESTING_KEYS}; its keys start {list(checkpoint)[:6]}")
    return state


class SwinUNETR2D(SwinUNETR):
    """MONAI's SwinUNETR in 2D whose forward first checks the image, with the same message as :class:`SwinUNet`.

    It is a plain ``SwinUNETR`` subclass, so its state dict is a ``SwinUNETR`` state dict. Sides must be
    multiples of ``patch_size ** 5`` (32 with the default patch size 2).
    """

    def __init__(self, in_channels: int, out_channels: int, feature_size: int = 48, **kwargs: object) -> None:
        kwargs.pop("spatial_dims", None)
        super().__init__(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, spatial_dims=2, **kwargs)
        self.in_channels = in_channels
        self.size_multiple = int(self.patch_size) ** 5

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        _check_image_size("SwinUNETR", x_in, self.in_channels, self.size_multiple)
        return super().forward(x_in)


def build_segmentation_transformer(
    name: str = "swin_unet",
    in_channels: int = 3,
    out_channels: int = 2,
    pretrained_weights: str | Path | None = None,
    **kwargs: object,
) -> nn.Module:
    """A 2D transformer segmentation network by name, for configs: ``"swin_unet"`` or ``"swin_unetr"``.

    ``kwargs`` go to the network (:class:`SwinUNet`, or MONAI ``SwinUNETR`` whose ``feature_size`` defaults
    to 48 here and may be given as ``embed_dim``, the bundles' one width knob; it must be a multiple of 12). ``pretrained_weights``: for ``swin_unet`` an official-layout Swin checkpoint (see
    :meth:`SwinUNet.load_official_swin`); for ``swin_unetr`` a checkpoint of its Swin encoder in MONAI's
    layout (``layers1.0.blocks...``, e.g. from self-supervised pretraining, possibly prefixed ``swinViT.``
    or ``module.``), loaded with :func:`s4mi_monai.networks.weights.load_pretrained` into ``swinViT`` --
    official ImageNet Swin files do not fit it (patch size 2, no patch norm, other widths).
    """
    if name == "swin_unet":
        return SwinUNet(in_channels=in_channels, out_channels=out_channels, pretrained_weights=pretrained_weights, **kwargs)  # type: ignore[arg-type]
    if name == "swin_unetr":
        # one knob for both networks: SwinUNETR's first Swin stage width is its feature_size
        feature_size = int(kwargs.pop("feature_size", kwargs.pop("embed_dim", 48)))  # type: ignore[call-overload]
        network = SwinUNETR2D(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, **kwargs)
        if pretrained_weights:
            from .weights import load_pretrained

            load_pretrained(network.swinViT, pretrained_weights)
        return network
    raise ValueError(f"unknown segmentation transformer {name!r}; choose from {SEGMENTATION_TRANSFORMERS}")
