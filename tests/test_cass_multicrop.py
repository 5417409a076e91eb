"""CASS loss on hand-computed vectors; multi-crop geometry, statistics and the randomness contract (seeding, workers, batches)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from s4mi_monai.losses.cass import cass_loss, cass_predictor_loss
from s4mi_monai.transforms import multicrop
from s4mi_monai.transforms.multicrop import MultiCropBatch, MultiCropd, RandResizedCrop, resized_crop, sample_crop_boxes

HEIGHT, WIDTH = 48, 40
TINY_DINO = {"preset": "dino", "global_size": 32, "local_size": 16, "n_local": 3}
TINY_PRESETS = {
    "dino": (TINY_DINO, {"global_0": 32, "global_1": 32, "local_0": 16, "local_1": 16, "local_2": 16}),
    "lucidrains": ({"preset": "lucidrains", "global_size": 32}, {"global_0": 32, "global_1": 32, "local_0": 32, "local_1": 32}),
    "cass": ({"preset": "cass", "global_size": 32}, {"view_0": 32}),
}


def random_image(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8))


def coordinate_images(n_images: int) -> torch.Tensor:
    """(n, 2, H, W) images whose channel 0 holds each pixel's column and channel 1 its row."""
    rows, columns = torch.meshgrid(torch.arange(HEIGHT, dtype=torch.float64), torch.arange(WIDTH, dtype=torch.float64), indexing="ij")
    return torch.stack((columns, rows)).expand(n_images, 2, HEIGHT, WIDTH)


def box_edges(profile: np.ndarray, limit: int) -> tuple[float, float, bool]:
    """Edges (in pixel-edge coordinates) of the box that a bilinear crop sampled along a coordinate ``profile``, and whether it is mirrored.

    Output pixel j samples ``edge + (j + 0.5) * extent / S - 0.5``; samples clamped to the image border are left out of the fit.
    """
    columns = np.arange(len(profile))
    inside = (profile > 1e-6) & (profile < limit - 1 - 1e-6)
    slope, intercept = np.polyfit(columns[inside], profile[inside], 1)
    ends = intercept + slope * np.array([-0.5, len(profile) - 0.5]) + 0.5
    return float(ends.min()), float(ends.max()), bool(slope < 0)


# CASS loss


def test_cass_loss_is_two_minus_two_cosine():
    unit = torch.tensor([[1.0, 0.0]])
    assert cass_loss(unit, unit).item() == pytest.approx(0.0, abs=1e-6)
    assert cass_loss(unit, -unit).item() == pytest.approx(4.0)
    assert cass_loss(unit, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.0)
    sixty_degrees = torch.tensor([[0.5, math.sqrt(3) / 2]])
    assert cass_loss(unit, sixty_degrees).item() == pytest.approx(1.0)
    batch_cnn = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    batch_vit = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [0.0, 2.0]])
    assert cass_loss(batch_cnn, batch_vit).item() == pytest.approx((0 + 4 + 2) / 3), "the mean over the batch"


def test_cass_loss_trains_both_networks_and_ignores_scale():
    z_cnn = torch.randn(4, 8, requires_grad=True)
    z_vit = torch.randn(4, 8, requires_grad=True)
    loss = cass_loss(z_cnn, z_vit)
    loss.backward()
    assert z_cnn.grad is not None and z_cnn.grad.abs().sum() > 0
    assert z_vit.grad is not None and z_vit.grad.abs().sum() > 0
    with torch.no_grad():
        assert cass_loss(3.5 * z_cnn, z_vit).item() == pytest.approx(loss.item(), rel=1e-5)
        assert cass_loss(z_cnn, 0.01 * z_vit).item() == pytest.approx(loss.item(), rel=1e-5)
        assert cass_loss(z_vit, z_cnn).item() == pytest.approx(loss.item(), rel=1e-6), "symmetric"


def test_cass_loss_rejects_mismatched_outputs():
    with pytest.raises(ValueError, match="same shape"):
        cass_loss(torch.randn(4, 8), torch.randn(4, 7))


def test_cass_predictor_loss_predicts_the_other_branch_held_fixed():
    """½ [D(p_cnn, sg(z_vit)) + D(p_vit, sg(z_cnn))]: the targets pass no gradient, the predictions do."""
    generator = torch.Generator().manual_seed(0)
    z_cnn, z_vit, p_cnn, p_vit = (torch.randn(4, 8, generator=generator, requires_grad=True) for _ in range(4))
    loss = cass_predictor_loss(p_cnn, z_cnn, p_vit, z_vit)
    expected = 0.5 * (cass_loss(p_cnn, z_vit) + cass_loss(p_vit, z_cnn))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert z_cnn.grad is None and z_vit.grad is None, "targets are held fixed"
    assert p_cnn.grad.abs().sum() > 0 and p_vit.grad.abs().sum() > 0


