"""A study is data: a YAML mapping checked into a ``StudySpec`` before anything runs.

::

    name: quickstart
    trainable: lm                 # a registered trainable (see `python -m study list`)
    imports: []                   # modules to import first: they register trainables of your own
    config: {steps: 600}          # fixed values of the trainable's config
    axes:                         # the grid: one trial per combination
      weight_decay: [0.0, 0.3]
      schedule: [cosine, constant]
    search: grid                  # grid | random | optuna (see study.search: ranges, num_samples, scheduler)
    metric: val_loss              # what "best" means in progress and analysis
    mode: min
    resources: {cpu: 1, gpu: 0}   # per trial; gpu may be fractional (0.25)
    max_concurrent: null          # trials running at once (null: as resources allow)
    pack: 1                       # grid points trained together in one trial (see study.packs)
    max_failures: 0               # retries of a trial that died or raised (from its last checkpoint)
    keep_checkpoints: 2           # Ray Tune checkpoints kept per trial (null: all)
    stop: {}                      # optional Ray Tune stop criteria, e.g. {time_total_s: 600}

Every problem is a ``SpecError`` whose one-line message names the file and the key.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import reprlib
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

from study.search import SEARCHES, Range, parse_range, parse_sampler, parse_scheduler
from trainables.registry import ConfigError, check_value, config_fields, get_trainable

MODES = ("min", "max")
# Ray Tune's own result keys that a stop criterion may name besides the trainable's metrics.
RAY_STOP_KEYS = ("training_iteration", "time_total_s")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class SpecError(ValueError):
    """A study spec that cannot run; the message is one line naming the source and key."""


@dataclass(frozen=True)
class Resources:
    """Resources one trial holds. Args: cpu: CPUs (> 0); gpu: GPUs, fractional allowed (>= 0)."""

    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class StudySpec:
    """A validated study.

    Args:
        name: folder name of the study in the store.
        trainable: registered trainable name.
        config: fixed config values (checked against the trainable's config class).
        axes: axis name → tuple of values; the grid is their Cartesian product.
        search: ``grid``, ``random`` or ``optuna``.
        metric, mode: what "best" means.
        resources: per-trial resources.
        max_concurrent: trials at once, or None.
        max_failures: retries of a trial whose worker died or that raised, from its last checkpoint.
        keep_checkpoints: checkpoints Ray Tune keeps per trial (the newest), or None for all.
        stop: Ray Tune stop criteria.
        description: free text.
        source: where the spec came from (preset name or file path).
        ranges: axis name → ``Range``: the searched axes of a random/optuna search (in the
            YAML they are ``axes`` entries such as ``lr: {loguniform: [1e-4, 1e-1]}``); the
            grid axes are then held fixed per search, one search per grid point.
        num_samples: trials per grid point of a search (1 for a grid).
        search_seed: seed of the sampler or random generator (None for a grid).
        sampler: Optuna sampler ``{name: options}`` (``optuna`` only).
        scheduler: early stopping ``{asha|median: options}``, every option resolved, or None.
        pack: grid points trained together in one Ray trial (1: each its own trial); points
            differing only in the trainable's packable axes share a pack (``study.packs``).
        imports: Python modules imported before ``trainable`` is looked up; each registers
            trainables of its own with ``trainables.register`` (docs/write-a-trainable.md).
    """

    name: str
    trainable: str
    config: Mapping[str, Any]
    axes: Mapping[str, tuple]
    search: str = "grid"
    metric: str = ""
    mode: str = "min"
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    max_failures: int = 0
    keep_checkpoints: int | None = 2
    stop: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    # search beyond the grid (study.search)
    ranges: Mapping[str, Range] = field(default_factory=dict)
    num_samples: int = 1
    search_seed: int | None = None
    sampler: Mapping[str, Any] | None = None
    scheduler: Mapping[str, Any] | None = None
    pack: int = 1
    imports: tuple[str, ...] = ()

    def grid(self) -> list[dict[str, Any]]:
        """The axis values of every trial, in grid order (last axis fastest)."""
        names = list(self.axes)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.axes[n] for n in names))]

    def trial_configs(self) -> list[dict[str, Any]]:
        """The full config of every trial of a grid (of every search of a random/optuna study:
        the searched axes are left out): fixed values overlaid with its grid point."""
        return [{**self.config, **point} for point in self.grid()]

    def check_inputs(self) -> None:
        """Raise ``SpecError`` when a trial lacks an input the spec may leave to ``--set``
        (a data folder): checked before a launch, not when a spec loads or dry-runs."""
        config_class = get_trainable(self.trainable).config_class()
        if not hasattr(config_class, "check_inputs"):
            return
        for trial in self.trial_configs():
            try:
                config_class(**trial).check_inputs()
            except ConfigError as exc:
                where = "axes" if exc.key in self.axes else "config"
                raise SpecError(f"{self.source}: {where}.{exc.key}: {exc.message}") from None

    @property
    def num_trials(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n * self.num_samples

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML-able data (what ``spec.yaml`` in the store holds)."""
        data = asdict(self)
        data.pop("source")
        data["config"] = dict(self.config)
        data["axes"] = {k: list(v) for k, v in self.axes.items()}
        data["stop"] = dict(self.stop)
        for key in ("ranges", "num_samples", "search_seed", "sampler", "scheduler"):
            data.pop(key)
        if self.search != "grid":  # a grid's spec.yaml stays as it was
            data["axes"].update({k: r.to_yaml() for k, r in self.ranges.items()})
            data.update(num_samples=self.num_samples, search_seed=self.search_seed)
            if self.sampler is not None:
                data["sampler"] = {k: dict(v) for k, v in self.sampler.items()}
        if self.scheduler is not None:
            data["scheduler"] = {k: dict(v) for k, v in self.scheduler.items()}
        if data.pop("pack") > 1:  # an unpacked study's spec.yaml stays as it was
            data["pack"] = self.pack
        if data.pop("imports"):  # likewise a spec without imports
            data["imports"] = list(self.imports)
        return data


# ---------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping with the same key twice (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None


def preset_names() -> list[str]:
    folder = resources.files("study").joinpath("presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("study").joinpath("presets", f"{name}.yaml").read_text()


def load_spec(ref: str, overrides: list[str] | tuple[str, ...] = (), name: str | None = None) -> StudySpec:
    """Load a preset by name or a spec from a YAML file, apply ``key=value`` overrides, validate.

    ``overrides`` follow ``--set``: ``steps=100`` sets a config value (and removes the
    axis of that name, if any); ``axes.lr=[0.1, 0.3]``, ``resources.cpu=2`` set a
    dotted path of the spec; values are parsed as YAML.
    """
    if ref in preset_names():
        source, text = f"preset {ref}", preset_text(ref)
    elif ref.endswith((".yaml", ".yml")) or os.path.sep in ref or os.path.exists(ref):
        if not os.path.isfile(ref):
            raise SpecError(f"{ref}: no such spec file")
        source = ref
        with open(ref, encoding="utf-8") as f:
            text = f.read()
    else:
        raise SpecError(f"unknown preset {ref!r}; presets: {', '.join(preset_names())} (or give a path to a YAML spec)")
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides, source)
    if name is not None:
        data["name"] = name
    return parse_spec(data, source)


def apply_overrides(data: dict, overrides, source: str) -> dict:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected key=value")
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else ""
        path = key.split(".")
        if path[0] not in SPEC_KEYS:  # a bare config key: fix it, dropping its axis
            path = ["config", *path]
        if len(path) == 2 and path[0] in ("config", "axes"):  # a key is either fixed or an axis
            other = data.get("axes" if path[0] == "config" else "config")
            if isinstance(other, dict):
                other.pop(path[1], None)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError(f"--set {key}: {part} is not a mapping")
            node = child
        node[path[-1]] = value
    return data


# ---------------------------------------------------------------- validation

SPEC_KEYS = ("name", "description", "trainable", "config", "axes", "search", "metric", "mode",
             "resources", "max_concurrent", "max_failures", "keep_checkpoints", "stop",
             "num_samples", "search_seed", "sampler", "scheduler", "pack", "imports")


def parse_spec(data: Mapping[str, Any], source: str = "spec") -> StudySpec:
    """Check a spec mapping and build the ``StudySpec``; raise ``SpecError`` on the first problem."""

    def fail(key: str, message: str) -> SpecError:
        return SpecError(f"{source}: {key}: {message}")

    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise fail(str(unknown[0]), f"unknown key; known keys: {', '.join(SPEC_KEYS)}")
    for required in ("name", "trainable"):
        if required not in data:
            raise fail(required, "missing")

    name = data["name"]
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise fail("name", f"{name!r} is not a valid study name (letters, digits, '.', '_', '-'; a folder name)")
    imports = _import_modules(data.get("imports"), fail)
    try:
        info = get_trainable(data["trainable"]) if isinstance(data["trainable"], str) else None
    except ConfigError as exc:
        raise fail("trainable", exc.message) from None
    if info is None:
        raise fail("trainable", f"expected a name, got {data['trainable']!r}")
    config_class = info.config_class()

    config_in = _mapping(data.get("config", {}), "config", fail)
    config = {}
    for key, value in config_in.items():
        config[key] = _checked(config_class, key, value, f"config.{key}", fail)

    axes_in = _mapping(data.get("axes"), "axes", fail)
    if not axes_in:
        raise fail("axes", "empty; give at least one axis with a list of values (e.g. seed: [0])")
    axes, ranges = {}, {}
    for axis, values in axes_in.items():
        key = f"axes.{axis}"
        known = config_fields(config_class)
        if axis not in known:
            raise fail(key, f"unknown config key for trainable {info.name}; an axis must be one of: {', '.join(known)}")
        if axis in config:
            raise fail(key, f"{axis!r} is both a fixed config value and an axis; keep one")
        if isinstance(values, dict):  # a range, searched by random/optuna (study.search)
            ranges[axis] = parse_range(config_class, axis, values, fail)
            continue
        if not isinstance(values, list):
            raise fail(key, f"expected a list of values, got {values!r}")
        if not values:
            raise fail(key, "empty list; an axis needs at least one value")
        checked = [_checked(config_class, axis, v, f"{key}[{i}]", fail) for i, v in enumerate(values)]
        if len(set(map(repr, checked))) != len(checked):
            raise fail(key, f"repeated values in {values!r}")
        axes[axis] = tuple(checked)

    _check_trials(config_class, config, axes, ranges, fail)

    search = data.get("search", "grid")
    if search not in SEARCHES:
        raise fail("search", f"unknown search {search!r}; choose one of {', '.join(SEARCHES)}")
    metric = data.get("metric", info.default_metric)
    if not metric and (data.get("scheduler") not in (None, "none") or search == "optuna"):
        what = "scheduler" if data.get("scheduler") not in (None, "none") else "search"
        raise fail(what, f"{data.get(what)} compares trials on a metric; set metric: (trainable {info.name} "
                   f"reports {', '.join(info.metrics)})")
    if metric not in info.metrics:
        raise fail("metric", f"{metric!r} is not reported by trainable {info.name}; it reports {', '.join(info.metrics)}")
    mode = data.get("mode", info.default_mode)
    if mode not in MODES:
        raise fail("mode", f"expected min or max, got {mode!r}")

    res_in = _mapping(data.get("resources", {}), "resources", fail)
    for key in res_in:
        if key not in ("cpu", "gpu"):
            raise fail(f"resources.{key}", "unknown resource; use cpu and gpu")
    cpu, gpu = res_in.get("cpu", 1), res_in.get("gpu", 0)
    if not _is_number(cpu) or cpu <= 0:
        raise fail("resources.cpu", f"expected a number > 0, got {cpu!r}")
    if not _is_number(gpu) or gpu < 0:
        raise fail("resources.gpu", f"expected a number >= 0 (fractions share a GPU), got {gpu!r}")
    if 1 < gpu != int(gpu):
        raise fail("resources.gpu", f"more than one GPU must be a whole number, got {gpu!r}")

    max_concurrent = data.get("max_concurrent")
    if max_concurrent is not None and (not _is_int(max_concurrent) or max_concurrent < 1):
        raise fail("max_concurrent", f"expected a positive integer or null, got {max_concurrent!r}")
    max_failures = data.get("max_failures", 0)
    if not _is_int(max_failures) or max_failures < 0:
        raise fail("max_failures", f"expected an integer >= 0, got {max_failures!r}")
    keep_checkpoints = data.get("keep_checkpoints", 2)
    if keep_checkpoints is not None and (not _is_int(keep_checkpoints) or keep_checkpoints < 1):
        raise fail("keep_checkpoints", f"expected a positive integer or null (keep all), got {keep_checkpoints!r}")

    stop = _mapping(data.get("stop", {}), "stop", fail)
    for key, value in stop.items():
        if key not in RAY_STOP_KEYS and key not in info.metrics:
            raise fail(f"stop.{key}", f"not a reported metric; use {', '.join(RAY_STOP_KEYS)} or one of the trainable's metrics")
        if not _is_number(value):
            raise fail(f"stop.{key}", f"expected a number, got {value!r}")

    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "expected text")
    pack = _pack(data, info, config_class, config, axes, stop, fail)

    # ---- search beyond the grid: ranges, budget, seed, sampler, scheduler (study.search)
    if search == "grid" and ranges:
        axis, r = next(iter(ranges.items()))
        raise fail(f"axes.{axis}", f"a range ({r.describe()}) needs search: random or optuna; a grid takes a list of values")
    if search != "grid" and not ranges:
        raise fail("search", f"{search} needs at least one range axis, e.g. lr: {{loguniform: [1.0e-4, 1.0e-1]}} "
                   f"(with lists only, it is a grid)")
    num_samples = data.get("num_samples")
    if search == "grid":
        if num_samples not in (None, 1):
            raise fail("num_samples", "a grid runs each point once; repeat it with a seed axis (seed: [0, 1, 2]), "
                       "or search with search: random or optuna")
        num_samples = 1
    elif num_samples is None:
        raise fail("num_samples", f"missing: the budget of the {search} search, in trials per grid point")
    elif not _is_int(num_samples) or num_samples < 1:
        raise fail("num_samples", f"expected an integer >= 1 (trials per grid point), got {num_samples!r}")
    search_seed = data.get("search_seed")
    if search == "grid" and search_seed is not None:
        raise fail("search_seed", "only a random or optuna search is seeded (a grid has nothing to draw)")
    if search != "grid":
        search_seed = 0 if search_seed is None else search_seed
        if not _is_int(search_seed) or search_seed < 0:
            raise fail("search_seed", f"expected an integer >= 0, got {search_seed!r}")
    sampler = data.get("sampler")
    if sampler is not None and search != "optuna":
        raise fail("sampler", f"an Optuna sampler needs search: optuna (this spec's search is {search})")
    if search == "optuna":
        sampler = parse_sampler(sampler if sampler is not None else "tpe", fail)
    scheduler = parse_scheduler(data.get("scheduler"), info=info, config_class=config_class, config=config,
                                axes=axes, ranges=ranges, metric=metric, fail=fail)

    return StudySpec(
        name=name, trainable=info.name, config=config, axes=axes, search=search, metric=metric,
        mode=mode, resources=Resources(cpu=cpu, gpu=gpu), max_concurrent=max_concurrent,
        max_failures=max_failures, keep_checkpoints=keep_checkpoints, stop=dict(stop), description=description, source=source,
        ranges=ranges, num_samples=num_samples, search_seed=search_seed, sampler=sampler, scheduler=scheduler,
        pack=pack, imports=imports,
    )


