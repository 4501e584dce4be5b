"""Experiment trackers: the spec's ``loggers`` key, turned into Ray Tune's own logger callbacks.

::

    loggers: [csv, tensorboard]            # names only, every option at its default
    loggers:                               # or name -> options
      mlflow: {tracking_uri: file:///data/mlruns, experiment_name: wd-lm}
      wandb: {project: wd-study, mode: offline}

Each tracker is an optional extra (``pip install 'wd-study[mlflow]'``); the spec is refused
(one line, exit 2, before Ray starts) when a named tracker's library is missing. Ray Tune's
automatic CSV/JSON/TensorBoard copies of every result are off (``AUTO_LOGGERS_ENV``);
``csv`` and ``tensorboard`` here ask for the ones wanted. docs/trackers.md says what goes where.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from study.errors import key_label, short_repr

# Ray Tune 2.60 has no public argument for its automatic loggers, only this variable, read by
# Tuner.fit on the driver (ray.tune.utils.callback._create_default_callbacks).
AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


@dataclass(frozen=True)
class Tracker:
    """A logger the spec may name. Args: module: the library it needs; extra: the pyproject extra
    that installs it; options: option name -> a check returning an error text or None."""

    module: str
    extra: str
    options: Mapping[str, Callable[[Any], str | None]]


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"expected a non-empty string, got {short_repr(value)}"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {short_repr(value)}"


def _texts(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else f"expected a list of strings, got {short_repr(value)}"


def _string_map(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return None if ok else f"expected a mapping of strings to strings, got {short_repr(value)}"


def _wandb_mode(value: Any) -> str | None:
    return None if value in ("online", "offline", "disabled") else \
        f"expected online, offline or disabled, got {short_repr(value)}"


TRACKERS = {
    "csv": Tracker(module="", extra="", options={}),
    # Ray's TBXLoggerCallback writes with tensorboardX; tensorboard reads and shows the files.
    "tensorboard": Tracker(module="tensorboardX", extra="tensorboard", options={}),
    "mlflow": Tracker(module="mlflow", extra="mlflow", options={
        "tracking_uri": _text, "experiment_name": _text, "tags": _string_map, "save_artifact": _flag}),
    # No api_key option: the spec is stored in spec.yaml; W&B reads WANDB_API_KEY or `wandb login`.
    "wandb": Tracker(module="wandb", extra="wandb", options={
        "project": _text, "group": _text, "entity": _text, "mode": _wandb_mode, "dir": _text,
        "tags": _texts, "notes": _text}),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported: importing mlflow takes seconds)."""
    return not module or importlib.util.find_spec(module) is not None


def parse_loggers(value: Any, fail) -> dict[str, dict[str, Any]]:
    """The spec's ``loggers`` (a list of names, or name -> options) as name -> options;
    ``fail(key, message)`` builds the SpecError of the first problem."""
    if value is None:
        return {}
    if isinstance(value, list):
        if not all(isinstance(name, str) for name in value):
            raise fail("loggers", f"expected tracker names, got {short_repr(value)}")
        if len(set(value)) != len(value):
            raise fail("loggers", f"a tracker named twice in {short_repr(value)}")
        value = {name: {} for name in value}
    if not isinstance(value, dict):
        raise fail("loggers", f"expected a list of trackers ({', '.join(TRACKERS)}) or a mapping of tracker "
                              f"to options, got {short_repr(value)}")
    loggers = {}
    for name, options in value.items():
        tracker = TRACKERS.get(name) if isinstance(name, str) else None
        if tracker is None:
            raise fail(f"loggers.{key_label(name)}", f"unknown tracker; choose from {', '.join(TRACKERS)}")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise fail(f"loggers.{name}", f"expected a mapping of options, got {short_repr(options)}")
        for option, option_value in options.items():
            check = tracker.options.get(option) if isinstance(option, str) else None
            if check is None:
                known = ", ".join(tracker.options) or "none"
                raise fail(f"loggers.{name}.{key_label(option)}", f"unknown option; {name} takes: {known}")
            problem = check(option_value)
            if problem:
                raise fail(f"loggers.{name}.{key_label(option)}", problem)
        if not installed(tracker.module):
            raise fail(f"loggers.{name}", f"the {tracker.module} library is not installed; install it with "
                                          f"pip install 'wd-study[{tracker.extra}]'")
        loggers[name] = dict(options)
    return loggers


def tracker_callbacks(loggers: Mapping[str, Mapping[str, Any]], study_name: str) -> list:
    """Ray Tune logger callbacks for the spec's ``loggers`` (validated by ``parse_loggers``)."""
    callbacks = []
    for name, options in loggers.items():
        options = dict(options)
        if name == "csv":
            from ray.tune.logger import CSVLoggerCallback

            callbacks.append(CSVLoggerCallback())
        elif name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            options.setdefault("experiment_name", study_name)
            callbacks.append(MLflowLoggerCallback(**options))
        elif name == "wandb":
            callbacks.append(_wandb_callback(options, study_name))
    return callbacks


def _wandb_callback(options: dict, study_name: str):
    from study.wandb_logger import StudyWandbCallback

    options.setdefault("project", os.environ.get("WANDB_PROJECT") or "wd-study")
    options.setdefault("group", study_name)
    # W&B's logging actors run in Ray workers, which do not see the driver's environment.
    for option, variable in (("mode", "WANDB_MODE"), ("dir", "WANDB_DIR")):
        if option not in options and os.environ.get(variable):
            options[option] = os.environ[variable]
    if "dir" in options:
        os.makedirs(options["dir"], exist_ok=True)
    return StudyWandbCallback(**options)


__all__ = ["TRACKERS", "AUTO_LOGGERS_ENV", "parse_loggers", "tracker_callbacks", "installed"]
