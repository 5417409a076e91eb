"""Contrastive losses of semi-supervised contrastive segmentation (Hu et al., MICCAI 2021): global NT-Xent, pixel SupCon.

**Stage 1, global** (SimCLR NT-Xent, :func:`nt_xent_loss`). For N images and their two views' projections
``z_1 .. z_2N`` (cosine similarity ``s_ij = z_i·z_j / (‖z_i‖‖z_j‖)``), with ``p(i)`` the other view of image i::

    L = (1/2N) Σ_i −log[ exp(s_{i,p(i)}/τ) / Σ_{k≠i} exp(s_ik/τ) ],   τ = 0.5 (the reference)

**Stage 2, local** (pixel-wise SupCon, :class:`SupervisedPixelContrastiveLoss`). The sampled pixels of all
images of the batch and both views, with unit features ``f``, form one set A; for an anchor i::

    ℓ_i = −(1/|P(i)|) Σ_{p∈P(i)} log[ exp(f_i·f_p/τ) / Σ_{a∈A, a≠i} exp(f_i·f_a/τ) ]

where P(i) holds the pixels of A other than i with i's label (``supervised=True``; it always includes the same
pixel in the other view) or only the same pixel of the same image in the other view (``supervised=False``,
the unsupervised pixel-identity ablation, and what the released code trained until its late fix).
``L = mean of ℓ_i over the anchors``: the foreground pixels (label ≠ 0; background pixels are positives and
negatives of each other but never anchors, as the reference), every pixel with ``anchor_background=True`` or
with ``supervised=False``. τ = 0.1 by default (``run_coseg.sh``); there is no ``base_temperature`` factor.

Both losses run in fp32 with autocast off, so bf16 features are safe.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["NTXentLoss", "PIXEL_SAMPLING", "SupervisedPixelContrastiveLoss", "nt_xent_loss", "split_into_blocks", "stride_sample"]

PIXEL_SAMPLING = ("stride", "block")


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent of two views' (N, D) projections, a 2N-way softmax per anchor (module docstring)."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent_loss needs two (N, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat((z1, z2)).float(), dim=1)
        logits = (z @ z.T / temperature).fill_diagonal_(-math.inf)
        n_images = z1.shape[0]
        other_view = torch.arange(2 * n_images, device=z.device).roll(n_images)
        return F.cross_entropy(logits, other_view)


class NTXentLoss(nn.Module):
    """:func:`nt_xent_loss` at a fixed temperature, the stage-1 trainer's default loss."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(z1, z2, self.temperature)


