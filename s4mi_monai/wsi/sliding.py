"""Sliding-window segmentation of a slide in horizontal bands, so memory does not grow with the slide.

Windows sit where MONAI's ``SlidingWindowInferer`` puts them (a step of ``int(window * (1 - overlap))``, the
last window flush with the edge) and their class probabilities are blended with MONAI's Gaussian importance
map, so on an image that fits in memory the result is the inferer's. Only one row of windows is held: once
the windows move down, the rows above them are final and go to ``write_rows``. Peak memory is the window
row (``classes x window x slide width`` floats) plus one batch, whatever the slide's height.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices

from s4mi_monai.wsi.reader import Slide

__all__ = ["BLANK_LEVEL", "label_writer", "segment_slide", "window_starts"]

BLANK_LEVEL = 220
"""A pixel whose three channels are all at least this bright counts as glass (background) for ``skip_blank``."""
BLANK_FRACTION = 0.98


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Where windows start along one side: MONAI's ``SlidingWindowInferer`` positions (``dense_patch_slices``)."""
    if length <= window:
        return [0]
    interval = max(int(window * (1 - overlap)), 1)
    return [s[0].start for s in dense_patch_slices((length,), (window,), (interval,))]


def _is_blank(window: np.ndarray) -> bool:
    return float((window >= BLANK_LEVEL).all(axis=-1).mean()) >= BLANK_FRACTION


def segment_slide(
    slide: Slide,
    predict: Callable[[np.ndarray], torch.Tensor],
    num_classes: int,
    write_rows: Callable[[int, np.ndarray], None],
    window: int,
    overlap: float = 0.25,
    batch_size: int = 4,
    skip_blank: bool = False,
) -> dict[str, int]:
    """Predict every window of ``slide`` and hand the blended probabilities to ``write_rows(top, probs)`` row band by band.

    ``predict`` maps a ``N x window x window x 3`` uint8 batch to ``N x classes x window x window`` probabilities.
    ``probs`` is ``classes x rows x width`` float32 for the slide rows ``top`` to ``top + rows``; every row is
    written once, in order. With ``skip_blank`` a window that is almost all glass is not run through the network
    and counts as certain background (class 0). Returns window counts.
    """
    width, height = slide.size
    importance = compute_importance_map((window, window), mode="gaussian", device="cpu").numpy().astype(np.float32)
    xs, ys = window_starts(width, window, overlap), window_starts(height, window, overlap)
    band = min(window, height)
    scores = np.zeros((num_classes, band, width), dtype=np.float32)
    weights = np.zeros((band, width), dtype=np.float32)
    counts = {"windows": 0, "blank": 0}
    for row, top in enumerate(ys):
        tiles = [slide.read(left, top, window, window) for left in xs]
        blank = [skip_blank and _is_blank(tile) for tile in tiles]
        probabilities: list[np.ndarray | None] = [None] * len(xs)
        todo = [i for i, b in enumerate(blank) if not b]
        for start in range(0, len(todo), batch_size):
            chosen = todo[start : start + batch_size]
            out = predict(np.stack([tiles[i] for i in chosen])).float().cpu().numpy()
            for i, probs in zip(chosen, out):
                probabilities[i] = probs
        for i, left in enumerate(xs):
            probs = probabilities[i]
            if probs is None:
                probs = np.zeros((num_classes, window, window), dtype=np.float32)
                probs[0] = 1.0
            rows, cols = min(window, height - top), min(window, width - left)
            scores[:, :rows, left : left + cols] += probs[:, :rows, :cols] * importance[:rows, :cols]
            weights[:rows, left : left + cols] += importance[:rows, :cols]
        counts["windows"] += len(xs)
        counts["blank"] += sum(blank)
        next_top = ys[row + 1] if row + 1 < len(ys) else height
        final = next_top - top  # rows no later window reaches: normalise them in place, hand them over, shift the band up
        scores[:, :final] /= np.maximum(weights[:final], 1e-12, out=weights[:final])
        write_rows(top, scores[:, :final])
        scores[:, : band - final] = scores[:, final:]
        weights[: band - final] = weights[final:]
        scores[:, band - final :] = 0
        weights[band - final :] = 0
    return counts


def label_writer(store_rows: Callable[[int, np.ndarray], None], chunk_rows: int = 64) -> Callable[[int, np.ndarray], None]:
    """A ``write_rows`` that hands each row's most probable class (uint8) to ``store_rows(top, labels)``.

    The arg-max runs over chunks of rows, so its 64-bit indices never take a whole band of memory.
    """

    def write_rows(top: int, probabilities: np.ndarray) -> None:
        for start in range(0, probabilities.shape[1], chunk_rows):
            store_rows(top + start, probabilities[:, start : start + chunk_rows].argmax(axis=0).astype(np.uint8))

    return write_rows
