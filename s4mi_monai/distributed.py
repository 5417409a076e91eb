"""Training on several processes under ``torchrun``: one per GPU (NCCL) or per CPU worker (gloo).

A bundle's ``configs/multi_gpu_train.json`` lays these parts over ``train.json`` (model-zoo convention)::

    torchrun --nproc_per_node 2 -m monai.bundle run training \\
        --config_file "['configs/train.json','configs/multi_gpu_train.json']"

What holds in a distributed run:

- every rank reads its own share of each epoch; ``batch_size`` is per rank, so the global batch is
  ``batch_size x world size`` and an epoch has ``world size`` times fewer steps;
- gradients are averaged over ranks (``DistributedDataParallel``), which equals the gradient of the mean
  loss over the global batch; BatchNorm statistics stay per rank unless ``sync_batchnorm`` is set (GPUs
  only), so a 2-rank run with batch B equals a 1-rank run with batch 2B exactly (up to float rounding)
  only for networks without BatchNorm (the ViTs) or with ``sync_batchnorm``;
- the networks start equal (``DistributedDataParallel`` copies rank 0's weights to the others), while
  augmentation is seeded ``seed + rank`` so that ranks do not crop and flip their images alike; samplers
  share ``seed`` so that their shares of an epoch do not overlap; a checkpoint keeps every rank's random
  state and a resumed run gives each rank its own back;
- validation, test scoring, checkpoints, logs and every written file come from rank 0, which scores the
  whole split with the unwrapped network (no collective call, so the other ranks do not wait on it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "GradientAverage",
    "agree",
    "all_ranks",
    "barrier",
    "gather_objects",
    "gather_rows",
    "gather_with_gradients",
    "initialize",
    "launch_rank",
    "launch_world_size",
    "is_distributed",
    "is_main_process",
    "main_process_handlers",
    "mean_over_ranks",
    "rank",
    "shutdown",
    "sum_over_ranks",
    "unwrap",
    "world_size",
    "wrap",
]

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """A process group is initialised (a ``torchrun`` run after :func:`initialize`)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a distributed run)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 outside a distributed run)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def launch_rank() -> int:
    """The rank ``torchrun`` gave this process (``RANK``; 0 outside torchrun), readable before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 outside torchrun), readable before the process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a distributed run, or the only process: the one that validates and writes files."""
    return rank() == 0


