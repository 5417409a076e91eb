"""Up-front dataset checks: every problem is found before anything trains, and all are reported at once.

An hour-long run must not die on the 1,900th image. ``check_items`` opens and fully decodes every
referenced image and mask (in parallel threads: PIL releases the GIL while decoding), checks masks
against their images, labels against the known classes, and hashes file contents so that exact
duplicates can be kept in one split, reported across splits, and refused when they carry two labels.
:class:`CheckedFiles` remembers the files that passed, by size and modification time, so that a training
can check its whole datalist before its first step and decode only the files that changed since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from s4mi_monai.io import atomic_write_text

logger = logging.getLogger("s4mi_monai")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MIN_IMAGE_SIDE = 8  # pixels; a smaller image is a thumbnail or an export error, not something to learn from
RGB_CONVERTIBLE_MODES = ("RGB", "L", "LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "1", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the dataset, tied to the file it concerns."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DatasetError(ValueError):
    """Raised with every problem found, so that a user fixes them all in one pass."""

    def __init__(self, problems: Sequence[Problem], context: str = "dataset"):
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the {context}:\n{listing}")


@dataclass
class ImageInfo:
    """What the checks learn about one file without keeping its pixels."""

    size: tuple[int, int]  # (width, height), as PIL reports it
    mode: str
    sha1: str
    mask_levels: tuple[int, ...] | None = None


@dataclass
class CheckReport:
    """Result of :func:`check_items`: problems (errors), warnings and per-file facts."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, ImageInfo] = field(default_factory=dict)

    def raise_if_problems(self, context: str = "dataset") -> None:
        if self.problems:
            raise DatasetError(self.problems, context)


