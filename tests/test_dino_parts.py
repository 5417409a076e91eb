"""DINO building blocks against hand-written formulas: loss and centre, head, multi-crop, schedules, EMA, freezing, clipping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from torch import nn

from s4mi_monai.handlers.schedules import ScheduleHandler
from s4mi_monai.handlers.teacher import EMATeacher, FreezeLastLayer
from s4mi_monai.losses.dino import DINOLoss
from s4mi_monai.networks.heads import DINOHead, MultiCropWrapper, ProjectionHead
from s4mi_monai.optim import (
    FIXED_KEYS,
    clip_gradients_per_parameter,
    cosine_schedule,
    linear_warmup_then_constant,
    param_groups_for_weight_decay,
)

N_GLOBAL, N_LOCAL, BATCH, K = 2, 3, 4, 8


def random_outputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn((N_GLOBAL + N_LOCAL) * BATCH, K, generator=generator)
    teacher = torch.randn(N_GLOBAL * BATCH, K, generator=generator)
    return student, teacher


def softmax_row(logits: list[float]) -> list[float]:
    exponentials = [math.exp(value - max(logits)) for value in logits]
    return [value / sum(exponentials) for value in exponentials]


def reference_dino_loss(
    student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float, teacher_temp: float
) -> tuple[float, list[tuple[int, int]]]:
    """The official formula with explicit loops over crop pairs, images and prototypes; also the pairs used."""
    n_crops = student.shape[0] // BATCH
    pairs = [(t, v) for t in range(N_GLOBAL) for v in range(n_crops) if v != t]
    total = 0.0
    for t, v in pairs:
        batch_sum = 0.0
        for b in range(BATCH):
            teacher_row = [(teacher[t * BATCH + b, k] - center[0, k]).item() / teacher_temp for k in range(K)]
            student_row = [student[v * BATCH + b, k].item() / student_temp for k in range(K)]
            teacher_probabilities = softmax_row(teacher_row)
            student_probabilities = softmax_row(student_row)
            batch_sum += -sum(p * math.log(q) for p, q in zip(teacher_probabilities, student_probabilities))
        total += batch_sum / BATCH
    return total / len(pairs), pairs


# --- DINO loss ---------------------------------------------------------------------------------------------------


def test_dino_loss_equals_loop_over_cross_crop_pairs_with_centre_and_temperatures():
    student, teacher = random_outputs()
    loss = DINOLoss(K, n_global_crops=N_GLOBAL, student_temp=0.1)
    center = torch.randn(1, K, generator=torch.Generator().manual_seed(1))
    loss.center.copy_(center)
    value = loss(student, teacher, teacher_temp=0.04)
    expected, pairs = reference_dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    assert len(pairs) == 2 * (N_GLOBAL + N_LOCAL) - 2 == 8
    assert (0, 0) not in pairs and (1, 1) not in pairs and (0, 1) in pairs and (1, 0) in pairs
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_dino_loss_depends_on_the_temperatures_given():
    student, teacher = random_outputs()
    sharp = DINOLoss(K)(student, teacher, teacher_temp=0.04)
    soft_teacher = DINOLoss(K)(student, teacher, teacher_temp=0.07)
    soft_student = DINOLoss(K, student_temp=0.2)(student, teacher, teacher_temp=0.04)
    expected, _ = reference_dino_loss(student, teacher, torch.zeros(1, K), student_temp=0.2, teacher_temp=0.04)
    assert soft_student.item() == pytest.approx(expected, rel=1e-5)
    assert len({round(sharp.item(), 6), round(soft_teacher.item(), 6), round(soft_student.item(), 6)}) == 3


def test_dino_loss_updates_centre_after_the_loss():
    student, teacher = random_outputs()
    loss = DINOLoss(K, center_momentum=0.9)
    previous_center = torch.full((1, K), 0.5)
    loss.center.copy_(previous_center)
    value = loss(student, teacher, teacher_temp=0.04)
    expected_loss, _ = reference_dino_loss(student, teacher, previous_center, 0.1, 0.04)
    assert value.item() == pytest.approx(expected_loss, rel=1e-5)
    expected_center = 0.9 * previous_center + 0.1 * teacher.mean(dim=0, keepdim=True)
    assert torch.allclose(loss.center, expected_center, atol=1e-6)
    assert "center" in loss.state_dict()


def test_dino_loss_gradient_reaches_the_student_only():
    student, teacher = random_outputs()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    DINOLoss(K)(student, teacher, teacher_temp=0.04).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_dino_loss_is_invariant_to_a_constant_added_to_student_logits():
    student, teacher = random_outputs()
    shift = torch.randn(student.shape[0], 1) * 10
    plain = DINOLoss(K)(student, teacher, teacher_temp=0.04)
    shifted = DINOLoss(K)(student + shift, teacher, teacher_temp=0.04)
    assert shifted.item() == pytest.approx(plain.item(), rel=1e-5)


def test_lucidrains_preset_is_the_two_term_cross_view_loss():
    generator = torch.Generator().manual_seed(3)
    local_1, local_2, global_1, global_2 = (torch.randn(BATCH, K, generator=generator) for _ in range(4))
    value = DINOLoss(K, student_temp=0.9)(torch.cat((local_1, local_2)), torch.cat((global_1, global_2)), 0.04)

    def lucidrains_term(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        student_probabilities = (student_logits / 0.9).softmax(dim=-1)
        teacher_probabilities = (teacher_logits / 0.04).softmax(dim=-1)
        return -(teacher_probabilities * torch.log(student_probabilities + 1e-20)).sum(dim=-1).mean()

    expected = (lucidrains_term(global_1, local_2) + lucidrains_term(global_2, local_1)) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dino_loss_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="multiple of n_global_crops"):
        DINOLoss(K)(torch.randn(10, K), torch.randn(3, K), 0.04)
    with pytest.raises(ValueError, match="multiple of the batch size"):
        DINOLoss(K)(torch.randn(10, K), torch.randn(8, K), 0.04)


def test_collapse_stats_of_uniform_and_one_hot_teachers():
    loss = DINOLoss(K)
    uniform = loss.collapse_stats(torch.zeros(BATCH, K), teacher_temp=0.04)
    assert uniform["entropy"] == pytest.approx(math.log(K))
    assert uniform["kl_to_uniform"] == pytest.approx(0.0, abs=1e-6)
    assert uniform["max_mean_probability"] == pytest.approx(1 / K)
    one_prototype = torch.zeros(BATCH, K)
    one_prototype[:, 2] = 5.0
    collapsed = loss.collapse_stats(one_prototype, teacher_temp=0.04)
    assert collapsed["entropy"] == pytest.approx(0.0, abs=1e-4)
    assert collapsed["kl_to_uniform"] == pytest.approx(math.log(K), abs=1e-4)
    assert collapsed["max_mean_probability"] == pytest.approx(1.0, abs=1e-4)
    assert loss.teacher_entropy(one_prototype, 1.0).item() > collapsed["entropy"]


# --- heads -------------------------------------------------------------------------------------------------------


def small_head(seed: int = 0, **kwargs) -> DINOHead:
    torch.manual_seed(seed)
    return DINOHead(in_dim=16, out_dim=32, hidden_dim=24, bottleneck_dim=8, **kwargs)


def test_dino_head_structure_shapes_and_init():
    head = small_head()
    linears = [module for module in head.mlp if isinstance(module, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(16, 24), (24, 24), (24, 8)]
    assert sum(isinstance(module, nn.GELU) for module in head.mlp) == 2
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in linears)
    assert torch.cat([layer.weight.flatten() for layer in linears]).std().item() == pytest.approx(0.02, rel=0.15)
    assert head(torch.randn(5, 16)).shape == (5, 32)
    with_bn = small_head(use_bn=True, n_layers=2)
    assert [type(module) for module in with_bn.mlp] == [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Linear]
    assert [type(module) for module in small_head(n_layers=1).mlp] == [nn.Linear]


def test_dino_head_last_layer_has_unit_rows_and_a_frozen_gain():
    head = small_head()
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.shape == (32, 1) and torch.all(gain == 1) and not gain.requires_grad
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.mul_(torch.rand(32, 1) * 5 + 0.1)
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(32), atol=1e-5)
    outputs = head(torch.randn(6, 16) * 100)
    assert outputs.abs().max() <= 1 + 1e-5
    outputs.sum().backward()
    assert gain.grad is None and head.last_layer.parametrizations.weight.original1.grad is not None
    assert small_head(norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_dino_head_state_dict_round_trips_with_weights_only(tmp_path: Path):
    head = small_head(seed=0)
    path = tmp_path / "head.pt"
    torch.save(head.state_dict(), path)
    restored = small_head(seed=1)
    features = torch.randn(3, 16)
    assert not torch.allclose(restored(features), head(features))
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(restored(features), head(features))
    assert not restored.last_layer.parametrizations.weight.original0.requires_grad


def test_dino_head_loads_official_weight_g_and_weight_v_keys():
    head = small_head(seed=0)
    direction = torch.randn(32, 8)
    official = {key: value for key, value in head.state_dict().items() if not key.startswith("last_layer")}
    official["last_layer.weight_g"] = torch.ones(32, 1)
    official["last_layer.weight_v"] = direction
    restored = small_head(seed=1)
    restored.load_state_dict(official)
    assert torch.allclose(restored.last_layer.weight, direction / direction.norm(dim=1, keepdim=True), atol=1e-6)


def test_projection_head_is_one_linear_layer():
    head = ProjectionHead(16)
    assert isinstance(head, nn.Linear) and head.out_features == 1000 and head.bias is not None
    assert head(torch.randn(2, 16)).shape == (2, 1000)


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(images))).flatten(1)


def test_multi_crop_wrapper_runs_backbone_once_per_resolution_group():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    wrapper = MultiCropWrapper(backbone, small_head())
    batch_sizes: list[int] = []
    backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(inputs[0].shape[0]))
    crops = [torch.randn(2, 3, 16, 16) for _ in range(2)] + [torch.randn(2, 3, 8, 8) for _ in range(3)]
    output = wrapper(crops)
    assert batch_sizes == [4, 6]
    one_by_one = torch.cat([wrapper.head(backbone(crop)) for crop in crops])
    assert output.shape == (10, 32)
    assert torch.allclose(output, one_by_one, atol=1e-6)
    batch_sizes.clear()
    wrapper([crops[0], crops[2], crops[1]])
    assert batch_sizes == [2, 2, 2]
    assert torch.allclose(wrapper(crops[0]), wrapper.head(backbone(crops[0])), atol=1e-6)


# --- schedules ---------------------------------------------------------------------------------------------------


def test_cosine_schedule_matches_official_formula():
    values = cosine_schedule(1.0, 0.1, epochs=5, iters_per_epoch=4, warmup_epochs=2, start_warmup=0.2)
    assert len(values) == 20
    assert values[0] == pytest.approx(0.2)
    assert values[3] == pytest.approx(0.2 + 3 * (1.0 - 0.2) / 7)
    assert values[7] == pytest.approx(1.0)
    assert values[8] == pytest.approx(1.0)
    assert values[14] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 6 / 12)))
    assert values[19] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 11 / 12)))
    momentum = cosine_schedule(0.996, 1.0, epochs=3, iters_per_epoch=2)
    assert momentum[0] == pytest.approx(0.996) and momentum[-1] == pytest.approx(1 - 0.002 * (1 + math.cos(math.pi * 5 / 6)))
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, epochs=2, iters_per_epoch=3, warmup_epochs=3)


def test_teacher_temperature_warms_up_per_epoch_then_stays():
    values = linear_warmup_then_constant(0.04, 0.07, warmup_epochs=3, epochs=5, iters_per_epoch=2)
    assert np.allclose(values, [0.04, 0.04, 0.055, 0.055, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07])
    assert np.allclose(linear_warmup_then_constant(0.04, 0.07, 0, 2, 3), 0.07)


def test_param_groups_for_weight_decay_split_weights_from_biases_and_norms():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    regularised, not_regularised = param_groups_for_weight_decay(model)
    assert [p is q for p, q in zip(regularised["params"], [model[0].weight, model[2].weight])] == [True, True]
    expected = [model[0].bias, model[1].weight, model[1].bias]
    assert len(not_regularised["params"]) == 3 and all(p is q for p, q in zip(not_regularised["params"], expected))
    assert not_regularised["weight_decay"] == 0.0 and not_regularised[FIXED_KEYS] == ["weight_decay"]


class Holder:
    scale = 0.0


def scheduled_run(handlers, optimizer, iterations: int, epochs: int, start_iteration: int = 0):
    """Run a tiny engine, recording (lr of each group, wd of each group, state.teacher_temp) per iteration."""
    records: list[tuple] = []

    def step(engine: Engine, batch: int) -> None:
        groups = optimizer.param_groups
        records.append(([g["lr"] for g in groups], [g["weight_decay"] for g in groups], getattr(engine.state, "teacher_temp", None)))

    engine = Engine(step)
    for handler in handlers:
        handler.attach(engine)
    if start_iteration:
        engine.load_state_dict({"iteration": start_iteration, "max_epochs": epochs, "epoch_length": iterations})
    engine.run(range(iterations), max_epochs=epochs)
    return records


def test_schedule_handler_sets_lr_wd_and_attributes_per_iteration():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(param_groups_for_weight_decay(model), lr=0.0)
    lr, wd, temp = np.arange(6) / 10, 1 + np.arange(6), 0.04 + np.arange(6) / 100
    holder = Holder()
    handlers = [
        ScheduleHandler(lr, optimizer=optimizer, param_key="lr"),
        ScheduleHandler(wd, optimizer=optimizer, param_key="weight_decay"),
        ScheduleHandler(temp, attribute="teacher_temp"),
        ScheduleHandler(temp * 2, target=holder, attribute="scale"),
    ]
    records = scheduled_run(handlers, optimizer, iterations=3, epochs=2)
    assert [r[0] for r in records] == [[v, v] for v in lr]
    assert [r[1] for r in records] == [[v, 0.0] for v in wd]
    assert [r[2] for r in records] == pytest.approx(list(temp))
    assert holder.scale == pytest.approx(temp[-1] * 2)


def test_schedule_handler_resumes_from_the_restored_iteration_and_checks_length():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.0)
    lr = np.arange(6) / 10
    records = scheduled_run([ScheduleHandler(lr, optimizer=optimizer, param_key="lr")], optimizer, 3, 2, start_iteration=3)
    assert [r[0][0] for r in records] == list(lr[3:])
    with pytest.raises(ValueError, match="schedule has 5 values"):
        scheduled_run([ScheduleHandler(lr[:5], optimizer=optimizer, param_key="lr")], optimizer, 3, 2)
    with pytest.raises(ValueError, match="either optimizer and param_key"):
        ScheduleHandler(lr, optimizer=optimizer)
    with pytest.raises(ValueError, match="either optimizer and param_key"):
        ScheduleHandler(lr, optimizer=optimizer, param_key="lr", attribute="lr")


# --- EMA teacher, last-layer freezing, clipping -----------------------------------------------------------------


def test_ema_update_formula_with_half_momentum():
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        student.bias.copy_(torch.tensor([10.0, -10.0]))
        teacher.weight.copy_(torch.tensor([[3.0, 0.0], [-1.0, 4.0]]))
        teacher.bias.zero_()
    ema = EMATeacher(student, teacher, momentum=0.5, initialize_from_student=False)
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    ema.update(0.5)
    assert torch.equal(teacher.weight, torch.tensor([[2.0, 1.0], [1.0, 4.0]]))
    assert torch.equal(teacher.bias, torch.tensor([5.0, -5.0]))


def test_ema_initialises_from_student_copies_buffers_and_unwraps_data_parallel():
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    ema = EMATeacher(nn.DataParallel(student), teacher, momentum=0.9)
    assert torch.equal(teacher[0].weight, student[0].weight)
    student[1].running_mean.fill_(7.0)
    ema.update(0.9)
    assert torch.all(teacher[1].running_mean == 7.0)
    kept = EMATeacher(student, teacher, momentum=0.9, copy_buffers=False, initialize_from_student=False)
    student[1].running_mean.fill_(1.0)
    kept.update(0.9)
    assert torch.all(teacher[1].running_mean == 7.0)
    with pytest.raises(ValueError, match="differ"):
        EMATeacher(student, nn.Linear(2, 3), momentum=0.9)


def test_ema_handler_uses_momentum_of_the_current_iteration():
    student, teacher = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    ema = EMATeacher(student, teacher, momentum=[0.5, 0.25, 1.0], initialize_from_student=False)
    with torch.no_grad():
        teacher.weight.zero_()

    def step(engine: Engine, batch: int) -> None:
        with torch.no_grad():
            student.weight.fill_(float(engine.state.iteration))

    engine = Engine(step)
    ema.attach(engine)
    seen: list[float] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: seen.append(teacher.weight.item()))
    engine.run(range(3), max_epochs=1)
    assert seen == pytest.approx([0.5, 0.25 * 0.5 + 0.75 * 2, 0.25 * 0.5 + 0.75 * 2])


def test_freeze_last_layer_cancels_its_gradients_in_the_first_epoch_only():
    torch.manual_seed(0)
    network = MultiCropWrapper(nn.Linear(4, 16), small_head())
    last_weight = network.head.last_layer.parametrizations.weight.original1
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, weight_decay=0.1)
    samples = [{"image": torch.randn(2, 4), "label": torch.randn(2, 32)} for _ in range(2)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=samples,
        network=network,
        optimizer=optimizer,
        loss_function=nn.MSELoss(),
        train_handlers=[FreezeLastLayer(network, epochs=1)],
    )
    observed: list[tuple[int, bool, bool]] = []
    trainer.add_event_handler(
        IterationEvents.BACKWARD_COMPLETED,
        lambda engine: observed.append((engine.state.epoch, last_weight.grad is None, network.head.mlp[0].weight.grad is None)),
    )
    before = last_weight.detach().clone()
    after_first_epoch: list[torch.Tensor] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: after_first_epoch.append(last_weight.detach().clone()))
    trainer.run()
    assert observed == [(1, True, False), (1, True, False), (2, False, False), (2, False, False)]
    assert torch.equal(after_first_epoch[0], before)
    assert not torch.equal(last_weight, before)
    with pytest.raises(ValueError, match="no parameter"):
        FreezeLastLayer(nn.Linear(2, 2))


def test_clip_gradients_per_parameter_clips_each_norm_separately():
    module = nn.Linear(2, 2)
    module.weight.grad = torch.tensor([[6.0, 0.0], [0.0, 0.0]])
    module.bias.grad = torch.tensor([0.6, 0.8])
    norms = clip_gradients_per_parameter(module, max_norm=3.0)
    assert norms.tolist() == pytest.approx([6.0, 1.0])
    assert module.weight.grad[0, 0].item() == pytest.approx(6.0 * 3.0 / (6.0 + 1e-6))
    assert torch.equal(module.bias.grad, torch.tensor([0.6, 0.8]))
    assert clip_gradients_per_parameter(nn.Linear(2, 2)).numel() == 0
