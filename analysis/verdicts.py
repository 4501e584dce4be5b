"""Checks of the paper's claims: each a small function of DataFrames returning a ``Verdict``.

A verdict is ``pass``, ``fail``, ``inconclusive`` or ``not-applicable``:

- pass / fail / inconclusive come from ``analysis.stats.decide`` (or ``equivalent``): a
  claim's margin is compared with its threshold through a two-sided 90 % Student-t interval
  over seeds (paired by seed when both arms ran the same seeds, Welch otherwise). Pass when
  the whole interval clears the threshold, fail when it lies wholly on the wrong side (the
  data contradict the claim), inconclusive when it straddles it — then the verdict says how
  many seeds would decide at the observed spread. One seed never passes. A claim made of
  several parts passes when every part passes and fails when any part fails.
- not-applicable: the study lacks the data the claim needs, and the reason says which.

Each claim is checked as the paper states it (the sentence is quoted in its docstring), on
the part of the run the paper reads, on the paper's weight-decay grid (other arms are
reported, not required).

Thresholds, justified once:

- ``ERROR_DELTA`` = 0.0025 (0.25 pp of test error): one binomial standard error of a ~3 %
  error on the tiny presets' 4,000+ test signals (≤ 0.27 pp) and of a ~10 % error on
  CIFAR-10's 10,000 test images (0.30 pp): a smaller difference is within one test set's
  sampling noise. The paper's vision effects are 3.5–15 pp.
- ``LOSS_DELTA`` = 0.001 nats: a fifth of the smallest margin the paper shows (GPT-2,
  λ = 0.3 ends the cosine ≈ 0.005 below λ = 0); smaller gaps are below anything read off its
  plots.
- ``ALIKE_EPSILON`` = 0.01 nats, or ``ALIKE_SHARE`` = a fifth of weight decay's effect on the
  training loss when that is larger: how far its effect on the validation loss may differ from
  its effect on the training loss for "alike". The paper reads train and validation curves as
  equal to its plots' ±0.01 precision while its λ effects are 0.01–0.08; "alike" is a
  proportion, so a large effect (0.1 nats at a constant LR on the tiny presets, where the two
  splits are different text) may move validation by 80–120 % of its move on training.
- The interval level, 90 % two-sided (``stats.VERDICT_CONFIDENCE``): each bound is a
  one-sided 95 % test, the usual level for a directional claim.

Trials that diverged are results, handled per claim: a grid point where a seed diverged has
no error after the decay, so the U-shape and the LR/WD claims leave it out and name it
(a blown-up end arm never "makes" a U); the bf16 claim counts divergences. "Diverged" is an
unrecovered blow-up (the trainables record a spike that recovers as ``loss_spikes`` and
keep the trial ``finished``). Failed, stopped and running trials are left out and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis.load import CONFIG, SEED, column, final_pairs, fmt, has_values, values, varied_axes, x_column
from analysis.stats import (FAIL, INCONCLUSIVE, NOT_APPLICABLE, OUTCOMES, PASS,  # noqa: F401 (OUTCOMES re-exported)
                            VERDICT_CONFIDENCE, Decision, combine, decide, equivalent)

ERROR_DELTA = 0.0025
LOSS_DELTA = 0.001
ALIKE_EPSILON = 0.01
ALIKE_SHARE = 0.2
JUDGED = ("finished", "diverged")  # trials a claim judges; failed/stopped/running ones are left out
#: The λ > 0 arms the paper ran for its Chinchilla figure, per schedule (others are reported, not required).
PAPER_WD = {"cosine": (0.1, 0.3), "constant": (0.1, 0.3, 0.6)}
#: The middle of the cosine phase where the paper sees AdamW's loss above Adam's.
MID_RUN = (0.25, 0.75)
#: Share of the mid-run reports at which the seed-mean excess must be positive ("sustained").
SUSTAINED = 0.75


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim check.

    Args:
        claim: what is checked, in words.
        status: ``pass``, ``fail``, ``inconclusive`` or ``not-applicable``.
        reason: the numbers that decided it, in words.
        numbers: the numbers used, by name (plain Python values).
        thresholds: the thresholds applied, by parameter name.
        seeds_needed: for an inconclusive verdict, the seeds per arm that would decide it at
            the observed spread (the largest over its parts), when that can be told.
    """

    claim: str
    status: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    seeds_needed: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    @property
    def inconclusive(self) -> bool:
        return self.status == INCONCLUSIVE

    @property
    def applicable(self) -> bool:
        return self.status != NOT_APPLICABLE


def _na(claim: str, reason: str, thresholds: dict | None = None) -> Verdict:
    return Verdict(claim, NOT_APPLICABLE, reason, {}, thresholds or {})


def _verdict(claim: str, parts: list[tuple[str, Decision | str]], text: str, numbers: dict,
             thresholds: dict) -> Verdict:
    """Combine named parts (a Decision, or an outcome string for a structural part) into a Verdict."""
    outcomes = [p.outcome if isinstance(p, Decision) else p for _, p in parts]
    status = combine(outcomes)
    needed = [p.seeds_needed for _, p in parts if isinstance(p, Decision) and p.outcome == INCONCLUSIVE]
    seeds = max((n for n in needed if n), default=None) if status == INCONCLUSIVE else None
    numbers = {**numbers, "parts": {name: (p.outcome if isinstance(p, Decision) else p) for name, p in parts}}
    return Verdict(claim, status, text, numbers, thresholds, seeds)


# ------------------------------------------------------------------ shared helpers

FINETUNE_ERROR = "finetune_test_error"


