"""``python -m study``: launch or resume a study, list presets and studies, show a study's status.

Every failure is one line ``error: <where>: <problem>`` on stderr and an exit code from
``study.errors.EXIT_CODES`` (docs/cli.md): 2 bad input (an unknown preset, a spec error,
a bad, taken or running study name), 1 a study that does not exist or a corrupt or
foreign store file, 4 a storage that cannot be reached or written; each before Ray
starts and before anything is written. An interrupted study (SIGINT, or SIGTERM as
``ray job stop`` sends) exits 130 after saving what it has. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys

import pandas as pd

from study.errors import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, abbreviate, boundary, reading,
                          short_repr, UsageError)
from study.launch import DEFAULT_STORAGE, checkpoint_note, launch, resume
from study.lock import read_lock
from study.preflight import check_storage, open_study, stored_spec_data
from study.spec import DEFAULT_MAX_TRIALS, SpecError, check_name, load_spec, preset_names
from study.store import StoreError, StudyStore, display_storage, list_studies

STORAGE_HELP = ("store root: a folder, or a URI such as s3://bucket/prefix (S3-compatible server: "
                "s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http) (default: %(default)s)")


DRY_RUN_ROWS = 50  # grid rows a dry run prints (the first and last half); the count is always printed


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line ``error: <prog>: <problem>`` (exit 2), like every other error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {abbreviate(message, 250)} (see {self.prog} --help)\n")


def debug_option(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug`` before or after the verb (the verb's copy does not reset the top one)."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="print the traceback of an error (the error line is printed either way)")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m study", description=__doc__.splitlines()[0])
    debug_option(parser, top=True)
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
    p.add_argument("--gpu", default=None, metavar="NAME",
                   help="with --dry-run: the GPU of the cost estimate (A100, H100, H200, L40S; default H100)")
    p.add_argument("--gpus", type=int, default=None, metavar="N",
                   help="with --dry-run: GPUs of the cluster the wall-time estimate packs trials onto (default 8)")
    p.add_argument("--mfu", type=float, default=None, metavar="FRACTION",
                   help="with --dry-run: model FLOPs utilisation assumed by the estimate (default 0.4)")
    p.add_argument("--max-trials", type=int, metavar="N",
                   help=f"allow a study of up to N trials (default: the spec's max_trials, else "
                        f"{DEFAULT_MAX_TRIALS:,}); the count is computed before any trial is built")
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

    p = verbs.add_parser("logs", help="what a study's trials printed (stdout and stderr)",
                         description="Print what each trial of a stored study printed to stdout and stderr "
                                     "(kept in the store as logs/<trial_id>.txt), or only TRIAL's.")
    p.add_argument("name", help="study name")
    p.add_argument("trial", nargs="?", help="a trial id (see `status`); default: every trial")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=STORAGE_HELP)
    for sub in verbs.choices.values():
        debug_option(sub, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; returns its exit code (argparse exits 2 itself on a bad command line)."""
    args = _parser().parse_args(argv)
    verb = {"launch": _launch, "resume": _resume, "list": _list, "status": _status, "logs": _logs}[args.verb]
    return boundary(lambda: verb(args), where=lambda: _where(args), debug=args.debug)


def _where(args) -> str:
    """What a verb works on, for an error that does not say where it happened."""
    storage = display_storage(getattr(args, "storage", DEFAULT_STORAGE))
    name = getattr(args, "name", None)
    if args.verb == "launch":
        return f"launch {short_repr(args.spec, 80)}"
    return f"{storage}/{name}" if isinstance(name, str) and len(name) < 120 else storage


def _launch(args) -> int:
    if args.name is not None:
        check_name(args.name, "--name")
    overrides = list(args.overrides)
    if args.max_trials is not None:
        overrides.append(f"max_trials={args.max_trials}")
    spec = load_spec(args.spec, overrides, name=args.name)
    if args.dry_run:
        return _dry_run(spec, gpu=args.gpu, gpus=args.gpus, mfu=args.mfu)
    if (args.gpu, args.gpus, args.mfu) != (None, None, None):
        raise UsageError("--gpu, --gpus and --mfu set the cost estimate of --dry-run; add --dry-run")
    check_storage(args.storage, write=True)
    store = StudyStore(args.storage, spec.name)
    if store.exists() and args.resume:
        _read_whole(store, same_name=True)
    elif args.overwrite:  # what --overwrite deletes must be ours (launch checks it too; here damage is one line)
        with reading(store.root):
            store.check_files()
    note = checkpoint_note(spec)
    if note:
        print(note, file=sys.stderr)
    result = launch(spec, storage=args.storage, address=args.address, overwrite=args.overwrite, resume=args.resume,
                    graceful_sigterm=True)
    return _finish(result, args)


