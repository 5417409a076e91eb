"""Classification backbones (ResNet, ViT) built from MONAI networks, and a linear-head classifier.

Every backbone maps ``(B, C, H, W)`` images to ``(B, embed_dim)`` features, which is what DINO/CASS
heads and linear probes need. ResNets use the torchvision stem (7x7 stride-2 conv, max-pool) and
projection shortcuts without bias, so torchvision ImageNet weights load by name. ViTs return the CLS
embedding after the final LayerNorm and interpolate their position table to the input grid, so a ViT
built for 224 px also takes DINO's 96 px local crops.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from monai.networks.nets import ViT
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes
from torch import nn

from .weights import interpolate_pos_embed, load_pretrained

__all__ = ["BACKBONES", "Classifier", "ResNetBackbone", "ViTBackbone", "build_backbone", "interpolate_pos_embed"]

BACKBONES = ("resnet18", "resnet50", "vit_ti16", "vit_s16", "vit_b16")
RESNET_LAYOUTS: dict[str, tuple[type[ResNetBlock] | type[ResNetBottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (ResNetBlock, (2, 2, 2, 2)),
    "resnet34": (ResNetBlock, (3, 4, 6, 3)),
    "resnet50": (ResNetBottleneck, (3, 4, 6, 3)),
}


class _ViTSize(NamedTuple):
    hidden_size: int
    mlp_dim: int
    num_heads: int


VIT_SIZES = {
    "vit_ti16": _ViTSize(192, 768, 3),
    "vit_s16": _ViTSize(384, 1536, 6),
    "vit_b16": _ViTSize(768, 3072, 12),
}
VIT_PATCH_SIZE = 16
VIT_DEPTH = 12


class ResNetBackbone(ResNet):
    """MONAI 2D ResNet with torchvision's structure, returning globally pooled ``(B, embed_dim)`` features.

    ``feature_maps`` exposes the five encoder stages (strides 2, 4, 8, 16, 32) for U-Net decoders.
    TorchScript: scriptable.
    """

    def __init__(self, name: str = "resnet50", in_channels: int = 3) -> None:
        if name not in RESNET_LAYOUTS:
            raise ValueError(f"unknown ResNet {name!r}; choose from {tuple(RESNET_LAYOUTS)}")
        block, layers = RESNET_LAYOUTS[name]
        super().__init__(
            block,
            list(layers),
            get_inplanes(),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            bias_downsample=False,
            feed_forward=False,
        )
        self.stage_channels: tuple[int, ...] = (64, *(width * block.expansion for width in get_inplanes()))
        self.embed_dim = self.stage_channels[-1]

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stem output after ReLU (stride 2, before max-pool) and layer1..layer4 (strides 4, 8, 16, 32)."""
        stem = self.act(self.bn1(self.conv1(x)))
        stage1 = self.layer1(self.maxpool(stem))
        stage2 = self.layer2(stage1)
        stage3 = self.layer3(stage2)
        stage4 = self.layer4(stage3)
        return stem, stage1, stage2, stage3, stage4


class ViTBackbone(ViT):
    """MONAI 2D ViT returning the CLS embedding after the final LayerNorm, at any input size.

    MONAI's ViT only takes the size it was built for; here the learned position table is resampled
    (bicubic) to the patch grid of each input, and left untouched at the build size. Input sides must be
    multiples of the patch size. MONAI gives the CLS token no position embedding (the table has one entry
    per patch), so nothing about the CLS token changes with the size. TorchScript: scriptable.
    """

    def __init__(
        self,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        image_size: int = 224,
        in_channels: int = 3,
        patch_size: int = VIT_PATCH_SIZE,
        num_layers: int = VIT_DEPTH,
    ) -> None:
        if image_size % patch_size != 0:
            raise ValueError(f"ViT image_size must be a multiple of the patch size {patch_size}, got {image_size}")
        super().__init__(
            in_channels=in_channels,
            img_size=(image_size, image_size),
            patch_size=(patch_size, patch_size),
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            classification=True,
            spatial_dims=2,
            post_activation=None,
            qkv_bias=True,
        )
        self.classification_head = nn.Identity()
        for block in self.blocks:  # MONAI builds a cross-attention norm that self-attention blocks never use:
            block.norm_cross_attn.requires_grad_(False)  # frozen, DistributedDataParallel does not wait for its gradient
        self.embed_dim = hidden_size
        self.patch_size = patch_size
        self.build_grid = (image_size // patch_size, image_size // patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self._check_input_size(x.shape[-2], x.shape[-1])
        tokens = self.patch_embedding.patch_embeddings(x)
        grid = (tokens.shape[-2], tokens.shape[-1])
        tokens = tokens.flatten(2).transpose(-1, -2)
        positions = interpolate_pos_embed(self.patch_embedding.position_embeddings, self.build_grid, grid)
        tokens = self.patch_embedding.dropout(tokens + positions)
        cls_token = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls_token, tokens), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]

    def _check_input_size(self, height: int, width: int) -> None:
        patch = self.patch_size
        if height % patch != 0 or width % patch != 0 or height < patch or width < patch:
            raise ValueError(
                f"ViT input sides must be positive multiples of the patch size {patch} "
                f"(e.g. {6 * patch}, {14 * patch}), got {height}x{width}"
            )


def build_backbone(name: str, image_size: int = 224, in_channels: int = 3) -> nn.Module:
    """A feature extractor ``(B, C, H, W) -> (B, embed_dim)``; ``image_size`` only matters for ViTs."""
    if name in ("resnet18", "resnet50"):
        return ResNetBackbone(name, in_channels)
    if name in VIT_SIZES:
        size = VIT_SIZES[name]
        return ViTBackbone(size.hidden_size, size.mlp_dim, size.num_heads, image_size, in_channels)
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")


class Classifier(nn.Module):
    """Backbone + dropout + linear head; ``forward`` returns logits ``(B, num_classes)``.

    ``pretrained_weights`` (a local torchvision/timm/own checkpoint) initialises the backbone only, since
    the head of another task never fits. TorchScript: scriptable (and traceable at a fixed input size).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 2,
        image_size: int = 224,
        in_channels: int = 3,
        pretrained_weights: str | Path | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, image_size, in_channels)
        if pretrained_weights:
            load_pretrained(self.backbone, pretrained_weights)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))
