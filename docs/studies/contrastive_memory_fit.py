"""Largest batch and image size per contrastive-segmentation stage that fit a memory budget, from measured peaks.

Reads the JSON lines of ``docs/studies/contrastive_memory.sh`` (each stage's peak resident memory at 224 px with
two batch sizes and at 448 px with one), fits ``peak = fixed + per_image * batch`` at 224 px, takes the per-image
cost at 448 px to see how it scales with the pixels, and prints, per network and stage, the measured peaks, the
largest batch at 224 px and the largest side (a multiple of 16) at batch 1 and at the stage's default batch that
stay under the budget. These are extrapolations from three measured points and are labelled as such.

Usage: python docs/studies/contrastive_memory_fit.py results/contrast_memory.jsonl --budget_gb 24
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

DEFAULT_BATCH = {"global_contrastive": 64, "local_contrastive": 4, "finetune": 8}


def fit(points: dict[tuple[int, int], float]) -> tuple[float, float, float]:
    """``(fixed MiB, MiB per image at 224 px, exponent of the per-image cost in the side)`` from the measured peaks."""
    (small, small_peak), (large, large_peak) = sorted((batch, peak) for (size, batch), peak in points.items() if size == 224)
    per_image = (large_peak - small_peak) / (large - small)
    fixed = small_peak - per_image * small
    big = [(batch, peak) for (size, batch), peak in points.items() if size == 448]
    exponent = 2.0
    if big and per_image > 0:
        batch, peak = big[0]
        per_image_448 = (peak - fixed) / batch
        if per_image_448 > 0:
            exponent = math.log(per_image_448 / per_image, 2)
    return fixed, per_image, exponent


def largest_side(fixed: float, per_image: float, exponent: float, batch: int, budget: float) -> int:
    """The largest side, a multiple of 16, whose predicted peak at ``batch`` stays under ``budget`` MiB."""
    if per_image <= 0 or budget <= fixed:
        return 0
    side = 224 * ((budget - fixed) / (per_image * batch)) ** (1 / exponent)
    return int(side // 16 * 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurements", type=Path)
    parser.add_argument("--budget_gb", type=float, default=24.0)
    args = parser.parse_args()
    budget = args.budget_gb * 1024
    points: dict[tuple[str, str], dict[tuple[int, int], float]] = defaultdict(dict)
    for line in args.measurements.read_text().splitlines():
        record = json.loads(line)
        result = record["result"]
        key = (record["architecture"], result["stage"])
        points[key][(record["image_size"], result["batch_size"])] = result["peak_memory_mb"]
    print("| network | stage | peak MiB, 224 px batch 2 / 8, 448 px batch 2 (measured) | largest batch at 224 px | "
          "largest side at batch 1 | largest side at the default batch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (architecture, stage), measured in sorted(points.items()):
        fixed, per_image, exponent = fit(measured)
        peaks = " / ".join(f"{measured.get(point, float('nan')):,.0f}" for point in ((224, 2), (224, 8), (448, 2)))
        batch = int((budget - fixed) // per_image) if per_image > 0 else 0
        default = DEFAULT_BATCH[stage]
        print(
            f"| {architecture} | {stage} | {peaks} | {batch} | "
            f"{largest_side(fixed, per_image, exponent, 1, budget)} | {largest_side(fixed, per_image, exponent, default, budget)} "
            f"(batch {default}) |"
        )
    print(f"\nBudget {args.budget_gb:g} GB; batch and sides extrapolated linearly in the batch and as side^k in the side "
          "(k fitted from 224 and 448 px), from the measured points above.")


if __name__ == "__main__":
    main()
