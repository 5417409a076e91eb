"""Every bundle: generated files committed, configs parse, metadata verifies, networks match their metadata.

The end-to-end tests run the exact commands of the bundle READMEs in subprocesses (one family each):
train on the demo data with no arguments, evaluate (from inside the bundle folder), predict on a
folder holding a corrupt file, export to TorchScript.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s4mi_monai.bundlegen.readme import readme
from s4mi_monai.bundlegen.registry import BUNDLES
from s4mi_monai.bundlegen.write import bundle_files
from s4mi_monai.io import to_json_safe
from s4mi_monai.metrics.samples import read_samples

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "s4mi_monai" / "resources" / "meta_schema.json"


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_committed_bundle_matches_generator(name: str):
    folder = REPO / "bundles" / name
    for relative, text in bundle_files(BUNDLES[name]).items():
        assert (folder / relative).read_text() == text, f"{folder / relative} is stale: run `s4mi bundles`"
    committed_readme = (folder / "docs" / "README.md").read_text()
    assert readme(BUNDLES[name], committed_readme) == committed_readme
    assert (folder / "LICENSE").is_file()


def test_every_bundle_folder_is_in_the_registry():
    assert sorted(path.name for path in (REPO / "bundles").iterdir() if path.is_dir()) == sorted(BUNDLES)


def test_run_time_helpers_do_not_import_the_generator():
    """Bundle configs import ``s4mi_monai.bundle``; the generator is a separate package that only ``s4mi bundles`` loads."""
    code = "import sys, s4mi_monai.bundle; print(any(name.startswith('s4mi_monai.bundlegen') for name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_scope_names_references_at_the_root_or_in_a_section():
    from s4mi_monai.bundlegen.parts import ROOT, Scope

    assert ROOT.ref("train#trainer") == "@train#trainer"
    assert Scope("finetune_cnn").ref("train#trainer") == "@finetune_cnn#train#trainer"


def test_cass_fine_tunings_differ_only_in_their_branch():
    """The two fine-tuning sections of CASS are one builder applied to two branches."""
    train = json.loads((REPO / "bundles" / "cass_isic" / "configs" / "train.json").read_text())
    sections, pretraining = {}, train["finetune_cnn"]["settings"]["pretraining"]
    for branch in ("cnn", "transformer"):
        section = train[f"finetune_{branch}"]
        assert section["settings"].pop("pretraining") == pretraining
        sections[branch] = json.dumps(section).replace(branch, "BRANCH")
    assert sections["cnn"] == sections["transformer"]


@pytest.mark.parametrize("method", sorted({spec.method for spec in BUNDLES.values()}))
def test_a_methods_bundles_differ_only_in_their_name_and_demo_datalist(method: str):
    """Dataset facts (challenge score, red-channel normalisation) come from the datalist, not from the config."""
    trains = {}
    for name, spec in BUNDLES.items():
        if spec.method == method:
            train = json.loads((REPO / "bundles" / name / "configs" / "train.json").read_text())
            assert train.pop("bundle_name") == name and train.pop("demo_datalist") == spec.profile.demo_datalist
            trains[name] = train
    first, *others = trains.values()
    assert len(trains) == 3 and all(other == first for other in others)


def test_compact_json_keeps_the_content_and_puts_short_flat_values_on_one_line():
    from s4mi_monai.bundlegen.write import _json

    config = {"keys": ["image", "label"], "nested": {"a": [1, {"b": 2}], "long": ["x" * 60, "y" * 60]}, "empty": []}
    text = _json(config)
    assert json.loads(text) == config
    assert '"keys": ["image", "label"],' in text and '"b": 2' in text and text.count("\n") == 14


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_bundle_parses_verifies_and_matches_metadata(name: str):
    from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

    configs = REPO / "bundles" / name / "configs"
    meta = str(configs / "metadata.json")
    verify_metadata(meta_file=meta, filepath=str(SCHEMA))
    spec = BUNDLES[name]
    train = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=meta, logging_file=False, workflow_type="train")
    train.initialize()
    if spec.method == "cass":  # one fine-tuning per network: the MONAI train properties live in finetune_<branch>
        for branch in ("cnn", "transformer"):
            assert train.parser.get_parsed_content(f"finetune_{branch}#train#dataset") is not None
    elif spec.unsupervised:  # PiCIE trains on every training image; the U-Net it initialises lives in `supervised`
        assert train.parser.get_parsed_content("supervised#train#dataset") is not None
        picie = train.parser.get_parsed_content("picie#trainer")
        assert len(picie.data_loader.dataset) == len(train.parser.get_parsed_content("data")["training"])
        assert all("label" not in item and "mask" not in item for item in picie.data_loader.dataset.data), "no mask in training"
    else:
        assert train.check_properties() == []
        assert train.parser.get_parsed_content("train#dataset") is not None
    if spec.self_supervised:
        pretraining = train.parser.get_parsed_content("ssl#trainer")
        assert pretraining.state.max_epochs == 3 and len(pretraining.data_loader.dataset) == len(
            train.parser.get_parsed_content("data")["training"]
        )
    evaluate = ConfigWorkflow(
        config_file=str(configs / "evaluate.json"), meta_file=meta, logging_file=False, workflow_type="infer", init_id="none"
    )
    assert evaluate.parser.get_parsed_content("test#evaluator") is not None
    infer = ConfigWorkflow(
        config_file=str(configs / "inference.json"), meta_file=meta, logging_file=False, workflow_type="infer", init_id="none"
    )
    infer.parser.parse()
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "device"):
        assert infer.parser.get_parsed_content(key) is not None, f"MONAI Label reads {key}"
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=str(configs / "inference.json"), device="cpu")


def _bundle(*args: str, cwd: Path = REPO, returncode: int = 0) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ...`` from the repository root (or ``cwd``), as a user would; expect ``returncode``."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == returncode, f"{' '.join(args)}: exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _new_images_folder(folder: Path) -> Path:
    """Two readable images of other sizes and formats, a corrupt one and a file that is not an image."""
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not an image")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 255, (150, 100, 3), dtype=np.uint8)).save(folder / "tall.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _export(root: str, out: Path, *export_args: str) -> None:
    """TorchScript export of ``out/model.pt`` through the bundle's inference config, as the README says."""
    _bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(out / "model.ts"),
        "--ckpt_file",
        str(out / "model.pt"),
        "--meta_file",
        f"{root}/configs/metadata.json",
        "--config_file",
        f"{root}/configs/inference.json",
        "--model_path",
        str(out / "model.pt"),
        *export_args,
    )
    assert (out / "model.ts").stat().st_size > 0


