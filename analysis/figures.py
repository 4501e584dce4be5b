"""Figures drawn from a study's DataFrames (matplotlib ``Figure`` objects, no pyplot state).

Each function takes DataFrames (``finals`` / ``curves`` / ``trials`` from
``analysis.load``) and returns a ``matplotlib.figure.Figure``. The plotted data can be
checked: every data line has a ``gid`` starting with ``data:`` (``data:<metric>:`` in
figures with a row per metric) and a label, and its ``get_xydata()`` is the DataFrame
values it was drawn from (seed means where seeds exist); error bars are collections with
a ``spread:`` gid. The seed spread is drawn as the range over seeds (min–max error bars on final
values, a shaded band on curves): with 2–3 seeds a t-interval is wider than the data
and says nothing a reader can see, while the range is the data themselves and stays
inside the metric's valid range (an error is never below 0).

Readability rules: axes are labelled in words from one map (``LABELS``, through
``axis_label()``: ``val_loss`` → "validation loss (nats)"); errors are shown in percent; learning
rates on a log axis; axis limits come from the data; every line colour has a contrast of at
least ``MIN_CONTRAST`` against the white axes (``legible()``); a figure with many curves splits them into one panel per
weight decay (colour = LR) and puts the legend outside the axes. Diverged trials are
never dropped: they get a red ``X`` (``gid`` ``diverged:...``) at their last finite
value clipped to the top of the axes, and a legend entry says so. Trials that failed
or were stopped are counted in the title when a figure leaves them out.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import EngFormatter, Formatter, FuncFormatter, LogLocator, NullFormatter

from analysis.load import CONFIG, SEED, column, finite_points, fmt, has_values, values, varied_axes, x_column
from analysis.verdicts import final_pairs, find_crossing

DIVERGED = dict(marker="X", color="crimson", linestyle="none", markersize=9, zorder=6,
                markeredgecolor="black", markeredgewidth=0.6)
CROSSING = dict(marker="o", markersize=10, markerfacecolor="none", markeredgecolor="black",
                markeredgewidth=1.6, linestyle="none", zorder=7)
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
MAX_PANELS = 6  # weight decays drawn as side-by-side panels; more go on one axes
LOG_RATIO = 4.0  # an error axis turns logarithmic when max/min exceeds this
HEATMAP_LOG_RATIO = 2.5  # a heat map's colour scale, likewise: one bad corner must not wash out the rest
MIN_CONTRAST = 3.0  # WCAG 2.1 non-text contrast (1.4.11) of a line against the white axes

# Axis and metric names in words, with their unit: one map for every figure (and the HTML report).
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
    return f"{words} (%)" if _is_error(name) else words


def _words(name: str) -> str:
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


# ------------------------------------------------------------------ helpers

def _figure(nrows: int = 1, ncols: int = 1, width: float = 5.6, height: float = 4.0, **kw):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _wrap(text: str, fig) -> str:
    """Wrap a title to the figure's width (about 14 characters per inch at 10 pt)."""
    return textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 14)))


def _suptitle(fig, text: str, fontsize: float = 11) -> None:
    fig.suptitle(_wrap(text, fig), fontsize=fontsize)


def _title(ax, text: str, fontsize: float = 10) -> None:
    """An axes title wrapped to the axes' share of the figure width."""
    fig = ax.get_figure()
    columns = ax.get_subplotspec().get_gridspec().ncols if ax.get_subplotspec() else 1
    ax.set_title(textwrap.fill(text, width=max(30, int(fig.get_figwidth() / columns * 11.5))), fontsize=fontsize)


def _name(col: str) -> str:
    return col.removeprefix(CONFIG)


