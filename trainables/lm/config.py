"""The LM trainable's config: plain typed data, one field per knob (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainables.registry import param


@dataclass(frozen=True)
class LMConfig:
    # model and data
    model: Literal["gpt2-124m", "gpt-tiny", "gpt-nano"] = param("gpt-tiny", help="architecture, see trainables/models/gpt.py")
    context: int = param(64, gt=0, help="sequence length in tokens")
    dataset: Literal["shakespeare", "bin"] = param("shakespeare", help="embedded byte-level corpus, or nanoGPT train.bin/val.bin in data_dir")
    data_dir: str = param("", help="folder with train.bin and val.bin (dataset: bin)")
    batch_size: int = param(16, gt=0, help="sequences per micro-batch")
    grad_accum: int = param(1, gt=0, help="micro-batches per optimiser step")
    steps: int = param(2000, gt=0, help="optimiser steps")
    # optimiser
    optimizer: Literal["adamw", "adam", "sgd"] = param("adamw")
    lr: float = param(6e-3, gt=0, help="peak learning rate")
    weight_decay: float = param(0.0, ge=0, help="decoupled weight decay (AdamW/SGDW), multiplied by the scheduled LR")
    beta1: float = param(0.9, ge=0, le=1)
    beta2: float = param(0.95, ge=0, le=1)
    eps: float = param(1e-8, gt=0)
    momentum: float = param(0.9, ge=0, le=1, help="SGD momentum")
    grad_clip: float = param(1.0, ge=0, help="global gradient-norm clip; 0 disables")
    decay_norms: bool = param(False, help="also decay LayerNorm gains")
    decay_embeddings: bool = param(True, help="decay token and position embeddings")
    # schedule
    schedule: Literal["cosine", "constant"] = param("cosine")
    warmup_steps: int = param(100, ge=0, help="linear warm-up from 0")
    min_lr_ratio: float = param(0.1, ge=0, le=1, help="cosine floor as a fraction of lr")
    # numerics and run control
    precision: Literal["fp32", "bf16-autocast", "bf16"] = param("fp32")
    seed: int = param(0, ge=0, help="drives initialisation and batch sampling")
    eval_every: int = param(100, gt=0, help="steps between reports (validation, metrics)")
    eval_batches: int = param(8, gt=0, help="fixed validation batches per evaluation")
    divergence_ratio: float = param(2.0, gt=1, help="diverged when the interval train loss exceeds this times its running minimum")
    checkpoint_every: int = param(0, ge=0, help="reports between checkpoints; 0 = only when asked")
    device: str = param("auto", help="auto, cpu, cuda, cuda:N")
    threads: int = param(0, ge=0, help="torch CPU threads; 0 = the trial's CPUs")
