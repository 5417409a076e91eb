"""The study's evaluators: one for classification, one for segmentation, shared by every method.

Functions compute a full metrics dict of a split; the ignite metrics (:class:`ClassificationMetric`,
:class:`SegmentationMetric`) compute the same dict inside a MONAI ``SupervisedEvaluator`` and serve
one of its scalars as ``key_metric``. :mod:`s4mi_monai.metrics.statistics` puts intervals (over seeds or
test images) and paired method-vs-baseline tests around those numbers.
"""

from s4mi_monai.metrics.classification import (
    ClassificationMetric,
    EvaluatorMetric,
    classification_metrics,
    classification_scalar_names,
)
from s4mi_monai.metrics.clustering import (
    apply_cluster_mapping,
    cluster_mapping,
    clustering_scores,
    confusion_histogram,
    kmeans_colour_segmentation,
    otsu_segmentation,
    otsu_threshold,
)
from s4mi_monai.metrics.segmentation import (
    SEGMENTATION_SCALAR_NAMES,
    UNMATCHED,
    SegmentationMetric,
    hungarian_match,
    matched_segmentation_metrics,
    metrics_from_counts,
    per_image_counts,
    segmentation_metrics,
)
from s4mi_monai.metrics.statistics import (
    Interval,
    PairedComparison,
    bootstrap_ci,
    bootstrap_interval,
    bootstrap_replicates,
    paired_bootstrap,
    paired_t_test,
    t_interval,
)

__all__ = [
    "SEGMENTATION_SCALAR_NAMES",
    "UNMATCHED",
    "ClassificationMetric",
    "EvaluatorMetric",
    "Interval",
    "PairedComparison",
    "SegmentationMetric",
    "apply_cluster_mapping",
    "bootstrap_ci",
    "bootstrap_interval",
    "bootstrap_replicates",
    "classification_metrics",
    "classification_scalar_names",
    "cluster_mapping",
    "clustering_scores",
    "confusion_histogram",
    "hungarian_match",
    "kmeans_colour_segmentation",
    "matched_segmentation_metrics",
    "metrics_from_counts",
    "per_image_counts",
    "otsu_segmentation",
    "otsu_threshold",
    "paired_bootstrap",
    "paired_t_test",
    "segmentation_metrics",
    "t_interval",
]
