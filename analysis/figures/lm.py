"""Figures of the language-model studies: the Chinchilla curves (AdamW vs Adam, their paired
differences and crossings) and the final train–validation gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.style import (CROSSING, LINESTYLES, add_legend, axes_title, axis_label, format_x, group_label,
                                    left_out_note, line_colors, mark_diverged, new_figure, seed_span, suptitle, words)
from analysis.load import (column, curve_spread, diverged_ends, final_gap, fmt, has_values, paired_difference,
                           seed_differences, seed_spread, values, varied_axes, x_column)
from analysis.verdicts import find_crossing


def chinchilla(curves: pd.DataFrame, metric: str = "val_loss", *, x: str | None = None,
               title: str | None = None) -> Figure:
    """Loss vs steps/tokens for WD = 0 (Adam) vs each WD > 0 (AdamW), one column per schedule.

    Top row: the seed-mean loss curves. Bottom row: loss(WD) − loss(WD = 0) at the same x:
    the seed mean (thick) and each seed's own paired difference (thin, same seed = same
    batches), where a crossing below zero of the mean is circled (the crossing
    ``verdicts.chinchilla_*`` finds). Other varied axes (except the seed) get their own
    line style.
    """
    x = x or ("tokens" if has_values(curves, "tokens") else x_column(curves))
    sched, wd = column("schedule"), column("weight_decay")
    schedules = values(curves, "schedule") if sched in curves else [None]
    others = [c for c in varied_axes(curves) if c not in (sched, wd)]
    fig, axs = new_figure(2, len(schedules), width=5.6, height=3.6)
    wds = values(curves, "weight_decay") if wd in curves else [None]
    palette = dict(zip(wds, line_colors(len(wds), sequential=True)))
    finished = curves[curves["status"].astype(str) == "finished"] if "status" in curves else curves
    seed_counts = []  # the seeds behind each line
    for col, schedule in enumerate(schedules):
        top, bottom = axs[0, col], axs[1, col]
        data = curves if schedule is None else curves[curves[sched].astype(str) == str(schedule)]
        done = finished if schedule is None else finished[finished[sched].astype(str) == str(schedule)]
        means = curve_spread(data, metric, x, [wd, *others] if wd in data else others)
        ctx_keys = list(dict.fromkeys(means[others].itertuples(index=False, name=None))) if others else [()]
        seeds_labelled = False
        for style, ctx in zip(LINESTYLES * 4, ctx_keys):
            ctx_rows, ctx_done = means, done
            for c, v in zip(others, ctx):
                ctx_rows, ctx_done = ctx_rows[ctx_rows[c] == v], ctx_done[ctx_done[c] == v]
            ctx_label = group_label(others, ctx) if others else ""
            base = ctx_rows[ctx_rows[wd] == 0].set_index(x)["mean"].sort_index() if wd in ctx_rows else None
            base_done = ctx_done[ctx_done[wd] == 0] if wd in ctx_done else None
            for w in wds:
                rows = ctx_rows[ctx_rows[wd] == w].sort_values(x) if wd in ctx_rows else ctx_rows.sort_values(x)
                if rows.empty:
                    continue
                name = ("Adam (WD 0)" if w == 0 else f"AdamW WD {fmt(w)}") + (f", {ctx_label}" if ctx_label else "")
                seeds = int(rows["n"].max())
                seed_counts.append(seeds)
                top.plot(rows[x].to_numpy(dtype=float), rows["mean"].to_numpy(dtype=float), color=palette[w],
                         linestyle=style, label=name, gid=f"data:{group_label([wd, *others], (w, *ctx))}")
                if base is None or w == 0 or base.empty:
                    continue
                arm = rows.set_index(x)["mean"]
                d = paired_difference(arm, base)
                gid = group_label([wd, *others], (w, *ctx))
                paired = seed_differences(ctx_done[np.isclose(ctx_done[wd].astype(float), float(w))], base_done, x,
                                          metric)
                for seed in paired.columns:
                    one = paired[seed].dropna()
                    if len(one):
                        bottom.plot(one.index.to_numpy(dtype=float), one.to_numpy(dtype=float), color=palette[w],
                                    linestyle=style, linewidth=0.7, alpha=0.45, gid=f"seed-diff:{gid}:seed={fmt(seed)}",
                                    label="each seed (same batches)" if not seeds_labelled else None)
                        seeds_labelled = True
                bottom.plot(d.index.to_numpy(dtype=float), d.to_numpy(dtype=float), color=palette[w], linestyle=style,
                            linewidth=2.0, label=name + (f" (mean of {seeds})" if seeds > 1 else ""), gid=f"diff:{gid}")
                crossing = find_crossing(d.index.to_numpy(dtype=float), d.to_numpy())
                if crossing.exists:
                    y_cross = float(np.interp(crossing.x, arm.index.to_numpy(dtype=float), arm.to_numpy(dtype=float)))
                    top.plot([crossing.x], [y_cross], gid=f"crossing:{gid}", **CROSSING)
                    bottom.plot([crossing.x], [0.0], gid=f"crossing:{gid}", **CROSSING)
                    at = f"{crossing.x / 1e6:.3g}M" if x == "tokens" and crossing.x >= 1e5 else f"{crossing.x:.4g}"
                    bottom.annotate(f"crosses at {at}", (crossing.x, 0.0), textcoords="offset points",
                                    xytext=(-6, 8), ha="right", fontsize=7)
        tail = means[means[x] >= means[x].quantile(0.1)]["mean"] if len(means) else []
        if len(tail):  # zoom past the first 10% of the run, where every curve falls steeply
            lo, hi = float(np.nanmin(tail)), float(np.nanmax(tail))
            top.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        sub = curves if schedule is None else data
        ends = diverged_ends(sub, x, metric)
        if len(ends):
            mark_diverged(top, ends["x"], ends["y"], top.get_ylim()[1])
        bottom.axhline(0.0, color="black", linewidth=0.8)
        top.set_title(f"{schedule} schedule" if schedule is not None else metric, fontsize=10)
        top.set_ylabel(axis_label(metric))
        bottom.set_ylabel(f"{axis_label(metric)}\nWD − WD 0")
        format_x(top, x)
        format_x(bottom, x)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        add_legend(top, loc="upper right")
        if any(line.get_gid() and line.get_gid().startswith("crossing") for line in bottom.lines):
            bottom.plot([], [], label="crossing (WD ends lower)", **CROSSING)
        add_legend(bottom)
    where = " and ".join(f"{s}" for s in schedules if s is not None) or "one schedule"
    suptitle(fig, (title or f"AdamW vs Adam: {words(metric)} vs {words(x)} ({where} LR)")
              + (f", mean of {seed_span(seed_counts)} seeds" if max(seed_counts, default=0) > 1 else "") + left_out_note(curves),
              fontsize=11)
    return fig


def train_val_gap(curves: pd.DataFrame, *, epsilon: float | None = None, title: str | None = None) -> Figure:
    """Final val_loss − train_loss vs weight decay, one line per value of the other axes:
    the seed mean, with every seed's own gap as a small dot (the verdict needs each seed
    inside ±ε)."""
    ends = final_gap(curves)
    wd = column("weight_decay")
    others = [c for c in varied_axes(ends) if c != wd]
    by = [wd, *others] if wd in ends else others
    agg = seed_spread(ends, "gap", by)
    fig, axs = new_figure(width=6.0, height=4.2)
    ax = axs[0, 0]
    grouped = list(agg.groupby(others, observed=True, sort=True)) if others else [((), agg)]
    wd_span = float(np.ptp(ends[wd].to_numpy(dtype=float))) if wd in ends and len(ends) else 0.0
    for i, (color, (key, part)) in enumerate(zip(line_colors(64), grouped)):
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values(wd) if wd in part else part
        xs = part[wd].to_numpy(dtype=float) if wd in part else np.zeros(len(part))
        label = group_label(others, key) if others else "final gap"
        ax.plot(xs, part["mean"].to_numpy(dtype=float), marker="o", color=color, label=label, gid=f"data:{label}")
        rows = ends
        for c, v in zip(others, key):
            rows = rows[rows[c] == v]
        if len(rows) and rows["trial_id"].nunique() > len(part):
            rx = rows[wd].to_numpy(dtype=float) if wd in rows else np.zeros(len(rows))
            rx = rx + (i - (len(grouped) - 1) / 2) * 0.015 * (wd_span or 1.0)  # side by side, not on top
            ax.plot(rx, rows["gap"].to_numpy(dtype=float), marker=".", linestyle="none", color=color, alpha=0.6,
                    markersize=6, gid=f"seeds:{label}", label="each seed" if i == 0 else None)
    ax.axhline(0.0, color="black", linewidth=0.8)
    span = float(np.nanmax(np.abs(ends["gap"].to_numpy(dtype=float)))) if len(ends) else 0.0
    if epsilon is not None:
        for sign in (1, -1):
            ax.axhline(sign * epsilon, color="grey", linestyle="--", linewidth=1,
                       label=f"±ε = {epsilon:g}" if sign == 1 else None, gid="epsilon")
        span = max(span, epsilon)
    if span > 0:
        ax.set_ylim(-1.15 * span, 1.15 * span)
    seeds = int(agg["n"].max()) if len(agg) else 0
    if wd in agg and 0 < agg[wd].nunique() <= 8:
        grid = sorted(agg[wd].astype(float).unique())
        ax.set_xticks(grid, [fmt(v) for v in grid])
    ax.set_xlabel(axis_label("weight_decay"))
    ax.set_ylabel("validation − training loss at the end (nats)")
    axes_title(ax, title or "final train–validation gap vs weight decay"
                 + (f" (mean of {seed_span(agg['n'])} seeds; dots: each seed, shifted sideways per line)"
                    if seeds > 1 else "")
                 + left_out_note(curves), fontsize=10)
    ax.grid(alpha=0.3)
    add_legend(ax)
    return fig
