"""``python -m study``: launch a study, list presets and studies, show a study's status.

Bad input (an unknown preset, a spec error, a taken study name) prints one line
``error: ...`` to stderr and exits with code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from study.launch import DEFAULT_STORAGE, LaunchError, launch
from study.spec import SpecError, load_spec, preset_names
from study.store import StoreError, StudyStore, list_studies


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("launch", help="run a study (a preset name or a YAML spec) as a Ray Tune grid",
                         description="Run a study as a Ray Tune grid and store every trial in the Parquet store.")
    p.add_argument("spec", metavar="PRESET_OR_YAML", help="a preset name (see `list`) or a path to a YAML spec")
    p.add_argument("--name", help="study name in the store (default: the spec's name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="store root: a folder or a URI such as s3://bucket/prefix (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec: steps=100 fixes a config value; axes.lr=[0.1,0.3] or resources.cpu=2 set a spec path (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and the trial count, run nothing")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else start Ray here)")
    p.add_argument("--overwrite", action="store_true", help="replace a stored study of the same name")
    p.add_argument("--no-report", action="store_true", help="do not write the analysis report at the end")

    p = verbs.add_parser("list", help="list presets and the studies in a store",
                         description="List the built-in presets and the studies stored under --storage.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="store root (default: %(default)s)")

    p = verbs.add_parser("status", help="trials of a stored study by status",
                         description="Show how many trials of a study are running, finished, diverged, failed or stopped.")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="store root (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"launch": _launch, "list": _list, "status": _status}[args.verb](args)
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
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(grid.to_string())
        print(f"{spec.num_trials} trials")
        return 0
    result = launch(spec, storage=args.storage, address=args.address, overwrite=args.overwrite)
    trials = result.trials()
    counts = trials["status"].value_counts().to_dict() if "status" in trials else {}
    print(f"study {spec.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; store: {result.store.root}")
    if not args.no_report:
        from analysis.report import write_report

        path = write_report(args.storage, spec.name)
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
    trials = store.read_trials()
    if not trials.empty:
        spec = load_spec_from_store(store)
        columns = ["trial_id", "status", *[f"config/{a}" for a in spec.get("axes", {})]]
        metric = spec.get("metric")
        if metric in trials:
            columns.append(metric)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(trials[[c for c in columns if c in trials]].to_string(index=False))
    return 0


def load_spec_from_store(store: StudyStore) -> dict:
    import yaml

    return yaml.safe_load(store.read_text("spec.yaml")) or {}
