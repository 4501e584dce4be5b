"""How chinchilla-tiny was designed: direct calls to the LM trainable (no Ray), judged by
the verdict rules of issue 12 (analysis/verdicts.py) before analysis/verdicts.py had them.

    python docs/presets/chinchilla-tiny-design.py run --tag T --seeds 20 21 22 \
        --arms cosine:0 cosine:0.3 --set tail_steps=400 --set tail_lr=1e-4 [--big-eval 128]
    python docs/presets/chinchilla-tiny-design.py judge [--tag T] [--metric val_loss] [--records F]
    python docs/presets/chinchilla-tiny-design.py judge --store /tmp/ct-cli --study chinchilla-tiny \
        --json docs/presets/chinchilla-tiny-confirmation.json
    python docs/presets/chinchilla-tiny-design.py eval-noise --tag bigeval \
        --records docs/presets/results/ct-micro03-constant-seeds70-73.jsonl [--json F]

``run`` trains one trial at a time on one thread and appends one JSON line per trial to
docs/presets/chinchilla-tiny-design.jsonl: the config, every report, and with --big-eval N
the per-batch losses of the weights at the end of the schedule and at the last report on N
fixed validation and N fixed training batches (to tell how much of the seed-to-seed spread
of a margin is the 8-batch evaluation's). ``judge`` applies the rules to the stored curves, or to a study store written by the CLI
(--store, --study), and with --json writes the per-seed curves and the verdicts.
Run it from the worktree root so that ``trainables`` is this checkout's.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import pandas as pd

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "chinchilla-tiny-design.jsonl"
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's packages, not the venv's

from analysis.stats import VERDICT_CONFIDENCE as CONF, decide, equivalent  # noqa: E402 (after the path)
from analysis.verdicts import ALIKE_EPSILON as EPSILON, ALIKE_SHARE as SHARE, LOSS_DELTA as DELTA  # noqa: E402
from study.spec import parse_yaml  # noqa: E402  (--set values read as the CLI reads them)

# the preset's config before the redesign (study/presets/chinchilla-tiny.yaml at 56ab5e9)
BASE = dict(model="gpt-tiny", context=64, batch_size=16, steps=2000, optimizer="adamw", lr=6.0e-3,
            warmup_steps=100, min_lr_ratio=0.1, grad_clip=1.0, precision="fp32", eval_every=100,
            eval_batches=8, device="cpu", threads=1)



# What the design started from: val_loss margins loss(0) - loss(0.3) per seed pair of the old
# preset (2,000 cosine steps, LR 6e-3, eval 8 batches), as recorded before this redesign.
PRIOR = {
    "end of cosine (step 2000)": {
        "margins": [0.004, 0.003, 0.014, -0.005, 0.001, -0.002, 0.004, -0.011, 0.011],
        "source": "README 'Measured at tiny scale' (seeds 0-2, fused AdamW: dVal -0.004/-0.003/-0.014; "
                  "the unfused run: +0.005/-0.001/+0.002) and shared/scale.md update 2026-12-01 "
                  "(seeds 10-12: -0.004/+0.011/-0.011)"},
    "after 400 tail steps at 1e-4 (step 2400)": {
        "margins": [0.019, 0.007, 0.027],
        "source": "shared/scale.md update 2026-12-01, seeds 10-12"},
    "tail gain (after tail minus end of cosine)": {
        "margins": [0.015, 0.018, 0.016],
        "source": "the two rows above, seeds 10-12"},
}


def big_eval(state: dict, config: dict, n: int) -> dict:
    """Per-batch mean losses of the saved weights on n fixed val and n fixed train batches."""
    import torch
    from trainables.lm.data import WindowSampler, load_tokens
    from trainables.lm.train import TRAIN_EVAL_SEED, VAL_SEED
    from trainables.models.gpt import GPT, model_config

    data = load_tokens("shakespeare")
    model = GPT(model_config(config["model"], block_size=config["context"], vocab_size=data.vocab_size))
    model.load_state_dict(state["model"])
    model.eval()
    windows = dict(context=config["context"], batch_size=config["batch_size"], device=torch.device("cpu"),
                   vocab_size=data.vocab_size)
    out = {}
    for split, tokens, seed in (("val", data.val, VAL_SEED), ("train", data.train, TRAIN_EVAL_SEED)):
        batches = WindowSampler(tokens, seed=seed, **windows).fixed_batches(n)
        with torch.no_grad():
            out[split] = [model(x, y)[1].item() for x, y in batches]
    return out


def run(args) -> None:
    import torch
    from trainables.lm.train import run as train
    from trainables.session import BareSession

    torch.set_num_threads(1)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: parse_yaml(v, "--set") for k, v in overrides.items()}
    for seed in args.seeds:
        for arm in args.arms:
            schedule, wd = arm.split(":")
            config = {**BASE, **overrides, "schedule": schedule, "weight_decay": float(wd), "seed": seed}
            if args.big_eval:
                config["checkpoint_every"] = 1
            session = BareSession()
            start = time.perf_counter()
            train(config, session)
            seconds = time.perf_counter() - start
            record = {"tag": args.tag, "config": {k: v for k, v in config.items() if k != "checkpoint_every"},
                      "status": session.status, "seconds": round(seconds, 1), "reports": session.reports}
            if args.big_eval:
                ends = {config["steps"], session.reports[-1]["step"]}
                record["big_eval"] = {str(s["step"]): big_eval(s, config, args.big_eval)
                                      for s in session.states if s["step"] in ends}
            with RESULTS.open("a") as f:
                f.write(json.dumps(record) + "\n")
            last = session.reports[-1]
            print(f"{args.tag} seed {seed} {arm}: {session.status} in {seconds:.0f} s, "
                  f"val {last['val_loss']:.4f} at step {last['step']}", flush=True)


# ---------------------------------------------------------------- the verdict rules
def _summary(d, values) -> dict:
    v = np.asarray(values, dtype=float)
    res = {"outcome": d.outcome, "n": len(v), "mean": float(v.mean()),
           "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan, "lo": d.low, "hi": d.high,
           "per_seed": [round(float(x), 4) for x in v]}
    if d.outcome == "inconclusive" and d.seeds_needed:
        res["seeds_needed"] = d.seeds_needed
    return res


def directional(margins) -> dict:
    """Pass when the whole interval of the margin is >= DELTA, fail when all of it is < DELTA: the
    verdicts' own rule (``analysis.stats.decide``, the margins against zero, paired by seed)."""
    m = pd.Series(np.asarray(margins, dtype=float))
    return _summary(decide(m, pd.Series(0.0, index=m.index), DELTA, confidence=CONF), margins)


