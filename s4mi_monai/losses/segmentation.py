"""Segmentation losses of cross teaching (Luo et al., MIDL 2022; the SSL4MIS code).

With ``p = softmax(logits)`` of shape (B, K, H, W) and ``g`` a one-hot target of the same shape:

- SSL4MIS Dice loss (squared denominators, pooled over the batch, mean over all K classes, background
  included): ``Dice(p, g) = 1/K Σ_c [1 − (2 Σ p_c g_c + ε) / (Σ p_c² + Σ g_c² + ε)]``, ``ε = 1e-5``.
- Supervised term of one network on the L labeled images: ``½ [CE(logits[:L], y) + Dice(p[:L], y)]``.
- Cross-teaching term of network a on the unlabeled images U, taught by network b:
  ``Dice(p_a[U], onehot(argmax p_b[U]))``, the pseudo-label detached (no confidence threshold, no CE).
- Total: ``L = L_sup^a + λ L_ct^a + L_sup^b + λ L_ct^b``, one backward for both networks.

When a batch holds no unlabeled image (100 % labels), the cross-teaching term is taken on all images of
the batch, so the two networks still teach each other on the labeled images' predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossTeachingLoss", "ssl4mis_dice_loss", "supervised_segmentation_loss"]

DICE_SMOOTH = 1e-5


def _one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) class indices -> (B, K, H, W) float one-hot."""
    if target.ndim == 4:
        if target.shape[1] != 1:
            raise ValueError(f"target must hold class indices with one channel, got shape {tuple(target.shape)}")
        target = target[:, 0]
    return F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).float()


def ssl4mis_dice_loss(probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSL4MIS ``DiceLoss`` on softmax probabilities (B, K, H, W) and class indices (B, [1,] H, W); formula above."""
    num_classes = probabilities.shape[1]
    one_hot = _one_hot(target, num_classes)
    if one_hot.shape != probabilities.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not fit probabilities {tuple(probabilities.shape)}")
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    denominator = (probabilities * probabilities).sum(dims) + (one_hot * one_hot).sum(dims)
    return (1 - (2 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)).mean()


def supervised_segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``½ [CE(logits, y) + Dice(softmax(logits), y)]`` with the SSL4MIS Dice."""
    indices = target[:, 0] if target.ndim == 4 else target
    cross_entropy = F.cross_entropy(logits, indices.long())
    return 0.5 * (cross_entropy + ssl4mis_dice_loss(torch.softmax(logits, dim=1), indices))


class CrossTeachingLoss(nn.Module):
    """The cross-teaching objective of two networks on one batch (formula in the module docstring).

    ``forward(logits_a, logits_b, labels, weight)``: ``labels`` are the masks of the first
    ``labels.shape[0]`` images of the batch (the labeled ones), ``weight`` is λ(t). Returns a dict of
    scalar tensors: ``loss`` (to backpropagate), ``supervised_a``, ``supervised_b``,
    ``cross_teaching_a``, ``cross_teaching_b``.
    """

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, weight: float) -> dict[str, torch.Tensor]:
        if logits_a.shape != logits_b.shape:
            raise ValueError(f"both networks must give logits of one shape, got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}")
        n_labeled = labels.shape[0]
        if not 0 < n_labeled <= logits_a.shape[0]:
            raise ValueError(f"a batch needs 1 to {logits_a.shape[0]} labeled images, got {n_labeled}")
        supervised_a = supervised_segmentation_loss(logits_a[:n_labeled], labels)
        supervised_b = supervised_segmentation_loss(logits_b[:n_labeled], labels)
        taught = slice(n_labeled, None) if n_labeled < logits_a.shape[0] else slice(None)
        probabilities_a = torch.softmax(logits_a[taught], dim=1)
        probabilities_b = torch.softmax(logits_b[taught], dim=1)
        pseudo_a = probabilities_a.detach().argmax(dim=1)
        pseudo_b = probabilities_b.detach().argmax(dim=1)
        cross_teaching_a = ssl4mis_dice_loss(probabilities_a, pseudo_b)
        cross_teaching_b = ssl4mis_dice_loss(probabilities_b, pseudo_a)
        loss = supervised_a + weight * cross_teaching_a + supervised_b + weight * cross_teaching_b
        return {
            "loss": loss,
            "supervised_a": supervised_a,
            "supervised_b": supervised_b,
            "cross_teaching_a": cross_teaching_a,
            "cross_teaching_b": cross_teaching_b,
        }
