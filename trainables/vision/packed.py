"""The vision trainable packed: K configs that differ only in optimiser hyperparameters, trained as one.

``run(configs, session)`` follows ``trainables.vision.train.run`` epoch by epoch for K
members at once: one ``StackedModel`` (a vmapped forward/backward per step), one
``BatchedSGD`` whose learning rate, weight decay and momentum are [K] tensors on each
member's own schedule, and the same measurements, batched: evaluation passes, the
parameter EMA with its BatchNorm statistics recomputed, Tr(H) by Hutchinson's method
(each member draws its own probes from its own generator and stops by its own
tolerance; see below for CPUs), the fine-tune-after-decay branches (all members' branches as one stacked
copy), norms and effective LRs. Every member reports exactly the metrics, at the epochs,
of its own unpacked run (up to float rounding: grouped convolutions sum in another order).

- BatchNorm: the running statistics are stacked buffers passed through
  ``functional_call``; vmap's batching rule normalises each member's channels with its
  own batch statistics and updates its own running statistics in place (one BatchNorm
  over K·C channels). The EMA's statistics are recomputed per member by
  ``trainables.batched.update_norm_stats``.
- Data order: each member's batches come from the generator of its own seed (members
  sharing a seed share one draw and one input tensor, vmapped as shared).
- Tr(H): batched on a GPU; on a CPU, where the vmapped double backward is slower than K
  separate ones, each member is materialised as an ordinary module and measured by the
  unpacked code.
- Divergence: each member has its own ``DivergenceDetector``, checked at every epoch's
  end as unpacked: a member whose epoch had a NaN/inf loss, or whose blow-up above
  ``divergence_loss`` does not recover, reports ``diverged`` at that epoch and is masked
  out; the pack ends when none is left.
- ``samples_per_s`` of a member is its own share of the pack's throughput.
"""

from __future__ import annotations

import copy
import functools
import math
import time

import torch
import torch.nn.functional as F

from trainables.batched import BatchedSGD, StackedModel, member_norms, update_norm_stats
from trainables.packing import PackSession, member_configs
from trainables.precision import precision, resolve_device
from trainables.registry import ConfigError
from trainables.schedules import lr_at
from trainables.vision.config import VisionConfig
from trainables.vision.data import DeviceBatches, balanced_subset, load_dataset
from trainables.vision.hessian import PROBES_PER_PASS, rademacher_like
from trainables.vision.optim import weight_decay_groups
from trainables.vision.train import build_model, derived_generator, divergence_detector, make_projection
from trainables.vision.train import hessian_trace as single_hessian_trace  # noqa: I001 (one name renamed)


# ---------------------------------------------------------------- what each member computes (inside the vmap)


def loss_and_logits(call, x, y):
    logits = call(x)
    return F.cross_entropy(logits, y), logits


def summed_loss_and_errors(call, x, y):
    logits = call(x)
    return F.cross_entropy(logits.float(), y, reduction="sum"), (logits.argmax(1) != y).sum()


# ---------------------------------------------------------------- the members' data


class MemberBatches:
    """One ``DeviceBatches`` per distinct seed of the members, walked in step: each member gets
    exactly the batches its own run would (its seed's permutation and augmentation)."""

    def __init__(self, batches_by_seed: dict[int, DeviceBatches], member_seeds: list[int]):
        self.by_seed, self.seeds = batches_by_seed, member_seeds
        self.shared = len(batches_by_seed) == 1

    def __len__(self) -> int:
        return len(next(iter(self.by_seed.values())))

    def epoch(self):
        """Yields ``(x, y)``: shared tensors, or stacked (K, B, ...) per member."""
        walks = {seed: batches.epoch() for seed, batches in self.by_seed.items()}
        while True:
            try:
                drawn = {seed: next(walk) for seed, walk in walks.items()}
            except StopIteration:
                return
            if self.shared:
                yield next(iter(drawn.values()))
            else:
                yield (torch.stack([drawn[s][0] for s in self.seeds]), torch.stack([drawn[s][1] for s in self.seeds]))

    def state_dict(self) -> dict:
        return {seed: batches.state_dict() for seed, batches in self.by_seed.items()}

    def load_state_dict(self, state: dict) -> None:
        for seed, batches in self.by_seed.items():
            batches.load_state_dict(state[seed])


