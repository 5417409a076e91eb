"""Synthetic demo datasets, written in the layouts of the real ones so the demo runs the real preparers.

Nothing is downloaded: every image is drawn from a seed, in seconds on a laptop. The same seed
gives byte-identical files with the same library versions; labels, file names and hence splits
depend on the seed alone. The classes differ visibly (colour, size, border, texture), so a small
network learns them well above chance in a minute; the images are cartoons of the real ones, not a benchmark.

Layouts written (see :mod:`s4mi_monai.data.isic2017` and :mod:`s4mi_monai.data.dermofit`)::

    isic2017/ISIC-2017_Training_Data/ISIC_<id>.jpg (+ a few ISIC_<id>_superpixels.png)
    isic2017/ISIC-2017_Training_Part1_GroundTruth/ISIC_<id>_segmentation.png
    isic2017/ISIC-2017_Training_Part3_GroundTruth.csv
    dermofit/<CLASS>/<lesion id>/<lesion id>.png and <lesion id>mask.png
    dermatomyositis/slides/<slide>.png, masks/<slide>_mask.png, labels.csv (image,mask,patient,phenotypes)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_DATASETS = ("isic2017", "dermofit", "dermatomyositis")
COMPLETE_MARKER = ".s4mi_demo_complete"
HISTOLOGY_LABELS = ("TFH-1", "TFH-217", "TFH-Like", "B cells", "Others")

# Independent random streams per dataset, so adding images to one never changes another.
_ISIC_STREAM, _DERMOFIT_STREAM, _HISTOLOGY_STREAM = 1, 2, 3


@dataclass(frozen=True)
class LesionStyle:
    """How one class looks: base colour, radius range (fraction of the image side), shape, texture."""

    colour: tuple[int, int, int]
    radius: tuple[float, float]
    aspect: tuple[float, float]
    irregularity: float  # amplitude of each border harmonic, relative to the radius
    softness: float  # width of the blurred border, relative to the radius
    pattern: str


ISIC_STYLES = {  # dermoscopic look; index = ISIC class id (nevus, melanoma, seborrheic keratosis)
    0: LesionStyle((135, 85, 55), (0.13, 0.2), (0.75, 1.0), 0.03, 0.12, "uniform"),
    1: LesionStyle((95, 60, 40), (0.25, 0.35), (0.7, 1.0), 0.16, 0.05, "blotches"),
    2: LesionStyle((190, 145, 100), (0.2, 0.29), (0.6, 0.9), 0.05, 0.04, "cobblestone"),
}
DERMOFIT_STYLES = {  # clinical look
    "AK": LesionStyle((205, 125, 120), (0.22, 0.3), (0.6, 0.95), 0.08, 0.2, "scale"),
    "BCC": LesionStyle((228, 178, 170), (0.18, 0.27), (0.8, 1.0), 0.04, 0.08, "telangiectasia"),
    "ML": LesionStyle((140, 95, 65), (0.15, 0.24), (0.8, 1.0), 0.02, 0.08, "uniform"),
    "SCC": LesionStyle((175, 65, 55), (0.22, 0.3), (0.75, 1.0), 0.08, 0.08, "crust_centre"),
    "SK": LesionStyle((178, 126, 88), (0.2, 0.29), (0.6, 0.9), 0.05, 0.04, "cobblestone"),
    "IEC": LesionStyle((195, 80, 75), (0.28, 0.36), (0.55, 0.85), 0.12, 0.15, "scale"),
    "PYO": LesionStyle((195, 35, 55), (0.15, 0.23), (0.85, 1.0), 0.03, 0.05, "rim"),
    "VASC": LesionStyle((120, 40, 95), (0.18, 0.28), (0.7, 1.0), 0.1, 0.06, "lobules"),
    "DF": LesionStyle((150, 100, 75), (0.16, 0.25), (0.75, 1.0), 0.03, 0.12, "pale_centre"),
    "MEL": LesionStyle((75, 45, 35), (0.24, 0.33), (0.7, 1.0), 0.16, 0.05, "blotches"),
}
# Fluorescence cell types: label -> (colour, radius in px, aspect range, border irregularity).
_CELL_TYPES = {
    "nuclei": ((50, 70, 190), (2.5, 4.0), (0.8, 1.0), 0.05),  # DAPI background, in every slide
    "TFH-1": ((70, 230, 80), (3.5, 5.0), (0.85, 1.0), 0.03),
    "TFH-217": ((235, 60, 205), (3.5, 5.0), (0.85, 1.0), 0.03),
    "TFH-Like": ((240, 215, 50), (4.0, 5.5), (0.3, 0.45), 0.03),
    "B cells": ((60, 215, 235), (7.0, 10.0), (0.8, 1.0), 0.04),
    "Others": ((235, 70, 45), (5.0, 7.0), (0.7, 1.0), 0.2),
}


def _stream(seed: int, *keys: int) -> np.random.Generator:
    """One random stream per (dataset, item): an item's pixels never depend on how many others there are."""
    return np.random.default_rng([seed, *keys])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], feature_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise varying over about ``feature_px`` pixels (a bicubic-upsampled grid)."""
    height, width = shape
    grid = rng.standard_normal((max(2, round(height / feature_px) + 2), max(2, round(width / feature_px) + 2)))
    field = np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize((width, height), Image.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _border_radius(rng: np.random.Generator, angles: np.ndarray, irregularity: float, batch_dims: int = 0) -> np.ndarray:
    """Relative radius r(theta) = 1 + sum of random harmonics: irregular, lobulated borders.

    The first ``batch_dims`` axes of ``angles`` index separate shapes, each with its own harmonics.
    """
    harmonics = np.arange(2, 7)
    draw_shape = (*angles.shape[:batch_dims], *[1] * (angles.ndim - batch_dims), harmonics.size)
    amplitudes = irregularity * rng.uniform(0.3, 1.0, draw_shape) / np.sqrt(harmonics - 1)
    phases = rng.uniform(0, 2 * np.pi, draw_shape)
    ripple = (amplitudes * np.cos(np.multiply.outer(angles, harmonics) + phases)).sum(axis=-1)
    return np.clip(1.0 + ripple, 0.3, None)


def _lesion_distance(rng: np.random.Generator, shape: tuple[int, int], style: LesionStyle) -> np.ndarray:
    """Distance to a randomly placed, rotated, irregular lesion centre, in units of its border (1 = border)."""
    side = min(shape)
    centre = np.array(shape) / 2 + rng.uniform(-0.12, 0.12, 2) * side
    radius = rng.uniform(*style.radius) * side
    aspect, angle = rng.uniform(*style.aspect), rng.uniform(0, np.pi)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    theta = np.arctan2(across, along)
    return np.hypot(along, across) / (radius * _border_radius(rng, theta, style.irregularity))


def _blend(image: np.ndarray, colour: Sequence[float] | np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """``image`` moved towards ``colour`` (a colour or an image) by ``weight``, clipped to [0, 1] per pixel."""
    weight = np.clip(weight, 0, 1)[..., None]
    return image * (1 - weight) + np.asarray(colour, dtype=np.float32) * weight


def _stroke_alpha(rng: np.random.Generator, shape: tuple[int, int], count: int, width: int, inside: float = 1.0) -> np.ndarray:
    """Alpha of ``count`` thin random curves (hairs, vessels): quadratic Beziers, ``inside`` scales their span."""
    height, width_px = shape
    canvas = Image.new("L", (width_px, height))
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0, 1, 24)[:, None]
    centre = np.array([width_px, height]) / 2
    for _ in range(count):
        start, end = centre + inside * rng.uniform(-0.6, 0.6, (2, 2)) * [width_px, height]
        control = (start + end) / 2 + inside * rng.normal(0, 0.12, 2) * [width_px, height]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
        draw.line([tuple(p) for p in points], fill=int(rng.integers(170, 256)), width=width)
    return np.asarray(canvas, dtype=np.float32) / 255


def _skin(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Skin background: a random tone, slow shading variation and fine grain."""
    tone = rng.uniform()
    colour = (1 - tone) * np.array([236, 196, 172]) + tone * np.array([186, 136, 104])
    shading = 1 + 0.04 * _smooth_noise(rng, shape, min(shape) / 1.5) + 0.025 * _smooth_noise(rng, shape, min(shape) / 25)
    return colour * shading[..., None] + rng.normal(0, 3.5, (*shape, 3))


