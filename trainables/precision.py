"""One place that turns a precision name into what the training step needs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

PRECISIONS = ("fp32", "bf16-autocast", "bf16", "fp16-autocast")


@dataclass(frozen=True)
class Precision:
    """How to run a step in a given precision.

    Args:
        name: one of ``PRECISIONS``.
        param_dtype: dtype the parameters (and so the optimiser state) are stored in.
        autocast: a zero-argument factory of the context the forward pass runs under.
        scaler: whether fp16 loss scaling (``torch.amp.GradScaler``) is needed.
    """

    name: str
    param_dtype: torch.dtype
    autocast: Callable[[], ContextManager]
    scaler: bool = False


def precision(name: str, device: torch.device) -> Precision:
    """``fp32``: everything float32 (TF32 matmuls on GPU stay as the process set them).
    ``bf16-autocast``: float32 master weights, gradients and optimiser state, forward
    matmuls in bfloat16 — what the paper calls "bf16". ``bf16``: parameters and
    optimiser state stored in bfloat16 (note: small decoupled-decay steps round away).
    ``fp16-autocast``: float16 forward with loss scaling, as the paper's vision runs.
    """
    kind = device.type
    if name == "fp32":
        return Precision(name, torch.float32, contextlib.nullcontext)
    if name == "bf16-autocast":
        return Precision(name, torch.float32, lambda: torch.autocast(kind, dtype=torch.bfloat16))
    if name == "bf16":
        return Precision(name, torch.bfloat16, contextlib.nullcontext)
    if name == "fp16-autocast":
        return Precision(name, torch.float32, lambda: torch.autocast(kind, dtype=torch.float16),
                         scaler=kind == "cuda")
    raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
