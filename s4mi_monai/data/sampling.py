"""Batches of labeled and unlabeled images for semi-supervised training (SSL4MIS ``TwoStreamBatchSampler``).

The dataset is ``ConcatDataset([labeled, unlabeled])``: indices ``0 .. n_labeled − 1`` are labeled,
the next ``n_unlabeled`` unlabeled. Every batch holds ``labeled_batch_size`` labeled images first, then
``unlabeled_batch_size`` unlabeled ones; :func:`two_stream_collate` stacks every image under ``"image"``
and only the labeled masks under ``"label"``, so a trainer reads the labeled count as ``len(label)``.

An epoch is ``ceil(n_labeled / labeled_batch_size)`` batches and shows every labeled image at least once
(the last batch is filled up from a fresh permutation); the unlabeled stream cycles through its own
permutations. Unlike SSL4MIS (which hangs when nothing is unlabeled, hence S4MI's "99 %"), 100 % labels
work: with no unlabeled image every batch holds ``labeled_batch_size + unlabeled_batch_size`` labeled
images. Draws depend only on ``(seed, epoch)`` (:meth:`TwoStreamBatchSampler.set_epoch`), so a resumed run
sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate

__all__ = ["TwoStreamBatchSampler", "two_stream_collate"]


class TwoStreamBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Index batches of ``labeled_batch_size`` labeled then ``unlabeled_batch_size`` unlabeled items (see module docstring)."""

    def __init__(self, n_labeled: int, n_unlabeled: int, labeled_batch_size: int = 8, unlabeled_batch_size: int = 8, seed: int = 0) -> None:
        if n_labeled < 1:
            raise ValueError(
                "semi-supervised training needs at least one labeled image; the label fraction selected none "
                "(raise --label_fraction or check that the labeled images have masks)"
            )
        if n_unlabeled < 0 or labeled_batch_size < 1 or unlabeled_batch_size < 0:
            raise ValueError(
                f"need n_unlabeled >= 0, labeled_batch_size >= 1, unlabeled_batch_size >= 0; "
                f"got {n_unlabeled}, {labeled_batch_size}, {unlabeled_batch_size}"
            )
        self.n_labeled = n_labeled
        self.n_unlabeled = n_unlabeled
        if n_unlabeled == 0 or unlabeled_batch_size == 0:
            self.labeled_batch_size, self.unlabeled_batch_size = labeled_batch_size + unlabeled_batch_size, 0
        else:
            self.labeled_batch_size, self.unlabeled_batch_size = labeled_batch_size, unlabeled_batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches ``__iter__`` yields (the trainer calls it at every epoch start)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_labeled / self.labeled_batch_size)

    def _stream(self, rng: np.random.Generator, n_items: int, n_needed: int, offset: int) -> np.ndarray:
        """Concatenated permutations of ``n_items`` indices, cut to ``n_needed``, shifted by ``offset``."""
        permutations = [rng.permutation(n_items) for _ in range(math.ceil(n_needed / n_items))]
        return np.concatenate(permutations)[:n_needed] + offset

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_batches = len(self)
        labeled = self._stream(rng, self.n_labeled, n_batches * self.labeled_batch_size, 0)
        labeled = labeled.reshape(n_batches, self.labeled_batch_size)
        if self.unlabeled_batch_size:
            unlabeled = self._stream(rng, self.n_unlabeled, n_batches * self.unlabeled_batch_size, self.n_labeled)
            unlabeled = unlabeled.reshape(n_batches, self.unlabeled_batch_size)
        else:
            unlabeled = np.zeros((n_batches, 0), dtype=np.int64)
        for labeled_part, unlabeled_part in zip(labeled, unlabeled, strict=True):
            yield [int(i) for i in labeled_part] + [int(i) for i in unlabeled_part]


def two_stream_collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate labeled items (with ``"label"``) followed by unlabeled ones: every image, the labeled masks.

    Returns ``{"image": (B, C, H, W), "label": (L, 1, H, W)}`` as plain tensors (L = number of labeled items).
    """
    n_labeled = sum("label" in item for item in batch)
    if n_labeled == 0 or any("label" not in item for item in batch[:n_labeled]):
        raise ValueError("a two-stream batch must start with its labeled items (at least one)")
    labeled = list_data_collate([{"image": item["image"], "label": item["label"]} for item in batch[:n_labeled]])
    images = [labeled["image"]]
    if n_labeled < len(batch):
        images.append(list_data_collate([{"image": item["image"]} for item in batch[n_labeled:]])["image"])
    as_plain = [image.as_tensor() if hasattr(image, "as_tensor") else image for image in images]
    label = labeled["label"]
    return {"image": torch.cat(as_plain), "label": label.as_tensor() if hasattr(label, "as_tensor") else label}
