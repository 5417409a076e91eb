"""CASS loss (Singh et al., MLHC 2023): agreement between a CNN and a transformer on the same augmented image.

The two networks see one augmented view of each image; the loss pulls their outputs together. There is
no projection head, predictor, momentum teacher, negative pair or stop-gradient: both networks learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cass_loss(z_cnn: torch.Tensor, z_vit: torch.Tensor) -> torch.Tensor:
    """``L = mean_b [2 - 2 cos(z_cnn_b, z_vit_b)]`` over the batch, for (B, D) outputs of the two networks.

    This is BYOL's normalised MSE, ``||z_cnn / ||z_cnn|| - z_vit / ||z_vit|| ||^2``, so it lies in [0, 4]
    (0: same direction, 2: orthogonal, 4: opposite) and ignores the scale of either output. It is
    symmetric and neither side is detached, so gradients reach both networks.

    The reference notebook never calls ``zero_grad()`` in its pretraining loop, so its gradients
    accumulate over the whole run. That is a bug we do not copy: train with this loss zeroing the
    gradients of both networks every step.
    """
    if z_cnn.ndim != 2 or z_cnn.shape != z_vit.shape:
        raise ValueError(f"cass_loss needs two (B, D) outputs of the same shape, got {tuple(z_cnn.shape)} and {tuple(z_vit.shape)}")
    cosine = (F.normalize(z_cnn, dim=1) * F.normalize(z_vit, dim=1)).sum(dim=1)
    return (2 - 2 * cosine).mean()


__all__ = ["cass_loss"]