def _paint_lesion(rng: np.random.Generator, image: np.ndarray, style: LesionStyle) -> np.ndarray:
    """Paint one lesion of ``style`` onto ``image`` in place; returns its mask (border = distance 1)."""
    shape, side = image.shape[:2], min(image.shape[:2])
    distance = _lesion_distance(rng, shape, style)
    colour = np.array(style.colour) * rng.uniform(0.88, 1.1) + rng.uniform(-5, 5, 3)
    lesion = colour * (1 + 0.07 * _smooth_noise(rng, shape, side / 6))[..., None]
    noise = _smooth_noise(rng, shape, side / 12)
    speckle = rng.uniform(size=shape)
    if style.pattern == "uniform":
        lesion *= (0.85 + 0.15 * np.clip(distance, 0, 1))[..., None]
    elif style.pattern == "blotches":
        lesion = _blend(lesion, (150, 100, 70), _smooth_noise(rng, shape, side / 8) - 0.3)
        lesion = _blend(lesion, (30, 22, 22), _smooth_noise(rng, shape, side / 10) - 0.2)
        lesion = _blend(lesion, (105, 112, 130), (_smooth_noise(rng, shape, side / 9) - 0.7) * 0.8)
    elif style.pattern == "cobblestone":
        lesion *= np.where(np.abs(noise) < 0.18, 0.72, 1.0)[..., None]
        lesion = _blend(lesion, (240, 230, 195), speckle > 0.975)
        lesion = _blend(lesion, (70, 50, 38), speckle < 0.015)
    elif style.pattern == "scale":
        lesion = _blend(lesion, (238, 222, 212), (speckle > 0.8) * (noise > 0) * 0.85)
    elif style.pattern == "telangiectasia":
        lesion = _blend(lesion, (250, 235, 230), (0.6 - distance) * 0.8)
        vessels = _stroke_alpha(rng, shape, 5, max(1, side // 100), inside=0.4) * (distance < 0.9)
        lesion = _blend(lesion, (150, 30, 40), vessels)
    elif style.pattern == "crust_centre":
        centre = distance * (1 + 0.25 * noise) < 0.5
        lesion = _blend(lesion, (235, 215, 150), centre * (0.8 + 0.2 * speckle))
        lesion = _blend(lesion, (110, 60, 35), centre * (speckle > 0.88))
    elif style.pattern == "rim":
        lesion = _blend(lesion, (245, 200, 200), (distance - 0.78) * 6)  # bright collarette
        lesion = _blend(lesion, (255, 235, 235), (0.3 - distance) * 4)  # glossy top
    elif style.pattern == "lobules":
        lesion = _blend(lesion, (185, 35, 60), noise)
    elif style.pattern == "pale_centre":
        lesion = _blend(lesion, (218, 180, 160), (0.65 - distance) * 3)
    else:
        raise ValueError(f"unknown lesion pattern {style.pattern!r}")
    image[...] = _blend(image, lesion, 0.5 + (1 - distance) / (2 * style.softness))  # half-blended on the mask border
    return distance <= 1


def _add_artefacts(rng: np.random.Generator, image: np.ndarray, hair_probability: float, vignette_probability: float) -> np.ndarray:
    """Artefacts that are not lesion (so not in the mask): dark hairs and a dermoscope's dark corners."""
    shape = image.shape[:2]
    if rng.uniform() < hair_probability:
        hairs = _stroke_alpha(rng, shape, int(rng.integers(3, 12)), max(1, round(min(shape) / 110)))
        image = _blend(image, (45, 32, 28), hairs * 0.9)
    if rng.uniform() < vignette_probability:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        radius = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) / (min(shape) / 2)
        image *= np.clip(1 - (radius - rng.uniform(1.0, 1.2)) * 4, 0.04, 1)[..., None]
    return image


def _save_rgb(image: np.ndarray, path: Path, **options: object) -> None:
    Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8), "RGB").save(path, **options)


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(path)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_readme(root: Path, seed: int, mimics: str) -> None:
    root.joinpath("README.txt").write_text(
        f"Synthetic demo data generated by s4mi-monai (s4mi_monai.data.demo) with seed {seed}.\n"
        f"It mimics the file layout of {mimics}; no image shows a real patient. Not for research use.\n"
    )