def lr_decays(finals: pd.DataFrame) -> bool | None:
    """Whether the runs' LR decays during the run (the Fig. 1 / sphere-sweep protocol).

    True when some trial's last reported ``lr`` is below half its configured ``config/lr``
    (a step drop, a cosine); False when every trial ends at its configured LR; None when
    the study reports no ``lr`` (then a decay is assumed when the config names one:
    ``decay_epoch``/``decay_lr``/``schedule``).
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


test_error_metric.__test__ = False  # not a pytest test despite its name


def _is_error(metric: str) -> bool:
    return "error" in metric


def delta_for(metric: str) -> float:
    """The threshold of a metric: ``ERROR_DELTA`` for errors, ``LOSS_DELTA`` for losses."""
    return ERROR_DELTA if _is_error(metric) else LOSS_DELTA


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
    return f"{100 * value:+.2f} pp" if _is_error(metric) else f"{value:+.4f}"


def _shower(metric: str) -> Callable[[float], str]:
    return lambda v: show_diff(metric, v)


def _statuses(frame: pd.DataFrame) -> pd.Series:
    if "status" not in frame:
        return pd.Series("finished", index=frame.index)
    return frame["status"].astype(str)


def _left_out(frame: pd.DataFrame) -> str:
    """' (2 failed, 1 stopped trials left out)' for trials that neither finished nor diverged."""
    if "trial_id" in frame:
        frame = frame.drop_duplicates("trial_id")
    counts = _statuses(frame)[lambda s: ~s.isin(JUDGED)].value_counts().sort_index()
    if counts.empty:
        return ""
    return " (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + " trials left out)"


def _seed_index(frame: pd.DataFrame) -> np.ndarray:
    return frame[SEED].to_numpy() if SEED in frame else frame["trial_id"].to_numpy()


@dataclass
class _Arm:
    """The trials at one grid point: finished values by seed, and how many diverged."""

    values: pd.Series
    n_diverged: int
    n_trials: int

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if len(self.values) else math.nan

    @property
    def usable(self) -> bool:
        """Every ended seed finished with a value (a grid point where a seed diverged has no final error)."""
        return not self.n_diverged and len(self.values) > 0


def _arms(frame: pd.DataFrame, value: str, by: Sequence[str]) -> dict[tuple, _Arm]:
    """Per group of ``by`` columns: finished finite values indexed by seed, diverged count."""
    data = frame.assign(_status=_statuses(frame).to_numpy())
    data = data[data["_status"].isin(JUDGED)]
    arms: dict[tuple, _Arm] = {}
    grouped = data.groupby(list(by), observed=True, sort=True) if by else [((), data)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        done = part[part["_status"] == "finished"]
        raw = done[value] if value in done else pd.Series(np.nan, index=done.index)
        vals = pd.Series(pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan),
                         index=_seed_index(done))
        vals = vals[np.isfinite(vals.to_numpy(dtype=float))]
        arms[key] = _Arm(vals.astype(float), int((part["_status"] == "diverged").sum()), len(part))
    return arms


def _say(name: str, decision: Decision, metric: str) -> str:
    return f"{name}: {decision.outcome} ({decision.describe(_shower(metric))})"


# ------------------------------------------------------------------ vision: U-shape (two protocols)

USHAPE_DECAY_CLAIM = ("U-shape after the LR decay (Fig. 1 / sphere-sweep protocol): final test error vs LR is "
                      "lowest at an interior LR; both end LRs higher by ≥ δ")
USHAPE_FINETUNE_CLAIM = ("U-shape of the fine-tuned copies (Figs. 2–3 protocol): fine-tuned test error vs LR is "
                         "lowest at an interior LR; both end LRs higher by ≥ δ")


def ushape(finals: pd.DataFrame, value: str = "test_error", *, delta: float = ERROR_DELTA,
           confidence: float = VERDICT_CONFIDENCE, weight_decay: float | None = None) -> Verdict:
    """The paper: "the test error after the LR decay is U-shaped in the LR" (Fig. 1, and the
    sphere sweep: 13.95 % at LR 1e-4, 10.48 % at 1e-3, 15.85 % at 5e-3).

    One run per LR whose LR decays during the run, judged on its final ``value``. On the
    line of the best weight decay (or ``weight_decay``): the interior LR with the lowest
    mean, and two parts — the smallest and the largest LR are each higher by ≥ ``delta``.
    Grid points where a seed diverged are left out of the line and named; the U is judged
    on the LRs that finished (a blown-up end does not make a U). Not applicable when the
    runs end at their configured LR (then the fine-tuned branches are the protocol).
    """
    claim = USHAPE_DECAY_CLAIM
    thresholds = {"delta": delta, "confidence": confidence}
    if not has_values(finals, value):
        return _na(claim, f"no {value} reported" + _left_out(finals), thresholds)
    if lr_decays(finals) is False:
        return _na(claim, "every run ends at its configured LR: the LR does not decay during the run, so its final "
                          f"{value} is not an after-decay error (the fine-tuned branches have their own verdict)",
                   thresholds)
    note = "" if lr_decays(finals) else " (the study does not report its LR: decay during the run assumed)"
    return _ushape_check(finals, value, claim, thresholds, delta, confidence, weight_decay, suffix=note)


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
                     confidence: float = VERDICT_CONFIDENCE, weight_decay: float | None = None) -> Verdict:
    """The paper's Figs. 2–3 protocol: copies branched off a constant-LR run and fine-tuned at
    a small LR; "the generalisation after fine-tuning is U-shaped in the LR of the large-LR
    phase". The fine-tuned error of the last branch (or the one at ``epoch``) vs LR, by the
    rule of ``ushape``.
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
    lr, wd = column("lr"), column("weight_decay")
    if lr not in frame or frame[lr].nunique() < 3:
        return _na(claim, f"needs ≥ 3 learning rates; this study has {frame[lr].nunique() if lr in frame else 0}",
                   thresholds)
    by = [wd, lr] if wd in frame else [lr]
    arms = _arms(frame, value, by)
    lines: dict[Any, dict[float, _Arm]] = {}
    for key, arm in arms.items():
        lines.setdefault(key[0] if wd in frame else None, {})[float(key[-1])] = arm
    usable = {w: {l: a for l, a in sorted(line.items()) if a.usable} for w, line in lines.items()}
    checked = [w for w, line in usable.items() if len(line) >= 3]
    if not checked:
        return _na(claim, "no weight decay has finished results at ≥ 3 learning rates" + _left_out(frame), thresholds)
    if weight_decay is not None:
        match = [w for w in checked if w is not None and math.isclose(w, weight_decay, rel_tol=1e-9)]
        if not match:
            return _na(claim, f"weight_decay={weight_decay:g} has no finished results at ≥ 3 learning rates",
                       thresholds)
        target = match[0]
    else:
        target = min(checked, key=lambda w: min(a.mean for a in usable[w].values()))
    line = usable[target]
    lrs = list(line)
    interior = lrs[1:-1]
    best_lr = min(interior, key=lambda l: line[l].mean)
    best = line[best_lr]
    parts = [(f"LR {fmt(l)}", decide(line[l].values, best.values, delta, confidence=confidence))
             for l in (lrs[0], lrs[-1])]
    thresholds["weight_decay"] = target
    seeds = max(len(a.values) for a in line.values())
    overall = min(lrs, key=lambda l: line[l].mean)
    text = prefix + ("" if target is None else f"WD {fmt(target)}"
                     + (" (the best WD)" if weight_decay is None and len(checked) > 1 else "") + ": ")
    text += (f"interior minimum {show(value, best.mean)} at LR {fmt(best_lr)} (LRs {fmt(lrs[0])}…{fmt(lrs[-1])}, "
             f"up to {seeds} seeds)")
    if overall != best_lr:
        text += f"; the line's lowest mean is at the edge, LR {fmt(overall)} ({show(value, line[overall].mean)})"
    text += "; " + "; ".join(f"{_say(name, d, value)} vs the minimum, mean {show(value, line[l].mean)}"
                             for (name, d), l in zip(parts, (lrs[0], lrs[-1])))
    dropped = [f"LR {fmt(l)} ({a.n_diverged}/{a.n_trials} seeds diverged)"
               for l, a in sorted(lines[target].items()) if a.n_diverged]
    if dropped:
        text += "; left out (no error after the decay): " + ", ".join(dropped)
    others = [f"WD {fmt(w)}: min at LR {fmt(min(usable[w], key=lambda l: usable[w][l].mean))}"
              for w in checked if w != target]
    if others:
        text += ". Other lines: " + "; ".join(others)
    numbers = {"metric": value, "weight_decay": target, "argmin": best_lr, "lr": lrs,
               "mean": [line[l].mean for l in lrs], "margins": {n: d.margin for n, d in parts},
               "diverged_lrs": [l for l, a in lines[target].items() if a.n_diverged]}
    return _verdict(claim, parts, text + suffix + _left_out(frame), numbers, thresholds)


