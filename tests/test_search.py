"""Search beyond the grid through real Ray Tune, with the probe trainable.

A seeded Optuna or random search draws the same configs again; ASHA stops the trials that
lag (the store says ``stopped`` and where); Optuna's own storage holds one study per grid
point and continues after a driver crash without running finished trials again. The
searcher and the per-grid-point scheduler are also checked on their own, without a Tune run.
"""

import io
import math
import os
import shutil

import optuna
import pandas as pd
import pytest

from analysis.load import load_study
from analysis.report import build_report
from study import parse_spec
from study.launch import launch, resume
from study.store import StudyStore
from tests.test_faults import assert_exactly_once_and_as_uninterrupted, crash_driver
from tests.test_storage import s3_server  # noqa: F401  (the moto S3 server fixture)


def search_spec(name: str, **changes) -> dict:
    """An Optuna + ASHA search of the probe: LR ≥ 2 diverges, a small LR lags, both clearly worse."""
    spec = {
        "name": name, "trainable": "probe", "config": {"steps": 27, "noise": 0.05},
        "axes": {"weight_decay": [0.0, 0.5], "lr": {"loguniform": [0.01, 3.0]}},
        "search": "optuna", "num_samples": 5, "search_seed": 7,
        "sampler": {"tpe": {"n_startup_trials": 3}},
        "scheduler": {"asha": {"grace_period": 3, "reduction_factor": 3}},
        "max_concurrent": 1,  # one trial at a time: TPE's later suggestions depend on what ended before
        "resources": {"cpu": 1},
    }
    spec.update(changes)
    return spec


def optuna_trials(storage: str, name: str, study_name: str) -> list:
    path = os.path.join(storage, name, "optuna.db")
    return optuna.load_study(study_name=study_name, storage=f"sqlite:///{path}").get_trials()


def sequence(storage: str, name: str) -> list[tuple]:
    """Every Optuna trial of both searches in the order they were asked: (study, number, lr, state)."""
    return [(study, t.number, t.params["lr"], t.state.name, t.user_attrs.get("status"))
            for study in (f"{name}/weight_decay=0", f"{name}/weight_decay=0.5")
            for t in optuna_trials(storage, name, study)]


@pytest.fixture(scope="module")
def asha_search(ray_session, tmp_path_factory):
    storage = str(tmp_path_factory.mktemp("asha") / "store")
    out = io.StringIO()
    result = launch(parse_spec(search_spec("asha")), storage=storage, stream=out)
    return result, storage, out.getvalue()


def test_optuna_asha_search_stores_stopped_trials_with_the_step_they_reached(asha_search):
    result, storage, out = asha_search
    assert result.complete and "trials 10/10 done" in out
    trials = result.trials()
    assert len(trials) == 10  # 5 per weight decay
    assert sorted(trials.groupby("config/weight_decay").size().tolist()) == [5, 5]
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 2, trials[["status", "config/lr", "step"]]
    # stopped at an ASHA rung (steps 3 and 9), before the end (27): the store says where
    assert set(stopped["step"]) <= {3, 9} and (stopped["training_iteration"] == stopped["step"]).all()
    metrics = result.metrics()
    for _, row in stopped.iterrows():
        steps = metrics.loc[metrics["trial_id"] == row["trial_id"], "step"]
        assert steps.max() == row["step"] and len(steps) == row["reports"]
    finished = trials[trials["status"] == "finished"]
    assert len(finished) >= 2 and (finished["step"] == 27).all()
    # the stopped ones are the clearly worse: each had a worse loss at its rung than some trial that went on
    for _, row in stopped.iterrows():
        at_rung = metrics[(metrics["step"] == row["step"])
                          & metrics["trial_id"].isin(trials.loc[trials["config/weight_decay"] == row["config/weight_decay"],
                                                                "trial_id"])]
        assert row["loss"] > at_rung["loss"].min()


