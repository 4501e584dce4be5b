"""Seed statistics: means with Student-t confidence intervals, and differences between two arms.

Every interval here is a two-sided Student-t interval at ``confidence`` (default 0.95):
``mean ± t_{(1+c)/2, n-1} · s/√n`` with ``s`` the sample standard deviation over seeds.
Two arms are compared *paired by seed* when they ran the same seeds (a seed fixes the
initialisation and the batch order, so the per-seed difference removes that noise), and
with Welch's unequal-variance t-interval otherwise. With one value per arm there is no
seed spread: the interval is NaN and callers say so.

Whether a difference *clears* a threshold δ (``clears``) depends on how many seeds the
smaller arm has, because a t-interval over two seeds is uninformative (t₀.₉₇₅,₁ = 12.7):

- n ≥ 3: the mean difference is ≥ δ **and** its 95 % t-interval excludes 0;
- n = 2: **every** pair clears δ — both per-seed differences when the arms are paired by
  seed, all four cross-seed differences otherwise (the ranges are δ apart);
- n = 1: the point difference is ≥ δ, flagged as a single seed (no spread to compare with).

The two-seed rule is a consistency check, not a significance test (both seeds on the
same side has probability 1/4 under no effect); it is what two seeds allow. From three
seeds on the interval is informative and decides, even when every seed pair clears δ
but the seeds scatter by more than the margin.

The words say which part failed: "below δ" (the mean difference is smaller than δ), "not
significant" (the mean clears δ but the t-interval includes 0), or "not in every seed
pair" (two seeds that disagree).
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


@dataclass(frozen=True)
class Decision:
    """Whether a difference clears a threshold, by the rule its seed count allows (see module doc).

    Args:
        holds: the margin (the difference in the claimed direction) clears δ by the rule.
        rule: ``t-interval`` (n ≥ 3), ``every pair`` (n = 2), ``single seed`` (n = 1) or ``none``.
        outcome: ``clears δ``, ``below δ``, ``not significant``, ``not in every seed pair`` or ``no values``.
        detail: the numbers behind it: the t-interval, the seed pairs, or the single-seed flag.
        threshold: δ in words, e.g. ``δ = 0.50 pp``.
    """

    holds: bool
    rule: str
    outcome: str
    detail: str
    threshold: str = "δ"

    @property
    def text(self) -> str:
        """E.g. ``clears δ = 0.50 pp on average but not in every seed pair (seed pairs +0.26, +0.74 pp)``."""
        verb = {"clears δ": f"clears {self.threshold}", "below δ": f"below {self.threshold}",
                "not significant": f"clears {self.threshold} on average but not significant",
                "not in every seed pair": f"clears {self.threshold} on average but not in every seed pair"}
        return f"{verb.get(self.outcome, self.outcome)} ({self.detail})"


def _plain(value: float) -> str:
    return f"{value:+.4g}"


def clears(d: Difference, delta: float, *, direction: int = 1, confidence: float = CONFIDENCE,
           show: Callable[[float], str] = _plain) -> Decision:
    """Does ``direction · d`` clear ``delta`` beyond the seed noise (the rule in the module doc)?

    Args:
        d: the difference (``difference(a, b)``).
        delta: the least margin that counts (≥ 0).
        direction: +1 when ``a`` must exceed ``b`` by δ, −1 when it must fall below ``b`` by δ.
        confidence: of the t-interval (n ≥ 3).
        show: formats a difference for the text (e.g. in percentage points).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    threshold = f"δ = {show(delta).lstrip('+')}"
    if math.isnan(d.diff):
        return Decision(False, "none", "no values", "no finite value in one of the arms", threshold)
    margin = direction * d.diff
    every = bool(d.pairs) and all(direction * p >= delta for p in d.pairs)
    shown = ", ".join(show(p) for p in d.pairs[:6]) + (", …" if len(d.pairs) > 6 else "")
    what = "seed pairs" if d.method == "paired" else "cross-seed pairs"
    n = d.seeds
    if n >= 3 and d.has_interval:
        how = d.describe(confidence, show=show)
        if margin < delta:
            return Decision(False, "t-interval", "below δ", how, threshold)
        if not (d.low > 0 if direction > 0 else d.high < 0):
            note = f"; yet all {len(d.pairs)} {what} clear δ: {shown}" if every else ""
            return Decision(False, "t-interval", "not significant", f"the {how} includes 0{note}", threshold)
        return Decision(True, "t-interval", "clears δ", how, threshold)
    if n >= 2:
        if every:
            return Decision(True, "every pair", "clears δ", f"all {len(d.pairs)} {what} clear it: {shown}", threshold)
        if margin < delta:
            return Decision(False, "every pair", "below δ", f"{what} {shown}", threshold)
        return Decision(False, "every pair", "not in every seed pair",
                        f"{what} {shown}; with {n} seeds every pair must clear δ", threshold)
    return Decision(margin >= delta, "single seed", "clears δ" if margin >= delta else "below δ",
                    "single seed: a point difference, no seed spread", threshold)
