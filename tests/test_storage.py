"""Storage: local paths and URIs, an S3 store for real (moto's S3 server on 127.0.0.1), and the
writer's guarantees (rows durable before a checkpoint, a re-created trial continues the stored one)."""

import io
import logging
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from study.store import (StoreError, StoreWriter, StudyStore, config_key, display_storage, list_studies,
                         resolve_storage)

# S3 clients (the driver's and Ray's workers') find credentials in the environment; moto
# accepts any. Set at import, i.e. before the session's Ray starts, so its workers inherit them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

PROVENANCE = {"git_commit": "abc", "git_dirty": False, "versions": "{}", "host": "here"}


@pytest.fixture(scope="module")
def s3_server():
    """An S3-compatible server on 127.0.0.1 (moto), for the module's tests."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield "127.0.0.1:%d" % server._server.server_address[1]
    server.stop()


def s3_uri(endpoint: str, bucket: str, prefix: str = "studies") -> str:
    return (f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"
            f"&allow_bucket_creation=true")


def rows(first, last):
    return [{"step": 10 * i, "loss": 1.0 / i, "training_iteration": i, "time_total_s": 0.1 * i}
            for i in range(first, last + 1)]


def new_store(storage, name="s"):
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", "name: s\n")
    return store


# ---------------------------------------------------------------- resolving --storage


def test_local_paths_and_uris_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve_storage("studies")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "studies")
    fs, path = resolve_storage(f"file://{tmp_path}/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/x"
    fs, path = resolve_storage("s3://bucket/pre/fix?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1")
    assert fs.type_name == "s3" and path == "bucket/pre/fix"
    assert display_storage("s3://bucket/p?endpoint_override=h:1") == "s3://bucket/p"
    fs, path = resolve_storage("memory://studies")  # a scheme only fsspec knows
    assert fs.type_name.startswith("py::fsspec+") and "memory" in fs.type_name and path == "/studies"


def test_bad_storage_uri_is_one_clear_error():
    with pytest.raises(StoreError, match="--storage s3://bucket/x\\?colour=red: .*colour"):
        resolve_storage("s3://bucket/x?colour=red")
    with pytest.raises(StoreError, match="neither pyarrow nor fsspec can open"):
        resolve_storage("nosuchscheme://x/y")


def test_store_on_an_fsspec_filesystem_round_trips():
    store = new_store("memory://wd-study-test-store")
    writer = StoreWriter(store, PROVENANCE)
    writer.trial_started("t", {"lr": 0.1})
    for row in rows(1, 3):
        writer.add_result("t", row)
    writer.trial_ended("t", "finished")
    assert store.read_metrics()["training_iteration"].tolist() == [1, 2, 3]
    assert store.read_trials()["status"].tolist() == ["finished"]
    assert list_studies("memory://wd-study-test-store") == ["s"]
    store.delete()


# ---------------------------------------------------------------- writer guarantees


def test_rows_are_durable_before_a_checkpoint_is_recorded(storage):
    store = new_store(storage)
    writer = StoreWriter(store, PROVENANCE, flush_seconds=3600)  # only checkpoints and ends flush
    writer.trial_started("t", {"lr": 0.1})
    for row in rows(1, 4):
        writer.add_result("t", row)
    assert store.metric_files() == []  # buffered
    writer.trial_checkpointed("t")  # what StoreCallback.on_checkpoint does before Tune records it
    for row in rows(5, 6):
        writer.add_result("t", row)
    # the driver dies here: rows 5 and 6 were only buffered
    assert store.read_metrics()["training_iteration"].tolist() == [1, 2, 3, 4]

    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    assert again.trial_started("t", {"lr": 0.1}) == "t"
    for row in rows(5, 8):  # the trial resumes from its checkpoint at iteration 4
        assert again.add_result("t", row)
    again.trial_ended("t", "finished")
    assert store.read_metrics()["training_iteration"].tolist() == list(range(1, 9))
    trial = store.read_trials().iloc[0]
    assert trial["reports"] == 8 and trial["restarts"] == 1 and trial["status"] == "finished"


def test_repeats_after_a_restore_are_dropped_even_when_flushed(storage):
    store = new_store(storage)
    writer = StoreWriter(store, PROVENANCE, flush_rows=1)  # every row written at once
    for row in rows(1, 5):
        writer.add_result("t", row)
    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    results = [again.add_result("t", row) for row in rows(3, 7)]  # restored from iteration 2
    again.close()
    assert results == [False, False, False, True, True]
    assert store.read_metrics()["training_iteration"].tolist() == list(range(1, 8))


def test_a_trial_recreated_under_a_new_id_continues_the_stored_one(storage):
    store = new_store(storage)
    config = {"lr": 0.1, "weight_decay": 0, "schedule": "cosine", "steps": 8}
    writer = StoreWriter(store, PROVENANCE)
    writer.trial_started("old_00001", config)
    for row in rows(1, 3):
        writer.add_result("old_00001", row)
    writer.close()  # the driver dies; Tune never saved this trial, and re-creates it as new_00007

    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    # an int read back as a float, or keys in another order, is the same config
    assert again.trial_started("new_00007", {**config, "weight_decay": 0.0}) == "old_00001"
    for row in rows(1, 8):  # restarted from scratch: 1..3 are repeats
        again.add_result("new_00007", row)
    again.trial_ended("new_00007", "finished")
    trials = store.read_trials()
    assert trials["trial_id"].tolist() == ["old_00001"] and trials["status"].tolist() == ["finished"]
    assert store.read_metrics()["training_iteration"].tolist() == list(range(1, 9))


def test_identical_configs_are_never_merged(storage):
    store = new_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    writer.trial_started("a", {"lr": 0.1})
    writer.trial_started("b", {"lr": 0.1})  # a twin in the same run keeps its own id
    writer.trial_ended("a", "finished")
    writer.close()
    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    ids, keys = again.ended()
    assert ids == {"a"} and keys == set()  # ambiguous: only the id may skip
    assert again.trial_started("c", {"lr": 0.1}) == "c"


def test_ended_trials_and_unresumable_ones(storage):
    store = new_store(storage)
    writer = StoreWriter(store, PROVENANCE)
    for trial_id, status in [("f", "finished"), ("d", "diverged"), ("x", "failed"), ("r", "running")]:
        writer.trial_started(trial_id, {"seed": trial_id})
        writer.add_result(trial_id, rows(1, 1)[0])
        if status != "running":
            writer.trial_ended(trial_id, status, error="boom" if status == "failed" else None)
    writer.close()
    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    assert again.ended()[0] == {"f", "d", "x"}
    assert again.ended(include_failed=False)[0] == {"f", "d"}
    assert again.ended()[1] == {config_key({"seed": s}) for s in "fdx"}
    assert again.mark_unresumable("lost") == ["r"]
    trials = store.read_trials().set_index("trial_id")
    assert trials.loc["r", "status"] == "failed" and trials.loc["r", "error"] == "lost"
    assert trials.loc["x", "error"] == "boom" and trials.loc["r", "reports"] == 1


def test_load_existing_recounts_reports_from_the_metric_files(storage):
    store = new_store(storage)
    writer = StoreWriter(store, PROVENANCE, flush_rows=2)
    writer.trial_started("t", {"seed": 0})
    for row in rows(1, 5):
        writer.add_result("t", row)  # rows 1-4 flushed with the table; row 5 only buffered
    again = StoreWriter(store, PROVENANCE)
    again.load_existing()
    assert again.trials["t"]["reports"] == 4 and again.last_iteration["t"] == 4


# ---------------------------------------------------------------- S3 for real


def test_store_on_s3_round_trips_and_refuses_foreign_files(s3_server):
    storage = s3_uri(s3_server, "wd-store")
    store = new_store(storage, "plain")
    writer = StoreWriter(store, PROVENANCE, flush_rows=2)
    writer.trial_started("t", {"lr": 0.1})
    for row in rows(1, 5):
        writer.add_result("t", row)
    writer.trial_ended("t", "finished")
    assert store.read_metrics()["training_iteration"].tolist() == [1, 2, 3, 4, 5]
    assert len(store.metric_files("t")) == 3
    assert list_studies(storage) == ["plain"]

    fs, _ = resolve_storage(storage)
    path = store.path("trials.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1]}), sink)
    with fs.open_output_stream(path) as f:
        f.write(sink.getvalue().to_pybytes())
    with pytest.raises(StoreError, match="wd-store/studies/plain/trials.parquet: not a wd-study trials file"):
        store.read_trials()


def test_study_on_s3_end_to_end(ray_session, s3_server, capsys):
    """A tiny study launched with an s3:// store (Tune's experiment and checkpoints too) reads back fully."""
    from study import launch, parse_spec
    from study.cli import main
    from study.launch import resume

    storage = s3_uri(s3_server, "wd-studies")
    spec = parse_spec({"name": "on-s3", "trainable": "probe", "config": {"steps": 4, "checkpoint_every": 2},
                       "axes": {"seed": [0, 1]}, "resources": {"cpu": 1}})
    result = launch(spec, storage=storage, stream=io.StringIO())
    assert result.complete
    trials = result.trials()
    assert sorted(trials["status"]) == ["finished", "finished"]
    metrics = result.metrics()
    assert metrics.groupby("trial_id")["training_iteration"].apply(list).tolist() == [[1, 2, 3, 4]] * 2

    fs, root = resolve_storage(storage)
    files = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{root}/on-s3", recursive=True))
             if i.type == pafs.FileType.File]
    assert f"{root}/on-s3/tune/tuner.pkl" in files  # Ray Tune's experiment lives in the bucket
    assert sum("/checkpoint_" in f and f.endswith("state.pt") for f in files) == 4  # 2 per trial, kept
    assert not any(f.endswith("driver.lock") for f in files)

    again = resume("on-s3", storage=storage, stream=io.StringIO())  # nothing left to do
    assert again.complete and len(again.metrics()) == 8

    assert main(["status", "on-s3", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "2 trials: 2 finished" in out and "no driver is running it" in out
