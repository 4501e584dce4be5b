"""Overhead benchmark: the same ~60 s training run bare (plain Python) and as a one-trial study.

    python bench/overhead.py            # tiny GPT and tiny CNN, a 60 s run each, 3 interleaved repeats
    python bench/overhead.py --quick    # a 20 s run each, one repeat (a few minutes)
    python bench/overhead.py --lengths 100 300 --ray-task   # fixed lengths, and the Ray-task case

Each case trains the same config as **bare**, a fresh Python process that runs the trainable's
own ``run(config, session)`` with a session that timestamps every report (no Ray, no store:
what ``python train.py`` costs, interpreter start and imports included), and as **study**, a
one-trial study of the same config through ``study.launch`` from this driver (a Ray worker,
the store callback, checkpoints as the spec says; Ray already running, as on a cluster or for
a driver's second launch). Both hold one thread (``threads=1``; the trial holds one CPU).

The length of each case is calibrated so that its bare run lasts ``--target-trial-s`` (60 s):
a short bare run measures the seconds per step (per epoch), and the length is the target over
it (``--lengths`` fixes lengths instead). What is reported:

- **whole run** (the target): the study's launch wall (launch called → returned) over the bare
  process's wall (spawned → exited), minus 1: median and min–max over the repeats. Ray's own
  start, paid once per driver, is timed apart and shown as what it adds to one such launch.
- where the study's extra time goes: the launch set-up (launch called → the trial's
  ``started_at``: driver lock, provenance, the store, Tune's start, the trial's actor and its
  worker), against the bare process's start-up (spawned → ``run`` called: interpreter, imports,
  spec); the trial's start excess (``started_at`` → its first report, less the bare run's own
  time from ``run`` to its first report); the end (last report → launch returned);
- **per-step overhead**: the median seconds per step between reports (bare: our timestamps;
  study: Ray's ``time_total_s`` in the stored metric rows), study over bare minus 1: what a
  long trial pays on every step;
- with ``--ray-task``: the bare run inside a plain Ray task of one CPU (a Ray worker, no Tune,
  no store), to tell the Ray worker's own per-step cost from Tune's.

Cases alternate within each repeat (bare, study, bare, study, ...), so both see the same
machine load; the machine is shared, so only the ratios mean something. Ray runs its
workers at niceness 15 (``RAY_worker_niceness``), so on a machine shared with other work a
trial gets less CPU than a plain process: the bare case therefore runs at the same niceness
(``--bare-nice``, default: Ray's), so that the comparison measures the framework and not the
scheduler's priorities. ``--bare-nice 0`` measures the user's view on a shared machine.
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

CASES = {
    "tiny GPT": ("chinchilla-tiny", ["axes.seed=[0]", "model=gpt-tiny", "schedule=cosine", "weight_decay=0.3", "eval_every=50",
                                     "warmup_steps=10", "tail_steps=0"], "steps", 100),
    "tiny CNN": ("ushape-tiny", ["axes.seed=[0]", "lr=0.1", "weight_decay=0.001", "eval_every=1", "hessian_every=0",
                                 "finetune_every=0", "decay_epoch=0", "schedule=constant"], "epochs", 3),
}
# (preset, overrides that keep every measurement of the preset but switch off the periodic
# extras that would make a short run mostly extras, the length key, the calibration length)


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
    return {"wall_s": wall, "train_s": session.times[-1] - start, "first_report_s": session.times[0] - start,
            "per_step_s": per_step(steps, session.times), "steps": steps[-1], "reports": len(steps)}


def run_bare_niced(case: str, length: int, nice: int) -> dict:
    """``run_bare`` in a fresh child process at niceness ``nice`` (a Ray worker's, by default);
    ``process_s``: the process's wall, spawned → exited (interpreter start and imports included)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--bare-child", case, str(length), str(nice)], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    process = time.perf_counter() - start
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": process}


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
            "first_report_s": float(metrics["time_total_s"].iloc[0]),
            "per_step_s": per_step(metrics["step"].tolist(), metrics["time_total_s"].tolist()),
            "steps": int(metrics["step"].iloc[-1]), "reports": len(metrics)}


def summarise(case: str, length: int, mine: list[dict], ray_start_s: float) -> dict:
    """One case at one length over its repeats: the whole-run ratio and where its time goes."""
    pairs = [(b, st) for b in mine if b["mode"] == "bare" for st in mine
             if st["mode"] == "study" and st["repeat"] == b["repeat"]]
    whole = [st["wall_s"] / b["process_s"] - 1 for b, st in pairs]
    tasks = {r["repeat"]: r for r in mine if r["mode"] == "ray task"}
    row = {
        "case": case, "length": f"{length} {CASES[case][2]}", "repeats": len(pairs),
        "bare process s": median(b["process_s"] for b, _ in pairs),
        "study launch s": median(st["wall_s"] for _, st in pairs),
        "whole run (median)": median(whole), "whole run (min-max)": [min(whole), max(whole)],
        "with Ray's start": median(whole) + ray_start_s / median(b["process_s"] for b, _ in pairs),
        "launch set-up s": median(st["setup_s"] for _, st in pairs),
        "trial start excess s": median(st["first_report_s"] - b["first_report_s"] for b, st in pairs),
        "bare start-up s": median(b["process_s"] - b["wall_s"] for b, _ in pairs),
        "launch end s": median(st["rest_s"] for _, st in pairs),
        "per-step overhead": median(st["per_step_s"] / b["per_step_s"] - 1 for b, st in pairs),
    }
    if tasks:
        row["per-step: Ray task"] = median(tasks[b["repeat"]]["per_step_s"] / b["per_step_s"] - 1
                                           for b, _ in pairs if b["repeat"] in tasks)
    row["target: whole run ≤ 5 %"] = "met" if row["whole run (median)"] <= 0.05 else "missed"
    return row


