"""Analysis: loading and typing the store, seed statistics, and each verdict on hand-made data."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import verdicts
from analysis.load import aggregate_seeds, load_study, seed_mean_curves, select, type_config
from analysis.stats import clears, difference, t_interval, t_quantile
from study.store import StoreError
from tests.test_analysis_stores import (LM_STEPS, SEEDS, VISION_EPOCHS, VISION_LRS, vision_error,
                                        write_lm_store, write_vision_store)


def grid(value, *, lrs=(0.01, 0.1, 1.0), wds=(0.0,), seeds=(0,), metric="test_error", status=None, **fixed):
    """A finals table: one finished trial per (lr, wd, seed) with metric = value(lr, wd, seed)."""
    rows = []
    for lr in lrs:
        for wd in wds:
            for seed in seeds:
                st = status(lr, wd, seed) if status else "finished"
                rows.append({"trial_id": f"t{len(rows)}", "status": st, "config/lr": lr, "config/weight_decay": wd,
                             "config/seed": seed, **{f"config/{k}": v for k, v in fixed.items()},
                             metric: value(lr, wd, seed) if st == "finished" else math.nan})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ statistics

def test_t_interval_and_quantiles_against_tables():
    assert t_quantile(0.95, 2) == pytest.approx(4.302653, abs=1e-6)  # Student t table
    assert t_quantile(0.95, 1e7) == pytest.approx(1.959964, abs=1e-5)
    interval = t_interval([1.0, 2.0, 3.0, math.nan, math.inf])  # non-finite values are ignored
    assert (interval.mean, interval.std, interval.n) == (2.0, 1.0, 3)
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    one = t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.half_width) and math.isnan(one.low)


def test_difference_paired_by_seed_and_welch():
    a = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    b = pd.Series([0.5, 1.5, 2.0], index=[0, 1, 2])
    paired = difference(a, b)
    # per-seed differences 0.5, 0.5, 1.0: mean 2/3, std 0.288675
    assert paired.method == "paired" and paired.diff == pytest.approx(2 / 3)
    assert paired.high - paired.diff == pytest.approx(4.302653 * 0.2886751 / math.sqrt(3), abs=1e-5)
    welch = difference(a, pd.Series([0.5, 1.5, 2.0], index=[7, 8, 9]))
    # Welch: var_a/3 = 1/3, var_b/3 = 0.58333/3; df = 3.68 → t = 2.8941
    se = math.sqrt(1 / 3 + 0.5833333 / 3)
    dof = (1 / 3 + 0.5833333 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (0.5833333 / 3) ** 2 / 2)
    assert welch.method == "welch" and welch.diff == pytest.approx(2 / 3)
    assert welch.high - welch.diff == pytest.approx(t_quantile(0.95, dof) * se)
    assert difference(pd.Series([1.0]), pd.Series([0.0])).method == "single"


def test_clears_with_three_or_more_seeds_needs_the_t_interval_to_exclude_zero():
    base = pd.Series([0.0, 0.0, 0.0], index=[0, 1, 2])
    # per-seed differences 1, 2, 3: mean 2, std 1, half width 4.3027/√3 = 2.484 → [-0.484, +4.484]
    noisy = clears(difference(pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2]), base), 0.5)
    assert not noisy.holds and noisy.rule == "t-interval" and noisy.outcome == "not significant"
    assert "clears δ = 0.5 on average but not significant" in noisy.text and "includes 0" in noisy.text
    assert "yet all 3 seed pairs clear δ: +1, +2, +3" in noisy.text  # reported, but the interval decides
    tight = clears(difference(pd.Series([1.9, 2.0, 2.1], index=[0, 1, 2]), base), 0.5)
    assert tight.holds and tight.outcome == "clears δ" and "paired-by-seed 95% t-interval" in tight.text
    small = clears(difference(pd.Series([0.29, 0.3, 0.31], index=[0, 1, 2]), base), 0.5)
    assert not small.holds and small.outcome == "below δ" and small.text.startswith("below δ = 0.5")
    # the other direction: a must be lower than b by δ
    lower = clears(difference(pd.Series([-1.9, -2.0, -2.1], index=[0, 1, 2]), base), 0.5, direction=-1)
    assert lower.holds and not clears(difference(pd.Series([1.9, 2.0, 2.1], index=[0, 1, 2]), base), 0.5,
                                      direction=-1).holds


def test_clears_with_two_seeds_needs_every_pair():
    # the lead's case: mean +3.09 pp ≥ δ, but one seed pair is +0.10: not "below δ", not "significant" either
    a, b = pd.Series([0.0651, 0.0500], index=[0, 1]), pd.Series([0.0343, 0.0490], index=[0, 1])
    d = difference(a, b)
    assert d.diff == pytest.approx(0.0159) and d.pairs == pytest.approx((0.0308, 0.0010))
    split = clears(d, 0.005, show=lambda v: f"{100 * v:+.2f} pp")
    assert not split.holds and split.rule == "every pair" and split.outcome == "not in every seed pair"
    assert "+3.08 pp, +0.10 pp" in split.text and "every pair must clear δ" in split.text
    both = clears(difference(pd.Series([0.08, 0.06], index=[0, 1]), b), 0.005)
    assert both.holds and both.outcome == "clears δ"  # a t-interval over 2 seeds would say nothing here
    assert not difference(pd.Series([0.08, 0.06], index=[0, 1]), b).low > 0
    assert clears(difference(pd.Series([0.036, 0.050], index=[0, 1]), b), 0.005).outcome == "below δ"
    # different seeds: every cross pair a_i − b_j must clear δ (the ranges are δ apart)
    unpaired = difference(pd.Series([0.10, 0.11], index=[5, 6]), pd.Series([0.03, 0.04], index=[0, 1]))
    assert unpaired.method == "welch" and sorted(unpaired.pairs) == pytest.approx([0.06, 0.07, 0.07, 0.08])
    assert clears(unpaired, 0.05).holds and not clears(unpaired, 0.065).holds


def test_clears_with_one_seed_is_a_flagged_point_difference():
    one = clears(difference(pd.Series([0.10]), pd.Series([0.09])), 0.005)
    assert one.holds and one.rule == "single seed" and "single seed" in one.text
    assert not clears(difference(pd.Series([0.10]), pd.Series([0.099])), 0.005).holds
    with pytest.raises(ValueError, match="direction"):
        clears(difference(pd.Series([0.1]), pd.Series([0.0])), 0.005, direction=0)


# ------------------------------------------------------------------ loading

def test_load_types_config_columns_and_status(tmp_path):
    store = write_lm_store(str(tmp_path))
    study = load_study("lm", str(tmp_path))
    trials = study.trials
    assert isinstance(trials["config/schedule"].dtype, pd.CategoricalDtype)
    assert list(trials["config/schedule"].cat.categories) == ["cosine", "constant"]  # the spec's order
    assert trials["config/weight_decay"].dtype == "float64" and trials["config/seed"].dtype == "int64"
    assert list(trials["status"].cat.categories)[:5] == ["running", "finished", "diverged", "failed", "stopped"]
    assert study.axes == ["schedule", "weight_decay", "seed"] and study.seeds() == 3
    assert study.has_metric("val_loss") and not study.has_metric("test_error")
    assert len(store.read_metrics()) == len(study.metrics)


def test_type_config_turns_numeric_strings_into_numbers():
    raw = pd.DataFrame({"trial_id": ["a", "b"], "status": ["finished", "diverged"],
                        "config/lr": pd.Series(["0.1", "0.3"], dtype=object), "config/model": ["b", "a"]})
    typed = type_config(raw, {"axes": {"model": ["b", "a"]}})
    assert typed["config/lr"].tolist() == [0.1, 0.3] and typed["config/lr"].dtype == "float64"
    assert list(typed["config/model"].cat.categories) == ["b", "a"]


def test_select_by_axis_values_and_status(tmp_path):
    write_vision_store(str(tmp_path))
    trials = load_study("vision", str(tmp_path)).trials
    picked = select(trials, status="finished", lr=[0.1, 0.3], weight_decay=1e-3)
    assert len(picked) == 2 * len(SEEDS)
    assert set(picked["config/lr"]) == {0.1, 0.3} and (picked["status"] == "finished").all()
    # float tolerance: 0.1 + 2e-17 is the stored 0.1
    assert len(select(trials, lr=0.1 + 2e-17, weight_decay=0.0)) == len(SEEDS) + 1  # + the failed trial
    assert len(select(trials, status=["diverged", "failed"])) == 2
    with pytest.raises(KeyError, match="no axis 'momentum'.*lr, weight_decay"):
        select(trials, momentum=0.9)


def test_finals_curves_and_seed_aggregates(tmp_path):
    write_vision_store(str(tmp_path))
    study = load_study("vision", str(tmp_path))
    fin = study.finals()
    assert len(fin) == len(study.trials)
    row = fin[fin["trial_id"] == "lr0.01_wd0.001_s2"].iloc[0]
    # finetune_test_error is reported at branch epochs only: its last value, not NaN
    assert row["finetune_test_error"] == pytest.approx(vision_error(0.01, 1e-3, 2))
    assert row["epoch"] == VISION_EPOCHS and row["status"] == "finished"
    failed = fin[fin["status"] == "failed"].iloc[0]
    assert math.isnan(failed["test_error"]) and "out of memory" in failed["error"]

    cur = study.curves()
    assert len(cur) == len(study.metrics)
    assert {"config/lr", "config/weight_decay", "status"} <= set(cur.columns)

    agg = aggregate_seeds(fin, "finetune_test_error")
    assert list(agg.columns[:2]) == ["config/lr", "config/weight_decay"]
    point = agg[(agg["config/lr"] == 0.03) & (agg["config/weight_decay"] == 1e-3)].iloc[0]
    assert point["mean"] == pytest.approx(0.03) and point["n"] == 3
    # seed offsets -0.0005, 0, +0.0005: std 0.0005, t-interval ±4.3027·0.0005/√3
    assert point["ci_high"] - point["mean"] == pytest.approx(4.302653 * 0.0005 / math.sqrt(3), rel=1e-5)
    div = agg[(agg["config/lr"] == 0.3) & (agg["config/weight_decay"] == 0.0)].iloc[0]
    assert (div["n"], div["n_diverged"]) == (2, 1)
    assert div["mean"] == pytest.approx(np.mean([vision_error(0.3, 0.0, s) for s in (0, 1)]))

    mean_curves = seed_mean_curves(cur, "weight_norm", "epoch", by=["weight_decay"])
    at = mean_curves[(mean_curves["config/weight_decay"] == 1e-3) & (mean_curves["epoch"] == 2)].iloc[0]
    assert at["mean"] == pytest.approx(10.0 + 2 * 0.5) and at["n"] == len(VISION_LRS) * len(SEEDS)


def test_unknown_and_corrupt_studies_raise_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no study named 'nope'"):
        load_study("nope", str(tmp_path))
    store = write_lm_store(str(tmp_path))
    with open(store.path("spec.yaml"), "w") as f:
        f.write("axes: [unclosed\n")
    with pytest.raises(StoreError, match="spec.yaml: not valid YAML"):
        load_study("lm", str(tmp_path))


def test_store_opens_with_duckdb_and_polars_with_the_same_row_counts(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    store = write_vision_store(str(tmp_path))
    study = load_study("vision", str(tmp_path))
    root = store.root
    # part files of one trial differ in columns (finetune_* only at branch epochs): union by name
    glob = f"{root}/metrics/*/*.parquet"
    con = duckdb.connect()
    n_metrics = con.execute(f"select count(*) from read_parquet('{glob}', hive_partitioning=true, union_by_name=true)").fetchone()[0]
    per_trial = dict(con.execute(f"select trial_id, count(*) from read_parquet('{glob}', hive_partitioning=true, "
                                 f"union_by_name=true) group by trial_id").fetchall())
    n_trials = con.execute(f"select count(*) from read_parquet('{root}/trials.parquet')").fetchone()[0]
    assert n_metrics == len(study.metrics) and n_trials == len(study.trials)
    assert per_trial == study.metrics.groupby("trial_id").size().to_dict()
    finished = con.execute(f"select count(*) from read_parquet('{root}/trials.parquet') where status = 'finished'").fetchone()[0]
    assert finished == (study.trials["status"] == "finished").sum()

    # polars takes the schema of the first file: extra columns of later files are ignored ...
    frame = pl.scan_parquet(glob, hive_partitioning=True, missing_columns="insert", extra_columns="ignore").collect()
    assert frame.height == len(study.metrics)
    assert frame.group_by("trial_id").len().sort("trial_id")["len"].to_list() == study.metrics.groupby("trial_id").size().tolist()
    # ... or, to keep every column, a diagonal concat of the part files
    import glob as globbing

    every = pl.concat([pl.read_parquet(p, hive_partitioning=True) for p in sorted(globbing.glob(glob))], how="diagonal_relaxed")
    assert every.height == len(study.metrics) and set(every.columns) == set(study.metrics.columns)
    assert pl.read_parquet(f"{root}/trials.parquet").height == len(study.trials)


# ------------------------------------------------------------------ verdicts: U-shape

def u_curve(lr, wd, seed):
    return 0.10 + 0.02 * math.log10(lr / 0.1) ** 2 + 0.001 * seed


def test_ushape_passes_on_a_true_u():
    v = verdicts.ushape(grid(u_curve, lrs=(0.001, 0.01, 0.1, 1.0, 10.0)))
    assert v.status == "pass", v.reason
    assert v.numbers["line"]["argmin"] == 0.1
    assert v.numbers["line"]["end_margins"]["smallest"] == pytest.approx(0.08)  # 0.02 · 2²
    assert "10.00% at LR 0.1" in v.reason and v.thresholds["delta"] == 0.005


def test_ushape_fails_on_a_monotone_curve():
    v = verdicts.ushape(grid(lambda lr, wd, s: 0.2 - 0.01 * math.log10(lr), lrs=(0.01, 0.1, 1.0, 10.0)))
    assert v.status == "fail" and "on the edge" in v.reason
    assert v.numbers["line"]["argmin"] == 10.0


def test_ushape_fails_when_an_end_is_within_delta():
    shallow = {0.01: 0.103, 0.1: 0.100, 1.0: 0.120}  # left end only 0.3 pp above the minimum
    v = verdicts.ushape(grid(lambda lr, wd, s: shallow[lr]))
    assert v.status == "fail" and "+0.30 pp vs min: below δ = 0.50 pp" in v.reason
    assert verdicts.ushape(grid(lambda lr, wd, s: shallow[lr]), delta=0.002).status == "pass"


def test_ushape_accounts_for_seed_noise():
    # the ends are 1 pp above the minimum on average, but the seeds scatter by ±3 pp
    noise = {0: -0.03, 1: 0.0, 2: 0.03}
    means = {0.01: 0.11, 0.1: 0.10, 1.0: 0.11}
    noisy = grid(lambda lr, wd, s: means[lr] + noise[s] * (1 if lr != 0.1 else -1), seeds=(0, 1, 2))
    v = verdicts.ushape(noisy)
    assert v.status == "fail" and "not significant" in v.reason and "over 3 seeds includes 0" in v.reason
    assert v.numbers["line"]["end_outcomes"] == {"smallest": "not significant", "largest": "not significant"}
    clean = grid(lambda lr, wd, s: means[lr] + noise[s], seeds=(0, 1, 2))  # same offsets in every arm
    assert verdicts.ushape(clean).status == "pass"  # paired by seed, the offsets cancel


def test_ushape_counts_a_diverged_end_as_worse_and_picks_the_best_wd():
    frame = grid(lambda lr, wd, s: u_curve(lr, wd, s) + (0.0 if wd > 0 else 0.05), wds=(0.0, 1e-3),
                 status=lambda lr, wd, s: "diverged" if lr == 1.0 and wd > 0 else "finished")
    v = verdicts.ushape(frame)
    assert v.thresholds["weight_decay"] == 1e-3  # the WD with the lowest minimum
    assert v.status == "pass" and "+inf" in v.reason.replace("diverged", "+inf")


def test_ushape_not_applicable_without_the_data():
    assert verdicts.ushape(grid(u_curve, lrs=(0.01, 0.1))).status == "not-applicable"
    no_metric = grid(u_curve, metric="val_loss")
    v = verdicts.ushape(no_metric)
    assert v.status == "not-applicable" and "no test_error reported" in v.reason
    no_lr = grid(u_curve).drop(columns="config/lr")
    assert verdicts.ushape(no_lr).status == "not-applicable"
    failed = grid(u_curve, status=lambda *a: "failed")
    v = verdicts.ushape(failed)
    assert v.status == "not-applicable" and "3 failed" in v.reason


def test_ushape_with_two_seeds_needs_every_seed_pair():
    # LR 1 is +3.09 pp above the minimum on average but only +0.10 pp in seed 1: not a U at δ = 0.5 pp
    errors = {(0.01, 0): 0.0859, (0.01, 1): 0.0800, (0.1, 0): 0.0343, (0.1, 1): 0.0490,
              (1.0, 0): 0.0951, (1.0, 1): 0.0500}  # seed pairs at LR 1: +6.08 pp and +0.10 pp
    v = verdicts.ushape(grid(lambda lr, wd, s: errors[(lr, s)], seeds=(0, 1)))
    assert v.status == "fail" and v.numbers["line"]["end_outcomes"]["largest"] == "not in every seed pair"
    assert v.numbers["line"]["end_margins"]["largest"] == pytest.approx(0.0309)
    assert "LR 1: 7.26%, +3.09 pp vs min: clears δ = 0.50 pp on average but not in every seed pair" in v.reason
    assert "below δ" not in v.reason.split("LR 1:")[1]
    errors[(1.0, 1)] = 0.0490 + 0.0060  # both seed pairs ≥ δ: a U, though a t-interval over 2 seeds spans ±40 pp
    v = verdicts.ushape(grid(lambda lr, wd, s: errors[(lr, s)], seeds=(0, 1)))
    assert v.status == "pass" and "all 2 seed pairs clear it" in v.reason


def test_ushape_judges_the_runs_error_after_its_lr_decay_not_a_constant_lr_run():
    decayed = grid(u_curve, lrs=(0.001, 0.1, 10.0))
    decayed["lr"] = decayed["config/lr"] / 10  # the last reported LR: the run decayed it
    v = verdicts.ushape(decayed)
    assert v.status == "pass" and v.numbers["metric"] == "test_error" and "Fig. 1" in v.claim
    assert "decay during the run assumed" not in v.reason
    constant = decayed.assign(lr=decayed["config/lr"])  # ends at its configured LR: no decay happened
    v = verdicts.ushape(constant)
    assert v.status == "not-applicable" and "does not decay during the run" in v.reason
    # the other protocol picks the fine-tuned error for the claims on the final model
    constant["finetune_test_error"] = constant["test_error"]
    assert verdicts.test_error_metric(constant) == "finetune_test_error"
    assert verdicts.test_error_metric(decayed.assign(finetune_test_error=0.5)) == "test_error"
    assert verdicts.lr_decays(grid(u_curve)) is None  # no lr reported: unknown, assumed in the text
    assert "decay during the run assumed" in verdicts.ushape(grid(u_curve)).reason


def branch_curves(at_epoch):
    """Curves with fine-tuned branches at epochs 20 and 40: finetune_test_error = at_epoch[epoch](lr, seed)."""
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
    curves_frame = branch_curves({20: monotone, 40: lambda lr, s: u_curve(lr, 0.0, s)})
    v = verdicts.ushape_finetuned(curves_frame)
    assert v.status == "pass" and v.thresholds["branch_epoch"] == 40 and "Figs. 2–3" in v.claim
    assert v.reason.startswith("branches from epoch 40: ") and v.numbers["metric"] == "finetune_test_error"
    v = verdicts.ushape_finetuned(curves_frame, epoch=20)
    assert v.status == "fail" and "on the edge" in v.reason and v.numbers["line"]["argmin"] == 10.0
    frame, epoch = verdicts.finetune_at(curves_frame)
    assert epoch == 40 and len(frame) == 9 and frame["finetune_test_error"].tolist() == pytest.approx(
        [u_curve(lr, 0.0, s) for lr in (0.001, 0.1, 10.0) for s in (0, 1, 2)])
    v = verdicts.ushape_finetuned(curves_frame.drop(columns="finetune_test_error"))
    assert v.status == "not-applicable" and "no fine-tuned branches" in v.reason


# ------------------------------------------------------------------ verdicts: WD helps only at large LR

def test_wd_helps_only_at_large_lr():
    def err(lr, wd, s):
        return 0.10 - (0.02 if wd > 0 and lr >= 0.1 else 0.0) + 0.001 * s

    v = verdicts.wd_helps_only_at_large_lr(grid(err, lrs=(0.001, 0.01, 0.1, 1.0), wds=(0.0, 1e-4, 1e-3), seeds=(0, 1)))
    assert v.status == "pass", v.reason
    assert v.numbers["gains"] == {"0.001": pytest.approx(0.0), "0.01": pytest.approx(0.0),
                                  "0.1": pytest.approx(0.02), "1": pytest.approx(0.02)}
    assert v.numbers["used_lr"] == 0.1 and v.numbers["smallest_lr"] == 0.001


def test_wd_helps_is_judged_where_wd_is_used_not_at_a_largest_lr_past_the_edge():
    # WD helps at LR 0.1, where it does best; at LR 1 the grid is past the useful range and WD blows up
    with_wd = {0.001: 0.100, 0.01: 0.090, 0.1: 0.070, 1.0: 0.500}

    def err(lr, wd, s):
        return (with_wd[lr] if wd > 0 else 0.100) + 0.001 * s

    frame = grid(err, lrs=(0.001, 0.01, 0.1, 1.0), wds=(0.0, 1e-3), seeds=(0, 1, 2))
    v = verdicts.wd_helps_only_at_large_lr(frame)
    assert v.status == "pass", v.reason
    assert v.numbers["used_lr"] == 0.1 and v.numbers["gains"]["0.1"] == pytest.approx(0.03)
    assert v.numbers["gains"]["1"] == pytest.approx(-0.4)  # reported, but not what the claim is about
    # the same with the over-the-edge corner diverged instead of merely bad
    diverged = grid(err, lrs=(0.001, 0.01, 0.1, 1.0), wds=(0.0, 1e-3), seeds=(0, 1, 2),
                    status=lambda lr, wd, s: "diverged" if lr == 1.0 and wd > 0 else "finished")
    v = verdicts.wd_helps_only_at_large_lr(diverged)
    assert v.status == "pass" and v.numbers["gains"]["1"] == -math.inf


def test_wd_helps_fails_for_the_right_reason():
    everywhere = grid(lambda lr, wd, s: 0.10 - (0.02 if wd > 0 else 0), wds=(0.0, 1e-3))
    v = verdicts.wd_helps_only_at_large_lr(everywhere)
    assert v.status == "fail" and "WD also helps at the smallest LR 0.01" in v.reason
    # the best WD > 0 result at the smallest LR: there is no "large LR" at which WD is used
    at_small = grid(lambda lr, wd, s: {0.01: 0.05, 0.1: 0.08, 1.0: 0.09}[lr] if wd > 0 else 0.05, wds=(0.0, 1e-3))
    v = verdicts.wd_helps_only_at_large_lr(at_small)
    assert v.status == "fail" and "WD > 0 does best at the smallest LR 0.01" in v.reason
    # a gain at the LR where WD is used, but under δ
    weak = grid(lambda lr, wd, s: 0.10 - (0.003 if wd > 0 and lr == 0.1 else 0), wds=(0.0, 1e-3))
    v = verdicts.wd_helps_only_at_large_lr(weak)
    assert v.status == "fail" and "the gain at LR 0.1 does not clear δ (below δ)" in v.reason
    # two seeds that disagree at that LR
    split = grid(lambda lr, wd, s: 0.10 - (0.02 if s == 0 else 0.002) * (wd > 0 and lr == 0.1), wds=(0.0, 1e-3),
                 seeds=(0, 1))
    v = verdicts.wd_helps_only_at_large_lr(split)
    assert v.status == "fail" and "(not in every seed pair)" in v.reason


def test_wd_hurting_at_small_lr_and_helping_at_large_lr_passes():
    # the paper's VGG: WD hurts at small LR (31% vs 24%) and helps at large (16% vs 20%)
    vgg = {(0.01, 0.0): 0.243, (0.01, 0.008): 0.31, (0.1, 0.0): 0.198, (0.1, 0.008): 0.16}
    v = verdicts.wd_helps_only_at_large_lr(grid(lambda lr, wd, s: vgg[(lr, wd)], lrs=(0.01, 0.1), wds=(0.0, 0.008)))
    assert v.status == "pass" and v.numbers["gains"]["0.01"] == pytest.approx(-0.067)
    assert "single seed" in v.reason


def test_wd_helps_not_applicable_without_wd_zero():
    v = verdicts.wd_helps_only_at_large_lr(grid(u_curve, wds=(1e-4, 1e-3)))
    assert v.status == "not-applicable" and "weight decay 0 and > 0" in v.reason


# ------------------------------------------------------------------ verdicts: Chinchilla

def lm_curves(loss, *, schedules=("cosine", "constant"), wds=(0.0, 0.1, 0.3), seeds=(0,), steps=range(0, 1001, 100),
              metric="val_loss"):
    rows = []
    for schedule in schedules:
        for wd in wds:
            for seed in seeds:
                trial_id = f"{schedule}-{wd}-{seed}"
                for step in steps:
                    rows.append({"trial_id": trial_id, "status": "finished", "config/schedule": schedule,
                                 "config/weight_decay": wd, "config/seed": seed, "step": step,
                                 metric: loss(step, wd, schedule, seed)})
    return pd.DataFrame(rows)


def crossing_loss(step, wd, schedule, seed):
    base = 3.0 + 2.0 * math.exp(-step / 200) + 0.002 * seed
    if schedule == "cosine":
        return base + wd * 0.15 * (800 - step) / 800  # above until step 800, then below
    return base + wd * 0.05 * step / 1000


def test_find_crossing_interpolates_the_last_sign_change():
    c = verdicts.find_crossing([0, 1, 2, 3], [0.0, 0.2, 0.1, -0.1])
    assert c.exists and c.x == pytest.approx(2.5) and c.peak == pytest.approx(0.2) and c.index == 2
    assert not verdicts.find_crossing([0, 1, 2], [-0.1, -0.2, -0.3]).exists
    still_above = verdicts.find_crossing([0, 1, 2], [-0.1, 0.2, 0.1])
    assert not still_above.exists and still_above.index == 2
    # an early dip below zero does not count: the crossing is the last one, persisting to the end
    assert verdicts.find_crossing([0, 1, 2, 3, 4], [-0.01, 0.1, 0.2, 0.1, -0.1]).x == pytest.approx(3.5)


def test_chinchilla_cosine_passes_with_a_crossing():
    v = verdicts.chinchilla_cosine(lm_curves(crossing_loss))
    assert v.status == "pass", v.reason
    arm = v.numbers["arms"]["WD 0.3"]
    assert arm["crossing_x"] == pytest.approx(800.0)
    assert arm["end_diff"] == pytest.approx(0.3 * 0.15 * (800 - 1000) / 800)  # -0.01125
    assert v.numbers["arms"]["WD 0.1"]["end_diff"] == pytest.approx(-0.00375)
    assert arm["peak"] == pytest.approx(0.3 * 0.15)  # at step 0


def test_chinchilla_cosine_fails_without_a_crossing():
    def never_higher(step, wd, schedule, seed):
        return 3.0 + 2.0 * math.exp(-step / 200) - wd * 0.02
    v = verdicts.chinchilla_cosine(lm_curves(never_higher))
    assert v.status == "fail" and "no crossing" in v.reason

    def always_higher(step, wd, schedule, seed):
        return 3.0 + 2.0 * math.exp(-step / 200) + wd * 0.02
    v = verdicts.chinchilla_cosine(lm_curves(always_higher))
    assert v.status == "fail" and "not lower by δ" in v.reason and "still higher at the end" in v.reason


def test_chinchilla_constant_passes_when_wd_stays_higher_and_fails_when_it_ends_lower():
    v = verdicts.chinchilla_constant(lm_curves(crossing_loss))
    assert v.status == "pass", v.reason
    assert v.numbers["arms"]["WD 0.3"]["end_diff"] == pytest.approx(0.015)
    lower = lm_curves(lambda step, wd, sc, s: 3.0 - wd * 0.05 * step / 1000)
    assert verdicts.chinchilla_constant(lower).status == "fail"


def test_chinchilla_seed_noise_makes_a_small_end_margin_inconclusive():
    noise = {0: 0.02, 1: -0.02, 2: 0.0}

    def noisy(step, wd, schedule, seed):  # each seed's arms differ by a seed-dependent amount at the end
        return crossing_loss(step, wd, schedule, 0) + (noise[seed] * (step / 1000) if wd > 0 else 0.0)
    v = verdicts.chinchilla_cosine(lm_curves(noisy, seeds=(0, 1, 2), wds=(0.0, 0.3)))
    assert v.status == "fail" and "paired-by-seed 95% t-interval" in v.reason
    assert "lower by ≥ δ on average but not significant" in v.reason and v.numbers["arms"]["WD 0.3"]["rule"] == "t-interval"


def test_chinchilla_not_applicable_without_schedule_or_loss_or_wd_zero():
    frame = lm_curves(crossing_loss)
    assert verdicts.chinchilla_cosine(frame.drop(columns="config/schedule")).status == "not-applicable"
    assert verdicts.chinchilla_cosine(frame.rename(columns={"val_loss": "loss"})).status == "not-applicable"
    v = verdicts.chinchilla_cosine(frame[frame["config/weight_decay"] > 0])
    assert v.status == "not-applicable" and "weight decay 0" in v.reason
    v = verdicts.chinchilla_constant(lm_curves(crossing_loss, schedules=("cosine",)))
    assert v.status == "not-applicable" and "no trials with the constant schedule" in v.reason


# ------------------------------------------------------------------ verdicts: train-val gap

def gap_curves(gap):
    frame = lm_curves(lambda step, wd, sc, s: 3.0, seeds=(0, 1), metric="train_loss")
    frame["val_loss"] = frame["train_loss"] + [gap(wd, s) for wd, s in zip(frame["config/weight_decay"], frame["config/seed"])]
    return frame


def test_train_val_gap_below_epsilon_for_every_wd():
    v = verdicts.train_val_gap(gap_curves(lambda wd, s: 0.01 + 0.001 * s))
    assert v.status == "pass", v.reason
    assert v.numbers["gaps"]["schedule=cosine, weight_decay=0.3"]["gap"] == pytest.approx(0.0105)


def test_train_val_gap_fails_when_one_wd_overfits():
    v = verdicts.train_val_gap(gap_curves(lambda wd, s: 0.08 if wd == 0 else 0.01))
    assert v.status == "fail" and "weight_decay=0" in v.reason
    assert verdicts.train_val_gap(gap_curves(lambda wd, s: 0.08), epsilon=0.1).status == "pass"
    # every seed must be inside: a mean of 0.03 hides one seed at 0.06
    v = verdicts.train_val_gap(gap_curves(lambda wd, s: 0.06 if s == 1 else 0.0))
    assert v.status == "fail" and "largest |gap| 0.0600" in v.reason
    assert v.numbers["gaps"]["schedule=cosine, weight_decay=0"]["gap"] == pytest.approx(0.03)


def test_train_val_gap_not_applicable_without_val_loss():
    v = verdicts.train_val_gap(lm_curves(crossing_loss, metric="train_loss"))
    assert v.status == "not-applicable" and "val_loss" in v.reason


# ------------------------------------------------------------------ verdicts: bf16 divergence

def bf16_trials(diverged, *, seeds=(0, 1, 2), lrs=(1e-3,)):
    rows = []
    for lr in lrs:
        for precision in ("fp32", "bf16-autocast"):
            for wd in (0.0, 0.1):
                for seed in seeds:
                    st = "diverged" if (precision, wd, seed, lr) in diverged else "finished"
                    rows.append({"trial_id": f"t{len(rows)}", "status": st, "config/precision": precision,
                                 "config/weight_decay": wd, "config/seed": seed, "config/lr": lr})
    return pd.DataFrame(rows)


def test_bf16_divergence_in_two_of_three_seeds_passes():
    v = verdicts.bf16_divergence(bf16_trials({("bf16-autocast", 0.0, 0, 1e-3), ("bf16-autocast", 0.0, 2, 1e-3)}))
    assert v.status == "pass", v.reason
    assert v.numbers["cells"]["bf16-autocast, wd=0"] == {"diverged": 2, "trials": 3}


def test_bf16_divergence_fails_with_one_of_three_or_when_fp32_diverges():
    assert verdicts.bf16_divergence(bf16_trials({("bf16-autocast", 0.0, 0, 1e-3)})).status == "fail"
    both = {("bf16-autocast", 0.0, 0, 1e-3), ("bf16-autocast", 0.0, 1, 1e-3), ("fp32", 0.0, 1, 1e-3)}
    v = verdicts.bf16_divergence(bf16_trials(both))
    assert v.status == "fail" and "fp32, WD 0: 1/3 diverged" in v.reason
    with_wd = {("bf16-autocast", 0.0, 0, 1e-3), ("bf16-autocast", 0.0, 1, 1e-3), ("bf16-autocast", 0.1, 1, 1e-3)}
    assert verdicts.bf16_divergence(bf16_trials(with_wd)).status == "fail"


def test_bf16_divergence_checks_the_largest_lr_and_needs_three_seeds():
    div = {("bf16-autocast", 0.0, s, 1e-3) for s in (0, 1, 2)}
    v = verdicts.bf16_divergence(bf16_trials(div, lrs=(6e-4, 1e-3)))
    assert v.status == "pass" and v.thresholds["lr"] == 1e-3 and "at LR 0.001" in v.reason
    assert verdicts.bf16_divergence(bf16_trials(div, lrs=(6e-4, 1e-3)), lr=6e-4).status == "fail"
    v = verdicts.bf16_divergence(bf16_trials(set(), seeds=(0, 1)))
    assert v.status == "not-applicable" and "needs ≥ 3" in v.reason
    no_bf16 = bf16_trials(set())
    no_bf16 = no_bf16[no_bf16["config/precision"] == "fp32"]
    assert verdicts.bf16_divergence(no_bf16).status == "not-applicable"
    assert verdicts.bf16_divergence(no_bf16.drop(columns="config/precision")).status == "not-applicable"


# ------------------------------------------------------------------ verdicts: best not on the edge

def test_best_not_on_edge():
    assert verdicts.best_not_on_edge(grid(u_curve, lrs=(0.01, 0.1, 1.0)), "test_error").status == "pass"
    v = verdicts.best_not_on_edge(grid(lambda lr, wd, s: -math.log10(lr), lrs=(0.01, 0.1, 1.0)), "test_error")
    assert v.status == "fail" and "lr=1 is the grid's largest" in v.reason
    assert verdicts.best_not_on_edge(grid(u_curve, lrs=(0.01, 0.1)), "test_error").status == "not-applicable"
    # mode max: the best accuracy is the largest value
    assert verdicts.best_not_on_edge(grid(lambda lr, wd, s: -u_curve(lr, wd, s)), "test_error", "max").status == "pass"


def test_verdicts_on_the_synthetic_stores(tmp_path):
    write_vision_store(str(tmp_path))
    write_lm_store(str(tmp_path))
    vision = load_study("vision", str(tmp_path))
    v = verdicts.ushape(vision.finals())
    assert v.status == "pass" and v.numbers["line"]["argmin"] == 0.03 and v.thresholds["weight_decay"] == 1e-3
    assert "1 failed trials left out" in v.reason
    lm = load_study("lm", str(tmp_path))
    cur = lm.curves()
    cosine = verdicts.chinchilla_cosine(cur)
    assert cosine.status == "pass" and cosine.numbers["x"] == "tokens"
    assert cosine.numbers["arms"]["WD 0.3"]["crossing_x"] == pytest.approx(850 * 1024)
    assert cosine.numbers["arms"]["WD 0.3"]["method"] == "paired"
    assert verdicts.chinchilla_constant(cur).status == "pass"
    assert verdicts.train_val_gap(cur).status == "pass"
    assert len(LM_STEPS) == cur.groupby("trial_id").size().iloc[0]
