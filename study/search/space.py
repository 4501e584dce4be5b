"""Search beyond the grid: range axes, Optuna and random search, early-stopping schedulers.

A study spec may search some axes instead of listing them::

    search: optuna                 # grid | random | optuna
    axes:
      weight_decay: [0.0, 1.0e-4, 5.0e-4]    # a list: held on a grid, each value its own search
      lr: {loguniform: [1.0e-4, 1.0e-1]}      # a range: searched ({uniform: ...}, {int: ...}, {choice: [...]})
    num_samples: 20                # trials per grid point
    search_seed: 0                 # seeds the sampler (Optuna) or the random generator
    sampler: {tpe: {n_startup_trials: 5}}    # Optuna only: tpe (default), random, cmaes, gp, qmc
    scheduler: {asha: {grace_period: 50, reduction_factor: 3}}   # or median, or none

This module is the spec side (``parse_range``, ``parse_sampler``, ``parse_scheduler``,
``describe``; no Ray import, so validating a spec stays cheap); ``study.search.optuna_storage``
holds the Optuna storage and samplers, ``study.search.tune`` Ray Tune's side (``tune_search``
builds the ``search_alg``/``scheduler``/``num_samples`` of a ``TuneConfig``).

Conditioned search (grid axes next to range axes): each grid point is its own search.
``random`` uses Ray Tune's ``BasicVariantGenerator`` (``num_samples`` samples, each
expanded over the grid points with the same sampled values: a paired design).
``optuna`` runs one Optuna study per grid point (``study.search.tune.ConditionedOptunaSearch``, one Ray
Tune ``OptunaSearch`` per point, trials spread over the points in turn), all in one
SQLite file next to the Parquet store (``optuna.db``). A scheduler compares trials of the
same grid point only (``PerGridPointScheduler``): the best LR at one weight decay is not
stopped because another weight decay does better.

Persistence: the Optuna storage is the truth about the search. Every trial is created
there when it is asked for (with its Ray Tune trial id as the user attribute
``ray_trial_id``) and told its outcome when it ends; the sampler's state is saved in the
study (user attribute ``sampler_state``) after every ask. A resumed study re-opens the
same studies: ended trials are not run again, the sampler continues from its saved
state, and a trial the driver lost (created in Optuna, unknown to Ray Tune's saved
state) is run again with the same parameters.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from study.search.optuna_storage import OPTUNA_DB, SAMPLERS, build_sampler, study_names

SEARCHES = ("grid", "random", "optuna")
RANGE_KINDS = ("loguniform", "uniform", "int", "choice")
SCHEDULERS = ("asha", "median")
# Ray Tune's own result keys a scheduler may count time in besides the trainable's metrics
RAY_TIME_KEYS = ("training_iteration", "time_total_s")
# a trial's length in its own units: the config field that sets it, per time attribute
LENGTH_FIELDS = {"step": "steps", "epoch": "epochs"}


@dataclass(frozen=True)
class Range:
    """A searched axis. ``kind`` is loguniform, uniform, int (both ends included) or choice."""

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple = ()

    def to_yaml(self) -> dict:
        return {self.kind: list(self.values) if self.kind == "choice" else [self.low, self.high]}

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {', '.join(map(str, self.values))}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]"


def parse_range(config_class: type, axis: str, value: Any, fail: Callable[[str, str], Exception]) -> Range:
    """A range axis ``{loguniform: [lo, hi]}`` (``uniform``, ``int``, ``choice: [...]``), checked
    against the config field's type and bounds."""
    from trainables.registry import ConfigError, check_value, choices

    key = f"axes.{axis}"
    if len(value) != 1 or next(iter(value)) not in RANGE_KINDS:
        raise fail(key, f"a range is one of {', '.join('{' + k + ': ...}' for k in RANGE_KINDS)}, got {value!r}")
    kind, bounds = next(iter(value.items()))
    key = f"{key}.{kind}"

    def checked(v, where):
        try:
            return check_value(config_class, axis, v)
        except ConfigError as exc:
            raise fail(where, exc.message) from None

    field_type = typing.get_type_hints(config_class)[axis]
    numeric = choices(config_class, axis) is None and field_type in (int, float)
    if kind == "choice":
        if not isinstance(bounds, list) or len(bounds) < 2:
            raise fail(key, f"expected a list of at least 2 values, got {bounds!r} (one value: fix it in config)")
        values = tuple(checked(v, f"{key}[{i}]") for i, v in enumerate(bounds))
        if len(set(map(repr, values))) != len(values):
            raise fail(key, f"repeated values in {bounds!r}")
        return Range("choice", values=values)
    if not numeric:
        raise fail(key, f"{axis} is not a number; search it with {{choice: [...]}}")
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        raise fail(key, f"expected [low, high], two numbers, got {bounds!r}")
    low, high = bounds
    if not all(math.isfinite(b) for b in bounds):
        raise fail(key, f"expected finite bounds, got {bounds!r}")
    if low >= high:
        raise fail(key, f"low {low!r} >= high {high!r}; a range needs low < high")
    if kind == "loguniform" and low <= 0:
        raise fail(key, f"a log range must be positive, got [{low!r}, {high!r}]; use uniform, or a low > 0")
    if kind == "int":
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            raise fail(key, f"expected two integers, got {bounds!r}")
    elif field_type is int:
        raise fail(key, f"{axis} is an integer; search it with {{int: [low, high]}}")
    low, high = checked(low, f"{key}[0]"), checked(high, f"{key}[1]")  # the field's own bounds (lr > 0, ...)
    return Range(kind, low=low, high=high)