def test_each_grid_point_has_its_own_optuna_study_with_the_store_statuses(asha_search):
    result, storage, _ = asha_search
    trials = result.trials().set_index("trial_id")
    for wd in (0.0, 0.5):
        study = optuna.load_study(study_name=f"asha/weight_decay={wd:g}",
                                  storage=f"sqlite:///{os.path.join(storage, 'asha', 'optuna.db')}")
        assert study.user_attrs["wd_study"]["grid_point"] == {"weight_decay": wd}
        assert len(study.trials) == 5
        for t in study.trials:
            row = trials.loc[t.user_attrs["ray_trial_id"]]
            assert row["config/weight_decay"] == wd and row["config/lr"] == t.params["lr"]
            assert t.user_attrs["status"] == row["status"]
            expected = {"finished": "COMPLETE", "stopped": "PRUNED", "diverged": "PRUNED"}[row["status"]]
            assert t.state.name == expected
            if expected == "COMPLETE":
                assert t.value == row["loss"]
            # intermediate values: the loss at every reported step, the last one where it was stopped
            assert max(t.intermediate_values) == row["step"]
            assert t.intermediate_values[row["step"]] == row["loss"]
        best = study.best_trial
        assert trials.loc[best.user_attrs["ray_trial_id"], "status"] == "finished"


def test_same_seed_same_sequence_of_configs(asha_search, ray_session, tmp_path):
    _, first_storage, _ = asha_search
    storage = str(tmp_path / "store")
    launch(parse_spec(search_spec("asha")), storage=storage, stream=io.StringIO())
    first, again = sequence(first_storage, "asha"), sequence(storage, "asha")
    assert first == again  # the same LRs, in the same order, with the same outcomes
    # 5 trials per search, 3 random then TPE's (which depend on the outcomes, and still repeat)
    assert len(first) == 10
    for study in ("asha/weight_decay=0", "asha/weight_decay=0.5"):
        assert len({lr for name, _, lr, _, _ in first if name == study}) == 5


def test_analysis_keeps_stopped_trials_apart(asha_search):
    result, storage, _ = asha_search
    from analysis import search_results

    study = load_study("asha", storage)
    table = search_results.study_summary(study)
    trials = result.trials()
    for _, row in table.iterrows():
        rows = trials[trials["config/weight_decay"] == row["config/weight_decay"]]
        assert row["stopped"] == (rows["status"] == "stopped").sum()
        assert row["finished"] == (rows["status"] == "finished").sum()
        done = rows[rows["status"] == "finished"]
        assert row["best"] == done["loss"].min()  # only finished trials have a value
        assert row["compute"] == rows["step"].sum()  # every trial's steps count, stopped ones too
        assert row["best_lr"] == done.loc[done["loss"].idxmin(), "config/lr"]
    report = build_report(study)
    assert "## Search" in report.markdown and "figures/search_progress.png" in report.files
    assert "figures/heatmap.png" not in report.files  # lr is searched, not a grid
    unfinished = report.markdown.split("## Trials that did not finish")[1].split("## Spec")[0]
    assert "| step |" in unfinished.replace("   ", " ").replace("  ", " ") or "step" in unfinished.splitlines()[2]


def test_random_search_same_seed_same_configs(ray_session, tmp_path):
    spec = search_spec("random", search="random", sampler=None, scheduler=None, num_samples=3, max_concurrent=None,
                       config={"steps": 4})
    spec = {k: v for k, v in spec.items() if v is not None}
    runs = []
    for name in ("a", "b"):
        storage = str(tmp_path / name)
        result = launch(parse_spec(spec), storage=storage, stream=io.StringIO())
        assert result.complete
        trials = result.trials().sort_values("trial_id")  # Tune's ids count up in the order it drew them
        runs.append(list(zip(trials["config/weight_decay"], trials["config/lr"])))
    assert runs[0] == runs[1] and len(runs[0]) == 6
    # a paired design: each of the 3 sampled LRs at both weight decays
    lrs = pd.DataFrame(runs[0], columns=["wd", "lr"]).groupby("wd")["lr"].apply(sorted)
    assert lrs[0.0] == lrs[0.5] and len(set(lrs[0.0])) == 3
    assert all(0.01 <= lr <= 3.0 for _, lr in runs[0])


# ---------------------------------------------------------------- an interrupted Optuna search resumes


def _crash_search(storage, monkeypatch):  # (see crashed_search)
    """An Optuna search whose driver 'dies' once two trials finished and another is past a
    checkpoint, with Ray Tune's state saved only at the start (the worst case, as in test_faults)."""
    spec = parse_spec(search_spec("crash", config={"steps": 12, "checkpoint_every": 3, "sleep_s": 0.02},
                                  axes={"weight_decay": [0.0, 0.5], "lr": {"loguniform": [0.01, 1.0]}},
                                  num_samples=3, scheduler=None, max_concurrent=2, keep_checkpoints=None,
                                  sampler={"tpe": {"n_startup_trials": 2}}))
    crash_driver(spec, storage, monkeypatch, finished_before_crash=2)


