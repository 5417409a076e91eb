"""The datalist: one JSON file per prepared dataset that every bundle, the study runner and DDP read.

Shape (other keys may be added)::

    {"name": "isic2017", "classes": [...], "multi_label": false, "challenge": "isic2017", "red_normalization": false,
     "dataset_dir": "<root the relative paths start from; relative paths start at this file's folder>",
     "provenance": {"source": ..., "seed": 0, "split": ..., "counts": {...}},
     "training": [{"image": "rel/path.jpg", "label": 1, "mask": "rel/path.png", "patient": "P7"}, ...],
     "validation": [...], "test": [...],
     "label_fractions": {"0.1": ["<image path of each labeled training item>", ...], ...}}

Items are plain dicts of relative paths, so a datalist can be moved with its data and read by
``monai.data.Dataset`` / ``DistributedSampler`` after :func:`split_items` makes the paths absolute.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from s4mi_monai import __version__
from s4mi_monai.data.check import MIN_IMAGE_SIDE, CheckedFiles, CheckReport, DatasetError, Problem, check_items, duplicates_across_splits
from s4mi_monai.data.profiles import dataset_facts
from s4mi_monai.data.splits import (
    DEFAULT_LABEL_FRACTIONS,
    DEFAULT_SPLIT_FRACTIONS,
    SPLITS,
    assign_splits,
    fraction_key,
    group_units,
    label_fraction_subsets,
)
from s4mi_monai.io import atomic_write_text

FIXED_SPLIT = "_split"  # key a preparer sets on items whose split is given (official splits, a split column)


def item_stratum(item: Mapping, multi_label: bool) -> Hashable:
    """The stratum used to stratify splits and label fractions: the class, or the label set."""
    label = item.get("label")
    if label is None:
        return "unlabeled"
    return tuple(label) if multi_label else int(label)


def _split_description(fixed: set[str], split_fractions: Sequence[float]) -> str:
    shares = "/".join(f"{round(100 * f)}" for f in split_fractions)
    if not fixed:
        return f"random {shares} (training/validation/test), stratified, grouped by patient, slide and duplicate content"
    if fixed >= {"validation", "test"}:
        return "official"
    return f"official {', '.join(sorted(fixed))}; the other splits drawn from training at {shares}"


def build_datalist(
    *,
    name: str,
    classes: Sequence[str],
    multi_label: bool,
    dataset_dir: str | Path,
    items: Sequence[dict],
    source: str,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    extra_provenance: Mapping[str, Any] | None = None,
    known_problems: Sequence[Problem] = (),
    challenge: str | None = None,
    red_normalization: bool = False,
    min_side: int = MIN_IMAGE_SIDE,
) -> dict:
    """Check the items, split them, draw the label fractions and return the datalist dict.

    ``challenge`` and ``red_normalization`` are the dataset facts that bundles read from the datalist
    (:mod:`s4mi_monai.data.profiles`). ``min_side``: the smallest image side accepted, in pixels (kept in the
    provenance when not the default, so that a training's check of the datalist applies it too).

    Raises :class:`DatasetError` listing every problem (``known_problems`` found by the preparer
    while reading the layout, then every file problem) before anything is written.
    """
    root = Path(dataset_dir)
    if not items and not known_problems:
        raise DatasetError([Problem(str(root), "no images found")], f"{name} dataset")
    checked = CheckedFiles()
    report = check_items(items, root, classes, multi_label, min_side=min_side, checked=checked)
    checked.save()
    report.problems[:0] = known_problems
    report.raise_if_problems(f"{name} dataset at {root}")

    fixed = {item[FIXED_SPLIT] for item in items if item.get(FIXED_SPLIT)}
    free = [i for i, item in enumerate(items) if not item.get(FIXED_SPLIT)]
    shares = [0.0 if split in fixed and split != "training" else share for split, share in zip(SPLITS, split_fractions)]
    assigned = (
        []
        if not free
        else assign_splits(
            strata=[item_stratum(items[i], multi_label) for i in free],
            units=group_units(
                len(free),
                [items[i].get("patient") for i in free],
                [items[i].get("slide") for i in free],
                [report.info[str(root / items[i]["image"])].sha1 for i in free],
            ),
            fractions=shares,
            seed=seed,
        )
    )
    split_of = {i: SPLITS[s] for i, s in zip(free, assigned)}
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for index, item in enumerate(items):
        clean = {k: v for k, v in item.items() if k != FIXED_SPLIT and v is not None}
        splits[item.get(FIXED_SPLIT) or split_of[index]].append(clean)

    duplicates = duplicates_across_splits(splits, report, root)
    provenance_extra = dict(extra_provenance or {})
    if report.warnings:
        provenance_extra["warnings"] = [*provenance_extra.get("warnings", []), *report.warnings]
    if min_side != MIN_IMAGE_SIDE:
        provenance_extra["min_side"] = min_side
    datalist = {
        "name": name,
        "classes": list(classes),
        "multi_label": multi_label,
        "challenge": challenge,
        "red_normalization": red_normalization,
        "dataset_dir": str(root),
        "provenance": {
            "source": source,
            "seed": seed,
            "split": _split_description(fixed, split_fractions),
            "counts": split_counts(splits, classes, multi_label),
            "duplicates_across_splits": duplicates,
            "created_by": f"s4mi_monai {__version__}",
            **provenance_extra,
        },
        **splits,
    }
    datalist["label_fractions"] = compute_label_fractions(datalist, label_fractions)
    return datalist


def split_counts(splits: Mapping[str, Sequence[Mapping]], classes: Sequence[str], multi_label: bool) -> dict:
    """Items per split and per class (per label for multi-label), as recorded in the provenance."""
    counts = {}
    for split, items in splits.items():
        per_class = dict.fromkeys(classes, 0)
        for item in items:
            label = item.get("label")
            if label is None:
                continue
            for k in [c for c, v in enumerate(label) if v] if multi_label else [label]:
                per_class[classes[k]] += 1
        counts[split] = {"items": len(items), "per_class": per_class}
    return counts


def compute_label_fractions(datalist: Mapping, fractions: Sequence[float]) -> dict[str, list[str]]:
    """Image paths of the labeled training items per fraction (seeded from the datalist's provenance)."""
    training = datalist["training"]
    multi_label = datalist["multi_label"]
    required = None
    if multi_label:
        required = [[c for c, v in enumerate(item.get("label") or []) if v] for item in training]
    subsets = label_fraction_subsets(
        [item_stratum(item, multi_label) for item in training],
        fractions,
        seed=datalist["provenance"]["seed"],
        required_labels=required,
    )
    return {key: [training[i]["image"] for i in indices] for key, indices in subsets.items()}


def save_datalist(datalist: Mapping, path: str | Path, relative_dataset_dir: bool = False) -> Path:
    """Write the datalist atomically; optionally store ``dataset_dir`` relative to the file's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = dict(datalist)
    if relative_dataset_dir:
        content["dataset_dir"] = os.path.relpath(Path(datalist["dataset_dir"]).resolve(), path.parent.resolve())
    atomic_write_text(path, json.dumps(content, indent=1) + "\n")
    return path


def load_datalist(path: str | Path, dataset_dir: str | Path | None = None) -> dict:
    """Read a datalist, check its structure and resolve ``dataset_dir`` to an absolute path.

    ``dataset_dir`` overrides the stored root (data moved to another machine).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path} does not exist; create one with `s4mi prepare ...`")
    try:
        datalist = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError([Problem(str(path), f"not valid JSON ({err})")], "datalist") from None
    problems = [
        Problem(str(path), f"missing key {key!r}")
        for key in ("name", "classes", "multi_label", "dataset_dir", *SPLITS)
        if key not in datalist
    ]
    for split in SPLITS:
        for index, item in enumerate(datalist.get(split, [])):
            if not isinstance(item, dict) or "image" not in item:
                problems.append(Problem(str(path), f"{split}[{index}] has no 'image' entry"))
    if problems:
        raise DatasetError(problems, "datalist")
    root = Path(dataset_dir) if dataset_dir else Path(datalist["dataset_dir"])
    if not root.is_absolute():
        root = path.parent / root
    datalist["dataset_dir"] = str(root.resolve())
    datalist.setdefault("provenance", {}).setdefault("seed", 0)
    for fact, value in dataset_facts(datalist["name"]).items():
        datalist.setdefault(fact, value)  # datalists written before the facts were recorded
    datalist["datalist_path"] = str(path.resolve())
    if dataset_dir is None and "demo_seed" in datalist["provenance"]:
        from s4mi_monai.data.demo_datalists import ensure_demo_files

        ensure_demo_files(datalist)
    return datalist


def labeled_subset(datalist: Mapping, label_fraction: float) -> set[str]:
    """Image paths of the labeled training items at ``label_fraction`` (stored, or drawn the same way)."""
    key = fraction_key(label_fraction)
    stored = datalist.get("label_fractions", {})
    return set(stored[key] if key in stored else compute_label_fractions(datalist, [label_fraction])[key])


def split_items(
    datalist: Mapping,
    split: str,
    label_fraction: float | None = None,
    labeled: bool = True,
    require: Sequence[str] = (),
) -> list[dict]:
    """Items of one split with absolute paths, ready for a MONAI ``Dataset``.

    For ``split="training"`` and a ``label_fraction``, ``labeled=True`` gives the labeled subset and
    ``labeled=False`` the remaining training items with their labels and masks removed (the
    unlabeled stream of semi-supervised methods). ``require`` drops items lacking a key (e.g. "mask").
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(datalist["dataset_dir"])
    chosen = None
    if label_fraction is not None and split == "training":
        chosen = labeled_subset(datalist, label_fraction)
    out = []
    for item in datalist[split]:
        if chosen is not None and (item["image"] in chosen) != labeled:
            continue
        if labeled and any(key not in item for key in require):
            continue
        entry = dict(item)
        for key in ("image", "mask"):
            if key in entry:
                entry[key] = str(root / entry[key])
        if not labeled:
            entry.pop("label", None)
            entry.pop("mask", None)
        out.append(entry)
    return out


def check_datalist(datalist: Mapping, checked: CheckedFiles | None = None) -> CheckReport:
    """Every check of preparation again, on every split of a prepared (or hand-edited) datalist.

    Files, masks, labels (type and range in every split), ``classes`` and ``multi_label`` themselves, and the
    label fractions (each listed image must be a training image). ``checked``: skip decoding the files that
    passed before and have not changed since (:class:`CheckedFiles`); without it every file is decoded.
    """
    source = datalist.get("datalist_path", "datalist")
    problems = []
    if not isinstance(datalist["multi_label"], bool):
        problems.append(Problem(source, f"multi_label must be true or false, got {datalist['multi_label']!r}"))
    training_images = {item["image"] for item in datalist["training"]}
    for key, images in (datalist.get("label_fractions") or {}).items():
        strays = [image for image in images if image not in training_images]
        if strays:
            problems.append(Problem(source, f"label fraction {key} lists {len(strays)} image(s) not in training, e.g. {strays[0]}"))
    items = [item for split in SPLITS for item in datalist[split]]
    min_side = datalist.get("provenance", {}).get("min_side", MIN_IMAGE_SIDE)
    report = check_items(items, datalist["dataset_dir"], datalist["classes"], datalist["multi_label"] is True, min_side=min_side, checked=checked)
    report.problems[:0] = problems
    if report.info:
        report.warnings.extend(duplicates_across_splits({s: datalist[s] for s in SPLITS}, report, datalist["dataset_dir"]))
    return report


def verify_datalist(datalist: Mapping) -> None:
    """Check a datalist before a training uses it: every problem at once, naming the file, before the first step.

    Files checked before and unchanged since (size and modification time) are not decoded again, so this
    costs seconds once and a fraction of a second after (see :class:`CheckedFiles`).
    """
    checked = CheckedFiles()
    report = check_datalist(datalist, checked)
    checked.save()
    source = datalist.get("datalist_path", "datalist")
    report.raise_if_problems(f"datalist {source} (fix it, or prepare it again with `s4mi prepare`)")
