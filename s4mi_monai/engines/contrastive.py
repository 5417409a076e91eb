"""Pretraining trainers of semi-supervised contrastive segmentation (Hu et al., MICCAI 2021; xhu248/semi_cotrast_seg).

Stage 1, :class:`GlobalContrastiveTrainer`: SimCLR on the images (global NT-Xent of the centre features).
Stage 2, :class:`LocalContrastiveTrainer`: pixel-wise supervised contrast on the labelled images.
Stage 3 is plain fine-tuning: MONAI's ``SupervisedTrainer`` on the network's ``forward`` (segmentation logits)
with ``monai.losses.DiceCELoss``; nothing here.

Batches are dicts with the two views under ``view_keys`` (B, C, H, W) (made in the data loader by
:func:`s4mi_monai.transforms.global_contrastive_transforms` / :func:`~s4mi_monai.transforms.local_contrastive_transforms`)
and, for stage 2, the masks under ``label`` (B, 1, H, W). Both views go through the network as one batch.
The network is a :func:`s4mi_monai.networks.build_contrastive_network` backbone; the projection head is a
separate module (``projection_head``) whose parameters must be in the optimizer: the trainers refuse an
optimizer without them, the released code's bug (its stage-1 head stayed a fixed random projection).

Under torchrun the pretraining stages call the network's ``encode_global`` / ``pixel_features`` rather than its
``forward``, which ``DistributedDataParallel`` would not see, so the trainers average the gradients of everything
they optimise over the ranks themselves after each backward pass, and stage 1 contrasts every view against the
views of all ranks (the embeddings are gathered with their gradients): one NT-Xent over the global batch, as one
process with the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys
from torch import nn

from s4mi_monai import distributed
from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.losses.contrastive import NTXentLoss, SupervisedPixelContrastiveLoss
from s4mi_monai.transforms.contrastive import VIEW_KEYS

__all__ = ["GlobalContrastiveTrainer", "LocalContrastiveTrainer"]


def _tensor(value: torch.Tensor) -> torch.Tensor:
    return value.as_tensor() if hasattr(value, "as_tensor") else value


class ContrastiveTrainer(CustomIterationTrainer):
    """Shared mechanics: the projection head (trained with the network), the two views on the device, one forward."""

    def __init__(self, *args: Any, projection_head: nn.Module, view_keys: Sequence[str] = VIEW_KEYS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        optimized = {id(parameter) for group in self.optimizer.param_groups for parameter in group["params"]}
        if any(id(parameter) not in optimized for parameter in projection_head.parameters() if parameter.requires_grad):
            raise ValueError("the optimizer must hold the projection head's parameters too, or the head is never trained")
        self.projection_head = projection_head.to(self.state.device)
        self.view_keys = tuple(view_keys)
        self.gradient_average = distributed.GradientAverage(nn.ModuleList([self.network, self.projection_head]))

    def view_batch(self, batchdata: dict[str, torch.Tensor]) -> torch.Tensor:
        """Both views of the batch stacked (2B, C, H, W), view 1 first, on the device."""
        views = torch.cat([_tensor(batchdata[key]) for key in self.view_keys]).to(self.state.device, non_blocking=True).float()
        return views.contiguous(memory_format=torch.channels_last) if self.channels_last else views

    def start_step(self) -> None:
        """Training mode for network and head, gradients cleared."""
        self.network.train()
        self.projection_head.train()
        self.optimizer.zero_grad(set_to_none=True)

    def optimize(self, loss: torch.Tensor) -> None:
        """Backward, the gradients averaged over ranks (torchrun), optimizer step, firing MONAI's iteration events."""
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        self.gradient_average()
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        self.optimizer.step()


class GlobalContrastiveTrainer(ContrastiveTrainer):
    """Stage 1: ``z = projection_head(network.encode_global(view))`` for both views, NT-Xent, backward, step.

    ``projection_head`` is a :class:`s4mi_monai.networks.GlobalProjectionHead`; ``loss_function`` defaults to
    ``NTXentLoss(0.5)``. The output is ``{"loss": ...}``. The other arguments, ``amp`` (bf16 autocast on CUDA) and
    ``channels_last`` included, are those of :class:`s4mi_monai.engines.base.CustomIterationTrainer`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("loss_function") is None:
            kwargs["loss_function"] = NTXentLoss()
        super().__init__(*args, **kwargs)

    def _iteration(self, engine: GlobalContrastiveTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        views = engine.view_batch(batchdata)
        engine.start_step()
        with engine.autocast():
            z1, z2 = engine.projection_head(engine.network.encode_global(views)).chunk(2)
        loss = engine.loss_function(distributed.gather_with_gradients(z1), distributed.gather_with_gradients(z2))
        engine.optimize(loss)
        engine.state.output = {CommonKeys.LOSS: loss.detach()}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class LocalContrastiveTrainer(ContrastiveTrainer):
    """Stage 2: per-pixel ``f = projection_head(network.pixel_features(view))`` for both views, the pixel loss with the
    batch's labels, backward, step.

    ``projection_head`` is a :class:`s4mi_monai.networks.LocalProjectionHead`; ``loss_function`` defaults to
    ``SupervisedPixelContrastiveLoss()`` (stride 4, τ = 0.1, foreground anchors); its ``supervised=False`` gives
    the unsupervised pixel-identity ablation (labels are then not read). A batch the loss skips (no foreground
    after sampling: it returns ``None``) does no backward and no optimizer step, so Adam's momentum and weight
    decay do not move the weights on a batch without signal; its output is a zero loss with ``skipped`` 1 (0
    otherwise), so the mean of ``skipped`` over an epoch is the fraction of skipped batches.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("loss_function") is None:
            kwargs["loss_function"] = SupervisedPixelContrastiveLoss()
        super().__init__(*args, **kwargs)

    def _iteration(self, engine: LocalContrastiveTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        views = engine.view_batch(batchdata)
        labels = batchdata.get(CommonKeys.LABEL)
        labels = None if labels is None else _tensor(labels).to(engine.state.device, non_blocking=True)
        engine.start_step()
        with engine.autocast():
            features1, features2 = engine.projection_head(engine.network.pixel_features(views)).chunk(2)
        loss = engine.loss_function(features1, features2, labels)
        skipped = loss is None
        if skipped:
            loss = torch.zeros((), device=engine.state.device)
        if not distributed.all_ranks(skipped):  # a rank without signal still joins the others' step, with zero gradients
            engine.optimize(features1.sum() * 0 if skipped else loss)
        engine.state.output = {CommonKeys.LOSS: loss.detach(), "skipped": torch.tensor(float(skipped))}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
