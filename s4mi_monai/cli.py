"""The ``s4mi`` command line (fire): dataset preparation, demo data, dataset checks, saliency maps, result tables,
studies (a grid of bundles x label fractions x seeds) and their reports."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fire

from s4mi_monai.data import (
    DEFAULT_LABEL_FRACTIONS,
    SPLITS,
    DatasetError,
    check_datalist,
    load_datalist,
    prepare_csv,
    prepare_dermofit,
    prepare_isic2017,
    save_datalist,
)
from s4mi_monai.data.check import MIN_IMAGE_SIDE
from s4mi_monai.study.page import PageError
from s4mi_monai.study.spec import SpecError


def _fractions(extra: float | str | Sequence[float] | None) -> tuple[float, ...]:
    """The default label fractions plus any asked for (``--fractions 0.05,0.2``)."""
    if extra is None:
        return DEFAULT_LABEL_FRACTIONS
    values = [extra] if isinstance(extra, (int, float)) else extra.split(",") if isinstance(extra, str) else extra
    return tuple(sorted({*DEFAULT_LABEL_FRACTIONS, *(float(v) for v in values)}))


def _summary(datalist: Mapping, out: Path) -> str:
    counts = datalist["provenance"]["counts"]
    lines = [f"wrote {out}  ({datalist['name']}: {len(datalist['classes'])} classes, split {datalist['provenance']['split']})"]
    for split in SPLITS:
        per_class = ", ".join(f"{k} {v}" for k, v in counts[split]["per_class"].items())
        lines.append(f"  {split:<10} {counts[split]['items']:>6} items  ({per_class})")
    fractions = ", ".join(f"{k}: {len(v)}" for k, v in datalist["label_fractions"].items())
    lines.append(f"  labeled training items per fraction: {fractions}")
    lines.extend(f"  WARNING {warning}" for warning in datalist["provenance"].get("warnings", []))
    for duplicate in datalist["provenance"].get("duplicates_across_splits", []):
        lines.append(f"  WARNING duplicate across splits: {duplicate}")
    return "\n".join(lines)


class Prepare:
    """Turn a dataset into a datalist JSON: checked files, seeded splits and nested label fractions."""

    def isic2017(self, root: str, out: str, seed: int = 0, fractions: str | None = None, min_side: int = MIN_IMAGE_SIDE) -> str:
        """ISIC-2017 in the official download layout (official splits when present, else 70/10/20)."""
        datalist = prepare_isic2017(root, seed=seed, label_fractions=_fractions(fractions), min_side=min_side)
        return _summary(datalist, save_datalist(datalist, out))

    def dermofit(self, root: str, out: str, seed: int = 0, fractions: str | None = None, min_side: int = MIN_IMAGE_SIDE) -> str:
        """Dermofit Image Library layout (one folder per class, one per lesion), 10 classes, 70/10/20."""
        datalist = prepare_dermofit(root, seed=seed, label_fractions=_fractions(fractions), min_side=min_side)
        return _summary(datalist, save_datalist(datalist, out))

    def csv(
        self,
        csv: str,
        out: str,
        root: str | None = None,
        name: str | None = None,
        image_column: str = "image",
        mask_column: str | None = None,
        label_column: str | None = None,
        label_columns: str | None = None,
        patient_column: str | None = None,
        split_column: str | None = None,
        multi_label: bool = False,
        label_separator: str = ";",
        classes: str | None = None,
        seed: int = 0,
        fractions: str | None = None,
        tile_size: int | None = None,
        tile_output_size: int = 224,
        tiles_dir: str | None = None,
        pad_value: int = 0,
        red_normalization: bool = False,
        encoding: str = "utf-8",
        min_side: int = MIN_IMAGE_SIDE,
    ) -> str:
        """Any dataset described by a CSV (images, masks, labels, patients); optional slide tiling.

        ``--red_normalization`` records in the datalist that bundles normalise these images by their red channel.
        ``--encoding`` is the CSV's text encoding (default UTF-8; e.g. latin-1 for an old spreadsheet export).
        ``--min_side``: images smaller than this many pixels on a side are refused (every preparer has it).
        """
        datalist = prepare_csv(
            csv,
            root=root,
            name=name,
            image_column=image_column,
            mask_column=mask_column,
            label_column=label_column,
            label_columns=label_columns,
            patient_column=patient_column,
            split_column=split_column,
            multi_label=multi_label,
            label_separator=label_separator,
            classes=classes,
            seed=seed,
            tile_size=tile_size,
            tile_output_size=tile_output_size,
            tiles_dir=tiles_dir,
            pad_value=pad_value,
            label_fractions=_fractions(fractions),
            red_normalization=red_normalization,
            encoding=encoding,
            min_side=min_side,
        )
        return _summary(datalist, save_datalist(datalist, out))


def _verified(describe: Callable[[Any], str], result: Any) -> str:
    """The verification's description; printed and exit status 1 when it found a problem."""
    text = describe(result)
    if not result.ok:
        print(text)
        raise SystemExit(1)
    return text


