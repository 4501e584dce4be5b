"""Benchmark case **search**: Optuna (TPE) + ASHA against a seeded grid over the same LR × WD box.

For each task (the tiny LM, the tiny vision model) it runs, through ``study.launch``:

1. the full grid, 6 learning rates × 3 weight decays × ``--grid-seeds`` seeds (3), every
   trial to the end. Its **target** is the grid point best on average over its seeds
   (``analysis.search_results.seeded_target``; the minimum of single-seed results would favour
   a lucky seed), and a search **reaches** it when one of its finished trials ends within one
   seed standard deviation of that mean (a search trial is one seed too). The **budget** is
   compute, the steps of every trial (stopped ones included), against the compute of the grid
   for one seed: what a plain grid search costs.
2. an Optuna search (TPE, ``n_startup_trials`` random trials first) with ASHA over the same
   box, ``lr`` log-uniform and ``weight_decay`` uniform between the grid's ends, once per
   search seed, its trials on training seeds the grid did not use (100 + search seed). Its
   trials run one at a time, so the compute it had spent when it first reached the target is
   exact. **Target: ≤ 25 % of the grid's compute in ≥ 4 of 5 search seeds.**

ASHA compares trials at its rungs on ``rung_metric``, the loss (or error) of the parameter EMA
(``ema_val_loss``, ``ema_test_error``): under a cosine the plain metric mid-run ranks learning
rates otherwise than the final one (large LRs look bad until the LR decays), and a parameter
average acts like a decayed LR. The grid records both at every report, so the JSON holds, per
report time, the Spearman correlation over the grid's trials between each and the final metric:
how well a stopping decision there can predict the end.

It prints a table and writes ``bench/results/search-<time>.json`` with the machine, the
package versions, the settings and every number.

    python bench/search.py                     # lm, vision, vision-loss; 5 search seeds
    python bench/search.py --tasks lm          # one task
    python bench/search.py --keep /tmp/bs      # keep the studies; a rerun with --keep reads them
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
from analysis.search_results import progress, reach, seeded_target  # noqa: E402
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
                   "ema_decay": 0.95, "threads": 1},
        "lr": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2],
        "weight_decay": [0.0, 0.1, 0.3],
        "metric": "val_loss",
        "rung_metric": "ema_val_loss",
        "asha": {"time_attr": "step", "grace_period": 100, "reduction_factor": 3},  # rungs at steps 100, 300
        "unit": "steps",
    },
    "vision": {
        "what": "scale-invariant 1-D CNN on mnist1d (4,000/4,000), SGD momentum 0.9, L2 WD, cosine, 18 epochs",
        "trainable": "vision",
        "config": {"model": "cnn1d-si", "dataset": "mnist1d", "train_samples": 4000, "test_samples": 4000,
                   "batch_size": 64, "epochs": 18, "momentum": 0.9, "weight_decay_mode": "l2",
                   "schedule": "cosine", "train_eval": "running", "eval_every": 2, "ema_decay": 0.95,
                   "hessian_probes": 0, "threads": 1},
        "lr": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "weight_decay": [0.0, 1e-3, 5e-3],
        "metric": "test_error",
        "rung_metric": "ema_test_error",
        "asha": {"time_attr": "epoch", "grace_period": 2, "reduction_factor": 3},  # rungs at epochs 2, 6
        "unit": "steps",  # compute is counted in optimiser steps (62 per epoch)
    },
}
# The same vision task judged on the test loss, smoother than the error of 4,000 test signals
# (its binomial standard error is ~0.3 points at 3.5 %).
TASKS["vision-loss"] = {**TASKS["vision"], "metric": "test_loss", "rung_metric": "ema_test_loss",
                        "what": TASKS["vision"]["what"] + "; judged on the test loss"}


def grid_spec(task: dict, name: str, seeds: list[int]) -> dict:
    return {"name": name, "trainable": task["trainable"], "config": task["config"],
            "axes": {"lr": task["lr"], "weight_decay": task["weight_decay"], "seed": seeds}, "metric": task["metric"],
            "mode": "min", "resources": {"cpu": 1}}


def search_spec(task: dict, name: str, seed: int, num_samples: int, startup: int, rung_metric: str | None) -> dict:
    asha = {**task["asha"], **({"metric": rung_metric} if rung_metric else {})}
    return {"name": name, "trainable": task["trainable"],
            "config": {**task["config"], "seed": SEARCH_TRAINING_SEED + seed},  # seeds the grid did not use
            "axes": {"lr": {"loguniform": [min(task["lr"]), max(task["lr"])]},
                     "weight_decay": {"uniform": [min(task["weight_decay"]), max(task["weight_decay"])]}},
            "search": "optuna", "num_samples": num_samples, "search_seed": seed,
            "sampler": {"tpe": {"n_startup_trials": startup, "multivariate": True}},
            "scheduler": {"asha": asha}, "metric": task["metric"], "mode": "min",
            "max_concurrent": 1,  # one trial at a time: the compute spent when the target is found is exact
            "resources": {"cpu": 1}}


SEARCH_TRAINING_SEED = 100
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


def run_grid(key: str, task: dict, seeds: list[int], storage: str):
    ident = json.dumps([task["trainable"], task["config"], task["lr"], task["weight_decay"], seeds], sort_keys=True)
    if ident not in _GRIDS:
        _GRIDS[ident] = run_study(grid_spec(task, f"{key.split('-')[0]}-grid", seeds), storage)
    return _GRIDS[ident]


def correlation_curve(result, at_rung: str, final: str, time_attr: str) -> dict[str, float]:
    """Spearman correlation, over the grid's finished trials, between ``at_rung`` reported at each
    time and the final ``final``: how well a stopping decision there predicts the end."""
    from scipy.stats import spearmanr

    metrics = result.metrics()
    trials = result.trials().set_index("trial_id")
    done = trials.index[trials["status"] == "finished"]
    rows = metrics[metrics["trial_id"].isin(done) & metrics[at_rung].notna()] if at_rung in metrics else metrics[:0]
    curve = {}
    for t in sorted(rows[time_attr].dropna().unique()):
        at = rows[rows[time_attr] == t].set_index("trial_id")[at_rung]
        final_values = trials.loc[at.index, final]
        if len(at) > 2:
            curve[f"{t:g}"] = round(float(spearmanr(at.to_numpy(), final_values.to_numpy()).statistic), 3)
    return curve


def bench_task(key: str, task: dict, grid_seeds: list[int], search_seeds: list[int], num_samples: int,
               startup: int, goal: float, required: int, rung_metric: str | None, storage: str, log) -> dict:
    log(f"[{key}] {task['what']}")
    grid_result, grid_s = run_grid(key, task, grid_seeds, storage)
    grid_trials = grid_result.trials()
    grid = progress(grid_trials, task["metric"], "min")
    target = seeded_target(grid_trials, task["metric"], "min")
    compute_per_seed = float(grid["steps"].sum()) / len(grid_seeds)  # what a one-seed grid search costs
    time_attr = task["asha"]["time_attr"]
    curves = {"metric": correlation_curve(grid_result, task["metric"], task["metric"], time_attr)}
    if rung_metric:
        curves["rung_metric"] = correlation_curve(grid_result, rung_metric, task["metric"], time_attr)
    first_rung = f"{task['asha']['grace_period']:g}"
    log(f"[{key}] grid: {len(grid)} trials, best mean {task['metric']} {target['mean']:.4g} ± {target['sd']:.2g} "
        f"(sd over {target['seeds']} seeds) at {target['point']}; target {target['target']:.4g}, "
        f"{target['within']} of {len(target['points'])} points' means within it; one seed's grid "
        f"{compute_per_seed:,.0f} steps; Spearman at the first rung: {task['metric']} "
        f"{curves['metric'].get(first_rung, math.nan):.2f}"
        + (f", {rung_metric} {curves['rung_metric'].get(first_rung, math.nan):.2f}" if rung_metric else "")
        + f"; {grid_s:.0f} s")
    runs = []
    for seed in search_seeds:
        spec = search_spec(task, f"{key}-search-{seed}", seed, num_samples, startup, rung_metric)
        result, seconds = run_study(spec, storage)
        prog = progress(result.trials(), task["metric"], "min")
        hit = reach(prog, target["target"], "min")
        best = float(np.nanmin(prog["value"])) if np.isfinite(prog["value"]).any() else math.nan
        run = {"seed": seed, "trials": len(prog), "finished": int((prog["status"] == "finished").sum()),
               "stopped": int((prog["status"] == "stopped").sum()),
               "diverged": int((prog["status"] == "diverged").sum()), "best": best,
               "compute_total": float(prog["steps"].sum()), "seconds": seconds, "reached": hit is not None,
               "compute_to_target": float(hit["compute_spent"]) if hit is not None else None,
               "trials_to_target": int(hit["trials_spent"]) if hit is not None else None}
        run["share_of_grid"] = (run["compute_to_target"] if hit is not None else run["compute_total"]) / compute_per_seed
        run["within_goal"] = hit is not None and run["share_of_grid"] <= goal
        spent = prog[prog["compute_spent"] <= goal * compute_per_seed]  # what the goal's budget buys
        run["best_at_goal"] = float(spent["best_so_far"].iloc[-1]) if len(spent) else math.nan
        runs.append(run)
        log(f"[{key}] search seed {seed}: best {best:.4g}; "
            + (f"reached the target after {run['trials_to_target']} trials, {run['compute_to_target']:,.0f} steps = "
               f"{run['share_of_grid']:.0%} of a one-seed grid" if hit is not None else
               f"never reached the target (spent {run['compute_total']:,.0f} steps = {run['share_of_grid']:.0%})")
            + f"; {run['stopped']} of {run['trials']} stopped early; {seconds:.0f} s")
    met = sum(r["within_goal"] for r in runs)
    return {"task": key, "what": task["what"], "metric": task["metric"], "rung_metric": rung_metric,
            "grid": {"lr": task["lr"], "weight_decay": task["weight_decay"], "seeds": grid_seeds, "trials": len(grid),
                     "finished": int((grid["status"] == "finished").sum()), "compute_total": float(grid["steps"].sum()),
                     "compute_per_seed": compute_per_seed, "seconds": grid_s, "spearman_by_time": curves,
                     # a grid in random order, one seed: the expected share until a point whose mean is
                     # within the target comes up ((n + 1) / (k + 1) of n points)
                     "shuffled_grid_expected_share": (len(target["points"]) + 1) / ((target["within"] + 1)
                                                                                    * len(target["points"]))},
            "target": target, "searches": runs, "within_goal": f"{met}/{len(runs)}",
            "met": met >= required, "required": required, "goal": goal}


def table(results: list[dict]) -> str:
    lines = ["| task | grid best: mean ± seed sd (point) | target | points within it | one-seed grid (steps) | "
             "share of it to reach the target, per search seed | searches within the goal | met? | "
             "Spearman at the first rung: metric / rung metric |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, g = r["target"], r["grid"]
        per_seed = ", ".join((f"{s['share_of_grid']:.0%}" if s["reached"] else f">{s['share_of_grid']:.0%}")
                             for s in r["searches"])
        first = f"{TASKS[r['task']]['asha']['grace_period']:g}"
        rho = f"{g['spearman_by_time']['metric'].get(first, math.nan):.2f}"
        if r["rung_metric"]:
            rho += f" / {g['spearman_by_time']['rung_metric'].get(first, math.nan):.2f}"
        point = ", ".join(f"{k} {v:g}" for k, v in t["point"].items())
        lines.append(f"| {r['task']} ({r['metric']}) | {t['mean']:.4g} ± {t['sd']:.2g} ({point}) | {t['target']:.4g} | "
                     f"{t['within']}/{len(t['points'])} | {g['compute_per_seed']:,.0f} | {per_seed} | "
                     f"{r['within_goal']} (≤ {r['goal']:.0%}) | {'yes' if r['met'] else 'no'} | {rho} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lm,vision,vision-loss",
                        help="comma-separated: lm, vision, vision-loss (default: all three)")
    parser.add_argument("--seeds", type=int, default=5, help="search seeds per task (>= 3; default 5)")
    parser.add_argument("--num-samples", type=int, default=18, help="trials per search (default: 18, the grid's count)")
    parser.add_argument("--startup", type=int, default=5, help="TPE's random trials before it models (default 5)")
    parser.add_argument("--grid-seeds", type=int, default=3, help="seeds of the grid (>= 2; default 3)")
    parser.add_argument("--goal", type=float, default=0.25, help="the target share of a one-seed grid's compute (0.25)")
    parser.add_argument("--required", type=int, default=4, help="search seeds that must reach it within the goal (4)")
    parser.add_argument("--rung-metric", choices=("ema", "plain"), default="ema",
                        help="what ASHA compares at its rungs: the task's EMA metric (default) or the metric itself")
    parser.add_argument("--keep", metavar="DIR", help="keep the studies in this store (default: a temporary folder); "
                        "a study already there with the same spec is read, not run again")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for Ray (default: all)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or args.seeds < 1 or args.grid_seeds < 2:
        parser.error(f"unknown task {unknown[0]!r}; tasks: {', '.join(TASKS)}" if unknown else
                     "--seeds must be >= 1" if args.seeds < 1 else "--grid-seeds must be >= 2 (a seed sd needs two)")
    storage = args.keep or tempfile.mkdtemp(prefix="bench-search-")
    REUSE["on"] = bool(args.keep)
    started = time.perf_counter()

    def log(text):
        print(f"[{time.perf_counter() - started:6.0f}s] {text}", flush=True)

    info = {"case": "search", "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "machine": machine(), "versions": versions(),
            "settings": {"seeds": args.seeds, "grid_seeds": args.grid_seeds, "num_samples": args.num_samples,
                         "tpe_startup_trials": args.startup, "goal": args.goal, "required": args.required,
                         "rung_metric": args.rung_metric, "search_concurrency": 1,
                         "grid_concurrency": "as CPUs allow (1 CPU per trial)",
                         # with --keep, studies already in that store are read, not run: wall_seconds is then
                         # this invocation's; each study's own seconds come from its store
                         "keep": args.keep}}
    ensure_ray(num_cpus=args.cpus)
    try:
        results = [bench_task(key, TASKS[key], list(range(args.grid_seeds)), list(range(args.seeds)),
                              args.num_samples, args.startup, args.goal, args.required,
                              TASKS[key]["rung_metric"] if args.rung_metric == "ema" else None, storage, log)
                   for key in tasks]
    finally:
        if not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
    info["tasks"] = {k: TASKS[k] for k in tasks}
    info["results"] = results
    info["wall_seconds"] = time.perf_counter() - started
    text = table(results)
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
