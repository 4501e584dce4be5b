"""Run a study: a ``ray.tune.Tuner`` built from the spec, results into the Parquet store.

``launch`` starts a study (or, with ``resume=True``, continues one of the same name and
spec); ``resume`` continues a stored study from Ray Tune's experiment state
(``Tuner.restore``): finished trials are not run again, interrupted ones continue from
their last checkpoint, and the store keeps every report exactly once (see
``study.store.StoreWriter``). One driver at a time runs a study (``study.lock``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import shlex
import signal
import sys
import threading
from dataclasses import dataclass

import pandas as pd
import pyarrow.fs as pafs
import yaml

from study import internals
from study.lock import LOCK_FILE, STALE_AFTER_S, DriverLock, StudyBusy, read_lock
from study.provenance import provenance
from study.spec import StudySpec, parse_spec
from study.store import ENDED, TUNE_DIR, StoreError, StoreWriter, StudyStore, config_key, display_storage

DEFAULT_STORAGE = "studies"


class LaunchError(RuntimeError):
    """A study that cannot start (its name is taken, it is running); one line, nothing written."""


@dataclass
class StudyResult:
    """What a launch or resume returns: where the study lives and its trials table."""

    spec: StudySpec
    store: StudyStore
    result_grid: object  # ray.tune.ResultGrid
    searcher: object = None  # an Optuna search (study.search.tune.ConditionedOptunaSearch), which knows its budget

    def trials(self) -> pd.DataFrame:
        return self.store.read_trials()

    def metrics(self) -> pd.DataFrame:
        return self.store.read_metrics()

    @property
    def complete(self) -> bool:
        """Every trial of the spec has ended (False after an interruption: resume it)."""
        trials = self.trials()
        if trials.empty:
            return False
        if self.searcher is not None:  # an Optuna search is done when its budget is spent
            return bool(trials["status"].isin(ENDED).all()) and self.searcher.budget_left() == 0
        return len(trials) >= self.spec.num_trials and trials["status"].isin(ENDED).all()


class EndedTrials:
    """``skip(trial_id, config)`` for a resumed study: true for trials the store has as ended.

    Ray Tune's experiment state is saved every ~10 s and may predate trials that ended
    since; they match by id, or by config for a grid point Tune re-created under a new id.
    """

    def __init__(self, ids=(), keys=()):
        self.ids, self.keys = frozenset(ids), frozenset(keys)

    def __call__(self, trial_id: str, config: dict) -> bool:
        return trial_id in self.ids or (bool(self.keys) and config_key(config) in self.keys)


PRELOAD_HOOK = "trainables.ray_entry.preload"


def worker_runtime_env() -> dict:
    """The runtime environment of our Ray jobs: workers preload torch and the trainables."""
    return {"worker_process_setup_hook": PRELOAD_HOOK}


def ensure_ray(address: str | None = None, num_cpus: int | None = None, preload: bool = True) -> None:
    """Connect to a cluster (``address`` or ``RAY_ADDRESS``) or start Ray on this machine.

    ``preload``: the job's workers import torch and the trainables when they start
    (``trainables.ray_entry.preload``, Ray's ``worker_process_setup_hook``), not in a trial."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Our progress line replaces Tune's console output (its newer output engine
    # ignores verbose=0 for the experiment banner).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    runtime_env = worker_runtime_env() if preload else None
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env)
    else:  # "local": a private instance, never another user's cluster on this machine
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env)


