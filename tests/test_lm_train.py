"""The LM training loop through BareSession: metrics, determinism, resume, divergence, precisions."""

import math

import pytest
import torch

from tests.conftest import NANO_LM
from trainables import get_trainable
from trainables.lm.train import run
from trainables.session import BareSession

TIMING = ("tokens_per_s", "mfu")  # wall-clock metrics differ between two identical runs


def train(**overrides):
    session = BareSession(restore=overrides.pop("restore", None))
    run({**NANO_LM, **overrides}, session)
    return session


def without_timing(reports):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in reports]


def test_reports_every_metric_at_every_eval_point():
    session = train(weight_decay=0.1, batch_tokens=2 * 4 * 16)  # 2 micro-batches per step
    assert session.status == "finished"
    assert [r["step"] for r in session.reports] == [2, 4, 6]
    assert [r["tokens"] for r in session.reports] == [2 * 128, 4 * 128, 6 * 128]
    # mfu: GPU only; the divergence pair and the last spike's step and peak: only when there is one
    expected = set(get_trainable("lm").metrics) - {"mfu", "diverged_step", "last_finite_loss", "last_spike_step",
                                                   "last_spike_peak"}
    for report in session.reports:
        assert set(report) == expected
        assert all(math.isfinite(v) for v in report.values())
    assert [r["loss_spikes"] for r in session.reports] == [0, 0, 0]
    last = session.reports[-1]
    assert last["decay_applied_fraction"] == 1.0  # float32 weights: every decay step lands
    assert last["decayed_tensors"] == 10 and last["decayed_params"] == 256 * 32 + 16 * 32 + 2 * 12 * 32 * 32
    assert session.reports[0]["train_loss"] == pytest.approx(math.log(256), abs=0.2)
    assert last["val_loss"] < session.reports[0]["val_loss"]


def test_same_seed_same_run_other_seed_other_run():
    a, b, c = train(), train(), train(seed=1)
    assert without_timing(a.reports) == without_timing(b.reports)
    assert a.reports[-1]["train_loss"] != c.reports[-1]["train_loss"]


def test_resume_from_a_mid_run_state_is_bit_for_bit():
    full = train(checkpoint_every=1, steps=8, weight_decay=0.1)
    assert len(full.states) == 4 and full.states[1]["step"] == 4
    resumed = train(checkpoint_every=1, steps=8, weight_decay=0.1, restore=full.states[1])
    assert without_timing(resumed.reports) == without_timing(full.reports[2:])
    assert resumed.status == "finished"


def test_an_exploding_lr_ends_diverged_when_its_blow_up_outlasts_the_patience():
    # a finite blow-up: the loss exceeds twice its running minimum at step 4 and stays there
    session = train(lr=1000.0, grad_clip=0.0, steps=20, divergence_patience=4)
    assert session.status == "diverged"
    assert [r["step"] for r in session.reports] == [2, 4, 6, 8]  # 4 steps after the blow-up's start
    last = session.reports[-1]
    assert last["diverged_step"] == 4 and last["loss_spikes"] == 0
    assert all(r["train_loss"] > 2 * session.reports[0]["train_loss"] for r in session.reports[1:])
    assert last["last_finite_loss"] == last["train_loss"]  # the last loss it saw, finite


def test_a_blow_up_open_at_the_end_of_the_run_is_a_divergence():
    session = train(lr=1000.0, grad_clip=0.0, steps=20)  # default patience 500 steps: longer than the run
    assert session.status == "diverged" and session.reports[-1]["step"] == 20
    assert session.reports[-1]["diverged_step"] == 4
    assert all(r["train_loss"] > 2 * session.reports[0]["train_loss"] for r in session.reports[1:])


def test_a_nan_loss_is_caught_at_its_own_step_between_reports():
    # SGD at LR 1e38 throws the weights to overflow: step 1's loss is finite, step 2's is not
    session = train(optimizer="sgd", lr=1e38, warmup_steps=0, grad_clip=0.0, eval_every=4, steps=8)
    assert session.status == "diverged" and len(session.reports) == 1
    last = session.reports[0]
    assert last["step"] == 4 and last["diverged_step"] == 2
    assert not math.isfinite(last["train_loss"]) and math.isnan(last["last_finite_loss"])


