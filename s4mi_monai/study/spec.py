"""Study specs: methods (bundle + overrides) crossed with label fractions and seeds, expanded into runs.

A spec is a JSON or YAML file (example and field list: ``docs/studies/README.md``)::

    {"name": "demo", "datalist": "datalists/demo_isic2017.json",
     "fractions": [0.1, 1.0], "seeds": [0, 1], "baseline": "supervised",
     "overrides": {"image_size": 64},
     "methods": [{"name": "supervised", "bundle": "supervised_cls_isic"},
                 {"name": "dino", "bundle": "dino_isic", "pretrain": true}]}

Every run is an ordinary bundle command (``python -m monai.bundle run ...``), so a study adds no second
training path: the command written for a run is the one executed, and copying it reruns (or resumes)
that run. A method with ``pretrain`` is pretrained once per seed on every training image (no labels are
read) and fine-tuned from that at each fraction, as the S4MI study does; its pretraining is a run of its
own that the fine-tuning runs wait for.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s4mi_monai.data.splits import fraction_key
from s4mi_monai.study.claims import Claim, parse_claims

__all__ = ["Method", "Run", "StudySpec", "SpecError", "expand_runs", "format_override", "load_spec"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PRETRAINED_OUTPUT = re.compile(r"^\$os\.path\.join\(@output_dir, '([^']+)'\)$")
BUNDLE_CONFIGS = ("train.json", "evaluate.json", "inference.json", "metadata.json", "multi_gpu_train.json")
"""A bundle's own config files; any other ``configs/*.json`` is a preset to lay over ``train.json``."""
SET_BY_STUDY = ("datalist", "dataset_dir", "label_fraction", "seed", "output_dir")
SPEC_KEYS = {"name", "datalist", "dataset_dir", "fractions", "seeds", "overrides", "baseline", "metrics", "methods", "claims"}
METHOD_KEYS = {"name", "bundle", "presets", "overrides", "run_id", "pretrain", "fractions"}
PRETRAIN_KEYS = {"run_id", "overrides", "outputs", "from"}


class SpecError(ValueError):
    """A study spec that cannot run; the message names the file and the field."""


@dataclass(frozen=True)
class Pretraining:
    """A method's label-free stage, run once per seed; ``outputs`` maps fine-tuning knobs to the files it writes.

    ``source`` names the method whose pretraining runs are shared (``"pretrain": {"from": METHOD}``): ablations that
    differ only after pretraining then start from the same weights, which pairs them and saves the pretraining cost.
    """

    run_id: str
    overrides: dict[str, Any]
    outputs: dict[str, str]
    source: str | None = None


@dataclass(frozen=True)
class Method:
    """One row of the study: a bundle and its overrides."""

    name: str
    bundle: str
    config_file: str
    overrides: dict[str, Any]
    run_id: str = "training"
    pretrain: Pretraining | None = None
    fractions: tuple[float, ...] | None = None
    presets: tuple[str, ...] = ()

    @property
    def config_argument(self) -> str:
        """``--config_file``: ``train.json``, or with presets the list MONAI lays over it (``["train.json", "x.json"]``)."""
        if not self.presets:
            return self.config_file
        return json.dumps([self.config_file, *self.presets])


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec (see the module docstring)."""

    name: str
    datalist: str
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    dataset_dir: str | None = None
    baseline: str | None = None
    metrics: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()
    path: str = ""


@dataclass
class Run:
    """One bundle command of the study: a pretraining (``fraction`` None) or a training at one fraction and seed."""

    id: str
    method: str
    bundle: str
    seed: int
    fraction: float | None
    output_dir: str
    argv: list[str]
    done_files: tuple[str, ...]
    after: str | None = None

    @property
    def command(self) -> str:
        """The exact shell command, to copy and rerun (it resumes a killed run)."""
        return shlex.join(self.argv)

    @property
    def is_pretraining(self) -> bool:
        return self.fraction is None

    def is_done(self) -> bool:
        return all(Path(self.output_dir, name).is_file() for name in self.done_files)


def format_override(value: Any) -> str:
    """A knob value as the bundle command line (python-fire) reads it back: ``None``, ``True``, ``[0.4, 1.0]``, ``64``."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return repr(json.loads(json.dumps(value)))  # plain Python literals, no numpy/yaml types
    raise TypeError(f"cannot pass a {type(value).__name__} on the command line: {value!r}")


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"{path}: not valid YAML ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: not valid JSON ({err})") from None


