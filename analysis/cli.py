"""``python -m analysis``: reports from the Parquet store."""

from __future__ import annotations

import argparse
import sys

from study.store import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("report", help="write figures and report.md into the study's folder",
                         description="Read a study's store and write its figures and report.md beside it.")
    p.add_argument("name", help="study name")
    p.add_argument("--storage", default="studies", help="store root (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "report":
            from analysis.report import write_report

            print(write_report(args.storage, args.name))
        return 0
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
