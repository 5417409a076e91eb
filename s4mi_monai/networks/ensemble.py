"""Predicting with the networks of a two-network bundle: one of them, or the mean of their softmaxes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PREDICTION_CHOICES", "SoftmaxEnsemble", "select_prediction_network"]

PREDICTION_CHOICES = ("cnn", "transformer", "mean")


class SoftmaxEnsemble(nn.Module):
    """``log(mean_k softmax(member_k(x)))``: a softmax of the output gives the members' mean probabilities.

    Returning log-probabilities keeps the contract of a single segmentation network (logits in, the
    bundle's softmax/argmax post-processing after), so inference configs need no special case.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two networks, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(member(x), dim=1) for member in self.members]).mean(dim=0)
        return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


def select_prediction_network(predict_with: str, cnn: nn.Module, transformer: nn.Module) -> nn.Module:
    """The network that predicts: ``"cnn"``, ``"transformer"`` or ``"mean"`` (:class:`SoftmaxEnsemble` of both)."""
    if predict_with == "cnn":
        return cnn
    if predict_with == "transformer":
        return transformer
    if predict_with == "mean":
        return SoftmaxEnsemble([cnn, transformer])
    raise ValueError(f"predict_with must be one of {PREDICTION_CHOICES}, got {predict_with!r}")
