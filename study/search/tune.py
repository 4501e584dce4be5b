"""Ray Tune's side of a search: the searchers and schedulers a study spec asks for.

``tune_search(spec, store)`` gives the ``TuneConfig`` arguments (``search_alg``,
``scheduler``, ``num_samples``) of a spec: nothing for a plain grid; Ray Tune's
``BasicVariantGenerator`` (seeded) for ``random``; ``ConditionedOptunaSearch`` (one Ray
Tune ``OptunaSearch`` per grid point, its Optuna study in SQLite next to the store) for
``optuna``; and a ``PerGridPointScheduler`` around ASHA or the median stopping rule. See
``study.search.space`` for the spec keys and the design. Imported only by the driver.
"""

from __future__ import annotations

import base64
import math
import pickle
import time
from typing import Any, Mapping

import optuna
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from study.internals import (asha_knows, mark_completed, optuna_study, optuna_trials, replay_asha, replay_median,
                             scheduler_time_attr, trial_by_number, unbuffered)
from study.spec import is_finite_number
from study.search.optuna_storage import (STATUS_ATTR, OptunaLocation, build_sampler, derived_seed, quiet_optuna,
                                         storage, study_names)
from study.search.space import Range
from study.store import config_key
from trainables.session import STATUS_KEY

RUNNING, WAITING = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING


# ---------------------------------------------------------------- search spaces


def tune_domain(r: Range):
    """A range as a Ray Tune domain (``random`` search)."""
    if r.kind == "loguniform":
        return tune.loguniform(r.low, r.high)
    if r.kind == "uniform":
        return tune.uniform(r.low, r.high)
    if r.kind == "int":
        return tune.randint(r.low, r.high + 1)  # Tune's upper bound is exclusive; ours is included
    return tune.choice(list(r.values))


def optuna_distribution(r: Range):
    """A range as an Optuna distribution (``optuna`` search)."""
    if r.kind == "loguniform":
        return optuna.distributions.FloatDistribution(r.low, r.high, log=True)
    if r.kind == "uniform":
        return optuna.distributions.FloatDistribution(r.low, r.high)
    if r.kind == "int":
        return optuna.distributions.IntDistribution(r.low, r.high)
    return optuna.distributions.CategoricalDistribution(list(r.values))


def search_param_space(spec) -> dict:
    """Ray Tune's ``param_space`` of a search: the fixed values, plus for ``random`` the grid
    axes (``grid_search``) and the ranges (Tune domains); Optuna suggests both itself."""
    if spec.search == "optuna":
        return dict(spec.config)
    return {**spec.config, **{a: tune.grid_search(list(v)) for a, v in spec.axes.items()},
            **{a: tune_domain(r) for a, r in spec.ranges.items()}}


def uneven_points(spec) -> list[dict]:
    """An uneven grid's trials for Ray Tune, in grid order: each point's axis values and the value
    of every key a case sets (the case's, else the fixed or default one: a key Tune samples is
    never left to chance)."""
    defaults = _defaults(spec)
    return [{**{key: config.get(key, getattr(defaults, key)) for key in spec.case_keys}, **point}
            for point, config in zip(spec.grid(), spec.trial_configs())]


def uneven_param_space(spec) -> dict:
    """Ray Tune's ``param_space`` of an uneven grid: the fixed values, and each axis, and each key
    a case sets, as a choice of its values; ``BasicVariantGenerator(points_to_evaluate=…)`` then
    gives Tune the points one by one (Tune's grid is a full Cartesian product)."""
    defaults = _defaults(spec)
    # the axes last, as in an even grid (the store keeps this order in its config columns)
    return {**spec.config, **{key: tune.choice(list(spec.values_of(key, getattr(defaults, key))))
                              for key in spec.case_keys},
            **{a: tune.choice(list(v)) for a, v in spec.axes.items()}}


def _defaults(spec):
    """The trainable's default config (the values of keys neither fixed nor set by a case)."""
    from trainables.registry import get_trainable

    return get_trainable(spec.trainable).config_class()()


# ---------------------------------------------------------------- Optuna, one study per grid point


