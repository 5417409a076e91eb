"""Compare two sets of bundle demo runs exactly: same test metrics, same per-epoch losses and validation values.

A restructuring of the bundle generator must not change what a bundle computes. Record every bundle's demo run
before the change and after it (same seed, one output folder per bundle), then::

    python docs/studies/compare_bundle_runs.py /tmp/before /tmp/after --same-path /src/before=/src/after

Every ``*.json`` under each bundle's folder (``metrics.json``, ``history.json``, ``test_samples.json``,
``model_info.json``, per branch and for pretraining) is compared value by value; only wall-clock ``seconds`` are
ignored, and ``--same-path OLD=NEW`` treats paths under two source checkouts as equal. A change that renames
(a knob, a branch) lists its renames: ``--rename OLD=NEW`` replaces the quoted JSON string ``"OLD"`` (keys and
values) and the folder name ``OLD`` in the runs before. Exit status 1 if any differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

IGNORED_KEYS = {"seconds"}


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Where ``before`` and ``after`` differ (exact equality of numbers), as ``path: before != after`` lines."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key in IGNORED_KEYS:
                continue
            if key not in before or key not in after:
                found.append(f"{where}/{key}: only in {'after' if key not in before else 'before'}")
                continue
            found += differences(before[key], after[key], f"{where}/{key}")
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} items != {len(after)} items"]
        return [line for index, pair in enumerate(zip(before, after)) for line in differences(*pair, f"{where}[{index}]")]
    return [] if before == after else [f"{where}: {before!r} != {after!r}"]


def compare_run(before: Path, after: Path, same_paths: dict[str, str], renames: dict[str, str] | None = None) -> list[str]:
    """Differences between two output folders of one bundle, file by file (``renames``: see the module doc)."""
    renames = renames or {}
    found = []
    for path in sorted(before.rglob("*.json")):
        relative = path.relative_to(before)
        relative = Path(*(renames.get(part, part) for part in relative.parts))
        other = after / relative
        if not other.is_file():
            found.append(f"{relative}: missing after")
            continue
        text = path.read_text()
        for old, new in same_paths.items():
            text = text.replace(old, new)
        for old, new in renames.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        found += [f"{relative}{line}" for line in differences(json.loads(text), json.loads(other.read_text()))]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="folder with one output folder per bundle, recorded before the change")
    parser.add_argument("after", type=Path, help="the same runs after the change")
    parser.add_argument("--same-path", action="append", default=[], metavar="OLD=NEW", help="paths under OLD and NEW are the same")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="a knob, key or folder renamed")
    parser.add_argument("--finished-only", action="store_true", help="compare only the bundles whose run after has metrics.json")
    args = parser.parse_args(argv)
    same_paths = dict(pair.split("=", 1) for pair in args.same_path)
    renames = dict(pair.split("=", 1) for pair in args.rename)
    changed = 0
    for folder in sorted(p for p in args.before.iterdir() if p.is_dir()):
        if args.finished_only and not (args.after / folder.name / "metrics.json").is_file():
            continue
        found = compare_run(folder, args.after / folder.name, same_paths, renames)
        if not (folder / "metrics.json").is_file():
            found.insert(0, "metrics.json: missing before (the run did not finish)")
        test = json.loads((folder / "metrics.json").read_text())["test"] if (folder / "metrics.json").is_file() else {}
        key = next((k for k in ("f1_macro", "iou_per_image_mean") if k in test), None)
        summary = f"{key} {test[key]}" if key else "no metrics.json"
        print(f"{folder.name}: {'identical' if not found else f'{len(found)} differences'} ({summary})")
        for line in found[:20]:
            print(f"    {line}")
        changed += bool(found)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
