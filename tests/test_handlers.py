"""The handlers inside real MONAI engines: atomic writes, best-model selection, kill-and-resume, history, CSV."""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Metric
from monai.data import CacheDataset, DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointLoader, LrScheduleHandler, ValidationHandler

from s4mi_monai.handlers import (
    BestModelSaver,
    EpochHistory,
    ProbabilityCSVWriter,
    TrainingCheckpoint,
)
from s4mi_monai.io import atomic_torch_save, write_json

BATCH_SIZE = 4
TRAIN_SIZE = 16
ITERATIONS_PER_EPOCH = TRAIN_SIZE // BATCH_SIZE


class ScriptedMetric(Metric):
    """Returns the next of ``values`` at each evaluation: the test decides which epoch is best."""

    def __init__(self, values: list[float]) -> None:
        self.values = iter(values)
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output) -> None:
        pass

    def compute(self) -> float:
        return next(self.values)


def labelled_samples(count: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 4, generator=generator)
    labels = torch.randint(0, 3, (count,), generator=generator)
    return [{"image": image, "label": label} for image, label in zip(images, labels)]


def stacked_predictions_and_labels(output: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([sample["pred"] for sample in output]), torch.tensor([int(sample["label"]) for sample in output])


def only_file_names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- atomic writes ---------------------------------------------------------------------------------------------


def test_atomic_torch_save_creates_folders_and_leaves_no_temporary_file(tmp_path: Path):
    path = tmp_path / "new" / "folder" / "state.pt"
    atomic_torch_save({"values": torch.arange(3)}, path)
    assert only_file_names(path.parent) == ["state.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["values"], torch.arange(3))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"f1": 0.5})
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to stand in for a full disk")
@pytest.mark.parametrize("large", [False, True])
def test_a_save_on_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path: Path, monkeypatch, large: bool):
    import s4mi_monai.io

    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"version": torch.tensor(1)}, path)

    def full_disk(handle: int, mode: str = "r", *args, **kwargs):
        os.close(handle)
        return open("/dev/full", mode)

    monkeypatch.setattr(s4mi_monai.io.os, "fdopen", full_disk)
    values = torch.zeros(1_000_000 if large else 3)  # large: torch's own write fails; small: the final flush
    with pytest.raises(OSError, match=r"could not write .*checkpoint.pt: No space left on device; the previous checkpoint.pt is unchanged; the disk is full") as caught:
        atomic_torch_save({"version": torch.tensor(2), "values": values}, path)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert only_file_names(tmp_path) == ["checkpoint.pt"]
    assert torch.load(path, weights_only=True)["version"] == 1


def test_crash_during_save_keeps_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save({"version": torch.tensor(1)}, path)
    real_save = torch.save
    temporary_files_seen = []

    def save_then_crash(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        temporary_files_seen.extend(name for name in only_file_names(tmp_path) if name.endswith(".tmp"))
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"version": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert len(temporary_files_seen) == 1
    assert only_file_names(tmp_path) == ["state.pt"]
    assert torch.load(path, weights_only=True)["version"].item() == 1


def test_metrics_json_is_strict_json_with_plain_numbers(tmp_path: Path):
    path = tmp_path / "metrics.json"
    write_json(
        path,
        {
            "test": {"auc": np.float32(0.5), "f1": math.nan, "count": torch.tensor(7), "per_class": np.array([0.25, np.inf])},
            "settings": {"seed": np.int64(3), "names": ("a", "b")},
        },
    )
    text = path.read_text()
    assert text.startswith('{\n  "test": {\n    "auc": 0.5,')
    assert json.loads(text) == {
        "test": {"auc": 0.5, "f1": None, "count": 7, "per_class": [0.25, None]},
        "settings": {"seed": 3, "names": ["a", "b"]},
    }


# --- BestModelSaver -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("greater_is_better", "values", "expected_best_epochs"),
    [
        (True, [math.nan, 0.5, 0.7, 0.7, math.nan, 0.9], [None, 2, 3, 3, 3, 6]),
        (False, [math.nan, 0.5, 0.7, 0.3, 0.3, math.nan], [None, 2, 2, 4, 4, 4]),
    ],
)
def test_best_model_saver_saves_plain_state_dict_only_on_improvement(tmp_path: Path, greater_is_better, values, expected_best_epochs):
    network = torch.nn.Linear(4, 3)
    save_path = tmp_path / "best.pt"
    saver = BestModelSaver(str(save_path), torch.nn.DataParallel(network), greater_is_better=greater_is_better)
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(labelled_samples(8, seed=1), batch_size=BATCH_SIZE),
        network=network,
        key_val_metric={"score": ScriptedMetric(values)},
        val_handlers=[saver],
    )
    best_epochs = []
    for epoch in range(1, len(values) + 1):
        with torch.no_grad():
            network.weight.fill_(epoch)  # the saved weights tell which epoch was saved
        evaluator.run(global_epoch=epoch)
        best_epochs.append(saver.best_epoch)
        if saver.best_epoch is None:
            assert not save_path.exists()
        else:
            saved = torch.load(save_path, weights_only=True)
            assert set(saved) == {"weight", "bias"}
            assert torch.all(saved["weight"] == saver.best_epoch)
    assert best_epochs == expected_best_epochs
    assert saver.metric_name == "score"
    assert saver.best_metric == values[expected_best_epochs[-1] - 1]
    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(torch.load(save_path, weights_only=True))
    assert torch.all(fresh.weight == expected_best_epochs[-1])


