"""``report.md``, ``report.html`` and the figures, written into the study's folder in the store.

What a report holds is decided from the study's data, not its name: a figure is drawn
when the study has the axes and metrics it needs, and listed under "Not drawn" with the
reason otherwise; every verdict is listed, ``not-applicable`` ones with their reason.
Everything is computed and rendered in memory first, so a study that cannot be read
leaves nothing written. ``report.html`` (``analysis.html``) is rendered from the same
``Report`` as ``report.md``: one self-contained page with the verdicts first, the figures
inline with hover values, and a sortable table of every trial.
"""

from __future__ import annotations

import io
import json
import posixpath
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable

import matplotlib
import pandas as pd
import pyarrow.fs as pafs
import yaml

from analysis import figures, html, search_results, verdicts
from analysis.figures.style import seed_span
from analysis.load import CONFIG, Study, column, fmt, has_values, load_study, varied_axes
from analysis.stats import CONFIDENCE
from analysis.stats import OUTCOMES
from analysis.verdicts import NOT_APPLICABLE, Verdict
from study.store import StudyStore

FORMATS = ("png", "svg")


@dataclass
class FigureItem:
    """One figure of a report: drawn (``draw`` set) or not applicable (``reason`` set)."""

    key: str
    title: str
    draw: Callable[[], object] | None = None
    reason: str | None = None


def _count(frame: pd.DataFrame, name: str) -> int:
    return int(frame[column(name)].nunique()) if column(name) in frame else 0


def _has_zero_and_positive(frame: pd.DataFrame, name: str) -> bool:
    col = column(name)
    return col in frame and bool((frame[col] == 0).any()) and bool((frame[col] > 0).any())


def _branch_epochs(curves: pd.DataFrame) -> int:
    """How many epochs the fine-tuned branches were taken at."""
    if verdicts.FINETUNE_ERROR not in curves or "epoch" not in curves:
        return 0
    return int(curves.loc[curves[verdicts.FINETUNE_ERROR].notna(), "epoch"].nunique())


