"""The one classification evaluator every S4MI method is scored with.

The reference notebooks (CASS/DEDL, methods.md 1.4) scored classification with a micro metric over
(sample, label) pairs that is neither accuracy nor macro-F1. Here every method gets the same,
standard set of metrics from :func:`classification_metrics`, plus the reference number under a name
that says what it is, so that comparisons with the paper are explicit.

Conventions (per class c, counted over samples; "predicted" = argmax for multi-class,
``probability > threshold`` for multi-label):

* ``tp_c, fp_c, fn_c`` = predicted and true, predicted not true, true not predicted.
* recall_c = tp_c / (tp_c + fn_c); **nan** (undefined) when c has no support.
* precision_c = tp_c / (tp_c + fp_c); 0 when c is never predicted but has support (sklearn
  ``zero_division=0``); **nan** when c appears in neither targets nor predictions.
* F1_c = 2 tp_c / (2 tp_c + fp_c + fn_c) (sklearn >= 1.3 formula); 0 when c is never predicted but
  has support; **nan** when c appears in neither targets nor predictions.
* AUC_c = one-vs-rest ROC AUC of the class-c probability; **nan** when the targets hold only
  positives or only negatives of c.
* ``*_macro`` = mean over the classes where the per-class value is defined; the excluded classes are
  listed under ``*_classes_undefined`` (``*_labels_undefined`` for multi-label). Undefined values
  are never silently 0.
* micro F1 = 2 sum tp / (2 sum tp + sum fp + sum fn) (equals accuracy for multi-class).

NaN is kept in the returned dict (all values are plain Python ``float``/``int``/``str``/lists/dicts);
:func:`s4mi_monai.io.to_json_safe` turns it into ``None`` for ``metrics.json``.

Design of the MONAI/ignite integration: :class:`ClassificationMetric` is an ignite ``Metric``
(``reset``/``update``/``compute``), so a bundle can use it directly as ``key_metric`` or in
``additional_metrics`` of a ``SupervisedEvaluator``, like MONAI's own metric handlers. ``compute``
returns the one scalar named by ``metric`` (what ignite stores in ``engine.state.metrics[name]`` and
what the key-metric comparison and ``CheckpointSaver`` use). The full metrics dict is kept on the
metric as ``last_result``, published as ``engine.state.s4mi_metrics[name]`` at every
``EPOCH_COMPLETED``, optionally written as JSON to ``save_path``, and, with ``scalars_prefix``, its
scalar entries are also copied into ``engine.state.metrics`` so ``StatsHandler``/TensorBoard log
them. :class:`EvaluatorMetric` holds this shared behaviour; the segmentation evaluator reuses it.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import
from scipy.stats import rankdata

from s4mi_monai.distributed import is_main_process
from s4mi_monai.io import write_json

Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric", as_type="base")
reinit__is_reduced, _ = optional_import(
    "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced", as_type="decorator"
)
NotComputableError, _ = optional_import("ignite.exceptions", IgniteInfo.OPT_IMPORT_VERSION, min_version, "NotComputableError")

REFERENCE_THRESHOLD = 0.5
"""The reference notebooks' fixed decision threshold: sigmoid(logit) > 0.5."""

SOFTMAX_SUM_TOLERANCE = 1e-2
"""How far a multi-class probability row may sum from 1 (catches logits and sigmoid outputs)."""

CHALLENGE_CLASSES = {"isic2017": ("melanoma", "seborrheic_keratosis")}
"""Per challenge, the classes whose one-vs-rest AUCs are averaged into its score."""

MULTICLASS_SCALAR_NAMES = (
    "n_samples",
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_micro",
    "precision_macro",
    "recall_macro",
    "auc_macro",
    "reference_micro_recall_as_f1",
    "reference_micro_f1",
)
MULTILABEL_SCALAR_NAMES = (
    "n_samples",
    "subset_accuracy",
    "f1_macro",
    "f1_micro",
    "recall_macro",
    "auc_macro",
    "reference_micro_recall_as_f1",
    "reference_micro_f1",
)


