"""bench/gpu.sh: every GPU measurement in one command; its dry mode runs the same steps on the CPU."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.sh"


def run(*args, env=None):
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=1300,
                          env={**os.environ, **(env or {})})


def test_bad_use_is_one_error_line_and_exit_2(tmp_path):
    done = run("--bogus", env={"OUT": str(tmp_path / "out")})
    assert done.returncode == 2 and done.stderr.startswith("error: unknown argument '--bogus'")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_without_a_gpu_it_says_to_use_the_dry_mode(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run(env={"OUT": str(tmp_path / "out")})
    assert done.returncode == 2 and "bench/gpu.sh --dry" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.timeout(1400)  # the script's own limits add up to 1,200 s
def test_the_dry_mode_runs_every_step_and_writes_their_json(tmp_path):
    done = run("--dry", env={"OUT": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("throughput", "packing", "divergence"):
        assert f"gpu.sh: {name} exited 0" in done.stdout

    throughput = json.loads((tmp_path / "gpu-throughput.json").read_text())
    (gpt2,) = throughput["summary"]
    assert gpt2["device"] == "cpu (dry run)" and gpt2["rate"] > 0 and gpt2["unit"] == "tokens/s"

    packing = json.loads((tmp_path / "gpu-packing.json").read_text())
    cases = {(row["preset"], row["case"]) for row in packing["summary"]}
    assert cases == {(p, c) for p in ("ushape-tiny", "chinchilla-tiny") for c in ("unpacked", "pack 4", "pack 16")}
    assert all(run_["statuses"] for run_ in packing["runs"])

    divergence = json.loads((tmp_path / "gpu-divergence.json").read_text())
    arms = {(row["precision"], row["weight_decay"]) for row in divergence["summary"]}
    assert arms == {(p, wd) for p in ("fp32", "bf16-autocast") for wd in (0.0, 0.1)}
    for row in divergence["summary"]:
        assert row["status"] in ("finished", "diverged") and row["curve"]["step"][-1] == 6
