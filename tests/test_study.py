"""Study specs: validation, grid expansion with stable ids and commands, derived datalists (no bundle runs here)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from s4mi_monai.cli import S4MI
from s4mi_monai.data.datalist import load_datalist
from s4mi_monai.study import SpecError, derive_datalist, expand_runs, format_override, load_spec, run_study
from s4mi_monai.study.spec import pretrained_outputs

REPO = Path(__file__).resolve().parents[1]
DEMO_DATALIST = str(REPO / "datalists" / "demo_isic2017.json")


def write_spec(folder: Path, name: str = "spec.json", **fields) -> Path:
    spec = {
        "name": "unit",
        "datalist": DEMO_DATALIST,
        "fractions": [0.1, 1.0],
        "seeds": [0, 1],
        "baseline": "supervised",
        "overrides": {"demo": True, "max_epochs": 1},
        "methods": [
            {"name": "supervised", "bundle": "supervised_cls_isic"},
            {"name": "cass", "bundle": "cass_isic", "pretrain": True, "overrides": {"pretrain_epochs": 1}},
        ],
    }
    spec.update(fields)
    path = folder / name
    if name.endswith((".yaml", ".yml")):
        import yaml

        path.write_text(yaml.safe_dump(spec))
    else:
        path.write_text(json.dumps(spec))
    return path


def test_format_override_reads_back_as_python_fire_parses_it():
    assert format_override(64) == "64"
    assert format_override(0.1) == "0.1"
    assert format_override(True) == "True"
    assert format_override(None) == "None"
    assert format_override("resnet18") == "resnet18"
    assert format_override([0.4, 1.0]) == "[0.4, 1.0]"
    with pytest.raises(TypeError, match="cannot pass a set"):
        format_override({1, 2})


def test_pretrained_outputs_are_read_from_the_bundle():
    assert pretrained_outputs(REPO / "bundles/dino_isic/configs/train.json") == {"pretrained_backbone": "pretrained_backbone.pt"}
    assert pretrained_outputs(REPO / "bundles/cass_isic/configs/train.json") == {
        "pretrained_cnn_backbone": "pretrained_cnn_backbone.pt",
        "pretrained_transformer_backbone": "pretrained_transformer_backbone.pt",
    }
    assert pretrained_outputs(REPO / "bundles/picie_seg_isic/configs/train.json") == {"pretrained_backbone": "pretrained_backbone.pt"}
    assert pretrained_outputs(REPO / "bundles/supervised_cls_isic/configs/train.json") == {}


def test_grid_expansion_ids_folders_and_commands(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    runs = expand_runs(spec, tmp_path / "out")
    ids = [run.id for run in runs]
    assert ids == [  # seed by seed, each pretraining just before its fine-tuning runs
        "supervised/f0.1-s0",
        "supervised/f1.0-s0",
        "cass/pretrain-s0",
        "cass/f0.1-s0",
        "cass/f1.0-s0",
        "supervised/f0.1-s1",
        "supervised/f1.0-s1",
        "cass/pretrain-s1",
        "cass/f0.1-s1",
        "cass/f1.0-s1",
    ]
    assert [run.id for run in expand_runs(load_spec(write_spec(tmp_path)), tmp_path / "out")] == ids  # stable
    by_id = {run.id: run for run in runs}
    pretrain, finetune = by_id["cass/pretrain-s1"], by_id["cass/f0.1-s1"]
    assert pretrain.is_pretraining and pretrain.fraction is None and pretrain.done_files == (
        "pretrained_cnn_backbone.pt",
        "pretrained_transformer_backbone.pt",
    )
    assert Path(pretrain.output_dir) == tmp_path / "out" / "pretrain" / "cass" / "s1"
    assert Path(finetune.output_dir) == tmp_path / "out" / "runs" / "cass" / "f0.1-s1"
    assert finetune.after == "cass/pretrain-s1"
    argv = shlex.split(finetune.command)
    assert argv[:5] == [sys.executable, "-m", "monai.bundle", "run", "finetune"]
    flags = dict(zip(argv[5::2], argv[6::2]))
    assert flags["--config_file"] == "bundles/cass_isic/configs/train.json" or flags["--config_file"].endswith("bundles/cass_isic/configs/train.json")
    assert flags["--label_fraction"] == "0.1" and flags["--seed"] == "1" and flags["--demo"] == "True"
    assert flags["--pretrain_epochs"] == "1" and flags["--max_epochs"] == "1"
    assert flags["--pretrained_cnn_backbone"] == str(Path(pretrain.output_dir) / "pretrained_cnn_backbone.pt")
    pretrain_flags = dict(zip(shlex.split(pretrain.command)[5::2], shlex.split(pretrain.command)[6::2]))
    assert "--label_fraction" not in pretrain_flags and shlex.split(pretrain.command)[4] == "pretrain"
    supervised = shlex.split(by_id["supervised/f1.0-s0"].command)
    assert supervised[4] == "training" and "--pretrained_cnn_backbone" not in supervised


def test_methods_can_share_one_pretraining_per_seed(tmp_path):
    stage_one = {"run_id": "pretrain_global", "outputs": {"pretrained_global_backbone": "pretrained_global_backbone.pt"}}
    methods = [
        {"name": "global", "bundle": "contrast_seg_isic", "run_id": "training", "pretrain": stage_one, "overrides": {"pretraining": "global"}},
        {"name": "global_local", "bundle": "contrast_seg_isic", "run_id": "training", "pretrain": {"from": "global"}},
    ]
    runs = expand_runs(load_spec(write_spec(tmp_path, methods=methods, baseline=None, fractions=[0.5])), tmp_path / "out")
    assert [run.id for run in runs] == [
        "global/pretrain-s0",
        "global/f0.5-s0",
        "global_local/f0.5-s0",
        "global/pretrain-s1",
        "global/f0.5-s1",
        "global_local/f0.5-s1",
    ]
    by_id = {run.id: run for run in runs}
    shared = by_id["global_local/f0.5-s1"]
    assert shared.after == "global/pretrain-s1"
    flags = dict(zip(shlex.split(shared.command)[5::2], shlex.split(shared.command)[6::2]))
    assert flags["--pretrained_global_backbone"] == str(Path(by_id["global/pretrain-s1"].output_dir) / "pretrained_global_backbone.pt")
    assert "--pretraining" not in flags and shlex.split(shared.command)[4] == "training"


def test_a_method_can_lay_a_bundle_preset_over_train_json(tmp_path):
    methods = [{"name": "dino_small", "bundle": "dino_isic", "presets": ["small_data.json"], "pretrain": True}]
    runs = expand_runs(load_spec(write_spec(tmp_path, methods=methods, baseline=None, fractions=[0.1])), tmp_path / "out")
    for run in runs:
        argv = shlex.split(run.command)
        configs = argv[argv.index("--config_file") + 1]
        assert [Path(name).name for name in json.loads(configs.replace("'", '"'))] == ["train.json", "small_data.json"]
    for presets, message in ((["nothing.json"], "'nothing.json' is not a preset of dino_isic"), ("small_data.json", "presets is a list")):
        methods[0]["presets"] = presets
        with pytest.raises(SpecError, match=message):
            load_spec(write_spec(tmp_path, methods=methods, baseline=None))


@pytest.mark.parametrize(
    "pretrain, message",
    [
        ({"from": "nobody"}, "'nobody' is not a method with its own pretraining"),
        ({"from": "supervised"}, "'supervised' is not a method with its own pretraining"),
        ({"from": "dino", "run_id": "pretrain"}, "takes no other field"),
        ({"from": "dino"}, "dino pretrains dino_isic, but shared fine-tunes cass_isic"),
    ],
)
def test_shared_pretraining_must_name_a_pretraining_of_the_same_bundle(tmp_path, pretrain, message):
    methods = [
        {"name": "supervised", "bundle": "supervised_cls_isic"},
        {"name": "dino", "bundle": "dino_isic", "pretrain": True},
        {"name": "shared", "bundle": "cass_isic", "pretrain": pretrain},
    ]
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(tmp_path, methods=methods))


def test_yaml_spec_and_per_method_fractions(tmp_path):
    methods = [{"name": "supervised", "bundle": "supervised_cls_isic", "fractions": [0.5]}, {"name": "dino", "bundle": "dino_isic"}]
    spec = load_spec(write_spec(tmp_path, "spec.yaml", methods=methods, baseline=None))
    runs = expand_runs(spec, tmp_path / "out")
    assert [run.id for run in runs] == ["supervised/f0.5-s0", "dino/f0.1-s0", "dino/f1.0-s0", "supervised/f0.5-s1", "dino/f0.1-s1", "dino/f1.0-s1"]
    assert spec.name == "unit" and spec.baseline is None


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"fractions": [0.0, 0.5]}, "label fraction 0.0 is not a number in"),
        ({"fractions": [0.1, 0.1]}, "repeat a value"),
        ({"seeds": [0, "1"]}, "seeds must be a non-empty list of integers"),
        ({"datalist": "nowhere.json"}, "datalist nowhere.json does not exist"),
        ({"methods": [{"name": "x", "bundle": "no_such_bundle"}]}, "bundle 'no_such_bundle' not found"),
        ({"methods": [{"name": "x y", "bundle": "dino_isic"}]}, "must be letters, digits"),
        ({"methods": [{"name": "x", "bundle": "dino_isic"}, {"name": "x", "bundle": "cass_isic"}]}, "repeat a name"),
        ({"methods": [{"name": "x", "bundle": "dino_isic", "overrides": {"seed": 3}}]}, r"\['seed'\] are set by the study"),
        ({"methods": [{"name": "x", "bundle": "supervised_cls_isic", "pretrain": True}]}, "has no pretraining outputs"),
        ({"baseline": "nobody"}, "baseline 'nobody' is not one of the methods"),
        ({"extra": 1}, r"unknown field\(s\) \['extra'\]"),
        ({"claims": {"method": "cass"}}, "claims must be a list"),
        ({"claims": [{"method": "nobody"}]}, r"claims\[0\]: method 'nobody' is not one of the methods"),
        ({"claims": [{"method": "cass/transformer", "versus": "dino"}]}, "versus 'dino' is not one of the methods"),
        ({"claims": [{"method": "cass/vit"}]}, r"method 'cass/vit': cass has the networks \['cnn', 'transformer'\]"),
        ({"claims": [{"method": "cass", "versus": "supervised/cnn"}]}, r"versus 'supervised/cnn': supervised trains one network"),
        ({"claims": [{"method": "cass", "fractions": [0.5]}]}, r"cass does not run at fractions \[0.5\]"),
        ({"claims": [{"method": "cass", "versus_fraction": 0.05}]}, "supervised does not run at fraction 0.05"),
        ({"claims": [{"method": "cass", "margin": -0.1}]}, "margin must be a number >= 0"),
        ({"claims": [{"method": "cass", "typo": 1}]}, r"unknown field\(s\) \['typo'\]"),
    ],
)
def test_bad_specs_are_refused_with_the_file_and_field(tmp_path, fields, message):
    path = write_spec(tmp_path, **fields)
    with pytest.raises(SpecError, match=message) as error:
        load_spec(path)
    assert str(path) in str(error.value) or "datalist" in message


def test_missing_fractions_go_into_a_derived_nested_datalist(tmp_path):
    spec = load_spec(write_spec(tmp_path, fractions=[0.02, 0.1, 0.25, 1.0]))
    path, message = derive_datalist(spec, tmp_path)
    assert Path(path) == tmp_path / "datalist.json" and "0.02" in message and "0.25" in message
    original, derived = load_datalist(DEMO_DATALIST), load_datalist(path)
    for key, images in original["label_fractions"].items():
        assert derived["label_fractions"][key] == images  # existing subsets unchanged
    keys = sorted(derived["label_fractions"], key=float)
    for smaller, larger in zip(keys, keys[1:]):
        assert set(derived["label_fractions"][smaller]) <= set(derived["label_fractions"][larger])
    classes = {item["image"]: item["label"] for item in derived["training"]}
    assert {classes[image] for image in derived["label_fractions"]["0.02"]} == {0, 1, 2}  # stratified: every class kept
    assert derived["dataset_dir"] == original["dataset_dir"] and derived["provenance"]["added_label_fractions"] == ["0.02", "0.25"]
    runs = expand_runs(spec, tmp_path / "out", path)
    assert all(f"--datalist {path}" in run.command for run in runs)
    assert derive_datalist(load_spec(write_spec(tmp_path)), tmp_path) == (spec.datalist, None)  # nothing missing: the spec's own


def test_a_hand_edited_non_nested_datalist_is_refused(tmp_path):
    datalist = json.loads(Path(DEMO_DATALIST).read_text())
    datalist["dataset_dir"] = str(load_datalist(DEMO_DATALIST)["dataset_dir"])
    datalist["label_fractions"]["0.3"] = datalist["label_fractions"]["0.3"][:2]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(datalist))
    spec = load_spec(write_spec(tmp_path, datalist=str(edited), fractions=[0.2, 1.0]))
    with pytest.raises(SpecError, match="does not contain"):
        derive_datalist(spec, tmp_path)


def test_dry_run_writes_the_plan_and_commands_and_runs_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path)
    text = S4MI().study(str(spec), str(tmp_path / "out"), jobs=2, threads=4, dry_run=True)
    assert "10 runs planned" in text
    plan = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [run["id"] for run in plan["runs"]][:3] == ["supervised/f0.1-s0", "supervised/f1.0-s0", "cass/pretrain-s0"] and plan["baseline"] == "supervised"
    commands = (tmp_path / "out" / "commands.sh").read_text().splitlines()
    assert sum(line.startswith("OMP_NUM_THREADS=2 ") for line in commands) == 10
    assert "to run: OMP_NUM_THREADS=2" in capsys.readouterr().out
    assert not (tmp_path / "out" / "runs").exists()


def test_a_run_started_with_another_command_is_refused(tmp_path):
    spec = write_spec(tmp_path)
    run_study(spec, tmp_path / "out", dry_run=True)
    first = expand_runs(load_spec(spec), tmp_path / "out")[2]
    Path(first.output_dir).mkdir(parents=True)
    (Path(first.output_dir) / "study_run.json").write_text(json.dumps({"argv": [*first.argv[:-1], "7"]}))
    with pytest.raises(SpecError, match="started with a different command"):
        run_study(spec, tmp_path / "out", dry_run=True)


def test_the_documented_demo_spec_expands_to_its_24_runs():
    spec = load_spec(REPO / "docs" / "studies" / "demo.json")
    runs = expand_runs(spec, "results/demo_study")
    assert len(runs) == 24 and sum(run.is_pretraining for run in runs) == 6
    assert spec.baseline == "supervised" and spec.fractions == (0.05, 1.0) and spec.seeds == (0, 1, 2)


def test_a_committed_study_resumes_in_a_fresh_clone_without_pretraining_again(tmp_path):
    """The study folder keeps results, not weights; run again where only results exist, nothing reruns."""
    spec = write_spec(tmp_path, methods=[{"name": "cass", "bundle": "cass_isic", "pretrain": True}], fractions=[0.1], seeds=[0], baseline=None)
    out = tmp_path / "study"
    finetune, pretrain = (out / "runs" / "cass" / "f0.1-s0"), (out / "pretrain" / "cass" / "s0")
    for folder, files in ((finetune, ["metrics.json", "test_samples.json", "model.pt", "checkpoint.pt"]), (pretrain, ["history.json", "run.log"])):
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_text("{}")
    (pretrain / "pretraining").mkdir()
    (pretrain / "pretraining" / "history.json").write_text("{}")

    lines: list[str] = []
    result = run_study(spec, out, echo=lines.append)  # the pretraining's weights are gone, but nothing needs them
    assert [(o.run.id, o.status, o.reason) for o in result.outcomes] == [
        ("cass/pretrain-s0", "skipped", "every run that starts from it has finished"),
        ("cass/f0.1-s0", "skipped", "finished before"),
    ]

    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=out, check=True)
    listed = subprocess.run(["git", "add", "--dry-run", "."], cwd=out, capture_output=True, text=True, check=True).stdout
    kept = sorted(line.split("'")[1] for line in listed.splitlines())
    assert kept == [
        ".gitignore",
        "commands.sh",
        "pretrain/cass/s0/history.json",
        "pretrain/cass/s0/pretraining/history.json",
        "runs/cass/f0.1-s0/metrics.json",
        "runs/cass/f0.1-s0/test_samples.json",
        "status.json",
        "study.json",
        "study.log",
    ]


def test_an_override_that_names_no_knob_is_refused_with_the_closest_knobs(tmp_path):
    methods = [{"name": "supervised", "bundle": "supervised_cls_isic", "overrides": {"max_iteration": 100}}]
    with pytest.raises(SpecError, match=r"methods\[0\] \(supervised\): overrides name 'max_iteration'.*did you mean max_iterations"):
        load_spec(write_spec(tmp_path, methods=methods))
    with pytest.raises(SpecError, match="the spec's overrides name 'imagesize'"):
        load_spec(write_spec(tmp_path, overrides={"imagesize": 64}))
    preset = [{"name": "dino", "bundle": "dino_isic", "presets": ["small_data.json"], "overrides": {"n_local_crops": 4}}]
    assert load_spec(write_spec(tmp_path, methods=preset, baseline=None)).methods[0].overrides == {"n_local_crops": 4}


@pytest.mark.parametrize("name", ["classification", "segmentation", "classification_gpu", "segmentation_gpu"])
def test_the_label_efficiency_specs_expand_with_three_seeds_and_their_claims(tmp_path, name):
    raw = json.loads((REPO / "docs" / "studies" / f"isic2017_label_efficiency_{name}.json").read_text())
    fields = {key: value for key, value in raw.items() if key != "name"}  # write_spec's name is the file's
    spec = load_spec(write_spec(tmp_path, **{**fields, "datalist": DEMO_DATALIST}))  # the real datalist is made from ../shared
    runs = expand_runs(spec, "results/study")
    assert spec.seeds == (0, 1, 2) and spec.claims and {run.seed for run in runs} == {0, 1, 2}
    assert any("Paper claim" in claim.name for claim in spec.claims)
