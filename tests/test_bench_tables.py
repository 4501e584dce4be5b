"""Recorded benchmark tables are drawn from their JSON (bench/tables.py), and checked against it."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "bench" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_every_table_in_the_docs_is_its_json():
    assert tables.main(["--check"]) == 0


def write(tmp_path, summary):
    (tmp_path / "r.json").write_text(json.dumps({"summary": summary}))
    md = tmp_path / "x.md"
    md.write_text("before\n<!-- from r.json summary.writers name,write_s=write s,writes -->\n<!-- /from -->\nafter\n")
    return md


def test_a_block_is_drawn_from_its_json(tmp_path, capsys):
    md = write(tmp_path, {"writers": {"incremental": {"write_s": 33.14159, "writes": 12345},
                                      "whole": {"write_s": 0.012345, "writes": 7}}})
    assert tables.main([str(md), "--check"]) == 1  # empty block: differs
    assert tables.main([str(md)]) == 0
    assert md.read_text() == ("before\n<!-- from r.json summary.writers name,write_s=write s,writes -->\n"
                              "| name | write s | writes |\n|---|---|---|\n"
                              "| incremental | 33.1 | 12,345 |\n| whole | 0.0123 | 7 |\n"
                              "<!-- /from -->\nafter\n")
    assert tables.main([str(md), "--check"]) == 0
    # the JSON changes: the check names the block, a redraw follows it
    (tmp_path / "r.json").write_text(json.dumps({"summary": {"writers": {"incremental": {"write_s": 35700.0,
                                                                                          "writes": 1}}}}))
    capsys.readouterr()
    assert tables.main([str(md), "--check"]) == 1
    assert "differs from its JSON: " in capsys.readouterr().out
    tables.main([str(md)])
    assert "| incremental | 35,700 | 1 |\n<!-- /from -->" in md.read_text()


def test_a_key_the_json_lacks_is_one_error_line(tmp_path, capsys):
    md = write(tmp_path, {"writers": {"incremental": {"write_s": 1.0}}})
    assert tables.main([str(md)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rows without writes" in err and err.count("\n") == 1
    assert "<!-- /from -->" in md.read_text() and "|" not in md.read_text()  # nothing written