def test_best_model_saver_needs_a_metric_to_compare(tmp_path: Path):
    evaluator = SupervisedEvaluator("cpu", DataLoader(labelled_samples(4, seed=1)), torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="metric_name"):
        BestModelSaver(str(tmp_path / "best.pt"), torch.nn.Linear(4, 3)).attach(evaluator)


# --- kill and resume ------------------------------------------------------------------------------------------------


class Killed(Exception):
    """Stands in for the process being killed."""


def kill() -> None:
    raise Killed()


def without_seconds(history: EpochHistory) -> list[dict]:
    """The deterministic part of the history: wall times differ between runs."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history.history]


def train(output_dir: Path, kill_at=None, min_interval_s: float = 0.0) -> dict:
    """Four epochs as a bundle wires them; ``kill_at`` raises ``Killed`` there. Returns the final objects."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    best_model = BestModelSaver(str(output_dir / "best.pt"), network)
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(labelled_samples(8, seed=2), batch_size=BATCH_SIZE),
        network=network,
        key_val_metric={"accuracy": Accuracy(output_transform=stacked_predictions_and_labels)},
        val_handlers=[best_model],
    )
    history = EpochHistory(str(output_dir), validator=evaluator, optimizer=optimizer, best_saver=best_model)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=4,
        train_data_loader=DataLoader(labelled_samples(TRAIN_SIZE, seed=1), batch_size=BATCH_SIZE, shuffle=False),
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.CrossEntropyLoss(),
    )
    objects = {
        "trainer": trainer,
        "network": network,
        "optimizer": optimizer,
        "lr_scheduler": scheduler,
        "best_model": best_model,
        "history": history,
    }
    checkpoint_path = output_dir / "checkpoint.pt"
    # the bundle's "_disabled_": "$not os.path.exists(@checkpoint_path)"
    loader = [CheckpointLoader(str(checkpoint_path), objects, map_location="cpu")] if checkpoint_path.exists() else []
    # history and checkpoint listed before the handlers that change state at EPOCH_COMPLETED, on purpose
    handlers = [
        *loader,
        history,
        TrainingCheckpoint(str(checkpoint_path), objects, min_interval_s=min_interval_s),
        LrScheduleHandler(scheduler, print_lr=False),
        ValidationHandler(interval=1, validator=evaluator),
    ]
    for handler in handlers:
        handler.attach(trainer)
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: epochs_run.append(engine.state.epoch))
    if kill_at is not None:
        trainer.add_event_handler(kill_at, kill)
    trainer.run()
    return {**objects, "epochs_run": epochs_run}