@contextlib.contextmanager
def sigterm_as_sigint(enabled: bool = True):
    """While inside, SIGTERM (what `ray job stop` and schedulers send) acts as SIGINT.

    Ray Tune stops gracefully on SIGINT: it saves its experiment state, and the store
    callback flushes. Installed after ``ray.init``, which sets a SIGTERM handler of its own.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def param_space(spec: StudySpec) -> dict:
    from ray import tune

    if spec.search != "grid":
        return _search_param_space(spec)
    if spec.pack > 1:
        return _packed_param_space(spec)
    if spec.uneven:
        from study.search.tune import uneven_param_space

        return uneven_param_space(spec)
    return {**spec.config, **{axis: tune.grid_search(list(values)) for axis, values in spec.axes.items()}}


def trial_resources(spec: StudySpec) -> dict[str, float]:
    """What one trial holds: CPUs and (possibly fractional) GPUs, as ``tune.with_resources`` takes them
    (a pack's: ``study.packs.pack_resources``)."""
    return {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}


def checkpoint_note(spec: StudySpec) -> str | None:
    """A warning when retries are asked for but the trainable never checkpoints."""
    from trainables.registry import get_trainable

    if not spec.max_failures:
        return None
    config_class = get_trainable(spec.trainable).config_class()
    default = getattr(config_class, "checkpoint_every", None)
    values = spec.values_of("checkpoint_every", default)
    if default is not None and all(v == 0 for v in values):
        return (f"note: max_failures={spec.max_failures} but checkpoint_every=0: a retried trial restarts "
                f"from its first step (set checkpoint_every, e.g. --set checkpoint_every=1)")
    return None


def _refuse_if_running(store: StudyStore) -> None:
    info = read_lock(store)
    if info is not None and info.is_live():
        raise LaunchError(_busy_message(store, info))


def _busy_message(store: StudyStore, info) -> str:
    return (f"study {store.name!r} is running: {info.describe()}; wait for it to end or stop that driver "
            f"(a killed driver's lock frees the study at once on its own host, elsewhere "
            f"{STALE_AFTER_S:.0f}s after its last heartbeat)")


def _status_summary(store: StudyStore) -> str:
    try:
        trials = store.read_trials()
    except StoreError:
        return "its trials table is unreadable"
    if trials.empty:
        return "no trial started"
    counts = trials["status"].value_counts().sort_index()
    return f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def _spec_differences(given: StudySpec, stored: StudySpec) -> list[str]:
    a, b = given.to_dict(), stored.to_dict()
    a.pop("description", None), b.pop("description", None)
    return [key for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def stored_spec(store: StudyStore) -> StudySpec:
    """The spec a stored study ran, validated against the trainables of this checkout."""
    from study.spec import parse_yaml

    source = f"{store.root}/spec.yaml"
    data = parse_yaml(store.read_text("spec.yaml"), source)
    return parse_spec(data or {}, source)


def _trainable(spec: StudySpec, store: StudyStore, skip=None):
    from ray import tune

    from study.store import TrialLogs
    from trainables.ray_entry import ray_trainable

    if spec.pack > 1:
        return tune.with_resources(_packed_trainable(spec, skip, TrialLogs(store)), _pack_resources(spec))
    return tune.with_resources(ray_trainable(spec.trainable, skip, output=TrialLogs(store)), trial_resources(spec))


def _storage_args(store: StudyStore) -> dict:
    """``storage_path``/``storage_filesystem`` for Ray Tune: the study folder, on the store's filesystem."""
    local = isinstance(store.fs, pafs.LocalFileSystem)
    return {"storage_path": store.root, "storage_filesystem": None if local else store.fs}


def _new_tuner(spec: StudySpec, store: StudyStore, trainable, callbacks, search: dict | None = None):
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    search = dict(search or {})
    _no_auto_loggers()
    max_concurrent = spec.max_concurrent
    if isinstance(search.get("search_alg"), BasicVariantGenerator):  # random search, uneven grid
        max_concurrent = None  # BasicVariantGenerator limits itself (Tune wraps only Searchers)
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True, **search),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            **_storage_args(store),
            stop=dict(spec.stop) or None,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
            verbose=0,
        ),
    )


def _callbacks(spec: StudySpec, writer: StoreWriter, skip, progress: bool, stream, counts=None, best=None):
    from study.callbacks import ProgressCallback, StoreCallback
    from study.trackers import tracker_callbacks

    callbacks = [StoreCallback(writer, skip=skip)]
    if progress:
        callbacks.append(ProgressCallback(spec.num_trials, spec.metric, spec.mode, stream=stream or sys.stdout,
                                          counts=counts, best=best, skip=skip))
    if spec.pack > 1:
        callbacks = _packed_callbacks(callbacks)
    # The spec's trackers see Ray's trials as they are (a packed trial is one run of its pack).
    return callbacks + tracker_callbacks(spec.loggers, spec.name)


