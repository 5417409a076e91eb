"""Whole-slide inference: region reading, MONAI-equivalent band-wise sliding windows, bounded memory, outputs, failures."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from PIL import Image, ImageDraw

from s4mi_monai.wsi import SlideFailures, segment_slides
from s4mi_monai.wsi.contours import mask_features
from s4mi_monai.wsi.outputs import LabelImage, write_pyramid_tiff
from s4mi_monai.wsi.reader import Slide
from s4mi_monai.wsi.sliding import label_writer, segment_slide, window_starts

tifffile = pytest.importorskip("tifffile")


class TinySegmenter(torch.nn.Module):
    """A deterministic 2-class network with a receptive field, so window borders matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 235, np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    image[((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2 < 1] = (150, 70, 90)
    return (image + rng.integers(0, 12, image.shape)).clip(0, 255).astype(np.uint8)


def _predictor(network: torch.nn.Module):
    def predict(batch: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(network(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255), dim=1)

    return predict


def _segment_in_bands(path: Path, window: int, overlap: float, **kwargs) -> np.ndarray:
    rows = []
    with Slide(path) as slide:
        segment_slide(slide, _predictor(TinySegmenter()), 2, lambda top, probs: rows.append((top, probs.copy())), window, overlap, **kwargs)
    assert [top for top, _ in rows] == sorted(top for top, _ in rows)
    return np.concatenate([probs for _, probs in rows], axis=1)


@pytest.mark.parametrize("size", [(150, 130), (97, 64)])
def test_band_wise_windows_equal_monai_sliding_window_inferer(tmp_path, size):
    image = _image(*size)
    Image.fromarray(image).save(tmp_path / "image.png")
    bands = _segment_in_bands(tmp_path / "image.png", window=32, overlap=0.25, batch_size=3)
    inferer = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=3, overlap=0.25, mode="gaussian")
    network = TinySegmenter()
    with torch.no_grad():
        expected = inferer(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, lambda x: torch.softmax(network(x), dim=1))[0]
    assert bands.shape == tuple(expected.shape)
    np.testing.assert_allclose(bands, expected.numpy(), atol=1e-5)
    assert window_starts(150, 32, 0.25) == [0, 24, 48, 72, 96, 118]


def test_an_image_of_exactly_one_window_equals_a_direct_forward_pass(tmp_path):
    image = _image(48, 48, seed=3)
    Image.fromarray(image).save(tmp_path / "tile.png")
    bands = _segment_in_bands(tmp_path / "tile.png", window=48, overlap=0.5)
    direct = _predictor(TinySegmenter())(image[None])[0].numpy()
    np.testing.assert_allclose(bands, direct, atol=1e-6)


def _pyramid(path: Path, height: int, width: int, tile: int = 512, mpp: float = 0.25) -> None:
    """A pyramidal RGB BigTIFF written tile by tile (never whole in memory): glass with one tissue disc."""

    def tiles(scale: int):
        h, w = -(-height // scale), -(-width // scale)
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                yy, xx = np.mgrid[top : top + tile, left : left + tile] * scale
                disc = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 3)) ** 2 < 1
                block = np.full((tile, tile, 3), 240, np.uint8)
                block[disc] = (140, 60, 90)
                yield block

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib", "dtype": np.uint8}
        tif.write(tiles(1), shape=(height, width, 3), subifds=2, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", **options)
        for scale in (2, 4):
            tif.write(tiles(scale), shape=(-(-height // scale), -(-width // scale), 3), subfiletype=1, **options)


def test_pyramid_levels_and_resolution_are_chosen_and_read_by_region(tmp_path):
    _pyramid(tmp_path / "slide.tif", 2048, 3072)
    with Slide(tmp_path / "slide.tif") as slide:
        assert slide.size == (3072, 2048) and slide.level_dimensions[1] == (1536, 1024) and slide.mpp == pytest.approx(0.25)
        region = slide.read(3000, -10, 100, 30)
        assert region.shape == (30, 100, 3) and (region[:10] == 255).all() and (region[:, 72:] == 255).all()  # white outside
    assert Slide(tmp_path / "slide.tif", mpp=1.0).level == 2 and Slide(tmp_path / "slide.tif", mpp=0.6).level == 1
    with pytest.raises(ValueError, match="level 5 does not exist"):
        Slide(tmp_path / "slide.tif", level=5)
    Image.fromarray(_image(40, 40)).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match="records no resolution"):
        Slide(tmp_path / "photo.png", mpp=0.5)


@pytest.mark.slow
def test_a_large_slide_is_segmented_with_bounded_memory(tmp_path):
    """A 16384 x 16384 slide (768 MiB as RGB) is read window by window: the traced peak stays near one band of windows."""
    side, window = 16384, 512
    _pyramid(tmp_path / "big.tif", side, side)
    labels = LabelImage(tmp_path / "labels.bin", side, side)

    def predict(batch: np.ndarray) -> torch.Tensor:
        tissue = torch.from_numpy((batch.mean(axis=-1) < 200).astype(np.float32))
        return torch.stack([1 - tissue, tissue], dim=1)

    tracemalloc.start()
    with Slide(tmp_path / "big.tif") as slide:
        counts = segment_slide(slide, predict, 2, label_writer(labels.write_rows), window=window, overlap=0.0, batch_size=2, skip_blank=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    band = (2 + 1) * window * side * 4 + (side // window) * window * window * 3  # scores, weights, one row of windows
    print(f"{side} x {side} slide, {counts['windows']} windows of {window}: traced peak {peak / 2**20:.0f} MiB (band {band / 2**20:.0f} MiB)")
    assert counts["windows"] == (side // window) ** 2 and 0 < counts["blank"] < counts["windows"]
    assert peak < 1.5 * band < side * side * 3 / 4
    assert labels.row(side // 2)[side // 2] == 1 and labels.row(0)[0] == 0
    labels.close()


def test_pyramid_tiff_mask_round_trips_with_halved_levels(tmp_path):
    labels = np.zeros((1100, 1300), np.uint8)
    labels[200:900, 300:1000] = 1
    with LabelImage(tmp_path / "labels.bin", *labels.shape) as stored:
        stored.write_rows(0, labels[:700])
        stored.write_rows(700, labels[700:])
        np.testing.assert_array_equal(stored.strided(3), labels[::3, ::3])
        levels = write_pyramid_tiff(stored, tmp_path / "mask.tif", mpp=0.5)
    assert levels == 3
    with tifffile.TiffFile(tmp_path / "mask.tif") as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == 512 and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(page.asarray(), labels)
        assert [sub.shape for sub in tif.series[0].levels] == [(1100, 1300), (550, 650), (275, 325)]


def test_outlines_are_valid_geojson_polygons_that_cover_the_mask():
    labels = np.zeros((60, 80), np.uint8)
    labels[5:40, 5:60] = 1
    labels[10:20, 10:30] = 0  # a hole
    labels[25, 40], labels[26, 41] = 0, 0  # two hole pixels touching at a corner
    labels[45:55, 65:75] = 1
    collection = json.loads(json.dumps(mask_features(labels, ["background", "lesion"], scale=2.0)))
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    canvas = Image.new("L", (80 * 4, 60 * 4), 0)
    draw = ImageDraw.Draw(canvas)
    for feature in collection["features"]:
        assert feature["geometry"]["type"] == "Polygon" and feature["properties"]["objectType"] == "annotation"
        assert feature["properties"]["classification"]["name"] == "lesion"
        rings = feature["geometry"]["coordinates"]
        for ring in rings:
            assert ring[0] == ring[-1] and len(ring) >= 4
        draw.polygon([(x / 2 * 4, y / 2 * 4) for x, y in rings[0]], fill=1)
        for hole in rings[1:]:
            draw.polygon([(x / 2 * 4, y / 2 * 4) for x, y in hole], fill=0)
    assert [len(f["geometry"]["coordinates"]) for f in collection["features"]] == [4, 1]
    np.testing.assert_array_equal(np.asarray(canvas)[2::4, 2::4], labels)


def test_unreadable_inputs_are_reported_after_the_others_are_written(tmp_path):
    """``run slides`` writes what it can, lists files it left out, then fails naming the unreadable ones."""
    from monai.transforms import Compose, Resized, ScaleIntensityRanged

    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(_image(80, 100)).save(slides / "good.png")
    (slides / "broken.tif").write_bytes(b"II*\x00not a tiff at all")
    (slides / "notes.txt").write_text("not an image")
    preprocessing = Compose([Resized("image", (32, 32)), ScaleIntensityRanged("image", 0, 255, 0, 1)])
    with pytest.raises(SlideFailures, match=r"1 of 2 inputs failed[\s\S]*broken.tif"):
        segment_slides(slides, TinySegmenter(), preprocessing, tmp_path / "out", ["background", "lesion"], 32, torch.device("cpu"), overlap=0.25)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["good_mask.tif", "good_outlines.geojson", "good_overlay.png", "slides.json"]
    summary = json.loads((tmp_path / "out" / "slides.json").read_text())
    assert summary[0]["size"] == [100, 80] and summary[0]["windows"] == 12  # 4 x 3 windows of 32 at a step of 24


class TinyClassifier(torch.nn.Module):
    """Scores a window by its mean darkness: dark tissue is class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        darkness = 1 - x.mean(dim=(1, 2, 3))
        return torch.stack([-4 * darkness, 4 * darkness], dim=1)


@pytest.mark.parametrize("rule", ["mean", "max"])
def test_slide_classification_scores_tissue_windows_and_the_slide_by_its_rule(tmp_path, rule):
    import csv

    from monai.transforms import Compose, Resized, ScaleIntensityRanged

    from s4mi_monai.wsi import classify_slides

    image = np.full((100, 150, 3), 245, np.uint8)  # glass, with tissue in the left windows only
    image[:, :60] = (90, 40, 60)
    image[:50, 100:] = (200, 150, 170)
    Image.fromarray(image).save(tmp_path / "slide.png")
    preprocessing = Compose([Resized("image", (16, 16)), ScaleIntensityRanged("image", 0, 255, 0, 1)])
    rows = classify_slides(tmp_path / "slide.png", TinyClassifier(), preprocessing, tmp_path / "out", ["benign", "malignant"], 16,
                           torch.device("cpu"), window=50, rule=rule, batch_size=3)  # fmt: skip
    tiles = list(csv.DictReader((tmp_path / "out" / "slide_tiles.csv").open()))
    # windows at x 50 hold 20 % tissue (under min_tissue 0.25), the one at (100, 50) only glass
    assert [(t["left"], t["top"], t["tissue"]) for t in tiles] == [("0", "0", "1.0"), ("100", "0", "1.0"), ("0", "50", "1.0")]
    malignant = np.array([float(t["malignant"]) for t in tiles])
    expected = malignant.mean() if rule == "mean" else malignant.max()
    assert rows[0]["malignant"] == pytest.approx(expected) and rows[0]["tiles"] == 3
    assert rows[0]["prediction"] == ("malignant" if expected > 0.5 else "benign")
    slides = list(csv.DictReader((tmp_path / "out" / "slides.csv").open()))
    assert slides[0]["rule"] == rule and float(slides[0]["malignant"]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="slide rule must be one of"):
        classify_slides(tmp_path / "slide.png", TinyClassifier(), preprocessing, tmp_path / "out", ["a", "b"], 16, torch.device("cpu"), rule="vote")


@pytest.mark.parametrize("bundle", ["supervised_seg_isic", "crossteach_seg_dermatomyositis", "supervised_cls_isic"])
def test_the_bundle_slides_run_writes_its_outputs(tmp_path, monkeypatch, bundle):
    """``run slides`` of a bundle's inference.json, with untrained weights saved where it reads them."""
    from monai.bundle import ConfigParser, ConfigWorkflow

    root = Path(__file__).resolve().parents[1] / "bundles" / bundle
    monkeypatch.chdir(root.parents[1])
    model = tmp_path / "model" / "model.pt"
    model.parent.mkdir()
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["model_path"] = str(model)
    branches = ("cnn", "transformer") if "crossteach" in bundle else ("",)
    for branch in branches:
        network = parser.get_parsed_content("transformer_network" if branch == "transformer" else "network_def")
        (model.parent / branch).mkdir(exist_ok=True)
        torch.save(network.state_dict(), model.parent / branch / "model.pt")
    slides = tmp_path / "slides"
    slides.mkdir()
    Image.fromarray(_image(150, 170)).save(slides / "small.png")
    workflow = ConfigWorkflow(
        config_file=str(root / "configs" / "inference.json"), workflow_type=None, run_id="slides",
        input_dir=str(slides), output_dir=str(tmp_path / "out"), model_path=str(model), slide_window=64,
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    if "cls" in bundle:
        assert written == ["slides.csv", "small_tiles.csv"]
    else:
        assert written == ["slides.json", "small_mask.tif", "small_outlines.geojson", "small_overlay.png"]
        assert tifffile.imread(tmp_path / "out" / "small_mask.tif").shape == (150, 170)
