"""Learning-rate schedules as one pure function of the step (``lr_at``, no torch), and the same for
the K members of a pack at once (``MemberSchedules``: one [steps, K] table per call, computed on
the device; torch is imported there)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import torch

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


class MemberSchedules:
    """``lr_at`` of K members, each with its own keyword arguments (``members[k]``).

    ``at(step)``: each member's LR at ``step`` on the host (``lr_at`` itself: for reports, and for
    a run of one). ``table(first, count, device)``: every member's LR at steps ``first`` …
    ``first + count - 1`` as one float64 [count, K] tensor, computed on ``device`` by a dozen
    element-wise operations for all members and steps together: a pack's epoch of LRs without a
    per-member or per-step host computation, and no transfer but the step numbers' (equal to
    ``lr_at`` up to the last bit of a cosine: float64 ``torch.cos`` against ``math.cos``).
    """

    def __init__(self, members: Sequence[Mapping[str, Any]]):
        self.members = [dict(m) for m in members]
        for m in self.members:
            lr_at(0, **m)  # the checks of lr_at (an unknown schedule, a step schedule's missing drop)
        self._tensors: dict = {}

    def __len__(self) -> int:
        return len(self.members)

    def at(self, step: int) -> list[float]:
        return [lr_at(step, **m) for m in self.members]

    def _columns(self, device):
        key = str(device)
        if key not in self._tensors:
            import torch

            def column(name: str, default: float) -> torch.Tensor:
                values = [default if m.get(name) is None else m[name] for m in self.members]
                return torch.tensor(values, dtype=torch.float64, device=device)

            kinds = [SCHEDULES.index(m["schedule"]) for m in self.members]
            self._tensors[key] = {
                "kind": torch.tensor(kinds, device=device), "lr": column("lr", 0.0),
                "total": column("total_steps", 0), "warmup": column("warmup_steps", 0),
                "min_lr": column("min_lr", 0.0), "decay_step": column("decay_step", math.inf),
                "decay_lr": column("decay_lr", 0.0)}
        return self._tensors[key]

    def table(self, first: int, count: int, device) -> "torch.Tensor":
        import torch

        c = self._columns(device)
        step = torch.arange(first, first + count, dtype=torch.float64, device=device).unsqueeze(1)
        lr, warmup = c["lr"], c["warmup"]
        span = torch.clamp(c["total"] - warmup, min=1)
        progress = torch.clamp((step - warmup) / span, max=1.0)
        cosine = c["min_lr"] + (lr - c["min_lr"]) * 0.5 * (1.0 + torch.cos(math.pi * progress))
        dropped = torch.where(step < c["decay_step"], lr, c["decay_lr"])
        after = torch.where(c["kind"] == SCHEDULES.index("cosine"), cosine,
                            torch.where(c["kind"] == SCHEDULES.index("step"), dropped, lr.expand_as(cosine)))
        warming = lr * step / torch.clamp(warmup, min=1)
        return torch.where(step < warmup, warming, after)
