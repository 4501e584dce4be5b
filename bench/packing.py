"""Packing benchmark: one grid run from the CLI unpacked and packed (K = 4, 16), wall time, spread, profiles.

    python bench/packing.py                                   # both tiny presets, 16-point grids, 3 repeats
    python bench/packing.py --presets ushape-tiny --grids 16 64 --ks 4 16 64
    python bench/packing.py --quick --out /tmp/packing.json   # shorter runs, 3 repeats: checks that it works

Each case is a study launched as a user launches it, ``python -m study launch PRESET --set
pack=K ...`` in a fresh process with its own local Ray instance, into a fresh store, timed
from the command's start to its exit (Ray's start included, as for a user): the preset's
config shrunk so that the benchmark ends in reasonable time (``SHRINK``: every measurement
of the preset kept, over fewer epochs/steps) with an LR x WD grid of 16 (4 x 4) or 64
(8 x 8) points. Nothing but ``pack`` changes between the cases: unpacked, every trial holds
the preset's ``resources`` (one CPU: two trials at once on two cores); packed, each pack
asks for its members' CPUs, capped at the machine's (``study.packs.pack_resources``), and
runs that many torch threads. Repeats are interleaved (each repeat runs every case once, in
turn); each case reports the median wall time with its min-max, and the speed-up over the
unpacked case of the same repeat (median and min-max over repeats).

Then, per preset and K, where the time goes: ``--profile`` runs a few training steps of K
members without Ray on one thread, packed (one engine) and one member after the other, under
``torch.profiler``, and tabulates the top operators by self CPU time per member and step,
packed against unpacked: the operators whose time packing does not reduce (on CPUs, the
convolutions and matmuls, whose FLOPs it does not change) are the ones that bound it.

On a CUDA machine (``--device cuda``) the unpacked trials hold ``--gpu-share`` of the GPU
each (several at once); a pack asks for its members' shares, at most one GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import ROOT, Record, median, say, table

# Every measurement of the preset, over fewer epochs/steps (the grid replaces its axes).
# ushape-tiny's 32,000 test signals take ~30 s of mnist1d generation where the disk cache does
# not have them yet, which a run of a few epochs would mostly measure: the benchmark keeps 4,000. The preset runs no Tr(H);
# the benchmark does, at the size the earlier preset ran it (10 probes on 1,000 signals).
HESSIAN = ["hessian_probes=10", "hessian_samples=1000", "hessian_batch=500"]
SHRINK = {
    "ushape-tiny": [*HESSIAN, "test_samples=4000", "epochs=4", "decay_epoch=3", "eval_every=2", "hessian_every=4", "finetune_every=2",
                    "finetune_epochs=1"],
    "chinchilla-tiny": ["steps=100", "eval_every=50", "warmup_steps=10", "tail_steps=20"],
}
# --quick: half of it (the same measurements, half the epochs/steps)
QUICK_SHRINK = {
    "ushape-tiny": [*HESSIAN, "test_samples=4000", "epochs=2", "decay_epoch=1", "eval_every=1", "hessian_every=2", "finetune_every=1",
                    "finetune_epochs=1", "train_samples=2000"],
    "chinchilla-tiny": ["steps=50", "eval_every=25", "warmup_steps=5", "tail_steps=10"],
}
# --dry: a few steps of each, small data (bench/gpu.sh --dry: a check that every case runs)
DRY_SHRINK = {
    "ushape-tiny": ["epochs=2", "decay_epoch=1", "eval_every=1", "hessian_every=0", "finetune_every=0",
                    "train_samples=256", "test_samples=256"],
    "chinchilla-tiny": ["steps=6", "eval_every=3", "warmup_steps=2", "tail_steps=2", "eval_batches=1"],
}
GRIDS = {  # (learning rates, weight decays) by grid size
    "ushape-tiny": {16: ([0.01, 0.03, 0.1, 0.3], [0.0, 1e-3, 3e-3, 5e-3]),
                    64: ([0.003, 0.006, 0.01, 0.03, 0.06, 0.1, 0.3, 1.0], [0.0, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2])},
    "chinchilla-tiny": {16: ([1e-3, 3e-3, 6e-3, 1e-2], [0.0, 0.1, 0.3, 1.0]),
                        64: ([1e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3, 1e-2, 2e-2], [0.0, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0])},
}
# the tiny GPT of the recorded runs (gpt-tiny; the preset now runs gpt-micro), its cosine arm
FIXED = {"ushape-tiny": ["seed=0"], "chinchilla-tiny": ["seed=0", "schedule=cosine", "model=gpt-tiny"]}


def overrides(preset: str, size: int, pack: int, *, device: str, gpu_share: float, shrink: dict,
              pack_cpu: float | None = None) -> list[str]:
    """The ``--set`` values of one case: the shrunk preset, the grid, the device, ``pack`` and,
    when given, the CPUs each pack holds (``pack_resources.cpu``; otherwise the rule's)."""
    lrs, wds = GRIDS[preset][size]
    sets = [*shrink[preset], *FIXED[preset], f"axes.lr={lrs}", f"axes.weight_decay={wds}", f"device={device}"]
    if device == "cuda":
        sets.append(f"resources.gpu={gpu_share}")
    if pack > 1 and pack_cpu is not None:
        sets.append(f"pack_resources.cpu={pack_cpu:g}")
    return sets + ([f"pack={pack}"] if pack > 1 else [])


def case_name(pack: int, pack_cpu: float | None) -> str:
    if pack == 1:
        return "unpacked"
    return f"pack {pack}" + (f" ({pack_cpu:g} CPU{'s' if pack_cpu != 1 else ''} each)" if pack_cpu is not None else "")


def cli_case(preset: str, size: int, pack: int, *, args, root: str, name: str, pack_cpu: float | None = None) -> dict:
    """One study run from the command line, as a user runs it; its wall time and what it stored."""
    from study import load_spec
    from study.store import StudyStore

    sets = overrides(preset, size, pack, device=args.device, gpu_share=args.gpu_share, shrink=args.shrink,
                     pack_cpu=pack_cpu)
    command = [sys.executable, "-m", "study", "launch", preset, "--name", name, "--storage", root, "--no-report"]
    for value in sets:
        command += ["--set", value]
    for attempt in range(3):  # a loaded machine may time Ray's start out: that case is run again
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode == 0 or "timed out during startup" not in done.stderr:
            break
        say(f"  (Ray's start timed out; running {name} again)")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    trials = StudyStore(root, name).read_trials()
    statuses = trials["status"].value_counts().to_dict()
    assert len(trials) == size and set(statuses) <= {"finished", "diverged"}, statuses
    spec = load_spec(preset, sets)
    return {"wall_s": wall, "trials": size, "statuses": statuses, "cpus_per_trial": spec.resources.cpu,
            "attempts": attempt + 1, "command": " ".join(["python", *command[1:]])}


def run_grids(args, record) -> list[dict]:
    root = tempfile.mkdtemp(prefix="bench-pack-")
    runs = []
    try:
        for repeat in range(args.repeats):  # interleaved: every case once per repeat
            for preset in args.presets:
                for size in args.grids:
                    ks = [k for k in args.ks if k <= size]
                    cases = [(1, None), *[(k, None) for k in ks], *[(k, c) for k in ks if size // k >= 2 for c in args.pack_cpus]]  # a split needs packs to run side by side
                    for pack, pack_cpu in cases:
                        name = f"{preset}-{size}-k{pack}-{repeat}" + (f"-c{pack_cpu:g}" if pack_cpu is not None else "")
                        run = cli_case(preset, size, pack, args=args, root=root, name=name, pack_cpu=pack_cpu)
                        runs.append({"preset": preset, "grid": size, "pack": pack, "pack_cpu": pack_cpu,
                                     "repeat": repeat, **run})
                        record["runs"] = runs  # written after every case: a run cut short keeps what it did
                        record.write(args.out)
                        say(f"  repeat {repeat}: {preset} {size}-point grid, {case_name(pack, pack_cpu)}: "
                            f"{run['wall_s']:.1f} s")
                        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record["cpus"] = os.cpu_count()
    return runs


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for preset in dict.fromkeys(r["preset"] for r in runs):
        for size in dict.fromkeys(r["grid"] for r in runs if r["preset"] == preset):
            mine = [r for r in runs if r["preset"] == preset and r["grid"] == size]
            base = {r["repeat"]: r["wall_s"] for r in mine if r["pack"] == 1}
            for pack, pack_cpu in dict.fromkeys((r["pack"], r.get("pack_cpu")) for r in mine):
                same = [r for r in mine if r["pack"] == pack and r.get("pack_cpu") == pack_cpu]
                walls = [r["wall_s"] for r in same]
                speedups = [base[r["repeat"]] / r["wall_s"] for r in same if r["repeat"] in base]
                rows.append({"preset": preset, "grid": size, "case": case_name(pack, pack_cpu),
                             "repeats": len(walls), "wall s (median)": median(walls),
                             "wall s (min-max)": f"{min(walls):.1f}-{max(walls):.1f}",
                             "speed-up (median)": median(speedups),
                             "speed-up (min-max)": f"{min(speedups):.2f}-{max(speedups):.2f}"})
    return rows


# ---------------------------------------------------------------- where the time goes


def short_configs(preset: str, members: int, steps: int) -> tuple[str, list[dict]]:
    """``members`` configs of the preset's 16-point grid, cut to ``steps`` training steps without
    evaluation or other measurements (what one training step costs, and nothing else)."""
    from study import load_spec

    lrs, wds = GRIDS[preset][16]
    spec = load_spec(preset, [*FIXED[preset], f"axes.lr={lrs}", f"axes.weight_decay={wds}", "threads=1",
                              "device=cpu"])
    if spec.trainable == "vision":
        cut = {"epochs": 1, "hessian_every": 0, "finetune_every": 0, "ema_decay": 0.0, "eval_every": 1,
               "train_samples": spec.config["batch_size"] * steps, "test_samples": 100, "eval_batch_size": 100,
               "decay_epoch": 0, "schedule": "constant"}
    else:
        cut = {"steps": steps, "eval_every": steps, "eval_batches": 1, "ema_decay": 0.0, "warmup_steps": 0,
               "tail_steps": 0}
    return spec.trainable, [{**c, **cut} for c in spec.trial_configs()[:members]]


def profile_case(preset: str, members: int, steps: int = 6, top: int = 10) -> dict:
    """Self CPU time per member and training step of each operator, one thread: ``members``
    unpacked runs one after the other against one pack of them (each run once to warm up)."""
    import torch
    from torch.profiler import profile

    from trainables import get_packed, get_trainable
    from trainables.packing import BarePackSession
    from trainables.session import BareSession

    name, configs = short_configs(preset, members, steps)
    single, packed = get_trainable(name).run_function(), get_packed(name).run_function()
    torch.set_num_threads(1)
    per_op, totals = {}, {}
    for case, work in (("unpacked", lambda: [single(c, BareSession()) for c in configs]),
                       ("packed", lambda: packed(configs, BarePackSession(len(configs))))):
        work()
        with profile() as prof:
            work()
        events = prof.key_averages()
        scale = 1e3 / (members * steps * 1e6)  # µs of the whole run → ms per member and step
        per_op[case] = {e.key: e.self_cpu_time_total * scale for e in events}
        totals[case] = sum(per_op[case].values())
        del prof
    ranked = sorted(set(per_op["unpacked"]) | set(per_op["packed"]),
                    key=lambda k: -max(per_op["unpacked"].get(k, 0), per_op["packed"].get(k, 0)))[:top]
    rows = [{"operator": k, "unpacked ms": per_op["unpacked"].get(k, 0.0), "packed ms": per_op["packed"].get(k, 0.0),
             "packed / unpacked": per_op["packed"].get(k, 0.0) / per_op["unpacked"][k]
             if per_op["unpacked"].get(k) else float("nan")} for k in ranked]
    rows.append({"operator": "(all operators)", "unpacked ms": totals["unpacked"], "packed ms": totals["packed"],
                 "packed / unpacked": totals["packed"] / totals["unpacked"]})
    return {"preset": preset, "members": members, "steps": steps, "threads": 1,
            "unit": "self CPU ms per member and training step (whole runs of a few steps, set-up included)",
            "top": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["ushape-tiny", "chinchilla-tiny"], choices=sorted(SHRINK))
    parser.add_argument("--grids", type=int, nargs="*", default=[16], choices=[16, 64],
                        help="grid sizes run from the CLI (none: only the profiles)")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--pack-cpus", type=float, nargs="*", default=[],
                        help="also run each K with pack_resources.cpu set to each of these (e.g. 1: two packs at once)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--gpu-share", type=float, default=0.125, help="GPU share of an unpacked trial on CUDA")
    parser.add_argument("--profile", type=int, default=6, help="training steps profiled per case (0: no profiles)")
    parser.add_argument("--quick", action="store_true", help="half-length runs (the same cases and repeats)")
    parser.add_argument("--dry", action="store_true", help="a few steps per case: a check that every case runs")
    parser.add_argument("--out", help="JSON path (default: bench/results/packing.json)")
    args = parser.parse_args()
    args.shrink = DRY_SHRINK if args.dry else QUICK_SHRINK if args.quick else SHRINK
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    record = Record("packing", {k: v for k, v in vars(args).items() if k != "shrink"})
    record["shrink"] = {p: args.shrink[p] for p in args.presets}
    record["grids"] = {p: {str(k): v for k, v in GRIDS[p].items()} for p in args.presets}

    if args.grids:
        runs = run_grids(args, record)
        rows = summarise(runs)
        record["runs"], record["summary"] = runs, rows
        say(table(rows))
    if args.profile:
        profiles = []
        for preset in args.presets:
            for members in args.ks:
                profiles.append(profile_case(preset, members, steps=args.profile))
                say(f"\n{preset}, {members} members, one thread: {profiles[-1]['unit']}")
                say(table(profiles[-1]["top"], floatfmt=".3g"))
        record["profiles"] = profiles
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
