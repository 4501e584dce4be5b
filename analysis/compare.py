"""Two studies side by side: their verdicts, their best trials, and a figure overlaying a shared metric."""

from __future__ import annotations

import pandas as pd

from analysis import figures
from analysis.load import Study, has_values
from analysis.report import best_trials, render, report_location, study_verdicts, write_files, _cell

# metrics worth overlaying when the two studies do not optimise the same one, most telling first
SHARED_METRICS = ("val_loss", "test_error", "finetune_test_error", "train_loss", "loss")


def shared_metric(a: Study, b: Study) -> str | None:
    """The metric to overlay: A's study metric if B reports it, else B's if A does, else a common one."""
    for name in (a.metric, b.metric, *SHARED_METRICS):
        if name and a.has_metric(name) and b.has_metric(name):
            return name
    return None


def compare(a: Study, b: Study) -> tuple[str, dict[str, bytes]]:
    """The comparison's markdown and its figure files (paths relative to study A's folder)."""
    finals_a, finals_b = a.finals(), b.finals()
    curves_a, curves_b = a.curves(), b.curves()
    verdicts_a = study_verdicts(a, finals_a, curves_a)
    verdicts_b = {v.claim: v for v in study_verdicts(b, finals_b, curves_b)}
    lines = [f"# `{a.name}` vs `{b.name}`", "",
             f"| | `{a.name}` | `{b.name}` |", "|---|---|---|",
             f"| trainable | {a.trainable} | {b.trainable} |",
             f"| metric | {a.metric} ({a.mode}) | {b.metric} ({b.mode}) |",
             f"| trials | {len(a.trials)} | {len(b.trials)} |",
             f"| axes | {', '.join(a.axes) or '-'} | {', '.join(b.axes) or '-'} |", ""]
    lines += ["## Verdicts", "", f"| claim | `{a.name}` | `{b.name}` |", "|---|---|---|"]
    for v in verdicts_a:
        w = verdicts_b.get(v.claim)
        lines.append(f"| {_cell(v.claim)} | {v.status}: {_cell(v.reason)} | "
                     f"{(w.status + ': ' + _cell(w.reason)) if w else '-'} |")
    lines += [""]
    for study, finals_frame in ((a, finals_a), (b, finals_b)):
        lines += [f"## Best trials of `{study.name}`", "", _markdown(best_trials(study, finals_frame, n=5)), ""]
    files: dict[str, bytes] = {}
    metric = shared_metric(a, b)
    if metric is None:
        lines += ["No metric is reported by both studies: no overlay figure.", ""]
    else:
        fig = figures.compare_best(
            [(a.name, curves_a, finals_a, a.metric if has_values(finals_a, a.metric) else metric, a.mode),
             (b.name, curves_b, finals_b, b.metric if has_values(finals_b, b.metric) else metric, b.mode)],
            metric, title=f"{metric} of the best trial of {a.name} and of {b.name}")
        stem = f"figures/compare-{b.name}-{metric}"
        for kind in ("png", "svg"):
            files[f"{stem}.{kind}"] = render(fig, kind)
        lines += [f"## {metric} of each study's best trial", "", f"![{metric}]({stem}.png)", "", f"[SVG]({stem}.svg)", ""]
    return "\n".join(lines), files


def _markdown(frame: pd.DataFrame) -> str:
    return "_none_" if frame.empty else frame.to_markdown(index=False, floatfmt=".4g")


def write_comparison(a: Study, b: Study) -> tuple[str, str]:
    """Write ``compare-<B>.md`` and its figure into study A's folder; return (markdown, location)."""
    markdown, files = compare(a, b)
    filename = f"compare-{b.name}.md"
    write_files(a.store, {**files, filename: markdown.encode()})
    return markdown, report_location(a.store, filename)
