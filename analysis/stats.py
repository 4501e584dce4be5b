"""Seed statistics: means with Student-t confidence intervals, and differences between two arms.

Every interval here is a two-sided Student-t interval at ``confidence`` (default 0.95):
``mean ± t_{(1+c)/2, n-1} · s/√n`` with ``s`` the sample standard deviation over seeds.
Two arms are compared *paired by seed* when they ran the same seeds (a seed fixes the
initialisation and the batch order, so the per-seed difference removes that noise), and
with Welch's unequal-variance t-interval otherwise. With one value per arm there is no
seed spread: the interval is NaN and callers say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    """

    diff: float
    low: float
    high: float
    method: str
    n_a: int
    n_b: int

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def describe(self, confidence: float = CONFIDENCE, scale: float = 1.0, unit: str = "") -> str:
        """Words for the interval, e.g. ``paired 95% t-interval [+0.1, +0.4] over 3 seeds``."""
        pct = f"{confidence:.0%}"
        if self.method == "single" or not self.has_interval:
            return f"one value per arm ({self.n_a} vs {self.n_b}): no seed spread, compared against the threshold only"
        span = f"[{self.low * scale:+.3g}{unit}, {self.high * scale:+.3g}{unit}]"
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
        per_seed = a - b.reindex(a.index)
        interval = t_interval(per_seed, confidence)
        return Difference(interval.mean, interval.low, interval.high, "paired", len(a), len(b))
    if len(a) >= 2 and len(b) >= 2:
        va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return Difference(diff, diff, diff, "welch", len(a), len(b))
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        half = t_quantile(confidence, dof) * se
        return Difference(diff, diff - half, diff + half, "welch", len(a), len(b))
    return Difference(diff, math.nan, math.nan, "single", len(a), len(b))
