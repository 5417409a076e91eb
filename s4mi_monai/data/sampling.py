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

Under torchrun each of the ``num_replicas`` ranks takes its share of one global batch: the global batches
are those of one process with ``num_replicas`` times the batch sizes, and rank ``r`` takes the ``r``-th
block of its labeled and of its unlabeled part. The union over ranks of every step is then the single
process's batch of that size, and every labeled image is still shown once per epoch across the ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate

from s4mi_monai import distributed

__all__ = ["TwoStreamBatchSampler", "two_stream_collate"]


class TwoStreamBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Index batches of ``labeled_batch_size`` labeled then ``unlabeled_batch_size`` unlabeled items (see module docstring)."""

    def __init__(
        self,
        n_labeled: int,
        n_unlabeled: int,
        labeled_batch_size: int = 8,
        unlabeled_batch_size: int = 8,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        """``labeled_batch_size`` and ``unlabeled_batch_size`` are per rank; ``num_replicas`` and ``rank`` default to
        the process group's (1 and 0 outside torchrun)."""
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
        self.num_replicas = distributed.world_size() if num_replicas is None else int(num_replicas)
        self.rank = distributed.rank() if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches ``__iter__`` yields (the trainer calls it at every epoch start)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_labeled / (self.labeled_batch_size * self.num_replicas))

    def _stream(self, rng: np.random.Generator, n_items: int, n_needed: int, offset: int) -> np.ndarray:
        """Concatenated permutations of ``n_items`` indices, cut to ``n_needed``, shifted by ``offset``."""
        permutations = [rng.permutation(n_items) for _ in range(math.ceil(n_needed / n_items))]
        return np.concatenate(permutations)[:n_needed] + offset

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_batches = len(self)
        labeled = self._global_blocks(rng, self.n_labeled, self.labeled_batch_size, n_batches, 0)
        if self.unlabeled_batch_size:
            unlabeled = self._global_blocks(rng, self.n_unlabeled, self.unlabeled_batch_size, n_batches, self.n_labeled)
        else:
            unlabeled = np.zeros((n_batches, 0), dtype=np.int64)
        for labeled_part, unlabeled_part in zip(labeled, unlabeled, strict=True):
            yield [int(i) for i in labeled_part] + [int(i) for i in unlabeled_part]

    def _global_blocks(self, rng: np.random.Generator, n_items: int, batch_size: int, n_batches: int, offset: int) -> np.ndarray:
        """This rank's block of every global batch of ``batch_size x num_replicas`` indices: (n_batches, batch_size)."""
        global_size = batch_size * self.num_replicas
        batches = self._stream(rng, n_items, n_batches * global_size, offset).reshape(n_batches, global_size)
        return batches[:, self.rank * batch_size : (self.rank + 1) * batch_size]


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
