"""Label-free pretraining trainers: DINO (student + EMA teacher) and CASS (CNN + transformer).

Both are MONAI ``SupervisedTrainer`` subclasses with their own ``_iteration``, so every MONAI/ignite
handler (schedules, checkpoints, TensorBoard, validation) attaches as usual. The data loader yields
batches of decoded images under ``"image"`` (uint8 or [0, 1] float, all of one size); the trainer makes
the augmented views of the whole batch on the training device with
:class:`s4mi_monai.transforms.MultiCropBatch`, so on a GPU the loader only decodes and collates.

Per iteration the output holds ``loss`` plus what :class:`s4mi_monai.handlers.CollapseMonitor` reads:
``embeddings`` (detached; DINO: the teacher's backbone features of the first global crop; CASS: the CNN's
projection, which is what the loss aligns) and, for DINO, ``outputs`` (the teacher's head outputs of that
crop) and ``teacher_entropy`` (of the targets this step used: before the centre update, at a fixed temperature). ``torch.compile`` (the
trainer's ``compile``) wraps the student (DINO) or the CNN (CASS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys
from torch import nn

from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.losses import DINOLoss, cass_loss, cass_predictor_loss
from s4mi_monai.optim import clip_gradients_per_parameter
from s4mi_monai.transforms.multicrop import MultiCropBatch

__all__ = ["CASSTrainer", "DINOTrainer", "SelfSupervisedTrainer"]


class SelfSupervisedTrainer(CustomIterationTrainer):
    """Shared mechanics: views made on the device, input normalisation, bf16 autocast, channels_last.

    ``views`` makes the named views of a batch; ``normalize`` maps a (B, 3, H, W) view in [0, 1] to network
    input (ImageNet normalisation, red-channel normalisation); ``generator`` seeds the views' draws. The other
    arguments, ``amp`` and ``channels_last`` included, are those of :class:`s4mi_monai.engines.base.CustomIterationTrainer`.
    """

    def __init__(
        self,
        *args: Any,
        views: MultiCropBatch,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.views = views
        self.normalize = normalize
        self.generator = generator

    def make_views(self, batchdata: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The normalised views of the batch's images, on the device, by view name."""
        images = batchdata[CommonKeys.IMAGE]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        images = images.to(self.state.device, non_blocking=True)
        views = self.views(images, self.generator)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return {name: self.normalize(view).contiguous(memory_format=memory_format) for name, view in views.items()}


