"""Scoring cluster maps against ground truth (PiCIE's protocol) and two label-free floors to compare them with.

Protocol (PiCIE ``evaluate``, methods.md 2.3): the confusion histogram ``H[class, cluster]`` over a whole
split (:func:`confusion_histogram`, target labels outside [0, n_classes) ignored), a cluster -> class mapping
(:func:`cluster_mapping`), then from the class histogram the pixel accuracy (matched pixels / valid pixels),
``IoU_c = tp / (tp + fp + fn)`` for every class, background included, and ``mIoU = nanmean_c IoU_c``
(:func:`clustering_scores`). Two mappings:

- ``"hungarian"``: one-to-one, maximising the matched pixels, ``scipy.optimize.linear_sum_assignment(H,
  maximize=True)`` (the reference's ``linear_assignment(H.max() − H)`` from a removed scikit-learn API);
  clusters left over when K > n_classes map to :data:`UNMATCHED` and their pixels count as misses;
- ``"majority"``: many-to-one, each cluster to the class most of its pixels belong to (for K > n_classes,
  the usual over-clustering protocol; a class may receive no cluster).

A mapping chosen on one split is applied to another split's cluster maps by :func:`apply_cluster_mapping`.
The full foreground metrics of the shared evaluator for K = n_classes come from
:func:`s4mi_monai.metrics.matched_segmentation_metrics`.

Floors, label-free baselines that a learnt method must beat (each returns a label map, 1 = lesion):

- :func:`otsu_segmentation`: Otsu's threshold of each image's gray level (luma), lesion on the darker side
  by default, because skin lesions in dermoscopy are darker than the surrounding skin (``lesion="brighter"``
  for the opposite; or score the 0/1 map through the Hungarian matching to let the split decide);
- :func:`kmeans_colour_segmentation`: k-means (K = 2) on the raw RGB values of the pixels of *each image*
  separately, the cluster with the darker mean luma taken as lesion (same convention), so that the labels
  mean the same in every image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from s4mi_monai.clustering import lloyd_kmeans
from s4mi_monai.metrics.classification import to_numpy
from s4mi_monai.metrics.segmentation import UNMATCHED, _assign_clusters, _cluster_histograms, all_class_scores
from s4mi_monai.transforms.color import LUMA_WEIGHTS

__all__ = [
    "LESION_SIDES",
    "MAPPING_METHODS",
    "apply_cluster_mapping",
    "cluster_mapping",
    "clustering_scores",
    "confusion_histogram",
    "gray_levels",
    "kmeans_colour_segmentation",
    "otsu_segmentation",
    "otsu_threshold",
]

MAPPING_METHODS = ("hungarian", "majority")
LESION_SIDES = ("darker", "brighter")

ImageLike = np.ndarray | torch.Tensor


def confusion_histogram(
    cluster_maps: Sequence[ImageLike], targets: Sequence[ImageLike], n_clusters: int, n_classes: int = 2
) -> np.ndarray:
    """(n_classes, n_clusters) pixel counts over all images: rows = ground-truth class, columns = cluster.

    Target pixels with a label outside [0, n_classes) are ignored; clusters must lie in [0, n_clusters).
    """
    return _cluster_histograms(cluster_maps, targets, n_clusters, n_classes).sum(axis=0)


def cluster_mapping(histogram: np.ndarray, method: str = "hungarian") -> dict[int, int]:
    """{cluster: class} from a (n_classes, n_clusters) histogram (methods in the module docstring).

    ``"hungarian"`` leaves clusters beyond the number of classes at :data:`UNMATCHED` (-1).
    """
    histogram = np.asarray(histogram)
    if method == "hungarian":
        return _assign_clusters(histogram)
    if method == "majority":
        return {cluster: int(cls) for cluster, cls in enumerate(histogram.argmax(axis=0))}
    raise ValueError(f"method must be one of {MAPPING_METHODS}, got {method!r}")


def clustering_scores(histogram: np.ndarray, mapping: Mapping[int, int]) -> dict[str, Any]:
    """Pixel accuracy, IoU of every class (background included) and their nanmean, after ``mapping``.

    The numbers of :func:`s4mi_monai.metrics.segmentation.all_class_scores` (``pixel_accuracy``,
    ``iou_all_classes``, ``miou_all_classes``), the keys :func:`~s4mi_monai.metrics.matched_segmentation_metrics`
    reports too.
    """
    return all_class_scores(np.asarray(histogram), {int(k): int(v) for k, v in mapping.items()})


def apply_cluster_mapping(cluster_map: ImageLike, mapping: Mapping[int | str, int]) -> ImageLike:
    """The class map of a cluster map under a saved {cluster: class} mapping (keys may be strings, as in JSON).

    Pixels of unmatched clusters get :data:`UNMATCHED`; a cluster missing from the mapping is an error. The
    result has the input's type (numpy array or tensor, on its device).
    """
    table_size = max(int(cluster) for cluster in mapping) + 1
    table = np.full(table_size, UNMATCHED, dtype=np.int64)
    for cluster, cls in mapping.items():
        table[int(cluster)] = int(cls)
    clusters = to_numpy(cluster_map).astype(np.int64)
    uncovered = set(np.unique(clusters).tolist()) - {int(cluster) for cluster in mapping}
    if uncovered:
        raise ValueError(f"the cluster map has clusters the mapping does not cover: {sorted(uncovered)}")
    classes = table[clusters]
    if isinstance(cluster_map, torch.Tensor):
        return torch.as_tensor(classes, device=cluster_map.device)
    return classes


def gray_levels(image: ImageLike) -> np.ndarray:
    """(H, W) float gray levels in [0, 1] of an (H, W), (1, H, W) or channel-first (3, H, W) RGB image; uint8 is divided
    by 255 and RGB weighted by the ITU-R 601 luma weights."""
    array = to_numpy(image)
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    array = array.astype(np.float64) / scale
    if array.ndim == 3 and array.shape[0] == 3:
        return np.tensordot(np.array(LUMA_WEIGHTS), array, axes=1)
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 2:
        return array
    raise ValueError(f"expected an (H, W), (1, H, W) or (3, H, W) image, got shape {array.shape}")


def otsu_threshold(values: ImageLike, n_bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the bin centre ``t`` of an ``n_bins`` histogram over [min, max] that maximises
    the between-class variance ``w_0 w_1 (m_0 − m_1)²`` of the classes ``v ≤ t`` and ``v > t`` (as scikit-image)."""
    flat = to_numpy(values).astype(np.float64).ravel()
    low, high = float(flat.min()), float(flat.max())
    if low == high:
        return low
    counts, edges = np.histogram(flat, bins=n_bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(counts)
    weight_above = np.cumsum(counts[::-1])[::-1]
    mean_below = np.cumsum(counts * centres) / np.maximum(weight_below, 1)
    mean_above = (np.cumsum((counts * centres)[::-1]) / np.maximum(weight_above[::-1], 1))[::-1]
    between = weight_below[:-1] * weight_above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def otsu_segmentation(image: ImageLike, lesion: str = "darker", n_bins: int = 256) -> np.ndarray:
    """(H, W) int64 map, 1 = lesion: the gray levels at or below (``"darker"``) or above (``"brighter"``) the image's
    Otsu threshold. A constant image has no lesion."""
    if lesion not in LESION_SIDES:
        raise ValueError(f"lesion must be one of {LESION_SIDES}, got {lesion!r}")
    gray = gray_levels(image)
    if gray.min() == gray.max():
        return np.zeros(gray.shape, dtype=np.int64)
    threshold = otsu_threshold(gray, n_bins)
    darker = gray <= threshold
    return (darker if lesion == "darker" else ~darker).astype(np.int64)


def kmeans_colour_segmentation(image: ImageLike, n_clusters: int = 2, n_iter: int = 20, seed: int = 0) -> np.ndarray:
    """(H, W) int64 map from k-means of the image's own pixel colours, clusters numbered from the brightest mean luma (0)
    to the darkest (K − 1), so with K = 2 the label 1 is the darker cluster, the lesion by the dermoscopy convention.

    ``image`` is a channel-first (C, H, W) array (uint8 divided by 255); k-means++ initialisation seeded by ``seed``.
    """
    array = to_numpy(image)
    if array.ndim != 3:
        raise ValueError(f"expected a channel-first (C, H, W) image, got shape {array.shape}")
    pixels = torch.as_tensor(array.reshape(array.shape[0], -1).T.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
    result = lloyd_kmeans(pixels, n_clusters, n_iter, generator=torch.Generator().manual_seed(seed))
    centroids = result.centroids
    brightness = centroids @ torch.tensor(LUMA_WEIGHTS) if centroids.shape[1] == 3 else centroids.mean(dim=1)
    rank = torch.empty(n_clusters, dtype=torch.int64)
    rank[torch.argsort(brightness, descending=True)] = torch.arange(n_clusters)
    return rank[result.labels].reshape(array.shape[1:]).numpy()