# Random-resized crop


def test_sampled_boxes_fit_and_follow_scale_and_ratio():
    boxes = sample_crop_boxes(HEIGHT, WIDTH, 2000, (0.05, 0.4), (3 / 4, 4 / 3), np.random.RandomState(0))
    tops, lefts, heights, widths = boxes.T
    assert (tops >= 0).all() and (lefts >= 0).all() and (tops + heights <= HEIGHT).all() and (lefts + widths <= WIDTH).all()
    area_fractions = heights * widths / (HEIGHT * WIDTH)
    assert area_fractions.min() >= 0.05 - 0.01 and area_fractions.max() <= 0.4 + 0.01, "up to rounding of the sides"
    aspect_ratios = widths / heights
    assert aspect_ratios.min() >= 3 / 4 - 0.06 and aspect_ratios.max() <= 4 / 3 + 0.1


def test_boxes_fall_back_to_the_central_crop():
    """No 10 x 40 box of the whole area has an aspect ratio in [3/4, 4/3]: the central 10 x round(10 * 4/3) box is taken."""
    boxes = sample_crop_boxes(10, 40, 5, (1.0, 1.0), (3 / 4, 4 / 3), np.random.RandomState(0))
    assert boxes.tolist() == [[0, 13, 10, 13]] * 5


def test_resized_crop_samples_the_box_and_mirrors():
    images = coordinate_images(2)
    boxes = torch.tensor([[8, 4, 16, 16], [8, 4, 16, 16]])
    crops = resized_crop(images, boxes, 8, mode="bilinear", horizontal_flips=np.array([False, True]), antialias=False)
    expected_columns = 4.5 + 2 * torch.arange(8, dtype=torch.float64)
    expected_rows = 8.5 + 2 * torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(crops[0, 0], expected_columns.expand(8, 8))
    torch.testing.assert_close(crops[0, 1], expected_rows[:, None].expand(8, 8))
    torch.testing.assert_close(crops[1, 0], expected_columns.flip(0).expand(8, 8))
    torch.testing.assert_close(crops[1, 1], crops[0, 1])


