"""DINO and CASS trainers, collapse monitoring, batch normalisation, the benchmark and the lucidrains preset."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.transforms import NormalizeIntensity
from torch import nn
from torch.utils.data import DataLoader

from s4mi_monai.bundle import branch_parameters, cass_loss_function, cass_predictors
from s4mi_monai.engines import CASSTrainer, DINOTrainer, benchmark
from s4mi_monai.handlers import CollapseMonitor, EMATeacher, FreezeLastLayer, RepresentationCollapse, ScheduleHandler, output_similarity
from s4mi_monai.losses import DINOLoss, cass_loss, cass_variance_loss, spread_penalties
from s4mi_monai.networks import DINOHead, MultiCropWrapper, ProjectionHead, build_backbone
from s4mi_monai.transforms import MultiCropBatch, NormalizeBatch, RedChannelNormalize

REPO = Path(__file__).resolve().parents[1]


class TinyCNN(nn.Module):
    """A small backbone with BatchNorm, ``(B, 3, H, W) -> (B, 16)``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed_dim = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _loader(n_images: int = 16, size: int = 40, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)} for _ in range(n_images)]
    return DataLoader(images, batch_size=batch_size)


def _dino_trainer(max_epochs: int = 1, momentum: float = 0.996, lr: float = 1e-3, out_dim: int = 64) -> DINOTrainer:
    torch.manual_seed(0)
    student = MultiCropWrapper(TinyCNN(), DINOHead(16, out_dim, hidden_dim=32, bottleneck_dim=16))
    teacher = copy.deepcopy(student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    return DINOTrainer(
        "cpu",
        max_epochs,
        _loader(),
        student,
        optimizer,
        DINOLoss(out_dim),
        views=MultiCropBatch("dino", 32, 16, 2),
        normalize=NormalizeBatch(),
        teacher=teacher,
        train_handlers=[EMATeacher(student, teacher, momentum), FreezeLastLayer(student), CollapseMonitor(out_dim=out_dim)],
        generator=torch.Generator().manual_seed(0),
    )


def _cass_trainer(max_epochs: int = 1, lr: float = 1e-3, predictors: nn.ModuleDict | None = None, loss_function=cass_loss) -> CASSTrainer:
    torch.manual_seed(0)
    cnn = MultiCropWrapper(TinyCNN(), ProjectionHead(16, 8))
    vit = MultiCropWrapper(build_backbone("vit_ti16", 32), ProjectionHead(192, 8))
    predictors = predictors if predictors is not None else nn.ModuleDict()
    return CASSTrainer(
        "cpu",
        max_epochs,
        _loader(),
        cnn,
        torch.optim.Adam(branch_parameters(cnn, predictors, "cnn"), lr=lr),
        views=MultiCropBatch("cass", 32),
        normalize=NormalizeBatch(),
        transformer=vit,
        transformer_optimizer=torch.optim.Adam(branch_parameters(vit, predictors, "transformer"), lr=lr),
        predictors=predictors,
        loss_function=loss_function,
        train_handlers=[CollapseMonitor()],
        generator=torch.Generator().manual_seed(0),
    )


def _losses(trainer) -> list[float]:
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(float(engine.state.output["loss"])))
    trainer.run()
    return losses


def test_dino_pretraining_student_approaches_the_teacher():
    """The part of the DINO loss the student controls, KL(P_t || P_s) = loss - H(P_t), falls in a short run."""
    trainer = _dino_trainer(max_epochs=15)
    gaps: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: gaps.append(float(engine.state.output["loss"] - engine.state.output["teacher_entropy"]))
    )
    trainer.run()
    assert sum(gaps[-5:]) / 5 < 0.5 * sum(gaps[:5]) / 5, gaps


def test_dino_trainer_updates_teacher_by_ema_and_reports_collapse_measures():
    trainer = _dino_trainer(max_epochs=2, momentum=0.5)
    teacher_before = [p.detach().clone() for p in trainer.teacher.parameters()]
    trainer.run()
    moved = [not torch.equal(before, after) for before, after in zip(teacher_before, trainer.teacher.parameters())]
    assert any(moved), "the EMA handler moves the teacher towards the student"
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    metrics = trainer.state.metrics
    assert 0 <= metrics["embedding_collapse"] <= 1
    assert 0 < metrics["teacher_entropy"] <= math.log(64) + 1e-4


