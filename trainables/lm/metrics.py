"""What the LM trainable measures besides the loss: effective LR, decay that really
happened, and model FLOPs utilisation. Each returns a device tensor or a float; the
training loop reads them all with one host synchronisation per report.
"""

from __future__ import annotations

import torch

# Dense bfloat16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets,
# matched against torch.cuda.get_device_name() in this order (first match wins).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),  # after A100: "A10" is a prefix of it
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak for a CUDA device name, or None when the card is not in the table."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the card's bf16 peak (as nanoGPT)."""
    return flops_per_token * tokens_per_s / peak_flops


@torch.no_grad()
def adam_effective_lr(optimizer: torch.optim.Optimizer, lr: float) -> torch.Tensor | None:
    """Adam's typical per-coordinate step size: the median over all coordinates of
    lr / (sqrt(v) + eps), v the second moment without bias correction. The paper's
    code logs the mean of the same ratio (``avg_adam_elr``); the mean is dominated by
    the few coordinates whose v is near 0 (embedding rows of tokens that are rarely
    seen), so we report the median. None before the first step or without Adam state."""
    second_moments = [optimizer.state[p]["exp_avg_sq"].flatten().float()
                      for group in optimizer.param_groups for p in group["params"]
                      if "exp_avg_sq" in optimizer.state.get(p, {})]
    if not second_moments:
        return None
    eps = optimizer.param_groups[0]["eps"]
    return lr / (torch.cat(second_moments).median().sqrt() + eps)


@torch.no_grad()
def decay_applied_fraction(params: list[torch.Tensor], factor: float) -> torch.Tensor:
    """Fraction of the non-zero entries of ``params`` that one decay step p <- p * factor
    changes in their storage dtype. In float32 it is 1 for any realistic lr*wd; in
    bfloat16 a shrink below about 2**-9 rounds back to p and the decay silently does
    nothing (scale.md: lr*wd 1e-3 -> 0 %, 4e-3 -> 100 %)."""
    changed = torch.zeros((), device=params[0].device)
    nonzero = torch.zeros((), device=params[0].device)
    for p in params:
        changed += ((p * factor).to(p.dtype) != p).sum()
        nonzero += (p != 0).sum()
    return changed / nonzero.clamp(min=1)
