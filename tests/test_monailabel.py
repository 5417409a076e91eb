"""MONAI Label serves s4mi bundles (docs/monailabel): masks of the input's size in every format, probabilities for classifiers.

Runs in a separate MONAI Label environment (``bash docs/monailabel/install.sh``) named by ``S4MI_MONAILABEL_PYTHON``;
skipped with that reason where there is none (CI: monailabel's own pins cannot be installed beside this project's).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4mi_monai.bundlegen.pack import pack_bundle, unpack_bundle
from tests.conftest import untrained_model

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "docs" / "monailabel"
PYTHON = os.environ.get("S4MI_MONAILABEL_PYTHON")
ENV = {**os.environ, "PYTHONPATH": str(SAMPLE / "shim"), "PYTHONWARNINGS": "ignore"}


def _has_monailabel() -> bool:
    if not PYTHON:
        return False
    probe = subprocess.run([PYTHON, "-c", "import monailabel.tasks.infer.bundle"], env=ENV, capture_output=True, timeout=300)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _has_monailabel(), reason="no MONAI Label environment: set S4MI_MONAILABEL_PYTHON (bash docs/monailabel/install.sh)")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """The sample app with two segmentation bundles and a classification bundle, packed and unpacked as a collaborator would."""
    root = tmp_path_factory.mktemp("monailabel")
    app_dir = root / "app"
    (app_dir / "model").mkdir(parents=True)
    shutil.copy(SAMPLE / "app" / "main.py", app_dir / "main.py")
    for name in ("supervised_seg_isic", "supervised_cls_isic", "picie_seg_isic"):
        bundle = REPO / "bundles" / name
        pack_bundle(bundle, root / f"{name}.zip", model_dir=untrained_model(bundle, root / f"{name}_model"))
        assert unpack_bundle(root / f"{name}.zip", app_dir / "model").ok
    image = np.zeros((240, 320, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, 320)[None]
    image[60:180, 80:240] = (200, 80, 60)
    (root / "studies").mkdir()
    Image.fromarray(image).save(root / "studies" / "case1.png")
    return app_dir


def test_bundle_tasks_return_masks_at_the_input_size_and_probabilities(app):
    image = app.parent / "studies" / "case1.png"
    done = subprocess.run([PYTHON, str(SAMPLE / "drive.py"), str(app), str(image)], env={**ENV, "PYTHONPATH": f"{SAMPLE / 'shim'}:{app}"},
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.split("RESULTS ", 1)[1])
    classification = results["supervised_cls_isic"]
    for name in ("supervised_seg_isic", "picie_seg_isic"):  # PiCIE: its clusters mapped to classes, without its writers
        segmentation = results[name]
        assert segmentation["type"] == "segmentation" and not segmentation["new_files"], name
        for call in segmentation["calls"]:
            assert call["shape"] in ([240, 320], [320, 240]), call  # PNG/JPEG read as rows x columns; NIfTI in MONAI's order
            assert call["dtype"] == "uint8"
            assert set(call["values"]) <= ({0, 1} if call["file"] != ".jpg" else set(range(8))), call  # JPEG is lossy
        assert [c["file"] for c in segmentation["calls"]] == [".png", ".png", ".gz", ".jpg"]
    assert classification["type"] == "classification" and not classification["new_files"]
    scores = {p["label"]: p["score"] for p in classification["calls"][0]["prediction"]}
    assert set(scores) == {"nevus", "melanoma", "seborrheic_keratosis"} and sum(scores.values()) == pytest.approx(1, abs=1e-4)


@pytest.mark.slow
def test_the_server_answers_infer_on_localhost(app):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [PYTHON, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(app.parent / "studies"),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, env={**ENV, "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/info/", timeout=5).read())
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the server did not start"
                time.sleep(2)
        assert {"supervised_seg_isic", "supervised_cls_isic"} <= set(info["models"])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/infer/supervised_seg_isic?image=case1&output=image", data=b"{}", method="POST")
        answer = urllib.request.urlopen(request, timeout=300).read()
        mask = np.asarray(Image.open(io.BytesIO(answer)))
        assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 1}
    finally:
        server.terminate()
        server.wait(timeout=30)
