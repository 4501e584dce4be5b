"""Train a GPT one pass over a token stream and report at eval points.

Reads top to bottom: config → data → model → optimiser → loop. The loop keeps the
loss on the device and synchronises with the host only at report points.
"""

from __future__ import annotations

import time

import torch

from trainables.divergence import DivergenceDetector
from trainables.lm.config import LMConfig
from trainables.lm.data import WindowSampler, load_tokens
from trainables.models.gpt import GPT, model_config
from trainables.precision import precision, resolve_device
from trainables.registry import build_config
from trainables.schedules import lr_at
from trainables.session import Session

VAL_SEED = 1_000_003  # validation batches are the same for every trial of every study


def weight_decay_groups(model: GPT, *, weight_decay: float, decay_norms: bool,
                        decay_embeddings: bool) -> list[dict]:
    """The one rule for which tensors get weight decay.

    Matrices of attention and MLP always; token/position embeddings (the token
    embedding is also the output head) when ``decay_embeddings``; LayerNorm gains and
    any biases only when ``decay_norms``. Each group carries the parameter names.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied tensor is listed once
        is_embedding = name in ("transformer.wte.weight", "transformer.wpe.weight")
        if is_embedding:
            (decay if decay_embeddings else no_decay).append((name, p))
        elif p.dim() >= 2:
            decay.append((name, p))
        else:  # LayerNorm gains, biases
            (decay if decay_norms else no_decay).append((name, p))
    return [
        {"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0},
    ]


def make_optimizer(cfg: LMConfig, groups: list[dict]) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.optimizer == "adam":  # torch Adam's weight_decay is coupled L2: g += wd * w
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def scheduled_lr(cfg: LMConfig, step: int) -> float:
    return lr_at(step, schedule=cfg.schedule, lr=cfg.lr, total_steps=cfg.steps,
                 warmup_steps=cfg.warmup_steps, min_lr=cfg.lr * cfg.min_lr_ratio)


@torch.no_grad()
def evaluate(model: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]], autocast) -> float:
    model.eval()
    total = torch.zeros((), device=batches[0][0].device)
    for x, y in batches:
        with autocast():
            total += model(x, y)[1].float()
    model.train()
    return (total / len(batches)).item()


def global_norm(tensors) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


def run(config: dict, session: Session) -> None:
    cfg = build_config(LMConfig, config)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prec = precision(cfg.precision, device)

    # data: training windows from the run's seed, validation windows fixed for everyone
    data = load_tokens(cfg.dataset, cfg.data_dir)
    train = WindowSampler(data.train, context=cfg.context, batch_size=cfg.batch_size, seed=cfg.seed, device=device)
    val = WindowSampler(data.val, context=cfg.context, batch_size=cfg.batch_size, seed=VAL_SEED, device=device)
    val_batches = [val.batch() for _ in range(cfg.eval_batches)]

    # model and optimiser
    torch.manual_seed(cfg.seed)
    model = GPT(model_config(cfg.model, block_size=cfg.context, vocab_size=data.vocab_size))
    model.to(device=device, dtype=prec.param_dtype)
    groups = weight_decay_groups(model, weight_decay=cfg.weight_decay, decay_norms=cfg.decay_norms,
                                 decay_embeddings=cfg.decay_embeddings)
    optimizer = make_optimizer(cfg, groups)
    detector = DivergenceDetector(ratio=cfg.divergence_ratio)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    start_step, reports_done = 0, 0
    state = session.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        train.load_state_dict(state["train_sampler"])
        detector.load_state_dict(state["detector"])
        start_step, reports_done = state["step"], state["reports"]

    def snapshot() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "train_sampler": train.state_dict(), "detector": detector.state_dict(),
                "step": step + 1, "reports": reports_done}

    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.context
    loss_sum = torch.zeros((), device=device)
    steps_in_interval, interval_start = 0, time.perf_counter()
    for step in range(start_step, cfg.steps):
        lr = scheduled_lr(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(cfg.grad_accum):
            x, y = train.batch()
            with prec.autocast():
                _, loss = model(x, y)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().float() / cfg.grad_accum
        grad_norm = global_norm([p.grad for p in params if p.grad is not None])
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps_in_interval += 1

        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_every and not last:
            continue
        # report point: the only host synchronisation of the loop
        train_loss = (loss_sum / steps_in_interval).item()
        elapsed = time.perf_counter() - interval_start
        metrics = {
            "step": step + 1,
            "tokens": (step + 1) * tokens_per_step,
            "lr": lr,
            "train_loss": train_loss,
            "grad_norm": grad_norm.item(),
            "weight_norm": global_norm([p.detach() for p in params]).item(),
            "tokens_per_s": steps_in_interval * tokens_per_step / elapsed,
        }
        reports_done += 1
        if detector.check(train_loss, step + 1):
            metrics.update(diverged_step=detector.step, last_finite_loss=detector.last_finite_loss)
            session.report(metrics, status="diverged")
            return
        metrics["val_loss"] = evaluate(model, val_batches, prec.autocast)
        checkpoint = session.should_checkpoint(reports_done, cfg.checkpoint_every)
        session.report(metrics, status="finished" if last else None, state=snapshot if checkpoint else None)
        loss_sum.zero_()
        steps_in_interval, interval_start = 0, time.perf_counter()
