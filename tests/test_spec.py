"""Spec validation: every bad spec gives one line naming the key, exit code 2, and writes nothing."""

import os

import pytest

from study import SpecError, load_spec
from study.cli import main

GOOD = """\
name: good
trainable: lm
config: {model: gpt-nano, steps: 4}
axes:
  lr: [0.001, 0.01]
  weight_decay: [0.0, 0.1]
"""

VISION = """\
name: good-vision
trainable: vision
config: {epochs: 4}
axes:
  lr: [0.1]
"""

BAD_SPECS = [
    ("unknown top-level key", GOOD + "axis: {lr: [1]}\n", "axis: unknown key"),
    ("unknown trainable", GOOD.replace("trainable: lm", "trainable: resnet9000"), "trainable: unknown trainable 'resnet9000'"),
    ("unknown optimizer", GOOD + "  optimizer: [adamw, lion]\n", "axes.optimizer[1]: unknown value 'lion'"),
    ("unknown schedule", GOOD.replace("steps: 4}", "steps: 4, schedule: linear}"), "config.schedule: unknown value 'linear'"),
    ("unknown precision", GOOD + "  precision: [fp8]\n", "axes.precision[0]: unknown value 'fp8'"),
    ("zero learning rate", GOOD.replace("[0.001, 0.01]", "[0.0, 0.01]"), "axes.lr[0]: must be > 0"),
    ("negative learning rate", GOOD.replace("[0.001, 0.01]", "[-0.1]"), "axes.lr[0]: must be > 0"),
    ("negative weight decay", GOOD.replace("[0.0, 0.1]", "[0.0, -0.1]"), "axes.weight_decay[1]: must be >= 0"),
    ("empty axis", GOOD.replace("[0.0, 0.1]", "[]"), "axes.weight_decay: empty list"),
    ("no axes", "name: x\ntrainable: lm\naxes: {}\n", "axes: empty"),
    ("unknown config key", GOOD.replace("steps: 4}", "stpes: 4}"), "stpes: unknown config key"),
    ("unknown axis", GOOD + "  dropout_rate: [0.1]\n", "dropout_rate: unknown config key"),
    ("malformed YAML", "name: x\naxes: [1, 2\n", "malformed YAML at line"),
    ("duplicate key", GOOD + "name: again\n", "duplicate key 'name'"),
    ("wrong type", GOOD.replace("steps: 4}", "steps: four}"), "config.steps: expected an integer"),
    ("axis also fixed", GOOD.replace("steps: 4}", "steps: 4, lr: 0.1}"), "axes.lr: 'lr' is both a fixed config value and an axis"),
    ("metric not reported", GOOD + "metric: accuracy\n", "metric: 'accuracy' is not reported"),
    ("bad mode", GOOD + "mode: best\n", "mode: expected min or max"),
    ("negative gpu", GOOD + "resources: {cpu: 1, gpu: -1}\n", "resources.gpu: expected a number >= 0"),
    ("unknown resource", GOOD + "resources: {tpu: 1}\n", "resources.tpu: unknown resource"),
    ("bad search", GOOD + "search: exhaustive\n", "search: unknown search 'exhaustive'"),
    ("bad study name", GOOD.replace("name: good", "name: ../escape"), "name: '../escape' is not a valid study name"),
    ("not a mapping", "- just\n- a list\n", "a spec must be a YAML mapping"),
    ("bad stop key", GOOD + "stop: {epochs: 3}\n", "stop.epochs: not a reported metric"),
    # combinations the trainable refuses, found by building every trial's config before launch
    ("adam with weight decay", GOOD + "  optimizer: [adamw, adam]\n",
     "axes.weight_decay: optimizer adam has no weight decay (the paper's 'Adam' is AdamW with weight_decay 0); "
     "use optimizer adamw for decoupled decay, or l2_penalty for coupled L2 (in the trial with lr=0.001, "
     "weight_decay=0.1, optimizer='adam')"),
    ("image model on mnist1d", VISION + "  model: [cnn1d-si, preact-resnet18]\n",
     "axes.model: preact-resnet18 is for 32×32 images (cifar10, cifar100), not mnist1d"),
    ("cifar without data_dir", VISION.replace("epochs: 4}", "epochs: 4, dataset: cifar10, model: vgg11}"),
     "config.data_dir: dataset cifar10 needs data_dir"),  # at launch (a dry-run of the preset works)
    ("OpenWebText without data_dir", GOOD.replace("steps: 4}", "steps: 4, dataset: bin}"),
     "config.data_dir: dataset bin needs data_dir"),
    ("relative data_dir", VISION.replace("epochs: 4}", "epochs: 4, dataset: cifar10, model: vgg11, data_dir: data}"),
     "config.data_dir: 'data' is not an absolute path"),
    ("projection on VGG", VISION.replace("epochs: 4}", "epochs: 4, dataset: cifar10, model: vgg11, data_dir: /d, "
                                         "projection: global}"), "config.projection: model vgg11 has no scale-invariant layers"),
    ("global projection on a partly invariant net", VISION.replace(
        "epochs: 4}", "epochs: 4, dataset: cifar10, model: preact-resnet18, data_dir: /d}") + "  projection: [none, global]\n",
     "axes.projection: global projection rescales every trainable parameter"),
    ("augment on mnist1d", VISION + "  augment: [true]\n", "axes.augment: random crop + flip is for CIFAR images"),
    ("LR drop after the end", VISION + "  decay_epoch: [2, 4]\n", "axes.decay_epoch: 4 >= epochs 4: the LR would never drop"),
    ("warm-up as long as the run", VISION.replace("epochs: 4}", "epochs: 4, warmup_epochs: 4}"),
     "config.warmup_epochs: 4 >= epochs 4"),
    # an uneven grid: exclude and cases name axes and values of the grid (tests/test_uneven_grid.py)
    ("exclude names no axis", GOOD + "exclude: [{seed: 1}]\n", "exclude[0].seed: neither an axis nor a fixed config value (axes: lr, weight_decay)"),
    ("exclude names a bad value", GOOD + "exclude: [{lr: -1}]\n", "exclude[0].lr: must be > 0"),
    ("exclude leaves nothing", GOOD + "exclude: [{lr: 0.001}, {lr: 0.01}]\n", "exclude: leaves no grid point to run"),
    ("exclude not a list", GOOD + "exclude: {lr: 0.001}\n", "exclude: expected a list of mappings axis: value"),
    ("case sets an axis", GOOD + "cases: [{when: {lr: 0.01}, config: {weight_decay: 0.2}}]\n",
     "cases[0].config.weight_decay: 'weight_decay' is an axis"),
    ("case without config", GOOD + "cases: [{when: {lr: 0.01}}]\n", "cases[0]: expected {when: {axis: value}, config:"),
    ("case sets a bad value", GOOD + "cases: [{when: {lr: 0.01}, config: {steps: 0}}]\n", "cases[0].config.steps: must be > 0"),
    ("case makes a refused trial", GOOD + "cases: [{when: {lr: 0.01}, config: {optimizer: adam}}]\n",
     "axes.weight_decay: optimizer adam has no weight decay"),
    ("exclude with a search", GOOD.replace("[0.001, 0.01]", "{loguniform: [0.001, 0.01]}") + "search: random\n"
     "num_samples: 2\nexclude: [{weight_decay: 0.1}]\n", "exclude: shapes a grid; a random search"),
]


