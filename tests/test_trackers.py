"""The spec's ``loggers``: validation (before Ray starts), and one real study that logs to all four
trackers offline (csv, tensorboard, mlflow with a local file store, wandb in offline mode), each
read back with the tracker's own reader and compared with the Parquet store."""

from __future__ import annotations

import glob
import os
import struct

import pandas as pd
import pytest
import yaml

from study import trackers
from study.cli import main
from study.errors import EXIT_USAGE
from study.launch import launch
from study.spec import SpecError, load_spec, parse_spec

BASE = {"name": "tracked", "trainable": "probe", "config": {"steps": 3}, "axes": {"lr": [0.1, 0.2]}}


# ---------------------------------------------------------------- the spec's key


def test_loggers_as_names_or_with_options_and_through_set(tmp_path):
    assert parse_spec(BASE).loggers == {}
    assert "loggers" not in parse_spec(BASE).to_dict()  # a spec without trackers is stored as before
    spec = parse_spec({**BASE, "loggers": ["csv", "tensorboard"]})
    assert spec.loggers == {"csv": {}, "tensorboard": {}}
    spec = parse_spec({**BASE, "loggers": {"mlflow": {"tracking_uri": "file:///x", "experiment_name": "e"},
                                           "wandb": {"mode": "offline", "project": "p"}, "csv": None}})
    assert spec.loggers == {"mlflow": {"tracking_uri": "file:///x", "experiment_name": "e"},
                            "wandb": {"mode": "offline", "project": "p"}, "csv": {}}
    assert parse_spec(spec.to_dict()).loggers == spec.loggers  # what spec.yaml holds loads back

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(str(path), ["loggers=[csv, mlflow]"]).loggers == {"csv": {}, "mlflow": {}}
    spec = load_spec(str(path), ["loggers={wandb: {mode: offline}}", "loggers.wandb.project=wd"])
    assert spec.loggers == {"wandb": {"mode": "offline", "project": "wd"}}


@pytest.mark.parametrize("loggers, words", [
    (["comet"], "loggers.comet: unknown tracker; choose from csv, tensorboard, mlflow, wandb"),
    (["csv", "csv"], "loggers: a tracker named twice"),
    ("csv", "loggers: expected a list of trackers"),
    ([1], "loggers: expected tracker names"),
    ({"mlflow": ["file:///x"]}, "loggers.mlflow: expected a mapping of options"),
    ({"mlflow": {"uri": "x"}}, "loggers.mlflow.uri: unknown option; mlflow takes: tracking_uri, experiment_name"),
    ({"mlflow": {"tracking_uri": ""}}, "loggers.mlflow.tracking_uri: expected a non-empty string"),
    ({"wandb": {"mode": "shared"}}, "loggers.wandb.mode: expected online, offline or disabled"),
    ({"wandb": {"api_key": "secret"}}, "loggers.wandb.api_key: unknown option"),  # spec.yaml is stored
    ({"csv": {"path": "x"}}, "loggers.csv.path: unknown option; csv takes: none"),
])
def test_bad_loggers_are_one_line_naming_the_key(loggers, words):
    with pytest.raises(SpecError) as error:
        parse_spec({**BASE, "loggers": loggers}, "s.yaml")
    assert str(error.value).startswith("s.yaml: ") and words in str(error.value)
    assert "\n" not in str(error.value)


def test_any_loggers_value_is_accepted_or_one_bounded_spec_error():
    from hypothesis import given, settings, strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50),
                        st.sampled_from(["csv", "tensorboard", "mlflow", "wandb", "mode", "offline", "project"]))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(scalars, inner, max_size=3)), max_leaves=12)

    @settings(max_examples=300, deadline=None)
    @given(values)
    def check(loggers):
        try:
            spec = parse_spec({**BASE, "loggers": loggers}, "s.yaml")
        except SpecError as error:
            assert "\n" not in str(error) and len(str(error)) < 400, str(error)
        else:
            assert set(spec.loggers) <= set(trackers.TRACKERS)

    check()


