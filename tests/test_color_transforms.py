"""Colour augmentation: the formulas on hand-computable images, then the randomness contract of the transforms."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from s4mi_monai.transforms.color import (
    RandColorJitter,
    RandColorJitterd,
    RandGaussianBlur,
    RandGaussianBlurd,
    RandGrayscale,
    RandGrayscaled,
    RandSolarize,
    RandSolarized,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    hsv_to_rgb,
    rgb_to_grayscale,
    rgb_to_hsv,
    solarize,
)


def constant_image(r: float, g: float, b: float, size: int = 4) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(3, 1, 1).expand(3, size, size).clone()


def pixel(image: torch.Tensor) -> list[float]:
    return image[..., 0, 0].tolist()


def test_grayscale_is_itu_601_luma():
    image = constant_image(0.2, 0.4, 0.6)
    assert pixel(rgb_to_grayscale(image)) == pytest.approx([0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6])
    grey = RandGrayscale(prob=1.0)(image)
    assert grey.shape == (3, 4, 4) and pixel(grey) == pytest.approx([0.363] * 3)


def test_brightness_contrast_saturation_on_constant_images():
    image = constant_image(0.2, 0.4, 0.6)
    assert pixel(adjust_brightness(image, 1.5)) == pytest.approx([0.3, 0.6, 0.9])
    assert pixel(adjust_brightness(image, 2.0)) == pytest.approx([0.4, 0.8, 1.0]), "clamped to 1"
    # the mean grey of a constant image is its luma 0.363: 0.5 x + 0.5 * 0.363
    assert pixel(adjust_contrast(image, 0.5)) == pytest.approx([0.2815, 0.3815, 0.4815])
    assert pixel(adjust_contrast(image, 0.0)) == pytest.approx([0.363] * 3)
    assert pixel(adjust_saturation(image, 0.0)) == pytest.approx([0.363] * 3)
    assert pixel(adjust_saturation(image, 3.0)) == pytest.approx([0.0, 0.474, 1.0]), "3 x - 2 grey, clamped to [0, 1]"


def test_contrast_blends_with_the_mean_grey_of_the_whole_image():
    image = torch.zeros(3, 2, 2)
    image[:, 0, 0] = 1.0  # one white pixel: mean grey 0.25
    assert adjust_contrast(image, 0.5)[0].flatten().tolist() == pytest.approx([0.625, 0.125, 0.125, 0.125])


def test_hue_shift_of_red_by_a_third_turn_gives_green():
    red = constant_image(1.0, 0.0, 0.0)
    assert pixel(adjust_hue(red, 1 / 3)) == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)
    assert pixel(adjust_hue(red, -1 / 3)) == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)
    grey = constant_image(0.3, 0.3, 0.3)
    assert torch.allclose(adjust_hue(grey, 0.25), grey), "grey has no hue to rotate"


def test_hsv_matches_colorsys_and_round_trips():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.5])
    images[0, :, 0, 1] = 0.0
    hsv = rgb_to_hsv(images)
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.tensor([colorsys.rgb_to_hsv(*rgb) for rgb in pixels.tolist()])
    assert torch.allclose(hsv.permute(0, 2, 3, 1).reshape(-1, 3), expected, atol=1e-5)
    assert torch.allclose(hsv_to_rgb(hsv), images, atol=1e-5)


def test_blur_keeps_a_constant_image_and_smooths_noise():
    image = constant_image(0.2, 0.4, 0.6, size=9)
    assert torch.allclose(gaussian_blur(image, 2.0), image, atol=1e-6)
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(noise, 1.0)
    assert blurred.var() < 0.3 * noise.var()
    assert torch.allclose(blurred.mean(), noise.mean(), atol=0.01)
    assert gaussian_blur(torch.rand(3, 2, 40), 5.0).shape == (3, 2, 40), "kernel capped by the image size"
    with pytest.raises(ValueError, match="sigma > 0"):
        gaussian_blur(noise, 0.0)


def test_blur_of_a_batch_uses_each_image_sigma():
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = gaussian_blur(noise.expand(2, 3, 32, 32), torch.tensor([0.3, 2.0]))
    assert torch.allclose(batch[0], gaussian_blur(noise, 0.3), atol=1e-6)
    assert torch.allclose(batch[1], gaussian_blur(noise, 2.0), atol=1e-6)


def test_solarize_inverts_at_and_above_the_threshold():
    image = torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1)
    assert solarize(image, 0.5).flatten().tolist() == pytest.approx([0.2, 0.5, 0.2])
    assert RandSolarize(threshold=0.7, prob=1.0)(image).flatten().tolist() == pytest.approx([0.2, 0.5, 0.2])


@pytest.mark.parametrize(
    "transform", [RandColorJitter(prob=0.0), RandGrayscale(prob=0.0), RandGaussianBlur(prob=0.0), RandSolarize(prob=0.0)], ids=type
)
def test_prob_zero_is_identity(transform):
    image = torch.rand(3, 8, 8)
    assert torch.equal(transform(image), image)
    batch = torch.rand(4, 3, 8, 8)
    assert torch.equal(transform(batch), batch)


@pytest.mark.parametrize("make", [RandColorJitter, RandGaussianBlur], ids=lambda make: make.__name__)
def test_same_seed_same_output_other_seed_other_output(make):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = make(prob=1.0).set_random_state(7)(image)
    assert torch.equal(make(prob=1.0).set_random_state(7)(image), first)
    assert not torch.allclose(make(prob=1.0).set_random_state(8)(image), first)


def test_batch_draws_parameters_and_coin_flips_per_image():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = image.expand(6, 3, 16, 16)
    out = RandColorJitter(prob=1.0).set_random_state(3)(batch)
    assert all(not torch.allclose(out[i], out[j]) for i in range(6) for j in range(i))
    flips = RandGrayscale(prob=0.5).set_random_state(0)(torch.rand(64, 3, 4, 4))
    n_grey = sum(bool((flips[i, 0] == flips[i, 1]).all()) for i in range(64))
    assert 16 < n_grey < 48, "each image flips its own coin"


def test_jitter_applies_all_four_operations_in_random_order():
    jitter = RandColorJitter(prob=1.0).set_random_state(0)
    jitter.randomize(torch.zeros(200, 3, 1, 1))
    assert len({tuple(order) for order in jitter._orders}) == 24
    brightness, contrast, saturation, hue = jitter._factors.T
    assert 0.6 <= brightness.min() and brightness.max() <= 1.4 and 0.8 <= saturation.min() and saturation.max() <= 1.2
    assert 0.6 <= contrast.min() and -0.1 <= hue.min() and hue.max() <= 0.1 and hue.min() < 0 < hue.max()


def test_jitter_without_operations_and_with_bad_arguments():
    image = torch.rand(3, 8, 8)
    assert torch.equal(RandColorJitter(0, 0, 0, 0, prob=1.0)(image), image)
    with pytest.raises(ValueError, match="hue"):
        RandColorJitter(hue=0.6)
    with pytest.raises(ValueError, match="brightness"):
        RandColorJitter(brightness=-0.1)


@pytest.mark.parametrize(
    "transform", [RandColorJitter(prob=1.0), RandGrayscale(prob=1.0), RandGaussianBlur(prob=1.0), RandSolarize(prob=1.0)], ids=type
)
def test_metatensor_stays_metatensor_in_unit_range(transform):
    image = MetaTensor(torch.rand(3, 8, 8), meta={"filename_or_obj": "lesion.png"})
    out = transform(image)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "lesion.png"
    assert out.shape == (3, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_rejects_non_rgb_and_integer_images():
    with pytest.raises(ValueError, match="RGB"):
        RandGrayscale(prob=1.0)(torch.rand(1, 8, 8))
    with pytest.raises(TypeError, match="float"):
        RandGrayscale(prob=1.0)(torch.zeros(3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandColorJitterd(["image", "view"], prob=1.0),
        lambda: RandGrayscaled(["image", "view"], prob=0.5),
        lambda: RandGaussianBlurd(["image", "view"], prob=1.0),
        lambda: RandSolarized(["image", "view"], prob=0.5),
    ],
)
def test_dictionary_versions_share_one_draw_across_keys_and_are_seeded(make):
    image = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    data = {"image": image, "view": image.clone(), "label": 1}
    out = make().set_random_state(5)(data)
    assert torch.equal(out["image"], out["view"]) and out["label"] == 1
    assert torch.equal(make().set_random_state(5)(data)["image"], out["image"])


def test_compose_seeding_reaches_the_dictionary_transform():
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs = [Compose([RandColorJitterd("image", prob=1.0)]).set_random_state(seed)({"image": image})["image"] for seed in (0, 0, 1)]
    assert torch.equal(outputs[0], outputs[1]) and not torch.allclose(outputs[0], outputs[2])


def test_numpy_input_gives_a_tensor():
    out = RandSolarize(prob=1.0)(np.full((3, 2, 2), 0.75, dtype=np.float32))
    assert isinstance(out, torch.Tensor) and out.flatten().tolist() == pytest.approx([0.25] * 12)
