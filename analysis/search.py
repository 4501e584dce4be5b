"""What a search spent and what it found: tables and figures for random/Optuna studies.

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
Figures follow ``analysis.figures``: every data line has a ``gid`` and its data is the table's.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures import (_clip, _colors, _figure, _format_y, _label, _legend, _log_if_wide, _mark_diverged,
                              _name, _suptitle, _title, axis_label)
from analysis.load import Study, column, fmt, has_values
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


def _as_floats(series: pd.Series) -> np.ndarray:
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
    value = _as_floats(frame[metric]) if metric in frame else np.full(len(frame), np.nan)
    frame["value"] = np.where((status == "finished").to_numpy() & np.isfinite(value), value, np.nan)
    frame["steps"] = _as_floats(frame[compute]) if compute in frame else np.nan
    frame["seconds"] = _as_floats(frame["time_total_s"]) if "time_total_s" in frame else np.nan
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
            match = _match(baseline, by_cols, key)
            if match is not None:
                row.update(grid_best=match["grid_best"], grid_compute=match["grid_compute"])
                hit = reach(part, within(match["grid_best"], tolerance, mode), mode)
                row["compute_to_grid"] = hit["compute_spent"] if hit is not None else math.nan
                row["share_of_grid"] = row["compute_to_grid"] / match["grid_compute"]
        rows.append(row)
    return pd.DataFrame(rows)


def _match(baseline: pd.DataFrame, by_cols: list[str], key: tuple):
    rows = baseline
    for col, value in zip(by_cols, key):
        if col not in rows:
            continue
        rows = rows[np.isclose(rows[col].astype(float), float(value))] if _numeric(value) else rows[rows[col] == value]
    return rows.iloc[0] if len(rows) == 1 else None


def _numeric(value) -> bool:
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
    data["_value"] = _as_floats(data[metric]) if metric in data else np.nan
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


# ------------------------------------------------------------------ figures


def _group_label(by_cols: list[str], key) -> str:
    return _label(by_cols, key) if by_cols else "search"


def search_progress(progress_frame: pd.DataFrame, metric: str, mode: str = "min", by: Sequence[str] = (), *,
                    baseline: pd.DataFrame | None = None, title: str | None = None) -> Figure:
    """Best final value found so far vs trials spent (left) and vs compute spent (right), a line
    per search; a grid study's best (dashed) and its total compute (dotted) where given."""
    by_cols = [column(b) for b in by]
    fig, axs = _figure(1, 2, width=5.4, height=4.0)
    groups = progress_frame.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), progress_frame)]
    groups = list(groups)
    colors = _colors(len(groups), sequential=len(groups) > 1 and all(_numeric(k[0] if isinstance(k, tuple) else k)
                                                                     for k, _ in groups))
    plotted = []
    for (key, part), color in zip(groups, colors):
        label = _group_label(by_cols, key)
        ok = part[np.isfinite(part["best_so_far"].to_numpy(dtype=float))]
        plotted.extend(ok["best_so_far"])
        for ax, x in zip(axs[0], ("trials_spent", "compute_spent")):
            ax.plot(ok[x].to_numpy(dtype=float), ok["best_so_far"].to_numpy(dtype=float), drawstyle="steps-post",
                    marker="o", markersize=3, color=color, label=label, gid=f"data:{x}:{label}")
        if baseline is not None:
            match = _match(baseline, by_cols, key if isinstance(key, tuple) else (key,))
            if match is not None and np.isfinite(match["grid_best"]):
                for ax in axs[0]:
                    ax.axhline(match["grid_best"], color=color, linestyle="--", linewidth=1,
                               label=f"grid best ({label})", gid=f"baseline:{label}")
                axs[0, 1].axvline(match["grid_compute"], color=color, linestyle=":", linewidth=1,
                                  label=f"grid compute ({label})", gid=f"baseline-compute:{label}")
                plotted.append(match["grid_best"])
    unit = "trial-steps" if progress_frame["steps"].notna().any() else "reports"
    for ax, xlabel in zip(axs[0], ("trials ended", f"compute spent ({unit})")):
        ax.set_xlabel(xlabel)
        _format_y(ax, metric, label=f"best {axis_label(metric)} so far")
        _log_if_wide(ax, "y", plotted)
        ax.grid(alpha=0.3)
    _legend(axs[0, 0])
    counts = progress_frame["status"].value_counts()
    spent = ", ".join(f"{n} {s}" for s, n in counts.sort_index().items())
    _suptitle(fig, title or f"best final {metric} found vs trials and compute spent, per search ({spent}; "
                            f"only finished trials have a value)", fontsize=10)
    return fig


