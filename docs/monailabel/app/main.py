"""A MONAI Label app that serves s4mi bundles: every bundle folder under ``model/`` becomes one inference model.

Each bundle is served through MONAI Label's ``BundleInferTask`` with what our bundles need (``docs/monailabel/README.md``):

* the task type from the bundle's ``metadata.json`` (MONAI Label would guess it from the folder name);
* for segmentation, the bundle's own file writers are filtered out, so nothing is written into the bundle
  folder (its ``inference.json`` ends with the 2-D uint8 mask MONAI Label's writer saves as PNG or NIfTI);
* for classification, no ``Restored`` step (it is for images), so ``/infer`` returns the class probabilities.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import monailabel
from monai.transforms import SaveImaged
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.tasks.infer.bundle import BundleInferTask

logger = logging.getLogger(__name__)


def bundle_task(folder: Path) -> str:
    """``classification`` or ``segmentation``, from the bundle's metadata (the predicted output's type)."""
    metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    output = next(iter(metadata["network_data_format"]["outputs"].values()))
    return "classification" if output.get("type") == "probabilities" else "segmentation"


def s4mi_writers(folder: Path) -> list[type]:
    """Our writer transforms (files only; PiCIE's cluster-to-class mapping is a step of its own and stays), from the
    bundle's own code (``scripts/``) or the installed package."""
    scripts = folder / "scripts"
    if (scripts / "s4mi_monai").is_dir() and str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))
    from s4mi_monai.transforms import SaveClusterMapd, SaveMaskAndOverlayd

    return [SaveMaskAndOverlayd, SaveClusterMapd]


def infer_task(folder: Path, conf: dict) -> BundleInferTask:
    """MONAI Label's bundle task for one of our bundles, configured for its task type."""
    if bundle_task(folder) == "classification":
        return BundleInferTask(str(folder), conf, type="classification", add_post_restore=False)
    return BundleInferTask(str(folder), conf, type="segmentation", post_filter=[SaveImaged, *s4mi_writers(folder)])


class S4MIApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        self.model_dir = Path(app_dir) / "model"
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="s4mi-monai", description="s4mi-monai bundles", version=monailabel.__version__)

    def init_infers(self) -> dict[str, InferTask]:
        folders = sorted(p for p in self.model_dir.iterdir() if (p / "configs" / "inference.json").is_file())
        if not folders:
            logger.warning("no bundle under %s: copy or unpack bundles there (s4mi unpack BUNDLE.zip --out %s)", self.model_dir, self.model_dir)
        return {folder.name: infer_task(folder, self.conf) for folder in folders}
