"""Train image classifiers with SGD and report once per epoch (the paper's regime 1): the one loop.

``train(cfgs, session, engine)`` trains K members (configs that differ only in packable
hyperparameters) through an *engine* that owns the models, optimiser, EMA and projection:
``ModuleEngine`` here is K = 1, a plain module with torch's own SGD (an unpacked trial,
``run``); ``trainables.vision.packed.StackedEngine`` stacks K members into one batched
model. Data, schedules, evaluation cadence, metrics, divergence, checkpoints and reports
are the loop's, written once; per-member values are [K] tensors or lists.

Reads top to bottom: config → data → engine → loop. Per step the loop
stays on the device (loss sums, error counts and the first non-finite step are
device tensors); it synchronises with the host once per epoch to check for
divergence, and every ``eval_every`` epochs (and at the last, and where a Tr(H) or a
fine-tuning branch is due) it evaluates, measures and reports:

- ``epoch``, ``step``, ``lr`` (the LR of the epoch's last step), ``samples_per_s``;
- ``train_loss``/``train_error`` (a full eval-mode pass, or the running mean),
  ``test_loss``/``test_error`` (errors are fractions);
- ``weight_norm`` over all parameters, ``weight_norm/<layer>`` for every layer with
  trainable parameters; ``effective_lr`` = η/‖w‖² and ``effective_lr_sqrt`` = η/‖w‖
  over the scale-invariant parameters (models that have some);
- ``ema_test_error``/``ema_test_loss`` of a per-step parameter EMA whose BatchNorm
  statistics are recomputed with one pass over the training data;
- ``hessian_trace`` (+ ``hessian_probes``) every ``hessian_every`` epochs;
- ``finetune_test_error``, ``finetune_train_loss``, ``finetune_hessian_trace`` at
  the epochs the fine-tune-after-decay protocol branches from;
- ``loss_spikes`` (and ``last_spike_step``, ``last_spike_peak`` once there was one);
- on NaN/inf: status ``diverged`` with ``diverged_step`` and ``last_finite_loss``; an
  epoch mean above ``divergence_loss`` starts a blow-up that ends the run ``diverged``
  (``diverged_step`` the end of its first epoch) unless the mean comes back below within
  ``divergence_patience`` epochs (a recovered spike: counted, the run goes on); see
  ``trainables.divergence``. (No ratio to a running minimum here: the training loss of
  an interpolating classifier falls by orders of magnitude and is noisy near zero.)
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.divergence import DivergenceDetector
from trainables.models.cnn import CNN1d, CNN1dConfig, ScaleInvariantCNN1d
from trainables.models.resnet import BLOCKS, PreActResNet, ResNetConfig
from trainables.models.vgg import PLANS, VGG, VGGConfig
from trainables.packing import OneMemberSession, PackSession
from trainables.precision import Precision, precision, resolve_device
from trainables.registry import ConfigError, build_config
from trainables.schedules import MemberSchedules
from trainables.session import Session
from trainables.vision.config import VisionConfig
from trainables.vision.data import DeviceBatches, VisionData, balanced_subset, load_dataset
from trainables.vision.hessian import hutchinson_trace
from trainables.vision.optim import SphereProjection, global_norm, make_optimizer, weight_decay_groups


# ---------------------------------------------------------------- model


def build_model(cfg: VisionConfig, data: VisionData) -> nn.Module:
    channels, *spatial = data.sample_shape
    if cfg.model in ("cnn1d-si", "cnn1d"):
        if len(spatial) != 1:
            raise ConfigError("model", f"{cfg.model} is for 1-D signals (dataset mnist1d), not {data.name}; "
                                       f"for images use vgg11, vgg16, preact-resnet18 or preact-resnet18-si")
        net = ScaleInvariantCNN1d if cfg.model == "cnn1d-si" else CNN1d
        return net(CNN1dConfig(width=cfg.width or 32, in_channels=channels, num_classes=data.num_classes))
    if spatial != [32, 32]:
        raise ConfigError("model", f"{cfg.model} is for 32×32 images (cifar10, cifar100), not {data.name}; "
                                   f"for mnist1d use cnn1d-si or cnn1d")
    if cfg.model in PLANS:
        return VGG(VGGConfig(depth=cfg.model, width=cfg.width or 64, in_channels=channels,
                             num_classes=data.num_classes, imagenet_normalize=cfg.input_norm == "authors-vgg"))
    return PreActResNet(ResNetConfig(blocks=BLOCKS[cfg.model.removesuffix("-si")], width=cfg.width or 64,
                                     scale_invariant=cfg.model.endswith("-si"), in_channels=channels,
                                     num_classes=data.num_classes))


def named_groups(model: nn.Module) -> list[list[torch.Tensor]]:
    params = dict(model.named_parameters())
    return [[params[name] for name in group] for group in model.scale_invariant_groups()]


def layer_params(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Every module that owns trainable parameters → those parameters (for per-layer norms)."""
    layers = {}
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            layers[name] = own
    return layers


