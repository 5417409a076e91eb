"""Split and label-fraction invariants: disjoint, grouped, stratified, nested, seeded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from s4mi_monai.data.splits import assign_splits, fraction_key, group_units, label_fraction_subsets


def test_split_is_stratified_and_proportional():
    strata = [0] * 500 + [1] * 300 + [2] * 200
    splits = assign_splits(strata, fractions=(0.7, 0.1, 0.2), seed=0)
    for c, n in Counter(strata).items():
        counts = Counter(s for s, k in zip(splits, strata) if k == c)
        assert abs(counts[0] - 0.7 * n) <= 1 and abs(counts[1] - 0.1 * n) <= 1 and abs(counts[2] - 0.2 * n) <= 1


def test_small_strata_do_not_all_fall_into_training():
    strata = list(range(30))  # thirty classes of one item each
    counts = Counter(assign_splits(strata, seed=0))
    assert counts == {0: 21, 1: 3, 2: 6}


def test_groups_never_cross_splits_and_stay_stratified():
    rng = np.random.default_rng(0)
    patients = [f"P{p}" for p in range(60) for _ in range(rng.integers(1, 6))]
    strata = [hash(p) % 3 for p in patients]
    splits = assign_splits(strata, group_units(len(patients), patients), seed=1)
    split_of_patient = {}
    for patient, split in zip(patients, splits):
        assert split_of_patient.setdefault(patient, split) == split
    shares = np.bincount(splits, minlength=3) / len(splits)
    assert np.allclose(shares, [0.7, 0.1, 0.2], atol=0.06)


def test_group_units_joins_through_any_key():
    patients = ["A", "B", "C", None]
    hashes = ["h1", "h2", "h1", "h2"]
    units = group_units(4, patients, hashes)
    assert units[0] == units[2] and units[1] == units[3] and units[0] != units[1]


def test_same_seed_same_split_other_seed_different():
    strata = [k % 3 for k in range(200)]
    assert assign_splits(strata, seed=3) == assign_splits(strata, seed=3)
    assert assign_splits(strata, seed=3) != assign_splits(strata, seed=4)


def test_label_fractions_nested_stratified_and_no_class_vanishes():
    strata = [0] * 90 + [1] * 8 + [2] * 2
    subsets = label_fraction_subsets(strata, (0.1, 0.3, 0.5, 0.7, 1.0), seed=0)
    keys = ["0.1", "0.3", "0.5", "0.7", "1.0"]
    for small, large in zip(keys, keys[1:]):
        assert set(subsets[small]) <= set(subsets[large])
    assert subsets["1.0"] == list(range(100))
    tenth = Counter(strata[i] for i in subsets["0.1"])
    assert tenth == {0: 9, 1: 1, 2: 1}


def test_label_fraction_any_value_and_multi_label_coverage():
    strata = [(1, 0, 0)] * 50 + [(0, 1, 0)] * 20 + [(1, 0, 1)] * 1
    required = [[k for k, v in enumerate(s) if v] for s in strata]
    subsets = label_fraction_subsets(strata, (0.05, 0.25), seed=2, required_labels=required)
    for key in ("0.05", "0.25"):
        covered = {label for i in subsets[key] for label in required[i]}
        assert covered == {0, 1, 2}
    assert set(subsets["0.05"]) <= set(subsets["0.25"])
    assert subsets == label_fraction_subsets(strata, (0.05, 0.25), seed=2, required_labels=required)
    assert subsets != label_fraction_subsets(strata, (0.05, 0.25), seed=3, required_labels=required)


def test_fraction_key_rejects_out_of_range():
    assert fraction_key(1) == "1.0" and fraction_key(0.1) == "0.1"
    with pytest.raises(ValueError):
        fraction_key(0)