def check_trackers(spec: StudySpec) -> None:
    """Set up each of the spec's trackers once, before Ray starts and before anything is written:
    a tracker that cannot start (W&B online without an API key, an MLflow store it refuses) is a
    one-line ``LaunchError`` naming it, not a traceback from inside ``Tuner.fit``."""
    from study.errors import abbreviate
    from study.trackers import tracker_callbacks

    for name, callback in zip(spec.loggers, tracker_callbacks(spec.loggers, spec.name)):
        try:
            callback.setup()
        except Exception as exc:  # the tracker's own library: whatever it raises stops this launch
            raise LaunchError(f"{spec.source}: loggers.{name}: cannot start: "
                              f"{abbreviate(f'{type(exc).__name__}: {exc}', 300)}") from None


def _no_auto_loggers() -> None:
    """Ray Tune's automatic CSV/JSON/TensorBoard copies of every result off (the store holds them;
    the spec's ``loggers`` ask for trackers): Ray 2.60 reads only an environment variable, in
    ``Tuner.fit`` on the driver. A value the user set is kept."""
    from study.trackers import AUTO_LOGGERS_ENV

    os.environ.setdefault(AUTO_LOGGERS_ENV, "1")
    analysis_logger = logging.getLogger(_RESULT_GRID_LOGGER)
    if not any(isinstance(f, _NoMetricFilesWarning) for f in analysis_logger.filters):
        analysis_logger.addFilter(_NoMetricFilesWarning())


# The ResultGrid that Tuner.fit returns reads each trial's result.json or progress.csv (what
# the automatic loggers write) and, without them, warns for every trial; the store has the metrics.
_RESULT_GRID_LOGGER = "ray.tune.analysis.experiment_analysis"


