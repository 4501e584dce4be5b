"""Tr(Hessian) of a loss by Hutchinson's method: E[vᵀHv] = Tr(H) for Rademacher v.

Each Hessian-vector product is a double backward pass (Pearlmutter's trick through
autograd): g = ∇L with ``create_graph=True``, then Hv = ∇(g·v). The loss may be a sum
over batches (a fixed subset too large for one pass): the gradient graph of each batch
is built once and serves a chunk of probes, so a probe costs one extra backward
through that graph instead of a full forward and two backwards.

The stopping rule is PyHessian's, which the paper used: add probes until the running
mean changes by less than ``tol`` relatively (or ``max_probes`` is reached); the
estimate is the mean of the probes drawn.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

PROBES_PER_PASS = 10  # probes that share one gradient graph per batch (memory: this many parameter copies)


def rademacher_like(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype).mul_(2).sub_(1)
            for p in params]


def hutchinson_trace(loss_of_batch: Callable[[object], torch.Tensor], batches: Iterable,
                     params: Sequence[torch.Tensor], *, max_probes: int = 100, tol: float = 1e-3,
                     generator: torch.Generator) -> tuple[float, int]:
    """Estimate Tr(∇²L) for L = Σ_b ``loss_of_batch(b)`` over ``batches``, w.r.t. ``params``.

    Returns ``(estimate, probes used)``. ``batches`` is walked once per chunk of
    probes: a list, or a zero-argument function that returns a fresh iterable.
    """
    if max_probes < 1:
        raise ValueError("max_probes must be at least 1")
    params = list(params)
    values: list[float] = []
    previous = 0.0
    while len(values) < max_probes:
        chunk = [rademacher_like(params, generator) for _ in range(min(PROBES_PER_PASS, max_probes - len(values)))]
        vhv = torch.zeros(len(chunk), device=params[0].device, dtype=torch.float64)
        for batch in (batches() if callable(batches) else batches):
            grads = torch.autograd.grad(loss_of_batch(batch), params, create_graph=True)
            for j, v in enumerate(chunk):
                hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=j + 1 < len(chunk),
                                         materialize_grads=True)
                vhv[j] += sum((h * u).sum() for h, u in zip(hv, v)).double()
        for value in vhv.tolist():  # one host sync per chunk
            values.append(value)
            mean = sum(values) / len(values)
            if abs(mean - previous) / (abs(previous) + 1e-6) < tol:
                return mean, len(values)
            previous = mean
    return sum(values) / len(values), len(values)
