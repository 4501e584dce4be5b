"""`python -m analysis import`: published tables become studies every reader accepts; bad tables write nothing."""

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.cli import main
from analysis.importer import parse_table, pseudo_seed_offsets, published_tables
from analysis.load import load_study, select
from study.store import StudyStore

FIXTURES = Path(__file__).parent / "fixtures" / "counterfactual"
PAPER_STUDIES = ("paper-bf16", "paper-gpt2-chinchilla", "paper-resnet18-fig1", "paper-resnet34-fig1",
                 "paper-sphere-ushape", "paper-vgg16-fig1")
# one seed per row, a curve per trial: (lr, weight_decay, seed, epoch, status, test_error, train_loss)
CURVES = """trainable,model,dataset,epochs,lr,weight_decay,config/note,seed,epoch,status,test_error,train_loss
vision,vgg16,cifar10,20,0.1,0.008,run a,0,10,finished,0.31,1.2
vision,vgg16,cifar10,20,0.1,0.008,run a,0,20,finished,0.25,0.9
vision,vgg16,cifar10,20,0.1,0.008,run a,1,20,finished,0.27,0.8
vision,vgg16,cifar10,20,0.1,0.008,run a,1,10,finished,0.33,1.1
vision,vgg16,cifar10,20,0.1,0.0,run a,0,10,diverged,0.9,nan
"""


def write(path, text):
    path.write_text(text)
    return str(path)


