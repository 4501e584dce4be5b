"""``python -m analysis``: figures, verdicts and reports from the Parquet store.

Exit codes are the study CLI's (``study.errors.EXIT_CODES``, docs/cli.md): 0 done; 1 no
such study, or a file of it missing, corrupt or foreign (one line ``error: ...``, nothing
written); 2 a bad command line or study name, or for ``import`` a bad table or a taken name
(nothing written); 3 with ``--strict``, a verdict failed or was inconclusive (the report is
still written); 4 the storage cannot be reached or written. ``--debug`` adds the traceback.
Reports are written only inside the study's own folder.
"""

from __future__ import annotations

import argparse
import sys

from study.cli import OneLineParser, debug_option
from study.errors import EXIT_OK, EXIT_STORE, EXIT_VERDICT_FAILED, UsageError, boundary, reading
from study.preflight import check_storage, open_study, stored_spec_data
from study.store import display_storage

EXIT_ERROR = EXIT_STORE  # the code a missing or unreadable study exits with (kept for callers of this module)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    debug_option(parser, top=True)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("report", help="write figures, verdicts and report.md into the study's folder",
                         description="Read a study's store; write report.md (verdicts, figures, spec, provenance) "
                                     "and figures/ (PNG and SVG) into its folder.")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", default="studies", help="store root: a folder or a URI such as s3://bucket/prefix (default: %(default)s)")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_VERDICT_FAILED} when a verdict fails or is inconclusive")
    p.add_argument("--baseline", metavar="GRID_STUDY",
                   help="a search study: compare it with this grid study over the same box (its best and its compute)")
    p.add_argument("--storage-baseline", help="store root of --baseline (default: the same as the study)")
    p = verbs.add_parser("compare", help="put two studies side by side",
                         description="Compare two studies: verdicts side by side, best trials, and a figure overlaying "
                                     "the best trial of each on a shared metric; written into study A's folder as compare-B.md.")
    p.add_argument("a", metavar="A", help="first study name (the comparison is written into its folder)")
    p.add_argument("b", metavar="B", help="second study name")
    p.add_argument("--storage", default="studies", help="store root of A (default: %(default)s)")
    p.add_argument("--storage-b", help="store root of B (default: the same as A)")
    p = verbs.add_parser("import", help="turn a table of published results (CSV or Parquet) into a study",
                         description="Turn a table of published results (CSV or Parquet: config columns, seed, "
                                     "step/epoch/tokens, status, n_seeds, metrics and <metric>_sd) into a study "
                                     "that report and compare read. See docs/published.md.")
    table = p.add_mutually_exclusive_group(required=True)
    table.add_argument("table", nargs="?", metavar="TABLE", help="the CSV or Parquet file")
    table.add_argument("--paper", action="store_true",
                       help="import every shipped table of the paper's published numbers, each under its own name")
    p.add_argument("--name", help="study name in the store (required with TABLE)")
    p.add_argument("--trainable", help="the trainable whose config the table describes (vision, lm), "
                                       "when the table has no trainable column")
    p.add_argument("--storage", default="studies", help="store root (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a stored study of the same name")
    for sub in verbs.choices.values():
        debug_option(sub, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; returns its exit code (argparse exits 2 itself on a bad command line)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "import":
        if args.paper and (args.name or args.trainable):
            parser.error("import --paper names each study after its table; drop --name and --trainable")
        if not args.paper and not args.name:
            parser.error("import TABLE needs --name, the study's name in the store")
        where = args.table if args.table and len(args.table) < 120 else "import"
        return boundary(lambda: _import(args), where=where, debug=args.debug)
    verb = _report if args.verb == "report" else _compare
    name = args.name if args.verb == "report" else args.a
    where = f"{display_storage(args.storage)}/{name}" if isinstance(name, str) and len(name) < 120 else args.storage
    return boundary(lambda: verb(args), where=where, debug=args.debug)


def _load(name: str, storage: str, where: str):
    """A stored study, its name checked (it never leads outside the store), its spec checked
    to be a study spec and every file read; damage is a ``StoreError`` (exit 1)."""
    from analysis.load import load_study

    check_storage(storage, write=False)
    store = open_study(storage, name, where=where)
    with reading(store.root):
        stored_spec_data(store)
        return load_study(name, storage)


def _report(args) -> int:
    from analysis.report import write_study_report

    study = _load(args.name, args.storage, "name")
    baseline = (_load(args.baseline, args.storage_baseline or args.storage, "--baseline")
                if args.baseline is not None else None)
    check_storage(args.storage, write=True)
    with reading(study.store.root):
        report, location = write_study_report(study, baseline)
    print(f"report: {location}")
    print(f"verdicts: {report.summary()}")
    for verdict in report.undecided:
        print(f"  {verdict.status.upper()} {verdict.claim}")
    return EXIT_VERDICT_FAILED if args.strict and report.undecided else EXIT_OK


def _compare(args) -> int:
    from analysis.compare import write_comparison

    a = _load(args.a, args.storage, "A")
    b = _load(args.b, args.storage_b or args.storage, "B")
    check_storage(args.storage, write=True)
    with reading(a.store.root):
        _, location = write_comparison(a, b)
    print(f"comparison: {location}")
    return EXIT_OK


def _import(args) -> int:
    from analysis.importer import TableError, import_published, import_table

    check_storage(args.storage, write=True)
    try:
        if args.paper:
            done = import_published(args.storage, overwrite=args.overwrite)
        else:
            done = [import_table(args.table, args.name, args.storage, trainable=args.trainable,
                                 overwrite=args.overwrite)]
    except TableError as exc:
        raise UsageError(str(exc)) from None
    for table, store in done:
        print(f"imported {table.path}: {len(table.trials)} trials, {sum(len(t.reports) for t in table.trials)} "
              f"reports -> {store.uri}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - python -m analysis goes through __main__.py
    sys.exit(main())
