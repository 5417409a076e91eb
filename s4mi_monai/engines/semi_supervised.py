"""Semi-supervised segmentation trainer: cross teaching between a CNN and a transformer (Luo et al., MIDL 2022).

A MONAI ``SupervisedTrainer`` subclass with its own ``_iteration``, so schedules, validation, checkpoints
and TensorBoard attach as ordinary handlers. Batches come from :class:`s4mi_monai.data.TwoStreamBatchSampler`
with :func:`s4mi_monai.data.two_stream_collate`: ``"image"`` holds the labeled images first, then the
unlabeled ones, and ``"label"`` the masks of the labeled ones.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import
from torch import nn

from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.losses.segmentation import CrossTeachingLoss

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["CrossTeachingTrainer"]

TERMS = {
    "supervised_a": "supervised_cnn",
    "supervised_b": "supervised_transformer",
    "cross_teaching_a": "cross_teaching_cnn",
    "cross_teaching_b": "cross_teaching_transformer",
}


class CrossTeachingTrainer(CustomIterationTrainer):
    """Train ``network`` (the CNN) and ``transformer`` together; each learns from the labels and from the other.

    One iteration: both networks see the whole batch; :class:`s4mi_monai.losses.CrossTeachingLoss` gives
    ``½ (CE + Dice)`` on the labeled images for each network plus λ(t) times the Dice between its softmax on
    the unlabeled images and the other network's detached argmax; one backward, both optimizers step.
    λ(t) is ``engine.state.consistency_weight``, set every iteration by a
    :class:`s4mi_monai.handlers.ScheduleHandler` (``attribute="consistency_weight"``).

    The other arguments are those of :class:`s4mi_monai.engines.base.CustomIterationTrainer` (``amp``: bf16
    autocast on CUDA; ``channels_last``: the CNN's input in NHWC); ``loss_function`` defaults to
    :class:`s4mi_monai.losses.CrossTeachingLoss`. Each epoch the means of the four loss terms and of λ are written to
    ``engine.state.metrics`` (so :class:`s4mi_monai.handlers.EpochHistory` records them), and a batch
    sampler with ``set_epoch`` is told the epoch, which makes its draws resume-exact.
    """

    def __init__(
        self,
        *args: Any,
        transformer: nn.Module,
        transformer_optimizer: torch.optim.Optimizer,
        consistency_weight: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("loss_function") is None:
            kwargs["loss_function"] = CrossTeachingLoss()
        super().__init__(*args, **kwargs)
        self.transformer = transformer
        self.transformer_optimizer = transformer_optimizer
        self.state.consistency_weight = consistency_weight
        self._sums: dict[str, float] = {}
        self._count = 0
        self.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
        self.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._publish_means)

    def _start_epoch(self, engine: CrossTeachingTrainer) -> None:
        self._sums, self._count = {}, 0
        batch_sampler = getattr(engine.data_loader, "batch_sampler", None)
        if hasattr(batch_sampler, "set_epoch"):
            batch_sampler.set_epoch(engine.state.epoch)

    def _accumulate(self, engine: CrossTeachingTrainer) -> None:
        for name in (*TERMS.values(), "consistency_weight"):
            self._sums[name] = self._sums.get(name, 0.0) + float(engine.state.output[name])
        self._count += 1

    def _publish_means(self, engine: CrossTeachingTrainer) -> None:
        if self._count:
            engine.state.metrics.update({name: total / self._count for name, total in self._sums.items()})

    def _iteration(self, engine: CrossTeachingTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        images = batchdata[CommonKeys.IMAGE].to(engine.state.device, non_blocking=True)
        labels = batchdata[CommonKeys.LABEL].to(engine.state.device, non_blocking=True)
        cnn_input = images.contiguous(memory_format=torch.channels_last) if engine.channels_last else images
        engine.network.train()
        engine.transformer.train()
        engine.optimizer.zero_grad(set_to_none=True)
        engine.transformer_optimizer.zero_grad(set_to_none=True)
        weight = float(engine.state.consistency_weight)
        with engine.autocast():
            logits_cnn = engine.network(cnn_input)
            logits_transformer = engine.transformer(images)
        terms = engine.loss_function(logits_cnn.float(), logits_transformer.float(), labels, weight)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        terms["loss"].backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.transformer_optimizer.step()
        engine.state.output = {
            CommonKeys.LOSS: terms["loss"].detach(),
            **{name: terms[key].detach() for key, name in TERMS.items()},
            "consistency_weight": weight,
            "n_labeled": int(labels.shape[0]),
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
