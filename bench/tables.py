"""Recorded benchmark numbers in Markdown, checked against the JSON that holds them.

    python bench/tables.py            # redraw every table block from its JSON
    python bench/tables.py --check    # change nothing; exit 1 naming each table or figure that differs

It reads bench/README.md, README.md and docs/**/*.md (or the files named on the command line).
A JSON file is named **relative to the Markdown file** that cites it: ``results/x.json`` in
bench/README.md, ``bench/results/x.json`` in README.md, ``../bench/results/x.json`` in docs/.

**A path** leads from the top of the JSON to a value: keys joined by dots
(``summary.writers.incremental.write_s``); a number picks a list's element by position
(``summary.0``); ``[field=value]`` picks the one element of a list whose field has that value
(``summary[case=pack 4]``; conditions joined by commas: ``runs[length=90,mode=study]``; ``16``
matches 16 and 16.0). A selection matching no element, or several, is an error, except last in
a table block's path, where it keeps every matching row (``summary[device=cpu]``).

**A table block** (its path has no spaces outside ``[...]``)::

    <!-- from results/store.json summary.writers name,write_s,trials_table_s -->
    | name | write_s | trials_table_s |
    |---|---|---|
    | incremental | 33.1 | 2.95 |
    <!-- /from -->

The path leads to a list of rows (dicts) or a dict of rows (its keys become the ``name``
column); the columns are keys of the rows, each shown under its own name or as ``key=Header in
words``. Numbers are shown to three significant figures (integers whole, with thousands
separators). The rewrite redraws every block from its JSON.

**A figure in prose** (or in a hand-made table: no ``|`` in the comment then) is cited by an
HTML comment right after it on the same line, which Markdown does not show; the path runs to
the ``-->``, spaces included::

    ran 0.87× <!-- results/packing-ushape.json summary[case=pack 4].speed-up (median) --> the unpacked speed

The figure is the number before the comment (a sign, thousands separators and decimals allowed),
then maybe a unit (``×``, ``%``, `` s``, `` tokens/s``…). It agrees with the JSON when the JSON
value, rounded to as many decimals as the figure shows, is the figure's number: JSON 0.8249
may be quoted ``0.82×`` or ``0.8×``, not ``0.83×``; 15369.2 is ``15,369``. Besides:

- ``%``: the JSON holds a fraction, the figure is per cent (JSON 0.0634 is ``6.3 %`` or ``6 %``);
- a range ``0.87–1.00`` quotes a list of two numbers (each end to its own decimals) or a string
  that reads the same, dashes alike (``"0.87-1.00"``, ``"3/5"``);
- ``A ÷ B``: the ratio of two values of the same JSON; quoted in ``%`` it is the change
  A / B − 1 (two rates 24,535 and 15,369: ``1.60×`` or ``+60 %``).

Citations are checked, never rewritten: a figure belongs to a sentence that may need new words
when the figure changes. Both modes print each figure that differs from its JSON (file:line, the
figure quoted, the JSON's) and exit 1. A JSON or path that is missing, or a citation with no
figure before it, is an error: exit 2, nothing written. ``tests/test_bench_tables.py`` runs
``--check``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- from (?P<file>\S+\.json) (?P<path>(?:[^\s\[]|\[[^\]\n]*\])+) (?P<columns>[^\n]+?) -->\n"
                   r"(?P<body>.*?)<!-- /from -->", re.S)
CITE = re.compile(r"<!-- (?P<file>[^\s<>]+\.json) (?P<path>[^\n]+?) -->")
NUMBER = r"[+\-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
FIGURE = re.compile(rf"(?P<figure>{NUMBER}(?:[-–/]{NUMBER})?)"  # a number or a range, then maybe a unit
                    r"(?:[ \u00a0]?(?P<unit>[^\s\d<>()\[\],;:*_]+))?[*_]*[ \t]*$")
ENDS = re.compile(r"(?<=\d)[-–/]")  # between the two ends of a range


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


def same(value, text: str) -> bool:
    """Whether a JSON value is what ``[field=text]`` asks for."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text in (str(value), cell(value))


def walk(data, path: str, where: str, rows: bool = False):
    """The value at the end of the path; ``rows``: a selection last keeps every matching row."""
    node, steps = data, re.findall(r"(?:[^.\[]|\[[^\]]*\])+", path)
    for n, step in enumerate(steps):
        parsed = re.fullmatch(r"([^\[\]]*)(?:\[([^\]]*)\])?", step)
        if not parsed:
            raise ValueError(f"{where}: cannot read {step!r} of the path {path!r}")
        key, select = parsed.groups()
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        elif key:
            raise ValueError(f"{where}: no {key!r} on the path {path!r}")
        if select is None:
            continue
        conditions = [c.split("=", 1) for c in select.split(",")]
        if not isinstance(node, list) or any(len(c) != 2 for c in conditions):
            raise ValueError(f"{where}: [{select}] needs a list and field=value conditions")
        found = [row for row in node if isinstance(row, dict)
                 and all(f.strip() in row and same(row[f.strip()], v.strip()) for f, v in conditions)]
        if rows and n == len(steps) - 1 and found:
            return found
        if len(found) != 1:
            raise ValueError(f"{where}: [{select}] matches {len(found)} elements on the path {path!r}")
        node = found[0]
    return node


