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


def spread_penalties(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance and covariance terms (Bardes et al. 2022) of a batch of L2-normalised outputs.

    With ``u = √D · z / ||z||`` (unit-variance scale for outputs spread over the sphere), over the batch:
    ``v = mean_d relu(1 − sqrt(Var(u_d) + eps))`` (1 when every image has the same output, 0 when every
    dimension varies) and ``c = Σ_{i≠j} Cov(u)_ij² / D`` (0 when the dimensions are decorrelated). Working on
    the normalised outputs matters: the CASS loss ignores the scale, so raw outputs could meet the variance
    target by growing while their directions collapse.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"spread_penalties needs a (B >= 2, D) batch, got {tuple(z.shape)}")
    n, dim = z.shape
    u = F.normalize(z, dim=1) * dim**0.5
    u = u - u.mean(dim=0)
    variance = F.relu(1 - torch.sqrt(u.var(dim=0) + eps)).mean()
    covariance = (u.T @ u) / (n - 1)
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return variance, off_diagonal.pow(2).sum() / dim


def cass_variance_loss(
    z_cnn: torch.Tensor, z_vit: torch.Tensor, variance_weight: float = 1.0, covariance_weight: float = 0.04
) -> torch.Tensor:
    """The variance stabiliser (an opt-in deviation from CASS): the CASS loss plus VICReg's spread terms per branch.

    ``L = D(z_cnn, z_vit) + α [v(z_cnn) + v(z_vit)] + β [c(z_cnn) + c(z_vit)]`` with ``D`` = :func:`cass_loss` and
    ``v``, ``c`` from :func:`spread_penalties`; α = 1, β = 0.04 keep VICReg's ratio of invariance to variance to
    covariance (25 : 25 : 1). CASS's idea is kept whole (one view, the CNN and the transformer pull each other,
    both learn, no stop-gradient); the extra terms make the constant output, CASS's collapse from random
    initialisation, cost α per branch instead of nothing.
    """
    variance_cnn, covariance_cnn = spread_penalties(z_cnn)
    variance_vit, covariance_vit = spread_penalties(z_vit)
    spread = variance_weight * (variance_cnn + variance_vit) + covariance_weight * (covariance_cnn + covariance_vit)
    return cass_loss(z_cnn, z_vit) + spread


__all__ = ["cass_loss", "cass_predictor_loss", "cass_variance_loss", "spread_penalties"]
