"""A tiny real study in a store, made without Ray, and the in-process CLI runner the CLI tests share.

``write_probe_study`` runs the ``probe`` trainable's real training function for each grid
point and feeds its reports to ``StoreWriter`` the way the Ray callback does (start,
results, end), so the store has the files and schemas of a launched study: spec.yaml,
study.json, trials.parquet and Hive-partitioned metric parts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass

import yaml

from study.spec import parse_spec
from study.store import StoreWriter, StudyStore
from trainables.probe import run as probe_run
from trainables.session import BareSession

PROBE_SPEC = {"name": "tiny", "trainable": "probe", "config": {"steps": 4, "dim": 2},
              "axes": {"lr": [0.1, 0.5], "seed": [0, 1]}}


def write_probe_study(storage: str, name: str = "tiny", *, running: int = 0) -> StudyStore:
    """Store a 4-trial probe study named ``name``; the last ``running`` trials are left running
    (as a dead driver leaves them), the others finished."""
    spec = parse_spec({**PROBE_SPEC, "name": name})
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    store.write_text("study.json", json.dumps({"name": name, "source": "tests", "git_commit": "0" * 7}))
    writer = StoreWriter(store, {"host": "test"}, flush_rows=3)  # several part files per trial
    configs = spec.trial_configs()
    for number, config in enumerate(configs):
        trial_id = f"t{number:03d}"
        session = BareSession()
        probe_run(dict(config), session)
        writer.trial_started(trial_id, config)
        for iteration, report in enumerate(session.reports, start=1):
            writer.add_result(trial_id, {**report, "training_iteration": iteration, "time_total_s": 0.01 * iteration})
        if number < len(configs) - running:
            writer.trial_ended(trial_id, session.status or "finished")
    writer.close()
    return store


def snapshot(folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes)."""
    files = {}
    for root, _, names in os.walk(folder):
        for filename in names:
            path = os.path.join(root, filename)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(main, argv: list[str]) -> Outcome:
    """Call a CLI's ``main(argv)`` in this process, capturing stdout and stderr
    (argparse's own exit, SystemExit, counts as the exit code)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return Outcome(code, out.getvalue(), err.getvalue())


def study_main(argv):
    from study.cli import main

    return main(argv)


def analysis_main(argv):
    from analysis.cli import main

    return main(argv)