def parse_sampler(value: Any, fail) -> dict | None:
    """``tpe`` or ``{tpe: {n_startup_trials: 5}}`` → ``{"tpe": {...}}``; options are checked
    against the Optuna sampler's constructor (the sampler is built once, here)."""
    if value is None:
        return None
    name, options = _named_options(value, "sampler", SAMPLERS, fail)
    if "seed" in options:
        raise fail("sampler.seed", "set the search's seed with search_seed (it seeds the sampler)")
    build_sampler({name: options}, 0, fail)
    return {name: options}


def _named_options(value, key, known, fail) -> tuple[str, dict]:
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, dict) and len(value) == 1:
        name, options = next(iter(value.items()))
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise fail(f"{key}.{name}", f"expected a mapping of options, got {options!r}")
    else:
        raise fail(key, f"expected a name or {{name: {{options}}}}, got {value!r}")
    if name not in known:
        raise fail(key, f"unknown {key} {name!r}; choose one of {', '.join(known)}")
    return name, dict(options)


def trial_length(time_attr: str, config_class: type, config: Mapping, axes: Mapping, ranges: Mapping) -> float | None:
    """How long one trial runs in units of ``time_attr`` (``step`` → ``steps``, ``epoch`` → ``epochs``),
    from the config, the axes or the field default; None where the spec does not say."""
    field = LENGTH_FIELDS.get(time_attr)
    if field is None:
        return None
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if field not in fields:
        return None
    if field in config:
        return config[field]
    if field in axes:
        return max(axes[field])
    if field in ranges:
        r = ranges[field]
        return max(r.values) if r.kind == "choice" else r.high
    return fields[field].default


ASHA_OPTIONS = ("metric", "time_attr", "max_t", "grace_period", "reduction_factor", "brackets", "stop_last_trials")
MEDIAN_OPTIONS = ("metric", "time_attr", "grace_period", "min_samples_required", "min_time_slice")


