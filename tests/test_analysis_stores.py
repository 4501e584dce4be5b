"""Synthetic stores with known answers, written through StoreWriter (the path a study's results take).

The other analysis tests import these builders. Each store mimics one regime of the
paper with metrics named as in the trainables' contract, and values from closed-form
functions so tests can compute every expected number by hand:

- ``vision``: LR × WD × 3 seeds; with WD > 0 the final error is a U in log LR with its
  minimum at LR 0.03; with WD 0 it falls monotonically. One trial diverges, one fails.
- ``lm``: schedule × WD × 3 seeds; under cosine WD 0.3 is higher mid-run and crosses below
  WD 0 at step 850; under a constant LR it stays higher. val_loss = train_loss + 0.01.
- ``bf16``: precision × WD × 3 seeds; bf16 without WD diverges in seeds 0 and 1.
"""

from __future__ import annotations

import json
import math

import yaml

from study.store import StoreWriter, StudyStore

PROVENANCE = {"git_commit": "0123abc", "git_dirty": False, "versions": json.dumps({"torch": "2.13.0"}), "host": "synth"}
SEEDS = (0, 1, 2)

VISION_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
VISION_WDS = (0.0, 1e-3)
VISION_EPOCHS = 6
VISION_DROP_EPOCH = 5  # the LR drops 100× from this epoch on
VISION_BRANCH_EPOCHS = (2, 4)  # the fine-tune-after-decay protocol branches here
VISION_DIVERGED = (0.3, 0.0, 2)  # (lr, wd, seed)
VISION_FAILED_ID = "failed_lr0.1"


def vision_error(lr: float, wd: float, seed: int) -> float:
    """Final test error after fine-tuning: a U in log10 LR (minimum at 0.03) with WD, monotone without."""
    if wd > 0:
        base = 0.03 + 0.01 * math.log10(lr / 0.03) ** 2
    else:
        base = 0.05 - 0.005 * (math.log10(lr) + 2.5)
    return base + 0.0005 * (seed - 1)  # seed offsets average to zero over seeds 0, 1, 2


def vision_reports(lr: float, wd: float, seed: int, diverge_at: int | None = None) -> list[dict]:
    rows = []
    final = vision_error(lr, wd, seed)
    for epoch in range(1, VISION_EPOCHS + 1):
        lr_now = lr if epoch < VISION_DROP_EPOCH else lr / 100
        norm = 10.0 + epoch * (1.0 - 500 * wd)
        row = {"epoch": epoch, "step": 10 * epoch, "lr": lr_now,
               "train_loss": (1.0 + 10 * lr * wd * 100) / epoch, "train_error": 0.5 / epoch,
               "test_loss": 1.0 / epoch, "test_error": final + 0.01 + 0.02 * (VISION_EPOCHS - epoch),
               "ema_test_error": final + 0.005 + 0.01 * (VISION_EPOCHS - epoch),
               "weight_norm": norm, "effective_lr": lr_now / norm**2, "effective_lr_sqrt": lr_now / norm,
               "hessian_trace": 100.0 * lr * epoch, "weight_norm/conv1": norm / 2,
               "training_iteration": epoch, "time_total_s": 1.5 * epoch}
        if epoch in VISION_BRANCH_EPOCHS:
            # the last branch (epoch 4) reaches exactly vision_error
            row.update(finetune_test_error=final + 0.004 * (VISION_BRANCH_EPOCHS[-1] - epoch),
                       finetune_train_loss=0.01, finetune_hessian_trace=50.0 * lr * epoch)
        if diverge_at is not None and epoch == diverge_at:
            row.update(train_loss=math.nan, test_error=0.9, diverged_step=10 * epoch, last_finite_loss=rows[-1]["train_loss"])
            rows.append(row)
            return rows
        rows.append(row)
    return rows


