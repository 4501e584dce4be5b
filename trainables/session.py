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

import copy
import os
import tempfile
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
        import torch

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


def save_state(state: dict, file) -> None:
    """Write a checkpoint state (tensors, numbers, strings and containers of them)."""
    import torch

    torch.save(state, file)


def load_state(file) -> dict:
    """Read a checkpoint state written by ``save_state``. Only tensors and plain containers
    are rebuilt: a pickled object of any other class raises ``pickle.UnpicklingError``."""
    import torch

    return torch.load(file, weights_only=True)
