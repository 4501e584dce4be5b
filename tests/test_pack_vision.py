"""The packed vision trainable: each member reports what its own unpacked run reports."""

import math

import pytest
import torch

from tests.conftest import assert_same_reports as same_reports
from tests.test_vision import TINY, write_fake_cifar
from trainables.packing import BarePackSession
from trainables.session import BareSession
from trainables.vision.data import DeviceBatches
from trainables.vision.packed import member_batches
from trainables.vision.packed import run as run_packed
from trainables.vision.train import derived_generator, run

TIMING = ("samples_per_s",)
# Float32 sums in another order (grouped convolutions, batched reductions) differ in the last
# bits; with these moderate learning rates members stay within 1e-6 of their own runs (measured
# 5e-7), Tr(H) and the fine-tuning branches included. Large-LR momentum SGD amplifies such
# differences (LR 0.1, momentum 0.9 reached 1e-4 in 4 epochs), so the test keeps LR <= 0.05.
RTOL = 1e-5

# every measurement of the vision contract, over 4 epochs of 8 steps
BASE = {**{k: v for k, v in TINY.items() if k not in ("lr", "weight_decay")}, "epochs": 4, "decay_epoch": 3,
        "hessian_every": 2, "finetune_every": 2, "finetune_epochs": 1}


def unpacked(config):
    session = BareSession()
    run(config, session)
    return session


def packed(configs, restore=None):
    session = BarePackSession(len(configs), restore=restore)
    run_packed(configs, session)
    return session


def assert_same_reports(expected, got, rtol=RTOL):
    same_reports(expected, got, rtol=rtol, skip=TIMING, where="epoch")


def test_a_pack_of_four_reports_what_four_separate_runs_report():
    configs = [{**BASE, "lr": 0.05, "weight_decay": 0.0, "seed": 0, "momentum": 0.9},
               {**BASE, "lr": 0.02, "weight_decay": 1e-3, "seed": 1, "momentum": 0.9, "finetune_lr": 0.005},
               {**BASE, "lr": 0.03, "weight_decay": 5e-3, "seed": 0, "momentum": 0.0},
               {**BASE, "lr": 0.05, "weight_decay": 1e-3, "seed": 2, "momentum": 0.5, "schedule": "cosine"}]
    pack = packed(configs)
    for config, member in zip(configs, pack.members):
        alone = unpacked(config)
        assert member.status == alone.status == "finished"
        assert [r["epoch"] for r in member.reports] == [1, 2, 3, 4]
        assert {"hessian_trace", "finetune_hessian_trace", "ema_test_error"} <= set(member.reports[1])
        assert_same_reports(alone.reports, member.reports)
    assert len({m.reports[-1]["test_loss"] for m in pack.members}) == 4


@pytest.mark.parametrize("extra", [
    {"projection": "per_group", "projection_every": "step", "train_eval": "full", "eval_every": 2},
    {"projection": "global", "projection_every": "epoch", "weight_decay_mode": "decoupled", "decay_params": "weights",
     "warmup_epochs": 1, "ema_decay": 0.0, "hessian_every": 0, "finetune_every": 0},
])
def test_projections_and_other_protocols_match_their_runs(extra):
    configs = [{**BASE, **extra, "lr": lr, "weight_decay": wd, "seed": seed}
               for lr, wd, seed in ((0.05, 1e-3, 0), (0.02, 0.0, 1))]
    pack = packed(configs)
    for config, member in zip(configs, pack.members):
        assert_same_reports(unpacked(config).reports, member.reports)


def test_image_models_with_batchnorm_gains_and_augmentation_match_their_runs(tmp_path):
    write_fake_cifar(str(tmp_path), n_per_batch=8)
    common = {"dataset": "cifar10", "data_dir": str(tmp_path), "width": 4, "batch_size": 8, "eval_batch_size": 40,
              "epochs": 2, "hessian_every": 1, "hessian_probes": 2, "hessian_samples": 20, "hessian_batch": 10,
              "threads": 1, "augment": True, "momentum": 0.9}
    # A pre-activation ResNet (BatchNorm with gains and shifts) whose members share a seed (one
    # input batch for all), and a VGG whose members have their own batches and augmentations.
    # (Width-4 ResNets on 40 random images are ill-conditioned: e.g. LR 0.02 with seed 1 differs by
    # 5e-4 between its own runs on 1 and 2 threads; these configs are not.)
    for extra, members in (({"model": "preact-resnet18"}, ((0.01, 1e-3, 0), (0.005, 0.0, 0))),
                           ({"model": "vgg11", "weight_decay_mode": "decoupled"}, ((0.01, 1e-3, 0), (0.005, 5e-3, 1)))):
        configs = [{**common, **extra, "lr": lr, "weight_decay": wd, "seed": seed} for lr, wd, seed in members]
        pack = packed(configs)
        for config, member in zip(configs, pack.members):
            assert member.status == "finished"
            assert_same_reports(unpacked(config).reports, member.reports)


