"""Loading local ImageNet or self-supervised weights into the MONAI networks of this package.

Nothing can be downloaded, so users pass a file. Three layouts are understood:

* torchvision ResNet state dicts (``conv1.weight``, ``layer1.0.downsample.0.weight``, ``fc.*``): MONAI's
  ResNet uses the same module names, so they load as they are;
* timm ViT state dicts (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.i.attn.qkv.*``,
  ``blocks.i.mlp.fc1.*``, ...): renamed to MONAI's ViT names. timm adds a position embedding to the CLS
  token, MONAI does not, so that entry is folded into ``cls_token`` (the CLS input is the same sum);
* our own checkpoints: the state dict of one of our modules, possibly nested under ``"state_dict"``,
  ``"model"``, ``"teacher"``, ``"student"`` ... and prefixed with ``module.`` or ``backbone.``.

Checkpoint and model keys are lined up by the prefix pair (e.g. ``backbone.`` in the file, ``encoder.``
in the model) that matches the most keys, so a backbone checkpoint loads into a Classifier, a ResNetUNet
encoder or a bare backbone alike. Files are read with ``weights_only=True`` only: a file that needs
arbitrary unpickling is refused.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

SOURCES = ("auto", "torchvision", "timm", "native")
DEFAULT_EXCLUDE = ("fc.", "head.", "classification_head")

# Keys under which training scripts nest a state dict; "teacher" before "student" because DINO evaluates the teacher.
_NESTING_KEYS = ("state_dict", "model", "teacher", "student", "network", "net", "model_state_dict")
# Added by DataParallel/DistributedDataParallel and torch.compile; never part of the module's own names.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# MONAI's TransformerBlock allocates this LayerNorm even without cross-attention; it never runs.
_UNUSED_TARGET_KEYS = ("norm_cross_attn.",)
_TIMM_RENAMES = (
    (re.compile(r"(^|\.)patch_embed\.proj\."), r"\1patch_embedding.patch_embeddings."),
    (re.compile(r"\.attn\.proj\."), ".attn.out_proj."),
    (re.compile(r"\.mlp\.fc1\."), ".mlp.linear1."),
    (re.compile(r"\.mlp\.fc2\."), ".mlp.linear2."),
    (re.compile(r"(^|\.)head\."), r"\1classification_head."),
)
_POSITION_EMBEDDING_KEY = "patch_embedding.position_embeddings"


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did, key by key (model-side names except for ``unexpected``/``excluded``)."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    shape_mismatch: list[str]
    excluded: list[str] = field(default_factory=list)
    layout: str = "native"

    def __str__(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors ({self.layout} layout); "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.shape_mismatch)} shape mismatches, {len(self.excluded)} excluded"
        ]
        for name, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.shape_mismatch),
            ("excluded", self.excluded),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"  {name}: {shown}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, list[str] | str]:
        return asdict(self)


def interpolate_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resample a ``(1, N, D)`` patch-position table from ``old_grid`` to ``new_grid`` (bicubic, antialiased).

    A leading CLS entry (``N == 1 + h * w``, timm layout) is kept as it is. The same grid returns the input
    unchanged, so a ViT at its build size computes exactly what it computed without interpolation.
    """
    old_h, old_w = old_grid
    new_h, new_w = new_grid
    if old_h == new_h and old_w == new_w:
        return pos_embed
    num_patches = old_h * old_w
    num_extra = pos_embed.shape[1] - num_patches
    if num_extra != 0 and num_extra != 1:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} entries, expected {num_patches} or {num_patches + 1}")
    extra, patches = pos_embed[:, :num_extra], pos_embed[:, num_extra:]
    dim = patches.shape[-1]
    patch_grid = patches.reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2).float()
    resized = F.interpolate(patch_grid, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    resized = resized.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim).to(pos_embed.dtype)
    return torch.cat((extra, resized), dim=1)


