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

__all__ = ["CollapseMonitor", "RepresentationCollapse", "output_similarity"]


class RepresentationCollapse(RuntimeError):
    """Raised by :class:`CollapseMonitor` with ``on_constant_collapse="stop"`` when every image gets the same output."""


def output_similarity(outputs: torch.Tensor) -> dict[str, float]:
    """Constant-collapse measures of outputs ``z`` (N, D), N ≥ 2, after L2 normalisation ``ẑ = z / ‖z‖``.

    - ``output_cosine``: mean pairwise cosine ``(‖Σ_n ẑ_n‖² − N) / (N (N − 1))`` over pairs n ≠ m; 1 when every
      image gets the same output direction (constant collapse), about 0 for outputs spread over the sphere.
    - ``output_spread``: ``√D · mean_d std_n ẑ_nd`` (lightly's ``std_of_l2_normalized``, scaled); 0 for constant
      outputs, about 1 for outputs spread uniformly over the sphere.

    Unlike the effective rank, neither centres the outputs first, so collapse to one constant output shows.
    """
    normalized = torch.nn.functional.normalize(outputs.detach().float(), dim=1)
    n, dim = normalized.shape
    if n < 2:
        raise ValueError(f"output_similarity needs at least 2 rows, got {n}")
    total = normalized.sum(dim=0)
    cosine = (total.dot(total) - n) / (n * (n - 1))
    spread = normalized.std(dim=0).mean() * dim**0.5
    return {"output_cosine": float(cosine), "output_spread": float(spread)}


class CollapseMonitor:
    """Per epoch: how collapsed the pretraining's representations are, for :class:`EpochHistory` and the log.

    Reads ``engine.state.output`` every iteration, keeping the last ``max_rows`` rows:

    - ``embeddings`` (B, D): MONAI's effective-rank score ``embedding_collapse`` = ``1 − erank / min(N − 1, D)``
      with ``erank = exp(H(σ / Σσ))`` over the singular values σ of the *centred* embeddings: dimensional collapse
      (0: every direction used; 1: all on one line). Centring hides collapse to one constant output, hence:
    - ``outputs`` (B, K; the embeddings when absent): :func:`output_similarity` of the L2-normalised outputs,
      ``output_cosine`` and ``output_spread``, which see constant collapse;
    - ``teacher_entropy`` (DINO; the trainer computes it before the centre update, at a fixed temperature) with
      ``loss``: the epoch's mean entropy next to ``log_k`` = log K and ``loss_minus_log_k`` (cross-entropy of the
      student against the teacher minus its value for uniform outputs; ≥ 0 means no better than uniform).

    Warnings: dimensional collapse (score above ``collapse_threshold``); constant collapse (``output_cosine``
    above ``cosine_threshold``; with ``on_constant_collapse="stop"`` the run stops with
    :class:`RepresentationCollapse` instead of spending its budget on a constant network); teacher targets
    (nearly) one-hot (entropy below ``min_entropy``) or (nearly) uniform (above ``(1 − uniform_margin) · log K``,
    K = ``out_dim``), the two failures DINO's centring and sharpening balance.
    """

    def __init__(
        self,
        max_rows: int = 1024,
        collapse_threshold: float = 0.9,
        out_dim: int | None = None,
        min_entropy: float = 0.05,
        uniform_margin: float = 0.02,
        cosine_threshold: float = 0.99,
        on_constant_collapse: str = "warn",
    ) -> None:
        if on_constant_collapse not in ("warn", "stop"):
            raise ValueError(f"on_constant_collapse must be 'warn' or 'stop', got {on_constant_collapse!r}")
        self.max_rows = max_rows
        self.collapse_threshold = collapse_threshold
        self.out_dim = out_dim
        self.min_entropy = min_entropy
        self.uniform_margin = uniform_margin
        self.cosine_threshold = cosine_threshold
        self.on_constant_collapse = on_constant_collapse
        self._reset(None)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _reset(self, engine: Engine | None) -> None:
        self._rows: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self._entropies: list[torch.Tensor] = []
        self._losses: list[torch.Tensor] = []

    def _keep_last(self, rows: list[torch.Tensor], new: torch.Tensor) -> None:
        rows.append(new.detach())
        while sum(len(batch) for batch in rows) - len(rows[0]) >= self.max_rows:
            rows.pop(0)

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        self._keep_last(self._rows, output["embeddings"])
        if "outputs" in output:
            self._keep_last(self._outputs, output["outputs"])
        if "teacher_entropy" in output:
            self._entropies.append(output["teacher_entropy"].detach())
            self._losses.append(torch.as_tensor(output["loss"]).detach())

    def _report(self, engine: Engine) -> None:
        metrics = self.compute()
        engine.state.metrics.update(metrics)
        for message in self.warnings(metrics):
            logger.warning("epoch %d: %s", engine.state.epoch, message)
        if self.on_constant_collapse == "stop" and self.constant_collapse(metrics):
            raise RepresentationCollapse(
                f"epoch {engine.state.epoch}: every image gets the same output (mean pairwise cosine "
                f"{metrics['output_cosine']:.4f} > {self.cosine_threshold}); stopped. Start from pretrained weights, "
                "lower the learning rate, or enable the method's stabiliser"
            )

    def _rows_of(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(rows)[-self.max_rows :].float().cpu()

    def compute(self) -> dict[str, float]:
        """The collapse measures of the rows collected this epoch (see the class docstring)."""
        metrics: dict[str, float] = {}
        if self._rows:
            embeddings = self._rows_of(self._rows)
            if len(embeddings) >= 2:
                scores = compute_embedding_collapse(embeddings, include_indicators=["effective_rank"], reduction="none")
                metrics["embedding_collapse"] = float(scores["effective_rank_score"])
        outputs = self._rows_of(self._outputs or self._rows) if (self._outputs or self._rows) else None
        if outputs is not None and len(outputs) >= 2:
            metrics.update(output_similarity(outputs))
        if self._entropies:
            metrics["teacher_entropy"] = float(torch.stack(self._entropies).float().mean())
            if self.out_dim:
                metrics["log_k"] = math.log(self.out_dim)
                metrics["loss_minus_log_k"] = float(torch.stack(self._losses).float().mean()) - metrics["log_k"]
        return metrics

    def constant_collapse(self, metrics: dict[str, float]) -> bool:
        """Whether every image gets (nearly) the same output direction."""
        return metrics.get("output_cosine", 0.0) > self.cosine_threshold

    def warnings(self, metrics: dict[str, float]) -> list[str]:
        """Human-readable collapse warnings for the metrics of one epoch (empty when healthy)."""
        messages = []
        collapse = metrics.get("embedding_collapse")
        if collapse is not None and collapse > self.collapse_threshold:
            messages.append(
                f"dimensional collapse: embedding collapse score {collapse:.3f} > {self.collapse_threshold} "
                "(the features span very few directions); lower the learning rate or the teacher temperature, or use more data"
            )
        if self.constant_collapse(metrics):
            messages.append(
                f"constant collapse: every image gets nearly the same output (mean pairwise cosine {metrics['output_cosine']:.4f} "
                f"> {self.cosine_threshold}, spread {metrics.get('output_spread', float('nan')):.4f}); the network has stopped "
                "telling images apart"
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
