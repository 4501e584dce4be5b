"""``python -m study.cluster``: what a cluster's nodes need from the driver's environment.

    python -m study.cluster lock -o requirements-cluster.txt   # the driver's exact versions
    python -m study.cluster check requirements-cluster.txt     # on a node: does it match?
    python -m study.cluster wait HOST:PORT --nodes 4           # until 4 Ray nodes have joined

``lock`` writes ``pip freeze`` of the running environment with three changes, so that every
node installs from it (cluster.yaml's setup_commands, docs/cluster-recipes.md): the project
itself is left out (nodes install it from their synced checkout); a local version label
(``torch==2.13.0+cpu``) is dropped, so that a node keeps its own CUDA or CPU build of the
same release; a package installed from a file or URL is pinned by its version. ``ray`` is
written as ``ray[default]``: cluster nodes need Ray's dashboard and autoscaler parts.

Exit codes: 0 done; 1 pip failed, a node does not match the lock, or the Ray nodes did not
join in time; 2 bad input (a missing or malformed lock file, bad options).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata

PROJECT = "wd-study"
PYTHON_HEADER = "# python "
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==|@)\s*([^\s#;]+)")


class ClusterError(Exception):
    """A problem the command reports as one line; ``code`` is its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """The release without its local label: ``2.13.0+cpu`` → ``2.13.0`` (PEP 440: ``==2.13.0``
    matches any local build of it, e.g. a node's ``2.13.0+cu128``)."""
    return version.split("+", 1)[0]


def lock_lines(freeze: list[str], python: str) -> list[str]:
    """The lock file's lines from ``pip freeze`` output lines."""
    out = [
        "# The driver's exact package versions, for every node of the cluster (docs/cluster-recipes.md).",
        "# Written by `python -m study.cluster lock`; write it again after the environment changes.",
        f"{PYTHON_HEADER}{python}  (nodes need the same Python minor version)",
    ]
    for line in freeze:
        line = line.strip()
        if not line or line.startswith(("#", "-e ", "--editable")):
            continue
        match = _NAME.match(line)
        if match is None:
            raise ClusterError(f"pip freeze gave a line this command cannot pin: {line!r}", 1)
        name, _, how, where = match.groups()
        if canonical(name) == PROJECT:  # the project comes from the node's own checkout
            continue
        note = ""
        if how == "@":  # a local wheel or a URL the nodes cannot reach: pin the installed version
            version = metadata.version(name)
            note = "  # installed from a file or URL on the driver"
        else:
            version = where
        if public_version(version) != version:
            note = f"  # the driver has {version}; a node keeps its own build of this release"
        extra = "[default]" if canonical(name) == "ray" else ""
        out.append(f"{name}{extra}=={public_version(version)}{note}")
    return out


def pip_freeze() -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                          text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClusterError(f"pip freeze failed (exit {done.returncode}): {last}", 1)
    return done.stdout.splitlines()


def read_lock(path: str) -> tuple[str | None, dict[str, str]]:
    """The lock's Python version (major.minor) and its pins: canonical name → version."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ClusterError(f"{path}: {exc.strerror}; write it with: python -m study.cluster lock -o {path}", 2)
    python, pins = None, {}
    for number, line in enumerate(lines, 1):
        if line.startswith(PYTHON_HEADER):
            python = line[len(PYTHON_HEADER):].split()[0]
            continue
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = _NAME.match(line)
        if match is None or match.group(3) != "==":
            raise ClusterError(f"{path}:{number}: expected name==version, got {line!r}", 2)
        pins[canonical(match.group(1))] = match.group(4)
    return python, pins


def mismatches(python: str | None, pins: dict[str, str], *, running_python: str,
               installed: dict[str, str]) -> list[str]:
    """What differs between a lock and an environment, one line each."""
    problems = []
    if python is not None and python.split(".")[:2] != running_python.split(".")[:2]:
        problems.append(f"python {running_python}, the lock was written with {python}")
    for name, version in sorted(pins.items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}: not installed, the lock pins {version}")
        elif public_version(have) != version:
            problems.append(f"{name}: {have} installed, the lock pins {version}")
    return problems


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def running_python() -> str:
    return ".".join(map(str, sys.version_info[:3]))


# ---------------------------------------------------------------- verbs


def _lock(args) -> int:
    text = "\n".join(lock_lines(pip_freeze(), running_python())) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise ClusterError(f"{args.output}: no such folder {folder}", 2)
    # written beside the target and renamed: a failure leaves an existing lock as it was
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lock-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} ({text.count(chr(10)) - 3} packages)", file=sys.stderr)
    return 0


def _check(args) -> int:
    python, pins = read_lock(args.lock)
    problems = mismatches(python, pins, running_python=running_python(), installed=installed_versions())
    for problem in problems:
        print(f"mismatch: {problem}", file=sys.stderr)
    if problems:
        raise ClusterError(f"this environment does not match {args.lock} ({len(problems)} differences); "
                           f"install it with: pip install -r {args.lock}", 1)
    print(f"{args.lock}: all {len(pins)} packages match")
    return 0


def _wait(args) -> int:
    """Connect to the Ray cluster at ``address`` and wait until ``nodes`` nodes are alive."""
    import ray

    deadline = time.monotonic() + args.timeout
    while True:  # the head may not be up yet
        try:
            ray.init(address=args.address, log_to_driver=False, logging_level="ERROR")
            break
        except ConnectionError as exc:
            if time.monotonic() > deadline:
                raise ClusterError(f"no Ray cluster at {args.address} after {args.timeout:g} s: {exc}", 1) from None
            time.sleep(2)
    try:
        while True:
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            if alive >= args.nodes:
                print(f"ray cluster at {args.address}: {alive} nodes")
                return 0
            if time.monotonic() > deadline:
                raise ClusterError(f"{alive} of {args.nodes} Ray nodes joined {args.address} in {args.timeout:g} s; "
                                   f"see the workers' output", 1)
            time.sleep(1)
    finally:
        ray.shutdown()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.cluster", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("lock", help="write the driver's exact package versions (pip freeze) for the cluster's nodes")
    p.add_argument("-o", "--output", help="file to write (default: standard output); replaced only on success")
    p = verbs.add_parser("check", help="compare this environment with a lock file (exit 1 on a difference)")
    p.add_argument("lock", help="a file written by `lock`")
    p = verbs.add_parser("wait", help="wait until a Ray cluster has a number of nodes")
    p.add_argument("address", help="the head's HOST:PORT")
    p.add_argument("--nodes", type=int, required=True, help="nodes to wait for, the head included")
    p.add_argument("--timeout", type=float, default=300, help="seconds (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"lock": _lock, "check": _check, "wait": _wait}[args.verb](args)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
