"""The one segmentation evaluator every S4MI method is scored with.

S4MI's pipelines each computed a different "IoU" (methods.md section 4). Here every method gets the
same numbers from :func:`segmentation_metrics` (or :func:`matched_segmentation_metrics` for cluster
outputs), and the reference definitions map onto keys as follows:

* DEDL supervised, dataset-micro foreground IoU -> ``iou_pooled``.
* Cross teaching, mean over images with empty-ground-truth images skipped in the numerator but
  counted in the denominator -> ``reference_iou_mean_over_all_images`` (biased low; the unbiased
  per-image number is ``iou_per_image_mean``).
* PiCIE, Hungarian-matched IoU averaged over both classes incl. background -> ``miou_all_classes``
  of :func:`matched_segmentation_metrics`, reported beside the matched foreground metrics.

Definitions, per foreground class c, with tp/fp/fn counted in pixels of one image i:

* IoU_i = tp / (tp + fp + fn), Dice_i = 2 tp / (2 tp + fp + fn).
* ``*_pooled`` (dataset micro): the same formulas on tp/fp/fn summed over all images of the split;
  nan if c appears in neither ground truth nor prediction anywhere.
* ``*_per_image_mean`` / ``*_per_image_std`` (population std, ddof=0): over the ``n_scored_images``.
* An image whose ground truth has no pixel of c ("empty GT") has no defined IoU. It is counted in
  ``n_empty_gt``, and ``empty_gt_correct_rate`` is the fraction of those whose prediction has no
  pixel of c either (true-negative images). ``empty_policy="report"`` (default) leaves them out of
  the per-image statistics; ``"score"`` includes them with IoU = Dice = 1 if the prediction is empty
  and 0 otherwise (MONAI's ``ignore_empty=False`` convention). They are never silently scored 0.

Labels: with ``num_classes=2`` the foreground is ``label > 0`` (so 0/1 and 0/255 masks both work);
with C > 2 labels are 0..C-1 and every foreground class 1..C-1 is reported under ``per_class[str(c)]``;
the top-level values are then the mean over foreground classes of the per-class floats (ignoring
nan) and the sum of the per-class counts (``n_empty_gt`` counts (image, class) pairs). For binary
data the top level equals ``per_class["1"]``.

Inputs: one array or tensor per image, sizes may differ between images. A 2-D array is a label
map; arrays with 3 or more dims are channel-first: (1, H, W) is a label map, (C, H, W) a one-hot or
probability map reduced by argmax over channels. Single-channel maps must be integer-valued
(threshold probabilities first).

:class:`SegmentationMetric` is the ignite ``Metric`` for MONAI engines (design as in
:mod:`s4mi_monai.metrics.classification`). It keeps only the (n_foreground_classes, 3) tp/fp/fn
counts of each image, not the images, so memory does not grow with image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from s4mi_monai.metrics.classification import (
    EvaluatorMetric,
    NotComputableError,
    batch_items,
    ratio_or_nan,
    reinit__is_reduced,
    to_numpy,
)

EMPTY_POLICIES = ("report", "score")

UNMATCHED = -1
"""Class of a cluster that the Hungarian matching leaves without a class (more clusters than classes)."""

SEGMENTATION_SCALAR_NAMES = (
    "n_images",
    "num_classes",
    "iou_pooled",
    "dice_pooled",
    "iou_per_image_mean",
    "iou_per_image_std",
    "dice_per_image_mean",
    "dice_per_image_std",
    "n_scored_images",
    "n_empty_gt",
    "empty_gt_correct_rate",
    "reference_iou_mean_over_all_images",
)

ImageLike = np.ndarray | torch.Tensor


def segmentation_metrics(
    predictions: Sequence[ImageLike],
    targets: Sequence[ImageLike],
    empty_policy: str = "report",
    *,
    num_classes: int = 2,
) -> dict[str, Any]:
    """Foreground segmentation metrics of one split (definitions in the module docstring).

    Returns ``n_images``, ``num_classes``, ``empty_policy``, ``iou_pooled``, ``dice_pooled``,
    ``iou_per_image_mean``/``_std``, ``dice_per_image_mean``/``_std``, ``n_scored_images``,
    ``n_empty_gt``, ``empty_gt_correct_rate``, ``reference_iou_mean_over_all_images`` and ``per_class``.
    """
    _check_options(empty_policy, num_classes)
    return metrics_from_counts(per_image_counts(predictions, targets, num_classes), empty_policy)


def per_image_counts(predictions: Sequence[ImageLike], targets: Sequence[ImageLike], num_classes: int = 2) -> np.ndarray:
    """(n_images, num_classes - 1, 3) ``[tp, fp, fn]`` of every foreground class in every image: the per-image records
    (``test_samples.json``) that :func:`metrics_from_counts` turns into the metrics."""
    _check_lengths(predictions, targets)
    return np.stack(
        [
            _foreground_counts(prediction, target, num_classes, f"at index {index}")
            for index, (prediction, target) in enumerate(zip(predictions, targets))
        ]
    )


def metrics_from_counts(counts: np.ndarray, empty_policy: str = "report") -> dict[str, Any]:
    """The metrics of :func:`segmentation_metrics` from per-image pixel counts.

    Args:
        counts: (n_images, n_foreground_classes, 3) integer ``[tp, fp, fn]`` per image and class.
        empty_policy: ``"report"`` or ``"score"`` (module docstring).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 3 or counts.shape[0] == 0 or counts.shape[2] != 3:
        raise ValueError(f"counts must have shape (n_images > 0, n_foreground_classes, 3), got {counts.shape}")
    _check_options(empty_policy, counts.shape[1] + 1)
    per_class = {str(c + 1): _class_metrics(counts[:, c], empty_policy) for c in range(counts.shape[1])}
    return {
        "n_images": counts.shape[0],
        "num_classes": counts.shape[1] + 1,
        "empty_policy": empty_policy,
        **_mean_over_classes(per_class),
        "per_class": per_class,
    }