class PointSearch(OptunaSearch):
    """Ray Tune's ``OptunaSearch`` for one grid point, told outcomes in the store's terms.

    Intermediate values are the finite metric values at the scheduler's time unit
    (``step`` where reported); a trial that finished is COMPLETE with its last value; one
    the scheduler stopped, or that diverged, is PRUNED (Optuna's samplers rank pruned
    trials below complete ones, by how far they got); one that failed is FAIL. Its
    ``status`` user attribute holds the store's status.
    """

    def attach(self, trial_id: str, number: int) -> None:
        """Map a Ray Tune trial to an existing Optuna trial (one Ray Tune resumes)."""
        study = optuna_study(self)
        optuna_trials(self)[trial_id] = trial_by_number(study, number)
        self._steps()[trial_id] = set(study.get_trials(deepcopy=False)[number].intermediate_values)

    def _steps(self) -> dict[str, set]:
        if not hasattr(self, "_reported_steps"):
            self._reported_steps = {}
        return self._reported_steps

    def report(self, trial_id: str, value: float, step: int) -> None:
        """An intermediate value, once per step (a restored trial repeats steps)."""
        trial = optuna_trials(self).get(trial_id)
        seen = self._steps().setdefault(trial_id, set())
        if trial is not None and math.isfinite(value) and step not in seen:
            trial.report(value, step)
            seen.add(step)

    def finish(self, trial_id: str, status: str, value: float | None) -> None:
        trial, study = optuna_trials(self).get(trial_id), optuna_study(self)
        if trial is None or study.get_trials(deepcopy=False)[trial.number].state != RUNNING:
            return  # told before (a driver that died after telling Optuna, or Ray Tune re-ran it)
        trial.set_user_attr(STATUS_ATTR, status)
        if status == "finished" and value is not None and math.isfinite(value):
            study.tell(trial, value)
        elif status in ("stopped", "diverged", "finished"):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        mark_completed(self, trial_id)


