"""Throughput benchmark of a bundle's trainer: images per second, step time and peak memory, printed.

It runs the trainer's own ``_iteration`` on batches of its own data loader, so it measures what training
does (views made on the device, autocast, channels_last, optimizer step) without attaching the run's
handlers: nothing is written, no checkpoint, no validation. The first ``warmup`` steps (allocator,
cuDNN autotuning, ``torch.compile``) are not timed.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from monai.utils import CommonKeys

from s4mi_monai import distributed

logger = logging.getLogger("s4mi_monai")

__all__ = ["benchmark"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_resident_memory() -> bool:
    """Reset the process's peak resident memory (Linux ``/proc/self/clear_refs``), so the next reading is this stage's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_resident_memory_mb() -> float:
    """The process's peak resident memory in MiB (``VmHWM``, which ``_reset_peak_resident_memory`` resets; else ``ru_maxrss``)."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return int(match.group(1)) / 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch_size(batch: Any) -> int:
    images = batch[CommonKeys.IMAGE] if isinstance(batch, dict) else batch[0]
    return int(images.shape[0])


def benchmark(trainer: Any, name: str, steps: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Time ``steps`` training iterations of ``trainer`` after ``warmup`` untimed ones; print and return the numbers.

    ``images_per_second`` counts loader time (decoding, collation) and step time together: what a user
    gets. ``step_seconds`` is the mean time of the iteration alone (transfer, views, forward, backward,
    step), ``data_seconds`` the mean wait for the loader. ``peak_memory_mb`` is the peak GPU memory
    allocated by tensors on CUDA; elsewhere the process's peak resident memory during this stage
    (``peak_memory_scope`` "stage", on Linux, where the peak can be reset; it then still counts what earlier
    stages left resident, such as cached datasets) or since the process started (``"process"``).
    Under torchrun every rank times its own steps; rank 0 prints them all (``images_per_second_per_rank``) and
    their sum (``total_images_per_second``), ``images_per_second`` being its own.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be positive and warmup non-negative, got {steps} and {warmup}")
    device = torch.device(trainer.state.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        scope = "stage"
    else:
        scope = "stage" if _reset_peak_resident_memory() else "process"
    batches = itertools.cycle(trainer.data_loader)
    trainer.state.epoch = 1
    step_times, data_times, images = [], [], 0
    for index in range(warmup + steps):
        started = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        trainer.state.iteration = index + 1
        trainer._iteration(trainer, batch)
        _synchronize(device)
        finished = time.perf_counter()
        if index >= warmup:
            data_times.append(loaded - started)
            step_times.append(finished - loaded)
            images += _batch_size(batch)
    total = sum(step_times) + sum(data_times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = _peak_resident_memory_mb()
    result = {
        "stage": name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": steps,
        "batch_size": images // steps,
        "images_per_second": images / total,
        "step_seconds": sum(step_times) / steps,
        "data_seconds": sum(data_times) / steps,
        "peak_memory_mb": peak_mb,
        "peak_memory_scope": scope,
        "autocast": "bf16" if getattr(trainer, "use_bf16", False) else ("fp16" if getattr(trainer, "amp", False) else None),
        "channels_last": bool(getattr(trainer, "channels_last", False)),
    }
    if distributed.is_distributed():
        per_rank = distributed.gather_objects(result["images_per_second"])
        result.update({"world_size": len(per_rank), "images_per_second_per_rank": per_rank, "total_images_per_second": sum(per_rank)})
        if not distributed.is_main_process():
            return result
    print(f"benchmark {json.dumps(result)}", file=sys.stdout, flush=True)
    logger.info(
        "benchmark %s: %.1f images/s, step %.3f s, data %.3f s, peak memory %.0f MB (%s)",
        name,
        result["images_per_second"],
        result["step_seconds"],
        result["data_seconds"],
        peak_mb,
        result["device"],
    )
    return result
