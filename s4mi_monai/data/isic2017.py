"""ISIC-2017 in its official download layout (tasks 1 and 3).

Layout read (per part: ``Training``, ``Validation``, ``Test_v2``)::

    ISIC-2017_<Part>_Data/ISIC_<id>.jpg                    (``*_superpixels.png`` files are ignored)
    ISIC-2017_<Part>_Part1_GroundTruth/ISIC_<id>_segmentation.png   (may be absent)
    ISIC-2017_<Part>_Part3_GroundTruth.csv                 image_id,melanoma,seborrheic_keratosis

Three classes: nevus (neither flag), melanoma, seborrheic keratosis. The official validation and
test parts are used when present; any absent part is drawn from the training part (seeded,
stratified; 70/10/20 when only the training part is there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from s4mi_monai.data.check import MIN_IMAGE_SIDE, DatasetError, Problem
from s4mi_monai.data.datalist import FIXED_SPLIT, build_datalist
from s4mi_monai.data.profiles import dataset_facts
from s4mi_monai.data.splits import DEFAULT_LABEL_FRACTIONS, DEFAULT_SPLIT_FRACTIONS
from s4mi_monai.data.table import read_csv_rows

CLASSES = ("nevus", "melanoma", "seborrheic_keratosis")
PARTS = {"training": "Training", "validation": "Validation", "test": "Test_v2"}


def _read_ground_truth(csv_path: Path, problems: list[Problem]) -> dict[str, int]:
    labels = {}
    try:
        header, rows, row_problems = read_csv_rows(csv_path)
    except DatasetError as err:
        problems.extend(err.problems)
        return labels
    problems.extend(row_problems)
    missing = {"image_id", "melanoma", "seborrheic_keratosis"} - set(header)
    if missing:
        problems.append(Problem(str(csv_path), f"missing column(s) {sorted(missing)}"))
        return labels
    for line, row in rows:
        try:
            melanoma, keratosis = float(row["melanoma"]), float(row["seborrheic_keratosis"])
        except ValueError:
            problems.append(Problem(f"{csv_path}:{line}", f"flags must be 0/1, got {row}"))
            continue
        if {melanoma, keratosis} - {0.0, 1.0} or melanoma + keratosis > 1:
            problems.append(Problem(f"{csv_path}:{line}", f"unknown label (melanoma={melanoma}, seborrheic_keratosis={keratosis})"))
            continue
        labels[row["image_id"].strip()] = 1 if melanoma else 2 if keratosis else 0
    return labels


def _part_items(root: Path, split: str, part: str, problems: list[Problem]) -> list[dict]:
    data_dir = root / f"ISIC-2017_{part}_Data"
    csv_path = root / f"ISIC-2017_{part}_Part3_GroundTruth.csv"
    mask_dir = root / f"ISIC-2017_{part}_Part1_GroundTruth"
    if not csv_path.is_file():
        problems.append(Problem(str(csv_path), "ground-truth CSV not found (needed for the diagnosis labels)"))
        return []
    labels = _read_ground_truth(csv_path, problems)
    images = {p.stem: p for p in data_dir.glob("ISIC_*.jpg") if not p.stem.endswith("_superpixels")}
    for image_id in sorted(set(labels) - set(images)):
        problems.append(Problem(str(data_dir / f"{image_id}.jpg"), f"listed in {csv_path.name} but the file is missing"))
    for image_id in sorted(set(images) - set(labels)):
        problems.append(Problem(str(images[image_id]), f"image has no row in {csv_path.name} (unknown label)"))
    items = []
    for image_id in sorted(set(images) & set(labels)):
        mask = mask_dir / f"{image_id}_segmentation.png"
        items.append(
            {
                "image": str(images[image_id].relative_to(root)),
                "label": labels[image_id],
                "mask": str(mask.relative_to(root)) if mask.is_file() else None,
                FIXED_SPLIT: split if split != "training" else None,
            }
        )
    return items


def prepare_isic2017(
    root: str | Path,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    min_side: int = MIN_IMAGE_SIDE,
) -> dict:
    """Build the ISIC-2017 datalist from the official layout at ``root`` (see the module docstring)."""
    root = Path(root).resolve()
    if not (root / "ISIC-2017_Training_Data").is_dir():
        raise DatasetError(
            [Problem(str(root / "ISIC-2017_Training_Data"), "folder not found: is this an ISIC-2017 download?")], "ISIC-2017 dataset"
        )
    problems: list[Problem] = []
    items = []
    present = [split for split, part in PARTS.items() if (root / f"ISIC-2017_{part}_Data").is_dir()]
    for split in present:
        items += _part_items(root, split, PARTS[split], problems)
    masks_missing = sum(item["mask"] is None for item in items if item[FIXED_SPLIT] != "test")
    return build_datalist(
        name="isic2017",
        classes=CLASSES,
        multi_label=False,
        dataset_dir=root,
        items=items,
        source=f"ISIC-2017 official layout ({', '.join(PARTS[s] for s in present)} parts)",
        seed=seed,
        split_fractions=split_fractions,
        label_fractions=label_fractions,
        extra_provenance={"images_without_mask_outside_test": masks_missing},
        known_problems=problems,
        min_side=min_side,
        **dataset_facts("isic2017"),
    )