def best_per_point_figure(table: pd.DataFrame, axis: str = "lr", by: str | None = None,
                          metric: str = "value", bounds: tuple[float, float] | None = None,
                          title: str | None = None) -> Figure:
    """Left: the best ``axis`` value per grid point (geometric mean over seeds, min–max bar), on
    the searched range ``bounds`` when given; right: the best ``metric`` found, mean with its
    t-interval over seeds."""
    fig, axs = _figure(1, 2, width=5.0, height=3.8)
    by_col = column(by) if by else None
    if by_col is not None and by_col in table:
        xs = table[by_col].to_numpy()
        numeric = all(_numeric(v) for v in xs)
        positions = xs.astype(float) if numeric else np.arange(len(xs), dtype=float)
    else:
        numeric, positions, xs = False, np.zeros(len(table)), [""] * len(table)
    best = table[f"best_{axis}"].to_numpy(dtype=float)
    low, high = table[f"{axis}_min"].to_numpy(dtype=float), table[f"{axis}_max"].to_numpy(dtype=float)
    ax = axs[0, 0]
    ax.errorbar(positions, best, yerr=[best - low, high - best], fmt="none", capsize=4, color="tab:blue")
    ax.plot(positions, best, "o-", color="tab:blue", label=f"best {axis} (geometric mean over seeds; bar: min–max)",
            gid=f"data:best_{axis}")
    ax.set_yscale("log" if (low > 0).all() and (bounds is None or bounds[0] > 0) else "linear")
    if bounds is not None:  # where in the searched range the best values lie
        ax.set_ylim(*bounds)
    ax.set_ylabel(f"best {axis_label(axis)}" + (f" (searched: {fmt(bounds[0])} to {fmt(bounds[1])})" if bounds else ""))
    mean = table["best_mean"].to_numpy(dtype=float)
    half = (table["best_ci_high"] - table["best_mean"]).to_numpy(dtype=float)
    ax2 = axs[0, 1]
    ax2.errorbar(positions, mean, yerr=np.where(np.isfinite(half), half, 0), fmt="none", capsize=4, color="tab:green")
    ax2.plot(positions, mean, "s-", color="tab:green",
             label=f"best {metric} (mean; bar: {int(CONFIDENCE * 100)}% t-interval over seeds)", gid="data:best_value")
    _format_y(ax2, metric, label=f"best {axis_label(metric)}")
    for a in (ax, ax2):
        if by_col is not None:
            a.set_xlabel(axis_label(by_col))
            if numeric:
                _log_if_wide(a, "x", positions)
            else:
                a.set_xticks(positions, [fmt(v) for v in xs])
        a.grid(alpha=0.3)
        _legend(a)
    seeds = int(table["seeds"].max()) if len(table) else 0
    _suptitle(fig, title or f"best {axis} per {_name(by_col) if by_col else 'search'} and the best {metric} found"
                            f" ({seeds} seed(s) per point, each its own search)", fontsize=10)
    return fig


def search_trials(trials: pd.DataFrame, metric: str, axis: str = "lr", by: Sequence[str] = (), *,
                  title: str | None = None) -> Figure:
    """Every trial's last ``metric`` vs its ``axis`` value, a colour per search: finished trials as
    dots, stopped ones as open circles at the value they were stopped at, diverged ones as red X
    clipped to the top (failed and running ones are counted in the title)."""
    by_cols = [column(b) for b in by]
    fig, axs = _figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    status = trials["status"].astype(str)
    value = _as_floats(trials[metric]) if metric in trials else np.full(len(trials), np.nan)
    x = _as_floats(trials[column(axis)])
    frame = trials.assign(_status=status.to_numpy(), _value=value, _x=x)
    groups = frame.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), frame)]
    groups = list(groups)
    colors = _colors(len(groups))
    shown = frame[frame["_status"].isin(["finished", "stopped"]) & np.isfinite(frame["_value"])]
    for (key, part), color in zip(groups, colors):
        label = _group_label(by_cols, key)
        done = part[(part["_status"] == "finished") & np.isfinite(part["_value"])].sort_values("_x")
        ax.plot(done["_x"], done["_value"], "o", color=color, label=f"{label}: finished",
                gid=f"data:finished:{label}")
        cut = part[(part["_status"] == "stopped") & np.isfinite(part["_value"])].sort_values("_x")
        if len(cut):
            ax.plot(cut["_x"], cut["_value"], "o", markerfacecolor="none", color=color, alpha=0.7,
                    label=f"{label}: stopped early", gid=f"stopped:{label}")
    _log_if_wide(ax, "x", x)
    _log_if_wide(ax, "y", shown["_value"])
    diverged = frame[frame["_status"] == "diverged"]
    if len(diverged):
        clip = _clip(ax, shown["_value"], log=ax.get_yscale() == "log")
        _mark_diverged(ax, diverged["_x"], np.full(len(diverged), np.nan), clip,
                       note=f"diverged ({len(diverged)}), drawn at the top")
    ax.set_xlabel(axis_label(axis))
    _format_y(ax, metric)
    ax.grid(alpha=0.3)
    _legend(ax)
    others = status[~status.isin(["finished", "stopped", "diverged"])].value_counts()
    note = "" if others.empty else " [" + ", ".join(f"{n} {s}" for s, n in others.items()) + " not drawn]"
    _title(ax, title or f"every trial's last {metric} vs {axis}: finished (dot) and stopped early (open, at "
                        f"the value it was stopped at){note}", fontsize=10)
    return fig


__all__ = ["progress", "summary", "reach", "within", "grid_baseline", "best_per_point", "search_progress",
           "best_per_point_figure", "search_trials", "study_progress", "study_summary", "study_best_per_point",
           "is_search", "searched_axes", "grid_axes", "compute_column", "TOLERANCE"]
