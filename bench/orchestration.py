"""Orchestration benchmark: what the framework costs per trial when the trials do almost nothing.

    python bench/orchestration.py              # grids of 4, 16 and 64 probe trials, 3 interleaved repeats

Each grid is a study of the ``probe`` trainable (a few reports of a quadratic: microseconds of
work) launched with ``study.launch`` into a fresh store on one local Ray instance (started
once; its start-up is reported on its own). A launch's wall time is then all framework:
the driver lock, provenance, Ray Tune's scheduling and actor reuse, the store callback and
the analysis-free end. Reported per grid size: median wall time, seconds per trial, and the
part of it spent in the store writer (timed around its methods); and the fit
``wall = fixed + per_trial * n`` over the three sizes, whose residuals say whether the cost
grows linearly.

The baseline runs in the same Ray instance, interleaved with ours (every size, both ways, per
repeat): Ray Tune's floor, a plain ``Tuner`` over the same grid of the same trainable
(``trainables.ray_entry.ray_trainable("probe")``, one CPU each, ``reuse_actors=True``,
``verbose=0``, Tune's automatic loggers off as our launch has them), without our driver lock,
provenance, store, progress or report. The ratio ours / plain per repeat is the framework's
orchestration cost; the target is ≤ 1.2× at 16 and 64 trials.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time

from _common import Record, median, say, table


def timed_writer(spent: dict):
    """Time every StoreWriter method the callback calls (in place, for this process)."""
    from study.store import StoreWriter

    for name in ("trial_started", "add_result", "trial_checkpointed", "trial_ended", "flush", "flush_if_due",
                 "close", "mark_unresumable"):
        method = getattr(StoreWriter, name)
        if getattr(method, "_timed", False):
            continue

        def wrapper(self, *args, _method=method, **kwargs):
            if spent.get("_depth"):
                return _method(self, *args, **kwargs)
            spent["_depth"] = 1
            t = time.perf_counter()
            try:
                return _method(self, *args, **kwargs)
            finally:
                spent["store_s"] = spent.get("store_s", 0.0) + time.perf_counter() - t
                spent["_depth"] = 0

        wrapper._timed = True
        setattr(StoreWriter, name, wrapper)


def plain_tune(n: int, reports: int, root: str, name: str) -> float:
    """Wall time of Ray Tune alone over the grid ``launch`` runs (the baseline)."""
    from ray import tune

    from trainables.ray_entry import ray_trainable

    trainable = tune.with_resources(ray_trainable("probe"), {"cpu": 1})
    space = {"steps": reports, "report_every": 1, "dim": 4, "seed": tune.grid_search(list(range(n)))}
    t = time.perf_counter()
    grid = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(reuse_actors=True),
                      run_config=tune.RunConfig(name=name, storage_path=root, verbose=0)).fit()
    wall = time.perf_counter() - t
    assert len(grid) == n and not grid.errors, grid.errors
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--target", type=float, default=1.2, help="ours / plain Ray Tune at most this")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reports", type=int, default=3, help="reports per trial")
    parser.add_argument("--out", help="JSON path (default: bench/results/orchestration.json)")
    args = parser.parse_args()
    record = Record("orchestration", vars(args))

    import ray

    from study import launch, parse_spec
    from study.launch import ensure_ray
    from study.trackers import AUTO_LOGGERS_ENV

    os.environ[AUTO_LOGGERS_ENV] = "1"  # for the baseline too, from its first run (our launch sets it)

    t = time.perf_counter()
    ensure_ray()
    ray_start_s = time.perf_counter() - t
    cpus = ray.cluster_resources().get("CPU")
    say(f"Ray started in {ray_start_s:.1f} s ({cpus:g} CPUs)")
    spent: dict = {}
    timed_writer(spent)
    root = tempfile.mkdtemp(prefix="bench-orch-")
    runs = []
    try:
        for repeat in range(args.repeats):
            for n in args.sizes:
                spec = parse_spec({"name": f"orch-{n}-{repeat}", "trainable": "probe",
                                   "config": {"steps": args.reports, "report_every": 1, "dim": 4},
                                   "axes": {"seed": list(range(n))}, "resources": {"cpu": 1}})
                spent["store_s"] = 0.0
                t = time.perf_counter()
                result = launch(spec, storage=root, progress=False, stream=io.StringIO())
                wall = time.perf_counter() - t
                trials = result.trials()
                assert len(trials) == n and (trials["status"] == "finished").all(), trials["status"].tolist()
                plain = plain_tune(n, args.reports, root, f"plain-{n}-{repeat}")
                runs.append({"trials": n, "repeat": repeat, "wall_s": wall, "store_s": spent["store_s"],
                             "plain_tune_s": plain, "ratio": wall / plain})
                say(f"  {n:3d} trials: {wall:6.1f} s ({wall / n:.2f} s/trial, store {spent['store_s']:.2f} s); "
                    f"plain Ray Tune {plain:6.1f} s: {wall / plain:.2f}x")
        t = time.perf_counter()
        ray.shutdown()
        ray_stop_s = time.perf_counter() - t
    finally:
        shutil.rmtree(root, ignore_errors=True)

    import numpy as np

    rows = []
    for n in args.sizes:
        mine = [r for r in runs if r["trials"] == n]
        wall = median(r["wall_s"] for r in mine)
        store = median(r["store_s"] for r in mine)
        ratios = [r["ratio"] for r in mine]
        plain = median(r["plain_tune_s"] for r in mine)
        rows.append({"trials": n, "wall s (median)": wall, "s per trial": wall / n, "store writer s": store,
                     "store s per trial": store / n, "plain Ray Tune s (median)": plain,
                     "plain s per trial": plain / n, "ours / plain (median)": median(ratios),
                     "ours / plain (min-max)": f"{min(ratios):.2f}-{max(ratios):.2f}",
                     "target": (f"<= {args.target:g}x: " + ("met" if median(ratios) <= args.target else "missed"))
                     if n >= 16 else "",
                     "walls": [round(r["wall_s"], 2) for r in mine], "plain_walls": [round(r["plain_tune_s"], 2) for r in mine]})
    sizes = np.array([r["trials"] for r in rows], dtype=float)
    walls = np.array([r["wall s (median)"] for r in rows])
    per_trial, fixed = np.polyfit(sizes, walls, 1)
    residuals = walls - (fixed + per_trial * sizes)
    say(table(rows, ["trials", "wall s (median)", "s per trial", "plain Ray Tune s (median)", "plain s per trial",
                     "ours / plain (median)", "ours / plain (min-max)", "target", "store writer s"]))
    say(f"fit: wall = {fixed:.2f} s + {per_trial:.3f} s x trials (residuals {', '.join(f'{r:+.2f}' for r in residuals)} s); "
        f"Ray start {ray_start_s:.1f} s, stop {ray_stop_s:.1f} s")
    record["ray_start_s"], record["ray_stop_s"], record["cpus"] = ray_start_s, ray_stop_s, cpus
    record["runs"], record["summary"] = runs, rows
    record["fit"] = {"fixed_s": fixed, "per_trial_s": per_trial, "residuals_s": residuals.tolist()}
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