def _import_modules(imports: Any, fail) -> tuple[str, ...]:
    """Import the spec's ``imports`` (module names), so that the trainables they register with
    ``trainables.register`` can be named by ``trainable``. Importing runs the module's code: a
    spec with ``imports`` is code, to be trusted as such. Ray workers import the trainable's
    module themselves, so it must be importable there too (installed, or under the driver's
    working folder, which Ray puts on its local workers' path)."""
    if imports is None:
        return ()
    if not isinstance(imports, list) or not all(isinstance(m, str) and MODULE_PATTERN.fullmatch(m) for m in imports):
        raise fail("imports", f"expected a list of module names such as [examples.logreg.trainable], "
                              f"got {reprlib.repr(imports)}")
    for i, module in enumerate(imports):
        try:
            importlib.import_module(module)
        except Exception as exc:  # the user's module: whatever its import raises is a problem of this spec
            first = (str(exc).splitlines() or [""])[0][:200]
            raise fail(f"imports[{i}]", f"cannot import {module!r}: {type(exc).__name__}: {first}") from None
    return tuple(imports)


def _check_trials(config_class: type, config: dict, axes: dict, ranges: dict, fail) -> None:
    """Build every trial's config, so that a combination of values the trainable refuses
    (e.g. a CIFAR model on the 1-D dataset) fails here, before anything is launched. A
    searched range stands in with its two ends (a choice with each of its values)."""
    values = {**axes, **{n: r.values if r.kind == "choice" else (r.low, r.high) for n, r in ranges.items()}}
    names = list(values)
    for combo in itertools.product(*(values[n] for n in names)):
        point = dict(zip(names, combo))
        try:
            config_class(**config, **point)
        except ConfigError as exc:
            where = f"axes.{exc.key}" if exc.key in point else f"config.{exc.key}"
            trial = f" (in the trial with {', '.join(f'{k}={v!r}' for k, v in point.items())})" if len(point) else ""
            raise fail(where, exc.message + trial) from None


