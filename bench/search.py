"""Benchmark case **search**: Optuna (TPE) + ASHA against the full grid over the same LR × WD box.

For each task (the tiny LM, the tiny vision model) it runs, through ``study.launch``:

1. the full grid, 6 learning rates × 3 weight decays, every trial to the end; its best
   finished trial's final metric is the target and its compute (the sum of every trial's
   steps) the reference;
2. an Optuna search (TPE, ``n_startup_trials`` random trials first) with ASHA over the same
   box, ``lr`` log-uniform and ``weight_decay`` uniform between the grid's ends, once per
   search seed. Its trials run one at a time, so the compute it had spent when it first
   found a finished trial within ``--tolerance`` (2 %) of the grid's best is exact: the
   steps of every trial that ended by then, stopped ones included.

It prints a table and writes ``bench/results/search-<time>.json`` with the machine (CPU
model, cores, GPU), the package versions, the settings and every number. The tasks are the
2-CPU sizes of the presets, shrunk (the LM: gpt-nano, 900 steps; vision: 18 epochs).

    python bench/search.py                 # all tasks, 5 search seeds (~20 minutes on 2 shared CPUs)
    python bench/search.py --tasks lm --seeds 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from _common import machine, versions  # noqa: E402
from analysis.search_results import progress, reach, within  # noqa: E402
from study import launch, parse_spec  # noqa: E402
from study.launch import LaunchError, ensure_ray  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The tasks: the presets' 2-CPU models, shrunk so that the whole benchmark fits in well under
# an hour on 2 shared cores. Each has a grid of 6 LRs x 3 WDs and the ASHA rungs of a search.
TASKS = {
    "lm": {
        "what": "gpt-nano on Shakespeare bytes, AdamW, cosine, 900 steps of 16 x 64 tokens",
        "trainable": "lm",
        "config": {"model": "gpt-nano", "context": 64, "batch_size": 16, "steps": 900, "eval_every": 100,
                   "eval_batches": 16, "warmup_steps": 90, "schedule": "cosine", "min_lr_ratio": 0.1,
                   "seed": 0, "threads": 1},
        "lr": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2],
        "weight_decay": [0.0, 0.1, 0.3],
        "metric": "val_loss",
        "asha": {"time_attr": "step", "grace_period": 100, "reduction_factor": 3},  # rungs at steps 100, 300
        "unit": "steps",
    },
    "vision": {
        "what": "scale-invariant 1-D CNN on mnist1d (4,000/4,000), SGD momentum 0.9, L2 WD, cosine, 18 epochs",
        "trainable": "vision",
        "config": {"model": "cnn1d-si", "dataset": "mnist1d", "train_samples": 4000, "test_samples": 4000,
                   "batch_size": 64, "epochs": 18, "momentum": 0.9, "weight_decay_mode": "l2",
                   "schedule": "cosine", "train_eval": "running", "eval_every": 2, "ema_decay": 0.0,
                   "hessian_probes": 0, "seed": 0, "threads": 1},
        "lr": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "weight_decay": [0.0, 1e-3, 5e-3],
        "metric": "test_error",
        "asha": {"time_attr": "epoch", "grace_period": 2, "reduction_factor": 3},  # rungs at epochs 2, 6
        "unit": "steps",  # compute is counted in optimiser steps (62 per epoch)
    },
}
# The same vision task judged on the test loss: 4,000 test signals give the test error a binomial
# standard error (~0.3 points at 3.5 %) four times the 2 % tolerance (0.07 points); the loss is smoother.
TASKS["vision-loss"] = {**TASKS["vision"], "metric": "test_loss",
                        "what": TASKS["vision"]["what"] + "; judged on the test loss"}


def grid_spec(task: dict, name: str) -> dict:
    return {"name": name, "trainable": task["trainable"], "config": task["config"],
            "axes": {"lr": task["lr"], "weight_decay": task["weight_decay"]}, "metric": task["metric"],
            "mode": "min", "resources": {"cpu": 1}}


def search_spec(task: dict, name: str, seed: int, num_samples: int, startup: int) -> dict:
    return {"name": name, "trainable": task["trainable"], "config": task["config"],
            "axes": {"lr": {"loguniform": [min(task["lr"]), max(task["lr"])]},
                     "weight_decay": {"uniform": [min(task["weight_decay"]), max(task["weight_decay"])]}},
            "search": "optuna", "num_samples": num_samples, "search_seed": seed,
            "sampler": {"tpe": {"n_startup_trials": startup, "multivariate": True}},
            "scheduler": {"asha": task["asha"]}, "metric": task["metric"], "mode": "min",
            "max_concurrent": 1,  # one trial at a time: the compute spent when the target is found is exact
            "resources": {"cpu": 1}}


REUSE = {"on": False}  # --keep DIR on a second run: read the studies stored there instead of running them again


def run_study(spec: dict, storage: str):
    """Run a study (or, with --keep on a store that has it with this spec, take it from there);
    return it and its wall time (first trial start to last trial end, from the store)."""
    parsed = parse_spec(spec, f"bench {spec['name']}")
    try:
        result = launch(parsed, storage=storage, progress=False, resume=REUSE["on"], overwrite=not REUSE["on"])
    except LaunchError:  # stored with another spec: run it again
        result = launch(parsed, storage=storage, progress=False, overwrite=True)
    trials = result.trials()
    span = pd.to_datetime(trials["ended_at"], utc=True).max() - pd.to_datetime(trials["started_at"], utc=True).min()
    return result, span.total_seconds()


_GRIDS: dict[str, tuple] = {}  # one grid run serves every task that differs only in its metric


def run_grid(key: str, task: dict, storage: str):
    ident = json.dumps([task["trainable"], task["config"], task["lr"], task["weight_decay"]], sort_keys=True)
    if ident not in _GRIDS:
        _GRIDS[ident] = run_study(grid_spec(task, f"{key}-grid"), storage)
    return _GRIDS[ident]


def rung_correlation(result, metric: str, time_attr: str, rung: float) -> float:
    """Spearman correlation, over the grid's finished trials, between the metric at ``rung`` (e.g.
    ASHA's first) and the final metric: how well a stopping decision there predicts the end."""
    from scipy.stats import spearmanr

    metrics = result.metrics()
    trials = result.trials().set_index("trial_id")
    done = trials.index[trials["status"] == "finished"]
    rows = metrics[metrics["trial_id"].isin(done) & metrics[metric].notna()]
    at_rung = rows[rows[time_attr] >= rung].groupby("trial_id")[metric].first()
    final = trials.loc[at_rung.index, metric]
    return float(spearmanr(at_rung.to_numpy(), final.to_numpy()).statistic)


