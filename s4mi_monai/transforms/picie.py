"""PiCIE's two views of an image (Cho et al., CVPR 2021): photometric on both, geometric on view 1's input and view 2's features.

For an image ``x`` (the loader's base image, ``res2`` in the reference) and its epoch's parameters:

- view 1: ``G(P_1 x)``, the photometric transform P_1, then the geometric transform G (a random resized crop
  with area fraction in ``[min_scale, 1]`` and aspect ratio in [3/4, 4/3], resized to ``input_size``, and a
  horizontal flip with probability ``flip_prob``), giving ``z_1 = f(G(P_1 x))``;
- view 2: ``P_2 x`` resized to ``input_size``; the network's output is then cropped by the same box (scaled
  to the feature map), resized to view 1's feature size and flipped the same way: ``z_2 = G(f(P_2 x))``.

So ``z_1`` and ``z_2`` lie on the same pixel grid: invariance is learnt across P_1/P_2, equivariance to G.

Photometric P_v (MoCo-v2 style, each operation an independent coin): brightness, contrast and saturation
factors U[0.7, 1.3] each with p = 0.8, hue shift U[-0.1, 0.1] turns with p = 0.8 (in that order), grayscale
with p = 0.2, then Gaussian blur with σ ∈ U[0.1, 2] pixels with p = 0.5. The reference meant to apply the
grayscale too but never did (it stores ``'grey'`` and tests for ``'gray'``); here it is applied.
``grayscale_input`` turns every image into 3-channel gray first, as S4MI did for Dermofit and ISIC.

Parameters are drawn once per (seed, epoch, image index) from their own generator, so the clustering pass
and the training pass of an epoch see the very same views, whatever the batch order, and a resumed run
draws what the uninterrupted one drew. :meth:`PiCIEViews.reshuffle` moves to the next epoch's draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from s4mi_monai.transforms.color import adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, gaussian_blur, rgb_to_grayscale
from s4mi_monai.transforms.multicrop import resized_crop, sample_crop_boxes

__all__ = ["PiCIEViews", "ViewParameters"]

CROP_RATIO = (3 / 4, 4 / 3)
JITTER_ADJUSTMENTS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
GRAYSCALE, BLUR = len(JITTER_ADJUSTMENTS), len(JITTER_ADJUSTMENTS) + 1
N_PHOTOMETRIC = len(JITTER_ADJUSTMENTS) + 2


@dataclass
class ViewParameters:
    """The draws of a batch: ``applies``/``values`` (B, 2 views, 6 operations: brightness, contrast, saturation,
    hue, grayscale, blur), crop ``boxes`` (B, 4) (top, left, height, width) in base-image pixels, ``flips`` (B,)."""

    applies: np.ndarray
    values: np.ndarray
    boxes: np.ndarray
    flips: np.ndarray


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise TypeError(f"PiCIE views need uint8 images or float images in [0, 1], got {images.dtype}")
    return images.float()


class PiCIEViews:
    """The two network inputs of a batch and the geometric transform of view 2's features (module docstring).

    ``input_size`` (``res1``) is the side of both network inputs; ``None`` keeps the base image's size (S4MI:
    res = res1 = res2). ``normalize`` maps a (B, 3, H, W) view in [0, 1] to network input, e.g.
    :class:`~s4mi_monai.transforms.NormalizeBatch` (the reference's ImageNet normalisation; S4MI used none,
    the default ``None``). Batches are (B, 3, H, W) uint8 or [0, 1] float images with their dataset indices.
    """

    def __init__(
        self,
        input_size: int | None = None,
        min_scale: float = 0.5,
        flip_prob: float = 0.5,
        jitter: tuple[float, float] = (0.7, 1.3),
        hue: tuple[float, float] = (-0.1, 0.1),
        jitter_prob: float = 0.8,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_prob: float = 0.5,
        grayscale_prob: float = 0.2,
        grayscale_input: bool = False,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must be a range (low, high) with 0 < low <= high, got {blur_sigma}")
        self.input_size = input_size
        self.min_scale = float(min_scale)
        self.flip_prob = float(flip_prob)
        self.probabilities = np.array([jitter_prob] * len(JITTER_ADJUSTMENTS) + [grayscale_prob, blur_prob])
        self.value_ranges = np.array([jitter, jitter, jitter, hue, (0.0, 0.0), blur_sigma], dtype=float)
        self.grayscale_input = bool(grayscale_input)
        self.normalize = normalize
        self.seed = int(seed)
        self.epoch = 0

    def reshuffle(self, epoch: int) -> None:
        """Use the draws of ``epoch`` from now on (once per epoch, before clustering)."""
        self.epoch = int(epoch)

    def parameters(self, indices: Sequence[int] | torch.Tensor, height: int, width: int) -> ViewParameters:
        """The current epoch's draws of the images ``indices`` of a dataset of ``height x width`` base images."""
        draws = [self._draw(int(index), height, width) for index in torch.as_tensor(indices).reshape(-1).tolist()]
        return ViewParameters(*(np.stack(part) for part in zip(*draws)))

    def _draw(self, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        applies = rng.random((2, N_PHOTOMETRIC)) < self.probabilities
        values = rng.uniform(self.value_ranges[:, 0], self.value_ranges[:, 1], size=(2, N_PHOTOMETRIC))
        box = sample_crop_boxes(height, width, 1, (self.min_scale, 1.0), CROP_RATIO, rng)[0]
        return applies, values, box, np.asarray(rng.random() < self.flip_prob)

    def photometric(self, images: torch.Tensor, parameters: ViewParameters, view: int) -> torch.Tensor:
        """P_view of a (B, 3, H, W) batch in [0, 1] (``view`` 0 or 1)."""
        out = images.clone()
        applies, values = parameters.applies[:, view], parameters.values[:, view]
        for operation in range(N_PHOTOMETRIC):
            rows = np.flatnonzero(applies[:, operation])
            if not rows.size:
                continue
            at = torch.as_tensor(rows, device=out.device)
            if operation == GRAYSCALE:
                out[at] = rgb_to_grayscale(out[at]).expand(-1, 3, -1, -1)
            elif operation == BLUR:
                out[at] = gaussian_blur(out[at], values[rows, operation])
            else:
                out[at] = JITTER_ADJUSTMENTS[operation](out[at], values[rows, operation])
        return out

    def view_inputs(self, images: torch.Tensor, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ViewParameters]:
        """Network inputs ``G(P_1 x)`` and ``P_2 x`` (both ``input_size``, normalised) and the batch's draws."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"PiCIE views need a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        images = _to_unit_float(images)
        if self.grayscale_input:
            images = rgb_to_grayscale(images).expand(-1, 3, -1, -1)
        height, width = images.shape[-2:]
        parameters = self.parameters(indices, height, width)
        if len(parameters.boxes) != images.shape[0]:
            raise ValueError(f"got {len(parameters.boxes)} indices for {images.shape[0]} images")
        size = (height, width) if self.input_size is None else (self.input_size, self.input_size)
        view1 = resized_crop(self.photometric(images, parameters, 0), parameters.boxes, size, "bilinear", parameters.flips).clamp(0, 1)
        view2 = self.photometric(images, parameters, 1)
        if view2.shape[-2:] != size:
            view2 = F.interpolate(view2, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        if self.normalize is not None:
            view1, view2 = self.normalize(view1), self.normalize(view2)
        return view1, view2, parameters

    def align_features(
        self, features: torch.Tensor, parameters: ViewParameters, base_size: tuple[int, int], output_size: tuple[int, int]
    ) -> torch.Tensor:
        """G on view 2's (B, D, h, w) feature map: view 1's box scaled from the ``base_size`` image to the map, resized
        (bilinear) to ``output_size`` (view 1's feature size), flipped as view 1."""
        row_scale, column_scale = features.shape[-2] / base_size[0], features.shape[-1] / base_size[1]
        boxes = parameters.boxes * np.array([row_scale, column_scale, row_scale, column_scale])
        return resized_crop(features, boxes, output_size, "bilinear", parameters.flips)