def parse_scheduler(value: Any, *, info, config_class: type, config: Mapping, axes: Mapping, ranges: Mapping,
                    metric: Any, fail) -> dict | None:
    """``asha`` / ``median`` / ``{asha: {options}}`` → ``{"asha": {every option resolved}}``.

    ASHA (Ray Tune's ``AsyncHyperBandScheduler``): ``time_attr`` (default: ``step`` when
    the trainable reports it and has a ``steps`` field, ``epoch`` likewise, else
    ``training_iteration``), ``max_t`` (default: the trial's length in those units),
    ``grace_period`` (default: max_t / reduction_factor², at least 1),
    ``reduction_factor`` (4), ``brackets`` (1), ``stop_last_trials`` (true).
    Median (``MedianStoppingRule``): ``time_attr``, ``grace_period`` (default: a quarter of
    the trial's length), ``min_samples_required`` (3), ``min_time_slice`` (default: never
    pause a trial; Ray's 0 would pause trials that cannot yet be compared).
    Both: ``metric``, the reported metric the scheduler compares trials on, in the study's
    mode (default: the study's metric). Under a cosine schedule the loss mid-run ranks LRs
    otherwise than the final loss does; a metric that predicts the final one earlier (e.g. the
    LM's ``ema_val_loss``, of a parameter average) makes early stopping decide on it, while the
    search still optimises the study's metric. Given only when set.
    """
    if value is None or value == "none":
        return None
    name, options = _named_options(value, "scheduler", SCHEDULERS, fail)
    if not metric:
        raise fail("scheduler", f"{name} compares trials on a metric; set metric: (trainable {info.name} reports "
                   f"{', '.join(info.metrics)})")
    allowed = ASHA_OPTIONS if name == "asha" else MEDIAN_OPTIONS
    for key in options:
        if key not in allowed:
            raise fail(f"scheduler.{name}.{key}", f"unknown option; {name} takes {', '.join(allowed)}")

    def number(key, *, integer=False, minimum=None, above=None):
        v = options[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise fail(f"scheduler.{name}.{key}", f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if not math.isfinite(v) and key != "min_time_slice":
            raise fail(f"scheduler.{name}.{key}", f"expected a finite number, got {v!r}")
        if minimum is not None and v < minimum:
            raise fail(f"scheduler.{name}.{key}", f"must be >= {minimum}, got {v!r}")
        if above is not None and v <= above:
            raise fail(f"scheduler.{name}.{key}", f"must be > {above}, got {v!r}")
        return v

    reported = set(info.metrics)
    resolved: dict[str, Any] = {}
    if "metric" in options:
        if not isinstance(options["metric"], str) or options["metric"] not in reported:
            raise fail(f"scheduler.{name}.metric", f"{options['metric']!r} is not reported by trainable {info.name}; "
                       f"use one of {', '.join(info.metrics)}")
        resolved["metric"] = options["metric"]
    default_attr = next((attr for attr, field in LENGTH_FIELDS.items()
                         if attr in reported and trial_length(attr, config_class, config, axes, ranges)),
                        "training_iteration")
    time_attr = options.get("time_attr", default_attr)
    if time_attr not in reported and time_attr not in RAY_TIME_KEYS:
        raise fail(f"scheduler.{name}.time_attr", f"{time_attr!r} is not reported by trainable {info.name}; use "
                   f"{', '.join(RAY_TIME_KEYS)} or one of {', '.join(info.metrics)}")
    length = trial_length(time_attr, config_class, config, axes, ranges)
    resolved["time_attr"] = time_attr
    if name == "asha":
        rf = number("reduction_factor", above=1) if "reduction_factor" in options else 4
        if "max_t" in options:
            max_t = number("max_t", above=0)
        elif length is not None:
            max_t = length
        else:
            raise fail(f"scheduler.{name}.max_t", f"give the trial's length in {time_attr} units (no config field "
                       f"says how long a trial runs in {time_attr})")
        grace = number("grace_period", above=0) if "grace_period" in options else max(1, int(max_t // rf ** 2))
        if grace > max_t:
            raise fail(f"scheduler.{name}.grace_period", f"{grace!r} > max_t {max_t!r}: no trial could be stopped")
        brackets = number("brackets", integer=True, minimum=1) if "brackets" in options else 1
        stop_last = options.get("stop_last_trials", True)
        if not isinstance(stop_last, bool):
            raise fail(f"scheduler.{name}.stop_last_trials", f"expected true or false, got {stop_last!r}")
        resolved.update(max_t=max_t, grace_period=grace, reduction_factor=rf, brackets=brackets,
                        stop_last_trials=stop_last)
    else:
        if "grace_period" in options:
            grace = number("grace_period", minimum=0)
        elif length is not None:
            grace = max(1, int(length // 4))
        else:
            raise fail(f"scheduler.{name}.grace_period", f"give the time (in {time_attr}) before a trial may be "
                       f"stopped (no config field says how long a trial runs in {time_attr})")
        resolved.update(grace_period=grace,
                        min_samples_required=(number("min_samples_required", integer=True, minimum=1)
                                              if "min_samples_required" in options else 3),
                        min_time_slice=(number("min_time_slice", minimum=0) if "min_time_slice" in options
                                        else float("inf")))
    return {name: resolved}


def rungs(scheduler: Mapping[str, dict]) -> list[float]:
    """The milestones (in ``time_attr`` units) at which ASHA's first bracket compares trials."""
    name, o = next(iter(scheduler.items()))
    if name != "asha":
        return []
    count = int(math.log(o["max_t"] / o["grace_period"]) / math.log(o["reduction_factor"]) + 1)
    return [o["grace_period"] * o["reduction_factor"] ** k for k in range(count)]


def describe(spec) -> list[str]:
    """Lines for a dry run of a search: the searched axes, the grid points, the budget, the scheduler."""
    lines = []
    points = spec.grid()
    if spec.search != "grid":
        sampler = ""
        if spec.search == "optuna":
            name, options = next(iter(spec.sampler.items()))
            sampler = f", sampler {name}" + (f" {options}" if options else "")
        lines.append(f"search {spec.search}{sampler}, seed {spec.search_seed}; searched axes:")
        for axis, r in spec.ranges.items():
            lines.append(f"  {axis}: {r.describe()}")
        grid_axes = ", ".join(spec.axes) or "none"
        lines.append(f"grid axes held fixed per search: {grid_axes}; {len(points)} grid point(s), each its own search")
        lines.append(f"budget: {spec.num_samples} trials per grid point × {len(points)} = {spec.num_trials} trials")
        if spec.search == "optuna":
            lines.append(f"Optuna studies (in STORE/{spec.name}/{OPTUNA_DB}): "
                         + ", ".join(study_names(spec)))
    if spec.scheduler:
        name, options = next(iter(spec.scheduler.items()))
        text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())
        lines.append(f"scheduler {name}: {text}" + (" (per grid point)" if spec.search != "grid" and spec.axes else ""))
        milestones = rungs(spec.scheduler)
        if milestones:
            lines.append(f"  ASHA rungs at {options['time_attr']} " + ", ".join(f"{m:g}" for m in milestones)
                         + f": about 1/{options['reduction_factor']:g} of the trials pass each")
    return lines