def test_dino_trainer_reads_the_scheduled_teacher_temperature():
    trainer = _dino_trainer(max_epochs=1)
    seen: list[float] = []
    ScheduleHandler([0.04, 0.07], attribute="teacher_temp").attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: seen.append(engine.state.teacher_temp))
    trainer.run()
    assert seen == [0.04, 0.07]


def test_dino_student_sees_only_local_crops_in_the_lucidrains_variant():
    trainer = _dino_trainer()
    trainer.student_sees_globals = False
    shapes: list[tuple[int, ...]] = []
    trainer.network.backbone.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    trainer.run()
    assert set(shapes) == {(16, 3, 16, 16)}, "2 local crops of 8 images, no global crop"


def test_cass_trainer_loss_falls_and_both_networks_learn():
    trainer = _cass_trainer(max_epochs=6)
    cnn_before = [p.detach().clone() for p in trainer.network.parameters()]
    vit_before = [p.detach().clone() for p in trainer.transformer.parameters()]
    losses = _losses(trainer)
    assert losses[-1] < losses[0] / 2, losses
    assert any(not torch.equal(b, a) for b, a in zip(cnn_before, trainer.network.parameters()))
    assert any(not torch.equal(b, a) for b, a in zip(vit_before, trainer.transformer.parameters()))


def test_cass_predictor_stabiliser_trains_the_predictors_with_their_branches():
    predictors = cass_predictors("predictor", 8)
    assert set(predictors) == {"cnn", "transformer"} and len(cass_predictors("none", 8)) == 0
    trainer = _cass_trainer(max_epochs=2, predictors=predictors)
    before = {name: p.detach().clone() for name, p in predictors.named_parameters()}
    losses = _losses(trainer)
    assert all(0 <= loss <= 4 for loss in losses)
    assert all(not torch.equal(before[name], p) for name, p in predictors.named_parameters() if name.endswith("weight"))
    with pytest.raises(ValueError, match="--stabiliser must be one of"):
        cass_predictors("byol", 8)
    with pytest.raises(ValueError, match="needs a 'cnn' and a 'transformer' predictor"):
        _cass_trainer(predictors=nn.ModuleDict({"cnn": nn.Linear(8, 8)}))


def test_spread_penalties_are_one_for_a_constant_output_and_near_zero_for_spread_outputs():
    constant = torch.ones(16, 8) * torch.linspace(1, 2, 8)
    variance, covariance = spread_penalties(constant)
    assert variance == pytest.approx(0.99, abs=1e-3) and covariance == pytest.approx(0, abs=1e-6)
    variance, covariance = spread_penalties(torch.randn(4096, 8, generator=torch.Generator().manual_seed(0)))
    assert variance < 0.05 and covariance < 0.1
    with pytest.raises(ValueError, match="B >= 2"):
        spread_penalties(torch.ones(1, 8))


def _agreement_training(loss_function, steps: int = 150) -> tuple[float, float]:
    """Two small networks of different design pulled together on noisy copies of 64 inputs, as CASS does; returns
    the mean pairwise cosine between different inputs' outputs (1: constant) and the mean cosine of the two
    networks' outputs for the same input (1: they agree)."""
    torch.manual_seed(0)
    inputs = torch.randn(64, 16)
    first = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    second = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    optimizer = torch.optim.Adam([*first.parameters(), *second.parameters()], lr=1e-2)
    for _ in range(steps):
        view = inputs + 0.1 * torch.randn_like(inputs)
        loss = loss_function(first(view), second(view))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z_first, z_second = nn.functional.normalize(first(inputs), dim=1), nn.functional.normalize(second(inputs), dim=1)
        pairwise = (z_first @ z_first.T)[~torch.eye(64, dtype=torch.bool)].mean()
        return float(pairwise), float((z_first * z_second).sum(dim=1).mean())