def stride_sample(maps: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th pixel of (..., H, W) maps in both axes, starting at (0, 0), as the reference."""
    return maps[..., ::stride, ::stride]


def split_into_blocks(maps: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, C, H, W) maps as (n_blocks, B, C, block_size, block_size), blocks in row-major order; the sides must be
    multiples of ``block_size`` (the reference silently dropped the remainder)."""
    batch, channels, height, width = maps.shape
    if height % block_size or width % block_size:
        raise ValueError(f"block sampling needs sides that are multiples of block_size={block_size}, got {height}x{width}")
    rows, columns = height // block_size, width // block_size
    blocks = maps.reshape(batch, channels, rows, block_size, columns, block_size).permute(2, 4, 0, 1, 3, 5)
    return blocks.reshape(rows * columns, batch, channels, block_size, block_size)


def _anchor_losses(
    features: torch.Tensor, groups: torch.Tensor, anchors: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ℓ_i of the anchors (A,) given all (N, D) features and their (N,) positive groups: one (A, N) similarity block."""
    logits = features[anchors] @ features.T / temperature
    is_self = anchors[:, None] == torch.arange(features.shape[0], device=features.device)[None, :]
    log_denominator = torch.logsumexp(logits.masked_fill(is_self, -math.inf), dim=1)
    positives = (groups[anchors][:, None] == groups[None, :]) & ~is_self
    mean_positive_logit = (logits * positives).sum(dim=1) / positives.sum(dim=1)
    return log_denominator - mean_positive_logit


class SupervisedPixelContrastiveLoss(nn.Module):
    """Pixel-wise (Sup)Con of two intensity views (formula in the module docstring).

    ``forward(features1, features2, labels)``: the two views' per-pixel L2-normalised features (B, D, H, W), on the
    same pixel grid, and the labels (B, 1, H, W) (integer classes, 0 = background; ignored with ``supervised=False``).

    Pixel sampling, to keep the quadratic cost down:

    - ``"stride"``: every ``stride``-th pixel in both axes of features and labels; the loss is over all of them;
    - ``"block"``: the maps are cut into ``block_size`` x ``block_size`` blocks (sides must be multiples); each
      block, across the batch and both views, is one set A, and the loss is the mean of the blocks' losses.

    Skipping: a batch (``"stride"``) or block (``"block"``) without a foreground pixel after sampling adds nothing,
    as in the reference, even with ``anchor_background=True``; when nothing is left, ``forward`` returns ``None``, so
    the caller knows there is nothing to back-propagate (the stage-2 trainer then skips its optimizer step; a zero
    loss would still move Adam through its momentum and weight decay). With ``supervised=False`` nothing is skipped.

    Memory: the anchors are processed ``chunk_size`` at a time, each chunk one (chunk, |A|) similarity block with
    the log-sum-exp over all of A. Under autograd each chunk is recomputed in the backward pass
    (``torch.utils.checkpoint``), so at most one chunk's blocks are alive at once instead of |A|² entries; the value
    and gradients are those of the unchunked loss.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sampling: str = "stride",
        stride: int = 4,
        block_size: int = 32,
        anchor_background: bool = False,
        supervised: bool = True,
        chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        if sampling not in PIXEL_SAMPLING:
            raise ValueError(f"sampling must be one of {PIXEL_SAMPLING}, got {sampling!r}")
        if stride < 1 or block_size < 1 or chunk_size < 1:
            raise ValueError(f"stride, block_size and chunk_size must be positive, got {stride}, {block_size}, {chunk_size}")
        self.temperature = temperature
        self.sampling = sampling
        self.stride = stride
        self.block_size = block_size
        self.anchor_background = anchor_background
        self.supervised = supervised
        self.chunk_size = chunk_size

    def forward(self, features1: torch.Tensor, features2: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor | None:
        if features1.shape != features2.shape or features1.ndim != 4:
            shapes = f"{tuple(features1.shape)} and {tuple(features2.shape)}"
            raise ValueError(f"expected two (B, D, H, W) feature maps of one shape, got {shapes}")
        if self.supervised:
            if labels is None or labels.shape != (features1.shape[0], 1, *features1.shape[2:]):
                shape = None if labels is None else tuple(labels.shape)
                raise ValueError(f"the supervised loss needs (B, 1, H, W) labels matching the features, got {shape}")
            labels = labels.long()
        else:
            labels = torch.ones_like(features1[:, :1], dtype=torch.long)  # every pixel a "foreground" anchor
        with torch.autocast(features1.device.type, enabled=False):
            features1, features2, labels = features1.float(), features2.float(), labels.to(features1.device)
            if self.sampling == "stride":
                return self._set_loss(*(stride_sample(maps, self.stride) for maps in (features1, features2, labels)))
            block_losses = [
                loss
                for blocks in zip(*(split_into_blocks(maps, self.block_size) for maps in (features1, features2, labels)))
                if (loss := self._set_loss(*blocks)) is not None
            ]
            return torch.stack(block_losses).mean() if block_losses else None

    def _set_loss(self, features1: torch.Tensor, features2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Mean ℓ_i over the anchors of one set (both views of (B, D, h, w) maps); ``None`` without foreground."""
        pixel_labels = labels.reshape(-1)
        if not (pixel_labels != 0).any():
            return None
        n_pixels = pixel_labels.numel()
        dimension = features1.shape[1]
        features = torch.cat([view.permute(0, 2, 3, 1).reshape(-1, dimension) for view in (features1, features2)])
        pixel_groups = pixel_labels if self.supervised else torch.arange(n_pixels, device=labels.device)
        groups = torch.cat((pixel_groups, pixel_groups))
        anchor_labels = torch.cat((pixel_labels, pixel_labels))
        anchors = torch.arange(2 * n_pixels, device=labels.device)
        if not self.anchor_background:
            anchors = anchors[anchor_labels != 0]
        chunks = anchors.split(self.chunk_size)
        if len(chunks) == 1 or not torch.is_grad_enabled():
            total = sum(_anchor_losses(features, groups, chunk, self.temperature).sum() for chunk in chunks)
        else:
            total = sum(
                checkpoint(_anchor_losses, features, groups, chunk, self.temperature, use_reentrant=False).sum() for chunk in chunks
            )
        return total / anchors.numel()
