"""Every use of a non-public Ray Tune or Optuna attribute, in one place.

Ray Tune and Optuna leave a few things we need without a public API: swapping the callbacks,
searcher and scheduler of a restored ``Tuner`` (ray-project/ray#41364), the Optuna study and
trials behind Ray Tune's ``OptunaSearch``, an existing Optuna trial by number, and an ASHA or
median-stopping scheduler's history (Ray Tune does not save a scheduler's state, so a
resumed study replays the stored reports into it). Each accessor here fails loudly with
``InternalsChanged`` when the attribute it needs is gone, and ``tests/test_internals.py``
names every attribute against the installed versions: an upgrade that drops one fails
there, not silently in a resumed study. pyproject bounds ray and optuna above at the
versions these tests passed on.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import optuna


class InternalsChanged(RuntimeError):
    """A Ray Tune or Optuna version no longer has an attribute this project relies on."""


def _get(obj: Any, name: str, what: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise InternalsChanged(
            f"{type(obj).__module__}.{type(obj).__name__} has no attribute {name!r} ({what}); this version of "
            f"Ray Tune / Optuna is not supported: install the versions pyproject.toml names") from None


# ---------------------------------------------------------------- a restored Tuner (ray.tune.Tuner)

def _local_tuner(tuner) -> Any:
    return _get(tuner, "_local_tuner", "the local TunerInternal behind a Tuner")


def is_remote_tuner(tuner) -> bool:
    """A Tuner driven through Ray Client (``ray://``) has no local tuner to change."""
    return _local_tuner(tuner) is None


def replace_callbacks(tuner, callbacks: list) -> None:
    """Give a restored Tuner this driver's callbacks (Tune would use the pickled ones of the first run)."""
    _local_tuner(tuner).get_run_config().callbacks = callbacks


def replace_search(tuner, search: Mapping[str, Any]) -> None:
    """Give a restored Tuner this driver's ``search_alg`` / ``scheduler`` (Ray Tune then restores the
    searcher's saved state into it from the experiment folder)."""
    config = _get(_local_tuner(tuner), "_tune_config", "the TuneConfig a restored Tuner runs with")
    for key in ("search_alg", "scheduler"):
        if key in search:
            _get(config, key, f"TuneConfig.{key}")
            setattr(config, key, search[key])


# ---------------------------------------------------------------- Ray Tune's OptunaSearch

def optuna_study(search) -> optuna.Study:
    """The Optuna study behind a Ray Tune ``OptunaSearch``."""
    return _get(search, "_ot_study", "OptunaSearch's Optuna study")


def optuna_trials(search) -> dict[str, optuna.trial.Trial]:
    """Ray Tune trial id → the live Optuna trial of an ``OptunaSearch``."""
    return _get(search, "_ot_trials", "OptunaSearch's map of Ray trial ids to Optuna trials")


def mark_completed(search, trial_id: str) -> None:
    """Tell an ``OptunaSearch`` that a trial was told to Optuna (it would otherwise tell it again)."""
    _get(search, "_completed_trials", "OptunaSearch's set of told trials").add(trial_id)


# ---------------------------------------------------------------- Optuna

def trial_by_number(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """A live handle on an existing (running) trial of ``study``: Optuna makes one only through ``ask``."""
    frozen = study.get_trials(deepcopy=False)[number]
    return optuna.trial.Trial(study, _get(frozen, "_trial_id", "a FrozenTrial's storage id"))


# ---------------------------------------------------------------- schedulers' history (ASHA, median rule)

def scheduler_time_attr(scheduler) -> str:
    """The result key an ASHA or median-stopping scheduler counts progress in."""
    return _get(scheduler, "_time_attr", "a scheduler's time attribute")


def asha_knows(scheduler, trial_id: str) -> bool:
    """Whether an ASHA scheduler has a trial in its bookkeeping (one restored without ``on_trial_add`` has not)."""
    return trial_id in _get(scheduler, "_trial_info", "ASHA's trial → bracket map")


def replay_asha(scheduler, trial, results: Iterable[Mapping], metric: str) -> None:
    """Feed a stored trial's results to ASHA's bracket, as if they had just arrived."""
    bracket = _get(scheduler, "_brackets", "ASHA's brackets")[0]
    sign = _get(scheduler, "_metric_op", "ASHA's metric sign")
    time_attr = scheduler_time_attr(scheduler)
    for result in results:
        bracket.on_result(trial, result[time_attr], sign * result[metric])


def replay_median(scheduler, trial, results: list[Mapping]) -> None:
    """Give the median stopping rule a stored trial's results."""
    _get(scheduler, "_results", "MedianStoppingRule's results per trial")[trial] = list(results)


def unbuffered(scheduler) -> None:
    """Ask Ray Tune to pass every result to the scheduler as it comes (stopping decisions need each one)."""
    _get(scheduler, "_supports_buffered_results", "TrialScheduler's buffered-results flag")
    scheduler._supports_buffered_results = False