def equivalence(values, train_effect: float = 0.0) -> dict:
    """Pass when the interval lies inside (-ε, ε), fail when it lies outside
    (``analysis.stats.equivalent``), with the verdict's ε = max(EPSILON, SHARE · |mean Δtrain|)
    (``analysis.verdicts.train_val_alike``). The JSON files in docs/presets without a "share" key
    were written with EPSILON alone, as their "epsilon" says."""
    v = pd.Series(np.asarray(values, dtype=float))
    bound = max(EPSILON, SHARE * abs(train_effect))
    return {**_summary(equivalent(v, pd.Series(0.0, index=v.index), bound, confidence=CONF), values),
            "epsilon": bound}


def curves(records, schedule: str) -> dict:
    """{(wd, seed): {step: report}} for the finished trials of one schedule."""
    out = {}
    for r in records:
        if r["config"]["schedule"] == schedule and r["status"] == "finished":
            out[(r["config"]["weight_decay"], r["config"]["seed"])] = {rep["step"]: rep for rep in r["reports"]}
    return out


def judge(records, metric: str = "val_loss", train_metric: str = "train_loss") -> dict:
    verdicts = {}
    for schedule in ("cosine", "constant"):
        c = curves(records, schedule)
        if not c:
            continue
        steps = next(r["config"]["steps"] for r in records if r["config"]["schedule"] == schedule)
        tail = next(r["config"].get("tail_steps", 0) for r in records if r["config"]["schedule"] == schedule)
        for wd in sorted({wd for wd, _ in c if wd > 0}):
            seeds = sorted(s for w, s in c if w == wd and (0.0, s) in c)
            arm = {s: c[(wd, s)] for s in seeds}
            base = {s: c[(0.0, s)] for s in seeds}

            def d(s, step, m=metric):
                return arm[s][step][m] - base[s][step][m]

            key = f"{schedule} wd={wd}"
            if schedule == "cosine":
                mid = [st for st in sorted(base[seeds[0]]) if 0.25 * steps <= st <= 0.75 * steps]
                per_seed = [float(np.mean([d(s, st) for st in mid])) for s in seeds]
                v = directional(per_seed)
                positive = [np.mean([d(s, st) for s in seeds]) > 0 for st in mid]
                v["sustained_fraction"] = float(np.mean(positive))
                if v["outcome"] == "pass" and v["sustained_fraction"] < 0.75:
                    v["outcome"] = "fail"
                v["reports"] = mid
                verdicts[f"4 mid-run excess, {key}"] = v
                verdicts[f"5 end of cosine, {key}"] = directional([-d(s, steps) for s in seeds])
                if tail:
                    last = steps + tail
                    verdicts[f"6 after continuation, {key}"] = directional([-d(s, last) for s in seeds])
            else:
                verdicts[f"7 constant ends higher, {key}"] = directional([d(s, steps) for s in seeds])
            ends = [steps] + ([steps + tail] if tail and schedule == "cosine" else [])
            for end in ends:
                for tm in (train_metric, "eval_train_loss"):
                    verdicts[f"8 train/val alike ({tm}) at {end}, {key}"] = equivalence(
                        [d(s, end) - d(s, end, tm) for s in seeds], float(np.mean([d(s, end, tm) for s in seeds])))
    return verdicts


