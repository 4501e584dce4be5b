"""Packed studies: the spec's pack key, the grouping rule, one logical trial per member in the store."""

import io
import json
import os
import sys

import pandas as pd
import pytest

from analysis import load_study
from study import SpecError, launch, load_spec, parse_spec
from study.callbacks import StoreCallback
from study.cli import main
from study.launch import resume
from study.packs import PackedTrials, pack_groups, pack_param_space, tune_indices
from study.store import StoreWriter, StudyStore
from tests.conftest import NANO_LM
from trainables.lm.packed import run as run_lm_packed
from trainables.packing import MEMBERS_KEY, PACK_KEY, BarePackSession, member_trial_id, pack_members

GOOD = """\
name: packed
trainable: lm
pack: 4
config: {model: gpt-nano, steps: 4}
axes:
  lr: [0.001, 0.01]
  weight_decay: [0.0, 0.1]
"""

# ---------------------------------------------------------------- the spec


@pytest.mark.parametrize("text, fragment", [
    (GOOD.replace("pack: 4", "pack: 0"), "pack: expected an integer >= 1"),
    (GOOD.replace("pack: 4", "pack: four"), "pack: expected an integer >= 1"),
    (GOOD.replace("trainable: lm", "trainable: probe").replace("config: {model: gpt-nano, steps: 4}", "config: {}"),
     "pack: trainable 'probe' cannot run packed; packable: lm, vision"),
    (GOOD + "  precision: [fp32, bf16]\n", "axes.precision: 'bf16' cannot run packed"),
    (GOOD.replace("steps: 4}", "steps: 4, compile: true}"), "config.compile: True cannot run packed"),
    (GOOD + "stop: {val_loss: 3.0}\n", "stop.val_loss: a packed trial reports for several grid points"),
], ids=["zero", "not a number", "unpackable trainable", "refused precision", "compile", "metric stop"])
def test_bad_pack_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, text, fragment):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code = main(["launch", str(path), "--storage", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]


def test_pack_applies_to_a_grid_without_a_scheduler_only():
    quickstart = load_spec("quickstart").to_dict()
    searched = {**quickstart, "axes": {**quickstart["axes"], "weight_decay": {"uniform": [0.0, 0.3]}}}
    with pytest.raises(SpecError, match="pack: packing applies to search: grid only"):
        parse_spec({**searched, "search": "random", "num_samples": 4, "pack": 4})
    with pytest.raises(SpecError, match="pack: a scheduler stops trials one by one"):
        parse_spec({**quickstart, "scheduler": "asha", "pack": 4})


def test_the_tiny_presets_take_pack_from_the_command_line_and_round_trip():
    for preset in ("ushape-tiny", "chinchilla-tiny"):
        spec = load_spec(preset, ["pack=16"])
        assert spec.pack == 16 and spec.to_dict()["pack"] == 16
        assert parse_spec(spec.to_dict()).pack == 16
    assert "pack" not in load_spec("chinchilla-tiny").to_dict()  # an unpacked spec.yaml stays as it was
    assert load_spec("chinchilla-tiny", ["pack=1"]).pack == 1


def test_launch_dry_run_of_a_packed_preset(capsys):
    assert main(["launch", "ushape-tiny", "--set", "pack=16", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # 42 points that differ only in packable axes: 3 packs of 14 (sizes as equal as possible)
    assert "42 trials, packed (pack: 16) into 3 Ray trials of 14 members" in out
    table = out.split("cost estimate")[0]  # the grid, before the estimate and the count
    rows = [line.split() for line in table.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(row[-1]) for row in rows] == [0] * 14 + [1] * 14 + [2] * 14


# ---------------------------------------------------------------- grouping


def test_points_differing_outside_the_packable_axes_go_to_different_packs():
    config = {k: v for k, v in NANO_LM.items() if k != "context"}
    spec = parse_spec({"name": "g", "trainable": "lm", "config": config, "pack": 4,
                       "axes": {"context": [8, 16], "lr": [1e-3, 3e-3, 1e-2], "seed": [0, 1, 2]}})
    packs = pack_groups(spec)
    grid = spec.grid()
    assert sorted(i for pack in packs for i in pack) == list(range(18))
    for pack in packs:
        assert len({grid[i]["context"] for i in pack}) == 1  # context is not packable
    # 9 points per context at K = 4: 3 packs of 3, as equal as possible
    assert [len(p) for p in packs] == [3, 3, 3, 3, 3, 3]

    spec = parse_spec({**spec.to_dict(), "pack": 16})
    assert [len(p) for p in pack_groups(spec)] == [9, 9]  # 18 points at K = 16: two packs of 9, not 16 + 2


def test_members_carry_the_trial_numbers_tune_would_give_their_grid_points():
    spec = parse_spec({"name": "n", "trainable": "lm", "config": NANO_LM, "pack": 3,
                       "axes": {"lr": [1e-3, 1e-2], "weight_decay": [0.0, 0.1], "seed": [0, 1]}})
    # Ray Tune enumerates a grid with the first axis (by name) fastest: lr, then seed, then weight_decay
    indices = tune_indices(spec)
    for point, index in zip(spec.grid(), indices):
        assert index == [1e-3, 1e-2].index(point["lr"]) + 2 * point["seed"] + 4 * [0.0, 0.1].index(point["weight_decay"])
    space = pack_param_space(spec)[PACK_KEY]
    members = [m for pack in space["grid_search"] for m in pack_members({PACK_KEY: pack})]
    assert sorted(index for index, _ in members) == list(range(8))
    assert member_trial_id("a1b2c_00001", 7) == "a1b2c_00007"


# ---------------------------------------------------------------- a pack's events → its members' trials (no Ray)


class FakeTrial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config
        self.status, self.last_result, self.error_file, self.error_msg = "RUNNING", {}, None, None

    def get_error(self):
        return "RuntimeError: the pack failed"


def pack_result(iteration, members, **extra):
    """A packed trial's Ray result: {position: (metrics, member iteration, status)}."""
    encoded = {str(k): {"metrics": m, "iteration": n, "status": s} for k, (m, n, s) in members.items()}
    return {MEMBERS_KEY: json.dumps(encoded), "training_iteration": iteration, "time_total_s": 1.5 * iteration,
            "iterations_since_restore": iteration, "pid": 7, "hostname": "h", "node_ip": "1.2.3.4", "node_id": "n",
            "gpu_ids": "", "cpus": 1.0, "gpus": 0.0, "done": False, **extra}


@pytest.fixture
def fed(storage):
    store = StudyStore(storage, "adapter")
    store.write_text("spec.yaml", "name: adapter\n")
    writer = StoreWriter(store, {"git_commit": None})
    adapter = PackedTrials([StoreCallback(writer)])
    configs = [{"lr": lr, "seed": 0} for lr in (0.1, 0.2, 0.3)]
    pack = FakeTrial("abcde_00000", {PACK_KEY: [{"index": i, "config": c} for i, c in zip((0, 4, 8), configs)]})
    return store, adapter, pack


def test_each_member_is_stored_as_its_own_trial(fed):
    store, adapter, pack = fed
    adapter.on_trial_start(0, [pack], pack)
    adapter.on_trial_result(1, [pack], pack, pack_result(1, {k: ({"loss": 1.0 + k}, 1, None) for k in range(3)}))
    adapter.on_trial_result(2, [pack], pack, pack_result(2, {0: ({"loss": 0.5}, 2, None), 1: ({"loss": 9.0}, 2, "diverged"),
                                                             2: ({"loss": 2.5}, 2, None)}))
    adapter.on_checkpoint(2, [pack], pack, None)
    assert store.read_trials().set_index("trial_id").loc["abcde_00004", "status"] == "diverged"  # at once
    adapter.on_trial_result(3, [pack], pack, pack_result(3, {0: ({"loss": 0.25}, 3, "finished"),
                                                             2: ({"loss": 2.0}, 3, "finished")}))
    pack.status, pack.last_result = "TERMINATED", {"done": True}
    adapter.on_trial_complete(3, [pack], pack)
    adapter.on_experiment_end([pack])

    trials = store.read_trials().set_index("trial_id")
    assert trials.index.tolist() == ["abcde_00000", "abcde_00004", "abcde_00008"]
    assert trials["status"].tolist() == ["finished", "diverged", "finished"]
    assert trials["config/lr"].tolist() == [0.1, 0.2, 0.3] and "config/pack" not in trials
    assert trials["reports"].tolist() == [3, 2, 3] and trials["loss"].tolist() == [0.25, 9.0, 2.0]
    assert (trials["host"] == "h").all() and (trials["node_id"] == "n").all()
    metrics = store.read_metrics()
    assert sorted(metrics.columns) == ["loss", "time_total_s", "training_iteration", "trial_id"]
    assert metrics.groupby("trial_id")["training_iteration"].apply(list).tolist() == [[1, 2, 3], [1, 2], [1, 2, 3]]
    assert metrics["time_total_s"].tolist()[:3] == [1.5, 3.0, 4.5]


def test_a_failed_pack_fails_its_running_members_and_a_stopped_one_stops_them(fed):
    store, adapter, pack = fed
    adapter.on_trial_start(0, [pack], pack)
    adapter.on_trial_result(1, [pack], pack, pack_result(1, {0: ({"loss": 1.0}, 1, None), 1: ({"loss": 9.0}, 1, "diverged"),
                                                             2: ({"loss": 1.0}, 1, None)}))
    pack.status = "ERROR"
    adapter.on_trial_error(1, [pack], pack)
    trials = store.read_trials().set_index("trial_id")
    assert trials["status"].tolist() == ["failed", "diverged", "failed"]
    assert trials.loc["abcde_00000", "error"] == "RuntimeError: the pack failed"

    other = FakeTrial("abcde_00001", {PACK_KEY: [{"index": 1, "config": {"lr": 0.5}}]})
    adapter.on_trial_start(0, [other], other)
    adapter.on_trial_result(1, [other], other, pack_result(1, {0: ({"loss": 1.0}, 1, None)}))
    adapter.on_trial_complete(1, [other], other)  # a stop criterion (time_total_s) ended it
    assert store.read_trials().set_index("trial_id").loc["abcde_00001", "status"] == "stopped"


def test_a_restarted_pack_repeats_nothing_and_counts_the_restart(fed):
    store, adapter, pack = fed
    adapter.on_trial_start(0, [pack], pack)
    for i in (1, 2):
        adapter.on_trial_result(i, [pack], pack, pack_result(i, {k: ({"loss": float(i)}, i, None) for k in range(3)}))
    adapter.on_checkpoint(2, [pack], pack, None)
    adapter.on_trial_result(3, [pack], pack, pack_result(3, {k: ({"loss": 3.0}, 3, None) for k in range(3)}))
    # the worker dies; Tune restores the pack from its checkpoint at iteration 2 and starts it again
    adapter.on_trial_start(3, [pack], pack)
    adapter.on_trial_result(4, [pack], pack, pack_result(3, {k: ({"loss": 3.0}, 3, None) for k in range(3)},
                                                         iterations_since_restore=1))
    adapter.on_trial_result(5, [pack], pack, pack_result(4, {k: ({"loss": 4.0}, 4, "finished") for k in range(3)},
                                                         iterations_since_restore=2))
    trials = store.read_trials()
    assert (trials["restarts"] == 1).all() and (trials["restored_from_iteration"] == 2).all()
    assert (trials["status"] == "finished").all()
    metrics = store.read_metrics()
    assert metrics.groupby("trial_id")["training_iteration"].apply(list).tolist() == [[1, 2, 3, 4]] * 3


def test_an_interrupted_pack_leaves_its_members_running(fed):
    store, adapter, pack = fed
    adapter.on_trial_start(0, [pack], pack)
    adapter.on_trial_result(1, [pack], pack, pack_result(1, {k: ({"loss": 1.0}, 1, None) for k in range(3)}))
    pack.status = "PENDING"  # Ctrl-C: Tune saved its state, the pack did not end
    adapter.on_experiment_end([pack])
    assert (store.read_trials()["status"] == "running").all()


# ---------------------------------------------------------------- through Ray Tune


def comparable(trials: pd.DataFrame, metrics: pd.DataFrame):
    """Trials and metric rows keyed by grid point instead of trial id, for two studies of one grid."""
    axes = ["config/lr", "config/weight_decay", "config/seed"]
    key = trials.set_index("trial_id")[axes].apply(tuple, axis=1)
    metrics = metrics.assign(point=metrics["trial_id"].map(key)).sort_values(["point", "training_iteration"])
    return trials.assign(point=trials["trial_id"].map(key)).sort_values("point").reset_index(drop=True), metrics


def test_a_packed_study_stores_what_the_unpacked_one_stores(ray_session, storage):
    """The store of a packed study (a member made to diverge) has the unpacked study's schema,
    row counts, statuses and values; the analysis reads both alike."""
    base = {"name": "unpacked", "trainable": "lm", "config": {**NANO_LM, "steps": 12, "grad_clip": 0.0},
            "axes": {"lr": [3e-3, 1000.0], "weight_decay": [0.0, 0.1], "seed": [0, 1]}, "resources": {"cpu": 1}}
    plain = launch(parse_spec(base), storage=storage, stream=io.StringIO())
    out = io.StringIO()
    packed = launch(parse_spec({**base, "name": "packed", "pack": 4}), storage=storage, stream=out)
    assert "trials 8/8 done" in out.getvalue() and "4 diverged" in out.getvalue()

    t1, m1 = comparable(plain.trials(), plain.metrics())
    t2, m2 = comparable(packed.trials(), packed.metrics())
    assert list(t1.columns) == list(t2.columns) and list(m1.columns) == list(m2.columns)
    assert len(t1) == len(t2) == 8 and len(m1) == len(m2)
    assert t1["status"].tolist() == t2["status"].tolist()
    assert sorted(t2["status"]) == ["diverged"] * 4 + ["finished"] * 4
    assert t1["reports"].tolist() == t2["reports"].tolist()
    assert t1["diverged_step"].fillna(-1).tolist() == t2["diverged_step"].fillna(-1).tolist()
    assert t2["trial_id"].str.fullmatch(r"[0-9a-f]{5}_0000[0-7]").all()
    assert (t2["config/model"] == "gpt-nano").all()
    finished = m1["point"].map(dict(zip(t1["point"], t1["status"]))) == "finished"
    for column in ("val_loss", "train_loss", "weight_norm", "ema_val_loss"):
        pd.testing.assert_series_equal(m1.loc[finished, column].reset_index(drop=True),
                                       m2.loc[finished, column].reset_index(drop=True), rtol=1e-5)
    assert m1["training_iteration"].tolist() == m2["training_iteration"].tolist()

    a, b = load_study("unpacked", storage), load_study("packed", storage)
    assert list(a.finals().columns) == list(b.finals().columns) and len(a.curves()) == len(b.curves())
    assert json.loads(packed.store.read_text("study.json"))["name"] == "packed"


def test_a_packed_study_resumes_after_its_driver_died(ray_session, storage, monkeypatch):
    """The driver 'dies' (an exception in a callback) mid-study; resume finishes it: every member's
    rows exactly once, bit for bit those of an uninterrupted run."""
    from ray.tune import Callback

    launch_module = sys.modules["study.launch"]

    class CrashDriver(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result["training_iteration"] >= 4:
                raise RuntimeError("simulated driver crash")

    make_callbacks = launch_module._callbacks
    monkeypatch.setattr(launch_module, "_callbacks", lambda *a, **k: make_callbacks(*a, **k) + [CrashDriver()])
    spec = parse_spec({"name": "crash", "trainable": "lm",
                       "config": {**NANO_LM, "steps": 12, "checkpoint_every": 1},
                       "axes": {"lr": [3e-3, 1e-2], "seed": [0, 1]}, "pack": 2, "resources": {"cpu": 1}})
    with pytest.raises(Exception, match="simulated driver crash"):
        launch(spec, storage=storage, stream=io.StringIO())
    monkeypatch.setattr(launch_module, "_callbacks", make_callbacks)
    store = StudyStore(storage, "crash")
    before = store.read_trials()
    running = set(before.loc[before["status"] == "running", "trial_id"])
    assert running

    result = resume("crash", storage=storage, stream=io.StringIO())
    trials = result.trials()
    assert result.complete and len(trials) == 4 and (trials["status"] == "finished").all()
    # members that were running when the driver died restart once (from a checkpoint, when Tune's
    # saved state had one); a pack whose worker had not started yet (the machine is busy) starts
    # for the first time
    restarts = dict(zip(trials["trial_id"], trials["restarts"]))
    assert {t: restarts[t] for t in running} == {t: 1 for t in running}
    assert all(n == 0 for t, n in restarts.items() if t not in running)
    metrics = result.metrics()
    assert metrics.groupby("trial_id")["training_iteration"].apply(list).tolist() == [[1, 2, 3, 4, 5, 6]] * 4

    # bit for bit what the same packs report when they run uninterrupted (plain Python, same threads)
    got = comparable_lr_seed(trials, metrics)
    configs = spec.trial_configs()
    for pack in pack_groups(spec):
        session = BarePackSession(len(pack))
        run_lm_packed([configs[i] for i in pack], session)
        for i, member in zip(pack, session.members):
            point = (configs[i]["lr"], configs[i]["seed"])
            rows = got[got["point"] == point]
            for column in ("val_loss", "train_loss", "weight_norm", "update_norm", "effective_lr"):
                assert rows[column].tolist() == [r[column] for r in member.reports], (point, column)


def comparable_lr_seed(trials, metrics):
    key = trials.set_index("trial_id")[["config/lr", "config/seed"]].apply(tuple, axis=1)
    return metrics.assign(point=metrics["trial_id"].map(key)).sort_values(["point", "training_iteration"])
