"""How many cosine seeds chinchilla-tiny's continuation claim (6) needs: its per-seed margins
from the design runs, pooled, and how often ``analysis.stats.decide`` passes the claim on n
new seeds drawn from a normal with that mean and spread.

    python docs/presets/chinchilla-tiny-power.py \
        docs/presets/chinchilla-tiny-design-micro03-seeds60-63.json \
        docs/presets/chinchilla-tiny-micro03-seeds70-73.json \
        --json docs/presets/chinchilla-tiny-power.json

Each input is a ``chinchilla-tiny-design.py judge --json`` file; the claim is read from its
verdict "6 after continuation, …".
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent.parent))  # this checkout's packages

from analysis.stats import PASS, VERDICT_CONFIDENCE, decide, seeds_to_decide  # noqa: E402
from analysis.verdicts import LOSS_DELTA  # noqa: E402


def margins(path: str) -> list[float]:
    verdicts = json.loads(pathlib.Path(path).read_text())["verdicts"]
    (key,) = [k for k in verdicts if k.startswith("6 after continuation")]
    return [float(v) for v in verdicts[key]["per_seed"]]


def pass_rate(mean: float, sd: float, n: int, draws: int, rng: np.random.Generator) -> float:
    """The share of ``draws`` studies of ``n`` seeds whose claim-6 verdict is pass (paired: the
    per-seed margin is drawn, the λ = 0 side is zero)."""
    zero = pd.Series(np.zeros(n))
    passed = 0
    for _ in range(draws):
        drawn = pd.Series(rng.normal(mean, sd, n))
        passed += decide(drawn, zero, LOSS_DELTA).outcome == PASS
    return passed / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6, 7])
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--json")
    args = parser.parse_args()
    pooled = [m for path in args.inputs for m in margins(path)]
    mean, sd = float(np.mean(pooled)), float(np.std(pooled, ddof=1))
    rng = np.random.default_rng(0)
    rates = {n: pass_rate(mean, sd, n, args.draws, rng) for n in args.seeds}
    out = {"inputs": args.inputs, "margins": pooled, "mean": mean, "sd": sd, "delta": LOSS_DELTA,
           "confidence": VERDICT_CONFIDENCE, "draws": args.draws,
           "seeds_to_decide_at_the_pooled_mean": seeds_to_decide(sd, mean - LOSS_DELTA),
           "pass_rate": {str(n): r for n, r in rates.items()}}
    print(f"claim 6 over {len(pooled)} seeds: mean {mean:+.4f}, sd {sd:.4f}; "
          f"seeds_to_decide at the mean: {out['seeds_to_decide_at_the_pooled_mean']}")
    for n, r in rates.items():
        print(f"  {n} seeds: pass in {r:.0%} of {args.draws} draws")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
