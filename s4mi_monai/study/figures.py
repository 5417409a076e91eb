"""Label-efficiency figures in the style of the S4MI paper's Figure 5: a metric against the label fraction,
one line per method with its 95 % interval as a band, on a log-scaled fraction axis. A method that uses no
labels (fraction 0: PiCIE, the label-free floors) is a horizontal line with its interval as a band."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from s4mi_monai.io import atomic_write  # noqa: E402

if TYPE_CHECKING:
    from s4mi_monai.study.report import StudyReport

__all__ = ["label_efficiency_figure"]

MARKERS = "osD^vP*Xh<>"
TITLE_WIDTH = 70


def label_efficiency_figure(report: StudyReport, metric: str, path: str | Path) -> Path:
    """Write the figure of ``metric`` to ``path`` (PNG) and return the path.

    The PNG's metadata holds the title and axis labels (``Title``, ``XLabel``, ``YLabel``) so that tests and
    scripts can check what it shows without reading pixels.
    """
    from s4mi_monai.study.report import metric_label, percent, shown_bounds

    figure, axes = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    fractions = [f for f in report.fractions if f > 0] or [1.0]
    for index, method in enumerate(report.methods):
        label_free = report.cells.get((metric, method, 0.0))
        if label_free is not None:
            color = f"C{index % 10}"
            axes.axhline(label_free.interval.estimate, color=color, linestyle="--", linewidth=1.6, label=f"{method} (no labels)")
            low, high = shown_bounds(label_free.interval)
            if not (math.isnan(low) or math.isnan(high)):
                axes.axhspan(low, high, color=color, alpha=0.12, linewidth=0)
        points = [(f, report.cells[(metric, method, f)]) for f in fractions if (metric, method, f) in report.cells]
        if not points:
            continue
        xs = [f for f, _ in points]
        means = [c.interval.estimate for _, c in points]
        style = {"linewidth": 2.4, "color": "black"} if method == report.baseline else {"linewidth": 1.8}
        (line,) = axes.plot(xs, means, marker=MARKERS[index % len(MARKERS)], markersize=6, label=method, **style)
        lows, highs = zip(*(shown_bounds(c.interval) for _, c in points))
        defined = [not (math.isnan(lo) or math.isnan(hi)) for lo, hi in zip(lows, highs)]
        for x, mean, low, high, ok in zip(xs, means, lows, highs, defined):  # bars: visible for a lone point too
            if ok:
                axes.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], color=line.get_color(), capsize=4, linewidth=1)
        if sum(defined) > 1:
            axes.fill_between(
                [x for x, d in zip(xs, defined) if d],
                [lo for lo, d in zip(lows, defined) if d],
                [hi for hi, d in zip(highs, defined) if d],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(fractions if any(f > 0 for f in report.fractions) else []))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: percent(value)))
    low, high = min(fractions), max(fractions)
    axes.set_xlim(low / 1.25, high * 1.25)
    seeds = sorted({len(c.seeds) for (m, _, _), c in report.cells.items() if m == metric})
    if seeds and min(seeds) > 1:
        band = f"Bars and bands: 95 % t-interval over seeds ({'/'.join(map(str, seeds))} seeds per point), clipped to [0, 1]."
    else:
        band = "Bars and bands: 95 % interval (t over seeds; for one seed, bootstrap over the test images), clipped to [0, 1]."
    title = f"{metric_label(metric)} against labeled fraction: {report.name}"
    xlabel = "labeled training images (fraction of the training set, log scale)"
    ylabel = f"{metric_label(metric)} on the test split (0-1)"
    axes.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), fontsize=11)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(title="method", fontsize=9, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.tight_layout()
    figure.text(0.01, -0.01, band, fontsize=8, ha="left", va="top")
    path = Path(path)
    metadata = {"Title": title, "XLabel": xlabel, "YLabel": ylabel, "Software": "s4mi_monai"}
    atomic_write(path, lambda out: figure.savefig(out, format="png", metadata=metadata, bbox_inches="tight"))
    plt.close(figure)
    return path
