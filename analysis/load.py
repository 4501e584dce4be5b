"""The store of one study as pandas DataFrames (analysis only reads the store)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import yaml

from study.store import StoreError, StudyStore


@dataclass
class Study:
    """A stored study.

    Args:
        name: the study's name.
        spec: the spec it ran (``spec.yaml``) as plain data.
        trials: one row per trial (``trials.parquet``).
        metrics: one row per report, with ``trial_id`` (``metrics/``).
        folder: the study's folder in the store (where reports go).
    """

    name: str
    spec: dict
    trials: pd.DataFrame
    metrics: pd.DataFrame
    store: StudyStore = field(repr=False)

    @property
    def axes(self) -> list[str]:
        return list(self.spec.get("axes", {}))

    @property
    def metric(self) -> str:
        return self.spec.get("metric", "")

    @property
    def mode(self) -> str:
        return self.spec.get("mode", "min")

    def curves(self) -> pd.DataFrame:
        """Metric rows joined with each trial's axis values and status."""
        columns = ["trial_id", "status", *[f"config/{a}" for a in self.axes]]
        keep = self.trials[[c for c in columns if c in self.trials]]
        return self.metrics.merge(keep, on="trial_id", how="left")


def load_study(name: str, storage: str) -> Study:
    store = StudyStore(storage, name)
    if not store.exists():
        raise StoreError(f"no study named {name!r} in {storage}")
    spec = yaml.safe_load(store.read_text("spec.yaml")) or {}
    return Study(name=name, spec=spec, trials=store.read_trials(), metrics=store.read_metrics(), store=store)
