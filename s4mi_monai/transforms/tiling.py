"""Tiling large slides into fixed-size tiles with blank padding at the edges.

A 1408x1876 slide cut into 480x480 tiles gives a 3x4 grid (12 tiles): the slide sits at the top-left
of a 1440x1920 canvas whose right and bottom margins are ``pad_value``. Tiles are numbered row by row;
``tile_boxes`` gives each tile's ``(top, left, bottom, right)`` in slide pixels (clipped to the slide),
so predictions can be stitched back and every tile keeps its link to its slide.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_tensor


def tile_boxes(height: int, width: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` of each tile of a ``height x width`` slide, row by row, clipped to the slide."""
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    rows, cols = math.ceil(height / tile_size), math.ceil(width / tile_size)
    return [
        (r * tile_size, c * tile_size, min((r + 1) * tile_size, height), min((c + 1) * tile_size, width))
        for r in range(rows)
        for c in range(cols)
    ]


def tile_array(array: np.ndarray | torch.Tensor, tile_size: int, pad_value: float = 0, channel_first: bool = True):
    """Cut an image into ``tile_size`` squares, padding the last row and column with ``pad_value``.

    ``array`` is ``(C, H, W)`` when ``channel_first`` else ``(H, W[, C])``; the result stacks the tiles
    on a new first axis in the same layout, and the boxes from :func:`tile_boxes`.
    """
    height, width = (array.shape[-2], array.shape[-1]) if channel_first else (array.shape[0], array.shape[1])
    boxes = tile_boxes(height, width, tile_size)
    tiles = []
    for top, left, bottom, right in boxes:
        if channel_first:
            crop = array[..., top:bottom, left:right]
            pad = [(0, 0)] * (array.ndim - 2) + [(0, tile_size - (bottom - top)), (0, tile_size - (right - left))]
        else:
            crop = array[top:bottom, left:right]
            pad = [(0, tile_size - (bottom - top)), (0, tile_size - (right - left))] + [(0, 0)] * (array.ndim - 2)
        if isinstance(crop, torch.Tensor):
            torch_pad = [p for pair in reversed(pad) for p in pair]
            tiles.append(F.pad(crop.as_tensor() if hasattr(crop, "as_tensor") else crop, torch_pad, value=pad_value))
        else:
            tiles.append(np.pad(crop, pad, constant_values=pad_value))
    stacked = torch.stack(tiles) if isinstance(array, torch.Tensor) else np.stack(tiles)
    return stacked, boxes


class TileSlide(Transform):
    """Channel-first slide ``(C, H, W)`` -> tiles ``(N, C, S, S)``, optionally resized to ``output_size``.

    ``mode`` is the resize interpolation: ``"area"`` for images, ``"nearest"`` for masks.
    """

    def __init__(self, tile_size: int = 480, output_size: int | None = 224, pad_value: float = 0, mode: str = "area") -> None:
        self.tile_size, self.output_size, self.pad_value, self.mode = tile_size, output_size, pad_value, mode

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = convert_to_tensor(image, track_meta=False)
        if image.ndim != 3:
            raise ValueError(f"TileSlide expects a channel-first 2-D image (C, H, W), got shape {tuple(image.shape)}")
        tiles, _ = tile_array(image, self.tile_size, self.pad_value)
        if self.output_size and self.output_size != self.tile_size:
            tiles = F.interpolate(tiles.float(), size=(self.output_size, self.output_size), mode=self.mode)
        return tiles


class TileSlided(MapTransform):
    """Dictionary version of :class:`TileSlide`; also stores the tile boxes under ``<key>_tile_boxes``."""

    def __init__(
        self,
        keys: KeysCollection,
        tile_size: int = 480,
        output_size: int | None = 224,
        pad_value: float = 0,
        mode: str | Sequence[str] = "area",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        self.tilers = {key: TileSlide(tile_size, output_size, pad_value, m) for key, m in zip(self.keys, modes)}

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            height, width = d[key].shape[-2:]
            d[key] = self.tilers[key](d[key])
            d[f"{key}_tile_boxes"] = tile_boxes(int(height), int(width), self.tilers[key].tile_size)
        return d
