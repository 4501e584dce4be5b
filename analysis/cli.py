"""``python -m analysis``: figures, verdicts and reports from the Parquet store.

Exit codes: 0 done; 1 the store could not be read (one line ``error: ...``, nothing
written); 3 with ``--strict``, a verdict failed or was inconclusive (the report is still written).
"""

from __future__ import annotations

import argparse
import sys

from study.store import StoreError

EXIT_ERROR, EXIT_VERDICT_FAILED = 1, 3


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