# ------------------------------------------------------------------ vision: a large LR and WD together

LARGE_LR_AND_WD_CLAIM = ("Large LR and WD together give the best test error: the best point with WD > 0 beats the "
                         "best with WD = 0, and the best WD > 0 point at the smallest LR, each by ≥ δ")


def large_lr_and_wd(finals: pd.DataFrame, value: str | None = None, *, delta: float = ERROR_DELTA,
                    confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The paper: "the best generalisation is achieved with a large learning rate combined with
    weight decay" (Fig. 1: ResNet-18 10.4 % at LR 0.08 with WD, 14.6 % without, 18.7 % at LR
    0.001 with WD). WD may help at a small LR too (it does on the ResNets): the claim is about
    where the best point lies.

    With (L*, λ*) the grid point with λ > 0 of lowest mean error, two parts:

    1. WD is needed: the best point with λ = 0 (over every LR) is higher by ≥ ``delta``;
    2. a large LR is needed: the best λ > 0 point at the grid's smallest LR is higher by
       ≥ ``delta`` (when L* is the smallest LR this margin is 0: the part fails).

    Grid points where a seed diverged are left out and named.
    """
    claim = LARGE_LR_AND_WD_CLAIM
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
    usable = {(float(l), float(w)): a for (l, w), a in arms.items() if a.usable}
    decayed = {k: a for k, a in usable.items() if k[1] > 0}
    plain = {k: a for k, a in usable.items() if k[1] == 0}
    if not decayed or not plain:
        return _na(claim, "needs finished results with WD = 0 and with WD > 0" + _left_out(finals), thresholds)
    best_key = min(decayed, key=lambda k: (decayed[k].mean, k))
    best = decayed[best_key]
    plain_key = min(plain, key=lambda k: plain[k].mean)
    smallest = min(k[0] for k in decayed)
    small_key = min((k for k in decayed if k[0] == smallest), key=lambda k: decayed[k].mean)
    parts = [("WD = 0 (best, LR " + fmt(plain_key[0]) + ")", decide(plain[plain_key].values, best.values, delta,
                                                                       confidence=confidence)),
             (f"smallest LR {fmt(smallest)} (best WD {fmt(small_key[1])})",
              decide(decayed[small_key].values, best.values, delta, confidence=confidence))]
    text = (f"{value}: best with WD > 0 is {show(value, best.mean)} at LR {fmt(best_key[0])}, WD {fmt(best_key[1])}; "
            f"best with WD = 0 is {show(value, plain[plain_key].mean)} at LR {fmt(plain_key[0])}; at the smallest LR "
            f"{fmt(smallest)} the best with WD > 0 is {show(value, decayed[small_key].mean)}. Margins over the best: "
            + "; ".join(_say(n, d, value) for n, d in parts))
    if best_key[0] == smallest:
        text += ". The best WD > 0 point is at the smallest LR"
    dropped = [f"LR {fmt(l)}, WD {fmt(w)} ({a.n_diverged}/{a.n_trials} diverged)"
               for (l, w), a in sorted(arms.items()) if a.n_diverged]
    if dropped:
        text += ". Left out (diverged): " + ", ".join(dropped)
    numbers = {"metric": value, "best": {"lr": best_key[0], "weight_decay": best_key[1], "mean": best.mean},
               "best_without_wd": {"lr": plain_key[0], "mean": plain[plain_key].mean},
               "smallest_lr": {"lr": smallest, "weight_decay": small_key[1], "mean": decayed[small_key].mean},
               "margins": {n: d.margin for n, d in parts}}
    return _verdict(claim, parts, text + _left_out(finals), numbers, thresholds)


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
    """The LM loss a claim is checked on: ``val_loss`` (fixed batches, least noisy), else ``train_loss``
    (what a published table of training curves holds)."""
    for name in ("val_loss", "train_loss"):
        if has_values(frame, name):
            return name
    return None


def where(x: str, value: float) -> str:
    """A position on a curve in words: ``2.05M tokens``, ``step 1800``, ``epoch 40``."""
    if x == "tokens":
        return f"{value / 1e6:.3g}M tokens" if abs(value) >= 1e5 else f"{value:.4g} tokens"
    return f"{x} {value:.6g}"


@dataclass
class _LMGroup:
    """The trials of one schedule (and one value of every other varied axis) with their phase ends."""

    label: str
    rows: pd.DataFrame
    step: str           # the column that counts optimiser steps
    end: float          # the step where the schedule ends (config ``steps``), before any tail
    last: float         # the last step reported (the end of the tiny-LR continuation when there is one)
    has_tail: bool


def _lm_groups(curves: pd.DataFrame, schedule: str, claim: str, thresholds: dict,
               metric: str | None) -> tuple[list[_LMGroup], str, str] | Verdict:
    metric = metric or lm_loss_metric(curves)
    if metric is None or metric not in curves:
        return _na(claim, "no val_loss or train_loss reported (an LM loss)", thresholds)
    sched, wd = column("schedule"), column("weight_decay")
    if sched not in curves:
        return _na(claim, "no schedule in the config", thresholds)
    if wd not in curves or not (curves[wd] == 0).any() or not (curves[wd] > 0).any():
        return _na(claim, "needs weight decay 0 (Adam) and > 0 (AdamW) in the grid", thresholds)
    data = curves[curves[sched].astype(str) == schedule]
    if data.empty:
        return _na(claim, f"no trials with the {schedule} schedule", thresholds)
    opt = column("optimizer")
    if opt in data and data[opt].nunique() > 1:
        data = data[data[opt].astype(str) == "adamw"]  # "Adam" is AdamW with λ = 0, as in the paper
        if data.empty:
            return _na(claim, "the optimizer axis has no adamw trials", thresholds)
    step = "step" if has_values(data, "step") else ("training_iteration" if has_values(data, "training_iteration")
                                                    else x_column(data))
    if step is None:
        return _na(claim, "no step reported", thresholds)
    context = [c for c in varied_axes(data) if c not in (sched, wd, opt, column("tail_steps"))]
    groups = []
    for key, part in (data.groupby(context, observed=True, sort=True) if context else [((), data)]):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(k)}" for c, k in zip(context, key))
        reported = pd.to_numeric(part[step], errors="coerce")
        last = float(reported.max())
        steps_col = column("steps")
        end = float(pd.to_numeric(part[steps_col], errors="coerce").min()) if steps_col in part else last
        end = last if not math.isfinite(end) else end
        tail_col = column("tail_steps")
        tail = bool(tail_col in part and (pd.to_numeric(part[tail_col], errors="coerce") > 0).any() and last > end)
        groups.append(_LMGroup(label, part, step, end, last, tail))
    return groups, metric, step


def _at_step(rows: pd.DataFrame, step: str, metric: str, at: float) -> pd.Series:
    """Each finished trial's ``metric`` at the last report with step ≤ ``at``, indexed by seed."""
    rows = rows[(pd.to_numeric(rows[step], errors="coerce") <= at + 1e-9) & rows[metric].notna()]
    rows = rows.sort_values(step).drop_duplicates("trial_id", keep="last")
    vals = pd.Series(pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float), index=_seed_index(rows))
    return vals[np.isfinite(vals.to_numpy())]


