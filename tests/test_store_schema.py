"""The store as plain readers see it, and what makes it durable and safe to load:

- every metric part file carries the trainable's full metric schema, so pandas, polars and
  DuckDB with their default options read every column a real vision and LM study reported
  (compared with ``StudyStore.read_metrics``); stores written before still read whole;
- a store file is fsynced before the rename that publishes it, its folder after;
- a checkpoint holding a pickled object is refused, not run.
"""

import io
import math
import os
import pickle
import stat

import pandas as pd
import pyarrow.parquet as pq
import pytest

from study import launch, parse_spec
from study.launch import study_metric_types
from study.store import StoreWriter, StudyStore, rows_to_table
from tests.conftest import NANO_LM
from tests.test_vision import TINY
from trainables import get_trainable
from trainables.session import BareSession, RaySession, load_state, save_state

# ---------------------------------------------------------------- readers see every column


def read_with_every_reader(metrics_dir: str) -> dict[str, pd.DataFrame]:
    """The metric rows as pandas, polars and DuckDB read the folder with their default options."""
    import duckdb
    import polars as pl

    return {
        "pandas": pd.read_parquet(metrics_dir),
        "polars": pl.read_parquet(metrics_dir).to_pandas(),
        "duckdb": duckdb.sql(f"select * from read_parquet('{metrics_dir}/*/*.parquet')").df(),
    }


def same_as_store(store: StudyStore) -> None:
    expected = store.read_metrics()
    for reader, frame in read_with_every_reader(store.path("metrics")).items():
        assert set(frame.columns) == set(expected.columns), (reader, set(frame.columns) ^ set(expected.columns))
        frame = frame.assign(trial_id=frame["trial_id"].astype(str))
        frame = frame.sort_values(["trial_id", "training_iteration"]).reset_index(drop=True)[list(expected.columns)]
        for column in expected.columns:
            got, want = frame[column].tolist(), expected[column].tolist()
            assert [None if _missing(v) else v for v in got] == [None if _missing(v) else v for v in want], \
                (reader, column)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def test_a_vision_study_reads_whole_in_pandas_polars_and_duckdb(ray_session, storage):
    # the first trial never measures Tr(H), the second does at its last epoch: the first
    # trial's part file used to lack the hessian columns, and readers took their schema from it
    config = {**{k: v for k, v in TINY.items() if k != "hessian_every"}, "epochs": 2, "decay_epoch": 1}
    spec = parse_spec({"name": "vision-readers", "trainable": "vision", "config": config,
                       "axes": {"hessian_every": [0, 2]}, "resources": {"cpu": 1}})
    store = launch(spec, storage=storage, stream=io.StringIO()).store
    assert set(store.read_trials()["status"]) == {"finished"}
    columns = set(store.read_metrics().columns)
    assert {"hessian_trace", "finetune_test_error", "weight_norm/convs.0"} <= columns
    same_as_store(store)


def test_an_lm_study_reads_whole_in_pandas_polars_and_duckdb(ray_session, storage):
    # ema_decay 0 never reports ema_val_loss; the trial with it comes first
    spec = parse_spec({"name": "lm-readers", "trainable": "lm", "config": {**NANO_LM, "steps": 4},
                       "axes": {"ema_decay": [0.0, 0.9]}, "resources": {"cpu": 1}})
    store = launch(spec, storage=storage, stream=io.StringIO()).store
    assert set(store.read_trials()["status"]) == {"finished"}
    assert "ema_val_loss" in store.read_metrics().columns
    same_as_store(store)


def test_the_declared_vision_schema_names_exactly_what_a_trial_reports():
    """The per-layer columns declared up front (from a model on the meta device) are the ones reported."""
    config = {**TINY, "epochs": 1, "hessian_every": 1, "finetune_every": 1}
    session = BareSession()
    get_trainable("vision").run_function()(config, session)
    reported = set().union(*session.reports)
    declared = get_trainable("vision").metric_schema([config])
    assert reported <= set(declared)
    assert {k for k in declared if k.startswith("weight_norm/")} == {k for k in reported if k.startswith("weight_norm/")}


def test_the_study_schema_covers_every_model_on_the_grid():
    spec = parse_spec({"name": "models", "trainable": "vision", "config": {"dataset": "cifar10", "epochs": 1,
                                                                           "data_dir": "/nonexistent"},
                       "axes": {"model": ["vgg11", "preact-resnet18"]}, "resources": {"cpu": 1}})
    types = study_metric_types(spec)
    layers = get_trainable("vision").metric_schema
    for model in ("vgg11", "preact-resnet18"):
        assert layers([{"model": model, "dataset": "cifar10"}]).items() <= types.items()
    assert types["training_iteration"] == "int64" and types["hessian_trace"] == "double"


