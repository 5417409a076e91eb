"""Multi-crop augmentation for self-supervised pretraining: DINO's global and local crops, CASS's single view.

MONAI has no random-resized crop with aspect-ratio jitter, so :class:`RandResizedCrop` reimplements
torchvision's, batched: one affine sampling grid per image (``F.affine_grid`` + ``F.grid_sample``) crops,
resizes and mirrors a whole (B, C, H, W) batch in one call, on any device. A view is a ``Compose`` of that
crop and the colour transforms of :mod:`s4mi_monai.transforms.color`; every view owns its transform
instances, so it makes its own random draws.

:class:`MultiCropd` makes the views of one image in the data loader. :class:`MultiCropBatch` makes the same
views of a whole batch where it lies (the GPU), so the loader only decodes and collates cached uint8 images.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, Randomizable, Transform
from monai.utils import MAX_SEED, TransformBackends, get_seed
from monai.utils.type_conversion import convert_to_tensor

from s4mi_monai.transforms.color import RandColorJitter, RandGaussianBlur, RandGrayscale, RandSolarize

PRESETS = ("dino", "cass", "lucidrains")
INTERPOLATION_MODES = ("bilinear", "bicubic", "nearest")
MAX_CROP_ATTEMPTS = 10
"""Boxes drawn per image before falling back to the central crop, as torchvision."""
MAX_SUPERSAMPLING = 4
"""Cap on the antialiasing samples per output pixel and axis: the sampling grid grows with its square."""


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as (height, width); an int is a square."""
    height, width = (size, size) if isinstance(size, int) else (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    return height, width


def _positive_range(name: str, values: Sequence[float], upper: float = math.inf) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not 0 < low <= high <= upper:
        raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high <= {upper}, got {tuple(values)}")
    return low, high


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def _central_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback box: the whole image, narrowed to the nearest aspect ratio (width / height) in ``ratio``."""
    image_ratio = width / height
    if image_ratio < ratio[0]:
        return int(round(width / ratio[0])), width
    if image_ratio > ratio[1]:
        return height, int(round(height * ratio[1]))
    return height, width


def sample_crop_boxes(
    height: int,
    width: int,
    n_boxes: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.RandomState,
) -> np.ndarray:
    """``n_boxes`` independent boxes (top, left, height, width), in pixels, of an ``height x width`` image.

    torchvision's ``RandomResizedCrop.get_params``, vectorised: each box takes the first of 10 attempts
    whose area fraction (uniform in ``scale``) and aspect ratio width / height (log-uniform in ``ratio``)
    fit in the image, placed uniformly; a box with no fitting attempt is the central fallback crop.
    """
    shape = (n_boxes, MAX_CROP_ATTEMPTS)
    areas = height * width * rng.uniform(scale[0], scale[1], size=shape)
    aspect_ratios = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=shape))
    widths = np.rint(np.sqrt(areas * aspect_ratios))
    heights = np.rint(np.sqrt(areas / aspect_ratios))
    fits = (widths >= 1) & (widths <= width) & (heights >= 1) & (heights <= height)
    found = fits.any(axis=1)
    first_fit = fits.argmax(axis=1)
    rows = np.arange(n_boxes)
    fallback_height, fallback_width = _central_crop_size(height, width, ratio)
    box_heights = np.where(found, heights[rows, first_fit], fallback_height)
    box_widths = np.where(found, widths[rows, first_fit], fallback_width)
    positions = rng.uniform(size=(n_boxes, 2))
    tops = np.where(found, np.floor(positions[:, 0] * (height - box_heights + 1)), (height - box_heights) // 2)
    lefts = np.where(found, np.floor(positions[:, 1] * (width - box_widths + 1)), (width - box_widths) // 2)
    return np.stack((tops, lefts, box_heights, box_widths), axis=1).astype(np.int64)


def _mirror_signs(flips: torch.Tensor | np.ndarray | None, n_images: int, like: torch.Tensor) -> torch.Tensor:
    """-1 for the images to mirror, 1 for the others."""
    if flips is None:
        return torch.ones(n_images, dtype=like.dtype, device=like.device)
    return 1 - 2 * torch.as_tensor(flips, device=like.device).reshape(n_images).to(like.dtype)


def resized_crop(
    images: torch.Tensor,
    boxes: torch.Tensor | np.ndarray,
    size: int | Sequence[int],
    mode: str = "bicubic",
    horizontal_flips: torch.Tensor | np.ndarray | None = None,
    vertical_flips: torch.Tensor | np.ndarray | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Crop box ``b`` (top, left, height, width, in pixels) of image ``b`` of a (B, C, H, W) batch, resized to ``size``.

    One affine grid per image maps the output pixel centres onto its box with the ``align_corners=False``
    convention of ``F.interpolate``, so the whole batch is a single ``grid_sample`` call; an image to flip
    gets a mirrored grid. Interpolation taps beyond the box read the image's neighbouring pixels instead of
    repeating the box's edge; taps beyond the image repeat its border. ``antialias`` averages ``k x k`` samples per output pixel, ``k`` the
    batch's largest downscaling factor rounded up (at most :data:`MAX_SUPERSAMPLING`): a box filter standing
    in for the antialiased resize of torchvision and PIL. Integer images are resampled in float32 and
    rounded back to their dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"resized_crop needs a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    n_images, n_channels, height, width = images.shape
    out_height, out_width = _pair(size)
    boxes = torch.as_tensor(boxes).reshape(n_images, 4)
    supersampling = 1
    if antialias and n_images:
        downscaling = max(float((boxes[:, 2] / out_height).max()), float((boxes[:, 3] / out_width).max()))
        supersampling = min(max(math.ceil(downscaling), 1), MAX_SUPERSAMPLING)
    work_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    top, left, box_height, box_width = boxes.to(device=images.device, dtype=work_dtype).unbind(dim=1)
    x_scale = box_width / width * _mirror_signs(horizontal_flips, n_images, top)
    y_scale = box_height / height * _mirror_signs(vertical_flips, n_images, top)
    x_shift = (2 * left + box_width) / width - 1
    y_shift = (2 * top + box_height) / height - 1
    zeros = torch.zeros_like(x_scale)
    theta = torch.stack((x_scale, zeros, x_shift, zeros, y_scale, y_shift), dim=1).view(n_images, 2, 3)
    grid_shape = [n_images, n_channels, out_height * supersampling, out_width * supersampling]
    grid = F.affine_grid(theta, grid_shape, align_corners=False)
    resampled = F.grid_sample(images.to(work_dtype), grid, mode=mode, padding_mode="border", align_corners=False)
    if supersampling > 1:
        resampled = F.avg_pool2d(resampled, supersampling)
    if images.is_floating_point():
        return resampled.to(images.dtype)
    limits = torch.iinfo(images.dtype)
    return resampled.round().clamp(limits.min, limits.max).to(images.dtype)


class RandResizedCrop(Randomizable, Transform):
    """torchvision's ``RandomResizedCrop`` plus optional flips, for a (C, H, W) image or a (B, C, H, W) batch.

    Every image gets its own box (:func:`sample_crop_boxes`: area fraction in ``scale``, aspect ratio
    width / height log-uniform in ``ratio``, central fallback after 10 attempts) and its own flips
    (``flip_prob`` horizontally, ``vertical_flip_prob`` vertically); :func:`resized_crop` resizes the box
    to ``size``. ``clip`` clamps the result, e.g. to (0, 1) against bicubic overshoot. The output is a
    plain tensor: the input's spatial metadata does not describe a resized crop.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        mode: str = "bicubic",
        flip_prob: float = 0.0,
        vertical_flip_prob: float = 0.0,
        antialias: bool = True,
        clip: tuple[float, float] | None = None,
    ) -> None:
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f"mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
        self.size = _pair(size)
        self.scale = _positive_range("scale", scale, upper=1.0)
        self.ratio = _positive_range("ratio", ratio)
        self.mode = mode
        self.flip_prob = _probability("flip_prob", flip_prob)
        self.vertical_flip_prob = _probability("vertical_flip_prob", vertical_flip_prob)
        self.antialias = antialias
        self.clip = clip
        self._drawn_for: tuple[int, int, int] = (0, 0, 0)
        self._boxes = np.zeros((0, 4), dtype=np.int64)
        self._horizontal_flips = np.zeros(0, dtype=bool)
        self._vertical_flips = np.zeros(0, dtype=bool)

    def randomize(self, data: torch.Tensor | np.ndarray) -> None:
        """Draw a box and flips for each image of ``data`` (one for (C, H, W), B for (B, C, H, W))."""
        n_images = 1 if data.ndim == 3 else int(data.shape[0])
        height, width = (int(s) for s in data.shape[-2:])
        self._drawn_for = (n_images, height, width)
        self._boxes = sample_crop_boxes(height, width, n_images, self.scale, self.ratio, self.R)
        self._horizontal_flips = self.R.rand(n_images) < self.flip_prob
        self._vertical_flips = self.R.rand(n_images) < self.vertical_flip_prob

    def __call__(self, img: torch.Tensor | np.ndarray, randomize: bool = True) -> torch.Tensor:
        image = convert_to_tensor(img, track_meta=False)
        if image.ndim not in (3, 4):
            raise ValueError(f"RandResizedCrop needs a (C, H, W) image or a (B, C, H, W) batch, got shape {tuple(image.shape)}")
        if randomize:
            self.randomize(image)
        batch = image.reshape(-1, *image.shape[-3:])
        if self._drawn_for != (batch.shape[0], *batch.shape[-2:]):
            raise ValueError(f"boxes were drawn for (images, height, width) = {self._drawn_for}, got {tuple(batch.shape)}")
        crops = resized_crop(batch, self._boxes, self.size, self.mode, self._horizontal_flips, self._vertical_flips, self.antialias)
        if self.clip is not None:
            crops = crops.clamp(*self.clip)
        return crops.reshape(*image.shape[:-2], *self.size)


