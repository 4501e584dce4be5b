"""Train an image classifier with SGD and report once per epoch (the paper's regime 1).

Reads top to bottom: config → data → model → optimiser → loop. Per step the loop
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
import functools
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.divergence import DivergenceDetector
from trainables.models.cnn import CNN1dConfig, ScaleInvariantCNN1d
from trainables.models.resnet import BLOCKS, PreActResNet, ResNetConfig
from trainables.models.vgg import PLANS, VGG, VGGConfig
from trainables.precision import Precision, precision, resolve_device
from trainables.registry import ConfigError, build_config
from trainables.schedules import lr_at
from trainables.session import Session
from trainables.vision.config import VisionConfig
from trainables.vision.data import DeviceBatches, VisionData, balanced_subset, load_dataset
from trainables.vision.hessian import hutchinson_trace
from trainables.vision.optim import SphereProjection, global_norm, make_optimizer, weight_decay_groups


# ---------------------------------------------------------------- model


def build_model(cfg: VisionConfig, data: VisionData) -> nn.Module:
    channels, *spatial = data.sample_shape
    if cfg.model == "cnn1d-si":
        if len(spatial) != 1:
            raise ConfigError("model", f"cnn1d-si is for 1-D signals (dataset mnist1d), not {data.name}; "
                                       f"for images use vgg11, vgg16, preact-resnet18 or preact-resnet18-si")
        return ScaleInvariantCNN1d(CNN1dConfig(width=cfg.width or 32, in_channels=channels,
                                               num_classes=data.num_classes))
    if spatial != [32, 32]:
        raise ConfigError("model", f"{cfg.model} is for 32×32 images (cifar10, cifar100), not {data.name}; "
                                   f"for mnist1d use cnn1d-si")
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

    def recompute_norm_stats(self, batches: DeviceBatches) -> None:
        if self.has_norm_stats:  # BN statistics of the averaged weights, one pass over the training data
            torch.optim.swa_utils.update_bn(batches.epoch(), self.model)
        self.model.eval()


# ---------------------------------------------------------------- steps and evaluation


@dataclass
class EpochStats:
    """Device-side sums of one epoch of training (read once, at the end)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad_step: torch.Tensor  # 1-based step of the first non-finite loss, -1 if none
    last_finite_loss: torch.Tensor
    steps: int = 0


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler, batches: DeviceBatches,
                prec: Precision, lr_of_step, first_step: int, *, ema: ParameterEMA | None = None,
                after_step=None, last_finite_loss: float = math.nan) -> EpochStats:
    device = batches.device
    stats = EpochStats(torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device),
                       torch.full((), -1, dtype=torch.long, device=device),
                       torch.full((), last_finite_loss, device=device))
    model.train()
    for i, (x, y) in enumerate(batches.epoch()):
        lr = lr_of_step(first_step + i)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with prec.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        if ema is not None:
            ema.update()
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        stats.loss_sum += loss
        stats.correct += (logits.detach().argmax(1) == y).sum()
        stats.first_bad_step.copy_(torch.where(~finite & (stats.first_bad_step < 0), first_step + i + 1,
                                               stats.first_bad_step))
        stats.last_finite_loss.copy_(torch.where(finite, loss, stats.last_finite_loss))
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


# ---------------------------------------------------------------- the run


