"""The GPT model: shapes, parameter count, causality, initialisation, FLOP and MFU estimates."""

import copy
import math

import pytest
import torch

from trainables.lm.metrics import mfu, peak_bf16_flops
from trainables.models.gpt import (GPT, GPTConfig, StackedEmbedding, StackedGPT, StackedLayerNorm, StackedLinear,
                                   model_config)


def gpt2_124m(block_size=1024):
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        return GPT(model_config("gpt2-124m", block_size=block_size, vocab_size=50304))


def test_gpt2_124m_parameter_count_from_shapes():
    V, T, C, L = 50304, 1024, 768, 12
    embeddings = V * C + T * C  # token (tied with the head: counted once) + position
    per_layer = (C  # ln_1 gain (no biases anywhere)
                 + C * 3 * C  # q, k, v projection
                 + C * C  # attention output projection
                 + C  # ln_2 gain
                 + C * 4 * C + 4 * C * C)  # MLP up and down
    expected = embeddings + L * per_layer + C  # + ln_f gain
    assert expected == 124_373_760
    model = gpt2_124m()
    assert model.num_params() == expected
    assert model.num_params(non_embedding=True) == expected - T * C  # nanoGPT's "123.6M"
    assert gpt2_124m(block_size=256).num_params() == expected - (1024 - 256) * C
    assert model.lm_head.weight is model.transformer.wte.weight
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


@pytest.mark.parametrize("name, layers, width, expected", [
    ("gpt-tiny", 4, 128, 4 * 196_864 + 256 * 128 + 64 * 128 + 128),
    ("gpt-micro", 3, 96, 3 * 110_784 + 256 * 96 + 64 * 96 + 96),
])
def test_the_cpu_models_parameter_counts(name, layers, width, expected):
    # per layer by hand: gpt-tiny 128 + 128*384 + 128*128 + 128 + 2*128*512 = 196,864;
    # gpt-micro 96 + 96*288 + 96*96 + 96 + 2*96*384 = 110,784 (byte vocabulary 256, context 64)
    model = GPT(model_config(name, block_size=64, vocab_size=256))
    assert (model.config.n_layer, model.config.n_embd) == (layers, width)
    assert model.num_params() == expected


def test_flops_per_token_is_palm_estimate():
    model = gpt2_124m()
    n = 124_373_760 - 1024 * 768
    assert model.flops_per_token() == 6 * n + 12 * 12 * 12 * 64 * 1024 == 854_770_176


def test_changing_a_later_token_never_changes_earlier_logits():
    torch.manual_seed(0)
    model = GPT(model_config("gpt-nano", block_size=16, vocab_size=256)).eval()
    x = torch.randint(0, 256, (3, 16))
    for position in (0, 5, 15):
        changed = x.clone()
        changed[:, position] = (changed[:, position] + 1) % 256
        with torch.no_grad():
            before, _ = model(x)
            after, _ = model(changed)
        torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=1e-6)
        assert (after[:, position:] - before[:, position:]).abs().amax(dim=-1).min() > 1e-4


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=512, n_layer=4, n_head=4, n_embd=128))
    params = dict(model.named_parameters())
    assert params["transformer.h.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert params["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 4)
    for name in ("transformer.h.3.attn.c_proj.weight", "transformer.h.3.mlp.c_proj.weight"):
        assert params[name].std().item() == pytest.approx(residual, rel=0.05)
    assert (params["transformer.h.0.ln_1.weight"] == 1).all()


def test_loss_and_shapes():
    torch.manual_seed(0)
    model = GPT(model_config("gpt-nano", block_size=8, vocab_size=256))
    x, y = torch.randint(0, 256, (2, 2, 8))
    logits, loss = model(x, y)
    assert logits.shape == (2, 8, 256)
    assert loss.item() == pytest.approx(math.log(256), abs=0.1)  # near uniform at init
    with pytest.raises(ValueError, match="longer than the block size"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_bad_model_configs():
    with pytest.raises(ValueError, match="unknown model"):
        model_config("gpt-huge", block_size=8, vocab_size=8)
    with pytest.raises(ValueError, match="not a multiple of n_head"):
        GPTConfig(n_embd=100, n_head=3)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-40GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA A10", 125e12), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12), ("Tesla V100-SXM2-16GB", None),
])
def test_peak_flops_table(name, peak):
    assert peak_bf16_flops(name) == peak


