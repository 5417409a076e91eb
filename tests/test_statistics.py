"""Intervals and paired tests against scipy and hand-worked values, and the paired-resampling contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from s4mi_monai.metrics import (
    Interval,
    PairedComparison,
    bootstrap_ci,
    bootstrap_interval,
    bootstrap_replicates,
    paired_bootstrap,
    paired_t_test,
    t_interval,
)


def mean_of(scores: np.ndarray):
    """A statistic in the ``statistic(indices)`` form: the mean of per-item scores on those rows."""
    return lambda indices: float(np.mean(scores[indices]))


def manual_paired_replicates(method_scores, baseline_scores, n_items, n_boot, seed):
    """Independent re-implementation of the paired resampling, for per-item mean metrics."""
    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n_boot):
        rows = rng.integers(0, n_items, n_items)
        replicates.append(np.mean([m[rows].mean() - b[rows].mean() for m, b in zip(method_scores, baseline_scores)]))
    return np.array(replicates)


# ---------------------------------------------------------------------------------------------
# bootstrap_ci / bootstrap_replicates


def test_bootstrap_ci_brackets_the_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, 200)
    predictions = np.where(rng.random(200) < 0.8, targets, 1 - targets)

    def accuracy(p, t):
        return float(np.mean(p == t))

    low, high = bootstrap_ci(accuracy, predictions, targets, n_boot=300, seed=3)
    assert low < accuracy(predictions, targets) < high
    assert 0.05 < high - low < 0.2
    assert bootstrap_ci(accuracy, predictions, targets, n_boot=300, seed=3) == (low, high)
    assert bootstrap_ci(accuracy, predictions, targets, n_boot=300, seed=4) != (low, high)
    assert all(math.isnan(v) for v in bootstrap_ci(lambda p, t: math.nan, predictions, targets, n_boot=5))
    with pytest.raises(ValueError, match="equal first dimensions"):
        bootstrap_ci(accuracy, predictions, targets[:10])


def test_bootstrap_ci_is_unchanged_and_built_on_bootstrap_replicates():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=50), rng.normal(size=50)

    def correlation(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    # the pre-refactoring loop, verbatim: one integers(0, N, N) draw per replicate, jointly for all arrays
    draws = np.random.default_rng(7)
    expected = np.empty(200)
    for b in range(200):
        rows = draws.integers(0, 50, 50)
        expected[b] = correlation(x[rows], y[rows])
    replicates = bootstrap_replicates(correlation, x, y, n_boot=200, seed=7)
    np.testing.assert_array_equal(replicates, expected)
    assert bootstrap_ci(correlation, x, y, n_boot=200, seed=7, alpha=0.1) == tuple(np.percentile(expected, [5, 95]))

    with pytest.raises(ValueError, match="bootstrap_ci needs at least one array"):
        bootstrap_ci(correlation)
    with pytest.raises(ValueError, match="0 < alpha < 1"):
        bootstrap_ci(correlation, x, y, alpha=1.5)


def test_bootstrap_replicates_keep_undefined_values_and_check_inputs():
    values = np.arange(10.0)
    replicates = bootstrap_replicates(lambda v: math.nan if 0.0 in v else float(v.mean()), values, n_boot=100, seed=0)
    assert replicates.shape == (100,)
    assert 0 < np.isnan(replicates).sum() < 100  # P(row 0 drawn) = 1 - 0.9^10 ~ 0.65
    with pytest.raises(ValueError, match="at least one array"):
        bootstrap_replicates(np.mean)
    with pytest.raises(ValueError, match="equal first dimensions"):
        bootstrap_replicates(np.mean, values, values[:3])
    with pytest.raises(ValueError, match="n_boot >= 1"):
        bootstrap_replicates(np.mean, values, n_boot=0)


# ---------------------------------------------------------------------------------------------
# t_interval


def test_t_interval_hand_worked_and_against_scipy():
    interval = t_interval([1.0, 2.0, 3.0])
    assert isinstance(interval, Interval)
    half_width = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{2, 0.975} * s / sqrt(n), s = 1
    assert interval.estimate == pytest.approx(2.0)
    assert (interval.low, interval.high) == pytest.approx((2.0 - half_width, 2.0 + half_width))
    assert interval.n == 3
    assert interval.method == "95% t-interval over 3 seeds"

    values = np.array([0.71, 0.74, 0.69, 0.80, 0.77])
    for confidence in (0.9, 0.95, 0.99):
        expected = stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        interval = t_interval(values, confidence=confidence)
        assert (interval.low, interval.high) == pytest.approx(expected, rel=1e-12)
    assert t_interval(values, confidence=0.9).method == "90% t-interval over 5 seeds"


def test_t_interval_undefined_cases():
    single = t_interval([0.5])
    assert single.estimate == 0.5 and single.n == 1
    assert math.isnan(single.low) and math.isnan(single.high)
    assert "single seed" in single.method and "no t-interval" in single.method

    with_nan = t_interval([1.0, math.nan, 2.0, 3.0])
    assert with_nan.n == 3
    assert (with_nan.estimate, with_nan.low, with_nan.high) == pytest.approx(
        (t_interval([1.0, 2.0, 3.0]).estimate, t_interval([1.0, 2.0, 3.0]).low, t_interval([1.0, 2.0, 3.0]).high)
    )
    assert "1 nan seed dropped" in with_nan.method

    one_left = t_interval([math.nan, 0.4])
    assert one_left.n == 1 and one_left.estimate == 0.4 and math.isnan(one_left.low)

    all_nan = t_interval([math.nan, math.nan])
    assert all_nan.n == 0 and all(math.isnan(v) for v in (all_nan.estimate, all_nan.low, all_nan.high))
    assert "all 2 seeds are nan" in all_nan.method

    constant = t_interval([0.3, 0.3, 0.3])
    assert (constant.low, constant.high) == pytest.approx((0.3, 0.3))

    with pytest.raises(ValueError, match="at least one value"):
        t_interval([])
    with pytest.raises(ValueError, match="finite or nan"):
        t_interval([1.0, math.inf])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=95)


# ---------------------------------------------------------------------------------------------
# bootstrap_interval


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(0)
    scores = rng.exponential(size=2000)
    interval = bootstrap_interval(mean_of(scores), len(scores), n_boot=400, seed=1)
    reference = stats.bootstrap(
        (scores,), np.mean, method="percentile", n_resamples=2000, confidence_level=0.95, random_state=np.random.default_rng(5)
    ).confidence_interval
    width = reference.high - reference.low
    assert interval.estimate == pytest.approx(scores.mean())
    assert interval.low == pytest.approx(reference.low, abs=0.1 * width)
    assert interval.high == pytest.approx(reference.high, abs=0.1 * width)
    # and the normal approximation, mean +- 1.96 s / sqrt(n)
    assert width == pytest.approx(2 * 1.96 * scores.std(ddof=1) / math.sqrt(len(scores)), rel=0.1)
    assert interval.n == 2000
    assert interval.method == "95% percentile bootstrap over 2000 test images (400 resamples)"


def test_bootstrap_interval_is_deterministic_and_shares_the_resampling_of_bootstrap_ci():
    rng = np.random.default_rng(3)
    scores = rng.random(100)
    first = bootstrap_interval(mean_of(scores), 100, n_boot=200, seed=4)
    assert bootstrap_interval(mean_of(scores), 100, n_boot=200, seed=4) == first
    assert bootstrap_interval(mean_of(scores), 100, n_boot=200, seed=5) != first
    assert (first.low, first.high) == bootstrap_ci(np.mean, scores, n_boot=200, seed=4)
    assert first.low < first.estimate < first.high


def test_bootstrap_interval_drops_undefined_resamples():
    scores = np.linspace(0.0, 1.0, 20)

    def needs_item_zero(indices):  # like an AUC that needs the single positive
        return float(scores[indices].mean()) if 0 in indices else math.nan

    interval = bootstrap_interval(needs_item_zero, 20, n_boot=200, seed=0)
    replicates = bootstrap_replicates(needs_item_zero, np.arange(20), n_boot=200, seed=0)
    defined = replicates[~np.isnan(replicates)]
    assert 0 < defined.size < 200
    assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(defined, [2.5, 97.5])))
    assert f"{200 - defined.size} undefined dropped" in interval.method

    undefined = bootstrap_interval(lambda indices: math.nan, 20, n_boot=10)
    assert all(math.isnan(v) for v in (undefined.estimate, undefined.low, undefined.high))
    assert "all undefined" in undefined.method
    with pytest.raises(ValueError, match="n_items"):
        bootstrap_interval(needs_item_zero, 0)


# ---------------------------------------------------------------------------------------------
# paired_bootstrap


def test_paired_bootstrap_of_identical_statistics_is_exactly_no_difference():
    scores = np.random.default_rng(0).random(30)
    comparison = paired_bootstrap([mean_of(scores)], [mean_of(scores)], 30, n_boot=200)
    assert isinstance(comparison, PairedComparison)
    assert (comparison.difference, comparison.low, comparison.high) == (0.0, 0.0, 0.0)
    assert comparison.p_value == 1.0  # (200 + 1) / (200 + 1) on both sides, capped at 1
    assert (comparison.n_items, comparison.n_seeds) == (30, 1)


def test_paired_bootstrap_hand_worked_p_value():
    # one item: every resample is [0], so every replicate is the full difference 0.5
    comparison = paired_bootstrap([lambda i: 0.75], [lambda i: 0.25], 1, n_boot=99)
    assert (comparison.difference, comparison.low, comparison.high) == (0.5, 0.5, 0.5)
    assert comparison.p_value == pytest.approx(2 * 1 / 100)  # #{d <= 0} = 0 -> 2 (0 + 1) / (99 + 1)

    # replicates straddling 0: p from the hand formula on independently computed replicates
    rng = np.random.default_rng(1)
    baseline = rng.random(40)
    method = baseline + rng.normal(0.02, 0.1, 40)
    comparison = paired_bootstrap([mean_of(method)], [mean_of(baseline)], 40, n_boot=300, seed=2)
    replicates = manual_paired_replicates([method], [baseline], 40, 300, 2)
    below, above = np.sum(replicates <= 0), np.sum(replicates >= 0)
    assert 0 < below < 300 and 0 < above < 300
    assert comparison.p_value == pytest.approx(min(1.0, 2 * min((below + 1) / 301, (above + 1) / 301)))
    assert (comparison.low, comparison.high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))
    assert comparison.difference == pytest.approx(method.mean() - baseline.mean())
    assert "two-sided paired bootstrap" in comparison.test and "+ 1" in comparison.test


def test_paired_bootstrap_detects_a_clearly_better_method():
    rng = np.random.default_rng(2)
    baseline = rng.random(200)
    method = np.clip(baseline + 0.2 + rng.normal(0, 0.05, 200), 0, None)
    comparison = paired_bootstrap([mean_of(method)], [mean_of(baseline)], 200, n_boot=300, seed=0)
    assert comparison.low > 0.15 and comparison.high < 0.25
    assert comparison.p_value == pytest.approx(2 / 301)  # never exactly 0
    reverse = paired_bootstrap([mean_of(baseline)], [mean_of(method)], 200, n_boot=300, seed=0)
    assert reverse.high < 0 and reverse.p_value == comparison.p_value


def test_paired_bootstrap_uses_one_index_array_for_both_sides_and_all_seeds():
    seen = {"method": [], "baseline": []}

    def recording(side, scores):
        def statistic(indices):
            seen[side].append(indices.copy())
            return float(scores[indices].mean())

        return statistic

    rng = np.random.default_rng(3)
    a, b = rng.random(25), rng.random(25)
    paired_bootstrap([recording("method", a), recording("method", b)], [recording("baseline", b), recording("baseline", a)], 25, n_boot=50)
    assert len(seen["method"]) == len(seen["baseline"]) == 2 * 51  # full set + 50 replicates, two seeds
    for position in range(0, 102, 2):
        reference = seen["method"][position]
        for indices in (seen["method"][position + 1], seen["baseline"][position], seen["baseline"][position + 1]):
            np.testing.assert_array_equal(indices, reference)
    np.testing.assert_array_equal(seen["method"][0], np.arange(25))

    # perfectly correlated per-image scores: the image difficulty cancels in the paired difference
    difficulty = rng.normal(0, 1, 300)
    baseline = difficulty
    method = difficulty + 0.05 + rng.normal(0, 0.01, 300)
    paired = paired_bootstrap([mean_of(method)], [mean_of(baseline)], 300, n_boot=300)
    unpaired = bootstrap_replicates(np.mean, method, n_boot=300, seed=1) - bootstrap_replicates(np.mean, baseline, n_boot=300, seed=2)
    unpaired_low, unpaired_high = np.percentile(unpaired, [2.5, 97.5])
    assert unpaired_low < 0 < unpaired_high  # an unpaired comparison sees nothing
    assert paired.high - paired.low < 0.05 * (unpaired_high - unpaired_low)
    assert paired.low > 0 and paired.p_value < 0.01


def test_paired_bootstrap_averages_over_seeds():
    rng = np.random.default_rng(4)
    method = [rng.random(60) + offset for offset in (0.1, 0.3, 0.2)]
    baseline = [rng.random(60) for _ in range(3)]
    comparison = paired_bootstrap([mean_of(m) for m in method], [mean_of(b) for b in baseline], 60, n_boot=200, seed=6)
    expected_difference = np.mean([m.mean() - b.mean() for m, b in zip(method, baseline)])
    assert comparison.difference == pytest.approx(expected_difference)
    replicates = manual_paired_replicates(method, baseline, 60, 200, 6)
    assert (comparison.low, comparison.high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))
    assert comparison.n_seeds == 3 and "3 paired seeds" in comparison.test
    assert paired_bootstrap([mean_of(m) for m in method], [mean_of(b) for b in baseline], 60, n_boot=200, seed=6) == comparison


def test_paired_bootstrap_nan_handling_and_errors():
    scores = np.linspace(0, 1, 15)

    def needs_item_zero(indices):
        return float(scores[indices].mean()) if 0 in indices else math.nan

    comparison = paired_bootstrap([needs_item_zero, mean_of(scores)], [mean_of(scores * 0.5), mean_of(scores * 0.5)], 15, n_boot=200)
    replicates = bootstrap_replicates(lambda indices: 0.0 if 0 in indices else math.nan, np.arange(15), n_boot=200, seed=0)
    n_defined = int(np.sum(~np.isnan(replicates)))  # a replicate is dropped when any seed's difference is nan
    assert 0 < n_defined < 200
    assert f"{200 - n_defined} undefined dropped" in comparison.test
    assert math.isfinite(comparison.low) and math.isfinite(comparison.p_value)

    undefined = paired_bootstrap([lambda i: math.nan], [lambda i: 0.0], 15, n_boot=20)
    assert all(math.isnan(v) for v in (undefined.difference, undefined.low, undefined.high, undefined.p_value))
    assert "all undefined" in undefined.test

    with pytest.raises(ValueError, match="same, non-zero number of seed statistics.*got 2 and 1"):
        paired_bootstrap([mean_of(scores)] * 2, [mean_of(scores)], 15)
    with pytest.raises(ValueError, match="got 0 and 0"):
        paired_bootstrap([], [], 15)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([mean_of(scores)], [mean_of(scores)], 15, confidence=0.0)


# ---------------------------------------------------------------------------------------------
# paired_t_test


def test_paired_t_test_against_scipy():
    rng = np.random.default_rng(5)
    baseline = rng.random(5)
    method = baseline + rng.normal(0.03, 0.02, 5)
    difference, p_value = paired_t_test(method, baseline)
    reference = stats.ttest_rel(method, baseline)
    assert difference == pytest.approx(np.mean(method - baseline))
    assert p_value == pytest.approx(reference.pvalue, rel=1e-10)

    # hand-worked: d = [1, 2, 3] -> t = 2 / (1 / sqrt 3), p = 2 P(T_2 > 2 sqrt 3)
    difference, p_value = paired_t_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert difference == 2.0
    assert p_value == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))


def test_paired_t_test_nan_and_errors():
    method, baseline = [0.8, math.nan, 0.7, 0.9], [0.6, 0.5, math.nan, 0.65]
    difference, p_value = paired_t_test(method, baseline)
    reference = stats.ttest_rel([0.8, 0.9], [0.6, 0.65])
    assert difference == pytest.approx(0.225) and p_value == pytest.approx(reference.pvalue)

    difference, p_value = paired_t_test([0.8], [0.6])
    assert difference == pytest.approx(0.2) and math.isnan(p_value)
    assert all(math.isnan(v) for v in paired_t_test([math.nan], [0.6]))
    assert paired_t_test([1.5, 2.5], [1.0, 2.0])[1] == 0.0  # constant nonzero difference: t = inf
    assert math.isnan(paired_t_test([0.5, 0.6], [0.5, 0.6])[1])  # all differences 0: t = 0/0
    with pytest.raises(ValueError, match="same length.*got 3 and 2"):
        paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0])