def _window_mean(rows: pd.DataFrame, step: str, metric: str, lo: float, hi: float) -> pd.Series:
    """Each trial's mean ``metric`` over its reports with lo ≤ step ≤ hi, indexed by seed."""
    s = pd.to_numeric(rows[step], errors="coerce")
    inside = rows[(s >= lo - 1e-9) & (s <= hi + 1e-9) & rows[metric].notna()]
    means = inside.groupby("trial_id", sort=True)[metric].mean()
    seeds = inside.drop_duplicates("trial_id").set_index("trial_id")
    index = seeds.loc[means.index, SEED].to_numpy() if SEED in seeds else means.index.to_numpy()
    return pd.Series(means.to_numpy(dtype=float), index=index)


def _mean_curve(rows: pd.DataFrame, step: str, metric: str) -> pd.Series:
    part = rows[[step, metric]].copy()
    part[metric] = pd.to_numeric(part[metric], errors="coerce")
    part = part[np.isfinite(part[metric].to_numpy(dtype=float, na_value=np.nan))]
    return part.groupby(step)[metric].mean().sort_index()


def _required(arms: Sequence[float], schedule: str) -> tuple[list[float], list[float], str]:
    """The λ > 0 arms the claim requires (those on the paper's grid), the extra ones, and a note."""
    paper = PAPER_WD.get(schedule, ())
    on_grid = [w for w in arms if any(math.isclose(w, p, rel_tol=1e-9) for p in paper)]
    if not on_grid:
        return list(arms), [], f"no λ on the paper's {schedule} grid ({', '.join(fmt(p) for p in paper)}): all judged"
    extra = [w for w in arms if w not in on_grid]
    note = f"λ {', '.join(fmt(w) for w in extra)} reported, not required (off the paper's grid)" if extra else ""
    return on_grid, extra, note


