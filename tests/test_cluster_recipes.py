"""The cluster recipes (docs/cluster-recipes.md): the lock of the driver's versions, the GPU
presets' retries, the worker's IAM policy, the SLURM script (run as a two-node cluster on
this machine, slow) and the KubeRay RayJob manifest."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from study import load_spec, preset_names
from study.cluster import ClusterError, lock_lines, main, mismatches, read_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(ROOT, "cluster", "slurm", "study.sbatch")
RAYJOB = os.path.join(ROOT, "cluster", "kuberay", "rayjob.yaml")
DOCKERFILE = os.path.join(ROOT, "cluster", "kuberay", "Dockerfile")
DOCS = os.path.join(ROOT, "docs", "cluster-recipes.md")


# ---------------------------------------------------------------- the lock


def test_lock_pins_the_driver_versions_for_the_nodes():
    import yaml as pyyaml

    freeze = ["# a comment pip prints", "", "numpy==2.1.3", "torch==2.13.0+cpu", "ray==2.60.0",
              "wd-study==0.1.0", "-e /work/main", f"PyYAML @ file:///tmp/wheels/PyYAML-{pyyaml.__version__}.whl"]
    lines = lock_lines(freeze, "3.11.7")
    pins = [line for line in lines if not line.startswith("#")]
    assert pins == [
        "numpy==2.1.3",
        "torch==2.13.0  # the driver has 2.13.0+cpu; a node keeps its own build of this release",
        "ray[default]==2.60.0",  # nodes need Ray's dashboard and autoscaler parts
        f"PyYAML=={pyyaml.__version__}  # installed from a file or URL on the driver",
    ]  # the project itself and the editable line are left out: nodes install the checkout
    assert "# python 3.11.7  (nodes need the same Python minor version)" in lines
    with pytest.raises(ClusterError, match="cannot pin"):
        lock_lines(["something odd"], "3.11.7")


def test_a_node_is_checked_against_the_lock(tmp_path):
    lock = tmp_path / "requirements-cluster.txt"
    lock.write_text("\n".join(lock_lines(["torch==2.13.0+cpu", "ray==2.60.0", "numpy==2.1.3"], "3.11.7")) + "\n")
    python, pins = read_lock(str(lock))
    assert (python, pins) == ("3.11.7", {"torch": "2.13.0", "ray": "2.60.0", "numpy": "2.1.3"})
    node = {"torch": "2.13.0+cu128", "ray": "2.60.0", "numpy": "2.1.3", "extra": "1.0"}
    assert mismatches(python, pins, running_python="3.11.2", installed=node) == []  # a CUDA build of the release
    assert mismatches(python, pins, running_python="3.12.1", installed={**node, "ray": "2.59.0", "numpy": None}) == [
        "python 3.12.1, the lock was written with 3.11.7",
        "numpy: not installed, the lock pins 2.1.3",
        "ray: 2.59.0 installed, the lock pins 2.60.0",
    ]
    lock.write_text("torch>=2\n")
    with pytest.raises(ClusterError, match=r"requirements-cluster.txt:1: expected name==version"):
        read_lock(str(lock))


def test_lock_and_check_round_trip_in_this_environment(tmp_path, capsys):
    lock = tmp_path / "requirements-cluster.txt"
    assert main(["lock", "-o", str(lock)]) == 0
    text = lock.read_text()
    assert re.search(r"^ray\[default\]==\d", text, re.M) and re.search(r"^torch==\d[^+\s]*(\s|$)", text, re.M)
    assert not re.search(r"^wd-study", text, re.M | re.I)
    assert main(["check", str(lock)]) == 0
    # a node with another Ray: exit 1, one line per difference
    lock.write_text(re.sub(r"^ray\[default\]==\S+", "ray[default]==1.0.0", text, flags=re.M))
    capsys.readouterr()
    assert main(["check", str(lock)]) == 1
    err = capsys.readouterr().err
    assert "mismatch: ray: " in err and "the lock pins 1.0.0" in err and err.rstrip().splitlines()[-1].startswith("error: ")
    # bad input: exit 2, and a failed lock leaves the old file as it was
    assert main(["check", str(tmp_path / "missing.txt")]) == 2
    before = lock.read_text()
    assert main(["lock", "-o", str(tmp_path / "no" / "such" / "dir.txt")]) == 2
    assert lock.read_text() == before


# ---------------------------------------------------------------- presets and the worker's profile


def test_every_gpu_preset_retries_a_lost_trial():
    gpu_presets = [name for name in preset_names() if load_spec(name).resources.gpu > 0]
    assert sorted(gpu_presets) == ["bf16-divergence", "chinchilla", "ln-wd-ablation", "resnet18-wd", "ushape",
                                   "vgg-large-lr"]
    from study.launch import checkpoint_note

    for name in gpu_presets:
        spec = load_spec(name)
        assert spec.max_failures >= 2, name
        assert checkpoint_note(spec) is None, name  # and the retry resumes from a checkpoint


def _json_blocks(text: str) -> list:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_the_worker_policy_grants_the_store_and_the_data_prefix_only():
    (policy,) = [b for b in _json_blocks(open(DOCS).read()) if "s3:GetObject" in json.dumps(b)]
    allowed = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(a.startswith("s3:") and "*" not in a for a in actions), actions  # no wildcard actions
        for resource in resources:
            allowed.setdefault(resource, set()).update(actions)
        if "s3:ListBucket" in actions:  # listing only under the two prefixes
            prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
            assert sorted(prefixes) == ["data/*", "studies/*"]
    assert allowed == {
        "arn:aws:s3:::BUCKET": {"s3:ListBucket"},
        "arn:aws:s3:::BUCKET/data/*": {"s3:GetObject"},
        "arn:aws:s3:::BUCKET/studies/*": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                          "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"},
    }


# ---------------------------------------------------------------- SLURM


def test_the_sbatch_script_follows_rays_slurm_guide():
    script = open(SBATCH).read()
    assert subprocess.run(["bash", "-n", SBATCH]).returncode == 0
    assert re.search(r"^#SBATCH --ntasks-per-node=1\b", script, re.M)  # one Ray node per machine
    assert 'srun --nodes=1 --ntasks=1 -w' in script and "scontrol show hostnames" in script
    head = re.search(r'"\$HEAD" ray start --head (.*?)--block &', script, re.S).group(1)
    assert '--port="$PORT"' in head and '--node-ip-address="$HEAD_IP"' in head
    worker = re.search(r'"\$node" ray start (.*?)--block &', script, re.S).group(1)
    assert '--address="$ADDRESS"' in worker
    assert re.search(r'^python -m study launch "\$SPEC" --address "\$ADDRESS" "\$@"$', script, re.M)
    done = subprocess.run(["bash", SBATCH], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: usage: sbatch cluster/slurm/study.sbatch")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


TINY_STUDY = {"name": "slurm-two-nodes", "trainable": "probe", "config": {"steps": 12, "sleep_s": 0.2},
              "axes": {"seed": [0, 1, 2, 3]}, "resources": {"cpu": 0.5, "gpu": 0.5}}


@pytest.mark.slow
def test_the_sbatch_script_runs_a_study_on_a_two_node_cluster(tmp_path):
    """The script's own steps with srun replaced by a local runner: a head and a worker on this
    machine (one CPU and one advertised GPU each), the launch on them, then both stopped."""
    from study.store import StudyStore

    runner = tmp_path / "srun-local"
    runner.write_text('#!/bin/sh\n# srun -w NODE COMMAND...: here every node is this machine\nshift\nexec "$@"\n')
    runner.chmod(0o755)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_STUDY))
    storage = str(tmp_path / "store")
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, head_agent, worker_agent = _free_ports(3)
    env = dict(os.environ, RAY_ADDRESS="", OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               WD_SRUN=str(runner), WD_NODES="node-a node-b", SLURM_CPUS_PER_TASK="1", SLURM_GPUS_PER_TASK="1",
               WD_RAY_PORT=str(gcs), WD_RAY_TMP=ray_tmp, WD_JOIN_TIMEOUT="240",
               # ports a second node on the same machine would otherwise share with the first
               WD_RAY_HEAD_ARGS=f"--include-dashboard=false --dashboard-agent-listen-port={head_agent}",
               WD_RAY_WORKER_ARGS=f"--dashboard-agent-listen-port={worker_agent}")
    try:
        done = subprocess.run(["bash", SBATCH, str(spec), "--storage", storage, "--no-report"], env=env,
                              capture_output=True, text=True, timeout=420, cwd=ROOT, start_new_session=True)
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
        assert "ray cluster at 127.0.0.1:%d: 2 nodes" % gcs in done.stdout
        trials = StudyStore(storage, "slurm-two-nodes").read_trials()
        assert len(trials) == 4 and (trials["status"] == "finished").all()
        assert trials["node_id"].nunique() == 2  # the worker node ran trials too
        assert (trials["gpus"] == 0.5).all()
        # the stop step took both nodes down: nothing of this cluster is left running
        deadline = time.monotonic() + 30
        while _processes_mentioning(ray_tmp) and time.monotonic() < deadline:
            time.sleep(1)
        assert _processes_mentioning(ray_tmp) == []
    finally:
        for pid in _processes_mentioning(ray_tmp):  # only this test's cluster, by its temp folder
            try:
                os.kill(pid, 9)
            except OSError:
                pass


# ---------------------------------------------------------------- KubeRay


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_the_rayjob_manifest_matches_the_docs_the_image_and_the_cli():
    import tomllib

    from study.cli import main as cli_main

    (job,) = list(yaml.safe_load_all(open(RAYJOB)))
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    (workers,) = cluster["workerGroupSpecs"]

    # one image everywhere, tagged with the project's version, built on the manifest's Ray
    images = {c["image"] for c in _containers(head["template"]) + _containers(workers["template"])}
    (image,) = images
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
    assert image.rsplit(":", 1)[1] == project["version"]
    base = re.search(r"^FROM rayproject/ray:(\S+)-py(\d)(\d+)-gpu$", open(DOCKERFILE).read(), re.M)
    assert base.group(1) == cluster["rayVersion"]
    ray_bound = next(d for d in project["dependencies"] if d.startswith("ray["))
    low, high = re.search(r">=([\d.]+),<([\d.]+)", ray_bound).groups()
    as_tuple = lambda v: tuple(map(int, v.split(".")))  # noqa: E731
    assert as_tuple(low) <= as_tuple(cluster["rayVersion"]) < as_tuple(high)

    # the entrypoint is a launch of a preset into object storage, which the CLI accepts (dry run)
    entrypoint = spec["entrypoint"]
    argv = entrypoint.split()
    assert argv[:4] == ["python", "-m", "study", "launch"] and argv[4] in preset_names()
    assert argv[argv.index("--storage") + 1].startswith("s3://") and "--resume" in argv
    assert cli_main(argv[3:] + ["--dry-run"]) == 0
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    preset = load_spec(argv[4], overrides)
    data_dir = preset.config["data_dir"]

    # resources: the head takes no trials; a worker pod holds what a trial of the preset asks for
    assert head["rayStartParams"]["num-cpus"] == "0"
    (worker,) = _containers(workers["template"])
    assert worker["resources"]["requests"] == worker["resources"]["limits"]  # KubeRay: requests = limits
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= preset.resources.gpu
    assert int(worker["resources"]["limits"]["cpu"]) >= preset.resources.cpu
    assert 0 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]

    # data_dir: synced by the init container into the volume the Ray container mounts
    (sync,) = workers["template"]["spec"]["initContainers"]
    target = sync["command"][sync["command"].index("sync") + 2]
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    assert {m["mountPath"]: m["name"] for m in sync["volumeMounts"]} == {target: mounts[target]}
    assert data_dir.startswith(target.rstrip("/") + "/")

    # the docs quote the same image and entrypoint
    docs = open(DOCS).read()
    assert f"image: {image}\n" in docs and f"entrypoint: {entrypoint}\n" in docs
    assert f"-t {image} ." in docs
    assert f"rayproject/ray:{base.group(1)}-py{base.group(2)}{base.group(3)}-gpu" in docs