def figure_plan(study: Study, finals: pd.DataFrame, curves: pd.DataFrame,
                baseline: Study | None = None) -> list[FigureItem]:
    """The report's figures for this study: each drawable, or with the reason it is not.

    ``baseline``: a grid study over the same box, drawn next to a search's progress.
    """
    items: list[FigureItem] = []

    def add(key, title, needs: list[tuple[bool, str]], draw):
        missing = [why for ok, why in needs if not ok]
        items.append(FigureItem(key, title, None if missing else draw, "; ".join(missing) or None))

    # the paper's two vision protocols, each drawn only from its own data: (a) the run's
    # test error after its LR decays (Fig. 1, sphere sweep); (b) fine-tuned branches (Figs. 2-3)
    decays = verdicts.lr_decays(finals)
    after_decay = (has_values(finals, "test_error") and decays is not False,
                   "no test_error reported" if not has_values(finals, "test_error") else
                   "the LR does not decay during the run (constant LR): no after-decay error")
    lrs = (_count(finals, "lr") >= 2, "needs ≥ 2 learning rates")
    add("ushape", "U-shape after the LR decay (Fig. 1 / sphere-sweep protocol): the run's final test_error vs "
        "learning rate, one line per weight decay", [after_decay, lrs],
        lambda: figures.ushape(finals, "test_error", title="After the LR decay (Fig. 1 protocol): final test error vs learning rate"))
    branch, branch_epoch = verdicts.finetune_at(curves)
    fine_tuned = (has_values(curves, verdicts.FINETUNE_ERROR), "no finetune_test_error reported (no fine-tuned branches)")
    add("ushape_finetune", f"U-shape of the fine-tuned copies (Figs. 2–3 protocol): finetune_test_error of the branch "
        f"from {'epoch ' + fmt(branch_epoch) if branch_epoch is not None else 'the last branch'} vs learning rate",
        [fine_tuned, lrs],
        lambda: figures.ushape(branch, verdicts.FINETUNE_ERROR, title="Fine-tuned copies (Figs. 2–3 protocol): "
                               f"finetune_test_error of the branch from epoch {fmt(branch_epoch)} vs lr"))
    add("finetune_branches", "Fine-tuned copies (Figs. 2–3 protocol): finetune_test_error vs the epoch each copy "
        "branched from", [fine_tuned, (_branch_epochs(curves) >= 2, "needs branches at ≥ 2 epochs")],
        lambda: figures.finetune_branches(curves))
    error = verdicts.test_error_metric(finals)
    vision = (error is not None, "no test error reported (test_error or finetune_test_error): not the vision regime")
    lr_searched = (not _searched(study, "lr"), "lr is searched (a range), not a grid: see `search_trials`")
    add("heatmap", f"LR × WD heat map of the final {error or 'test error'}"
        + (" (after the LR decay)" if error == "test_error" and decays else
           " (of the last fine-tuned branch)" if error == verdicts.FINETUNE_ERROR else ""),
        [vision, lrs, (_count(finals, "weight_decay") >= 2, "needs ≥ 2 weight decays"), lr_searched],
        lambda: figures.heatmap(finals, error))
    add("train_loss", "Training loss vs epoch: stabilisation during the large-LR phase, then the LR decay",
        [vision, (has_values(curves, "train_loss"), "no train_loss reported")],
        lambda: figures.training_curves(curves, "train_loss"))
    add("norms", "Weight norm and effective learning rate vs time",
        [(has_values(curves, "weight_norm") or has_values(curves, "effective_lr"), "no weight_norm or effective_lr reported")],
        lambda: figures.norms(curves))
    add("hessian_trace", "Tr(Hessian) vs time (Hutchinson estimate)",
        [(has_values(curves, "hessian_trace") or has_values(curves, "finetune_hessian_trace"),
          "no hessian_trace or finetune_hessian_trace reported")],
        lambda: figures.hessian_trace(curves))
    pair = figures.ema_pair(curves)
    add("ema", f"EMA of the weights vs plain: {pair[1]} vs {pair[0]}" if pair else "EMA of the weights vs plain",
        [(pair is not None, "no (test_error, ema_test_error) or (val_loss, ema_val_loss) pair reported")],
        lambda: figures.ema_vs_plain(curves, pair=pair))

    lm = (has_values(curves, "val_loss"), "no val_loss reported: not the LM regime")
    wd_arms = (_has_zero_and_positive(finals, "weight_decay"), "needs weight decay 0 (Adam) and > 0 (AdamW)")
    for metric in ("val_loss", "train_loss"):
        add(f"chinchilla_{metric}", f"AdamW vs Adam ({metric}): cosine and constant LR side by side, crossings circled",
            [lm, (has_values(curves, metric), f"no {metric} reported"), wd_arms,
             (column("schedule") in finals, "no schedule in the config")],
            lambda metric=metric: figures.chinchilla(curves, metric))
    add("train_val_gap", "Final train–validation gap vs weight decay",
        [lm, (has_values(curves, "train_loss"), "no train_loss reported")],
        lambda: figures.train_val_gap(curves))

    precision_varies = _count(finals, "precision") >= 2
    loss = next((m for m in ("train_loss", study.metric, "loss") if m and has_values(curves, m)), None)
    add("divergence_curves", f"{loss or 'loss'} vs step per precision × weight decay, seeds as line styles, divergences marked",
        [(precision_varies, "needs ≥ 2 precisions"), (loss is not None, "no loss reported")],
        lambda: figures.divergence_curves(curves, loss))
    troubled = "status" in finals and bool(finals["status"].astype(str).isin(["diverged", "failed"]).any())
    grid_axes = [a for a in ("lr", "weight_decay") if column(a) in finals]
    add("status_map", "Status map: diverged trials over LR × WD × precision",
        [(precision_varies or troubled, "no trial diverged or failed and precision does not vary"), lr_searched],
        lambda: figures.status_map(finals, rows=grid_axes[0] if grid_axes else "lr",
                                   cols=grid_axes[1] if len(grid_axes) > 1 else "weight_decay"))

    metric = study.metric
    has_metric = bool(metric) and has_values(finals, metric)
    add("isolation", f"Isolation plot: best {metric} per value of each axis, optimised over the others",
        [(has_metric, f"no {metric or 'study metric'} reported"), (bool(varied_axes(finals)), "no axis varies")],
        lambda: figures.isolation(finals, metric, study.mode))
    add("top_k", f"Training curves of the top trials by final {metric}",
        [(has_metric, f"no {metric or 'study metric'} reported")],
        lambda: figures.top_k(curves, finals, metric, study.mode))
    if search_results.is_search(study.spec):
        items += search_figures(study, has_metric, baseline)
    return items