def _lm_claim(curves: pd.DataFrame, schedule: str, claim: str, metric: str | None, delta: float, confidence: float,
              judge: Callable[[_LMGroup, pd.DataFrame, pd.DataFrame, str], tuple[Decision | str, str] | None],
              needs_tail: bool = False) -> Verdict:
    """Shared frame of the LM claims: per group and required λ, ``judge(group, arm, base, metric)``
    gives a part (or None when the group lacks the data) and its words."""
    thresholds = {"delta": delta, "confidence": confidence}
    found = _lm_groups(curves, schedule, claim, thresholds, metric)
    if isinstance(found, Verdict):
        return found
    groups, metric, step = found
    thresholds["metric"] = metric
    wd = column("weight_decay")
    parts, texts, extras, numbers = [], [], [], {}
    notes = set()
    for g in groups:
        if needs_tail and not g.has_tail:
            continue
        status = _statuses(g.rows)
        finished = g.rows[(status == "finished").to_numpy()]
        base = finished[finished[wd] == 0]
        if base.empty:
            n_div = g.rows.loc[(status == "diverged").to_numpy() & (g.rows[wd] == 0).to_numpy(), "trial_id"].nunique()
            texts.append(f"{g.label + ': ' if g.label else ''}no finished WD = 0 trial ({n_div} diverged)")
            parts.append((g.label or "WD 0", INCONCLUSIVE))
            continue
        arms = sorted(float(w) for w in g.rows.loc[g.rows[wd] > 0, wd].unique())
        required, extra, note = _required(arms, schedule)
        if note:
            notes.add(note)
        for w in arms:
            name = (g.label + ", " if g.label else "") + f"λ {fmt(w)}"
            arm = finished[np.isclose(finished[wd].astype(float), w)]
            if arm.empty:
                part, words = INCONCLUSIVE, "no finished trial"
            else:
                judged = judge(g, arm, base, metric)
                if judged is None:
                    continue
                part, words = judged
            numbers[name] = part.outcome if isinstance(part, Decision) else part
            line = f"{name}: {part.outcome if isinstance(part, Decision) else part} — {words}"
            if w in required:
                parts.append((name, part))
                texts.append(line)
            else:
                extras.append(line)
    if needs_tail and not any(g.has_tail for g in groups):
        return _na(claim, f"no tiny-LR continuation after the {schedule} schedule (tail_steps = 0)", thresholds)
    if not parts:
        return _na(claim, f"no WD > 0 trials under {schedule}", thresholds)
    text = f"{metric} under {schedule}: " + "; ".join(texts)
    if extras:
        text += ". Reported, not required: " + "; ".join(extras)
    if notes:
        text += " (" + "; ".join(sorted(notes)) + ")"
    return _verdict(claim, parts, text + _left_out(curves[curves[column('schedule')].astype(str) == schedule]),
                    {"metric": metric, "x": step, "schedule": schedule, "arms": numbers}, thresholds)


MIDRUN_CLAIM = "Chinchilla (cosine), mid-run: AdamW's loss (λ > 0) is higher than Adam's (λ = 0) for most of the run"
END_OF_COSINE_CLAIM = "Chinchilla (cosine), end of the cosine: AdamW (λ > 0) ends lower than Adam (λ = 0)"
AFTER_TAIL_CLAIM = "Chinchilla (cosine), after the tiny-LR continuation: AdamW (λ > 0) is lower than Adam (λ = 0)"
CONSTANT_CLAIM = "Chinchilla (constant LR): a larger λ ends higher than λ = 0"


