"""A GPT-2 language model in one file, in the manner of nanoGPT.

Pre-LayerNorm blocks, causal self-attention through ``scaled_dot_product_attention``,
a GELU MLP of width 4·d, token embedding tied to the output head, no biases (as the
paper's runs: ``bias=False``), GPT-2 initialisation: N(0, 0.02) everywhere and
N(0, 0.02/sqrt(2·n_layer)) for the projections that write into the residual stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest context
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for fast matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    bias: bool = False  # biases in Linear and LayerNorm
    dropout: float = 0.0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")


# Named architectures; the trainable sets block_size (context) and vocab_size (data).
MODELS: dict[str, GPTConfig] = {
    "gpt2-124m": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # GPT-2 small, the paper's model
    "gpt-tiny": GPTConfig(n_layer=4, n_head=4, n_embd=128),  # the 2-CPU measurements of scale.md and bench/
    "gpt-micro": GPTConfig(n_layer=3, n_head=4, n_embd=96),  # chinchilla-tiny, quickstart: half gpt-tiny's CPU step
    "gpt-nano": GPTConfig(n_layer=2, n_head=2, n_embd=32),  # unit tests
}


def model_config(name: str, *, block_size: int, vocab_size: int) -> GPTConfig:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return replace(MODELS[name], block_size=block_size, vocab_size=vocab_size)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying: one tensor, two uses
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled per GPT-2
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied embedding/head is one tensor); ``non_embedding``
        leaves out the position embedding, as nanoGPT's count and the FLOP estimate do."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None):
        T = idx.size(-1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than the block size {self.config.block_size}")
        x = self.transformer.drop(self.embed(idx))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        if targets is None:
            return logits, None
        return logits, self.loss(logits, targets)

    def embed(self, idx):
        """Token plus position embeddings, (B, T, C)."""
        pos = torch.arange(0, idx.size(-1), dtype=torch.long, device=idx.device)  # (T,)
        return self.transformer.wte(idx) + self.transformer.wpe(pos)

    def loss(self, logits, targets):
        """The mean cross-entropy of the next-token predictions."""
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def flops_per_token(self) -> float:
        """Training FLOPs per token at full context, 6·N + 12·L·H·Q·T (PaLM, arXiv 2204.02311,
        appendix B; nanoGPT's ``estimate_mfu``): N non-embedding parameters, the 6 of
        forward + backward matmuls, and the attention scores over T positions."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size


class StackedLinear(nn.Module):
    """K Linears of one shape as one batched matmul: ``weight`` (K, out, in), ``bias`` (K, out).

    The input's rows are the K members' in order: (K·B, …, in), member k's rows the k-th of
    K equal blocks of the leading dimension."""

    def __init__(self, size: int, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(size, out_features)) if bias else None

    def forward(self, x):
        rows = x.reshape(self.weight.size(0), -1, x.size(-1))  # (K, rows of a member, in)
        if self.bias is None:
            out = torch.bmm(rows, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return out.view(*x.shape[:-1], -1)


class StackedLayerNorm(nn.Module):
    """K LayerNorms: one normalisation over all rows, then each member's own scale (and shift)."""

    def __init__(self, size: int, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, ndim))
        self.bias = nn.Parameter(torch.empty(size, ndim)) if bias else None

    def forward(self, x):
        rows = F.layer_norm(x, x.shape[-1:], None, None, 1e-5).view(self.weight.size(0), -1, x.size(-1))
        if self.bias is None:
            return (rows * self.weight.unsqueeze(1)).view(x.shape)
        return torch.addcmul(self.bias.unsqueeze(1), rows, self.weight.unsqueeze(1)).view(x.shape)


class StackedEmbedding(nn.Module):
    """K embedding tables, ``weight`` (K, num, dim): ``forward(idx)`` looks member k's indices
    ``idx[k]`` up in its own table; ``idx`` (K, …), or (1, …) for the same indices in every table;
    (K, …, dim)."""

    def __init__(self, size: int, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, num, dim))

    def forward(self, idx):
        size, num, dim = self.weight.shape
        offsets = torch.arange(0, size * num, num, device=idx.device).view(size, *([1] * (idx.dim() - 1)))
        return F.embedding(idx + offsets, self.weight.view(size * num, dim))


class StackedGPT(GPT):
    """K GPTs of one config as one module whose parameters are stacked, (K, …): each Linear a
    batched matmul over the K members, attention one fused ``scaled_dot_product_attention`` with
    the pack folded into the batch dimension ((K·B, heads, T, head size)), the blocks' own
    forward code unchanged. Built on the meta device, without tensors of its own: call it through
    ``torch.func.functional_call`` with stacked tensors of the GPT's names
    (``trainables.batched.StackedModel.params``). ``forward(idx, targets)``: ``idx`` and
    ``targets`` (K, B, T), or (B, T) shared by all members; the loss is each member's, (K,)."""

    def __init__(self, config: GPTConfig, size: int):
        with torch.device("meta"):
            super().__init__(config)
            for parent in list(self.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear):
                        child = StackedLinear(size, child.in_features, child.out_features, child.bias is not None)
                    elif isinstance(child, LayerNorm):
                        child = StackedLayerNorm(size, child.weight.numel(), child.bias is not None)
                    elif isinstance(child, nn.Embedding):
                        child = StackedEmbedding(size, child.num_embeddings, child.embedding_dim)
                    setattr(parent, name, child)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT
        self.size = size

    def embed(self, idx):
        idx = idx if idx.dim() == 3 else idx.unsqueeze(0)  # (K or 1, B, T)
        pos = torch.arange(0, idx.size(-1), dtype=torch.long, device=idx.device).unsqueeze(0)  # (1, T)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos).unsqueeze(1)  # (K, B, T, C)
        return x.flatten(0, 1)  # (K·B, T, C): the members' rows in order

    def loss(self, logits, targets):
        targets = targets.expand(self.size, *targets.shape[-2:])
        per_token = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        return per_token.view(self.size, -1).mean(1)
