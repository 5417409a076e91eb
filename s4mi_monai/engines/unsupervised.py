"""Label-free segmentation trainer: PiCIE (Cho et al., CVPR 2021), clustering pixel embeddings and learning from the clusters.

An epoch is two passes over the training images, as the reference ``train_picie.py``:

1. at ``EPOCH_STARTED``, :class:`s4mi_monai.handlers.PiCIEClustering` draws the epoch's view parameters and
   clusters the embeddings of every pixel of both views (mini-batch k-means, one set of centroids per view);
2. the trainer's iterations then learn from those frozen centroids with :class:`s4mi_monai.losses.PiCIELoss`.

Batches are dicts with ``"image"`` (B, 3, H, W) uint8 or [0, 1] float base images of one size and
``"index"`` (B,), each image's position in the dataset (e.g. ``{**item, "index": i}`` for the ``i``-th datalist
entry), which keys its per-epoch view parameters. Masks are never read.

Unlike the reference, which labels every pixel once per epoch with the network frozen at the epoch's start
and stores the labels on disk, the pseudo-labels of a batch are the nearest centroids of the batch's own
(detached) embeddings in the training forward pass; the centroids and the cluster frequencies are those of
the epoch's clustering.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from s4mi_monai.clustering import MiniBatchKMeans
from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.losses.picie import PiCIELoss
from s4mi_monai.metrics.clustering import cluster_mapping, clustering_scores, confusion_histogram
from s4mi_monai.networks.picie import PiCIESegmenter
from s4mi_monai.transforms.picie import PiCIEViews

__all__ = ["PiCIETrainer", "benchmark_clustering", "fit_final_centroids", "match_clusters"]

INDEX_KEY = "index"


class PiCIETrainer(CustomIterationTrainer):
    """Train a :class:`s4mi_monai.networks.PiCIENet` (``network``) against the epoch's k-means centroids.

    One iteration: both views of the batch (:meth:`embed_views`), ``PiCIELoss(z1, z2, μ¹, μ², f¹, f²)`` with the
    centroids ``engine.state.centroids`` and frequencies ``engine.state.cluster_frequencies`` (pairs, view 1
    then view 2, set each epoch by :class:`s4mi_monai.handlers.PiCIEClustering`), backward, optimizer step.
    The output holds ``loss``, ``within_view`` and ``cross_view``. ``views`` makes the inputs and aligns view
    2's features; ``loss_function`` defaults to ``PiCIELoss()`` (frequency weighting, as the reference). The
    other arguments, ``amp`` (bf16 autocast on CUDA) and ``channels_last`` included, are those of
    :class:`s4mi_monai.engines.base.CustomIterationTrainer`.
    """

    def __init__(self, *args: Any, views: PiCIEViews, **kwargs: Any) -> None:
        if kwargs.get("loss_function") is None:
            kwargs["loss_function"] = PiCIELoss()
        super().__init__(*args, **kwargs)
        self.views = views
        self.state.centroids = None
        self.state.cluster_frequencies = None

    def embed_views(self, batchdata: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned embeddings ``z1 = f(G(P1 x))`` and ``z2 = G(f(P2 x))`` (B, D, h, w) of a batch, under the trainer's
        autocast; the network's mode and gradient tracking are the caller's."""
        images = batchdata[CommonKeys.IMAGE]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        images = images.to(self.state.device, non_blocking=True)
        input1, input2, parameters = self.views.view_inputs(images, batchdata[INDEX_KEY])
        if self.channels_last:
            input1, input2 = (view.contiguous(memory_format=torch.channels_last) for view in (input1, input2))
        with self.autocast():
            z1 = self.network(input1)
            z2 = self.views.align_features(self.network(input2), parameters, tuple(images.shape[-2:]), tuple(z1.shape[-2:]))
        return z1, z2

    def _iteration(self, engine: PiCIETrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        if engine.state.centroids is None:
            raise RuntimeError("PiCIETrainer has no centroids: attach a PiCIEClustering handler, which clusters at every EPOCH_STARTED")
        centroids1, centroids2 = engine.state.centroids
        frequencies1, frequencies2 = engine.state.cluster_frequencies
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        z1, z2 = engine.embed_views(batchdata)
        terms = engine.loss_function(z1.float(), z2.float(), centroids1, centroids2, frequencies1, frequencies2)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        terms["loss"].backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.state.output = {name: value.detach() for name, value in terms.items()}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _images(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    images = batch[CommonKeys.IMAGE]
    images = images.as_tensor() if hasattr(images, "as_tensor") else images
    return images.to(device).float()


@torch.no_grad()
def fit_final_centroids(
    segmenter: PiCIESegmenter,
    loader: Iterable[dict[str, Any]],
    init_batches: int = 20,
    n_iter: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """PiCIE's final clustering, from scratch and without labels: k-means of every pixel embedding of ``loader``.

    The images are un-augmented and prepared as at evaluation ([0, 1], gray if the segmenter takes gray); the
    centroids (K, D) are computed on the segmenter's device and installed in it (cluster ``k`` keeps class ``k``
    until :func:`match_clusters`)."""
    device = segmenter.centroids.device
    n_clusters = segmenter.centroids.shape[0]
    kmeans = MiniBatchKMeans(n_clusters, init_batches, n_iter, generator=torch.Generator().manual_seed(seed))
    segmenter.eval()
    for batch in loader:
        embeddings = segmenter.embed(_images(batch, device)).float()
        kmeans.partial_fit(embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1]))
    kmeans.finish()
    segmenter.set_clusters(kmeans.centroids.to(device), list(range(n_clusters)))
    return kmeans.centroids


@torch.no_grad()
def match_clusters(
    segmenter: PiCIESegmenter, loader: Iterable[dict[str, Any]], method: str = "hungarian", mapping: dict[int, int] | None = None
) -> tuple[dict[int, int], dict[str, Any]]:
    """Match the segmenter's clusters to the classes of ``loader``'s masks over the whole split, then install the match.

    Each pixel's cluster is the argmax of the upsampled centroid scores; the (classes x clusters) histogram of the
    split gives the matching (``"hungarian"``: one-to-one, the reference; ``"majority"``: each cluster to its
    majority class, for K > 2) and the reference's scores: pixel accuracy, IoU per class and their mean (background
    included). A given ``mapping`` (the one saved with a model) is scored instead of a new one. Returns
    ``({cluster: class}, scores)``; the scores hold the histogram as lists."""
    device = segmenter.centroids.device
    n_clusters = segmenter.centroids.shape[0]
    segmenter.eval()
    histogram = np.zeros((segmenter.n_classes, n_clusters), dtype=np.int64)
    for batch in loader:
        clusters = segmenter.cluster_scores(_images(batch, device)).argmax(dim=1)
        labels = batch[CommonKeys.LABEL]
        labels = labels.as_tensor() if hasattr(labels, "as_tensor") else labels
        histogram += confusion_histogram(list(clusters.cpu()), list(labels[:, 0].long().cpu()), n_clusters, segmenter.n_classes)
    mapping = cluster_mapping(histogram, method) if mapping is None else {int(k): int(v) for k, v in mapping.items()}
    scores = clustering_scores(histogram, mapping)
    segmenter.set_clusters(segmenter.centroids, [mapping[k] for k in range(n_clusters)])
    return mapping, {
        "matching": method,
        "cluster_to_class": {str(k): mapping[k] for k in range(n_clusters)},
        "pixel_accuracy": scores["pixel_accuracy"],
        "iou_all_classes": scores["iou_all_classes"],
        "miou_all_classes": scores["miou_all_classes"],
        "cluster_histogram": histogram.tolist(),
    }


def benchmark_clustering(trainer: PiCIETrainer, clustering: Any) -> dict[str, Any]:
    """Time one clustering pass of ``clustering`` (a :class:`s4mi_monai.handlers.PiCIEClustering`) over the trainer's
    data; print and return pixels per second. The centroids stay in ``trainer.state``, so
    :func:`s4mi_monai.engines.benchmark` can time the training steps next."""
    device = torch.device(trainer.state.device)
    trainer.state.epoch = 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    clustering(trainer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    pixels = trainer.state.metrics["clustered_pixels"]
    result = {
        "stage": "clustering",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "pixels": pixels,
        "seconds": seconds,
        "pixels_per_second": pixels / seconds,
        "images_per_second": len(trainer.data_loader.dataset) / seconds,  # each embedded in both views
    }
    print(json.dumps(result), flush=True)
    return result
