"""`python -m analysis report/compare`: the files report.md lists exist, verdicts gate --strict, errors write nothing."""

import os
import re

import pyarrow.fs as pafs
import pytest

from analysis import verdicts
from analysis.cli import EXIT_ERROR, EXIT_VERDICT_FAILED, main
from analysis.load import Study, load_study
from analysis.report import build_report, figure_plan, study_verdicts, write_study_report
from study.store import StoreWriter, StudyStore
from tests.test_analysis_stores import PROVENANCE, write_bf16_store, write_lm_store, write_vision_store


def linked_files(markdown):
    """Files report.md points at: image links, SVG links and the listed files."""
    links = re.findall(r"\]\(([^)]+)\)", markdown)
    listed = re.findall(r"^- `(figures/[^`]+)`$", markdown, flags=re.M)
    return set(links) | set(listed)


def snapshot(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


def test_report_writes_every_file_it_lists(tmp_path, capsys):
    storage = str(tmp_path)
    write_vision_store(storage)
    assert main(["report", "vision", "--storage", storage]) == 0
    out = capsys.readouterr().out
    folder = os.path.join(storage, "vision")
    assert f"report: {os.path.join(folder, 'report.md')}" in out
    assert "verdicts: 3 pass, 0 fail, 0 inconclusive, 6 not-applicable" in out
    text = open(os.path.join(folder, "report.md")).read()
    files = linked_files(text)
    expected_keys = ["ushape", "ushape_finetune", "finetune_branches", "heatmap", "train_loss", "norms", "hessian_trace",
                     "ema", "status_map", "isolation", "top_k"]
    assert files == {f"figures/{k}.{ext}" for k in expected_keys for ext in ("png", "svg")}
    for name in files:
        data = open(os.path.join(folder, name), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else b"<svg" in data
        assert len(data) > 5000
    # the verdict table holds the applicable claims; the others are one line each below it
    section = text.split("## Verdicts")[1].split("Not applicable to this study:")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0].startswith("| claim | verdict |") and len(table) == 2 + 3
    assert table[2].startswith("| U-shape after the LR decay (Fig. 1") and "**pass**" in table[2]
    assert "interior minimum 4.00% at LR 0.03" in table[2] and "delta=0.0025" in table[2]
    assert table[3].startswith("| U-shape of the fine-tuned copies (Figs. 2–3") and "**pass**" in table[3]
    assert "branches from epoch 4: WD 0.001" in table[3] and "interior minimum 3.00% at LR 0.03" in table[3]
    assert "Not applicable to this study:" in text and "\n- bf16 divergence: " in text and "no precision in the config" in text
    assert not any("not-applicable" in line for line in table)
    assert "| Large LR and WD together give the best test error" in section
    grid_check = text.split("## Grid check")[1].split("## Figures")[0]
    assert "| Best finetune_test_error is not on the edge of the grid" in grid_check and "**pass**" in grid_check
    # figures that do not apply are listed with their reason, never silently skipped
    assert "- `chinchilla_val_loss`" in text and "not the LM regime" in text
    assert "- `divergence_curves`" in text and "needs ≥ 2 precisions" in text
    # trials that did not finish, the spec, provenance
    assert "RuntimeError: CUDA out of memory" in text and "| lr0.3_wd0.0_s2 |" in text
    assert "```yaml" in text and "synthetic U-shape study" in text and "`0123abc` (31 trials)" in text


def test_strict_exits_non_zero_when_a_verdict_fails_or_is_inconclusive(tmp_path, capsys):
    storage = str(tmp_path)
    write_lm_store(storage, drop=("ema_val_loss", "weight_norm", "effective_lr"))
    assert main(["report", "lm", "--storage", storage, "--strict"]) == 0
    assert "verdicts: 4 pass, 0 fail, 0 inconclusive" in capsys.readouterr().out
    write_lm_store(storage, "one-seed", drop=("ema_val_loss", "weight_norm", "effective_lr"), seeds=(0,))
    assert main(["report", "one-seed", "--storage", storage, "--strict"]) == EXIT_VERDICT_FAILED
    out = capsys.readouterr().out
    assert "verdicts: 0 pass, 0 fail, 4 inconclusive" in out and "INCONCLUSIVE Chinchilla (constant LR)" in out
    assert os.path.exists(os.path.join(storage, "one-seed", "report.md"))  # still written
    assert main(["report", "one-seed", "--storage", storage]) == 0  # without --strict


def test_unknown_or_corrupt_study_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    storage = str(tmp_path / "store")
    assert main(["report", "nope", "--storage", storage]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: no study named 'nope'") and err.count("\n") == 1
    assert not os.path.exists(storage)

    store = write_lm_store(storage)
    part = store.metric_files()[0]
    with open(part, "wb") as f:
        f.write(b"PAR1 not parquet")
    before = snapshot(store.root)
    assert main(["report", "lm", "--storage", storage]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "part-000000.parquet: corrupt Parquet file" in err and err.count("\n") == 1
    assert snapshot(store.root) == before
    assert main(["compare", "lm", "nope", "--storage", storage]) == EXIT_ERROR
    assert snapshot(store.root) == before


def test_compare_puts_two_studies_side_by_side(tmp_path, capsys):
    storage = str(tmp_path)
    write_lm_store(storage)
    write_bf16_store(storage)
    assert main(["compare", "lm", "bf16", "--storage", storage]) == 0
    location = os.path.join(storage, "lm", "compare-bf16.md")
    assert f"comparison: {location}" in capsys.readouterr().out
    text = open(location).read()
    assert "# `lm` vs `bf16`" in text and "## Best trials of `lm`" in text and "## Best trials of `bf16`" in text
    row = [line for line in text.splitlines() if line.startswith("| bf16 divergence")][0]
    assert "not-applicable" in row.split("|")[2] and "pass" in row.split("|")[3]
    for name in linked_files(text):
        assert os.path.getsize(os.path.join(storage, "lm", name)) > 5000


DROPS = {
    "vision": [("finetune_test_error", "finetune_train_loss", "finetune_hessian_trace"),
               ("test_error", "ema_test_error", "finetune_test_error"),
               ("hessian_trace", "finetune_hessian_trace", "weight_norm", "effective_lr"),
               ("epoch",), ("lr",), ("epoch", "step", "train_loss")],
    "lm": [("val_loss", "ema_val_loss"), ("tokens",), ("train_loss",), ("step", "tokens"), ("weight_norm", "lr")],
}


@pytest.mark.parametrize("kind,drop", [(k, d) for k, ds in DROPS.items() for d in ds])
def test_any_subset_of_metrics_gives_verdicts_and_figures_without_crashing(tmp_path, kind, drop):
    storage = str(tmp_path)
    (write_vision_store if kind == "vision" else write_lm_store)(storage, kind, drop=drop)
    study = load_study(kind, storage)
    finals, curves = study.finals(), study.curves()
    found = study_verdicts(study, finals, curves)
    assert len(found) == 9 and all(v.status in verdicts.OUTCOMES and v.reason for v in found)
    plan = figure_plan(study, finals, curves)
    for item in plan:
        assert (item.draw is None) != (item.reason is None)
        if item.draw is not None:
            fig = item.draw()
            assert fig.axes, item.key
    drawn = {item.key for item in plan if item.draw is not None}
    if "val_loss" in drop:
        assert not {"chinchilla_val_loss", "train_val_gap"} & drawn
        # the LM claims fall back to train_loss; the train/val claim needs both
        assert all(v.status == "not-applicable" for v in found if v.claim.startswith("WD moves train"))
    if "finetune_test_error" in drop and "test_error" not in drop:
        assert verdicts.ushape(finals).numbers["metric"] == "test_error"


def test_report_of_a_study_with_no_trials_or_only_failures(tmp_path):
    storage = str(tmp_path)
    empty = StudyStore(storage, "empty")
    empty.write_text("spec.yaml", "name: empty\ntrainable: lm\naxes: {weight_decay: [0.0, 0.1]}\nmetric: val_loss\n")
    report, location = write_study_report(load_study("empty", storage))
    assert os.path.exists(location) and all(v.status == "not-applicable" for v in report.verdicts)
    text = open(location).read()
    assert "0 trials: none started" in text and "`study.json` is missing" in text

    broken = StudyStore(storage, "broken")
    broken.write_text("spec.yaml", "name: broken\ntrainable: lm\naxes: {lr: [0.1, 0.2, 0.3]}\nmetric: val_loss\n")
    writer = StoreWriter(broken, PROVENANCE)
    for i, lr in enumerate((0.1, 0.2, 0.3)):
        writer.trial_started(f"t{i}", {"lr": lr})
        writer.trial_ended(f"t{i}", "failed", "ValueError: bad data")
    writer.close()
    report, location = write_study_report(load_study("broken", storage))
    assert "status_map" in {i.key for i in report.figures if i.draw is not None}
    assert "ValueError: bad data" in open(location).read()


def test_report_goes_through_the_stores_filesystem(tmp_path):
    """A store on a non-local filesystem (as s3:// is) gets its report through that filesystem."""
    root = tmp_path / "bucket"
    write_lm_store(str(root), drop=("ema_val_loss", "weight_norm", "effective_lr"))
    remote = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
    store = StudyStore(str(root), "lm")
    store.fs, store.root, store.storage = remote, "lm", "mock://bucket"
    plain = load_study("lm", str(root))
    study = Study(name="lm", spec=plain.spec, trials=store.read_trials(), metrics=store.read_metrics(),
                  info=plain.info, store=store)
    report, location = write_study_report(study)
    assert location == "mock://bucket/lm/report.md"
    assert (root / "lm" / "report.md").read_text() == report.markdown
    for name in report.files:
        assert (root / "lm" / name).stat().st_size > 1000
    assert not list((root / "lm").rglob("*.tmp"))


def test_build_report_in_memory_writes_nothing(tmp_path):
    storage = str(tmp_path)
    write_bf16_store(storage)
    before = snapshot(os.path.join(storage, "bf16"))
    report = build_report(load_study("bf16", storage))
    assert snapshot(os.path.join(storage, "bf16")) == before
    assert {"figures/divergence_curves.png", "figures/status_map.svg"} <= set(report.files)
    assert [v.status for v in report.verdicts if v.claim.startswith("bf16")] == ["pass"]