@pytest.mark.parametrize("label,text,fragment", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, label, text, fragment):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    storage = tmp_path / "store"
    code = main(["launch", str(path), "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not storage.exists()
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]


def test_unknown_preset_lists_presets(capsys):
    assert main(["launch", "no-such-preset", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'no-such-preset'" in err and "quickstart" in err


def test_bad_override(capsys):
    assert main(["launch", "quickstart", "--dry-run", "--set", "lr=-1"]) == 2
    assert "config.lr: must be > 0" in capsys.readouterr().err


def test_good_spec_grid_and_types(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    spec = load_spec(str(path))
    assert spec.num_trials == 4
    assert spec.grid() == [
        {"lr": 0.001, "weight_decay": 0.0}, {"lr": 0.001, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 0.1},
    ]
    assert spec.metric == "val_loss" and spec.mode == "min"  # the trainable's defaults
    assert spec.trial_configs()[3] == {"model": "gpt-nano", "steps": 4, "lr": 0.01, "weight_decay": 0.1}


def test_int_weight_decay_becomes_float(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD.replace("[0.0, 0.1]", "[0, 1]"))
    assert load_spec(str(path)).axes["weight_decay"] == (0.0, 1.0)


def test_overrides_fix_a_value_and_replace_an_axis():
    spec = load_spec("quickstart", ["steps=10", "weight_decay=0.1", "axes.seed=[0, 1, 2]"], name="renamed")
    assert spec.name == "renamed"
    assert spec.config["steps"] == 10 and spec.config["weight_decay"] == 0.1
    assert "weight_decay" not in spec.axes and spec.axes["seed"] == (0, 1, 2)
    assert spec.num_trials == 2 * 3


def test_every_preset_is_valid():
    from study import preset_names

    for name in preset_names():
        assert load_spec(name).name == name


def test_dry_run_prints_grid_and_count(capsys):
    assert main(["launch", "quickstart", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "constant" in out and "weight_decay" in out


@pytest.mark.parametrize("verb", ["launch", "list", "status"])
def test_every_verb_has_help(capsys, verb):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m study " + verb in capsys.readouterr().out


def test_spec_error_is_one_line():
    with pytest.raises(SpecError) as info:
        load_spec("quickstart", ["axes.weight_decay=[]"])
    assert "\n" not in str(info.value)


def test_a_preset_that_needs_data_dry_runs_but_does_not_launch_without_it(tmp_path, capsys):
    storage = tmp_path / "store"
    assert main(["launch", "ushape", "--dry-run"]) == 0
    assert "trials" in capsys.readouterr().out
    assert main(["launch", "ushape", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err == ("error: preset ushape: config.data_dir: dataset cifar10 needs data_dir, the absolute path of a "
                   "folder with the CIFAR python pickle batches (--set data_dir=/absolute/path)\n")
    assert not storage.exists()


@pytest.mark.parametrize("data, where", [
    ({"loggers": ["\n"]}, r"loggers.'\n': unknown tracker"),
    ({"loggers": {"csv": {"a\tb": 1}}}, r"loggers.csv.'a\tb': unknown option"),
    ({"axes": {"lr": [0.1], "x\ny": [1]}}, r"axes.'x\ny'"),
    ({"config": {"steps": 3, "s\nteps": 3}}, r"config.'s\nteps'"),
    ({"resources": {"cpu": 1, "g\rpu": 1}}, r"resources.'g\rpu': unknown resource"),
    ({"weird\nkey": 1}, r"'weird\nkey': unknown key"),
])
def test_a_key_with_a_control_character_is_shown_escaped_on_one_line(data, where):
    """Found by tests/test_properties.py (hypothesis): a newline in a key broke the one-line error."""
    from study import parse_spec

    base = {"name": "k", "trainable": "probe", "config": {"steps": 3}, "axes": {"lr": [0.1]}}
    with pytest.raises(SpecError) as caught:
        parse_spec({**base, **data}, "s.yaml")
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message and "\t" not in message
    assert where in message
