"""Seed statistics: means with Student-t confidence intervals, and differences between two arms.

Every interval here is a two-sided Student-t interval at ``confidence`` (default 0.95):
``mean ± t_{(1+c)/2, n-1} · s/√n`` with ``s`` the sample standard deviation over seeds.
Two arms are compared *paired by seed* when they ran the same seeds (a seed fixes the
initialisation and the batch order, so the per-seed difference removes that noise), and
with Welch's unequal-variance t-interval otherwise. With one value per arm there is no
seed spread: the interval is NaN and callers say so.

Verdicts read these through ``decide`` (does a margin clear δ?) and ``equivalent`` (is a
difference within ±ε?), each with three outcomes read off a two-sided 90 % interval (each
bound a one-sided 95 % test): pass when the whole interval is on the claim's side of the
threshold, fail when it is wholly on the other side, inconclusive when it straddles the
threshold or an arm has one seed (no spread: one seed never passes). An inconclusive
decision says how many seeds would decide at the observed spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


def t_quantile(confidence: float, dof: float) -> float:
    """The two-sided Student-t critical value: P(|T| ≤ q) = confidence for ``dof`` degrees of freedom."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, dof))


@dataclass(frozen=True)
class Interval:
    """Mean of finite values with its t-interval (``low``/``high`` NaN when n < 2)."""

    mean: float
    std: float
    n: int
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean, sample std and Student-t half width of the finite values (NaN/inf are ignored)."""
    x = np.asarray(pd.Series(values, dtype="float64"), dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan)
    std = float(x.std(ddof=1))
    return Interval(mean, std, n, t_quantile(confidence, n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Difference:
    """``a − b`` as a difference of means with its t-interval.

    Args:
        diff: mean(a) − mean(b) (for paired seeds: the mean per-seed difference).
        low, high: the t-interval of the difference; NaN when there is no seed spread.
        method: ``paired`` (same seeds in both arms), ``welch`` or ``single`` (no interval).
        n_a, n_b: values in each arm.
        pairs: the per-seed differences (paired) or every cross difference a_i − b_j
            (Welch, single), in seed order.
    """

    diff: float
    low: float
    high: float
    method: str
    n_a: int
    n_b: int
    pairs: tuple[float, ...] = ()

    @property
    def seeds(self) -> int:
        """Seeds of the smaller arm: what decides the rule of ``clears``."""
        return min(self.n_a, self.n_b)

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def describe(self, confidence: float = CONFIDENCE, scale: float = 1.0, unit: str = "",
                 show: Callable[[float], str] | None = None) -> str:
        """Words for the interval, e.g. ``paired 95% t-interval [+0.1, +0.4] over 3 seeds``."""
        pct = f"{confidence:.0%}"
        if self.method == "single" or not self.has_interval:
            return f"one value per arm ({self.n_a} vs {self.n_b}): no seed spread, compared against the threshold only"
        show = show or (lambda v: f"{v * scale:+.3g}{unit}")
        span = f"[{show(self.low)}, {show(self.high)}]"
        if self.method == "paired":
            return f"paired-by-seed {pct} t-interval {span} over {self.n_a} seeds"
        return f"Welch {pct} t-interval {span} ({self.n_a} vs {self.n_b} seeds)"


def difference(a: pd.Series, b: pd.Series, confidence: float = CONFIDENCE) -> Difference:
    """``a − b`` for two arms given as values indexed by seed (non-finite values are dropped).

    Paired by seed when both arms hold the same ≥ 2 seeds; Welch's t-interval when each
    arm has ≥ 2 values otherwise; no interval (``method="single"``) below that.
    """
    a = pd.Series(a, dtype="float64")
    b = pd.Series(b, dtype="float64")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return Difference(math.nan, math.nan, math.nan, "single", len(a), len(b))
    diff = float(a.mean() - b.mean())
    same_seeds = (a.index.is_unique and b.index.is_unique and len(a) >= 2
                  and set(a.index) == set(b.index))
    if same_seeds:
        a = a.sort_index()
        per_seed = a - b.reindex(a.index)
        interval = t_interval(per_seed, confidence)
        return Difference(interval.mean, interval.low, interval.high, "paired", len(a), len(b),
                          tuple(float(v) for v in per_seed))
    cross = tuple(float(x - y) for x in a for y in b)
    if len(a) >= 2 and len(b) >= 2:
        va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return Difference(diff, diff, diff, "welch", len(a), len(b), cross)
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        half = t_quantile(confidence, dof) * se
        return Difference(diff, diff - half, diff + half, "welch", len(a), len(b), cross)
    return Difference(diff, math.nan, math.nan, "single", len(a), len(b), cross)


# ------------------------------------------------------------------ three-outcome decisions

#: The two-sided level of the interval a verdict reads: each bound is a one-sided 95 % test.
VERDICT_CONFIDENCE = 0.90
PASS, FAIL, INCONCLUSIVE, NOT_APPLICABLE = "pass", "fail", "inconclusive", "not-applicable"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE, NOT_APPLICABLE)
MAX_SEEDS_NEEDED = 1000


@dataclass(frozen=True)
class Decision:
    """One directional comparison judged against a threshold δ.

    The margin is ``direction · (a − b)`` (paired by seed or Welch, see ``difference``) and
    ``[low, high]`` its two-sided ``confidence`` t-interval:

    - ``pass``: ``low ≥ δ`` — the whole interval clears δ;
    - ``fail``: ``high < δ`` — the whole interval lies below δ: the data contradict an effect of size δ;
    - ``inconclusive``: the interval straddles δ, or an arm has a single value (no seed
      spread: one seed never passes). ``seeds_needed`` is then the least number of seeds
      per arm whose interval, at the observed spread, would clear δ on the side the mean lies
      (None when the spread is unknown).

    Args:
        outcome: ``pass``, ``fail`` or ``inconclusive``.
        margin, low, high: the margin and its interval (``low``/``high`` NaN without spread).
        n: seeds of the smaller arm. method: ``paired``, ``welch`` or ``single``.
        seeds_needed: see above. threshold: δ.
    """

    outcome: str
    margin: float
    low: float
    high: float
    n: int
    method: str
    threshold: float
    seeds_needed: int | None = None
    pairs: tuple[float, ...] = ()

    @property
    def holds(self) -> bool:
        return self.outcome == PASS

    def describe(self, show: Callable[[float], str] = lambda v: f"{v:+.4g}", confidence: float = VERDICT_CONFIDENCE) -> str:
        """E.g. ``+0.82 pp, 90% paired t-interval [+0.51, +1.13] over 4 seeds vs δ = 0.25 pp: pass``."""
        threshold = show(self.threshold).lstrip("+")
        if self.method == "single" or math.isnan(self.low):
            if math.isnan(self.margin):
                return "no finite value in one of the arms"
            return (f"{show(self.margin)} from one seed per arm: no seed spread (one seed never passes; "
                    f"run ≥ 3 seeds)")
        kind = "paired" if self.method == "paired" else "Welch"
        text = (f"{show(self.margin)}, {confidence:.0%} {kind} t-interval [{show(self.low)}, {show(self.high)}] "
                f"over {self.n} seeds vs δ = {threshold}")
        if self.outcome == INCONCLUSIVE:
            text += (f": straddles δ; ≈{self.seeds_needed} seeds per arm would decide at this spread"
                     if self.seeds_needed else ": straddles δ; no seed count up to "
                     f"{MAX_SEEDS_NEEDED} would decide at this spread")
        return text


def seeds_to_decide(spread: float, distance: float, confidence: float = VERDICT_CONFIDENCE) -> int | None:
    """The least n ≥ 2 with ``t_{(1+c)/2, n−1} · spread / √n < distance`` (None if none ≤ MAX_SEEDS_NEEDED).

    ``spread`` is the standard deviation of one seed's margin (paired: of the per-seed
    differences; Welch: √(s_a² + s_b²)), ``distance`` how far the mean margin is from δ.
    """
    if not (math.isfinite(spread) and math.isfinite(distance)) or distance <= 0:
        return None
    if spread == 0:
        return 2
    for n in range(2, MAX_SEEDS_NEEDED + 1):
        if t_quantile(confidence, n - 1) * spread / math.sqrt(n) < distance:
            return n
    return None


def _spread(d: Difference, a: pd.Series | None, b: pd.Series | None) -> float:
    if d.method == "paired":
        return float(np.std(d.pairs, ddof=1)) if len(d.pairs) >= 2 else math.nan
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return math.nan
    return math.sqrt(float(pd.Series(a).var(ddof=1)) + float(pd.Series(b).var(ddof=1)))


def decide(a: pd.Series, b: pd.Series, delta: float, *, direction: int = 1,
           confidence: float = VERDICT_CONFIDENCE) -> Decision:
    """Is ``direction · (a − b) ≥ delta``? ``a``, ``b``: finite values indexed by seed (see ``Decision``)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    a = pd.Series(a, dtype="float64")
    b = pd.Series(b, dtype="float64")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    d = difference(a, b, confidence)
    n = d.seeds
    if math.isnan(d.diff):
        return Decision(INCONCLUSIVE, math.nan, math.nan, math.nan, n, d.method, delta)
    margin = direction * d.diff
    pairs = tuple(direction * p for p in d.pairs)
    if not d.has_interval:
        return Decision(INCONCLUSIVE, margin, math.nan, math.nan, n, d.method, delta, None, pairs)
    low, high = sorted((direction * d.low, direction * d.high))
    if low >= delta:
        return Decision(PASS, margin, low, high, n, d.method, delta, None, pairs)
    if high < delta:
        return Decision(FAIL, margin, low, high, n, d.method, delta, None, pairs)
    needed = seeds_to_decide(_spread(d, a, b), abs(margin - delta), confidence)
    return Decision(INCONCLUSIVE, margin, low, high, n, d.method, delta, needed, pairs)


