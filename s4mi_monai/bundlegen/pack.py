"""Sharing a bundle: ``s4mi pack`` makes one archive a collaborator runs with MONAI alone; ``s4mi unpack`` checks it.

A packed bundle is the bundle folder plus what it needs from us (layout and use: ``docs/sharing.md``):

* ``scripts/s4mi_monai/``: the package's run-time code (not the generator, the study runner or the command line),
  which the configs load before an installed package (``@s4mi_monai``, :func:`s4mi_monai.bundlegen.parts.identity`);
* ``models/``: the trained weights with their ``model_info.json`` and ``metrics.json`` (per network for two-network
  bundles), or, with ``weights_apart``, a ``large_files.yml`` that lists them by path and SHA-256 (MONAI's
  ``download_large_files`` format) while the files go to a folder beside the archive;
* ``docs/meta_schema.json``: the MONAI metadata schema, so ``verify_metadata`` needs no download;
* ``checksums.sha256``: the SHA-256 of every other file (``sha256sum -c`` reads it).

The archive is reproducible (sorted entries, fixed timestamps); its files, and those ``s4mi unpack`` writes, are
readable by everyone (0644).
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import yaml

from s4mi_monai.io import atomic_write

__all__ = ["PackResult", "VerifyResult", "pack_bundle", "unpack_bundle", "verify_bundle"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = PACKAGE_ROOT / "resources" / "meta_schema.json"
BUILD_ONLY = ("bundlegen", "study", "cli.py")
"""Parts of the package a bundle never runs: they build bundles and studies, and need the command-line packages."""
MODEL_FILES = ("model.pt", "model_info.json", "metrics.json")
WEIGHT_SUFFIXES = (".pt", ".ts")
CHECKSUMS = "checksums.sha256"
LARGE_FILES = "large_files.yml"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
DIR_MODE = 0o755


@dataclass
class PackResult:
    archive: Path
    files: list[str]
    weights: list[str]
    weights_dir: Path | None = None


@dataclass
class VerifyResult:
    bundle: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    missing_weights: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_code() -> dict[str, Path]:
    """``scripts/s4mi_monai/...`` -> source file: the package's Python modules and resources a bundle runs."""
    files = {}
    for path in sorted(PACKAGE_ROOT.rglob("*")):
        relative = path.relative_to(PACKAGE_ROOT)
        if not path.is_file() or "__pycache__" in relative.parts or relative.parts[0] in BUILD_ONLY:
            continue
        if path.suffix in (".py", ".json"):
            files[f"scripts/s4mi_monai/{relative.as_posix()}"] = path
    return files


def model_files(model_dir: Path) -> dict[str, Path]:
    """``models/...`` -> file: each trained network's weights, settings and test metrics (its own folder for a branch)."""
    files = {}
    for folder in [model_dir, *sorted(p for p in model_dir.iterdir() if p.is_dir())]:
        if not (folder / "model.pt").is_file():
            continue
        prefix = "models" if folder == model_dir else f"models/{folder.name}"
        files.update({f"{prefix}/{name}": folder / name for name in MODEL_FILES if (folder / name).is_file()})
    return files


def _bundle_files(bundle: Path) -> dict[str, Path]:
    files = {"LICENSE": bundle / "LICENSE", "docs/README.md": bundle / "docs" / "README.md"}
    files.update({f"configs/{p.name}": p for p in sorted((bundle / "configs").iterdir()) if p.suffix in (".json", ".conf")})
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing or not (bundle / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle folder (missing {missing or ['configs/metadata.json']})")
    return files


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, ZIP_TIME)
    info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _large_files_yaml(entries: list[tuple[str, str]], url: str | None) -> str:
    lines = ["large_files:"]
    for path, digest in entries:
        lines += [f'  - path: "{path}"', f'    url: "{(url.rstrip("/") + "/" + path) if url else ""}"', f'    hash_val: "{digest}"', '    hash_type: "sha256"']
    return "\n".join(lines) + "\n"


def pack_bundle(bundle: str | Path, out: str | Path, model_dir: str | Path | None = None, weights_apart: bool = False, weights_url: str | None = None) -> PackResult:
    """Write ``out`` (a .zip holding the folder ``<bundle name>/``); see the module docstring.

    ``model_dir`` is a training's output folder (default: the bundle's ``models/``); without a trained model the
    archive still runs training and says so. ``weights_apart`` keeps the weight files out of the archive, in
    ``<out stem>-weights/``, and lists them in ``large_files.yml`` (with ``weights_url`` as the folder they will be
    downloaded from, if known).
    """
    bundle, out = Path(bundle), Path(out)
    name = bundle.resolve().name
    files = _bundle_files(bundle)
    files.update(runtime_code())
    source = Path(model_dir) if model_dir else bundle / "models"
    models = model_files(source) if source.is_dir() else {}
    if model_dir and not models:
        raise FileNotFoundError(f"{model_dir} holds no trained model (model.pt)")
    weights = sorted(path for path in models if path.endswith(WEIGHT_SUFFIXES))
    apart = set(weights) if weights_apart else set()
    files.update({path: source for path, source in models.items() if path not in apart})
    contents = {path: source.read_bytes() for path, source in files.items()}
    contents["docs/meta_schema.json"] = SCHEMA.read_bytes()
    weights_dir = None
    if apart:
        weights_dir = out.with_name(f"{out.stem}-weights")
        entries = []
        for path in weights:
            target = weights_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda stream, source=models[path]: stream.write(source.read_bytes()))
            entries.append((path, sha256(target)))
        contents[LARGE_FILES] = _large_files_yaml(entries, weights_url).encode()
    contents[CHECKSUMS] = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in sorted(contents.items())).encode()

    def write_archive(stream: BinaryIO) -> None:
        with zipfile.ZipFile(stream, "w") as archive:
            for path in sorted(contents):
                _zip_entry(archive, f"{name}/{path}", contents[path])

    atomic_write(out, write_archive)
    return PackResult(out, sorted(contents), weights, weights_dir)