@pytest.fixture(scope="module")
def crashed_search(ray_session, tmp_path_factory):
    """A store left by a driver that died mid-search, and what the store and Optuna held then."""
    storage = str(tmp_path_factory.mktemp("crashed") / "store")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _crash_search(storage, monkeypatch)
    before = StudyStore(storage, "crash").read_trials().set_index("trial_id")
    asked = {study: [(t.number, t.params["lr"], t.state.name) for t in optuna_trials(storage, "crash", study)]
             for study in ("crash/weight_decay=0", "crash/weight_decay=0.5")}
    assert (before["status"] == "finished").sum() >= 2 and (before["status"] == "running").any()
    return storage, before, asked


def _resume_crashed(crashed_search, root: str, *, tune_state: bool):
    storage, before, asked_before = crashed_search
    shutil.copytree(storage, root)  # each test resumes its own copy (a moved study resumes too)
    if not tune_state:  # the same crash, had Ray Tune saved nothing at all
        shutil.rmtree(os.path.join(root, "crash", "tune"))
    finished = before.index[before["status"] == "finished"]
    result = resume("crash", storage=root, stream=io.StringIO())
    assert result.complete
    after = result.trials().set_index("trial_id")
    assert len(after) == 6 and (after["status"] == "finished").all()
    for trial_id in finished:  # not run again
        assert after.loc[trial_id, "ended_at"] == before.loc[trial_id, "ended_at"]
        assert after.loc[trial_id, "restarts"] == 0
    assert_exactly_once_and_as_uninterrupted(result.store)
    lost_trials = [t for study in asked_before for t in optuna_trials(root, "crash", study) if t.user_attrs.get("lost")]
    for study, earlier in asked_before.items():
        trials = optuna_trials(root, "crash", study)
        counted = [t for t in trials if not t.user_attrs.get("lost")]
        assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
        # what Optuna had asked before the crash continues: the same trials, not new draws
        assert [(t.number, t.params["lr"]) for t in trials[:len(earlier)]] == [(n, lr) for n, lr, _ in earlier]
        for lost in (t for t in trials if t.user_attrs.get("lost")):  # run again with the same LR
            assert lost.state.name == "FAIL"
            assert any(t.user_attrs.get("rerun_of") == lost.number and t.params == lost.params for t in counted)
        # no LR ran twice, and every stored trial is one of Optuna's, with its value
        wd = float(study.split("=")[1])
        at_wd = after[after["config/weight_decay"] == wd].set_index("config/lr")
        assert sorted(at_wd.index) == sorted(t.params["lr"] for t in counted)
        assert all(t.value == at_wd.loc[t.params["lr"], "loss"] for t in counted)
    return lost_trials


def test_resume_of_an_interrupted_optuna_search_does_not_repeat_finished_trials(crashed_search, tmp_path):
    _resume_crashed(crashed_search, str(tmp_path / "store"), tune_state=True)


def test_a_search_resumed_without_tune_state_reruns_its_lost_trials(crashed_search, tmp_path):
    lost = _resume_crashed(crashed_search, str(tmp_path / "store"), tune_state=False)
    _, _, asked_before = crashed_search
    # no Ray Tune state: every trial Optuna had running was lost (and ran again with its LR)
    running = sum(state == "RUNNING" for earlier in asked_before.values() for _, _, state in earlier)
    assert len(lost) == running >= 1


# ---------------------------------------------------------------- the searcher and the scheduler alone


def _searcher(tmp_path, **changes):
    from study.search.tune import ConditionedOptunaSearch
    from study.spec import parse_spec as parse

    spec = parse(search_spec("unit", scheduler=None, max_concurrent=None))
    args = dict(points=spec.grid(), names=["unit/wd=0", "unit/wd=0.5"], ranges=spec.ranges, fixed=spec.config,
                metric="loss", mode="min", num_samples=2, sampler={"tpe": {}}, seed=0, time_attr="step",
                url=f"sqlite:///{tmp_path / 'optuna.db'}")
    args.update(changes)
    return ConditionedOptunaSearch(**args)


