"""An uneven grid: `exclude` leaves grid points out, `cases` set config per point; both through
the spec, the dry run, packing, a launch and a resume after the driver died."""

import io
import pathlib

import pandas as pd

from analysis.figures.style import seed_span
from analysis.load import load_study, varied_axes
from analysis.report import write_report
from study import parse_spec
from study.cli import main
from study.launch import launch, resume
from study.packs import pack_groups, tune_indices
from study.spec import load_spec
from study.store import StudyStore
from tests.conftest import NANO_LM

UNEVEN = {
    "exclude": [{"schedule": "constant", "seed": 1}],
    "cases": [{"when": {"schedule": "constant"}, "config": {"tail_steps": 0}}],
}


def lm_spec(**extra):
    return parse_spec({"name": "uneven", "trainable": "lm",
                       "config": {**NANO_LM, "tail_steps": 2, "tail_lr": 1e-4},
                       "axes": {"schedule": ["cosine", "constant"], "seed": [0, 1]},
                       "resources": {"cpu": 1}, **UNEVEN, **extra})


def test_exclude_drops_points_and_cases_set_config_in_order():
    spec = parse_spec({"name": "u", "trainable": "lm", "config": {"steps": 10, "eval_every": 5},
                       "axes": {"schedule": ["cosine", "constant"], "weight_decay": [0.0, 0.1], "seed": [0, 1, 2]},
                       "exclude": [{"schedule": "constant", "seed": 2}, {"weight_decay": 0.1, "seed": 0}],
                       "cases": [{"when": {"schedule": "constant"}, "config": {"steps": 6, "eval_every": 3}},
                                 {"when": {"schedule": "constant", "weight_decay": 0.1}, "config": {"steps": 4}}]})
    # 12 points; constant·seed 2 (2 points) and wd 0.1·seed 0 (2 points) out, none counted twice
    assert spec.num_points == spec.num_trials == 8 and spec.uneven
    assert spec.grid() == [
        {"schedule": "cosine", "weight_decay": 0.0, "seed": 0}, {"schedule": "cosine", "weight_decay": 0.0, "seed": 1},
        {"schedule": "cosine", "weight_decay": 0.0, "seed": 2}, {"schedule": "cosine", "weight_decay": 0.1, "seed": 1},
        {"schedule": "cosine", "weight_decay": 0.1, "seed": 2}, {"schedule": "constant", "weight_decay": 0.0, "seed": 0},
        {"schedule": "constant", "weight_decay": 0.0, "seed": 1},
        {"schedule": "constant", "weight_decay": 0.1, "seed": 1}]
    steps = [(c["schedule"], c["weight_decay"], c["steps"], c["eval_every"]) for c in spec.trial_configs()]
    assert steps[:5] == [("cosine", w, 10, 5) for w in (0.0, 0.0, 0.0, 0.1, 0.1)]
    assert steps[5:] == [("constant", 0.0, 6, 3), ("constant", 0.0, 6, 3), ("constant", 0.1, 4, 3)]  # later case wins
    assert spec.values_of("steps") == (10, 6, 4) and spec.values_of("seed") == (0, 1, 2)
    assert spec.grid_points([0, 7]) == [spec.grid()[0], spec.grid()[7]]
    # what the store keeps (spec.yaml) reads back as the same spec
    again = parse_spec(spec.to_dict(), "spec.yaml")
    assert again.grid() == spec.grid() and again.trial_configs() == spec.trial_configs()


def test_an_even_grid_keeps_its_spec_yaml_and_its_count():
    spec = parse_spec({"name": "e", "trainable": "lm", "axes": {"seed": [0, 1, 2]}})
    assert not spec.uneven and spec.num_points == 3 and spec.values_of("steps", 7) == (7,)
    assert "exclude" not in spec.to_dict() and "cases" not in spec.to_dict()


def test_a_selection_of_a_value_the_axis_does_not_hold_selects_nothing_and_the_dry_run_says_so(capsys, tmp_path):
    # --set axes.seed=[...] leaves the preset's selections standing: seed 43 is gone, so is its exclusion
    spec = load_spec("chinchilla-tiny", ["axes.seed=[1, 2]"])
    entries = [f"exclude[{i}]" for i in range(8)]
    assert spec.num_points == 8 and spec.unmatched() == entries
    assert [c["tail_steps"] for c in spec.trial_configs()] == [320] * 4 + [0] * 4  # the case still applies
    assert main(["launch", "chinchilla-tiny", "--set", "axes.seed=[1, 2]", "--dry-run"]) == 0
    assert f"note: {', '.join(entries)} select no grid point (a value its axis does not hold)" in capsys.readouterr().out
    # a key --set fixes selects every point or none: the benchmarks run the preset's cosine arm alone
    cosine = load_spec("chinchilla-tiny", ["schedule=cosine", "axes.seed=[0]"])
    assert [c["tail_steps"] for c in cosine.trial_configs()] == [320, 320]
    constant = load_spec("chinchilla-tiny", ["schedule=constant"])
    assert constant.num_points == 6 and {(c["tail_steps"], c["steps"]) for c in constant.trial_configs()} == {(0, 1200)}


