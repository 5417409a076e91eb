"""Label-free floors for unsupervised segmentation, scored like a bundle run so that ``s4mi report`` compares them.

An unsupervised method (PiCIE) is worth something only if it beats what needs no learning at all. Two floors:

- ``otsu``: Otsu's threshold of each image's gray levels, two clusters (1: the darker side);
- ``kmeans_colour``: k-means with K = 2 on each image's raw RGB pixel colours (1: the darker cluster), seeded.

Their cluster maps go through PiCIE's own evaluation: one Hungarian matching of clusters to classes over the
whole split (so neither floor is handicapped by a fixed "the lesion is dark" rule), the reference's pixel
accuracy and IoU per class, and the shared segmentation evaluator on the matched masks. Images and masks are
resized to ``image_size`` exactly as a bundle's evaluation prepares them. Each floor writes ``metrics.json`` and
``test_samples.json`` in ``<out>/<floor>/s<seed>/``, the files of a bundle run (``label_fraction`` 0: no mask is
used but for the matching, as PiCIE), one folder per seed so that ``s4mi report`` pairs them with a method's seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4mi_monai.io import write_json
from s4mi_monai.metrics.clustering import (
    cluster_mapping,
    clustering_scores,
    confusion_histogram,
    kmeans_colour_segmentation,
    otsu_segmentation,
)
from s4mi_monai.metrics.samples import SAMPLES_FILE, write_samples
from s4mi_monai.metrics.segmentation import metrics_from_counts, per_image_counts

FLOORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "otsu": lambda image, seed: otsu_segmentation(image, lesion="darker"),
    "kmeans_colour": lambda image, seed: kmeans_colour_segmentation(image, n_clusters=2, seed=seed),
}
"""Each floor's two-cluster map of a (3, H, W) image in [0, 1] (1: the darker pixels), for a seed."""


def _split_arrays(datalist: str, split: str, image_size: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The split's images ((3, S, S) in [0, 1]) and masks ((S, S), 0/1) as a bundle's evaluation prepares them."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRanged

    from s4mi_monai.bundle import segmentation_items
    from s4mi_monai.data import load_datalist
    from s4mi_monai.transforms import BinarizeMaskd, mask_reader, rgb_reader

    items = segmentation_items(load_datalist(datalist), split)
    prepare = Compose(
        [
            LoadImaged("image", reader=rgb_reader(), image_only=True),
            EnsureChannelFirstd("image", channel_dim=-1),
            LoadImaged("label", reader=mask_reader(), image_only=True),
            EnsureChannelFirstd("label", channel_dim="no_channel"),
            Resized(["image", "label"], spatial_size=[image_size, image_size], mode=["area", "nearest"]),
            ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
            BinarizeMaskd("label"),
        ]
    )
    prepared = [prepare(dict(item)) for item in items]
    images = [np.asarray(torch.as_tensor(d["image"])) for d in prepared]
    masks = [np.asarray(torch.as_tensor(d["label"]))[0].astype(np.int64) for d in prepared]
    return [str(item["image"]) for item in items], images, masks


def score_cluster_maps(
    names: list[str], cluster_maps: list[np.ndarray], masks: list[np.ndarray], out: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """Hungarian matching over the split, the reference's scores and the shared evaluator's; written as a bundle run."""
    histogram = confusion_histogram(cluster_maps, masks, n_clusters=2)
    mapping = cluster_mapping(histogram)
    table = np.array([max(mapping[k], 0) for k in range(2)])
    counts = per_image_counts([table[clusters] for clusters in cluster_maps], masks)
    scores = clustering_scores(histogram, mapping)
    test = {
        **metrics_from_counts(counts),
        "pixel_accuracy": scores["pixel_accuracy"],
        "iou_all_classes": scores["iou_all_classes"],
        "miou_all_classes": scores["miou_all_classes"],
        "cluster_to_class": {str(k): mapping[k] for k in range(2)},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {"test": test, "validation": None, "settings": settings})
    write_samples(out / SAMPLES_FILE, {"task": "segmentation", "options": {"empty_policy": "report"}, "counts": counts}, names)
    return test


def label_free_floors(
    datalist: str, out: str, split: str = "test", image_size: int = 224, seeds: tuple[int, ...] = (0,)
) -> dict[str, dict[int, dict[str, Any]]]:
    """Score every floor of :data:`FLOORS` on ``split`` of ``datalist`` for each seed; returns {floor: {seed: test metrics}}."""
    names, images, masks = _split_arrays(datalist, split, image_size)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for floor, segment in FLOORS.items():
        for seed in seeds:
            settings = {
                "bundle": f"floor_{floor}",
                "datalist": str(Path(datalist).resolve()),
                "split": split,
                "image_size": image_size,
                "label_fraction": 0.0,
                "seed": seed,
            }
            cluster_maps = [segment(image, seed) for image in images]
            results.setdefault(floor, {})[seed] = score_cluster_maps(names, cluster_maps, masks, Path(out) / floor / f"s{seed}", settings)
    return results
