"""The report of a study (or of any run folders): per-cell means with 95 % intervals, paired comparisons
against a baseline, markdown and CSV tables in the layout of the S4MI paper's Table 1, and figures.

Rows are methods (a two-network bundle gives one row per network: ``cass/cnn``, ``cass/transformer``), columns
label fractions. In each cell:

* with two or more seeds, the mean over seeds and a Student t-interval over the seeds (training
  variation; the test set is fixed);
* with one seed, the metric and a percentile bootstrap interval over the test images (test-set
  variation only), marked with a dagger.

Each method is compared with the baseline at the same fraction on the same test images, paired by seed:
the difference (method minus baseline, mean over the shared seeds), a paired bootstrap 95 % interval and
its two-sided p-value (:func:`s4mi_monai.metrics.statistics.paired_bootstrap`), plus a paired t-test over
the seeds when there are at least three. Metrics are recomputed from each run's ``test_samples.json`` with
the shared evaluators; nothing here computes a metric of its own.

A study's claims (``"claims"`` in its spec) are judged here from the same paired differences, with the rule
of :mod:`s4mi_monai.study.claims`, and listed first.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s4mi_monai.io import atomic_write_text
from s4mi_monai.metrics.samples import SAMPLES_FILE, PerImageRecords, lookup_metric, read_samples
from s4mi_monai.metrics.statistics import Interval, PairedComparison, bootstrap_interval, paired_bootstrap, paired_t_test, t_interval
from s4mi_monai.study.claims import MAX_SEEDS_TO_DECIDE, MIN_SEEDS, NOT_RESOLVABLE, Claim, Verdict, judge, seeds_to_decide
from s4mi_monai.study.runner import RUN_LOG, STATUS_FILE, STUDY_FILE, log_tail
from s4mi_monai.study.spec import run_folder

__all__ = ["DEFAULT_METRICS", "Cell", "RunRecord", "StudyReport", "build_report", "claim_summary", "collect_runs", "write_report"]

DEFAULT_METRICS = {"classification": ("f1_macro", "auc_macro"), "segmentation": ("iou_per_image_mean", "dice_per_image_mean")}
METRIC_LABELS = {
    "f1_macro": "macro F1",
    "f1_micro": "micro F1",
    "auc_macro": "macro AUC (one-vs-rest)",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "recall_macro": "macro recall",
    "isic2017_challenge_score": "ISIC-2017 challenge score",
    "iou_per_image_mean": "IoU (mean over images)",
    "dice_per_image_mean": "Dice (mean over images)",
    "iou_pooled": "IoU (pooled pixels)",
    "dice_pooled": "Dice (pooled pixels)",
    "miou_all_classes": "mIoU (all classes, background included)",
    "pixel_accuracy": "pixel accuracy",
}
MIN_SEEDS_FOR_T_TEST = 3
METRIC_RANGE = (0.0, 1.0)
"""Every metric the evaluators report (F1, AUC, recall, IoU, Dice, accuracy) lies in [0, 1]."""
DAGGER = "†"


def metric_label(name: str) -> str:
    """A readable name of a metric key for tables and axes."""
    return METRIC_LABELS.get(name, name.replace("_", " "))


def fraction_column(fraction: float) -> str:
    """A fraction as a CSV key: ``0.1 -> "0.1"``, ``1 -> "1.0"``; 0 is a method that reads no labels (PiCIE, a floor)."""
    return repr(round(float(fraction), 6))


def percent(fraction: float) -> str:
    """``0.1 -> "10 %"``, ``0.005 -> "0.5 %"``."""
    value = fraction * 100
    return f"{value:.0f} %" if abs(value - round(value)) < 1e-9 else f"{value:g} %"


@dataclass
class RunRecord:
    """One row-run: a method (or one network of it) at one fraction and seed, finished or not."""

    method: str
    fraction: float | None  # None: a pretraining (only listed when it failed)
    seed: int
    folder: Path
    metrics: dict[str, Any] | None = None
    samples_path: Path | None = None
    reason: str = ""

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def samples(self) -> PerImageRecords | None:
        if self.samples_path is None or not self.samples_path.is_file():
            return None
        return read_samples(self.samples_path)


@dataclass
class Cell:
    """One method x fraction entry of a table."""

    interval: Interval
    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def bootstrapped(self) -> bool:
        return len(self.seeds) == 1


@dataclass
class StudyReport:
    """Everything the tables and figures show."""

    name: str
    task: str
    metrics: tuple[str, ...]
    methods: list[str]
    fractions: list[float]
    baseline: str | None
    cells: dict[tuple[str, str, float], Cell] = field(default_factory=dict)  # (metric, method, fraction)
    comparisons: dict[tuple[str, str, float], tuple[PairedComparison, float]] = field(default_factory=dict)  # + seed t-test p
    failed: list[RunRecord] = field(default_factory=list)
    source: str = ""
    n_test_images: int | None = None
    claims: tuple[Claim, ...] = ()
    verdicts: list[Verdict] = field(default_factory=list)


def _branch_records(method: str, fraction: float, seed: int, folder: Path) -> list[RunRecord]:
    """The rows of one finished run folder: one per network of a two-network bundle."""
    metrics = json.loads((folder / "metrics.json").read_text())
    branches = metrics.get("branches")
    if branches:
        return [
            RunRecord(f"{method}/{branch}", fraction, seed, folder, values["test"], folder / branch / SAMPLES_FILE)
            for branch, values in branches.items()
        ]
    return [RunRecord(method, fraction, seed, folder, metrics["test"], folder / SAMPLES_FILE)]


def _failure_reason(folder: Path, status: dict[str, Any], run_id: str) -> str:
    reason = status.get(run_id, {}).get("reason", "")
    if reason:
        return reason
    tail = log_tail(folder / RUN_LOG)
    return f"not finished; end of its log:\n{tail}" if tail else "not started (run the study)"


def collect_runs(paths: Sequence[str | Path]) -> tuple[list[RunRecord], dict[str, Any]]:
    """Row-runs from one study folder (its ``study.json``) or from run folders (their ``metrics.json`` settings).

    Returns the records and the study plan (empty for loose run folders).
    """
    if not paths:
        raise ValueError("give a study folder or run folders")
    if len(paths) == 1 and (Path(paths[0]) / STUDY_FILE).is_file():
        study = Path(paths[0])
        plan = json.loads((study / STUDY_FILE).read_text())
        status = json.loads((study / STATUS_FILE).read_text()) if (study / STATUS_FILE).is_file() else {}
        records: list[RunRecord] = []
        for run in plan["runs"]:
            folder = run_folder(study, run["method"], run["seed"], run["fraction"])  # output_dir is relative to where it ran
            if run["fraction"] is not None and (folder / "metrics.json").is_file():
                records += _branch_records(run["method"], run["fraction"], run["seed"], folder)
            elif run["fraction"] is not None or status.get(run["id"], {}).get("status") in ("failed", "blocked"):
                records.append(RunRecord(run["method"], run["fraction"], run["seed"], folder, None, None, _failure_reason(folder, status, run["id"])))
        return records, plan
    records = []
    for path in map(Path, paths):
        folder = path.parent if path.name == "metrics.json" else path
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(f"{folder} has no metrics.json (not a finished run folder, nor a study folder with {STUDY_FILE})")
        settings = json.loads((folder / "metrics.json").read_text()).get("settings", {})
        missing = [key for key in ("bundle", "label_fraction", "seed") if key not in settings]
        if missing:
            raise ValueError(f"{folder}/metrics.json: settings lack {missing}, so the run cannot be placed in a table")
        records += _branch_records(str(settings["bundle"]), float(settings["label_fraction"]), int(settings["seed"]), folder)
    return records, {}


def _task(records: Sequence[RunRecord]) -> str:
    finished = [r for r in records if r.finished]
    if not finished:
        return "classification"
    return "segmentation" if "iou_pooled" in finished[0].metrics else "classification"


def _report_row(baseline: str | None, methods: Sequence[str], finished: Sequence[RunRecord]) -> str | None:
    if baseline is None:
        return None
    if baseline in methods:
        return baseline
    branches = [m for m in methods if m.startswith(f"{baseline}/")]
    if branches:
        run = next(r for r in finished if r.method in branches)
        reported = json.loads((run.folder / "metrics.json").read_text()).get("settings", {}).get("reported_branch")
        return f"{baseline}/{reported}" if f"{baseline}/{reported}" in branches else branches[0]
    raise ValueError(f"baseline {baseline!r} is not a row of this report (rows: {list(methods)})")


def build_report(
    paths: Sequence[str | Path],
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> StudyReport:
    """Intervals and comparisons of a study folder or of run folders (see the module docstring)."""
    records, plan = collect_runs(paths)
    finished = [r for r in records if r.finished]
    task = _task(records)
    chosen = tuple(metrics or plan.get("metrics") or DEFAULT_METRICS[task])
    methods = list(dict.fromkeys(r.method for r in finished))
    fractions = sorted({r.fraction for r in finished})
    report = StudyReport(
        name=plan.get("name", "runs"),
        task=task,
        metrics=chosen,
        methods=methods,
        fractions=fractions,
        baseline=_report_row(baseline or plan.get("baseline"), methods, finished),
        failed=[r for r in records if not r.finished],
        source=str(paths[0]) if plan else ", ".join(map(str, paths)),
    )
    by_cell: dict[tuple[str, float], list[RunRecord]] = {}
    for record in sorted(finished, key=lambda r: r.seed):
        by_cell.setdefault((record.method, record.fraction), []).append(record)
    samples_cache: dict[Path, PerImageRecords | None] = {}

    def samples_of(record: RunRecord) -> PerImageRecords | None:
        if record.samples_path not in samples_cache:
            samples_cache[record.samples_path] = record.samples()
        return samples_cache[record.samples_path]

    for (method, fraction), runs in by_cell.items():
        for metric in chosen:
            values = tuple(lookup_metric(r.metrics, metric) for r in runs)
            if len(runs) > 1:
                interval = t_interval(values)
            else:
                interval = _single_run_interval(samples_of(runs[0]), metric, values[0], n_boot, seed)
            report.cells[(metric, method, fraction)] = Cell(interval, tuple(r.seed for r in runs), values)
    for samples in filter(None, (samples_of(r) for r in finished)):
        report.n_test_images = len(samples)
        break
    if report.baseline is not None:
        for (method, fraction), runs in by_cell.items():
            if method == report.baseline or (report.baseline, fraction) not in by_cell:
                continue
            for metric in chosen:
                paired = _paired(runs, by_cell[(report.baseline, fraction)], metric, samples_of, n_boot, seed)
                if paired is not None:
                    report.comparisons[(metric, method, fraction)] = paired[:2]
    report.claims = tuple(Claim(**{**c, "fractions": None if c.get("fractions") is None else tuple(c["fractions"])}) for c in plan.get("claims", ()))
    for claim in report.claims:
        report.verdicts += _verdicts(report, claim, by_cell, finished, samples_of, n_boot, seed)
    return report


def _paired(
    runs: Sequence[RunRecord],
    base_runs: Sequence[RunRecord],
    metric: str,
    samples_of: Callable[[RunRecord], PerImageRecords | None],
    n_boot: int,
    seed: int,
) -> tuple[PairedComparison, float, Interval] | None:
    """Method runs against baseline runs paired by seed: the paired bootstrap over test images, the paired t-test p
    over seeds (nan under ``MIN_SEEDS_FOR_T_TEST``) and the t-interval of the per-seed differences; None without pairs."""
    base_by_seed = {r.seed: r for r in base_runs}
    pairs = [(r, base_by_seed[r.seed]) for r in runs if r.seed in base_by_seed]
    records = [(samples_of(a), samples_of(b)) for a, b in pairs]
    if not pairs or any(a is None or b is None for a, b in records):
        return None
    records = [(a.aligned_to(b.images), b) for a, b in records]
    comparison = paired_bootstrap(
        [a.statistic(metric) for a, _ in records], [b.statistic(metric) for _, b in records], len(records[0][1]), n_boot=2 * n_boot, seed=seed
    )
    method_values = [lookup_metric(a.metrics, metric) for a, _ in pairs]
    base_values = [lookup_metric(b.metrics, metric) for _, b in pairs]
    t_p = paired_t_test(method_values, base_values)[1] if len(pairs) >= MIN_SEEDS_FOR_T_TEST else math.nan
    return comparison, t_p, t_interval([a - b for a, b in zip(method_values, base_values)])


def _verdicts(
    report: StudyReport,
    claim: Claim,
    by_cell: Mapping[tuple[str, float], Sequence[RunRecord]],
    finished: Sequence[RunRecord],
    samples_of: Callable[[RunRecord], PerImageRecords | None],
    n_boot: int,
    seed: int,
) -> list[Verdict]:
    """The claim's verdict at each of its fractions where both sides have finished runs."""
    try:
        method_row = _report_row(claim.method, report.methods, finished)
        versus_row = _report_row(claim.versus, report.methods, finished)
    except ValueError:
        return []  # a side without finished runs yet: the claims table says "no results yet"
    metric = claim.metric or report.metrics[0]
    fractions = claim.fractions or [f for f in report.fractions if (method_row, f) in by_cell]
    verdicts = []
    for fraction in fractions:
        versus_fraction = fraction if claim.versus_fraction is None else claim.versus_fraction
        if (method_row, fraction) not in by_cell or (versus_row, versus_fraction) not in by_cell:
            continue
        paired = _paired(by_cell[(method_row, fraction)], by_cell[(versus_row, versus_fraction)], metric, samples_of, n_boot, seed)
        if paired is None:
            continue
        over_images, _, over_seeds = paired
        outcome, reason = judge(over_seeds, over_images, claim.margin)
        verdicts.append(Verdict(claim, metric, method_row, versus_row, fraction, versus_fraction, outcome, reason, over_seeds, over_images))
    return verdicts


