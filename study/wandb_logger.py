"""Ray Tune's W&B logger callback, usable offline without an API key (``study.trackers``).

Its own module: importing Ray's W&B integration imports wandb, which only a study that
names ``wandb`` in its ``loggers`` should pay for.
"""

from __future__ import annotations

import os

from ray.air.integrations.wandb import WandbLoggerCallback


class StudyWandbCallback(WandbLoggerCallback):
    """``WandbLoggerCallback`` whose ``mode: offline`` (or ``disabled``) needs no API key.

    Ray's setup asks for a key unless the driver's WANDB_MODE says offline; the spec's
    ``mode`` says so for the time of that check, without changing the driver's environment.
    """

    def setup(self, *args, **kwargs):
        mode = self.kwargs.get("mode")
        previous = os.environ.get("WANDB_MODE")
        if mode not in ("offline", "disabled") or previous == mode:
            return super().setup(*args, **kwargs)
        os.environ["WANDB_MODE"] = mode
        try:
            return super().setup(*args, **kwargs)
        finally:
            if previous is None:
                os.environ.pop("WANDB_MODE", None)
            else:
                os.environ["WANDB_MODE"] = previous
