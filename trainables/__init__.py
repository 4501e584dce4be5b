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
    metrics={"step": "int64", "tokens": "int64", "lr": "double", "train_loss": "double", "val_loss": "double",
             "ema_val_loss": "double", "eval_train_loss": "double", "weight_norm": "double", "grad_norm": "double",
             "update_norm": "double", "effective_lr": "double", "tokens_per_s": "double", "mfu": "double",
             "decayed_tensors": "int64", "decayed_params": "int64", "decay_applied_fraction": "double",
             "diverged_step": "int64", "last_finite_loss": "double", "loss_spikes": "int64",
             "last_spike_step": "int64", "last_spike_peak": "double"},
    default_metric="val_loss",
    default_mode="min",
    description="GPT language model, one pass over a token stream (embedded Shakespeare bytes or nanoGPT .bin)",
))

register(TrainableInfo(
    name="probe",
    config="trainables.probe:ProbeConfig",
    run="trainables.probe:run",
    metrics={"step": "int64", "loss": "double", "weight_norm": "double", "diverged_step": "int64",
             "last_finite_loss": "double"},
    default_metric="loss",
    default_mode="min",
    description="noisy gradient descent on a quadratic, with fault injection: for testing and benchmarking the framework",
))

register(TrainableInfo(
    name="vision",
    config="trainables.vision.config:VisionConfig",
    run="trainables.vision.train:run",
    metrics={"epoch": "int64", "step": "int64", "lr": "double", "train_loss": "double", "train_error": "double",
             "test_loss": "double", "test_error": "double", "weight_norm": "double", "effective_lr": "double",
             "effective_lr_sqrt": "double", "ema_test_error": "double", "ema_test_loss": "double",
             "hessian_trace": "double", "hessian_probes": "int64", "finetune_test_error": "double",
             "finetune_train_loss": "double", "finetune_hessian_trace": "double", "samples_per_s": "double",
             "decayed_tensors": "int64", "decayed_params": "int64", "diverged_step": "int64",
             "last_finite_loss": "double", "loss_spikes": "int64", "last_spike_step": "int64",
             "last_spike_peak": "double"},
    config_metrics="trainables.vision.train:layer_metrics",  # weight_norm/<layer>, one per layer of the model
    config_metrics_keys=("model", "dataset"),
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
