"""Learning-rate schedules as one pure function of the step (no torch)."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "step")


def lr_at(step: int, *, schedule: str, lr: float, total_steps: int, warmup_steps: int = 0,
          min_lr: float = 0.0, decay_step: int | None = None, decay_lr: float | None = None) -> float:
    """The learning rate for optimiser step ``step`` (0-based).

    Every schedule starts with a linear warm-up from 0: ``lr * step / warmup_steps``
    for ``step < warmup_steps`` (the paper's LM runs start at LR 0). Then:

    - ``constant``: ``lr``.
    - ``cosine``: from ``lr`` at the end of warm-up to ``min_lr`` at ``total_steps``,
      ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of the
      post-warm-up steps done; ``min_lr`` after ``total_steps``.
    - ``step``: ``lr`` until ``decay_step``, then the absolute value ``decay_lr`` (the
      paper's vision protocol sets an absolute LR at the drop rather than a factor).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return lr * step / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # step
    if decay_step is None or decay_lr is None:
        raise ValueError("the step schedule needs decay_step and decay_lr")
    return lr if step < decay_step else decay_lr
