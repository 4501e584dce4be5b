"""The vision trainable's config: plain typed data, one field per knob (no torch import).

Defaults are the paper's vision protocol where it has one (SGD, momentum 0, coupled
L2 weight decay on every parameter, batch 128, no augmentation, a step schedule that
sets an absolute LR at the drop, EMA 0.999, Hutchinson with up to 100 probes and a
1e-3 stopping tolerance); the model and data default to the embedded ``mnist1d`` set
and the small scale-invariant CNN so that a bare config runs anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from trainables.registry import ConfigError, param

SIGNAL_MODELS = ("cnn1d-si",)  # 1-D signals (mnist1d); every other model takes 32×32 images
NO_SCALE_INVARIANT_LAYERS = ("vgg11", "vgg16")  # no normalisation after any conv: nothing to project


@dataclass(frozen=True)
class VisionConfig:
    # model and data
    model: Literal["cnn1d-si", "vgg11", "vgg16", "preact-resnet18", "preact-resnet34", "preact-resnet18-si"] = param(
        "cnn1d-si", help="architecture (trainables/models/): cnn1d-si for mnist1d; VGG/ResNets for CIFAR")
    width: int = param(0, ge=0, help="base width; 0 = the model's standard width (32 for cnn1d-si, 64 otherwise)")
    dataset: Literal["mnist1d", "cifar10", "cifar100"] = param(
        "mnist1d", help="mnist1d: embedded, generated from data_seed; cifar10/cifar100: python pickle batches in data_dir")
    data_dir: str = param("", help="folder holding cifar-10-batches-py/ or cifar-100-python/ (or that folder itself)")
    download: bool = param(False, help="download CIFAR into data_dir with torchvision when it is missing (needs torchvision and internet)")
    train_samples: int = param(0, ge=0, help="training examples; 0 = all (mnist1d: 4000 generated)")
    test_samples: int = param(0, ge=0, help="test examples; 0 = all (mnist1d: 4000 generated)")
    data_seed: int = param(42, ge=0, help="seed of the mnist1d generator (the same data for every trial)")
    input_norm: Literal["cifar", "authors-vgg"] = param(
        "cifar", help="CIFAR inputs: cifar = the training set's channel mean/std; authors-vgg = the paper's VGG code: "
                      "std (0.2023, 0.1994, 0.2010), then ImageNet's mean/std again in VGG's forward (VGG only)")
    augment: bool = param(False, help="random crop (zero padding 4) + horizontal flip, CIFAR only; the paper uses none")
    batch_size: int = param(128, gt=0, help="examples per SGD step (the last partial batch is dropped)")
    eval_batch_size: int = param(1000, gt=0, help="examples per forward pass when evaluating")
    epochs: int = param(50, gt=0, help="passes over the training set")
    # optimiser: SGD, weight decay coupled (L2 in the gradient, as torch SGD) or decoupled (SGDW)
    optimizer: Literal["sgd"] = param("sgd", help="SGD with momentum")
    lr: float = param(0.1, gt=0, help="learning rate of the large-LR phase (the peak for cosine)")
    weight_decay: float = param(0.0, ge=0, help="λ; l2: g ← g + λw; decoupled: w ← (1 − η_t·λ)w before the step")
    weight_decay_mode: Literal["l2", "decoupled"] = param("l2", help="l2 = coupled (the paper, torch SGD); decoupled = SGDW")
    decay_params: Literal["all", "weights"] = param("all", help="all trainable tensors (the paper) or only ≥2-D ones (no biases/BN)")
    momentum: float = param(0.0, ge=0, le=1, help="SGD momentum (the paper: 0)")
    # schedule (per step; see trainables/schedules.py)
    schedule: Literal["constant", "step", "cosine"] = param("step", help="LR schedule over the run")
    decay_epoch: int = param(0, ge=0, help="step schedule: epoch at which the LR drops; 0 = half of epochs")
    decay_lr: float = param(0.0, ge=0, help="step schedule: absolute LR after the drop (the paper's lr_flow); 0 = lr × decay_factor")
    decay_factor: float = param(0.1, gt=0, le=1, help="step schedule: LR multiplier at the drop when decay_lr is 0")
    min_lr: float = param(0.0, ge=0, help="cosine: the LR at the last step")
    warmup_epochs: int = param(0, ge=0, help="linear warm-up from 0 over this many epochs")
    # scale-invariant networks on the sphere
    projection: Literal["none", "global", "per_group"] = param(
        "none", help="rescale parameters onto a sphere: global = all trainable parameters to projection_radius (the paper); "
                     "per_group = each scale-invariant group back to its initial norm")
    projection_every: Literal["init", "epoch", "step"] = param("epoch", help="when to project: only at init, after every epoch (the paper), or after every step")
    project_at_init: bool = param(True, help="also project before the first step (the paper's LR sweep does not; its Tr(H) runs do)")
    projection_radius: float = param(1.0, ge=0, help="global projection: the sphere's radius (the paper: 1.0); 0 = the initial norm")
    # metrics
    eval_every: int = param(1, gt=0, help="epochs between reports (evaluation, norms, EMA); the last epoch always reports")
    train_eval: Literal["full", "running"] = param("full", help="train loss/error: a full eval-mode pass (the paper) or the epoch's running mean in train mode (free)")
    ema_decay: float = param(0.999, ge=0, le=0.999999, help="EMA of the parameters per step, from init; its BN statistics are recomputed each epoch; 0 = no EMA")
    hessian_every: int = param(0, ge=0, help="Tr(H) of the training loss every this many epochs and at the last one; 0 = never on the main run")
    hessian_probes: int = param(100, ge=0, help="most Rademacher probes per Tr(H) estimate; 0 = no Hessian anywhere")
    hessian_tol: float = param(1e-3, ge=0, help="stop adding probes once the running mean changes by less than this, relatively")
    hessian_samples: int = param(5000, gt=0, help="fixed class-balanced subset of the training set (the first n/classes of each class)")
    hessian_batch: int = param(500, gt=0, help="examples per Hessian-vector product pass (only speed and memory depend on it)")
    # the paper's fine-tune-after-decay protocol (Figs. 2-3)
    finetune_every: int = param(0, ge=0, help="branch a copy after every this many epochs and fine-tune it; 0 = never")
    finetune_epochs: int = param(1, gt=0, help="length of each fine-tuning branch (the paper: 100; a few are a cheap proxy)")
    finetune_lr: float = param(1e-4, gt=0, help="constant LR of the branches")
    finetune_weight_decay: float = param(0.0, ge=0, help="weight decay of the branches (the paper: 0)")
    # numerics and run control
    precision: Literal["fp32", "fp16-autocast", "bf16-autocast"] = param("fp32", help="fp16-autocast uses a GradScaler on CUDA; Tr(H) is always fp32")
    seed: int = param(0, ge=0, help="drives initialisation, batch order and augmentation")
    divergence_loss: float = param(0.0, ge=0, help="an epoch whose mean train loss exceeds this starts a blow-up; 0 = none (NaN/inf: diverged at once)")
    divergence_patience: int = param(3, ge=0, help="epochs after a blow-up's first within which the mean train loss must come back below divergence_loss (a loss spike, counted in loss_spikes); else, or at the last epoch: diverged")
    checkpoint_every: int = param(0, ge=0, help="epochs between checkpoints (taken at report epochs); 0 = only when asked")
    device: str = param("auto", help="auto, cpu, cuda, cuda:N")
    threads: int = param(0, ge=0, help="torch CPU threads; 0 = the trial's CPUs")

    def __post_init__(self):
        """Checks that involve more than one field (each field alone is checked by build_config)."""
        images = self.dataset != "mnist1d"
        if self.model in SIGNAL_MODELS and images:
            raise ConfigError("model", f"{self.model} is for 1-D signals (dataset mnist1d), not {self.dataset}; "
                                       f"for images use vgg11, vgg16, preact-resnet18 or preact-resnet18-si")
        if self.model not in SIGNAL_MODELS and not images:
            raise ConfigError("model", f"{self.model} is for 32×32 images (cifar10, cifar100), not mnist1d; "
                                       f"for mnist1d use cnn1d-si")
        if images and self.data_dir and not os.path.isabs(self.data_dir):
            raise ConfigError("data_dir", f"{self.data_dir!r} is not an absolute path; give one "
                                          f"(Ray runs each trial in its own working folder)")
        if self.input_norm == "authors-vgg" and not self.model.startswith("vgg"):
            raise ConfigError("input_norm", f"authors-vgg is the paper's VGG input pipeline; {self.model} takes "
                                            f"input_norm: cifar")
        if self.augment and not images:
            raise ConfigError("augment", "random crop + flip is for CIFAR images; mnist1d has no augmentation")
        if self.projection != "none" and self.model in NO_SCALE_INVARIANT_LAYERS:
            raise ConfigError("projection", f"model {self.model} has no scale-invariant layers to project; "
                                            f"use cnn1d-si, preact-resnet18(-si) or projection: none")
        if self.projection == "global" and not (self.model in SIGNAL_MODELS or self.model.endswith("-si")):
            raise ConfigError("projection", f"global projection rescales every trainable parameter, which changes "
                                            f"the function of {self.model} (not all of it is scale-invariant); "
                                            f"use a -si model or projection: per_group")
        if self.schedule == "step" and self.decay_epoch >= self.epochs:
            raise ConfigError("decay_epoch", f"{self.decay_epoch} >= epochs {self.epochs}: the LR would never drop; "
                                             f"lower it or use schedule: constant")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError("warmup_epochs", f"{self.warmup_epochs} >= epochs {self.epochs}")

    def check_inputs(self) -> None:
        """What the run reads from outside the spec; checked at launch, not when a spec loads,
        so that a preset which leaves data_dir to ``--set`` lists and dry-runs anywhere."""
        if self.dataset != "mnist1d" and not self.data_dir:
            raise ConfigError("data_dir", f"dataset {self.dataset} needs data_dir, the absolute path of a folder with "
                                          f"the CIFAR python pickle batches (--set data_dir=/absolute/path)")
