"""Classification losses: class-weighted cross-entropy, binary cross-entropy and sigmoid focal loss.

One module, :class:`ClassificationLoss`, covers multi-class and multi-label heads and casts the labels the
way MONAI's trainer hands them over, so a bundle picks the loss by name (``--loss_kind``) and class
weights by ``--class_weighting``. The formulas are in the docstrings of :class:`ClassificationLoss` and
:func:`inverse_frequency_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses.focal_loss import sigmoid_focal_loss
from monai.utils.type_conversion import convert_to_tensor
from torch import nn

LOSS_KINDS = ("auto", "ce", "bce", "focal")


def inverse_frequency_weights(labels: Sequence[int] | np.ndarray, num_classes: int, multi_label: bool = False) -> torch.Tensor:
    """Per-class weights ``w_c = N / (C n_c)``, rescaled to average 1, so rare classes weigh more.

    ``n_c`` is the number of items of class ``c`` (single-label: ``labels`` holds N class indices, shape
    (N,) or (N, 1)) or of items positive for label ``c`` (multi-label: ``labels`` is the (N, C) 0/1
    matrix). The rescaling keeps the loss on the scale of the unweighted one, so learning rates carry
    over. A class with ``n_c = 0`` has no finite weight and raises a ``ValueError`` naming it.
    """
    labels = np.asarray(labels)
    if multi_label:
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise ValueError(f"multi-label labels must be an (N, {num_classes}) 0/1 matrix, got shape {labels.shape}")
        counts = (labels > 0).sum(axis=0)
    else:
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise ValueError(f"single-label labels must be N class indices, got shape {labels.shape}")
        if (labels != np.round(labels)).any():
            raise ValueError("single-label labels must be whole class indices, got fractional values")
        if labels.size and not (0 <= labels.min() and labels.max() < num_classes):
            raise ValueError(f"class indices must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
        counts = np.bincount(labels.astype(int), minlength=num_classes)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        kind = "positive training items" if multi_label else "training items"
        raise ValueError(f"class(es) {empty} have no {kind}; their inverse-frequency weight is undefined")
    weights = len(labels) / (num_classes * counts)
    return torch.as_tensor(weights / weights.mean(), dtype=torch.float32)


class ClassificationLoss(nn.Module):
    """Loss of a classification head on logits ``z`` (B, C), for targets as the dataloader gives them.

    Targets are class indices, (B,) or (B, 1) of any numeric dtype, for a multi-class head, and 0/1
    (B, C) for a multi-label head. ``w_c`` are the optional ``class_weights`` (1 without them).

    - ``"ce"`` (multi-class only), torch's weighted mean:
      ``L = sum_i w_{y_i} (-log softmax(z_i)_{y_i}) / sum_i w_{y_i}``.
    - ``"bce"``: ``L = 1/(B C) sum_{i,c} w_c [-y_ic log s(z_ic) - (1 - y_ic) log(1 - s(z_ic))]``, ``s`` the
      sigmoid. ``w_c`` scales a label's whole term, balancing labels against each other like ``"ce"``
      and ``"focal"`` do; a ``pos_weight`` would instead trade positives against negatives within a label
      and shift the probabilities away from calibration.
    - ``"focal"`` (Lin et al. 2017, sigmoid form): ``L = 1/(B C) sum_{i,c} -a_c (1 - p_t)^gamma log p_t`` with
      ``p = s(z_ic)``, ``p_t = p`` if ``y_ic = 1`` else ``1 - p``, and ``a_c = w_c``; ``gamma = 0`` gives ``"bce"``.
    - ``"auto"``: ``"ce"`` for a multi-class head, ``"bce"`` for a multi-label one.

    ``"bce"`` and ``"focal"`` on a multi-class head use the one-hot encoding of the class indices as ``y``.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        multi_label: bool,
        kind: str = "auto",
        class_weights: torch.Tensor | Sequence[float] | None = None,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"unknown classification loss {kind!r}; use one of {', '.join(LOSS_KINDS)}")
        if kind == "ce" and multi_label:
            raise ValueError("cross-entropy needs one class per item; use 'bce' or 'focal' for multi-label heads")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be non-negative, got {focal_gamma}")
        self.multi_label = multi_label
        self.kind = kind if kind != "auto" else ("bce" if multi_label else "ce")
        self.focal_gamma = focal_gamma
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights is not None and (weights.ndim != 1 or (weights < 0).any()):
            raise ValueError(f"class_weights must be one non-negative weight per class, got {weights.tolist()}")
        self.register_buffer("class_weights", weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = convert_to_tensor(logits, track_meta=False)
        weights = self._weights_for(logits)
        if self.kind == "ce":
            return F.cross_entropy(logits, self._class_indices(targets, logits), weight=weights)
        if self.multi_label:
            binary_targets = self._binary_targets(targets, logits)
        else:
            binary_targets = F.one_hot(self._class_indices(targets, logits), logits.shape[1]).to(logits.dtype)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(logits, binary_targets, weight=weights)
        focal = sigmoid_focal_loss(logits, binary_targets, gamma=self.focal_gamma)
        return (focal if weights is None else focal * weights).mean()

    def _weights_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        if self.class_weights.numel() != logits.shape[1]:
            raise ValueError(f"{self.class_weights.numel()} class weights for logits of {logits.shape[1]} classes")
        return self.class_weights.to(device=logits.device, dtype=logits.dtype)

    @staticmethod
    def _class_indices(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B,) int64 class indices from (B,) or (B, 1) targets of any numeric dtype."""
        targets = convert_to_tensor(targets, track_meta=False, device=logits.device, wrap_sequence=True)
        if targets.ndim == 2 and targets.shape[1] == 1:
            targets = targets[:, 0]
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"multi-class targets must be class indices (B,) or (B, 1) for logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
            )
        if targets.is_floating_point() and not torch.equal(targets, targets.round()):
            raise ValueError("multi-class targets must be whole class indices, got fractional values")
        return targets.long()

    @staticmethod
    def _binary_targets(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) targets in the logits' float dtype."""
        targets = convert_to_tensor(targets, track_meta=False, device=logits.device, wrap_sequence=True)
        if targets.shape != logits.shape:
            raise ValueError(f"multi-label targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
        return targets.to(logits.dtype)


def classification_loss(
    multi_label: bool,
    kind: str = "auto",
    class_weights: torch.Tensor | Sequence[float] | None = None,
    focal_gamma: float = 2.0,
) -> nn.Module:
    """The :class:`ClassificationLoss` of a bundle (formulas there): ``kind`` is ``auto``, ``ce``, ``bce`` or ``focal``."""
    return ClassificationLoss(multi_label, kind, class_weights, focal_gamma)


__all__: Sequence[str] = ("LOSS_KINDS", "ClassificationLoss", "classification_loss", "inverse_frequency_weights")
