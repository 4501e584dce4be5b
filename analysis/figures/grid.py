"""Figures of any study's grid: the isolation plot (best over the nuisance axes per value of a
scientific one), the top-k trials' curves, and the best trial of several studies side by side.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.figures.style import (LINESTYLES, LOG_RATIO, axis_label, axis_name, clip_value, figure_legend,
                                    finish_axes, format_y, group_label, is_error, left_out_note, line_colors,
                                    log_if_wide, lr_axis, mark_diverged, new_figure, seed_span, set_limits, suptitle,
                                    words)
from analysis.load import best_at, column, fmt, rank_trials, seed_spread, trial_curve, values, varied_axes, x_column


def isolation(finals: pd.DataFrame, value: str, mode: str = "min", *, axes: Sequence[str] | None = None,
              title: str | None = None) -> Figure:
    """The tuning playbook's isolation plot: for each value of each axis, the best ``value``
    over every other axis (seed means first), one panel per axis, all panels on one y scale.

    Each best point carries the min–max over the seeds of the grid point it comes from
    (error bars, ``spread:<axis>``), so a gap within the seed spread does not look like an
    effect. Numeric axes are plotted at their values (log scale when wide) and joined by a
    line; other axes (a schedule, a precision) are categories at positions 0..k-1 with the
    values as tick labels, drawn as points only: no line between unordered values.
    Diverged trials are red X markers at a clipped value above the data, with their count.
    """
    by = varied_axes(finals)
    panels = [column(a) for a in axes] if axes is not None else by
    if not panels:
        raise ValueError("the isolation plot needs an axis that takes more than one value")
    agg = seed_spread(finals, value, by)
    fig, axs = new_figure(1, len(panels), width=4.6, height=3.9, sharey=True)
    seeds = int(agg["n"].max()) if len(agg) else 0
    drawn = []  # per panel: (axis, numeric, positions, values, best rows, diverged)
    for axis in panels:
        vals = values(finals, axis)
        numeric = pd.api.types.is_numeric_dtype(finals[axis]) and not pd.api.types.is_bool_dtype(finals[axis])
        positions = [float(v) for v in vals] if numeric else list(range(len(vals)))
        best, diverged = [], []
        for pos, v in zip(positions, vals):
            row, n_diverged, n_trials = best_at(agg, axis, v, mode)
            if row is not None:
                best.append((pos, float(row["mean"]), float(row["min"]), float(row["max"]), int(row["n"])))
            if n_diverged:
                diverged.append((pos, n_diverged, n_trials))
        drawn.append((axis, numeric, positions, vals, best, diverged))
    low = min((b[2] for *_, best, _ in drawn for b in best), default=math.nan)
    high = max((b[3] for *_, best, _ in drawn for b in best), default=math.nan)
    log = bool(np.isfinite(low) and low > 0 and high / low > LOG_RATIO)
    for ax, (axis, numeric, positions, vals, best, diverged) in zip(axs[0], drawn):
        xs = np.array([b[0] for b in best], dtype=float)
        ys = np.array([b[1] for b in best], dtype=float)
        ax.plot(xs, ys, marker="o", markersize=6, linestyle="-" if numeric else "none", color="tab:blue",
                label=f"best {axis_label(value)}", gid=f"data:{axis_name(axis)}")
        several = np.array([b[4] > 1 for b in best], dtype=bool)
        if several.any():
            lo = np.array([b[2] for b in best])[several]
            hi = np.array([b[3] for b in best])[several]
            bars = ax.errorbar(xs[several], ys[several], yerr=[np.maximum(ys[several] - lo, 0.0),
                                                               np.maximum(hi - ys[several], 0.0)],
                               fmt="none", ecolor="tab:blue", elinewidth=1.1, capsize=4)
            bars.lines[2][0].set_gid(f"spread:{axis_name(axis)}")
            bars.lines[2][0].set_label("min–max over the seeds of that grid point")
        if numeric and axis == column("lr"):
            lr_axis(ax, positions)
        elif numeric:
            log_if_wide(ax, "x", positions)
            if len(positions) <= 8:  # tick the grid's own values: no crowded 0.00025 steps
                ax.set_xticks(positions, [fmt(v) for v in vals])
                ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(positions, [fmt(v) for v in vals])
            ax.set_xlim(-0.5, len(positions) - 0.5)
        others = [axis_label(c) for c in by if c != axis]
        ax.set_title(axis_label(axis) + (f"\n(best over {', '.join(others)})" if others else ""), fontsize=9)
        ax.set_xlabel(axis_label(axis))
        ax.grid(alpha=0.3)
    if log:
        axs[0, 0].set_yscale("log")  # shared: every panel
    set_limits(axs[0, 0], low, high, log=log, floor=0.0 if (is_error(value) and not log) else None)
    clip = clip_value(axs[0, 0], [low, high], log=log)
    for ax, (axis, numeric, positions, vals, best, diverged) in zip(axs[0], drawn):
        if diverged:
            mark_diverged(ax, [d[0] for d in diverged], np.full(len(diverged), np.nan), clip,
                           label="trials diverged (k/n), drawn above the data")
            for pos, k, n in diverged:
                ax.annotate(f"{k}/{n}", (pos, clip), textcoords="offset points", xytext=(5, -3), fontsize=7,
                            color="crimson")
    format_y(axs[0, 0], value)
    for ax in axs[0, 1:]:
        format_y(ax, value, label="")
    bars_handle = next((c for ax in axs[0] for c in ax.collections if (c.get_gid() or "").startswith("spread:")), None)
    figure_legend(fig, axs[0], extra=[(bars_handle, bars_handle.get_label())] if bars_handle is not None else ())
    suptitle(fig, title or (f"isolation: best {axis_label(value)} per value of each axis, {mode}imised over the "
                             "other axes, on one y scale"
                             + (f" (mean over {seed_span(agg['n'])} seeds first; bars: min–max over seeds)"
                                if seeds > 1 else
                                " (one seed: no spread)") + left_out_note(finals)),
              fontsize=10)
    return fig


def top_k(curves: pd.DataFrame, finals: pd.DataFrame, value: str, mode: str = "min", *, k: int = 5,
          y: str | None = None, x: str | None = None, title: str | None = None) -> Figure:
    """Curves of ``y`` (default ``value``) of the ``k`` best finished trials by final ``value``."""
    y = y or value
    x = x or x_column(curves)
    best = rank_trials(finals, value, mode).head(k)
    axes = varied_axes(finals, include_seed=True)
    fig, axs = new_figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    plotted = []
    for rank, (color, (_, row)) in enumerate(zip(line_colors(k), best.iterrows()), start=1):
        xs, ys = trial_curve(curves, row["trial_id"], x, y)
        plotted.extend(ys)
        label = f"#{rank} {value}={row[value]:.4g}: " + group_label(axes, tuple(row[c] for c in axes))
        ax.plot(xs, ys, color=color, label=label, gid=f"data:{row['trial_id']}")
    log_if_wide(ax, "y", plotted)
    finish_axes(ax, x, y, title or f"top {len(best)} of {len(finals)} trials by final {words(value)} ({mode})")
    return fig


def compare_best(studies: Sequence[tuple[str, pd.DataFrame, pd.DataFrame, str, str]], metric: str, *,
                 x: str | None = None, title: str | None = None) -> Figure:
    """Overlay the ``metric`` curve of each study's best trial.

    ``studies`` holds ``(name, curves, finals, rank_by, mode)`` per study: the best trial
    is the best finished one by final ``rank_by``.
    """
    fig, axs = new_figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    xs = [x or x_column(c) for _, c, _, _, _ in studies]
    shared_x = xs[0] if len(set(xs)) == 1 else "training_iteration"
    for (name, curves_frame, finals_frame, rank_by, mode), style in zip(studies, LINESTYLES):
        best = rank_trials(finals_frame, rank_by, mode).head(1)
        if best.empty:
            continue
        row = best.iloc[0]
        xs, ys = trial_curve(curves_frame, row["trial_id"], shared_x, metric)
        axes = varied_axes(finals_frame)
        ax.plot(xs, ys, linestyle=style, linewidth=1.6,
                label=f"{name}: " + group_label(axes, tuple(row[c] for c in axes)), gid=f"data:{name}")
    finish_axes(ax, shared_x, metric, title or f"{words(metric)} of each study's best trial")
    return fig
