"""What every benchmark of bench/ shares: the machine, package versions, medians, a table, the JSON.

A benchmark is a script run from the repository root (``python bench/<name>.py``). It runs
its cases side by side (interleaved repetitions), prints a table and writes
``bench/results/<name>.json`` holding the numbers, the machine (CPU model, cores, GPU if
any, load average before and after: these 2-core machines are shared, so absolute times are
noise and only ratios measured in the same run count) and the package versions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first on the path, not the project
    sys.path.insert(0, str(ROOT))

from study import provenance  # noqa: E402

PACKAGES = ("wd-study", "torch", "ray", "numpy", "pandas", "pyarrow", "duckdb", "polars", "optuna")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # no torch, a broken driver: a CPU machine for our purposes
        return None


def machine() -> dict:
    """The machine a benchmark ran on (the load average says how shared it was)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            memory_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        memory_gib = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": memory_gib,
            "gpu": gpu_name(), "host": platform.node(), "os": platform.platform(),
            "load_average": list(os.getloadavg())}


def versions() -> dict[str, str]:
    return provenance.versions(PACKAGES)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4g") -> str:
    """A GitHub-markdown table of ``rows`` (what the README records)."""
    from tabulate import tabulate

    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    return tabulate([[row.get(c, "") for c in columns] for row in rows], headers=columns, tablefmt="github",
                    floatfmt=floatfmt)


class Record:
    """Collects a benchmark's numbers and writes them with the machine and versions."""

    def __init__(self, name: str, args: dict | None = None):
        self.name = name
        self.started = time.time()
        self.data = {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                     "args": args or {}, "git_commit": git_commit(), "machine": machine(), "versions": versions()}

    def __setitem__(self, key, value):
        self.data[key] = value

    def __getitem__(self, key):
        return self.data[key]

    def write(self, out: str | None = None) -> Path:
        self.data["machine"]["load_average_end"] = list(os.getloadavg())
        self.data["wall_s"] = round(time.time() - self.started, 1)
        path = Path(out) if out else RESULTS / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=2, default=_plain) + "\n")
        return path


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def peak_rss_mib() -> float:
    """This process's peak resident memory (ru_maxrss) in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def say(*parts) -> None:
    print(*parts, flush=True)