def _decode(path: str) -> Image.Image:
    """Open and fully decode an image; truncated or corrupt files raise here, not mid-training."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
        image.load()
    return image


def mask_array(image: Image.Image) -> np.ndarray:
    """A mask as a 2-D integer array: palette indices for 'P', the single channel of grey RGB masks."""
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ValueError("mask is a colour image; expected one channel (0/1 or 0/255)")
        return rgb[..., 0]
    if image.mode in ("LA", "PA"):
        image = image.getchannel(0)
    return np.asarray(image)


def _other_case(path: str) -> str:
    """`` (NAME exists: ...)`` when a file whose name differs only in letter case is there (``.JPG`` for ``.jpg``)."""
    folder, name = os.path.split(path)
    try:
        matches = [entry for entry in os.listdir(folder or ".") if entry.lower() == name.lower()]
    except OSError:
        return ""
    return f" ({matches[0]} exists: names are case-sensitive)" if matches else ""


def inspect_file(path: str, is_mask: bool = False) -> ImageInfo:
    """Decode ``path`` and return its facts; raise ``ValueError`` with a readable reason otherwise."""
    if not os.path.exists(path):
        raise ValueError(f"file not found{_other_case(path)}")
    if os.path.isdir(path):
        raise ValueError("is a folder, not an image file")
    if os.path.getsize(path) == 0:
        raise ValueError("file is empty (0 bytes)")
    with open(path, "rb") as handle:
        digest = hashlib.sha1(handle.read()).hexdigest()
    try:
        image = _decode(path)
    except Image.DecompressionBombWarning as err:
        raise ValueError(f"image is too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot be decoded as an image ({type(err).__name__}: {err})") from None
    levels = None
    if is_mask:
        levels = tuple(int(v) for v in np.unique(mask_array(image)))
    elif image.mode not in RGB_CONVERTIBLE_MODES:
        raise ValueError(f"unsupported image mode {image.mode!r}")
    return ImageInfo(size=image.size, mode=image.mode, sha1=digest, mask_levels=levels)


def _cache_dir() -> Path:
    return Path(os.environ.get("S4MI_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s4mi_monai")


class CheckedFiles:
    """Files that passed :func:`inspect_file`, with their facts, keyed by path and valid while size and mtime hold.

    Kept in ``$S4MI_CACHE_DIR`` (default ``~/.cache/s4mi_monai``) as ``checked_files.json``. A file rewritten,
    truncated or replaced since it was checked has another size or modification time and is decoded again.
    Saving is best effort: a read-only home only costs the decoding next time.
    """

    FILE_NAME = "checked_files.json"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else _cache_dir() / self.FILE_NAME
        self._entries: dict[str, dict] = {}
        self._changed = False
        try:
            self._entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    @staticmethod
    def _stamp(path: str) -> list[int] | None:
        try:
            status = os.stat(path)
        except OSError:
            return None
        return [status.st_size, status.st_mtime_ns]

    def get(self, path: str, is_mask: bool) -> ImageInfo | None:
        """The facts of ``path`` when it was checked as it is now (a mask: with its levels), else None."""
        entry = self._entries.get(path)
        if entry is None or entry["stamp"] != self._stamp(path) or (is_mask and entry["mask_levels"] is None):
            return None
        levels = tuple(entry["mask_levels"]) if entry["mask_levels"] is not None else None
        return ImageInfo(size=tuple(entry["size"]), mode=entry["mode"], sha1=entry["sha1"], mask_levels=levels)

    def add(self, path: str, info: ImageInfo) -> None:
        stamp = self._stamp(path)
        if stamp is not None:
            levels = list(info.mask_levels) if info.mask_levels is not None else None
            self._entries[path] = {"stamp": stamp, "size": list(info.size), "mode": info.mode, "sha1": info.sha1, "mask_levels": levels}
            self._changed = True

    def save(self) -> None:
        """Write the cache (atomically), without the entries of files that no longer exist."""
        if not self._changed:
            return
        self._entries = {path: entry for path, entry in self._entries.items() if os.path.exists(path)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self._entries))
            self._changed = False
        except OSError as err:
            logger.debug("could not save the checked-files cache %s: %s", self.path, err)


def _mask_problem(levels: tuple[int, ...]) -> str | None:
    if set(levels) <= {0, 1} or set(levels) <= {0, 255}:
        return None
    shown = ", ".join(map(str, levels[:8])) + (", ..." if len(levels) > 8 else "")
    return f"mask has {len(levels)} levels ({shown}); expected two levels, 0/1 or 0/255"


def check_items(
    items: Sequence[Mapping],
    dataset_dir: str | Path,
    classes: Sequence[str],
    multi_label: bool = False,
    workers: int | None = None,
    min_side: int = MIN_IMAGE_SIDE,
    checked: CheckedFiles | None = None,
) -> CheckReport:
    """Check every item of a datalist (``image``, optional ``mask``, optional ``label``).

    Labels must be a known class index (single-label) or a 0/1 vector over ``classes``
    (multi-label); a class that no item carries is a problem too, and so is one image content
    (identical files) with two different labels. Images smaller than ``min_side`` pixels on a side are
    refused. ``checked``: files that passed before and have not changed are not decoded again; the
    files that pass now are added (the caller saves it).
    """
    report = CheckReport()
    if isinstance(classes, str) or not all(isinstance(name, str) for name in classes):
        report.problems.append(Problem(str(dataset_dir), f"classes must be a list of class names, got {classes!r}"))
        return report
    root = Path(dataset_dir)
    jobs: dict[str, bool] = {}
    for item in items:
        jobs[str(root / item["image"])] = False
        if item.get("mask"):
            jobs[str(root / item["mask"])] = True

    known = {path: info for path, is_mask in jobs.items() if checked and (info := checked.get(path, is_mask))}
    to_decode = {path: is_mask for path, is_mask in jobs.items() if path not in known}
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        outcomes = {**known, **dict(zip(to_decode, pool.map(_inspect_or_reason, to_decode, to_decode.values())))}
    for path, outcome in outcomes.items():
        if isinstance(outcome, str):
            report.problems.append(Problem(path, outcome))
            continue
        report.info[path] = outcome
        if checked is not None and path in to_decode:
            checked.add(path, outcome)
        if outcome.mask_levels is not None and (reason := _mask_problem(outcome.mask_levels)):
            report.problems.append(Problem(path, reason))
        elif not jobs[path] and min(outcome.size) < min_side:
            width, height = outcome.size
            report.problems.append(Problem(path, f"image is {width}x{height} px, smaller than {min_side} px on a side (--min_side)"))

    for item in items:
        image_path = str(root / item["image"])
        if item.get("mask"):
            mask_path = str(root / item["mask"])
            image_info, mask_info = report.info.get(image_path), report.info.get(mask_path)
            if image_info and mask_info and image_info.size != mask_info.size:
                report.problems.append(
                    Problem(mask_path, f"mask size {mask_info.size} differs from image size {image_info.size} of {image_path}")
                )
        if "label" in item:
            if reason := _label_problem(item["label"], len(classes), multi_label):
                report.problems.append(Problem(image_path, reason))

    report.problems.extend(_classes_without_items(items, classes, multi_label, root))
    conflicts, tile_conflicts = _conflicting_duplicates(items, report, classes, root)
    report.problems.extend(conflicts)
    report.warnings.extend(str(conflict) for conflict in tile_conflicts)
    return report


def _label_name(label: object, classes: Sequence[str]) -> str:
    if isinstance(label, (list, tuple)):
        return "+".join(name for name, on in zip(classes, label) if on) or "no class"
    return classes[label] if isinstance(label, int) and 0 <= label < len(classes) else repr(label)


def _comparable(label: object) -> object:
    return list(label) if isinstance(label, tuple) else label


def _conflicting_duplicates(
    items: Sequence[Mapping], report: CheckReport, classes: Sequence[str], root: Path
) -> tuple[list[Problem], list[Problem]]:
    """Identical image files with different labels: problems, and warnings when all are slide tiles (blank tiles repeat)."""
    first: dict[str, Mapping] = {}
    problems, tile_warnings = [], []
    for item in items:
        info = report.info.get(str(root / item["image"]))
        if info is None or "label" not in item:
            continue
        earlier = first.setdefault(info.sha1, item)
        label, earlier_label = item["label"], earlier["label"]
        if earlier is item or _comparable(label) == _comparable(earlier_label):
            continue
        conflict = Problem(
            str(root / item["image"]),
            f"labelled {_label_name(label, classes)!r}, but the identical file {root / earlier['image']} is labelled "
            f"{_label_name(earlier_label, classes)!r}; keep one label for one image",
        )
        (tile_warnings if item.get("slide") and earlier.get("slide") else problems).append(conflict)
    return problems, tile_warnings


def _inspect_or_reason(path: str, is_mask: bool) -> ImageInfo | str:
    try:
        return inspect_file(path, is_mask)
    except ValueError as err:
        return str(err)


def _label_problem(label: object, n_classes: int, multi_label: bool) -> str | None:
    if multi_label:
        if not isinstance(label, (list, tuple)) or len(label) != n_classes or any(v not in (0, 1) for v in label):
            return f"label {label!r} is not a 0/1 list over the {n_classes} classes"
        return None
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < n_classes:
        return f"label {label!r} is not a known class index (0..{n_classes - 1})"
    return None


def _classes_without_items(items: Sequence[Mapping], classes: Sequence[str], multi_label: bool, root: Path) -> Iterable[Problem]:
    labeled = [item["label"] for item in items if "label" in item]
    if not labeled:
        return []
    counts = np.zeros(len(classes), dtype=int)
    for label in labeled:
        if multi_label and isinstance(label, (list, tuple)) and len(label) == len(classes):
            counts += np.asarray(label, dtype=int) == 1
        elif not multi_label and isinstance(label, (int, np.integer)) and 0 <= int(label) < len(classes):
            counts[int(label)] += 1
    return [Problem(str(root), f"class {name!r} has no image") for name, n in zip(classes, counts) if n == 0]


def duplicates_across_splits(split_items: Mapping[str, Sequence[Mapping]], report: CheckReport, dataset_dir: str | Path) -> list[str]:
    """Human-readable lines for exact duplicate images (same content hash) that sit in different splits."""
    root = Path(dataset_dir)
    seen: dict[str, tuple[str, str]] = {}
    lines = []
    for split, items in split_items.items():
        for item in items:
            path = str(root / item["image"])
            info = report.info.get(path)
            if info is None:
                continue
            if info.sha1 in seen and seen[info.sha1][0] != split:
                other_split, other_path = seen[info.sha1]
                lines.append(f"{path} ({split}) is an exact duplicate of {other_path} ({other_split})")
            seen.setdefault(info.sha1, (split, path))
    return lines
