"""Every generated file of a bundle, and ``s4mi bundles``, which writes them under ``bundles/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s4mi_monai.bundlegen import crossteach, self_supervised, supervised
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
}
"""The builder of each config file, per method family (:attr:`s4mi_monai.bundlegen.registry.Method.family`)."""

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dino": {"lucidrains.json": self_supervised.LUCIDRAINS_PRESET},
    "crossteach_seg": {"ssl4mis.json": crossteach.SSL4MIS_PRESET},
}
"""Overlays passed after ``train.json`` (``--config_file "['train.json','<preset>.json']"``), per method."""


def _json(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def bundle_files(spec: BundleSpec) -> dict[str, str]:
    """Relative path -> content of every generated file of one bundle except its README (whose results are kept)."""
    builders = CONFIG_BUILDERS[spec.method_info.family]
    files = {f"configs/{name}": _json(build(spec)) for name, build in builders.items()}
    files["configs/metadata.json"] = _json(metadata(spec))
    files["configs/logging.conf"] = LOGGING_CONF
    files.update({f"configs/{name}": _json(preset) for name, preset in PRESETS.get(spec.method, {}).items()})
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