def test_part_files_carry_the_full_schema_and_old_stores_stay_readable(storage):
    store = StudyStore(storage, "mixed")
    store.write_text("spec.yaml", "name: mixed\n")
    old = StoreWriter(store, {})  # as written before: only the reported columns
    old.trial_started("a", {"seed": 0})
    old.add_result("a", {"step": 1, "loss": 2.0, "training_iteration": 1, "time_total_s": 0.1})
    old.trial_ended("a", "finished")
    types = {"training_iteration": "int64", "time_total_s": "double", **get_trainable("probe").metric_schema()}
    new = StoreWriter(store, {}, metric_types=types)
    new.load_existing()
    new.trial_started("b", {"seed": 1})
    new.add_result("b", {"step": 1, "loss": 3.0, "training_iteration": 1, "time_total_s": 0.2})
    new.add_result("b", {"step": 2, "loss": math.nan, "diverged_step": 2, "last_finite_loss": 3.0,
                         "training_iteration": 2, "time_total_s": 0.3})
    new.trial_ended("b", "diverged")
    schema = pq.read_schema(store.metric_files("b")[0])
    assert [(f.name, str(f.type)) for f in schema] == [(k, {"int64": "int64", "double": "double"}[v])
                                                       for k, v in types.items()]
    frame = store.read_metrics()
    assert frame["trial_id"].tolist() == ["a", "b", "b"]
    assert frame["diverged_step"].tolist()[1:] == [None, 2] or frame["diverged_step"].isna().tolist() == [True, True, False]
    assert frame["loss"].tolist()[:2] == [2.0, 3.0] and math.isnan(frame["loss"].iloc[2])


def test_a_value_that_does_not_fit_its_declared_type_is_kept():
    table = rows_to_table([{"step": 3.0}, {"step": 4.5}, {"other": "x"}], {"step": "int64", "loss": "double"})
    assert table.column_names == ["step", "loss", "other"]
    assert table.column("step").to_pylist() == [3.0, 4.5, None]  # not an integer: kept as reported
    assert str(table.schema.field("loss").type) == "double" and table.column("loss").null_count == 3
    assert str(rows_to_table([{"step": 3.0}], {"step": "int64"}).schema.field("step").type) == "int64"


# ---------------------------------------------------------------- fsync before the rename


def test_a_store_file_is_fsynced_before_the_rename_and_its_folder_after(storage, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("rename", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst, *args, **kwargs)

    store = StudyStore(storage, "durable")
    store.write_text("spec.yaml", "name: durable\n")  # creates the folders
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.write_trials([{"trial_id": "a", "status": "running"}])
    final = store.path("trials.parquet")
    renames = [e for e in events if e[0] == "rename" and e[2] == final]
    assert len(renames) == 1, events
    tmp = renames[0][1]
    at = events.index(renames[0])
    assert ("fsync", "file", tmp) in events[:at], events  # the data is on disk before its name is
    assert ("fsync", "folder", store.root) in events[at + 1:], events  # and the rename after it


# ---------------------------------------------------------------- checkpoints load no code


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-from-a-checkpoint",))


def test_a_crafted_checkpoint_with_a_pickled_object_is_refused(tmp_path, monkeypatch):
    import torch
    from ray import tune

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"step": 3, "payload": _RunsCode()}, folder / RaySession.FILE)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(folder)))
    with pytest.raises(pickle.UnpicklingError):
        RaySession().restored_state()
    assert not (tmp_path / "ran-from-a-checkpoint").exists()


@pytest.mark.parametrize("trainable, config", [
    ("probe", {"steps": 4, "checkpoint_every": 1}),
    ("lm", {**NANO_LM, "checkpoint_every": 1}),
    ("vision", {**TINY, "epochs": 1, "checkpoint_every": 1}),
])
def test_every_trainables_checkpoint_loads_with_weights_only(trainable, config):
    session = BareSession()
    get_trainable(trainable).run_function()(config, session)
    assert session.states
    buffer = io.BytesIO()
    save_state(session.states[-1], buffer)
    buffer.seek(0)
    loaded = load_state(buffer)
    assert loaded.keys() == session.states[-1].keys()
