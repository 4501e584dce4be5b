"""The batched machinery of packed trials against torch's own modules and optimisers, member by member."""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.batched import (BatchedAdamW, BatchedSGD, StackedModel, clip_member_grads,
                                member_norms, update_norm_stats)
from trainables.models.cnn import CNN1dConfig, ScaleInvariantCNN1d
from trainables.models.gpt import GPT, model_config
from trainables.vision.optim import SGDW

# Float32 arithmetic in another order (batched kernels, torch's fused/foreach optimiser kernels)
# differs in the last bits: 1e-6 relative after a few steps.
RTOL, ATOL = 1e-5, 1e-6


def members(make, seeds):
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(make())
    return out


def cnn():
    return ScaleInvariantCNN1d(CNN1dConfig(width=8))


def test_stacked_forward_and_gradients_equal_each_members_own():
    modules = members(cnn, [0, 1, 2])
    stacked = StackedModel(copy.deepcopy(modules))
    x = torch.randn(3, 16, 1, 40)  # each member its own batch
    y = torch.randint(0, 10, (3, 16))
    loss = stacked(x, y, fn=lambda call, xs, ys: F.cross_entropy(call(xs), ys))
    loss.sum().backward()
    for k, module in enumerate(modules):
        own = F.cross_entropy(module(x[k]), y[k])
        own.backward()
        assert loss[k].item() == pytest.approx(own.item(), rel=RTOL)
        for name, p in module.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(stacked.params[name].grad[k], p.grad, rtol=RTOL, atol=ATOL)
            else:  # the frozen head stays frozen
                assert stacked.params[name].grad is None
    shared = stacked(x[0], shared=True)  # every member on the same input
    assert shared.shape == (3, 16, 10)
    torch.testing.assert_close(shared[2], modules[2](x[0]), rtol=RTOL, atol=ATOL)


def test_batchnorm_running_statistics_are_per_member():
    """The stacked buffers go through functional_call; vmap's BatchNorm rule keeps each member's
    statistics: after train-mode steps every member's running mean/var/count are its own module's."""
    modules = members(cnn, [0, 1])
    stacked = StackedModel(copy.deepcopy(modules))
    for step in range(3):
        x = torch.randn(2, 32, 1, 40) * (1 + step)  # members see different batches
        stacked(x)
        for k, module in enumerate(modules):
            module(x[k])
    for k, module in enumerate(modules):
        for name, buffer in module.named_buffers():
            torch.testing.assert_close(stacked.buffers[name][k], buffer, rtol=RTOL, atol=ATOL)
    assert stacked.buffers["norms.0.num_batches_tracked"].tolist() == [3, 3]
    # eval mode normalises with each member's own running statistics
    stacked.eval()
    x = torch.randn(8, 1, 40)
    for k, module in enumerate(modules):
        torch.testing.assert_close(stacked(x, shared=True)[k], module.eval()(x), rtol=RTOL, atol=ATOL)
    # and a member materialises as an ordinary module with its own buffers
    twin = stacked.member(1).eval()
    torch.testing.assert_close(twin(x), modules[1](x), rtol=RTOL, atol=ATOL)


def test_recomputed_norm_statistics_equal_update_bn_per_member():
    modules = members(cnn, [3, 4])
    for module in modules:  # statistics to be thrown away
        module(torch.randn(16, 1, 40) * 5)
    stacked = StackedModel(copy.deepcopy(modules))
    batches = [torch.randn(16, 1, 40) for _ in range(4)]
    update_norm_stats(stacked, batches)
    for k, module in enumerate(modules):
        torch.optim.swa_utils.update_bn(batches, module)
        for name, buffer in module.named_buffers():
            torch.testing.assert_close(stacked.buffers[name][k], buffer, rtol=RTOL, atol=ATOL)
        assert module.norms[0].momentum == 0.1 and stacked.base.norms[0].momentum == 0.1  # restored


def test_tied_weights_stay_one_stacked_tensor():
    make = lambda: GPT(model_config("gpt-nano", block_size=8, vocab_size=32))  # noqa: E731
    modules = members(make, [0, 1])
    stacked = StackedModel(copy.deepcopy(modules))
    assert stacked.aliases == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in stacked.params
    x = torch.randint(0, 32, (2, 4, 8))
    loss = stacked(x, x, fn=lambda call, a, b: call(a, b)[1])
    loss.sum().backward()
    for k, module in enumerate(modules):
        module(x[k], x[k])[1].backward()
        # the embedding and the head both contribute to the one tied gradient
        torch.testing.assert_close(stacked.params["transformer.wte.weight"].grad[k], module.lm_head.weight.grad,
                                   rtol=RTOL, atol=ATOL)
    state = stacked.member_state_dict(0)
    assert torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])


