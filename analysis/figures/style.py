"""The figures' common look: axis labels in words, colours, markers, titles, legends and axes.

Every per-figure module draws with these, so one change here restyles them all. Pure
matplotlib on ``Figure`` objects; data preparation lives in ``analysis.load``.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, Formatter, FuncFormatter, LogLocator, NullFormatter

from analysis.load import CONFIG, column, fmt, has_values, lr_drops, values, varied_axes


DIVERGED = dict(marker="X", color="crimson", linestyle="none", markersize=9, zorder=6,
                markeredgecolor="black", markeredgewidth=0.6)


CROSSING = dict(marker="o", markersize=10, markerfacecolor="none", markeredgecolor="black",
                markeredgewidth=1.6, linestyle="none", zorder=7)


LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))


MAX_PANELS = 6  # weight decays drawn as side-by-side panels; more go on one axes


LOG_RATIO = 4.0  # an error axis turns logarithmic when max/min exceeds this


HEATMAP_LOG_RATIO = 2.5  # a heat map's colour scale, likewise: one bad corner must not wash out the rest


MIN_CONTRAST = 3.0  # WCAG 2.1 non-text contrast (1.4.11) of a line against the white axes


LABELS = {
    # axes of the grid
    "lr": "learning rate", "weight_decay": "weight decay", "seed": "seed", "schedule": "LR schedule",
    "precision": "precision", "decay_norms": "weight decay on norm layers", "batch_size": "batch size",
    "momentum": "momentum", "epochs": "epochs", "steps": "steps",
    # progress
    "epoch": "epoch", "step": "step", "tokens": "tokens seen", "training_iteration": "report number",
    "time_total_s": "wall time (s)",
    # metrics (losses are cross-entropies in nats; errors are fractions shown in percent)
    "train_loss": "training loss (nats)", "val_loss": "validation loss (nats)", "test_loss": "test loss (nats)",
    "ema_val_loss": "validation loss of the weights' EMA (nats)",
    "finetune_train_loss": "training loss of the fine-tuned copy (nats)",
    "train_error": "training error (%)", "test_error": "test error (%)",
    "ema_test_error": "test error of the weights' EMA (%)",
    "finetune_test_error": "test error of the fine-tuned copy (%)",
    "weight_norm": "weight norm ‖w‖₂", "effective_lr": "effective learning rate", "grad_norm": "gradient norm ‖g‖₂",
    "update_norm": "update norm", "hessian_trace": "Tr(Hessian) of the iterate",
    "finetune_hessian_trace": "Tr(Hessian) of the fine-tuned copy", "tokens_per_s": "throughput (tokens/s)",
    "samples_per_s": "throughput (samples/s)", "last_finite_loss": "last finite loss (nats)",
    "diverged_step": "step of divergence",
}


def axis_label(name: str) -> str:
    """``name`` (a metric or axis, with or without ``config/``) in words with its unit.

    Names outside ``LABELS`` get spaces for underscores, and ``(%)`` when they are an error.
    """
    name = str(name).removeprefix(CONFIG)
    if name in LABELS:
        return LABELS[name]
    words = name.replace("_", " ")
    return f"{words} (%)" if is_error(name) else words


def words(name: str) -> str:
    """``axis_label`` without its unit, for titles: "validation loss", "learning rate"."""
    return re.sub(r" \([^()]*\)$", "", axis_label(name))


def _luminance(rgb) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour (channels in 0..1)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(color, background="white") -> float:
    """WCAG 2.1 contrast ratio of two colours (1 … 21)."""
    from matplotlib.colors import to_rgb

    a, b = sorted((_luminance(to_rgb(color)), _luminance(to_rgb(background))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def legible(color, background="white") -> tuple:
    """``color`` darkened (same hue) until its contrast with ``background`` is at least
    ``MIN_CONTRAST``; unchanged when it already is (viridis' lime end and tab10's olive and
    cyan are not)."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(color))
    if contrast(rgb, background) >= MIN_CONTRAST:
        return tuple(float(c) for c in rgb)
    low, high = 0.0, 1.0  # scale factor towards black: low always legible
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if contrast(rgb * mid, background) >= MIN_CONTRAST else (low, mid)
    return tuple(float(c) for c in rgb * low)


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 5.6, height: float = 4.0, **kw):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _wrap(text: str, fig) -> str:
    """Wrap a title to the figure's width (about 14 characters per inch at 10 pt)."""
    return textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 14)))


