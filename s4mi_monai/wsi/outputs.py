"""What whole-slide segmentation writes: a tiled pyramidal TIFF mask, a small overlay PNG and GeoJSON outlines.

The label image lives in a file (:class:`LabelImage`) while the bands arrive, read back with plain reads (no
memory map, whose pages would count against the process), so no output step holds the slide in memory: the
TIFF is written tile by tile from it, the overlay and the outlines from every n-th row and column.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from s4mi_monai.io import atomic_path, atomic_write, atomic_write_text
from s4mi_monai.wsi.contours import mask_features
from s4mi_monai.wsi.reader import Slide

__all__ = ["LabelImage", "OVERLAY_SIDE", "OUTLINE_SIDE", "TIFF_TILE", "write_outline_geojson", "write_overlay", "write_pyramid_tiff"]

TIFF_TILE = 512
OVERLAY_SIDE = 2048
"""Longer side of the overlay PNG."""
OUTLINE_SIDE = 4096
"""Outlines are traced on the mask scaled so its longer side is at most this (coordinates are then scaled to level 0)."""
PALETTE = np.array([[0, 0, 0], [255, 64, 64], [64, 160, 255], [255, 200, 0], [80, 220, 120], [200, 80, 255]], dtype=np.uint8)


class LabelImage:
    """A ``height x width`` uint8 label image in a file: rows written as they become final, read back by rows."""

    def __init__(self, path: str | Path, height: int, width: int) -> None:
        self.path, self.shape = Path(path), (height, width)
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed by close(), the owner's context manager
        self._file.truncate(height * width)

    def write_rows(self, top: int, rows: np.ndarray) -> None:
        os.pwrite(self._file.fileno(), np.ascontiguousarray(rows, dtype=np.uint8).tobytes(), top * self.shape[1])

    def row(self, index: int) -> np.ndarray:
        return np.frombuffer(os.pread(self._file.fileno(), self.shape[1], index * self.shape[1]), dtype=np.uint8)

    def strided(self, step: int) -> np.ndarray:
        """Every ``step``-th row and column (nearest-neighbour downsampling of labels)."""
        return np.stack([self.row(y)[::step] for y in range(0, self.shape[0], step)])

    def tiles(self, tile: int, step: int = 1) -> Iterator[np.ndarray]:
        """The image at ``1 / step`` (every ``step``-th label) as ``tile x tile`` blocks, row by row, zero-padded at the edges."""
        height, width = -(-self.shape[0] // step), -(-self.shape[1] // step)
        for top in range(0, height, tile):
            rows = np.zeros((tile, width), np.uint8)
            for i, y in enumerate(range(top, min(top + tile, height))):
                rows[i] = self.row(y * step)[::step]
            for left in range(0, width, tile):
                block = np.zeros((tile, tile), np.uint8)
                block[:, : min(tile, width - left)] = rows[:, left : left + tile]
                yield block

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> LabelImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step(shape: Sequence[int], max_side: int) -> int:
    return max(1, math.ceil(max(shape) / max_side))


def write_pyramid_tiff(labels: LabelImage, path: Path, mpp: float | None = None) -> int:
    """The labels as a tiled, zlib-compressed BigTIFF with halved sub-resolutions down to one tile, written tile by tile.

    Returns the number of levels. The sub-resolutions take every second label (labels are not averaged).
    """
    import tifffile

    levels = 1
    while max(labels.shape) / 2 ** (levels - 1) > TIFF_TILE:
        levels += 1
    options = {"tile": (TIFF_TILE, TIFF_TILE), "compression": "zlib", "photometric": "minisblack", "dtype": np.uint8}
    with atomic_path(path) as partial, tifffile.TiffWriter(partial, bigtiff=True) as tif:
        for level in range(levels):
            step = 2**level
            shape = (-(-labels.shape[0] // step), -(-labels.shape[1] // step))
            placement = {"subifds": levels - 1} if level == 0 else {"subfiletype": 1}
            resolution = {"resolution": (1e4 / (mpp * step), 1e4 / (mpp * step)), "resolutionunit": "CENTIMETER"} if mpp else {}
            tif.write(labels.tiles(TIFF_TILE, step), shape=shape, **placement, **options, **resolution)
    return levels


def write_overlay(slide: Slide, labels: LabelImage, path: Path, alpha: float = 0.45) -> None:
    """The slide's thumbnail with the predicted classes tinted on it (background left as it is)."""
    thumbnail = slide.thumbnail(OVERLAY_SIDE)
    step = _step(labels.shape, OVERLAY_SIDE)
    small = np.asarray(Image.fromarray(labels.strided(step)).resize(thumbnail.shape[1::-1], Image.Resampling.NEAREST))
    colors = PALETTE[np.minimum(small, len(PALETTE) - 1)]
    blend = (1 - alpha) * thumbnail.astype(np.float32) + alpha * colors.astype(np.float32)
    tinted = np.where(small[..., None] > 0, blend, thumbnail).astype(np.uint8)
    atomic_write(path, lambda stream: Image.fromarray(tinted).save(stream, format="PNG"))


def write_outline_geojson(labels: LabelImage, class_names: Sequence[str], downsample: float, path: Path) -> int:
    """Outlines of every region of every class but background, in level-0 pixel coordinates; returns their count."""
    step = _step(labels.shape, OUTLINE_SIDE)
    colors = {value: PALETTE[value % len(PALETTE)].tolist() for value in range(1, len(class_names))}
    collection = mask_features(labels.strided(step), class_names, scale=step * downsample, colors=colors)
    atomic_write_text(path, json.dumps(collection))
    return len(collection["features"])
