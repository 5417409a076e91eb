"""Sharing bundles: the configs reach our code only through the bundle's own folder, `s4mi pack` / `unpack` / `verify`,
and a packed bundle that runs inference, checks and export in an environment without the s4mi_monai package."""

from __future__ import annotations

import json
import re
import site
import stat
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from s4mi_monai.bundlegen.pack import BUILD_ONLY, CHECKSUMS, LARGE_FILES, pack_bundle, runtime_code, unpack_bundle, verify_bundle
from s4mi_monai.cli import S4MI
from tests.conftest import untrained_model, write_image

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def _strings(value, key=None):
    """Every string of a config with the key it sits under (None in lists at the top)."""
    if isinstance(value, dict):
        for inner_key, item in value.items():
            yield from _strings(item, inner_key)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, str):
        yield key, value


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_configs_reach_our_code_only_through_the_bundle_item(bundle):
    """MONAI runs `$import` lines before any item, so an import of our package could not use the bundle's scripts/."""
    for config in sorted((bundle / "configs").glob("*.json")):
        content = json.loads(config.read_text())
        for key, text in _strings(content):
            assert not re.match(r"\$(import|from) s4mi_monai", text), f"{config}: {text}"
            assert not re.search(r"(?<![@\w.])s4mi_monai\.", text) or not text.startswith("$"), f"{config}: {text}"
            assert not (key == "_target_" and text.startswith("s4mi_monai")), f"{config}: _target_ {text}"
        if config.name in ("train.json", "inference.json"):
            assert "s4mi_monai" in content and "bundle_root" in content, config


def _bundle_item(config: Path, item: str, argv: list[str], cwd: Path, monkeypatch) -> object:
    from monai.bundle import ConfigParser

    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(cwd)
    parser = ConfigParser()
    parser.read_config(str(config))
    return parser.get_parsed_content(item)


def test_bundle_root_is_found_from_the_command_line_the_working_directory_or_the_repository(tmp_path, monkeypatch):
    bundle = REPO / "bundles" / "supervised_seg_isic"
    config = bundle / "configs" / "inference.json"
    argv_forms = [
        ["monai.bundle", "run", "--config_file", str(config)],
        ["monai.bundle", "run", f"--config_file={config}"],
        ["monai.bundle", "run", "--config_file", json.dumps([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "evaluate.json")])],
    ]
    for argv in argv_forms:
        assert Path(_bundle_item(config, "bundle_root", argv, tmp_path, monkeypatch)) == bundle
    assert Path(_bundle_item(config, "bundle_root", ["pytest"], bundle, monkeypatch)) == bundle  # inside the bundle
    assert Path(_bundle_item(config, "bundle_root", ["pytest"], REPO, monkeypatch)) == bundle  # from the repository root


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    """supervised_seg_isic packed with (untrained) demo-sized weights, and the model folder they came from."""
    root = tmp_path_factory.mktemp("pack")
    model_dir = untrained_model(REPO / "bundles" / "supervised_seg_isic", root / "model")
    archive = root / "seg.zip"
    pack_bundle(REPO / "bundles" / "supervised_seg_isic", archive, model_dir=model_dir)
    return archive, model_dir


def test_pack_is_reproducible_readable_and_carries_the_runtime_code(packed, tmp_path):
    archive, model_dir = packed
    again = pack_bundle(REPO / "bundles" / "supervised_seg_isic", tmp_path / "again.zip", model_dir=model_dir)
    assert again.archive.read_bytes() == archive.read_bytes()
    assert stat.S_IMODE(archive.stat().st_mode) & 0o044 == 0o044  # group and others may read it
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert all(stat.S_IMODE(info.external_attr >> 16) == 0o644 for info in zipped.infolist())
    assert all(name.startswith("supervised_seg_isic/") for name in names)
    inside = {name.split("/", 1)[1] for name in names}
    assert {"configs/inference.json", "configs/metadata.json", "docs/README.md", "docs/meta_schema.json", "LICENSE", CHECKSUMS} <= inside
    assert {"models/model.pt", "models/model_info.json", "scripts/s4mi_monai/__init__.py", "scripts/s4mi_monai/networks/unet.py"} <= inside
    assert not any(name.startswith(tuple(f"scripts/s4mi_monai/{part}" for part in BUILD_ONLY)) for name in inside)
    assert set(runtime_code()) <= inside


