"""Run a study: a ``ray.tune.Tuner`` built from the spec, results into the Parquet store."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import pandas as pd
import yaml

from study.spec import StudySpec
from study.store import StoreError, StoreWriter, StudyStore
from study.provenance import provenance

DEFAULT_STORAGE = "studies"


class LaunchError(RuntimeError):
    """A study that cannot start (e.g. its name is taken); one line, nothing written."""


@dataclass
class StudyResult:
    """What a finished launch returns: where the study lives and its trials table."""

    spec: StudySpec
    store: StudyStore
    result_grid: object  # ray.tune.ResultGrid

    def trials(self) -> pd.DataFrame:
        return self.store.read_trials()

    def metrics(self) -> pd.DataFrame:
        return self.store.read_metrics()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address`` or ``RAY_ADDRESS``) or start Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)


def param_space(spec: StudySpec) -> dict:
    from ray import tune

    return {**spec.config, **{axis: tune.grid_search(list(values)) for axis, values in spec.axes.items()}}


def launch(spec: StudySpec, *, storage: str = DEFAULT_STORAGE, address: str | None = None,
           overwrite: bool = False, progress: bool = True, stream=None) -> StudyResult:
    """Run every trial of ``spec`` and store the results under ``storage/<spec.name>``.

    Refuses a study name that already exists in the store unless ``overwrite``.
    """
    from ray import tune

    from study.callbacks import ProgressCallback, StoreCallback
    from trainables.ray_entry import ray_trainable

    store = StudyStore(storage, spec.name)
    if store.exists() and not overwrite:
        raise LaunchError(f"study {spec.name!r} already exists in {storage}; choose another --name, "
                          f"or pass --overwrite to replace it")
    if store.exists():
        store.fs.delete_dir(store.root)
    ensure_ray(address)

    store.write_text("spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    info = provenance()
    store.write_text("study.json", json.dumps({"name": spec.name, "source": spec.source,
                                               "launched_at": pd.Timestamp.now(tz="UTC").isoformat(),
                                               **info}, indent=2))
    writer = StoreWriter(store, info)
    callbacks = [StoreCallback(writer)]
    if progress:
        callbacks.append(ProgressCallback(spec.num_trials, spec.metric, spec.mode, stream=stream or sys.stdout))

    trainable = tune.with_resources(ray_trainable(spec.trainable),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=store.uri,
            stop=dict(spec.stop) or None,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=0,
        ),
    )
    result_grid = tuner.fit()
    writer.close()
    return StudyResult(spec=spec, store=store, result_grid=result_grid)

__all__ = ["launch", "ensure_ray", "LaunchError", "StudyResult", "StoreError", "DEFAULT_STORAGE"]