class DINOTrainer(SelfSupervisedTrainer):
    """DINO self-distillation (Caron et al. 2021): the student (``network``) learns the EMA teacher's targets.

    One iteration, as the official ``train_one_epoch``: teacher on the global crops, student on every crop
    (or, with ``student_sees_globals=False``, only on the local crops, as lucidrains' ``Dino``),
    :class:`s4mi_monai.losses.DINOLoss` at the teacher temperature ``engine.state.teacher_temp`` (set each
    iteration by a :class:`s4mi_monai.handlers.ScheduleHandler`), backward,
    ``BACKWARD_COMPLETED`` (where :class:`s4mi_monai.handlers.FreezeLastLayer` acts), per-parameter
    gradient clipping at ``clip_grad`` (0: off), optimizer step. The teacher's EMA update is the
    :class:`s4mi_monai.handlers.EMATeacher` handler at ``ITERATION_COMPLETED``. Both networks are
    :class:`s4mi_monai.networks.MultiCropWrapper`.

    The reported ``teacher_entropy`` is that of the targets this step trained on (the centre before the loss
    updates it) at the fixed ``entropy_temp`` (default: the initial ``teacher_temp``), so that a temperature
    schedule alone does not move the monitor.
    """

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module,
        teacher_temp: float = 0.04,
        clip_grad: float = 3.0,
        student_sees_globals: bool = True,
        entropy_temp: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.loss_function, DINOLoss):
            raise TypeError(f"DINOTrainer needs a DINOLoss, got {type(self.loss_function).__name__}")
        self.teacher = teacher
        self.clip_grad = clip_grad
        self.student_sees_globals = student_sees_globals
        self.state.teacher_temp = teacher_temp
        self.entropy_temp = teacher_temp if entropy_temp is None else entropy_temp

    def _iteration(self, engine: DINOTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        views = engine.make_views(batchdata)
        global_crops = [view for name, view in views.items() if name.startswith("global")]
        local_crops = [view for name, view in views.items() if name.startswith("local")]
        student_crops = global_crops + local_crops if engine.student_sees_globals else local_crops
        engine.network.train()
        engine.teacher.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with engine.autocast():
            with torch.no_grad():
                teacher_features, teacher_output = engine.teacher.forward_with_features(global_crops)
            student_output = engine.network(student_crops)
            teacher_entropy = engine.loss_function.teacher_entropy(teacher_output.float(), engine.entropy_temp)
            loss = engine.loss_function(student_output.float(), teacher_output.float(), engine.state.teacher_temp)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.clip_grad:
            clip_gradients_per_parameter(engine.network, engine.clip_grad)
        engine.optimizer.step()
        batch_size = global_crops[0].shape[0]
        engine.state.output = {
            CommonKeys.LOSS: loss.detach(),
            "embeddings": teacher_features[:batch_size].detach().float(),
            "outputs": teacher_output[:batch_size].detach().float(),
            "teacher_entropy": teacher_entropy,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class CASSTrainer(SelfSupervisedTrainer):
    """CASS (Singh et al. 2023): a CNN (``network``) and a transformer (``transformer``) agree on one view.

    One iteration: the single view of each image goes through both networks (backbone + projection),
    ``L = mean_b[2 − 2 cos(z_cnn, z_vit)]`` (:func:`s4mi_monai.losses.cass_loss`), both gradients are zeroed
    before backward (the reference notebook never zeroed them) and both optimizers step. A learning-rate
    schedule per optimizer attaches as ordinary handlers.

    ``predictors`` (the opt-in predictor stabiliser, a deviation from CASS): a ``ModuleDict`` with a ``"cnn"`` and a
    ``"transformer"`` :class:`s4mi_monai.networks.PredictionHead`; the loss is then
    :func:`s4mi_monai.losses.cass_predictor_loss`. Each predictor's parameters belong in its branch's optimizer.
    Empty or None: ``loss_function`` of the two outputs (default :func:`s4mi_monai.losses.cass_loss`, plain CASS;
    :func:`s4mi_monai.losses.cass_variance_loss` for the variance stabiliser).
    """

    def __init__(
        self,
        *args: Any,
        transformer: nn.Module,
        transformer_optimizer: torch.optim.Optimizer,
        predictors: nn.ModuleDict | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("loss_function", cass_loss)
        super().__init__(*args, **kwargs)
        self.transformer = transformer
        self.transformer_optimizer = transformer_optimizer
        self.predictors = predictors if predictors is not None else nn.ModuleDict()
        if len(self.predictors) and set(self.predictors) != {"cnn", "transformer"}:
            raise ValueError(f"predictors needs a 'cnn' and a 'transformer' predictor, got {sorted(self.predictors)}")

    def _iteration(self, engine: CASSTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        (view,) = engine.make_views(batchdata).values()
        engine.network.train()
        engine.transformer.train()
        engine.predictors.train()
        engine.optimizer.zero_grad(set_to_none=True)
        engine.transformer_optimizer.zero_grad(set_to_none=True)
        with engine.autocast():
            z_cnn = engine.network(view)
            z_vit = engine.transformer(view.contiguous())
            if len(engine.predictors):
                p_cnn, p_vit = engine.predictors["cnn"](z_cnn), engine.predictors["transformer"](z_vit)
                loss = cass_predictor_loss(p_cnn.float(), z_cnn.float(), p_vit.float(), z_vit.float())
            else:
                loss = engine.loss_function(z_cnn.float(), z_vit.float())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.transformer_optimizer.step()
        engine.state.output = {CommonKeys.LOSS: loss.detach(), "embeddings": z_cnn.detach().float()}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
