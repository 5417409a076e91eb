"""Per-epoch collapse measures of pretraining runs, as a Markdown table (from each run's pretraining/history.json).

Usage: python docs/studies/collapse_table.py RUN_DIR [RUN_DIR ...] [--measures output_cosine,output_spread,embedding_collapse]
A run folder is a study's ``pretrain/<method>/s<seed>``; rows are runs, columns epochs, cells the measure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def collapse_rows(run_dirs: list[Path], measure: str) -> list[tuple[str, list[float | None]]]:
    """``(run name, [measure per epoch])`` for each run folder that has a pretraining history."""
    rows = []
    for run_dir in run_dirs:
        history = run_dir / "pretraining" / "history.json"
        if not history.is_file():
            raise SystemExit(f"{history} does not exist: not a finished pretraining folder")
        epochs = json.loads(history.read_text())["epochs"]
        rows.append((f"{run_dir.parent.name}/{run_dir.name}", [epoch["training"].get(measure) for epoch in epochs]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--measures", default="output_cosine,output_spread,embedding_collapse")
    args = parser.parse_args()
    for measure in args.measures.split(","):
        rows = collapse_rows(args.run_dirs, measure)
        width = max(len(values) for _, values in rows)
        print(f"\n`{measure}` per pretraining epoch\n")
        print("| run | " + " | ".join(str(epoch) for epoch in range(1, width + 1)) + " |")
        print("| --- |" + " --- |" * width)
        for name, values in rows:
            cells = ["-" if value is None else f"{value:.3f}" for value in values] + ["-"] * (width - len(values))
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