def test_mfu():
    # 1e5 tokens/s of GPT-2 at 854.8 MFLOP/token on an A100: 85.5 TFLOP/s of 312
    assert mfu(854_770_176, 1e5, 312e12) == pytest.approx(0.27397, abs=1e-5)


# ---- the packed GPT: K members as one module with stacked parameters

def stacked_members(seeds, config):
    from trainables.batched import StackedModel

    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(GPT(config))
    stacked = StackedModel([copy.deepcopy(m) for m in members])
    return members, stacked


@pytest.mark.parametrize("shared", [False, True])
def test_stacked_gpt_computes_each_members_own_loss_and_gradients(shared):
    from torch.func import functional_call

    config = model_config("gpt-nano", block_size=16, vocab_size=64)
    members, stacked = stacked_members([0, 1, 2], config)
    state = torch.get_rng_state()
    net = StackedGPT(config, 3)
    assert torch.equal(torch.get_rng_state(), state)  # built on the meta device: no draws, no tensors
    assert all(p.is_meta for p in net.parameters())
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(0, 64, (4, 16) if shared else (3, 4, 16), generator=gen)
    y = torch.randint(0, 64, x.shape, generator=gen)
    _, loss = functional_call(net, stacked.params, (x, y))
    assert loss.shape == (3,)
    loss.sum().backward()
    for k, member in enumerate(members):
        _, own = member(x if shared else x[k], y if shared else y[k])
        own.backward()
        torch.testing.assert_close(loss[k], own, rtol=1e-6, atol=0)
        for name, p in member.named_parameters():
            torch.testing.assert_close(stacked.params[name].grad[k], p.grad, rtol=1e-5, atol=1e-7)


def test_stacked_layers_by_hand():
    linear = StackedLinear(2, 2, 1, bias=True)
    embedding = StackedEmbedding(2, 3, 1)
    norm = StackedLayerNorm(2, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]]))  # member 0: x·(1, 2) + 1; member 1: x·(3, 4)
        linear.bias.copy_(torch.tensor([[1.0], [0.0]]))
        embedding.weight.copy_(torch.tensor([[[0.0], [1.0], [2.0]], [[10.0], [11.0], [12.0]]]))
        norm.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 3.0]]))
    rows = torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0], [2.0, 0.0]])  # two rows per member
    assert linear(rows).tolist() == [[4.0], [3.0], [7.0], [6.0]]
    assert embedding(torch.tensor([[0, 2], [1, 1]])).squeeze(-1).tolist() == [[0.0, 2.0], [11.0, 11.0]]
    assert embedding(torch.tensor([[2, 0]])).squeeze(-1).tolist() == [[2.0, 0.0], [12.0, 10.0]]  # shared indices
    # each row normalised to (-1, 1) (up to the 1e-5 epsilon), then scaled by its member's gains
    torch.testing.assert_close(norm(torch.tensor([[0.0, 2.0], [5.0, 3.0]])), torch.tensor([[-1.0, 1.0], [2.0, -3.0]]),
                               rtol=1e-4, atol=0)


def test_stacked_gpt_attention_is_one_fused_kernel_over_the_pack():
    from torch.func import functional_call
    from torch.profiler import profile

    config = model_config("gpt-nano", block_size=16, vocab_size=64)
    _, stacked = stacked_members([0, 1, 2, 3], config)
    net = StackedGPT(config, 4)
    x = torch.randint(0, 64, (5, 16))
    with profile(record_shapes=True) as prof:
        functional_call(net, stacked.params, (x, x))
    attention = [e for e in prof.events() if e.name == "aten::_scaled_dot_product_flash_attention_for_cpu"]
    if not attention:
        pytest.skip("this torch has no CPU flash attention kernel")
    # one call per layer for the whole pack, on its K·B = 20 sequences: (K·B, heads, T, head size)
    shape = [20, config.n_head, 16, config.n_embd // config.n_head]
    assert [e.input_shapes[0] for e in attention] == [shape] * config.n_layer
