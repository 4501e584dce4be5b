"""Where a result came from: the project's git commit, package versions, the host."""

from __future__ import annotations

import functools
import json
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("wd-study", "torch", "ray", "numpy", "pandas", "pyarrow", "optuna", "matplotlib")


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this package runs from, or (None, None) outside git."""
    folder = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's version and each installed package's (a missing package is left out)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance() -> dict[str, object]:
    """The provenance columns every trial row carries (host is filled in per trial)."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty, "versions": json.dumps(versions(), sort_keys=True),
            "host": socket.gethostname(), "driver_host": socket.gethostname()}
