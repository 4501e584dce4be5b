"""What trainables exist, what config each accepts, and how to check a config.

A trainable's config is a frozen dataclass of plain typed fields (no torch here, so
that validating a study spec never imports torch). ``Literal`` fields are choices;
``param(..., gt=0)`` adds a bound. The same dataclass is what the training code
builds from the flat config dict that Ray Tune hands a trial.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping


class ConfigError(ValueError):
    """A config value a trainable cannot accept; ``key`` names the offending field."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def param(default: Any, *, gt: float | None = None, ge: float | None = None,
          le: float | None = None, help: str = "") -> Any:
    """A config field with optional numeric bounds and a one-line description."""
    return dataclasses.field(default=default, metadata={"gt": gt, "ge": ge, "le": le, "help": help})


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    """A config class's fields and resolved type hints (resolving hints costs ~2 ms a call; a
    grid checks every value of every trial's config)."""
    return {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)


def _check_value(cls: type, name: str, value: Any) -> Any:
    """Return ``value`` converted to the field's type, or raise ConfigError."""
    fields, hints = _fields(cls)
    field, hint = fields[name], hints[name]
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(name, f"unknown value {value!r}; choose one of {', '.join(map(str, choices))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(name, f"expected a finite number, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}")
        return value
    else:  # pragma: no cover - a config dataclass with an unsupported field type
        raise TypeError(f"{cls.__name__}.{name}: unsupported field type {hint!r}")
    meta = field.metadata
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise ConfigError(name, f"must be > {meta['gt']}, got {value!r}")
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise ConfigError(name, f"must be >= {meta['ge']}, got {value!r}")
    if meta.get("le") is not None and not value <= meta["le"]:
        raise ConfigError(name, f"must be <= {meta['le']}, got {value!r}")
    return value


def check_value(cls: type, name: str, value: Any) -> Any:
    """Check one value of field ``name`` of config class ``cls`` (unknown names raise)."""
    names = config_fields(cls)
    if name not in names:
        raise ConfigError(name, f"unknown config key for {cls.__name__}; known keys: {', '.join(names)}")
    return _check_value(cls, name, value)


def config_fields(cls: type) -> list[str]:
    return list(_fields(cls)[0])


def choices(cls: type, name: str) -> tuple | None:
    """The allowed values of a ``Literal`` field, or None for a free field."""
    hint = _fields(cls)[1][name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def build_config(cls: type, values: Mapping[str, Any]):
    """Build ``cls`` from a flat mapping, checking every value; unknown keys raise."""
    checked = {name: check_value(cls, name, value) for name, value in values.items()}
    return cls(**checked)


@dataclass(frozen=True)
class TrainableInfo:
    """A registered trainable.

    Args:
        name: the name a study spec uses (``trainable: lm``).
        config: ``"module:Class"`` of its config dataclass (torch-free module).
        run: ``"module:function"`` of ``run(config: dict, session) -> None``.
        metrics: the metrics it reports, for spec validation, analysis and the store: their
            names, or (the full metric schema) a mapping of name → Arrow type name (``int64``,
            ``double``); every metric part file of a study then has all of these columns.
        default_metric: the metric a study optimises unless it says otherwise.
        default_mode: ``"min"`` or ``"max"`` for ``default_metric``.
        description: one line for ``study list``.
        config_metrics: ``"module:function"`` of ``f(config: dict) -> {name: type}``: the metrics
            whose names depend on the config (the vision trainable's norm per layer).
        config_metrics_keys: the config keys ``config_metrics`` depends on.
    """

    name: str
    config: str
    run: str
    metrics: tuple[str, ...] | Mapping[str, str]
    default_metric: str
    default_mode: str = "min"
    description: str = ""
    config_metrics: str = ""
    config_metrics_keys: tuple[str, ...] = ()
    metric_types: Mapping[str, str] = dataclasses.field(default_factory=dict, init=False)

    def __post_init__(self):
        if isinstance(self.metrics, Mapping):  # names with their types: kept apart, `metrics` stays the names
            object.__setattr__(self, "metric_types", dict(self.metrics))
            object.__setattr__(self, "metrics", tuple(self.metrics))

    def metric_schema(self, configs: Iterable[dict] = ()) -> dict[str, str]:
        """Name → Arrow type of every metric it reports under any of ``configs`` ({} when
        its metrics are declared without types)."""
        schema = dict(self.metric_types)
        if schema and self.config_metrics:
            per_config = load_object(self.config_metrics)
            for config in configs:
                schema.update(per_config(config))
        return schema

    def config_class(self) -> type:
        return load_object(self.config)

    def run_function(self) -> Callable[[dict, Any], None]:
        return load_object(self.run)


def load_object(path: str) -> Any:
    """The object a ``"module:attribute"`` path names (imported on first use)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(dict):
    """Name → info of the registered trainables of one kind; ``find`` of an unknown name is a
    ``ConfigError`` at ``key`` that lists the known ones."""

    def __init__(self, key: str, unknown: str, listed: str):
        super().__init__()
        self.key, self.unknown, self.listed = key, unknown, listed  # ``unknown`` formats ``{name!r}``

    def add(self, info: Any) -> Any:
        self[info.name] = info
        return info

    def find(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            problem = self.unknown.format(name=name)
            raise ConfigError(self.key, f"{problem}; {self.listed}: {', '.join(sorted(self))}") from None


TRAINABLES = Registry("trainable", "unknown trainable {name!r}", "known")


def register(info: TrainableInfo) -> TrainableInfo:
    return TRAINABLES.add(info)


def get_trainable(name: str) -> TrainableInfo:
    return TRAINABLES.find(name)
