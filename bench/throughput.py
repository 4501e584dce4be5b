"""Throughput benchmark: training tokens/s and samples/s of the trainables' own loops, and MFU on a GPU.

    python bench/throughput.py            # CPU cases, 3 interleaved repeats; on CUDA also GPT-2-124M in bf16
    python bench/throughput.py --quick    # fewer steps, one repeat (a few minutes on 2 shared CPUs)
    python bench/throughput.py --peak-tflops 989   # a card that is not in the peak table

Every case runs a trainable's ``run(config, session)`` from plain Python (no Ray) and reads
the throughput it reports itself, from the report intervals after the first (the first pays
the warm-up: allocations, caches, ``torch.compile``). The CPU cases run ``--repeats`` times (3),
interleaved, and each row gives the median rate of the repeats and their min–max:

- **tiny GPT** (``gpt-tiny``, the model chinchilla-tiny ran until 2026-12-02: 4 layers, width 128, context 64, batch 16, AdamW)
  on the CPU: ``tokens_per_s``, with 1 thread and with every usable core;
- **tiny CNN** (``ushape-tiny``'s scale-invariant 1-D CNN on mnist1d, batch 64, SGD): its
  ``samples_per_s`` (the "images" of this CNN are 1-D signals of 40 points), likewise;
- **GPT-2-124M** (12 layers, width 768, context 1024, GPT-2's vocabulary of 50,257 tokens on
  random token files written here, bf16 autocast with fp32 master weights, ``torch.compile``,
  fused AdamW, gradient accumulation to the preset's 65,536 tokens per step; no parameter EMA,
  no checkpoints: nanoGPT's loop) on CUDA: tokens/s and MFU. Model FLOPs per token are nanoGPT's
  ``estimate_mfu`` count (PaLM, arXiv 2204.02311, appendix B): 6·N + 12·L·H·Q·T, N the
  non-embedding parameters; MFU = FLOPs per token × tokens/s / the card's dense bf16 peak
  (``trainables.lm.metrics.PEAK_BF16_FLOPS``, a table of known cards; ``--peak-tflops``
  overrides it). Target on an H100: MFU >= 45%. Without CUDA the case is skipped with its
  reason printed and recorded.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import Record, median, say, table

CPU_CASES = {
    # name: (preset, overrides, metric, unit, length key, {full, quick} lengths)
    "tiny GPT": ("chinchilla-tiny", ["axes.seed=[0]", "model=gpt-tiny", "schedule=cosine", "weight_decay=0.3", "warmup_steps=10",
                                     "eval_batches=1"], "tokens_per_s", "tokens/s", "steps",
                 {"full": (300, 50), "quick": (100, 25)}),
    "tiny CNN": ("ushape-tiny", ["axes.seed=[0]", "lr=0.1", "weight_decay=0.001", "hessian_every=0", "finetune_every=0",
                                 "decay_epoch=0", "schedule=constant", "ema_decay=0", "eval_every=1",
                                 "test_samples=500"], "samples_per_s", "samples/s", "epochs",
                 {"full": (4, 1), "quick": (3, 1)}),
}


def reported_rate(preset: str, overrides: list[str], metric: str) -> dict:
    """Run the preset's trainable bare; the median of its reported rate after the first report."""
    from study import load_spec
    from trainables import get_trainable
    from trainables.session import BareSession

    spec = load_spec(preset, overrides)
    (config,) = spec.trial_configs()
    session = BareSession()
    get_trainable(spec.trainable).run_function()(config, session)
    rates = [r[metric] for r in session.reports if metric in r]
    if len(rates) < 2:
        raise RuntimeError(f"{preset}: fewer than 2 reports of {metric}; lengthen the run")
    return {"rate": median(rates[1:]), "rates": rates, "reports": session.reports}


def cpu_cases(args) -> tuple[list[dict], list[dict]]:
    """Every CPU case ``--repeats`` times, the cases interleaved within each repeat (so that all
    see the same machine load): a row per case (the median rate and its min–max), and the runs."""
    cores = len(os.sched_getaffinity(0))
    runs = []
    for repeat in range(args.repeats):
        for threads in sorted({1, cores}):
            for name, (preset, overrides, metric, unit, key, lengths) in CPU_CASES.items():
                length, every = lengths["quick" if args.quick else "full"]
                extra = [f"{key}={length}", f"threads={threads}", "device=cpu"]
                if key == "steps":
                    extra.append(f"eval_every={every}")
                result = reported_rate(preset, [*overrides, *extra], metric)
                runs.append({"case": name, "threads": threads, "unit": unit, "repeat": repeat, "rate": result["rate"],
                             "reports used": len(result["rates"]) - 1})
                say(f"  repeat {repeat + 1}/{args.repeats} {name}, {threads} thread(s): {result['rate']:.4g} {unit}")
    rows = []
    for threads in sorted({1, cores}):
        for name, (_, _, _, unit, _, _) in CPU_CASES.items():
            rates = [r["rate"] for r in runs if (r["case"], r["threads"]) == (name, threads)]
            rows.append({"case": name, "device": "cpu", "threads": threads, "unit": unit, "rate": median(rates),
                         "rate min-max": [min(rates), max(rates)], "repeats": len(rates), "MFU": "", "note": ""})
    return rows, runs


