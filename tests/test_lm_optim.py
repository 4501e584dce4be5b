"""Weight-decay groups, one optimiser step by hand for each variant, and the LM schedule."""

import math

import pytest
import torch
import torch.nn as nn

from trainables.lm.config import LMConfig
from trainables.lm.optim import build_optimizer, optimizer_step, set_schedule, weight_decay_groups
from trainables.lm.train import schedule_at
from trainables.models.gpt import GPT, model_config
from trainables.registry import build_config

MATRICES = [f"transformer.h.{i}.{m}.weight" for i in range(2)
            for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
EMBEDDINGS = ["transformer.wte.weight", "transformer.wpe.weight"]
NORMS = [f"transformer.h.{i}.{ln}.weight" for i in range(2) for ln in ("ln_1", "ln_2")] + ["transformer.ln_f.weight"]


def nano():
    torch.manual_seed(0)
    return GPT(model_config("gpt-nano", block_size=16, vocab_size=256))


@pytest.mark.parametrize("options, decayed, not_decayed", [
    ({}, EMBEDDINGS + MATRICES, NORMS),  # the paper's rule
    ({"decay_norms": True}, EMBEDDINGS + MATRICES + NORMS, []),  # the LayerNorm ablation
    ({"decay_embeddings": False}, MATRICES, EMBEDDINGS + NORMS),
    ({"decay_norms": True, "decay_embeddings": False}, MATRICES + NORMS, EMBEDDINGS),
])
def test_which_tensors_get_weight_decay(options, decayed, not_decayed):
    model = nano()
    groups = weight_decay_groups(model, **options)
    assert sorted(groups.decay_names) == sorted(decayed)
    assert sorted(groups.no_decay_names) == sorted(not_decayed)
    # the output head is the token embedding: one tensor, listed once, decayed with the embeddings
    assert "lm_head.weight" not in groups.decay_names + groups.no_decay_names
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    assert groups.summary() == {"decayed_tensors": len(decayed), "decayed_params": sum(sizes[n] for n in decayed)}


def test_weight_decay_counts_of_gpt2_124m():
    with torch.device("meta"):
        model = GPT(model_config("gpt2-124m", block_size=256, vocab_size=50304))
    summary = weight_decay_groups(model).summary()
    # 2 embeddings + 4 matrices x 12 layers; all but the 25 LayerNorm gains of 768
    assert summary == {"decayed_tensors": 50, "decayed_params": model.num_params() - 25 * 768}


class TwoParameters(nn.Module):
    """One 1x2 matrix w and the loss g . w, whose gradient is g whatever w is."""

    def __init__(self, w, g):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=torch.float64))
        self.g = torch.tensor([g], dtype=torch.float64)

    def loss(self):
        return (self.g * self.w).sum()


W, G, LR, EPS = [1.0, -2.0], [0.5, 1e-3], 0.1, 1e-8


def one_step(optimizer_name, *, weight_decay=0.0, l2_penalty=0.0, grad_clip=0.0, momentum=0.9, w=W, g=G):
    model = TwoParameters(w, g)
    groups = weight_decay_groups(model)
    assert groups.decay_names == ["w"]
    optimizer = build_optimizer(optimizer_name, groups, lr=LR, weight_decay=weight_decay, betas=(0.9, 0.95),
                                eps=EPS, momentum=momentum)
    model.loss().backward()
    norm = optimizer_step(optimizer, l2_penalty=l2_penalty, grad_clip=grad_clip)
    return model.w.detach()[0].tolist(), norm.item()


