"""Small pure pieces checked against hand-computed values."""

import math

import pytest

from trainables.divergence import DivergenceDetector
from trainables.schedules import lr_at


def test_cosine_with_warmup():
    kw = dict(schedule="cosine", lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == 0.5
    assert lr_at(10, **kw) == 1.0
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_at(35, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)


def test_constant_and_step():
    assert lr_at(3, schedule="constant", lr=0.2, total_steps=10, warmup_steps=4) == pytest.approx(0.15)
    assert lr_at(9, schedule="constant", lr=0.2, total_steps=10, warmup_steps=4) == 0.2
    kw = dict(schedule="step", lr=0.1, total_steps=100, decay_step=50, decay_lr=1e-4)
    assert lr_at(49, **kw) == 0.1 and lr_at(50, **kw) == 1e-4


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(0, schedule="linear", lr=1, total_steps=1)


def test_divergence_detector():
    d = DivergenceDetector(ratio=2.0)
    assert not d.check(5.0, 1) and not d.check(3.0, 2) and not d.check(5.9, 3)
    assert d.check(6.1, 4) and d.step == 4
    d = DivergenceDetector()
    assert not d.check(2.0, 1)
    assert d.check(float("nan"), 2) and d.step == 2 and d.last_finite_loss == 2.0


def test_probe_is_deterministic_resumable_and_diverges():
    from trainables.probe import run
    from trainables.session import BareSession

    config = {"lr": 0.1, "steps": 10, "checkpoint_every": 2, "seed": 4}
    full = BareSession()
    run(config, full)
    assert full.status == "finished" and [r["step"] for r in full.reports] == list(range(1, 11))
    again = BareSession()
    run(config, again)
    assert again.reports == full.reports
    resumed = BareSession(restore=full.states[1])  # the checkpoint after step 4
    run(config, resumed)
    assert resumed.reports == full.reports[4:]

    blown = BareSession()
    run({"lr": 3.0, "steps": 50, "divergence_ratio": 100.0}, blown)  # lr * a = 3 > 2
    assert blown.status == "diverged" and blown.reports[-1]["diverged_step"] < 50


def test_member_schedules_table_equals_lr_at_for_every_member_and_step():
    import torch

    from trainables.schedules import MemberSchedules

    members = [dict(schedule="cosine", lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1),
               dict(schedule="step", lr=0.3, total_steps=110, decay_step=50, decay_lr=1e-4, warmup_steps=5),
               dict(schedule="constant", lr=0.2, total_steps=110, warmup_steps=4),
               dict(schedule="step", lr=0.1, total_steps=110, decay_step=80, decay_lr=0.01)]
    schedules = MemberSchedules(members)
    table = schedules.table(3, 120, torch.device("cpu"))
    assert table.shape == (120, 4) and table.dtype == torch.float64
    # bit for bit: the same float64 operations in the same order (torch.cos against math.cos here too)
    assert table.tolist() == [schedules.at(step) for step in range(3, 123)]
    with pytest.raises(ValueError, match="unknown schedule"):
        MemberSchedules([dict(schedule="linear", lr=1, total_steps=1)])
