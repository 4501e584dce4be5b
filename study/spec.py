"""A study is data: a YAML mapping checked into a ``StudySpec`` before anything runs.

::

    name: quickstart
    trainable: lm                 # a registered trainable (see `python -m study list`)
    imports: []                   # modules to import first: they register trainables of your own
    config: {steps: 600}          # fixed values of the trainable's config
    axes:                         # the grid: one trial per combination
      weight_decay: [0.0, 0.3]
      schedule: [cosine, constant]
    exclude: []                   # grid points left out, e.g. [{schedule: constant, weight_decay: 0.3}]
    cases: []                     # config of the points that match, e.g. [{when: {schedule: constant}, config: {tail_steps: 0}}]
    search: grid                  # grid | random | optuna (see study.search: ranges, num_samples, scheduler)
    metric: val_loss              # what "best" means in progress and analysis
    mode: min
    resources: {cpu: 1, gpu: 0}   # per trial; gpu may be fractional (0.25)
    max_concurrent: null          # trials running at once (null: as resources allow)
    pack: 1                       # grid points trained together in one trial (see study.packs)
    pack_resources: null          # what one pack holds (null: its members' resources, capped at a node)
    max_failures: 0               # retries of a trial that died or raised (from its last checkpoint)
    keep_checkpoints: 2           # Ray Tune checkpoints kept per trial (null: all)
    stop: {}                      # optional Ray Tune stop criteria, e.g. {time_total_s: 600}
    loggers: []                   # experiment trackers: csv, tensorboard, mlflow, wandb (study.trackers)

Every problem is a ``SpecError`` whose one-line message names the file and the key.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import re
import reprlib
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

from study.errors import abbreviate, key_label, short_repr
from study.trackers import parse_loggers
from study.search import SEARCHES, Range, parse_range, parse_sampler, parse_scheduler
from trainables.registry import ConfigError, check_value, config_fields, get_trainable

MODES = ("min", "max")
# Ray Tune's own result keys that a stop criterion may name besides the trainable's metrics.
RAY_STOP_KEYS = ("training_iteration", "time_total_s")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # used with fullmatch: no trailing newline
# Bounds on what a spec may hold, checked before anything else reads it: a spec is a page of
# YAML, and a YAML alias bomb or a runaway grid must not exhaust the machine.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 100_000  # scalars and containers, after expanding YAML aliases
MAX_SPEC_DEPTH = 32
DEFAULT_MAX_TRIALS = 100_000  # trials of one study unless its spec (max_trials) or --max-trials raises it
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # every integer lands in a Parquet int64 column
SEED_MAX = 2**32 - 1  # numpy's RandomState (Ray Tune's random search, Optuna's samplers) takes 32-bit seeds
MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class SpecError(ValueError):
    """A study spec that cannot run; the message is one line naming the source and key."""

    def __init__(self, message: str):
        # one line whatever a value in it holds (keys are shown by key_label; this is the net)
        super().__init__(abbreviate(message, limit=100_000))


def check_name(name: Any, where: str = "name") -> str:
    """Return ``name`` if it can name a study folder, else raise ``SpecError``.

    The one check of every study name a user gives (a spec's ``name``, ``--name``, the name
    given to resume, status, report, compare...): letters, digits, '.', '_', '-', at most
    100 characters, a letter or digit first; so never a path (no separator, no '..', not
    absolute) and nothing after it (a full match: no trailing newline).
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise SpecError(f"{where}: {short_repr(name)} is not a valid study name (letters, digits, '.', '_', '-', "
                        f"at most 100, a letter or digit first, no '..'; a folder name, not a path)")
    return name


@dataclass(frozen=True)
class Resources:
    """Resources one trial holds. Args: cpu: CPUs (> 0); gpu: GPUs, fractional allowed (>= 0)."""

    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class Case:
    """Config values of the grid points that match: ``when`` names a value of some axes or fixed
    keys (a point matches when its trial has every one), ``config`` the values its trial takes
    instead of the fixed ones."""

    when: Mapping[str, Any]
    config: Mapping[str, Any]