def test_member_norms_and_clipping_equal_torch_per_member():
    tensors = [torch.randn(3, 5, 4), torch.randn(3, 7)]
    for k in range(3):
        expected = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([t[k] for t in tensors])))
        assert member_norms(tensors)[k].item() == pytest.approx(expected.item(), rel=1e-6)
    params = [t.clone().requires_grad_() for t in tensors]
    for p in params:
        p.grad = p.detach() * 10
    singles = [[p.detach()[k].clone().requires_grad_() for p in params] for k in range(3)]
    for k, single in enumerate(singles):
        for s, p in zip(single, params):
            s.grad = p.grad[k].clone()
    norms = clip_member_grads(params, max_norm=1.0)
    for k, single in enumerate(singles):
        norm = torch.nn.utils.clip_grad_norm_(single, 1.0)
        assert norms[k].item() == pytest.approx(norm.item(), rel=1e-6)
        for s, p in zip(single, params):
            torch.testing.assert_close(p.grad[k], s.grad)


def stacked_params(seed, count, shapes):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(count, *shape, generator=gen) for shape in shapes]


def run_both(make_torch, make_batched, step_batched, steps=5, members_count=2, shapes=((3, 4), (5,)), grads=None):
    """Drive a torch optimiser per member and the batched one on the same gradients."""
    start = stacked_params(0, members_count, shapes)
    batched = [nn.Parameter(t.clone()) for t in start]
    singles = [[nn.Parameter(t[k].clone()) for t in start] for k in range(members_count)]
    torch_opts = [make_torch(k, singles[k]) for k in range(members_count)]
    opt = make_batched(batched)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        g = [torch.randn(t.shape, generator=gen) for t in start] if grads is None else grads(step)
        for p, gp in zip(batched, g):
            p.grad = gp.clone()
        for k in range(members_count):
            for p, gp in zip(singles[k], g):
                p.grad = gp[k].clone()
            torch_opts[k].step()
        step_batched(opt, step)
    return batched, singles


