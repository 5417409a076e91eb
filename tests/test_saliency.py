"""Gradient saliency maps: their values, the state they leave the network in, the panels and ``s4mi saliency``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from s4mi_monai.bundle import write_model_info
from s4mi_monai.cli import S4MI
from s4mi_monai.networks import Classifier
from s4mi_monai.visualize import saliency_maps, write_item_saliency, write_saliency_panels

REPO = Path(__file__).resolve().parents[1]


class TwoRegions(nn.Module):
    """Logit 0 reads only the top-left 8x8 pixels, logit 1 only the bottom-right 8x8 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([1.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, :, :8, :8].sum((1, 2, 3)), x[:, :, -8:, -8:].sum((1, 2, 3))], dim=1) * self.scale


def _region_masks(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    top_left, bottom_right = torch.zeros(size, size, dtype=torch.bool), torch.zeros(size, size, dtype=torch.bool)
    top_left[:8, :8] = True
    bottom_right[-8:, -8:] = True
    return top_left, bottom_right


@pytest.mark.parametrize("backbone", ["resnet18", "vit_ti16"])
def test_maps_have_image_shape_and_unit_range(backbone: str):
    torch.manual_seed(0)
    network = Classifier(backbone=backbone, num_classes=3, image_size=32)
    maps = saliency_maps(network, torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 1, 32, 32)
    assert maps.min() >= 0 and torch.allclose(maps.amax(dim=(1, 2, 3)), torch.ones(2))


def test_map_is_zero_outside_the_region_the_logit_reads():
    top_left, bottom_right = _region_masks()
    images = torch.rand(1, 3, 32, 32)
    images[..., -8:, -8:] = 0  # logit 0 wins: the prediction is explained
    maps = saliency_maps(TwoRegions(), images)[0, 0]
    assert (maps[~top_left] == 0).all() and (maps[top_left] > 0).all()
    given = saliency_maps(TwoRegions(), images, class_index=1)[0, 0]
    assert (given[~bottom_right] == 0).all() and (given[bottom_right] > 0).all()


def test_class_index_per_image_and_default_is_the_prediction():
    torch.manual_seed(0)
    network = Classifier(backbone="resnet18", num_classes=3, image_size=32).eval()
    images = torch.randn(2, 3, 32, 32)
    predicted = network(images).argmax(1).tolist()
    torch.testing.assert_close(saliency_maps(network, images), saliency_maps(network, images, class_index=predicted))
    other = [(k + 1) % 3 for k in predicted]
    assert not torch.allclose(saliency_maps(network, images), saliency_maps(network, images, class_index=other))
    with pytest.raises(ValueError, match="class_index"):
        saliency_maps(network, images, class_index=[0])


def test_network_mode_flags_and_gradients_are_restored():
    torch.manual_seed(0)
    network = Classifier(backbone="resnet18", num_classes=3, image_size=32, dropout=0.5).train()
    network.backbone.bn1.eval()  # a frozen batch norm inside a training network stays frozen
    network.head.weight.requires_grad_(False)
    network.backbone.conv1.weight.grad = torch.ones_like(network.backbone.conv1.weight)
    modes = {name: module.training for name, module in network.named_modules()}
    flags = {name: parameter.requires_grad for name, parameter in network.named_parameters()}
    with torch.no_grad():  # the maps need gradients even when the caller turned them off
        saliency_maps(network, torch.randn(1, 3, 32, 32))
    assert {name: module.training for name, module in network.named_modules()} == modes
    assert {name: parameter.requires_grad for name, parameter in network.named_parameters()} == flags
    assert (network.backbone.conv1.weight.grad == 1).all()
    assert all(parameter.grad is None for name, parameter in network.named_parameters() if name != "backbone.conv1.weight")


def _write_images(folder: Path, corrupt: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / "wide.png", folder / "tall.jpg", folder / "grey.png"]
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(paths[1])
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(paths[2])
    if corrupt:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return paths


def _assert_panel(path: Path) -> None:
    with Image.open(path) as panel:
        panel.verify()
    with Image.open(path) as panel:
        width, height = panel.size
    assert panel.format == "PNG" and 2.4 < width / height < 3.2, f"three panels side by side, got {width}x{height}"


def test_panels_are_written_one_per_image(tmp_path: Path):
    paths = _write_images(tmp_path / "images", corrupt=False)
    images = torch.randn(len(paths), 3, 32, 32)
    written = write_saliency_panels(TwoRegions(), images[:2], [str(p) for p in paths[:2]], tmp_path / "out", ["a", "b"])
    assert written == [tmp_path / "out" / "wide_saliency.png", tmp_path / "out" / "tall_saliency.png"]
    for path in written:
        _assert_panel(path)
    assert not list((tmp_path / "out").glob(".*.tmp")), "written atomically, no temporary file left"


def test_multi_label_panels_and_shared_stems(tmp_path: Path):
    folder = tmp_path / "images"
    paths = _write_images(folder, corrupt=False)
    twin = folder / "wide.jpg"
    Image.open(paths[0]).save(twin)
    written = write_saliency_panels(
        TwoRegions(), torch.randn(2, 3, 32, 32), [str(paths[0]), str(twin)], tmp_path / "out", ["a", "b"], multi_label=True
    )
    assert [path.name for path in written] == ["wide_png_saliency.png", "wide_jpg_saliency.png"]


def test_item_saliency_uses_the_preprocessing_and_n_images(tmp_path: Path):
    paths = _write_images(tmp_path / "images", corrupt=False)
    items = [{"image": str(path), "label": 0} for path in paths]

    def preprocessing(item: dict) -> dict:
        with Image.open(item["image"]) as image:
            pixels = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255
        return {**item, "image": torch.from_numpy(pixels).permute(2, 0, 1)}

    written = write_item_saliency(TwoRegions(), items, preprocessing, ["a", "b"], False, tmp_path / "out", n_images=2)
    assert [path.name for path in written] == ["wide_saliency.png", "tall_saliency.png"]
    assert write_item_saliency(TwoRegions(), items, preprocessing, ["a", "b"], False, tmp_path / "none", n_images=0) == []
    assert not (tmp_path / "none").exists()


def _trained_looking_model(folder: Path, task: str = "classification") -> Path:
    """A randomly initialised classifier saved as a bundle's training saves it."""
    folder.mkdir(parents=True)
    torch.save(Classifier(backbone="resnet18", num_classes=3, image_size=32).state_dict(), folder / "model.pt")
    classes = ["nevus", "melanoma", "seborrheic_keratosis"]
    write_model_info(
        str(folder),
        {"task": task, "classes": classes, "multi_label": False, "image_size": 32, "red_normalization": False, "backbone": "resnet18"},
    )
    return folder / "model.pt"


def test_cli_writes_panels_for_readable_images_and_skips_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    model = _trained_looking_model(tmp_path / "model")
    _write_images(tmp_path / "images")
    out = tmp_path / "saliency"
    with caplog.at_level(logging.ERROR, logger="s4mi_monai"):
        report = S4MI().saliency(
            bundle="supervised_cls_isic", images=str(tmp_path / "images"), model_path=str(model), output_dir=str(out), device="cpu"
        )
    assert "broken.jpg" in caplog.text, "the unreadable file is reported by name"
    assert sorted(p.name for p in out.iterdir()) == ["grey_saliency.png", "tall_saliency.png", "wide_saliency.png"]
    assert "wrote 3 saliency panels" in report
    for path in out.iterdir():
        _assert_panel(path)
    S4MI().saliency(
        bundle="supervised_cls_isic", images=str(tmp_path / "images"), model_path=str(model), output_dir=str(tmp_path / "one"), n_images=1
    )
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["grey_saliency.png"]


def test_cli_defaults_to_the_bundle_model_and_saliency_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bundle = tmp_path / "bundles" / "supervised_cls_isic"
    (bundle / "configs").mkdir(parents=True)
    for name in ("metadata.json", "inference.json"):
        shutil.copy(REPO / "bundles" / "supervised_cls_isic" / "configs" / name, bundle / "configs" / name)
    _trained_looking_model(bundle / "models")
    _write_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    S4MI().saliency(bundle="supervised_cls_isic", images="images", n_images=2)
    assert sorted(p.name for p in (bundle / "saliency").iterdir()) == ["grey_saliency.png", "tall_saliency.png"]


def test_cli_without_a_model_fails_like_inference(tmp_path: Path):
    _write_images(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="no trained model"):
        S4MI().saliency(bundle="supervised_cls_isic", images=str(tmp_path / "images"), model_path=str(tmp_path / "missing" / "model.pt"))


@pytest.mark.parametrize("trained", [True, False])
def test_cli_refuses_segmentation_bundles(tmp_path: Path, trained: bool):
    _write_images(tmp_path / "images")
    model = _trained_looking_model(tmp_path / "model", task="segmentation") if trained else tmp_path / "missing" / "model.pt"
    with pytest.raises(ValueError, match="segmentation bundle"):
        S4MI().saliency(bundle="supervised_seg_isic", images=str(tmp_path / "images"), model_path=str(model))