# (channels, *spatial) and classes of each dataset, for the model's layer names without loading data
_SHAPES = {"mnist1d": ((1, 40), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100)}


def layer_metrics(config: dict) -> dict[str, str]:
    """The per-layer metrics a trial of ``config`` reports (``weight_norm/<layer>``), declared
    up front for the store's schema: the model is built on the meta device (no memory, no data)."""
    defaults = VisionConfig()
    cfg = VisionConfig(**{k: config.get(k, getattr(defaults, k)) for k in ("model", "dataset", "width")})
    shape, classes = _SHAPES[cfg.dataset]
    data = VisionData(*(torch.empty(0, *shape, device="meta"),) * 4, num_classes=classes, name=cfg.dataset)
    with torch.device("meta"):
        model = build_model(cfg, data)
    return {f"weight_norm/{name}": "double" for name in layer_params(model)}


def make_projection(cfg: VisionConfig, model: nn.Module) -> SphereProjection | None:
    if cfg.projection == "none":
        return None
    groups = named_groups(model)
    if not groups:
        raise ConfigError("projection", f"model {cfg.model} has no scale-invariant layers to project; "
                                        f"use cnn1d-si, preact-resnet18(-si) or projection: none")
    if cfg.projection == "per_group":
        return SphereProjection(groups, [global_norm(g).item() for g in groups])
    if not model.fully_scale_invariant:
        raise ConfigError("projection", f"global projection rescales every trainable parameter, which changes "
                                        f"the function of {cfg.model} (not all of it is scale-invariant); "
                                        f"use a -si model or projection: per_group")
    params = [p for p in model.parameters() if p.requires_grad]
    radius = cfg.projection_radius or global_norm(params).item()
    return SphereProjection([params], [radius])


class ParameterEMA:
    """p_ema ← d·p_ema + (1 − d)·p after every step, from the initial weights, no bias correction."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        pairs = [(e, p) for e, p in zip(self.model.parameters(), model.parameters()) if p.requires_grad]
        self.ema_params, self.params = [e for e, _ in pairs], [p for _, p in pairs]
        self.has_norm_stats = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.ema_params, self.params, 1.0 - self.decay)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def recompute_norm_stats(self, batches: DeviceBatches) -> None:
        if self.has_norm_stats:  # BN statistics of the averaged weights, one pass over the training data
            torch.optim.swa_utils.update_bn(batches.epoch(), self.model)
        self.model.eval()


# ---------------------------------------------------------------- steps and evaluation


@dataclass
class EpochStats:
    """Device-side sums of one epoch of training, a [K] tensor each (read once, at the end)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad_step: torch.Tensor  # 1-based step of the first non-finite loss, -1 if none
    last_finite_loss: torch.Tensor
    steps: int = 0


