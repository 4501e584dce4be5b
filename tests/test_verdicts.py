"""The three-outcome decision rule and each claim check, on hand-made data with hand-computed numbers."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import verdicts
from analysis.stats import combine, decide, equivalent, seeds_to_decide, t_quantile
from tests.test_analysis_stores import LM_STEPS, write_lm_store, write_vision_store
from analysis.load import load_study

T2 = t_quantile(0.90, 2)  # 2.919986: the 90 % two-sided quantile with 2 degrees of freedom


def seeds(*values, start=0):
    return pd.Series(values, index=range(start, start + len(values)), dtype=float)


# ------------------------------------------------------------------ the decision rule

def test_decide_reads_the_90_percent_interval_against_delta():
    a, b = seeds(1.0, 1.2, 1.4), seeds(0.0, 0.0, 0.0)  # paired differences 1.0, 1.2, 1.4: mean 1.2, sd 0.2
    half = T2 * 0.2 / math.sqrt(3)
    d = decide(a, b, 0.5)
    assert d.outcome == "pass" and d.method == "paired" and d.n == 3
    assert (d.low, d.high) == pytest.approx((1.2 - half, 1.2 + half))
    assert decide(a, b, 2.0).outcome == "fail"  # the whole interval below δ
    undecided = decide(a, b, 1.0)  # [0.863, 1.537] straddles 1.0
    assert undecided.outcome == "inconclusive"
    # seeds that would decide: the least n with t(0.95, n-1)·0.2/√n < |1.2 − 1.0| — n = 5 (2.132/√5 = 0.953 < 1)
    assert undecided.seeds_needed == 5 and "≈5 seeds per arm would decide" in undecided.describe()
    # direction −1: "a is lower than b by δ"
    assert decide(b, a, 0.5, direction=-1).outcome == "pass"
    assert decide(a, b, 0.5, direction=-1).outcome == "fail"


def test_one_seed_never_passes_and_welch_for_unpaired_seeds():
    one = decide(seeds(5.0), seeds(0.0), 0.1)
    assert one.outcome == "inconclusive" and one.seeds_needed is None and "one seed never passes" in one.describe()
    # different seeds in each arm: Welch's interval (equal variances 0.01, n = 3: se = 0.0816, dof = 4)
    w = decide(seeds(1.1, 1.0, 0.9), seeds(0.1, 0.0, -0.1, start=10), 0.5)
    half = t_quantile(0.90, 4) * math.sqrt(0.01 / 3 + 0.01 / 3)
    assert w.method == "welch" and w.outcome == "pass" and (w.low, w.high) == pytest.approx((1 - half, 1 + half))


def test_a_margin_of_exactly_zero_without_spread_fails():
    same = seeds(0.3, 0.31, 0.32)
    d = decide(same, same, 0.0025)
    assert d.outcome == "fail" and (d.low, d.high) == (0.0, 0.0)


def test_equivalence_and_combination():
    inside = equivalent(seeds(0.001, -0.001, 0.002), seeds(0.0, 0.0, 0.0), 0.01)
    assert inside.outcome == "pass"
    outside = equivalent(seeds(0.05, 0.06, 0.055), seeds(0.0, 0.0, 0.0), 0.01)
    assert outside.outcome == "fail"
    assert equivalent(seeds(0.0, 0.02, 0.01), seeds(0.0, 0.0, 0.0), 0.01).outcome == "inconclusive"
    assert combine(["pass", "pass"]) == "pass" and combine(["pass", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "fail"]) == "fail" and combine(["not-applicable"]) == "not-applicable"
    assert seeds_to_decide(0.0, 0.1) == 2 and seeds_to_decide(1.0, 0.0) is None
    assert seeds_to_decide(0.2, 0.2) == 5


# ------------------------------------------------------------------ vision claims

def grid(value, *, lrs=(0.01, 0.1, 1.0), wds=(0.0,), seed_list=(0, 1, 2), metric="test_error", status=None):
    rows = []
    for lr in lrs:
        for wd in wds:
            for seed in seed_list:
                st = status(lr, wd, seed) if status else "finished"
                rows.append({"trial_id": f"t{len(rows)}", "status": st, "config/lr": lr, "config/weight_decay": wd,
                             "config/seed": seed, metric: value(lr, wd, seed) if st == "finished" else math.nan})
    return pd.DataFrame(rows)


def u_curve(lr, wd, seed):
    return 0.10 + 0.02 * math.log10(lr / 0.1) ** 2 + 0.001 * seed


def test_ushape_passes_on_a_u_and_fails_on_a_monotone_curve():
    v = verdicts.ushape(grid(u_curve))
    assert v.status == "pass" and v.numbers["argmin"] == 0.1
    assert v.numbers["margins"]["LR 0.01"] == pytest.approx(0.02)  # 0.02·log10(0.1)² above the minimum
    monotone = verdicts.ushape(grid(lambda lr, wd, s: 0.2 - 0.01 * math.log10(lr) + 0.001 * s))
    assert monotone.status == "fail" and "lowest mean is at the edge, LR 1" in monotone.reason


def test_ushape_with_one_seed_is_inconclusive_never_pass():
    v = verdicts.ushape(grid(u_curve, seed_list=(0,)))
    assert v.status == "inconclusive" and "one seed never passes" in v.reason


def test_ushape_noise_straddling_delta_is_inconclusive_with_the_seeds_needed():
    noise = {0: -0.004, 1: 0.0, 2: 0.004}  # per seed at the end LRs only: paired sd 0.004
    w = verdicts.ushape(grid(lambda lr, wd, s: 0.10 + (0.004 + noise[s] if lr != 0.1 else 0.0)))
    assert w.status == "inconclusive" and w.seeds_needed and w.seeds_needed > 3
    assert f"≈{w.seeds_needed} seeds per arm would decide" in w.reason


def test_a_blown_up_end_arm_does_not_make_a_u():
    falling = lambda lr, wd, s: 0.2 - 0.03 * math.log10(lr / 0.01) + 0.001 * s  # noqa: E731
    lrs = (0.01, 0.1, 1.0, 10.0)
    v = verdicts.ushape(grid(falling, lrs=lrs, status=lambda lr, wd, s: "diverged" if lr == 10.0 else "finished"))
    assert v.status == "fail" and v.numbers["diverged_lrs"] == [10.0] and v.numbers["lr"] == [0.01, 0.1, 1.0]
    assert "left out (no error after the decay): LR 10 (3/3 seeds diverged)" in v.reason
    # with only two finished LRs the claim cannot be judged
    short = grid(falling, lrs=(0.01, 0.1, 10.0), status=lambda lr, wd, s: "diverged" if lr == 10.0 else "finished")
    assert verdicts.ushape(short).status == "not-applicable"


def test_ushape_judges_the_best_wd_line():
    both = grid(lambda lr, wd, s: u_curve(lr, wd, s) - (0.02 if wd > 0 else 0) * (lr == 0.1), wds=(0.0, 1e-3))
    v = verdicts.ushape(both)
    assert v.thresholds["weight_decay"] == 1e-3 and "(the best WD)" in v.reason


def test_ushape_judges_the_runs_error_after_its_lr_decay_not_a_constant_lr_run():
    decayed = grid(u_curve, lrs=(0.001, 0.1, 10.0))
    decayed["lr"] = decayed["config/lr"] / 10  # the last reported LR: the run decayed it
    v = verdicts.ushape(decayed)
    assert v.status == "pass" and "decay during the run assumed" not in v.reason
    constant = decayed.assign(lr=decayed["config/lr"])
    assert verdicts.ushape(constant).status == "not-applicable"
    constant["finetune_test_error"] = constant["test_error"]
    assert verdicts.test_error_metric(constant) == "finetune_test_error"


def branch_curves(at_epoch):
    rows = []
    for lr in (0.001, 0.1, 10.0):
        for seed in (0, 1, 2):
            for epoch in (10, 20, 30, 40):
                row = {"trial_id": f"lr{lr}-s{seed}", "status": "finished", "config/lr": lr, "config/weight_decay": 0.0,
                       "config/seed": seed, "epoch": epoch, "test_error": 0.3}
                if epoch in at_epoch:
                    row["finetune_test_error"] = at_epoch[epoch](lr, seed)
                rows.append(row)
    return pd.DataFrame(rows)


def test_ushape_of_the_fine_tuned_copies_uses_the_last_branch():
    monotone = lambda lr, s: 0.2 - 0.01 * math.log10(lr) + 0.001 * s  # noqa: E731
    frame = branch_curves({20: monotone, 40: lambda lr, s: u_curve(lr, 0.0, s)})
    v = verdicts.ushape_finetuned(frame)
    assert v.status == "pass" and v.thresholds["branch_epoch"] == 40 and v.reason.startswith("branches from epoch 40")
    assert verdicts.ushape_finetuned(frame, epoch=20).status == "fail"
    assert verdicts.ushape_finetuned(frame.drop(columns="finetune_test_error")).status == "not-applicable"


def fig1(table, seed_list=(0, 1, 2, 3), spread=0.003):
    """Finals from {(lr, wd): error}, each seed offset by ±spread (the same offset in every arm)."""
    offsets = dict(zip(seed_list, np.linspace(-spread, spread, len(seed_list))))
    return grid(lambda lr, wd, s: table[(lr, wd)] + offsets[s], lrs=sorted({k[0] for k in table}),
                wds=sorted({k[1] for k in table}), seed_list=seed_list)


RESNET18 = {(0.08, 0.0125): 0.104, (0.08, 0.0): 0.146, (0.001, 0.0125): 0.187, (0.001, 0.0): 0.335}


def test_large_lr_and_wd_passes_on_the_paper_resnet18_numbers_where_wd_also_helps_at_small_lr():
    v = verdicts.large_lr_and_wd(fig1(RESNET18))
    assert v.status == "pass"
    assert v.numbers["best"] == {"lr": 0.08, "weight_decay": 0.0125, "mean": pytest.approx(0.104)}
    assert v.numbers["margins"]["WD = 0 (best, LR 0.08)"] == pytest.approx(0.042)
    assert v.numbers["margins"]["smallest LR 0.001 (best WD 0.0125)"] == pytest.approx(0.083)


def test_large_lr_and_wd_fails_when_wd_helps_only_at_small_lr_or_the_best_is_at_the_smallest_lr():
    only_small = {(0.08, 0.0125): 0.146, (0.08, 0.0): 0.104, (0.001, 0.0125): 0.187, (0.001, 0.0): 0.335}
    v = verdicts.large_lr_and_wd(fig1(only_small))
    assert v.status == "fail" and v.numbers["parts"]["WD = 0 (best, LR 0.08)"] == "fail"
    small_best = {(0.08, 0.0125): 0.20, (0.08, 0.0): 0.25, (0.001, 0.0125): 0.10, (0.001, 0.0): 0.30}
    v = verdicts.large_lr_and_wd(fig1(small_best))
    assert v.status == "fail" and "at the smallest LR" in v.reason


def test_large_lr_and_wd_one_seed_is_inconclusive_and_needs_both_wd_arms():
    v = verdicts.large_lr_and_wd(fig1(RESNET18, seed_list=(0,)))
    assert v.status == "inconclusive"
    only_wd = {k: e for k, e in RESNET18.items() if k[1] > 0}
    assert verdicts.large_lr_and_wd(fig1(only_wd)).status == "not-applicable"


def test_best_not_on_edge():
    assert verdicts.best_not_on_edge(grid(u_curve), "test_error").status == "pass"
    falling = grid(lambda lr, wd, s: 0.2 - 0.03 * math.log10(lr) + 0.001 * s)
    v = verdicts.best_not_on_edge(falling, "test_error")
    assert v.status == "fail" and "lr=1 is the grid's largest" in v.reason
    assert verdicts.best_not_on_edge(grid(u_curve, seed_list=(0,)), "test_error").status == "inconclusive"
    assert verdicts.best_not_on_edge(grid(u_curve, lrs=(0.01, 0.1)), "test_error").status == "not-applicable"


# ------------------------------------------------------------------ LM claims

def lm_curves(loss, *, schedules=("cosine", "constant"), wds=(0.0, 0.1, 0.3), seed_list=(0, 1, 2),
              steps=range(100, 1001, 100), total=1000, tail=0, metric="val_loss", extra=None):
    rows = []
    for schedule in schedules:
        for wd in wds:
            for seed in seed_list:
                for step in steps:
                    row = {"trial_id": f"{schedule}-{wd}-{seed}", "status": "finished", "config/schedule": schedule,
                           "config/weight_decay": wd, "config/seed": seed, "config/steps": total,
                           "config/tail_steps": tail, "step": step, metric: loss(step, wd, schedule, seed)}
                    if extra:
                        row.update(extra(step, wd, schedule, seed))
                    rows.append(row)
    return pd.DataFrame(rows)


def paper_like(step, wd, schedule, seed):
    """λ > 0 higher by 0.1·λ until step 900, lower by 0.02·λ at 1000 (cosine); constant: higher by 0.1·λ."""
    base = 3.0 + 1.0 / (1 + step / 100) + 0.002 * seed
    if schedule == "constant":
        return base + 0.1 * wd
    if step <= 900:
        return base + 0.1 * wd * (900 - step) / 800
    return base - 0.02 * wd * (step - 900) / 100


def test_cosine_claims_pass_on_a_mid_run_excess_and_a_lower_end():
    c = lm_curves(paper_like)
    mid = verdicts.chinchilla_midrun(c)
    assert mid.status == "pass" and "crosses below at ≈ step 900" in mid.reason
    end = verdicts.chinchilla_end_of_cosine(c)
    assert end.status == "pass" and "at step 1000" in end.reason
    assert verdicts.chinchilla_after_tail(c).status == "not-applicable"  # no continuation
    assert verdicts.chinchilla_constant(c).status == "pass"


def test_crossing_at_the_first_report_only_fails_the_mid_run_claim():
    early = lambda step, wd, sch, s: 3.0 + (0.05 * wd if step == 100 else -0.02 * wd) + 0.002 * s  # noqa: E731
    v = verdicts.chinchilla_midrun(lm_curves(early, schedules=("cosine",)))
    assert v.status == "fail"


def test_a_single_bump_mid_run_is_not_sustained():
    bump = lambda step, wd, sch, s: 3.0 + (0.05 * wd if step == 500 else -0.002 * wd) + 0.002 * s  # noqa: E731
    v = verdicts.chinchilla_midrun(lm_curves(bump, schedules=("cosine",)))
    assert v.status == "fail" and "not sustained" in v.reason


def test_end_of_cosine_and_after_the_continuation_are_judged_apart():
    """λ higher until the end of the cosine (step 1000), lower only after a 200-step tail."""
    def late(step, wd, sch, s):
        base = 3.0 + 0.002 * s
        return base + (0.05 * wd if step <= 1000 else -0.1 * wd)
    c = lm_curves(late, schedules=("cosine", "constant"), steps=range(100, 1201, 100), tail=200)
    assert verdicts.chinchilla_end_of_cosine(c).status == "fail"  # judged at step 1000, not at the last report
    assert verdicts.chinchilla_after_tail(c).status == "pass"
    constant = verdicts.chinchilla_constant(c)  # still higher at the end of the constant phase
    assert constant.status == "pass" and "at step 1000" in constant.reason


def test_arms_off_the_paper_grid_are_reported_not_required():
    def extra_arm(step, wd, sch, s):
        if wd == 0.6 and sch == "cosine":
            return 3.5  # the Cartesian grid's cosine λ = 0.6: much higher at the end
        return paper_like(step, wd, sch, s)
    c = lm_curves(extra_arm, wds=(0.0, 0.1, 0.3, 0.6))
    v = verdicts.chinchilla_end_of_cosine(c)
    assert v.status == "pass" and "Reported, not required: λ 0.6: fail" in v.reason
    assert verdicts.chinchilla_constant(c).numbers["parts"].keys() == {"λ 0.1", "λ 0.3", "λ 0.6"}


def test_constant_lr_is_a_positive_test_not_a_null_test():
    flat = lambda step, wd, sch, s: 3.0 + 0.002 * s  # noqa: E731  (λ changes nothing)
    assert verdicts.chinchilla_constant(lm_curves(flat)).status == "fail"
    assert verdicts.chinchilla_constant(lm_curves(paper_like, seed_list=(0,))).status == "inconclusive"


def test_train_and_val_alike():
    alike = lm_curves(paper_like, extra=lambda st, wd, sch, s: {"eval_train_loss": paper_like(st, wd, sch, s) - 0.01})
    v = verdicts.train_val_alike(alike)
    assert v.status == "pass" and v.thresholds["train_metric"] == "eval_train_loss"
    # WD opens a gap: val rises by 0.05·λ/0.3 more than train
    gap = lm_curves(lambda st, wd, sch, s: paper_like(st, wd, sch, s) + wd / 6,
                    extra=lambda st, wd, sch, s: {"eval_train_loss": paper_like(st, wd, sch, s)})
    v = verdicts.train_val_alike(gap)
    assert v.status == "fail" and v.numbers["pairs"]["schedule=cosine, λ 0.3"]["diff"] == pytest.approx(0.05)
    assert verdicts.train_val_alike(lm_curves(paper_like)).status == "not-applicable"  # no training loss


def bf16_trials(diverged, *, seed_list=(0, 1, 2), lrs=(1e-3,), spikes=()):
    rows = []
    for lr in lrs:
        for precision in ("fp32", "bf16-autocast"):
            for wd in (0.0, 0.1):
                for seed in seed_list:
                    st = "diverged" if (precision, wd, seed, lr) in diverged else "finished"
                    rows.append({"trial_id": f"t{len(rows)}", "status": st, "config/precision": precision,
                                 "config/weight_decay": wd, "config/seed": seed, "config/lr": lr,
                                 "loss_spikes": 1 if (precision, wd, seed) in spikes else 0})
    return pd.DataFrame(rows)


def test_bf16_divergence_outcomes():
    two = {("bf16-autocast", 0.0, 0, 1e-3), ("bf16-autocast", 0.0, 1, 1e-3)}
    v = verdicts.bf16_divergence(bf16_trials(two, spikes={("fp32", 0.0, 2)}))
    assert v.status == "pass" and "1 trial(s) had loss spikes that recovered" in v.reason
    assert verdicts.bf16_divergence(bf16_trials({("bf16-autocast", 0.0, 0, 1e-3)})).status == "fail"
    assert verdicts.bf16_divergence(bf16_trials(two | {("fp32", 0.1, 2, 1e-3)})).status == "fail"
    few = verdicts.bf16_divergence(bf16_trials(two, seed_list=(0, 1)))
    assert few.status == "inconclusive" and few.seeds_needed == 3


# ------------------------------------------------------------------ the synthetic stores

def test_verdicts_on_the_synthetic_stores(tmp_path):
    write_vision_store(str(tmp_path))
    vision = load_study("vision", str(tmp_path))
    finals = vision.finals()
    v = verdicts.ushape(finals)
    assert v.status == "pass" and v.numbers["argmin"] == 0.03 and v.thresholds["weight_decay"] == 1e-3
    assert "1 failed trials left out" in v.reason
    large = verdicts.large_lr_and_wd(finals)
    # WD 0 falls with the LR; its best finished point is LR 0.1 (LR 0.3 has a diverged seed): 4.25 % vs 3.00 %
    assert large.status == "pass" and large.numbers["best_without_wd"]["lr"] == 0.1
    assert large.numbers["margins"]["WD = 0 (best, LR 0.1)"] == pytest.approx(0.0125)
    write_lm_store(str(tmp_path))
    cur = load_study("lm", str(tmp_path)).curves()
    assert len(LM_STEPS) == cur.groupby("trial_id").size().iloc[0]
    mid = verdicts.chinchilla_midrun(cur)
    assert mid.status == "pass" and "crosses below at ≈ step 850" in mid.reason
    end = verdicts.chinchilla_end_of_cosine(cur)
    # at step 1000: 0.1·0.3·(850 − 1000)/850 = −0.00529 below WD 0 in every seed
    assert end.status == "pass" and "lower by +0.0053" in end.reason
    assert verdicts.chinchilla_constant(cur).status == "pass"
    assert verdicts.train_val_alike(cur).status == "pass"


def test_alike_scales_its_bound_with_a_large_effect():
    """Δtrain = +0.15 at a constant LR: val moving by 90 % of it (Δval − Δtrain = −0.015) is alike
    (bound 0.2 · 0.15 = 0.03); by 50 % (−0.075) it is not."""
    def curves(ratio):
        def val(step, wd, sch, s):
            return 3.0 + 0.002 * s + ratio * 0.5 * wd
        return lm_curves(val, schedules=("constant",), wds=(0.0, 0.3),
                         extra=lambda st, wd, sch, s: {"eval_train_loss": 2.9 + 0.002 * s + 0.5 * wd})
    alike = verdicts.train_val_alike(curves(0.9))
    assert alike.status == "pass"
    assert alike.numbers["pairs"]["λ 0.3"]["bound"] == pytest.approx(0.03)
    assert alike.numbers["pairs"]["λ 0.3"]["diff"] == pytest.approx(-0.015)
    assert verdicts.train_val_alike(curves(0.5)).status == "fail"
