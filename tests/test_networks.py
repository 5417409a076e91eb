"""Tests of s4mi_monai.networks: backbone shapes, ViT position interpolation, local weight loading, the U-Net.

No real ImageNet checkpoint can be downloaded, so torchvision- and timm-layout files are written here from
freshly built networks; the timm one is checked against an independent timm-style ViT forward pass.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
from monai.networks.nets import ViT

from s4mi_monai.networks import (
    BACKBONES,
    Classifier,
    ResNetBackbone,
    ResNetUNet,
    ViTBackbone,
    build_backbone,
    interpolate_pos_embed,
    load_pretrained,
)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _torchvision_resnet_state(name: str = "resnet18", num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A torchvision-layout ResNet state dict: MONAI's names plus torchvision's 1000-class ``fc``."""
    reference = ResNetBackbone(name)
    torch.nn.init.normal_(reference.bn1.running_mean)
    state = dict(reference.state_dict())
    state["fc.weight"] = torch.randn(num_classes, reference.embed_dim)
    state["fc.bias"] = torch.randn(num_classes)
    return state


def _timm_vit_state(vit: ViTBackbone, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """timm's ``VisionTransformer`` names for the tensors of ``vit``, with a non-zero CLS position entry."""
    class_position = 0.1 * torch.randn(1, 1, vit.embed_dim)
    state = {
        "cls_token": vit.cls_token.detach() - class_position,
        "pos_embed": torch.cat((class_position, vit.patch_embedding.position_embeddings.detach()), dim=1),
        "patch_embed.proj.weight": vit.patch_embedding.patch_embeddings.weight.detach(),
        "patch_embed.proj.bias": vit.patch_embedding.patch_embeddings.bias.detach(),
        "norm.weight": vit.norm.weight.detach(),
        "norm.bias": vit.norm.bias.detach(),
        "head.weight": torch.randn(num_classes, vit.embed_dim),
        "head.bias": torch.randn(num_classes),
    }
    monai_to_timm = {
        "norm1": "norm1",
        "attn.qkv": "attn.qkv",
        "attn.out_proj": "attn.proj",
        "norm2": "norm2",
        "mlp.linear1": "mlp.fc1",
        "mlp.linear2": "mlp.fc2",
    }
    for index, block in enumerate(vit.blocks):
        for monai_name, timm_name in monai_to_timm.items():
            layer = block.get_submodule(monai_name)
            state[f"blocks.{index}.{timm_name}.weight"] = layer.weight.detach()
            state[f"blocks.{index}.{timm_name}.bias"] = layer.bias.detach()
    return {key: value.clone() for key, value in state.items()}


def _timm_vit_forward(state: dict[str, torch.Tensor], images: torch.Tensor, num_heads: int) -> torch.Tensor:
    """CLS features of timm's ViT written out in plain torch (timm's qkv split and position handling)."""
    functional = torch.nn.functional
    tokens = functional.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16)
    tokens = tokens.flatten(2).transpose(1, 2)
    batch, dim = tokens.shape[0], tokens.shape[2]
    tokens = torch.cat((state["cls_token"].expand(batch, -1, -1), tokens), dim=1) + state["pos_embed"]
    head_dim = dim // num_heads
    index = 0
    while f"blocks.{index}.norm1.weight" in state:
        prefix = f"blocks.{index}."

        def norm(x: torch.Tensor, name: str, prefix: str = prefix) -> torch.Tensor:
            return functional.layer_norm(x, (dim,), state[f"{prefix}{name}.weight"], state[f"{prefix}{name}.bias"])

        def linear(x: torch.Tensor, name: str, prefix: str = prefix) -> torch.Tensor:
            return functional.linear(x, state[f"{prefix}{name}.weight"], state[f"{prefix}{name}.bias"])

        qkv = linear(norm(tokens, "norm1"), "attn.qkv").reshape(batch, -1, 3, num_heads, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = (query @ key.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        attended = (attention @ value).transpose(1, 2).reshape(batch, -1, dim)
        tokens = tokens + linear(attended, "attn.proj")
        tokens = tokens + linear(functional.gelu(linear(norm(tokens, "norm2"), "mlp.fc1")), "mlp.fc2")
        index += 1
    return functional.layer_norm(tokens, (dim,), state["norm.weight"], state["norm.bias"])[:, 0]


# ---------------------------------------------------------------- backbones and classifier


@pytest.mark.parametrize(
    ("name", "embed_dim", "parameters"),
    [("resnet50", 2048, 23_508_032), ("vit_s16", 384, 21_674_496), ("vit_b16", 768, 85_816_320)],
)
def test_large_backbones_build_with_expected_sizes(name, embed_dim, parameters):
    backbone = build_backbone(name)
    assert backbone.embed_dim == embed_dim
    assert _parameter_count(backbone) == parameters


@pytest.mark.parametrize(("name", "embed_dim"), [("resnet18", 512), ("vit_ti16", 192)])
def test_small_backbones_return_plain_feature_tensors(name, embed_dim):
    backbone = build_backbone(name, image_size=64).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert type(features) is torch.Tensor
    assert features.shape == (2, embed_dim)


@pytest.mark.parametrize("name", ["resnet18", "vit_ti16"])
def test_classifier_returns_logits_tensor(name):
    model = Classifier(name, num_classes=5, image_size=64, in_channels=1, dropout=0.1).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 1, 64, 64))
    assert type(logits) is torch.Tensor
    assert logits.shape == (3, 5)


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="choose from"):
        build_backbone("resnet101")
    assert set(BACKBONES) == {"resnet18", "resnet50", "vit_ti16", "vit_s16", "vit_b16"}


