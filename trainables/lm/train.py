"""Train a GPT one pass over a token stream and report at eval points.

Reads top to bottom: config → data → model → optimiser → loop. Batches are drawn on
the device, the loss, gradient norm and divergence flags accumulate on the device,
and the loop synchronises with the host once per report.

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
from trainables.precision import precision, resolve_device
from trainables.registry import build_config
from trainables.schedules import lr_at
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
    lr = lr_at(step, schedule=cfg.schedule, lr=cfg.lr, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps,
               min_lr=cfg.lr * cfg.min_lr_ratio)
    return lr, cfg.weight_decay


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


def run(config: dict, session: Session) -> None:
    cfg = build_config(LMConfig, config)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    prec = precision(cfg.precision, device)

    # data: training windows in the order of the run's seed; evaluation windows fixed for all
    data = load_tokens(cfg.dataset, cfg.data_dir)
    windows = dict(context=cfg.context, batch_size=cfg.batch_size, device=device, vocab_size=data.vocab_size)
    train = WindowSampler(data.train, seed=cfg.seed, **windows)
    val_batches = WindowSampler(data.val, seed=VAL_SEED, **windows).fixed_batches(cfg.eval_batches)
    train_eval_batches = WindowSampler(data.train, seed=TRAIN_EVAL_SEED, **windows).fixed_batches(cfg.eval_batches)

    # model, its average, the optimiser
    torch.manual_seed(cfg.seed)
    model = GPT(model_config(cfg.model, block_size=cfg.context, vocab_size=data.vocab_size))
    model.to(device=device, dtype=prec.param_dtype)
    ema = ParameterEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    groups = weight_decay_groups(model, decay_norms=cfg.decay_norms, decay_embeddings=cfg.decay_embeddings)
    # Fused Adam folds the decay into the update before one rounding; pure-bf16 runs keep the
    # unfused step, whose decay is its own rounded multiply (what decay_applied_fraction measures).
    optimizer = build_optimizer(cfg.optimizer, groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, momentum=cfg.momentum,
                                fused=fused_adam_available(device) and prec.param_dtype == torch.float32)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    decayed = optimizer.param_groups[0]["params"]
    forward = torch.compile(model) if cfg.compile else model
    detector = DivergenceDetector(ratio=cfg.divergence_ratio, patience=cfg.divergence_patience)
    if cfg.optimizer == "adamw" and cfg.weight_decay > 0 and decayed:
        applied = decay_applied_fraction(decayed, 1 - cfg.lr * cfg.weight_decay).item()
        if applied < 0.5:  # the pure-bf16 pitfall: the decay rounds away
            warnings.warn(f"weight decay {cfg.weight_decay} at lr {cfg.lr} changes only {applied:.1%} of the decayed "
                          f"{prec.param_dtype} weights per step; see decay_applied_fraction", stacklevel=2)

    start_step, reports_done = 0, 0
    state = session.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        train.load_state_dict(state["train_sampler"])
        detector.load_state_dict(state["detector"])
        start_step, reports_done = state["step"], state["reports"]

    def snapshot() -> dict:
        return _cpu_copy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "ema": ema.model.state_dict() if ema is not None else None,
                          "train_sampler": train.state_dict(), "detector": detector.state_dict(),
                          "step": step + 1, "reports": reports_done})

    fixed_metrics = groups.summary()
    flops_per_token = model.flops_per_token()
    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    total_steps = cfg.steps + cfg.tail_steps

    # per-interval accumulators, all on the device
    loss_sum = torch.zeros((), device=device)
    grad_norm_sum = torch.zeros((), device=device)
    first_nonfinite = torch.full((), -1.0, device=device)  # step whose loss was first NaN/inf
    steps_in_interval = 0
    timer = IntervalTimer(device)
    timer.start()
    for step in range(start_step, total_steps):
        lr, weight_decay = schedule_at(cfg, step)
        set_schedule(optimizer, lr=lr, weight_decay=weight_decay)
        step_loss = torch.zeros((), device=device)
        for _ in range(cfg.accumulation):
            x, y = train.batch()
            with prec.autocast():
                _, loss = forward(x, y)
            (loss / cfg.accumulation).backward()
            step_loss += loss.detach() / cfg.accumulation
        first_nonfinite = torch.where((first_nonfinite < 0) & ~torch.isfinite(step_loss),
                                      float(step + 1), first_nonfinite)
        loss_sum += step_loss
        report_now = (step + 1) % cfg.eval_every == 0 or step + 1 == total_steps
        before = [p.detach().clone() for p in params] if report_now else None
        grad_norm_sum += optimizer_step(optimizer, l2_penalty=cfg.l2_penalty, grad_clip=cfg.grad_clip)
        if ema is not None:
            ema.update(model)
        steps_in_interval += 1
        if not report_now:
            continue

        # report point: compute everything on the device, then one host synchronisation
        timer.stop()
        values = {
            "train_loss": loss_sum / steps_in_interval,
            "grad_norm": grad_norm_sum / steps_in_interval,
            "weight_norm": global_norm(params),
            "update_norm": global_norm(torch._foreach_sub([p.detach() for p in params], before)),
            "first_nonfinite": first_nonfinite,
        }
        del before
        elr = adam_effective_lr(optimizer, lr)
        values["effective_lr"] = elr if elr is not None else torch.tensor(lr, device=device)
        if cfg.optimizer == "adamw" and weight_decay > 0 and decayed:
            values["decay_applied_fraction"] = decay_applied_fraction(decayed, 1 - lr * weight_decay)
        values["val_loss"] = evaluate(forward, val_batches, prec.autocast)
        values["eval_train_loss"] = evaluate(forward, train_eval_batches, prec.autocast)
        if ema is not None:
            values["ema_val_loss"] = evaluate(ema.model, val_batches, prec.autocast)
        host = dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))
        nonfinite_step = int(host.pop("first_nonfinite"))
        tokens_per_s = steps_in_interval * cfg.tokens_per_step / timer.seconds()
        metrics = {"step": step + 1, "tokens": (step + 1) * cfg.tokens_per_step, "lr": lr, **host,
                   "tokens_per_s": tokens_per_s, **fixed_metrics}
        if peak is not None:
            metrics["mfu"] = mfu(flops_per_token, tokens_per_s, peak)
        reports_done += 1
        last = step + 1 == total_steps
        diverged = detector.check(metrics["train_loss"], nonfinite_step if nonfinite_step > 0 else step + 1, final=last)
        metrics.update(detector.metrics())
        if diverged:
            metrics.update(diverged_step=detector.step, last_finite_loss=detector.last_finite_loss)
            session.report(metrics, status="diverged")
            return
        loss_sum.zero_()
        grad_norm_sum.zero_()
        steps_in_interval = 0
        checkpoint = session.should_checkpoint(reports_done, cfg.checkpoint_every)
        session.report(metrics, status="finished" if last else None, state=snapshot if checkpoint else None)
        timer.start()