def load(markdown: Path, file: str, where: str):
    source = (markdown.parent / file).resolve()
    if not source.is_file():
        raise ValueError(f"{where}: no such JSON")
    return json.loads(source.read_text())


def shown(markdown: Path) -> str:
    return str(markdown.relative_to(ROOT)) if markdown.is_relative_to(ROOT) else str(markdown)


def render(markdown: Path, file: str, path: str, columns: str, where: str) -> str:
    rows = walk(load(markdown, file, where), path, where, rows=True)
    if isinstance(rows, dict):
        rows = [{"name": name, **row} for name, row in rows.items()]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{where}: {path!r} is not a list or a dict of rows")
    keys, headers = zip(*[(c.partition("=")[0].strip(), (c.partition("=")[2] or c).strip())
                          for c in columns.split(",")])
    missing = sorted({k for row in rows for k in keys if k not in row})
    if missing:
        raise ValueError(f"{where}: rows without {', '.join(missing)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def as_figure(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = f"a {type(value).__name__}" if isinstance(value, (dict, list)) else json.dumps(value)
        raise ValueError(f"{where}: {what} is not a number")
    return value


def written_like(value, figure: str, where: str) -> str:
    """The JSON value written as the quoted figure is: each number to as many decimals."""
    if isinstance(value, str):
        return value
    ends = [as_figure(v, where) for v in (value if isinstance(value, list) else [value])]
    decimals = [len(part.partition(".")[2]) for part in ENDS.split(figure)]
    return "–".join(f"{v:,.{decimals[min(i, len(decimals) - 1)]}f}" for i, v in enumerate(ends))


def agrees(figure: str, expected: str) -> bool:
    quoted, recorded = (ENDS.split(t.replace(",", "").replace("−", "-").replace("+", ""))
                        for t in (figure, expected))
    try:
        return len(quoted) == len(recorded) and all(float(q) == float(r) for q, r in zip(quoted, recorded))
    except ValueError:
        return quoted == recorded


def check_figure(markdown: Path, text: str, cite: re.Match, where: str) -> str | None:
    """None when the figure just before the citation is its JSON's value, else the difference."""
    quoted = FIGURE.search(text, text.rfind("\n", 0, cite.start()) + 1, cite.start())
    if not quoted:
        raise ValueError(f"{where}: no figure just before the citation")
    data = load(markdown, cite["file"], where)
    numerator, _, denominator = cite["path"].partition(" ÷ ")
    value = walk(data, numerator, where)
    percent = (quoted["unit"] or "").startswith("%")
    if denominator:
        value = as_figure(value, where) / as_figure(walk(data, denominator, where), where)
        value = 100 * (value - 1) if percent else value
    elif percent and isinstance(value, list):
        value = [100 * as_figure(v, where) for v in value]
    elif percent and not isinstance(value, str):
        value = 100 * as_figure(value, where)
    expected = written_like(value, quoted["figure"], where)
    if agrees(quoted["figure"], expected):
        return None
    unit = quoted[0][len(quoted["figure"]):].rstrip(" \t*_")
    return f"{where}: {quoted['figure']}{unit} quoted, the JSON gives {expected}{unit}"


def update(markdown: Path) -> tuple[str, list[str], list[str], list[str]]:
    """The file's text with every block redrawn; the blocks that differed, the figures that
    differ, the errors."""
    text = markdown.read_text()
    stale, differs, errors = [], [], []

    def line(match: re.Match) -> int:
        return text.count("\n", 0, match.start()) + 1

    def redraw(match: re.Match) -> str:
        where = f"{shown(markdown)}:{line(match)}: {match['file']} {match['path']}"
        try:
            body = render(markdown, match["file"], match["path"], match["columns"], where)
        except (ValueError, ArithmeticError) as exc:
            errors.append(str(exc))
            return match.group(0)
        if body != match["body"]:
            stale.append(f"{shown(markdown)}:{line(match)}: the table from {match['file']} {match['path']}")
        head = match.group(0)[:match.start("body") - match.start()]
        return head + body + "<!-- /from -->"

    redrawn = BLOCK.sub(redraw, text)
    for cite in CITE.finditer(text):
        where = f"{shown(markdown)}:{line(cite)}: {cite['file']} {cite['path']}"
        try:
            difference = check_figure(markdown, text, cite, where)
        except (ValueError, ArithmeticError) as exc:
            errors.append(str(exc))
        else:
            differs += [difference] if difference else []
    return redrawn, stale, differs, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: bench/README.md, README.md, docs/)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a table or a cited figure differs from its JSON")
    args = parser.parse_args(argv)
    results = [(markdown, *update(markdown)) for markdown in [f.resolve() for f in args.files] or default_files()]
    errors = [error for *_, file_errors in results for error in file_errors]
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        return 2
    for markdown, text, stale, differs, _ in results:
        if stale and not args.check:
            markdown.write_text(text)
        for line in stale:
            print(("differs from its JSON: " if args.check else "redrawn: ") + line)
        for line in differs:
            print("differs from its JSON: " + line)
    any_stale, any_differs = (any(r[i] for r in results) for i in (2, 3))
    return 1 if any_differs or (args.check and any_stale) else 0


if __name__ == "__main__":
    sys.exit(main())
