"""Any dataset described by a CSV: one row per image, with optional mask, label(s), patient and split.

Single-label: one label column of class names. Multi-label (e.g. Dermatomyositis cell phenotypes):
either one column of names joined by ``label_separator`` or one 0/1 column per label
(``label_columns``). With a patient column, the 70/10/20 split is grouped by patient. Large slides
can be tiled on the way (``tile_size``): each tile becomes an item that keeps its slide, its box in
the slide and its patient, so the split stays grouped and predictions can be stitched back.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from s4mi_monai.data.check import MIN_IMAGE_SIDE, DatasetError, Problem, check_items, mask_array
from s4mi_monai.data.datalist import FIXED_SPLIT, build_datalist
from s4mi_monai.data.splits import DEFAULT_LABEL_FRACTIONS, DEFAULT_SPLIT_FRACTIONS
from s4mi_monai.transforms.io import to_rgb
from s4mi_monai.transforms.tiling import tile_array

SPLIT_NAMES = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]


def read_csv_rows(
    csv_path: Path, encoding: str = "utf-8"
) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[Problem]]:
    """The header (cells stripped), ``(line number, row)`` of every well-formed non-blank row, and a problem per
    row with more or fewer cells than the header (naming the file and line).

    A UTF-8 byte-order mark is dropped (spreadsheet exports add one, which would otherwise stick to the first
    column's name). Text that is not in ``encoding`` raises a :class:`DatasetError` with the line, the byte and
    what to do.
    """
    raw = csv_path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetError(
            [Problem(f"{csv_path}:{line}", f"not {encoding} text (byte 0x{raw[err.start]:02x}): save the CSV as UTF-8, or give its encoding (--encoding latin-1)")],
            f"CSV file {csv_path}",
        ) from None
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r} for {csv_path}") from None
    reader = csv.reader(text.splitlines())
    header = [cell.strip() for cell in next(reader, [])]
    rows, problems = [], []
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            problems.append(Problem(f"{csv_path}:{line}", f"{len(cells)} cell(s), but the header has {len(header)} ({', '.join(header)})"))
            continue
        rows.append((line, dict(zip(header, cells))))
    return header, rows, problems


def _column(header: list[str], csv_path: Path, given: str | None, default: str, problems: list[Problem]) -> str | None:
    """The column to read: the one given (which must exist), else ``default`` if present."""
    if given is None:
        return default if default in header else None
    if given not in header:
        problems.append(Problem(str(csv_path), f"column {given!r} not found (columns: {', '.join(header)})"))
        return None
    return given


def prepare_csv(
    csv_path: str | Path,
    root: str | Path | None = None,
    name: str | None = None,
    image_column: str = "image",
    mask_column: str | None = None,
    label_column: str | None = None,
    label_columns: str | Sequence[str] | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = ";",
    classes: str | Sequence[str] | None = None,
    seed: int = 0,
    tile_size: int | None = None,
    tile_output_size: int | None = 224,
    tiles_dir: str | Path | None = None,
    pad_value: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    red_normalization: bool = False,
    encoding: str = "utf-8",
    rare_class_items: int = 3,
    min_side: int = MIN_IMAGE_SIDE,
) -> dict:
    """Build a datalist from ``csv_path``; paths in the CSV are relative to ``root`` (default: the CSV's folder).

    Columns default to ``image``, ``mask``, ``label``, ``patient`` and ``split`` when present.
    ``red_normalization``: record that the images are normalised by their red channel (as Dermofit in S4MI).
    ``encoding``: of the CSV text (UTF-8 by default, with or without a byte-order mark). Empty image or label
    cells and an image listed twice are problems; without ``classes``, a class with fewer than
    ``rare_class_items`` items is reported as a warning in the datalist (a typo in a label makes such a class).
    ``min_side``: images (slides before tiling) smaller than this many pixels on a side are refused.
    """
    csv_path = Path(csv_path).resolve()
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV file {csv_path} does not exist")
    root = Path(root).resolve() if root else csv_path.parent
    header, rows, problems = read_csv_rows(csv_path, encoding)
    if not rows and not problems:
        raise DatasetError([Problem(str(csv_path), "CSV has no rows")], "CSV dataset")
    missing_columns: list[Problem] = []
    image_col = _column(header, csv_path, image_column, image_column, missing_columns)
    mask_col = _column(header, csv_path, mask_column, "mask", missing_columns)
    patient_col = _column(header, csv_path, patient_column, "patient", missing_columns)
    split_col = _column(header, csv_path, split_column, "split", missing_columns)
    label_cols = _as_list(label_columns)
    for column in label_cols or []:
        _column(header, csv_path, column, column, missing_columns)
    label_col = None if label_cols else _column(header, csv_path, label_column, "label", missing_columns)
    multi_label = multi_label or bool(label_cols)
    if missing_columns:
        raise DatasetError(missing_columns + problems, f"CSV dataset {csv_path}")

    class_names = _as_list(classes) or label_cols or _infer_classes([row for _, row in rows], label_col, multi_label, label_separator)
    items = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        image = row[image_col].strip()
        if not image:
            problems.append(Problem(f"{csv_path}:{line}", f"the {image_col!r} cell is empty"))
            continue
        if image in first_line:
            problems.append(Problem(f"{csv_path}:{line}", f"{image} is listed again (first on line {first_line[image]})"))
            continue
        first_line[image] = line
        item: dict = {"image": image}
        if mask_col and row[mask_col].strip():
            item["mask"] = row[mask_col].strip()
        if patient_col and row[patient_col].strip():
            item["patient"] = row[patient_col].strip()
        if label_cols or label_col:
            label = _parse_label(row, label_col, label_cols, class_names, multi_label, label_separator)
            if isinstance(label, str):
                problems.append(Problem(f"{csv_path}:{line}", label))
                continue
            item["label"] = label
        if split_col:
            split = SPLIT_NAMES.get(row[split_col].strip().lower())
            if split is None:
                problems.append(Problem(f"{csv_path}:{line}", f"unknown split {row[split_col]!r} (use train, val or test)"))
                continue
            item[FIXED_SPLIT] = split
        items.append(item)
    warnings = [] if _as_list(classes) or label_cols or not label_col else _rare_classes(items, class_names, multi_label, rare_class_items)

    dataset_dir = root
    extra = {"csv": str(csv_path), **({"warnings": warnings} if warnings else {})}
    if tile_size:
        report = check_items(items, root, class_names, multi_label, min_side=min_side)
        report.problems[:0] = problems
        report.raise_if_problems(f"CSV dataset {csv_path}")
        dataset_dir = Path(tiles_dir).resolve() if tiles_dir else csv_path.parent / f"{csv_path.stem}_tiles"
        items = tile_dataset(items, root, dataset_dir, tile_size, tile_output_size, pad_value)
        extra.update(slides_dir=str(root), tile_size=tile_size, tile_output_size=tile_output_size)
    return build_datalist(
        name=name or csv_path.stem,
        classes=class_names,
        multi_label=multi_label,
        dataset_dir=dataset_dir,
        items=items,
        source=f"CSV {csv_path.name}" + (f", slides tiled {tile_size}px -> {tile_output_size}px" if tile_size else ""),
        seed=seed,
        split_fractions=split_fractions,
        label_fractions=label_fractions,
        extra_provenance=extra,
        known_problems=problems,
        red_normalization=red_normalization,
        min_side=min_side,
    )


def _infer_classes(rows: list[dict], label_col: str | None, multi_label: bool, separator: str) -> list[str]:
    if label_col is None:
        return []
    names: set[str] = set()
    for row in rows:
        value = row[label_col].strip()
        if not value:
            continue  # an empty label is reported with its line
        names.update(v.strip() for v in value.split(separator) if v.strip()) if multi_label else names.add(value)
    return sorted(names, key=_natural_key)


def _rare_classes(items: list[dict], classes: list[str], multi_label: bool, fewest: int) -> list[str]:
    """A warning per class with fewer than ``fewest`` items: with classes read from the labels, a typo makes one."""
    counts = dict.fromkeys(classes, 0)
    for item in items:
        for index in ([k for k, flag in enumerate(item["label"]) if flag] if multi_label else [item["label"]]):
            counts[classes[index]] += 1
    return [
        f"class {name!r} has only {count} item(s): a typo in a label? (give --classes to refuse labels outside a list)"
        for name, count in counts.items()
        if count < fewest
    ]


def _parse_label(
    row: dict, label_col: str | None, label_cols: list[str] | None, classes: list[str], multi_label: bool, separator: str
) -> int | list[int] | str:
    """The label of one row, or a string describing why it is invalid."""
    if label_cols:
        values = [row[c].strip() for c in label_cols]
        if any(v not in ("0", "1", "0.0", "1.0") for v in values):
            return f"label columns must hold 0 or 1, got {dict(zip(label_cols, values))}"
        return [int(float(v)) for v in values]
    value = row[label_col].strip()
    if not value:
        return f"the {label_col!r} cell is empty (every image needs a label; leave unlabeled images out of the CSV)"
    if not multi_label:
        return classes.index(value) if value in classes else f"unknown label {value!r} (classes: {', '.join(classes)})"
    names = [v.strip() for v in value.split(separator) if v.strip()]
    unknown = [n for n in names if n not in classes]
    if unknown:
        return f"unknown label(s) {unknown} (classes: {', '.join(classes)})"
    return [int(c in names) for c in classes]


def tile_dataset(items: list[dict], root: Path, tiles_dir: Path, tile_size: int, output_size: int | None, pad_value: int) -> list[dict]:
    """Write the tiles of every slide (and mask) under ``tiles_dir``; return one item per tile."""
    tiles_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        per_slide = list(pool.map(lambda item: _tile_slide(item, root, tiles_dir, tile_size, output_size, pad_value), items))
    return [tile for tiles in per_slide for tile in tiles]


def _tile_slide(item: dict, root: Path, tiles_dir: Path, tile_size: int, output_size: int | None, pad_value: int) -> list[dict]:
    slide = Path(item["image"])
    stem = "__".join(slide.with_suffix("").parts)
    with Image.open(root / slide) as image:
        image_tiles, boxes = tile_array(np.asarray(to_rgb(image)), tile_size, pad_value, channel_first=False)
    mask_tiles = None
    if "mask" in item:
        with Image.open(root / item["mask"]) as mask:
            mask_tiles, _ = tile_array(mask_array(mask), tile_size, 0, channel_first=False)
    tiles = []
    for k, box in enumerate(boxes):
        tile = {key: value for key, value in item.items() if key not in ("image", "mask")}
        tile.update(image=f"{stem}_tile{k:02d}.png", slide=str(slide), tile=k, tile_box=list(box))
        _save_tile(image_tiles[k], tiles_dir / tile["image"], output_size, Image.BOX)
        if mask_tiles is not None:
            tile["mask"] = f"{stem}_tile{k:02d}_mask.png"
            _save_tile(mask_tiles[k], tiles_dir / tile["mask"], output_size, Image.NEAREST)
        tiles.append(tile)
    return tiles


def _save_tile(array: np.ndarray, path: Path, output_size: int | None, resample: int) -> None:
    tile = Image.fromarray(np.ascontiguousarray(array))
    if output_size and output_size != tile.size[0]:
        tile = tile.resize((output_size, output_size), resample)
    tile.save(path)
