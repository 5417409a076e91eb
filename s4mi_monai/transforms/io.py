"""Reading any image as RGB and any 0/1 or 0/255 mask as 0/1.

Grayscale, RGBA, palette and 16-bit images are converted, not rejected: a dataset often mixes them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import PILReader
from monai.transforms import MapTransform
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB (16-bit and float images are rescaled to 0..255)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def rgb_reader() -> PILReader:
    """A MONAI reader that yields RGB for every input mode (for ``LoadImaged(reader=...)``)."""
    return PILReader(converter=to_rgb)


class BinarizeMaskd(MapTransform):
    """Turn a mask whose foreground is any non-zero value (1 or 255) into a float 0/1 mask."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (d[key] > 0).to(torch.float32) if isinstance(d[key], torch.Tensor) else (np.asarray(d[key]) > 0).astype(np.float32)
        return d


def to_gray(image: Image.Image) -> Image.Image:
    """A mask as one 8-bit channel; palette masks keep their indices, grey RGB masks their level."""
    from s4mi_monai.data.check import mask_array

    return Image.fromarray(mask_array(image).astype(np.uint8))


def mask_reader() -> PILReader:
    """A MONAI reader for masks (for ``LoadImaged(reader=...)``); pair it with :class:`BinarizeMaskd`."""
    return PILReader(converter=to_gray)