def _superpixels(rng: np.random.Generator, size: int) -> np.ndarray:
    """Voronoi cells around jittered grid seeds, index encoded as 24-bit RGB like ISIC's superpixel files."""
    cells = max(2, size // 12)
    grid = (np.stack(np.mgrid[:cells, :cells], -1).reshape(-1, 2) + rng.uniform(0.1, 0.9, (cells * cells, 2))) * size / cells
    yy, xx = np.mgrid[:size, :size]
    squared = (yy[..., None] - grid[:, 0]) ** 2 + (xx[..., None] - grid[:, 1]) ** 2
    index = squared.argmin(axis=-1)
    return np.stack([index & 255, (index >> 8) & 255, index >> 16], -1)


def make_isic2017_like(root: Path, seed: int, n_images: int = 150, size: int = 128) -> None:
    """ISIC-2017 training part (official layout), ~50% nevus, 30% melanoma, 20% seborrheic keratosis."""
    root = Path(root)
    data_dir, mask_dir = root / "ISIC-2017_Training_Data", root / "ISIC-2017_Training_Part1_GroundTruth"
    data_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(exist_ok=True)
    n_melanoma, n_keratosis = round(0.3 * n_images), round(0.2 * n_images)
    labels = np.array([1] * n_melanoma + [2] * n_keratosis + [0] * (n_images - n_melanoma - n_keratosis))
    _stream(seed, _ISIC_STREAM).shuffle(labels)

    rows = []
    for index, label in enumerate(labels.tolist()):
        rng = _stream(seed, _ISIC_STREAM, index)
        image_id = f"ISIC_{index:07d}"
        image = _skin(rng, (size, size))
        mask = _paint_lesion(rng, image, ISIC_STYLES[label])
        image = _add_artefacts(rng, image, hair_probability=0.3, vignette_probability=0.2)
        _save_rgb(image, data_dir / f"{image_id}.jpg", quality=90)
        _save_mask(mask, mask_dir / f"{image_id}_segmentation.png")
        if index < 3:  # the real download has superpixel files next to the images
            _save_rgb(_superpixels(rng, size), data_dir / f"{image_id}_superpixels.png")
        rows.append((image_id, f"{float(label == 1):.1f}", f"{float(label == 2):.1f}"))
    _write_csv(root / "ISIC-2017_Training_Part3_GroundTruth.csv", ("image_id", "melanoma", "seborrheic_keratosis"), rows)
    _write_readme(root, seed, "the ISIC 2017 challenge download (training part, tasks 1 and 3)")


def make_dermofit_like(root: Path, seed: int, per_class: int = 10, size: int = 128) -> None:
    """Dermofit Image Library layout: ten classes of clinical (non-dermoscopic) lesion photos with masks."""
    root = Path(root)
    for class_index, (name, style) in enumerate(DERMOFIT_STYLES.items()):
        numbers = _stream(seed, _DERMOFIT_STREAM, class_index).choice(np.arange(1, 5 * per_class + 1), per_class, replace=False)
        for number in sorted(numbers.tolist()):
            rng = _stream(seed, _DERMOFIT_STREAM, class_index, number)
            lesion_id = f"{name}{number}"
            lesion_dir = root / name / lesion_id
            lesion_dir.mkdir(parents=True, exist_ok=True)
            image = _skin(rng, (size, size))
            mask = _paint_lesion(rng, image, style)
            image = _add_artefacts(rng, image, hair_probability=0.1, vignette_probability=0.0)
            _save_rgb(image, lesion_dir / f"{lesion_id}.png")
            _save_mask(mask, lesion_dir / f"{lesion_id}mask.png")
    _write_readme(root, seed, "the Dermofit Image Library (one folder per class, one per lesion)")


def _draw_cells(rng: np.random.Generator, shape: tuple[int, int], cell_type: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` cells of one type, half of them clustered: (cell mask, glowing RGB layer)."""
    colour, radius_px, aspect_range, irregularity = _CELL_TYPES[cell_type]
    height, width = shape
    clusters = rng.uniform((0, 0), (height, width), (3, 2))
    clustered = clusters[rng.integers(0, 3, count // 2)] + rng.normal(0, 0.08 * min(shape), (count // 2, 2))
    centres = np.concatenate([clustered, rng.uniform((0, 0), (height, width), (count - count // 2, 2))])
    angles = np.broadcast_to(np.linspace(0, 2 * np.pi, 16, endpoint=False), (count, 16))
    radius = rng.uniform(*radius_px, (count, 1)) * _border_radius(rng, angles, irregularity, batch_dims=1)
    aspect, rotation = rng.uniform(*aspect_range, (count, 1)), rng.uniform(0, np.pi, (count, 1))
    along, across = radius * np.cos(angles), radius * aspect * np.sin(angles)
    xs = centres[:, 1:] + along * np.cos(rotation) - across * np.sin(rotation)
    ys = centres[:, :1] + along * np.sin(rotation) + across * np.cos(rotation)
    canvas = Image.new("L", (width, height))
    draw = ImageDraw.Draw(canvas)
    for x, y, brightness in zip(xs.tolist(), ys.tolist(), rng.integers(150, 256, count).tolist()):
        draw.polygon(list(zip(x, y)), fill=brightness)
    cells = np.asarray(canvas, dtype=np.float32) / 255
    glow = np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) / 255
    return cells > 0, np.maximum(cells, 1.3 * glow)[..., None] * np.array(colour, dtype=np.float32)


def make_histology_like(
    root: Path, seed: int, n_patients: int = 10, slides_per_patient: int = 2, height: int = 640, width: int = 900
) -> None:
    """Fluorescence-like slides with cell masks and multi-label phenotypes (CSV layout).

    Each phenotype label is a cell type of its own colour/shape, drawn only in slides carrying that
    label. Slide i gets label i mod 5 plus 0-2 random ones, so with the defaults every label occurs
    in at least two patients.
    """
    root = Path(root)
    (root / "slides").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    label_rng = _stream(seed, _HISTOLOGY_STREAM)
    shape, cells_per_area = (height, width), height * width / (640 * 900)
    rows = []
    for index in range(n_patients * slides_per_patient):
        primary = HISTOLOGY_LABELS[index % len(HISTOLOGY_LABELS)]
        others = [label for label in HISTOLOGY_LABELS if label != primary]
        labels = {primary, *label_rng.choice(others, int(label_rng.integers(0, 3)), replace=False)}
        phenotypes = [label for label in HISTOLOGY_LABELS if label in labels]
        patient, slide = index // slides_per_patient + 1, index % slides_per_patient + 1
        rng = _stream(seed, _HISTOLOGY_STREAM, patient, slide)
        background = np.array([12, 10, 20], dtype=np.float32) * (1 + 0.5 * _smooth_noise(rng, shape, 120)[..., None])
        image = background + 2.5 * rng.standard_normal((*shape, 3), dtype=np.float32)
        mask = np.zeros(shape, dtype=bool)
        for cell_type in ("nuclei", *phenotypes):
            count = max(1, round((600 if cell_type == "nuclei" else 130) * cells_per_area))
            cells, layer = _draw_cells(rng, shape, cell_type, count)
            mask |= cells
            image += layer
        slide_id = f"P{patient}_S{slide}"
        _save_rgb(image, root / "slides" / f"{slide_id}.png", compress_level=1)  # noisy: zlib gains little
        _save_mask(mask, root / "masks" / f"{slide_id}_mask.png")
        rows.append((f"slides/{slide_id}.png", f"masks/{slide_id}_mask.png", f"P{patient}", ";".join(phenotypes)))
    _write_csv(root / "labels.csv", ("image", "mask", "patient", "phenotypes"), rows)
    _write_readme(root, seed, "a dermatomyositis fluorescence-histology set (slides, cell masks, labels.csv)")


_GENERATORS: dict[str, Callable[[Path, int], None]] = {
    "isic2017": make_isic2017_like,
    "dermofit": make_dermofit_like,
    "dermatomyositis": make_histology_like,
}


def _is_complete(root: Path, seed: int) -> bool:
    try:
        return json.loads((root / COMPLETE_MARKER).read_text()).get("seed") == seed
    except (OSError, ValueError, AttributeError):
        return False


def _remove_abandoned_tmp_dirs(out_dir: Path, name: str) -> None:
    """Delete ``<name>.tmp-<pid>`` folders left by killed runs (their process no longer exists)."""
    for tmp_dir in out_dir.glob(f"{name}.tmp-*"):
        pid = tmp_dir.name.rsplit("-", 1)[1]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def make_demo_data(out_dir: str | Path, seed: int = 0, datasets: Sequence[str] = DEMO_DATASETS, overwrite: bool = False) -> dict[str, Path]:
    """Generate the demo datasets under ``out_dir``; returns ``{name: dataset root}``.

    A dataset whose root holds a completion marker for the same seed is kept (unless ``overwrite``).
    Each dataset is generated in ``<root>.tmp-<pid>`` and moved into place before its marker is
    written, so a run killed part-way leaves no root that looks complete and is redone next time.
    """
    out_dir = Path(out_dir)
    unknown = sorted(set(datasets) - set(_GENERATORS))
    if unknown:
        raise ValueError(f"unknown demo dataset(s) {unknown}; known: {', '.join(DEMO_DATASETS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = {}
    for name in datasets:
        root = roots[name] = out_dir / name
        if not overwrite and _is_complete(root, seed):
            continue
        _remove_abandoned_tmp_dirs(out_dir, name)
        tmp_dir = out_dir / f"{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        _GENERATORS[name](tmp_dir, seed)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp_dir, root)
        (root / COMPLETE_MARKER).write_text(json.dumps({"dataset": name, "seed": seed}) + "\n")
    return roots