def suptitle(fig, text: str, fontsize: float = 11) -> None:
    fig.suptitle(_wrap(text, fig), fontsize=fontsize)


def axes_title(ax, text: str, fontsize: float = 10) -> None:
    """An axes title wrapped to the axes' share of the figure width."""
    fig = ax.get_figure()
    columns = ax.get_subplotspec().get_gridspec().ncols if ax.get_subplotspec() else 1
    ax.set_title(textwrap.fill(text, width=max(30, int(fig.get_figwidth() / columns * 11.5))), fontsize=fontsize)


def axis_name(col: str) -> str:
    return col.removeprefix(CONFIG)


def group_label(cols: Sequence[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{axis_name(c)}={fmt(k)}" for c, k in zip(cols, key)) or "all"


def line_colors(n: int, sequential: bool = False) -> list:
    from matplotlib import colormaps

    if sequential:  # dark to light; the light end is darkened to stay legible on white
        cmap = colormaps["viridis"]
        return [legible(cmap(0.9 * i / max(n - 1, 1))) for i in range(n)]
    cmap = colormaps["tab10"]
    return [legible(cmap(i % 10)) for i in range(n)]


def finite_values(values) -> np.ndarray:
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return x[np.isfinite(x)]


def is_error(metric: str) -> bool:
    return "error" in metric


class Percent(Formatter):
    """Fractions as percent ticks with as many decimals as the tick spacing needs (3.5%, 3.55%)."""

    def format_ticks(self, values):
        v = 100 * np.asarray(values, dtype=float)
        if len(v) and (v > 0).all() and v.max() / v.min() >= 3:  # log-like ticks: 3%, 5%, 10%, 1.5%
            return [f"{x:.3g}%" for x in v]
        steps = np.diff(np.sort(v))
        step = float(steps[steps > 0].min()) if (steps > 0).any() else 1.0
        decimals = 0 if step >= 1 else min(3, math.ceil(-math.log10(step) - 1e-9))
        return [f"{x:.{decimals}f}%" for x in v]

    def __call__(self, x, pos=None):
        return f"{100 * x:.3g}%"


def format_y(ax, metric: str, label: str | None = None) -> None:
    """Label the y axis; errors (fractions) get percent ticks, also on a log axis.

    Call after the axis scale is set: setting a scale resets the tick formatters.
    """
    log = ax.get_yscale() == "log"
    if label is None:
        label = axis_label(metric)
    if not is_error(metric):
        ax.set_ylabel(label)
        low, high = ax.get_ylim()
        if log and 0 < low and high / low < 100:  # within two decades: plain numbers, not 2×10⁰
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        return
    ax.set_ylabel(label)
    if log:
        low, high = ax.get_ylim()
        narrow = 0 < low and high / low < 10  # within a decade: label 3%, 4%, 5%, 7%, 10%
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(Percent())


def format_x(ax, x: str) -> None:
    """Label the x axis in words; tokens in engineering notation (``1.5M``), so the axis carries no ``1e6`` offset."""
    ax.set_xlabel(axis_label(x))
    if x == "tokens":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def log_if_wide(ax, axis: str, data, ratio: float = 20.0) -> None:
    """Log scale when the values are positive and span more than ``ratio``; symlog
    (linear below the smallest positive value) when they also include zero, as WD grids do."""
    x = finite_values(data)
    positive = x[x > 0]
    if len(positive) == 0 or (x < 0).any() or positive.max() / positive.min() <= ratio:
        return
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    if (x == 0).any():
        set_scale("symlog", linthresh=float(positive.min()), linscale=0.5)
    else:
        set_scale("log")


def lr_axis(ax, data) -> None:
    """Learning rates on a log axis whenever they are positive and not all equal, ticked
    at the grid's own values when there are few (0.003, 0.01, … rather than 10⁻²)."""
    x = finite_values(data)
    if len(x) and (x > 0).all() and x.max() > x.min():
        ax.set_xscale("log")
        grid = np.unique(x)
        if len(grid) <= 10:
            ax.set_xticks(grid, [fmt(float(v)) for v in grid])
            ax.xaxis.set_minor_formatter(NullFormatter())


def set_limits(ax, low: float, high: float, *, log: bool, floor: float | None = None) -> None:
    """y limits from the data with a margin (multiplicative on a log axis), never below ``floor``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return
    if log:
        low, high = low / 1.15, high * 1.15
    else:
        pad = 0.08 * (high - low) if high > low else 0.05 * max(abs(high), 1e-12)
        low, high = low - pad, high + pad
    if floor is not None:
        low = max(low, floor)
    ax.set_ylim(low, high)


def clip_value(ax, data, log: bool = False) -> float:
    """A y value just above the plotted data, where diverged trials are drawn."""
    y = finite_values(data)
    if log:
        y = y[y > 0]
    if len(y) == 0:
        return 1.0
    top, bottom = float(y.max()), float(y.min())
    if log:
        return top * 1.3
    return top + 0.12 * (top - bottom) if top > bottom else top + 0.1 * max(abs(top), 1e-12)


def mark_diverged(ax, xs, ys, clip: float, note: str = "", label: str | None = None) -> None:
    """Red X markers at (x, min(y, clip)) for diverged trials; NaN y goes to the clip value."""
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    if len(xs) == 0:
        return
    ys = np.where(np.isfinite(ys), np.minimum(ys, clip), clip)
    ax.plot(xs, ys, label=label or note or "diverged (last finite value, clipped to the top)",
            gid="diverged:" + (note or "trials"), **DIVERGED)
    low, high = ax.get_ylim()
    top = clip * 1.2 if ax.get_yscale() == "log" else clip + 0.06 * (clip - low)
    if top > high:
        ax.set_ylim(low, top)


def left_out_note(frame: pd.DataFrame) -> str:
    if "status" not in frame:
        return ""
    per_trial = frame.drop_duplicates("trial_id") if "trial_id" in frame else frame
    counts = per_trial["status"].astype(str)[lambda s: ~s.isin(("finished", "diverged"))].value_counts().sort_index()
    return "" if counts.empty else " [" + ", ".join(f"{n} {s}" for s, n in counts.items()) + " left out]"


def finished_values(curves: pd.DataFrame, metric: str) -> pd.Series:
    """Values of ``metric`` from finished trials (what axis limits and clip values are based on)."""
    if metric not in curves:
        return pd.Series(dtype=float)
    if "status" not in curves:
        return curves[metric]
    done = curves.loc[curves["status"].astype(str) == "finished", metric]
    return done if has_values(done.to_frame(), metric) else curves[metric]


def add_legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc=kw.pop("loc", "best"), **kw)


def finish_axes(ax, x: str, y: str, title: str) -> None:
    """Axes of one panel of curves: x and y labelled in words, a wrapped title, a grid, a legend."""
    format_x(ax, x)
    format_y(ax, y)
    axes_title(ax, title, fontsize=10)
    ax.grid(alpha=0.3)
    add_legend(ax)


def figure_legend(fig, axes, extra: Sequence[tuple] = (), title: str | None = None) -> None:
    """One legend for the whole figure, outside the axes on the right: every label once."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_"):
                handles.setdefault(label, handle)
    for handle, label in extra:
        handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=7,
                   title=title, title_fontsize=7, frameon=False)