def initialize(device: str = "cuda") -> torch.device:
    """Join the process group ``torchrun`` describes and return this process's device.

    NCCL on ``cuda:LOCAL_RANK`` when ``device`` asks for CUDA and one is present, else gloo on the CPU.
    Outside ``torchrun`` it says how to start the run instead of hanging on a rendezvous.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"multi_gpu_train.json runs under torchrun, which sets {', '.join(missing)}: start it as "
            "torchrun --nproc_per_node N -m monai.bundle run training --config_file \"['configs/train.json','configs/multi_gpu_train.json']\""
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not is_distributed():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def wrap(network: torch.nn.Module, device: torch.device, sync_batchnorm: bool = False) -> torch.nn.Module:
    """``network`` on ``device`` in ``DistributedDataParallel``; BatchNorm layers synchronised across ranks if asked.

    Outside a distributed run the network is returned unwrapped, so an overlay can be tried in one process.
    """
    network = network.to(device)
    if not is_distributed():
        return network
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm does not run on the CPU); leave it false on CPU ranks")
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def unwrap(network: Any) -> Any:
    """The network inside ``DataParallel``/``DistributedDataParallel`` (keys without ``module.``), else ``network``."""
    if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return network.module
    return network


MAIN_PROCESS_ONLY = ("ValidationHandler", "StatsHandler", "TensorBoardStatsHandler", "ProgressBar")
"""Trainer handlers that only rank 0 attaches: validation (rank 0 scores the whole split) and console/TensorBoard logs."""


def main_process_handlers(handlers: Sequence[Any]) -> list[Any]:
    """``handlers`` on rank 0; on other ranks without validation and logging (:data:`MAIN_PROCESS_ONLY`)."""
    if is_main_process():
        return list(handlers)
    return [handler for handler in handlers if type(handler).__name__ not in MAIN_PROCESS_ONLY]


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over all ranks (itself in one process); every rank must call it."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    if torch.distributed.get_backend() == "nccl" and total.device.type != "cuda":
        total = total.cuda()
    torch.distributed.all_reduce(total)
    return total.to(value.device)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in one process); every rank must call it."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows`` (N_r, ...) concatenated in rank order (``rows`` in one process); the N_r may differ."""
    if not is_distributed():
        return rows
    device = rows.device
    if torch.distributed.get_backend() == "nccl" and device.type != "cuda":
        rows = rows.cuda()
    sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, torch.tensor([rows.shape[0]], device=rows.device))
    largest = int(max(size.item() for size in sizes))
    padded = torch.zeros((largest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    torch.distributed.all_gather(gathered, padded)
    return torch.cat([part[: int(size.item())] for part, size in zip(gathered, sizes)]).to(device)


def gather_with_gradients(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows`` (same shape on all) concatenated in rank order, differentiable: the gradient of each
    rank's copy of a loss flows back to the rank whose rows they are (summed over ranks). ``rows`` in one process."""
    if not is_distributed():
        return rows
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(rows.contiguous()))


def all_ranks(flag: bool) -> bool:
    """``flag`` holds on every rank (``flag`` itself in one process); every rank must call it."""
    if not is_distributed():
        return flag
    return int(sum_over_ranks(torch.tensor([int(not flag)])).item()) == 0


def agree(decision: bool) -> bool:
    """Rank 0's ``decision`` on every rank (``decision`` in one process), for choices made from a clock."""
    if not is_distributed():
        return decision
    values = [decision]
    torch.distributed.broadcast_object_list(values, src=0)
    return bool(values[0])


def mean_over_ranks(value: float) -> float:
    """A scalar averaged over all ranks (itself in one process); every rank must call it."""
    if not is_distributed():
        return value
    return float(sum_over_ranks(torch.tensor([value], dtype=torch.float64)).item()) / world_size()


class GradientAverage:
    """Average the gradients of ``module``'s parameters over ranks after each backward pass; attach to a trainer
    (or call it after ``backward``).

    For trained parts that ``DistributedDataParallel`` does not see (CASS's predictors, the contrastive stages,
    which call a network's methods other than ``forward``): one all-reduce of the flattened gradients per step.
    A parameter with a gradient on some ranks only counts as zero on the others; one with a gradient on no rank
    keeps none, so the optimizer leaves it alone as in one process. A no-op outside a distributed run.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]

    def attach(self, engine: Any) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Any = None) -> None:
        if not self.parameters or not is_distributed():
            return
        device = self.parameters[0].device
        has_grad = torch.tensor([float(p.grad is not None) for p in self.parameters], device=device)
        anywhere = sum_over_ranks(has_grad) > 0
        chosen = [p for p, used in zip(self.parameters, anywhere.tolist()) if used]
        if not chosen:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in chosen])
        flat = sum_over_ranks(flat) / world_size()
        offset = 0
        for parameter in chosen:
            size = parameter.numel()
            parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
            offset += size


def barrier() -> None:
    """Wait until every rank gets here (e.g. until rank 0 has written a file the others read); a no-op in one process."""
    if is_distributed():
        torch.distributed.barrier()


# How long the last rank to leave holds off the interpreter's exit, the GIL released (see ``shutdown``).
EXIT_GRACE_SECONDS = 0.5


def shutdown() -> None:
    """Leave the process group (the overlay's ``finalize``); a no-op outside a distributed run.

    A gloo worker thread drops its last reference to a collective's tensors a moment after the
    collective returns; when the tensor was made in Python that decref takes the GIL, and a thread that
    takes the GIL while the interpreter is finalising is unwound and aborts the process ("terminate
    called without an active exception", exit -6) after all the work is done (PyTorch issues 179291,
    190489). So every rank meets at a barrier (a collective without Python tensors), leaves the group,
    then sleeps briefly with the GIL released so that such a thread can finish before the exit.
    """
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        time.sleep(EXIT_GRACE_SECONDS)