def files_of(root):
    """Every file under ``root`` with its bytes: the store's state, to compare byte for byte."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            found[os.path.relpath(full, root)] = Path(full).read_bytes()
    return found


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- pseudo-seeds


def test_pseudo_seed_offsets_have_mean_zero_and_sample_sd_one():
    assert pseudo_seed_offsets(1) == [0.0]
    assert pseudo_seed_offsets(2) == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)])
    assert pseudo_seed_offsets(3) == pytest.approx([-1.0, 0.0, 1.0])
    for n in range(2, 9):
        z = np.array(pseudo_seed_offsets(n))
        assert z.mean() == pytest.approx(0.0, abs=1e-15)
        assert z.std(ddof=1) == pytest.approx(1.0, rel=1e-15)


def test_published_means_become_pseudo_seeds_with_that_mean_and_sd(tmp_path, capsys):
    storage = str(tmp_path / "store")
    code, out, _ = run(capsys, "import", published_tables()["paper-vgg16-fig1"], "--name", "vgg", "--storage", storage)
    assert code == 0 and "16 trials" in out
    finals = load_study("vgg", storage).finals()
    published = {(0.1, 0.008): 0.160, (0.1, 0.0): 0.198, (0.01, 0.008): 0.310, (0.01, 0.0): 0.243}
    seeds = []
    for (lr, wd), mean in published.items():
        arm = select(finals, status="finished", lr=lr, weight_decay=wd)
        values = arm["test_error"].to_numpy()
        assert len(values) == 4
        assert values.mean() == pytest.approx(mean, abs=1e-15)
        assert values.std(ddof=1) == pytest.approx(0.003, rel=1e-12)
        seeds.append(set(arm["config/seed"]))
    assert all(not (a & b) for i, a in enumerate(seeds) for b in seeds[i + 1:])  # arms are never paired
    assert set(finals["epoch"]) == {1000}
    assert set(finals["config/decay_lr"]) == {0.0001} and set(finals["config/model"].astype(str)) == {"vgg16"}


def test_a_published_curve_keeps_one_pseudo_seed_per_trial_across_steps(tmp_path, capsys):
    storage = str(tmp_path / "store")
    assert run(capsys, "import", published_tables()["paper-gpt2-chinchilla"], "--name", "gpt",
               "--storage", storage)[0] == 0
    curves = load_study("gpt", storage).curves()
    arm = select(curves, weight_decay=0.3)
    assert arm["trial_id"].nunique() == 3 and arm.groupby("trial_id").size().tolist() == [3, 3, 3]
    for step, mean in ((30000, 3.48), (50000, 3.285), (60000, 3.23)):
        values = arm.loc[arm["step"] == step, "train_loss"].to_numpy()
        assert values.mean() == pytest.approx(mean, abs=1e-12) and values.std(ddof=1) == pytest.approx(0.002)
    # pseudo-seed k is the same seed at every step: its offset from the mean is the same
    offsets = arm.assign(d=arm["train_loss"] - arm.groupby("step")["train_loss"].transform("mean"))
    assert offsets.groupby("trial_id")["d"].agg(lambda d: d.max() - d.min()).max() == pytest.approx(0, abs=1e-12)
    assert sorted(arm.groupby("trial_id")["training_iteration"].apply(list).tolist()) == [[1, 2, 3]] * 3


# ---------------------------------------------------------------- round trip


def test_round_trip_of_per_seed_curves(tmp_path, capsys):
    table = write(tmp_path / "curves.csv", CURVES)
    storage = str(tmp_path / "store")
    code, out, _ = run(capsys, "import", table, "--name", "curves", "--storage", storage)
    assert code == 0, out
    study = load_study("curves", storage)
    trials = study.trials.sort_values(["config/weight_decay", "config/seed"])
    assert trials[["config/weight_decay", "config/seed", "status"]].astype(str).values.tolist() == [
        ["0.0", "0", "diverged"], ["0.008", "0", "finished"], ["0.008", "1", "finished"]]
    assert set(trials["config/note"]) == {"run a"} and set(trials["config/epochs"]) == {20}
    curves = study.curves()
    seed1 = select(curves, weight_decay=0.008, seed=1).sort_values("training_iteration")
    assert seed1["epoch"].tolist() == [10, 20]  # reports in x order, whatever the row order
    assert seed1["test_error"].tolist() == [0.33, 0.27] and seed1["train_loss"].tolist() == [1.1, 0.8]
    finals = study.finals().set_index(["config/weight_decay", "config/seed"])
    assert finals.loc[(0.008, 0), "test_error"] == 0.25
    assert finals.loc[(0.0, 0), "test_error"] == 0.9 and math.isnan(finals.loc[(0.0, 0), "train_loss"])
    spec = yaml.safe_load(StudyStore(storage, "curves").read_text("spec.yaml"))
    assert spec["trainable"] == "vision" and spec["metric"] == "test_error" and spec["mode"] == "min"
    assert spec["axes"] == {"weight_decay": [0.008, 0.0], "seed": [0, 1]}
    assert spec["config"]["lr"] == 0.1 and spec["config"]["note"] == "run a"


def test_parquet_table_reads_as_the_csv_does(tmp_path, capsys):
    csv_path = write(tmp_path / "curves.csv", CURVES)
    frame = pd.read_csv(csv_path)
    parquet_path = str(tmp_path / "curves.parquet")
    frame.to_parquet(parquet_path, index=False)
    storage = str(tmp_path / "store")
    assert run(capsys, "import", csv_path, "--name", "a", "--storage", storage)[0] == 0
    assert run(capsys, "import", parquet_path, "--name", "b", "--storage", storage)[0] == 0
    a, b = (load_study(n, storage).curves() for n in ("a", "b"))
    order = ["config/weight_decay", "config/seed", "epoch"]
    cols = order + ["status", "test_error", "train_loss"]
    pd.testing.assert_frame_equal(a[cols].sort_values(order).reset_index(drop=True).astype({"status": str}),
                                  b[cols].sort_values(order).reset_index(drop=True).astype({"status": str}))


def test_provenance_names_the_table_and_its_sha256(tmp_path, capsys):
    table = write(tmp_path / "curves.csv", CURVES)
    storage = str(tmp_path / "store")
    run(capsys, "import", table, "--name", "curves", "--storage", storage)
    store = StudyStore(storage, "curves")
    info = json.loads(store.read_text("study.json"))
    sha = hashlib.sha256(Path(table).read_bytes()).hexdigest()
    assert info["source"] == "imported" and info["table"] == table and info["table_sha256"] == sha
    assert info["table_rows"] == 5
    trials = store.read_trials()
    assert set(trials["source"]) == {"imported"} and set(trials["source_sha256"]) == {sha}
    assert sorted(trials["source_rows"]) == ["1,2", "3,4", "5"]


def test_trainable_from_the_option_and_metrics_beside_config_names(tmp_path, capsys):
    table = write(tmp_path / "t.csv", "model,context,steps,weight_decay,step,val_loss,grad_norm\n"
                                      "gpt-nano,16,100,0.1,100,2.5,0.7\n")
    storage = str(tmp_path / "store")
    assert run(capsys, "import", table, "--name", "t", "--storage", storage, "--trainable", "lm")[0] == 0
    finals = load_study("t", storage).finals()
    assert finals.loc[0, "config/steps"] == 100 and finals.loc[0, "val_loss"] == 2.5
    assert finals.loc[0, "grad_norm"] == 0.7 and finals.loc[0, "step"] == 100


def test_overwrite_replaces_a_stored_study(tmp_path, capsys):
    storage = str(tmp_path / "store")
    table = write(tmp_path / "curves.csv", CURVES)
    assert run(capsys, "import", table, "--name", "s", "--storage", storage)[0] == 0
    one = write(tmp_path / "one.csv", "trainable,model,dataset,lr,test_error\nvision,vgg16,cifar10,0.1,0.2\n")
    assert run(capsys, "import", one, "--name", "s", "--storage", storage, "--overwrite")[0] == 0
    study = load_study("s", storage)
    assert len(study.trials) == 1 and study.finals().loc[0, "test_error"] == 0.2
    assert not os.path.exists(os.path.join(storage, "s", "driver.lock"))


# ---------------------------------------------------------------- bad input

GOOD = "trainable,model,dataset,lr,seed,epoch,status,test_error\n"
ROW = "vision,vgg16,cifar10,0.1,0,10,finished,0.2\n"
SUMMARY = "trainable,model,dataset,lr,epoch,n_seeds,test_error,test_error_sd\n"

BAD = {  # name: (table text, the row and column the error names, a word of the problem)
    "empty file": ("", None, "empty"),
    "header only": (GOOD, None, "no rows"),
    "non-numeric metric": (GOOD + ROW + ROW.replace(",10,", ",20,").replace("0.2\n", "n/a\n"),
                           "row 2, column test_error", "expected a number"),
    "non-finite config": (GOOD + ROW.replace(",0.1,", ",inf,"), "row 1, column lr", "finite"),
    "non-finite free config": ("config/width_mult," + GOOD + "nan," + ROW, "row 1, column config/width_mult",
                               "finite"),
    "config the trainable refuses": (GOOD + ROW.replace(",cifar10,", ",mnist1d,"), "row 1, column model", "not mnist1d"),
    "unknown status": (GOOD + ROW.replace("finished", "crashed"), "row 1, column status", "unknown status"),
    "n_seeds below 1": (SUMMARY + "vision,vgg16,cifar10,0.1,10,0,0.2,0.01\n", "row 1, column n_seeds", ">= 1"),
    "n_seeds not an integer": (SUMMARY + "vision,vgg16,cifar10,0.1,10,2.5,0.2,0.01\n", "row 1, column n_seeds",
                               "integer"),
    "negative sd": (SUMMARY + "vision,vgg16,cifar10,0.1,10,3,0.2,-0.01\n", "row 1, column test_error_sd", ">= 0"),
    "sd without n_seeds": ("trainable,model,dataset,lr,epoch,test_error,test_error_sd\n"
                           "vision,vgg16,cifar10,0.1,10,0.2,0.01\n", "header, column test_error_sd", "n_seeds"),
    "mean over seeds without sd": ("trainable,model,dataset,lr,epoch,n_seeds,test_error\n"
                                   "vision,vgg16,cifar10,0.1,10,3,0.2\n", "row 1, column test_error", "spread"),
    "duplicate config, seed and x": (GOOD + ROW + ROW.replace("0.2\n", "0.3\n"), "row 2, column epoch",
                                     "duplicate of row 1"),
    "two rows of a trial without x": ("trainable,model,dataset,lr,seed,test_error\n"
                                      "vision,vgg16,cifar10,0.1,0,0.2\nvision,vgg16,cifar10,0.1,1,0.2\n"
                                      "vision,vgg16,cifar10,0.1,0,0.3\n", "row 3, column step", "rows 1 and 3"),
    "two statuses in one trial": (GOOD + ROW + ROW.replace(",10,", ",20,").replace("finished", "diverged"),
                                  "row 2, column status", "one status"),
    "a spread of the x": (SUMMARY.replace("\n", ",epoch_sd\n") + "vision,vgg16,cifar10,0.1,10,3,0.2,0.01,1\n",
                          "header, column epoch_sd", "no spread"),
    "ragged row": (GOOD + "vision,vgg16,cifar10,0.1,0\n", "row 1, column epoch", "missing"),
    "no trainable": ("model,dataset,lr,epoch,test_error\nvgg16,cifar10,0.1,10,0.2\n", None, "--trainable"),
}


@pytest.fixture
def populated(tmp_path, capsys):
    """A store that already holds a study: bad imports must leave it byte for byte as it is."""
    storage = str(tmp_path / "store")
    assert run(capsys, "import", write(tmp_path / "curves.csv", CURVES), "--name", "taken", "--storage", storage)[0] == 0
    return storage


@pytest.mark.parametrize("case", list(BAD))
def test_bad_table_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys, populated):
    text, where, problem = BAD[case]
    table = write(tmp_path / "bad.csv", text)
    before = files_of(populated)
    code, out, err = run(capsys, "import", table, "--name", "new", "--storage", populated)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {table}: "), err
    if where is not None:
        assert err.startswith(f"error: {table}: {where}: "), err
    assert problem in err
    assert files_of(populated) == before


def test_unreadable_and_missing_files(tmp_path, capsys, populated):
    before = files_of(populated)
    for path, problem in ((str(tmp_path / "missing.csv"), "cannot read"), (str(tmp_path), "cannot read")):
        code, _, err = run(capsys, "import", path, "--name", "new", "--storage", populated)
        assert code == 2 and err.startswith(f"error: {path}: {problem}") and err.count("\n") == 1
    garbage = tmp_path / "table.parquet"
    garbage.write_bytes(b"PAR1 not really parquet")
    code, _, err = run(capsys, "import", str(garbage), "--name", "new", "--storage", populated)
    assert code == 2 and "not a readable Parquet file" in err and err.count("\n") == 1
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    code, _, err = run(capsys, "import", str(binary), "--name", "new", "--storage", populated)
    assert code == 2 and "neither UTF-8 text" in err
    assert files_of(populated) == before


def test_an_existing_study_is_refused_without_overwrite(tmp_path, capsys, populated):
    before = files_of(populated)
    table = write(tmp_path / "t.csv", GOOD + ROW)
    code, _, err = run(capsys, "import", table, "--name", "taken", "--storage", populated)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {table}: study 'taken' already exists") and "--overwrite" in err
    assert files_of(populated) == before


def test_a_bad_table_with_overwrite_keeps_the_stored_study(tmp_path, capsys, populated):
    before = files_of(populated)
    table = write(tmp_path / "t.csv", GOOD + ROW.replace("finished", "exploded"))
    assert run(capsys, "import", table, "--name", "taken", "--storage", populated, "--overwrite")[0] == 2
    assert files_of(populated) == before


# ---------------------------------------------------------------- the paper's tables and the readers


def test_paper_imports_every_shipped_table_in_one_command(tmp_path, capsys):
    storage = str(tmp_path / "store")
    assert tuple(published_tables()) == PAPER_STUDIES
    code, out, _ = run(capsys, "import", "--paper", "--storage", storage)
    assert code == 0 and out.count("imported ") == len(PAPER_STUDIES)
    bf16 = load_study("paper-bf16", storage).trials
    diverged = bf16.loc[bf16["status"] == "diverged", ["config/precision", "config/weight_decay"]].astype(str)
    assert len(bf16) == 18 and diverged.drop_duplicates().values.tolist() == [["bf16-autocast", "0.0"]]
    assert (diverged.shape[0], set(bf16["reports"])) == (3, {0})  # status only: no curves published
    sphere = load_study("paper-sphere-ushape", storage).finals()
    means = sphere.groupby("config/lr")["test_error"].mean()
    assert means.idxmin() == 1e-3 and means[1e-3] == pytest.approx(0.1048) and means[5e-3] == pytest.approx(0.1585)
    # a second run is refused before anything is written: every name is taken
    before = files_of(storage)
    assert run(capsys, "import", "--paper", "--storage", storage)[0] == 2
    assert files_of(storage) == before


def test_paper_writes_nothing_when_one_name_is_taken(tmp_path, capsys):
    storage = str(tmp_path / "store")
    assert run(capsys, "import", write(tmp_path / "c.csv", CURVES), "--name", "paper-vgg16-fig1",
               "--storage", storage)[0] == 0
    before = files_of(storage)
    code, _, err = run(capsys, "import", "--paper", "--storage", storage)
    assert code == 2 and "paper-vgg16-fig1" in err and files_of(storage) == before


def test_report_and_compare_read_imported_studies(tmp_path, capsys):
    storage = str(tmp_path / "store")
    assert run(capsys, "import", "--paper", "--storage", storage)[0] == 0
    for name in ("paper-vgg16-fig1", "paper-gpt2-chinchilla", "paper-bf16"):
        code, out, err = run(capsys, "report", name, "--storage", storage)
        assert code == 0, err
        report = Path(storage, name, "report.md").read_text()
        assert f"# Study `{name}`" in report and "Imported from" in report
    code, out, err = run(capsys, "compare", "paper-resnet18-fig1", "paper-vgg16-fig1", "--storage", storage)
    assert code == 0, err
    comparison = Path(storage, "paper-resnet18-fig1", "compare-paper-vgg16-fig1.md").read_text()
    assert "| trials | 16 | 16 |" in comparison
    assert Path(storage, "paper-resnet18-fig1", "figures", "compare-paper-vgg16-fig1-test_error.png").is_file()


def test_study_cli_lists_and_shows_imported_studies(tmp_path, capsys):
    from study.cli import main as study_main

    storage = str(tmp_path / "store")
    assert run(capsys, "import", published_tables()["paper-bf16"], "--name", "bf16", "--storage", storage)[0] == 0
    assert study_main(["status", "bf16", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "18 trials: 3 diverged, 15 finished" in out and "no driver is running it" in out
    assert study_main(["list", "--storage", storage]) == 0
    assert re.search(r"^  bf16 +18 trials: 3 diverged, 15 finished$", capsys.readouterr().out, flags=re.M)


# ---------------------------------------------------------------- counterfactual fixtures

OUTCOMES = {"pass", "fail", "inconclusive", "not-applicable"}


def test_every_counterfactual_has_expectations_and_imports():
    expectations = json.loads((FIXTURES / "expectations.json").read_text())
    assert set(expectations) == {p.name for p in FIXTURES.glob("*.csv")}
    for name, outcomes in expectations.items():
        assert outcomes and set(outcomes.values()) <= OUTCOMES, name
        table = parse_table(str(FIXTURES / name))
        assert table.trials


def _finals(name):
    table = parse_table(str(FIXTURES / name))
    rows = [{**{f"config/{k}": v for k, v in t.config.items()}, "status": t.status, **t.reports[-1]}
            for t in table.trials]
    return pd.DataFrame(rows), table


def test_counterfactuals_break_their_claim_the_way_they_say():
    # (a) WD hurts at the large LR; the best point is WD 0 at the large LR
    finals, _ = _finals("wd-helps-only-at-small-lr.csv")
    means = finals.groupby(["config/lr", "config/weight_decay"])["test_error"].mean()
    assert means.idxmin() == (0.08, 0.0) and means[(0.08, 0.0125)] - means[(0.08, 0.0)] > 0.04
    # (f) the VGG numbers, one seed each
    finals, table = _finals("one-seed.csv")
    assert len(table.trials) == 4 and finals.groupby(["config/lr", "config/weight_decay"]).size().max() == 1
    # (d) error falls with LR over the finished LRs; the largest LR diverged in every seed
    finals, _ = _finals("blown-up-end-arm.csv")
    finished = finals[finals["status"] == "finished"].groupby("config/lr")["test_error"].mean()
    assert finished.is_monotonic_decreasing and len(finished) == 8
    assert set(finals.loc[finals["config/lr"] == finals["config/lr"].max(), "status"]) == {"diverged"}
    # (e) fp32 λ=0 seed 1 spikes above twice its running minimum, recovers, and is finished
    _, table = _finals("recovered-spike.csv")
    spiky = next(t for t in table.trials if t.config["precision"] == "fp32" and t.config["weight_decay"] == 0
                 and t.config["seed"] == 1)
    losses = [r["train_loss"] for r in spiky.reports]
    peak = losses.index(max(losses))
    assert spiky.status == "finished" and max(losses) > 2 * min(losses[:peak]) and losses[-1] < min(losses[:peak])


def _arm_means(name, step):
    table = parse_table(str(FIXTURES / name))
    frame = pd.DataFrame([{"wd": t.config["weight_decay"], **r} for t in table.trials for r in t.reports])
    return frame[frame["step"] == step].groupby("wd")["train_loss"].mean()


def test_lm_counterfactuals_order_the_arms_as_they_say():
    for step in (30000, 50000, 60000):  # (b) λ > 0 higher everywhere
        means = _arm_means("no-crossing.csv", step)
        assert means[0.1] > means[0.0] and means[0.3] > means[0.0]
    first, *later = (12500, 17500, 22500, 27500, 32500, 37500, 50000, 60000)
    means = _arm_means("crossing-at-first-report.csv", first)  # (c) higher at the first report only
    assert means[0.1] > means[0.0] and means[0.3] > means[0.0]
    for step in later:
        means = _arm_means("crossing-at-first-report.csv", step)
        assert means[0.1] < means[0.0] and means[0.3] < means[0.0]
