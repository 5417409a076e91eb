"""The handler that applies per-iteration schedules (built by :mod:`s4mi_monai.optim`) during training.

Schedules are precomputed arrays with one value per training iteration, as in the official DINO code;
:class:`ScheduleHandler` writes value ``iteration − 1`` into an optimizer's param groups or onto an
attribute before every iteration. The index comes from ``engine.state.iteration``, which a resume
restores, so the handler keeps no state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from s4mi_monai.optim import FIXED_KEYS

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ScheduleHandler", "as_schedule", "check_schedule_covers_run", "value_at_iteration"]

def value_at_iteration(values: np.ndarray, engine: Engine) -> float:
    """``values[engine.state.iteration − 1]``: the value of the iteration running (ignite counts from 1)."""
    index = engine.state.iteration - 1
    if not 0 <= index < len(values):
        raise IndexError(f"schedule of {len(values)} values has no entry for iteration {engine.state.iteration}")
    return float(values[index])


def check_schedule_covers_run(values: np.ndarray, engine: Engine) -> None:
    """Fail when the run starts, not in its last epoch, if the schedule is shorter than the run."""
    total = engine.state.max_epochs * engine.state.epoch_length
    if len(values) < total:
        raise ValueError(
            f"schedule has {len(values)} values but the run has {engine.state.max_epochs} epochs × "
            f"{engine.state.epoch_length} iterations = {total}"
        )


def as_schedule(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The values as a float array, checked to be a non-empty 1-D sequence."""
    schedule = np.asarray(values, dtype=float)
    if schedule.ndim != 1 or len(schedule) == 0:
        raise ValueError(f"a schedule is a non-empty 1-D sequence, got shape {schedule.shape}")
    return schedule


class ScheduleHandler:
    """Before every iteration, set a hyper-parameter to ``values[engine.state.iteration − 1]``.

    Either ``optimizer`` and ``param_key``: the key (``"lr"``, ``"weight_decay"``, …) of every param group,
    except groups listing ``param_key`` under :data:`~s4mi_monai.optim.FIXED_KEYS` (see :func:`~s4mi_monai.optim.param_groups_for_weight_decay`);
    or ``attribute``: ``setattr(target, attribute, value)``, the target defaulting to ``engine.state``
    (e.g. ``attribute="teacher_temp"`` for the DINO trainer to read ``engine.state.teacher_temp``).

    Attach to the trainer; at ``STARTED`` it checks that the schedule covers ``max_epochs × epoch_length``
    iterations.
    """

    def __init__(
        self,
        values: Sequence[float] | np.ndarray,
        optimizer: torch.optim.Optimizer | None = None,
        param_key: str | None = None,
        target: Any = None,
        attribute: str | None = None,
    ) -> None:
        sets_param_group = optimizer is not None and param_key is not None and attribute is None and target is None
        sets_attribute = attribute is not None and optimizer is None and param_key is None
        if not (sets_param_group or sets_attribute):
            raise ValueError("give either optimizer and param_key, or attribute (and optionally target)")
        self.values = as_schedule(values)
        self.optimizer = optimizer
        self.param_key = param_key
        self.target = target
        self.attribute = attribute

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda engine: check_schedule_covers_run(self.values, engine))
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        value = value_at_iteration(self.values, engine)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                if self.param_key not in group.get(FIXED_KEYS, ()):
                    group[self.param_key] = value
        else:
            setattr(engine.state if self.target is None else self.target, self.attribute, value)