@pytest.mark.parametrize("name, module, extra", [
    ("mlflow", "mlflow", "mlflow"), ("wandb", "wandb", "wandb"), ("tensorboard", "tensorboardX", "tensorboard")])
def test_a_missing_tracker_library_is_exit_2_naming_the_extra_before_ray_starts(
        name, module, extra, monkeypatch, tmp_path, capsys):
    real = trackers.installed
    monkeypatch.setattr(trackers, "installed", lambda m: m != module and real(m))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(BASE))
    storage = tmp_path / "store"
    code = main(["launch", str(spec), "--set", f"loggers=[csv, {name}]", "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err == (f"error: {spec}: loggers.{name}: the {module} library is not installed; install it with "
                   f"pip install 'wd-study[{extra}]'\n")
    assert not storage.exists()  # nothing written, and Ray was never needed


@pytest.mark.parametrize("loggers, words", [
    ({"wandb": {"project": "p"}}, "loggers.wandb: cannot start: ValueError: No WandB API key found"),
    ({"mlflow": {"tracking_uri": "file:///nonexistent/mlruns"}},
     "loggers.mlflow: cannot start: MlflowException: The filesystem tracking backend"),
])
def test_a_tracker_that_cannot_start_is_exit_2_before_ray_starts(loggers, words, monkeypatch, tmp_path, capsys):
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no `wandb login` credentials (~/.netrc)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "loggers": loggers}))
    storage = tmp_path / "store"
    assert main(["launch", str(spec), "--storage", str(storage)]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"error: {spec}: {words}"), err
    assert not storage.exists()


def test_every_tracker_is_an_extra_of_pyproject_and_of_dev():
    import tomllib

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    for tracker in trackers.TRACKERS.values():
        if tracker.extra:
            packages = extras[tracker.extra]
            assert packages and all(any(p.startswith(q.split(">")[0].split("=")[0]) for q in extras["dev"])
                                    for p in packages), (tracker.extra, packages, extras["dev"])


# ---------------------------------------------------------------- one study, four trackers


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    spec = parse_spec({**BASE, "loggers": {
        "csv": {}, "tensorboard": {},
        "mlflow": {"tracking_uri": (root / "mlruns").as_uri(), "experiment_name": "wd-trackers"},
        "wandb": {"project": "wd-test", "mode": "offline", "dir": str(root / "wandb")}}})
    with pytest.MonkeyPatch.context() as patch:
        # MLflow 3 refuses its file store unless asked (it prefers a database: sqlite needs the full
        # mlflow package); the callback runs on the driver, so the driver's environment is enough.
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        result = launch(spec, storage=str(root / "store"), progress=False)
    trials = result.trials()
    assert sorted(trials["status"]) == ["finished", "finished"]
    return root, result.store, trials, result.metrics()


def _trial_dirs(store) -> dict[str, str]:
    """Ray Tune's folder of each trial, by trial id (its name holds the id)."""
    folders = glob.glob(os.path.join(store.tune_path, "probe_*"))
    return {"_".join(os.path.basename(f).split("_")[1:3]): f for f in folders if os.path.isdir(f)}


def _losses(metrics: pd.DataFrame, trial_id: str) -> list[tuple[int, float]]:
    rows = metrics[metrics["trial_id"] == trial_id].sort_values("training_iteration")
    return list(zip(rows["training_iteration"].astype(int), rows["loss"].astype(float)))


def assert_same_history(got, expected, rel=1e-9):
    """(step, value) pairs: the same steps, the values within ``rel``."""
    assert [int(step) for step, _ in got] == [step for step, _ in expected]
    assert [float(v) for _, v in got] == pytest.approx([v for _, v in expected], rel=rel)


