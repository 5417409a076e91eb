"""DINO self-distillation loss with the teacher centre (Caron et al. 2021, facebookresearch/dino).

The student learns to predict, from every crop, the sharpened and centred output of an EMA teacher on
the *other* global crops. The centre (a running mean of the teacher outputs) and the sharpening (a low
teacher temperature) together keep the teacher from collapsing to a constant or a uniform output;
:meth:`DINOLoss.collapse_stats` reports how close it is to either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student, over all cross-crop pairs.

    Inputs are the head outputs ``g`` (logits over K prototypes) of the crops of one batch of B images,
    stacked crop by crop in the order ``[g1, g2, l1..lN]`` (global crops first):
    ``student_output`` (n_crops·B, K) for all crops, ``teacher_output`` (n_global·B, K) for the global
    crops only. With

    - student ``P_s(v) = softmax(g_s(v) / τ_s)``, τ_s = ``student_temp``,
    - teacher ``P_t(t) = softmax((g_t(t) − c) / τ_t)``, τ_t = ``teacher_temp`` (per call, it is scheduled),
      computed without gradient,

    the loss is (official ``DINOLoss``)::

        L = (1/n_terms) Σ_{t ∈ globals} Σ_{v ≠ t} mean_batch[ −Σ_k P_t(t)_k · log P_s(v)_k ]

    where v runs over all student crops except the one at the teacher crop's position, so
    ``n_terms = n_global · n_crops − n_global`` (2·(N+2) − 2 in the official recipe).

    After the loss, the centre, a (1, K) buffer that starts at zero, moves towards the batch mean of the
    teacher outputs over all global crops (summed over ranks when ``torch.distributed`` is initialised)::

        c ← m · c + (1 − m) · mean_batch(g_t),   m = center_momentum

    so the loss of an iteration uses the centre of the previous ones. The centre is part of
    ``state_dict()`` and is checkpointed with the module.

    The lucidrains/vit-pytorch ``Dino`` loss is this loss with other inputs and temperatures, no separate
    class needed: the student sees only the two local crops and the teacher only the two global crops,
    ``L = ½[H(P_t(g1), P_s(l2)) + H(P_t(g2), P_s(l1))]``. Passing ``student_output = cat(g_s(l1), g_s(l2))``
    and ``teacher_output = cat(g_t(g1), g_t(g2))`` with ``n_global_crops=2`` skips exactly the pairs
    (g1, l1) and (g2, l2), leaving those two terms (n_terms = 2); use ``student_temp=0.9`` and a constant
    ``teacher_temp=0.04``. Its centre update (m = 0.9, mean over both teacher crops) is the same. The only
    difference is numerical: lucidrains takes ``log(softmax + 1e-20)`` instead of ``log_softmax``.
    """

    def __init__(self, out_dim: int, n_global_crops: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if n_global_crops < 1:
            raise ValueError(f"n_global_crops must be at least 1, got {n_global_crops}")
        self.out_dim = out_dim
        self.n_global_crops = n_global_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        student_crops = self._split_student_crops(student_output, teacher_output)
        teacher_crops = self.teacher_probabilities(teacher_output, teacher_temp).chunk(self.n_global_crops)
        student_log_probabilities = [F.log_softmax(crop / self.student_temp, dim=-1) for crop in student_crops]
        cross_entropies = [
            torch.sum(-teacher_probabilities * log_probabilities, dim=-1).mean()
            for teacher_index, teacher_probabilities in enumerate(teacher_crops)
            for student_index, log_probabilities in enumerate(student_log_probabilities)
            if student_index != teacher_index
        ]
        self.update_center(teacher_output)
        return torch.stack(cross_entropies).mean()

    def _split_student_crops(self, student_output: torch.Tensor, teacher_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if teacher_output.shape[0] % self.n_global_crops != 0:
            raise ValueError(f"teacher_output has {teacher_output.shape[0]} rows, not a multiple of n_global_crops={self.n_global_crops}")
        batch_size = teacher_output.shape[0] // self.n_global_crops
        if batch_size == 0 or student_output.shape[0] % batch_size != 0:
            raise ValueError(
                f"student_output has {student_output.shape[0]} rows, not a multiple of the batch size {batch_size} "
                f"implied by teacher_output"
            )
        n_crops = student_output.shape[0] // batch_size
        if n_crops < 2:
            raise ValueError("the student needs at least 2 crops, so that some crop differs from each teacher crop")
        return student_output.chunk(n_crops)

    def teacher_probabilities(self, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``P_t = softmax((g_t − c) / τ_t)`` with the current centre, detached: the targets of the loss."""
        return F.softmax((teacher_output.detach() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """``c ← m c + (1 − m) mean_batch(g_t)``, the mean taken over all ranks of a distributed run."""
        outputs = teacher_output.detach().to(self.center.dtype)
        batch_sum = outputs.sum(dim=0, keepdim=True)
        count = torch.tensor(float(outputs.shape[0]), device=outputs.device, dtype=outputs.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1.0 - self.center_momentum)

    @torch.no_grad()
    def teacher_entropy(self, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Mean over rows of ``H(P_t) = −Σ_k P_t,k log P_t,k``: 0 for one-hot targets, log K for uniform ones."""
        probabilities = self.teacher_probabilities(teacher_output, teacher_temp)
        return torch.special.entr(probabilities).sum(dim=-1).mean()

    @torch.no_grad()
    def collapse_stats(self, teacher_output: torch.Tensor, teacher_temp: float) -> dict[str, float]:
        """Collapse indicators of the teacher targets ``P_t`` under the current centre, for logging.

        - ``entropy``: :meth:`teacher_entropy`, mean ``H(P_t)``;
        - ``kl_to_uniform``: mean ``KL(P_t ‖ U) = log K − H(P_t)``; near 0 means collapse to the uniform
          output (too much centring);
        - ``max_mean_probability``: ``max_k mean_batch P_t,k``; near 1 means every image goes to the same
          prototype (collapse to one dimension, too much sharpening).
        """
        entropy = float(self.teacher_entropy(teacher_output, teacher_temp))
        mean_probabilities = self.teacher_probabilities(teacher_output, teacher_temp).mean(dim=0)
        return {
            "entropy": entropy,
            "kl_to_uniform": math.log(teacher_output.shape[-1]) - entropy,
            "max_mean_probability": float(mean_probabilities.max()),
        }
