"""The Dermofit Image Library layout: one folder per class, one folder per lesion.

Layout read::

    <root>/<CLASS>/<lesion id>/<lesion id>.png       the clinical image
    <root>/<CLASS>/<lesion id>/<lesion id>mask.png   its lesion mask

Ten classes (AK, BCC, ML, SCC, SK, IEC, PYO, VASC, DF, MEL), split 70/10/20 with a seeded
stratified draw. (The reference code took each class folder's files in file-system order.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from s4mi_monai.data.check import MIN_IMAGE_SIDE, DatasetError, Problem
from s4mi_monai.data.datalist import build_datalist
from s4mi_monai.data.profiles import dataset_facts
from s4mi_monai.data.splits import DEFAULT_LABEL_FRACTIONS, DEFAULT_SPLIT_FRACTIONS

CLASSES = ("AK", "BCC", "ML", "SCC", "SK", "IEC", "PYO", "VASC", "DF", "MEL")


def prepare_dermofit(
    root: str | Path,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    min_side: int = MIN_IMAGE_SIDE,
) -> dict:
    """Build the Dermofit datalist from the class-folder layout at ``root``."""
    root = Path(root).resolve()
    problems: list[Problem] = []
    items = []
    for label, name in enumerate(CLASSES):
        class_dir = root / name
        if not class_dir.is_dir():
            problems.append(Problem(str(class_dir), f"class folder for {name!r} not found"))
            continue
        for lesion_dir in sorted(p for p in class_dir.iterdir() if p.is_dir()):
            image = lesion_dir / f"{lesion_dir.name}.png"
            mask = lesion_dir / f"{lesion_dir.name}mask.png"
            if not image.is_file():
                problems.append(Problem(str(image), "lesion folder has no image of the same name"))
                continue
            items.append(
                {
                    "image": str(image.relative_to(root)),
                    "label": label,
                    "mask": str(mask.relative_to(root)) if mask.is_file() else None,
                    "lesion": lesion_dir.name,
                }
            )
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in CLASSES) if root.is_dir() else []
    problems += [Problem(str(root / name), f"unknown class folder (known: {', '.join(CLASSES)})") for name in unknown]
    if not root.is_dir():
        raise DatasetError([Problem(str(root), "folder not found")], "Dermofit dataset")
    return build_datalist(
        name="dermofit",
        classes=CLASSES,
        multi_label=False,
        dataset_dir=root,
        items=items,
        source="Dermofit Image Library layout",
        seed=seed,
        split_fractions=split_fractions,
        label_fractions=label_fractions,
        known_problems=problems,
        min_side=min_side,
        **dataset_facts("dermofit"),
    )