def test_antialiasing_averages_the_pixels_under_each_output_pixel():
    checkerboard = ((torch.arange(32)[:, None] + torch.arange(32)) % 2).float().expand(1, 1, 32, 32)
    whole_image = torch.tensor([[0, 0, 32, 32]])
    aliased = resized_crop(checkerboard, whole_image, 8, mode="nearest", antialias=False)
    smooth = resized_crop(checkerboard, whole_image, 8, mode="nearest", antialias=True)
    assert set(aliased.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(smooth, torch.full_like(smooth, 0.5))


@pytest.mark.parametrize("scale", [(0.05, 0.4), (0.4, 1.0)])
def test_crops_lie_in_the_image_with_their_area_in_scale(scale):
    """Recover each crop's box from a coordinate image: in bounds, area fraction in ``scale``, one box and flip per image."""
    n_images, size = 300, 16
    crop = RandResizedCrop(size, scale=scale, mode="bilinear", flip_prob=0.5, antialias=False)
    crop.set_random_state(0)
    crops = crop(coordinate_images(n_images)).numpy()
    fractions, flips, boxes = [], [], set()
    for columns, rows in zip(crops[:, 0, size // 2, :], crops[:, 1, :, size // 2]):
        left, right, flipped = box_edges(columns, WIDTH)
        top, bottom, _ = box_edges(rows, HEIGHT)
        assert left >= -1e-6 and right <= WIDTH + 1e-6 and top >= -1e-6 and bottom <= HEIGHT + 1e-6
        fractions.append((right - left) * (bottom - top) / (HEIGHT * WIDTH))
        flips.append(flipped)
        boxes.add((round(left), round(top), round(right), round(bottom)))
    low, high = scale
    assert min(fractions) >= low - 0.01 and max(fractions) <= high + 0.01
    assert min(fractions) < low + 0.1 * (high - low) and max(fractions) > high - 0.1 * (high - low), "the range is covered"
    assert 0.35 < np.mean(flips) < 0.65
    assert len(boxes) > n_images // 2


def test_random_resized_crop_keeps_integer_dtype_and_image_rank():
    crop = RandResizedCrop(12, flip_prob=0.5)
    assert crop(random_image()).shape == (3, 12, 12) and crop(random_image()).dtype == torch.uint8
    assert crop(random_image().expand(4, 3, HEIGHT, WIDTH)).shape == (4, 3, 12, 12)


# MultiCropd


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_multicrop_keys_and_shapes(preset):
    arguments, sizes = TINY_PRESETS[preset]
    views = MultiCropd(**arguments)({"image": random_image(), "label": 1})
    assert set(views) == {"label", *sizes}
    for name, size in sizes.items():
        assert views[name].shape == (3, size, size) and views[name].dtype == torch.float32
        assert 0.0 <= views[name].min() and views[name].max() <= 1.0
    assert "image" in MultiCropd(keep_original=True, **arguments)({"image": random_image()})


def test_multicrop_rejects_options_the_preset_does_not_have():
    with pytest.raises(ValueError, match="single view"):
        MultiCropd(preset="cass", n_local=2)
    with pytest.raises(ValueError, match="global_size"):
        MultiCropd(preset="lucidrains", local_size=16)
    with pytest.raises(ValueError, match="preset"):
        MultiCropd(preset="byol")


def test_views_are_independent_draws_even_under_a_global_seed(monkeypatch):
    """``set_determinism`` gives every ``Compose`` the same seed; the lucidrains global views (same pipeline) must still differ."""
    monkeypatch.setattr("monai.transforms.compose.get_seed", lambda: 0)
    monkeypatch.setattr(multicrop, "get_seed", lambda: 0)
    image = {"image": random_image()}
    lucidrains = MultiCropd(preset="lucidrains", global_size=32)(image)
    assert not torch.equal(lucidrains["global_0"], lucidrains["global_1"])
    assert not torch.equal(lucidrains["local_0"], lucidrains["local_1"])
    dino = MultiCropd(**TINY_DINO)(image)
    assert not torch.equal(dino["global_0"], dino["global_1"])


def test_set_random_state_reaches_every_view():
    image = {"image": random_image()}
    first, again, other = (MultiCropd(**TINY_DINO).set_random_state(seed) for seed in (7, 7, 8))
    views, repeated, different = first(image), again(image), other(image)
    assert all(torch.equal(views[name], repeated[name]) for name in views)
    assert all(not torch.equal(views[name], different[name]) for name in views)
    from_state = MultiCropd(**TINY_DINO).set_random_state(state=np.random.RandomState(7))
    assert torch.equal(from_state(image)["local_2"], MultiCropd(**TINY_DINO).set_random_state(7)(image)["local_2"])


def test_dataloader_workers_draw_different_crops():
    """MONAI's worker seeding (``set_rnd``) stops at MultiCropd, which must pass it on, or both workers repeat the same draws."""
    dataset = Dataset([{"image": random_image()} for _ in range(2)], transform=MultiCropd(**TINY_DINO))
    first_worker, second_worker = DataLoader(dataset, batch_size=1, num_workers=2)
    for name in TINY_PRESETS["dino"][1]:
        assert not torch.equal(first_worker[name], second_worker[name]), name


# MultiCropBatch


def test_batch_views_are_per_image_and_reproducible():
    images = random_image().expand(4, 3, HEIGHT, WIDTH)
    augment = MultiCropBatch(**TINY_DINO)
    views = augment(images, generator=torch.Generator().manual_seed(0))
    assert {name: tuple(crops.shape) for name, crops in views.items()} == {
        "global_0": (4, 3, 32, 32),
        "global_1": (4, 3, 32, 32),
        **{f"local_{i}": (4, 3, 16, 16) for i in range(3)},
    }
    assert all(type(crops) is torch.Tensor and crops.dtype == torch.float32 for crops in views.values())
    for crops in views.values():
        assert all(not torch.equal(crops[0], crops[i]) for i in range(1, 4)), "identical images, different draws"
    repeated = augment(images, generator=torch.Generator().manual_seed(0))
    different = augment(images, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(views[name], repeated[name]) for name in views)
    assert all(not torch.equal(views[name], different[name]) for name in views)


def test_batch_accepts_uint8_and_float_alike():
    images = torch.stack([random_image(seed) for seed in range(3)])
    augment = MultiCropBatch(preset="cass", global_size=24)
    from_uint8 = augment(images, generator=torch.Generator().manual_seed(3))
    from_float = augment(MetaTensor(images.float() / 255), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(from_uint8["view_0"], from_float["view_0"])
    with pytest.raises(ValueError, match="B, 3, H, W"):
        augment(images[0])
