"""Cross teaching: the SSL4MIS Dice and the cross-teaching loss against direct computations, λ(t), the
two-stream sampler and collate, and the trainer on tiny networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Events
from torch import nn

from s4mi_monai.data import TwoStreamBatchSampler, two_stream_collate
from s4mi_monai.engines import CrossTeachingTrainer
from s4mi_monai.handlers import ScheduleHandler
from s4mi_monai.losses import CrossTeachingLoss, ssl4mis_dice_loss, supervised_segmentation_loss
from s4mi_monai.optim import poly_schedule, sigmoid_rampup_schedule


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _direct_dice(probabilities: np.ndarray, target: np.ndarray) -> float:
    """Per class over the whole batch: 1 − (2 Σpg + ε)/(Σp² + Σg² + ε); mean over classes incl. background."""
    losses = []
    for c in range(probabilities.shape[1]):
        p = probabilities[:, c]
        g = (target == c).astype(np.float64)
        losses.append(1 - (2 * (p * g).sum() + 1e-5) / ((p * p).sum() + (g * g).sum() + 1e-5))
    return float(np.mean(losses))


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_ssl4mis_dice_matches_direct_computation():
    probabilities = torch.softmax(torch.randn(3, 2, 5, 4, dtype=torch.float64), dim=1)
    target = torch.randint(0, 2, (3, 1, 5, 4))
    expected = _direct_dice(probabilities.numpy(), target[:, 0].numpy())
    assert ssl4mis_dice_loss(probabilities, target).item() == pytest.approx(expected, rel=1e-9)
    assert ssl4mis_dice_loss(probabilities, target[:, 0]).item() == pytest.approx(expected, rel=1e-9)
    perfect = torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).double()
    assert ssl4mis_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="one channel"):
        ssl4mis_dice_loss(probabilities, torch.zeros(3, 2, 5, 4))


def test_supervised_loss_is_half_ce_plus_dice():
    logits = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 1, 6, 6))
    probabilities = _softmax(logits.numpy())
    one_hot = np.eye(2)[target[:, 0].numpy()].transpose(0, 3, 1, 2)
    cross_entropy = -(one_hot * np.log(probabilities)).sum(axis=1).mean()
    expected = 0.5 * (cross_entropy + _direct_dice(probabilities, target[:, 0].numpy()))
    assert supervised_segmentation_loss(logits, target).item() == pytest.approx(expected, rel=1e-9)


def test_cross_teaching_loss_matches_direct_computation_and_detaches_pseudo_labels():
    logits_a = torch.randn(5, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    logits_b = torch.randn(5, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 2, (2, 1, 4, 4))
    terms = CrossTeachingLoss()(logits_a, logits_b, labels, 0.3)

    a, b = logits_a.detach().numpy(), logits_b.detach().numpy()
    supervised_a = supervised_segmentation_loss(logits_a[:2].detach(), labels).item()
    supervised_b = supervised_segmentation_loss(logits_b[:2].detach(), labels).item()
    teach_a = _direct_dice(_softmax(a[2:]), _softmax(b[2:]).argmax(axis=1))  # a learns from b's argmax on unlabeled
    teach_b = _direct_dice(_softmax(b[2:]), _softmax(a[2:]).argmax(axis=1))
    assert terms["cross_teaching_a"].item() == pytest.approx(teach_a, rel=1e-9)
    assert terms["cross_teaching_b"].item() == pytest.approx(teach_b, rel=1e-9)
    expected = supervised_a + 0.3 * teach_a + supervised_b + 0.3 * teach_b
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-9)

    terms["cross_teaching_a"].backward()
    assert logits_b.grad is None  # the pseudo-label of b is detached: a's term teaches only a
    assert logits_a.grad[2:].abs().sum() > 0 and logits_a.grad[:2].abs().sum() == 0


def test_cross_teaching_on_all_images_when_every_image_is_labeled():
    logits_a, logits_b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    labels = torch.randint(0, 2, (3, 1, 4, 4))
    terms = CrossTeachingLoss()(logits_a, logits_b, labels, 0.1)
    expected = ssl4mis_dice_loss(torch.softmax(logits_a, 1), torch.softmax(logits_b, 1).argmax(1))
    assert terms["cross_teaching_a"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="labeled images"):
        CrossTeachingLoss()(logits_a, logits_b, torch.zeros(4, 1, 4, 4), 0.1)
    with pytest.raises(ValueError, match="one shape"):
        CrossTeachingLoss()(logits_a, logits_b[:, :, :2], labels, 0.1)


def test_consistency_weight_reaches_its_maximum_within_the_run():
    values = sigmoid_rampup_schedule(0.1, 0.4, epochs=10, iters_per_epoch=10)  # T = 40 of 100 iterations
    assert len(values) == 100
    assert values[0] == pytest.approx(0.1 * math.exp(-5))
    assert values[20] == pytest.approx(0.1 * math.exp(-5 * 0.5**2))
    assert values[40] == pytest.approx(0.1) and values[-1] == pytest.approx(0.1)
    assert np.all(np.diff(values) >= 0)
    assert np.all(sigmoid_rampup_schedule(0.1, 0.0, 2, 3) == 0.1)
    with pytest.raises(ValueError, match="ramp_fraction"):
        sigmoid_rampup_schedule(0.1, 1.5, 2, 3)
    # the S4MI setting: ramp of 200 x 150 iterations, run of 10,000: the weight stays near 0.011
    s4mi = 0.1 * math.exp(-5 * (1 - (10_000 // 150) / 200) ** 2)
    assert s4mi == pytest.approx(0.0106, abs=5e-4)


def test_poly_schedule():
    values = poly_schedule(0.01, epochs=2, iters_per_epoch=5, power=0.9)
    assert values[0] == pytest.approx(0.01)
    assert values[5] == pytest.approx(0.01 * 0.5**0.9)
    assert values[-1] == pytest.approx(0.01 * 0.1**0.9)


def _epoch(sampler: TwoStreamBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_two_stream_sampler_batches():
    sampler = TwoStreamBatchSampler(n_labeled=10, n_unlabeled=7, labeled_batch_size=4, unlabeled_batch_size=3, seed=1)
    batches = _epoch(sampler, 1)
    assert len(batches) == len(sampler) == 3  # ceil(10 / 4)
    for batch in batches:
        assert all(i < 10 for i in batch[:4]) and all(10 <= i < 17 for i in batch[4:])
        assert len(batch) == 7
    labeled = [i for batch in batches for i in batch[:4]]
    assert set(labeled) == set(range(10))  # every labeled image at least once per epoch
    assert len(set(labeled[:10])) == 10  # one permutation first, then the fill-up
    unlabeled = [i for batch in batches for i in batch[4:]]
    assert sorted(unlabeled[:7]) == list(range(10, 17))  # the unlabeled stream cycles through permutations
    assert _epoch(sampler, 1) == batches  # the same epoch gives the same batches (resume)
    assert _epoch(sampler, 2) != batches


def test_two_stream_sampler_all_labeled_and_tiny_fractions():
    full = TwoStreamBatchSampler(n_labeled=20, n_unlabeled=0, labeled_batch_size=8, unlabeled_batch_size=8)
    batches = _epoch(full, 1)
    assert len(batches) == 2 and all(len(batch) == 16 for batch in batches)
    assert {i for batch in batches for i in batch} == set(range(20))
    tiny = TwoStreamBatchSampler(n_labeled=1, n_unlabeled=30, labeled_batch_size=8, unlabeled_batch_size=8)
    (batch,) = _epoch(tiny, 1)
    assert batch[:8] == [0] * 8 and all(i >= 1 for i in batch[8:])
    with pytest.raises(ValueError, match="at least one labeled image"):
        TwoStreamBatchSampler(n_labeled=0, n_unlabeled=5)


def test_two_stream_sampler_ranks_split_the_single_process_batches():
    def sampler(batch: tuple[int, int], **ranks) -> TwoStreamBatchSampler:
        return TwoStreamBatchSampler(n_labeled=13, n_unlabeled=9, labeled_batch_size=batch[0], unlabeled_batch_size=batch[1], seed=3, **ranks)

    single = _epoch(sampler((4, 6)), 2)
    ranks = [_epoch(sampler((2, 3), num_replicas=2, rank=rank), 2) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 4  # ceil(13 / (2 x 2))
    for step, (first, second) in enumerate(zip(*ranks)):
        # each rank: its labeled block, then its unlabeled block; together the single process's batch of twice the size
        assert first[:2] + second[:2] == single[step][:4] and first[2:] + second[2:] == single[step][4:]
    labeled = [i for rank in ranks for batch in rank for i in batch[:2]]
    assert set(labeled) == set(range(13))  # every labeled image once per epoch across the ranks
    with pytest.raises(ValueError, match="rank 2"):
        sampler((2, 3), num_replicas=2, rank=2)


def test_two_stream_collate():
    labeled = [{"image": torch.full((3, 4, 4), float(i)), "label": torch.zeros(1, 4, 4)} for i in range(2)]
    unlabeled = [{"image": torch.full((3, 4, 4), 9.0)} for _ in range(3)]
    batch = two_stream_collate(labeled + unlabeled)
    assert batch["image"].shape == (5, 3, 4, 4) and batch["label"].shape == (2, 1, 4, 4)
    assert batch["image"][1, 0, 0, 0] == 1 and batch["image"][4, 0, 0, 0] == 9
    with pytest.raises(ValueError, match="start with its labeled items"):
        two_stream_collate(unlabeled + labeled)


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, n_labeled: int, n_unlabeled: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(n_labeled + n_unlabeled, 3, 16, 16, generator=generator)
        self.n_labeled = n_labeled

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index]}
        if index < self.n_labeled:
            item["label"] = (self.images[index, :1] > 0.5).float()
        return item


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))


def test_trainer_updates_both_networks_and_records_terms():
    dataset = _Dataset(n_labeled=6, n_unlabeled=10)
    sampler = TwoStreamBatchSampler(6, 10, labeled_batch_size=2, unlabeled_batch_size=2)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=two_stream_collate)
    cnn, transformer = _tiny_net(), _tiny_net()
    before = [p.detach().clone() for p in (*cnn.parameters(), *transformer.parameters())]
    optimizer = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    transformer_optimizer = torch.optim.Adam(transformer.parameters(), lr=1e-2)
    weights = sigmoid_rampup_schedule(0.1, 0.5, epochs=4, iters_per_epoch=len(sampler))
    trainer = CrossTeachingTrainer(
        device="cpu",
        max_epochs=4,
        train_data_loader=loader,
        network=cnn,
        optimizer=optimizer,
        transformer=transformer,
        transformer_optimizer=transformer_optimizer,
        train_handlers=[ScheduleHandler(weights, attribute="consistency_weight")],
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(float(engine.state.output["loss"])))
    seen_epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: seen_epochs.append(sampler.epoch))
    trainer.run()
    after = [p.detach() for p in (*cnn.parameters(), *transformer.parameters())]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # both networks stepped
    assert seen_epochs == [1, 2, 3, 4]
    assert trainer.state.output["n_labeled"] == 2
    assert trainer.state.consistency_weight == pytest.approx(weights[-1])
    metrics = trainer.state.metrics
    assert set(metrics) >= {"supervised_cnn", "supervised_transformer", "cross_teaching_cnn", "cross_teaching_transformer"}
    assert metrics["consistency_weight"] == pytest.approx(weights[-len(sampler) :].mean())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_softmax_ensemble_and_network_choice():
    from s4mi_monai.networks import SoftmaxEnsemble, select_prediction_network

    cnn, transformer = _tiny_net().eval(), _tiny_net().eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        mean = (torch.softmax(cnn(x), 1) + torch.softmax(transformer(x), 1)) / 2
        ensemble = select_prediction_network("mean", cnn, transformer)
        assert isinstance(ensemble, SoftmaxEnsemble)
        torch.testing.assert_close(torch.softmax(ensemble(x), 1), mean)
    assert select_prediction_network("cnn", cnn, transformer) is cnn
    assert select_prediction_network("transformer", cnn, transformer) is transformer
    with pytest.raises(ValueError, match="predict_with"):
        select_prediction_network("both", cnn, transformer)


def test_branch_model_path(tmp_path):
    from s4mi_monai.bundle import branch_model_path

    (tmp_path / "model_info.json").write_text('{"branch": "cnn"}')
    published = str(tmp_path / "model.pt")
    assert branch_model_path(published, "cnn") == published
    assert branch_model_path(published, "transformer") == str(tmp_path / "transformer" / "model.pt")


def test_labeled_and_unlabeled_items_partition_the_training_split():
    from s4mi_monai.bundle import REPO_ROOT, open_datalist, segmentation_items, unlabeled_items

    datalist = open_datalist(str(REPO_ROOT / "datalists" / "demo_isic2017.json"), "demo_isic2017.json")
    labeled = {item["image"] for item in segmentation_items(datalist, "training", 0.5)}
    unlabeled = unlabeled_items(datalist, "training", 0.5)
    assert all(set(item) == {"image"} for item in unlabeled)
    unlabeled_images = {item["image"] for item in unlabeled}
    assert not labeled & unlabeled_images
    assert len(labeled | unlabeled_images) == len(datalist["training"]) and len(labeled) == len(datalist["label_fractions"]["0.5"])
    assert unlabeled_items(datalist, "training", 1.0) == []


def test_trainer_channels_last_path_runs_on_cpu():
    dataset = _Dataset(n_labeled=2, n_unlabeled=2)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=TwoStreamBatchSampler(2, 2, 2, 2), collate_fn=two_stream_collate)
    cnn, transformer = _tiny_net(), _tiny_net()
    trainer = CrossTeachingTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=cnn.to(memory_format=torch.channels_last),
        optimizer=torch.optim.SGD(cnn.parameters(), lr=0.1),
        transformer=transformer,
        transformer_optimizer=torch.optim.SGD(transformer.parameters(), lr=0.1),
        amp=True,  # bf16 autocast is for CUDA only: ignored here
        channels_last=True,
    )
    trainer.run()
    assert not trainer.use_bf16 and torch.isfinite(trainer.state.output["loss"])
