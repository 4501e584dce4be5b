"""Imports go one way: analysis → study → trainables (bench, examples and tests on top).

Read from the source with ``ast`` (every import statement, at module level or inside a
function), so a lazy import inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package → the packages of ours it must never import
FORBIDDEN = {"trainables": {"study", "analysis", "bench", "examples", "tests"},
             "study": {"analysis", "bench", "examples", "tests"},
             "analysis": {"trainables", "bench", "examples", "tests"}}


# the trainables' public contract (names, config dataclasses, metric names): analysis' importer
# validates a published table's configs with it, as a spec is validated
ALLOWED = {"trainables.registry"}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names if alias.name not in ALLOWED}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module not in ALLOWED:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
             for path in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in wrong.items() if v}


def test_the_report_after_a_study_is_composed_through_an_entry_point():
    from study.cli import AFTER_STUDY, after_study  # noqa: F401 (the hook runner study offers)
    import importlib.metadata

    hooks = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=AFTER_STUDY)}
    assert hooks == {"report": "analysis.report:after_study"}