def test_adamw_step_by_hand():
    wd = 0.5
    got, _ = one_step("adamw", weight_decay=wd)
    # decoupled: shrink by (1 - lr*wd), then Adam's first step, m_hat = g, v_hat = g^2
    expected = [w * (1 - LR * wd) - LR * g / (abs(g) + EPS) for w, g in zip(W, G)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx([0.85, -1.99999], rel=1e-5)


def test_adam_with_l2_penalty_step_by_hand():
    c = 0.01
    got, norm = one_step("adam", l2_penalty=c)
    # coupled: the loss gains c*||w||^2 (no 1/2), so the gradient gains 2*c*w before Adam normalises it
    g_l2 = [g + 2 * c * w for w, g in zip(W, G)]
    assert g_l2 == pytest.approx([0.52, -0.039])  # the L2 term flips the sign of the second coordinate
    expected = [w - LR * g / (abs(g) + EPS) for w, g in zip(W, g_l2)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert norm == pytest.approx(math.hypot(*g_l2))
    # ... which AdamW with the "same" strength does not do
    assert got != pytest.approx(one_step("adamw", weight_decay=2 * c)[0], rel=1e-6)


def test_adam_without_decay_equals_adamw_with_zero():
    assert one_step("adam")[0] == one_step("adamw", weight_decay=0.0)[0]
    with pytest.raises(ValueError, match="adam has no weight decay"):
        one_step("adam", weight_decay=0.1)


def test_sgd_momentum_coupled_weight_decay_step_by_hand():
    wd = 0.5
    got, _ = one_step("sgd", weight_decay=wd)
    # torch SGD: buf = g + wd*w on the first step, w <- w - lr*buf
    assert got == pytest.approx([w - LR * (g + wd * w) for w, g in zip(W, G)], rel=1e-12)


def test_clipping_uses_the_global_norm_and_reports_it_before_clipping():
    got, norm = one_step("sgd", grad_clip=1.0, momentum=0.0, g=[3.0, 4.0])
    assert norm == pytest.approx(5.0)
    assert got == pytest.approx([1.0 - LR * 0.6, -2.0 - LR * 0.8], rel=1e-6)


def test_set_schedule_touches_only_the_decayed_group():
    model = nano()
    optimizer = build_optimizer("adamw", weight_decay_groups(model), lr=1.0, weight_decay=0.1)
    set_schedule(optimizer, lr=0.5, weight_decay=0.0)
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(0.5, 0.0), (0.5, 0.0)]


def lm(**values):
    return build_config(LMConfig, values)


def test_paper_schedules_at_chosen_steps():
    cosine = lm(lr=6e-4, min_lr_ratio=0.1, warmup_steps=400, steps=50_000, weight_decay=0.1)
    assert schedule_at(cosine, 0) == (0.0, 0.1)  # warm-up starts at LR 0
    assert schedule_at(cosine, 100)[0] == pytest.approx(1.5e-4)
    assert schedule_at(cosine, 400)[0] == pytest.approx(6e-4)
    assert schedule_at(cosine, 25_200)[0] == pytest.approx(3.3e-4)  # half way through the cosine
    # a quarter of the way: 6e-5 + 5.4e-4 * (1 + cos(pi/4)) / 2
    assert schedule_at(cosine, 12_800)[0] == pytest.approx(6e-5 + 5.4e-4 * (1 + math.sqrt(0.5)) / 2)
    assert schedule_at(cosine, 49_999)[0] == pytest.approx(6e-5, rel=1e-6)
    constant = lm(lr=6e-4, schedule="constant", warmup_steps=400, steps=50_000)
    assert schedule_at(constant, 200)[0] == pytest.approx(3e-4)  # warm-up + constant
    assert schedule_at(constant, 30_000)[0] == 6e-4
    no_warmup = lm(lr=0.3, schedule="constant", warmup_steps=0, steps=100)
    assert schedule_at(no_warmup, 0)[0] == 0.3
    tail = lm(lr=6e-4, steps=1000, tail_steps=100, tail_lr=1e-5, weight_decay=0.3)
    assert schedule_at(tail, 999)[1] == 0.3
    assert schedule_at(tail, 1000) == (1e-5, 0.0)  # the tiny-LR continuation runs without decay
