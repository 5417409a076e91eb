"""Uncertainty of the study's numbers: intervals over seeds or test images, and paired method-vs-baseline tests.

A reported metric varies for two reasons: the training seed, and which images happen to be in the
test set. :func:`t_interval` covers the first (one value per seed), :func:`bootstrap_interval` the
second (one trained model, test images resampled), and :func:`paired_bootstrap` compares two methods
on the *same* test images, which removes the image-to-image variation they share and so detects
differences an overlap of two separate intervals would miss.

Definitions (confidence ``1 - α``; ``q_p`` = the p-th percentile, numpy's linear interpolation):

* Student t over n seeds with values x_1..x_n: mean x̄ ± t_{n-1, 1-α/2} · s / √n, where s is the
  sample standard deviation (ddof=1). nan values are dropped and n counts the remaining ones; with
  n = 1 the interval is undefined (nan).
* Percentile bootstrap over N test items: replicate b draws N row indices with replacement
  (``numpy.random.default_rng(seed)``, one ``integers(0, N, N)`` call per replicate) and evaluates the
  metric on those rows of every array; the interval is (q_{100·α/2}, q_{100·(1-α/2)}) of the
  replicates whose value is defined (not nan). The estimate is the metric on all N items.
* Paired bootstrap of method vs baseline over S seeds (method seed s paired with baseline seed s):
  replicate b draws one index array I_b and takes Δ_b = (1/S) Σ_s [m_s(I_b) − b_s(I_b)], using the same
  I_b for every seed and both sides. The difference is the same on all N items, the interval the
  percentiles of the defined Δ_b (a replicate where any seed's difference is nan is dropped, so every
  Δ_b averages all S seeds). The two-sided test of "no difference" with B defined replicates:
  p = min(1, 2 · min((#{Δ_b ≤ 0} + 1) / (B + 1), (#{Δ_b ≥ 0} + 1) / (B + 1))); the +1 keeps p > 0,
  since B resamples cannot show p below about 2 / (B + 1).
* Paired t-test over seeds, d_s = m_s − b_s for the n pairs where both are defined:
  t = d̄ / (s_d / √n), p = 2 · P(T_{n-1} > |t|); nan when n < 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "Interval",
    "PairedComparison",
    "bootstrap_ci",
    "bootstrap_interval",
    "bootstrap_replicates",
    "paired_bootstrap",
    "paired_t_test",
    "t_interval",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval, and how the interval was obtained."""

    estimate: float
    """The point estimate: mean over seeds, or the metric on all test items."""
    low: float
    """Lower bound; nan when undefined (one seed, or every resample undefined)."""
    high: float
    """Upper bound; nan when undefined."""
    n: int
    """Number of (defined) seeds for a t-interval, of resampled items for a bootstrap."""
    method: str
    """Human-readable description, e.g. ``"95% t-interval over 3 seeds"``."""


@dataclass(frozen=True)
class PairedComparison:
    """Method minus baseline on the same test items, with its interval and a two-sided p-value."""

    difference: float
    """Method minus baseline on all items (mean over seeds when several)."""
    low: float
    """Lower bound of the difference; nan when every resample is undefined."""
    high: float
    """Upper bound of the difference."""
    p_value: float
    """Two-sided p-value of "no difference"."""
    n_items: int
    """Number of test items resampled."""
    n_seeds: int
    """Number of (method seed, baseline seed) pairs averaged."""
    test: str
    """Human-readable statement of the test."""


