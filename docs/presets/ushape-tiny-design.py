"""Design runs for the ushape-tiny preset: the vision trainable called directly (no Ray), one
process, one thread, so that candidate settings can be compared on design seeds before any
CLI run. Each finished run appends one JSON line (config + every report) to the results file;
runs already in the file are skipped, so the script can be stopped and resumed.

    python docs/presets/ushape-tiny-design.py NAME --lr 0.03 0.1 0.3 --wd 0 1e-3 5e-3 --seed 0 1 2 3 \
        --set epochs=100 --set decay_epoch=80 ...
    python docs/presets/ushape-tiny-design.py NAME --judge      # the verdict rules on the final test errors

Results: docs/presets/results/NAME.jsonl. The judge applies the rules of analysis/verdicts.py
(issue 12) to the per-seed final test errors; ``python -m analysis report`` is the final word once
analysis/verdicts.py implements them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the worktree's packages first

from analysis.stats import decide as decide_margin  # noqa: E402 (after the path)
from analysis.verdicts import ERROR_DELTA as DELTA  # noqa: E402  0.25 pp of test error
from study.spec import parse_yaml  # noqa: E402  (--set values read as the CLI reads them)

BASE = {  # the candidate under design; --set overrides
    "model": "cnn1d", "dataset": "mnist1d", "train_samples": 4000, "test_samples": 4000, "data_seed": 42,
    "batch_size": 64, "eval_batch_size": 2000, "epochs": 60, "optimizer": "sgd", "momentum": 0.0,
    "weight_decay_mode": "l2", "decay_params": "all", "schedule": "step", "decay_epoch": 50,
    "decay_factor": 0.1, "train_eval": "running", "eval_every": 10, "ema_decay": 0.0, "hessian_every": 0,
    "finetune_every": 0, "precision": "fp32", "threads": 1,
}


def results_path(name: str) -> str:
    return os.path.join(HERE, "results", f"{name}.jsonl")


def load(name: str) -> list[dict]:
    path = results_path(name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train(name: str, lrs, wds, seeds, overrides: dict) -> None:
    import torch

    from trainables.session import BareSession
    from trainables.vision.train import run

    torch.set_num_threads(1)
    done = {(r["config"]["lr"], r["config"]["weight_decay"], r["config"]["seed"]) for r in load(name)}
    os.makedirs(os.path.dirname(results_path(name)), exist_ok=True)
    for seed, lr, wd in itertools.product(seeds, lrs, wds):  # seed-major: a partial file has whole seeds
        if (lr, wd, seed) in done:
            continue
        config = {**BASE, **overrides, "lr": lr, "weight_decay": wd, "seed": seed}
        session = BareSession()
        started = time.perf_counter()
        run(config, session)
        seconds = time.perf_counter() - started
        last = session.reports[-1]
        print(f"lr {lr:<6} wd {wd:<7} seed {seed}: {session.status:9} test_error {last.get('test_error', math.nan):.4f} "
              f"train_error {last.get('train_error', math.nan):.4f} norm {last.get('weight_norm', math.nan):.1f} "
              f"{seconds:.1f}s", flush=True)
        with open(results_path(name), "a") as f:
            f.write(json.dumps({"config": config, "status": session.status, "seconds": seconds,
                                "reports": session.reports}) + "\n")


# ---------------------------------------------------------------- the verdict rules (analysis/verdicts.py)


def decide(margins: np.ndarray, delta: float = DELTA) -> tuple[str, float, float, float, int | None]:
    """Paired margins per seed → (outcome, mean, lo, hi, seeds that would decide), by the verdicts' own
    rule (``analysis.stats.decide``: the margins against zero, paired by seed)."""
    margins = pd.Series(np.asarray(margins, dtype=float))
    d = decide_margin(margins, pd.Series(0.0, index=margins.index), delta)
    return d.outcome, d.margin, d.low, d.high, d.seeds_needed


def final_errors(records: list[dict]) -> dict:
    """(lr, wd) → {seed: final test error}; a diverged run → NaN (left out of the lines)."""
    table: dict = {}
    for r in records:
        c = r["config"]
        error = r["reports"][-1].get("test_error", math.nan) if r["status"] == "finished" else math.nan
        table.setdefault((c["lr"], c["weight_decay"]), {})[c["seed"]] = error
    return table


def judge(records: list[dict], seeds=None, quiet: bool = False) -> dict:
    table = final_errors(records)
    if seeds is not None:
        table = {k: {s: e for s, e in v.items() if s in seeds} for k, v in table.items()}
    lrs = sorted({lr for lr, _ in table})
    wds = sorted({wd for _, wd in table})
    common = sorted(set.intersection(*(set(v) for v in table.values())))
    err = {k: np.array([v[s] for s in common]) for k, v in table.items()}
    mean = {k: float(np.mean(v)) for k, v in err.items()}
    out = {"seeds": common, "lrs": lrs, "wds": wds}
    if not quiet:
        print(f"seeds {common}; mean final test error (%):")
        print("LR \\ WD " + "".join(f"{wd:>9g}" for wd in wds))
        for lr in lrs:
            print(f"{lr:<8g}" + "".join(f"{100 * mean[(lr, wd)]:9.2f}" if (lr, wd) in mean else "        -" for wd in wds))
    finished = {k: v for k, v in err.items() if np.all(np.isfinite(v))}
    positive = {k: v for k, v in finished.items() if k[1] > 0}
    best = min(positive, key=lambda k: mean[k])
    lr_star, wd_star = best
    out["best"] = best
    parts = {}
    # claim 1: U-shape on the best WD's line, LRs that finished
    line = sorted(lr for lr in lrs if (lr, wd_star) in finished)
    if len(line) >= 3:
        interior = [lr for lr in line[1:-1]]
        centre = min(interior, key=lambda lr: mean[(lr, wd_star)])
        parts["1 U: smallest LR higher"] = decide(finished[(line[0], wd_star)] - finished[(centre, wd_star)])
        parts["1 U: largest LR higher"] = decide(finished[(line[-1], wd_star)] - finished[(centre, wd_star)])
    # claim 2 (i): WD is needed; (ii): a large LR is needed
    zero = [k for k in finished if k[1] == 0]
    if zero:
        best_zero = min(zero, key=lambda k: mean[k])
        parts[f"2i WD needed (best WD 0 at LR {best_zero[0]:g})"] = decide(finished[best_zero] - finished[best])
    small = [k for k in positive if k[0] == lrs[0]]
    if small:
        best_small = min(small, key=lambda k: mean[k])
        parts[f"2ii large LR needed (LR {lrs[0]:g}, WD {best_small[1]:g})"] = decide(finished[best_small] - finished[best])
    # claim 3: best point not on the grid edge (overall best, mean)
    overall = min(finished, key=lambda k: mean[k])
    edge_lr = overall[0] in (lrs[0], lrs[-1])
    edge_wd = overall[1] in (wds[0], wds[-1])
    out["claim3"] = "fail" if (edge_lr or edge_wd) else "pass"
    out["parts"] = parts
    if not quiet:
        print(f"best λ>0 point: LR {lr_star:g}, WD {wd_star:g} ({100 * mean[best]:.2f} %); overall best {overall}")
        for label, (outcome, m, lo, hi, need) in parts.items():
            extra = f", ~{need} seeds would decide" if need else ""
            print(f"  {label}: {outcome:12} margin {100 * m:+.2f} pp, 90% [{100 * lo:+.2f}, {100 * hi:+.2f}]{extra}")
        print(f"  3 best not on the edge: {out['claim3']} (LR edge {edge_lr}, WD edge {edge_wd})")
    return out


def store_records(name: str, storage: str) -> list[dict]:
    """A CLI store's trials as records of the same form (config, status, the last report)."""
    from analysis.load import load_study

    study = load_study(name, storage)
    finals = study.finals()
    records = []
    for _, row in finals.iterrows():
        config = {"lr": float(row["config/lr"]), "weight_decay": float(row["config/weight_decay"]),
                  "seed": int(row["config/seed"])}
        records.append({"config": config, "status": str(row["status"]),
                        "reports": [{"test_error": float(row["test_error"])}]})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--lr", type=float, nargs="+")
    parser.add_argument("--wd", type=float, nargs="+")
    parser.add_argument("--seed", type=int, nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--judge", action="store_true")
    parser.add_argument("--judge-seeds", type=int, nargs="+")
    parser.add_argument("--store", metavar="STORAGE", help="judge the CLI study NAME in this store instead")
    parser.add_argument("--export", metavar="CSV", help="with --store: also write the per-seed final test errors here")
    args = parser.parse_args()
    if args.store:
        records = store_records(args.name, args.store)
        if args.export:
            with open(args.export, "w") as f:
                f.write("lr,weight_decay,seed,status,test_error\n")
                for r in sorted(records, key=lambda r: (r["config"]["lr"], r["config"]["weight_decay"], r["config"]["seed"])):
                    c = r["config"]
                    f.write(f"{c['lr']},{c['weight_decay']},{c['seed']},{r['status']},{r['reports'][-1]['test_error']}\n")
        judge(records, seeds=args.judge_seeds)
        return
    if args.judge:
        judge(load(args.name), seeds=args.judge_seeds)
        return
    overrides = dict((k, parse_yaml(v, "--set")) for k, v in (s.split("=", 1) for s in args.set))
    train(args.name, args.lr, args.wd, args.seed, overrides)


if __name__ == "__main__":
    main()
