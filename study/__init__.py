"""Study specs, presets and launching: the public API of the study framework.

    from study import load_spec, launch, resume
    result = launch(load_spec("quickstart"), storage="studies")
    result.trials()          # one row per trial (pandas)
    resume("quickstart", storage="studies")   # finish a study a dead driver left
"""

from study.launch import DEFAULT_STORAGE, LaunchError, StudyResult, launch, resume
from study.spec import Resources, SpecError, StudySpec, load_spec, parse_spec, preset_names
from study.store import StoreError, StudyStore, list_studies

__all__ = [
    "DEFAULT_STORAGE", "LaunchError", "Resources", "SpecError", "StoreError", "StudyResult", "StudySpec",
    "StudyStore", "launch", "list_studies", "load_spec", "parse_spec", "preset_names", "resume",
]
