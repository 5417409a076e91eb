"""The random state of a training (torch's generators and the augmentations' own) as one checkpointable object."""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from s4mi_monai import distributed


def augmentation_random_states(root: Any) -> list[np.random.RandomState]:
    """Every distinct ``np.random.RandomState`` held as ``R`` by a MONAI randomizable transform under ``root``.

    ``root`` may be a DataLoader, a dataset (also ``ConcatDataset``), a ``Compose`` or a transform; the walk
    follows attributes, lists and dicts in their order, so two builds of one config list the same states in
    the same order. Tensors, arrays and networks are not entered. A state shared by several transforms
    (a wrapper handing its ``R`` to the transform it wraps) is listed once.
    """
    found: dict[int, np.random.RandomState] = {}
    for obj in _walk(root, set()):
        state = getattr(obj, "R", None)
        if isinstance(state, np.random.RandomState):
            found.setdefault(id(state), state)
    return list(found.values())


# values that hold no transform: data, networks, and code (modules, classes, functions, whose attributes are global)
_NOT_ENTERED = (str, bytes, int, float, np.ndarray, torch.Tensor, torch.nn.Module, np.random.RandomState, type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _walk(obj: Any, seen: set[int]) -> Iterator[Any]:
    if isinstance(obj, _NOT_ENTERED) or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Mapping):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif hasattr(obj, "__dict__"):
        yield obj
        children = list(vars(obj).values())
    else:
        return
    for child in children:
        yield from _walk(child, seen)


def _state_as_tensors(state: np.random.RandomState) -> dict[str, Any]:
    """A RandomState as tensors and numbers, which ``torch.load(weights_only=True)`` reads back."""
    _, keys, position, has_gauss, cached_gaussian = state.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _restore(state: np.random.RandomState, saved: Mapping[str, Any]) -> None:
    keys = saved["keys"].numpy().astype(np.uint32)
    state.set_state(("MT19937", keys, saved["position"], saved["has_gauss"], saved["cached_gaussian"]))


class TrainingRandomState:
    """The random state of a training as a checkpointable object: torch's generators and the augmentations'.

    Listed among the objects a :class:`TrainingCheckpoint` saves, it makes a resumed run draw what an
    uninterrupted run draws: the data order and every draw made with torch's generators (DINO/CASS views,
    dropout, anchor sampling), and, for ``augmentations`` (the training loaders or datasets), the numpy
    states MONAI's random transforms keep in the process. Those states matter with ``num_workers=0``,
    where MONAI seeds the transforms once, when the loader is built, and they advance from epoch to epoch;
    with loader workers MONAI reseeds them in each worker from torch's state, which is saved anyway.

    Under torchrun every rank draws from its own stream (seeded ``seed + rank``): ``state_dict`` gathers all
    of them (every rank must call it) as ``ranks``, and each rank restores its own.
    """

    def __init__(self, augmentations: Sequence[Any] = ()) -> None:
        self.augmentations = list(augmentations)

    def _augmentation_states(self) -> list[np.random.RandomState]:
        return [state for root in self.augmentations for state in augmentation_random_states(root)]

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        augmentations = [_state_as_tensors(state) for state in self._augmentation_states()]
        own = {"cpu": torch.get_rng_state(), "cuda": cuda, "augmentations": augmentations}
        return {**own, "ranks": distributed.gather_objects(own) if distributed.is_distributed() else []}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ranks = state.get("ranks") or []
        if len(ranks) == distributed.world_size():
            state = ranks[distributed.rank()]
        torch.set_rng_state(state["cpu"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if "augmentations" not in state:
            return  # a checkpoint written before the transforms' states were saved: fresh augmentation draws
        saved, current = state["augmentations"], self._augmentation_states()
        if len(saved) != len(current):
            raise ValueError(
                f"the checkpoint holds the random states of {len(saved)} random transforms, this training has {len(current)}: "
                "its augmentation changed since the checkpoint was written; resume with the same config or start in a new output_dir"
            )
        for random_state, saved_state in zip(current, saved):
            _restore(random_state, saved_state)