def test_the_variance_stabiliser_keeps_images_apart_where_plain_cass_drifts_to_one_output():
    plain_pairwise, plain_agreement = _agreement_training(cass_loss)
    pairwise, agreement = _agreement_training(cass_variance_loss)
    assert plain_pairwise > 0.85 and plain_agreement > 0.99  # measured 0.897 and 0.9999: heading for a constant
    assert pairwise < 0.1 and agreement > 0.99  # measured -0.016 and 0.998: the networks agree, the images stay apart


def test_cass_variance_stabiliser_is_a_loss_of_the_trainer_without_predictors():
    assert cass_loss_function("variance") is cass_variance_loss and cass_loss_function("none") is cass_loss
    assert cass_loss_function("predictor") is cass_loss and len(cass_predictors("variance", 8)) == 0
    with pytest.raises(ValueError, match="--stabiliser must be one of"):
        cass_loss_function("byol")
    plain, stabilised = _losses(_cass_trainer()), _losses(_cass_trainer(loss_function=cass_variance_loss))
    assert stabilised[0] > plain[0]  # the same first step, plus the spread terms of two near-constant outputs


def test_cass_trainer_zeroes_gradients_between_steps():
    """The reference never zeroed them; here a stale gradient must not leak into the next step."""
    trainer = _cass_trainer(lr=0.0)  # lr 0: the weights stay put, so a repeated step must give the same gradients
    batch = next(iter(trainer.data_loader))
    parameters = list(trainer.network.parameters()) + list(trainer.transformer.parameters())
    trainer.generator.manual_seed(1)
    trainer._iteration(trainer, batch)
    first = [None if p.grad is None else p.grad.clone() for p in parameters]
    unused = [name for name, p in trainer.transformer.named_parameters() if p.grad is None]
    assert all(".norm_cross_attn." in name for name in unused), "every used parameter of both networks gets a gradient"
    assert all(p.grad is not None for p in trainer.network.parameters())
    for parameter in parameters:
        parameter.grad = torch.full_like(parameter, 1e6)
    trainer.generator.manual_seed(1)
    trainer._iteration(trainer, batch)
    for parameter, expected in zip(parameters, first):
        if expected is None:
            assert parameter.grad is None
        else:
            torch.testing.assert_close(parameter.grad, expected)


def _monitor_on(rows: torch.Tensor, **kwargs) -> tuple[CollapseMonitor, dict[str, float]]:
    monitor = CollapseMonitor(out_dim=64, **kwargs)
    monitor._rows = [rows]
    return monitor, monitor.compute()


def test_collapse_monitor_on_healthy_embeddings_warns_of_nothing():
    monitor, healthy = _monitor_on(torch.randn(256, 32, generator=torch.Generator().manual_seed(0)))
    assert healthy["embedding_collapse"] < 0.3
    assert abs(healthy["output_cosine"]) < 0.05 and 0.9 < healthy["output_spread"] < 1.1
    assert monitor.warnings(healthy) == []


def test_collapse_monitor_sees_dimensional_collapse():
    direction = torch.randn(1, 32, generator=torch.Generator().manual_seed(1))
    monitor, collapsed = _monitor_on(torch.linspace(-1, 1, 256).unsqueeze(1) * direction)
    assert collapsed["embedding_collapse"] > 0.95
    assert abs(collapsed["output_cosine"]) < 0.05  # ±direction: not one constant output
    assert [message.split(":")[0] for message in monitor.warnings(collapsed)] == ["dimensional collapse"]


def test_collapse_monitor_sees_collapse_to_one_constant_output_that_the_effective_rank_misses():
    """The review's case: every image's output is the same vector (pairwise cosine 1.000) up to tiny noise;
    centring leaves only the isotropic noise, so the effective-rank score looks healthy."""
    generator = torch.Generator().manual_seed(2)
    constant = torch.randn(1, 32, generator=generator) + 1e-3 * torch.randn(256, 32, generator=generator)
    monitor, collapsed = _monitor_on(constant)
    assert collapsed["embedding_collapse"] < 0.9  # the old monitor's only measure: no warning
    assert collapsed["output_cosine"] > 0.999 and collapsed["output_spread"] < 0.01
    assert [message.split(":")[0] for message in monitor.warnings(collapsed)] == ["constant collapse"]


