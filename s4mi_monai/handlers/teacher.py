"""DINO's student–teacher mechanics as trainer handlers: EMA teacher, frozen last layer.

The order inside one official DINO iteration is: forward, loss, backward, per-parameter gradient
clipping (:func:`s4mi_monai.optim.clip_gradients_per_parameter`), cancelling the head's last-layer gradients in the first
epoch (:class:`FreezeLastLayer`), optimizer step, teacher EMA update (:class:`EMATeacher`). The two
gradient operations act on separate parameters' gradients one by one, so their order does not matter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from s4mi_monai.distributed import unwrap
from s4mi_monai.handlers.schedules import as_schedule, check_schedule_covers_run, value_at_iteration

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["EMATeacher", "FreezeLastLayer"]


class EMATeacher:
    """After every optimizer step, move the teacher's weights towards the student's (exponential moving average).

    At each ``ITERATION_COMPLETED`` of the trainer, for every parameter (paired by name)::

        θ_t ← m θ_t + (1 − m) θ_s

    with ``m = momentum`` if it is a number, else ``momentum[engine.state.iteration − 1]`` (a per-iteration
    schedule, officially ``cosine_schedule(0.996, 1.0, epochs, iters_per_epoch)``; checked at ``STARTED``
    to cover the run). Buffers (BatchNorm statistics) are copied from the student when ``copy_buffers``;
    the official code leaves them to the teacher's own forward passes (``copy_buffers=False``).

    A ``DataParallel``/``DistributedDataParallel`` student or teacher is unwrapped (``.module``). On
    construction the teacher stops requiring gradients and, with ``initialize_from_student``, gets the
    student's weights (official: ``teacher.load_state_dict(student.state_dict())``); a resume then
    overwrites them with the checkpointed teacher. The handler keeps no state: the momentum index comes
    from the trainer's restored iteration.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        momentum: Sequence[float] | np.ndarray | float,
        copy_buffers: bool = True,
        initialize_from_student: bool = True,
    ) -> None:
        self.student = unwrap(student)
        self.teacher = unwrap(teacher)
        self.momentum: float | np.ndarray = float(momentum) if isinstance(momentum, (int, float)) else as_schedule(momentum)
        self.copy_buffers = copy_buffers
        self.parameter_pairs = self._pair_by_name(self.teacher.named_parameters(), self.student.named_parameters())
        self.buffer_pairs = self._pair_by_name(self.teacher.named_buffers(), self.student.named_buffers())
        if initialize_from_student:
            self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)

    @staticmethod
    def _pair_by_name(
        teacher_tensors: Iterator[tuple[str, torch.Tensor]], student_tensors: Iterator[tuple[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        teacher_by_name, student_by_name = dict(teacher_tensors), dict(student_tensors)
        if teacher_by_name.keys() != student_by_name.keys():
            differing = sorted(teacher_by_name.keys() ^ student_by_name.keys())
            raise ValueError(f"teacher and student differ in these parameters/buffers: {differing[:10]}")
        return [(teacher_by_name[name], student_by_name[name]) for name in teacher_by_name]

    def attach(self, engine: Engine) -> None:
        if isinstance(self.momentum, np.ndarray):
            engine.add_event_handler(Events.STARTED, lambda engine: check_schedule_covers_run(self.momentum, engine))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        momentum = self.momentum if isinstance(self.momentum, float) else value_at_iteration(self.momentum, engine)
        self.update(momentum)

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """One EMA step ``θ_t ← m θ_t + (1 − m) θ_s`` with ``m = momentum`` (and buffers copied if set)."""
        for teacher_parameter, student_parameter in self.parameter_pairs:
            teacher_parameter.mul_(momentum).add_(student_parameter.detach(), alpha=1.0 - momentum)
        if self.copy_buffers:
            for teacher_buffer, student_buffer in self.buffer_pairs:
                teacher_buffer.copy_(student_buffer)


class FreezeLastLayer:
    """Cancel the gradients of the head's last layer during the first ``epochs`` epochs (official
    ``cancel_gradients_last_layer``, ``freeze_last_layer=1``).

    The affected parameters are those of ``module`` (a DDP wrapper is unwrapped) with ``layer_name`` as one
    component of their name, e.g. ``head.last_layer.parametrizations.weight.original1`` of a
    :class:`s4mi_monai.networks.heads.DINOHead`. Attach to a trainer that fires MONAI's
    ``IterationEvents.BACKWARD_COMPLETED`` between ``backward()`` and ``optimizer.step()`` (as
    ``SupervisedTrainer`` does): while ``engine.state.epoch ≤ epochs`` (ignite counts epochs from 1) their
    ``grad`` is set to ``None``, so the optimizer skips them entirely (no update, no weight decay, no
    moment update), exactly as in the official code.
    """

    def __init__(self, module: nn.Module, epochs: int = 1, layer_name: str = "last_layer") -> None:
        self.epochs = epochs
        self.last_layer_parameters = [
            parameter for name, parameter in unwrap(module).named_parameters() if layer_name in name.split(".")
        ]
        if not self.last_layer_parameters:
            raise ValueError(f"no parameter of the module has {layer_name!r} in its name")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch <= self.epochs:
            for parameter in self.last_layer_parameters:
                parameter.grad = None
