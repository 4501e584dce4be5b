"""K copies of one model trained as one: stacked parameters, a vmapped forward, batched optimisers.

The machinery behind packed trials (``trainables.packing``), independent of any trainable:

- ``StackedModel``: the parameters and buffers of K modules of one architecture stacked
  along a new leading dimension (``torch.func.stack_module_state``) and run with
  ``torch.func.vmap`` over ``torch.func.functional_call`` of one copy of the module, so a
  forward/backward pass of all K members is one pass of batched operations (a Linear
  becomes a batched matmul, a Conv a grouped conv). Buffers are stacked too and passed
  through ``functional_call``: BatchNorm running statistics are per member, updated in
  place by the batched forward exactly as each member's own BatchNorm would (its
  batching rule normalises each member's channels with that member's statistics).
  Tied parameters (GPT's token embedding and output head) stay one stacked tensor.
- ``member_norms``: per-member 2-norms of a list of stacked tensors, as a [K] tensor.
- ``BatchedAdamW`` and ``BatchedSGD``: ``torch.optim.AdamW`` and ``torch.optim.SGD`` (with
  momentum; coupled L2 or decoupled weight decay) for stacked tensors, with every
  hyperparameter a [K] tensor. The per-member scalars (1 − lr·λ, lr / bias correction, ...)
  are computed in float64 and cast at use, as torch's own optimisers compute their Python
  scalars. ``active`` (a [K] bool tensor) masks members out: a masked member's
  parameters and optimiser state stay as they are (``torch.where``, so NaN/inf in a
  diverged member never leaks into the others).
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [K] tensor shaped to broadcast against a stacked tensor ``like`` (K, ...), in its dtype."""
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class StackedModel:
    """K modules of one architecture as stacked tensors, called as one batched model.

    ``model(*inputs)`` runs every member on its own slice of ``inputs`` (each input of
    shape (K, ...)); ``model(*inputs, shared=True)`` runs every member on the same inputs.
    Outputs are stacked (K, ...). ``params`` and ``buffers`` map the module's names to the
    stacked tensors (leaves: gradients land in ``param.grad`` of shape (K, ...)).
    """

    def __init__(self, modules: Sequence[nn.Module]):
        if not modules:
            raise ValueError("a StackedModel needs at least one module")
        kinds = {type(m) for m in modules}
        if len(kinds) != 1:
            raise ValueError(f"members must share one architecture, got {sorted(k.__name__ for k in kinds)}")
        self.size = len(modules)
        first = modules[0]
        # names that share a tensor (weight tying): every alias points at the first name
        by_id, self.aliases = {}, {}
        for name, p in first.named_parameters(remove_duplicate=False):
            if id(p) in by_id:
                self.aliases[name] = by_id[id(p)]
            else:
                by_id[id(p)] = name
        params, buffers = stack_module_state(list(modules))
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        self.base = copy.deepcopy(first)  # the architecture: its own tensors are never used
        self.training = True

    # ---- calling
    def _tensors(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**params, **{alias: params[name] for alias, name in self.aliases.items()}}

    def __call__(self, *inputs: torch.Tensor, shared: bool = False, fn=None, params: dict | None = None,
                 buffers: dict | None = None):
        """Run every member; inputs are (K, ...) slices, or the same for all members (``shared``).

        ``fn(call, *inputs)``: what each member computes, ``call(*args)`` being the member's
        module (default: the module's output), e.g. its loss, so that only what is needed
        leaves the vmap. ``params``/``buffers``: other stacked tensors of the same names (an
        EMA's), instead of the model's own.
        """
        params = self.params if params is None else params
        buffers = self.buffers if buffers is None else buffers
        self.base.train(self.training)

        def one(p, b, *xs):
            def call(*args):
                return functional_call(self.base, (self._tensors(p), b), args, tie_weights=False)
            return call(*xs) if fn is None else fn(call, *xs)

        in_dims = (0, 0, *([None if shared else 0] * len(inputs)))
        return vmap(one, in_dims=in_dims)(params, buffers, *inputs)

    def train(self, mode: bool = True) -> "StackedModel":
        self.training = mode
        return self

    def eval(self) -> "StackedModel":
        return self.train(False)

    # ---- tensors
    def parameters(self, trainable_only: bool = True) -> list[torch.Tensor]:
        return [p for p in self.params.values() if p.requires_grad or not trainable_only]

    def named_parameters(self, trainable_only: bool = True) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in self.params.items() if p.requires_grad or not trainable_only]

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def clone(self) -> "StackedModel":
        """An independent copy of the members (new leaf tensors; the architecture is shared)."""
        twin = copy.copy(self)
        twin.params = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in self.params.items()}
        twin.buffers = {n: b.clone() for n, b in self.buffers.items()}
        return twin

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s ``state_dict``, loadable into a module of the architecture."""
        state = {name: t[k].detach().clone() for name, t in {**self._tensors(self.params), **self.buffers}.items()}
        return {name: state[name] for name in self.base.state_dict()}

    def member(self, k: int) -> nn.Module:
        """Member ``k`` as an ordinary module (a copy)."""
        module = copy.deepcopy(self.base)
        module.load_state_dict(self.member_state_dict(k))
        return module.train(self.training)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"params": {n: t.detach() for n, t in self.params.items()},
                "buffers": dict(self.buffers)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for group, tensors in (("params", self.params), ("buffers", self.buffers)):
            if set(state[group]) != set(tensors):
                raise ValueError(f"state {group} {sorted(state[group])} do not match the model's {sorted(tensors)}")
            for name, t in tensors.items():
                t.copy_(state[group][name])


@torch.no_grad()
def update_norm_stats(model: StackedModel, inputs: Iterable[torch.Tensor], *, params: dict | None = None,
                      buffers: dict | None = None) -> None:
    """``torch.optim.swa_utils.update_bn`` for stacked members: reset every BatchNorm's running
    statistics in ``buffers`` and recompute them as the plain average over ``inputs`` (shared by
    all members), in train mode. Where update_bn sets ``momentum = None`` (a cumulative average,
    whose factor 1/n the BatchNorm reads from its batch count, a host read vmap cannot do), batch n
    runs with ``momentum = 1/n``: the same factor, the same arithmetic."""
    buffers = model.buffers if buffers is None else buffers
    norms = {name: m for name, m in model.base.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if not norms:
        return
    for name, module in norms.items():
        if module.track_running_stats:
            prefix = f"{name}." if name else ""
            buffers[prefix + "running_mean"].zero_()
            buffers[prefix + "running_var"].fill_(1)
            buffers[prefix + "num_batches_tracked"].zero_()
    momenta = {module: module.momentum for module in norms.values()}
    was_training = model.training
    model.train()
    try:
        for n, x in enumerate(inputs, start=1):
            for module in norms.values():
                module.momentum = 1.0 / n
            model(x, shared=True, params=params, buffers=buffers)
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        model.train(was_training)


def member_norms(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of each member's slice of all ``tensors`` together, as a float32 [K] tensor.

    The same reduction as ``torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts)))``
    over one member's tensors: a norm per tensor, then the norm of those norms.
    """
    per_tensor = [t.detach().float().flatten(1).norm(dim=1) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)


