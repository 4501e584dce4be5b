"""The faults a long study meets, through real Ray Tune with the probe trainable.

A worker killed mid-trial, a trial that raises, a driver that dies (simulated in-process
in the worst case: Ray Tune's saved state predates the crash and buffered rows are lost;
and for real, SIGKILL of a driver subprocess, in the slow set), a second driver on a
running or stored study, a corrupt or foreign store file. After each the store must hold
every report exactly once, with the values of an uninterrupted run.
"""

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from study import parse_spec
from study.launch import LaunchError, launch, resume
from study.lock import DriverLock, DriverInfo, StudyBusy, read_lock
from study.store import StoreWriter, StudyStore
from trainables.probe import run as run_probe
from trainables.session import BareSession, load_state, save_state

FAULT_KNOBS = ("crash_at_step", "crash_marker", "fail_at_step", "sleep_s")


def reference(config: dict) -> list[dict]:
    """The reports of an uninterrupted, fault-free run of the probe (plain Python)."""
    session = BareSession()
    run_probe({k: v for k, v in config.items() if k not in FAULT_KNOBS}, session)
    return session.reports


def trial_configs(trials: pd.DataFrame) -> dict[str, dict]:
    columns = [c for c in trials if c.startswith("config/")]
    return {row["trial_id"]: {c[len("config/"):]: row[c] for c in columns if pd.notna(row[c])}
            for row in trials.to_dict("records")}


def assert_exactly_once_and_as_uninterrupted(store: StudyStore, trials: pd.DataFrame | None = None):
    trials = store.read_trials() if trials is None else trials
    metrics = store.read_metrics()
    for trial_id, config in trial_configs(trials).items():
        got = metrics[metrics["trial_id"] == trial_id]
        iterations = got["training_iteration"].tolist()
        assert iterations == list(range(1, len(iterations) + 1)), f"{trial_id}: {iterations}"
        expected = reference({k: (int(v) if k in ("steps", "seed", "checkpoint_every") else v)
                              for k, v in config.items()})
        assert got["loss"].tolist() == [r["loss"] for r in expected][:len(got)]  # bit for bit
    return metrics


def store_snapshot(store: StudyStore) -> dict[str, str]:
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest() for path in store.files(skip_tune=False)}


# ---------------------------------------------------------------- a worker dies, a trial raises


@pytest.fixture(scope="module")
def faulty(ray_session, tmp_path_factory):
    """One study of two trials: its worker is killed at step 8, or it raises at step 5 (first)."""
    root = tmp_path_factory.mktemp("faulty")
    spec = parse_spec({
        "name": "faulty", "trainable": "probe",
        "config": {"steps": 12, "checkpoint_every": 3, "crash_at_step": 8, "crash_marker": str(root / "markers")},
        "axes": {"fail_at_step": [0, 5]},
        "max_failures": 1, "resources": {"cpu": 1},
    })
    out = io.StringIO()
    result = launch(spec, storage=str(root / "store"), stream=out)
    return result, out.getvalue()


def by_fault(trials: pd.DataFrame) -> pd.DataFrame:
    return trials.set_index("config/fail_at_step")


def test_a_killed_worker_resumes_from_its_last_checkpoint(faulty):
    result, _ = faulty
    crashed = by_fault(result.trials()).loc[0]
    assert crashed["status"] == "finished" and crashed["restarts"] == 1
    assert crashed["restored_from_iteration"] == 6  # checkpoints at reports 3, 6, 9, 12; killed at 8
    assert crashed["reports"] == 12
    metrics = assert_exactly_once_and_as_uninterrupted(result.store)
    assert metrics[metrics["trial_id"] == crashed["trial_id"]]["step"].tolist() == list(range(1, 13))

    # Tune keeps the spec's keep_checkpoints (2) newest checkpoints of each trial
    tune_dir = result.store.path("tune")
    trial_dirs = [d for d in os.listdir(tune_dir) if d.startswith("probe_")]
    assert len(trial_dirs) == 2
    for folder in trial_dirs:
        kept = [c for c in os.listdir(os.path.join(tune_dir, folder)) if c.startswith("checkpoint_")]
        assert 1 <= len(kept) <= 2, (folder, kept)


