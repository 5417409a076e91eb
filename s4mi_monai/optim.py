"""Optimisation helpers that are not handlers: per-iteration schedules, weight-decay parameter groups, gradient clipping.

Schedules are arrays with one value per training iteration, as in the official DINO code; bundle configs build them
(``s4mi_monai.optim.cosine_schedule(...)``) and :class:`s4mi_monai.handlers.ScheduleHandler` applies them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FIXED_KEYS",
    "clip_gradients_per_parameter",
    "cosine_schedule",
    "linear_warmup_then_constant",
    "param_groups_for_weight_decay",
    "pretraining_optimizer",
    "poly_schedule",
    "sigmoid_rampup_schedule",
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
    ``"weight_decay"`` under :data:`FIXED_KEYS`, so a weight-decay :class:`~s4mi_monai.handlers.ScheduleHandler` skips it while
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


PRETRAINING_OPTIMIZERS = ("adamw", "sgd")


def pretraining_optimizer(name: str, params: Any, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    """DINO's optimiser by name, as the official ``--optimizer``: ``"adamw"`` (the ViT default) or ``"sgd"`` with
    momentum 0.9 (the README's ResNet-50 recipe). Weight decay comes from the schedule handler per param group."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=fused)
    raise ValueError(f"--pretrain_optimizer must be one of {PRETRAINING_OPTIMIZERS}, got {name!r}")


@torch.no_grad()
def clip_gradients_per_parameter(module: nn.Module, max_norm: float = 3.0) -> torch.Tensor:
    """Clip each parameter's gradient to L2 norm ≤ ``max_norm`` on its own (official ``clip_gradients``).

    ``grad ← grad · min(1, max_norm / (‖grad‖₂ + 1e-6))`` per parameter, unlike
    ``torch.nn.utils.clip_grad_norm_``, which scales all gradients by their joint norm. Returns the norms
    before clipping, one per parameter with a gradient (empty if none), without synchronising the device.
    With a ``GradScaler``, call ``scaler.unscale_(optimizer)`` first, as the official code does.
    """
    gradients = [parameter.grad for parameter in module.parameters() if parameter.grad is not None]
    if not gradients:
        return torch.empty(0)
    norms = torch.stack([torch.linalg.vector_norm(gradient.detach(), 2) for gradient in gradients])
    scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for gradient, scale in zip(gradients, scales):
        gradient.mul_(scale)
    return norms
