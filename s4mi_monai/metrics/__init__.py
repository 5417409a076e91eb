"""The study's evaluators: one for classification, one for segmentation, shared by every method.

Functions compute a full metrics dict of a split; the ignite metrics (:class:`ClassificationMetric`,
:class:`SegmentationMetric`) compute the same dict inside a MONAI ``SupervisedEvaluator`` and serve
one of its scalars as ``key_metric``.
"""

from s4mi_monai.metrics.classification import (
    ClassificationMetric,
    EvaluatorMetric,
    bootstrap_ci,
    classification_metrics,
    classification_scalar_names,
)
from s4mi_monai.metrics.segmentation import (
    SEGMENTATION_SCALAR_NAMES,
    UNMATCHED,
    SegmentationMetric,
    hungarian_match,
    matched_segmentation_metrics,
    metrics_from_counts,
    segmentation_metrics,
)

__all__ = [
    "SEGMENTATION_SCALAR_NAMES",
    "UNMATCHED",
    "ClassificationMetric",
    "EvaluatorMetric",
    "SegmentationMetric",
    "bootstrap_ci",
    "classification_metrics",
    "classification_scalar_names",
    "hungarian_match",
    "matched_segmentation_metrics",
    "metrics_from_counts",
    "segmentation_metrics",
]