def test_a_trial_that_raises_is_failed_and_the_study_goes_on(faulty):
    result, out = faulty
    assert result.complete
    trials = by_fault(result.trials())
    failed = trials.loc[5]
    assert failed["status"] == "failed", failed.to_dict()
    assert "RuntimeError: probe: injected failure at step 5" in failed["error"], failed["error"]
    assert failed["reports"] == 4, failed.to_dict()
    # max_failures retries any error: once, from its checkpoint at report 3, and it raised again
    assert failed["restarts"] == 1 and failed["restored_from_iteration"] == 3, failed.to_dict()
    assert trials.loc[0, "status"] == "finished" and pd.isna(trials.loc[0, "error"]), trials.loc[0].to_dict()
    assert_exactly_once_and_as_uninterrupted(result.store)
    assert "trials 2/2 done" in out and "1 failed" in out, out


def test_the_error_text_is_the_latest_failure_read_on_the_driver(tmp_path):
    from study.callbacks import trial_error_text

    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1 (occurred at 2026-01-01_00-00-00)\nRuntimeError: first\n"
                          "Failure # 2 (occurred at 2026-01-01_00-01-00)\nTraceback ...\nRuntimeError: second\n")

    class Trial:  # Ray Tune copies the file to the storage later: get_error() finds nothing yet
        def get_error(self):
            return None

    trial = Trial()
    trial.error_file = str(error_file)
    assert trial_error_text(trial) == "Traceback ...\nRuntimeError: second"
    trial.error_file = None
    assert trial_error_text(trial) == "trial failed (no error text recorded)"


def test_resume_with_retry_failed_runs_only_the_failed_trials_again(faulty, tmp_path):
    result, _ = faulty
    storage = str(tmp_path / "store")
    shutil.copytree(os.path.dirname(result.store.root), storage)  # a moved study resumes too
    before = by_fault(StudyStore(storage, "faulty").read_trials())

    again = resume("faulty", storage=storage, retry_failed=True, stream=io.StringIO())
    after = by_fault(again.trials())
    assert after.loc[0, "ended_at"] == before.loc[0, "ended_at"]  # finished: not run again
    assert after.loc[0, "restarts"] == before.loc[0, "restarts"]
    assert after.loc[5, "status"] == "failed" and after.loc[5, "restarts"] == 2  # raised once more
    assert after.loc[5, "ended_at"] > before.loc[5, "ended_at"]
    assert_exactly_once_and_as_uninterrupted(again.store)


# ---------------------------------------------------------------- the driver dies


class _Dead:
    """A store writer after its driver died: nothing it is asked to do happens."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _crash_study(storage, monkeypatch):
    """Run a study whose driver 'dies' once a trial finished and another is past its checkpoint.

    Worst case for resume: Ray Tune saves its experiment state only at the start
    (TUNE_GLOBAL_CHECKPOINT_S, no forced saves with keep_checkpoints null) and creates
    one trial at a time, so its state knows neither the finished trials nor the later
    ones; the writer's buffered rows are lost.
    """
    spec = parse_spec({"name": "crash", "trainable": "probe",
                       "config": {"steps": 12, "checkpoint_every": 3, "sleep_s": 0.02},
                       "axes": {"seed": [0, 1, 2]}, "resources": {"cpu": 1}, "keep_checkpoints": None})
    return crash_driver(spec, storage, monkeypatch, finished_before_crash=1)


def crash_driver(spec, storage, monkeypatch, *, finished_before_crash: int) -> dict:
    """Launch ``spec`` and let its driver 'die' (the store callback's writer dropped, an
    exception out of Tune) once ``finished_before_crash`` trials finished and a report of
    iteration ≥ 8 arrives with rows still buffered; return those lost rows' iterations."""
    from ray.tune import Callback

    launch_module = sys.modules["study.launch"]

    class CrashDriver(Callback):
        def __init__(self, store_callback):
            self.store_callback, self.lost = store_callback, None

        def on_trial_result(self, iteration, trials, trial, result, **info):
            writer = self.store_callback.writer
            statuses = [row.get("status") for row in writer.trials.values()]
            if (statuses.count("finished") >= finished_before_crash and result["training_iteration"] >= 8
                    and any(writer.buffers.values())):
                self.lost = {k: [r["training_iteration"] for r in v] for k, v in writer.buffers.items()}
                self.store_callback.writer = _Dead()
                raise RuntimeError("simulated driver crash")

    crash = []
    make_callbacks = launch_module._callbacks

    def with_crash(*args, **kwargs):
        callbacks = make_callbacks(*args, **kwargs)
        crash.append(CrashDriver(callbacks[0]))
        return callbacks + crash

    with monkeypatch.context() as patch:
        patch.setattr(launch_module, "_callbacks", with_crash)
        patch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "3600")
        patch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "1")
        with pytest.raises(Exception, match="simulated driver crash"):
            launch(spec, storage=storage, stream=io.StringIO())
    return crash[0].lost