def gpu_case(args) -> dict:
    import numpy as np
    import torch

    from trainables.lm.metrics import peak_bf16_flops

    if not torch.cuda.is_available() and not args.dry:
        return {"case": "GPT-2-124M bf16", "device": "cuda", "unit": "tokens/s", "rate": "not measured",
                "MFU": "not measured", "note": "skipped: no CUDA device on this machine"}
    name = torch.cuda.get_device_name(0) if not args.dry else "cpu (dry run)"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_bf16_flops(name)
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as folder:
        rng = np.random.default_rng(0)  # GPT-2 token ids: the work per token does not depend on the text
        for split, count in (("train", 200_000 if args.dry else 20_000_000), ("val", 20_000 if args.dry else 1_000_000)):
            rng.integers(0, 50257, count, dtype=np.uint16).tofile(os.path.join(folder, f"{split}.bin"))
        steps, every = (60, 10) if args.quick else (200, 20)
        overrides = ["model=gpt2-124m", "dataset=bin", f"data_dir={folder}", "context=1024",
                     f"batch_size={args.gpt2_batch}", "precision=bf16-autocast", "compile=true", "device=cuda",
                     f"steps={steps}", f"eval_every={every}", "eval_batches=1", "warmup_steps=10", "axes.seed=[0]",
                     "schedule=cosine", "weight_decay=0.1", "lr=6.0e-4", "tail_steps=0", "checkpoint_every=0",
                     "ema_decay=0"]
        if args.dry:  # the same loop, settings and measurements at a size a CPU runs in seconds
            steps, every = 8, 2
            overrides += ["model=gpt-nano", "context=64", "batch_size=2", "compile=false", "device=cpu",
                          f"steps={steps}", f"eval_every={every}", "warmup_steps=2", "batch_tokens=512"]
        result = reported_rate("chinchilla", overrides, "tokens_per_s")
    flops_per_token = flops_per_token_gpt2() if not args.dry else float("nan")
    rate = median(result["rates"][2:]) if len(result["rates"]) > 3 else result["rate"]  # compile settles late
    mfu = flops_per_token * rate / peak if peak else None
    return {"case": "GPT-2-124M bf16", "device": name, "threads": "", "unit": "tokens/s", "rate": rate,
            "reports used": len(result["rates"]) - 2, "MFU": mfu if mfu is not None else "no peak known",
            "note": (f"peak {peak / 1e12:.0f} TFLOP/s bf16; {flops_per_token / 1e9:.3f} GFLOP/token" if peak
                     else f"{name} is not in PEAK_BF16_FLOPS: pass --peak-tflops"),
            "target MFU >= 45% (H100)": ("met" if mfu and mfu >= 0.45 else "missed") if "H100" in name else ""}


def flops_per_token_gpt2() -> float:
    import torch

    from trainables.lm.data import GPT2_VOCAB
    from trainables.models.gpt import GPT, model_config

    with torch.device("meta"):
        model = GPT(model_config("gpt2-124m", block_size=1024, vocab_size=GPT2_VOCAB))
    return model.flops_per_token()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every CPU case, interleaved (default 3)")
    parser.add_argument("--no-cpu", action="store_true", help="only the GPU case")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, TFLOP/s (overrides the table)")
    parser.add_argument("--gpt2-batch", type=int, default=16, help="GPT-2-124M micro-batch (sequences of 1024)")
    parser.add_argument("--dry", action="store_true",
                        help="the GPU case's loop on the CPU at a tiny size (a check that it runs, no figure)")
    parser.add_argument("--out", help="JSON path (default: bench/results/throughput.json)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    record = Record("throughput", dict(vars(args)))
    rows, record["cpu_runs"] = ([], []) if args.no_cpu else cpu_cases(args)
    gpu = gpu_case(args)
    if isinstance(gpu.get("note"), str) and gpu["note"].startswith("skipped"):
        say(f"  GPT-2-124M bf16 MFU case {gpu['note']}")
    rows.append(gpu)
    record["summary"] = rows
    shown = [{**row, "rate": f"{row['rate']:,.0f}" if isinstance(row["rate"], float) else row["rate"],
              "MFU": f"{row['MFU']:.1%}" if isinstance(row["MFU"], float) else row["MFU"]} for row in rows]
    say(table(shown, ["case", "device", "threads", "unit", "rate", "MFU", "note"]))
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
