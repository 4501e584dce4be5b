"""What a search spent and what it found: the tables of random/Optuna studies.

A search study (``search: random`` or ``optuna``) runs one search per grid point (the
grid axes, e.g. ``weight_decay``) over its range axes (e.g. ``lr``). For each search:

- ``progress``: its trials in the order they ended, with the best final value found so far
  after each, against the trials and the compute spent (trial-steps: the ``step`` each trial
  reached, else its reports; and seconds, ``time_total_s``). Trials the scheduler stopped,
  that diverged or failed spend compute but find nothing: only finished trials have a value.
- ``summary``: per search, its trials by status, the best value, the trial and the searched
  values that gave it, the compute spent, and the compute it took to get within ``tolerance``
  of its own best (and of a grid study's best, with ``baseline``).
- ``best_per_point``: the best searched value (e.g. the best LR) per grid point without the
  seed, with its spread over seeds (the seed is a grid axis: each seed its own search).

``baseline`` is the best finished trial and the total compute of a grid study over the same
box, per grid point (``grid_baseline``), to draw and tabulate next to the search.
Their figures are in ``analysis.figures.search``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.load import Study, column, has_values
from analysis.stats import CONFIDENCE, t_interval

SAMPLED_SEARCHES = ("random", "optuna")  # the searches that sample configs (not a grid)
TOLERANCE = 0.02  # "within 2 % of the best": the benchmark's and the summary's default


def is_search(spec: dict) -> bool:
    return spec.get("search") in SAMPLED_SEARCHES


def searched_axes(spec: dict) -> list[str]:
    """The range axes of a spec (``lr: {loguniform: [...]}``), in spec order."""
    return [a for a, v in (spec.get("axes") or {}).items() if isinstance(v, dict)]


def grid_axes(spec: dict) -> list[str]:
    """The axes held on a grid (lists); a search study runs one search per combination."""
    return [a for a, v in (spec.get("axes") or {}).items() if not isinstance(v, dict)]


def compute_column(trials: pd.DataFrame) -> str:
    """What a trial's compute is counted in: the ``step`` it reached, else its reports."""
    return "step" if has_values(trials, "step") else "training_iteration"


def _better(mode: str):
    return np.fmin.accumulate if mode == "min" else np.fmax.accumulate