def resummarise(path: str) -> None:
    """Recompute ``summary`` of a recorded JSON from its ``runs`` (the numbers stay those measured)."""
    with open(path) as f:
        data = json.load(f)
    data["summary"] = [summarise(case, length, [r for r in data["runs"] if (r["case"], r["length"]) == (case, length)],
                                 data["ray_start_s"])
                       for case in data["cases"] for length in data["cases"][case]["lengths"]]
    with open(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    say(table(data["summary"]))


def calibrated_length(case: str, target_s: float, nice: int) -> tuple[int, float]:
    """The length (steps, epochs) whose bare run lasts ``target_s``, from a short bare run."""
    calibration = run_bare_niced(case, CASES[case][3], nice)
    seconds_per_unit = calibration["per_step_s"] * (calibration["steps"] / CASES[case][3])
    return max(2, round(target_s / seconds_per_unit)), seconds_per_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a 20 s run, one repeat")
    parser.add_argument("--lengths", type=int, nargs="+", metavar="LENGTH",
                        help="run lengths (steps or epochs) of every case, instead of calibrating one")
    parser.add_argument("--target-trial-s", type=float, default=60.0, help="the bare run's length in seconds")
    parser.add_argument("--ray-task", action="store_true", help="also run the bare run in a plain Ray task")
    parser.add_argument("--no-preload", action="store_true",
                        help="Ray workers without the setup hook that imports torch and the trainables")
    parser.add_argument("--out", help="JSON path (default: bench/results/overhead.json)")
    parser.add_argument("--bare-nice", type=int, default=int(os.environ.get("RAY_worker_niceness", 15)),
                        help="niceness of the bare runs (default: Ray's worker niceness, 15)")
    parser.add_argument("--bare-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--summarise", metavar="JSON", help="recompute the summary of a recorded run in place")
    args = parser.parse_args()
    if args.bare_child:
        return bare_child(*args.bare_child)
    if args.summarise:
        return resummarise(args.summarise)
    if args.quick:
        args.repeats, args.target_trial_s = 1, 20.0
    record = Record("overhead", vars(args))
    record["cases"] = {}
    for case in args.cases:
        entry = {"preset": CASES[case][0], "overrides": CASES[case][1], "length_key": CASES[case][2]}
        if args.lengths:
            entry["lengths"] = args.lengths
        else:
            length, per_unit = calibrated_length(case, args.target_trial_s, args.bare_nice)
            entry.update(lengths=[length], calibration_s_per_unit=per_unit)
            say(f"{case}: {per_unit:.4g} s per {CASES[case][2][:-1]} bare → {length} {CASES[case][2]} "
                f"for {args.target_trial_s:.0f} s")
        record["cases"][case] = entry

    import ray
    import torch

    from study.launch import ensure_ray

    torch.set_num_threads(1)
    start = time.perf_counter()
    ensure_ray(preload=not args.no_preload)
    record["ray_start_s"] = time.perf_counter() - start
    say(f"Ray started in {record['ray_start_s']:.1f} s")
    root = tempfile.mkdtemp(prefix="bench-overhead-")
    runs = []
    try:
        for repeat in range(args.repeats):
            for case in args.cases:
                for length in record["cases"][case]["lengths"]:
                    numbers = {"bare": run_bare_niced(case, length, args.bare_nice)}
                    if args.ray_task:
                        numbers["ray task"] = run_in_ray_task(case, length)
                    numbers["study"] = run_study(case, length, root, f"overhead-{repeat}-{length}")
                    for mode, values in numbers.items():
                        runs.append({"case": case, "length": length, "repeat": repeat, "mode": mode, **values})
                    bare, study = numbers["bare"], numbers["study"]
                    say(f"  repeat {repeat + 1}/{args.repeats} {case} {length} {CASES[case][2]}: bare process "
                        f"{bare['process_s']:.1f} s, study launch {study['wall_s']:.1f} s "
                        f"(whole run {study['wall_s'] / bare['process_s'] - 1:+.1%}, "
                        f"per step {study['per_step_s'] / bare['per_step_s'] - 1:+.1%})")
        start = time.perf_counter()
        ray.shutdown()
        record["ray_stop_s"] = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [summarise(case, length, [r for r in runs if (r["case"], r["length"]) == (case, length)],
                      record["ray_start_s"])
            for case in args.cases for length in record["cases"][case]["lengths"]]
    record["runs"], record["summary"] = runs, rows
    say(f"Ray start (once per driver): {record['ray_start_s']:.1f} s")
    say(table(rows))
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
