"""Published results as a study: ``python -m analysis import TABLE --name NAME``.

A table (CSV, or Parquet) of someone's results becomes a study in the store that every
reader accepts (``study status``/``list``, ``analysis.load``, ``analysis report`` and
``compare``), so published numbers can stand beside our own runs. Its columns:

- ``trainable``: the trainable whose config the table describes (``vision``, ``lm``), one
  value for the whole table; or ``--trainable``.
- config columns: ``config/<key>``, or a bare name that is a config field of the trainable
  (``lr``, ``weight_decay``, ``schedule``...). Known fields are checked as a spec's are;
  other ``config/<key>`` columns are kept as given (a finite number, true/false or text).
  An empty cell leaves the key unset for that row.
- ``seed`` (optional, default 0): one trial per (config, seed); its reports are its rows.
- an x column, ``epoch``, ``tokens`` or ``step`` (the first of these present): when each
  row was reported. Needed when a trial has more than one row.
- ``status`` (optional): finished (default), diverged, failed or stopped; one per trial.
- ``n_seeds`` and ``<metric>_sd`` (optional): a published mean over ``n_seeds`` seeds with
  their sample standard deviation. Such a row becomes ``n_seeds`` pseudo-seeds whose values
  have exactly that mean and sample sd (mean + sd·z_k, z standardised to mean 0 and sample
  sd 1; one seed: the mean). Their seed labels are unique to each config, so two arms are
  never paired: Welch's test on the pseudo-seeds is Welch's test on the summary. A mean
  over more than one seed without its sd is refused: the verdicts need the spread.
- every other column: a numeric metric (``test_error``, ``train_loss``...). An empty cell
  is "not reported at this row"; ``nan``/``inf`` are kept (a diverged run's last loss).

Rows are numbered from 1, the first row below the header (line 2 of a CSV). Every row
is checked before anything is written: bad input raises ``TableError`` whose one-line
message names the file, row and column, and the store stays as it was.

The study's ``study.json`` records ``source: imported``, the table's path and sha256;
each trial row carries ``source: imported``, the table's sha256 and the rows it came from.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import pandas as pd
import yaml

from study.lock import DriverLock, StudyBusy, read_lock
from study.provenance import provenance
from study.spec import NAME_PATTERN, StudySpec
from study.store import CONFIG_PREFIX, ENDED, StoreWriter, StudyStore, config_key, display_storage
from trainables.registry import TRAINABLES, ConfigError, check_value, config_fields, get_trainable

X_COLUMNS = ("epoch", "tokens", "step")  # the order analysis.load prefers them in
SD_SUFFIX = "_sd"
RESERVED = ("trial_id", "training_iteration")  # the store's own columns
PUBLISHED = "published"  # package folder of the paper's tables (analysis/published/*.csv)
PARQUET_MAGIC = b"PAR1"


class TableError(ValueError):
    """A table that cannot be imported; the message is one line naming file, row and column."""

    def __init__(self, source: str, problem: str, row: int | str | None = None, column: str | None = None):
        where = ""
        if row is not None:
            where = (f"row {row}, " if isinstance(row, int) else f"{row}, ") + (f"column {column}: " if column else "")
        elif column is not None:
            where = f"column {column}: "
        super().__init__(f"{source}: {where}{problem}")


# ---------------------------------------------------------------- reading the file


def read_table(path: str) -> tuple[list[str], list[list[Any]], str]:
    """(header, rows of cells, sha256 of the file): CSV cells as text, Parquet cells as values."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TableError(path, f"cannot read it ({exc.strerror or exc})") from None
    sha = hashlib.sha256(data).hexdigest()
    if not data.strip():
        raise TableError(path, "empty file; expected a header row and one row per report")
    if data[:4] == PARQUET_MAGIC or path.endswith((".parquet", ".pq")):
        header, rows = _read_parquet(path, data)
    else:
        header, rows = _read_csv(path, data)
    for i, name in enumerate(header):
        if not name:
            raise TableError(path, "empty column name", "header", f"#{i + 1}")
        if name in header[:i]:
            raise TableError(path, "appears twice in the header", "header", name)
    if not rows:
        raise TableError(path, "no rows below the header")
    return header, rows, sha


