"""``report.md`` and its figures, written into the study's folder."""

from __future__ import annotations

import io
import json
import posixpath

import pandas as pd
import yaml

from analysis import figures
from analysis.load import Study, load_study


def _save(study: Study, fig, filename: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=filename.rsplit(".", 1)[1], dpi=120)
    figures.plt.close(fig)
    study.store._write_bytes(study.store.path("figures", filename), buffer.getvalue())
    return f"figures/{filename}"


def summary_table(study: Study) -> pd.DataFrame:
    """Trial id, axis values, status and the study's metric, best first."""
    columns = ["trial_id", *[f"config/{a}" for a in study.axes], "status"]
    if study.metric in study.trials:
        columns.append(study.metric)
    table = study.trials[[c for c in columns if c in study.trials]].copy()
    table.columns = [c.removeprefix("config/") for c in table.columns]
    if study.metric in table:
        table = table.sort_values(study.metric, ascending=study.mode == "min", na_position="last")
    return table.reset_index(drop=True)


def write_report(storage: str, name: str) -> str:
    """Write figures and ``report.md`` for study ``name``; return the report's path."""
    study = load_study(name, storage)
    lines = [f"# Study `{name}`", ""]
    if study.spec.get("description"):
        lines += [study.spec["description"].strip(), ""]
    counts = study.trials["status"].value_counts().sort_index() if "status" in study.trials else pd.Series()
    lines += [f"{len(study.trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()), ""]

    plotted = [m for m in (study.metric, "train_loss", "val_loss", "test_error", "weight_norm")
               if m and m in study.metrics and study.metrics[m].notna().any()]
    for metric in dict.fromkeys(plotted):
        path = _save(study, figures.curves(study, metric), f"curves_{metric}.png")
        lines += [f"![{metric}]({path})", ""]

    lines += ["## Trials", "", summary_table(study).to_markdown(index=False), ""]
    lines += ["## Spec", "", "```yaml", yaml.safe_dump(study.spec, sort_keys=False).strip(), "```", ""]
    info = json.loads(study.store.read_text("study.json"))
    lines += ["## Provenance", "", "```json", json.dumps(info, indent=2), "```", ""]
    study.store.write_text("report.md", "\n".join(lines))
    return posixpath.join(study.store.root, "report.md")

