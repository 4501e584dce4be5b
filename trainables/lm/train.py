"""Train GPTs one pass over a token stream and report at eval points: the LM trainable's one loop.

``train(cfgs, session, engine)`` trains K members (K configs that differ only in packable
hyperparameters) through an *engine*, the part that owns the models and the optimiser:
``ModuleEngine`` here is K = 1, a plain module with torch's own optimiser (an unpacked
trial, ``run``); ``trainables.lm.packed.StackedEngine`` stacks K members into one batched
model. The loop owns everything else, written once: data, schedule, evaluation cadence,
metrics, divergence, checkpoints and reports. Every per-member value is a [K] tensor.

Reads top to bottom: config → data → engine (models, optimiser) → loop. Batches are drawn
on the device, the loss, gradient norm and divergence flags accumulate on the device, and
the loop synchronises with the host once per report.

Divergence (``trainables.divergence``) is judged at each report on the interval train
loss: NaN/inf ends the run ``diverged`` at once; a loss above ``divergence_ratio`` × its
running minimum that comes back within ``divergence_patience`` steps is a recovered
spike (``loss_spikes``, ``last_spike_step``, ``last_spike_peak``) and the run goes on;
one that does not (or is still open at the last report) ends it ``diverged``, with
``diverged_step`` the report where the blow-up started.
"""

from __future__ import annotations

import copy
import time
import warnings

import torch

from trainables.divergence import DivergenceDetector
from trainables.lm.config import LMConfig
from trainables.lm.data import WindowSampler, load_tokens
from trainables.lm.metrics import adam_effective_lr, decay_applied_fraction, mfu, peak_bf16_flops
from trainables.lm.optim import (build_optimizer, fused_adam_available, global_norm, optimizer_step, set_schedule,
                                 weight_decay_groups)
from trainables.models.gpt import GPT, model_config
from trainables.packing import OneMemberSession, PackSession
from trainables.precision import Precision, precision, resolve_device
from trainables.registry import build_config
from trainables.schedules import MemberSchedules, lr_at
from trainables.session import Session

# Evaluation windows are the same for every trial of every study (for one device type).
VAL_SEED = 1_000_003
TRAIN_EVAL_SEED = 1_000_033


def schedule_at(cfg: LMConfig, step: int) -> tuple[float, float]:
    """(learning rate, weight decay) of optimiser step ``step`` (0-based).

    Warm-up from 0 over ``warmup_steps``, then cosine to ``lr * min_lr_ratio`` at
    ``steps`` or constant; the tail after ``steps`` runs at ``tail_lr`` without decay.
    """
    if step >= cfg.steps:
        return cfg.tail_lr, 0.0
    return lr_at(step, **lr_arguments(cfg)), cfg.weight_decay


def lr_arguments(cfg: LMConfig) -> dict:
    """``lr_at``'s keyword arguments of the LM's schedule before the tail (``schedule_at``)."""
    return dict(schedule=cfg.schedule, lr=cfg.lr, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps,
                min_lr=cfg.lr * cfg.min_lr_ratio)


class MemberHyperparameters:
    """``schedule_at`` of K members at once on the device: ``at(step)`` is each member's (learning
    rate, weight decay) of optimiser step ``step`` as two float64 [K] device tensors. The learning
    rates come from ``trainables.schedules.MemberSchedules.table``, a block of ``CHUNK`` steps at a
    time, so a step costs an index into a device table: no per-member host work, no host-device
    copy, no synchronisation. The tail after ``steps`` runs at ``tail_lr`` without decay."""

    CHUNK = 1024

    def __init__(self, cfgs: list[LMConfig], device: torch.device):
        def per_member(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64, device=device)

        self.device = device
        self.steps = cfgs[0].steps  # the same for every member (not a packable axis)
        self.schedules = MemberSchedules([lr_arguments(c) for c in cfgs])
        self.weight_decay = per_member([c.weight_decay for c in cfgs])
        self.tail = (per_member([c.tail_lr for c in cfgs]), torch.zeros_like(self.weight_decay))
        self.first, self.table = -1, None

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step >= self.steps:
            return self.tail
        if self.table is None or not self.first <= step < self.first + len(self.table):
            self.first = step
            self.table = self.schedules.table(step, min(self.CHUNK, self.steps - step), self.device)
        return self.table[step - self.first], self.weight_decay


