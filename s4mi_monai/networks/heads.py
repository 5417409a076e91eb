"""Self-supervised heads: the DINO projection head, a CASS projection, and DINO's multi-crop wrapper.

Heads take the ``(B, embed_dim)`` features of the backbones in :mod:`s4mi_monai.networks.classifiers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead", "MultiCropWrapper", "ProjectionHead"]


class DINOHead(nn.Module):
    """The official DINO head: MLP → L2-normalisation → weight-normalised linear layer without bias.

    ``mlp``: ``n_layers`` Linear layers ``in_dim → hidden_dim → … → bottleneck_dim`` with GELU (and
    BatchNorm1d before it when ``use_bn``) between them; one layer maps ``in_dim → bottleneck_dim`` directly.
    Its Linear weights are initialised trunc_normal(std 0.02), biases zero.

    ``last_layer``: ``W = g · V / ‖V‖`` row by row (``torch.nn.utils.parametrizations.weight_norm``,
    parameters ``last_layer.parametrizations.weight.original0`` = g (out_dim, 1) and ``original1`` = V),
    mapping the unit-norm bottleneck ``z`` to ``W z``: with g = 1 every output is a cosine similarity
    in [−1, 1]. g starts at 1 and, with ``norm_last_layer`` (the official default), stays 1:
    it does not require gradients. Checkpoints of the official code, with the deprecated
    ``weight_g``/``weight_v`` keys, load as well (PyTorch converts them).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        self.mlp = self._build_mlp(in_dim, hidden_dim, bottleneck_dim, n_layers, use_bn)
        self.mlp.apply(self._init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)
        self.out_dim = out_dim

    @staticmethod
    def _build_mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, n_layers: int, use_bn: bool) -> nn.Sequential:
        widths = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(width_in, width_out))
            if index < n_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(width_out))
                layers.append(nn.GELU())
        return nn.Sequential(*layers)

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        bottleneck = F.normalize(self.mlp(features), dim=-1, p=2)
        return self.last_layer(bottleneck)


class ProjectionHead(nn.Linear):
    """CASS projection: one Linear layer (with bias) from a backbone's features to a dimension shared by
    the CNN and the transformer branch (1000, the size of the ImageNet heads CASS uses as projections)."""

    def __init__(self, in_dim: int, out_dim: int = 1000) -> None:
        super().__init__(in_dim, out_dim)


class PredictionHead(nn.Sequential):
    """SimSiam's predictor ``Linear(d, h) → BatchNorm → ReLU → Linear(h, d)``, h = d / 4 by default (Chen & He 2021).

    Used by CASS's opt-in predictor stabiliser (:func:`s4mi_monai.losses.cass_predictor_loss`): each branch predicts
    the other's projection, which is held fixed (stop-gradient), so a constant output no longer minimises the loss
    for free.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None) -> None:
        hidden = hidden_dim or max(1, dim // 4)
        super().__init__(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops of several resolutions (official ``MultiCropWrapper``).

    Consecutive crops with the same shape form a group; the backbone runs once per group on the
    concatenated group, the head once on all features. The output is ``head(cat(backbone(crop_i)))``,
    rows in crop order, so with crops ``[g1, g2, l1..lN]`` of batch B it is ``(n_crops·B, out_dim)`` as
    :class:`s4mi_monai.losses.dino.DINOLoss` expects. A single tensor counts as a list of one crop.
    Outputs equal running each crop alone unless the backbone mixes the batch (BatchNorm in training
    mode): then statistics are per resolution group, as in the official code.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_with_features(crops)[1]

    def forward_with_features(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(backbone features, head output)``, both ``(n_crops·B, ·)`` in crop order; the features serve collapse monitoring."""
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        features = torch.cat([self.backbone(torch.cat(group)) for group in self._consecutive_equal_shapes(crops)])
        return features, self.head(features)

    @staticmethod
    def _consecutive_equal_shapes(crops: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        groups: list[list[torch.Tensor]] = []
        for crop in crops:
            if groups and groups[-1][-1].shape[1:] == crop.shape[1:]:
                groups[-1].append(crop)
            else:
                groups.append([crop])
        return groups
