"""Exactly one driver per study, with the racy interleavings forced (threads stopped at a point
and released by events, no sleeps): a launch re-checks the study under its lock, a stale lock is
taken over by compare-and-swap, the heartbeat and release touch only the driver's own lock, a
driver that lost its lock stops. On a local folder and on S3 (moto's server)."""

import io
import json
import os
import signal
import threading
import time

import pytest
import yaml

import importlib

from study.launch import LaunchError, launch
from study.lock import LOCK_FILE, DriverLock, StudyBusy, read_lock
from study.spec import parse_spec
from study.store import StoreWriter, StudyStore
from tests.test_storage import s3_server, s3_uri  # noqa: F401  (the module's S3 server fixture)

launch_module = importlib.import_module("study.launch")  # (the package's `study.launch` is the function)
lock_module = importlib.import_module("study.lock")

LONG = 3600.0  # a heartbeat that does not beat during a test


def spec(name="race"):
    return parse_spec({"name": name, "trainable": "probe", "config": {"steps": 3}, "axes": {"seed": [0, 1]},
                       "resources": {"cpu": 1}})


def finished_study(storage, name="race") -> dict[str, bytes]:
    """What another driver leaves: a finished two-trial study (written without Ray). Returns its files."""
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", yaml.safe_dump(spec(name).to_dict(), sort_keys=False))
    store.write_text("study.json", json.dumps({"name": name}))
    writer = StoreWriter(store, {})
    for trial in ("t0", "t1"):
        writer.trial_started(trial, {"seed": int(trial[1]), "steps": 3})
        writer.add_result(trial, {"step": 3, "loss": 0.5, "training_iteration": 1, "time_total_s": 0.1})
        writer.trial_ended(trial, "finished")
    return files_of(store)


def files_of(store: StudyStore) -> dict[str, bytes]:
    out = {}
    for path in store.files(skip_tune=False):
        with store.fs.open_input_stream(path) as f:
            out[path] = f.read()
    return out


def stale_lock(store: StudyStore) -> str:
    """A lock left by a driver on another host whose heartbeat stopped an hour ago; returns its token."""
    old = time.time() - 3600
    info = {"host": "elsewhere", "pid": 1, "token": "stale-token", "started_at": old, "heartbeat_at": old}
    store.write_text(LOCK_FILE, json.dumps(info))
    if os.path.exists(store.path(LOCK_FILE)):
        os.utime(store.path(LOCK_FILE), (old, old))
    return "stale-token"


def make_stale(lock: DriverLock) -> None:
    """Make a held lock look like a dead remote driver's (host elsewhere, heartbeat an hour old)."""
    old = time.time() - 3600
    lock.info.host, lock.info.heartbeat_at = "elsewhere", old
    lock.store.write_text(LOCK_FILE, json.dumps({**lock.info.__dict__}))
    if os.path.exists(lock.path):
        os.utime(lock.path, (old, old))


def pause_after_read(monkeypatch, thread_name: str):
    """Stop the thread named ``thread_name`` right after its first ``read_lock``, until released.

    Returns (has_read, release): events the test waits on and sets.
    """
    has_read, release = threading.Event(), threading.Event()
    original = lock_module.read_lock

    def read_lock_then_wait(store):
        info = original(store)
        if threading.current_thread().name == thread_name and not has_read.is_set():
            has_read.set()
            assert release.wait(30)
        return info

    monkeypatch.setattr(lock_module, "read_lock", read_lock_then_wait)
    return has_read, release