def test_resnet_stem_has_stride_two_and_stages_halve():
    backbone = ResNetBackbone("resnet18").eval()
    with torch.no_grad():
        stages = backbone.feature_maps(torch.randn(1, 3, 64, 64))
    assert [tuple(stage.shape[1:]) for stage in stages] == [
        (64, 32, 32),
        (64, 16, 16),
        (128, 8, 8),
        (256, 4, 4),
        (512, 2, 2),
    ]
    assert backbone.conv1.stride == (2, 2) and backbone.conv1.kernel_size == (7, 7)
    assert backbone.layer2[0].downsample[0].bias is None


# ---------------------------------------------------------------- ViT position embeddings


def test_vit_built_for_224_takes_96_and_224_inputs():
    backbone = build_backbone("vit_ti16", image_size=224).eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 96, 96)).shape == (1, 192)
        assert backbone(torch.randn(1, 3, 224, 224)).shape == (1, 192)


@pytest.mark.parametrize("size", [(32, 32), (96, 96), (48, 80)])
def test_vit_built_for_64_takes_other_multiples_of_16(size):
    backbone = build_backbone("vit_ti16", image_size=64).eval()
    with torch.no_grad():
        assert backbone(torch.randn(2, 3, *size)).shape == (2, 192)


def test_vit_at_build_size_is_bit_identical_to_monai_vit():
    backbone = build_backbone("vit_ti16", image_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        monai_cls_features, _ = ViT.forward(backbone, images)
        assert torch.equal(backbone(images), monai_cls_features)


@pytest.mark.parametrize("size", [(40, 64), (64, 100), (8, 8)])
def test_vit_rejects_sides_not_multiple_of_patch(size):
    backbone = build_backbone("vit_ti16", image_size=64)
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        backbone(torch.randn(1, 3, *size))


def test_vit_build_size_must_be_multiple_of_patch():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        build_backbone("vit_ti16", image_size=100)


def test_interpolate_pos_embed_shapes_identity_and_class_entry():
    table = torch.randn(1, 16, 8)
    assert interpolate_pos_embed(table, (4, 4), (4, 4)) is table
    assert interpolate_pos_embed(table, (4, 4), (6, 3)).shape == (1, 18, 8)

    with_class_entry = torch.cat((torch.randn(1, 1, 8), table), dim=1)
    resized = interpolate_pos_embed(with_class_entry, (4, 4), (14, 14))
    assert resized.shape == (1, 197, 8)
    assert torch.equal(resized[:, 0], with_class_entry[:, 0])

    constant = torch.full((1, 196, 8), 0.5)
    assert torch.allclose(interpolate_pos_embed(constant, (14, 14), (6, 6)), torch.full((1, 36, 8), 0.5))
    with pytest.raises(ValueError, match="entries"):
        interpolate_pos_embed(torch.randn(1, 20, 8), (4, 4), (2, 2))


# ---------------------------------------------------------------- loading local weights


def test_torchvision_resnet_round_trip_into_classifier(tmp_path: Path, caplog):
    state = _torchvision_resnet_state("resnet18")
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(state, path)
    reference = ResNetBackbone("resnet18").eval()
    reference.load_state_dict({key: value for key, value in state.items() if not key.startswith("fc.")})

    model = Classifier("resnet18", num_classes=3, pretrained_weights=str(path)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(images), reference(images))

    with caplog.at_level(logging.INFO, logger="s4mi_monai.networks.weights"):
        report = load_pretrained(model, path)
    assert report.layout == "torchvision"
    assert report.excluded == ["fc.bias", "fc.weight"]
    assert report.missing == ["head.weight", "head.bias"]
    assert report.unexpected == [] and report.shape_mismatch == []
    assert all(key.startswith("backbone.") for key in report.loaded)
    assert "loaded" in caplog.text
    assert set(report.as_dict()) == {"loaded", "missing", "unexpected", "shape_mismatch", "excluded", "layout"}


def test_torchvision_rgb_stem_is_summed_for_one_channel_input(tmp_path: Path):
    state = _torchvision_resnet_state("resnet18")
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(state, path)
    model = Classifier("resnet18", in_channels=1, pretrained_weights=path)
    assert torch.allclose(model.backbone.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))