def test_collapse_monitor_can_stop_a_run_whose_outputs_are_constant():
    generator = torch.Generator().manual_seed(3)
    constant = torch.randn(1, 8, generator=generator) + 1e-4 * torch.randn(16, 8, generator=generator)
    trainer = _cass_trainer()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: engine.state.output.update(embeddings=constant[: len(engine.state.output["embeddings"])]))
    CollapseMonitor(on_constant_collapse="stop").attach(trainer)  # after the line above: it reads the constant outputs
    with pytest.raises(RepresentationCollapse, match="epoch 1: every image gets the same output"):
        trainer.run()
    with pytest.raises(ValueError, match="on_constant_collapse must be"):
        CollapseMonitor(on_constant_collapse="ignore")


def test_output_similarity_matches_the_direct_computation():
    outputs = torch.randn(10, 6, generator=torch.Generator().manual_seed(4)) + 0.5
    normalized = torch.nn.functional.normalize(outputs, dim=1)
    cosines = normalized @ normalized.T
    expected_cosine = (cosines.sum() - cosines.diagonal().sum()) / (10 * 9)
    measures = output_similarity(outputs)
    assert measures["output_cosine"] == pytest.approx(float(expected_cosine), abs=1e-6)
    assert measures["output_spread"] == pytest.approx(float(normalized.std(dim=0).mean() * math.sqrt(6)), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        output_similarity(outputs[:1])


def test_teacher_entropy_warnings_and_the_uniform_reference():
    monitor = CollapseMonitor(out_dim=64)
    assert any("one-hot" in message for message in monitor.warnings({"teacher_entropy": 0.001}))
    assert any("uniform" in message for message in monitor.warnings({"teacher_entropy": math.log(64)}))
    assert monitor.warnings({"teacher_entropy": 2.0}) == []


def test_dino_teacher_entropy_is_that_of_the_targets_used_at_a_fixed_temperature():
    """Logged before the centre update (the targets this step trained on) and at ``entropy_temp`` whatever the
    schedule says, so a temperature warm-up alone cannot cross the 'near uniform' line."""
    trainer = _dino_trainer(max_epochs=1)
    trainer.entropy_temp = 0.04
    loss, original = trainer.loss_function, trainer.loss_function.teacher_entropy
    calls: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    centres: list[torch.Tensor] = []
    logged: list[torch.Tensor] = []

    def recording(teacher_output: torch.Tensor, temperature: float) -> torch.Tensor:
        calls.append((temperature, loss.center.clone(), original(teacher_output, temperature)))
        return calls[-1][2]

    def schedule_far_from_the_monitor(engine) -> None:
        engine.state.teacher_temp = 0.5
        centres.append(loss.center.clone())

    loss.teacher_entropy = recording
    trainer.add_event_handler(Events.ITERATION_STARTED, schedule_far_from_the_monitor)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: logged.append(engine.state.output["teacher_entropy"]))
    trainer.run()
    assert [temperature for temperature, _, _ in calls] == [0.04] * len(centres) and len(centres) == 2
    for (_, centre, entropy), before, reported in zip(calls, centres, logged):
        torch.testing.assert_close(centre, before)  # the centre of this step's targets, not the updated one
        assert reported is entropy
    assert not torch.equal(loss.center, centres[0])
    metrics = trainer.state.metrics
    assert metrics["log_k"] == pytest.approx(math.log(64))
    assert metrics["loss_minus_log_k"] == pytest.approx(metrics["loss_minus_log_k"]) and metrics["teacher_entropy"] > 0


def test_normalize_batch_matches_the_fine_tuning_transforms():
    images = torch.rand(2, 3, 8, 8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    dictionary_path = NormalizeIntensity(subtrahend=mean, divisor=std, channel_wise=True)
    for red in (False, True):
        expected = torch.stack(
            [torch.as_tensor(dictionary_path(RedChannelNormalize()(image) if red else image.clone())) for image in images]
        )
        torch.testing.assert_close(NormalizeBatch(mean, std, red_normalization=red)(images), expected)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        NormalizeBatch()(torch.rand(3, 8, 8))


def test_benchmark_reports_throughput_without_running_handlers(capsys: pytest.CaptureFixture):
    trainer = _cass_trainer()
    completed: list[int] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: completed.append(1))
    result = benchmark(trainer, "pretrain", steps=2, warmup=1)
    assert result["images_per_second"] > 0 and result["step_seconds"] > 0 and result["peak_memory_mb"] > 0
    assert result["batch_size"] == 8 and result["device"] == "cpu" and completed == []
    assert "benchmark" in capsys.readouterr().out
    with pytest.raises(ValueError):
        benchmark(trainer, "pretrain", steps=0)


