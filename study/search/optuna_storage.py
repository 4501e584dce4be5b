"""Where a study's Optuna search lives and how its samplers are built (Ray-free; Optuna imported
when a sampler or a storage is built, so importing this module stays cheap).

One Optuna study per grid point (``study_names``), all in one SQLite file next to the
Parquet store (``optuna.db``; ``OptunaLocation`` keeps a local copy for a remote store).
The samplers a spec may name (``SAMPLERS``) are Optuna's, built and seeded by
``build_sampler`` (which also checks a spec's sampler options against the constructor).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Mapping

SAMPLERS = {  # spec name -> optuna.samplers class name
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
}
OPTUNA_DB = "optuna.db"
STATUS_ATTR = "status"  # our status of a trial (finished, diverged, stopped, failed), as an Optuna user attribute


# ---------------------------------------------------------------- samplers


def build_sampler(sampler: Mapping[str, dict], seed: int, fail=None):
    """The Optuna sampler of a spec's ``sampler`` mapping, seeded."""
    import optuna

    name, options = next(iter(sampler.items()))
    cls = getattr(optuna.samplers, SAMPLERS[name])
    accepted = inspect.signature(cls).parameters
    if fail is not None:
        for key, value in options.items():
            if key not in accepted:
                raise fail(f"sampler.{name}.{key}", f"not an option of optuna.samplers.{cls.__name__}; its options: "
                           f"{', '.join(k for k in accepted if k != 'seed')}")
            expected = _option_type(accepted[key].default)
            if expected is not None and not _of_type(value, expected):
                raise fail(f"sampler.{name}.{key}", f"expected {expected.__name__} (the default is "
                           f"{accepted[key].default!r}), got {value!r}")
    try:
        with quiet_optuna():
            return cls(seed=seed, **options)
    except Exception as exc:  # a wrong value, or a sampler whose extra package is missing (cmaes)
        if fail is None:
            raise
        raise fail(f"sampler.{name}", f"optuna.samplers.{cls.__name__}: {str(exc).splitlines()[0]}") from None


def _option_type(default: Any) -> type | None:
    """The type a sampler option takes, read from its default (None: anything goes)."""
    for kind in (bool, int, float):
        if isinstance(default, kind):
            return kind
    return None


def _of_type(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


class quiet_optuna:
    """Optuna at WARNING while inside (its INFO line per trial would drown the progress line)."""

    def __enter__(self):
        import optuna

        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc):
        import optuna

        optuna.logging.set_verbosity(self.level)


def derived_seed(seed: int, trials: int) -> int:
    """A seed for a sampler re-created after ``trials`` trials (a different stream from ``seed``'s)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, trials]).generate_state(1)[0])


# ---------------------------------------------------------------- storage


def storage(url: str):
    """Optuna's RDB storage at ``url``; SQLite waits for a lock (a user may be reading the file)."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})


def study_names(spec) -> list[str]:
    """The Optuna study name of each grid point: ``<study>`` alone, or ``<study>/wd=...,...``."""
    names = []
    for point in spec.grid():
        label = ",".join(f"{k}={_label(v)}" for k, v in point.items())
        names.append(f"{spec.name}/{label}" if label else spec.name)
    return names


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class OptunaLocation:
    """Where a study's Optuna storage lives: a SQLite file next to the Parquet store.

    On a local store the file is ``STORE/<study>/optuna.db`` itself. On a remote store
    (S3, GCS, ...) SQLite cannot write in place: the driver works on a local copy
    (``local_path``, under ``~/.cache/wd-study/optuna/``) fetched from the store when a
    study resumes, and ``upload`` copies it back (after trials end, at most every 30 s,
    and when the run ends).
    """

    store: Any  # StudyStore
    local_path: str
    remote: bool

    @classmethod
    def of(cls, store) -> "OptunaLocation":
        import pyarrow.fs as pafs

        if isinstance(store.fs, pafs.LocalFileSystem):
            return cls(store, store.path(OPTUNA_DB), remote=False)
        digest = hashlib.sha1(store.uri.encode()).hexdigest()[:16]
        folder = os.path.join(os.path.expanduser("~"), ".cache", "wd-study", "optuna", digest)
        return cls(store, os.path.join(folder, OPTUNA_DB), remote=True)

    @property
    def url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.local_path)

    def fetch(self) -> None:
        """Start from the store's copy (remote), or from nothing when the store has none."""
        if not self.remote:
            return
        os.makedirs(os.path.dirname(self.local_path), exist_ok=True)
        if os.path.exists(self.local_path):
            os.remove(self.local_path)
        if self.store.has_file(OPTUNA_DB):
            with open(self.local_path, "wb") as out:
                out.write(self.store.read_bytes(OPTUNA_DB))

    def upload(self) -> None:
        if self.remote and os.path.exists(self.local_path):
            with open(self.local_path, "rb") as f:
                self.store.write_bytes(OPTUNA_DB, f.read())
