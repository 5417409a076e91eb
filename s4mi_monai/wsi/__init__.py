"""Whole-slide inference at native resolution: region reading, band-wise sliding windows, slide-sized outputs.

``segment_slides`` is what a segmentation bundle's ``run slides`` calls (``docs/whole_slide.md``): for each slide
or large image, windows of the network's input size (or ``window`` slide pixels, resized to it) at the chosen
level, blended as MONAI's ``SlidingWindowInferer`` blends them, written as

* ``<name>_mask.tif``: the class of every pixel at that level, a tiled pyramidal BigTIFF (QuPath, ASAP, tifffile);
* ``<name>_overlay.png``: the slide's thumbnail with the classes tinted;
* ``<name>_outlines.geojson``: the regions as polygons in level-0 pixels (QuPath: File > Import objects).

``classify_slides`` is a classification bundle's ``run slides``: the slide cut into windows, each with tissue
scored by the classifier (``<name>_tiles.csv``), and a slide score from them (``slides.csv``, rule below).

A file that cannot be read is reported and skipped; the others are still done, then the run fails naming them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4mi_monai.io import atomic_write_text, write_json
from s4mi_monai.wsi.outputs import LabelImage, write_outline_geojson, write_overlay, write_pyramid_tiff
from s4mi_monai.wsi.reader import PYRAMID_SUFFIXES, Slide
from s4mi_monai.wsi.sliding import BLANK_LEVEL, label_writer, segment_slide, window_starts

__all__ = ["SlideFailures", "Slide", "classify_slides", "image_predictor", "segment_slide", "segment_slides", "slide_files", "window_starts"]

logger = logging.getLogger("s4mi_monai")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", *PYRAMID_SUFFIXES)
SPATIAL_STEPS = ("Resized", "Zoomd")
"""The bundle's resize of a whole image; a window is already at the network's scale, so it starts after them."""


class SlideFailures(RuntimeError):
    """Some inputs could not be read or predicted; the others were written."""


def slide_files(input_dir: str | Path) -> list[Path]:
    """The slides and images of a folder (or one file), sorted; other files are listed in the log, not ignored silently."""
    path = Path(input_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file())
    chosen = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for other in sorted(set(files) - set(chosen)):
        logger.warning("%s: not a slide or image (suffix %s), left out", other, other.suffix or "none")
    if not chosen:
        raise FileNotFoundError(f"{path} holds no slide or image ({', '.join(IMAGE_SUFFIXES)})")
    return chosen


def _intensity_start(preprocessing: Any) -> int:
    """Index of the first transform after the bundle's resize: what a window (already at the input size) still needs."""
    names = [type(t).__name__ for t in preprocessing.transforms]
    spatial = [i for i, name in enumerate(names) if name in SPATIAL_STEPS]
    if not spatial:
        raise ValueError(f"the bundle's preprocessing has no {' or '.join(SPATIAL_STEPS)} step to start after (transforms: {names})")
    return spatial[-1] + 1


def image_predictor(network: torch.nn.Module, preprocessing: Any, input_size: int, device: torch.device, multi_label: bool = False) -> Any:
    """``N x w x w x 3`` uint8 windows -> class probabilities, through the bundle's own preprocessing.

    A segmentation network gives ``N x C x w x w`` (a window resized to the network's ``input_size`` (area) has
    its probabilities resized back, bilinear); a classifier ``N x C``. Softmax over classes, or a sigmoid per
    class for ``multi_label``. The bundle's transforms after its resize (scaling, red-channel and ImageNet
    normalisation) are applied to each window, so slides are normalised exactly as the bundle's images are.
    """
    start = _intensity_start(preprocessing)

    @torch.no_grad()
    def predict(batch: np.ndarray) -> torch.Tensor:
        window = batch.shape[1]
        images = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        if window != input_size:
            images = torch.nn.functional.interpolate(images, size=(input_size, input_size), mode="area")
        prepared = torch.stack([torch.as_tensor(preprocessing({"image": image}, start=start)["image"]) for image in images])
        logits = network(prepared.to(device)).float()
        probabilities = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
        if window != input_size and probabilities.ndim == 4:
            probabilities = torch.nn.functional.interpolate(probabilities, size=(window, window), mode="bilinear", align_corners=False)
        return probabilities

    return predict


def segment_slides(
    input_dir: str | Path,
    network: torch.nn.Module,
    preprocessing: Any,
    output_dir: str | Path,
    class_names: Sequence[str],
    input_size: int,
    device: torch.device,
    window: int | None = None,
    overlap: float = 0.25,
    level: int | None = None,
    mpp: float | None = None,
    batch_size: int = 4,
    skip_blank: bool = True,
) -> list[dict[str, Any]]:
    """Segment every slide of ``input_dir`` (see the module docstring); returns one summary per written slide."""
    network.eval()
    predict = image_predictor(network, preprocessing, input_size, device)
    window = int(window or input_size)
    output_dir = Path(output_dir)
    return _for_each_input(
        input_dir,
        output_dir,
        lambda path: _segment_one(path, predict, output_dir, class_names, window, overlap, level, mpp, batch_size, skip_blank),
        lambda done: write_json(output_dir / "slides.json", done),
    )


def _for_each_input(input_dir: str | Path, output_dir: Path, work: Any, finish: Any) -> list[dict[str, Any]]:
    """``work(path)`` for every input; an unreadable one is logged and skipped, and after ``finish(results)`` they fail the run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    done, failed = [], []
    for path in slide_files(input_dir):
        try:
            done.append(work(path))
        except (ValueError, OSError) as err:
            logger.error("%s: skipped (%s)", path, err)
            failed.append(f"{path}: {err}")
    finish(done)
    if failed:
        raise SlideFailures(f"{len(failed)} of {len(failed) + len(done)} inputs failed (the others were written to {output_dir}):\n" + "\n".join(failed))
    return done


def _segment_one(
    path: Path, predict: Any, output_dir: Path, class_names: Sequence[str], window: int, overlap: float, level: int | None, mpp: float | None, batch_size: int, skip_blank: bool
) -> dict[str, Any]:
    started = time.perf_counter()
    with Slide(path, level=level, mpp=mpp) as slide, LabelImage(output_dir / f".{path.stem}.labels", *slide.size[::-1]) as labels:
        width, height = slide.size
        counts = segment_slide(slide, predict, len(class_names), label_writer(labels.write_rows), window, overlap, batch_size, skip_blank)
        levels = write_pyramid_tiff(labels, output_dir / f"{path.stem}_mask.tif", slide.mpp)
        write_overlay(slide, labels, output_dir / f"{path.stem}_overlay.png")
        regions = write_outline_geojson(labels, class_names, slide.downsample, output_dir / f"{path.stem}_outlines.geojson")
        fractions = np.bincount(labels.strided(max(1, max(height, width) // 2048)).ravel(), minlength=len(class_names))
    seconds = time.perf_counter() - started
    summary = {
        "slide": str(path),
        "level": slide.level,
        "size": [width, height],
        "mpp": slide.mpp,
        "window": window,
        **counts,
        "tiff_levels": levels,
        "regions": regions,
        "class_fractions": {name: float(f) for name, f in zip(class_names, fractions / max(fractions.sum(), 1))},
        "seconds": round(seconds, 2),
    }
    logger.info(
        "%s: level %d, %dx%d px, %d windows (%d blank) in %.1f s; %d regions -> %s_{mask.tif,overlay.png,outlines.geojson}",
        path.name, slide.level, width, height, counts["windows"], counts["blank"], seconds, regions, output_dir / path.stem,
    )  # fmt: skip
    return summary


SLIDE_RULES = ("mean", "max")


def classify_slides(
    input_dir: str | Path,
    network: torch.nn.Module,
    preprocessing: Any,
    output_dir: str | Path,
    class_names: Sequence[str],
    input_size: int,
    device: torch.device,
    multi_label: bool = False,
    window: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    batch_size: int = 16,
    min_tissue: float = 0.25,
    rule: str = "mean",
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Per-window class probabilities and one score per slide; returns the slide rows of ``slides.csv``.

    The slide is cut into non-overlapping windows (the last ones padded with glass); a window whose tissue
    fraction (pixels not glass, see :data:`s4mi_monai.wsi.sliding.BLANK_LEVEL`) is below ``min_tissue`` is not
    scored. The slide score of each class is the ``mean`` of its probability over the scored windows, or the
    ``max`` (a class present anywhere: for findings that one region decides). The slide's prediction is the
    most probable class, or for ``multi_label`` every class scoring at least ``threshold``.
    """
    if rule not in SLIDE_RULES:
        raise ValueError(f"slide rule must be one of {SLIDE_RULES}, got {rule!r}")
    network.eval()
    predict = image_predictor(network, preprocessing, input_size, device, multi_label=multi_label)
    window = int(window or input_size)
    output_dir = Path(output_dir)

    def classify(path: Path) -> dict[str, Any]:
        with Slide(path, level=level, mpp=mpp) as slide:
            tiles = _score_tiles(slide, predict, window, batch_size, min_tissue)
        atomic_write_text(output_dir / f"{path.stem}_tiles.csv", _csv([["left", "top", "width", "height", "tissue", *class_names], *tiles]))
        scored = np.array([row[5:] for row in tiles], dtype=np.float64).reshape(-1, len(class_names))
        score = (scored.mean(axis=0) if rule == "mean" else scored.max(axis=0)) if len(scored) else np.full(len(class_names), np.nan)
        if not len(scored):
            prediction = "no tissue"
        elif multi_label:
            prediction = ";".join(name for name, value in zip(class_names, score) if value >= threshold)
        else:
            prediction = class_names[int(np.argmax(score))]
        logger.info("%s: %d windows with tissue, slide %s %s -> %s", path.name, len(tiles), rule, np.round(score, 3).tolist(), prediction)
        return {"slide": str(path), "level": slide.level, "tiles": len(tiles), "rule": rule, **dict(zip(class_names, score.tolist())), "prediction": prediction}

    def finish(slides: list[dict[str, Any]]) -> None:
        if slides:
            header = list(slides[0])
            atomic_write_text(output_dir / "slides.csv", _csv([header, *([row[key] for key in header] for row in slides)]))

    return _for_each_input(input_dir, output_dir, classify, finish)


def _score_tiles(slide: Slide, predict: Any, window: int, batch_size: int, min_tissue: float) -> list[list[Any]]:
    width, height = slide.size
    rows, pending = [], []

    def flush() -> None:
        probabilities = predict(np.stack([tile for *_, tile in pending])).cpu().numpy()
        rows.extend([left, top, w, h, round(tissue, 4), *map(float, p)] for (left, top, w, h, tissue, _), p in zip(pending, probabilities))
        pending.clear()

    for top in range(0, height, window):
        for left in range(0, width, window):
            tile = slide.read(left, top, window, window)
            w, h = min(window, width - left), min(window, height - top)
            tissue = 1.0 - float((tile[:h, :w] >= BLANK_LEVEL).all(axis=-1).mean())
            if tissue >= min_tissue:
                pending.append((left, top, w, h, tissue, tile))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return rows


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()

