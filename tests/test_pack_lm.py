"""The packed LM trainable: each member reports what its own unpacked run reports."""

import pytest
import torch

from tests.conftest import NANO_LM
from tests.conftest import assert_same_reports as same_reports
from trainables.lm.packed import run as run_packed
from trainables.lm.train import run
from trainables.packing import BarePackSession
from trainables.session import BareSession

# Wall-clock metrics differ between any two runs.
TIMING = ("tokens_per_s", "mfu")
# Float32 arithmetic in another order (batched matmuls, the composite attention kernel, torch's
# fused AdamW vs ours) differs in the last bits; over these few steps members stay within 1e-5
# (measured: 4e-6 at most).
RTOL = 1e-5

BASE = {**NANO_LM, "steps": 8, "eval_every": 2, "warmup_steps": 2}


def unpacked(config):
    session = BareSession()
    run(config, session)
    return session


def packed(configs, restore=None):
    session = BarePackSession(len(configs), restore=restore)
    run_packed(configs, session)
    return session


def assert_same_reports(expected, got, rtol=RTOL):
    same_reports(expected, got, rtol=rtol, skip=TIMING, where="step")


def test_a_pack_of_four_reports_what_four_separate_runs_report():
    configs = [{**BASE, "lr": 6e-3, "weight_decay": 0.0, "seed": 0, "schedule": "cosine"},
               {**BASE, "lr": 1e-2, "weight_decay": 0.1, "seed": 1, "schedule": "constant"},
               {**BASE, "lr": 3e-3, "weight_decay": 0.3, "seed": 0, "schedule": "cosine", "beta2": 0.99},
               {**BASE, "lr": 6e-3, "weight_decay": 0.1, "seed": 2, "schedule": "cosine", "warmup_steps": 4}]
    pack = packed(configs)
    for config, member in zip(configs, pack.members):
        alone = unpacked(config)
        assert member.status == alone.status == "finished"
        assert_same_reports(alone.reports, member.reports)
    # members really differ (not one run copied four times)
    finals = [m.reports[-1]["val_loss"] for m in pack.members]
    assert len(set(finals)) == 4


def test_members_sharing_a_seed_share_their_batches_and_match_their_runs():
    configs = [{**BASE, "lr": lr, "weight_decay": 0.1, "seed": 3} for lr in (3e-3, 1e-2)]
    pack = packed(configs)
    for config, member in zip(configs, pack.members):
        assert_same_reports(unpacked(config).reports, member.reports)


def test_a_diverging_member_ends_diverged_and_the_others_are_unchanged():
    base = {**BASE, "steps": 20, "eval_every": 2, "grad_clip": 0.0}
    configs = [{**base, "lr": 6e-3, "seed": 0}, {**base, "lr": 1000.0, "seed": 0}, {**base, "lr": 3e-3, "seed": 1}]
    pack = packed(configs)
    exploding = unpacked(configs[1])
    assert exploding.status == "diverged"
    member = pack.members[1]
    assert member.status == "diverged"
    assert member.reports[-1]["diverged_step"] == exploding.reports[-1]["diverged_step"] < 20
    assert len(member.reports) == len(exploding.reports)
    for k in (0, 2):
        assert pack.members[k].status == "finished"
        assert_same_reports(unpacked(configs[k]).reports, pack.members[k].reports)


def test_resume_from_a_mid_run_checkpoint_is_bit_for_bit():
    configs = [{**BASE, "lr": 6e-3, "weight_decay": 0.1, "seed": 0, "checkpoint_every": 1},
               {**BASE, "lr": 1e-2, "weight_decay": 0.0, "seed": 1, "checkpoint_every": 1}]
    full = packed(configs)
    assert len(full.states) == 4 and full.states[1]["trainable"]["step"] == 4
    assert full.states[1]["member_reports"] == [2, 2]
    resumed = packed(configs, restore=full.states[1])
    for whole, rest in zip(full.members, resumed.members):
        drop = lambda reports: [{k: v for k, v in r.items() if k not in TIMING} for r in reports]  # noqa: E731
        assert drop(rest.reports) == drop(whole.reports[2:])  # exactly
        assert rest.status == "finished"
    assert resumed.member_reports == [4, 4]


def test_a_checkpoint_after_a_divergence_keeps_the_member_masked():
    # a patience of 2 steps: the blow-up from step 4 is a divergence at step 6, mid-run
    base = {**BASE, "steps": 12, "grad_clip": 0.0, "checkpoint_every": 1, "divergence_patience": 2}
    configs = [{**base, "lr": 1000.0, "seed": 0}, {**base, "lr": 6e-3, "seed": 0}]
    full = packed(configs)
    assert full.members[0].status == "diverged"
    after = next(s for s in full.states if not all(s["trainable"]["active"]))
    resumed = packed(configs, restore=after)
    assert resumed.members[0].reports == []  # it does not report again
    assert resumed.members[1].status == "finished"


def test_members_that_differ_outside_the_packable_axes_are_refused():
    with pytest.raises(ValueError, match="differ in 'context'"):
        packed([{**BASE, "context": 16}, {**BASE, "context": 8}])
    with pytest.raises(ValueError, match="cannot run packed"):
        packed([{**BASE, "precision": "bf16"}])


def test_bf16_autocast_members_match_their_runs():
    configs = [{**BASE, "precision": "bf16-autocast", "lr": lr, "seed": 0} for lr in (3e-3, 6e-3)]
    pack = packed(configs)
    for config, member in zip(configs, pack.members):
        # bfloat16 matmuls keep 8 bits: the batched and the single kernels round differently
        assert_same_reports(unpacked(config).reports, member.reports, rtol=2e-2)
    assert torch.get_default_dtype() == torch.float32
