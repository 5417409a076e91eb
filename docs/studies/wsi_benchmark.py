"""Benchmark of a bundle's ``run slides`` on a generated 20,000 x 20,000 pyramidal TIFF: windows per second and peak memory.

    python docs/studies/wsi_benchmark.py [--bundle supervised_seg_dermatomyositis] [--side 20000] [--device cpu]

The slide (glass with one tissue disc over about half of it, written tile by tile, never whole in memory) is
made once into ``--work`` (default /tmp/s4mi_wsi_benchmark). The network is the bundle's demo network with
untrained weights (speed does not depend on them), at the bundle's demo input size unless ``--image_size``.
Prints one JSON line: windows, blank windows skipped, seconds, windows per second (all and network-run),
peak resident memory of the process, and the slide's size in memory as RGB for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def make_slide(path: Path, side: int, tile: int = 512) -> None:
    import tifffile

    def tiles(scale: int):
        size = -(-side // scale)
        for top in range(0, size, tile):
            for left in range(0, size, tile):
                yy, xx = np.mgrid[top : top + tile, left : left + tile] * scale
                disc = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) < (0.4 * side) ** 2
                block = np.full((tile, tile, 3), 242, np.uint8)
                block[disc] = (150, 70, 95)
                block[disc & ((yy // 40 + xx // 40) % 3 == 0)] = (90, 40, 70)  # some texture inside the tissue
                yield block

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib", "dtype": np.uint8}
        tif.write(tiles(1), shape=(side, side, 3), subifds=3, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER", **options)
        for scale in (2, 4, 8):
            tif.write(tiles(scale), shape=(-(-side // scale), -(-side // scale), 3), subfiletype=1, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="supervised_seg_dermatomyositis")
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--work", default="/tmp/s4mi_wsi_benchmark")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--slide_level", type=int, default=0)
    parser.add_argument("--slide_batch_size", type=int, default=8)
    args = parser.parse_args()

    from monai.bundle import ConfigParser, ConfigWorkflow

    work = Path(args.work)
    (work / "slides").mkdir(parents=True, exist_ok=True)
    slide = work / "slides" / f"synthetic_{args.side}.tif"
    if not slide.is_file():
        started = time.perf_counter()
        make_slide(slide, args.side)
        print(f"wrote {slide} ({slide.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    config = Path(__file__).resolve().parents[2] / "bundles" / args.bundle / "configs" / "inference.json"
    model = work / "model" / "model.pt"
    model.parent.mkdir(exist_ok=True)
    overrides = {"image_size": args.image_size} if args.image_size else {}
    network_config = ConfigParser()
    network_config.read_config(str(config))
    network_config.update({"model_path": str(model), **overrides})
    torch.manual_seed(0)
    torch.save(network_config.get_parsed_content("network_def").state_dict(), model)
    workflow = ConfigWorkflow(
        config_file=str(config), workflow_type=None, run_id="slides", input_dir=str(slide), output_dir=str(work / "out"),
        model_path=str(model), device=args.device, slide_level=args.slide_level, slide_batch_size=args.slide_batch_size, **overrides,
    )  # fmt: skip
    workflow.initialize()
    started = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - started
    summary = json.loads((work / "out" / "slides.json").read_text())[0]
    run = summary["windows"] - summary["blank"]
    print(
        json.dumps(
            {
                "bundle": args.bundle,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "slide": summary["size"],
                "level": summary["level"],
                "window": summary["window"],
                "network_input": workflow.parser.get_parsed_content("image_size"),
                "windows": summary["windows"],
                "blank_skipped": summary["blank"],
                "seconds": round(seconds, 1),
                "windows_per_s": round(summary["windows"] / seconds, 1),
                "network_windows_per_s": round(run / seconds, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "slide_rgb_mib": round(summary["size"][0] * summary["size"][1] * 3 / 2**20),
            }
        )
    )


if __name__ == "__main__":
    main()
