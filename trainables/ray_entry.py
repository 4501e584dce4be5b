"""The function Ray Tune runs for a trial: look the trainable up and run it with a RaySession."""

from __future__ import annotations

from typing import Callable

from trainables.registry import get_trainable
from trainables.session import RaySession


def _trial_cpus() -> int:
    from ray import tune

    resources = tune.get_context().get_trial_resources()
    return max(1, int(resources.required_resources.get("CPU", 1)))


def ray_trainable(name: str) -> Callable[[dict], None]:
    """A Ray Tune function trainable for registered trainable ``name``."""
    info = get_trainable(name)

    def trainable(config: dict) -> None:
        import torch

        if not config.get("threads"):
            torch.set_num_threads(_trial_cpus())  # one torch thread per CPU the trial holds
        info.run_function()(config, RaySession())

    trainable.__name__ = trainable.__qualname__ = name.replace("-", "_")
    return trainable
