"""Shared fixtures: tiny datasets written in the official layouts, so preparers are tested as users run them."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_ISIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2017"


@pytest.fixture(autouse=True, scope="session")
def checked_files_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' own cache of checked files (``S4MI_CACHE_DIR``, inherited by the bundles they run), not the user's."""
    folder = tmp_path_factory.mktemp("s4mi_cache")
    os.environ["S4MI_CACHE_DIR"] = str(folder)
    return folder


def write_image(path: Path, size: tuple[int, int] = (16, 12), seed: int = 0, mode: str = "RGB") -> Path:
    """A small random image (width, height) in the given PIL mode."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (16, 12), levels: tuple[int, ...] = (0, 255), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.choice(np.array(levels, dtype=np.uint8), (size[1], size[0]))).save(path)
    return path


def make_isic_part(root: Path, part: str, labels: list[int], first_id: int = 0, masks: bool = True) -> list[str]:
    """One ISIC-2017 part (``Training``, ``Validation``, ``Test_v2``) with images, masks, CSV and a superpixel file."""
    ids = [f"ISIC_{first_id + i:07d}" for i in range(len(labels))]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "melanoma", "seborrheic_keratosis"])
        for image_id, label in zip(ids, labels):
            writer.writerow([image_id, float(label == 1), float(label == 2)])
    for k, image_id in enumerate(ids):
        write_image(root / f"ISIC-2017_{part}_Data" / f"{image_id}.jpg", seed=first_id + k)
        if masks:
            write_mask(root / f"ISIC-2017_{part}_Part1_GroundTruth" / f"{image_id}_segmentation.png", seed=k)
    write_image(root / f"ISIC-2017_{part}_Data" / f"{ids[0]}_superpixels.png", mode="RGB")
    return ids


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    """ISIC-2017 training part only: 40 images, 20 / 12 / 8 per class."""
    root = tmp_path / "isic"
    make_isic_part(root, "Training", [0] * 20 + [1] * 12 + [2] * 8)
    return root


@pytest.fixture
def dermofit_root(tmp_path: Path) -> Path:
    """Dermofit layout: 10 classes, 6 lesions each (two classes larger)."""
    root = tmp_path / "dermofit"
    from s4mi_monai.data.dermofit import CLASSES

    for c, name in enumerate(CLASSES):
        for k in range(6 + 6 * (c < 2)):
            lesion = root / name / f"{name[0]}{c}{k:02d}"
            write_image(lesion / f"{lesion.name}.png", seed=100 * c + k)
            write_mask(lesion / f"{lesion.name}mask.png", seed=k)
    return root


@pytest.fixture
def histology_csv(tmp_path: Path) -> Path:
    """Multi-label slides, 8 patients x 2 slides, 500x700 (tiles to 2x2 at 480)."""
    root = tmp_path / "histo"
    labels = ["TFH-1", "TFH-217", "TFH-Like", "B cells", "Others"]
    rows = []
    for p in range(8):
        for s in range(2):
            image = write_image(root / "slides" / f"P{p}_S{s}.png", size=(500, 700), seed=10 * p + s)
            write_mask(root / "masks" / f"P{p}_S{s}.png", size=(500, 700), seed=p)
            phenotypes = ";".join(labels[(p + j) % 5] for j in range(1 + s))
            rows.append([str(image.relative_to(root)), f"masks/P{p}_S{s}.png", f"P{p}", phenotypes])
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "patient", "phenotypes"])
        writer.writerows(rows)
    return root / "labels.csv"


def untrained_model(bundle: Path, model_dir: Path, **info: object) -> Path:
    """``model.pt`` (seeded random weights) and ``model_info.json`` for ``bundle``'s inference network, small by default.

    Stands in for a trained model where only the plumbing is tested (packing, serving, exporting).
    """
    import json

    import torch
    from monai.bundle import ConfigParser

    model_dir.mkdir(parents=True, exist_ok=True)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["model_path"] = str(model_dir / "model.pt")
    defaults = parser.get_parsed_content("model_info")
    small = {"encoder": "resnet18"} if "encoder" in defaults else {}
    (model_dir / "model_info.json").write_text(json.dumps({**defaults, **small, **info}))
    parser = ConfigParser()  # read again: model_info is resolved once per parser
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["model_path"] = str(model_dir / "model.pt")
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), model_dir / "model.pt")
    return model_dir

