"""Claims a study tests, and the rule that turns a measured difference into a plain verdict.

A claim says that one method beats another: ``dino`` beats ``supervised`` at every label fraction, or
``crossteach/cnn`` with 50 % of the masks beats ``supervised_unet`` with all of them. A study spec lists
its claims (``"claims"``, see ``docs/studies/README.md``) and ``s4mi report`` gives each one a verdict
per label fraction, from two intervals of the difference d = method − versus (the claimed direction is
d > 0):

* over seeds: the 95 % Student t-interval of the per-seed differences d_s (training variation), and
* over test images: the paired bootstrap 95 % interval (test-set variation of these trained models).

With ``margin`` m, the smallest gain that would matter to a user (default 0.02, i.e. two points of F1
or IoU):

* **supported**: both intervals lie above 0;
* **not supported**: both intervals lie below m, so a gain of m or more is excluded (this includes a
  method that is reliably worse);
* **not resolvable at this power**: anything else, including every comparison with fewer than
  ``MIN_SEEDS`` paired seeds, because a difference of one training run is not a finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

from s4mi_monai.metrics.statistics import Interval, PairedComparison

__all__ = ["DEFAULT_MARGIN", "MIN_SEEDS", "Claim", "Verdict", "judge", "parse_claims", "seeds_to_decide"]

DEFAULT_MARGIN = 0.02
MIN_SEEDS = 3
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
NOT_RESOLVABLE = "not resolvable at this power"
MAX_SEEDS_TO_DECIDE = 30
CLAIM_KEYS = {"name", "method", "versus", "fractions", "versus_fraction", "metric", "margin"}


@dataclass(frozen=True)
class Claim:
    """``method`` beats ``versus`` on ``metric``: at each of ``fractions`` (None: every fraction both have),
    against ``versus`` at the same fraction or at ``versus_fraction``."""

    name: str
    method: str
    versus: str
    fractions: tuple[float, ...] | None = None
    versus_fraction: float | None = None
    metric: str | None = None
    margin: float = DEFAULT_MARGIN

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "method": self.method,
            "versus": self.versus,
            "fractions": None if self.fractions is None else list(self.fractions),
            "versus_fraction": self.versus_fraction,
            "metric": self.metric,
            "margin": self.margin,
        }


@dataclass(frozen=True)
class Verdict:
    """One claim at one fraction: the two intervals of the difference and what they say."""

    claim: Claim
    metric: str
    method_row: str
    versus_row: str
    fraction: float
    versus_fraction: float
    outcome: str
    reason: str
    over_seeds: Interval | None = None
    over_images: PairedComparison | None = None


def _fraction(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{where}: label fraction {value!r} is not a number in (0, 1]")
    return float(value)


def parse_claims(
    raw: object,
    fractions_of: Mapping[str, Sequence[float]],
    baseline: str | None,
    where: str,
    on_error: Callable[[str], Exception] = ValueError,
    branches_of: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Claim, ...]:
    """Validate a spec's ``claims`` list against its methods (``fractions_of``: each method's fractions).

    Method names may carry a network (``cass/transformer``), which must be one of the method's
    ``branches_of`` when given (a misspelt branch would never be judged); ``versus`` defaults to the
    spec's baseline.
    """
    if raw is None:
        return ()
    if isinstance(raw, (str, Mapping)) or not isinstance(raw, Sequence):
        raise on_error(f"{where}: claims must be a list of mappings")
    claims = []
    for index, entry in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(entry, Mapping):
            raise on_error(f"{at}: a claim is a mapping with name, method and versus")
        extra = sorted(set(entry) - CLAIM_KEYS)
        if extra:
            raise on_error(f"{at}: unknown field(s) {extra}; allowed: {sorted(CLAIM_KEYS)}")
        versus = entry.get("versus", baseline)
        if "method" not in entry or versus is None:
            raise on_error(f"{at}: a claim needs a method and a versus (or a spec baseline)")
        method, versus = str(entry["method"]), str(versus)
        for role, name in (("method", method), ("versus", versus)):
            if name.split("/")[0] not in fractions_of:
                raise on_error(f"{at}: {role} {name!r} is not one of the methods {sorted(fractions_of)}")
            if "/" in name and branches_of is not None:
                base, branch = name.split("/", 1)
                known = list(branches_of.get(base, ()))
                if branch not in known:
                    has = f"has the networks {known}" if known else "trains one network (name it without /)"
                    raise on_error(f"{at}: {role} {name!r}: {base} {has}")
        try:
            fractions = None
            if entry.get("fractions") is not None:
                if isinstance(entry["fractions"], (str, Mapping)) or not isinstance(entry["fractions"], Sequence) or not entry["fractions"]:
                    raise ValueError(f"{at}: fractions must be a non-empty list")
                fractions = tuple(sorted(_fraction(f, f"{at}.fractions") for f in entry["fractions"]))
            versus_fraction = None if entry.get("versus_fraction") is None else _fraction(entry["versus_fraction"], f"{at}.versus_fraction")
        except ValueError as err:
            raise on_error(str(err)) from None
        own = {round(f, 6) for f in fractions_of[method.split("/")[0]]}
        missing = [f for f in fractions or () if round(f, 6) not in own]
        if missing:
            raise on_error(f"{at}: {method} does not run at fractions {missing} (it runs at {sorted(own)})")
        if versus_fraction is not None and round(versus_fraction, 6) not in {round(f, 6) for f in fractions_of[versus.split("/")[0]]}:
            raise on_error(f"{at}: {versus} does not run at fraction {versus_fraction}")
        margin = entry.get("margin", DEFAULT_MARGIN)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise on_error(f"{at}: margin must be a number >= 0 (the smallest gain that matters), got {margin!r}")
        metric = entry.get("metric")
        if metric is not None and not isinstance(metric, str):
            raise on_error(f"{at}: metric must be a metric name, got {metric!r}")
        name = str(entry.get("name") or f"{method} beats {versus}")
        claims.append(Claim(name, method, versus, fractions, versus_fraction, metric, float(margin)))
    return tuple(claims)


def _bounds(text: str, low: float, high: float) -> str:
    return f"{text} [{low:+.3f}, {high:+.3f}]"


def judge(over_seeds: Interval, over_images: PairedComparison, margin: float) -> tuple[str, str]:
    """The verdict (see the module docstring) and a one-line reason that quotes the intervals."""
    seeds = over_seeds.n
    if seeds < MIN_SEEDS or math.isnan(over_seeds.low):
        return NOT_RESOLVABLE, f"{seeds} paired seed{'s' if seeds != 1 else ''}; a verdict needs at least {MIN_SEEDS}"
    if math.isnan(over_images.low):
        return NOT_RESOLVABLE, "the bootstrap over test images is undefined"
    lows, highs = (over_seeds.low, over_images.low), (over_seeds.high, over_images.high)
    quoted = f"{_bounds('seeds', over_seeds.low, over_seeds.high)}, {_bounds('images', over_images.low, over_images.high)}"
    if min(lows) > 0:
        return SUPPORTED, f"both intervals above 0: {quoted}"
    if max(highs) < margin:
        worse = " (the method is worse)" if max(highs) < 0 else ""
        return NOT_SUPPORTED, f"a gain of {margin:g} or more is excluded{worse}: {quoted}"
    return NOT_RESOLVABLE, f"an interval holds both no gain and a gain of {margin:g}: {quoted}"


def seeds_to_decide(over_seeds: Interval, margin: float, confidence: float = 0.95) -> tuple[int, str] | None:
    """How many paired seeds would let the interval over seeds decide, if the mean difference d and the
    seed-to-seed standard deviation s of the differences stayed as measured: the smallest n >= ``MIN_SEEDS``
    with d - t(n-1) s / sqrt(n) > 0 (``supported``) or d + t(n-1) s / sqrt(n) < m (``not supported``).

    s comes back from the measured interval, s = (high - low) / 2 / t(n0-1) * sqrt(n0). A planning number for
    the next run of a study, not a verdict: d moves as seeds are added, and the interval over test images must
    agree as well. None when the interval is undefined (fewer than 2 seeds); ``(MAX_SEEDS_TO_DECIDE + 1, "")``
    when no n up to ``MAX_SEEDS_TO_DECIDE`` decides (d is too close to 0 or to m for its spread).
    """
    n0, d = over_seeds.n, over_seeds.estimate
    if n0 < 2 or math.isnan(over_seeds.low) or math.isnan(over_seeds.high):
        return None
    quantile = 0.5 + confidence / 2
    spread = (over_seeds.high - over_seeds.low) / 2 / float(stats.t.ppf(quantile, n0 - 1)) * math.sqrt(n0)
    for n in range(MIN_SEEDS, MAX_SEEDS_TO_DECIDE + 1):
        half_width = float(stats.t.ppf(quantile, n - 1)) * spread / math.sqrt(n)
        if d - half_width > 0:
            return n, SUPPORTED
        if d + half_width < margin:
            return n, NOT_SUPPORTED
    return MAX_SEEDS_TO_DECIDE + 1, ""