def equivalent(a: pd.Series, b: pd.Series, epsilon: float, *, confidence: float = VERDICT_CONFIDENCE) -> Decision:
    """Is ``|a − b| < epsilon``? An equivalence test (two one-sided tests at the interval's level).

    ``pass`` when the whole interval lies inside (−ε, ε); ``fail`` when it lies wholly
    outside (the difference is ≥ ε, with confidence); ``inconclusive`` otherwise or with one seed.
    """
    a = pd.Series(a, dtype="float64")
    b = pd.Series(b, dtype="float64")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    d = difference(a, b, confidence)
    n = d.seeds
    if math.isnan(d.diff) or not d.has_interval:
        return Decision(INCONCLUSIVE, d.diff, math.nan, math.nan, n, d.method, epsilon, None, d.pairs)
    if -epsilon < d.low and d.high < epsilon:
        return Decision(PASS, d.diff, d.low, d.high, n, d.method, epsilon, None, d.pairs)
    if d.low >= epsilon or d.high <= -epsilon:
        return Decision(FAIL, d.diff, d.low, d.high, n, d.method, epsilon, None, d.pairs)
    needed = seeds_to_decide(_spread(d, a, b), abs(epsilon - abs(d.diff)), confidence)
    return Decision(INCONCLUSIVE, d.diff, d.low, d.high, n, d.method, epsilon, needed, d.pairs)


def combine(outcomes) -> str:
    """A claim of several parts: fail if any part fails, pass if every part passes, else inconclusive."""
    outcomes = [o for o in outcomes if o != NOT_APPLICABLE]
    if not outcomes:
        return NOT_APPLICABLE
    if FAIL in outcomes:
        return FAIL
    return PASS if all(o == PASS for o in outcomes) else INCONCLUSIVE