class _NoMetricFilesWarning(logging.Filter):
    """Drops Ray's warning that trials have no result.json/progress.csv, and only that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().splitlines()
        expected = (lines and lines[0].startswith("Failed to fetch metrics")
                    and all("result.json and progress.csv were not found" in line for line in lines[1:]))
        return not expected


def _study_info(spec: StudySpec, info: dict) -> dict:
    return {"name": spec.name, "source": spec.source, "launched_at": pd.Timestamp.now(tz="UTC").isoformat(), **info}


def launch(spec: StudySpec, *, storage: str = DEFAULT_STORAGE, address: str | None = None,
           overwrite: bool = False, resume: bool = False, progress: bool = True, stream=None,
           graceful_sigterm: bool = False) -> StudyResult:
    """Run every trial of ``spec`` and store the results under ``storage/<spec.name>``.

    A study name that exists is refused unless ``overwrite`` (replace it: its files are
    checked first, a foreign or corrupt Parquet file stops the overwrite) or ``resume``
    (continue it with ``resume()``; the spec must be the stored one). A study that a live
    driver is running is always refused. ``graceful_sigterm`` makes SIGTERM stop the
    study as SIGINT does (the CLI sets it).
    """
    if overwrite and resume:
        raise LaunchError("--overwrite and --resume exclude each other: replace the study, or continue it")
    spec.check_inputs()
    check_trackers(spec)
    store = StudyStore(storage, spec.name)
    _refuse_if_running(store)
    if store.exists():
        if resume:
            differences = _spec_differences(spec, stored_spec(store))
            if differences:
                raise LaunchError(f"study {spec.name!r} exists with a different spec ({', '.join(differences)} "
                                  f"differ); resume it as stored with `python -m study resume {spec.name}`, "
                                  f"or launch under another --name")
            return _resume(spec, store, address=address, retry_failed=False, progress=progress, stream=stream,
                           graceful_sigterm=graceful_sigterm)
        if not overwrite:
            raise _exists_error(spec, store, storage)
    _check_replaceable(store, overwrite)  # read-only: what the overwrite would delete is checked first

    ensure_ray(address)
    lock = DriverLock(store, command="launch", on_lost=_stop_this_driver)
    writer = None
    try:
        with lock, sigterm_as_sigint(graceful_sigterm):
            # Checked again under the lock: another driver may have created (or finished) the
            # study since the checks above, while this one started Ray.
            if store.exists() and not overwrite:
                raise _exists_error(spec, store, storage, meanwhile=True)
            _check_replaceable(store, overwrite)
            if overwrite:
                store.delete(keep=(LOCK_FILE,))
            info = provenance()
            store.write_text("spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
            store.write_text("study.json", json.dumps(_study_info(spec, info), indent=2))
            writer = StoreWriter(store, info, metric_types=study_metric_types(spec), lock=lock)
            search, search_callbacks = _search(spec, store)
            tuner = _new_tuner(spec, store, _trainable(spec, store),
                               _callbacks(spec, writer, None, progress, stream) + search_callbacks, search)
            try:
                result_grid = tuner.fit()
            finally:
                _search_done(search_callbacks)
            writer.close()
            _refuse_if_lost(lock, store)
    except StudyBusy as exc:
        raise LaunchError(_busy_message(store, exc.info)) from None
    except KeyboardInterrupt:
        _refuse_if_lost(lock, store)
        raise
    return StudyResult(spec=spec, store=store, result_grid=result_grid, searcher=_optuna_searcher(search))


def _exists_error(spec: StudySpec, store: StudyStore, storage: str, meanwhile: bool = False) -> LaunchError:
    when = " (another driver created it while this one started)" if meanwhile else ""
    return LaunchError(f"study {spec.name!r} already exists in {display_storage(storage)}{when} "
                       f"({_status_summary(store)}); pass --resume to finish it, --overwrite to "
                       f"replace it, or choose another --name")


def _check_replaceable(store: StudyStore, overwrite: bool) -> None:
    """Refuse a study folder that holds files which are not a study's (without ``overwrite``),
    or a Parquet file that is not ours or is corrupt (with it: the overwrite would delete it)."""
    leftovers = [f for f in store.files(skip_tune=False) if posixpath.basename(f) != LOCK_FILE]
    if leftovers and not overwrite:
        raise LaunchError(f"{store.root} exists and holds files that are not a stored study "
                          f"(e.g. {leftovers[0]}); choose another --name or move them away")
    if leftovers:
        store.check_files()


def _stop_this_driver() -> None:
    """The lock was lost (another driver took the study over): stop Ray Tune as Ctrl-C does.

    Called from the heartbeat thread; the store writer already refuses to write. A driver
    that does not run in the main thread cannot be interrupted and stops writing only.
    """
    main = threading.main_thread()
    if main.is_alive() and main is not threading.current_thread():
        signal.pthread_kill(main.ident, signal.SIGINT)


def _refuse_if_lost(lock: DriverLock, store: StudyStore) -> None:
    if lock.lost.is_set():
        holder = read_lock(store)
        by = f" by {holder.describe()}" if holder is not None else ""
        raise LaunchError(f"this driver lost the lock of study {store.name!r} (taken over{by}, e.g. after "
                          f"its heartbeat stalled for over {STALE_AFTER_S:.0f}s); it stopped and wrote no more")


def resume(name: str, *, storage: str = DEFAULT_STORAGE, address: str | None = None, retry_failed: bool = False,
           progress: bool = True, stream=None, graceful_sigterm: bool = False) -> StudyResult:
    """Finish a stored study: what ended stays as it is, the rest runs (from checkpoints).

    Ray Tune's experiment state (``tune/``) is restored with ``Tuner.restore``; trials the
    store has as ended are not run again even when Tune's state predates their end;
    trials left ``running`` by a dead driver continue from their last checkpoint.
    ``retry_failed`` also runs the ``failed`` trials again, from their last checkpoint.
    Every store file is read (and so checked) before anything is written.
    """
    store = StudyStore(storage, name)
    if not store.exists():
        raise LaunchError(f"no study named {name!r} in {display_storage(storage)} (`python -m study list "
                          f"--storage {shlex.quote(storage)}` shows the stored ones)")
    _refuse_if_running(store)
    return _resume(stored_spec(store), store, address=address, retry_failed=retry_failed, progress=progress,
                   stream=stream, graceful_sigterm=graceful_sigterm)


def _resume(spec: StudySpec, store: StudyStore, *, address, retry_failed: bool, progress: bool,
            stream, graceful_sigterm: bool) -> StudyResult:
    from ray import tune

    info = provenance()
    # Read (and so checked) before Ray starts, for a quick refusal; read again under the lock,
    # since a driver that ran the study meanwhile may have changed it.
    StoreWriter(store, info).load_existing()
    store.check_files()
    check_trackers(spec)

    ensure_ray(address)
    lock = DriverLock(store, command="resume", on_lost=_stop_this_driver)
    try:
        with lock, sigterm_as_sigint(graceful_sigterm):
            writer = StoreWriter(store, info, metric_types=study_metric_types(spec), lock=lock)
            writer.load_existing()
            ended_ids, ended_keys = writer.ended(include_failed=not retry_failed)
            skip = EndedTrials(ended_ids, ended_keys)
            counts, best = _progress_so_far(store, writer, spec, retry_failed)
            study = json.loads(store.read_text("study.json")) if store.has_file("study.json") else {}
            study.setdefault("resumed", []).append({"at": pd.Timestamp.now(tz="UTC").isoformat(),
                                                    "retry_failed": retry_failed, **info})
            store.write_text("study.json", json.dumps(study, indent=2))
            search, search_callbacks = _search(spec, store, writer=writer, retry_failed=retry_failed)
            callbacks = _callbacks(spec, writer, skip, progress, stream, counts=counts, best=best) + search_callbacks
            trainable = _trainable(spec, store, skip)
            storage_fs = _storage_args(store)["storage_filesystem"]
            if tune.Tuner.can_restore(store.tune_path, storage_filesystem=storage_fs):
                tuner = tune.Tuner.restore(store.tune_path, trainable=trainable, resume_unfinished=True,
                                           resume_errored=retry_failed, param_space=param_space(spec),
                                           storage_filesystem=storage_fs)
                _replace_callbacks(tuner, callbacks)
                _replace_search(tuner, search)
                _no_auto_loggers()
            else:  # the driver died before Tune saved any state: every grid point is matched by config
                tuner = _new_tuner(spec, store, trainable, callbacks, search)
            try:
                result_grid = tuner.fit()
            finally:
                _search_done(search_callbacks)
            writer.close()
            _refuse_if_lost(lock, store)
    except StudyBusy as exc:
        raise LaunchError(_busy_message(store, exc.info)) from None
    except KeyboardInterrupt:
        _refuse_if_lost(lock, store)
        raise
    return StudyResult(spec=spec, store=store, result_grid=result_grid, searcher=_optuna_searcher(search))


def study_metric_types(spec: StudySpec) -> dict[str, str]:
    """Every column a metric part file of the study carries (name → Arrow type): Ray's two
    and the trainable's full metric schema for every value the spec gives its model keys."""
    import itertools

    from study.store import RAY_METRIC_TYPES
    from trainables.registry import get_trainable

    info = get_trainable(spec.trainable)
    defaults = info.config_class()()
    keys = list(info.config_metrics_keys)
    choices = [spec.values_of(k, getattr(defaults, k, None)) for k in keys]
    configs = [{**spec.config, **dict(zip(keys, values))} for values in itertools.product(*choices)]
    return {**RAY_METRIC_TYPES, **info.metric_schema(configs)}