def classification_scalar_names(multi_label: bool = False, challenge: str | None = None) -> tuple[str, ...]:
    """The scalar keys :func:`classification_metrics` returns for this mode (usable as ``metric``)."""
    names = MULTILABEL_SCALAR_NAMES if multi_label else MULTICLASS_SCALAR_NAMES
    if challenge is None:
        return names
    _check_challenge(challenge)
    return (*names, f"{challenge}_challenge_score")


def classification_metrics(
    probabilities: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    multi_label: bool = False,
    threshold: float = 0.5,
    challenge: str | None = None,
) -> dict[str, Any]:
    """All classification metrics of one split (conventions in the module docstring).

    Args:
        probabilities: (N, C) softmax probabilities (multi-class, rows sum to 1) or per-label sigmoid
            probabilities (multi-label).
        targets: (N,) class indices (multi-class) or (N, C) 0/1 (multi-label).
        class_names: C names, used as keys of the per-class dicts.
        multi_label: per-label sigmoid outputs and multi-hot targets instead of one class per sample.
        threshold: multi-label decision threshold, ``probability > threshold``.
        challenge: ``"isic2017"`` adds ``isic2017_challenge_score`` = mean of the melanoma and
            seborrheic_keratosis one-vs-rest AUCs (nan if either is undefined).

    Multi-class keys: ``accuracy``, ``balanced_accuracy`` (= ``recall_macro``), ``f1_macro``,
    ``f1_micro``, ``f1_per_class``, ``precision_macro``, ``precision_per_class``, ``recall_macro``,
    ``recall_per_class``, ``auc_macro``, ``auc_per_class``, ``support_per_class``,
    ``confusion_matrix`` (rows = true class, columns = predicted class), ``n_samples`` and the
    ``*_classes_undefined`` lists. Multi-label keys: ``subset_accuracy`` (all labels right),
    ``f1_*``, ``recall_*``, ``auc_*`` with ``_per_label``, ``support_per_label``, ``n_samples`` and
    the ``*_labels_undefined`` lists.

    Both modes add the reference notebooks' metric (methods.md 1.4), computed over all (sample, label)
    pairs with predicted = ``probability > 0.5`` and true = one-hot/multi-hot target:
    ``reference_micro_recall_as_f1`` = sum tp / (sum tp + sum fn), what the CASS/DEDL notebooks log
    as "F1", and ``reference_micro_f1`` = 2 sum tp / (2 sum tp + sum fp + sum fn), what the older and
    MedMNIST notebooks return. The reference thresholded sigmoid(logit); for multi-label sigmoid
    probabilities this is identical. For multi-class the evaluator only sees softmax probabilities,
    so the probability itself is thresholded: a softmax probability exceeds 0.5 for at most one
    class, so the recall is the fraction of samples whose true class gets probability > 0.5. This is
    the probability-space analogue, not a bit-exact reproduction (that needs the logits).
    """
    names = _check_class_names(class_names)
    if challenge is not None:
        _check_challenge(challenge)
    probabilities = _check_probabilities(probabilities, len(names), multi_label)
    if multi_label:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        actual = _check_multilabel_targets(targets, probabilities.shape)
        result = _multilabel_metrics(probabilities, actual, names, threshold)
        auc_by_name = result["auc_per_label"]
    else:
        indices = _check_class_indices(targets, len(probabilities), len(names))
        result = _multiclass_metrics(probabilities, indices, names)
        auc_by_name = result["auc_per_class"]
        actual = _one_hot(indices, len(names))
    result.update(_reference_micro_scores(probabilities, actual))
    if challenge is not None:
        result[f"{challenge}_challenge_score"] = _challenge_score(challenge, auc_by_name)
    return result


# ---------------------------------------------------------------------------------------------
# input validation


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    return names


def _check_challenge(challenge: str) -> None:
    if challenge not in CHALLENGE_CLASSES:
        raise ValueError(f"unknown challenge {challenge!r}; known: {sorted(CHALLENGE_CLASSES)}")