def clip_member_grads(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` per member; returns each member's norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = member_norms(grads)
    if max_norm > 0:
        scale = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        for g in grads:
            g.mul_(_per_member(scale, g))
    return norms


def _masked(active: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if active is None else torch.where(_per_member(active, old).bool(), new, old)


class BatchedAdamW:
    """``torch.optim.AdamW`` (``decoupled``; ``Adam`` when every weight decay is 0) for stacked tensors.

    ``groups``: ``[(params, decayed), ...]``; weight decay applies to the decayed groups.
    ``betas``/``eps``: [K] tensors. ``step(lr, weight_decay, active)``: [K] tensors (``active``
    also a list of K bools); a masked member does not step (its step count, moments and
    parameters stay). Per member and element the arithmetic is torch's:

        p ← p·(1 − lr·λ);  m ← m + (1 − β₁)(g − m);  v ← β₂v + (1 − β₂)g²
        p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    ``fused``: the step of each member is torch's fused AdamW kernel (``torch._fused_adamw_``,
    one pass over its slices of the parameters, gradients and moments, its learning rate read
    from the [K] tensor on the device) after one batched decay multiply of the decayed tensors
    (p·(1 − lr·λ) rounded to the parameters' dtype, the fused kernel's own decay), so a member's
    update is bit for bit that of its own run's fused AdamW on the same gradients; the betas
    and epsilons are read to the host once, at construction. Otherwise a dozen batched
    elementwise passes per tensor with [K] hyperparameters in float64 (any device or dtype).
    """

    def __init__(self, groups: Sequence[tuple[Sequence[torch.Tensor], bool]], *, betas: tuple[torch.Tensor, torch.Tensor],
                 eps: torch.Tensor, fused: bool = False):
        self.groups = [(list(params), bool(decayed)) for params, decayed in groups]
        self.beta1, self.beta2 = (b.double() for b in betas)
        self.eps = eps.double()
        first = next(p for params, _ in self.groups for p in params)
        self.size = first.shape[0]
        self.fused = fused
        # float32 step counts, as torch's fused AdamW keeps them (exact to 2^24 steps)
        self.steps = torch.zeros(self.size, dtype=torch.float32 if fused else torch.float64, device=first.device)
        self.state = {id(p): {"exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                              "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                      for params, _ in self.groups for p in params}
        if fused:  # each member's views, made once (every update is in place)
            self.hyper = list(zip(self.beta1.tolist(), self.beta2.tolist(), self.eps.tolist()))
            self.members = {key: list(zip(*(t.unbind(0) for t in tensors))) for key, tensors in (
                ("params", self.params()), ("exp_avg", [self.state[id(p)]["exp_avg"] for p in self.params()]),
                ("exp_avg_sq", [self.state[id(p)]["exp_avg_sq"] for p in self.params()]))}
            self.member_steps = self.steps.unbind(0)

    def params(self) -> list[torch.Tensor]:
        return [p for params, _ in self.groups for p in params]

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor,
             active: torch.Tensor | Sequence[bool] | None = None) -> None:
        members = None  # the active members, when known on the host
        if active is not None and not isinstance(active, torch.Tensor):
            members = [k for k, on in enumerate(active) if on]
            active = torch.tensor(list(active), device=self.steps.device)
        if self.fused:
            return self._fused_step(lr, weight_decay, active, members)
        lr, weight_decay = lr.double(), weight_decay.double()
        self.steps += 1 if active is None else active.double()
        bias1 = 1 - self.beta1 ** self.steps
        bias2_sqrt = (1 - self.beta2 ** self.steps).sqrt()
        step_size = lr / bias1
        shrink = 1 - lr * weight_decay
        for params, decayed in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[id(p)]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if active is None:  # in place: one pass less over the parameters and moments
                    if decayed:
                        p.mul_(_per_member(shrink, p))
                    exp_avg.lerp_(g, _per_member(1 - self.beta1, g))
                    exp_avg_sq.mul_(_per_member(self.beta2, g)).add_(g * g * _per_member(1 - self.beta2, g))
                    denom = exp_avg_sq.sqrt().div_(_per_member(bias2_sqrt, g)).add_(_per_member(self.eps, g))
                    p.sub_(torch.div(exp_avg, denom).mul_(_per_member(step_size, p)))  # addcdiv's order
                    continue
                new_p = p * _per_member(shrink, p) if decayed else p
                new_avg = exp_avg.lerp(g, _per_member(1 - self.beta1, g))
                new_sq = exp_avg_sq * _per_member(self.beta2, g) + g * g * _per_member(1 - self.beta2, g)
                denom = new_sq.sqrt() / _per_member(bias2_sqrt, g) + _per_member(self.eps, g)
                new_p = new_p - _per_member(step_size, p) * (new_avg / denom)
                p.copy_(_masked(active, new_p, p))
                exp_avg.copy_(_masked(active, new_avg, exp_avg))
                exp_avg_sq.copy_(_masked(active, new_sq, exp_avg_sq))

    def _fused_step(self, lr: torch.Tensor, weight_decay: torch.Tensor, active: torch.Tensor | None,
                    members: list[int] | None) -> None:
        if members is None:  # (a mask as a tensor is read to the host: give a list to spare a GPU the sync)
            members = range(self.size) if active is None else [k for k, on in enumerate(active.tolist()) if on]
        shrink = 1 - lr.double() * weight_decay.double()  # rounded to the parameters' dtype, as the fused kernel
        if active is not None:
            shrink = torch.where(active, shrink, 1.0)  # a masked member's tensors times 1: unchanged
        decayed = [p for params, is_decayed in self.groups if is_decayed for p in params if p.grad is not None]
        if decayed:
            torch._foreach_mul_(decayed, [_per_member(shrink, p) for p in decayed])
        self.steps += 1 if active is None else active.to(self.steps.dtype)
        have_grad = [p.grad is not None for p in self.params()]
        grads = list(zip(*(p.grad.unbind(0) for p in self.params() if p.grad is not None)))
        lrs = lr.to(torch.float64 if lr.device.type == "cpu" else torch.float32).unbind(0)
        for k in members:
            beta1, beta2, eps = self.hyper[k]
            own = [[t for t, has in zip(self.members[key][k], have_grad) if has]
                   for key in ("params", "exp_avg", "exp_avg_sq")]
            torch._fused_adamw_(own[0], list(grads[k]), own[1], own[2], [], [self.member_steps[k]] * len(own[0]),
                                lr=lrs[k], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False,
                                maximize=False)

    def second_moments(self) -> list[torch.Tensor]:
        return [self.state[id(p)]["exp_avg_sq"] for p in self.params()]

    def state_dict(self) -> dict:
        return {"steps": self.steps.clone(),
                "exp_avg": [self.state[id(p)]["exp_avg"].clone() for p in self.params()],
                "exp_avg_sq": [self.state[id(p)]["exp_avg_sq"].clone() for p in self.params()]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.steps.copy_(state["steps"])
        for p, avg, sq in zip(self.params(), state["exp_avg"], state["exp_avg_sq"], strict=True):
            self.state[id(p)]["exp_avg"].copy_(avg)
            self.state[id(p)]["exp_avg_sq"].copy_(sq)


class BatchedSGD:
    """``torch.optim.SGD`` with momentum (dampening 0, no Nesterov) for stacked tensors.

    ``mode``: ``l2`` (torch's coupled decay: g ← g + λp before the momentum) or
    ``decoupled`` (``SGDW``: p ← (1 − lr·λ)p before the step). Weight decay applies to the
    decayed groups. ``momentum``: a [K] tensor; a member with momentum 0 takes plain SGD
    steps (its buffer is then always its last gradient). Per member and element:

        d ← g + λp (l2);  b ← μb + d (b = d at the first step);  p ← p − lr·b

    A step is a few ``torch._foreach_*`` calls over all tensors of a group (one kernel per op
    and tensor on a CPU, one per op on a GPU where the shapes allow), the per-member values
    multiplied in as [K, 1, …] views of [K] tensors kept per dtype, whose values are copied in
    place from the step's [K] float64 arguments (no host work per member or tensor). The
    arithmetic is unchanged: float64 hyperparameters, cast to the parameters' dtype at use.
    """

    def __init__(self, groups: Sequence[tuple[Sequence[torch.Tensor], bool]], *, momentum: torch.Tensor,
                 mode: str = "l2"):
        if mode not in ("l2", "decoupled"):
            raise ValueError(f"unknown weight_decay_mode {mode!r}; choose l2 or decoupled")
        self.groups = [(list(params), bool(decayed)) for params, decayed in groups]
        self.momentum = momentum.double()
        self.mode = mode
        # zeros: μ·0 + d = d reproduces torch's first step (the buffer starts as the first d)
        self.buffers = {id(p): torch.zeros_like(p) for params, _ in self.groups for p in params}
        # the step's per-member values in each dtype of the parameters: [K] tensors, viewed per tensor
        dtypes = {p.dtype for p in self.params()}
        self._values = {dtype: {name: torch.zeros_like(self.momentum, dtype=dtype)
                                for name in ("lr", "weight_decay", "shrink", "momentum")} for dtype in dtypes}
        for values in self._values.values():
            values["momentum"].copy_(self.momentum)

    def params(self) -> list[torch.Tensor]:
        return [p for params, _ in self.groups for p in params]

    def _views(self, name: str, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self._values[t.dtype][name].view(-1, *([1] * (t.dim() - 1))) for t in tensors]

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor, active: torch.Tensor | None = None) -> None:
        lr, weight_decay = lr.double(), weight_decay.double()
        shrink = 1 - lr * weight_decay
        for values in self._values.values():
            values["lr"].copy_(lr)
            values["weight_decay"].copy_(weight_decay)
            values["shrink"].copy_(shrink)
        for params, decayed in self.groups:
            params = [p for p in params if p.grad is not None]
            if not params:
                continue
            if active is not None:  # a member masked out (diverged): its tensors must not change
                self._masked_step(params, decayed, lr, weight_decay, active)
                continue
            grads, bufs = [p.grad for p in params], [self.buffers[id(p)] for p in params]
            # (a product, then a sum: addcmul's fused multiply-add would round differently)
            if decayed and self.mode == "l2":  # the gradient is not used again
                torch._foreach_add_(grads, torch._foreach_mul(params, self._views("weight_decay", params)))
            elif decayed:
                torch._foreach_mul_(params, self._views("shrink", params))
            torch._foreach_mul_(bufs, self._views("momentum", bufs))
            torch._foreach_add_(bufs, grads)
            torch._foreach_sub_(params, torch._foreach_mul(bufs, self._views("lr", params)))

    def _masked_step(self, params, decayed: bool, lr: torch.Tensor, weight_decay: torch.Tensor,
                     active: torch.Tensor) -> None:
        for p in params:
            d, buf = p.grad, self.buffers[id(p)]
            new_p = p
            if decayed and self.mode == "l2":
                d = d + _per_member(weight_decay, p) * p
            elif decayed:
                new_p = p * _per_member(1 - lr * weight_decay, p)
            new_buf = buf * _per_member(self.momentum, buf) + d
            new_p = new_p - _per_member(lr, p) * new_buf
            p.copy_(_masked(active, new_p, p))
            buf.copy_(_masked(active, new_buf, buf))

    def state_dict(self) -> dict:
        return {"momentum_buffers": [self.buffers[id(p)].clone() for p in self.params()]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for p, buf in zip(self.params(), state["momentum_buffers"], strict=True):
            self.buffers[id(p)].copy_(buf)