def test_benchmark_peak_memory_is_the_stages_own_where_linux_allows(capsys: pytest.CaptureFixture):
    from s4mi_monai.engines.benchmark import _peak_resident_memory_mb

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the peak resident memory can only be reset on Linux (/proc/self/clear_refs)")
    trainer = _cass_trainer()
    earlier = torch.ones(800 * 2**20 // 4)  # an earlier stage's 800 MB, freed before this stage
    earlier.add_(1)
    del earlier
    before = _peak_resident_memory_mb()
    result = benchmark(trainer, "pretrain", steps=1, warmup=0)
    assert result["peak_memory_scope"] == "stage" and result["peak_memory_mb"] < before - 400, (result, before)


@pytest.mark.parametrize(("backbone", "optimizer", "lr", "weight_decay"), [("resnet18", "SGD", 0.03, 1e-4), ("vit_ti16", "AdamW", 0.0005, 0.04)])
def test_small_data_preset_sizes_dino_for_a_few_thousand_images(backbone: str, optimizer: str, lr: float, weight_decay: float):
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / "dino_isic" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "small_data.json")])
    parser.update({"backbone": backbone, "image_size": 64, "pretrain_batch_size": 64, "ssl#iterations_per_epoch": 21})
    assert parser.get_parsed_content("ssl#epochs") == math.ceil(3000 / 21)
    assert parser.get_parsed_content("ssl#momentum_schedule")[0] == pytest.approx(0.99)
    assert set(parser.get_parsed_content("ssl#teacher_temp_schedule")) == {0.04}
    assert parser.get_parsed_content("head_out_dim") == 2048
    assert parser.get_parsed_content("local_crop_size") == 32  # at least 3/7 of 64, a multiple of 16
    assert parser.get_parsed_content("blur_sigma") == pytest.approx([0.1 * 64 / 224, 2.0 * 64 / 224])
    assert parser.get_parsed_content("pretrain_lr") == pytest.approx(lr * 64 / 256)
    assert parser.get_parsed_content("ssl#weight_decay_schedule")[0] == pytest.approx(weight_decay)
    views = parser.get_parsed_content("ssl#views")
    blur = views.views["global_0"].transforms[-1]
    assert type(blur).__name__ == "RandGaussianBlur" and blur.sigma == pytest.approx((0.1 * 64 / 224, 2.0 * 64 / 224))
    parser["device"] = "cpu"
    assert type(parser.get_parsed_content("ssl#optimizer")).__name__ == optimizer


def test_blur_sigma_belongs_to_the_dino_preset_and_optimizers_are_named():
    from s4mi_monai.optim import pretraining_optimizer

    with pytest.raises(ValueError, match="blur_sigma is a knob of the dino preset only"):
        MultiCropBatch("lucidrains", 32, blur_sigma=(0.1, 0.5))
    with pytest.raises(ValueError, match="--pretrain_optimizer must be one of"):
        pretraining_optimizer("lars", [torch.nn.Parameter(torch.zeros(1))], 0.1)


def test_lucidrains_preset_overrides_the_official_recipe():
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / "dino_isic" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "lucidrains.json")])
    preset = json.loads((configs / "lucidrains.json").read_text())
    assert parser.get_parsed_content("student_temp") == 0.9 and parser.get_parsed_content("ssl#momentum_schedule") == 0.9
    assert parser.get_parsed_content("crop_preset") == "lucidrains" and preset["student_sees_globals"] is False
    official = ConfigParser()
    official.read_config(str(configs / "train.json"))
    assert official.get_parsed_content("student_temp") == 0.1 and official.get_parsed_content("crop_preset") == "dino"
