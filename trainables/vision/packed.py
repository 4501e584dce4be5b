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
- Tr(H): one batched double backward per probe for all members (each member's probes from
  its own generator, its own stopping rule), on CPUs too. (It used to run member by member
  on CPUs, where the vmapped double backward measured 1.1-1.7x slower than K separate ones:
  most of that was page faults of the K-times larger activations, which
  ``trainables.packing.keep_freed_memory`` removes.)
- Divergence: each member has its own ``DivergenceDetector``, checked at every epoch's
  end as unpacked: a member whose epoch had a NaN/inf loss, or whose blow-up above
  ``divergence_loss`` does not recover, reports ``diverged`` at that epoch and is masked
  out; the pack ends when none is left.
- ``samples_per_s`` of a member is its own share of the pack's throughput.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainables.batched import BatchedSGD, StackedModel, member_norms, update_norm_stats
from trainables.packing import PackSession, keep_freed_memory, member_configs
from trainables.precision import Precision
from trainables.schedules import MemberSchedules
from trainables.vision.config import VisionConfig
from trainables.vision.data import DeviceBatches, VisionData
from trainables.vision.hessian import PROBES_PER_PASS, rademacher_like
from trainables.vision.optim import weight_decay_groups
from trainables.vision.train import EngineState, build_model, make_projection, train
from trainables.vision.train import member_batches  # noqa: F401 (re-exported: it used to live here)


# ---------------------------------------------------------------- what each member computes (inside the vmap)


def loss_and_logits(call, x, y):
    logits = call(x)
    return F.cross_entropy(logits, y), logits


