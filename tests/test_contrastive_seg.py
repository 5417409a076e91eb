"""Semi-supervised contrastive segmentation: the losses against direct computations, the networks' modes and stage
weights, the augmentations, and the two pretraining trainers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.transforms import Compose
from torch import nn
from torch.utils.data import DataLoader

from s4mi_monai.engines import GlobalContrastiveTrainer, LocalContrastiveTrainer
from s4mi_monai.losses import SupervisedPixelContrastiveLoss, nt_xent_loss, split_into_blocks, stride_sample
from s4mi_monai.networks import (
    ContrastiveUNet,
    GlobalProjectionHead,
    LocalProjectionHead,
    SSL4MISUNet,
    build_contrastive_network,
    load_pretrained,
)
from s4mi_monai.transforms import contrastive_finetune_transforms, global_contrastive_transforms, local_contrastive_transforms

# ---------------------------------------------------------------------------------------------
# losses


def test_nt_xent_equals_the_hand_computation():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    temperature = 0.5
    z = [vector / vector.norm() for vector in torch.cat((z1, z2)).double()]
    terms = []
    for i in range(6):
        partner = (i + 3) % 6
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(6) if k != i)
        terms.append(-math.log(math.exp(float(z[i] @ z[partner]) / temperature) / denominator))
    assert float(nt_xent_loss(z1, z2, temperature)) == pytest.approx(sum(terms) / 6, rel=1e-5)


def _features(generator: torch.Generator, shape=(2, 4, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    return F.normalize(torch.randn(*shape, generator=generator), dim=1), F.normalize(torch.randn(*shape, generator=generator), dim=1)


def _labels() -> torch.Tensor:
    """(2, 1, 8, 8) labels in {0, 1, 2}; the top-left 4x4 block is background in both images."""
    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    labels[..., :4, :4] = 0
    return labels


def _direct_pixel_loss(f1, f2, labels, temperature, sampling, stride, block_size, anchor_background, supervised):
    """The module docstring's formula, anchor by anchor in float64, over explicitly listed pixel sets."""
    height, width = labels.shape[-2:]
    if sampling == "stride":
        pixel_sets = [[(y, x) for y in range(0, height, stride) for x in range(0, width, stride)]]
    else:
        pixel_sets = [
            [(y, x) for y in range(top, top + block_size) for x in range(left, left + block_size)]
            for top in range(0, height, block_size)
            for left in range(0, width, block_size)
        ]
    set_losses = []
    for coordinates in pixel_sets:
        pixels = [(view, b, y, x) for view in (0, 1) for b in range(labels.shape[0]) for (y, x) in coordinates]
        features = torch.stack([(f1, f2)[view][b, :, y, x] for view, b, y, x in pixels]).double()
        pixel_labels = [int(labels[b, 0, y, x]) for _, b, y, x in pixels]
        if supervised and not any(pixel_labels):
            continue
        anchor_losses = []
        for i, (_, b, y, x) in enumerate(pixels):
            if supervised and pixel_labels[i] == 0 and not anchor_background:
                continue
            similarities = features @ features[i] / temperature
            log_denominator = torch.log(sum(torch.exp(similarities[a]) for a in range(len(pixels)) if a != i))
            positives = [
                p
                for p, (_, b_p, y_p, x_p) in enumerate(pixels)
                if p != i and (pixel_labels[p] == pixel_labels[i] if supervised else (b_p, y_p, x_p) == (b, y, x))
            ]
            anchor_losses.append(-sum(similarities[p] - log_denominator for p in positives) / len(positives))
        set_losses.append(torch.stack(anchor_losses).mean())
    return torch.stack(set_losses).mean() if set_losses else None


@pytest.mark.parametrize("sampling", ["stride", "block"])
@pytest.mark.parametrize(("supervised", "anchor_background"), [(True, False), (True, True), (False, False)])
def test_pixel_loss_equals_the_direct_computation(sampling: str, supervised: bool, anchor_background: bool):
    f1, f2 = _features(torch.Generator().manual_seed(0))
    labels = _labels()
    options = {"temperature": 0.2, "sampling": sampling, "stride": 2, "block_size": 4, "anchor_background": anchor_background}
    loss = SupervisedPixelContrastiveLoss(supervised=supervised, chunk_size=7, **options)(f1, f2, labels)
    expected = _direct_pixel_loss(f1, f2, labels, supervised=supervised, **{**options, "temperature": 0.2})
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_background_anchors_and_the_unsupervised_variant_change_the_loss():
    f1, f2 = _features(torch.Generator().manual_seed(0))
    losses = [
        float(SupervisedPixelContrastiveLoss(stride=2, **options)(f1, f2, _labels()))
        for options in ({}, {"anchor_background": True}, {"supervised": False})
    ]
    assert len(set(losses)) == 3