def test_driver_crash_then_resume_finishes_only_what_is_left(ray_session, tmp_path, monkeypatch):
    storage = str(tmp_path / "store")
    lost = _crash_study(storage, monkeypatch)
    store = StudyStore(storage, "crash")
    before = store.read_trials().set_index("trial_id")
    finished = before.index[before["status"] == "finished"]
    assert len(finished) >= 1 and (before["status"] == "running").any()
    assert any(lost.values())  # rows were buffered, not written, when the driver died
    assert read_lock(store) is None  # (the in-process driver released it; a killed one is tested below)

    moved = str(tmp_path / "no-tune-state")  # the same crash, had Tune saved nothing at all
    shutil.copytree(storage, moved)
    shutil.rmtree(os.path.join(moved, "crash", "tune"))

    # A trial Tune created after its last state save may not be in the store either (its
    # start row was still buffered), so the store before the crash holds a subset of the grid.
    result = resume("crash", storage=storage, stream=io.StringIO())
    after = result.trials().set_index("trial_id")
    assert result.complete and len(after) == 3 and set(before.index) <= set(after.index)
    assert (after["status"] == "finished").all()
    for trial_id in finished:  # not run again
        assert after.loc[trial_id, "ended_at"] == before.loc[trial_id, "ended_at"]
        assert after.loc[trial_id, "restarts"] == 0
    interrupted = before.index[before["status"] == "running"]
    assert (after.loc[interrupted, "restarts"] >= 1).all()
    assert sorted(after["config/seed"]) == [0, 1, 2]
    assert_exactly_once_and_as_uninterrupted(store)

    result = resume("crash", storage=moved, stream=io.StringIO())  # a fresh Tuner: trials matched by config
    trials = result.trials()
    assert result.complete and len(trials) == 3 and set(before.index) <= set(trials["trial_id"])
    assert sorted(trials["config/seed"]) == [0, 1, 2]
    assert_exactly_once_and_as_uninterrupted(result.store)


def running_trials(store: StudyStore) -> pd.DataFrame | None:
    """The trials as `study status` reads them while a driver runs (trials.parquet is written
    whole only when the driver closes the study; until then its update files hold the rows)."""
    trials = store.read_trials() if store.exists() else pd.DataFrame()
    return trials if "status" in trials else None


