"""Issue 13, findings 3-7: names, one-line errors, bounded input, validation, list and missing studies.

Every CLI call runs in this process (``run_cli``); none starts Ray: where a verb would
start it, ``ensure_ray`` is replaced by one that raises ``ReachedRay``, so a test can tell
a refusal before Ray from a verb that went on.
"""

from __future__ import annotations

import os
import re
import sys
import tracemalloc

import pytest
import yaml

from study.errors import (EXIT_CODES, EXIT_STORAGE, EXIT_STORE, EXIT_USAGE, LINE_LIMIT, StorageError,
                          abbreviate, exit_code_table, short_repr)
from study.launch import LaunchError
from study.preflight import PROBE_PREFIX, check_storage
from study.spec import load_spec, parse_yaml
from tests.real_store import analysis_main, run_cli, snapshot, study_main, write_probe_study
from tests.test_storage import s3_server, s3_uri  # noqa: F401 (a fixture)


class ReachedRay(LaunchError):
    """Raised where Ray would start: the verb was not refused before it."""


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise ReachedRay("reached ensure_ray")

    monkeypatch.setattr(sys.modules["study.launch"], "ensure_ray", refuse)  # (study.launch is also a function)


def one_error_line(outcome, code: int, fragment: str = "") -> str:
    """The outcome exited ``code`` with exactly one stderr line ``error: ...`` containing ``fragment``."""
    assert outcome.code == code, (outcome.code, outcome.err)
    assert outcome.err.startswith("error: ") and outcome.err.count("\n") == 1, outcome.err
    assert "Traceback" not in outcome.err and len(outcome.err) <= LINE_LIMIT + 1
    assert fragment in outcome.err, outcome.err
    return outcome.err


def write(path, text: str | bytes) -> str:
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as f:
        f.write(text)
    return str(path)


PROBE = "name: p\ntrainable: probe\nconfig: {steps: 2}\naxes:\n  seed: [0, 1]\n"


# ---------------------------------------------------------------- finding 3: names never lead elsewhere


def test_resume_of_a_renamed_folder_is_refused_and_writes_nothing(tmp_path, no_ray):
    storage = str(tmp_path / "store")
    write_probe_study(storage, "original", running=1)
    os.rename(os.path.join(storage, "original"), os.path.join(storage, "copy"))
    write_probe_study(storage, "original", running=1)  # the study the renamed copy's spec names
    before = snapshot(storage)
    err = one_error_line(run_cli(study_main, ["resume", "copy", "--storage", storage]), EXIT_STORE,
                         "names the study 'original' but its folder is 'copy'")
    assert "rename the folder back" in err
    assert snapshot(storage) == before


BAD_NAMES = ["../x", "/tmp/abs", "x\n", "a/b", "a..b", "..", "", "x" * 101, "x\x00"]


@pytest.mark.parametrize("verb", ["status", "resume", "report", "compare-a", "compare-b", "baseline", "launch"])
def test_one_name_check_in_every_verb(tmp_path, no_ray, verb):
    storage = str(tmp_path / "store")
    write_probe_study(storage, "tiny")
    write_probe_study(str(tmp_path), "x")  # what "../x" would reach from the store
    before = snapshot(str(tmp_path))
    for name in BAD_NAMES:
        main, argv = {
            "status": (study_main, ["status", name]), "resume": (study_main, ["resume", name]),
            "report": (analysis_main, ["report", name]), "compare-a": (analysis_main, ["compare", name, "tiny"]),
            "compare-b": (analysis_main, ["compare", "tiny", name]),
            "baseline": (analysis_main, ["report", "tiny", "--baseline", name]),
            "launch": (study_main, ["launch", "quickstart", "--dry-run", "--name", name]),
        }[verb]
        outcome = run_cli(main, [*argv, "--storage", storage])
        one_error_line(outcome, EXIT_USAGE, "is not a valid study name")
    assert snapshot(str(tmp_path)) == before