@pytest.mark.parametrize("sampling", ["stride", "block"])
def test_chunked_loss_and_gradients_equal_the_unchunked_ones(sampling: str):
    generator = torch.Generator().manual_seed(2)
    raw1, raw2 = (torch.randn(2, 4, 8, 8, generator=generator, requires_grad=True) for _ in range(2))
    results = []
    for chunk_size in (5, 10_000):
        loss_function = SupervisedPixelContrastiveLoss(
            sampling=sampling, stride=2, block_size=4, anchor_background=True, chunk_size=chunk_size
        )
        loss = loss_function(F.normalize(raw1, dim=1), F.normalize(raw2, dim=1), _labels())
        results.append((loss, *torch.autograd.grad(loss, (raw1, raw2))))
    for chunked, whole in zip(*results):
        torch.testing.assert_close(chunked, whole)


def test_batches_and_blocks_without_foreground_are_skipped():
    f1, f2 = _features(torch.Generator().manual_seed(0))
    background = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    for sampling in ("stride", "block"):
        assert SupervisedPixelContrastiveLoss(sampling=sampling, stride=2, block_size=4)(f1, f2, background) is None
    off_the_grid = background.clone()
    off_the_grid[:, :, 1::2, 1::2] = 1  # foreground only where stride 2 does not sample
    assert SupervisedPixelContrastiveLoss(stride=2, anchor_background=True)(f1, f2, off_the_grid) is None
    one_block = background.clone()
    one_block[0, 0, 5, 6] = 2  # the bottom-right block only: the loss is that block's alone
    whole = SupervisedPixelContrastiveLoss(sampling="block", block_size=4)(f1, f2, one_block)
    alone = SupervisedPixelContrastiveLoss(sampling="block", block_size=4)(f1[..., 4:, 4:], f2[..., 4:, 4:], one_block[..., 4:, 4:])
    torch.testing.assert_close(whole, alone)
    assert SupervisedPixelContrastiveLoss(stride=2, supervised=False)(f1, f2, background) is not None


