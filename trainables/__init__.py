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

__all__ = ["TRAINABLES", "ConfigError", "TrainableInfo", "get_trainable", "register"]