def member_batches(train: DeviceBatches, seeds: list[int], generator_of) -> MemberBatches:
    """Copies of ``train`` (same device tensors), each with ``generator_of(seed)``."""
    by_seed = {}
    for seed in dict.fromkeys(seeds):
        batches = copy.copy(train)
        batches.generator = generator_of(seed)
        by_seed[seed] = batches
    return MemberBatches(by_seed, seeds)


# ---------------------------------------------------------------- steps and measurements


class BatchedProjection:
    """``SphereProjection`` for stacked members: each group of each member back to its own radius."""

    def __init__(self, groups: list[list[str]], radii: torch.Tensor):
        self.groups, self.radii = groups, radii  # radii: (groups, K)

    @torch.no_grad()
    def __call__(self, model: StackedModel) -> None:
        for names, radius in zip(self.groups, self.radii):
            params = [model.params[n] for n in names]
            scale = radius / member_norms(params)
            for p in params:
                p.mul_(scale.to(p.dtype).view(-1, *([1] * (p.dim() - 1))))

    def state_dict(self) -> dict:
        return {"radii": self.radii.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.radii = state["radii"].clone()


def train_epoch(model: StackedModel, optimizer: BatchedSGD, batches: MemberBatches, prec, lrs_of_step, first_step: int,
                weight_decays: torch.Tensor, *, active: torch.Tensor | None, ema=None, after_step=None,
                last_finite_loss: torch.Tensor) -> dict:
    """``trainables.vision.train.train_epoch`` for all members: device-side sums per member."""
    size, device = model.size, last_finite_loss.device
    stats = {"loss_sum": torch.zeros(size, device=device), "correct": torch.zeros(size, dtype=torch.long, device=device),
             "first_bad_step": torch.full((size,), -1, dtype=torch.long, device=device),
             "last_finite_loss": last_finite_loss.clone(), "steps": 0}
    model.train()
    for i, (x, y) in enumerate(batches.epoch()):
        lrs = lrs_of_step(first_step + i)
        with prec.autocast():
            loss, logits = model(x, y, shared=batches.shared, fn=loss_and_logits)  # (K,), (K, B, classes)
        loss.sum().backward()  # member k's gradient is that of its own loss
        optimizer.step(lrs, weight_decays, active)
        model.zero_grad()
        if after_step is not None:
            after_step(model)
        if ema is not None:
            ema.update(model)
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        stats["loss_sum"] += loss
        stats["correct"] += (logits.detach().argmax(-1) == y).sum(-1)
        stats["first_bad_step"] = torch.where(~finite & (stats["first_bad_step"] < 0), first_step + i + 1,
                                              stats["first_bad_step"])
        stats["last_finite_loss"] = torch.where(finite, loss, stats["last_finite_loss"])
        stats["steps"] += 1
    return stats


@torch.no_grad()
def evaluate(model: StackedModel, batches: DeviceBatches, prec, *, params=None, buffers=None) -> tuple[list, list]:
    """Each member's mean cross-entropy and error over ``batches`` in eval mode (shared inputs)."""
    model.eval()
    loss_sum = torch.zeros(model.size, dtype=torch.float64, device=batches.device)
    wrong = torch.zeros(model.size, dtype=torch.long, device=batches.device)
    for x, y in batches.epoch():
        with prec.autocast():
            loss, errors = model(x, y, shared=True, fn=summed_loss_and_errors, params=params, buffers=buffers)
        loss_sum += loss.double()
        wrong += errors
    n = len(batches.y)
    losses, errors = torch.stack([loss_sum, wrong.double()]).tolist()
    return [v / n for v in losses], [v / n for v in errors]


def hessian_trace(model: StackedModel, batches: DeviceBatches, *, probes: int, tol: float,
                  generators: list[torch.Generator]) -> tuple[list[float], list[int]]:
    """``trainables.vision.train.hessian_trace`` for all members: Hutchinson's estimate of each
    member's Tr(H) (fp32, BatchNorm in eval mode), each with its own probes and stopping rule.

    The loss summed over members has a block-diagonal Hessian, so one double backward of the
    stacked model gives every member's Hv; each member's vᵀHv is the sum over its own slices.
    """
    if probes < 1:
        raise ValueError("max_probes must be at least 1")
    model.eval()
    names = [n for n, p in model.params.items() if p.requires_grad]
    params = [model.params[n] for n in names]
    n = len(batches.y)

    def loss_of_batch(call, x, y):
        return F.cross_entropy(call(x).float(), y, reduction="sum") / n

    size = model.size
    values: list[list[float]] = [[] for _ in range(size)]
    estimate: list[float | None] = [None] * size
    previous = [0.0] * size
    drawn_so_far = 0
    while any(e is None for e in estimate) and drawn_so_far < probes:
        count = min(PROBES_PER_PASS, probes - drawn_so_far)
        drawn_so_far += count
        # member k draws its probes from its own generator, probe by probe, tensor by tensor, as its own run
        drawn = [[rademacher_like([p[k] for p in params], generators[k]) for _ in range(count)] for k in range(size)]
        chunk = [[torch.stack([drawn[k][j][i] for k in range(size)]) for i in range(len(params))] for j in range(count)]
        vhv = torch.zeros(count, size, device=params[0].device, dtype=torch.float64)
        for x, y in batches.epoch():
            total = model(x, y, shared=True, fn=loss_of_batch).sum()
            grads = torch.autograd.grad(total, params, create_graph=True)
            for j, v in enumerate(chunk):
                hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=j + 1 < count,
                                         materialize_grads=True)
                vhv[j] += torch.stack([(h * u).flatten(1).sum(1) for h, u in zip(hv, v)]).sum(0).double()
        for j, row in enumerate(vhv.tolist()):  # one host sync per chunk
            for k, value in enumerate(row):
                if estimate[k] is not None:
                    continue
                values[k].append(value)
                mean = sum(values[k]) / len(values[k])
                if abs(mean - previous[k]) / (abs(previous[k]) + 1e-6) < tol:
                    estimate[k] = mean
                previous[k] = mean
    result = [e if e is not None else sum(v) / len(v) for e, v in zip(estimate, values)]
    return result, [len(v) for v in values]