def test_a_spec_name_with_a_trailing_newline_is_refused(tmp_path):
    path = write(tmp_path / "s.yaml", 'name: "ok\\n"\ntrainable: probe\naxes: {seed: [0]}\n')
    one_error_line(run_cli(study_main, ["launch", path, "--dry-run"]), EXIT_USAGE, "name: 'ok\\n' is not a valid")


# ---------------------------------------------------------------- finding 4: one line, never a traceback


def test_a_spec_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path / "s.yaml", PROBE.encode() + b"description: caf\xe9\n")
    one_error_line(run_cli(study_main, ["launch", path, "--dry-run"]), EXIT_USAGE, "not UTF-8")


@pytest.mark.parametrize("where", ["a file", "under a file", "ftp"])
def test_a_storage_that_cannot_be_written_is_refused_before_ray(tmp_path, no_ray, where):
    spec = write(tmp_path / "s.yaml", PROBE)
    blocker = write(tmp_path / "blocker", "not a folder")
    storage = {"a file": blocker, "under a file": os.path.join(blocker, "store"),
               "ftp": "ftp://127.0.0.1:1/store"}[where]
    before = snapshot(str(tmp_path))
    one_error_line(run_cli(study_main, ["launch", spec, "--storage", storage]), EXIT_STORAGE, "--storage")
    for verb in (["list"], ["status", "p"], ["resume", "p"]):
        one_error_line(run_cli(study_main, [*verb, "--storage", storage]), EXIT_STORAGE, "--storage")
    assert snapshot(str(tmp_path)) == before


def test_a_folder_without_write_permission_is_refused_before_ray(tmp_path, no_ray, monkeypatch):
    def denied(*args, **kwargs):  # what a read-only folder does to a process that is not root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("study.preflight.tempfile.mkstemp", denied)
    spec = write(tmp_path / "s.yaml", PROBE)
    one_error_line(run_cli(study_main, ["launch", spec, "--storage", str(tmp_path / "store")]), EXIT_STORAGE,
                   f"{tmp_path} is not writable (Permission denied)")
    assert os.listdir(tmp_path) == ["s.yaml"]


def test_an_unreachable_s3_store_is_one_line():
    storage = "s3://bucket/studies?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    one_error_line(run_cli(study_main, ["status", "p", "--storage", storage]), EXIT_STORAGE,
                   "--storage s3://bucket/studies: cannot be reached")


def test_the_storage_probe_leaves_nothing_behind(tmp_path):
    check_storage(str(tmp_path / "new" / "store"), write=True)
    check_storage(str(tmp_path), write=True)
    assert os.listdir(tmp_path) == []
    os.makedirs(tmp_path / "store")
    check_storage(str(tmp_path / "store"), write=True)
    assert not [f for f in os.listdir(tmp_path / "store") if f.startswith(PROBE_PREFIX)]


def test_the_storage_probe_of_a_remote_store_leaves_nothing_behind():
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe("/probe-test/kept", b"x")
    check_storage("memory://probe-test/store", write=True)  # writes and deletes a probe in /probe-test
    assert memory.find("/probe-test") == ["/probe-test/kept"]
    with pytest.raises(StorageError, match="is a file, not a folder"):
        check_storage("memory://probe-test/kept", write=True)
    memory.rm("/probe-test", recursive=True)


def test_the_storage_probe_on_s3(s3_server):
    import pyarrow.fs as pafs

    from study.store import resolve_storage

    storage = s3_uri(s3_server, "probe-bucket")
    check_storage(storage, write=True)  # no bucket yet: reachable, created by the first write
    fs, root = resolve_storage(storage)
    fs.create_dir(root)
    check_storage(storage, write=True)
    assert [i.path for i in fs.get_file_info(pafs.FileSelector("probe-bucket", recursive=True))
            if i.type == pafs.FileType.File] == []