def matches(values: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    """Does the trial (its fixed values and grid point) have every one of ``values`` (key → value)?
    Values compare as the spec wrote them after checking (``repr``), so 0.3 and 0.30 are one value
    and 1 is not True."""
    return all(axis in point and repr(point[axis]) == repr(value) for axis, value in values.items())


@dataclass(frozen=True)
class StudySpec:
    """A validated study.

    Args:
        name: folder name of the study in the store.
        trainable: registered trainable name.
        config: fixed config values (checked against the trainable's config class).
        axes: axis name → tuple of values; the grid is their Cartesian product, less ``exclude``.
        exclude: grid points left out, each a mapping axis → value: a point with every one of
            them is not run (an uneven grid, e.g. fewer seeds for one schedule).
        cases: ``Case``s, in order: each sets config values of the grid points it matches (a
            later case wins); e.g. a continuation only for the cosine arms.
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
        pack_resources: what one pack (one Ray trial of a packed study) holds; None: what its
            members would have held, ``resources`` times their number, capped at one node
            (``study.packs.pack_resources``).
        imports: Python modules imported before ``trainable`` is looked up; each registers
            trainables of its own with ``trainables.register`` (docs/write-a-trainable.md).
        max_trials: the most trials the spec may make (None: ``DEFAULT_MAX_TRIALS``); the
            count is computed from the axes' lengths before any trial is enumerated.
        loggers: experiment tracker name -> its options (``study.trackers``; docs/trackers.md).
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
    pack_resources: Resources | None = None
    imports: tuple[str, ...] = ()
    max_trials: int | None = None
    loggers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    exclude: tuple[Mapping[str, Any], ...] = ()
    cases: tuple[Case, ...] = ()

    @property
    def uneven(self) -> bool:
        """Is the grid more than a Cartesian product (points excluded, or config set per point)?
        Ray Tune's grid cannot express it (``points_listed``)."""
        return bool(self.exclude or self.cases)

    @property
    def points_listed(self) -> bool:
        """Does Ray Tune get this study's trials as a list of points? An uneven grid of one trial
        per point does (``study.search.tune.uneven_points``); a packed one is a grid over its packs."""
        return self.uneven and self.pack == 1

    @property
    def case_keys(self) -> list[str]:
        """The config keys ``cases`` set, sorted."""
        return sorted({key for case in self.cases for key in case.config})

    def _product(self):
        """Every combination of the axes' values, in grid order (last axis fastest)."""
        names = list(self.axes)
        return (dict(zip(names, combo)) for combo in itertools.product(*(self.axes[n] for n in names)))

    def _selects(self, values: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
        """Does an ``exclude`` entry or a case's ``when`` select this grid point (its fixed values too)?"""
        return matches(values, {**self.config, **point})

    def grid(self) -> list[dict[str, Any]]:
        """The axis values of every trial, in grid order (last axis fastest), less ``exclude``."""
        return [p for p in self._product() if not any(self._selects(e, p) for e in self.exclude)]

    def unmatched(self) -> list[str]:
        """``exclude[i]`` / ``cases[i]`` entries that select no grid point (a value the axis does not hold)."""
        if not self.uneven:
            return []
        points = list(self._product())
        entries = [(f"exclude[{i}]", e) for i, e in enumerate(self.exclude)]
        entries += [(f"cases[{i}]", c.when) for i, c in enumerate(self.cases)]
        return [label for label, values in entries if not any(self._selects(values, p) for p in points)]

    def case_config(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The config values ``cases`` set for a grid point (empty when none matches)."""
        config: dict[str, Any] = {}
        for case in self.cases:
            if self._selects(case.when, point):
                config.update(case.config)
        return config

    def values_of(self, key: str, default: Any = None) -> tuple:
        """Every value a config key takes over the trials: its axis, or its fixed value (else
        ``default``) and the values cases set for it."""
        if key in self.axes:
            return tuple(self.axes[key])
        if self.cases:
            values = [config.get(key, default) for config in self.trial_configs()]
        else:
            values = [self.config.get(key, default)]
        return tuple({repr(v): v for v in values}.values())

    def grid_points(self, indices) -> list[dict[str, Any]]:
        """The grid points at the given positions of ``grid()``, computed without building the
        grid (an uneven grid is built: its size was bounded when it was checked)."""
        if self.exclude:
            grid = self.grid()
            return [grid[i] for i in indices]
        names = list(self.axes)
        points = []
        for index in indices:
            point = {}
            for name in reversed(names):  # the last axis varies fastest
                values = self.axes[name]
                index, at = divmod(index, len(values))
                point[name] = values[at]
            points.append({name: point[name] for name in names})
        return points

    @property
    def num_points(self) -> int:
        """The number of grid points (the product of the axes' lengths, less the excluded points)."""
        if self.exclude:
            return len(self.grid())
        return math.prod(len(values) for values in self.axes.values())

    def trial_configs(self) -> list[dict[str, Any]]:
        """The full config of every trial of a grid (of every search of a random/optuna study:
        the searched axes are left out): fixed values, overlaid with what cases set for its
        grid point, overlaid with the point."""
        return [{**self.config, **self.case_config(point), **point} for point in self.grid()]

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
        return self.num_points * self.num_samples

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
        pack_resources = data.pop("pack_resources")
        if pack_resources is not None:  # likewise a packed one that keeps the default
            data["pack_resources"] = pack_resources
        if data.pop("imports"):  # likewise a spec without imports
            data["imports"] = list(self.imports)
        if data.pop("max_trials") is not None:  # a raised cap is kept, so that resume accepts the spec
            data["max_trials"] = self.max_trials
        if data.pop("loggers"):  # likewise a spec without trackers
            data["loggers"] = {k: dict(v) for k, v in self.loggers.items()}
        if data.pop("exclude"):  # likewise an even grid
            data["exclude"] = [dict(e) for e in self.exclude]
        if data.pop("cases"):
            data["cases"] = [{"when": dict(c.when), "config": dict(c.config)} for c in self.cases]
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


# Numbers as a user writes them: YAML 1.1 (PyYAML) reads 1e-3 and 1e308 as strings (its floats
# need a dot and a signed exponent); YAML 1.2 and every programming language read them as floats.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text (a spec, a ``--set`` value) with unique keys and user-style floats;
    any problem, however odd the text, is a one-line ``SpecError``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: malformed YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4,300 digits
        raise SpecError(f"{source}: malformed YAML: {short_repr(str(exc), 120)}") from None


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
        text = read_spec_file(ref)
    else:
        raise SpecError(f"unknown preset {ref!r}; presets: {', '.join(preset_names())} (or give a path to a YAML spec)")
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides, source)
    if name is not None:
        data["name"] = name
    return parse_spec(data, source)


def read_spec_file(path: str) -> str:
    """The text of a spec file; a file too large for a spec, unreadable or not UTF-8 is a ``SpecError``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror or exc})") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES >> 20} MiB; a spec is a page of YAML")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                        f"save the spec as UTF-8") from None


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
             "num_samples", "search_seed", "sampler", "scheduler", "pack", "pack_resources", "imports", "max_trials",
             "loggers", "exclude", "cases")


def parse_spec(data: Mapping[str, Any], source: str = "spec") -> StudySpec:
    """Check a spec mapping and build the ``StudySpec``; raise ``SpecError`` on the first problem."""

    def fail(key: str, message: str) -> SpecError:
        return SpecError(f"{source}: {key}: {message}")

    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec must be a mapping, got {type(data).__name__}")
    check_plain(data, fail)
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise fail(key_label(unknown[0]), f"unknown key; known keys: {', '.join(SPEC_KEYS)}")
    for required in ("name", "trainable"):
        if required not in data:
            raise fail(required, "missing")

    name = check_name(data["name"], f"{source}: name")
    imports = _import_modules(data.get("imports"), fail)
    try:
        info = get_trainable(data["trainable"]) if isinstance(data["trainable"], str) else None
    except ConfigError as exc:
        raise fail("trainable", exc.message) from None
    if info is None:
        raise fail("trainable", f"expected a name, got {short_repr(data['trainable'])}")
    config_class = info.config_class()

    config_in = _mapping(data.get("config", {}), "config", fail)
    config = {}
    for key, value in config_in.items():
        config[key] = _checked(config_class, key, value, f"config.{key_label(key)}", fail)

    axes_in = _mapping(data.get("axes"), "axes", fail)
    if not axes_in:
        raise fail("axes", "empty; give at least one axis with a list of values (e.g. seed: [0])")
    axes, ranges = {}, {}
    for axis, values in axes_in.items():
        key = f"axes.{key_label(axis)}"
        known = config_fields(config_class)
        if axis not in known:
            raise fail(key, f"unknown config key for trainable {info.name}; an axis must be one of: {', '.join(known)}")
        if axis in config:
            raise fail(key, f"{axis!r} is both a fixed config value and an axis; keep one")
        if isinstance(values, dict):  # a range, searched by random/optuna (study.search)
            ranges[axis] = parse_range(config_class, axis, values, fail)
            continue
        if not isinstance(values, list):
            raise fail(key, f"expected a list of values, got {short_repr(values)}")
        if not values:
            raise fail(key, "empty list; an axis needs at least one value")
        checked = [_checked(config_class, axis, v, f"{key}[{i}]", fail) for i, v in enumerate(values)]
        if len(set(map(repr, checked))) != len(checked):
            raise fail(key, f"repeated values in {short_repr(values)}")
        axes[axis] = tuple(checked)

    max_trials = data.get("max_trials")
    if max_trials is not None and (not _is_int(max_trials) or max_trials < 1):
        raise fail("max_trials", f"expected a positive integer or null (default {DEFAULT_MAX_TRIALS:,}), "
                                 f"got {short_repr(max_trials)}")
    search = data.get("search", "grid")
    if search not in SEARCHES:
        raise fail("search", f"unknown search {short_repr(search)}; choose one of {', '.join(SEARCHES)}")
    exclude, cases = _uneven_grid(data, config_class, config, axes, search, fail)
    points = math.prod(len(values) for values in axes.values())  # counted, never enumerated
    if exclude or cases:  # an uneven grid is built: bounded first, then counted
        if points > MAX_UNEVEN_POINTS:
            raise fail("exclude" if exclude else "cases",
                       f"apply to a grid of at most {MAX_UNEVEN_POINTS:,} points before exclusion; this one has "
                       f"{points:,}")
        spec = StudySpec(name=name, trainable=info.name, config=config, axes=axes, exclude=exclude, cases=cases)
        points = spec.num_points
        if not points:
            raise fail("exclude", "leaves no grid point to run")
    _check_size(points * _samples(data), max_trials, fail)
    if exclude or cases:
        _check_configs(config_class, spec, fail)
    else:
        _check_trials(config_class, config, axes, ranges, fail)
    metric = data.get("metric", info.default_metric)
    if not metric and (data.get("scheduler") not in (None, "none") or search == "optuna"):
        what = "scheduler" if data.get("scheduler") not in (None, "none") else "search"
        raise fail(what, f"{data.get(what)} compares trials on a metric; set metric: (trainable {info.name} "
                   f"reports {', '.join(info.metrics)})")
    if metric not in info.metrics:
        raise fail("metric", f"{short_repr(metric)} is not reported by trainable {info.name}; it reports "
                             f"{', '.join(info.metrics)}")
    mode = data.get("mode", info.default_mode)
    if mode not in MODES:
        raise fail("mode", f"expected min or max, got {short_repr(mode)}")

    per_trial = _resources(data.get("resources", {}), "resources", fail)

    max_concurrent = data.get("max_concurrent")
    if max_concurrent is not None and (not _is_int(max_concurrent) or max_concurrent < 1):
        raise fail("max_concurrent", f"expected a positive integer or null, got {short_repr(max_concurrent)}")
    max_failures = data.get("max_failures", 0)
    if not _is_int(max_failures) or max_failures < 0:
        raise fail("max_failures", f"expected an integer >= 0, got {short_repr(max_failures)}")
    keep_checkpoints = data.get("keep_checkpoints", 2)
    if keep_checkpoints is not None and (not _is_int(keep_checkpoints) or keep_checkpoints < 1):
        raise fail("keep_checkpoints", f"expected a positive integer or null (keep all), got "
                                       f"{short_repr(keep_checkpoints)}")

    stop = _mapping(data.get("stop", {}), "stop", fail)
    for key, value in stop.items():
        if key not in RAY_STOP_KEYS and key not in info.metrics:
            raise fail(f"stop.{key_label(key)}", f"not a reported metric; use {', '.join(RAY_STOP_KEYS)} or one of "
                                                  f"the trainable's metrics")
        if not is_finite_number(value):
            raise fail(f"stop.{key}", f"expected a finite number, got {short_repr(value)}")
        if key == "time_total_s" and value <= 0:
            raise fail(f"stop.{key}", f"expected seconds > 0 (the trial stops once it has run that long), got {value!r}")
        if key == "training_iteration" and (not _is_int(value) or value < 1):
            raise fail(f"stop.{key}", f"expected an integer >= 1 (the trial stops after that many reports), "
                                      f"got {value!r}")

    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "expected text")
    pack = _pack(data, info, config_class, config, axes, stop, fail)
    pack_resources = data.get("pack_resources")
    if pack_resources is not None:
        if pack == 1:
            raise fail("pack_resources", "sets what one pack holds; it needs pack > 1 (unpacked trials hold resources)")
        pack_resources = _resources(pack_resources, "pack_resources", fail)

    # ---- search beyond the grid: ranges, budget, seed, sampler, scheduler (study.search)
    if search == "grid" and ranges:
        axis, r = next(iter(ranges.items()))
        raise fail(f"axes.{key_label(axis)}", f"a range ({r.describe()}) needs search: random or optuna; a grid takes a list of values")
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
        raise fail("num_samples", f"expected an integer >= 1 (trials per grid point), got {short_repr(num_samples)}")
    search_seed = data.get("search_seed")
    if search == "grid" and search_seed is not None:
        raise fail("search_seed", "only a random or optuna search is seeded (a grid has nothing to draw)")
    if search != "grid":
        search_seed = 0 if search_seed is None else search_seed
        if not _is_int(search_seed) or not 0 <= search_seed <= SEED_MAX:
            raise fail("search_seed", f"expected an integer >= 0 and < 2**32, got {short_repr(search_seed)}")
    sampler = data.get("sampler")
    if sampler is not None and search != "optuna":
        raise fail("sampler", f"an Optuna sampler needs search: optuna (this spec's search is {search})")
    if search == "optuna":
        sampler = parse_sampler(sampler if sampler is not None else "tpe", fail)
    scheduler = parse_scheduler(data.get("scheduler"), info=info, config_class=config_class, config=config,
                                axes=axes, ranges=ranges, metric=metric, fail=fail)
    loggers = parse_loggers(data.get("loggers"), fail)

    return StudySpec(
        name=name, trainable=info.name, config=config, axes=axes, search=search, metric=metric,
        mode=mode, resources=per_trial, max_concurrent=max_concurrent,
        max_failures=max_failures, keep_checkpoints=keep_checkpoints, stop=dict(stop), description=description, source=source,
        ranges=ranges, num_samples=num_samples, search_seed=search_seed, sampler=sampler, scheduler=scheduler,
        pack=pack, pack_resources=pack_resources, imports=imports, max_trials=max_trials, loggers=loggers,
        exclude=exclude, cases=cases,
    )


MAX_UNEVEN_POINTS = 1_000_000  # an uneven grid is enumerated to be counted


def _uneven_grid(data: Mapping[str, Any], config_class: type, config: dict, axes: dict, search: str,
                 fail) -> tuple[tuple[dict, ...], tuple[Case, ...]]:
    """The spec's ``exclude`` (a list of {axis: value}) and ``cases`` (a list of {when: {axis:
    value}, config: {key: value}}), every axis and value checked against the grid."""
    exclude_in, cases_in = data.get("exclude"), data.get("cases")
    if exclude_in in (None, []) and cases_in in (None, []):
        return (), ()
    if search != "grid":
        key = "exclude" if exclude_in not in (None, []) else "cases"
        raise fail(key, f"shapes a grid; a {search} search holds its grid axes fixed per search (drop {key}, "
                        f"or search the grid)")

    def selection(value: Any, key: str) -> dict:
        if not isinstance(value, dict) or not value:
            raise fail(key, f"expected a mapping of axis values, e.g. {{{next(iter(axes))}: "
                            f"{short_repr(next(iter(axes.values()))[0])}}}, got {short_repr(value)}")
        chosen = {}
        for axis, v in value.items():
            where = f"{key}.{key_label(axis)}"
            if axis not in axes and axis not in config:  # a fixed key selects all or nothing
                raise fail(where, f"neither an axis nor a fixed config value (axes: {', '.join(axes)})")
            # a valid value the axis does not hold selects nothing (so that --set axes.seed=[...] or
            # --set schedule=cosine leaves the preset's selections standing); the dry run says so
            chosen[axis] = _checked(config_class, axis, v, where, fail)
        return chosen

    exclude = []
    if exclude_in is not None:
        if not isinstance(exclude_in, list):
            raise fail("exclude", f"expected a list of mappings axis: value, got {short_repr(exclude_in)}")
        exclude = [selection(entry, f"exclude[{i}]") for i, entry in enumerate(exclude_in)]
    cases = []
    if cases_in is not None:
        if not isinstance(cases_in, list):
            raise fail("cases", f"expected a list of {{when: {{axis: value}}, config: {{key: value}}}}, "
                                f"got {short_repr(cases_in)}")
        for i, entry in enumerate(cases_in):
            key = f"cases[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"when", "config"}:
                raise fail(key, f"expected {{when: {{axis: value}}, config: {{key: value}}}}, got {short_repr(entry)}")
            when = selection(entry["when"], f"{key}.when")
            values = _mapping(entry["config"], f"{key}.config", fail)
            if not values:
                raise fail(f"{key}.config", "empty; give the config values of the matching points")
            known = config_fields(config_class)
            case_config = {}
            for name, value in values.items():
                where = f"{key}.config.{key_label(name)}"
                if name not in known:
                    raise fail(where, f"unknown config key; one of: {', '.join(known)}")
                if name in axes:
                    raise fail(where, f"{name!r} is an axis: its value is the grid point's (exclude the points "
                                      f"instead)")
                case_config[name] = _checked(config_class, name, value, where, fail)
            cases.append(Case(when=when, config=case_config))
    return tuple(exclude), tuple(cases)


def _check_configs(config_class: type, spec: StudySpec, fail) -> None:
    """Build every trial's config of an uneven grid (``_check_trials`` for an even one)."""
    for point, trial in zip(spec.grid(), spec.trial_configs()):
        try:
            config_class(**trial)
        except ConfigError as exc:
            set_by = "config"
            if exc.key in point:
                set_by = "axes"
            elif exc.key in spec.case_config(point):
                set_by = "cases"
            where = f"{set_by}.{key_label(exc.key)}"
            raise fail(where, exc.message + f" (in the trial with {', '.join(f'{k}={v!r}' for k, v in point.items())})") from None


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


