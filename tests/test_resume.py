"""A training killed with SIGKILL at a random step and started again ends exactly where an uninterrupted one ends.

Every trainer (supervised, DINO, CASS, cross teaching, PiCIE, contrastive segmentation), run as a user runs it
(``python -m monai.bundle run``) on the demo data, with and without loader workers: the per-step losses of every
epoch, the validation scores and the learning rates of the resumed run equal the uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = ["--image_size", "32", "--checkpoint_interval_s", "0"]  # PiCIE overrides the size (the last value counts)

# bundle, run id, knobs, the stage's checkpoint and history files (relative to the output folder)
TRAINERS = {
    "supervised": ("supervised_cls_isic", "training", ["--max_epochs", "4"], "checkpoint.pt", "history.json"),
    "dino": (
        "dino_isic",
        "pretrain",
        ["--pretrain_epochs", "4", "--head_out_dim", "64", "--head_hidden_dim", "64"],
        "pretraining_checkpoint.pt",
        "pretraining/history.json",
    ),
    "cass": ("cass_isic", "pretrain", ["--pretrain_epochs", "4"], "pretraining_checkpoint.pt", "pretraining/history.json"),
    "cross_teaching": ("crossteach_seg_isic", "training", ["--max_epochs", "4"], "checkpoint.pt", "history.json"),
    # PiCIE at 64 px: at 32 px a last batch of one image reaches BatchNorm as 1x1 features
    "picie": ("picie_seg_isic", "pretrain", ["--pretrain_epochs", "4", "--image_size", "64"], "pretraining_checkpoint.pt", "pretraining/history.json"),
    "contrastive": (
        "contrast_seg_isic",
        "pretrain_global",
        ["--global_epochs", "4"],
        "pretraining_global_checkpoint.pt",
        "pretraining_global/history.json",
    ),
}


def _command(name: str, output_dir: Path, num_workers: int) -> list[str]:
    bundle, run_id, knobs, _, _ = TRAINERS[name]
    config = f"bundles/{bundle}/configs/train.json"
    return [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config, "--output_dir", str(output_dir), *TINY, *knobs, "--num_workers", str(num_workers)]


def _start(name: str, output_dir: Path, num_workers: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    log = (output_dir.parent / f"{output_dir.name}.log").open("a")
    return subprocess.Popen(_command(name, output_dir, num_workers), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(process: subprocess.Popen, output_dir: Path) -> None:
    assert process.wait(timeout=900) == 0, (output_dir.parent / f"{output_dir.name}.log").read_text()[-4000:]


def _history(output_dir: Path, name: str) -> list[dict]:
    """Every epoch record without its wall-clock seconds."""
    epochs = json.loads((output_dir / TRAINERS[name][4]).read_text())["epochs"]
    return [{key: value for key, value in epoch.items() if key != "seconds"} for epoch in epochs]


def _kill_at_a_random_step(process: subprocess.Popen, output_dir: Path, name: str, rng: random.Random) -> float:
    """SIGKILL the run (its whole process group, loader workers included) at a random time after its first checkpoint."""
    checkpoint, history = output_dir / TRAINERS[name][3], output_dir / TRAINERS[name][4]
    deadline = time.monotonic() + 600
    while not (checkpoint.is_file() and history.is_file()):
        assert process.poll() is None, (output_dir.parent / f"{output_dir.name}.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.05)
    epoch_seconds = json.loads(history.read_text())["epochs"][0]["seconds"]
    delay = rng.uniform(0.1, 1.5) * epoch_seconds  # within the second or third epoch of four
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return delay


# every trainer in-process (num_workers=0, where the transforms' own states must be restored), and with loader workers
# two whose random transforms run in the loader
CASES = [(name, 0) for name in TRAINERS] + [("supervised", 2), ("cross_teaching", 2)]


@pytest.mark.parametrize(("name", "num_workers"), CASES)
def test_a_run_killed_at_a_random_step_resumes_to_the_uninterrupted_run(name: str, num_workers: int, tmp_path: Path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = _start(name, reference, num_workers)  # side by side with the run to kill: one thread each
    rng = random.Random(f"{name}-{num_workers}")
    process = _start(name, killed, num_workers)
    delay = _kill_at_a_random_step(process, killed, name, rng)
    _finish(uninterrupted, reference)
    expected = _history(reference, name)
    assert len(expected) == 4 and all(epoch["step_losses"] for epoch in expected)
    interrupted = _history(killed, name)
    assert len(interrupted) < 4, f"the run ended before the kill ({delay:.1f} s after its first checkpoint)"
    _finish(_start(name, killed, num_workers), killed)
    assert "Restored all variables" in (tmp_path / "killed.log").read_text()
    resumed = _history(killed, name)
    assert [epoch["step_losses"] for epoch in resumed] == [epoch["step_losses"] for epoch in expected], f"killed after {delay:.1f} s"
    assert resumed == expected