def _dry_run(spec, *, gpu: str | None = None, gpus: int | None = None, mfu: float | None = None) -> int:
    """The grid (at most ``DRY_RUN_ROWS`` rows of it, computed one by one), its search and the trial count."""
    from study import cost

    try:  # first: a bad --gpu/--gpus/--mfu is one line before anything is printed
        estimate = cost.estimate(spec, gpu=gpu or cost.DEFAULT_GPU, mfu=cost.DEFAULT_MFU if mfu is None else mfu,
                                 gpus=cost.DEFAULT_GPUS if gpus is None else gpus)
    except cost.CostError as exc:
        raise UsageError(str(exc)) from None
    n = spec.num_points
    shown = list(range(n)) if n <= DRY_RUN_ROWS else [*range(DRY_RUN_ROWS // 2), *range(n - DRY_RUN_ROWS // 2, n)]
    points = spec.grid_points(shown)
    grid = pd.DataFrame(points, index=shown)
    for key in spec.case_keys:  # what cases set, beside the axes
        grid[key] = [spec.case_config(point).get(key, spec.config.get(key, "(default)")) for point in points]
    grid.index.name = "trial" if spec.search == "grid" else "grid point"  # a search is held at each grid point
    print(f"study {spec.name}: trainable {spec.trainable}, search {spec.search}, metric {spec.metric} ({spec.mode})")
    if spec.config:
        print("fixed: " + ", ".join(f"{k}={abbreviate(str(v), 80)}" for k, v in spec.config.items()))
    if spec.exclude:
        print("excluded: " + "; ".join(", ".join(f"{k}={v!r}" for k, v in e.items()) for e in spec.exclude))
    for case in spec.cases:
        print("case: " + ", ".join(f"{k}={v!r}" for k, v in case.when.items()) + " -> "
              + ", ".join(f"{k}={v!r}" for k, v in case.config.items()))
    unmatched = spec.unmatched()
    if unmatched:
        verb = "selects" if len(unmatched) == 1 else "select"
        print(f"note: {', '.join(unmatched)} {verb} no grid point (a value its axis does not hold)")
    if spec.pack > 1:  # which grid points train together, one Ray trial each
        from study.packs import pack_groups

        groups = pack_groups(spec)
        pack_of = {member: number for number, members in enumerate(groups) for member in members}
        grid.insert(len(grid.columns), "pack", [pack_of.get(i, 0) for i in shown])
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 40):
        text = grid.to_string() if spec.axes else "(no grid axes: one search)"
    if n > len(shown):  # the elided middle, marked between the two halves (after the two header lines)
        lines = text.splitlines()
        head = 2 + DRY_RUN_ROWS // 2
        text = "\n".join([*lines[:head], f"... {n - len(shown):,} more grid points ...", *lines[head:]])
    print(text)
    if spec.search != "grid" or spec.scheduler:
        from study.search import describe

        print("\n".join(describe(spec)))
    print("\n".join(cost.format_estimate(estimate)))
    if spec.pack > 1:
        sizes = sorted({len(g) for g in groups})
        print(f"{spec.num_trials} trials, packed (pack: {spec.pack}) into {len(groups)} Ray trials of "
              f"{' or '.join(map(str, sizes))} members")
        from study.packs import describe_resources, this_machine

        for line in describe_resources(spec, groups, this_machine(spec), "this machine"):
            print(line)
    else:
        print(f"{spec.num_trials} trials")
    return EXIT_OK


def _resume(args) -> int:
    check_name(args.name, "name")
    check_storage(args.storage, write=True)
    store = open_study(args.storage, args.name)
    _read_whole(store, same_name=True)
    result = resume(args.name, storage=args.storage, address=args.address, retry_failed=args.retry_failed,
                    graceful_sigterm=True)
    return _finish(result, args)


def _read_whole(store: StudyStore, *, same_name: bool) -> None:
    """Read every file of a stored study as resume and overwrite will, before Ray starts:
    damage is one line and exit 1 here, not a traceback later. ``same_name``: a renamed
    folder must not resume (and write its report) into the study its spec names."""
    from study.store import StoreWriter

    from study.launch import stored_spec

    with reading(store.root):
        spec = stored_spec_data(store, same_name=same_name)
        if same_name:  # resume runs the spec: it must validate against this checkout's trainables
            try:
                stored_spec(store)
            except SpecError as exc:
                raise StoreError(f"{exc} (the stored spec no longer validates)") from None
        StoreWriter(store, {}).load_existing()
        store.check_files()
        # the columns resume reads for its progress line and a scheduler's replay
        store.read_metrics_columns([c for c in (spec.get("metric"), "training_iteration", "time_total_s") if c])


def _finish(result, args) -> int:
    name = result.store.name  # the folder it ran in
    trials = result.trials()
    counts = trials["status"].value_counts().to_dict() if "status" in trials else {}
    print(f"study {name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; store: {result.store.root}")
    if not result.complete:
        print(f"study {name} was interrupted; finish it with: python -m study resume {name} "
              f"--storage {shlex.quote(args.storage)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.no_report:
        for line in after_study(args.storage, name):
            print(line)
    return 0


#: Entry-point group of what follows a finished study: packages register a callable
#: ``(storage, name) -> str`` (a line to print) in their pyproject; ``analysis`` registers its
#: report. ``study`` itself never imports ``analysis`` (imports go analysis → study → trainables).
AFTER_STUDY = "wd_study.after_study"


def after_study(storage: str, name: str) -> list[str]:
    """Run every installed ``AFTER_STUDY`` hook on a finished study; their lines, in name order."""
    hooks = sorted(importlib.metadata.entry_points(group=AFTER_STUDY), key=lambda ep: ep.name)
    return [str(hook.load()(storage, name)) for hook in hooks]


def _list(args) -> int:
    """Presets, then every stored study with its trials by status; a study that cannot be read
    gets its own line saying why, the others are still listed, and the exit code is then 1."""
    print("presets:")
    for name in preset_names():
        spec = load_spec(name)
        print(f"  {name:<22} {spec.trainable:<8} {spec.num_trials:>4} trials  {spec.description.strip().splitlines()[0] if spec.description else ''}")
    check_storage(args.storage, write=False)
    studies = list_studies(args.storage)
    print(f"studies in {display_storage(args.storage)}:" + ("" if studies else " none"))
    unreadable = []
    for name in studies:
        try:
            check_name(name, "folder")
            store = StudyStore(args.storage, name)
            with reading(store.root):
                stored_spec_data(store)
                line = _status_counts(store)
        except (StoreError, ValueError) as exc:  # ValueError: SpecError, a folder name that is not a study name
            unreadable.append(name)
            line = "unreadable: " + abbreviate(str(exc), 200)
        print(f"  {abbreviate(name, 60):<22} {line}")
    if unreadable:
        raise StoreError(f"{display_storage(args.storage)}: {len(unreadable)} of {len(studies)} studies cannot be "
                         f"read ({', '.join(unreadable[:3])}{', ...' if len(unreadable) > 3 else ''}; see above)")
    return EXIT_OK


def _status_counts(store: StudyStore) -> str:
    trials = store.read_trials()
    if trials.empty:
        return "no trials started"
    counts = trials["status"].value_counts()
    return f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.sort_index().items())


def _status(args) -> int:
    """The study's trials by status, its driver, and its trials table; everything is read
    (and so checked) before anything is printed."""
    check_name(args.name, "name")
    check_storage(args.storage, write=False)
    store = open_study(args.storage, args.name)
    with reading(store.root):
        spec = stored_spec_data(store)
        lines = [f"study {args.name} ({store.root}): {_status_counts(store)}"]
        lock = read_lock(store)
        live = lock is not None and lock.is_live()
        lines.append(f"running: {lock.describe()}" if live else
                     "no driver is running it" + (f" (a dead driver's lock: {lock.describe()})" if lock else ""))
        trials = store.read_trials()
        if "status" in trials and (trials["status"] == "running").any() and not live:
            lines.append(f"interrupted: finish it with: python -m study resume {args.name} "
                         f"--storage {shlex.quote(args.storage)}")
        if not trials.empty:
            columns = ["trial_id", "status", *[f"config/{a}" for a in spec.get("axes") or {}], "reports", "restarts"]
            metric = spec.get("metric")
            if metric in trials:
                columns.append(metric)
            with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
                lines.append(trials[[c for c in columns if c in trials]].to_string(index=False))
            lines += [f"failed {row.trial_id}: {error_line(row.error)}"
                      for row in trials.itertuples() if row.status == "failed" and "error" in trials]
    print("\n".join(lines))
    return EXIT_OK


def error_line(error) -> str:
    """The line of a failed trial's error text that says what went wrong: the last line of
    its traceback (``RuntimeError: ...``), abbreviated."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return abbreviate(lines[-1], 200) if lines else "(no error text recorded)"


def _logs(args) -> int:
    """What the study's trials printed (``logs/<trial_id>.txt``), each under a header line;
    a trial id the study does not have is one line and exit 1, before anything is printed."""
    from study.store import TrialLogs

    check_name(args.name, "name")
    check_storage(args.storage, write=False)
    store = open_study(args.storage, args.name)
    with reading(store.root):
        trials = store.read_trials()
        ids = [str(t) for t in trials["trial_id"]] if "trial_id" in trials else []
        statuses = dict(zip(ids, trials["status"])) if ids else {}
        if args.trial is not None and args.trial not in ids:
            known = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "") if ids else "none"
            raise StoreError(f"{store.root}: no trial {short_repr(args.trial, 60)} in study {args.name} "
                             f"(its trials: {known}; `python -m study status {args.name}` lists them)")
        logs = TrialLogs(store)
        chosen = [args.trial] if args.trial is not None else ids
        texts = {trial_id: logs.read(trial_id) for trial_id in chosen}
    for trial_id, text in texts.items():
        if args.trial is None:
            print(f"==> trial {trial_id} ({statuses.get(trial_id)}) <==")
        if text:
            print(text, end="" if text.endswith("\n") else "\n")
        else:
            print("(no output kept: it printed nothing, or ran before trial logs were kept)")
    return EXIT_OK