def check_plain(data: Any, fail) -> None:
    """Refuse a spec that is not small plain data before anything else reads it: more than
    ``MAX_SPEC_VALUES`` values once YAML aliases are expanded (an alias bomb), nested deeper
    than ``MAX_SPEC_DEPTH`` (or referring to itself), an integer outside int64, a float that
    is not finite. The walk is iterative and stops at the first problem, so it is bounded
    whatever the input."""
    stack, seen = [(data, "", 0)], 0
    while stack:
        value, path, depth = stack.pop()
        seen += 1
        if seen > MAX_SPEC_VALUES:
            raise fail("spec", f"more than {MAX_SPEC_VALUES:,} values (counting what YAML aliases repeat); "
                               f"a spec is a page of YAML")
        if depth > MAX_SPEC_DEPTH:
            raise fail(path, f"nested deeper than {MAX_SPEC_DEPTH} levels (or refers to itself)")
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise fail(path or "spec", f"{short_repr(value, 24)} is out of range (integers are 64-bit, "
                                           f"at most {INT64_MAX:.2e} in size)")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise fail(path or "spec", f"expected a finite number, got {value!r}")
        elif isinstance(value, Mapping):
            children = [(v, f"{path}.{key_label(k)}" if path else key_label(k), depth + 1) for k, v in value.items()]
            stack.extend(reversed(children))
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed([(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]))


