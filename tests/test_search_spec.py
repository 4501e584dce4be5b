"""Search specs: every bad one gives one line naming the key and exit 2, writing nothing; good
ones round-trip through spec.yaml; the dry run prints the space, the budget and the rungs."""

import os

import pytest
import yaml

from study import SpecError, load_spec, parse_spec
from study.cli import main
from study.search import rungs

GOOD = """\
name: lr-search
trainable: probe
config: {steps: 27}
axes:
  weight_decay: [0.0, 0.1]
  lr: {loguniform: [0.01, 3.0]}
search: optuna
num_samples: 6
scheduler: {asha: {grace_period: 3, reduction_factor: 3}}
"""


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


BAD_SEARCH_SPECS = [
    ("range low >= high", edit("[0.01, 3.0]", "[3.0, 0.01]"), "axes.lr.loguniform: low 3.0 >= high 0.01"),
    ("range low == high", edit("[0.01, 3.0]", "[0.1, 0.1]"), "axes.lr.loguniform: low 0.1 >= high 0.1"),
    ("log range touching 0", edit("[0.01, 3.0]", "[0, 1]"), "axes.lr.loguniform: a log range must be positive"),
    ("log range below 0", edit("[0.01, 3.0]", "[-1, 1]"), "axes.lr.loguniform: a log range must be positive"),
    ("range outside the field's bounds", edit("weight_decay: [0.0, 0.1]", "weight_decay: {uniform: [-0.5, 0.5]}"),
     "axes.weight_decay.uniform[0]: must be >= 0, got -0.5"),
    ("lr range at 0", edit("lr: {loguniform: [0.01, 3.0]}", "lr: {uniform: [0, 1]}"), "axes.lr.uniform[0]: must be > 0"),
    ("unknown range kind", edit("loguniform", "lognormal"), "axes.lr: a range is one of {loguniform: ...}"),
    ("range not two numbers", edit("[0.01, 3.0]", "[0.01, 1.0, 3.0]"), "axes.lr.loguniform: expected [low, high]"),
    ("float range on an integer", edit("weight_decay: [0.0, 0.1]", "dim: {uniform: [2, 8]}"),
     "axes.dim.uniform: dim is an integer; search it with {int: [low, high]}"),
    ("int range of floats", edit("weight_decay: [0.0, 0.1]", "dim: {int: [2.5, 8]}"), "axes.dim.int: expected two integers"),
    ("choice of one", edit("lr: {loguniform: [0.01, 3.0]}", "lr: {choice: [0.1]}"), "axes.lr.choice: expected a list of at least 2"),
    ("choice with a bad value", edit("lr: {loguniform: [0.01, 3.0]}", "lr: {choice: [0.1, -1]}"), "axes.lr.choice[1]: must be > 0"),
    ("metric never reported", GOOD + "metric: val_loss\n", "metric: 'val_loss' is not reported by trainable probe"),
    ("scheduler without a metric", GOOD + "metric: null\n", "scheduler: {'asha': {'grace_period': 3, 'reduction_factor': 3}} compares trials on a metric"),
    ("optuna without a metric", edit("scheduler: {asha: {grace_period: 3, reduction_factor: 3}}\n", "") + "metric: null\n",
     "search: optuna compares trials on a metric"),
    ("unknown scheduler", edit("{asha: {grace_period: 3, reduction_factor: 3}}", "hyperband"), "scheduler: unknown scheduler 'hyperband'"),
    ("unknown scheduler option", edit("grace_period: 3", "grace: 3"), "scheduler.asha.grace: unknown option"),
    ("grace period beyond max_t", edit("grace_period: 3", "grace_period: 30"), "scheduler.asha.grace_period: 30 > max_t 27"),
    ("reduction factor 1", edit("reduction_factor: 3", "reduction_factor: 1"), "scheduler.asha.reduction_factor: must be > 1"),
    ("scheduler metric not reported", edit("grace_period: 3", "metric: ema_loss, grace_period: 3"),
     "scheduler.asha.metric: 'ema_loss' is not reported by trainable probe"),
    ("time_attr never reported", edit("grace_period: 3", "grace_period: 3, time_attr: epoch"),
     "scheduler.asha.time_attr: 'epoch' is not reported by trainable probe"),
    ("asha without a length", edit("grace_period: 3", "grace_period: 3, time_attr: weight_norm"),
     "scheduler.asha.max_t: give the trial's length in weight_norm units"),
    ("unknown sampler", GOOD + "sampler: nsga9\n", "sampler: unknown sampler 'nsga9'"),
    ("unknown sampler option", GOOD + "sampler: {tpe: {n_startup: 3}}\n", "sampler.tpe.n_startup: not an option of optuna.samplers.TPESampler"),
    ("sampler option of the wrong type", GOOD + "sampler: {tpe: {n_startup_trials: many}}\n",
     "sampler.tpe.n_startup_trials: expected int"),
    ("sampler seed", GOOD + "sampler: {tpe: {seed: 3}}\n", "sampler.seed: set the search's seed with search_seed"),
    ("sampler on a random search", edit("search: optuna", "search: random") + "sampler: tpe\n",
     "sampler: an Optuna sampler needs search: optuna"),
    ("range on a grid search", edit("search: optuna", "search: grid").replace("num_samples: 6\n", ""),
     "axes.lr: a range (loguniform [0.01, 3]) needs search: random or optuna"),
    ("range on the default search", edit("search: optuna\n", "").replace("num_samples: 6\n", ""),
     "axes.lr: a range (loguniform [0.01, 3]) needs search: random or optuna"),
    ("search without a range", edit("lr: {loguniform: [0.01, 3.0]}", "lr: [0.1, 0.3]"), "search: optuna needs at least one range axis"),
    ("num_samples 0", edit("num_samples: 6", "num_samples: 0"), "num_samples: expected an integer >= 1"),
    ("num_samples negative", edit("num_samples: 6", "num_samples: -2"), "num_samples: expected an integer >= 1"),
    ("num_samples missing", edit("num_samples: 6\n", ""), "num_samples: missing: the budget of the optuna search"),
    ("num_samples on a grid", edit("lr: {loguniform: [0.01, 3.0]}", "lr: [0.1]").replace("search: optuna", "search: grid"),
     "num_samples: a grid runs each point once"),
    ("search seed on a grid", "name: g\ntrainable: probe\naxes: {lr: [0.1]}\nsearch_seed: 3\n",
     "search_seed: only a random or optuna search is seeded"),
    ("negative search seed", GOOD + "search_seed: -1\n", "search_seed: expected an integer >= 0"),
    ("a range end the trainable refuses", "name: s\ntrainable: lm\nconfig: {model: gpt-nano, steps: 4, optimizer: adam}\n"
     "axes:\n  weight_decay: {uniform: [0.0, 0.1]}\nsearch: random\nnum_samples: 2\n",
     "axes.weight_decay: optimizer adam has no weight decay"),
]


