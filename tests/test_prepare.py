"""The three preparers on small fixtures in the official layouts, and ISIC-2017 on the real download."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from s4mi_monai.data import SPLITS, load_datalist, prepare_csv, prepare_dermofit, prepare_isic2017, save_datalist, split_items
from tests.conftest import SHARED_ISIC, make_isic_part, write_image


def _images(datalist: dict) -> dict[str, set[str]]:
    return {split: {item["image"] for item in datalist[split]} for split in SPLITS}


def _assert_disjoint(datalist: dict) -> None:
    images = _images(datalist)
    assert not images["training"] & images["validation"]
    assert not images["training"] & images["test"]
    assert not images["validation"] & images["test"]


def test_isic2017_random_split_ignores_superpixels(isic_root: Path):
    datalist = prepare_isic2017(isic_root, seed=0)
    _assert_disjoint(datalist)
    all_items = [item for split in SPLITS for item in datalist[split]]
    assert len(all_items) == 40 and not any("superpixels" in item["image"] for item in all_items)
    assert all(item["mask"].endswith("_segmentation.png") for item in all_items)
    assert [len(datalist[s]) for s in SPLITS] == [28, 4, 8]
    assert datalist["classes"] == ["nevus", "melanoma", "seborrheic_keratosis"]
    assert Counter(item["label"] for item in datalist["test"]) == {0: 4, 1: 2, 2: 2}
    assert datalist["provenance"]["split"].startswith("random 70/10/20")


def test_isic2017_uses_official_splits_and_accepts_test_without_masks(isic_root: Path):
    make_isic_part(isic_root, "Validation", [0, 1, 2, 0], first_id=100)
    make_isic_part(isic_root, "Test_v2", [0, 1, 2, 2, 1], first_id=200, masks=False)
    datalist = prepare_isic2017(isic_root)
    assert [len(datalist[s]) for s in SPLITS] == [40, 4, 5]
    assert datalist["provenance"]["split"] == "official"
    assert all("mask" not in item for item in datalist["test"])
    assert all(item["image"].startswith("ISIC-2017_Validation_Data/") for item in datalist["validation"])


def test_isic2017_missing_validation_test_drawn_from_training(isic_root: Path):
    make_isic_part(isic_root, "Validation", [0, 1, 2, 0], first_id=100)
    datalist = prepare_isic2017(isic_root)
    assert len(datalist["validation"]) == 4 and len(datalist["test"]) > 0
    assert "official validation" in datalist["provenance"]["split"]


def test_dermofit_ten_classes_stratified(dermofit_root: Path):
    datalist = prepare_dermofit(dermofit_root, seed=0)
    _assert_disjoint(datalist)
    assert len(datalist["classes"]) == 10
    counts = datalist["provenance"]["counts"]
    assert all(n >= 3 for n in counts["training"]["per_class"].values())
    tenth = {item["label"] for item in datalist["training"] if item["image"] in set(datalist["label_fractions"]["0.1"])}
    assert tenth == set(range(10)), "every class keeps at least one labeled image at 10 %"


def test_csv_multilabel_grouped_by_patient_with_tiles(histology_csv: Path, tmp_path: Path):
    datalist = prepare_csv(
        histology_csv, label_column="phenotypes", multi_label=True, tile_size=480, tile_output_size=64, tiles_dir=tmp_path / "tiles"
    )
    assert datalist["classes"] == ["B cells", "Others", "TFH-1", "TFH-217", "TFH-Like"]
    items = [item for split in SPLITS for item in datalist[split]]
    assert len(items) == 16 * 4, "500x700 slides make 2x2 tiles of 480"
    patients = {split: {item["patient"] for item in datalist[split]} for split in SPLITS}
    assert not patients["training"] & patients["test"] and not patients["training"] & patients["validation"]
    first = datalist["training"][0]
    assert first["slide"].startswith("slides/") and 0 <= first["tile"] < 4 and len(first["tile_box"]) == 4
    assert (tmp_path / "tiles" / first["image"]).is_file() and (tmp_path / "tiles" / first["mask"]).is_file()
    from PIL import Image

    assert Image.open(tmp_path / "tiles" / first["image"]).size == (64, 64)
    edge = next(item for item in items if item["tile"] == 3)
    assert edge["tile_box"] == [480, 480, 700, 500], "boxes are (top, left, bottom, right) clipped to the slide"


def test_csv_single_label_with_split_column(tmp_path: Path):
    from tests.conftest import write_image

    rows = ["image,label,split"]
    for k in range(12):
        write_image(tmp_path / f"img{k}.png", seed=k)
        rows.append(f"img{k}.png,{'cat' if k % 2 else 'dog'},{['train', 'val', 'test'][k % 3]}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    datalist = prepare_csv(tmp_path / "data.csv")
    assert datalist["classes"] == ["cat", "dog"]
    assert (datalist["challenge"], datalist["red_normalization"]) == (None, False)
    assert prepare_csv(tmp_path / "data.csv", red_normalization=True)["red_normalization"] is True
    assert [len(datalist[s]) for s in SPLITS] == [4, 4, 4]


def test_datalists_carry_their_dataset_facts(isic_root: Path, dermofit_root: Path, tmp_path: Path):
    isic, dermofit = prepare_isic2017(isic_root), prepare_dermofit(dermofit_root)
    assert (isic["challenge"], isic["red_normalization"]) == ("isic2017", False)
    assert (dermofit["challenge"], dermofit["red_normalization"]) == (None, True)
    # a datalist written before the facts were recorded gets them from its dataset's name; other names get none
    for name, facts in (("isic2017", ("isic2017", False)), ("dermofit", (None, True)), ("my_cohort", (None, False))):
        old = {key: value for key, value in {**isic, "name": name}.items() if key not in ("challenge", "red_normalization")}
        loaded = load_datalist(save_datalist(old, tmp_path / f"{name}.json"))
        assert (loaded["challenge"], loaded["red_normalization"]) == facts, name
    explicit = load_datalist(save_datalist({**isic, "name": "dermofit", "red_normalization": False}, tmp_path / "explicit.json"))
    assert explicit["red_normalization"] is False, "a fact the datalist states is kept"


def test_same_seed_same_datalist_other_seed_different(dermofit_root: Path):
    first, again, other = (prepare_dermofit(dermofit_root, seed=s) for s in (0, 0, 1))
    assert first == again
    assert _images(first) != _images(other) and first["label_fractions"] != other["label_fractions"]


def test_save_load_roundtrip_relative_and_split_items(isic_root: Path, tmp_path: Path):
    datalist = prepare_isic2017(isic_root)
    path = save_datalist(datalist, tmp_path / "lists" / "isic.json", relative_dataset_dir=True)
    assert not Path(json.loads(path.read_text())["dataset_dir"]).is_absolute()
    loaded = load_datalist(path)
    assert loaded["dataset_dir"] == str(isic_root.resolve())
    labeled = split_items(loaded, "training", label_fraction=0.3)
    unlabeled = split_items(loaded, "training", label_fraction=0.3, labeled=False)
    assert len(labeled) + len(unlabeled) == len(loaded["training"])
    assert all(Path(item["image"]).is_file() for item in labeled)
    assert all("label" not in item and "mask" not in item for item in unlabeled)
    assert len(split_items(loaded, "training", label_fraction=0.2)) > 0, "a fraction not stored is drawn the same way"
    assert {i["image"] for i in split_items(loaded, "training", label_fraction=0.1)} <= {
        i["image"] for i in split_items(loaded, "training", label_fraction=0.2)
    }


@pytest.mark.skipif(
    not SHARED_ISIC.is_dir(), reason=f"real ISIC-2017 data not found at {SHARED_ISIC} (only present in the project's workspace)"
)
def test_prepare_real_isic2017():
    datalist = prepare_isic2017(SHARED_ISIC, seed=0)
    items = [item for split in SPLITS for item in datalist[split]]
    assert len(items) == 2000
    assert Counter(item["label"] for item in items) == {0: 1372, 1: 374, 2: 254}
    assert all("mask" in item for item in items), "every mask is found"
    assert not any("superpixels" in item["image"] for item in items)
    _assert_disjoint(datalist)
    assert datalist["provenance"]["duplicates_across_splits"] == []


def test_committed_demo_datalists_are_what_demo_data_produces(tmp_path: Path):
    from s4mi_monai.data.demo_datalists import DEMO_DATALISTS, prepare_demo

    written = prepare_demo(tmp_path / "demo_data", tmp_path / "datalists")
    repo = Path(__file__).resolve().parents[1]
    for name, file_name in DEMO_DATALISTS.items():
        fresh, committed = (json.loads(p.read_text()) for p in (written[name], repo / "datalists" / file_name))
        for key in ("classes", "multi_label", "challenge", "red_normalization", *SPLITS, "label_fractions"):
            assert fresh[key] == committed[key], f"{file_name}: {key} differs; rerun `s4mi demo-data`"
        assert not Path(committed["dataset_dir"]).is_absolute()


def test_cli_lists_every_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "s4mi_monai.cli", "--help"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    shown = result.stdout + result.stderr  # fire writes help to stderr when there is no terminal
    assert result.returncode == 0, shown
    for command in ("prepare", "demo_data", "check", "bundles"):
        assert f"\n     {command}\n" in shown, f"{command} missing from:\n{shown}"
    assert "Turn a dataset into a datalist JSON" in shown


def test_demo_files_are_generated_on_first_use(tmp_path: Path):
    repo = Path(__file__).resolve().parents[1]
    lists = tmp_path / "lists"
    lists.mkdir()
    committed = json.loads((repo / "datalists" / "demo_isic2017.json").read_text())
    committed["dataset_dir"] = "../fresh_clone_demo/isic2017"
    (lists / "demo_isic2017.json").write_text(json.dumps(committed))
    loaded = load_datalist(lists / "demo_isic2017.json")
    assert (Path(loaded["dataset_dir"]) / loaded["training"][0]["image"]).is_file()
    assert (tmp_path / "fresh_clone_demo" / "dermatomyositis_tiles").is_dir()


def _csv_dataset(folder: Path, n: int = 8) -> list[str]:
    """Images img0..img{n-1}.png in ``folder`` and the CSV lines that describe them (header first)."""
    from tests.conftest import write_image

    for k in range(n):
        write_image(folder / f"img{k}.png", seed=k)
    return ["image,label"] + [f"img{k}.png,{'cat' if k % 2 else 'dog'}" for k in range(n)]


BAD_CSVS = {
    "latin-1 text": (lambda lines: lines[:3] + ["imgé.png,cat"] + lines[3:], "latin-1", r"data.csv:4: not utf-8 text \(byte 0xe9\).*--encoding latin-1"),
    "ragged row": (lambda lines: lines[:2] + ["img9.png"] + lines[2:], "utf-8", r"data.csv:3: 1 cell\(s\), but the header has 2"),
    "empty image cell": (lambda lines: lines + [",cat"], "utf-8", r"data.csv:10: the 'image' cell is empty"),
    "a folder as image": (lambda lines: lines + ["sub,cat"], "utf-8", r"sub: is a folder, not an image file"),
    "a row twice": (lambda lines: lines + [lines[1]], "utf-8", r"data.csv:10: img0.png is listed again \(first on line 2\)"),
    "empty label": (lambda lines: lines + ["img8.png,"], "utf-8", r"data.csv:10: the 'label' cell is empty"),
    "upper-case suffix on disk": (lambda lines: lines + ["img8.jpg,cat"], "utf-8", r"img8.jpg: file not found \(img8.JPG exists: names are case-sensitive\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_a_bad_csv_is_refused_with_the_file_line_and_problem_before_anything_is_written(tmp_path: Path, case: str):
    from s4mi_monai.data import DatasetError

    lines = _csv_dataset(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "img8.JPG").write_bytes((tmp_path / "img0.png").read_bytes())
    edit, encoding, message = BAD_CSVS[case]
    (tmp_path / "data.csv").write_bytes("\n".join(edit(lines)).encode(encoding) + b"\n")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DatasetError, match=message):
        prepare_csv(tmp_path / "data.csv")
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_csv_with_a_byte_order_mark_another_encoding_and_a_rare_class_warning(tmp_path: Path):
    lines = _csv_dataset(tmp_path, n=12)
    (tmp_path / "data.csv").write_bytes("\ufeff".encode() + "\n".join(lines).encode() + b"\n")  # as spreadsheets export
    assert prepare_csv(tmp_path / "data.csv")["classes"] == ["cat", "dog"]
    write_image(tmp_path / "imgé.png", seed=77)
    typo = [*lines, "imgé.png,catt"]
    (tmp_path / "latin.csv").write_bytes("\n".join(typo).encode("latin-1") + b"\n")
    datalist = prepare_csv(tmp_path / "latin.csv", encoding="latin-1")
    assert datalist["classes"] == ["cat", "catt", "dog"]
    assert datalist["provenance"]["warnings"] == [
        "class 'catt' has only 1 item(s): a typo in a label? (give --classes to refuse labels outside a list)"
    ]


def test_s4mi_prepare_prints_every_problem_and_exits_2_without_a_traceback(tmp_path: Path, capsys):
    from s4mi_monai.cli import main
    from s4mi_monai.data import DatasetError

    (tmp_path / "data.csv").write_text("image,label\n,cat\nx.png\n")  # an empty image cell, then a ragged row
    command = ["prepare", "csv", "--csv", str(tmp_path / "data.csv"), "--out", str(tmp_path / "out.json")]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2 and not (tmp_path / "out.json").exists()
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "data.csv:2: the 'image' cell is empty" in err and "Traceback" not in err
    assert "data.csv:3: 1 cell(s), but the header has 2" in err
    with pytest.raises(DatasetError):  # --debug: the exception itself, for a traceback
        main([*command, "--debug"])
