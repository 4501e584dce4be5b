"""The store of one study as pandas DataFrames (analysis only reads the store).

Three tables, all keyed by ``trial_id`` and carrying the config as ``config/<key>``
columns (the names Ray Tune gives them) and the trial's ``status``:

- ``Study.trials``: one row per trial (``trials.parquet``), config columns typed:
  numbers stay numbers, string axes become ordered categoricals in the spec's axis order,
  ``status`` a categorical in the store's status order.
- ``curves(trials, metrics)``: one row per report, the metric rows joined with config and status.
- ``finals(trials, metrics)``: one row per trial with the last reported value of every metric.

``select`` picks rows by axis values and status; ``aggregate_seeds`` and
``seed_mean_curves`` average over seeds with a Student-t interval (see ``analysis.stats``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

from analysis.stats import CONFIDENCE, t_interval
from study.store import STATUSES, StoreError, StudyStore

CONFIG = "config/"
SEED = CONFIG + "seed"
# x axes of a curve, most meaningful first: epochs for vision, tokens then steps for LMs
X_COLUMNS = ("epoch", "tokens", "step", "training_iteration")
# columns of trials.parquet that are neither config nor metrics
TRIAL_COLUMNS = ("trial_id", "status", "error", "started_at", "ended_at", "reports", "host", "node_ip",
                 "git_commit", "git_dirty", "versions", "driver_host")
# what Ray adds to every report; not a metric of the trainable
RAY_COLUMNS = ("training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "done")


def column(name: str) -> str:
    """``lr`` → ``config/lr``; ``config/...``, ``status`` and ``trial_id`` stay as they are."""
    if name.startswith(CONFIG) or name in ("status", "trial_id"):
        return name
    return CONFIG + name


def config_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(CONFIG)]


def varied_axes(frame: pd.DataFrame, *, include_seed: bool = False, derived: bool = False) -> list[str]:
    """Config columns that take more than one value in ``frame`` (``config/seed`` only if asked).

    Columns the frame marks as derived (``DERIVED``: config values an uneven grid's ``cases``
    set per grid point, such as the continuation's ``tail_steps`` per ``schedule``) are left
    out unless ``derived``: they are not axes of their own, and grouping or plotting by them
    would split or confound the axes that set them.
    """
    skip = () if derived else set(frame.attrs.get(DERIVED, ()))
    return [c for c in config_columns(frame)
            if (include_seed or c != SEED) and c not in skip and frame[c].nunique(dropna=False) > 1]


def values(frame: pd.DataFrame, name: str) -> list:
    """The distinct values of a config column in order (categorical order, else sorted)."""
    col = frame[column(name)]
    present = col.dropna().unique()
    if isinstance(col.dtype, pd.CategoricalDtype):
        return [v for v in col.cat.categories if v in set(present)]
    try:
        return sorted(present.tolist())
    except TypeError:
        return list(present)


def has_values(frame: pd.DataFrame, name: str) -> bool:
    """Whether ``frame`` has a column ``name`` with at least one finite (non-null) value."""
    if name not in frame:
        return False
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return bool(np.isfinite(col.to_numpy(dtype=float, na_value=np.nan)).any())
    return bool(col.notna().any())


def _matches(col: pd.Series, wanted: Any) -> pd.Series:
    wanted = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    if pd.api.types.is_float_dtype(col) and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in wanted):
        x = col.to_numpy(dtype=float, na_value=np.nan)
        hit = np.zeros(len(col), dtype=bool)
        for w in wanted:
            hit |= np.isclose(x, float(w), rtol=1e-9, atol=0.0)
        return pd.Series(hit, index=col.index)
    return col.isin(wanted)


def select(frame: pd.DataFrame, status: str | Iterable[str] | None = None, **axes: Any) -> pd.DataFrame:
    """Rows of ``frame`` whose status and axis values match.

    ``select(trials, status="finished", weight_decay=0.0, schedule=["cosine", "constant"])``:
    each keyword is an axis name (``lr`` means ``config/lr``) given one value or a list;
    floats compare with a relative tolerance of 1e-9. An unknown axis raises ``KeyError``
    naming the columns there are.
    """
    mask = pd.Series(True, index=frame.index)
    if status is not None:
        if "status" not in frame:
            raise KeyError("no status column to select on; pass a trials, finals or curves table")
        mask &= _matches(frame["status"], [status] if isinstance(status, str) else status)
    for name, wanted in axes.items():
        key = column(name)
        if key not in frame:
            known = ", ".join(c.removeprefix(CONFIG) for c in config_columns(frame)) or "none"
            raise KeyError(f"no axis {name!r} in this table; its config columns: {known}")
        mask &= _matches(frame[key], wanted)
    return frame[mask.to_numpy()]


# ``DataFrame.attrs`` key: the config columns an uneven grid's cases set (``type_config`` marks
# them from the spec; ``curves`` and ``finals`` carry the mark, pandas keeps it through filters)
DERIVED = "derived_columns"


def case_columns(spec: dict) -> list[str]:
    """The config columns a spec's ``cases`` set (never an axis: the spec refuses that)."""
    cases = spec.get("cases") or []
    keys = {k for case in cases if isinstance(case, dict) for k in (case.get("config") or {})}
    return sorted(column(k) for k in keys if k not in (spec.get("axes") or {}))


def type_config(trials: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Config columns typed: numeric columns numeric, string columns ordered categoricals.

    The categories follow the spec's axis order (``schedule: [cosine, constant]`` plots
    cosine first), then any other stored values sorted. ``status`` becomes a categorical
    over the store's statuses.
    """
    trials = trials.copy()
    axes = spec.get("axes") or {}
    for col in config_columns(trials):
        s = trials[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            continue
        present = [v for v in s.dropna().unique().tolist()]
        numeric = pd.to_numeric(s, errors="coerce")
        if present and numeric.notna().sum() == s.notna().sum() and not any(isinstance(v, bool) for v in present):
            trials[col] = numeric
            continue
        if all(isinstance(v, str) for v in present):
            listed = axes.get(col.removeprefix(CONFIG)) or []
            if isinstance(listed, dict):  # a searched axis: {choice: [...]} gives the order, a range none
                listed = listed.get("choice") or []
            order = [v for v in listed if isinstance(v, str)]
            order = list(dict.fromkeys(order + sorted(v for v in present if v not in order)))
            trials[col] = pd.Categorical(s, categories=order, ordered=True)
    if "status" in trials:
        extra = sorted(set(trials["status"].dropna()) - set(STATUSES))
        trials["status"] = pd.Categorical(trials["status"], categories=[*STATUSES, *extra])
    derived = case_columns(spec)
    if derived:
        trials.attrs[DERIVED] = derived
    return trials


def metric_names(metrics: pd.DataFrame) -> list[str]:
    """The metrics a trainable reported (Ray's own bookkeeping columns left out)."""
    return [c for c in metrics.columns if c != "trial_id" and c not in RAY_COLUMNS]


def _trial_part(trials: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in ("trial_id", "status", "error", "reports") if c in trials] + config_columns(trials)
    if "trial_id" not in keep:
        return pd.DataFrame({"trial_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    part = trials[keep].copy()
    part["trial_id"] = part["trial_id"].astype(str)
    return part


def curves(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per report: the metric rows joined with each trial's status and config columns."""
    part = _trial_part(trials)
    metrics = metrics.copy()
    metrics["trial_id"] = metrics["trial_id"].astype(str)
    clash = [c for c in part.columns if c != "trial_id" and c in metrics]
    return _marked(metrics.drop(columns=clash).merge(part, on="trial_id", how="left"), trials)


def _marked(frame: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the trials' ``DERIVED`` mark (a merge drops ``attrs``)."""
    if DERIVED in trials.attrs:
        frame.attrs[DERIVED] = list(trials.attrs[DERIVED])
    return frame


def finals(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: status, config, and the last non-null value of every reported metric.

    A metric reported only at some reports (``val_loss`` at eval points,
    ``finetune_test_error`` at branch epochs) gives its last reported value. Trials with
    no report keep their row with NaN metrics.
    """
    part = _trial_part(trials)
    names = metric_names(metrics)
    if metrics.empty or not names:
        return _marked(part.assign(**{n: np.nan for n in names}), trials)
    m = metrics.copy()
    m["trial_id"] = m["trial_id"].astype(str)
    last = m.groupby("trial_id", sort=False)[names].last()  # last non-null value per column
    return _marked(part.merge(last.reset_index(), on="trial_id", how="left"), trials)


def x_column(frame: pd.DataFrame, candidates: Sequence[str] = X_COLUMNS) -> str | None:
    """The x axis for curves: ``epoch`` if reported, else ``tokens``, ``step``, ``training_iteration``."""
    for name in candidates:
        if has_values(frame, name):
            return name
    return None


def _group_columns(frame: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    if by is None:
        return varied_axes(frame)
    return [column(b) for b in by]


def aggregate_seeds(frame: pd.DataFrame, value: str, by: Sequence[str] | None = None,
                    confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean of ``value`` over seeds per group, with its Student-t interval.

    Args:
        frame: per-trial rows (``finals``) with ``config/...`` columns and ``status``.
        value: the column to average.
        by: axes to group by (default: every config column that varies, except the seed).
        confidence: of the two-sided t-interval.

    Returns one row per group: the group columns, ``mean``, ``std``, ``n`` (finished
    trials with a finite value), ``ci_low``, ``ci_high``, ``half_width`` (NaN for n < 2),
    ``n_diverged`` (trials with status diverged, left out of the mean) and ``n_trials``.
    Without a ``status`` column every finite value counts.
    """
    groups = _group_columns(frame, by)
    missing = [g for g in groups if g not in frame]
    if missing:
        raise KeyError(f"cannot group by {', '.join(missing)}: not columns of this table")
    rows = []
    status = frame["status"].astype(str) if "status" in frame else pd.Series("finished", index=frame.index)
    data = frame.assign(_status=status.to_numpy())
    grouped = data.groupby(groups, observed=True, sort=True, dropna=False) if groups else [((), data)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        used = part.loc[part["_status"] == "finished", value] if value in part else pd.Series(dtype=float)
        interval = t_interval(used, confidence)
        rows.append({**dict(zip(groups, key)), "mean": interval.mean, "std": interval.std, "n": interval.n,
                     "ci_low": interval.low, "ci_high": interval.high, "half_width": interval.half_width,
                     "n_diverged": int((part["_status"] == "diverged").sum()), "n_trials": len(part)})
    out = pd.DataFrame(rows, columns=[*groups, "mean", "std", "n", "ci_low", "ci_high", "half_width",
                                      "n_diverged", "n_trials"])
    for g in groups:  # keep the categorical order of string axes
        if isinstance(frame[g].dtype, pd.CategoricalDtype):
            out[g] = pd.Categorical(out[g], categories=frame[g].cat.categories, ordered=frame[g].cat.ordered)
    return out.reset_index(drop=True)


def finite_points(curves_frame: pd.DataFrame, y: str, x: str, groups: Sequence[str],
                  statuses: Sequence[str] | None = ("finished",)) -> pd.DataFrame | None:
    """The ``groups``, ``x`` and numeric ``y`` columns of the rows of trials with the given
    statuses where ``y`` is finite and ``x`` is set; None when ``x`` or ``y`` is not a column."""
    data = curves_frame
    if "status" in data and statuses is not None:
        data = data[data["status"].astype(str).isin(list(statuses))]
    if y not in data or x not in data:
        return None
    data = data[[*groups, x, y]].copy()
    data[y] = pd.to_numeric(data[y], errors="coerce")
    return data[np.isfinite(data[y].to_numpy(dtype=float, na_value=np.nan)) & data[x].notna()]


def seed_mean_curves(curves_frame: pd.DataFrame, y: str, x: str, by: Sequence[str] | None = None,
                     statuses: Sequence[str] = ("finished",), confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean of ``y`` over seeds at each ``x`` per group (trials of the given statuses only).

    Returns the group columns, ``x``, ``mean``, ``n`` (seeds with a finite value there),
    ``ci_low``/``ci_high`` (Student t; NaN with one seed), sorted by group then ``x``.
    """
    groups = _group_columns(curves_frame, by)
    data = finite_points(curves_frame, y, x, groups, statuses)
    if data is None:
        return pd.DataFrame(columns=[*groups, x, "mean", "n", "ci_low", "ci_high"])
    rows = []
    for key, part in data.groupby([*groups, x], observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        interval = t_interval(part[y], confidence)
        rows.append({**dict(zip([*groups, x], key)), "mean": interval.mean, "n": interval.n,
                     "ci_low": interval.low, "ci_high": interval.high})
    out = pd.DataFrame(rows, columns=[*groups, x, "mean", "n", "ci_low", "ci_high"])
    for g in groups:
        if isinstance(curves_frame[g].dtype, pd.CategoricalDtype):
            out[g] = pd.Categorical(out[g], categories=curves_frame[g].cat.categories,
                                    ordered=curves_frame[g].cat.ordered)
    return out


@dataclass
class Study:
    """A stored study as DataFrames.

    Args:
        name: the study's name.
        spec: the spec it ran (``spec.yaml``) as plain data.
        trials: one row per trial (``trials.parquet``), config columns typed.
        metrics: one row per report, with ``trial_id`` (``metrics/``).
        info: the launch provenance (``study.json``); empty when the store has none.
        store: the study's folder in the store (reports are written there).
    """

    name: str
    spec: dict
    trials: pd.DataFrame
    metrics: pd.DataFrame
    info: dict = field(default_factory=dict)
    store: StudyStore | None = field(default=None, repr=False)

    @property
    def axes(self) -> list[str]:
        return list(self.spec.get("axes") or {})

    @property
    def trainable(self) -> str:
        return str(self.spec.get("trainable", ""))

    @property
    def metric(self) -> str:
        return str(self.spec.get("metric") or "")

    @property
    def mode(self) -> str:
        return "max" if self.spec.get("mode") == "max" else "min"

    def has_metric(self, name: str) -> bool:
        """Whether any report holds a finite value of ``name``."""
        return has_values(self.metrics, name)

    def curves(self) -> pd.DataFrame:
        """Metric rows joined with each trial's status and config (see ``curves``)."""
        return curves(self.trials, self.metrics)

    def finals(self) -> pd.DataFrame:
        """One row per trial with the last value of every metric (see ``finals``)."""
        return finals(self.trials, self.metrics)

    def seeds(self) -> int:
        """The largest number of seeds any grid point has."""
        return self.seed_range()[1]

    def seed_range(self) -> tuple[int, int]:
        """The fewest and the most seeds a grid point has (they differ in an uneven grid)."""
        if self.trials.empty or SEED not in self.trials:
            return (1, 1) if not self.trials.empty else (0, 0)
        groups = varied_axes(self.trials)
        if not groups:
            n = int(self.trials[SEED].nunique())
            return n, n
        counts = self.trials.groupby(groups, observed=True)[SEED].nunique()
        return int(counts.min()), int(counts.max())


def load_study(name: str, storage: str) -> Study:
    """Read study ``name`` from the store at ``storage`` (a folder or a URI such as s3://...).

    Raises ``StoreError`` with a one-line message when the study does not exist or a file
    of it is corrupt.
    """
    store = StudyStore(storage, name)
    if not store.exists():
        raise StoreError(f"no study named {name!r} in {storage} (see `python -m study list --storage {storage}`)")
    try:
        spec = yaml.safe_load(store.read_text("spec.yaml")) or {}
    except yaml.YAMLError as exc:
        raise StoreError(f"{store.path('spec.yaml')}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise StoreError(f"{store.path('spec.yaml')}: not a study spec (expected a mapping)")
    try:
        info = json.loads(store.read_text("study.json"))
    except StoreError:
        info = {}  # an old or hand-made store without launch provenance: the report says so
    except ValueError as exc:
        raise StoreError(f"{store.path('study.json')}: not valid JSON ({exc})") from None
    trials = type_config(store.read_trials(), spec)
    metrics = store.read_metrics()
    return Study(name=name, spec=spec, trials=trials, metrics=metrics, info=info, store=store)


def fmt(value: Any) -> str:
    """A compact label for an axis value (floats in ``%g`` form: 0.001, 6e-05, 0.3)."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "nan"
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------- seed means and spreads, diverged ends, LR drops
# (what the figures draw, prepared here so that the figure functions only draw)


def diverged_ends(curves: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
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
        rows.append({"trial_id": trial_id, "x": x_at, "y": y_at,
                     **{c: part[c].iloc[0] for c in part if c.startswith(CONFIG)}})
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


def lr_drops(curves: pd.DataFrame, x: str) -> list[float]:
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


def per_seed(rows: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    """``metric`` by ``x`` (index) and seed (columns) for the trials in ``rows``."""
    if rows.empty or metric not in rows:
        return pd.DataFrame()
    seed = rows[SEED] if SEED in rows else rows["trial_id"]
    frame = pd.DataFrame({"x": rows[x].to_numpy(dtype=float), "seed": seed.to_numpy(),
                          "v": pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)})
    frame = frame[np.isfinite(frame["v"])]
    return frame.pivot_table(index="x", columns="seed", values="v", aggfunc="last").sort_index()


def paired_difference(arm: pd.Series, base: pd.Series) -> pd.Series:
    """``arm − base`` at the x values (the index) both have, sorted by x: a seed-mean curve
    against its baseline's (a Chinchilla arm against WD 0)."""
    common = arm.index.intersection(base.index)
    return (arm.loc[common] - base.loc[common]).sort_index()


def seed_differences(arm_rows: pd.DataFrame, base_rows: pd.DataFrame | None, x: str, metric: str) -> pd.DataFrame:
    """Each seed's own ``arm − base`` of ``metric``, by ``x`` (index) and seed (columns): the same
    seed saw the same batches in both arms. Empty without baseline rows, or with fewer than two
    seeds in the arm (its mean difference is then the only one)."""
    arm = per_seed(arm_rows, x, metric)
    if base_rows is None or arm.shape[1] < 2:
        return pd.DataFrame()
    return (arm - per_seed(base_rows, x, metric)).dropna(how="all")


def final_pairs(curves: pd.DataFrame, a: str = "train_loss", b: str = "val_loss") -> pd.DataFrame:
    """Per trial, the last report holding finite values of both ``a`` and ``b``."""
    if a not in curves or b not in curves:
        return curves.iloc[0:0]
    both = curves[np.isfinite(pd.to_numeric(curves[a], errors="coerce").to_numpy(dtype=float, na_value=np.nan))
                  & np.isfinite(pd.to_numeric(curves[b], errors="coerce").to_numpy(dtype=float, na_value=np.nan))]
    return both.drop_duplicates("trial_id", keep="last")


def final_gap(curves: pd.DataFrame, train: str = "train_loss", val: str = "val_loss") -> pd.DataFrame:
    """Per finished trial, its last report with finite ``train`` and ``val``, and ``gap`` = val − train."""
    ends = final_pairs(curves[curves["status"].astype(str) == "finished"] if "status" in curves else curves, train, val)
    return ends.assign(gap=ends[val].astype(float) - ends[train].astype(float))


def best_at(spread: pd.DataFrame, axis: str, value, mode: str = "min") -> tuple[pd.Series | None, int, int]:
    """In a ``seed_spread`` table at ``axis`` = ``value``: the grid point with the best seed mean over
    every other axis (None where no trial finished there), and how many trials diverged and ran there."""
    rows = spread[spread[axis] == value]
    ok = rows[rows["n"] > 0]
    best = ok.loc[ok["mean"].idxmin() if mode == "min" else ok["mean"].idxmax()] if len(ok) else None
    return best, int(rows["n_diverged"].sum()), int(rows["n_trials"].sum())


def rank_trials(finals: pd.DataFrame, value: str, mode: str = "min") -> pd.DataFrame:
    """Finished trials with a finite ``value``, best first."""
    if not value or value not in finals:
        return finals.iloc[0:0]
    ok = finals
    if "status" in ok:
        ok = ok[ok["status"].astype(str) == "finished"]
    ok = ok[np.isfinite(pd.to_numeric(ok[value], errors="coerce").to_numpy(dtype=float, na_value=np.nan))]
    return ok.sort_values(value, ascending=mode == "min", kind="stable")


def trial_curve(curves: pd.DataFrame, trial_id: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """One trial's ``y`` against ``x``, sorted by ``x``, its finite values only."""
    part = curves[curves["trial_id"] == trial_id].sort_values(x)
    yv = pd.to_numeric(part[y], errors="coerce").to_numpy(dtype=float, na_value=np.nan) if y in part else np.array([])
    ok = np.isfinite(yv)
    return part[x].to_numpy(dtype=float)[ok], yv[ok]
