"""Crash-safe checkpoints: the best model for inference and the full training state for resuming.

Every file is written atomically (:mod:`s4mi_monai.io`). Everything saved is plain
tensors and Python primitives, readable with ``torch.load(..., weights_only=True)`` and thus by MONAI's
``CheckpointLoader``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from s4mi_monai.distributed import agree, is_main_process, unwrap
from s4mi_monai.io import atomic_torch_save

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")


class BestModelSaver:
    """Keep the weights of the best validation epoch, as a plain state dict ready for inference.

    Attach to the validation evaluator. At its ``EPOCH_COMPLETED`` the metric ``metric_name`` (default: the
    evaluator's key metric) is compared with the best so far; on improvement the network's weights are
    written to ``save_path``. A NaN metric never counts as an improvement. ``best_epoch`` is the
    evaluator's ``state.epoch``, which MONAI's ``ValidationHandler`` sets to the trainer's epoch.
    ``state_dict``/``load_state_dict`` let the best-so-far survive a resume (see :class:`TrainingCheckpoint`).
    In a distributed run every rank tracks the best, rank 0 writes.
    """

    def __init__(self, save_path: str, network: torch.nn.Module, metric_name: str | None = None, greater_is_better: bool = True) -> None:
        self.save_path = save_path
        self.network = network
        self._metric_name = metric_name
        self.greater_is_better = greater_is_better
        self._best_metric: float | None = None
        self._best_epoch: int | None = None

    @property
    def metric_name(self) -> str | None:
        """The compared metric: the constructor's name, else the key metric of the evaluator attached to."""
        return self._metric_name

    @property
    def best_metric(self) -> float | None:
        return self._best_metric

    @property
    def best_epoch(self) -> int | None:
        return self._best_epoch

    def attach(self, engine: Engine) -> None:
        if self._metric_name is None:
            self._metric_name = getattr(engine.state, "key_metric_name", None)
        if self._metric_name is None:
            raise ValueError("BestModelSaver needs metric_name, or an evaluator with a key_val_metric.")
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self._metric_name])
        if not self._improves(value):
            return
        if is_main_process():
            weights = {name: tensor.detach().cpu() for name, tensor in unwrap(self.network).state_dict().items()}
            atomic_torch_save(weights, self.save_path)
        self._best_metric, self._best_epoch = value, int(engine.state.epoch)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self._best_metric is None:
            return True
        return value > self._best_metric if self.greater_is_better else value < self._best_metric

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self._best_metric, "best_epoch": self._best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best_metric, best_epoch = state["best_metric"], state["best_epoch"]
        self._best_metric = None if best_metric is None else float(best_metric)
        self._best_epoch = None if best_epoch is None else int(best_epoch)


class TrainingCheckpoint:
    """Save everything a killed training needs to resume, at the end of an epoch; delete it when training completes.

    ``min_interval_s`` > 0 skips the save at an epoch end that comes sooner than that after the last save (the
    first epoch always saves): with a handful of labeled images an epoch is one step, and writing the network
    and optimiser state after each would cost as much as training. A kill then loses at most that much work;
    the resumed run is the same either way, since it restarts from an epoch end.

    Attach to the trainer. ``save_dict`` maps names to objects with ``state_dict()``: the trainer itself
    (epoch, iteration), network, optimizer, lr scheduler, :class:`BestModelSaver`, ``EpochHistory``. The
    file holds ``{name: obj.state_dict()}``; resuming is MONAI's ``CheckpointLoader`` with the same
    objects, listed among the trainer handlers and enabled only when the file exists::

        {"_target_": "CheckpointLoader", "load_path": "@checkpoint_path", "load_dict": {...same objects...},
         "map_location": "cpu", "_disabled_": "$not os.path.exists(@checkpoint_path)"}

    The loader restores the trainer's epoch at ``STARTED``, so ignite continues with the next epoch.
    Deleting the file at ``COMPLETED`` makes re-running a finished command train afresh.

    The saved state must include what other handlers change at ``EPOCH_COMPLETED`` (lr scheduler step,
    validation, best model, history), so before every epoch the save moves itself to the end of the
    trainer's ``EPOCH_COMPLETED`` handlers: its position in the handler list does not matter, and it runs
    after ``EpochHistory`` (which moves itself once, at ``STARTED``). Rank 0 writes.
    """

    def __init__(self, save_path: str, save_dict: dict[str, Any], delete_on_completion: bool = True, min_interval_s: float = 0.0) -> None:
        missing = [name for name, obj in save_dict.items() if not hasattr(obj, "state_dict")]
        if missing:
            raise TypeError(f"objects without state_dict() cannot be checkpointed: {missing}")
        self.save_path = save_path
        self.save_dict = save_dict
        self.delete_on_completion = delete_on_completion
        self.min_interval_s = float(min_interval_s)
        self._last_save = -math.inf

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._save_after_other_epoch_handlers)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _save_after_other_epoch_handlers(self, engine: Engine) -> None:
        engine.remove_event_handler(self.save, Events.EPOCH_COMPLETED)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        """Write ``{name: obj.state_dict()}`` atomically; networks without their ``DataParallel`` wrapper."""
        if not agree(time.monotonic() - self._last_save >= self.min_interval_s):  # rank 0's clock decides for all
            return
        state = {name: unwrap(obj).state_dict() for name, obj in self.save_dict.items()}  # every rank: some gather
        if is_main_process():
            atomic_torch_save(state, self.save_path)
        self._last_save = time.monotonic()

    def completed(self, engine: Engine) -> None:
        """Training finished: nothing left to resume."""
        if self.delete_on_completion and is_main_process():
            Path(self.save_path).unlink(missing_ok=True)
