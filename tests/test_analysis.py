"""Analysis: loading and typing the store, and seed statistics (the verdicts: tests/test_verdicts.py)."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.load import aggregate_seeds, load_study, seed_mean_curves, select, type_config
from analysis.stats import difference, t_interval, t_quantile
from study.store import StoreError
from tests.test_analysis_stores import (SEEDS, VISION_EPOCHS, VISION_LRS, vision_error,
                                        write_lm_store, write_vision_store)


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


