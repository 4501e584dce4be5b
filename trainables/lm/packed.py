"""The LM trainable packed: K configs that differ only in optimiser hyperparameters, trained as one.

``run(configs, session)`` trains one GPT per config as a ``StackedModel`` (one batched
forward/backward per micro-batch) with a ``BatchedAdamW`` (or ``BatchedSGD``) whose
learning rate, weight decay, betas and epsilon are [K] tensors, each member on the
schedule of its own config. It reads like ``trainables.lm.train.run`` and reports, per
member, the same metrics at the same steps, with the same arithmetic (up to float
rounding: batched matmuls and the composite attention kernel sum in another order).

- Data: each member draws the windows of its own seed (members sharing a seed share one
  draw, and then one input tensor); evaluation batches are fixed and shared.
- Initialisation: member k is built after ``torch.manual_seed(seed_k)``, as its own run.
- Divergence: at a report point each member's interval loss goes through its own
  ``DivergenceDetector`` (as unpacked: a recovered spike is counted, the member goes on);
  a member that diverged reports ``diverged`` and is masked out (its parameters and
  optimiser state stop changing); the pack ends when none is left.
- ``tokens_per_s`` and ``mfu`` of a member are its own share: its tokens per second of
  the pack's wall time (the pack's throughput is the sum over members).
- Checkpoints hold the stacked model, optimiser and EMA, every seed's sampler, every
  member's detector and whether it is still active: a resumed pack continues bit for
  bit on a CPU.
"""

from __future__ import annotations

import torch

from trainables.batched import (BatchedAdamW, BatchedSGD, StackedModel, batched_attention, clip_member_grads,
                                member_norms)
from trainables.divergence import DivergenceDetector
from trainables.lm.config import LMConfig
from trainables.lm.data import WindowSampler, load_tokens
from trainables.lm.metrics import mfu, peak_bf16_flops
from trainables.lm.optim import weight_decay_groups
from trainables.lm.train import TRAIN_EVAL_SEED, VAL_SEED, IntervalTimer, _cpu_copy, schedule_at
from trainables.models.gpt import GPT, model_config
from trainables.packing import PackSession, member_configs
from trainables.precision import precision, resolve_device

def member_loss(call, x, y):
    """What each member computes: the GPT's loss (its logits stay inside the vmap)."""
    return call(x, y)[1]


@torch.no_grad()
def evaluate(model: StackedModel, params: dict, batches: list[tuple[torch.Tensor, torch.Tensor]], autocast) -> torch.Tensor:
    """Each member's mean loss over the fixed (shared) batches, a [K] device tensor."""
    model.eval()
    total = torch.zeros(model.size, device=batches[0][0].device)
    for x, y in batches:
        with autocast(), batched_attention(x.device):
            total += model(x, y, shared=True, fn=member_loss, params=params).float()
    model.train()
    return total / len(batches)