def _searched(study: Study, axis: str) -> bool:
    return axis in search_results.searched_axes(study.spec)


def search_figures(study: Study, has_metric: bool, baseline: Study | None) -> list[FigureItem]:
    """The figures of a random/Optuna search (``analysis.search_results``)."""
    metric, mode, by = study.metric, study.mode, search_results.grid_axes(study.spec)
    no_metric = f"no {metric or 'study metric'} reported"
    grid = search_results.grid_baseline(baseline.trials, metric, mode, by) if baseline is not None else None
    items = [FigureItem("search_progress", f"Best {metric} found vs trials and compute spent, per search"
                        + (f" (dashed: the best of grid study `{baseline.name}`)" if baseline is not None else ""),
                        (lambda: figures.search_progress(search_results.study_progress(study), metric, mode, by,
                                                         baseline=grid))
                        if has_metric else None, None if has_metric else no_metric)]
    best = search_results.study_best_per_point(study) if has_metric else None
    axis = next((c.removeprefix("best_") for c in (best.columns if best is not None else []) if c.startswith("best_")
                 and c not in ("best_mean", "best_std", "best_ci_low", "best_ci_high")), None)
    point_axes = [a for a in by if a != "seed"]
    ok = best is not None and not best.empty and axis is not None
    items.append(FigureItem("best_per_point", f"Best {axis or 'searched value'} per "
                            f"{', '.join(point_axes) or 'search'}, with its spread over seeds",
                            (lambda: figures.best_per_point_figure(best, axis, point_axes[0] if point_axes else None,
                                                                   metric, search_results.search_bounds(study.spec, axis)))
                            if ok else None,
                            None if ok else (no_metric if not has_metric else "no numeric searched axis, or no "
                                             "finished trial")))
    ranged = search_results.searched_axes(study.spec)
    axis_x = "lr" if "lr" in ranged else (ranged[0] if ranged else None)
    ok = has_metric and axis_x is not None
    items.append(FigureItem("search_trials", f"Every trial's {metric} vs {axis_x}: what the search sampled",
                            (lambda: figures.search_trials(study.trials, metric, axis_x, by)) if ok else None,
                            None if ok else no_metric))
    return items