def hungarian_match(pred_clusters: Sequence[ImageLike], targets: Sequence[ImageLike], n_clusters: int, n_classes: int) -> dict[int, int]:
    """One-to-one cluster -> class mapping that maximises the matched pixels over the whole split.

    Builds the confusion histogram H[class, cluster] over all images (target pixels outside
    [0, n_classes) are ignored, as in PiCIE) and solves ``linear_sum_assignment(H, maximize=True)``.
    Clusters left without a class (n_clusters > n_classes) map to ``UNMATCHED`` (-1).
    """
    return _assign_clusters(_cluster_histograms(pred_clusters, targets, n_clusters, n_classes).sum(axis=0))


def matched_segmentation_metrics(
    cluster_maps: Sequence[ImageLike],
    targets: Sequence[ImageLike],
    n_clusters: int,
    n_classes: int = 2,
    empty_policy: str = "report",
) -> dict[str, Any]:
    """Metrics of cluster outputs (PiCIE) after Hungarian matching of clusters to classes.

    Returns the foreground metrics of :func:`segmentation_metrics` on the matched label maps (pixels
    of unmatched clusters count as false negatives of their true class), plus

    * ``pixel_accuracy`` = matched pixels / all valid pixels (the diagonal of the matched histogram),
    * ``iou_all_classes`` {class: IoU} incl. background, from the split-level matched histogram,
    * ``miou_all_classes`` = nanmean of ``iou_all_classes`` (the PiCIE convention),
    * ``cluster_to_class`` {cluster: class or -1}.
    """
    histograms = _cluster_histograms(cluster_maps, targets, n_clusters, n_classes)
    mapping = _assign_clusters(histograms.sum(axis=0))
    confusions = histograms @ _assignment_matrix(mapping, n_classes)
    result = metrics_from_counts(_class_counts(confusions)[:, 1:], empty_policy)
    result.update(all_class_scores(histograms.sum(axis=0), mapping))
    result["cluster_to_class"] = {str(cluster): cls for cluster, cls in mapping.items()}
    return result


def all_class_scores(histogram: np.ndarray, mapping: dict[int, int]) -> dict[str, Any]:
    """PiCIE's scores of a (n_classes, n_clusters) split histogram under a {cluster: class or UNMATCHED} mapping.

    ``pixel_accuracy`` = matched pixels / all valid pixels; ``iou_all_classes`` {class: tp / (tp + fp + fn)} for
    every class, background included (nan for a class in neither ground truth nor prediction), pixels of
    unmatched clusters counting as misses of their true class; ``miou_all_classes`` = their nanmean.
    """
    histogram = np.asarray(histogram, dtype=np.int64)
    n_classes = histogram.shape[0]
    matched = (histogram @ _assignment_matrix(mapping, n_classes))[:, :n_classes]
    tp = np.diag(matched)
    fp = matched.sum(axis=0) - tp
    fn = histogram.sum(axis=1) - tp
    iou_all_classes = [ratio_or_nan(t, t + p + n) for t, p, n in zip(tp, fp, fn)]
    defined = [iou for iou in iou_all_classes if not math.isnan(iou)]
    return {
        "pixel_accuracy": ratio_or_nan(tp.sum(), histogram.sum()),
        "iou_all_classes": {str(c): iou for c, iou in enumerate(iou_all_classes)},
        "miou_all_classes": float(np.mean(defined)) if defined else math.nan,
    }