def correlation_curve(result, metric: str, time_attr: str) -> dict[str, float]:
    """``rung_correlation`` at every reported time of the grid's trials."""
    times = sorted(result.metrics()[time_attr].dropna().unique())
    return {f"{t:g}": round(rung_correlation(result, metric, time_attr, t), 3) for t in times}


def bench_task(key: str, task: dict, seeds: list[int], num_samples: int, startup: int, tolerance: float,
               goal: float, storage: str, log) -> dict:
    log(f"[{key}] {task['what']}")
    grid_result, grid_s = run_grid(key, task, storage)
    grid_trials = grid_result.trials()
    grid = progress(grid_trials, task["metric"], "min")
    finished = grid[grid["status"] == "finished"]
    best_row = finished.loc[finished["value"].idxmin()]
    grid_best, grid_compute = float(best_row["value"]), float(grid["steps"].sum())
    best_config = grid_trials.set_index("trial_id").loc[best_row["trial_id"]]
    target = within(grid_best, tolerance, "min")
    near = int((finished["value"] <= target).sum())  # how hard the target is: grid points within it
    rho = rung_correlation(grid_result, task["metric"], task["asha"]["time_attr"], task["asha"]["grace_period"])
    log(f"[{key}] grid: {len(grid)} trials ({len(finished)} finished), best {task['metric']} {grid_best:.4g} at "
        f"lr={best_config['config/lr']:g}, wd={best_config['config/weight_decay']:g}; compute {grid_compute:,.0f} "
        f"steps; {near} of {len(grid)} grid points within {tolerance:.0%} of it; Spearman rho(first rung, final) "
        f"{rho:.2f}; {grid_s:.0f} s")
    runs = []
    for seed in seeds:
        result, seconds = run_study(search_spec(task, f"{key}-search-{seed}", seed, num_samples, startup), storage)
        trials = result.trials()
        prog = progress(trials, task["metric"], "min")
        hit = reach(prog, target, "min")
        best = float(np.nanmin(prog["value"])) if np.isfinite(prog["value"]).any() else math.nan
        run = {"seed": seed, "trials": len(prog), "finished": int((prog["status"] == "finished").sum()),
               "stopped": int((prog["status"] == "stopped").sum()),
               "diverged": int((prog["status"] == "diverged").sum()), "best": best,
               "compute_total": float(prog["steps"].sum()), "seconds": seconds,
               "reached": hit is not None,
               "compute_to_target": float(hit["compute_spent"]) if hit is not None else None,
               "trials_to_target": int(hit["trials_spent"]) if hit is not None else None}
        run["share_of_grid"] = (run["compute_to_target"] if hit is not None else run["compute_total"]) / grid_compute
        # what the goal's share of the grid's compute buys: the best found by then, vs the grid's best
        spent = prog[prog["compute_spent"] <= goal * grid_compute]
        at_goal = float(spent["best_so_far"].iloc[-1]) if len(spent) else math.nan
        run["best_at_goal"] = at_goal
        run["gap_at_goal"] = (at_goal - grid_best) / abs(grid_best) if np.isfinite(at_goal) else None
        runs.append(run)
        log(f"[{key}] search seed {seed}: best {best:.4g}; "
            + (f"within {tolerance:.0%} of the grid's best after {run['trials_to_target']} trials, "
               f"{run['compute_to_target']:,.0f} steps = {run['share_of_grid']:.1%} of the grid"
               if hit is not None else f"never within {tolerance:.0%} (spent {run['compute_total']:,.0f} steps = "
               f"{run['share_of_grid']:.1%} of the grid)") + f"; {run['stopped']} of {run['trials']} stopped early; "
            f"{seconds:.0f} s")
    shares = [r["share_of_grid"] for r in runs]
    reached = [r for r in runs if r["reached"]]
    gaps = [r["gap_at_goal"] for r in runs if r["gap_at_goal"] is not None]
    return {"task": key, "what": task["what"], "metric": task["metric"],
            "mean_gap_at_goal": float(np.mean(gaps)) if len(gaps) == len(runs) else None, "grid": {
                "lr": task["lr"], "weight_decay": task["weight_decay"], "trials": len(grid),
                "finished": len(finished), "within_tolerance": near, "first_rung_spearman": rho,
                "spearman_by_time": correlation_curve(grid_result, task["metric"], task["asha"]["time_attr"]),
                # the grid itself in a random order reaches a point within the target after
                # (n + 1) / (k + 1) trials on average (k of its n points are within it)
                "shuffled_grid_expected_share": (len(grid) + 1) / ((near + 1) * len(grid)), "best": grid_best, "best_lr": float(best_config["config/lr"]),
                "best_weight_decay": float(best_config["config/weight_decay"]), "compute": grid_compute,
                "seconds": grid_s},
            "target": target, "searches": runs, "mean_share": float(np.mean(shares)),
            "reached": f"{len(reached)}/{len(runs)}",
            "mean_share_is_lower_bound": len(reached) < len(runs)}