@pytest.mark.parametrize("label,text,fragment", BAD_SEARCH_SPECS, ids=[b[0] for b in BAD_SEARCH_SPECS])
def test_bad_search_spec_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, label, text, fragment):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    storage = tmp_path / "store"
    code = main(["launch", str(path), "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not storage.exists()
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]


def test_a_bad_override_of_a_search_key_is_refused(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    assert main(["launch", str(path), "--dry-run", "--set", "axes.lr={loguniform: [0, 1]}"]) == 2
    assert "axes.lr.loguniform: a log range must be positive" in capsys.readouterr().err
    assert main(["launch", str(path), "--dry-run", "--set", "num_samples=0"]) == 2
    assert "num_samples: expected an integer >= 1" in capsys.readouterr().err


def test_a_search_spec_parses_resolves_and_round_trips(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    spec = load_spec(str(path))
    assert spec.search == "optuna" and spec.num_samples == 6 and spec.search_seed == 0
    assert list(spec.axes) == ["weight_decay"] and list(spec.ranges) == ["lr"]
    assert (spec.ranges["lr"].kind, spec.ranges["lr"].low, spec.ranges["lr"].high) == ("loguniform", 0.01, 3.0)
    assert spec.grid() == [{"weight_decay": 0.0}, {"weight_decay": 0.1}]
    assert spec.num_trials == 12  # 6 per grid point
    assert spec.sampler == {"tpe": {}}
    # every scheduler option resolved: time in the probe's steps, max_t its length
    assert spec.scheduler == {"asha": {"time_attr": "step", "max_t": 27, "grace_period": 3, "reduction_factor": 3,
                                       "brackets": 1, "stop_last_trials": True}}
    stored = spec.to_dict()
    assert stored["axes"] == {"weight_decay": [0.0, 0.1], "lr": {"loguniform": [0.01, 3.0]}}
    again = parse_spec(yaml.safe_load(yaml.safe_dump(stored)), "spec.yaml")  # what resume reads back
    assert again.to_dict() == stored and again.ranges == spec.ranges and again.scheduler == spec.scheduler


def test_a_scheduler_may_compare_trials_on_a_metric_of_its_own():
    spec = parse_spec(yaml.safe_load(edit("grace_period: 3", "metric: weight_norm, grace_period: 3")), "spec.yaml")
    assert spec.metric == "loss" and spec.scheduler["asha"]["metric"] == "weight_norm"
    again = parse_spec(yaml.safe_load(yaml.safe_dump(spec.to_dict())), "spec.yaml")
    assert again.scheduler == spec.scheduler

    from ray.tune.schedulers import TrialScheduler

    from study.search.tune import PerGridPointScheduler, _StoredTrial

    def third_trial_action(scheduler_metric):
        # ASHA, 1 bracket, rung at step 1, keeps the best third: trial c is the best of three on the
        # loss and the worst on the weight norm
        options = {"time_attr": "step", "max_t": 9, "grace_period": 1, "reduction_factor": 3, "brackets": 1,
                   "stop_last_trials": True, **({"metric": scheduler_metric} if scheduler_metric else {})}
        scheduler = PerGridPointScheduler("asha", options, "loss", "min")
        results = {"a": {"step": 1, "loss": 0.1, "weight_norm": 9.0}, "b": {"step": 1, "loss": 0.5, "weight_norm": 1.0},
                   "c": {"step": 1, "loss": 0.05, "weight_norm": 9.0}}
        actions = {}
        for name, result in results.items():
            trial = _StoredTrial(name, {})
            scheduler.on_trial_add(None, trial)
            actions[name] = scheduler.on_trial_result(None, trial, result)
        return scheduler.objective, actions["c"]

    assert third_trial_action(None) == ("loss", TrialScheduler.CONTINUE)
    assert third_trial_action("weight_norm") == ("weight_norm", TrialScheduler.STOP)


def test_defaults_of_the_schedulers():
    base = yaml.safe_load(GOOD)
    # ASHA: max_t = steps, grace = max_t / rf² (at least 1), rf 4
    spec = parse_spec({**base, "config": {"steps": 600}, "scheduler": "asha"})
    assert spec.scheduler["asha"] == {"time_attr": "step", "max_t": 600, "grace_period": 37, "reduction_factor": 4,
                                      "brackets": 1, "stop_last_trials": True}
    assert rungs(spec.scheduler) == [37, 148, 592]
    # the field's default length when the config does not set it (probe: 20 steps)
    spec = parse_spec({**base, "config": {}, "scheduler": "median"})
    assert spec.scheduler["median"] == {"time_attr": "step", "grace_period": 5, "min_samples_required": 3,
                                        "min_time_slice": float("inf")}
    # vision counts epochs
    spec = parse_spec({"name": "v", "trainable": "vision", "config": {"epochs": 16}, "search": "random",
                       "num_samples": 2, "axes": {"lr": {"loguniform": [0.01, 1.0]}}, "scheduler": "asha"})
    assert spec.scheduler["asha"]["time_attr"] == "epoch" and spec.scheduler["asha"]["max_t"] == 16
    assert spec.search_seed == 0 and spec.sampler is None


def test_a_grid_spec_is_stored_as_before():
    spec = parse_spec({"name": "g", "trainable": "probe", "axes": {"lr": [0.1, 0.3]}})
    assert spec.num_trials == 2 and spec.num_samples == 1 and spec.search_seed is None
    assert not {"num_samples", "search_seed", "sampler", "scheduler"} & set(spec.to_dict())
    with_asha = parse_spec({"name": "g", "trainable": "probe", "axes": {"lr": [0.1, 0.3]}, "scheduler": "asha"})
    assert with_asha.to_dict()["scheduler"]["asha"]["max_t"] == 20


def test_every_range_kind(tmp_path):
    spec = parse_spec({"name": "r", "trainable": "probe", "search": "random", "num_samples": 3, "axes": {
        "lr": {"loguniform": [0.001, 1]}, "weight_decay": {"uniform": [0, 0.5]}, "dim": {"int": [2, 8]},
        "noise": {"choice": [0.0, 0.1]}}})
    kinds = {axis: (r.kind, r.low, r.high, r.values) for axis, r in spec.ranges.items()}
    assert kinds == {"lr": ("loguniform", 0.001, 1.0, ()), "weight_decay": ("uniform", 0.0, 0.5, ()),
                     "dim": ("int", 2, 8, ()), "noise": ("choice", None, None, (0.0, 0.1))}
    assert spec.grid() == [{}] and spec.num_trials == 3


def test_dry_run_of_a_search_prints_its_space_budget_and_rungs(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    assert main(["launch", str(path), "--dry-run", "--storage", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    for fragment in ("search optuna, sampler tpe, seed 0; searched axes:", "lr: loguniform [0.01, 3]",
                     "grid axes held fixed per search: weight_decay; 2 grid point(s)",
                     "budget: 6 trials per grid point × 2 = 12 trials",
                     "lr-search/weight_decay=0, lr-search/weight_decay=0.1",
                     "scheduler asha: time_attr=step, max_t=27, grace_period=3, reduction_factor=3",
                     "ASHA rungs at step 3, 9, 27", "12 trials"):
        assert fragment in out, out
    assert not (tmp_path / "store").exists()


def test_the_preset_is_a_valid_optuna_asha_search():
    spec = load_spec("lr-search-tiny")
    assert spec.search == "optuna" and "asha" in spec.scheduler and "lr" in spec.ranges
    assert list(spec.axes) == ["weight_decay"] and spec.resources.cpu == 1


def test_spec_error_is_a_spec_error():
    with pytest.raises(SpecError, match="num_samples"):
        parse_spec({"name": "x", "trainable": "probe", "search": "random", "axes": {"lr": {"uniform": [0.1, 1]}}})


def test_a_search_spec_validates_and_describes_without_importing_ray():
    """``study.search`` keeps Ray Tune's side in ``study.search.tune``: a spec checks without Ray."""
    import subprocess
    import sys

    code = ("import sys, yaml\nfrom study import parse_spec\nfrom study.search import describe\n"
            f"describe(parse_spec(yaml.safe_load({GOOD!r})))\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"