class SegmentationMetric(EvaluatorMetric):
    """:func:`segmentation_metrics` accumulated over an epoch of a MONAI/ignite engine.

    ``update`` takes ``(pred, label)`` as produced by
    ``output_transform=monai.handlers.from_engine(["pred", "label"])``: decollated lists of
    channel-first items or batch-first tensors; ``pred`` may be a label map, one-hot or
    probabilities (argmax). ``compute`` returns the scalar named by ``metric``; the full dict is in
    ``last_result`` and ``engine.state.s4mi_metrics[name]``.
    """

    def __init__(
        self,
        metric: str = "iou_per_image_mean",
        num_classes: int = 2,
        empty_policy: str = "report",
        save_path: str | Path | None = None,
        scalars_prefix: str | None = None,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        _check_options(empty_policy, num_classes)
        self.num_classes = num_classes
        self.empty_policy = empty_policy
        self._counts: list[np.ndarray] = []
        super().__init__(metric, SEGMENTATION_SCALAR_NAMES, save_path, scalars_prefix, output_transform, device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._counts = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        predictions, labels = (batch_items(part) for part in output)
        _check_lengths(predictions, labels)
        for index, (prediction, label) in enumerate(zip(predictions, labels)):
            self._counts.append(_foreground_counts(prediction, label, self.num_classes, f"at batch item {index}"))

    def _compute_all(self) -> dict[str, Any]:
        if not self._counts:
            raise NotComputableError("SegmentationMetric needs at least one update before compute")
        counts = np.stack(self._counts)
        self.last_samples = {"task": "segmentation", "options": {"empty_policy": self.empty_policy}, "counts": counts}
        return metrics_from_counts(counts, self.empty_policy)


# ---------------------------------------------------------------------------------------------
# input handling


def _check_options(empty_policy: str, num_classes: int) -> None:
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + foreground), got {num_classes}")


def _check_lengths(predictions: Sequence[Any], targets: Sequence[Any]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions but {len(targets)} targets")
    if len(predictions) == 0:
        raise ValueError("no images to evaluate")


def _label_map(image: ImageLike, what: str) -> np.ndarray:
    """An integer label map from a label map, (1, ...) label map or (C, ...) one-hot/probabilities."""
    array = to_numpy(image)
    if array.ndim < 2:
        raise ValueError(f"{what} must be a 2-D label map or a channel-first map, got shape {array.shape}")
    if array.ndim >= 3 and array.shape[0] > 1:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} contains NaN or inf")
        return array.argmax(axis=0)
    if array.ndim >= 3:
        array = array[0]
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool or np.all(array == np.round(array))):
        raise ValueError(f"{what} is a single-channel map with non-integer values (or NaN); threshold it into a label map first")
    return array.astype(np.int64)


