"""The LM trainable packed: K configs that differ only in optimiser hyperparameters, trained as one.

``run(configs, session)`` is the LM trainable's one loop (``trainables.lm.train.train``)
driving a ``StackedEngine``: the K GPTs' tensors stacked (``StackedModel``: (K, ...) leaves,
the checkpoint layout) and run by one ``StackedGPT`` (``torch.func.functional_call``, no
vmap): each Linear one batched matmul over the members, attention one fused
``scaled_dot_product_attention`` over the K·B sequences, one backward per micro-batch. The
optimiser is a ``BatchedAdamW`` (torch's fused AdamW kernel, member by member, on CPUs and
GPUs) or a ``BatchedSGD``, with each member's betas, epsilon, learning rate and weight decay;
the learning rates and weight decays of a step come from ``MemberHyperparameters``, on the device.
Each member reports the same metrics at the same steps as its unpacked run, with the same
arithmetic up to float rounding (batched matmuls and layer norms sum in another order; the
optimiser step itself is bit for bit the unpacked run's fused AdamW).

- Data: each member draws the windows of its own seed (members sharing a seed share one
  draw, and then one input tensor); evaluation batches are fixed and shared.
- Initialisation: member k is built after ``torch.manual_seed(seed_k)``, as its own run.
- Divergence: each member has its own ``DivergenceDetector``; a member that diverged
  reports ``diverged`` and is masked out (its parameters and optimiser state stop
  changing); the pack ends when none is left.
- ``tokens_per_s`` and ``mfu`` of a member are its own share: its tokens per second of
  the pack's wall time (the pack's throughput is the sum over members).
- Checkpoints hold the stacked model, optimiser and EMA, every seed's sampler, every
  member's detector and whether it is still active: a resumed pack continues bit for
  bit on a CPU.
"""

from __future__ import annotations


import torch
from torch.func import functional_call

from trainables.batched import BatchedAdamW, BatchedSGD, StackedModel, clip_member_grads, member_norms
from trainables.lm.config import LMConfig
from trainables.lm.optim import fused_adam_available, weight_decay_groups
from trainables.lm.train import MemberHyperparameters, train
from trainables.models.gpt import GPT, StackedGPT, model_config
from trainables.packing import PackSession, keep_freed_memory, member_configs
from trainables.precision import Precision