class ConditionedOptunaSearch(Searcher):
    """One Optuna study per grid point, as one Ray Tune searcher.

    Each suggestion goes to the grid point with the fewest trials so far (ties: grid
    order), so the searches advance in turn; a point stops at ``num_samples`` trials, and
    the searcher says ``FINISHED`` when every point has. Every point's sampler starts
    from the same ``seed``: their first random trials sample the same values (a paired
    design across the grid).

    Args:
        points: the grid points (dicts of grid-axis values); ``[{}]`` without grid axes.
        names: the Optuna study name of each point.
        ranges: axis → ``Range``, the searched axes.
        fixed: the spec's fixed config (to recognise a trial's full config).
        metric, mode: what the searches optimise.
        num_samples: trials per grid point.
        sampler: the spec's ``{name: options}``; seeded with ``seed`` on a fresh study.
        time_attr: the result key whose value is the step of an intermediate value.
        url: the Optuna storage URL (SQLite).
        ended: config key → (status, value) of trials the store has as ended: a resume tells
            Optuna those it never heard of instead of running them again.
        meta: stored in each study's ``wd_study`` user attribute.

    Ray Tune's ``metric`` of this searcher is left unset on purpose: Tune would then require
    the metric in every result, and a diverged trial's last report has none.
    """

    def __init__(self, *, points: list[dict], names: list[str], ranges: Mapping[str, Range], fixed: Mapping,
                 metric: str, mode: str, num_samples: int, sampler: Mapping, seed: int, time_attr: str, url: str,
                 ended: Mapping[str, tuple] | None = None, meta: Mapping | None = None):
        super().__init__(metric=None, mode=None)
        self.points, self.names, self.ranges, self.fixed = list(points), list(names), dict(ranges), dict(fixed)
        self.objective, self.direction = metric, mode
        self.num_samples, self.sampler, self.seed, self.time_attr = num_samples, dict(sampler), seed, time_attr
        self.url, self.ended, self.meta = url, dict(ended or {}), dict(meta or {})
        self.trials: dict[str, tuple[int, int, str]] = {}  # Ray trial id -> (point, Optuna number, config key)
        self.known: set[str] = set()  # Ray trial ids of the Tune state this run restored
        self.last_value: dict[str, float] = {}
        self._searches: list[PointSearch] | None = None
        self._used: list[int] = []

    def __getstate__(self):  # Ray Tune pickles searchers (tuner.pkl): storages and samplers stay behind
        state = dict(self.__dict__)
        state.update(_searches=None, _used=[])
        return state

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # configured at construction; the param_space holds fixed values only

    # -- opening the studies, and what a resume finds in them

    def _open(self) -> list[PointSearch]:
        if self._searches is not None:
            return self._searches
        shared = storage(self.url)
        existing = {s.study_name for s in shared.get_all_studies()}
        space = {axis: optuna_distribution(r) for axis, r in self.ranges.items()}
        searches, used = [], []
        with quiet_optuna():
            for index, (point, name) in enumerate(zip(self.points, self.names)):
                search = PointSearch(space, metric=self.objective, mode=self.direction,
                                     sampler=self._sampler_for(shared, name, existing), study_name=name,
                                     storage=shared)
                if name not in existing:
                    optuna_study(search).set_user_attr("wd_study", {
                        **self.meta, "grid_point": point, "metric": self.objective, "mode": self.direction,
                        "space": {a: r.to_yaml() for a, r in self.ranges.items()},
                        "num_samples": self.num_samples, "seed": self.seed})
                used.append(self._reconcile(index, search))
                searches.append(search)
        self._searches, self._used = searches, used
        return searches

    def _sampler_for(self, shared, name: str, existing: set[str]):
        """The saved sampler when it saw every trial of the study; else a fresh one, seeded from
        the search seed and the number of trials (a resume never replays the random draws of
        trials that exist)."""
        if name not in existing:
            return build_sampler(self.sampler, self.seed)
        study = optuna.load_study(study_name=name, storage=shared)
        saved = study.user_attrs.get("sampler_state") or {}
        trials = len(study.get_trials(deepcopy=False))
        if saved.get("trials") == trials:
            try:
                return pickle.loads(base64.b64decode(saved["pickle"]))
            except Exception:  # e.g. another Optuna version: a reseeded sampler continues the search
                pass
        return build_sampler(self.sampler, derived_seed(self.seed, trials))

    def _reconcile(self, index: int, search: PointSearch) -> int:
        """Set up a (resumed) study's trials; return how many count against the budget.

        Trials Ray Tune resumes keep their Optuna trial. Trials Optuna has as running that
        Ray Tune does not know were lost with a driver: the store's outcome is told where
        the store has one; otherwise the trial is marked ``lost`` (FAIL, not counted) and
        queued to run again with the same parameters.
        """
        study = optuna_study(search)
        used = 0
        for frozen in study.get_trials(deepcopy=False):
            if frozen.user_attrs.get("lost") or frozen.state == WAITING:
                continue  # a lost trial does not count; a queued one is asked for next
            used += 1
            if frozen.state != RUNNING:
                continue
            ray_id = frozen.user_attrs.get("ray_trial_id")
            key = self._config_key(index, frozen.params)
            if ray_id in self.known:
                search.attach(ray_id, frozen.number)
                self.trials[ray_id] = (index, frozen.number, key)
            elif key in self.ended:
                search.attach(f"lost-{frozen.number}", frozen.number)
                search.finish(f"lost-{frozen.number}", *self.ended[key])
            else:
                trial = trial_by_number(study, frozen.number)
                trial.set_user_attr("lost", "its driver died before Ray Tune saved the trial; it runs again")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(frozen.params, user_attrs={"rerun_of": frozen.number})
                used -= 1
        return used

    def _config_key(self, index: int, params: Mapping) -> str:
        return config_key({**self.fixed, **self.points[index], **params})

    # -- Ray Tune's searcher interface

    def suggest(self, trial_id: str):
        searches = self._open()
        open_points = [i for i, n in enumerate(self._used) if n < self.num_samples]
        if not open_points:
            return Searcher.FINISHED
        index = min(open_points, key=lambda i: (self._used[i], i))
        search = searches[index]
        with quiet_optuna():
            params = search.suggest(trial_id)
            trial = optuna_trials(search)[trial_id]
            trial.set_user_attr("ray_trial_id", trial_id)
            study = optuna_study(search)
            study.set_user_attr("sampler_state", {  # after every ask: a resume continues the same draws
                "trials": len(study.get_trials(deepcopy=False)),
                "pickle": base64.b64encode(pickle.dumps(study.sampler)).decode()})
        self._used[index] += 1
        self.trials[trial_id] = (index, trial.number, self._config_key(index, params))
        return {**self.points[index], **params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.trials:
            return
        value = result.get(self.objective)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return
        self.last_value[trial_id] = float(value)
        step = result.get(self.time_attr, result.get("training_iteration"))
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            self._open()[self.trials[trial_id][0]].report(trial_id, float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trials:
            return
        if result and not error:  # Ray Tune does not pass on the result a scheduler stopped the trial at
            self.on_trial_result(trial_id, result)
        index, _, key = self.trials[trial_id]
        if key in self.ended:  # the store has its outcome (Ray Tune ran an ended trial again)
            status, value = self.ended[key]
        elif error:
            status, value = "failed", None
        else:
            status = (result or {}).get(STATUS_KEY) or "stopped"
            value = (result or {}).get(self.objective)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                value = self.last_value.get(trial_id)
        with quiet_optuna():
            self._open()[index].finish(trial_id, status, value)

    # -- Ray Tune's searcher checkpoint: which trials it knew (the rest is in the Optuna storage)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"trials": dict(self.trials)}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        self.known = set(saved.get("trials", {}))
        self._searches = None  # opened on first use, after Ray Tune restored its trials

    # -- for the launch

    def budget_left(self) -> int:
        """Trials still to ask for (lost trials queued to run again among them)."""
        self._open()
        return sum(max(0, self.num_samples - n) for n in self._used)


# ---------------------------------------------------------------- schedulers, per grid point


SCHEDULER_CLASSES = {"asha": AsyncHyperBandScheduler, "median": MedianStoppingRule}


def _scheduler(name: str, options: Mapping, metric: str, mode: str) -> TrialScheduler:
    options = dict(options)
    if name == "median":
        options["hard_stop"] = True  # a stopped trial ends (Ray's soft stop pauses it, a function trainable restarts)
    return SCHEDULER_CLASSES[name](metric=metric, mode=mode, **options)


class PerGridPointScheduler(FIFOScheduler):
    """A Ray Tune scheduler (ASHA, median stopping) per group of trials: trials are compared
    only with trials of the same grid point (``group_by`` axes; none: one group).

    Ray Tune's ``metric`` of this scheduler is left unset on purpose (see
    ``ConditionedOptunaSearch``); the inner schedulers have it.
    """

    def __init__(self, name: str, options: Mapping, metric: str, mode: str, group_by: tuple[str, ...] = ()):
        super().__init__()
        self.name, self.options, self.direction = name, dict(options), mode
        self.objective = self.options.pop("metric", metric)  # the scheduler's own metric, when the spec gives one
        self.group_by = tuple(group_by)
        self.groups: dict[tuple, TrialScheduler] = {}
        unbuffered(self)  # stopping decisions need every result as it comes

    def group(self, config: Mapping) -> tuple:
        return tuple(repr(config.get(axis)) for axis in self.group_by)

    def _of(self, trial) -> TrialScheduler:
        key = self.group(trial.config)
        if key not in self.groups:
            self.groups[key] = _scheduler(self.name, self.options, self.objective, self.direction)
        return self.groups[key]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial):
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        inner = self._of(trial)
        if self.name == "asha" and not asha_knows(inner, trial.trial_id):
            return  # a trial that restarted in this run without on_trial_add (restored): nothing recorded
        inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial):
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial):
        inner = self._of(trial)
        if self.name == "asha" and not asha_knows(inner, trial.trial_id):
            return
        inner.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"{self.name} per grid point: {len(self.groups)} group(s)"

    def replay(self, rows) -> int:
        """Feed the stored reports of a resumed study to the schedulers (Ray Tune does not save a
        scheduler's state): ASHA's rungs and the median rule's history start where they were.

        ``rows``: iterable of (trial_id, config, [results in order]). Returns the trials fed.
        """
        fed = 0
        for trial_id, config, results in rows:
            inner = self.groups.setdefault(self.group(config), _scheduler(self.name, self.options, self.objective,
                                                                          self.direction))
            stub = _StoredTrial(trial_id, config)
            time_attr = scheduler_time_attr(inner)
            usable = [r for r in results if is_finite_number(r.get(self.objective)) and r.get(time_attr) is not None]
            if not usable:
                continue
            if self.name == "asha":
                replay_asha(inner, stub, usable, self.objective)
            else:
                replay_median(inner, stub, usable)
            fed += 1
        return fed