def test_stride_sampling_and_blocks_hold_the_pixels_they_claim():
    rows, columns = torch.meshgrid(torch.arange(8), torch.arange(12), indexing="ij")
    positions = (100 * rows + columns).expand(2, 3, 8, 12)
    sampled = stride_sample(positions, 4)
    assert sampled.shape == (2, 3, 2, 3)
    assert sampled[0, 0].tolist() == [[0, 4, 8], [400, 404, 408]]
    blocks = split_into_blocks(positions, 4)
    assert blocks.shape == (6, 2, 3, 4, 4)
    for index in range(6):
        top, left = 4 * (index // 3), 4 * (index % 3)
        assert torch.equal(blocks[index], positions[..., top : top + 4, left : left + 4])
    with pytest.raises(ValueError, match="multiples of block_size"):
        split_into_blocks(positions, 5)


def test_losses_stay_fp32_under_bf16_autocast():
    f1, f2 = _features(torch.Generator().manual_seed(3))
    loss_function = SupervisedPixelContrastiveLoss(stride=2)
    plain = loss_function(f1, f2, _labels())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = loss_function(f1, f2, _labels())
        global_loss = nt_xent_loss(f1[:, :, 0, 0], f2[:, :, 0, 0])
    assert autocast.dtype == global_loss.dtype == torch.float32
    torch.testing.assert_close(autocast, plain)
    torch.testing.assert_close(global_loss, nt_xent_loss(f1[:, :, 0, 0], f2[:, :, 0, 0]))
    halved = loss_function(f1.bfloat16(), f2.bfloat16(), _labels())
    torch.testing.assert_close(halved, loss_function(f1.bfloat16().float(), f2.bfloat16().float(), _labels()))


# ---------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize(("name", "global_shape"), [("contrastive_unet", (2, 32, 4, 6)), ("ssl4mis_unet", (2, 64, 2, 3))])
def test_three_modes_and_heads_give_their_shapes(name: str, global_shape: tuple[int, ...]):
    network = build_contrastive_network(name, in_channels=3, out_channels=3, features=4).eval()
    images = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        global_features = network.encode_global(images)
        pixel_features = network.pixel_features(images)
        logits = network(images)
        projections = GlobalProjectionHead(network.global_channels, out_channels=16)(global_features)
        pixel_projections = LocalProjectionHead(network.pixel_channels, hidden_channels=12, out_channels=8)(pixel_features)
    assert global_features.shape == global_shape
    assert pixel_features.shape == (2, 4, 32, 48) and logits.shape == (2, 3, 32, 48)
    assert projections.shape == (2, 16) and pixel_projections.shape == (2, 8, 32, 48)
    torch.testing.assert_close(projections.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(pixel_projections.norm(dim=1), torch.ones(2, 32, 48))


def test_contrastive_unet_refuses_sides_that_are_not_multiples_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        ContrastiveUNet(features=4)(torch.rand(1, 3, 32, 40))


@pytest.mark.parametrize(
    ("name", "global_prefixes", "head_prefix"),
    [("contrastive_unet", ("encoder.", "centre."), "segmentation_head."), ("ssl4mis_unet", ("encoder.",), "out_conv.")],
)
def test_stage_weights_transfer_by_name_without_the_heads(name: str, global_prefixes: tuple[str, ...], head_prefix: str, tmp_path):
    torch.manual_seed(0)
    stage1, stage2 = build_contrastive_network(name, features=4), build_contrastive_network(name, features=4)
    stage3 = build_contrastive_network(name, out_channels=5, features=4)
    result = stage2.load_state_dict(stage1.encoder_state_dict(), strict=False)
    assert not result.unexpected_keys
    # BatchNorm's batch counter is never reported missing
    expected_missing = {
        key for key in stage2.state_dict() if not key.startswith(global_prefixes) and not key.endswith("num_batches_tracked")
    }
    assert set(result.missing_keys) == expected_missing
    for key, tensor in stage2.named_parameters():
        if tensor.ndim > 1:  # convolution and linear weights, the randomly initialised ones
            assert torch.equal(tensor, stage1.state_dict()[key]) == key.startswith(global_prefixes), key

    result = stage3.load_state_dict(stage2.feature_state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(key.startswith(head_prefix) for key in result.missing_keys)
    assert all(torch.equal(tensor, stage3.state_dict()[key]) for key, tensor in stage2.feature_state_dict().items())

    torch.save(stage1.encoder_state_dict(), tmp_path / "stage1.pt")  # a saved checkpoint loads the same way
    report = load_pretrained(build_contrastive_network(name, features=4), tmp_path / "stage1.pt")
    assert sorted(report.loaded) == sorted(stage1.encoder_state_dict())
    if name == "ssl4mis_unet":  # stage 3 may train the plain cross-teaching network
        plain = SSL4MISUNet(out_channels=5, channels=(4, 8, 16, 32, 64))
        assert all(key.startswith(head_prefix) for key in plain.load_state_dict(stage2.feature_state_dict(), strict=False).missing_keys)


# ---------------------------------------------------------------------------------------------
# augmentations


def _seeded(transforms: list, seed: int) -> Compose:
    pipeline = Compose(transforms)
    pipeline.set_random_state(seed)
    return pipeline


def test_global_views_are_two_seeded_spatial_draws():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    first = _seeded(global_contrastive_transforms(prob=1.0), seed=4)({"image": image})
    again = _seeded(global_contrastive_transforms(prob=1.0), seed=4)({"image": image})
    assert torch.equal(first["view_1"], again["view_1"]) and torch.equal(first["view_2"], again["view_2"])
    assert first["view_1"].shape == first["view_2"].shape == image.shape
    assert not torch.allclose(first["view_1"], first["view_2"])
    order = image.flatten().argsort()  # a spatial transform breaks the intensity order of the pixels
    assert (first["view_1"].flatten()[order].diff() < 0).any()


def test_local_views_change_intensities_but_keep_every_pixel_in_place():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    label = (image[:1] > 0.5).float()
    item = _seeded(local_contrastive_transforms(noise_std=0.0, prob=1.0), seed=0)({"image": image, "label": label})
    assert torch.equal(item["label"], label)
    order = image.flatten().argsort()
    for key in ("view_1", "view_2"):
        view = item[key].as_tensor()
        assert not torch.allclose(view, image)
        assert (view.flatten()[order].diff() >= 0).all(), "brightness and gamma are monotone: the pixel order stays"
    assert not torch.allclose(item["view_1"], item["view_2"])


def test_finetune_transforms_move_image_and_mask_together():
    mask = torch.zeros(1, 32, 32)
    mask[:, 6:20, 10:28] = 1
    image = mask.expand(3, -1, -1).clone()

    def disagreement(item: dict) -> float:
        return float(((item["image"][0] > 0.5) != (item["label"][0] > 0.5)).float().mean())

    for seed in range(3):  # one resampling: thresholded bilinear image and nearest mask coincide but for ties
        zoom_and_flip = contrastive_finetune_transforms(rotation=0.0, prob=1.0, elastic_prob=0.0)
        flipped_and_zoomed = _seeded(zoom_and_flip, seed)({"image": image, "label": mask})
        assert not torch.equal(flipped_and_zoomed["label"].as_tensor(), mask)
        assert disagreement(flipped_and_zoomed) < 0.005, "bilinear image and nearest mask must stay on one pixel grid"
    item = _seeded(contrastive_finetune_transforms(prob=1.0), seed=1)({"image": image, "label": mask})
    assert set(item["label"].unique().tolist()) <= {0.0, 1.0}
    assert disagreement(item) < 0.05  # three resamplings differ only along the boundary


# ---------------------------------------------------------------------------------------------
# trainers


def _batches(seed: int, labels: bool = True, foreground: bool = True) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(4):
        image = torch.rand(3, 32, 32, generator=generator)
        label = (image[:1] > 0.6).float() if foreground else torch.zeros(1, 32, 32)
        items.append({"image": image, **({"label": label} if labels else {})})
    transforms = global_contrastive_transforms() if not labels else local_contrastive_transforms()
    pipeline = _seeded(transforms, seed)
    return [pipeline(item) for item in items]


def _trainer(stage: int, seed: int = 0, **batch_options):
    torch.manual_seed(seed)
    network = ContrastiveUNet(features=4)
    if stage == 1:
        head = GlobalProjectionHead(network.global_channels, out_channels=8)
    else:
        head = LocalProjectionHead(network.pixel_channels, hidden_channels=8, out_channels=8)
    trainer_class = GlobalContrastiveTrainer if stage == 1 else LocalContrastiveTrainer
    loader = DataLoader(_batches(seed, labels=stage == 2, **batch_options), batch_size=2)
    optimizer = torch.optim.Adam([*network.parameters(), *head.parameters()], lr=1e-3)
    trainer = trainer_class("cpu", 1, loader, network, optimizer, projection_head=head, channels_last=True)
    return trainer, network, head


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


@pytest.mark.parametrize("stage", [1, 2])
def test_a_training_step_moves_the_projection_head_and_the_network(stage: int):
    trainer, network, head = _trainer(stage)
    head_before, network_before = _snapshot(head), _snapshot(network)
    trainer.run()
    assert math.isfinite(float(trainer.state.output["loss"]))
    assert all(not torch.equal(tensor, head_before[name]) for name, tensor in head.state_dict().items())
    assert not torch.equal(network.encoder[0][0].conv.weight, network_before["encoder.0.0.conv.weight"])
    if stage == 2:
        assert float(trainer.state.output["skipped"]) == 0.0


def test_an_optimizer_without_the_head_is_refused():
    network = ContrastiveUNet(features=4)
    head = GlobalProjectionHead(network.global_channels, out_channels=8)
    with pytest.raises(ValueError, match="projection head"):
        GlobalContrastiveTrainer("cpu", 1, [], network, torch.optim.Adam(network.parameters()), projection_head=head)


def test_a_batch_without_foreground_takes_no_optimizer_step():
    trainer, network, head = _trainer(2, foreground=False)
    before = {**_snapshot(network), **{f"head.{name}": tensor for name, tensor in _snapshot(head).items()}}
    trainer.run()
    assert float(trainer.state.output["skipped"]) == 1.0 and float(trainer.state.output["loss"]) == 0.0
    after = {**network.state_dict(), **{f"head.{name}": tensor for name, tensor in head.state_dict().items()}}
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
    assert not trainer.optimizer.state, "Adam never stepped"


@pytest.mark.parametrize("stage", [1, 2])
def test_the_same_seed_gives_the_same_losses(stage: int):
    def losses(seed: int) -> list[float]:
        trainer, _, _ = _trainer(stage, seed)
        recorded: list[float] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: recorded.append(float(engine.state.output["loss"])))
        trainer.run()
        return recorded

    first = losses(0)
    assert len(first) == 2 and first == losses(0)
    assert first != losses(1)