@pytest.mark.parametrize(
    ("kill_at", "saved_epoch"),
    [
        (Events.ITERATION_COMPLETED(once=2 * ITERATIONS_PER_EPOCH + 1), 2),  # during epoch 3
        (Events.EPOCH_COMPLETED(once=2), 1),  # at the end of epoch 2, before its checkpoint
    ],
)
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path: Path, kill_at, saved_epoch):
    reference = train(tmp_path / "reference")
    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(Killed):
        train(interrupted_dir, kill_at=kill_at)
    checkpoint = torch.load(interrupted_dir / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == {"trainer", "network", "optimizer", "lr_scheduler", "best_model", "history"}
    assert checkpoint["trainer"]["iteration"] == saved_epoch * ITERATIONS_PER_EPOCH
    assert len(checkpoint["history"]["epochs"]) == saved_epoch

    resumed = train(interrupted_dir)

    assert reference["epochs_run"] == [1, 2, 3, 4]
    assert resumed["epochs_run"] == list(range(saved_epoch + 1, 5))
    reference_weights, resumed_weights = reference["network"].state_dict(), resumed["network"].state_dict()
    assert all(torch.equal(resumed_weights[name], reference_weights[name]) for name in reference_weights)
    assert resumed["optimizer"].param_groups[0]["lr"] == reference["optimizer"].param_groups[0]["lr"] == 0.05 / 16
    assert resumed["best_model"].state_dict() == reference["best_model"].state_dict()
    assert [record["epoch"] for record in resumed["history"].history] == [1, 2, 3, 4]
    assert without_seconds(resumed["history"]) == without_seconds(reference["history"])
    assert all("accuracy" in record["validation"] for record in resumed["history"].history)
    best_reference = torch.load(tmp_path / "reference" / "best.pt", weights_only=True)
    best_resumed = torch.load(interrupted_dir / "best.pt", weights_only=True)
    assert all(torch.equal(best_resumed[name], best_reference[name]) for name in best_reference)
    assert not (interrupted_dir / "checkpoint.pt").exists()
    assert not (tmp_path / "reference" / "checkpoint.pt").exists()


def test_a_minimum_interval_between_saves_keeps_the_first_epoch_and_resumes_to_the_same_result(tmp_path: Path):
    reference = train(tmp_path / "reference")
    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(Killed):
        train(interrupted_dir, kill_at=Events.ITERATION_COMPLETED(once=2 * ITERATIONS_PER_EPOCH + 1), min_interval_s=3600)
    checkpoint = torch.load(interrupted_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == ITERATIONS_PER_EPOCH  # epoch 2 came too soon after epoch 1 to save
    resumed = train(interrupted_dir, min_interval_s=3600)
    assert resumed["epochs_run"] == [2, 3, 4]
    reference_weights, resumed_weights = reference["network"].state_dict(), resumed["network"].state_dict()
    assert all(torch.equal(resumed_weights[name], reference_weights[name]) for name in reference_weights)


# --- EpochHistory ---------------------------------------------------------------------------------------------------


def test_history_logs_one_line_per_epoch_and_writes_json_and_curves(tmp_path: Path, caplog):
    trainer = Engine(lambda engine, batch: batch * engine.state.epoch)  # the "loss" is the batch times the epoch
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    network = torch.nn.Linear(4, 3)
    best_model = BestModelSaver(str(tmp_path / "best.pt"), network)
    validator = SupervisedEvaluator(
        "cpu",
        DataLoader(labelled_samples(4, seed=1)),
        network,
        key_val_metric={"score": ScriptedMetric([0.7])},
        val_handlers=[best_model],
    )
    history = EpochHistory(str(tmp_path), validator=validator, optimizer=optimizer, best_saver=best_model)
    history.attach(trainer)
    ValidationHandler(interval=2, validator=validator).attach(trainer)
    caplog.set_level(logging.INFO, logger="s4mi_monai")

    trainer.run([1.0, 2.0], max_epochs=3)

    lines = [record.getMessage() for record in caplog.records if record.name == "s4mi_monai"]
    expected = [
        r"epoch 1/3  loss 1\.5000  lr 1\.0e-03  \d+\.\d s",
        r"epoch 2/3  loss 3\.0000  val score 0\.7000 \(best 0\.7000 @ 2\)  lr 1\.0e-03  \d+\.\d s",
        r"epoch 3/3  loss 4\.5000  lr 1\.0e-03  \d+\.\d s",
    ]
    assert len(lines) == len(expected)
    assert all(re.fullmatch(pattern, line) for pattern, line in zip(expected, lines)), lines
    written = json.loads((tmp_path / "history.json").read_text())
    assert [(e["epoch"], e["loss"], e["lr"], e["validation"]) for e in written["epochs"]] == [
        (1, 1.5, 1e-3, {}),
        (2, 3.0, 1e-3, {"score": 0.7}),
        (3, 4.5, 1e-3, {}),
    ]
    assert written["best"] == {"metric": "score", "value": 0.7, "epoch": 2}
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert only_file_names(tmp_path) == ["best.pt", "curves.png", "history.json"]


def test_history_records_every_named_validator(tmp_path: Path):
    """Two networks trained together (cross teaching): each validator's metrics under its name."""
    trainer = Engine(lambda engine, batch: batch)
    network = torch.nn.Linear(4, 3)
    validators = {
        name: SupervisedEvaluator(
            "cpu", DataLoader(labelled_samples(4, seed=1)), network, key_val_metric={"score": ScriptedMetric([value])}
        )
        for name, value in (("cnn", 0.7), ("transformer", 0.4))
    }
    history = EpochHistory(str(tmp_path), validator=validators)
    history.attach(trainer)
    for validator in validators.values():
        ValidationHandler(interval=1, validator=validator).attach(trainer)
    trainer.run([1.0], max_epochs=1)
    assert history.history[0]["validation"] == {"cnn score": 0.7, "transformer score": 0.4}


@pytest.mark.parametrize(
    "as_output",
    [
        lambda loss: loss,
        lambda loss: torch.tensor(loss),
        lambda loss: {"loss": torch.tensor(loss), "pred": torch.zeros(2, 3)},
        lambda loss: [{"loss": torch.tensor(loss), "pred": torch.zeros(3)}] * 2,
    ],
    ids=["float", "tensor", "collated", "decollated"],
)
def test_history_reads_the_loss_from_every_output_form(tmp_path: Path, as_output):
    trainer = Engine(lambda engine, batch: as_output(batch))
    history = EpochHistory(str(tmp_path))
    history.attach(trainer)
    trainer.run([0.25, 0.5, 1.5], max_epochs=2)
    assert [(record["epoch"], record["loss"], record["lr"]) for record in history.history] == [
        (1, 0.75, None),
        (2, 0.75, None),
    ]


# --- ProbabilityCSVWriter ----------------------------------------------------------------------------------------------

PROBABILITIES = {"c.png": [0.1, 0.3, 0.6], "a.png": [0.7, 0.2, 0.1], "b.png": [0.2, 0.55, 0.25]}
CLASS_NAMES = ["nevus", "melanoma", "keratosis"]


def probability_images() -> list[dict]:
    """Images that are probability vectors: with an identity "network" every CSV value is known."""
    return [{"image": MetaTensor(torch.tensor(p), meta={"filename_or_obj": name})} for name, p in PROBABILITIES.items()]


def predictor(writer: ProbabilityCSVWriter, decollate: bool = True) -> SupervisedEvaluator:
    data_loader = DataLoader(probability_images(), batch_size=2)
    return SupervisedEvaluator("cpu", data_loader, torch.nn.Identity(), decollate=decollate, val_handlers=[writer])


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("decollate", [True, False])
def test_csv_has_sorted_rows_with_probabilities_and_argmax_class(tmp_path: Path, decollate):
    path = tmp_path / "predictions.csv"
    predictor(ProbabilityCSVWriter(str(path), CLASS_NAMES), decollate=decollate).run()
    assert read_csv(path) == [
        ["image", "nevus", "melanoma", "keratosis", "prediction"],
        ["a.png", "0.700000", "0.200000", "0.100000", "nevus"],
        ["b.png", "0.200000", "0.550000", "0.250000", "melanoma"],
        ["c.png", "0.100000", "0.300000", "0.600000", "keratosis"],
    ]
    assert only_file_names(tmp_path) == ["predictions.csv"]


def test_multi_label_csv_joins_classes_above_threshold(tmp_path: Path):
    path = tmp_path / "predictions.csv"
    predictor(ProbabilityCSVWriter(str(path), CLASS_NAMES, multi_label=True, threshold=0.25)).run()
    assert [row[-1] for row in read_csv(path)] == ["prediction", "nevus", "melanoma", "melanoma;keratosis"]


def test_csv_of_a_rerun_holds_only_that_run(tmp_path: Path):
    path = tmp_path / "predictions.csv"
    evaluator = predictor(ProbabilityCSVWriter(str(path), CLASS_NAMES))
    evaluator.run()
    evaluator.data_loader = DataLoader(probability_images()[:1])
    evaluator.run()
    assert [row[0] for row in read_csv(path)] == ["image", "c.png"]


def test_csv_rejects_probabilities_that_do_not_match_the_classes(tmp_path: Path):
    evaluator = predictor(ProbabilityCSVWriter(str(tmp_path / "predictions.csv"), ["nevus", "melanoma"]))
    with pytest.raises(ValueError, match="3 probabilities per image for 2 class names"):
        evaluator.run()


def test_the_random_state_restores_the_draws_of_in_process_transforms_and_refuses_another_augmentation():
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised

    from s4mi_monai.engines import TrainingRandomState

    def dataset(n_transforms: int) -> CacheDataset:
        transforms = [RandGaussianNoised("image", prob=1.0), RandFlipd("image", prob=0.5)][:n_transforms]
        return CacheDataset([{"image": np.zeros((1, 4, 4), np.float32)}] * 4, Compose(transforms), progress=False)

    data = dataset(2)
    data.transform.set_random_state(seed=3)
    state = TrainingRandomState([data])
    saved = torch.load(_saved(state.state_dict()), weights_only=True)  # as a checkpoint holds it
    draws = [data[i]["image"] for i in range(4)]
    state.load_state_dict(saved)
    assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(draws, [data[i]["image"] for i in range(4)]))
    TrainingRandomState([data]).load_state_dict({key: value for key, value in saved.items() if key != "augmentations"})  # older checkpoints
    with pytest.raises(ValueError, match="holds the random states of 4 random transforms, this training has 3"):
        TrainingRandomState([dataset(1)]).load_state_dict(saved)


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
