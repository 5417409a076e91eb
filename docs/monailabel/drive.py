"""Drive the sample app's bundle tasks the way MONAI Label's ``/infer`` does, and print what comes back as JSON.

    PYTHONPATH=docs/monailabel/shim:APP_DIR MONAILABEL_PYTHON drive.py APP_DIR IMAGE

For every bundle under ``APP_DIR/model``: a request per output format (the input's own, .png, .nii.gz, .jpg for
segmentation), the returned mask's shape, type and values, or the classifier's probabilities, and any file
the call left in the bundle folder. ``tests/test_monailabel.py`` runs it in a MONAI Label environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FORMATS = (None, ".png", ".nii.gz", ".jpg")


def _read(path: str) -> np.ndarray:
    if path.endswith((".png", ".jpg")):
        from PIL import Image

        return np.asarray(Image.open(path))
    import nibabel

    return np.asanyarray(nibabel.load(path).dataobj)


def main(app_dir: str, image: str) -> None:
    from main import infer_task

    results = {}
    for folder in sorted(p for p in Path(app_dir, "model").iterdir() if p.is_dir()):
        before = {p for p in folder.rglob("*") if "__pycache__" not in p.parts}
        task = infer_task(folder, {})
        calls = []
        for extension in FORMATS if task.type == "segmentation" else (None,):
            request = {"image": image, "device": "cpu", **({"result_extension": extension} if extension else {})}
            label, answer = task(request)
            call = {"extension": extension, "prediction": answer.get("prediction")}
            if isinstance(label, str):
                array = _read(label)
                call.update(file=Path(label).suffix, shape=list(array.shape), dtype=str(array.dtype), values=sorted(map(int, np.unique(array))))
            calls.append(call)
        after = {p for p in folder.rglob("*") if "__pycache__" not in p.parts}
        results[folder.name] = {"type": task.type, "calls": calls, "new_files": sorted(str(p.relative_to(folder)) for p in after - before)}
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