def _samples(data: Mapping[str, Any]) -> int:
    """The spec's trials per grid point as far as it can be read before validation (for the size check)."""
    n = data.get("num_samples")
    return n if _is_int(n) and n > 1 and data.get("search", "grid") != "grid" else 1


def _check_size(trials: int, max_trials: int | None, fail) -> None:
    cap = DEFAULT_MAX_TRIALS if max_trials is None else max_trials
    if trials > cap:
        raise fail("axes", f"{trials:,} trials, more than the cap of {cap:,}; shrink the grid, or raise the cap "
                           f"(max_trials: {trials} in the spec, or --max-trials {trials})")


def _check_trials(config_class: type, config: dict, axes: dict, ranges: dict, fail) -> None:
    """Build every trial's config, so that a combination of values the trainable refuses
    (e.g. a CIFAR model on the 1-D dataset) fails here, before anything is launched. A
    searched range stands in with its two ends (a choice with each of its values). Beyond
    ``CHECKED_COMBINATIONS`` (a grid whose cap was raised), every pair of values of every
    two axes is checked instead, the other axes at their first value: the trainables'
    constraints relate two keys at a time."""
    values = {**axes, **{n: r.values if r.kind == "choice" else (r.low, r.high) for n, r in ranges.items()}}
    for point in _combinations(values):
        try:
            config_class(**config, **point)
        except ConfigError as exc:
            where = f"axes.{key_label(exc.key)}" if exc.key in point else f"config.{key_label(exc.key)}"
            trial = f" (in the trial with {', '.join(f'{k}={v!r}' for k, v in point.items())})" if len(point) else ""
            raise fail(where, exc.message + trial) from None