def train_epoch(engine, batches: "MemberBatches", schedules: MemberSchedules, first_step: int,
                last_finite_loss: torch.Tensor) -> EpochStats:
    """One epoch of the engine's members, each on its own batches and LR schedule (the engine
    takes the epoch's LRs at once, ``engine.learning_rates``: on the host for a run of one, on
    the device for a pack)."""
    size, device = engine.size, last_finite_loss.device
    stats = EpochStats(torch.zeros(size, device=device), torch.zeros(size, dtype=torch.long, device=device),
                       torch.full((size,), -1, dtype=torch.long, device=device), last_finite_loss.clone())
    engine.train()
    lrs = engine.learning_rates(schedules, first_step, len(batches))
    for i, (x, y) in enumerate(batches.epoch()):
        loss, correct = engine.train_step(x, y, lrs[i], shared=batches.shared)
        finite = torch.isfinite(loss)
        stats.loss_sum += loss
        stats.correct += correct
        stats.first_bad_step = torch.where(~finite & (stats.first_bad_step < 0), first_step + i + 1,
                                           stats.first_bad_step)
        stats.last_finite_loss = torch.where(finite, loss, stats.last_finite_loss)
        stats.steps += 1
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, batches: DeviceBatches, prec: Precision) -> tuple[float, float]:
    """Mean cross-entropy and error (fraction) in eval mode; one host sync."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    wrong = torch.zeros((), dtype=torch.long, device=batches.device)
    for x, y in batches.epoch():
        with prec.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
    loss, wrong_count = torch.stack([loss_sum, wrong.double()]).tolist()
    n = len(batches.y)
    return loss / n, wrong_count / n


def hessian_trace(model: nn.Module, batches: DeviceBatches, *, probes: int, tol: float,
                  generator: torch.Generator) -> tuple[float, int]:
    """Tr(H) of the mean cross-entropy over ``batches`` w.r.t. the trainable parameters,
    in fp32 with BatchNorm in eval mode (running statistics), as the paper."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n = len(batches.y)

    def loss_of_batch(batch):
        x, y = batch
        return F.cross_entropy(model(x).float(), y, reduction="sum") / n

    return hutchinson_trace(loss_of_batch, batches.epoch, params, max_probes=probes, tol=tol, generator=generator)


def divergence_detector(cfg: VisionConfig, steps_per_epoch: int) -> DivergenceDetector:
    """The run's judge of divergence, checked once per epoch on the epoch's mean train loss:
    blow-ups above ``divergence_loss`` only (no ratio), the patience in steps."""
    return DivergenceDetector(ratio=math.inf, limit=cfg.divergence_loss or math.inf,
                              patience=cfg.divergence_patience * steps_per_epoch)


