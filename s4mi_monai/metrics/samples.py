"""Per-sample test records: what a run's test metrics were computed from, kept beside ``metrics.json``.

A run's headline number (say macro F1 on 400 test images) hides how much it would move on another 400
images. Intervals over test images and paired comparisons of two methods on the same images need the
per-sample inputs of the metric, not just its value. The shared evaluators keep them
(:attr:`~s4mi_monai.metrics.classification.EvaluatorMetric.last_samples`) and the bundles write them to
``test_samples.json``:

* classification: ``probabilities`` (N, C), ``targets`` (N,) or (N, C) and the evaluator's options
  (class names, multi-label, threshold, challenge);
* segmentation: per-image pixel ``counts`` (N, n_foreground_classes, 3) of ``[tp, fp, fn]`` and the
  empty-ground-truth policy;
* ``images``: the test image of each row, so that two runs are paired image by image.

:meth:`PerImageRecords.metrics` recomputes the full metrics dict on any subset of rows with the same
functions the evaluators use (:func:`~s4mi_monai.metrics.classification.classification_metrics`,
:func:`~s4mi_monai.metrics.segmentation.metrics_from_counts`): no second metric implementation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4mi_monai.io import write_json
from s4mi_monai.metrics.classification import classification_metrics
from s4mi_monai.metrics.segmentation import metrics_from_counts
from s4mi_monai.metrics.tables import lookup_value

__all__ = ["SAMPLES_FILE", "PerImageRecords", "lookup_metric", "read_samples", "write_samples"]

SAMPLES_FILE = "test_samples.json"
CACHE_SIZE = 20_000
ARRAYS = {"classification": ("probabilities", "targets"), "segmentation": ("counts",)}


def lookup_metric(metrics: Mapping[str, Any], dotted: str) -> float:
    """The number at ``dotted`` (``f1_macro``, ``recall_per_class.melanoma``) of a metrics dict; nan when absent or null."""
    value = lookup_value(metrics, dotted)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


@dataclass
class PerImageRecords:
    """The per-sample records of one run's test split (see the module docstring)."""

    task: str
    options: dict[str, Any]
    arrays: dict[str, np.ndarray]
    images: list[str] = field(default_factory=list)
    _cache: dict[bytes, dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in ARRAYS:
            raise ValueError(f"task must be one of {sorted(ARRAYS)}, got {self.task!r}")
        missing = [name for name in ARRAYS[self.task] if name not in self.arrays]
        if missing:
            raise ValueError(f"{self.task} samples need the arrays {list(ARRAYS[self.task])}; missing {missing}")
        lengths = {len(self.arrays[name]) for name in ARRAYS[self.task]}
        if self.images:
            lengths.add(len(self.images))
        if len(lengths) != 1:
            raise ValueError(f"per-sample arrays and image names differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.arrays[ARRAYS[self.task][0]])

    def metrics(self, rows: np.ndarray | None = None) -> dict[str, Any]:
        """The evaluator's full metrics dict on the given rows (all rows when ``None``; rows may repeat).

        Remembered per row set: a report bootstraps several metrics over the same resamples.
        """
        key = b"all" if rows is None else np.asarray(rows, dtype=np.int64).tobytes()
        if key not in self._cache:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            chosen = {name: value if rows is None else value[rows] for name, value in self.arrays.items()}
            if self.task == "classification":
                self._cache[key] = classification_metrics(chosen["probabilities"], chosen["targets"], **self.options)
            else:
                self._cache[key] = metrics_from_counts(chosen["counts"], **self.options)
        return self._cache[key]

    def metric(self, name: str, rows: np.ndarray | None = None) -> float:
        """One metric (dotted name for nested values) on the given rows; nan where undefined."""
        return lookup_metric(self.metrics(rows), name)

    def statistic(self, name: str) -> Callable[[np.ndarray], float]:
        """``rows -> metric`` for the bootstrap code of :mod:`s4mi_monai.metrics.statistics`."""
        return lambda rows: self.metric(name, rows)

    def aligned_to(self, images: Sequence[str]) -> PerImageRecords:
        """These records reordered to ``images`` (another run's test images), for paired comparisons.

        Raises a ValueError naming the difference when the two runs were not tested on the same images.
        """
        if list(images) == self.images:
            return self
        if not self.images:
            raise ValueError("these test samples have no image names, so they cannot be paired with another run")
        position = {image: index for index, image in enumerate(self.images)}
        missing = [image for image in images if image not in position]
        if missing or len(images) != len(self.images):
            extra = sorted(set(self.images) - set(images))
            raise ValueError(
                f"the runs were tested on different images: {len(missing)} only in one ({missing[:3]}), "
                f"{len(extra)} only in the other ({extra[:3]}); compare runs that share a datalist"
            )
        rows = np.array([position[image] for image in images])
        return PerImageRecords(self.task, self.options, {k: v[rows] for k, v in self.arrays.items()}, list(images))


def write_samples(path: str | Path, samples: Mapping[str, Any], images: Sequence[str] | None = None) -> None:
    """Write an evaluator's ``last_samples`` (and the test image of each row, when known) as JSON, atomically."""
    record = {"task": samples["task"], "options": dict(samples["options"]), "images": list(images or [])}
    record.update({name: np.asarray(samples[name]) for name in ARRAYS[samples["task"]]})
    PerImageRecords(record["task"], record["options"], {n: record[n] for n in ARRAYS[record["task"]]}, record["images"])  # validate
    write_json(path, record, indent=None)


def read_samples(path: str | Path) -> PerImageRecords:
    """The records written by :func:`write_samples` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run has no per-sample test records (rerun its evaluate.json)")
    record = json.loads(path.read_text())
    task = record.get("task")
    if task not in ARRAYS:
        raise ValueError(f"{path}: task must be one of {sorted(ARRAYS)}, got {task!r}")
    dtypes = {"probabilities": np.float64, "targets": np.float64, "counts": np.int64}
    arrays = {name: np.asarray(record[name], dtype=dtypes[name]) for name in ARRAYS[task] if name in record}
    try:
        return PerImageRecords(task, record.get("options", {}), arrays, record.get("images", []))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