def eval_noise(records, sizes=(16, 32, 64, 128)) -> dict:
    """How much of the seed spread of claim 8's per-seed (Δval − Δtrain) is the evaluation's:
    the same final weights (``run --big-eval``) evaluated on the first n of the fixed
    validation and training batches, for each n. Pairs λ > 0 with λ = 0 per schedule and seed."""
    out = {}
    for schedule in ("cosine", "constant"):
        ends = {(r["config"]["weight_decay"], r["config"]["seed"]): r["big_eval"][str(r["config"]["steps"])]
                for r in records if r["config"]["schedule"] == schedule and "big_eval" in r}
        for wd in sorted({w for w, _ in ends if w > 0}):
            seeds = sorted(s for w, s in ends if w == wd and (0.0, s) in ends)
            rows = {}
            for n in sizes:
                def gap(e, n=n):
                    return float(np.mean(e["val"][:n]) - np.mean(e["train"][:n]))
                d = [gap(ends[(wd, s)]) - gap(ends[(0.0, s)]) for s in seeds]
                effect = float(np.mean([np.mean(ends[(wd, s)]["train"][:n]) - np.mean(ends[(0.0, s)]["train"][:n])
                                        for s in seeds]))
                rows[str(n)] = {"per_seed": [round(v, 4) for v in d], "mean": float(np.mean(d)),
                                "sd": float(np.std(d, ddof=1)), "train_effect": effect}
            out[f"{schedule} wd={wd}"] = {"seeds": seeds, "batches": rows}
    return out