def _run_family(name: str, tmp_path: Path, train_args: Sequence[str] = (), export_args: Sequence[str] = ()) -> tuple[dict, Path]:
    """Train with ``train_args``, then evaluate, predict and export with no network knob: each rebuilds the trained network."""
    root = f"bundles/{name}"
    out = tmp_path / "model"
    _bundle("run", "training", "--config_file", f"{root}/configs/train.json", "--output_dir", str(out), *train_args)
    assert (out / "model.pt").is_file() and (out / "curves.png").is_file() and not (out / "checkpoint.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert to_json_safe(read_samples(out).metrics()) == metrics["test"], "test_samples.json reproduces the test metrics"
    (out / "metrics.json").unlink()
    _bundle("run", "evaluating", "--config_file", "configs/evaluate.json", "--output_dir", str(out), cwd=REPO / root)
    reevaluated = json.loads((out / "metrics.json").read_text())
    assert reevaluated["test"] == metrics["test"], "evaluate.json scores the saved model exactly as training did"

    predictions = tmp_path / "predictions"
    result = _bundle(
        "run",
        "--config_file",
        f"{root}/configs/inference.json",
        "--input_dir",
        str(_new_images_folder(tmp_path / "new")),
        "--output_dir",
        str(predictions),
        "--model_path",
        str(out / "model.pt"),
        returncode=1,  # the readable images are predicted, then the run fails naming the unreadable one
    )
    assert "1 image(s) could not be read and have no prediction" in result.stderr and "broken.jpg" in result.stderr
    assert "left out as not images: notes.txt" in result.stdout + result.stderr
    _export(root, out, *export_args)
    return metrics, predictions


@pytest.mark.slow
def test_classification_bundle_end_to_end(tmp_path: Path):
    metrics, predictions = _run_family("supervised_cls_isic", tmp_path)
    test = metrics["test"]
    assert test["f1_macro"] > 0.6 and test["balanced_accuracy"] > 0.6, f"the demo classifier should beat chance (0.33) clearly: {test}"
    assert metrics["validation"]["metric"] == "f1_macro" and metrics["settings"]["label_fraction"] == 1.0
    with open(predictions / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"].rsplit("/", 1)[-1] for row in rows] == ["tall.jpg", "wide.png"]
    assert abs(sum(float(rows[0][c]) for c in ("nevus", "melanoma", "seborrheic_keratosis")) - 1) < 1e-4


@pytest.mark.slow
def test_segmentation_bundle_end_to_end(tmp_path: Path):
    metrics, predictions = _run_family("supervised_seg_isic", tmp_path)
    assert metrics["test"]["iou_per_image_mean"] > 0.6, f"the demo segmenter should find the lesions: {metrics['test']}"
    for stem, size in (("wide", (120, 90)), ("tall", (100, 150))):
        mask = Image.open(predictions / f"{stem}_mask.png")
        assert mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}
        assert Image.open(predictions / f"{stem}_overlay.png").size == size
    assert not (predictions / "broken_mask.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dino_isic", "cass_isic"])
