"""The synthetic demo datasets: real layouts, binary masks, determinism, resumable generation, learnable classes."""

from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4mi_monai.data import demo
from s4mi_monai.data.demo import (
    COMPLETE_MARKER,
    DEMO_DATASETS,
    HISTOLOGY_LABELS,
    make_demo_data,
    make_dermofit_like,
    make_histology_like,
    make_isic2017_like,
)

DERMOFIT_CLASSES = ("AK", "BCC", "ML", "SCC", "SK", "IEC", "PYO", "VASC", "DF", "MEL")
SMALL_GENERATORS = {
    "isic2017": functools.partial(make_isic2017_like, n_images=10, size=40),
    "dermofit": functools.partial(make_dermofit_like, per_class=1, size=40),
    "dermatomyositis": functools.partial(make_histology_like, n_patients=5, slides_per_patient=2, height=60, width=80),
}


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _assert_binary_mask_like(mask_path: Path, image_path: Path) -> np.ndarray:
    mask, image = Image.open(mask_path), Image.open(image_path)
    assert mask.mode == "L" and image.mode == "RGB"
    assert mask.size == image.size
    values = np.asarray(mask)
    assert set(np.unique(values)) == {0, 255}
    return values


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _isic_class(row: dict[str, str]) -> int:
    return 1 if row["melanoma"] == "1.0" else 2 if row["seborrheic_keratosis"] == "1.0" else 0


def test_isic2017_layout_masks_and_csv(tmp_path: Path) -> None:
    make_isic2017_like(tmp_path, seed=0, n_images=20, size=48)
    data_dir, mask_dir = tmp_path / "ISIC-2017_Training_Data", tmp_path / "ISIC-2017_Training_Part1_GroundTruth"
    images = sorted(p for p in data_dir.glob("*.jpg"))
    superpixels = sorted(data_dir.glob("*_superpixels.png"))
    assert len(images) == 20 and len(superpixels) == 3
    assert all(re.fullmatch(r"ISIC_\d{7}\.jpg", p.name) for p in images)
    for path in superpixels:
        assert re.fullmatch(r"ISIC_\d{7}_superpixels\.png", path.name) and Image.open(path).mode == "RGB"
    header, rows = _read_csv(tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv")
    assert header == ["image_id", "melanoma", "seborrheic_keratosis"]
    assert [row["image_id"] for row in rows] == [p.stem for p in images]
    assert all({row["melanoma"], row["seborrheic_keratosis"]} <= {"0.0", "1.0"} for row in rows)
    assert np.bincount([_isic_class(row) for row in rows]).tolist() == [10, 6, 4]  # 50/30/20 %
    for path in images:
        assert Image.open(path).format == "JPEG"
        _assert_binary_mask_like(mask_dir / f"{path.stem}_segmentation.png", path)
    assert "seed 0" in (tmp_path / "README.txt").read_text()


def test_dermofit_layout_and_masks(tmp_path: Path) -> None:
    make_dermofit_like(tmp_path, seed=0, per_class=3, size=48)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(DERMOFIT_CLASSES)
    lesion_ids = []
    for name in DERMOFIT_CLASSES:
        lesion_dirs = sorted((tmp_path / name).iterdir())
        assert len(lesion_dirs) == 3
        for lesion_dir in lesion_dirs:
            assert re.fullmatch(rf"{name}\d+", lesion_dir.name)
            assert sorted(p.name for p in lesion_dir.iterdir()) == [f"{lesion_dir.name}.png", f"{lesion_dir.name}mask.png"]
            _assert_binary_mask_like(lesion_dir / f"{lesion_dir.name}mask.png", lesion_dir / f"{lesion_dir.name}.png")
            lesion_ids.append(lesion_dir.name)
    assert len(set(lesion_ids)) == len(lesion_ids)
    assert "seed 0" in (tmp_path / "README.txt").read_text()


def test_histology_layout_labels_and_masks(tmp_path: Path) -> None:
    make_histology_like(tmp_path, seed=0, n_patients=6, slides_per_patient=2, height=96, width=128)
    header, rows = _read_csv(tmp_path / "labels.csv")
    assert header == ["image", "mask", "patient", "phenotypes"]
    assert len(rows) == 12 and len({row["patient"] for row in rows}) == 6
    patients_per_label: dict[str, set[str]] = {label: set() for label in HISTOLOGY_LABELS}
    for row in rows:
        slide_id = Path(row["image"]).stem
        assert re.fullmatch(r"P\d+_S\d+", slide_id) and slide_id.startswith(row["patient"] + "_")
        assert row["image"] == f"slides/{slide_id}.png" and row["mask"] == f"masks/{slide_id}_mask.png"
        assert Image.open(tmp_path / row["image"]).size == (128, 96)
        mask = _assert_binary_mask_like(tmp_path / row["mask"], tmp_path / row["image"])
        assert 0.01 < (mask > 0).mean() < 0.5
        labels = row["phenotypes"].split(";")
        assert 1 <= len(labels) <= 3 and len(set(labels)) == len(labels) and set(labels) <= set(HISTOLOGY_LABELS)
        for label in labels:
            patients_per_label[label].add(row["patient"])
    assert all(len(patients) >= 2 for patients in patients_per_label.values()), patients_per_label
    assert "seed 0" in (tmp_path / "README.txt").read_text()


def test_histology_default_slides_are_large_and_not_square(tmp_path: Path) -> None:
    make_histology_like(tmp_path, seed=0, n_patients=1, slides_per_patient=1)
    width, height = Image.open(tmp_path / "slides" / "P1_S1.png").size
    assert (width, height) == (900, 640) and min(width, height) > 480


@pytest.mark.parametrize("name", DEMO_DATASETS)
def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path, name: str) -> None:
    generate = SMALL_GENERATORS[name]
    generate(tmp_path / "a", seed=3)
    generate(tmp_path / "b", seed=3)
    generate(tmp_path / "c", seed=4)
    first, again, other = (_file_bytes(tmp_path / run) for run in "abc")
    assert first == again
    images = [path for path in first if path.endswith((".jpg", ".png")) and "mask" not in path and "segmentation" not in path]
    assert images and all(first[path] != other.get(path) for path in images[:5])


