"""Run a study: every run's bundle command as a subprocess, N at a time, finished runs skipped, failures contained.

Layout of a study folder (``s4mi study SPEC --out DIR``)::

    DIR/study.json          the spec as expanded: every run's id, method, fraction, seed, folder, command
    DIR/commands.sh         the same commands as a shell script (copy one to rerun or resume a run)
    DIR/datalist.json       only when the spec's datalist lacks a fraction: that datalist plus the missing fractions
    DIR/study.log           one line per event (started, done, failed, skipped), with times
    DIR/status.json         each run's last state, time and, for a failure, the end of its log
    DIR/pretrain/<method>/s<seed>/              a method's pretraining (once per seed)
    DIR/runs/<method>/f<fraction>-s<seed>/      a run: the bundle's outputs, run.log, study_run.json

A run is finished when its outputs exist (``metrics.json``; for a pretraining, its weight files). A killed
run is resumed by running its command again: the bundle resumes from its own checkpoint, so running the
study again skips what finished and resumes what did not. A run whose command changed since it started
(the spec was edited) is refused rather than resumed with other settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from s4mi_monai.data.datalist import compute_label_fractions, load_datalist, save_datalist
from s4mi_monai.data.splits import fraction_key
from s4mi_monai.io import atomic_write_text, write_json
from s4mi_monai.study.spec import Run, SpecError, StudySpec, expand_runs, load_spec

__all__ = ["RunOutcome", "StudyResult", "derive_datalist", "failure_reason", "log_tail", "run_study"]

RUN_LOG = "run.log"
RUN_RECORD = "study_run.json"
STUDY_FILE = "study.json"
STATUS_FILE = "status.json"
TAIL_LINES = 15
POLL_SECONDS = 0.2


@dataclass
class RunOutcome:
    """What happened to one run in this invocation."""

    run: Run
    status: str = "pending"  # pending | running | done | skipped (finished before) | failed | blocked (its pretraining failed)
    elapsed: float = 0.0
    reason: str = ""


@dataclass
class StudyResult:
    """The runs of one ``s4mi study`` invocation and where their files are."""

    out: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    datalist_message: str | None = None

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "blocked")]

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("done", "skipped", "failed", "blocked") if self.count(s)]
        lines = [f"study {self.out}: {len(self.outcomes)} runs: {', '.join(parts) or 'nothing to do'}"]
        for outcome in self.failed:
            lines.append(f"  {outcome.status.upper()} {outcome.run.id}: {outcome.reason.splitlines()[0] if outcome.reason else ''}")
            lines.append(f"    log: {Path(outcome.run.output_dir) / RUN_LOG}")
        lines.append(f"report: s4mi report {self.out}")
        return "\n".join(lines)


def log_tail(path: str | Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    path = Path(path)
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def failure_reason(path: str | Path, returncode: int) -> str:
    """``exit code N: <first exception of the last attempt>`` and the end of the log.

    The first exception line is the root cause: MONAI's config parser wraps it in a generic
    "Failed to instantiate component" error that is all the log's last lines show.
    """
    tail = log_tail(path)
    text = Path(path).read_text(encoding="utf-8", errors="replace") if Path(path).is_file() else ""
    last_attempt = text.rsplit("\n=== ", 1)[-1]
    causes = [line for line in last_attempt.splitlines() if EXCEPTION_LINE.match(line)]
    headline = f"exit code {returncode}" + (f": {causes[0]}" if causes else "")
    return f"{headline}\n{tail}"


def derive_datalist(spec: StudySpec, out: Path) -> tuple[str, str | None]:
    """The datalist the runs read, and a message when one had to be written.

    Fractions the spec's datalist lacks are drawn the way ``s4mi prepare`` draws them (seeded from the
    datalist, stratified, each a prefix of the next in every stratum) and stored, with the existing ones
    unchanged, in ``DIR/datalist.json``; every method then reads the same subsets.
    """
    wanted = {fraction_key(f) for method in spec.methods for f in (method.fractions or spec.fractions)}
    datalist = load_datalist(spec.datalist, spec.dataset_dir)
    stored = datalist.get("label_fractions", {})
    missing = sorted(wanted - set(stored), key=float)
    if not missing:
        return spec.datalist, None
    subsets = {**stored, **compute_label_fractions(datalist, [float(k) for k in missing])}
    ordered = sorted(subsets, key=float)
    for smaller, larger in zip(ordered, ordered[1:]):
        if not set(subsets[smaller]) <= set(subsets[larger]):
            raise SpecError(
                f"{spec.datalist}: its stored label fraction {larger} does not contain {smaller} "
                "(edited by hand?); prepare it again with --fractions instead of letting the study add fractions"
            )
    derived = {key: value for key, value in datalist.items() if key != "datalist_path"}
    derived["label_fractions"] = {key: subsets[key] for key in ordered}
    derived["provenance"] = {**datalist["provenance"], "derived_from": spec.datalist, "added_label_fractions": missing}
    path = out / "datalist.json"
    save_datalist(derived, path)
    counts = ", ".join(f"{key}: {len(subsets[key])}" for key in missing)
    return str(path), f"wrote {path}: {spec.datalist} plus the label fractions it lacked ({counts} labeled training images)"


def _check_unchanged(runs: Sequence[Run]) -> None:
    """Refuse to resume or skip runs that were started with another command (the spec changed)."""
    changed = []
    for run in runs:
        record = Path(run.output_dir) / RUN_RECORD
        if record.is_file() and json.loads(record.read_text()).get("argv", run.argv)[1:] != run.argv[1:]:
            changed.append(run.output_dir)
    if changed:
        raise SpecError(
            "these runs were started with a different command (was the spec edited?): "
            + ", ".join(changed)
            + "; delete those folders to run them again with the new settings, or restore the spec"
        )


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


GITIGNORE = """\
# Written by `s4mi study`: keep the plan and each run's results under version control, not its weights,
# checkpoints or logs. A study folder committed this way can be reported anywhere, and `s4mi study` run
# again in a fresh clone skips every finished run and runs only the rest.
*
!*/
!.gitignore
!study.json
!status.json
!study.log
!commands.sh
!metrics.json
!test_samples.json
!study_run.json
!pretrain/**/history.json
!report/**
"""


def _write_plan(spec: StudySpec, out: Path, runs: Sequence[Run], datalist: str, threads: int) -> None:
    plan = {
        "name": spec.name,
        "spec": spec.path,
        "datalist": datalist,
        "baseline": spec.baseline,
        "metrics": list(spec.metrics),
        "claims": [claim.as_dict() for claim in spec.claims],
        "fractions": list(spec.fractions),
        "seeds": list(spec.seeds),
        "runs": [
            {
                "id": run.id,
                "method": run.method,
                "bundle": run.bundle,
                "seed": run.seed,
                "fraction": run.fraction,
                "output_dir": run.output_dir,
                "after": run.after,
                "command": run.command,
            }
            for run in runs
        ],
    }
    write_json(out / STUDY_FILE, plan)
    lines = ["#!/usr/bin/env bash", f"# study {spec.name} from {spec.path}: every run's command, in order (a rerun resumes)", "set -e"]
    lines += [f"OMP_NUM_THREADS={threads} {run.command}" for run in runs]
    atomic_write_text(out / "commands.sh", "\n".join(lines) + "\n")
    if not (out / ".gitignore").exists():
        atomic_write_text(out / ".gitignore", GITIGNORE)


class _Progress:
    """Progress lines on the console and in ``study.log``."""

    def __init__(self, out: Path, total: int, jobs: int, echo: Callable[[str], None]) -> None:
        self.log = out / "study.log"
        self.total = total
        self.jobs = jobs
        self.echo = echo
        self.durations: list[float] = []

    def line(self, text: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.echo(text)
        with self.log.open("a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {text}\n")

    def event(self, outcome: RunOutcome, finished: int, running: int, left: int) -> None:
        if outcome.status in ("done", "failed"):
            self.durations.append(outcome.elapsed)
        timing = f" {_format_duration(outcome.elapsed)}" if outcome.status in ("done", "failed") else ""
        eta = ""
        if self.durations and (left or running):
            mean = sum(self.durations) / len(self.durations)
            eta = f", ETA {_format_duration(mean * (left + running / 2) / self.jobs)}"
        self.line(f"[{finished}/{self.total}] {outcome.status:<8} {outcome.run.id}{timing} ({running} running, {left} waiting{eta})")


def _start(run: Run, threads: int) -> tuple[subprocess.Popen, float]:
    folder = Path(run.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RUN_RECORD, {"id": run.id, "argv": run.argv, "command": run.command, "threads": threads})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    log = (folder / RUN_LOG).open("a", encoding="utf-8")
    log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} OMP_NUM_THREADS={threads} {run.command}\n")
    log.flush()
    try:
        process = subprocess.Popen(run.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    finally:
        log.close()
    return process, time.monotonic()


def run_study(
    spec_path: str | Path,
    out: str | Path,
    jobs: int = 1,
    threads: int | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> StudyResult:
    """Expand a study spec and run what has not finished, ``jobs`` runs at a time.

    ``threads`` (default: the CPU count) is split evenly between the jobs (``OMP_NUM_THREADS``). A failed
    run is recorded with the end of its log and the others go on; the fine-tuning runs of a method whose
    pretraining failed are blocked. With ``dry_run`` only the plan and the commands are written and printed.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    spec = load_spec(spec_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datalist, message = derive_datalist(spec, out)
    runs = expand_runs(spec, out, datalist)
    threads_per_job = max(1, (threads or os.cpu_count() or 1) // jobs)
    _check_unchanged(runs)
    _write_plan(spec, out, runs, datalist, threads_per_job)
    result = StudyResult(out, [RunOutcome(run) for run in runs], message)
    progress = _Progress(out, len(runs), jobs, echo)
    if message:
        progress.line(message)
    if dry_run:
        for run in runs:
            echo(f"{'done' if run.is_done() else 'to run'}: OMP_NUM_THREADS={threads_per_job} {run.command}")
        return result
    progress.line(f"study {spec.name}: {len(runs)} runs, {jobs} at a time, {threads_per_job} thread(s) each; plan in {out / STUDY_FILE}")
    _execute(result, jobs, threads_per_job, progress)
    _write_status(result)
    return result


def _execute(result: StudyResult, jobs: int, threads: int, progress: _Progress) -> None:
    by_id = {outcome.run.id: outcome for outcome in result.outcomes}
    needed_by: dict[str, list[Run]] = {}
    for outcome in result.outcomes:
        if outcome.run.after:
            needed_by.setdefault(outcome.run.after, []).append(outcome.run)
    waiting = list(result.outcomes)
    running: dict[str, tuple[subprocess.Popen, float, RunOutcome]] = {}
    finished = 0

    def settle(outcome: RunOutcome, status: str, reason: str = "") -> None:
        nonlocal finished
        outcome.status, outcome.reason = status, reason
        finished += 1
        progress.event(outcome, finished, len(running), len(waiting))

    try:
        while waiting or running:
            for outcome in list(waiting):
                run = outcome.run
                dependency = by_id.get(run.after) if run.after else None
                if run.is_done():
                    waiting.remove(outcome)
                    settle(outcome, "skipped", "finished before")
                elif run.is_pretraining and run.id in needed_by and all(r.is_done() for r in needed_by[run.id]):
                    waiting.remove(outcome)
                    settle(outcome, "skipped", "every run that starts from it has finished")
                elif dependency is not None and dependency.status in ("failed", "blocked"):
                    waiting.remove(outcome)
                    settle(outcome, "blocked", f"its pretraining {dependency.run.id} did not finish")
                elif len(running) < jobs and (dependency is None or dependency.status in ("done", "skipped")):
                    waiting.remove(outcome)
                    process, started = _start(run, threads)
                    outcome.status = "running"
                    running[run.id] = (process, started, outcome)
                    progress.line(f"started  {run.id} -> {run.output_dir}")
            for run_id, (process, started, outcome) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[run_id]
                outcome.elapsed = time.monotonic() - started
                log = Path(outcome.run.output_dir) / RUN_LOG
                if process.returncode == 0 and outcome.run.is_done():
                    settle(outcome, "done")
                elif process.returncode == 0:
                    missing = [n for n in outcome.run.done_files if not (Path(outcome.run.output_dir) / n).is_file()]
                    settle(outcome, "failed", f"exited 0 but did not write {missing}\n{log_tail(log)}")
                else:
                    settle(outcome, "failed", failure_reason(log, process.returncode))
            time.sleep(POLL_SECONDS if running else 0)
    except KeyboardInterrupt:
        for process, _, outcome in running.values():
            process.terminate()
            process.wait()
            outcome.status, outcome.reason = "failed", "interrupted (rerun the study to resume it)"
        _write_status(result)
        raise


def _write_status(result: StudyResult) -> None:
    write_json(
        result.out / STATUS_FILE,
        {
            outcome.run.id: {
                "status": outcome.status,
                "elapsed_s": round(outcome.elapsed, 1),
                "output_dir": outcome.run.output_dir,
                "reason": outcome.reason,
            }
            for outcome in result.outcomes
        },
    )