def bootstrap_replicates(metric_fn: Callable[..., float], *arrays: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The ``n_boot`` raw values of ``metric_fn`` on bootstrap resamples of the rows of ``arrays``.

    The one resampling loop of this module: each replicate draws N row indices with replacement and
    passes the same rows of every array (e.g. probabilities and targets) to ``metric_fn``, so paired
    columns stay paired. Undefined replicates are kept as nan so callers can count them.
    """
    columns = _check_arrays(arrays, "bootstrap_replicates")
    if n_boot < 1:
        raise ValueError(f"need n_boot >= 1, got {n_boot}")
    n_rows = len(columns[0])
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, n_rows, n_rows)
        replicates[b] = metric_fn(*(column[rows] for column in columns))
    return replicates


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of ``metric_fn(*arrays)``.

    Each replicate draws N row indices with replacement (``numpy.random.default_rng(seed)``) and
    evaluates ``metric_fn`` on the same rows of every array (e.g. probabilities and targets). The
    interval is the (alpha/2, 1 - alpha/2) percentiles of the replicates. Replicates where the metric
    is undefined (nan, e.g. an AUC on a resample without positives) are left out; if all are, the
    interval is (nan, nan).
    """
    _check_arrays(arrays, "bootstrap_ci")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    replicates = bootstrap_replicates(metric_fn, *arrays, n_boot=n_boot, seed=seed)
    return _percentile_interval(replicates[~np.isnan(replicates)], alpha)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean over seeds: the seed-to-seed uncertainty of a training recipe.

    nan values (a seed where the metric is undefined) are dropped and not counted. One defined seed
    gives ``low = high = nan``; no defined seed also gives a nan estimate. An empty input is an error.
    """
    _check_confidence(confidence)
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("t_interval needs at least one value")
    if np.isinf(array).any():
        raise ValueError(f"t_interval values must be finite or nan, got {array.tolist()}")
    defined = array[~np.isnan(array)]
    n = int(defined.size)
    dropped = f", {array.size - n} nan seed{'s' if array.size - n != 1 else ''} dropped" if n < array.size else ""
    level = _percent(confidence)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, f"no t-interval: all {array.size} seeds are nan")
    mean = float(np.mean(defined))
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, f"single seed, no t-interval (needs >= 2 seeds){dropped}")
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(defined, ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half_width, mean + half_width, n, f"{level} t-interval over {n} seeds{dropped}")


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n_items: int,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval over test items: the test-set uncertainty of one trained model.

    ``statistic(indices)`` returns the metric on those rows of the test set (indices may repeat), so
    any metric, including non-additive ones like AUC or pooled IoU, can be resampled. The estimate is
    ``statistic(arange(n_items))``; undefined (nan) replicates are dropped and counted in ``method``.
    """
    _check_confidence(confidence)
    n_items = _check_n_items(n_items)
    indices = np.arange(n_items)
    estimate = float(statistic(indices))
    replicates = bootstrap_replicates(statistic, indices, n_boot=n_boot, seed=seed)
    defined = replicates[~np.isnan(replicates)]
    low, high = _percentile_interval(defined, 1.0 - confidence)
    method = f"{_percent(confidence)} percentile bootstrap over {n_items} test images ({n_boot} resamples{_dropped(n_boot, defined.size)})"
    return Interval(estimate, low, high, n_items, method)


def paired_bootstrap(
    method: Sequence[Callable[[np.ndarray], float]],
    baseline: Sequence[Callable[[np.ndarray], float]],
    n_items: int,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """Method minus baseline on the same resampled test items, averaged over paired seeds.

    ``method[s]`` and ``baseline[s]`` are statistics like those of :func:`bootstrap_interval` for seed s.
    Every replicate evaluates all of them on one shared index array, so variation from which images
    are in the test set cancels in the difference; that is what makes the test paired.
    """
    _check_confidence(confidence)
    n_items = _check_n_items(n_items)
    method, baseline = list(method), list(baseline)
    if len(method) != len(baseline) or not method:
        raise ValueError(
            f"method and baseline need the same, non-zero number of seed statistics (paired by position), got {len(method)} and {len(baseline)}"
        )
    n_seeds = len(method)

    def mean_difference(indices: np.ndarray) -> float:
        return float(np.mean([float(m(indices)) - float(b(indices)) for m, b in zip(method, baseline)]))

    indices = np.arange(n_items)
    difference = mean_difference(indices)
    replicates = bootstrap_replicates(mean_difference, indices, n_boot=n_boot, seed=seed)
    defined = replicates[~np.isnan(replicates)]
    low, high = _percentile_interval(defined, 1.0 - confidence)
    n_valid = int(defined.size)
    if n_valid:
        at_most = (np.count_nonzero(defined <= 0.0) + 1) / (n_valid + 1)
        at_least = (np.count_nonzero(defined >= 0.0) + 1) / (n_valid + 1)
        p_value = float(min(1.0, 2.0 * min(at_most, at_least)))
    else:
        p_value = math.nan
    seeds = f"{n_seeds} paired seed{'s' if n_seeds != 1 else ''}"
    test = (
        f"two-sided paired bootstrap test of no difference over {n_items} test images and {seeds} "
        f"({n_boot} resamples{_dropped(n_boot, n_valid)}; each resample shared by both sides and all seeds); "
        f"{_percent(confidence)} percentile interval; p = min(1, 2 min((#{{d <= 0}} + 1)/(B + 1), (#{{d >= 0}} + 1)/(B + 1)))"
    )
    return PairedComparison(difference, low, high, p_value, n_items, n_seeds, test)


def paired_t_test(method_values: Sequence[float], baseline_values: Sequence[float]) -> tuple[float, float]:
    """(mean difference, two-sided p) of a paired t-test over seeds, for cells with several seeds.

    Seed s of the method is paired with seed s of the baseline; pairs where either value is nan are
    dropped. p is nan with fewer than 2 pairs, and when every difference is 0 (t = 0/0).
    """
    method_array = np.asarray(method_values, dtype=np.float64).ravel()
    baseline_array = np.asarray(baseline_values, dtype=np.float64).ravel()
    if method_array.size != baseline_array.size:
        raise ValueError(
            f"method_values and baseline_values need the same length (paired by seed), got {method_array.size} and {baseline_array.size}"
        )
    differences = method_array - baseline_array
    differences = differences[~np.isnan(differences)]
    n = int(differences.size)
    if n == 0:
        return math.nan, math.nan
    mean = float(np.mean(differences))
    if n < 2:
        return mean, math.nan
    sd = float(np.std(differences, ddof=1))
    if sd == 0.0:
        return mean, (math.nan if mean == 0.0 else 0.0)
    t = mean / (sd / math.sqrt(n))
    return mean, float(2.0 * stats.t.sf(abs(t), n - 1))


# ---------------------------------------------------------------------------------------------
# helpers


def _check_arrays(arrays: tuple[np.ndarray, ...], caller: str) -> list[np.ndarray]:
    if not arrays:
        raise ValueError(f"{caller} needs at least one array to resample")
    columns = [np.asarray(array) for array in arrays]
    n_rows = len(columns[0])
    if n_rows == 0 or any(len(column) != n_rows for column in columns):
        raise ValueError(f"arrays must be non-empty with equal first dimensions, got {[len(c) for c in columns]}")
    return columns


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _check_n_items(n_items: int) -> int:
    if int(n_items) != n_items or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items}")
    return int(n_items)


def _percentile_interval(defined: np.ndarray, alpha: float) -> tuple[float, float]:
    if defined.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(defined, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _dropped(n_boot: int, n_defined: int) -> str:
    if n_defined == n_boot:
        return ""
    if n_defined == 0:
        return ", all undefined"
    return f", {n_boot - n_defined} undefined dropped"
