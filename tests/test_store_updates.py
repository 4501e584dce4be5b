"""The trials table is written incrementally: update files while a driver runs, merged as they
pile up, ``trials.parquet`` whole once at the end; readers see the latest row of every trial."""

import os
from collections import Counter

import pandas as pd
import pytest

from study.store import TRIAL_UPDATES, UPDATE_FANOUT, StoreError, StoreWriter, StudyStore

PROVENANCE = {"git_commit": "abc123", "git_dirty": False, "versions": "{}", "host": "here"}


def make_store(storage, name="s"):
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", "name: s\n")
    return store


def counting(store):
    """Wrap the store's two trial writes; returns the list of (kind, rows) written."""
    written = []
    update, whole = store.write_trial_update, store.write_trials

    def write_update(first, last, rows):
        written.append(("update", len(rows)))
        update(first, last, rows)

    def write_whole(rows):
        written.append(("whole", len(rows)))
        whole(rows)

    store.write_trial_update, store.write_trials = write_update, write_whole
    return written


def update_files(store):
    return sorted(os.listdir(store.path(TRIAL_UPDATES))) if os.path.isdir(store.path(TRIAL_UPDATES)) else []


def test_each_trial_row_is_rewritten_log_times_not_once_per_flush(storage):
    """512 trials ending one after another: 512 one-row updates, merged 8 into 1 at three levels
    (64 files of 8 rows, 8 of 64, 1 of 512): 4 x 512 rows in all, against 1 + 2 + ... + 512 =
    131,328 for a whole-table rewrite at each end; one update file is left, then none."""
    assert UPDATE_FANOUT == 8
    store = make_store(storage)
    written = counting(store)
    writer = StoreWriter(store, PROVENANCE)
    for i in range(512):
        writer.trial_started(f"t{i:04d}", {"lr": 0.1, "seed": i})
        writer.add_result(f"t{i:04d}", {"loss": float(i), "training_iteration": 1})
        writer.trial_ended(f"t{i:04d}", "finished")
    updates = [rows for kind, rows in written if kind == "update"]
    assert len(updates) == 512 + 64 + 8 + 1
    assert sum(updates) == 4 * 512
    assert sorted(set(updates)) == [1, 8, 64, 512]
    assert update_files(store) == ["00000000-00000511.parquet"]
    assert not store.has_file("trials.parquet")

    trials = store.read_trials()
    assert trials["trial_id"].tolist() == [f"t{i:04d}" for i in range(512)]
    assert (trials["status"] == "finished").all() and trials["loss"].tolist() == [float(i) for i in range(512)]

    writer.close()
    assert written[-1] == ("whole", 512) and update_files(store) == []
    writer.close()  # Tune's experiment end and the launch both close it: the second writes nothing
    assert written[-1] == ("whole", 512) and len(written) == 512 + 64 + 8 + 1 + 1
    pd.testing.assert_frame_equal(store.read_trials(), trials)


def test_a_reader_mid_run_sees_every_trials_latest_row(storage):
    """Trials updated across several files (started, reporting, ended, restarted): the reader
    applies the files oldest first, so each trial's row is its last one; the file count stays
    at most FANOUT - 1 per level."""
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE, flush_seconds=0.0)  # every report is a flush
    expected = {}
    for step in range(1, 61):
        for k in range(3):
            trial = f"t{k}"
            if step == 1:
                writer.trial_started(trial, {"lr": 0.1 * (k + 1)})
            writer.add_result(trial, {"loss": step + k / 10, "training_iteration": step})
            expected[trial] = step + k / 10
        if step == 30:
            writer.trial_ended("t1", "failed", error="boom")
        trials = store.read_trials().set_index("trial_id")
        assert trials["loss"].to_dict() == expected
        assert trials["reports"].to_dict() == {"t0": step, "t1": step, "t2": step}
        per_level = Counter(update.level for update in writer.updates)
        assert len(update_files(store)) == len(writer.updates) and max(per_level.values()) < UPDATE_FANOUT
    trials = store.read_trials().set_index("trial_id")
    assert trials.loc["t1", "status"] == "failed" and trials.loc["t1", "error"] == "boom"
    assert trials.loc["t0", "status"] == "running"


