import math
import os
import shutil
import tempfile
import time

import pytest

# Ray workers and the tests share 2 cores: one torch thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Generated mnist1d sets are cached in a folder of this test session, not the user's ~/.cache
# (set before Ray starts: its workers inherit it).
if "WD_STUDY_CACHE" not in os.environ:
    os.environ["WD_STUDY_CACHE"] = _SESSION_CACHE = tempfile.mkdtemp(prefix="wd-study-cache-")
else:
    _SESSION_CACHE = None


def pytest_unconfigure(config):
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (2 CPUs, no dashboard, short temp dir)."""
    import ray

    from study.launch import worker_runtime_env

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir,
             configure_logging=False, runtime_env=worker_runtime_env())  # the workers a launch would have
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def ray_is_idle_before_each_test(request):
    """A test on the shared Ray instance starts with every CPU free: actors a previous test left
    behind are given time to go, and a test that would wait forever on them fails at once,
    naming them, instead of hanging CI."""
    if "ray_session" not in request.fixturenames:
        yield
        return
    ray = request.getfixturevalue("ray_session")
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    free = ray.available_resources().get("CPU", 0.0)
    if free < total:
        try:  # Ray's state API needs its dashboard, which the tests' instance may not run
            from ray.util.state import list_actors

            held = ", ".join(f"{a.class_name} (pid {a.pid})" for a in list_actors(filters=[("state", "=", "ALIVE")]))
        except Exception as exc:  # noqa: BLE001 - only for the message
            held = f"unknown ({type(exc).__name__})"
        pytest.fail(f"Ray has {free:g} of {total:g} CPUs free 60 s after the previous test; alive actors: {held}")
    yield


@pytest.fixture
def storage(tmp_path):
    return str(tmp_path / "store")


NANO_LM = {"model": "gpt-nano", "context": 16, "batch_size": 4, "steps": 6, "eval_every": 2,
           "eval_batches": 1, "warmup_steps": 2, "threads": 1}


def assert_same_reports(expected: list[dict], got: list[dict], *, rtol: float, skip=(), where: str = "step"):
    """Two runs' reports agree report by report and key by key within ``rtol`` (NaN matches
    NaN); ``skip`` names wall-clock metrics, ``where`` the key that says which report failed."""
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert set(a) == set(b), set(a) ^ set(b)
        for key in a:
            if key in skip:
                continue
            if isinstance(a[key], float) and math.isnan(a[key]):
                assert math.isnan(b[key]), key
            else:
                assert b[key] == pytest.approx(a[key], rel=rtol, abs=1e-9), (key, a[where])
