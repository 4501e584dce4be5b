"""Figures drawn from a study's DataFrames (matplotlib ``Figure`` objects, no pyplot state).

Each function takes DataFrames (``finals`` / ``curves`` / ``trials`` from
``analysis.load``) and returns a ``matplotlib.figure.Figure``. The plotted data can be
checked: every data line has a ``gid`` starting with ``data:`` and a label, and its
``get_xydata()`` is the DataFrame values it was drawn from (seed means where seeds
exist; the t-interval is a shaded band). Diverged trials are never dropped: they get a
red ``X`` (``gid`` ``diverged:...``) at their last finite value clipped to the top of the
axes, and a legend entry says so. Trials that failed or were stopped are counted in the
title when a figure leaves them out.
"""

from __future__ import annotations

import math
import textwrap
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter

from analysis.load import (CONFIG, SEED, aggregate_seeds, column, fmt, has_values, seed_mean_curves, values,
                           varied_axes, x_column)
from analysis.stats import CONFIDENCE
from analysis.verdicts import bf16_arm, final_pairs, find_crossing

DIVERGED = dict(marker="X", color="crimson", linestyle="none", markersize=9, zorder=6,
                markeredgecolor="black", markeredgewidth=0.6)
CROSSING = dict(marker="o", markersize=10, markerfacecolor="none", markeredgecolor="black",
                markeredgewidth=1.6, linestyle="none", zorder=7)
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))


# ------------------------------------------------------------------ helpers

def _figure(nrows: int = 1, ncols: int = 1, width: float = 5.6, height: float = 4.0):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _wrap(text: str, fig) -> str:
    """Wrap a title to the figure's width (about 14 characters per inch at 10 pt)."""
    return textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 14)))


def _suptitle(fig, text: str, fontsize: float = 11) -> None:
    fig.suptitle(_wrap(text, fig), fontsize=fontsize)


def _title(ax, text: str, fontsize: float = 10) -> None:
    """An axes title wrapped to the axes' share of the figure width."""
    fig = ax.get_figure()
    columns = ax.get_subplotspec().get_gridspec().ncols if ax.get_subplotspec() else 1
    ax.set_title(textwrap.fill(text, width=max(30, int(fig.get_figwidth() / columns * 13))), fontsize=fontsize)


def _name(col: str) -> str:
    return col.removeprefix(CONFIG)


def _label(cols: Sequence[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{_name(c)}={fmt(k)}" for c, k in zip(cols, key)) or "all"


def _colors(n: int, sequential: bool = False) -> list:
    from matplotlib import colormaps

    if sequential:
        cmap = colormaps["viridis"]
        return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _finite(values) -> np.ndarray:
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return x[np.isfinite(x)]


def _is_error(metric: str) -> bool:
    return "error" in metric


def _format_y(ax, metric: str) -> None:
    ax.set_ylabel(metric)
    if _is_error(metric):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))


def _log_if_wide(ax, axis: str, data) -> None:
    """Log scale when the values are positive and span more than a factor of 20; symlog
    (linear below the smallest positive value) when they also include zero, as WD grids do."""
    x = _finite(data)
    positive = x[x > 0]
    if len(positive) == 0 or (x < 0).any() or positive.max() / positive.min() <= 20:
        return
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    if (x == 0).any():
        set_scale("symlog", linthresh=float(positive.min()), linscale=0.5)
    else:
        set_scale("log")


def _clip(ax, data, log: bool = False) -> float:
    """A y value just above the plotted data, where diverged trials are drawn."""
    y = _finite(data)
    if log:
        y = y[y > 0]
    if len(y) == 0:
        return 1.0
    top, bottom = float(y.max()), float(y.min())
    if log:
        return top * 1.6
    return top + 0.12 * (top - bottom) if top > bottom else top + 0.1 * max(abs(top), 1e-12)


def _mark_diverged(ax, xs, ys, clip: float, note: str = "") -> None:
    """Red X markers at (x, min(y, clip)) for diverged trials; NaN y goes to the clip value."""
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    if len(xs) == 0:
        return
    ys = np.where(np.isfinite(ys), np.minimum(ys, clip), clip)
    ax.plot(xs, ys, label=note or f"diverged (last finite value, clipped at {clip:.3g})",
            gid="diverged:" + (note or "trials"), **DIVERGED)
    low, high = ax.get_ylim()
    top = clip * 1.25 if ax.get_yscale() == "log" else clip + 0.05 * (clip - low)
    if top > high:
        ax.set_ylim(low, top)


def _left_out_note(frame: pd.DataFrame) -> str:
    if "status" not in frame:
        return ""
    per_trial = frame.drop_duplicates("trial_id") if "trial_id" in frame else frame
    counts = per_trial["status"].astype(str)[lambda s: ~s.isin(("finished", "diverged"))].value_counts().sort_index()
    return "" if counts.empty else " [" + ", ".join(f"{n} {s}" for s, n in counts.items()) + " left out]"