def test_self_supervised_bundle_end_to_end(name: str, tmp_path: Path):
    """Pretraining, fine-tuning at 10 % of the labels, test report; evaluate, inference and export of the result."""
    metrics, predictions = _run_family(name, tmp_path)
    out = tmp_path / "model"
    assert metrics["settings"]["label_fraction"] == 0.1 and metrics["settings"]["pretraining"]["pretrain_epochs"] == 3
    history = json.loads((out / "pretraining" / "history.json").read_text())["epochs"]
    assert len(history) == 3 and all(0 <= epoch["training"]["embedding_collapse"] <= 1 for epoch in history)
    assert all(-1 <= epoch["training"]["output_cosine"] <= 1 and epoch["training"]["output_spread"] >= 0 for epoch in history)
    pretrained = ["pretrained_backbone.pt"] if name == "dino_isic" else ["pretrained_cnn_backbone.pt", "pretrained_transformer_backbone.pt"]
    for file_name in pretrained:
        assert torch.load(out / file_name, weights_only=True), file_name
    if name == "dino_isic":
        assert all(0 < epoch["training"]["teacher_entropy"] <= epoch["training"]["log_k"] + 1e-4 for epoch in history)
    else:
        assert set(metrics["branches"]) == {"cnn", "transformer"} and metrics["settings"]["reported_branch"] == "cnn"
        assert metrics["test"] == metrics["branches"]["cnn"]["test"]
        assert "vit" in json.loads((out / "transformer" / "model_info.json").read_text())["backbone"]
    assert metrics["test"]["f1_macro"] > 0.3, metrics["test"]
    with open(predictions / "predictions.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    # a restarted run does not repeat the finished pretraining
    result = _bundle(
        "run",
        "finetune" if name == "cass_isic" else "training",
        "--config_file",
        f"bundles/{name}/configs/train.json",
        "--output_dir",
        str(out),
        "--max_epochs",
        "1",
    )
    assert ("pretraining already done" in result.stdout + result.stderr) == (name == "dino_isic")
    assert "fine-tuning starts from" in result.stdout + result.stderr


@pytest.mark.slow
def test_contrastive_segmentation_bundle_end_to_end(tmp_path: Path):
    """Global, local, fine-tuning and the test report; evaluate, inference, export; a restart skips finished stages."""
    name = "contrast_seg_isic"
    metrics, predictions = _run_family(name, tmp_path)
    out = tmp_path / "model"
    assert metrics["settings"]["pretraining"]["pretraining"] == "global_local" and metrics["settings"]["label_fraction"] == 0.1
    assert json.loads((out / "model_info.json").read_text())["architecture"] == "contrastive_unet"
    for stage in ("global", "local"):
        assert (out / f"pretrained_{stage}_backbone.pt").is_file()
        history = json.loads((out / f"pretraining_{stage}" / "history.json").read_text())["epochs"]
        assert len(history) == 2 and all(epoch["loss"] is not None for epoch in history)
    assert sorted(p.name for p in predictions.glob("*_mask.png")) == ["tall_mask.png", "wide_mask.png"]
    result = _bundle(
        "run", "training", "--config_file", f"bundles/{name}/configs/train.json", "--output_dir", str(out), "--max_epochs", "1"
    )
    log = result.stdout + result.stderr
    assert log.count("pretraining already done") == 2 and "starts from the features of" in log


@pytest.mark.parametrize("architecture", ["contrastive_unet", "ssl4mis_unet"])
def test_contrastive_fine_tuning_network_takes_stage_weights_and_loads_where_evaluation_builds(architecture: str):
    """Fine-tuning builds the stages' class (it has the encoder/feature parts); evaluate.json builds the plain network
    with the same parameter names, and with the same seed the same initial weights."""
    from s4mi_monai.networks import build_segmentation_network

    trained = _parsed("contrast_seg_isic", "network_def", architecture=architecture)
    assert trained.encoder_state_dict() and trained.feature_state_dict()
    torch.manual_seed(0)
    plain = build_segmentation_network(architecture)
    torch.manual_seed(0)
    again = _parsed("contrast_seg_isic", "network_def", architecture=architecture)
    assert plain.state_dict().keys() == again.state_dict().keys()
    if architecture == "ssl4mis_unet":
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(value, again.state_dict()[key], msg=key)


@pytest.mark.slow
def test_contrastive_segmentation_with_the_cross_teaching_unet_fine_tunes_from_its_global_stage(tmp_path: Path):
    out = tmp_path / "model"
    result = _bundle(
        "run", "training", "--config_file", "bundles/contrast_seg_isic/configs/train.json", "--output_dir", str(out),
        "--architecture", "ssl4mis_unet", "--pretraining", "global", "--global_epochs", "1", "--max_epochs", "1",
    )
    assert "starts from the encoder of" in result.stdout + result.stderr
    assert json.loads((out / "metrics.json").read_text())["test"]["iou_per_image_mean"] >= 0


@pytest.mark.parametrize(
    ("pretraining", "stages", "start"),
    [("global_local", (True, True), "features"), ("global", (True, False), "encoder"), ("none", (False, False), None)],
)
def test_contrastive_pretraining_knob_picks_the_stages(pretraining: str, stages: tuple[bool, bool], start: str | None):
    from s4mi_monai.bundle import contrastive_stage, finetuning_start

    assert (contrastive_stage(pretraining, "global"), contrastive_stage(pretraining, "local")) == stages
    path, part = finetuning_start(pretraining, "global.pt", "local.pt")
    assert (path is None) == (start is None) and (start is None or part == start)
    assert contrastive_stage("global_unsupervised_local", "local")
    with pytest.raises(ValueError, match="--pretraining"):
        contrastive_stage("local", "global")


@pytest.mark.slow
def test_picie_bundle_end_to_end(tmp_path: Path):
    """PiCIE without masks, final clustering and matching; evaluate, inference (cluster map and mask), export; then a
    U-Net fine-tuned from its encoder, which refuses to overwrite the PiCIE model."""
    root = "bundles/picie_seg_isic"
    out = tmp_path / "model"
    _bundle("run", "training", "--config_file", f"{root}/configs/train.json", "--output_dir", str(out), "--pretrain_epochs", "2")
    for name in ("model.pt", "pretrained_backbone.pt", "picie_network.pt", "test_samples.json", "pretraining/history.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert metrics["settings"]["label_fraction"] == 0.0 and metrics["validation"] is None
    assert set(test["cluster_to_class"].values()) == {0, 1} and 0 <= test["miou_all_classes"] <= 1
    recomputed = to_json_safe(read_samples(out).metrics())
    assert {key: test[key] for key in recomputed} == recomputed, "test_samples.json reproduces the shared evaluator's metrics"
    history = json.loads((out / "pretraining" / "history.json").read_text())["epochs"]
    assert len(history) == 2 and all(epoch["training"]["kmeans_distance_view1"] >= 0 for epoch in history)
    info = json.loads((out / "model_info.json").read_text())
    assert info["method"] == "picie" and info["cluster_to_class"] == test["cluster_to_class"]

    (out / "metrics.json").unlink()
    _bundle("run", "evaluating", "--config_file", "configs/evaluate.json", "--output_dir", str(out), cwd=REPO / root)
    assert json.loads((out / "metrics.json").read_text())["test"] == test, "evaluate.json scores the saved model as training did"

    predictions = tmp_path / "predictions"
    new_images = _new_images_folder(tmp_path / "new")
    _bundle(
        "run",
        "--config_file",
        f"{root}/configs/inference.json",
        "--input_dir",
        str(new_images),
        "--output_dir",
        str(predictions),
        "--model_path",
        str(out / "model.pt"),
        returncode=1,  # broken.jpg
    )
    for stem, size in (("wide", (90, 120)), ("tall", (150, 100))):
        clusters, mask = (np.asarray(Image.open(predictions / f"{stem}_{kind}.png")) for kind in ("clusters", "mask"))
        assert clusters.shape == mask.shape == size
        mapping = {255 * int(k): 255 * max(v, 0) for k, v in test["cluster_to_class"].items()}  # K = 2: values 0 and 255
        np.testing.assert_array_equal(np.vectorize(mapping.get)(clusters), mask)
    _export(root, out)

    finetune = [
        "run",
        "finetune",
        "--config_file",
        f"{root}/configs/train.json",
        "--label_fraction",
        "0.5",
        "--max_epochs",
        "1",
        "--pretrained_backbone",
        str(out / "pretrained_backbone.pt"),
    ]
    refused = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *finetune, "--output_dir", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "holds a picie model" in refused.stdout + refused.stderr
    result = _bundle(*finetune, "--output_dir", str(tmp_path / "unet"))
    assert "fine-tuning starts from" in result.stdout + result.stderr and "0 missing" in result.stdout + result.stderr
    unet = json.loads((tmp_path / "unet" / "metrics.json").read_text())
    assert unet["settings"]["label_fraction"] == 0.5 and unet["settings"]["architecture"] == "resnet_unet"


@pytest.mark.slow
def test_cross_teaching_bundle_end_to_end(tmp_path: Path):
    """Both networks trained on 50 % of the masks and scored; evaluate either; predict with either or their mean."""
    metrics, predictions = _run_family("crossteach_seg_isic", tmp_path)
    out = tmp_path / "model"
    assert metrics["settings"]["label_fraction"] == 0.5 and metrics["settings"]["reported_branch"] == "cnn"
    assert set(metrics["branches"]) == {"cnn", "transformer"} and metrics["test"] == metrics["branches"]["cnn"]["test"]
    settings = metrics["settings"]
    assert settings["n_labeled_training_items"] + settings["n_unlabeled_training_items"] == 105
    for branch in ("cnn", "transformer"):
        assert metrics["branches"][branch]["test"]["iou_per_image_mean"] > 0.4, metrics["branches"][branch]["test"]
    history = json.loads((out / "history.json").read_text())["epochs"]
    last = history[-1]
    assert {"cnn validate_metric", "transformer validate_metric"} <= set(last["validation"])
    assert last["training"]["consistency_weight"] == pytest.approx(0.1) and last["training"]["cross_teaching_cnn"] > 0
    assert Image.open(predictions / "wide_mask.png").size == (120, 90)

    _bundle(
        "run",
        "evaluating",
        "--config_file",
        "bundles/crossteach_seg_isic/configs/evaluate.json",
        "--output_dir",
        str(out),
        "--branch",
        "transformer",
    )
    transformer = json.loads((out / "transformer" / "metrics.json").read_text())
    assert transformer["test"] == metrics["branches"]["transformer"]["test"]
    assert to_json_safe(read_samples(out / "transformer").metrics()) == transformer["test"]
    mean = tmp_path / "mean"
    _bundle(
        "run",
        "--config_file",
        "bundles/crossteach_seg_isic/configs/inference.json",
        "--input_dir",
        str(_new_images_folder(tmp_path / "new_images")),
        "--output_dir",
        str(mean),
        "--model_path",
        str(out / "model.pt"),
        "--predict_with",
        "mean",
        returncode=1,  # broken.jpg
    )
    assert Image.open(mean / "tall_mask.png").size == (100, 150)


def test_ssl4mis_preset_switches_cross_teaching_to_sgd_with_poly_decay():
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / "crossteach_seg_isic" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "ssl4mis.json")])
    parser["iterations_per_epoch"] = 4  # instead of the data loader's length: no data needed
    for key in ("optimizer", "transformer_optimizer"):
        optimizer = parser.get_parsed_content(key)
        assert isinstance(optimizer, torch.optim.SGD)
        assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 1e-4
    schedule = parser.get_parsed_content("lr_schedule")
    assert schedule[0] == pytest.approx(0.01) and schedule[-1] == pytest.approx(0.01 * (1 / len(schedule)) ** 0.9)