def _check_probabilities(probabilities: np.ndarray, n_classes: int, multi_label: bool) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0 or probabilities.shape[1] != n_classes:
        raise ValueError(f"probabilities must have shape (N>0, {n_classes}) to match class_names, got {probabilities.shape}")
    if not multi_label and n_classes < 2:
        raise ValueError("multi-class classification needs at least 2 classes")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities contain NaN or inf")
    if probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise ValueError(
            f"probabilities must lie in [0, 1], got [{probabilities.min():.4g}, {probabilities.max():.4g}]; "
            "apply softmax (multi-class) or sigmoid (multi-label) to logits first"
        )
    if not multi_label:
        row_sums = probabilities.sum(axis=1)
        if np.abs(row_sums - 1.0).max() > SOFTMAX_SUM_TOLERANCE:
            raise ValueError(
                f"multi-class probabilities must sum to 1 per sample (softmax), got row sums in "
                f"[{row_sums.min():.4g}, {row_sums.max():.4g}]; use multi_label=True for per-label sigmoids"
            )
    return probabilities


def _check_class_indices(targets: np.ndarray, n_samples: int, n_classes: int) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.shape != (n_samples,):
        raise ValueError(f"multi-class targets must be class indices of shape ({n_samples},), got {targets.shape}")
    if not _is_integer_valued(targets):
        raise ValueError("multi-class targets must be integer class indices (and contain no NaN)")
    if targets.min() < 0 or targets.max() >= n_classes:
        raise ValueError(f"targets must lie in [0, {n_classes}), got [{targets.min()}, {targets.max()}]")
    return targets.astype(np.int64)


