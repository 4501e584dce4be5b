"""Overhead benchmark: the same training run bare (plain Python) and as a one-trial study.

    python bench/overhead.py            # tiny GPT and tiny CNN, two run lengths, 2 interleaved repeats
    python bench/overhead.py --quick    # shorter runs, one repeat (a few minutes)

Each case trains the same config twice over: **bare**, the trainable's own ``run(config,
session)`` called in this process with a session that timestamps every report (no Ray, no
store), and **study**, a one-trial study of the same config through ``study.launch`` (a Ray
worker, the store callback, checkpoints as the spec says). Both hold one thread
(``threads=1``; the study's trial holds one CPU). Ray is started once, timed on its own.

What is reported, separately:

- **per-step: Ray task**: the bare run inside a plain Ray task of one CPU (a Ray worker
  process, no Tune, no store), to tell the Ray worker's own cost from Tune's.
- **per-step overhead**: the training time per step inside the trial, between its first
  and its last report (bare: our timestamps; study: Ray's ``time_total_s`` of the stored
  metric rows), study over bare minus 1. This is what a long trial pays on every step
  (reporting through Ray, the store callback, checkpoints), free of the fixed costs.
- **fixed cost**: Ray's start (once per driver), and per launch the set-up (launch called
  → the trial's ``started_at`` in ``trials.parquet``: driver lock, provenance, the store,
  Tune's start, the worker's spawn and imports) and the rest (launch wall − set-up −
  the trial's own ``time_total_s``: the end of the trial, the store's last flush, Tune's
  shutdown). Also the fit ``wall = fixed + steps × per_step`` over the two run lengths, per
  mode.
- the overhead a trial of ``--target-trial-s`` (60 s) pays: per-step overhead, plus the
  fixed launch cost spread over it.

Cases alternate within each repeat (bare, study, bare, study, ...), so both see the same
machine load; the machine is shared, so only the ratios mean something. Ray runs its
workers at niceness 15 (``RAY_worker_niceness``), so on a machine shared with other work a
trial gets less CPU than a plain process: the bare case therefore runs in a child process
at the same niceness (``--bare-nice``, default: Ray's), so that the comparison measures the
framework and not the scheduler's priorities. ``--bare-nice 0`` measures the user's view on
a shared machine (priority included).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import Record, median, say, table

# model: (preset, overrides that keep every measurement of the preset but switch off the
# periodic extras that would make a short run mostly extras, the length key, its values)
CASES = {
    "tiny GPT": ("chinchilla-tiny", ["axes.seed=[0]", "schedule=cosine", "weight_decay=0.3", "eval_every=25",
                                     "warmup_steps=10"], "steps", {"full": [200, 600], "quick": [100, 300]}),
    "tiny CNN": ("ushape-tiny", ["axes.seed=[0]", "lr=0.1", "weight_decay=0.001", "eval_every=1", "hessian_every=0",
                                 "finetune_every=0", "decay_epoch=0", "schedule=constant"], "epochs",
                 {"full": [3, 8], "quick": [2, 4]}),
}


class TimedSession:
    """A BareSession that timestamps every report."""

    def __init__(self):
        from trainables.session import BareSession

        self.inner = BareSession()
        self.times: list[float] = []

    def report(self, metrics, *, status=None, state=None):
        self.times.append(time.perf_counter())
        self.inner.report(metrics, status=status, state=state)

    def restored_state(self):
        return None

    def should_checkpoint(self, report_index, every):
        return self.inner.should_checkpoint(report_index, every)


def spec_for(case: str, length: int, name: str):
    from study import load_spec

    preset, overrides, key, _ = CASES[case]
    return load_spec(preset, [*overrides, f"{key}={length}", "threads=1", "device=cpu", "resources.cpu=1"],
                     name=name)


def per_step(steps: list[float], times: list[float]) -> float:
    """Seconds per training step: the median over the intervals between reports (a median, so
    that a burst of load from the machine's other users in one interval does not count)."""
    import statistics  # not _common's median: Ray workers run this function without bench/ on their path

    return statistics.median((t1 - t0) / (s1 - s0) for s0, s1, t0, t1 in zip(steps, steps[1:], times, times[1:]))


def run_bare(case: str, length: int) -> dict:
    from trainables import get_trainable

    spec = spec_for(case, length, "bare")
    (config,) = spec.trial_configs()
    session = TimedSession()
    start = time.perf_counter()
    get_trainable(spec.trainable).run_function()(config, session)
    wall = time.perf_counter() - start
    steps = [r["step"] for r in session.inner.reports]
    assert session.inner.status == "finished", session.inner.status
    if len(steps) < 2:
        raise RuntimeError(f"{case}: {length} gives fewer than 2 reports; lengthen the run")
    return {"wall_s": wall, "train_s": session.times[-1] - start, "per_step_s": per_step(steps, session.times),
            "steps": steps[-1], "reports": len(steps)}


def run_bare_niced(case: str, length: int, nice: int) -> dict:
    """``run_bare`` in a fresh child process at niceness ``nice`` (a Ray worker's, by default)."""
    out = subprocess.run([sys.executable, __file__, "--bare-child", case, str(length), str(nice)], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_child(case: str, length: str, nice: str) -> None:
    import torch

    os.nice(int(nice) - os.nice(0))
    torch.set_num_threads(1)
    print(json.dumps(run_bare(case, int(length))))


def run_in_ray_task(case: str, length: int) -> dict:
    """``run_bare`` in a Ray worker (a plain Ray task of one CPU, no Tune, no store): what the
    Ray worker process itself costs, apart from Tune's function-trainable machinery."""
    import ray

    def task(case, length):
        import torch

        torch.set_num_threads(1)
        return run_bare(case, length)

    return ray.get(ray.remote(num_cpus=1)(task).remote(case, length))


def run_study(case: str, length: int, root: str, name: str) -> dict:
    import pandas as pd

    from study import launch

    spec = spec_for(case, length, name)
    called = time.time()
    start = time.perf_counter()
    result = launch(spec, storage=root, progress=False, stream=io.StringIO())
    wall = time.perf_counter() - start
    trials, metrics = result.trials(), result.metrics().sort_values("training_iteration")
    assert len(trials) == 1 and trials["status"].iloc[0] == "finished", trials["status"].tolist()
    started = pd.Timestamp(trials["started_at"].iloc[0])
    started_s = started.timestamp() if started.tzinfo else started.tz_localize("UTC").timestamp()
    setup = started_s - called
    trial_s = float(metrics["time_total_s"].iloc[-1])
    shutil.rmtree(result.store.root, ignore_errors=True)
    return {"wall_s": wall, "train_s": trial_s, "setup_s": setup, "rest_s": wall - setup - trial_s,
            "per_step_s": per_step(metrics["step"].tolist(), metrics["time_total_s"].tolist()),
            "steps": int(metrics["step"].iloc[-1]), "reports": len(metrics)}


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``wall = fixed + steps * per_step`` (two lengths: the line through them)."""
    import numpy as np

    steps, walls = np.array(points, dtype=float).T
    slope, intercept = np.polyfit(steps, walls, 1)
    return float(intercept), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="shorter runs, one repeat")
    parser.add_argument("--lengths", type=int, nargs=2, metavar=("SHORT", "LONG"),
                        help="the two run lengths (steps or epochs) of every case, instead of the built-in ones")
    parser.add_argument("--target-trial-s", type=float, default=60.0)
    parser.add_argument("--out", help="JSON path (default: bench/results/overhead.json)")
    parser.add_argument("--bare-nice", type=int, default=int(os.environ.get("RAY_worker_niceness", 15)),
                        help="niceness of the bare runs (default: Ray's worker niceness, 15)")
    parser.add_argument("--bare-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        return bare_child(*args.bare_child)
    if args.quick:
        args.repeats = 1
    record = Record("overhead", vars(args))
    record["cases"] = {c: {"preset": CASES[c][0], "overrides": CASES[c][1], "length_key": CASES[c][2],
                           "lengths": args.lengths or CASES[c][3]["quick" if args.quick else "full"]}
                       for c in args.cases}

    import ray
    import torch

    from study.launch import ensure_ray

    torch.set_num_threads(1)
    start = time.perf_counter()
    ensure_ray()
    record["ray_start_s"] = time.perf_counter() - start
    say(f"Ray started in {record['ray_start_s']:.1f} s")
    root = tempfile.mkdtemp(prefix="bench-overhead-")
    runs = []
    try:
        for repeat in range(args.repeats):
            for case in args.cases:
                for length in record["cases"][case]["lengths"]:
                    bare = run_bare_niced(case, length, args.bare_nice)
                    task = run_in_ray_task(case, length)
                    study = run_study(case, length, root, f"overhead-{repeat}-{length}")
                    for mode, numbers in (("bare", bare), ("ray task", task), ("study", study)):
                        runs.append({"case": case, "length": length, "repeat": repeat, "mode": mode, **numbers})
                    say(f"  {case} {length} {CASES[case][2]}: bare {bare['wall_s']:.1f} s, study {study['wall_s']:.1f} s "
                        f"(per step: Ray task {task['per_step_s'] / bare['per_step_s'] - 1:+.1%}, "
                        f"study {study['per_step_s'] / bare['per_step_s'] - 1:+.1%})")
        start = time.perf_counter()
        ray.shutdown()
        record["ray_stop_s"] = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = []
    for case in args.cases:
        mine = [r for r in runs if r["case"] == case]
        def ratios(mode):
            return [s["per_step_s"] / b["per_step_s"] - 1 for b in mine if b["mode"] == "bare"
                    for s in mine if s["mode"] == mode and (s["length"], s["repeat"]) == (b["length"], b["repeat"])]

        fixed_bare, slope_bare = fit([(r["steps"], r["wall_s"]) for r in mine if r["mode"] == "bare"])
        fixed_study, slope_study = fit([(r["steps"], r["wall_s"]) for r in mine if r["mode"] == "study"])
        studies = [r for r in mine if r["mode"] == "study"]
        launch_fixed = median(r["setup_s"] + r["rest_s"] for r in studies)
        per_step_overhead = median(ratios("study"))
        rows.append({
            "case": case, "bare s/step": median(r["per_step_s"] for r in mine if r["mode"] == "bare"),
            "study s/step": median(r["per_step_s"] for r in studies),
            "per-step: Ray task": median(ratios("ray task")),
            "per-step overhead": per_step_overhead,
            "slope ratio (fit)": slope_study / slope_bare - 1,
            "launch set-up s": median(r["setup_s"] for r in studies),
            "launch end s": median(r["rest_s"] for r in studies),
            "fixed (fit) s": fixed_study - fixed_bare,
            f"overhead of a {args.target_trial_s:.0f} s trial": per_step_overhead + launch_fixed / args.target_trial_s,
            "target per-step <= 3%": "met" if per_step_overhead <= 0.03 else "missed"})
    record["runs"], record["summary"] = runs, rows
    say(f"Ray start (once per driver): {record['ray_start_s']:.1f} s")
    say(table(rows))
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
