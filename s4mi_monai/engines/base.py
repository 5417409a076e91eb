"""The base of the trainers that write their own iteration: bf16 autocast, channels_last, one output per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from torch import nn

__all__ = ["CustomIterationTrainer"]


class CustomIterationTrainer(SupervisedTrainer):
    """A MONAI ``SupervisedTrainer`` for subclasses with their own ``_iteration`` (a teacher, two networks, views).

    ``amp`` means bf16 autocast on CUDA (:meth:`autocast`; no gradient scaler is needed for bf16) and is
    ignored elsewhere; ``channels_last`` asks the subclass to store CNN inputs in NHWC, which cuDNN
    convolutions prefer under autocast. Outputs stay one dict per batch (``decollate=False``), and
    gradients are set to ``None`` rather than zeroed.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        amp: bool = False,
        channels_last: bool = False,
        train_handlers: Sequence | None = None,
        compile: bool = False,
    ) -> None:
        device = torch.device(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            train_handlers=train_handlers,
            amp=False,
            decollate=False,
            compile=compile,
            optim_set_to_none=True,
        )
        self.use_bf16 = bool(amp) and device.type == "cuda"
        self.channels_last = bool(channels_last)

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA when ``amp`` was asked for; a no-op context otherwise."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else nullcontext()
