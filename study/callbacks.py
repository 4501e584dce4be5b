"""Ray Tune callbacks that run on the driver: the store writer and the progress display."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback

from study.store import StoreWriter
from trainables.session import STATUS_KEY

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
            if k not in _RAY_KEYS and k != STATUS_KEY and isinstance(v, (int, float, str, bool))}


def trial_error_text(trial) -> str:
    text = None
    try:
        text = trial.get_error()
    except Exception:  # the error file may be missing on a remote store
        pass
    return str(text or getattr(trial, "error_msg", None) or "trial failed (no error text recorded)")


class StoreCallback(Callback):
    """Writes every trial's start, reports and end into the study's Parquet store."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.own_status: dict[str, str] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.writer.trial_started(trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if STATUS_KEY in result:
            self.own_status[trial.trial_id] = result[STATUS_KEY]
        self.writer.add_result(trial.trial_id, metric_row(result), host=result.get("hostname"),
                               node_ip=result.get("node_ip"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        # A trial that ended by itself said so in its last report; otherwise a stop
        # criterion or a scheduler ended it early.
        self.writer.trial_ended(trial.trial_id, self.own_status.get(trial.trial_id, "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.writer.trial_ended(trial.trial_id, "failed", error=trial_error_text(trial))

    def on_experiment_end(self, trials, **info):
        self.writer.close()


class ProgressCallback(Callback):
    """One status line: trials done/running/diverged/failed, the best so far, time left.

    On a terminal the line is redrawn in place (rich); otherwise a line is printed each
    time a trial ends.
    """

    def __init__(self, total: int, metric: str, mode: str, stream=None):
        self.total, self.metric, self.mode = total, metric, mode
        self.stream = stream or sys.stdout
        self.counts = {"finished": 0, "diverged": 0, "failed": 0, "stopped": 0}
        self.running: set[str] = set()
        self.own_status: dict[str, str] = {}
        self.best: tuple[float, str] | None = None
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
    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.started.setdefault(trial.trial_id, time.monotonic())
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if STATUS_KEY in result:
            self.own_status[trial.trial_id] = result[STATUS_KEY]
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better:
                self.best = (float(value), trial.trial_id)
        if self.live is not None:
            self._show()

    def _ended(self, trial, status):
        self.running.discard(trial.trial_id)
        self.counts[status] += 1
        if trial.trial_id in self.started:
            self.durations.append(time.monotonic() - self.started.pop(trial.trial_id))
        self._show(final_line=self.live is None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, self.own_status.get(trial.trial_id, "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "failed")

    def on_experiment_end(self, trials, **info):
        if self.live is not None:
            self._show()
            self.live.stop()

    # ---- display
    def line(self) -> str:
        done = sum(self.counts.values())
        parts = [f"trials {done}/{self.total} done", f"{len(self.running)} running"]
        parts += [f"{n} {status}" for status, n in self.counts.items() if status != "finished" and n]
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4g} ({self.best[1]})")
        parts.append(f"elapsed {_duration(time.monotonic() - self.t0)}")
        left = self.time_left()
        if left is not None:
            parts.append(f"~{_duration(left)} left")
        return " · ".join(parts)

    def time_left(self) -> float | None:
        """Remaining trials × mean trial time / trials running at once (None before any ends)."""
        done = sum(self.counts.values())
        if not self.durations or done >= self.total:
            return None if done < self.total else 0.0
        parallel = max(1, len(self.running))
        return (self.total - done) * (sum(self.durations) / len(self.durations)) / parallel

    def _show(self, final_line: bool = False):
        if self.live is not None:
            self.live.update(self.line())
        elif final_line:
            print(self.line(), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
