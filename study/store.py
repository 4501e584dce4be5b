"""The Parquet store: where every study's trials and reported metrics live.

Layout under a storage root (a local folder, or a URI that pyarrow or fsspec understands:
``s3://bucket/prefix``, ``gs://...``, ``file://...``; see ``resolve_storage``)::

    STORE/<study>/spec.yaml               the validated spec the study ran
    STORE/<study>/study.json              provenance of the launch (git, versions, times)
    STORE/<study>/trials.parquet          one row per trial (complete once the driver closes the study)
    STORE/<study>/trial-updates/<first>-<last>.parquet
                                          while a driver runs: the trials changed since
                                          trials.parquet was written (read over it, last wins)
    STORE/<study>/metrics/trial_id=<id>/part-<n>.parquet
                                          one row per report, Hive-partitioned by trial
    STORE/<study>/tune/                   Ray Tune's own experiment folder (for resume)
    STORE/<study>/logs/<trial_id>.txt     what each trial printed (stdout and stderr, interleaved)
    STORE/<study>/driver.lock             while a driver runs the study: its host, pid, heartbeat

Every file is written whole under a temporary name and renamed into place, so a
reader never sees half a file; on a local filesystem the file is fsynced before the rename
and its folder after it, so a power loss leaves the old file or the new one, never an
empty one (an object store publishes an object only once its upload completed). Parquet files carry a ``wd_study`` metadata entry;
a Parquet file without it (or one that does not parse) is refused with a
``StoreError`` naming the file, and nothing is written over it.

``trials.parquet`` columns: ``trial_id``, ``status`` (running, finished, diverged,
failed, stopped), ``error``, ``started_at``, ``ended_at``, ``reports``, ``config/<key>``
for every config value, the last value of every reported metric under its own name,
and provenance: ``host``, ``node_ip``, ``node_id`` (Ray's node), ``pid``, ``gpu_ids``,
``cpus``/``gpus`` (what the trial held), ``restarts`` (times the trial was started again
after its worker or the driver died, or by ``resume --retry-failed``),
``restored_from_iteration`` (the checkpoint its last restart resumed from; empty when it
started from scratch), ``git_commit``, ``git_dirty``, ``versions`` (JSON), ``driver_host``.
Metric rows hold what the trainable reported plus Ray's ``training_iteration`` and
``time_total_s``; the trial id comes from the partition folder. Every metric part file of a
study carries the same columns, in the same order and with the same types: the trainable's
full metric schema (``TrainableInfo.metric_schema``), null where a report has no value, so
that plain readers (``pd.read_parquet``, polars, DuckDB), which take the schema from one
file, see every column. (Stores written before this have only the reported columns per
file; ``StudyStore.read_metrics`` reads both.)

What survives a crash (``StoreWriter``): every report is stored exactly once per
``training_iteration``. Rows are flushed to a new part file before Ray Tune records a
trial's checkpoint, so a trial resumed from that checkpoint (worker or driver died)
re-reports only iterations after it, and the writer drops those already stored. Rows
buffered after a trial's last checkpoint when the driver dies are re-created by the
resumed trial. A study's trial is identified by its config (a grid point), so a trial
that Ray Tune re-creates under a new id after a driver crash continues the stored one.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

META_KEY = b"wd_study"
STORE_VERSION = 1
STATUSES = ("running", "finished", "diverged", "failed", "stopped")
ENDED = ("finished", "diverged", "failed", "stopped")
CONFIG_PREFIX = "config/"
TUNE_DIR = "tune"
TRIALS_FILE = "trials.parquet"
TRIAL_UPDATES = "trial-updates"
# What Ray Tune adds to every metric row (``study.callbacks.metric_row``), as Arrow types.
RAY_METRIC_TYPES = {"training_iteration": "int64", "time_total_s": "double"}


class _Vanished(Exception):
    """An update file listed a moment ago is gone (the driver merged it): read again."""


class StoreError(RuntimeError):
    """A store file that is missing, corrupt or not ours; the message names the file."""


def resolve_storage(storage: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and a path in it for a local folder or a URI.

    URIs go to ``pyarrow.fs.FileSystem.from_uri`` first (``s3://``, ``gs://``, ``hdfs://``,
    ``file://``), whose S3 URIs take query parameters such as
    ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http&region=eu-west-1`` for an
    S3-compatible server (credentials come from the usual AWS environment variables,
    config files or instance role, never from the URI). Other schemes go to fsspec
    (``abfs://``, ``memory://``, ... with the matching fsspec package installed).
    """
    if "://" not in storage:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(storage))
    try:
        return pafs.FileSystem.from_uri(storage)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        arrow_error = str(exc).splitlines()[0]
        if "Unrecognized filesystem type" not in arrow_error and "not supported" not in arrow_error:
            raise StoreError(f"--storage {storage}: {arrow_error}") from None
    try:
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(storage)
    except (ImportError, ValueError) as exc:
        raise StoreError(f"--storage {storage}: neither pyarrow nor fsspec can open this URI ({exc})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def display_storage(storage: str) -> str:
    """The storage root as shown to people and kept in study.json: without its query string."""
    return storage.split("?", 1)[0]


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
        """The study folder as a URI (a plain path for a local store), without query parameters."""
        if "://" in self.storage:
            base, _, query = self.storage.partition("?")
            return base.rstrip("/") + "/" + self.name + (f"?{query}" if query else "")
        return self.root

    @property
    def tune_path(self) -> str:
        """Ray Tune's experiment folder, as a path in ``self.fs``."""
        return self.path(TUNE_DIR)

    def exists(self) -> bool:
        return self._is_file(self.path("spec.yaml"))

    def folder_exists(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def files(self, *, skip_tune: bool = True) -> list[str]:
        """Every file under the study folder (paths in ``self.fs``), Ray Tune's folder left out."""
        if not self.folder_exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
        tune = self.tune_path + "/"
        return sorted(i.path for i in infos if i.type == pafs.FileType.File
                      and not (skip_tune and (i.path + "/").startswith(tune)))

    def check_files(self) -> None:
        """Raise ``StoreError`` naming the first Parquet file that is corrupt or not ours.

        Reads only footers. Ray Tune's folder is left out (its files are Tune's).
        """
        metrics = self.path("metrics") + "/"
        for path in self.files():
            if not path.endswith(".parquet") or posixpath.basename(path).startswith("."):
                continue
            if path == self.path(TRIALS_FILE) or path.startswith(self.path(TRIAL_UPDATES) + "/"):
                self._open_parquet(path, "trials")
            elif path.startswith(metrics):
                self._open_parquet(path, "metrics")
            else:
                raise StoreError(f"{path}: a Parquet file that is not part of the wd-study store; "
                                 f"move it out of the study folder")

    def delete(self, *, keep: tuple[str, ...] = ()) -> None:
        """Remove the study folder and everything in it (``--overwrite``), except the top-level
        entries named in ``keep`` (the lock of the driver that overwrites)."""
        if not self.folder_exists():
            return
        if not keep:
            self.fs.delete_dir(self.root)
            return
        for entry in self.fs.get_file_info(pafs.FileSelector(self.root)):
            if entry.base_name in keep:
                continue
            if entry.type == pafs.FileType.Directory:
                self.fs.delete_dir(entry.path)
            else:
                self.fs.delete_file(entry.path)

    def _is_file(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    # ------------------------------------------------------------ writing

    def _write_bytes(self, path: str, data: bytes) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):
            folder = os.path.dirname(path)
            make_dirs_durable(folder)
            tmp = durable_temp(folder, os.path.basename(path), data)
            try:
                os.replace(tmp, path)  # atomic on a local filesystem
            except OSError:
                _remove_quietly(tmp)
                raise
            fsync_dir(folder)  # the rename itself survives a power loss
        else:  # object stores publish an object only when its upload completes
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            with self.fs.open_output_stream(path) as f:
                f.write(data)

    def _write_table(self, path: str, table: pa.Table, kind: str) -> None:
        meta = json.dumps({"version": STORE_VERSION, "kind": kind, "study": self.name}).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: meta})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self._write_bytes(path, sink.getvalue().to_pybytes())

    def has_file(self, filename: str) -> bool:
        """Whether the study folder holds ``filename`` (a path relative to it) as a file."""
        return self._is_file(self.path(filename))

    def write_bytes(self, filename: str, data: bytes) -> None:
        """Publish ``filename`` (relative to the study folder) whole: durable and atomic locally,
        an object store publishes an object when its upload completes."""
        self._write_bytes(self.path(filename), data)

    def read_bytes(self, filename: str) -> bytes:
        path = self.path(filename)
        if not self._is_file(path):
            raise StoreError(f"{path}: not found")
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_text(self, filename: str, text: str) -> None:
        self.write_bytes(filename, text.encode())

    def read_text(self, filename: str) -> str:
        return self.read_bytes(filename).decode()

    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        """``trials.parquet`` whole: every trial's row. The update files it includes are then
        removed (a crash between the two leaves updates that read over it as no change)."""
        self._write_table(self.path(TRIALS_FILE), rows_to_table(rows), "trials")
        for path in self.trial_update_files():
            self.fs.delete_file(path)

    def write_trial_update(self, first: int, last: int, rows: list[dict[str, Any]]) -> None:
        """The rows of the trials changed by updates ``first``..``last`` (sequence numbers), as
        they stand after update ``last``: one file under ``trial-updates/`` that readers apply
        over ``trials.parquet`` and the earlier updates."""
        self._write_table(self.path(TRIAL_UPDATES, f"{first:08d}-{last:08d}.parquet"), rows_to_table(rows), "trials")

    def trial_update_files(self) -> list[str]:
        """The update files, oldest first (by the last update each holds)."""
        base = self.path(TRIAL_UPDATES)
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base))
        names = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                 and not i.base_name.startswith(".")]
        return [i.path for i in sorted(names, key=lambda i: _update_range(i.base_name)[::-1])]

    def write_metrics_part(self, trial_id: str, part: int, rows: list[dict[str, Any]],
                           types: dict[str, str] | None = None) -> None:
        """One metric part file; ``types`` (column → Arrow type name) is the study's full metric
        schema: every column it names is in the file, null where no row has a value."""
        path = self.path("metrics", f"trial_id={trial_id}", f"part-{part:06d}.parquet")
        self._write_table(path, rows_to_table(rows, types), "metrics")

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
        """One row per trial, sorted by trial id (empty with no columns when no trial has started):
        ``trials.parquet`` with the update files of a running (or crashed) driver applied over it."""
        for attempt in range(20):
            path = self.path(TRIALS_FILE)
            paths = ([path] if self._is_file(path) else []) + self.trial_update_files()
            if not paths:
                if not self.exists():
                    raise StoreError(f"{self.root}: no study named {self.name!r} in {self.storage}")
                return pd.DataFrame()
            try:
                tables = [self._read_trials_file(each) for each in paths]
                break
            except _Vanished:  # a running driver merged or folded update files in the meantime: list again
                time.sleep(0.01 * (attempt + 1))
        else:
            raise StoreError(f"{self.path(TRIAL_UPDATES)}: its files kept changing while they were read; try again")
        if len(tables) == 1:
            return tables[0].to_pandas()
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"{self.path(TRIAL_UPDATES)}: updates that do not fit trials.parquet "
                             f"({str(exc).splitlines()[0]})") from None
        ids = table.column("trial_id").to_pandas()
        latest = ids.drop_duplicates(keep="last")  # the last update of each trial wins
        order = latest.sort_values(kind="stable").index.to_numpy()
        return table.take(order).to_pandas()

    def _read_trials_file(self, path: str) -> pa.Table:
        try:
            return self._open_parquet(path, "trials").read().replace_schema_metadata(None)
        except (StoreError, pa.ArrowInvalid, OSError) as exc:
            if path.startswith(self.path(TRIAL_UPDATES) + "/") and not self._is_file(path):
                raise _Vanished() from None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{path}: corrupt Parquet file ({str(exc).splitlines()[0]})") from None

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

    def stored_reports(self) -> dict[str, tuple[int, int]]:
        """Per trial, (rows stored, highest ``training_iteration``) from the metrics files.

        Every file is checked (a corrupt or foreign one raises ``StoreError``); only the two
        columns are read.
        """
        files = self.metric_files()
        if not files:
            return {}
        frame = self.read_metrics_columns(["training_iteration"])
        grouped = frame.groupby("trial_id")["training_iteration"]
        return {str(k): (int(n), int(m)) for (k, n), m in zip(grouped.size().items(), grouped.max())}

    def read_metrics_columns(self, columns: list[str]) -> pd.DataFrame:
        """Some columns of every metric row, with ``trial_id`` (files are checked as in ``read_metrics``)."""
        files = self.metric_files()
        if not files:
            return pd.DataFrame(columns=["trial_id", *columns])
        for path in files:
            self._open_parquet(path, "metrics")
        partitioning = ds.partitioning(pa.schema([("trial_id", pa.string())]), flavor="hive")
        dataset = ds.dataset(files, format="parquet", filesystem=self.fs, partitioning=partitioning,
                             partition_base_dir=self.path("metrics"))
        present = [c for c in columns if c in dataset.schema.names]
        try:
            frame = dataset.to_table(columns=["trial_id", *present]).to_pandas()
        except pa.ArrowInvalid as exc:
            raise StoreError(f"{self.path('metrics')}: unreadable metrics ({str(exc).splitlines()[0]})") from None
        frame["trial_id"] = frame["trial_id"].astype(str)
        return frame


