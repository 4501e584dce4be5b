"""A pack's resources: what its members would have held, capped at one node; the torch threads it runs."""

import io

import pytest

from study import SpecError, launch, load_spec, parse_spec
from study.cli import main
from study.packs import Node, PackResources, describe_resources, pack_groups, pack_param_space, pack_resources
from study.spec import Resources
from trainables.packing import PACK_KEY, PackedTrainable
from trainables.registry import TrainableInfo

TWO_CPUS = [Node(cpu=2)]  # the tests' local Ray instance (tests/conftest.py), and the issue's machine


def packs_of(spec):
    """Each Ray trial's resources, from the param space Tune is given (one config per pack)."""
    wanted = PackResources(spec, TWO_CPUS)
    return [wanted.resources({PACK_KEY: members}) for members in pack_param_space(spec)[PACK_KEY]["grid_search"]]


@pytest.mark.parametrize("pack, sizes, cpus", [(1, None, None), (4, [4] * 4, 2), (16, [16], 2)])
def test_a_pack_holds_its_members_cpus_capped_at_the_node(pack, sizes, cpus):
    spec = load_spec("chinchilla-tiny", [f"pack={pack}", "axes.seed=[0]", "axes.lr=[0.001,0.003,0.006,0.01]",
                                         "cases=[]"])  # one tail for every arm: every point may share a pack
    assert spec.num_trials == 16
    if pack == 1:  # unpacked: the spec's resources per trial, as before
        from study.launch import trial_resources

        assert trial_resources(spec) == {"cpu": 1, "gpu": 0}
        return
    assert [len(g) for g in pack_groups(spec)] == sizes
    assert packs_of(spec) == [{"cpu": cpus, "gpu": 0}] * len(sizes)


def test_pack_resources_rule():
    one, two = Resources(cpu=1), Resources(cpu=2)
    assert pack_resources(one, 1, TWO_CPUS) == {"cpu": 1, "gpu": 0}
    assert pack_resources(one, 4, TWO_CPUS) == {"cpu": 2, "gpu": 0}  # capped at the node
    assert pack_resources(one, 4, [Node(cpu=2), Node(cpu=16)]) == {"cpu": 4, "gpu": 0}  # the largest node
    assert pack_resources(two, 4, TWO_CPUS) == {"cpu": 2, "gpu": 0}  # cpu: 2 per trial: never below one member's
    assert pack_resources(two, 16, [Node(cpu=64)]) == {"cpu": 32, "gpu": 0}
    assert pack_resources(Resources(cpu=0.5), 3, [Node(cpu=8)]) == {"cpu": 1.5, "gpu": 0}
    # GPUs: fractions add up to one device at most; CPUs capped at the nodes that have the GPU
    share = Resources(cpu=1, gpu=0.25)
    nodes = [Node(cpu=96, gpu=0), Node(cpu=8, gpu=1)]
    assert pack_resources(share, 2, nodes) == {"cpu": 2, "gpu": 0.5}
    assert pack_resources(share, 16, nodes) == {"cpu": 8, "gpu": 1}
    assert pack_resources(Resources(cpu=1, gpu=1), 4, nodes) == {"cpu": 4, "gpu": 1}
    # an autoscaling cluster whose GPU workers have not started: one member's CPUs
    assert pack_resources(share, 16, [Node(cpu=0)]) == {"cpu": 1, "gpu": 1}
    # the spec's pack_resources, as given
    assert pack_resources(one, 16, TWO_CPUS, explicit=Resources(cpu=1, gpu=0)) == {"cpu": 1, "gpu": 0}


def test_a_spec_with_cpu_2_per_trial():
    spec = load_spec("chinchilla-tiny", ["pack=4", "resources.cpu=2"])
    assert packs_of(spec) == [{"cpu": 2, "gpu": 0}] * len(pack_groups(spec))
    lines = describe_resources(spec, pack_groups(spec), [Node(cpu=16)], "a test node")
    # the cosine arms' 10 points in packs of 4, 3, 3; the constant arms' 6 (no tail: their own packs) of 3
    assert [len(g) for g in pack_groups(spec)] == [4, 3, 3, 3, 3]
    assert lines == ["a pack of 4 holds 8 CPUs (4 x resources.cpu 2); it runs 8 torch threads",
                     "a pack of 3 holds 6 CPUs (3 x resources.cpu 2); it runs 6 torch threads"]


