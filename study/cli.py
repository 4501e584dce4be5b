"""``python -m study``: launch or resume a study, list presets and studies, show a study's status.

Bad input (an unknown preset, a spec error, a taken or running study name) prints one
line ``error: ...`` to stderr and exits with code 2, before anything is written; a
corrupt or foreign store file exits with code 1; an interrupted study (SIGINT, or
SIGTERM as ``ray job stop`` sends) exits with code 130 after saving what it has.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import pandas as pd

from study.launch import DEFAULT_STORAGE, LaunchError, checkpoint_note, launch, resume
from study.lock import read_lock
from study.spec import SpecError, load_spec, preset_names
from study.store import StoreError, StudyStore, list_studies

STORAGE_HELP = ("store root: a folder, or a URI such as s3://bucket/prefix (S3-compatible server: "
                "s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http) (default: %(default)s)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("launch", help="run a study (a preset name or a YAML spec) as a Ray Tune grid",
                         description="Run a study as a Ray Tune grid and store every trial in the Parquet store.")
    p.add_argument("spec", metavar="PRESET_OR_YAML", help="a preset name (see `list`) or a path to a YAML spec")
    p.add_argument("--name", help="study name in the store (default: the spec's name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec: steps=100 fixes a config value; axes.lr=[0.1,0.3] or resources.cpu=2 set a spec path (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid (of a search: its space, budget and scheduler) and the trial count, run nothing")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else start Ray here)")
    taken = p.add_mutually_exclusive_group()
    taken.add_argument("--overwrite", action="store_true", help="replace a stored study of the same name")
    taken.add_argument("--resume", action="store_true",
                       help="if a study of this name (and spec) is stored, finish it instead of refusing")
    p.add_argument("--no-report", action="store_true", help="do not write the analysis report at the end")

    p = verbs.add_parser("resume", help="finish a stored study that was interrupted (Tuner.restore)",
                         description="Finish a stored study: ended trials stay as they are, interrupted ones "
                                     "continue from their last checkpoint, the rest run.")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else start Ray here)")
    p.add_argument("--retry-failed", action="store_true", help="also run the failed trials again (from their last checkpoint)")
    p.add_argument("--no-report", action="store_true", help="do not write the analysis report at the end")

    p = verbs.add_parser("list", help="list presets and the studies in a store",
                         description="List the built-in presets and the studies stored under --storage.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)

    p = verbs.add_parser("status", help="a stored study's driver and trials by status",
                         description="Show whether a driver is running the study and its trials by status "
                                     "(running, finished, diverged, failed, stopped).")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"launch": _launch, "resume": _resume, "list": _list, "status": _status}[args.verb](args)
    except (SpecError, LaunchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _launch(args) -> int:
    spec = load_spec(args.spec, args.overrides, name=args.name)
    if args.dry_run:
        grid = pd.DataFrame(spec.grid())
        grid.index.name = "trial"
        print(f"study {spec.name}: trainable {spec.trainable}, search {spec.search}, metric {spec.metric} ({spec.mode})")
        if spec.config:
            print("fixed: " + ", ".join(f"{k}={v}" for k, v in spec.config.items()))
        if spec.search != "grid":  # a search: its space and budget, the grid points it is held at
            grid.index.name = "grid point"
        if spec.pack > 1:  # which grid points train together, one Ray trial each
            from study.packs import pack_groups

            groups = pack_groups(spec)
            grid.insert(len(grid.columns), "pack", 0)
            for number, members in enumerate(groups):
                grid.loc[members, "pack"] = number
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(grid.to_string() if spec.axes else "(no grid axes: one search)")
        if spec.search != "grid" or spec.scheduler:
            from study.search import describe

            print("\n".join(describe(spec)))
        if spec.pack > 1:
            sizes = sorted({len(g) for g in groups})
            print(f"{spec.num_trials} trials, packed (pack: {spec.pack}) into {len(groups)} Ray trials of "
                  f"{' or '.join(map(str, sizes))} members")
        else:
            print(f"{spec.num_trials} trials")
        return 0
    note = checkpoint_note(spec)
    if note:
        print(note, file=sys.stderr)
    result = launch(spec, storage=args.storage, address=args.address, overwrite=args.overwrite, resume=args.resume,
                    graceful_sigterm=True)
    return _finish(result, args)


def _resume(args) -> int:
    result = resume(args.name, storage=args.storage, address=args.address, retry_failed=args.retry_failed,
                    graceful_sigterm=True)
    return _finish(result, args)


def _finish(result, args) -> int:
    name = result.spec.name
    trials = result.trials()
    counts = trials["status"].value_counts().to_dict() if "status" in trials else {}
    print(f"study {name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; store: {result.store.root}")
    if not result.complete:
        print(f"study {name} was interrupted; finish it with: python -m study resume {name} "
              f"--storage {shlex.quote(args.storage)}", file=sys.stderr)
        return 130
    if not args.no_report:
        from analysis.report import write_report

        path = write_report(args.storage, name)
        print(f"report: {path}")
    return 0


def _list(args) -> int:
    print("presets:")
    for name in preset_names():
        spec = load_spec(name)
        print(f"  {name:<22} {spec.trainable:<8} {spec.num_trials:>4} trials  {spec.description.strip().splitlines()[0] if spec.description else ''}")
    studies = list_studies(args.storage)
    print(f"studies in {args.storage}:" + ("" if studies else " none"))
    for name in studies:
        print(f"  {name:<22} {_status_counts(StudyStore(args.storage, name))}")
    return 0


def _status_counts(store: StudyStore) -> str:
    trials = store.read_trials()
    if trials.empty:
        return "no trials started"
    counts = trials["status"].value_counts()
    return f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.sort_index().items())


def _status(args) -> int:
    store = StudyStore(args.storage, args.name)
    if not store.exists():
        raise StoreError(f"no study named {args.name!r} in {args.storage}")
    print(f"study {args.name} ({store.root}): {_status_counts(store)}")
    lock = read_lock(store)
    if lock is not None and lock.is_live():
        print(f"running: {lock.describe()}")
    else:
        print("no driver is running it" + (f" (a dead driver's lock: {lock.describe()})" if lock else ""))
    trials = store.read_trials()
    if "status" in trials and (trials["status"] == "running").any() and not (lock and lock.is_live()):
        print(f"interrupted: finish it with: python -m study resume {args.name} --storage {shlex.quote(args.storage)}")
    if not trials.empty:
        spec = load_spec_from_store(store)
        columns = ["trial_id", "status", *[f"config/{a}" for a in spec.get("axes", {})], "reports", "restarts"]
        metric = spec.get("metric")
        if metric in trials:
            columns.append(metric)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(trials[[c for c in columns if c in trials]].to_string(index=False))
    return 0


def load_spec_from_store(store: StudyStore) -> dict:
    import yaml

    return yaml.safe_load(store.read_text("spec.yaml")) or {}