def config_key(config: dict[str, Any]) -> str:
    """The identity of a trial's config within a study: canonical JSON of its values.

    Numbers compare as floats (a config read back from Parquet may have turned an int
    column into floats); missing (None/NaN) values are left out.
    """
    def plain(value: Any) -> Any:
        value = _python(value)
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return float(value)
        return str(value)

    items = {str(k): plain(v) for k, v in config.items()}
    return json.dumps({k: v for k, v in items.items() if v is not None}, sort_keys=True)


def stored_config(row: dict[str, Any]) -> dict[str, Any]:
    """The config of a trials-table row (its ``config/<key>`` columns)."""
    return {k[len(CONFIG_PREFIX):]: v for k, v in row.items() if k.startswith(CONFIG_PREFIX)}


LOGS_DIR = "logs"


class TrialLogs:
    """What each trial printed: ``logs/<trial_id>.txt`` in the study folder, written by the
    trial's worker (``trainables.session.captured_output``), so it is picklable and holds the
    storage root as an absolute path or URI (a worker's working folder is not the driver's)."""

    def __init__(self, store: "StudyStore"):
        self.storage = store.storage if "://" in store.storage else os.path.abspath(
            os.path.expanduser(store.storage))
        self.name = store.name

    def _store(self) -> "StudyStore":
        return StudyStore(self.storage, self.name)

    def filename(self, trial_id: str) -> str:
        return f"{LOGS_DIR}/{trial_id}.txt"

    def read(self, trial_id: str) -> str:
        store = self._store()
        name = self.filename(trial_id)
        return store.read_bytes(name).decode(errors="replace") if store.has_file(name) else ""

    def write(self, trial_id: str, text: str) -> None:
        self._store().write_text(self.filename(trial_id), text)

    def has(self, trial_id: str) -> bool:
        return self._store().has_file(self.filename(trial_id))