@pytest.mark.slow
def test_killed_driver_subprocess_then_cli_resume(tmp_path):
    """SIGKILL of a real driver (and the Ray it started) mid-study, then `python -m study resume`."""
    storage = str(tmp_path / "store")
    spec_path = tmp_path / "killme.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "killme", "trainable": "probe", "config": {"steps": 30, "checkpoint_every": 4, "sleep_s": 0.2},
        "axes": {"seed": [0, 1, 2, 3]}, "resources": {"cpu": 1},
    }))
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ADDRESS="")
    command = [sys.executable, "-m", "study", "launch", str(spec_path), "--storage", storage, "--no-report"]
    driver = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    store = StudyStore(storage, "killme")

    def wait_for(condition, what):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            trials = running_trials(store)
            if trials is not None and condition(trials):
                return
            time.sleep(0.3)
        pytest.fail(f"the study did not get {what}")

    try:
        wait_for(lambda trials: (trials["status"] == "running").any(), "going")
        # a second driver is refused while the first runs
        second = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "study 'killme' is running: driver pid" in second.stderr
        wait_for(lambda trials: (trials["status"] == "finished").any() and (trials["status"] == "running").any()
                 and (trials[trials["status"] == "running"]["reports"] >= 6).any(), "halfway")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait()
    before = store.read_trials().set_index("trial_id")
    finished = before.index[before["status"] == "finished"]

    lock = read_lock(store)
    assert lock is not None and lock.pid == driver.pid and not lock.is_live()  # stale: its pid is gone
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "pass --resume to finish it" in again.stderr

    done = subprocess.run([sys.executable, "-m", "study", "resume", "killme", "--storage", storage, "--no-report"],
                          env=env, capture_output=True, text=True, timeout=400, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    after = store.read_trials().set_index("trial_id")
    assert (after["status"] == "finished").all() and len(after) == 4
    for trial_id in finished:
        assert after.loc[trial_id, "ended_at"] == before.loc[trial_id, "ended_at"]
    assert_exactly_once_and_as_uninterrupted(store)
    assert read_lock(store) is None


@pytest.mark.slow
def test_sigterm_stops_a_driver_gracefully_and_resume_finishes(tmp_path):
    """SIGTERM (what `ray job stop` sends) saves Ray Tune's state, flushes the store, exits 130."""
    storage = str(tmp_path / "store")
    spec_path = tmp_path / "stopme.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "stopme", "trainable": "probe", "config": {"steps": 30, "checkpoint_every": 4, "sleep_s": 0.2},
        "axes": {"seed": [0, 1, 2]}, "resources": {"cpu": 1},
    }))
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ADDRESS="")
    driver = subprocess.Popen([sys.executable, "-m", "study", "launch", str(spec_path), "--storage", storage],
                              env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    store = StudyStore(storage, "stopme")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.3)
            trials = running_trials(store)
            if trials is not None and (trials["reports"] >= 5).any():
                break
        else:
            pytest.fail("the study did not get going")
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 130, err[-3000:]
    assert "was interrupted; finish it with: python -m study resume stopme" in err
    assert read_lock(store) is None  # released on the way out
    trials = store.read_trials()
    assert (trials["status"] == "running").any()
    assert_exactly_once_and_as_uninterrupted(store)  # what was reported is stored, flushed

    done = subprocess.run([sys.executable, "-m", "study", "resume", "stopme", "--storage", storage, "--no-report"],
                          env=env, capture_output=True, text=True, timeout=400, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = store.read_trials()
    assert (trials["status"] == "finished").all() and len(trials) == 3 and (trials["reports"] == 30).all()
    assert_exactly_once_and_as_uninterrupted(store)


# ---------------------------------------------------------------- a second driver


def tiny_spec(name="twice", seeds=(0, 1)):
    return parse_spec({"name": name, "trainable": "probe", "config": {"steps": 3},
                       "axes": {"seed": list(seeds)}, "resources": {"cpu": 1}})


def test_a_stored_study_is_refused_unless_resume_or_overwrite(ray_session, storage):
    spec = tiny_spec()
    first = launch(spec, storage=storage, stream=io.StringIO())
    store = first.store
    first_trials, first_metrics = first.trials(), first.metrics()
    snapshot = store_snapshot(store)
    with pytest.raises(LaunchError, match="study 'twice' already exists .*2 trials: 2 finished.*--resume.*--overwrite"):
        launch(spec, storage=storage, stream=io.StringIO())
    assert store_snapshot(store) == snapshot

    with pytest.raises(LaunchError, match="exists with a different spec \\(axes differ\\)"):
        launch(tiny_spec(seeds=(0, 1, 2)), storage=storage, resume=True, stream=io.StringIO())
    again = launch(spec, storage=storage, resume=True, stream=io.StringIO())  # nothing left: nothing runs
    assert again.complete
    pd.testing.assert_frame_equal(again.trials(), first_trials)
    pd.testing.assert_frame_equal(again.metrics(), first_metrics)

    replaced = launch(spec, storage=storage, overwrite=True, stream=io.StringIO())
    trials = replaced.trials()
    assert set(trials["trial_id"]).isdisjoint(first_trials["trial_id"])
    assert (trials["started_at"] > first_trials["ended_at"].max()).all()
    assert len(replaced.metrics()) == 6


def test_a_running_study_is_refused_and_a_dead_drivers_lock_is_not(storage, capsys):
    from study.cli import main

    spec = tiny_spec("busy")
    store = StudyStore(storage, "busy")
    store.write_text("spec.yaml", yaml.safe_dump(spec.to_dict()))
    StoreWriter(store, {}).close()
    with DriverLock(store, command="launch", heartbeat_s=0.05):
        for argv in (["resume", "busy"], ["launch", "quickstart", "--name", "busy", "--resume"],
                     ["launch", "quickstart", "--name", "busy", "--overwrite"]):
            assert main([*argv, "--storage", storage]) == 2
            err = capsys.readouterr().err
            assert f"error: study 'busy' is running: driver pid {os.getpid()} on host" in err
        time.sleep(0.2)
        assert main(["status", "busy", "--storage", storage]) == 0
        assert "running: driver pid" in capsys.readouterr().out
        with pytest.raises(StudyBusy):
            DriverLock(store).acquire()
    assert read_lock(store) is None  # released


def test_lock_liveness():
    import socket

    now = time.time()
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert DriverInfo(here, os.getpid(), "t", now, now).is_live()
    assert not DriverInfo(here, dead.pid, "t", now, now).is_live()  # killed on this host: free at once
    assert DriverInfo("elsewhere", 1, "t", now, now - 10).is_live()  # another host: trust the heartbeat
    assert not DriverInfo("elsewhere", 1, "t", now, now - 3600).is_live()  # until it is stale
    from study.lock import _proc_start

    started = _proc_start(os.getpid())  # a reused pid (another start time) is not the driver
    if started is not None:
        assert not DriverInfo(here, os.getpid(), "t", now, now, proc_start=str(int(started) + 1)).is_live()


def test_the_heartbeat_keeps_a_lock_fresh(storage):
    store = StudyStore(storage, "beat")
    with DriverLock(store, heartbeat_s=0.05):
        first = read_lock(store).heartbeat_at
        time.sleep(1.0)
        assert read_lock(store).heartbeat_at > first


# ---------------------------------------------------------------- corrupt and foreign files


def stored_study(storage, name="damaged"):
    """A study in the store (written without Ray): two trials, one finished, one running."""
    spec = tiny_spec(name)
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", yaml.safe_dump(spec.to_dict()))
    store.write_text("study.json", "{}")
    writer = StoreWriter(store, {})
    for seed, status in [(0, "finished"), (1, "running")]:
        writer.trial_started(f"t{seed}", {"steps": 3, "seed": seed})
        writer.add_result(f"t{seed}", {"step": 1, "loss": 0.5, "training_iteration": 1})
        if status == "finished":
            writer.trial_ended(f"t{seed}", status)
    writer.close()
    return store


@pytest.mark.parametrize("damage", ["corrupt part", "foreign part", "foreign trials table"])
def test_a_bad_parquet_file_stops_resume_naming_it_and_nothing_is_written(storage, capsys, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from study.cli import main

    store = stored_study(storage)
    if damage == "corrupt part":
        path = store.metric_files("t0")[0]
        open(path, "wb").write(b"PAR1 garbage")
    elif damage == "foreign part":
        path = store.path("metrics", "trial_id=t1", "part-000009.parquet")
        pq.write_table(pa.table({"training_iteration": [1]}), path)
    else:
        path = store.path("trials.parquet")
        pq.write_table(pa.table({"trial_id": ["t0"]}), path)
    snapshot = store_snapshot(store)

    assert main(["resume", "damaged", "--storage", storage]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and ("corrupt Parquet" in err or "not a wd-study" in err)
    assert len(err.strip().splitlines()) == 1
    assert store_snapshot(store) == snapshot  # nothing written, no lock left


def test_overwrite_refuses_to_delete_a_foreign_parquet_file(storage, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from study.cli import main

    store = stored_study(storage, "twice")
    foreign = store.path("notes.parquet")
    pq.write_table(pa.table({"x": [1]}), foreign)
    snapshot = store_snapshot(store)
    assert main(["launch", "quickstart", "--name", "twice", "--overwrite", "--storage", storage]) == 1
    assert f"error: {foreign}: a Parquet file that is not part of the wd-study store" in capsys.readouterr().err
    assert store_snapshot(store) == snapshot


def test_a_folder_that_is_not_a_study_is_not_launched_into(storage, capsys):
    from study.cli import main

    os.makedirs(os.path.join(storage, "taken"))
    open(os.path.join(storage, "taken", "data.csv"), "w").write("x\n1\n")
    assert main(["launch", "quickstart", "--name", "taken", "--storage", storage]) == 2
    assert "holds files that are not a stored study" in capsys.readouterr().err
    assert os.listdir(os.path.join(storage, "taken")) == ["data.csv"]


def test_status_shows_an_interrupted_study_and_how_to_finish_it(storage, capsys):
    from study.cli import main

    stored_study(storage, "halfway")
    assert main(["status", "halfway", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "2 trials: 1 finished, 1 running" in out and "no driver is running it" in out
    assert f"interrupted: finish it with: python -m study resume halfway --storage {storage}" in out


def test_an_interrupted_run_exits_130_with_the_resume_command(storage, capsys, monkeypatch):
    from study import cli

    store = stored_study(storage, "halfway")
    result = type("Result", (), {"spec": tiny_spec("halfway"), "store": store, "complete": False,
                                 "trials": lambda self: store.read_trials()})()
    monkeypatch.setattr(cli, "resume", lambda *args, **kwargs: result)
    assert cli.main(["resume", "halfway", "--storage", storage]) == 130
    captured = capsys.readouterr()
    assert "1 finished, 1 running" in captured.out and "report:" not in captured.out
    assert f"finish it with: python -m study resume halfway --storage {storage}" in captured.err


def test_overwrite_and_resume_exclude_each_other(capsys):
    from study.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["launch", "quickstart", "--overwrite", "--resume"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# ---------------------------------------------------------------- bit-for-bit resume


def _saving_session():
    """A BareSession whose states went through a checkpoint file as RaySession writes and reads it
    (``torch.load(weights_only=True)``: tensors and plain containers only)."""

    class Saved(BareSession):
        def report(self, metrics, *, status=None, state=None):
            super().report(metrics, status=status)
            if state is not None:
                buffer = io.BytesIO()
                save_state(state(), buffer)
                buffer.seek(0)
                self.states.append(load_state(buffer))

    return Saved()


@pytest.mark.parametrize("trainable", ["probe", "lm"])
def test_a_resumed_trial_continues_bit_for_bit(trainable):
    from tests.conftest import NANO_LM
    from trainables.lm.train import run as run_lm

    if trainable == "lm":
        run, config = run_lm, {**NANO_LM, "steps": 8, "checkpoint_every": 1}
    else:
        run, config = run_probe, {"steps": 10, "report_every": 2, "checkpoint_every": 1, "noise": 0.3}
    full = _saving_session()
    run(config, full)
    assert len(full.states) == len(full.reports) >= 4
    timing = {"tokens_per_s"}  # wall-clock, the one value that may differ
    for k, state in enumerate(full.states[:-1]):
        resumed = BareSession(restore=state)
        run(config, resumed)
        expected = [{m: v for m, v in r.items() if m not in timing} for r in full.reports[k + 1:]]
        assert [{m: v for m, v in r.items() if m not in timing} for r in resumed.reports] == expected
        assert resumed.status == full.status == "finished"