def load_pretrained(
    module: nn.Module,
    path: str | Path,
    source: str = "auto",
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> LoadReport:
    """Copy the matching tensors of a local checkpoint into ``module`` and report what matched.

    ``source`` is ``"auto"`` (detect), ``"torchvision"``, ``"timm"`` or ``"native"``. Keys matching an
    ``exclude`` pattern (a name prefix at any dotted level, e.g. ``"fc."``) are skipped: classification heads
    of another task should not be loaded. Position embeddings of another grid are interpolated, and RGB stem
    weights are summed for a one-channel model. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for a file that is not a plain state dict or shares no tensor with ``module``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = _strip_wrapper_prefixes(_find_state_dict(_read_checkpoint(path), path))
    layout = _detect_layout(state) if source == "auto" else source
    renamed = _timm_vit_to_monai(state) if layout == "timm" else {key: (key, value) for key, value in state.items()}

    excluded_keys = {key for key, (original, _) in renamed.items() if _matches_any(key, exclude) or _matches_any(original, exclude)}
    excluded = sorted(renamed[key][0] for key in excluded_keys)
    candidates = {key: tensor for key, (_, tensor) in renamed.items() if key not in excluded_keys}
    target = module.state_dict()
    new_values, shape_mismatch, unexpected_keys = _match_tensors(candidates, target)
    unexpected = sorted(renamed[key][0] for key in unexpected_keys)

    if not new_values:
        mismatch_note = f"; {len(shape_mismatch)} names match with other shapes, e.g. {shape_mismatch[0]}" if shape_mismatch else ""
        raise ValueError(
            f"{path} shares no loadable tensor with {type(module).__name__} (detected {layout} layout){mismatch_note}; "
            f"checkpoint keys start {_preview(state)}, model keys start {_preview(target)}"
        )
    target.update(new_values)
    module.load_state_dict(target)
    missing = [key for key in target if key not in new_values and not _matches_any(key, _UNUSED_TARGET_KEYS)]
    report = LoadReport(list(new_values), missing, unexpected, shape_mismatch, excluded, layout)
    logger.info("weights from %s into %s: %s", path, type(module).__name__, report)
    return report


def _match_tensors(
    candidates: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Checkpoint tensors under their model names (shape-adapted), model names that do not fit, unused keys."""
    source_prefix, target_prefix = _best_prefix_alignment(candidates, target)
    matched: dict[str, torch.Tensor] = {}
    shape_mismatch, unexpected = [], []
    for key, tensor in candidates.items():
        target_key = target_prefix + key[len(source_prefix) :]
        if not key.startswith(source_prefix) or target_key not in target:
            unexpected.append(key)
            continue
        adapted = _adapt_shape(target_key, tensor, target[target_key])
        if adapted is None:
            shape_mismatch.append(target_key)
            logger.warning(
                "%s: checkpoint shape %s does not fit model shape %s",
                target_key,
                tuple(tensor.shape),
                tuple(target[target_key].shape),
            )
        else:
            matched[target_key] = adapted
    return matched, shape_mismatch, unexpected


def _read_checkpoint(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"{path} cannot be read as plain tensors (torch.load with weights_only=True): either it is not a "
            "PyTorch checkpoint, or it holds arbitrary Python objects, which are refused because unpickling "
            "them can run code"
        ) from error


def _is_state_dict(candidate: object) -> bool:
    return (
        isinstance(candidate, Mapping)
        and len(candidate) > 0
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in candidate.items())
    )


