"""Per-step time of the LM trainable, unpacked vs packed, side by side (no Ray, no store).

    python bench/lm_pack_step.py                         # the tiny GPT (gpt-tiny), K = 4, 16; 1 and 2 threads
    python bench/lm_pack_step.py --ks 16 --threads 1 --profile   # + the top operators of K = 1 and K = 16

Each case runs the trainable's own entry point (``trainables.lm.train.run`` for K = 1,
``trainables.lm.packed.run`` for a pack) on chinchilla-tiny's first config (gpt-tiny, context 64, batch
16) for ``--steps`` steps with a report every ``--every`` steps, and reads its time per
training step from the loop's own timer (the intervals between reports, evaluation
excluded), the first interval left out as warm-up, on two clocks: wall time, and the
process's CPU time (user + system, all threads: what the case cost the machine, robust to
other work taking the cores, where wall time is not). The members of a pack differ in LR and
weight decay (and seed with ``--seeds``). Cases alternate within each repeat; a pack's
speed-up is K × its members' tokens per second over the unpacked run's, both from the same
repeat, then the median (min–max) over repeats. Each case runs in a fresh process (a pack
changes the process's malloc settings: ``trainables.lm.packed.keep_freed_memory``). Absolute
times on a shared machine are noise; only ratios measured in the same run mean something.
Prints, writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import say, table

CONFIG = {"model": "gpt-tiny", "context": 64, "batch_size": 16, "optimizer": "adamw", "lr": 6e-3,
          "warmup_steps": 10, "min_lr_ratio": 0.1, "grad_clip": 1.0, "precision": "fp32", "eval_batches": 1,
          "ema_decay": 0.0, "schedule": "cosine", "device": "cpu", "seed": 0}
LRS, WDS = (1e-3, 3e-3, 6e-3, 1e-2), (0.0, 0.1, 0.3, 1.0)


def members(k: int, seeds: bool) -> list[dict]:
    grid = [(lr, wd) for wd in WDS for lr in LRS]
    return [{**CONFIG, "lr": grid[i % 16][0], "weight_decay": grid[i % 16][1], "seed": i if seeds else 0}
            for i in range(k)]


class TwoClocks:
    """``trainables.lm.train.IntervalTimer`` on a CPU, timing each interval on both clocks."""

    intervals: list[tuple[float, float]] = []

    def __init__(self, device):
        pass

    def start(self) -> None:
        self.begin = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.intervals.append((time.perf_counter() - self.begin[0], time.process_time() - self.begin[1]))

    def seconds(self) -> float:
        return self.intervals[-1][0]


def step_seconds(k: int, threads: int, steps: int, every: int, seeds: bool) -> dict[str, float]:
    """Seconds per training step of the whole pack (K = 1: the unpacked trial), wall and CPU."""
    from trainables.lm import train as loop
    from trainables.lm.packed import run as run_packed
    from trainables.lm.train import run

    loop.IntervalTimer = TwoClocks
    from trainables.packing import BarePackSession
    from trainables.session import BareSession

    configs = [{**c, "steps": steps, "eval_every": every, "threads": threads} for c in members(k, seeds)]
    if k == 1:
        run(configs[0], BareSession())
    else:
        run_packed(configs, BarePackSession(k))
    measured = TwoClocks.intervals[1:]
    return {clock: statistics.median(interval[i] / every for interval in measured)
            for i, clock in enumerate(("wall", "cpu"))}


def profile(k: int, threads: int, steps: int, rows: int) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from trainables.lm.packed import run as run_packed
    from trainables.lm.train import run
    from trainables.packing import BarePackSession
    from trainables.session import BareSession

    configs = [{**c, "steps": steps, "eval_every": steps, "threads": threads, "warmup_steps": 0}
               for c in members(k, False)]
    work = (lambda: run(configs[0], BareSession())) if k == 1 else (lambda: run_packed(configs, BarePackSession(k)))
    work()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    torch.set_num_threads(threads)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seeds", action="store_true", help="members on their own seeds (own batches)")
    parser.add_argument("--profile", action="store_true", help="print the top operators of K = 1 and the largest K")
    parser.add_argument("--one", type=int, nargs=2, metavar=("K", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one case, in this process: print its seconds per step
        print(json.dumps(step_seconds(*args.one, args.steps, args.every, args.seeds)))
        return
    times: dict[tuple[int, int], list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for threads in args.threads:
            for k in [1, *args.ks]:
                command = [sys.executable, __file__, "--one", str(k), str(threads), "--steps", str(args.steps),
                           "--every", str(args.every), *(["--seeds"] if args.seeds else [])]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                times.setdefault((threads, k), []).append(json.loads(out.strip().splitlines()[-1]))
                last = times[threads, k][-1]
                say(f"  repeat {repeat} threads {threads} K={k}: {last['wall'] * 1e3:.1f} ms/step wall, "
                    f"{last['cpu'] * 1e3:.1f} ms CPU")
    rows = []
    for threads in args.threads:
        for k in [1, *args.ks]:
            row = {"threads": threads, "K": k}
            for clock in ("wall", "cpu"):
                mine = [t[clock] for t in times[threads, k]]
                speedups = [k * b[clock] / t for b, t in zip(times[threads, 1], mine)]
                row.update({f"{clock} ms/member-step": statistics.median(mine) * 1e3 / k,
                            f"{clock} speed-up (median)": statistics.median(speedups),
                            f"{clock} min–max": f"{min(speedups):.2f}–{max(speedups):.2f}"})
            rows.append(row)
    say(table(rows))
    if args.profile:
        for k in (1, max(args.ks)):
            say(f"\nK = {k}, {args.threads[0]} thread(s), {args.steps} steps:")
            say(profile(k, args.threads[0], args.steps, 15))


if __name__ == "__main__":
    main()