def derived_generator(device: torch.device, *parts: int) -> torch.Generator:
    """A generator seeded from integers, so that a branch or probe set never consumes the run's RNG."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % (2**63)
    return torch.Generator(device=device).manual_seed(seed)


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


# ---------------------------------------------------------------- K = 1: a plain module


class EngineState:
    """An engine's checkpoint: the ``state_dict`` of each of its ``parts`` (None where a run has no
    such part, e.g. no EMA)."""

    parts: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {name: None if getattr(self, name) is None else getattr(self, name).state_dict() for name in self.parts}

    def load_state_dict(self, state: dict) -> None:
        for name in self.parts:
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])


class ModuleEngine(EngineState):
    """K = 1: one model as a plain module with torch's own SGD, the unpacked trial at its own speed.

    The engine interface the loop (``train``) drives; every per-member value is a list or a [K]
    tensor: ``build(cfgs, data, device, prec, layout)`` (members from their seeds, projected at init
    as their runs), ``size``, ``constants``, ``layer_names``, ``has_scale_invariant``;
    ``train()``, ``learning_rates(schedules, first, count)`` (the epoch's LRs, one item per step: host
    floats here, a device table in a pack), ``train_step(x, y, lrs, shared=)`` → (loss, correct) [K];
    ``project()`` (the
    per-epoch projection); ``set_active(active)`` (masked members stop changing);
    ``evaluate(batches)`` / ``ema_evaluate(norm_batches, batches)`` → (losses, errors);
    ``norms()`` → rows all / scale-invariant / each layer, of K values; ``hessian(batches,
    generators, active)`` → (traces, probes); ``branch()``: a copy for the fine-tune-after-decay
    protocol; ``state_dict()`` / ``load_state_dict(state)``.
    """

    size = 1
    parts = ("model", "optimizer", "scaler", "ema", "projection")
    channels_last = True  # images on a GPU in channels-last memory: faster convolutions

    @classmethod
    def build(cls, cfgs: list[VisionConfig], data: VisionData, device: torch.device, prec: Precision,
              layout: torch.memory_format) -> "ModuleEngine":
        (cfg,) = cfgs
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data).to(device, memory_format=layout)
        projection = make_projection(cfg, model)
        if projection is not None and (cfg.project_at_init or cfg.projection_every == "init"):
            projection()
        return cls(cfg, model, prec, device, lr=cfg.lr, weight_decay=cfg.weight_decay, projection=projection,
                   ema_decay=cfg.ema_decay)

    def __init__(self, cfg: VisionConfig, model: nn.Module, prec: Precision, device: torch.device, *, lr: float,
                 weight_decay: float, projection: SphereProjection | None = None, ema_decay: float = 0.0):
        self.cfg, self.model, self.prec, self.device, self.projection = cfg, model, prec, device, projection
        groups = weight_decay_groups(model, weight_decay=weight_decay, rule=cfg.decay_params)
        self.optimizer = make_optimizer(groups, lr=lr, momentum=cfg.momentum, mode=cfg.weight_decay_mode)
        self.scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
        self.ema = ParameterEMA(model, ema_decay) if ema_decay > 0 else None
        self.project_each_step = projection is not None and cfg.projection_every == "step"
        self.all_params = list(model.parameters())
        self.si_params = [p for group in named_groups(model) for p in group]
        self.has_scale_invariant = bool(self.si_params)
        self.layers = layer_params(model)
        self.layer_names = list(self.layers)
        decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
        self.constants = [{"decayed_tensors": len(decayed), "decayed_params": sum(p.numel() for p in decayed)}]

    def branch(self) -> "ModuleEngine":
        cfg = self.cfg
        return ModuleEngine(cfg, copy.deepcopy(self.model), self.prec, self.device, lr=cfg.finetune_lr,
                            weight_decay=cfg.finetune_weight_decay)

    def train(self) -> None:
        self.model.train()

    def learning_rates(self, schedules: MemberSchedules, first: int, count: int) -> list[list[float]]:
        return [schedules.at(step) for step in range(first, first + count)]  # Python floats, as torch's SGD takes

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float], *, shared: bool):
        (lr,) = lrs
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.prec.autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.project_each_step:
            self.projection()
        if self.ema is not None:
            self.ema.update()
        return loss.detach().float().view(1), (logits.detach().argmax(1) == y).sum().view(1)

    def project(self) -> None:
        if self.projection is not None:
            self.projection()

    def set_active(self, active: list[bool]) -> None:
        pass  # a run of one ends with its member

    def evaluate(self, batches: DeviceBatches) -> tuple[list[float], list[float]]:
        loss, error = evaluate(self.model, batches, self.prec)
        return [loss], [error]

    def ema_evaluate(self, norm_batches: DeviceBatches, batches: DeviceBatches) -> tuple[list[float], list[float]]:
        self.ema.recompute_norm_stats(norm_batches)
        loss, error = evaluate(self.ema.model, batches, self.prec)
        return [loss], [error]

    def norms(self) -> list[list[float]]:
        layer_norms = [global_norm(ps) for ps in self.layers.values()]
        # a model without scale-invariant parameters (VGG): a zero on the model's device, for the stack
        si_norm = global_norm(self.si_params) if self.si_params else torch.zeros((), device=self.device)
        return torch.stack([global_norm(self.all_params), si_norm, *layer_norms]).view(-1, 1).tolist()

    def hessian(self, batches: DeviceBatches, generators: list[torch.Generator],
                active: list[bool]) -> tuple[list[float], list[int]]:
        trace, probes = hessian_trace(self.model, batches, probes=self.cfg.hessian_probes, tol=self.cfg.hessian_tol,
                                      generator=generators[0])
        return [trace], [probes]


# ---------------------------------------------------------------- the run


def run(config: dict, session: Session) -> None:
    """The unpacked trial: one member through ``ModuleEngine``."""
    cfg = build_config(VisionConfig, config)  # also the checks across fields (VisionConfig.__post_init__)

    # checkpoints in the unpacked layout: one batch order, one float, one detector (none in older ones)
    layout = {"train_batches": ("train_batches", lambda batches: batches[cfg.seed], lambda one: {cfg.seed: one}),
              "last_finite_loss": ("last_finite_loss", lambda losses: float(losses[0]),
                                   lambda one: torch.tensor([one])),
              "detectors": ("detector", lambda detectors: detectors[0], lambda one: [] if one is None else [one])}
    train([cfg], OneMemberSession(session, layout=layout), ModuleEngine)


def train(cfgs: list[VisionConfig], session: PackSession, engine_class) -> None:
    """Train the members ``cfgs`` (they differ only in packable axes) through an engine built by
    ``engine_class.build``; report each member's metrics through ``session`` (a ``PackSession``).
    A member that diverges reports ``diverged`` and is masked out; the loop ends when none is left
    or after the last epoch."""
    cfg, size = cfgs[0], len(cfgs)  # cfg: the fields every member shares
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prec = precision(cfg.precision, device)

    # data: on the device once; each member's training batches from its seed, evaluation in a fixed order
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_samples=cfg.train_samples,
                        test_samples=cfg.test_samples, data_seed=cfg.data_seed, download=cfg.download,
                        input_norm=cfg.input_norm)
    images_on_gpu = device.type == "cuda" and data.x_train.dim() == 4 and engine_class.channels_last
    layout = torch.channels_last if images_on_gpu else torch.contiguous_format  # faster convs in fp16 on GPUs
    x_train, y_train = data.x_train.to(device, memory_format=layout), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device, memory_format=layout), data.y_test.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    template = DeviceBatches(x_train, y_train, cfg.batch_size, device=device, shuffle=True, drop_last=True,
                             augment=cfg.augment, generator=derived_generator(device, 0))
    if len(template) == 0:
        raise ConfigError("batch_size", f"{cfg.batch_size} is larger than the training set ({len(y_train)})")
    seeds = [c.seed for c in cfgs]
    train_batches = member_batches(template, seeds, lambda seed: derived_generator(device, seed))
    train_eval = DeviceBatches(x_train, y_train, cfg.eval_batch_size, device=device)
    test_eval = DeviceBatches(x_test, y_test, cfg.eval_batch_size, device=device)
    norm_stats_batches = DeviceBatches(x_train, y_train, cfg.batch_size, device=device)
    subset = balanced_subset(y_train, cfg.hessian_samples, data.num_classes)
    hessian_batches = DeviceBatches(x_train[subset], y_train[subset], cfg.hessian_batch, device=device)

    # the members' models, projections, optimiser, EMA: the engine's
    engine = engine_class.build(cfgs, data, device, prec, layout)
    steps_per_epoch = len(train_batches)
    schedules = MemberSchedules([dict(
        schedule=c.schedule, lr=c.lr, total_steps=c.epochs * steps_per_epoch,
        warmup_steps=c.warmup_epochs * steps_per_epoch, min_lr=c.min_lr,
        decay_step=(c.decay_epoch or max(1, c.epochs // 2)) * steps_per_epoch,
        decay_lr=c.decay_lr or c.lr * c.decay_factor) for c in cfgs])
    finetune_schedules = MemberSchedules([dict(schedule="constant", lr=c.finetune_lr, total_steps=1) for c in cfgs])
    detectors = [divergence_detector(c, steps_per_epoch) for c in cfgs]

    start_epoch, step = 0, 0
    last_finite_loss = torch.full((size,), math.nan, device=device)
    active = [True] * size
    state = session.restored_state()
    if state is not None:
        engine.load_state_dict(state)
        train_batches.load_state_dict(state["train_batches"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch, step = state["epoch"], state["step"]
        last_finite_loss = state["last_finite_loss"].to(device)
        active = list(state["active"])
        for detector, saved in zip(detectors, state.get("detectors") or []):  # none in older checkpoints
            detector.load_state_dict(saved)
        if not all(active):
            engine.set_active(active)

    def snapshot() -> dict:  # a deep copy: the live tensors keep training after the report
        return copy.deepcopy({
            **engine.state_dict(), "train_batches": train_batches.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "epoch": epoch + 1, "step": step, "last_finite_loss": last_finite_loss, "active": list(active),
            "detectors": [d.state_dict() for d in detectors],
        })

    def generators(epoch: int, kind: int) -> list[torch.Generator]:
        return [derived_generator(device, c.seed, epoch, kind) for c in cfgs]

    def finetune(epoch: int) -> list[dict]:
        """The paper's Figs. 2-3: a copy trained at a small constant LR (WD finetune_weight_decay, no
        projection), then its test error, train loss and Tr(H); each member's."""
        branch = engine.branch()
        batches = member_batches(template, seeds, lambda seed: derived_generator(device, seed, epoch, 1))
        for e in range(cfg.finetune_epochs):
            stats = train_epoch(branch, batches, finetune_schedules, e * steps_per_epoch, last_finite_loss)
        if cfg.train_eval == "full":
            train_losses, _ = branch.evaluate(train_eval)
        else:
            train_losses = [v / stats.steps for v in stats.loss_sum.tolist()]
        _, test_errors = branch.evaluate(test_eval)
        out = [{"finetune_test_error": e, "finetune_train_loss": t} for e, t in zip(test_errors, train_losses)]
        if cfg.hessian_probes > 0:
            traces, _ = branch.hessian(hessian_batches, generators(epoch, 2), active)
            for o, trace in zip(out, traces):
                o["finetune_hessian_trace"] = trace
        return out

    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        stats = train_epoch(engine, train_batches, schedules, step, last_finite_loss)
        step += stats.steps
        if cfg.projection_every == "epoch":
            engine.project()
        # the epoch's one synchronisation with the device
        loss_sums, corrects, first_bads, last_finites = torch.stack([
            stats.loss_sum.double(), stats.correct.double(), stats.first_bad_step.double(),
            stats.last_finite_loss.double()]).tolist()
        train_seconds = time.perf_counter() - started
        last_finite_loss = stats.last_finite_loss
        reports, statuses = {}, {}
        last = epoch + 1 == cfg.epochs
        epoch_lrs = schedules.at(step - 1)  # each member's LR at the epoch's last step
        for k in range(size):
            if not active[k]:
                continue
            running_loss = loss_sums[k] / stats.steps
            metrics = {"epoch": epoch + 1, "step": step, "lr": epoch_lrs[k],
                       "samples_per_s": stats.steps * cfg.batch_size / train_seconds, **engine.constants[k]}
            diverged = detectors[k].check(running_loss if first_bads[k] < 0 else math.nan,
                                          int(first_bads[k]) if first_bads[k] >= 0 else step, final=last)
            metrics.update(detectors[k].metrics())
            if diverged:
                metrics.update(train_loss=running_loss, diverged_step=detectors[k].step,
                               last_finite_loss=last_finites[k])
                reports[k], statuses[k], active[k] = metrics, "diverged", False
            else:
                metrics["_running"] = (running_loss, 1.0 - corrects[k] / (stats.steps * cfg.batch_size))
                reports[k] = metrics
        if not all(active):
            engine.set_active(active)
        going = [k for k in range(size) if active[k]]

        hessian_due = bool(cfg.hessian_every and cfg.hessian_probes and ((epoch + 1) % cfg.hessian_every == 0 or last))
        finetune_due = bool(cfg.finetune_every and (epoch + 1) % cfg.finetune_every == 0)
        if going and (last or hessian_due or finetune_due or (epoch + 1) % cfg.eval_every == 0):
            if cfg.train_eval == "full":
                train_loss, train_error = engine.evaluate(train_eval)
            test_loss, test_error = engine.evaluate(test_eval)
            norms = engine.norms()
            if cfg.ema_decay > 0:
                ema_loss, ema_error = engine.ema_evaluate(norm_stats_batches, test_eval)
            if hessian_due:
                traces, used = engine.hessian(hessian_batches, generators(epoch, 3), active)
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
                metrics.update({f"weight_norm/{name}": norms[2 + i][k] for i, name in enumerate(engine.layer_names)})
                if engine.has_scale_invariant:
                    metrics["effective_lr"] = metrics["lr"] / norms[1][k] ** 2
                    metrics["effective_lr_sqrt"] = metrics["lr"] / norms[1][k]
                if cfg.ema_decay > 0:
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
        evaluated = any(k in reports for k in going)  # checkpoints go with evaluation reports
        checkpoint = evaluated and session.should_checkpoint(epoch + 1, cfg.checkpoint_every)
        session.report(reports, statuses=statuses, state=snapshot if checkpoint else None)
        if not going:
            return
