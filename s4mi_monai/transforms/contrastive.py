"""Augmentations of the three stages of semi-supervised contrastive segmentation (Hu et al., MICCAI 2021), as MONAI lists.

Each function returns a list of configured MONAI dictionary transforms, to append to a loading pipeline (in
Python or from a bundle's JSON, e.g. ``"$s4mi_monai.transforms.local_contrastive_transforms()"``). They run per
image in the data loader, so every image gets its own draw, and the two views of stages 1 and 2 are made by
copying the image (``CopyItemsd``) and augmenting each copy with its own transform instances: two independent
draws per image. Seeding is MONAI's: ``Compose.set_random_state`` / ``monai.utils.set_determinism`` give every
transform its own seed, and MONAI's DataLoader reseeds the workers, so a seeded run repeats.

Inputs are float images (C, H, W) on the intensity scale of the pipeline (e.g. [0, 1]) and, for stage 3,
masks (1, H, W) under ``label``.

- stage 1, :func:`global_contrastive_transforms`: per view, brightness, gamma, Gaussian noise (each p = 0.5),
  then rotation by any angle (p = 0.5), isotropic scaling (p = 0.5) and an elastic deformation (always);
- stage 2, :func:`local_contrastive_transforms`: per view, the intensity part only, so pixel (i, j) is the same
  tissue in both views and in the label;
- stage 3, :func:`contrastive_finetune_transforms`: image and mask together: horizontal flip (p = 0.5), small
  rotation (±0.1 rad, p = 0.5), scaling (p = 0.5) and elastic deformation, bilinear for the image and nearest
  for the mask (``"nearest-exact"`` when resizing, whose pixel centres are bilinear's; torch's ``"nearest"``
  would shift the mask by up to half a pixel against the image).

Differences from the reference's batchgenerators pipeline, on purpose or forced by MONAI:

- brightness is a multiplicative factor in ``brightness`` (default [0.75, 1.25]). The reference's
  ``BrightnessTransform(mu=1, sigma=1)`` *adds* N(1, 1) to z-scored MRI, a shift that would push [0, 1] images
  out of range;
- ``scale`` follows batchgenerators (a factor on the sampling coordinates: above 1 zooms out) and is applied with
  ``RandZoomd(1/scale)``;
- the elastic deformation is MONAI's ``Rand2DElasticd`` (a control grid every ``elastic_spacing`` pixels moved
  by ``elastic_magnitude`` pixels), not batchgenerators' Gaussian-smoothed field (α ∈ [0, 1000], σ ∈ [40, 60],
  a displacement of a few pixels); the stage-1 random crop of an image already at the target size is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    CopyItemsd,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandRotated,
    RandScaleIntensityd,
    RandZoomd,
)

__all__ = ["VIEW_KEYS", "contrastive_finetune_transforms", "global_contrastive_transforms", "local_contrastive_transforms"]

VIEW_KEYS = ("view_1", "view_2")


def _intensity(key: str, brightness: Sequence[float], gamma: Sequence[float], noise_std: float, prob: float) -> list[MapTransform]:
    return [
        RandScaleIntensityd(key, factors=(brightness[0] - 1, brightness[1] - 1), prob=prob),
        RandAdjustContrastd(key, gamma=tuple(gamma), prob=prob),
        RandGaussianNoised(key, std=noise_std, prob=prob),
    ]


def _spatial(
    keys: Sequence[str],
    modes: Sequence[str],
    rotation: float,
    scale: Sequence[float],
    elastic_spacing: float,
    elastic_magnitude: Sequence[float],
    prob: float,
    elastic_prob: float,
) -> list[MapTransform]:
    keys, modes = list(keys), list(modes)
    # torch's "nearest" resizing picks the source pixel at floor(i / zoom), half a pixel off bilinear's grid
    zoom_modes = ["nearest-exact" if mode == "nearest" else mode for mode in modes]
    return [
        RandRotated(keys, range_x=rotation, prob=prob, mode=modes, padding_mode="border"),
        RandZoomd(keys, prob=prob, min_zoom=1 / scale[1], max_zoom=1 / scale[0], mode=zoom_modes, padding_mode="edge"),
        Rand2DElasticd(
            keys, spacing=elastic_spacing, magnitude_range=tuple(elastic_magnitude), prob=elastic_prob, mode=modes, padding_mode="border"
        ),
    ]


def global_contrastive_transforms(
    image_key: str = "image",
    view_keys: Sequence[str] = VIEW_KEYS,
    brightness: Sequence[float] = (0.75, 1.25),
    gamma: Sequence[float] = (0.5, 2.0),
    noise_std: float = 0.1,
    rotation: float = math.pi,
    scale: Sequence[float] = (0.7, 1.25),
    elastic_spacing: float = 32,
    elastic_magnitude: Sequence[float] = (0.0, 3.0),
    prob: float = 0.5,
    elastic_prob: float = 1.0,
) -> list[MapTransform]:
    """Stage 1: two views of ``image_key`` under ``view_keys``, each with its own intensity and spatial draws.

    ``brightness`` is a factor range, ``gamma`` a gamma range, ``noise_std`` the largest noise standard deviation
    (drawn uniformly below it), ``rotation`` the largest angle in radians (π: any angle), ``scale`` a coordinate
    scale range; ``prob`` is each operation's probability but the elastic deformation's (``elastic_prob``)."""
    transforms: list[MapTransform] = [CopyItemsd(image_key, times=len(view_keys), names=list(view_keys))]
    for key in view_keys:
        transforms += _intensity(key, brightness, gamma, noise_std, prob)
        transforms += _spatial([key], ["bilinear"], rotation, scale, elastic_spacing, elastic_magnitude, prob, elastic_prob)
    return transforms


def local_contrastive_transforms(
    image_key: str = "image",
    view_keys: Sequence[str] = VIEW_KEYS,
    brightness: Sequence[float] = (0.75, 1.25),
    gamma: Sequence[float] = (0.5, 2.0),
    noise_std: float = 0.1,
    prob: float = 0.5,
) -> list[MapTransform]:
    """Stage 2: two intensity-only views of ``image_key`` under ``view_keys``; the label is left as it is."""
    transforms: list[MapTransform] = [CopyItemsd(image_key, times=len(view_keys), names=list(view_keys))]
    for key in view_keys:
        transforms += _intensity(key, brightness, gamma, noise_std, prob)
    return transforms


def contrastive_finetune_transforms(
    keys: Sequence[str] = ("image", "label"),
    modes: Sequence[str] = ("bilinear", "nearest"),
    rotation: float = 0.1,
    scale: Sequence[float] = (0.5, 1.9),
    elastic_spacing: float = 32,
    elastic_magnitude: Sequence[float] = (0.0, 3.0),
    prob: float = 0.5,
    elastic_prob: float = 1.0,
) -> list[MapTransform]:
    """Stage 3: one spatial draw applied to image and mask (``keys``, interpolated with ``modes``): horizontal flip,
    rotation up to ``rotation`` radians, scaling, elastic deformation (arguments as in :func:`global_contrastive_transforms`)."""
    return [
        RandFlipd(list(keys), prob=prob, spatial_axis=1),
        *_spatial(keys, modes, rotation, scale, elastic_spacing, elastic_magnitude, prob, elastic_prob),
    ]
