"""Property-based tests of the command line (issue 13): whatever the input or the damage,
one line and a documented exit code, never a traceback, nothing written.

- Random YAML specs (well-formed, mangled, raw text, non-UTF-8 bytes) and random ``--set``
  values against ``launch --dry-run``: exit 0 or 2; on 2 one ``error:`` line; nothing written.
- Random damage to a real store (truncated, flipped bytes, foreign files, deleted files, a
  rewritten spec.yaml) against ``status``, ``resume``, ``report``, ``list`` and ``compare``:
  one line and a documented exit code, and every stored byte unchanged.

Everything runs in this process; nothing starts Ray (``resume`` stops where Ray would
start, which shows every check before it passed). The default run keeps few examples;
``pytest -m slow tests/test_properties.py`` runs many more.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.errors import EXIT_STORE, EXIT_USAGE, LINE_LIMIT
from study.launch import LaunchError
from tests.real_store import analysis_main, run_cli, snapshot, study_main, write_probe_study

# no example database: the suite writes nothing into the checkout
QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 derandomize=True, database=None)
QUICK_STORE = settings(QUICK, max_examples=6)
MANY = settings(QUICK, max_examples=400, derandomize=False)
MANY_STORE = settings(QUICK, max_examples=60, derandomize=False)


def assert_one_line_or_success(outcome, allowed: set[int]) -> None:
    assert outcome.code in allowed, (outcome.code, outcome.err[-2000:])
    assert "Traceback" not in outcome.err, outcome.err[-2000:]
    if outcome.code == 0:
        assert outcome.err == "", outcome.err[-2000:]
    else:
        assert outcome.err.startswith("error: ") and outcome.err.count("\n") == 1, outcome.err[-2000:]
        assert len(outcome.err) <= LINE_LIMIT + 1


# ---------------------------------------------------------------- random specs against launch --dry-run

PROBE_KEYS = ["lr", "weight_decay", "curvature", "noise", "dim", "steps", "report_every", "seed", "sleep_s",
              "checkpoint_every", "divergence_ratio", "fail_at_step"]
SPEC_KEYS = ["search", "metric", "mode", "max_concurrent", "max_failures", "keep_checkpoints", "num_samples",
             "search_seed", "pack", "max_trials", "description", "scheduler", "sampler"]

scalars = st.one_of(
    st.integers(min_value=-3, max_value=40), st.integers(), st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=1e-6, max_value=10),
    st.booleans(), st.none(), st.text(max_size=12),
    st.sampled_from(["grid", "random", "optuna", "min", "max", "loss", "probe", "asha", "tpe", "1e-3", "1e308"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
ranges = st.fixed_dictionaries({}, optional={
    "loguniform": st.lists(scalars, max_size=3), "uniform": st.lists(scalars, max_size=3),
    "randint": st.lists(scalars, max_size=3), "choice": st.lists(scalars, max_size=3)})
axes = st.dictionaries(st.one_of(st.sampled_from(PROBE_KEYS), st.text(max_size=6)),
                       st.one_of(st.lists(scalars, min_size=1, max_size=4, unique_by=repr), ranges, values),
                       max_size=4)
specs = st.fixed_dictionaries(
    {"name": st.one_of(st.just("p"), st.text(max_size=12)), "trainable": st.sampled_from(["probe", "probe", "lm", "x"]),
     "axes": axes},
    optional={"config": st.dictionaries(st.one_of(st.sampled_from(PROBE_KEYS), st.text(max_size=6)), scalars, max_size=4),
              "resources": st.dictionaries(st.sampled_from(["cpu", "gpu", "tpu"]), scalars, max_size=2),
              "stop": st.dictionaries(st.sampled_from(["time_total_s", "training_iteration", "loss", "epochs"]),
                                      scalars, max_size=2),
              **{key: values for key in SPEC_KEYS}})


small = st.one_of(st.integers(min_value=0, max_value=12), st.floats(min_value=1e-4, max_value=3), st.booleans())
plausible_values = {
    "search": st.sampled_from(["grid", "random", "optuna"]), "metric": st.sampled_from(["loss", "weight_norm", "step"]),
    "mode": st.sampled_from(["min", "max"]), "max_concurrent": st.integers(-1, 4), "max_failures": st.integers(-1, 3),
    "keep_checkpoints": st.one_of(st.none(), st.integers(0, 3)), "num_samples": st.integers(0, 5),
    "search_seed": st.one_of(st.integers(-1, 5), st.just(2**32)), "pack": st.integers(0, 4),
    "max_trials": st.one_of(st.integers(0, 10), st.just(10**6)),
    "scheduler": st.one_of(st.sampled_from(["asha", "median", "none"]),
                           st.fixed_dictionaries({"asha": st.dictionaries(st.sampled_from(
                               ["grace_period", "max_t", "reduction_factor", "time_attr"]), small, max_size=2)})),
    "sampler": st.sampled_from(["tpe", "random", "cmaes", "nope"]),
    "resources": st.fixed_dictionaries({}, optional={"cpu": small, "gpu": small}),
    "stop": st.dictionaries(st.sampled_from(["time_total_s", "training_iteration", "loss"]), small, max_size=2),
}
plausible_axes = st.dictionaries(
    st.sampled_from(PROBE_KEYS),
    st.one_of(st.lists(small, min_size=1, max_size=3, unique_by=repr),
              st.fixed_dictionaries({}, optional={"loguniform": st.lists(small, min_size=2, max_size=2),
                                                  "uniform": st.lists(small, min_size=2, max_size=2),
                                                  "randint": st.lists(st.integers(0, 9), min_size=2, max_size=2),
                                                  "choice": st.lists(small, min_size=1, max_size=3)})),
    min_size=1, max_size=3)
plausible_specs = st.fixed_dictionaries(
    {"name": st.sampled_from(["p", "p.1", "p-q_r"]), "trainable": st.just("probe"), "axes": plausible_axes,
     "config": st.dictionaries(st.sampled_from(PROBE_KEYS), small, max_size=3)},
    optional=plausible_values)


@st.composite
def spec_texts(draw) -> bytes:
    """A spec file's bytes: dumped YAML, the same with characters cut or inserted, raw text, or raw bytes."""
    kind = draw(st.sampled_from(["plausible", "plausible", "plausible", "yaml", "mangled", "text", "bytes"]))
    if kind == "plausible":  # mostly valid specs with a few values off: they reach the deeper checks
        return yaml.safe_dump(draw(plausible_specs), sort_keys=False).encode()
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    text = yaml.safe_dump(draw(specs), sort_keys=False, allow_unicode=True)
    if kind == "mangled":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=10))
        text = text[:at] + draw(st.sampled_from(["", ":", "- ", "&a ", "*a", "[", "{", "'", "\t", "!!python/object "])) + text[at + cut:]
    return text.encode("utf-8", "surrogatepass")