def _dino_views(
    crop: partial,
    global_size: int,
    local_size: int,
    n_local: int,
    global_scale: Sequence[float],
    local_scale: Sequence[float],
    blur_sigma: Sequence[float],
) -> dict[str, Compose]:
    def view(size: int, scale: Sequence[float], *finishing: Transform) -> Compose:
        colour = (RandColorJitter(0.4, 0.4, 0.2, 0.1, prob=0.8), RandGrayscale(prob=0.2))
        return Compose([crop(size, scale, flip_prob=0.5), *colour, *finishing])

    views = {
        "global_0": view(global_size, global_scale, RandGaussianBlur(blur_sigma, prob=1.0)),
        "global_1": view(global_size, global_scale, RandGaussianBlur(blur_sigma, prob=0.1), RandSolarize(0.5, prob=0.2)),
    }
    views.update({f"local_{i}": view(local_size, local_scale, RandGaussianBlur(blur_sigma, prob=0.5)) for i in range(n_local)})
    return views


def _lucidrains_views(
    crop: partial, size: int, n_local: int, global_scale: Sequence[float], local_scale: Sequence[float]
) -> dict[str, Compose]:
    def view(scale: Sequence[float]) -> Compose:
        colour = (RandColorJitter(0.8, 0.8, 0.8, 0.2, prob=0.3), RandGrayscale(prob=0.2), RandGaussianBlur((1.0, 2.0), prob=0.2))
        return Compose([crop(size, scale, flip_prob=0.5), *colour])

    views = {f"global_{i}": view(global_scale) for i in range(2)}
    views.update({f"local_{i}": view(local_scale) for i in range(n_local)})
    return views


