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

Modules: ``style`` (labels, colours, markers, titles, legends and axes: the common look),
``vision`` (U-shape, heat map, fine-tuned branches, training curves, norms, Hessian, EMA),
``lm`` (Chinchilla curves, train–validation gap), ``runs`` (divergence curves, status map),
``grid`` (isolation, top-k, best per study), ``search`` (a random/Optuna search's progress).
The data they draw (seed means and spreads, paired differences, crossings) are prepared in
``analysis.load`` and ``analysis.verdicts``; the figure functions only draw.

Readability rules: axes are labelled in words from one map (``LABELS``, through
``axis_label()``: ``val_loss`` → "validation loss (nats)"); errors are shown in percent; learning
rates on a log axis; axis limits come from the data; every line colour has a contrast of at
least ``MIN_CONTRAST`` against the white axes (``legible()``); a figure with many curves splits them into one panel per
weight decay (colour = LR) and puts the legend outside the axes. Diverged trials are
never dropped: they get a red ``X`` (``gid`` ``diverged:...``) at their last finite
value clipped to the top of the axes, and a legend entry says so. Trials that failed
or were stopped are counted in the title when a figure leaves them out.
"""

from analysis.figures.grid import compare_best, isolation, top_k
from analysis.figures.lm import chinchilla, train_val_gap
from analysis.figures.runs import divergence_curves, status_map
from analysis.figures.search import best_per_point_figure, search_progress, search_trials
from analysis.figures.style import LABELS, MIN_CONTRAST, Percent, axis_label, contrast, legible
from analysis.figures.vision import (EMA_PAIRS, ema_pair, ema_vs_plain, finetune_branches, heatmap, hessian_trace,
                                     norms, training_curves, ushape)
from analysis.load import curve_spread, rank_trials, seed_spread

__all__ = ["compare_best", "isolation", "rank_trials", "top_k", "chinchilla", "train_val_gap", "divergence_curves",
           "status_map", "best_per_point_figure", "search_progress", "search_trials", "LABELS", "MIN_CONTRAST",
           "Percent", "axis_label", "contrast", "legible", "EMA_PAIRS", "ema_pair", "ema_vs_plain",
           "finetune_branches", "heatmap", "hessian_trace", "norms", "training_curves", "ushape", "curve_spread",
           "seed_spread"]
