"""Trial output kept in the store (`python -m study logs`) and failed trials' errors in `status`,
through real Ray Tune: one study whose trials print to stdout and stderr, one of which fails."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from study.cli import error_line, main
from study.errors import EXIT_OK, EXIT_STORE
from study.launch import launch
from study.spec import parse_spec
from study.store import TrialLogs
from trainables.probe import run as run_probe
from trainables.registry import TRAINABLES, register
from trainables.session import BareSession, SharedLog, captured_output

# The probe, printing a line to stdout and one to stderr first. Ray workers import this module
# as tests.test_logs (the driver's working folder, the repository root, is on their path).
PRINTING = dataclasses.replace(TRAINABLES["probe"], name="probe-printing", run="tests.test_logs:run_printing")
register(PRINTING)


def run_printing(config: dict, session) -> None:
    print(f"hello from lr={config.get('lr', 0.1)} fail_at_step={config.get('fail_at_step', 0)}")
    print(f"careful: lr={config.get('lr', 0.1)}", file=sys.stderr)
    run_probe(config, session)


class MemorySink:
    def __init__(self, logs=None):
        self.logs, self.writes = dict(logs or {}), 0

    def read(self, trial_id):
        return self.logs.get(trial_id, "")

    def write(self, trial_id, text):
        self.logs[trial_id], self.writes = text, self.writes + 1


def test_captured_output_keeps_stdout_stderr_and_the_traceback_and_still_prints(capsys):
    sink = MemorySink()
    with pytest.raises(RuntimeError, match="injected failure at step 2"):
        with captured_output(sink, "t1"):
            run_printing({"lr": 0.1, "fail_at_step": 2, "steps": 3}, BareSession())
    kept = sink.logs["t1"]
    assert kept.startswith("hello from lr=0.1 fail_at_step=2\ncareful: lr=0.1\nTraceback (most recent call last):")
    assert kept.rstrip().endswith("RuntimeError: probe: injected failure at step 2")
    shown = capsys.readouterr()  # what it printed still reaches the worker's own streams
    assert shown.out == "hello from lr=0.1 fail_at_step=2\n" and "careful: lr=0.1" in shown.err
    assert sys.stdout is not None and "Tee" not in type(sys.stdout).__name__


def test_a_restarted_trial_continues_its_log_and_a_silent_one_writes_nothing():
    sink = MemorySink({"t1": "first run\n"})
    with captured_output(sink, "t1"):
        print("second run")
    assert sink.logs["t1"] == "first run\n--- the trial started again ---\nsecond run\n"
    with captured_output(sink, "t2"):
        pass
    assert "t2" not in sink.logs


def test_a_packed_trials_output_is_each_members_log():
    sink = MemorySink({"a_00003": "before\n"})
    with captured_output(SharedLog(sink, ["a_00003", "a_00007"]), "a_00001"):
        print("both")
    assert sink.logs == {"a_00003": "before\n--- the trial started again ---\nboth\n",
                         "a_00007": "before\n--- the trial started again ---\nboth\n"}


def test_a_log_that_cannot_be_written_does_not_fail_the_trial(capsys):
    class Broken(MemorySink):
        def write(self, trial_id, text):
            raise OSError("disk full")

    with captured_output(Broken(), "t1"):
        print("x")
    assert "the output of trial t1 was not kept: disk full" in capsys.readouterr().err


def test_error_line_is_the_last_line_of_the_traceback():
    text = 'Traceback (most recent call last):\n  File "x.py", line 1\n    f()\nRuntimeError: boom\n\n'
    assert error_line(text) == "RuntimeError: boom"
    assert error_line(None) == "(no error text recorded)"


@pytest.fixture(scope="module")
def printed(ray_session, tmp_path_factory):
    storage = str(tmp_path_factory.mktemp("logs") / "store")
    spec = parse_spec({"name": "talky", "trainable": "probe-printing", "imports": ["tests.test_logs"],
                       "config": {"steps": 4}, "axes": {"fail_at_step": [0, 3]}})
    result = launch(spec, storage=storage, progress=False)
    trials = result.trials().set_index("config/fail_at_step")
    return storage, trials


def test_logs_shows_each_trials_output(printed, capsys):
    storage, trials = printed
    ok, failed = trials.loc[0, "trial_id"], trials.loc[3, "trial_id"]
    assert main(["logs", "talky", ok, "--storage", storage]) == EXIT_OK
    assert capsys.readouterr().out == "hello from lr=0.1 fail_at_step=0\ncareful: lr=0.1\n"

    assert main(["logs", "talky", failed, "--storage", storage]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("hello from lr=0.1 fail_at_step=3\ncareful: lr=0.1\nTraceback")
    assert out.rstrip().endswith("RuntimeError: probe: injected failure at step 3")

    assert main(["logs", "talky", "--storage", storage]) == EXIT_OK
    every = capsys.readouterr().out
    for trial_id, status in ((ok, "finished"), (failed, "failed")):
        assert f"==> trial {trial_id} ({status}) <==\nhello from lr=0.1" in every
    assert every.count("==> trial") == 2


def test_status_shows_the_failed_trials_error_line(printed, capsys):
    storage, trials = printed
    assert main(["status", "talky", "--storage", storage]) == EXIT_OK
    out = capsys.readouterr().out
    failed = trials.loc[3, "trial_id"]
    assert f"failed {failed}: RuntimeError: probe: injected failure at step 3" in out.splitlines()
    assert sum(line.startswith("failed ") for line in out.splitlines()) == 1  # the finished trial has none


@pytest.mark.parametrize("argv, code, words", [
    (["logs", "nosuch"], EXIT_STORE, "no study named 'nosuch'"),
    (["logs", "talky", "nosuch"], EXIT_STORE, "no trial 'nosuch' in study talky"),
    (["logs", "talky", "../../etc/passwd"], EXIT_STORE, "no trial '../../etc/passwd'"),
])
def test_logs_of_a_missing_study_or_trial_is_one_line(printed, capsys, argv, code, words):
    storage, _ = printed
    assert main([*argv, "--storage", storage]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and words in captured.err


def test_trial_logs_live_in_the_study_folder(printed):
    storage, trials = printed
    from study.store import StudyStore

    store = StudyStore(storage, "talky")
    logs = TrialLogs(store)
    assert all(logs.has(t) for t in trials["trial_id"])
    assert sorted(f.rsplit("/", 2)[-2] for f in store.files() if f.endswith(".txt")) == ["logs", "logs"]
    store.check_files()  # the logs are not mistaken for foreign files


def test_tunes_automatic_loggers_are_off(printed):
    storage, trials = printed
    from study.store import StudyStore

    store = StudyStore(storage, "talky")
    tune_files = [f for f in store.files(skip_tune=False) if f.startswith(store.tune_path + "/")]
    assert any("/probe_printing_" in f for f in tune_files)  # the trials' folders are there...
    names = {f.rsplit("/", 1)[-1] for f in tune_files}
    # ...without the CSV, JSON and TensorBoard copies Tune adds unless told not to
    assert not names & {"progress.csv", "result.json", "params.json"}, names
    assert not any(n.startswith("events.out.tfevents") for n in names), names