def _cass_views(crop: partial, size: int, scale: Sequence[float]) -> dict[str, Compose]:
    jitters = (RandColorJitter(0.2, 0.2, 0.2, 0.0, prob=0.3), RandColorJitter(0.2, 0.2, 0.2, 0.0, prob=0.3))
    return {"view_0": Compose([crop(size, scale, flip_prob=0.3, vertical_flip_prob=0.3), *jitters])}


def multi_crop_views(
    preset: str = "dino",
    global_size: int = 224,
    local_size: int | None = None,
    n_local: int | None = None,
    global_scale: Sequence[float] | None = None,
    local_scale: Sequence[float] | None = None,
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    mode: str = "bicubic",
    antialias: bool = True,
    blur_sigma: Sequence[float] | None = None,
) -> dict[str, Compose]:
    """The named views of a preset, each a ``Compose`` of its own transform instances, so its own draws.

    Views take float RGB images in [0, 1]; the crops are clamped to [0, 1]. Normalisation is left to the
    network's input transform. Arguments left at ``None`` take the preset's value.

    - ``"dino"`` (official DINO, ``DataAugmentationDINO``): ``global_0``, ``global_1`` at ``global_size``,
      ``global_scale`` (0.4, 1); ``local_0`` .. ``local_{n_local - 1}`` (8) at ``local_size`` (96),
      ``local_scale`` (0.05, 0.4). Every view: horizontal flip p=0.5, colour jitter (0.4, 0.4, 0.2, 0.1)
      p=0.8, grayscale p=0.2, then Gaussian blur (sigma in [0.1, 2]) p=1.0 for ``global_0``, blur p=0.1
      and solarisation p=0.2 for ``global_1``, blur p=0.5 for the locals. ``blur_sigma`` replaces the blur's
      sigma range in pixels (the official (0.1, 2) is for 224 px crops; scale it with the resolution).
    - ``"lucidrains"`` (vit-pytorch ``Dino``, which S4MI links): ``global_0``, ``global_1`` with
      ``global_scale`` (0.5, 1) and ``n_local`` (2) local crops with ``local_scale`` (0.05, 0.4), all at
      ``global_size``; flip p=0.5, colour jitter (0.8, 0.8, 0.8, 0.2) p=0.3, grayscale p=0.2, blur (sigma in
      [1, 2]) p=0.2. Unlike the original, each view and image gets its own draws (it draws once per batch)
      and the blur kernel is not cut to 3x3.
    - ``"cass"`` (CASS, whose two networks see the same view): one view ``view_0``, the supervised recipe
      of the CASS notebooks: the image (``global_scale`` (1, 1), the whole image) resized to ``global_size``,
      flips p=0.3 horizontally and vertically, two colour jitters (0.2, 0.2, 0.2) p=0.3 each. The
      perspective and affine warps that the notebooks apply together with the jitters are left out.
    """
    crop = partial(RandResizedCrop, ratio=ratio, mode=mode, antialias=antialias, clip=(0.0, 1.0))
    if preset == "dino":
        return _dino_views(
            crop,
            global_size,
            96 if local_size is None else local_size,
            8 if n_local is None else n_local,
            (0.4, 1.0) if global_scale is None else global_scale,
            (0.05, 0.4) if local_scale is None else local_scale,
            (0.1, 2.0) if blur_sigma is None else tuple(blur_sigma),
        )
    if blur_sigma is not None:
        raise ValueError(f"blur_sigma is a knob of the dino preset only, not of {preset!r}")
    if preset == "lucidrains":
        if local_size is not None:
            raise ValueError("the lucidrains preset makes every crop at global_size; leave local_size unset")
        return _lucidrains_views(
            crop,
            global_size,
            2 if n_local is None else n_local,
            (0.5, 1.0) if global_scale is None else global_scale,
            (0.05, 0.4) if local_scale is None else local_scale,
        )
    if preset == "cass":
        if local_size is not None or n_local is not None or local_scale is not None:
            raise ValueError("the cass preset has a single view; leave local_size, n_local and local_scale unset")
        return _cass_views(crop, global_size, (1.0, 1.0) if global_scale is None else global_scale)
    raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 is divided by 255, float is taken to be in [0, 1] already."""
    if images.is_floating_point():
        return images
    if images.dtype == torch.uint8:
        return images.float() / 255
    raise TypeError(f"multi-crop needs uint8 images or float images in [0, 1], got {images.dtype}")


class MultiCropd(Randomizable, MapTransform):
    """Replace the image under ``keys`` by the views of :func:`multi_crop_views` (``global_0``, ``local_0``, ...).

    The image is a (3, H, W) RGB image, uint8 or float in [0, 1]; ``keep_original`` keeps it beside the
    views. Each view is its own ``Compose``, so the views are independent draws. MONAI seeds a pipeline
    by calling ``set_random_state`` on the first object that has it (``monai.data.utils.set_rnd``, run in
    every DataLoader worker), which would stop here; :meth:`set_random_state` therefore passes a different
    seed, drawn from this transform's state, to every view, whose ``Compose`` passes one on to each of its
    transforms. The constructor does the same from MONAI's global seed, like ``Compose``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        preset: str = "dino",
        global_size: int = 224,
        local_size: int | None = None,
        n_local: int | None = None,
        global_scale: Sequence[float] | None = None,
        local_scale: Sequence[float] | None = None,
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        mode: str = "bicubic",
        antialias: bool = True,
        keep_original: bool = False,
        allow_missing_keys: bool = False,
        blur_sigma: Sequence[float] | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"MultiCropd makes the views of one image, got keys {self.keys}")
        self.keep_original = keep_original
        self.views = multi_crop_views(preset, global_size, local_size, n_local, global_scale, local_scale, ratio, mode, antialias, blur_sigma)
        self.set_random_state(seed=get_seed())

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MultiCropd:
        super().set_random_state(seed, state)
        for view in self.views.values():
            view.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: object = None) -> None:
        """Nothing is drawn here: each view draws its own parameters when it runs."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = _to_unit_float(convert_to_tensor(d[key], track_meta=False))
            d.update({name: view(image) for name, view in self.views.items()})
            if not self.keep_original:
                del d[key]
        return d


class MultiCropBatch:
    """The views of :func:`multi_crop_views` made from a whole (B, 3, H, W) batch on its device, e.g. the GPU.

    The loader then only decodes (or reads cached uint8 images) and collates; cropping and colour run
    batched where the network runs. Every image gets its own draws. The draws (boxes, flips, colour
    factors: a few numbers per image) are made on the CPU by the views' random states, which every call
    reseeds from ``generator`` (torch's default generator when ``None``), so a seeded generator reproduces
    the views on any device; only these numbers travel to the device, the pixels stay there.
    """

    def __init__(
        self,
        preset: str = "dino",
        global_size: int = 224,
        local_size: int | None = None,
        n_local: int | None = None,
        global_scale: Sequence[float] | None = None,
        local_scale: Sequence[float] | None = None,
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        mode: str = "bicubic",
        antialias: bool = True,
        blur_sigma: Sequence[float] | None = None,
    ) -> None:
        self.views = multi_crop_views(preset, global_size, local_size, n_local, global_scale, local_scale, ratio, mode, antialias, blur_sigma)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """(B, 3, size, size) float views of (B, 3, H, W) uint8 or [0, 1] float ``images``, by view name."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"MultiCropBatch needs a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        batch = _to_unit_float(convert_to_tensor(images, track_meta=False))
        seed_device = generator.device if generator is not None else torch.device("cpu")
        seeds = torch.randint(MAX_SEED, (len(self.views),), generator=generator, device=seed_device).tolist()
        crops = {}
        for (name, view), seed in zip(self.views.items(), seeds):
            view.set_random_state(seed=seed)
            view_crops = view(batch)
            crops[name] = view_crops.as_tensor() if isinstance(view_crops, MetaTensor) else view_crops
        return crops


__all__: Sequence[str] = (
    "INTERPOLATION_MODES",
    "MAX_CROP_ATTEMPTS",
    "MAX_SUPERSAMPLING",
    "PRESETS",
    "MultiCropBatch",
    "MultiCropd",
    "RandResizedCrop",
    "multi_crop_views",
    "resized_crop",
    "sample_crop_boxes",
)