def _check_multilabel_targets(targets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.shape != shape:
        raise ValueError(f"multi-label targets must have shape {shape} like probabilities, got {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("multi-label targets must be 0/1 (no NaN)")
    return targets.astype(bool)


def _is_integer_valued(array: np.ndarray) -> bool:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return True
    return np.issubdtype(array.dtype, np.floating) and bool(np.all(np.isfinite(array))) and bool(np.all(array == np.round(array)))


# ---------------------------------------------------------------------------------------------
# metric computation


def _multiclass_metrics(probabilities: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, Any]:
    n_classes = len(names)
    predictions = probabilities.argmax(axis=1)
    actual = _one_hot(targets, n_classes)
    scores = _per_class_scores(_one_hot(predictions, n_classes), actual)
    auc = np.array([_one_vs_rest_auc(actual[:, c], probabilities[:, c]) for c in range(n_classes)])
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (targets, predictions), 1)
    recall = _summaries("recall", scores["recall"], names, "class")
    result: dict[str, Any] = {
        "n_samples": len(targets),
        "accuracy": float(np.mean(predictions == targets)),
        "balanced_accuracy": recall["recall_macro"],
    }
    result.update(_summaries("f1", scores["f1"], names, "class"))
    result["f1_micro"] = scores["f1_micro"]
    result.update(_summaries("precision", scores["precision"], names, "class"))
    result.update(recall)
    result.update(_summaries("auc", auc, names, "class"))
    result["support_per_class"] = {name: int(s) for name, s in zip(names, actual.sum(axis=0))}
    result["confusion_matrix"] = confusion.tolist()
    return result


def _multilabel_metrics(probabilities: np.ndarray, actual: np.ndarray, names: list[str], threshold: float) -> dict[str, Any]:
    predicted = probabilities > threshold
    scores = _per_class_scores(predicted, actual)
    auc = np.array([_one_vs_rest_auc(actual[:, c], probabilities[:, c]) for c in range(len(names))])
    result: dict[str, Any] = {
        "n_samples": len(actual),
        "subset_accuracy": float(np.mean(np.all(predicted == actual, axis=1))),
    }
    result.update(_summaries("f1", scores["f1"], names, "label"))
    result["f1_micro"] = scores["f1_micro"]
    result.update(_summaries("recall", scores["recall"], names, "label"))
    result.update(_summaries("auc", auc, names, "label"))
    result["support_per_label"] = {name: int(s) for name, s in zip(names, actual.sum(axis=0))}
    return result


def _per_class_scores(predicted: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """Per-class precision/recall/F1 arrays and micro F1 from boolean (N, C) predicted/actual sets."""
    tp = np.sum(predicted & actual, axis=0)
    fp = np.sum(predicted & ~actual, axis=0)
    fn = np.sum(~predicted & actual, axis=0)
    absent_everywhere = tp + fp + fn == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f1 = 2 * tp / (2 * tp + fp + fn)
    precision[absent_everywhere] = np.nan
    f1[absent_everywhere] = np.nan
    f1_micro = ratio_or_nan(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())
    return {"precision": precision, "recall": recall, "f1": f1, "f1_micro": f1_micro}


def _one_vs_rest_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``is_positive``; nan unless both positives and negatives exist.

    Computed as the Mann-Whitney statistic, AUC = (R+ - n+(n+ + 1)/2) / (n+ n-) with R+ the sum of the
    positives' ranks (ties get their average rank): the same number as the trapezoidal ROC area of
    ``sklearn.metrics.roc_auc_score`` (tested), at a fraction of its cost, which matters for the
    thousands of bootstrap resamples of a study report.
    """
    positive = np.asarray(is_positive, dtype=bool)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def _reference_micro_scores(probabilities: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """The CASS/DEDL notebooks' ``MyF1Score``: counts over all (sample, label) pairs at p > 0.5."""
    predicted = probabilities > REFERENCE_THRESHOLD
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    return {
        "reference_micro_recall_as_f1": ratio_or_nan(tp, tp + fn),
        "reference_micro_f1": ratio_or_nan(2 * tp, 2 * tp + fp + fn),
    }


def _challenge_score(challenge: str, auc_by_name: dict[str, float]) -> float:
    required = CHALLENGE_CLASSES[challenge]
    missing = [name for name in required if name not in auc_by_name]
    if missing:
        raise ValueError(f"challenge {challenge!r} needs classes {list(required)}; missing {missing} in {list(auc_by_name)}")
    return float(np.mean([auc_by_name[name] for name in required]))


def _summaries(prefix: str, values: np.ndarray, names: list[str], unit: str) -> dict[str, Any]:
    """``{prefix}_macro``, ``{prefix}_per_{unit}`` and ``{prefix}_{unit}s_undefined`` (e.g. classes)."""
    macro, undefined = _defined_mean(values, names)
    plural = "classes" if unit == "class" else f"{unit}s"
    return {
        f"{prefix}_macro": macro,
        f"{prefix}_per_{unit}": _by_name(values, names),
        f"{prefix}_{plural}_undefined": undefined,
    }


def _defined_mean(values: np.ndarray, names: list[str]) -> tuple[float, list[str]]:
    """Mean over the non-nan values (nan if none) and the names of the nan ones."""
    defined = ~np.isnan(values)
    undefined = [name for name, ok in zip(names, defined) if not ok]
    return (float(np.mean(values[defined])) if defined.any() else math.nan), undefined


def _by_name(values: np.ndarray, names: list[str]) -> dict[str, float]:
    return {name: float(value) for name, value in zip(names, values)}


def _one_hot(indices: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=bool)[indices]


def ratio_or_nan(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` as a Python float; nan (undefined) when the denominator is 0."""
    return float(numerator / denominator) if denominator else math.nan


# ---------------------------------------------------------------------------------------------
# ignite / MONAI integration


def to_numpy(value: Any) -> np.ndarray:
    """A tensor (also a MONAI ``MetaTensor``), array or number as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def batch_items(batch: Any) -> list[np.ndarray]:
    """The items of a batch: a decollated list of channel-first items or a batch-first array."""
    if isinstance(batch, (list, tuple)):
        return [to_numpy(item) for item in batch]
    return list(to_numpy(batch))


class EvaluatorMetric(Metric):
    """An ignite ``Metric`` whose ``compute`` returns one scalar of a full metrics dict.

    Subclasses implement ``reset``, ``update`` and ``_compute_all`` (the full dict, after setting
    ``last_samples``: the gathered per-sample records it was computed from, which
    :mod:`s4mi_monai.metrics.samples` turns back into the same metrics on any subset of samples, for
    bootstrap intervals and paired tests). At every completion the full dict is stored as
    ``last_result`` and ``engine.state.s4mi_metrics[name]``, the records as ``engine.state.s4mi_samples[name]``,
    written to ``save_path`` as JSON (rank 0 only, NaN -> null) if given, and its scalar entries are
    copied into ``engine.state.metrics`` as ``f"{scalars_prefix}{key}"`` if ``scalars_prefix`` is given.
    """

    def __init__(
        self,
        metric: str,
        scalar_names: Sequence[str],
        save_path: str | Path | None,
        scalars_prefix: str | None,
        output_transform: Callable,
        device: str | torch.device,
    ) -> None:
        if metric not in scalar_names:
            raise ValueError(f"metric {metric!r} is not a scalar this evaluator reports; choose one of {list(scalar_names)}")
        self.metric = metric
        self.save_path = None if save_path is None else Path(save_path)
        self.scalars_prefix = scalars_prefix
        self.last_result: dict[str, Any] | None = None
        self.last_samples: dict[str, Any] | None = None
        super().__init__(output_transform=output_transform, device=device)

    @abstractmethod
    def _compute_all(self) -> dict[str, Any]:
        """The full metrics dict of everything accumulated since the last ``reset``."""

    def compute(self) -> float:
        self.last_result = self._compute_all()
        return self.last_result[self.metric]

    def completed(self, engine: Any, name: str) -> None:
        super().completed(engine, name)
        if not hasattr(engine.state, "s4mi_metrics"):
            engine.state.s4mi_metrics = {}
        engine.state.s4mi_metrics[name] = self.last_result
        if not hasattr(engine.state, "s4mi_samples"):
            engine.state.s4mi_samples = {}
        engine.state.s4mi_samples[name] = self.last_samples
        if self.scalars_prefix is not None:
            for key, value in self.last_result.items():
                if isinstance(value, (int, float)):
                    engine.state.metrics[f"{self.scalars_prefix}{key}"] = value
        if self.save_path is not None and is_main_process():
            write_json(self.save_path, self.last_result)


class ClassificationMetric(EvaluatorMetric):
    """:func:`classification_metrics` accumulated over an epoch of a MONAI/ignite engine.

    ``update`` takes ``(pred, label)`` as produced by
    ``output_transform=monai.handlers.from_engine(["pred", "label"])``: either decollated lists of
    per-sample items or batch-first tensors. ``pred`` must already be probabilities (postprocess with
    ``Activationsd(softmax=True)`` or ``sigmoid=True``). Multi-class labels may be class indices
    (shape (), (1,)) or one-hot vectors (C,); multi-label labels are multi-hot (C,).
    It scores what its evaluator sees: under torchrun rank 0 evaluates the whole split (:mod:`s4mi_monai.distributed`).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        metric: str = "f1_macro",
        multi_label: bool = False,
        threshold: float = 0.5,
        challenge: str | None = None,
        save_path: str | Path | None = None,
        scalars_prefix: str | None = None,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        self.class_names = _check_class_names(class_names)
        self.multi_label = multi_label
        self.threshold = threshold
        self.challenge = challenge
        self._probabilities: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        super().__init__(metric, classification_scalar_names(multi_label, challenge), save_path, scalars_prefix, output_transform, device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._probabilities = []
        self._targets = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        predictions, labels = output
        probabilities = np.stack([item.reshape(-1) for item in batch_items(predictions)]).astype(np.float64)
        self._probabilities.append(probabilities)
        self._targets.append(self._targets_of(batch_items(labels)))

    def _targets_of(self, labels: list[np.ndarray]) -> np.ndarray:
        """Multi-hot rows (multi-label) or class indices (multi-class, one-hot labels -> argmax).

        Kept as float64 so every rank gathers one dtype; :func:`classification_metrics` validates them.
        """
        rows = [label.reshape(-1) for label in labels]
        if self.multi_label:
            return np.stack(rows).astype(np.float64)
        n_classes = len(self.class_names)
        indices = []
        for row in rows:
            if row.size == 1:
                indices.append(row[0])
            elif row.size == n_classes and np.isin(row, (0, 1)).all() and row.sum() == 1:
                indices.append(row.argmax())
            else:
                raise ValueError(f"a multi-class label must be a class index or a one-hot vector of length {n_classes}, got {row}")
        return np.asarray(indices, dtype=np.float64)

    def _compute_all(self) -> dict[str, Any]:
        if not self._probabilities:
            raise NotComputableError("ClassificationMetric needs at least one update before compute")
        options = {"class_names": self.class_names, "multi_label": self.multi_label, "threshold": self.threshold, "challenge": self.challenge}
        probabilities = np.concatenate(self._probabilities)
        targets = np.concatenate(self._targets)
        self.last_samples = {"task": "classification", "options": options, "probabilities": probabilities, "targets": targets}
        return classification_metrics(probabilities, targets, **options)