# ----------------------------------------------------------------------------------------- fair baselines


def test_pretrain_writes_each_backbone_and_skips_a_finished_pretraining(tmp_path: Path):
    from s4mi_monai.bundle import pretrain

    class Trainer:
        runs = 0

        def run(self) -> None:
            self.runs += 1

    class Handler:
        def attach(self, engine: Trainer) -> None:
            self.engine = engine

    trainer, handler, path = Trainer(), Handler(), str(tmp_path / "backbone.pt")
    pretrain(trainer, [handler], [(torch.nn.Linear(2, 2), path)], skip_if_done=True)
    assert trainer.runs == 1 and handler.engine is trainer and Path(path).is_file()
    pretrain(trainer, [handler], [(torch.nn.Linear(2, 2), path)], skip_if_done=True)
    assert trainer.runs == 1, "a restarted run does not pretrain again"
    pretrain(trainer, [handler], [(torch.nn.Linear(2, 2), path)])
    assert trainer.runs == 2, "the pretrain id always pretrains"


@pytest.mark.parametrize(
    ("dataset_size", "batch_size", "world_size", "dropped"),
    [
        (17, 8, 1, True),  # 8 + 8 + 1: the lone image goes
        (18, 8, 1, False),  # 8 + 8 + 2: kept
        (16, 8, 1, False),
        (1, 8, 1, False),  # a one-image dataset has nothing else to train on
        (9, 8, 1, True),
        (33, 8, 2, True),  # 17 per rank (padded): 8 + 8 + 1
        (34, 8, 2, True),
        (35, 8, 2, False),
    ],
)
def test_a_training_loader_drops_a_last_batch_of_one_image_only(monkeypatch, dataset_size, batch_size, world_size, dropped):
    from s4mi_monai.bundle import drop_single_image_batch

    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    assert drop_single_image_batch(dataset_size, batch_size) is dropped