def search_section(study: Study, baseline: Study | None = None) -> list[str]:
    """The report's tables for a random/Optuna search (no verdicts: a search finds, it does not test)."""
    by = search_results.grid_axes(study.spec)
    table = search_results.study_summary(study, baseline)
    lines = ["## Search", "",
             f"`search: {study.spec.get('search')}` over {', '.join(f'`{a}`' for a in search_results.searched_axes(study.spec))}"
             f", {study.spec.get('num_samples')} trials per grid point"
             + (f" ({', '.join(by)} held on a grid: one search per point)" if by else "")
             + (f", scheduler `{next(iter(study.spec['scheduler']))}`" if study.spec.get("scheduler") else "")
             + ". Only finished trials have a final value; stopped, diverged and failed trials spend compute "
             f"(trial-steps: the `{search_results.compute_column(study.trials)}` each reached) and are counted apart. "
             f"`compute_within`: compute spent when the best so far first came within "
             f"{search_results.TOLERANCE:.0%} of the search's own best.", ""]
    if baseline is not None:
        lines += [f"Compared with grid study `{baseline.name}` ({len(baseline.trials)} trials): `compute_to_grid` "
                  f"is the compute spent when the search first came within {search_results.TOLERANCE:.0%} of the grid's "
                  "best, `share_of_grid` that as a fraction of the grid's compute.", ""]
    lines += [_table(_plain(table)), ""]
    best = search_results.study_best_per_point(study)
    if best is not None and not best.empty:
        lines += ["### Best value per grid point, over seeds", "",
                  "Each (grid point, seed) is its own search; its best finished trial gives one best value. "
                  "Geometric mean, min and max over seeds, and the best metric's mean with its "
                  f"{int(CONFIDENCE * 100)}% Student-t interval.", "", _table(_plain(best)), ""]
    if study.spec.get("search") == "optuna":
        lines += ["### Optuna", "", f"The searches' Optuna studies are in `optuna.db` in this folder "
                  f"(`optuna.load_study(study_name=..., storage=\"sqlite:///.../{study.name}/optuna.db\")`, or "
                  "`optuna-dashboard sqlite:///.../optuna.db`): " + ", ".join(f"`{n}`" for n in _study_names(study)), ""]
    return lines


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns=lambda c: c.removeprefix(CONFIG))


def _study_names(study: Study) -> list[str]:
    from study.search import study_names
    from study.spec import parse_spec

    try:
        return study_names(parse_spec(study.spec, "spec.yaml"))
    except Exception:  # a spec this checkout cannot validate: name the study only
        return [study.name]


def study_verdicts(study: Study, finals: pd.DataFrame, curves: pd.DataFrame) -> list[Verdict]:
    """Every claim check on this study: applicable ones first, in a fixed order."""
    found = verdicts.all_verdicts(finals, curves)
    searched = [a for a in ("lr", "weight_decay") if a in search_results.searched_axes(study.spec)]
    if searched:  # the claims that compare grid points at fixed learning rates / weight decays
        why = (f"{' and '.join(searched)} searched (a range), not on a grid: the claim compares grid points "
               f"at fixed values (see the Search section)")
        found = [replace(v, status=NOT_APPLICABLE, reason=why, numbers={}, seeds_needed=None)
                 if v.claim in verdicts.GRID_CLAIMS else v for v in found]
    return sorted(found, key=lambda v: not v.applicable)


@dataclass
class Report:
    """A report built in memory: its verdicts, figures and tables, and the markdown and HTML made from them.

    Args:
        head: the markdown above the first section (title, description, the study's facts).
        sections: each ``##`` section's markdown lines, by title, in report order.
        inline: each drawn figure's SVG with its hover points, by figure key (``analysis.html``).
        trials: every trial, best first (``trials_table``): the HTML report's sortable table.
    """

    study: Study
    verdicts: list[Verdict]
    figures: list[FigureItem]
    checks: list[Verdict] = field(default_factory=list)  # of the grid itself (verdicts.grid_checks), not claims
    files: dict[str, bytes] = field(default_factory=dict)  # path under the study folder → bytes
    markdown: str = ""
    head: list[str] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)
    inline: dict[str, str] = field(default_factory=dict)
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    html: str = ""

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.failed]

    @property
    def undecided(self) -> list[Verdict]:
        """Verdicts that did not pass although they apply: failed or inconclusive (what ``--strict`` refuses)."""
        return [v for v in self.verdicts if v.failed or v.inconclusive]

    def summary(self) -> str:
        counts = pd.Series([v.status for v in self.verdicts], dtype=object).value_counts()
        return ", ".join(f"{counts.get(s, 0)} {s}" for s in OUTCOMES)