def corrupt_pages(path: str) -> None:
    """Flip bytes between the Parquet magic and the footer: the footer still parses, the pages do not."""
    data = bytearray(open(path, "rb").read())
    for i in range(8, min(200, len(data) - 64)):
        data[i] ^= 0x5A
    write(path, bytes(data))


def forge_part(store, columns: dict) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = json.dumps({"version": 1, "kind": "metrics", "study": store.name}).encode()
    table = pa.table(columns).replace_schema_metadata({b"wd_study": meta})
    pq.write_table(table, store.path("metrics", "trial_id=t000", "part-000009.parquet"))


DAMAGES = {
    "pages of trials.parquet": lambda store: corrupt_pages(store.path("trials.parquet")),
    "pages of a metrics part": lambda store: corrupt_pages(store.metric_files()[0]),
    "forged part, a column of another type": lambda store: forge_part(store, {"loss": ["x"], "training_iteration": [9]}),
    "malformed spec.yaml": lambda store: write(store.path("spec.yaml"), "name: [unclosed\n"),
    "spec.yaml not a mapping": lambda store: write(store.path("spec.yaml"), "- a\n- b\n"),
    "spec.yaml not UTF-8": lambda store: write(store.path("spec.yaml"), b"name: tiny\xff\n"),
    "a metric name that is a path": lambda store: write(store.path("spec.yaml"), yaml.safe_dump(
        {**yaml.safe_load(open(store.path("spec.yaml"))), "metric": "../../escape"})),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_store_is_one_line_exit_1_and_nothing_is_written(tmp_path, no_ray, damage):
    storage = str(tmp_path / "store")
    store = write_probe_study(storage, "tiny", running=1)
    write_probe_study(storage, "other")
    DAMAGES[damage](store)
    before = snapshot(str(tmp_path))
    damaged_read = {"status": damage not in ("pages of a metrics part", "forged part, a column of another type")}
    for main, argv, reads_all in [(study_main, ["resume", "tiny"], True),
                                  (study_main, ["status", "tiny"], damaged_read["status"]),
                                  (analysis_main, ["report", "tiny"], True),
                                  (analysis_main, ["compare", "other", "tiny"], True),
                                  (analysis_main, ["compare", "tiny", "other"], True)]:
        outcome = run_cli(main, [*argv, "--storage", storage])
        if reads_all:
            one_error_line(outcome, EXIT_STORE, "tiny")
        else:  # status reads spec.yaml and trials.parquet only
            assert outcome.code == 0 and outcome.err == ""
    assert snapshot(str(tmp_path)) == before


def test_infinite_gpus_are_refused(tmp_path):
    one_error_line(run_cli(study_main, ["launch", "quickstart", "--dry-run", "--set", "resources.gpu=.inf"]),
                   EXIT_USAGE, "resources.gpu: expected a finite number, got inf")


def test_debug_adds_the_traceback(tmp_path):
    path = write(tmp_path / "s.yaml", b"\xff")
    assert "Traceback" not in run_cli(study_main, ["launch", path, "--dry-run"]).err
    storage = write(tmp_path / "blocker", "x")
    outcome = run_cli(study_main, ["status", "p", "--storage", storage, "--debug"])
    assert outcome.code == EXIT_STORAGE and "Traceback" in outcome.err
    assert outcome.err.strip().splitlines()[-1].startswith("error: --storage")


def test_a_usage_error_is_one_line(capsys):
    outcome = run_cli(study_main, ["launch", "quickstart", "--max-trials", "many"])
    one_error_line(outcome, EXIT_USAGE, "--max-trials: invalid int value")
    one_error_line(run_cli(analysis_main, ["nonsense"]), EXIT_USAGE, "invalid choice")


# ---------------------------------------------------------------- finding 5: input that cannot exhaust the machine


def billion_point_grid(tmp_path) -> str:
    """Nine axes of ten values: 10**9 grid points in a 600-byte spec."""
    axes = {name: list(range(1, 11)) for name in ("dim", "steps", "report_every", "seed", "fail_at_step",
                                                   "crash_at_step", "checkpoint_every")}
    axes.update(lr=[0.01 * i for i in range(1, 11)], curvature=[0.5 * i for i in range(1, 11)])
    return write(tmp_path / "huge.yaml", yaml.safe_dump({"name": "huge", "trainable": "probe", "axes": axes}))


@pytest.fixture
def no_enumeration(monkeypatch):
    """Any enumeration of more than 10**5 combinations fails the test at once (instead of spinning)."""
    import itertools

    real = itertools.product

    def bounded(*iterables):
        for n, combo in enumerate(real(*iterables)):
            if n > 100_000:
                raise AssertionError("the grid was enumerated")
            yield combo

    monkeypatch.setattr("study.spec.itertools.product", bounded)


def test_a_huge_grid_is_refused_with_its_count_before_it_is_enumerated(tmp_path, no_enumeration):
    path = billion_point_grid(tmp_path)
    one_error_line(run_cli(study_main, ["launch", path, "--dry-run"]), EXIT_USAGE,
                   "1,000,000,000 trials, more than the cap of 100,000")


def test_a_raised_cap_dry_runs_a_huge_grid_with_bounded_output(tmp_path, no_enumeration):
    path = billion_point_grid(tmp_path)
    outcome = run_cli(study_main, ["launch", path, "--dry-run", "--max-trials", str(10**9)])
    assert outcome.code == 0, outcome.err
    lines = outcome.out.splitlines()
    assert len(lines) < 60 and lines[-1] == "1000000000 trials"
    assert "... 999,999,950 more grid points ..." in outcome.out
    assert re.search(r"^999999999 +10 +10 +5\.0 ", outcome.out, re.M)  # the last grid point, computed


def test_the_grid_points_shown_are_the_grids(tmp_path):
    spec = load_spec(write(tmp_path / "s.yaml", PROBE.replace("seed: [0, 1]", "seed: [0, 1, 2]\n  lr: [0.1, 0.2]")))
    assert spec.grid_points(range(spec.num_points)) == spec.grid()


def alias_bomb() -> str:
    """A ~600-byte flow-style YAML value that expands to 9**8 (43 million) strings; its repr is 300 MB."""
    levels = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&{name} [" + ", ".join([f"*{previous}"] * 9) + "]" for previous, name in zip("abcdefg", "bcdefgh")]
    return "[" + ", ".join(levels) + "]"


@pytest.mark.parametrize("where", ["spec", "--set"])
def test_a_yaml_alias_bomb_is_one_short_line_in_little_memory(tmp_path, where):
    if where == "spec":
        text = f"name: bomb\ntrainable: probe\naxes: {{seed: [0]}}\nconfig: {{steps: {alias_bomb()}}}\n"
        argv = ["launch", write(tmp_path / "bomb.yaml", text), "--dry-run"]
    else:
        argv = ["launch", "quickstart", "--dry-run", "--set", f"steps={alias_bomb()}"]
    assert len(argv[-1]) < 1000
    tracemalloc.start()
    try:
        outcome = run_cli(study_main, argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_error_line(outcome, EXIT_USAGE, "more than 100,000 values")
    assert peak < 50 * 2**20


def test_abbreviated_values_and_lines():
    assert len(short_repr(list(range(10**6)))) <= 60
    nested = []
    nested.append(nested)
    assert len(short_repr(nested)) <= 60
    assert short_repr(10**5000).startswith("<int") or len(short_repr(10**5000)) <= 60
    line = abbreviate("x" * 10_000)
    assert len(line) <= LINE_LIMIT and "characters cut" in line
    assert abbreviate("a\nb") == "a b"


# ---------------------------------------------------------------- finding 6: every number checked


@pytest.mark.parametrize("override,fragment", [
    ("resources.cpu=.inf", "resources.cpu: expected a finite number, got inf"),
    ("resources.cpu=0", "resources.cpu: expected a number > 0"),
    ("warmup_steps=100000000000000000000", "config.warmup_steps: 100000000000000000000 is out of range"),
    ("axes.seed=[0, 18446744073709551616]", "axes.seed[1]: 18446744073709551616 is out of range"),
    ("stop.time_total_s=-1", "stop.time_total_s: expected seconds > 0"),
    ("stop.time_total_s=.nan", "stop.time_total_s: expected a finite number, got nan"),
    ("stop.training_iteration=0.5", "stop.training_iteration: expected an integer >= 1"),
    ("lr=1e400", "config.lr: expected a finite number, got inf"),
    ("max_trials=0", "max_trials: expected a positive integer"),
])
def test_numbers_are_finite_and_in_range(override, fragment):
    one_error_line(run_cli(study_main, ["launch", "quickstart", "--dry-run", "--set", override]), EXIT_USAGE,
                   fragment)


def test_search_seed_fits_the_samplers(tmp_path):
    spec = PROBE + "search: random\nnum_samples: 2\nsearch_seed: 4294967296\n"
    spec = spec.replace("seed: [0, 1]", "seed: [0]\n  lr: {loguniform: [0.01, 0.1]}")
    one_error_line(run_cli(study_main, ["launch", write(tmp_path / "s.yaml", spec), "--dry-run"]), EXIT_USAGE,
                   "search_seed: expected an integer >= 0 and < 2**32")


@pytest.mark.parametrize("text,value", [("1e308", 1e308), ("1e-3", 1e-3), ("-2.5E+2", -250.0), (".5e1", 5.0),
                                        ("1.0e5", 1e5), ("1_000", 1000), ("0.1", 0.1), ("1e3x", "1e3x")])
def test_yaml_numbers_as_a_user_writes_them(text, value):
    assert parse_yaml(text, "t") == value and type(parse_yaml(text, "t")) is type(value)


def test_a_large_learning_rate_is_a_number(capsys):
    spec = load_spec("quickstart", ["lr=1e2"])
    assert spec.config["lr"] == 100.0


# ---------------------------------------------------------------- finding 7: list and missing studies


def test_list_shows_a_corrupt_study_on_its_own_line_and_the_good_ones(tmp_path):
    storage = str(tmp_path / "store")
    for name in ("alpha", "broken", "zulu"):
        write_probe_study(storage, name)
    corrupt_pages(os.path.join(storage, "broken", "trials.parquet"))
    outcome = run_cli(study_main, ["list", "--storage", storage])
    one_error_line(outcome, EXIT_STORE, "1 of 3 studies cannot be read (broken; see above)")
    listed = {line.split()[0]: line for line in outcome.out.split("studies in", 1)[1].splitlines()[1:]}
    assert listed["alpha"].endswith("4 trials: 4 finished") and listed["zulu"].endswith("4 trials: 4 finished")
    assert "unreadable" in listed["broken"]


def test_a_missing_study_exits_the_same_in_every_verb(tmp_path, no_ray):
    storage = str(tmp_path / "store")
    write_probe_study(storage, "tiny")
    for main, argv in [(study_main, ["status", "nope"]), (study_main, ["resume", "nope"]),
                       (analysis_main, ["report", "nope"]), (analysis_main, ["compare", "tiny", "nope"]),
                       (analysis_main, ["compare", "nope", "tiny"]),
                       (analysis_main, ["report", "tiny", "--baseline", "nope"])]:
        one_error_line(run_cli(main, [*argv, "--storage", storage]), EXIT_STORE, "no study named 'nope'")


# ---------------------------------------------------------------- the table


def test_docs_show_the_exit_code_table():
    docs = open(os.path.join(os.path.dirname(__file__), "..", "docs", "cli.md"), encoding="utf-8").read()
    assert exit_code_table() in docs
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 70, 130}