def default_by(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in varied_axes(frame) if c not in {column(e) for e in exclude}]


def split_panels(frame: pd.DataFrame, by: Sequence[str], panel: str = "weight_decay"):
    """(panel column or None, its values, the other axes): one panel per weight decay when
    it varies (2..MAX_PANELS values) beside another axis, so each panel's colours are that axis."""
    pcol = column(panel)
    if pcol in by and len(by) >= 2 and 2 <= frame[pcol].nunique() <= MAX_PANELS:
        return pcol, values(frame, panel), [b for b in by if b != pcol]
    return None, [None], list(by)


def colors_and_styles(frame: pd.DataFrame, rest: Sequence[str]) -> tuple[dict, dict]:
    """Colour by the first of ``rest`` (sequential when numeric), line style by the others."""
    if not rest:
        return {None: line_colors(1)[0]}, {(): "-"}
    first = rest[0]
    firsts = values(frame, first)
    numeric = pd.api.types.is_numeric_dtype(frame[first]) and not pd.api.types.is_bool_dtype(frame[first])
    colors = dict(zip(firsts, line_colors(len(firsts), sequential=numeric)))
    others = list(dict.fromkeys(frame[list(rest[1:])].drop_duplicates().itertuples(index=False, name=None))) if len(rest) > 1 else [()]
    styles = dict(zip(others, LINESTYLES * (len(others) // len(LINESTYLES) + 1)))
    return colors, styles


def panel_rows(frame: pd.DataFrame, pcol: str | None, p) -> pd.DataFrame:
    if pcol is None or p is None:
        return frame
    return frame[np.isclose(frame[pcol].astype(float), float(p))] if pd.api.types.is_numeric_dtype(frame[pcol]) \
        else frame[frame[pcol].astype(str) == str(p)]


def draw_spread_curves(ax, spread: pd.DataFrame, x: str, by: Sequence[str], rest: Sequence[str], colors: dict,
                        styles: dict, *, gid_prefix: str = "data", linestyle=None, band: bool = True,
                        marker: str | None = None, label_suffix: str = "") -> None:
    """One seed-mean line per group (colour by ``rest[0]``), with the min–max band over seeds."""
    grouped = spread.groupby(list(by), observed=True, sort=True) if by else [((), spread)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        full = dict(zip(by, key))
        rest_key = tuple(full[c] for c in rest)
        part = part.sort_values(x)
        color = colors.get(rest_key[0] if rest else None)
        style = linestyle or styles.get(tuple(rest_key[1:]), "-")
        seeds = int(part["n"].max()) if len(part) else 0
        label = (group_label(rest, rest_key) if rest else "all") + label_suffix
        xs = part[x].to_numpy(dtype=float)
        ax.plot(xs, part["mean"].to_numpy(dtype=float), color=color, linestyle=style, linewidth=1.4,
                marker=marker, markersize=4, label=label, gid=f"{gid_prefix}:{group_label(by, key)}")
        if band and seeds > 1:
            ax.fill_between(xs, part["min"].to_numpy(dtype=float), part["max"].to_numpy(dtype=float),
                            color=color, alpha=0.15, linewidth=0, gid=f"band:{group_label(by, key)}")


def mark_drops(ax, curves: pd.DataFrame, x: str, label: bool = True) -> None:
    for i, drop in enumerate(lr_drops(curves, x)):
        ax.axvline(drop, color="grey", linestyle=":", linewidth=1.2, zorder=1,
                   label=f"LR decay (after {x} {drop:g})" if label and i == 0 else None, gid=f"lr_drop:{drop:g}")


def seeds_note(counts, what: str = "seeds") -> str:
    """``counts``: the seeds behind each mean (``seed_span``)."""
    return (f"mean of {seed_span(counts)} {what}, band/bars = min–max over {what}"
            if max(counts, default=0) > 1 else "one seed")


def seed_span(counts) -> str:
    """How many seeds the means are over: "4", or "3–5" where grid points (or reports) have
    different numbers (an uneven grid; seeds that diverged)."""
    counts = [int(c) for c in counts if int(c) > 0]
    if not counts:
        return "0"
    return str(max(counts)) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