UPDATE_FANOUT = 8  # update files of one size merged into one of the next


@dataclass(frozen=True)
class TrialUpdate:
    """One update file this writer wrote: updates ``first``..``last``, merged ``level`` times,
    holding the rows of trials ``ids``."""

    first: int
    last: int
    level: int
    ids: frozenset

    @property
    def filename(self) -> str:
        return f"{self.first:08d}-{self.last:08d}.parquet"


class StoreWriter:
    """Driver-side writer fed by the Ray Tune callback as results arrive.

    Metric rows are buffered per trial and written as a new part file (never rewriting
    what is written) when a trial checkpoints, when it ends, when ``flush_rows`` rows
    are waiting, or ``flush_seconds`` after the last write. The trials table is written
    incrementally: the rows of the trials changed since the last write go to a new update
    file (``StudyStore.write_trial_update``) when a trial checkpoints or ends and at each
    flush (a trial's start reaches the store with the next flush, at most ``flush_seconds``
    later). Update files are merged as they pile up, ``UPDATE_FANOUT`` of one size into one
    of the next (their rows are the writer's current rows of the trials they hold): each
    row is rewritten O(log updates) times and a reader finds O(log updates) files, where a
    whole-table rewrite per flush cost trials x flushes (``bench/store.py``). ``close``
    writes ``trials.parquet`` whole, once, and removes the update files.

    Exactly once: a result whose ``training_iteration`` is already stored (or buffered)
    is dropped, since a trial restored from a checkpoint repeats the reports after it.
    Nothing lost: the rows up to a checkpoint are written before Ray Tune records the
    checkpoint (``trial_checkpointed``), so whatever a resumed trial does not re-report
    is already in the store.

    Trials are keyed by Ray Tune's trial id, except that a trial whose config equals a
    stored trial's (the same grid point, re-created by Tune under a new id because the
    driver died before Tune saved it) continues the stored trial (``alias``).
    """

    def __init__(self, store: StudyStore, provenance: dict[str, Any], *, flush_rows: int = 5000,
                 flush_seconds: float = 5.0, metric_types: dict[str, str] | None = None, lock=None):
        self.store = store
        self.lock = lock  # a study.lock.DriverLock: once it is lost, nothing more is written
        self.provenance = provenance
        self.metric_types = metric_types  # the study's metric schema: every part file carries it whole
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.trials: dict[str, dict[str, Any]] = {}
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.parts: dict[str, int] = {}
        self.last_iteration: dict[str, int] = {}
        self.by_config: dict[str, str] = {}  # config_key -> stored trial id
        self.alias: dict[str, str] = {}  # Ray Tune trial id -> stored trial id
        self.seen: set[str] = set()  # stored ids started by this driver
        self.ambiguous: set[str] = set()  # config keys shared by several stored trials: no aliasing
        self.buffered = 0
        self.last_flush = time.monotonic()
        self.dirty: set[str] = set()  # stored ids whose rows changed since the last trials write
        self.updates: list[TrialUpdate] = []  # this driver's update files, oldest first
        self.next_update = 0
        self.whole_written = False  # trials.parquet holds every row as it stands (close ran)

    def __getstate__(self):  # Ray Tune pickles its callbacks; a lock (its thread and events) stays here
        return {**self.__dict__, "lock": None}

    def load_existing(self) -> None:
        """Continue a study already in the store (resume): keep its rows and part numbers.

        Reads (and so checks) every store file before anything is written: a corrupt or
        foreign file raises ``StoreError``. The trials table's ``reports`` is recounted
        from the metric files, which are the truth after a crash.
        """
        frame = self.store.read_trials()
        counts = self.store.stored_reports()
        for row in frame.to_dict("records"):
            row = {k: _python(v) for k, v in row.items()}
            trial_id = str(row["trial_id"])
            row["reports"], _ = counts.get(trial_id, (0, 0))
            self.trials[trial_id] = row
            key = config_key(stored_config(row))
            if key in self.by_config:
                self.ambiguous.add(key)
            self.by_config.setdefault(key, trial_id)
        self.last_iteration.update({trial_id: last for trial_id, (_, last) in counts.items()})
        # A dead driver's update files stay (close folds them into trials.parquet); ours come after
        # them in the order readers apply updates, and never take one of their names.
        left = [_update_range(posixpath.basename(path)) for path in self.store.trial_update_files()]
        self.next_update = max((last for _, last in left), default=-1) + 1
        for path in self.store.metric_files():
            trial_id = posixpath.basename(posixpath.dirname(path)).split("=", 1)[1]
            number = int(posixpath.basename(path)[5:11])
            self.parts[trial_id] = max(self.parts.get(trial_id, -1), number + 1)

    def stored_id(self, trial_id: str) -> str:
        return self.alias.get(trial_id, trial_id)

    def ended(self, *, include_failed: bool = True) -> tuple[set[str], set[str]]:
        """(ids, config keys) of the stored trials that have ended: those a resume must not rerun.

        Config keys shared by several stored trials are left out (ids still match).
        """
        ended = set(ENDED) - ({"failed"} if not include_failed else set())
        rows = [row for row in self.trials.values() if row.get("status") in ended]
        keys = {config_key(stored_config(row)) for row in rows} - self.ambiguous
        return {row["trial_id"] for row in rows}, keys

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> str:
        """A trial (re)started; returns the id it is stored under."""
        key = config_key(config)
        if trial_id not in self.trials and trial_id not in self.alias:
            earlier = self.by_config.get(key)
            if earlier is not None and earlier not in self.seen and key not in self.ambiguous:
                self.alias[trial_id] = earlier
        sid = self.stored_id(trial_id)
        row = self.trials.setdefault(sid, {"trial_id": sid})
        row.setdefault("restarts", 0)
        if row.get("status") is not None:  # it ran before: its worker or the driver died
            row["restarts"] += 1
            row["restored_from_iteration"] = None  # set by its first report if it restores a checkpoint
        row.update(status="running", error=None, started_at=row.get("started_at") or _now(), ended_at=None)
        row.setdefault("reports", 0)
        for name, value in config.items():
            row[CONFIG_PREFIX + name] = value
        row.update(self.provenance)
        self.by_config[key] = sid
        self.seen.add(sid)
        # Written with the next flush (at most flush_seconds away), checkpoint or end, not now.
        self.dirty.add(sid)
        return sid

    def add_result(self, trial_id: str, metrics: dict[str, Any], *, host: str | None = None,
                   node_ip: str | None = None, where: dict[str, Any] | None = None) -> bool:
        """Buffer one report; returns False when it was a repeat already stored.

        ``where`` holds provenance of the worker that reported (node id, pid, GPU ids):
        it goes to the trial's row, not into the metric rows.
        """
        sid = self.stored_id(trial_id)
        row = self.trials.setdefault(sid, {"trial_id": sid, "status": "running", "reports": 0, "restarts": 0})
        if host:
            row["host"] = host
        if node_ip:
            row["node_ip"] = node_ip
        row.update({k: v for k, v in (where or {}).items() if v is not None})
        self.dirty.add(sid)
        iteration = metrics.get("training_iteration")
        if iteration is not None:
            if iteration <= self.last_iteration.get(sid, 0):
                return False
            self.last_iteration[sid] = iteration
        row["reports"] = row.get("reports", 0) + 1
        for key, value in metrics.items():
            if value is not None:
                row[key] = value
        self.buffers.setdefault(sid, []).append(metrics)
        self.buffered += 1
        if self.buffered >= self.flush_rows:
            self.flush()
        else:
            self.flush_if_due()
        return True

    def trial_checkpointed(self, trial_id: str) -> None:
        """Make the trial's rows durable before Ray Tune records its new checkpoint."""
        self._flush_trial(self.stored_id(trial_id))
        self._write_trials()

    def trial_ended(self, trial_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        sid = self.stored_id(trial_id)
        row = self.trials.setdefault(sid, {"trial_id": sid, "reports": 0, "restarts": 0})
        row.update(status=status, error=error, ended_at=_now())
        self.dirty.add(sid)
        self._flush_trial(sid)
        self._write_trials()

    def status(self, trial_id: str) -> str | None:
        return self.trials.get(self.stored_id(trial_id), {}).get("status")

    def mark_unresumable(self, message: str) -> list[str]:
        """Trials still ``running`` that this driver never started: Ray Tune cannot resume them.

        (Tune re-creates a lost grid point under a new id, which ``trial_started`` maps back;
        a trial of a search that samples configs has no such twin.) They become ``failed``
        with ``message``; their stored rows are kept. Returns their ids.
        """
        lost = [sid for sid, row in self.trials.items() if row.get("status") == "running" and sid not in self.seen]
        for sid in lost:
            self.trial_ended(sid, "failed", error=message)
        return lost

    def flush_if_due(self) -> None:
        if (self.buffered or self.dirty) and time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        for trial_id in list(self.buffers):
            self._flush_trial(trial_id)
        self._write_trials()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Flush, then write ``trials.parquet`` whole (what plain Parquet readers read); once
        until the next change, so a second close writes nothing."""
        self.flush()
        self._write_whole_table()

    def _lost(self) -> bool:
        return self.lock is not None and self.lock.lost.is_set()

    def _flush_trial(self, trial_id: str) -> None:
        rows = self.buffers.pop(trial_id, [])
        self.buffered -= len(rows)
        if not rows or self._lost():  # another driver owns the study now
            return
        part = self.parts.get(trial_id, 0)
        self.store.write_metrics_part(trial_id, part, rows, self.metric_types)
        self.parts[trial_id] = part + 1

    def _write_trials(self) -> None:
        """The changed trials' rows as a new update file, then merge update files due for it."""
        if not self.dirty or self._lost():
            return
        ids = frozenset(self.dirty)
        self.whole_written = False
        self._write_update(TrialUpdate(self.next_update, self.next_update, 0, ids))
        self.next_update += 1
        self.dirty.clear()
        # The FANOUT newest files of one level become one file of the next; they are the newest,
        # so their trials' rows as they stand now are the rows as of their last update.
        while len(self.updates) >= UPDATE_FANOUT and len({u.level for u in self.updates[-UPDATE_FANOUT:]}) == 1:
            merged = self.updates[-UPDATE_FANOUT:]
            del self.updates[-UPDATE_FANOUT:]
            self._write_update(TrialUpdate(merged[0].first, merged[-1].last, merged[0].level + 1,
                                           frozenset().union(*(u.ids for u in merged))))
            for update in merged:  # after the merged file exists: a crash leaves both, which read alike
                self.store.fs.delete_file(self.store.path(TRIAL_UPDATES, update.filename))

    def _write_update(self, update: "TrialUpdate") -> None:
        # sorted by id: Ray Tune's ids count up in grid order
        self.store.write_trial_update(update.first, update.last, [self.trials[sid] for sid in sorted(update.ids)])
        self.updates.append(update)

    def _write_whole_table(self) -> None:
        if self._lost() or self.whole_written or not self.trials:
            return
        self.store.write_trials([self.trials[trial_id] for trial_id in sorted(self.trials)])
        self.updates.clear()
        self.whole_written = True


def _update_range(filename: str) -> tuple[int, int]:
    """(first, last) update of a ``trial-updates/<first>-<last>.parquet`` file name."""
    first, _, last = filename.removesuffix(".parquet").partition("-")
    try:
        return int(first), int(last)
    except ValueError:
        raise StoreError(f"{TRIAL_UPDATES}/{filename}: not a trial update file (expected <first>-<last>.parquet); "
                         f"move it out of the study folder") from None


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


def rows_to_table(rows: Iterable[dict[str, Any]], types: dict[str, str] | None = None) -> pa.Table:
    """Rows with possibly different keys as one table: every key a column, missing values null.

    (``pa.Table.from_pylist`` takes its columns from the first row only.) ``types`` maps
    column names to Arrow type names (``int64``, ``double``, ...): those columns come first,
    in that order and of that type, whether or not a row has them; a value that does not
    fit its declared type leaves the column as Arrow infers it (``StudyStore`` still reads it).
    """
    rows = list(rows)
    types = types or {}
    keys = dict.fromkeys([*types, *(k for row in rows for k in row)])
    return pa.Table.from_pydict({k: _column([row.get(k) for row in rows], types.get(k)) for k in keys})


def _column(values: list, type_name: str | None) -> pa.Array:
    inferred = pa.array(values)
    if type_name is None:
        return inferred
    try:  # a safe cast: 3.0 becomes 3 in an int64 column, 4.5 is not truncated
        return inferred.cast(pa.type_for_alias(type_name), safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return inferred


# ---------------------------------------------------------------- durable local writes


def durable_temp(folder: str, name: str, data: bytes) -> str:
    """Write ``data`` to a new hidden temporary file in ``folder``, fsynced; returns its path.

    Publishing it (a rename, or a link that fails when the target exists) is the caller's.
    """
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)  # the data is on disk before any name makes it visible
    except BaseException:
        os.close(fd)
        _remove_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def fsync_dir(folder: str) -> None:
    """Make the folder's entries (a rename, a new file) durable; a no-op where the filesystem
    cannot fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def make_dirs_durable(folder: str) -> None:
    """``os.makedirs(folder)``, fsyncing the parent of every folder it creates."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        fsync_dir(os.path.dirname(path))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
