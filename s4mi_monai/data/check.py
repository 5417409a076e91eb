"""Up-front dataset checks: every problem is found before anything trains, and all are reported at once.

An hour-long run must not die on the 1,900th image. ``check_items`` opens and fully decodes every
referenced image and mask (in parallel threads: PIL releases the GIL while decoding), checks masks
against their images, labels against the known classes, and hashes file contents so that exact
duplicates can be kept in one split or reported across splits.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
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
) -> CheckReport:
    """Check every item of a datalist (``image``, optional ``mask``, optional ``label``).

    Labels must be a known class index (single-label) or a 0/1 vector over ``classes``
    (multi-label); a class that no item carries is a problem too.
    """
    report = CheckReport()
    root = Path(dataset_dir)
    jobs: dict[str, bool] = {}
    for item in items:
        jobs[str(root / item["image"])] = False
        if item.get("mask"):
            jobs[str(root / item["mask"])] = True

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        outcomes = dict(zip(jobs, pool.map(_inspect_or_reason, jobs, jobs.values())))
    for path, outcome in outcomes.items():
        if isinstance(outcome, str):
            report.problems.append(Problem(path, outcome))
        else:
            report.info[path] = outcome
            if outcome.mask_levels is not None and (reason := _mask_problem(outcome.mask_levels)):
                report.problems.append(Problem(path, reason))

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
    return report


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