def _read_csv(path: str, data: bytes) -> tuple[list[str], list[list[Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(path, f"neither UTF-8 text (CSV) nor Parquet (byte {exc.start} is not UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    try:
        for cells in reader:
            if any(c.strip() for c in cells):  # blank lines are not rows
                records.append(cells)
    except csv.Error as exc:
        raise TableError(path, f"malformed CSV at line {reader.line_num} ({exc})") from None
    if not records:
        raise TableError(path, "empty file; expected a header row and one row per report")
    header = [c.strip() for c in records[0]]
    rows = records[1:]
    for number, cells in enumerate(rows, start=1):
        if len(cells) < len(header):
            raise TableError(path, f"missing: the row has {len(cells)} cells, the header {len(header)}",
                             number, header[len(cells)])
        if len(cells) > len(header):
            raise TableError(path, f"the row has {len(cells)} cells, the header only {len(header)}",
                             number, f"#{len(header) + 1}")
    return header, rows


def _read_parquet(path: str, data: bytes) -> tuple[list[str], list[list[Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise TableError(path, f"not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(table.column_names), [list(cells) for cells in zip(*columns)] if columns else []


# ---------------------------------------------------------------- cells


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _number(value: Any) -> float | None:
    """A cell as a float (nan/inf allowed), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _integer(value: Any) -> int | None:
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _config_value(config_class: type, key: str, value: Any) -> Any:
    """A config cell as the field's type, checked as a spec value is; raises ``ConfigError``."""
    hint = typing.get_type_hints(config_class)[key]
    if typing.get_origin(hint) is Literal or hint is str:
        converted = value.strip() if isinstance(value, str) else value
    elif hint is bool:
        converted = _boolean(value)
        if converted is None:
            raise ConfigError(key, f"expected true or false, got {value!r}")
    elif hint is int:
        converted = _integer(value)
        if converted is None:
            raise ConfigError(key, f"expected an integer, got {value!r}")
    else:  # float
        converted = _number(value)
        if converted is None:
            raise ConfigError(key, f"expected a number, got {value!r}")
    return check_value(config_class, key, converted)


def _free_value(value: Any) -> Any:
    """A cell of a ``config/<key>`` column the trainable does not know: a number, true/false or text."""
    if isinstance(value, str):
        text = value.strip()
        flag = _boolean(text)
        if flag is not None:
            return flag
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        number = _number(text)
        value = text if number is None else number
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite value, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"expected a number, true/false or text, got {value!r}")
    return value


# ---------------------------------------------------------------- columns


@dataclass(frozen=True)
class Columns:
    """What each column of a table is (indices into a row)."""

    trainable: int | None
    seed: int | None
    x: tuple[str, int] | None
    status: int | None
    n_seeds: int | None
    config: dict[str, tuple[int, str]]  # config key -> (index, column name)
    metrics: dict[str, int]  # metric name -> index (x columns included)
    sds: dict[str, int]  # metric name -> index of its <metric>_sd column


def classify(path: str, header: list[str], trainable: str) -> Columns:
    """Sort the header into config, seed, x, status, n_seeds, metric and sd columns."""
    fields = config_fields(get_trainable(trainable).config_class())
    index = {name: i for i, name in enumerate(header)}
    config: dict[str, tuple[int, str]] = {}
    metrics: dict[str, int] = {}
    special = {"trainable", "seed", "config/seed", "status", "n_seeds"}
    for i, name in enumerate(header):
        if name in special or name.endswith(SD_SUFFIX) and name[:-len(SD_SUFFIX)] in index:
            continue
        if name in RESERVED:
            raise TableError(path, f"{name} is the store's own column; rename it", "header", name)
        key = name[len(CONFIG_PREFIX):] if name.startswith(CONFIG_PREFIX) else name if name in fields else None
        if key is None:
            if name.endswith(SD_SUFFIX):
                raise TableError(path, f"the spread of metric {name[:-len(SD_SUFFIX)]!r}, but the table has no "
                                       f"column {name[:-len(SD_SUFFIX)]!r}", "header", name)
            metrics[name] = i
            continue
        if not key:
            raise TableError(path, "a config column needs a key after config/", "header", name)
        if key in config:
            raise TableError(path, f"config {key!r} given twice (also column {config[key][1]})", "header", name)
        config[key] = (i, name)
    if "seed" in index and "config/seed" in index:
        raise TableError(path, "seed given twice (also column seed)", "header", "config/seed")
    seed = index.get("seed", index.get("config/seed"))
    if "n_seeds" in index and seed is not None:
        raise TableError(path, "give either one row per seed (a seed column) or published means over seeds "
                               "(n_seeds), not both", "header", header[seed])
    sds = {name[:-len(SD_SUFFIX)]: i for i, name in enumerate(header)
           if name.endswith(SD_SUFFIX) and name[:-len(SD_SUFFIX)] in index}
    for metric in sds:
        if metric in X_COLUMNS:
            raise TableError(path, f"{metric} says when a row was reported; it has no spread", "header",
                             metric + SD_SUFFIX)
        if metric not in metrics:
            raise TableError(path, f"a spread, but {metric!r} is not a metric column", "header", metric + SD_SUFFIX)
    if sds and "n_seeds" not in index:
        name = next(iter(sds)) + SD_SUFFIX
        raise TableError(path, "a standard deviation needs n_seeds, the number of seeds it is over; add an "
                               "n_seeds column", "header", name)
    x = next(((name, index[name]) for name in X_COLUMNS if name in index), None)
    return Columns(trainable=index.get("trainable"), seed=seed, x=x, status=index.get("status"),
                   n_seeds=index.get("n_seeds"), config=config, metrics=metrics, sds=sds)


def _trainable_name(path: str, header: list[str], rows: list[list[Any]], given: str | None) -> str:
    """The table's trainable: its ``trainable`` column (one value) and/or ``--trainable``."""
    known = ", ".join(sorted(TRAINABLES))
    if given is not None and given not in TRAINABLES:
        raise TableError(path, f"--trainable {given!r} is not a trainable; choose one of {known}")
    if "trainable" not in header:
        if given is None:
            raise TableError(path, f"no trainable: add a column trainable or pass --trainable ({known})")
        return given
    column = header.index("trainable")
    name = given
    for number, cells in enumerate(rows, start=1):
        value = cells[column].strip() if isinstance(cells[column], str) else cells[column]
        if not _present(value):
            raise TableError(path, "missing", number, "trainable")
        if value not in TRAINABLES:
            raise TableError(path, f"unknown trainable {value!r}; choose one of {known}", number, "trainable")
        if name is not None and value != name:
            raise TableError(path, f"{value!r}, but " + (f"--trainable is {given!r}" if given else
                             f"earlier rows say {name!r}") + "; a study has one trainable", number, "trainable")
        name = value
    return name


# ---------------------------------------------------------------- rows → trials


@dataclass
class ImportedTrial:
    """One trial of an imported study: its config (seed included), status and reports."""

    config: dict[str, Any]
    status: str
    reports: list[dict[str, Any]]
    rows: list[int]
    n_seeds: int | None = None  # the published seed count a pseudo-seed stands for


@dataclass
class ImportedTable:
    """A table checked and turned into trials and a spec, nothing written yet."""

    path: str
    sha256: str
    trainable: str
    spec: StudySpec
    trials: list[ImportedTrial]
    rows: int


@dataclass
class _Row:
    number: int
    config: dict[str, Any]
    seed: int | None
    x: float | int | None
    status: str
    n_seeds: int | None
    values: dict[str, float] = field(default_factory=dict)
    sds: dict[str, float] = field(default_factory=dict)


def _parse_row(path: str, number: int, cells: list[Any], columns: Columns, config_class: type,
               header: list[str]) -> _Row:
    def fail(column: str, problem: str) -> TableError:
        return TableError(path, problem, number, column)

    config = {}
    known = set(config_fields(config_class))
    for key, (i, name) in columns.config.items():
        value = cells[i]
        if not _present(value):
            continue
        try:
            config[key] = _config_value(config_class, key, value) if key in known else _free_value(value)
        except ConfigError as exc:
            raise fail(name, exc.message) from None
        except ValueError as exc:
            raise fail(name, str(exc)) from None
    seed = None
    if columns.seed is not None:
        name = header[columns.seed]
        raw = cells[columns.seed]
        if not _present(raw):
            raise fail(name, "missing; every row names its seed (a non-negative integer)")
        seed = _integer(raw)
        if seed is None or seed < 0:
            raise fail(name, f"expected a non-negative integer, got {raw!r}")
    x = None
    if columns.x is not None:
        name, i = columns.x
        raw = cells[i]
        x = _number(raw) if _present(raw) else None
        if x is None or not math.isfinite(x):
            raise fail(name, f"expected a finite number (when the row was reported), got {raw!r}"
                       if _present(raw) else "missing; every row says when it was reported")
        x = int(x) if x == int(x) else x
    status = "finished"
    if columns.status is not None and _present(cells[columns.status]):
        status = str(cells[columns.status]).strip()
        if status not in ENDED:
            raise fail("status", f"unknown status {status!r}; choose one of {', '.join(ENDED)}")
    n_seeds = None
    if columns.n_seeds is not None:
        raw = cells[columns.n_seeds]
        n_seeds = _integer(raw) if _present(raw) else None
        if n_seeds is None or n_seeds < 1:
            raise fail("n_seeds", f"expected an integer >= 1 (the seeds a published mean is over), got {raw!r}"
                       if _present(raw) else "missing; give the number of seeds the row's means are over (1: one run)")
    row = _Row(number, config, seed, x, status, n_seeds)
    for metric, i in columns.metrics.items():
        raw = cells[i]
        if not _present(raw):
            continue
        value = _number(raw)
        if value is None:
            raise fail(metric, f"expected a number, got {raw!r}")
        row.values[metric] = int(value) if metric in X_COLUMNS and math.isfinite(value) and value == int(value) else value
    for metric, i in columns.sds.items():
        name, raw = metric + SD_SUFFIX, cells[i]
        if not _present(raw):
            continue
        sd = _number(raw)
        if sd is None or not math.isfinite(sd) or sd < 0:
            raise fail(name, f"expected a standard deviation (a finite number >= 0), got {raw!r}")
        if metric not in row.values:
            raise fail(name, f"a spread without a value of {metric} in this row")
        row.sds[metric] = sd
    if n_seeds is not None and n_seeds > 1:
        for metric in row.values:
            if metric not in row.sds and metric not in X_COLUMNS:
                column = metric + SD_SUFFIX if metric in columns.sds else metric
                raise fail(column, f"a mean over n_seeds = {n_seeds} needs its spread: give {metric}{SD_SUFFIX}, "
                                   f"the seeds' sample standard deviation")
    return row


def pseudo_seed_offsets(n: int) -> list[float]:
    """z_1..z_n with mean 0 and sample standard deviation 1 (``[0.0]`` for one seed)."""
    if n == 1:
        return [0.0]
    centred = [k - (n - 1) / 2 for k in range(n)]
    scale = math.sqrt(sum(c * c for c in centred) / (n - 1))
    return [c / scale for c in centred]


def parse_table(path: str, *, trainable: str | None = None, name: str = "imported") -> ImportedTable:
    """Read and check a whole table, and turn it into trials and a spec; writes nothing.

    Raises ``TableError`` (one line: file, row, column) on the first problem.
    """
    header, rows, sha = read_table(path)
    trainable = _trainable_name(path, header, rows, trainable)
    info = get_trainable(trainable)
    config_class = info.config_class()
    columns = classify(path, header, trainable)
    parsed = [_parse_row(path, number, cells, columns, config_class, header)
              for number, cells in enumerate(rows, start=1)]

    # every distinct config must build (fields that depend on each other), at its first row
    built: set[str] = set()
    known = set(config_fields(config_class))
    for row in parsed:
        key = config_key(row.config)
        if key in built:
            continue
        built.add(key)
        try:
            config_class(**{k: v for k, v in row.config.items() if k in known})
        except ConfigError as exc:
            column = columns.config.get(exc.key, (0, exc.key))[1]
            raise TableError(path, exc.message, row.number, column) from None

    trials = _trials(path, parsed, columns)
    spec = _spec(path, name, info, trials, columns)
    return ImportedTable(path=path, sha256=sha, trainable=trainable, spec=spec, trials=trials, rows=len(rows))


def _trials(path: str, parsed: list[_Row], columns: Columns) -> list[ImportedTrial]:
    """Group rows into trials: by (config, seed), or by config with pseudo-seeds for published means."""
    x_name = columns.x[0] if columns.x else None
    groups: dict[tuple, list[_Row]] = {}
    for row in parsed:
        groups.setdefault((config_key(row.config), row.seed), []).append(row)
    for rows in groups.values():
        first = rows[0]
        seen: dict[Any, int] = {}
        for row in rows:
            if row.status != first.status:
                raise TableError(path, f"{row.status}, but row {first.number} of the same trial (config and seed) "
                                       f"says {first.status}; a trial has one status", row.number, "status")
            if row.n_seeds != first.n_seeds:
                raise TableError(path, f"{row.n_seeds}, but row {first.number} of the same config says "
                                       f"{first.n_seeds}; a config's rows are means over the same seeds",
                                 row.number, "n_seeds")
            if x_name is None and row is not first:
                raise TableError(path, f"missing: rows {first.number} and {row.number} are the same trial (config "
                                       f"and seed), so a column step, epoch or tokens must say when each was reported",
                                 row.number, "step")
            if x_name is not None and row.x in seen:
                raise TableError(path, f"duplicate of row {seen[row.x]}: the same config, seed and {x_name} "
                                       f"{row.x}", row.number, x_name)
            seen[row.x] = row.number

    trials: list[ImportedTrial] = []
    next_label = 0
    for (_, seed), rows in groups.items():
        rows = sorted(rows, key=lambda r: (r.x is None, r.x if r.x is not None else 0))
        first = rows[0]
        if first.n_seeds is None:
            trials.append(_trial(first.config, 0 if seed is None else seed, first.status, rows, None, 0.0))
            continue
        # a published mean: n pseudo-seeds, labels unique to this config (never paired with another arm)
        for k, z in enumerate(pseudo_seed_offsets(first.n_seeds)):
            trials.append(_trial(first.config, next_label + k, first.status, rows, first.n_seeds, z))
        next_label += first.n_seeds
    return trials


def _trial(config: dict, seed: int, status: str, rows: list[_Row], n_seeds: int | None, z: float) -> ImportedTrial:
    reports = []
    for row in rows:
        values = {metric: value + row.sds[metric] * z if metric in row.sds else value
                  for metric, value in row.values.items()}
        if row.x is not None or values:
            reports.append({**values, "training_iteration": len(reports) + 1})
    return ImportedTrial(config={**config, "seed": seed}, status=status, reports=reports,
                         rows=sorted(r.number for r in rows), n_seeds=n_seeds)


def _spec(path: str, name: str, info, trials: list[ImportedTrial], columns: Columns) -> StudySpec:
    """The spec the readers expect: values every trial shares under config, the rest as axes."""
    keys = list(dict.fromkeys(k for t in trials for k in t.config))
    config, axes = {}, {}
    for key in keys:
        present = [t.config[key] for t in trials if key in t.config]
        distinct = list(dict.fromkeys(present))
        if len(present) == len(trials) and len(distinct) == 1:
            config[key] = distinct[0]
        else:
            axes[key] = tuple(sorted(distinct) if key == "seed" else distinct)
    metrics = [m for m in columns.metrics if m not in X_COLUMNS]
    if info.default_metric in metrics or not metrics:
        metric, mode = info.default_metric, info.default_mode
    else:
        metric = next((m for m in info.metrics if m in metrics), metrics[0])
        mode = "min"
    published = sorted({t.n_seeds for t in trials if t.n_seeds})
    description = (f"Imported from {os.path.basename(path)}: published results, not runs of this code"
                   + (f"; means over {'/'.join(map(str, published))} seeds stand as pseudo-seeds with the published "
                      f"mean and sd" if published else "") + ".")
    return StudySpec(name=name, trainable=info.name, config=config, axes=axes, metric=metric, mode=mode,
                     description=description, source=f"imported {path}")


# ---------------------------------------------------------------- writing


def check_target(table: ImportedTable, name: str, storage: str, overwrite: bool) -> StudyStore:
    """The study folder to write, after refusing a taken name (unless ``overwrite``) or a running study."""
    if not NAME_PATTERN.match(name):
        raise TableError(table.path, f"--name {name!r} is not a valid study name (letters, digits, '.', '_', '-')")
    store = StudyStore(storage, name)
    lock = read_lock(store)
    if lock is not None and lock.is_live():
        raise TableError(table.path, f"study {name!r} is running ({lock.describe()}); import under another --name")
    if store.exists() and not overwrite:
        raise TableError(table.path, f"study {name!r} already exists in {display_storage(storage)}; pass "
                                     f"--overwrite to replace it, or choose another --name")
    leftovers = [f for f in store.files(skip_tune=False) if not f.endswith("/driver.lock")]
    if leftovers and not store.exists() and not overwrite:
        raise TableError(table.path, f"{store.root} holds files that are not a stored study (e.g. {leftovers[0]}); "
                                     f"choose another --name or move them away")
    return store


def write_table(table: ImportedTable, store: StudyStore, overwrite: bool) -> None:
    """Write a checked table as a study (replacing what ``store`` holds when ``overwrite``).

    Trials and metrics go through ``StoreWriter`` as a launch's do; ``spec.yaml`` is written
    last, so an interrupted import leaves no half study that readers would take for one.
    """
    if overwrite and store.folder_exists():
        store.check_files()  # refuse to delete a Parquet file that is not ours (or is corrupt)
        store.delete()
    spec = dataclasses.replace(table.spec, name=store.name)
    source = {"source": "imported", "source_file": os.path.abspath(table.path), "source_sha256": table.sha256}
    try:
        with DriverLock(store, command="import"):
            writer = StoreWriter(store, source, flush_rows=10**9, flush_seconds=math.inf)
            ids = []
            for number, trial in enumerate(table.trials):
                trial_id = f"imported_{number:05d}"
                ids.append(trial_id)
                # the trial row's provenance: the table, and the rows this trial came from
                writer.provenance = {**source, "source_rows": ",".join(map(str, trial.rows)),
                                     "published_n_seeds": trial.n_seeds}
                writer.trial_started(trial_id, trial.config)
                for report in trial.reports:
                    writer.add_result(trial_id, report)
            for trial_id, trial in zip(ids, table.trials):
                writer.trial_ended(trial_id, trial.status)
            writer.close()
            info = {"name": store.name, "source": "imported", "table": os.path.abspath(table.path),
                    "table_sha256": table.sha256, "table_rows": table.rows,
                    "imported_at": pd.Timestamp.now(tz="UTC").isoformat(), "importer": provenance()}
            store.write_text("study.json", json.dumps(info, indent=2))
            store.write_text("spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    except StudyBusy as exc:
        raise TableError(table.path, f"study {store.name!r} is running ({exc})") from None


def import_table(path: str, name: str, storage: str, *, trainable: str | None = None,
                 overwrite: bool = False) -> tuple[ImportedTable, StudyStore]:
    """Check ``path`` whole, then write it as study ``name`` under ``storage``."""
    table = parse_table(path, trainable=trainable, name=name)
    store = check_target(table, name, storage, overwrite)
    write_table(table, store, overwrite)
    return table, store


# ---------------------------------------------------------------- the paper's tables


def published_tables() -> dict[str, str]:
    """The shipped tables of the paper's published numbers: study name → file path."""
    folder = resources.files("analysis").joinpath(PUBLISHED)
    return {p.name[:-4]: str(p) for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".csv")}


def import_published(storage: str, *, overwrite: bool = False) -> list[tuple[ImportedTable, StudyStore]]:
    """Import every shipped table under its own name; all are checked before the first is written."""
    checked = []
    for name, path in published_tables().items():
        table = parse_table(path, name=name)
        checked.append((table, check_target(table, name, storage, overwrite)))
    for table, store in checked:
        write_table(table, store, overwrite)
    return checked