def test_the_spec_says_how_a_pack_splits_them():
    spec = load_spec("chinchilla-tiny", ["pack=16", "pack_resources={cpu: 1}", "exclude=[]", "cases=[]",
                                         "axes.seed=[0, 1, 2, 3]"])  # 16 points
    assert spec.pack_resources == Resources(cpu=1, gpu=0)
    assert packs_of(spec) == [{"cpu": 1, "gpu": 0}]  # one pack of 16, on one CPU
    assert spec.to_dict()["pack_resources"] == {"cpu": 1, "gpu": 0}
    assert parse_spec(spec.to_dict()).pack_resources == spec.pack_resources  # spec.yaml round-trips
    assert "pack_resources" not in load_spec("chinchilla-tiny", ["pack=16"]).to_dict()
    with pytest.raises(SpecError, match=r"pack_resources: sets what one pack holds; it needs pack > 1"):
        load_spec("chinchilla-tiny", ["pack_resources={cpu: 1}"])


@pytest.mark.parametrize("override, fragment", [
    ("pack_resources.cpu=0", "pack_resources.cpu: expected a number > 0, got 0"),
    ("pack_resources.gpu=1.5", "pack_resources.gpu: more than one GPU must be a whole number, got 1.5"),
    ("pack_resources.tpu=1", "pack_resources.tpu: unknown resource; use cpu and gpu"),
    ("pack_resources=2", "pack_resources: expected a mapping, got 2"),
])
def test_bad_pack_resources_are_one_line(capsys, override, fragment):
    assert main(["launch", "chinchilla-tiny", "--set", "pack=4", "--set", override, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err


def test_the_dry_run_shows_each_packs_resources(capsys, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert main(["launch", "ushape-tiny", "--set", "pack=16", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "42 trials, packed (pack: 16) into 3 Ray trials of 14 members"
    assert out[-1] == ("a pack of 14 holds 2 CPUs (14 x resources.cpu 1; CPUs capped at the largest node, "
                       "this machine's 2); it runs 2 torch threads")


# ---------------------------------------------------------------- inside a Ray trial

@pytest.fixture
def threads_probe(monkeypatch):
    """A trainable whose trials report the torch threads they run, registered for one test."""
    from trainables import PACKED, TRAINABLES

    monkeypatch.setitem(TRAINABLES, "threads-probe", TrainableInfo(
        name="threads-probe", config="trainables.probe:ProbeConfig", run="tests.test_pack_resources:run_one",
        metrics={"step": "int64", "loss": "double", "threads": "int64"}, default_metric="loss", default_mode="min",
        description="reports the torch threads its trial runs (tests/test_pack_resources.py)"))
    monkeypatch.setitem(PACKED, "threads-probe", PackedTrainable(
        name="threads-probe", run="tests.test_pack_resources:run_pack", axes=("lr", "seed")))


def run_one(config, session):
    import torch

    session.report({"step": 1, "loss": 0.0, "threads": torch.get_num_threads()}, status="finished")


def run_pack(configs, session):
    import torch

    session.report({k: {"step": 1, "loss": 0.0, "threads": torch.get_num_threads()} for k in range(len(configs))},
                   statuses={k: "finished" for k in range(len(configs))})


def test_a_pack_runs_as_many_torch_threads_as_it_holds_cpus(ray_session, storage, threads_probe):
    base = {"name": "threads", "trainable": "threads-probe", "config": {"steps": 1},
            "axes": {"lr": [0.1, 0.2, 0.3, 0.4], "seed": [0, 1]}, "pack": 4}
    result = launch(parse_spec(base), storage=storage, stream=io.StringIO())
    metrics = result.metrics()
    assert len(metrics) == 8 and (metrics["threads"] == 2).all()  # 4 x 1 CPU, capped at the 2 of the node
    split = launch(parse_spec({**base, "name": "split", "pack_resources": {"cpu": 1}}), storage=storage,
                   stream=io.StringIO())
    assert (split.metrics()["threads"] == 1).all()


def test_a_pack_keeps_its_freed_memory_for_reuse():
    import sys

    from trainables.packing import keep_freed_memory

    assert keep_freed_memory() is sys.platform.startswith("linux")  # glibc's mallopt took both settings
    assert keep_freed_memory() is keep_freed_memory()  # once per process