def _progress_so_far(store: StudyStore, writer: StoreWriter, spec: StudySpec, retry_failed: bool):
    """Counts of ended trials and the best metric value already stored, for the progress line."""
    statuses = [row.get("status") for row in writer.trials.values()]
    counts = {s: statuses.count(s) for s in ENDED if not (retry_failed and s == "failed")}
    best = None
    if writer.trials:
        frame = store.read_metrics_columns([spec.metric])
        if spec.metric in frame:
            values = frame.dropna(subset=[spec.metric])
            values = values[values[spec.metric].map(lambda v: v == v and abs(v) != float("inf"))]
            if not values.empty:
                row = values.loc[values[spec.metric].idxmin() if spec.mode == "min" else values[spec.metric].idxmax()]
                best = (float(row[spec.metric]), str(row["trial_id"]))
    return counts, best


def _replace_callbacks(tuner, callbacks) -> None:
    """Give a restored Tuner this driver's callbacks (Tune would use the pickled ones of the first run)."""
    if internals.is_remote_tuner(tuner):
        raise LaunchError("resume through Ray Client (ray://...) is not supported; run the driver on the "
                          "cluster, e.g. `ray job submit -- python -m study resume NAME`")
    internals.replace_callbacks(tuner, callbacks)


# ---------------------------------------------------------------- search beyond the grid
# (random/optuna searches and early-stopping schedulers; built by study.search.tune)