class StackedEMA:
    """``ParameterEMA`` for stacked members: every parameter averaged per step from init, its own
    BatchNorm statistics (recomputed from the training data before it is evaluated)."""

    def __init__(self, model: StackedModel, decay: float):
        self.decay = decay
        self.params = {n: p.detach().clone() for n, p in model.params.items()}
        self.buffers = {n: b.clone() for n, b in model.buffers.items()}
        self.pairs = [(self.params[n], p) for n, p in model.params.items() if p.requires_grad]

    @torch.no_grad()
    def update(self, model: StackedModel) -> None:
        torch._foreach_lerp_([e for e, _ in self.pairs], [p for _, p in self.pairs], 1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"params": dict(self.params), "buffers": dict(self.buffers)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for name, t in self.params.items():
            t.copy_(state["params"][name])
        for name, t in self.buffers.items():
            t.copy_(state["buffers"][name])


# ---------------------------------------------------------------- the run


def run(configs: list[dict], session: PackSession) -> None:
    cfgs = member_configs("vision", VisionConfig, configs)  # members may differ only in the packable axes
    cfg, size = cfgs[0], len(cfgs)  # cfg: the fields every member shares
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prec = precision(cfg.precision, device)
    per_member = lambda values: torch.tensor(values, dtype=torch.float64, device=device)  # noqa: E731
    seeds = [c.seed for c in cfgs]

    # data: on the device once; each member's training batches from its seed, evaluation in a fixed order
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_samples=cfg.train_samples,
                        test_samples=cfg.test_samples, data_seed=cfg.data_seed, download=cfg.download,
                        input_norm=cfg.input_norm)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    template = DeviceBatches(x_train, y_train, cfg.batch_size, device=device, shuffle=True, drop_last=True,
                             augment=cfg.augment, generator=derived_generator(device, 0))
    if len(template) == 0:
        raise ConfigError("batch_size", f"{cfg.batch_size} is larger than the training set ({len(y_train)})")
    train = member_batches(template, seeds, lambda seed: derived_generator(device, seed))
    train_eval = DeviceBatches(x_train, y_train, cfg.eval_batch_size, device=device)
    test_eval = DeviceBatches(x_test, y_test, cfg.eval_batch_size, device=device)
    norm_stats_batches = DeviceBatches(x_train, y_train, cfg.batch_size, device=device)
    subset = balanced_subset(y_train, cfg.hessian_samples, data.num_classes)
    hessian_batches = DeviceBatches(x_train[subset], y_train[subset], cfg.hessian_batch, device=device)

    # the members' models (each from its own seed, projected as its own run), stacked; optimiser; EMA
    members, radii = [], []
    for c in cfgs:
        torch.manual_seed(c.seed)
        member = build_model(c, data).to(device)
        projection = make_projection(c, member)
        if projection is not None and (c.project_at_init or c.projection_every == "init"):
            projection()
        radii.append(projection.radii if projection is not None else [])
        members.append(member)
    names = {id(p): n for n, p in members[0].named_parameters()}
    projection = None
    if cfg.projection != "none":
        group_params = (members[0].scale_invariant_groups() if cfg.projection == "per_group"
                        else [[n for n, p in members[0].named_parameters() if p.requires_grad]])
        projection = BatchedProjection(group_params, torch.tensor(radii, dtype=torch.float32, device=device).T)
    groups = weight_decay_groups(members[0], weight_decay=1.0, rule=cfg.decay_params)  # names; λ per member
    layers = {}
    for layer, module in members[0].named_modules():
        own = [names[id(p)] for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            layers[layer] = own
    si_names = [n for group in members[0].scale_invariant_groups() for n in group]
    model = StackedModel(members)
    del members
    decayed = groups[0]["names"]
    optimizer = BatchedSGD([([model.params[n] for n in g["names"]], g is groups[0]) for g in groups],
                           momentum=per_member([c.momentum for c in cfgs]), mode=cfg.weight_decay_mode)
    weight_decays = per_member([c.weight_decay for c in cfgs])
    ema = StackedEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    all_params = list(model.params.values())
    si_params = [model.params[n] for n in si_names]
    decayed_params = sum(model.params[n][0].numel() for n in decayed)
    constants = [{"decayed_tensors": len(decayed) if c.weight_decay > 0 else 0,
                  "decayed_params": decayed_params if c.weight_decay > 0 else 0} for c in cfgs]

    steps_per_epoch = len(train)
    schedules = [functools.partial(
        lr_at, schedule=c.schedule, lr=c.lr, total_steps=c.epochs * steps_per_epoch,
        warmup_steps=c.warmup_epochs * steps_per_epoch, min_lr=c.min_lr,
        decay_step=(c.decay_epoch or max(1, c.epochs // 2)) * steps_per_epoch,
        decay_lr=c.decay_lr or c.lr * c.decay_factor) for c in cfgs]
    lrs_of_step = lambda step: per_member([s(step) for s in schedules])  # noqa: E731
    project_each_step = projection if projection is not None and cfg.projection_every == "step" else None

    start_epoch, step = 0, 0
    last_finite_loss = torch.full((size,), math.nan, device=device)
    active = [True] * size
    detectors = [divergence_detector(c, steps_per_epoch) for c in cfgs]
    state = session.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if projection is not None:
            projection.load_state_dict(state["projection"])
        train.load_state_dict(state["train_batches"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch, step = state["epoch"], state["step"]
        last_finite_loss = state["last_finite_loss"].to(device)
        active = list(state["active"])
        for detector, saved in zip(detectors, state.get("detectors") or []):  # none in older checkpoints
            detector.load_state_dict(saved)
    mask = None if all(active) else torch.tensor(active, device=device)

    def snapshot() -> dict:  # a deep copy: the live tensors keep training after the report
        return copy.deepcopy({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "projection": projection.state_dict() if projection is not None else None,
            "train_batches": train.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "epoch": epoch + 1, "step": step, "last_finite_loss": last_finite_loss, "active": list(active),
            "detectors": [d.state_dict() for d in detectors],
        })

    def hessian(stacked: StackedModel, epoch: int, kind: int) -> tuple[list[float], list[int]]:
        generators = [derived_generator(device, c.seed, epoch, kind) for c in cfgs]
        if device.type == "cuda":  # one batched double backward for all members
            return hessian_trace(stacked, hessian_batches, probes=cfg.hessian_probes, tol=cfg.hessian_tol,
                                 generators=generators)
        # On CPUs member by member, through the unpacked code: the double backward of the vmapped
        # model costs 1.4-1.7x that of the K separate ones there (bench/README.md, packing).
        traces, used = [], []
        for k, generator in enumerate(generators):
            trace, probes = (single_hessian_trace(stacked.member(k), hessian_batches, probes=cfg.hessian_probes,
                                                  tol=cfg.hessian_tol, generator=generator)
                             if active[k] else (math.nan, 0))
            traces.append(trace)
            used.append(probes)
        return traces, used

    def finetune(epoch: int) -> list[dict]:
        """The fine-tune-after-decay branches of all members as one stacked copy (cf. vision.train.run)."""
        branch = model.clone()
        branch_opt = BatchedSGD([([branch.params[n] for n in g["names"]], g is groups[0]) for g in groups],
                                momentum=per_member([c.momentum for c in cfgs]), mode=cfg.weight_decay_mode)
        branch_lrs = per_member([c.finetune_lr for c in cfgs])
        branch_decays = per_member([c.finetune_weight_decay for c in cfgs])
        batches = member_batches(template, seeds, lambda seed: derived_generator(device, seed, epoch, 1))
        for e in range(cfg.finetune_epochs):
            stats = train_epoch(branch, branch_opt, batches, prec, lambda s: branch_lrs, e * steps_per_epoch,
                                branch_decays, active=mask, last_finite_loss=last_finite_loss)
        if cfg.train_eval == "full":
            train_losses, _ = evaluate(branch, train_eval, prec)
        else:
            train_losses = (stats["loss_sum"] / stats["steps"]).tolist()
        _, test_errors = evaluate(branch, test_eval, prec)
        out = [{"finetune_test_error": e, "finetune_train_loss": t} for e, t in zip(test_errors, train_losses)]
        if cfg.hessian_probes > 0:
            traces, _ = hessian(branch, epoch, 2)
            for o, trace in zip(out, traces):
                o["finetune_hessian_trace"] = trace
        return out

    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        stats = train_epoch(model, optimizer, train, prec, lrs_of_step, step, weight_decays, active=mask, ema=ema,
                            after_step=project_each_step, last_finite_loss=last_finite_loss)
        step += stats["steps"]
        if projection is not None and cfg.projection_every == "epoch":
            projection(model)
        # the epoch's one synchronisation with the device
        loss_sums, corrects, first_bads, last_finites = torch.stack([
            stats["loss_sum"].double(), stats["correct"].double(), stats["first_bad_step"].double(),
            stats["last_finite_loss"].double()]).tolist()
        train_seconds = time.perf_counter() - started
        last_finite_loss = stats["last_finite_loss"]
        reports, statuses = {}, {}
        last = epoch + 1 == cfg.epochs
        for k in range(size):
            if not active[k]:
                continue
            running_loss = loss_sums[k] / stats["steps"]
            metrics = {"epoch": epoch + 1, "step": step, "lr": schedules[k](step - 1),
                       "samples_per_s": stats["steps"] * cfg.batch_size / train_seconds, **constants[k]}
            diverged = detectors[k].check(running_loss if first_bads[k] < 0 else math.nan,
                                          int(first_bads[k]) if first_bads[k] >= 0 else step, final=last)
            metrics.update(detectors[k].metrics())
            if diverged:
                metrics.update(train_loss=running_loss, diverged_step=detectors[k].step,
                               last_finite_loss=last_finites[k])
                reports[k], statuses[k], active[k] = metrics, "diverged", False
            else:
                metrics["_running"] = (running_loss, 1.0 - corrects[k] / (stats["steps"] * cfg.batch_size))
                reports[k] = metrics
        mask = None if all(active) else torch.tensor(active, device=device)
        going = [k for k in range(size) if active[k]]

        hessian_due = bool(cfg.hessian_every and cfg.hessian_probes and ((epoch + 1) % cfg.hessian_every == 0 or last))
        finetune_due = bool(cfg.finetune_every and (epoch + 1) % cfg.finetune_every == 0)
        if going and (last or hessian_due or finetune_due or (epoch + 1) % cfg.eval_every == 0):
            if cfg.train_eval == "full":
                train_loss, train_error = evaluate(model, train_eval, prec)
            test_loss, test_error = evaluate(model, test_eval, prec)
            layer_norms = [member_norms([model.params[n] for n in ns]) for ns in layers.values()]
            norms = torch.stack([member_norms(all_params), member_norms(si_params) if si_params
                                 else torch.zeros(size, device=device), *layer_norms]).tolist()
            if ema is not None:
                update_norm_stats(model, (x for x, _ in norm_stats_batches.epoch()), params=ema.params,
                                  buffers=ema.buffers)
                ema_loss, ema_error = evaluate(model, test_eval, prec, params=ema.params, buffers=ema.buffers)
            if hessian_due:
                traces, used = hessian(model, epoch, 3)
            branches = finetune(epoch) if finetune_due else None
            for k in going:
                metrics = reports[k]
                running_loss, running_error = metrics.pop("_running")
                if cfg.train_eval == "full":
                    metrics["train_loss"], metrics["train_error"] = train_loss[k], train_error[k]
                else:
                    metrics["train_loss"], metrics["train_error"] = running_loss, running_error
                metrics["test_loss"], metrics["test_error"] = test_loss[k], test_error[k]
                metrics["weight_norm"] = norms[0][k]
                metrics.update({f"weight_norm/{name}": norms[2 + i][k] for i, name in enumerate(layers)})
                if si_params:
                    metrics["effective_lr"] = metrics["lr"] / norms[1][k] ** 2
                    metrics["effective_lr_sqrt"] = metrics["lr"] / norms[1][k]
                if ema is not None:
                    metrics["ema_test_loss"], metrics["ema_test_error"] = ema_loss[k], ema_error[k]
                if hessian_due:
                    metrics["hessian_trace"], metrics["hessian_probes"] = traces[k], used[k]
                if branches is not None:
                    metrics.update(branches[k])
                if last:
                    statuses[k] = "finished"
        else:  # no report this epoch for the members that go on
            for k in going:
                del reports[k]
        if not reports:
            continue
        evaluated = any(k in reports for k in going)  # checkpoints go with evaluation reports, as unpacked
        checkpoint = evaluated and session.should_checkpoint(epoch + 1, cfg.checkpoint_every)
        session.report(reports, statuses=statuses, state=snapshot if checkpoint else None)
        if not going:
            return