def render(fig, fmt_name: str) -> bytes:
    """A figure as PNG or SVG bytes (SVG without a date, so reruns give the same file)."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt_name == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": "wd-study"}):  # stable element ids
        fig.savefig(buffer, format=fmt_name, dpi=120, metadata=metadata)
    return buffer.getvalue()


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


VERDICTS_KEY = ("Each claim of the paper checked on this study's data: **pass** when the 90 % Student-t "
                "interval over seeds clears the claim's threshold, **FAIL** when it lies wholly on the other "
                "side, _inconclusive_ when it straddles the threshold or a grid point has one seed (with the "
                "seeds that would decide). Thresholds are justified in `analysis/verdicts.py`.")


def seeds_to_decide(v: Verdict) -> str:
    """For an inconclusive verdict, the seeds that would decide it, in words ("" when not told)."""
    return f"≈{v.seeds_needed} seeds would decide" if v.inconclusive and v.seeds_needed else ""


def thresholds_text(v: Verdict) -> str:
    return ", ".join(f"{k}={fmt(val)}" for k, val in v.thresholds.items())


def verdict_table(items: list[Verdict]) -> str:
    """The applicable verdicts as a table; not-applicable ones as one line each below it."""
    applicable = [v for v in items if v.applicable]
    lines = ["| claim | verdict | evidence | thresholds |", "|---|---|---|---|"] if applicable else ["_no claim applies_"]
    for v in applicable:
        mark = {"pass": "**pass**", "fail": "**FAIL**", "inconclusive": "_inconclusive_"}[v.status]
        if seeds_to_decide(v):
            mark += f" ({seeds_to_decide(v)})"
        lines.append(f"| {_cell(v.claim)} | {mark} | {_cell(v.reason)} | {_cell(thresholds_text(v))} |")
    skipped = [v for v in items if not v.applicable]
    if skipped:
        lines += ["", "Not applicable to this study:", "", *[f"- {_cell(v.claim)}: {_cell(v.reason)}" for v in skipped]]
    return "\n".join(lines)


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_"
    return frame.to_markdown(index=False, floatfmt=".4g")


def best_trials(study: Study, finals: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The best ``n`` finished trials by the study's metric: id, axis values, status, metric."""
    metric = study.metric
    axes = varied_axes(finals, include_seed=True, derived=True)  # a trial table shows what cases set too
    ranked = figures.rank_trials(finals, metric, study.mode) if metric else finals.iloc[0:0]
    cols = ["trial_id", *axes, "status", *([metric] if metric in ranked else [])]
    table = ranked[cols].head(n).copy()
    table.columns = [c.removeprefix(CONFIG) for c in table.columns]
    return table.reset_index(drop=True)


def unfinished_trials(finals: pd.DataFrame) -> pd.DataFrame:
    """Trials that diverged, failed, were stopped or are running, with where and why."""
    if "status" not in finals:
        return finals.iloc[0:0]
    rows = finals[finals["status"].astype(str) != "finished"]
    reached = [c for c in ("epoch", "step") if c in rows and (rows["status"].astype(str) == "stopped").any()
               and rows[c].notna().any()][:1]  # where a stopped trial was stopped
    cols = ["trial_id", *varied_axes(finals, include_seed=True, derived=True), "status", *reached,
            *[c for c in ("diverged_step", "last_finite_loss", "error") if c in rows and rows[c].notna().any()]]
    table = rows[cols].copy()
    if "error" in table:
        table["error"] = [_last_line(e) for e in table["error"]]
    table.columns = [c.removeprefix(CONFIG) for c in table.columns]
    return table.reset_index(drop=True)