def test_timm_vit_round_trip_matches_timm_forward(tmp_path: Path):
    source = build_backbone("vit_ti16", image_size=64)
    for parameter in source.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    timm_state = _timm_vit_state(source)
    path = tmp_path / "vit_tiny_patch16_timm.pth"
    torch.save({"state_dict": timm_state}, path)

    target = build_backbone("vit_ti16", image_size=64).eval()
    report = load_pretrained(target, path)
    assert report.layout == "timm"
    assert report.excluded == ["head.bias", "head.weight"]
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = _timm_vit_forward(timm_state, images, num_heads=3)
        assert torch.allclose(target(images), expected, atol=1e-5)


def test_timm_position_table_is_interpolated_to_the_model_grid(tmp_path: Path):
    timm_state = _timm_vit_state(build_backbone("vit_ti16", image_size=224))
    path = tmp_path / "vit_224.pth"
    torch.save(timm_state, path)
    target = build_backbone("vit_ti16", image_size=64)
    report = load_pretrained(target, path)
    assert "patch_embedding.position_embeddings" in report.loaded
    assert report.shape_mismatch == []
    expected = interpolate_pos_embed(timm_state["pos_embed"][:, 1:], (14, 14), (4, 4))
    assert torch.equal(target.patch_embedding.position_embeddings.detach(), expected)


def test_native_checkpoint_nested_and_prefixed(tmp_path: Path):
    trained = Classifier("resnet18", num_classes=4).eval()
    wrapped = {f"module.{key}": value for key, value in trained.state_dict().items()}
    path = tmp_path / "classifier.pt"
    torch.save({"epoch": 3, "model": wrapped}, path)

    backbone = ResNetBackbone("resnet18").eval()
    report = load_pretrained(backbone, path)
    assert report.layout == "native"
    assert report.excluded == ["head.bias", "head.weight"]
    assert report.missing == [] and report.unexpected == []
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(images), trained.backbone(images))


def test_dino_style_checkpoint_prefers_teacher(tmp_path: Path):
    student, teacher = build_backbone("vit_ti16", image_size=32), build_backbone("vit_ti16", image_size=32)
    flat = {f"student.backbone.{key}": value for key, value in student.state_dict().items()}
    flat.update({f"teacher.backbone.{key}": value for key, value in teacher.state_dict().items()})
    path = tmp_path / "dino.pt"
    torch.save(flat, path)
    model = Classifier("vit_ti16", image_size=32)
    load_pretrained(model, path)
    assert torch.equal(model.backbone.cls_token, teacher.cls_token)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, teacher.blocks[0].attn.qkv.weight)


def test_head_shape_mismatch_is_reported_not_loaded(tmp_path: Path):
    path = tmp_path / "three_classes.pt"
    torch.save(Classifier("resnet18", num_classes=3).state_dict(), path)
    model = Classifier("resnet18", num_classes=5)
    report = load_pretrained(model, path, exclude=())
    assert report.shape_mismatch == ["head.weight", "head.bias"]
    assert report.missing == ["head.weight", "head.bias"]
    assert "2 shape mismatches" in str(report)


def test_torchvision_weights_load_into_unet_encoder(tmp_path: Path):
    state = _torchvision_resnet_state("resnet18")
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(state, path)
    model = ResNetUNet(encoder="resnet18", pretrained_weights=path)
    encoder_state = model.encoder.state_dict()
    assert all(torch.equal(encoder_state[key], state[key]) for key in encoder_state)
    report = load_pretrained(model, path)
    assert all(key.startswith("encoder.") for key in report.loaded)
    assert len(report.loaded) == len(encoder_state)