def in_thread(name, target):
    outcome = {}

    def run():
        try:
            outcome["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture(params=["local", "s3"])
def storage_of(request, tmp_path, monkeypatch):
    if request.param == "local":
        return str(tmp_path / "store")
    monkeypatch.setattr(lock_module, "SETTLE_S", 0.05)
    endpoint = request.getfixturevalue("s3_server")
    return s3_uri(endpoint, "locks", prefix=tmp_path.name)


# ---------------------------------------------------------------- finding 1: re-checked under the lock


def test_a_study_finished_by_another_driver_while_ray_starts_is_not_overwritten(tmp_path, monkeypatch):
    storage = str(tmp_path / "store")
    store = StudyStore(storage, "race")
    left = {}

    def another_driver_runs_the_study_meanwhile(address=None, num_cpus=None):
        left.update(finished_study(storage))

    def no_tuner(*args, **kwargs):
        raise AssertionError("the launch went on to run the study over the finished one")

    monkeypatch.setattr(launch_module, "ensure_ray", another_driver_runs_the_study_meanwhile)
    monkeypatch.setattr(launch_module, "_new_tuner", no_tuner)
    with pytest.raises(LaunchError, match=r"study 'race' already exists .*another driver created it.*"
                                          r"2 trials: 2 finished"):
        launch(spec(), storage=storage, stream=io.StringIO())
    assert files_of(store) == left  # every byte as the other driver left it, and no lock left behind
    assert read_lock(store) is None


def test_overwrite_deletes_only_under_the_lock(tmp_path, monkeypatch):
    """--overwrite of a study another driver started meanwhile is refused, and nothing is deleted."""
    storage = str(tmp_path / "store")
    left = finished_study(storage)
    store = StudyStore(storage, "race")
    other = DriverLock(store, command="launch", heartbeat_s=LONG)

    monkeypatch.setattr(launch_module, "ensure_ray", lambda address=None, num_cpus=None: other.acquire())
    monkeypatch.setattr(launch_module, "_new_tuner", lambda *a, **k: pytest.fail("ran over a running study"))
    try:
        with pytest.raises(LaunchError, match="study 'race' is running: driver pid"):
            launch(spec(), storage=storage, overwrite=True, stream=io.StringIO())
        assert {k: v for k, v in files_of(store).items() if not k.endswith(LOCK_FILE)} == left
        assert read_lock(store).token == other.info.token
    finally:
        other.release()


# ---------------------------------------------------------------- finding 2: the lock itself


def test_two_drivers_taking_over_one_stale_lock_do_not_both_acquire(tmp_path, monkeypatch):
    store = StudyStore(str(tmp_path / "store"), "stale")
    stale_lock(store)
    first, second = (DriverLock(store, heartbeat_s=LONG) for _ in range(2))
    has_read, release = pause_after_read(monkeypatch, "second")
    thread, outcome = in_thread("second", second.acquire)
    assert has_read.wait(30)  # the second driver has read the stale lock and is stopped there
    first.acquire()  # the first takes the stale lock over meanwhile
    release.set()
    thread.join(30)
    try:
        assert isinstance(outcome.get("error"), StudyBusy), outcome  # the second must not acquire too
        assert read_lock(store).token == first.info.token
    finally:
        second.release()
        first.release()
    assert read_lock(store) is None


def test_a_stale_drivers_release_does_not_delete_the_new_drivers_lock(tmp_path, monkeypatch):
    store = StudyStore(str(tmp_path / "store"), "stale")
    old = DriverLock(store, heartbeat_s=LONG)
    old.acquire()
    make_stale(old)  # its heartbeat stalled: another driver may take the study over
    new = DriverLock(store, heartbeat_s=LONG)
    has_read, release = pause_after_read(monkeypatch, "old")
    thread, outcome = in_thread("old", old.release)
    assert has_read.wait(30)  # the old driver read its own token in the lock and is stopped there
    new.acquire()
    release.set()
    thread.join(30)
    try:
        assert "error" not in outcome, outcome
        assert read_lock(store) is not None and read_lock(store).token == new.info.token
    finally:
        new.release()


def test_the_heartbeat_of_a_driver_that_lost_its_lock_stops_and_leaves_the_new_lock(storage_of):
    store = StudyStore(storage_of, "beat")
    lost = threading.Event()
    old = DriverLock(store, heartbeat_s=LONG, on_lost=lost.set)
    old.acquire()
    make_stale(old)
    new = DriverLock(store, heartbeat_s=LONG)
    new.acquire()  # took the stale lock over
    assert old.beat() is False  # the old driver finds another token: it does not rewrite the lock
    assert read_lock(store).token == new.info.token
    old.release()
    assert read_lock(store).token == new.info.token
    new.release()
    assert read_lock(store) is None


def test_on_s3_of_two_drivers_started_from_one_stale_lock_the_earlier_stops_at_its_heartbeat(storage_of,
                                                                                           monkeypatch):
    """S3 has no exclusive create: the forced interleaving lets both start; the guarantee is that
    the one whose lock was overwritten finds out at its next heartbeat (and the launch stops it)."""
    store = StudyStore(storage_of, "stale")
    stale_lock(store)
    first, second = (DriverLock(store, heartbeat_s=LONG) for _ in range(2))
    has_read, release = pause_after_read(monkeypatch, "second")
    thread, outcome = in_thread("second", second.acquire)
    assert has_read.wait(30)
    first.acquire()
    release.set()
    thread.join(30)
    try:
        holders = [lock for lock in (first, second) if lock.beat()]
        assert len(holders) == 1 and read_lock(store).token == holders[0].info.token
    finally:
        second.release()
        first.release()


def test_a_lost_lock_calls_on_lost_from_the_heartbeat(tmp_path):
    store = StudyStore(str(tmp_path / "store"), "beat")
    lost = threading.Event()
    old = DriverLock(store, heartbeat_s=0.01, on_lost=lost.set)
    old.acquire()
    os.remove(old.path)  # gone, and then another driver's lock in its place
    DriverLock(store, heartbeat_s=LONG)._publish_local()
    assert lost.wait(30) and old.lost.is_set()
    old.release()
    assert read_lock(store) is not None  # the other driver's lock stays


def test_a_lock_is_never_seen_empty(tmp_path, monkeypatch):
    """The lock is linked into place whole: a reader at any moment of the publish sees no lock or all of it."""
    store = StudyStore(str(tmp_path / "store"), "whole")
    seen = []
    real_link = os.link

    def link_and_look(src, dst, *args, **kwargs):
        seen.append(os.path.exists(dst))  # just before the lock appears: nothing at its path
        real_link(src, dst, *args, **kwargs)
        with open(dst) as f:
            seen.append(json.load(f)["token"])

    monkeypatch.setattr(lock_module.os, "link", link_and_look)
    lock = DriverLock(store, heartbeat_s=LONG)
    lock.acquire()
    lock.release()
    assert seen == [False, lock.info.token]


def test_a_driver_that_loses_its_lock_ends_the_launch_with_one_line(tmp_path, monkeypatch):
    storage = str(tmp_path / "store")
    store = StudyStore(storage, "lost")
    monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.02)
    monkeypatch.setattr(launch_module, "ensure_ray", lambda address=None, num_cpus=None: None)

    class TakenOverWhileRunning:
        """Ray Tune's fit as far as the lock is concerned: it installs its own SIGINT handler (a
        real one stays installed after a real fit in the same process) and ends its loop when
        the signal arrives."""

        def fit(self):
            stop = threading.Event()
            previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
            try:
                os.remove(store.path(LOCK_FILE))  # another driver took the study over (as if it had been stale)
                DriverLock(store, heartbeat_s=LONG).acquire()
                if not stop.wait(30):
                    raise AssertionError("the driver was not stopped")
            finally:
                signal.signal(signal.SIGINT, previous)

    monkeypatch.setattr(launch_module, "_new_tuner", lambda *a, **k: TakenOverWhileRunning())
    with pytest.raises(LaunchError, match="this driver lost the lock of study 'lost' .*it stopped") as caught:
        launch(spec("lost"), storage=storage, stream=io.StringIO())
    assert "\n" not in str(caught.value)