def test_mlflow_has_one_run_per_trial_with_its_config_and_loss_history(tracked):
    from mlflow.tracking import MlflowClient

    root, store, trials, metrics = tracked
    client = MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("wd-trackers")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    by_lr = {run.data.params["lr"]: run for run in runs}
    for trial in trials.to_dict("records"):
        config = {c[len("config/"):]: v for c, v in trial.items() if c.startswith("config/")}
        run = by_lr[str(config["lr"])]
        assert run.data.params == {k: str(v) for k, v in config.items()}  # MLflow keeps params as text
        history = client.get_metric_history(run.info.run_id, "loss")
        assert_same_history([(m.step, m.value) for m in sorted(history, key=lambda m: m.step)],
                            _losses(metrics, trial["trial_id"]))
        assert run.info.status == "FINISHED"


def test_tensorboard_event_files_hold_the_loss_per_step(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, store, trials, metrics = tracked
    folders = _trial_dirs(store)
    for trial_id in trials["trial_id"]:
        events = EventAccumulator(folders[trial_id])
        events.Reload()
        scalars = events.Scalars("ray/tune/loss")
        assert_same_history([(s.step, s.value) for s in scalars], _losses(metrics, trial_id), rel=1e-6)  # float32


def test_csv_progress_holds_every_report_and_tunes_own_copies_are_off(tracked):
    _, store, trials, metrics = tracked
    folders = _trial_dirs(store)
    assert sorted(folders) == sorted(trials["trial_id"])
    for trial_id, folder in folders.items():
        progress = pd.read_csv(os.path.join(folder, "progress.csv"))
        assert_same_history(list(zip(progress["training_iteration"], progress["loss"])), _losses(metrics, trial_id))
        # Tune's automatic JSON logger would write result.json: it is off, as asked-for loggers only run
        assert not os.path.exists(os.path.join(folder, "result.json"))


def _wandb_records(path: str):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header
    (``:W&B``, a 2-byte magic, a version byte), then LevelDB log blocks of 32 KiB whose
    records have a 7-byte header (CRC32C, 2-byte length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:8]
    blocks, offset, pending = 32 * 1024, 7, b""
    while offset + 7 <= len(data):
        left = blocks - offset % blocks
        if left < 7:  # a block's tail too short for a header is padding
            offset += left
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if length == 0 and kind == 0:
            offset += left
            continue
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_runs_hold_the_config_and_loss_history(tracked):
    import json

    root, store, trials, metrics = tracked
    files = glob.glob(str(root / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 2, files
    runs = {}
    for path in files:
        run_id = os.path.basename(path)[len("run-"):-len(".wandb")]
        config, history = {}, []
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.project == "wd-test" and record.run.run_group == "tracked"
                for item in record.run.config.update:
                    config[item.key] = json.loads(item.value_json)
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                history.append((row["training_iteration"], row["loss"]))
        runs[run_id] = (config, history)
    assert sorted(runs) == sorted(trials["trial_id"])  # Ray names each W&B run by its trial id
    for trial in trials.to_dict("records"):
        config, history = runs[trial["trial_id"]]
        assert {k: config[k] for k in ("lr", "steps")} == {"lr": trial["config/lr"], "steps": 3}
        assert_same_history(history, _losses(metrics, trial["trial_id"]))


def test_only_rays_warning_about_missing_result_files_is_dropped():
    """With the automatic loggers off, the ResultGrid that Tuner.fit returns warns that every trial
    lacks result.json and progress.csv; the driver drops that warning (and no other)."""
    import importlib
    import logging

    launch_module = importlib.import_module("study.launch")  # `study.launch` the name is the function
    ray_logger = importlib.import_module("ray.tune.analysis.experiment_analysis").logger
    assert ray_logger.name == launch_module._RESULT_GRID_LOGGER  # fails loudly when Ray moves it
    drop = launch_module._NoMetricFilesWarning()

    def record(message):
        return logging.LogRecord(ray_logger.name, logging.WARNING, __file__, 1, message, None, None)

    missing = ("- probe_1: FileNotFoundError('Could not fetch metrics for probe_1: both result.json and "
               "progress.csv were not found at /x')")
    assert not drop.filter(record(f"Failed to fetch metrics for 1 trial(s):\n{missing}"))
    assert drop.filter(record("Failed to fetch metrics for 1 trial(s):\n- probe_1: PermissionError('denied')"))
    assert drop.filter(record("something else"))
