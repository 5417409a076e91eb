"""Every generated file of a bundle, and ``s4mi bundles``, which writes them under ``bundles/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s4mi_monai.bundlegen import contrastive, crossteach, multi_gpu, self_supervised, supervised, unsupervised
from s4mi_monai.bundlegen.metadata import LOGGING_CONF, metadata
from s4mi_monai.bundlegen.parts import REPO_ROOT
from s4mi_monai.bundlegen.readme import readme
from s4mi_monai.bundlegen.registry import BUNDLES, BundleSpec

Builder = Callable[[BundleSpec], dict[str, Any]]

CONFIG_BUILDERS: dict[str, dict[str, Builder]] = {
    "supervised": {
        "train.json": supervised.train_config,
        "evaluate.json": supervised.evaluate_config,
        "inference.json": supervised.inference_config,
    },
    "self_supervised": {
        "train.json": self_supervised.ssl_train_config,
        "evaluate.json": self_supervised.ssl_evaluate_config,
        "inference.json": supervised.inference_config,
    },
    "semi_supervised": {
        "train.json": crossteach.crossteach_train_config,
        "evaluate.json": crossteach.crossteach_evaluate_config,
        "inference.json": crossteach.crossteach_inference_config,
    },
    "contrastive": {
        "train.json": contrastive.contrastive_train_config,
        "evaluate.json": contrastive.contrastive_evaluate_config,
        "inference.json": contrastive.contrastive_inference_config,
    },
    "unsupervised": {
        "train.json": unsupervised.picie_train_config,
        "evaluate.json": unsupervised.picie_evaluate_config,
        "inference.json": unsupervised.picie_inference_config,
    },
}
"""The builder of each config file, per method family (:attr:`s4mi_monai.bundlegen.registry.Method.family`)."""

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dino": {"lucidrains.json": self_supervised.LUCIDRAINS_PRESET, "small_data.json": self_supervised.SMALL_DATA_PRESET},
    "crossteach_seg": {"ssl4mis.json": crossteach.SSL4MIS_PRESET},
}
"""Overlays passed after ``train.json`` (``--config_file "['train.json','<preset>.json']"``), per method."""


LINE_WIDTH = 110
"""Lists and dicts of plain values that fit on one line of this width are written on one line, as in the model zoo."""


def _is_flat(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return all(not isinstance(item, (dict, list)) for item in items)


def _format(value: Any, indent: int, prefix: int) -> str:
    """``value`` as JSON at ``indent`` spaces, after ``prefix`` characters of its key on the same line."""
    one_line = json.dumps(value)
    if not isinstance(value, (dict, list)) or not value:
        return one_line
    if _is_flat(value) and indent + prefix + len(one_line) + 1 <= LINE_WIDTH:
        return one_line
    inner = " " * (indent + 2)
    if isinstance(value, list):
        lines = [inner + _format(item, indent + 2, 0) for item in value]
        return "[\n" + ",\n".join(lines) + "\n" + " " * indent + "]"
    lines = []
    for key, item in value.items():
        head = json.dumps(key) + ": "
        lines.append(inner + head + _format(item, indent + 2, len(head)))
    return "{\n" + ",\n".join(lines) + "\n" + " " * indent + "}"


def _json(config: dict[str, Any]) -> str:
    """Indented JSON with short flat lists and dicts kept on one line (same content as ``json.dumps``)."""
    return _format(config, 0, 0) + "\n"


def bundle_files(spec: BundleSpec) -> dict[str, str]:
    """Relative path -> content of every generated file of one bundle except its README (whose results are kept)."""
    builders = CONFIG_BUILDERS[spec.method_info.family]
    files = {f"configs/{name}": _json(build(spec)) for name, build in builders.items()}
    files["configs/metadata.json"] = _json(metadata(spec))
    files["configs/logging.conf"] = LOGGING_CONF
    files.update({f"configs/{name}": _json(preset) for name, preset in PRESETS.get(spec.method, {}).items()})
    files["configs/multi_gpu_train.json"] = _json(multi_gpu.BUILDERS[spec.method](spec))
    return files


def write_bundles(root: str | Path = "bundles", names: list[str] | None = None) -> list[Path]:
    """Write the generated files of the named bundles (default: all) under ``root``."""
    written = []
    for name in names or list(BUNDLES):
        spec = BUNDLES[name]
        folder = Path(root) / name
        contents = bundle_files(spec)
        readme_path = folder / "docs" / "README.md"
        contents["docs/README.md"] = readme(spec, readme_path.read_text() if readme_path.is_file() else "")
        contents["LICENSE"] = (REPO_ROOT / "LICENSE").read_text()
        for relative, text in contents.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written
