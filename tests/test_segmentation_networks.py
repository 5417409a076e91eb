"""Tests of the cross-teaching segmentation networks: SwinUNet (and the SwinUNETR builder), SSL4MISUNet, and the
builder of any segmentation network by name (the supervised baseline's ``--architecture``).

Most SwinUNet tests use a narrow configuration (embed_dim 12) to stay fast on CPU; one forward pass runs
the default Swin-T configuration at 224 x 224. No ImageNet Swin checkpoint can be downloaded, so an
official-layout file is written here from a freshly built network with an inverse mapping written
independently of the one under test.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from s4mi_monai.networks import (
    ResNetUNet,
    SSL4MISUNet,
    SwinUNet,
    build_segmentation_network,
    build_segmentation_transformer,
    check_segmentation_architecture,
    swin_official_to_swin_unet,
)

SMALL = {"embed_dim": 12, "num_heads": (1, 2, 3, 6)}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Small tensors gain nothing from threads; on a busy 2-core machine two threads ran ~50x slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _small_swin(**overrides) -> SwinUNet:
    return SwinUNet(**{**SMALL, **overrides})


# ----------------------------------------------------------------------------------------------- SwinUNet


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (96, 128), (32, 32)])
def test_swin_unet_returns_logits_at_input_size(size):
    network = _small_swin(out_channels=3).eval()
    with torch.no_grad():
        logits = network(torch.randn(1, 3, *size))
    assert logits.shape == (1, 3, *size)
    assert torch.isfinite(logits).all()


def test_swin_unet_default_config_at_224():
    network = SwinUNet().eval()
    # The reference SwinTransformerSys (Swin-T, num_classes=2) has the same 27,168,228 parameters.
    assert _parameter_count(network) == 27_168_228
    with torch.no_grad():
        logits = network(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 2, 224, 224)


@pytest.mark.parametrize("size", [(100, 96), (225, 224), (64, 48)])
def test_swin_unet_rejects_sides_not_multiple_of_32(size):
    network = _small_swin()
    with pytest.raises(ValueError, match="multiples of 32") as error:
        network(torch.randn(1, 3, *size))
    assert f"got {size[0]}x{size[1]}" in str(error.value)
    assert "224" in str(error.value)


def test_swin_unet_rejects_wrong_channel_count():
    network = _small_swin(in_channels=3)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        network(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="expects images"):
        network(torch.randn(3, 64, 64))


def test_swin_unet_gradients_reach_patch_embedding_and_output():
    network = _small_swin()
    network(torch.randn(2, 3, 64, 64)).logsumexp(dim=1).mean().backward()
    for parameter in (network.patch_embed.proj.weight, network.output.weight, network.layers[0].blocks[0].attn.qkv.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_swin_unet_stage_shapes_follow_the_reference():
    network = _small_swin().eval()
    channels, height, width = SMALL["embed_dim"], 64, 96
    images = torch.randn(2, 3, height, width)
    with torch.no_grad():
        bottleneck, skips = network.encode(images)
    assert bottleneck.shape == (2, 8 * channels, height // 32, width // 32)
    expected_skips = [(channels * 2**k, height // (4 * 2**k), width // (4 * 2**k)) for k in range(4)]
    assert [tuple(skip.shape[1:]) for skip in skips] == expected_skips

    outputs = {}
    hooks = [layer.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out)) for k, layer in enumerate(network.layers_up)]
    hooks.append(network.up.register_forward_hook(lambda _m, _i, out: outputs.__setitem__("x4", out)))
    with torch.no_grad():
        network(images)
    for hook in hooks:
        hook.remove()
    # Decoder stage 0 (PatchExpand) works channels-last; the Swin stages return channels-first maps.
    assert outputs[0].shape == (2, height // 16, width // 16, 4 * channels)
    assert outputs[1].shape == (2, 2 * channels, height // 8, width // 8)
    assert outputs[2].shape == (2, channels, height // 4, width // 4)
    assert outputs[3].shape == (2, channels, height // 4, width // 4)
    assert outputs["x4"].shape == (2, height, width, channels)
    assert network.layers_up[3].downsample is None


def test_swin_unet_drop_path_rates_mirror_the_encoder():
    depths = (2, 2, 2, 2)
    network = _small_swin(depths=depths, drop_path_rate=0.3)

    def rates(layer: nn.Module) -> list[float]:
        return [float(getattr(block.drop_path, "drop_prob", 0.0)) for block in layer.blocks]

    encoder_rates = [rate for layer in network.layers for rate in rates(layer)]
    assert encoder_rates == pytest.approx(torch.linspace(0, 0.3, sum(depths)).tolist())
    for stage in range(1, 4):
        assert rates(network.layers_up[stage]) == pytest.approx(rates(network.layers[3 - stage]))
    assert [len(network.layers_up[stage].blocks) for stage in range(1, 4)] == [2, 2, 2]


def test_patch_merging_concatenates_in_the_official_order():
    """Official Swin: cat(x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), then norm, reduction."""
    merging = _small_swin().layers[0].downsample
    x = torch.randn(2, 8, 6, SMALL["embed_dim"])
    official = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    expected = merging.reduction(merging.norm(official))
    torch.testing.assert_close(merging(x), expected)


def test_patch_expand_places_channel_groups_as_the_reference_rearrange():
    """Reference: rearrange('b h w (p1 p2 c) -> b (h p1) (w p2) c'); checked with an identity expansion."""
    from s4mi_monai.networks.swin_unet import PatchExpand

    expand = PatchExpand(dim=8)
    x = torch.randn(1, 2, 3, 16)
    b, h, w, _ = x.shape
    expected = torch.empty(b, 2 * h, 2 * w, 4)
    for p1 in range(2):
        for p2 in range(2):
            group = x[..., (2 * p1 + p2) * 4 : (2 * p1 + p2 + 1) * 4]
            expected[:, p1::2, p2::2] = group
    expand.expand = nn.Identity()
    torch.testing.assert_close(expand(x), expand.norm(expected))


# ----------------------------------------------------------------------------------- pretrained weights


def _to_official(network: SwinUNet) -> dict[str, torch.Tensor]:
    """The encoder of ``network`` under microsoft/Swin-Transformer names (written independently of the loader)."""
    official = {}
    for key, value in network.state_dict().items():
        if not key.startswith(("patch_embed.", "layers.", "norm.")):
            continue
        key = key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
        official[key] = value.clone()
    official["head.weight"] = torch.randn(1000, 8 * network.embed_dim)
    official["head.bias"] = torch.randn(1000)
    official["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
    return official


def test_swin_official_to_swin_unet_renames_mirrors_and_drops():
    state = {
        "patch_embed.proj.weight": torch.ones(1),
        "layers.0.blocks.1.mlp.fc1.weight": torch.full((1,), 2.0),
        "layers.0.blocks.1.attn.relative_position_index": torch.zeros(1),
        "layers.0.blocks.1.attn_mask": torch.zeros(1),
        "layers.2.downsample.reduction.weight": torch.full((1,), 3.0),
        "layers.3.blocks.0.attn.qkv.bias": torch.full((1,), 4.0),
        "norm.weight": torch.full((1,), 5.0),
        "head.weight": torch.zeros(1),
    }
    converted = swin_official_to_swin_unet(state)
    assert set(converted) == {
        "patch_embed.proj.weight",
        "layers.0.blocks.1.mlp.linear1.weight",
        "layers_up.3.blocks.1.mlp.linear1.weight",
        "layers.2.downsample.reduction.weight",
        "layers.3.blocks.0.attn.qkv.bias",
        "norm.weight",
    }
    assert converted["layers_up.3.blocks.1.mlp.linear1.weight"] is state["layers.0.blocks.1.mlp.fc1.weight"]


def test_official_swin_round_trip_fills_encoder_and_mirrored_decoder(tmp_path: Path, caplog):
    source = _small_swin()
    path = tmp_path / "swin_tiny_official.pth"
    torch.save({"model": _to_official(source)}, path)

    with caplog.at_level(logging.INFO, logger="s4mi_monai"):
        loaded = _small_swin(pretrained_weights=str(path))
    assert "loaded" in caplog.text and str(path) in caplog.text

    source_state, loaded_state = source.state_dict(), loaded.state_dict()
    encoder_keys = [
        key for key in source_state if key.startswith(("patch_embed.", "layers.", "norm.")) and "relative_position_index" not in key
    ]
    for key in encoder_keys:
        torch.testing.assert_close(loaded_state[key], source_state[key], msg=key)
    mirrored = 0
    for key, value in loaded_state.items():
        match = re.match(r"layers_up\.(\d)\.blocks\.(.+)$", key)
        if match and "relative_position_index" not in key:
            torch.testing.assert_close(value, source_state[f"layers.{3 - int(match.group(1))}.blocks.{match.group(2)}"], msg=key)
            mirrored += 1
    assert mirrored == 3 * 2 * 13  # three decoder Swin stages x two blocks x thirteen tensors
    # Decoder-only parts keep their own initialisation.
    assert not torch.equal(loaded.concat_back_dim[1].weight, source.concat_back_dim[1].weight)


def test_official_swin_shape_mismatch_is_skipped_and_reported(tmp_path: Path):
    path = tmp_path / "swin_rgb.pth"
    torch.save(_to_official(_small_swin()), path)
    network = _small_swin(in_channels=1)
    report = network.load_official_swin(path)
    assert report["shape_mismatch"] == ["patch_embed.proj.weight"]
    assert "head.weight" in report["unused"]
    assert "layers.0.blocks.0.attn.qkv.weight" in report["loaded"]
    assert "layers_up.3.blocks.0.attn.qkv.weight" in report["loaded"]


def test_pretrained_swin_files_with_nothing_to_load_are_named(tmp_path: Path):
    unrelated = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 7, 7), "fc.weight": torch.zeros(2, 4)}, unrelated)
    with pytest.raises(ValueError, match="resnet.pth") as error:
        _small_swin(pretrained_weights=unrelated)
    assert "conv1.weight" in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        _small_swin(pretrained_weights=tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------ export, builder


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # MONAI's np.ceil on traced sizes
def test_swin_unet_traces_to_the_eager_output():
    network = _small_swin().eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(network, images, check_trace=False)
        torch.testing.assert_close(traced(images), network(images))


def test_builder_swin_unet_and_unknown_name():
    network = build_segmentation_transformer("swin_unet", in_channels=1, out_channels=4, **SMALL)
    assert isinstance(network, SwinUNet)
    assert network.output.out_channels == 4 and network.patch_embed.proj.in_channels == 1
    with pytest.raises(ValueError, match="swin_unet.*swin_unetr"):
        build_segmentation_transformer("transunet")


def test_builder_swin_unetr_2d_checks_sizes_and_loads_its_encoder(tmp_path: Path):
    network = build_segmentation_transformer("swin_unetr", in_channels=3, out_channels=2, feature_size=12).eval()
    with torch.no_grad():
        assert network(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32") as error:
        network(torch.randn(1, 3, 100, 96))
    assert "got 100x96" in str(error.value)

    path = tmp_path / "swin_vit.pth"
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in network.swinViT.state_dict().items()}}, path)
    reloaded = build_segmentation_transformer("swin_unetr", feature_size=12, pretrained_weights=str(path))
    key = "layers1.0.blocks.0.attn.qkv.weight"
    torch.testing.assert_close(reloaded.swinViT.state_dict()[key], network.swinViT.state_dict()[key])
    same_width = build_segmentation_transformer("swin_unetr", embed_dim=12)  # the bundles' width knob
    assert same_width.swinViT.state_dict()[key].shape == network.swinViT.state_dict()[key].shape


# ------------------------------------------------------------------------------------------ SSL4MISUNet


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_ssl4mis_unet_keeps_input_size(size):
    network = SSL4MISUNet(in_channels=1, out_channels=4).eval()
    with torch.no_grad():
        assert network(torch.randn(2, 1, *size)).shape == (2, 4, *size)


def test_ssl4mis_unet_size_and_dropout_per_level():
    network = SSL4MISUNet()
    assert abs(_parameter_count(network) - 1.8e6) <= 0.18e6
    assert _parameter_count(network) == 1_813_762  # the SSL4MIS UNet(in_chns=3, class_num=2)
    encoder_dropout = [[m.p for m in level.modules() if isinstance(m, nn.Dropout)] for level in network.encoder]
    assert encoder_dropout == [[0.05], [0.1], [0.2], [0.3], [0.5]]
    decoder_dropout = [m.p for m in network.decoder.modules() if isinstance(m, nn.Dropout)]
    assert all(p == 0.0 for p in decoder_dropout)
    first_block = network.encoder[0]
    layer_types = [type(m).__name__ for m in first_block.modules() if not list(m.children())]
    assert layer_types == ["Conv2d", "BatchNorm2d", "LeakyReLU", "Dropout", "Conv2d", "BatchNorm2d", "LeakyReLU"]


def test_ssl4mis_unet_scripts_to_the_eager_output():
    network = SSL4MISUNet().eval()
    scripted = torch.jit.script(network)
    for size in ((64, 64), (50, 70)):
        images = torch.randn(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(scripted(images), network(images))


def test_ssl4mis_unet_gradients_flow_to_every_parameter():
    network = SSL4MISUNet()
    network(torch.randn(2, 3, 32, 48)).logsumexp(dim=1).mean().backward()
    without_gradient = [
        name for name, parameter in network.named_parameters() if parameter.grad is None or not parameter.grad.abs().sum() > 0
    ]
    assert without_gradient == []


def test_training_size_is_checked_before_any_data_is_read():
    from s4mi_monai.networks import check_transformer_image_size

    assert check_transformer_image_size(224) == 224
    with pytest.raises(ValueError, match=r"--image_size 100: swin_unet takes sides that are multiples of 32 \(e\.g\. 64"):
        check_transformer_image_size(100)
    with pytest.raises(ValueError, match="unknown segmentation transformer"):
        check_transformer_image_size(64, "unet")


# ------------------------------------------------------------------------------------------ any network by name


@pytest.mark.parametrize(
    ("architecture", "direct"),
    [
        ("resnet_unet", lambda: ResNetUNet(in_channels=3, out_channels=2, encoder="resnet18")),
        ("ssl4mis_unet", lambda: SSL4MISUNet(in_channels=3, out_channels=2)),
        ("swin_unet", lambda: build_segmentation_transformer("swin_unet", in_channels=3, out_channels=2, embed_dim=12)),
        ("swin_unetr", lambda: build_segmentation_transformer("swin_unetr", in_channels=3, out_channels=2, embed_dim=12)),
    ],
)
def test_segmentation_network_by_name_is_the_direct_construction(architecture, direct):
    """Same seed, same weights: the supervised baseline trains exactly the network the other bundles build."""
    torch.manual_seed(3)
    built = build_segmentation_network(architecture, in_channels=3, out_channels=2, encoder="resnet18", embed_dim=12)
    torch.manual_seed(3)
    expected = direct()
    assert type(built) is type(expected)
    assert built.state_dict().keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(built.state_dict()[key], value, rtol=0, atol=0)


def test_segmentation_network_by_name_rejects_unknown_names_and_weights_it_cannot_take():
    with pytest.raises(ValueError, match=r"unknown --architecture 'unet'; choose from \('resnet_unet', 'ssl4mis_unet', 'contrastive_unet', 'swin_unet'"):
        build_segmentation_network("unet")
    with pytest.raises(ValueError, match="ssl4mis_unet trains from random initialisation"):
        build_segmentation_network("ssl4mis_unet", pretrained_weights="imagenet.pth")


def test_segmentation_architecture_and_size_are_checked_before_any_data_is_read():
    assert check_segmentation_architecture("resnet_unet", 100) == "resnet_unet"  # the CNNs pad inside
    assert check_segmentation_architecture("ssl4mis_unet", 100) == "ssl4mis_unet"
    with pytest.raises(ValueError, match=r"--image_size 100: swin_unet takes sides that are multiples of 32"):
        check_segmentation_architecture("swin_unet", 100)
    with pytest.raises(ValueError, match="unknown --architecture"):
        check_segmentation_architecture("unet", 64)
