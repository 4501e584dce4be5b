"""The launch's progress line: counts, the best trial by its latest report, time left."""

import io
from types import SimpleNamespace

from study.callbacks import STATUS_KEY, ProgressCallback


def trial(trial_id):
    return SimpleNamespace(trial_id=trial_id, config={})


def test_best_is_the_best_latest_value_not_a_value_a_trial_left():
    progress = ProgressCallback(total=4, metric="test_error", mode="min", stream=io.StringIO(), every_s=1e9)
    a, b, c = trial("a"), trial("b"), trial("c")
    for t in (a, b, c):
        progress.on_trial_start(0, [], t)
    progress.on_trial_result(0, [], a, {"test_error": 0.30})
    progress.on_trial_result(0, [], b, {"test_error": 0.10})  # b passes through 0.10 ...
    assert progress.best == (0.10, "b")
    progress.on_trial_result(0, [], b, {"test_error": 0.25, STATUS_KEY: "finished"})  # ... and ends at 0.25
    assert progress.best == (0.25, "b")
    progress.on_trial_result(0, [], c, {"test_error": 0.05, STATUS_KEY: "running"})
    progress.on_trial_result(0, [], c, {"test_error": float("nan"), STATUS_KEY: "diverged"})
    assert progress.best == (0.25, "b")  # a diverged trial is no one's best
    progress.on_trial_complete(0, [], b)
    progress.on_trial_complete(0, [], c)
    line = progress.line()
    assert line.startswith("trials 2/4 done · 1 running · 1 diverged · best test_error 0.25 (b) · elapsed ")


def test_a_resumed_study_starts_from_its_stored_counts_and_best():
    progress = ProgressCallback(total=3, metric="val_loss", mode="max", stream=io.StringIO(), every_s=1e9,
                                counts={"finished": 2}, best=(0.7, "old"))
    assert progress.line().startswith("trials 2/3 done · 0 running · best val_loss 0.7 (old)")
    progress.on_trial_result(0, [], trial("new"), {"val_loss": 0.9})
    assert progress.best == (0.9, "new")


def test_time_left_counts_what_running_trials_have_left_and_the_concurrency(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("study.callbacks.time.monotonic", lambda: clock[0])
    progress = ProgressCallback(total=4, metric="loss", mode="min", stream=io.StringIO(), every_s=1e9)
    a, b = trial("a"), trial("b")
    progress.on_trial_start(0, [], a)
    clock[0] += 10.0
    progress.on_trial_start(0, [], b)
    assert progress.time_left() is None  # nothing ended: no trial time known
    clock[0] += 90.0  # a ran 100 s, b 90 s
    progress.on_trial_result(0, [], a, {"loss": 1.0, STATUS_KEY: "finished"})
    progress.on_trial_complete(0, [], a)
    # b: 100 - 90 = 10 s left; 2 trials waiting: 2 x 100 s; 2 at once -> (10 + 200) / 2
    assert progress.time_left() == 105.0
    assert progress.line().endswith("~1m45s left")
    clock[0] += 30.0  # b overruns the mean: it counts as about to end
    assert progress.time_left() == 100.0
