"""The function Ray Tune runs for a trial: look the trainable up and run it with a RaySession."""

from __future__ import annotations

from typing import Any, Callable

from trainables.registry import get_trainable
from trainables.session import OutputSink, RaySession, captured_output


def preload() -> None:
    """Import torch and every registered trainable's training code: the Ray workers' setup hook
    (``study.launch.ensure_ray``), so that a worker pays these imports (≈4 s on a 2-core VM) when
    it starts, not inside a trial (bench/README.md, section overhead)."""
    from trainables import PACKED, TRAINABLES

    for info in [*TRAINABLES.values(), *PACKED.values()]:
        info.run_function()


def _trial_cpus() -> int:
    from ray import tune

    resources = tune.get_context().get_trial_resources()
    return max(1, int(resources.required_resources.get("CPU", 1)))


def ray_trainable(name: str, skip: Callable[[str, dict], Any] | None = None,
                  output: OutputSink | None = None) -> Callable[[dict], None]:
    """A Ray Tune function trainable for registered trainable ``name``.

    ``skip(trial_id, config)``, when given and true, makes a trial return at once without
    reporting: a resumed study uses it for trials its store already has as ended, which
    Ray Tune's own (older) experiment state would run again. ``output``, when given,
    keeps what each trial prints (``trainables.session.captured_output``).
    """
    info = get_trainable(name)

    def trainable(config: dict) -> None:
        if skip is not None:
            from ray import tune

            if skip(tune.get_context().get_trial_id(), config):
                return
        import torch

        if not config.get("threads"):
            torch.set_num_threads(_trial_cpus())  # one torch thread per CPU the trial holds
        if output is None:
            info.run_function()(config, RaySession())
            return
        from ray import tune

        with captured_output(output, tune.get_context().get_trial_id()):
            info.run_function()(config, RaySession())

    trainable.__name__ = trainable.__qualname__ = name.replace("-", "_")
    return trainable
