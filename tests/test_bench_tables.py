"""Recorded benchmark tables are drawn from their JSON (bench/tables.py), and the tables and the
figures quoted in prose are checked against it."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "bench" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_every_table_and_cited_figure_in_the_docs_is_its_json():
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


# Figures quoted in prose, each followed by a citation of its JSON value (see bench/tables.py).

DATA = {"summary": [{"grid": 16, "case": "unpacked", "speed-up": 1.0, "min-max": "1.00-1.00"},
                    {"grid": 16, "case": "pack 4", "speed-up": 0.8249, "min-max": "0.75-0.86"},
                    {"grid": 64, "case": "pack 4", "speed-up": 1.5}],
        "rates": {"one": 15369.2, "two": 24535.02, "share": 0.0634, "walls": [59.16, 61.18]}}


def cited(tmp_path, *lines: str) -> Path:
    """x.md holding the lines, beside r.json holding DATA."""
    (tmp_path / "r.json").write_text(json.dumps(DATA))
    md = tmp_path / "x.md"
    md.write_text("# title\n\n" + "\n".join(lines) + "\n")
    return md


def check(md, capsys) -> tuple[int, str, str]:
    code = tables.main([str(md), "--check"])
    out, err = capsys.readouterr()
    return code, out, err


def test_figures_that_are_their_json_values_pass(tmp_path, capsys):
    md = cited(tmp_path,
               "by position 0.82× <!-- r.json summary.1.speed-up --> and by field "
               "0.82× <!-- r.json summary[grid=16,case=pack 4].speed-up -->,",
               "in bold **1.5×** <!-- r.json summary[grid=64].speed-up -->",
               "15,369 tokens/s <!-- r.json rates.one --> | 6.3 % <!-- r.json rates.share --> | "
               "59.2–61.2 s <!-- r.json rates.walls -->",
               "a string: 0.75–0.86 <!-- r.json summary[case=pack 4,grid=16].min-max -->")
    assert check(md, capsys) == (0, "", "")


def test_a_figure_is_compared_at_its_own_decimals(tmp_path, capsys):
    # JSON 0.8249: 0.82 at two decimals, 0.8 at one, 1 at none (and 0.825 at three)
    for figure in ("0.82×", "0.8×", "1×", "0.82", "0.825"):
        assert check(cited(tmp_path, f"{figure} <!-- r.json summary.1.speed-up -->"), capsys)[0] == 0, figure
    for figure in ("0.83×", "0.824×", "0.9×", "0.81"):
        assert check(cited(tmp_path, f"{figure} <!-- r.json summary.1.speed-up -->"), capsys)[0] == 1, figure
    # 15369.2: thousands separators or none; 0.0634 in % is 6.34: 6.3 % and 6 %, not 6.4 %
    assert check(cited(tmp_path, "15369 <!-- r.json rates.one --> 6 % <!-- r.json rates.share -->"), capsys)[0] == 0
    assert check(cited(tmp_path, "15,370 <!-- r.json rates.one -->"), capsys)[0] == 1
    assert check(cited(tmp_path, "6.4 % <!-- r.json rates.share -->"), capsys)[0] == 1


def test_a_figure_that_differs_is_named_with_its_file_and_line(tmp_path, capsys):
    ratio = "r.json summary[case=unpacked].speed-up ÷ summary[grid=16,case=pack 4].speed-up"
    md = cited(tmp_path, f"a ratio 0.82× <!-- {ratio} -->",
               "here 0.83× <!-- r.json summary[grid=16,case=pack 4].speed-up -->, "
               "there 0.75–0.87 <!-- r.json summary.1.min-max -->")
    code, out, err = check(md, capsys)
    assert code == 1 and err == ""
    # line 3 (after the title and a blank line); 1 / 0.8249 = 1.2123
    assert out.splitlines() == [
        f"differs from its JSON: {md.resolve()}:3: {ratio}: 0.82× quoted, the JSON gives 1.21×",
        f"differs from its JSON: {md.resolve()}:4: r.json summary[grid=16,case=pack 4].speed-up: "
        "0.83× quoted, the JSON gives 0.82×",
        f"differs from its JSON: {md.resolve()}:4: r.json summary.1.min-max: "
        "0.75–0.87 quoted, the JSON gives 0.75-0.86",
    ]


def test_a_ratio_of_two_values_as_a_factor_or_a_change(tmp_path, capsys):
    # 24535.02 / 15369.2 = 1.59638: 1.60×, +60 %; 15369.2 / 24535.02 - 1 = -0.3736: −37 %
    ratio = "r.json rates.two ÷ rates.one"
    md = cited(tmp_path, f"1.60× <!-- {ratio} --> +60 % <!-- {ratio} --> −37 % <!-- r.json rates.one ÷ rates.two -->")
    assert check(md, capsys)[0] == 0
    md = cited(tmp_path, f"1.59× <!-- {ratio} -->", f"+59 % <!-- {ratio} -->")
    code, out, _ = check(md, capsys)
    assert code == 1
    assert "1.59× quoted, the JSON gives 1.60×" in out and "+59 % quoted, the JSON gives 60 %" in out


def test_a_citation_whose_json_or_path_is_missing_is_an_error(tmp_path, capsys):
    md = cited(tmp_path, "0.82× <!-- nowhere.json summary.1.speed-up -->",
               "0.82× <!-- r.json summary.7.speed-up -->",
               "0.82× <!-- r.json summary[case=pack 16].speed-up -->",
               "0.82× <!-- r.json summary[case=pack 4].speed-up -->",
               "the figure is missing <!-- r.json summary.1.speed-up -->",
               "a dict 3 <!-- r.json rates -->")
    code, out, err = check(md, capsys)
    where = f"error: {md.resolve()}"
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"{where}:3: nowhere.json summary.1.speed-up: no such JSON",
        f"{where}:4: r.json summary.7.speed-up: no '7' on the path 'summary.7.speed-up'",
        f"{where}:5: r.json summary[case=pack 16].speed-up: [case=pack 16] matches 0 elements on the path "
        "'summary[case=pack 16].speed-up'",
        f"{where}:6: r.json summary[case=pack 4].speed-up: [case=pack 4] matches 2 elements on the path "
        "'summary[case=pack 4].speed-up'",
        f"{where}:7: r.json summary.1.speed-up: no figure just before the citation",
        f"{where}:8: r.json rates: a dict is not a number",
    ]


def test_the_rewrite_redraws_tables_and_leaves_figures_as_written(tmp_path, capsys):
    md = cited(tmp_path, "<!-- from r.json summary[case=pack 4] grid,speed-up -->", "<!-- /from -->",
               "wrong 0.9× <!-- r.json summary.1.speed-up -->")
    assert tables.main([str(md)]) == 1  # the table is redrawn, the figure differs and stays
    assert md.read_text() == ("# title\n\n<!-- from r.json summary[case=pack 4] grid,speed-up -->\n"
                              "| grid | speed-up |\n|---|---|\n| 16 | 0.825 |\n| 64 | 1.5 |\n<!-- /from -->\n"
                              "wrong 0.9× <!-- r.json summary.1.speed-up -->\n")
    out = capsys.readouterr().out
    assert f"redrawn: {md.resolve()}:3: the table" in out and "0.9× quoted, the JSON gives 0.8×" in out
