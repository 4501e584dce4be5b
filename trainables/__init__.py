"""Training code that runs inside Ray Tune trials (and from plain Python).

Each trainable is ``run(config: dict, session)``; see ``trainables.session``. The
registry below is torch-free: looking a trainable up does not import its code.
"""

from trainables.packing import PACKED, PackedTrainable, get_packed, register_packed
from trainables.registry import TRAINABLES, ConfigError, TrainableInfo, get_trainable, register

register(TrainableInfo(
    name="lm",
    config="trainables.lm.config:LMConfig",
    run="trainables.lm.train:run",
    metrics=("step", "tokens", "lr", "train_loss", "val_loss", "ema_val_loss", "eval_train_loss", "weight_norm",
             "grad_norm", "update_norm", "effective_lr", "tokens_per_s", "mfu", "decayed_tensors", "decayed_params",
             "decay_applied_fraction", "diverged_step", "last_finite_loss", "loss_spikes", "last_spike_step",
             "last_spike_peak"),
    default_metric="val_loss",
    default_mode="min",
    description="GPT language model, one pass over a token stream (embedded Shakespeare bytes or nanoGPT .bin)",
))

register(TrainableInfo(
    name="probe",
    config="trainables.probe:ProbeConfig",
    run="trainables.probe:run",
    metrics=("step", "loss", "weight_norm", "diverged_step", "last_finite_loss"),
    default_metric="loss",
    default_mode="min",
    description="noisy gradient descent on a quadratic, with fault injection: for testing and benchmarking the framework",
))

register(TrainableInfo(
    name="vision",
    config="trainables.vision.config:VisionConfig",
    run="trainables.vision.train:run",
    metrics=("epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error", "weight_norm",
             "effective_lr", "effective_lr_sqrt", "ema_test_error", "ema_test_loss", "hessian_trace",
             "hessian_probes", "finetune_test_error", "finetune_train_loss", "finetune_hessian_trace",
             "samples_per_s", "decayed_tensors", "decayed_params", "diverged_step", "last_finite_loss",
             "loss_spikes", "last_spike_step", "last_spike_peak"),
    default_metric="test_error",
    default_mode="min",
    description="image classifier with SGD, per-epoch reports (embedded mnist1d or CIFAR pickle batches); "
                "VGG, pre-act ResNet, scale-invariant nets on the sphere",
))

# ---- packed trials (trainables.packing): which trainables train several grid points as one,
# and the config keys that may differ inside a pack (the rest is shared by its members)

register_packed(PackedTrainable(
    name="lm",
    run="trainables.lm.packed:run",
    axes=("lr", "weight_decay", "schedule", "warmup_steps", "min_lr_ratio", "tail_lr", "seed", "beta1", "beta2", "eps"),
    refused={"precision": {"bf16": "the pure-bf16 decay is torch's own rounded multiply, which the batched "
                                   "AdamW does not reproduce"},
             "compile": {True: "the batched (vmapped) model runs uncompiled"}},
))

register_packed(PackedTrainable(
    name="vision",
    run="trainables.vision.packed:run",
    axes=("lr", "weight_decay", "momentum", "schedule", "decay_epoch", "decay_lr", "decay_factor", "min_lr",
          "warmup_epochs", "seed", "finetune_lr", "finetune_weight_decay"),
    refused={"precision": {"fp16-autocast": "fp16 loss scaling has one scale for the whole pack"}},
))

__all__ = ["TRAINABLES", "ConfigError", "TrainableInfo", "get_trainable", "register", "PACKED", "get_packed"]
