"""Classification losses against direct computations, and inverse-frequency weights by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from s4mi_monai.losses import ClassificationLoss, classification_loss, inverse_frequency_weights

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [-0.5, 0.2, 0.1], [1.5, -2.0, 0.0]])
INDICES = torch.tensor([0, 2, 1, 1])
MULTI_HOT = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])


def direct_ce(logits: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> float:
    """sum_i w_{y_i} (-log softmax(z_i)_{y_i}) / sum_i w_{y_i}, written out."""
    total = norm = 0.0
    for z, y in zip(logits.tolist(), indices.tolist()):
        log_p = z[y] - math.log(sum(math.exp(v) for v in z))
        total += -weights[y].item() * log_p
        norm += weights[y].item()
    return total / norm


def direct_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float, weights: torch.Tensor) -> float:
    """Mean over items and classes of -w_c (1 - p_t)^gamma log p_t, written out."""
    terms = []
    for z_row, y_row in zip(logits.tolist(), targets.tolist()):
        for c, (z, y) in enumerate(zip(z_row, y_row)):
            p = 1 / (1 + math.exp(-z))
            p_t = p if y == 1 else 1 - p
            terms.append(-weights[c].item() * (1 - p_t) ** gamma * math.log(p_t))
    return sum(terms) / len(terms)


def test_inverse_frequency_weights_by_hand():
    # counts (3, 1): raw N / (C n_c) = (4/6, 4/2) = (2/3, 2), mean 4/3 -> (0.5, 1.5)
    assert inverse_frequency_weights([0, 0, 0, 1], 2).tolist() == pytest.approx([0.5, 1.5])
    assert inverse_frequency_weights(np.array([[0], [0], [0], [1]]), 2).tolist() == pytest.approx([0.5, 1.5])
    # positives per label (2, 1, 2) -> raw proportional to (1/2, 1, 1/2), mean 2/3 -> (0.75, 1.5, 0.75)
    weights = inverse_frequency_weights(MULTI_HOT.numpy(), 3, multi_label=True)
    assert weights.dtype == torch.float32 and weights.tolist() == pytest.approx([0.75, 1.5, 0.75])
    assert inverse_frequency_weights([2, 0, 1], 3).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_a_class_without_items_has_no_weight():
    with pytest.raises(ValueError, match=r"\[2\]"):
        inverse_frequency_weights([0, 1, 1, 0], 3)
    with pytest.raises(ValueError, match=r"\[1\] have no positive"):
        inverse_frequency_weights([[1, 0], [1, 0]], 2, multi_label=True)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        inverse_frequency_weights([0, 1, 3], 3)
    with pytest.raises(ValueError, match="whole class indices"):
        inverse_frequency_weights([0, 1, 1.5], 3)


def test_cross_entropy_with_and_without_weights():
    ones = torch.ones(3)
    assert classification_loss(False)(LOGITS, INDICES).item() == pytest.approx(direct_ce(LOGITS, INDICES, ones), rel=1e-6)
    weights = torch.tensor([0.5, 2.0, 1.0])
    weighted = classification_loss(False, "ce", weights)(LOGITS, INDICES).item()
    assert weighted == pytest.approx(direct_ce(LOGITS, INDICES, weights), rel=1e-6)
    assert weighted != pytest.approx(direct_ce(LOGITS, INDICES, ones), rel=1e-3)


@pytest.mark.parametrize(
    "targets",
    [INDICES, INDICES[:, None], INDICES.float(), INDICES[:, None].int(), MetaTensor(INDICES[:, None].float()), INDICES.tolist()],
    ids=["(B,)", "(B,1)", "float", "(B,1) int32", "MetaTensor", "list"],
)
def test_multi_class_targets_in_every_shape_give_the_same_loss(targets):
    expected = direct_ce(LOGITS, INDICES, torch.ones(3))
    loss = classification_loss(False)(LOGITS, targets)
    assert type(loss) is torch.Tensor and loss.item() == pytest.approx(expected, rel=1e-6)


def test_bad_targets_are_named():
    with pytest.raises(ValueError, match="class indices"):
        classification_loss(False)(LOGITS, MULTI_HOT)
    with pytest.raises(ValueError, match="whole class indices"):
        classification_loss(False)(LOGITS, INDICES + 0.5)
    with pytest.raises(ValueError, match="logits' shape"):
        classification_loss(True)(LOGITS, INDICES)
    with pytest.raises(ValueError, match="2 class weights"):
        classification_loss(False, class_weights=[1.0, 1.0])(LOGITS, INDICES)


def test_binary_cross_entropy_with_per_label_weights():
    weights = torch.tensor([0.5, 2.0, 1.0])
    unweighted = direct_focal(LOGITS, MULTI_HOT, 0.0, torch.ones(3))
    for targets in (MULTI_HOT, MULTI_HOT.float(), MULTI_HOT.bool()):
        assert classification_loss(True)(LOGITS, targets).item() == pytest.approx(unweighted, rel=1e-6)
        weighted = classification_loss(True, "bce", weights)(LOGITS, targets).item()
        assert weighted == pytest.approx(direct_focal(LOGITS, MULTI_HOT, 0.0, weights), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_focal_loss_formula(gamma):
    weights = torch.tensor([0.5, 2.0, 1.0])
    loss = classification_loss(True, "focal", weights, focal_gamma=gamma)(LOGITS, MULTI_HOT)
    assert loss.item() == pytest.approx(direct_focal(LOGITS, MULTI_HOT, gamma, weights), rel=1e-6)


def test_focal_with_gamma_zero_is_bce_and_focuses_on_hard_examples_otherwise():
    bce = classification_loss(True, "bce")(LOGITS, MULTI_HOT)
    assert torch.allclose(classification_loss(True, "focal", focal_gamma=0.0)(LOGITS, MULTI_HOT), bce)
    assert classification_loss(True, "focal", focal_gamma=2.0)(LOGITS, MULTI_HOT) < bce


def test_sigmoid_losses_on_a_multi_class_head_use_one_hot_targets():
    one_hot = torch.nn.functional.one_hot(INDICES, 3)
    for kind in ("bce", "focal"):
        expected = classification_loss(True, kind)(LOGITS, one_hot)
        assert torch.allclose(classification_loss(False, kind)(LOGITS, INDICES[:, None]), expected)


def test_auto_kind_and_invalid_configurations():
    assert classification_loss(False).kind == "ce" and classification_loss(True).kind == "bce"
    with pytest.raises(ValueError, match="multi-label"):
        classification_loss(True, "ce")
    with pytest.raises(ValueError, match="unknown classification loss"):
        classification_loss(False, "hinge")
    with pytest.raises(ValueError, match="non-negative"):
        classification_loss(False, class_weights=[1.0, -1.0])


def test_weights_follow_the_module_and_the_loss_backpropagates():
    loss_fn = classification_loss(False, "ce", inverse_frequency_weights([0, 0, 1, 2], 3)).to(torch.float64)
    assert isinstance(loss_fn, ClassificationLoss) and "class_weights" in dict(loss_fn.named_buffers())
    logits = LOGITS.double().requires_grad_()
    loss_fn(logits, INDICES).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
