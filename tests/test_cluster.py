"""Cluster scale: cluster.yaml against Ray's own schema, per-trial resources and concurrency
reaching Ray Tune, and a grid over a two-node Ray cluster (slow)."""

import io
import json
import os
import subprocess
import sys

import pytest
import yaml

from study import parse_spec
from study.launch import launch, trial_resources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(open(os.path.join(ROOT, "cluster.yaml")))
    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    jsonschema.validate(config, json.load(open(schema_path)))
    validate_config(prepare_config(config))  # what `ray up` checks, with the provider's defaults filled in

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers and all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers.values())
    assert all(0 <= t["min_workers"] <= t["max_workers"] for t in workers.values())
    assert config["file_mounts"] == {"~/wd-study": "."}
    # every node installs the driver's lock, then the project without re-resolving, then checks
    setup = config["setup_commands"]
    lock_at = next(i for i, c in enumerate(setup) if "pip install" in c and "-r ~/wd-study/requirements-cluster.txt" in c)
    project_at = next(i for i, c in enumerate(setup) if "pip install" in c and "--no-deps -e ~/wd-study" in c)
    check_at = next(i for i, c in enumerate(setup) if "python -m study.cluster check requirements-cluster.txt" in c)
    assert lock_at < project_at < check_at
    assert not any("ray[default]==$(" in c for c in setup)  # no more resolving Ray's version per node
    # workers sync data_dir from object storage at setup and run under their own narrow profile
    assert any(c.startswith("aws s3 sync s3://") and " /data" in c for c in config["worker_setup_commands"])
    assert {t["node_config"]["IamInstanceProfile"]["Name"] for t in workers.values()} == {"wd-study-worker"}

    broken = dict(config, max_workerz=3)
    with pytest.raises(jsonschema.ValidationError, match="max_workerz"):
        jsonschema.validate(broken, json.load(open(schema_path)))


def test_spec_resources_map_to_trial_resources():
    spec = parse_spec({"name": "r", "trainable": "probe", "axes": {"seed": [0]},
                       "resources": {"cpu": 2, "gpu": 0.25}, "max_concurrent": 3})
    assert trial_resources(spec) == {"cpu": 2, "gpu": 0.25}


def test_checkpoint_keys_of_the_spec():
    from study.launch import checkpoint_note
    from study.spec import SpecError

    base = {"name": "c", "trainable": "probe", "axes": {"seed": [0]}}
    assert parse_spec(base).keep_checkpoints == 2
    assert parse_spec({**base, "keep_checkpoints": None}).keep_checkpoints is None
    for bad in (0, -1, 1.5, "all", True):
        with pytest.raises(SpecError, match="keep_checkpoints: expected a positive integer or null"):
            parse_spec({**base, "keep_checkpoints": bad})
    # retries without checkpoints restart trials from their first step: the launch says so
    assert "checkpoint_every=0" in checkpoint_note(parse_spec({**base, "max_failures": 2}))
    assert checkpoint_note(parse_spec({**base, "max_failures": 2, "config": {"checkpoint_every": 5}})) is None
    assert checkpoint_note(parse_spec(base)) is None


def test_trials_hold_the_spec_resources_and_respect_max_concurrent(ray_session, storage):
    spec = parse_spec({"name": "one-at-a-time", "trainable": "probe", "config": {"steps": 3},
                       "axes": {"seed": [0, 1, 2]}, "resources": {"cpu": 0.5}, "max_concurrent": 1})
    trials = launch(spec, storage=storage, stream=io.StringIO()).trials().sort_values("started_at")
    assert (trials["status"] == "finished").all()
    assert (trials["cpus"] == 0.5).all() and (trials["gpus"] == 0).all() and (trials["gpu_ids"] == "").all()
    # with room for four trials at once (2 CPUs / 0.5), max_concurrent 1 runs them one after another
    assert (trials["started_at"].iloc[1:].to_numpy() >= trials["ended_at"].iloc[:-1].to_numpy()).all()


TWO_NODES = r'''
import io, json, sys
import ray
from ray.cluster_utils import Cluster
from study import launch, parse_spec

# two nodes on this machine, one CPU and one (advertised) GPU each
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1, num_gpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
spec = parse_spec({"name": "two-nodes", "trainable": "probe", "config": {"steps": 12, "sleep_s": 0.2},
                   "axes": {"seed": list(range(6))}, "resources": {"cpu": 0.5, "gpu": 0.5}})
result = launch(spec, storage=sys.argv[1], stream=io.StringIO())
print("NODES " + json.dumps(nodes))
ray.shutdown()
cluster.shutdown()
'''


@pytest.mark.slow
def test_a_grid_runs_on_both_nodes_of_a_two_node_cluster(tmp_path):
    """A local two-node Ray cluster (its own Ray, in a subprocess): trials land on both nodes,
    two trials share each GPU (gpu: 0.5), and every report reaches the store."""

    from study.store import StudyStore

    storage = str(tmp_path / "store")
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ADDRESS="")
    done = subprocess.run([sys.executable, "-c", TWO_NODES, storage], env=env, capture_output=True, text=True,
                          timeout=540, cwd=ROOT, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    nodes = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("NODES "))[6:])
    assert len(nodes) == 2

    store = StudyStore(storage, "two-nodes")
    trials = store.read_trials()
    assert len(trials) == 6 and (trials["status"] == "finished").all()
    assert sorted(trials["node_id"].unique()) == nodes  # both nodes ran trials
    assert (trials["gpus"] == 0.5).all() and (trials["gpu_ids"] == "0").all()
    metrics = store.read_metrics()
    assert metrics.groupby("trial_id")["training_iteration"].apply(list).tolist() == [list(range(1, 13))] * 6

    # at most two trials at once per node (two halves of its GPU), and the halves were shared
    most = 0
    for _, on_node in trials.groupby("node_id"):
        for start in on_node["started_at"]:
            running = ((on_node["started_at"] <= start) & (on_node["ended_at"] > start)).sum()
            most = max(most, running)
            assert running <= 2
    assert most == 2
