"""The LM trainable's config: plain typed data, one field per knob (no torch import).

Defaults are the tiny 2-CPU setting (byte-level GPT on the embedded corpus); the
presets in ``study/presets/`` set the paper's GPT-2-124M values. Relations between
fields (e.g. ``dataset: bin`` needs ``data_dir``) are checked when the config is built
and raise a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from trainables.registry import ConfigError, param


@dataclass(frozen=True)
class LMConfig:
    # model and data
    model: Literal["gpt2-124m", "gpt-tiny", "gpt-micro", "gpt-nano"] = param("gpt-tiny", help="architecture, see trainables/models/gpt.py")
    context: int = param(64, gt=0, help="sequence length in tokens (the model's block size)")
    dataset: Literal["shakespeare", "bin"] = param("shakespeare", help="embedded byte-level corpus, or nanoGPT train.bin/val.bin in data_dir")
    data_dir: str = param("", help="absolute path of a folder with train.bin and val.bin (dataset: bin)")
    batch_size: int = param(16, gt=0, help="sequences per micro-batch (what one forward pass holds)")
    grad_accum: int = param(1, gt=0, help="micro-batches per optimiser step (or set batch_tokens)")
    batch_tokens: int = param(0, ge=0, help="tokens per optimiser step; derives grad_accum = batch_tokens / (batch_size * context); 0: use grad_accum")
    steps: int = param(2000, gt=0, help="optimiser steps of the schedule")
    # optimiser
    optimizer: Literal["adamw", "adam", "sgd"] = param("adamw", help="adamw: decoupled WD; adam: no WD (see l2_penalty); sgd: momentum, torch's coupled WD")
    lr: float = param(6e-3, gt=0, help="peak learning rate")
    weight_decay: float = param(0.0, ge=0, help="adamw: p <- p*(1 - lr_t*weight_decay) with the scheduled lr_t; sgd: coupled, g <- g + weight_decay*p (torch SGD); adam: must be 0")
    l2_penalty: float = param(0.0, ge=0, help="c of a loss term c*||w||^2 over the decayed tensors (no 1/2: the gradient gains 2c*w, before clipping); any optimiser")
    beta1: float = param(0.9, ge=0, le=1, help="Adam beta1")
    beta2: float = param(0.95, ge=0, le=1, help="Adam beta2")
    eps: float = param(1e-8, gt=0, help="Adam epsilon")
    momentum: float = param(0.9, ge=0, le=1, help="SGD momentum")
    grad_clip: float = param(1.0, ge=0, help="global gradient-norm clip; 0 disables")
    decay_norms: bool = param(False, help="also decay LayerNorm gains (and biases, if the model had any)")
    decay_embeddings: bool = param(True, help="decay token and position embeddings (the token embedding is also the tied output head)")
    # schedule
    schedule: Literal["cosine", "constant"] = param("cosine", help="after the warm-up: cosine to lr*min_lr_ratio at `steps`, or constant")
    warmup_steps: int = param(100, ge=0, help="linear warm-up from LR 0; with schedule constant: warm-up + constant")
    min_lr_ratio: float = param(0.1, ge=0, le=1, help="cosine floor as a fraction of lr")
    tail_steps: int = param(0, ge=0, help="extra steps after the schedule at constant tail_lr with weight decay 0 (the paper's tiny-LR continuation)")
    tail_lr: float = param(1e-5, gt=0, help="learning rate of the tail steps")
    # numerics
    precision: Literal["fp32", "bf16-autocast", "bf16"] = param("fp32", help="bf16-autocast: fp32 master weights (the paper's 'bf16'); bf16: weights and optimiser state in bfloat16")
    tf32: bool = param(True, help="allow TF32 matmuls on CUDA in fp32 runs (the paper's float32 baseline does)")
    compile: bool = param(False, help="torch.compile the model (pays on GPUs; slow to start on CPUs)")
    seed: int = param(0, ge=0, help="drives initialisation and the order of training batches")
    # evaluation and run control
    eval_every: int = param(100, gt=0, help="steps between reports (validation, metrics)")
    eval_batches: int = param(8, gt=0, help="fixed batches of batch_size sequences per evaluation, from each split")
    ema_decay: float = param(0.99, ge=0, le=1, help="parameter EMA per step from init, no bias correction; 0 disables ema_val_loss")
    divergence_ratio: float = param(2.0, gt=1, help="a blow-up starts when the interval train loss exceeds this times its running minimum (NaN/inf: diverged at once)")
    divergence_patience: int = param(500, ge=0, help="steps a blow-up may last and still recover (a loss spike, counted in loss_spikes); still above after them, or at the end of the run: diverged; 0: diverged at the first report above")
    checkpoint_every: int = param(0, ge=0, help="reports between checkpoints; 0: none")
    device: str = param("auto", help="auto, cpu, cuda, cuda:N")
    threads: int = param(0, ge=0, help="torch CPU threads; 0: the trial's CPUs")

    def __post_init__(self):
        if self.optimizer == "adam" and self.weight_decay > 0:
            raise ConfigError("weight_decay", "optimizer adam has no weight decay (the paper's 'Adam' is AdamW with "
                                              "weight_decay 0); use optimizer adamw for decoupled decay, or l2_penalty for coupled L2")
        if self.dataset == "bin" and self.data_dir and not os.path.isabs(os.path.expanduser(self.data_dir)):
            raise ConfigError("data_dir", f"{self.data_dir!r} is relative; give an absolute path (trials run in their own folders)")
        if self.batch_tokens:
            micro = self.batch_size * self.context
            if self.grad_accum != 1:
                raise ConfigError("batch_tokens", "set either batch_tokens or grad_accum, not both")
            if self.batch_tokens % micro:
                raise ConfigError("batch_tokens", f"{self.batch_tokens} is not a multiple of batch_size * context = {micro}")
        if self.ema_decay == 1:
            raise ConfigError("ema_decay", "1 would keep the average at the initial weights; use a value in [0, 1)")

    def check_inputs(self) -> None:
        """What the run reads from outside the spec; checked at launch, not when a spec loads,
        so that a preset which leaves data_dir to ``--set`` lists and dry-runs anywhere."""
        if self.dataset == "bin" and not self.data_dir:
            raise ConfigError("data_dir", "dataset bin needs data_dir, a folder with nanoGPT's train.bin and val.bin "
                                          "(--set data_dir=/absolute/path)")

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimiser step."""
        return self.batch_tokens // (self.batch_size * self.context) if self.batch_tokens else self.grad_accum

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context * self.accumulation