def _find_state_dict(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping in ``checkpoint``, looking inside the usual nesting keys (any depth)."""
    if _is_state_dict(checkpoint):
        return dict(checkpoint)  # type: ignore[arg-type]
    if isinstance(checkpoint, Mapping):
        for key in _NESTING_KEYS:
            if isinstance(checkpoint.get(key), Mapping):
                return _find_state_dict(checkpoint[key], path)
        nested = [value for value in checkpoint.values() if _is_state_dict(value)]
        if len(nested) == 1:
            return dict(nested[0])
        raise ValueError(
            f"{path} holds no state dict: top-level keys {list(checkpoint)[:10]}, none of {_NESTING_KEYS} holds a mapping of tensors"
        )
    raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def _detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """timm ViT by its own names; torchvision ResNet by its root-level names.

    MONAI's ResNet uses torchvision's names, so both load the same way; the label only tells the source.
    """
    keys = list(state)
    if any(key.endswith("patch_embed.proj.weight") for key in keys) and any(key.endswith("pos_embed") for key in keys):
        return "timm"
    if {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"} <= set(keys):
        return "torchvision"
    return "native"


def _timm_vit_to_monai(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    """MONAI name -> (timm name, tensor); timm's CLS position entry is folded into ``cls_token``."""
    converted: dict[str, tuple[str, torch.Tensor]] = {}
    class_position = {}
    for key, value in state.items():
        if key == "pos_embed" or key.endswith(".pos_embed"):
            prefix = key[: -len("pos_embed")]
            num_entries = value.shape[1]
            if _square_side(num_entries - 1) is not None:
                class_position[prefix] = value[:, :1]
                value = value[:, 1:]
            converted[prefix + _POSITION_EMBEDDING_KEY] = (key, value)
            continue
        new_key = key
        for pattern, replacement in _TIMM_RENAMES:
            new_key = pattern.sub(replacement, new_key)
        converted[new_key] = (key, value)
    for prefix, position in class_position.items():
        cls_key = prefix + "cls_token"
        if cls_key in converted:
            original, token = converted[cls_key]
            converted[cls_key] = (original, token + position)
    return converted


def _matches_any(key: str, patterns: Iterable[str]) -> bool:
    """Whether a pattern starts ``key`` or one of its dotted components (``"fc."`` matches ``backbone.fc.w``)."""
    return any(key.startswith(pattern) or f".{pattern}" in key for pattern in patterns)


def _module_prefixes(keys: Iterable[str], max_depth: int = 2) -> set[str]:
    prefixes = {""}
    for key in keys:
        parts = key.split(".")[:-1]
        for depth in range(1, min(max_depth, len(parts)) + 1):
            prefixes.add(".".join(parts[:depth]) + ".")
    return prefixes


def _best_prefix_alignment(source: Mapping[str, object], target: Mapping[str, object]) -> tuple[str, str]:
    """The (checkpoint prefix, model prefix) pair under which the most checkpoint keys name a model key.

    Ties go to the shorter pair, then to a teacher over a student (DINO keeps the teacher).
    """

    def matches(pair: tuple[str, str]) -> int:
        source_prefix, target_prefix = pair
        return sum(1 for key in source if key.startswith(source_prefix) and target_prefix + key[len(source_prefix) :] in target)

    pairs = [(s, t) for s in _module_prefixes(source) for t in _module_prefixes(target)]
    return max(pairs, key=lambda pair: (matches(pair), -len(pair[0]) - len(pair[1]), "teacher" in pair[0], pair))


def _square_side(count: int) -> int | None:
    side = math.isqrt(count) if count > 0 else 0
    return side if side > 0 and side * side == count else None


def _adapt_shape(key: str, tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor | None:
    """``tensor`` reshaped to fit ``reference``, or None when no safe adaptation exists."""
    if tensor.shape == reference.shape:
        return tensor
    if key.endswith(_POSITION_EMBEDDING_KEY) and tensor.ndim == 3 and tensor.shape[2] == reference.shape[2]:
        old_side, new_side = _square_side(tensor.shape[1]), _square_side(reference.shape[1])
        if old_side is not None and new_side is not None:
            return interpolate_pos_embed(tensor, (old_side, old_side), (new_side, new_side))
    is_rgb_stem_for_one_channel = (
        tensor.ndim == 4
        and reference.ndim == 4
        and tensor.shape[1] == 3
        and reference.shape[1] == 1
        and (tensor.shape[0], *tensor.shape[2:]) == (reference.shape[0], *reference.shape[2:])
    )
    if is_rgb_stem_for_one_channel:
        return tensor.sum(dim=1, keepdim=True)
    return None


def _preview(state: Mapping[str, object]) -> list[str]:
    return list(state)[:5]
