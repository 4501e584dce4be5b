"""Logistic regression trained by full-batch SGD with weight decay: the worked example of
docs/write-a-trainable.md. A study names it after importing this module (``imports:``)."""

import math
from dataclasses import dataclass

import torch

from trainables import TrainableInfo, register
from trainables.registry import build_config, param


@dataclass(frozen=True)
class LogRegConfig:  # every field typed, with a default and bounds: the spec is checked against it
    lr: float = param(1.0, gt=0, help="SGD step size")
    weight_decay: float = param(0.0, ge=0, help="coupled, as torch SGD: g <- g + weight_decay * w")
    epochs: int = param(30, gt=0, help="full-batch steps, one report each")
    samples: int = param(500, gt=0, help="training samples, and as many test samples")
    dim: int = param(50, gt=0, help="features; the label depends on the first 5")
    max_loss: float = param(10.0, gt=0, help="a training loss above this has blown up: diverged")
    seed: int = param(0, ge=0)


def make_data(cfg: LogRegConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test sets drawn from one seed: x ~ N(0, I), P(y = 1) = sigmoid(2 * sum(x[:5]))."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(2 * cfg.samples, cfg.dim, generator=gen)
    y = (torch.rand(2 * cfg.samples, generator=gen) < torch.sigmoid(2 * x[:, :5].sum(1))).float()
    return x[: cfg.samples], y[: cfg.samples], x[cfg.samples:], y[cfg.samples:]


def run(config: dict, session) -> None:
    cfg = build_config(LogRegConfig, config)  # checks every value against the dataclass
    x, y, x_test, y_test = make_data(cfg)
    w = torch.zeros(cfg.dim, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_of = torch.nn.functional.binary_cross_entropy_with_logits
    for epoch in range(1, cfg.epochs + 1):
        optimizer.zero_grad()
        loss_of(x @ w, y).backward()
        optimizer.step()
        with torch.no_grad():
            metrics = {"epoch": epoch, "lr": cfg.lr, "train_loss": loss_of(x @ w, y).item(),
                       "weight_norm": w.norm().item(),  # the analysis reads these names (docs/analysis.md)
                       "test_error": ((x_test @ w > 0).float() != y_test).float().mean().item()}
        if not math.isfinite(metrics["train_loss"]) or metrics["train_loss"] > cfg.max_loss:
            session.report(metrics, status="diverged")  # a result, not a crash: the study goes on
            return
        session.report(metrics, status="finished" if epoch == cfg.epochs else None)


register(TrainableInfo(
    name="logreg",
    config="examples.logreg.trainable:LogRegConfig",
    run="examples.logreg.trainable:run",
    metrics=("epoch", "lr", "train_loss", "weight_norm", "test_error"),
    default_metric="test_error",
    description="logistic regression, full-batch SGD with weight decay (examples/logreg: docs/write-a-trainable.md)",
))
