"""The PiCIE loss (Cho et al., CVPR 2021): cross-entropy against k-means pseudo-labels, within and across two views.

With per-pixel unit embeddings ``z_1, z_2`` (B, D, H, W) of two aligned views (same pixel grid, different
photometric transforms, see :mod:`s4mi_monai.transforms.picie`) and the frozen centroids ``μ^1, μ^2`` (K, D)
of each view's k-means:

- classifier of view v: ``C_v(z)_k = ⟨z, μ^v_k⟩`` (a 1x1 convolution with the centroids as weights, no bias);
- pseudo-labels: ``y_v = argmax_k −‖z_v − μ^v_k‖² = argmax_k −(1 − 2⟨z_v, μ^v_k⟩ + ‖μ^v_k‖²)``, from the detached
  embeddings;
- within-view ``L_w = ½ [CE(C_1(z_1), y_1) + CE(C_2(z_2), y_2)]``;
- cross-view ``L_c = ½ [CE(C_2(z_1), y_2) + CE(C_1(z_2), y_1)]``;
- ``L = ½ (L_w + L_c)``.

Each CE against ``y_v`` is a class-weighted mean ``Σ_i w_{y_i} ℓ_i / Σ_i w_{y_i}`` (``F.cross_entropy(weight=...)``)
with the weights ``w^v`` of view v's clusters, from their pixel frequencies ``f_k = n_k / Σ n`` in the epoch's
clustering:

- ``"frequency"`` (default): ``w_k = f_k``, the reference's ``CrossEntropyLoss(weight=counts / counts.sum())``
  (on unless ``--no_balance``). It is the default because it is what PiCIE and the S4MI fork trained with,
  so results stay comparable. Note what it does: a large cluster weighs *more* per pixel. With K = 2 and a
  background cluster of 80 % of the pixels, a background pixel counts 4x a lesion pixel, so background
  pixels carry 0.8·0.8 / (0.8·0.8 + 0.2·0.2) ≈ 94 % of the loss instead of 80 %: the weighting reinforces the
  dominant cluster rather than balancing it.
- ``"inverse_frequency"``: ``w_k = 1 / f_k`` rescaled to average 1 (clusters without pixels get 0): every
  cluster contributes equally, the usual balancing;
- ``"none"``: the plain mean over pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WEIGHTINGS", "PiCIELoss", "centroid_logits", "cluster_weights", "nearest_centroid_labels"]

WEIGHTINGS = ("frequency", "inverse_frequency", "none")


def centroid_logits(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) ``⟨z, μ_k⟩`` of (B, D, H, W) embeddings and (K, D) centroids."""
    return torch.einsum("bdhw,kd->bkhw", features, centroids.to(features.dtype))


def nearest_centroid_labels(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(B, H, W) index of the nearest centroid (squared Euclidean distance) of each pixel, without gradient."""
    features, centroids = features.detach().float(), centroids.float()
    negative_distances = 2 * centroid_logits(features, centroids) - centroids.square().sum(dim=1)[None, :, None, None]
    return negative_distances.argmax(dim=1)


def cluster_weights(frequencies: torch.Tensor | None, weighting: str = "frequency") -> torch.Tensor | None:
    """Cross-entropy class weights (K,) from cluster pixel counts or frequencies (module docstring); ``None`` for ``"none"``."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "none":
        return None
    if frequencies is None:
        raise ValueError(f"{weighting!r} weighting needs the cluster frequencies")
    frequencies = frequencies.float() / frequencies.float().sum()
    if weighting == "frequency":
        return frequencies
    populated = frequencies > 0
    inverse = torch.where(populated, 1 / frequencies.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(frequencies))
    return inverse * populated.sum() / inverse.sum()


class PiCIELoss(nn.Module):
    """``L = ½ (L_within + L_cross)`` of two aligned views (formulas and weightings in the module docstring).

    ``forward(z1, z2, centroids1, centroids2, frequencies1, frequencies2)`` returns a dict of scalar tensors:
    ``loss``, ``within_view`` and ``cross_view``. The frequencies (K,) are the pixel counts or fractions of
    each view's clusters; they may be ``None`` with ``weighting="none"``.
    """

    def __init__(self, weighting: str = "frequency") -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        centroids1: torch.Tensor,
        centroids2: torch.Tensor,
        frequencies1: torch.Tensor | None = None,
        frequencies2: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if z1.shape != z2.shape:
            raise ValueError(f"the two views' embeddings must be aligned, got shapes {tuple(z1.shape)} and {tuple(z2.shape)}")
        z1, z2 = z1.float(), z2.float()
        centroids1, centroids2 = centroids1.detach().float(), centroids2.detach().float()
        labels1, labels2 = nearest_centroid_labels(z1, centroids1), nearest_centroid_labels(z2, centroids2)
        weights1, weights2 = (
            None if weights is None else weights.to(z1.device)
            for weights in (cluster_weights(frequencies1, self.weighting), cluster_weights(frequencies2, self.weighting))
        )

        def cross_entropy(features: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None):
            return F.cross_entropy(centroid_logits(features, centroids), labels, weight=weights)

        within_view = 0.5 * (cross_entropy(z1, centroids1, labels1, weights1) + cross_entropy(z2, centroids2, labels2, weights2))
        cross_view = 0.5 * (cross_entropy(z1, centroids2, labels2, weights2) + cross_entropy(z2, centroids1, labels1, weights1))
        return {"loss": 0.5 * (within_view + cross_view), "within_view": within_view, "cross_view": cross_view}
