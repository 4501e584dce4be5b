"""Search beyond the grid: what a spec may say, where Optuna keeps a search, and Ray Tune's side.

- ``study.search.space``: range axes, the spec keys (``search``, ``sampler``, ``scheduler``)
  and their validation, the dry run's description. Ray-free.
- ``study.search.optuna_storage``: the Optuna storage next to the store, study names, samplers.
  Ray-free; Optuna is imported when a sampler or storage is built.
- ``study.search.tune``: Ray Tune's searchers and schedulers (imports Ray; the driver alone
  imports it, by its full name).

The spec-side names are re-exported here; importing this package never imports Ray, so a spec
validates without it.
"""

from study.search.optuna_storage import OPTUNA_DB, SAMPLERS, STATUS_ATTR, OptunaLocation, build_sampler, study_names
from study.search.space import (RANGE_KINDS, SCHEDULERS, SEARCHES, Range, describe, parse_range, parse_sampler,
                                parse_scheduler, rungs, trial_length)

__all__ = ["OPTUNA_DB", "SAMPLERS", "STATUS_ATTR", "OptunaLocation", "build_sampler", "study_names", "RANGE_KINDS",
           "SCHEDULERS", "SEARCHES", "Range", "describe", "parse_range", "parse_sampler", "parse_scheduler", "rungs",
           "trial_length"]