def run(configs: list[dict], session: PackSession) -> None:
    cfgs = member_configs("lm", LMConfig, configs)  # members may differ only in the packable axes
    cfg, size = cfgs[0], len(cfgs)  # cfg: the fields every member shares
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    prec = precision(cfg.precision, device)
    per_member = lambda values: torch.tensor(values, dtype=torch.float64, device=device)  # noqa: E731

    # data: each distinct seed's training windows; evaluation windows fixed for all
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

    # the members' models (each from its own seed), stacked; their average; the optimiser
    members = []
    for c in cfgs:
        torch.manual_seed(c.seed)
        members.append(GPT(model_config(cfg.model, block_size=cfg.context, vocab_size=data.vocab_size))
                       .to(device=device, dtype=prec.param_dtype))
    groups = weight_decay_groups(members[0], decay_norms=cfg.decay_norms, decay_embeddings=cfg.decay_embeddings)
    fixed_metrics = groups.summary()
    flops_per_token = members[0].flops_per_token()
    model = StackedModel(members)
    del members
    decayed = [model.params[name] for name in groups.decay_names]
    params = decayed + [model.params[name] for name in groups.no_decay_names]
    if cfg.optimizer == "sgd":
        optimizer = BatchedSGD([(decayed, True), (params[len(decayed):], False)],
                               momentum=per_member([c.momentum for c in cfgs]), mode="l2")
    else:  # adam is adamw with weight decay 0 (the config refuses adam with a weight decay)
        optimizer = BatchedAdamW([(decayed, True), (params[len(decayed):], False)],
                                 betas=(per_member([c.beta1 for c in cfgs]), per_member([c.beta2 for c in cfgs])),
                                 eps=per_member([c.eps for c in cfgs]))
    eps = per_member([c.eps for c in cfgs])
    ema = {n: p.detach().float().clone() for n, p in model.params.items()} if cfg.ema_decay > 0 else None
    ema_pairs = [(ema[n], p) for n, p in model.params.items()] if ema is not None else []
    detectors = [DivergenceDetector(ratio=cfg.divergence_ratio, patience=cfg.divergence_patience) for _ in cfgs]
    active = [True] * size

    start_step, reports_done = 0, 0
    state = session.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            for name, tensor in ema.items():
                tensor.copy_(state["ema"][name])
        for seed, sampler in samplers.items():
            sampler.load_state_dict(state["samplers"][seed])
        for detector, saved in zip(detectors, state["detectors"]):
            detector.load_state_dict(saved)
        active = list(state["active"])
        start_step, reports_done = state["step"], state["reports"]

    def snapshot() -> dict:
        return _cpu_copy({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema,
                          "samplers": {seed: s.state_dict() for seed, s in samplers.items()},
                          "detectors": [d.state_dict() for d in detectors], "active": list(active),
                          "step": step + 1, "reports": reports_done})

    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    total_steps = cfg.steps + cfg.tail_steps
    mask = None  # [K] bool tensor once a member is masked out

    loss_sum = torch.zeros(size, device=device)
    grad_norm_sum = torch.zeros(size, device=device)
    first_nonfinite = torch.full((size,), -1.0, device=device)
    steps_in_interval = 0
    timer = IntervalTimer(device)
    timer.start()
    for step in range(start_step, total_steps):
        schedule = [schedule_at(c, step) for c in cfgs]
        lrs, weight_decays = per_member([s[0] for s in schedule]), per_member([s[1] for s in schedule])
        step_loss = torch.zeros(size, device=device)
        for _ in range(cfg.accumulation):
            x, y = batch()
            with prec.autocast(), batched_attention(device):
                loss = model(x, y, shared=shared_data, fn=member_loss)  # (K,)
            (loss.sum() / cfg.accumulation).backward()  # member k's gradient is that of its own loss
            step_loss += loss.detach().float() / cfg.accumulation
        first_nonfinite = torch.where((first_nonfinite < 0) & ~torch.isfinite(step_loss), float(step + 1),
                                      first_nonfinite)
        loss_sum += step_loss
        report_now = (step + 1) % cfg.eval_every == 0 or step + 1 == total_steps
        before = [p.detach().clone() for p in params] if report_now else None
        if cfg.l2_penalty:
            for p in decayed:
                p.grad.add_(p.detach(), alpha=2 * cfg.l2_penalty)
        grad_norm_sum += clip_member_grads(params, cfg.grad_clip)
        optimizer.step(lrs, weight_decays, mask)
        model.zero_grad()
        if ema is not None:
            torch._foreach_lerp_([e for e, _ in ema_pairs], [p.detach().float() for _, p in ema_pairs],
                                 1.0 - cfg.ema_decay)
        steps_in_interval += 1
        if not report_now:
            continue

        # report point: every member's metrics on the device, then one host synchronisation
        timer.stop()
        values = {
            "train_loss": loss_sum / steps_in_interval,
            "grad_norm": grad_norm_sum / steps_in_interval,
            "weight_norm": member_norms(params),
            "update_norm": member_norms(torch._foreach_sub([p.detach() for p in params], before)),
            "first_nonfinite": first_nonfinite,
        }
        del before
        if isinstance(optimizer, BatchedAdamW):  # Adam's typical step: lr / (sqrt(median v) + eps)
            second = torch.cat([v.flatten(1) for v in optimizer.second_moments()], dim=1).float()
            values["effective_lr"] = lrs.float() / (second.median(dim=1).values.sqrt() + eps.float())
        else:
            values["effective_lr"] = lrs.float()
        if cfg.optimizer == "adamw" and decayed:
            values["decay_applied_fraction"] = decay_applied_fraction(decayed, 1 - lrs * weight_decays)
        values["val_loss"] = evaluate(model, model.params, val_batches, prec.autocast)
        values["eval_train_loss"] = evaluate(model, model.params, train_eval_batches, prec.autocast)
        if ema is not None:
            values["ema_val_loss"] = evaluate(model, ema, val_batches, prec.autocast)
        with torch.no_grad():
            host = torch.stack([v.float() for v in values.values()]).tolist()  # (metrics, K)
        seconds = timer.seconds()
        reports_done += 1

        reports, statuses = {}, {}
        for k, c in enumerate(cfgs):
            if not active[k]:
                continue
            own = {name: host[i][k] for i, name in enumerate(values)}
            nonfinite_step = int(own.pop("first_nonfinite"))
            if not (c.optimizer == "adamw" and schedule[k][1] > 0):
                own.pop("decay_applied_fraction", None)
            tokens_per_s = steps_in_interval * cfg.tokens_per_step / seconds
            metrics = {"step": step + 1, "tokens": (step + 1) * cfg.tokens_per_step, "lr": schedule[k][0], **own,
                       "tokens_per_s": tokens_per_s, **fixed_metrics}
            if peak is not None:
                metrics["mfu"] = mfu(flops_per_token, tokens_per_s, peak)
            diverged = detectors[k].check(metrics["train_loss"], nonfinite_step if nonfinite_step > 0 else step + 1,
                                          final=step + 1 == total_steps)
            metrics.update(detectors[k].metrics())
            if diverged:
                metrics.update(diverged_step=detectors[k].step, last_finite_loss=detectors[k].last_finite_loss)
                statuses[k], active[k] = "diverged", False
            elif step + 1 == total_steps:
                statuses[k] = "finished"
            reports[k] = metrics
        if not all(active):
            mask = torch.tensor(active, device=device)
        loss_sum.zero_()
        grad_norm_sum.zero_()
        steps_in_interval = 0
        checkpoint = any(active) and session.should_checkpoint(reports_done, cfg.checkpoint_every)
        session.report(reports, statuses=statuses, state=snapshot if checkpoint else None)
        if not any(active):
            return
        timer.start()


@torch.no_grad()
def decay_applied_fraction(params: list[torch.Tensor], factor: torch.Tensor) -> torch.Tensor:
    """``trainables.lm.metrics.decay_applied_fraction`` per member: ``factor`` is a [K] tensor."""
    changed = torch.zeros(factor.shape[0], device=params[0].device)
    nonzero = torch.zeros(factor.shape[0], device=params[0].device)
    for p in params:
        scale = factor.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
        changed += ((p * scale).to(p.dtype) != p).flatten(1).sum(1)
        nonzero += (p != 0).flatten(1).sum(1)
    return changed / nonzero.clamp(min=1)