def test_pure_bf16_rounds_small_weight_decay_away_and_says_so():
    # lr * wd = 1e-3: below bfloat16's resolution, so the decay changes nothing (scale.md)
    with pytest.warns(UserWarning, match="changes only 0.0% of the decayed"):
        decayed = train(precision="bf16", lr=1e-2, weight_decay=0.1, warmup_steps=0)
    plain = train(precision="bf16", lr=1e-2, weight_decay=0.0, warmup_steps=0)
    assert [r["decay_applied_fraction"] for r in decayed.reports] == [0.0, 0.0, 0.0]
    assert [r["train_loss"] for r in decayed.reports] == [r["train_loss"] for r in plain.reports]
    assert "decay_applied_fraction" not in plain.reports[0]
    fp32 = train(precision="fp32", lr=1e-2, weight_decay=0.1, warmup_steps=0)
    assert [r["decay_applied_fraction"] for r in fp32.reports] == [1.0, 1.0, 1.0]


def test_bf16_autocast_keeps_float32_weights_and_tracks_fp32():
    fp32, mixed = train(), train(precision="bf16-autocast")
    assert mixed.status == "finished"
    for a, b in zip(fp32.reports, mixed.reports):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=0.05)
        assert b["train_loss"] != a["train_loss"]  # it really ran in bfloat16


def test_tail_continues_at_tiny_lr_without_decay():
    session = train(steps=4, tail_steps=2, tail_lr=1e-5, weight_decay=0.3)
    assert [(r["step"], r["lr"]) for r in session.reports][-1] == (6, 1e-5)
    assert "decay_applied_fraction" in session.reports[1] and "decay_applied_fraction" not in session.reports[2]


def test_ema_starts_at_the_initial_weights():
    slow = train(ema_decay=0.999999)  # an average that barely leaves the initial weights
    assert slow.reports[-1]["ema_val_loss"] == pytest.approx(math.log(256), abs=0.2)
    assert slow.reports[-1]["val_loss"] < slow.reports[-1]["ema_val_loss"]
    none = train(ema_decay=0.0)
    assert "ema_val_loss" not in none.reports[-1]


def test_arms_of_one_seed_see_the_same_batches():
    # step 1's loss is computed at the initial weights, so it is equal across arms iff the batch is
    a = train(weight_decay=0.0, steps=4, eval_every=1, warmup_steps=1)
    b = train(weight_decay=0.3, steps=4, eval_every=1, warmup_steps=1)
    assert a.reports[0]["train_loss"] == b.reports[0]["train_loss"]
    assert a.reports[-1]["train_loss"] != b.reports[-1]["train_loss"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mfu_on_gpu():
    session = train(device="cuda")
    assert 0 < session.reports[-1]["mfu"] < 1


def test_member_schedules_on_the_device_equal_each_members_host_schedule():
    from trainables.lm.config import LMConfig
    from trainables.lm.train import MemberHyperparameters, schedule_at
    from trainables.registry import build_config

    base = {"steps": 6, "warmup_steps": 2, "lr": 1.0, "min_lr_ratio": 0.1, "tail_steps": 2, "tail_lr": 1e-4}
    cfgs = [build_config(LMConfig, {**base, **own}) for own in (
        {"weight_decay": 0.3},
        {"schedule": "constant", "weight_decay": 0.1},
        {"warmup_steps": 0, "lr": 6e-3, "tail_lr": 3e-4},
        {"warmup_steps": 5, "min_lr_ratio": 0.0, "lr": 3e-3})]
    schedules = MemberHyperparameters(cfgs, torch.device("cpu"))
    for step in range(8):
        lrs, wds = schedules.at(step)
        assert lrs.dtype == wds.dtype == torch.float64 and lrs.shape == (4,)
        for k, c in enumerate(cfgs):
            lr, wd = schedule_at(c, step)
            assert lrs[k].item() == pytest.approx(lr, rel=1e-15, abs=0)
            assert wds[k].item() == wd
    # by hand, member 0 (warm-up 2 steps, cosine to 0.1 at step 6, tail 1e-4 without decay)
    by_hand = [0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 0.55,
               0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4)), 1e-4, 1e-4]
    assert [schedules.at(step)[0][0].item() for step in range(8)] == pytest.approx(by_hand, rel=1e-15)
    assert [schedules.at(step)[1][0].item() for step in range(8)] == [0.3] * 6 + [0.0] * 2
    assert [schedules.at(step)[0][1].item() for step in range(8)] == pytest.approx([0, 0.5, 1, 1, 1, 1, 1e-4, 1e-4])