override_keys = st.one_of(st.sampled_from(PROBE_KEYS + SPEC_KEYS + [f"axes.{k}" for k in PROBE_KEYS] +
                                          ["resources.cpu", "resources.gpu", "stop.time_total_s", "name", "config",
                                           "axes", "stop", "trainable", "axes.lr.low", "", "."]),
                          st.text(max_size=10))
override_values = st.one_of(st.text(max_size=30),
                            scalars.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()),
                            values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))

PROBE_SPEC = "name: p\ntrainable: probe\nconfig: {steps: 2}\naxes:\n  seed: [0, 1]\n  lr: [0.1, 0.2]\n"


def check_dry_run(text: bytes, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "spec.yaml")
        with open(path, "wb") as f:
            f.write(text)
        argv = ["launch", path, "--dry-run", "--storage", os.path.join(folder, "store")]
        for item in overrides:
            argv += ["--set", item]
        outcome = run_cli(study_main, argv)
        assert_one_line_or_success(outcome, {0, EXIT_USAGE})
        if outcome.code == 0:
            assert len(outcome.out.splitlines()) < 120
        assert os.listdir(folder) == ["spec.yaml"]  # nothing written: no store, no probe, no temp file


@QUICK
@given(text=spec_texts(), overrides=st.lists(st.tuples(override_keys, override_values), max_size=2))
def test_random_specs_dry_run_to_exit_0_or_one_line(text, overrides):
    check_dry_run(text, [f"{k}={v}" for k, v in overrides])


@QUICK
@given(overrides=st.lists(st.tuples(override_keys, override_values), min_size=1, max_size=3))
def test_random_overrides_of_a_good_spec_dry_run_to_exit_0_or_one_line(overrides):
    check_dry_run(PROBE_SPEC.encode(), [f"{k}={v}" for k, v in overrides])


@pytest.mark.slow
@MANY
@given(text=spec_texts(), overrides=st.lists(st.tuples(override_keys, override_values), max_size=3))
def test_many_random_specs_and_overrides(text, overrides):
    check_dry_run(text, [f"{k}={v}" for k, v in overrides])


# ---------------------------------------------------------------- random damage to a real store


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> str:
    """A real store, made once: study ``tiny`` (4 trials, one left running) and ``other``."""
    storage = str(tmp_path_factory.mktemp("pristine") / "store")
    write_probe_study(storage, "tiny", running=1)
    write_probe_study(storage, "other")
    return storage