class ParameterEMA:
    """p_ema ← decay·p_ema + (1 − decay)·p after every step, starting from the initial
    weights, no bias correction (the paper's 0.99 per step). Kept in float32 as its
    own copy of the model, so it is evaluated like the model itself."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.params = list(self.model.parameters())

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        torch._foreach_lerp_(self.params, [p.float() for p in model.parameters()], 1.0 - self.decay)


class IntervalTimer:
    """Seconds of training between two points; CUDA events on a GPU, so that timing
    needs no synchronisation of its own (read it after the report's one sync)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self.begin = self._mark()

    def stop(self) -> None:
        self.end = self._mark()

    def seconds(self) -> float:
        if self.cuda:
            return self.begin.elapsed_time(self.end) / 1000
        return self.end - self.begin


@torch.no_grad()
def evaluate(model, batches: list[tuple[torch.Tensor, torch.Tensor]], autocast) -> torch.Tensor:
    """Mean loss over fixed batches, as a device tensor."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=batches[0][0].device)
    for x, y in batches:
        with autocast():
            total += model(x, y)[1].float()
    model.train(was_training)
    return total / len(batches)


def _cpu_copy(obj):
    """A deep copy with every tensor cloned to the CPU (checkpoints outlive the step)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class ModuleEngine:
    """K = 1: one GPT as a plain module with torch's own optimiser (fused AdamW where it can),
    the unpacked trial at its own speed. The engine interface the loop drives (``train``):

    - ``params`` (decayed tensors first), ``decayed``, ``fixed_metrics``, ``flops_per_token``;
    - ``set_step(step)`` before each optimiser step: its learning rate and weight decay
      (``schedule_at``, each member's own, computed by the engine: on the host for K = 1, on
      the device for a pack);
    - ``loss_and_backward(x, y, shared, accumulation)``: one micro-batch's forward and
      backward, the members' losses as a detached [K] tensor;
    - ``step()``: the L2 penalty's gradient, clipping, the optimiser step, the parameter
      EMA; each member's gradient norm before clipping, [K];
    - ``set_active([bool] per member)``: masked members stop changing;
    - ``norms(tensors)``, ``effective_lr()``, ``decay_applied(factors)``, ``evaluate(batches, ema=)``: [K];
    - ``state_dict()`` / ``load_state_dict(state)``: the models, optimiser and EMA.
    """

    def __init__(self, cfgs: list[LMConfig], vocab_size: int, device: torch.device, prec: Precision):
        (cfg,) = cfgs
        self.cfg, self.prec, self.device = cfg, prec, device
        torch.manual_seed(cfg.seed)
        model = GPT(model_config(cfg.model, block_size=cfg.context, vocab_size=vocab_size))
        self.model = model.to(device=device, dtype=prec.param_dtype)
        self.ema = ParameterEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        groups = weight_decay_groups(model, decay_norms=cfg.decay_norms, decay_embeddings=cfg.decay_embeddings)
        # Fused Adam folds the decay into the update before one rounding; pure-bf16 runs keep the
        # unfused step, whose decay is its own rounded multiply (what decay_applied_fraction measures).
        self.optimizer = build_optimizer(cfg.optimizer, groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, momentum=cfg.momentum,
                                         fused=fused_adam_available(device) and prec.param_dtype == torch.float32)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.decayed = self.optimizer.param_groups[0]["params"]
        self.forward = torch.compile(model) if cfg.compile else model
        self.fixed_metrics = groups.summary()
        self.flops_per_token = model.flops_per_token()

    def set_step(self, step: int) -> None:
        self.lr, weight_decay = schedule_at(self.cfg, step)
        set_schedule(self.optimizer, lr=self.lr, weight_decay=weight_decay)

    def loss_and_backward(self, x: torch.Tensor, y: torch.Tensor, shared: bool, accumulation: int) -> torch.Tensor:
        with self.prec.autocast():
            _, loss = self.forward(x, y)
        (loss / accumulation).backward()
        return loss.detach().view(1)

    def step(self) -> torch.Tensor:
        grad_norm = optimizer_step(self.optimizer, l2_penalty=self.cfg.l2_penalty, grad_clip=self.cfg.grad_clip)
        if self.ema is not None:
            self.ema.update(self.model)
        return grad_norm.view(1)

    def set_active(self, active: list[bool]) -> None:
        pass  # a run of one ends with its member

    def norms(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return global_norm(tensors).view(1)

    def effective_lr(self) -> torch.Tensor:
        elr = adam_effective_lr(self.optimizer, self.lr)
        return (elr if elr is not None else torch.tensor(self.lr, device=self.device)).view(1)

    def decay_applied(self, factors: list[float]) -> torch.Tensor:
        return decay_applied_fraction(self.decayed, factors[0]).view(1)

    def evaluate(self, batches: list[tuple[torch.Tensor, torch.Tensor]], *, ema: bool = False) -> torch.Tensor:
        return evaluate(self.ema.model if ema else self.forward, batches, self.prec.autocast).view(1)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.model.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])