def _search_param_space(spec: StudySpec) -> dict:
    from study.search.tune import search_param_space

    return search_param_space(spec)


def _search(spec: StudySpec, store: StudyStore, *, writer: StoreWriter | None = None,
            retry_failed: bool = False) -> tuple[dict, list]:
    """The spec's ``search_alg``/``scheduler``/``num_samples`` for ``TuneConfig`` ({} for a plain
    grid), and the callbacks that go with them.

    On resume (``writer`` loaded from the store): the searcher learns the stored outcomes of
    ended trials, the scheduler is fed the stored reports (Ray Tune does not save its
    state), and a remote store's Optuna database is fetched to the driver first.
    """
    if spec.search == "grid" and not spec.scheduler and not spec.points_listed:
        return {}, []
    from study.search.tune import OptunaSnapshot, optuna_location, time_attr, tune_search
    from study.store import stored_config

    ended, reports = None, None
    if writer is not None:
        statuses = set(ENDED) - ({"failed"} if retry_failed else set())
        ended = {config_key(stored_config(row)): (row["status"], row.get(spec.metric))
                 for row in writer.trials.values() if row.get("status") in statuses}
        if spec.scheduler:
            reports = _stored_reports(store, writer, spec.metric, time_attr(spec))
    location = optuna_location(spec, store)
    callbacks = []
    if location is not None:
        location.fetch()
        if location.remote:
            callbacks.append(OptunaSnapshot(location))
    return tune_search(spec, store, ended=ended, stored_reports=reports), callbacks


def _stored_reports(store: StudyStore, writer: StoreWriter, metric: str, time_attr: str) -> list:
    """(trial id, config, [reports]) of every stored trial, for a scheduler to start from."""
    from study.store import stored_config

    frame = store.read_metrics_columns(sorted({metric, time_attr, "training_iteration"}))
    if frame.empty:
        return []
    frame = frame.sort_values(["trial_id", "training_iteration"], kind="stable")
    rows = []
    for trial_id, part in frame.groupby("trial_id", sort=True):
        row = writer.trials.get(trial_id)
        if row is not None:
            rows.append((trial_id, stored_config(row), part.to_dict("records")))
    return rows


def _replace_search(tuner, search: dict) -> None:
    """Give a restored Tuner this driver's searcher and scheduler (see ``_replace_callbacks``):
    Ray Tune restores the searcher's state into it from the experiment folder."""
    if search:
        internals.replace_search(tuner, search)


def _search_done(callbacks: list) -> None:
    """Copy a remote store's Optuna database back, whatever way the run ended."""
    for callback in callbacks:
        callback.on_experiment_end(trials=[])


def _optuna_searcher(search: dict):
    alg = search.get("search_alg")
    return alg if hasattr(alg, "budget_left") else None
# ---------------------------------------------------------------- packed trials (study.packs)
# pack: K trains up to K grid points in one Ray trial; the store and the progress line still
# see one trial per grid point.


def _packed_param_space(spec: StudySpec) -> dict:
    from study.packs import pack_param_space

    return pack_param_space(spec)


def _packed_trainable(spec: StudySpec, skip=None, output=None):
    from trainables.packing import packed_ray_trainable

    return packed_ray_trainable(spec.trainable, skip, output=output)


def _pack_resources(spec: StudySpec):
    """Each pack's resources (``study.packs.PackResources``), capped by the nodes of the cluster Ray
    is connected to."""
    from study.packs import PackResources, ray_nodes

    return PackResources(spec, ray_nodes())


def _packed_callbacks(callbacks: list) -> list:
    from study.packs import PackedTrials

    return [PackedTrials(callbacks)]


__all__ = ["launch", "resume", "ensure_ray", "LaunchError", "StudyResult", "StoreError", "DEFAULT_STORAGE",
           "EndedTrials", "stored_spec", "trial_resources", "checkpoint_note", "study_metric_types", "check_trackers"]