def _label_map_pair(prediction: ImageLike, target: ImageLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    prediction_map = _label_map(prediction, f"prediction {where}")
    target_map = _label_map(target, f"target {where}")
    if prediction_map.shape != target_map.shape:
        raise ValueError(
            f"prediction and target {where} differ in shape: {np.shape(prediction)} vs {np.shape(target)} "
            f"(label maps {prediction_map.shape} vs {target_map.shape})"
        )
    return prediction_map, target_map


def _check_label_range(labels: np.ndarray, upper: int | None, what: str) -> None:
    """Labels must lie in [0, upper) (or be >= 0 when ``upper`` is None)."""
    if labels.size and (labels.min() < 0 or (upper is not None and labels.max() >= upper)):
        bound = "[0, inf)" if upper is None else f"[0, {upper})"
        raise ValueError(f"{what} has labels outside {bound}: [{labels.min()}, {labels.max()}]")


# ---------------------------------------------------------------------------------------------
# counting


def _joint_histogram(rows: np.ndarray, columns: np.ndarray, n_rows: int, n_columns: int) -> np.ndarray:
    """(n_rows, n_columns) pixel counts of each (row label, column label) pair."""
    flat = rows.ravel() * n_columns + columns.ravel()
    return np.bincount(flat, minlength=n_rows * n_columns).reshape(n_rows, n_columns)


def _class_counts(confusion: np.ndarray) -> np.ndarray:
    """``[tp, fp, fn]`` per true class from (..., K, M >= K) confusions (rows = true class,
    columns = predicted class; columns beyond K mean "no class")."""
    n_classes = confusion.shape[-2]
    square = confusion[..., :n_classes]
    tp = np.diagonal(square, axis1=-2, axis2=-1)
    fp = square.sum(axis=-2) - tp
    fn = confusion.sum(axis=-1) - tp
    return np.stack([tp, fp, fn], axis=-1)


def _foreground_counts(prediction: ImageLike, target: ImageLike, num_classes: int, where: str) -> np.ndarray:
    """(num_classes - 1, 3) ``[tp, fp, fn]`` of each foreground class in one image."""
    prediction_map, target_map = _label_map_pair(prediction, target, where)
    upper = None if num_classes == 2 else num_classes
    _check_label_range(prediction_map, upper, f"prediction {where}")
    _check_label_range(target_map, upper, f"target {where}")
    if num_classes == 2:
        prediction_map, target_map = (prediction_map > 0).astype(np.int64), (target_map > 0).astype(np.int64)
    return _class_counts(_joint_histogram(target_map, prediction_map, num_classes, num_classes))[1:]


def _cluster_histograms(cluster_maps: Sequence[ImageLike], targets: Sequence[ImageLike], n_clusters: int, n_classes: int) -> np.ndarray:
    """(n_images, n_classes, n_clusters) pixel counts; target labels outside [0, n_classes) ignored."""
    _check_lengths(cluster_maps, targets)
    histograms = []
    for index, (clusters, target) in enumerate(zip(cluster_maps, targets)):
        cluster_map, target_map = _label_map_pair(clusters, target, f"at index {index}")
        _check_label_range(cluster_map, n_clusters, f"cluster map at index {index}")
        valid = (target_map >= 0) & (target_map < n_classes)
        histograms.append(_joint_histogram(target_map[valid], cluster_map[valid], n_classes, n_clusters))
    return np.stack(histograms)


def _assign_clusters(histogram: np.ndarray) -> dict[int, int]:
    """Hungarian assignment on a (n_classes, n_clusters) histogram, as {cluster: class or UNMATCHED}."""
    classes, clusters = linear_sum_assignment(histogram, maximize=True)
    mapping = dict.fromkeys(range(histogram.shape[1]), UNMATCHED)
    mapping.update(zip(clusters.tolist(), classes.tolist()))
    return mapping


def _assignment_matrix(mapping: dict[int, int], n_classes: int) -> np.ndarray:
    """(n_clusters, n_classes + 1) 0/1 matrix; column n_classes collects unmatched clusters."""
    matrix = np.zeros((len(mapping), n_classes + 1), dtype=np.int64)
    for cluster, cls in mapping.items():
        matrix[cluster, n_classes if cls == UNMATCHED else cls] = 1
    return matrix


# ---------------------------------------------------------------------------------------------
# metrics


def _class_metrics(counts: np.ndarray, empty_policy: str) -> dict[str, Any]:
    """Metrics of one foreground class from its (n_images, 3) ``[tp, fp, fn]``."""
    tp, fp, fn = counts.T
    gt_empty = tp + fn == 0
    prediction_empty = tp + fp == 0
    scored = ~gt_empty
    iou = tp[scored] / (tp + fp + fn)[scored]
    dice = 2 * tp[scored] / (2 * tp + fp + fn)[scored]
    reference = ratio_or_nan(iou.sum(), len(counts))
    if empty_policy == "score":
        empty_scores = prediction_empty[gt_empty].astype(np.float64)
        iou, dice = np.concatenate([iou, empty_scores]), np.concatenate([dice, empty_scores])
    n_empty_gt = int(gt_empty.sum())
    total_tp, total_fp, total_fn = counts.sum(axis=0)
    return {
        "iou_pooled": ratio_or_nan(total_tp, total_tp + total_fp + total_fn),
        "dice_pooled": ratio_or_nan(2 * total_tp, 2 * total_tp + total_fp + total_fn),
        "iou_per_image_mean": _mean(iou),
        "iou_per_image_std": _std(iou),
        "dice_per_image_mean": _mean(dice),
        "dice_per_image_std": _std(dice),
        "n_scored_images": int(iou.size),
        "n_empty_gt": n_empty_gt,
        "empty_gt_correct_rate": ratio_or_nan(int(np.sum(gt_empty & prediction_empty)), n_empty_gt),
        "reference_iou_mean_over_all_images": reference,
    }


def _mean_over_classes(per_class: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per key: sum of the per-class counts (int) or nan-ignoring mean of the per-class floats."""
    summary: dict[str, Any] = {}
    for key in next(iter(per_class.values())):
        values = [metrics[key] for metrics in per_class.values()]
        if isinstance(values[0], int):
            summary[key] = sum(values)
        else:
            summary[key] = _mean(np.array([value for value in values if not math.isnan(value)]))
    return summary


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _std(values: np.ndarray) -> float:
    return float(values.std()) if values.size else math.nan