def test_a_crash_between_merge_and_delete_reads_alike(storage):
    """A merged file written and its inputs not yet deleted (the driver died between): both
    are read, in order, and give what the merged file alone gives."""
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    for i in range(UPDATE_FANOUT):
        writer.trial_started(f"t{i}", {"seed": i})
        writer.trial_ended(f"t{i}", "finished")
    merged = store.read_trials()
    assert update_files(store) == [f"00000000-{UPDATE_FANOUT - 1:08d}.parquet"]
    # the inputs, as they were before the merge deleted them: each trial's row as it ended
    for i in range(UPDATE_FANOUT):
        store.write_trial_update(i, i, [writer.trials[f"t{i}"]])
    assert len(update_files(store)) == UPDATE_FANOUT + 1
    pd.testing.assert_frame_equal(store.read_trials(), merged)
    # a whole table then written over them (close) removes them
    writer.close()
    assert update_files(store) == []
    pd.testing.assert_frame_equal(store.read_trials(), merged)


def test_a_resumed_writer_reads_a_dead_drivers_updates_and_numbers_after_them(storage):
    store = make_store(storage)
    first = StoreWriter(store, PROVENANCE)
    for trial in ("a", "b"):
        first.trial_started(trial, {"seed": 0 if trial == "a" else 1})
        first.add_result(trial, {"loss": 1.0, "training_iteration": 1})
    first.flush()
    first.trial_ended("b", "finished")  # the driver dies here: no trials.parquet, two update files
    assert not store.has_file("trials.parquet") and update_files(store) == ["00000000-00000000.parquet",
                                                                            "00000001-00000001.parquet"]
    second = StoreWriter(store, PROVENANCE)
    second.load_existing()
    assert second.trials["a"]["status"] == "running" and second.trials["a"]["reports"] == 1
    second.trial_started("a", {"seed": 0})
    second.add_result("a", {"loss": 0.5, "training_iteration": 2})
    second.trial_ended("a", "finished")
    assert update_files(store)[-1] == "00000002-00000002.parquet"  # after the dead driver's, none overwritten
    trials = store.read_trials().set_index("trial_id")
    assert trials.loc["a", "status"] == "finished" and trials.loc["a", "loss"] == 0.5 and trials.loc["a", "restarts"] == 1
    assert trials.loc["b", "status"] == "finished" and trials.loc["b", "loss"] == 1.0  # only in the dead driver's files
    second.close()
    assert update_files(store) == [] and store.read_trials()["status"].tolist() == ["finished", "finished"]


def test_an_update_column_of_another_type_is_promoted(storage):
    store = make_store(storage)
    store.write_trials([{"trial_id": "a", "status": "finished", "x": 1}, {"trial_id": "b", "status": "running"}])
    store.write_trial_update(0, 0, [{"trial_id": "b", "status": "finished", "x": 2.5, "error": None}])
    trials = store.read_trials()
    assert trials["x"].tolist() == [1.0, 2.5] and trials["status"].tolist() == ["finished", "finished"]


def test_a_foreign_file_among_the_updates_is_refused_by_name(storage):
    store = make_store(storage)
    store.write_trial_update(0, 0, [{"trial_id": "a", "status": "running"}])
    os.rename(store.path(TRIAL_UPDATES, "00000000-00000000.parquet"), store.path(TRIAL_UPDATES, "mine.parquet"))
    with pytest.raises(StoreError, match=r"trial-updates/mine.parquet: not a trial update file"):
        store.read_trials()


def test_a_reader_lists_again_when_a_merge_removed_a_file_it_had_listed(storage, monkeypatch):
    """`study status` while the driver merges: a listed update file is gone when opened; the
    reader lists again instead of failing (and says so after many tries)."""
    store = make_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    writer.trial_started("a", {"seed": 0})
    writer.trial_ended("a", "finished")
    real = store.trial_update_files
    listings = []

    def racing():
        listings.append(1)
        return real() + ([store.path(TRIAL_UPDATES, "00000000-00000003.parquet")] if len(listings) == 1 else [])

    monkeypatch.setattr(store, "trial_update_files", racing)
    assert store.read_trials()["status"].tolist() == ["finished"] and len(listings) == 2

    monkeypatch.setattr(store, "trial_update_files", lambda: real() + [store.path(TRIAL_UPDATES, "00000009-00000009.parquet")])
    with pytest.raises(StoreError, match="kept changing while they were read"):
        store.read_trials()