def _label(cols: Sequence[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{_name(c)}={fmt(k)}" for c, k in zip(cols, key)) or "all"


def _colors(n: int, sequential: bool = False) -> list:
    from matplotlib import colormaps

    if sequential:  # dark to light; the light end is darkened to stay legible on white
        cmap = colormaps["viridis"]
        return [legible(cmap(0.9 * i / max(n - 1, 1))) for i in range(n)]
    cmap = colormaps["tab10"]
    return [legible(cmap(i % 10)) for i in range(n)]


def _finite_values(values) -> np.ndarray:
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return x[np.isfinite(x)]


def _is_error(metric: str) -> bool:
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


def _format_y(ax, metric: str, label: str | None = None) -> None:
    """Label the y axis; errors (fractions) get percent ticks, also on a log axis.

    Call after the axis scale is set: setting a scale resets the tick formatters.
    """
    log = ax.get_yscale() == "log"
    if label is None:
        label = axis_label(metric)
    if not _is_error(metric):
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


def _format_x(ax, x: str) -> None:
    """Label the x axis in words; tokens in engineering notation (``1.5M``), so the axis carries no ``1e6`` offset."""
    ax.set_xlabel(axis_label(x))
    if x == "tokens":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def _log_if_wide(ax, axis: str, data, ratio: float = 20.0) -> None:
    """Log scale when the values are positive and span more than ``ratio``; symlog
    (linear below the smallest positive value) when they also include zero, as WD grids do."""
    x = _finite_values(data)
    positive = x[x > 0]
    if len(positive) == 0 or (x < 0).any() or positive.max() / positive.min() <= ratio:
        return
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    if (x == 0).any():
        set_scale("symlog", linthresh=float(positive.min()), linscale=0.5)
    else:
        set_scale("log")


def _lr_axis(ax, data) -> None:
    """Learning rates on a log axis whenever they are positive and not all equal, ticked
    at the grid's own values when there are few (0.003, 0.01, … rather than 10⁻²)."""
    x = _finite_values(data)
    if len(x) and (x > 0).all() and x.max() > x.min():
        ax.set_xscale("log")
        grid = np.unique(x)
        if len(grid) <= 10:
            ax.set_xticks(grid, [fmt(float(v)) for v in grid])
            ax.xaxis.set_minor_formatter(NullFormatter())


def _limits(ax, low: float, high: float, *, log: bool, floor: float | None = None) -> None:
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


def _clip(ax, data, log: bool = False) -> float:
    """A y value just above the plotted data, where diverged trials are drawn."""
    y = _finite_values(data)
    if log:
        y = y[y > 0]
    if len(y) == 0:
        return 1.0
    top, bottom = float(y.max()), float(y.min())
    if log:
        return top * 1.3
    return top + 0.12 * (top - bottom) if top > bottom else top + 0.1 * max(abs(top), 1e-12)


def _mark_diverged(ax, xs, ys, clip: float, note: str = "", label: str | None = None) -> None:
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


def _figure_legend(fig, axes, extra: Sequence[tuple] = (), title: str | None = None) -> None:
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


def _keep_order(out: pd.DataFrame, frame: pd.DataFrame, groups: Sequence[str]) -> pd.DataFrame:
    for g in groups:  # keep the categorical order of string axes
        if g in frame and isinstance(frame[g].dtype, pd.CategoricalDtype):
            out[g] = pd.Categorical(out[g], categories=frame[g].cat.categories, ordered=frame[g].cat.ordered)
    return out


def seed_spread(frame: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``min``, ``max`` and ``n`` of ``value`` over finished
    trials with a finite value, and ``n_diverged``/``n_trials`` (diverged trials are left
    out of the statistics and counted)."""
    by = list(by)
    status = frame["status"].astype(str) if "status" in frame else pd.Series("finished", index=frame.index)
    vals = pd.to_numeric(frame[value], errors="coerce") if value in frame else pd.Series(np.nan, index=frame.index)
    data = frame[by].copy()
    data["_status"] = status.to_numpy()
    data["_v"] = vals.to_numpy(dtype=float, na_value=np.nan)
    data["_ok"] = (data["_status"] == "finished") & np.isfinite(data["_v"])
    rows = []
    grouped = data.groupby(by, observed=True, sort=True, dropna=False) if by else [((), data)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        ok = part.loc[part["_ok"], "_v"]
        rows.append({**dict(zip(by, key)), "mean": float(ok.mean()) if len(ok) else math.nan,
                     "min": float(ok.min()) if len(ok) else math.nan, "max": float(ok.max()) if len(ok) else math.nan,
                     "n": len(ok), "n_diverged": int((part["_status"] == "diverged").sum()), "n_trials": len(part)})
    out = pd.DataFrame(rows, columns=[*by, "mean", "min", "max", "n", "n_diverged", "n_trials"])
    return _keep_order(out, frame, by)


def curve_spread(curves: pd.DataFrame, y: str, x: str, by: Sequence[str],
                 statuses: Sequence[str] = ("finished",)) -> pd.DataFrame:
    """Per group of ``by`` and value of ``x``: ``mean``, ``min``, ``max`` and ``n`` of ``y``
    over the seeds (trials of the given statuses with a finite value)."""
    by = list(by)
    data = finite_points(curves, y, x, by, statuses)
    if data is None:
        return pd.DataFrame(columns=[*by, x, "mean", "min", "max", "n"])
    out = (data.groupby([*by, x], observed=True, sort=True)[y].agg(["mean", "min", "max", "count"])
           .reset_index().rename(columns={"count": "n"}))
    return _keep_order(out, curves, by)


def _default_by(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in varied_axes(frame) if c not in {column(e) for e in exclude}]


def _split_panels(frame: pd.DataFrame, by: Sequence[str], panel: str = "weight_decay"):
    """(panel column or None, its values, the other axes): one panel per weight decay when
    it varies (2..MAX_PANELS values) beside another axis, so each panel's colours are that axis."""
    pcol = column(panel)
    if pcol in by and len(by) >= 2 and 2 <= frame[pcol].nunique() <= MAX_PANELS:
        return pcol, values(frame, panel), [b for b in by if b != pcol]
    return None, [None], list(by)


def _palette(frame: pd.DataFrame, rest: Sequence[str]) -> tuple[dict, dict]:
    """Colour by the first of ``rest`` (sequential when numeric), line style by the others."""
    if not rest:
        return {None: _colors(1)[0]}, {(): "-"}
    first = rest[0]
    firsts = values(frame, first)
    numeric = pd.api.types.is_numeric_dtype(frame[first]) and not pd.api.types.is_bool_dtype(frame[first])
    colors = dict(zip(firsts, _colors(len(firsts), sequential=numeric)))
    others = list(dict.fromkeys(frame[list(rest[1:])].drop_duplicates().itertuples(index=False, name=None))) if len(rest) > 1 else [()]
    styles = dict(zip(others, LINESTYLES * (len(others) // len(LINESTYLES) + 1)))
    return colors, styles


def _panel_rows(frame: pd.DataFrame, pcol: str | None, p) -> pd.DataFrame:
    if pcol is None or p is None:
        return frame
    return frame[np.isclose(frame[pcol].astype(float), float(p))] if pd.api.types.is_numeric_dtype(frame[pcol]) \
        else frame[frame[pcol].astype(str) == str(p)]


def _draw_spread_curves(ax, spread: pd.DataFrame, x: str, by: Sequence[str], rest: Sequence[str], colors: dict,
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
        label = (_label(rest, rest_key) if rest else "all") + label_suffix
        xs = part[x].to_numpy(dtype=float)
        ax.plot(xs, part["mean"].to_numpy(dtype=float), color=color, linestyle=style, linewidth=1.4,
                marker=marker, markersize=4, label=label, gid=f"{gid_prefix}:{_label(by, key)}")
        if band and seeds > 1:
            ax.fill_between(xs, part["min"].to_numpy(dtype=float), part["max"].to_numpy(dtype=float),
                            color=color, alpha=0.15, linewidth=0, gid=f"band:{_label(by, key)}")


def _lr_drops(curves: pd.DataFrame, x: str) -> list[float]:
    """Where the reported LR steps down: the last report at the peak LR before a report
    at less than half of it. A cosine, which falls gradually, has no such step."""
    if not has_values(curves, "lr") or x == "lr" or x not in curves:
        return []
    drops = set()
    for _, part in curves.dropna(subset=["lr", x]).groupby("trial_id", sort=False):
        part = part.sort_values(x)
        lr = part["lr"].to_numpy(dtype=float)
        if len(lr) < 2:
            continue
        peak = lr.max()
        step = np.flatnonzero((lr[:-1] >= 0.99 * peak) & (lr[1:] < 0.5 * lr[:-1]))
        if len(step):
            drops.add(float(part[x].iloc[step[0]]))
    return sorted(drops)


def _mark_drops(ax, curves: pd.DataFrame, x: str, label: bool = True) -> None:
    for i, drop in enumerate(_lr_drops(curves, x)):
        ax.axvline(drop, color="grey", linestyle=":", linewidth=1.2, zorder=1,
                   label=f"LR decay (after {x} {drop:g})" if label and i == 0 else None, gid=f"lr_drop:{drop:g}")


def _seeds_note(n: int, what: str = "seeds") -> str:
    return f"mean of {n} {what}, band/bars = min–max over {what}" if n > 1 else "one seed"


# ------------------------------------------------------------------ vision: U-shape family

def ushape(finals: pd.DataFrame, value: str, *, x: str = "lr", line: str = "weight_decay",
           title: str | None = None) -> Figure:
    """Final ``value`` vs LR, one line per weight decay: the seed mean, with min–max error
    bars over the seeds; log LR axis; the y axis turns logarithmic when the values span
    more than ``LOG_RATIO``; diverged grid points are red X markers above the data."""
    xcol, lcol = column(x), column(line)
    by = [lcol, xcol] if lcol in finals else [xcol]
    agg = seed_spread(finals, value, by)
    fig, axs = _figure(width=6.4, height=4.4)
    ax = axs[0, 0]
    groups = agg.groupby(lcol, observed=True, sort=True) if lcol in agg else [(None, agg)]
    colors = _colors(len(values(agg, line)) if lcol in agg else 1, sequential=True)
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
    _lr_axis(ax, agg[xcol])
    lo, hi = agg["min"].min(), agg["max"].max()
    log = bool(np.isfinite(lo) and lo > 0 and hi / lo > LOG_RATIO)
    if log:
        ax.set_yscale("log")
    _limits(ax, lo, hi, log=log, floor=0.0 if (_is_error(value) and not log) else None)
    div = agg[agg["n_diverged"] > 0]
    if len(div):
        clip = _clip(ax, agg["max"], log=log)
        _mark_diverged(ax, div[xcol].to_numpy(dtype=float), np.full(len(div), np.nan), clip,
                       label="seeds diverged (k/n), drawn above the data")
        for _, row in div.iterrows():
            ax.annotate(f"{int(row['n_diverged'])}/{int(row['n_trials'])}", (row[xcol], clip), textcoords="offset points",
                        xytext=(6, -3), fontsize=7, color="crimson")
    seeds = int(agg["n"].max()) if len(agg) else 0
    ax.set_xlabel(axis_label(x))
    _format_y(ax, value)
    _title(ax, (title or f"{_words(value)} vs {_words(x)}") + f" ({_seeds_note(seeds).replace('band/', '')})" + _left_out_note(finals),
           fontsize=10)
    ax.grid(alpha=0.3, which="major")
    _legend(ax)
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
    fig, axs = _figure(width=1.25 * len(col_values) + 3.4, height=0.55 * len(row_values) + 2.2)
    ax = axs[0, 0]
    finite = grid[np.isfinite(grid)]
    norm = None
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > HEATMAP_LOG_RATIO:
        norm = LogNorm(vmin=float(finite.min()), vmax=float(finite.max()))
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
    image.set_gid("data:heatmap")
    cbar = fig.colorbar(image, ax=ax)
    cbar.set_label(axis_label(value))
    if _is_error(value):
        if norm is not None:
            cbar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
            cbar.ax.yaxis.set_minor_formatter(NullFormatter())
        cbar.ax.yaxis.set_major_formatter(Percent())
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            text = "" if np.isnan(grid[i, j]) else (f"{100 * grid[i, j]:.2f}" if _is_error(value) else f"{grid[i, j]:.4g}")
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
    unit = " in %" if _is_error(value) else ""
    _title(ax, (title or f"{_words(value)}{unit}: {_words(rows)} × {_words(cols)}") + (f", mean of {seeds} seeds" if seeds > 1 else "")
                 + _left_out_note(finals), fontsize=10)
    return fig


def finetune_branches(curves: pd.DataFrame, value: str = "finetune_test_error", *, x: str | None = None,
                      by: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """The Figs. 2–3 protocol: the test error of the fine-tuned copies vs the epoch they
    were branched from, one panel per weight decay, colour = LR; seed mean with min–max
    error bars."""
    x = x or ("epoch" if has_values(curves, "epoch") else x_column(curves))
    by = [column(b) for b in by] if by is not None else _default_by(curves)
    spread = curve_spread(curves, value, x, by)
    pcol, panels, rest = _split_panels(curves, by)
    colors, styles = _palette(curves, rest)
    fig, axs = _figure(1, len(panels), width=4.6, height=4.0, sharey=True)
    lo, hi = spread["min"].min(), spread["max"].max()
    log = bool(np.isfinite(lo) and lo > 0 and hi / lo > LOG_RATIO)
    for ax, p in zip(axs[0], panels):
        part = _panel_rows(spread, pcol, p)
        _draw_spread_curves(ax, part, x, by, rest, colors, styles, band=False, marker="o")
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
                bars.lines[2][0].set_gid(f"spread:{_label(by, key)}")
        if log:
            ax.set_yscale("log")
        ax.set_title(f"WD {fmt(p)}" if p is not None else value, fontsize=10)
        branch_x = sorted(spread[x].astype(float).unique())
        if 0 < len(branch_x) <= 12:
            ax.set_xticks(branch_x, [fmt(v) for v in branch_x])
        ax.set_xlabel(f"{axis_label(x)} the copy branched from")
        ax.grid(alpha=0.3)
    _limits(axs[0, 0], lo, hi, log=log, floor=0.0 if (_is_error(value) and not log) else None)
    _format_y(axs[0, 0], value)
    for ax in axs[0, 1:]:
        _format_y(ax, value, label="")
    seeds = int(spread["n"].max()) if len(spread) else 0
    _figure_legend(fig, axs[0])
    _suptitle(fig, (title or f"Fine-tuned copies (Figs. 2–3 protocol): {_words(value)} vs the {_words(x)} each copy branched from")
              + f" ({_seeds_note(seeds).replace('band/', '')})" + _left_out_note(curves), fontsize=11)
    return fig


def _curve_grid(curves: pd.DataFrame, rows: Sequence[tuple[str, str, bool]], *, x: str | None,
                by: Sequence[str] | None, title: str) -> Figure:
    """A row of panels per metric, a column per weight decay; colour = the other axis
    (LR for vision), seed mean with a min–max band; one legend outside on the right."""
    present = [(m, label, log) for m, label, log in rows if has_values(curves, m)]
    if not present:
        raise ValueError(f"none of {', '.join(m for m, _, _ in rows)} is reported in these curves")
    x = x or x_column(curves)
    by = [column(b) for b in by] if by is not None else _default_by(curves)
    pcol, panels, rest = _split_panels(curves, by)
    colors, styles = _palette(curves, rest)
    n_lines = len(curves.drop_duplicates([*rest]).index) if rest else 1
    fig, axs = _figure(len(present), len(panels), width=4.3 if len(panels) > 1 else 6.4, height=3.5,
                       sharex=True, sharey="row")
    for r, (metric, label, log) in enumerate(present):
        spread = curve_spread(curves, metric, x, by)
        few = spread.groupby(list(by), observed=True).size().max() <= 6 if len(spread) and by else len(spread) <= 6
        for c, p in enumerate(panels):
            ax = axs[r, c]
            _draw_spread_curves(ax, _panel_rows(spread, pcol, p), x, by, rest, colors, styles,
                                gid_prefix="data" if len(present) == 1 else f"data:{metric}",
                                band=n_lines <= 6, marker="o" if few else None)
            if log:
                ax.set_yscale("log")
            else:
                _log_if_wide(ax, "y", _finished(curves, metric))
            panel_curves = _panel_rows(curves, pcol, p)
            _mark_drops(ax, panel_curves, x)
            ends = _diverged_ends(panel_curves, x, metric)
            if len(ends):
                _mark_diverged(ax, ends["x"], ends["y"], _clip(ax, _finished(curves, metric), log=ax.get_yscale() == "log"))
            if r == 0:
                ax.set_title(f"WD {fmt(p)}" if p is not None else "", fontsize=10)
            if r == len(present) - 1:
                _format_x(ax, x)
            _format_y(ax, metric, label=label if c == 0 else "")
            ax.grid(alpha=0.3, which="major")
    _figure_legend(fig, axs.ravel())
    seeds = int(curve_spread(curves, present[0][0], x, by)["n"].max())
    _suptitle(fig, f"{title} ({_seeds_note(seeds)})" + _left_out_note(curves), fontsize=11)
    return fig


def training_curves(curves: pd.DataFrame, y: str = "train_loss", *, x: str | None = None,
                    by: Sequence[str] | None = None, log: bool = True, title: str | None = None) -> Figure:
    """``y`` vs ``x`` per grid point (mean over seeds), one panel per weight decay; a dotted
    line where the LR steps down.

    With a constant large LR then a drop, the curves show where weight decay holds the
    training loss at a level set by LR × WD before the decay.
    """
    finished = _finite_values(_finished(curves, y))
    log = log and len(finished) > 0 and bool((finished > 0).all())
    return _curve_grid(curves, [(y, axis_label(y), log)], x=x, by=by, title=title or f"{_words(y)} vs {_words(x or x_column(curves))}")


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
    by = [column(b) for b in by] if by is not None else _default_by(curves)
    pcol, panels, rest = _split_panels(curves, by)
    colors, _ = _palette(curves, rest[:1])
    if len(rest) > 1:  # colour by every other axis together: the dashes mean EMA here
        combos = list(dict.fromkeys(curves[rest].drop_duplicates().sort_values(rest).itertuples(index=False, name=None)))
        colors = dict(zip(combos, _colors(len(combos))))
    spreads = {m: curve_spread(curves, m, x, by) for m in (plain, ema)}
    fig, axs = _figure(1, len(panels), width=4.6 if len(panels) > 1 else 6.4, height=4.0, sharey=True)
    values_all = pd.concat([_finished(curves, plain), _finished(curves, ema)])
    finite = _finite_values(values_all)
    log = bool(len(finite) and finite.min() > 0 and finite.max() / finite.min() > LOG_RATIO)
    for ax, p in zip(axs[0], panels):
        for metric, style in ((plain, "-"), (ema, "--")):
            part = _panel_rows(spreads[metric], pcol, p)
            grouped = part.groupby(list(by), observed=True, sort=True) if by else [((), part)]
            for key, g in grouped:
                key = key if isinstance(key, tuple) else (key,)
                full = dict(zip(by, key))
                rest_key = tuple(full[c] for c in rest)
                color = colors.get(rest_key if len(rest) > 1 else (rest_key[0] if rest else None), "black")
                g = g.sort_values(x)
                ax.plot(g[x].to_numpy(dtype=float), g["mean"].to_numpy(dtype=float), color=color, linestyle=style,
                        linewidth=1.3, label=_label(rest, rest_key) if style == "-" else None,
                        gid=f"data:{'plain' if metric == plain else 'ema'}:{_label(by, key)}")
        if log:
            ax.set_yscale("log")
        ax.set_title(f"WD {fmt(p)}" if p is not None else "", fontsize=10)
        _format_x(ax, x)
        ax.grid(alpha=0.3, which="major")
    _format_y(axs[0, 0], plain)
    for ax in axs[0, 1:]:
        _format_y(ax, plain, label="")
    style_keys = [(Line2D([], [], color="black", linestyle="-"), f"solid: {plain}"),
                  (Line2D([], [], color="black", linestyle="--"), f"dashed: {ema} (EMA of the weights)")]
    _figure_legend(fig, axs[0], extra=style_keys)
    seeds = int(spreads[plain]["n"].max()) if len(spreads[plain]) else 0
    _suptitle(fig, (title or f"{_words(plain)} (solid) vs {_words(ema)} (dashed)")
              + (f" (mean of {seeds} seeds)" if seeds > 1 else "") + _left_out_note(curves), fontsize=11)
    return fig


# ------------------------------------------------------------------ LM: Chinchilla

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
    fig, axs = _figure(2, len(schedules), width=5.6, height=3.6)
    wds = values(curves, "weight_decay") if wd in curves else [None]
    palette = dict(zip(wds, _colors(len(wds), sequential=True)))
    finished = curves[curves["status"].astype(str) == "finished"] if "status" in curves else curves
    seeds_max = 0
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
            ctx_label = _label(others, ctx) if others else ""
            base = ctx_rows[ctx_rows[wd] == 0].set_index(x)["mean"].sort_index() if wd in ctx_rows else None
            base_seeds = _per_seed(ctx_done[ctx_done[wd] == 0], x, metric) if wd in ctx_done else None
            for w in wds:
                rows = ctx_rows[ctx_rows[wd] == w].sort_values(x) if wd in ctx_rows else ctx_rows.sort_values(x)
                if rows.empty:
                    continue
                name = ("Adam (WD 0)" if w == 0 else f"AdamW WD {fmt(w)}") + (f", {ctx_label}" if ctx_label else "")
                seeds = int(rows["n"].max())
                seeds_max = max(seeds_max, seeds)
                top.plot(rows[x].to_numpy(dtype=float), rows["mean"].to_numpy(dtype=float), color=palette[w],
                         linestyle=style, label=name, gid=f"data:{_label([wd, *others], (w, *ctx))}")
                if base is None or w == 0 or base.empty:
                    continue
                arm = rows.set_index(x)["mean"]
                common = arm.index.intersection(base.index)
                d = (arm.loc[common] - base.loc[common]).sort_index()
                gid = _label([wd, *others], (w, *ctx))
                arm_seeds = _per_seed(ctx_done[np.isclose(ctx_done[wd].astype(float), float(w))], x, metric)
                if base_seeds is not None and arm_seeds.shape[1] > 1:
                    paired = (arm_seeds - base_seeds).dropna(how="all")
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
        ends = _diverged_ends(sub, x, metric)
        if len(ends):
            _mark_diverged(top, ends["x"], ends["y"], top.get_ylim()[1])
        bottom.axhline(0.0, color="black", linewidth=0.8)
        top.set_title(f"{schedule} schedule" if schedule is not None else metric, fontsize=10)
        top.set_ylabel(axis_label(metric))
        bottom.set_ylabel(f"{axis_label(metric)}\nWD − WD 0")
        _format_x(top, x)
        _format_x(bottom, x)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        _legend(top, loc="upper right")
        if any(line.get_gid() and line.get_gid().startswith("crossing") for line in bottom.lines):
            bottom.plot([], [], label="crossing (WD ends lower)", **CROSSING)
        _legend(bottom)
    where = " and ".join(f"{s}" for s in schedules if s is not None) or "one schedule"
    _suptitle(fig, (title or f"AdamW vs Adam: {_words(metric)} vs {_words(x)} ({where} LR)")
              + (f", mean of {seeds_max} seeds" if seeds_max > 1 else "") + _left_out_note(curves), fontsize=11)
    return fig


def _per_seed(rows: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    """``metric`` by ``x`` (index) and seed (columns) for the trials in ``rows``."""
    if rows.empty or metric not in rows:
        return pd.DataFrame()
    seed = rows[SEED] if SEED in rows else rows["trial_id"]
    frame = pd.DataFrame({"x": rows[x].to_numpy(dtype=float), "seed": seed.to_numpy(),
                          "v": pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)})
    frame = frame[np.isfinite(frame["v"])]
    return frame.pivot_table(index="x", columns="seed", values="v", aggfunc="last").sort_index()


def train_val_gap(curves: pd.DataFrame, *, epsilon: float | None = None, title: str | None = None) -> Figure:
    """Final val_loss − train_loss vs weight decay, one line per value of the other axes:
    the seed mean, with every seed's own gap as a small dot (the verdict needs each seed
    inside ±ε)."""
    ends = final_pairs(curves[curves["status"].astype(str) == "finished"] if "status" in curves else curves)
    ends = ends.assign(gap=ends["val_loss"].astype(float) - ends["train_loss"].astype(float))
    wd = column("weight_decay")
    others = [c for c in varied_axes(ends) if c != wd]
    by = [wd, *others] if wd in ends else others
    agg = seed_spread(ends, "gap", by)
    fig, axs = _figure(width=6.0, height=4.2)
    ax = axs[0, 0]
    grouped = list(agg.groupby(others, observed=True, sort=True)) if others else [((), agg)]
    wd_span = float(np.ptp(ends[wd].to_numpy(dtype=float))) if wd in ends and len(ends) else 0.0
    for i, (color, (key, part)) in enumerate(zip(_colors(64), grouped)):
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values(wd) if wd in part else part
        xs = part[wd].to_numpy(dtype=float) if wd in part else np.zeros(len(part))
        label = _label(others, key) if others else "final gap"
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
    _title(ax, title or "final train–validation gap vs weight decay"
                 + (f" (mean of {seeds} seeds; dots: each seed, shifted sideways per line)" if seeds > 1 else "")
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
    finite = _finite_values(_finished(curves, y))
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
            ax.set_title(name or _words(y), fontsize=10)
            _format_x(ax, x)
            ax.set_ylabel(axis_label(y))
            ax.grid(alpha=0.3)
            _legend(ax, ncols=2 if len(ax.lines) > 8 else 1)
    _suptitle(fig, title or f"{_words(y)} vs {_words(x)}: colour = weight decay, line style = seed; X = diverged" + _left_out_note(curves),
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
        ax.set_xlabel(axis_label(cols) if col_values != [None] else "")
        ax.set_ylabel(axis_label(rows) if row_values != [None] else "")
        ax.set_title(f"{panels} {p}" if p is not None else "all trials", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axs[0]), label="fraction diverged")
    _suptitle(fig, title or f"diverged trials / trials over {_words(rows)} × {_words(cols)}" + (f" × {_words(panels)}" if pcol in trials else "")
                 + " (f = failed, s = stopped, r = running)", fontsize=10)
    return fig


# ------------------------------------------------------------------ any study

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
    fig, axs = _figure(1, len(panels), width=4.6, height=3.9, sharey=True)
    seeds = int(agg["n"].max()) if len(agg) else 0
    drawn = []  # per panel: (axis, numeric, positions, values, best rows, diverged)
    for axis in panels:
        vals = values(finals, axis)
        numeric = pd.api.types.is_numeric_dtype(finals[axis]) and not pd.api.types.is_bool_dtype(finals[axis])
        positions = [float(v) for v in vals] if numeric else list(range(len(vals)))
        best, diverged = [], []
        for pos, v in zip(positions, vals):
            rows = agg[agg[axis] == v]
            ok = rows[rows["n"] > 0]
            if len(ok):
                row = ok.loc[ok["mean"].idxmin() if mode == "min" else ok["mean"].idxmax()]
                best.append((pos, float(row["mean"]), float(row["min"]), float(row["max"]), int(row["n"])))
            if int(rows["n_diverged"].sum()):
                diverged.append((pos, int(rows["n_diverged"].sum()), int(rows["n_trials"].sum())))
        drawn.append((axis, numeric, positions, vals, best, diverged))
    low = min((b[2] for *_, best, _ in drawn for b in best), default=math.nan)
    high = max((b[3] for *_, best, _ in drawn for b in best), default=math.nan)
    log = bool(np.isfinite(low) and low > 0 and high / low > LOG_RATIO)
    for ax, (axis, numeric, positions, vals, best, diverged) in zip(axs[0], drawn):
        xs = np.array([b[0] for b in best], dtype=float)
        ys = np.array([b[1] for b in best], dtype=float)
        ax.plot(xs, ys, marker="o", markersize=6, linestyle="-" if numeric else "none", color="tab:blue",
                label=f"best {axis_label(value)}", gid=f"data:{_name(axis)}")
        several = np.array([b[4] > 1 for b in best], dtype=bool)
        if several.any():
            lo = np.array([b[2] for b in best])[several]
            hi = np.array([b[3] for b in best])[several]
            bars = ax.errorbar(xs[several], ys[several], yerr=[np.maximum(ys[several] - lo, 0.0),
                                                               np.maximum(hi - ys[several], 0.0)],
                               fmt="none", ecolor="tab:blue", elinewidth=1.1, capsize=4)
            bars.lines[2][0].set_gid(f"spread:{_name(axis)}")
            bars.lines[2][0].set_label("min–max over the seeds of that grid point")
        if numeric and axis == column("lr"):
            _lr_axis(ax, positions)
        elif numeric:
            _log_if_wide(ax, "x", positions)
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
    _limits(axs[0, 0], low, high, log=log, floor=0.0 if (_is_error(value) and not log) else None)
    clip = _clip(axs[0, 0], [low, high], log=log)
    for ax, (axis, numeric, positions, vals, best, diverged) in zip(axs[0], drawn):
        if diverged:
            _mark_diverged(ax, [d[0] for d in diverged], np.full(len(diverged), np.nan), clip,
                           label="trials diverged (k/n), drawn above the data")
            for pos, k, n in diverged:
                ax.annotate(f"{k}/{n}", (pos, clip), textcoords="offset points", xytext=(5, -3), fontsize=7,
                            color="crimson")
    _format_y(axs[0, 0], value)
    for ax in axs[0, 1:]:
        _format_y(ax, value, label="")
    bars_handle = next((c for ax in axs[0] for c in ax.collections if (c.get_gid() or "").startswith("spread:")), None)
    _figure_legend(fig, axs[0], extra=[(bars_handle, bars_handle.get_label())] if bars_handle is not None else ())
    _suptitle(fig, title or (f"isolation: best {axis_label(value)} per value of each axis, {mode}imised over the "
                             "other axes, on one y scale"
                             + (f" (mean over {seeds} seeds first; bars: min–max over seeds)" if seeds > 1 else
                                " (one seed: no spread)") + _left_out_note(finals)),
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
    _format_x(ax, x)
    _format_y(ax, y)
    _title(ax, title or f"top {len(best)} of {len(finals)} trials by final {_words(value)} ({mode})", fontsize=10)
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
    _format_x(ax, shared_x)
    _format_y(ax, metric)
    _title(ax, title or f"{_words(metric)} of each study's best trial", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig
