"""``python -m analysis``: figures, verdicts and reports from the Parquet store.

Exit codes are the study CLI's (``study.errors.EXIT_CODES``, docs/cli.md): 0 done; 1 no
such study, or a file of it missing, corrupt or foreign (one line ``error: ...``, nothing
written); 2 a bad command line or study name; 3 with ``--strict``, a verdict failed (the
report is still written); 4 the storage cannot be reached or written. ``--debug`` adds
the traceback. Reports are written only inside the study's own folder.
"""

from __future__ import annotations

import argparse
import sys

from study.cli import OneLineParser, debug_option
from study.errors import EXIT_OK, EXIT_STORE, EXIT_VERDICT_FAILED, boundary, reading
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
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_VERDICT_FAILED} when a verdict fails")
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
    for sub in verbs.choices.values():
        debug_option(sub, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; returns its exit code (argparse exits 2 itself on a bad command line)."""
    args = _parser().parse_args(argv)
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
    for verdict in report.failed:
        print(f"  FAIL {verdict.claim}: {verdict.reason}")
    return EXIT_VERDICT_FAILED if args.strict and report.failed else EXIT_OK


def _compare(args) -> int:
    from analysis.compare import write_comparison

    a = _load(args.a, args.storage, "A")
    b = _load(args.b, args.storage_b or args.storage, "B")
    check_storage(args.storage, write=True)
    with reading(a.store.root):
        _, location = write_comparison(a, b)
    print(f"comparison: {location}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - python -m analysis goes through __main__.py
    sys.exit(main())
