"""How a training loop talks to whoever runs it.

A trainable is ``run(config: dict, session)``. It calls ``session.report`` at eval
points with a flat dict of scalars and, when it ends by itself, a ``status``
(``finished`` or ``diverged``). ``BareSession`` keeps the reports in a list (plain
Python, tests, benchmarks); ``RaySession`` forwards them to ``ray.tune.report``.
Checkpoint state is a dict of tensors/scalars produced on demand by ``state()``; it is
saved with ``torch.save`` and loaded with ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers only and refuses any other pickled object (a checkpoint
from elsewhere cannot run code; see docs/trust.md).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import tempfile
import threading
import traceback
from typing import Any, Callable, Protocol

# Key under which the trial's own ending (finished/diverged) travels in a report.
STATUS_KEY = "trial_status"
# Where a report came from (RaySession adds them): Ray's node id, the trial's GPU ids and
# the CPUs/GPUs it holds. The store keeps them with the trial, not in its metric rows.
WHERE_KEYS = ("node_id", "gpu_ids", "cpus", "gpus")


class Session(Protocol):
    def report(self, metrics: dict[str, Any], *, status: str | None = None,
               state: Callable[[], dict] | None = None) -> None: ...

    def restored_state(self) -> dict | None: ...

    def should_checkpoint(self, report_index: int, every: int) -> bool: ...


class _Base:
    def should_checkpoint(self, report_index: int, every: int) -> bool:
        return every > 0 and report_index % every == 0


class BareSession(_Base):
    """Collects reports in memory; optionally starts from a saved state.

    Saved states are deep copies taken at report time, as a checkpoint file would be
    (a trainable's ``state()`` may return its live tensors).
    """

    def __init__(self, restore: dict | None = None):
        self.reports: list[dict[str, Any]] = []
        self.status: str | None = None
        self.states: list[dict] = []
        self._restore = restore

    def report(self, metrics, *, status=None, state=None):
        self.reports.append(dict(metrics))
        if status is not None:
            self.status = status
        if state is not None:
            self.states.append(copy.deepcopy(state()))

    def restored_state(self):
        return self._restore


class RaySession(_Base):
    """Reports through ``ray.tune.report``; checkpoints are torch-saved state dicts."""

    FILE = "state.pt"

    def __init__(self):
        self._where: dict | None = None

    def where(self) -> dict:
        """Ray's id of the node this trial runs on, its GPU ids ("" without GPUs), its resources."""
        if self._where is None:
            import ray
            from ray import tune

            held = tune.get_context().get_trial_resources().required_resources
            self._where = {"node_id": ray.get_runtime_context().get_node_id(),
                           "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
                           "cpus": float(held.get("CPU", 0)), "gpus": float(held.get("GPU", 0))}
        return self._where

    def report(self, metrics, *, status=None, state=None):
        from ray import tune

        metrics = {**metrics, **self.where()}
        if status is not None:
            metrics[STATUS_KEY] = status
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_state(state(), os.path.join(tmp, self.FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def restored_state(self):
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_state(os.path.join(folder, self.FILE))


class OutputSink(Protocol):
    """Where a trial's printed output is kept (``study.store.TrialLogs``: the study's logs/ folder).
    ``write`` replaces the trial's whole log; ``read`` is "" for a trial with none yet."""

    def read(self, trial_id: str) -> str: ...

    def write(self, trial_id: str, text: str) -> None: ...


class SharedLog:
    """One output for several trials (the members of a packed trial, which train in one loop):
    written to each member's log, read back from the first's."""

    def __init__(self, sink: OutputSink, trial_ids: list[str]):
        self.sink, self.trial_ids = sink, list(trial_ids)

    def read(self, trial_id: str) -> str:
        return self.sink.read(self.trial_ids[0])

    def write(self, trial_id: str, text: str) -> None:
        for member in self.trial_ids:
            self.sink.write(member, text)


class _Tee(io.TextIOBase):
    """A text stream that writes to ``stream`` and appends to the shared ``parts``."""

    def __init__(self, stream, parts: list[str], lock: threading.Lock):
        self.stream, self.parts, self.lock = stream, parts, lock

    def write(self, text: str) -> int:
        self.stream.write(text)
        with self.lock:
            self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def captured_output(sink: OutputSink, trial_id: str, every_s: float = 30.0):
    """While inside, what the trial prints to ``sys.stdout`` and ``sys.stderr`` still goes there
    (the worker's log) and is also kept, interleaved as a terminal shows it, in
    ``sink.write(trial_id, text)``: every ``every_s`` seconds while it changes, and at the end.
    An exception's traceback is printed into it before it propagates. A restarted trial's
    log continues the one it had. Like Ray Tune's own ``log_to_file``, this swaps the
    process's Python streams: output of C code or subprocesses written to the file
    descriptors directly is not kept.
    """
    try:
        earlier = sink.read(trial_id)
    except Exception as exc:  # the storage is unreachable now: keep what this run prints
        print(f"warning: the earlier output of trial {trial_id} could not be read: {exc}", file=sys.stderr)
        earlier = ""
    parts = [earlier + ("" if earlier.endswith("\n") else "\n") + "--- the trial started again ---\n"] if earlier else []
    lock = threading.Lock()
    published = [len(parts)]
    done = threading.Event()

    def publish() -> None:
        with lock:
            count, text = len(parts), "".join(parts)
        if count != published[0]:
            sink.write(trial_id, text)
            published[0] = count

    def keep_publishing() -> None:
        while not done.wait(every_s):
            with contextlib.suppress(Exception):  # a failed upload waits for the next round or the end
                publish()

    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(streams[0], parts, lock), _Tee(streams[1], parts, lock)
    thread = threading.Thread(target=keep_publishing, name=f"trial-log-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        traceback.print_exc()  # into the log: what a terminal would have shown
        raise
    finally:
        sys.stdout, sys.stderr = streams
        done.set()
        thread.join()
        try:
            publish()
        except Exception as exc:  # a log that cannot be kept must not fail the trial
            print(f"warning: the output of trial {trial_id} was not kept: {exc}", file=sys.stderr)


def save_state(state: dict, file) -> None:
    """Write a checkpoint state (tensors, numbers, strings and containers of them)."""
    import torch

    torch.save(state, file)


def load_state(file) -> dict:
    """Read a checkpoint state written by ``save_state``. Only tensors and plain containers
    are rebuilt: a pickled object of any other class raises ``pickle.UnpicklingError``."""
    import torch

    return torch.load(file, weights_only=True)