def test_unpack_verifies_and_finds_damage(packed, tmp_path):
    archive, _ = packed
    result = unpack_bundle(archive, tmp_path)
    bundle = tmp_path / "supervised_seg_isic"
    assert result.ok, result.problems
    assert result.checked == len((bundle / CHECKSUMS).read_text().splitlines())
    assert stat.S_IMODE((bundle / "models" / "model.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((bundle / "scripts").stat().st_mode) == 0o755
    with pytest.raises(FileExistsError, match="exists"):
        unpack_bundle(archive, tmp_path)
    (bundle / "configs" / "inference.json").write_text("{}")
    (bundle / "docs" / "README.md").unlink()
    problems = verify_bundle(bundle).problems
    assert any("inference.json: checksum differs" in p for p in problems) and any("README.md: missing" in p for p in problems)
    with pytest.raises(SystemExit):
        S4MI().verify(str(bundle))


def test_unpack_refuses_archives_that_write_outside_their_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("bundle/configs/metadata.json", "{}")
        zipped.writestr("bundle/../../outside.txt", "x")
    with pytest.raises(ValueError, match="not an s4mi bundle archive"):
        unpack_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


def test_weights_kept_apart_are_listed_by_hash_and_checked(packed, tmp_path):
    _, model_dir = packed
    result = pack_bundle(REPO / "bundles" / "supervised_seg_isic", tmp_path / "light.zip", model_dir=model_dir, weights_apart=True, weights_url="https://example.org/w")
    assert result.weights_dir == tmp_path / "light-weights" and (result.weights_dir / "models" / "model.pt").is_file()
    assert "models/model.pt" not in result.files and LARGE_FILES in result.files
    verified = unpack_bundle(result.archive, tmp_path / "out")
    assert verified.ok and verified.missing_weights == ["models/model.pt"]
    listing = (tmp_path / "out" / "supervised_seg_isic" / LARGE_FILES).read_text()
    assert 'url: "https://example.org/w/models/model.pt"' in listing and 'hash_type: "sha256"' in listing
    target = tmp_path / "out" / "supervised_seg_isic" / "models" / "model.pt"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"not the weights")
    assert any("SHA-256 differs" in p for p in verify_bundle(target.parents[1]).problems)
    target.write_bytes((result.weights_dir / "models" / "model.pt").read_bytes())
    checked = verify_bundle(target.parents[1])
    assert checked.ok and not checked.missing_weights


def _environment_without_the_package(folder: Path) -> Path:
    """A virtual environment that sees this interpreter's registry packages but not our package.

    Its .pth lists the site-packages folders; .pth files inside them (our editable install's) are not processed there.
    """
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
    Path(purelib.stdout.strip(), "registry.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_a_packed_bundle_runs_inference_checks_and_export_without_the_package(packed, tmp_path):
    archive, _ = packed
    python = _environment_without_the_package(tmp_path / "env")
    probe = subprocess.run([python, "-c", "import monai, torch\nimport s4mi_monai"], capture_output=True, text=True, cwd=tmp_path)
    if "No module named 's4mi_monai'" not in probe.stderr:
        pytest.skip(f"this environment cannot hide the installed package (not an editable install): {probe.stderr[-300:]}")
    assert unpack_bundle(archive, tmp_path / "shared").ok
    bundle = tmp_path / "shared" / "supervised_seg_isic"
    images = tmp_path / "images"
    write_image(images / "lesion.jpg", size=(96, 80), seed=1)
    write_image(images / "other.png", size=(70, 64), seed=2)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    configs, meta = bundle / "configs", str(bundle / "configs" / "metadata.json")
    commands = {
        "inference": ["run", "--config_file", str(configs / "inference.json"), "--input_dir", str(images), "--output_dir", str(tmp_path / "predictions")],
        "verify_net_in_out": ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", str(configs / "inference.json")],
        "verify_metadata": ["verify_metadata", "--meta_file", meta, "--filepath", str(bundle / "docs" / "meta_schema.json")],
        "ckpt_export": ["ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file", str(bundle / "models" / "model.pt"),
                        "--meta_file", meta, "--config_file", str(configs / "inference.json")],
    }  # fmt: skip
    for name, arguments in commands.items():
        done = subprocess.run([python, "-m", "monai.bundle", *arguments], capture_output=True, text=True, cwd=elsewhere, timeout=600)
        assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
        assert "s4mi_monai" not in done.stderr or str(bundle / "scripts") in done.stderr or "Traceback" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["lesion_mask.png", "lesion_overlay.png", "other_mask.png", "other_overlay.png"]
    assert (tmp_path / "model.ts").is_file()
    assert not (bundle / "predictions").exists()


@pytest.mark.slow
def test_a_bundle_folder_without_its_code_says_how_to_share_it(tmp_path):
    python = _environment_without_the_package(tmp_path / "env")
    probe = subprocess.run([python, "-c", "import s4mi_monai"], capture_output=True, text=True, cwd=tmp_path)
    if probe.returncode == 0:
        pytest.skip("this environment cannot hide the installed package (not an editable install)")
    import shutil

    copied = tmp_path / "copied"
    shutil.copytree(REPO / "bundles" / "supervised_seg_isic" / "configs", copied / "configs")
    done = subprocess.run(
        [python, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", str(copied / "configs" / "metadata.json"),
         "--config_file", str(copied / "configs" / "inference.json")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0
    assert "this bundle needs the s4mi_monai code" in done.stderr and "s4mi pack" in done.stderr