def chinchilla_midrun(curves: pd.DataFrame, metric: str | None = None, *, delta: float = LOSS_DELTA,
                      confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The paper: under a cosine schedule "AdamW's loss is higher than Adam's for most of the
    run" (GPT-2 at step 30k: λ 0.1 +0.03, λ 0.3 +0.08 over λ 0).

    Over the middle half of the cosine phase (steps 25–75 % of ``steps``), for each required
    λ: the per-seed mean excess loss(λ) − loss(0) is ≥ ``delta`` (by ``stats.decide``), and the
    seed-mean excess is positive at ≥ 75 % of the reports there (sustained, not one early bump).
    """
    def judge(g: _LMGroup, arm: pd.DataFrame, base: pd.DataFrame, metric: str):
        lo, hi = MID_RUN[0] * g.end, MID_RUN[1] * g.end
        a, b = _window_mean(arm, g.step, metric, lo, hi), _window_mean(base, g.step, metric, lo, hi)
        if a.empty or b.empty:
            return INCONCLUSIVE, f"no report between steps {lo:g} and {hi:g}"
        excess = (_mean_curve(arm, g.step, metric) - _mean_curve(base, g.step, metric)).dropna()
        d = excess[(excess.index >= lo - 1e-9) & (excess.index <= hi + 1e-9)]
        share = float((d > 0).mean()) if len(d) else math.nan
        decision = decide(a, b, delta, confidence=confidence)
        cosine = excess[excess.index <= g.end + 1e-9]
        crossing = find_crossing(cosine.index.to_numpy(dtype=float), cosine.to_numpy())
        words = (f"mean excess over steps {lo:g}–{hi:g}: {decision.describe(_shower(metric))}; "
                 f"higher at {share:.0%} of its {len(d)} reports")
        if crossing.exists:
            words += f"; crosses below at ≈ step {crossing.x:.0f}"
        if decision.outcome != FAIL and not share >= SUSTAINED:
            return FAIL, words + f" (< {SUSTAINED:.0%}: not sustained)"
        return decision, words

    return _lm_claim(curves, "cosine", MIDRUN_CLAIM, metric, delta, confidence, judge)


def _end_judge(direction: int, at_tail: bool, delta: float, confidence: float):
    def judge(g: _LMGroup, arm: pd.DataFrame, base: pd.DataFrame, metric: str):
        at = g.last if at_tail else g.end
        a, b = _at_step(arm, g.step, metric, at), _at_step(base, g.step, metric, at)
        decision = decide(a, b, delta, direction=direction, confidence=confidence)
        which = "lower" if direction < 0 else "higher"
        return decision, f"{which} by {decision.describe(_shower(metric))} at step {at:g}"
    return judge


def chinchilla_end_of_cosine(curves: pd.DataFrame, metric: str | None = None, *, delta: float = LOSS_DELTA,
                             confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The paper: under a cosine schedule AdamW's loss is "lower at the end" (GPT-2 at step
    50k: λ 0.1 3.28, λ 0.3 3.285 vs λ 0 3.29). Judged at the report at ``steps`` (the end of
    the cosine), never after the tiny-LR continuation: loss(0) − loss(λ) ≥ ``delta``."""
    return _lm_claim(curves, "cosine", END_OF_COSINE_CLAIM, metric, delta, confidence,
                     _end_judge(-1, False, delta, confidence))


def chinchilla_after_tail(curves: pd.DataFrame, metric: str | None = None, *, delta: float = LOSS_DELTA,
                          confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The paper: after a tiny-LR continuation (10k steps at LR 1e-5, WD 0) AdamW's advantage is
    clearer (λ 0.1 3.24, λ 0.3 3.23 vs λ 0 3.27). Judged at the last report of the
    continuation: loss(0) − loss(λ) ≥ ``delta``. Not applicable without a continuation."""
    return _lm_claim(curves, "cosine", AFTER_TAIL_CLAIM, metric, delta, confidence,
                     _end_judge(-1, True, delta, confidence), needs_tail=True)


def chinchilla_constant(curves: pd.DataFrame, metric: str | None = None, *, delta: float = LOSS_DELTA,
                        confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The paper: "with a constant LR, a larger λ gives a higher loss" — a positive claim, not
    the absence of a benefit. At the end of the constant phase (the report at ``steps``,
    before any continuation): loss(λ) − loss(0) ≥ ``delta`` for each required λ."""
    return _lm_claim(curves, "constant", CONSTANT_CLAIM, metric, delta, confidence,
                     _end_judge(+1, False, delta, confidence))


# ------------------------------------------------------------------ LM: WD moves train and validation loss alike

ALIKE_CLAIM = ("WD moves train and validation loss alike: its effect on val_loss equals its effect on the "
               "training loss within ±ε (no generalisation gap opened by WD)")


def train_loss_metric(frame: pd.DataFrame) -> str | None:
    """The training loss to set against ``val_loss``: ``eval_train_loss`` (fixed training batches,
    evaluated like the validation loss) when reported, else the interval-averaged ``train_loss``."""
    for name in ("eval_train_loss", "train_loss"):
        if has_values(frame, name):
            return name
    return None


def train_val_alike(curves: pd.DataFrame, *, epsilon: float = ALIKE_EPSILON, share: float = ALIKE_SHARE,
                    confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The paper: weight decay "lowers the training and the validation loss alike" (train and
    validation curves coincide for every λ: no generalisation gap in one-pass training).

    For each λ > 0 against λ = 0 under each schedule (and any other varied axis), at each
    trial's last report with both losses: the per-seed (Δval − Δtrain), with
    Δ = loss(λ) − loss(0), lies within ±max(``epsilon``, ``share`` · |mean Δtrain|)
    (``stats.equivalent``).
    """
    claim = ALIKE_CLAIM
    thresholds = {"epsilon": epsilon, "share": share, "confidence": confidence}
    train = train_loss_metric(curves)
    if train is None or not has_values(curves, "val_loss"):
        return _na(claim, "needs val_loss and a training loss (eval_train_loss or train_loss)", thresholds)
    wd = column("weight_decay")
    if wd not in curves or not (curves[wd] == 0).any() or not (curves[wd] > 0).any():
        return _na(claim, "needs weight decay 0 and > 0 in the grid", thresholds)
    thresholds["train_metric"] = train
    ended = final_pairs(curves[(_statuses(curves) == "finished").to_numpy()], train, "val_loss")
    if ended.empty:
        return _na(claim, "no finished trial with both losses" + _left_out(curves), thresholds)
    ended = ended.assign(_gap=ended["val_loss"].astype(float) - ended[train].astype(float))
    context = [c for c in varied_axes(ended) if c != wd]
    parts, texts, numbers = [], [], {}
    for key, part in (ended.groupby(context, observed=True, sort=True) if context else [((), ended)]):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(k)}" for c, k in zip(context, key))
        base = part[part[wd] == 0]
        if base.empty:
            continue
        b = pd.Series(base["_gap"].to_numpy(dtype=float), index=_seed_index(base))
        for w in sorted(float(v) for v in part.loc[part[wd] > 0, wd].unique()):
            arm = part[np.isclose(part[wd].astype(float), w)]
            a = pd.Series(arm["_gap"].to_numpy(dtype=float), index=_seed_index(arm))
            effect = float(arm[train].astype(float).mean() - base[train].astype(float).mean())  # Δtrain
            bound = max(epsilon, share * abs(effect))
            decision = equivalent(a, b, bound, confidence=confidence)
            name = (label + ", " if label else "") + f"λ {fmt(w)}"
            parts.append((name, decision))
            numbers[name] = {"diff": decision.margin, "low": decision.low, "high": decision.high,
                             "train_effect": effect, "bound": bound}
            texts.append(f"{name}: Δval − Δtrain {decision.describe(lambda v: f'{v:+.4f}')}: {decision.outcome}"
                         .replace(" vs δ = ", " vs ε = ").replace("straddles δ", "straddles ±ε"))
    if not parts:
        return _na(claim, "no finished λ = 0 trial to compare with" + _left_out(curves), thresholds)
    return _verdict(claim, parts, f"({train} vs val_loss at each trial's last report) " + "; ".join(texts)
                    + _left_out(curves), {"pairs": numbers}, thresholds)


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


BF16_CLAIM = "bf16 divergence: bf16 without WD blows up (≥ 2/3 of seeds); float32, and bf16 with WD, do not"


def bf16_divergence(trials: pd.DataFrame, *, min_diverged_fraction: float = 2 / 3, max_other_diverged: int = 0,
                    min_seeds: int = 3, lr: float | None = None, bf16: str | None = None) -> Verdict:
    """The paper: "at LR 1e-3, bfloat16 training diverges without weight decay, while float32
    does not and weight decay prevents it" (3 seeds).

    Passes when the bf16, λ = 0 cell diverged in ≥ ``min_diverged_fraction`` of its ≥
    ``min_seeds`` seeds and every other (precision, λ) cell diverged at most
    ``max_other_diverged`` times; fails when it has the seeds and either count contradicts
    the claim; inconclusive with fewer seeds. "Diverged" is an unrecovered blow-up; recovered
    spikes (``loss_spikes``) are reported, not counted.
    """
    claim = BF16_CLAIM
    thresholds = {"min_diverged_fraction": round(min_diverged_fraction, 4), "max_other_diverged": max_other_diverged,
                  "min_seeds": min_seeds}
    prec, wd = column("precision"), column("weight_decay")
    if prec not in trials or "status" not in trials:
        return _na(claim, "no precision in the config", thresholds)
    bf16 = bf16 or bf16_arm(trials)
    present = set(trials[prec].dropna().astype(str))
    if bf16 is None or bf16 not in present or "fp32" not in present:
        return _na(claim, f"needs fp32 and a bf16 precision; the grid has {', '.join(sorted(present)) or 'none'}",
                   thresholds)
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
    ended = data[_statuses(data).isin(JUDGED)]
    cells = {}
    for (p, w), part in ended.groupby([ended[prec].astype(str), ended[wd].astype(float)], sort=True):
        cells[(p, w)] = (int((part["status"].astype(str) == "diverged").sum()), len(part))
    if (bf16, 0.0) not in cells:
        return _na(claim, f"no ended {bf16} trial with WD = 0" + _left_out(data), thresholds)
    k_div, n = cells[(bf16, 0.0)]
    others = {k: v for k, v in cells.items() if k != (bf16, 0.0)}
    key_ok = k_div >= min_diverged_fraction * n - 1e-9
    others_ok = all(v[0] <= max_other_diverged for v in others.values())
    at = f" at LR {lr:g}" if "lr" in thresholds else ""
    text = (f"{bf16}, WD 0{at}: {k_div}/{n} diverged (needs ≥ {min_diverged_fraction:.2g} of ≥ {min_seeds} seeds); "
            + "; ".join(f"{p}, WD {fmt(w)}: {d}/{t} diverged" for (p, w), (d, t) in others.items())
            + f" (allowed ≤ {max_other_diverged} each)")
    if "loss_spikes" in data and pd.to_numeric(data["loss_spikes"], errors="coerce").fillna(0).gt(0).any():
        spiked = data[pd.to_numeric(data["loss_spikes"], errors="coerce").fillna(0) > 0]
        text += f"; {len(spiked)} trial(s) had loss spikes that recovered (not divergences)"
    pooled = [c.removeprefix(CONFIG) for c in varied_axes(data) if c not in (prec, wd, lr_col)]
    if pooled:
        text += f"; pooled over {', '.join(pooled)}"
    numbers = {"bf16": bf16, "cells": {f"{p}, wd={fmt(w)}": {"diverged": d, "trials": t} for (p, w), (d, t) in cells.items()}}
    if n < min_seeds or any(t < min_seeds for _, t in others.values()):
        fewest = min([n, *(t for _, t in others.values())])
        return Verdict(claim, INCONCLUSIVE, text + f". A cell has {fewest} seed(s): {min_seeds} are needed"
                       + _left_out(data), numbers, thresholds, min_seeds)
    return Verdict(claim, PASS if key_ok and others_ok else FAIL, text + _left_out(data), numbers, thresholds)


# ------------------------------------------------------------------ any study: best not on the grid edge

def best_not_on_edge(finals: pd.DataFrame, value: str, mode: str = "min", *,
                     confidence: float = VERDICT_CONFIDENCE) -> Verdict:
    """The tuning playbook's check: the best grid point (mean over seeds) is interior along every
    numeric axis with ≥ 3 values — a best point on the edge means the grid should be extended
    before its optimum is trusted.

    Passes when the best point is interior (with ≥ 2 seeds); fails when it lies on an edge
    and beats the best interior point beyond the seed noise (the interval of the margin
    excludes 0); inconclusive otherwise (on an edge but within noise, or one seed).
    """
    claim = f"Best {value} is not on the edge of the grid (numeric axes with ≥ 3 values)"
    if not value or value not in finals or not has_values(finals, value):
        return _na(claim, f"no {value or 'metric'} reported", {})
    axes = [c for c in varied_axes(finals) if pd.api.types.is_numeric_dtype(finals[c])
            and not pd.api.types.is_bool_dtype(finals[c]) and finals[c].nunique() >= 3]
    if not axes:
        return _na(claim, "no numeric axis with ≥ 3 values", {})
    by = varied_axes(finals)
    arms = {k: a for k, a in _arms(finals, value, by).items() if a.usable}
    if not arms:
        return _na(claim, "no finished grid point without diverged seeds" + _left_out(finals), {})
    sign = 1 if mode == "min" else -1
    grids = {c: values(finals, c) for c in axes}

    def edges_of(key) -> list[str]:
        point = dict(zip(by, key))
        return [f"{c.removeprefix(CONFIG)}={fmt(point[c])} is the grid's "
                f"{'smallest' if point[c] == grids[c][0] else 'largest'}"
                for c in axes if point[c] in (grids[c][0], grids[c][-1])]

    best_key = min(arms, key=lambda k: sign * arms[k].mean)
    best = arms[best_key]
    edges = edges_of(best_key)
    at = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(v)}" for c, v in zip(by, best_key))
    text = f"best {show(value, best.mean)} at {at}"
    thresholds = {"mode": mode, "confidence": confidence}
    numbers = {"best": {k.removeprefix(CONFIG): v for k, v in zip(by, best_key)}, "value": best.mean}
    if not edges:
        text += "; interior along " + ", ".join(c.removeprefix(CONFIG) for c in axes)
        if len(best.values) < 2:
            return Verdict(claim, INCONCLUSIVE, text + " (one seed: run ≥ 3 seeds)", numbers, thresholds, 3)
        return Verdict(claim, PASS, text, numbers, thresholds)
    interior = {k: a for k, a in arms.items() if not edges_of(k)}
    text += "; " + "; ".join(edges)
    if not interior:
        return Verdict(claim, INCONCLUSIVE, text + "; no interior grid point finished to compare with",
                       numbers, thresholds)
    inner_key = min(interior, key=lambda k: sign * interior[k].mean)
    decision = decide(interior[inner_key].values, best.values, 0.0, direction=sign, confidence=confidence)
    inner = ", ".join(f"{c.removeprefix(CONFIG)}={fmt(v)}" for c, v in zip(by, inner_key))
    text += (f"; the best interior point ({inner}, {show(value, interior[inner_key].mean)}) is worse by "
             f"{decision.describe(_shower(value))}")
    if decision.outcome == PASS:  # the edge really is better: the claim of an interior optimum fails
        return Verdict(claim, FAIL, text + ": extend the grid there", numbers, thresholds)
    return Verdict(claim, INCONCLUSIVE, text + ": within the seed noise", numbers, thresholds, decision.seeds_needed)


# ------------------------------------------------------------------ the list a report runs

def all_verdicts(finals: pd.DataFrame, curves: pd.DataFrame) -> list[Verdict]:
    """Every check of the paper's claims on one study, in a fixed order (a report puts applicable ones first)."""
    return [
        ushape(finals),
        ushape_finetuned(curves),
        large_lr_and_wd(finals),
        chinchilla_midrun(curves),
        chinchilla_end_of_cosine(curves),
        chinchilla_after_tail(curves),
        chinchilla_constant(curves),
        train_val_alike(curves),
        bf16_divergence(finals),
    ]


def grid_checks(finals: pd.DataFrame, metric: str | None, mode: str = "min") -> list[Verdict]:
    """Checks of the grid itself, not claims of the paper (the tuning playbook's): the best point
    is not on the grid's edge."""
    return [best_not_on_edge(finals, metric, mode)]


#: The claims that compare grid points at fixed LR / WD values (not applicable when those axes are searched).
GRID_CLAIMS = (USHAPE_DECAY_CLAIM, USHAPE_FINETUNE_CLAIM, LARGE_LR_AND_WD_CLAIM, MIDRUN_CLAIM, END_OF_COSINE_CLAIM,
               AFTER_TAIL_CLAIM, CONSTANT_CLAIM, ALIKE_CLAIM)