def _start(storage: str, name: str, spec: dict) -> tuple[StudyStore, StoreWriter]:
    store = StudyStore(storage, name)
    store.write_text("spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    store.write_text("study.json", json.dumps({"name": name, "source": "synthetic", "git_commit": "0123abc"}))
    return store, StoreWriter(store, PROVENANCE, flush_rows=7)  # several part files per trial


def write_vision_store(storage: str, name: str = "vision", *, drop: tuple[str, ...] = ()) -> StudyStore:
    """The vision store; ``drop`` names metrics to leave out of every report."""
    spec = {"name": name, "description": "synthetic U-shape study", "trainable": "vision",
            "config": {"epochs": VISION_EPOCHS},
            "axes": {"lr": list(VISION_LRS), "weight_decay": list(VISION_WDS), "seed": list(SEEDS)},
            "metric": "finetune_test_error" if "finetune_test_error" not in drop else "test_error", "mode": "min"}
    store, writer = _start(storage, name, spec)
    for lr in VISION_LRS:
        for wd in VISION_WDS:
            for seed in SEEDS:
                trial_id = f"lr{lr}_wd{wd}_s{seed}"
                writer.trial_started(trial_id, {"epochs": VISION_EPOCHS, "lr": lr, "weight_decay": wd, "seed": seed})
                diverged = (lr, wd, seed) == VISION_DIVERGED
                for row in vision_reports(lr, wd, seed, diverge_at=3 if diverged else None):
                    writer.add_result(trial_id, {k: v for k, v in row.items() if k not in drop})
                writer.trial_ended(trial_id, "diverged" if diverged else "finished")
    writer.trial_started(VISION_FAILED_ID, {"epochs": VISION_EPOCHS, "lr": 0.1, "weight_decay": 0.0, "seed": 3})
    writer.trial_ended(VISION_FAILED_ID, "failed", "Traceback ...\nRuntimeError: CUDA out of memory")
    writer.close()
    return store


LM_STEPS = tuple(range(100, 1001, 100))
LM_SCHEDULES = ("cosine", "constant")
LM_WDS = (0.0, 0.3)
LM_CROSSING_STEP = 850.0


def lm_loss(step: int, wd: float, schedule: str, seed: int) -> float:
    """Training loss: WD 0.3 under cosine is higher until step 850 and lower after; under constant, higher."""
    base = 1.5 + 3.0 * math.exp(-step / 250) + 0.001 * (seed - 1)
    if wd == 0:
        return base
    if schedule == "cosine":
        return base + 0.1 * wd * (LM_CROSSING_STEP - step) / LM_CROSSING_STEP
    return base + 0.02 * step / 1000


def write_lm_store(storage: str, name: str = "lm", *, drop: tuple[str, ...] = (), seeds=SEEDS) -> StudyStore:
    spec = {"name": name, "trainable": "lm", "config": {"steps": 1000, "lr": 6e-3},
            "axes": {"schedule": list(LM_SCHEDULES), "weight_decay": list(LM_WDS), "seed": list(seeds)},
            "metric": "val_loss", "mode": "min"}
    store, writer = _start(storage, name, spec)
    for schedule in LM_SCHEDULES:
        for wd in LM_WDS:
            for seed in seeds:
                trial_id = f"{schedule}_wd{wd}_s{seed}"
                writer.trial_started(trial_id, {"steps": 1000, "lr": 6e-3, "schedule": schedule, "weight_decay": wd,
                                                "seed": seed})
                for i, step in enumerate(LM_STEPS, start=1):
                    loss = lm_loss(step, wd, schedule, seed)
                    row = {"step": step, "tokens": step * 1024, "lr": 6e-3, "train_loss": loss, "val_loss": loss + 0.01,
                           "ema_val_loss": loss + 0.005, "weight_norm": 50.0 - 10 * wd * step / 1000,
                           "grad_norm": 0.5, "update_norm": 0.01, "effective_lr": 6e-3 / 2500,
                           "tokens_per_s": 1e4, "training_iteration": i, "time_total_s": float(i)}
                    writer.add_result(trial_id, {k: v for k, v in row.items() if k not in drop})
                writer.trial_ended(trial_id, "finished")
    writer.close()
    return store


BF16_PRECISIONS = ("fp32", "bf16-autocast")
BF16_WDS = (0.0, 0.1)
BF16_DIVERGED_SEEDS = (0, 1)
BF16_DIVERGE_STEP = 400


def write_bf16_store(storage: str, name: str = "bf16") -> StudyStore:
    spec = {"name": name, "trainable": "lm", "config": {"steps": 600, "lr": 1e-3},
            "axes": {"precision": list(BF16_PRECISIONS), "weight_decay": list(BF16_WDS), "seed": list(SEEDS)},
            "metric": "val_loss", "mode": "min"}
    store, writer = _start(storage, name, spec)
    for precision in BF16_PRECISIONS:
        for wd in BF16_WDS:
            for seed in SEEDS:
                trial_id = f"{precision}_wd{wd}_s{seed}"
                writer.trial_started(trial_id, {"steps": 600, "lr": 1e-3, "precision": precision, "weight_decay": wd,
                                                "seed": seed})
                diverges = precision != "fp32" and wd == 0 and seed in BF16_DIVERGED_SEEDS
                for i, step in enumerate(range(100, 601, 100), start=1):
                    loss = 3.0 + 2.0 / i + 0.01 * seed
                    row = {"step": step, "tokens": step * 1024, "train_loss": loss, "val_loss": loss + 0.02,
                           "training_iteration": i}
                    if diverges and step == BF16_DIVERGE_STEP:
                        row.update(train_loss=math.inf, val_loss=math.nan, diverged_step=step,
                                   last_finite_loss=3.0 + 2.0 / (i - 1) + 0.01 * seed)
                        writer.add_result(trial_id, row)
                        break
                    writer.add_result(trial_id, row)
                writer.trial_ended(trial_id, "diverged" if diverges else "finished")
    writer.close()
    return store


def test_synthetic_stores_read_back(tmp_path):
    vision = write_vision_store(str(tmp_path))
    trials = vision.read_trials()
    assert len(trials) == len(VISION_LRS) * len(VISION_WDS) * len(SEEDS) + 1
    assert sorted(trials["status"].value_counts().items()) == [("diverged", 1), ("failed", 1), ("finished", 29)]
    assert len(vision.read_metrics()) == 29 * VISION_EPOCHS + 3
    lm = write_lm_store(str(tmp_path))
    assert len(lm.read_metrics()) == 12 * len(LM_STEPS)
    bf16 = write_bf16_store(str(tmp_path))
    assert (bf16.read_trials()["status"] == "diverged").sum() == len(BF16_DIVERGED_SEEDS)
