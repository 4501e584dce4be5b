"""Figures of the vision studies: the U-shape and heat map over LR × weight decay, fine-tuned
branches, training curves, weight norms and effective LR, the Hessian trace, EMA vs plain.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogLocator, NullFormatter

from analysis.figures.style import (HEATMAP_LOG_RATIO, LOG_RATIO, Percent, add_legend, axes_title, axis_label,
                                    clip_value, colors_and_styles, default_by, draw_spread_curves, figure_legend,
                                    finished_values, finite_values, format_x, format_y, group_label, is_error,
                                    left_out_note, line_colors, log_if_wide, lr_axis, mark_diverged, mark_drops,
                                    new_figure, panel_rows, seed_span, seeds_note, set_limits, split_panels, suptitle, words)
from analysis.load import column, curve_spread, diverged_ends, fmt, has_values, seed_spread, values, x_column


def ushape(finals: pd.DataFrame, value: str, *, x: str = "lr", line: str = "weight_decay",
           title: str | None = None) -> Figure:
    """Final ``value`` vs LR, one line per weight decay: the seed mean, with min–max error
    bars over the seeds; log LR axis; the y axis turns logarithmic when the values span
    more than ``LOG_RATIO``; diverged grid points are red X markers above the data."""
    xcol, lcol = column(x), column(line)
    by = [lcol, xcol] if lcol in finals else [xcol]
    agg = seed_spread(finals, value, by)
    fig, axs = new_figure(width=6.4, height=4.4)
    ax = axs[0, 0]
    groups = agg.groupby(lcol, observed=True, sort=True) if lcol in agg else [(None, agg)]
    colors = line_colors(len(values(agg, line)) if lcol in agg else 1, sequential=True)
    for color, (key, part) in zip(colors, groups):
        part = part.sort_values(xcol)
        ok = (part["n"] > 0).to_numpy()
        xs = part.loc[ok, xcol].to_numpy(dtype=float)
        mean = part.loc[ok, "mean"].to_numpy(dtype=float)
        label = f"WD {fmt(key)}" if key is not None else value
        ax.plot(xs, mean, marker="o", markersize=5, color=color, label=label,
                gid=f"data:{line}={fmt(key)}" if key is not None else "data:all")
        spread = (part.loc[ok, "n"] > 1).to_numpy()
        if spread.any():
            low = np.maximum(mean[spread] - part.loc[ok, "min"].to_numpy(dtype=float)[spread], 0.0)
            high = np.maximum(part.loc[ok, "max"].to_numpy(dtype=float)[spread] - mean[spread], 0.0)
            bars = ax.errorbar(xs[spread], mean[spread], yerr=[low, high], fmt="none", ecolor=color, elinewidth=1.1,
                               capsize=3, alpha=0.8)
            bars.lines[2][0].set_gid(f"spread:{line}={fmt(key)}" if key is not None else "spread:all")
    lr_axis(ax, agg[xcol])
    lo, hi = agg["min"].min(), agg["max"].max()
    log = bool(np.isfinite(lo) and lo > 0 and hi / lo > LOG_RATIO)
    if log:
        ax.set_yscale("log")
    set_limits(ax, lo, hi, log=log, floor=0.0 if (is_error(value) and not log) else None)
    div = agg[agg["n_diverged"] > 0]
    if len(div):
        clip = clip_value(ax, agg["max"], log=log)
        mark_diverged(ax, div[xcol].to_numpy(dtype=float), np.full(len(div), np.nan), clip,
                       label="seeds diverged (k/n), drawn above the data")
        for _, row in div.iterrows():
            ax.annotate(f"{int(row['n_diverged'])}/{int(row['n_trials'])}", (row[xcol], clip), textcoords="offset points",
                        xytext=(6, -3), fontsize=7, color="crimson")
    ax.set_xlabel(axis_label(x))
    format_y(ax, value)
    axes_title(ax, (title or f"{words(value)} vs {words(x)}") + f" ({seeds_note(agg['n']).replace('band/', '')})" + left_out_note(finals),
           fontsize=10)
    ax.grid(alpha=0.3, which="major")
    add_legend(ax)
    return fig


def heatmap(finals: pd.DataFrame, value: str, *, rows: str = "lr", cols: str = "weight_decay",
            title: str | None = None) -> Figure:
    """Mean ``value`` over seeds on the ``rows`` × ``cols`` grid; the image array is the pivot.

    The colour scale is logarithmic when the means span more than ``HEATMAP_LOG_RATIO`` (one bad
    corner would otherwise wash out the rest). Cells where a seed diverged are annotated
    ``k/n div``; the best cell has a box.
    """
    rcol, ccol = column(rows), column(cols)
    agg = seed_spread(finals, value, [rcol, ccol])
    row_values, col_values = values(agg, rows), values(agg, cols)
    grid = np.full((len(row_values), len(col_values)), np.nan)
    divs = np.zeros_like(grid, dtype=int)
    totals = np.zeros_like(grid, dtype=int)
    for _, r in agg.iterrows():
        i, j = row_values.index(r[rcol]), col_values.index(r[ccol])
        grid[i, j] = r["mean"] if r["n"] > 0 else np.nan
        divs[i, j], totals[i, j] = r["n_diverged"], r["n_trials"]
    fig, axs = new_figure(width=1.25 * len(col_values) + 3.4, height=0.55 * len(row_values) + 2.2)
    ax = axs[0, 0]
    finite = grid[np.isfinite(grid)]
    norm = None
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > HEATMAP_LOG_RATIO:
        norm = LogNorm(vmin=float(finite.min()), vmax=float(finite.max()))
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
    image.set_gid("data:heatmap")
    cbar = fig.colorbar(image, ax=ax)
    cbar.set_label(axis_label(value))
    if is_error(value):
        if norm is not None:
            cbar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
            cbar.ax.yaxis.set_minor_formatter(NullFormatter())
        cbar.ax.yaxis.set_major_formatter(Percent())
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            text = "" if np.isnan(grid[i, j]) else (f"{100 * grid[i, j]:.2f}" if is_error(value) else f"{grid[i, j]:.4g}")
            if divs[i, j]:
                text += f"\n{divs[i, j]}/{totals[i, j]} div"
            if text:
                shade = image.cmap(image.norm(grid[i, j])) if not np.isnan(grid[i, j]) else (1, 1, 1, 1)
                light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=8, fontweight="bold" if divs[i, j] else None,
                        color="crimson" if divs[i, j] else ("black" if light else "white"), gid=f"cell:{i},{j}")
    if np.isfinite(grid).any():
        bi, bj = np.unravel_index(np.nanargmin(grid), grid.shape)
        ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2, gid="best"))
    ax.set_xticks(range(len(col_values)), [fmt(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [fmt(v) for v in row_values])
    ax.set_xlabel(axis_label(cols))
    ax.set_ylabel(axis_label(rows))
    seeds = int(agg["n"].max()) if len(agg) else 0
    unit = " in %" if is_error(value) else ""
    axes_title(ax, (title or f"{words(value)}{unit}: {words(rows)} × {words(cols)}") + (f", mean of {seed_span(agg['n'])} seeds" if seeds > 1 else "")
                 + left_out_note(finals), fontsize=10)
    return fig


def finetune_branches(curves: pd.DataFrame, value: str = "finetune_test_error", *, x: str | None = None,
                      by: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """The Figs. 2–3 protocol: the test error of the fine-tuned copies vs the epoch they
    were branched from, one panel per weight decay, colour = LR; seed mean with min–max
    error bars."""
    x = x or ("epoch" if has_values(curves, "epoch") else x_column(curves))
    by = [column(b) for b in by] if by is not None else default_by(curves)
    spread = curve_spread(curves, value, x, by)
    pcol, panels, rest = split_panels(curves, by)
    colors, styles = colors_and_styles(curves, rest)
    fig, axs = new_figure(1, len(panels), width=4.6, height=4.0, sharey=True)
    lo, hi = spread["min"].min(), spread["max"].max()
    log = bool(np.isfinite(lo) and lo > 0 and hi / lo > LOG_RATIO)
    for ax, p in zip(axs[0], panels):
        part = panel_rows(spread, pcol, p)
        draw_spread_curves(ax, part, x, by, rest, colors, styles, band=False, marker="o")
        grouped = part.groupby(list(by), observed=True, sort=True) if by else [((), part)]
        for key, g in grouped:
            key = key if isinstance(key, tuple) else (key,)
            full = dict(zip(by, key))
            color = colors.get(full[rest[0]] if rest else None)
            g = g[g["n"] > 1].sort_values(x)
            if len(g):
                m = g["mean"].to_numpy(dtype=float)
                bars = ax.errorbar(g[x].to_numpy(dtype=float), m,
                                   yerr=[np.maximum(m - g["min"].to_numpy(dtype=float), 0.0),
                                         np.maximum(g["max"].to_numpy(dtype=float) - m, 0.0)],
                                   fmt="none", ecolor=color, capsize=3, elinewidth=1, alpha=0.8)
                bars.lines[2][0].set_gid(f"spread:{group_label(by, key)}")
        if log:
            ax.set_yscale("log")
        ax.set_title(f"WD {fmt(p)}" if p is not None else value, fontsize=10)
        branch_x = sorted(spread[x].astype(float).unique())
        if 0 < len(branch_x) <= 12:
            ax.set_xticks(branch_x, [fmt(v) for v in branch_x])
        ax.set_xlabel(f"{axis_label(x)} the copy branched from")
        ax.grid(alpha=0.3)
    set_limits(axs[0, 0], lo, hi, log=log, floor=0.0 if (is_error(value) and not log) else None)
    format_y(axs[0, 0], value)
    for ax in axs[0, 1:]:
        format_y(ax, value, label="")
    figure_legend(fig, axs[0])
    suptitle(fig, (title or f"Fine-tuned copies (Figs. 2–3 protocol): {words(value)} vs the {words(x)} each copy branched from")
              + f" ({seeds_note(spread['n']).replace('band/', '')})" + left_out_note(curves), fontsize=11)
    return fig


def _curve_grid(curves: pd.DataFrame, rows: Sequence[tuple[str, str, bool]], *, x: str | None,
                by: Sequence[str] | None, title: str) -> Figure:
    """A row of panels per metric, a column per weight decay; colour = the other axis
    (LR for vision), seed mean with a min–max band; one legend outside on the right."""
    present = [(m, label, log) for m, label, log in rows if has_values(curves, m)]
    if not present:
        raise ValueError(f"none of {', '.join(m for m, _, _ in rows)} is reported in these curves")
    x = x or x_column(curves)
    by = [column(b) for b in by] if by is not None else default_by(curves)
    pcol, panels, rest = split_panels(curves, by)
    colors, styles = colors_and_styles(curves, rest)
    n_lines = len(curves.drop_duplicates([*rest]).index) if rest else 1
    fig, axs = new_figure(len(present), len(panels), width=4.3 if len(panels) > 1 else 6.4, height=3.5,
                       sharex=True, sharey="row")
    for r, (metric, label, log) in enumerate(present):
        spread = curve_spread(curves, metric, x, by)
        few = spread.groupby(list(by), observed=True).size().max() <= 6 if len(spread) and by else len(spread) <= 6
        for c, p in enumerate(panels):
            ax = axs[r, c]
            draw_spread_curves(ax, panel_rows(spread, pcol, p), x, by, rest, colors, styles,
                                gid_prefix="data" if len(present) == 1 else f"data:{metric}",
                                band=n_lines <= 6, marker="o" if few else None)
            if log:
                ax.set_yscale("log")
            else:
                log_if_wide(ax, "y", finished_values(curves, metric))
            panel_curves = panel_rows(curves, pcol, p)
            mark_drops(ax, panel_curves, x)
            ends = diverged_ends(panel_curves, x, metric)
            if len(ends):
                mark_diverged(ax, ends["x"], ends["y"], clip_value(ax, finished_values(curves, metric), log=ax.get_yscale() == "log"))
            if r == 0:
                ax.set_title(f"WD {fmt(p)}" if p is not None else "", fontsize=10)
            if r == len(present) - 1:
                format_x(ax, x)
            format_y(ax, metric, label=label if c == 0 else "")
            ax.grid(alpha=0.3, which="major")
    figure_legend(fig, axs.ravel())
    suptitle(fig, f"{title} ({seeds_note(curve_spread(curves, present[0][0], x, by)['n'])})" + left_out_note(curves),
             fontsize=11)
    return fig


def training_curves(curves: pd.DataFrame, y: str = "train_loss", *, x: str | None = None,
                    by: Sequence[str] | None = None, log: bool = True, title: str | None = None) -> Figure:
    """``y`` vs ``x`` per grid point (mean over seeds), one panel per weight decay; a dotted
    line where the LR steps down.

    With a constant large LR then a drop, the curves show where weight decay holds the
    training loss at a level set by LR × WD before the decay.
    """
    finished = finite_values(finished_values(curves, y))
    log = log and len(finished) > 0 and bool((finished > 0).all())
    return _curve_grid(curves, [(y, axis_label(y), log)], x=x, by=by, title=title or f"{words(y)} vs {words(x or x_column(curves))}")


def _effective_lr_label(curves: pd.DataFrame) -> str:
    """What ``effective_lr`` means for the trainable that reported it."""
    if has_values(curves, "effective_lr_sqrt") or has_values(curves, "epoch"):
        return f"{axis_label('effective_lr')}\nη/‖w‖² (scale-invariant params)"
    if has_values(curves, "tokens"):
        return f"{axis_label('effective_lr')}\nAdam: median η/(√v+ε)"
    return axis_label("effective_lr")


def norms(curves: pd.DataFrame, *, x: str | None = None, by: Sequence[str] | None = None,
          title: str | None = None) -> Figure:
    """Weight norm ‖w‖₂ and the effective LR vs ``x``, one line per grid point (mean over seeds)."""
    return _curve_grid(curves, [("weight_norm", axis_label("weight_norm"), False),
                                ("effective_lr", _effective_lr_label(curves), True)],
                       x=x, by=by, title=title or "weight norm and effective learning rate")


def hessian_trace(curves: pd.DataFrame, *, x: str | None = None, by: Sequence[str] | None = None,
                  title: str | None = None) -> Figure:
    """Tr(Hessian) vs ``x``: of the copy fine-tuned from that epoch and/or of the iterate itself."""
    return _curve_grid(curves, [("finetune_hessian_trace", axis_label("finetune_hessian_trace"), True),
                                ("hessian_trace", axis_label("hessian_trace"), True)],
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
    """Plain (solid) vs EMA-of-weights (dashed) metric per grid point, mean over seeds; one
    panel per weight decay, colour = the other axes."""
    pair = pair or ema_pair(curves)
    if pair is None:
        raise ValueError("needs test_error and ema_test_error, or val_loss and ema_val_loss")
    plain, ema = pair
    x = x or x_column(curves)
    by = [column(b) for b in by] if by is not None else default_by(curves)
    pcol, panels, rest = split_panels(curves, by)
    colors, _ = colors_and_styles(curves, rest[:1])
    if len(rest) > 1:  # colour by every other axis together: the dashes mean EMA here
        combos = list(dict.fromkeys(curves[rest].drop_duplicates().sort_values(rest).itertuples(index=False, name=None)))
        colors = dict(zip(combos, line_colors(len(combos))))
    spreads = {m: curve_spread(curves, m, x, by) for m in (plain, ema)}
    fig, axs = new_figure(1, len(panels), width=4.6 if len(panels) > 1 else 6.4, height=4.0, sharey=True)
    values_all = pd.concat([finished_values(curves, plain), finished_values(curves, ema)])
    finite = finite_values(values_all)
    log = bool(len(finite) and finite.min() > 0 and finite.max() / finite.min() > LOG_RATIO)
    for ax, p in zip(axs[0], panels):
        for metric, style in ((plain, "-"), (ema, "--")):
            part = panel_rows(spreads[metric], pcol, p)
            grouped = part.groupby(list(by), observed=True, sort=True) if by else [((), part)]
            for key, g in grouped:
                key = key if isinstance(key, tuple) else (key,)
                full = dict(zip(by, key))
                rest_key = tuple(full[c] for c in rest)
                color = colors.get(rest_key if len(rest) > 1 else (rest_key[0] if rest else None), "black")
                g = g.sort_values(x)
                ax.plot(g[x].to_numpy(dtype=float), g["mean"].to_numpy(dtype=float), color=color, linestyle=style,
                        linewidth=1.3, label=group_label(rest, rest_key) if style == "-" else None,
                        gid=f"data:{'plain' if metric == plain else 'ema'}:{group_label(by, key)}")
        if log:
            ax.set_yscale("log")
        ax.set_title(f"WD {fmt(p)}" if p is not None else "", fontsize=10)
        format_x(ax, x)
        ax.grid(alpha=0.3, which="major")
    format_y(axs[0, 0], plain)
    for ax in axs[0, 1:]:
        format_y(ax, plain, label="")
    style_keys = [(Line2D([], [], color="black", linestyle="-"), f"solid: {plain}"),
                  (Line2D([], [], color="black", linestyle="--"), f"dashed: {ema} (EMA of the weights)")]
    figure_legend(fig, axs[0], extra=style_keys)
    seeds = int(spreads[plain]["n"].max()) if len(spreads[plain]) else 0
    suptitle(fig, (title or f"{words(plain)} (solid) vs {words(ema)} (dashed)")
              + (f" (mean of {seed_span(spreads[plain]['n'])} seeds)" if seeds > 1 else "") + left_out_note(curves),
              fontsize=11)
    return fig