def as_floats(series: pd.Series) -> np.ndarray:
    """A column as floats, NaN where a value is not a number."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def progress(trials: pd.DataFrame, metric: str, mode: str = "min", by: Sequence[str] = (),
             compute: str | None = None) -> pd.DataFrame:
    """Each search's trials in the order they ended, with what had been spent and found by then.

    Args:
        trials: one row per trial (``Study.trials``: ``status``, ``ended_at``, config columns
            and the last value of every metric, ``training_iteration`` and ``time_total_s``).
        metric, mode: the value searched for.
        by: the grid axes (one search per combination); empty: one search.
        compute: the per-trial compute column (default: ``compute_column``).

    Returns one row per trial: the ``by`` columns, ``trial_id``, ``status``, ``value`` (the final
    metric of a finished trial; NaN for stopped, diverged, failed or running ones), ``steps``
    and ``seconds`` (the trial's own compute), ``trials_spent``, ``compute_spent`` and
    ``seconds_spent`` (cumulative within the search) and ``best_so_far`` (NaN until a trial
    finished). Running trials come last.
    """
    by = [column(b) for b in by]
    compute = compute or compute_column(trials)
    columns = [*by, "trial_id", "status", "value", "steps", "seconds", "trials_spent", "compute_spent",
               "seconds_spent", "best_so_far"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    frame = trials.copy()
    ended = pd.to_datetime(frame["ended_at"], utc=True) if "ended_at" in frame else pd.Series(pd.NaT, index=frame.index)
    started = pd.to_datetime(frame["started_at"], utc=True) if "started_at" in frame else ended
    frame = frame.assign(_ended=ended, _started=started, _running=ended.isna())
    status = frame["status"].astype(str)
    value = as_floats(frame[metric]) if metric in frame else np.full(len(frame), np.nan)
    frame["value"] = np.where((status == "finished").to_numpy() & np.isfinite(value), value, np.nan)
    frame["steps"] = as_floats(frame[compute]) if compute in frame else np.nan
    frame["seconds"] = as_floats(frame["time_total_s"]) if "time_total_s" in frame else np.nan
    frame["status"] = status
    parts = []
    groups = frame.groupby(by, observed=True, sort=True, dropna=False) if by else [((), frame)]
    for _, part in groups:
        part = part.sort_values(["_running", "_ended", "_started", "trial_id"], kind="stable").copy()
        part["trials_spent"] = np.arange(1, len(part) + 1)
        part["compute_spent"] = np.nancumsum(part["steps"].to_numpy(dtype=float))
        part["seconds_spent"] = np.nancumsum(part["seconds"].to_numpy(dtype=float))
        part["best_so_far"] = _better(mode)(part["value"].to_numpy(dtype=float))
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[columns].reset_index(drop=True)


def reach(progress_frame: pd.DataFrame, target: float, mode: str = "min") -> pd.Series | None:
    """The first row of ``progress`` whose best so far is at or better than ``target`` (None if never)."""
    best = progress_frame["best_so_far"].to_numpy(dtype=float)
    hit = best <= target if mode == "min" else best >= target
    hit &= np.isfinite(best)
    return progress_frame.iloc[int(np.argmax(hit))] if hit.any() else None


def within(best: float, tolerance: float, mode: str = "min") -> float:
    """The value within ``tolerance`` (relative) of ``best``: best·(1 + tol) for min, best·(1 − tol) for max."""
    return best + abs(best) * tolerance if mode == "min" else best - abs(best) * tolerance


def summary(trials: pd.DataFrame, metric: str, mode: str = "min", by: Sequence[str] = (),
            searched: Sequence[str] = (), *, tolerance: float = TOLERANCE,
            baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per search: what it spent, what it found, and how soon.

    Columns: the ``by`` columns, ``trials`` and the counts ``finished``, ``stopped``,
    ``diverged``, ``failed``, ``running``; ``best`` (the best final value of a finished trial),
    ``best_trial`` and its searched values (``best_<axis>``); ``compute`` and ``seconds`` spent;
    ``compute_to_best`` (spent when the best was found) and ``compute_within`` (spent when the
    best so far first came within ``tolerance`` of the search's own best). With ``baseline``
    (``grid_baseline``): ``grid_best``, ``grid_compute`` and ``compute_to_grid`` (spent when
    within ``tolerance`` of the grid's best; NaN if never) and its share of the grid's compute.
    """
    by_cols = [column(b) for b in by]
    prog = progress(trials, metric, mode, by_cols)
    rows = []
    groups = prog.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), prog)]
    indexed = trials.set_index(trials["trial_id"].astype(str))
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        counts = part["status"].value_counts()
        row = {**dict(zip(by_cols, key)), "trials": len(part),
               **{s: int(counts.get(s, 0)) for s in ("finished", "stopped", "diverged", "failed", "running")}}
        best = part["best_so_far"].iloc[-1] if len(part) else math.nan
        row.update(best=best, compute=part["compute_spent"].iloc[-1] if len(part) else 0.0,
                   seconds=part["seconds_spent"].iloc[-1] if len(part) else 0.0)
        if np.isfinite(best):
            found = part.loc[part["value"] == best].iloc[0]
            row["best_trial"] = found["trial_id"]
            for axis in searched:
                row[f"best_{axis}"] = indexed.loc[found["trial_id"], column(axis)]
            row["compute_to_best"] = found["compute_spent"]
            row["compute_within"] = reach(part, within(best, tolerance, mode), mode)["compute_spent"]
        if baseline is not None:
            match = baseline_row(baseline, by_cols, key)
            if match is not None:
                row.update(grid_best=match["grid_best"], grid_compute=match["grid_compute"])
                hit = reach(part, within(match["grid_best"], tolerance, mode), mode)
                row["compute_to_grid"] = hit["compute_spent"] if hit is not None else math.nan
                row["share_of_grid"] = row["compute_to_grid"] / match["grid_compute"]
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_row(baseline: pd.DataFrame, by_cols: list[str], key: tuple):
    """The one row of ``baseline`` (``grid_baseline``) at grid point ``key``, else None."""
    rows = baseline
    for col, value in zip(by_cols, key):
        if col not in rows:
            continue
        rows = rows[np.isclose(rows[col].astype(float), float(value))] if is_number(value) else rows[rows[col] == value]
    return rows.iloc[0] if len(rows) == 1 else None


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def grid_baseline(trials: pd.DataFrame, metric: str, mode: str = "min", by: Sequence[str] = ()) -> pd.DataFrame:
    """A grid study's best finished trial and total compute per group of ``by`` (the search's grid
    axes that the grid study has): ``grid_best``, ``grid_trial``, ``grid_compute``, ``grid_trials``."""
    by_cols = [column(b) for b in by if column(b) in trials]
    prog = progress(trials, metric, mode, by_cols)
    rows = []
    groups = prog.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), prog)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        values = part["value"].to_numpy(dtype=float)
        best_at = (np.nanargmin(values) if mode == "min" else np.nanargmax(values)) if np.isfinite(values).any() else None
        rows.append({**dict(zip(by_cols, key)), "grid_best": values[best_at] if best_at is not None else math.nan,
                     "grid_trial": part["trial_id"].iloc[best_at] if best_at is not None else None,
                     "grid_compute": float(np.nansum(part["steps"])), "grid_trials": len(part)})
    return pd.DataFrame(rows)