def run(config: dict, session: Session) -> None:
    """The unpacked trial: one member through ``ModuleEngine``."""
    cfg = build_config(LMConfig, config)

    # checkpoints in the unpacked layout: one sampler, one detector
    layout = {"samplers": ("train_sampler", lambda samplers: samplers[cfg.seed], lambda one: {cfg.seed: one}),
              "detectors": ("detector", lambda detectors: detectors[0], lambda one: [one])}
    train([cfg], OneMemberSession(session, layout=layout), ModuleEngine)


def _warn_if_decay_rounds_away(cfgs: list[LMConfig], engine, dtype: torch.dtype) -> None:
    decaying = [k for k, c in enumerate(cfgs) if c.optimizer == "adamw" and c.weight_decay > 0]
    if not decaying or not engine.decayed:
        return
    applied = engine.decay_applied([1 - c.lr * c.weight_decay for c in cfgs]).tolist()
    for k in decaying:
        if applied[k] < 0.5:  # the pure-bf16 pitfall: the decay rounds away
            warnings.warn(f"weight decay {cfgs[k].weight_decay} at lr {cfgs[k].lr} changes only {applied[k]:.1%} "
                          f"of the decayed {dtype} weights per step; see decay_applied_fraction", stacklevel=4)


def train(cfgs: list[LMConfig], session: PackSession, engine_class) -> None:
    """Train the members ``cfgs`` (they differ only in packable axes) through an engine built as
    ``engine_class(cfgs, vocab_size, device, precision)``; report each member's metrics through
    ``session`` (a ``PackSession``). A member that diverges reports ``diverged`` and is masked
    out; the loop ends when none is left or at the last step."""
    cfg, size = cfgs[0], len(cfgs)  # cfg: the fields every member shares
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    prec = precision(cfg.precision, device)

    # data: each distinct seed's training windows (members sharing a seed share one draw, and
    # then one input tensor); evaluation windows fixed for all
    data = load_tokens(cfg.dataset, cfg.data_dir)
    windows = dict(context=cfg.context, batch_size=cfg.batch_size, device=device, vocab_size=data.vocab_size)
    seeds = sorted({c.seed for c in cfgs})
    samplers = {seed: WindowSampler(data.train, seed=seed, **windows) for seed in seeds}
    shared_data = len(seeds) == 1
    val_batches = WindowSampler(data.val, seed=VAL_SEED, **windows).fixed_batches(cfg.eval_batches)
    train_eval_batches = WindowSampler(data.train, seed=TRAIN_EVAL_SEED, **windows).fixed_batches(cfg.eval_batches)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        drawn = {seed: sampler.batch() for seed, sampler in samplers.items()}
        if shared_data:
            return drawn[seeds[0]]
        return (torch.stack([drawn[c.seed][0] for c in cfgs]), torch.stack([drawn[c.seed][1] for c in cfgs]))

    # the members' models, their averages, the optimiser: the engine's
    engine = engine_class(cfgs, data.vocab_size, device, prec)
    detectors = [DivergenceDetector(ratio=cfg.divergence_ratio, patience=cfg.divergence_patience) for _ in cfgs]
    active = [True] * size
    _warn_if_decay_rounds_away(cfgs, engine, prec.param_dtype)

    start_step, reports_done = 0, 0
    state = session.restored_state()
    if state is not None:
        engine.load_state_dict(state)
        for seed, sampler in samplers.items():
            sampler.load_state_dict(state["samplers"][seed])
        for detector, saved in zip(detectors, state["detectors"]):
            detector.load_state_dict(saved)
        active = list(state["active"])
        if not all(active):
            engine.set_active(active)
        start_step, reports_done = state["step"], state["reports"]

    def snapshot() -> dict:
        return _cpu_copy({**engine.state_dict(), "samplers": {seed: s.state_dict() for seed, s in samplers.items()},
                          "detectors": [d.state_dict() for d in detectors], "active": list(active),
                          "step": step + 1, "reports": reports_done})

    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    total_steps = cfg.steps + cfg.tail_steps

    # per-interval accumulators, [K] on the device
    loss_sum = torch.zeros(size, device=device)
    grad_norm_sum = torch.zeros(size, device=device)
    first_nonfinite = torch.full((size,), -1.0, device=device)  # step whose loss was first NaN/inf
    steps_in_interval = 0
    timer = IntervalTimer(device)
    timer.start()
    for step in range(start_step, total_steps):
        engine.set_step(step)  # each member's learning rate and weight decay, by the engine
        step_loss = torch.zeros(size, device=device)
        for _ in range(cfg.accumulation):
            x, y = batch()
            step_loss += engine.loss_and_backward(x, y, shared_data, cfg.accumulation) / cfg.accumulation
        first_nonfinite = torch.where((first_nonfinite < 0) & ~torch.isfinite(step_loss),
                                      float(step + 1), first_nonfinite)
        loss_sum += step_loss
        report_now = (step + 1) % cfg.eval_every == 0 or step + 1 == total_steps
        before = [p.detach().clone() for p in engine.params] if report_now else None
        grad_norm_sum += engine.step()
        steps_in_interval += 1
        if not report_now:
            continue

        # report point: every member's metrics on the device, then one host synchronisation
        timer.stop()
        schedule = [schedule_at(c, step) for c in cfgs]  # (lr, weight decay) of each member, reported
        values = {
            "train_loss": loss_sum / steps_in_interval,
            "grad_norm": grad_norm_sum / steps_in_interval,
            "weight_norm": engine.norms(engine.params),
            "update_norm": engine.norms(torch._foreach_sub([p.detach() for p in engine.params], before)),
            "first_nonfinite": first_nonfinite,
        }
        del before
        values["effective_lr"] = engine.effective_lr()
        decaying = [c.optimizer == "adamw" and weight_decay > 0 for c, (_, weight_decay) in zip(cfgs, schedule)]
        if any(decaying) and engine.decayed:
            values["decay_applied_fraction"] = engine.decay_applied([1 - lr * wd for lr, wd in schedule])
        values["val_loss"] = engine.evaluate(val_batches)
        values["eval_train_loss"] = engine.evaluate(train_eval_batches)
        if cfg.ema_decay > 0:
            values["ema_val_loss"] = engine.evaluate(val_batches, ema=True)
        with torch.no_grad():
            host = torch.stack([v.float() for v in values.values()]).tolist()  # (metrics, K)
        # a member's tokens_per_s (and mfu) is its own share: its tokens per second of the pack's time
        tokens_per_s = steps_in_interval * cfg.tokens_per_step / timer.seconds()
        reports_done += 1
        last = step + 1 == total_steps

        reports, statuses = {}, {}
        for k in range(size):
            if not active[k]:
                continue
            own = {name: host[i][k] for i, name in enumerate(values)}
            nonfinite_step = int(own.pop("first_nonfinite"))
            if not decaying[k]:
                own.pop("decay_applied_fraction", None)
            metrics = {"step": step + 1, "tokens": (step + 1) * cfg.tokens_per_step, "lr": schedule[k][0], **own,
                       "tokens_per_s": tokens_per_s, **engine.fixed_metrics}
            if peak is not None:
                metrics["mfu"] = mfu(engine.flops_per_token, tokens_per_s, peak)
            diverged = detectors[k].check(metrics["train_loss"], nonfinite_step if nonfinite_step > 0 else step + 1,
                                          final=last)
            metrics.update(detectors[k].metrics())
            if diverged:
                metrics.update(diverged_step=detectors[k].step, last_finite_loss=detectors[k].last_finite_loss)
                statuses[k], active[k] = "diverged", False
            elif last:
                statuses[k] = "finished"
            reports[k] = metrics
        if not all(active):
            engine.set_active(active)
        loss_sum.zero_()
        grad_norm_sum.zero_()
        steps_in_interval = 0
        checkpoint = any(active) and session.should_checkpoint(reports_done, cfg.checkpoint_every)
        session.report(reports, statuses=statuses, state=snapshot if checkpoint else None)
        if not any(active):
            return
        timer.start()
