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
"""

from __future__ import annotations

import argparse
import io
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reports", type=int, default=3, help="reports per trial")
    parser.add_argument("--out", help="JSON path (default: bench/results/orchestration.json)")
    args = parser.parse_args()
    record = Record("orchestration", vars(args))

    import ray

    from study import launch, parse_spec
    from study.launch import ensure_ray

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
                runs.append({"trials": n, "repeat": repeat, "wall_s": wall, "store_s": spent["store_s"]})
                say(f"  {n:3d} trials: {wall:6.1f} s ({wall / n:.2f} s/trial, store {spent['store_s']:.2f} s)")
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
        rows.append({"trials": n, "wall s (median)": wall, "s per trial": wall / n, "store writer s": store,
                     "store s per trial": store / n, "walls": [round(r["wall_s"], 2) for r in mine]})
    sizes = np.array([r["trials"] for r in rows], dtype=float)
    walls = np.array([r["wall s (median)"] for r in rows])
    per_trial, fixed = np.polyfit(sizes, walls, 1)
    residuals = walls - (fixed + per_trial * sizes)
    say(table(rows, ["trials", "wall s (median)", "s per trial", "store writer s", "store s per trial"]))
    say(f"fit: wall = {fixed:.2f} s + {per_trial:.3f} s x trials (residuals {', '.join(f'{r:+.2f}' for r in residuals)} s); "
        f"Ray start {ray_start_s:.1f} s, stop {ray_stop_s:.1f} s")
    record["ray_start_s"], record["ray_stop_s"], record["cpus"] = ray_start_s, ray_stop_s, cpus
    record["runs"], record["summary"] = runs, rows
    record["fit"] = {"fixed_s": fixed, "per_trial_s": per_trial, "residuals_s": residuals.tolist()}
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