def seeded_target(trials: pd.DataFrame, metric: str, mode: str = "min", axes: Sequence[str] = ("lr", "weight_decay"),
                  *, seed: str = "seed") -> dict:
    """The target of a search benchmark from a grid run over several seeds: the grid point whose
    final ``metric`` is best **on average over its seeds** (the minimum of single-seed values is
    biased towards a lucky seed), and the threshold a search must reach, that mean plus (for
    ``min``; minus for ``max``) the point's standard deviation over its seeds (one seed's noise:
    a search trial is one seed too).

    A grid point counts only when every one of its seeds finished: a seed that diverged, failed or
    was stopped leaves it out. Returns ``point`` (axis → value), ``mean``, ``sd`` (sample, ddof 1),
    ``seeds``, ``target``, ``points`` (every eligible point with its mean, sd and seeds, best
    first) and ``within`` (how many eligible points have a mean at or better than the target).
    """
    cols = [column(a) for a in axes]
    seeds = column(seed)
    done = trials[trials["status"] == "finished"].assign(_value=as_floats(trials.loc[trials["status"] == "finished", metric]))
    per_point = trials.groupby(cols, observed=True)[seeds].nunique().rename("_seeds")
    stats = (done[np.isfinite(done["_value"])].groupby(cols, observed=True)["_value"]
             .agg(mean="mean", sd=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, seeds="count"))
    stats = stats.join(per_point)
    stats = stats[(stats["seeds"] == stats["_seeds"]) & (stats["seeds"] >= 2)].drop(columns="_seeds")
    if stats.empty:
        raise ValueError(f"no grid point has every seed finished with a {metric}: no target")
    stats = stats.sort_values("mean", ascending=(mode == "min"))
    best = stats.iloc[0]
    target = best["mean"] + best["sd"] if mode == "min" else best["mean"] - best["sd"]
    within_target = int((stats["mean"] <= target).sum() if mode == "min" else (stats["mean"] >= target).sum())
    point = dict(zip(axes, stats.index[0] if isinstance(stats.index[0], tuple) else (stats.index[0],)))
    points = [{**dict(zip(axes, k if isinstance(k, tuple) else (k,))), "mean": float(r["mean"]), "sd": float(r["sd"]),
               "seeds": int(r["seeds"])} for k, r in stats.iterrows()]
    return {"point": {a: (v.item() if hasattr(v, "item") else v) for a, v in point.items()}, "mean": float(best["mean"]),
            "sd": float(best["sd"]), "seeds": int(best["seeds"]), "target": float(target), "points": points,
            "within": within_target}


