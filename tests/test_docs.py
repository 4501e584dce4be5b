"""The README and docs/*.md: their shell commands run as written, the files they quote are
the real files, and their links lead somewhere.

Every command in a ```bash block is classified by ``RULES`` (first match wins):

- **run**: cheap and read-only — `--help`, `launch ... --dry-run`, `study list`. Run as written
  from the repository root, through the same ``main`` that ``python -m study|analysis`` calls;
  it must exit 0.
- **dry-run**: a `launch` that would train. Run with `--dry-run` appended (and without
  `--storage`/`--address`, which a dry run does not touch): the preset or spec file, every
  `--set` and every trial's config must validate. The training itself is not run here.
- **skip**: expensive, or needs what a test machine does not have; the reason is shown by
  pytest (``-rs``). `tests/test_example_logreg.py` runs the write-a-trainable guide's launch and
  report commands for real.

A command no rule matches fails the test: a new kind of command needs a deliberate rule.
"""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# (pattern on the command as one line, action, reason for a skip)
RULES = [
    (r"(^|&& *)(\./install\.sh|pip |python3? -m venv)", "skip", "installs packages"),
    (r"^python -m pytest\b", "skip", "runs the test suite (this test is part of it)"),
    (r"^(ray|aws|gsutil|optuna-dashboard) ", "skip", "needs a Ray cluster or a cloud account"),
    (r"^python -m (study|analysis)( \S+)* (--help|-h)$", "run", ""),
    (r"^python -m (study|analysis) --help$", "run", ""),
    (r"^python -m study launch .* --dry-run( |$)", "run", ""),
    (r"^python -m study list( --storage \S+)?$", "run", ""),
    (r"^python -m study launch ", "dry-run", ""),
    (r"^python -m study (resume|status) ", "skip", "needs a stored study (and, for resume, trains)"),
    (r"^python -m analysis (report|compare) ", "skip",
     "needs a stored study; tests/test_example_logreg.py runs the guide's report on a real one"),
    (r"^python -m analysis import ", "skip", "writes a study into the store"),
    (r"^python -m study\.cluster (lock|check) ", "skip",
     "writes or checks the cluster lock file; tests/test_cluster_recipes.py runs both"),
    (r"^(cd|sbatch|docker|kubectl) ", "skip",
     "a step on a SLURM login node, Docker or Kubernetes; tests/test_cluster_recipes.py checks the sbatch "
     "script (as a two-node local cluster) and the manifest"),
    (r"^python docs/presets/\S+-design\.py ", "skip", "a preset's design script: judges stored runs of the preset"),
    (r"^grep .* /tmp/\S+\.log$", "skip", "reads the log of a recorded run"),
    (r"^python bench/\S+\.py --help$", "run", ""),
    (r"^python bench/", "skip", "a benchmark: minutes to hours"),
]


def bash_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for every command of the file's ```bash blocks: continuation
    lines joined, comments and blank lines dropped."""
    commands, lines = [], path.read_text().splitlines()
    inside, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if not inside:
            continue
        if not pending:
            start = number
        pending += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if line.rstrip().endswith("\\"):
            continue
        words = shlex.split(pending, comments=True)
        if words:
            commands.append((start, " ".join(shlex.quote(w) for w in words)))
        pending = ""
    return commands


def classify(command: str) -> tuple[str, str]:
    for pattern, action, reason in RULES:
        if re.search(pattern, command):
            return action, reason
    return "unclassified", ""


def _cases():
    for path in DOCS:
        for line, command in bash_commands(path):
            action, reason = classify(command)
            marks = [pytest.mark.skip(reason=f"{reason}: {command}")] if action == "skip" else []
            yield pytest.param(command, action, id=f"{path.relative_to(ROOT)}:{line}", marks=marks)


def _main(module: str):
    if module == "study":
        from study.cli import main
    else:
        from analysis.cli import main
    return main


@pytest.mark.parametrize("command, action", list(_cases()))
def test_command_runs_as_written(command, action, monkeypatch, capsys):
    assert action != "unclassified", f"no rule in tests/test_docs.py says how to check: {command}"
    monkeypatch.chdir(ROOT)
    words = shlex.split(command)
    if words[:2] == ["python", "-m"]:
        argv = words[3:]
        if action == "dry-run":
            argv = _without_options(argv, ("--storage", "--address")) + ["--dry-run"]
        try:
            code = _main(words[2])(argv)
        except SystemExit as exc:  # argparse's --help
            code = exc.code
        captured = capsys.readouterr()
        assert code == 0, f"{command}\n{captured.err[-2000:]}"
        assert "Traceback" not in captured.err
    else:  # python bench/x.py --help: a script of its own
        import subprocess
        import sys

        done = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"


def _without_options(argv: list[str], options: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in options:
            skip = True
        elif not word.startswith(tuple(o + "=" for o in options)):
            out.append(word)
    return out


def test_the_rules_classify_as_documented():
    assert classify("python -m study launch quickstart --dry-run") == ("run", "")
    assert classify("python -m study launch quickstart") == ("dry-run", "")
    assert classify("python -m study list") == ("run", "")
    assert classify("python -m analysis report --help") == ("run", "")
    assert classify("python -m analysis report logreg --storage /tmp/x")[0] == "skip"
    assert classify("python3 -m venv .venv && . .venv/bin/activate && ./install.sh")[0] == "skip"
    assert classify("rm -rf studies") == ("unclassified", "")
    assert _without_options(["launch", "q", "--storage", "s3://b/p", "--address=x", "--set", "a=1"],
                            ("--storage", "--address")) == ["launch", "q", "--set", "a=1"]


def test_commands_are_extracted_as_a_shell_reads_them(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("text\n```bash\n# a comment\npython -m study launch x \\\n  --set 'axes.lr=[0.1, 0.3]'   # why\n\n"
                   "python -m study list\n```\n```yaml\nname: not a command\n```\n")
    assert bash_commands(doc) == [(4, "python -m study launch x --set 'axes.lr=[0.1, 0.3]'"),
                                  (7, "python -m study list")]


# ---------------------------------------------------------------- quoted files and links

QUOTE = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_files_are_the_real_files(path):
    for name, text in QUOTE.findall(path.read_text()):
        assert (ROOT / name).read_text() == text, f"{path.name} quotes {name}, which has changed since"


def test_the_guide_quotes_its_example_in_at_most_60_lines():
    quoted = dict(QUOTE.findall((ROOT / "docs" / "write-a-trainable.md").read_text()))
    assert set(quoted) == {"examples/logreg/trainable.py", "examples/logreg/study.yaml"}
    assert len(quoted["examples/logreg/trainable.py"].splitlines()) <= 60


# Docs that other branches write; the README links them already. Remove a name once its file
# is merged (the test below fails until then, so the list cannot go stale).
PENDING: set[str] = set()
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_links_lead_to_files_and_headings():
    for path in DOCS:
        for target, anchor in LINK.findall(path.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            file = (path.parent / target).resolve()
            name = str(file.relative_to(ROOT)) if file.is_relative_to(ROOT) else str(file)
            if name in PENDING:
                continue
            assert file.exists(), f"{path.name} links {target}, which does not exist"
            if anchor and file.suffix == ".md":
                assert anchor[1:] in _anchors(file), f"{path.name} links {target}{anchor}: no such heading"
    for name in PENDING:
        assert not (ROOT / name).exists(), f"{name} exists now: remove it from PENDING in tests/test_docs.py"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_the_readme_fits_on_a_few_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
