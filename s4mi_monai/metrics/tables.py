"""Markdown tables of finished runs: one row per run, read from the ``metrics.json`` a bundle writes.

A run is named ``"LABEL=PATH"`` or ``"LABEL=PATH#BRANCH"``, where PATH is a run's output directory (or its
``metrics.json``) and BRANCH picks one network of a two-network bundle (CASS ``cnn``/``vit``, cross teaching
``cnn``/``transformer``) from the ``branches`` entry. Columns are metric names of the split, with dots for
nested values (``recall_per_class.melanoma``), plus ``best_validation`` (the selection metric and epoch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLASSIFICATION_COLUMNS", "SEGMENTATION_COLUMNS", "lookup_value", "metrics_table", "read_run_metrics"]

CLASSIFICATION_COLUMNS = ("f1_macro", "balanced_accuracy", "auc_macro", "reference_micro_recall_as_f1")
SEGMENTATION_COLUMNS = ("iou_per_image_mean", "dice_per_image_mean", "iou_pooled")
BEST_VALIDATION = "best_validation"


def read_run_metrics(spec: str) -> tuple[str, dict[str, Any]]:
    """``"LABEL=PATH[#BRANCH]"`` -> (label, the run's metrics or its branch's), with clear errors."""
    if "=" not in spec:
        raise ValueError(f"run {spec!r} must be LABEL=PATH or LABEL=PATH#BRANCH")
    label, target = spec.rsplit("=", 1)  # labels may hold "=" ("λ = 0"), paths rarely do
    path_text, _, branch = target.partition("#")
    path = Path(path_text)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"run {label!r}: {path} does not exist (has the run finished?)")
    metrics = json.loads(path.read_text())
    if branch:
        branches = metrics.get("branches", {})
        if branch not in branches:
            raise KeyError(f"run {label!r}: {path} has no branch {branch!r} (branches: {sorted(branches)})")
        metrics = branches[branch]
    return label, metrics


def lookup_value(values: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key (``recall_per_class.melanoma``) of a metrics dict, or None where there is none."""
    value: Any = values
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _best_validation(metrics: Mapping[str, Any]) -> str:
    validation = metrics.get("validation") or {}
    if validation.get("best") is None:
        return "-"
    return f"{validation['best']:.3f} (epoch {validation.get('epoch', '?')})"


def metrics_table(runs: Sequence[str], columns: Sequence[str] = CLASSIFICATION_COLUMNS, split: str = "test") -> str:
    """A markdown table of ``split`` metrics, one row per run spec (see the module docstring)."""
    if not runs:
        raise ValueError("give at least one run (LABEL=PATH)")
    header = ["run", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for spec in runs:
        label, metrics = read_run_metrics(spec)
        if split not in metrics:
            raise KeyError(f"run {label!r} has no {split!r} metrics (keys: {sorted(metrics)})")
        cells = [_best_validation(metrics) if c == BEST_VALIDATION else _format(lookup_value(metrics[split], c)) for c in columns]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)
