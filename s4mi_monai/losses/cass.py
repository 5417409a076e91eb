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


def cass_predictor_loss(p_cnn: torch.Tensor, z_cnn: torch.Tensor, p_vit: torch.Tensor, z_vit: torch.Tensor) -> torch.Tensor:
    """The predictor stabiliser (an opt-in deviation from CASS): each branch predicts the other's projection.

    ``L = ½ [D(p_cnn, sg(z_vit)) + D(p_vit, sg(z_cnn))]`` with ``D`` = :func:`cass_loss` (``2 − 2 cos``), ``p = q(z)``
    the branch's predictor output and ``sg`` stop-gradient (SimSiam's symmetric loss, across the two architectures
    instead of two views). The CNN still learns from the transformer and the transformer from the CNN, on one view,
    as CASS intends; the asymmetry (predictor on one side, fixed target on the other) is what keeps the two from
    agreeing on a constant output, the collapse CASS shows from random initialisation.
    """
    return 0.5 * (cass_loss(p_cnn, z_vit.detach()) + cass_loss(p_vit, z_cnn.detach()))


__all__ = ["cass_loss", "cass_predictor_loss"]