class StackedEngine:
    """K members as one ``StackedModel`` with a batched optimiser whose hyperparameters are [K]
    tensors; the engine interface of ``trainables.lm.train.ModuleEngine``."""

    def __init__(self, cfgs: list[LMConfig], vocab_size: int, device: torch.device, prec: Precision):
        cfg = cfgs[0]
        self.cfg, self.prec, self.device = cfg, prec, device
        if device.type == "cpu":
            keep_freed_memory()
        members = []
        for c in cfgs:
            torch.manual_seed(c.seed)
            members.append(GPT(model_config(cfg.model, block_size=cfg.context, vocab_size=vocab_size))
                           .to(device=device, dtype=prec.param_dtype))
        groups = weight_decay_groups(members[0], decay_norms=cfg.decay_norms, decay_embeddings=cfg.decay_embeddings)
        self.fixed_metrics = groups.summary()
        self.flops_per_token = members[0].flops_per_token()
        self.model = StackedModel(members)  # the members' stacked tensors (and the checkpoint layout)
        self.net = StackedGPT(members[0].config, len(members))  # what runs them: no tensors of its own
        del members
        self.decayed = [self.model.params[name] for name in groups.decay_names]
        self.params = self.decayed + [self.model.params[name] for name in groups.no_decay_names]
        per_member = self._per_member
        param_groups = [(self.decayed, True), (self.params[len(self.decayed):], False)]
        if cfg.optimizer == "sgd":
            self.optimizer = BatchedSGD(param_groups, momentum=per_member([c.momentum for c in cfgs]), mode="l2")
        else:  # adam is adamw with weight decay 0 (the config refuses adam with a weight decay)
            self.optimizer = BatchedAdamW(param_groups, betas=(per_member([c.beta1 for c in cfgs]),
                                                               per_member([c.beta2 for c in cfgs])),
                                          eps=per_member([c.eps for c in cfgs]),
                                          fused=fused_adam_available(device) and prec.param_dtype == torch.float32)
        self.eps = per_member([c.eps for c in cfgs])
        self.ema = {n: p.detach().float().clone() for n, p in self.model.params.items()} if cfg.ema_decay > 0 else None
        self.ema_pairs = [(self.ema[n], p) for n, p in self.model.params.items()] if self.ema is not None else []
        self.schedules = MemberHyperparameters(cfgs, device)
        self.mask = None  # once a member is masked out: [K] bools (a list for AdamW, a device tensor for SGD)

    def _per_member(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def set_step(self, step: int) -> None:
        self.lrs, self.weight_decays = self.schedules.at(step)

    def forward(self, x: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each member's loss on its batch ((K, B, T)) or on the shared one ((B, T)), (K,)."""
        return functional_call(self.net, params, (x, y))[1]

    def loss_and_backward(self, x: torch.Tensor, y: torch.Tensor, shared: bool, accumulation: int) -> torch.Tensor:
        with self.prec.autocast():
            loss = self.forward(x, y, self.model.params)  # (K,)
        (loss.sum() / accumulation).backward()  # member k's gradient is that of its own loss
        return loss.detach().float()

    def step(self) -> torch.Tensor:
        if self.cfg.l2_penalty:
            for p in self.decayed:
                p.grad.add_(p.detach(), alpha=2 * self.cfg.l2_penalty)
        grad_norm = clip_member_grads(self.params, self.cfg.grad_clip)
        self.optimizer.step(self.lrs, self.weight_decays, self.mask)
        self.model.zero_grad()
        if self.ema is not None:
            torch._foreach_lerp_([e for e, _ in self.ema_pairs], [p.detach().float() for _, p in self.ema_pairs],
                                 1.0 - self.cfg.ema_decay)
        return grad_norm

    def set_active(self, active: list[bool]) -> None:
        adam = isinstance(self.optimizer, BatchedAdamW)
        self.mask = list(active) if adam else torch.tensor(active, device=self.device)

    def norms(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return member_norms(tensors)

    def effective_lr(self) -> torch.Tensor:
        if isinstance(self.optimizer, BatchedAdamW):  # Adam's typical step: lr / (sqrt(median v) + eps)
            second = torch.cat([v.flatten(1) for v in self.optimizer.second_moments()], dim=1).float()
            return self.lrs.float() / (second.median(dim=1).values.sqrt() + self.eps.float())
        return self.lrs.float()

    def decay_applied(self, factors: list[float]) -> torch.Tensor:
        return decay_applied_fraction(self.decayed, self._per_member(factors))

    def evaluate(self, batches: list[tuple[torch.Tensor, torch.Tensor]], *, ema: bool = False) -> torch.Tensor:
        self.net.eval()
        total = torch.zeros(self.model.size, device=self.device)
        with torch.no_grad():
            for x, y in batches:
                with self.prec.autocast():
                    total += self.forward(x, y, self.ema if ema else self.model.params).float()
        self.net.train()
        return total / len(batches)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            for name, tensor in self.ema.items():
                tensor.copy_(state["ema"][name])


def run(configs: list[dict], session: PackSession) -> None:
    cfgs = member_configs("lm", LMConfig, configs)  # members may differ only in the packable axes
    train(cfgs, session, StackedEngine)


@torch.no_grad()
def decay_applied_fraction(params: list[torch.Tensor], factor: torch.Tensor) -> torch.Tensor:
    """``trainables.lm.metrics.decay_applied_fraction`` per member: ``factor`` is a [K] tensor."""
    changed = torch.zeros(factor.shape[0], device=params[0].device)
    nonzero = torch.zeros(factor.shape[0], device=params[0].device)
    for p in params:
        scale = factor.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
        changed += ((p * scale).to(p.dtype) != p).flatten(1).sum(1)
        nonzero += (p != 0).flatten(1).sum(1)
    return changed / nonzero.clamp(min=1)