def summed_loss_and_errors(call, x, y):
    logits = call(x)
    return F.cross_entropy(logits.float(), y, reduction="sum"), (logits.argmax(1) != y).sum()


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
                  generators: list[torch.Generator], active: list[bool] | None = None) -> tuple[list[float], list[int]]:
    """``trainables.vision.train.hessian_trace`` for all members: Hutchinson's estimate of each
    member's Tr(H) (fp32, BatchNorm in eval mode), each with its own probes and stopping rule.
    A member masked out (``active[k]`` false: diverged) gets NaN from 0 probes and does not keep
    the others drawing probes.

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
    estimate: list[float | None] = [None if active is None or active[k] else math.nan for k in range(size)]
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


# ---------------------------------------------------------------- the engine and the run


class StackedEngine(EngineState):
    """K members as one ``StackedModel`` with a ``BatchedSGD`` whose LR, weight decay and momentum
    are [K] tensors; the engine interface of ``trainables.vision.train.ModuleEngine``."""

    parts = ("model", "optimizer", "ema", "projection")
    channels_last = False  # the vmapped (grouped) convolutions take the default layout

    @classmethod
    def build(cls, cfgs: list[VisionConfig], data: VisionData, device: torch.device, prec: Precision,
              layout: torch.memory_format) -> "StackedEngine":
        keep_freed_memory()  # K-times larger activations: reused, not mapped afresh at every step
        # the members' models, each from its own seed and projected as its own run, then stacked
        cfg = cfgs[0]
        members, radii = [], []
        for c in cfgs:
            torch.manual_seed(c.seed)
            member = build_model(c, data).to(device, memory_format=layout)
            projection = make_projection(c, member)
            if projection is not None and (c.project_at_init or c.projection_every == "init"):
                projection()
            radii.append(projection.radii if projection is not None else [])
            members.append(member)
        first = members[0]
        names = {id(p): n for n, p in first.named_parameters()}
        projection = None
        if cfg.projection != "none":
            group_params = (first.scale_invariant_groups() if cfg.projection == "per_group"
                            else [[n for n, p in first.named_parameters() if p.requires_grad]])
            projection = BatchedProjection(group_params, torch.tensor(radii, dtype=torch.float32, device=device).T)
        groups = weight_decay_groups(first, weight_decay=1.0, rule=cfg.decay_params)  # names; λ per member
        layers = {}
        for layer, module in first.named_modules():
            own = [names[id(p)] for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                layers[layer] = own
        si_names = [n for group in first.scale_invariant_groups() for n in group]
        return cls(cfgs, StackedModel(members), prec, device, group_names=[g["names"] for g in groups],
                   layers=layers, si_names=si_names, weight_decays=[c.weight_decay for c in cfgs],
                   projection=projection, ema_decay=cfg.ema_decay)

    def __init__(self, cfgs: list[VisionConfig], model: StackedModel, prec: Precision, device: torch.device, *,
                 group_names: list[list[str]], layers: dict[str, list[str]], si_names: list[str],
                 weight_decays: list[float], projection: BatchedProjection | None = None, ema_decay: float = 0.0):
        self.cfgs, self.cfg, self.model, self.prec, self.device = cfgs, cfgs[0], model, prec, device
        self.size, self.projection, self.mask = model.size, projection, None
        self.group_names, self.layers, self.si_names = group_names, layers, si_names
        self.optimizer = BatchedSGD([([model.params[n] for n in g], i == 0) for i, g in enumerate(group_names)],
                                    momentum=self._per_member([c.momentum for c in cfgs]),
                                    mode=self.cfg.weight_decay_mode)
        self.weight_decays = self._per_member(weight_decays)
        self.ema = StackedEMA(model, ema_decay) if ema_decay > 0 else None
        self.project_each_step = projection is not None and self.cfg.projection_every == "step"
        self.all_params = list(model.params.values())
        self.si_params = [model.params[n] for n in si_names]
        self.has_scale_invariant = bool(self.si_params)
        self.layer_names = list(layers)
        decayed = group_names[0]
        decayed_params = sum(model.params[n][0].numel() for n in decayed)
        self.constants = [{"decayed_tensors": len(decayed) if wd > 0 else 0,
                           "decayed_params": decayed_params if wd > 0 else 0} for wd in weight_decays]

    def _per_member(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def branch(self) -> "StackedEngine":
        """All members' fine-tuning branches as one stacked copy (masked members stay masked)."""
        twin = StackedEngine(self.cfgs, self.model.clone(), self.prec, self.device, group_names=self.group_names,
                             layers=self.layers, si_names=self.si_names,
                             weight_decays=[c.finetune_weight_decay for c in self.cfgs])
        twin.mask = self.mask
        return twin

    def train(self) -> None:
        self.model.train()

    def learning_rates(self, schedules: MemberSchedules, first: int, count: int) -> torch.Tensor:
        """The epoch's LRs, [count, K] float64 on the device, computed there for all members at once."""
        return schedules.table(first, count, self.device)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lrs: torch.Tensor, *, shared: bool):
        with self.prec.autocast():
            loss, logits = self.model(x, y, shared=shared, fn=loss_and_logits)  # (K,), (K, B, classes)
        loss.sum().backward()  # member k's gradient is that of its own loss
        self.optimizer.step(lrs, self.weight_decays, self.mask)
        self.model.zero_grad()
        if self.project_each_step:
            self.projection(self.model)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach().float(), (logits.detach().argmax(-1) == y).sum(-1)

    def project(self) -> None:
        if self.projection is not None:
            self.projection(self.model)

    def set_active(self, active: list[bool]) -> None:
        self.mask = torch.tensor(active, device=self.device)

    def evaluate(self, batches: DeviceBatches) -> tuple[list[float], list[float]]:
        return evaluate(self.model, batches, self.prec)

    def ema_evaluate(self, norm_batches: DeviceBatches, batches: DeviceBatches) -> tuple[list[float], list[float]]:
        ema = self.ema
        update_norm_stats(self.model, (x for x, _ in norm_batches.epoch()), params=ema.params, buffers=ema.buffers)
        return evaluate(self.model, batches, self.prec, params=ema.params, buffers=ema.buffers)

    def norms(self) -> list[list[float]]:
        layer_norms = [member_norms([self.model.params[n] for n in ns]) for ns in self.layers.values()]
        return torch.stack([member_norms(self.all_params), member_norms(self.si_params) if self.si_params
                            else torch.zeros(self.size, device=self.device), *layer_norms]).tolist()

    def hessian(self, batches: DeviceBatches, generators: list[torch.Generator],
                active: list[bool]) -> tuple[list[float], list[int]]:
        return hessian_trace(self.model, batches, probes=self.cfg.hessian_probes, tol=self.cfg.hessian_tol,
                             generators=generators, active=active)


def run(configs: list[dict], session: PackSession) -> None:
    cfgs = member_configs("vision", VisionConfig, configs)  # members may differ only in the packable axes
    train(cfgs, session, StackedEngine)
