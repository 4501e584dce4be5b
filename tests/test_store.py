"""The Parquet store: what the callback receives is what pandas reads back; bad files are refused."""

import math
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.store import StoreError, StoreWriter, StudyStore, list_studies

PROVENANCE = {"git_commit": "abc123", "git_dirty": False, "versions": "{}", "host": "here"}


def reports(n, eval_every=2):
    rows = []
    for i in range(1, n + 1):
        row = {"step": 10 * i, "train_loss": 1.0 / i, "lr": 0.1, "tag": f"r{i}", "ok": i % 2 == 0,
               "training_iteration": i, "time_total_s": 0.5 * i}
        if i % eval_every == 0:
            row["val_loss"] = 2.0 / i  # reported only at eval points
        rows.append(row)
    return rows


def make_store(storage, name="s"):
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", "name: s\n")
    return store


def test_round_trip_values_and_types(storage):
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE, flush_rows=3)  # several part files per trial
    sent = {"t1": reports(7), "t2": reports(4)}
    for trial_id, rows in sent.items():
        writer.trial_started(trial_id, {"lr": 0.1, "weight_decay": 0.0, "schedule": "cosine", "seed": 3})
        for row in rows:
            writer.add_result(trial_id, dict(row))
    writer.trial_ended("t1", "finished")
    writer.trial_ended("t2", "diverged")
    writer.close()

    metrics = store.read_metrics()
    expected = pd.concat([pd.DataFrame(rows).assign(trial_id=t) for t, rows in sent.items()], ignore_index=True)
    expected = expected[["trial_id", *[c for c in expected if c != "trial_id"]]]
    got = metrics[expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got["step"].dtype == "int64" and got["train_loss"].dtype == "float64"
    assert got["ok"].dtype == "bool" and pd.api.types.is_string_dtype(got["tag"])
    assert math.isnan(got["val_loss"].iloc[0]) and got["val_loss"].iloc[1] == 1.0

    one = store.read_metrics("t2")
    assert one["trial_id"].unique().tolist() == ["t2"] and len(one) == 4

    trials = store.read_trials().set_index("trial_id")
    assert trials.loc["t1", "status"] == "finished" and trials.loc["t2", "status"] == "diverged"
    assert trials.loc["t1", "config/schedule"] == "cosine" and trials.loc["t1", "config/seed"] == 3
    assert trials["config/seed"].dtype == "int64" and trials["config/lr"].dtype == "float64"
    assert trials.loc["t1", "train_loss"] == pytest.approx(1 / 7)  # last reported value
    assert trials.loc["t1", "val_loss"] == pytest.approx(2 / 6)  # last value that was reported
    assert trials.loc["t1", "reports"] == 7 and trials.loc["t1", "git_commit"] == "abc123"
    assert trials.loc["t1", "ended_at"] >= trials.loc["t1", "started_at"]


def test_written_parts_are_never_rewritten(storage):
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE, flush_rows=2)
    writer.trial_started("t", {})
    for row in reports(2):
        writer.add_result("t", row)
    first = store.metric_files("t")
    stamp = os.stat(first[0]).st_mtime_ns
    for row in reports(6)[2:]:
        writer.add_result("t", row)
    writer.close()
    assert len(store.metric_files("t")) == 3
    assert os.stat(first[0]).st_mtime_ns == stamp
    assert not [f for f in os.listdir(os.path.dirname(first[0])) if f.endswith(".tmp")]


def test_repeated_iterations_are_stored_once(storage):
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    rows = reports(5)
    for row in rows[:4] + rows[2:]:  # a restored trial repeats iterations 3 and 4
        writer.add_result("t", row)
    writer.close()
    assert store.read_metrics()["training_iteration"].tolist() == [1, 2, 3, 4, 5]


def test_resumed_writer_continues_part_numbers(storage):
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    for row in reports(3):
        writer.add_result("t", row)
    writer.close()
    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    for row in reports(5):
        again.add_result("t", row)
    again.close()
    assert store.read_metrics()["training_iteration"].tolist() == [1, 2, 3, 4, 5]
    assert [os.path.basename(f) for f in store.metric_files("t")] == ["part-000000.parquet", "part-000001.parquet"]


def test_foreign_parquet_is_refused_and_kept(storage):
    store = make_store(storage)
    path = store.path("trials.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), path)
    before = open(path, "rb").read()
    with pytest.raises(StoreError, match="trials.parquet: not a wd-study trials file"):
        store.read_trials()
    assert open(path, "rb").read() == before


def test_corrupt_parquet_is_refused(storage):
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    writer.add_result("t", reports(1)[0])
    writer.close()
    part = store.metric_files("t")[0]
    with open(part, "wb") as f:
        f.write(b"PAR1 this is not parquet")
    with pytest.raises(StoreError, match="part-000000.parquet: corrupt Parquet file"):
        store.read_metrics()


def test_list_studies(storage):
    make_store(storage, "a")
    make_store(storage, "b")
    os.makedirs(os.path.join(storage, "not-a-study"))
    assert list_studies(storage) == ["a", "b"]
    assert list_studies(os.path.join(storage, "missing")) == []
