"""Checks of the paper's claims: each a small function of DataFrames returning a ``Verdict``.

A verdict is ``pass``, ``fail`` or ``not-applicable`` (the study lacks the data the
claim needs, and the reason says which), never silently skipped. It carries the
numbers it used and its thresholds, which are keyword parameters with defaults:

- ``delta`` for test errors (fractions): 0.005 = 0.5 percentage points, about two
  binomial standard errors of a ~3 % error on 4,000 test images (0.27 pp each) and of a
  ~10 % error on CIFAR-10's 10,000 (0.3 pp): a smaller gap is within one run's test noise.
- ``delta`` for LM losses: 0.0025 nats, half the smallest end-of-cosine margin the paper
  shows (λ = 0.3 ends ≈ 0.005 below λ = 0 at step 50k).
- ``epsilon`` for the train–validation gap: 0.05 nats. One-pass training should have no
  generalisation gap; a few hundredths come without any overfitting from the
  interval-averaged training loss and from the two splits' text, and the paper's own gap
  is ≲ 0.01 at 3.3 nats.

Noise: a difference between two grid points counts only when it clears the threshold
by the rule its seed count allows (``analysis.stats.clears``): with ≥ 3 seeds the mean
difference is ≥ δ and its Student-t interval (paired by seed when both arms ran the
same seeds, Welch otherwise) excludes 0; with 2 seeds every seed pair clears δ; with 1
seed the point difference is ≥ δ, flagged as a single seed. The text says which failed:
"below δ", "not significant" or "not in every seed pair". A bound that must hold (the
train–validation gap) must hold for every seed. Trials that diverged are results: a
grid point where any seed diverged counts as worse than every finished one. Failed,
stopped and running trials are left out, and the text counts them.

The vision claims come in the paper's two protocols, each its own verdict: (a) Fig. 1
and the sphere sweep — one run per LR whose LR decays during the run, judged on its
final ``test_error`` (``ushape``); (b) Figs. 2–3 — copies branched off the run and
fine-tuned at a small LR, judged on ``finetune_test_error`` of a branch
(``ushape_finetuned``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.load import CONFIG, SEED, column, has_values, fmt, values, varied_axes, x_column
from analysis.stats import CONFIDENCE, Decision, clears, difference, t_interval

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not-applicable"
ERROR_DELTA = 0.005
LOSS_DELTA = 0.0025
GAP_EPSILON = 0.05
ENDED = ("finished", "diverged")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim check.

    Args:
        claim: what is checked, in words.
        status: ``pass``, ``fail`` or ``not-applicable``.
        reason: one or two sentences with the numbers that decided it.
        numbers: the numbers used, by name (plain Python values).
        thresholds: the thresholds applied, by parameter name.
    """

    claim: str
    status: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def _na(claim: str, reason: str, thresholds: dict | None = None) -> Verdict:
    return Verdict(claim, NOT_APPLICABLE, reason, {}, thresholds or {})


# ------------------------------------------------------------------ shared helpers

FINETUNE_ERROR = "finetune_test_error"


