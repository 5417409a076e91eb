"""What happened in each epoch of a training: one log line, ``history.json`` and ``curves.png``, kept across resumes."""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from s4mi_monai.distributed import is_main_process, mean_over_ranks
from s4mi_monai.handlers.checkpoint import BestModelSaver
from s4mi_monai.io import atomic_write, write_json

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

logger = logging.getLogger("s4mi_monai")

HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"


def _as_float(value: Any) -> float | None:
    """``value`` as a float when it is one number (Python, numpy or a one-element tensor), else None."""
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else None
    if isinstance(value, (numbers.Number, np.ndarray)) and np.size(value) == 1:
        return float(np.asarray(value).item())
    return None


def _iteration_loss(output: Any) -> float | None:
    """The loss of one iteration: MONAI's output dict, its decollated list of per-sample dicts, or the loss itself."""
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):
        output = output[0]  # decollated: every sample carries the same batch loss
    if isinstance(output, Mapping):
        output = output.get(CommonKeys.LOSS)
    return _as_float(output)


class EpochHistory:
    """Record, log and plot every training epoch; attach to the trainer.

    Per epoch: mean training loss over its iterations and the loss of each iteration, the trainer's own scalar metrics (``training``, e.g.
    the collapse measures of :class:`s4mi_monai.handlers.CollapseMonitor`), learning rate of the optimizer's first param group
    (at the epoch's last iteration), seconds from the epoch's start to the end of its validation, and the
    scalar metrics of ``validator`` when it ran during the epoch. Logs one line per epoch on the
    ``s4mi_monai`` logger, e.g. ``epoch 3/8  loss 0.5123  val f1_macro 0.6102 (best 0.6301 @ 2)  lr 3.1e-04  12.3 s``
    (best from ``best_saver``), and rewrites ``history.json`` and ``curves.png`` in ``output_dir``.
    ``validator`` may also map names to validators (two networks trained together): their metrics are
    recorded as ``"<name> <metric>"``.

    Order-independent: validation metrics are taken at the validator's own ``COMPLETED``, and at ``STARTED``
    the epoch record moves itself after the trainer's other ``EPOCH_COMPLETED`` handlers, so it sees the
    validation that MONAI's ``ValidationHandler`` runs there wherever the two are listed.
    ``state_dict``/``load_state_dict`` keep earlier epochs across a resume.
    """

    def __init__(
        self,
        output_dir: str,
        validator: Engine | Mapping[str, Engine] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        best_saver: BestModelSaver | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        if validator is None:
            self.validators: dict[str, Engine] = {}
        elif isinstance(validator, Mapping):
            self.validators = dict(validator)
        else:
            self.validators = {"": validator}
        self.optimizer = optimizer
        self.best_saver = best_saver
        self._epochs: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._lr: float | None = None
        self._epoch_start = 0.0
        self._validation: dict[str, float] = {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per epoch: ``epoch``, ``loss`` (mean), ``step_losses`` (each iteration's), ``lr``, ``seconds``,
        ``validation`` and ``training`` (metric name -> value)."""
        return list(self._epochs)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._record_after_other_epoch_handlers)
        engine.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)
        engine.add_event_handler(Events.COMPLETED, self.write_files)
        for name, validator in self.validators.items():
            validator.add_event_handler(Events.COMPLETED, self._capture_validation, f"{name} " if name else "")

    def _record_after_other_epoch_handlers(self, engine: Engine) -> None:
        engine.remove_event_handler(self._end_epoch, Events.EPOCH_COMPLETED)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)

    def _start_epoch(self, engine: Engine) -> None:
        self._losses, self._lr, self._validation = [], None, {}
        self._epoch_start = time.perf_counter()

    def _record_iteration(self, engine: Engine) -> None:
        loss = _iteration_loss(engine.state.output)
        if loss is not None:
            self._losses.append(mean_over_ranks(loss))  # the loss of the global batch under torchrun
        if self.optimizer is not None:
            self._lr = float(self.optimizer.param_groups[0]["lr"])

    def _capture_validation(self, validator: Engine, prefix: str = "") -> None:
        metrics = {prefix + name: _as_float(value) for name, value in validator.state.metrics.items()}
        self._validation.update({name: value for name, value in metrics.items() if value is not None})

    def _end_epoch(self, engine: Engine) -> None:
        record = {
            "epoch": int(engine.state.epoch),
            "loss": sum(self._losses) / len(self._losses) if self._losses else None,
            "step_losses": list(self._losses),
            "lr": self._lr,
            "seconds": time.perf_counter() - self._epoch_start,
            "validation": self._validation,
        }
        training_metrics = {name: _as_float(value) for name, value in engine.state.metrics.items()}
        record["training"] = {name: value for name, value in training_metrics.items() if value is not None}
        self._epochs.append(record)
        if is_main_process():
            logger.info(self._describe(record, engine.state.max_epochs))
            self.write_files()

    def _describe(self, record: Mapping[str, Any], max_epochs: int | None) -> str:
        parts = [f"epoch {record['epoch']}/{max_epochs}"]
        if record["loss"] is not None:
            parts.append(f"loss {record['loss']:.4f}")
        if record["validation"]:
            validation = "val " + " ".join(f"{name} {value:.4f}" for name, value in record["validation"].items())
            if self.best_saver is not None and self.best_saver.best_epoch is not None:
                validation += f" (best {self.best_saver.best_metric:.4f} @ {self.best_saver.best_epoch})"
            parts.append(validation)
        if record.get("training"):
            parts.append(" ".join(f"{name} {value:.4f}" for name, value in record["training"].items()))
        if record["lr"] is not None:
            parts.append(f"lr {record['lr']:.1e}")
        parts.append(f"{record['seconds']:.1f} s")
        return "  ".join(parts)

    def write_files(self, engine: Engine | None = None) -> None:
        """Rewrite ``history.json`` and ``curves.png`` from all epochs so far."""
        if not is_main_process():
            return
        best = None
        if self.best_saver is not None:
            saver = self.best_saver
            best = {"metric": saver.metric_name, "value": saver.best_metric, "epoch": saver.best_epoch}
        write_json(self.output_dir / HISTORY_FILE, {"epochs": self._epochs, "best": best})
        figure = self._plot_curves()
        atomic_write(self.output_dir / CURVES_FILE, lambda out: figure.savefig(out, format="png", dpi=100))

    def _plot_curves(self) -> Figure:
        """Training loss and validation metrics against the epoch, side by side (no pyplot: no global backend)."""
        figure = Figure(figsize=(10, 4))
        loss_axes, validation_axes = figure.subplots(1, 2)
        trained = [record for record in self._epochs if record["loss"] is not None]
        loss_axes.plot([record["epoch"] for record in trained], [record["loss"] for record in trained], marker=".")
        loss_axes.set(title="training loss", xlabel="epoch")
        names = list(dict.fromkeys(name for record in self._epochs for name in record["validation"]))
        for name in names:
            validated = [record for record in self._epochs if name in record["validation"]]
            epochs = [record["epoch"] for record in validated]
            validation_axes.plot(epochs, [record["validation"][name] for record in validated], marker=".", label=name)
        validation_axes.set(title="validation", xlabel="epoch")
        if names:
            validation_axes.legend()
        return figure

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs": [
                dict(record, validation=dict(record["validation"]), training=dict(record.get("training", {}))) for record in self._epochs
            ]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._epochs = [
            dict(record, validation=dict(record["validation"]), training=dict(record.get("training", {}))) for record in state["epochs"]
        ]
