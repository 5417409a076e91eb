"""Seeded, stratified, patient-grouped splits and nested label-fraction subsets.

Every method of the study reads the same splits and the same labeled subsets, so both are computed
here once, deterministically from a seed, and written into the datalist.

Splitting works on *units*: one unit is a set of items that must stay together (one patient, the
tiles of one slide, or exact duplicate images). Units are ordered stratum by stratum (each stratum
shuffled with the seed) and dealt out one at a time to the split that is furthest below its target
share. Because every contiguous run of units is dealt proportionally, each stratum is split in the
target proportions (up to one unit), and the rounding error carries over between strata instead of
always favouring the training split.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

SPLITS = ("training", "validation", "test")
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_LABEL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 1.0)


def fraction_key(fraction: float) -> str:
    """The datalist key of a label fraction: ``0.1 -> "0.1"``, ``1 -> "1.0"``."""
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a label fraction must be in (0, 1], got {fraction}")
    return repr(round(fraction, 6))


def group_units(n_items: int, *group_keys: Sequence[Hashable | None]) -> list[int]:
    """Union-find over several grouping keys: items sharing any non-None key get one unit id.

    ``group_units(n, patients, content_hashes)`` keeps a patient's items together *and* keeps exact
    duplicate images in one split, even when they carry different patient ids.
    """
    parent = list(range(n_items))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in group_keys:
        first_with_key: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            if key is None:
                continue
            if key in first_with_key:
                parent[find(i)] = find(first_with_key[key])
            else:
                first_with_key[key] = i
    roots = [find(i) for i in range(n_items)]
    renumber = {root: k for k, root in enumerate(dict.fromkeys(roots))}
    return [renumber[r] for r in roots]


def assign_splits(
    strata: Sequence[Hashable],
    units: Sequence[int] | None = None,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
) -> list[int]:
    """Assign every item a split index (0, 1, 2 for training, validation, test).

    Args:
        strata: one stratum per item (a class index, a tuple of labels, or a constant).
        units: one unit id per item; items of one unit always land in the same split.
            A unit's stratum is the most common stratum of its items.
        fractions: target share of each split; a zero share leaves that split empty.
        seed: the same seed gives the same assignment.
    """
    n_items = len(strata)
    units = list(range(n_items)) if units is None else list(units)
    if len(units) != n_items:
        raise ValueError("strata and units must have one entry per item")
    shares = np.asarray(fractions, dtype=float)
    if shares.min() < 0 or shares.sum() <= 0:
        raise ValueError(f"split fractions must be non-negative and not all zero, got {fractions}")
    shares = shares / shares.sum()

    members: dict[int, list[int]] = defaultdict(list)
    for item, unit in enumerate(units):
        members[unit].append(item)
    unit_stratum = {u: Counter(strata[i] for i in items).most_common(1)[0][0] for u, items in members.items()}

    rng = np.random.default_rng(seed)
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for unit in members:
        by_stratum[unit_stratum[unit]].append(unit)
    stratum_order = sorted(by_stratum, key=repr)
    rng.shuffle(stratum_order)

    assigned = np.zeros(len(shares))
    split_of_unit: dict[int, int] = {}
    for stratum in stratum_order:
        stratum_units = sorted(by_stratum[stratum])
        rng.shuffle(stratum_units)
        for unit in stratum_units:
            size = len(members[unit])
            deficit = shares * (assigned.sum() + size) - assigned
            deficit[shares == 0] = -np.inf
            split = int(np.argmax(deficit))
            split_of_unit[unit] = split
            assigned[split] += size
    return [split_of_unit[u] for u in units]


def label_fraction_subsets(
    strata: Sequence[Hashable],
    fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    seed: int = 0,
    required_labels: Sequence[Sequence[Hashable]] | None = None,
) -> dict[str, list[int]]:
    """Indices of the labeled items for each label fraction: seeded, stratified, nested.

    Each stratum is shuffled once; fraction ``f`` takes the first ``max(1, round(f * n))`` items of
    every stratum, so a smaller fraction's subset is a prefix of a larger one's (nested) and no
    stratum vanishes. ``required_labels`` (one collection of labels per item, for multi-label data)
    additionally guarantees that every label occurs at least once: the first item carrying a label,
    in one fixed seeded order, joins every subset.
    """
    rng = np.random.default_rng(seed)
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for index, stratum in enumerate(strata):
        by_stratum[stratum].append(index)
    orders = {}
    for stratum in sorted(by_stratum, key=repr):
        order = np.array(by_stratum[stratum])
        rng.shuffle(order)
        orders[stratum] = order.tolist()

    always: set[int] = set()
    if required_labels is not None:
        global_order = rng.permutation(len(strata)).tolist()
        first_carrier: dict[Hashable, int] = {}
        for index in global_order:
            for label in required_labels[index]:
                first_carrier.setdefault(label, index)
        always = set(first_carrier.values())

    subsets = {}
    for fraction in sorted(set(fractions), key=float):
        key = fraction_key(fraction)
        chosen = set(always)
        for order in orders.values():
            chosen.update(order[: max(1, round(float(fraction) * len(order)))])
        subsets[key] = sorted(chosen)
    return subsets