def table(results: list[dict], tolerance: float, goal: float) -> str:
    lines = ["| task | grid best | grid points within {0:.0%} | grid compute (steps) | seeds reaching it | compute to "
             "reach, per seed (% of grid) | mean | ≤ {1:.0%}? | the grid in random order | best found with {1:.0%} of "
             "the grid's compute, vs the grid's best (mean over seeds) | rho(first rung, final) |"
             .format(tolerance, goal), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        per_seed = ", ".join((f"{s['share_of_grid']:.0%}" if s["reached"] else f">{s['share_of_grid']:.0%}")
                             for s in r["searches"])
        mean = ("≥ " if r["mean_share_is_lower_bound"] else "") + f"{r['mean_share']:.1%}"
        met = "yes" if not r["mean_share_is_lower_bound"] and r["mean_share"] <= goal else "no"
        lines.append(f"| {r['task']} ({r['metric']}) | {r['grid']['best']:.4g} | {r['grid']['within_tolerance']}/"
                     f"{r['grid']['trials']} | {r['grid']['compute']:,.0f} | "
                     f"{r['reached']} | {per_seed} | {mean} | {met} | {r['grid']['shuffled_grid_expected_share']:.0%} | "
                     + (f"{r['mean_gap_at_goal']:+.1%}" if r["mean_gap_at_goal"] is not None else "-")
                     + f" | {r['grid']['first_rung_spearman']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lm,vision,vision-loss",
                        help="comma-separated: lm, vision, vision-loss (default: all three)")
    parser.add_argument("--seeds", type=int, default=5, help="search seeds per task (>= 3; default 5)")
    parser.add_argument("--num-samples", type=int, default=18, help="trials per search (default: 18, the grid's count)")
    parser.add_argument("--startup", type=int, default=5, help="TPE's random trials before it models (default 5)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative distance to the grid's best (0.02)")
    parser.add_argument("--goal", type=float, default=0.25, help="the target share of the grid's compute (0.25)")
    parser.add_argument("--keep", metavar="DIR", help="keep the studies in this store (default: a temporary folder); "
                        "a study already there with the same spec is read, not run again")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for Ray (default: all)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or args.seeds < 1:
        parser.error(f"unknown task {unknown[0]!r}; tasks: {', '.join(TASKS)}" if unknown else "--seeds must be >= 1")
    storage = args.keep or tempfile.mkdtemp(prefix="bench-search-")
    REUSE["on"] = bool(args.keep)
    started = time.perf_counter()

    def log(text):
        print(f"[{time.perf_counter() - started:6.0f}s] {text}", flush=True)

    info = {"case": "search", "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "machine": machine(), "versions": versions(),
            "settings": {"seeds": args.seeds, "num_samples": args.num_samples, "tpe_startup_trials": args.startup,
                         "tolerance": args.tolerance, "goal": args.goal, "search_concurrency": 1,
                         "grid_concurrency": "as CPUs allow (1 CPU per trial)",
                         # with --keep, studies already in that store are read, not run: wall_seconds is then
                         # this invocation's; each study's own seconds come from its store
                         "keep": args.keep}}
    ensure_ray(num_cpus=args.cpus)
    try:
        results = [bench_task(key, TASKS[key], list(range(args.seeds)), args.num_samples, args.startup,
                              args.tolerance, args.goal, storage, log) for key in tasks]
    finally:
        if not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
    info["tasks"] = {k: TASKS[k] for k in tasks}
    info["results"] = results
    info["wall_seconds"] = time.perf_counter() - started
    text = table(results, args.tolerance, args.goal)
    print()
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS, f"search-{stamp}.json")
    with open(path, "w") as f:
        json.dump(info, f, indent=2, default=float)
    print(f"\nresults: {path} ({info['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