@pytest.mark.parametrize("kernel", ["single", "foreach", "fused"])  # the LM trainable uses fused where it can
def test_batched_adamw_equals_torch_adamw_per_member(kernel):
    lr, wd, b1, b2, eps = [1e-2, 3e-3], [0.1, 0.0], [0.9, 0.8], [0.95, 0.999], [1e-8, 1e-6]
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731

    def make_torch(k, params):
        return torch.optim.AdamW([{"params": params[:1], "weight_decay": wd[k]}, {"params": params[1:], "weight_decay": 0.0}],
                                 lr=lr[k], betas=(b1[k], b2[k]), eps=eps[k], foreach=kernel == "foreach",
                                 fused=kernel == "fused" or None)

    batched, singles = run_both(
        make_torch,
        lambda ps: BatchedAdamW([(ps[:1], True), (ps[1:], False)], betas=(t(b1), t(b2)), eps=t(eps)),
        lambda opt, step: opt.step(t(lr), t(wd)))
    for k in range(2):
        for p, s in zip(batched, singles[k]):
            torch.testing.assert_close(p.detach()[k], s.detach(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["l2", "decoupled"])
def test_batched_sgd_equals_torch_sgd_per_member(mode):
    lr, wd, momentum = [0.1, 0.03, 0.05], [1e-3, 0.0, 5e-3], [0.9, 0.0, 0.5]  # a member without momentum too
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731

    def make_torch(k, params):
        groups = [{"params": params[:1], "weight_decay": wd[k]}, {"params": params[1:], "weight_decay": 0.0}]
        if mode == "l2":
            return torch.optim.SGD(groups, lr=lr[k], momentum=momentum[k])
        return SGDW(groups, lr=lr[k], momentum=momentum[k])

    start_lr = t(lr)

    def step(opt, i):  # a schedule: the LR halves after two steps
        opt.step(start_lr * (0.5 if i >= 2 else 1.0), t(wd))

    def make_torch_scheduled(k, params):
        opt = make_torch(k, params)
        original = opt.step

        def scheduled(closure=None):
            scheduled.calls += 1
            for group in opt.param_groups:
                group["lr"] = lr[k] * (0.5 if scheduled.calls > 2 else 1.0)
            return original(closure)
        scheduled.calls = 0
        opt.step = scheduled
        return opt

    batched, singles = run_both(
        make_torch_scheduled,
        lambda ps: BatchedSGD([(ps[:1], True), (ps[1:], False)], momentum=t(momentum), mode=mode),
        step, members_count=3)
    for k in range(3):
        for p, s in zip(batched, singles[k]):
            torch.testing.assert_close(p.detach()[k], s.detach(), rtol=RTOL, atol=ATOL)


def test_a_masked_member_stays_frozen_and_its_nan_never_reaches_the_others():
    params = [nn.Parameter(torch.ones(3, 4))]
    opt = BatchedSGD([(params, True)], momentum=torch.tensor([0.9, 0.9, 0.9], dtype=torch.float64))
    grad = torch.ones(3, 4)
    grad[1] = math.nan  # member 1 diverged
    params[0].grad = grad
    active = torch.tensor([True, False, True])
    before = params[0].detach().clone()
    opt.step(torch.full((3,), 0.1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), active)
    after = params[0].detach()
    assert torch.equal(after[1], before[1]) and torch.isfinite(after).all()
    assert torch.equal(opt.buffers[id(params[0])][1], torch.zeros(4))
    torch.testing.assert_close(after[0], torch.full((4,), 0.9))

    adam_params = [nn.Parameter(torch.ones(2, 3))]
    adam = BatchedAdamW([(adam_params, True)], betas=(torch.full((2,), 0.9), torch.full((2,), 0.99)),
                        eps=torch.full((2,), 1e-8))
    adam_params[0].grad = torch.tensor([[1.0, 1.0, 1.0], [math.inf, 1.0, 1.0]])
    adam.step(torch.full((2,), 0.1), torch.full((2,), 0.1), torch.tensor([True, False]))
    assert adam.steps.tolist() == [1.0, 0.0]  # the masked member's bias correction does not advance
    assert torch.equal(adam_params[0].detach()[1], torch.ones(3))
    assert torch.isfinite(adam.state[id(adam_params[0])]["exp_avg_sq"]).all()


def test_fused_batched_adamw_is_bit_for_bit_torchs_fused_adamw_per_member():
    # members with their own LR (halved after two steps), decay, betas and epsilon
    lr, wd, b1, b2, eps = [1e-2, 3e-3, 6e-3], [0.1, 0.0, 0.3], [0.9, 0.8, 0.9], [0.95, 0.999, 0.99], [1e-8, 1e-6, 1e-8]
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731

    def make_torch(k, params):
        opt = torch.optim.AdamW([{"params": params[:1], "weight_decay": wd[k]}, {"params": params[1:], "weight_decay": 0.0}],
                                lr=lr[k], betas=(b1[k], b2[k]), eps=eps[k], fused=True)
        done = []

        def halve_after_two(opt, args, kwargs):
            done.append(1)
            for group in opt.param_groups:
                group["lr"] = lr[k] * (0.5 if len(done) >= 2 else 1.0)
        opt.register_step_post_hook(halve_after_two)
        return opt

    batched, singles = run_both(
        make_torch,
        lambda ps: BatchedAdamW([(ps[:1], True), (ps[1:], False)], betas=(t(b1), t(b2)), eps=t(eps), fused=True),
        lambda opt, step: opt.step(t(lr) * (0.5 if step >= 2 else 1.0), t(wd)), members_count=3)
    for k in range(3):
        for p, s in zip(batched, singles[k]):
            assert torch.equal(p.detach()[k], s.detach())


def test_fused_batched_adamw_freezes_a_masked_member():
    params = [nn.Parameter(torch.ones(2, 3))]
    adam = BatchedAdamW([(params, True)], betas=(torch.full((2,), 0.9), torch.full((2,), 0.99)),
                        eps=torch.full((2,), 1e-8), fused=True)
    params[0].grad = torch.tensor([[1.0, 1.0, 1.0], [math.inf, 1.0, 1.0]])
    adam.step(torch.full((2,), 0.1), torch.full((2,), 0.1), [True, False])
    assert adam.steps.tolist() == [1.0, 0.0]
    assert torch.equal(params[0].detach()[1], torch.ones(3))
    assert torch.equal(adam.state[id(params[0])]["exp_avg_sq"][1], torch.zeros(3))
    # member 0: decayed by 1 − 0.1·0.1, then Adam's first step, lr·sign(g): 0.99 − 0.1
    torch.testing.assert_close(params[0].detach()[0], torch.full((3,), 0.89))