@st.composite
def damages(draw, files: list[str]):
    """One damage to the files of study ``tiny`` (paths relative to the store root)."""
    kind = draw(st.sampled_from(["truncate", "flip", "foreign", "delete", "spec"]))
    if kind == "foreign":
        folder = draw(st.sampled_from(["tiny", "tiny/metrics", "tiny/metrics/trial_id=t000", "tiny/metrics/trial_id=x",
                                       "tiny/figures", "."]))
        name = draw(st.sampled_from(["part-000009.parquet", "notes.parquet", "spec.yaml", "x.txt", "trials.parquet",
                                     ".hidden.parquet", "study.json", "driver.lock"]))
        return kind, os.path.join(folder, name), draw(st.binary(max_size=64))
    if kind == "spec":
        return kind, "tiny/spec.yaml", draw(spec_texts())
    target = draw(st.sampled_from(files))
    return kind, target, (draw(st.floats(min_value=0, max_value=1)), draw(st.integers(min_value=1, max_value=255)))


def apply(storage: str, damage) -> None:
    kind, relative, detail = damage
    path = os.path.join(storage, relative)
    if kind in ("delete", "truncate", "flip") and not os.path.exists(path):
        return  # an earlier damage deleted it
    if kind == "delete":
        os.remove(path)
        return
    if kind in ("foreign", "spec"):
        if kind == "foreign" and os.path.exists(path):
            return  # a foreign file only adds: overwriting is what "flip" and "spec" do
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(detail)
        return
    with open(path, "rb") as f:
        data = bytearray(f.read())
    at = int(detail[0] * max(len(data) - 1, 0))
    if kind == "truncate":
        data = data[:at]
    elif data:
        data[at] ^= detail[1]
    with open(path, "wb") as f:
        f.write(bytes(data))


class ReachedRay(LaunchError):
    """Raised where Ray would start: every check before it passed."""


def refuse_ray(*args, **kwargs):
    raise ReachedRay("reached ensure_ray")


def fast_render(fig, kind):
    """The report without encoding PNG and SVG (the slow part; what is checked is the reading)."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return b""


REPORT_OUTPUTS = ("tiny/report.md", "tiny/compare-other.md", "other/report.md", "other/compare-tiny.md")


def check_damage(pristine: str, damage_list: list) -> None:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules["study.launch"], "ensure_ray", refuse_ray)
        patch.setattr("analysis.report.render", fast_render)
        patch.setattr("analysis.compare.render", fast_render)
        patch.setattr("study.cli.preset_names", lambda: [])  # list: the stored studies are what is damaged
        storage = os.path.join(folder, "store")
        shutil.copytree(pristine, storage)
        for damage in damage_list:
            apply(storage, damage)
        before = snapshot(storage)
        for main, argv, allowed in [(study_main, ["status", "tiny"], {0, EXIT_STORE}),
                                    (study_main, ["resume", "tiny"], {EXIT_STORE, EXIT_USAGE}),
                                    (study_main, ["list"], {0, EXIT_STORE}),
                                    (analysis_main, ["report", "tiny"], {0, EXIT_STORE}),
                                    (analysis_main, ["compare", "other", "tiny"], {0, EXIT_STORE})]:
            outcome = run_cli(main, [*argv, "--storage", storage])
            assert_one_line_or_success(outcome, allowed)
            if main is study_main and argv[0] == "resume" and outcome.code == EXIT_USAGE:
                assert "reached ensure_ray" in outcome.err  # only Ray itself may come after the checks
        after = snapshot(storage)
        assert {k: v for k, v in after.items() if k in before} == before  # every stored byte unchanged
        new = set(after) - set(before)
        assert all(path in REPORT_OUTPUTS or path.split(os.sep)[1] == "figures" for path in new), new


def store_files(pristine: str) -> list[str]:
    return sorted(path for path in snapshot(pristine) if path.startswith("tiny" + os.sep))


@QUICK_STORE
@given(data=st.data())
def test_a_randomly_damaged_store_is_one_line_and_unchanged(pristine, data):
    files = store_files(pristine)
    check_damage(pristine, data.draw(st.lists(damages(files), min_size=1, max_size=2)))


@pytest.mark.slow
@MANY_STORE
@given(data=st.data())
def test_many_randomly_damaged_stores(pristine, data):
    files = store_files(pristine)
    check_damage(pristine, data.draw(st.lists(damages(files), min_size=1, max_size=3)))
