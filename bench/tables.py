"""Tables of recorded benchmark numbers in Markdown, drawn from the JSON that holds them.

    python bench/tables.py            # rewrite every table block from its JSON
    python bench/tables.py --check    # exit 1 naming each block that differs from its JSON

A block in a Markdown file (bench/README.md, docs/*.md, README.md) is::

    <!-- from results/store.json summary.writers name,write_s,trials_table_s -->
    | name | write_s | trials_table_s |
    |---|---|---|
    | incremental | 33.1 | 2.95 |
    <!-- /from -->

The JSON path is relative to the Markdown file; the dotted key path leads to a list of rows
(dicts) or a dict of rows (its keys become the ``name`` column); the columns are keys of the
rows, each shown under its own name or as ``key=Header in words``. Numbers are shown to three significant figures (integers
whole, with thousands separators), so a quoted figure is the recorded one and cannot drift
from it: ``tests/test_bench_tables.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- from (?P<file>\S+\.json) (?P<path>\S+) (?P<columns>[^\n]+?) -->\n(?P<body>.*?)<!-- /from -->",
                   re.S)


def default_files() -> list[Path]:
    return [ROOT / "bench" / "README.md", ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        text = f"{value:.3g}"
        return f"{float(text):,.0f}" if "e" in text and abs(value) >= 1 else text
    if isinstance(value, list):
        return "–".join(cell(v) for v in value)
    return str(value).replace("|", "\\|")


def rows_at(data, path: str, where: str) -> list[dict]:
    node = data
    for key in path.split("."):
        if isinstance(node, list) and key.isdigit():
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise KeyError(f"{where}: no {key!r} on the path {path!r}")
    if isinstance(node, dict):
        node = [{"name": name, **row} for name, row in node.items()]
    if not isinstance(node, list) or not all(isinstance(row, dict) for row in node):
        raise KeyError(f"{where}: {path!r} is not a list or a dict of rows")
    return node


def shown(markdown: Path) -> str:
    return str(markdown.relative_to(ROOT)) if markdown.is_relative_to(ROOT) else str(markdown)


def render(markdown: Path, file: str, path: str, columns: str) -> str:
    where = f"{shown(markdown)}: {file} {path}"
    source = (markdown.parent / file).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"{where}: no such JSON")
    rows = rows_at(json.loads(source.read_text()), path, where)
    keys, headers = zip(*[(c.partition("=")[0].strip(), (c.partition("=")[2] or c).strip())
                          for c in columns.split(",")])
    missing = sorted({k for row in rows for k in keys if k not in row})
    if missing:
        raise KeyError(f"{where}: rows without {', '.join(missing)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def update(markdown: Path) -> tuple[str, list[str]]:
    """The file's text with every block redrawn, and the blocks that differed."""
    text = markdown.read_text()
    stale = []

    def redraw(match: re.Match) -> str:
        body = render(markdown, match["file"], match["path"], match["columns"])
        if body != match["body"]:
            stale.append(f"{shown(markdown)}: the table from {match['file']} {match['path']}")
        head = match.group(0)[:match.start("body") - match.start()]
        return head + body + "<!-- /from -->"

    return BLOCK.sub(redraw, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: bench/README.md, README.md, docs/)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its JSON")
    args = parser.parse_args(argv)
    stale_all = []
    for markdown in [f.resolve() for f in args.files] or default_files():
        try:
            text, stale = update(markdown)
        except (KeyError, FileNotFoundError, ValueError) as exc:
            print(f"error: {str(exc).strip(chr(39))}", file=sys.stderr)
            return 2
        stale_all += stale
        if stale and not args.check:
            markdown.write_text(text)
    for line in stale_all:
        print(("differs from its JSON: " if args.check else "redrawn: ") + line)
    return 1 if args.check and stale_all else 0


if __name__ == "__main__":
    sys.exit(main())