def test_epochs_for_iterations():
    from s4mi_monai.bundle import epochs_for_iterations

    assert epochs_for_iterations(None, 8, 7) == 8  # the default: max_epochs
    assert epochs_for_iterations(21, 8, 7) == 3
    assert epochs_for_iterations(22, 8, 7) == 4  # whole epochs, at least the asked steps
    assert epochs_for_iterations("30000", 50, 88) == 341
    assert epochs_for_iterations(5, 8, 100) == 1
    with pytest.raises(ValueError, match="at least 1"):
        epochs_for_iterations(0, 8, 7)
    with pytest.raises(ValueError, match="whole number of optimiser steps"):
        epochs_for_iterations("many", 8, 7)
    with pytest.raises(ValueError, match="training data loader is empty"):
        epochs_for_iterations(100, 8, 0)


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("supervised_cls_isic", ""),
        ("supervised_seg_isic", ""),
        ("dino_isic", ""),
        ("cass_isic", "finetune_transformer#"),
        ("crossteach_seg_isic", ""),
    ],
)
def test_max_iterations_sets_the_epochs_and_the_schedule_of_every_training(name: str, section: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    parser["max_iterations"] = 100
    parser[f"{section}iterations_per_epoch"] = 7  # instead of the data loader's length: no data needed
    assert parser.get_parsed_content(f"{section}epochs") == math.ceil(100 / 7)
    if name.startswith("crossteach"):
        assert len(parser.get_parsed_content("lr_schedule")) == len(parser.get_parsed_content("consistency_schedule")) == 15 * 7
    else:
        assert parser.get_parsed_content(f"{section}lr_scheduler").T_max == 15 * 7
    assert parser[f"{section}train#trainer"]["max_epochs"].replace("::", "#") == f"@{section}epochs"
    parser["max_iterations"] = None
    parser.parse()
    assert parser.get_parsed_content(f"{section}epochs") == parser.get_parsed_content("max_epochs")


@pytest.mark.parametrize("name", ["dino_isic", "cass_isic"])
def test_pretrain_max_iterations_sizes_the_pretraining_and_its_schedules(name: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    parser.update({"pretrain_max_iterations": 100, "ssl#iterations_per_epoch": 7})
    assert parser.get_parsed_content("ssl#epochs") == 15
    assert parser["ssl#trainer"]["max_epochs"].replace("::", "#") == "@ssl#epochs"
    if name == "dino_isic":
        for schedule in ("lr_schedule", "weight_decay_schedule", "momentum_schedule", "teacher_temp_schedule"):
            assert len(parser.get_parsed_content(f"ssl#{schedule}")) == 15 * 7, schedule
    else:
        assert parser.get_parsed_content("ssl#lr_scheduler").T_max == 15 * 7


def _parsed(name: str, key: str, **overrides) -> torch.nn.Module:
    """A network of a bundle's train.json, built after seeding as the bundle's ``initialize`` does."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    parser.update({**overrides, "device": "cpu"})
    set_determinism(seed=0)
    try:
        return parser.get_parsed_content(key)
    finally:
        set_determinism(seed=None)


@pytest.mark.parametrize(
    ("architecture", "crossteach_network"),
    [("resnet_unet", None), ("ssl4mis_unet", "network"), ("swin_unet", "transformer_network"), ("swin_unetr", "transformer_network")],
)
def test_supervised_segmentation_trains_the_networks_of_cross_teaching(architecture: str, crossteach_network: str | None):
    """Same seed, same weights: ``--architecture`` builds exactly cross teaching's network (default: the ResNet-34 U-Net)."""
    from s4mi_monai.networks import ResNetUNet

    supervised = _parsed("supervised_seg_isic", "network", architecture=architecture)
    if crossteach_network is None:
        torch.manual_seed(0)
        expected = ResNetUNet(in_channels=3, out_channels=2, encoder="resnet34")
    else:
        expected = _parsed("crossteach_seg_isic", crossteach_network, transformer=architecture)
    assert type(supervised) is type(expected)
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(supervised.state_dict()[key], value, rtol=0, atol=0)
    assert supervised.state_dict().keys() == expected.state_dict().keys()


def test_transformer_size_is_checked_before_the_datalist_is_read(tmp_path: Path):
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / "supervised_seg_isic" / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        datalist=str(tmp_path / "not_there.json"),
        architecture="swin_unet",
        image_size=100,
    )
    with pytest.raises(RuntimeError, match="check_segmentation_architecture") as error:
        workflow.initialize()  # MONAI wraps what a config expression raises
    assert isinstance(error.value.__cause__, ValueError)
    assert "--image_size 100: swin_unet takes sides that are multiples of 32" in str(error.value.__cause__)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["ssl4mis_unet", "swin_unet"])