def run(config: dict, session: Session) -> None:
    cfg = build_config(VisionConfig, config)  # also the checks across fields (VisionConfig.__post_init__)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prec = precision(cfg.precision, device)

    # data: on the device once; training batches from the run's seed, evaluation in a fixed order
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_samples=cfg.train_samples,
                        test_samples=cfg.test_samples, data_seed=cfg.data_seed, download=cfg.download,
                        input_norm=cfg.input_norm)
    images_on_gpu = device.type == "cuda" and data.x_train.dim() == 4
    layout = torch.channels_last if images_on_gpu else torch.contiguous_format  # faster convs in fp16 on GPUs
    x_train, y_train = data.x_train.to(device, memory_format=layout), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device, memory_format=layout), data.y_test.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    train = DeviceBatches(x_train, y_train, cfg.batch_size, device=device, shuffle=True, drop_last=True,
                          augment=cfg.augment, generator=derived_generator(device, cfg.seed))
    if len(train) == 0:
        raise ConfigError("batch_size", f"{cfg.batch_size} is larger than the training set ({len(y_train)})")
    train_eval = DeviceBatches(x_train, y_train, cfg.eval_batch_size, device=device)
    test_eval = DeviceBatches(x_test, y_test, cfg.eval_batch_size, device=device)
    norm_stats_batches = DeviceBatches(x_train, y_train, cfg.batch_size, device=device)
    subset = balanced_subset(y_train, cfg.hessian_samples, data.num_classes)
    hessian_batches = DeviceBatches(x_train[subset], y_train[subset], cfg.hessian_batch, device=device)

    # model, projection, optimiser, EMA
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data).to(device, memory_format=layout)
    projection = make_projection(cfg, model)
    if projection is not None and (cfg.project_at_init or cfg.projection_every == "init"):
        projection()
    groups = weight_decay_groups(model, weight_decay=cfg.weight_decay, rule=cfg.decay_params)
    optimizer = make_optimizer(groups, lr=cfg.lr, momentum=cfg.momentum, mode=cfg.weight_decay_mode)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    ema = ParameterEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    all_params = list(model.parameters())
    si_params = [p for group in named_groups(model) for p in group]
    layers = layer_params(model)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    constants = {"decayed_tensors": len(decayed), "decayed_params": sum(p.numel() for p in decayed)}

    steps_per_epoch = len(train)
    decay_epoch = cfg.decay_epoch or max(1, cfg.epochs // 2)
    lr_of_step = functools.partial(
        lr_at, schedule=cfg.schedule, lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch, min_lr=cfg.min_lr,
        decay_step=decay_epoch * steps_per_epoch, decay_lr=cfg.decay_lr or cfg.lr * cfg.decay_factor)
    project_each_step = projection if projection is not None and cfg.projection_every == "step" else None
    detector = divergence_detector(cfg, steps_per_epoch)

    start_epoch, step, last_finite_loss = 0, 0, math.nan
    state = session.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        if projection is not None:
            projection.load_state_dict(state["projection"])
        train.load_state_dict(state["train_batches"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch, step, last_finite_loss = state["epoch"], state["step"], state["last_finite_loss"]
        if state.get("detector") is not None:  # checkpoints from before the detector have none
            detector.load_state_dict(state["detector"])

    def snapshot() -> dict:  # a deep copy: the live tensors keep training after the report
        return copy.deepcopy({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.model.state_dict() if ema is not None else None,
            "projection": projection.state_dict() if projection is not None else None,
            "train_batches": train.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "epoch": epoch + 1, "step": step, "last_finite_loss": last_finite_loss,
            "detector": detector.state_dict(),
        })

    def finetune(epoch: int) -> dict:
        """The paper's Figs. 2-3: a copy trained at a small constant LR (WD finetune_weight_decay, no
        projection), then its test error, train loss and Tr(H)."""
        branch = copy.deepcopy(model)
        branch_groups = weight_decay_groups(branch, weight_decay=cfg.finetune_weight_decay, rule=cfg.decay_params)
        branch_opt = make_optimizer(branch_groups, lr=cfg.finetune_lr, momentum=cfg.momentum,
                                    mode=cfg.weight_decay_mode)
        branch_scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
        batches = copy.copy(train)  # the same device tensors, its own batch order
        batches.generator = derived_generator(device, cfg.seed, epoch, 1)
        for e in range(cfg.finetune_epochs):
            stats = train_epoch(branch, branch_opt, branch_scaler, batches, prec, lambda s: cfg.finetune_lr,
                                e * steps_per_epoch)
        if cfg.train_eval == "full":
            train_loss, _ = evaluate(branch, train_eval, prec)
        else:
            train_loss = stats.loss_sum.item() / stats.steps
        _, test_error = evaluate(branch, test_eval, prec)
        out = {"finetune_test_error": test_error, "finetune_train_loss": train_loss}
        if cfg.hessian_probes > 0:
            out["finetune_hessian_trace"], _ = hessian_trace(
                branch, hessian_batches, probes=cfg.hessian_probes, tol=cfg.hessian_tol,
                generator=derived_generator(device, cfg.seed, epoch, 2))
        return out

    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        stats = train_epoch(model, optimizer, scaler, train, prec, lr_of_step, step, ema=ema,
                            after_step=project_each_step, last_finite_loss=last_finite_loss)
        step += stats.steps
        if projection is not None and cfg.projection_every == "epoch":
            projection()
        # the epoch's one synchronisation with the device
        loss_sum, correct, first_bad, last_finite = torch.stack([
            stats.loss_sum.double(), stats.correct.double(), stats.first_bad_step.double(),
            stats.last_finite_loss.double()]).tolist()
        train_seconds = time.perf_counter() - started
        last_finite_loss = last_finite
        running_loss = loss_sum / stats.steps
        metrics = {"epoch": epoch + 1, "step": step, "lr": lr_of_step(step - 1),
                   "samples_per_s": stats.steps * cfg.batch_size / train_seconds, **constants}
        last = epoch + 1 == cfg.epochs
        diverged = detector.check(running_loss if first_bad < 0 else math.nan,
                                  int(first_bad) if first_bad >= 0 else step, final=last)
        metrics.update(detector.metrics())
        if diverged:
            metrics.update(train_loss=running_loss, diverged_step=detector.step, last_finite_loss=last_finite_loss)
            session.report(metrics, status="diverged")
            return

        hessian_due = bool(cfg.hessian_every and cfg.hessian_probes and ((epoch + 1) % cfg.hessian_every == 0 or last))
        finetune_due = bool(cfg.finetune_every and (epoch + 1) % cfg.finetune_every == 0)
        if not (last or hessian_due or finetune_due or (epoch + 1) % cfg.eval_every == 0):
            continue
        if cfg.train_eval == "full":
            metrics["train_loss"], metrics["train_error"] = evaluate(model, train_eval, prec)
        else:
            metrics["train_loss"], metrics["train_error"] = running_loss, 1.0 - correct / (stats.steps * cfg.batch_size)
        metrics["test_loss"], metrics["test_error"] = evaluate(model, test_eval, prec)

        layer_norms = {name: global_norm(ps) for name, ps in layers.items()}
        norms = torch.stack([global_norm(all_params), global_norm(si_params), *layer_norms.values()]).tolist()
        metrics["weight_norm"] = norms[0]
        metrics.update({f"weight_norm/{name}": value for name, value in zip(layer_norms, norms[2:])})
        if si_params:
            metrics["effective_lr"] = metrics["lr"] / norms[1] ** 2
            metrics["effective_lr_sqrt"] = metrics["lr"] / norms[1]

        if ema is not None:
            ema.recompute_norm_stats(norm_stats_batches)
            metrics["ema_test_loss"], metrics["ema_test_error"] = evaluate(ema.model, test_eval, prec)

        if hessian_due:
            metrics["hessian_trace"], metrics["hessian_probes"] = hessian_trace(
                model, hessian_batches, probes=cfg.hessian_probes, tol=cfg.hessian_tol,
                generator=derived_generator(device, cfg.seed, epoch, 3))
        if finetune_due:
            metrics.update(finetune(epoch))

        checkpoint = session.should_checkpoint(epoch + 1, cfg.checkpoint_every)
        session.report(metrics, status="finished" if last else None, state=snapshot if checkpoint else None)