def _locate_bundle(bundle: str, base: Path, where: str) -> Path:
    """A bundle's ``configs/train.json`` from a bundle name (``bundles/<name>``) or a bundle folder."""
    from s4mi_monai.bundle import REPO_ROOT

    given = Path(bundle)
    candidates = [given, base / given] if given.is_absolute() or len(given.parts) > 1 else []
    candidates += [Path.cwd() / "bundles" / bundle, REPO_ROOT / "bundles" / bundle]
    for folder in candidates:
        config = folder / "configs" / "train.json"
        if config.is_file():
            return config
    raise SpecError(f"{where}: bundle {bundle!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter, copyable commands)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _check_overrides(overrides: Any, where: str) -> dict[str, Any]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise SpecError(f"{where}: overrides must be a mapping of bundle knobs to values, got {type(overrides).__name__}")
    clash = sorted(set(overrides) & set(SET_BY_STUDY))
    if clash:
        raise SpecError(f"{where}: {clash} are set by the study for every run (use the spec's datalist, fractions and seeds)")
    for key, value in overrides.items():
        try:
            format_override(value)
        except TypeError as err:
            raise SpecError(f"{where}: override {key!r}: {err}") from None
    return dict(overrides)


def _check_fractions(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise SpecError(f"{where}: fractions must be a non-empty list of numbers in (0, 1]")
    fractions = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise SpecError(f"{where}: label fraction {value!r} is not a number in (0, 1]")
        fractions.append(float(value))
    if len({fraction_key(f) for f in fractions}) != len(fractions):
        raise SpecError(f"{where}: fractions {list(values)} repeat a value")
    return tuple(sorted(fractions))


def _check_knobs(method: Method, spec_overrides: Mapping[str, Any], where: str) -> None:
    """Refuse overrides that name no knob of the method's bundle: the bundle command line would add them as new,
    unused config items and the run would go ahead with the default."""
    config_file = Path(method.config_file)
    knobs = set(json.loads(config_file.read_text()))
    for preset in method.presets:
        knobs |= set(json.loads(Path(preset).read_text()))
    pretrain_overrides = method.pretrain.overrides if method.pretrain is not None else {}
    for source, overrides in (("the spec's overrides", spec_overrides), ("overrides", method.overrides), ("pretrain.overrides", pretrain_overrides)):
        for key in overrides:
            knob = key.split("#")[0]
            if knob not in knobs:
                close = difflib.get_close_matches(knob, sorted(knobs), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise SpecError(f"{where}: {source} name {key!r}, which {method.bundle} has no knob for{hint}")


def method_branches(config_file: Path) -> tuple[str, ...]:
    """The networks a two-network bundle reports as rows of their own (``cnn``, ``transformer``); () for one network."""
    found = re.search(r"publish_branch\(@output_dir, @report_branch, (\[[^\]]*\])\)", config_file.read_text())
    return tuple(ast.literal_eval(found.group(1))) if found else ()


def _unknown(keys: Any, allowed: set[str], where: str) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise SpecError(f"{where}: unknown field(s) {extra}; allowed: {sorted(allowed)}")


def pretrained_outputs(config_file: Path) -> dict[str, str]:
    """The fine-tuning knobs a bundle's pretraining writes (``pretrained*`` knobs that default to a file in ``output_dir``)."""
    config = json.loads(config_file.read_text())
    outputs = {}
    for key, value in config.items():
        match = PRETRAINED_OUTPUT.match(value) if isinstance(value, str) and key.startswith("pretrained") else None
        if match:
            outputs[key] = match.group(1)
    return outputs


def _presets(value: Any, config_file: Path, where: str) -> tuple[str, ...]:
    """The bundle's preset files (``configs/<name>``) to lay over ``train.json``, in order."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(name, str) for name in value):
        raise SpecError(f"{where}: presets is a list of file names in the bundle's configs folder, got {value!r}")
    available = sorted(p.name for p in config_file.parent.glob("*.json") if p.name not in BUNDLE_CONFIGS)
    presets = []
    for name in value:
        preset = config_file.parent / name
        if not preset.is_file() or name in BUNDLE_CONFIGS:
            raise SpecError(f"{where}: {name!r} is not a preset of {config_file.parent.parent.name} (presets: {available})")
        presets.append(_display_path(preset))
    return tuple(presets)


def _pretraining(value: Any, config_file: Path, where: str) -> Pretraining | None:
    if value in (None, False):
        return None
    settings = {} if value is True else value
    if not isinstance(settings, Mapping):
        raise SpecError(f"{where}: pretrain must be true or a mapping with run_id, overrides, outputs")
    _unknown(settings, PRETRAIN_KEYS, where)
    if "from" in settings:
        if set(settings) != {"from"}:
            raise SpecError(f"{where}: pretrain.from shares another method's pretraining and takes no other field")
        return Pretraining(run_id="", overrides={}, outputs={}, source=str(settings["from"]))
    outputs = settings.get("outputs") or pretrained_outputs(config_file)
    if not outputs:
        raise SpecError(f"{where}: the bundle {config_file.parent.parent.name} has no pretraining outputs; give pretrain.outputs")
    return Pretraining(
        run_id=str(settings.get("run_id", "pretrain")),
        overrides=_check_overrides(settings.get("overrides"), f"{where}.overrides"),
        outputs={str(k): str(v) for k, v in outputs.items()},
    )


def _share_pretraining(method: Method, methods: Sequence[Method], where: str) -> Method:
    """Resolve ``pretrain.from``: the named method's pretraining (same bundle, its own pretraining), marked as shared."""
    if method.pretrain is None or method.pretrain.source is None:
        return method
    source = next((m for m in methods if m.name == method.pretrain.source), None)
    if source is None or source.pretrain is None or source.pretrain.source is not None:
        owners = [m.name for m in methods if m.pretrain is not None and m.pretrain.source is None]
        raise SpecError(f"{where}: {method.pretrain.source!r} is not a method with its own pretraining (those: {owners})")
    if source.bundle != method.bundle:
        raise SpecError(f"{where}: {source.name} pretrains {source.bundle}, but {method.name} fine-tunes {method.bundle}")
    return replace(method, pretrain=replace(source.pretrain, source=source.name))


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec; every problem is a :class:`SpecError` naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"study spec {path} does not exist")
    raw = _read(path)
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: a study spec is a mapping (see docs/studies/README.md)")
    _unknown(raw, SPEC_KEYS, str(path))
    for key in ("datalist", "fractions", "methods"):
        if key not in raw:
            raise SpecError(f"{path}: missing field {key!r}")
    base = path.parent
    datalist = Path(raw["datalist"])
    if not datalist.is_file() and (base / datalist).is_file():
        datalist = base / datalist
    if not datalist.is_file():
        raise SpecError(f"{path}: datalist {raw['datalist']} does not exist (paths are relative to the working directory)")
    fractions = _check_fractions(raw["fractions"], f"{path}: fractions")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, Sequence) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise SpecError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{path}: seeds {list(seeds)} repeat a value")
    if not isinstance(raw["methods"], Sequence) or not raw["methods"]:
        raise SpecError(f"{path}: methods must be a non-empty list")
    methods = []
    for index, entry in enumerate(raw["methods"]):
        where = f"{path}: methods[{index}]"
        if not isinstance(entry, Mapping) or "name" not in entry or "bundle" not in entry:
            raise SpecError(f"{where}: each method needs a name and a bundle")
        _unknown(entry, METHOD_KEYS, where)
        name = str(entry["name"])
        if not NAME_PATTERN.match(name):
            raise SpecError(f"{where}: method name {name!r} must be letters, digits, '_', '-' or '.' (it names folders)")
        config_file = _locate_bundle(str(entry["bundle"]), base, where)
        methods.append(
            Method(
                name=name,
                bundle=config_file.parent.parent.name,
                config_file=_display_path(config_file),
                overrides=_check_overrides(entry.get("overrides"), f"{where}.overrides"),
                run_id=str(entry.get("run_id", "finetune" if entry.get("pretrain") else "training")),
                pretrain=_pretraining(entry.get("pretrain"), config_file, f"{where}.pretrain"),
                fractions=_check_fractions(entry["fractions"], f"{where}.fractions") if "fractions" in entry else None,
                presets=_presets(entry.get("presets"), config_file, f"{where}.presets"),
            )
        )
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: method names {names} repeat a name")
    spec_overrides = _check_overrides(raw.get("overrides"), f"{path}: overrides")
    for index, method in enumerate(methods):
        _check_knobs(method, spec_overrides, f"{path}: methods[{index}] ({method.name})")
    methods = [_share_pretraining(method, methods, f"{path}: methods[{index}].pretrain.from") for index, method in enumerate(methods)]
    baseline = raw.get("baseline")
    if baseline is not None and str(baseline).split("/")[0] not in names:
        raise SpecError(f"{path}: baseline {baseline!r} is not one of the methods {names}")
    metrics = raw.get("metrics") or []
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise SpecError(f"{path}: metrics must be a list of metric names, got {metrics!r}")
    fractions_of = {m.name: m.fractions or fractions for m in methods}
    branches_of = {m.name: method_branches(Path(m.config_file)) for m in methods}
    claims = parse_claims(
        raw.get("claims"), fractions_of, None if baseline is None else str(baseline), f"{path}: claims", SpecError, branches_of
    )
    return StudySpec(
        name=str(raw.get("name") or path.stem),
        datalist=_display_path(datalist),
        fractions=fractions,
        seeds=tuple(int(s) for s in seeds),
        methods=tuple(methods),
        overrides=_check_overrides(raw.get("overrides"), f"{path}: overrides"),
        dataset_dir=raw.get("dataset_dir"),
        baseline=None if baseline is None else str(baseline),
        metrics=tuple(metrics),
        claims=claims,
        path=str(path),
    )


def _flags(overrides: Mapping[str, Any]) -> list[str]:
    flags = []
    for key, value in overrides.items():
        flags += [f"--{key}", format_override(value)]
    return flags


def _bundle_argv(run_id: str, method: Method, spec: StudySpec, datalist: str, seed: int, output_dir: str) -> list[str]:
    argv = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", method.config_argument, "--datalist", datalist]
    if spec.dataset_dir:
        argv += ["--dataset_dir", str(spec.dataset_dir)]
    return argv + ["--seed", str(seed), "--output_dir", output_dir]


def run_folder(out: str | Path, method: str, seed: int, fraction: float | None) -> Path:
    """Where a run writes: ``runs/<method>/f<fraction>-s<seed>``, or ``pretrain/<method>/s<seed>``."""
    if fraction is None:
        return Path(out) / "pretrain" / method / f"s{seed}"
    return Path(out) / "runs" / method / f"f{fraction_key(fraction)}-s{seed}"


def expand_runs(spec: StudySpec, out: str | Path, datalist: str | None = None) -> list[Run]:
    """Every run of the study in a stable order, with stable ids and folders.

    Seed by seed, and within a seed method by method, each pretraining just before its fine-tuning runs:
    a study cut short (a session that ends, a machine that is taken back) then holds whole seeds of every
    method, which the paired comparisons need, rather than every seed of the first methods only.
    ``datalist`` replaces the spec's (the derived datalist that adds missing fractions).
    """
    datalist = datalist or spec.datalist
    out = Path(_display_path(Path(out)))
    runs = []
    for seed in spec.seeds:
        for method in spec.methods:
            if method.pretrain is not None and method.pretrain.source is None:
                folder = run_folder(out, method.name, seed, None)
                argv = _bundle_argv(method.pretrain.run_id, method, spec, datalist, seed, str(folder))
                argv += _flags({**spec.overrides, **method.overrides, **method.pretrain.overrides})
                runs.append(
                    Run(f"{method.name}/pretrain-s{seed}", method.name, method.bundle, seed, None, str(folder), argv, tuple(method.pretrain.outputs.values()))
                )
            for fraction in method.fractions or spec.fractions:
                folder = run_folder(out, method.name, seed, fraction)
                argv = _bundle_argv(method.run_id, method, spec, datalist, seed, str(folder))
                argv += ["--label_fraction", format_override(fraction)]
                argv += _flags({**spec.overrides, **method.overrides})
                after = None
                if method.pretrain is not None:
                    owner = method.pretrain.source or method.name
                    pretrain_folder = run_folder(out, owner, seed, None)
                    argv += _flags({knob: str(pretrain_folder / name) for knob, name in method.pretrain.outputs.items()})
                    after = f"{owner}/pretrain-s{seed}"
                runs.append(
                    Run(f"{method.name}/f{fraction_key(fraction)}-s{seed}", method.name, method.bundle, seed, fraction, str(folder), argv, ("metrics.json",), after)
                )
    return runs
