"""Reading whole slides and very large images by regions, at a chosen pyramid level or resolution.

Pyramidal TIFF and SVS go through tiffslide (tifffile and zarr underneath): a region read decodes only the
tiles it touches, so a slide is never in memory whole. Other formats (PNG, JPEG, BMP) have no tiles; they
are decoded once with PIL's size limit lifted (an 11000 x 8200 photograph is 270 MB), never refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PYRAMID_SUFFIXES", "Slide"]

PYRAMID_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff")
BACKGROUND = 255
"""What a read outside the slide returns: white, like the glass around tissue."""


class Slide:
    """One slide at one level: ``size`` (width, height) there, ``downsample`` from level 0, ``read(left, top, w, h)``.

    ``level`` picks a pyramid level (0 = full resolution); ``mpp`` instead picks the finest level whose
    microns per pixel is at most ``mpp`` (the slide must record its resolution). Coordinates of :meth:`read`
    are in the chosen level's pixels.
    """

    def __init__(self, path: str | Path, level: int | None = None, mpp: float | None = None) -> None:
        self.path = Path(path)
        if level is not None and mpp is not None:
            raise ValueError("give a level or a resolution (mpp), not both")
        self._slide = None
        self._image: np.ndarray | None = None
        if self.path.suffix.lower() in PYRAMID_SUFFIXES:
            import tiffslide

            try:
                self._slide = tiffslide.TiffSlide(str(self.path))
                self.level_dimensions = [tuple(map(int, size)) for size in self._slide.level_dimensions]
                self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
                x, y = self._slide.properties.get("tiffslide.mpp-x"), self._slide.properties.get("tiffslide.mpp-y")
            except Exception as err:  # noqa: BLE001 - tiffslide raises many kinds; all mean "cannot read this file"
                raise ValueError(f"{self.path}: not a readable TIFF/whole-slide file ({type(err).__name__}: {err})") from None
            self.base_mpp = float(x) if x else (float(y) if y else None)
        else:
            self._image = self._decode()
            self.level_dimensions = [(self._image.shape[1], self._image.shape[0])]
            self.level_downsamples = [1.0]
            self.base_mpp = None
        self.level = self._choose_level(level, mpp)
        self.size = self.level_dimensions[self.level]
        self.downsample = self.level_downsamples[self.level]

    def _decode(self) -> np.ndarray:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # the whole point of this path: images over the decoder's safety limit
        try:
            with Image.open(self.path) as image:
                return np.asarray(image.convert("RGB"))
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds; all mean "cannot read this file"
            raise ValueError(f"{self.path}: not a readable image ({type(err).__name__}: {err})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit

    def _choose_level(self, level: int | None, mpp: float | None) -> int:
        count = len(self.level_dimensions)
        if mpp is not None:
            if self.base_mpp is None:
                raise ValueError(f"{self.path}: the slide records no resolution (microns per pixel); choose a --level instead")
            fine_enough = [i for i, d in enumerate(self.level_downsamples) if self.base_mpp * d <= mpp * (1 + 1e-6)]
            return max(fine_enough) if fine_enough else 0
        level = 0 if level is None else int(level)
        if not 0 <= level < count:
            raise ValueError(f"{self.path}: level {level} does not exist (levels 0 to {count - 1}: {self.level_dimensions})")
        return level

    @property
    def mpp(self) -> float | None:
        """Microns per pixel at the chosen level, if the slide records it."""
        return None if self.base_mpp is None else self.base_mpp * self.downsample

    def read(self, left: int, top: int, width: int, height: int) -> np.ndarray:
        """``height x width x 3`` uint8 RGB of the region at the chosen level; white outside the slide."""
        out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        right, bottom = min(left + width, self.size[0]), min(top + height, self.size[1])
        x0, y0 = max(left, 0), max(top, 0)
        if right <= x0 or bottom <= y0:
            return out
        if self._image is not None:
            region = self._image[y0:bottom, x0:right]
        else:
            origin = (int(round(x0 * self.downsample)), int(round(y0 * self.downsample)))
            region = np.asarray(self._slide.read_region(origin, self.level, (right - x0, bottom - y0), as_array=True))[..., :3]
        out[y0 - top : bottom - top, x0 - left : right - left] = region
        return out

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The whole slide scaled so its longer side is at most ``max_side``, from the coarsest level that suffices."""
        width, height = self.level_dimensions[0]
        scale = min(1.0, max_side / max(width, height))
        size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
        if self._image is not None:
            return np.asarray(Image.fromarray(self._image).resize(size, Image.Resampling.BOX))
        return np.asarray(self._slide.get_thumbnail(size).convert("RGB").resize(size, Image.Resampling.BOX))

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
