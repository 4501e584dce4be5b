"""SGD with coupled (L2) or decoupled (SGDW) weight decay, and the projection onto the sphere."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖concat(tensors)‖₂ as a 0-d tensor on their device (no host sync)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def weight_decay_groups(model: nn.Module, *, weight_decay: float, rule: str) -> list[dict]:
    """The one rule for which trainable tensors get weight decay.

    ``all``: every trainable tensor, biases and BatchNorm gains included (the paper:
    one parameter group). ``weights``: only tensors with two or more dimensions (conv
    and linear weights). Frozen tensors are in no group. Each group carries its names.
    """
    if rule not in ("all", "weights"):
        raise ValueError(f"unknown decay_params rule {rule!r}; choose all or weights")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if rule == "all" or p.dim() >= 2 else no_decay).append((name, p))
    groups = [{"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0})
    return groups


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter): before each step
    ``w ← (1 − lr·λ)·w`` with the step's (scheduled) LR, then the SGD/momentum update
    on the loss gradient alone. Each group's λ is its ``decoupled_weight_decay``.
    A step skipped by a GradScaler (inf gradients) skips the decay too.
    """

    def __init__(self, groups: list[dict], *, lr: float, momentum: float):
        groups = [{**g, "decoupled_weight_decay": g.get("weight_decay", 0.0), "weight_decay": 0.0} for g in groups]
        super().__init__(groups, lr=lr, momentum=momentum)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            decay = group["decoupled_weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if decay and params:
                torch._foreach_mul_(params, 1.0 - group["lr"] * decay)
        return super().step(closure)


def make_optimizer(groups: list[dict], *, lr: float, momentum: float, mode: str) -> torch.optim.Optimizer:
    """``l2``: torch SGD, whose ``weight_decay`` adds λw to the gradient (momentum sees it);
    ``decoupled``: ``SGDW``. With momentum 0 both give w ← (1 − ηλ)w − η∇L."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if mode == "l2":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if mode == "decoupled":
        return SGDW(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown weight_decay_mode {mode!r}; choose l2 or decoupled")


class SphereProjection:
    """Rescale groups of parameters back onto spheres: ``w_g ← r_g · w_g / ‖w_g‖``.

    Only meaningful for groups whose rescaling leaves the network's function unchanged
    (scale-invariant groups), where it moves the parameters without changing the output.
    """

    def __init__(self, groups: Sequence[Sequence[torch.Tensor]], radii: Sequence[float]):
        if len(groups) != len(radii):
            raise ValueError("one radius per group")
        self.groups = [list(g) for g in groups]
        self.radii = list(radii)

    @torch.no_grad()
    def __call__(self) -> None:
        for params, radius in zip(self.groups, self.radii):
            torch._foreach_mul_(params, radius / global_norm(params))

    def state_dict(self) -> dict:
        return {"radii": list(self.radii)}

    def load_state_dict(self, state: dict) -> None:
        self.radii = list(state["radii"])