def _last_line(error) -> str:
    """The last non-empty line of an error text (the exception), at most 160 characters."""
    if not isinstance(error, str):
        return ""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def provenance_section(study: Study) -> list[str]:
    lines = ["## Provenance", ""]
    if study.info:
        lines += ["Launch (`study.json`):", "", "```json", json.dumps(study.info, indent=2, default=str), "```", ""]
    else:
        lines += ["`study.json` is missing: this store has no launch provenance.", ""]
    trials = study.trials
    facts = []
    for col, what in (("git_commit", "git commits"), ("host", "hosts"), ("node_ip", "node IPs")):
        if col in trials and trials[col].notna().any():
            counts = trials[col].astype(str).value_counts()
            facts.append(f"- {what}: " + ", ".join(f"`{k}` ({n} trials)" for k, n in counts.items()))
    if "git_dirty" in trials and trials["git_dirty"].fillna(False).astype(bool).any():
        facts.append(f"- **{int(trials['git_dirty'].fillna(False).astype(bool).sum())} trials ran from a checkout with "
                     "uncommitted changes** (git_dirty): the commit alone does not reproduce them")
    if "versions" in trials and trials["versions"].notna().any():
        distinct = trials["versions"].dropna().unique()
        facts.append(f"- package versions: {len(distinct)} distinct set(s); " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in json.loads(s).items()) for s in distinct[:3]))
    if facts:
        lines += ["Trials:", "", *facts, ""]
    return lines


def build_report(study: Study, baseline: Study | None = None) -> Report:
    """Compute verdicts, draw and render every applicable figure, and compose report.md and
    report.html, in memory.

    ``baseline``: a grid study over the same box, compared with a search study.
    """
    finals, curves = study.finals(), study.curves()
    found = study_verdicts(study, finals, curves)
    plan = figure_plan(study, finals, curves, baseline)
    report = Report(study, found, plan, verdicts.grid_checks(finals, study.metric, study.mode),
                    trials=trials_table(study, finals))
    for item in plan:
        if item.draw is None:
            continue
        fig = item.draw()
        for kind in FORMATS:
            report.files[f"figures/{item.key}.{kind}"] = render(fig, kind)
        report.inline[item.key] = html.inline_figure(fig, report.files[f"figures/{item.key}.svg"], item.key)

    trials = study.trials
    head = [f"# Study `{study.name}`", ""]
    if study.spec.get("description"):
        head += [str(study.spec["description"]).strip(), ""]
    counts = trials["status"].astype(str).value_counts().sort_index() if "status" in trials else pd.Series(dtype=int)
    status_text = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none started"
    axes_text = ", ".join(f"{a} ({_count(trials, a)})" for a in study.axes) or "none"
    head += [f"- trainable `{study.trainable}`, metric `{study.metric}` ({study.mode})",
             f"- {len(trials)} trials: {status_text}",
             f"- axes (values): {axes_text}; seeds per grid point: {seed_span(study.seed_range())}",
             f"- metrics reported: {', '.join(f'`{m}`' for m in _reported(study)) or 'none'}",
             f"- verdicts: {report.summary()}", ""]
    sections: dict[str, list[str]] = {}
    sections["Verdicts"] = [VERDICTS_KEY, "", verdict_table(found), ""]
    sections["Grid check"] = ["Not a claim of the paper: whether the grid contains its own optimum (the tuning "
                              "playbook's check), by the same rule.", "", verdict_table(report.checks), ""]
    lines = []
    for item in plan:
        if item.draw is None:
            continue
        lines += [f"### {item.title}", "", f"![{item.key}](figures/{item.key}.png)", "",
                  f"[SVG](figures/{item.key}.svg)", ""]
    skipped = [item for item in plan if item.draw is None]
    if skipped:
        lines += ["### Not drawn", "", *[f"- `{i.key}` ({i.title}): {i.reason}" for i in skipped], ""]
    sections["Figures"] = lines
    if search_results.is_search(study.spec):
        sections["Search"] = search_section(study, baseline)[2:]  # without its "## Search" heading
    sections["Best trials"] = [_table(best_trials(study, finals)), ""]
    sections["Trials that did not finish"] = [_table(unfinished_trials(finals)), ""]
    sections["Spec"] = ["```yaml", yaml.safe_dump(study.spec, sort_keys=False).strip(), "```", ""]
    sections["Provenance"] = provenance_section(study)[2:]
    sections["Files"] = ["Written with this report (under the study folder):", "",
                         "- `report.html`: this report as one self-contained page (figures with hover values, "
                         "a sortable table of every trial)",
                         *[f"- `{path}`" for path in sorted(report.files)], ""]
    report.head, report.sections = head, sections
    report.markdown = "\n".join(head + [line for title, body in sections.items() for line in (f"## {title}", "", *body)])
    report.html = html.render(report)
    return report


