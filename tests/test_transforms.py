"""Red-channel normalisation and slide tiling as MONAI transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s4mi_monai.transforms import BinarizeMaskd, RedChannelNormalize, RedChannelNormalized, TileSlide, TileSlided, tile_boxes


def test_red_channel_normalisation_formula():
    image = torch.tensor([[[3.0]], [[4.0]], [[0.0]]])  # R=3, G=4, B=0 -> R' = 3/5
    out = RedChannelNormalize()(image)
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.6, 4.0, 0.0]))
    scaled = RedChannelNormalize()(image * 255)
    assert torch.allclose(scaled[0], out[0]), "R' does not depend on the intensity scale"
    d = RedChannelNormalized(keys="image")({"image": image, "label": 1})
    assert torch.allclose(d["image"], out) and d["label"] == 1
    with pytest.raises(ValueError, match="channel-first RGB"):
        RedChannelNormalize()(torch.zeros(1, 4, 4))


def test_tiles_of_a_1408x1876_slide():
    boxes = tile_boxes(1408, 1876, 480)
    assert len(boxes) == 12 and boxes[0] == (0, 0, 480, 480) and boxes[-1] == (960, 1440, 1408, 1876)
    slide = torch.arange(1408 * 1876, dtype=torch.float32).reshape(1, 1408, 1876)
    tiles = TileSlide(480, output_size=None, pad_value=-1)(slide)
    assert tiles.shape == (12, 1, 480, 480)
    assert torch.equal(tiles[5, 0], slide[0, 480:960, 480:960])
    assert (tiles[-1, 0, 448:, :] == -1).all() and (tiles[-1, 0, :, 436:] == -1).all(), "blank padding at the edges"
    assert TileSlide(480, output_size=224)(slide).shape == (12, 1, 224, 224)


def test_tile_slided_keeps_mask_binary_and_boxes():
    rng = np.random.default_rng(0)
    data = {"image": torch.rand(3, 500, 700), "mask": torch.from_numpy(rng.integers(0, 2, (1, 500, 700)).astype(np.float32))}
    out = TileSlided(keys=["image", "mask"], tile_size=480, output_size=64, mode=["area", "nearest"])(data)
    assert out["image"].shape == (4, 3, 64, 64) and out["mask"].shape == (4, 1, 64, 64)
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
    assert out["image_tile_boxes"][1] == (0, 480, 480, 700)


def test_binarize_mask_accepts_0_255_and_0_1():
    for mask in (torch.tensor([[0.0, 255.0]]), torch.tensor([[0.0, 1.0]])):
        assert BinarizeMaskd(keys="label")({"label": mask})["label"].tolist() == [[0.0, 1.0]]
