"""The Parquet store: where every study's trials and reported metrics live.

Layout under a storage root (a local folder or a URI pyarrow understands, e.g. s3://)::

    STORE/<study>/spec.yaml               the validated spec the study ran
    STORE/<study>/study.json              provenance of the launch (git, versions, times)
    STORE/<study>/trials.parquet          one row per trial
    STORE/<study>/metrics/trial_id=<id>/part-<n>.parquet
                                          one row per report, Hive-partitioned by trial
    STORE/<study>/tune/                   Ray Tune's own experiment folder (for resume)

Every file is written whole under a temporary name and renamed into place, so a
reader never sees half a file. Parquet files carry a ``wd_study`` metadata entry;
a Parquet file without it (or one that does not parse) is refused with a
``StoreError`` naming the file, and nothing is written over it.

``trials.parquet`` columns: ``trial_id``, ``status`` (running, finished, diverged,
failed, stopped), ``error``, ``started_at``, ``ended_at``, ``reports``, ``config/<key>``
for every config value, the last value of every reported metric under its own name,
and provenance: ``host``, ``node_ip``, ``git_commit``, ``git_dirty``, ``versions`` (JSON).
Metric rows hold what the trainable reported plus Ray's ``training_iteration`` and
``time_total_s``; the trial id comes from the partition folder.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

META_KEY = b"wd_study"
STORE_VERSION = 1
STATUSES = ("running", "finished", "diverged", "failed", "stopped")
CONFIG_PREFIX = "config/"


class StoreError(RuntimeError):
    """A store file that is missing, corrupt or not ours; the message names the file."""


def resolve_storage(storage: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and a path in it for a local folder or a URI (s3://bucket/prefix, file://...)."""
    if "://" in storage:
        return pafs.FileSystem.from_uri(storage)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(storage))


def list_studies(storage: str) -> list[str]:
    """Names of the studies under a storage root (folders holding a spec.yaml)."""
    fs, root = resolve_storage(storage)
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        return []
    names = []
    for entry in fs.get_file_info(pafs.FileSelector(root)):
        if entry.type == pafs.FileType.Directory:
            if fs.get_file_info(posixpath.join(entry.path, "spec.yaml")).type == pafs.FileType.File:
                names.append(entry.base_name)
    return sorted(names)


class StudyStore:
    """The folder of one study. Reading methods return pandas DataFrames."""

    def __init__(self, storage: str, name: str):
        self.storage, self.name = storage, name
        self.fs, root = resolve_storage(storage)
        self.root = posixpath.join(root, name)

    # ------------------------------------------------------------ paths

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def uri(self) -> str:
        """The study folder as Ray Tune's ``storage_path`` wants it (a URI for remote stores)."""
        if "://" in self.storage:
            return self.storage.rstrip("/") + "/" + self.name
        return self.root

    def exists(self) -> bool:
        return self._is_file(self.path("spec.yaml"))

    def _is_file(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    # ------------------------------------------------------------ writing

    def _write_bytes(self, path: str, data: bytes) -> None:
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)  # rename: atomic on a local filesystem
        else:  # object stores publish an object only when its upload completes
            with self.fs.open_output_stream(path) as f:
                f.write(data)

    def _write_table(self, path: str, table: pa.Table, kind: str) -> None:
        meta = json.dumps({"version": STORE_VERSION, "kind": kind, "study": self.name}).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: meta})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self._write_bytes(path, sink.getvalue().to_pybytes())

    def write_text(self, filename: str, text: str) -> None:
        self._write_bytes(self.path(filename), text.encode())

    def read_text(self, filename: str) -> str:
        path = self.path(filename)
        if not self._is_file(path):
            raise StoreError(f"{path}: not found")
        with self.fs.open_input_stream(path) as f:
            return f.read().decode()

    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        self._write_table(self.path("trials.parquet"), rows_to_table(rows), "trials")

    def write_metrics_part(self, trial_id: str, part: int, rows: list[dict[str, Any]]) -> None:
        path = self.path("metrics", f"trial_id={trial_id}", f"part-{part:06d}.parquet")
        self._write_table(path, rows_to_table(rows), "metrics")

    # ------------------------------------------------------------ reading

    def _check_schema(self, path: str, schema: pa.Schema, kind: str) -> None:
        raw = (schema.metadata or {}).get(META_KEY)
        try:
            meta = json.loads(raw) if raw else None
        except ValueError:
            meta = None
        if not meta or meta.get("kind") != kind:
            raise StoreError(f"{path}: not a wd-study {kind} file (foreign Parquet); move it out of the store")
        if meta.get("version", 0) > STORE_VERSION:
            raise StoreError(f"{path}: written by a newer store version {meta['version']}; upgrade wd-study")

    def _open_parquet(self, path: str, kind: str) -> pq.ParquetFile:
        try:
            pf = pq.ParquetFile(self.fs.open_input_file(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"{path}: corrupt Parquet file ({str(exc).splitlines()[0]})") from None
        self._check_schema(path, pf.schema_arrow, kind)
        return pf

    def read_trials(self) -> pd.DataFrame:
        """One row per trial (empty with no columns when no trial has started)."""
        path = self.path("trials.parquet")
        if not self._is_file(path):
            if not self.exists():
                raise StoreError(f"{self.root}: no study named {self.name!r} in {self.storage}")
            return pd.DataFrame()
        try:
            table = self._open_parquet(path, "trials").read()
        except pa.ArrowInvalid as exc:
            raise StoreError(f"{path}: corrupt Parquet file ({str(exc).splitlines()[0]})") from None
        return table.to_pandas()

    def metric_files(self, trial_id: str | None = None) -> list[str]:
        base = self.path("metrics") if trial_id is None else self.path("metrics", f"trial_id={trial_id}")
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted(i.path for i in infos
                      if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith("."))

    def read_metrics(self, trial_id: str | None = None) -> pd.DataFrame:
        """Metric rows (all trials, or one), with a ``trial_id`` column, in report order."""
        files = self.metric_files(trial_id)
        if not files:
            return pd.DataFrame(columns=["trial_id"])
        schemas = [self._open_parquet(path, "metrics").schema_arrow for path in files]
        schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
        schema = schema.append(pa.field("trial_id", pa.string()))
        partitioning = ds.partitioning(pa.schema([("trial_id", pa.string())]), flavor="hive")
        dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs,
                             partitioning=partitioning, partition_base_dir=self.path("metrics"))
        try:
            table = dataset.to_table()
        except pa.ArrowInvalid as exc:
            raise StoreError(f"{self.path('metrics')}: unreadable metrics ({str(exc).splitlines()[0]})") from None
        frame = table.to_pandas()
        frame.insert(0, "trial_id", frame.pop("trial_id").astype(str))
        order = ["trial_id"] + (["training_iteration"] if "training_iteration" in frame else [])
        return frame.sort_values(order, kind="stable").reset_index(drop=True)

    def stored_iterations(self) -> dict[str, int]:
        """Per trial, the highest ``training_iteration`` already in the metrics files."""
        files = self.metric_files()
        if not files:
            return {}
        frame = self.read_metrics()[["trial_id", "training_iteration"]]
        return {str(k): int(v) for k, v in frame.groupby("trial_id")["training_iteration"].max().items()}