HEADLINE_METRICS = ("test_error", "finetune_test_error", "val_loss", "train_loss", "test_loss")


def trials_table(study: Study, finals: pd.DataFrame) -> pd.DataFrame:
    """Every trial, best first: ``rank`` by the study's metric (finished trials with a value),
    id, axis values, status, the metric and the other headline metrics it reported, how far
    it got (``epoch`` or ``step``) and the last line of its error."""
    metric = study.metric
    ranked = figures.rank_trials(finals, metric, study.mode) if metric else finals.iloc[0:0]
    rest = finals.drop(index=ranked.index)
    rest = rest.sort_values(["status", "trial_id"] if "status" in rest else ["trial_id"], kind="stable")
    ordered = pd.concat([ranked, rest])
    metrics = [m for m in dict.fromkeys([metric, *HEADLINE_METRICS]) if m and has_values(finals, m)]
    reached = next((c for c in ("epoch", "step") if has_values(finals, c)), None)
    cols = ["trial_id", *varied_axes(finals, include_seed=True, derived=True), *(["status"] if "status" in finals else []),
            *metrics, *([reached] if reached else []), *(["error"] if "error" in finals else [])]
    table = ordered[cols].copy()
    if "error" in table:
        table["error"] = [_last_line(e) for e in table["error"]]
    table.insert(0, "rank", pd.array(list(range(1, len(ranked) + 1)) + [pd.NA] * len(rest), dtype="Int64"))
    table.columns = [c.removeprefix(CONFIG) for c in table.columns]
    return table.reset_index(drop=True)


def _reported(study: Study) -> list[str]:
    from analysis.load import metric_names

    return [m for m in metric_names(study.metrics) if has_values(study.metrics, m)]


def write_files(store: StudyStore, files: dict[str, bytes]) -> None:
    """Write files under the study folder through the store's filesystem (local or remote).

    Locally each file is written under a temporary name and renamed into place; object
    stores publish an object only when its upload completes.
    """
    fs = store.fs
    for relative, data in files.items():
        path = store.path(*relative.split("/"))
        fs.create_dir(posixpath.dirname(path), recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)


def report_location(store: StudyStore, filename: str = "report.md") -> str:
    """Where a file of the study folder is: a local path, or a URI for a remote store."""
    return posixpath.join(store.uri, filename)


def write_report(storage: str, name: str) -> str:
    """Write figures, ``report.md`` and ``report.html`` for study ``name``; return where report.md is."""
    return write_study_report(load_study(name, storage))[1]


def after_study(storage: str, name: str) -> str:
    """The ``wd_study.after_study`` hook (pyproject): a finished study gets its report."""
    return f"report: {write_report(storage, name)}"


def write_study_report(study: Study, baseline: Study | None = None) -> tuple[Report, str]:
    """Build the report of a loaded study, write it into its folder (figures, report.md and
    report.html); return it and report.md's location."""
    report = build_report(study, baseline)
    write_files(study.store, {**report.files, "report.md": report.markdown.encode(),
                              "report.html": report.html.encode()})
    return report, report_location(study.store)
