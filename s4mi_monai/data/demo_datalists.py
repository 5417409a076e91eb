"""Demo data end to end: generate the three synthetic datasets and prepare them with the real preparers.

The committed ``datalists/demo_*.json`` are the output of :func:`prepare_demo`. Their provenance
records the demo seed, so when a bundle is run on a fresh clone and the generated images are not
there yet, :func:`ensure_demo_files` regenerates them (deterministically, in a few seconds).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from s4mi_monai.data.datalist import SPLITS, save_datalist
from s4mi_monai.data.demo import make_demo_data
from s4mi_monai.data.dermofit import prepare_dermofit
from s4mi_monai.data.isic2017 import prepare_isic2017
from s4mi_monai.data.table import prepare_csv

logger = logging.getLogger(__name__)

DEMO_DATALISTS = {"isic2017": "demo_isic2017.json", "dermofit": "demo_dermofit.json", "dermatomyositis": "demo_dermatomyositis.json"}


def prepare_demo(
    demo_root: str | Path = "demo_data", datalist_dir: str | Path = "datalists", seed: int = 0, overwrite: bool = False
) -> dict[str, Path]:
    """Generate the demo datasets under ``demo_root`` and write their datalists into ``datalist_dir``."""
    demo_root = Path(demo_root).resolve()
    roots = make_demo_data(demo_root, seed=seed, overwrite=overwrite)
    demo = {"demo_seed": seed}
    datalists = {
        "isic2017": prepare_isic2017(roots["isic2017"], seed=seed),
        "dermofit": prepare_dermofit(roots["dermofit"], seed=seed),
        "dermatomyositis": prepare_csv(
            roots["dermatomyositis"] / "labels.csv",
            name="dermatomyositis",
            label_column="phenotypes",
            multi_label=True,
            tile_size=480,
            tile_output_size=224,
            tiles_dir=demo_root / "dermatomyositis_tiles",
            seed=seed,
        ),
    }
    written = {}
    for name, datalist in datalists.items():
        datalist["provenance"].update(demo)
        datalist["provenance"].pop("csv", None)
        datalist["provenance"].pop("slides_dir", None)
        written[name] = save_datalist(datalist, Path(datalist_dir) / DEMO_DATALISTS[name], relative_dataset_dir=True)
    return written


def ensure_demo_files(datalist: Mapping) -> None:
    """Regenerate the demo images behind a demo datalist whose files are missing.

    Several processes may ask at once (every rank of a ``torchrun`` job on a fresh clone): one generates,
    under a lock, into a scratch folder beside the demo folder and moves each dataset into place whole;
    the others wait for the lock and find the files there. A dataset is never seen half-written.
    """
    seed = datalist.get("provenance", {}).get("demo_seed")
    root = Path(datalist["dataset_dir"])
    if seed is None or not _missing_files(datalist):
        return
    demo_root = root.parent
    demo_root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(demo_root / ".generating.lock"):
        if not _missing_files(datalist):
            return  # another process generated them while this one waited
        logger.info("demo data not found under %s: generating it (seed %s)", root, seed)
        with tempfile.TemporaryDirectory(dir=demo_root, prefix=".generating-") as scratch:
            fresh = prepare_demo(Path(scratch) / "demo_data", Path(scratch) / "datalists", seed=seed, overwrite=True)
            regenerated = json.loads(Path(fresh[datalist["name"]]).read_text())
            for generated in sorted((Path(scratch) / "demo_data").iterdir()):
                target = demo_root / generated.name
                shutil.rmtree(target, ignore_errors=True)
                os.replace(generated, target)
    if any(regenerated[split] != datalist[split] for split in SPLITS):
        logger.warning("the regenerated demo data differs from %s; rerun `s4mi demo-data`", datalist.get("datalist_path"))


def _missing_files(datalist: Mapping) -> bool:
    """Whether an image or mask named by any split of ``datalist`` is not on disk."""
    root = Path(datalist["dataset_dir"])
    for split in SPLITS:
        for item in datalist.get(split, []):
            if any(key in item and not (root / item[key]).is_file() for key in ("image", "mask")):
                return True
    return False


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if absent); other processes block until it is released."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
