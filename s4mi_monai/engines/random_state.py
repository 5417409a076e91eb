"""torch's global random state as one of the objects a training checkpoint saves and a resumed run restores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from s4mi_monai import distributed


class TorchRandomState:
    """torch's global random state as a checkpointable object.

    Listed among the objects a :class:`TrainingCheckpoint` saves, it makes a resumed run draw the same data
    order (and, with loader workers, the same augmentations, whose seeds MONAI derives from it) as an
    uninterrupted run. In-process augmentation (``num_workers=0``) keeps its own numpy states, which
    are not restored: such a resumed run is statistically, not bitwise, the same.

    Under torchrun every rank draws from its own stream (seeded ``seed + rank``): ``state_dict`` gathers all
    of them (every rank must call it) as ``ranks``, and each rank restores its own.
    """

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        own = {"cpu": torch.get_rng_state(), "cuda": cuda}
        return {**own, "ranks": distributed.gather_objects(own) if distributed.is_distributed() else []}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ranks = state.get("ranks") or []
        if len(ranks) == distributed.world_size():
            state = ranks[distributed.rank()]
        torch.set_rng_state(state["cpu"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
