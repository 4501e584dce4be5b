"""Ray Tune callbacks that run on the driver: the store writer and the progress display."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from typing import Any

from ray.tune import Callback

from study.store import StoreWriter
from trainables.session import STATUS_KEY, WHERE_KEYS

# Keys of a Ray Tune result that are bookkeeping, not something the trainable reported.
_RAY_KEYS = frozenset({
    "config", "trial_id", "done", "timestamp", "date", "time_this_iter_s", "pid", "hostname", "node_ip",
    "experiment_tag", "checkpoint_dir_name", "should_checkpoint", "iterations_since_restore",
    "time_since_restore", "timesteps_since_restore", "timesteps_total", "episodes_total", "warmup_time",
    "episodes_this_iter", "timesteps_this_iter",
})


def metric_row(result: dict[str, Any]) -> dict[str, Any]:
    """The trainable's own scalars of a result, plus Ray's iteration count and elapsed time."""
    return {k: v for k, v in result.items()
            if k not in _RAY_KEYS and k != STATUS_KEY and k not in WHERE_KEYS
            and isinstance(v, (int, float, str, bool))}


def where(result: dict[str, Any]) -> dict[str, Any]:
    """Where the report came from: Ray's node id, the worker's pid, the trial's GPU ids, and,
    on the first report after a restore, the iteration of the checkpoint it restored."""
    found = {"pid": result.get("pid"), **{k: result.get(k) for k in WHERE_KEYS}}
    iteration, since = result.get("training_iteration"), result.get("iterations_since_restore")
    if isinstance(iteration, int) and since == 1 and iteration > 1:
        found["restored_from_iteration"] = iteration - 1
    return found


def trial_error_text(trial) -> str:
    """The trial's latest error, as traceback text.

    Ray Tune appends it to the trial's error file on the driver (``trial.error_file``)
    before it calls the callbacks, and copies the file to the storage only later; the
    storage copy (``get_error``) is the fallback.
    """
    text = None
    path = getattr(trial, "error_file", None)
    if path and os.path.isfile(path):
        with open(path, errors="replace") as f:
            text = f.read()
        # one "Failure # N (occurred at ...)" block per failure: keep the latest
        text = re.split(r"^Failure # \d+ \(occurred at [^)]*\)\n", text, flags=re.M)[-1].strip() or text
    if not text:
        try:
            text = trial.get_error()
        except Exception:  # the error file may be missing on a remote store
            pass
    return str(text or getattr(trial, "error_msg", None) or "trial failed (no error text recorded)")


class StoreCallback(Callback):
    """Writes every trial's start, reports, checkpoints and end into the study's Parquet store.

    ``skip(trial_id, config)`` names trials that a resumed study already has as ended:
    Ray Tune may run them again from its older experiment state (the trainable returns
    at once for them), and nothing about them is written.
    """

    def __init__(self, writer: StoreWriter, skip=None):
        self.writer = writer
        self.skip = skip
        self.own_status: dict[str, str] = {}
        self.skipped: set[str] = set()

    def _skipped(self, trial) -> bool:
        if trial.trial_id not in self.skipped and self.skip is not None and self.skip(trial.trial_id, trial.config):
            self.skipped.add(trial.trial_id)
        return trial.trial_id in self.skipped

    def on_trial_start(self, iteration, trials, trial, **info):
        if not self._skipped(trial):
            self.writer.trial_started(trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self._skipped(trial):
            return
        if STATUS_KEY in result:
            self.own_status[trial.trial_id] = result[STATUS_KEY]
        self.writer.add_result(trial.trial_id, metric_row(result), host=result.get("hostname"),
                               node_ip=result.get("node_ip"), where=where(result))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # Called before Tune records the checkpoint: what a restore from it will not
        # report again must be in the store first.
        if not self._skipped(trial):
            self.writer.trial_checkpointed(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # A trial that ended by itself said so in its last report; otherwise a stop
        # criterion or a scheduler ended it early.
        if not self._skipped(trial):
            self.writer.trial_ended(trial.trial_id, self.own_status.get(trial.trial_id, "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info):
        if not self._skipped(trial):
            self.writer.trial_ended(trial.trial_id, "failed", error=trial_error_text(trial))

    def on_step_end(self, iteration, trials, **info):
        self.writer.flush_if_due()  # rows of a quiet spell do not wait for the next report

    def on_experiment_end(self, trials, **info):
        # Tune's view wins for a trial the store still has as running when Tune saw it end
        # (its restored experiment state knew more than the store). A trial that Tune
        # terminated without a final (``done``) result was cut off by an interruption: it
        # stays running, for resume. When every trial ended, trials that no Tune trial
        # continued cannot be resumed and are marked.
        ended = [_ended_in_tune(trial) for trial in trials]
        for trial, end in zip(trials, ended):
            if end is None or self._skipped(trial) or self.writer.status(trial.trial_id) != "running":
                continue
            if end == "failed":
                self.writer.trial_ended(trial.trial_id, "failed", error=trial_error_text(trial))
            else:
                status = self.own_status.get(trial.trial_id) or (trial.last_result or {}).get(STATUS_KEY)
                self.writer.trial_ended(trial.trial_id, status or "stopped")
        if all(end is not None for end in ended):
            self.writer.mark_unresumable("the driver died before Ray Tune saved this trial, so it could not be "
                                         "resumed; its stored reports are kept")
        self.writer.close()


def _ended_in_tune(trial) -> str | None:
    """"failed" or "ended" for a trial Ray Tune has ended, None for one it cut off or never ran."""
    if trial.status == "ERROR":
        return "failed"
    if trial.status == "TERMINATED" and (trial.last_result or {}).get("done"):
        return "ended"
    return None


class ProgressCallback(Callback):
    """One status line: trials done/running/diverged/failed, the best so far, time left.

    On a terminal the line is redrawn in place (rich); otherwise a line is printed each
    time a trial ends and every ``every_s`` seconds in between (logs of a cluster job).
    A resumed study starts from the ``counts`` and ``best`` its store already has, and
    ignores the trials ``skip(trial_id, config)`` names (already ended).
    """

    def __init__(self, total: int, metric: str, mode: str, stream=None, *, counts: dict[str, int] | None = None,
                 best: tuple[float, str] | None = None, skip=None, every_s: float = 60.0):
        self.total, self.metric, self.mode = total, metric, mode
        self.stream = stream or sys.stdout
        self.counts = {"finished": 0, "diverged": 0, "failed": 0, "stopped": 0}
        self.counts.update({k: v for k, v in (counts or {}).items() if k in self.counts})
        self.skip, self.every_s = skip, every_s
        self.skipped: set[str] = set()
        self.last_line = time.monotonic()
        self.running: set[str] = set()
        self.most_running = 0  # the concurrency the study reaches: what the trials left will share
        self.own_status: dict[str, str] = {}
        self.stored_best: tuple[float, str] | None = best  # of the trials a resumed study had ended
        self.latest: dict[str, float] = {}  # trial → its latest finite metric (its final one once it ended)
        self.durations: list[float] = []
        self.started: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.live = None
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()

    def __getstate__(self):  # Ray pickles callbacks with the tuner; streams and live displays do not pickle
        state = dict(self.__dict__)
        state.update(stream=None, live=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = sys.stdout

    # ---- bookkeeping
    def _skipped(self, trial) -> bool:
        if trial.trial_id not in self.skipped and self.skip is not None and self.skip(trial.trial_id, trial.config):
            self.skipped.add(trial.trial_id)
        return trial.trial_id in self.skipped

    def on_trial_start(self, iteration, trials, trial, **info):
        if self._skipped(trial):
            return
        self.running.add(trial.trial_id)
        self.most_running = max(self.most_running, len(self.running))
        self.started.setdefault(trial.trial_id, time.monotonic())
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if STATUS_KEY in result:
            self.own_status[trial.trial_id] = result[STATUS_KEY]
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.latest[trial.trial_id] = float(value)
        elif value is not None:  # a diverged trial's last value is NaN/inf: it is no one's best
            self.latest.pop(trial.trial_id, None)
        if self.live is not None:
            self._show()

    def _ended(self, trial, status):
        if self._skipped(trial):
            return
        self.running.discard(trial.trial_id)
        self.counts[status] += 1
        if trial.trial_id in self.started:
            self.durations.append(time.monotonic() - self.started.pop(trial.trial_id))
        self._show(final_line=self.live is None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, self.own_status.get(trial.trial_id, "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "failed")

    def on_step_end(self, iteration, trials, **info):
        if self.live is None and time.monotonic() - self.last_line >= self.every_s:
            self._show(final_line=True)

    def on_experiment_end(self, trials, **info):
        if self.live is not None:
            self._show()
            self.live.stop()

    # ---- display
    @property
    def best(self) -> tuple[float, str] | None:
        """(value, trial id) of the best trial by its latest report: what the store will say
        of the ended trials, and where the running ones stand now (not a better value a trial
        passed through and left)."""
        candidates = [(value, trial_id) for trial_id, value in self.latest.items()]
        if self.stored_best is not None:
            candidates.append(self.stored_best)
        if not candidates:
            return None
        return (min if self.mode == "min" else max)(candidates, key=lambda pair: pair[0])

    def line(self) -> str:
        done = sum(self.counts.values())
        parts = [f"trials {done}/{self.total} done", f"{len(self.running)} running"]
        parts += [f"{n} {status}" for status, n in self.counts.items() if status != "finished" and n]
        best = self.best
        if best is not None:
            parts.append(f"best {self.metric} {best[0]:.4g} ({best[1]})")
        parts.append(f"elapsed {_duration(time.monotonic() - self.t0)}")
        left = self.time_left()
        if left is not None:
            parts.append(f"~{_duration(left)} left")
        return " · ".join(parts)

    def time_left(self) -> float | None:
        """(What the running trials have left + the waiting trials) × the mean trial time,
        over the most trials seen running at once (None before any trial ends)."""
        done = sum(self.counts.values())
        if done >= self.total:
            return 0.0
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = time.monotonic()
        running = [max(0.0, mean - (now - self.started[t])) for t in self.running if t in self.started]
        waiting = max(0, self.total - done - len(self.running))
        return (sum(running) + waiting * mean) / max(1, self.most_running)

    def _show(self, final_line: bool = False):
        if self.live is not None:
            self.live.update(self.line())
        elif final_line:
            print(self.line(), file=self.stream, flush=True)
            self.last_line = time.monotonic()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
