"""Demo data end to end: generate the three synthetic datasets and prepare them with the real preparers.

The committed ``datalists/demo_*.json`` are the output of :func:`prepare_demo`. Their provenance
records the demo seed, so when a bundle is run on a fresh clone and the generated images are not
there yet, :func:`ensure_demo_files` regenerates them (deterministically, in a few seconds).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
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
    """Regenerate the demo images behind a demo datalist whose files are missing."""
    seed = datalist.get("provenance", {}).get("demo_seed")
    root = Path(datalist["dataset_dir"])
    if seed is None or (root / datalist["training"][0]["image"]).is_file():
        return
    logger.info("demo data not found under %s: generating it (seed %s)", root, seed)
    with tempfile.TemporaryDirectory() as scratch:
        fresh = prepare_demo(root.parent, scratch, seed=seed, overwrite=True)
        regenerated = json.loads(Path(fresh[datalist["name"]]).read_text())
    if any(regenerated[split] != datalist[split] for split in SPLITS):
        logger.warning("the regenerated demo data differs from %s; rerun `s4mi demo-data`", datalist.get("datalist_path"))