def _finished(curves: pd.DataFrame, metric: str) -> pd.Series:
    """Values of ``metric`` from finished trials (what axis limits and clip values are based on)."""
    if metric not in curves:
        return pd.Series(dtype=float)
    if "status" not in curves:
        return curves[metric]
    done = curves.loc[curves["status"].astype(str) == "finished", metric]
    return done if has_values(done.to_frame(), metric) else curves[metric]


def _legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc=kw.pop("loc", "best"), **kw)


def _diverged_ends(curves: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per diverged trial: where it diverged (``diverged_step`` if reported, else its last x)
    and its last finite ``y`` (``last_finite_loss`` when reported)."""
    if "status" not in curves:
        return pd.DataFrame(columns=["trial_id", "x", "y"])
    rows = []
    for trial_id, part in curves[curves["status"].astype(str) == "diverged"].groupby("trial_id", sort=True):
        part = part[part[x].notna()] if x in part else part.iloc[0:0]
        if part.empty:
            continue
        yv = pd.to_numeric(part[y], errors="coerce") if y in part else pd.Series(np.nan, index=part.index)
        finite = part[np.isfinite(yv.to_numpy(dtype=float, na_value=np.nan))]
        x_at = float(part[x].iloc[-1])
        if x in ("step",) and has_values(part, "diverged_step"):
            x_at = float(part["diverged_step"].dropna().iloc[-1])
        y_at = float(yv[finite.index].iloc[-1]) if len(finite) else math.nan
        rows.append({"trial_id": trial_id, "x": x_at, "y": y_at, **{c: part[c].iloc[0] for c in part if c.startswith(CONFIG)}})
    return pd.DataFrame(rows)


def _group_curves(ax, curves: pd.DataFrame, y: str, x: str, by: list[str], *, sequential_col: str | None = None,
                  linestyle="-", gid_prefix: str = "data", label_suffix: str = "", colors: dict | None = None,
                  band: bool | None = None) -> dict:
    """Seed-mean curves of ``y`` vs ``x``, one per group of ``by``; returns {first-axis value: colour}.

    The t-interval band is drawn for up to 4 curves (``band=None``): more would hide the lines.
    """
    means = seed_mean_curves(curves, y, x, by)
    if band is None:
        band = (means.groupby(by, observed=True).ngroups if by else 1) <= 4
    # colour by the first axis (sequential when it is numeric), line style by the others
    firsts = values(curves, by[0]) if by else [None]
    numeric = bool(by) and pd.api.types.is_numeric_dtype(curves[by[0]])
    palette = colors or dict(zip(firsts, _colors(len(firsts), sequential=numeric or sequential_col is not None)))
    rest = list(dict.fromkeys(tuple(k) for k in means[by[1:]].itertuples(index=False, name=None))) if len(by) > 1 else [()]
    styles = dict(zip(rest, LINESTYLES * (len(rest) // len(LINESTYLES) + 1)))
    grouped = means.groupby(by, observed=True, sort=True) if by else [((), means)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values(x)
        color = palette.get(key[0] if by else None)
        if len(by) > 1 and linestyle == "-":
            style = styles.get(tuple(key[1:]), "-")
        else:
            style = linestyle
        label = _label(by, key) + label_suffix
        seeds = int(part["n"].max()) if len(part) else 0
        if seeds > 1:
            label += f" (mean of {seeds})"
        ax.plot(part[x].to_numpy(dtype=float), part["mean"].to_numpy(dtype=float), color=color, linestyle=style,
                label=label, gid=f"{gid_prefix}:{_label(by, key)}", linewidth=1.4)
        if band and seeds > 1:
            ok = part["ci_low"].notna().to_numpy()
            ax.fill_between(part[x].to_numpy(dtype=float)[ok], part["ci_low"].to_numpy(dtype=float)[ok],
                            part["ci_high"].to_numpy(dtype=float)[ok], color=color, alpha=0.15, linewidth=0)
    return palette


def _default_by(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in varied_axes(frame) if c not in {column(e) for e in exclude}]


def _lr_drops(curves: pd.DataFrame, x: str) -> list[float]:
    """x values where the reported LR first falls below its peak after reaching it (an LR decay)."""
    if not has_values(curves, "lr") or x == "lr":
        return []
    drops = set()
    for _, part in curves.dropna(subset=["lr"]).groupby("trial_id", sort=False):
        part = part.sort_values(x)
        lr = part["lr"].to_numpy(dtype=float)
        peak_at = int(np.argmax(lr))
        after = np.flatnonzero(lr[peak_at:] < lr[peak_at] * 0.5)  # a decay, not a cosine wiggle
        if len(after):
            drops.add(float(part[x].iloc[peak_at + after[0]]))
    return sorted(drops)


# ------------------------------------------------------------------ vision: U-shape family

def ushape(finals: pd.DataFrame, value: str, *, x: str = "lr", line: str = "weight_decay",
           confidence: float = CONFIDENCE, title: str | None = None) -> Figure:
    """Final ``value`` vs LR, one line per weight decay (mean over seeds, t-interval band)."""
    xcol, lcol = column(x), column(line)
    by = [lcol, xcol] if lcol in finals else [xcol]
    agg = aggregate_seeds(finals, value, by=by, confidence=confidence)
    fig, axs = _figure()
    ax = axs[0, 0]
    groups = agg.groupby(lcol, observed=True, sort=True) if lcol in agg else [(None, agg)]
    colors = _colors(len(values(agg, line)) if lcol in agg else 1, sequential=True)
    for color, (key, part) in zip(colors, groups):
        part = part.sort_values(xcol)
        ok = part["n"] > 0
        label = f"WD {fmt(key)}" if key is not None else value
        ax.plot(part.loc[ok, xcol].to_numpy(dtype=float), part.loc[ok, "mean"].to_numpy(dtype=float), marker="o",
                color=color, label=label, gid=f"data:{line}={fmt(key)}" if key is not None else "data:all")
        band = ok & part["ci_low"].notna()
        if band.any():
            ax.fill_between(part.loc[band, xcol].to_numpy(dtype=float), part.loc[band, "ci_low"].to_numpy(dtype=float),
                            part.loc[band, "ci_high"].to_numpy(dtype=float), color=color, alpha=0.18, linewidth=0)
    _log_if_wide(ax, "x", agg[xcol])
    div = agg[agg["n_diverged"] > 0]
    if len(div):
        clip = _clip(ax, agg["ci_high"].fillna(agg["mean"]))
        _mark_diverged(ax, div[xcol].to_numpy(dtype=float), np.full(len(div), np.nan), clip)
        for _, row in div.iterrows():
            ax.annotate(f"{int(row['n_diverged'])}/{int(row['n_trials'])}", (row[xcol], clip), textcoords="offset points",
                        xytext=(6, -3), fontsize=7, color="crimson")
    seeds = int(agg["n"].max()) if len(agg) else 0
    ax.set_xlabel(x)
    _format_y(ax, value)
    _title(ax, title or f"{value} vs {x}" + (f" (mean of {seeds} seeds, {confidence:.0%} t-interval)" if seeds > 1 else "")
                 + _left_out_note(finals), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def heatmap(finals: pd.DataFrame, value: str, *, rows: str = "lr", cols: str = "weight_decay",
            title: str | None = None) -> Figure:
    """Mean ``value`` over seeds on the ``rows`` × ``cols`` grid; the image array is the pivot.

    Cells where a seed diverged are annotated ``k/n div``; the best cell has a box.
    """
    rcol, ccol = column(rows), column(cols)
    agg = aggregate_seeds(finals, value, by=[rcol, ccol])
    row_values, col_values = values(agg, rows), values(agg, cols)
    grid = np.full((len(row_values), len(col_values)), np.nan)
    divs = np.zeros_like(grid, dtype=int)
    totals = np.zeros_like(grid, dtype=int)
    for _, r in agg.iterrows():
        i, j = row_values.index(r[rcol]), col_values.index(r[ccol])
        grid[i, j] = r["mean"] if r["n"] > 0 else np.nan
        divs[i, j], totals[i, j] = r["n_diverged"], r["n_trials"]
    fig, axs = _figure(width=1.2 * len(col_values) + 3.2, height=0.55 * len(row_values) + 2.2)
    ax = axs[0, 0]
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis_r")
    image.set_gid("data:heatmap")
    cbar = fig.colorbar(image, ax=ax)
    cbar.set_label(value)
    if _is_error(value):
        cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            text = "" if np.isnan(grid[i, j]) else (f"{100 * grid[i, j]:.1f}" if _is_error(value) else f"{grid[i, j]:.3g}")
            if divs[i, j]:
                text += f"\n{divs[i, j]}/{totals[i, j]} div"
            if text:
                shade = image.cmap(image.norm(grid[i, j])) if not np.isnan(grid[i, j]) else (1, 1, 1, 1)
                light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=7, fontweight="bold" if divs[i, j] else None,
                        color="crimson" if divs[i, j] else ("black" if light else "white"), gid=f"cell:{i},{j}")
    if np.isfinite(grid).any():
        bi, bj = np.unravel_index(np.nanargmin(grid), grid.shape)
        ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2, gid="best"))
    ax.set_xticks(range(len(col_values)), [fmt(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [fmt(v) for v in row_values])
    ax.set_xlabel(cols)
    ax.set_ylabel(rows)
    seeds = int(agg["n"].max()) if len(agg) else 0
    unit = " (%)" if _is_error(value) else ""
    _title(ax, title or f"{value}{unit}: {rows} × {cols}" + (f", mean of {seeds} seeds" if seeds > 1 else "")
                 + _left_out_note(finals), fontsize=10)
    return fig


def training_curves(curves: pd.DataFrame, y: str = "train_loss", *, x: str | None = None,
                    by: Sequence[str] | None = None, log: bool = True, title: str | None = None) -> Figure:
    """``y`` vs ``x`` per grid point (mean over seeds); dotted lines where the LR decays.

    With a constant large LR then a drop, the curves show where weight decay holds the
    training loss at a level set by LR × WD before the decay.
    """
    x = x or x_column(curves)
    by = [column(b) for b in by] if by is not None else _default_by(curves)
    fig, axs = _figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    _group_curves(ax, curves, y, x, by, sequential_col=column("weight_decay") if column("weight_decay") in by else None)
    finished = _finite(_finished(curves, y))
    if log and len(finished) and (finished > 0).all():
        ax.set_yscale("log")
    for i, drop in enumerate(_lr_drops(curves, x)):
        ax.axvline(drop, color="grey", linestyle=":", linewidth=1.2, label="LR decay" if i == 0 else None, gid=f"lr_drop:{drop:g}")
    ends = _diverged_ends(curves, x, y)
    if len(ends):
        _mark_diverged(ax, ends["x"], ends["y"], _clip(ax, _finished(curves, y), log=ax.get_yscale() == "log"))
    ax.set_xlabel(x)
    _format_y(ax, y)
    _title(ax, title or f"{y} vs {x}" + _left_out_note(curves), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, ncols=2 if len(ax.lines) > 8 else 1)
    return fig


def _metric_panels(curves: pd.DataFrame, metrics: Sequence[tuple[str, str, bool]], *, x: str | None,
                   by: Sequence[str] | None, title: str | None) -> Figure:
    present = [(m, label, log) for m, label, log in metrics if has_values(curves, m)]
    if not present:
        raise ValueError(f"none of {', '.join(m for m, _, _ in metrics)} is reported in these curves")
    x = x or x_column(curves)
    by = [column(b) for b in by] if by is not None else _default_by(curves)
    fig, axs = _figure(1, len(present), width=5.4, height=4.2)
    palette = None
    for ax, (metric, label, log) in zip(axs[0], present):
        palette = _group_curves(ax, curves, metric, x, by, colors=palette,
                                sequential_col=column("weight_decay") if column("weight_decay") in by else None)
        if log:
            ax.set_yscale("log")
        else:
            _log_if_wide(ax, "y", _finished(curves, metric))
        for drop in _lr_drops(curves, x):
            ax.axvline(drop, color="grey", linestyle=":", linewidth=1.2, gid=f"lr_drop:{drop:g}")
        ends = _diverged_ends(curves, x, metric)
        if len(ends):
            _mark_diverged(ax, ends["x"], ends["y"], _clip(ax, _finished(curves, metric), log=ax.get_yscale() == "log"))
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    _legend(axs[0, 0])
    _suptitle(fig, (title or " and ".join(label.split("  ")[0] for _, label, _ in present)) + _left_out_note(curves),
              fontsize=11)
    return fig


def norms(curves: pd.DataFrame, *, x: str | None = None, by: Sequence[str] | None = None,
          title: str | None = None) -> Figure:
    """Weight norm ‖w‖₂ and effective LR η/‖w‖² vs ``x``, one line per grid point (mean over seeds)."""
    return _metric_panels(curves, [("weight_norm", "weight_norm  ‖w‖₂", False),
                                   ("effective_lr", "effective_lr  η/‖w‖² (scale-invariant params)", True)],
                          x=x, by=by, title=title)


def hessian_trace(curves: pd.DataFrame, *, x: str | None = None, by: Sequence[str] | None = None,
                  title: str | None = None) -> Figure:
    """Tr(Hessian) vs ``x``: of the model fine-tuned after the LR decay and/or of the iterate itself."""
    return _metric_panels(curves, [("finetune_hessian_trace", "finetune_hessian_trace  Tr(H) after fine-tuning", True),
                                   ("hessian_trace", "hessian_trace  Tr(H) of the iterate", True)],
                          x=x, by=by, title=title or "sharpness: Hutchinson estimate of Tr(Hessian)")


EMA_PAIRS = (("test_error", "ema_test_error"), ("val_loss", "ema_val_loss"))


def ema_pair(curves: pd.DataFrame) -> tuple[str, str] | None:
    """The (plain, EMA) metric pair a study reports: test error for vision, val loss for LMs."""
    for plain, ema in EMA_PAIRS:
        if has_values(curves, plain) and has_values(curves, ema):
            return plain, ema
    return None


def ema_vs_plain(curves: pd.DataFrame, *, pair: tuple[str, str] | None = None, x: str | None = None,
                 by: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Plain (solid) vs EMA-of-weights (dashed) metric per grid point, mean over seeds."""
    pair = pair or ema_pair(curves)
    if pair is None:
        raise ValueError("needs test_error and ema_test_error, or val_loss and ema_val_loss")
    plain, ema = pair
    x = x or x_column(curves)
    by = [column(b) for b in by] if by is not None else _default_by(curves)
    fig, axs = _figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    palette = _group_curves(ax, curves, plain, x, by, gid_prefix="data:plain", label_suffix=f" {plain}", band=False,
                            sequential_col=column("weight_decay") if column("weight_decay") in by else None)
    _group_curves(ax, curves, ema, x, by, colors=palette, linestyle="--", gid_prefix="data:ema",
                  label_suffix=f" {ema}", band=False)
    if not _is_error(plain):
        _log_if_wide(ax, "y", pd.concat([curves[plain], curves[ema]]))
    ax.set_xlabel(x)
    _format_y(ax, plain)
    _title(ax, title or f"{plain} (solid) vs EMA of the weights {ema} (dashed)" + _left_out_note(curves), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, ncols=2 if len(ax.lines) > 8 else 1)
    return fig


# ------------------------------------------------------------------ LM: Chinchilla

def chinchilla(curves: pd.DataFrame, metric: str = "val_loss", *, x: str | None = None,
               title: str | None = None) -> Figure:
    """Loss vs steps/tokens for WD = 0 (Adam) vs each WD > 0 (AdamW), one column per schedule.

    Top row: the seed-mean loss curves. Bottom row: loss(WD) − loss(WD = 0) at the same x,
    where a crossing below zero is circled (the same crossing ``verdicts.chinchilla_*`` finds).
    Other varied axes (except the seed) get their own line style.
    """
    x = x or ("tokens" if has_values(curves, "tokens") else x_column(curves))
    sched, wd = column("schedule"), column("weight_decay")
    schedules = values(curves, "schedule") if sched in curves else [None]
    others = [c for c in varied_axes(curves) if c not in (sched, wd)]
    fig, axs = _figure(2, len(schedules), width=5.6, height=3.6)
    wds = values(curves, "weight_decay") if wd in curves else [None]
    palette = dict(zip(wds, _colors(len(wds), sequential=True)))
    for col, schedule in enumerate(schedules):
        top, bottom = axs[0, col], axs[1, col]
        data = curves if schedule is None else curves[curves[sched].astype(str) == str(schedule)]
        means = seed_mean_curves(data, metric, x, [wd, *others] if wd in data else others)
        ctx_keys = list(dict.fromkeys(means[others].itertuples(index=False, name=None))) if others else [()]
        for style, ctx in zip(LINESTYLES * 4, ctx_keys):
            ctx_rows = means
            for c, v in zip(others, ctx):
                ctx_rows = ctx_rows[ctx_rows[c] == v]
            ctx_label = _label(others, ctx) if others else ""
            base = ctx_rows[ctx_rows[wd] == 0].set_index(x)["mean"].sort_index() if wd in ctx_rows else None
            for w in wds:
                rows = ctx_rows[ctx_rows[wd] == w].sort_values(x) if wd in ctx_rows else ctx_rows.sort_values(x)
                if rows.empty:
                    continue
                name = ("Adam (WD 0)" if w == 0 else f"AdamW WD {fmt(w)}") + (f", {ctx_label}" if ctx_label else "")
                seeds = int(rows["n"].max())
                top.plot(rows[x].to_numpy(dtype=float), rows["mean"].to_numpy(dtype=float), color=palette[w],
                         linestyle=style, label=name + (f" (mean of {seeds})" if seeds > 1 else ""),
                         gid=f"data:{_label([wd, *others], (w, *ctx))}")
                if base is None or w == 0 or base.empty:
                    continue
                arm = rows.set_index(x)["mean"]
                common = arm.index.intersection(base.index)
                d = (arm.loc[common] - base.loc[common]).sort_index()
                bottom.plot(d.index.to_numpy(dtype=float), d.to_numpy(dtype=float), color=palette[w], linestyle=style,
                            label=name, gid=f"diff:{_label([wd, *others], (w, *ctx))}")
                crossing = find_crossing(d.index.to_numpy(dtype=float), d.to_numpy())
                if crossing.exists:
                    y_cross = float(np.interp(crossing.x, arm.index.to_numpy(dtype=float), arm.to_numpy(dtype=float)))
                    top.plot([crossing.x], [y_cross], gid=f"crossing:{_label([wd, *others], (w, *ctx))}", **CROSSING)
                    bottom.plot([crossing.x], [0.0], gid=f"crossing:{_label([wd, *others], (w, *ctx))}", **CROSSING)
                    bottom.annotate(f"crosses at {crossing.x:.4g}", (crossing.x, 0.0), textcoords="offset points",
                                    xytext=(4, 8), fontsize=7)
        tail = means[means[x] >= means[x].quantile(0.1)]["mean"] if len(means) else []
        if len(tail):  # zoom past the first 10% of the run, where every curve falls steeply
            lo, hi = float(np.nanmin(tail)), float(np.nanmax(tail))
            top.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        sub = curves if schedule is None else data
        ends = _diverged_ends(sub, x, metric)
        if len(ends):
            _mark_diverged(top, ends["x"], ends["y"], top.get_ylim()[1])
        bottom.axhline(0.0, color="black", linewidth=0.8)
        top.set_title(f"{schedule} schedule" if schedule is not None else metric, fontsize=10)
        top.set_ylabel(metric)
        bottom.set_ylabel(f"{metric}(WD) − {metric}(WD 0)")
        bottom.set_xlabel(x)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        _legend(top, loc="upper right")
        if any(line.get_gid() and line.get_gid().startswith("crossing") for line in bottom.lines):
            bottom.plot([], [], label="crossing (WD ends lower)", **CROSSING)
        _legend(bottom)
    _suptitle(fig, title or f"AdamW vs Adam: {metric} vs {x}, cosine and constant LR" + _left_out_note(curves), fontsize=11)
    return fig


def train_val_gap(curves: pd.DataFrame, *, epsilon: float | None = None, confidence: float = CONFIDENCE,
                  title: str | None = None) -> Figure:
    """Final val_loss − train_loss vs weight decay, one line per value of the other axes."""
    ends = final_pairs(curves[curves["status"].astype(str) == "finished"] if "status" in curves else curves)
    ends = ends.assign(gap=ends["val_loss"].astype(float) - ends["train_loss"].astype(float))
    wd = column("weight_decay")
    others = [c for c in varied_axes(ends) if c != wd]
    agg = aggregate_seeds(ends, "gap", by=[wd, *others] if wd in ends else others, confidence=confidence)
    fig, axs = _figure()
    ax = axs[0, 0]
    grouped = agg.groupby(others, observed=True, sort=True) if others else [((), agg)]
    for color, (key, part) in zip(_colors(64), grouped):
        part = part.sort_values(wd) if wd in part else part
        xs = part[wd].to_numpy(dtype=float) if wd in part else np.zeros(len(part))
        label = _label(others, key) if others else "final gap"
        ax.plot(xs, part["mean"].to_numpy(dtype=float), marker="o", color=color, label=label, gid=f"data:{label}")
        err = part["half_width"].to_numpy(dtype=float)
        if np.isfinite(err).any():
            ax.errorbar(xs, part["mean"].to_numpy(dtype=float), yerr=np.nan_to_num(err), fmt="none", ecolor=color, capsize=3)
    ax.axhline(0.0, color="black", linewidth=0.8)
    if epsilon is not None:
        for sign in (1, -1):
            ax.axhline(sign * epsilon, color="grey", linestyle="--", linewidth=1,
                       label=f"±ε = {epsilon:g}" if sign == 1 else None, gid="epsilon")
    seeds = int(agg["n"].max()) if len(agg) else 0
    ax.set_xlabel("weight_decay")
    ax.set_ylabel("val_loss − train_loss at the end")
    _title(ax, title or "final train–validation gap vs weight decay"
                 + (f" (mean of {seeds} seeds, {confidence:.0%} t-interval)" if seeds > 1 else "")
                 + _left_out_note(curves), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ bf16 divergence

def divergence_curves(curves: pd.DataFrame, y: str = "train_loss", *, x: str | None = None,
                      title: str | None = None) -> Figure:
    """``y`` vs ``x`` for every trial: one panel per precision (and LR row), colour = WD, line style = seed.

    Every trial is drawn (seeds are not averaged); a diverged trial ends in a red X at its
    divergence step and its last finite loss, clipped to the top of the panel.
    """
    x = x or ("step" if has_values(curves, "step") else x_column(curves))
    prec, wd, lr = column("precision"), column("weight_decay"), column("lr")
    panel_cols = values(curves, "precision") if prec in curves else [None]
    panel_rows = values(curves, "lr") if lr in curves and curves[lr].nunique() > 1 else [None]
    wds = values(curves, "weight_decay") if wd in curves else [None]
    palette = dict(zip(wds, _colors(len(wds), sequential=True)))
    seeds = values(curves, "seed") if SEED in curves else [None]
    styles = dict(zip(seeds, LINESTYLES * (len(seeds) // len(LINESTYLES) + 1)))
    fig, axs = _figure(len(panel_rows), len(panel_cols), width=5.2, height=3.8)
    finite = _finite(_finished(curves, y))
    for i, lr_value in enumerate(panel_rows):
        for j, p in enumerate(panel_cols):
            ax = axs[i, j]
            data = curves
            if p is not None:
                data = data[data[prec].astype(str) == str(p)]
            if lr_value is not None:
                data = data[np.isclose(data[lr].astype(float), lr_value)]
            for trial_id, part in data.groupby("trial_id", sort=True):
                part = part.sort_values(x)
                yv = pd.to_numeric(part[y], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                ok = np.isfinite(yv)
                w = part[wd].iloc[0] if wd in part else None
                s = part[SEED].iloc[0] if SEED in part else None
                ax.plot(part[x].to_numpy(dtype=float)[ok], yv[ok], color=palette.get(w), linestyle=styles.get(s, "-"),
                        linewidth=1.2, label=f"WD {fmt(w)}, seed {fmt(s)}", gid=f"data:{trial_id}")
            clip = _clip(ax, finite[finite < np.percentile(finite, 99.5)] if len(finite) > 10 else finite)
            ax.set_ylim(top=clip * 1.04 if clip > 0 else clip)
            ends = _diverged_ends(data, x, y)
            if len(ends):
                _mark_diverged(ax, ends["x"], ends["y"], clip)
            name = ", ".join(filter(None, [f"precision {p}" if p is not None else None,
                                           f"LR {fmt(lr_value)}" if lr_value is not None else None]))
            ax.set_title(name or y, fontsize=10)
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.grid(alpha=0.3)
            _legend(ax, ncols=2 if len(ax.lines) > 8 else 1)
    _suptitle(fig, title or f"{y} vs {x}: colour = weight decay, line style = seed; X = diverged" + _left_out_note(curves),
                 fontsize=11)
    return fig


def status_map(trials: pd.DataFrame, *, rows: str = "lr", cols: str = "weight_decay", panels: str = "precision",
               title: str | None = None) -> Figure:
    """Fraction of trials that diverged on the ``rows`` × ``cols`` grid, one panel per ``panels`` value.

    Each cell's text is ``diverged/trials`` plus any failed (f) or stopped (s) count; the
    image array of each panel is the diverged fraction (NaN where the grid has no trial).
    """
    rcol, ccol, pcol = column(rows), column(cols), column(panels)
    panel_values = values(trials, panels) if pcol in trials else [None]
    row_values = values(trials, rows) if rcol in trials else [None]
    col_values = values(trials, cols) if ccol in trials else [None]
    fig, axs = _figure(1, len(panel_values), width=1.1 * len(col_values) + 2.6, height=0.6 * len(row_values) + 2.2)
    status = trials["status"].astype(str)
    image = None
    for ax, p in zip(axs[0], panel_values):
        grid = np.full((len(row_values), len(col_values)), np.nan)
        for i, r in enumerate(row_values):
            for j, c in enumerate(col_values):
                mask = pd.Series(True, index=trials.index)
                for colname, v in ((pcol, p), (rcol, r), (ccol, c)):
                    if v is not None:
                        mask &= trials[colname].astype(object) == v
                cell = status[mask.to_numpy()]
                if cell.empty:
                    continue
                grid[i, j] = float((cell == "diverged").mean())
                text = f"{int((cell == 'diverged').sum())}/{len(cell)}"
                extra = ", ".join(f"{int((cell == s).sum())}{s[0]}" for s in ("failed", "stopped", "running")
                                  if (cell == s).any())
                ax.text(j, i, text + (f"\n{extra}" if extra else ""), ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] > 0.5 else "black", gid=f"cell:{i},{j}")
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="Reds", vmin=0, vmax=1)
        image.set_gid(f"data:{fmt(p)}" if p is not None else "data:all")
        ax.set_xticks(range(len(col_values)), [fmt(v) for v in col_values])
        ax.set_yticks(range(len(row_values)), [fmt(v) for v in row_values])
        ax.set_xlabel(cols if col_values != [None] else "")
        ax.set_ylabel(rows if row_values != [None] else "")
        ax.set_title(f"{panels} {p}" if p is not None else "all trials", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axs[0]), label="fraction diverged")
    _suptitle(fig, title or f"diverged trials / trials over {rows} × {cols}" + (f" × {panels}" if pcol in trials else "")
                 + " (f = failed, s = stopped, r = running)", fontsize=10)
    return fig


# ------------------------------------------------------------------ any study

def isolation(finals: pd.DataFrame, value: str, mode: str = "min", *, axes: Sequence[str] | None = None,
              title: str | None = None) -> Figure:
    """The tuning playbook's isolation plot: for each value of each axis, the best ``value``
    over every other axis (seed means first), one panel per axis.

    Numeric axes are plotted at their values (log scale when wide), other axes at positions
    0..k-1 with the values as tick labels. Diverged trials are red X markers at a clipped
    value above the data, annotated with their count.
    """
    by = varied_axes(finals)
    panels = [column(a) for a in axes] if axes is not None else by
    if not panels:
        raise ValueError("the isolation plot needs an axis that takes more than one value")
    agg = aggregate_seeds(finals, value, by=by)
    sign = 1 if mode == "min" else -1
    fig, axs = _figure(1, len(panels), width=4.6, height=3.9)
    seeds = int(agg["n"].max()) if len(agg) else 0
    for ax, axis in zip(axs[0], panels):
        vals = values(finals, axis)
        numeric = pd.api.types.is_numeric_dtype(finals[axis]) and not pd.api.types.is_bool_dtype(finals[axis])
        positions = [float(v) for v in vals] if numeric else list(range(len(vals)))
        best_x, best_y, div_x, div_n = [], [], [], []
        for pos, v in zip(positions, vals):
            rows = agg[agg[axis] == v]
            ok = rows[rows["n"] > 0]
            if len(ok):
                best_x.append(pos)
                best_y.append(float(ok["mean"].min() if sign == 1 else ok["mean"].max()))
            diverged = int(rows["n_diverged"].sum())
            if diverged:
                div_x.append(pos)
                div_n.append((diverged, int(rows["n_trials"].sum())))
        ax.plot(best_x, best_y, marker="o", color="tab:blue", label=f"best {value}", gid=f"data:{_name(axis)}")
        if numeric:
            _log_if_wide(ax, "x", positions)
        else:
            ax.set_xticks(positions, [fmt(v) for v in vals])
        if div_x:
            clip = _clip(ax, best_y)
            _mark_diverged(ax, div_x, np.full(len(div_x), np.nan), clip)
            for pos, (k, n) in zip(div_x, div_n):
                ax.annotate(f"{k}/{n}", (pos, clip), textcoords="offset points", xytext=(5, -3), fontsize=7, color="crimson")
        others = [_name(c) for c in by if c != axis]
        ax.set_title(f"{_name(axis)}" + (f"\n(best over {', '.join(others)})" if others else ""), fontsize=9)
        ax.set_xlabel(_name(axis))
        _format_y(ax, value)
        ax.grid(alpha=0.3)
    _legend(axs[0, 0])
    _suptitle(fig, title or (f"isolation: best {value} per value of each axis, {mode}imised over the other axes"
                           + (f" (mean over {seeds} seeds first)" if seeds > 1 else "") + _left_out_note(finals)),
                 fontsize=10)
    return fig


def rank_trials(finals: pd.DataFrame, value: str, mode: str = "min") -> pd.DataFrame:
    """Finished trials with a finite ``value``, best first."""
    if not value or value not in finals:
        return finals.iloc[0:0]
    ok = finals
    if "status" in ok:
        ok = ok[ok["status"].astype(str) == "finished"]
    ok = ok[np.isfinite(pd.to_numeric(ok[value], errors="coerce").to_numpy(dtype=float, na_value=np.nan))]
    return ok.sort_values(value, ascending=mode == "min", kind="stable")


def top_k(curves: pd.DataFrame, finals: pd.DataFrame, value: str, mode: str = "min", *, k: int = 5,
          y: str | None = None, x: str | None = None, title: str | None = None) -> Figure:
    """Curves of ``y`` (default ``value``) of the ``k`` best finished trials by final ``value``."""
    y = y or value
    x = x or x_column(curves)
    best = rank_trials(finals, value, mode).head(k)
    axes = varied_axes(finals, include_seed=True)
    fig, axs = _figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    plotted = []
    for rank, (color, (_, row)) in enumerate(zip(_colors(k), best.iterrows()), start=1):
        part = curves[curves["trial_id"] == row["trial_id"]].sort_values(x)
        yv = pd.to_numeric(part[y], errors="coerce").to_numpy(dtype=float, na_value=np.nan) if y in part else np.array([])
        ok = np.isfinite(yv)
        plotted.extend(yv[ok])
        label = f"#{rank} {value}={row[value]:.4g}: " + _label(axes, tuple(row[c] for c in axes))
        ax.plot(part[x].to_numpy(dtype=float)[ok], yv[ok], color=color, label=label, gid=f"data:{row['trial_id']}")
    _log_if_wide(ax, "y", plotted)
    ax.set_xlabel(x)
    _format_y(ax, y)
    _title(ax, title or f"top {len(best)} of {len(finals)} trials by final {value} ({mode})", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def compare_best(studies: Sequence[tuple[str, pd.DataFrame, pd.DataFrame, str, str]], metric: str, *,
                 x: str | None = None, title: str | None = None) -> Figure:
    """Overlay the ``metric`` curve of each study's best trial.

    ``studies`` holds ``(name, curves, finals, rank_by, mode)`` per study: the best trial
    is the best finished one by final ``rank_by``.
    """
    fig, axs = _figure(width=7.0, height=4.4)
    ax = axs[0, 0]
    xs = [x or x_column(c) for _, c, _, _, _ in studies]
    shared_x = xs[0] if len(set(xs)) == 1 else "training_iteration"
    for (name, curves_frame, finals_frame, rank_by, mode), style in zip(studies, LINESTYLES):
        best = rank_trials(finals_frame, rank_by, mode).head(1)
        if best.empty:
            continue
        row = best.iloc[0]
        part = curves_frame[curves_frame["trial_id"] == row["trial_id"]].sort_values(shared_x)
        yv = pd.to_numeric(part[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan) if metric in part else np.array([])
        ok = np.isfinite(yv)
        axes = varied_axes(finals_frame)
        ax.plot(part[shared_x].to_numpy(dtype=float)[ok], yv[ok], linestyle=style, linewidth=1.6,
                label=f"{name}: " + _label(axes, tuple(row[c] for c in axes)), gid=f"data:{name}")
    ax.set_xlabel(shared_x)
    _format_y(ax, metric)
    _title(ax, title or f"{metric} of each study's best trial", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig
