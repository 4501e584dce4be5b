"""``python -m analysis``: figures, verdicts and reports from the Parquet store.

Exit codes: 0 done; 1 the store could not be read (one line ``error: ...``, nothing
written); 2 ``import``: a bad table or a taken study name (one line ``error: ...``,
nothing written); 3 with ``--strict``, a verdict failed or was inconclusive (the report is still written).
"""

from __future__ import annotations

import argparse
import sys

from study.store import StoreError

EXIT_ERROR, EXIT_BAD_INPUT, EXIT_VERDICT_FAILED = 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("report", help="write figures, verdicts and report.md into the study's folder",
                         description="Read a study's store; write report.md (verdicts, figures, spec, provenance) "
                                     "and figures/ (PNG and SVG) into its folder.")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", default="studies", help="store root: a folder or a URI such as s3://bucket/prefix (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_VERDICT_FAILED} when a verdict fails or is inconclusive")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "import":
        return _import(args, parser)
    from analysis.load import load_study

    try:
        if args.verb == "report":
            from analysis.report import write_study_report

            baseline = (load_study(args.baseline, args.storage_baseline or args.storage)
                        if args.baseline else None)
            report, location = write_study_report(load_study(args.name, args.storage), baseline)
            print(f"report: {location}")
            print(f"verdicts: {report.summary()}")
            for verdict in report.undecided:
                print(f"  {verdict.status.upper()} {verdict.claim}")
            return EXIT_VERDICT_FAILED if args.strict and report.undecided else 0
        from analysis.compare import write_comparison

        a = load_study(args.a, args.storage)
        b = load_study(args.b, args.storage_b or args.storage)
        _, location = write_comparison(a, b)
        print(f"comparison: {location}")
        return 0
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _import(args, parser) -> int:
    from analysis.importer import TableError, import_published, import_table

    if args.paper and (args.name or args.trainable):
        parser.error("import --paper names each study after its table; drop --name and --trainable")
    if not args.paper and not args.name:
        parser.error("import TABLE needs --name, the study's name in the store")
    try:
        if args.paper:
            done = import_published(args.storage, overwrite=args.overwrite)
        else:
            done = [import_table(args.table, args.name, args.storage, trainable=args.trainable,
                                 overwrite=args.overwrite)]
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for table, store in done:
        print(f"imported {table.path}: {len(table.trials)} trials, {sum(len(t.reports) for t in table.trials)} "
              f"reports -> {store.uri}")
    return 0
