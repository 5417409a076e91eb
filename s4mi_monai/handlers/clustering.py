"""PiCIE's clustering pass: at the start of every epoch, k-means of every pixel embedding of both views."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from s4mi_monai.clustering import MiniBatchKMeans

logger = logging.getLogger("s4mi_monai")

DEGENERATE_SHARE = 0.02
"""A cluster holding less than this share of the pixels makes the clustering degenerate (warned about)."""

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from s4mi_monai.engines.unsupervised import PiCIETrainer

__all__ = ["PiCIEClustering"]


def _pixels(features: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) maps as (B·H·W, D) rows."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


class PiCIEClustering:
    """At each ``EPOCH_STARTED`` of a :class:`s4mi_monai.engines.PiCIETrainer`: new view parameters, then centroids.

    The trainer's views move to the epoch's draws (``views.reshuffle(epoch)``); the network, in eval mode and
    without gradients (bf16 autocast when the trainer uses amp on CUDA), embeds both views of every image of
    ``data_loader`` (default: the trainer's own loader; the reference uses a separate, larger-batch loader,
    and a loader with ``persistent_workers`` must be a separate one); one
    :class:`s4mi_monai.clustering.MiniBatchKMeans` per view clusters the pixels on the trainer's device:
    ``n_iter`` Lloyd iterations (``init``: k-means++ or faiss-style random points) on the first
    ``init_batches`` batches, then online updates. Results go to ``engine.state``:

    - ``centroids``: (μ¹, μ²), each (K, D) float32;
    - ``cluster_frequencies``: (f¹, f²), each (K,), the fraction of the epoch's pixels each centroid absorbed
      during the pass (the reference recounts them in a further pass with the final centroids; the two differ
      only by the pixels assigned while the centroids still moved);
    - ``metrics["kmeans_distance_view1"]``/``["kmeans_distance_view2"]``: mean squared distance of a pixel to its
      centroid (the reference's k-means loss); ``metrics["clustered_pixels"]``: the pixels clustered, both views;
    ``metrics["smallest_cluster_share"]``: the smallest cluster's share of a view's pixels, with a warning below
    :data:`DEGENERATE_SHARE` (the clustering has collapsed towards one cluster).

    The k-means draws are seeded by (``seed``, epoch), so a resumed run clusters as the uninterrupted one.
    Under torchrun every rank embeds its share of the loader and the k-means adds up all ranks' statistics, so
    every rank gets the same centroids (:class:`s4mi_monai.clustering.MiniBatchKMeans` ``across_ranks``). The
    initial batches' embeddings stay on the device until the initial k-means: ``init_batches · B · h · w · D · 4``
    bytes per view (S4MI: 20 · 64 · 120² · 128 · 4 B ≈ 9.4 GB).
    """

    def __init__(
        self,
        n_clusters: int = 2,
        init_batches: int = 20,
        n_iter: int = 20,
        init: str = "k-means++",
        data_loader: Iterable[dict[str, Any]] | None = None,
        seed: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.init_batches = init_batches
        self.n_iter = n_iter
        self.init = init
        self.data_loader = data_loader
        self.seed = seed

    def attach(self, engine: PiCIETrainer) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: PiCIETrainer) -> None:
        engine.views.reshuffle(engine.state.epoch)
        views = self.cluster(engine)
        engine.state.centroids = tuple(kmeans.centroids for kmeans in views)
        engine.state.cluster_frequencies = tuple(kmeans.counts / kmeans.counts.sum() for kmeans in views)
        for number, kmeans in enumerate(views, start=1):
            engine.state.metrics[f"kmeans_distance_view{number}"] = kmeans.mean_squared_distance
        engine.state.metrics["clustered_pixels"] = int(sum(kmeans.counts.sum().item() for kmeans in views))
        smallest = min(float(frequencies.min()) for frequencies in engine.state.cluster_frequencies)
        engine.state.metrics["smallest_cluster_share"] = smallest
        if smallest < DEGENERATE_SHARE:
            logger.warning(
                "epoch %d: the smallest cluster holds %.1f %% of the pixels: the clustering is close to one cluster "
                "(try --cluster_weighting inverse_frequency, or more epochs)",
                engine.state.epoch,
                100 * smallest,
            )

    @torch.no_grad()
    def cluster(self, engine: PiCIETrainer) -> tuple[MiniBatchKMeans, MiniBatchKMeans]:
        """Mini-batch k-means of both views' pixel embeddings over the whole loader, with the current network."""
        seed = int(np.random.SeedSequence([self.seed, engine.state.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        views = tuple(MiniBatchKMeans(self.n_clusters, self.init_batches, self.n_iter, self.init, generator, across_ranks=True) for _ in range(2))
        was_training = engine.network.training
        engine.network.eval()
        try:
            for batch in self.data_loader if self.data_loader is not None else engine.data_loader:
                for kmeans, features in zip(views, engine.embed_views(batch)):
                    kmeans.partial_fit(_pixels(features))
        finally:
            engine.network.train(was_training)
        return tuple(kmeans.finish() for kmeans in views)
