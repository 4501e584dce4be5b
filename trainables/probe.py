"""A trainable for testing and benchmarking the framework, not a model.

It runs noisy gradient descent with weight decay on a quadratic, f(w) = ½·a·‖w‖²
over ``dim`` coordinates, and reports the loss every ``report_every`` steps. It is
cheap and exactly deterministic for a seed, diverges for lr·(a + wd) > 2 (so an LR
grid has a known divergent edge), checkpoints its full state, and has knobs that
inject the faults a study must survive: raise an exception at a step, kill its own
worker process once at a step, or sleep to stand in for real work.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass

from trainables.divergence import DivergenceDetector
from trainables.registry import build_config, param
from trainables.session import Session


@dataclass(frozen=True)
class ProbeConfig:
    lr: float = param(0.1, gt=0)
    weight_decay: float = param(0.0, ge=0, help="decoupled: w -= lr * wd * w")
    curvature: float = param(1.0, gt=0, help="a in f(w) = a/2 |w|^2")
    noise: float = param(0.1, ge=0, help="std of the gradient noise")
    dim: int = param(8, gt=0)
    steps: int = param(20, gt=0)
    report_every: int = param(1, gt=0)
    seed: int = param(0, ge=0)
    sleep_s: float = param(0.0, ge=0, help="seconds of sleep per step, standing in for work")
    fail_at_step: int = param(0, ge=0, help="raise RuntimeError at this step (0: never)")
    crash_at_step: int = param(0, ge=0, help="kill the worker process at this step, once (0: never)")
    crash_marker: str = param("", help="folder for the once-only crash marker (needed with crash_at_step)")
    checkpoint_every: int = param(0, ge=0, help="reports between checkpoints; 0 = never")
    divergence_ratio: float = param(1e6, gt=1)


def run(config: dict, session: Session) -> None:
    cfg = build_config(ProbeConfig, config)
    rng = random.Random(cfg.seed)
    w = [rng.gauss(0.0, 1.0) for _ in range(cfg.dim)]
    start, reports = 0, 0
    detector = DivergenceDetector(ratio=cfg.divergence_ratio)
    state = session.restored_state()
    if state is not None:
        w, start, reports = list(state["w"]), state["step"], state["reports"]
        rng.setstate(state["rng"])
        detector.load_state_dict(state["detector"])

    for step in range(start + 1, cfg.steps + 1):
        if cfg.fail_at_step == step:
            raise RuntimeError(f"probe: injected failure at step {step}")
        if cfg.crash_at_step == step:
            _crash_once(cfg, step)
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
        grad = [cfg.curvature * x + rng.gauss(0.0, cfg.noise) for x in w]
        w = [x - cfg.lr * g - cfg.lr * cfg.weight_decay * x for x, g in zip(w, grad)]
        if step % cfg.report_every and step != cfg.steps:
            continue
        loss = 0.5 * cfg.curvature * sum(x * x for x in w)
        reports += 1
        metrics = {"step": step, "loss": loss, "weight_norm": math.sqrt(sum(x * x for x in w))}
        if detector.check(loss, step):
            session.report({**metrics, "diverged_step": step, "last_finite_loss": detector.last_finite_loss},
                           status="diverged")
            return
        snapshot = {"w": list(w), "step": step, "reports": reports, "rng": rng.getstate(),
                    "detector": detector.state_dict()}
        session.report(metrics, status="finished" if step == cfg.steps else None,
                       state=(lambda s=snapshot: s) if session.should_checkpoint(reports, cfg.checkpoint_every) else None)


def _crash_once(cfg: ProbeConfig, step: int) -> None:
    """Kill this process the first time any trial with this marker folder reaches ``step``."""
    if not cfg.crash_marker:
        raise ValueError("crash_at_step needs crash_marker, a folder for the once-only marker")
    marker = os.path.join(cfg.crash_marker, f"crashed-seed{cfg.seed}-lr{cfg.lr}-step{step}")
    if os.path.exists(marker):
        return
    os.makedirs(cfg.crash_marker, exist_ok=True)
    open(marker, "w").close()
    os._exit(1)
