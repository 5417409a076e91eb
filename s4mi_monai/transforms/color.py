"""Colour augmentation as MONAI transforms: torchvision-style colour jitter, grayscale, Gaussian blur, solarisation.

MONAI has none of these, and torchvision cannot be relied upon, so they are written in plain torch. Each
operation is a batched function taking ``(..., 3, H, W)`` float RGB images in [0, 1] and one parameter per
image, so the GPU multi-crop path can augment a whole batch with independent draws. The transforms draw
their parameters with their own ``self.R`` (reproducible through ``set_random_state`` and reseeded per
worker by MONAI's DataLoader) and accept a single ``(3, H, W)`` image or a ``(B, 3, H, W)`` batch, drawing
per image. The dictionary versions draw once per call and apply the same parameters to every key.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type
from monai.utils.type_conversion import convert_to_tensor

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G and B (as PIL's and torchvision's grayscale)."""


def _per_image(values: torch.Tensor | np.ndarray | float, images: torch.Tensor) -> torch.Tensor:
    """One value per image of ``images`` (..., C, H, W), shaped to broadcast over C, H and W."""
    batch_shape = images.shape[:-3]
    values = torch.as_tensor(values, dtype=images.dtype, device=images.device)
    return values.expand(batch_shape).reshape(*batch_shape, 1, 1, 1)


def _blend(images: torch.Tensor, other: torch.Tensor, factors: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """``factor * images + (1 - factor) * other`` clamped to [0, 1], torchvision's ``_blend``."""
    factors = _per_image(factors, images)
    return (factors * images + (1 - factors) * other).clamp(0, 1)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of (..., 3, H, W) images, as (..., 1, H, W)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * weights).sum(dim=-3, keepdim=True)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """``clamp(factor * x, 0, 1)``: factor 0 gives black, 1 the image."""
    return _blend(images, torch.zeros_like(images), factors)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Blend with the mean grey level of each image: factor 0 gives a uniform grey image, 1 the image."""
    mean_grey = rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean_grey, factors)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Blend with the grayscale image: factor 0 gives grayscale, 1 the image, above 1 more saturated colours."""
    return _blend(images, rgb_to_grayscale(images), factors)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] to HSV, hue in [0, 1) (a fraction of a turn); grey pixels get hue 0."""
    red, green, blue = images.unbind(dim=-3)
    value = images.max(dim=-3).values
    chroma = value - images.min(dim=-3).values
    has_hue = chroma > 0
    safe_chroma = torch.where(has_hue, chroma, torch.ones_like(chroma))
    sector = torch.where(
        value == red,
        ((green - blue) / safe_chroma) % 6,
        torch.where(value == green, (blue - red) / safe_chroma + 2, (red - green) / safe_chroma + 4),
    )
    hue = torch.where(has_hue, sector / 6, torch.zeros_like(sector)) % 1.0
    saturation = chroma / torch.where(value > 0, value, torch.ones_like(value))
    return torch.stack((hue, saturation, value), dim=-3)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`, by the closed form ``f(n) = V - V S max(0, min(k, 4 - k, 1))``, ``k = (n + 6H) mod 6``."""
    hue, saturation, value = (channel.unsqueeze(-3) for channel in images.unbind(dim=-3))
    n = torch.tensor((5.0, 3.0, 1.0), dtype=images.dtype, device=images.device).view(3, 1, 1)
    k = (n + 6 * hue) % 6
    ramp = torch.minimum(torch.minimum(k, 4 - k), torch.ones_like(k)).clamp(min=0)
    return value - value * saturation * ramp


