"""Figures drawn from a study's DataFrames (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def trial_label(row: pd.Series, axes: list[str]) -> str:
    return ", ".join(f"{a}={row[f'config/{a}']}" for a in axes if f"config/{a}" in row)


def curves(study, y: str, x: str = "step", title: str | None = None):
    """One line per trial of ``y`` against ``x``; diverged trials end with a red cross."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = study.curves()
    if x not in data:
        x = "training_iteration"
    for trial_id, rows in data.groupby("trial_id", sort=True):
        rows = rows.dropna(subset=[y]) if y in rows else rows.iloc[0:0]
        if rows.empty:
            continue
        label = trial_label(rows.iloc[0], study.axes) or trial_id
        (line,) = ax.plot(rows[x], rows[y], label=label, gid=f"curve:{trial_id}")
        if rows.iloc[0]["status"] == "diverged":
            ax.plot(rows[x].iloc[-1], rows[y].iloc[-1], "x", color="red", markersize=9, gid=f"diverged:{trial_id}")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{study.name}: {y}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