def claim_summary(verdicts: Sequence[Verdict]) -> str:
    """One line for a claim over its fractions: the common verdict, or each verdict with its fractions."""
    if not verdicts:
        return "no results yet"
    outcomes: dict[str, list[str]] = {}
    for verdict in verdicts:
        outcomes.setdefault(verdict.outcome, []).append(percent(verdict.fraction))
    if len(outcomes) == 1:
        return next(iter(outcomes))
    return "; ".join(f"{outcome} at {', '.join(fractions)}" for outcome, fractions in outcomes.items())


def _single_run_interval(samples: PerImageRecords | None, metric: str, value: float, n_boot: int, seed: int) -> Interval:
    if samples is None:
        return Interval(value, math.nan, math.nan, 1, "one seed and no per-image records (test_samples.json): no interval")
    return bootstrap_interval(samples.statistic(metric), len(samples), n_boot=n_boot, seed=seed)


# ------------------------------------------------------------------------------------------ tables


def _number(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.3f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def shown_bounds(interval: Interval) -> tuple[float, float]:
    """The interval as tables and figures show it: clipped to the metrics' range [0, 1] (a t-interval over few
    seeds can reach past it; the CSV keeps the unclipped bounds)."""
    return max(METRIC_RANGE[0], interval.low), min(METRIC_RANGE[1], interval.high)


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    interval = cell.interval
    if math.isnan(interval.low):
        return _number(interval.estimate)
    mark = DAGGER if cell.bootstrapped else ""
    low, high = shown_bounds(interval)
    return f"{_number(interval.estimate)} [{_number(low)}, {_number(high)}]{mark}"


def markdown_table(report: StudyReport, metric: str) -> str:
    """Methods as rows, fractions as columns, ``mean [low, high]`` in each cell (the paper's Table 1 layout)."""
    header = ["method", *(f"{percent(f)} labels" for f in report.fractions)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method in report.methods:
        cells = [_cell_text(report.cells.get((metric, method, f))) for f in report.fractions]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def interval_note(report: StudyReport, metric: str) -> str:
    """What the intervals of a metric's table are: over seeds, or (one seed, marked) over test images."""
    cells = [c for (m, _, _), c in report.cells.items() if m == metric]
    seeds = sorted({len(c.seeds) for c in cells if not c.bootstrapped})
    notes = []
    if seeds:
        notes.append(f"mean over seeds [95 % t-interval over seeds, clipped to [0, 1]] ({'/'.join(map(str, seeds))} seeds per cell)")
    if any(c.bootstrapped for c in cells):
        images = f"{report.n_test_images} " if report.n_test_images else ""
        notes.append(f"{DAGGER} one seed: the metric [95 % percentile bootstrap over the {images}test images]")
    return "; ".join(notes)


def comparison_table(report: StudyReport, metric: str) -> str:
    """One line per method and fraction: difference to the baseline, paired bootstrap interval and p-values."""
    lines = [
        f"| method | labels | seeds | Δ vs {report.baseline} | 95 % CI (paired bootstrap) | p (paired bootstrap) | p (paired t over seeds) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in report.methods:
        for fraction in report.fractions:
            entry = report.comparisons.get((metric, method, fraction))
            if entry is None:
                continue
            comparison, t_p = entry
            lines.append(
                f"| {method} | {percent(fraction)} | {comparison.n_seeds} | {_signed(comparison.difference)} | "
                f"[{_signed(comparison.low)}, {_signed(comparison.high)}] | {_p(comparison.p_value)} | {_p(t_p)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def claims_table(report: StudyReport) -> str:
    """One line per claim and fraction: the difference with its intervals over seeds and over images, and the verdict."""
    lines = [
        "| claim | metric | labels | Δ (mean over seeds) | 95 % CI over seeds (t) | 95 % CI over test images (paired bootstrap) | seeds | verdict | seeds to decide |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for claim in report.claims:
        verdicts = [v for v in report.verdicts if v.claim == claim]
        if not verdicts:
            lines.append(f"| {claim.name} | {claim.metric or report.metrics[0]} | - | - | - | - | - | no results yet | - |")
        for v in verdicts:
            labels = percent(v.fraction) if v.fraction == v.versus_fraction else f"{percent(v.fraction)} vs {percent(v.versus_fraction)}"
            seeds, images = v.over_seeds, v.over_images
            lines.append(
                f"| {claim.name} (`{v.method_row}` vs `{v.versus_row}`) | {v.metric} | {labels} | {_signed(seeds.estimate)} | "
                f"[{_signed(seeds.low)}, {_signed(seeds.high)}] | [{_signed(images.low)}, {_signed(images.high)}] | {seeds.n} | **{v.outcome}** | "
                f"{_seeds_to_decide_text(v)} |"
            )
    return "\n".join(lines)


def _planned_seeds(verdict: Verdict) -> tuple[int, str] | None:
    """The planning column: for an unresolved comparison, the seeds its interval over seeds would need."""
    return seeds_to_decide(verdict.over_seeds, verdict.claim.margin) if verdict.outcome == NOT_RESOLVABLE else None


def _seeds_to_decide_text(verdict: Verdict) -> str:
    needed = _planned_seeds(verdict)
    if needed is None:
        return "-"
    seeds, outcome = needed
    return f"> {MAX_SEEDS_TO_DECIDE}" if not outcome else f"{seeds} ({outcome})"


def _claims_section(report: StudyReport) -> list[str]:
    margins = sorted({claim.margin for claim in report.claims})
    parts = ["", "## Claims", "", claims_table(report), ""]
    parts += [f"- **{claim.name}**: {claim_summary([v for v in report.verdicts if v.claim == claim])}" for claim in report.claims]
    parts += [
        "",
        "Verdicts (`s4mi_monai/study/claims.py`): **supported** when the 95 % intervals of the difference over seeds and over "
        "test images both lie above 0; **not supported** when both lie below the margin "
        f"({'/'.join(f'{m:g}' for m in margins)}, the smallest gain that matters), so such a gain is excluded; otherwise "
        f"**not resolvable at this power**, as is any comparison with fewer than {MIN_SEEDS} paired seeds. "
        "*Seeds to decide* (unresolved rows only) is a planning number, not a verdict: the paired seeds at which the "
        "interval over seeds alone would decide if the mean difference and its seed-to-seed spread stayed as measured "
        f"(`seeds_to_decide`; > {MAX_SEEDS_TO_DECIDE}: no decision in sight).",
    ]
    return parts


def markdown_report(report: StudyReport) -> str:
    """The whole report: one section per metric (table, interval note, comparisons), then failed runs."""
    parts = [f"# Study report: {report.name}", ""]
    test_images = f", {report.n_test_images} test images" if report.n_test_images else ""
    parts.append(f"Source: `{report.source}` ({report.task}{test_images}). Rows: methods (networks of two-network bundles apart); columns: label fractions.")
    if report.claims:
        parts += _claims_section(report)
    for metric in report.metrics:
        parts += ["", f"## {metric_label(metric)} (`{metric}`)", "", markdown_table(report, metric), "", interval_note(report, metric)]
        comparisons = comparison_table(report, metric) if report.baseline else ""
        if comparisons:
            parts += ["", f"Paired comparison with `{report.baseline}` on the same test images, seed by seed:", "", comparisons]
    if report.baseline and report.comparisons:
        test = next(iter(report.comparisons.values()))[0].test
        parts += ["", f"Test: {test}. The t-test over seeds is shown with {MIN_SEEDS_FOR_T_TEST} or more paired seeds."]
    if report.failed:
        parts += ["", "## Runs without results", ""]
        for record in report.failed:
            last = record.reason.strip().splitlines()
            stage = "pretraining" if record.fraction is None else f"at {percent(record.fraction)}"
            parts.append(f"- `{record.method}` {stage}, seed {record.seed} (`{record.folder}`): {last[0] if last else ''}")
            if len(last) > 1:
                parts += ["", "  ```", *(f"  {line}" for line in last[1:][-8:]), "  ```"]
    return "\n".join(parts) + "\n"


def table_csv(report: StudyReport, metric: str) -> str:
    """The Table-1 layout as numbers: per fraction its mean, unclipped low and high, seeds and each seed's value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["method"]
    for fraction in report.fractions:
        key = fraction_column(fraction)
        header += [f"{key} mean", f"{key} low", f"{key} high", f"{key} seeds", f"{key} per seed", f"{key} interval"]
    writer.writerow(header)
    for method in report.methods:
        row: list[Any] = [method]
        for fraction in report.fractions:
            cell = report.cells.get((metric, method, fraction))
            if cell is None:
                row += ["", "", "", 0, "", ""]
            else:
                i = cell.interval
                per_seed = ";".join(f"{seed}:{_csv_number(value)}" for seed, value in zip(cell.seeds, cell.values))
                row += [_csv_number(i.estimate), _csv_number(i.low), _csv_number(i.high), len(cell.seeds), per_seed, i.method]
        writer.writerow(row)
    return buffer.getvalue()


def comparisons_csv(report: StudyReport) -> str:
    """Every paired comparison as one row of numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "method", "baseline", "fraction", "seeds", "test_images", "difference", "low", "high", "p_bootstrap", "p_t_seeds"])
    for (metric, method, fraction), (c, t_p) in report.comparisons.items():
        writer.writerow(
            [metric, method, report.baseline, fraction_column(fraction), c.n_seeds, c.n_items, *map(_csv_number, (c.difference, c.low, c.high, c.p_value, t_p))]
        )
    return buffer.getvalue()


def claims_csv(report: StudyReport) -> str:
    """Every verdict as one row of numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["claim", "metric", "method", "versus", "fraction", "versus_fraction", "seeds", "difference", "seeds_low", "seeds_high", "images_low", "images_high", "margin", "verdict", "seeds_to_decide", "decides_as"])
    for v in report.verdicts:
        s, i = v.over_seeds, v.over_images
        numbers = map(_csv_number, (s.estimate, s.low, s.high, i.low, i.high, v.claim.margin))
        needed = _planned_seeds(v)
        planning = ["", ""] if needed is None else [needed[0], needed[1] or "undecided"]
        row = [v.claim.name, v.metric, v.method_row, v.versus_row, fraction_column(v.fraction), fraction_column(v.versus_fraction), s.n, *numbers]
        writer.writerow([*row, v.outcome, *planning])
    return buffer.getvalue()


def _csv_number(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def write_report(report: StudyReport, out: str | Path) -> list[Path]:
    """Write ``report.md``, ``table_<metric>.csv``, ``comparisons.csv``, ``claims.csv`` and ``figure_<metric>.png`` into ``out``."""
    from s4mi_monai.study.figures import label_efficiency_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md"]
    atomic_write_text(written[0], markdown_report(report))
    for metric in report.metrics:
        path = out / f"table_{metric}.csv"
        atomic_write_text(path, table_csv(report, metric))
        written.append(path)
    if report.comparisons:
        written.append(out / "comparisons.csv")
        atomic_write_text(written[-1], comparisons_csv(report))
    if report.claims:
        written.append(out / "claims.csv")
        atomic_write_text(written[-1], claims_csv(report))
    for metric in report.metrics:
        if report.cells:
            written.append(label_efficiency_figure(report, metric, out / f"figure_{metric}.png"))
    return written
