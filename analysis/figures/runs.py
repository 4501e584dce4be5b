"""Figures of how runs went: the curves of diverged and surviving runs, and the map of where
trials diverged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.style import (LINESTYLES, add_legend, axis_label, clip_value, finished_values, finite_values,
                                    format_x, left_out_note, line_colors, mark_diverged, new_figure, suptitle, words)
from analysis.load import SEED, column, diverged_ends, fmt, has_values, values, x_column


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
    palette = dict(zip(wds, line_colors(len(wds), sequential=True)))
    seeds = values(curves, "seed") if SEED in curves else [None]
    styles = dict(zip(seeds, LINESTYLES * (len(seeds) // len(LINESTYLES) + 1)))
    fig, axs = new_figure(len(panel_rows), len(panel_cols), width=5.2, height=3.8)
    finite = finite_values(finished_values(curves, y))
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
            clip = clip_value(ax, finite[finite < np.percentile(finite, 99.5)] if len(finite) > 10 else finite)
            ax.set_ylim(top=clip * 1.04 if clip > 0 else clip)
            ends = diverged_ends(data, x, y)
            if len(ends):
                mark_diverged(ax, ends["x"], ends["y"], clip)
            name = ", ".join(filter(None, [f"precision {p}" if p is not None else None,
                                           f"LR {fmt(lr_value)}" if lr_value is not None else None]))
            ax.set_title(name or words(y), fontsize=10)
            format_x(ax, x)
            ax.set_ylabel(axis_label(y))
            ax.grid(alpha=0.3)
            add_legend(ax, ncols=2 if len(ax.lines) > 8 else 1)
    suptitle(fig, title or f"{words(y)} vs {words(x)}: colour = weight decay, line style = seed; X = diverged" + left_out_note(curves),
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
    fig, axs = new_figure(1, len(panel_values), width=1.1 * len(col_values) + 2.6, height=0.6 * len(row_values) + 2.2)
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
        ax.set_xlabel(axis_label(cols) if col_values != [None] else "")
        ax.set_ylabel(axis_label(rows) if row_values != [None] else "")
        ax.set_title(f"{panels} {p}" if p is not None else "all trials", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axs[0]), label="fraction diverged")
    suptitle(fig, title or f"diverged trials / trials over {words(rows)} × {words(cols)}" + (f" × {words(panels)}" if pcol in trials else "")
                 + " (f = failed, s = stopped, r = running)", fontsize=10)
    return fig
