"""Bad inputs: each gives an error naming the file, all listed at once, before anything trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4mi_monai.data import DatasetError, check_items, prepare_csv, prepare_dermofit, prepare_isic2017
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
        rows.append(f"img{k}.png,{'ab'[k % 2]}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    datalist = prepare_csv(tmp_path / "d.csv")
    split_of = {item["image"]: split for split in ("training", "validation", "test") for item in datalist[split]}
    for k in range(15):
        assert split_of[f"img{k}.png"] == split_of[f"img{k + 15}.png"]
    assert datalist["provenance"]["duplicates_across_splits"] == []
