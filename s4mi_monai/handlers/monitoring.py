"""Representation-collapse monitoring for self-supervised pretraining (a known failure of DINO on small data)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from monai.metrics import compute_embedding_collapse
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

logger = logging.getLogger("s4mi_monai")

__all__ = ["CollapseMonitor"]


class CollapseMonitor:
    """Per epoch: the embedding-collapse score of the backbone features and, for DINO, the teacher's entropy.

    Reads ``engine.state.output["embeddings"]`` (B, D) every iteration, keeping the last ``max_rows`` rows,
    and ``"teacher_entropy"`` when present. At ``EPOCH_COMPLETED`` it computes MONAI's effective-rank
    collapse score, ``1 − erank / min(N − 1, D)`` with ``erank = exp(H(σ / Σσ))`` over the singular values σ of
    the centred embeddings (0: the features use every direction; 1: they all lie on one line), and puts
    ``embedding_collapse`` (and ``teacher_entropy``, the mean teacher entropy, in nats, of the epoch) in
    ``engine.state.metrics``, where :class:`s4mi_monai.handlers.EpochHistory` records them.

    It warns when the score exceeds ``collapse_threshold`` or when the teacher's targets have become
    (nearly) one-hot (entropy below ``min_entropy``) or (nearly) uniform (entropy above
    ``(1 − uniform_margin) · log K``, with K = ``out_dim``) — the two collapse modes that DINO's centring
    and sharpening balance.
    """

    def __init__(
        self,
        max_rows: int = 1024,
        collapse_threshold: float = 0.9,
        out_dim: int | None = None,
        min_entropy: float = 0.05,
        uniform_margin: float = 0.02,
    ) -> None:
        self.max_rows = max_rows
        self.collapse_threshold = collapse_threshold
        self.out_dim = out_dim
        self.min_entropy = min_entropy
        self.uniform_margin = uniform_margin
        self._rows: list[torch.Tensor] = []
        self._entropies: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _reset(self, engine: Engine) -> None:
        self._rows, self._entropies = [], []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        self._rows.append(output["embeddings"].detach())
        while sum(len(rows) for rows in self._rows) - len(self._rows[0]) >= self.max_rows:
            self._rows.pop(0)
        if "teacher_entropy" in output:
            self._entropies.append(output["teacher_entropy"].detach())

    def _report(self, engine: Engine) -> None:
        metrics = self.compute()
        engine.state.metrics.update(metrics)
        for message in self.warnings(metrics):
            logger.warning("epoch %d: %s", engine.state.epoch, message)

    def compute(self) -> dict[str, float]:
        """``embedding_collapse`` (and ``teacher_entropy``) of the rows collected this epoch."""
        metrics: dict[str, float] = {}
        if self._rows:
            embeddings = torch.cat(self._rows)[-self.max_rows :].float().cpu()
            if len(embeddings) >= 2:
                scores = compute_embedding_collapse(embeddings, include_indicators=["effective_rank"], reduction="none")
                metrics["embedding_collapse"] = float(scores["effective_rank_score"])
        if self._entropies:
            metrics["teacher_entropy"] = float(torch.stack(self._entropies).float().mean())
        return metrics

    def warnings(self, metrics: dict[str, float]) -> list[str]:
        """Human-readable collapse warnings for the metrics of one epoch (empty when healthy)."""
        messages = []
        collapse = metrics.get("embedding_collapse")
        if collapse is not None and collapse > self.collapse_threshold:
            messages.append(
                f"representation collapse: embedding collapse score {collapse:.3f} > {self.collapse_threshold} "
                "(the features span very few directions); lower the learning rate or the teacher temperature, or use more data"
            )
        entropy = metrics.get("teacher_entropy")
        if entropy is not None:
            if entropy < self.min_entropy:
                messages.append(f"teacher targets nearly one-hot (entropy {entropy:.4f} nats): collapse to one prototype")
            if self.out_dim and entropy > (1 - self.uniform_margin) * math.log(self.out_dim):
                messages.append(
                    f"teacher targets nearly uniform (entropy {entropy:.3f} of at most {math.log(self.out_dim):.3f} nats): "
                    "collapse to the uniform output"
                )
        return messages
