"""Training code that runs inside Ray Tune trials (and from plain Python).

Each trainable is ``run(config: dict, session)``; see ``trainables.session``. The
registry below is torch-free: looking a trainable up does not import its code.
"""

from trainables.registry import TRAINABLES, ConfigError, TrainableInfo, get_trainable, register

register(TrainableInfo(
    name="lm",
    config="trainables.lm.config:LMConfig",
    run="trainables.lm.train:run",
    metrics=("step", "tokens", "lr", "train_loss", "val_loss", "ema_val_loss", "eval_train_loss", "weight_norm",
             "grad_norm", "update_norm", "effective_lr", "tokens_per_s", "mfu", "decayed_tensors", "decayed_params",
             "decay_applied_fraction", "diverged_step", "last_finite_loss"),
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
             "samples_per_s", "decayed_tensors", "decayed_params", "diverged_step", "last_finite_loss"),
    default_metric="test_error",
    default_mode="min",
    description="image classifier with SGD, per-epoch reports (embedded mnist1d or CIFAR pickle batches); "
                "VGG, pre-act ResNet, scale-invariant nets on the sphere",
))

__all__ = ["TRAINABLES", "ConfigError", "TrainableInfo", "get_trainable", "register"]
