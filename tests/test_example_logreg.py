"""The worked example of docs/write-a-trainable.md: its trainable against gradient descent by
hand, the spec's ``imports`` hook, and the guide's commands run end to end."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from study import SpecError, StudyStore, parse_spec
from study.cli import main as study_main
from trainables.session import BareSession

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "write-a-trainable.md"
SPEC = {"name": "lr", "imports": ["examples.logreg.trainable"], "trainable": "logreg", "axes": {"lr": [1.0]}}


def _by_hand(lr: float, wd: float, epochs: int, cfg) -> list[dict]:
    """Full-batch gradient descent on the mean logistic loss, coupled L2, in float64 NumPy."""
    from examples.logreg.trainable import make_data

    x, y, x_test, y_test = (t.double().numpy() for t in make_data(cfg))
    w, out = np.zeros(x.shape[1]), []
    loss = lambda z, t: np.mean(np.logaddexp(0.0, z) - t * z)  # noqa: E731  (BCE with logits)
    for epoch in range(1, epochs + 1):
        grad = x.T @ (1.0 / (1.0 + np.exp(-(x @ w))) - y) / len(y)
        w = w - lr * (grad + wd * w)
        out.append({"epoch": epoch, "lr": lr, "train_loss": loss(x @ w, y), "weight_norm": np.linalg.norm(w),
                    "test_error": np.mean((x_test @ w > 0) != y_test)})
    return out


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_reports_are_gradient_descent_by_hand(wd):
    from examples.logreg.trainable import LogRegConfig, run

    config = {"lr": 2.0, "weight_decay": wd, "epochs": 4, "samples": 64, "dim": 8, "seed": 3}
    session = BareSession()
    run(config, session)
    expected = _by_hand(2.0, wd, 4, LogRegConfig(**config))
    assert session.status == "finished" and len(session.reports) == 4
    for got, want in zip(session.reports, expected):
        assert got.keys() == want.keys()
        for key in ("train_loss", "weight_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), (key, got["epoch"])
        assert got["test_error"] == pytest.approx(want["test_error"], abs=1 / 64 + 1e-9)  # one sample at most
    if wd:  # the decay really acts: the norm is below the undecayed run's
        undecayed = _by_hand(2.0, 0.0, 4, LogRegConfig(**config))
        assert session.reports[-1]["weight_norm"] < undecayed[-1]["weight_norm"]


def test_a_blow_up_is_a_diverged_result():
    from examples.logreg.trainable import run

    session = BareSession()
    run({"lr": 10.0, "weight_decay": 0.3, "epochs": 30}, session)  # decay factor 1 - lr * wd = -2 per step
    assert session.status == "diverged"
    assert len(session.reports) < 30
    assert session.reports[-1]["train_loss"] > 10.0  # max_loss
    assert all(r["train_loss"] <= 10.0 for r in session.reports[:-1])


def test_imports_register_the_trainable_and_round_trip():
    spec = parse_spec(SPEC)
    assert spec.trainable == "logreg" and spec.imports == ("examples.logreg.trainable",)
    assert spec.to_dict()["imports"] == ["examples.logreg.trainable"]
    assert parse_spec(spec.to_dict()).imports == spec.imports  # what spec.yaml holds loads back
    plain = parse_spec({"name": "p", "trainable": "probe", "axes": {"lr": [0.1]}})
    assert "imports" not in plain.to_dict()  # a spec without imports is stored as before


@pytest.mark.parametrize("imports, where, words", [
    (["no_such_module_xyz"], "imports[0]", "ModuleNotFoundError"),
    (["examples.logreg.trainable", "json.no_such_sub"], "imports[1]", "ModuleNotFoundError"),
    ("examples.logreg.trainable", "imports", "expected a list of module names"),
    (["../evil"], "imports", "expected a list of module names"),
    ([3], "imports", "expected a list of module names"),
])
def test_bad_imports_are_one_line_spec_errors(imports, where, words):
    with pytest.raises(SpecError) as info:
        parse_spec({**SPEC, "imports": imports}, "s.yaml")
    message = str(info.value)
    assert message.startswith(f"s.yaml: {where}: ") and words in message and "\n" not in message


def test_a_module_that_raises_on_import_is_a_spec_error(tmp_path, monkeypatch):
    (tmp_path / "broken_trainable_mod.py").write_text("raise RuntimeError('no GPU here\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match=r"^s\.yaml: imports\[0\]: cannot import 'broken_trainable_mod': "
                                        r"RuntimeError: no GPU here$"):
        parse_spec({**SPEC, "imports": ["broken_trainable_mod"]}, "s.yaml")


def test_bad_imports_from_the_cli_exit_2_and_write_nothing(tmp_path, capsys):
    storage = tmp_path / "store"
    code = study_main(["launch", str(ROOT / "examples/logreg/study.yaml"), "--storage", str(storage),
                       "--set", "imports=[no_such_module_xyz]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and "imports[0]" in err
    assert not storage.exists()


def _guide_commands() -> list[list[str]]:
    """The guide's bash block that runs the example, each command split as a shell would."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S)
    block = next(b for b in blocks if "examples/logreg/study.yaml" in b)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_the_guides_commands_run_the_study_end_to_end(ray_session, tmp_path, monkeypatch, capsys):
    from analysis.cli import main as analysis_main

    monkeypatch.chdir(ROOT)  # the commands run from the repository root, as the guide says
    storage = str(tmp_path / "store")
    commands = _guide_commands()
    assert [c[:4] for c in commands] == [["python", "-m", "study", "launch"]] * 2 + [["python", "-m", "analysis", "report"]]
    for command in commands:
        argv = [storage if a == "/tmp/logreg-store" else a for a in command[3:]]
        entry = {"study": study_main, "analysis": analysis_main}[command[2]]
        assert entry(argv) == 0, (argv, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "study logreg: 2 diverged, 16 finished" in out

    store = StudyStore(storage, "logreg")
    trials = store.read_trials()
    assert len(trials) == 18
    blown = (trials["config/lr"] == 10.0) & (trials["config/weight_decay"] == 0.3)
    assert set(trials.loc[blown, "status"]) == {"diverged"} and blown.sum() == 2
    assert set(trials.loc[~blown, "status"]) == {"finished"}
    assert (trials.loc[~blown, "reports"] == 30).all()
    metrics = store.read_metrics()
    assert {"epoch", "lr", "train_loss", "weight_norm", "test_error"} <= set(metrics.columns)
    last = metrics.sort_values("epoch").groupby("trial_id")["test_error"].last()
    assert np.allclose(trials.set_index("trial_id")["test_error"].loc[last.index], last)  # trials hold the last report
    report = Path(storage, "logreg", "report.md").read_text()
    assert "Study `logreg`" in report and "18 trials: 2 diverged, 16 finished" in report