def test_make_demo_data_writes_all_three_with_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, generate in SMALL_GENERATORS.items():
        monkeypatch.setitem(demo._GENERATORS, name, generate)
    roots = make_demo_data(tmp_path, seed=5)
    assert roots == {name: tmp_path / name for name in DEMO_DATASETS}
    for root in roots.values():
        assert json.loads((root / COMPLETE_MARKER).read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEMO_DATASETS)  # no temporary folders left


def test_make_demo_data_skips_complete_and_regenerates_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(demo._GENERATORS, "isic2017", SMALL_GENERATORS["isic2017"])
    root = make_demo_data(tmp_path, seed=0, datasets=["isic2017"])["isic2017"]
    sentinel = root / "sentinel"

    def regenerated(**kwargs: object) -> bool:
        sentinel.touch()
        make_demo_data(tmp_path, datasets=["isic2017"], **kwargs)
        return not sentinel.exists()

    assert not regenerated(seed=0)  # complete for this seed: kept
    assert regenerated(seed=0, overwrite=True)
    (root / COMPLETE_MARKER).unlink()  # as if killed between the move and the marker
    assert regenerated(seed=0)
    assert regenerated(seed=1)  # complete, but for another seed
    assert json.loads((root / COMPLETE_MARKER).read_text())["seed"] == 1


def test_make_demo_data_removes_folders_of_killed_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(demo._GENERATORS, "isic2017", SMALL_GENERATORS["isic2017"])
    abandoned = tmp_path / "isic2017.tmp-999999999"  # above Linux's pid_max: no such process
    abandoned.mkdir()
    make_demo_data(tmp_path, seed=0, datasets=["isic2017"])
    assert not abandoned.exists()


def test_make_demo_data_rejects_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown demo dataset"):
        make_demo_data(tmp_path, datasets=["mnist"])


def test_isic_classes_differ_visibly_by_lesion_colour(tmp_path: Path) -> None:
    """Nearest class-mean colour histogram of the lesion pixels: chance is 1/3, measured ~0.98-1.0."""
    make_isic2017_like(tmp_path, seed=0, n_images=90, size=64)
    _, rows = _read_csv(tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv")
    labels = np.array([_isic_class(row) for row in rows])
    features = []
    for row in rows:
        image = np.asarray(Image.open(tmp_path / "ISIC-2017_Training_Data" / f"{row['image_id']}.jpg"))
        mask = np.asarray(Image.open(tmp_path / "ISIC-2017_Training_Part1_GroundTruth" / f"{row['image_id']}_segmentation.png"))
        bins = image[mask > 0] // 64  # 4 levels per channel
        features.append(np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64) / len(bins))
    features = np.array(features)
    train = np.arange(len(labels)) % 2 == 0
    centroids = np.stack([features[train & (labels == c)].mean(axis=0) for c in range(3)])
    predicted = np.argmin(((features[~train, None] - centroids) ** 2).sum(axis=-1), axis=1)
    balanced_accuracy = np.mean([np.mean(predicted[labels[~train] == c] == c) for c in range(3)])
    assert balanced_accuracy > 0.8


def _ensure_and_read(datalist: dict, seen: dict) -> None:
    from s4mi_monai.data.demo_datalists import ensure_demo_files

    ensure_demo_files(datalist)
    root = Path(datalist["dataset_dir"])
    seen[os.getpid()] = [(root / item["image"]).read_text() for item in datalist["training"]]


def test_processes_asking_for_demo_data_at_once_generate_it_once_and_never_see_it_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s4mi_monai.data import demo_datalists

    generations = tmp_path / "generations.log"
    splits = {"training": [{"image": f"{index}.txt"} for index in range(4)], "validation": [], "test": []}

    def slow_prepare_demo(demo_root: Path, datalist_dir: Path, seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
        with generations.open("a") as log:
            log.write(f"{os.getpid()}\n")
        (Path(demo_root) / "isic2017").mkdir(parents=True)
        for item in splits["training"]:  # slowly, as the real generator: a reader must not start half-way
            (Path(demo_root) / "isic2017" / item["image"]).write_text("complete")
            time.sleep(0.1)
        Path(datalist_dir).mkdir(parents=True)
        written = Path(datalist_dir) / "demo_isic2017.json"
        written.write_text(json.dumps(splits))
        return {"isic2017": written}

    monkeypatch.setattr(demo_datalists, "prepare_demo", slow_prepare_demo)
    datalist = {"name": "isic2017", "dataset_dir": str(tmp_path / "demo_data" / "isic2017"), "provenance": {"demo_seed": 0}, **splits}
    context = multiprocessing.get_context("fork")  # the patched generator is inherited
    seen = context.Manager().dict()
    processes = [context.Process(target=_ensure_and_read, args=(datalist, seen)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert len(generations.read_text().splitlines()) == 1
    assert list(seen.values()) == [["complete"] * 4] * 3
    assert sorted(path.name for path in (tmp_path / "demo_data").iterdir()) == [".generating.lock", "isic2017"]
