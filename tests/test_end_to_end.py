"""A real 4-trial grid through Ray Tune → Parquet store → analysis report."""

import io
import os

import yaml

from analysis.report import write_report
from study import launch, parse_spec
from tests.conftest import NANO_LM


def test_grid_to_store_to_report(ray_session, storage):
    spec = parse_spec({
        "name": "e2e", "trainable": "lm", "config": NANO_LM,
        "axes": {"weight_decay": [0.0, 0.1], "schedule": ["cosine", "constant"]},
        "resources": {"cpu": 1},
    })
    out = io.StringIO()
    result = launch(spec, storage=storage, stream=out)

    trials = result.trials()
    assert len(trials) == 4
    assert sorted(trials["status"]) == ["finished"] * 4
    assert sorted(zip(trials["config/weight_decay"], trials["config/schedule"])) == [
        (0.0, "constant"), (0.0, "cosine"), (0.1, "constant"), (0.1, "cosine")]
    assert (trials["config/steps"] == NANO_LM["steps"]).all()
    assert trials["host"].notna().all() and trials["versions"].str.contains('"torch"').all()

    metrics = result.metrics()
    reports_per_trial = NANO_LM["steps"] // NANO_LM["eval_every"]
    assert len(metrics) == 4 * reports_per_trial
    assert metrics.groupby("trial_id")["step"].apply(list).tolist() == [[2, 4, 6]] * 4
    assert metrics["val_loss"].notna().all() and metrics["train_loss"].notna().all()
    # the trials table's final metric is the last reported value
    last = metrics.groupby("trial_id")["val_loss"].last()
    final = trials.set_index("trial_id")["val_loss"].sort_index()
    assert final.to_dict() == last.to_dict()

    assert "trials 4/4 done" in out.getvalue()
    stored_spec = yaml.safe_load(open(os.path.join(storage, "e2e", "spec.yaml")))
    assert stored_spec["axes"]["schedule"] == ["cosine", "constant"]

    report = write_report(storage, "e2e")
    text = open(report).read()
    assert "4 trials: 4 finished" in text
    figures = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert figures
    for figure in figures:
        path = os.path.join(storage, "e2e", figure)
        assert os.path.getsize(path) > 1000
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_relaunch_of_an_existing_name_is_refused(ray_session, storage, capsys):
    from study.cli import main

    args = ["launch", "quickstart", "--storage", storage, "--name", "twice", "--no-report",
            "--set", "model=gpt-nano", "--set", "steps=2", "--set", "eval_every=2", "--set", "context=16",
            "--set", "batch_size=2", "--set", "eval_batches=1", "--set", "axes.weight_decay=[0.0]",
            "--set", "axes.schedule=[cosine]"]
    assert main(args) == 0
    before = sorted(os.listdir(os.path.join(storage, "twice")))
    assert main(args) == 2
    assert "study 'twice' already exists" in capsys.readouterr().err
    assert sorted(os.listdir(os.path.join(storage, "twice"))) == before