CHECKED_COMBINATIONS = 100_000


def _combinations(values: dict[str, tuple]):
    """Every combination of the values, or (beyond the budget) every pair of values of two
    axes, or (beyond it still) every value of each axis, the other axes at their first value."""
    names = list(values)
    if math.prod(len(v) for v in values.values()) <= CHECKED_COMBINATIONS:
        for combo in itertools.product(*(values[n] for n in names)):
            yield dict(zip(names, combo))
        return
    first = {n: v[0] for n, v in values.items()}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if sum(len(values[a]) * len(values[b]) for a, b in pairs) <= CHECKED_COMBINATIONS:
        for a, b in pairs:
            for x in values[a]:
                for y in values[b]:
                    yield {**first, a: x, b: y}
        return
    for a in names:
        for x in values[a]:
            yield {**first, a: x}


def _pack(data: Mapping[str, Any], info, config_class: type, config: dict, axes: dict, stop: dict, fail) -> int:
    """The spec's ``pack``: an integer >= 1 (null: 1), for a grid of a trainable that can run packed."""
    pack = data.get("pack", 1)
    if pack is None:
        return 1
    if not _is_int(pack) or pack < 1:
        raise fail("pack", f"expected an integer >= 1 (grid points trained together in one trial; 1: no packing), "
                           f"got {short_repr(pack)}")
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


