"""Which tensors get weight decay, the optimisers, and one optimiser step.

One rule decides the weight-decay groups (``weight_decay_groups``); the same group
receives the decoupled decay of AdamW, torch SGD's coupled decay, and the paper's
L2 penalty. ``optimizer_step`` is the whole update after the backward pass: L2
gradient, clipping, the optimiser's step; it returns the gradient norm as a device
tensor (no host synchronisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class DecayGroups:
    """Parameters split by the weight-decay rule, each as (name, tensor) pairs."""

    decay: list[tuple[str, nn.Parameter]]
    no_decay: list[tuple[str, nn.Parameter]]

    @property
    def decay_names(self) -> list[str]:
        return [name for name, _ in self.decay]

    @property
    def no_decay_names(self) -> list[str]:
        return [name for name, _ in self.no_decay]

    def summary(self) -> dict[str, int]:
        """How many tensors and scalar parameters the rule decays (reported by every trial)."""
        return {"decayed_tensors": len(self.decay), "decayed_params": sum(p.numel() for _, p in self.decay)}


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__ == "LayerNorm"


def weight_decay_groups(model: nn.Module, *, decay_norms: bool = False, decay_embeddings: bool = True) -> DecayGroups:
    """The one rule for which tensors get weight decay.

    - weights of ``nn.Embedding`` modules (token and position embeddings; a token
      embedding tied to the output head is one tensor and follows this rule):
      decayed when ``decay_embeddings`` (default, as the paper);
    - parameters of LayerNorm modules, and any other tensor of fewer than 2
      dimensions (biases): decayed only when ``decay_norms`` (the paper's ablation);
    - every other tensor of 2 or more dimensions (attention and MLP matrices): decayed.

    A tensor shared by several modules is classified once, by the first module that
    holds it in ``model.named_modules()`` order.
    """
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        for param_name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            name = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, nn.Embedding):
                decayed = decay_embeddings
            elif _is_norm(module) or p.dim() < 2:
                decayed = decay_norms
            else:
                decayed = True
            (decay if decayed else no_decay).append((name, p))
    return DecayGroups(decay, no_decay)


def fused_adam_available(device: torch.device) -> bool:
    """torch's fused Adam/AdamW kernels: on CUDA, and on CPUs from torch 2.4 (about 3x faster steps)."""
    return device.type == "cuda" or (device.type == "cpu" and torch.torch_version.TorchVersion(torch.__version__) >= "2.4")


def build_optimizer(name: str, groups: DecayGroups, *, lr: float, weight_decay: float, betas=(0.9, 0.95),
                    eps: float = 1e-8, momentum: float = 0.9, fused: bool = False) -> torch.optim.Optimizer:
    """``adamw`` (torch AdamW: p <- p*(1 - lr*wd) then the Adam step), ``adam`` (no decay),
    ``sgd`` (torch SGD with momentum; its weight_decay is coupled: g <- g + wd*p).

    Group 0 is the decayed group, group 1 the rest (``optimizer_step`` relies on it).
    """
    if name == "adam" and weight_decay:
        raise ValueError("optimizer adam has no weight decay; use adamw, or an L2 penalty")
    param_groups = [
        {"params": [p for _, p in groups.decay], "weight_decay": weight_decay},
        {"params": [p for _, p in groups.no_decay], "weight_decay": 0.0},
    ]
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, adam or sgd")


def global_norm(tensors) -> torch.Tensor:
    """The 2-norm of all ``tensors`` together, in float32, as a device tensor."""
    norms = torch._foreach_norm([t.float() for t in tensors])
    return torch.linalg.vector_norm(torch.stack(norms))


def set_schedule(optimizer: torch.optim.Optimizer, *, lr: float, weight_decay: float) -> None:
    """This step's LR for every group and weight decay for the decayed group (group 0)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.param_groups[0]["weight_decay"] = weight_decay


def optimizer_step(optimizer: torch.optim.Optimizer, *, l2_penalty: float = 0.0, grad_clip: float = 0.0) -> torch.Tensor:
    """Apply the L2 penalty's gradient, clip, step, clear the gradients.

    The penalty ``l2_penalty * ||w||^2`` over the decayed group (group 0) is a term of
    the loss in the paper's code, so its gradient ``2 * l2_penalty * w`` joins the
    gradient before clipping. Returns the global gradient norm before clipping.
    """
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if l2_penalty:
        decayed = [p for p in optimizer.param_groups[0]["params"] if p.grad is not None]
        torch._foreach_add_([p.grad for p in decayed], decayed, alpha=2 * l2_penalty)
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = global_norm([p.grad for p in params])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm
