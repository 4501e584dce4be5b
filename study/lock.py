"""One driver per study: a lock file with the driver's host, pid and a heartbeat.

``STORE/<study>/driver.lock`` is JSON written when a driver (``launch``/``resume``)
starts, refreshed every ``HEARTBEAT_S`` seconds by a background thread, and removed
when the driver ends. A lock is *live* while its heartbeat is younger than
``STALE_AFTER_S`` and, when it was written on this host, its process still exists
(same pid and start time), so a driver that was killed on this machine frees the study
at once and one killed elsewhere frees it ``STALE_AFTER_S`` after its last heartbeat.

What holds on a local or NFS folder (POSIX link and rename are atomic):

- the lock is published whole: its JSON goes to an fsynced temporary file, which is then
  hard-linked to ``driver.lock``; the link fails when a lock exists, so of two drivers
  only one publishes, and no reader ever sees an empty or partial lock;
- a stale lock is taken over by compare-and-swap: it is renamed to a name of the taker's
  own (of two takers only one rename gets it) and its token compared with the stale one
  read before; a lock that turns out to be another's (published in between) is linked
  back, and the taker races for the free path with the exclusive link again;
- the heartbeat opens the lock, checks that its token is this driver's and touches that
  very file (its mtime is the heartbeat), so it never rewrites another driver's lock;
- release deletes the lock by the same compare-and-swap: only a lock with its own token.

A driver that finds another token in its lock (or its lock gone at two heartbeats in a
row) has lost the study: its heartbeat stops and ``on_lost`` is called (the launch stops
Ray Tune and ends with a one-line error). The one case left: a third driver publishing in
the microseconds between a stale takeover's rename and its link-back displaces the lock
it raced with; that driver notices at its next heartbeat and stops.

An object store (S3 through pyarrow) has no exclusive create or atomic rename: the lock is
written, read back after ``SETTLE_S`` (S3 reads are strongly consistent, so of two drivers
writing within that time both read the later write and only its writer goes on), and the
heartbeat and release read the token before they rewrite or delete. Two drivers whose
writes are more than ``SETTLE_S`` apart yet both started from the same stale (or no) lock
can both start; the earlier finds the other's token at its next heartbeat and stops.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Callable

import pyarrow.fs as pafs

from study.store import StudyStore, durable_temp, fsync_dir

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
SETTLE_S = 0.5  # object stores: how long a written lock is left before it is read back


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


def _parse(data: bytes) -> DriverInfo | None:
    try:
        return DriverInfo(**json.loads(data.decode()))
    except (ValueError, TypeError):
        return None


def _read_local(path: str) -> tuple[DriverInfo | None, float] | None:
    """(the lock's info or None when unreadable, its mtime); None when there is no lock."""
    try:
        with open(path, "rb") as f:
            data, mtime = f.read(), os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    except (IsADirectoryError, NotADirectoryError):
        return None, 0.0
    return _parse(data), mtime


def _unreadable(mtime: float) -> DriverInfo:
    """A lock that does not parse (an older version's, or damaged): live until stale by its mtime."""
    return DriverInfo(host="(unreadable lock)", pid=0, token="", started_at=mtime, heartbeat_at=mtime)


def read_lock(store: StudyStore) -> DriverInfo | None:
    """The study's lock, or None when there is none (an unreadable lock counts as none)."""
    path = store.path(LOCK_FILE)
    if isinstance(store.fs, pafs.LocalFileSystem):
        found = _read_local(path)
        if found is None or found[0] is None:
            return None
        info, mtime = found
        info.heartbeat_at = max(info.heartbeat_at, mtime)  # the heartbeat touches the file
        return info
    if store.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with store.fs.open_input_stream(path) as f:
            return _parse(f.read())
    except OSError:
        return None


class DriverLock:
    """Hold a study's lock for the life of a driver (a context manager).

    Raises ``StudyBusy`` on entry when a live driver holds the study. ``on_lost`` is called
    (from the heartbeat thread) when the driver finds that it no longer holds the lock;
    ``lost`` is then set.
    """

    def __init__(self, store: StudyStore, *, command: str = "", heartbeat_s: float | None = None,
                 on_lost: Callable[[], None] | None = None):
        self.store, self.command = store, command
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.on_lost = on_lost
        self.path = store.path(LOCK_FILE)
        self.local = isinstance(store.fs, pafs.LocalFileSystem)
        now = time.time()
        self.info = DriverInfo(host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex,
                               started_at=now, heartbeat_at=now, proc_start=_proc_start(os.getpid()),
                               command=command)
        self.lost = threading.Event()
        self._held = False
        self._missing = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DriverLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ acquiring

    def acquire(self) -> None:
        self.store.fs.create_dir(self.store.root, recursive=True)
        if self.local:
            self._acquire_local()
        else:
            self._acquire_remote()
        self._held = True
        self._thread = threading.Thread(target=self._beat, name="wd-study-heartbeat", daemon=True)
        self._thread.start()

    def _acquire_local(self) -> None:
        for _ in range(3):  # each round ends in a publish, a refusal, or a lock that moved meanwhile
            if self._publish_local():
                return
            current = read_lock(self.store)
            if current is None:
                found = _read_local(self.path)
                if found is None:
                    continue  # released or taken over meanwhile: race for the free path again
                current = _unreadable(found[1])
            if current.is_live():
                raise StudyBusy(current)
            self._remove_local(current.token)  # the stale lock, only if it is still that one
        raise StudyBusy(read_lock(self.store) or self.info)

    def _publish_local(self) -> bool:
        """Link a whole, fsynced lock to the lock path; False when a lock is there."""
        folder = os.path.dirname(self.path)
        tmp = durable_temp(folder, LOCK_FILE, json.dumps(asdict(self.info)).encode())
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
        fsync_dir(folder)
        return True

    def _remove_local(self, token: str) -> bool:
        """Compare-and-swap delete: remove the lock only if it holds ``token`` ("" for an
        unreadable one); True when it did. Another driver's lock is put back as it was."""
        claim = os.path.join(os.path.dirname(self.path), f".{LOCK_FILE}.{self.info.token}.claim")
        try:
            os.rename(self.path, claim)
        except FileNotFoundError:
            return False
        found = _read_local(claim)
        info = found[0] if found else None
        if (info.token if info is not None else "") == token:
            os.remove(claim)
            return True
        try:
            os.link(claim, self.path)  # not the lock we meant: give it back
        except FileExistsError:
            pass  # a third driver published meanwhile; the displaced one stops at its next heartbeat
        os.remove(claim)
        return False

    def _acquire_remote(self) -> None:
        current = read_lock(self.store)
        if current is not None and current.is_live():
            raise StudyBusy(current)
        self._write_remote()
        time.sleep(SETTLE_S)  # let a concurrent writer land before reading back
        back = read_lock(self.store)
        if back is None or back.token != self.info.token:
            raise StudyBusy(back or current or self.info)

    def _write_remote(self) -> None:
        self.store.write_text(LOCK_FILE, json.dumps(asdict(self.info)))

    # ------------------------------------------------------------ holding

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                holding = self.beat()
            except OSError:  # a storage hiccup: the next beat tries again
                continue
            if not holding:
                self.lost.set()
                if self.on_lost is not None:
                    self.on_lost()
                return

    def beat(self) -> bool:
        """Refresh the heartbeat if the lock is still this driver's; False once it is lost
        (another token in the lock, or no lock at two beats in a row)."""
        now = time.time()
        if self.local:
            try:
                with open(self.path, "rb") as f:
                    info = _parse(f.read())
                    if info is not None and info.token == self.info.token:
                        os.utime(f.fileno(), (now, now))  # this very file, whatever the path holds by now
            except FileNotFoundError:
                info = None
        else:
            info = read_lock(self.store)
            if info is not None and info.token == self.info.token:
                self.info.heartbeat_at = now
                self._write_remote()
        if info is None:
            self._missing += 1
            return self._missing < 2  # a takeover that put our lock back leaves it gone for a moment
        self._missing = 0
        return info.token == self.info.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if not self._held or self.lost.is_set():
            return
        self._held = False
        current = read_lock(self.store)
        if current is None or current.token != self.info.token:
            return
        if self.local:
            self._remove_local(self.info.token)
        else:
            try:
                self.store.fs.delete_file(self.path)
            except OSError:
                pass