def test_missing_file_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_pretrained(ResNetBackbone("resnet18"), missing)


class _ArbitraryObject:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path: Path, monkeypatch, capsys):
    path = tmp_path / "malicious.pt"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": _ArbitraryObject()}, handle, protocol=2)
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    with pytest.raises(ValueError, match="weights_only"):
        load_pretrained(ResNetBackbone("resnet18"), path)
    assert calls and all(call.get("weights_only") is True for call in calls)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text", "not a PyTorch checkpoint"),
        ({"epoch": 3, "optimizer": {"lr": 0.1}}, "holds no state dict"),
        ({"unrelated.weight": torch.zeros(2)}, "shares no loadable tensor"),
    ],
)
def test_wrong_files_raise_clear_errors(tmp_path: Path, content, message):
    path = tmp_path / "wrong.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=message):
        load_pretrained(ResNetBackbone("resnet18"), path)


def test_other_architecture_shares_nothing(tmp_path: Path):
    path = tmp_path / "vit_tiny.pt"
    torch.save(build_backbone("vit_ti16", image_size=32).state_dict(), path)
    with pytest.raises(ValueError, match=r"shares no loadable tensor .* names match with other shapes"):
        load_pretrained(build_backbone("vit_s16", image_size=32), path)
    with pytest.raises(ValueError, match="source must be one of"):
        load_pretrained(build_backbone("vit_ti16", image_size=32), path, source="keras")


# ---------------------------------------------------------------- U-Net


def test_unet_keeps_input_size():
    model = ResNetUNet(in_channels=3, out_channels=2, encoder="resnet34").eval()
    with torch.no_grad():
        for size in [(64, 64), (100, 72), (224, 224)]:
            logits = model(torch.randn(1, 3, *size))
            assert type(logits) is torch.Tensor
            assert logits.shape == (1, 2, *size)


def test_unet_gradient_reaches_first_encoder_conv():
    model = ResNetUNet(in_channels=1, out_channels=3, encoder="resnet18")
    model(torch.randn(2, 1, 48, 40)).mean().backward()
    gradient = model.encoder.conv1.weight.grad
    assert gradient is not None and gradient.abs().sum() > 0


def test_unet_rejects_bad_configuration():
    with pytest.raises(ValueError, match="unknown encoder"):
        ResNetUNet(encoder="efficientnet-b0")
    with pytest.raises(ValueError, match="decoder_channels"):
        ResNetUNet(encoder="resnet18", decoder_channels=(64, 32, 16))


# ---------------------------------------------------------------- TorchScript


# torch 2.13 deprecates tracing in favour of torch.export; a traced ViT warns that its input-size branch is frozen.
# Scripted models run with optimized_execution(False): the compiled graph is under test, and the profiling
# executor's optimisation passes would cost seconds per new input shape.
ignore_trace_deprecation = pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
ignore_frozen_branch = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


@ignore_trace_deprecation
def test_resnet_classifier_scripts_and_traces():
    model = Classifier("resnet18", num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        eager = model(images)
        assert torch.allclose(torch.jit.script(model)(images), eager, atol=1e-6)
        assert torch.allclose(torch.jit.trace(model, images, check_trace=False)(images), eager, atol=1e-6)


@ignore_trace_deprecation
@ignore_frozen_branch
def test_vit_classifier_scripts_with_interpolation_and_traces_at_build_size():
    model = Classifier("vit_ti16", num_classes=3, image_size=64).eval()
    scripted = torch.jit.script(model)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        for size in [(64, 64), (96, 32)]:
            images = torch.randn(2, 3, *size)
            assert torch.allclose(scripted(images), model(images), atol=1e-6)
        images = torch.randn(2, 3, 64, 64)
        assert torch.allclose(torch.jit.trace(model, images, check_trace=False)(images), model(images), atol=1e-6)
    with pytest.raises(torch.jit.Error, match="multiples of the patch size"):
        scripted(torch.randn(1, 3, 40, 64))


@ignore_trace_deprecation
def test_unet_scripts_for_any_size_and_traces_for_one():
    model = ResNetUNet(encoder="resnet18").eval()
    scripted = torch.jit.script(model)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        for size in [(64, 64), (40, 72)]:
            images = torch.randn(1, 3, *size)
            assert torch.allclose(scripted(images), model(images), atol=1e-5)
        images = torch.randn(1, 3, 64, 32)
        assert torch.allclose(torch.jit.trace(model, images, check_trace=False)(images), model(images), atol=1e-5)