def test_dry_run_shows_what_is_excluded_and_set(capsys, tmp_path):
    code = main(["launch", "chinchilla-tiny", "--dry-run", "--storage", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0
    assert ("excluded: schedule='cosine', seed=85; schedule='cosine', seed=86; schedule='cosine', seed=87; "
            "schedule='constant', seed=80;") in out
    assert "case: schedule='constant' -> steps=1200, tail_steps=0, eval_batches=32" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()
            and len(line.split()) == 7]
    assert [(r[1], r[3], r[4], r[5], r[6]) for r in rows] == [
        *(("cosine", s, "16", "1600", "320") for _ in range(2) for s in ("80", "81", "82", "83", "84")),
        *(("constant", s, "32", "1200", "0") for _ in range(2) for s in ("85", "86", "87"))]
    assert out.rstrip().endswith("16 trials")
    assert not (tmp_path / "s").exists()


def test_packs_split_where_cases_set_an_unpackable_key():
    spec = lm_spec(pack=4)
    # schedule and tail_steps are not packable: cosine seeds 0, 1 together; constant seed 0 alone
    assert pack_groups(spec) == [[0, 1], [2]]
    assert tune_indices(spec) == [0, 1, 2]


def _check_uneven_study(result):
    trials = result.trials().sort_values(["config/schedule", "config/seed"])
    assert result.complete and len(trials) == 3 and (trials["status"] == "finished").all()
    got = list(zip(trials["config/schedule"], trials["config/seed"], trials["config/tail_steps"]))
    assert got == [("constant", 0, 0), ("cosine", 0, 2), ("cosine", 1, 2)]
    metrics = result.metrics()
    last = metrics.groupby("trial_id")["step"].max()
    ends = {tuple(r[1:]): last[r[0]] for r in trials[["trial_id", "config/schedule", "config/seed"]].itertuples(index=False)}
    assert ends == {("constant", 0): 6, ("cosine", 0): 8, ("cosine", 1): 8}  # the cosine arms ran the 2-step tail


def test_an_uneven_grid_runs_its_points_and_their_configs(ray_session, storage):
    _check_uneven_study(launch(lm_spec(), storage=storage, progress=False))
    # the analysis reads tail_steps as what a case set, not as an axis of its own
    study = load_study("uneven", storage)
    for frame in (study.trials, study.curves(), study.finals()):
        assert varied_axes(frame) == ["config/schedule"]
        assert varied_axes(frame, derived=True) == ["config/tail_steps", "config/schedule"]
    assert study.seed_range() == (1, 2)  # constant: seed 0 only; cosine: 0 and 1
    assert "seeds per grid point: 1–2" in pathlib.Path(write_report(storage, "uneven")).read_text()


def test_seed_span_says_how_many_seeds_each_mean_is_over():
    assert seed_span([3, 3, 3]) == "3" and seed_span(pd.Series([3, 5, 4])) == "3–5" and seed_span([]) == "0"


def test_an_uneven_grid_runs_packed_as_unpacked(ray_session, storage):
    _check_uneven_study(launch(lm_spec(pack=4, name="uneven-packed"), storage=storage, progress=False))


def test_an_uneven_grid_resumes_after_its_driver_died(ray_session, tmp_path, monkeypatch):
    from tests.test_faults import assert_exactly_once_and_as_uninterrupted, crash_driver

    storage = str(tmp_path / "store")
    spec = parse_spec({"name": "crash-uneven", "trainable": "probe",
                       "config": {"steps": 12, "checkpoint_every": 3, "sleep_s": 0.02},
                       "axes": {"weight_decay": [0.0, 0.1], "seed": [0, 1]}, "resources": {"cpu": 1},
                       "keep_checkpoints": None, "exclude": [{"weight_decay": 0.1, "seed": 1}],
                       "cases": [{"when": {"weight_decay": 0.1}, "config": {"steps": 9}}]})
    crash_driver(spec, storage, monkeypatch, finished_before_crash=1)
    result = resume("crash-uneven", storage=storage, stream=io.StringIO())
    trials = result.trials()
    assert result.complete and len(trials) == 3 and (trials["status"] == "finished").all()
    got = sorted(zip(trials["config/weight_decay"], trials["config/seed"], trials["config/steps"]))
    assert got == [(0.0, 0, 12), (0.0, 1, 12), (0.1, 0, 9)]
    assert_exactly_once_and_as_uninterrupted(StudyStore(storage, "crash-uneven"))