def verify_bundle(bundle: str | Path) -> VerifyResult:
    """Check a packed bundle folder: every checksum, the weights of ``large_files.yml``, and the metadata's schema."""
    bundle = Path(bundle)
    result = VerifyResult(bundle)
    listing = bundle / CHECKSUMS
    if not listing.is_file():
        result.problems.append(f"{listing} is missing: not a packed bundle (s4mi pack makes one)")
        return result
    for line in listing.read_text().splitlines():
        digest, relative = line.split("  ", 1)
        path = bundle / relative
        if not path.is_file():
            result.problems.append(f"{path}: missing")
        elif sha256(path) != digest:
            result.problems.append(f"{path}: checksum differs from {CHECKSUMS} (changed or damaged)")
        result.checked += 1
    if (bundle / LARGE_FILES).is_file():
        for entry in yaml.safe_load((bundle / LARGE_FILES).read_text())["large_files"]:
            path = bundle / entry["path"]
            if not path.is_file():
                result.missing_weights.append(entry["path"])
            elif sha256(path) != entry.get("hash_val"):
                result.problems.append(f"{path}: SHA-256 differs from {LARGE_FILES} (a different or damaged weight file)")
            else:
                result.checked += 1
    problem = _schema_problem(bundle)
    if problem:
        result.problems.append(problem)
    return result


def _schema_problem(bundle: Path) -> str | None:
    from monai.bundle import verify_metadata

    try:
        schema = bundle / "docs" / "meta_schema.json"  # its checksum is checked above; MONAI checks it again
        verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema), hash_val=sha256(schema), hash_type="sha256")
    except Exception as err:  # noqa: BLE001 - any failure of MONAI's check is the bundle's problem to report
        return f"{bundle / 'configs' / 'metadata.json'}: does not verify against docs/meta_schema.json ({err})"
    return None


def unpack_bundle(archive: str | Path, out: str | Path) -> VerifyResult:
    """Extract ``archive`` below ``out`` (refusing paths that leave it) with readable modes, then :func:`verify_bundle`."""
    archive, out = Path(archive), Path(out)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        tops = {name.split("/", 1)[0] for name in names}
        unsafe = [name for name in names if name.startswith("/") or ".." in Path(name).parts]
        if unsafe or len(tops) != 1:
            raise ValueError(f"{archive}: not an s4mi bundle archive (entries outside one bundle folder: {unsafe or sorted(tops)})")
        bundle = out / tops.pop()
        if bundle.exists():
            raise FileExistsError(f"{bundle} exists; unpack somewhere else or remove it first")
        for name in names:
            target = out / name
            if name.endswith("/"):
                continue
            target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            target.write_bytes(zipped.read(name))
            os.chmod(target, FILE_MODE)
    for folder in [bundle, *(p for p in bundle.rglob("*") if p.is_dir())]:
        os.chmod(folder, DIR_MODE)
    return verify_bundle(bundle)


def describe(result: VerifyResult) -> str:
    """What ``s4mi unpack`` / ``s4mi verify`` print."""
    lines = [f"{result.bundle}: {result.checked} files checked"]
    lines += [f"  problem: {problem}" for problem in result.problems]
    if result.missing_weights:
        lines.append(
            f"  weights not here yet: {', '.join(result.missing_weights)}; fetch them with "
            f"`python -m monai.bundle download_large_files --bundle_path {result.bundle}` (or copy them in) and verify again"
        )
    if result.ok:
        lines.append(f"  ok: run it with `python -m monai.bundle run --config_file {result.bundle}/configs/inference.json --input_dir IMAGES`")
    return "\n".join(lines)


def manifest(result: PackResult) -> str:
    """What ``s4mi pack`` prints."""
    code = sum(path.startswith("scripts/") for path in result.files)
    lines = [f"wrote {result.archive} ({len(result.files)} files, {code} of them the bundle's code in scripts/)"]
    if not result.weights:
        lines.append("  no trained model: the archive trains and evaluates, but inference needs models/model.pt")
    elif result.weights_dir:
        lines.append(f"  weights kept apart in {result.weights_dir} and listed in {LARGE_FILES}: {', '.join(result.weights)}")
    else:
        lines.append(f"  weights inside: {', '.join(result.weights)}")
    return "\n".join(lines)