def lr_decays(finals: pd.DataFrame) -> bool | None:
    """Whether the runs' LR decays during the run (the Fig. 1 / sphere-sweep protocol).

    True when some trial's last reported ``lr`` is below half its configured ``config/lr``
    (a step drop, a cosine), False when every trial with both ends at its configured LR (a
    constant LR, e.g. the main run of the Figs. 2–3 protocol), None when the study does not
    report ``lr``.
    """
    if not has_values(finals, "lr") or column("lr") not in finals:
        return None
    last = pd.to_numeric(finals["lr"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    configured = pd.to_numeric(finals[column("lr")], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    both = np.isfinite(last) & np.isfinite(configured) & (configured > 0)
    if not both.any():
        return None
    return bool((last[both] < 0.5 * configured[both]).any())


def test_error_metric(frame: pd.DataFrame) -> str | None:
    """The vision error a claim on the final model uses.

    ``test_error`` (the run's own error at its end) when it is reported and the LR decays
    during the run or the schedule is unknown; else ``finetune_test_error`` (the last
    fine-tuned branch, the Figs. 2–3 protocol) when reported; else ``test_error``.
    """
    if has_values(frame, "test_error") and lr_decays(frame) is not False:
        return "test_error"
    if has_values(frame, FINETUNE_ERROR):
        return FINETUNE_ERROR
    return "test_error" if has_values(frame, "test_error") else None


def _is_error(metric: str) -> bool:
    return "error" in metric


def show(metric: str, value: float) -> str:
    """A metric value in words: errors in percent, losses to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "diverged" if value > 0 else "-inf"
    return f"{100 * value:.2f}%" if _is_error(metric) else f"{value:.4g}"


def show_diff(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "+inf (diverged)" if value > 0 else "-inf (diverged)"
    return f"{100 * value:+.2f} pp" if _is_error(metric) else f"{value:+.4f}"


def _statuses(frame: pd.DataFrame) -> pd.Series:
    if "status" not in frame:
        return pd.Series("finished", index=frame.index)
    return frame["status"].astype(str)


def _left_out(frame: pd.DataFrame) -> str:
    """' (2 failed, 1 stopped left out)' for trials that neither finished nor diverged."""
    counts = _statuses(frame)[lambda s: ~s.isin(ENDED)].value_counts().sort_index()
    if counts.empty:
        return ""
    return " (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + " trials left out)"


@dataclass
class _Arm:
    """The trials at one grid point: finished values by seed, and how many diverged."""

    values: pd.Series
    n_diverged: int
    n_trials: int

    @property
    def point(self) -> float:
        """Mean over seeds; +inf when any seed diverged; NaN without a value."""
        if self.n_diverged:
            return math.inf
        return float(self.values.mean()) if len(self.values) else math.nan


def _arms(frame: pd.DataFrame, value: str, by: Sequence[str]) -> dict[tuple, _Arm]:
    """Per group of ``by`` columns: finished finite values indexed by seed, diverged count."""
    status = _statuses(frame)
    data = frame.assign(_status=status.to_numpy())
    data = data[data["_status"].isin(ENDED)]
    arms: dict[tuple, _Arm] = {}
    grouped = data.groupby(list(by), observed=True, sort=True) if by else [((), data)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        done = part[part["_status"] == "finished"]
        raw = done[value] if value in done else pd.Series(np.nan, index=done.index)
        vals = pd.Series(pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan),
                         index=done[SEED].to_numpy() if SEED in done else done["trial_id"].to_numpy())
        vals = vals[np.isfinite(vals.to_numpy(dtype=float, na_value=np.nan))]
        arms[key] = _Arm(vals.astype(float), int((part["_status"] == "diverged").sum()), len(part))
    return arms


def _exceeds(worse: _Arm, better: _Arm, delta: float, confidence: float, metric: str) -> tuple[bool, float, Decision]:
    """Is ``worse`` higher than ``better`` by ≥ delta, by the seed rule of ``stats.clears``?

    A grid point where a seed diverged is worse than one where none did, by +inf.
    """
    if worse.n_diverged and not better.n_diverged:
        return True, math.inf, Decision(True, "diverged", "clears δ", f"{worse.n_diverged}/{worse.n_trials} seeds diverged")
    d = difference(worse.values, better.values, confidence)
    decision = clears(d, delta, confidence=confidence, show=lambda v: show_diff(metric, v))
    return decision.holds, d.diff, decision


# ------------------------------------------------------------------ vision: U-shape (two protocols)

USHAPE_DECAY_CLAIM = ("U-shape after the LR decay (Fig. 1 / sphere-sweep protocol): the run's final test_error vs LR "
                      "has its minimum at an interior LR; both ends ≥ min + δ")
USHAPE_FINETUNE_CLAIM = ("U-shape of the fine-tuned copies (Figs. 2–3 protocol): finetune_test_error of the last "
                         "branch vs LR has its minimum at an interior LR; both ends ≥ min + δ")


def ushape(finals: pd.DataFrame, value: str = "test_error", *, delta: float = ERROR_DELTA,
           confidence: float = CONFIDENCE, weight_decay: float | None = None) -> Verdict:
    """Protocol (a), the paper's Fig. 1 and sphere sweep: one run per LR whose LR decays
    during the run; its final test error vs LR is U-shaped — minimum at an interior LR,
    both ends ≥ minimum + delta (by the seed rule of ``stats.clears``).

    Args:
        finals: one row per trial (``analysis.load.finals``) with ``config/lr``.
        value: the error at the end of the run (default ``test_error``).
        delta: how much worse than the minimum each end of the LR range must be.
        confidence: of the t-interval used with ≥ 3 seeds.
        weight_decay: the WD line to check (default: the WD whose best point is lowest).

    Not applicable when the runs end at their configured LR (no decay during the run:
    then the fine-tuned branches, ``ushape_finetuned``, are the protocol).
    """
    claim = USHAPE_DECAY_CLAIM if value == "test_error" else USHAPE_DECAY_CLAIM.replace("test_error", value)
    thresholds = {"delta": delta, "confidence": confidence}
    if not has_values(finals, value):
        return _na(claim, f"no {value} reported" + _left_out(finals), thresholds)
    if lr_decays(finals) is False:
        return _na(claim, "every run ends at its configured LR: the LR does not decay during the run, so its final "
                          f"{value} is not an after-decay error (the fine-tuned branches have their own verdict)",
                   thresholds)
    note = "" if lr_decays(finals) else " (the study does not report its LR: decay during the run assumed)"
    return _ushape_check(finals, value, claim, thresholds, delta, confidence, weight_decay, prefix="", suffix=note)


def finetune_at(curves: pd.DataFrame, epoch: float | None = None, value: str = FINETUNE_ERROR
                ) -> tuple[pd.DataFrame, float | None]:
    """One row per trial: its ``value`` from the fine-tuned branch taken at ``epoch``.

    ``epoch`` defaults to the last epoch any trial branched at (``epoch``, else the
    curves' x column). Trials without that branch keep their row with NaN (a trial that
    diverged before it stays ``diverged``). Returns the table and the epoch used.
    """
    keep = [c for c in ("trial_id", "status") if c in curves] + [c for c in curves.columns if c.startswith(CONFIG)]
    if not has_values(curves, value) or "trial_id" not in curves:
        return curves[keep].drop_duplicates("trial_id") if "trial_id" in curves else curves.iloc[0:0], None
    x = "epoch" if has_values(curves, "epoch") else x_column(curves)
    rows = curves[np.isfinite(pd.to_numeric(curves[value], errors="coerce").to_numpy(dtype=float, na_value=np.nan))]
    if x is None:
        at = rows.drop_duplicates("trial_id", keep="last")
        epoch = None
    else:
        epoch = float(rows[x].max()) if epoch is None else float(epoch)
        at = rows[np.isclose(rows[x].astype(float), epoch)].drop_duplicates("trial_id", keep="last")
    base = curves[keep].drop_duplicates("trial_id")
    return base.merge(at[["trial_id", value]], on="trial_id", how="left"), epoch


def ushape_finetuned(curves: pd.DataFrame, *, epoch: float | None = None, delta: float = ERROR_DELTA,
                     confidence: float = CONFIDENCE, weight_decay: float | None = None) -> Verdict:
    """Protocol (b), the paper's Figs. 2–3: copies branched off the run and fine-tuned at a
    small LR; the fine-tuned test error of the last branch (or the one at ``epoch``) vs LR
    is U-shaped, by the same rule as ``ushape``.

    Args:
        curves: the tidy curves table (``analysis.load.curves``) with ``finetune_test_error``
            at the branch epochs.
        epoch: the branch to check (default: the last branch epoch).
    """
    claim = USHAPE_FINETUNE_CLAIM
    thresholds = {"delta": delta, "confidence": confidence}
    frame, at = finetune_at(curves, epoch)
    if at is None and not has_values(frame, FINETUNE_ERROR):
        return _na(claim, f"no {FINETUNE_ERROR} reported (no fine-tuned branches)", thresholds)
    if at is not None:
        thresholds["branch_epoch"] = at
    prefix = f"branches from epoch {fmt(at)}: " if at is not None else ""
    return _ushape_check(frame, FINETUNE_ERROR, claim, thresholds, delta, confidence, weight_decay, prefix=prefix)


def _ushape_check(frame: pd.DataFrame, value: str, claim: str, thresholds: dict, delta: float, confidence: float,
                  weight_decay: float | None, prefix: str = "", suffix: str = "") -> Verdict:
    lr = column("lr")
    if lr not in frame or frame[lr].nunique() < 3:
        n = frame[lr].nunique() if lr in frame else 0
        return _na(claim, f"needs ≥ 3 learning rates; this study has {n}", thresholds)
    wd = column("weight_decay")
    by = [wd, lr] if wd in frame else [lr]
    arms = _arms(frame, value, by)
    if not arms:
        return _na(claim, "no finished or diverged trials" + _left_out(frame), thresholds)
    lines: dict[Any, list[tuple[float, _Arm]]] = {}
    for key, arm in arms.items():
        wd_value = key[0] if wd in frame else None
        if arm.n_diverged or len(arm.values):
            lines.setdefault(wd_value, []).append((float(key[-1]), arm))

    results = {}
    for wd_value, points in lines.items():
        points.sort(key=lambda p: p[0])
        results[wd_value] = _ushape_line(points, value, delta, confidence)
    checked = [w for w, r in results.items() if r["lrs"] >= 3]
    if not checked:
        return _na(claim, "no weight decay has results at ≥ 3 learning rates" + _left_out(frame), thresholds)
    if weight_decay is not None:
        match = [w for w in checked if w is not None and math.isclose(w, weight_decay, rel_tol=1e-9)]
        if not match:
            return _na(claim, f"weight_decay={weight_decay:g} has no results at ≥ 3 learning rates", thresholds)
        target = match[0]
    else:
        target = min(checked, key=lambda w: results[w]["min_value"])
    r = results[target]
    thresholds["weight_decay"] = target
    which = "" if target is None else (f"WD {fmt(target)}" + (" (the best WD)" if weight_decay is None and len(checked) > 1 else "") + ": ")
    text = prefix + which + r["text"]
    others = [f"WD {fmt(w)}: {'U' if results[w]['ok'] else 'no U'} (min at LR {fmt(results[w]['argmin'])})"
              for w in checked if w != target]
    if others:
        text += ". Other lines: " + "; ".join(others)
    numbers = {"metric": value, "line": {k: v for k, v in r.items() if k != "text"},
               "other_lines": {fmt(w): results[w]["ok"] for w in checked if w != target}}
    return Verdict(claim, PASS if r["ok"] else FAIL, text + suffix + _left_out(frame), numbers, thresholds)


def _ushape_line(points: list[tuple[float, _Arm]], value: str, delta: float, confidence: float) -> dict:
    lrs = [p[0] for p in points]
    means = [p[1].point for p in points]
    finite = [i for i, m in enumerate(means) if math.isfinite(m)]
    if not finite:
        return {"lrs": len(lrs), "ok": False, "min_value": math.inf, "argmin": math.nan,
                "text": "every learning rate diverged"}
    i_min = min(finite, key=lambda i: means[i])
    best = points[i_min][1]
    interior = 0 < i_min < len(points) - 1
    ends = {}
    for name, i in (("smallest", 0), ("largest", len(points) - 1)):
        if i != i_min:
            ends[name] = _exceeds(points[i][1], best, delta, confidence, value)
    ok = interior and all(e[0] for e in ends.values())
    seeds = max(len(p[1].values) for p in points)
    parts = [f"minimum {show(value, means[i_min])} at LR {fmt(lrs[i_min])} "
             f"({'interior' if interior else 'on the edge'} of {fmt(lrs[0])}…{fmt(lrs[-1])}"
             f"{f', mean of {seeds} seeds' if seeds > 1 else ''})"]
    for name, i in (("smallest", 0), ("largest", len(points) - 1)):
        if name not in ends:
            continue
        _, diff, decision = ends[name]
        parts.append(f"LR {fmt(lrs[i])}: {show(value, means[i])}, {show_diff(value, diff)} vs min: {decision.text}")
    return {"lrs": len(lrs), "ok": ok, "min_value": means[i_min], "argmin": lrs[i_min], "interior": interior,
            "lr": lrs, "mean": means, "end_margins": {k: v[1] for k, v in ends.items()},
            "end_outcomes": {k: v[2].outcome for k, v in ends.items()}, "text": "; ".join(parts)}


# ------------------------------------------------------------------ vision: WD helps only at large LR

def wd_helps_only_at_large_lr(finals: pd.DataFrame, value: str | None = None, *, delta: float = ERROR_DELTA,
                              confidence: float = CONFIDENCE) -> Verdict:
    """Weight decay helps at the LR where it is used, and not at the smallest LR.

    At each LR the gain is error(WD = 0) − error(best WD > 0 at that LR). The "large LR"
    is L*, the LR of the best result of any WD > 0 (where one would run with weight
    decay): not the grid's largest, which may lie past the useful range (WD and LR 1.0
    blowing up says nothing about the claim). Passes when

    1. L* is larger than the smallest LR,
    2. the gain at L* clears delta (by the seed rule of ``stats.clears``), and
    3. the gain at the smallest LR is below delta (its mean: WD does not help there).

    Args:
        finals: one row per trial with ``config/lr`` and ``config/weight_decay``.
        value: the error (default ``test_error_metric``: the run's error after its LR
            decay, else the last fine-tuned branch).
    """
    claim = ("WD helps only at large LR: the gain of WD > 0 over WD = 0 clears δ at the LR where WD > 0 does best "
             "(larger than the smallest LR), and is below δ at the smallest LR")
    thresholds = {"delta": delta, "confidence": confidence}
    value = value or test_error_metric(finals)
    if value is None or value not in finals:
        return _na(claim, "no test error reported (test_error or finetune_test_error)" + _left_out(finals), thresholds)
    lr, wd = column("lr"), column("weight_decay")
    if lr not in finals or finals[lr].nunique() < 2:
        return _na(claim, "needs ≥ 2 learning rates", thresholds)
    if wd not in finals or not (finals[wd] == 0).any() or not (finals[wd] > 0).any():
        return _na(claim, "needs weight decay 0 and > 0 in the grid", thresholds)
    arms = _arms(finals, value, [lr, wd])
    per_lr: dict[float, dict] = {}
    for (lr_value, wd_value), arm in arms.items():
        entry = per_lr.setdefault(float(lr_value), {"base": None, "decayed": {}})
        if wd_value == 0:
            entry["base"] = arm
        else:
            entry["decayed"][float(wd_value)] = arm
    gains = {}
    for lr_value, entry in sorted(per_lr.items()):
        base, decayed = entry["base"], {w: a for w, a in entry["decayed"].items() if a.n_diverged or len(a.values)}
        if base is None or not (base.n_diverged or len(base.values)) or not decayed:
            continue
        best_wd = min(decayed, key=lambda w: decayed[w].point)
        best = decayed[best_wd]
        if base.n_diverged and best.n_diverged:
            continue  # both arms diverged: no gain to measure at this LR
        if best.n_diverged and not base.n_diverged:
            helps, gain = False, -math.inf
            how = Decision(False, "diverged", "below δ", f"every WD > 0 diverged ({best.n_diverged} trials)")
        else:
            helps, gain, how = _exceeds(base, best, delta, confidence, value)
        gains[lr_value] = {"gain": gain, "helps": helps, "best_wd": best_wd, "how": how,
                           "base": base.point, "with_wd": best.point}
    if len(gains) < 2:
        return _na(claim, "needs results for WD = 0 and WD > 0 at ≥ 2 learning rates" + _left_out(finals), thresholds)
    small = min(gains)
    finite = {k: g for k, g in gains.items() if math.isfinite(g["with_wd"])}
    if not finite:
        return Verdict(claim, FAIL, "every WD > 0 diverged at every learning rate" + _left_out(finals),
                       {"metric": value, "gains": {fmt(k): g["gain"] for k, g in gains.items()}}, thresholds)
    used = min(finite, key=lambda k: (finite[k]["with_wd"], k))  # L*: where WD > 0 does best

    def say(lr_value):
        g = gains[lr_value]
        return (f"LR {fmt(lr_value)}: WD 0 {show(value, g['base'])} vs WD {fmt(g['best_wd'])} "
                f"{show(value, g['with_wd'])}, gain {show_diff(value, g['gain'])} — {g['how'].text}")

    larger = used > small
    helps_used = gains[used]["helps"]
    quiet_small = not (gains[small]["gain"] >= delta)
    ok = larger and helps_used and quiet_small
    failures = []
    if not larger:
        failures.append(f"WD > 0 does best at the smallest LR {fmt(small)}")
    elif not helps_used:
        failures.append(f"the gain at LR {fmt(used)} does not clear δ ({gains[used]['how'].outcome})")
    if not quiet_small:
        failures.append(f"WD also helps at the smallest LR {fmt(small)} (gain {show_diff(value, gains[small]['gain'])} ≥ δ)")
    text = f"{value}: WD > 0 does best at LR {fmt(used)} (WD {fmt(gains[used]['best_wd'])}); there {say(used)}"
    if used != small:
        text += f"; at the smallest {say(small)}"
    middle = [f"{fmt(k)}: {show_diff(value, g['gain'])}" for k, g in gains.items() if k not in (small, used)]
    if middle:
        text += "; gains at the other LRs: " + ", ".join(middle)
    if failures:
        text += ". Fails: " + "; ".join(failures)
    numbers = {"metric": value, "used_lr": used, "smallest_lr": small,
               "gains": {fmt(k): g["gain"] for k, g in gains.items()},
               "helps": {fmt(k): g["helps"] for k, g in gains.items()},
               "best_wd": {fmt(k): g["best_wd"] for k, g in gains.items()}}
    return Verdict(claim, PASS if ok else FAIL, text + _left_out(finals), numbers, thresholds)


# ------------------------------------------------------------------ LM: Chinchilla (AdamW vs Adam)

@dataclass(frozen=True)
class Crossing:
    """Where ``d = loss(WD > 0) − loss(WD = 0)`` last turns from positive to negative.

    Args:
        x: the interpolated x of the sign change (NaN when there is none).
        index: the last index with d > 0 (None when d never is positive).
        peak: the largest d before the crossing (how much higher WD was mid-run).
    """

    x: float
    index: int | None
    peak: float

    @property
    def exists(self) -> bool:
        return not math.isnan(self.x)


def find_crossing(x: Sequence[float], d: Sequence[float]) -> Crossing:
    """The last crossing from above (d > 0) to below (d ≤ 0) that persists to the end.

    ``x`` and ``d`` are aligned arrays sorted by ``x``; the crossing x is interpolated
    linearly between the last positive point and the next one.
    """
    x, d = np.asarray(x, dtype=float), np.asarray(d, dtype=float)
    positive = np.flatnonzero(d > 0)
    if len(positive) == 0:
        return Crossing(math.nan, None, math.nan)
    j = int(positive[-1])
    peak = float(d[: j + 1].max())
    if j == len(d) - 1:
        return Crossing(math.nan, j, peak)  # still above at the end
    x0, x1, d0, d1 = x[j], x[j + 1], d[j], d[j + 1]
    return Crossing(float(x0 + (x1 - x0) * d0 / (d0 - d1)), j, peak)


def lm_loss_metric(frame: pd.DataFrame) -> str | None:
    """The LM loss a claim is checked on: ``val_loss`` (fixed batches, least noisy)."""
    return "val_loss" if has_values(frame, "val_loss") else None


def _chinchilla(curves: pd.DataFrame, schedule: str, metric: str | None, delta: float,
                confidence: float, claim: str, want_lower: bool) -> Verdict:
    thresholds = {"delta": delta, "confidence": confidence}
    metric = metric or lm_loss_metric(curves)
    if metric is None or metric not in curves:
        return _na(claim, "no val_loss reported (the LM trainable's evaluation loss)", thresholds)
    sched, wd = column("schedule"), column("weight_decay")
    if sched not in curves:
        return _na(claim, "no schedule in the config", thresholds)
    if wd not in curves or not (curves[wd] == 0).any() or not (curves[wd] > 0).any():
        return _na(claim, "needs weight decay 0 (Adam) and > 0 (AdamW) in the grid", thresholds)
    data = curves[curves[sched].astype(str) == schedule]
    if data.empty:
        return _na(claim, f"no trials with the {schedule} schedule", thresholds)
    notes = []
    opt = column("optimizer")
    if opt in data and data[opt].nunique() > 1:
        data = data[data[opt].astype(str) == "adamw"]
        notes.append("AdamW trials only")
        if data.empty:
            return _na(claim, "the optimizer axis has no adamw trials", thresholds)
    x = "tokens" if has_values(data, "tokens") else ("step" if has_values(data, "step") else "training_iteration")
    context = [c for c in varied_axes(data) if c not in (sched, wd, opt)]
    status = _statuses(data)
    results, left_out = {}, _left_out(data.drop_duplicates("trial_id"))
    grouped = data.groupby(context, observed=True, sort=True) if context else [((), data)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(k)}" for c, k in zip(context, key))
        part_status = status.loc[part.index]
        finished = part[part_status == "finished"]
        base = finished[finished[wd] == 0]
        if base.empty:
            n_div = part.loc[(part_status == "diverged") & (part[wd] == 0), "trial_id"].nunique()
            return _na(claim, f"no finished WD = 0 trial{' at ' + label if label else ''} under {schedule}"
                       f" to compare against ({n_div} diverged)", thresholds)
        base_curve = _mean_curve(base, x, metric)
        for wd_value in sorted(part.loc[part[wd] > 0, wd].unique()):
            name = (label + ", " if label else "") + f"WD {fmt(wd_value)}"
            arm = finished[np.isclose(finished[wd].astype(float), wd_value)]
            if arm.empty:
                n_div = part.loc[(part_status == "diverged") & np.isclose(part[wd].astype(float), wd_value), "trial_id"].nunique()
                results[name] = {"lower": False, "crossing": False, "text": f"{name}: no finished trial ({n_div} diverged)"}
                continue
            results[name] = _compare_curves(_mean_curve(arm, x, metric), base_curve, arm, base, x, metric,
                                            delta, confidence, name)
    if not results:
        return _na(claim, f"no WD > 0 trials under {schedule}", thresholds)
    if want_lower:
        ok = all(r["lower"] and r["crossing"] for r in results.values())
    else:
        ok = all(not r["lower"] for r in results.values())
    text = f"{metric} vs {x} under {schedule}" + (f" ({'; '.join(notes)})" if notes else "") + ": "
    text += ". ".join(r["text"] for r in results.values()) + left_out
    numbers = {"metric": metric, "x": x, "schedule": schedule,
               "arms": {k: {n: v for n, v in r.items() if n != "text"} for k, r in results.items()}}
    return Verdict(claim, PASS if ok else FAIL, text, numbers, thresholds)


def _mean_curve(trials_rows: pd.DataFrame, x: str, metric: str) -> pd.Series:
    rows = trials_rows[[x, metric]].copy()
    rows[metric] = pd.to_numeric(rows[metric], errors="coerce")
    rows = rows[np.isfinite(rows[metric].to_numpy(dtype=float, na_value=np.nan))]
    return rows.groupby(x)[metric].mean().sort_index()


def _end_values(rows: pd.DataFrame, x: str, metric: str, at: float) -> pd.Series:
    """Each trial's value at x = ``at`` (the last common point), indexed by seed."""
    at_end = rows[(rows[x] == at) & rows[metric].notna()]
    at_end = at_end.drop_duplicates("trial_id", keep="last")
    vals = pd.to_numeric(at_end[metric], errors="coerce").astype(float)
    vals.index = at_end[SEED].to_numpy() if SEED in at_end else at_end["trial_id"].to_numpy()
    return vals


def where(x: str, value: float) -> str:
    """A position on a curve in words: ``2.05M tokens``, ``step 1800``, ``epoch 40``."""
    if x == "tokens":
        return f"{value / 1e6:.3g}M tokens" if abs(value) >= 1e5 else f"{value:.4g} tokens"
    return f"{x} {value:.6g}"


_LOWER = {"clears δ": "lower by ≥ δ", "below δ": "not lower by δ",
          "not significant": "lower by ≥ δ on average but not significant",
          "not in every seed pair": "lower by ≥ δ on average but not in every seed pair", "no values": "no values"}


def _compare_curves(arm_curve, base_curve, arm_rows, base_rows, x, metric, delta, confidence, name) -> dict:
    common = arm_curve.index.intersection(base_curve.index)
    if len(common) == 0:
        return {"lower": False, "crossing": False, "text": f"{name}: no common {x} with WD = 0"}
    d = (arm_curve.loc[common] - base_curve.loc[common]).sort_index()
    crossing = find_crossing(d.index.to_numpy(dtype=float), d.to_numpy())
    end = float(d.index[-1])
    diff = difference(_end_values(arm_rows, x, metric, end), _end_values(base_rows, x, metric, end), confidence)
    decision = clears(diff, delta, direction=-1, confidence=confidence, show=lambda v: f"{v:+.4f}")
    lower = decision.holds
    cross_ok = crossing.exists and crossing.peak >= delta
    text = (f"{name} ends {show_diff(metric, diff.diff)} vs WD 0 at {where(x, end)}: "
            f"{_LOWER.get(decision.outcome, decision.outcome)} ({decision.threshold}; {decision.detail})")
    if crossing.exists:
        text += f"; higher by up to {crossing.peak:+.4f} before crossing below at ≈{where(x, crossing.x)}"
        if not cross_ok:
            text += " (peak < δ: no real crossing)"
    elif crossing.index is None:
        text += "; never higher than WD 0 (no crossing)"
    else:
        text += "; still higher at the end (no crossing)"
    return {"lower": bool(lower), "crossing": bool(cross_ok), "end_diff": diff.diff, "end_low": diff.low,
            "end_high": diff.high, "method": diff.method, "rule": decision.rule, "outcome": decision.outcome,
            "crossing_x": crossing.x, "peak": crossing.peak, "text": text}


def chinchilla_cosine(curves: pd.DataFrame, metric: str | None = None, *, delta: float = LOSS_DELTA,
                      confidence: float = CONFIDENCE) -> Verdict:
    """Under a cosine schedule every WD > 0 ends lower than WD = 0 (by ≥ delta) after being higher mid-run.

    Args:
        curves: the tidy curves table (``analysis.load.curves``).
        metric: the loss (default ``val_loss``).
        delta: the end margin required, and the least mid-run excess that makes a crossing.
    """
    claim = "Chinchilla (cosine): AdamW (each WD > 0) ends lower than Adam (WD = 0) and their curves cross"
    return _chinchilla(curves, "cosine", metric, delta, confidence, claim, want_lower=True)


def chinchilla_constant(curves: pd.DataFrame, metric: str | None = None, *, delta: float = LOSS_DELTA,
                        confidence: float = CONFIDENCE) -> Verdict:
    """Under a constant LR no WD > 0 ends lower than WD = 0 by ≥ delta (beyond the seed spread)."""
    claim = "Chinchilla (constant LR): AdamW (WD > 0) does not end lower than Adam (WD = 0)"
    return _chinchilla(curves, "constant", metric, delta, confidence, claim, want_lower=False)


# ------------------------------------------------------------------ LM: train-validation gap

def final_pairs(curves: pd.DataFrame, a: str = "train_loss", b: str = "val_loss") -> pd.DataFrame:
    """Per trial, the last report holding finite values of both ``a`` and ``b``."""
    if a not in curves or b not in curves:
        return curves.iloc[0:0]
    both = curves[np.isfinite(pd.to_numeric(curves[a], errors="coerce").to_numpy(dtype=float, na_value=np.nan))
                  & np.isfinite(pd.to_numeric(curves[b], errors="coerce").to_numpy(dtype=float, na_value=np.nan))]
    return both.drop_duplicates("trial_id", keep="last")


def train_val_gap(curves: pd.DataFrame, *, epsilon: float = GAP_EPSILON, confidence: float = CONFIDENCE) -> Verdict:
    """|val_loss − train_loss| at the end is below epsilon for every weight decay (and other axis values).

    The gap of each finished trial is taken at its last report with both losses. The
    claim must hold for every seed, not only on average: the largest |gap| of any trial
    decides; each grid point's mean gap and its t-interval over seeds are reported.
    """
    claim = "Train–validation gap: |val_loss − train_loss| at the end < ε for every WD (every seed)"
    thresholds = {"epsilon": epsilon, "confidence": confidence}
    if not has_values(curves, "train_loss") or not has_values(curves, "val_loss"):
        return _na(claim, "needs both train_loss and val_loss", thresholds)
    ended = final_pairs(curves[(_statuses(curves) == "finished").to_numpy()])
    left_out = _left_out(curves.drop_duplicates("trial_id"))
    if ended.empty:
        return _na(claim, "no finished trial with both losses" + left_out, thresholds)
    ended = ended.assign(gap=ended["val_loss"].astype(float) - ended["train_loss"].astype(float))
    groups = varied_axes(ended)
    wd = column("weight_decay")
    if wd in ended and wd not in groups:
        groups = [wd, *groups]
    grouped = ended.groupby(groups, observed=True, sort=True) if groups else [((), ended)]
    rows = {}
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(k)}" for c, k in zip(groups, key)) or "all trials"
        interval = t_interval(part["gap"], confidence)
        worst = float(part["gap"].abs().max())
        rows[label] = {"gap": interval.mean, "low": interval.low, "high": interval.high, "n": interval.n,
                       "max_abs": worst, "ok": worst < epsilon}
    ok = all(r["ok"] for r in rows.values())
    worst_label = max(rows, key=lambda k: rows[k]["max_abs"])
    w = rows[worst_label]
    spread = (f", mean {w['gap']:+.4f} with {confidence:.0%} t-interval [{w['low']:+.4f}, {w['high']:+.4f}] over {w['n']} seeds"
              if w["n"] >= 2 else "")
    listing = "; ".join(f"{k}: {v['gap']:+.4f}" for k, v in rows.items())
    text = (f"largest |gap| {w['max_abs']:.4f} at {worst_label} ({'<' if w['ok'] else 'not <'} ε={epsilon:g}{spread}); "
            f"mean val − train per grid point: {listing}" + left_out)
    return Verdict(claim, PASS if ok else FAIL, text, {"gaps": rows}, thresholds)


# ------------------------------------------------------------------ bf16 divergence

def bf16_arm(frame: pd.DataFrame) -> str | None:
    """The bfloat16 precision to check: ``bf16-autocast`` (the paper's setting) if present, else ``bf16``."""
    prec = column("precision")
    if prec not in frame:
        return None
    present = set(frame[prec].dropna().astype(str))
    for name in ("bf16-autocast", "bf16"):
        if name in present:
            return name
    others = sorted(p for p in present if p.startswith("bf16"))
    return others[0] if others else None


def bf16_divergence(trials: pd.DataFrame, *, min_diverged_fraction: float = 2 / 3, max_other_diverged: int = 0,
                    min_seeds: int = 3, lr: float | None = None, bf16: str | None = None) -> Verdict:
    """bf16 without WD diverges in ≥ 2 of 3 seeds; fp32 (any WD) and bf16 with WD do not.

    Args:
        trials: one row per trial with ``status``, ``config/precision``, ``config/weight_decay``.
        min_diverged_fraction: of the bf16, WD = 0 seeds that must diverge.
        max_other_diverged: divergences allowed in every other (precision, WD) cell.
        min_seeds: seeds the bf16, WD = 0 cell needs for the claim to be testable.
        lr: the LR to check (default: the largest in the grid, the divergent setting).
        bf16: the bf16 precision name (default: ``bf16-autocast`` if present, else ``bf16``).
    """
    claim = "bf16 divergence: bf16 without WD diverges in ≥ 2/3 of seeds; fp32 and bf16 with WD do not"
    thresholds = {"min_diverged_fraction": round(min_diverged_fraction, 4), "max_other_diverged": max_other_diverged,
                  "min_seeds": min_seeds}
    prec, wd = column("precision"), column("weight_decay")
    if prec not in trials or "status" not in trials:
        return _na(claim, "no precision in the config", thresholds)
    bf16 = bf16 or bf16_arm(trials)
    present = set(trials[prec].dropna().astype(str))
    if bf16 is None or bf16 not in present or "fp32" not in present:
        return _na(claim, f"needs fp32 and a bf16 precision; the grid has {', '.join(sorted(present)) or 'none'}", thresholds)
    if wd not in trials or not (trials[wd] == 0).any() or not (trials[wd] > 0).any():
        return _na(claim, "needs weight decay 0 and > 0 in the grid", thresholds)
    data = trials
    lr_col = column("lr")
    if lr_col in data and data[lr_col].nunique() > 1:
        lr = lr if lr is not None else float(data[lr_col].max())
        data = data[np.isclose(data[lr_col].astype(float), lr)]
        if data.empty:
            return _na(claim, f"no trials at LR {lr:g}", thresholds)
        thresholds["lr"] = lr
    data = data[data[prec].astype(str).isin(["fp32", bf16])]
    status = _statuses(data)
    ended = data[status.isin(ENDED)]
    cells = {}
    for (p, w), part in ended.groupby([ended[prec].astype(str), ended[wd].astype(float)], sort=True):
        cells[(p, w)] = (int((part["status"].astype(str) == "diverged").sum()), len(part))
    key_cells = {k: v for k, v in cells.items() if k[0] == bf16 and k[1] == 0}
    if not key_cells:
        return _na(claim, f"no ended {bf16} trial with WD = 0" + _left_out(data), thresholds)
    k_div, n = key_cells[(bf16, 0.0)]
    if n < min_seeds:
        return _na(claim, f"{bf16} with WD = 0 has {n} seed(s); the claim needs ≥ {min_seeds}", thresholds)
    key_ok = k_div >= min_diverged_fraction * n - 1e-9
    others = {k: v for k, v in cells.items() if k != (bf16, 0.0)}
    others_ok = all(v[0] <= max_other_diverged for v in others.values())
    where = f" at LR {lr:g}" if "lr" in thresholds else ""
    text = (f"{bf16}, WD 0{where}: {k_div}/{n} diverged (needs ≥ {min_diverged_fraction:.2g} of seeds); "
            + "; ".join(f"{p}, WD {fmt(w)}: {d}/{t} diverged" for (p, w), (d, t) in others.items())
            + f" (allowed ≤ {max_other_diverged} each)")
    pooled = [c.removeprefix(CONFIG) for c in varied_axes(data) if c not in (prec, wd, lr_col)]
    if pooled:
        text += f"; pooled over {', '.join(pooled)}"
    numbers = {"bf16": bf16, "cells": {f"{p}, wd={fmt(w)}": {"diverged": d, "trials": t} for (p, w), (d, t) in cells.items()}}
    return Verdict(claim, PASS if key_ok and others_ok else FAIL, text + _left_out(data), numbers, thresholds)


# ------------------------------------------------------------------ any study: best not on the grid edge

def best_not_on_edge(finals: pd.DataFrame, value: str, mode: str = "min") -> Verdict:
    """The best grid point (mean over seeds) is interior along every numeric axis with ≥ 3 values.

    The tuning playbook's check: a best point on the edge of the grid means the grid
    should be extended before its optimum is trusted.
    """
    claim = f"Best {value} is not on the edge of the grid (numeric axes with ≥ 3 values)"
    if not value or value not in finals or not has_values(finals, value):
        return _na(claim, f"no {value or 'metric'} reported", {})
    axes = [c for c in varied_axes(finals) if pd.api.types.is_numeric_dtype(finals[c])
            and not pd.api.types.is_bool_dtype(finals[c]) and finals[c].nunique() >= 3]
    if not axes:
        return _na(claim, "no numeric axis with ≥ 3 values", {})
    by = varied_axes(finals)
    arms = {k: a for k, a in _arms(finals, value, by).items() if len(a.values) and not a.n_diverged}
    if not arms:
        return _na(claim, "no finished trial without diverged seeds" + _left_out(finals), {})
    sign = 1 if mode == "min" else -1
    best_key = min(arms, key=lambda k: sign * arms[k].point)
    best = dict(zip(by, best_key))
    edges = []
    for c in axes:
        grid = values(finals, c)
        if best[c] in (grid[0], grid[-1]):
            edges.append(f"{c.removeprefix(CONFIG)}={fmt(best[c])} is the grid's {'smallest' if best[c] == grid[0] else 'largest'}")
    where = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(v)}" for c, v in best.items())
    text = f"best {show(value, arms[best_key].point)} at {where}"
    text += ("; " + "; ".join(edges) + ": extend the grid there") if edges else "; interior along " + ", ".join(c.removeprefix(CONFIG) for c in axes)
    return Verdict(claim, FAIL if edges else PASS, text, {"best": {k.removeprefix(CONFIG): v for k, v in best.items()},
                                                          "value": arms[best_key].point}, {"mode": mode})