class S4MI:
    """s4mi: annotation-efficient self- and semi-supervised learning for medical images, on MONAI."""

    def __init__(self) -> None:
        self.prepare = Prepare()

    def demo_data(self, out: str = "demo_data", datalists: str = "datalists", seed: int = 0, overwrite: bool = False) -> str:
        """Generate the synthetic demo datasets and prepare their datalists (deterministic, seconds)."""
        from s4mi_monai.data.demo_datalists import prepare_demo

        written = prepare_demo(out, datalists, seed=seed, overwrite=overwrite)
        return "\n".join(_summary(load_datalist(path), path) for path in written.values())

    def bundles(self, root: str = "bundles", names: str | None = None) -> str:
        """Regenerate the bundles' configs, metadata and READMEs from their templates (results are kept)."""
        from s4mi_monai.bundlegen.write import write_bundles

        chosen = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        return f"wrote {len(write_bundles(root, chosen))} files under {root}/"

    def pack(self, bundle: str, out: str, model_dir: str | None = None, weights_apart: bool = False, weights_url: str | None = None) -> str:
        """One archive of a bundle for a collaborator who has only MONAI: configs, README, its code, weights, checksums.

        ``--model_dir`` is the training output to ship (default: the bundle's models/); ``--weights_apart`` keeps the
        weights out of the archive, listed in large_files.yml (``--weights_url``: where they will be downloadable).
        """
        from s4mi_monai.bundlegen.pack import manifest, pack_bundle

        return manifest(pack_bundle(bundle, out, model_dir=model_dir, weights_apart=weights_apart, weights_url=weights_url))

    def unpack(self, archive: str, out: str = ".") -> str:
        """Extract a packed bundle below ``--out`` and verify it (checksums, weights, metadata); exits 1 on a problem."""
        from s4mi_monai.bundlegen.pack import describe, unpack_bundle

        return _verified(describe, unpack_bundle(archive, out))

    def verify(self, bundle: str) -> str:
        """Verify a packed bundle folder again (checksums, weights, metadata); exits 1 on a problem."""
        from s4mi_monai.bundlegen.pack import describe, verify_bundle

        return _verified(describe, verify_bundle(bundle))

    def check(self, datalist: str, dataset_dir: str | None = None) -> str:
        """Re-check every file of a prepared datalist (exists, decodes, masks, labels, duplicates)."""
        loaded = load_datalist(datalist, dataset_dir)
        report = check_datalist(loaded)
        report.raise_if_problems(f"datalist {datalist}")
        n_files = len(report.info)
        return "\n".join([f"{datalist}: {n_files} files checked, no problems", *(f"  WARNING {w}" for w in report.warnings)])

    def saliency(
        self,
        bundle: str,
        images: str,
        model_path: str | None = None,
        output_dir: str | None = None,
        n_images: int = 8,
        device: str | None = None,
    ) -> str:
        """Gradient saliency panels (image, map, overlay) of a trained classification bundle on a folder of images."""
        from s4mi_monai.visualize import bundle_saliency

        written = bundle_saliency(bundle, images, model_path=model_path, output_dir=output_dir, n_images=n_images, device=device)
        return "\n".join([f"wrote {len(written)} saliency panels", *(f"  {path}" for path in written)])

    def table(self, *runs: str, columns: str | Sequence[str] | None = None, split: str = "test", task: str = "classification") -> str:
        """A markdown table of finished runs' metrics: s4mi table "LABEL=RUN_DIR[#BRANCH]" ..."""
        from s4mi_monai.metrics.tables import CLASSIFICATION_COLUMNS, SEGMENTATION_COLUMNS, metrics_table

        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be classification or segmentation, got {task!r}")
        if columns is None:
            chosen = CLASSIFICATION_COLUMNS if task == "classification" else SEGMENTATION_COLUMNS
        else:
            chosen = columns.split(",") if isinstance(columns, str) else columns
        return metrics_table(runs, [*chosen, "best_validation"], split=split)

    def study(self, spec: str, out: str, jobs: int = 1, threads: int | None = None, dry_run: bool = False) -> str:
        """Run a study spec: every method x label fraction x seed as a bundle command; finished runs are skipped.

        ``--jobs N`` runs N at once and splits ``--threads`` (default: all CPUs) between them; ``--dry_run``
        writes and lists the commands only. Exits non-zero when a run failed (the others still ran).
        """
        from s4mi_monai.study import run_study

        result = run_study(spec, out, jobs=jobs, threads=threads, dry_run=dry_run)
        if dry_run:
            return f"{len(result.outcomes)} runs planned; commands in {Path(out) / 'commands.sh'}"
        summary = result.summary()
        if result.failed:
            print(summary)
            raise SystemExit(1)
        return summary

    def floors(
        self, datalist: str, out: str, split: str = "test", image_size: int = 224, seeds: str | int | Sequence[int] = "0"
    ) -> str:
        """Label-free floors for unsupervised segmentation (Otsu, k-means on colours), scored like a bundle run.

        Writes ``<out>/<floor>/s<seed>/metrics.json`` and ``test_samples.json``, to compare with ``s4mi report``.
        """
        from s4mi_monai.study.floors import label_free_floors

        # fire reads "--seeds 0,1,2" as a tuple and "--seeds 0" as an int
        chosen = tuple(int(seed) for seed in (seeds if isinstance(seeds, (tuple, list)) else str(seeds).split(",")))
        results = label_free_floors(datalist, out, split=split, image_size=image_size, seeds=chosen)
        lines = [f"{'floor':<15} {'seed':>4} {'iou_per_image_mean':>19} {'miou_all_classes':>17} {'pixel_accuracy':>15}"]
        for floor, by_seed in results.items():
            for seed, test in by_seed.items():
                lines.append(
                    f"{floor:<15} {seed:>4} {test['iou_per_image_mean']:>19.4f} {test['miou_all_classes']:>17.4f} {test['pixel_accuracy']:>15.4f}"
                )
        return "\n".join(lines + [f"written under {out}"])

    def report(
        self,
        *paths: str,
        metrics: str | Sequence[str] | None = None,
        baseline: str | None = None,
        out: str | None = None,
        n_boot: int = 1000,
        seed: int = 0,
        page: str | Sequence[str] | None = None,
    ) -> str:
        """Tables with 95 % intervals, paired comparisons and figures of a study folder (or of run folders).

        Writes report.md, table_<metric>.csv, comparisons.csv and figure_<metric>.png to ``--out``
        (default: ``<study>/report``) and prints the markdown. ``--page docs/results.md`` (or several pages,
        comma-separated) also refills each page's blocks for this study (``<!-- report STUDY claims -->`` ...
        ``<!-- /report -->``; parts ``progress``, ``claims``, ``table METRIC``), keeping the prose around them.
        """
        from s4mi_monai.study.report import build_report, markdown_report, write_report

        chosen = metrics.split(",") if isinstance(metrics, str) else metrics
        is_study = len(paths) == 1 and Path(paths[0], "study.json").is_file()
        if page is not None and not is_study:
            raise PageError(f"--page refills a page from one study folder (with study.json), not from {list(paths)}")
        report = build_report(paths, metrics=chosen, baseline=baseline, n_boot=n_boot, seed=seed)
        if out is None:
            out = str(Path(paths[0]) / "report") if is_study else "report"
        written = write_report(report, out)
        lines = [f"wrote {path}" for path in written]
        if page is not None:
            from s4mi_monai.study.page import update_pages

            pages = page.split(",") if isinstance(page, str) else list(page)
            lines += [f"refilled {count} block(s) of {path}" for path, count in update_pages(pages, report, paths[0]).items()]
        return markdown_report(report) + "\n" + "\n".join(lines)


USER_ERRORS = (DatasetError, SpecError, PageError, FileNotFoundError)
"""Problems with the user's input: printed as a message (every problem listed) and exit status 2, no traceback."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``s4mi`` console script; ``--debug`` shows the traceback of an input problem too."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        fire.Fire(S4MI(), command=args, name="s4mi")
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"s4mi: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
