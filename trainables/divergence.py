"""Deciding that a run has diverged: a non-finite loss, or an unrecovered blow-up."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DivergenceDetector:
    """Feed it the training loss at each check; ``check`` says whether the run diverged.

    A run diverges when the loss is NaN/inf, or exceeds ``ratio`` times the lowest
    loss seen so far. ``last_finite_loss`` and ``step`` record where it happened.
    """

    ratio: float = 2.0
    running_min: float = math.inf
    last_finite_loss: float = math.nan
    step: int | None = None
    reason: str = ""

    def check(self, loss: float, step: int) -> bool:
        if not math.isfinite(loss):
            self.step, self.reason = step, "non-finite loss"
            return True
        if loss > self.ratio * self.running_min:
            self.step, self.reason = step, f"loss {loss:.4g} > {self.ratio:g} x running minimum {self.running_min:.4g}"
            self.last_finite_loss = loss
            return True
        self.running_min = min(self.running_min, loss)
        self.last_finite_loss = loss
        return False

    def state_dict(self) -> dict:
        return {"running_min": self.running_min, "last_finite_loss": self.last_finite_loss}

    def load_state_dict(self, state: dict) -> None:
        self.running_min = state["running_min"]
        self.last_finite_loss = state["last_finite_loss"]