class StoreWriter:
    """Driver-side writer fed by the Ray Tune callback as results arrive.

    Metric rows are buffered per trial and written as a new part file (never rewriting
    what is written) when a trial ends, when ``flush_rows`` rows are waiting, or
    ``flush_seconds`` after the last write. ``trials.parquet`` (small) is rewritten
    whole when a trial starts or ends and at each flush. A result whose
    ``training_iteration`` is already stored is dropped: a trial restored from a
    checkpoint repeats reports, and the store keeps each step once.
    """

    def __init__(self, store: StudyStore, provenance: dict[str, Any], *, flush_rows: int = 5000,
                 flush_seconds: float = 5.0):
        self.store = store
        self.provenance = provenance
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.trials: dict[str, dict[str, Any]] = {}
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.parts: dict[str, int] = {}
        self.last_iteration: dict[str, int] = {}
        self.buffered = 0
        self.last_flush = time.monotonic()
        self.trials_dirty = False

    def load_existing(self) -> None:
        """Continue a study already in the store (resume): keep its rows and part numbers."""
        frame = self.store.read_trials()
        for row in frame.to_dict("records"):
            self.trials[str(row["trial_id"])] = {k: _python(v) for k, v in row.items()}
        self.last_iteration.update(self.store.stored_iterations())
        for path in self.store.metric_files():
            trial_id = posixpath.basename(posixpath.dirname(path)).split("=", 1)[1]
            number = int(posixpath.basename(path)[5:11])
            self.parts[trial_id] = max(self.parts.get(trial_id, -1), number + 1)

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        row.update(status="running", error=None, started_at=row.get("started_at") or _now(), ended_at=None)
        row.setdefault("reports", 0)
        for key, value in config.items():
            row[CONFIG_PREFIX + key] = value
        row.update(self.provenance)
        self._write_trials()

    def add_result(self, trial_id: str, metrics: dict[str, Any], *, host: str | None = None,
                   node_ip: str | None = None) -> bool:
        """Buffer one report; returns False when it was a repeat already stored."""
        iteration = metrics.get("training_iteration")
        if iteration is not None:
            if iteration <= self.last_iteration.get(trial_id, 0):
                return False
            self.last_iteration[trial_id] = iteration
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id, "status": "running", "reports": 0})
        row["reports"] = row.get("reports", 0) + 1
        for key, value in metrics.items():
            if value is not None:
                row[key] = value
        if host:
            row["host"] = host
        if node_ip:
            row["node_ip"] = node_ip
        self.buffers.setdefault(trial_id, []).append(metrics)
        self.buffered += 1
        self.trials_dirty = True
        if self.buffered >= self.flush_rows or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()
        return True

    def trial_ended(self, trial_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id, "reports": 0})
        row.update(status=status, error=error, ended_at=_now())
        self._flush_trial(trial_id)
        self._write_trials()

    def flush(self) -> None:
        for trial_id in list(self.buffers):
            self._flush_trial(trial_id)
        if self.trials_dirty:
            self._write_trials()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()

    def _flush_trial(self, trial_id: str) -> None:
        rows = self.buffers.pop(trial_id, [])
        if not rows:
            return
        part = self.parts.get(trial_id, 0)
        self.store.write_metrics_part(trial_id, part, rows)
        self.parts[trial_id] = part + 1
        self.buffered -= len(rows)

    def _write_trials(self) -> None:
        self.store.write_trials(list(self.trials.values()))
        self.trials_dirty = False


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _python(value: Any) -> Any:
    """A value read back from pandas as the plain Python value it was written from."""
    if value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and not isinstance(value, pd.Timestamp):
        return value.item()
    return value


def rows_to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows with possibly different keys as one table: every key a column, missing values null.

    (``pa.Table.from_pylist`` takes its columns from the first row only.)
    """
    rows = list(rows)
    keys = dict.fromkeys(k for row in rows for k in row)
    return pa.Table.from_pydict({k: [row.get(k) for row in rows] for k in keys})