def best_per_point(trials: pd.DataFrame, metric: str, mode: str = "min", by: Sequence[str] = (),
                   axis: str = "lr", *, seed: str = "seed", confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The best ``axis`` value (e.g. the best LR) per grid point, with its spread over seeds.

    Each (grid point, seed) is its own search: its best finished trial gives one best
    ``axis`` value and one best ``metric`` value. Per grid point without the seed: ``seeds``
    (searches that found a finished trial), ``best_<axis>`` (geometric mean over seeds when
    positive, else mean), ``<axis>_min``, ``<axis>_max``, ``<axis>_log10_std`` (spread in
    decades), and ``best_mean``, ``best_std``, ``best_ci_low``, ``best_ci_high`` (Student t
    over seeds; NaN with one seed).
    """
    by_cols = [column(b) for b in by if column(b) != column(seed)]
    seed_col = column(seed)
    ax_col = column(axis)
    data = trials[trials["status"].astype(str) == "finished"].copy() if "status" in trials else trials.copy()
    data["_value"] = as_floats(data[metric]) if metric in data else np.nan
    data = data[np.isfinite(data["_value"])]
    keys = [*by_cols, *([seed_col] if seed_col in data else [])]
    if data.empty or ax_col not in data:
        return pd.DataFrame(columns=[*by_cols, "seeds", f"best_{axis}"])
    ranked = data.sort_values("_value", ascending=mode == "min", kind="stable")
    best = ranked.groupby(keys, observed=True, sort=True, dropna=False).head(1) if keys else ranked.head(1)
    rows = []
    groups = best.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), best)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        x = part[ax_col].to_numpy(dtype=float)
        positive = bool((x > 0).all())
        interval = t_interval(part["_value"], confidence)
        rows.append({**dict(zip(by_cols, key)), "seeds": len(part),
                     f"best_{axis}": float(np.exp(np.log(x).mean())) if positive else float(x.mean()),
                     f"{axis}_min": float(x.min()), f"{axis}_max": float(x.max()),
                     f"{axis}_log10_std": float(np.log10(x).std(ddof=1)) if positive and len(x) > 1 else math.nan,
                     "best_mean": interval.mean, "best_std": interval.std, "best_ci_low": interval.low,
                     "best_ci_high": interval.high})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ for a loaded study


def study_progress(study: Study) -> pd.DataFrame:
    return progress(study.trials, study.metric, study.mode, grid_axes(study.spec))


def study_summary(study: Study, baseline: Study | None = None, tolerance: float = TOLERANCE) -> pd.DataFrame:
    by = grid_axes(study.spec)
    base = grid_baseline(baseline.trials, study.metric, study.mode, by) if baseline is not None else None
    return summary(study.trials, study.metric, study.mode, by, searched_axes(study.spec), tolerance=tolerance,
                   baseline=base)


def search_bounds(spec: dict, axis: str) -> tuple[float, float] | None:
    """The (low, high) of a searched range axis of a spec, None for a choice or a grid axis."""
    entry = (spec.get("axes") or {}).get(axis)
    if not isinstance(entry, dict) or "choice" in entry:
        return None
    low, high = next(iter(entry.values()))
    return float(low), float(high)


def study_best_per_point(study: Study) -> pd.DataFrame | None:
    """``best_per_point`` over the study's first searched numeric axis (``lr`` when searched)."""
    searched = searched_axes(study.spec)
    numeric = [a for a in searched if not (study.spec["axes"][a] or {}).get("choice")]
    axis = "lr" if "lr" in numeric else (numeric[0] if numeric else None)
    if axis is None:
        return None
    return best_per_point(study.trials, study.metric, study.mode, grid_axes(study.spec), axis)
