"""A study of tiny demo runs end to end: a failed run does not stop the others, an interrupted run resumes, finished runs are skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s4mi_monai.study import run_study

REPO = Path(__file__).resolve().parents[1]
S4MI = [sys.executable, "-c", "from s4mi_monai.cli import main; main()"]

pytestmark = pytest.mark.slow


def _default_interrupt() -> None:
    """Let Ctrl-C stop the study even when this test runs in the background (where SIGINT starts out ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_failure_interruption_resume_and_skip(tmp_path):
    spec = {
        "name": "tiny",
        "datalist": str(REPO / "datalists" / "demo_isic2017.json"),
        "fractions": [1.0],
        "seeds": [0],
        "baseline": "supervised",
        "overrides": {"demo": True, "image_size": 32, "num_workers": 0},
        "methods": [
            {"name": "supervised", "bundle": "supervised_cls_isic", "overrides": {"max_epochs": 8}},  # room to interrupt under load
            {"name": "broken", "bundle": "supervised_cls_isic", "overrides": {"backbone": "resnet7"}},
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "study"
    run_dir = out / "runs" / "supervised" / "f1.0-s0"
    command = [*S4MI, "study", str(tmp_path / "spec.json"), "--out", str(out), "--jobs", "2", "--threads", "2"]

    # 1. interrupt the study (Ctrl-C) once the supervised run has saved a checkpoint
    study = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_default_interrupt,  # a test run started in the background inherits SIGINT ignored
    )
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint.pt").is_file():
        assert study.poll() is None, f"study ended before the first checkpoint:\n{study.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.2)
    os.killpg(study.pid, signal.SIGINT)
    study.wait(timeout=60)
    assert not (run_dir / "metrics.json").exists()

    # 2. run the study again: the interrupted run resumes from its checkpoint, the broken one fails, the study exits 1
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 1, finished.stdout + finished.stderr
    assert "1 done, 1 failed" in finished.stdout and "FAILED broken/f1.0-s0" in finished.stdout
    log = (run_dir / "run.log").read_text()
    first, second = log.split("\n=== ")[1:]
    assert f"Restored all variables from {run_dir / 'checkpoint.pt'}" in second
    assert "Epoch [1/8]" in first and "Epoch [1/8]" not in second and "Epoch [8/8]" in second  # continued, not restarted
    status = json.loads((out / "status.json").read_text())
    assert status["supervised/f1.0-s0"]["status"] == "done"
    assert status["broken/f1.0-s0"]["status"] == "failed" and "resnet7" in status["broken/f1.0-s0"]["reason"]
    assert (run_dir / "test_samples.json").is_file() and (out / "study.log").read_text().count("started  supervised/f1.0-s0") == 2

    # 3. a third time: the finished run is skipped, only the broken one runs (and fails) again
    lines = []
    result = run_study(tmp_path / "spec.json", out, jobs=2, threads=2, echo=lines.append)
    assert [(o.run.id, o.status) for o in result.outcomes] == [("supervised/f1.0-s0", "skipped"), ("broken/f1.0-s0", "failed")]
    assert any("skipped  supervised/f1.0-s0" in line for line in lines)

    # 4. the report names the failure and why, and still reports the finished run
    report = subprocess.run([*S4MI, "report", str(out), "--n_boot", "50"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "| supervised | 0." in report.stdout and "## Runs without results" in report.stdout and "resnet7" in report.stdout
