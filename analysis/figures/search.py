"""Figures of a random/Optuna search: its progress against compute, the best searched value per
grid point, and the trials over the searched axis. The data come from ``analysis.search_results``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.style import (add_legend, axes_title, axis_label, axis_name, clip_value, format_y, group_label,
                                    line_colors, log_if_wide, mark_diverged, new_figure, suptitle)
from analysis.load import CONFIDENCE, column, fmt
from analysis.search_results import as_floats, baseline_row, is_number


def point_label(by_cols: list[str], key) -> str:
    return group_label(by_cols, key) if by_cols else "search"


def search_progress(progress_frame: pd.DataFrame, metric: str, mode: str = "min", by: Sequence[str] = (), *,
                    baseline: pd.DataFrame | None = None, title: str | None = None) -> Figure:
    """Best final value found so far vs trials spent (left) and vs compute spent (right), a line
    per search; a grid study's best (dashed) and its total compute (dotted) where given."""
    by_cols = [column(b) for b in by]
    fig, axs = new_figure(1, 2, width=5.4, height=4.0)
    groups = progress_frame.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), progress_frame)]
    groups = list(groups)
    colors = line_colors(len(groups), sequential=len(groups) > 1 and all(is_number(k[0] if isinstance(k, tuple) else k)
                                                                     for k, _ in groups))
    plotted = []
    for (key, part), color in zip(groups, colors):
        label = point_label(by_cols, key)
        ok = part[np.isfinite(part["best_so_far"].to_numpy(dtype=float))]
        plotted.extend(ok["best_so_far"])
        for ax, x in zip(axs[0], ("trials_spent", "compute_spent")):
            ax.plot(ok[x].to_numpy(dtype=float), ok["best_so_far"].to_numpy(dtype=float), drawstyle="steps-post",
                    marker="o", markersize=3, color=color, label=label, gid=f"data:{x}:{label}")
        if baseline is not None:
            match = baseline_row(baseline, by_cols, key if isinstance(key, tuple) else (key,))
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
        format_y(ax, metric, label=f"best {axis_label(metric)} so far")
        log_if_wide(ax, "y", plotted)
        ax.grid(alpha=0.3)
    add_legend(axs[0, 0])
    counts = progress_frame["status"].value_counts()
    spent = ", ".join(f"{n} {s}" for s, n in counts.sort_index().items())
    suptitle(fig, title or f"best final {metric} found vs trials and compute spent, per search ({spent}; "
                            f"only finished trials have a value)", fontsize=10)
    return fig


def best_per_point_figure(table: pd.DataFrame, axis: str = "lr", by: str | None = None,
                          metric: str = "value", bounds: tuple[float, float] | None = None,
                          title: str | None = None) -> Figure:
    """Left: the best ``axis`` value per grid point (geometric mean over seeds, min–max bar), on
    the searched range ``bounds`` when given; right: the best ``metric`` found, mean with its
    t-interval over seeds."""
    fig, axs = new_figure(1, 2, width=5.0, height=3.8)
    by_col = column(by) if by else None
    if by_col is not None and by_col in table:
        xs = table[by_col].to_numpy()
        numeric = all(is_number(v) for v in xs)
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
    format_y(ax2, metric, label=f"best {axis_label(metric)}")
    for a in (ax, ax2):
        if by_col is not None:
            a.set_xlabel(axis_label(by_col))
            if numeric:
                log_if_wide(a, "x", positions)
            else:
                a.set_xticks(positions, [fmt(v) for v in xs])
        a.grid(alpha=0.3)
        add_legend(a)
    seeds = int(table["seeds"].max()) if len(table) else 0
    suptitle(fig, title or f"best {axis} per {axis_name(by_col) if by_col else 'search'} and the best {metric} found"
                            f" ({seeds} seed(s) per point, each its own search)", fontsize=10)
    return fig


def search_trials(trials: pd.DataFrame, metric: str, axis: str = "lr", by: Sequence[str] = (), *,
                  title: str | None = None) -> Figure:
    """Every trial's last ``metric`` vs its ``axis`` value, a colour per search: finished trials as
    dots, stopped ones as open circles at the value they were stopped at, diverged ones as red X
    clipped to the top (failed and running ones are counted in the title)."""
    by_cols = [column(b) for b in by]
    fig, axs = new_figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    status = trials["status"].astype(str)
    value = as_floats(trials[metric]) if metric in trials else np.full(len(trials), np.nan)
    x = as_floats(trials[column(axis)])
    frame = trials.assign(_status=status.to_numpy(), _value=value, _x=x)
    groups = frame.groupby(by_cols, observed=True, sort=True, dropna=False) if by_cols else [((), frame)]
    groups = list(groups)
    colors = line_colors(len(groups))
    shown = frame[frame["_status"].isin(["finished", "stopped"]) & np.isfinite(frame["_value"])]
    for (key, part), color in zip(groups, colors):
        label = point_label(by_cols, key)
        done = part[(part["_status"] == "finished") & np.isfinite(part["_value"])].sort_values("_x")
        ax.plot(done["_x"], done["_value"], "o", color=color, label=f"{label}: finished",
                gid=f"data:finished:{label}")
        cut = part[(part["_status"] == "stopped") & np.isfinite(part["_value"])].sort_values("_x")
        if len(cut):
            ax.plot(cut["_x"], cut["_value"], "o", markerfacecolor="none", color=color, alpha=0.7,
                    label=f"{label}: stopped early", gid=f"stopped:{label}")
    log_if_wide(ax, "x", x)
    log_if_wide(ax, "y", shown["_value"])
    diverged = frame[frame["_status"] == "diverged"]
    if len(diverged):
        clip = clip_value(ax, shown["_value"], log=ax.get_yscale() == "log")
        mark_diverged(ax, diverged["_x"], np.full(len(diverged), np.nan), clip,
                       note=f"diverged ({len(diverged)}), drawn at the top")
    ax.set_xlabel(axis_label(axis))
    format_y(ax, metric)
    ax.grid(alpha=0.3)
    add_legend(ax)
    others = status[~status.isin(["finished", "stopped", "diverged"])].value_counts()
    note = "" if others.empty else " [" + ", ".join(f"{n} {s}" for s, n in others.items()) + " not drawn]"
    axes_title(ax, title or f"every trial's last {metric} vs {axis}: finished (dot) and stopped early (open, at "
                        f"the value it was stopped at){note}", fontsize=10)
    return fig
