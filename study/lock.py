"""One driver per study: a lock file with the driver's host, pid and a heartbeat.

``STORE/<study>/driver.lock`` is JSON written when a driver (``launch``/``resume``)
starts, rewritten every ``HEARTBEAT_S`` seconds by a background thread, and removed
when the driver ends. A lock is *live* while its heartbeat is younger than
``STALE_AFTER_S`` and, when it was written on this host, its process still exists
(same pid and start time), so a driver that was killed on this machine frees the study
at once and one killed elsewhere frees it ``STALE_AFTER_S`` after its last heartbeat.

On a local or NFS store the lock is created with O_EXCL, so of two drivers starting
at once only one wins. An object store (S3) has no such primitive here: the lock is
written and read back, which narrows but does not close the window for two drivers
started within the same second.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from study.store import StudyStore

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class StudyBusy(RuntimeError):
    """The study is being run by a live driver; the message says which."""

    def __init__(self, info: "DriverInfo"):
        super().__init__(info.describe())
        self.info = info


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]  # a zombie is dead; field 22 of stat is starttime


def _pid_alive(pid: int, started: str | None) -> bool:
    if os.path.isdir("/proc"):
        now = _proc_start(pid)
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class DriverInfo:
    """What a lock file holds."""

    host: str
    pid: int
    token: str
    started_at: float
    heartbeat_at: float
    proc_start: str | None = None
    command: str = ""

    def heartbeat_age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat_at

    def is_live(self, now: float | None = None) -> bool:
        if self.heartbeat_age(now) > STALE_AFTER_S:
            return False
        if self.host == socket.gethostname():
            return _pid_alive(self.pid, self.proc_start)
        return True

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return (f"driver pid {self.pid} on host {self.host} ({self.command or 'study'}), started {started}, "
                f"last heartbeat {max(0.0, self.heartbeat_age()):.0f}s ago")


def read_lock(store: StudyStore) -> DriverInfo | None:
    """The study's lock, or None when there is none (an unreadable lock counts as none)."""
    path = store.path(LOCK_FILE)
    if store.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with store.fs.open_input_stream(path) as f:
            data = json.loads(f.read().decode())
        return DriverInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


class DriverLock:
    """Hold a study's lock for the life of a driver (a context manager).

    Raises ``StudyBusy`` on entry when a live driver holds the study.
    """

    def __init__(self, store: StudyStore, *, command: str = "", heartbeat_s: float = HEARTBEAT_S):
        self.store, self.command, self.heartbeat_s = store, command, heartbeat_s
        self.path = store.path(LOCK_FILE)
        now = time.time()
        self.info = DriverInfo(host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex,
                               started_at=now, heartbeat_at=now, proc_start=_proc_start(os.getpid()),
                               command=command)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DriverLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        current = read_lock(self.store)
        if current is not None and current.is_live():
            raise StudyBusy(current)
        self.store.fs.create_dir(self.store.root, recursive=True)
        if isinstance(self.store.fs, pafs.LocalFileSystem):
            self._create_local(stale=current is not None or os.path.exists(self.path))
        else:
            self._write()
            time.sleep(0.5)  # let a concurrent writer land before reading back
            back = read_lock(self.store)
            if back is None or back.token != self.info.token:
                raise StudyBusy(back or current or self.info)
        self._thread = threading.Thread(target=self._beat, name="wd-study-heartbeat", daemon=True)
        self._thread.start()

    def _create_local(self, stale: bool) -> None:
        if stale:  # a dead driver's lock (checked above): remove it, then race fairly for a new one
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise StudyBusy(read_lock(self.store) or self.info) from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self.info)))

    def _write(self) -> None:
        self.store.write_text(LOCK_FILE, json.dumps(asdict(self.info)))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.info.heartbeat_at = time.time()
            try:
                self._write()
            except OSError:  # a storage hiccup: the next beat tries again
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        current = read_lock(self.store)
        if current is not None and current.token == self.info.token:
            try:
                self.store.fs.delete_file(self.path)
            except OSError:
                pass