def test_segmentation_bundle_with_cross_teaching_networks_end_to_end(architecture: str, tmp_path: Path):
    """Train the cross-teaching CNN or Swin-UNet on every mask; evaluation, inference and export read the network from model_info."""
    trace = ["--use_trace", "true", "--input_shape", "[1, 3, 64, 64]"] if architecture == "swin_unet" else []
    metrics, predictions = _run_family("supervised_seg_isic", tmp_path, ["--architecture", architecture], trace)
    assert metrics["settings"]["architecture"] == architecture and metrics["settings"]["transformer_embed_dim"] == 24
    assert json.loads((tmp_path / "model" / "model_info.json").read_text())["architecture"] == architecture
    assert metrics["test"]["iou_per_image_mean"] > 0.4, metrics["test"]
    assert Image.open(predictions / "wide_mask.png").size == (120, 90)


@pytest.mark.slow
def test_supervised_vit_with_max_iterations_end_to_end(tmp_path: Path):
    """The CASS demo ViT (ViT-Ti/16) as a supervised classifier, run for a number of optimiser steps instead of epochs."""
    metrics, predictions = _run_family("supervised_cls_isic", tmp_path, ["--backbone", "vit_ti16", "--max_iterations", "15"])
    settings = metrics["settings"]
    per_epoch = math.ceil(settings["n_labeled_training_items"] / settings["batch_size"])
    epochs = math.ceil(15 / per_epoch)
    assert epochs != settings["max_epochs"], "the test must tell max_iterations from max_epochs"
    assert (settings["max_iterations"], settings["iterations_per_epoch"], settings["epochs"]) == (15, per_epoch, epochs)
    assert settings["total_steps"] == epochs * per_epoch and settings["backbone"] == "vit_ti16"
    assert len(json.loads((tmp_path / "model" / "history.json").read_text())["epochs"]) == epochs
    with open(predictions / "predictions.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
