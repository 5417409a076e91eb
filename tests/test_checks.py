"""Bad inputs: each gives an error naming the file, all listed at once, before anything trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4mi_monai.data import (
    MIN_IMAGE_SIDE,
    CheckedFiles,
    DatasetError,
    check_items,
    load_datalist,
    prepare_csv,
    prepare_dermofit,
    prepare_isic2017,
    save_datalist,
    verify_datalist,
)
from s4mi_monai.transforms import rgb_reader
from tests.conftest import write_image, write_mask


def _problem_for(error: DatasetError, path: Path) -> str:
    matches = [p.message for p in error.problems if Path(p.path) == path]
    assert matches, f"no problem reported for {path}: {error}"
    return matches[0]


def test_every_bad_input_is_named_in_one_error(isic_root: Path):
    data = isic_root / "ISIC-2017_Training_Data"
    masks = isic_root / "ISIC-2017_Training_Part1_GroundTruth"
    corrupt, truncated, empty, missing = (data / f"ISIC_{k:07d}.jpg" for k in (0, 1, 2, 3))
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 20)
    truncated.write_bytes(truncated.read_bytes()[: len(truncated.read_bytes()) // 2])
    empty.write_bytes(b"")
    missing.unlink()
    write_mask(masks / "ISIC_0000004_segmentation.png", size=(10, 10))
    write_mask(masks / "ISIC_0000005_segmentation.png", levels=(0, 100, 255))
    with pytest.raises(DatasetError) as caught:
        prepare_isic2017(isic_root)
    assert "listed in" in _problem_for(caught.value, missing) and "missing" in _problem_for(caught.value, missing)
    assert "decoded" in _problem_for(caught.value, corrupt)
    assert "decoded" in _problem_for(caught.value, truncated)
    assert "0 bytes" in _problem_for(caught.value, empty)
    assert "differs from image size" in _problem_for(caught.value, masks / "ISIC_0000004_segmentation.png")
    assert "3 levels" in _problem_for(caught.value, masks / "ISIC_0000005_segmentation.png")
    assert len(caught.value.problems) == 6, str(caught.value)


def test_unknown_label_in_ground_truth_csv(isic_root: Path):
    csv_path = isic_root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",1.0,1.0"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"GroundTruth.csv:2: unknown label"):
        prepare_isic2017(isic_root)


def test_image_without_ground_truth_row_is_an_unknown_label(isic_root: Path):
    extra = write_image(isic_root / "ISIC-2017_Training_Data" / "ISIC_0999999.jpg")
    with pytest.raises(DatasetError) as caught:
        prepare_isic2017(isic_root)
    assert "unknown label" in _problem_for(caught.value, extra)


def test_class_with_no_image(dermofit_root: Path):
    import shutil

    for lesion in (dermofit_root / "DF").iterdir():
        shutil.rmtree(lesion)
    with pytest.raises(DatasetError, match="class 'DF' has no image"):
        prepare_dermofit(dermofit_root)


def test_csv_unknown_label_and_missing_column(tmp_path: Path):
    write_image(tmp_path / "a.png")
    (tmp_path / "d.csv").write_text("image,label\na.png,cat\n")
    with pytest.raises(DatasetError, match=r"d.csv:2: unknown label 'cat'"):
        prepare_csv(tmp_path / "d.csv", classes="dog,bird")
    with pytest.raises(DatasetError, match="column 'patient_id' not found"):
        prepare_csv(tmp_path / "d.csv", patient_column="patient_id")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16"])
def test_other_image_modes_are_accepted_and_read_as_rgb(tmp_path: Path, mode: str):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).save(path)
    else:
        write_image(path, mode=mode)
    report = check_items([{"image": path.name, "label": 0}], tmp_path, ["only"])
    assert report.problems == []
    image, _ = rgb_reader().get_data(rgb_reader().read(str(path)))
    assert image.shape[-1] == 3 and image.dtype != object


def test_palette_mask_uses_indices(tmp_path: Path):
    write_image(tmp_path / "img.png")
    mask = Image.fromarray(np.tile(np.array([0, 1], dtype=np.uint8), (12, 8))).convert("P")
    mask.save(tmp_path / "mask.png")
    report = check_items([{"image": "img.png", "mask": "mask.png", "label": 0}], tmp_path, ["only"])
    assert report.problems == []


def test_duplicates_are_kept_in_one_split(tmp_path: Path):
    rows = ["image,label"]
    for k in range(30):
        write_image(tmp_path / f"img{k}.png", seed=k % 15)  # every image twice
        rows.append(f"img{k}.png,{'ab'[k % 15 % 2]}")  # the copies carry the same label
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    datalist = prepare_csv(tmp_path / "d.csv")
    split_of = {item["image"]: split for split in ("training", "validation", "test") for item in datalist[split]}
    for k in range(15):
        assert split_of[f"img{k}.png"] == split_of[f"img{k + 15}.png"]
    assert datalist["provenance"]["duplicates_across_splits"] == []


def test_a_tiny_image_is_refused_unless_the_minimum_side_is_lowered(tmp_path: Path):
    write_image(tmp_path / "ok.png")
    tiny = write_image(tmp_path / "tiny.png", size=(1, 1))
    items = [{"image": "ok.png", "label": 0}, {"image": "tiny.png", "label": 0}]
    report = check_items(items, tmp_path, ["only"])
    assert [str(p) for p in report.problems] == [f"{tiny}: image is 1x1 px, smaller than {MIN_IMAGE_SIDE} px on a side (--min_side)"]
    assert check_items(items, tmp_path, ["only"], min_side=1).problems == []


def test_identical_images_with_two_labels_are_refused_and_tiles_only_warned(tmp_path: Path):
    first, copy = write_image(tmp_path / "a.png", seed=3), write_image(tmp_path / "b.png", seed=3)
    items = [{"image": "a.png", "label": 0}, {"image": "b.png", "label": 1}]
    report = check_items(items, tmp_path, ["nevus", "melanoma"])
    assert [p.path for p in report.problems] == [str(copy)]
    assert "labelled 'melanoma'" in report.problems[0].message and f"identical file {first} is labelled 'nevus'" in report.problems[0].message
    write_image(tmp_path / "c.png", seed=4)
    same_label = [{"image": "a.png", "label": 1}, {"image": "b.png", "label": 1}, {"image": "c.png", "label": 0}]
    assert check_items(same_label, tmp_path, ["nevus", "melanoma"]).problems == []
    tiles = [dict(item, slide=f"s{k}") for k, item in enumerate(items)]  # blank tiles of two slides
    report = check_items(tiles, tmp_path, ["nevus", "melanoma"])
    assert report.problems == [] and "identical file" in report.warnings[0]


def _hand_edited(tmp_path: Path) -> tuple[dict, Path]:
    """A prepared datalist written to disk, to be edited by hand as a user would."""
    rows = ["image,label"] + [f"img{k}.png,{'ab'[k % 2]}" for k in range(12)]
    for k in range(12):
        write_image(tmp_path / f"img{k}.png", seed=k)
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    path = save_datalist(prepare_csv(tmp_path / "d.csv"), tmp_path / "datalist.json")
    return json.loads(path.read_text()), path


def test_a_hand_edited_datalist_is_checked_whole_before_training(tmp_path: Path):
    datalist, path = _hand_edited(tmp_path)
    verify_datalist(load_datalist(path))  # as prepared: fine
    datalist["test"][0]["label"] = 7  # out of range, in the test split only
    datalist["validation"][0]["label"] = "1"  # a string, not an index
    datalist["label_fractions"]["0.1"].append("elsewhere.png")
    truncated = tmp_path / datalist["training"][0]["image"]
    truncated.write_bytes(truncated.read_bytes()[:100])  # damaged after preparing
    path.write_text(json.dumps(datalist))
    with pytest.raises(DatasetError) as caught:
        verify_datalist(load_datalist(path))
    text = str(caught.value)
    assert f"datalist {path}" in text and len(caught.value.problems) == 4, text
    assert "label 7 is not a known class index (0..1)" in _problem_for(caught.value, tmp_path / datalist["test"][0]["image"])
    assert "label '1' is not a known class index" in _problem_for(caught.value, tmp_path / datalist["validation"][0]["image"])
    assert "decoded" in _problem_for(caught.value, truncated)
    assert "label fraction 0.1 lists 1 image(s) not in training, e.g. elsewhere.png" in _problem_for(caught.value, path)


def test_classes_written_as_a_string_are_named_as_such(tmp_path: Path):
    datalist, path = _hand_edited(tmp_path)
    datalist["classes"] = "ab"
    path.write_text(json.dumps(datalist))
    with pytest.raises(DatasetError, match=r"classes must be a list of class names, got 'ab'"):
        verify_datalist(load_datalist(path))


def test_unchanged_files_are_not_decoded_again_and_changed_ones_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import s4mi_monai.data.check as check

    _, path = _hand_edited(tmp_path)  # preparing checked (and cached) every file
    decoded = []
    original = check._decode
    monkeypatch.setattr(check, "_decode", lambda file: decoded.append(Path(file).name) or original(file))
    verify_datalist(load_datalist(path))
    assert decoded == []
    write_image(tmp_path / "img3.png", seed=99)  # replaced: new content, new size or time
    os.utime(tmp_path / "img3.png", ns=(1, 1))
    verify_datalist(load_datalist(path))
    assert decoded == ["img3.png"]
    cache = CheckedFiles()
    assert cache.get(str(tmp_path / "img3.png"), is_mask=False) is not None and cache.path.parent == Path(os.environ["S4MI_CACHE_DIR"])


@pytest.mark.slow
def test_a_bundle_refuses_a_bad_datalist_before_its_first_step(tmp_path: Path):
    datalist, path = _hand_edited(tmp_path)
    datalist["test"][0]["label"] = 7
    path.write_text(json.dumps(datalist))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/supervised_cls_isic/configs/train.json"]
    result = subprocess.run(
        [*command, "--datalist", str(path), "--output_dir", str(out), "--image_size", "32", "--max_epochs", "1"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert f"problem(s) in the datalist {path}" in result.stderr and "label 7 is not a known class index" in result.stderr
    assert not (out / "history.json").exists() and not (out / "checkpoint.pt").exists()