def adjust_hue(images: torch.Tensor, factors: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Rotate the hue by ``factor`` turns (in [-0.5, 0.5]); saturation and value are kept."""
    hsv = rgb_to_hsv(images)
    hue = (hsv[..., :1, :, :] + _per_image(factors, images)) % 1.0
    return hsv_to_rgb(torch.cat((hue, hsv[..., 1:, :, :]), dim=-3)).clamp(0, 1)


def _gaussian_blur_along(images: torch.Tensor, sigmas: torch.Tensor, dim: int) -> torch.Tensor:
    """Blur (N, C, H, W) images along ``dim`` (-2 or -1), each with its own sigma and kernel radius."""
    n_images, n_channels, height, width = images.shape
    size = images.shape[dim]
    radii = torch.ceil(3 * sigmas).clamp(max=size - 1)
    max_radius = int(radii.max())
    offsets = torch.arange(-max_radius, max_radius + 1, dtype=images.dtype, device=images.device)
    kernels = torch.exp(-(offsets**2) / (2 * sigmas[:, None] ** 2)) * (offsets.abs() <= radii[:, None])
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(n_channels, dim=0)
    vertical = dim == -2
    weight = kernels.view(-1, 1, 2 * max_radius + 1, 1) if vertical else kernels.view(-1, 1, 1, 2 * max_radius + 1)
    padding = (0, 0, max_radius, max_radius) if vertical else (max_radius, max_radius, 0, 0)
    stacked = F.pad(images.reshape(1, n_images * n_channels, height, width), padding, mode="reflect")
    return F.conv2d(stacked, weight, groups=n_images * n_channels).reshape(images.shape)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Separable Gaussian blur of (..., C, H, W) images, one sigma (> 0) per image, reflect padding.

    The kernel of an image with sigma ``s`` has size ``2 ceil(3 s) + 1``, capped so that it fits in the
    image (reflect padding cannot reach further), and is normalised to sum 1.
    """
    sigmas = torch.as_tensor(sigmas, dtype=images.dtype, device=images.device).expand(images.shape[:-3]).reshape(-1)
    if (sigmas <= 0).any():
        raise ValueError(f"Gaussian blur needs sigma > 0, got {sigmas.tolist()}")
    flat = images.reshape(-1, *images.shape[-3:])
    blurred = _gaussian_blur_along(_gaussian_blur_along(flat, sigmas, dim=-2), sigmas, dim=-1)
    return blurred.reshape(images.shape)


def solarize(images: torch.Tensor, thresholds: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """``1 - x`` where ``x >= threshold``, ``x`` elsewhere."""
    return torch.where(images >= _per_image(thresholds, images), 1 - images, images)


def _as_rgb_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The image as a tensor (a MetaTensor when tracking metadata), checked to be float (3, H, W) or (B, 3, H, W)."""
    image = convert_to_tensor(image, track_meta=get_track_meta())
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"colour transforms need RGB images (3, H, W) or batches (B, 3, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"colour transforms need float images in [0, 1], got {image.dtype}")
    return image


def _batch_size(image: torch.Tensor | np.ndarray) -> int:
    return 1 if image.ndim == 3 else int(image.shape[0])


def _factor_range(name: str, value: float | Sequence[float], centre: float, bound: tuple[float, float]) -> tuple[float, float] | None:
    """torchvision's reading of a jitter argument: ``v`` means ``[centre - v, centre + v]`` within ``bound``, a pair
    is the range itself; ``None`` (operation off) when the range is the single point ``centre``."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        low, high = max(centre - value, bound[0]), centre + value
    else:
        low, high = (float(v) for v in value)
    if not bound[0] <= low <= high <= bound[1]:
        raise ValueError(f"{name} range must lie in {bound}, got ({low}, {high})")
    return None if low == high == centre else (low, high)


class RandomColorTransform(RandomizableTransform):
    """Shared part of the colour transforms: per-image coin flips, batching, types.

    ``randomize(image)`` draws, for each of the images (1 for a (3, H, W) image, B for a batch), whether
    the transform applies (probability ``prob``) and its parameters; ``__call__(image, randomize=False)``
    reuses the last draw, which is how the dictionary versions give all keys the same parameters.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        self._applies = np.zeros(0, dtype=bool)

    def randomize(self, data: torch.Tensor | np.ndarray) -> None:
        n_images = _batch_size(data)
        self._applies = self.R.rand(n_images) < self.prob
        self._do_transform = bool(self._applies.any())
        self._draw_parameters(n_images)

    @abstractmethod
    def _draw_parameters(self, n_images: int) -> None:
        """Draw the parameters of ``n_images`` images with ``self.R``."""

    @abstractmethod
    def _transform(self, images: torch.Tensor, selected: np.ndarray) -> torch.Tensor:
        """Transform (K, 3, H, W) ``images``, which are the images ``selected`` (indices) of the last draw."""

    def __call__(self, img: torch.Tensor | np.ndarray, randomize: bool = True) -> torch.Tensor:
        image = _as_rgb_tensor(img)
        if randomize:
            self.randomize(image)
        pixels = image.as_tensor() if isinstance(image, MetaTensor) else image
        batch = pixels.reshape(-1, *pixels.shape[-3:])
        if len(self._applies) != batch.shape[0]:
            raise ValueError(f"parameters were drawn for {len(self._applies)} images, got {batch.shape[0]}; call randomize first")
        if not self._do_transform:
            return image
        selected = np.flatnonzero(self._applies)
        rows = torch.as_tensor(selected, device=batch.device)
        out = batch.clone()
        out[rows] = self._transform(batch[rows], selected)
        return convert_to_dst_type(out.reshape(pixels.shape), dst=image)[0]


class RandColorJitter(RandomColorTransform):
    """torchvision's ``ColorJitter`` applied with probability ``prob``.

    Each argument ``v`` draws a factor uniformly from ``[max(0, 1 - v), 1 + v]`` (hue: a shift in
    ``[-v, v]`` turns, ``v <= 0.5``), or from the range if a pair is given; 0 switches the operation off.
    Brightness, contrast, saturation and hue are applied in a random order drawn per image, each
    clamping to [0, 1] (see :func:`adjust_brightness`, :func:`adjust_contrast`, :func:`adjust_saturation`,
    :func:`adjust_hue`).
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.4,
        contrast: float | Sequence[float] = 0.4,
        saturation: float | Sequence[float] = 0.2,
        hue: float | Sequence[float] = 0.1,
        prob: float = 0.8,
    ) -> None:
        super().__init__(prob)
        candidates = (
            (adjust_brightness, _factor_range("brightness", brightness, 1.0, (0.0, math.inf))),
            (adjust_contrast, _factor_range("contrast", contrast, 1.0, (0.0, math.inf))),
            (adjust_saturation, _factor_range("saturation", saturation, 1.0, (0.0, math.inf))),
            (adjust_hue, _factor_range("hue", hue, 0.0, (-0.5, 0.5))),
        )
        enabled = [(adjust, bounds) for adjust, bounds in candidates if bounds is not None]
        self.adjustments: list[Callable[..., torch.Tensor]] = [adjust for adjust, _ in enabled]
        self._bounds = np.array([bounds for _, bounds in enabled], dtype=float).reshape(-1, 2)
        self._factors = np.zeros((0, len(self.adjustments)))
        self._orders = np.zeros((0, len(self.adjustments)), dtype=int)

    def _draw_parameters(self, n_images: int) -> None:
        self._factors = self.R.uniform(self._bounds[:, 0], self._bounds[:, 1], size=(n_images, len(self.adjustments)))
        self._orders = np.argsort(self.R.rand(n_images, len(self.adjustments)), axis=1)

    def _transform(self, images: torch.Tensor, selected: np.ndarray) -> torch.Tensor:
        factors, orders = self._factors[selected], self._orders[selected]
        for step in range(len(self.adjustments)):
            for index, adjust in enumerate(self.adjustments):
                rows = np.flatnonzero(orders[:, step] == index)
                if rows.size:
                    at = torch.as_tensor(rows, device=images.device)
                    images[at] = adjust(images[at], factors[rows, index])
        return images


class RandGrayscale(RandomColorTransform):
    """Replace the image by its luma (:func:`rgb_to_grayscale`) on all three channels, with probability ``prob``."""

    def __init__(self, prob: float = 0.2) -> None:
        super().__init__(prob)

    def _draw_parameters(self, n_images: int) -> None:
        """Grayscale has no parameter."""

    def _transform(self, images: torch.Tensor, selected: np.ndarray) -> torch.Tensor:
        return rgb_to_grayscale(images).expand_as(images)


class RandGaussianBlur(RandomColorTransform):
    """:func:`gaussian_blur` with sigma drawn uniformly from ``sigma`` per image, with probability ``prob``."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), prob: float = 0.5) -> None:
        super().__init__(prob)
        low, high = (float(s) for s in sigma)
        if not 0 < low <= high:
            raise ValueError(f"sigma must be a range (low, high) with 0 < low <= high, got {sigma}")
        self.sigma = (low, high)
        self._sigmas = np.zeros(0)

    def _draw_parameters(self, n_images: int) -> None:
        self._sigmas = self.R.uniform(*self.sigma, size=n_images)

    def _transform(self, images: torch.Tensor, selected: np.ndarray) -> torch.Tensor:
        return gaussian_blur(images, self._sigmas[selected])


class RandSolarize(RandomColorTransform):
    """:func:`solarize` (``x -> 1 - x`` where ``x >= threshold``) with probability ``prob``."""

    def __init__(self, threshold: float = 0.5, prob: float = 0.2) -> None:
        super().__init__(prob)
        self.threshold = threshold

    def _draw_parameters(self, n_images: int) -> None:
        """The threshold is fixed; only the coin flip is random."""

    def _transform(self, images: torch.Tensor, selected: np.ndarray) -> torch.Tensor:
        return solarize(images, self.threshold)


class RandomColorTransformd(Randomizable, MapTransform):
    """Dictionary version of a :class:`RandomColorTransform`: one draw per call, the same parameters for every key.

    The array transform shares this transform's random state, so ``set_random_state`` (and MONAI's
    per-worker seeding) reaches it. The keys must hold images of the same batch size.
    """

    def __init__(self, keys: KeysCollection, transform: RandomColorTransform, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandomColorTransformd:
        super().set_random_state(seed, state)
        self.transform.set_random_state(state=self.R)
        return self

    def randomize(self, data: torch.Tensor | np.ndarray) -> None:
        self.transform.randomize(data)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first_key = self.first_key(d)
        if first_key == ():
            return d
        self.randomize(d[first_key])
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], randomize=False)
        return d


class RandColorJitterd(RandomColorTransformd):
    """Dictionary version of :class:`RandColorJitter`."""

    def __init__(
        self,
        keys: KeysCollection,
        brightness: float | Sequence[float] = 0.4,
        contrast: float | Sequence[float] = 0.4,
        saturation: float | Sequence[float] = 0.2,
        hue: float | Sequence[float] = 0.1,
        prob: float = 0.8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, RandColorJitter(brightness, contrast, saturation, hue, prob), allow_missing_keys)


class RandGrayscaled(RandomColorTransformd):
    """Dictionary version of :class:`RandGrayscale`."""

    def __init__(self, keys: KeysCollection, prob: float = 0.2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RandGrayscale(prob), allow_missing_keys)


class RandGaussianBlurd(RandomColorTransformd):
    """Dictionary version of :class:`RandGaussianBlur`."""

    def __init__(
        self, keys: KeysCollection, sigma: tuple[float, float] = (0.1, 2.0), prob: float = 0.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, RandGaussianBlur(sigma, prob), allow_missing_keys)


class RandSolarized(RandomColorTransformd):
    """Dictionary version of :class:`RandSolarize`."""

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, prob: float = 0.2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RandSolarize(threshold, prob), allow_missing_keys)


__all__: Sequence[str] = (
    "LUMA_WEIGHTS",
    "RandColorJitter",
    "RandColorJitterd",
    "RandGaussianBlur",
    "RandGaussianBlurd",
    "RandGrayscale",
    "RandGrayscaled",
    "RandSolarize",
    "RandSolarized",
    "RandomColorTransform",
    "RandomColorTransformd",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "gaussian_blur",
    "hsv_to_rgb",
    "rgb_to_grayscale",
    "rgb_to_hsv",
    "solarize",
)
