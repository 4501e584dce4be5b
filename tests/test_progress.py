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
