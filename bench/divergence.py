"""A short bfloat16-vs-float32 run at the paper's divergence settings, on one GPU.

    python bench/divergence.py                 # GPT-2-124M, LR 1e-3, fp32 vs bf16 autocast, WD 0 and 0.1, 150 steps
    python bench/divergence.py --dry           # the same study on the CPU at a tiny size (a check)

The ``bf16-divergence`` preset (GPT-2-124M, context 1024, AdamW at peak LR 1e-3, warm-up,
cosine, float32 with TF32 matmuls vs bf16 autocast with fp32 master weights) cut to
``--steps`` optimiser steps of ``--batch-tokens`` tokens on the embedded corpus (the GPU
machine reaches no network: OpenWebText is not there), weight decay 0 and 0.1, one seed,
the four trials sharing the GPU. It is a short look, not the paper's 50,000-step experiment:
it records each arm's loss curve, status (a blow-up that does not recover is ``diverged``),
loss spikes and tokens/s, so that the day a GPU is lent the run says whether bf16 already
departs from float32 at this length. Written to ``bench/results/divergence.json``.
"""

from __future__ import annotations

import argparse
import io
import tempfile

from _common import Record, say, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-tokens", type=int, default=65536, help="tokens per optimiser step")
    parser.add_argument("--dry", action="store_true", help="gpt-nano on the CPU, a few steps: a check that it runs")
    parser.add_argument("--out", help="JSON path (default: bench/results/divergence.json)")
    args = parser.parse_args()
    record = Record("divergence", vars(args))

    from study import launch, load_spec

    steps = 6 if args.dry else args.steps
    sets = [f"steps={steps}", f"warmup_steps={max(2, steps // 10)}", f"eval_every={max(2, steps // 6)}",
            "eval_batches=4", "checkpoint_every=0", "ema_decay=0", "dataset=shakespeare",
            "axes.weight_decay=[0.0, 0.1]", "axes.seed=[0]"]
    if args.dry:
        sets += ["model=gpt-nano", "context=64", "batch_size=2", "batch_tokens=256", "compile=false", "tf32=false",
                 "device=cpu", "resources.cpu=1", "resources.gpu=0"]
    else:
        sets += [f"batch_tokens={args.batch_tokens}", "resources.cpu=2", "resources.gpu=0.25"]
    spec = load_spec("bf16-divergence", sets, name="bench-divergence")
    with tempfile.TemporaryDirectory(prefix="bench-div-") as storage:
        result = launch(spec, storage=storage, progress=False, stream=io.StringIO())
        trials, metrics = result.trials(), result.metrics()
    rows = []
    for _, trial in trials.sort_values(["config/precision", "config/weight_decay"]).iterrows():
        curve = metrics[metrics["trial_id"] == trial["trial_id"]].sort_values("step")
        rows.append({"precision": trial["config/precision"], "weight_decay": float(trial["config/weight_decay"]),
                     "status": trial["status"], "final val_loss": float(curve["val_loss"].dropna().iloc[-1])
                     if curve["val_loss"].notna().any() else None,
                     "min train_loss": float(curve["train_loss"].min()), "loss_spikes": int(trial.get("loss_spikes") or 0),
                     "tokens/s": float(curve["tokens_per_s"].dropna().median()) if "tokens_per_s" in curve else None,
                     "curve": {"step": curve["step"].tolist(), "train_loss": curve["train_loss"].tolist(),
                               "val_loss": curve["val_loss"].tolist()}})
    record["summary"] = rows
    say(table([{k: v for k, v in row.items() if k != "curve"} for row in rows]))
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
