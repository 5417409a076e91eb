"""Keep a hand-written results page in step with a study: refill its marked blocks from the study's report.

A page (``docs/results.md``) mixes prose with tables that must match the committed runs. Each table sits in a
block the page names by study folder and part::

    <!-- report isic2017_label_efficiency_classification claims -->
    (replaced by the claims table)
    <!-- /report -->

Parts: ``progress`` (runs with results, and the seeds finished at every fraction, per method), ``claims``
(the verdict table) and ``table <metric>`` (the Table-1 layout with its interval note). ``s4mi report STUDY
--page PAGE`` refills every block of that study and leaves the rest of the page as it is, so the prose
around the tables stays the authors' and the numbers stay the report's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from s4mi_monai.io import atomic_write_text
from s4mi_monai.study.report import StudyReport, claims_table, interval_note, markdown_table, percent
from s4mi_monai.study.runner import STUDY_FILE
from s4mi_monai.study.spec import run_folder

__all__ = ["BLOCK", "PageError", "page_parts", "progress_text", "update_page", "update_pages"]


class PageError(ValueError):
    """A page that cannot be refilled (no block for the study, an unknown part); the message names the page."""


BLOCK = re.compile(r"(?P<start><!-- report (?P<study>\S+) (?P<part>[^>]+?) -->\n)(?P<body>.*?)(?P<end><!-- /report -->)", re.S)


def progress_text(study: str | Path) -> str:
    """How far a study folder is: fine-tuning runs with results of those planned, and per method the seeds
    finished at every one of its fractions (the seeds a verdict can use)."""
    plan = json.loads((Path(study) / STUDY_FILE).read_text())
    runs = [run for run in plan["runs"] if run["fraction"] is not None]
    finished = {run["id"] for run in runs if (run_folder(study, run["method"], run["seed"], run["fraction"]) / "metrics.json").is_file()}
    lines = [f"{len(finished)} of {len(runs)} fine-tuning runs have results ({len(runs) - len(finished)} to run).", ""]
    lines += ["| method | fractions | seeds finished at every fraction | runs with results |", "| --- | --- | --- | --- |"]
    for method in dict.fromkeys(run["method"] for run in runs):
        mine = [run for run in runs if run["method"] == method]
        seeds = sorted({run["seed"] for run in mine})
        complete = [seed for seed in seeds if all(run["id"] in finished for run in mine if run["seed"] == seed)]
        fractions = ", ".join(percent(f) for f in sorted({run["fraction"] for run in mine}))
        done = sum(run["id"] in finished for run in mine)
        lines.append(f"| {method} | {fractions} | {', '.join(map(str, complete)) or 'none yet'} | {done} of {len(mine)} |")
    return "\n".join(lines)


def page_parts(report: StudyReport, study: str | Path) -> dict[str, str]:
    """Every part a page may ask for, rendered from ``report`` (of the study folder ``study``)."""
    parts = {"progress": progress_text(study), "claims": claims_table(report)}
    for metric in report.metrics:
        parts[f"table {metric}"] = f"{markdown_table(report, metric)}\n\n{interval_note(report, metric)}."
    return parts


def update_page(page: str | Path, report: StudyReport, study: str | Path) -> int:
    """Refill the blocks of ``page`` that name the study folder ``study``; returns how many were refilled.

    Raises :class:`PageError` naming the page when it has no block for the study or asks for an unknown part,
    before anything is written.
    """
    return update_pages([page], report, study)[str(page)]


def update_pages(pages: Sequence[str | Path], report: StudyReport, study: str | Path) -> dict[str, int]:
    """:func:`update_page` for several pages: every page is checked before any is written."""
    name, parts = Path(study).name, page_parts(report, study)
    refilled: dict[str, str] = {}
    counts: dict[str, int] = {}
    for page in map(Path, pages):
        text = page.read_text(encoding="utf-8")
        mine = [match for match in BLOCK.finditer(text) if match["study"] == name]
        if not mine:
            raise PageError(f"{page} has no block for study {name}: add `<!-- report {name} claims -->` and `<!-- /report -->` around the table to refill")
        unknown = sorted({match["part"].strip() for match in mine} - set(parts))
        if unknown:
            raise PageError(f"{page}: unknown part(s) {unknown} for study {name}; parts: {', '.join(parts)}")

        def refill(match: re.Match[str]) -> str:
            if match["study"] != name:
                return match[0]
            return f"{match['start']}{parts[match['part'].strip()]}\n{match['end']}"

        refilled[str(page)], counts[str(page)] = BLOCK.sub(refill, text), len(mine)
    for page, text in refilled.items():
        atomic_write_text(page, text)
    return counts
