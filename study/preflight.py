"""Checks the command line makes before Ray starts or anything is written.

- ``check_storage``: the storage root can be reached and, for a verb that writes, written
  (a probe file in the nearest existing folder, removed at once: nothing is left behind).
- ``open_study``: a study name given on the command line (the one name check of
  ``study.spec.check_name``) and its folder in the store, which must hold a study.
- ``stored_spec_data``: a stored ``spec.yaml`` read as plain data and checked to be a study
  spec whose names are safe to put in paths; ``resume`` also requires its name to be the
  folder's (a renamed folder must not write into the study it was copied from).
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import uuid
from typing import Any

import pyarrow.fs as pafs

from study.errors import StorageError, reading, short_repr
from study.spec import SpecError, check_name, parse_yaml
from study.store import StoreError, StudyStore, display_storage, resolve_storage

PROBE_PREFIX = ".wd-study-probe-"
# a metric or axis name that may end up in a file name (figures/compare-B-<metric>.png)
SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class StudyNotFound(StoreError):
    """No study of that name in the store (exit 1 in every verb)."""


def check_storage(storage: str, *, write: bool) -> None:
    """Raise ``StorageError`` when the storage root cannot be reached, or (``write``) written.

    Locally: the root, or the nearest folder above it that exists, must be a folder, and
    with ``write`` a probe file is created and removed there. Elsewhere (s3://, gs://...):
    the root is looked up (a network failure shows here, before Ray starts), and with
    ``write`` a probe object is written and deleted under the nearest existing prefix.
    """
    shown = display_storage(storage)
    try:
        fs, root = resolve_storage(storage)
    except StoreError as exc:
        raise StorageError(str(exc)) from None
    except (OSError, ValueError, ImportError) as exc:
        raise StorageError(f"--storage {shown}: cannot open it ({_first_line(exc)})") from None
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            _probe_local(root, shown, write)
        else:
            _probe_remote(fs, root, shown, write)
    except OSError as exc:
        raise StorageError(f"--storage {shown}: cannot be reached or written ({_first_line(exc)})") from None


def _probe_local(root: str, shown: str, write: bool) -> None:
    existing = root
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is not a folder" if existing == root else f"cannot be created: {existing} is not a folder"
        raise StorageError(f"--storage {shown}: {what}")
    if not os.access(existing, os.R_OK | os.X_OK):
        raise StorageError(f"--storage {shown}: {existing} cannot be read (permission denied)")
    if write:
        try:
            fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=existing)
        except OSError as exc:
            raise StorageError(f"--storage {shown}: {existing} is not writable ({exc.strerror or exc})") from None
        os.close(fd)
        os.unlink(probe)


def _probe_remote(fs: pafs.FileSystem, root: str, shown: str, write: bool) -> None:
    existing = root.rstrip("/")
    info = fs.get_file_info(existing)
    if info.type == pafs.FileType.File:
        raise StorageError(f"--storage {shown}: is a file, not a folder")
    while info.type == pafs.FileType.NotFound and "/" in existing:
        existing = existing.rsplit("/", 1)[0]
        info = fs.get_file_info(existing)
    if not write or info.type != pafs.FileType.Directory:
        return  # reachable; a missing bucket is created on the first write (allow_bucket_creation)
    probe = f"{existing}/{PROBE_PREFIX}{uuid.uuid4().hex}"
    with fs.open_output_stream(probe) as f:
        f.write(b"probe")
    fs.delete_file(probe)


def open_study(storage: str, name: Any, *, where: str = "name") -> StudyStore:
    """The store of an existing study named on the command line.

    Raises ``SpecError`` (exit 2) for a name that is not a study name, and
    ``StudyNotFound`` (exit 1) when the store has no study of that name.
    """
    check_name(name, where)
    store = StudyStore(storage, name)
    if not store.exists():
        raise StudyNotFound(f"no study named {name!r} in {display_storage(storage)} "
                            f"(`python -m study list --storage {shlex.quote(storage)}` shows the stored ones)")
    return store


def stored_spec_data(store: StudyStore, *, same_name: bool = False) -> dict:
    """A stored ``spec.yaml`` as plain data, checked to be a study spec (``StoreError``: exit 1).

    Names that may become parts of paths (the study's name, its metric, its axes) must be
    plain names; ``same_name`` also requires the spec's name to be the folder's.
    """
    path = store.path("spec.yaml")
    with reading(path):
        raw = store.read_text("spec.yaml")
    try:
        data = parse_yaml(raw, path)
    except SpecError as exc:
        raise StoreError(str(exc)) from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: not a study spec (a YAML mapping), got {type(data).__name__}")
    name = data.get("name")
    try:
        check_name(name, f"{path}: name")
    except SpecError as exc:
        raise StoreError(str(exc)) from None
    if same_name and name != store.name:
        raise StoreError(f"{path}: names the study {name!r} but its folder is {store.name!r}; a study is "
                         f"resumed in the folder it names: rename the folder back to {name!r}, or set "
                         f"name: {store.name} in its spec.yaml")
    for key in ("trainable", "metric", "mode"):
        if key in data and not isinstance(data[key], str):
            raise StoreError(f"{path}: {key}: expected text, got {short_repr(data[key])}")
    metric = data.get("metric")
    if metric and not SAFE_KEY.fullmatch(metric) or metric and ".." in metric:
        raise StoreError(f"{path}: metric: {short_repr(metric)} is not a metric name")
    axes = data.get("axes") or {}
    if not isinstance(axes, dict):
        raise StoreError(f"{path}: axes: expected a mapping, got {short_repr(axes)}")
    for axis in axes:
        if not isinstance(axis, str) or not SAFE_KEY.fullmatch(axis):
            raise StoreError(f"{path}: axes: {short_repr(axis)} is not a config key")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["PROBE_PREFIX", "StudyNotFound", "check_storage", "open_study", "stored_spec_data"]
