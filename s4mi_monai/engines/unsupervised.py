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

from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.losses.picie import PiCIELoss
from s4mi_monai.transforms.picie import PiCIEViews

__all__ = ["PiCIETrainer"]

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
