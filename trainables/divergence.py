"""Deciding that a run has diverged: a non-finite loss, or a blow-up that does not recover.

The paper's divergence (bf16 GPT-2 at LR 1e-3) is a loss that blows up and never comes
back; a spike that comes back within a few hundred steps is part of a normal run. So:

- a NaN/inf loss is a divergence at once: the parameters it leaves cannot recover;
- a loss above ``ratio`` × its running minimum (or above ``limit``) opens a *blow-up*
  at that check; the running minimum is not updated while it is open;
- a check back at or below the threshold within ``patience`` steps of the blow-up's
  first check closes it as a recovered *spike* (counted in ``spikes``, with the step
  it started at and its peak loss); the run goes on;
- a blow-up still open at a check ``patience`` or more steps after it started is a
  divergence, dated at the step the blow-up started;
- a blow-up still open at the run's last check (``final=True``) is a divergence too,
  even if its window has not elapsed: the run ended blown up, without recovering, and
  its final numbers are those of the blown-up model (so they must not count as a
  finished run's).

``patience`` is in the units of the ``step`` the caller passes (optimiser steps in both
trainables); ``patience=0`` is the old rule, a divergence at the first check above.
The detector only sees numbers the trainables already have on the host at a report or
epoch end, so it adds no device synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass
class DivergenceDetector:
    """Feed it the training loss at each check; ``check`` says whether the run has diverged.

    ``step`` and ``reason`` say where and why it diverged; ``last_finite_loss`` is the last
    finite loss it was fed; ``metrics()`` are the spike counters every report carries.
    """

    ratio: float = 2.0  # blow-up: loss > ratio × running minimum (inf: never)
    limit: float = math.inf  # blow-up also: loss > limit (inf: never)
    patience: int = 0  # steps a blow-up may last and still count as a recovered spike
    # state (all of it travels in state_dict)
    running_min: float = math.inf
    last_finite_loss: float = math.nan
    spikes: int = 0
    last_spike_step: int | None = None
    last_spike_peak: float = math.nan
    blowup_step: int | None = None  # first check of the open blow-up; None when none is open
    blowup_peak: float = math.nan
    step: int | None = None  # where it diverged
    reason: str = ""

    def __post_init__(self):
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def _blown(self, loss: float) -> bool:
        return loss > self.ratio * self.running_min or loss > self.limit

    def _threshold_text(self) -> str:
        parts = []
        if math.isfinite(self.ratio):
            parts.append(f"{self.ratio:g} x running minimum {self.running_min:.4g}")
        if math.isfinite(self.limit):
            parts.append(f"limit {self.limit:.4g}")
        return " or ".join(parts)

    def check(self, loss: float, step: int, *, final: bool = False) -> bool:
        """Record the loss of the check at ``step``; True when the run has diverged.

        ``final``: this is the run's last check (a blow-up still open then is a divergence).
        """
        if not math.isfinite(loss):
            started = self.blowup_step if self.blowup_step is not None else step
            self.step, self.reason = started, "non-finite loss"
            if self.blowup_step is not None:
                self.reason += f" at step {step}, in a blow-up from step {started}"
            return True
        self.last_finite_loss = loss
        if self._blown(loss):
            if self.blowup_step is None:
                self.blowup_step, self.blowup_peak = step, loss
            else:
                self.blowup_peak = max(self.blowup_peak, loss)
            lasted = step - self.blowup_step
            if lasted >= self.patience or final:
                self.step = self.blowup_step
                self.reason = (f"loss above {self._threshold_text()} from step {self.blowup_step} "
                               f"(peak {self.blowup_peak:.4g}) for {lasted} steps"
                               + (", to the end of the run" if final and lasted < self.patience else ""))
                return True
            return False
        if self.blowup_step is not None:  # back below within the window: a recovered spike
            self.spikes += 1
            self.last_spike_step, self.last_spike_peak = self.blowup_step, self.blowup_peak
            self.blowup_step, self.blowup_peak = None, math.nan
        self.running_min = min(self.running_min, loss)
        return False

    def metrics(self) -> dict:
        """``loss_spikes`` (recovered spikes so far) always; the last one's start step and
        peak loss once there has been one."""
        out: dict = {"loss_spikes": self.spikes}
        if self.last_spike_step is not None:
            out.update(last_spike_step=self.last_spike_step, last_spike_peak=self.last_spike_peak)
        return out

    _STATE = ("running_min", "last_finite_loss", "spikes", "last_spike_step", "last_spike_peak",
              "blowup_step", "blowup_peak")

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        """A checkpoint of the old detector (running minimum and last loss only) loads as one
        with no spike seen and no blow-up open."""
        defaults = {f.name: f.default for f in fields(self)}
        for name in self._STATE:
            setattr(self, name, state.get(name, defaults[name]))
