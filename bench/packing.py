"""Packing benchmark: one LR x WD grid run unpacked and packed (K = 4, 16, 64), grid wall time and speed-up.

    python bench/packing.py                                   # both tiny presets, 16- and 64-point grids
    python bench/packing.py --presets ushape-tiny --grids 16  # one preset, one grid
    python bench/packing.py --quick                           # 16-point grids, K = 4, 16, shorter runs
    python bench/packing.py --grids --compute 16 --out bench/results/packing-compute.json  # only the Ray-free part

Each case is a real study (``study.launch`` on one local Ray instance, started once): the
preset's config, shrunk so that the benchmark ends in reasonable time (``SHRINK``: every
measurement of the preset is kept, over fewer epochs/steps), with an LR x WD grid of 16
(4 x 4) or 64 (8 x 8) points. Unpacked, every trial holds one CPU (two run at once on two
cores); packed, the packs share the machine's CPUs (a single pack holds all of them, as
torch threads). Cases alternate within each repeat; the speed-up is the unpacked wall time
over the packed one, both from the same repeat (then the median over repeats).

Then, to say where the time goes: ``--compute`` runs the same members without Ray on one
thread, packed (one ``BarePackSession``) and one after the other, and profiles a few
training steps of each (the share of the time in the matmul/convolution kernels, whose
FLOPs packing does not change, against everything else).

On a CUDA machine (``--device cuda``) the trials hold a GPU share instead (unpacked:
``--gpu-share`` of the GPU each, so several run at once; packed: the GPU split between
the packs).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time

from _common import Record, median, say, table

# Every measurement of the preset, over fewer epochs/steps (the grid replaces its axes).
SHRINK = {
    "ushape-tiny": ["epochs=4", "decay_epoch=3", "eval_every=2", "hessian_every=4", "finetune_every=2",
                    "finetune_epochs=1"],
    "chinchilla-tiny": ["steps=100", "eval_every=50", "warmup_steps=10"],
}
# --quick: half of it (the same measurements, half the epochs/steps)
QUICK_SHRINK = {
    "ushape-tiny": ["epochs=2", "decay_epoch=1", "eval_every=1", "hessian_every=2", "finetune_every=1",
                    "finetune_epochs=1", "train_samples=2000"],
    "chinchilla-tiny": ["steps=50", "eval_every=25", "warmup_steps=5"],
}
GRIDS = {  # (learning rates, weight decays) by grid size
    "ushape-tiny": {16: ([0.01, 0.03, 0.1, 0.3], [0.0, 1e-3, 3e-3, 5e-3]),
                    64: ([0.003, 0.006, 0.01, 0.03, 0.06, 0.1, 0.3, 1.0], [0.0, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2])},
    "chinchilla-tiny": {16: ([1e-3, 3e-3, 6e-3, 1e-2], [0.0, 0.1, 0.3, 1.0]),
                        64: ([1e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3, 1e-2, 2e-2], [0.0, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0])},
}
FIXED = {"ushape-tiny": ["seed=0"], "chinchilla-tiny": ["seed=0", "schedule=cosine"]}


def grid_spec(preset: str, size: int, pack: int, *, cpus: int, device: str, gpu_share: float, name: str,
              shrink: dict = SHRINK):
    from study import load_spec

    lrs, wds = GRIDS[preset][size]
    overrides = [*shrink[preset], *FIXED[preset], f"axes.lr={lrs}", f"axes.weight_decay={wds}", f"device={device}"]
    if pack > 1:
        packs = -(-size // pack)
        overrides.append(f"pack={pack}")
        if device == "cuda":
            overrides += ["resources.cpu=1", f"resources.gpu={1 / min(packs, round(1 / gpu_share))}"]
        else:  # fewer packs than CPUs: each pack gets the CPUs that would otherwise idle
            overrides.append(f"resources.cpu={max(1, cpus // packs)}")
    else:
        overrides += ["resources.cpu=1"] + ([f"resources.gpu={gpu_share}"] if device == "cuda" else [])
    return load_spec(preset, overrides, name=name)


def run_grids(args, record) -> list[dict]:
    import ray

    from study import launch
    from study.launch import ensure_ray

    ensure_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    root = tempfile.mkdtemp(prefix="bench-pack-")
    runs = []
    try:
        for repeat in range(args.repeats):
            for preset in args.presets:
                for size in args.grids:
                    for pack in [1, *[k for k in args.ks if k <= size or k == args.ks[0]]]:
                        spec = grid_spec(preset, size, pack, cpus=cpus, device=args.device, gpu_share=args.gpu_share,
                                         name=f"{preset}-{size}-k{pack}-{repeat}", shrink=args.shrink)
                        start = time.perf_counter()
                        result = launch(spec, storage=root, progress=False, stream=io.StringIO())
                        wall = time.perf_counter() - start
                        trials = result.trials()
                        statuses = trials["status"].value_counts().to_dict()
                        assert len(trials) == size and set(statuses) <= {"finished", "diverged"}, statuses
                        runs.append({"preset": preset, "grid": size, "pack": pack, "repeat": repeat, "wall_s": wall,
                                     "cpus_per_trial": spec.resources.cpu, "trials": size,
                                     "rows": len(result.metrics()), "statuses": statuses})
                        say(f"  {preset} {size}-point grid, {'unpacked' if pack == 1 else f'pack {pack}'}: {wall:.1f} s")
                        shutil.rmtree(result.store.root, ignore_errors=True)
        record["ray_cpus"] = cpus
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return runs


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for preset in dict.fromkeys(r["preset"] for r in runs):
        for size in dict.fromkeys(r["grid"] for r in runs if r["preset"] == preset):
            mine = [r for r in runs if r["preset"] == preset and r["grid"] == size]
            base = {r["repeat"]: r["wall_s"] for r in mine if r["pack"] == 1}
            for pack in dict.fromkeys(r["pack"] for r in mine):
                walls = [r for r in mine if r["pack"] == pack]
                speedups = [base[r["repeat"]] / r["wall_s"] for r in walls if r["repeat"] in base]
                rows.append({"preset": preset, "grid": size, "case": "unpacked" if pack == 1 else f"pack {pack}",
                             "Ray trials": -(-size // pack), "CPUs per trial": walls[0]["cpus_per_trial"],
                             "grid wall s (median)": median(r["wall_s"] for r in walls),
                             "speed-up (median)": median(speedups)})
    return rows


def compute_only(preset: str, size: int, members: int, steps_to_profile: int = 5, shrink: dict = SHRINK) -> dict:
    """The same members without Ray on one thread: packed vs one after the other, and a profile."""
    import torch

    from study import load_spec
    from trainables import get_packed, get_trainable
    from trainables.packing import BarePackSession
    from trainables.session import BareSession

    torch.set_num_threads(1)
    lrs, wds = GRIDS[preset][size]
    spec = load_spec(preset, [*shrink[preset], *FIXED[preset], f"axes.lr={lrs}", f"axes.weight_decay={wds}",
                              "threads=1", "device=cpu"])
    configs = spec.trial_configs()[:members]
    single, packed = get_trainable(spec.trainable).run_function(), get_packed(spec.trainable).run_function()
    single(configs[0], BareSession())  # data caches warm for both
    start = time.perf_counter()
    for config in configs:
        single(config, BareSession())
    one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    packed(configs, BarePackSession(len(configs)))
    together = time.perf_counter() - start
    return {"preset": preset, "members": len(configs), "one after the other s": one_by_one, "packed s": together,
            "speed-up": one_by_one / together, **profile_steps(preset, configs, steps_to_profile)}


def profile_steps(preset: str, configs: list[dict], steps: int) -> dict:
    """Self CPU time of a few training steps, unpacked (all members) and packed, by kernel family."""
    import torch
    from torch.profiler import profile

    from trainables.packing import BarePackSession
    from trainables.session import BareSession

    shorter = ({"epochs": 1, "hessian_every": 0, "finetune_every": 0, "ema_decay": 0.0, "eval_every": 1,
                "train_samples": 64 * steps, "decay_epoch": 0, "schedule": "constant"} if preset == "ushape-tiny"
               else {"steps": steps, "eval_every": steps, "eval_batches": 1, "ema_decay": 0.0, "warmup_steps": 0})
    configs = [{**c, **shorter} for c in configs]
    from trainables import get_packed, get_trainable

    name = "vision" if preset == "ushape-tiny" else "lm"
    single, packed = get_trainable(name).run_function(), get_packed(name).run_function()
    out = {}
    for case, work in (("unpacked", lambda: [single(c, BareSession()) for c in configs]),
                       ("packed", lambda: packed(configs, BarePackSession(len(configs))))):
        work()  # warm
        with profile() as prof:
            work()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        heavy = sum(e.self_cpu_time_total for e in events
                    if any(k in e.key for k in ("mm", "conv", "bmm", "addmm", "linear")))
        out[f"{case} profile s"] = total / 1e6
        out[f"{case} matmul/conv share"] = heavy / total
        out[f"{case} top kernels"] = [(e.key, round(e.self_cpu_time_total / 1e6, 3))
                                      for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]]
        del prof
    torch.set_num_threads(1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["ushape-tiny", "chinchilla-tiny"], choices=sorted(SHRINK))
    parser.add_argument("--grids", type=int, nargs="*", default=[16, 64], choices=[16, 64],
                        help="grid sizes run through Ray (none: only the Ray-free comparison)")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--gpu-share", type=float, default=0.125, help="GPU share of an unpacked trial on CUDA")
    parser.add_argument("--compute", type=int, default=16, help="members of the Ray-free comparison (0: skip it)")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: 16-point grids, K = 4 and 16, half-length runs, 8 members without Ray")
    parser.add_argument("--out", help="JSON path (default: bench/results/packing.json)")
    args = parser.parse_args()
    if args.quick:
        args.grids, args.ks, args.repeats, args.compute = [16], [k for k in args.ks if k <= 16], 1, min(args.compute, 8)
    args.shrink = QUICK_SHRINK if args.quick else SHRINK
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    record = Record("packing", vars(args))
    record["shrink"] = {p: args.shrink[p] for p in args.presets}
    record["grids"] = {p: {str(k): v for k, v in GRIDS[p].items()} for p in args.presets}

    if args.grids:
        runs = run_grids(args, record)
        rows = summarise(runs)
        record["runs"], record["summary"] = runs, rows
        say(table(rows))
    if args.compute:
        compute = []
        for preset in args.presets:
            compute.append(compute_only(preset, max(args.grids or [16]), args.compute, shrink=args.shrink))
            say(f"  {preset}: {compute[-1]['members']} members without Ray on one thread: "
                f"{compute[-1]['one after the other s']:.1f} s one after the other, {compute[-1]['packed s']:.1f} s packed")
        record["compute_only"] = compute
        say(table([{k: v for k, v in c.items() if "top kernels" not in k} for c in compute]))
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