class _StoredTrial:
    """What a scheduler needs of a trial it learns about from the store."""

    def __init__(self, trial_id: str, config: Mapping):
        self.trial_id, self.config = trial_id, dict(config)

    def __hash__(self):
        return hash(self.trial_id)

    def __eq__(self, other):
        return getattr(other, "trial_id", None) == self.trial_id


# ---------------------------------------------------------------- for launch and resume


class OptunaSnapshot(Callback):
    """Copies a remote store's Optuna database back to the store: after trials end (at most
    every ``every_s`` seconds) and when the run ends."""

    def __init__(self, location: OptunaLocation, every_s: float = 30.0):
        self.location, self.every_s, self.last = location, every_s, time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        if time.monotonic() - self.last >= self.every_s:
            self.location.upload()
            self.last = time.monotonic()

    def on_experiment_end(self, trials, **info):
        self.location.upload()


def time_attr(spec) -> str:
    """The result key that counts a trial's progress for the search: the scheduler's, else ``step``
    when the trainable reports it, else Ray's ``training_iteration``."""
    if spec.scheduler:
        return next(iter(spec.scheduler.values()))["time_attr"]
    from trainables.registry import get_trainable

    return "step" if "step" in get_trainable(spec.trainable).metrics else "training_iteration"


def tune_search(spec, store, *, ended: Mapping[str, tuple] | None = None, stored_reports=None) -> dict[str, Any]:
    """``TuneConfig`` arguments for the spec's search and scheduler (``{}`` for a plain grid).

    ``ended`` (config key → (status, metric value)) and ``stored_reports`` (see
    ``PerGridPointScheduler.replay``) come from the store when a study resumes.
    """
    args: dict[str, Any] = {}
    if spec.points_listed:
        args["search_alg"] = BasicVariantGenerator(points_to_evaluate=uneven_points(spec),
                                                   max_concurrent=spec.max_concurrent or 0)
        args["num_samples"] = spec.num_trials  # one sample per point
    elif spec.search == "random":
        args["search_alg"] = BasicVariantGenerator(random_state=spec.search_seed, constant_grid_search=True,
                                                   max_concurrent=spec.max_concurrent or 0)
        args["num_samples"] = spec.num_samples
    elif spec.search == "optuna":
        location = OptunaLocation.of(store)
        args["search_alg"] = ConditionedOptunaSearch(
            points=spec.grid(), names=study_names(spec), ranges=spec.ranges, fixed=spec.config, metric=spec.metric,
            mode=spec.mode, num_samples=spec.num_samples, sampler=spec.sampler, seed=spec.search_seed,
            time_attr=time_attr(spec), url=location.url, ended=ended,
            meta={"study": spec.name, "trainable": spec.trainable})
        # the searcher also says FINISHED once every grid point has its trials (a resume may
        # run lost trials again, within the same count)
        args["num_samples"] = spec.num_trials
    if spec.scheduler:
        name, options = next(iter(spec.scheduler.items()))
        group_by = tuple(spec.axes) if spec.search != "grid" else ()
        scheduler = PerGridPointScheduler(name, options, spec.metric, spec.mode, group_by=group_by)
        if stored_reports is not None:
            scheduler.replay(stored_reports)
        args["scheduler"] = scheduler
    return args


def optuna_location(spec, store) -> OptunaLocation | None:
    return OptunaLocation.of(store) if spec.search == "optuna" else None


__all__ = ["ConditionedOptunaSearch", "PerGridPointScheduler", "PointSearch", "OptunaSnapshot", "tune_search",
           "search_param_space", "tune_domain", "optuna_distribution", "optuna_location"]