def store_records(storage: str, study: str) -> list[dict]:
    """A CLI study store as the records ``run`` writes: config, status and reports per trial."""
    from study import StudyStore

    store = StudyStore(storage, study)
    trials, metrics = store.read_trials(), store.read_metrics()
    records = []
    for _, t in trials.iterrows():
        config = {c.removeprefix("config/"): t[c] for c in trials.columns if c.startswith("config/")}
        config = {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}
        rows = metrics[metrics["trial_id"] == t["trial_id"]].sort_values("step")
        keep = [c for c in ("step", "val_loss", "train_loss", "eval_train_loss", "time_total_s") if c in rows]
        reports = [{k: float(v) if k != "step" else int(v) for k, v in r.items()} for r in rows[keep].to_dict("records")]
        records.append({"tag": study, "trial_id": t["trial_id"], "config": config, "status": t["status"],
                        "seconds": float(rows["time_total_s"].max()) if "time_total_s" in rows else None,
                        "reports": reports})
    return records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tag", required=True)
    r.add_argument("--seeds", type=int, nargs="+", required=True)
    r.add_argument("--arms", nargs="+", default=["cosine:0", "cosine:0.3", "constant:0", "constant:0.3"])
    r.add_argument("--set", action="append", default=[], help="key=value over BASE")
    r.add_argument("--big-eval", type=int, default=0)
    sub.add_parser("prior", help="the rules applied to the margins the design started from")
    e = sub.add_parser("eval-noise", help="claim 8's seed spread against the number of evaluation batches "
                                          "(records of run --big-eval)")
    e.add_argument("--records", default=str(RESULTS), help="a JSON-lines file of run records")
    e.add_argument("--tag", action="append")
    e.add_argument("--json", help="write the table here")
    j = sub.add_parser("judge")
    j.add_argument("--tag", action="append")
    j.add_argument("--metric", default="val_loss")
    j.add_argument("--train-metric", default="train_loss")
    j.add_argument("--seeds", type=int, nargs="*")
    j.add_argument("--store", action="append",
                   help="a study store (the CLI's --storage) instead of the design runs; repeat it to judge the "
                        "trials of several stores together (e.g. one run per seed set)")
    j.add_argument("--study", default="chinchilla-tiny")
    j.add_argument("--records", default=str(RESULTS), help="the design runs' JSON-lines file")
    j.add_argument("--json", help="write the curves and verdicts here")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
        return
    if args.command == "prior":
        for name, p in PRIOR.items():
            v = directional(p["margins"])
            extra = f", seeds needed {v['seeds_needed']}" if "seeds_needed" in v else ""
            print(f"{name}: {v['outcome']}, mean {v['mean']:+.4f} sd {v['sd']:.4f} "
                  f"[{v['lo']:+.4f}, {v['hi']:+.4f}] n={v['n']}{extra}")
        return
    if args.command == "eval-noise":
        records = [json.loads(line) for line in pathlib.Path(args.records).read_text().splitlines()]
        table = eval_noise([r for r in records if not args.tag or r["tag"] in args.tag])
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"source": args.records, "table": table}, indent=1) + "\n")
        for arm, t in table.items():
            for n, row in t["batches"].items():
                print(f"{arm}, seeds {t['seeds']}, {n:>3} batches: mean {row['mean']:+.4f} sd {row['sd']:.4f} "
                      f"per seed {row['per_seed']} (Δtrain {row['train_effect']:+.4f})")
        return
    if args.store:
        records = [r for storage in args.store for r in store_records(storage, args.study)]
    else:
        records = [json.loads(line) for line in pathlib.Path(args.records).read_text().splitlines()]
    records = [r for r in records if (not args.tag or r["tag"] in args.tag)
               and (not args.seeds or r["config"]["seed"] in args.seeds)]
    verdicts = judge(records, args.metric, args.train_metric)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"source": ", ".join(args.store) if args.store else args.records, "study": args.study, "metric": args.metric,
             "delta": DELTA, "epsilon": EPSILON, "share": SHARE, "confidence": CONF, "verdicts": verdicts,
             "trials": records}, indent=1, default=str) + "\n")
    for name, v in verdicts.items():
        extra = f" (seeds needed: {v['seeds_needed']})" if "seeds_needed" in v else ""
        print(f"{v['outcome']:>12}  {name}: mean {v['mean']:+.4f} sd {v['sd']:.4f} "
              f"[{v['lo']:+.4f}, {v['hi']:+.4f}] n={v['n']} per seed {v['per_seed']}{extra}")


if __name__ == "__main__":
    main()