def test_the_searcher_takes_the_grid_points_in_turn_and_stops_at_its_budget(tmp_path):
    from ray.tune.search import Searcher

    searcher = _searcher(tmp_path)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c["weight_decay"] for c in configs] == [0.0, 0.5, 0.0, 0.5]
    assert configs[0]["lr"] == configs[1]["lr"]  # the same seed at every point: paired first draws
    assert searcher.suggest("t4") == Searcher.FINISHED
    assert searcher.budget_left() == 0
    searcher.on_trial_result("t0", {"step": 1, "loss": 2.0, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"step": 2, "loss": 1.5, "trial_status": "finished", "training_iteration": 2})
    searcher.on_trial_complete("t1", {"step": 1, "loss": 9.0, "training_iteration": 1})  # stopped by a scheduler
    searcher.on_trial_complete("t2", error=True)
    searcher.on_trial_result("t3", {"step": 1, "loss": math.inf})  # a non-finite value is not reported
    searcher.on_trial_complete("t3", {"step": 2, "diverged_step": 2, "trial_status": "diverged"})
    wd0 = optuna.load_study(study_name="unit/wd=0", storage=searcher.url).trials
    wd5 = optuna.load_study(study_name="unit/wd=0.5", storage=searcher.url).trials
    assert [(t.state.name, t.value, t.intermediate_values, t.user_attrs["status"]) for t in wd0] == [
        ("COMPLETE", 1.5, {1: 2.0, 2: 1.5}, "finished"), ("FAIL", None, {}, "failed")]
    assert [(t.state.name, t.intermediate_values, t.user_attrs["status"]) for t in wd5] == [
        ("PRUNED", {1: 9.0}, "stopped"), ("PRUNED", {}, "diverged")]


def test_a_searcher_seeded_differently_draws_differently(tmp_path):
    a = _searcher(tmp_path / "a", url=f"sqlite:///{tmp_path / 'a.db'}").suggest("x")
    b = _searcher(tmp_path / "b", url=f"sqlite:///{tmp_path / 'b.db'}", seed=1).suggest("x")
    c = _searcher(tmp_path / "c", url=f"sqlite:///{tmp_path / 'c.db'}").suggest("x")
    assert a == c and a != b


def test_a_reopened_searcher_reruns_lost_trials_and_continues_its_sampler(tmp_path):
    from study.store import config_key

    first = _searcher(tmp_path, num_samples=3)
    for i in range(4):
        first.suggest(f"t{i}")
    first.on_trial_complete("t0", {"step": 2, "loss": 1.0, "trial_status": "finished"})
    # t1 (wd 0.5) ended in the store, but its driver died before telling Optuna; t2, t3 were lost
    lr1 = optuna.load_study(study_name="unit/wd=0.5", storage=first.url).trials[0].params["lr"]
    ended = {config_key({**first.fixed, "weight_decay": 0.5, "lr": lr1}): ("finished", 0.25)}
    # what an uninterrupted searcher draws next
    twin = _searcher(tmp_path, url=f"sqlite:///{tmp_path / 'twin.db'}", num_samples=3)
    for i in range(4):
        twin.suggest(f"t{i}")
    twin.on_trial_complete("t0", {"step": 2, "loss": 1.0, "trial_status": "finished"})
    twin.on_trial_complete("t1", {"step": 2, "loss": 0.25, "trial_status": "finished"})

    again = _searcher(tmp_path, num_samples=3, ended=ended)  # a resume without any Ray Tune state
    assert again.budget_left() == 2 + 2  # one new trial per point, and the two lost ones again
    rerun = [again.suggest(f"r{i}") for i in range(4)]
    wd0 = optuna.load_study(study_name="unit/wd=0", storage=first.url).trials
    wd5 = optuna.load_study(study_name="unit/wd=0.5", storage=first.url).trials
    assert (wd5[0].state.name, wd5[0].value) == ("COMPLETE", 0.25)  # told from the store, not run again
    assert wd0[1].user_attrs["lost"] and wd0[1].state.name == "FAIL"
    assert wd5[1].user_attrs["lost"] and wd5[1].state.name == "FAIL"
    # the lost trials run first, with their LRs
    assert [(c["weight_decay"], c["lr"]) for c in rerun[:2]] == [(0.0, wd0[1].params["lr"]), (0.5, wd5[1].params["lr"])]
    assert wd0[2].user_attrs["rerun_of"] == 1 and wd5[2].user_attrs["rerun_of"] == 1  # queued when reopened
    # the samplers continued from their saved states: the new draws are the uninterrupted searcher's
    assert [c["lr"] for c in rerun[2:]] == [twin.suggest("t4")["lr"], twin.suggest("t5")["lr"]]
    assert again.suggest("r4") is not None and again.budget_left() == 0


