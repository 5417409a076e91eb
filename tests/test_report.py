"""Study reports: per-sample records, intervals and paired comparisons on a fake study folder, golden tables, figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4mi_monai.cli import S4MI
from s4mi_monai.metrics import classification_metrics, metrics_from_counts, paired_bootstrap, t_interval
from s4mi_monai.metrics.samples import PerImageRecords, read_samples, write_samples
from s4mi_monai.metrics.statistics import Interval, PairedComparison
from s4mi_monai.study import expand_runs, load_spec, run_study
from s4mi_monai.study.claims import MAX_SEEDS_TO_DECIDE, MIN_SEEDS, judge, seeds_to_decide
from s4mi_monai.study.page import PageError, update_page
from s4mi_monai.study.report import build_report, claims_csv, comparisons_csv, markdown_report, markdown_table, table_csv, write_report

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[1]
CLASSES = ["nevus", "melanoma", "seborrheic_keratosis"]
N_TEST = 40
# accuracy of each fake method: the better the method, the more test images get the right class
SKILL = {"supervised": {0.1: 0.55, 1.0: 0.75}, "dino": {0.1: 0.65, 1.0: 0.8}}


def fake_samples(skill: float, seed: int) -> dict:
    """Deterministic softmax outputs on N_TEST images: right with probability ``skill``."""
    rng = np.random.default_rng(seed)
    targets = np.arange(N_TEST) % 3
    predicted = np.where(rng.random(N_TEST) < skill, targets, (targets + 1 + rng.integers(0, 2, N_TEST)) % 3)
    logits = rng.normal(0, 0.5, (N_TEST, 3))
    logits[np.arange(N_TEST), predicted] += 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "task": "classification",
        "options": {"class_names": CLASSES, "multi_label": False, "threshold": 0.5, "challenge": None},
        "probabilities": probabilities,
        "targets": targets.astype(np.float64),
    }


def write_fake_run(folder: Path, samples: dict, images: list[str], settings: dict, branches: dict | None = None) -> None:
    """What a bundle leaves in a finished run folder: metrics.json and test_samples.json (per branch if any)."""
    folder.mkdir(parents=True, exist_ok=True)
    test = classification_metrics(samples["probabilities"], samples["targets"], **samples["options"])
    record = {"test": test, "validation": None, "settings": settings}
    if branches:
        record["branches"] = {}
        for branch, branch_samples in branches.items():
            write_samples(folder / branch / "test_samples.json", branch_samples, images)
            metrics = classification_metrics(branch_samples["probabilities"], branch_samples["targets"], **branch_samples["options"])
            record["branches"][branch] = {"test": metrics, "validation": None}
        settings["reported_branch"] = next(iter(branches))
    write_samples(folder / "test_samples.json", samples, images)
    (folder / "metrics.json").write_text(json.dumps(record, default=float, allow_nan=True))


@pytest.fixture
def fake_study(tmp_path: Path) -> Path:
    return make_fake_study(tmp_path)


def make_fake_study(tmp_path: Path, **fields) -> Path:
    """A study folder as `s4mi study` leaves it: supervised and DINO at 10 % and 100 %, seeds 0-2; one DINO run failed."""
    spec = {
        "name": "fake",
        "datalist": str(REPO / "datalists" / "demo_isic2017.json"),
        "fractions": [0.1, 1.0],
        "seeds": [0, 1, 2],
        "baseline": "supervised",
        "methods": [{"name": "supervised", "bundle": "supervised_cls_isic"}, {"name": "dino", "bundle": "dino_isic"}],
        **fields,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    study = tmp_path / "study"
    run_study(tmp_path / "spec.json", study, dry_run=True, echo=lambda line: None)
    images = [f"img_{i:03d}.jpg" for i in range(N_TEST)]
    for run in expand_runs(load_spec(tmp_path / "spec.json"), study):
        folder = Path(run.output_dir)
        if run.id == "dino/f1.0-s2":
            folder.mkdir(parents=True)
            (folder / "run.log").write_text("epoch 1\nRuntimeError: CUDA out of memory (fake)\n")
            continue
        samples = fake_samples(SKILL[run.method][run.fraction], seed=100 * run.seed + int(run.fraction * 10) + 7 * (run.method == "dino"))
        order = list(range(N_TEST)) if run.method == "supervised" else list(reversed(range(N_TEST)))  # pairing must go by image
        samples = {**samples, "probabilities": samples["probabilities"][order], "targets": samples["targets"][order]}
        write_fake_run(folder, samples, [images[i] for i in order], {"bundle": run.bundle, "label_fraction": run.fraction, "seed": run.seed})
    return study


def test_samples_reproduce_the_evaluator_and_align_by_image(tmp_path):
    samples = fake_samples(0.7, seed=1)
    images = [f"i{k}" for k in range(N_TEST)]
    write_samples(tmp_path / "test_samples.json", samples, images)
    loaded = read_samples(tmp_path)
    assert loaded.metrics() == classification_metrics(samples["probabilities"], samples["targets"], **samples["options"])
    rows = np.array([0, 0, 5, 7, 9, 9, 12, 30])
    expected = classification_metrics(samples["probabilities"][rows], samples["targets"][rows], **samples["options"])
    assert loaded.metric("f1_macro", rows) == pytest.approx(expected["f1_macro"])
    assert loaded.metric("recall_per_class.melanoma") == pytest.approx(loaded.metrics()["recall_per_class"]["melanoma"])
    assert math.isnan(loaded.metric("no_such_metric"))
    reversed_images = images[::-1]
    aligned = loaded.aligned_to(reversed_images)
    assert aligned.images == reversed_images and np.array_equal(aligned.arrays["targets"], samples["targets"][::-1])
    with pytest.raises(ValueError, match="tested on different images"):
        loaded.aligned_to([*images[:-1], "other"])
    counts = np.array([[[3, 1, 0]], [[0, 0, 0]], [[2, 2, 2]]])
    segmentation = PerImageRecords("segmentation", {"empty_policy": "report"}, {"counts": counts}, ["a", "b", "c"])
    assert segmentation.metrics() == metrics_from_counts(counts, "report")
    with pytest.raises(ValueError, match="differ in length"):
        PerImageRecords("segmentation", {}, {"counts": counts}, ["a"])
    with pytest.raises(FileNotFoundError, match="no per-sample test records"):
        read_samples(tmp_path / "missing")


def test_report_of_a_fake_study_matches_the_golden_tables(fake_study):
    report = build_report([fake_study], n_boot=200)
    assert report.methods == ["supervised", "dino"] and report.fractions == [0.1, 1.0] and report.baseline == "supervised"
    assert (GOLDEN / "report.md").read_text() == markdown_report(report).replace(str(fake_study), "STUDY")
    assert (GOLDEN / "table_f1_macro.csv").read_text() == table_csv(report, "f1_macro")
    assert (GOLDEN / "comparisons.csv").read_text() == comparisons_csv(report)


def test_cells_and_comparisons_against_direct_computations(fake_study):
    report = build_report([fake_study], metrics=["f1_macro"], n_boot=200)
    supervised = [read_samples(fake_study / "runs" / "supervised" / f"f1.0-s{s}") for s in range(3)]
    cell = report.cells[("f1_macro", "supervised", 1.0)]
    assert cell.seeds == (0, 1, 2)
    assert cell.interval == t_interval([s.metric("f1_macro") for s in supervised])
    dino = [read_samples(fake_study / "runs" / "dino" / f"f1.0-s{s}").aligned_to(supervised[s].images) for s in range(2)]
    comparison, t_p = report.comparisons[("f1_macro", "dino", 1.0)]
    expected = paired_bootstrap([d.statistic("f1_macro") for d in dino], [s.statistic("f1_macro") for s in supervised[:2]], N_TEST, n_boot=400)
    assert comparison == expected and comparison.n_seeds == 2  # the failed seed-2 run is left out of the pairing
    assert math.isnan(t_p)  # fewer than 3 paired seeds
    single = report.cells[("f1_macro", "dino", 1.0)]
    assert single.seeds == (0, 1)
    assert [f.method for f in report.failed] == ["dino"] and "out of memory" in report.failed[0].reason


def test_written_report_files_and_figure_metadata(fake_study):
    written = write_report(build_report([fake_study], n_boot=100), fake_study / "report")
    names = sorted(path.name for path in written)
    assert names == ["comparisons.csv", "figure_auc_macro.png", "figure_f1_macro.png", "report.md", "table_auc_macro.csv", "table_f1_macro.csv"]
    image = Image.open(fake_study / "report" / "figure_f1_macro.png")
    assert image.text["Title"] == "macro F1 against labeled fraction: fake"
    assert image.text["XLabel"].startswith("labeled training images") and "log scale" in image.text["XLabel"]
    assert image.text["YLabel"] == "macro F1 on the test split (0-1)"
    assert image.size[0] > 600 and image.size[1] > 400


def test_single_seed_cells_use_a_bootstrap_over_test_images_and_run_folders_work(fake_study):
    folders = [str(fake_study / "runs" / "supervised" / "f0.1-s0"), str(fake_study / "runs" / "dino" / "f0.1-s0")]
    report = build_report(folders, metrics=["f1_macro"], baseline="supervised_cls_isic", n_boot=200)
    assert report.methods == ["supervised_cls_isic", "dino_isic"]
    cell = report.cells[("f1_macro", "dino_isic", 0.1)]
    assert cell.bootstrapped and "bootstrap over 40 test images" in cell.interval.method
    assert cell.interval.low <= cell.interval.estimate <= cell.interval.high
    text = markdown_report(report)
    assert "† one seed: the metric [95 % percentile bootstrap over the 40 test images]" in text
    with pytest.raises(ValueError, match="baseline 'nobody' is not a row"):
        build_report(folders, baseline="nobody")


def test_branches_of_two_network_bundles_are_rows(tmp_path):
    images = [f"i{k}" for k in range(N_TEST)]
    for seed in (0, 1):
        cnn, vit = fake_samples(0.8, seed), fake_samples(0.5, seed + 10)
        settings = {"bundle": "cass_isic", "label_fraction": 0.1, "seed": seed}
        write_fake_run(tmp_path / f"cass{seed}", cnn, images, settings, branches={"cnn": cnn, "vit": vit})
        write_fake_run(tmp_path / f"sup{seed}", fake_samples(0.6, seed + 20), images, {"bundle": "supervised_cls_isic", "label_fraction": 0.1, "seed": seed})
    folders = [str(tmp_path / name) for name in ("sup0", "sup1", "cass0", "cass1")]
    report = build_report(folders, metrics=["f1_macro"], baseline="cass_isic", n_boot=100)
    assert report.methods == ["supervised_cls_isic", "cass_isic/cnn", "cass_isic/vit"]
    assert report.baseline == "cass_isic/cnn"  # a bundle's reported network stands for it
    assert set(report.comparisons) == {("f1_macro", "supervised_cls_isic", 0.1), ("f1_macro", "cass_isic/vit", 0.1)}


def test_label_free_methods_sit_at_zero_labels_as_lines_in_the_figure(tmp_path):
    """PiCIE and the floors read no labels (label_fraction 0): a 0 % column, and horizontal lines in the figure."""
    images = [f"i{k}" for k in range(N_TEST)]
    for seed in (0, 1, 2):
        write_fake_run(tmp_path / f"free{seed}", fake_samples(0.5, seed), images, {"bundle": "picie_seg_isic", "label_fraction": 0.0, "seed": seed})
        for fraction in (0.1, 1.0):
            settings = {"bundle": "supervised_cls_isic", "label_fraction": fraction, "seed": seed}
            write_fake_run(tmp_path / f"sup{fraction}-{seed}", fake_samples(0.6 + fraction / 4, seed + 20), images, settings)
    report = build_report([str(path) for path in sorted(tmp_path.iterdir())], metrics=["f1_macro"], n_boot=100)
    assert report.fractions == [0.0, 0.1, 1.0] and ("f1_macro", "picie_seg_isic", 0.0) in report.cells
    written = write_report(report, tmp_path / "report")
    assert (tmp_path / "report" / "figure_f1_macro.png") in written
    assert table_csv(report, "f1_macro").splitlines()[0].startswith("method,0.0 mean,0.0 low,0.0 high")
    assert "| method | 0 % labels | 10 % labels | 100 % labels |" in markdown_report(report)


def test_cli_report_prints_and_writes(fake_study):
    text = S4MI().report(str(fake_study), metrics="f1_macro", n_boot=50)
    assert "| supervised |" in text and f"wrote {fake_study / 'report' / 'figure_f1_macro.png'}" in text
    assert (fake_study / "report" / "table_f1_macro.csv").is_file()


def _difference(low: float, high: float, seeds: int = 3) -> tuple[Interval, PairedComparison]:
    middle = (low + high) / 2
    return Interval(middle, low, high, seeds, "t"), PairedComparison(middle, low, high, 0.5, N_TEST, seeds, "bootstrap")


@pytest.mark.parametrize(
    "low, high, seeds, outcome",
    [
        (0.01, 0.05, 3, "supported"),
        (-0.03, 0.015, 3, "not supported"),  # a gain of 0.02 is excluded
        (-0.09, -0.01, 3, "not supported"),  # reliably worse
        (-0.01, 0.05, 3, "not resolvable at this power"),
        (0.01, 0.05, 2, "not resolvable at this power"),  # too few seeds, however clear
    ],
)
def test_the_verdict_rule(low, high, seeds, outcome):
    over_seeds, over_images = _difference(low, high, seeds)
    verdict, reason = judge(over_seeds, over_images, margin=0.02)
    assert verdict == outcome
    assert (f"[{low:+.3f}, {high:+.3f}]" in reason) or seeds < MIN_SEEDS
    # both intervals must agree: a clear gain over seeds is not enough when the test images leave it open
    if outcome == "supported":
        wide = PairedComparison(0.02, -0.01, 0.05, 0.2, N_TEST, seeds, "bootstrap")
        assert judge(over_seeds, wide, margin=0.02)[0] == "not resolvable at this power"


def _seeds_with(mean: float, spread: float, n: int) -> list[float]:
    """n per-seed differences with exactly this mean and sample standard deviation."""
    unit = np.arange(n) - (n - 1) / 2
    return list(mean + spread * unit / np.std(unit, ddof=1))


@pytest.mark.parametrize(
    "mean, spread, expected",
    [
        (0.028, 0.017, "supported"),  # a gain the interval over seeds resolves once n is large enough
        (-0.002, 0.03, "not supported"),  # no gain: the interval narrows under the margin
        (0.01, 0.05, ""),  # halfway between 0 and the margin with a wide spread: no n up to the cap decides
    ],
)
def test_seeds_to_decide_is_the_smallest_n_whose_t_interval_decides(mean, spread, expected):
    measured = t_interval(_seeds_with(mean, spread, 3))
    needed = seeds_to_decide(measured, margin=0.02)
    assert needed is not None
    seeds, outcome = needed
    assert outcome == expected
    if not expected:
        assert seeds == MAX_SEEDS_TO_DECIDE + 1
        return
    # at the answer the t-interval of seeds with the same mean and spread decides, one seed fewer it does not
    decides = (lambda i: i.low > 0) if expected == "supported" else (lambda i: i.high < 0.02)
    assert decides(t_interval(_seeds_with(mean, spread, seeds)))
    assert seeds == MIN_SEEDS or not decides(t_interval(_seeds_with(mean, spread, seeds - 1)))


def test_seeds_to_decide_needs_an_interval():
    assert seeds_to_decide(t_interval([0.01]), margin=0.02) is None


def test_claims_get_a_verdict_per_fraction_from_both_intervals(tmp_path):
    claims = [
        {"name": "DINO beats supervised", "method": "dino"},
        {"name": "DINO at 10 % beats supervised at 100 %", "method": "dino", "fractions": [0.1], "versus_fraction": 1.0, "margin": 0.05},
        {"name": "nobody yet", "method": "dino", "versus": "supervised", "metric": "auc_macro", "fractions": [0.1]},
    ]
    study = make_fake_study(tmp_path, claims=claims)
    report = build_report([study], metrics=["f1_macro", "auc_macro"], n_boot=200)
    assert [c.name for c in report.claims] == [c["name"] for c in claims]
    by_claim = {}
    for verdict in report.verdicts:
        by_claim.setdefault(verdict.claim.name, []).append(verdict)
    same = by_claim["DINO beats supervised"]
    assert [(v.fraction, v.versus_fraction, v.metric) for v in same] == [(0.1, 0.1, "f1_macro"), (1.0, 1.0, "f1_macro")]
    assert same[1].over_seeds.n == 2 and same[1].outcome == "not resolvable at this power"  # dino's seed-2 run failed
    # the seed interval is the t-interval of the per-seed differences; the bootstrap the paired one
    cross = by_claim["DINO at 10 % beats supervised at 100 %"][0]
    dino = [read_samples(study / "runs" / "dino" / f"f0.1-s{s}") for s in range(3)]
    supervised = [read_samples(study / "runs" / "supervised" / f"f1.0-s{s}") for s in range(3)]
    assert cross.over_seeds == t_interval([d.metric("f1_macro") - s.metric("f1_macro") for d, s in zip(dino, supervised)])
    aligned = [d.aligned_to(s.images) for d, s in zip(dino, supervised)]
    assert cross.over_images == paired_bootstrap([d.statistic("f1_macro") for d in aligned], [s.statistic("f1_macro") for s in supervised], N_TEST, n_boot=400)
    assert (cross.outcome, cross.reason) == judge(cross.over_seeds, cross.over_images, 0.05)
    assert by_claim["nobody yet"][0].metric == "auc_macro"
    text = markdown_report(report)
    assert "## Claims" in text and "| 10 % vs 100 % |" in text and f"**{cross.outcome}**" in text
    assert "- **DINO beats supervised**: " in text
    rows = claims_csv(report).splitlines()
    assert rows[0].startswith("claim,metric,method,versus,fraction") and len(rows) == 1 + len(report.verdicts)
    assert rows[0].endswith(",verdict,seeds_to_decide,decides_as")
    # the planning columns are filled for unresolved comparisons only
    for row, verdict in zip(rows[1:], report.verdicts):
        planned = row.rsplit(",", 2)[1] != ""
        assert planned == (verdict.outcome == "not resolvable at this power" and verdict.over_seeds.n >= 2)
    assert "claims.csv" in {path.name for path in write_report(report, tmp_path / "out")}


PAGE = """# Results

Prose before.

<!-- report study progress -->
stale progress
<!-- /report -->

Prose between.

<!-- report study table f1_macro -->
old table
<!-- /report -->
<!-- report another_study claims -->
another study's table
<!-- /report -->
The end.
"""


def test_a_results_page_gets_its_study_blocks_refilled_and_keeps_its_prose(fake_study, tmp_path):
    page = tmp_path / "results.md"
    page.write_text(PAGE)
    printed = S4MI().report(str(fake_study), metrics="f1_macro", n_boot=50, page=str(page))
    assert f"refilled 2 block(s) of {page}" in printed
    refilled = page.read_text()
    assert "stale progress" not in refilled and "old table" not in refilled
    assert "11 of 12 fine-tuning runs have results (1 to run)." in refilled
    assert "| supervised | 10 %, 100 % | 0, 1, 2 | 6 of 6 |" in refilled
    assert "| dino | 10 %, 100 % | 0, 1 | 5 of 6 |" in refilled  # its seed-2 run at 100 % failed
    report = build_report([fake_study], metrics=["f1_macro"], n_boot=50)
    assert markdown_table(report, "f1_macro") in refilled
    for prose in ("Prose before.", "Prose between.", "another study's table", "The end."):
        assert prose in refilled
    S4MI().report(str(fake_study), metrics="f1_macro", n_boot=50, page=str(page))
    assert page.read_text() == refilled  # refilling is idempotent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Results\nno blocks\n", "has no block for study study: add `<!-- report study claims -->`"),
        ("<!-- report study tabel f1_macro -->\n<!-- /report -->\n", r"unknown part\(s\) \['tabel f1_macro'\] for study study; parts: progress, claims, table f1_macro"),
    ],
)
def test_a_page_that_cannot_be_refilled_is_named_and_left_as_it_was(fake_study, tmp_path, text, message):
    page = tmp_path / "results.md"
    page.write_text(text)
    report = build_report([fake_study], metrics=["f1_macro"], n_boot=50)
    with pytest.raises(PageError, match=message) as raised:
        update_page(page, report, fake_study)
    assert str(page) in str(raised.value) and page.read_text() == text


def test_several_pages_are_all_checked_before_any_is_written(fake_study, tmp_path):
    good, bad = tmp_path / "results.md", tmp_path / "README.md"
    good.write_text(PAGE)
    bad.write_text("# A bundle README without the study's block\n")
    with pytest.raises(PageError, match="README.md has no block for study study"):
        S4MI().report(str(fake_study), metrics="f1_macro", n_boot=50, page=f"{good},{bad}")
    assert good.read_text() == PAGE
    bad.write_text("<!-- report study table f1_macro -->\n<!-- /report -->\n")
    printed = S4MI().report(str(fake_study), metrics="f1_macro", n_boot=50, page=f"{good},{bad}")
    assert f"refilled 2 block(s) of {good}" in printed and f"refilled 1 block(s) of {bad}" in printed
    assert "| supervised |" in bad.read_text()