def _pack(data: Mapping[str, Any], info, config_class: type, config: dict, axes: dict, stop: dict, fail) -> int:
    """The spec's ``pack``: an integer >= 1 (null: 1), for a grid of a trainable that can run packed."""
    pack = data.get("pack", 1)
    if pack is None:
        return 1
    if not _is_int(pack) or pack < 1:
        raise fail("pack", f"expected an integer >= 1 (grid points trained together in one trial; 1: no packing), "
                           f"got {pack!r}")
    if pack == 1:
        return 1
    from trainables.packing import pack_problem

    search = data.get("search", "grid")
    if search != "grid":
        raise fail("pack", f"packing applies to search: grid only (this spec's search is {search}); drop pack or "
                           f"search the grid")
    if data.get("scheduler") not in (None, "none"):
        raise fail("pack", "a scheduler stops trials one by one, and a packed trial trains several grid points "
                           "together; drop pack or the scheduler")
    problem = pack_problem(info.name, config_class, config, axes)
    if problem is not None:
        raise fail(problem.key, problem.message)
    metric_stops = [key for key in stop if key != "time_total_s"]
    if metric_stops:
        raise fail(f"stop.{metric_stops[0]}", "a packed trial reports for several grid points at once; only "
                                              "time_total_s can stop it (drop pack to stop on a metric)")
    return pack


def _mapping(value: Any, key: str, fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {value!r}")
    return value


def _checked(config_class: type, name: str, value: Any, key: str, fail) -> Any:
    try:
        return check_value(config_class, name, value)
    except ConfigError as exc:
        raise fail(key, exc.message) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