def _resources(value: Any, key: str, fail) -> Resources:
    """``resources`` or ``pack_resources``: a mapping of cpu (> 0, default 1) and gpu (>= 0, a fraction
    shares a GPU, more than one a whole number; default 0)."""
    given = _mapping(value, key, fail)
    for name in given:
        if name not in ("cpu", "gpu"):
            raise fail(f"{key}.{key_label(name)}", "unknown resource; use cpu and gpu")
    cpu, gpu = given.get("cpu", 1), given.get("gpu", 0)
    if not is_finite_number(cpu) or cpu <= 0:
        raise fail(f"{key}.cpu", f"expected a number > 0, got {short_repr(cpu)}")
    if not is_finite_number(gpu) or gpu < 0:
        raise fail(f"{key}.gpu", f"expected a number >= 0 (fractions share a GPU), got {short_repr(gpu)}")
    if 1 < gpu != int(gpu):
        raise fail(f"{key}.gpu", f"more than one GPU must be a whole number, got {gpu!r}")
    return Resources(cpu=cpu, gpu=gpu)


def _mapping(value: Any, key: str, fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {short_repr(value)}")
    return value


def _checked(config_class: type, name: str, value: Any, key: str, fail) -> Any:
    try:
        return check_value(config_class, name, value)
    except ConfigError as exc:
        raise fail(key, exc.message) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite int or float (not a bool): what a metric value or a numeric spec field must be."""
    return _is_number(value) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