def test_each_member_draws_the_batches_and_augmentations_of_its_own_seed():
    x = torch.randn(40, 3, 8, 8)
    y = torch.arange(40) % 10
    template = DeviceBatches(x, y, 8, device=torch.device("cpu"), shuffle=True, drop_last=True, augment=True,
                             generator=derived_generator(torch.device("cpu"), 0))
    seeds = [3, 5, 3]
    batches = member_batches(template, seeds, lambda seed: derived_generator(torch.device("cpu"), seed))
    own = {seed: DeviceBatches(x, y, 8, device=torch.device("cpu"), shuffle=True, drop_last=True, augment=True,
                               generator=derived_generator(torch.device("cpu"), seed)) for seed in (3, 5)}
    for epoch in range(2):
        walks = {seed: list(b.epoch()) for seed, b in own.items()}
        stacked = list(batches.epoch())
        assert len(stacked) == len(walks[3]) == 5
        for i, (xs, ys) in enumerate(stacked):
            for k, seed in enumerate(seeds):
                assert torch.equal(xs[k], walks[seed][i][0]) and torch.equal(ys[k], walks[seed][i][1])
    assert member_batches(template, [7, 7], lambda seed: derived_generator(torch.device("cpu"), seed)).shared


def test_the_batched_hessian_trace_equals_each_members_own():
    """Tr(H) of all members in one double backward (what a GPU runs) against the unpacked estimate
    of each member: the same probes from each member's generator, the same stopping rule."""
    from trainables.batched import StackedModel
    from trainables.models.cnn import CNN1dConfig, ScaleInvariantCNN1d
    from trainables.vision.packed import hessian_trace as batched_trace
    from trainables.vision.train import hessian_trace as single_trace

    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        module = ScaleInvariantCNN1d(CNN1dConfig(width=8))
        module(torch.randn(64, 1, 40))  # running statistics of its own
        members.append(module)
    x, y = torch.randn(100, 1, 40), torch.arange(100) % 10
    batches = DeviceBatches(x, y, 50, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    for tol in (0.0, 0.2):  # all probes, and a tolerance at which members stop at different counts
        traces, used = batched_trace(StackedModel(members), batches, probes=6, tol=tol,
                                     generators=[derived_generator(cpu, seed, 9) for seed in range(3)])
        for seed, module in enumerate(members):
            expected, count = single_trace(module, batches, probes=6, tol=tol, generator=derived_generator(cpu, seed, 9))
            assert used[seed] == count
            assert traces[seed] == pytest.approx(expected, rel=1e-5)
        if tol:
            assert len(set(used)) > 1, used
    # a diverged member (NaN weights, masked out) gets NaN from no probes; the others are as before
    stacked = StackedModel(members)
    with torch.no_grad():
        next(iter(stacked.params.values()))[1] = math.nan
    masked, count = batched_trace(stacked, batches, probes=6, tol=0.2, active=[True, False, True],
                                  generators=[derived_generator(cpu, seed, 9) for seed in range(3)])
    assert math.isnan(masked[1]) and count[1] == 0
    assert [masked[0], masked[2]] == [traces[0], traces[2]] and [count[0], count[2]] == [used[0], used[2]]


def test_a_diverging_member_ends_diverged_and_the_others_are_unchanged():
    # Two epochs, no Tr(H): once a member is masked the others' float sums round differently
    # (1.1e-5 relative after two epochs on the CI machine's OpenBLAS, 5e-7 elsewhere), which
    # large-LR SGD then amplifies epoch by epoch (4e-4 by epoch 3) and which can flip
    # Hutchinson's stopping rule to another probe count (a 2 % different Tr(H)). Tr(H) of packed
    # members against their own runs is tested above without a diverging member.
    base = {**BASE, "epochs": 2, "decay_epoch": 1, "hessian_probes": 0}
    configs = [{**base, "lr": 0.05, "weight_decay": 1e-3, "seed": 0}, {**base, "lr": 1e30, "weight_decay": 1e-3, "seed": 0},
               {**base, "lr": 0.02, "weight_decay": 0.0, "seed": 1}]
    pack = packed(configs)
    exploding = unpacked(configs[1])
    assert exploding.status == pack.members[1].status == "diverged"
    assert len(pack.members[1].reports) == 1 and 1 <= pack.members[1].reports[0]["diverged_step"] <= 8
    assert_same_reports(exploding.reports, pack.members[1].reports)  # its step and last finite loss too
    for k in (0, 2):
        assert pack.members[k].status == "finished"
        assert_same_reports(unpacked(configs[k]).reports, pack.members[k].reports, rtol=1e-4)


def test_resume_from_a_mid_run_checkpoint_is_bit_for_bit():
    configs = [{**BASE, "lr": lr, "weight_decay": 1e-3, "seed": seed, "checkpoint_every": 1,
                "projection": "per_group", "projection_every": "step"} for lr, seed in ((0.05, 0), (0.02, 1))]
    full = packed(configs)
    assert len(full.states) == 4 and full.states[1]["trainable"]["epoch"] == 2
    resumed = packed(configs, restore=full.states[1])
    drop = lambda reports: [{k: v for k, v in r.items() if k not in TIMING} for r in reports]  # noqa: E731
    for whole, rest in zip(full.members, resumed.members):
        assert drop(rest.reports) == drop(whole.reports[2:])  # exactly
        assert rest.status == "finished"