def test_the_scheduler_compares_trials_of_the_same_grid_point_only():
    from ray.tune.schedulers import TrialScheduler

    from study.search.tune import PerGridPointScheduler

    class Trial:
        def __init__(self, trial_id, wd):
            self.trial_id, self.config = trial_id, {"weight_decay": wd, "lr": 0.1}

    options = {"time_attr": "step", "max_t": 8, "grace_period": 1, "reduction_factor": 2, "brackets": 1,
               "stop_last_trials": True}
    scheduler = PerGridPointScheduler("asha", options, "loss", "min", group_by=("weight_decay",))
    good, bad, other = Trial("good", 0.0), Trial("bad", 0.0), Trial("other", 0.1)
    for trial in (good, bad, other):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, good, {"step": 1, "loss": 1.0}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, bad, {"step": 1, "loss": 5.0}) == TrialScheduler.STOP
    # worse than both, but alone at its weight decay: nothing to compare with
    assert scheduler.on_trial_result(None, other, {"step": 1, "loss": 50.0}) == TrialScheduler.CONTINUE
    assert len(scheduler.groups) == 2

    # a resumed study's scheduler starts from the stored reports (Ray Tune does not save its state)
    fresh = PerGridPointScheduler("asha", options, "loss", "min", group_by=("weight_decay",))
    assert fresh.replay([("good", good.config, [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])]) == 1
    late = Trial("late", 0.0)
    fresh.on_trial_add(None, late)
    assert fresh.on_trial_result(None, late, {"step": 1, "loss": 3.0}) == TrialScheduler.STOP


# ---------------------------------------------------------------- a remote store


def test_a_remote_store_keeps_a_local_copy_of_the_optuna_database_and_uploads_it(tmp_path, monkeypatch):
    from study.search import OptunaLocation

    monkeypatch.setenv("HOME", str(tmp_path))  # the local copy lives under ~/.cache/wd-study/optuna/
    store = StudyStore("memory://wd-study-optuna-test", "s")
    store.write_text("spec.yaml", "name: s\n")
    location = OptunaLocation.of(store)
    assert location.remote and location.local_path.startswith(str(tmp_path / ".cache" / "wd-study" / "optuna"))
    location.fetch()  # nothing stored yet: a fresh database
    assert not os.path.exists(location.local_path)
    optuna.create_study(study_name="s", storage=location.url).set_user_attr("asked", 3)
    location.upload()
    assert store._is_file(store.path("optuna.db"))
    os.remove(location.local_path)
    location.fetch()  # a resume on another machine starts from the store's copy
    assert optuna.load_study(study_name="s", storage=location.url).user_attrs == {"asked": 3}


def test_optuna_search_on_s3(ray_session, s3_server, tmp_path, monkeypatch):
    from tests.test_storage import s3_uri

    monkeypatch.setenv("HOME", str(tmp_path))
    storage = s3_uri(s3_server, "search-bucket")
    spec = parse_spec(search_spec("on-s3", num_samples=2, scheduler=None, config={"steps": 4}))
    result = launch(spec, storage=storage, stream=io.StringIO())
    assert result.complete and len(result.trials()) == 4
    store = StudyStore(storage, "on-s3")
    with store.fs.open_input_stream(store.path("optuna.db")) as f:  # the upload at the end of the run
        (tmp_path / "copy.db").write_bytes(f.read())
    trials = optuna.load_study(study_name="on-s3/weight_decay=0", storage=f"sqlite:///{tmp_path / 'copy.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    again = resume("on-s3", storage=storage, stream=io.StringIO())  # fetched back: nothing left to run
    assert again.complete and len(again.trials()) == 4


def test_a_resumed_scheduler_is_fed_the_stored_reports(tmp_path):
    from study.launch import _stored_reports
    from study.store import StoreWriter

    store = StudyStore(str(tmp_path / "store"), "s")
    store.write_text("spec.yaml", "name: s\n")
    writer = StoreWriter(store, {})
    for trial_id, wd, losses in (("a", 0.0, [3.0, 2.0]), ("b", 0.5, [4.0])):
        writer.trial_started(trial_id, {"weight_decay": wd, "lr": 0.1})
        for i, loss in enumerate(losses, start=1):
            writer.add_result(trial_id, {"step": 3 * i, "loss": loss, "training_iteration": i})
    writer.close()
    loaded = StoreWriter(store, {})
    loaded.load_existing()
    rows = _stored_reports(store, loaded, "loss", "step")
    assert [(t, c["weight_decay"], [(r["step"], r["loss"]) for r in reports]) for t, c, reports in rows] == [
        ("a", 0.0, [(3, 3.0), (6, 2.0)]), ("b", 0.5, [(3, 4.0)])]
