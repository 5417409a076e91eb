"""Per-iteration schedules (DINO's lr, weight decay, teacher temperature; the cross-teaching weight and the
SSL4MIS poly lr) and the handler that applies them.

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

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "FIXED_KEYS",
    "ScheduleHandler",
    "as_schedule",
    "check_schedule_covers_run",
    "cosine_schedule",
    "linear_warmup_then_constant",
    "param_groups_for_weight_decay",
    "poly_schedule",
    "sigmoid_rampup_schedule",
    "value_at_iteration",
]

FIXED_KEYS = "fixed_keys"
"""Param-group entry listing the hyper-parameters (e.g. ``"weight_decay"``) that schedules leave alone."""


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """One value per iteration: linear warm-up, then a half cosine from ``base`` to ``final`` (official
    ``cosine_scheduler``).

    With ``W = warmup_epochs · iters_per_epoch`` and ``n = epochs · iters_per_epoch − W``:

    - iterations ``0..W−1``: ``linspace(start_warmup, base, W)`` (reaches ``base`` at ``W − 1``);
    - iteration ``W + i``, ``i = 0..n−1``: ``final + ½ (base − final)(1 + cos(π i / n))``, i.e. ``base`` at
      ``i = 0``, approaching but (as in the official code) not reaching ``final`` at the last iteration.

    DINO uses it for the lr (warm-up 10 epochs from 0, then to ``min_lr``), the weight decay (0.04 → 0.4)
    and the teacher momentum (0.996 → 1).
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"epochs and iters_per_epoch must be positive, got {epochs} and {iters_per_epoch}")
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"warmup_epochs must lie in [0, epochs={epochs}], got {warmup_epochs}")
    warmup_iters = warmup_epochs * iters_per_epoch
    warmup = np.linspace(start_warmup, base, warmup_iters)
    cosine_iters = np.arange(epochs * iters_per_epoch - warmup_iters)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * cosine_iters / len(cosine_iters)))
    return np.concatenate((warmup, cosine))


def linear_warmup_then_constant(start: float, end: float, warmup_epochs: int, epochs: int, iters_per_epoch: int) -> np.ndarray:
    """One value per iteration, constant within an epoch: DINO's teacher-temperature schedule.

    Epoch ``e`` (0-based) gets ``linspace(start, end, warmup_epochs)[e]`` for ``e < warmup_epochs`` and
    ``end`` afterwards, exactly the official per-epoch ``teacher_temp_schedule`` (``end`` is reached at
    epoch ``warmup_epochs − 1``; ``warmup_epochs = 0`` gives ``end`` throughout), repeated for every
    iteration of the epoch. Official defaults 0.04 → 0.04 over 0 epochs; README for long ViT runs
    0.04 → 0.07 over 30 epochs.
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"epochs and iters_per_epoch must be positive, got {epochs} and {iters_per_epoch}")
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"warmup_epochs must lie in [0, epochs={epochs}], got {warmup_epochs}")
    per_epoch = np.concatenate((np.linspace(start, end, warmup_epochs), np.full(epochs - warmup_epochs, end)))
    return np.repeat(per_epoch, iters_per_epoch)


def sigmoid_rampup_schedule(maximum: float, ramp_fraction: float, epochs: int, iters_per_epoch: int) -> np.ndarray:
    """One value per iteration: the "sigmoid" ramp-up of Laine & Aila, used for the cross-teaching weight λ(t).

    With ``N = epochs · iters_per_epoch`` and ramp length ``T = ramp_fraction · N``: iteration ``t`` gets
    ``maximum · exp(−5 (1 − t/T)²)`` for ``t < T`` and ``maximum`` from ``T`` on, so the weight really
    reaches ``maximum`` within the run (SSL4MIS ramps over 30,000 iterations by ``iter // 150``; the S4MI
    script kept that ramp for a 10,000-iteration run, so λ never exceeded about 0.011).
    ``ramp_fraction = 0`` gives ``maximum`` throughout.
    """
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"epochs and iters_per_epoch must be positive, got {epochs} and {iters_per_epoch}")
    if not 0.0 <= ramp_fraction <= 1.0:
        raise ValueError(f"ramp_fraction must lie in [0, 1], got {ramp_fraction}")
    total = epochs * iters_per_epoch
    ramp = ramp_fraction * total
    if ramp == 0:
        return np.full(total, float(maximum))
    progress = np.clip(np.arange(total) / ramp, 0.0, 1.0)
    return maximum * np.exp(-5.0 * (1.0 - progress) ** 2)


def poly_schedule(base: float, epochs: int, iters_per_epoch: int, power: float = 0.9) -> np.ndarray:
    """One value per iteration: ``base · (1 − t/N)^power``, the SSL4MIS learning-rate decay (N iterations)."""
    if epochs < 1 or iters_per_epoch < 1:
        raise ValueError(f"epochs and iters_per_epoch must be positive, got {epochs} and {iters_per_epoch}")
    total = epochs * iters_per_epoch
    return base * (1.0 - np.arange(total) / total) ** power


def param_groups_for_weight_decay(module: torch.nn.Module) -> list[dict[str, Any]]:
    """Two optimizer param groups: regularised weights, and biases plus 1-D parameters (norms) without decay.

    As the official ``get_params_groups``: a trainable parameter goes to the second group if its name
    ends with ``bias`` or it has one dimension. That group has ``weight_decay = 0`` and lists
    ``"weight_decay"`` under :data:`FIXED_KEYS`, so a weight-decay :class:`ScheduleHandler` skips it while
    an lr schedule still applies.
    """
    regularised, not_regularised = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.endswith("bias") or parameter.ndim == 1:
            not_regularised.append(parameter)
        else:
            regularised.append(parameter)
    return [
        {"params": regularised},
        {"params": not_regularised, "weight_decay": 0.0, FIXED_KEYS: ["weight_decay"]},
    ]


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
    except groups listing ``param_key`` under :data:`FIXED_KEYS` (see :func:`param_groups_for_weight_decay`);
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
